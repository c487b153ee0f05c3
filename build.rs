//! Embeds every file under `kernels/` into the binary: writes `$OUT_DIR/kernel_files.rs`, a sorted table of
//! (path relative to `kernels/`, `include_str!` of the file), so adding a kernel file needs no Rust edit.
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("build.rs: cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("build.rs: bad dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "wgsl") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut src = String::from("pub static KERNEL_FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        src += &format!("    ({rel:?}, include_str!({:?})),\n", f.display().to_string());
    }
    src += "];\n";
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("kernel_files.rs");
    std::fs::write(out, src).expect("build.rs: cannot write kernel table");
}
