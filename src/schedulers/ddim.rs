//! diffusers' `DDIMScheduler` with eta = 0 (deterministic), "leading" timestep spacing, epsilon or v-prediction,
//! optional clipping of the predicted x0, and `set_alpha_to_one` for the final step.
use crate::error::{Error, Result};

use super::{Prediction, Scheduler, SchedulerConfig};

pub struct Ddim {
    timesteps: Vec<usize>,
    acp: Vec<f64>,
    final_acp: f64,
    ratio: usize,
    prediction: Prediction,
    clip: Option<f64>,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Ddim> {
        let acp = cfg.alphas_cumprod();
        Ok(Ddim {
            timesteps: cfg.leading_timesteps(steps)?,
            final_acp: cfg.final_alpha_cumprod(&acp),
            acp,
            ratio: cfg.num_train_timesteps / steps,
            prediction: cfg.prediction_type,
            clip: cfg.clip_sample.then_some(cfg.clip_sample_range),
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let t = *self.timesteps.get(index).ok_or_else(|| Error::msg(format!("DDIM: no step {index}")))?;
        if out.len() != x.len() {
            return Err(Error::shape("DDIM step", format!("{} model outputs for {} samples", out.len(), x.len())));
        }
        let a_t = *self.acp.get(t).ok_or_else(|| Error::msg(format!("DDIM: timestep {t} beyond the schedule")))?;
        let a_prev = if t >= self.ratio { self.acp[t - self.ratio] } else { self.final_acp };
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (sa_prev, sb_prev) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
        Ok(x.iter()
            .zip(out)
            .map(|(&x, &o)| {
                let (x, o) = (x as f64, o as f64);
                let (mut x0, eps) = match self.prediction {
                    Prediction::Epsilon => ((x - sb * o) / sa, o),
                    Prediction::VPrediction => (sa * x - sb * o, sa * o + sb * x),
                };
                if let Some(r) = self.clip {
                    x0 = x0.clamp(-r, r);
                }
                (sa_prev * x0 + sb_prev * eps) as f32
            })
            .collect())
    }
}
