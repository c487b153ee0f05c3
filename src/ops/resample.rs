//! Resampling and layout kernels on NHWC activations (kernels/resample/), f32 or f16 storage:
//! - `upsample_nearest`: `F.interpolate(x, scale_factor=s, mode="nearest")` for an integer factor (SD's
//!   `Upsample2D` uses 2);
//! - `concat_channels`: `torch.cat([a, b], dim=1)` in NCHW terms (the UNet's skip connections), i.e. the last dim
//!   in NHWC: `[B, H, W, C1]` + `[B, H, W, C2]` → `[B, H, W, C1 + C2]`.
//!
//! Both run in chunks of input rows when a tensor exceeds the adapter's binding limit.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::elementwise::WG;
use super::{Recording, float, lead_chunks, typed, u32_of};

/// Mirrors `UpsampleParams` in kernels/resample/upsample_nearest.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct UpsampleParams {
    pub n: u32,
    pub c: u32,
    /// Input width.
    pub w: u32,
    pub scale: u32,
}

/// Mirrors `ConcatParams` in kernels/resample/concat.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConcatParams {
    pub n: u32,
    pub c1: u32,
    pub c2: u32,
    pub _pad: u32,
}

pub fn upsample_kernel(dt: DType) -> Kernel {
    typed("resample/upsample_nearest.wgsl", dt)
}

pub fn concat_kernel(dt: DType) -> Kernel {
    typed("resample/concat.wgsl", dt)
}

/// Every resample variant (f32 and f16), for the naga test.
pub fn variants() -> Vec<Kernel> {
    [DType::F32, DType::F16].into_iter().flat_map(|dt| [upsample_kernel(dt), concat_kernel(dt)]).collect()
}

/// Records nearest upsampling by `scale` (≥ 1): `x` `[B, H, W, C]` → `out` `[B, H·scale, W·scale, C]`.
pub fn upsample_nearest(gpu: &Gpu, rec: &mut Recording, x: &Tensor, out: &Tensor, scale: usize) -> Result<()> {
    let op = "upsample_nearest";
    float(op, "x", x)?;
    let [b, h, w, c] = x.shape[..] else {
        return Err(Error::shape(op, format!("x must be [B, H, W, C], got {:?}", x.shape)));
    };
    if scale == 0 {
        return Err(Error::shape(op, "scale must be at least 1"));
    }
    out.expect(op, "out", &[b, h * scale, w * scale, c], x.dtype)?;
    if w * c == 0 {
        return Ok(());
    }
    // Input row r (of B·H) produces output rows r·scale .. (r+1)·scale, which are contiguous.
    let rows = b * h;
    let (in_row, out_row) = (w * c, scale * scale * w * c);
    let (x2, o2) = (x.reshape(&[rows, in_row])?, out.reshape(&[rows, out_row])?);
    let sz = x.dtype.size();
    let kernel = upsample_kernel(x.dtype);
    for (s, len) in lead_chunks(gpu, op, rows, &[in_row * sz, out_row * sz])? {
        let (xc, oc) = (x2.rows(gpu, s, len)?, o2.rows(gpu, s, len)?);
        let p = UpsampleParams {
            n: u32_of(op, "output elements", len * out_row)?,
            c: c as u32,
            w: w as u32,
            scale: u32_of(op, "scale", scale)?,
        };
        let binds = [(0, Bind::T(&xc)), (1, Bind::T(&oc)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.n.div_ceil(WG)))?);
    }
    Ok(())
}

/// Records the channel concatenation `out = [a, b]` along the last dim: `a` `[..., C1]`, `b` `[..., C2]` with
/// equal leading dims, `out` `[..., C1 + C2]`, one float dtype.
pub fn concat_channels(gpu: &Gpu, rec: &mut Recording, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let op = "concat_channels";
    float(op, "a", a)?;
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra == 0 || ra != rb || a.shape[..ra - 1] != b.shape[..rb - 1] {
        return Err(Error::shape(op, format!("a {:?} and b {:?} differ outside the last dim", a.shape, b.shape)));
    }
    b.expect(op, "b", &b.shape, a.dtype)?;
    let (c1, c2) = (a.shape[ra - 1], b.shape[rb - 1]);
    let mut want = a.shape.clone();
    want[ra - 1] = c1 + c2;
    out.expect(op, "out", &want, a.dtype)?;
    if c1 + c2 == 0 {
        return Ok(());
    }
    let rows = out.numel() / (c1 + c2);
    let (a2, b2, o2) = (a.reshape(&[rows, c1])?, b.reshape(&[rows, c2])?, out.reshape(&[rows, c1 + c2])?);
    let sz = a.dtype.size();
    let kernel = concat_kernel(a.dtype);
    for (s, len) in lead_chunks(gpu, op, rows, &[c1 * sz, c2 * sz, (c1 + c2) * sz])? {
        let (ac, bc, oc) = (a2.rows(gpu, s, len)?, b2.rows(gpu, s, len)?, o2.rows(gpu, s, len)?);
        let p =
            ConcatParams { n: u32_of(op, "output elements", len * (c1 + c2))?, c1: c1 as u32, c2: c2 as u32, _pad: 0 };
        let binds =
            [(0, Bind::T(&ac)), (1, Bind::T(&bc)), (2, Bind::T(&oc)), (3, Bind::Uniform(bytemuck::bytes_of(&p)))];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.n.div_ceil(WG)))?);
    }
    Ok(())
}
