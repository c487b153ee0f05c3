//! Single-file Stable Diffusion 1.x checkpoints (the original CompVis key names, in safetensors) → diffusers
//! folders (`p2p-wgpu convert`).
//!
//! The architecture comes from configs: `--config-from DIR`, an existing diffusers folder of the same
//! architecture (its `unet/`, `vae/`, `text_encoder/` `config.json`, and its `tokenizer/` and
//! `scheduler/` when present), or `--preset sd15`, SD 1.5's configs built in (`src/convert/sd15/`). The key
//! mapping ([`mapping`]) is generated from the parsed configs — block count, `layers_per_block`, where the
//! attentions are, channels — and gives every parameter's CompVis name, diffusers name and shape:
//!
//! UNet (`model.diffusion_model.*` → `unet/`; L = `layers_per_block`, b = level, j = layer in the level):
//! - `time_embed.0`, `time_embed.2` → `time_embedding.linear_1`, `.linear_2`; `input_blocks.0.0` → `conv_in`;
//!   `out.0`, `out.2` → `conv_norm_out`, `conv_out`;
//! - `input_blocks.{1 + b(L+1) + j}.0` / `.1` → `down_blocks.{b}.resnets.{j}` / `.attentions.{j}` (j < L), and
//!   `input_blocks.{(b+1)(L+1)}.0.op` → `down_blocks.{b}.downsamplers.0.conv` (all levels but the last);
//! - `middle_block.0`, `.1`, `.2` → `mid_block.resnets.0`, `mid_block.attentions.0`, `mid_block.resnets.1`;
//! - `output_blocks.{b(L+1) + j}.0` / `.1` → `up_blocks.{b}.resnets.{j}` / `.attentions.{j}` (j ≤ L), and in the
//!   block j = L of all up blocks but the last, `.1.conv` (`.2.conv` after an attention) →
//!   `up_blocks.{b}.upsamplers.0.conv`;
//! - in a ResBlock, `in_layers.0`, `in_layers.2`, `emb_layers.1`, `out_layers.0`, `out_layers.3`,
//!   `skip_connection` → `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`; a
//!   SpatialTransformer (`norm`, `proj_in`, `transformer_blocks.{t}.*`, `proj_out`) keeps its names.
//!
//! VAE (`first_stage_model.*` → `vae/`; n = number of levels):
//! - `encoder.down.{i}.block.{j}`, `encoder.down.{i}.downsample.conv` → `encoder.down_blocks.{i}.resnets.{j}`,
//!   `encoder.down_blocks.{i}.downsamplers.0.conv`;
//! - `decoder.up.{n-1-b}.block.{j}`, `decoder.up.{n-1-b}.upsample.conv` → `decoder.up_blocks.{b}.resnets.{j}`,
//!   `decoder.up_blocks.{b}.upsamplers.0.conv` (CompVis stores the decoder's levels in reverse order);
//! - `{encoder,decoder}.mid.block_1`, `.mid.attn_1`, `.mid.block_2` → `.mid_block.resnets.0`,
//!   `.mid_block.attentions.0`, `.mid_block.resnets.1`; `.norm_out` → `.conv_norm_out`; `conv_in`, `conv_out`,
//!   `quant_conv`, `post_quant_conv` keep their names;
//! - in a ResBlock `nin_shortcut` → `conv_shortcut`; in the mid attention `norm`, `q`, `k`, `v`, `proj_out` →
//!   `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0`, the 1×1 conv weights `[C, C, 1, 1]` becoming linear
//!   weights `[C, C]` (the same bytes).
//!
//! Text encoder (`cond_stage_model.transformer.*` → `text_encoder/`): `text_model.*` as it is, which is the
//! transformers 4.x layout of the hubs' SD 1.x folders.
//!
//! Skipped knowingly (counted in the report): `model_ema.*`, the text encoder's `embeddings.position_ids` buffer,
//! and ldm's DDPM schedule buffers (`betas`, `alphas_cumprod`, …; the schedule comes from the scheduler config,
//! and `betas` is compared with it). Every other key must be mapped, and every mapped key must be there with its
//! shape: otherwise one error names the unmapped, missing and misshapen keys, and nothing is written.
//!
//! Decisions (the design is silent on them):
//! - pickles (`.ckpt`, `.pt`, `.pth`, `.bin`, `.pkl`, or a file that starts like one) are refused with how to
//!   convert them to safetensors in Python; they are never unpickled;
//! - SD 2.x (OpenCLIP `cond_stage_model.model.*`) and SDXL (`conditioner.*`) checkpoints are refused by name;
//! - tensors keep their stored dtype (bit-exact copies) unless `--fp16`, which stores every float tensor as F16
//!   (round to nearest) and fails on values beyond the f16 range; files use the plain names
//!   (`diffusion_pytorch_model.safetensors`, `model.safetensors`), with `{"format": "pt"}` metadata;
//! - the output folder must not exist or be empty: everything is written into a hidden sibling folder, which is
//!   renamed into place at the end, so a failed conversion leaves nothing behind;
//! - `tokenizer/` is copied from `--config-from` when it has one, else the embedded CLIP ViT-L/14 vocab and
//!   merges with SD 1.5's tokenizer configs; `scheduler/` likewise, else SD 1.5's PNDM config;
//!   `model_index.json` is written anew (`StableDiffusionPipeline`, no safety checker);
//! - the written folder is checked before it is moved into place: configs parse, the tokenizer loads.
pub mod mapping;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use half::f16;
use serde_json::json;

use crate::error::{Error, Result};
use crate::models::clip::ClipTextConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;
use crate::schedulers::SchedulerConfig;
use crate::weights::safetensors_file::fmt_shape;
use crate::weights::{FileDType, SafetensorsFile};

pub use mapping::{Component, Entry};
use writer::OutTensor;

/// Built-in configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Stable Diffusion 1.5 (`runwayml/stable-diffusion-v1-5`'s configs; SD 1.1–1.5 share them).
    Sd15,
}

impl Preset {
    /// The names `from_name` accepts.
    pub const NAMES: &'static [&'static str] = &["sd15"];

    pub fn from_name(name: &str) -> Result<Preset> {
        match name {
            "sd15" => Ok(Preset::Sd15),
            other => Err(Error::model(format!("unknown preset {other:?} (known: {})", Preset::NAMES.join(", ")))),
        }
    }

    /// `(path in a diffusers folder, contents)` of the preset's config files.
    pub fn files(self) -> [(&'static str, &'static str); 6] {
        match self {
            Preset::Sd15 => [
                ("unet/config.json", include_str!("sd15/unet_config.json")),
                ("vae/config.json", include_str!("sd15/vae_config.json")),
                ("text_encoder/config.json", include_str!("sd15/text_encoder_config.json")),
                ("scheduler/scheduler_config.json", include_str!("sd15/scheduler_config.json")),
                ("tokenizer/tokenizer_config.json", include_str!("sd15/tokenizer_config.json")),
                ("tokenizer/special_tokens_map.json", include_str!("sd15/special_tokens_map.json")),
            ],
        }
    }

    /// Writes the preset's config files under `root` (creating the component folders).
    pub fn write_configs(self, root: &Path) -> Result<()> {
        for (path, text) in self.files() {
            write_file(&root.join(path), text.as_bytes())?;
        }
        Ok(())
    }
}

/// Where the configs come from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A diffusers folder of the same architecture.
    Folder(PathBuf),
    Preset(Preset),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Folder(d) => write!(f, "{}", d.display()),
            ConfigSource::Preset(Preset::Sd15) => f.write_str("preset sd15"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The single-file checkpoint (`.safetensors`).
    pub checkpoint: PathBuf,
    pub configs: ConfigSource,
    /// The diffusers folder to create (must not exist, or be empty).
    pub out: PathBuf,
    /// Store every float tensor as F16.
    pub fp16: bool,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub out: PathBuf,
    /// Tensors written per component.
    pub tensors: BTreeMap<Component, usize>,
    /// Keys skipped knowingly, by reason.
    pub skipped: BTreeMap<&'static str, usize>,
    /// The dtypes written.
    pub dtypes: BTreeSet<&'static str>,
    /// Bytes of the weight files.
    pub bytes: u64,
    /// Warnings (e.g. the checkpoint's `betas` differ from the scheduler config's schedule).
    pub notes: Vec<String>,
}

impl ConvertReport {
    /// One line for the command line.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self.tensors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let skipped: usize = self.skipped.values().sum();
        let why: Vec<String> = self.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let dtypes: Vec<&str> = self.dtypes.iter().copied().collect();
        format!(
            "wrote {}: tensors {} ({}, {:.1} MB); skipped {skipped} known keys{}",
            self.out.display(),
            counts.join(", "),
            dtypes.join("+"),
            self.bytes as f64 / 1e6,
            if why.is_empty() { String::new() } else { format!(" ({})", why.join(", ")) }
        )
    }
}

/// How many names an error lists per category before "and N more".
const LIST_LIMIT: usize = 8;

fn list(what: &str, items: &[String]) -> String {
    let n = items.len();
    let noun = if n == 1 { what.to_owned() } else { format!("{what}s") };
    let shown = items.iter().take(LIST_LIMIT).cloned().collect::<Vec<_>>().join(", ");
    let more = if n > LIST_LIMIT { format!(" and {} more", n - LIST_LIMIT) } else { String::new() };
    format!("{n} {noun}: {shown}{more}")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::model(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::model(format!("cannot write {}: {e}", path.display())))
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::model(format!("cannot read {}: {e}", from.display())))?;
    write_file(to, &bytes)
}

const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl"];

fn pickle_refusal(path: &Path, what: &str) -> Error {
    let p = path.display();
    Error::model(format!(
        "{p}: {what}, which is never unpickled (unpickling can run arbitrary code). Convert it to safetensors in \
         Python with the `safetensors` package, then convert that file: python -c \"import torch, \
         safetensors.torch as st; sd = torch.load('{p}', map_location='cpu', weights_only=True); sd = \
         sd.get('state_dict', sd); st.save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, \
         torch.Tensor)}}, 'model.safetensors')\""
    ))
}

/// Refuses pickles by extension, and files that start like a pickle or a `torch.save` zip whatever their name.
fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if let Some(ext) = ext.filter(|e| PICKLE_EXTENSIONS.contains(&e.as_str())) {
        return Err(pickle_refusal(path, &format!("a .{ext} file is a PyTorch pickle")));
    }
    let mut magic = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path)
        && f.read_exact(&mut magic).is_ok()
    {
        if &magic == b"PK\x03\x04" {
            return Err(pickle_refusal(path, "this is a torch.save zip archive (a pickle), not safetensors"));
        }
        if magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
            return Err(pickle_refusal(path, "this is a Python pickle, not safetensors"));
        }
    }
    Ok(())
}

/// Refuses other model families by their keys, and files without a CompVis UNet.
fn check_family(path: &Path, ckpt: &SafetensorsFile) -> Result<()> {
    let keys = ckpt.tensors();
    let has = |prefix: &str| keys.keys().any(|k| k.starts_with(prefix));
    let family = if has("conditioner.embedders.") {
        Some("an SDXL checkpoint (conditioner.embedders.*)")
    } else if has("cond_stage_model.model.") {
        Some("an SD 2.x checkpoint (OpenCLIP text encoder, cond_stage_model.model.*)")
    } else {
        None
    };
    if let Some(f) = family {
        return Err(Error::model(format!("{}: {f}; only SD 1.x checkpoints are converted", path.display())));
    }
    if !has(mapping::UNET_PREFIX) {
        return Err(Error::model(format!(
            "{}: no {}* keys, so not a single-file CompVis Stable Diffusion checkpoint (a diffusers component's \
             weights are used from their folder as they are)",
            path.display(),
            mapping::UNET_PREFIX
        )));
    }
    Ok(())
}

/// The output must be a new or empty folder.
fn check_out(out: &Path) -> Result<()> {
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::model(format!("output {} is a file, not a folder", out.display())));
        }
        let mut entries =
            std::fs::read_dir(out).map_err(|e| Error::model(format!("cannot list {}: {e}", out.display())))?;
        if entries.next().is_some() {
            return Err(Error::model(format!(
                "output folder {} is not empty: give a new or empty folder (nothing is overwritten)",
                out.display()
            )));
        }
    }
    Ok(())
}

/// A hidden folder beside the output, removed on drop unless it was moved into place (with the output's parent
/// folders that it had to create).
struct Staging {
    dir: PathBuf,
    created_parents: Vec<PathBuf>,
    done: bool,
}

impl Staging {
    fn new(out: &Path) -> Result<Staging> {
        let name = out
            .file_name()
            .ok_or_else(|| Error::model(format!("output {} has no folder name", out.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let created_parents: Vec<PathBuf> = parent
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .map(Path::to_path_buf)
            .collect();
        let stage = Staging {
            dir: parent.join(format!(".{name}.converting-{}", std::process::id())),
            created_parents,
            done: false,
        };
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::model(format!("cannot create output folder {}: {e}", parent.display())))?;
        if stage.dir.exists() {
            let _ = std::fs::remove_dir_all(&stage.dir);
        }
        std::fs::create_dir(&stage.dir)
            .map_err(|e| Error::model(format!("cannot create {}: {e}", stage.dir.display())))?;
        Ok(stage)
    }

    fn finish(mut self, out: &Path) -> Result<()> {
        if out.is_dir() {
            // Empty (checked before): replace it.
            std::fs::remove_dir(out).map_err(|e| Error::model(format!("cannot replace {}: {e}", out.display())))?;
        }
        std::fs::rename(&self.dir, out)
            .map_err(|e| Error::model(format!("cannot move {} to {}: {e}", self.dir.display(), out.display())))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
            // Deepest first; `remove_dir` leaves a folder that something else has written into.
            for p in &self.created_parents {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

/// The parsed configs.
struct Configs {
    unet: UNetConfig,
    vae: VaeConfig,
    text: ClipTextConfig,
    scheduler: SchedulerConfig,
}

/// Puts the configs, tokenizer and scheduler into `stage` and parses the configs (from the user's files, so that
/// errors name them).
fn stage_configs(source: &ConfigSource, stage: &Path, notes: &mut Vec<String>) -> Result<Configs> {
    let preset_files = Preset::Sd15.files();
    let preset = |path: &str| preset_files.iter().find(|(p, _)| *p == path).expect("a preset file").1;
    let root = match source {
        ConfigSource::Preset(p) => {
            p.write_configs(stage)?;
            stage.to_path_buf()
        }
        ConfigSource::Folder(dir) => {
            if !dir.is_dir() {
                return Err(Error::model(format!("--config-from {}: not a folder", dir.display())));
            }
            for c in Component::ALL {
                let from = dir.join(c.dir()).join("config.json");
                if !from.is_file() {
                    return Err(Error::model(format!("{}: missing (--config-from needs it)", from.display())));
                }
                copy_file(&from, &stage.join(c.dir()).join("config.json"))?;
            }
            let sched = dir.join("scheduler/scheduler_config.json");
            if sched.is_file() {
                copy_file(&sched, &stage.join("scheduler/scheduler_config.json"))?;
            } else {
                write_file(
                    &stage.join("scheduler/scheduler_config.json"),
                    preset("scheduler/scheduler_config.json").as_bytes(),
                )?;
                notes.push(format!("{} has no scheduler/: wrote SD 1.5's PNDM config", dir.display()));
            }
            let tok = dir.join("tokenizer");
            if tok.is_dir() {
                let entries =
                    std::fs::read_dir(&tok).map_err(|e| Error::model(format!("cannot list {}: {e}", tok.display())))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::model(format!("cannot list {}: {e}", tok.display())))?;
                    if entry.path().is_file() {
                        copy_file(&entry.path(), &stage.join("tokenizer").join(entry.file_name()))?;
                    }
                }
            } else {
                notes.push(format!("{} has no tokenizer/: wrote the embedded CLIP ViT-L/14 tokenizer", dir.display()));
                for p in ["tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"] {
                    write_file(&stage.join(p), preset(p).as_bytes())?;
                }
            }
            dir.clone()
        }
    };
    if !stage.join("tokenizer/vocab.json").exists() && !stage.join("tokenizer/tokenizer.json").exists() {
        write_file(&stage.join("tokenizer/vocab.json"), include_bytes!("../../assets/clip-tokenizer/vocab.json"))?;
        write_file(&stage.join("tokenizer/merges.txt"), include_bytes!("../../assets/clip-tokenizer/merges.txt"))?;
    }
    let sched_dir = if root.join("scheduler/scheduler_config.json").is_file() {
        root.join("scheduler")
    } else {
        stage.join("scheduler")
    };
    Ok(Configs {
        unet: UNetConfig::read(&root.join("unet"))?,
        vae: VaeConfig::read(&root.join("vae"))?,
        text: ClipTextConfig::read(&root.join("text_encoder"))?,
        scheduler: SchedulerConfig::read(&sched_dir)?,
    })
}

/// Checks the checkpoint's keys against the plan: one error naming every unmapped, missing, misshapen and
/// non-float key. Returns the skipped keys' counts by reason.
fn match_keys(
    path: &Path,
    ckpt: &SafetensorsFile,
    plan: &[Entry],
    source: &ConfigSource,
) -> Result<BTreeMap<&'static str, usize>> {
    let header = ckpt.tensors();
    let (mut missing, mut misshapen, mut not_float) = (Vec::new(), Vec::new(), Vec::new());
    let mut used: HashSet<&str> = HashSet::with_capacity(plan.len());
    for e in plan {
        match header.get(&e.compvis) {
            None => missing.push(e.compvis.clone()),
            Some(info) => {
                used.insert(&e.compvis);
                if !e.accepts(&info.shape) {
                    let want = fmt_shape(&e.compvis_shape());
                    misshapen.push(format!("{} is {}, expected {want}", e.compvis, fmt_shape(&info.shape)));
                } else if !info.dtype.is_float() {
                    not_float.push(format!("{} is {}", e.compvis, info.dtype));
                }
            }
        }
    }
    let mut skipped = BTreeMap::new();
    let mut unmapped = Vec::new();
    for k in header.keys().filter(|k| !used.contains(k.as_str())) {
        match mapping::skip_reason(k) {
            Some(reason) => *skipped.entry(reason).or_insert(0) += 1,
            None => unmapped.push(k.clone()),
        }
    }
    let mut parts = Vec::new();
    if !unmapped.is_empty() {
        parts.push(list("unmapped key", &unmapped));
    }
    if !missing.is_empty() {
        parts.push(list("missing key", &missing));
    }
    if !misshapen.is_empty() {
        parts.push(list("misshapen key", &misshapen));
    }
    if !not_float.is_empty() {
        parts.push(list("non-float tensor", &not_float));
    }
    if parts.is_empty() {
        return Ok(skipped);
    }
    let hint = if missing.is_empty() && misshapen.is_empty() {
        String::new()
    } else {
        format!(" (do the configs from {source} describe this checkpoint's architecture?)")
    };
    Err(Error::model(format!("{}: {}{hint}", path.display(), parts.join("; "))))
}

/// A note when the checkpoint's `betas` differ from the scheduler config's schedule.
fn check_betas(ckpt: &SafetensorsFile, s: &SchedulerConfig) -> Option<String> {
    let info = ckpt.info("betas")?;
    if !info.dtype.is_float() {
        return None;
    }
    let got = ckpt.read_f32("betas").ok()?.data;
    let n = s.num_train_timesteps;
    let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
    let want: Vec<f64> = (0..n)
        .map(|i| match s.beta_schedule.as_str() {
            "scaled_linear" => lin(s.beta_start.sqrt(), s.beta_end.sqrt(), i).powi(2),
            _ => lin(s.beta_start, s.beta_end, i),
        })
        .collect();
    let off = got.len() != n || got.iter().zip(&want).any(|(&g, &w)| (g as f64 - w).abs() > 1e-4 * w.abs() + 1e-9);
    off.then(|| {
        format!(
            "the checkpoint's DDPM betas ({} values, {:.6}…{:.6}) differ from the scheduler config's {} schedule \
             ({n} values, {}…{}): check scheduler/scheduler_config.json",
            got.len(),
            got.first().copied().unwrap_or(f32::NAN),
            got.last().copied().unwrap_or(f32::NAN),
            s.beta_schedule,
            s.beta_start,
            s.beta_end
        )
    })
}

/// The stored bytes of `e` as written: as they are, or as F16 with `fp16`.
fn tensor_bytes(ckpt: &SafetensorsFile, e: &Entry, fp16: bool) -> Result<Vec<u8>> {
    let dtype = ckpt.info(&e.compvis).map(|i| i.dtype);
    if !fp16 || dtype == Some(FileDType::F16) {
        return ckpt.read_bytes(&e.compvis);
    }
    let t = ckpt.read_f32(&e.compvis)?;
    let mut out = Vec::with_capacity(t.data.len() * 2);
    let mut worst = 0f32;
    for &x in &t.data {
        let h = f16::from_f32(x);
        if h.is_infinite() && x.is_finite() {
            worst = worst.max(x.abs());
        }
        out.extend_from_slice(&h.to_bits().to_le_bytes());
    }
    if worst > 0.0 {
        return Err(Error::model(format!(
            "{}: values beyond the f16 range (|x| up to {worst:e}); convert without --fp16",
            e.compvis
        )));
    }
    Ok(out)
}

fn model_index(scheduler_class: &str) -> serde_json::Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
}

/// Converts `o.checkpoint` into a diffusers folder at `o.out`. Nothing is written unless everything maps.
pub fn convert(o: &ConvertOptions) -> Result<ConvertReport> {
    let path = &o.checkpoint;
    refuse_pickle(path)?;
    check_out(&o.out)?;
    let ckpt = SafetensorsFile::open(path)?;
    check_family(path, &ckpt)?;

    let stage = Staging::new(&o.out)?;
    let mut notes = Vec::new();
    let cfg = stage_configs(&o.configs, &stage.dir, &mut notes)?;
    let plan = mapping::plan(&cfg.unet, &cfg.vae, &cfg.text);
    let skipped = match_keys(path, &ckpt, &plan, &o.configs)?;
    notes.extend(check_betas(&ckpt, &cfg.scheduler));

    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let mut report = ConvertReport {
        out: o.out.clone(),
        tensors: BTreeMap::new(),
        skipped,
        dtypes: BTreeSet::new(),
        bytes: 0,
        notes: Vec::new(),
    };
    for comp in Component::ALL {
        let mut entries: Vec<&Entry> = plan.iter().filter(|e| e.component == comp).collect();
        entries.sort_by(|a, b| a.diffusers.cmp(&b.diffusers));
        let tensors: Vec<OutTensor> = entries
            .iter()
            .map(|e| {
                let src = ckpt.info(&e.compvis).expect("matched").dtype;
                let dtype = if o.fp16 { FileDType::F16 } else { src };
                report.dtypes.insert(dtype.name());
                OutTensor { name: e.diffusers.clone(), dtype, shape: e.shape.clone() }
            })
            .collect();
        let file = stage.dir.join(comp.dir()).join(comp.weights_file());
        report.bytes += writer::write(&file, &tensors, &metadata, |i| tensor_bytes(&ckpt, entries[i], o.fp16))?;
        report.tensors.insert(comp, tensors.len());
    }
    let class = cfg.scheduler.class_name.clone();
    let index = serde_json::to_string_pretty(&model_index(&class)).expect("JSON") + "\n";
    write_file(&stage.dir.join("model_index.json"), index.as_bytes())?;
    // The tokenizer as the pipeline will load it.
    crate::text::Tokenizer::from_dir(stage.dir.join("tokenizer"), cfg.text.max_position_embeddings)?;

    stage.finish(&o.out)?;
    report.notes = notes;
    Ok(report)
}
