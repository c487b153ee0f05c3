//! The Prompt-to-Prompt cross-attention op (kernels/attention/cross_edit.wgsl): attention over the text tokens with
//! the edit of the target rows' post-softmax maps, and optionally the running store of the maps.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::ops::{Recording, typed, u32_of};
use crate::tensor::{DType, Tensor};

use super::{CrossEdit, check_qkv};

/// Most keys the cross-attention edit kernel takes (its largest `MAX_KEYS` variant).
pub const MAX_CROSS_KEYS: usize = 256;

/// `MAX_KEYS` and pixels per workgroup of the cross-attention variants: 80 keys (77-token prompts) with 8 pixels
/// per workgroup, 256 keys with 4, so the staged maps and queries stay within 16 KiB of workgroup memory.
pub(super) const CROSS_SIZES: [(usize, usize); 2] = [(80, 8), (256, 4)];

/// Mirrors `CrossParams` in kernels/attention/params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CrossParams {
    pub batch: u32,
    pub nq: u32,
    pub nk: u32,
    pub heads: u32,
    pub channels: u32,
    pub q_blocks: u32,
    pub head_chunks: u32,
    pub heads_per_wg: u32,
    pub units: u32,
    pub groups: u32,
    pub src_row: u32,
    pub n_targets: u32,
    pub scale: f32,
    pub store_scale: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

pub(super) fn cross_kernel(dt: DType, d: usize, max_keys: usize, bp: usize, store: bool) -> Kernel {
    typed("attention/cross_edit.wgsl", dt)
        .def("D", format!("{d}u"))
        .def("MAX_KEYS", format!("{max_keys}u"))
        .def("BP", format!("{bp}u"))
        .flag("STORE", store)
}

/// Store mode of [`cross_attention_edit`]: `buf[row − src_row, p, n] += scale · Σ_h P'_row[h, p, n]` for the source
/// and target rows; `buf` is f32 `[1 + T, Nq, Nk]`. The host zeroes it when a run starts and sets `scale` to
/// `1 / (heads · layers)`, so the buffer holds the running sum over steps of the head- and layer-mean maps.
#[derive(Clone, Copy, Debug)]
pub struct Store<'a> {
    pub buf: &'a Tensor,
    pub scale: f32,
}

/// Options of [`cross_attention_edit`].
#[derive(Clone, Copy)]
pub struct CrossEditOpts<'a> {
    /// Number of heads H; the head dim is `channels / H`.
    pub heads: usize,
    /// Score scale; `None` is `1/sqrt(D)`.
    pub scale: Option<f32>,
    /// Batch row of the source prompt (conditional half); its targets are the next `edit.targets` rows.
    pub src_row: usize,
    pub edit: &'a CrossEdit,
    pub store: Option<Store<'a>>,
}

/// Records cross-attention with the Prompt-to-Prompt edit of the rows `src_row + 1 ..= src_row + T` (module doc)
/// and plain attention for every other row, optionally adding the maps to a store.
///
/// Shapes: `q` and `out` `[B, Nq, H·D]`, `k` and `v` `[B, Nk, H·D]` with `1 ≤ Nk ≤` [`MAX_CROSS_KEYS`], all f32 or
/// all f16; `D` one of [`HEAD_DIMS`]; `edit` over `Nk` keys with `src_row + T < B`.
pub fn cross_attention_edit(
    gpu: &Gpu,
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    o: &CrossEditOpts,
) -> Result<()> {
    let op = "cross-attention edit";
    let s = check_qkv(op, q, k, v, out, o.heads)?;
    let e = o.edit;
    let Some(&(max_keys, bp)) = CROSS_SIZES.iter().find(|(mk, _)| s.nk <= *mk) else {
        return Err(Error::shape(op, format!("{} keys; this kernel takes at most {MAX_CROSS_KEYS}", s.nk)));
    };
    if e.keys != s.nk {
        return Err(Error::shape(op, format!("edit data cover {} keys but k has {}", e.keys, s.nk)));
    }
    if o.src_row + e.targets >= s.batch {
        return Err(Error::shape(
            op,
            format!("source row {} with {} targets does not fit a batch of {}", o.src_row, e.targets, s.batch),
        ));
    }
    if let Some(st) = &o.store {
        st.buf.expect(op, "store", &[1 + e.targets, s.nq, s.nk], DType::F32)?;
        if !st.scale.is_finite() {
            return Err(Error::shape(op, format!("store scale is {}", st.scale)));
        }
    }
    if s.nq == 0 {
        return Ok(());
    }
    // In store mode a workgroup runs every head of its query block, so that one invocation owns each store element.
    let heads_per_wg = if o.store.is_some() { o.heads } else { 1 };
    let q_blocks = s.nq.div_ceil(bp);
    let head_chunks = o.heads / heads_per_wg;
    let units = s.batch - e.targets;
    let groups = q_blocks * head_chunks * units;
    let p = CrossParams {
        batch: u32_of(op, "batch", s.batch)?,
        nq: u32_of(op, "Nq", s.nq)?,
        nk: u32_of(op, "Nk", s.nk)?,
        heads: u32_of(op, "heads", o.heads)?,
        channels: u32_of(op, "channels", s.channels)?,
        q_blocks: u32_of(op, "query blocks", q_blocks)?,
        head_chunks: u32_of(op, "head chunks", head_chunks)?,
        heads_per_wg: u32_of(op, "heads per workgroup", heads_per_wg)?,
        units: u32_of(op, "units", units)?,
        groups: u32_of(op, "workgroups", groups)?,
        src_row: u32_of(op, "source row", o.src_row)?,
        n_targets: u32_of(op, "targets", e.targets)?,
        scale: o.scale.unwrap_or(1.0 / (s.d as f32).sqrt()),
        store_scale: o.store.map_or(0.0, |st| st.scale),
        _pad0: 0,
        _pad1: 0,
    };
    let kernel = cross_kernel(q.dtype, s.d, max_keys, bp, o.store.is_some());
    let mut binds = vec![
        (0, Bind::T(q)),
        (1, Bind::T(k)),
        (2, Bind::T(v)),
        (3, Bind::T(out)),
        (4, Bind::Uniform(bytemuck::bytes_of(&p))),
        (5, Bind::T(&e.alpha)),
        (6, Bind::T(&e.eq)),
        (7, Bind::T(&e.r)),
        (8, Bind::T(&e.w_ptr)),
        (9, Bind::T(&e.w_idx)),
        (10, Bind::T(&e.w_weight)),
    ];
    if let Some(st) = &o.store {
        binds.push((11, Bind::T(st.buf)));
    }
    rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.groups))?);
    Ok(())
}
