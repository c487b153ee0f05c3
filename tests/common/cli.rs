//! Helpers for the command-line tests: the fixtures folder, a fresh temporary folder, running the binary, and the
//! check that a refusal is one clear line with the expected exit status and no panic.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `$TMP/p2p-cli-PID-NAME`, removed first.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(args).output().expect("run p2p-wgpu")
}

/// The run failed with exit status `code` and one stderr line mentioning `needle` (lavapipe's XDG_RUNTIME_DIR
/// notice aside), without a panic.
pub fn one_line_error(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].contains(needle), "{:?} does not mention {needle:?}", lines[0]);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
}

/// Copies the folder `from` to `to` (files and subfolders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &dst) } else { std::fs::copy(&p, &dst).map(|_| ()).unwrap() }
    }
}
