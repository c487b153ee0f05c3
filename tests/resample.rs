//! Nearest upsampling and channel concatenation on NHWC against a CPU reference (exact: both only move values):
//! odd and size-1 shapes, SD 1.5 shapes, f32 and f16, NaN-poisoned outputs, chunking under a small binding limit,
//! and shape errors as `Err`.
mod common;

use common::*;
use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::resample::{concat_channels, upsample_nearest};
use p2p_wgpu::tensor::{DType, Tensor};

fn upsample_ref(x: &[f32], [b, h, w, c]: [usize; 4], s: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len() * s * s);
    for bt in 0..b {
        for oy in 0..h * s {
            for ox in 0..w * s {
                for ch in 0..c {
                    out.push(x[((bt * h + oy / s) * w + ox / s) * c + ch] as f64);
                }
            }
        }
    }
    out
}

fn concat_ref(a: &[f32], b: &[f32], c1: usize, c2: usize) -> Vec<f64> {
    let rows = a.len() / c1.max(1);
    let mut out = Vec::with_capacity(a.len() + b.len());
    for r in 0..rows {
        out.extend(a[r * c1..(r + 1) * c1].iter().map(|&v| v as f64));
        out.extend(b[r * c2..(r + 1) * c2].iter().map(|&v| v as f64));
    }
    out
}

fn upload_on(gpu: &Gpu, shape: &[usize], dt: DType, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, shape, dt, v).unwrap()
}

fn poison_on(gpu: &Gpu, shape: &[usize], dt: DType) -> Tensor {
    let t = Tensor::empty(gpu, shape, dt).unwrap();
    t.fill(gpu, f32::NAN).unwrap();
    t
}

/// Upsamples `shape` by `s` in every dtype and checks the result exactly; returns the fewest dispatches taken.
fn run_upsample(gpu: &Gpu, shape: [usize; 4], s: usize, seed: u64) -> usize {
    let mut n = usize::MAX;
    for dt in dtypes() {
        let x = quantize(&Rng::new(seed).vec(shape.iter().product(), 3.0), dt);
        let tx = upload_on(gpu, &shape, dt, &x);
        let [b, h, w, c] = shape;
        let out = poison_on(gpu, &[b, h * s, w * s, c], dt);
        let mut rec = Recording::new();
        upsample_nearest(gpu, &mut rec, &tx, &out, s).unwrap();
        gpu.run(&rec).unwrap();
        n = n.min(rec.len());
        check(&format!("{dt:?} upsample {shape:?} x{s}"), &out.to_f32(gpu).unwrap(), &upsample_ref(&x, shape, s), 0.0);
    }
    n
}

/// Concatenates `[lead..., c1]` and `[lead..., c2]` in every dtype, checked exactly; returns the fewest dispatches.
fn run_concat(gpu: &Gpu, lead: &[usize], c1: usize, c2: usize, seed: u64) -> usize {
    let mut n = usize::MAX;
    let rows: usize = lead.iter().product();
    let shape = |c: usize| [lead, &[c]].concat();
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let (a, b) = (quantize(&rng.vec(rows * c1, 3.0), dt), quantize(&rng.vec(rows * c2, 3.0), dt));
        let (ta, tb) = (upload_on(gpu, &shape(c1), dt, &a), upload_on(gpu, &shape(c2), dt, &b));
        let out = poison_on(gpu, &shape(c1 + c2), dt);
        let mut rec = Recording::new();
        concat_channels(gpu, &mut rec, &ta, &tb, &out).unwrap();
        gpu.run(&rec).unwrap();
        n = n.min(rec.len());
        let name = format!("{dt:?} concat {lead:?} {c1}+{c2}");
        check(&name, &out.to_f32(gpu).unwrap(), &concat_ref(&a, &b, c1, c2), 0.0);
    }
    n
}

#[test]
fn upsample_odd_and_sd15() {
    let g = gpu();
    run_upsample(g, [2, 3, 5, 7], 2, 1);
    run_upsample(g, [1, 1, 1, 1], 2, 2);
    run_upsample(g, [1, 2, 3, 4], 3, 3);
    run_upsample(g, [2, 3, 1, 5], 1, 4);
    // SD 1.5 up blocks' Upsample2D at 1280 and 640 channels, small latents.
    run_upsample(g, [2, 4, 4, 1280], 2, 5);
    run_upsample(g, [1, 8, 8, 640], 2, 6);
}

#[test]
fn concat_odd_and_sd15() {
    let g = gpu();
    run_concat(g, &[2, 3, 5], 7, 9, 10);
    run_concat(g, &[1, 1, 1], 1, 1, 11);
    run_concat(g, &[3, 2, 1], 5, 1, 12);
    // SD 1.5 up-block skip connections: 1280+1280, 1280+640, 640+320, 320+320.
    run_concat(g, &[2, 2, 2], 1280, 1280, 13);
    run_concat(g, &[1, 4, 4], 1280, 640, 14);
    run_concat(g, &[2, 8, 8], 640, 320, 15);
    run_concat(g, &[1, 8, 8], 320, 320, 16);
}

/// A device whose binding limit is cut to 4 KiB, so both ops run in several chunks (row sizes chosen so that an
/// aligned chunk of rows fits).
#[test]
fn chunked_under_small_binding_limit() {
    let mut g = Gpu::new(&GpuOptions::from_env()).unwrap();
    g.limits.max_storage_buffer_binding_size = 4096;
    assert!(run_upsample(&g, [3, 7, 4, 8], 2, 20) > 1);
    assert!(run_concat(&g, &[3, 7, 9], 9, 5, 21) > 1);
}

#[test]
fn shape_errors_are_results() {
    let g = gpu();
    let mut rec = Recording::new();
    let t = |shape: &[usize]| poisoned(shape, DType::F32);
    let x = t(&[1, 2, 3, 4]);
    assert!(upsample_nearest(g, &mut rec, &x, &t(&[1, 4, 6, 4]), 3).is_err());
    assert!(upsample_nearest(g, &mut rec, &x, &t(&[1, 4, 5, 4]), 2).is_err());
    assert!(upsample_nearest(g, &mut rec, &x, &x, 0).is_err());
    assert!(upsample_nearest(g, &mut rec, &t(&[2, 3, 4]), &t(&[2, 6, 8]), 2).is_err());
    assert!(concat_channels(g, &mut rec, &x, &t(&[1, 2, 2, 4]), &t(&[1, 2, 3, 8])).is_err());
    assert!(concat_channels(g, &mut rec, &x, &x, &t(&[1, 2, 3, 7])).is_err());
    let e = concat_channels(g, &mut rec, &x, &poisoned(&[1, 2, 3, 4], DType::F16), &t(&[1, 2, 3, 8])).unwrap_err();
    assert!(e.to_string().contains("concat"), "{e}");
    assert!(rec.is_empty());
}
