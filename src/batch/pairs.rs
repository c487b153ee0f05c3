//! Caption pairs expanded into jobs, as InstructPix2Pix made its training set with Prompt-to-Prompt: each line
//! of a pairs file is `{"input": CAPTION, "edited": CAPTION}`, optionally with `"id"`, `"blend"` (words, a list
//! or `"a,b"`) and any [`Request`] field (steps, cross_steps, …); with `K` seeds it becomes the jobs
//! `<id>-s0` … `<id>-s<K-1>` (seed 0 … K-1; id default `pair<line>`), each a refinement edit from `input` to
//! `edited`, carrying the captions, seed and edit parameters as `meta` for `metadata.jsonl`.
use serde_json::{Map, Value, json};

use super::{Job, check_id};
use crate::error::{Error, Result};
use crate::session::Request;

/// The most seeds per pair.
pub const MAX_SEEDS: usize = 10_000;

fn parse_pair(text: &str, line: usize, seeds: usize) -> std::result::Result<Vec<Job>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut m) = v else { return Err("a pair must be a JSON object".into()) };
    let mut take_str = |k: &str| -> std::result::Result<Option<String>, String> {
        match m.remove(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
            Some(other) => Err(format!("{k} must be a non-empty string, got {other}")),
        }
    };
    let input = take_str("input")?.ok_or("no \"input\" caption")?;
    let edited = take_str("edited")?.ok_or("no \"edited\" caption")?;
    let id = take_str("id")?.unwrap_or_else(|| format!("pair{line}"));
    let blend = match m.remove("blend") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(a)) => {
            let words: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
            Some(words.ok_or("blend must be words")?.join(","))
        }
        Some(other) => return Err(format!("blend must be a list of words or \"a,b\", got {other}")),
    };
    for k in ["prompt", "target", "swap", "seed"] {
        if m.contains_key(k) {
            return Err(format!("{k:?} is set by the pair (input, edited, the seeds); leave it out"));
        }
    }
    let extra = Value::Object(m.clone());
    let mut m: Map<String, Value> = m;
    m.insert("prompt".into(), json!(input));
    m.insert("target".into(), json!([edited]));
    if let Some(b) = &blend {
        m.insert("blend".into(), json!(b));
    }
    let base: Request = serde_json::from_value(Value::Object(m)).map_err(|e| format!("{e}"))?;
    (0..seeds)
        .map(|s| {
            let jid = format!("{id}-s{s}");
            check_id(&jid)?;
            let request = Request { seed: Some(s as u64), ..base.clone() };
            let meta = json!({
                "input_caption": input, "edited_caption": edited, "seed": s, "blend": blend, "edit": extra,
            });
            Ok(Job { id: jid, line, request, image_path: None, meta: Some(meta) })
        })
        .collect()
}

/// Expands a pairs file into jobs with `seeds` seeds each; every bad line and repeated id is reported with its
/// line number before anything runs, as [`super::parse_jobs`] does.
pub fn expand_pairs(name: &str, text: &str, seeds: usize) -> Result<Vec<Job>> {
    if seeds == 0 || seeds > MAX_SEEDS {
        return Err(Error::input(format!("--seeds must be between 1 and {MAX_SEEDS}, got {seeds}")));
    }
    super::collect_jobs(name, text, "pairs", |l, n| parse_pair(l, n, seeds))
}
