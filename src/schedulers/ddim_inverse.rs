//! diffusers' `DDIMInverseScheduler` (the null-text notebook's `next_step`): DDIM run backwards, from the image to
//! the noise, for real-image editing. Timesteps are the DDIM ones ("leading", `steps_offset`) in ascending order;
//! evaluation i runs the UNet at t = timesteps[i] on the sample at level t − Δ (Δ = num_train_timesteps / S) and
//! moves it to level t:
//!
//! x0 = (x − √(1−ᾱ_from)·ε)/√ᾱ_from, x' = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, with ᾱ_from = ᾱ[t − Δ], or the final alpha
//! (`set_alpha_to_one`) when t − Δ < 0. v-prediction converts with ᾱ_from: x0 = √ᾱ_from·x − √(1−ᾱ_from)·v,
//! ε = √ᾱ_from·v + √(1−ᾱ_from)·x (as diffusers; without it SD 2.x reconstructions collapse). x0 is never clipped
//! (neither the notebook nor `DDIMInverseScheduler` as used for inversion clips).
use crate::error::Result;

use super::{Ddim, LinOp, Scheduler, SchedulerConfig, host_step, no_step};

/// The inverse of a [`Ddim`] schedule: its timesteps ascending, each step `Ddim::inverse_ops`.
pub struct DdimInverse {
    forward: Ddim,
    timesteps: Vec<usize>,
    hist: Vec<Vec<f64>>,
}

impl DdimInverse {
    /// The inverse of [`Ddim::new`]`(cfg, steps)`: the same timesteps, ascending.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<DdimInverse> {
        let forward = Ddim::new(cfg, steps)?;
        let timesteps = forward.timesteps().iter().rev().copied().collect();
        Ok(DdimInverse { forward, timesteps, hist: Vec::new() })
    }
}

impl Scheduler for DdimInverse {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn history_slots(&self) -> usize {
        0
    }

    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        let t = *self.timesteps.get(index).ok_or_else(|| no_step("DDIM inverse", index, self.timesteps.len()))?;
        Ok(self.forward.inverse_ops(t))
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let ops = self.program(index)?;
        host_step("DDIM inverse step", &ops, &mut self.hist, out, x)
    }
}
