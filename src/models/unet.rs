//! diffusers' `UNet2DConditionModel` as Stable Diffusion 1.x and 2.x use it, built from `unet/config.json`:
//! sinusoidal time projection and `time_embedding`, `conv_in`, down blocks (`CrossAttnDownBlock2D`,
//! `DownBlock2D`), `UNetMidBlock2DCrossAttn`, up blocks (`UpBlock2D`, `CrossAttnUpBlock2D`) with skip
//! concatenation, `conv_norm_out` + SiLU, `conv_out`. Activations are NHWC. Also `class_embed_type: "timestep"`
//! (a class label through the same time projection and `class_embedding.linear_1/linear_2`, added to the time
//! embedding), which the cascade's super-resolution UNet uses for its noise level. Options SD does not use are
//! refused by name (see `UNetConfig::read`).
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{
    AttnHooks, Conv2d, Ctx, Downsample2D, GroupNorm, Linear, Load, ResnetBlock2D, ResnetCfg, Transformer2D,
    TransformerCfg, Upsample2D, key,
};
use crate::ops::Activation;
use crate::ops::elementwise::unary;
use crate::ops::embed::{TimestepOpts, timestep_embedding};
use crate::ops::resample::concat_channels;
use crate::tensor::{DType, Tensor};
use crate::weights::Loader;

use crate::weights::config::Config;

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// true: cross-attention block (`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`).
    pub down_cross: Vec<bool>,
    pub up_cross: Vec<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: Vec<usize>,
    /// Heads per down block (the SD 1.x quirk: `attention_head_dim` holds the head count when
    /// `num_attention_heads` is null).
    pub heads: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    /// `class_embed_type`: None, or "timestep" (the class label goes through the time projection and
    /// `class_embedding`, a second `TimestepEmbedding`, and is added to the time embedding; the noise-augmentation
    /// level of a super-resolution stage, as DeepFloyd IF stage II and the SD x4 upscaler use it).
    pub class_embed: Option<ClassEmbed>,
}

/// The class-label embeddings this engine implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassEmbed {
    /// `class_embed_type: "timestep"`: `class_embedding(time_proj(class_labels))`.
    Timestep,
}

impl UNetConfig {
    pub fn read(dir: &Path) -> Result<UNetConfig> {
        let name = "unet/config.json";
        let mut c = Config::read(dir, name)?;
        let block_out_channels = c.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        let kinds = |c: &mut Config, k: &str, cross: &str, plain: &str| -> Result<Vec<bool>> {
            c.str_list(k)?
                .iter()
                .map(|t| match t.as_str() {
                    t if t == cross => Ok(true),
                    t if t == plain => Ok(false),
                    other => Err(Error::model(format!(
                        "{name}: {k} has unsupported block type {other:?} (supported: {cross}, {plain})"
                    ))),
                })
                .collect()
        };
        let down_cross = kinds(&mut c, "down_block_types", "CrossAttnDownBlock2D", "DownBlock2D")?;
        let up_cross = kinds(&mut c, "up_block_types", "CrossAttnUpBlock2D", "UpBlock2D")?;
        if down_cross.len() != n || up_cross.len() != n {
            return Err(Error::model(format!(
                "{name}: {n} block_out_channels but {} down and {} up blocks",
                down_cross.len(),
                up_cross.len()
            )));
        }
        c.expect("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")])?;
        let heads = match c.per_block("num_attention_heads", n)? {
            Some(h) => h,
            None => c.per_block("attention_head_dim", n)?.unwrap_or(vec![8; n]),
        };
        // With num_attention_heads given, attention_head_dim is the real head dim; it must agree.
        if c.get("num_attention_heads").is_some() {
            if let Some(d) = c.per_block("attention_head_dim", n)? {
                for (i, (&h, &d)) in heads.iter().zip(&d).enumerate() {
                    if h * d != block_out_channels[i] {
                        return Err(Error::model(format!(
                            "{name}: block {i}: {h} heads × head dim {d} ≠ {} channels",
                            block_out_channels[i]
                        )));
                    }
                }
            }
        }
        for (i, (&h, &ch)) in heads.iter().zip(&block_out_channels).enumerate() {
            if h == 0 || ch % h != 0 {
                return Err(Error::model(format!("{name}: block {i}: {h} heads do not divide {ch} channels")));
            }
        }
        let cfg = UNetConfig {
            sample_size: c.usize_or("sample_size", 64)?,
            in_channels: c.usize_or("in_channels", 4)?,
            out_channels: c.usize_or("out_channels", 4)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)?,
            down_cross,
            up_cross,
            layers_per_block: c.usize_or("layers_per_block", 2)?,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            norm_eps: c.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim: c.usize_or("cross_attention_dim", 1280)?,
            transformer_layers_per_block: c.per_block("transformer_layers_per_block", n)?.unwrap_or(vec![1; n]),
            heads,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            upcast_attention: c.bool_or("upcast_attention", false)?,
            class_embed: match c.str_or("class_embed_type", "")?.as_str() {
                "" => None,
                "timestep" => Some(ClassEmbed::Timestep),
                other => {
                    return Err(Error::model(format!(
                        "{name}: `class_embed_type` = {other:?} is not supported (supported: null, \"timestep\")"
                    )));
                }
            },
            block_out_channels,
        };
        // Options SD 1.x/2.x leave at these values; any other value needs code we do not have.
        let f = |x: f64| json!(x);
        let supported: [(&str, Vec<Value>); 25] = [
            ("center_input_sample", vec![json!(false)]),
            ("only_cross_attention", vec![json!(false)]),
            ("mid_block_scale_factor", vec![f(1.0), json!(1)]),
            ("act_fn", vec![json!("silu")]),
            ("dual_cross_attention", vec![json!(false)]),
            ("addition_embed_type", vec![]),
            ("num_class_embeds", vec![]),
            ("resnet_time_scale_shift", vec![json!("default")]),
            ("resnet_skip_time_act", vec![json!(false)]),
            ("resnet_out_scale_factor", vec![f(1.0), json!(1)]),
            ("time_embedding_type", vec![json!("positional")]),
            ("time_embedding_dim", vec![]),
            ("time_embedding_act_fn", vec![]),
            ("timestep_post_act", vec![]),
            ("time_cond_proj_dim", vec![]),
            ("conv_in_kernel", vec![json!(3)]),
            ("conv_out_kernel", vec![json!(3)]),
            ("projection_class_embeddings_input_dim", vec![]),
            ("attention_type", vec![json!("default")]),
            ("class_embeddings_concat", vec![json!(false)]),
            ("mid_block_only_cross_attention", vec![json!(false)]),
            ("cross_attention_norm", vec![]),
            ("encoder_hid_dim", vec![]),
            ("encoder_hid_dim_type", vec![]),
            ("reverse_transformer_layers_per_block", vec![]),
        ];
        for (k, vals) in supported {
            c.expect(k, &vals)?;
        }
        // Irrelevant at inference.
        c.ignore(&["addition_time_embed_dim", "addition_embed_type_num_heads"]);
        c.finish()?;
        if cfg.transformer_layers_per_block.contains(&0) || cfg.layers_per_block == 0 {
            return Err(Error::model(format!("{name}: layers_per_block and transformer_layers_per_block must be ≥ 1")));
        }
        for &ch in &cfg.block_out_channels {
            if cfg.norm_num_groups == 0 || ch % cfg.norm_num_groups != 0 {
                return Err(Error::model(format!(
                    "{name}: norm_num_groups {} does not divide {ch} channels",
                    cfg.norm_num_groups
                )));
            }
        }
        Ok(cfg)
    }

    /// Width of the time embedding (`time_embedding.linear_1` out).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }
}

struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

pub struct UNet {
    /// Bytes of the parameters on the GPU.
    pub param_bytes: u64,
    pub config: UNetConfig,
    pub dtype: DType,
    linear_1: Linear,
    linear_2: Linear,
    /// `class_embedding.linear_1` / `linear_2` (with `class_embed_type: "timestep"`).
    class_embedding: Option<(Linear, Linear)>,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: Transformer2D,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Loads `unet/` (config and weights, `variant` e.g. "fp16") into `dtype` tensors.
    pub fn load(gpu: &Gpu, dir: &Path, variant: Option<&str>, dtype: DType) -> Result<UNet> {
        let config = UNetConfig::read(dir)?;
        let mut w = Loader::open(dir, variant)?;
        let mut l = Load::new(gpu, &mut w, dtype);
        let model = Self::build(&mut l, config, dtype).map(|m| Self { param_bytes: l.bytes, ..m });
        w.finish()?;
        model
    }

    fn build(l: &mut Load, c: UNetConfig, dtype: DType) -> Result<UNet> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let ted = c.time_embed_dim();
        let (groups, eps) = (c.norm_num_groups, c.norm_eps as f32);
        let rcfg =
            |i: usize, o: usize| ResnetCfg { in_channels: i, out_channels: o, temb_channels: Some(ted), groups, eps };
        let tcfg = |b: usize, channels: usize| TransformerCfg {
            channels,
            heads: c.heads[b],
            layers: c.transformer_layers_per_block[b],
            cross_dim: c.cross_attention_dim,
            groups,
            linear_projection: c.use_linear_projection,
        };
        let linear_1 = Linear::load(l, "time_embedding.linear_1", ch[0], ted, true)?;
        let linear_2 = Linear::load(l, "time_embedding.linear_2", ted, ted, true)?;
        let class_embedding = match c.class_embed {
            Some(ClassEmbed::Timestep) => Some((
                Linear::load(l, "class_embedding.linear_1", ch[0], ted, true)?,
                Linear::load(l, "class_embedding.linear_2", ted, ted, true)?,
            )),
            None => None,
        };
        let conv_in = Conv2d::load(l, "conv_in", c.in_channels, ch[0], 3, 1, 1, true)?;
        let mut down = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (b, &block_ch) in ch.iter().enumerate() {
            let (in_ch, p) = (out_ch, format!("down_blocks.{b}"));
            out_ch = block_ch;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                let i = if j == 0 { in_ch } else { out_ch };
                resnets.push(ResnetBlock2D::load(l, &key(&p, &format!("resnets.{j}")), rcfg(i, out_ch))?);
                if c.down_cross[b] {
                    attentions.push(Transformer2D::load(l, &key(&p, &format!("attentions.{j}")), tcfg(b, out_ch))?);
                }
            }
            let downsampler = if b + 1 < n {
                Some(Downsample2D::load(l, &key(&p, "downsamplers.0"), out_ch, c.downsample_padding)?)
            } else {
                None
            };
            down.push(DownBlock { resnets, attentions, downsampler });
        }
        let last = ch[n - 1];
        let mid_resnets = [
            ResnetBlock2D::load(l, "mid_block.resnets.0", rcfg(last, last))?,
            ResnetBlock2D::load(l, "mid_block.resnets.1", rcfg(last, last))?,
        ];
        let mid_attention = Transformer2D::load(l, "mid_block.attentions.0", tcfg(n - 1, last))?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut prev = rev[0];
        for b in 0..n {
            let out = rev[b];
            let input = rev[(b + 1).min(n - 1)];
            let p = format!("up_blocks.{b}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            let layers = c.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let res_in = if j == 0 { prev } else { out };
                resnets.push(ResnetBlock2D::load(l, &key(&p, &format!("resnets.{j}")), rcfg(res_in + skip, out))?);
                if c.up_cross[b] {
                    attentions.push(Transformer2D::load(
                        l,
                        &key(&p, &format!("attentions.{j}")),
                        tcfg(n - 1 - b, out),
                    )?);
                }
            }
            let upsampler = if b + 1 < n { Some(Upsample2D::load(l, &key(&p, "upsamplers.0"), out)?) } else { None };
            up.push(UpBlock { resnets, attentions, upsampler });
            prev = out;
        }
        let conv_norm_out = GroupNorm::load(l, "conv_norm_out", groups, ch[0], eps)?;
        let conv_out = Conv2d::load(l, "conv_out", ch[0], c.out_channels, 3, 1, 1, true)?;
        Ok(UNet {
            param_bytes: 0,
            config: c,
            dtype,
            linear_1,
            linear_2,
            class_embedding,
            conv_in,
            down,
            mid_resnets,
            mid_attention,
            up,
            conv_norm_out,
            conv_out,
        })
    }

    /// Records one UNet call: `sample` `[B, h, w, in]` (NHWC, model dtype), `timesteps` f32 `[B]`, `text`
    /// `[B, M, cross_dim]`; returns the prediction `[B, h, w, out]`.
    pub fn forward(&self, cx: &mut Ctx, sample: &Tensor, timesteps: &Tensor, text: &Tensor) -> Result<Tensor> {
        self.forward_hooked(cx, sample, timesteps, text, None)
    }

    /// Number of cross-attention layers whose query count is `tokens`, for latents of `h × w`.
    pub fn cross_layers_with_tokens(&self, h: usize, w: usize, tokens: usize) -> usize {
        let c = &self.config;
        let n = c.block_out_channels.len();
        let at = |level: usize| (h >> level) * (w >> level) == tokens;
        let mut count = 0;
        for b in 0..n {
            if c.down_cross[b] && at(b) {
                count += c.layers_per_block * c.transformer_layers_per_block[b];
            }
            if c.up_cross[b] && at(n - 1 - b) {
                count += (c.layers_per_block + 1) * c.transformer_layers_per_block[n - 1 - b];
            }
        }
        if at(n - 1) {
            count += c.transformer_layers_per_block[n - 1];
        }
        count
    }

    /// The side of the cross-attention maps that local blending and the attention pictures use by default: the
    /// smallest side among the UNet's cross-attention layers that is at least `h / 4` (16 for SD at 64×64
    /// latents, as the reference; the tiny test models, which have no layer at `h / 4`, get the next one up).
    pub fn default_map_side(&self, h: usize, w: usize) -> Option<usize> {
        let n = self.config.block_out_channels.len();
        (0..n)
            .filter(|&l| (h >> l) >= h / 4 && self.cross_layers_with_tokens(h, w, (h >> l) * (w >> l)) > 0)
            .map(|l| h >> l)
            .min()
    }

    /// `forward` with Prompt-to-Prompt hooks in every attention layer.
    pub fn forward_hooked(
        &self,
        cx: &mut Ctx,
        sample: &Tensor,
        timesteps: &Tensor,
        text: &Tensor,
        hooks: Option<&AttnHooks>,
    ) -> Result<Tensor> {
        self.forward_full(cx, sample, timesteps, None, text, hooks)
    }

    /// The general call: `forward_hooked` with `class_labels` f32 `[B]`, which a UNet with a class embedding
    /// (`class_embed_type: "timestep"`) needs and any other UNet refuses.
    pub fn forward_full(
        &self,
        cx: &mut Ctx,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        text: &Tensor,
        hooks: Option<&AttnHooks>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b = sample.shape[0];
        let opts = TimestepOpts {
            flip_sin_to_cos: c.flip_sin_to_cos,
            downscale_freq_shift: c.freq_shift as f32,
            scale: 1.0,
            max_period: 10000.0,
        };
        // `time_proj` (sinusoidal, no weights), then a `TimestepEmbedding` (linear, SiLU, linear).
        let embed = |cx: &mut Ctx, t: &Tensor, l1: &Linear, l2: &Linear, residual: Option<&Tensor>| {
            let proj = cx.alloc(&[b, c.block_out_channels[0]])?;
            timestep_embedding(cx.gpu, &mut cx.rec, t, &proj, &opts)?;
            let h = l1.forward_fused(cx, &proj, Activation::Silu, None)?;
            l2.forward_fused(cx, &h, Activation::None, residual)
        };
        // diffusers: `emb = time_embedding(time_proj(t)) + class_embedding(time_proj(class_labels))`.
        let class_emb = match (&self.class_embedding, class_labels) {
            (Some((l1, l2)), Some(labels)) => {
                if labels.shape != [b] {
                    return Err(Error::shape("unet", format!("class labels {:?} for batch {b}", labels.shape)));
                }
                Some(embed(cx, labels, l1, l2, None)?)
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::model(
                    "unet: this UNet has a class embedding (class_embed_type) and needs class labels",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::model("unet: class labels given, but this UNet has no class embedding"));
            }
        };
        let temb = embed(cx, timesteps, &self.linear_1, &self.linear_2, class_emb.as_ref())?;
        // Every resnet applies SiLU to the embedding before its projection: do it once.
        let temb_silu = cx.alloc(&temb.shape)?;
        unary(cx.gpu, &mut cx.rec, Activation::Silu, &temb, &temb_silu)?;

        let mut x = self.conv_in.forward(cx, sample)?;
        let mut skips = vec![x.clone()];
        for blk in &self.down {
            for (j, r) in blk.resnets.iter().enumerate() {
                x = r.forward(cx, &x, Some(&temb_silu))?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(cx, &x, text, hooks)?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(cx, &x)?;
                skips.push(x.clone());
            }
        }
        x = self.mid_resnets[0].forward(cx, &x, Some(&temb_silu))?;
        x = self.mid_attention.forward(cx, &x, text, hooks)?;
        x = self.mid_resnets[1].forward(cx, &x, Some(&temb_silu))?;
        for blk in &self.up {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| Error::model("unet: skip connections exhausted"))?;
                let mut shape = x.shape.clone();
                shape[3] += skip.shape[3];
                let cat = cx.alloc(&shape)?;
                concat_channels(cx.gpu, &mut cx.rec, &x, &skip, &cat)?;
                x = r.forward(cx, &cat, Some(&temb_silu))?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(cx, &x, text, hooks)?;
                }
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(cx, &x)?;
            }
        }
        let h = self.conv_norm_out.forward(cx, &x, true)?;
        self.conv_out.forward(cx, &h)
    }
}
