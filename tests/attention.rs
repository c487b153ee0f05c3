//! Attention kernels against f64 CPU references: plain scaled dot-product attention (flash kernel) on the SD head
//! dims and small ones, odd and long key counts; self-attention injection; cross-attention with the
//! Prompt-to-Prompt edit (1–3 targets, random sparse mappers, reweights with negatives, α of 0, 1 and between),
//! unedited rows equal to plain attention, store accumulation over two replays of one recording; bad edit data and
//! shapes as errors. f32 and f16 storage, NaN-poisoned outputs.
//!
//! Tolerances (relative L2 against the reference on the values the GPU holds, i.e. f16-rounded inputs for f16):
//! outputs `tol(dtype)` (f32 1e-5, f16 2e-3, where f16 rounding of the output alone gives ~3e-4); the store is f32
//! arithmetic in both cases and is held to 1e-5.
mod common;

use common::*;
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::attention::{
    AttentionOpts, CrossEdit, CrossEditOpts, EditData, FlashCore, Inject, Store, attention, attention_with,
    cross_attention_edit,
};
use p2p_wgpu::tensor::{DType, Tensor};

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

/// Inputs of one case: Q and K scaled so that scores spread over a few units (a peaked but not one-hot softmax).
struct Inputs {
    tq: Tensor,
    tk: Tensor,
    tv: Tensor,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn inputs(s: Dims, dt: DType, rng: &mut Rng) -> Inputs {
    let (c, b) = (s.c(), s.b);
    let (tq, q) = upload(&[b, s.nq, c], dt, &rng.vec(b * s.nq * c, 3.0));
    let (tk, k) = upload(&[b, s.nk, c], dt, &rng.vec(b * s.nk * c, 2.0));
    let (tv, v) = upload(&[b, s.nk, c], dt, &rng.vec(b * s.nk * c, 1.0));
    Inputs { tq, tk, tv, q, k, v }
}

/// softmax(scale · Q[qrow, i, h] · K[krow, :, h]ᵀ) in f64.
fn probs(s: Dims, x: &Inputs, qrow: usize, krow: usize, h: usize, i: usize, scale: f64) -> Vec<f64> {
    let c = s.c();
    let qo = (qrow * s.nq + i) * c + h * s.d;
    let mut p: Vec<f64> = (0..s.nk)
        .map(|n| {
            let ko = (krow * s.nk + n) * c + h * s.d;
            scale * (0..s.d).map(|e| x.q[qo + e] as f64 * x.k[ko + e] as f64).sum::<f64>()
        })
        .collect();
    let m = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for e in p.iter_mut() {
        *e = (*e - m).exp();
        sum += *e;
    }
    p.iter_mut().for_each(|e| *e /= sum);
    p
}

/// Writes map · V[vrow, :, h] into `out` at (row, i, h).
#[allow(clippy::too_many_arguments)]
fn apply_v(s: Dims, x: &Inputs, map: &[f64], vrow: usize, row: usize, h: usize, i: usize, out: &mut [f64]) {
    let c = s.c();
    for e in 0..s.d {
        out[(row * s.nq + i) * c + h * s.d + e] =
            (0..s.nk).map(|n| map[n] * x.v[(vrow * s.nk + n) * c + h * s.d + e] as f64).sum();
    }
}

/// Plain attention (and injection) reference.
fn attention_ref(s: Dims, x: &Inputs, scale: f64, inject: Option<Inject>) -> Vec<f64> {
    attention_ref_masked(s, x, scale, inject, false)
}

/// Attention reference, with the causal mask (keys 0..=i for query i) when `causal`.
fn attention_ref_masked(s: Dims, x: &Inputs, scale: f64, inject: Option<Inject>, causal: bool) -> Vec<f64> {
    let mut out = vec![0.0; s.b * s.nq * s.c()];
    for b in 0..s.b {
        let src = match inject {
            Some(j) if (j.first..j.first + j.count).contains(&b) => j.src,
            _ => b,
        };
        for h in 0..s.heads {
            for i in 0..s.nq {
                let mut p = probs(s, x, src, src, h, i, scale);
                if causal {
                    // Renormalise over the visible keys: the same as a softmax over keys 0..=i.
                    p.iter_mut().skip(i + 1).for_each(|e| *e = 0.0);
                    let sum: f64 = p.iter().sum();
                    p.iter_mut().for_each(|e| *e /= sum);
                }
                apply_v(s, x, &p, b, b, h, i, &mut out);
            }
        }
    }
    out
}

/// Cross-attention edit reference: the output, and each conditional row's head-summed map times `store_scale`
/// (`[1 + T, nq, nk]`).
fn edit_ref(s: Dims, x: &Inputs, scale: f64, src: usize, e: &EditData, store_scale: f64) -> (Vec<f64>, Vec<f64>) {
    let t_n = e.targets;
    let mut out = vec![0.0; s.b * s.nq * s.c()];
    let mut store = vec![0.0; (1 + t_n) * s.nq * s.nk];
    for b in 0..s.b {
        for h in 0..s.heads {
            for i in 0..s.nq {
                let mut p = probs(s, x, b, b, h, i, scale);
                if b > src && b <= src + t_n {
                    let t = b - src - 1;
                    let ps = probs(s, x, src, src, h, i, scale);
                    let plain = p.clone();
                    for n in 0..s.nk {
                        let ti = t * s.nk + n;
                        let pi = t * (s.nk + 1) + n;
                        let mut mapped = 0.0;
                        for en in e.w_ptr[pi] as usize..e.w_ptr[pi + 1] as usize {
                            mapped += ps[e.w_idx[en] as usize] * e.w_weight[en] as f64;
                        }
                        let edited = e.eq[ti] as f64 * (mapped + e.r[ti] as f64 * plain[n]);
                        let a = e.alpha[ti] as f64;
                        p[n] = a * edited + (1.0 - a) * plain[n];
                    }
                }
                if b >= src && b <= src + t_n {
                    for n in 0..s.nk {
                        store[((b - src) * s.nq + i) * s.nk + n] += store_scale * p[n];
                    }
                }
                apply_v(s, x, &p, b, b, h, i, &mut out);
            }
        }
    }
    (out, store)
}

/// Rows `rows` of a `[B, nq, c]` array.
fn rows_of<T: Copy>(v: &[T], row_len: usize, rows: impl Iterator<Item = usize>) -> Vec<T> {
    rows.flat_map(|r| v[r * row_len..(r + 1) * row_len].to_vec()).collect()
}

/// `check` that also reports the error (shown with --nocapture).
fn check_e(name: &str, got: &[f32], want: &[f64], tol: f64) {
    eprintln!("{name}: {:.2e}", rel_l2(got, want));
    check(name, got, want, tol);
}

fn run_attention(s: Dims, scale: Option<f32>, inject: Option<Inject>, seed: u64) {
    run_attention_masked(s, scale, inject, false, seed);
}

fn run_attention_masked(s: Dims, scale: Option<f32>, inject: Option<Inject>, causal: bool, seed: u64) {
    run_attention_core(s, scale, inject, causal, seed, None, &dtypes());
}

/// `run_attention_masked` in `dts` with the flash kernel given (`None`: the op's choice).
fn run_attention_core(
    s: Dims,
    scale: Option<f32>,
    inject: Option<Inject>,
    causal: bool,
    seed: u64,
    core: Option<FlashCore>,
    dts: &[DType],
) {
    let gpu = gpu();
    for &dt in dts {
        let mut rng = Rng::new(seed);
        let x = inputs(s, dt, &mut rng);
        let out = poisoned(&[s.b, s.nq, s.c()], dt);
        let opts = AttentionOpts { heads: s.heads, scale, inject, causal };
        let mut rec = Recording::new();
        match core {
            Some(core) => attention_with(gpu, &mut rec, &x.tq, &x.tk, &x.tv, &out, &opts, core).unwrap(),
            None => attention(gpu, &mut rec, &x.tq, &x.tk, &x.tv, &out, &opts).unwrap(),
        }
        gpu.run(&rec).unwrap();
        let sc = scale.map_or(1.0 / (s.d as f64).sqrt(), |v| v as f64);
        let want = attention_ref_masked(s, &x, sc, inject, causal);
        let name = format!("attention {dt:?} {s:?} scale {scale:?} {inject:?} causal {causal} {core:?}");
        check_e(&name, &download(&out), &want, tol(dt));
    }
}

fn dims(b: usize, nq: usize, nk: usize, heads: usize, d: usize) -> Dims {
    Dims { b, nq, nk, heads, d }
}

#[test]
fn flash_head_dims() {
    for (i, d) in [8, 12, 40, 64, 80, 160].into_iter().enumerate() {
        run_attention(dims(2, 33, 77, 2, d), None, None, 100 + i as u64);
        run_attention(dims(1, 70, 130, 2, d), None, None, 110 + i as u64);
    }
}

#[test]
fn flash_odd_shapes() {
    run_attention(dims(1, 1, 1, 1, 8), None, None, 200);
    run_attention(dims(2, 1, 77, 3, 12), None, None, 201);
    run_attention(dims(1, 130, 1, 2, 12), None, None, 202);
    run_attention(dims(3, 65, 33, 1, 16), Some(0.3), None, 203);
    run_attention(dims(1, 130, 130, 1, 8), None, None, 204);
}

/// The causal mask of CLIP's text encoder: 77 tokens with ViT-L's 12 heads of 64 and the tiny models' 8, odd
/// lengths over several key blocks, and D = 160 (split head dim).
#[test]
fn flash_causal() {
    run_attention_masked(dims(2, 77, 77, 12, 64), None, None, true, 500);
    run_attention_masked(dims(3, 77, 77, 4, 8), None, None, true, 501);
    run_attention_masked(dims(1, 130, 130, 1, 160), None, None, true, 502);
    run_attention_masked(dims(1, 1, 1, 1, 12), None, None, true, 503);
    let (q, _) = upload(&[1, 5, 8], DType::F32, &[0.0; 40]);
    let (k, _) = upload(&[1, 6, 8], DType::F32, &[0.0; 48]);
    let out = poisoned(&[1, 5, 8], DType::F32);
    let opts = AttentionOpts { causal: true, ..AttentionOpts::heads(1) };
    assert!(attention(gpu(), &mut Recording::new(), &q, &k, &k, &out, &opts).is_err());
}

/// 4096 keys (a 64×64 SD latent's self-attention) with few queries: many key blocks of the online softmax.
#[test]
fn flash_long_keys() {
    run_attention(dims(1, 48, 4096, 2, 40), None, None, 300);
    run_attention(dims(1, 33, 4096, 1, 160), None, None, 301);
    run_attention(dims(2, 17, 4097, 1, 64), None, None, 302);
}

/// Self-attention injection: rows 2 and 3 use Q, K of row 1; rows 0 and 4 stay plain. Also the SD 1.5 16×16
/// self-attention shape ([uncond src, uncond tgt, src, tgt], 8 heads of 40) with the target injected.
#[test]
fn flash_injection() {
    let s = dims(5, 70, 70, 2, 16);
    run_attention(s, None, Some(Inject { src: 1, first: 2, count: 2 }), 400);
    run_attention(s, None, Some(Inject { src: 3, first: 0, count: 0 }), 401);
    run_attention(dims(4, 256, 256, 8, 40), None, Some(Inject { src: 2, first: 3, count: 1 }), 402);
    // The injected rows really differ from plain attention.
    let mut rng = Rng::new(403);
    let x = inputs(s, DType::F32, &mut rng);
    let inj = attention_ref(s, &x, 0.25, Some(Inject { src: 1, first: 2, count: 2 }));
    let plain = attention_ref(s, &x, 0.25, None);
    let row = s.nq * s.c();
    assert!(
        rel_l2(&rows_of(&inj, row, 2..4).iter().map(|&v| v as f32).collect::<Vec<_>>(), &plain[2 * row..4 * row]) > 0.1
    );
}

/// The cooperative-matrix flash kernel with emulated fragments (`FlashCore::CoopEmu`, f16): head dims whose
/// padding differs (40 → 48, 12 → 16) or not (64, 32), ragged query and key blocks over several key blocks,
/// self-attention injection, the causal mask and a custom scale. Lavapipe's 32 KiB of workgroup memory holds the
/// emulation up to D = 64 with 32-key blocks; the 64-key blocks and larger dims are validated by naga only.
#[test]
fn flash_coop_emulated() {
    if !can_run_f16("flash_coop_emulated") {
        return;
    }
    let f16 = [DType::F16];
    let emu = Some(FlashCore::CoopEmu { bkv: 32 });
    run_attention_core(dims(2, 70, 77, 2, 40), None, None, false, 600, emu, &f16);
    run_attention_core(dims(1, 65, 130, 1, 64), Some(0.2), None, false, 601, emu, &f16);
    run_attention_core(
        dims(5, 33, 33, 1, 16),
        None,
        Some(Inject { src: 1, first: 2, count: 2 }),
        false,
        602,
        emu,
        &f16,
    );
    run_attention_core(dims(2, 77, 77, 2, 64), None, None, true, 603, emu, &f16);
    run_attention_core(dims(1, 1, 1, 1, 12), None, None, false, 604, emu, &f16);
    run_attention_core(
        dims(4, 64, 64, 2, 32),
        None,
        Some(Inject { src: 2, first: 3, count: 1 }),
        false,
        605,
        emu,
        &f16,
    );
}

/// The real cooperative-matrix flash kernel, both key blocks, where the adapter has cooperative matrices (and the
/// workgroup memory); elsewhere nothing runs here and `flash_coop_emulated` stands in.
#[test]
fn flash_coop_real() {
    let gpu = gpu();
    if !can_run_coop("flash_coop_real") {
        return;
    }
    let f16 = [DType::F16];
    for bkv in [32, 64] {
        let core = FlashCore::Coop { bkv };
        for (i, d) in [40, 64, 80, 160].into_iter().enumerate() {
            let s = dims(4, 70, 130, 2, d);
            let x = inputs(s, DType::F16, &mut Rng::new(1));
            let out = poisoned(&[s.b, s.nq, s.c()], DType::F16);
            let probe =
                attention_with(gpu, &mut Recording::new(), &x.tq, &x.tk, &x.tv, &out, &AttentionOpts::heads(2), core);
            if let Err(e) = probe {
                can_run("flash_coop_real", "workgroup", false, &format!("cannot run {core:?} at head dim {d}: {e}"));
                continue;
            }
            let seed = 700 + 10 * i as u64 + bkv as u64;
            run_attention_core(s, None, None, false, seed, Some(core), &f16);
            run_attention_core(s, None, Some(Inject { src: 2, first: 3, count: 1 }), false, seed + 1, Some(core), &f16);
            run_attention_core(dims(1, 77, 77, 2, d), None, None, true, seed + 2, Some(core), &f16);
        }
    }
}

/// Random edit data: α per token from {0, 1, 0.3, 0.75}, eq in [-1.5, 2.5] (some exactly 1), r in [0, 1], and a
/// mapper whose tokens have no entry (30%), one (45%) or two to four (25%).
fn random_edit(targets: usize, nk: usize, rng: &mut Rng) -> EditData {
    let n = targets * nk;
    let alpha = (0..n).map(|_| [0.0, 1.0, 0.3, 0.75][rng.below(4) as usize]).collect();
    let eq = (0..n).map(|_| if rng.below(3) == 0 { 1.0 } else { 0.5 + 2.0 * rng.uniform() }).collect();
    let r = (0..n).map(|_| 0.5 + 0.5 * rng.uniform()).collect();
    let w: Vec<Vec<Vec<(u32, f32)>>> = (0..targets)
        .map(|_| {
            (0..nk)
                .map(|_| {
                    let u = rng.below(100);
                    let cnt = if u < 30 {
                        0
                    } else if u < 75 {
                        1
                    } else {
                        2 + rng.below(3) as usize
                    };
                    (0..cnt).map(|_| (rng.below(nk as u64) as u32, 0.5 + 0.5 * rng.uniform())).collect()
                })
                .collect()
        })
        .collect();
    EditData::new(nk, alpha, eq, r, &w).unwrap()
}

struct CrossCase {
    s: Dims,
    src: usize,
    data: EditData,
    /// Check that target rows really differ from plain attention.
    edited: bool,
}

/// One cross-attention edit call per dtype, checked against the reference: the targets with the edit, every
/// other row against plain attention.
fn run_cross(c: &CrossCase, seed: u64) {
    let gpu = gpu();
    let s = c.s;
    let t_n = c.data.targets;
    let edit = CrossEdit::new(gpu, &c.data).unwrap();
    for dt in dtypes() {
        let mut rng = Rng::new(seed);
        let x = inputs(s, dt, &mut rng);
        let out = poisoned(&[s.b, s.nq, s.c()], dt);
        let opts = CrossEditOpts { heads: s.heads, scale: None, src_row: c.src, edit: &edit, store: None };
        let mut rec = Recording::new();
        cross_attention_edit(gpu, &mut rec, &x.tq, &x.tk, &x.tv, &out, &opts).unwrap();
        gpu.run(&rec).unwrap();
        let got = download(&out);
        let scale = 1.0 / (s.d as f64).sqrt();
        let (want, _) = edit_ref(s, &x, scale, c.src, &c.data, 1.0);
        let plain = attention_ref(s, &x, scale, None);
        let name = format!("cross edit {dt:?} {s:?} src {} targets {t_n}", c.src);
        let row = s.nq * s.c();
        let targets = c.src + 1..c.src + 1 + t_n;
        let others: Vec<usize> = (0..s.b).filter(|r| !targets.contains(r)).collect();
        check_e(
            &format!("{name}: unedited rows vs plain attention"),
            &rows_of(&got, row, others.iter().copied()),
            &rows_of(&plain, row, others.iter().copied()),
            tol(dt),
        );
        check_e(
            &format!("{name}: target rows"),
            &rows_of(&got, row, targets.clone()),
            &rows_of(&want, row, targets.clone()),
            tol(dt),
        );
        if c.edited {
            let diff = rel_l2(&rows_of(&got, row, targets.clone()), &rows_of(&plain, row, targets.clone()));
            assert!(diff > 0.05, "{name}: the edit changed the targets by only {diff:.2e}");
        }
    }
}

#[test]
fn cross_edit_targets_and_head_dims() {
    // Batch [uncond × (1 + T), src, targets], as classifier-free guidance lays it out.
    for (i, (t_n, d, nq)) in
        [(1, 40, 33), (2, 64, 64), (3, 80, 17), (2, 160, 9), (1, 8, 130), (3, 12, 1)].into_iter().enumerate()
    {
        let seed = 500 + i as u64;
        let mut rng = Rng::new(seed ^ 0xED17);
        let s = dims(2 * (1 + t_n), nq, 77, 2, d);
        let data = random_edit(t_n, 77, &mut rng);
        run_cross(&CrossCase { s, src: 1 + t_n, data, edited: true }, seed);
    }
}

/// The source anywhere in the batch, plain rows after the targets, more than 80 keys (the 256-key variant), a
/// single key, and SD 1.5 cross-attention shapes (8 heads of 40 and of 160, 77 tokens).
#[test]
fn cross_edit_layouts() {
    let mut rng = Rng::new(600);
    let data = random_edit(2, 77, &mut rng);
    run_cross(&CrossCase { s: dims(5, 20, 77, 2, 16), src: 0, data, edited: true }, 601);
    let data = random_edit(1, 77, &mut rng);
    run_cross(&CrossCase { s: dims(5, 20, 77, 1, 16), src: 2, data, edited: true }, 602);
    let data = random_edit(2, 130, &mut rng);
    run_cross(&CrossCase { s: dims(4, 21, 130, 2, 12), src: 1, data, edited: true }, 603);
    let data = random_edit(2, 1, &mut rng);
    run_cross(&CrossCase { s: dims(3, 10, 1, 1, 8), src: 0, data, edited: false }, 604);
    let data = random_edit(1, 77, &mut rng);
    run_cross(&CrossCase { s: dims(4, 64, 77, 8, 40), src: 2, data, edited: true }, 605);
    let data = random_edit(1, 77, &mut rng);
    run_cross(&CrossCase { s: dims(4, 16, 77, 8, 160), src: 2, data, edited: true }, 606);
}

/// With α = 0 (or the identity edit) the targets get plain attention.
#[test]
fn cross_edit_identity_is_plain() {
    run_cross(&CrossCase { s: dims(6, 33, 77, 2, 40), src: 3, data: EditData::identity(2, 77), edited: false }, 700);
    let mut rng = Rng::new(701);
    let mut data = random_edit(2, 77, &mut rng);
    data.alpha.iter_mut().for_each(|a| *a = 0.0);
    run_cross(&CrossCase { s: dims(6, 33, 77, 2, 40), src: 3, data, edited: false }, 702);
}

/// Store mode: one recording replayed twice, with α rewritten and new queries between the runs; the store (filled
/// with random values first) must hold its start plus both calls' head-summed maps, and the output must be the
/// second call's.
#[test]
fn cross_edit_store_accumulates() {
    let gpu = gpu();
    for (i, (s, t_n)) in
        [(dims(6, 37, 77, 3, 16), 2), (dims(4, 9, 100, 2, 40), 1), (dims(8, 20, 77, 2, 12), 3)].into_iter().enumerate()
    {
        let seed = 800 + i as u64;
        let src = 1 + t_n;
        let mut rng = Rng::new(seed);
        let data1 = random_edit(t_n, s.nk, &mut rng);
        let mut data2 = data1.clone();
        data2.alpha = (0..t_n * s.nk).map(|_| [0.0, 1.0, 0.5][rng.below(3) as usize]).collect();
        let store_scale = 1.0 / (s.heads as f32 * 5.0);
        for dt in dtypes() {
            let mut rng = Rng::new(seed + 50);
            let x1 = inputs(s, dt, &mut rng);
            let q2 = quantize(&rng.vec(s.b * s.nq * s.c(), 3.0), dt);
            let init = rng.vec((1 + t_n) * s.nq * s.nk, 1.0);
            let (store, _) = upload(&[1 + t_n, s.nq, s.nk], DType::F32, &init);
            let edit = CrossEdit::new(gpu, &data1).unwrap();
            let out = poisoned(&[s.b, s.nq, s.c()], dt);
            let opts = CrossEditOpts {
                heads: s.heads,
                scale: None,
                src_row: src,
                edit: &edit,
                store: Some(Store { buf: &store, scale: store_scale }),
            };
            let mut rec = Recording::new();
            cross_attention_edit(gpu, &mut rec, &x1.tq, &x1.tk, &x1.tv, &out, &opts).unwrap();
            gpu.run(&rec).unwrap();
            edit.write_alpha(gpu, &data2.alpha).unwrap();
            x1.tq.write_f32(gpu, &q2).unwrap();
            out.fill(gpu, f32::NAN).unwrap();
            gpu.run(&rec).unwrap();
            let scale = 1.0 / (s.d as f64).sqrt();
            let (_, st1) = edit_ref(s, &x1, scale, src, &data1, store_scale as f64);
            let x2 = Inputs { q: q2, ..x1 };
            let (want_out, st2) = edit_ref(s, &x2, scale, src, &data2, store_scale as f64);
            let want_store: Vec<f64> =
                init.iter().zip(st1.iter().zip(&st2)).map(|(&a, (b, c))| a as f64 + b + c).collect();
            let name = format!("cross edit store {dt:?} {s:?} targets {t_n}");
            check_e(&format!("{name}: out"), &download(&out), &want_out, tol(dt));
            check_e(&format!("{name}: store"), &download(&store), &want_store, 1e-5);
        }
    }
}

/// `CrossEdit::write`: new α, eq, r and mapper weights of the same size go in place, so a recording made before
/// sees them; a mapper with another entry count is reallocated and needs a new recording.
#[test]
fn cross_edit_write_updates() {
    let gpu = gpu();
    let s = dims(4, 19, 77, 2, 32);
    let mut rng = Rng::new(850);
    let data1 = random_edit(1, 77, &mut rng);
    let mut data2 = random_edit(1, 77, &mut rng);
    let mut data3 = data1.clone();
    data3.w_weight.iter_mut().for_each(|w| *w = -*w * 0.5);
    data3.eq.iter_mut().for_each(|e| *e += 0.25);
    data3.alpha.reverse();
    for dt in dtypes() {
        let mut rng = Rng::new(851);
        let x = inputs(s, dt, &mut rng);
        let mut edit = CrossEdit::new(gpu, &data1).unwrap();
        let out = poisoned(&[s.b, s.nq, s.c()], dt);
        let mut rec = Recording::new();
        let opts = CrossEditOpts { heads: s.heads, scale: None, src_row: 1, edit: &edit, store: None };
        cross_attention_edit(gpu, &mut rec, &x.tq, &x.tk, &x.tv, &out, &opts).unwrap();
        gpu.run(&rec).unwrap();
        let scale = 1.0 / (s.d as f64).sqrt();
        check_e(&format!("write {dt:?}: first"), &download(&out), &edit_ref(s, &x, scale, 1, &data1, 1.0).0, tol(dt));
        edit.write(gpu, &data3).unwrap();
        gpu.run(&rec).unwrap();
        check_e(
            &format!("write {dt:?}: in place"),
            &download(&out),
            &edit_ref(s, &x, scale, 1, &data3, 1.0).0,
            tol(dt),
        );
        if data2.w_idx.len() == data1.w_idx.len() {
            data2.w_idx.push(0);
            data2.w_weight.push(0.5);
            *data2.w_ptr.last_mut().unwrap() += 1;
        }
        edit.write(gpu, &data2).unwrap();
        let mut rec = Recording::new();
        let opts = CrossEditOpts { heads: s.heads, scale: None, src_row: 1, edit: &edit, store: None };
        cross_attention_edit(gpu, &mut rec, &x.tq, &x.tk, &x.tv, &out, &opts).unwrap();
        gpu.run(&rec).unwrap();
        check_e(&format!("write {dt:?}: resized"), &download(&out), &edit_ref(s, &x, scale, 1, &data2, 1.0).0, tol(dt));
        assert!(edit.write(gpu, &random_edit(2, 77, &mut Rng::new(1))).is_err());
    }
}

fn base_edit() -> EditData {
    let mut rng = Rng::new(900);
    random_edit(2, 5, &mut rng)
}

#[test]
fn bad_edit_data_is_err() {
    let gpu = gpu();
    assert!(CrossEdit::new(gpu, &base_edit()).is_ok());
    let mut bad: Vec<(&str, EditData)> = Vec::new();
    let mut e = base_edit();
    e.w_idx.push(0);
    e.w_weight.push(1.0);
    bad.push(("entries beyond w_ptr", e));
    let mut e = base_edit();
    e.w_idx.push(5);
    e.w_weight.push(1.0);
    *e.w_ptr.last_mut().unwrap() += 1;
    bad.push(("source index = keys", e));
    let mut e = base_edit();
    e.alpha.pop();
    bad.push(("short alpha", e));
    let mut e = base_edit();
    e.eq.push(1.0);
    bad.push(("long eq", e));
    let mut e = base_edit();
    e.r = vec![0.0; 5];
    bad.push(("r of one target", e));
    let mut e = base_edit();
    e.w_ptr.pop();
    bad.push(("short w_ptr", e));
    let mut e = base_edit();
    e.w_weight.pop();
    bad.push(("w_weight shorter than w_idx", e));
    let mut e = base_edit();
    e.w_ptr[2] = e.w_ptr[3] + 1;
    bad.push(("decreasing w_ptr", e));
    let mut e = base_edit();
    e.eq[3] = f32::NAN;
    bad.push(("NaN eq", e));
    for (name, e) in &bad {
        let err = CrossEdit::new(gpu, e);
        assert!(err.is_err(), "{name} was accepted");
        assert!(e.validate().is_err(), "{name} validated");
    }
    assert!(EditData::new(5, vec![0.0; 5], vec![1.0; 5], vec![0.0; 5], &[vec![vec![(7, 1.0)]; 5]]).is_err());
    assert!(EditData::new(5, vec![0.0; 5], vec![1.0; 5], vec![0.0; 5], &[vec![vec![]; 4]]).is_err());
    let edit = CrossEdit::new(gpu, &base_edit()).unwrap();
    assert!(edit.write_alpha(gpu, &[0.0; 9]).is_err());
    assert!(edit.write_alpha(gpu, &[0.5; 10]).is_ok());
}

#[test]
fn shape_errors_are_results() {
    let gpu = gpu();
    let f = DType::F32;
    let t = |shape: &[usize], dt| Tensor::empty(gpu, shape, dt).unwrap();
    let (q, k, out) = (t(&[2, 4, 16], f), t(&[2, 6, 16], f), t(&[2, 4, 16], f));
    let mut rec = Recording::new();
    let plain = |h| AttentionOpts::heads(h);
    assert!(attention(gpu, &mut rec, &q, &k, &k, &out, &plain(2)).is_ok());
    rec.clear();
    // 16 channels in 3 heads; head dim 5 (80 / 16); wrong out; mismatched batch; mixed dtypes; u32; bad injection.
    let errs = [
        attention(gpu, &mut rec, &q, &k, &k, &out, &plain(3)),
        attention(
            gpu,
            &mut rec,
            &t(&[1, 4, 80], f),
            &t(&[1, 6, 80], f),
            &t(&[1, 6, 80], f),
            &t(&[1, 4, 80], f),
            &plain(16),
        ),
        attention(gpu, &mut rec, &q, &k, &k, &t(&[2, 5, 16], f), &plain(2)),
        attention(gpu, &mut rec, &q, &t(&[1, 6, 16], f), &t(&[1, 6, 16], f), &out, &plain(2)),
        attention(gpu, &mut rec, &q, &k, &t(&[2, 6, 16], DType::F16), &out, &plain(2)),
        attention(gpu, &mut rec, &t(&[2, 4, 16], DType::U32), &k, &k, &out, &plain(2)),
        attention(gpu, &mut rec, &q, &t(&[2, 0, 16], f), &t(&[2, 0, 16], f), &out, &plain(2)),
        attention(
            gpu,
            &mut rec,
            &q,
            &k,
            &k,
            &out,
            &AttentionOpts { inject: Some(Inject { src: 0, first: 1, count: 2 }), ..plain(2) },
        ),
    ];
    for (i, e) in errs.iter().enumerate() {
        let e = e.as_ref().expect_err(&format!("attention case {i} was accepted"));
        assert!(e.to_string().contains("attention"), "{e}");
    }
    assert!(rec.is_empty());

    let edit = CrossEdit::new(gpu, &base_edit()).unwrap(); // 2 targets, 5 keys
    let (q, k5, out) = (t(&[4, 3, 16], f), t(&[4, 5, 16], f), t(&[4, 3, 16], f));
    let opts = |src| CrossEditOpts { heads: 2, scale: None, src_row: src, edit: &edit, store: None };
    assert!(cross_attention_edit(gpu, &mut rec, &q, &k5, &k5, &out, &opts(1)).is_ok());
    rec.clear();
    let store_bad = t(&[2, 3, 5], f);
    let store_f16 = t(&[3, 3, 5], DType::F16);
    let k300 = t(&[4, 300, 16], f);
    let k6 = t(&[4, 6, 16], f);
    let errs = [
        // Targets past the batch; edit over 5 keys with 6; 300 keys; store of the wrong shape and dtype.
        cross_attention_edit(gpu, &mut rec, &q, &k5, &k5, &out, &opts(2)),
        cross_attention_edit(gpu, &mut rec, &q, &k6, &k6, &out, &opts(1)),
        cross_attention_edit(gpu, &mut rec, &q, &k300, &k300, &out, &opts(1)),
        cross_attention_edit(
            gpu,
            &mut rec,
            &q,
            &k5,
            &k5,
            &out,
            &CrossEditOpts { store: Some(Store { buf: &store_bad, scale: 1.0 }), ..opts(1) },
        ),
        cross_attention_edit(
            gpu,
            &mut rec,
            &q,
            &k5,
            &k5,
            &out,
            &CrossEditOpts { store: Some(Store { buf: &store_f16, scale: 1.0 }), ..opts(1) },
        ),
    ];
    for (i, e) in errs.iter().enumerate() {
        let e = e.as_ref().expect_err(&format!("cross case {i} was accepted"));
        assert!(e.to_string().contains("cross-attention edit"), "{e}");
    }
    assert!(rec.is_empty());
}
