//! A Stable Diffusion 1.x/2.x diffusers folder loaded onto the GPU (tokenizer, CLIP text encoder, UNet, VAE
//! decoder, scheduler config; the VAE encoder on first use), its load options, and the NCHW ↔ NHWC conversions the
//! pipelines use. Sampling and decoding are in `pipelines::sd`.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::schedulers::SchedulerConfig;
use crate::tensor::DType;
use crate::text::Tokenizer;
use crate::weights::folder::{DiffusersFolder, SCHEDULER, TEXT_ENCODER, TOKENIZER, UNET, VAE};

use super::clip::ClipTextModel;
use super::unet::UNet;
use super::vae::{VaeDecoder, VaeEncoder};

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
    /// The VAE encoder (real-image editing), loaded by [`StableDiffusion::encoder`] on first use.
    encoder: OnceLock<VaeEncoder>,
    /// Where and how the encoder loads: the vae folder, the weight variant and the VAE's storage type.
    encoder_source: (PathBuf, Option<String>, DType),
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

impl StableDiffusion {
    /// Loads a diffusers Stable Diffusion folder.
    pub fn load(gpu: &Gpu, dir: &Path, o: &LoadOptions) -> Result<StableDiffusion> {
        let variant = o.variant.as_deref();
        let [te, tok, un, va, sc] =
            DiffusersFolder::open(dir)?.component_dirs([TEXT_ENCODER, TOKENIZER, UNET, VAE, SCHEDULER])?;
        let text_encoder = ClipTextModel::load(gpu, &te, variant, o.dtype)?;
        let tokenizer = Tokenizer::from_dir(tok, text_encoder.config.max_position_embeddings)?;
        let unet = UNet::load(gpu, &un, variant, o.dtype)?;
        let vae = VaeDecoder::load(gpu, &va, variant, o.vae_dtype)?;
        let scheduler = SchedulerConfig::read(&sc)?;
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size {
            return Err(Error::model(format!(
                "unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                unet.config.cross_attention_dim, text_encoder.config.hidden_size
            )));
        }
        if vae.config.latent_channels != unet.config.in_channels {
            return Err(Error::model(format!(
                "vae latent_channels {} does not match unet in_channels {}",
                vae.config.latent_channels, unet.config.in_channels
            )));
        }
        let encoder_source = (va, o.variant.clone(), o.vae_dtype);
        Ok(StableDiffusion { tokenizer, text_encoder, unet, vae, scheduler, encoder: OnceLock::new(), encoder_source })
    }

    /// The VAE encoder, loaded from the model folder the first time it is asked for (a text-to-image session never
    /// pays for it).
    pub fn encoder(&self, gpu: &Gpu) -> Result<&VaeEncoder> {
        if let Some(e) = self.encoder.get() {
            return Ok(e);
        }
        let (dir, variant, dtype) = &self.encoder_source;
        let e = VaeEncoder::load(gpu, dir, variant.as_deref(), *dtype)?;
        Ok(self.encoder.get_or_init(|| e))
    }
}
