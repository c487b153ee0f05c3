//! 2-D convolution in NHWC as an implicit GEMM on the GEMM cores and tiles of `ops::matmul` (kernels/conv2d/), matching
//! `torch.nn.functional.conv2d` with square stride and padding, plus an optional fused bias, activation and
//! residual add. Weights are re-laid once from PyTorch's OIHW to `[Cout, kh, kw, Cin]` (`oihw_to_ohwi`).
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel};
use crate::tensor::{DType, Tensor};

use super::matmul::{GemmFiles, GemmParams, GemmTile, TilePlan, gemm_kernel, push, tile_plan};
use super::{Activation, Recording, u32_of};

/// Geometry and epilogue of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOpts<'a> {
    pub stride: usize,
    pub pad: usize,
    /// Extra zero padding after the last row and column only (diffusers' VAE encoder pads (0, 1, 0, 1) before its
    /// stride-2 convolutions).
    pub pad_end: usize,
    pub bias: Option<&'a Tensor>,
    pub act: Activation,
    /// Same shape as the output, added after the activation.
    pub residual: Option<&'a Tensor>,
}

impl Default for Conv2dOpts<'_> {
    fn default() -> Self {
        Conv2dOpts { stride: 1, pad: 0, pad_end: 0, bias: None, act: Activation::None, residual: None }
    }
}

/// Output side length of a convolution.
pub fn out_size(input: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (input + 2 * pad).saturating_sub(kernel) / stride.max(1) + 1
}

/// Re-lays a PyTorch conv weight `[Cout, Cin, kh, kw]` as `[Cout, kh, kw, Cin]`.
pub fn oihw_to_ohwi(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    out[((o * kh + y) * kw + x) * cin + i] = w[((o * cin + i) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}

const CONV_FILES: GemmFiles = GemmFiles {
    tiled: "conv2d/conv2d.wgsl",
    coop: "conv2d/conv2d_coop.wgsl",
    coop_basic: "conv2d/conv2d_coop_basic.wgsl",
    coop_emu: "conv2d/conv2d_mma_emu.wgsl",
};

fn conv_kernel(tile: GemmTile, vec4: bool, dt: DType, bias: bool, residual: bool, act: Activation) -> Kernel {
    gemm_kernel(CONV_FILES, tile, vec4, dt, true, bias, residual, act)
}

/// Every conv variant (each GEMM tile, portable tiles in f32 and f16, coop tiles in f16), for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for tile in crate::ops::matmul::tiles::all_tiles() {
        let dtypes: &[DType] = if tile.f16_only() { &[DType::F16] } else { &[DType::F32, DType::F16] };
        for &dt in dtypes {
            for (bias, residual) in [(false, false), (true, false), (true, true)] {
                for act in [Activation::None, Activation::Silu] {
                    for vec4 in [false, true] {
                        v.push(conv_kernel(tile, vec4, dt, bias, residual, act));
                    }
                }
            }
        }
    }
    v
}

/// Records `out = act(conv2d(x, w) + bias) + residual`.
///
/// Shapes: `x` `[B, H, W, Cin]`, `w` `[Cout, kh, kw, Cin]`, `bias` `[Cout]`, `out` and `residual`
/// `[B, Ho, Wo, Cout]`.
pub fn conv2d(gpu: &Gpu, rec: &mut Recording, x: &Tensor, w: &Tensor, out: &Tensor, o: &Conv2dOpts) -> Result<()> {
    let plan = tile_plan(gpu, x.dtype)?;
    conv2d_with(gpu, rec, x, w, out, o, plan)
}

/// [`conv2d`] with the GEMM tile plan given (tests run every tile through it).
pub fn conv2d_with(
    gpu: &Gpu,
    rec: &mut Recording,
    x: &Tensor,
    w: &Tensor,
    out: &Tensor,
    o: &Conv2dOpts,
    plan: TilePlan,
) -> Result<()> {
    let op = "conv2d";
    let dt = x.dtype;
    let [b, h, wd, cin] = x.shape[..] else {
        return Err(Error::shape(op, format!("x must be [B, H, W, C], got {:?}", x.shape)));
    };
    let [cout, kh, kw, wcin] = w.shape[..] else {
        return Err(Error::shape(op, format!("w must be [Cout, kh, kw, Cin], got {:?}", w.shape)));
    };
    if wcin != cin {
        return Err(Error::shape(op, format!("x has {cin} channels, w expects {wcin}")));
    }
    if o.stride == 0 || h + 2 * o.pad + o.pad_end < kh || wd + 2 * o.pad + o.pad_end < kw {
        return Err(Error::shape(op, format!("kernel {kh}x{kw} stride {} pad {} on {h}x{wd}", o.stride, o.pad)));
    }
    // Padding after the end only adds rows/columns the loader reads as zeros.
    let (ho, wo) = (out_size(h + o.pad_end, kh, o.stride, o.pad), out_size(wd + o.pad_end, kw, o.stride, o.pad));
    let want = [b, ho, wo, cout];
    out.expect(op, "out", &want, dt)?;
    w.expect(op, "w", &w.shape, dt)?;
    if let Some(bias) = o.bias {
        bias.expect(op, "bias", &[cout], dt)?;
    }
    if let Some(r) = o.residual {
        r.expect(op, "residual", &want, dt)?;
    }
    let p = GemmParams {
        m: u32_of(op, "B*Ho*Wo", b * ho * wo)?,
        n: u32_of(op, "Cout", cout)?,
        k: u32_of(op, "kh*kw*Cin", kh * kw * cin)?,
        batch: 1,
        in_h: h as u32,
        in_w: wd as u32,
        in_c: cin as u32,
        out_h: ho as u32,
        out_w: wo as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: o.stride as u32,
        pad: o.pad as u32,
        ..Default::default()
    };
    let tile = plan.pick(b * ho * wo, cout, 1);
    tile.check(gpu, dt).map_err(|e| Error::shape(op, format!("tile {tile}: {e}")))?;
    // Vector loads when every run of four starts at a multiple of 4: Cin % 4 == 0 (then K % 4 == 0 too).
    let vec4 = plan.vec4 && cin % 4 == 0 && [x, w].iter().all(|t| t.offset() % (4 * dt.size() as u64) == 0);
    let kernel = conv_kernel(tile, vec4, dt, o.bias.is_some(), o.residual.is_some(), o.act);
    push(gpu, rec, &kernel, tile, x, w, out, o.bias, o.residual, &p, 1)
}
