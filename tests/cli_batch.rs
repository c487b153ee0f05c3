//! `p2p-wgpu batch` on the tiny SD fixture (16 px, 2 steps): jobs files refused whole with line numbers; a
//! failed job recorded and the batch going on; resume (skip what is done and intact, rerun what changed or was
//! damaged, `--retry-failed`); crashes (SIGKILL at a random moment, an abort between a job folder's rename and its
//! manifest line) and SIGINT losing nothing and counting nothing twice; sharding by `--shard`, Slurm's and
//! Kubernetes' variables, and `--merge`; caption pairs with `metadata.jsonl`.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cli::{fixtures, one_line_error, tmp};
use p2p_wgpu::app::batch::shard_from;
use p2p_wgpu::batch::Shard;
use p2p_wgpu::batch::manifest::{Line, read};

fn model() -> String {
    fixtures().join("sd1-tiny").to_str().unwrap().to_string()
}

fn job(id: &str, extra: &str) -> String {
    format!(r#"{{"id": "{id}", "prompt": "a red bicycle on a hill", "steps": 2, "scheduler": "ddim"{extra}}}"#)
}

/// `n` jobs: swaps and plain generations, seeds given or not.
fn jobs(n: usize) -> String {
    (0..n)
        .map(|i| match i % 3 {
            0 => job(&format!("j{i}"), r#", "swap": ["bicycle=car"], "seed": 7"#),
            1 => job(&format!("j{i}"), ""),
            _ => job(&format!("j{i}"), r#", "reweight": ["red=2"]"#),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `p2p-wgpu batch ARGS --model <tiny SD>` with the scheduler's variables only as given in `env` (a test run
/// inside a Slurm job must not pick up its own).
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_p2p-wgpu"));
    c.arg("batch").args(args).args(["--model", &model()]);
    for k in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"] {
        c.env_remove(k);
    }
    c.env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn batch(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("run p2p-wgpu batch")
}

fn setup(name: &str, text: &str) -> (PathBuf, String, String) {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("jobs.jsonl");
    std::fs::write(&f, text).unwrap();
    let out = dir.join("out");
    (dir, f.to_str().unwrap().to_string(), out.to_str().unwrap().to_string())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of each id in a manifest: ("done" | "failed", hash).
fn finals(manifest: &Path) -> BTreeMap<String, (String, String)> {
    let mut m = BTreeMap::new();
    for l in read(manifest).unwrap() {
        match l {
            Line::Done(d) => m.insert(d.id, ("done".into(), d.request_sha256)),
            Line::Failed(f) => m.insert(f.id, ("failed".into(), f.request_sha256)),
            Line::Run(_) => None,
        };
    }
    m
}

fn done_lines(manifest: &Path) -> Vec<String> {
    read(manifest).unwrap().into_iter().filter_map(|l| if let Line::Done(d) = l { Some(d.id) } else { None }).collect()
}

/// `batch --merge` succeeds and its report says every one of `n` jobs is done once.
fn merged_complete(out: &str, n: usize) {
    let o = batch(&["--merge", out], &[]);
    assert!(o.status.success(), "merge: {}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(out).join("report.json")).unwrap()).unwrap();
    assert_eq!(r["jobs"], n);
    assert_eq!(r["done"].as_array().unwrap().len(), n, "{r}");
}

#[test]
fn a_bad_jobs_file_is_refused_whole_with_line_numbers() {
    let text = format!("{}\n\n{}\nnot json\n{}\n", job("a", ""), job("a", ""), job("b", r#", "colour": 1"#));
    let (_d, f, out) = setup("batch-bad", &text);
    let o = batch(&[&f, "--out", &out], &[]);
    one_line_error(&o, 1, "line 3: duplicate id \"a\" (first on line 1)");
    let e = stderr(&o);
    assert!(e.contains("line 4: not JSON") && e.contains("line 5: unknown field `colour`"), "{e}");
    assert!(!Path::new(&out).exists(), "a refused batch made its output folder");
    let (_d, f, out) = setup("batch-bad-id", &job("../x", ""));
    one_line_error(&batch(&[&f, "--out", &out], &[]), 1, "may hold only letters");
    let (_d, f, out) = setup("batch-bad-img", &job("a", r#", "image": "nowhere.png""#));
    one_line_error(&batch(&[&f, "--out", &out], &[]), 1, "nowhere.png: no such file");
}

#[test]
fn failures_are_recorded_and_resume_skips_reruns_and_retries() {
    let text = format!("{}\n{}\n", jobs(3), job("bad", r#", "swap": ["zebra=horse"]"#));
    let (dir, f, out) = setup("batch-resume", &text);
    let o = batch(&[&f, "--out", &out], &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("[4/4] bad: failed:") && e.contains("zebra"), "{e}");
    assert!(e.contains("batch: 3 done, 0 skipped (done before), 1 failed, 0 not run"), "{e}");
    let manifest = Path::new(&out).join("manifest.jsonl");
    let first = finals(&manifest);
    assert_eq!(first.values().filter(|v| v.0 == "done").count(), 3);
    assert_eq!(first["bad"].0, "failed");
    for id in ["j0", "j1", "j2"] {
        let d = Path::new(&out).join(id);
        assert!(d.join("source.png").is_file(), "{id}: no source.png");
    }
    assert!(Path::new(&out).join("j0/edit.png").is_file());
    // The same command again: nothing runs; the failure stays a failure.
    let o = batch(&[&f, "--out", &out], &[]);
    assert!(stderr(&o).contains("batch: 0 done, 3 skipped (done before), 1 failed"), "{}", stderr(&o));
    assert_eq!(done_lines(&manifest).len(), 3);
    // A changed request reruns that job only; a damaged file reruns its job; --retry-failed reruns the failure.
    let changed = text.replace(
        r#""id": "j1", "prompt": "a red bicycle on a hill", "steps": 2"#,
        r#""id": "j1", "prompt": "a blue bicycle on a hill", "steps": 2"#,
    );
    assert_ne!(changed, text);
    std::fs::write(&f, &changed).unwrap();
    std::fs::write(Path::new(&out).join("j2/source.png"), b"broken").unwrap();
    let o = batch(&[&f, "--out", &out, "--retry-failed"], &[]);
    let e = stderr(&o);
    assert!(e.contains("batch: 2 done, 1 skipped (done before), 1 failed"), "{e}");
    assert!(e.contains("j2: files damaged (source.png (changed))"), "{e}");
    let again = finals(&manifest);
    assert_eq!(again["j0"], first["j0"]);
    assert_ne!(again["j1"].1, first["j1"].1, "the changed request kept its hash");
    assert_eq!(done_lines(&manifest), ["j0", "j1", "j2", "j1", "j2"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts a batch in the background.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    command(args, env).stderr(std::process::Stdio::piped()).spawn().expect("spawn p2p-wgpu batch")
}

/// Waits until the manifest has `n` done lines (or the process ended).
fn wait_done(manifest: &Path, n: usize, child: &mut std::process::Child) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        if manifest.exists() && done_lines(manifest).len() >= n {
            return;
        }
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {n} done lines in 300 s");
}

#[test]
fn a_killed_batch_loses_nothing_and_counts_nothing_twice() {
    let n = 6;
    let (dir, f, out) = setup("batch-kill", &jobs(n));
    let manifest = Path::new(&out).join("manifest.jsonl");
    // SIGKILL at whatever point the second job has reached.
    let mut child = spawn(&[&f, "--out", &out], &[]);
    wait_done(&manifest, 1, &mut child);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // An abort after j3's folder is renamed into place and before its manifest line.
    let o = batch(&[&f, "--out", &out], &[("P2P_WGPU_BATCH_FAULT", "after-rename:j3")]);
    assert!(!o.status.success(), "the injected abort did not stop the batch");
    assert!(Path::new(&out).join("j3/source.png").is_file(), "j3's folder is not in place");
    assert!(!finals(&manifest).contains_key("j3"), "j3 has a manifest line");
    // A torn manifest line, as a power loss mid-append leaves it.
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(r#"{"kind":"done","id":"j5","request_sha"#);
    std::fs::write(&manifest, text).unwrap();
    let o = batch(&[&f, "--out", &out], &[]);
    assert!(o.status.success(), "resume: {}", stderr(&o));
    let done = done_lines(&manifest);
    let mut ids = done.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every job done: {done:?}");
    assert_eq!(done.len(), n, "a job was done twice: {done:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".p2p-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left: {leftovers:?}");
    merged_complete(&out, n);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigint_finishes_nothing_new_and_exits_non_zero() {
    let n = 6;
    let (dir, f, out) = setup("batch-int", &jobs(n));
    let manifest = Path::new(&out).join("manifest.jsonl");
    let mut child = spawn(&[&f, "--out", &out], &[]);
    wait_done(&manifest, 1, &mut child);
    let before = done_lines(&manifest).len();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted"), "{e}");
    let after = done_lines(&manifest).len();
    assert!(after <= before + 1 && after < n, "SIGINT went on: {before} then {after} of {n} done");
    let o = batch(&[&f, "--out", &out], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(done_lines(&manifest).len(), n);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shards_split_the_jobs_and_merge_back() {
    let n = 7;
    let (dir, f, out) = setup("batch-shards", &jobs(n));
    let o0 = batch(&[&f, "--out", &out, "--shard", "0/3"], &[]);
    assert!(o0.status.success(), "{}", stderr(&o0));
    // The incomplete batch does not merge.
    let o = batch(&["--merge", &out], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("shards with no manifest: [1, 2]"), "{}", stderr(&o));
    // Slurm's array variables, 1-based ids.
    let slurm = [("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_MAX", "3")];
    let o1 = batch(&[&f, "--out", &out], &slurm);
    assert!(stderr(&o1).contains("shard 1/3 (SLURM_ARRAY_TASK_ID=2"), "{}", stderr(&o1));
    let o2 = batch(&[&f, "--out", &out, "--shards", "3"], &[("JOB_COMPLETION_INDEX", "2")]);
    assert!(stderr(&o2).contains("shard 2/3 (JOB_COMPLETION_INDEX=2"), "{}", stderr(&o2));
    let mut all = Vec::new();
    for i in 0..3 {
        let m = Path::new(&out).join(format!("manifest-shard-{i}-of-3.jsonl"));
        for id in done_lines(&m) {
            assert_eq!(Shard::of(&id, 3), i, "{id} ran in shard {i}");
            all.push(id);
        }
    }
    all.sort();
    assert_eq!(all, (0..n).map(|i| format!("j{i}")).collect::<Vec<_>>());
    merged_complete(&out, n);
    // A duplicate (one job done in two shard manifests) is found.
    let m0 = Path::new(&out).join("manifest-shard-0-of-3.jsonl");
    let m1 = Path::new(&out).join("manifest-shard-1-of-3.jsonl");
    let stolen =
        std::fs::read_to_string(&m0).unwrap().lines().find(|l| l.contains(r#""kind":"done""#)).unwrap().to_string();
    let run_line = std::fs::read_to_string(&m0).unwrap().lines().next().unwrap().to_string();
    let mut t1 = std::fs::read_to_string(&m1).unwrap();
    t1 = t1.replacen(r#""jobs":["#, &format!(r#""jobs":["{}","#, stolen.split('"').nth(7).unwrap()), 1);
    t1.push_str(&stolen);
    t1.push('\n');
    std::fs::write(&m1, t1).unwrap();
    let o = batch(&["--merge", &out], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 duplicated"), "{} (run line {run_line})", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_shard_comes_from_the_flag_or_the_scheduler() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let s = |o: Option<(Shard, String)>| o.map(|(s, _)| (s.index, s.count));
    assert_eq!(s(shard_from(Some("1/4"), None, env(&[])).unwrap()), Some((1, 4)));
    assert_eq!(s(shard_from(None, None, env(&[])).unwrap()), None);
    let slurm = &[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "8")];
    assert_eq!(s(shard_from(None, None, env(slurm)).unwrap()), Some((5, 8)));
    let minmax = &[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_MAX", "4")];
    assert_eq!(s(shard_from(None, None, env(minmax)).unwrap()), Some((2, 4)));
    let k8s = &[("JOB_COMPLETION_INDEX", "0")];
    assert_eq!(s(shard_from(None, Some(2), env(k8s)).unwrap()), Some((0, 2)));
    assert!(shard_from(None, None, env(k8s)).unwrap_err().to_string().contains("--shards N"));
    assert!(shard_from(Some("4/4"), None, env(&[])).is_err());
    assert!(shard_from(Some("x"), None, env(&[])).is_err());
    assert!(shard_from(None, Some(2), env(&[])).is_err());
    // A job's shard depends only on its id.
    let ids: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
    let counts = ids.iter().fold([0; 4], |mut c, id| {
        c[Shard::of(id, 4)] += 1;
        c
    });
    assert!(counts.iter().all(|&c| c > 25), "unbalanced shards {counts:?}");
}

#[test]
fn caption_pairs_become_seeded_jobs_with_dataset_metadata() {
    let pairs = concat!(
        r#"{"input": "a red bicycle on a hill", "edited": "a red car on a hill", "steps": 2, "scheduler": "ddim"}"#,
        "\n",
        r#"{"id": "bench", "input": "a cat on a bench", "edited": "a dog on a bench", "blend": ["cat", "dog"], "steps": 2, "scheduler": "ddim"}"#,
        "\n"
    );
    let (dir, f, out) = setup("batch-pairs", pairs);
    let o = batch(&["--pairs", &f, "--seeds", "2", "--out", &out], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::read_to_string(Path::new(&out).join("metadata.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = meta.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4, "{meta}");
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pair1-s0", "pair1-s1", "bench-s0", "bench-s1"]);
    for r in &rows {
        for k in ["file_name", "source_file_name"] {
            assert!(Path::new(&out).join(r[k].as_str().unwrap()).is_file(), "{k} of {r}");
        }
    }
    assert_eq!(rows[2]["edited_caption"], "a dog on a bench");
    assert_eq!(rows[3]["seed"], 1);
    assert_eq!(rows[2]["blend"], "cat,dog");
    let (_d, f, out) = setup("batch-pairs-bad", r#"{"input": "a cat", "seed": 3}"#);
    one_line_error(&batch(&["--pairs", &f, "--seeds", "2", "--out", &out], &[]), 1, "line 1:");
    std::fs::remove_dir_all(dir).unwrap();
}
