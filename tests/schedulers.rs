//! Schedulers against diffusers 0.42.1.
//!
//! - `timestep_lists`: PNDM's S+1 list for S = 50 (docs/DESIGN.md §5) and the 4-step lists of the SD fixtures.
//! - `single_steps_match_diffusers`: every single step replayed from diffusers' own UNet outputs of the 4-step
//!   text-to-image fixture runs (epsilon PNDM and DDIM on SD 1.x, v-prediction DDIM on SD 2.x).
//! - `parity_with_diffusers` (tests/fixtures/schedulers, weights-tools/make_scheduler_fixtures.py): for PNDM, DDIM,
//!   DPM-Solver++ 2M and Euler on SD 1.5-like (epsilon), SD 2-like (v-prediction), linear-beta (DDIM clipping,
//!   set_alpha_to_one) and minimal DPM-class configs: the timestep lists, init_noise_sigma and input scales for
//!   S ∈ {1, 2, 4, 10, 25, 50}, and whole runs (S ∈ {1, 2, 4, 10, 25}) of a random sample with random model outputs,
//!   where every intermediate sample is within 1e-5 relative L2 of diffusers'.
//! - `saved_configs_build_by_class_name`: each class's own saved config (every key it has) reads strictly and
//!   builds that class.
//! - `programs_use_declared_history`: every program only reads and writes history slots < history_slots(), and
//!   never reads one before some program wrote it.
//! - `host_programs_match_the_former_formulas`: PNDM and DDIM through their programs equal the direct formulas the
//!   engine used before step programs.
//! - `config_reading`: the strict reader's errors and class-dependent defaults.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Rng, rel_l2};
use p2p_wgpu::schedulers::{Dst, Kind, Prediction, SchedulerConfig, Slot, build};
use p2p_wgpu::weights::SafetensorsFile;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(model: &str) -> SchedulerConfig {
    SchedulerConfig::read(&fixtures().join(model).join("scheduler")).unwrap()
}

#[test]
fn timestep_lists() {
    let c = config("sd1-tiny");
    let pndm = build(&c, Some(Kind::Pndm), 50).unwrap();
    let t = pndm.timesteps();
    assert_eq!(t.len(), 51);
    assert_eq!(&t[..4], &[981, 961, 961, 941]);
    assert_eq!(*t.last().unwrap(), 1);
    let ddim = build(&c, Some(Kind::Ddim), 50).unwrap();
    assert_eq!(ddim.timesteps().len(), 50);
    assert_eq!(&ddim.timesteps()[..2], &[981, 961]);
    assert_eq!(build(&c, Some(Kind::Pndm), 4).unwrap().timesteps(), &[751, 501, 501, 251, 1]);
    assert_eq!(build(&c, Some(Kind::Ddim), 4).unwrap().timesteps(), &[751, 501, 251, 1]);
    assert_eq!(build(&c, Some(Kind::Pndm), 1).unwrap().timesteps(), &[1]);
    // DPM-Solver++'s leading spacing divides by S + 1 and drops t = 0.
    assert_eq!(build(&c, Some(Kind::DpmSolverPp), 4).unwrap().timesteps(), &[801, 601, 401, 201]);
    assert_eq!(build(&c, Some(Kind::Euler), 4).unwrap().timesteps(), &[751, 501, 251, 1]);
    for k in [Kind::Pndm, Kind::Ddim, Kind::DpmSolverPp, Kind::Euler] {
        assert!(build(&c, Some(k), 0).is_err(), "{k:?}");
        assert!(build(&c, Some(k), 1001).is_err(), "{k:?}");
    }
    assert!(build(&c, Some(Kind::DpmSolverPp), 1000).is_err());
}

fn replay(model: &str, kind: Kind, file: &str) {
    let f = SafetensorsFile::open(&fixtures().join("reference").join(file)).unwrap();
    let get = |n: &str| f.read_f32(n).unwrap().data;
    let (outs, steps, init) = (get("unet_out"), get("step_latents"), get("latents"));
    let n = init.len();
    let mut s = build(&config(model), Some(kind), 4).unwrap();
    let evals = s.timesteps().len();
    assert_eq!(outs.len(), evals * 2 * n);
    let mut x = init.clone();
    for i in 0..evals {
        let (u, c) = (&outs[i * 2 * n..i * 2 * n + n], &outs[i * 2 * n + n..(i + 1) * 2 * n]);
        let guided: Vec<f32> = u.iter().zip(c).map(|(&u, &c)| u + 7.5 * (c - u)).collect();
        // Each step from diffusers' own previous latents, so errors cannot accumulate.
        let prev = if i == 0 { init.clone() } else { steps[(i - 1) * n..i * n].to_vec() };
        x = s.step(i, &guided, &prev).unwrap();
        let want: Vec<f64> = steps[i * n..(i + 1) * n].iter().map(|&v| v as f64).collect();
        let e = rel_l2(&x, &want);
        assert!(e < 1e-5, "{model} {kind:?} step {i}: relative L2 {e:.2e}");
    }
    assert!(!x.is_empty());
}

#[test]
fn single_steps_match_diffusers() {
    replay("sd1-tiny", Kind::Pndm, "sd1-tiny_t2i_pndm4.safetensors");
    replay("sd1-tiny", Kind::Ddim, "sd1-tiny_t2i_ddim4.safetensors");
    replay("sd2-tiny", Kind::Ddim, "sd2-tiny_t2i_ddim4.safetensors");
}

const CONFIGS: &[&str] = &["sd15", "sd2v", "linear", "sd15_nospacing", "dpm_minimal"];
const ALL: [Kind; 4] = [Kind::Pndm, Kind::Ddim, Kind::DpmSolverPp, Kind::Euler];

fn fixture_name(k: Kind) -> &'static str {
    match k {
        Kind::Pndm => "pndm",
        Kind::Ddim => "ddim",
        Kind::DpmSolverPp => "dpm",
        Kind::Euler => "euler",
    }
}

fn sched_dir() -> PathBuf {
    fixtures().join("schedulers")
}

fn meta(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sched_dir().join(format!("{name}.json"))).unwrap()).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as usize).collect()
}

#[test]
fn parity_with_diffusers() {
    let (mut worst_state, mut worst_scale, mut runs, mut lists) = (0.0f64, 0.0f64, 0, 0);
    let mut per_kind = std::collections::BTreeMap::new();
    for &name in CONFIGS {
        let cfg = SchedulerConfig::read(&sched_dir().join(name)).unwrap();
        let m = meta(name);
        let st = SafetensorsFile::open(&sched_dir().join(format!("{name}.safetensors"))).unwrap();
        let classes = m["classes"].as_object().unwrap();
        for kind in ALL {
            let Some(entry) = classes.get(fixture_name(kind)) else {
                continue;
            };
            for (steps, rec) in entry["steps"].as_object().unwrap() {
                let steps: usize = steps.parse().unwrap();
                let what = format!("{name} {kind:?} S={steps}");
                let mut s = build(&cfg, Some(kind), steps).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(s.timesteps(), usizes(&rec["timesteps"]).as_slice(), "{what}: timesteps");
                lists += 1;
                let e = rel(s.init_noise_sigma(), rec["init_noise_sigma"].as_f64().unwrap());
                assert!(e < 1e-6, "{what}: init_noise_sigma off by {e:.1e}");
                worst_scale = worst_scale.max(e);
                let Some(scales) = rec.get("input_scales") else {
                    continue;
                };
                for (i, want) in scales.as_array().unwrap().iter().enumerate() {
                    let e = rel(s.input_scale(i), want.as_f64().unwrap());
                    assert!(e < 1e-6, "{what}: input scale {i} off by {e:.1e}");
                    worst_scale = worst_scale.max(e);
                }
                let key = fixture_name(kind);
                let xs = st.read_f32(&format!("{key}.{steps}.x")).unwrap();
                let outs = st.read_f32(&format!("{key}.{steps}.out")).unwrap();
                let evals = s.timesteps().len();
                assert_eq!(xs.shape[0], evals + 1);
                let n = xs.shape[1];
                // Our own chain from diffusers' initial sample, fed diffusers' model outputs in order.
                let mut x = xs.data[..n].to_vec();
                for i in 0..evals {
                    x = s.step(i, &outs.data[i * n..(i + 1) * n], &x).unwrap();
                    let want: Vec<f64> = xs.data[(i + 1) * n..(i + 2) * n].iter().map(|&v| v as f64).collect();
                    let e = rel_l2(&x, &want);
                    assert!(e <= 1e-5, "{what}: sample after evaluation {i}: relative L2 {e:.2e}");
                    worst_state = worst_state.max(e);
                    let w = per_kind.entry(format!("{kind:?}")).or_insert(0.0f64);
                    *w = w.max(e);
                }
                runs += 1;
            }
        }
    }
    let per_kind: Vec<String> = per_kind.iter().map(|(k, e)| format!("{k} {e:.2e}")).collect();
    eprintln!(
        "{lists} timestep lists, {runs} runs; max relative L2 of a sample {worst_state:.2e} ({}), max relative \
         error of a noise/input scale {worst_scale:.2e}",
        per_kind.join(", ")
    );
    assert!(runs >= 50 && lists >= 70, "{runs} runs, {lists} lists");
}

#[test]
fn saved_configs_build_by_class_name() {
    let m = meta("sd15");
    for kind in ALL {
        let dir = sched_dir().join("saved").join(fixture_name(kind));
        let cfg = SchedulerConfig::read(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(cfg.class_name, kind.class_name());
        for steps in [4, 25] {
            let s = build(&cfg, None, steps).unwrap();
            let want = usizes(&m["classes"][fixture_name(kind)]["steps"][steps.to_string()]["timesteps"]);
            assert_eq!(s.timesteps(), want.as_slice(), "{kind:?} S={steps}");
        }
    }
}

#[test]
fn programs_use_declared_history() {
    for &name in CONFIGS {
        let cfg = SchedulerConfig::read(&sched_dir().join(name)).unwrap();
        for kind in ALL {
            for steps in [1, 2, 3, 4, 10, 25, 50] {
                let Ok(mut s) = build(&cfg, Some(kind), steps) else {
                    continue;
                };
                let slots = s.history_slots();
                let mut written = BTreeSet::new();
                for i in 0..s.timesteps().len() {
                    let what = format!("{name} {kind:?} S={steps} evaluation {i}");
                    let ops = s.program(i).unwrap();
                    assert!(!ops.is_empty(), "{what}: empty program");
                    assert!(ops.iter().any(|op| op.dst == Dst::X), "{what}: the sample is never written");
                    for op in &ops {
                        for t in &op.terms {
                            assert!(t.coef.is_finite(), "{what}: coefficient {}", t.coef);
                            if let Slot::Hist(k) = t.src {
                                assert!(k < slots, "{what}: reads slot {k} of {slots}");
                                assert!(written.contains(&k), "{what}: reads slot {k} before any write");
                            }
                        }
                        if let Dst::Hist(k) = op.dst {
                            assert!(k < slots, "{what}: writes slot {k} of {slots}");
                            written.insert(k);
                        }
                    }
                }
                assert!(s.program(s.timesteps().len()).is_err());
            }
        }
    }
}

/// PNDM (skip_prk_steps) and DDIM (eta 0) as the engine computed them before step programs, in f64.
struct Former {
    kind: Kind,
    timesteps: Vec<usize>,
    acp: Vec<f64>,
    final_acp: f64,
    ratio: isize,
    prediction: Prediction,
    clip: Option<f64>,
    ets: Vec<Vec<f64>>,
    cur_sample: Option<Vec<f64>>,
    counter: usize,
}

impl Former {
    fn alpha(&self, t: isize) -> f64 {
        if t >= 0 { self.acp[t as usize] } else { self.final_acp }
    }

    fn step(&mut self, out: &[f32], x: &[f32]) -> Vec<f32> {
        let out: Vec<f64> = out.iter().map(|&v| v as f64).collect();
        let mut sample: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let t0 = self.timesteps[self.counter] as isize;
        let r = self.ratio;
        if self.kind == Kind::Ddim {
            let (a_t, a_prev) = (self.alpha(t0), self.alpha(t0 - r));
            let (sa, sb, sap, sbp) = (a_t.sqrt(), (1.0 - a_t).sqrt(), a_prev.sqrt(), (1.0 - a_prev).sqrt());
            self.counter += 1;
            return sample
                .iter()
                .zip(&out)
                .map(|(&x, &o)| {
                    let (mut x0, eps) = match self.prediction {
                        Prediction::Epsilon => ((x - sb * o) / sa, o),
                        Prediction::VPrediction => (sa * x - sb * o, sa * o + sb * x),
                    };
                    if let Some(c) = self.clip {
                        x0 = x0.clamp(-c, c);
                    }
                    (sap * x0 + sbp * eps) as f32
                })
                .collect();
        }
        let (mut t, mut prev_t) = (t0, t0 - r);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(out.clone());
        } else {
            prev_t = t0;
            t = t0 + r;
        }
        let e = &self.ets;
        let k = e.len();
        let comb = |w: &[(usize, f64)], div: f64| -> Vec<f64> {
            (0..out.len()).map(|i| w.iter().map(|&(back, c)| c * e[k - back][i]).sum::<f64>() / div).collect()
        };
        let m: Vec<f64> = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            out.clone()
        } else if k == 1 && self.counter == 1 {
            sample = self.cur_sample.take().unwrap();
            out.iter().zip(&e[0]).map(|(a, b)| (a + b) / 2.0).collect()
        } else if k == 2 {
            comb(&[(1, 3.0), (2, -1.0)], 2.0)
        } else if k == 3 {
            comb(&[(1, 23.0), (2, -16.0), (3, 5.0)], 12.0)
        } else {
            comb(&[(1, 55.0), (2, -59.0), (3, 37.0), (4, -9.0)], 24.0)
        };
        let (a_t, a_prev) = (self.alpha(t), self.alpha(prev_t));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let sc = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        self.counter += 1;
        sample
            .iter()
            .zip(&m)
            .map(|(&s, &m)| {
                let m = match self.prediction {
                    Prediction::Epsilon => m,
                    Prediction::VPrediction => a_t.sqrt() * m + b_t.sqrt() * s,
                };
                (sc * s - (a_prev - a_t) * m / denom) as f32
            })
            .collect()
    }
}

#[test]
fn host_programs_match_the_former_formulas() {
    let mut rng = Rng::new(7);
    let mut worst = 0.0f64;
    for &name in &["sd15", "sd2v", "linear"] {
        let cfg = SchedulerConfig::read(&sched_dir().join(name)).unwrap();
        for kind in [Kind::Pndm, Kind::Ddim] {
            for steps in [1, 2, 3, 4, 7, 50] {
                let mut s = build(&cfg, Some(kind), steps).unwrap();
                let acp = cfg.alphas_cumprod();
                let set_alpha_to_one = cfg.set_alpha_to_one.unwrap_or(kind == Kind::Ddim);
                let mut f = Former {
                    kind,
                    timesteps: s.timesteps().to_vec(),
                    final_acp: if set_alpha_to_one { 1.0 } else { acp[0] },
                    acp,
                    ratio: (cfg.num_train_timesteps / steps) as isize,
                    prediction: cfg.prediction_type,
                    clip: cfg.clip_sample.unwrap_or(true).then_some(cfg.clip_sample_range),
                    ets: Vec::new(),
                    cur_sample: None,
                    counter: 0,
                };
                let n = 96;
                let mut x = rng.vec(n, 2.0);
                for i in 0..s.timesteps().len() {
                    let out = rng.vec(n, 1.5);
                    let got = s.step(i, &out, &x).unwrap();
                    let want = f.step(&out, &x);
                    let e = rel_l2(&got, &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
                    assert!(e < 1e-6, "{name} {kind:?} S={steps} step {i}: relative L2 {e:.2e}");
                    worst = worst.max(e);
                    // Both continue from the same sample.
                    x = want;
                }
            }
        }
    }
    eprintln!("programs vs former formulas: max relative L2 {worst:.2e}");
}

fn from_json(v: Value) -> Result<SchedulerConfig, String> {
    SchedulerConfig::from_value("scheduler/scheduler_config.json", v).map_err(|e| e.to_string())
}

#[test]
fn config_reading() {
    let sd15: Value =
        serde_json::from_str(&std::fs::read_to_string(sched_dir().join("sd15/scheduler_config.json")).unwrap())
            .unwrap();
    let with = |key: &str, v: Value| {
        let mut c = sd15.clone();
        c[key] = v;
        c
    };
    // Values we do not implement are errors naming the key; equivalent ones pass.
    for (key, v) in [
        ("solver_order", json!(3)),
        ("algorithm_type", json!("sde-dpmsolver++")),
        ("solver_type", json!("heun")),
        ("final_sigmas_type", json!("sigma_min")),
        ("use_karras_sigmas", json!(true)),
        ("use_lu_lambdas", json!(true)),
        ("interpolation_type", json!("log_linear")),
        ("timestep_type", json!("continuous")),
        ("variance_type", json!("learned_range")),
        ("thresholding", json!(true)),
        ("timestep_spacing", json!("trailing")),
        ("lambda_min_clipped", json!("x")),
    ] {
        let e = from_json(with(key, v.clone())).expect_err(key);
        assert!(e.contains(key), "{key} = {v}: {e}");
    }
    let e = from_json(with("s_churn", json!(0.5))).unwrap_err();
    assert!(e.contains("s_churn"), "{e}");
    for (key, v) in [
        ("lower_order_final", json!(false)),
        ("euler_at_final", json!(true)),
        ("solver_type", json!("bh2")),
        ("sigma_min", json!(0.1)),
        ("dynamic_thresholding_ratio", json!(0.9)),
        ("lambda_min_clipped", json!(-5.1)),
    ] {
        from_json(with(key, v.clone())).unwrap_or_else(|e| panic!("{key} = {v}: {e}"));
    }
    // Python's -Infinity (diffusers writes it for lambda_min_clipped), not inside strings.
    let dir = std::env::temp_dir().join(format!("p2p-wgpu-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                   "timestep_spacing": "leading", "_name_or_path": "a NaN -Infinity \"Infinity\""}"#;
    std::fs::write(dir.join("scheduler_config.json"), text).unwrap();
    let c = SchedulerConfig::read(&dir).unwrap();
    assert_eq!(c.lambda_min_clipped, f64::NEG_INFINITY);
    std::fs::write(dir.join("scheduler_config.json"), r#"{"lambda_min_clipped": NaN}"#).unwrap();
    assert!(SchedulerConfig::read(&dir).unwrap_err().to_string().contains("lambda_min_clipped"));
    std::fs::remove_dir_all(&dir).unwrap();

    // Class-dependent defaults, as `Class.from_config`: a file without timestep_spacing is leading for PNDM and
    // DDIM, linspace for DPM-Solver++, and Euler (whose linspace timesteps are fractional) refuses it.
    let mut bare = sd15.clone();
    bare.as_object_mut().unwrap().remove("timestep_spacing");
    let c = from_json(bare).unwrap();
    assert_eq!(build(&c, Some(Kind::Ddim), 4).unwrap().timesteps(), &[751, 501, 251, 1]);
    assert_eq!(build(&c, Some(Kind::DpmSolverPp), 4).unwrap().timesteps(), &[999, 749, 500, 250]);
    let e = build(&c, Some(Kind::Euler), 4).err().unwrap().to_string();
    assert!(e.contains("timestep_spacing"), "{e}");
    // PNDM's default skip_prk_steps is false (Runge-Kutta warm-up, not implemented).
    let c = from_json(json!({"_class_name": "DDIMScheduler", "timestep_spacing": "leading"})).unwrap();
    assert!(build(&c, Some(Kind::Pndm), 4).err().unwrap().to_string().contains("skip_prk_steps"));
    assert!(build(&c, None, 4).is_ok());
    let c = from_json(json!({"_class_name": "LMSDiscreteScheduler"})).unwrap();
    assert!(build(&c, None, 4).err().unwrap().to_string().contains("LMSDiscreteScheduler"));
}

/// `DdimInverse` (real-image inversion, diffusers' `DDIMInverseScheduler` convention): its timesteps are DDIM's
/// reversed; with an epsilon model whose output is the same in both directions, inverse step S−1−i exactly undoes
/// forward step i (no clipping either way); for v-prediction one step equals the formula with the source level's
/// alpha (x0 = √ᾱ_from·x − √(1−ᾱ_from)·v, ε = √ᾱ_from·v + √(1−ᾱ_from)·x, x' = √ᾱ_t·x0 + √(1−ᾱ_t)·ε).
#[test]
fn ddim_inverse_undoes_ddim() {
    use p2p_wgpu::schedulers::{Ddim, DdimInverse, Scheduler};
    let mut rng = Rng::new(11);
    let cfg = config("sd1-tiny");
    for steps in [1, 4, 10] {
        let mut fwd = Ddim::new(&cfg, steps).unwrap();
        let mut inv = DdimInverse::new(&cfg, steps).unwrap();
        let mut rev = fwd.timesteps().to_vec();
        rev.reverse();
        assert_eq!(inv.timesteps(), rev.as_slice());
        assert_eq!(inv.history_slots(), 0);
        for i in 0..steps {
            let x = rng.vec(64, 1.0);
            let eps = rng.vec(64, 1.0);
            let y = fwd.step(i, &eps, &x).unwrap();
            let back = inv.step(steps - 1 - i, &eps, &y).unwrap();
            let e = rel_l2(&back, &x.iter().map(|&v| v as f64).collect::<Vec<_>>());
            assert!(e < 1e-6, "S={steps} step {i}: inverse(forward(x)) is {e:.2e} from x");
            assert!(rel_l2(&y, &x.iter().map(|&v| v as f64).collect::<Vec<_>>()) > 1e-3, "the step moved nothing");
        }
    }
    let cfg = config("sd2-tiny");
    assert_eq!(cfg.prediction_type, Prediction::VPrediction);
    let acp = cfg.alphas_cumprod();
    let mut inv = DdimInverse::new(&cfg, 4).unwrap();
    for j in 0..4 {
        let t = inv.timesteps()[j];
        let a_from = if t >= 250 { acp[t - 250] } else { acp[0] };
        let a_to = acp[t];
        let (x, v) = (rng.vec(16, 1.0), rng.vec(16, 1.0));
        let got = inv.step(j, &v, &x).unwrap();
        let want: Vec<f64> = x
            .iter()
            .zip(&v)
            .map(|(&x, &v)| {
                let (x, v) = (x as f64, v as f64);
                let x0 = a_from.sqrt() * x - (1.0 - a_from).sqrt() * v;
                let eps = a_from.sqrt() * v + (1.0 - a_from).sqrt() * x;
                a_to.sqrt() * x0 + (1.0 - a_to).sqrt() * eps
            })
            .collect();
        assert!(rel_l2(&got, &want) < 1e-6, "v-prediction inverse step {j}");
    }
}
