//! What the daemon creates is its owner's only: files 0600, directories
//! 0700 (the database, mail files, secrets, the spool's `failed/` notes).
//!
//! **Invariant:** every file and directory the daemon creates is readable by
//! its own user only (`tests/trust.rs` checks every file under `data_dir`).

use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Files and directories the daemon creates are its owner's only: 0600 and
/// 0700 (SQLite, mail files, secrets, the spool's `failed/` notes). The
/// process's file-creation mask says so once, for every part.
pub fn umask() {
    #[cfg(unix)]
    {
        use nix::sys::stat::Mode;
        nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    }
}

/// A warning when an existing data directory lets other users in: its
/// database, link secret and audit key are read through it.
pub fn open_to_others(dir: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "the data directory {} is open to other users (mode {mode:04o}): its database, link secret and audit key should be the daemon user's only; run `chmod 700 {}`",
                dir.display(),
                dir.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Writes a new file that is its owner's only, refusing to replace one.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let mut f = open.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_directory_is_its_owners_only_and_an_open_one_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        create_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(open_to_others(&data), None);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = open_to_others(&data).expect("a warning");
        assert!(w.contains("0755") && w.contains("chmod 700"), "{w}");
        let f = data.join("secret");
        write_new(&f, "x").unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_new(&f, "y").is_err(), "never replaces a file");
    }
}
