//! `p2p-wgpu invert`: DDIM-inverts a picture once and writes the inversion file (`session::inversion`), so that
//! many edits can start from it (`--inverted FILE`) without inverting again.
use std::path::{Path, PathBuf};

use super::console::say;
use super::generate::{model_dir, read_image, step_bar, whole};
use super::precision::PrecisionArgs;
use super::vae::VaeArgs;
use crate::error::Result;
use crate::gpu::GpuOptions;
use crate::output::{OutputFiles, write_atomic};
use crate::pipelines::Step;
use crate::session::{Request, Session};

#[derive(clap::Args, Debug, Clone)]
pub struct InvertArgs {
    /// Model folder (as for the main command; default: the shipped models/default).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The picture (PNG, JPEG or WebP).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// What the picture shows: the source prompt of every edit made from this inversion.
    #[arg(long)]
    pub prompt: String,
    /// The inversion file to write (safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// DDIM steps [default: the model's `num_inference_steps`, else 50]; edits from the file use the same.
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("between 1 and 1000"))]
    pub steps: Option<usize>,
    /// Cascade: super-resolution DDIM steps [default: the model's `sr_num_inference_steps`, else --steps].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("between 1 and 1000"))]
    pub sr_steps: Option<usize>,
    /// Image height and width in pixels (default: the model's native size), as for the main command.
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub height: Option<usize>,
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"))]
    pub width: Option<usize>,
    /// How the picture becomes the model's size: crop (the default), stretch or pad.
    #[arg(long, value_parser = ["crop", "stretch", "pad"])]
    pub resize: Option<String>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The VAE encoder's tiling (Stable Diffusion; as the main command's flags: an edit from this file equals
    /// the `--image` edit when both encode alike).
    #[command(flatten)]
    pub vae: VaeArgs,
}

/// Runs `invert`: checks every input and the output path, loads the model, inverts, writes the file atomically.
pub fn run(a: &InvertArgs, gpu: GpuOptions) -> Result<()> {
    let model = model_dir(a.model.as_deref())?;
    crate::weights::folder::DiffusersFolder::open(&model)?;
    let req = Request {
        steps: a.steps,
        sr_steps: a.sr_steps,
        height: a.height,
        width: a.width,
        resize: a.resize.clone(),
        image: Some(read_image(&a.image)?),
        ..Request::new(a.prompt.clone())
    };
    req.validate()?;
    let folder = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let targets = OutputFiles::new(folder, &[], &[("--out", a.out.as_path())]);
    targets.check(&[model.as_path()], &[a.image.as_path()])?;
    let options = super::precision::session_options(model, gpu, &a.precision, &a.vae)?;
    let session = Session::open(&options)?;
    session.check(&req)?;
    let bar = step_bar()?;
    let mut progress = |s: &Step| {
        bar.set_length(s.of as u64);
        bar.set_position(s.done as u64);
        true
    };
    let t0 = std::time::Instant::now();
    let inv = session.invert(&req, &mut progress)?;
    bar.finish_and_clear();
    write_atomic(&a.out, &inv.to_safetensors()?)?;
    let sr = inv.sr_steps.map_or(String::new(), |s| format!(" + {s} SR"));
    say(&format!(
        "wrote the inversion of {}x{} ({} steps{sr}) to {} in {:.1} s",
        inv.input.width,
        inv.input.height,
        inv.steps,
        a.out.display(),
        session.load_seconds + t0.elapsed().as_secs_f64()
    ));
    Ok(())
}
