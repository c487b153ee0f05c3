//! Batched GEMM and linear layers: `C = act(A · op(B) + bias) + residual`, computed like
//! `torch.nn.functional.linear` (TRANS_B, weights `[out, in]`) or `torch.matmul` (B as `[K, N]`).
//! Kernels: kernels/matmul/linear.wgsl (portable, f32 or f16 storage) and linear_coop.wgsl (cooperative
//! matrices, f16). Tensors larger than the adapter's binding limit are split along rows when B is shared.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel};
use crate::tensor::{DType, Tensor};

use super::{Activation, Recording, lead_chunks, typed, u32_of};

/// Mirrors `GemmParams` in kernels/matmul/params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub a_batch_stride: u32,
    pub b_batch_stride: u32,
    pub c_batch_stride: u32,
    pub _pad0: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub in_c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad: u32,
    pub _pad1: u32,
    pub _pad2: u32,
    pub _pad3: u32,
}

/// Options of a GEMM: B's layout and the fused epilogue.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOpts<'a> {
    /// B is `[N, K]` (a linear layer's weight) instead of `[K, N]`.
    pub trans_b: bool,
    /// `[N]`, added before the activation.
    pub bias: Option<&'a Tensor>,
    pub act: Activation,
    /// Same shape as C, added after the activation.
    pub residual: Option<&'a Tensor>,
}

/// Which GEMM core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmCore {
    /// Register-tiled, workgroup-memory staged, any adapter.
    Tiled,
    /// Cooperative matrices (16×16 f16 → f32), subgroup size 32.
    Coop,
}

/// The core `gpu` uses for `dtype`: cooperative matrices for f16 where the adapter reports 16×16 f16→f32 with a
/// fixed subgroup size of 32, unless `P2P_WGPU_NO_COOP` is set.
pub fn choose_core(gpu: &Gpu, dtype: DType) -> GemmCore {
    let sub32 = gpu.info.subgroup_min_size == 32 && gpu.info.subgroup_max_size == 32;
    if dtype == DType::F16 && gpu.has_coop_f16_f32() && sub32 && std::env::var_os("P2P_WGPU_NO_COOP").is_none() {
        GemmCore::Coop
    } else {
        GemmCore::Tiled
    }
}

/// The kernel variant for a GEMM-family file pair (`portable`, `coop`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_kernel(
    portable: &'static str,
    coop: &'static str,
    core: GemmCore,
    dtype: DType,
    trans_b: bool,
    bias: bool,
    residual: bool,
    act: Activation,
) -> Kernel {
    let path = if core == GemmCore::Coop { coop } else { portable };
    typed(path, dtype)
        .flag("TRANS_B", trans_b)
        .flag("HAS_BIAS", bias)
        .flag("HAS_RESIDUAL", residual)
        .def("ACT", format!("{}u", act.id()))
}

/// Every variant of the GEMM kernels (portable in f32/f16, coop in f16), for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for (core, dtypes) in [(GemmCore::Tiled, &[DType::F32, DType::F16][..]), (GemmCore::Coop, &[DType::F16][..])] {
        for &dt in dtypes {
            for trans_b in [false, true] {
                for (bias, residual) in [(false, false), (true, true)] {
                    for act in Activation::ALL {
                        v.push(gemm_kernel(
                            "matmul/linear.wgsl",
                            "matmul/linear_coop.wgsl",
                            core,
                            dt,
                            trans_b,
                            bias,
                            residual,
                            act,
                        ));
                    }
                }
            }
        }
    }
    v
}

fn split_mk(op: &str, t: &Tensor, name: &str) -> Result<(usize, usize, usize)> {
    let r = t.shape.len();
    if r < 2 {
        return Err(Error::shape(op, format!("{name} must have rank >= 2, got {:?}", t.shape)));
    }
    let batch = t.shape[..r - 2].iter().product();
    Ok((batch, t.shape[r - 2], t.shape[r - 1]))
}

/// Records `out = act(a · op(b) + bias) + residual`.
///
/// Shapes: `a` `[..., M, K]`; `b` `[K, N]` / `[N, K]` (shared by every batch entry) or `[batch, K, N]` /
/// `[batch, N, K]`; `out` and `residual` `[..., M, N]`; `bias` `[N]`. All of one dtype.
pub fn matmul(gpu: &Gpu, rec: &mut Recording, a: &Tensor, b: &Tensor, out: &Tensor, o: &MatmulOpts) -> Result<()> {
    let op = "matmul";
    let dt = a.dtype;
    let (batch, m, k) = split_mk(op, a, "a")?;
    let (b_batch, b0, b1) = split_mk(op, b, "b")?;
    let (kb, n) = if o.trans_b { (b1, b0) } else { (b0, b1) };
    if kb != k {
        return Err(Error::shape(op, format!("a is {:?} but b is {:?} (trans_b = {})", a.shape, b.shape, o.trans_b)));
    }
    if b_batch != 1 && b_batch != batch {
        return Err(Error::shape(op, format!("b batch {b_batch} does not match a batch {batch}")));
    }
    let mut want_out = a.shape.clone();
    *want_out.last_mut().unwrap() = n;
    out.expect(op, "out", &want_out, dt)?;
    b.expect(op, "b", &b.shape, dt)?;
    if let Some(bias) = o.bias {
        bias.expect(op, "bias", &[n], dt)?;
    }
    if let Some(r) = o.residual {
        r.expect(op, "residual", &want_out, dt)?;
    }
    if dt == DType::U32 {
        return Err(Error::shape(op, "u32 tensors cannot be multiplied"));
    }
    let shared_b = b_batch == 1 && b.shape.len() == 2;
    let core = choose_core(gpu, dt);
    let kernel = gemm_kernel(
        "matmul/linear.wgsl",
        "matmul/linear_coop.wgsl",
        core,
        dt,
        o.trans_b,
        o.bias.is_some(),
        o.residual.is_some(),
        o.act,
    );
    if shared_b {
        // Fold the batch into M and split rows so that no binding exceeds the adapter's limit.
        let rows = batch * m;
        let a2 = a.reshape(&[rows, k])?;
        let c2 = out.reshape(&[rows, n])?;
        let r2 = o.residual.map(|r| r.reshape(&[rows, n])).transpose()?;
        for (start, len) in lead_chunks(gpu, op, rows, &[k * dt.size(), n * dt.size()])? {
            let (ac, cc) = (a2.rows(gpu, start, len)?, c2.rows(gpu, start, len)?);
            let rc = r2.as_ref().map(|r| r.rows(gpu, start, len)).transpose()?;
            let p = GemmParams {
                m: u32_of(op, "M", len)?,
                n: u32_of(op, "N", n)?,
                k: u32_of(op, "K", k)?,
                batch: 1,
                ..Default::default()
            };
            push(gpu, rec, &kernel, &ac, b, &cc, o.bias, rc.as_ref(), &p, 1)?;
        }
        return Ok(());
    }
    let p = GemmParams {
        m: u32_of(op, "M", m)?,
        n: u32_of(op, "N", n)?,
        k: u32_of(op, "K", k)?,
        batch: u32_of(op, "batch", batch)?,
        a_batch_stride: u32_of(op, "a stride", m * k)?,
        b_batch_stride: if b_batch == 1 { 0 } else { u32_of(op, "b stride", k * n)? },
        c_batch_stride: u32_of(op, "c stride", m * n)?,
        ..Default::default()
    };
    push(gpu, rec, &kernel, a, b, out, o.bias, o.residual, &p, batch)
}

/// Appends one GEMM-family dispatch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push(
    gpu: &Gpu,
    rec: &mut Recording,
    kernel: &Kernel,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    p: &GemmParams,
    batch: usize,
) -> Result<()> {
    let gx = p.n.div_ceil(64);
    let gy = p.m.div_ceil(64);
    let mut binds =
        vec![(0, Bind::T(a)), (1, Bind::T(b)), (2, Bind::T(out)), (3, Bind::Uniform(bytemuck::bytes_of(p)))];
    if let Some(bias) = bias {
        binds.push((4, Bind::T(bias)));
    }
    if let Some(r) = residual {
        binds.push((5, Bind::T(r)));
    }
    rec.push(gpu.dispatch("matmul", kernel, &binds, [gx, gy, u32_of("matmul", "batch", batch)?])?);
    Ok(())
}
