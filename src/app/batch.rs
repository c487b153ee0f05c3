//! `p2p-wgpu batch`: many requests through one loaded model, resumable and shardable (the library side is
//! `crate::batch`). This is where the batch reads the environment (the shard from Slurm's or Kubernetes'
//! variables), handles SIGINT/SIGTERM, reads picture files, and prints one line per job and a summary.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::console::say;
use super::generate::{model_dir, read_image_bytes};
use super::precision::PrecisionArgs;
use super::vae::VaeArgs;
use crate::batch::folder::{clean_leftovers, write_job_folder};
use crate::batch::manifest::{DoneLine, FailedLine, FileEntry, Line, Manifest, RunLine, Seconds, now};
use crate::batch::merge::{merge, metadata_jsonl};
use crate::batch::pairs::expand_pairs;
use crate::batch::{Job, Shard, job_hash, manifest_name, parse_jobs, seed_for, sha256_hex};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::output::{OutputFiles, write_atomic};
use crate::pipelines::Step;
use crate::session::{Files, Session};

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("input").args(["jobs", "pairs", "merge"]).required(true)))]
pub struct BatchArgs {
    /// The jobs: JSON Lines, one request per line with a unique "id" (the main command's flags as fields, e.g.
    /// {"id": "cat-dog", "prompt": "a cat", "swap": ["cat=dog"], "seed": 1}; "image": "PATH" edits a picture,
    /// relative to this file; "meta": {...} is carried into the manifest).
    pub jobs: Option<PathBuf>,
    /// Caption pairs instead of jobs: {"input": CAPTION, "edited": CAPTION, "blend": [words]} per line, each run
    /// with --seeds seeds; the results get a metadata.jsonl for dataset loaders.
    #[arg(long, value_name = "FILE", requires = "seeds")]
    pub pairs: Option<PathBuf>,
    /// Seeds per caption pair (0 .. K-1).
    #[arg(long, value_name = "K", value_parser = super::generate::whole::<usize>("a positive number"))]
    pub seeds: Option<usize>,
    /// Output folder: one folder per job id, and the manifest.
    #[arg(long, value_name = "DIR", required_unless_present = "merge")]
    pub out: Option<PathBuf>,
    /// Check and merge the shard manifests in DIR into DIR/report.json (and metadata.jsonl); runs nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "shard", "shards", "retry_failed"])]
    pub merge: Option<PathBuf>,
    /// Run shard I of N (0-based; a job's shard is fixed by its id). Default: from SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX), or JOB_COMPLETION_INDEX with --shards; else every job.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The shard count for a Kubernetes Indexed Job (the index comes from JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N", value_parser = super::generate::whole::<usize>("a positive number"))]
    pub shards: Option<usize>,
    /// Run again the jobs that failed before (default: a failed job with an unchanged request is skipped and
    /// counted as failed).
    #[arg(long)]
    pub retry_failed: bool,
    /// Also write each job's raw.safetensors.
    #[arg(long)]
    pub save_raw: bool,
    /// Model folder (default: the shipped models/default).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub vae: VaeArgs,
}

/// Set by SIGINT/SIGTERM: the batch starts nothing new and cancels the job in progress.
static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

fn install_signal_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        STOP.store(true, Ordering::SeqCst);
        // A second signal stops at once: every write is atomic, so nothing is left half-done.
        if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
            std::process::exit(130);
        }
    })
    .map_err(|e| Error::msg(format!("cannot install the signal handler: {e}")))
}

/// The shard to run: `--shard`, else Slurm's array variables, else `JOB_COMPLETION_INDEX` with `--shards`.
/// `var` reads one environment variable.
pub fn shard_from(
    given: Option<&str>,
    shards: Option<usize>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<(Shard, String)>> {
    if let Some(s) = given {
        return Ok(Some((Shard::parse(s)?, "--shard".into())));
    }
    let num = |k: &str| -> Result<Option<usize>> {
        var(k)
            .map(|v| v.trim().parse::<usize>().map_err(|_| Error::input(format!("{k}={v:?} is not a whole number"))))
            .transpose()
    };
    if let Some(task) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = match (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MAX")?) {
            (Some(c), _) => c,
            (None, Some(max)) => max + 1 - min.min(max),
            (None, None) => {
                return Err(Error::input("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX"));
            }
        };
        let index = task.checked_sub(min).ok_or_else(|| Error::input("SLURM_ARRAY_TASK_ID is below _MIN"))?;
        let from = format!("SLURM_ARRAY_TASK_ID={task} of {count} tasks from {min}");
        return Ok(Some((Shard::new(index, count)?, from)));
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let Some(n) = shards else {
            return Err(Error::input("JOB_COMPLETION_INDEX is set: give the Indexed Job's completions as --shards N"));
        };
        return Ok(Some((Shard::new(index, n)?, format!("JOB_COMPLETION_INDEX={index} of --shards {n}"))));
    }
    if shards.is_some() {
        return Err(Error::input("--shards N needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); use --shard I/N"));
    }
    Ok(None)
}

/// Runs `batch`.
pub fn run(a: &BatchArgs, gpu: GpuOptions) -> Result<()> {
    if let Some(dir) = &a.merge {
        return run_merge(dir);
    }
    let out = a.out.clone().ok_or_else(|| Error::input("--out DIR is required"))?;
    let (jobs, base) = match (&a.jobs, &a.pairs) {
        (Some(f), _) => (parse_jobs(&f.display().to_string(), &read_text(f)?)?, f.clone()),
        (None, Some(f)) => {
            let seeds = a.seeds.ok_or_else(|| Error::input("--pairs needs --seeds K"))?;
            (expand_pairs(&f.display().to_string(), &read_text(f)?, seeds)?, f.clone())
        }
        (None, None) => return Err(Error::input("give a jobs file, --pairs FILE or --merge DIR")),
    };
    let base = base.parent().map(Path::to_path_buf).unwrap_or_default();
    let shard = shard_from(a.shard.as_deref(), a.shards, |k| std::env::var(k).ok())?;
    let mine: Vec<&Job> = jobs.iter().filter(|j| shard.as_ref().is_none_or(|(s, _)| s.contains(&j.id))).collect();
    // Picture files are checked before anything runs.
    for j in &mine {
        if let Some(p) = &j.image_path {
            let path = base.join(p);
            if !path.is_file() {
                return Err(Error::input(format!(
                    "line {} ({}): image {}: no such file",
                    j.line,
                    j.id,
                    path.display()
                )));
            }
        }
    }
    let model = model_dir(a.model.as_deref())?;
    crate::weights::folder::DiffusersFolder::open(&model)?;
    let mname = manifest_name(shard.as_ref().map(|s| s.0));
    let targets = OutputFiles::new(&out, std::slice::from_ref(&mname), &[]);
    let inputs: Vec<&Path> = a.jobs.iter().chain(&a.pairs).map(PathBuf::as_path).collect();
    targets.check(&[model.as_path()], &inputs)?;
    targets.create_folder()?;
    let mut manifest = Manifest::open(&out.join(&mname))?;
    clean_leftovers(&out, |id| shard.as_ref().is_none_or(|(s, _)| s.contains(id)))?;
    install_signal_handler()?;

    let t_load = Instant::now();
    let options = super::precision::session_options(model.clone(), gpu, &a.precision, &a.vae)?;
    let session = Session::open(&options)?;
    let adapter = session.gpu.info.name.clone();
    let which = match &shard {
        Some((s, from)) => format!("shard {}/{} ({from}): {} of {} jobs", s.index, s.count, mine.len(), jobs.len()),
        None => format!("{} jobs", jobs.len()),
    };
    say(&format!("batch: {which}; model loaded in {:.1} s on {adapter}", t_load.elapsed().as_secs_f64()));
    manifest.append(Line::Run(RunLine {
        shard: shard.as_ref().map(|s| s.0.index),
        shards: shard.as_ref().map(|s| s.0.count),
        jobs: mine.iter().map(|j| j.id.clone()).collect(),
        model: model.display().to_string(),
        adapter: adapter.clone(),
        started: now(),
    }))?;

    let files = Files { raw: a.save_raw };
    // Fault injection for the crash tests: `after-rename:ID` aborts the process once job ID's folder is in place
    // and before its manifest line is appended (a power loss at the worst moment).
    let fault = std::env::var("P2P_WGPU_BATCH_FAULT").ok();
    let abort_after = fault.as_deref().and_then(|f| f.strip_prefix("after-rename:")).map(str::to_string);
    let (mut done, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    let n = mine.len();
    // What earlier runs left, read once: this run appends at most one line per job, for that job only.
    let before: std::collections::BTreeMap<String, Line> =
        manifest.latest().into_iter().map(|(id, l)| (id.to_string(), l.clone())).collect();
    for (k, job) in mine.iter().enumerate() {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        let tag = format!("[{}/{n}] {}", k + 1, job.id);
        let prepared = prepare(job, &base, &session.model_id, a.save_raw);
        let hash = match &prepared {
            Ok(p) => p.hash.clone(),
            Err((h, _)) => h.clone(),
        };
        match before.get(&job.id) {
            Some(Line::Done(d)) if d.request_sha256 == hash => {
                let bad = crate::batch::manifest::damaged_files(&out.join(&job.id), d);
                if bad.is_empty() {
                    skipped += 1;
                    continue;
                }
                say(&format!("{tag}: files damaged ({}); running it again", bad.join(", ")));
            }
            Some(Line::Failed(f)) if f.request_sha256 == hash && !a.retry_failed => {
                say(&format!("{tag}: failed before (unchanged; --retry-failed runs it): {}", f.error));
                failed += 1;
                continue;
            }
            _ => {}
        }
        let t0 = Instant::now();
        let result = prepared.map_err(|(_, e)| e).and_then(|p| run_job(&session, job, p, &out, files, &adapter, t0));
        if abort_after.as_deref() == Some(job.id.as_str()) && result.is_ok() {
            std::process::abort();
        }
        match result {
            Ok(line) => {
                let secs = line.seconds.total;
                manifest.append(Line::Done(line))?;
                done += 1;
                say(&format!("{tag}: done in {secs:.1} s"));
            }
            Err(Error::Cancelled) => break,
            Err(e) => {
                let error = e.to_string();
                say(&format!("{tag}: failed: {error}"));
                manifest.append(Line::Failed(FailedLine {
                    id: job.id.clone(),
                    request_sha256: hash,
                    error,
                    finished: now(),
                }))?;
                failed += 1;
            }
        }
    }
    let left = n - done - skipped - failed;
    if shard.is_none() {
        write_metadata(&out, &manifest, &mine)?;
    }
    let summary = format!("batch: {done} done, {skipped} skipped (done before), {failed} failed, {left} not run");
    say(&summary);
    if STOP.load(Ordering::SeqCst) {
        say("batch: interrupted; the manifest is consistent: run the same command to go on");
        return Err(Error::Cancelled);
    }
    if failed > 0 {
        return Err(Error::input(format!("{failed} of {n} job(s) failed (see {})", manifest.path.display())));
    }
    Ok(())
}

/// A job ready to run: its request (seed resolved, picture read) and hash.
struct Prepared {
    request: crate::session::Request,
    hash: String,
    picture: Option<(String, Vec<u8>)>,
}

/// Resolves a job's seed and reads its picture's bytes; on failure returns the hash it could compute and the error.
fn prepare(job: &Job, base: &Path, model_id: &str, raw: bool) -> std::result::Result<Prepared, (String, Error)> {
    let mut request = job.request.clone();
    let picture = match &job.image_path {
        None => None,
        Some(p) => {
            let path = base.join(p);
            match read_image_bytes(&path) {
                Ok(b) => Some((path.display().to_string(), b)),
                Err(e) => return Err((job_hash(&request, None, model_id, raw).unwrap_or_default(), e)),
            }
        }
    };
    if request.seed.is_none() && request.latents.is_none() && request.image.is_none() && picture.is_none() {
        request.seed = Some(seed_for(&job.id));
    }
    let sha = picture.as_ref().map(|(_, b)| sha256_hex(b));
    match job_hash(&request, sha.as_deref(), model_id, raw) {
        Ok(hash) => Ok(Prepared { request, hash, picture }),
        Err(e) => Err((String::new(), e)),
    }
}

/// Runs one job and writes its folder; returns its manifest line.
fn run_job(
    session: &Session,
    job: &Job,
    p: Prepared,
    out: &Path,
    files: Files,
    adapter: &str,
    t0: Instant,
) -> Result<DoneLine> {
    let mut req = p.request;
    if let Some((name, bytes)) = &p.picture {
        req.image = Some(crate::input_image::decode(name, bytes)?);
    }
    // `Session::run` checks the request (as `Session::check` does) before it samples anything.
    let (mut first, mut last, mut evals) = (None, None, 0usize);
    let mut progress = |_: &Step| {
        let t = Instant::now();
        first.get_or_insert(t);
        last = Some(t);
        evals += 1;
        !STOP.load(Ordering::SeqCst)
    };
    let output = session.run(&req, &mut progress)?;
    let made = output.files(files)?;
    let t_made = Instant::now();
    write_job_folder(out, &job.id, &made)?;
    let t_end = Instant::now();
    let s = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
    // The first report comes after the first evaluation: take one evaluation's share back out of "text".
    let (text, sampling) = match (first, last) {
        (Some(f), Some(l)) => {
            let per = if evals > 1 { s(f, l) / (evals - 1) as f64 } else { 0.0 };
            let text = (s(t0, f) - per).max(0.0);
            (text, s(t0, l) - text)
        }
        _ => (0.0, 0.0),
    };
    let decode = last.map_or(s(t0, t_made), |l| s(l, t_made));
    Ok(DoneLine {
        id: job.id.clone(),
        request_sha256: p.hash,
        seed: output.seed,
        files: made
            .iter()
            .map(|(name, b)| FileEntry { name: name.clone(), bytes: b.len() as u64, sha256: sha256_hex(b) })
            .collect(),
        seconds: Seconds { text, sampling, decode, write: s(t_made, t_end), total: s(t0, t_end) },
        adapter: adapter.to_string(),
        meta: job.meta.clone(),
        finished: now(),
    })
}

/// Writes `metadata.jsonl` (dataset loaders) for the done jobs of `jobs` that carry `meta`; nothing when none do.
fn write_metadata(out: &Path, manifest: &Manifest, jobs: &[&Job]) -> Result<()> {
    let latest = manifest.latest();
    let done: Vec<&DoneLine> = jobs
        .iter()
        .filter_map(|j| match latest.get(j.id.as_str()) {
            Some(Line::Done(d)) => Some(d),
            _ => None,
        })
        .collect();
    let text = metadata_jsonl(done.into_iter());
    if !text.is_empty() {
        write_atomic(&out.join("metadata.jsonl"), text.as_bytes())?;
    }
    Ok(())
}

fn run_merge(dir: &Path) -> Result<()> {
    let r = merge(dir)?;
    let json = serde_json::to_string_pretty(&r).map_err(|e| Error::msg(format!("report: {e}")))?;
    write_atomic(&dir.join("report.json"), json.as_bytes())?;
    let meta = r.metadata_jsonl();
    if !meta.is_empty() {
        write_atomic(&dir.join("metadata.jsonl"), meta.as_bytes())?;
    }
    say(&r.summary());
    if !r.is_complete() {
        return Err(Error::input(format!("the batch in {} is not complete (see report.json)", dir.display())));
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}
