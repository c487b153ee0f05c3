//! The diffusers folder layout (docs/DESIGN.md §6): `model_index.json` at the root names the components
//! (`"unet": ["diffusers", "UNet2DConditionModel"]`), each in its own subfolder (`unet/`, `text_encoder/`, `vae/`,
//! `tokenizer/`, `scheduler/`) with a `config.json` (`scheduler_config.json` for schedulers). The model code parses
//! the config fields itself; this module finds the files and gives clear errors for missing or malformed ones.
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Loader;
use crate::error::{Error, Result};

pub const MODEL_INDEX: &str = "model_index.json";
pub const UNET: &str = "unet";
pub const TEXT_ENCODER: &str = "text_encoder";
pub const VAE: &str = "vae";
pub const TOKENIZER: &str = "tokenizer";
pub const SCHEDULER: &str = "scheduler";
/// The pixel cascade's super-resolution UNet and its scheduler (`P2PCascadePipeline`).
pub const SR_UNET: &str = "sr_unet";
pub const SR_SCHEDULER: &str = "sr_scheduler";
/// A model component's configuration file, and a scheduler's.
pub const CONFIG: &str = "config.json";
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";

/// One component listed in `model_index.json`: `"name": [library, class]` (either may be `null`, as diffusers
/// writes for a removed safety checker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub library: Option<String>,
    pub class: Option<String>,
}

/// A parsed `model_index.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelIndex {
    /// The pipeline class (`_class_name`, e.g. `StableDiffusionPipeline`).
    pub class_name: Option<String>,
    /// `_diffusers_version`.
    pub diffusers_version: Option<String>,
    /// The components, sorted by name.
    pub components: Vec<Component>,
    /// The whole file, for options such as `requires_safety_checker`.
    pub raw: Value,
}

impl ModelIndex {
    /// Reads `root/model_index.json`.
    pub fn read(root: &Path) -> Result<ModelIndex> {
        let path = root.join(MODEL_INDEX);
        if !path.is_file() {
            return Err(Error::model(format!(
                "{}: missing, so {} is not a diffusers folder",
                path.display(),
                root.display()
            )));
        }
        let value = read_json(&path)?;
        ModelIndex::parse(value).map_err(|m| Error::model(format!("{}: {m}", path.display())))
    }

    /// Validates a `model_index.json` value: a JSON object whose non-underscore entries that are lists are
    /// `[library, class]` pairs of strings or nulls. Other values (`requires_safety_checker: true`) are options.
    pub fn parse(value: Value) -> std::result::Result<ModelIndex, String> {
        let Value::Object(obj) = &value else {
            return Err("not a JSON object".to_owned());
        };
        let opt_str = |k: &str| -> std::result::Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(format!("{k} is {v}, not a string")),
            }
        };
        let class_name = opt_str("_class_name")?;
        let diffusers_version = opt_str("_diffusers_version")?;
        let mut components = Vec::new();
        for (name, v) in obj {
            if name.starts_with('_') {
                continue;
            }
            let Value::Array(pair) = v else { continue };
            let part = |x: &Value| match x {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(format!("component \"{name}\" is {v}, expected [library, class]")),
            };
            if pair.len() != 2 {
                return Err(format!("component \"{name}\" is {v}, expected [library, class]"));
            }
            components.push(Component { name: name.clone(), library: part(&pair[0])?, class: part(&pair[1])? });
        }
        components.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ModelIndex { class_name, diffusers_version, components, raw: value })
    }

    /// The component called `name`, if listed.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The names of the listed components.
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.components.iter().map(|c| c.name.as_str())
    }
}

/// A diffusers pipeline folder with a valid `model_index.json`.
#[derive(Clone, Debug)]
pub struct DiffusersFolder {
    root: PathBuf,
    index: ModelIndex,
}

impl DiffusersFolder {
    /// Opens `root`, which must be a folder with a `model_index.json` object.
    pub fn open(root: &Path) -> Result<DiffusersFolder> {
        if !root.exists() {
            return Err(Error::model(format!("{}: no such folder", root.display())));
        }
        if !root.is_dir() {
            return Err(Error::model(format!(
                "{} is a file, not a model folder (expected a diffusers folder)",
                root.display()
            )));
        }
        let index = ModelIndex::read(root)?;
        Ok(DiffusersFolder { root: root.to_path_buf(), index })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> &ModelIndex {
        &self.index
    }

    /// The subfolder of component `name` (e.g. [`UNET`]), which must exist.
    pub fn component_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        let listed = match self.index.component(name) {
            Some(Component { library: Some(l), class: Some(c), .. }) => {
                format!("model_index.json lists it as [{l}, {c}]")
            }
            Some(_) => "model_index.json lists it without a class".to_owned(),
            None => "model_index.json does not list it".to_owned(),
        };
        let what = if dir.exists() { "not a folder" } else { "missing" };
        Err(Error::model(format!("{}: component folder {what} ({listed})", dir.display())))
    }

    /// The subfolders of components `names`, each of which must exist (so that a missing one is reported before
    /// any weights load).
    pub fn component_dirs<const N: usize>(&self, names: [&str; N]) -> Result<[PathBuf; N]> {
        let mut dirs: [PathBuf; N] = std::array::from_fn(|_| PathBuf::new());
        for (d, name) in dirs.iter_mut().zip(names) {
            *d = self.component_dir(name)?;
        }
        Ok(dirs)
    }

    /// The configuration of component `name`: `config.json`, or `scheduler_config.json` for the scheduler.
    pub fn config(&self, name: &str) -> Result<Value> {
        let dir = self.component_dir(name)?;
        if name == SCHEDULER || (!dir.join(CONFIG).exists() && dir.join(SCHEDULER_CONFIG).exists()) {
            read_json_object(&dir.join(SCHEDULER_CONFIG))
        } else {
            read_config(&dir)
        }
    }

    /// The weights of component `name` (see [`Loader::open`]).
    pub fn loader(&self, name: &str, variant: Option<&str>) -> Result<Loader> {
        Loader::open(&self.component_dir(name)?, variant)
    }
}

/// Reads a JSON file, with one-line errors for a missing file and malformed JSON.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::model(format!("{}: missing", path.display())));
        }
        Err(e) => return Err(Error::model(format!("{}: cannot read: {e}", path.display()))),
    };
    serde_json::from_str(&text).map_err(|e| Error::model(format!("{}: malformed JSON: {e}", path.display())))
}

/// Reads a JSON file that must hold an object.
pub fn read_json_object(path: &Path) -> Result<Value> {
    let v = read_json(path)?;
    if !v.is_object() {
        return Err(Error::model(format!("{}: not a JSON object", path.display())));
    }
    Ok(v)
}

/// Reads a component's `dir/config.json`, which must be a JSON object.
pub fn read_config(dir: &Path) -> Result<Value> {
    read_json_object(&dir.join(CONFIG))
}

/// A model folder's identity for files made with it (an inversion): `sha256:` and the hex SHA-256 over the
/// folder's configuration files — every `*.json` at the root and in its immediate subfolders except weight-shard
/// indexes (`*.index.json`, which differ between weight variants) — each as its path relative to the root, a
/// zero byte, its length and its bytes, in path order. Weights are not read: two folders with the same configs and
/// tokenizer but other weights have one identity (a retrained model must change a config to be told apart).
pub fn model_identity(root: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let list = |dir: &Path| -> Result<Vec<PathBuf>> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| Error::model(format!("{}: cannot list: {e}", dir.display())))?;
        Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
    };
    let mut files = Vec::new();
    for p in list(root)? {
        if p.is_dir() {
            files.extend(list(&p)?.into_iter().filter(|f| f.is_file()));
        } else if p.is_file() {
            files.push(p);
        }
    }
    let mut configs: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(root).ok()?.to_string_lossy().replace('\\', "/");
            (rel.ends_with(".json") && !rel.ends_with(".index.json")).then_some((rel, p))
        })
        .collect();
    configs.sort();
    let mut h = Sha256::new();
    for (rel, p) in &configs {
        let bytes = std::fs::read(p).map_err(|e| Error::model(format!("{}: cannot read: {e}", p.display())))?;
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}
