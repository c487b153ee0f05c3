//! diffusers' `DPMSolverMultistepScheduler` as Stable Diffusion pipelines use it: DPM-Solver++ (data prediction),
//! solver order 2 with the midpoint rule ("2M"), a zero final sigma, no Karras/exponential/beta sigmas, no
//! thresholding; "leading" or "linspace" timestep spacing; epsilon or v-prediction.
//!
//! In the σ parametrisation (σ = √((1−ᾱ)/ᾱ), α_σ = 1/√(σ²+1), s_σ = σ·α_σ, λ = log(α_σ/s_σ) = −log σ), each step
//! first converts the output to a data prediction m = (x − s·ε)/α (v-prediction: m = α·x − s·v), then, from σ_s to
//! the next σ_t with h = λ_t − λ_s:
//!
//! - first order (the first step, and the last one, which lands on σ = 0 and returns m):
//!   x' = (s_t/s_s)·x − α_t·(e^{−h} − 1)·m;
//! - second order (all others), with the previous step's m₁ and r = (λ_s − λ_prev)/h:
//!   x' = (s_t/s_s)·x − α_t·(e^{−h} − 1)·(m + (m − m₁)/(2r)).
//!
//! History slots 0 and 1 hold m, alternately: step i writes slot i mod 2 and reads m₁ from the other.
use crate::error::{Error, Result};

use super::{LinOp, Prediction, Scheduler, SchedulerConfig, Slot, Spacing, host_step, no_step};
use crate::ops::lincomb::program::Dst;

pub struct DpmSolverPp {
    timesteps: Vec<usize>,
    /// σ of every evaluation, then the final 0.
    sigmas: Vec<f64>,
    prediction: Prediction,
    hist: Vec<Vec<f64>>,
    next: usize,
}

/// α_σ and s_σ of a σ.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    (a, sigma * a)
}

impl DpmSolverPp {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<DpmSolverPp> {
        let n = cfg.num_train_timesteps;
        let acp = cfg.alphas_cumprod();
        // lambda_min_clipped: the training timesteps whose λ lies below it are cut from the top of the range.
        let clipped = acp
            .iter()
            .filter(|&&a| {
                let a = a as f32;
                ((a.sqrt().ln() - (1.0f32 - a).sqrt().ln()) as f64) < cfg.lambda_min_clipped
            })
            .count();
        let last = n - clipped;
        if steps == 0 || steps >= last {
            return Err(Error::msg(format!(
                "DPM-Solver++: steps must be in 1..{last} (the usable training timesteps), got {steps}"
            )));
        }
        let timesteps: Vec<usize> = match cfg.spacing(Spacing::Linspace) {
            Spacing::Leading => {
                let ratio = last / (steps + 1);
                (1..=steps).rev().map(|j| j * ratio + cfg.steps_offset).collect()
            }
            Spacing::Linspace => {
                // numpy: linspace(0, last − 1, S + 1) = j·((last − 1)/S), the end exact; rounded half to even.
                let step = (last - 1) as f64 / steps as f64;
                (1..=steps)
                    .rev()
                    .map(|j| if j == steps { last - 1 } else { (j as f64 * step).round_ties_even() as usize })
                    .collect()
            }
        };
        if timesteps.windows(2).any(|w| w[0] <= w[1]) {
            return Err(Error::msg(format!("DPM-Solver++: {steps} steps give repeated timesteps {timesteps:?}")));
        }
        let train = cfg.sigmas();
        // diffusers interpolates σ at the timesteps, which clamps past the end of the schedule.
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| train[t.min(n - 1)]).collect();
        sigmas.push(0.0);
        Ok(DpmSolverPp { timesteps, sigmas, prediction: cfg.prediction_type, hist: Vec::new(), next: 0 })
    }
}

impl Scheduler for DpmSolverPp {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn history_slots(&self) -> usize {
        2
    }

    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        let steps = self.timesteps.len();
        if index >= steps {
            return Err(no_step("DPM-Solver++", index, steps));
        }
        let (sig_s, sig_t) = (self.sigmas[index], self.sigmas[index + 1]);
        let (alpha_s, s_s) = alpha_sigma(sig_s);
        // The data prediction m as (coefficient of x, coefficient of the output).
        let m = match self.prediction {
            Prediction::Epsilon => (1.0 / alpha_s, -s_s / alpha_s),
            Prediction::VPrediction => (alpha_s, -s_s),
        };
        if sig_t == 0.0 {
            // The final step: α_t = 1, s_t = 0, e^{−h} = 0: x' = m.
            return Ok(vec![LinOp::new(Dst::X, &[(m.0, Slot::X), (m.1, Slot::Out)])]);
        }
        let (alpha_t, s_t) = alpha_sigma(sig_t);
        let h = (sig_s / sig_t).ln();
        let a = alpha_t * ((-h).exp() - 1.0);
        let (cur, prev) = (Slot::Hist(index % 2), Slot::Hist((index + 1) % 2));
        let mut ops = vec![LinOp::new(Dst::Hist(index % 2), &[(m.0, Slot::X), (m.1, Slot::Out)])];
        ops.push(if index == 0 {
            LinOp::new(Dst::X, &[(s_t / s_s, Slot::X), (-a, cur)])
        } else {
            let r = (self.sigmas[index - 1] / sig_s).ln() / h;
            LinOp::new(Dst::X, &[(s_t / s_s, Slot::X), (-a * (1.0 + 0.5 / r), cur), (a * 0.5 / r, prev)])
        });
        Ok(ops)
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        if index != self.next {
            return Err(Error::msg(format!("DPM-Solver++ steps must run in order: step {index} after {}", self.next)));
        }
        let ops = self.program(index)?;
        let y = host_step("DPM-Solver++ step", &ops, &mut self.hist, out, x)?;
        self.next += 1;
        Ok(y)
    }
}
