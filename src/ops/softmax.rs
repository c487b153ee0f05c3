//! Row softmax and attention with a materialised score matrix, for head dims the flash kernel does not cover.
//!
//! - [`softmax_rows`]: `out = softmax(scale · x)` along the last dim (kernels/softmax/softmax.wgsl), f32
//!   arithmetic (max-subtracted, f32 sum), f32 or f16 storage, any row length; `out` may be `x` itself (in place).
//! - [`attention_materialized`]: the result of [`super::attention::attention`] (torch SDPA, no mask, default scale
//!   `1/sqrt(D)`) for any head dim, computed per head as `S = Q·Kᵀ` ([`matmul`] with `trans_b`), `P = softmax(S)` in
//!   place, `O = P·V`. Built for the SD VAE's mid-block attention (one head of D = 512 over 4096 tokens, whose
//!   score matrix, 4096² f32 = 64 MiB per image, is fine to materialise).
//!
//! Layout as in the attention module: Q and out `[B, Nq, H·D]`, K and V `[B, Nk, H·D]`, head h in channels
//! `h·D..(h+1)·D`. The GEMMs need contiguous operands, so a head's slice is copied into a temporary by the
//! strided copy kernel (kernels/softmax/head_slice.wgsl), except with one head, where Q (f32 only), K, V and out
//! are used in place whenever their views start at a legal binding offset. Where Q is copied, the copy also
//! applies the scale, so that f16 scores are already scaled when stored (unscaled `Q·Kᵀ` overflows f16 sooner).
//! Scores are stored in the inputs' dtype.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::attention::{Dims, check_qkv_shapes};
use super::matmul::{MatmulOpts, matmul};
use super::{Recording, float, lead_chunks, typed, u32_of};

/// Threads per workgroup of both kernels (`WG` in softmax.wgsl and elementwise/grid.wgsl).
const WG: u32 = 256;

/// Largest batch of GEMMs one dispatch takes (the matmul grid's z dimension).
const MAX_GEMM_BATCH: usize = 65535;

/// Default cap on each temporary of [`attention_materialized`] (scores, and head copies), below the adapter's
/// binding and buffer limits: more batch rows per dispatch gain nothing once one row's GEMMs fill the GPU.
pub const DEFAULT_BUDGET: u64 = 512 << 20;

/// Mirrors `SoftmaxParams` in kernels/softmax/softmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SoftmaxParams {
    pub rows: u32,
    pub n: u32,
    pub scale: f32,
    pub _pad0: u32,
}

/// Mirrors `HeadSliceParams` in kernels/softmax/head_slice.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct HeadSliceParams {
    /// Elements to copy: rows · width.
    pub n: u32,
    pub width: u32,
    pub src_off: u32,
    pub src_stride: u32,
    pub dst_off: u32,
    pub dst_stride: u32,
    pub scale: f32,
    pub _pad0: u32,
}

pub fn softmax_kernel(dt: DType, in_place: bool) -> Kernel {
    typed("softmax/softmax.wgsl", dt).flag("IN_PLACE", in_place)
}

pub fn head_slice_kernel(dt: DType) -> Kernel {
    typed("softmax/head_slice.wgsl", dt)
}

/// Every variant of this family (f32 and f16; softmax out of place and in place), for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for dt in [DType::F32, DType::F16] {
        v.push(softmax_kernel(dt, false));
        v.push(softmax_kernel(dt, true));
        v.push(head_slice_kernel(dt));
    }
    v
}

/// Records `out = softmax(scale · x)` along the last dim.
///
/// Shapes: `x` and `out` `[..., n]` (typically `[rows, n]`), one float dtype. `out` may be the very same view as
/// `x` (the in-place variant runs); other views of `x`'s buffer are an error (wgpu forbids them in one dispatch). Rows past the binding limit run in
/// chunks; `n = 0` or no rows records nothing.
pub fn softmax_rows(gpu: &Gpu, rec: &mut Recording, x: &Tensor, out: &Tensor, scale: f32) -> Result<()> {
    let op = "softmax";
    float(op, "x", x)?;
    let n = *x.shape.last().ok_or_else(|| Error::shape(op, "x is a scalar; expected [rows, n]"))?;
    out.expect(op, "out", &x.shape, x.dtype)?;
    if !scale.is_finite() {
        return Err(Error::shape(op, format!("scale is {scale}")));
    }
    let in_place = x.buffer() == out.buffer() && x.offset() == out.offset();
    if !in_place && x.buffer() == out.buffer() {
        // wgpu forbids one buffer bound read-only and writable in one dispatch, even for disjoint ranges.
        return Err(Error::shape(
            op,
            "out and x are different views of one buffer; only the very same view (in place) is allowed",
        ));
    }
    if n == 0 || x.numel() == 0 {
        return Ok(());
    }
    let rows = x.numel() / n;
    let (x2, o2) = (x.reshape(&[rows, n])?, out.reshape(&[rows, n])?);
    let kernel = softmax_kernel(x.dtype, in_place);
    let nu = u32_of(op, "row length", n)?;
    for (start, len) in lead_chunks(gpu, op, rows, &[n * x.dtype.size()])? {
        u32_of(op, "elements per dispatch", len * n)?;
        let (xc, oc) = (x2.rows(gpu, start, len)?, o2.rows(gpu, start, len)?);
        let p = SoftmaxParams { rows: u32_of(op, "rows", len)?, n: nu, scale, _pad0: 0 };
        let params = Bind::Uniform(bytemuck::bytes_of(&p));
        let d = if in_place {
            gpu.dispatch(op, &kernel, &[(1, Bind::T(&oc)), (2, params)], grid_1d(p.rows))?
        } else {
            gpu.dispatch(op, &kernel, &[(0, Bind::T(&xc)), (1, Bind::T(&oc)), (2, params)], grid_1d(p.rows))?
        };
        rec.push(d);
    }
    Ok(())
}

/// Records `out = softmax(scale · Q Kᵀ) · V` per batch row and head, like [`super::attention::attention`] without
/// injection or mask, for any head dim `D = channels / heads`, through a materialised score matrix.
///
/// Shapes: `q` and `out` `[B, Nq, H·D]`, `k` and `v` `[B, Nk, H·D]`, all f32 or all f16; any `Nq`, any `Nk ≥ 1`.
/// `scale` `None` is `1/sqrt(D)`. Temporaries are capped at [`DEFAULT_BUDGET`] and the adapter's limits.
#[allow(clippy::too_many_arguments)]
pub fn attention_materialized(
    gpu: &Gpu,
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: Option<f32>,
) -> Result<()> {
    attention_materialized_budget(gpu, rec, q, k, v, out, heads, scale, DEFAULT_BUDGET)
}

/// [`attention_materialized`] with each temporary (and each strided window bound by the head copies) capped at
/// `budget` bytes as well as by the adapter's limits: batch rows, then query rows, are processed in chunks whose
/// scores fit. All of one row's keys and values must fit. Small budgets exercise the split paths in tests.
#[allow(clippy::too_many_arguments)]
pub fn attention_materialized_budget(
    gpu: &Gpu,
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: Option<f32>,
    budget: u64,
) -> Result<()> {
    let op = "attention_materialized";
    let dt = q.dtype;
    let Dims { batch, nq, nk, channels, d } = check_qkv_shapes(op, q, k, v, out, heads)?;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::shape(op, format!("scale is {scale}")));
    }
    if batch == 0 || nq == 0 {
        return Ok(());
    }

    // Chunking: `nb` batch rows at once while one row's scores and operands fit the budget, else one row and
    // `qc` query rows at a time. Each temporary then fits a binding, so no op below needs to split further.
    let sz = dt.size();
    let cap = budget.min(gpu.limits.max_storage_buffer_binding_size).min(gpu.limits.max_buffer_size) as usize;
    let per_row = (nq * nk).max(nq * d).max(nk * d) * sz;
    let (nb, qc) = if per_row <= cap {
        ((cap / per_row).min(batch).min(MAX_GEMM_BATCH), nq)
    } else {
        if nk * d * sz > cap {
            return Err(Error::limit(
                op,
                format!("the keys of one head ({nk} × {d} {}) exceed {cap} bytes", dt.name()),
            ));
        }
        (1, (cap / (nk.max(d) * sz)).min(nq))
    };
    if qc == 0 {
        return Err(Error::limit(op, format!("one query row of {nk} scores exceeds {cap} bytes")));
    }
    for (what, n) in [("q elements", q.numel()), ("k elements", k.numel())] {
        u32_of(op, what, n)?;
    }

    // Temporaries, sized for the largest chunk and reused by every chunk: dispatches of one recording run in
    // order (wgpu places barriers between them), so a later chunk overwriting them is safe. The dispatches that
    // bind them hold them (`Dispatch::keep`), so a kept recording (a UNet call replayed every step) never shares
    // them with a later allocation such as the sampler's X, which the host writes.
    let one_head = heads == 1;
    let direct_q = one_head && dt == DType::F32;
    // Head copies are allocated on first use: with one head they are often not needed at all.
    let scores = Tensor::empty(gpu, &[nb * qc * nk], dt)?;
    let mut q_tmp = Temp::new(nb * qc * d, dt);
    let mut o_tmp = Temp::new(nb * qc * d, dt);
    let mut k_tmp = Temp::new(nb * nk * d, dt);
    let mut v_tmp = Temp::new(nb * nk * d, dt);
    let ctx = Ctx { gpu, op, channels, d, cap };

    for b0 in (0..batch).step_by(nb) {
        let nbb = nb.min(batch - b0);
        // One GEMM operand's shape: 2-D for one batch row (matmul's shared-B path), else batched.
        let shape = |rows: usize, cols: usize| if nbb == 1 { vec![rows, cols] } else { vec![nbb, rows, cols] };
        for h in 0..heads {
            let kv_tokens = (b0 * nk, nbb * nk);
            let kh = ctx.operand(rec, k, kv_tokens, h, &mut k_tmp, one_head, &shape(nk, d))?;
            let vh = ctx.operand(rec, v, kv_tokens, h, &mut v_tmp, one_head, &shape(nk, d))?;
            for q0 in (0..nq).step_by(qc) {
                let qcc = qc.min(nq - q0);
                // Tokens b0·Nq + q0 .. + nbb·qcc: either whole batch rows (qcc = Nq) or part of one row.
                let q_tokens = (b0 * nq + q0, nbb * qcc);
                let direct = if direct_q { ctx.view(q, q_tokens, &shape(qcc, d)) } else { None };
                let (qh, soft_scale) = match direct {
                    Some(t) => (t, scale),
                    None => {
                        let t = prefix(gpu, q_tmp.get(gpu)?, &shape(qcc, d))?;
                        ctx.copy(rec, q, q_tokens.0, q_tokens.1, h, &t, scale, false)?;
                        (t, 1.0)
                    }
                };
                let s = prefix(gpu, &scores, &shape(qcc, nk))?;
                matmul(gpu, rec, &qh, &kh, &s, &MatmulOpts { trans_b: true, ..Default::default() })?;
                softmax_rows(gpu, rec, &s, &s, soft_scale)?;
                let direct_o = if one_head { ctx.view(out, q_tokens, &shape(qcc, d)) } else { None };
                match direct_o {
                    Some(o) => matmul(gpu, rec, &s, &vh, &o, &MatmulOpts::default())?,
                    None => {
                        let o = prefix(gpu, o_tmp.get(gpu)?, &shape(qcc, d))?;
                        matmul(gpu, rec, &s, &vh, &o, &MatmulOpts::default())?;
                        ctx.copy(rec, out, q_tokens.0, q_tokens.1, h, &o, 1.0, true)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A temporary of `n` elements of `dt`, allocated on first use.
struct Temp {
    n: usize,
    dt: DType,
    t: Option<Tensor>,
}

impl Temp {
    fn new(n: usize, dt: DType) -> Temp {
        Temp { n, dt, t: None }
    }
    fn get(&mut self, gpu: &Gpu) -> Result<&Tensor> {
        match self.t {
            Some(ref t) => Ok(t),
            None => Ok(self.t.insert(Tensor::empty(gpu, &[self.n], self.dt)?)),
        }
    }
}

/// The first `shape.product()` elements of a temporary, with `shape`.
fn prefix(gpu: &Gpu, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    t.reshape(&[t.numel()])?.rows(gpu, 0, n)?.reshape(shape)
}

/// What the per-head helpers share.
struct Ctx<'a> {
    gpu: &'a Gpu,
    op: &'a str,
    channels: usize,
    d: usize,
    /// Largest binding the strided copies make, in bytes.
    cap: usize,
}

impl Ctx<'_> {
    /// Tokens `tokens.0 .. tokens.0 + tokens.1` of a `[.., N, C]` tensor as a view of `shape`, when it has one
    /// head (C = D) and the view starts at a legal binding offset.
    fn view(&self, t: &Tensor, tokens: (usize, usize), shape: &[usize]) -> Option<Tensor> {
        if self.channels != self.d {
            return None;
        }
        let all = t.numel() / self.channels;
        t.reshape(&[all, self.channels]).ok()?.rows(self.gpu, tokens.0, tokens.1).ok()?.reshape(shape).ok()
    }

    /// Head `h` of tokens `tokens` of `t` as a contiguous GEMM operand of `shape`: a view when possible (one
    /// head), else copied into (a prefix of) `tmp`.
    #[allow(clippy::too_many_arguments)]
    fn operand(
        &self,
        rec: &mut Recording,
        t: &Tensor,
        tokens: (usize, usize),
        h: usize,
        tmp: &mut Temp,
        one_head: bool,
        shape: &[usize],
    ) -> Result<Tensor> {
        if one_head && let Some(view) = self.view(t, tokens, shape) {
            return Ok(view);
        }
        let dst = prefix(self.gpu, tmp.get(self.gpu)?, shape)?;
        self.copy(rec, t, tokens.0, tokens.1, h, &dst, 1.0, false)?;
        Ok(dst)
    }

    /// Copies head `h` between `tokens` rows of the strided `[.., C]` tensor `wide` (from token `t0`) and the
    /// contiguous `[tokens, D]` tensor `dense`: `wide → dense · scale`, or `dense → wide` when `scatter`. `wide`
    /// is bound in windows of whole tokens within the budget, each starting at an aligned offset at or before
    /// its first element; `dense` is bound whole.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        rec: &mut Recording,
        wide: &Tensor,
        t0: usize,
        tokens: usize,
        h: usize,
        dense: &Tensor,
        scale: f32,
        scatter: bool,
    ) -> Result<()> {
        let (gpu, op, c, d) = (self.gpu, self.op, self.channels, self.d);
        let sz = wide.dtype.size();
        let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
        // Window starts must be multiples of `g` elements for their byte offsets to be multiples of `align`.
        let g = align / gcd(align, sz);
        let max_el = self.cap / sz;
        if max_el < g + d {
            return Err(Error::limit(op, format!("a head copy window of {} bytes cannot be bound", (g + d) * sz)));
        }
        let per = ((max_el - g - d) / c + 1).min(tokens);
        let flat = wide.reshape(&[wide.numel()])?;
        let kernel = head_slice_kernel(wide.dtype);
        for r0 in (0..tokens).step_by(per) {
            let cnt = per.min(tokens - r0);
            let e0 = (t0 + r0) * c + h * d;
            let e1 = e0 + (cnt - 1) * c + d;
            let start = e0 / g * g;
            let window = flat.rows(gpu, start, e1 - start)?;
            let (woff, doff) = (u32_of(op, "window offset", e0 - start)?, u32_of(op, "offset", r0 * d)?);
            let (cu, du) = (u32_of(op, "channels", c)?, u32_of(op, "head dim", d)?);
            let n = u32_of(op, "copied elements", cnt * d)?;
            let p = if scatter {
                HeadSliceParams {
                    n,
                    width: du,
                    src_off: doff,
                    src_stride: du,
                    dst_off: woff,
                    dst_stride: cu,
                    scale,
                    _pad0: 0,
                }
            } else {
                HeadSliceParams {
                    n,
                    width: du,
                    src_off: woff,
                    src_stride: cu,
                    dst_off: doff,
                    dst_stride: du,
                    scale,
                    _pad0: 0,
                }
            };
            let (src, dst) = if scatter { (dense, &window) } else { (&window, dense) };
            let binds = [(0, Bind::T(src)), (1, Bind::T(dst)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))];
            rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(n.div_ceil(WG)))?);
        }
        Ok(())
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
