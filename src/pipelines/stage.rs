//! One text-conditioned denoising stage ([`Denoiser`]: a tokenizer, a text encoder, a UNet and its scheduler) and
//! its two runs, each a set of hooks on the one loop (`sampler::Sampler::run`):
//!
//! - [`Denoiser::generate`]: classifier-free guidance (none at guidance 1) from one initial noise shared by every
//!   prompt, with the extra inputs of a conditioned stage (super-resolution);
//! - [`Denoiser::edit`]: Prompt-to-Prompt (`p2p::hooks::EditHooks`): all prompts `[source, targets]` as one CFG
//!   batch `[uncond × B, cond × B]`, every cross-attention layer applying the edit of the current evaluation, the
//!   self-attention layers injecting the source's maps inside the self window (a second recorded variant), the
//!   cross maps stored for local blending and pictures, and blending after each scheduler step.
//!
//! Stable Diffusion has one stage (on latents); the pixel cascade two (the base, which edits apply to, and the
//! super-resolution stage).
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::models::clip::ClipTextModel;
use crate::models::unet::UNet;
use crate::nn::{AttnHooks, StoreAt};
use crate::ops::resample::concat_channels;
use crate::p2p::EditPlan;
use crate::p2p::hooks::EditHooks;
use crate::schedulers::{self, Scheduler, SchedulerConfig};
use crate::tensor::{DType, Tensor};
use crate::text::Tokenizer;

use super::inversion::{Trajectory, run_pinned};
use super::progress::StageProgress;
use super::sampler::{Plain, Sampler, StageRecording, StepHooks};

/// The sampling options every denoising run has: negative prompt, steps, guidance, scheduler and initial latent.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    /// None: the model's scheduler config.
    pub scheduler: Option<schedulers::Kind>,
    /// The initial latent `[1, C, h, w]` (NCHW, f32), shared by every prompt.
    pub latents: Vec<f32>,
    pub latent_hw: (usize, usize),
}

impl Sampling {
    /// `steps` at `guidance` from `latents` of side `latent_hw`, no negative prompt, the model's scheduler.
    pub fn new(steps: usize, guidance: f64, latents: Vec<f32>, latent_hw: (usize, usize)) -> Sampling {
        Sampling { negative: String::new(), steps, guidance, scheduler: None, latents, latent_hw }
    }

    /// Checks that the initial latent holds `[1, c, h, w]` values (`op` names the run in the error).
    fn check_latents(&self, op: &str, c: usize) -> Result<(usize, usize)> {
        let (h, w) = self.latent_hw;
        if self.latents.len() != c * h * w {
            let got = self.latents.len();
            return Err(Error::shape(op, format!("latents hold {got} values, expected [1, {c}, {h}, {w}]")));
        }
        Ok((h, w))
    }
}

/// One text-to-image run.
#[derive(Clone, Debug)]
pub struct Generate {
    pub prompts: Vec<String>,
    pub sampling: Sampling,
}

/// Sampling options of an edit (the prompts are the plan's).
#[derive(Clone, Debug)]
pub struct EditRun {
    pub sampling: Sampling,
    /// Self-attention injection in layers with at most `self_max_res²` query tokens (16 for SD).
    pub self_max_res: usize,
    /// Side of the maps local blending reads (None: `UNet::default_map_side`, 16 for SD at 512 px).
    pub blend_res: Option<usize>,
    /// Also keep the maps at this side, for pictures (`Some(None)`: the default side).
    pub attention_res: Option<Option<usize>>,
}

impl EditRun {
    /// An edit sampled as `sampling`, with SD's self-attention side 16, the default blend side and no maps kept.
    pub fn new(sampling: Sampling) -> EditRun {
        EditRun { sampling, self_max_res: 16, blend_res: None, attention_res: None }
    }
}

/// What an edited stage produced, before decoding.
#[derive(Clone, Debug)]
pub struct EditedSamples {
    /// The final samples, NHWC `[B, h, w, C]`, row 0 = source.
    pub samples: Vec<f32>,
    /// The sum over UNet evaluations of the stored maps at the attention side, `[B, res², keys]`, the side and the
    /// number of evaluations.
    pub attention: Option<(Vec<f32>, usize, usize)>,
    /// The last local-blend masks used, `[B][h·w]`.
    pub blend_masks: Option<Vec<Vec<f32>>>,
}

/// A text-conditioned denoising stage.
#[derive(Clone, Copy)]
pub struct Denoiser<'a> {
    pub tokenizer: &'a Tokenizer,
    pub text_encoder: &'a ClipTextModel,
    pub unet: &'a UNet,
    pub scheduler: &'a SchedulerConfig,
}

/// Extra UNet inputs of a conditioned stage (super-resolution).
#[derive(Clone, Copy, Debug)]
pub struct StageCond<'a> {
    /// NHWC `[B, h, w, channels]`, one image per prompt: concatenated after the sample's channels, the same image
    /// for the prompt's unconditional and conditional rows.
    pub image: &'a [f32],
    pub channels: usize,
    /// The class label of every row (`class_labels`; the noise-augmentation level of a super-resolution stage).
    pub class_label: Option<f32>,
}

impl Denoiser<'_> {
    /// Token ids of the CFG batch `[negative × B, prompts]` (prompts longer than the tokenizer's length are cut;
    /// `Session` reports that as a warning).
    pub fn encode_ids(&self, prompts: &[String], negative: &str) -> Result<Vec<Vec<u32>>> {
        std::iter::repeat_n(negative, prompts.len())
            .chain(prompts.iter().map(String::as_str))
            .map(|p| Ok(self.tokenizer.encode(p)?.ids))
            .collect()
    }

    /// UNet evaluations of a run of `steps` steps with `kind` (None: the config's scheduler); PNDM makes S + 1.
    pub fn evaluations(&self, kind: Option<schedulers::Kind>, steps: usize) -> Result<usize> {
        Ok(self.schedule(kind, steps)?.timesteps().len())
    }

    fn schedule(&self, kind: Option<schedulers::Kind>, steps: usize) -> Result<Box<dyn Scheduler>> {
        schedulers::build(self.scheduler, kind, steps)
    }

    /// The plain UNet call of `g` recorded (not run) on its persistent inputs, with the text embeddings and the
    /// conditioning it binds: what [`Denoiser::generate`] replays and the memory planner measures.
    pub fn record_plain<'g>(&self, gpu: &'g Gpu, g: &Generate, cond: Option<&StageCond>) -> Result<StageRecording<'g>> {
        let b = g.prompts.len();
        if b == 0 {
            return Err(Error::input("no prompt"));
        }
        if !g.sampling.guidance.is_finite() {
            return Err(Error::input(format!("guidance must be a finite number, got {}", g.sampling.guidance)));
        }
        let uc = &self.unet.config;
        let c = uc.out_channels;
        let cc = cond.map_or(0, |k| k.channels);
        if uc.in_channels != c + cc {
            return Err(Error::msg(format!(
                "the UNet takes {} input channels; the sample has {c} and the conditioning {cc}",
                uc.in_channels
            )));
        }
        let (h, w) = g.sampling.latent_hw;
        if let Some(k) = cond {
            if k.image.len() != b * h * w * cc {
                return Err(Error::shape(
                    "generate",
                    format!("conditioning image holds {} values, expected [{b}, {h}, {w}, {cc}]", k.image.len()),
                ));
            }
        }
        // Guidance exactly 1 is U + (C − U) = C: the unconditional half is not run (as diffusers, which skips
        // classifier-free guidance for scales ≤ 1; other scales below 1 keep the formula).
        let cfg = g.sampling.guidance != 1.0;
        let rows = if cfg { 2 * b } else { b };
        let mut ids = self.encode_ids(&g.prompts, &g.sampling.negative)?;
        if !cfg {
            ids.drain(..b);
        }
        let dt = self.unet.dtype;
        let mut rec = StageRecording::new(gpu, dt, rows, (h, w), c)?;
        rec.hold(self.text_encoder.encode(gpu, &ids)?);
        // With a conditioning image, the channel concatenation is recorded in front of the UNet; the image and the
        // labels are held by the recording (dropped earlier, their buffers would go back to the pool while the
        // recording still reads them).
        let image = cond.is_some();
        if let Some(k) = cond {
            rec.hold(Tensor::from_f32(gpu, &[rows, h, w, cc], dt, &k.image.repeat(rows / b))?);
        }
        let labels = cond.and_then(|k| k.class_label).is_some();
        if let Some(l) = cond.and_then(|k| k.class_label) {
            rec.hold(Tensor::from_f32(gpu, &[rows], DType::F32, &vec![l; rows])?);
        }
        let unet = self.unet;
        rec.record(|cx, sample, tsteps, held| {
            let (text, rest) = held.split_first().expect("text held first");
            let input = if image {
                let cat = cx.alloc(&[rows, h, w, c + cc])?;
                concat_channels(cx.gpu, &mut cx.rec, sample, &rest[0], &cat)?;
                cat
            } else {
                sample.clone()
            };
            let label = if labels { rest.last() } else { None };
            unet.forward_full(cx, &input, tsteps, label, text, None)
        })?;
        Ok(rec)
    }

    /// Text-to-image sampling with classifier-free guidance from `g.sampling.latents` (shared by every prompt), with the
    /// extra inputs `cond` of a conditioned stage; returns the final samples, NHWC `[B, h, w, C]` (C = the UNet's
    /// `out_channels`).
    pub fn generate(
        &self,
        gpu: &Gpu,
        g: &Generate,
        cond: Option<&StageCond>,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        self.generate_pinned(gpu, g, cond, None, progress)
    }

    /// [`Denoiser::generate`] with row 0 pinned to an inversion's latents after every step (direct inversion,
    /// `pipelines::inversion::Pinned`) when `pin` is given.
    pub fn generate_pinned(
        &self,
        gpu: &Gpu,
        g: &Generate,
        cond: Option<&StageCond>,
        pin: Option<&Trajectory>,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        let c = self.unet.config.out_channels;
        let (h, w) = g.sampling.check_latents("generate", c)?;
        let mut sched = self.schedule(g.sampling.scheduler, g.sampling.steps)?;
        let rec = self.record_plain(gpu, g, cond)?;
        let b = g.prompts.len();
        let sampler = Sampler::new(gpu, sched.as_ref(), &rec, &g.sampling.latents, b, (h, w, c), g.sampling.guidance)?;
        run_pinned(sampler, gpu, &rec, sched.as_mut(), &mut Plain, pin, progress)
    }

    /// The side of the stored maps for local blending and for pictures (`r.blend_res`, `r.attention_res`, else
    /// the UNet's default side).
    fn store_sides(&self, plan: &EditPlan, r: &EditRun) -> Result<(Option<usize>, Option<usize>)> {
        let (h, w) = r.sampling.latent_hw;
        let default_side = || {
            self.unet
                .default_map_side(h, w)
                .ok_or_else(|| Error::input(format!("this UNet has no cross-attention layer at {h}x{w} / 4 or above")))
        };
        let blend_res = match (plan.blend.is_some(), r.blend_res) {
            (false, _) => None,
            (true, Some(s)) => Some(s),
            (true, None) => Some(default_side()?),
        };
        let attention_res = match r.attention_res {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => Some(default_side()?),
        };
        if (blend_res.is_some() || attention_res.is_some()) && h != w {
            return Err(Error::input(format!(
                "local blending and attention pictures need a square image for now (latents are {h}x{w})"
            )));
        }
        Ok((blend_res, attention_res))
    }

    /// The edited UNet call of `plan` recorded (not run) in its two variants (0: with self-attention injection,
    /// 1: without), with its edit tables and attention stores: what [`Denoiser::edit`] replays and the memory
    /// planner measures. Returns the recording, the edit tables and the stores `(side, buffer)` (blend side first).
    pub fn record_edit<'g, 'p>(
        &self,
        gpu: &'g Gpu,
        plan: &'p EditPlan,
        r: &EditRun,
    ) -> Result<(StageRecording<'g>, EditHooks<'p>, Option<usize>)> {
        let b = plan.prompts.len();
        let c = self.unet.config.in_channels;
        if self.unet.config.out_channels != c {
            return Err(Error::model(format!(
                "edit: the UNet maps {c} channels to {}; an edited stage must map its sample to itself",
                self.unet.config.out_channels
            )));
        }
        if plan.keys != self.tokenizer.max_len() {
            return Err(Error::msg(format!(
                "edit plan has {} keys, the tokenizer {}",
                plan.keys,
                self.tokenizer.max_len()
            )));
        }
        if plan.alpha.len() != r.sampling.steps + 1 {
            return Err(Error::msg(format!(
                "edit plan made for {} steps, run has {}",
                plan.alpha.len() - 1,
                r.sampling.steps
            )));
        }
        let (h, w) = r.sampling.latent_hw;
        let (blend_res, attention_res) = self.store_sides(plan, r)?;
        // Stores: local blending and pictures (one buffer per distinct resolution, the blend's first).
        let mut sides: Vec<usize> = blend_res.into_iter().collect();
        if let Some(a) = attention_res.filter(|a| !sides.contains(a)) {
            sides.push(a);
        }
        let mut stores = Vec::new();
        for &res in &sides {
            let layers = self.unet.cross_layers_with_tokens(h, w, res * res);
            if layers == 0 {
                return Err(Error::input(format!(
                    "no cross-attention layer works at {res}x{res} for {h}x{w} latents; choose another resolution"
                )));
            }
            let keys = plan.keys;
            let buf = Tensor::from_f32(gpu, &[b, res * res, keys], DType::F32, &vec![0.0; b * res * res * keys])?;
            stores.push((res, layers, buf));
        }
        let hooks = EditHooks::new(gpu, plan, stores)?;
        let dt = self.unet.dtype;
        let mut rec = StageRecording::new(gpu, dt, 2 * b, (h, w), c)?;
        rec.hold(self.text_encoder.encode(gpu, &self.encode_ids(&plan.prompts, &r.sampling.negative)?)?);
        let self_max_tokens = r.self_max_res * r.self_max_res;
        for inject_self in [true, false] {
            let (unet, hooks) = (self.unet, &hooks);
            rec.record(|cx, sample, tsteps, held| {
                let stores: Vec<StoreAt> = hooks
                    .stores
                    .iter()
                    .map(|(res, layers, buf)| StoreAt { tokens: res * res, layers: *layers, buf })
                    .collect();
                let attn = AttnHooks { edit: &hooks.edit, src_row: b, inject_self, self_max_tokens, stores };
                unet.forward_hooked(cx, sample, tsteps, &held[0], Some(&attn))
            })?;
        }
        Ok((rec, hooks, attention_res))
    }

    /// Runs the edit `plan` (its prompts are `[source, targets]`) on this stage; returns the final samples.
    pub fn edit(&self, gpu: &Gpu, plan: &EditPlan, r: &EditRun, progress: &mut StageProgress) -> Result<EditedSamples> {
        self.edit_pinned(gpu, plan, r, None, progress)
    }

    /// [`Denoiser::edit`] with the source row pinned to an inversion's latents after every step, before local
    /// blending (direct inversion, `pipelines::inversion::Pinned`), when `pin` is given.
    pub fn edit_pinned(
        &self,
        gpu: &Gpu,
        plan: &EditPlan,
        r: &EditRun,
        pin: Option<&Trajectory>,
        progress: &mut StageProgress,
    ) -> Result<EditedSamples> {
        let b = plan.prompts.len();
        let c = self.unet.config.in_channels;
        let (h, w) = r.sampling.check_latents("edit", c)?;
        let mut sched = self.schedule(r.sampling.scheduler, r.sampling.steps)?;
        let (rec, mut hooks, attention_res) = self.record_edit(gpu, plan, r)?;
        let sampler = Sampler::new(gpu, sched.as_ref(), &rec, &r.sampling.latents, b, (h, w, c), r.sampling.guidance)?;
        hooks.blend_on(gpu, &sampler.x)?;
        let total = sched.timesteps().len();
        let samples = run_pinned(sampler, gpu, &rec, sched.as_mut(), &mut hooks, pin, progress)?;
        drop(rec);
        let (attention, blend_masks) = hooks.read_back(gpu, attention_res, total)?;
        Ok(EditedSamples { samples, attention, blend_masks })
    }
}

impl StepHooks for EditHooks<'_> {
    fn before(&mut self, gpu: &Gpu, i: usize) -> Result<usize> {
        self.before_step(gpu, i)
    }
    fn after(&self, i: usize) -> Vec<&Dispatch> {
        self.after_step(i)
    }
}
