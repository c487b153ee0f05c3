//! Row softmax and materialised attention against f64 CPU references: odd row lengths (1 to 4097, past the
//! workgroup size), large-magnitude logits that overflow a softmax without the max subtraction, scales other than
//! 1, in place, more rows than one grid dimension holds; attention for head dims 512 (the SD VAE's), 64 and 3 with
//! one and two heads and odd query/key counts, split into batch and query chunks by small budgets (with views that
//! start off the binding alignment, so the head copies run) and by a device with a 4 KiB binding limit, and
//! cross-checked against the flash kernel for D = 64; bad shapes as errors. f32 and f16 storage, NaN-poisoned
//! outputs.
//!
//! Tolerances (relative L2 against the reference on the values the GPU holds): `tol(dtype)`, f32 1e-5 and f16 2e-3.
mod common;

use common::*;
use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::attention::{AttentionOpts, attention};
use p2p_wgpu::ops::softmax::{attention_materialized, attention_materialized_budget, softmax_rows};
use p2p_wgpu::tensor::{DType, Tensor};

/// softmax(scale · x) of each row of `n` values, in f64.
fn softmax_ref(x: &[f32], n: usize, scale: f32) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let v: Vec<f64> = row.iter().map(|&e| scale as f64 * e as f64).collect();
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = v.iter().map(|e| (e - m).exp()).sum();
        out.extend(v.iter().map(|e| (e - m).exp() / sum));
    }
    out
}

/// `upload` on `gpu`: the tensor and the values it holds.
fn up(gpu: &Gpu, shape: &[usize], dt: DType, v: &[f32]) -> (Tensor, Vec<f32>) {
    (Tensor::from_f32(gpu, shape, dt, v).unwrap(), quantize(v, dt))
}

/// `poisoned` on `gpu`.
fn nan(gpu: &Gpu, shape: &[usize], dt: DType) -> Tensor {
    let t = Tensor::empty(gpu, shape, dt).unwrap();
    t.fill(gpu, f32::NAN).unwrap();
    t
}

/// Softmax of `rows` random rows of `n` values in [-amp, amp), out of place (and in place when `in_place`).
fn run_softmax(rows: usize, n: usize, amp: f32, scale: f32, in_place: bool, seed: u64) {
    run_softmax_on(gpu(), rows, n, amp, scale, in_place, seed);
}

/// `run_softmax` on `gpu`; returns the dispatch count of the out-of-place run.
fn run_softmax_on(gpu: &Gpu, rows: usize, n: usize, amp: f32, scale: f32, in_place: bool, seed: u64) -> usize {
    let mut count = 0;
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let (tx, x) = up(gpu, &[rows, n], dt, &rng.vec(rows * n, amp));
        let want = softmax_ref(&x, n, scale);
        let name = format!("{dt:?} softmax rows {rows} n {n} amp {amp} scale {scale}");
        let out = nan(gpu, &[rows, n], dt);
        let mut rec = Recording::new();
        softmax_rows(gpu, &mut rec, &tx, &out, scale).unwrap();
        count = rec.len();
        gpu.run(&rec).unwrap();
        check(&name, &out.to_f32(gpu).unwrap(), &want, tol(dt));
        if in_place {
            let mut rec = Recording::new();
            softmax_rows(gpu, &mut rec, &tx, &tx, scale).unwrap();
            gpu.run(&rec).unwrap();
            check(&format!("{name} in place"), &tx.to_f32(gpu).unwrap(), &want, tol(dt));
        }
    }
    count
}

#[test]
fn softmax_odd_lengths() {
    for (i, n) in [1usize, 7, 77, 1000, 4097].into_iter().enumerate() {
        run_softmax(5, n, 3.0, 1.0, i % 2 == 0, 100 + i as u64);
    }
    // One row; many short rows.
    run_softmax(1, 300, 2.0, 1.0, false, 110);
    run_softmax(1000, 3, 2.0, 1.0, true, 111);
}

#[test]
fn softmax_scales() {
    run_softmax(4, 77, 4.0, 0.125, false, 120);
    run_softmax(3, 513, 1.0, 2.5, true, 121);
    run_softmax(3, 64, 1.0, -1.75, false, 122);
    run_softmax(2, 33, 5.0, 0.0, false, 123);
}

/// Logits of ±80 (and ±160 via the scale): exp of these overflows f32 without the max subtraction.
#[test]
fn softmax_large_magnitudes() {
    run_softmax(4, 1000, 80.0, 1.0, false, 130);
    run_softmax(3, 77, 80.0, 2.0, true, 131);
    run_softmax(2, 4097, 80.0, 1.0, false, 132);
}

/// More rows than one grid dimension holds (grid_1d's second dimension).
#[test]
fn softmax_many_rows() {
    run_softmax(66_000, 2, 3.0, 1.0, false, 140);
}

/// Rows given as `[.., n]` of higher rank, and empty tensors.
#[test]
fn softmax_ranks_and_empty() {
    let gpu = gpu();
    let mut rng = Rng::new(150);
    let (tx, x) = upload(&[2, 3, 9], DType::F32, &rng.vec(54, 2.0));
    let out = poisoned(&[2, 3, 9], DType::F32);
    let mut rec = Recording::new();
    softmax_rows(gpu, &mut rec, &tx, &out, 1.5).unwrap();
    gpu.run(&rec).unwrap();
    check("rank 3", &download(&out), &softmax_ref(&x, 9, 1.5), tol(DType::F32));
    let (e, _) = upload(&[0, 5], DType::F32, &[]);
    let mut rec = Recording::new();
    softmax_rows(gpu, &mut rec, &e, &e.clone(), 1.0).unwrap();
    assert!(rec.is_empty());
}

#[test]
fn softmax_errors_are_results() {
    let gpu = gpu();
    let (x, _) = upload(&[4, 8], DType::F32, &[0.0; 32]);
    let mut rec = Recording::new();
    let bad_shape = poisoned(&[4, 7], DType::F32);
    let bad_dtype = poisoned(&[4, 8], DType::F16);
    let u = Tensor::from_u32(gpu, &[4, 8], &[0; 32]).unwrap();
    let flat = x.reshape(&[32]).unwrap();
    let upper = flat.rows(gpu, 16, 16).unwrap().reshape(&[2, 8]).unwrap();
    let lower = flat.rows(gpu, 0, 16).unwrap().reshape(&[2, 8]).unwrap();
    let lower_wide = flat.rows(gpu, 0, 24).unwrap().reshape(&[3, 8]).unwrap();
    let mid = flat.rows(gpu, 8, 24).unwrap().reshape(&[3, 8]).unwrap();
    let errors = [
        softmax_rows(gpu, &mut rec, &x, &bad_shape, 1.0).unwrap_err(),
        softmax_rows(gpu, &mut rec, &x, &bad_dtype, 1.0).unwrap_err(),
        softmax_rows(gpu, &mut rec, &u, &u.clone(), 1.0).unwrap_err(),
        softmax_rows(gpu, &mut rec, &x, &poisoned(&[4, 8], DType::F32), f32::NAN).unwrap_err(),
        softmax_rows(gpu, &mut rec, &lower_wide, &mid, 1.0).unwrap_err(),
        // Disjoint views of one buffer: wgpu would reject the dispatch, so the op does.
        softmax_rows(gpu, &mut rec, &lower, &upper, 1.0).unwrap_err(),
    ];
    for e in errors {
        assert!(e.to_string().contains("softmax"), "{e}");
    }
    assert!(rec.is_empty());
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    fn c(&self) -> usize {
        self.heads * self.d
    }
}

/// Attention reference: out[b, i, h] = softmax(scale · Q[b, i, h] · K[b, :, h]ᵀ) · V[b, :, h], in f64.
fn attention_ref(s: Dims, q: &[f32], k: &[f32], v: &[f32], scale: f64) -> Vec<f64> {
    let c = s.c();
    let mut out = vec![0.0; s.b * s.nq * c];
    for b in 0..s.b {
        for h in 0..s.heads {
            for i in 0..s.nq {
                let qo = (b * s.nq + i) * c + h * s.d;
                let mut p: Vec<f64> = (0..s.nk)
                    .map(|n| {
                        let ko = (b * s.nk + n) * c + h * s.d;
                        scale * (0..s.d).map(|e| q[qo + e] as f64 * k[ko + e] as f64).sum::<f64>()
                    })
                    .collect();
                let m = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                p.iter_mut().for_each(|e| *e = (*e - m).exp());
                let sum: f64 = p.iter().sum();
                for e in 0..s.d {
                    let acc: f64 = (0..s.nk).map(|n| p[n] * v[(b * s.nk + n) * c + h * s.d + e] as f64).sum();
                    out[qo + e] = acc / sum;
                }
            }
        }
    }
    out
}

/// Q, K, V of one case, scaled so that scores spread over a few units (a peaked but not one-hot softmax).
fn inputs(gpu: &Gpu, s: Dims, dt: DType, seed: u64) -> ([Tensor; 3], [Vec<f32>; 3]) {
    let mut rng = Rng::new(seed);
    let (c, qa) = (s.c(), 3.0 * (64.0 / s.d as f32).sqrt().min(3.0));
    let (tq, q) = up(gpu, &[s.b, s.nq, c], dt, &rng.vec(s.b * s.nq * c, qa));
    let (tk, k) = up(gpu, &[s.b, s.nk, c], dt, &rng.vec(s.b * s.nk * c, 2.0));
    let (tv, v) = up(gpu, &[s.b, s.nk, c], dt, &rng.vec(s.b * s.nk * c, 1.0));
    ([tq, tk, tv], [q, k, v])
}

/// Runs one case against the reference; `budget(dt)` caps the temporaries (None: the default).
fn run_attention(s: Dims, scale: Option<f32>, budget: impl Fn(DType) -> Option<u64>, seed: u64) {
    run_attention_on(gpu(), s, scale, budget, seed);
}

/// `run_attention` on `gpu`; returns the dispatch count of the f32 run.
fn run_attention_on(gpu: &Gpu, s: Dims, scale: Option<f32>, budget: impl Fn(DType) -> Option<u64>, seed: u64) -> usize {
    let mut count = 0;
    for dt in dtypes() {
        let ([tq, tk, tv], [q, k, v]) = inputs(gpu, s, dt, seed);
        let out = nan(gpu, &[s.b, s.nq, s.c()], dt);
        let mut rec = Recording::new();
        match budget(dt) {
            Some(bytes) => {
                attention_materialized_budget(gpu, &mut rec, &tq, &tk, &tv, &out, s.heads, scale, bytes).unwrap()
            }
            None => attention_materialized(gpu, &mut rec, &tq, &tk, &tv, &out, s.heads, scale).unwrap(),
        }
        gpu.run(&rec).unwrap();
        let sc = scale.map_or(1.0 / (s.d as f64).sqrt(), f64::from);
        let want = attention_ref(s, &q, &k, &v, sc);
        let name = format!("{dt:?} {s:?} scale {scale:?} budget {:?} ({} dispatches)", budget(dt), rec.len());
        check(&name, &out.to_f32(gpu).unwrap(), &want, tol(dt));
        if dt == DType::F32 {
            count = rec.len();
        }
    }
    count
}

fn dims(b: usize, nq: usize, nk: usize, heads: usize, d: usize) -> Dims {
    Dims { b, nq, nk, heads, d }
}

/// The SD VAE mid-block's head (one head, D = 512), with its 4096 tokens cut to 256 for lavapipe.
#[test]
fn attention_vae_head_dim() {
    run_attention(dims(1, 256, 256, 1, 512), None, |_| None, 200);
    run_attention(dims(2, 33, 257, 2, 512), None, |_| None, 201);
}

#[test]
fn attention_odd_shapes() {
    run_attention(dims(2, 257, 33, 2, 64), None, |_| None, 210);
    run_attention(dims(2, 1, 257, 1, 64), None, |_| None, 211);
    run_attention(dims(2, 33, 1, 1, 3), None, |_| None, 212);
    run_attention(dims(3, 257, 33, 2, 3), None, |_| None, 213);
    run_attention(dims(1, 1, 1, 2, 3), None, |_| None, 214);
    run_attention(dims(2, 33, 33, 1, 64), Some(0.3), |_| None, 215);
    run_attention(dims(1, 33, 77, 2, 40), Some(-0.05), |_| None, 216);
}

/// Budgets that split the work: batch rows in twos (the batched GEMM path, then a single row), and one row in
/// query chunks of 16. With D = 3 and one head, most views start off the binding alignment, so Q, K, V are
/// copied and the output written back by the head copy kernel; its windows are split too.
#[test]
fn attention_in_chunks() {
    let per_row = |s: Dims, dt: DType| ((s.nq * s.nk).max(s.nq * s.d).max(s.nk * s.d) * dt.size()) as u64;
    let s = dims(3, 33, 20, 2, 64);
    run_attention(s, None, |dt| Some(2 * per_row(s, dt)), 220);
    let s = dims(2, 57, 20, 1, 3);
    run_attention(s, None, |dt| Some((16 * s.nk * dt.size()) as u64), 221);
    let s = dims(3, 57, 20, 1, 3);
    run_attention(s, None, |dt| Some(per_row(s, dt)), 222);
    let s = dims(2, 40, 9, 2, 64);
    run_attention(s, None, |dt| Some((7 * s.d * dt.size()) as u64 * 2), 223);
}

/// A device whose binding limit is cut to 4 KiB: softmax rows run in chunks; attention splits queries within the
/// adapter limit (default budget), and its GEMMs, softmax and head copies all stay within 4 KiB bindings.
#[test]
fn chunked_under_small_binding_limit() {
    let mut g = Gpu::new(&GpuOptions::from_env()).unwrap();
    g.limits.max_storage_buffer_binding_size = 4096;
    let counts = [
        run_softmax_on(&g, 50, 77, 3.0, 0.5, true, 300),
        run_attention_on(&g, dims(2, 40, 9, 2, 64), None, |_| None, 301),
        run_attention_on(&g, dims(3, 21, 19, 1, 5), Some(0.7), |_| None, 302),
    ];
    // Unsplit, these take 1, 14 (2 heads × (2 K/V copies, Q copy, 2 GEMMs, softmax, write-back)) and 3 dispatches.
    assert!(counts[0] > 1 && counts[1] > 14 && counts[2] > 3, "expected several chunks: {counts:?}");
    // A row of keys that cannot be bound is an error, not a fault.
    let t = |shape: &[usize]| nan(&g, shape, DType::F32);
    let (q, kv) = (t(&[1, 2, 64]), t(&[1, 20, 64]));
    let e = attention_materialized(&g, &mut Recording::new(), &q, &kv, &kv, &t(&[1, 2, 64]), 1, None).unwrap_err();
    assert!(e.to_string().contains("attention_materialized"), "{e}");
    let x = t(&[2, 1025]);
    let e = softmax_rows(&g, &mut Recording::new(), &x, &x, 1.0).unwrap_err();
    assert!(e.to_string().contains("softmax"), "{e}");
}

/// The same result as the flash kernel on a head dim both support.
#[test]
fn attention_matches_flash_kernel() {
    let gpu = gpu();
    let s = dims(2, 65, 77, 2, 64);
    for dt in dtypes() {
        let ([tq, tk, tv], _) = inputs(gpu, s, dt, 230);
        let a = poisoned(&[s.b, s.nq, s.c()], dt);
        let f = poisoned(&[s.b, s.nq, s.c()], dt);
        let mut rec = Recording::new();
        attention_materialized(gpu, &mut rec, &tq, &tk, &tv, &a, s.heads, None).unwrap();
        attention(gpu, &mut rec, &tq, &tk, &tv, &f, &AttentionOpts::heads(s.heads)).unwrap();
        gpu.run(&rec).unwrap();
        let flash: Vec<f64> = download(&f).iter().map(|&x| x as f64).collect();
        check(&format!("{dt:?} materialised vs flash"), &download(&a), &flash, 2.0 * tol(dt));
    }
}

#[test]
fn attention_errors_are_results() {
    let gpu = gpu();
    let t = |shape: &[usize], dt: DType| poisoned(shape, dt);
    let (q, k, v, o) = (
        t(&[2, 5, 12], DType::F32),
        t(&[2, 7, 12], DType::F32),
        t(&[2, 7, 12], DType::F32),
        t(&[2, 5, 12], DType::F32),
    );
    let mut rec = Recording::new();
    let u = Tensor::from_u32(gpu, &[2, 5, 12], &[0; 120]).unwrap();
    let nokeys = t(&[2, 0, 12], DType::F32);
    let errors = [
        attention_materialized(gpu, &mut rec, &q, &k, &v, &o, 5, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &k, &v, &o, 0, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &k, &t(&[2, 6, 12], DType::F32), &o, 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &t(&[1, 7, 12], DType::F32), &v, &o, 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &k, &v, &t(&[2, 5, 12], DType::F16), 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q.reshape(&[10, 12]).unwrap(), &k, &v, &o, 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &u, &k, &v, &o, 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &nokeys, &nokeys, &o, 2, None).unwrap_err(),
        attention_materialized(gpu, &mut rec, &q, &k, &v, &o, 2, Some(f32::INFINITY)).unwrap_err(),
        attention_materialized_budget(gpu, &mut rec, &q, &k, &v, &o, 2, None, 64).unwrap_err(),
    ];
    for e in errors {
        assert!(e.to_string().contains("attention_materialized"), "{e}");
    }
    assert!(rec.is_empty());
}
