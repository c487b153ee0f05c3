//! Noise schedulers, host-side in f64, reproducing diffusers' `PNDMScheduler` (PLMS with `skip_prk_steps`) and
//! `DDIMScheduler` (eta 0): the training noise schedule, the timestep lists and the update rule. A step maps the
//! (guided) model output and the current sample to the next sample.
pub mod ddim;
pub mod pndm;
pub mod program;

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::models::config::Config;

pub use ddim::Ddim;
pub use pndm::Pndm;
pub use program::{Dst, LinOp, Slot, Term};

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

/// `scheduler/scheduler_config.json`: the noise schedule and the options both schedulers read.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: "PNDMScheduler", "DDIMScheduler", ...
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub skip_prk_steps: bool,
    pub prediction_type: Prediction,
    /// DDIM: clamp the predicted x0 to ±clip_sample_range (diffusers' default is on; SD configs turn it off).
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub timestep_spacing: String,
}

impl SchedulerConfig {
    pub fn read(dir: &Path) -> Result<SchedulerConfig> {
        let name = "scheduler/scheduler_config.json";
        let path = dir.join("scheduler_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let v =
            serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: invalid JSON: {e}", path.display())))?;
        let mut c = Config::from_value(name, v)?;
        let prediction_type = match c.str_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            other => {
                return Err(Error::msg(format!(
                    "{name}: prediction_type {other:?} is not supported (epsilon, v_prediction)"
                )));
            }
        };
        let cfg = SchedulerConfig {
            class_name: c.str_or("_class_name", "PNDMScheduler")?,
            num_train_timesteps: c.usize_or("num_train_timesteps", 1000)?,
            beta_start: c.f64_or("beta_start", 0.0001)?,
            beta_end: c.f64_or("beta_end", 0.02)?,
            beta_schedule: c.str_or("beta_schedule", "linear")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            set_alpha_to_one: c.bool_or("set_alpha_to_one", false)?,
            skip_prk_steps: c.bool_or("skip_prk_steps", false)?,
            prediction_type,
            clip_sample: c.bool_or("clip_sample", true)?,
            clip_sample_range: c.f64_or("clip_sample_range", 1.0)?,
            timestep_spacing: c.str_or("timestep_spacing", "leading")?,
        };
        if !["linear", "scaled_linear"].contains(&cfg.beta_schedule.as_str()) {
            return Err(Error::msg(format!(
                "{name}: beta_schedule {:?} is not supported (linear, scaled_linear)",
                cfg.beta_schedule
            )));
        }
        if cfg.timestep_spacing != "leading" {
            return Err(Error::msg(format!(
                "{name}: timestep_spacing {:?} is not supported (leading)",
                cfg.timestep_spacing
            )));
        }
        c.expect("trained_betas", &[])?;
        c.expect("thresholding", &[json!(false)])?;
        c.expect("rescale_betas_zero_snr", &[json!(false)])?;
        // Only used with thresholding, or by other scheduler classes.
        c.ignore(&[
            "dynamic_thresholding_ratio",
            "sample_max_value",
            "interpolation_type",
            "use_karras_sigmas",
            "lower_order_final",
        ]);
        c.finish()?;
        if cfg.num_train_timesteps < 2 {
            return Err(Error::msg(format!("{name}: num_train_timesteps must be at least 2")));
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

    /// ᾱ used after the last step (`set_alpha_to_one`).
    pub fn final_alpha_cumprod(&self, acp: &[f64]) -> f64 {
        if self.set_alpha_to_one { 1.0 } else { acp[0] }
    }

    /// The "leading" spacing: `(0..S)·(N/S) + steps_offset`, descending.
    pub fn leading_timesteps(&self, steps: usize) -> Result<Vec<usize>> {
        if steps == 0 || steps > self.num_train_timesteps {
            return Err(Error::msg(format!("steps must be in 1..={}, got {steps}", self.num_train_timesteps)));
        }
        let ratio = self.num_train_timesteps / steps;
        Ok((0..steps).rev().map(|i| i * ratio + self.steps_offset).collect())
    }
}

/// A scheduler in use for one run of `steps` steps.
pub trait Scheduler {
    /// The timestep of every UNet evaluation, in order (PNDM: S+1 of them).
    fn timesteps(&self) -> &[usize];
    /// The sample after UNet evaluation `index` (of `timesteps()`), given the guided `model_output`.
    fn step(&mut self, index: usize, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>>;
    /// Scale of the initial noise (1 for PNDM and DDIM).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Factor on the sample before UNet evaluation `index` (`scale_model_input`; 1 except for Euler).
    fn input_scale(&self, _index: usize) -> f64 {
        1.0
    }
    /// How many history vectors ([`Slot::Hist`]) the step programs use.
    fn history_slots(&self) -> usize {
        0
    }
    /// The step after UNet evaluation `index` as a program (see [`program`]); evaluations run in order.
    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        Err(Error::msg(format!("this scheduler has no step program (step {index})")))
    }
}

/// Which scheduler to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pndm,
    Ddim,
}

/// The scheduler named by `kind`, or by the config's `_class_name` when None.
pub fn build(cfg: &SchedulerConfig, kind: Option<Kind>, steps: usize) -> Result<Box<dyn Scheduler>> {
    let kind = match kind {
        Some(k) => k,
        None => match cfg.class_name.as_str() {
            "PNDMScheduler" => Kind::Pndm,
            "DDIMScheduler" => Kind::Ddim,
            other => {
                return Err(Error::msg(format!(
                    "scheduler class {other:?} is not supported; choose one with --scheduler pndm|ddim"
                )));
            }
        },
    };
    Ok(match kind {
        Kind::Pndm => Box::new(Pndm::new(cfg, steps)?),
        Kind::Ddim => Box::new(Ddim::new(cfg, steps)?),
    })
}
