//! The VAE tiling flags shared by the main command, `invert` and `info` (one definition, so the three agree on
//! names, defaults and help). They govern the decoder and, for real images, the encoder.
use super::generate::whole;
use crate::error::{Error, Result};
use crate::models::vae::{DEFAULT_DECODE_BUDGET, DecodeOptions, Tiling};

#[derive(clap::Args, Debug, Clone)]
pub struct VaeArgs {
    /// Decode (and encode an --image) in overlapping tiles even when the image fits (default: only when one
    /// image's decode or encode exceeds --vae-budget or an adapter buffer limit). Images are always decoded one at
    /// a time.
    #[arg(long)]
    pub vae_tile: bool,
    /// Side of a VAE tile in pixels (default: the largest that fits, or half the image side, at most 512, with
    /// --vae-tile); a multiple of the VAE's upscale factor.
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("a positive number of pixels"), value_name = "PX")]
    pub vae_tile_size: Option<usize>,
    /// Memory one image's (or tile's) decode or encode may use, in MiB, before tiling.
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>("a positive number of MiB"), value_name = "MIB", default_value_t = DEFAULT_DECODE_BUDGET >> 20)]
    pub vae_budget: u64,
}

impl Default for VaeArgs {
    fn default() -> Self {
        VaeArgs { vae_tile: false, vae_tile_size: None, vae_budget: DEFAULT_DECODE_BUDGET >> 20 }
    }
}

impl VaeArgs {
    /// The options of `--vae-tile` and `--vae-budget` (`--vae-tile-size` is in pixels, converted with
    /// [`DecodeOptions::with_tile_px`] once the VAE is loaded).
    pub fn decode_options(&self) -> Result<DecodeOptions> {
        if self.vae_budget == 0 {
            return Err(Error::input("--vae-budget must be positive"));
        }
        Ok(DecodeOptions {
            tiling: if self.vae_tile { Tiling::Always } else { Tiling::Auto },
            budget: self.vae_budget << 20,
            tile: None,
            overlap: None,
        })
    }
}
