//! Elementwise kernels (kernels/elementwise/), f32 or f16 storage with f32 arithmetic:
//! - `binary`, `add`, `mul`: `torch.add` / `torch.mul` where `b` broadcasts to `a` (right-aligned, e.g. a time
//!   embedding `[B, 1, 1, C]` added to `[B, H, W, C]`, or the same shape);
//! - `unary`: `F.silu`, `F.gelu` (exact erf), `F.gelu(approximate="tanh")`, CLIP's quick-GELU, or a copy;
//! - `geglu`: diffusers' `GEGLU` gate, `[..., 2N] → x[..., :N] * F.gelu(x[..., N:])`.
//!
//! Tensors over the adapter's storage binding limit are processed in chunks of their leading dimension. Outputs
//! must not alias inputs (wgpu forbids a buffer bound both read-only and writable in one dispatch).
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::{Activation, Recording, float, lead_chunks, typed, u32_of};

/// Threads per workgroup of the flat kernels (`WG` in kernels/elementwise/grid.wgsl).
pub(crate) const WG: u32 = 256;

/// Mirrors `UnaryParams` in kernels/elementwise/unary.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct UnaryParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

/// Mirrors `BinaryParams` in kernels/elementwise/binary.wgsl: output dims 1..3 (dim 0 implied by `n`) and b's
/// element stride per dim, 0 where b broadcasts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BinaryParams {
    pub n: u32,
    pub d1: u32,
    pub d2: u32,
    pub d3: u32,
    pub s0: u32,
    pub s1: u32,
    pub s2: u32,
    pub s3: u32,
}

/// Mirrors `GegluParams` in kernels/elementwise/geglu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GegluParams {
    pub n: u32,
    pub half: u32,
    pub _pad: [u32; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }
}

pub fn unary_kernel(dt: DType, act: Activation) -> Kernel {
    typed("elementwise/unary.wgsl", dt).def("ACT", format!("{}u", act.id()))
}

pub fn binary_kernel(dt: DType, op: BinaryOp) -> Kernel {
    typed("elementwise/binary.wgsl", dt).flag("MUL", op == BinaryOp::Mul)
}

pub fn geglu_kernel(dt: DType) -> Kernel {
    typed("elementwise/geglu.wgsl", dt)
}

/// Every elementwise variant (f32 and f16), for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for dt in [DType::F32, DType::F16] {
        v.extend(Activation::ALL.map(|a| unary_kernel(dt, a)));
        v.extend([BinaryOp::Add, BinaryOp::Mul].map(|o| binary_kernel(dt, o)));
        v.push(geglu_kernel(dt));
    }
    v
}

/// Records `out = act(x)` elementwise; `out` has `x`'s shape and dtype.
pub fn unary(gpu: &Gpu, rec: &mut Recording, act: Activation, x: &Tensor, out: &Tensor) -> Result<()> {
    let op = "unary";
    float(op, "x", x)?;
    out.expect(op, "out", &x.shape, x.dtype)?;
    let n = x.numel();
    let (xf, of) = (x.reshape(&[n])?, out.reshape(&[n])?);
    let kernel = unary_kernel(x.dtype, act);
    for (s, len) in lead_chunks(gpu, op, n, &[x.dtype.size()])? {
        let (xc, oc) = (xf.rows(gpu, s, len)?, of.rows(gpu, s, len)?);
        let p = UnaryParams { n: u32_of(op, "elements", len)?, ..Default::default() };
        let binds = [(0, Bind::T(&xc)), (1, Bind::T(&oc)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.n.div_ceil(WG)))?);
    }
    Ok(())
}

/// Records `out = a + b`, `b` broadcast to `a`'s shape.
pub fn add(gpu: &Gpu, rec: &mut Recording, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    binary(gpu, rec, BinaryOp::Add, a, b, out)
}

/// Records `out = a · b`, `b` broadcast to `a`'s shape.
pub fn mul(gpu: &Gpu, rec: &mut Recording, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    binary(gpu, rec, BinaryOp::Mul, a, b, out)
}

/// `a`'s shape with `b` right-aligned against it, reduced to `(size, b varies)` dims: size-1 dims of `a` dropped,
/// neighbours where `b` is present in both (or broadcast in both) merged. Errors where `b` does not broadcast.
fn broadcast_dims(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<(usize, bool)>> {
    let bad = || Error::shape(op, format!("b {b:?} does not broadcast to a {a:?}"));
    if b.len() > a.len() {
        return Err(bad());
    }
    let off = a.len() - b.len();
    let mut dims: Vec<(usize, bool)> = Vec::new();
    for (i, &ad) in a.iter().enumerate() {
        let bd = if i < off { 1 } else { b[i - off] };
        if bd != ad && bd != 1 {
            return Err(bad());
        }
        if ad == 1 {
            continue;
        }
        let full = bd == ad;
        match dims.last_mut() {
            Some(last) if last.1 == full => last.0 *= ad,
            _ => dims.push((ad, full)),
        }
    }
    Ok(dims)
}

/// Records `out = a ∘ b` for `op` (add or mul), `b` broadcast to `a`'s shape (right-aligned; each of b's dims
/// equals a's or is 1). `out` has `a`'s shape; all three share one float dtype.
pub fn binary(gpu: &Gpu, rec: &mut Recording, kind: BinaryOp, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let op = kind.name();
    float(op, "a", a)?;
    b.expect(op, "b", &b.shape, a.dtype)?;
    out.expect(op, "out", &a.shape, a.dtype)?;
    let dims = broadcast_dims(op, &a.shape, &b.shape)?;
    if a.numel() == 0 {
        return Ok(());
    }
    if dims.len() > 4 {
        return Err(Error::shape(op, format!("b {:?} against a {:?} needs more than 4 dims", b.shape, a.shape)));
    }
    // Pad to 4 dims in front; b's contiguous strides over the dims it varies along.
    let mut d = [(1usize, false); 4];
    d[4 - dims.len().max(1)..].copy_from_slice(if dims.is_empty() { &[(1, false)] } else { &dims });
    let mut strides = [0usize; 4];
    let mut acc = 1;
    for k in (0..4).rev() {
        if d[k].1 {
            strides[k] = acc;
            acc *= d[k].0;
        }
    }
    // Chunk along the outermost real dim; b is split with a when it varies along that dim, shared otherwise.
    let lead_dim = 4 - dims.len().max(1);
    let lead = d[lead_dim].0;
    let inner: usize = d[lead_dim + 1..].iter().map(|x| x.0).product();
    let b_inner: usize = d[lead_dim + 1..].iter().filter(|x| x.1).map(|x| x.0).product();
    let b_split = d[lead_dim].1;
    let sz = a.dtype.size();
    let mut row_bytes = vec![inner * sz];
    if b_split {
        row_bytes.push(b_inner * sz);
    }
    let a2 = a.reshape(&[lead, inner])?;
    let o2 = out.reshape(&[lead, inner])?;
    let b2 = if b_split { b.reshape(&[lead, b_inner])? } else { b.clone() };
    let kernel = binary_kernel(a.dtype, kind);
    for (s, len) in lead_chunks(gpu, op, lead, &row_bytes)? {
        let (ac, oc) = (a2.rows(gpu, s, len)?, o2.rows(gpu, s, len)?);
        let bc = if b_split { b2.rows(gpu, s, len)? } else { b2.clone() };
        let p = BinaryParams {
            n: u32_of(op, "elements", len * inner)?,
            d1: d[1].0 as u32,
            d2: d[2].0 as u32,
            d3: d[3].0 as u32,
            s0: u32_of(op, "b stride", strides[0])?,
            s1: u32_of(op, "b stride", strides[1])?,
            s2: u32_of(op, "b stride", strides[2])?,
            s3: u32_of(op, "b stride", strides[3])?,
        };
        let binds =
            [(0, Bind::T(&ac)), (1, Bind::T(&bc)), (2, Bind::T(&oc)), (3, Bind::Uniform(bytemuck::bytes_of(&p)))];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.n.div_ceil(WG)))?);
    }
    Ok(())
}

/// Records diffusers' GEGLU gate: `x` `[..., 2N]` → `out` `[..., N]`, `out = x[..., :N] * gelu(x[..., N:])`
/// with exact (erf) GELU, as `GEGLU.forward` after its projection.
pub fn geglu(gpu: &Gpu, rec: &mut Recording, x: &Tensor, out: &Tensor) -> Result<()> {
    let op = "geglu";
    float(op, "x", x)?;
    let two_n = *x.shape.last().ok_or_else(|| Error::shape(op, "x is a scalar"))?;
    if two_n % 2 != 0 {
        return Err(Error::shape(op, format!("x's last dim {two_n} is odd; GEGLU splits it in two halves")));
    }
    let half = two_n / 2;
    let mut want = x.shape.clone();
    *want.last_mut().unwrap() = half;
    out.expect(op, "out", &want, x.dtype)?;
    if half == 0 {
        return Ok(());
    }
    let rows = x.numel() / two_n;
    let sz = x.dtype.size();
    let (x2, o2) = (x.reshape(&[rows, two_n])?, out.reshape(&[rows, half])?);
    let kernel = geglu_kernel(x.dtype);
    for (s, len) in lead_chunks(gpu, op, rows, &[two_n * sz, half * sz])? {
        let (xc, oc) = (x2.rows(gpu, s, len)?, o2.rows(gpu, s, len)?);
        let p = GegluParams { n: u32_of(op, "elements", len * half)?, half: half as u32, ..Default::default() };
        let binds = [(0, Bind::T(&xc)), (1, Bind::T(&oc)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(p.n.div_ceil(WG)))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::broadcast_dims;

    #[test]
    fn broadcast_dims_merge_and_reject() {
        let d = |a: &[usize], b: &[usize]| broadcast_dims("t", a, b).unwrap();
        assert_eq!(d(&[2, 4, 4, 8], &[2, 4, 4, 8]), vec![(256, true)]);
        assert_eq!(d(&[2, 4, 4, 8], &[2, 1, 1, 8]), vec![(2, true), (16, false), (8, true)]);
        assert_eq!(d(&[1, 4, 4, 8], &[8]), vec![(16, false), (8, true)]);
        assert_eq!(d(&[3, 5], &[1]), vec![(15, false)]);
        assert_eq!(d(&[1, 1], &[1, 1]), vec![]);
        assert!(broadcast_dims("t", &[2, 3], &[3, 3]).is_err());
        assert!(broadcast_dims("t", &[3], &[2, 3]).is_err());
    }
}
