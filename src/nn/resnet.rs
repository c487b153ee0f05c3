//! diffusers' `ResnetBlock2D` (default `resnet_time_scale_shift`, output scale 1): GroupNorm+SiLU → conv 3×3 →
//! (+ projected time embedding) → GroupNorm+SiLU → conv 3×3, plus the input (through a 1×1 `conv_shortcut` when the
//! channel count changes). The UNet's blocks have a time embedding; the VAE's do not. Also `Downsample2D` (conv
//! 3×3 stride 2) and `Upsample2D` (nearest ×2 then conv 3×3).
use crate::error::Result;
use crate::ops::elementwise::add;
use crate::ops::resample::upsample_nearest;
use crate::tensor::Tensor;

use super::{Conv2d, Ctx, GroupNorm, Linear, Load, key};

pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

/// Geometry of a resnet block.
#[derive(Clone, Copy, Debug)]
pub struct ResnetCfg {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding, or None (VAE).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
}

impl ResnetBlock2D {
    pub fn load(l: &mut Load, prefix: &str, c: ResnetCfg) -> Result<ResnetBlock2D> {
        let (i, o) = (c.in_channels, c.out_channels);
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(l, &key(prefix, "norm1"), c.groups, i, c.eps)?,
            conv1: Conv2d::load(l, &key(prefix, "conv1"), i, o, 3, 1, 1, true)?,
            time_emb_proj: c
                .temb_channels
                .map(|t| Linear::load(l, &key(prefix, "time_emb_proj"), t, o, true))
                .transpose()?,
            norm2: GroupNorm::load(l, &key(prefix, "norm2"), c.groups, o, c.eps)?,
            conv2: Conv2d::load(l, &key(prefix, "conv2"), o, o, 3, 1, 1, true)?,
            conv_shortcut: if i != o {
                Some(Conv2d::load(l, &key(prefix, "conv_shortcut"), i, o, 1, 1, 0, true)?)
            } else {
                None
            },
        })
    }

    /// `x` `[B, H, W, Cin]`; `temb_silu` is SiLU(time embedding) `[B, T]`, shared by all blocks of a UNet call.
    pub fn forward(&self, cx: &mut Ctx, x: &Tensor, temb_silu: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm1.forward(cx, x, true)?;
        let mut h = self.conv1.forward(cx, &h)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_silu) {
            let tp = proj.forward(cx, t)?;
            let b = tp.shape[0];
            let tp = tp.reshape(&[b, 1, 1, self.conv1.out_channels])?;
            let sum = cx.alloc(&h.shape)?;
            add(cx.gpu, &mut cx.rec, &h, &tp, &sum)?;
            h = sum;
        }
        let h = self.norm2.forward(cx, &h, true)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(cx, x)?,
            None => x.clone(),
        };
        self.conv2.forward_fused(cx, &h, Some(&shortcut))
    }
}

/// `Downsample2D` with a conv: 3×3, stride 2, padding 1 (`downsamplers.0.conv`).
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn load(l: &mut Load, prefix: &str, channels: usize, padding: usize) -> Result<Downsample2D> {
        Ok(Downsample2D { conv: Conv2d::load(l, &key(prefix, "conv"), channels, channels, 3, 2, padding, true)? })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(cx, x)
    }
}

/// `Upsample2D` with a conv: nearest ×2, then 3×3 padding 1 (`upsamplers.0.conv`).
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(l: &mut Load, prefix: &str, channels: usize) -> Result<Upsample2D> {
        Ok(Upsample2D { conv: Conv2d::load(l, &key(prefix, "conv"), channels, channels, 3, 1, 1, true)? })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        let [b, h, w, c] = x.shape[..] else {
            return Err(crate::Error::shape("upsample", format!("expected NHWC, got {:?}", x.shape)));
        };
        let up = cx.alloc(&[b, 2 * h, 2 * w, c])?;
        upsample_nearest(cx.gpu, &mut cx.rec, x, &up, 2)?;
        self.conv.forward(cx, &up)
    }
}
