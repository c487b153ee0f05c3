//! Real-image editing on the one loop (`sampler::Sampler::run`):
//!
//! - [`Denoiser::invert`]: DDIM inversion, as the null-text notebook's `ddim_loop` and diffusers'
//!   `DDIMInverseScheduler` (`schedulers::DdimInverse`): the source prompt only (guidance 1), the edit's DDIM
//!   timesteps in ascending order, every latent x_0 (the encoded image) … x_S kept on the GPU ([`Trajectory`]);
//! - [`Pinned`]: direct inversion (Ju et al., ICLR 2024, "PnP Inversion"): after every scheduler step of the edit,
//!   before local blending, row 0 (the source) is set to the stored latent of that step. The reference adds the
//!   offset `x_inv − x_src` to the source row, which is the same value (our port in
//!   weights-tools/ptp_reference.py adds the offset; tests/inversion_parity.rs holds the two to 1e-4); the targets
//!   are never offset.
//! - [`Denoiser::edit_inverted`]: a stage's edit (or reconstruction) from its inversion by one of the three
//!   [`Method`]s; negative-prompt inversion (Miyake et al.) needs no hook, the edit's unconditional prompt is the
//!   source prompt.
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::models::sd::{nchw_to_nhwc, nhwc_to_nchw};
use crate::ops::Recording;
use crate::ops::copy::copy;
use crate::p2p::EditPlan;
use crate::schedulers::{DdimInverse, Kind, Scheduler};
use crate::tensor::{DType, Tensor};

use super::progress::StageProgress;
use super::sampler::{Sampler, StageRecording, StepHooks};
use super::stage::{Denoiser, EditRun, EditedSamples, Generate, Sampling, StageCond};

/// How an inverted image starts its edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The edit starts from the inverted x_S; nothing else changes (drifts under guidance).
    Ddim,
    /// The edit's unconditional embedding is the source prompt's, in every row (Miyake et al.).
    NegativePrompt,
    /// The source row is pinned to the inversion's latents at every step (Ju et al.).
    #[default]
    Direct,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "ddim" => Ok(Method::Ddim),
            "negative-prompt" => Ok(Method::NegativePrompt),
            "direct" => Ok(Method::Direct),
            other => Err(Error::input(format!("--inversion {other:?}: expected ddim, negative-prompt or direct"))),
        }
    }
}

/// The latents of one inversion, x_0 (the encoded image) … x_S, on the GPU: f32 NHWC `[S + 1, h, w, C]`.
#[derive(Clone)]
pub struct Trajectory {
    pub latents: Tensor,
    pub steps: usize,
    pub hw: (usize, usize),
    pub channels: usize,
}

impl std::fmt::Debug for Trajectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trajectory({} steps, {:?}×{})", self.steps, self.hw, self.channels)
    }
}

impl Trajectory {
    /// Uploads `[S + 1, C, h, w]` NCHW latents.
    pub fn from_nchw(gpu: &Gpu, data: &[f32], steps: usize, channels: usize, (h, w): (usize, usize)) -> Result<Self> {
        if data.len() != (steps + 1) * channels * h * w {
            return Err(Error::shape(
                "trajectory",
                format!("{} values, expected [{}, {channels}, {h}, {w}]", data.len(), steps + 1),
            ));
        }
        let nhwc = nchw_to_nhwc(data, steps + 1, channels, h, w);
        let latents = Tensor::from_f32(gpu, &[steps + 1, h, w, channels], DType::F32, &nhwc)?;
        Ok(Trajectory { latents, steps, hw: (h, w), channels })
    }

    /// All latents, NCHW `[S + 1, C, h, w]`.
    pub fn to_nchw(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let (h, w) = self.hw;
        Ok(nhwc_to_nchw(&self.latents.to_f32(gpu)?, self.steps + 1, self.channels, h, w))
    }

    /// Latent `k` (x_k), NCHW `[1, C, h, w]`.
    pub fn latent_nchw(&self, gpu: &Gpu, k: usize) -> Result<Vec<f32>> {
        let (h, w) = self.hw;
        Ok(nhwc_to_nchw(&self.latents.rows(gpu, k, 1)?.to_f32(gpu)?, 1, self.channels, h, w))
    }
}

/// Keeps the sample after every inverse step: evaluation i copies X into slot i + 1.
struct Keep {
    copies: Vec<Recording>,
}

impl StepHooks for Keep {
    fn after(&self, i: usize) -> Vec<&Dispatch> {
        self.copies.get(i).map(|r| r.iter().collect()).unwrap_or_default()
    }
}

/// Direct inversion's pin on top of other hooks: after evaluation i's scheduler step, row 0 of X ← x_{S−1−i}, then
/// the inner hooks' dispatches (local blending).
pub struct Pinned<'h> {
    inner: &'h mut dyn StepHooks,
    pins: Vec<Recording>,
}

impl<'h> Pinned<'h> {
    /// Pins row 0 of `x` to `traj` over the `evaluations` UNet evaluations of a DDIM edit of `traj.steps` steps.
    pub fn new(
        gpu: &Gpu,
        traj: &Trajectory,
        x: &Tensor,
        evaluations: usize,
        inner: &'h mut dyn StepHooks,
    ) -> Result<Self> {
        if evaluations != traj.steps {
            return Err(Error::input(format!(
                "the inversion has {} steps, the edit {evaluations} evaluations; they must match",
                traj.steps
            )));
        }
        let src = x.rows(gpu, 0, 1)?;
        let mut pins = Vec::with_capacity(evaluations);
        for i in 0..evaluations {
            let mut rec = Recording::new();
            copy(gpu, &mut rec, &traj.latents.rows(gpu, traj.steps - 1 - i, 1)?, &src)?;
            pins.push(rec);
        }
        Ok(Pinned { inner, pins })
    }
}

impl StepHooks for Pinned<'_> {
    fn before(&mut self, gpu: &Gpu, i: usize) -> Result<usize> {
        self.inner.before(gpu, i)
    }
    fn after(&self, i: usize) -> Vec<&Dispatch> {
        let mut v: Vec<&Dispatch> = self.pins.get(i).map(|r| r.iter().collect()).unwrap_or_default();
        v.extend(self.inner.after(i));
        v
    }
}

/// Runs `sampler` with `hooks`, and with row 0 pinned to `pin` after every step when given (direct inversion).
pub(super) fn run_pinned(
    sampler: Sampler,
    gpu: &Gpu,
    rec: &StageRecording,
    sched: &mut dyn Scheduler,
    hooks: &mut dyn StepHooks,
    pin: Option<&Trajectory>,
    progress: &mut StageProgress,
) -> Result<Vec<f32>> {
    match pin {
        None => sampler.run(gpu, rec, sched, hooks, progress),
        Some(t) => {
            let mut pinned = Pinned::new(gpu, t, &sampler.x, sched.timesteps().len(), hooks)?;
            sampler.run(gpu, rec, sched, &mut pinned, progress)
        }
    }
}

impl Denoiser<'_> {
    /// A real image's run on this stage from its inversion `traj`: `plan` (None: the source alone, the
    /// reconstruction) sampled as `r` but with DDIM from x_S, and by `method`: negative-prompt sets every row's
    /// unconditional prompt to `prompt` (the source), direct pins the source row to `traj`. Returns the prompts
    /// and the samples.
    #[allow(clippy::too_many_arguments)]
    pub fn edit_inverted(
        &self,
        gpu: &Gpu,
        prompt: &str,
        plan: Option<&EditPlan>,
        r: &EditRun,
        traj: &Trajectory,
        method: Method,
        progress: &mut StageProgress,
    ) -> Result<(Vec<String>, EditedSamples)> {
        let mut r = r.clone();
        r.sampling.scheduler = Some(Kind::Ddim);
        r.sampling.latents = traj.latent_nchw(gpu, traj.steps)?;
        if method == Method::NegativePrompt {
            r.sampling.negative = prompt.to_string();
        }
        let pin = (method == Method::Direct).then_some(traj);
        match plan {
            None => {
                let g = Generate { prompts: vec![prompt.to_string()], sampling: r.sampling };
                let samples = self.generate_pinned(gpu, &g, None, pin, progress)?;
                Ok((g.prompts, EditedSamples { samples, attention: None, blend_masks: None }))
            }
            Some(plan) => Ok((plan.prompts.clone(), self.edit_pinned(gpu, plan, &r, pin, progress)?)),
        }
    }

    /// DDIM-inverts the encoded image `x0` (NCHW `[1, C, h, w]`, already scaled as the UNet's samples) with
    /// `prompt` over `steps` steps (see the module doc), with the extra inputs `cond` of a conditioned stage;
    /// returns x_0 … x_S.
    #[allow(clippy::too_many_arguments)]
    pub fn invert(
        &self,
        gpu: &Gpu,
        prompt: &str,
        x0: &[f32],
        steps: usize,
        (h, w): (usize, usize),
        cond: Option<&StageCond>,
        progress: &mut StageProgress,
    ) -> Result<Trajectory> {
        let c = self.unet.config.out_channels;
        let sampling = Sampling::new(steps, 1.0, x0.to_vec(), (h, w));
        let g = Generate { prompts: vec![prompt.to_string()], sampling };
        let mut sched = DdimInverse::new(self.scheduler, steps)?;
        let rec = self.record_plain(gpu, &g, cond)?;
        let sampler = Sampler::new(gpu, &sched, &rec, x0, 1, (h, w, c), 1.0)?;
        // x_0 now; slot i + 1 is written by evaluation i.
        let traj = Trajectory {
            latents: Tensor::empty(gpu, &[steps + 1, h, w, c], DType::F32)?,
            steps,
            hw: (h, w),
            channels: c,
        };
        traj.latents.rows(gpu, 0, 1)?.write_f32(gpu, &nchw_to_nhwc(x0, 1, c, h, w))?;
        let mut copies = Vec::with_capacity(steps);
        for i in 0..steps {
            let mut r = Recording::new();
            copy(gpu, &mut r, &sampler.x, &traj.latents.rows(gpu, i + 1, 1)?)?;
            copies.push(r);
        }
        sampler.run(gpu, &rec, &mut sched, &mut Keep { copies }, progress)?;
        Ok(traj)
    }
}
