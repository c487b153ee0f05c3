//! diffusers' `EulerDiscreteScheduler` (Karras et al.'s Euler step, s_churn = 0): σ interpolated linearly at
//! "leading" timesteps, a zero final σ, epsilon or v-prediction.
//!
//! The sample lives at scale σ (initial noise × √(σ₀² + 1), diffusers' `init_noise_sigma` for leading spacing); the
//! UNet sees it divided by √(σ² + 1) ([`Scheduler::input_scale`]). A step moves along the derivative
//! d = (x − x0)/σ to the next σ: x' = x + (σ' − σ)·d, with x0 = x − σ·ε (epsilon: x' = x + (σ' − σ)·ε), or, for
//! v-prediction, x0 = x/(σ² + 1) − σ·v/√(σ² + 1). No history.
use crate::error::Result;

use super::{LinOp, Prediction, Scheduler, SchedulerConfig, Slot, Spacing, host_step, no_step};
use crate::ops::lincomb::program::Dst;

pub struct Euler {
    timesteps: Vec<usize>,
    /// σ of every evaluation, then the final 0.
    sigmas: Vec<f64>,
    prediction: Prediction,
    hist: Vec<Vec<f64>>,
}

impl Euler {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Euler> {
        cfg.require_leading("EulerDiscreteScheduler", Spacing::Linspace)?;
        let timesteps = cfg.leading_timesteps(steps)?;
        let train = cfg.sigmas();
        // diffusers interpolates σ at the timesteps, which clamps past the end of the schedule.
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| train[t.min(train.len() - 1)]).collect();
        sigmas.push(0.0);
        Ok(Euler { timesteps, sigmas, prediction: cfg.prediction_type, hist: Vec::new() })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().fold(0.0f64, |a, &b| a.max(b));
        (max * max + 1.0).sqrt()
    }

    fn input_scale(&self, index: usize) -> f64 {
        let s = self.sigmas[index.min(self.sigmas.len() - 1)];
        1.0 / (s * s + 1.0).sqrt()
    }

    fn history_slots(&self) -> usize {
        0
    }

    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        if index >= self.timesteps.len() {
            return Err(no_step("Euler", index, self.timesteps.len()));
        }
        let (s, dt) = (self.sigmas[index], self.sigmas[index + 1] - self.sigmas[index]);
        let terms = match self.prediction {
            Prediction::Epsilon => [(1.0, Slot::X), (dt, Slot::Out)],
            // d = x·σ/(σ² + 1) + v/√(σ² + 1).
            Prediction::VPrediction => {
                [(1.0 + dt * s / (s * s + 1.0), Slot::X), (dt / (s * s + 1.0).sqrt(), Slot::Out)]
            }
        };
        Ok(vec![LinOp::new(Dst::X, &terms)])
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let ops = self.program(index)?;
        host_step("Euler step", &ops, &mut self.hist, out, x)
    }
}
