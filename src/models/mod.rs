//! Models built from diffusers / transformers config.json files on the kernel library: the CLIP text encoder,
//! (later) the UNet and the VAE.
pub mod blend;
pub mod clip;
pub mod config;
pub mod sd;
pub mod sd_edit;
pub mod unet;
pub mod vae;
