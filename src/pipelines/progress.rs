//! What a caller sees of a running sampler: one [`Step`] after each UNet evaluation is submitted, and the answer
//! whether to go on. Returning `false` cancels the run at that step: the sampler stops with
//! [`Error::Cancelled`](crate::Error::Cancelled) and nothing is decoded or returned.

/// The sample after a step, read back only when [`Progress::wants_preview`] says so: f32 NHWC `[rows, h, w, c]`
/// (a Stable Diffusion stage: latents; a pixel stage: pixels in about [-1, 1]).
#[derive(Clone, Copy, Debug)]
pub struct Preview<'a> {
    pub samples: &'a [f32],
    pub rows: usize,
    pub hw: (usize, usize),
    pub channels: usize,
}

/// One finished (submitted) UNet evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// The denoising stage: "base" (SD latents or the cascade base) or "sr" (the cascade's super-resolution).
    pub stage: &'a str,
    /// Evaluations of this stage done, and its total.
    pub step: usize,
    pub total: usize,
    /// Evaluations of the whole run done, and its total (all stages).
    pub done: usize,
    pub of: usize,
    pub preview: Option<Preview<'a>>,
}

/// Receives the steps of a run; `step` returns whether to go on.
pub trait Progress {
    fn step(&mut self, step: &Step) -> bool;
    /// Whether each step should carry a [`Preview`] (a readback per step: slower).
    fn wants_preview(&self) -> bool {
        false
    }
}

/// A progress that shows nothing and never cancels.
pub struct Silent;

impl Progress for Silent {
    fn step(&mut self, _: &Step) -> bool {
        true
    }
}

/// Any `FnMut(&Step) -> bool` is a progress.
impl<F: FnMut(&Step) -> bool> Progress for F {
    fn step(&mut self, step: &Step) -> bool {
        self(step)
    }
}

/// The steps of one stage as part of a run of several: names the stage and offsets its counts.
pub struct StageProgress<'p> {
    pub inner: &'p mut dyn Progress,
    pub stage: &'static str,
    /// Evaluations of the run before this stage, and of the whole run.
    pub offset: usize,
    pub of: usize,
}

impl<'p> StageProgress<'p> {
    /// The only stage of a run of `total` evaluations.
    pub fn single(inner: &'p mut dyn Progress, total: usize) -> Self {
        StageProgress { inner, stage: "base", offset: 0, of: total }
    }
}
