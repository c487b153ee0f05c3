//! diffusers' `PNDMScheduler` with `skip_prk_steps` (PLMS, the Prompt-to-Prompt notebooks' sampler): S + 1 UNet
//! evaluations, then linear multistep combinations of up to four previous outputs, and the PNDM transfer formula.
//!
//! The timestep list repeats its second entry: evaluation 0 at t₀ steps to t₁ with its own output e₀ (and keeps
//! the sample x₀); evaluation 1, at t₁, redoes the step t₀ → t₁ from the kept x₀ with (e₀ + e₁)/2 and does not
//! keep e₁; evaluation 2, again at t₁, is the first multistep one, with the kept outputs e₀, e₂; from then on the
//! last four kept outputs are combined with the Adams–Bashforth weights.
//!
//! History slots: 0 holds x₀ (the `cur_sample`), 1..=3 a ring of the kept outputs (the n-th kept one in
//! 1 + n mod 3; the newest output is the slot `Out` itself, so three older ones suffice).
use crate::error::{Error, Result};

use super::{LinOp, Prediction, Scheduler, SchedulerConfig, Slot, Spacing, host_step, no_step};
use crate::ops::lincomb::program::Dst;

const CUR: usize = 0;

fn ets(n: usize) -> usize {
    1 + n % 3
}

pub struct Pndm {
    timesteps: Vec<usize>,
    acp: Vec<f64>,
    final_acp: f64,
    ratio: usize,
    prediction: Prediction,
    hist: Vec<Vec<f64>>,
    next: usize,
}

impl Pndm {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Pndm> {
        if !cfg.skip_prk_steps.unwrap_or(false) {
            return Err(Error::msg(
                "PNDM with Runge-Kutta warm-up (skip_prk_steps = false, PNDMScheduler's default) is not supported",
            ));
        }
        cfg.require_leading("PNDMScheduler", Spacing::Leading)?;
        let lead = cfg.leading_timesteps(steps)?; // descending
        let mut asc: Vec<usize> = lead.iter().rev().copied().collect();
        // plms timesteps: _timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:], reversed.
        let n = asc.len();
        if n >= 2 {
            asc.insert(n - 1, asc[n - 2]);
        }
        let acp = cfg.alphas_cumprod();
        if let Some(&t) = asc.iter().find(|&&t| t >= acp.len()) {
            return Err(Error::msg(format!("PNDM: timestep {t} is beyond the schedule's {} timesteps", acp.len())));
        }
        Ok(Pndm {
            timesteps: asc.into_iter().rev().collect(),
            final_acp: cfg.final_alpha_cumprod(&acp, false),
            acp,
            ratio: cfg.num_train_timesteps / steps,
            prediction: cfg.prediction_type,
            hist: Vec::new(),
            next: 0,
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

    fn history_slots(&self) -> usize {
        4
    }

    fn program(&mut self, index: usize) -> Result<Vec<LinOp>> {
        let t0 = *self.timesteps.get(index).ok_or_else(|| no_step("PNDM", index, self.timesteps.len()))? as isize;
        let r = self.ratio as isize;
        let mut ops = Vec::new();
        // The sample the transfer starts from, the combined model output as (weight, slot) terms, the timesteps.
        let (sample, comb, t, prev_t): (Slot, Vec<(f64, Slot)>, isize, isize) = match index {
            0 => {
                if self.timesteps.len() > 1 {
                    ops.push(LinOp::new(Dst::Hist(CUR), &[(1.0, Slot::X)]));
                }
                (Slot::X, vec![(1.0, Slot::Out)], t0, t0 - r)
            }
            // The second evaluation of t₁ (= t₀ − r) redoes the step from t₀ with the kept x₀.
            1 => (Slot::Hist(CUR), vec![(0.5, Slot::Out), (0.5, Slot::Hist(ets(0)))], t0 + r, t0),
            _ => {
                // Output e_i is the n-th kept one; with the older ones, k outputs are combined.
                let n = index - 1;
                let e = |back: usize| Slot::Hist(ets(n - back));
                let comb = match n {
                    1 => vec![(1.5, Slot::Out), (-0.5, e(1))],
                    2 => vec![(23.0 / 12.0, Slot::Out), (-16.0 / 12.0, e(1)), (5.0 / 12.0, e(2))],
                    _ => vec![(55.0 / 24.0, Slot::Out), (-59.0 / 24.0, e(1)), (37.0 / 24.0, e(2)), (-9.0 / 24.0, e(3))],
                };
                (Slot::X, comb, t0, t0 - r)
            }
        };
        let (a_t, a_prev) = (self.alpha(t), self.alpha(prev_t));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        // prev = sample_coeff·sample − (ᾱ_prev − ᾱ_t)·m / denom, with m the combined output (ε), or, for
        // v-prediction, √ᾱ_t·comb + √(1 − ᾱ_t)·sample.
        let sample_coeff = (a_prev / a_t).sqrt();
        let c = (a_prev - a_t) / (a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt());
        let (cs, cm) = match self.prediction {
            Prediction::Epsilon => (sample_coeff, c),
            Prediction::VPrediction => (sample_coeff - c * b_t.sqrt(), c * a_t.sqrt()),
        };
        let mut terms = vec![(cs, sample)];
        terms.extend(comb.iter().map(|&(w, s)| (-cm * w, s)));
        ops.push(LinOp::new(Dst::X, &terms));
        if index != 1 && index + 1 < self.timesteps.len() {
            ops.push(LinOp::new(Dst::Hist(ets(index.saturating_sub(1))), &[(1.0, Slot::Out)]));
        }
        Ok(ops)
    }

    fn step(&mut self, index: usize, out: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        if index != self.next {
            return Err(Error::msg(format!("PNDM steps must run in order: step {index} after {}", self.next)));
        }
        let ops = self.program(index)?;
        let y = host_step("PNDM step", &ops, &mut self.hist, out, x)?;
        self.next += 1;
        Ok(y)
    }
}
