//! The decoder of diffusers' `AutoencoderKL` (`post_quant_conv`, `decoder.conv_in`, mid block with one
//! self-attention, `UpDecoderBlock2D`s, `conv_norm_out` + SiLU, `conv_out`), built from `vae/config.json`.
//! `decode` takes latents already divided by `scaling_factor` (as diffusers' `vae.decode`). Activations NHWC.
//! `VaeEncoder` is the encoder half (for real-image editing): image → posterior mean and log-variance.
use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Conv2d, Ctx, Downsample2D, GroupNorm, Load, ResnetBlock2D, ResnetCfg, Upsample2D, VaeAttention, key};
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use super::config::Config;

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
                return Err(Error::msg(format!("{name}: {k} must be {n} × {want}, found {types:?}")));
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
            return Err(Error::msg(format!(
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

struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

pub struct VaeDecoder {
    /// Bytes of the parameters on the GPU.
    pub param_bytes: u64,
    pub config: VaeConfig,
    pub dtype: DType,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: VaeAttention,
    up: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// Loads the decoder half of `vae/` into `dtype` tensors (f32 unless asked: an f16 SD VAE overflows).
    pub fn load(gpu: &Gpu, dir: &Path, variant: Option<&str>, dtype: DType) -> Result<VaeDecoder> {
        let config = VaeConfig::read(dir)?;
        let mut w = Loader::open(dir, variant)?;
        let mut l = Load::new(gpu, &mut w, dtype);
        let model = Self::build(&mut l, config, dtype).map(|m| Self { param_bytes: l.bytes, ..m });
        // The encoder half is loaded by `VaeEncoder`.
        for k in ENCODER_PREFIXES {
            w.ignore_prefix(k);
        }
        w.finish()?;
        model
    }

    fn build(l: &mut Load, c: VaeConfig, dtype: DType) -> Result<VaeDecoder> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let (g, eps) = (c.norm_num_groups, 1e-6);
        let rcfg =
            |i: usize, o: usize| ResnetCfg { in_channels: i, out_channels: o, temb_channels: None, groups: g, eps };
        let lat = c.latent_channels;
        let post_quant_conv = Conv2d::load(l, "post_quant_conv", lat, lat, 1, 1, 0, true)?;
        let last = ch[n - 1];
        let conv_in = Conv2d::load(l, "decoder.conv_in", lat, last, 3, 1, 1, true)?;
        let mid_resnets = [
            ResnetBlock2D::load(l, "decoder.mid_block.resnets.0", rcfg(last, last))?,
            ResnetBlock2D::load(l, "decoder.mid_block.resnets.1", rcfg(last, last))?,
        ];
        let mid_attention = VaeAttention::load(l, "decoder.mid_block.attentions.0", last, g, eps)?;
        let mut up = Vec::with_capacity(n);
        let mut prev = last;
        for b in 0..n {
            let out = ch[n - 1 - b];
            let p = format!("decoder.up_blocks.{b}");
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        l,
                        &key(&p, &format!("resnets.{j}")),
                        rcfg(if j == 0 { prev } else { out }, out),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if b + 1 < n { Some(Upsample2D::load(l, &key(&p, "upsamplers.0"), out)?) } else { None };
            up.push(UpDecoderBlock { resnets, upsampler });
            prev = out;
        }
        let conv_norm_out = GroupNorm::load(l, "decoder.conv_norm_out", g, ch[0], eps)?;
        let conv_out = Conv2d::load(l, "decoder.conv_out", ch[0], c.out_channels, 3, 1, 1, true)?;
        Ok(VaeDecoder {
            param_bytes: 0,
            config: c,
            dtype,
            post_quant_conv,
            conv_in,
            mid_resnets,
            mid_attention,
            up,
            conv_norm_out,
            conv_out,
        })
    }

    /// Records the decoder: `z` `[B, h, w, latent]` (already divided by `scaling_factor`) → `[B, H, W, out]`
    /// in [-1, 1] (unclamped).
    pub fn forward(&self, cx: &mut Ctx, z: &Tensor) -> Result<Tensor> {
        let z = self.post_quant_conv.forward(cx, z)?;
        let mut x = self.conv_in.forward(cx, &z)?;
        x = self.mid_resnets[0].forward(cx, &x, None)?;
        x = self.mid_attention.forward(cx, &x)?;
        x = self.mid_resnets[1].forward(cx, &x, None)?;
        for blk in &self.up {
            for r in &blk.resnets {
                x = r.forward(cx, &x, None)?;
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(cx, &x)?;
            }
        }
        let h = self.conv_norm_out.forward(cx, &x, true)?;
        self.conv_out.forward(cx, &h)
    }
}

/// Key prefixes of the encoder half.
const ENCODER_PREFIXES: [&str; 2] = ["encoder.", "quant_conv."];
/// Key prefixes of the decoder half.
const DECODER_PREFIXES: [&str; 2] = ["decoder.", "post_quant_conv."];

struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

/// The encoder half of `AutoencoderKL`: `encoder.conv_in`, `DownEncoderBlock2D`s (stride-2 downsamplers that pad
/// (0, 1, 0, 1)), the mid block with attention, `conv_norm_out` + SiLU, `conv_out`, then `quant_conv`.
pub struct VaeEncoder {
    /// Bytes of the parameters on the GPU.
    pub param_bytes: u64,
    pub config: VaeConfig,
    pub dtype: DType,
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock>,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: VaeAttention,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
}

impl VaeEncoder {
    pub fn load(gpu: &Gpu, dir: &Path, variant: Option<&str>, dtype: DType) -> Result<VaeEncoder> {
        let config = VaeConfig::read(dir)?;
        let mut w = Loader::open(dir, variant)?;
        let mut l = Load::new(gpu, &mut w, dtype);
        let model = Self::build(&mut l, config, dtype).map(|m| Self { param_bytes: l.bytes, ..m });
        for k in DECODER_PREFIXES {
            w.ignore_prefix(k);
        }
        w.finish()?;
        model
    }

    fn build(l: &mut Load, c: VaeConfig, dtype: DType) -> Result<VaeEncoder> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let (g, eps) = (c.norm_num_groups, 1e-6);
        let rcfg =
            |i: usize, o: usize| ResnetCfg { in_channels: i, out_channels: o, temb_channels: None, groups: g, eps };
        let conv_in = Conv2d::load(l, "encoder.conv_in", c.in_channels, ch[0], 3, 1, 1, true)?;
        let mut down = Vec::with_capacity(n);
        let mut prev = ch[0];
        for (b, &out) in ch.iter().enumerate() {
            let p = format!("encoder.down_blocks.{b}");
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        l,
                        &key(&p, &format!("resnets.{j}")),
                        rcfg(if j == 0 { prev } else { out }, out),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if b + 1 < n {
                let mut d = Downsample2D::load(l, &key(&p, "downsamplers.0"), out, 0)?;
                d.conv.pad_end = 1;
                Some(d)
            } else {
                None
            };
            down.push(DownEncoderBlock { resnets, downsampler });
            prev = out;
        }
        let last = ch[n - 1];
        let lat2 = 2 * c.latent_channels;
        Ok(VaeEncoder {
            param_bytes: 0,
            mid_resnets: [
                ResnetBlock2D::load(l, "encoder.mid_block.resnets.0", rcfg(last, last))?,
                ResnetBlock2D::load(l, "encoder.mid_block.resnets.1", rcfg(last, last))?,
            ],
            mid_attention: VaeAttention::load(l, "encoder.mid_block.attentions.0", last, g, eps)?,
            conv_norm_out: GroupNorm::load(l, "encoder.conv_norm_out", g, last, eps)?,
            conv_out: Conv2d::load(l, "encoder.conv_out", last, lat2, 3, 1, 1, true)?,
            quant_conv: Conv2d::load(l, "quant_conv", lat2, lat2, 1, 1, 0, true)?,
            config: c,
            dtype,
            conv_in,
            down,
        })
    }

    /// Records the encoder: `image` `[B, H, W, in]` in [-1, 1] → the moments `[B, h, w, 2·latent]` (mean, then
    /// log-variance before diffusers' clamp to [-30, 20]).
    pub fn forward(&self, cx: &mut Ctx, image: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(cx, image)?;
        for blk in &self.down {
            for r in &blk.resnets {
                x = r.forward(cx, &x, None)?;
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(cx, &x)?;
            }
        }
        x = self.mid_resnets[0].forward(cx, &x, None)?;
        x = self.mid_attention.forward(cx, &x)?;
        x = self.mid_resnets[1].forward(cx, &x, None)?;
        let h = self.conv_norm_out.forward(cx, &x, true)?;
        let m = self.conv_out.forward(cx, &h)?;
        self.quant_conv.forward(cx, &m)
    }

    /// Encodes NHWC images in [-1, 1] now; returns (mean, logvar) as NHWC `[B, h, w, latent]` host vectors, logvar
    /// clamped to [-30, 20] as diffusers does.
    pub fn encode(&self, gpu: &Gpu, image: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut cx = Ctx::new(gpu, self.dtype);
        let moments = self.forward(&mut cx, image)?;
        cx.flush()?;
        let v = moments.to_f32(gpu)?;
        let l = self.config.latent_channels;
        let (mut mean, mut logvar) = (Vec::with_capacity(v.len() / 2), Vec::with_capacity(v.len() / 2));
        for px in v.chunks(2 * l) {
            mean.extend_from_slice(&px[..l]);
            logvar.extend(px[l..].iter().map(|x| x.clamp(-30.0, 20.0)));
        }
        Ok((mean, logvar))
    }
}
