//! Normalisation kernels (kernels/norm/norm.wgsl), f32 or f16 storage, statistics in f32 with two passes (mean,
//! then Σ(x − mean)²):
//! - `group_norm`: `torch.nn.GroupNorm` on NHWC activations `[B, H, W, C]` (or `[B, HW, C]`, `[B, C]`): biased
//!   variance, eps, affine gamma/beta `[C]`, optionally followed by SiLU (resnet blocks' `norm → silu`);
//! - `layer_norm`: `torch.nn.LayerNorm` over the last dim of rows `[..., C]`, with gamma/beta `[C]`.
//!
//! One workgroup normalises one (batch entry, group) or one row (one invocation per row for layer norms over at
//! most 256 channels), so no scratch buffer is needed. Batches over the
//! adapter's binding limit run in chunks of whole batch entries (rows).
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::{Recording, float, lead_chunks, typed, u32_of};

/// Mirrors `NormParams` in kernels/norm/norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    /// (batch entry, group) pairs in the dispatch: one workgroup each.
    pub groups: u32,
    /// Groups per batch entry.
    pub g: u32,
    /// Positions per batch entry (1 for layer norm).
    pub s: u32,
    pub c: u32,
    /// Channels per group.
    pub cg: u32,
    pub eps: f32,
    pub _pad: [u32; 2],
}

/// Options of `group_norm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormOpts {
    /// Number of groups; must divide C.
    pub groups: usize,
    pub eps: f32,
    /// Apply SiLU after the affine transform.
    pub silu: bool,
}

impl Default for GroupNormOpts {
    /// SD's resnet norm: 32 groups, eps 1e-5, no SiLU.
    fn default() -> Self {
        GroupNormOpts { groups: 32, eps: 1e-5, silu: false }
    }
}

pub fn norm_kernel(dt: DType, silu: bool) -> Kernel {
    typed("norm/norm.wgsl", dt).flag("SILU", silu)
}

/// The one-invocation-per-row layer norm (rows of at most [`ROWS_MAX_C`] channels).
pub fn norm_rows_kernel(dt: DType) -> Kernel {
    typed("norm/norm.wgsl", dt).flag("ROWS", true)
}

/// Layer norms over at most this many channels take [`norm_rows_kernel`] (64 rows per workgroup).
pub const ROWS_MAX_C: usize = 256;
const ROWS_WG: u32 = 64;

/// Every norm variant (f32 and f16, with and without SiLU, and the row kernel), for the naga test.
pub fn variants() -> Vec<Kernel> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|dt| [norm_kernel(dt, false), norm_kernel(dt, true), norm_rows_kernel(dt)])
        .collect()
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::shape(op, format!("eps must be finite and >= 0, got {eps}")));
    }
    Ok(())
}

/// Records `out = GroupNorm(x)` (then SiLU when `o.silu`).
///
/// Shapes: `x` and `out` `[B, ..., C]` (NHWC; the middle dims are the positions), `gamma` and `beta` `[C]`, all
/// of one float dtype; `o.groups` divides C.
pub fn group_norm(
    gpu: &Gpu,
    rec: &mut Recording,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    out: &Tensor,
    o: &GroupNormOpts,
) -> Result<()> {
    let op = "group_norm";
    float(op, "x", x)?;
    if x.shape.len() < 2 {
        return Err(Error::shape(op, format!("x must be [B, ..., C], got {:?}", x.shape)));
    }
    let (b, c) = (x.shape[0], x.shape[x.shape.len() - 1]);
    let s: usize = x.shape[1..x.shape.len() - 1].iter().product();
    if o.groups == 0 || c % o.groups != 0 {
        return Err(Error::shape(op, format!("{} groups do not divide {c} channels", o.groups)));
    }
    check_eps(op, o.eps)?;
    gamma.expect(op, "gamma", &[c], x.dtype)?;
    beta.expect(op, "beta", &[c], x.dtype)?;
    out.expect(op, "out", &x.shape, x.dtype)?;
    if s * c == 0 {
        return Ok(());
    }
    let p0 = NormParams {
        groups: 0,
        g: o.groups as u32,
        s: u32_of(op, "positions", s)?,
        c: u32_of(op, "channels", c)?,
        cg: (c / o.groups) as u32,
        eps: o.eps,
        _pad: [0; 2],
    };
    norm_chunks(gpu, rec, op, &norm_kernel(x.dtype, o.silu), x, gamma, beta, out, b, s * c, p0, 1)
}

/// Records `out = LayerNorm(x)` over the last dim: `x` and `out` `[..., C]`, `gamma` and `beta` `[C]`.
pub fn layer_norm(
    gpu: &Gpu,
    rec: &mut Recording,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    out: &Tensor,
    eps: f32,
) -> Result<()> {
    let op = "layer_norm";
    float(op, "x", x)?;
    let c = *x.shape.last().ok_or_else(|| Error::shape(op, "x is a scalar"))?;
    check_eps(op, eps)?;
    gamma.expect(op, "gamma", &[c], x.dtype)?;
    beta.expect(op, "beta", &[c], x.dtype)?;
    out.expect(op, "out", &x.shape, x.dtype)?;
    if c == 0 {
        return Ok(());
    }
    let rows = x.numel() / c;
    let cu = u32_of(op, "channels", c)?;
    let p0 = NormParams { groups: 0, g: 1, s: 1, c: cu, cg: cu, eps, _pad: [0; 2] };
    if c <= ROWS_MAX_C {
        return norm_chunks(gpu, rec, op, &norm_rows_kernel(x.dtype), x, gamma, beta, out, rows, c, p0, ROWS_WG);
    }
    norm_chunks(gpu, rec, op, &norm_kernel(x.dtype, false), x, gamma, beta, out, rows, c, p0, 1)
}

/// Dispatches `kernel` over `lead` entries of `per` elements each (`p0.g` groups per entry, `per_wg` groups per
/// workgroup), in chunks that fit the binding limit.
#[allow(clippy::too_many_arguments)]
fn norm_chunks(
    gpu: &Gpu,
    rec: &mut Recording,
    op: &str,
    kernel: &Kernel,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    out: &Tensor,
    lead: usize,
    per: usize,
    p0: NormParams,
    per_wg: u32,
) -> Result<()> {
    let (x2, o2) = (x.reshape(&[lead, per])?, out.reshape(&[lead, per])?);
    for (start, len) in lead_chunks(gpu, op, lead, &[per * x.dtype.size()])? {
        u32_of(op, "elements per dispatch", len * per)?;
        let (xc, oc) = (x2.rows(gpu, start, len)?, o2.rows(gpu, start, len)?);
        let p = NormParams { groups: u32_of(op, "groups", len * p0.g as usize)?, ..p0 };
        let binds = [
            (0, Bind::T(&xc)),
            (1, Bind::T(gamma)),
            (2, Bind::T(beta)),
            (3, Bind::T(&oc)),
            (4, Bind::Uniform(bytemuck::bytes_of(&p))),
        ];
        rec.push(gpu.dispatch(op, kernel, &binds, grid_1d(p.groups.div_ceil(per_wg)))?);
    }
    Ok(())
}
