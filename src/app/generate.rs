//! The main command: text-to-image with a Stable Diffusion folder or a pixel cascade (`models::cascade`, chosen by
//! `model_index.json`'s `P2PCascadePipeline`), and Prompt-to-Prompt edits of it (`--swap`, `--target`, `--reweight`,
//! `--blend`, windows; a cascade is edited in its base stage). Inputs are checked and the output folder prepared
//! before the GPU runs; files are written atomically at the end.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::models::cascade::{Cascade, CascadeIndex, SR_SCALE, SrRun, is_cascade};
use crate::models::sd::{Generate, LoadOptions, StableDiffusion};
use crate::models::sd_edit::EditRun;
use crate::models::vae::{DecodeOptions, Tiling};
use crate::p2p::{EditPlan, EditSpec, Mode, Window, spec};
use crate::schedulers::Kind;
use crate::tensor::DType;
use crate::weights::SafetensorsFile;

use super::noise::gaussian;
use super::output::{Quantize, check_not_input, png, prepare_dir, safetensors_f32, to_rgb8, write_atomic};
use super::pictures::{attention_grid, captioned_grid, mask_grid, token_label};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Model folder: a diffusers Stable Diffusion folder (model_index.json, unet/, text_encoder/, vae/, tokenizer/,
    /// scheduler/), or a pixel cascade (model_index.json `P2PCascadePipeline`: base unet/ + scheduler/, then
    /// super-resolution sr_unet/ + sr_scheduler/). Default: the shipped models/default, when present.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The prompt.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Unconditional prompt for classifier-free guidance.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Sampling steps [default: the model's `num_inference_steps` (a cascade's model_index.json), else 50].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale [default: the model's `guidance_scale` (a cascade's model_index.json), else
    /// 7.5].
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Scheduler; default: the model's scheduler_config.json. pndm (PLMS), ddim (eta 0), dpm++ (DPM-Solver++ 2M;
    /// also spelled dpmsolver++) or euler (Euler discrete); keys the config lacks take that class's diffusers
    /// defaults.
    #[arg(long, value_parser = ["pndm", "ddim", "dpm++", "dpmsolver++", "euler"])]
    pub scheduler: Option<String>,
    /// Seed of the initial noise (our documented generator); default: a random seed, printed. A cascade draws its
    /// super-resolution noises from seed+1 (augmentation) and seed+2 (initial noise).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial latent (safetensors, tensor `latents` [1, C, h, w] f32); replaces the seed's noise. For a cascade,
    /// the base's noise [1, 3, h, w], and optionally `sr_aug_noise` and `sr_latents` [1, 3, 4h, 4w].
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// Also write the initial latent used (a cascade: and its SR noises), so that the run can be reproduced exactly.
    #[arg(long, value_name = "FILE")]
    pub save_latents: Option<PathBuf>,
    /// Image height and width in pixels (default: the model's native size); multiples of the latent grid. A
    /// cascade's final (super-resolved) size, 4× the base's.
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub width: Option<usize>,
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "p2p-out")]
    pub out: PathBuf,
    /// Also write DIR/raw.safetensors: "images" [B,3,H,W] f32 in [0,1] and "latents" [B,C,h,w] final latents (a
    /// cascade: the base stage's outputs, and "base_images" [B,3,h,w] in [0,1]).
    #[arg(long)]
    pub save_raw: bool,
    /// Cascade: super-resolution sampling steps [default: the model's `sr_num_inference_steps`, else --steps].
    #[arg(long)]
    pub sr_steps: Option<usize>,
    /// Cascade: super-resolution guidance scale (default: the model's sr_guidance_scale).
    #[arg(long)]
    pub sr_guidance: Option<f64>,
    /// Weight-file variant, e.g. fp16 for *.fp16.safetensors. Default: fp16 when running in f16 and every
    /// weighted component has *.fp16.safetensors files, else the plain files.
    #[arg(long)]
    pub variant: Option<String>,
    /// Run the text encoder and UNet in f16 (needs SHADER_F16). Default: f16 on GPUs with SHADER_F16, f32 on CPU
    /// adapters (lavapipe/llvmpipe emulate f16 slower than f32) and without SHADER_F16.
    #[arg(long, conflicts_with = "f32")]
    pub f16: bool,
    /// Run the text encoder and UNet in f32.
    #[arg(long)]
    pub f32: bool,
    /// Run the VAE decoder in f16 too (default f32: an f16 SD VAE can overflow).
    #[arg(long)]
    pub vae_f16: bool,
    /// Decode in overlapping tiles even when the image fits (default: only when one image's decode exceeds
    /// --vae-budget or an adapter buffer limit). Images are always decoded one at a time.
    #[arg(long)]
    pub vae_tile: bool,
    /// Side of a decode tile in pixels (default: the largest that fits, or half the image side, at most 512,
    /// with --vae-tile); a multiple of the VAE's upscale factor.
    #[arg(long, value_name = "PX")]
    pub vae_tile_size: Option<usize>,
    /// Memory one image's (or tile's) decode may use, in MiB, before tiling.
    #[arg(long, value_name = "MIB", default_value_t = crate::models::vae::DEFAULT_DECODE_BUDGET >> 20)]
    pub vae_budget: u64,
    /// Reproduce the reference implementation's quirks (replacement-mapper misalignment, uint8 truncation).
    #[arg(long, value_parser = ["ptp"])]
    pub compat: Option<String>,

    /// Word swap, repeatable: target = prompt with each OLD word replaced by NEW (NEW may be several words).
    #[arg(long, value_name = "OLD=NEW", help_heading = "Edits")]
    pub swap: Vec<String>,
    /// A full target prompt, repeatable; several targets run in one batch.
    #[arg(long, value_name = "TEXT", help_heading = "Edits")]
    pub target: Vec<String>,
    /// Cross-attention edit: replace (word swap) or refine (alignment); default: replace when every target has the
    /// prompt's word count, else refine.
    #[arg(long, value_parser = ["replace", "refine"], help_heading = "Edits")]
    pub mode: Option<String>,
    /// Scale WORD's attention by C (negative allowed), repeatable; with no target, target = prompt.
    #[arg(long, value_name = "WORD=C", help_heading = "Edits")]
    pub reweight: Vec<String>,
    /// Local blending on these words (looked up in every prompt).
    #[arg(long, value_name = "W1,W2,...", help_heading = "Edits")]
    pub blend: Option<String>,
    #[arg(long, default_value_t = 0.3, help_heading = "Edits")]
    pub blend_threshold: f32,
    /// Fraction of the steps before blending starts.
    #[arg(long, default_value_t = 0.0, help_heading = "Edits")]
    pub blend_start: f64,
    /// Side of the attention maps local blending reads (default: the smallest cross-attention side at least the
    /// latent side / 4, i.e. 16 for SD at 512 px).
    #[arg(long, help_heading = "Edits")]
    pub blend_res: Option<usize>,
    /// Cross-attention window as fractions of the steps: F means 0:F.
    #[arg(long, value_name = "F|S:E", default_value = "0.8", help_heading = "Edits")]
    pub cross_steps: String,
    /// Per-word cross-attention window, repeatable.
    #[arg(long, value_name = "W=F|W=S:E", help_heading = "Edits")]
    pub cross_steps_word: Vec<String>,
    /// Self-attention window.
    #[arg(long, value_name = "F|S:E", default_value = "0.4", help_heading = "Edits")]
    pub self_steps: String,
    /// Inject self-attention in layers with at most N×N query tokens (16; 32 is the null-text notebook's setting).
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Edits")]
    pub self_max_res: usize,
    /// Write per-prompt token attention grids (and blend masks) into the output folder.
    #[arg(long, help_heading = "Edits")]
    pub save_attention: bool,
    /// Side of the attention pictures' maps (default as --blend-res).
    #[arg(long, help_heading = "Edits")]
    pub attention_res: Option<usize>,
}

impl GenerateArgs {
    /// Whether any edit option was given.
    pub fn is_edit(&self) -> bool {
        !self.swap.is_empty() || !self.target.is_empty() || !self.reweight.is_empty()
    }

    /// The edit specification, checked (the tokenizer-dependent checks come with the plan).
    pub fn edit_spec(&self, prompt: &str) -> Result<EditSpec> {
        let mut e = EditSpec::new(prompt);
        e.swaps = self.swap.iter().map(|s| spec::parse_swap(s)).collect::<Result<_>>()?;
        e.targets = self.target.clone();
        e.mode = match self.mode.as_deref() {
            Some("replace") => Some(Mode::Replace),
            Some("refine") => Some(Mode::Refine),
            _ => None,
        };
        e.reweights = self.reweight.iter().map(|s| spec::parse_reweight(s)).collect::<Result<_>>()?;
        if let Some(b) = &self.blend {
            e.blend_words = spec::parse_blend_words(b)?;
        }
        e.blend_threshold = self.blend_threshold;
        e.blend_start = self.blend_start;
        e.cross_steps = Window::parse(&self.cross_steps).map_err(|err| Error::msg(format!("--cross-steps: {err}")))?;
        e.cross_steps_word = self.cross_steps_word.iter().map(|s| spec::parse_word_window(s)).collect::<Result<_>>()?;
        e.self_steps = Window::parse(&self.self_steps).map_err(|err| Error::msg(format!("--self-steps: {err}")))?;
        e.compat_ptp = self.compat.is_some();
        e.validate()?;
        Ok(e)
    }
}

/// Reads a latent file: tensor `latents` `[1, C, h, w]`.
pub fn read_latents(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let f = SafetensorsFile::open(path)?;
    let info = f.info("latents").ok_or_else(|| Error::msg(format!("{}: no tensor named `latents`", path.display())))?;
    let shape = info.shape.clone();
    let [1, c, h, w] = shape[..] else {
        return Err(Error::msg(format!("{}: `latents` is {shape:?}, expected [1, C, h, w]", path.display())));
    };
    let t = f.read_f32("latents")?;
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::msg(format!("{}: `latents` holds {bad}", path.display())));
    }
    Ok((t.data, [1, c, h, w]))
}

/// Output file names of a run with `targets` edits: source.png, then edit.png or edit-1.png, edit-2.png, ...
pub fn output_names(targets: usize) -> Vec<String> {
    let mut v = vec!["source.png".to_string()];
    match targets {
        0 => {}
        1 => v.push("edit.png".into()),
        n => v.extend((1..=n).map(|k| format!("edit-{k}.png"))),
    }
    v
}

/// A random seed (printed, so that the run can be repeated) unless `--seed` gave one.
fn pick_seed(a: &GenerateArgs) -> u64 {
    a.seed.unwrap_or_else(|| {
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        eprintln!("seed: {s}");
        s
    })
}

/// How a model's samples relate to pixels, for sizing the initial noise.
struct Geometry {
    /// Channels of the initial noise.
    channels: usize,
    /// Output image side / sample side.
    up: usize,
    /// The sample side must be a multiple of this.
    levels: usize,
    /// The default sample side.
    native: usize,
}

/// An initial noise `[1, C, h, w]` (NCHW), its `(h, w)`, and the seed it came from (None: a file).
type Noise = (Vec<f32>, (usize, usize), Option<u64>);

/// The initial noise `[1, C, h, w]`, its `(h, w)` and the seed it came from: the `--latents` tensor (no seed), or
/// the noise of `seed` (None: `--seed` or a random one) at the size that --height/--width ask for.
fn initial_noise(
    a: &GenerateArgs,
    latents: Option<(Vec<f32>, [usize; 4])>,
    seed: Option<u64>,
    g: &Geometry,
) -> Result<Noise> {
    let mut used = seed;
    let (data, hw) = match latents {
        Some((d, [_, lc, h, w])) => {
            if lc != g.channels {
                return Err(Error::msg(format!("--latents has {lc} channels; the model takes {}", g.channels)));
            }
            if a.height.is_some() || a.width.is_some() {
                return Err(Error::msg(
                    "--height/--width cannot be combined with --latents (the latent sets the size)",
                ));
            }
            (d, (h, w))
        }
        None => {
            let native = g.native * g.up;
            let (ph, pw) = (a.height.unwrap_or(native), a.width.unwrap_or(native));
            let grid = g.up * g.levels;
            if ph == 0 || pw == 0 || ph % grid != 0 || pw % grid != 0 {
                return Err(Error::msg(format!(
                    "--height and --width must be positive multiples of {grid}, got {ph}x{pw}"
                )));
            }
            let (h, w) = (ph / g.up, pw / g.up);
            let seed = seed.unwrap_or_else(|| pick_seed(a));
            used = Some(seed);
            (gaussian(seed, g.channels * h * w), (h, w))
        }
    };
    if hw.0 % g.levels != 0 || hw.1 % g.levels != 0 {
        return Err(Error::msg(format!(
            "latent size {}x{} must be a multiple of {} for this model",
            hw.0, hw.1, g.levels
        )));
    }
    Ok((data, hw, used))
}

/// An optional f32 tensor of a `--latents` file, which must have `shape` when present.
fn read_optional(path: &Path, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
    let f = SafetensorsFile::open(path)?;
    let Some(info) = f.info(name) else { return Ok(None) };
    let shape = info.shape.clone();
    let t = f.read_f32(name)?;
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::msg(format!("{}: `{name}` holds {bad}", path.display())));
    }
    Ok(Some((t.data, shape)))
}

/// What a run produced, for writing.
struct Outcome {
    /// `[B, 3, H, W]` in [0, 1].
    images: Vec<f32>,
    image_hw: (usize, usize),
    /// More tensors of raw.safetensors, after `images`.
    raw: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    attention: Option<(Vec<f32>, usize, usize)>,
    masks: Option<Vec<Vec<f32>>>,
    /// Side of the edited samples (blend masks).
    sample_hw: (usize, usize),
}

/// Storage types of the text encoder + UNet and of the VAE decoder: `--f16`/`--f32` force the first (f16 needs
/// SHADER_F16), else [`LoadOptions::default_dtype`] (f16 on GPUs with SHADER_F16, f32 on CPU adapters);
/// `--vae-f16` the second (default f32).
pub fn precision(gpu: &Gpu, f16: bool, f32: bool, vae_f16: bool) -> Result<(DType, DType)> {
    let need = |flag: &str| -> Result<()> {
        if gpu.has_f16() {
            Ok(())
        } else {
            Err(Error::msg(format!("{flag}: adapter {} has no SHADER_F16", gpu.info.name)))
        }
    };
    let dtype = match (f16, f32) {
        (true, _) => {
            need("--f16")?;
            DType::F16
        }
        (false, true) => DType::F32,
        (false, false) => LoadOptions::default_dtype(gpu),
    };
    let vae = if vae_f16 {
        need("--vae-f16")?;
        DType::F16
    } else {
        DType::F32
    };
    Ok((dtype, vae))
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

/// The weight variant to load: `--variant` when given; else `fp16` when the text encoder and UNet run in f16 and
/// every weighted component folder of `model` has fp16 files (half the bytes to read; the values are the
/// same as an f32 file rounded at load); else None (the plain files).
pub fn weight_variant(model: &Path, given: Option<&str>, dtype: DType, components: &[&str]) -> Option<String> {
    if let Some(v) = given {
        return Some(v.to_string());
    }
    (dtype == DType::F16 && components.iter().all(|c| has_fp16_files(&model.join(c)))).then(|| "fp16".to_string())
}

/// Everything a model run needs from the command line, resolved.
struct Job<'a> {
    a: &'a GenerateArgs,
    model: &'a Path,
    dtype: DType,
    vae_dtype: DType,
    /// `--guidance`, else the model's default.
    guidance: f64,
    /// `--steps`, else the model's default.
    steps: usize,
    /// `--sr-steps`, else the model's default, else `steps` (cascades only).
    sr_steps: usize,
    plan: Option<&'a EditPlan>,
    prompts: &'a [String],
    latents: Option<(Vec<f32>, [usize; 4])>,
    kind: Option<Kind>,
}

impl Job<'_> {
    fn edit_run(&self, latents: Vec<f32>, hw: (usize, usize)) -> EditRun {
        let a = self.a;
        EditRun {
            negative: a.negative_prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.kind,
            latents,
            latent_hw: hw,
            self_max_res: a.self_max_res,
            blend_res: a.blend_res,
            attention_res: a.save_attention.then_some(a.attention_res),
        }
    }

    fn generate(&self, latents: Vec<f32>, hw: (usize, usize)) -> Generate {
        let a = self.a;
        Generate {
            prompts: self.prompts.to_vec(),
            negative: a.negative_prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.kind,
            latents,
            latent_hw: hw,
        }
    }
}

fn run_sd(gpu: &Gpu, j: Job, progress: &mut dyn FnMut(usize, usize)) -> Result<Outcome> {
    let a = j.a;
    let variant = weight_variant(j.model, a.variant.as_deref(), j.dtype, &["text_encoder", "unet", "vae"]);
    let mut sd = StableDiffusion::load(gpu, j.model, &LoadOptions { dtype: j.dtype, vae_dtype: j.vae_dtype, variant })?;
    sd.vae.tiling = decode_options(a, sd.vae.config.upscale())?;
    let c = sd.unet.config.in_channels;
    let geo = Geometry {
        channels: c,
        up: sd.vae.config.upscale(),
        levels: 1usize << (sd.unet.config.block_out_channels.len() - 1),
        native: sd.unet.config.sample_size,
    };
    let (data, hw, _) = initial_noise(a, j.latents.clone(), None, &geo)?;
    if let Some(s) = &a.save_latents {
        write_atomic(s, &safetensors_f32(&[("latents", vec![1, c, hw.0, hw.1], &data)])?)?;
    }
    let (images, latents, image_hw, attention, masks) = match j.plan {
        None => {
            let out = sd.generate(gpu, &j.generate(data, hw), progress)?;
            (out.images, out.latents, out.image_hw, None, None)
        }
        Some(plan) => {
            let out = sd.edit(gpu, plan, &j.edit_run(data, hw), progress)?;
            (out.images, out.latents, out.image_hw, out.attention, out.blend_masks)
        }
    };
    let b = j.prompts.len();
    Ok(Outcome {
        images,
        image_hw,
        raw: vec![("latents", vec![b, c, hw.0, hw.1], latents)],
        attention,
        masks,
        sample_hw: hw,
    })
}

fn run_cascade(gpu: &Gpu, j: Job, progress: &mut dyn FnMut(usize, usize)) -> Result<Outcome> {
    let a = j.a;
    let variant = weight_variant(j.model, a.variant.as_deref(), j.dtype, &["text_encoder", "unet", "sr_unet"]);
    let m = Cascade::load(gpu, j.model, &LoadOptions { dtype: j.dtype, vae_dtype: j.vae_dtype, variant })?;
    let levels = |u: &crate::models::unet::UNet| 1usize << (u.config.block_out_channels.len() - 1);
    let geo = Geometry {
        channels: 3,
        up: SR_SCALE,
        // The base side must suit the base UNet, and 4× it the SR UNet.
        levels: levels(&m.unet).max(levels(&m.sr_unet).div_ceil(SR_SCALE)),
        native: m.unet.config.sample_size,
    };
    // SR noises from the --latents file when it has them, else from the seed (+1, +2): see models::cascade.
    let file = a.latents.as_deref();
    let aug_file = file.map(|p| read_optional(p, "sr_aug_noise")).transpose()?.flatten();
    let sr_file = file.map(|p| read_optional(p, "sr_latents")).transpose()?.flatten();
    let (data, hw, seed) = initial_noise(a, j.latents.clone(), None, &geo)?;
    let seed = match seed {
        Some(s) => s,
        None if aug_file.is_none() || sr_file.is_none() => pick_seed(a),
        None => 0, // both SR noises come from the file
    };
    let (hh, ww) = (hw.0 * SR_SCALE, hw.1 * SR_SCALE);
    let sr_shape = vec![1, 3, hh, ww];
    let sr_noise = |from_file: Option<(Vec<f32>, Vec<usize>)>, name: &str, offset: u64| -> Result<Vec<f32>> {
        match from_file {
            Some((d, shape)) if shape == sr_shape => Ok(d),
            Some((_, shape)) => {
                Err(Error::msg(format!("--latents: `{name}` is {shape:?}, expected {sr_shape:?} (4× the base noise)")))
            }
            None => Ok(gaussian(seed.wrapping_add(offset), 3 * hh * ww)),
        }
    };
    let aug_noise = sr_noise(aug_file, "sr_aug_noise", 1)?;
    let sr_latents = sr_noise(sr_file, "sr_latents", 2)?;
    if let Some(s) = &a.save_latents {
        let t = [
            ("latents", vec![1, 3, hw.0, hw.1], data.as_slice()),
            ("sr_aug_noise", sr_shape.clone(), aug_noise.as_slice()),
            ("sr_latents", sr_shape.clone(), sr_latents.as_slice()),
        ];
        write_atomic(s, &safetensors_f32(&t)?)?;
    }
    let sr = SrRun { steps: j.sr_steps, guidance: a.sr_guidance, scheduler: None, aug_noise, latents: sr_latents };
    let out = match j.plan {
        None => m.generate(gpu, &j.generate(data, hw), &sr, progress)?,
        Some(plan) => m.edit(gpu, plan, &j.edit_run(data, hw), &sr, progress)?,
    };
    let b = j.prompts.len();
    let base_shape = vec![b, 3, hw.0, hw.1];
    Ok(Outcome {
        images: out.images,
        image_hw: out.image_hw,
        raw: vec![("latents", base_shape.clone(), out.base), ("base_images", base_shape, out.base_images)],
        attention: out.attention,
        masks: out.blend_masks,
        sample_hw: hw,
    })
}

/// The VAE decode options of `--vae-tile`, `--vae-tile-size` (pixels; `up` pixels per latent) and `--vae-budget`.
pub fn decode_options(a: &GenerateArgs, up: usize) -> Result<DecodeOptions> {
    let tile = match a.vae_tile_size {
        Some(px) if px == 0 || px % up != 0 => {
            return Err(Error::msg(format!("--vae-tile-size must be a positive multiple of {up}, got {px}")));
        }
        Some(px) => Some(px / up),
        None => None,
    };
    if a.vae_budget == 0 {
        return Err(Error::msg("--vae-budget must be positive"));
    }
    Ok(DecodeOptions {
        tiling: if a.vae_tile { Tiling::Always } else { Tiling::Auto },
        budget: a.vae_budget << 20,
        tile,
        overlap: None,
    })
}

/// The shipped default model: `models/default` under the working folder, else under the source tree the binary
/// was built from (so `cargo run` and `target/release/p2p-wgpu` find it on the machine that built them).
pub fn default_model() -> Option<PathBuf> {
    let rel = Path::new("models").join("default");
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)]
        .into_iter()
        .find(|d| d.join("model_index.json").is_file())
}

/// Runs the main command.
pub fn run(a: &GenerateArgs, adapter: Option<String>) -> Result<()> {
    let prompt = a.prompt.clone().ok_or_else(|| Error::msg("--prompt is required"))?;
    let model = match a.model.clone() {
        Some(m) => m,
        None => default_model().ok_or_else(|| {
            Error::msg(
                "--model DIR is required: no default model found (models/default in the working folder or in the \
                 source tree this binary was built from)",
            )
        })?,
    };
    for (flag, s) in [("--steps", a.steps), ("--sr-steps", a.sr_steps)] {
        if let Some(s) = s.filter(|s| *s == 0 || *s > 1000) {
            return Err(Error::msg(format!("{flag} must be between 1 and 1000, got {s}")));
        }
    }
    if let Some(g) = a.guidance.filter(|g| !g.is_finite()) {
        return Err(Error::msg(format!("--guidance must be a finite number, got {g}")));
    }
    if let Some(g) = a.sr_guidance.filter(|g| !g.is_finite()) {
        return Err(Error::msg(format!("--sr-guidance must be a finite number, got {g}")));
    }
    if !a.is_edit() && (a.blend.is_some() || a.save_attention || !a.cross_steps_word.is_empty()) {
        return Err(Error::msg(
            "--blend, --cross-steps-word and --save-attention need an edit (--swap, --target or --reweight)",
        ));
    }
    if a.self_max_res == 0 {
        return Err(Error::msg("--self-max-res must be positive"));
    }
    let cascade = is_cascade(&model)?;
    let index = if cascade { Some(CascadeIndex::read(&model)?) } else { None };
    let guidance = a.guidance.or(index.as_ref().and_then(|i| i.guidance_scale)).unwrap_or(7.5);
    let steps = a.steps.or(index.as_ref().and_then(|i| i.num_inference_steps)).unwrap_or(50);
    let sr_steps = a.sr_steps.or(index.as_ref().and_then(|i| i.sr_num_inference_steps)).unwrap_or(steps);
    if !cascade && (a.sr_steps.is_some() || a.sr_guidance.is_some()) {
        return Err(Error::msg("--sr-steps and --sr-guidance need a cascade model (P2PCascadePipeline)"));
    }
    // The edit plan needs only the tokenizer: check every word before the GPU starts.
    let (plan, tok) = if a.is_edit() {
        let spec = a.edit_spec(&prompt)?;
        let tok = crate::text::Tokenizer::from_model_dir(&model)?;
        (Some(EditPlan::new(&spec, &tok, steps)?), Some(tok))
    } else {
        (None, None)
    };
    let prompts = plan.as_ref().map_or_else(|| vec![prompt.clone()], |p| p.prompts.clone());
    let latents = a.latents.as_deref().map(read_latents).transpose()?;
    let mut inputs: Vec<&Path> = vec![model.as_path()];
    if let Some(l) = &a.latents {
        inputs.push(l);
    }
    prepare_dir(&a.out)?;
    let names = output_names(prompts.len() - 1);
    for name in names.iter().map(String::as_str).chain(["grid.png", "raw.safetensors"]) {
        check_not_input(&a.out.join(name), &inputs)?;
    }
    if let Some(s) = &a.save_latents {
        check_not_input(s, &inputs)?;
    }
    let quant = if a.compat.is_some() { Quantize::Truncate } else { Quantize::Round };

    let gpu = Gpu::new(&GpuOptions { adapter })?;
    let (dtype, vae_dtype) = precision(&gpu, a.f16, a.f32, a.vae_f16)?;
    let t0 = Instant::now();
    let kind = match a.scheduler.as_deref() {
        Some("pndm") => Some(Kind::Pndm),
        Some("ddim") => Some(Kind::Ddim),
        Some("dpm++" | "dpmsolver++") => Some(Kind::DpmSolverPp),
        Some("euler") => Some(Kind::Euler),
        _ => None,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .map_err(|e| Error::msg(format!("progress bar: {e}")))?,
    );
    let mut progress = |i: usize, n: usize| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    };
    let job = Job {
        a,
        model: &model,
        dtype,
        vae_dtype,
        guidance,
        steps,
        sr_steps,
        plan: plan.as_ref(),
        prompts: &prompts,
        latents,
        kind,
    };
    let out = if cascade { run_cascade(&gpu, job, &mut progress)? } else { run_sd(&gpu, job, &mut progress)? };
    bar.finish_and_clear();

    let (h, w) = out.image_hw;
    let b = prompts.len();
    let images = &out.images;
    let rgbs: Vec<Vec<u8>> =
        (0..b).map(|k| to_rgb8(&images[k * 3 * h * w..(k + 1) * 3 * h * w], h, w, quant)).collect();
    for (name, rgb) in names.iter().zip(&rgbs) {
        write_atomic(&a.out.join(name), &png(rgb, h, w)?)?;
    }
    if b > 1 {
        let tiles: Vec<(Vec<u8>, usize, usize)> = rgbs.iter().map(|r| (r.clone(), h, w)).collect();
        let (g, gh, gw) = captioned_grid(&tiles, &prompts)?;
        write_atomic(&a.out.join("grid.png"), &png(&g, gh, gw)?)?;
    }
    if let (Some((sum, res, evals)), Some(tok)) = (&out.attention, &tok) {
        write_attention(tok, &a.out, &prompts, sum, *res, *evals)?;
    }
    if let Some(m) = &out.masks {
        let (g, gh, gw) = mask_grid(m, out.sample_hw.0, out.sample_hw.1, &prompts, 128)?;
        write_atomic(&a.out.join("blend-masks.png"), &png(&g, gh, gw)?)?;
    }
    if a.save_raw {
        let mut t: Vec<(&str, Vec<usize>, &[f32])> = vec![("images", vec![b, 3, h, w], images)];
        t.extend(out.raw.iter().map(|(n, s, d)| (*n, s.clone(), d.as_slice())));
        write_atomic(&a.out.join("raw.safetensors"), &safetensors_f32(&t)?)?;
    }
    eprintln!("wrote {} image(s) of {w}x{h} to {} in {:.1} s", b, a.out.display(), t0.elapsed().as_secs_f64());
    if let Some(p) = &gpu.profile {
        eprint!("{}", p.table());
    }
    Ok(())
}

/// One attention grid per prompt: `attention-0.png` (source), `attention-1.png`, ...: the maps of its tokens
/// (BOS to EOS) averaged over the UNet evaluations, heads and layers at `res`.
fn write_attention(
    tok: &crate::text::Tokenizer,
    out: &Path,
    prompts: &[String],
    sum: &[f32],
    res: usize,
    evals: usize,
) -> Result<()> {
    let keys = tok.max_len();
    for (b, p) in prompts.iter().enumerate() {
        let enc = tok.encode(p)?;
        let maps: Vec<Vec<f32>> = (0..enc.length)
            .map(|n| (0..res * res).map(|q| sum[(b * res * res + q) * keys + n] / evals as f32).collect())
            .collect();
        let labels: Vec<String> = enc.tokens[..enc.length].iter().map(|t| token_label(t)).collect();
        let (g, gh, gw) = attention_grid(&maps, res, &labels, 64)?;
        write_atomic(&out.join(format!("attention-{b}.png")), &png(&g, gh, gw)?)?;
    }
    Ok(())
}
