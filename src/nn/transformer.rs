//! diffusers' attention blocks on NHWC activations:
//! - `Attention` (`to_q`, `to_k`, `to_v`, `to_out.0`), self- or cross-attention, computed by the flash kernel;
//! - `BasicTransformerBlock` (LayerNorm → self-attention, LayerNorm → cross-attention, LayerNorm → GEGLU
//!   feed-forward, each with a residual) and `Transformer2DModel` (GroupNorm, `proj_in`, the blocks, `proj_out`,
//!   residual), as the SD 1.x/2.x UNet uses them (`use_linear_projection` either way: a 1×1 conv over NHWC is the
//!   same linear map);
//! - the VAE's single-head `Attention` with its own `group_norm` and residual.
use crate::error::Result;
use crate::ops::Activation;
use crate::ops::attention::{
    AttentionOpts, CrossEdit, CrossEditOpts, HEAD_DIMS, Inject, Store, attention, cross_attention_edit,
};
use crate::ops::elementwise::geglu;
use crate::ops::softmax::attention_materialized;
use crate::tensor::Tensor;

use super::{Ctx, GroupNorm, LayerNorm, Linear, Load, key};

/// Prompt-to-Prompt hooks for the attention layers of one recorded UNet call (docs/DESIGN.md §4). Batch rows are
/// `[uncond × B, cond × B]`; the conditional source is row `src_row` and its targets the rows after it.
pub struct AttnHooks<'a> {
    /// Edit data of the cross-attention layers (rewritten by the host before each replay).
    pub edit: &'a CrossEdit,
    pub src_row: usize,
    /// Inject the source's self-attention into the targets in layers with at most `self_max_tokens` queries.
    pub inject_self: bool,
    pub self_max_tokens: usize,
    /// Attention stores: cross layers with `tokens` queries add their edited maps' mean over heads and layers.
    pub stores: Vec<StoreAt<'a>>,
}

/// A running store of cross-attention maps at one resolution: `buf` `[1 + T, tokens, keys]` f32, to which each
/// of the `layers` layers with `tokens` queries adds its head-summed maps divided by `heads · layers`.
pub struct StoreAt<'a> {
    pub tokens: usize,
    pub layers: usize,
    pub buf: &'a Tensor,
}

/// `Attention`: `heads` heads over `inner = heads · head_dim` channels.
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    /// `context_dim` is the key/value input width (the text width for cross-attention); `qkv_bias` as the model.
    pub fn load(
        l: &mut Load,
        prefix: &str,
        dim: usize,
        context_dim: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Attention> {
        Ok(Attention {
            to_q: Linear::load(l, &key(prefix, "to_q"), dim, dim, qkv_bias)?,
            to_k: Linear::load(l, &key(prefix, "to_k"), context_dim, dim, qkv_bias)?,
            to_v: Linear::load(l, &key(prefix, "to_v"), context_dim, dim, qkv_bias)?,
            to_out: Linear::load(l, &key(prefix, "to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `x` `[B, N, C]`, `context` `[B, M, Cc]` (None: self-attention); returns `to_out(attn) + residual`. With
    /// `hooks`, cross-attention applies the Prompt-to-Prompt edit (and stores maps) and self-attention injects the
    /// source's maps.
    pub fn forward(
        &self,
        cx: &mut Ctx,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: Option<&Tensor>,
        hooks: Option<&AttnHooks>,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(cx, x)?;
        let k = self.to_k.forward(cx, ctx)?;
        let v = self.to_v.forward(cx, ctx)?;
        let a = cx.alloc(&q.shape)?;
        let d = self.to_q.out_features / self.heads;
        let nq = q.shape[1];
        if let (Some(h), Some(_)) = (hooks, context) {
            let store = h
                .stores
                .iter()
                .find(|s| s.tokens == nq)
                .map(|s| Store { buf: s.buf, scale: 1.0 / (self.heads * s.layers) as f32 });
            let opts = CrossEditOpts { heads: self.heads, scale: None, src_row: h.src_row, edit: h.edit, store };
            cross_attention_edit(cx.gpu, &mut cx.rec, &q, &k, &v, &a, &opts)?;
        } else if HEAD_DIMS.contains(&d) {
            let inject = hooks.filter(|h| h.inject_self && nq <= h.self_max_tokens).map(|h| Inject {
                src: h.src_row,
                first: h.src_row + 1,
                count: h.edit.targets,
            });
            attention(
                cx.gpu,
                &mut cx.rec,
                &q,
                &k,
                &v,
                &a,
                &AttentionOpts { inject, ..AttentionOpts::heads(self.heads) },
            )?;
        } else {
            // Head dims the flash kernel is not built for (the SD VAE's single 512-wide head): scores materialised.
            attention_materialized(cx.gpu, &mut cx.rec, &q, &k, &v, &a, self.heads, None)?;
        }
        self.to_out.forward_fused(cx, &a, Activation::None, residual)
    }
}

/// `BasicTransformerBlock` with the SD configuration (layer norms, GEGLU feed-forward, no dropout).
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff_proj: Linear,
    pub ff_out: Linear,
}

impl BasicTransformerBlock {
    pub fn load(
        l: &mut Load,
        prefix: &str,
        dim: usize,
        heads: usize,
        cross_dim: usize,
    ) -> Result<BasicTransformerBlock> {
        let ff = 4 * dim;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(l, &key(prefix, "norm1"), dim, 1e-5)?,
            attn1: Attention::load(l, &key(prefix, "attn1"), dim, dim, heads, false)?,
            norm2: LayerNorm::load(l, &key(prefix, "norm2"), dim, 1e-5)?,
            attn2: Attention::load(l, &key(prefix, "attn2"), dim, cross_dim, heads, false)?,
            norm3: LayerNorm::load(l, &key(prefix, "norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(l, &key(prefix, "ff.net.0.proj"), dim, 2 * ff, true)?,
            ff_out: Linear::load(l, &key(prefix, "ff.net.2"), ff, dim, true)?,
        })
    }

    /// `x` `[B, N, C]`, `text` `[B, M, cross_dim]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Tensor, text: &Tensor, hooks: Option<&AttnHooks>) -> Result<Tensor> {
        let h = self.norm1.forward(cx, x)?;
        let x = self.attn1.forward(cx, &h, None, Some(x), hooks)?;
        let h = self.norm2.forward(cx, &x)?;
        let x = self.attn2.forward(cx, &h, Some(text), Some(&x), hooks)?;
        let h = self.norm3.forward(cx, &x)?;
        let p = self.ff_proj.forward(cx, &h)?;
        let mut gshape = p.shape.clone();
        *gshape.last_mut().unwrap() /= 2;
        let g = cx.alloc(&gshape)?;
        geglu(cx.gpu, &mut cx.rec, &p, &g)?;
        self.ff_out.forward_fused(cx, &g, Activation::None, Some(&x))
    }
}

/// `Transformer2DModel` (continuous input) with `layers` blocks.
pub struct Transformer2D {
    pub norm: GroupNorm,
    pub proj_in: Linear,
    pub blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Linear,
}

/// Loads a 1×1 conv (`[o, i, 1, 1]`) or a linear (`[o, i]`) as a linear map over channels.
fn proj(l: &mut Load, prefix: &str, i: usize, o: usize, linear: bool) -> Result<Linear> {
    if linear {
        return Linear::load(l, prefix, i, o, true);
    }
    let weight = l.param_with(&key(prefix, "weight"), &[o, i, 1, 1], &[o, i], |w| w)?;
    let bias = Some(l.param(&key(prefix, "bias"), &[o])?);
    Ok(Linear { weight, bias, in_features: i, out_features: o })
}

/// Geometry of a `Transformer2DModel`.
#[derive(Clone, Copy, Debug)]
pub struct TransformerCfg {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl Transformer2D {
    pub fn load(l: &mut Load, prefix: &str, c: TransformerCfg) -> Result<Transformer2D> {
        let ch = c.channels;
        let norm = GroupNorm::load(l, &key(prefix, "norm"), c.groups, ch, 1e-6)?;
        let proj_in = proj(l, &key(prefix, "proj_in"), ch, ch, c.linear_projection)?;
        let blocks = (0..c.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    l,
                    &key(prefix, &format!("transformer_blocks.{i}")),
                    ch,
                    c.heads,
                    c.cross_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = proj(l, &key(prefix, "proj_out"), ch, ch, c.linear_projection)?;
        Ok(Transformer2D { norm, proj_in, blocks, proj_out })
    }

    /// `x` `[B, H, W, C]`, `text` `[B, M, cross_dim]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Tensor, text: &Tensor, hooks: Option<&AttnHooks>) -> Result<Tensor> {
        let [b, hh, ww, c] = x.shape[..] else {
            return Err(crate::Error::shape("transformer", format!("expected NHWC, got {:?}", x.shape)));
        };
        let h = self.norm.forward(cx, x, false)?.reshape(&[b, hh * ww, c])?;
        let mut h = self.proj_in.forward(cx, &h)?;
        for blk in &self.blocks {
            h = blk.forward(cx, &h, text, hooks)?;
        }
        let res = x.reshape(&[b, hh * ww, c])?;
        self.proj_out.forward_fused(cx, &h, Activation::None, Some(&res))?.reshape(&[b, hh, ww, c])
    }
}

/// The VAE mid-block attention: `group_norm`, single-head attention over the pixels with biased projections,
/// `to_out.0`, plus the input.
pub struct VaeAttention {
    pub group_norm: GroupNorm,
    pub attn: Attention,
}

impl VaeAttention {
    pub fn load(l: &mut Load, prefix: &str, channels: usize, groups: usize, eps: f32) -> Result<VaeAttention> {
        Ok(VaeAttention {
            group_norm: GroupNorm::load(l, &key(prefix, "group_norm"), groups, channels, eps)?,
            attn: Attention::load(l, prefix, channels, channels, 1, true)?,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Tensor) -> Result<Tensor> {
        let [b, hh, ww, c] = x.shape[..] else {
            return Err(crate::Error::shape("vae attention", format!("expected NHWC, got {:?}", x.shape)));
        };
        let h = self.group_norm.forward(cx, x, false)?.reshape(&[b, hh * ww, c])?;
        let res = x.reshape(&[b, hh * ww, c])?;
        self.attn.forward(cx, &h, None, Some(&res), None)?.reshape(&[b, hh, ww, c])
    }
}
