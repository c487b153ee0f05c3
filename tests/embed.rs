//! Timestep embedding against diffusers' `get_timestep_embedding` evaluated in f64, and embedding gather against
//! a CPU lookup: odd dims, size-1 shapes, f32 and f16, NaN-poisoned outputs, tables bound in several chunks
//! (forced on small tables, and CLIP's real 49408×768 f32 table over lavapipe's 128 MiB binding limit), and
//! errors (ids outside the vocabulary, bad shapes) as `Err`.
mod common;

use common::*;
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::embed::{TimestepOpts, TokenIds, embedding, timestep_embedding};
use p2p_wgpu::tensor::{DType, Tensor};

/// diffusers' get_timestep_embedding in f64; also returns each element's bound on |GPU − f64| (`bound`).
fn timestep_ref(t: &[f32], dim: usize, o: &TimestepOpts, dt: DType) -> (Vec<f64>, Vec<f64>) {
    let half = dim / 2;
    let (mut vals, mut bounds) = (Vec::new(), Vec::new());
    for &ts in t {
        for j in 0..dim {
            if j >= 2 * half {
                vals.push(0.0);
                bounds.push(0.0);
                continue;
            }
            let (k, first) = if j < half { (j, true) } else { (j - half, false) };
            let exponent = -(o.max_period as f64).ln() * k as f64 / (half as f64 - o.downscale_freq_shift as f64);
            let arg = o.scale as f64 * ts as f64 * exponent.exp();
            let sin = first != o.flip_sin_to_cos;
            vals.push(if sin { arg.sin() } else { arg.cos() });
            // Column k = 0 has frequency exp(0) = 1: with scale 1 the f32 argument is the timestep itself, exact, so
            // only the range reduction and sin/cos remain; hold those to 2e-6 at arguments up to 999 rad.
            let exact = k == 0 && o.scale == 1.0;
            bounds.push(if exact { bound(0.0, 0.0, dt) } else { bound(arg, exponent, dt) });
        }
    }
    (vals, bounds)
}

/// Bound on |GPU − f64| for one element. The argument carries f32 rounding that diffusers' own f32 evaluation
/// shares: the exponent's rounding becomes a relative error of ~|exponent| ulps of exp(exponent) (Vulkan also
/// allows exp 3 + 2|x| ulps), plus a few ulps for the products, so ≈ (4 + 2|exponent|)·2⁻²⁴·|arg|: ~1e-4
/// absolute at 1000 rad. Then sin/cos on the reduced argument (2e-6), and f16 output rounding (2⁻¹¹ at |v| ≤ 1).
fn bound(arg: f64, exponent: f64, dt: DType) -> f64 {
    let out = if dt == DType::F16 { 2.0f64.powi(-11) } else { 0.0 };
    2e-6 + arg.abs() * (4.0 + 2.0 * exponent.abs()) * 2.0f64.powi(-24) + out
}

fn run_timestep(t: &[f32], dim: usize, o: TimestepOpts) {
    let gpu = gpu();
    let tt = Tensor::from_f32(gpu, &[t.len()], DType::F32, t).unwrap();
    for dt in dtypes() {
        let out = poisoned(&[t.len(), dim], dt);
        let mut rec = Recording::new();
        timestep_embedding(gpu, &mut rec, &tt, &out, &o).unwrap();
        gpu.run(&rec).unwrap();
        let got = download(&out);
        let (want, bounds) = timestep_ref(t, dim, &o, dt);
        let name = format!("{dt:?} timestep dim {dim} {o:?}");
        let mut worst = 0.0f64;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(err <= bounds[i], "{name}: element {i} is {g}, want {w} ± {:.2e}", bounds[i]);
            worst = worst.max(if err == 0.0 { 0.0 } else { err / bounds[i] });
        }
        let e = rel_l2(&got, &want);
        eprintln!("{name}: rel L2 {e:.2e}, worst element at {worst:.2} of its bound");
        check(&name, &got, &want, if dt == DType::F16 { 1e-3 } else { 5e-5 });
    }
}

#[test]
fn timestep_embedding_matches_diffusers() {
    let mut rng = Rng::new(1);
    let mut t: Vec<f32> = (0..6).map(|_| (rng.uniform() + 1.0) * 500.0).collect();
    t.extend([0.0, 1.0, 999.0, 500.5, 0.25]);
    // SD 1.x/2.x time_proj: Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0).
    run_timestep(&t, 320, TimestepOpts::sd());
    // diffusers' defaults (no flip, shift 1), odd dim (zero column), other period and scale.
    run_timestep(&t, 321, TimestepOpts::default());
    run_timestep(&t[..3], 7, TimestepOpts { max_period: 100.0, scale: 0.5, ..TimestepOpts::sd() });
    run_timestep(&[42.0], 1, TimestepOpts::default());
    run_timestep(&[3.0], 3, TimestepOpts::sd());
}

#[test]
fn timestep_errors_are_results() {
    let gpu = gpu();
    let mut rec = Recording::new();
    let t = poisoned(&[2], DType::F32);
    // dim 2 with the default shift 1 divides by zero (torch returns NaN).
    assert!(timestep_embedding(gpu, &mut rec, &t, &poisoned(&[2, 2], DType::F32), &TimestepOpts::default()).is_err());
    assert!(timestep_embedding(gpu, &mut rec, &t, &poisoned(&[3, 8], DType::F32), &TimestepOpts::sd()).is_err());
    let t16 = poisoned(&[2], DType::F16);
    assert!(timestep_embedding(gpu, &mut rec, &t16, &poisoned(&[2, 8], DType::F32), &TimestepOpts::sd()).is_err());
    let bad = TimestepOpts { max_period: 0.0, ..TimestepOpts::sd() };
    assert!(timestep_embedding(gpu, &mut rec, &t, &poisoned(&[2, 8], DType::F32), &bad).is_err());
    assert!(rec.is_empty());
}

/// Gathers `n` random ids (plus the first and last row) from a seeded `[v, d]` table, optionally capping the
/// chunk; checks exactly and returns the fewest dispatches any dtype took.
fn run_gather(v: usize, d: usize, n: usize, chunk: Option<usize>, seed: u64) -> usize {
    let gpu = gpu();
    let mut fewest = usize::MAX;
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let table = quantize(&rng.vec(v * d, 2.0), dt);
        let mut ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        ids.extend([0, v as u32 - 1]);
        let tt = Tensor::from_f32(gpu, &[v, d], dt, &table).unwrap();
        let tid = TokenIds::upload(gpu, &ids, v).unwrap();
        let out = poisoned(&[ids.len(), d], dt);
        let mut rec = Recording::new();
        embedding(gpu, &mut rec, &tid, &tt, &out, chunk).unwrap();
        gpu.run(&rec).unwrap();
        fewest = fewest.min(rec.len());
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| table[id as usize * d..(id as usize + 1) * d].iter().map(|&x| x as f64))
            .collect();
        check(&format!("{dt:?} gather [{v}, {d}] n {n} chunk {chunk:?}"), &download(&out), &want, 0.0);
    }
    fewest
}

#[test]
fn gather_small_and_chunked_tables() {
    assert_eq!(run_gather(37, 5, 11, None, 1), 1);
    assert_eq!(run_gather(1, 1, 0, None, 2), 1);
    // Chunk caps are rounded to the row multiple that keeps views aligned, so these still give many chunks.
    assert!(run_gather(300, 5, 40, Some(10), 3) > 4);
    assert!(run_gather(200, 64, 25, Some(7), 4) > 20);
    assert!(run_gather(97, 768, 9, Some(1), 5) > 90);
}

/// CLIP's token table, 49408×768 f32 (151 MB): over lavapipe's 128 MiB binding limit, so it is bound in chunks.
#[test]
fn gather_clip_table_over_binding_limit() {
    let gpu = gpu();
    let (v, d) = (49408usize, 768usize);
    let value = |row: usize, col: usize| ((row * 131 + col * 7) % 2003) as f32 / 1001.0 - 1.0;
    let table: Vec<f32> = (0..v * d).map(|i| value(i / d, i % d)).collect();
    let tt = Tensor::from_f32(gpu, &[v, d], DType::F32, &table).unwrap();
    drop(table);
    let mut rng = Rng::new(7);
    // Two prompts of 77 tokens: BOS 49406, words, EOS/pad 49407.
    let ids: Vec<u32> = (0..154)
        .map(|i| match i % 77 {
            0 => 49406,
            k if k > 60 => 49407,
            _ => rng.below(v as u64) as u32,
        })
        .collect();
    let tid = TokenIds::upload(gpu, &ids, v).unwrap();
    let out = poisoned(&[ids.len(), d], DType::F32);
    let mut rec = Recording::new();
    embedding(gpu, &mut rec, &tid, &tt, &out, None).unwrap();
    let needed = ((v * d * 4) as u64).div_ceil(gpu.limits.max_storage_buffer_binding_size) as usize;
    assert!(rec.len() >= needed, "{} dispatches for a table needing {needed} chunks", rec.len());
    gpu.run(&rec).unwrap();
    let want: Vec<f64> = ids.iter().flat_map(|&id| (0..d).map(move |c| value(id as usize, c) as f64)).collect();
    check("clip table gather", &download(&out), &want, 0.0);
}

#[test]
fn gather_errors_are_results() {
    let gpu = gpu();
    let e = TokenIds::upload(gpu, &[1, 5, 10], 10).unwrap_err();
    assert!(e.to_string().contains("10"), "{e}");
    let ids = TokenIds::upload(gpu, &[1, 5, 9], 10).unwrap();
    let mut rec = Recording::new();
    let table = poisoned(&[9, 4], DType::F32);
    assert!(embedding(gpu, &mut rec, &ids, &table, &poisoned(&[3, 4], DType::F32), None).is_err());
    let table = poisoned(&[10, 4], DType::F32);
    assert!(embedding(gpu, &mut rec, &ids, &table, &poisoned(&[3, 5], DType::F32), None).is_err());
    assert!(embedding(gpu, &mut rec, &ids, &table, &poisoned(&[3, 4], DType::F16), None).is_err());
    let u = Tensor::from_u32(gpu, &[10, 4], &[0; 40]).unwrap();
    assert!(embedding(gpu, &mut rec, &ids, &u, &u, None).is_err());
    assert!(
        embedding(gpu, &mut rec, &ids, &poisoned(&[40], DType::F32), &poisoned(&[3, 4], DType::F32), None).is_err()
    );
    assert!(rec.is_empty());
}
