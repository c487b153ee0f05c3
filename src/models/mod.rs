//! Models built from diffusers / transformers config.json files on the kernel library: the CLIP text encoder,
//! (later) the UNet and the VAE.
pub mod clip;
pub mod config;
pub mod sd;
pub mod unet;
pub mod vae;
