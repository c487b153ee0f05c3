//! Weight files: strict safetensors validation before any allocation (docs/DESIGN.md §6), diffusers folder layout,
//! key-name variants, and refusal of pickles.
//!
//! - [`safetensors_file`]: the strict reader ([`SafetensorsFile`]).
//! - [`Loader`]: one model component's weights (all of a folder's `*.safetensors`, a `*.{variant}.safetensors` set,
//!   or a sharded set with its `*.safetensors.index.json`), taken tensor by tensor by the model code, with every
//!   missing, misshapen and unexpected tensor named in one error by [`Loader::finish`].
//! - [`folder`]: `model_index.json`, component subfolders and their `config.json`.
//!
//! File selection in a component folder (decided here; diffusers behaves much the same):
//! - without a variant, the plain files (`model.safetensors`, `diffusion_pytorch_model-00001-of-00002.safetensors`);
//!   files with an extra dot-suffix (`*.fp16.safetensors`) are ignored. When there are no plain files and exactly
//!   one variant exists, that variant is used; with several, the error names them;
//! - with `variant = Some("fp16")`, only `*.fp16.safetensors` (and `*.fp16-00001-of-00002.safetensors` shards);
//! - a sharded set is read through its index (`*.safetensors.index.json`, or diffusers' variant form
//!   `*.safetensors.index.fp16.json`): the index may name only files of the folder, every tensor it lists must be
//!   in the file it names, and every tensor of those files must be listed (files of the same variant that the
//!   index does not name are not read);
//! - pickles (`.bin`, `.ckpt`, `.pt`, `.pth`, `.pkl`) are never opened: when they are all there is, the error says
//!   how to convert them.
pub mod config;
pub mod folder;
pub mod safetensors_file;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use folder::{Component, DiffusersFolder, ModelIndex, read_config, read_json};
pub use safetensors_file::{FileDType, Header, SafetensorsFile, TensorInfo};

use crate::error::{Error, Result};
use safetensors_file::fmt_shape;

/// A tensor read from a weight file, widened to f32 on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// How many names `finish` lists per category before "and N more".
const LIST_LIMIT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unused,
    Taken,
    Ignored,
}

#[derive(Debug)]
struct Slot {
    /// Index into `Loader::files`.
    file: usize,
    /// The key as stored in the file (before prefix stripping).
    key: String,
    state: State,
}

/// The weights of one model component (e.g. `unet/`), validated on open. Models `take` every tensor they need;
/// problems are collected, not returned one at a time, so that `finish` can name every missing, misshapen and
/// unexpected tensor in one error.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    slots: BTreeMap<String, Slot>,
    missing: Vec<String>,
    misshapen: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// The names already in `missing` or `misshapen` (a set, so that a model of many layers is checked in linear
    /// time).
    reported: std::collections::HashSet<String>,
    /// Other problems met while taking (a read failure, an integer tensor taken as weights, a prefix clash),
    /// reported by `finish` as "N other problems".
    errors: Vec<String>,
}

impl Loader {
    /// Opens the component folder `dir`: its `*.safetensors` (or `*.{variant}.safetensors` when `variant` is
    /// given), validating every file before reading any tensor data. Pickles (`.bin`, `.ckpt`, `.pt`, `.pth`)
    /// are refused with a message saying how to convert them.
    pub fn open(dir: &Path, variant: Option<&str>) -> Result<Loader> {
        let paths = select_files(dir, variant)?;
        let mut files = Vec::with_capacity(paths.files.len());
        for p in &paths.files {
            files.push(SafetensorsFile::open(p)?);
        }
        if let Some((index_path, weight_map)) = &paths.index {
            check_index(index_path, weight_map, &files)?;
        }
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for key in f.tensors().keys() {
                if let Some(prev) = slots.get(key) {
                    return Err(Error::model(format!(
                        "{}: tensor \"{key}\" is in two files: {} and {}",
                        dir_label(dir),
                        file_name(files[prev.file].path()),
                        file_name(f.path())
                    )));
                }
                slots.insert(key.clone(), Slot { file: i, key: key.clone(), state: State::Unused });
            }
        }
        Ok(Loader {
            dir: dir.to_path_buf(),
            files,
            slots,
            missing: Vec::new(),
            misshapen: Vec::new(),
            reported: Default::default(),
            errors: Vec::new(),
        })
    }

    /// Takes tensor `name`, which must have `shape`. When it is missing or has another shape, the problem is
    /// recorded and `None` returned.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Option<HostTensor> {
        let Some(slot) = self.slots.get_mut(name) else {
            if self.reported.insert(name.to_owned()) {
                self.missing.push(name.to_owned());
            }
            return None;
        };
        slot.state = State::Taken;
        let file = &self.files[slot.file];
        let info = file.info(&slot.key).expect("slot keys come from the file's header");
        if info.shape != shape {
            if self.reported.insert(name.to_owned()) {
                self.misshapen.push((name.to_owned(), info.shape.clone(), shape.to_vec()));
            }
            return None;
        }
        if !info.dtype.is_float() {
            self.errors.push(format!("{name} is {}, not a float tensor", info.dtype));
            return None;
        }
        match file.read_f32(&slot.key) {
            // Checked here, in the pass that reads them: a NaN or infinite weight would otherwise surface as
            // "numeric overflow" minutes later.
            Ok(t) => match t.data.iter().position(|v| !v.is_finite()) {
                None => Some(t),
                Some(i) => {
                    self.errors.push(format!("{name} holds {} at element {i} (a corrupt weight file)", t.data[i]));
                    None
                }
            },
            Err(e) => {
                self.errors.push(e.to_string());
                None
            }
        }
    }

    /// Renames every key that starts with `prefix` to the key without it (transformers 4.x text encoders prefix
    /// theirs with `text_model.`).
    pub fn strip_prefix(&mut self, prefix: &str) {
        if prefix.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.slots);
        let (prefixed, plain): (Vec<_>, Vec<_>) =
            old.into_iter().partition(|(k, _)| k.starts_with(prefix) && k.len() > prefix.len());
        self.slots = plain.into_iter().collect();
        for (k, slot) in prefixed {
            let new = k[prefix.len()..].to_owned();
            if self.slots.contains_key(&new) {
                self.errors.push(format!("both {k} and {new} exist (stripping the prefix \"{prefix}\")"));
                self.slots.insert(k, slot);
            } else {
                self.slots.insert(new, slot);
            }
        }
    }

    /// Marks `name` as known and unused (e.g. `embeddings.position_ids` buffers), if present.
    pub fn ignore(&mut self, name: &str) {
        if let Some(slot) = self.slots.get_mut(name)
            && slot.state == State::Unused
        {
            slot.state = State::Ignored;
        }
    }

    /// Marks every not yet taken tensor whose name starts with `prefix` as known and unused.
    pub fn ignore_prefix(&mut self, prefix: &str) {
        for (k, slot) in self.slots.iter_mut() {
            if k.starts_with(prefix) && slot.state == State::Unused {
                slot.state = State::Ignored;
            }
        }
    }

    /// Whether the file set has a tensor `name` (after prefix stripping).
    pub fn has(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    /// The shape of tensor `name`, if present (reads nothing).
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.info(name).map(|i| i.shape.as_slice())
    }

    /// The file dtype of tensor `name`, if present.
    pub fn dtype(&self, name: &str) -> Option<FileDType> {
        self.info(name).map(|i| i.dtype)
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        let slot = self.slots.get(name)?;
        self.files[slot.file].info(&slot.key)
    }

    /// All tensor names (after prefix stripping), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// The component folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The opened files, in the order they were read.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Errors naming every missing, misshapen and unexpected (never taken) tensor, if any.
    pub fn finish(self) -> Result<()> {
        let unexpected: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.state == State::Unused).map(|(k, _)| k.clone()).collect();
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("{} missing ({})", self.missing.len(), list(&self.missing)));
        }
        if !self.misshapen.is_empty() {
            let items: Vec<String> = self
                .misshapen
                .iter()
                .map(|(n, found, want)| format!("{n} is {}, expected {}", fmt_shape(found), fmt_shape(want)))
                .collect();
            parts.push(format!("{} misshapen ({})", items.len(), list(&items)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("{} unexpected ({})", unexpected.len(), list(&unexpected)));
        }
        if !self.errors.is_empty() {
            let n = self.errors.len();
            let shown: Vec<&str> = self.errors.iter().take(3).map(String::as_str).collect();
            let more = if n > 3 { format!("; and {} more", n - 3) } else { String::new() };
            let noun = if n == 1 { "other problem" } else { "other problems" };
            parts.push(format!("{n} {noun} ({}{more})", shown.join("; ")));
        }
        if parts.is_empty() {
            Ok(())
        } else {
            Err(Error::model(format!("{}: {}", dir_label(&self.dir), parts.join(", "))))
        }
    }
}

/// `a, b, c and N more`.
fn list(items: &[String]) -> String {
    if items.len() <= LIST_LIMIT {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..LIST_LIMIT].join(", "), items.len() - LIST_LIMIT)
    }
}

/// `unet/` for a folder path, so that messages read as paths.
fn dir_label(dir: &Path) -> String {
    let s = dir.display().to_string();
    if s.ends_with('/') || s.ends_with(std::path::MAIN_SEPARATOR) { s } else { format!("{s}/") }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// What a file in a component folder is, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Safetensors { variant: Option<String> },
    Index { variant: Option<String> },
    Pickle { variant: Option<String> },
}

/// Splits `stem` (a file name without its extension) into (base, variant), dropping a `-00001-of-00002` shard
/// suffix first: `diffusion_pytorch_model.fp16-00001-of-00002` → variant `fp16`.
fn stem_variant(stem: &str) -> Option<String> {
    let stem = strip_shard_suffix(stem);
    let (_, v) = stem.rsplit_once('.')?;
    (!v.is_empty()).then(|| v.to_owned())
}

fn strip_shard_suffix(stem: &str) -> &str {
    let is_num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, total)) = stem.rsplit_once("-of-")
        && is_num(total)
        && let Some((base, part)) = head.rsplit_once('-')
        && is_num(part)
    {
        return base;
    }
    stem
}

fn classify(name: &str) -> Option<Kind> {
    if name.starts_with('.') {
        return None;
    }
    if let Some(stem) = name.strip_suffix(".safetensors") {
        return Some(Kind::Safetensors { variant: stem_variant(stem) });
    }
    if let Some((head, tail)) = name.split_once(".safetensors.index")
        && let Some(mid) = tail.strip_suffix(".json")
    {
        // `model.safetensors.index.json`, `model.fp16.safetensors.index.json`, diffusers'
        // `diffusion_pytorch_model.safetensors.index.fp16.json`.
        let variant = match mid.strip_prefix('.') {
            Some(v) if !v.is_empty() => Some(v.to_owned()),
            _ if mid.is_empty() => stem_variant(head),
            _ => return None,
        };
        return Some(Kind::Index { variant });
    }
    for ext in [".bin", ".ckpt", ".pt", ".pth", ".pkl"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return Some(Kind::Pickle { variant: stem_variant(stem) });
        }
    }
    None
}

struct Selection {
    files: Vec<PathBuf>,
    /// The index file and its weight map (tensor → file name), for a sharded set.
    index: Option<(PathBuf, BTreeMap<String, String>)>,
}

fn variant_label(v: &Option<String>) -> String {
    match v {
        Some(v) => v.clone(),
        None => "plain".to_owned(),
    }
}

fn pickle_refusal(dir: &Path, pickles: &[String]) -> Error {
    Error::model(format!(
        "{}: only pickle weights ({}), which are never unpickled: convert them to safetensors (diffusers: \
         `pipe.save_pretrained(dir, safe_serialization=True)`; a single CompVis .ckpt: convert it to .safetensors \
         first, e.g. with diffusers' convert_original_stable_diffusion_to_diffusers.py --to_safetensors)",
        dir_label(dir),
        list(pickles)
    ))
}

fn select_files(dir: &Path, variant: Option<&str>) -> Result<Selection> {
    let label = dir_label(dir);
    if !dir.exists() {
        return Err(Error::model(format!("{label}: no such folder")));
    }
    if !dir.is_dir() {
        return Err(Error::model(format!("{label}: not a folder")));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::model(format!("{label}: cannot list: {e}")))?;
    let mut found: Vec<(String, Kind)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::model(format!("{label}: cannot list: {e}")))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if let Some(kind) = classify(&name) {
            found.push((name, kind));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let weights_variant = |k: &Kind| match k {
        Kind::Safetensors { variant } | Kind::Index { variant } => Some(variant.clone()),
        Kind::Pickle { .. } => None,
    };
    let available: BTreeSet<Option<String>> = found.iter().filter_map(|(_, k)| weights_variant(k)).collect();
    let pickles_of = |v: Option<&str>| -> Vec<String> {
        found
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Pickle { variant } if variant.as_deref() == v))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let all_pickles: Vec<String> =
        found.iter().filter(|(_, k)| matches!(k, Kind::Pickle { .. })).map(|(n, _)| n.clone()).collect();

    let chosen: Option<String> = match variant {
        Some(v) => {
            if !available.contains(&Some(v.to_owned())) {
                let pickles = pickles_of(Some(v));
                if !pickles.is_empty() {
                    return Err(pickle_refusal(dir, &pickles));
                }
                if available.is_empty() {
                    if !all_pickles.is_empty() {
                        return Err(pickle_refusal(dir, &all_pickles));
                    }
                    return Err(Error::model(format!("{label}: no weight files (*.safetensors)")));
                }
                let have: Vec<String> = available.iter().map(variant_label).collect();
                return Err(Error::model(format!(
                    "{label}: no {v} variant (*.{v}.safetensors); the folder has: {}",
                    have.join(", ")
                )));
            }
            Some(v.to_owned())
        }
        None => {
            if available.contains(&None) {
                None
            } else if available.len() == 1 {
                available.iter().next().cloned().flatten()
            } else if available.is_empty() {
                if !all_pickles.is_empty() {
                    return Err(pickle_refusal(dir, &all_pickles));
                }
                return Err(Error::model(format!("{label}: no weight files (*.safetensors)")));
            } else {
                let have: Vec<String> = available.iter().map(variant_label).collect();
                return Err(Error::model(format!(
                    "{label}: no plain *.safetensors weights, and several variants ({}): choose one",
                    have.join(", ")
                )));
            }
        }
    };

    let mut files = Vec::new();
    let mut indexes = Vec::new();
    for (name, kind) in &found {
        match kind {
            Kind::Safetensors { variant } if *variant == chosen => files.push(name.clone()),
            Kind::Index { variant } if *variant == chosen => indexes.push(name.clone()),
            _ => {}
        }
    }
    if indexes.len() > 1 {
        return Err(Error::model(format!(
            "{label}: several index files for the {} weights ({}): keep one",
            variant_label(&chosen),
            indexes.join(", ")
        )));
    }
    if let Some(index_name) = indexes.pop() {
        let index_path = dir.join(&index_name);
        let weight_map = read_index(&index_path)?;
        let named: BTreeSet<&String> = weight_map.values().collect();
        let mut paths = Vec::new();
        for f in named {
            let p = dir.join(f);
            if f.contains('/') || f.contains('\\') || f == ".." || !p.is_file() {
                return Err(Error::model(format!(
                    "{}: names {f}, which is not a file in {label}",
                    index_path.display()
                )));
            }
            paths.push(p);
        }
        return Ok(Selection { files: paths, index: Some((index_path, weight_map)) });
    }
    if files.is_empty() {
        // Only an index could have made this variant available, and it was handled above.
        return Err(Error::model(format!("{label}: no weight files (*.safetensors)")));
    }
    Ok(Selection { files: files.iter().map(|f| dir.join(f)).collect(), index: None })
}

/// Reads a shard index's `weight_map` (tensor → file name).
fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let err = |m: String| Error::model(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let value = safetensors_file::parse_json_strict(&text).map_err(|e| err(format!("not a valid shard index: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(err("not a valid shard index: not a JSON object".to_owned()));
    };
    let Some(Value::Object(map)) = obj.remove("weight_map") else {
        return Err(err("not a valid shard index: no \"weight_map\" object".to_owned()));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let Value::String(f) = v else {
            return Err(err(format!("weight_map entry \"{k}\" is not a file name")));
        };
        out.insert(k, f);
    }
    Ok(out)
}

/// Every tensor the index lists is in the file it names, and every tensor of the shards is listed.
fn check_index(index_path: &Path, weight_map: &BTreeMap<String, String>, files: &[SafetensorsFile]) -> Result<()> {
    let err = |m: String| Error::model(format!("{}: {m}", index_path.display()));
    let by_name: BTreeMap<String, &SafetensorsFile> = files.iter().map(|f| (file_name(f.path()), f)).collect();
    for (key, fname) in weight_map {
        let f = by_name.get(fname).expect("the selection opened every file the index names");
        if f.info(key).is_none() {
            return Err(err(format!("lists tensor \"{key}\" in {fname}, which has no such tensor")));
        }
    }
    for (fname, f) in &by_name {
        for key in f.tensors().keys() {
            match weight_map.get(key) {
                None => return Err(err(format!("does not list tensor \"{key}\", which is in {fname}"))),
                Some(other) if other != fname => {
                    return Err(err(format!("lists tensor \"{key}\" in {other}, but it is (also) in {fname}")));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_diffusers_and_transformers_names() {
        let st = |v: Option<&str>| Some(Kind::Safetensors { variant: v.map(str::to_owned) });
        let ix = |v: Option<&str>| Some(Kind::Index { variant: v.map(str::to_owned) });
        let pk = |v: Option<&str>| Some(Kind::Pickle { variant: v.map(str::to_owned) });
        assert_eq!(classify("diffusion_pytorch_model.safetensors"), st(None));
        assert_eq!(classify("diffusion_pytorch_model.fp16.safetensors"), st(Some("fp16")));
        assert_eq!(classify("model.fp16.safetensors"), st(Some("fp16")));
        assert_eq!(classify("diffusion_pytorch_model-00001-of-00002.safetensors"), st(None));
        assert_eq!(classify("diffusion_pytorch_model.fp16-00001-of-00002.safetensors"), st(Some("fp16")));
        assert_eq!(classify("diffusion_pytorch_model.safetensors.index.json"), ix(None));
        assert_eq!(classify("diffusion_pytorch_model.safetensors.index.fp16.json"), ix(Some("fp16")));
        assert_eq!(classify("model.fp16.safetensors.index.json"), ix(Some("fp16")));
        assert_eq!(classify("diffusion_pytorch_model.bin"), pk(None));
        assert_eq!(classify("pytorch_model.fp16.bin"), pk(Some("fp16")));
        assert_eq!(classify("v1-5-pruned-emaonly.ckpt"), pk(None));
        assert_eq!(classify("config.json"), None);
        assert_eq!(classify("pytorch_model.bin.index.json"), None);
        assert_eq!(classify("._model.safetensors"), None);
    }

    #[test]
    fn lists_truncate() {
        let items: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        assert_eq!(list(&items[..2]), "t0, t1");
        assert_eq!(list(&items), "t0, t1, t2, t3, t4, t5, t6, t7 and 2 more");
    }
}
