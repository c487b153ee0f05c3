//! The Stable Diffusion 1.x/2.x text-to-image pipeline (diffusers' `StableDiffusionPipeline`) and its
//! Prompt-to-Prompt edit: tokenise, encode `[negative × B, prompts]`, sample the latents on the GPU with the one
//! loop (`Denoiser::generate` / `Denoiser::edit`), then decode `latents / scaling_factor` with the VAE (one image
//! at a time, whole or in blended tiles) and map to `[0, 1]`. Real images ([`StableDiffusion::edit_image`]): the
//! picture encoded to the VAE encoder's posterior mean times `scaling_factor`, DDIM-inverted with the source prompt
//! (`pipelines::inversion`), then edited with DDIM from the inversion by one of the three methods.
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::sd::{StableDiffusion, nhwc_to_nchw};
use crate::p2p::EditPlan;
use crate::tensor::DType;

use super::inversion::{Method, Trajectory};
use super::progress::{Progress, StageProgress};
use super::stage::{Denoiser, EditRun, Generate};

/// What a run produced, NCHW, row b = prompt b (an edit: source, then targets).
#[derive(Clone, Debug)]
pub struct Generated {
    /// `[B, C, h, w]`: the final latents, before decoding.
    pub latents: Vec<f32>,
    /// `[B, 3, H, W]`: the images in [0, 1].
    pub images: Vec<f32>,
    pub image_hw: (usize, usize),
    /// Edits: as `EditedSamples::attention`.
    pub attention: Option<(Vec<f32>, usize, usize)>,
    /// Edits: the last local-blend masks used, `[B][h·w]`.
    pub blend_masks: Option<Vec<Vec<f32>>>,
}

impl StableDiffusion {
    /// The text-conditioned denoising stage of this pipeline (tokenizer, text encoder, UNet, scheduler).
    pub fn denoiser(&self) -> Denoiser<'_> {
        Denoiser {
            tokenizer: &self.tokenizer,
            text_encoder: &self.text_encoder,
            unet: &self.unet,
            scheduler: &self.scheduler,
        }
    }

    /// Runs text-to-image.
    pub fn generate(&self, gpu: &Gpu, g: &Generate, progress: &mut dyn Progress) -> Result<Generated> {
        let total = self.denoiser().evaluations(g.sampling.scheduler, g.sampling.steps)?;
        let x = self.denoiser().generate(gpu, g, None, &mut StageProgress::single(progress, total))?;
        self.finish(gpu, x, g.prompts.len(), g.sampling.latent_hw, None, None)
    }

    /// Runs the edit `plan` (its prompts are `[source, targets]`).
    pub fn edit(&self, gpu: &Gpu, plan: &EditPlan, r: &EditRun, progress: &mut dyn Progress) -> Result<Generated> {
        let total = self.denoiser().evaluations(r.sampling.scheduler, r.sampling.steps)?;
        let e = self.denoiser().edit(gpu, plan, r, &mut StageProgress::single(progress, total))?;
        self.finish(gpu, e.samples, plan.prompts.len(), r.sampling.latent_hw, e.attention, e.blend_masks)
    }

    /// Encodes a picture NHWC `[1, H, W, 3]` in [-1, 1] to latents NCHW `[1, C, h, w]`: the posterior mean times
    /// `scaling_factor` (the reference's encode; a sample of the posterior would add noise to every edit).
    pub fn encode(&self, gpu: &Gpu, image: &[f32], (hh, ww): (usize, usize)) -> Result<Vec<f32>> {
        let enc = self.encoder(gpu)?;
        let up = self.vae.config.upscale();
        // Tiled over the decoder's budget and options (`--vae-tile`, `--vae-budget`, `--vae-tile-size`).
        let mean = enc.encode_mean(gpu, image, (hh, ww), &self.vae.tiling)?;
        if mean.iter().any(|v| !v.is_finite()) {
            return Err(Error::msg("the VAE encoder returned non-finite values"));
        }
        let sf = self.vae.config.scaling_factor;
        let z: Vec<f32> = mean.iter().map(|&v| (v as f64 * sf) as f32).collect();
        Ok(nhwc_to_nchw(&z, 1, enc.config.latent_channels, hh / up, ww / up))
    }

    /// DDIM-inverts `image` (NHWC `[1, H, W, 3]` in [-1, 1], encoded first) with `prompt` over `steps` steps at
    /// latent size `hw`. `progress` sees stage "invert" as evaluations `offset .. offset + steps` of `of`.
    #[allow(clippy::too_many_arguments)]
    pub fn invert_image(
        &self,
        gpu: &Gpu,
        prompt: &str,
        image: &[f32],
        steps: usize,
        (h, w): (usize, usize),
        progress: &mut dyn Progress,
        (offset, of): (usize, usize),
    ) -> Result<Trajectory> {
        let up = self.vae.config.upscale();
        let x0 = self.encode(gpu, image, (h * up, w * up))?;
        let mut inv = StageProgress { inner: progress, stage: "invert", offset, of };
        self.denoiser().invert(gpu, prompt, &x0, steps, (h, w), None, &mut inv)
    }

    /// Real-image editing: inverts `image` (as [`Self::invert_image`]) with `prompt` (the source) over
    /// `r.sampling.steps` DDIM steps, unless its inversion is given (`inverted`, made with the same prompt and step
    /// count), then runs `plan` (None: the source alone, the reconstruction) with DDIM from the inversion by
    /// `method`. `r.sampling.latents` and its scheduler are replaced. Progress: the inversion is stage "invert",
    /// the edit "base". Returns the images and the inversion.
    #[allow(clippy::too_many_arguments)]
    pub fn edit_image(
        &self,
        gpu: &Gpu,
        prompt: &str,
        plan: Option<&EditPlan>,
        r: &EditRun,
        image: &[f32],
        inverted: Option<Trajectory>,
        method: Method,
        progress: &mut dyn Progress,
    ) -> Result<(Generated, Trajectory)> {
        let (h, w) = r.sampling.latent_hw;
        let steps = r.sampling.steps;
        let (traj, offset) = match inverted {
            Some(t) => (t, 0),
            None => (self.invert_image(gpu, prompt, image, steps, (h, w), &mut *progress, (0, 2 * steps))?, steps),
        };
        if traj.steps != steps || traj.hw != (h, w) {
            return Err(Error::input(format!(
                "the inversion has {} steps at {:?}, the run {steps} at {:?}; they must match",
                traj.steps,
                traj.hw,
                (h, w)
            )));
        }
        let mut edit = StageProgress { inner: progress, stage: "base", offset, of: offset + steps };
        let (prompts, e) = self.denoiser().edit_inverted(gpu, prompt, plan, r, &traj, method, &mut edit)?;
        let out = self.finish(gpu, e.samples, prompts.len(), (h, w), e.attention, e.blend_masks)?;
        Ok((out, traj))
    }

    fn finish(
        &self,
        gpu: &Gpu,
        x: Vec<f32>,
        b: usize,
        (h, w): (usize, usize),
        attention: Option<(Vec<f32>, usize, usize)>,
        blend_masks: Option<Vec<Vec<f32>>>,
    ) -> Result<Generated> {
        let c = self.unet.config.in_channels;
        let images = self.decode(gpu, &x, b, (h, w))?;
        let scale = self.vae.config.upscale();
        Ok(Generated {
            latents: nhwc_to_nchw(&x, b, c, h, w),
            images,
            image_hw: (h * scale, w * scale),
            attention,
            blend_masks,
        })
    }

    /// Decodes NHWC latents `[B, h, w, C]` to NCHW images in [0, 1]; fails on NaN/Inf instead of returning a
    /// black or broken image.
    pub fn decode(&self, gpu: &Gpu, x: &[f32], b: usize, (h, w): (usize, usize)) -> Result<Vec<f32>> {
        let sf = self.vae.config.scaling_factor;
        let z: Vec<f32> = x.iter().map(|&v| (v as f64 / sf) as f32).collect();
        // One image at a time, each whole or in blended tiles (`VaeDecoder::decode_plan`).
        let raw = self.vae.decode(gpu, &z, b, (h, w))?;
        if let Some(bad) = raw.iter().find(|v| !v.is_finite()) {
            return Err(Error::msg(format!(
                "the decoded image holds {bad} values (numeric overflow{}); no image written",
                if self.vae.dtype == DType::F16 { "; the f16 VAE overflows, use an f32 VAE" } else { "" }
            )));
        }
        let up = self.vae.config.upscale();
        let (hh, ww, oc) = (h * up, w * up, self.vae.config.out_channels);
        let img01: Vec<f32> = raw.iter().map(|&v| (v / 2.0 + 0.5).clamp(0.0, 1.0)).collect();
        Ok(nhwc_to_nchw(&img01, b, oc, hh, ww))
    }
}
