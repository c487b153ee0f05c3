//! The one sampling loop. Every denoising stage (Stable Diffusion latents, the cascade base, its super-resolution
//! stage), plain or edited, runs through [`Sampler::run`]; what differs is a set of [`StepHooks`].
//!
//! - [`StageRecording`]: the UNet call of a stage, recorded once (in one or more variants, e.g. with and without
//!   self-attention injection) on named persistent inputs (`sample`, `timesteps`) in an arena the recording owns,
//!   together with every tensor it binds from outside (text embeddings, conditioning image, class labels, edit
//!   tables, attention stores). The memory planner (`info --model`) builds the same value without running it.
//! - [`Sampler`]: the sample X (f32 `[B, h, w, C]`, row b = prompt b) uploaded once; per UNet evaluation the host
//!   writes only small uniforms (the timestep, the input scale and the step program's coefficients, see
//!   `ops::lincomb`), and one submission runs the input preparation (`s·X` into both CFG halves of the UNet's
//!   input), the chosen recording, the step program (classifier-free guidance folded into its `Out` terms) and
//!   whatever the hooks append (local blending). Nothing is read back until the end (or a preview is asked for);
//!   one evaluation is kept in flight (each submission waits for the one before it).
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::models::sd::nchw_to_nhwc;
use crate::nn::Ctx;
use crate::ops::Recording;
use crate::ops::lincomb::{ScaleInput, StepProgram};
use crate::schedulers::Scheduler;
use crate::tensor::{DType, Tensor};

use super::progress::{Preview, StageProgress, Step};

/// The UNet call of one stage, recorded on persistent inputs, with everything it binds.
pub struct StageRecording<'g> {
    cx: Ctx<'g>,
    /// The UNet's sample input `[rows, h, w, C]` (the UNet's dtype), written by the sampler before each replay.
    pub sample: Tensor,
    /// The timestep of every row `[rows]` f32, written by the sampler before each replay.
    pub timesteps: Tensor,
    /// Rows of the UNet batch (2B with classifier-free guidance, B without).
    pub rows: usize,
    /// The recorded variants and their outputs `[rows, h, w, C_out]`.
    variants: Vec<(Recording, Tensor)>,
    /// Tensors bound by the recordings from outside the arena; they live as long as the recordings.
    held: Vec<Tensor>,
}

impl<'g> StageRecording<'g> {
    /// Allocates the persistent inputs of a `rows`-row UNet call on `h × w` samples of `channels` channels.
    pub fn new(gpu: &'g Gpu, dtype: DType, rows: usize, (h, w): (usize, usize), channels: usize) -> Result<Self> {
        let cx = Ctx::new(gpu, dtype);
        let sample = cx.input(&[rows, h, w, channels], dtype)?;
        let timesteps = cx.input(&[rows], DType::F32)?;
        Ok(StageRecording { cx, sample, timesteps, rows, variants: Vec::new(), held: Vec::new() })
    }

    /// Keeps `t` (bound by a recording, from outside the arena) alive as long as the recordings.
    pub fn hold(&mut self, t: Tensor) -> &Tensor {
        self.held.push(t);
        self.held.last().expect("just pushed")
    }

    /// Records one variant of the call: `f(cx, sample, timesteps, held)` records into `cx` and returns the output.
    /// Returns the variant's index (what [`StepHooks::before`] picks).
    pub fn record(
        &mut self,
        f: impl FnOnce(&mut Ctx<'g>, &Tensor, &Tensor, &[Tensor]) -> Result<Tensor>,
    ) -> Result<usize> {
        let out = f(&mut self.cx, &self.sample, &self.timesteps, &self.held)?;
        let rec = std::mem::take(&mut self.cx.rec);
        self.variants.push((rec, out));
        Ok(self.variants.len() - 1)
    }

    /// The outputs of the variants, in recording order.
    pub fn outputs(&self) -> Vec<&Tensor> {
        self.variants.iter().map(|(_, o)| o).collect()
    }

    /// The arena's created bytes and largest buffer (the memory planner's figures).
    pub fn arena_bytes(&self) -> (u64, u64) {
        self.cx.arena.created_bytes()
    }
}

/// What a pipeline adds to the loop at each UNet evaluation `i`.
pub trait StepHooks {
    /// Before evaluation `i` is submitted: rewrite the inputs the hooks own (the edit's alpha row); returns the
    /// recorded variant to replay.
    fn before(&mut self, _gpu: &Gpu, _i: usize) -> Result<usize> {
        Ok(0)
    }
    /// Dispatches that run after the step in evaluation `i`'s submission (local blending).
    fn after(&self, _i: usize) -> Vec<&Dispatch> {
        Vec::new()
    }
}

/// Plain sampling: one variant, nothing appended.
pub struct Plain;

impl StepHooks for Plain {}

/// The sample and the scheduler step of one sampling loop, on the GPU.
pub struct Sampler {
    /// The sample X, f32 `[B, h, w, C]`.
    pub x: Tensor,
    b: usize,
    hwc: (usize, usize, usize),
    prep: ScaleInput,
    step: StepProgram,
    pending: Option<wgpu::SubmissionIndex>,
}

impl Sampler {
    /// X = the shared initial latent `latents` (`[1, C, h, w]` NCHW) times the scheduler's `init_noise_sigma`, in
    /// each of `b` rows, for the UNet call `rec` (`2b` rows with guidance, `b` without).
    pub fn new(
        gpu: &Gpu,
        sched: &dyn Scheduler,
        rec: &StageRecording,
        latents: &[f32],
        b: usize,
        (h, w, c): (usize, usize, usize),
        guidance: f64,
    ) -> Result<Sampler> {
        if latents.len() != c * h * w {
            return Err(Error::shape(
                "sampler",
                format!("latents hold {} values, expected [1, {c}, {h}, {w}]", latents.len()),
            ));
        }
        let sigma = sched.init_noise_sigma() as f32;
        let one = nchw_to_nhwc(latents, 1, c, h, w);
        let x0: Vec<f32> = (0..b).flat_map(|_| one.iter().map(|v| v * sigma)).collect();
        let x = Tensor::from_f32(gpu, &[b, h, w, c], DType::F32, &x0)?;
        let prep = ScaleInput::new(gpu, &x, &rec.sample)?;
        let step = StepProgram::new(gpu, &x, &rec.outputs(), guidance, sched.history_slots())?;
        Ok(Sampler { x, b, hwc: (h, w, c), prep, step, pending: None })
    }

    /// The loop: for every UNet evaluation of `sched`, write the timestep, let `hooks` prepare and pick the
    /// variant, write the input scale and the step program, submit, and report to `progress` (which may cancel).
    /// Returns the final samples, NHWC `[B, h, w, C]`.
    pub fn run(
        mut self,
        gpu: &Gpu,
        rec: &StageRecording,
        sched: &mut dyn Scheduler,
        hooks: &mut dyn StepHooks,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        let total = sched.timesteps().len();
        for i in 0..total {
            let t = sched.timesteps()[i] as f32;
            rec.timesteps.write_f32(gpu, &vec![t; rec.rows])?;
            let variant = hooks.before(gpu, i)?;
            let (dispatches, _) = rec
                .variants
                .get(variant)
                .ok_or_else(|| Error::msg(format!("sampler: no recorded variant {variant}")))?;
            self.prep.set(gpu, sched.input_scale(i))?;
            let ops = sched.program(i)?;
            self.step.load(gpu, variant, &ops)?;
            self.submit(gpu, dispatches, hooks.after(i))?;
            let samples = if progress.inner.wants_preview() { Some(self.x.to_f32(gpu)?) } else { None };
            let (h, w, c) = self.hwc;
            let preview = samples.as_deref().map(|s| Preview { samples: s, rows: self.b, hw: (h, w), channels: c });
            let step = Step {
                stage: progress.stage,
                step: i + 1,
                total,
                done: progress.offset + i + 1,
                of: progress.of,
                preview,
            };
            if !progress.inner.step(&step) {
                return Err(Error::Cancelled);
            }
        }
        self.x.to_f32(gpu)
    }

    /// Submits input preparation, `unet`, the step and `after`, in one submission, then waits for the previous
    /// evaluation's submission.
    fn submit(&mut self, gpu: &Gpu, unet: &[Dispatch], after: Vec<&Dispatch>) -> Result<()> {
        let idx =
            gpu.run_seq(std::iter::once(self.prep.dispatch()).chain(unet).chain(self.step.dispatches()).chain(after))?;
        if let Some(prev) = self.pending.replace(idx) {
            gpu.wait_for(prev)?;
        }
        Ok(())
    }
}
