//! Models built from diffusers / transformers config.json files on the kernel library: the CLIP text encoder,
//! the UNet, the VAE, and the pipelines (Stable Diffusion; the pixel cascade).
pub mod blend;
pub mod cascade;
pub mod clip;
pub mod config;
pub mod sd;
pub mod sd_edit;
pub mod unet;
pub mod vae;
