//! Models built from diffusers / transformers config.json files on the kernel library: the CLIP text encoder,
//! the UNet, the VAE, and the folders that combine them (Stable Diffusion; the pixel cascade), loaded. Their runs are
//! in `pipelines/`.
pub mod cascade;
pub mod clip;
pub mod sd;
pub mod unet;
pub mod vae;
