//! The main command: text-to-image with a Stable Diffusion folder. (Prompt-to-Prompt edit options join it in the
//! edit issue; this is plain generation.) Inputs are checked and the output folder prepared before the GPU runs.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::models::sd::{Generate, LoadOptions, StableDiffusion};
use crate::schedulers::Kind;
use crate::tensor::DType;
use crate::weights::SafetensorsFile;

use super::noise::gaussian;
use super::output::{Quantize, check_not_input, png, prepare_dir, safetensors_f32, to_rgb8, write_atomic};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Diffusers Stable Diffusion folder (model_index.json, unet/, text_encoder/, vae/, tokenizer/, scheduler/).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The prompt.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Unconditional prompt for classifier-free guidance.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Sampling steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Scheduler; default: the model's scheduler_config.json.
    #[arg(long, value_parser = ["pndm", "ddim"])]
    pub scheduler: Option<String>,
    /// Seed of the initial noise (our documented generator); default: a random seed, printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial latent (safetensors, tensor `latents` [1, C, h, w] f32); replaces the seed's noise.
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// Also write the initial latent used, so that the run can be reproduced exactly.
    #[arg(long, value_name = "FILE")]
    pub save_latents: Option<PathBuf>,
    /// Image height and width in pixels (default: the model's native size); multiples of the latent grid.
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub width: Option<usize>,
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "p2p-out")]
    pub out: PathBuf,
    /// Also write DIR/raw.safetensors: "images" [B,3,H,W] f32 in [0,1] and "latents" [B,C,h,w] final latents.
    #[arg(long)]
    pub save_raw: bool,
    /// Weight-file variant, e.g. fp16 for *.fp16.safetensors.
    #[arg(long)]
    pub variant: Option<String>,
    /// Run the text encoder and UNet in f16 (needs SHADER_F16). Default f32.
    #[arg(long, conflicts_with = "f32")]
    pub f16: bool,
    /// Run in f32 (the default).
    #[arg(long)]
    pub f32: bool,
    /// Reproduce the reference implementation's quirks (uint8 truncation).
    #[arg(long, value_parser = ["ptp"])]
    pub compat: Option<String>,
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

/// Runs the main command.
pub fn run(a: &GenerateArgs, adapter: Option<String>) -> Result<()> {
    let prompt = a.prompt.clone().ok_or_else(|| Error::msg("--prompt is required"))?;
    let model = a.model.clone().ok_or_else(|| {
        Error::msg(
            "--model DIR is required (a diffusers Stable Diffusion folder); there is no embedded default model yet",
        )
    })?;
    if a.steps == 0 || a.steps > 1000 {
        return Err(Error::msg(format!("--steps must be between 1 and 1000, got {}", a.steps)));
    }
    if !a.guidance.is_finite() {
        return Err(Error::msg(format!("--guidance must be a finite number, got {}", a.guidance)));
    }
    let latents = a.latents.as_deref().map(read_latents).transpose()?;
    let mut inputs: Vec<&Path> = vec![model.as_path()];
    if let Some(l) = &a.latents {
        inputs.push(l);
    }
    prepare_dir(&a.out)?;
    for name in ["source.png", "raw.safetensors"] {
        check_not_input(&a.out.join(name), &inputs)?;
    }
    if let Some(s) = &a.save_latents {
        check_not_input(s, &inputs)?;
    }
    let quant = if a.compat.is_some() { Quantize::Truncate } else { Quantize::Round };

    let gpu = Gpu::new(&GpuOptions { adapter })?;
    let dtype = if a.f16 {
        if !gpu.has_f16() {
            return Err(Error::msg(format!("--f16: adapter {} has no SHADER_F16", gpu.info.name)));
        }
        DType::F16
    } else {
        DType::F32
    };
    let t0 = Instant::now();
    let sd =
        StableDiffusion::load(&gpu, &model, &LoadOptions { dtype, vae_dtype: DType::F32, variant: a.variant.clone() })?;
    let c = sd.unet.config.in_channels;
    let up = sd.vae.config.upscale();
    let levels = 1usize << (sd.unet.config.block_out_channels.len() - 1);
    let (data, hw) = match latents {
        Some((d, [_, lc, h, w])) => {
            if lc != c {
                return Err(Error::msg(format!("--latents has {lc} channels; the model takes {c}")));
            }
            if a.height.is_some() || a.width.is_some() {
                return Err(Error::msg(
                    "--height/--width cannot be combined with --latents (the latent sets the size)",
                ));
            }
            (d, (h, w))
        }
        None => {
            let native = sd.unet.config.sample_size * up;
            let (ph, pw) = (a.height.unwrap_or(native), a.width.unwrap_or(native));
            let grid = up * levels;
            if ph == 0 || pw == 0 || ph % grid != 0 || pw % grid != 0 {
                return Err(Error::msg(format!(
                    "--height and --width must be positive multiples of {grid}, got {ph}x{pw}"
                )));
            }
            let seed = a.seed.unwrap_or_else(|| {
                let s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                eprintln!("seed: {s}");
                s
            });
            let (h, w) = (ph / up, pw / up);
            (gaussian(seed, c * h * w), (h, w))
        }
    };
    if hw.0 % levels != 0 || hw.1 % levels != 0 {
        return Err(Error::msg(format!("latent size {}x{} must be a multiple of {levels} for this UNet", hw.0, hw.1)));
    }
    if let Some(s) = &a.save_latents {
        write_atomic(s, &safetensors_f32(&[("latents", vec![1, c, hw.0, hw.1], &data)])?)?;
    }
    let kind = match a.scheduler.as_deref() {
        Some("pndm") => Some(Kind::Pndm),
        Some("ddim") => Some(Kind::Ddim),
        _ => None,
    };
    let g = Generate {
        prompts: vec![prompt],
        negative: a.negative_prompt.clone(),
        steps: a.steps,
        guidance: a.guidance,
        scheduler: kind,
        latents: data,
        latent_hw: hw,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .map_err(|e| Error::msg(format!("progress bar: {e}")))?,
    );
    let out = sd.generate(&gpu, &g, &mut |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();
    let (h, w) = out.image_hw;
    let rgb = to_rgb8(&out.images[..3 * h * w], h, w, quant);
    write_atomic(&a.out.join("source.png"), &png(&rgb, h, w)?)?;
    if a.save_raw {
        let lat_shape = vec![1, c, hw.0, hw.1];
        let bytes =
            safetensors_f32(&[("images", vec![1, 3, h, w], &out.images), ("latents", lat_shape, &out.latents)])?;
        write_atomic(&a.out.join("raw.safetensors"), &bytes)?;
    }
    eprintln!("wrote {} ({}x{}) in {:.1} s", a.out.join("source.png").display(), w, h, t0.elapsed().as_secs_f64());
    Ok(())
}
