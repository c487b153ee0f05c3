//! Fused softmax attention on token rows, with the Prompt-to-Prompt edit functions inside the kernels.
//!
//! - [`attention`]: `out = softmax(scale · Q Kᵀ) · V` per batch row and head, computed like
//!   `torch.nn.functional.scaled_dot_product_attention` (no mask, no dropout, default scale `1/sqrt(D)`), by a
//!   flash-style kernel (kernels/attention/flash.wgsl: online softmax over key blocks staged in workgroup memory,
//!   the map is never materialised). Optional self-attention injection ([`Inject`], DESIGN §4): chosen rows use Q
//!   and K of a source row and their own V, `out_b = softmax(scale · Q_s K_sᵀ) · V_b`.
//! - [`cross_attention_edit`]: cross-attention over a few keys (text tokens, at most [`MAX_CROSS_KEYS`]) with the
//!   edit of the Prompt-to-Prompt controllers of google/prompt-to-prompt as specified in DESIGN §4/§5 applied to
//!   the post-softmax maps of the targets (kernels/attention/cross_edit.wgsl):
//!   `E_b = eq_b ⊙ (P_s · W_b + r_b ⊙ P_b)`, `P'_b = α_b ⊙ E_b + (1 − α_b) ⊙ P_b`, `out_b = P'_b · V_b`, nothing
//!   renormalised. The edit data ([`CrossEdit`]) are GPU tensors that the host rewrites each step. In store mode
//!   ([`Store`]) the kernel also adds the head-summed maps of the source and targets into a running store buffer.
//!
//! Layout: Q and out `[B, Nq, H·D]`, K and V `[B, Nk, H·D]`, head h in channels `h·D..(h+1)·D` (what linear
//! layers produce, no transposes). Storage f32 or f16; products, softmax and sums in f32. Head dims: [`HEAD_DIMS`].
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::{Recording, typed, u32_of};

/// Head dims the kernels are built for (each a define of its variants; all multiples of 4): the tiny test and
/// embedded models' small dims, SD 2.x / IF's 64, SD 1.x's 40, 80 and 160.
pub const HEAD_DIMS: [usize; 10] = [8, 12, 16, 32, 40, 64, 80, 96, 128, 160];

/// Most keys the cross-attention edit kernel takes (its largest `MAX_KEYS` variant).
pub const MAX_CROSS_KEYS: usize = 256;

/// `MAX_KEYS` and pixels per workgroup of the cross-attention variants: 80 keys (77-token prompts) with 8 pixels
/// per workgroup, 256 keys with 4, so the staged maps and queries stay within 16 KiB of workgroup memory.
const CROSS_SIZES: [(usize, usize); 2] = [(80, 8), (256, 4)];

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
fn flash_split(d: usize) -> bool {
    d / 4 > 32
}

/// Queries per flash workgroup.
fn flash_bq(d: usize) -> usize {
    if flash_split(d) { 32 } else { 64 }
}

/// Keys per staged flash block for head dim `d`: K and V tiles of `bk × d` f32 (and, when split, 64 × `bk`
/// partial scores) within 16 KiB of workgroup memory, at most 64.
fn flash_bk(d: usize) -> usize {
    let per_key = 8 * d + if flash_split(d) { 256 } else { 0 };
    (16384 / per_key).min(64)
}

fn flash_kernel(dt: DType, d: usize) -> Kernel {
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
const COOP_BQ: usize = 64;

/// Head dim padded to the 16-wide fragments.
fn coop_dp(d: usize) -> usize {
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

fn flash_coop_kernel(d: usize, bkv: usize, emu: bool) -> Kernel {
    let path = if emu { "attention/flash_mma_emu.wgsl" } else { "attention/flash_coop.wgsl" };
    let dp = coop_dp(d);
    let mut k =
        typed(path, DType::F16).def("D", format!("{d}u")).def("DP", format!("{dp}u")).def("BKV", format!("{bkv}u"));
    for c in 1..dp / 16 {
        k = k.flag(&format!("DC{c}"), true);
    }
    k
}

fn cross_kernel(dt: DType, d: usize, max_keys: usize, bp: usize, store: bool) -> Kernel {
    typed("attention/cross_edit.wgsl", dt)
        .def("D", format!("{d}u"))
        .def("MAX_KEYS", format!("{max_keys}u"))
        .def("BP", format!("{bp}u"))
        .flag("STORE", store)
}

/// Every variant of this family, for the naga test: {f32, f16} × [`HEAD_DIMS`] for the flash kernel, and the
/// same × both key capacities × {plain, store} for the cross-attention edit kernel; the cooperative-matrix flash
/// kernel (and its emulation) for every head dim and both key blocks.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for d in HEAD_DIMS {
        for bkv in [32, 64] {
            v.push(flash_coop_kernel(d, bkv, false));
            v.push(flash_coop_kernel(d, bkv, true));
        }
    }
    for dt in [DType::F32, DType::F16] {
        for d in HEAD_DIMS {
            v.push(flash_kernel(dt, d));
            for (mk, bp) in CROSS_SIZES {
                for store in [false, true] {
                    v.push(cross_kernel(dt, d, mk, bp, store));
                }
            }
        }
    }
    v
}

/// Shapes of an attention call: (batch, nq, nk, channels, head dim).
pub(crate) struct Dims {
    pub batch: usize,
    pub nq: usize,
    pub nk: usize,
    pub channels: usize,
    pub d: usize,
}

/// Checks the shapes and dtypes of Q, K, V and out (`[B, Nq, H·D]`, `[B, Nk, H·D]` ×2, `[B, Nq, H·D]`, one float
/// dtype) and that `heads` divides the channels; shared by every attention op.
pub(crate) fn check_qkv_shapes(
    op: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
) -> Result<Dims> {
    let dt = q.dtype;
    if dt != DType::F32 && dt != DType::F16 {
        return Err(Error::shape(op, format!("q is {}, expected f32 or f16", dt.name())));
    }
    let [batch, nq, channels] = q.shape[..] else {
        return Err(Error::shape(op, format!("q must be [B, Nq, H*D], got {:?}", q.shape)));
    };
    let [kb, nk, kc] = k.shape[..] else {
        return Err(Error::shape(op, format!("k must be [B, Nk, H*D], got {:?}", k.shape)));
    };
    if kb != batch || kc != channels {
        return Err(Error::shape(op, format!("q is {:?} but k is {:?}", q.shape, k.shape)));
    }
    k.expect(op, "k", &[batch, nk, channels], dt)?;
    v.expect(op, "v", &[batch, nk, channels], dt)?;
    out.expect(op, "out", &[batch, nq, channels], dt)?;
    if heads == 0 || channels == 0 || channels % heads != 0 {
        return Err(Error::shape(op, format!("{channels} channels do not split into {heads} heads")));
    }
    if nk == 0 && batch * nq > 0 {
        return Err(Error::shape(op, "attention over zero keys"));
    }
    Ok(Dims { batch, nq, nk, channels, d: channels / heads })
}

/// `check_qkv_shapes` plus what the flash and cross-edit kernels need: a head dim they are built for and 32-bit
/// indexing.
fn check_qkv(op: &str, q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, heads: usize) -> Result<Dims> {
    let dims = check_qkv_shapes(op, q, k, v, out, heads)?;
    let d = dims.d;
    if !HEAD_DIMS.contains(&d) {
        return Err(Error::shape(op, format!("head dim {d} is not one of the supported {HEAD_DIMS:?}")));
    }
    u32_of(op, "q elements", q.numel())?;
    u32_of(op, "k elements", k.numel())?;
    Ok(dims)
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

/// Host-side edit data of one source prompt and its `targets` target prompts over `keys` text tokens, in the
/// layout the kernel reads. Build it with [`EditData::new`] or fill the fields directly; [`EditData::validate`]
/// (called by [`CrossEdit::new`] and [`CrossEdit::write`]) checks it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EditData {
    pub targets: usize,
    pub keys: usize,
    /// `[T, keys]`: the cross-attention window of the current step (1 inside, 0 outside, or between).
    pub alpha: Vec<f32>,
    /// `[T, keys]`: reweight factors (1 = unchanged; may be negative).
    pub eq: Vec<f32>,
    /// `[T, keys]`: weight of the target's own map (refinement's `1 − a`, 0 for a swap).
    pub r: Vec<f32>,
    /// `[T · (keys + 1)]`: CSR row pointers of each target's mapper, one row per target token n, as absolute
    /// offsets into `w_idx` / `w_weight`; target t's rows are `w_ptr[t·(keys+1) .. (t+1)·(keys+1)]`.
    pub w_ptr: Vec<u32>,
    /// Source token `w` of each mapper entry (`< keys`).
    pub w_idx: Vec<u32>,
    /// Weight `W_t[w, n]` of each mapper entry.
    pub w_weight: Vec<f32>,
}

impl EditData {
    /// Builds the CSR form from `w[t][n]`, the list of `(source token, weight)` entries of target t's token n.
    /// `alpha`, `eq`, `r` are `[T, keys]` with `T = w.len()`.
    pub fn new(
        keys: usize,
        alpha: Vec<f32>,
        eq: Vec<f32>,
        r: Vec<f32>,
        w: &[Vec<Vec<(u32, f32)>>],
    ) -> Result<EditData> {
        let targets = w.len();
        let mut w_ptr = Vec::with_capacity(targets * (keys + 1));
        let (mut w_idx, mut w_weight) = (Vec::new(), Vec::new());
        for (t, rows) in w.iter().enumerate() {
            if rows.len() != keys {
                return Err(edit_err(format!("mapper of target {t} has {} token rows, expected {keys}", rows.len())));
            }
            for row in rows {
                w_ptr.push(u32_of("cross-attention edit", "mapper entries", w_idx.len())?);
                for &(src, weight) in row {
                    w_idx.push(src);
                    w_weight.push(weight);
                }
            }
            w_ptr.push(u32_of("cross-attention edit", "mapper entries", w_idx.len())?);
        }
        let e = EditData { targets, keys, alpha, eq, r, w_ptr, w_idx, w_weight };
        e.validate()?;
        Ok(e)
    }

    /// No edit at all (α = 0, eq = 1, r = 0, empty mapper): targets get plain attention.
    pub fn identity(targets: usize, keys: usize) -> EditData {
        EditData {
            targets,
            keys,
            alpha: vec![0.0; targets * keys],
            eq: vec![1.0; targets * keys],
            r: vec![0.0; targets * keys],
            w_ptr: vec![0; targets * (keys + 1)],
            w_idx: Vec::new(),
            w_weight: Vec::new(),
        }
    }

    /// Checks every length, that each target's row pointers start at the previous target's end, never decrease and
    /// end at the entry count, that every source index is below `keys`, and that every value is finite.
    pub fn validate(&self) -> Result<()> {
        let (t, n) = (self.targets, self.keys);
        if n == 0 || n > MAX_CROSS_KEYS {
            return Err(edit_err(format!("{n} keys; the cross-attention edit takes 1 to {MAX_CROSS_KEYS}")));
        }
        for (name, len) in [("alpha", self.alpha.len()), ("eq", self.eq.len()), ("r", self.r.len())] {
            if len != t * n {
                return Err(edit_err(format!("{name} has {len} values, expected {t} targets × {n} keys")));
            }
        }
        if self.w_ptr.len() != t * (n + 1) {
            return Err(edit_err(format!(
                "w_ptr has {} entries, expected {t} targets × ({n} keys + 1)",
                self.w_ptr.len()
            )));
        }
        let nnz = self.w_idx.len();
        if self.w_weight.len() != nnz {
            return Err(edit_err(format!("w_idx has {nnz} entries but w_weight has {}", self.w_weight.len())));
        }
        let mut prev = 0u32;
        for tt in 0..t {
            let rows = &self.w_ptr[tt * (n + 1)..(tt + 1) * (n + 1)];
            if rows[0] != prev {
                return Err(edit_err(format!("w_ptr of target {tt} starts at {}, expected {prev}", rows[0])));
            }
            if let Some(i) = rows.windows(2).position(|w| w[1] < w[0]) {
                return Err(edit_err(format!("w_ptr of target {tt} decreases at token {}", i + 1)));
            }
            prev = rows[n];
        }
        if prev as usize != nnz {
            return Err(edit_err(format!("w_ptr ends at {prev} but there are {nnz} mapper entries")));
        }
        if let Some(i) = self.w_idx.iter().position(|&w| w as usize >= n) {
            return Err(edit_err(format!("mapper entry {i} names source token {} of {n}", self.w_idx[i])));
        }
        for (name, vals) in [("alpha", &self.alpha), ("eq", &self.eq), ("r", &self.r), ("w_weight", &self.w_weight)] {
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                return Err(edit_err(format!("{name}[{i}] is {}", vals[i])));
            }
        }
        Ok(())
    }
}

fn edit_err(message: String) -> Error {
    Error::shape("cross-attention edit data", message)
}

/// The edit data of one prompt group on the GPU (see [`EditData`] for the meaning of each tensor). Empty arrays
/// hold one unused element, since bindings cannot be empty.
pub struct CrossEdit {
    pub targets: usize,
    pub keys: usize,
    pub alpha: Tensor,
    pub eq: Tensor,
    pub r: Tensor,
    pub w_ptr: Tensor,
    pub w_idx: Tensor,
    pub w_weight: Tensor,
}

fn f32_tensor(gpu: &Gpu, v: &[f32]) -> Result<Tensor> {
    if v.is_empty() {
        Tensor::from_f32(gpu, &[1], DType::F32, &[0.0])
    } else {
        Tensor::from_f32(gpu, &[v.len()], DType::F32, v)
    }
}

fn u32_tensor(gpu: &Gpu, v: &[u32]) -> Result<Tensor> {
    if v.is_empty() { Tensor::from_u32(gpu, &[1], &[0]) } else { Tensor::from_u32(gpu, &[v.len()], v) }
}

/// Overwrites a u32 tensor of exactly `v.len()` elements in place.
fn write_u32(gpu: &Gpu, t: &Tensor, v: &[u32]) -> Result<()> {
    if t.dtype != DType::U32 || t.numel() != v.len() {
        return Err(edit_err(format!("{} u32 values written into a {:?} {} tensor", v.len(), t.shape, t.dtype.name())));
    }
    gpu.scoped("edit data upload", || gpu.queue.write_buffer(t.buffer(), t.offset(), bytemuck::cast_slice(v)))
}

impl CrossEdit {
    /// Validates `data` and uploads it.
    pub fn new(gpu: &Gpu, data: &EditData) -> Result<CrossEdit> {
        data.validate()?;
        Ok(CrossEdit {
            targets: data.targets,
            keys: data.keys,
            alpha: f32_tensor(gpu, &data.alpha)?,
            eq: f32_tensor(gpu, &data.eq)?,
            r: f32_tensor(gpu, &data.r)?,
            w_ptr: u32_tensor(gpu, &data.w_ptr)?,
            w_idx: u32_tensor(gpu, &data.w_idx)?,
            w_weight: f32_tensor(gpu, &data.w_weight)?,
        })
    }

    /// Replaces the contents with `data` (same target and key counts), in place where sizes allow. Recordings
    /// made earlier keep their bindings only while the mapper's entry count stays the same.
    pub fn write(&mut self, gpu: &Gpu, data: &EditData) -> Result<()> {
        data.validate()?;
        if data.targets != self.targets || data.keys != self.keys {
            return Err(edit_err(format!(
                "{} targets × {} keys written into edit data of {} × {}",
                data.targets, data.keys, self.targets, self.keys
            )));
        }
        for (t, v) in [(&self.alpha, &data.alpha), (&self.eq, &data.eq), (&self.r, &data.r)] {
            if !v.is_empty() {
                t.write_f32(gpu, v)?;
            }
        }
        if !data.w_ptr.is_empty() {
            write_u32(gpu, &self.w_ptr, &data.w_ptr)?;
        }
        if data.w_idx.len().max(1) == self.w_idx.numel() {
            if !data.w_idx.is_empty() {
                write_u32(gpu, &self.w_idx, &data.w_idx)?;
                self.w_weight.write_f32(gpu, &data.w_weight)?;
            }
        } else {
            self.w_idx = u32_tensor(gpu, &data.w_idx)?;
            self.w_weight = f32_tensor(gpu, &data.w_weight)?;
        }
        Ok(())
    }

    /// Rewrites α alone (`[T, keys]`), the per-step part of the edit.
    pub fn write_alpha(&self, gpu: &Gpu, alpha: &[f32]) -> Result<()> {
        if alpha.len() != self.targets * self.keys {
            return Err(edit_err(format!(
                "alpha has {} values, expected {} × {}",
                alpha.len(),
                self.targets,
                self.keys
            )));
        }
        if let Some(i) = alpha.iter().position(|x| !x.is_finite()) {
            return Err(edit_err(format!("alpha[{i}] is {}", alpha[i])));
        }
        if alpha.is_empty() { Ok(()) } else { self.alpha.write_f32(gpu, alpha) }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every portable variant stays within the portable 16 KiB of workgroup memory; the cooperative-matrix flash
    /// variants use what `flash_coop_bytes` says (the op checks it against the adapter), at most 48 KiB.
    #[test]
    fn workgroup_memory_fits_16_kib() {
        for d in HEAD_DIMS {
            for bkv in [32, 64] {
                for emu in [false, true] {
                    let k = flash_coop_kernel(d, bkv, emu);
                    let got = workgroup_bytes(&k);
                    assert_eq!(got, flash_coop_bytes(d, bkv, emu), "{k}");
                }
            }
            assert!(flash_coop_bytes(d, 32, false) <= 48 * 1024, "head dim {d}");
        }
        // The emulation runs within lavapipe's 32 KiB up to head dim 64.
        assert!(flash_coop_bytes(64, 32, true) <= 32 * 1024);
        for k in variants().into_iter().filter(|k| !k.path.contains("coop") && !k.path.contains("emu")) {
            let bytes = workgroup_bytes(&k);
            assert!(bytes <= 16384, "{k} uses {bytes} bytes of workgroup memory");
            assert!(bytes >= 4096, "{k} uses only {bytes} bytes: a define went missing?");
        }
    }

    fn workgroup_bytes(k: &Kernel) -> u32 {
        let src = k.source().unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{k}: {}", e.emit_to_string(&src)));
        module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
            .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
            .sum()
    }

    #[test]
    fn flash_blocks() {
        assert_eq!((flash_bk(40), flash_bk(64), flash_bk(80), flash_bk(160), flash_bk(8)), (51, 32, 25, 10, 64));
        assert!(flash_split(160) && !flash_split(128));
    }
}
