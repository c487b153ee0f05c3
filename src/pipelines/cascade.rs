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
        self.finish(gpu, &g.prompts, base, g.sampling.latent_hw, sr, &mut p, None, None)
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
        self.finish(gpu, &plan.prompts, e.samples, r.sampling.latent_hw, sr, &mut p, e.attention, e.blend_masks)
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
        progress: &mut StageProgress,
        attention: Option<(Vec<f32>, usize, usize)>,
        blend_masks: Option<Vec<Vec<f32>>>,
    ) -> Result<CascadeOutput> {
        let b = prompts.len();
        finite(&base, "the base stage's output")?;
        let y = self.super_resolve(gpu, prompts, &base, (h, w), sr, progress)?;
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
        (h, w): (usize, usize),
        sr: &SrRun,
        progress: &mut StageProgress,
    ) -> Result<Vec<f32>> {
        let b = prompts.len();
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
        let level = self.index.sr_noise_level;
        let cond = augment(&self.sr_scheduler, &up, &noise, level)?;
        let guidance = sr.guidance.unwrap_or(self.index.sr_guidance_scale);
        let sampling =
            Sampling { scheduler: sr.scheduler, ..Sampling::new(sr.steps, guidance, sr.latents.clone(), (hh, ww)) };
        let g = Generate { prompts: prompts.to_vec(), sampling };
        let k = StageCond { image: &cond, channels: RGB, class_label: Some(level as f32) };
        self.sr().generate(gpu, &g, Some(&k), progress)
    }
}
