//! diffusers' `DDIMScheduler` with eta = 0 (deterministic), "leading" timestep spacing, epsilon or v-prediction,
//! optional clipping of the predicted x0, and `set_alpha_to_one` for the final step.
//!
//! One step: x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t (v-prediction: x0 = √ᾱ_t·x − √(1−ᾱ_t)·v, ε = √ᾱ_t·v + √(1−ᾱ_t)·x),
//! x0 clamped with `clip_sample`, then x' = √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε. Without clipping this is one linear
//! combination of x and the output; with clipping, x0 goes through history slot 0 (scratch, written and read within
//! the step).
use crate::error::{Error, Result};

use super::{LinOp, Prediction, Scheduler, SchedulerConfig, Slot, Spacing, host_step, no_step};
use crate::ops::lincomb::program::Dst;

pub struct Ddim {
    timesteps: Vec<usize>,
    acp: Vec<f64>,
    final_acp: f64,
    ratio: usize,
    prediction: Prediction,
    clip: Option<f64>,
    hist: Vec<Vec<f64>>,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Ddim> {
        cfg.require_leading("DDIMScheduler", Spacing::Leading)?;
        let acp = cfg.alphas_cumprod();
        let timesteps = cfg.leading_timesteps(steps)?;
        if let Some(&t) = timesteps.iter().find(|&&t| t >= acp.len()) {
            return Err(Error::msg(format!("DDIM: timestep {t} is beyond the schedule's {} timesteps", acp.len())));
        }
        Ok(Ddim {
            timesteps,
            final_acp: cfg.final_alpha_cumprod(&acp, true),
            acp,
            ratio: cfg.num_train_timesteps / steps,
            prediction: cfg.prediction_type,
            clip: cfg.clip_sample.unwrap_or(true).then_some(cfg.clip_sample_range),
            hist: Vec::new(),
        })
    }
}

impl Ddim {
    /// ᾱ of the level one step below timestep `t`: ᾱ[t − Δ], or the final alpha (`set_alpha_to_one`) below 0.
    fn alpha_before(&self, t: usize) -> f64 {
        if t >= self.ratio { self.acp[t - self.ratio] } else { self.final_acp }
    }

    /// The inverse of the step at timestep `t` (`DdimInverse`): from the level below `t` up to `t`, with the model
    /// output at the level below; x0 is never clipped.
    pub(super) fn inverse_ops(&self, t: usize) -> Vec<LinOp> {
        ddim_ops(self.alpha_before(t), self.acp[t], self.prediction, None)
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn history_slots(&self) -> usize {
        usize::from(self.clip.is_some())
    }

    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        let t = *self.timesteps.get(index).ok_or_else(|| no_step("DDIM", index, self.timesteps.len()))?;
        Ok(ddim_ops(self.acp[t], self.alpha_before(t), self.prediction, self.clip))
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let ops = self.program(index)?;
        host_step("DDIM step", &ops, &mut self.hist, out, x)
    }
}

/// One DDIM move of the sample from noise level ᾱ_from to ᾱ_to, given the model output at ᾱ_from: x0 and ε from
/// (x, output) by `prediction`, x0 clamped to ±`clip` when set, then x' = √ᾱ_to·x0 + √(1−ᾱ_to)·ε. The forward step
/// goes down in noise (`Ddim`), the inverse one up (`DdimInverse`).
fn ddim_ops(a_from: f64, a_to: f64, prediction: Prediction, clip: Option<f64>) -> Vec<LinOp> {
    let (sa, sb) = (a_from.sqrt(), (1.0 - a_from).sqrt());
    let (sa_to, sb_to) = (a_to.sqrt(), (1.0 - a_to).sqrt());
    // x0 and ε as (coefficient of x, coefficient of the output).
    let (x0, eps) = match prediction {
        Prediction::Epsilon => ((1.0 / sa, -sb / sa), (0.0, 1.0)),
        Prediction::VPrediction => ((sa, -sb), (sb, sa)),
    };
    match clip {
        None => vec![LinOp::new(
            Dst::X,
            &[(sa_to * x0.0 + sb_to * eps.0, Slot::X), (sa_to * x0.1 + sb_to * eps.1, Slot::Out)],
        )],
        Some(r) => vec![
            LinOp::new(Dst::Hist(0), &[(x0.0, Slot::X), (x0.1, Slot::Out)]).clamped(Some(r)),
            LinOp::new(Dst::X, &[(sa_to, Slot::Hist(0)), (sb_to * eps.0, Slot::X), (sb_to * eps.1, Slot::Out)]),
        ],
    }
}
