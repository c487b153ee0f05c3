//! Elementwise kernels against an f64 CPU reference: unary activations, broadcast add / mul, GEGLU; odd and size-1
//! shapes, SD 1.5 shapes, f32 and f16 storage, NaN-poisoned outputs, chunking under a small binding limit, and
//! shape errors as `Err`.
mod common;

use common::*;
use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::ops::elementwise::{BinaryOp, binary, geglu, unary};
use p2p_wgpu::ops::{Activation, Recording};
use p2p_wgpu::tensor::{DType, Tensor};

/// `b` broadcast to `a` (right-aligned), combined with `op`, in f64.
fn binary_ref(op: BinaryOp, a: &[f32], ash: &[usize], b: &[f32], bsh: &[usize]) -> Vec<f64> {
    let off = ash.len() - bsh.len();
    (0..a.len())
        .map(|i| {
            // Multi-index of i in a, then b's flat index with broadcast dims pinned to 0.
            let (mut rem, mut bi, mut bstride) = (i, 0, 1);
            for k in (0..ash.len()).rev() {
                let idx = rem % ash[k];
                rem /= ash[k];
                if k >= off {
                    let bd = bsh[k - off];
                    if bd != 1 {
                        bi += idx * bstride;
                    }
                    bstride *= bd;
                }
            }
            let (x, y) = (a[i] as f64, b[bi] as f64);
            match op {
                BinaryOp::Add => x + y,
                BinaryOp::Mul => x * y,
            }
        })
        .collect()
}

fn geglu_ref(x: &[f32], half: usize) -> Vec<f64> {
    let rows = x.len() / (2 * half);
    let mut out = Vec::with_capacity(rows * half);
    for r in 0..rows {
        for j in 0..half {
            let base = r * 2 * half;
            out.push(x[base + j] as f64 * Activation::Gelu.apply_f64(x[base + half + j] as f64));
        }
    }
    out
}

/// Runs `unary` on `shape` in every dtype against the f64 reference; returns the fewest dispatches any dtype took
/// (the runners below do the same).
fn run_unary(gpu: &Gpu, act: Activation, shape: &[usize], seed: u64) -> usize {
    let mut dispatches = usize::MAX;
    for dt in dtypes() {
        let n = shape.iter().product();
        let mut rng = Rng::new(seed);
        let v = quantize(&rng.vec(n, 5.0), dt);
        let x = Tensor::from_f32(gpu, shape, dt, &v).unwrap();
        let out = poison_on(gpu, shape, dt);
        let mut rec = Recording::new();
        unary(gpu, &mut rec, act, &x, &out).unwrap();
        gpu.run(&rec).unwrap();
        dispatches = dispatches.min(rec.len());
        let want: Vec<f64> = v.iter().map(|&x| act.apply_f64(x as f64)).collect();
        verify(&format!("{dt:?} {act:?} {shape:?}"), &out.to_f32(gpu).unwrap(), &want, tight(dt));
    }
    dispatches
}

fn run_binary(gpu: &Gpu, op: BinaryOp, ash: &[usize], bsh: &[usize], seed: u64) -> usize {
    let mut dispatches = usize::MAX;
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let a = quantize(&rng.vec(ash.iter().product(), 2.0), dt);
        let b = quantize(&rng.vec(bsh.iter().product(), 2.0), dt);
        let (ta, tb) = (Tensor::from_f32(gpu, ash, dt, &a).unwrap(), Tensor::from_f32(gpu, bsh, dt, &b).unwrap());
        let out = poison_on(gpu, ash, dt);
        let mut rec = Recording::new();
        binary(gpu, &mut rec, op, &ta, &tb, &out).unwrap();
        gpu.run(&rec).unwrap();
        dispatches = dispatches.min(rec.len());
        let want = binary_ref(op, &a, ash, &b, bsh);
        verify(&format!("{dt:?} {op:?} {ash:?} {bsh:?}"), &out.to_f32(gpu).unwrap(), &want, tight(dt));
    }
    dispatches
}

fn run_geglu(gpu: &Gpu, shape: &[usize], seed: u64) -> usize {
    let mut dispatches = usize::MAX;
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let x = quantize(&rng.vec(shape.iter().product(), 3.0), dt);
        let tx = Tensor::from_f32(gpu, shape, dt, &x).unwrap();
        let half = shape[shape.len() - 1] / 2;
        let mut oshape = shape.to_vec();
        *oshape.last_mut().unwrap() = half;
        let out = poison_on(gpu, &oshape, dt);
        let mut rec = Recording::new();
        geglu(gpu, &mut rec, &tx, &out).unwrap();
        gpu.run(&rec).unwrap();
        dispatches = dispatches.min(rec.len());
        verify(&format!("{dt:?} geglu {shape:?}"), &out.to_f32(gpu).unwrap(), &geglu_ref(&x, half), tight(dt));
    }
    dispatches
}

/// Tolerance of these ops, tighter than `tol`: one rounding of the output (f16 storage ~2.4e-4) or a few f32 ulps.
fn tight(dt: DType) -> f64 {
    if dt == DType::F16 { 1e-3 } else { 1e-6 }
}

/// `check`, printing the error (visible with --nocapture).
fn verify(name: &str, got: &[f32], want: &[f64], tol: f64) {
    eprintln!("{name}: rel L2 {:.2e}", rel_l2(got, want));
    check(name, got, want, tol);
}

/// A NaN-filled tensor on `gpu` (which may be the small-limit device).
fn poison_on(gpu: &Gpu, shape: &[usize], dt: DType) -> Tensor {
    let t = Tensor::empty(gpu, shape, dt).unwrap();
    t.fill(gpu, f32::NAN).unwrap();
    t
}

#[test]
fn unary_activations_odd_shapes() {
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        run_unary(gpu(), act, &[3, 5, 7, 11], 10 + i as u64);
        run_unary(gpu(), act, &[1], 20 + i as u64);
    }
    run_unary(gpu(), Activation::Silu, &[2, 8, 8, 320], 30);
}

#[test]
fn binary_broadcasts() {
    for op in [BinaryOp::Add, BinaryOp::Mul] {
        run_binary(gpu(), op, &[3, 7, 13], &[3, 7, 13], 1);
        run_binary(gpu(), op, &[2, 5, 7, 33], &[2, 1, 1, 33], 2);
        run_binary(gpu(), op, &[1, 4, 4, 8], &[8], 3);
        run_binary(gpu(), op, &[4, 3, 5], &[4, 1, 5], 4);
        run_binary(gpu(), op, &[2, 3, 5], &[3, 1], 5);
        run_binary(gpu(), op, &[2, 3], &[1], 6);
        run_binary(gpu(), op, &[1], &[1], 7);
        run_binary(gpu(), op, &[5, 1, 3], &[1, 1, 1], 8);
    }
    // SD 1.5: the resnet's time-embedding add and the residual add.
    run_binary(gpu(), BinaryOp::Add, &[2, 8, 8, 320], &[2, 1, 1, 320], 9);
    run_binary(gpu(), BinaryOp::Add, &[2, 4, 4, 1280], &[2, 4, 4, 1280], 10);
}

#[test]
fn geglu_odd_and_sd15() {
    run_geglu(gpu(), &[3, 7, 26], 1);
    run_geglu(gpu(), &[1, 2], 2);
    // SD 1.5 feed-forward: proj 320 -> 2·1280, the 1024 tokens of a 32×32 latent, batch 2.
    run_geglu(gpu(), &[2, 1024, 2560], 3);
}

/// Ops on a device whose binding limit is cut to 4 KiB, so every op runs in several chunks.
#[test]
fn chunked_under_small_binding_limit() {
    let mut g = Gpu::new(&GpuOptions::from_env()).unwrap();
    g.limits.max_storage_buffer_binding_size = 4096;
    let counts = [
        run_unary(&g, Activation::Gelu, &[3001], 40),
        run_binary(&g, BinaryOp::Add, &[3001], &[3001], 41),
        run_binary(&g, BinaryOp::Mul, &[60, 50], &[50], 42),
        run_binary(&g, BinaryOp::Add, &[60, 4, 9], &[60, 1, 9], 43),
        run_geglu(&g, &[150, 18], 44),
    ];
    assert!(counts.iter().all(|&c| c > 1), "every op should have run in several chunks: {counts:?}");
    // One row that cannot be bound is an error, not a fault.
    let x = Tensor::empty(&g, &[2, 2000], DType::F32).unwrap();
    let out = Tensor::empty(&g, &[2, 1000], DType::F32).unwrap();
    let e = geglu(&g, &mut Recording::new(), &x, &out).unwrap_err();
    assert!(e.to_string().contains("geglu"), "{e}");
}

#[test]
fn shape_errors_are_results() {
    let gpu = gpu();
    let mut rec = Recording::new();
    let t = |shape: &[usize]| poisoned(shape, DType::F32);
    let (a, b) = (t(&[2, 3]), t(&[3, 3]));
    assert!(binary(gpu, &mut rec, BinaryOp::Add, &a, &b, &t(&[2, 3])).is_err());
    assert!(binary(gpu, &mut rec, BinaryOp::Add, &a, &t(&[3]), &t(&[3, 2])).is_err());
    assert!(binary(gpu, &mut rec, BinaryOp::Add, &a, &poisoned(&[3], DType::F16), &t(&[2, 3])).is_err());
    assert!(unary(gpu, &mut rec, Activation::Silu, &a, &t(&[3, 2])).is_err());
    let ids = Tensor::from_u32(gpu, &[2, 3], &[0; 6]).unwrap();
    assert!(unary(gpu, &mut rec, Activation::Silu, &ids, &ids).is_err());
    assert!(geglu(gpu, &mut rec, &t(&[2, 5]), &t(&[2, 2])).is_err());
    assert!(geglu(gpu, &mut rec, &t(&[2, 6]), &t(&[2, 6])).is_err());
    let e = binary(gpu, &mut rec, BinaryOp::Mul, &a, &t(&[2, 1, 3]), &a).unwrap_err();
    assert!(e.to_string().contains("mul"), "{e}");
    assert!(rec.is_empty());
}
