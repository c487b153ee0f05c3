//! The edit command line on the tiny SD 1.x fixture: outputs of a swap (source.png, edit.png, grid.png, attention
//! and mask pictures), the source row of an edit equal to the plain generation, the edit really changing the
//! target, three-prompt batches, and bad edit input as one clear line with exit code 1 and nothing written.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::rel_l2;
use p2p_wgpu::weights::SafetensorsFile;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1-tiny").to_string_lossy().into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-edit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(args).output().expect("run p2p-wgpu")
}

fn ok(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&o.stderr));
}

fn images(dir: &Path) -> Vec<f32> {
    SafetensorsFile::open(&dir.join("raw.safetensors")).unwrap().read_f32("images").unwrap().data
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

const PROMPT: &str = "a red bicycle on a hill";

#[test]
fn swap_outputs_and_source_equals_plain() {
    let m = model();
    let d = tmp("swap");
    let (edit, plain_src, plain_tgt) = (d.join("edit"), d.join("plain-src"), d.join("plain-tgt"));
    let common = ["--model", &m, "--steps", "4", "--seed", "3", "--save-raw"];
    let mut a: Vec<&str> = common.to_vec();
    let e = edit.to_str().unwrap();
    a.extend(["--prompt", PROMPT, "--swap", "bicycle=car", "--blend", "bicycle,car"]);
    a.extend(["--save-attention", "--attention-res", "8", "--out", e]);
    ok(&a);
    for f in ["source.png", "edit.png", "grid.png", "attention-0.png", "attention-1.png", "blend-masks.png"] {
        assert!(edit.join(f).is_file(), "{f} missing");
    }
    let mut p: Vec<&str> = common.to_vec();
    p.extend(["--prompt", PROMPT, "--out", plain_src.to_str().unwrap()]);
    ok(&p);
    let mut q: Vec<&str> = common.to_vec();
    q.extend(["--prompt", "a red car on a hill", "--out", plain_tgt.to_str().unwrap()]);
    ok(&q);
    let (ei, ps, pt) = (images(&edit), images(&plain_src), images(&plain_tgt));
    let n = ps.len();
    assert_eq!(ei.len(), 2 * n);
    // The source row is never edited: it is the plain generation (batching changes nothing per row).
    let e_src = rel_l2(&ei[..n], &wide(&ps));
    assert!(e_src < 1e-5, "source row differs from the plain generation: {e_src:.2e}");
    // The edit is not a plain generation of the target prompt.
    let e_tgt = rel_l2(&ei[n..], &wide(&pt));
    assert!(e_tgt > 1e-2, "the edited target equals a plain generation: {e_tgt:.2e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn three_prompts_refine_and_reweight() {
    let m = model();
    let d = tmp("three");
    let o = d.to_str().unwrap();
    ok(&[
        "--model",
        &m,
        "--steps",
        "3",
        "--seed",
        "5",
        "--prompt",
        PROMPT,
        "--target",
        "a red car on a hill",
        "--target",
        "a big red bicycle on a green hill",
        "--reweight",
        "red=2",
        "--scheduler",
        "ddim",
        "--out",
        o,
    ]);
    for f in ["source.png", "edit-1.png", "edit-2.png", "grid.png"] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

fn one_line_error(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err}");
    assert!(lines[0].contains(needle), "{:?} does not mention {needle:?}", lines[0]);
}

#[test]
fn bad_edit_input() {
    let m = model();
    let d = tmp("bad");
    let o = d.to_str().unwrap();
    let base = ["--model", &m, "--steps", "2", "--out", o, "--prompt", PROMPT];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let cases: [(&[&str], &str); 9] = [
        (&["--swap", "dog=cat"], "dog"),
        (&["--reweight", "fluffy=2"], "fluffy"),
        (&["--swap", "bicycle=car", "--blend", "zebra"], "zebra"),
        (&["--target", "a car", "--mode", "replace"], "word"),
        (&["--swap", "bicycle=car", "--cross-steps", "1.5"], "1.5"),
        (&["--swap", "bicycle=car", "--self-steps", "0.6:0.2"], "self"),
        (&["--reweight", "red=NaN"], "NaN"),
        (&["--swap", "bicycle"], "bicycle"),
        (&["--blend", "red"], "--blend"),
    ];
    for (extra, needle) in cases {
        let args = with(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        one_line_error(&refs, needle);
    }
    assert!(!d.join("source.png").exists() && !d.join("edit.png").exists(), "nothing may be written on error");
    let _ = std::fs::remove_dir_all(&d);
}
