//! Noise schedulers reproducing diffusers' `PNDMScheduler` (PLMS with `skip_prk_steps`), `DDIMScheduler` (eta 0),
//! `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and `EulerDiscreteScheduler`: the training noise schedule, the
//! timestep lists, the input scaling and the update rule. A step maps the (guided) model output and the current
//! sample to the next sample; every scheduler expresses it as a [`program`] of elementwise linear combinations, run
//! on the host in f64 ([`Scheduler::step`]) or on the GPU by the sampling loop.
pub mod ddim;
pub mod ddim_inverse;
pub mod dpm;
pub mod euler;
pub mod pndm;

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::weights::config::Config;

pub use crate::ops::lincomb::program::{self, Dst, LinOp, Slot, Term};
pub use ddim::Ddim;
pub use ddim_inverse::DdimInverse;
pub use dpm::DpmSolverPp;
pub use euler::Euler;
pub use pndm::Pndm;

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

/// `timestep_spacing`: how the inference timesteps are picked from the training ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    /// Only DPM-Solver++ implements it here (Euler's linspace timesteps are fractional).
    Linspace,
}

/// `scheduler/scheduler_config.json`: the noise schedule and the options of the scheduler classes we implement.
///
/// A config may be used with another class than its `_class_name` (`--scheduler`), as diffusers'
/// `Class.from_config(config)` does: keys in the file are carried over; keys it lacks take the new class's defaults
/// (diffusers drops the source class's defaulted values). The options whose default differs between classes are
/// therefore kept as `None` when absent and resolved by the class that is built.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: "PNDMScheduler", "DDIMScheduler", ...
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub steps_offset: usize,
    pub prediction_type: Prediction,
    /// PNDM default false, DDIM default true.
    pub set_alpha_to_one: Option<bool>,
    /// PNDM only (default false, which we do not implement).
    pub skip_prk_steps: Option<bool>,
    /// DDIM: clamp the predicted x0 to ±clip_sample_range (default on; SD configs turn it off).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// PNDM and DDIM default "leading", DPM-Solver++ and Euler "linspace".
    pub timestep_spacing: Option<Spacing>,
    /// DPM-Solver++: timesteps whose log-SNR λ = log(α/σ) lies below this are never used (default −∞).
    pub lambda_min_clipped: f64,
}

/// Python's `json.dumps` writes non-finite floats as bare `NaN`, `Infinity`, `-Infinity` (diffusers' DPM-Solver
/// configs hold `"lambda_min_clipped": -Infinity`); serde_json rejects them, so they become strings first.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            in_str = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_str = true;
        } else if let Some(tok) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t)) {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl SchedulerConfig {
    pub fn read(dir: &Path) -> Result<SchedulerConfig> {
        let name = "scheduler/scheduler_config.json";
        let path = dir.join(crate::weights::folder::SCHEDULER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::model(format!("{}: {e}", path.display())))?;
        let v = serde_json::from_str(&quote_non_finite(&text))
            .map_err(|e| Error::model(format!("{}: invalid JSON: {e}", path.display())))?;
        SchedulerConfig::from_value(name, v)
    }

    /// A config from its parsed JSON; `name` goes into every error.
    pub fn from_value(name: &str, v: Value) -> Result<SchedulerConfig> {
        let mut c = Config::from_value(name, v)?;
        let prediction_type = match c.str_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            other => {
                return Err(Error::model(format!(
                    "{name}: prediction_type {other:?} is not supported (epsilon, v_prediction)"
                )));
            }
        };
        let opt_bool = |c: &mut Config, key: &str| -> Result<Option<bool>> {
            match c.get(key) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(b)),
                Some(v) => Err(Error::model(format!("{name}: `{key}` must be a boolean, found {v}"))),
            }
        };
        let timestep_spacing = match c.get("timestep_spacing") {
            None => None,
            Some(v) if v == "leading" => Some(Spacing::Leading),
            Some(v) if v == "linspace" => Some(Spacing::Linspace),
            Some(v) => {
                return Err(Error::model(format!(
                    "{name}: timestep_spacing {v} is not supported (leading; linspace for DPMSolverMultistepScheduler)"
                )));
            }
        };
        let lambda_min_clipped = match c.get("lambda_min_clipped") {
            None => f64::NEG_INFINITY,
            Some(Value::String(s)) if s == "-Infinity" => f64::NEG_INFINITY,
            Some(Value::Number(n)) if n.as_f64().is_some() => n.as_f64().unwrap_or(f64::NEG_INFINITY),
            Some(v) => return Err(Error::model(format!("{name}: `lambda_min_clipped` must be a number, found {v}"))),
        };
        let cfg = SchedulerConfig {
            class_name: c.str_or("_class_name", "PNDMScheduler")?,
            num_train_timesteps: c.usize_or("num_train_timesteps", 1000)?,
            beta_start: c.f64_or("beta_start", 0.0001)?,
            beta_end: c.f64_or("beta_end", 0.02)?,
            beta_schedule: c.str_or("beta_schedule", "linear")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            prediction_type,
            set_alpha_to_one: opt_bool(&mut c, "set_alpha_to_one")?,
            skip_prk_steps: opt_bool(&mut c, "skip_prk_steps")?,
            clip_sample: opt_bool(&mut c, "clip_sample")?,
            clip_sample_range: c.f64_or("clip_sample_range", 1.0)?,
            timestep_spacing,
            lambda_min_clipped,
        };
        // Each beta is a per-step noise variance in (0, 1); outside it ᾱ leaves (0, 1] and the steps divide by
        // zero or take roots of negatives.
        for (key, b) in [("beta_start", cfg.beta_start), ("beta_end", cfg.beta_end)] {
            if !(b > 0.0 && b < 1.0) {
                return Err(Error::model(format!(
                    "{name}: `{key}` is {b}, but a beta must lie strictly between 0 and 1"
                )));
            }
        }
        if cfg.num_train_timesteps < 2 {
            return Err(Error::model(format!(
                "{name}: `num_train_timesteps` is {}, at least 2 are needed",
                cfg.num_train_timesteps
            )));
        }
        if !["linear", "scaled_linear"].contains(&cfg.beta_schedule.as_str()) {
            return Err(Error::model(format!(
                "{name}: beta_schedule {:?} is not supported (linear, scaled_linear)",
                cfg.beta_schedule
            )));
        }
        c.expect("trained_betas", &[])?;
        c.expect("thresholding", &[json!(false)])?;
        c.expect("rescale_betas_zero_snr", &[json!(false)])?;
        // DPM-Solver++: the 2M midpoint solver. diffusers maps DEIS' and UniPC's names onto it ("deis" →
        // dpmsolver++; "logrho", "bh1", "bh2" → midpoint). With solver_order 2 and a zero final sigma,
        // lower_order_final and euler_at_final change nothing (the last step is first order either way, and the
        // second-to-last is second order either way), so both values pass.
        c.expect("solver_order", &[json!(2)])?;
        c.expect("algorithm_type", &[json!("dpmsolver++"), json!("deis")])?;
        c.expect("solver_type", &[json!("midpoint"), json!("logrho"), json!("bh1"), json!("bh2")])?;
        c.expect("lower_order_final", &[json!(true), json!(false)])?;
        c.expect("euler_at_final", &[json!(true), json!(false)])?;
        c.expect("final_sigmas_type", &[json!("zero")])?;
        c.expect("variance_type", &[])?;
        c.expect("use_dynamic_shifting", &[json!(false)])?;
        // DPM-Solver++ and Euler: sigmas interpolated linearly from the training schedule.
        for key in
            ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"]
        {
            c.expect(key, &[json!(false)])?;
        }
        c.expect("interpolation_type", &[json!("linear")])?;
        c.expect("timestep_type", &[json!("discrete")])?;
        c.ignore(&[
            // Only read with thresholding.
            "dynamic_thresholding_ratio",
            "sample_max_value",
            // Only read with flow sigmas or dynamic shifting.
            "flow_shift",
            "time_shift_type",
            // Only read with Karras, exponential or beta sigmas.
            "sigma_min",
            "sigma_max",
        ]);
        c.finish()?;
        if cfg.num_train_timesteps < 2 {
            return Err(Error::model(format!("{name}: num_train_timesteps must be at least 2")));
        }
        if cfg.lambda_min_clipped.is_nan() {
            return Err(Error::model(format!("{name}: `lambda_min_clipped` is NaN")));
        }
        Ok(cfg)
    }

    /// ᾱ_t for t in 0..num_train_timesteps, as diffusers computes them (betas in f32, products accumulated in
    /// f64 as torch's CPU cumprod does, then rounded to f32).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
        let betas: Vec<f32> = (0..n)
            .map(|i| match self.beta_schedule.as_str() {
                "scaled_linear" => {
                    let r = lin(self.beta_start.sqrt(), self.beta_end.sqrt(), i) as f32;
                    r * r
                }
                _ => lin(self.beta_start, self.beta_end, i) as f32,
            })
            .collect();
        let mut acc = 1.0f64;
        betas
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32 as f64
            })
            .collect()
    }

    /// The noise-to-signal ratio σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) of every training timestep, computed in f32 as diffusers
    /// does (DPM-Solver++ and Euler work in σ).
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod()
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0f32 - a) / a).sqrt() as f64
            })
            .collect()
    }

    /// ᾱ used after the last step by PNDM and DDIM (`set_alpha_to_one`, whose default is the class's).
    pub fn final_alpha_cumprod(&self, acp: &[f64], default_set_alpha_to_one: bool) -> f64 {
        if self.set_alpha_to_one.unwrap_or(default_set_alpha_to_one) { 1.0 } else { acp[0] }
    }

    /// The timestep spacing for a class whose default is `default`.
    pub fn spacing(&self, default: Spacing) -> Spacing {
        self.timestep_spacing.unwrap_or(default)
    }

    /// Errors unless the spacing (`default` when the file does not set it) is "leading".
    pub fn require_leading(&self, class: &str, default: Spacing) -> Result<()> {
        match (self.spacing(default), self.timestep_spacing) {
            (Spacing::Leading, _) => Ok(()),
            (Spacing::Linspace, Some(_)) => Err(Error::model(format!(
                "scheduler config: timestep_spacing \"linspace\" is not supported by {class} (leading)"
            ))),
            (Spacing::Linspace, None) => Err(Error::model(format!(
                "scheduler config: no timestep_spacing, and {class}'s default \"linspace\" is not supported; add \
                 \"timestep_spacing\": \"leading\" to scheduler_config.json (as PNDM and DDIM read it)"
            ))),
        }
    }

    /// The "leading" spacing: `(0..S)·(N/S) + steps_offset`, descending.
    pub fn leading_timesteps(&self, steps: usize) -> Result<Vec<usize>> {
        if steps == 0 || steps > self.num_train_timesteps {
            return Err(Error::model(format!("steps must be in 1..={}, got {steps}", self.num_train_timesteps)));
        }
        let ratio = self.num_train_timesteps / steps;
        Ok((0..steps).rev().map(|i| i * ratio + self.steps_offset).collect())
    }
}

/// A scheduler in use for one run of `steps` steps.
pub trait Scheduler {
    /// The timestep of every UNet evaluation, in order (PNDM: S+1 of them).
    fn timesteps(&self) -> &[usize];
    /// The sample after UNet evaluation `index` (of `timesteps()`), given the guided `model_output`: runs
    /// [`Scheduler::program`] on the host in f64, with the history slots kept in the scheduler. Evaluations run in
    /// order, each once.
    fn step(&mut self, index: usize, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>>;
    /// Scale of the initial noise (1 except for Euler).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Factor on the sample before UNet evaluation `index` (`scale_model_input`; 1 except for Euler).
    fn input_scale(&self, _index: usize) -> f64 {
        1.0
    }
    /// How many history vectors ([`Slot::Hist`]) the step programs use.
    fn history_slots(&self) -> usize;
    /// The step after UNet evaluation `index` as a program (see [`program`]). The program depends on `index` only;
    /// run in order of evaluation, the programs carry the scheduler's state in the history slots.
    fn program(&mut self, index: usize) -> Result<Vec<LinOp>>;
}

/// Which scheduler to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pndm,
    Ddim,
    /// DPM-Solver++ (2M).
    DpmSolverPp,
    Euler,
}

impl Kind {
    /// The diffusers class.
    pub fn class_name(self) -> &'static str {
        match self {
            Kind::Pndm => "PNDMScheduler",
            Kind::Ddim => "DDIMScheduler",
            Kind::DpmSolverPp => "DPMSolverMultistepScheduler",
            Kind::Euler => "EulerDiscreteScheduler",
        }
    }

    /// The kind of a diffusers class name.
    pub fn from_class_name(name: &str) -> Option<Kind> {
        [Kind::Pndm, Kind::Ddim, Kind::DpmSolverPp, Kind::Euler].into_iter().find(|k| k.class_name() == name)
    }
}

/// The scheduler named by `kind`, or by the config's `_class_name` when None.
pub fn build(cfg: &SchedulerConfig, kind: Option<Kind>, steps: usize) -> Result<Box<dyn Scheduler>> {
    let kind = match kind {
        Some(k) => k,
        None => Kind::from_class_name(&cfg.class_name).ok_or_else(|| {
            Error::model(format!(
                "scheduler class {:?} is not supported; choose one with --scheduler pndm|ddim|dpm++|euler",
                cfg.class_name
            ))
        })?,
    };
    Ok(match kind {
        Kind::Pndm => Box::new(Pndm::new(cfg, steps)?),
        Kind::Ddim => Box::new(Ddim::new(cfg, steps)?),
        Kind::DpmSolverPp => Box::new(DpmSolverPp::new(cfg, steps)?),
        Kind::Euler => Box::new(Euler::new(cfg, steps)?),
    })
}

/// Checks the index and lengths of a host step, then runs `ops` in f64 on copies of the inputs (see
/// [`program::run_host`]).
pub(crate) fn host_step(
    what: &str,
    ops: &[LinOp],
    hist: &mut Vec<Vec<f64>>,
    model_output: &[f32],
    sample: &[f32],
) -> Result<Vec<f32>> {
    if model_output.len() != sample.len() {
        return Err(Error::shape(what, format!("{} model outputs for {} samples", model_output.len(), sample.len())));
    }
    if hist.first().is_some_and(|h| h.len() != sample.len()) {
        return Err(Error::shape(what, format!("{} samples after steps on {}", sample.len(), hist[0].len())));
    }
    let out: Vec<f64> = model_output.iter().map(|&v| v as f64).collect();
    let mut x: Vec<f64> = sample.iter().map(|&v| v as f64).collect();
    program::run_host(ops, &mut x, &out, hist);
    Ok(x.into_iter().map(|v| v as f32).collect())
}

/// The error for an evaluation index past the end of the timestep list.
pub(crate) fn no_step(what: &str, index: usize, n: usize) -> Error {
    Error::model(format!("{what}: no evaluation {index} (the run has {n})"))
}
