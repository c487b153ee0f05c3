//! The language of the lincomb op: a scheduler step as a short program of elementwise linear combinations, so that
//! the same step runs on the host (in f64, [`run_host`], which is also the op's reference) and on the GPU (in f32,
//! [`super::StepProgram`]) without reading the sample back. The schedulers (`crate::schedulers`) write programs.
//!
//! Every scheduler we support (PNDM/PLMS, DDIM, DPM-Solver++ 2M, Euler) updates the sample by linear combinations
//! of the current sample, the guided model output and vectors it kept from earlier steps, with at most a clamp
//! (DDIM's `clip_sample`). A step is a list of [`LinOp`]s run in order: `dst = clamp(Σ coef · src)`, elementwise,
//! where `dst` may also appear among the sources (it is read before it is written, element by element).

/// A vector a step program reads or writes; all have the size of the sample batch `[B, h, w, C]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The current sample (read and written).
    X,
    /// The guided model output of this evaluation (read only); on the GPU it expands to
    /// `(1 − g)·uncond + g·cond` of the UNet's CFG batch.
    Out,
    /// Scheduler state kept across steps, `0..Scheduler::history_slots()`.
    Hist(usize),
}

/// What a [`LinOp`] writes: the sample or a history slot (never the model output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dst {
    X,
    Hist(usize),
}

impl Dst {
    /// The same vector as a source.
    pub fn slot(self) -> Slot {
        match self {
            Dst::X => Slot::X,
            Dst::Hist(k) => Slot::Hist(k),
        }
    }
}

/// One term `coef · src`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    pub coef: f64,
    pub src: Slot,
}

/// `dst = clamp(Σ terms)` elementwise; `clamp = Some(r)` clamps to `[-r, r]` after summing.
#[derive(Clone, Debug, PartialEq)]
pub struct LinOp {
    pub dst: Dst,
    pub terms: Vec<Term>,
    pub clamp: Option<f64>,
}

impl LinOp {
    pub fn new(dst: Dst, terms: &[(f64, Slot)]) -> LinOp {
        LinOp { dst, terms: terms.iter().map(|&(coef, src)| Term { coef, src }).collect(), clamp: None }
    }

    pub fn clamped(mut self, r: Option<f64>) -> LinOp {
        self.clamp = r;
        self
    }
}

/// Runs `ops` on host vectors in f64: `x` is the sample, `out` the guided output, `hist` the scheduler's slots
/// (each `x.len()` long; resized on first use).
pub fn run_host(ops: &[LinOp], x: &mut [f64], out: &[f64], hist: &mut Vec<Vec<f64>>) {
    for op in ops {
        let mut acc = vec![0.0f64; x.len()];
        for t in &op.terms {
            let src: &[f64] = match t.src {
                Slot::X => x,
                Slot::Out => out,
                Slot::Hist(k) => {
                    if hist.len() <= k {
                        hist.resize(k + 1, vec![0.0; x.len()]);
                    }
                    &hist[k]
                }
            };
            for (a, s) in acc.iter_mut().zip(src) {
                *a += t.coef * s;
            }
        }
        if let Some(r) = op.clamp {
            acc.iter_mut().for_each(|a| *a = a.clamp(-r, r));
        }
        match op.dst {
            Dst::X => x.copy_from_slice(&acc),
            Dst::Hist(k) => {
                if hist.len() <= k {
                    hist.resize(k + 1, vec![0.0; x.len()]);
                }
                hist[k] = acc;
            }
        }
    }
}
