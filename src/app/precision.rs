//! The weight-variant and precision flags shared by the main command, `invert` and `info` (one definition, so the
//! three agree on names, defaults and help).
use std::path::PathBuf;

use super::vae::VaeArgs;
use crate::error::Result;
use crate::gpu::GpuOptions;
use crate::session::{Precision, SessionOptions};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PrecisionArgs {
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
    /// Run the VAE in f16 too (default f32: an f16 SD VAE can overflow).
    #[arg(long)]
    pub vae_f16: bool,
}

impl PrecisionArgs {
    /// The session's precision options.
    pub fn precision(&self) -> Precision {
        Precision { f16: self.f16, f32: self.f32, vae_f16: self.vae_f16 }
    }
}

/// The session the shared precision and VAE flags open on `model` (the main command, `invert`, `batch`, `serve`).
pub fn session_options(model: PathBuf, gpu: GpuOptions, p: &PrecisionArgs, v: &VaeArgs) -> Result<SessionOptions> {
    Ok(SessionOptions {
        gpu,
        precision: p.precision(),
        variant: p.variant.clone(),
        decode: v.decode_options()?,
        vae_tile_px: v.vae_tile_size,
        ..SessionOptions::new(model)
    })
}
