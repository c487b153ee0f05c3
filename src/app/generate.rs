//! The main command: text-to-image with a Stable Diffusion folder or a pixel cascade (`models::cascade`, chosen by
//! `model_index.json`'s `P2PCascadePipeline`), and Prompt-to-Prompt edits of it (`--swap`, `--target`, `--reweight`,
//! `--blend`, windows; a cascade is edited in its base stage). Inputs are checked and the output folder prepared
//! before the GPU runs; files are written atomically at the end.
use std::path::{Path, PathBuf};

use super::console::say;
use super::precision::PrecisionArgs;
use super::vae::VaeArgs;
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::models::cascade::is_cascade;
use crate::output::{OutputFiles, WriteSet, remove_stale};
use crate::pipelines::Step;
use crate::session::{Files, InitialNoise, Inversion, Output, Request, Session, SessionOptions};
use crate::weights::SafetensorsFile;

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
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("between 1 and 1000"))]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale [default: the model's `guidance_scale` (a cascade's model_index.json), else
    /// 7.5].
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Scheduler; default: the model's scheduler_config.json. pndm (PLMS), ddim (eta 0), dpm++ (DPM-Solver++ 2M;
    /// also spelled dpmsolver++) or euler (Euler discrete); keys the config lacks take that class's diffusers
    /// defaults.
    #[arg(long, value_parser = ["pndm", "ddim", "dpm++", "dpmsolver++", "euler"])]
    pub scheduler: Option<String>,
    /// Seed of the initial noise (our documented generator); default: a random seed, printed. A cascade draws its
    /// super-resolution noises from seed+1 (augmentation) and seed+2 (initial noise).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>("a whole number from 0 to 18446744073709551615"))]
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
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub height: Option<usize>,
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub width: Option<usize>,
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "p2p-out")]
    pub out: PathBuf,
    /// Also write DIR/raw.safetensors: "images" [B,3,H,W] f32 in [0,1] and "latents" [B,C,h,w] final latents (a
    /// cascade: the base stage's outputs, and "base_images" [B,3,h,w] in [0,1]).
    #[arg(long)]
    pub save_raw: bool,
    /// Cascade: super-resolution sampling steps [default: the model's `sr_num_inference_steps`, else --steps].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("between 1 and 1000"))]
    pub sr_steps: Option<usize>,
    /// Cascade: super-resolution guidance scale (default: the model's sr_guidance_scale).
    #[arg(long, allow_negative_numbers = true)]
    pub sr_guidance: Option<f64>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub vae: VaeArgs,
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
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.3, help_heading = "Edits")]
    pub blend_threshold: f32,
    /// Fraction of the steps before blending starts.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, help_heading = "Edits")]
    pub blend_start: f64,
    /// Side of the attention maps local blending reads (default: the smallest cross-attention side at least the
    /// latent side / 4, i.e. 16 for SD at 512 px).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive attention resolution"), help_heading = "Edits")]
    pub blend_res: Option<usize>,
    /// Cross-attention window as fractions of the steps: F means 0:F.
    #[arg(long, allow_negative_numbers = true, value_name = "F|S:E", default_value = "0.8", help_heading = "Edits")]
    pub cross_steps: String,
    /// Per-word cross-attention window, repeatable.
    #[arg(long, value_name = "W=F|W=S:E", help_heading = "Edits")]
    pub cross_steps_word: Vec<String>,
    /// Self-attention window.
    #[arg(long, allow_negative_numbers = true, value_name = "F|S:E", default_value = "0.4", help_heading = "Edits")]
    pub self_steps: String,
    /// Inject self-attention in layers with at most N×N query tokens (16; 32 is the null-text notebook's setting).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive attention resolution"), value_name = "N", default_value_t = 16, help_heading = "Edits")]
    pub self_max_res: usize,
    /// Write per-prompt token attention grids (and blend masks) into the output folder.
    #[arg(long, help_heading = "Edits")]
    pub save_attention: bool,
    /// Side of the attention pictures' maps (default as --blend-res).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive attention resolution"), help_heading = "Edits")]
    pub attention_res: Option<usize>,

    /// Edit this picture (PNG, JPEG or WebP) instead of a generated one: it is fitted to the model's size
    /// (--resize), DDIM-inverted with --prompt (which should describe it) and edited from its inversion with DDIM.
    /// Writes input.png (the picture as the model saw it); source.png is the reconstruction.
    #[arg(long, value_name = "FILE", help_heading = "Real images", conflicts_with_all = ["seed", "latents", "save_latents"])]
    pub image: Option<PathBuf>,
    /// How the picture becomes the model's size: crop (centre crop to the model's aspect, then resize; the
    /// default), stretch, or pad (fit inside, mid-grey borders). Bicubic resampling.
    #[arg(long, value_parser = ["crop", "stretch", "pad"], help_heading = "Real images")]
    pub resize: Option<String>,
    /// How the edit starts from the inversion: direct (default: the source row follows the inversion exactly),
    /// negative-prompt (the source prompt as every row's unconditional prompt) or ddim (from the inverted noise
    /// alone).
    #[arg(long, value_parser = ["direct", "negative-prompt", "ddim"], help_heading = "Real images")]
    pub inversion: Option<String>,
    /// Edit from an inversion file made by `p2p-wgpu invert` (no new inversion): its prompt is the source prompt
    /// (--prompt may be left out) and its steps the run's; a file made with another model is refused.
    #[arg(long, value_name = "FILE", help_heading = "Real images", conflicts_with_all = ["image", "seed", "latents", "save_latents", "resize", "height", "width"])]
    pub inverted: Option<PathBuf>,
}

/// The largest picture file read (bytes); the decoder also bounds the pixels (`input_image::MAX_PIXELS`).
const MAX_IMAGE_FILE: u64 = 256 << 20;

/// Reads and decodes `--image`.
pub fn read_image(path: &Path) -> Result<crate::input_image::Picture> {
    crate::input_image::decode(&path.display().to_string(), &read_image_bytes(path)?)
}

/// Reads a picture file's bytes, refusing what is not a file or is over the size limit.
pub fn read_image_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::input(format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::input(format!("{name}: not a file")));
    }
    if meta.len() > MAX_IMAGE_FILE {
        return Err(Error::input(format!("{name}: {} bytes is more than the {MAX_IMAGE_FILE} accepted", meta.len())));
    }
    std::fs::read(path).map_err(|e| Error::input(format!("{name}: {e}")))
}

impl GenerateArgs {
    /// A combination of flags that clap cannot express and that is a usage error (exit status 2).
    pub fn usage_error(&self) -> Option<String> {
        let real = if self.image.is_some() { "--image" } else { "--inverted" };
        match (self.image.is_some() || self.inverted.is_some(), self.scheduler.as_deref()) {
            (true, Some(s)) if s != "ddim" => Some(format!(
                "--scheduler {s} cannot be used with {real}: a real image is edited with DDIM, the inverse of its \
                 DDIM inversion (leave --scheduler out or give ddim)"
            )),
            _ => None,
        }
    }

    /// Whether any edit option was given.
    pub fn is_edit(&self) -> bool {
        !self.swap.is_empty() || !self.target.is_empty() || !self.reweight.is_empty()
    }

    /// The library request these flags describe (`latents`: the `--latents` file's contents).
    pub fn request(&self, prompt: &str, latents: Option<InitialNoise>) -> Request {
        Request {
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler.clone(),
            seed: self.seed,
            latents,
            height: self.height,
            width: self.width,
            sr_steps: self.sr_steps,
            sr_guidance: self.sr_guidance,
            compat: self.compat.clone(),
            swap: self.swap.clone(),
            target: self.target.clone(),
            mode: self.mode.clone(),
            reweight: self.reweight.clone(),
            blend: self.blend.clone(),
            blend_threshold: self.blend_threshold,
            blend_start: self.blend_start,
            blend_res: self.blend_res,
            cross_steps: self.cross_steps.clone(),
            cross_steps_word: self.cross_steps_word.clone(),
            self_steps: self.self_steps.clone(),
            self_max_res: self.self_max_res,
            attention: self.save_attention,
            attention_res: self.attention_res,
            resize: self.resize.clone(),
            inversion: self.inversion.clone(),
            ..Request::new(prompt)
        }
    }

    /// The session these flags open on `model`.
    pub fn session_options(&self, model: PathBuf, gpu: GpuOptions) -> Result<SessionOptions> {
        super::precision::session_options(model, gpu, &self.precision, &self.vae)
    }
}

/// A clap parser for whole-number flags whose message says what is allowed (`--steps -1`: "must be between 1 and
/// 1000", rather than clap's "invalid digit found in string"). Range checks beyond the sign are in
/// [`Request::validate`].
pub(crate) fn whole<T: std::str::FromStr + Clone + Send + Sync + 'static>(
    allowed: &'static str,
) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| s.trim().parse::<T>().map_err(|_| format!("must be {allowed}"))
}

/// Reads a latent file: tensor `latents` `[1, C, h, w]`.
pub fn read_latents(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let f = SafetensorsFile::open(path)?;
    let info =
        f.info("latents").ok_or_else(|| Error::input(format!("{}: no tensor named `latents`", path.display())))?;
    let shape = info.shape.clone();
    let [1, c, h, w] = shape[..] else {
        return Err(Error::input(format!("{}: `latents` is {shape:?}, expected [1, C, h, w]", path.display())));
    };
    let t = f.read_f32("latents")?;
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::input(format!("{}: `latents` holds {bad}", path.display())));
    }
    Ok((t.data, [1, c, h, w]))
}

/// An optional f32 tensor of a `--latents` file, which must be `[1, 3, 4h, 4w]` when present.
fn read_sr_noise(path: &Path, name: &str, base: [usize; 4]) -> Result<Option<Vec<f32>>> {
    let f = SafetensorsFile::open(path)?;
    let Some(info) = f.info(name) else { return Ok(None) };
    let shape = info.shape.clone();
    let want = vec![1, 3, base[2] * 4, base[3] * 4];
    let t = f.read_f32(name)?;
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::input(format!("{}: `{name}` holds {bad}", path.display())));
    }
    if shape != want {
        return Err(Error::input(format!("--latents: `{name}` is {shape:?}, expected {want:?} (4× the base noise)")));
    }
    Ok(Some(t.data))
}

/// The `--latents` file as request data (a cascade's SR noises when the file has them).
pub fn read_noise(path: &Path, cascade: bool) -> Result<InitialNoise> {
    let (latents, shape) = read_latents(path)?;
    let (sr_aug_noise, sr_latents) = if cascade {
        (read_sr_noise(path, "sr_aug_noise", shape)?, read_sr_noise(path, "sr_latents", shape)?)
    } else {
        (None, None)
    };
    Ok(InitialNoise { shape, latents, sr_aug_noise, sr_latents })
}

/// The shipped default model: `models/default` under the working folder, else under the source tree the binary
/// was built from (so `cargo run` and `target/release/p2p-wgpu` find it on the machine that built them).
pub fn default_model() -> Option<PathBuf> {
    let rel = Path::new("models").join("default");
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)]
        .into_iter()
        .find(|d| d.join(crate::weights::folder::MODEL_INDEX).is_file())
}

/// The model folder: `--model`, else the shipped default.
pub fn model_dir(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(m) => Ok(m.to_path_buf()),
        None => default_model().ok_or_else(|| {
            Error::input(
                "--model DIR is required: no default model found (models/default in the working folder or in the \
                 source tree this binary was built from)",
            )
        }),
    }
}

/// The progress bar of a run's UNet evaluations (stderr).
pub fn step_bar() -> Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .map_err(|e| Error::msg(format!("progress bar: {e}")))?,
    );
    Ok(bar)
}

/// Runs the main command: flags → `Request`, `Session::open`, `Session::run` with a progress bar, then the files.
pub fn run(a: &GenerateArgs, gpu: GpuOptions) -> Result<()> {
    let inverted = a.inverted.as_deref().map(Inversion::read).transpose()?;
    let prompt = match (&a.prompt, &inverted) {
        (Some(p), _) => p.clone(),
        (None, Some(inv)) => inv.prompt.clone(),
        (None, None) => return Err(Error::input("--prompt is required")),
    };
    let model = model_dir(a.model.as_deref())?;
    crate::weights::folder::DiffusersFolder::open(&model)?;
    let cascade = is_cascade(&model)?;
    let latents = a.latents.as_deref().map(|p| read_noise(p, cascade)).transpose()?;
    let mut req = a.request(&prompt, latents);
    if let Some(p) = &a.image {
        req.image = Some(read_image(p)?);
    }
    req.inverted = inverted;
    req.validate()?;
    // The edit needs only the tokenizer: check every word before the GPU starts.
    let prompts = if req.is_edit() {
        let tok = crate::text::Tokenizer::from_model_dir(&model)?;
        let given = req.steps.or(req.inverted.as_ref().map(|i| i.steps));
        let steps = match cascade {
            true => given.or(crate::models::cascade::CascadeIndex::read(&model)?.num_inference_steps),
            false => given,
        };
        crate::p2p::EditPlan::new(&req.edit_spec()?, &tok, steps.unwrap_or(50))?.prompts
    } else {
        vec![prompt.clone()]
    };
    // Every path the run will write is checked now, before the model loads; the folder is made once the run is
    // known to be valid (crate::output::files has the policy).
    let names = Output::file_names(prompts.len(), req.is_real_image(), req.attention, req.blend.is_some(), a.save_raw);
    let extra: Vec<(&str, &Path)> = a.save_latents.iter().map(|p| ("--save-latents", p.as_path())).collect();
    let targets = OutputFiles::new(&a.out, &names, &extra);
    let inputs: Vec<&Path> = a.latents.iter().chain(&a.image).chain(&a.inverted).map(PathBuf::as_path).collect();
    targets.check(&[model.as_path()], &inputs)?;
    let session = Session::open(&a.session_options(model, gpu)?)?;
    session.check(&req)?;
    targets.create_folder()?;
    // A random seed is printed once the model has loaded and before the run, so that a run that fails can be repeated.
    if req.seed.is_none() && !req.is_real_image() && (req.latents.is_none() || cascade) {
        let s = crate::session::random_seed();
        req.seed = Some(s);
        if req.latents.as_ref().is_none_or(|n| n.sr_aug_noise.is_none() || n.sr_latents.is_none()) {
            say(&format!("seed: {s}"));
        }
    }

    let bar = step_bar()?;
    let mut progress = |s: &Step| {
        bar.set_length(s.of as u64);
        bar.set_position(s.done as u64);
        true
    };
    let out = session.run(&req, &mut progress)?;
    bar.finish_and_clear();
    for w in &out.warnings {
        say(&format!("warning: {w}"));
    }
    let mut set = WriteSet::new();
    if let Some(s) = &a.save_latents {
        set.add(s.clone(), out.noise_file()?);
    }
    for (name, bytes) in out.files(Files { raw: a.save_raw })? {
        set.add(a.out.join(name), bytes);
    }
    let written = set.commit()?;
    let stale = remove_stale(&a.out, &written, Output::is_output_name)?;
    if !stale.is_empty() {
        say(&format!(
            "removed {} output(s) of an earlier run in {}: {}",
            stale.len(),
            a.out.display(),
            stale.join(", ")
        ));
    }
    let (h, w) = out.image_hw;
    let secs = session.load_seconds + out.timings.run;
    let what = if out.input.is_some() { "input + " } else { "" };
    say(&format!("wrote {what}{} image(s) of {w}x{h} to {} in {secs:.1} s", out.prompts.len(), a.out.display()));
    if let Some(p) = &session.gpu.profile {
        say(&p.table());
    }
    Ok(())
}
