//! The shipped default model (models/default, trained by weights-tools/train_default.py): the command line finds it
//! without `--model`, it matches diffusers on a short run (reference/default-t2i.safetensors, made by
//! weights-tools/make_default_reference.py: 8×8 base, 4 DDIM steps, 2 SR steps; ≤ 1e-3 relative L2 in f32), and it
//! is what the issue asked to ship: float16 safetensors, at most 50 MiB.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use p2p_wgpu::weights::SafetensorsFile;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-default-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary in `cwd` (a folder without models/, so only the source tree's default can be found).
fn run_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).current_dir(cwd).args(args).output().expect("run p2p-wgpu")
}

/// Runs the binary in `cwd` with `args` (which write to `cwd/out`); returns the output folder.
fn run_ok(cwd: &Path, args: &[&str]) -> PathBuf {
    let o = run_in(cwd, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cwd.join("out")
}

fn raw(dir: &Path, name: &str) -> Vec<f32> {
    SafetensorsFile::open(&dir.join("raw.safetensors")).unwrap().read_f32(name).unwrap().data
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn default_model_loads_without_model_flag() {
    let d = tmp("swap");
    let args = [
        "--prompt",
        "a red circle on a white background",
        "--swap",
        "circle=square",
        "--steps",
        "4",
        "--sr-steps",
        "1",
        "--seed",
        "3",
        "--save-raw",
        "--out",
        "out",
    ];
    let out = run_ok(&d, &args);
    for f in ["source.png", "edit.png", "grid.png"] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    let base = raw(&out, "base_images");
    assert_eq!(base.len(), 2 * 3 * 32 * 32, "two rows of 32×32 base images (the model's native size)");
    let (src, edit) = base.split_at(base.len() / 2);
    let moved = rel_l2(edit, &wide(src));
    eprintln!("edited row vs source row: {moved:.2e}");
    assert!(moved > 1e-2, "the swap did not change the edited row ({moved:.2e})");
    let images = raw(&out, "images");
    assert_eq!(images.len(), 2 * 3 * 128 * 128, "two rows of 128×128 images (×4 super-resolution)");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn default_model_matches_diffusers() {
    let reference = repo().join("tests/fixtures/reference/default-t2i.safetensors");
    let f = SafetensorsFile::open(&reference).unwrap();
    let prompt = f.metadata().get("prompt").expect("prompt in the reference's metadata").clone();
    let steps = f.metadata()["steps"].clone();
    let sr_steps = f.metadata()["sr_steps"].clone();
    let d = tmp("parity");
    let model = repo().join("models/default");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        &prompt,
        "--steps",
        &steps,
        "--sr-steps",
        &sr_steps,
        "--latents",
        reference.to_str().unwrap(),
        "--f32",
        "--save-raw",
        "--out",
        "out",
    ];
    let out = run_ok(&d, &args);
    for (ours, theirs) in [("latents", "base_final"), ("images", "images")] {
        let want = f.read_f32(theirs).unwrap().data;
        let got = raw(&out, ours);
        assert_eq!(got.len(), want.len(), "{ours}");
        let e = rel_l2(&got, &wide(&want));
        eprintln!("{ours} vs diffusers {theirs}: {e:.2e}");
        assert!(e <= 1e-3, "{ours} differs from diffusers' {theirs}: {e:.2e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn default_model_is_small_float16() {
    let root = repo().join("models/default");
    let mut total = 0u64;
    let mut weights = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            total += p.metadata().unwrap().len();
            if p.extension().is_some_and(|x| x == "safetensors") {
                weights += 1;
                let f = SafetensorsFile::open(&p).unwrap();
                for (name, info) in f.tensors() {
                    assert_eq!(info.dtype.name(), "F16", "{}: {name} is not float16", p.display());
                }
            }
        }
    }
    assert_eq!(weights, 3, "text_encoder, unet and sr_unet weights");
    assert!(total <= 50 << 20, "models/default is {total} bytes, over 50 MiB");
}
