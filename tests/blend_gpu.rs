//! Local blending on the GPU (ops::blend) against the host reference (p2p::blend) on random stores: odd map
//! sides (1, 3, 4, 5), upsampling and downsampling to odd latent sizes, rows without blend words, a single prompt,
//! negative maps, several runs of the same dispatches on new store contents. Masks and blended samples must be
//! equal (masks are 0/1; blending with a 0/1 mask is the same f32 arithmetic on both sides). Cases whose
//! normalised map lies within 1e-5 of the threshold are redrawn: there f32 and f64 may legitimately disagree.
mod common;

use common::*;
use p2p_wgpu::ops::blend::LocalBlend;
use p2p_wgpu::p2p::blend;
use p2p_wgpu::tensor::{DType, Tensor};

/// The host's normalised values `v / max` of every row (f64), to reject near-ties.
fn near_tie(
    store: &[f32],
    b: usize,
    res: usize,
    keys: usize,
    pos: &[Vec<usize>],
    thr: f32,
    (h, w): (usize, usize),
) -> bool {
    for (row, p) in pos.iter().enumerate().take(b) {
        let map: Vec<f64> =
            (0..res * res).map(|q| p.iter().map(|&n| store[(row * res * res + q) * keys + n] as f64).sum()).collect();
        let mut pooled = vec![f64::NEG_INFINITY; res * res];
        for y in 0..res {
            for x in 0..res {
                for yy in y.saturating_sub(1)..(y + 2).min(res) {
                    for xx in x.saturating_sub(1)..(x + 2).min(res) {
                        pooled[y * res + x] = pooled[y * res + x].max(map[yy * res + xx]);
                    }
                }
            }
        }
        let up: Vec<f64> = (0..h * w).map(|i| pooled[(i / w) * res / h * res + (i % w) * res / w]).collect();
        let max = up.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max > 0.0 && up.iter().any(|&v| (v / max - thr as f64).abs() < 1e-5) {
            return true;
        }
    }
    false
}

struct Case {
    b: usize,
    res: usize,
    keys: usize,
    hw: (usize, usize),
    c: usize,
    thr: f32,
    /// Store values in [-neg, 1): some maps negative.
    neg: f32,
}

fn run_case(k: &Case, seed: u64) {
    let gpu = gpu();
    let name = format!("b {} res {} keys {} hw {:?} c {} thr {}", k.b, k.res, k.keys, k.hw, k.c, k.thr);
    let (h, w) = k.hw;
    let mut rng = Rng::new(seed);
    // Blend-word positions: 0..3 per row (row 1 none when there are targets).
    let positions: Vec<Vec<usize>> = (0..k.b)
        .map(|r| {
            let cnt = if r == 1 { 0 } else { 1 + rng.below(3) as usize };
            let mut p: Vec<usize> = (0..cnt).map(|_| rng.below(k.keys as u64) as usize).collect();
            p.sort_unstable();
            p.dedup();
            p
        })
        .collect();
    let store_len = k.b * k.res * k.res * k.keys;
    let store = Tensor::empty(gpu, &[k.b, k.res * k.res, k.keys], DType::F32).unwrap();
    let x0 = rng.vec(k.b * h * w * k.c, 2.0);
    let x = Tensor::from_f32(gpu, &[k.b, h, w, k.c], DType::F32, &x0).unwrap();
    let lb = LocalBlend::new(gpu, &store, &positions, k.thr, &x).unwrap();
    let mut hx = x0.clone();
    for run in 0..3 {
        // A fresh store without near-ties (the running sum of the reference grows; any content will do here).
        let mut sv;
        let mut tries = 0;
        loop {
            sv = (0..store_len).map(|_| (rng.uniform() + 1.0) / 2.0 * (1.0 + k.neg) - k.neg).collect::<Vec<f32>>();
            if !near_tie(&sv, k.b, k.res, k.keys, &positions, k.thr, k.hw) {
                break;
            }
            tries += 1;
            assert!(tries < 50, "{name}: cannot draw a store without near-ties");
        }
        store.write_f32(gpu, &sv).unwrap();
        // Poison the masks: every element must be rewritten.
        lb.masks().fill(gpu, f32::NAN).unwrap();
        gpu.run_seq(lb.dispatches()).unwrap();
        let want = blend::masks(&sv, k.b, k.res, k.keys, &positions, k.thr, k.hw);
        let got = lb.read_masks(gpu).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (r, (g, wnt)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), wnt.len(), "{name}: mask row {r} length");
            if let Some(i) = (0..g.len()).find(|&i| g[i].to_bits() != wnt[i].to_bits()) {
                panic!("{name} run {run}: mask of row {r} differs first at pixel {i}: {} vs {}", g[i], wnt[i]);
            }
        }
        blend::apply(&mut hx, &want, h * w, k.c);
        let gx = download(&x);
        for (i, (a, e)) in gx.iter().zip(&hx).enumerate() {
            assert_eq!(a.to_bits(), e.to_bits(), "{name} run {run}: sample element {i}: {a} vs {e}");
        }
    }
}

#[test]
fn masks_and_blending_match_the_host() {
    let cases = [
        Case { b: 3, res: 4, keys: 9, hw: (16, 16), c: 4, thr: 0.3, neg: 0.0 },
        Case { b: 2, res: 1, keys: 5, hw: (3, 3), c: 3, thr: 0.3, neg: 0.0 },
        Case { b: 4, res: 3, keys: 77, hw: (7, 5), c: 4, thr: 0.45, neg: 0.0 },
        Case { b: 2, res: 5, keys: 6, hw: (3, 4), c: 1, thr: 0.2, neg: 0.0 },
        Case { b: 2, res: 5, keys: 6, hw: (64, 64), c: 4, thr: 0.6, neg: 0.0 },
        Case { b: 1, res: 4, keys: 7, hw: (8, 8), c: 3, thr: 0.3, neg: 0.0 },
        Case { b: 3, res: 3, keys: 4, hw: (9, 9), c: 2, thr: 0.3, neg: 0.8 },
        Case { b: 3, res: 2, keys: 3, hw: (5, 5), c: 3, thr: 0.5, neg: 3.0 },
    ];
    for (i, k) in cases.iter().enumerate() {
        run_case(k, 1000 + i as u64);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let gpu = gpu();
    let store = Tensor::empty(gpu, &[2, 9, 5], DType::F32).unwrap();
    let x = Tensor::empty(gpu, &[2, 4, 4, 3], DType::F32).unwrap();
    let pos = vec![vec![1], vec![2]];
    assert!(LocalBlend::new(gpu, &store, &pos, 0.3, &x).is_ok());
    assert!(LocalBlend::new(gpu, &store, &pos[..1], 0.3, &x).is_err());
    assert!(LocalBlend::new(gpu, &store, &[vec![1], vec![5]], 0.3, &x).is_err());
    let not_square = Tensor::empty(gpu, &[2, 8, 5], DType::F32).unwrap();
    assert!(LocalBlend::new(gpu, &not_square, &pos, 0.3, &x).is_err());
    let x3 = Tensor::empty(gpu, &[3, 4, 4, 3], DType::F32).unwrap();
    assert!(LocalBlend::new(gpu, &store, &pos, 0.3, &x3).is_err());
    let x16 = Tensor::empty(gpu, &[2, 4, 4, 3], DType::F16).unwrap_or_else(|_| x.clone());
    if x16.dtype == DType::F16 {
        assert!(LocalBlend::new(gpu, &store, &pos, 0.3, &x16).is_err());
    }
}
