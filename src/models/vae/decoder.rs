//! The decoder half of `AutoencoderKL`: `post_quant_conv`, `decoder.conv_in`, the mid block with one
//! self-attention, `UpDecoderBlock2D`s, `conv_norm_out` + SiLU, `conv_out`.
use std::path::Path;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::{Conv2d, Ctx, GroupNorm, Load, ResnetBlock2D, ResnetCfg, Upsample2D, VaeAttention, key};
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use super::{DecodeOptions, ENCODER_PREFIXES, VaeConfig};

struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

pub struct VaeDecoder {
    /// Bytes of the parameters on the GPU.
    pub param_bytes: u64,
    pub config: VaeConfig,
    pub dtype: DType,
    /// How [`VaeDecoder::decode`] splits its work (slices always; tiles when asked or when memory is short).
    pub tiling: DecodeOptions,
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
            tiling: DecodeOptions::default(),
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
        drop(z);
        x = lean_resnet(cx, &self.mid_resnets[0], x)?;
        x = self.mid_attention.forward(cx, &x)?;
        x = lean_resnet(cx, &self.mid_resnets[1], x)?;
        for blk in &self.up {
            for r in &blk.resnets {
                x = lean_resnet(cx, r, x)?;
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(cx, &x)?;
            }
        }
        let h = self.conv_norm_out.forward(cx, &x, true)?;
        drop(x);
        self.conv_out.forward(cx, &h)
    }
}

/// A VAE resnet block (no time embedding), the same arithmetic as `ResnetBlock2D::forward`, returning each
/// temporary to the arena as soon as its last reader is recorded (and the input, when it has been consumed), so
/// that a full-resolution block keeps at most the input, one norm and two convolution outputs alive. The
/// decoder's activations are the largest of a run (256 channels at 512×512 px for SD); this cuts its arena by a
/// third. Dropping a tensor during recording is safe: later dispatches of the recording run after earlier ones.
pub(super) fn lean_resnet(cx: &mut Ctx, r: &ResnetBlock2D, x: Tensor) -> Result<Tensor> {
    let h = r.norm1.forward(cx, &x, true)?;
    let shortcut = match &r.conv_shortcut {
        Some(c) => {
            let s = c.forward(cx, &x)?;
            drop(x);
            s
        }
        None => x,
    };
    let c1 = r.conv1.forward(cx, &h)?;
    drop(h);
    let n2 = r.norm2.forward(cx, &c1, true)?;
    drop(c1);
    r.conv2.forward_fused(cx, &n2, Some(&shortcut))
}
