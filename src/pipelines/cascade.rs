//! The pixel cascade's run (`models::cascade` has the folder, its semantics and the host helpers): the base stage
//! sampled plain or edited exactly as Stable Diffusion's latents (the one loop, `Denoiser::generate` /
//! `Denoiser::edit`), then the super-resolution stage on every row, unedited: base clamped to [-1, 1], upsampled
//! ×4 bilinearly, noise-augmented at `sr_noise_level`, and sampled as a conditioned stage.
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::cascade::{Cascade, RGB, SR_SCALE, augment, finite, upsample_bilinear};
use crate::models::sd::{nchw_to_nhwc, nhwc_to_nchw};
use crate::p2p::EditPlan;
use crate::schedulers;

use super::inversion::{Method, Trajectory};
use super::progress::{Progress, StageProgress};
use super::stage::{Denoiser, EditRun, Generate, Sampling, StageCond};

/// The super-resolution stage of one run.
#[derive(Clone, Debug)]
pub struct SrRun {
    pub steps: usize,
    /// None: `model_index.json`'s `sr_guidance_scale`.
    pub guidance: Option<f64>,
    /// None: the class of `sr_scheduler/scheduler_config.json`.
    pub scheduler: Option<schedulers::Kind>,
    /// The augmentation noise `[1, 3, H, W]` (NCHW), shared by every row.
    pub aug_noise: Vec<f32>,
    /// The SR initial noise `[1, 3, H, W]` (NCHW), shared by every row.
    pub latents: Vec<f32>,
}

/// What a cascade run produced, NCHW, row b = prompt b (an edit: source, then targets).
#[derive(Clone, Debug)]
pub struct CascadeOutput {
    /// `[B, 3, h, w]`: the base stage's final samples (before clamping).
    pub base: Vec<f32>,
    /// `[B, 3, h, w]`: the base images in [0, 1].
    pub base_images: Vec<f32>,
    pub base_hw: (usize, usize),
    /// `[B, 3, H, W]`: the SR stage's final samples.
    pub sr: Vec<f32>,
    /// `[B, 3, H, W]`: the final images in [0, 1].
    pub images: Vec<f32>,
    pub image_hw: (usize, usize),
    /// Edits: as `EditedSamples::attention` (maps of the base stage).
    pub attention: Option<(Vec<f32>, usize, usize)>,
    /// Edits: the last local-blend masks, `[B][h·w]`.
    pub blend_masks: Option<Vec<Vec<f32>>>,
}

/// `full` must be `[4h, 4w]` and `base_image` `[h, w]` RGB pictures.
fn check_pictures((full, base_image): (&[f32], &[f32]), (h, w): (usize, usize)) -> Result<()> {
    let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
    if full.len() != hh * ww * RGB || base_image.len() != h * w * RGB {
        return Err(Error::shape("cascade image", format!("pictures of {hh}x{ww} and {h}x{w} expected")));
    }
    Ok(())
}

impl Cascade {
    /// The base stage (which edits apply to).
    pub fn base(&self) -> Denoiser<'_> {
        Denoiser {
            tokenizer: &self.tokenizer,
            text_encoder: &self.text_encoder,
            unet: &self.unet,
            scheduler: &self.scheduler,
        }
    }

    /// The SR stage.
    pub fn sr(&self) -> Denoiser<'_> {
        Denoiser {
            tokenizer: &self.tokenizer,
            text_encoder: &self.text_encoder,
            unet: &self.sr_unet,
            scheduler: &self.sr_scheduler,
        }
    }

    /// Text-to-image of `g.prompts` (base sampling as `g`, `g.sampling.latents` `[1, 3, h, w]`), then SR as `sr`.
    /// `progress` counts the UNet evaluations of both stages (stages "base", then "sr").
    pub fn generate(&self, gpu: &Gpu, g: &Generate, sr: &SrRun, progress: &mut dyn Progress) -> Result<CascadeOutput> {
        let (nb, ns) = (
            self.base().evaluations(g.sampling.scheduler, g.sampling.steps)?,
            self.sr().evaluations(sr.scheduler, sr.steps)?,
        );
        let mut p = StageProgress { inner: progress, stage: "base", offset: 0, of: nb + ns };
        let base = self.base().generate(gpu, g, None, &mut p)?;
        let mut p = StageProgress { stage: "sr", offset: nb, ..p };
        self.finish(gpu, &g.prompts, base, g.sampling.latent_hw, sr, SrExtras::default(), &mut p, None, None)
    }

    /// The edit `plan` on the base stage (as `r`, `r.sampling.latents` `[1, 3, h, w]`), then SR of every row, unedited.
    pub fn edit(
        &self,
        gpu: &Gpu,
        plan: &EditPlan,
        r: &EditRun,
        sr: &SrRun,
        progress: &mut dyn Progress,
    ) -> Result<CascadeOutput> {
        let (nb, ns) = (
            self.base().evaluations(r.sampling.scheduler, r.sampling.steps)?,
            self.sr().evaluations(sr.scheduler, sr.steps)?,
        );
        let mut p = StageProgress { inner: progress, stage: "base", offset: 0, of: nb + ns };
        let e = self.base().edit(gpu, plan, r, &mut p)?;
        let mut p = StageProgress { stage: "sr", offset: nb, ..p };
        let none = SrExtras::default();
        self.finish(gpu, &plan.prompts, e.samples, r.sampling.latent_hw, sr, none, &mut p, e.attention, e.blend_masks)
    }

    /// Inverts a picture on both stages: the base stage from `base_image` over `steps`, the SR stage from `full`
    /// over `sr.steps`, conditioned on `base_image` (augmented with `sr.aug_noise`); see [`Self::edit_image`].
    /// `progress` sees stages "invert" and "invert-sr" as evaluations `0 .. steps + sr.steps` of `of`.
    #[allow(clippy::too_many_arguments)]
    pub fn invert_image(
        &self,
        gpu: &Gpu,
        prompt: &str,
        (full, base_image): (&[f32], &[f32]),
        steps: usize,
        (h, w): (usize, usize),
        sr: &SrRun,
        progress: &mut dyn Progress,
        of: usize,
    ) -> Result<(Trajectory, Trajectory)> {
        let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
        check_pictures((full, base_image), (h, w))?;
        let mut p = StageProgress { inner: progress, stage: "invert", offset: 0, of };
        let x0 = nhwc_to_nchw(base_image, 1, RGB, h, w);
        let traj = self.base().invert(gpu, prompt, &x0, steps, (h, w), None, &mut p)?;
        let cond = self.sr_cond(base_image, 1, (h, w), sr)?;
        let k = StageCond { image: &cond, channels: RGB, class_label: Some(self.index.sr_noise_level as f32) };
        let y0 = nhwc_to_nchw(full, 1, RGB, hh, ww);
        let mut p = StageProgress { stage: "invert-sr", offset: steps, ..p };
        let traj_sr = self.sr().invert(gpu, prompt, &y0, sr.steps, (hh, ww), Some(&k), &mut p)?;
        Ok((traj, traj_sr))
    }

    /// Real-image editing on the cascade: `full` is the picture at the final size, `base_image` the same at the
    /// base size (both NHWC `[1, ·, ·, 3]` in [-1, 1]). The base stage is DDIM-inverted from `base_image` and edited
    /// from its inversion by `method` (as Stable Diffusion's latents); the SR stage is inverted too, from `full`
    /// conditioned on `base_image` (augmented with `sr.aug_noise`), and every row is super-resolved with DDIM from
    /// that inversion, on its own edited base, by the same method, so that with `direct` the source row reproduces
    /// the input at full size. `inverted`: the two inversions made before (same prompt, step counts and pictures);
    /// else they are made here. `plan` None: the source alone (the reconstruction). Progress stages: "invert",
    /// "invert-sr", "base", "sr". Returns the output and the two inversions (base, SR).
    #[allow(clippy::too_many_arguments)]
    pub fn edit_image(
        &self,
        gpu: &Gpu,
        prompt: &str,
        plan: Option<&EditPlan>,
        r: &EditRun,
        sr: &SrRun,
        images: (&[f32], &[f32]),
        inverted: Option<(Trajectory, Trajectory)>,
        method: Method,
        progress: &mut dyn Progress,
    ) -> Result<(CascadeOutput, Trajectory, Trajectory)> {
        let (h, w) = r.sampling.latent_hw;
        check_pictures(images, (h, w))?;
        let (s, ss) = (r.sampling.steps, sr.steps);
        let ((traj, traj_sr), offset) = match inverted {
            Some(t) => (t, 0),
            None => (self.invert_image(gpu, prompt, images, s, (h, w), sr, &mut *progress, 2 * (s + ss))?, s + ss),
        };
        if traj.steps != s || traj_sr.steps != ss {
            return Err(Error::input(format!(
                "the inversions have {} and {} steps, the run {s} and {ss}; they must match",
                traj.steps, traj_sr.steps
            )));
        }
        let mut p = StageProgress { inner: progress, stage: "base", offset, of: offset + s + ss };
        let (prompts, e) = self.base().edit_inverted(gpu, prompt, plan, r, &traj, method, &mut p)?;
        let negative = if method == Method::NegativePrompt { prompt.to_string() } else { r.sampling.negative.clone() };
        let direct = method == Method::Direct;
        let sr =
            SrRun { scheduler: Some(schedulers::Kind::Ddim), latents: traj_sr.latent_nchw(gpu, ss)?, ..sr.clone() };
        let extras = SrExtras { negative, pin: direct.then_some(&traj_sr) };
        let mut p = StageProgress { stage: "sr", offset: offset + s, ..p };
        let out = self.finish(gpu, &prompts, e.samples, (h, w), &sr, extras, &mut p, e.attention, e.blend_masks)?;
        Ok((out, traj, traj_sr))
    }

    /// From the base samples (NHWC) to the output: SR, decoding, NaN checks.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        gpu: &Gpu,
        prompts: &[String],
        base: Vec<f32>,
        (h, w): (usize, usize),
        sr: &SrRun,
        extras: SrExtras,
        progress: &mut StageProgress,
        attention: Option<(Vec<f32>, usize, usize)>,
        blend_masks: Option<Vec<Vec<f32>>>,
    ) -> Result<CascadeOutput> {
        let b = prompts.len();
        finite(&base, "the base stage's output")?;
        let y = self.super_resolve_with(gpu, prompts, &base, (h, w), sr, extras, progress)?;
        finite(&y, "the super-resolved image")?;
        let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
        let to01 = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| (x / 2.0 + 0.5).clamp(0.0, 1.0)).collect() };
        let base = nhwc_to_nchw(&base, b, RGB, h, w);
        let sr_out = nhwc_to_nchw(&y, b, RGB, hh, ww);
        Ok(CascadeOutput {
            base_images: to01(&base),
            base,
            base_hw: (h, w),
            images: to01(&sr_out),
            sr: sr_out,
            image_hw: (hh, ww),
            attention,
            blend_masks,
        })
    }

    /// The SR stage on base samples `base` (NHWC `[B, h, w, 3]`, one row per prompt): returns its final samples,
    /// NHWC `[B, 4h, 4w, 3]`.
    pub fn super_resolve(
        &self,
        gpu: &Gpu,
        prompts: &[String],
        base: &[f32],
        hw: (usize, usize),
        sr: &SrRun,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        self.super_resolve_with(gpu, prompts, base, hw, sr, SrExtras::default(), progress)
    }

    /// The SR stage's conditioning image for `b` base samples `base` (NHWC `[B, h, w, 3]`): clamped to [-1, 1],
    /// upsampled ×4 bilinearly and noise-augmented at `sr_noise_level` with `sr.aug_noise`; NHWC `[B, 4h, 4w, 3]`.
    fn sr_cond(&self, base: &[f32], b: usize, (h, w): (usize, usize), sr: &SrRun) -> Result<Vec<f32>> {
        let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
        if base.len() != b * h * w * RGB {
            return Err(Error::shape(
                "super-resolution",
                format!("base holds {} values for [{b}, {h}, {w}, 3]", base.len()),
            ));
        }
        if sr.aug_noise.len() != RGB * hh * ww {
            return Err(Error::shape(
                "super-resolution",
                format!("augmentation noise holds {} values, expected [1, 3, {hh}, {ww}]", sr.aug_noise.len()),
            ));
        }
        let clamped: Vec<f32> = base.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let up = upsample_bilinear(&clamped, b, h, w, RGB, SR_SCALE);
        let noise = nchw_to_nhwc(&sr.aug_noise, 1, RGB, hh, ww);
        augment(&self.sr_scheduler, &up, &noise, self.index.sr_noise_level)
    }

    #[allow(clippy::too_many_arguments)]
    fn super_resolve_with(
        &self,
        gpu: &Gpu,
        prompts: &[String],
        base: &[f32],
        (h, w): (usize, usize),
        sr: &SrRun,
        extras: SrExtras,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
        let cond = self.sr_cond(base, prompts.len(), (h, w), sr)?;
        let level = self.index.sr_noise_level;
        let guidance = sr.guidance.unwrap_or(self.index.sr_guidance_scale);
        let sampling = Sampling {
            scheduler: sr.scheduler,
            negative: extras.negative,
            ..Sampling::new(sr.steps, guidance, sr.latents.clone(), (hh, ww))
        };
        let g = Generate { prompts: prompts.to_vec(), sampling };
        let k = StageCond { image: &cond, channels: RGB, class_label: Some(level as f32) };
        self.sr().generate_pinned(gpu, &g, Some(&k), extras.pin, progress)
    }
}

/// What a real-image run changes in the SR stage: its unconditional prompt and the source pin.
#[derive(Default)]
struct SrExtras<'t> {
    negative: String,
    pin: Option<&'t Trajectory>,
}
