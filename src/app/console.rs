//! The command line's one printing policy. Results go to stdout through [`out`]: a closed pipe
//! (`p2p-wgpu tokens x | head -1`) ends the process quietly with status 0, as other command-line tools do, and any
//! other failure to write (`> /dev/full`) is an error, because the result was lost. Messages go to stderr through
//! [`say`], which ignores write failures: a full or closed stderr never changes a run's result or exit status.
use std::io::Write;

use crate::error::{Error, Result};

/// Writes `text` to stdout (see the module doc).
pub fn out(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::input(format!("cannot write to standard output: {e}"))),
    }
}

/// Writes one message line to stderr, ignoring failures.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{}", text.trim_end());
}
