//! Where a run may write, and how: one policy for every path a run writes (the files in its output folder and
//! `--save-latents`), checked by [`OutputFiles::check`] before the model loads:
//!
//! - no output lies inside a protected folder (the model's) or is one of the run's input files, comparing canonical
//!   paths (symbolic links resolved, for the parts of the path that exist);
//! - no two outputs of one run are the same file;
//! - an output that already exists is a regular file: a symbolic link, folder, FIFO, socket or device at an output
//!   path is refused, never replaced;
//! - the output folder is a folder (or absent) below a writable one; it is created only by
//!   [`OutputFiles::create_folder`], once the run is known to be valid, so a refused run leaves nothing behind.
//!
//! [`WriteSet`] writes all-or-nothing: every file goes to a temporary beside its target first, and the targets are
//! renamed into place only once all of them were written; on a failure (a full disk) the temporaries are removed and
//! no target has changed. [`remove_stale`] then removes files of an earlier run that this run did not write (only
//! names the caller says are its own, only regular files).
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// One path a run will write, with what it is (an output file's name, or the flag that named it).
#[derive(Clone, Debug)]
struct Target {
    path: PathBuf,
    what: String,
}

/// The output folder of a run and every path the run will write.
#[derive(Clone, Debug)]
pub struct OutputFiles {
    folder: PathBuf,
    targets: Vec<Target>,
}

impl OutputFiles {
    /// The files `names` inside `folder`, and `extra` paths given by flags (`("--save-latents", path)`).
    pub fn new(folder: &Path, names: &[String], extra: &[(&str, &Path)]) -> OutputFiles {
        let mut targets: Vec<Target> =
            names.iter().map(|n| Target { path: folder.join(n), what: format!("the output {n}") }).collect();
        targets.extend(extra.iter().map(|(flag, p)| Target { path: p.to_path_buf(), what: (*flag).to_owned() }));
        OutputFiles { folder: folder.to_path_buf(), targets }
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Applies the policy (see the module doc); `protected` are folders no output may lie in, `inputs` are files
    /// the run reads. Creates nothing (a probe file in the deepest existing folder is made and removed).
    pub fn check(&self, protected: &[&Path], inputs: &[&Path]) -> Result<()> {
        check_folder(&self.folder)?;
        let protected: Vec<(PathBuf, &Path)> = protected.iter().map(|p| (resolve(p), *p)).collect();
        let inputs: Vec<PathBuf> = inputs.iter().map(|p| resolve(p)).collect();
        let mut seen: Vec<(PathBuf, &Target)> = Vec::new();
        // The folder itself may not be inside the model (it would hold our files even where no name collides).
        let folder = resolve(&self.folder);
        for (dir, given) in &protected {
            if folder.starts_with(dir) {
                return Err(Error::input(format!(
                    "output folder {} lies inside the model folder {}: choose another --out",
                    self.folder.display(),
                    given.display()
                )));
            }
        }
        for t in &self.targets {
            check_replaceable(&t.path, &t.what)?;
            let r = resolve(&t.path);
            for (dir, given) in &protected {
                if r.starts_with(dir) {
                    return Err(Error::input(format!(
                        "{} {} lies inside the model folder {}: refusing to write there",
                        t.what,
                        t.path.display(),
                        given.display()
                    )));
                }
            }
            if inputs.contains(&r) {
                return Err(Error::input(format!(
                    "{} {} is an input of this run: refusing to overwrite it",
                    t.what,
                    t.path.display()
                )));
            }
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == r) {
                return Err(Error::input(format!(
                    "{} {} is the same file as {}: give each output its own path",
                    t.what,
                    t.path.display(),
                    first.what
                )));
            }
            seen.push((r, t));
        }
        Ok(())
    }

    /// Creates the output folder (and its parents) if needed.
    pub fn create_folder(&self) -> Result<()> {
        std::fs::create_dir_all(&self.folder)
            .map_err(|e| Error::input(format!("cannot create output folder {}: {e}", self.folder.display())))
    }
}

/// The folder is absent or a folder, and the deepest existing folder on its path is writable.
fn check_folder(folder: &Path) -> Result<()> {
    if let Ok(m) = std::fs::metadata(folder) {
        if !m.is_dir() {
            return Err(Error::input(format!("output {} is a file, not a folder", folder.display())));
        }
    }
    let mut probe_dir = absolute(folder);
    while !probe_dir.is_dir() {
        if probe_dir.exists() {
            return Err(Error::input(format!(
                "cannot create output folder {}: {} is a file",
                folder.display(),
                probe_dir.display()
            )));
        }
        if !probe_dir.pop() {
            return Err(Error::input(format!("output folder {}: no existing parent folder", folder.display())));
        }
    }
    let probe = probe_dir.join(format!(".p2p-wgpu-write-test-{}", std::process::id()));
    let made = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe);
    match made {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::input(format!(
            "output folder {} is not writable ({}: {e})",
            folder.display(),
            probe_dir.display()
        ))),
    }
}

/// An existing path that is not a regular file is refused (never replaced by a rename).
fn check_replaceable(path: &Path, what: &str) -> Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::input(format!("{what} {}: {e}", path.display()))),
    };
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_file() {
        return Ok(());
    } else {
        "not a regular file (a device, FIFO or socket)"
    };
    Err(Error::input(format!("{what} {} is {kind}: refusing to replace it", path.display())))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The canonical form of `p`: its deepest existing ancestor canonicalised (links resolved), then the rest of the
/// path with `.` and `..` applied.
fn resolve(p: &Path) -> PathBuf {
    let abs = absolute(p);
    let mut base = abs.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let canon = loop {
        if let Ok(c) = std::fs::canonicalize(&base) {
            break c;
        }
        match (base.file_name().map(|n| n.to_os_string()), base.parent().map(Path::to_path_buf)) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent;
            }
            // `..` at the end, or the root: apply lexically below.
            _ => break base.clone(),
        }
    };
    let mut out = canon;
    for part in rest.iter().rev() {
        for c in Path::new(part).components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other.as_os_str()),
            }
        }
    }
    out
}

/// Files to be written together, all-or-nothing (see the module doc).
#[derive(Default)]
pub struct WriteSet {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl WriteSet {
    pub fn new() -> WriteSet {
        WriteSet::default()
    }

    pub fn add(&mut self, path: PathBuf, bytes: Vec<u8>) {
        self.files.push((path, bytes));
    }

    /// Writes every file to a temporary beside it, then renames them all into place; returns the paths written.
    /// On failure no target has changed and no temporary is left.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let mut tmps: Vec<PathBuf> = Vec::new();
        let cleanup = |tmps: &[PathBuf]| {
            for t in tmps {
                let _ = std::fs::remove_file(t);
            }
        };
        for (path, bytes) in &self.files {
            if let Err(e) = check_replaceable(path, "output") {
                cleanup(&tmps);
                return Err(e);
            }
            let tmp = temporary(path)?;
            let _ = std::fs::remove_file(&tmp);
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                cleanup(&tmps);
                return Err(Error::input(format!("cannot write {}: {e} (no output was written)", path.display())));
            }
            tmps.push(tmp);
        }
        for (k, (path, _)) in self.files.iter().enumerate() {
            if let Err(e) = std::fs::rename(&tmps[k], path) {
                cleanup(&tmps[k..]);
                return Err(Error::input(format!("cannot write {}: {e}", path.display())));
            }
        }
        Ok(self.files.into_iter().map(|(p, _)| p).collect())
    }
}

/// `.NAME.tmp-PID` beside `path`.
fn temporary(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::input(format!("{} is not a file path", path.display())))?;
    Ok(dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id())))
}

/// Writes one file atomically (a [`WriteSet`] of one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut set = WriteSet::new();
    set.add(path.to_path_buf(), bytes.to_vec());
    set.commit().map(|_| ())
}

/// Removes the regular files in `folder` whose names `ours` accepts and that are not in `written`: the outputs of
/// an earlier run that this run did not replace (a 1-target edit after a 3-target one). Returns their names, sorted.
pub fn remove_stale(folder: &Path, written: &[PathBuf], ours: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let written: Vec<String> =
        written.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    let entries = std::fs::read_dir(folder).map_err(|e| Error::input(format!("{}: {e}", folder.display())))?;
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let regular = e.file_type().map(|t| t.is_file()).unwrap_or(false);
        if regular && ours(&name) && !written.contains(&name) {
            std::fs::remove_file(e.path()).map_err(|err| {
                Error::input(format!("cannot remove the earlier output {}: {err}", e.path().display()))
            })?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}
