//! A job's folder `DIR/<id>/`, written all-or-nothing: the files go into a temporary folder
//! `DIR/.p2p-tmp-<pid>-<id>`, each synced, which is then renamed into place (an earlier folder of the same id is
//! first renamed to `DIR/.p2p-old-<pid>-<id>` and removed after). A process killed at any point leaves either the
//! old folder, or no folder and a temporary one, or the new folder: never a half-written `DIR/<id>`. Leftover
//! temporaries are removed by [`clean_leftovers`] for the ids a run owns.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const TMP: &str = ".p2p-tmp-";
const OLD: &str = ".p2p-old-";

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::input(format!("{what} {}: {e}", p.display()))
}

/// Writes `files` (name, bytes) as the folder `dir/id`, replacing any earlier one; returns the folder.
pub fn write_job_folder(dir: &Path, id: &str, files: &[(String, Vec<u8>)]) -> Result<PathBuf> {
    let pid = std::process::id();
    let tmp = dir.join(format!("{TMP}{pid}-{id}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
    for (name, bytes) in files {
        let p = tmp.join(name);
        let mut f = fs::File::create(&p).map_err(|e| io("cannot create", &p, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io("cannot write", &p, e))?;
    }
    sync_dir(&tmp);
    let dest = dir.join(id);
    let old = dir.join(format!("{OLD}{pid}-{id}"));
    let had_old = dest.exists();
    if had_old {
        let _ = fs::remove_dir_all(&old);
        fs::rename(&dest, &old).map_err(|e| io("cannot move aside", &dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| io("cannot rename into place", &dest, e))?;
    sync_dir(dir);
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(dest)
}

/// Makes a rename durable on file systems that need the folder synced (best effort: not every platform can).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes temporary and set-aside folders that killed runs left in `dir`, for the ids `owns` accepts (a shard
/// never touches another shard's). Returns how many were removed.
pub fn clean_leftovers(dir: &Path, owns: impl Fn(&str) -> bool) -> Result<usize> {
    let mut n = 0;
    let entries = fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP).or_else(|| name.strip_prefix(OLD)) else { continue };
        let Some((pid, id)) = rest.split_once('-') else { continue };
        if pid.bytes().all(|b| b.is_ascii_digit()) && owns(id) && fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}
