//! diffusers' `PNDMScheduler` with `skip_prk_steps` (PLMS, the Prompt-to-Prompt notebooks' sampler): S + 1 UNet
//! evaluations (the first timestep is evaluated twice, its second evaluation averaged with the first), then
//! linear multistep combinations of up to four previous outputs, and the PNDM transfer formula.
use crate::error::{Error, Result};

use super::{Prediction, Scheduler, SchedulerConfig};

pub struct Pndm {
    timesteps: Vec<usize>,
    acp: Vec<f64>,
    final_acp: f64,
    ratio: usize,
    prediction: Prediction,
    ets: Vec<Vec<f64>>,
    cur_sample: Option<Vec<f64>>,
    counter: usize,
}

impl Pndm {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Pndm> {
        if !cfg.skip_prk_steps {
            return Err(Error::msg("PNDM with Runge-Kutta warm-up (skip_prk_steps = false) is not supported"));
        }
        let lead = cfg.leading_timesteps(steps)?; // descending
        let mut asc: Vec<usize> = lead.iter().rev().copied().collect();
        // plms timesteps: _timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:], reversed.
        let n = asc.len();
        if n >= 2 {
            asc.insert(n - 1, asc[n - 2]);
        }
        let acp = cfg.alphas_cumprod();
        Ok(Pndm {
            timesteps: asc.into_iter().rev().collect(),
            final_acp: cfg.final_alpha_cumprod(&acp),
            acp,
            ratio: cfg.num_train_timesteps / steps,
            prediction: cfg.prediction_type,
            ets: Vec::new(),
            cur_sample: None,
            counter: 0,
        })
    }

    fn alpha(&self, t: isize) -> f64 {
        if t >= 0 { self.acp[t as usize] } else { self.final_acp }
    }
}

impl Scheduler for Pndm {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let t0 = *self.timesteps.get(index).ok_or_else(|| Error::msg(format!("PNDM: no step {index}")))? as isize;
        if index != self.counter {
            return Err(Error::msg(format!("PNDM steps must run in order: step {index} after {}", self.counter)));
        }
        if out.len() != x.len() {
            return Err(Error::shape("PNDM step", format!("{} model outputs for {} samples", out.len(), x.len())));
        }
        let r = self.ratio as isize;
        let out: Vec<f64> = out.iter().map(|&v| v as f64).collect();
        let mut sample: Vec<f64> = x.iter().map(|&v| v as f64).collect();
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
        let model_output: Vec<f64> = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            out.clone()
        } else if k == 1 && self.counter == 1 {
            sample = self.cur_sample.take().ok_or_else(|| Error::msg("PNDM: missing first sample"))?;
            out.iter().zip(&e[k - 1]).map(|(a, b)| (a + b) / 2.0).collect()
        } else if k == 2 {
            comb(&[(1, 3.0), (2, -1.0)], 2.0)
        } else if k == 3 {
            comb(&[(1, 23.0), (2, -16.0), (3, 5.0)], 12.0)
        } else {
            comb(&[(1, 55.0), (2, -59.0), (3, 37.0), (4, -9.0)], 24.0)
        };
        let (a_t, a_prev) = (self.alpha(t), self.alpha(prev_t));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let prev = sample
            .iter()
            .zip(&model_output)
            .map(|(&s, &m)| {
                let m = match self.prediction {
                    Prediction::Epsilon => m,
                    Prediction::VPrediction => a_t.sqrt() * m + b_t.sqrt() * s,
                };
                (sample_coeff * s - (a_prev - a_t) * m / denom) as f32
            })
            .collect();
        self.counter += 1;
        Ok(prev)
    }
}
