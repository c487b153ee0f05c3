//! What the command line refuses, one test per class of defect found by trying bad input as a hostile user would
//! (issue 15): outputs that would touch the model or an input, special files at output paths, output conflicts
//! found late, empty folders and stale files left behind, partial writes, unwritable stdout/stderr, negative
//! numbers, edits that silently do something else, unbounded config values and misleading messages. Every
//! refusal is one line, a non-zero status and no panic; nothing the run does not own is changed.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::cli::{copy_dir, fixtures, one_line_error, run, tmp};
use p2p_wgpu::output::safetensors_f32;

fn tiny() -> PathBuf {
    fixtures().join("sd1-tiny")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file below `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(snapshot(&p));
        } else {
            v.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

/// Replaces `from` by `to` in `path` (a config file), asserting that `from` is there.
fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Defect 1 (and 12): no output inside the model folder, over an input, or over another output; a refused run
/// creates no output folder.
#[test]
fn outputs_never_touch_the_model_or_an_input() {
    let dir = tmp("protect");
    let m = dir.join("model");
    copy_dir(&tiny(), &m);
    let before = snapshot(&m);
    let out = dir.join("out");
    let base = ["--model", s(&m), "--prompt", "x", "--steps", "1", "--seed", "1"];
    let refuse = |extra: &[&str], needle: &str| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        one_line_error(&run(&a), 1, needle);
    };
    let cfg = m.join("unet/config.json");
    let weights = m.join("unet/diffusion_pytorch_model.safetensors");
    refuse(&["--save-latents", s(&cfg), "--out", s(&out)], "inside the model folder");
    refuse(&["--save-latents", s(&weights), "--out", s(&out)], "inside the model folder");
    refuse(&["--out", s(&m.join("vae")), "--save-raw"], "inside the model folder");
    refuse(&["--out", s(&m)], "inside the model folder");
    // Through a symbolic link to the model folder.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&m, &link).unwrap();
    refuse(&["--out", s(&link.join("new"))], "inside the model folder");
    refuse(&["--save-latents", s(&link.join("unet/config.json")), "--out", s(&out)], "inside the model folder");
    // Over the --latents input, and over another output of the same run.
    let lat = dir.join("lat.safetensors");
    std::fs::write(&lat, safetensors_f32(&[("latents", vec![1, 4, 8, 8], &[0.5; 256])]).unwrap()).unwrap();
    let lat_bytes = std::fs::read(&lat).unwrap();
    refuse(&["--latents", s(&lat), "--save-latents", s(&lat), "--out", s(&out)], "input of this run");
    refuse(&["--save-latents", s(&out.join("source.png")), "--out", s(&out)], "same file");
    // A request refused only once the model is loaded (latents of the wrong channel count) still makes no folder.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, safetensors_f32(&[("latents", vec![1, 3, 8, 8], &[0.0; 192])]).unwrap()).unwrap();
    refuse(&["--latents", s(&bad), "--out", s(&out.join("nested"))], "channels");
    assert!(!out.exists(), "a refused run created {}", out.display());
    assert_eq!(snapshot(&m), before, "the model folder changed");
    assert_eq!(std::fs::read(&lat).unwrap(), lat_bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 2: a symbolic link, FIFO or folder at an output path is refused, not replaced.
#[test]
fn special_files_at_output_paths_are_refused() {
    let dir = tmp("special");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("source.png")).unwrap();
    let model = tiny();
    let base = ["--model", s(&model), "--prompt", "x", "--steps", "1", "--seed", "1"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run(&a)
    };
    one_line_error(&with(&["--out", s(&out)]), 1, "symbolic link");
    assert!(std::fs::symlink_metadata(out.join("source.png")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    let linked = dir.join("linked.safetensors");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    one_line_error(&with(&["--out", s(&dir.join("o2")), "--save-latents", s(&linked)]), 1, "symbolic link");
    std::fs::create_dir_all(dir.join("folder")).unwrap();
    one_line_error(&with(&["--out", s(&dir.join("o3")), "--save-latents", s(&dir.join("folder"))]), 1, "a folder");
    let fifo = dir.join("fifo");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(st) if st.success() => {
            use std::os::unix::fs::FileTypeExt;
            one_line_error(&with(&["--out", s(&dir.join("o4")), "--save-latents", s(&fifo)]), 1, "not a regular file");
            assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        }
        _ => eprintln!("SKIPPED: the FIFO case (no mkfifo command here)"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 7: an output conflict is reported before the model loads (here the model's VAE is broken, so a late
/// check would report the VAE instead).
#[test]
fn output_conflicts_are_found_before_the_model_loads() {
    let dir = tmp("early");
    let m = dir.join("model");
    copy_dir(&tiny(), &m);
    let vae = m.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&vae).unwrap();
    std::fs::write(&vae, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("source.png")).unwrap();
    let o = run(&["--model", s(&m), "--prompt", "x", "--out", s(&out)]);
    one_line_error(&o, 1, "source.png");
    assert!(stderr(&o).contains("is a folder"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 8: the outputs of an earlier run that this run does not replace are removed and named; other files
/// stay.
#[test]
fn stale_outputs_of_an_earlier_run_are_removed_and_named() {
    let dir = tmp("stale");
    let out = dir.join("out");
    let model = tiny();
    let base = ["--model", s(&model), "--prompt", "a red bicycle", "--steps", "1", "--seed", "1", "--out", s(&out)];
    let go = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        let o = run(&a);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        stderr(&o)
    };
    go(&["--target", "a blue bicycle", "--target", "a green bicycle"]);
    assert!(out.join("edit-1.png").is_file() && out.join("edit-2.png").is_file());
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let said = go(&["--swap", "red=blue"]);
    assert!(said.contains("removed 2 output(s) of an earlier run") && said.contains("edit-1.png"), "{said}");
    assert!(out.join("edit.png").is_file());
    assert!(!out.join("edit-1.png").exists() && !out.join("edit-2.png").exists());
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 6: a write that fails part-way (here: the second file's folder cannot be written) changes no target and
/// leaves no temporary file; on a tiny tmpfs, where mounting is allowed, the same for a full disk.
#[test]
fn a_failed_write_changes_nothing_and_leaves_no_temporary() {
    use p2p_wgpu::output::WriteSet;
    let dir = tmp("atomic");
    std::fs::create_dir_all(&dir).unwrap();
    let kept = dir.join("a.png");
    std::fs::write(&kept, b"old").unwrap();
    let mut set = WriteSet::new();
    set.add(kept.clone(), b"new".to_vec());
    set.add(dir.join("no-such-folder/b.png"), b"x".to_vec());
    let e = set.commit().unwrap_err().to_string();
    assert!(e.contains("b.png") && e.contains("no output was written"), "{e}");
    assert_eq!(std::fs::read(&kept).unwrap(), b"old");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["a.png"], "temporaries left: {names:?}");

    let mnt = dir.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("SKIPPED: the full-disk case (cannot mount a tmpfs here)");
    } else {
        // Fill the disk but for a few bytes, then run into it.
        let _ = std::fs::write(mnt.join("filler"), vec![0u8; 64 * 1024 - 512]);
        let out = mnt.join("out");
        let o = run(&["--model", s(&tiny()), "--prompt", "x", "--steps", "1", "--seed", "1", "--out", s(&out)]);
        let umount = || Command::new("umount").arg(&mnt).status();
        if o.status.success() {
            let _ = umount();
            panic!("a run onto a full disk succeeded: {}", stderr(&o));
        }
        let left: Vec<String> = std::fs::read_dir(&out)
            .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let _ = umount();
        one_line_error(&o, 1, "no output was written");
        assert!(left.is_empty(), "files left on the full disk: {left:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 3: a closed stdout ends quietly with status 0; a full stdout is an error; a full stderr changes
/// neither the result nor the status.
#[test]
fn unwritable_stdout_and_stderr() {
    let bin = env!("CARGO_BIN_EXE_p2p-wgpu");
    // `info` into a pipe whose reader has gone (as `p2p-wgpu info | true`).
    for args in [vec!["info"], vec!["tokens", "a red bicycle"]] {
        let mut child = Command::new(bin).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    if full().is_err() {
        eprintln!("SKIPPED: the /dev/full cases (no /dev/full here)");
        return;
    }
    for args in [vec!["info"], vec!["tokens", "a red bicycle"]] {
        let o = Command::new(bin).args(&args).stdout(full().unwrap()).output().unwrap();
        one_line_error(&o, 1, "cannot write to standard output");
    }
    let dir = tmp("stderr");
    let out = dir.join("out");
    // Without --seed: the seed line goes to the full stderr; the run must not care.
    let o = Command::new(bin)
        .args(["--model", s(&tiny()), "--prompt", "x", "--steps", "1", "--out", s(&out)])
        .stderr(full().unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(out.join("source.png").is_file());
    let o = Command::new(bin)
        .args(["--model", s(&dir.join("none")), "--prompt", "x", "--out", s(&out)])
        .stderr(full().unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 9: negative numbers are values, accepted where meaningful (guidance) and refused with the allowed range
/// otherwise.
#[test]
fn negative_numbers_are_values() {
    let dir = tmp("negative");
    let out = dir.join("out");
    let model = tiny();
    let base = ["--model", s(&model), "--prompt", "a red bicycle", "--out", s(&out)];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = with(&["--steps", "1", "--seed", "1", "--guidance", "-5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (flag, value, code, needle) in [
        ("--steps", "-1", 2, "must be between 1 and 1000"),
        ("--seed", "-1", 2, "must be a whole number from 0"),
        ("--height", "-64", 2, "must be a positive number of pixels"),
        ("--cross-steps", "-0.1", 1, "--cross-steps"),
    ] {
        let mut extra = vec![flag, value];
        if flag == "--cross-steps" {
            extra.extend(["--swap", "red=blue"]);
        }
        let o = with(&extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{flag} {value}: {err}");
        assert!(err.contains(needle) && !err.contains("unexpected argument"), "{flag} {value}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 11: a swap that would silently do something else is refused.
#[test]
fn swaps_that_would_do_something_else_are_refused() {
    let dir = tmp("swaps");
    let out = s(&dir.join("out")).to_owned();
    let long = format!("{} bicycle", vec!["a"; 80].join(" "));
    let m = tiny();
    one_line_error(&run(&["--model", s(&m), "--prompt", &long, "--swap", "bicycle=car", "--out", &out]), 1, "past the");
    one_line_error(
        &run(&["--model", s(&m), "--prompt", "a red bicycle", "--swap", "bicycle=car=truck", "--out", &out]),
        1,
        "contains '='",
    );
    assert!(!dir.exists());
}

/// Defects 4 and 5: sizes from files and flags are bounded before anything is allocated or looked up.
#[test]
fn config_values_and_sizes_are_bounded() {
    let dir = tmp("bounds");
    let m = dir.join("model");
    copy_dir(&tiny(), &m);
    let out = s(&dir.join("out")).to_owned();
    let t = Instant::now();
    edit_file(&m.join("unet/config.json"), "\"layers_per_block\": 2", "\"layers_per_block\": 100000");
    one_line_error(&run(&["--model", s(&m), "--prompt", "x", "--out", &out]), 1, "layers_per_block");
    one_line_error(&run(&["info", "--model", s(&m)]), 1, "layers_per_block");
    edit_file(&m.join("unet/config.json"), "\"layers_per_block\": 100000", "\"layers_per_block\": 2");
    let te = m.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&te).unwrap();
    let key = "\"max_position_embeddings\": ";
    let at = text.find(key).unwrap() + key.len();
    let end = at + text[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    std::fs::write(&te, format!("{}4000000000{}", &text[..at], &text[end..])).unwrap();
    one_line_error(&run(&["--model", s(&m), "--prompt", "x", "--out", &out]), 1, "max_position_embeddings");
    one_line_error(
        &run(&["--model", s(&m), "--prompt", "a b", "--swap", "a=c", "--out", &out]),
        1,
        "max_position_embeddings",
    );
    one_line_error(&run(&["info", "--batch", "4000000000"]), 1, "--batch must be between 1 and 64");
    assert!(t.elapsed().as_secs() < 120, "bounded configs took {:?}", t.elapsed());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 10: each message names what the user gave and what is allowed.
#[test]
fn messages_name_the_real_cause() {
    let dir = tmp("messages");
    let out = s(&dir.join("out")).to_owned();
    let fresh = |name: &str| {
        let m = dir.join(name);
        copy_dir(&tiny(), &m);
        m
    };
    let go = |m: &Path| run(&["--model", s(m), "--prompt", "x", "--steps", "1", "--seed", "1", "--out", &out]);
    let m = fresh("size0");
    edit_file(&m.join("unet/config.json"), "\"sample_size\": 8", "\"sample_size\": 0");
    one_line_error(&go(&m), 1, "`sample_size` is 0");
    let m = fresh("beta");
    edit_file(&m.join("scheduler/scheduler_config.json"), "\"beta_end\": 0.012", "\"beta_end\": 2.0");
    one_line_error(&go(&m), 1, "`beta_end` is 2");
    let o = run(&["--model", s(&tiny()), "--prompt", "x", "--height", "100000", "--out", &out]);
    one_line_error(&o, 1, "--height must be between 1 and 8192");
    let o = Command::new(env!("CARGO_BIN_EXE_p2p-wgpu"))
        .args(["--model", s(&tiny()), "--prompt", "x", "--out", &out])
        .env("WGPU_BACKEND", "bogus")
        .output()
        .unwrap();
    one_line_error(&o, 1, "unknown backend bogus");
    let file = tiny().join("model_index.json");
    one_line_error(&run(&["--model", s(&file), "--prompt", "x", "--out", &out]), 1, "is a file, not a model folder");
    one_line_error(
        &run(&["--model", s(&file), "--prompt", "a b", "--swap", "a=c", "--out", &out]),
        1,
        "is a file, not a model folder",
    );
    // A NaN weight is named at load.
    let m = fresh("nan");
    let w = m.join("vae/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, info) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| k.starts_with("decoder.") && v["dtype"] == "F32")
        .expect("an F32 decoder tensor");
    let at = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&w, bytes).unwrap();
    one_line_error(&go(&m), 1, &format!("{name} holds NaN"));
    assert!(!dir.join("out").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
