//! The library's entry point: [`Session::open`] picks the adapter and loads a model folder once (Stable Diffusion
//! or the pixel cascade, told apart by `model_index.json`); [`Session::run`] takes a [`Request`], runs it with a
//! [`Progress`] (which may cancel) and returns an [`Output`]. Nothing here prints or reads the environment.
//!
//! A request with an `image` edits that picture (`pipelines::inversion`): it is fitted, encoded, DDIM-inverted with
//! the prompt and edited from its inversion; it has no seed (a cascade's SR augmentation noise comes from seed 1).
//! [`Session::invert`] makes only the inversion ([`Inversion`]); a request with `inverted` edits from it, after
//! checking that it was made with this model (its identity), the request's prompt and step counts.
//!
//! Seeds: a request's `seed` N draws the initial noise from our documented generator (`noise::gaussian`) in NCHW
//! order `[1, C, h, w]`; a cascade draws its SR augmentation noise from N + 1 and its SR initial noise from N + 2
//! (wrapping), both `[1, 3, H, W]`. Noise given as data replaces those draws.
pub mod inversion;
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
use crate::pipelines::{EditRun, Generate, Progress, Sampling, Trajectory};
use crate::tensor::DType;
use crate::text::Tokenizer;
use crate::weights::folder::{SR_UNET, TEXT_ENCODER, UNET, VAE, model_identity};

pub use inversion::Inversion;
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
    /// The model folder's identity (`weights::folder::model_identity`), recorded in inversions.
    pub model_id: String,
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
            sd.vae.tiling = o.decode.with_tile_px(o.vae_tile_px, sd.vae.config.upscale())?;
            Pipeline::Sd(Box::new(sd))
        };
        Ok(Session {
            gpu,
            model_id: model_identity(dir)?,
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

    /// The base stage's step count of `r` (the request's, else its inversion's, else the model's, else 50).
    pub fn steps(&self, r: &Request) -> usize {
        let inverted = r.inverted.as_ref().map(|i| i.steps);
        r.steps.or(inverted).or(self.index().and_then(|i| i.num_inference_steps)).unwrap_or(50)
    }

    /// A cascade's SR step count of `r` (the request's, else its inversion's, else the model's, else `steps`).
    fn sr_steps(&self, r: &Request, index: &CascadeIndex) -> usize {
        let inverted = r.inverted.as_ref().and_then(|i| i.sr_steps);
        r.sr_steps.or(inverted).or(index.sr_num_inference_steps).unwrap_or(self.steps(r))
    }

    /// The model folder's name, for messages.
    fn model_name(&self) -> String {
        self.model_dir.file_name().map_or_else(|| self.model_dir.display().to_string(), |n| n.to_string_lossy().into())
    }

    /// Refuses an inversion made with another model, prompt or step count, by name.
    fn check_inverted(&self, r: &Request, inv: &Inversion) -> Result<()> {
        if inv.model_id != self.model_id {
            let short = |id: &str| id.chars().take(19).collect::<String>();
            return Err(Error::input(format!(
                "--inverted: made with model `{}` ({}…), not with this model `{}` ({}…); invert the image again with this model",
                inv.model_name,
                short(&inv.model_id),
                self.model_name(),
                short(&self.model_id)
            )));
        }
        if r.prompt != inv.prompt {
            return Err(Error::input(format!(
                "--inverted: made with the prompt {:?}, not {:?}; leave --prompt out (it comes from the file) or give that prompt",
                inv.prompt, r.prompt
            )));
        }
        let steps = self.steps(r);
        if steps != inv.steps {
            return Err(Error::input(format!(
                "--inverted: made with {} steps, not {steps}; leave --steps out or invert again with --steps {steps}",
                inv.steps
            )));
        }
        match (self.index(), inv.sr_steps) {
            (Some(index), Some(ss)) => {
                let want = self.sr_steps(r, index);
                if want != ss {
                    return Err(Error::input(format!(
                        "--inverted: made with {ss} SR steps, not {want}; leave --sr-steps out or invert again with --sr-steps {want}"
                    )));
                }
            }
            (None, None) => {}
            // The identity check makes these unreachable for files we wrote; a hand-made request can still get here.
            (Some(_), None) => return Err(Error::input("--inverted: no SR-stage inversion, which a cascade needs")),
            (None, Some(_)) => return Err(Error::input("--inverted: an SR-stage inversion, for a cascade")),
        }
        let g = self.geometry();
        let (ph, pw) = self.pixel_size(r)?;
        if inv.shape != [steps + 1, g.channels, ph / g.up, pw / g.up] {
            return Err(Error::input(format!(
                "--inverted: latents {:?} do not suit this model at {pw}x{ph}",
                inv.shape
            )));
        }
        Ok(())
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
        if let Some(inv) = &r.inverted {
            self.check_inverted(r, inv)?;
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
        let (ph, pw) = match &r.inverted {
            Some(inv) => (inv.input.height as usize, inv.input.width as usize),
            None => (r.height.unwrap_or(native), r.width.unwrap_or(native)),
        };
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
            None if r.is_real_image() => {
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
        let seed = if r.is_real_image() { REAL_IMAGE_SEED } else { r.seed.unwrap_or_else(random_seed) };
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
        if let Some(inv) = &r.inverted {
            self.check_inverted(r, inv)?;
        }
        let input = match (&r.image, &r.inverted) {
            (Some(pic), _) => Some(self.fitted_picture(r, pic)?),
            (None, Some(inv)) => Some(inv.input.clone()),
            (None, None) => None,
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
                        let given = match &r.inverted {
                            Some(inv) => Some(Trajectory::from_nchw(gpu, &inv.latents, steps, c, hw)?),
                            None => None,
                        };
                        let run =
                            sd.edit_image(gpu, &r.prompt, plan.as_ref(), &edit_run(), &image, given, method, progress);
                        let (out, traj) = run?;
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
                let sr_steps = self.sr_steps(r, &m.index);
                let sr = SrRun { steps: sr_steps, ..sr };
                let mut inversions = Vec::new();
                let out = match (&input, &plan) {
                    (Some(pic), plan) => {
                        let method = r.inversion_method()?.unwrap_or_default();
                        let full = to_unit_nhwc(pic);
                        let base_image = to_unit_nhwc(&fit(pic, hw, Resize::Stretch)?);
                        let images = (full.as_slice(), base_image.as_slice());
                        let given = match &r.inverted {
                            Some(inv) => Some(cascade_trajectories(gpu, inv, hw)?),
                            None => None,
                        };
                        let er = edit_run();
                        let run =
                            m.edit_image(gpu, &r.prompt, plan.as_ref(), &er, &sr, images, given, method, progress);
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

impl Session {
    /// Inverts the request's picture (`r.image`, fitted as an edit fits it) with `r.prompt` over the run's step
    /// counts (a cascade: both stages), for edits later ([`Request::inverted`]). `r` may not edit. `progress`
    /// sees stage "invert" (and "invert-sr").
    pub fn invert(&self, r: &Request, progress: &mut dyn Progress) -> Result<Inversion> {
        let Some(pic) = &r.image else { return Err(Error::input("invert needs an --image")) };
        if r.is_edit() {
            return Err(Error::input(
                "invert takes no edit (--swap, --target, --reweight): edit from its file with --inverted",
            ));
        }
        // What `check` would do, without fitting the picture twice (a real-image request has no noise to check).
        self.plan(r)?;
        let input = self.fitted_picture(r, pic)?;
        let g = self.geometry();
        let (ph, pw) = self.pixel_size(r)?;
        let hw = (ph / g.up, pw / g.up);
        let steps = self.steps(r);
        let image = to_unit_nhwc(&input);
        let gpu = &self.gpu;
        let (latents, sr_steps, sr_latents) = match &self.pipeline {
            Pipeline::Sd(sd) => {
                let t = sd.invert_image(gpu, &r.prompt, &image, steps, hw, progress, (0, steps))?;
                (t.to_nchw(gpu)?, None, None)
            }
            Pipeline::Cascade(m) => {
                let ss = self.sr_steps(r, &m.index);
                let base_image = to_unit_nhwc(&fit(&input, hw, Resize::Stretch)?);
                let aug_noise = gaussian(REAL_IMAGE_SEED.wrapping_add(1), 3 * ph * pw);
                let sr = SrRun { steps: ss, guidance: r.sr_guidance, scheduler: None, aug_noise, latents: Vec::new() };
                let images = (image.as_slice(), base_image.as_slice());
                let (t, t_sr) = m.invert_image(gpu, &r.prompt, images, steps, hw, &sr, progress, steps + ss)?;
                (t.to_nchw(gpu)?, Some(ss), Some(t_sr.to_nchw(gpu)?))
            }
        };
        Ok(Inversion {
            prompt: r.prompt.clone(),
            model_id: self.model_id.clone(),
            model_name: self.model_name(),
            steps,
            sr_steps,
            input,
            shape: [steps + 1, g.channels, hw.0, hw.1],
            latents,
            sr_latents,
        })
    }
}

/// The seed of a real-image run's noises (a cascade's SR augmentation noise comes from it + 1).
const REAL_IMAGE_SEED: u64 = 0;

/// A cascade inversion's two trajectories on the GPU (base at `hw`, SR at 4×).
fn cascade_trajectories(gpu: &Gpu, inv: &Inversion, hw: (usize, usize)) -> Result<(Trajectory, Trajectory)> {
    let (Some(sr), Some(ss)) = (&inv.sr_latents, inv.sr_steps) else {
        return Err(Error::input("--inverted: no SR-stage inversion, which a cascade needs"));
    };
    let base = Trajectory::from_nchw(gpu, &inv.latents, inv.steps, 3, hw)?;
    let sr = Trajectory::from_nchw(gpu, sr, ss, 3, (hw.0 * SR_SCALE, hw.1 * SR_SCALE))?;
    Ok((base, sr))
}

/// A seed from the clock, for requests without one (reported in `Output::seed`).
pub fn random_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
