//! The manifest of a batch (or of one shard): JSON Lines, appended and synced one line at a time, never
//! rewritten. A `run` line opens each run (its shard and the ids it owns); each finished job adds a `done` line
//! (its request hash, seed, files with sizes and SHA-256, timings, adapter) or a `failed` line (its one-line
//! error). The last line of an id wins. A torn last line (power lost mid-append) is cut off when the manifest is
//! opened; a damaged line anywhere else is an error, never silently skipped.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sha256_hex;
use crate::error::{Error, Result};

/// One output file of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where a job's time went, in seconds. `text` (prompt encoding and setup up to the first UNet evaluation's
/// share), `sampling` (every UNet evaluation) and `decode` (VAE or last stage to images, and PNG encoding) are
/// split at the run's progress reports; `write` is the folder and manifest write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Seconds {
    pub text: f64,
    pub sampling: f64,
    pub decode: f64,
    pub write: f64,
    pub total: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunLine {
    /// None: the batch is not sharded.
    pub shard: Option<usize>,
    pub shards: Option<usize>,
    /// The ids this run owns (its shard of the jobs file), in file order.
    pub jobs: Vec<String>,
    pub model: String,
    pub adapter: String,
    /// Unix seconds.
    pub started: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneLine {
    pub id: String,
    pub request_sha256: String,
    pub seed: Option<u64>,
    pub files: Vec<FileEntry>,
    pub seconds: Seconds,
    pub adapter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    pub finished: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedLine {
    pub id: String,
    pub request_sha256: String,
    pub error: String,
    pub finished: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Line {
    Run(RunLine),
    Done(DoneLine),
    Failed(FailedLine),
}

impl Line {
    /// The job id of a `done` or `failed` line.
    pub fn id(&self) -> Option<&str> {
        match self {
            Line::Run(_) => None,
            Line::Done(d) => Some(&d.id),
            Line::Failed(f) => Some(&f.id),
        }
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Parses manifest text; returns the lines and the byte length of the complete ones (a torn last line, without
/// its newline, is left out).
pub fn parse(name: &str, text: &str) -> Result<(Vec<Line>, usize)> {
    let complete = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let mut lines = Vec::new();
    for (i, l) in text[..complete].lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l).map_err(|e| {
            Error::input(format!("{name}: line {} is damaged ({e}); move the manifest aside to start over", i + 1))
        })?;
        lines.push(line);
    }
    Ok((lines, complete))
}

/// Reads a manifest without changing it (a torn last line is ignored).
pub fn read(path: &Path) -> Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    Ok(parse(&path.display().to_string(), &text)?.0)
}

/// An open manifest, for appending.
pub struct Manifest {
    pub path: PathBuf,
    pub lines: Vec<Line>,
    file: File,
}

impl Manifest {
    /// Opens (or creates) the manifest at `path`, cutting off a torn last line.
    pub fn open(path: &Path) -> Result<Manifest> {
        let err = |what: &str, e: std::io::Error| Error::input(format!("cannot {what} {}: {e}", path.display()));
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| err("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| err("read", e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(format!("{}: not UTF-8; move it aside to start over", path.display())))?;
        let (lines, complete) = parse(&path.display().to_string(), &text)?;
        if complete < text.len() {
            file.set_len(complete as u64).map_err(|e| err("repair", e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| err("seek", e))?;
        }
        Ok(Manifest { path: path.to_path_buf(), lines, file })
    }

    /// Appends `line` and syncs it to disk before returning.
    pub fn append(&mut self, line: Line) -> Result<()> {
        let mut text = serde_json::to_string(&line).map_err(|e| Error::msg(format!("manifest line: {e}")))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::input(format!("cannot append to {}: {e}", self.path.display())))?;
        self.lines.push(line);
        Ok(())
    }

    /// The last `done` or `failed` line of each id.
    pub fn latest(&self) -> BTreeMap<&str, &Line> {
        latest(&self.lines)
    }
}

/// The last `done` or `failed` line of each id in `lines`.
pub fn latest(lines: &[Line]) -> BTreeMap<&str, &Line> {
    let mut m = BTreeMap::new();
    for l in lines {
        if let Some(id) = l.id() {
            m.insert(id, l);
        }
    }
    m
}

/// The files that are missing or differ (size or SHA-256) from what `done` recorded under `folder`.
pub fn damaged_files(folder: &Path, done: &DoneLine) -> Vec<String> {
    let mut bad = Vec::new();
    for f in &done.files {
        match std::fs::read(folder.join(&f.name)) {
            Ok(b) if b.len() as u64 == f.bytes && sha256_hex(&b) == f.sha256 => {}
            Ok(_) => bad.push(format!("{} (changed)", f.name)),
            Err(_) => bad.push(format!("{} (missing)", f.name)),
        }
    }
    if done.files.is_empty() {
        bad.push("(no files recorded)".into());
    }
    bad
}
