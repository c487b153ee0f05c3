//! The Stable Diffusion 1.x/2.x text-to-image pipeline (diffusers' `StableDiffusionPipeline`) on our models:
//! tokenise, encode `[negative × B, prompts]`, then per step run the UNet on the doubled latents with
//! classifier-free guidance and the scheduler step, both on the GPU ([`GpuSampler`]); finally decode
//! `latents / scaling_factor` with the VAE and map to `[0, 1]`. The UNet call is recorded once and replayed every
//! step with new inputs; the latents are read back once, at the end.
use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::nn::Ctx;
use crate::ops::lincomb::{ScaleInput, StepProgram};
use crate::ops::resample::concat_channels;
use crate::schedulers::{self, Scheduler, SchedulerConfig};
use crate::tensor::{DType, Tensor};
use crate::text::Tokenizer;

use super::clip::ClipTextModel;
use super::unet::UNet;
use super::vae::VaeDecoder;

/// How to load a model folder.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Storage type of the text encoder and UNet.
    pub dtype: DType,
    /// Storage type of the VAE decoder (f32 unless asked: an f16 SD VAE overflows to black images).
    pub vae_dtype: DType,
    /// Weight-file variant, e.g. "fp16" for `*.fp16.safetensors`.
    pub variant: Option<String>,
}

/// The library default is f32 everywhere (what the parity tests compare against); the command line starts
/// from [`LoadOptions::for_adapter`].
impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { dtype: DType::F32, vae_dtype: DType::F32, variant: None }
    }
}

impl LoadOptions {
    /// The text encoder's and UNet's default storage type on `gpu`: f16 where the adapter has SHADER_F16 and is
    /// not a CPU (software) adapter; f32 otherwise. On lavapipe/llvmpipe f16 is emulated and slower than f32,
    /// so CPU adapters keep f32 (and the CI tests keep their speed).
    pub fn default_dtype(gpu: &Gpu) -> DType {
        if gpu.has_f16() && gpu.info.device_type != wgpu::DeviceType::Cpu { DType::F16 } else { DType::F32 }
    }

    /// The defaults on `gpu`: [`LoadOptions::default_dtype`] for the text encoder and UNet, an f32 VAE.
    pub fn for_adapter(gpu: &Gpu) -> LoadOptions {
        LoadOptions { dtype: Self::default_dtype(gpu), ..Default::default() }
    }
}

pub struct StableDiffusion {
    pub tokenizer: Tokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet,
    pub vae: VaeDecoder,
    pub scheduler: SchedulerConfig,
}

/// One text-to-image run.
#[derive(Clone, Debug)]
pub struct Generate {
    pub prompts: Vec<String>,
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: Option<schedulers::Kind>,
    /// The initial latent `[1, C, h, w]` (NCHW, f32), shared by every prompt.
    pub latents: Vec<f32>,
    pub latent_hw: (usize, usize),
}

/// What a run produced, NCHW, row b = prompt b.
#[derive(Clone, Debug)]
pub struct Generated {
    /// `[B, C, h, w]`: the final latents, before decoding.
    pub latents: Vec<f32>,
    /// `[B, 3, H, W]`: the images in [0, 1].
    pub images: Vec<f32>,
    pub image_hw: (usize, usize),
}

/// `[B, C, H, W]` → `[B, H, W, C]`.
pub fn nchw_to_nhwc(x: &[f32], b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for n in 0..b {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((n * h + y) * w + xx) * c + ch] = x[((n * c + ch) * h + y) * w + xx];
                }
            }
        }
    }
    out
}

/// `[B, H, W, C]` → `[B, C, H, W]`.
pub fn nhwc_to_nchw(x: &[f32], b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for n in 0..b {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((n * c + ch) * h + y) * w + xx] = x[((n * h + y) * w + xx) * c + ch];
                }
            }
        }
    }
    out
}

/// One text-conditioned denoising stage: a tokenizer, a text encoder, a UNet and its scheduler. Stable Diffusion
/// has one (on latents); the pixel cascade has two (the base, which Prompt-to-Prompt edits, and the
/// super-resolution stage). The sampling loops live here (plain, below; edited, in `sd_edit`) and return the final
/// samples; each pipeline decodes them its own way.
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
    /// Token ids of the CFG batch `[negative × B, prompts]`, warning on stderr about truncated prompts.
    pub fn encode_ids(&self, prompts: &[String], negative: &str) -> Result<Vec<Vec<u32>>> {
        let mut rows = Vec::with_capacity(2 * prompts.len());
        for p in std::iter::repeat_n(negative, prompts.len()).chain(prompts.iter().map(String::as_str)) {
            let e = self.tokenizer.encode(p)?;
            if let Some(cut) = &e.truncated {
                eprintln!("warning: prompt longer than {} tokens; cut: {cut:?}", self.tokenizer.max_len());
            }
            rows.push(e.ids);
        }
        Ok(rows)
    }

    /// UNet evaluations of a run of `steps` steps with `kind` (None: the config's scheduler); PNDM makes S + 1.
    pub fn evaluations(&self, kind: Option<schedulers::Kind>, steps: usize) -> Result<usize> {
        Ok(schedulers::build(self.scheduler, kind, steps)?.timesteps().len())
    }

    /// Text-to-image sampling with classifier-free guidance (none at guidance 1) from `g.latents` (shared by every
    /// prompt), with the extra inputs `cond` of a conditioned stage; returns the final samples, NHWC `[B, h, w, C]`
    /// (C = the UNet's `out_channels`). `progress(step, total)` is called after each UNet evaluation is submitted (at most one
    /// runs behind). The UNet call is recorded once and replayed every step with new inputs; the sample stays on
    /// the GPU until the end.
    pub fn generate(
        &self,
        gpu: &Gpu,
        g: &Generate,
        cond: Option<&StageCond>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let b = g.prompts.len();
        if b == 0 {
            return Err(Error::msg("no prompt"));
        }
        if !g.guidance.is_finite() {
            return Err(Error::msg(format!("guidance must be a finite number, got {}", g.guidance)));
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
        let (h, w) = g.latent_hw;
        if g.latents.len() != c * h * w {
            return Err(Error::shape(
                "generate",
                format!("latents hold {} values, expected [1, {c}, {h}, {w}]", g.latents.len()),
            ));
        }
        if let Some(k) = cond {
            if k.image.len() != b * h * w * cc {
                return Err(Error::shape(
                    "generate",
                    format!("conditioning image holds {} values, expected [{b}, {h}, {w}, {cc}]", k.image.len()),
                ));
            }
        }
        let mut sched = schedulers::build(self.scheduler, g.scheduler, g.steps)?;
        // Guidance exactly 1 is U + (C − U) = C: the unconditional half is not run (as diffusers, which skips
        // classifier-free guidance for scales ≤ 1; other scales below 1 keep the formula).
        let cfg = g.guidance != 1.0;
        let rows = if cfg { 2 * b } else { b };
        let mut ids = self.encode_ids(&g.prompts, &g.negative)?;
        if !cfg {
            ids.drain(..b);
        }
        let text = self.text_encoder.encode(gpu, &ids)?;

        // The UNet call, recorded once on persistent inputs (with a conditioning image, the channel concatenation
        // is recorded in front of it).
        let dt = self.unet.dtype;
        let mut cx = Ctx::new(gpu, dt);
        let sample = cx.alloc(&[rows, h, w, c])?;
        let tsteps = cx.alloc_as(&[rows], DType::F32)?;
        let labels = match cond.and_then(|k| k.class_label) {
            Some(l) => Some(Tensor::from_f32(gpu, &[rows], DType::F32, &vec![l; rows])?),
            None => None,
        };
        // The conditioning image lives until the loop ends: dropped earlier, its buffer would go back to the pool
        // while the recording still reads it (the sample X, of the same size without CFG, would take it over).
        let image = match cond {
            Some(k) => Some(Tensor::from_f32(gpu, &[rows, h, w, cc], dt, &k.image.repeat(rows / b))?),
            None => None,
        };
        let input = match &image {
            Some(image) => {
                let cat = cx.alloc(&[rows, h, w, c + cc])?;
                concat_channels(gpu, &mut cx.rec, &sample, image, &cat)?;
                cat
            }
            None => sample.clone(),
        };
        let out = self.unet.forward_full(&mut cx, &input, &tsteps, labels.as_ref(), &text, None)?;
        let mut gs = GpuSampler::new(gpu, sched.as_ref(), &g.latents, b, (h, w, c), &sample, &[&out], g.guidance)?;
        let total = sched.timesteps().len();
        for i in 0..total {
            let t = sched.timesteps()[i] as f32;
            tsteps.write_f32(gpu, &vec![t; rows])?;
            gs.prepare(gpu, sched.as_mut(), i, 0)?;
            gs.submit(gpu, &cx.rec, std::iter::empty())?;
            progress(i + 1, total);
        }
        gs.finish(gpu)
    }
}

/// The sample and the scheduler step of one sampling loop, on the GPU: the sample X (f32 `[B, h, w, C]`, row b =
/// prompt b) is uploaded once; per UNet evaluation the host writes only small uniforms (the input scale and the
/// step program's coefficients, see `ops::lincomb`), and one submission runs the input preparation (`s·X` into
/// both halves of the UNet's CFG input), the caller's UNet recording, the step program (classifier-free guidance
/// folded into its `Out` terms) and whatever the caller appends (local blending). Nothing is read back until
/// [`GpuSampler::finish`]; one evaluation is kept in flight (each submission waits for the one before it).
pub(crate) struct GpuSampler {
    pub x: Tensor,
    prep: ScaleInput,
    step: StepProgram,
    pending: Option<wgpu::SubmissionIndex>,
}

impl GpuSampler {
    /// X = the shared initial latent `latents` (`[1, C, h, w]` NCHW) times the scheduler's `init_noise_sigma`, in
    /// each of `b` rows; `input` is the UNet's sample input `[2B, h, w, C]` (its dtype), `outputs` the UNet
    /// outputs (`[2B, h, w, C]`, uncond then cond) of the recordings the loop replays.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gpu: &Gpu,
        sched: &dyn Scheduler,
        latents: &[f32],
        b: usize,
        (h, w, c): (usize, usize, usize),
        input: &Tensor,
        outputs: &[&Tensor],
        guidance: f64,
    ) -> Result<GpuSampler> {
        let sigma = sched.init_noise_sigma() as f32;
        let one = nchw_to_nhwc(latents, 1, c, h, w);
        let x0: Vec<f32> = (0..b).flat_map(|_| one.iter().map(|v| v * sigma)).collect();
        let x = Tensor::from_f32(gpu, &[b, h, w, c], DType::F32, &x0)?;
        let prep = ScaleInput::new(gpu, &x, input)?;
        let step = StepProgram::new(gpu, &x, outputs, guidance, sched.history_slots())?;
        Ok(GpuSampler { x, prep, step, pending: None })
    }

    /// Writes the values of UNet evaluation `i` (reading output `output`): the input scale and the step program.
    pub(crate) fn prepare(&mut self, gpu: &Gpu, sched: &mut dyn Scheduler, i: usize, output: usize) -> Result<()> {
        self.prep.set(gpu, sched.input_scale(i))?;
        let ops = sched.program(i)?;
        self.step.load(gpu, output, &ops)
    }

    /// Submits input preparation, `unet`, the step and `after`, in one submission, then waits for the previous
    /// evaluation's submission.
    pub(crate) fn submit<'a>(
        &mut self,
        gpu: &Gpu,
        unet: &'a [Dispatch],
        after: impl Iterator<Item = &'a Dispatch>,
    ) -> Result<()> {
        let idx = {
            let (prep, step) = (&self.prep, &self.step);
            let after = after.map(|d| -> &Dispatch { d });
            gpu.run_seq(std::iter::once(prep.dispatch()).chain(unet).chain(step.dispatches()).chain(after))?
        };
        if let Some(prev) = self.pending.replace(idx) {
            gpu.wait_for(prev)?;
        }
        Ok(())
    }

    /// Downloads the final samples, NHWC `[B, h, w, C]` (waits for the GPU).
    pub(crate) fn finish(self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.x.to_f32(gpu)
    }
}

impl StableDiffusion {
    /// Loads a diffusers Stable Diffusion folder.
    pub fn load(gpu: &Gpu, dir: &Path, o: &LoadOptions) -> Result<StableDiffusion> {
        if !dir.is_dir() {
            return Err(Error::msg(format!("model folder {} does not exist", dir.display())));
        }
        let variant = o.variant.as_deref();
        let sub = |name: &str| -> Result<std::path::PathBuf> {
            let p = dir.join(name);
            if p.is_dir() { Ok(p) } else { Err(Error::msg(format!("{}: missing the {name}/ folder", dir.display()))) }
        };
        let text_encoder = ClipTextModel::load(gpu, &sub("text_encoder")?, variant, o.dtype)?;
        let tokenizer = Tokenizer::from_dir(sub("tokenizer")?, text_encoder.config.max_position_embeddings)?;
        let unet = UNet::load(gpu, &sub("unet")?, variant, o.dtype)?;
        let vae = VaeDecoder::load(gpu, &sub("vae")?, variant, o.vae_dtype)?;
        let scheduler = SchedulerConfig::read(&sub("scheduler")?)?;
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size {
            return Err(Error::msg(format!(
                "unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                unet.config.cross_attention_dim, text_encoder.config.hidden_size
            )));
        }
        if vae.config.latent_channels != unet.config.in_channels {
            return Err(Error::msg(format!(
                "vae latent_channels {} does not match unet in_channels {}",
                vae.config.latent_channels, unet.config.in_channels
            )));
        }
        Ok(StableDiffusion { tokenizer, text_encoder, unet, vae, scheduler })
    }

    /// The text-conditioned denoising stage of this pipeline (tokenizer, text encoder, UNet, scheduler).
    pub fn denoiser(&self) -> Denoiser<'_> {
        Denoiser {
            tokenizer: &self.tokenizer,
            text_encoder: &self.text_encoder,
            unet: &self.unet,
            scheduler: &self.scheduler,
        }
    }

    /// Token ids of the CFG batch `[negative × B, prompts]`, warning on stderr about truncated prompts.
    pub fn encode_ids(&self, prompts: &[String], negative: &str) -> Result<Vec<Vec<u32>>> {
        self.denoiser().encode_ids(prompts, negative)
    }

    /// Runs text-to-image; `progress(step, total)` is called after each UNet evaluation.
    pub fn generate(&self, gpu: &Gpu, g: &Generate, progress: &mut dyn FnMut(usize, usize)) -> Result<Generated> {
        let x = self.denoiser().generate(gpu, g, None, progress)?;
        let (b, c, (h, w)) = (g.prompts.len(), self.unet.config.in_channels, g.latent_hw);
        let images = self.decode(gpu, &x, b, (h, w))?;
        let scale = self.vae.config.upscale();
        Ok(Generated { latents: nhwc_to_nchw(&x, b, c, h, w), images, image_hw: (h * scale, w * scale) })
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
