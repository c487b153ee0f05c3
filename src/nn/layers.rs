//! Linear, Conv2d, GroupNorm and LayerNorm: torch.nn's modules of the same names, on NHWC activations.
use crate::error::Result;
use crate::ops::Activation;
use crate::ops::conv2d::{Conv2dOpts, conv2d, oihw_to_ohwi, out_size};
use crate::ops::matmul::{MatmulOpts, matmul};
use crate::ops::norm::{GroupNormOpts, group_norm, layer_norm};
use crate::tensor::Tensor;

use super::{Ctx, Load, key};

/// `torch.nn.Linear`: `weight` `[out, in]`, optional `bias` `[out]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    pub fn load(l: &mut Load, prefix: &str, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = l.param(&key(prefix, "weight"), &[out_features, in_features])?;
        let bias = if bias { Some(l.param(&key(prefix, "bias"), &[out_features])?) } else { None };
        Ok(Linear { weight, bias, in_features, out_features })
    }

    /// `[..., in] → [..., out]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(cx, x, Activation::None, None)
    }

    /// `act(x · Wᵀ + b) + residual`.
    pub fn forward_fused(
        &self,
        cx: &mut Ctx,
        x: &Tensor,
        act: Activation,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = self.out_features;
        }
        let out = cx.alloc(&shape)?;
        let opts = MatmulOpts { trans_b: true, bias: self.bias.as_ref(), act, residual };
        matmul(cx.gpu, &mut cx.rec, x, &self.weight, &out, &opts)?;
        Ok(out)
    }
}

/// `torch.nn.Conv2d` (square kernel, stride and padding) on NHWC input; the OIHW weight is re-laid to OHWI.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Extra padding after the last row and column (see `Conv2dOpts::pad_end`).
    pub pad_end: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &mut Load,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Conv2d> {
        let (o, i, k) = (out_channels, in_channels, kernel);
        let weight =
            l.param_with(&key(prefix, "weight"), &[o, i, k, k], &[o, k, k, i], |w| oihw_to_ohwi(&w, o, i, k, k))?;
        let bias = if bias { Some(l.param(&key(prefix, "bias"), &[o])?) } else { None };
        Ok(Conv2d { weight, bias, in_channels, out_channels, kernel, stride, padding, pad_end: 0 })
    }

    /// `[B, H, W, Cin] → [B, Ho, Wo, Cout]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(cx, x, None)
    }

    /// Convolution plus `residual` (same shape as the output), fused in the epilogue.
    pub fn forward_fused(&self, cx: &mut Ctx, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let (b, h, w) = (x.shape[0], x.shape.get(1).copied().unwrap_or(0), x.shape.get(2).copied().unwrap_or(0));
        let (ho, wo) = (
            out_size(h + self.pad_end, self.kernel, self.stride, self.padding),
            out_size(w + self.pad_end, self.kernel, self.stride, self.padding),
        );
        let out = cx.alloc(&[b, ho, wo, self.out_channels])?;
        let opts = Conv2dOpts {
            stride: self.stride,
            pad: self.padding,
            pad_end: self.pad_end,
            bias: self.bias.as_ref(),
            act: Activation::None,
            residual,
        };
        conv2d(cx.gpu, &mut cx.rec, x, &self.weight, &out, &opts)?;
        Ok(out)
    }
}

/// `torch.nn.GroupNorm` (affine) on NHWC, optionally followed by SiLU in the same kernel.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(l: &mut Load, prefix: &str, groups: usize, channels: usize, eps: f32) -> Result<GroupNorm> {
        Ok(GroupNorm {
            weight: l.param(&key(prefix, "weight"), &[channels])?,
            bias: l.param(&key(prefix, "bias"), &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Tensor, silu: bool) -> Result<Tensor> {
        let out = cx.alloc(&x.shape)?;
        let opts = GroupNormOpts { groups: self.groups, eps: self.eps, silu };
        group_norm(cx.gpu, &mut cx.rec, x, &self.weight, &self.bias, &out, &opts)?;
        Ok(out)
    }
}

/// `torch.nn.LayerNorm` over the last dim.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(l: &mut Load, prefix: &str, channels: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: l.param(&key(prefix, "weight"), &[channels])?,
            bias: l.param(&key(prefix, "bias"), &[channels])?,
            eps,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        let out = cx.alloc(&x.shape)?;
        layer_norm(cx.gpu, &mut cx.rec, x, &self.weight, &self.bias, &out, self.eps)?;
        Ok(out)
    }
}
