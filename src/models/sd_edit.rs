//! Prompt-to-Prompt editing on the Stable Diffusion pipeline: all prompts `[source, targets]` run as one CFG batch
//! `[uncond × B, cond × B]`; every cross-attention layer applies the edit of the current UNet evaluation (its
//! window row rewritten on the GPU each step), the self-attention layers inject the source's maps inside the self
//! window, the cross maps are stored for local blending and pictures, and blending follows each scheduler step.
//! Two recordings of the UNet call (with and without self-injection) are made once and replayed; the scheduler
//! step, guidance and local blending (masks included) run on the GPU in the same submission as the UNet, and the
//! samples, stores and last masks are read back once, at the end.
//!
//! The loop belongs to [`Denoiser`], so that every pipeline edits its (first) denoising stage the same way:
//! Stable Diffusion on its latents, then the VAE; the pixel cascade on its base images, then super-resolution.
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{AttnHooks, Ctx, StoreAt};
use crate::ops::attention::CrossEdit;
use crate::ops::blend::LocalBlend;
use crate::p2p::EditPlan;
use crate::schedulers;
use crate::tensor::{DType, Tensor};

use super::sd::{Denoiser, GpuSampler, StableDiffusion, nhwc_to_nchw};

/// Sampling options of an edit.
#[derive(Clone, Debug)]
pub struct EditRun {
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: Option<schedulers::Kind>,
    /// Initial latent `[1, C, h, w]` (NCHW), shared by every prompt.
    pub latents: Vec<f32>,
    pub latent_hw: (usize, usize),
    /// Self-attention injection in layers with at most `self_max_res²` query tokens (16 for SD).
    pub self_max_res: usize,
    /// Side of the maps local blending reads (None: `UNet::default_map_side`, 16 for SD at 512 px).
    pub blend_res: Option<usize>,
    /// Also keep the maps at this side, for pictures (`Some(None)`: the default side).
    pub attention_res: Option<Option<usize>>,
}

/// The result of an edit, NCHW, row 0 = source, then the targets.
#[derive(Clone, Debug)]
pub struct Edited {
    pub latents: Vec<f32>,
    pub images: Vec<f32>,
    pub image_hw: (usize, usize),
    /// The sum over UNet evaluations of the stored maps at `attention_res`, `[B, res², keys]`, and the number of
    /// evaluations.
    pub attention: Option<(Vec<f32>, usize, usize)>,
    /// The last local-blend masks used, `[B][h·w]`.
    pub blend_masks: Option<Vec<Vec<f32>>>,
}

impl StableDiffusion {
    /// Runs the edit `plan` (its prompts are `[source, targets]`).
    pub fn edit(
        &self,
        gpu: &Gpu,
        plan: &EditPlan,
        r: &EditRun,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Edited> {
        let e = self.denoiser().edit(gpu, plan, r, progress)?;
        let (b, c, (h, w)) = (plan.prompts.len(), self.unet.config.in_channels, r.latent_hw);
        let images = self.decode(gpu, &e.samples, b, (h, w))?;
        let scale = self.vae.config.upscale();
        Ok(Edited {
            latents: nhwc_to_nchw(&e.samples, b, c, h, w),
            images,
            image_hw: (h * scale, w * scale),
            attention: e.attention,
            blend_masks: e.blend_masks,
        })
    }
}

/// What the edited stage produced, before decoding.
#[derive(Clone, Debug)]
pub struct EditedSamples {
    /// The final samples, NHWC `[B, h, w, C]`, row 0 = source.
    pub samples: Vec<f32>,
    /// As [`Edited::attention`].
    pub attention: Option<(Vec<f32>, usize, usize)>,
    /// As [`Edited::blend_masks`].
    pub blend_masks: Option<Vec<Vec<f32>>>,
}

impl Denoiser<'_> {
    /// Runs the edit `plan` (its prompts are `[source, targets]`) on this stage; returns the final samples.
    pub fn edit(
        &self,
        gpu: &Gpu,
        plan: &EditPlan,
        r: &EditRun,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EditedSamples> {
        let b = plan.prompts.len();
        let c = self.unet.config.in_channels;
        if self.unet.config.out_channels != c {
            return Err(Error::msg(format!(
                "edit: the UNet maps {c} channels to {}; an edited stage must map its sample to itself",
                self.unet.config.out_channels
            )));
        }
        let (h, w) = r.latent_hw;
        if r.latents.len() != c * h * w {
            return Err(Error::shape(
                "edit",
                format!("latents hold {} values, expected [1, {c}, {h}, {w}]", r.latents.len()),
            ));
        }
        if plan.keys != self.tokenizer.max_len() {
            return Err(Error::msg(format!(
                "edit plan has {} keys, the tokenizer {}",
                plan.keys,
                self.tokenizer.max_len()
            )));
        }
        let mut sched = schedulers::build(self.scheduler, r.scheduler, r.steps)?;
        if plan.alpha.len() != r.steps + 1 {
            return Err(Error::msg(format!("edit plan made for {} steps, run has {}", plan.alpha.len() - 1, r.steps)));
        }
        let text = self.text_encoder.encode(gpu, &self.encode_ids(&plan.prompts, &r.negative)?)?;
        let edit = CrossEdit::new(gpu, &plan.edit_data(0)?)?;
        let keys = plan.keys;

        // Stores: local blending and pictures (one buffer per distinct resolution).
        let default_side = || {
            self.unet
                .default_map_side(h, w)
                .ok_or_else(|| Error::msg(format!("this UNet has no cross-attention layer at {h}x{w} / 4 or above")))
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
            return Err(Error::msg(format!(
                "local blending and attention pictures need a square image for now (latents are {h}x{w})"
            )));
        }
        let mut res_list: Vec<usize> = blend_res.into_iter().collect();
        if let Some(a) = attention_res {
            if !res_list.contains(&a) {
                res_list.push(a);
            }
        }
        let mut store_bufs = Vec::new();
        for &res in &res_list {
            let layers = self.unet.cross_layers_with_tokens(h, w, res * res);
            if layers == 0 {
                return Err(Error::msg(format!(
                    "no cross-attention layer works at {res}x{res} for {h}x{w} latents; choose another resolution"
                )));
            }
            let buf = Tensor::from_f32(gpu, &[b, res * res, keys], DType::F32, &vec![0.0; b * res * res * keys])?;
            store_bufs.push((res, layers, buf));
        }
        let stores: Vec<StoreAt> =
            store_bufs.iter().map(|(res, layers, buf)| StoreAt { tokens: res * res, layers: *layers, buf }).collect();

        // The UNet call, recorded twice on the same persistent inputs: with and without self-injection.
        let dt = self.unet.dtype;
        let mut cx = Ctx::new(gpu, dt);
        let sample = cx.alloc(&[2 * b, h, w, c])?;
        let tsteps = cx.alloc_as(&[2 * b], DType::F32)?;
        let mut hooks = AttnHooks {
            edit: &edit,
            src_row: b,
            inject_self: true,
            self_max_tokens: r.self_max_res * r.self_max_res,
            stores,
        };
        let out_inject = self.unet.forward_hooked(&mut cx, &sample, &tsteps, &text, Some(&hooks))?;
        let rec_inject = std::mem::take(&mut cx.rec);
        hooks.inject_self = false;
        let out_plain = self.unet.forward_hooked(&mut cx, &sample, &tsteps, &text, Some(&hooks))?;
        let rec_plain = std::mem::take(&mut cx.rec);

        // The sample, the step and local blending on the GPU; the blend reads the first store (its side).
        let mut gs = GpuSampler::new(
            gpu,
            sched.as_ref(),
            &r.latents,
            b,
            (h, w, c),
            &sample,
            &[&out_inject, &out_plain],
            r.guidance,
        )?;
        let blend = match &plan.blend {
            Some(bp) => {
                Some((LocalBlend::new(gpu, &store_bufs[0].2, &bp.positions, bp.threshold, &gs.x)?, bp.start_step))
            }
            None => None,
        };
        let total = sched.timesteps().len();
        let mut blended = false;
        for i in 0..total {
            let ts = sched.timesteps()[i] as f32;
            tsteps.write_f32(gpu, &vec![ts; 2 * b])?;
            edit.write_alpha(gpu, &plan.edit_data(i)?.alpha)?;
            let inject = plan.self_steps.0 <= i && i < plan.self_steps.1;
            let (rec, output) = if inject { (&rec_inject, 0) } else { (&rec_plain, 1) };
            gs.prepare(gpu, sched.as_mut(), i, output)?;
            let lb = blend.as_ref().filter(|(_, start)| i >= *start).map(|(lb, _)| lb);
            blended |= lb.is_some();
            gs.submit(gpu, rec, lb.into_iter().flat_map(LocalBlend::dispatches))?;
            progress(i + 1, total);
        }
        let x = gs.finish(gpu)?;
        drop((rec_inject, rec_plain, cx));

        let blend_masks = match &blend {
            Some((lb, _)) if blended => Some(lb.read_masks(gpu)?),
            _ => None,
        };
        let attention = match attention_res.and_then(|a| store_bufs.iter().find(|(res, _, _)| *res == a)) {
            Some((res, _, buf)) => Some((buf.to_f32(gpu)?, *res, total)),
            None => None,
        };
        Ok(EditedSamples { samples: x, attention, blend_masks })
    }
}
