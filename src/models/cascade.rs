//! The pixel-space cascade of the paper (Imagen-shaped): a text-conditioned base diffusion on small RGB images,
//! which Prompt-to-Prompt edits exactly as Stable Diffusion's latents, then a text-conditioned diffusion
//! super-resolution (SR) stage that runs unedited on every output row.
//!
//! **Folder layout** (`model_index.json` `_class_name: "P2PCascadePipeline"`):
//!
//! - `text_encoder/` (CLIPTextModel) and `tokenizer/` (CLIP BPE), shared by both stages;
//! - `unet/` + `scheduler/`: the base, a `UNet2DConditionModel` from 3 to 3 channels (pixels in [-1, 1], no VAE);
//! - `sr_unet/` + `sr_scheduler/`: the SR stage, a `UNet2DConditionModel` from 6 channels (the noisy high-res image
//!   x_t, then the upsampled base image after noise augmentation) to 3, with `class_embed_type: "timestep"`: its
//!   class label is the augmentation noise level;
//! - `model_index.json` also holds `sr_noise_level` (integer) and `sr_guidance_scale` (number), and optionally
//!   `guidance_scale` (the base's default guidance when the command line gives none), `num_inference_steps` and
//!   `sr_num_inference_steps` (the default step counts of the two stages). Every component must be listed with its
//!   class, and any other key is refused by name.
//!
//! **Sampling**, for prompts `[p_0, …, p_{B-1}]` (an edit's `[source, targets]`):
//!
//! 1. base: classifier-free guidance with the negative prompt, PNDM/DDIM from `scheduler/` (or `--scheduler`), from
//!    one initial noise `[1, 3, h, w]` shared by every row; edits apply here (`Denoiser::edit`: the same plan, hooks,
//!    windows and local blending as SD, on the `h × w` pixel "latents");
//! 2. base image = clamp(x, −1, 1), upsampled ×4 bilinearly (torch `F.interpolate(mode="bilinear",
//!    align_corners=False)`), then noise-augmented at level L = `sr_noise_level` with the SR scheduler's schedule:
//!    `sqrt(ᾱ_L)·up + sqrt(1 − ᾱ_L)·n`, with one augmentation noise n `[1, 3, H, W]` shared by every row;
//! 3. SR: classifier-free guidance with `sr_guidance_scale` and the empty prompt as uncond (whatever the base's
//!    negative prompt), each row with its own prompt, class label L on every row, from one initial noise
//!    `[1, 3, H, W]` shared by every row; the sampler is `sr_scheduler/`'s;
//! 4. image = (y/2 + 0.5).clamp(0, 1) of the SR output; NaN or Inf in the base or SR output is an error.
//!
//! Rows never interact in the SR stage, so the source row of an edit is the plain generation of the source prompt.
//!
//! **Seeds** (the command line, `app::generate`): `--seed N` draws the base's initial noise from our documented
//! generator (`noise::gaussian`) with seed N, in NCHW order `[1, 3, h, w]`; the SR augmentation noise from seed
//! N + 1 and the SR initial noise from seed N + 2 (wrapping), both `[1, 3, H, W]`. `--latents FILE` replaces the
//! base noise by its tensor `latents`, and the SR noises by its tensors `sr_aug_noise` / `sr_latents` when present
//! (else they come from the seed); `--save-latents FILE` writes all three.
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::schedulers::SchedulerConfig;
use crate::text::Tokenizer;
use crate::weights::folder::{
    DiffusersFolder, MODEL_INDEX, SCHEDULER, SR_SCHEDULER, SR_UNET, TEXT_ENCODER, TOKENIZER, UNET,
};
use crate::weights::read_json;

use super::clip::ClipTextModel;
use super::sd::LoadOptions;
use super::unet::{ClassEmbed, UNet};
use crate::weights::config::Config;

/// `model_index.json`'s `_class_name` of a cascade folder.
pub const CLASS_NAME: &str = "P2PCascadePipeline";
/// Side ratio of the SR stage's images to the base's.
pub const SR_SCALE: usize = 4;
/// Image channels of both stages.
pub const RGB: usize = 3;

/// Whether `dir` holds a cascade: its `model_index.json` names [`CLASS_NAME`]. A folder without a
/// `model_index.json` is not one (it may still be a Stable Diffusion folder).
pub fn is_cascade(dir: &Path) -> Result<bool> {
    let path = dir.join(MODEL_INDEX);
    if !path.is_file() {
        return Ok(false);
    }
    Ok(read_json(&path)?.get("_class_name").and_then(Value::as_str) == Some(CLASS_NAME))
}

/// What `model_index.json` says beyond the component list.
#[derive(Clone, Debug, PartialEq)]
pub struct CascadeIndex {
    pub sr_noise_level: usize,
    pub sr_guidance_scale: f64,
    /// The base stage's guidance scale when the command line gives none (optional key `guidance_scale`).
    pub guidance_scale: Option<f64>,
    /// The base stage's step count when the command line gives none (optional key `num_inference_steps`).
    pub num_inference_steps: Option<usize>,
    /// The SR stage's step count when the command line gives none (optional key `sr_num_inference_steps`).
    pub sr_num_inference_steps: Option<usize>,
}

impl CascadeIndex {
    /// Reads `dir/model_index.json` strictly: the pipeline class, every component with a supported class, the SR
    /// options, and no other key.
    pub fn read(dir: &Path) -> Result<CascadeIndex> {
        let name = MODEL_INDEX;
        let mut c = Config::from_value(name, read_json(&dir.join(name))?)?;
        c.expect("_class_name", &[json!(CLASS_NAME)])?;
        let unet = json!(["diffusers", "UNet2DConditionModel"]);
        let components: [(&str, Vec<Value>); 6] = [
            (TEXT_ENCODER, vec![json!(["transformers", "CLIPTextModel"])]),
            (TOKENIZER, vec![json!(["transformers", "CLIPTokenizer"]), json!(["transformers", "CLIPTokenizerFast"])]),
            (UNET, vec![unet.clone()]),
            (SR_UNET, vec![unet]),
            (SCHEDULER, vec![]),
            (SR_SCHEDULER, vec![]),
        ];
        for (k, classes) in components {
            let v = c.get(k).ok_or_else(|| Error::model(format!("{name}: component `{k}` is not listed")))?;
            let ok = if classes.is_empty() {
                // Any diffusers scheduler class: the one used is scheduler_config.json's (or --scheduler).
                v.as_array().is_some_and(|p| p.len() == 2 && p[0] == "diffusers" && p[1].is_string())
            } else {
                classes.contains(&v)
            };
            if !ok {
                let want: Vec<String> = classes.iter().map(Value::to_string).collect();
                let want =
                    if want.is_empty() { "[\"diffusers\", a scheduler class]".to_string() } else { want.join(" or ") };
                return Err(Error::model(format!("{name}: component `{k}` is {v}, expected {want}")));
            }
        }
        let idx = CascadeIndex {
            sr_noise_level: c.usize("sr_noise_level")?,
            sr_guidance_scale: c
                .get("sr_guidance_scale")
                .ok_or_else(|| Error::model(format!("{name}: `sr_guidance_scale` is missing")))?
                .as_f64()
                .filter(|g| g.is_finite())
                .ok_or_else(|| Error::model(format!("{name}: `sr_guidance_scale` must be a finite number")))?,
            guidance_scale: match c.get("guidance_scale") {
                None => None,
                Some(v) => Some(v.as_f64().filter(|g| g.is_finite()).ok_or_else(|| {
                    Error::model(format!("{name}: `guidance_scale` must be a finite number, got {v}"))
                })?),
            },
            num_inference_steps: optional_steps(&mut c, name, "num_inference_steps")?,
            sr_num_inference_steps: optional_steps(&mut c, name, "sr_num_inference_steps")?,
        };
        c.finish()?;
        Ok(idx)
    }
}

/// An optional step count of `model_index.json`: an integer from 1 to 1000.
fn optional_steps(c: &mut Config, file: &str, key: &str) -> Result<Option<usize>> {
    match c.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64().filter(|n| (1..=1000).contains(n)) {
            Some(n) => Ok(Some(n as usize)),
            None => Err(Error::model(format!("{file}: `{key}` must be an integer from 1 to 1000, got {v}"))),
        },
    }
}

/// A loaded cascade.
pub struct Cascade {
    pub tokenizer: Tokenizer,
    pub text_encoder: ClipTextModel,
    /// The base UNet (3 → 3 channels) and its scheduler.
    pub unet: UNet,
    pub scheduler: SchedulerConfig,
    /// The SR UNet (6 → 3 channels, class label = noise level) and its scheduler.
    pub sr_unet: UNet,
    pub sr_scheduler: SchedulerConfig,
    pub index: CascadeIndex,
}

/// Rewrites a config error's leading file name (`unet/config.json`) to the component it came from.
fn relabel(e: Error, from: &str, to: &str) -> Error {
    match e {
        Error::Model(m) if m.starts_with(from) => Error::Model(format!("{to}{}", &m[from.len()..])),
        other => other,
    }
}

impl Cascade {
    /// Loads a cascade folder; every missing folder, file, option or tensor is named.
    pub fn load(gpu: &Gpu, dir: &Path, o: &LoadOptions) -> Result<Cascade> {
        let folder = DiffusersFolder::open(dir)?;
        let index = CascadeIndex::read(dir)?;
        let variant = o.variant.as_deref();
        let dirs = folder.component_dirs([TEXT_ENCODER, TOKENIZER, UNET, SCHEDULER, SR_UNET, SR_SCHEDULER])?;
        let text_encoder = ClipTextModel::load(gpu, &dirs[0], variant, o.dtype)?;
        let tokenizer = Tokenizer::from_dir(&dirs[1], text_encoder.config.max_position_embeddings)?;
        let unet = UNet::load(gpu, &dirs[2], variant, o.dtype)?;
        let scheduler = SchedulerConfig::read(&dirs[3])?;
        let sr_unet = UNet::load(gpu, &dirs[4], variant, o.dtype).map_err(|e| relabel(e, "unet/", "sr_unet/"))?;
        let sr_scheduler = SchedulerConfig::read(&dirs[5]).map_err(|e| relabel(e, "scheduler/", "sr_scheduler/"))?;
        let hidden = text_encoder.config.hidden_size;
        for (name, u) in [(UNET, &unet), (SR_UNET, &sr_unet)] {
            if u.config.cross_attention_dim != hidden {
                return Err(Error::model(format!(
                    "{name} cross_attention_dim {} does not match the text encoder's hidden_size {hidden}",
                    u.config.cross_attention_dim
                )));
            }
        }
        let (bc, sc) = (&unet.config, &sr_unet.config);
        if bc.in_channels != RGB || bc.out_channels != RGB || bc.class_embed.is_some() {
            return Err(Error::model(format!(
                "unet/config.json: a cascade base maps 3 to 3 channels without class labels (found {} → {}{})",
                bc.in_channels,
                bc.out_channels,
                if bc.class_embed.is_some() { ", with class_embed_type" } else { "" }
            )));
        }
        if sc.in_channels != 2 * RGB || sc.out_channels != RGB {
            return Err(Error::model(format!(
                "sr_unet/config.json: the SR stage maps 6 channels (x_t, upsampled base) to 3, found {} → {}",
                sc.in_channels, sc.out_channels
            )));
        }
        if sc.class_embed != Some(ClassEmbed::Timestep) {
            return Err(Error::model(
                "sr_unet/config.json: the SR stage needs class_embed_type \"timestep\" (the noise-level embedding)",
            ));
        }
        if index.sr_noise_level >= sr_scheduler.num_train_timesteps {
            return Err(Error::model(format!(
                "model_index.json: sr_noise_level {} is beyond sr_scheduler's {} training timesteps",
                index.sr_noise_level, sr_scheduler.num_train_timesteps
            )));
        }
        Ok(Cascade { tokenizer, text_encoder, unet, scheduler, sr_unet, sr_scheduler, index })
    }
}

/// Fails when `v` holds NaN or Inf.
pub fn finite(v: &[f32], what: &str) -> Result<()> {
    match v.iter().find(|x| !x.is_finite()) {
        Some(bad) => Err(Error::model(format!("{what} holds {bad} values (numeric overflow); no image written"))),
        None => Ok(()),
    }
}

/// Bilinear upsampling by an integer `scale` of NHWC `x` `[B, h, w, C]`, as torch's
/// `F.interpolate(mode="bilinear", align_corners=False)`: source coordinate `(d + 0.5)/scale − 0.5`, clamped at 0,
/// the right/bottom neighbour clamped to the edge.
pub fn upsample_bilinear(x: &[f32], b: usize, h: usize, w: usize, c: usize, scale: usize) -> Vec<f32> {
    // Per output index: (i0, i1, weight of i1), as torch computes it in f32.
    let taps = |n: usize| -> Vec<(usize, usize, f32)> {
        (0..n * scale)
            .map(|d| {
                let src = ((d as f32 + 0.5) / scale as f32 - 0.5).max(0.0);
                let i0 = (src as usize).min(n - 1);
                let i1 = if i0 < n - 1 { i0 + 1 } else { i0 };
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ty, tx) = (taps(h), taps(w));
    let (hh, ww) = (h * scale, w * scale);
    let mut out = vec![0.0f32; b * hh * ww * c];
    for n in 0..b {
        let img = &x[n * h * w * c..(n + 1) * h * w * c];
        for (oy, &(y0, y1, ly)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, lx)) in tx.iter().enumerate() {
                let o = ((n * hh + oy) * ww + ox) * c;
                for ch in 0..c {
                    let p = |yy: usize, xx: usize| img[(yy * w + xx) * c + ch];
                    out[o + ch] = (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1))
                        + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1));
                }
            }
        }
    }
    out
}

/// Noise augmentation (`scheduler.add_noise(x, noise, level)`): `sqrt(ᾱ_L)·x + sqrt(1 − ᾱ_L)·noise` for every row
/// of NHWC `x` `[B, …]`, with one `noise` row shared by all.
pub fn augment(sched: &SchedulerConfig, x: &[f32], noise: &[f32], level: usize) -> Result<Vec<f32>> {
    let acp = sched.alphas_cumprod();
    let a = *acp
        .get(level)
        .ok_or_else(|| Error::model(format!("noise level {level} is beyond the schedule's {} timesteps", acp.len())))?;
    if noise.is_empty() || !x.len().is_multiple_of(noise.len()) {
        return Err(Error::shape("augment", format!("{} values with a noise row of {}", x.len(), noise.len())));
    }
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    Ok(x.iter().zip(noise.iter().cycle()).map(|(&v, &n)| (sa * v as f64 + sb * n as f64) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_torch_on_a_ramp() {
        // torch: F.interpolate(torch.tensor([[[[0., 1.]]]]), scale_factor=4, mode="bilinear", align_corners=False)
        // → [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1] along the row.
        // (A 1-pixel-high input gives 4 equal rows.)
        let up = upsample_bilinear(&[0.0, 1.0], 1, 1, 2, 1, 4);
        let row = [0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0];
        assert_eq!(up, row.repeat(4));
    }
}
