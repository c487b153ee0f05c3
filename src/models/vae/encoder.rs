//! The encoder half of `AutoencoderKL` (for real-image editing).
use std::path::Path;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::{Conv2d, Ctx, Downsample2D, GroupNorm, Load, ResnetBlock2D, ResnetCfg, VaeAttention, key};
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use super::{DECODER_PREFIXES, VaeConfig};

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
