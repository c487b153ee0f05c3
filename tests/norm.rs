//! Group norm (NHWC, optional fused SiLU) and layer norm against an f64 CPU reference: odd shapes, size-1 dims, a
//! large mean relative to the spread (where one-pass variance fails), SD 1.5 shapes (32 groups at 320/640/1280
//! channels, layer norm at 320/768), f32 and f16, NaN-poisoned outputs, chunking under a small binding limit, and
//! shape errors as `Err`.
mod common;

use common::*;
use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::norm::{GroupNormOpts, group_norm, layer_norm};
use p2p_wgpu::tensor::{DType, Tensor};

/// GroupNorm of `x` `[b, s, c]` in f64 (layer norm is `groups = 1`, `s = 1`, one "batch entry" per row).
#[allow(clippy::too_many_arguments)]
fn group_norm_ref(
    x: &[f32],
    b: usize,
    s: usize,
    c: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Vec<f64> {
    let cg = c / groups;
    let mut out = vec![0.0f64; x.len()];
    for bt in 0..b {
        for g in 0..groups {
            let idx = |p: usize, k: usize| (bt * s + p) * c + g * cg + k;
            let n = (s * cg) as f64;
            let mut mean = 0.0;
            for p in 0..s {
                for k in 0..cg {
                    mean += x[idx(p, k)] as f64;
                }
            }
            mean /= n;
            let mut var = 0.0;
            for p in 0..s {
                for k in 0..cg {
                    var += (x[idx(p, k)] as f64 - mean).powi(2);
                }
            }
            let rstd = 1.0 / (var / n + eps as f64).sqrt();
            for p in 0..s {
                for k in 0..cg {
                    let ch = g * cg + k;
                    let v = (x[idx(p, k)] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                    out[idx(p, k)] = if silu { v / (1.0 + (-v).exp()) } else { v };
                }
            }
        }
    }
    out
}

struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    tx: Tensor,
    tg: Tensor,
    tb: Tensor,
    out: Tensor,
}

/// Seeded x (around `offset`), gamma near 1 and beta near 0, uploaded in `dt`, and a NaN-poisoned output.
fn inputs(gpu: &Gpu, shape: &[usize], dt: DType, offset: f32, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let c = shape[shape.len() - 1];
    let x: Vec<f32> = rng.vec(shape.iter().product(), 1.5).iter().map(|v| v + offset).collect();
    let gamma: Vec<f32> = rng.vec(c, 0.5).iter().map(|v| v + 1.0).collect();
    let beta = rng.vec(c, 0.5);
    let (x, gamma, beta) = (quantize(&x, dt), quantize(&gamma, dt), quantize(&beta, dt));
    let up = |sh: &[usize], v: &[f32]| Tensor::from_f32(gpu, sh, dt, v).unwrap();
    let out = Tensor::empty(gpu, shape, dt).unwrap();
    out.fill(gpu, f32::NAN).unwrap();
    Inputs { tx: up(shape, &x), tg: up(&[c], &gamma), tb: up(&[c], &beta), out, x, gamma, beta }
}

/// f32: a few ulps (the offset-30 cases reach 1.7e-6: ulp(30) relative to a spread of ~1); f16: one rounding of outputs of size ~3.
fn tolerance(dt: DType) -> f64 {
    if dt == DType::F16 { 1e-3 } else { 5e-6 }
}

fn verify(name: &str, got: &[f32], want: &[f64], dt: DType) {
    eprintln!("{name}: rel L2 {:.2e}", rel_l2(got, want));
    check(name, got, want, tolerance(dt));
}

/// Runs group norm on `shape` `[B, ..., C]`; returns the fewest dispatches any dtype took.
fn run_group(gpu: &Gpu, shape: &[usize], o: GroupNormOpts, offset: f32, seed: u64) -> usize {
    let mut n = usize::MAX;
    for dt in dtypes() {
        let i = inputs(gpu, shape, dt, offset, seed);
        let mut rec = Recording::new();
        group_norm(gpu, &mut rec, &i.tx, &i.tg, &i.tb, &i.out, &o).unwrap();
        gpu.run(&rec).unwrap();
        n = n.min(rec.len());
        let (b, c) = (shape[0], shape[shape.len() - 1]);
        let s = shape[1..shape.len() - 1].iter().product();
        let want = group_norm_ref(&i.x, b, s, c, o.groups, &i.gamma, &i.beta, o.eps, o.silu);
        let name = format!("{dt:?} group_norm {shape:?} G{} silu {} offset {offset}", o.groups, o.silu);
        verify(&name, &i.out.to_f32(gpu).unwrap(), &want, dt);
    }
    n
}

fn run_layer(gpu: &Gpu, shape: &[usize], eps: f32, offset: f32, seed: u64) -> usize {
    let mut n = usize::MAX;
    for dt in dtypes() {
        let i = inputs(gpu, shape, dt, offset, seed);
        let mut rec = Recording::new();
        layer_norm(gpu, &mut rec, &i.tx, &i.tg, &i.tb, &i.out, eps).unwrap();
        gpu.run(&rec).unwrap();
        n = n.min(rec.len());
        let c = shape[shape.len() - 1];
        let rows = i.x.len() / c;
        let want = group_norm_ref(&i.x, rows, 1, c, 1, &i.gamma, &i.beta, eps, false);
        verify(&format!("{dt:?} layer_norm {shape:?} offset {offset}"), &i.out.to_f32(gpu).unwrap(), &want, dt);
    }
    n
}

fn gn(groups: usize, eps: f32, silu: bool) -> GroupNormOpts {
    GroupNormOpts { groups, eps, silu }
}

#[test]
fn group_norm_odd_shapes() {
    let g = gpu();
    run_group(g, &[2, 3, 5, 12], gn(4, 1e-5, false), 0.0, 1);
    run_group(g, &[2, 3, 5, 12], gn(4, 1e-5, true), 0.0, 2);
    run_group(g, &[1, 1, 1, 6], gn(3, 1e-6, true), 0.0, 3);
    run_group(g, &[3, 7, 24], gn(8, 1e-5, false), 0.0, 4);
    run_group(g, &[1, 17, 13, 64], gn(32, 1e-6, true), 0.0, 5);
    run_group(g, &[2, 9, 10], gn(1, 1e-5, false), 0.0, 6);
    run_group(g, &[3, 5], gn(5, 1e-5, false), 0.0, 7);
    // Mean 20× the spread: a one-pass E[x²] − E[x]² loses most digits here, two passes do not.
    run_group(g, &[2, 11, 13, 16], gn(4, 1e-6, false), 30.0, 8);
}

/// SD 1.5's group norms: 32 groups at 320 / 640 / 1280 channels on 16×16 / 8×8 / 4×4 latents (a quarter of the
/// real 64 / 32 / 16 / 8 ladder) and once at full size (resnets: eps 1e-5 with SiLU;
/// transformer input norm: eps 1e-6).
#[test]
fn group_norm_sd15_shapes() {
    let g = gpu();
    run_group(g, &[2, 16, 16, 320], gn(32, 1e-5, true), 0.0, 10);
    run_group(g, &[2, 16, 16, 320], gn(32, 1e-6, false), 0.0, 11);
    run_group(g, &[2, 8, 8, 640], gn(32, 1e-5, true), 0.0, 12);
    run_group(g, &[2, 4, 4, 1280], gn(32, 1e-5, true), 0.0, 13);
    run_group(g, &[1, 2, 2, 1280], gn(32, 1e-6, false), 0.0, 14);
    // The full 64×64 latent at 320 channels: 40960 elements per group.
    run_group(g, &[1, 64, 64, 320], gn(32, 1e-5, true), 0.0, 15);
}

#[test]
fn layer_norm_shapes() {
    let g = gpu();
    run_layer(g, &[5, 7], 1e-5, 0.0, 20);
    run_layer(g, &[1, 1], 1e-5, 0.0, 21);
    run_layer(g, &[3, 1000], 1e-5, 0.0, 22);
    run_layer(g, &[4, 257], 1e-5, 30.0, 23);
    // One invocation per row (C ≤ 256): a partial last workgroup of 64 rows, the largest C, an odd C, an offset.
    run_layer(g, &[130, 64], 1e-5, 30.0, 26);
    run_layer(g, &[2, 100, 256], 1e-5, 0.0, 27);
    run_layer(g, &[3, 11, 129], 1e-6, -8.0, 28);
    // SD 1.5 transformer blocks (320 channels, 256 tokens × batch 2) and CLIP's final norm (77 tokens × 768).
    run_layer(g, &[2, 256, 320], 1e-5, 0.0, 24);
    run_layer(g, &[2, 77, 768], 1e-5, 0.0, 25);
}

/// A device whose binding limit is cut to 4 KiB, so both norms run in several chunks.
#[test]
fn chunked_under_small_binding_limit() {
    let mut g = Gpu::new(&GpuOptions::from_env()).unwrap();
    g.limits.max_storage_buffer_binding_size = 4096;
    assert!(run_group(&g, &[9, 4, 4, 16], gn(4, 1e-5, true), 0.0, 30) > 1);
    assert!(run_layer(&g, &[180, 24], 1e-5, 0.0, 31) > 1);
    // A batch entry that cannot be bound whole is an error, not a fault.
    let i = inputs(&g, &[2, 32, 32, 8], DType::F32, 0.0, 32);
    let e = group_norm(&g, &mut Recording::new(), &i.tx, &i.tg, &i.tb, &i.out, &gn(4, 1e-5, false)).unwrap_err();
    assert!(e.to_string().contains("group_norm"), "{e}");
}

#[test]
fn shape_errors_are_results() {
    let g = gpu();
    let i = inputs(g, &[2, 3, 3, 12], DType::F32, 0.0, 40);
    let mut rec = Recording::new();
    for bad in [gn(5, 1e-5, false), gn(0, 1e-5, false), gn(4, -1.0, false), gn(4, f32::NAN, false)] {
        assert!(group_norm(g, &mut rec, &i.tx, &i.tg, &i.tb, &i.out, &bad).is_err(), "{bad:?}");
    }
    let short = poisoned(&[11], DType::F32);
    assert!(group_norm(g, &mut rec, &i.tx, &short, &i.tb, &i.out, &gn(4, 1e-5, false)).is_err());
    assert!(layer_norm(g, &mut rec, &i.tx, &i.tg, &short, &i.out, 1e-5).is_err());
    let wrong_out = poisoned(&[2, 3, 3, 11], DType::F32);
    assert!(layer_norm(g, &mut rec, &i.tx, &i.tg, &i.tb, &wrong_out, 1e-5).is_err());
    let f16_gamma = poisoned(&[12], DType::F16);
    let e = group_norm(g, &mut rec, &i.tx, &f16_gamma, &i.tb, &i.out, &gn(4, 1e-5, false)).unwrap_err();
    assert!(e.to_string().contains("gamma"), "{e}");
    assert!(rec.is_empty());
}
