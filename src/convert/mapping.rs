//! The CompVis → diffusers key mapping, generated from the parsed configs: every parameter the diffusers models
//! of that architecture have, with its CompVis name and its diffusers shape. Block counts, layers per block,
//! where the attentions are and every channel count come from the configs, so SD 1.5 and the tiny test model
//! take the same code. See the module documentation of [`crate::convert`] for the mapping, listed.
use std::fmt;

use crate::models::clip::ClipTextConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;

/// CompVis prefix of the UNet's keys.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// CompVis prefix of the VAE's keys.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// CompVis prefix of the text encoder's keys (a transformers `CLIPTextModel`, whose own keys start `text_model.`).
pub const TEXT_PREFIX: &str = "cond_stage_model.transformer.";

/// A diffusers model component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Unet, Component::Vae, Component::TextEncoder];

    /// The component's folder (`unet`, `vae`, `text_encoder`).
    pub fn dir(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
        }
    }

    /// The weight file's name in that folder.
    pub fn weights_file(self) -> &'static str {
        match self {
            Component::TextEncoder => "model.safetensors",
            _ => "diffusion_pytorch_model.safetensors",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// One parameter: where it is in the checkpoint and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub component: Component,
    /// The full CompVis key, e.g. `model.diffusion_model.input_blocks.1.0.in_layers.0.weight`.
    pub compvis: String,
    /// The diffusers key inside the component, e.g. `down_blocks.0.resnets.0.norm1.weight`.
    pub diffusers: String,
    /// The diffusers shape.
    pub shape: Vec<usize>,
    /// CompVis stores this linear weight `[o, i]` as a 1×1 conv `[o, i, 1, 1]` (the VAE's mid-block attention);
    /// both are accepted, and the bytes are the same.
    pub conv1x1: bool,
}

impl Entry {
    /// The shapes the checkpoint may hold for this entry.
    pub fn accepts(&self, shape: &[usize]) -> bool {
        shape == self.shape.as_slice()
            || (self.conv1x1 && shape.len() == 4 && shape[..2] == self.shape[..] && shape[2..] == [1, 1])
    }

    /// The shape CompVis stores (for messages).
    pub fn compvis_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        if self.conv1x1 {
            s.extend([1, 1]);
        }
        s
    }
}

/// Collects the entries of one component; `d` and `c` are the diffusers and CompVis module prefixes.
struct Plan {
    component: Component,
    prefix: &'static str,
    out: Vec<Entry>,
}

impl Plan {
    fn new(component: Component, prefix: &'static str) -> Plan {
        Plan { component, prefix, out: Vec::new() }
    }

    fn param(&mut self, d: &str, c: &str, shape: &[usize]) {
        self.push(d, c, shape, false);
    }

    fn push(&mut self, d: &str, c: &str, shape: &[usize], conv1x1: bool) {
        self.out.push(Entry {
            component: self.component,
            compvis: format!("{}{c}", self.prefix),
            diffusers: d.to_owned(),
            shape: shape.to_vec(),
            conv1x1,
        });
    }

    /// `weight` and `bias` of a layer whose weight is `shape` and bias `[shape[0]]`.
    fn layer(&mut self, d: &str, c: &str, shape: &[usize]) {
        self.param(&format!("{d}.weight"), &format!("{c}.weight"), shape);
        self.param(&format!("{d}.bias"), &format!("{c}.bias"), &[shape[0]]);
    }

    fn norm(&mut self, d: &str, c: &str, ch: usize) {
        self.layer(d, c, &[ch]);
    }

    fn conv(&mut self, d: &str, c: &str, i: usize, o: usize, k: usize) {
        self.layer(d, c, &[o, i, k, k]);
    }

    fn linear(&mut self, d: &str, c: &str, i: usize, o: usize) {
        self.layer(d, c, &[o, i]);
    }

    /// A linear layer that CompVis may store as a 1×1 conv.
    fn linear_from_conv1x1(&mut self, d: &str, c: &str, i: usize, o: usize) {
        self.push(&format!("{d}.weight"), &format!("{c}.weight"), &[o, i], true);
        self.param(&format!("{d}.bias"), &format!("{c}.bias"), &[o]);
    }

    /// A UNet `ResBlock` (CompVis `in_layers`/`emb_layers`/`out_layers`/`skip_connection`) → `ResnetBlock2D`.
    fn unet_resnet(&mut self, d: &str, c: &str, i: usize, o: usize, temb: usize) {
        self.norm(&format!("{d}.norm1"), &format!("{c}.in_layers.0"), i);
        self.conv(&format!("{d}.conv1"), &format!("{c}.in_layers.2"), i, o, 3);
        self.linear(&format!("{d}.time_emb_proj"), &format!("{c}.emb_layers.1"), temb, o);
        self.norm(&format!("{d}.norm2"), &format!("{c}.out_layers.0"), o);
        self.conv(&format!("{d}.conv2"), &format!("{c}.out_layers.3"), o, o, 3);
        if i != o {
            self.conv(&format!("{d}.conv_shortcut"), &format!("{c}.skip_connection"), i, o, 1);
        }
    }

    /// A `SpatialTransformer` → `Transformer2DModel`: the same names on both sides.
    fn transformer(&mut self, d: &str, c: &str, ch: usize, layers: usize, cross: usize, linear_proj: bool) {
        let same = |p: &mut Plan, name: &str, shape: &[usize], bias: bool| {
            let (dn, cn) = (format!("{d}.{name}"), format!("{c}.{name}"));
            if bias {
                p.layer(&dn, &cn, shape);
            } else {
                p.param(&format!("{dn}.weight"), &format!("{cn}.weight"), shape);
            }
        };
        let proj: &[usize] = if linear_proj { &[ch, ch] } else { &[ch, ch, 1, 1] };
        same(self, "norm", &[ch], true);
        same(self, "proj_in", proj, true);
        for t in 0..layers {
            let b = format!("transformer_blocks.{t}");
            for (attn, kv) in [("attn1", ch), ("attn2", cross)] {
                same(self, &format!("{b}.{attn}.to_q"), &[ch, ch], false);
                same(self, &format!("{b}.{attn}.to_k"), &[ch, kv], false);
                same(self, &format!("{b}.{attn}.to_v"), &[ch, kv], false);
                same(self, &format!("{b}.{attn}.to_out.0"), &[ch, ch], true);
            }
            same(self, &format!("{b}.ff.net.0.proj"), &[8 * ch, ch], true);
            same(self, &format!("{b}.ff.net.2"), &[ch, 4 * ch], true);
            for norm in ["norm1", "norm2", "norm3"] {
                same(self, &format!("{b}.{norm}"), &[ch], true);
            }
        }
        same(self, "proj_out", proj, true);
    }

    /// A VAE `ResnetBlock` (`nin_shortcut`) → `ResnetBlock2D` without a time embedding.
    fn vae_resnet(&mut self, d: &str, c: &str, i: usize, o: usize) {
        self.norm(&format!("{d}.norm1"), &format!("{c}.norm1"), i);
        self.conv(&format!("{d}.conv1"), &format!("{c}.conv1"), i, o, 3);
        self.norm(&format!("{d}.norm2"), &format!("{c}.norm2"), o);
        self.conv(&format!("{d}.conv2"), &format!("{c}.conv2"), o, o, 3);
        if i != o {
            self.conv(&format!("{d}.conv_shortcut"), &format!("{c}.nin_shortcut"), i, o, 1);
        }
    }

    /// The VAE's `AttnBlock` (`norm`, 1×1 convs `q`/`k`/`v`/`proj_out`) → `Attention` with linear projections.
    fn vae_attention(&mut self, d: &str, c: &str, ch: usize) {
        self.norm(&format!("{d}.group_norm"), &format!("{c}.norm"), ch);
        for (dn, cn) in [("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")] {
            self.linear_from_conv1x1(&format!("{d}.{dn}"), &format!("{c}.{cn}"), ch, ch);
        }
    }
}

/// The UNet: `time_embed`, `input_blocks`, `middle_block`, `output_blocks`, `out`.
pub fn unet(c: &UNetConfig) -> Vec<Entry> {
    let mut p = Plan::new(Component::Unet, UNET_PREFIX);
    let ch = &c.block_out_channels;
    let n = ch.len();
    let temb = c.time_embed_dim();
    let layers = c.layers_per_block;
    let tf = |p: &mut Plan, d: &str, cv: &str, level: usize, channels: usize| {
        let (l, x, lin) = (c.transformer_layers_per_block[level], c.cross_attention_dim, c.use_linear_projection);
        p.transformer(d, cv, channels, l, x, lin);
    };
    p.linear("time_embedding.linear_1", "time_embed.0", ch[0], temb);
    p.linear("time_embedding.linear_2", "time_embed.2", temb, temb);
    p.conv("conv_in", "input_blocks.0.0", c.in_channels, ch[0], 3);
    let mut idx = 1;
    let mut prev = ch[0];
    for (b, &out) in ch.iter().enumerate() {
        for j in 0..layers {
            let i = if j == 0 { prev } else { out };
            p.unet_resnet(&format!("down_blocks.{b}.resnets.{j}"), &format!("input_blocks.{idx}.0"), i, out, temb);
            if c.down_cross[b] {
                tf(&mut p, &format!("down_blocks.{b}.attentions.{j}"), &format!("input_blocks.{idx}.1"), b, out);
            }
            idx += 1;
        }
        if b + 1 < n {
            p.conv(&format!("down_blocks.{b}.downsamplers.0.conv"), &format!("input_blocks.{idx}.0.op"), out, out, 3);
            idx += 1;
        }
        prev = out;
    }
    let last = ch[n - 1];
    p.unet_resnet("mid_block.resnets.0", "middle_block.0", last, last, temb);
    tf(&mut p, "mid_block.attentions.0", "middle_block.1", n - 1, last);
    p.unet_resnet("mid_block.resnets.1", "middle_block.2", last, last, temb);
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut idx = 0;
    let mut prev = rev[0];
    for b in 0..n {
        let (out, skip_in) = (rev[b], rev[(b + 1).min(n - 1)]);
        for j in 0..=layers {
            let skip = if j == layers { skip_in } else { out };
            let res_in = if j == 0 { prev } else { out };
            let cv = format!("output_blocks.{idx}");
            p.unet_resnet(&format!("up_blocks.{b}.resnets.{j}"), &format!("{cv}.0"), res_in + skip, out, temb);
            if c.up_cross[b] {
                tf(&mut p, &format!("up_blocks.{b}.attentions.{j}"), &format!("{cv}.1"), n - 1 - b, out);
            }
            if j == layers && b + 1 < n {
                let at = if c.up_cross[b] { 2 } else { 1 };
                p.conv(&format!("up_blocks.{b}.upsamplers.0.conv"), &format!("{cv}.{at}.conv"), out, out, 3);
            }
            idx += 1;
        }
        prev = out;
    }
    p.norm("conv_norm_out", "out.0", ch[0]);
    p.conv("conv_out", "out.2", ch[0], c.out_channels, 3);
    p.out
}

/// The VAE: `encoder.down`, `decoder.up` (stored in reverse order: diffusers' `up_blocks.{b}` is CompVis'
/// `up.{n-1-b}`), both `mid` blocks, `quant_conv`, `post_quant_conv`.
pub fn vae(c: &VaeConfig) -> Vec<Entry> {
    let mut p = Plan::new(Component::Vae, VAE_PREFIX);
    let ch = &c.block_out_channels;
    let n = ch.len();
    let (layers, lat, last) = (c.layers_per_block, c.latent_channels, ch[n - 1]);
    let mid = |p: &mut Plan, side: &str| {
        p.vae_resnet(&format!("{side}.mid_block.resnets.0"), &format!("{side}.mid.block_1"), last, last);
        p.vae_attention(&format!("{side}.mid_block.attentions.0"), &format!("{side}.mid.attn_1"), last);
        p.vae_resnet(&format!("{side}.mid_block.resnets.1"), &format!("{side}.mid.block_2"), last, last);
    };
    p.conv("encoder.conv_in", "encoder.conv_in", c.in_channels, ch[0], 3);
    let mut prev = ch[0];
    for (i, &out) in ch.iter().enumerate() {
        for j in 0..layers {
            let d = format!("encoder.down_blocks.{i}.resnets.{j}");
            p.vae_resnet(&d, &format!("encoder.down.{i}.block.{j}"), if j == 0 { prev } else { out }, out);
        }
        if i + 1 < n {
            let d = format!("encoder.down_blocks.{i}.downsamplers.0.conv");
            p.conv(&d, &format!("encoder.down.{i}.downsample.conv"), out, out, 3);
        }
        prev = out;
    }
    mid(&mut p, "encoder");
    p.norm("encoder.conv_norm_out", "encoder.norm_out", last);
    p.conv("encoder.conv_out", "encoder.conv_out", last, 2 * lat, 3);
    p.conv("quant_conv", "quant_conv", 2 * lat, 2 * lat, 1);
    p.conv("post_quant_conv", "post_quant_conv", lat, lat, 1);
    p.conv("decoder.conv_in", "decoder.conv_in", lat, last, 3);
    mid(&mut p, "decoder");
    let mut prev = last;
    for b in 0..n {
        let (k, out) = (n - 1 - b, ch[n - 1 - b]);
        for j in 0..=layers {
            let d = format!("decoder.up_blocks.{b}.resnets.{j}");
            p.vae_resnet(&d, &format!("decoder.up.{k}.block.{j}"), if j == 0 { prev } else { out }, out);
        }
        if b + 1 < n {
            p.conv(
                &format!("decoder.up_blocks.{b}.upsamplers.0.conv"),
                &format!("decoder.up.{k}.upsample.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    p.norm("decoder.conv_norm_out", "decoder.norm_out", ch[0]);
    p.conv("decoder.conv_out", "decoder.conv_out", ch[0], c.out_channels, 3);
    p.out
}

/// The CLIP text encoder: `cond_stage_model.transformer.text_model.*` → `text_model.*` (the transformers 4.x
/// layout, which diffusers folders on the hubs have).
pub fn text_encoder(c: &ClipTextConfig) -> Vec<Entry> {
    let mut p = Plan::new(Component::TextEncoder, TEXT_PREFIX);
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let mut same = |name: &str, shape: &[usize], bias: bool| {
        let k = format!("text_model.{name}");
        if bias {
            p.layer(&k, &k, shape);
        } else {
            p.param(&format!("{k}.weight"), &format!("{k}.weight"), shape);
        }
    };
    same("embeddings.token_embedding", &[c.vocab_size, h], false);
    same("embeddings.position_embedding", &[c.max_position_embeddings, h], false);
    for i in 0..c.num_hidden_layers {
        let l = format!("encoder.layers.{i}");
        same(&format!("{l}.layer_norm1"), &[h], true);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            same(&format!("{l}.self_attn.{proj}"), &[h, h], true);
        }
        same(&format!("{l}.layer_norm2"), &[h], true);
        same(&format!("{l}.mlp.fc1"), &[f, h], true);
        same(&format!("{l}.mlp.fc2"), &[h, f], true);
    }
    same("final_layer_norm", &[h], true);
    p.out
}

/// Every parameter of the three models.
pub fn plan(unet_cfg: &UNetConfig, vae_cfg: &VaeConfig, text_cfg: &ClipTextConfig) -> Vec<Entry> {
    let mut all = unet(unet_cfg);
    all.extend(vae(vae_cfg));
    all.extend(text_encoder(text_cfg));
    all
}

/// The DDPM schedule buffers of ldm's `LatentDiffusion` that SD 1.x checkpoints carry at the top level (the
/// schedule itself comes from the scheduler config).
pub const SCHEDULE_BUFFERS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
];

/// Why a checkpoint key is knowingly not converted, or `None` when it must be mapped.
pub fn skip_reason(key: &str) -> Option<&'static str> {
    if key.starts_with("model_ema.") {
        Some("EMA weights")
    } else if key == "cond_stage_model.transformer.text_model.embeddings.position_ids" {
        Some("position_ids buffer")
    } else if SCHEDULE_BUFFERS.contains(&key) {
        Some("DDPM schedule buffers")
    } else {
        None
    }
}
