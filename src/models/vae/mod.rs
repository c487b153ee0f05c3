//! diffusers' `AutoencoderKL`, built from `vae/config.json` ([`VaeConfig`]): the decoder (`decoder.rs`: latents
//! already divided by `scaling_factor`, as diffusers' `vae.decode`, to pixels), the decoder's slicing, tiling and
//! memory estimate (`tiling.rs`), and the encoder (`encoder.rs`: image → posterior mean and log-variance, for
//! real-image editing). Activations NHWC.
mod decoder;
mod encoder;
mod tiling;

pub use decoder::VaeDecoder;
pub use encoder::VaeEncoder;
pub use tiling::{
    DEFAULT_DECODE_BUDGET, DEFAULT_TILE, DecodeBytes, DecodeOptions, DecodePlan, LIVE_HALVES_PER_LEVEL, Tiling,
    blend_tiles, plan_pieces, tile_starts,
};

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::weights::config::Config;

#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
}

impl VaeConfig {
    pub fn read(dir: &Path) -> Result<VaeConfig> {
        let name = "vae/config.json";
        let mut c = Config::read(dir, name)?;
        let block_out_channels = c.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        for (k, want) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let types = c.str_list(k)?;
            if types.len() != n || types.iter().any(|t| t != want) {
                return Err(Error::model(format!("{name}: {k} must be {n} × {want}, found {types:?}")));
            }
        }
        let cfg = VaeConfig {
            in_channels: c.usize_or("in_channels", 3)?,
            out_channels: c.usize_or("out_channels", 3)?,
            latent_channels: c.usize_or("latent_channels", 4)?,
            layers_per_block: c.usize_or("layers_per_block", 1)?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            sample_size: c.usize_or("sample_size", 512)?,
            scaling_factor: c.f64_or("scaling_factor", 0.18215)?,
            block_out_channels,
        };
        c.expect("act_fn", &[json!("silu")])?;
        c.expect("mid_block_add_attention", &[json!(true)])?;
        c.expect("use_quant_conv", &[json!(true)])?;
        c.expect("use_post_quant_conv", &[json!(true)])?;
        c.expect("shift_factor", &[])?;
        c.expect("latents_mean", &[])?;
        c.expect("latents_std", &[])?;
        c.expect("force_upcast", &[json!(true), json!(false)])?;
        c.finish()?;
        if n == 0 || cfg.block_out_channels.iter().any(|&ch| cfg.norm_num_groups == 0 || ch % cfg.norm_num_groups != 0)
        {
            return Err(Error::model(format!(
                "{name}: norm_num_groups {} must divide every block's channels",
                cfg.norm_num_groups
            )));
        }
        Ok(cfg)
    }

    /// Image side / latent side.
    pub fn upscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Key prefixes of the encoder half.
pub(super) const ENCODER_PREFIXES: [&str; 2] = ["encoder.", "quant_conv."];
/// Key prefixes of the decoder half.
pub(super) const DECODER_PREFIXES: [&str; 2] = ["decoder.", "post_quant_conv."];
