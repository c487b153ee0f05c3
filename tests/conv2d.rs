//! Implicit-GEMM NHWC convolution against an f64 CPU reference of torch's conv2d (OIHW weights re-laid by
//! `oihw_to_ohwi`): k×k, stride, padding, odd sizes, fused bias/SiLU/residual, f32 and f16.
mod common;

use common::*;
use p2p_wgpu::ops::conv2d::{Conv2dOpts, conv2d, conv2d_with, oihw_to_ohwi, out_size};
use p2p_wgpu::ops::matmul::tiles::{GemmTile, TilePlan};
use p2p_wgpu::ops::{Activation, Recording};
use p2p_wgpu::tensor::DType;

#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    w_oihw: &[f32],
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    act: Activation,
    (b, h, wd, cin): (usize, usize, usize, usize),
    (cout, kh, kw): (usize, usize, usize),
    stride: usize,
    (pad, pad_end): (usize, usize),
) -> Vec<f64> {
    let (ho, wo) = (out_size(h + pad_end, kh, stride, pad), out_size(wd + pad_end, kw, stride, pad));
    let mut out = vec![0.0; b * ho * wo * cout];
    for n in 0..b {
        for oy in 0..ho {
            for ox in 0..wo {
                for o in 0..cout {
                    let mut s = bias.map_or(0.0, |bb| bb[o] as f64);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for i in 0..cin {
                                let xv = x[((n * h + iy as usize) * wd + ix as usize) * cin + i] as f64;
                                s += xv * w_oihw[((o * cin + i) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    let idx = ((n * ho + oy) * wo + ox) * cout + o;
                    out[idx] = act.apply_f64(s) + res.map_or(0.0, |r| r[idx] as f64);
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run(
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    fused: bool,
    seed: u64,
) {
    run_padded(b, h, w, cin, cout, k, stride, (pad, 0), fused, seed);
}

/// `run` with extra padding `pad_end` after the last row and column.
#[allow(clippy::too_many_arguments)]
fn run_padded(
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    (pad, pad_end): (usize, usize),
    fused: bool,
    seed: u64,
) {
    run_tiled(b, h, w, cin, cout, k, stride, (pad, pad_end), fused, seed, None, &dtypes());
}

/// `run_padded` in `dts` with a forced GEMM tile plan (`None`: the adapter's own choice).
#[allow(clippy::too_many_arguments)]
fn run_tiled(
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    (pad, pad_end): (usize, usize),
    fused: bool,
    seed: u64,
    plan: Option<TilePlan>,
    dts: &[DType],
) {
    let gpu = gpu();
    for &dt in dts {
        let mut rng = Rng::new(seed);
        let (tx, x) = upload(&[b, h, w, cin], dt, &rng.vec(b * h * w * cin, 1.0));
        let w_oihw = quantize(&rng.vec(cout * cin * k * k, 1.0 / ((cin * k * k) as f32).sqrt()), dt);
        let (tw, _) = upload(&[cout, k, k, cin], dt, &oihw_to_ohwi(&w_oihw, cout, cin, k, k));
        let (ho, wo) = (out_size(h + pad_end, k, stride, pad), out_size(w + pad_end, k, stride, pad));
        let (tbias, bias) = upload(&[cout], dt, &rng.vec(cout, 0.5));
        let (tres, res) = upload(&[b, ho, wo, cout], dt, &rng.vec(b * ho * wo * cout, 1.0));
        let out = poisoned(&[b, ho, wo, cout], dt);
        let act = if fused { Activation::Silu } else { Activation::None };
        let opts =
            Conv2dOpts { stride, pad, pad_end, bias: fused.then_some(&tbias), act, residual: fused.then_some(&tres) };
        let mut rec = Recording::new();
        match plan {
            Some(plan) => conv2d_with(gpu, &mut rec, &tx, &tw, &out, &opts, plan).unwrap(),
            None => conv2d(gpu, &mut rec, &tx, &tw, &out, &opts).unwrap(),
        }
        gpu.run(&rec).unwrap();
        let want = reference(
            &x,
            &w_oihw,
            fused.then_some(&bias[..]),
            fused.then_some(&res[..]),
            act,
            (b, h, w, cin),
            (cout, k, k),
            stride,
            (pad, pad_end),
        );
        check(
            &format!(
                "{dt:?} conv {b}x{h}x{w}x{cin} -> {cout} k{k} s{stride} p{pad}+{pad_end} fused{fused} tile {}",
                plan.map_or("auto".to_string(), |p| p.large.name())
            ),
            &download(&out),
            &want,
            tol(dt),
        );
    }
}

#[test]
fn odd_shapes() {
    run(1, 7, 5, 3, 5, 3, 1, 1, false, 1);
    run(2, 9, 6, 4, 7, 3, 2, 1, true, 2);
    run(1, 1, 1, 1, 1, 1, 1, 0, false, 3);
    run(1, 5, 5, 2, 3, 5, 1, 2, true, 4);
    run(3, 4, 7, 6, 2, 1, 1, 0, true, 5);
    // The VAE encoder's downsampler: pad (0, 1, 0, 1) then a stride-2 3×3 convolution.
    run_padded(2, 8, 6, 5, 7, 3, 2, (0, 1), false, 6);
    run_padded(1, 7, 7, 3, 4, 3, 2, (0, 1), true, 7);
}

/// SD 1.5 conv shapes with the spatial size cut down: conv_in 4→320, resnet 3×3 at 320/640, the stride-2
/// downsampler and a 1×1 shortcut 320→640.
#[test]
fn sd15_shapes() {
    run(1, 8, 8, 4, 320, 3, 1, 1, false, 10);
    run(1, 6, 6, 320, 320, 3, 1, 1, true, 11);
    run(1, 4, 4, 640, 640, 3, 1, 1, false, 12);
    run(1, 8, 8, 320, 320, 3, 2, 1, false, 13);
    run(1, 8, 8, 320, 640, 1, 1, 0, true, 14);
}

/// Other GEMM tiles than the adapter's choice under the implicit-GEMM loader, with vector loads where Cin allows: a
/// portable 128×64 tile with 8×4 outputs per invocation (f32), and the fast cooperative-matrix core with emulated
/// fragments (f16), each on a 3×3 stride-1 convolution with Cin a multiple of 4 (vec4 bindings), a stride-2 one
/// with odd Cin (scalar), and a 1×1 one.
#[test]
fn other_tiles() {
    let gpu = gpu();
    let mut plans = vec![(GemmTile::tiled(128, 64, 16, 8, 4), DType::F32)];
    if can_run_f16("other_tiles: the f16 coop-emulated tile") {
        plans.push((GemmTile::coop_emu(2, 32), DType::F16));
    }
    for (tile, dt) in plans {
        if let Err(why) = tile.check(gpu, dt) {
            can_run("other_tiles", "workgroup", false, &format!("cannot run tile {tile} ({dt:?}): {why}"));
            continue;
        }
        let p = Some(TilePlan { large: tile, small: tile, vec4: true, narrow: false });
        run_tiled(2, 9, 7, 8, 20, 3, 1, (1, 0), true, 20, p, &[dt]);
        run_tiled(1, 9, 8, 5, 36, 3, 2, (1, 0), true, 21, p, &[dt]);
        run_tiled(1, 6, 6, 12, 70, 1, 1, (0, 0), true, 22, p, &[dt]);
    }
}
