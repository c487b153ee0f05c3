//! The encoder half of `AutoencoderKL` (for real-image editing): the forward, and the posterior mean of a
//! picture one whole piece or in overlapping tiles blended linearly in latent space, planned over the same
//! [`DecodeOptions`] budget as the decoder (diffusers' `tiled_encode` blends its tiles' moments the same way).
use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Conv2d, Ctx, Downsample2D, GroupNorm, Load, ResnetBlock2D, ResnetCfg, VaeAttention, key};
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use super::tiling::{DecodeBytes, DecodeOptions, DecodePlan, LIVE_HALVES_PER_LEVEL, blend_tiles, plan_pieces};
use super::{DECODER_PREFIXES, VaeConfig};

/// Halves of the first level's largest activation the encoder keeps alive beyond [`LIVE_HALVES_PER_LEVEL`]: the
/// recorded arenas of the tiny SD encoder (8² to 32² latents, lavapipe) come to 1.15 × the decoder's per-level
/// figure, the surplus at full resolution (conv_in's output alive beside the first resnet's); 3 covers it.
pub const FIRST_LEVEL_EXTRA_HALVES: u64 = 3;

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

    /// Estimated memory of encoding the picture of one `h × w` latent piece in one forward, from the layer shapes
    /// (no GPU work), as [`super::VaeDecoder::estimate`] does for the decoder: the input picture, per resolution
    /// level [`LIVE_HALVES_PER_LEVEL`] / 2 activations (the full-resolution level 3/2 more) of the level's largest channel count (in its buffer size
    /// class), the mid-block attention's five activations and the moments; the attention's scores on the shared
    /// pool. Checked against recorded arenas in tests/vae_encode_tiles.rs.
    pub fn estimate(&self, gpu: &Gpu, h: usize, w: usize) -> DecodeBytes {
        let ch = &self.config.block_out_channels;
        let n = ch.len();
        let s = self.dtype.size() as u64;
        let up = self.config.upscale();
        let mut p = (h * up * w * up) as u64;
        let mut arena = p * self.config.in_channels as u64 * s;
        let mut largest = 0u64;
        let mut prev = ch[0];
        for (b, &out) in ch.iter().enumerate() {
            let level = crate::gpu::pool::size_class(p * prev.max(out) as u64 * s);
            largest = largest.max(level);
            // The first level holds [`FIRST_LEVEL_EXTRA_HALVES`] more.
            let halves = LIVE_HALVES_PER_LEVEL + if b == 0 { FIRST_LEVEL_EXTRA_HALVES } else { 0 };
            arena += halves * level / 2;
            prev = out;
            p /= 4;
        }
        let tokens = (h * w) as u64;
        let c = ch[n - 1] as u64;
        arena += 5 * tokens * c * s + tokens * 2 * self.config.latent_channels as u64 * s;
        let lim = &gpu.limits;
        let cap = crate::ops::softmax::DEFAULT_BUDGET.min(lim.max_storage_buffer_binding_size).min(lim.max_buffer_size);
        let shared = (tokens * tokens * s).min(cap) + 3 * tokens * c * s;
        DecodeBytes { arena, shared, largest }
    }

    /// How encoding a picture of `h × w` latents runs under `o` on this adapter (whole, or in latent tiles).
    pub fn encode_plan(&self, gpu: &Gpu, o: &DecodeOptions, hw: (usize, usize)) -> Result<DecodePlan> {
        let lim = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
        plan_pieces(o, hw, "vae encode", |h, w| {
            let e = self.estimate(gpu, h, w);
            e.total() <= o.budget && e.largest <= lim
        })
    }

    /// The posterior mean NHWC `[h, w, latent]` of one NHWC picture `[H, W, in]` in [-1, 1] (H, W multiples of
    /// the VAE's scale): whole, or, as [`Self::encode_plan`] says, in overlapping latent tiles, each encoded from
    /// its window of the picture and blended linearly over the overlaps.
    pub fn encode_mean(
        &self,
        gpu: &Gpu,
        image: &[f32],
        (hh, ww): (usize, usize),
        o: &DecodeOptions,
    ) -> Result<Vec<f32>> {
        let (up, ic) = (self.config.upscale(), self.config.in_channels);
        if hh % up != 0 || ww % up != 0 || image.len() != hh * ww * ic {
            return Err(Error::shape("vae encode", format!("{} values for a {hh}x{ww} picture", image.len())));
        }
        let (h, w) = (hh / up, ww / up);
        let piece = |y0: usize, x0: usize, th: usize, tw: usize| -> Result<Vec<f32>> {
            let mut crop = Vec::with_capacity(th * up * tw * up * ic);
            for y in y0 * up..(y0 + th) * up {
                crop.extend_from_slice(&image[(y * ww + x0 * up) * ic..(y * ww + (x0 + tw) * up) * ic]);
            }
            let t = Tensor::from_f32(gpu, &[1, th * up, tw * up, ic], self.dtype, &crop)?;
            Ok(self.encode(gpu, &t)?.0)
        };
        match self.encode_plan(gpu, o, (h, w))?.tile {
            None => piece(0, 0, h, w),
            Some((t, overlap)) => blend_tiles((h, w), 1, self.config.latent_channels, t, overlap, piece),
        }
    }

    /// Records (does not run) the encoder on a picture of `h × w` latents: (arena bytes, largest arena buffer).
    pub fn record(&self, gpu: &Gpu, (h, w): (usize, usize)) -> Result<(u64, u64)> {
        let up = self.config.upscale();
        let mut cx = Ctx::new(gpu, self.dtype);
        let x = Tensor::empty(gpu, &[1, h * up, w * up, self.config.in_channels], self.dtype)?;
        let _ = self.forward(&mut cx, &x)?;
        Ok(cx.arena.created_bytes())
    }
}
