//! The library's entry point: [`Session::open`] picks the adapter and loads a model folder once (Stable Diffusion
//! or the pixel cascade, told apart by `model_index.json`); [`Session::run`] takes a [`Request`], runs it with a
//! [`Progress`] (which may cancel) and returns an [`Output`]. Nothing here prints or reads the environment.
//!
//! A request with an `image` edits that picture (`pipelines::inversion`): it is fitted, encoded, DDIM-inverted with
//! the prompt and edited from its inversion; it has no seed (a cascade's SR augmentation noise comes from seed 1).
//!
//! Seeds: a request's `seed` N draws the initial noise from our documented generator (`noise::gaussian`) in NCHW
//! order `[1, C, h, w]`; a cascade draws its SR augmentation noise from N + 1 and its SR initial noise from N + 2
//! (wrapping), both `[1, 3, H, W]`. Noise given as data replaces those draws.
pub mod output;
pub mod request;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::input_image::{Picture, Resize, fit, to_unit_nhwc};
use crate::models::cascade::{Cascade, CascadeIndex, SR_SCALE, is_cascade};
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::models::unet::UNet;
use crate::models::vae::DecodeOptions;
use crate::noise::gaussian;
use crate::p2p::EditPlan;
use crate::pictures::token_label;
use crate::pipelines::cascade::SrRun;
use crate::pipelines::{EditRun, Generate, Progress, Sampling};
use crate::tensor::DType;
use crate::text::Tokenizer;
use crate::weights::folder::{SR_UNET, TEXT_ENCODER, UNET, VAE};

pub use output::{AttentionMaps, Files, Output, Timings};
pub use request::{InitialNoise, Request};

/// Storage types: `f16`/`f32` force the text encoder's and UNet's (f16 needs SHADER_F16), else
/// [`LoadOptions::default_dtype`] (f16 on GPUs with SHADER_F16, f32 on CPU adapters); `vae_f16` the VAE's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Precision {
    pub f16: bool,
    pub f32: bool,
    pub vae_f16: bool,
}

impl Precision {
    /// (text encoder + UNet, VAE) storage types on `gpu`.
    pub fn resolve(&self, gpu: &Gpu) -> Result<(DType, DType)> {
        let need = |flag: &str| -> Result<()> {
            if gpu.has_f16() {
                Ok(())
            } else {
                Err(Error::input(format!("{flag}: adapter {} has no SHADER_F16", gpu.info.name)))
            }
        };
        let dtype = match (self.f16, self.f32) {
            (true, _) => {
                need("--f16")?;
                DType::F16
            }
            (false, true) => DType::F32,
            (false, false) => LoadOptions::default_dtype(gpu),
        };
        let vae = if self.vae_f16 {
            need("--vae-f16")?;
            DType::F16
        } else {
            DType::F32
        };
        Ok((dtype, vae))
    }
}

/// How to open a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The model folder.
    pub model: PathBuf,
    pub gpu: GpuOptions,
    pub precision: Precision,
    /// Weight-file variant (None: fp16 when running in f16 and every weighted component has fp16 files).
    pub variant: Option<String>,
    /// VAE decode tiling (Stable Diffusion).
    pub decode: DecodeOptions,
    /// Side of a decode tile in pixels (a multiple of the VAE's upscale factor); replaces `decode.tile`.
    pub vae_tile_px: Option<usize>,
}

impl SessionOptions {
    /// Defaults for `model`.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        SessionOptions {
            model: model.into(),
            gpu: GpuOptions::default(),
            precision: Precision::default(),
            variant: None,
            decode: DecodeOptions::default(),
            vae_tile_px: None,
        }
    }
}

/// The loaded pipeline.
pub enum Pipeline {
    Sd(Box<StableDiffusion>),
    Cascade(Box<Cascade>),
}

/// A GPU and a model loaded on it.
pub struct Session {
    pub gpu: Gpu,
    pub model_dir: PathBuf,
    pub pipeline: Pipeline,
    pub dtype: DType,
    pub vae_dtype: DType,
    /// Seconds `open` took to load the model.
    pub load_seconds: f64,
}

/// True when `dir` holds fp16-variant weights (`*.fp16.safetensors`, shards or their index).
fn has_fp16_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).any(|n| {
        n.ends_with(".fp16.safetensors")
            || n.ends_with(".fp16.safetensors.index.json")
            || (n.contains(".fp16-") && n.ends_with(".safetensors"))
    })
}

/// The weight variant to load: `given` when set; else `fp16` when the text encoder and UNet run in f16 and every
/// weighted component folder of `model` has fp16 files (half the bytes to read; the values are the same as an
/// f32 file rounded at load); else None (the plain files).
pub fn weight_variant(model: &Path, given: Option<&str>, dtype: DType, components: &[&str]) -> Option<String> {
    if let Some(v) = given {
        return Some(v.to_string());
    }
    (dtype == DType::F16 && components.iter().all(|c| has_fp16_files(&model.join(c)))).then(|| "fp16".to_string())
}

/// An initial noise `[1, C, h, w]` (NCHW), its `(h, w)`, and the seed it came from (None: data).
type Noise = (Vec<f32>, (usize, usize), Option<u64>);

/// The sample side of a UNet must be a multiple of this.
fn levels(u: &UNet) -> usize {
    1usize << (u.config.block_out_channels.len() - 1)
}

/// How a model's samples relate to pixels, for sizing the initial noise.
struct Geometry {
    channels: usize,
    /// Output image side / sample side.
    up: usize,
    /// The sample side must be a multiple of this.
    levels: usize,
    /// The default sample side.
    native: usize,
}

impl Session {
    /// Opens the adapter of `o.gpu` and loads `o.model`.
    pub fn open(o: &SessionOptions) -> Result<Session> {
        let gpu = Gpu::new(&o.gpu)?;
        Self::with_gpu(gpu, o)
    }

    /// Loads `o.model` on `gpu` (`o.gpu` is not used).
    pub fn with_gpu(gpu: Gpu, o: &SessionOptions) -> Result<Session> {
        let t0 = Instant::now();
        let (dtype, vae_dtype) = o.precision.resolve(&gpu)?;
        let dir = &o.model;
        let pipeline = if is_cascade(dir)? {
            let variant = weight_variant(dir, o.variant.as_deref(), dtype, &[TEXT_ENCODER, UNET, SR_UNET]);
            Pipeline::Cascade(Box::new(Cascade::load(&gpu, dir, &LoadOptions { dtype, vae_dtype, variant })?))
        } else {
            let variant = weight_variant(dir, o.variant.as_deref(), dtype, &[TEXT_ENCODER, UNET, VAE]);
            let mut sd = StableDiffusion::load(&gpu, dir, &LoadOptions { dtype, vae_dtype, variant })?;
            sd.vae.tiling = o.decode;
            if let Some(px) = o.vae_tile_px {
                let up = sd.vae.config.upscale();
                if px == 0 || px % up != 0 {
                    return Err(Error::input(format!("--vae-tile-size must be a positive multiple of {up}, got {px}")));
                }
                sd.vae.tiling.tile = Some(px / up);
            }
            Pipeline::Sd(Box::new(sd))
        };
        Ok(Session {
            gpu,
            model_dir: dir.clone(),
            pipeline,
            dtype,
            vae_dtype,
            load_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        match &self.pipeline {
            Pipeline::Sd(m) => &m.tokenizer,
            Pipeline::Cascade(m) => &m.tokenizer,
        }
    }

    fn index(&self) -> Option<&CascadeIndex> {
        match &self.pipeline {
            Pipeline::Sd(_) => None,
            Pipeline::Cascade(m) => Some(&m.index),
        }
    }

    /// The base stage's step count of `r` (the request's, else the model's, else 50).
    pub fn steps(&self, r: &Request) -> usize {
        r.steps.or(self.index().and_then(|i| i.num_inference_steps)).unwrap_or(50)
    }

    /// Checks `r` against the model without running it; returns its edit plan (None: a plain generation).
    pub fn plan(&self, r: &Request) -> Result<Option<EditPlan>> {
        r.validate()?;
        if self.index().is_none() && (r.sr_steps.is_some() || r.sr_guidance.is_some()) {
            return Err(Error::input("--sr-steps and --sr-guidance need a cascade model (P2PCascadePipeline)"));
        }
        if !r.is_edit() {
            return Ok(None);
        }
        Ok(Some(EditPlan::new(&r.edit_spec()?, self.tokenizer(), self.steps(r))?))
    }

    /// Checks everything about `r` that can fail before sampling (the plan, the size, the noise given as data).
    pub fn check(&self, r: &Request) -> Result<()> {
        self.plan(r)?;
        if let Some(pic) = &r.image {
            self.fitted_picture(r, pic)?;
        }
        self.initial_noise(r, 0).map(|_| ())
    }

    fn geometry(&self) -> Geometry {
        match &self.pipeline {
            Pipeline::Sd(sd) => Geometry {
                channels: sd.unet.config.in_channels,
                up: sd.vae.config.upscale(),
                levels: levels(&sd.unet),
                native: sd.unet.config.sample_size,
            },
            Pipeline::Cascade(m) => Geometry {
                channels: 3,
                up: SR_SCALE,
                // The base side must suit the base UNet, and 4× it the SR UNet.
                levels: levels(&m.unet).max(levels(&m.sr_unet).div_ceil(SR_SCALE)),
                native: m.unet.config.sample_size,
            },
        }
    }

    /// The image size of `r` in pixels (`--height/--width`, else the model's native size), checked against the
    /// model's grid.
    fn pixel_size(&self, r: &Request) -> Result<(usize, usize)> {
        let g = self.geometry();
        let native = g.native * g.up;
        let (ph, pw) = (r.height.unwrap_or(native), r.width.unwrap_or(native));
        let grid = g.up * g.levels;
        if ph == 0 || pw == 0 || ph % grid != 0 || pw % grid != 0 {
            return Err(Error::input(format!(
                "--height and --width must be positive multiples of {grid}, got {ph}x{pw}"
            )));
        }
        Ok((ph, pw))
    }

    /// The picture of a real-image request fitted to the run's size, as the model sees it.
    fn fitted_picture(&self, r: &Request, pic: &Picture) -> Result<Picture> {
        let (ph, pw) = self.pixel_size(r)?;
        let g = self.geometry();
        let (lh, lw) = (ph / g.up, pw / g.up);
        if (pic.height as usize) < lh || (pic.width as usize) < lw {
            return Err(Error::input(format!(
                "image: {}x{} is smaller than the model's latent grid {lw}x{lh} at {pw}x{ph}; use a larger picture",
                pic.width, pic.height
            )));
        }
        fit(pic, (ph, pw), r.resize_mode()?)
    }

    /// The initial noise `[1, C, h, w]`, its `(h, w)`, and the seed used (None: the noise came as data).
    fn initial_noise(&self, r: &Request, seed: u64) -> Result<Noise> {
        let g = self.geometry();
        let (data, hw, used) = match &r.latents {
            None if r.image.is_some() => {
                let (h, w) = self.pixel_size(r)?;
                (Vec::new(), (h / g.up, w / g.up), None)
            }
            Some(n) => {
                let [_, lc, h, w] = n.shape;
                if lc != g.channels {
                    return Err(Error::input(format!("--latents has {lc} channels; the model takes {}", g.channels)));
                }
                if r.height.is_some() || r.width.is_some() {
                    return Err(Error::input(
                        "--height/--width cannot be combined with --latents (the latent sets the size)",
                    ));
                }
                (n.latents.clone(), (h, w), None)
            }
            None => {
                let (ph, pw) = self.pixel_size(r)?;
                let (h, w) = (ph / g.up, pw / g.up);
                (gaussian(seed, g.channels * h * w), (h, w), Some(seed))
            }
        };
        if hw.0 % g.levels != 0 || hw.1 % g.levels != 0 {
            return Err(Error::input(format!(
                "latent size {}x{} must be a multiple of {} for this model",
                hw.0, hw.1, g.levels
            )));
        }
        Ok((data, hw, used))
    }

    /// Runs `r`. `progress` sees every UNet evaluation and may cancel ([`Error::Cancelled`]); nothing is written.
    pub fn run(&self, r: &Request, progress: &mut dyn Progress) -> Result<Output> {
        let t0 = Instant::now();
        let plan = self.plan(r)?;
        let tok = self.tokenizer();
        let prompts = plan.as_ref().map_or_else(|| vec![r.prompt.clone()], |p| p.prompts.clone());
        let mut warnings = Vec::new();
        for p in &prompts {
            if let Some(cut) = tok.encode(p)?.truncated {
                warnings.push(format!("prompt longer than {} tokens; cut: {cut:?}", tok.max_len()));
            }
        }
        // A real image has no seed of its own; the cascade's SR augmentation noise then comes from seed 0 + 1.
        let seed = if r.image.is_some() { 0 } else { r.seed.unwrap_or_else(random_seed) };
        let (data, hw, mut used) = self.initial_noise(r, seed)?;
        let kind = r.scheduler_kind()?;
        let index = self.index();
        let guidance = r.guidance.or(index.and_then(|i| i.guidance_scale)).unwrap_or(7.5);
        let steps = self.steps(r);
        let sampling = Sampling {
            negative: r.negative_prompt.clone(),
            steps,
            guidance,
            scheduler: kind,
            latents: data.clone(),
            latent_hw: hw,
        };
        let generate = || Generate { prompts: prompts.clone(), sampling: sampling.clone() };
        let edit_run = || EditRun {
            sampling: sampling.clone(),
            self_max_res: r.self_max_res,
            blend_res: r.blend_res,
            attention_res: r.attention.then_some(r.attention_res),
        };
        let b = prompts.len();
        let gpu = &self.gpu;
        let mut noise = vec![("latents", vec![1, self.geometry().channels, hw.0, hw.1], data.clone())];
        let input = match &r.image {
            Some(pic) => Some(self.fitted_picture(r, pic)?),
            None => None,
        };
        if input.is_some() {
            // No initial noise was drawn: the inversion starts the run.
            noise.clear();
        }
        let (images, image_hw, raw, attention, masks) = match &self.pipeline {
            Pipeline::Sd(sd) => {
                let c = sd.unet.config.in_channels;
                let mut raw = Vec::new();
                let out = match (&input, &plan) {
                    (Some(pic), plan) => {
                        let method = r.inversion_method()?.unwrap_or_default();
                        let image = to_unit_nhwc(pic);
                        let (out, traj) =
                            sd.edit_image(gpu, &r.prompt, plan.as_ref(), &edit_run(), &image, method, progress)?;
                        raw.push(("inversion_latents", vec![steps + 1, c, hw.0, hw.1], traj.to_nchw(gpu)?));
                        out
                    }
                    (None, None) => sd.generate(gpu, &generate(), progress)?,
                    (None, Some(plan)) => sd.edit(gpu, plan, &edit_run(), progress)?,
                };
                raw.insert(0, ("latents", vec![b, c, hw.0, hw.1], out.latents));
                (out.images, out.image_hw, raw, out.attention, out.blend_masks)
            }
            Pipeline::Cascade(m) => {
                let (hh, ww) = (hw.0 * SR_SCALE, hw.1 * SR_SCALE);
                let sr_shape = vec![1, 3, hh, ww];
                let given = r.latents.as_ref();
                // SR noises from the data when given, else from the seed (+1, +2); see models::cascade.
                let sr_noise = |from: Option<&Vec<f32>>, name: &str, offset: u64| -> Result<Vec<f32>> {
                    match from {
                        Some(d) if d.len() == 3 * hh * ww => Ok(d.clone()),
                        Some(d) => Err(Error::input(format!(
                            "--latents: `{name}` holds {} values, expected {sr_shape:?} (4× the base noise)",
                            d.len()
                        ))),
                        None => Ok(gaussian(seed.wrapping_add(offset), 3 * hh * ww)),
                    }
                };
                let aug = given.and_then(|n| n.sr_aug_noise.as_ref());
                let srl = given.and_then(|n| n.sr_latents.as_ref());
                if used.is_none() && (aug.is_none() || srl.is_none()) {
                    used = Some(seed);
                }
                let aug_noise = sr_noise(aug, "sr_aug_noise", 1)?;
                let sr_latents = sr_noise(srl, "sr_latents", 2)?;
                noise.push(("sr_aug_noise", sr_shape.clone(), aug_noise.clone()));
                noise.push(("sr_latents", sr_shape, sr_latents.clone()));
                let sr = SrRun { steps: 0, guidance: r.sr_guidance, scheduler: None, aug_noise, latents: sr_latents };
                let sr_steps = r.sr_steps.or(m.index.sr_num_inference_steps).unwrap_or(steps);
                let sr = SrRun { steps: sr_steps, ..sr };
                let mut inversions = Vec::new();
                let out = match (&input, &plan) {
                    (Some(pic), plan) => {
                        let method = r.inversion_method()?.unwrap_or_default();
                        let full = to_unit_nhwc(pic);
                        let base_image = to_unit_nhwc(&fit(pic, hw, Resize::Stretch)?);
                        let images = (full.as_slice(), base_image.as_slice());
                        let run =
                            m.edit_image(gpu, &r.prompt, plan.as_ref(), &edit_run(), &sr, images, method, progress);
                        let (out, base_inv, sr_inv) = run?;
                        inversions.push(("inversion_latents", vec![steps + 1, 3, hw.0, hw.1], base_inv.to_nchw(gpu)?));
                        inversions.push(("sr_inversion_latents", vec![sr_steps + 1, 3, hh, ww], sr_inv.to_nchw(gpu)?));
                        out
                    }
                    (None, None) => m.generate(gpu, &generate(), &sr, progress)?,
                    (None, Some(plan)) => m.edit(gpu, plan, &edit_run(), &sr, progress)?,
                };
                let base_shape = vec![b, 3, hw.0, hw.1];
                let mut raw =
                    vec![("latents", base_shape.clone(), out.base), ("base_images", base_shape, out.base_images)];
                raw.extend(inversions);
                (out.images, out.image_hw, raw, out.attention, out.blend_masks)
            }
        };
        let attention = match attention {
            Some((sum, res, evaluations)) => {
                let mut labels = Vec::new();
                for p in &prompts {
                    let enc = tok.encode(p)?;
                    labels.push(enc.tokens[..enc.length].iter().map(|t| token_label(t)).collect());
                }
                Some(AttentionMaps { sum, res, keys: tok.max_len(), evaluations, labels })
            }
            None => None,
        };
        Ok(Output {
            prompts,
            images,
            image_hw,
            quantize: r.quantize(),
            raw,
            noise,
            attention,
            blend_masks: masks,
            sample_hw: hw,
            seed: used,
            input,
            warnings,
            timings: Timings { run: t0.elapsed().as_secs_f64() },
        })
    }
}

/// A seed from the clock, for requests without one (reported in `Output::seed`).
pub fn random_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
