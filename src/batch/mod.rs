//! Batch jobs: a JSON Lines file of requests with ids ([`Job`], [`parse_jobs`]), the hash that tells whether a
//! job changed since it ran ([`job_hash`]), deterministic sharding by id ([`Shard`]), the job folders written
//! all-or-nothing ([`folder`]), the append-only manifest that makes a batch resumable ([`manifest`]), the merge of
//! shard manifests into one report ([`merge`]), and caption pairs expanded into jobs ([`pairs`]). Nothing here
//! prints, reads the environment or runs the model: the command line (`app::batch`) does.
pub mod folder;
pub mod manifest;
pub mod merge;
pub mod pairs;

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::session::Request;

/// The longest job id (bytes).
pub const MAX_ID: usize = 128;

/// One line of a jobs file: an id, the request, where the line was, and the batch-only fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    /// 1-based line number in the jobs file.
    pub line: usize,
    pub request: Request,
    /// `"image": "PATH"`: a picture file to edit, relative to the jobs file (the command line reads it; a
    /// request itself never names a file).
    pub image_path: Option<String>,
    /// `"meta"`: free JSON carried into the manifest and `metadata.jsonl` (dataset columns).
    pub meta: Option<Value>,
}

/// Whether `id` may name a job folder: 1 to [`MAX_ID`] bytes of ASCII letters, digits, `.`, `_` and `-`, not
/// starting with `.` (no hidden, parent or temporary names).
pub fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(format!("id must be 1 to {MAX_ID} characters"));
    }
    if id.starts_with('.') || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(format!("id {id:?} may hold only letters, digits, '.', '_' and '-', and not start with '.'"));
    }
    Ok(())
}

/// Parses one jobs line (a JSON object: `id`, the [`Request`] fields, optionally `image` as a path and `meta`).
pub fn parse_job(text: &str, line: usize) -> std::result::Result<Job, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut m) = v else { return Err("a job must be a JSON object".into()) };
    let id = match m.remove("id") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("id must be a string, got {other}")),
        None => return Err("no \"id\"".into()),
    };
    check_id(&id)?;
    let image_path = match m.get("image") {
        Some(Value::String(_)) => match m.remove("image") {
            Some(Value::String(p)) if !p.is_empty() => Some(p),
            _ => return Err("image: an empty path".into()),
        },
        _ => None,
    };
    let meta = m.remove("meta");
    let request: Request = serde_json::from_value(Value::Object(m)).map_err(|e| format!("{e}"))?;
    Ok(Job { id, line, request, image_path, meta })
}

/// Parses a whole jobs file. Every line that does not parse and every repeated id is reported, with its line
/// number, in one error (the first few, then a count), before anything runs. Blank lines are skipped.
pub fn parse_jobs(name: &str, text: &str) -> Result<Vec<Job>> {
    collect_jobs(name, text, "jobs", |l, n| parse_job(l, n).map(|j| vec![j]))
}

/// Parses every non-blank line of `text` into jobs with `parse` (text, 1-based line number), then checks that
/// ids are unique; all problems are reported in one error naming `name`.
pub(crate) fn collect_jobs(
    name: &str,
    text: &str,
    what: &str,
    parse: impl Fn(&str, usize) -> std::result::Result<Vec<Job>, String>,
) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match parse(l, i + 1) {
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
            Ok(js) => {
                for j in js {
                    if let Some(first) = seen.get(&j.id) {
                        problems.push(format!("line {}: duplicate id {:?} (first on line {first})", j.line, j.id));
                    } else {
                        seen.insert(j.id.clone(), j.line);
                        jobs.push(j);
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        let shown = problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
        let more = if n > 3 { format!("; and {} more", n - 3) } else { String::new() };
        return Err(Error::input(format!("{name}: {shown}{more}; nothing was run")));
    }
    if jobs.is_empty() {
        return Err(Error::input(format!("{name}: no {what}")));
    }
    Ok(jobs)
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a job's result depends on, hashed: the request as canonical JSON (its seed resolved, its picture left
/// out), the SHA-256 of its picture file, the model's identity and whether `raw.safetensors` is written. A job
/// whose hash is unchanged and whose files are intact is not run again.
pub fn job_hash(request: &Request, image_sha256: Option<&str>, model_id: &str, raw: bool) -> Result<String> {
    let mut r = request.clone();
    r.image = None;
    let canonical = serde_json::json!({
        "request": r,
        "image_sha256": image_sha256,
        "model_id": model_id,
        "raw": raw,
    });
    let text = serde_json::to_string(&canonical).map_err(|e| Error::msg(format!("request to JSON: {e}")))?;
    Ok(sha256_hex(text.as_bytes()))
}

/// The seed of a job that names none (and has no noise as data): the first 8 bytes of SHA-256 of
/// `"p2p-wgpu batch seed " + id`, so that a batch is reproducible without listing seeds.
pub fn seed_for(id: &str) -> u64 {
    let d = Sha256::digest(format!("p2p-wgpu batch seed {id}").as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Shard `index` of `count` (0-based): the jobs whose id hashes to it (SHA-256 of the id, first 8 bytes, modulo
/// `count`), so that a job's shard depends only on its id and stays put when jobs are appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::input(format!("shard {index}/{count}: the index must be below the count (0-based)")));
        }
        Ok(Shard { index, count })
    }

    /// `I/N` as given to `--shard`.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || Error::input(format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Shard::new(i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?)
    }

    /// The shard of `id` among `count`.
    pub fn of(id: &str, count: usize) -> usize {
        let d = Sha256::digest(id.as_bytes());
        (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % count as u64) as usize
    }

    pub fn contains(&self, id: &str) -> bool {
        Shard::of(id, self.count) == self.index
    }

    /// The manifest file of this shard: `manifest-shard-I-of-N.jsonl`.
    pub fn manifest_name(&self) -> String {
        format!("manifest-shard-{}-of-{}.jsonl", self.index, self.count)
    }
}

/// The manifest file name of a batch run (`manifest.jsonl` without shards).
pub fn manifest_name(shard: Option<Shard>) -> String {
    shard.map(|s| s.manifest_name()).unwrap_or_else(|| "manifest.jsonl".into())
}
