//! `batch --merge DIR`: the shard manifests of one output folder checked and merged into one report. The jobs
//! expected are those the shards' last `run` lines own; a job is `done` when its shard's last line for it is
//! `done` and its files are intact, `failed` when that line is `failed`, `missing` when no line has it (or its
//! files are damaged), and a `duplicate` when more than one manifest has it done. Shard manifests missing
//! altogether (an array task that never started) are named too.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::manifest::{DoneLine, Line, damaged_files, read};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The manifests read.
    pub manifests: Vec<String>,
    pub shards: Option<usize>,
    pub missing_shards: Vec<usize>,
    pub jobs: usize,
    pub done: Vec<DoneLine>,
    pub failed: Vec<(String, String)>,
    pub missing: Vec<String>,
    pub damaged: Vec<(String, Vec<String>)>,
    pub duplicates: Vec<(String, Vec<String>)>,
}

impl Report {
    /// Whether every expected job is done exactly once with intact files, and every shard reported.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
            && self.missing.is_empty()
            && self.damaged.is_empty()
            && self.duplicates.is_empty()
            && self.missing_shards.is_empty()
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "merged {} manifest(s): {} job(s), {} done, {} failed, {} missing, {} damaged, {} duplicated",
            self.manifests.len(),
            self.jobs,
            self.done.len(),
            self.failed.len(),
            self.missing.len(),
            self.damaged.len(),
            self.duplicates.len()
        );
        if !self.missing_shards.is_empty() {
            s += &format!("; shards with no manifest: {:?}", self.missing_shards);
        }
        let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if !self.missing.is_empty() {
            s += &format!("; missing: {}", first(&self.missing));
        }
        if !self.failed.is_empty() {
            let f: Vec<String> = self.failed.iter().map(|(id, e)| format!("{id} ({e})")).collect();
            s += &format!("; failed: {}", first(&f));
        }
        s
    }

    /// `metadata.jsonl` for dataset loaders (Hugging Face `imagefolder`): one line per done job that carries
    /// `meta`, in id order: `file_name` (the edit), `source_file_name`, then the job's meta fields.
    pub fn metadata_jsonl(&self) -> String {
        metadata_jsonl(self.done.iter())
    }
}

/// See [`Report::metadata_jsonl`].
pub fn metadata_jsonl<'a>(done: impl Iterator<Item = &'a DoneLine>) -> String {
    let mut out = String::new();
    for d in done {
        let Some(Value::Object(meta)) = &d.meta else { continue };
        let edit = d.files.iter().find(|f| f.name == "edit.png" || f.name == "edit-1.png");
        let Some(edit) = edit else { continue };
        let mut m = serde_json::Map::new();
        m.insert("file_name".into(), Value::String(format!("{}/{}", d.id, edit.name)));
        m.insert("source_file_name".into(), Value::String(format!("{}/source.png", d.id)));
        m.insert("id".into(), Value::String(d.id.clone()));
        for (k, v) in meta {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out += &Value::Object(m).to_string();
        out.push('\n');
    }
    out
}

/// Reads every `manifest*.jsonl` in `dir` and merges them (see the module doc).
pub fn merge(dir: &Path) -> Result<Report> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("manifest") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::input(format!("{}: no manifest*.jsonl to merge", dir.display())));
    }
    let mut r = Report { manifests: names.clone(), ..Default::default() };
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut shards_seen = BTreeSet::new();
    let mut done_in: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut finals: BTreeMap<String, Line> = BTreeMap::new();
    for name in &names {
        let lines = read(&dir.join(name))?;
        let Some(run) = lines.iter().rev().find_map(|l| if let Line::Run(r) = l { Some(r) } else { None }) else {
            return Err(Error::input(format!("{name}: no run line; not a batch manifest")));
        };
        if let (Some(i), Some(n)) = (run.shard, run.shards) {
            if r.shards.is_some_and(|m| m != n) {
                return Err(Error::input(format!(
                    "{name}: shard {i} of {n}, but another manifest is of {} shards; merge one batch at a time",
                    r.shards.unwrap_or(0)
                )));
            }
            r.shards = Some(n);
            shards_seen.insert(i);
        }
        let owned: BTreeSet<&str> = run.jobs.iter().map(String::as_str).collect();
        expected.extend(run.jobs.iter().cloned());
        for (id, line) in super::manifest::latest(&lines) {
            if !owned.contains(id) {
                continue;
            }
            if matches!(line, Line::Done(_)) {
                done_in.entry(id.to_string()).or_default().push(name.clone());
            }
            finals.insert(id.to_string(), line.clone());
        }
    }
    if let Some(n) = r.shards {
        r.missing_shards = (0..n).filter(|i| !shards_seen.contains(i)).collect();
    }
    r.jobs = expected.len();
    for id in &expected {
        match finals.get(id) {
            None => r.missing.push(id.clone()),
            Some(Line::Failed(f)) => r.failed.push((id.clone(), f.error.clone())),
            Some(Line::Done(d)) => {
                let bad = damaged_files(&dir.join(id), d);
                if bad.is_empty() {
                    r.done.push(d.clone());
                } else {
                    r.damaged.push((id.clone(), bad));
                }
            }
            Some(Line::Run(_)) => unreachable!("latest() holds job lines only"),
        }
    }
    r.duplicates = done_in.into_iter().filter(|(_, v)| v.len() > 1).collect();
    Ok(r)
}
