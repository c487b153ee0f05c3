//! The GPU scheduler step (ops::lincomb) against f64 CPU references: single linear combinations with every source
//! count, guided pairs (f32 and f16), dst's own term, clamping, element offsets, f16 destinations and odd sizes
//! (1, 7, 1000003), outputs NaN-poisoned where dst is not a term; the UNet input preparation; whole step programs
//! over several steps against `schedulers::program::run_host`, with their dispatches built once; errors as `Err`.
//! Tolerance: relative L2 ≤ 1e-6 for f32 destinations (f32 arithmetic against f64), 2e-3 for f16 ones.
mod common;

use common::*;
use p2p_wgpu::gpu::Dispatch;
use p2p_wgpu::ops::lincomb::{Guided, LinCoefs, LinComb, LinLayout, MAX_SOURCES, ScaleInput, Src, StepProgram};
use p2p_wgpu::schedulers::program::run_host;
use p2p_wgpu::schedulers::{Dst, LinOp, Slot};
use p2p_wgpu::tensor::{DType, Tensor};

const F32_TOL: f64 = 1e-6;

fn run(list: &[&Dispatch]) {
    gpu().run_seq(list.iter().copied()).expect("run");
}

fn dst_tol(dt: DType) -> f64 {
    if dt == DType::F16 { tol(DType::F16) } else { F32_TOL }
}

/// One case of a single linear combination.
struct Case {
    n: usize,
    dst: DType,
    dst_term: bool,
    guided: Option<DType>,
    sources: usize,
    clamp: Option<f64>,
    /// Offsets are used (dst and sources inside larger tensors).
    offsets: bool,
}

/// Runs the case; returns the largest relative L2 error of its two rounds.
fn run_case(c: &Case, seed: u64) -> f64 {
    let name = format!(
        "n {} dst {:?} term {} guided {:?} sources {} clamp {:?} offsets {}",
        c.n, c.dst, c.dst_term, c.guided, c.sources, c.clamp, c.offsets
    );
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let pad = |k: usize| if c.offsets { 3 + 5 * k } else { 0 };
    // dst: inside a larger tensor when offsets; elements outside the range must stay as they were.
    let (dpre, dpost) = (pad(1), if c.offsets { 2 } else { 0 });
    let dtotal = dpre + c.n + dpost;
    let dinit = quantize(&rng.vec(dtotal, 2.0), c.dst);
    let dst = Tensor::from_f32(gpu, &[dtotal], c.dst, &dinit).unwrap();
    if !c.dst_term {
        // Poison the written range.
        let mut v = dinit.clone();
        v[dpre..dpre + c.n].iter_mut().for_each(|x| *x = f32::NAN);
        dst.write_f32(gpu, &v).unwrap();
    }
    let mut srcs = Vec::new();
    for k in 0..c.sources {
        let off = pad(k + 2);
        let v = rng.vec(off + c.n + 1, 1.5);
        srcs.push((Tensor::from_f32(gpu, &[v.len()], DType::F32, &v).unwrap(), off, v));
    }
    let guided = c.guided.map(|gt| {
        let (gu, gc) = if c.offsets { (1, c.n + 4) } else { (0, c.n) };
        let v = quantize(&rng.vec(gc + c.n, 1.0), gt);
        (Tensor::from_f32(gpu, &[v.len()], gt, &v).unwrap(), gu, gc, v)
    });
    let layout = LinLayout {
        dst: Src::new(&dst, dpre),
        len: c.n,
        dst_term: c.dst_term,
        guided: guided.as_ref().map(|(t, gu, gc, _)| Guided { t, uncond: *gu, cond: *gc }),
        sources: srcs.iter().map(|(t, off, _)| Src::new(t, *off)).collect(),
    };
    let lc = LinComb::new(gpu, &layout).unwrap();
    let mut worst = 0.0f64;
    // Two runs with different coefficients through the same dispatch (the second is checked).
    for round in 0..2 {
        let coefs = LinCoefs {
            dst: rng.uniform() as f64 * 1.5,
            guided: rng.uniform() as f64 * 2.0,
            guidance: 7.5 - round as f64 * 3.0,
            sources: (0..c.sources).map(|_| rng.uniform() as f64).collect(),
            clamp: c.clamp,
        };
        let before = if round == 0 { dinit.clone() } else { download(&dst) };
        lc.set(gpu, &coefs).unwrap();
        run(&[lc.dispatch()]);
        let got = download(&dst);
        let want: Vec<f64> = (0..c.n)
            .map(|i| {
                let mut acc = 0.0f64;
                if c.dst_term {
                    acc += coefs.dst * before[dpre + i] as f64;
                }
                if let Some((_, gu, gc, v)) = &guided {
                    let (u, cc) = (v[gu + i] as f64, v[gc + i] as f64);
                    acc += coefs.guided * (u + coefs.guidance * (cc - u));
                }
                for (k, (_, off, v)) in srcs.iter().enumerate() {
                    acc += coefs.sources[k] * v[off + i] as f64;
                }
                match c.clamp {
                    Some(r) => acc.clamp(-r, r),
                    None => acc,
                }
            })
            .collect();
        let e = rel_l2(&got[dpre..dpre + c.n], &want);
        assert!(e <= dst_tol(c.dst), "{name} round {round}: relative L2 {e:.3e} exceeds {:.1e}", dst_tol(c.dst));
        worst = worst.max(e);
        // Outside the range: untouched.
        for i in (0..dpre).chain(dpre + c.n..dtotal) {
            assert_eq!(got[i].to_bits(), before[i].to_bits(), "{name}: element {i} outside the range changed");
        }
    }
    worst
}

#[test]
fn every_source_count_with_and_without_dst_term_guided_pair_and_clamp() {
    let (mut seed, mut worst) = (1, 0.0f64);
    let f16s: Vec<Option<DType>> =
        if gpu().has_f16() { vec![None, Some(DType::F32), Some(DType::F16)] } else { vec![None, Some(DType::F32)] };
    for n in [1usize, 7, 1000] {
        for &guided in &f16s {
            for sources in 0..=MAX_SOURCES {
                for dst_term in [false, true] {
                    let clamp = (sources % 2 == 1).then_some(0.6);
                    let offsets = (sources + n) % 3 != 0;
                    let c = Case { n, dst: DType::F32, dst_term, guided, sources, clamp, offsets };
                    worst = worst.max(run_case(&c, seed));
                    seed += 1;
                }
            }
        }
    }
    eprintln!("worst relative L2 {worst:.2e}");
}

#[test]
fn large_odd_sizes() {
    let n = 1_000_003;
    let e1 = run_case(
        &Case { n, dst: DType::F32, dst_term: true, guided: Some(DType::F32), sources: 4, clamp: None, offsets: true },
        11,
    );
    let e2 = run_case(
        &Case { n, dst: DType::F32, dst_term: false, guided: None, sources: 2, clamp: Some(1.0), offsets: false },
        12,
    );
    eprintln!("relative L2 {e1:.2e}, {e2:.2e}");
}

#[test]
fn f16_destinations() {
    if !can_run_f16("f16_destinations") {
        return;
    }
    let mut worst = 0.0f64;
    for (i, n) in [1usize, 7, 4099].into_iter().enumerate() {
        for guided in [None, Some(DType::F16), Some(DType::F32)] {
            for dst_term in [false, true] {
                let c =
                    Case { n, dst: DType::F16, dst_term, guided, sources: 3, clamp: Some(1.25), offsets: i % 2 == 1 };
                worst = worst.max(run_case(&c, 100 + i as u64));
            }
        }
    }
    eprintln!("worst relative L2 {worst:.2e}");
}

#[test]
fn input_preparation_scales_into_both_halves() {
    let gpu = gpu();
    for dt in dtypes() {
        for (n, copies) in [(1usize, 2usize), (7, 2), (4099, 2), (5, 3)] {
            let mut rng = Rng::new(n as u64);
            let v = rng.vec(n, 3.0);
            let x = Tensor::from_f32(gpu, &[n], DType::F32, &v).unwrap();
            let dst = poisoned(&[copies * n], dt);
            let prep = ScaleInput::new(gpu, &x, &dst).unwrap();
            for s in [1.0, 0.3712] {
                prep.set(gpu, s).unwrap();
                run(&[prep.dispatch()]);
                let want: Vec<f64> = (0..copies * n).map(|i| s * v[i % n] as f64).collect();
                check(&format!("prep {dt:?} n {n} ×{copies} s {s}"), &download(&dst), &want, dst_tol(dt));
            }
        }
    }
    // dst not a whole number of x.
    let x = Tensor::empty(gpu, &[3], DType::F32).unwrap();
    assert!(ScaleInput::new(gpu, &x, &Tensor::empty(gpu, &[7], DType::F32).unwrap()).is_err());
}

/// A PLMS-like program family: history shifts through copies, a multistep combination, DDIM-like clamps; the
/// shape of step i's program depends on i (warm-up) and then repeats.
fn program(i: usize, rng: &mut Rng) -> Vec<LinOp> {
    let mut c = || rng.uniform() as f64;
    let mut ops = Vec::new();
    match i {
        0 => {
            ops.push(LinOp::new(Dst::Hist(0), &[(1.0, Slot::Out)]));
            ops.push(LinOp::new(Dst::Hist(3), &[(1.0, Slot::X)]));
            ops.push(LinOp::new(Dst::X, &[(c(), Slot::X), (c(), Slot::Out)]));
        }
        1 => {
            ops.push(LinOp::new(Dst::X, &[(c(), Slot::Hist(3)), (c(), Slot::Out), (c(), Slot::Hist(0))]));
        }
        _ => {
            ops.push(LinOp::new(Dst::Hist(2), &[(1.0, Slot::Hist(1))]));
            ops.push(LinOp::new(Dst::Hist(1), &[(1.0, Slot::Hist(0))]));
            ops.push(LinOp::new(Dst::Hist(0), &[(1.0, Slot::Out)]));
            // Clamped x0-like intermediate, then the update; the same slot twice among the terms.
            ops.push(
                LinOp::new(Dst::Hist(3), &[(c(), Slot::X), (c(), Slot::Out), (0.25, Slot::Hist(3))]).clamped(Some(0.9)),
            );
            ops.push(LinOp::new(
                Dst::X,
                &[
                    (c(), Slot::X),
                    (c(), Slot::Hist(0)),
                    (c(), Slot::Hist(1)),
                    (c(), Slot::Hist(2)),
                    (c(), Slot::Hist(3)),
                    (0.5, Slot::Hist(1)),
                ],
            ));
        }
    }
    ops
}

#[test]
fn step_programs_match_the_host_over_several_steps() {
    let gpu = gpu();
    for dt in dtypes() {
        let (b, plane) = (2usize, 7 * 5 * 3);
        let n = b * plane;
        let guidance = 7.5;
        let mut rng = Rng::new(77);
        let x0 = rng.vec(n, 1.0);
        let x = Tensor::from_f32(gpu, &[b, 7, 5, 3], DType::F32, &x0).unwrap();
        // Two UNet outputs (the edit loop's two recordings), alternating.
        let outs: Vec<Tensor> = (0..2).map(|_| Tensor::empty(gpu, &[2 * b, 7, 5, 3], dt).unwrap()).collect();
        let mut sp = StepProgram::new(gpu, &x, &[&outs[0], &outs[1]], guidance, 4).unwrap();
        let mut hx: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
        let mut hist: Vec<Vec<f64>> = Vec::new();
        let mut prog_rng = Rng::new(5);
        let mut built = Vec::new();
        for i in 0..8 {
            let which = i % 2;
            let pred = quantize(&rng.vec(2 * n, 1.0), dt);
            outs[which].write_f32(gpu, &pred).unwrap();
            let guided: Vec<f64> =
                (0..n).map(|k| pred[k] as f64 + guidance * (pred[n + k] as f64 - pred[k] as f64)).collect();
            let ops = program(i, &mut prog_rng);
            sp.load(gpu, which, &ops).unwrap();
            gpu.run_seq(sp.dispatches()).unwrap();
            run_host(&ops, &mut hx, &guided, &mut hist);
            built.push(sp.built());
            check(&format!("{dt:?} step {i} x"), &download(&x), &hx, F32_TOL);
            for (k, h) in hist.iter().enumerate() {
                check(&format!("{dt:?} step {i} hist {k}"), &download(sp.hist(k).unwrap()), h, F32_TOL);
            }
        }
        // After the warm-up shapes (and both outputs), steps build nothing.
        assert_eq!(built[7], built[4], "{dt:?}: dispatches built after warm-up: {built:?}");
    }
}

#[test]
fn bad_layouts_and_programs_are_errors() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[4], DType::F32, &[0.0; 4]).unwrap();
    let other = Tensor::from_f32(gpu, &[4], DType::F32, &[0.0; 4]).unwrap();
    let view = x.reshape(&[2, 2]).unwrap();
    let base = |sources: Vec<Src<'_>>| {
        LinComb::new(gpu, &LinLayout { dst: Src::new(&x, 0), len: 4, dst_term: false, guided: None, sources })
    };
    // A source in dst's buffer (wgpu would refuse the bind group).
    assert!(base(vec![Src::new(&view, 0)]).is_err());
    // Out of range, too many sources.
    assert!(base(vec![Src::new(&other, 1)]).is_err());
    assert!(base(vec![Src::new(&other, 0); MAX_SOURCES + 1]).is_err());
    let lc = base(vec![Src::new(&other, 0)]).unwrap();
    assert!(lc.set(gpu, &LinCoefs { sources: vec![1.0, 2.0], ..Default::default() }).is_err());
    assert!(lc.set(gpu, &LinCoefs { sources: vec![f64::NAN], ..Default::default() }).is_err());
    // Programs: an undeclared history slot; an output that is not the CFG batch.
    let out = Tensor::empty(gpu, &[8], DType::F32).unwrap();
    let mut sp = StepProgram::new(gpu, &x, &[&out], 1.0, 1).unwrap();
    assert!(sp.load(gpu, 0, &[LinOp::new(Dst::Hist(1), &[(1.0, Slot::X)])]).is_err());
    assert!(sp.load(gpu, 0, &[LinOp::new(Dst::X, &[(1.0, Slot::Hist(2))])]).is_err());
    assert!(sp.load(gpu, 1, &[LinOp::new(Dst::X, &[(1.0, Slot::Out)])]).is_err());
    // A plain (non-CFG) output is accepted only at guidance 1, where U + 1·(C − U) reads it as both halves.
    assert!(StepProgram::new(gpu, &x, &[&other], 2.0, 0).is_err());
    assert!(StepProgram::new(gpu, &x, &[&other], 1.0, 0).is_ok());
}

/// Every scheduler's programs on the GPU against its own host step (f64 with the guided output rounded to f32,
/// as the sampling loops did before), over a whole run with random model outputs, epsilon and v-prediction
/// (DDIM also with clip_sample); between the warm-up steps and the last one (DPM-Solver++'s final first-order
/// step has its own shape) no dispatch is built.
#[test]
fn schedulers_on_the_gpu_match_their_host_steps() {
    use p2p_wgpu::schedulers::{Kind, SchedulerConfig, build};
    let gpu = gpu();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sd1-tiny/scheduler/scheduler_config.json"
    ))
    .unwrap();
    let mut worst = 0.0f64;
    for kind in [Kind::Pndm, Kind::Ddim, Kind::DpmSolverPp, Kind::Euler] {
        for (pred, clip) in [("epsilon", false), ("v_prediction", false), ("epsilon", true)] {
            if clip && kind != Kind::Ddim {
                continue;
            }
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["prediction_type"] = pred.into();
            v["clip_sample"] = clip.into();
            v["_class_name"] = kind.class_name().into();
            let cfg = SchedulerConfig::from_value("test", v).unwrap();
            let steps = 13;
            let (mut host, mut dev) =
                (build(&cfg, Some(kind), steps).unwrap(), build(&cfg, Some(kind), steps).unwrap());
            let (b, plane) = (2usize, 5 * 3 * 4);
            let n = b * plane;
            let guidance = 5.0;
            let mut rng = Rng::new(9);
            let sigma = host.init_noise_sigma() as f32;
            let mut hx: Vec<f32> = rng.vec(n, 1.0).iter().map(|v| v * sigma).collect();
            let x = Tensor::from_f32(gpu, &[b, 5, 3, 4], DType::F32, &hx).unwrap();
            let out = Tensor::empty(gpu, &[2 * b, 5, 3, 4], DType::F32).unwrap();
            let mut sp = StepProgram::new(gpu, &x, &[&out], guidance, dev.history_slots()).unwrap();
            let mut built = Vec::new();
            for i in 0..host.timesteps().len() {
                let pred = rng.vec(2 * n, 1.0);
                out.write_f32(gpu, &pred).unwrap();
                let guided: Vec<f32> = (0..n)
                    .map(|k| (pred[k] as f64 + guidance * (pred[n + k] as f64 - pred[k] as f64)) as f32)
                    .collect();
                hx = host.step(i, &guided, &hx).unwrap();
                let ops = dev.program(i).unwrap();
                sp.load(gpu, 0, &ops).unwrap();
                gpu.run_seq(sp.dispatches()).unwrap();
                built.push(sp.built());
            }
            let want: Vec<f64> = hx.iter().map(|&v| v as f64).collect();
            let e = rel_l2(&download(&x), &want);
            eprintln!("{kind:?} {pred} clip {clip}: relative L2 {e:.2e}, dispatches built per step {built:?}");
            assert!(e <= F32_TOL, "{kind:?} {pred} clip {clip}: relative L2 {e:.3e}");
            worst = worst.max(e);
            let last = built.len() - 1;
            assert_eq!(built[last - 1], built[last - 5], "{kind:?}: dispatches still built late in the run: {built:?}");
        }
    }
    eprintln!("worst {worst:.2e}");
}
