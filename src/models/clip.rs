//! The CLIP text encoder (transformers' `CLIPTextModel`), as Stable Diffusion uses it: token + position
//! embeddings, pre-norm transformer layers with causal self-attention and a `hidden_act` MLP, then the final layer
//! norm; the output is `last_hidden_state` `[B, max_position_embeddings, hidden]`. Built from
//! `text_encoder/config.json` with any layer count; keys with or without the transformers 4.x `text_model.` prefix.
use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Ctx, LayerNorm, Linear, Load, key};
use crate::ops::Activation;
use crate::ops::attention::{AttentionOpts, attention};
use crate::ops::elementwise::add;
use crate::ops::embed::{TokenIds, embedding};
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use crate::weights::config::Config;

/// `text_encoder/config.json`, the fields the model uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    pub fn read(dir: &Path) -> Result<ClipTextConfig> {
        let mut c = Config::read(dir, "text_encoder/config.json")?;
        let act = c.str_or("hidden_act", "quick_gelu")?;
        let hidden_act = match act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(Error::model(format!("text_encoder/config.json: hidden_act {other:?} is not supported")));
            }
        };
        let cfg = ClipTextConfig {
            vocab_size: c.usize("vocab_size")?,
            hidden_size: c.usize("hidden_size")?,
            intermediate_size: c.usize("intermediate_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads: c.usize("num_attention_heads")?,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            hidden_act,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5)?,
        };
        // Token ids and the projection head do not change last_hidden_state.
        c.ignore(&["bos_token_id", "eos_token_id", "pad_token_id", "projection_dim"]);
        c.expect("num_hidden_groups", &[json!(1)])?;
        c.finish()?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::model(format!(
                "text_encoder/config.json: {} heads do not divide hidden_size {}",
                cfg.num_attention_heads, cfg.hidden_size
            )));
        }
        Ok(cfg)
    }
}

/// One encoder layer: `encoder.layers.{i}`.
struct ClipLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipTextModel {
    /// Bytes of the parameters on the GPU.
    pub param_bytes: u64,
    pub config: ClipTextConfig,
    pub dtype: DType,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<ClipLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Loads `text_encoder/` (config and weights, `variant` e.g. "fp16") into `dtype` tensors.
    pub fn load(gpu: &Gpu, dir: &Path, variant: Option<&str>, dtype: DType) -> Result<ClipTextModel> {
        let config = ClipTextConfig::read(dir)?;
        let mut w = Loader::open(dir, variant)?;
        w.strip_prefix("text_model.");
        w.ignore("embeddings.position_ids");
        let mut l = Load::new(gpu, &mut w, dtype);
        let model = Self::build(&mut l, config, dtype).map(|m| Self { param_bytes: l.bytes, ..m });
        w.finish()?;
        model
    }

    fn build(l: &mut Load, config: ClipTextConfig, dtype: DType) -> Result<ClipTextModel> {
        let (h, f, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps as f32);
        let token_embedding = l.param("embeddings.token_embedding.weight", &[config.vocab_size, h])?;
        let position_embedding =
            l.param("embeddings.position_embedding.weight", &[config.max_position_embeddings, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layers.{i}");
            layers.push(ClipLayer {
                layer_norm1: LayerNorm::load(l, &key(&p, "layer_norm1"), h, eps)?,
                q_proj: Linear::load(l, &key(&p, "self_attn.q_proj"), h, h, true)?,
                k_proj: Linear::load(l, &key(&p, "self_attn.k_proj"), h, h, true)?,
                v_proj: Linear::load(l, &key(&p, "self_attn.v_proj"), h, h, true)?,
                out_proj: Linear::load(l, &key(&p, "self_attn.out_proj"), h, h, true)?,
                layer_norm2: LayerNorm::load(l, &key(&p, "layer_norm2"), h, eps)?,
                fc1: Linear::load(l, &key(&p, "mlp.fc1"), h, f, true)?,
                fc2: Linear::load(l, &key(&p, "mlp.fc2"), f, h, true)?,
            });
        }
        let final_layer_norm = LayerNorm::load(l, "final_layer_norm", h, eps)?;
        Ok(ClipTextModel {
            param_bytes: 0,
            config,
            dtype,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    /// `last_hidden_state` for `ids` (`B` rows of exactly `max_position_embeddings` ids each), recorded in `cx`.
    pub fn forward(&self, cx: &mut Ctx, ids: &[Vec<u32>]) -> Result<Tensor> {
        let c = &self.config;
        let (b, n, h) = (ids.len(), c.max_position_embeddings, c.hidden_size);
        if let Some(bad) = ids.iter().find(|r| r.len() != n) {
            return Err(Error::shape("text encoder", format!("{} ids in a row, expected {n}", bad.len())));
        }
        let flat: Vec<u32> = ids.concat();
        let tok = TokenIds::upload(cx.gpu, &flat, c.vocab_size)?;
        let emb = cx.alloc(&[b * n, h])?;
        embedding(cx.gpu, &mut cx.rec, &tok, &self.token_embedding, &emb, None)?;
        let emb = emb.reshape(&[b, n, h])?;
        let mut x = cx.alloc(&[b, n, h])?;
        add(cx.gpu, &mut cx.rec, &emb, &self.position_embedding, &x)?;
        let attn = AttentionOpts { causal: true, ..AttentionOpts::heads(c.num_attention_heads) };
        for layer in &self.layers {
            let y = layer.layer_norm1.forward(cx, &x)?;
            let (q, k, v) =
                (layer.q_proj.forward(cx, &y)?, layer.k_proj.forward(cx, &y)?, layer.v_proj.forward(cx, &y)?);
            let a = cx.alloc(&[b, n, h])?;
            attention(cx.gpu, &mut cx.rec, &q, &k, &v, &a, &attn)?;
            x = layer.out_proj.forward_fused(cx, &a, Activation::None, Some(&x))?;
            let y = layer.layer_norm2.forward(cx, &x)?;
            let m = layer.fc1.forward_fused(cx, &y, c.hidden_act, None)?;
            x = layer.fc2.forward_fused(cx, &m, Activation::None, Some(&x))?;
        }
        self.final_layer_norm.forward(cx, &x)
    }

    /// Runs the encoder on `ids` now and returns `last_hidden_state` `[B, n, hidden]` (in the model's dtype).
    pub fn encode(&self, gpu: &Gpu, ids: &[Vec<u32>]) -> Result<Tensor> {
        let mut cx = Ctx::new(gpu, self.dtype);
        let out = self.forward(&mut cx, ids)?;
        cx.flush()?;
        Ok(out)
    }
}
