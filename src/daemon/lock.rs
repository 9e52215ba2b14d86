//! One daemon per data directory.
//!
//! The lock is an OS file lock (`flock`) on `DATA_DIR/branchguard.lock`, held
//! for the daemon's life: the kernel releases it when the process dies, so a
//! `kill -9` never leaves a stale lock behind. The file holds the holder's
//! pid, for the refusal message. Read-only commands (`audit verify`) never
//! take it, so they work beside a running daemon.
//!
//! **Invariant:** two daemons never write one data directory: two engines
//! would give the same ids and send every message twice.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock's file name inside the data directory.
pub const LOCK_FILE: &str = "branchguard.lock";

/// Why the data directory cannot be ours.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another branchguard daemon{} is running on the data directory {dir}: stop it first, or give this daemon its own `data_dir`",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the daemon runs; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _held: Flock<std::fs::File>,
}

/// Creates the data directory (its owner's only) if needed and locks it, or
/// says who holds it.
pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    crate::private::create_dir(dir).map_err(io)?;
    // Not truncated on open: the holder's pid must stay readable until the
    // lock is ours.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(h) => h,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err((_, e)) => return Err(io(std::io::Error::from(e))),
    };
    let pid = std::process::id();
    held.set_len(0).map_err(io)?;
    held.rewind().map_err(io)?;
    held.write_all(format!("{pid}\n").as_bytes()).map_err(io)?;
    Ok(DataDirLock { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        match acquire(dir.path()) {
            Err(LockError::Held { pid, dir: d }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(d, dir.path());
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(acquire(dir.path()).is_ok(), "released when dropped");
    }
}
