//! The flash attention op: `out = softmax(scale · Q Kᵀ) · V` with optional self-attention injection, by the
//! portable kernel (kernels/attention/flash.wgsl) or the cooperative-matrix one (flash_coop.wgsl), and the choice
//! between them ([`flash_core`]).
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::ops::{Recording, typed, u32_of};
use crate::tensor::{DType, Tensor};

use super::check_qkv;

/// Mirrors `FlashParams` in kernels/attention/params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct FlashParams {
    pub batch: u32,
    pub nq: u32,
    pub nk: u32,
    pub heads: u32,
    pub channels: u32,
    pub q_blocks: u32,
    pub groups: u32,
    pub inject_src: u32,
    pub inject_first: u32,
    pub inject_count: u32,
    pub scale: f32,
    /// 1: causal mask (query i sees keys 0..=i).
    pub causal: u32,
}

/// Self-attention injection: rows `first..first + count` use Q and K of row `src` and their own V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inject {
    pub src: usize,
    pub first: usize,
    pub count: usize,
}

/// Options of [`attention`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionOpts {
    /// Number of heads H; the head dim is `channels / H`.
    pub heads: usize,
    /// Score scale; `None` is `1/sqrt(D)`.
    pub scale: Option<f32>,
    /// Self-attention injection; `None` (or a count of 0) is plain attention.
    pub inject: Option<Inject>,
    /// Causal mask: query i attends to keys 0..=i only (CLIP's text encoder). Needs Nq = Nk.
    pub causal: bool,
}

impl AttentionOpts {
    /// Plain attention with `heads` heads and the default scale.
    pub fn heads(heads: usize) -> Self {
        AttentionOpts { heads, scale: None, inject: None, causal: false }
    }
}

/// Whether the flash kernel splits each query's head dim over two invocations: for D/4 above 32, so that no
/// invocation holds private arrays of more than 32 vec4 (see kernels/attention/flash.wgsl).
pub(super) fn flash_split(d: usize) -> bool {
    d / 4 > 32
}

/// Queries per flash workgroup.
pub(super) fn flash_bq(d: usize) -> usize {
    if flash_split(d) { 32 } else { 64 }
}

/// Keys per staged flash block for head dim `d`: K and V tiles of `bk × d` f32 (and, when split, 64 × `bk`
/// partial scores) within 16 KiB of workgroup memory, at most 64.
pub(super) fn flash_bk(d: usize) -> usize {
    let per_key = 8 * d + if flash_split(d) { 256 } else { 0 };
    (16384 / per_key).min(64)
}

pub(super) fn flash_kernel(dt: DType, d: usize) -> Kernel {
    typed("attention/flash.wgsl", dt)
        .def("D", format!("{d}u"))
        .def("BK", format!("{}u", flash_bk(d)))
        .flag("SPLIT_D", flash_split(d))
}

/// Which flash-attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashCore {
    /// kernels/attention/flash.wgsl: f32 arithmetic on staged key blocks, any adapter, f32 or f16 storage.
    Portable,
    /// kernels/attention/flash_coop.wgsl: Q·Kᵀ and P·V as 16×16×16 cooperative-matrix products, f16 storage,
    /// 64 queries per workgroup of 4 subgroups of 32 lanes, `bkv` keys per block (32 or 64).
    Coop { bkv: usize },
    /// The coop kernel with emulated fragments (kernels/attention/flash_mma_emu.wgsl), for tests.
    CoopEmu { bkv: usize },
}

/// Queries per workgroup of the cooperative-matrix flash kernel.
pub(super) const COOP_BQ: usize = 64;

/// Head dim padded to the 16-wide fragments.
pub(super) fn coop_dp(d: usize) -> usize {
    d.div_ceil(16) * 16
}

/// Workgroup memory of the cooperative-matrix flash kernel (with the emulation's extra query copy when `emu`).
pub fn flash_coop_bytes(d: usize, bkv: usize, emu: bool) -> u32 {
    let ld = coop_dp(d) + 8;
    let emu_q = if emu { 64 * coop_dp(d) * 2 } else { 0 };
    let bytes = 2 * bkv * ld * 2 + 64 * (bkv + 4) * 4 + 64 * (bkv + 8) * 2 + 256 * 4 + emu_q;
    bytes as u32
}

/// The flash kernel `attention` uses for `dtype` and head dim `d` on `gpu`: the cooperative-matrix one for f16
/// where the adapter has 16×16×16 f16→f32 cooperative matrices with subgroup size 32 (unless `P2P_WGPU_NO_COOP`),
/// with the largest key block whose workgroup memory fits; else the portable one.
pub fn flash_core(gpu: &Gpu, dtype: DType, d: usize) -> FlashCore {
    if dtype != DType::F16 || !gpu.coop_usable() || gpu.options.no_coop {
        return FlashCore::Portable;
    }
    let limit = gpu.limits.max_compute_workgroup_storage_size;
    [64, 32]
        .into_iter()
        .find(|&bkv| flash_coop_bytes(d, bkv, false) <= limit)
        .map_or(FlashCore::Portable, |bkv| FlashCore::Coop { bkv })
}

pub(super) fn flash_coop_kernel(d: usize, bkv: usize, emu: bool) -> Kernel {
    let path = if emu { "attention/flash_mma_emu.wgsl" } else { "attention/flash_coop.wgsl" };
    let dp = coop_dp(d);
    let mut k =
        typed(path, DType::F16).def("D", format!("{d}u")).def("DP", format!("{dp}u")).def("BKV", format!("{bkv}u"));
    for c in 1..dp / 16 {
        k = k.flag(&format!("DC{c}"), true);
    }
    k
}

/// Records `out = softmax(scale · Q Kᵀ) · V` per batch row and head, with optional self-attention injection.
///
/// Shapes: `q` and `out` `[B, Nq, H·D]`, `k` and `v` `[B, Nk, H·D]`, all f32 or all f16; `D` one of
/// [`HEAD_DIMS`]; any `Nq`, any `Nk ≥ 1`.
pub fn attention(
    gpu: &Gpu,
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    o: &AttentionOpts,
) -> Result<()> {
    let core = flash_core(gpu, q.dtype, q.shape.last().copied().unwrap_or(0) / o.heads.max(1));
    attention_with(gpu, rec, q, k, v, out, o, core)
}

/// [`attention`] with the kernel given (tests run the cooperative-matrix kernel's emulation through it).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    gpu: &Gpu,
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    o: &AttentionOpts,
    core: FlashCore,
) -> Result<()> {
    let op = "attention";
    let s = check_qkv(op, q, k, v, out, o.heads)?;
    let inj = o.inject.unwrap_or(Inject { src: 0, first: 0, count: 0 });
    if inj.count > 0 && (inj.src >= s.batch || inj.first + inj.count > s.batch) {
        return Err(Error::shape(
            op,
            format!(
                "injection from row {} into rows {}..{} of a batch of {}",
                inj.src,
                inj.first,
                inj.first + inj.count,
                s.batch
            ),
        ));
    }
    if o.causal && s.nq != s.nk {
        return Err(Error::shape(
            op,
            format!("a causal mask needs as many queries as keys, got {} and {}", s.nq, s.nk),
        ));
    }
    if s.batch == 0 || s.nq == 0 {
        return Ok(());
    }
    let kernel = match core {
        FlashCore::Portable => flash_kernel(q.dtype, s.d),
        FlashCore::Coop { bkv } | FlashCore::CoopEmu { bkv } => {
            let emu = matches!(core, FlashCore::CoopEmu { .. });
            if q.dtype != DType::F16 || !(bkv == 32 || bkv == 64) {
                return Err(Error::shape(op, format!("{core:?} takes f16 tensors and key blocks of 32 or 64")));
            }
            if !emu && !gpu.coop_usable() {
                return Err(Error::shape(op, "the adapter has no 16×16 f16 cooperative matrices (subgroup size 32)"));
            }
            let need = flash_coop_bytes(s.d, bkv, emu);
            if need > gpu.limits.max_compute_workgroup_storage_size {
                return Err(Error::limit(
                    op,
                    format!(
                        "{core:?} at head dim {} needs {need} bytes of workgroup memory, the adapter has {}",
                        s.d, gpu.limits.max_compute_workgroup_storage_size
                    ),
                ));
            }
            flash_coop_kernel(s.d, bkv, emu)
        }
    };
    let bq = if core == FlashCore::Portable { flash_bq(s.d) } else { COOP_BQ };
    let q_blocks = s.nq.div_ceil(bq);
    let groups = q_blocks * o.heads * s.batch;
    let p = FlashParams {
        batch: u32_of(op, "batch", s.batch)?,
        nq: u32_of(op, "Nq", s.nq)?,
        nk: u32_of(op, "Nk", s.nk)?,
        heads: u32_of(op, "heads", o.heads)?,
        channels: u32_of(op, "channels", s.channels)?,
        q_blocks: u32_of(op, "query blocks", q_blocks)?,
        groups: u32_of(op, "workgroups", groups)?,
        inject_src: u32_of(op, "inject src", inj.src)?,
        inject_first: u32_of(op, "inject first", if inj.count > 0 { inj.first } else { 0 })?,
        inject_count: u32_of(op, "inject count", inj.count)?,
        scale: o.scale.unwrap_or(1.0 / (s.d as f32).sqrt()),
        causal: u32::from(o.causal),
    };
    let binds = [
        (0, Bind::T(q)),
        (1, Bind::T(k)),
        (2, Bind::T(v)),
        (3, Bind::T(out)),
        (4, Bind::Uniform(bytemuck::bytes_of(&p))),
    ];
    rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.groups))?);
    Ok(())
}
