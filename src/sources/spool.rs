//! The spool directory: alarm gateways drop event files (`*.json`, `*.yaml`:
//! one event or a list), written under a temporary name and renamed. Each file
//! is ingested whole through the one intake, then moved to `done/`; a file
//! with a mistake goes to `failed/` with `NAME.error` beside it saying where
//! (line, column, field) and what was expected, and nothing of it is stored.
//!
//! **Invariant:** a file reaches `done/` only after its events are committed;
//! a store failure leaves it where it is, to be tried again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::IntakeError;
use crate::clock;
use crate::config::Loaded;
use crate::engine::EngineHandle;

/// Files are looked at again this often even without a change (a file left
/// by a store failure is retried).
const RESCAN: Duration = Duration::from_secs(5);

/// Whether a file is an event file to read now: not a dot-file, not a
/// temporary name, a JSON or YAML ending.
pub fn eligible(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

/// What became of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    Done,
    Failed(String),
    /// Not there any more, or our own fault: left for later.
    Left,
}

/// `done/` and `failed/` are the daemon's own directories: not a link
/// (which would carry files, and `.error` notes, anywhere), not another
/// user's, not writable by others (who could plant a link inside).
fn own_dir(dir: &Path) -> std::io::Result<()> {
    crate::private::create_dir(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let bad = |why: &str| {
        Err(std::io::Error::other(format!(
            "{} is {why}: the spool files into its own directories only (move it aside)",
            dir.display()
        )))
    };
    if !meta.file_type().is_dir() {
        return bad("not a directory (a link or a file)");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return bad("owned by another user");
        }
        if meta.mode() & 0o022 != 0 {
            return bad("writable by others");
        }
    }
    Ok(())
}

fn move_into(file: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    own_dir(dir)?;
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut to = dir.join(&name);
    if to.exists() {
        to = dir.join(format!(
            "{}-{name}",
            clock::now().format("%Y%m%d-%H%M%S%.3f")
        ));
    }
    std::fs::rename(file, &to)?;
    Ok(to)
}

/// Why a spool entry is not read at all.
fn unreadable(meta: &std::fs::Metadata) -> Option<String> {
    let t = meta.file_type();
    if t.is_symlink() {
        return Some("a symbolic link: the spool takes regular files only, and links are never followed (not read)".into());
    }
    if !t.is_file() {
        let what = kind_of(&t);
        return Some(format!(
            "{what}: the spool takes regular files only (not read)"
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Some(format!(
                "owned by uid {}, not by the daemon's user (uid {me}): the spool takes only files its own user wrote (not read)",
                meta.uid()
            ));
        }
        // Another name of one of the daemon's own files (its secrets) is
        // owned by the daemon too.
        if meta.nlink() > 1 {
            return Some(format!(
                "a file with {} names (hard links): the spool takes files with one name only (not read)",
                meta.nlink()
            ));
        }
    }
    None
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens a spool entry without following a link or blocking on a pipe, and
/// reads it if it is still the regular file, owned by us, that was listed
/// (a swap between the look and the open is caught by comparing the two).
/// `Ok(None)`: gone meanwhile. `Err`: why it is refused unread.
fn read_regular(path: &Path, max: usize) -> Result<Option<(String, FileId)>, String> {
    use std::io::Read;
    let listed = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot look at the file: {e}")),
    };
    if let Some(why) = unreadable(&listed) {
        return Err(why);
    }
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits());
    }
    let file = match open.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open the file: {e}")),
    };
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot look at the file: {e}"))?;
    if let Some(why) = unreadable(&opened) {
        return Err(why);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (opened.dev(), opened.ino()) != (listed.dev(), listed.ino()) {
            return Err("replaced while it was being opened (not read)".into());
        }
    }
    if opened.len() > max as u64 {
        return Err(format!(
            "{} bytes: at most {max} (limits.body_bytes) (not read)",
            opened.len()
        ));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() > max {
        return Err(format!("more than {max} bytes (limits.body_bytes)"));
    }
    String::from_utf8(bytes)
        .map(|t| Some((t, file_id(&opened))))
        .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Which file a name held when it was read: device and inode.
type FileId = (u64, u64);

fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Whether `path` still names the file that was read. A sender that reuses
/// a name (writes `atm-07.json.tmp`, renames it onto `atm-07.json`) may put
/// a new file there while the last one is ingested: moved to done/ by its
/// name, the new one was filed unread and its events lost.
fn still(path: &Path, read: FileId) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| file_id(&m) == read)
}

/// Reads, ingests and files away one spool file.
pub async fn ingest_file(engine: &EngineHandle, loaded: &Loaded, path: &Path) -> Fate {
    let spool = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (text, read) = match read_regular(path, loaded.config.limits.body_bytes) {
        Ok(Some(t)) => t,
        // Gone between the listing and the read: not an error.
        Ok(None) => return Fate::Left,
        Err(why) => return fail(path, spool, format!("{name}:1:1: {why}")),
    };
    let replaced = || {
        tracing::warn!(
            "spool: {name} was replaced by a new file while it was read; the new one is read next"
        );
    };
    let inputs = match crate::event::parse_file(&name, &text) {
        Ok(v) => v,
        Err(d) if !still(path, read) => {
            replaced();
            tracing::warn!("spool: refused {name} as it was read: {d}");
            return Fate::Left;
        }
        Err(d) => return fail(path, spool, d.to_string()),
    };
    let many = text.trim_start().starts_with('[') || text.trim_start().starts_with('-');
    let result = super::intake(
        engine,
        loaded,
        inputs.into_iter().map(Ok).collect(),
        &super::Origin::engine("spool"),
        clock::now(),
        |i, f| match (many, f) {
            (true, Some(f)) => Some(format!("[{i}].{f}")),
            (true, None) => Some(format!("[{i}]")),
            (false, f) => f,
        },
    )
    .await;
    if !matches!(result, Err(IntakeError::Engine(_))) && !still(path, read) {
        // What was read is stored (or refused, said here); the name now
        // holds another file, left for the next pass.
        replaced();
        return match result {
            Ok(_) => Fate::Done,
            Err(e) => {
                tracing::warn!("spool: refused {name} as it was read: {e}");
                Fate::Failed(format!("{name}: {e}"))
            }
        };
    }
    match result {
        Ok(_) => match move_into(path, &spool.join("done")) {
            Ok(_) => Fate::Done,
            Err(e) => {
                // The events are stored; the file must not be read twice:
                // it is hidden where it is (a dot-name is never read).
                let hidden = spool.join(format!(".ingested-{name}"));
                match std::fs::rename(path, &hidden) {
                    Ok(()) => tracing::error!(
                        "spool: {name} was ingested but cannot be moved to done/ ({e}); it is kept as {} instead",
                        hidden.display()
                    ),
                    Err(e2) => tracing::error!(
                        "spool: {name} was ingested but can be neither moved to done/ ({e}) nor renamed ({e2}); remove it, or it is read again"
                    ),
                }
                Fate::Done
            }
        },
        Err(IntakeError::Engine(e)) => {
            tracing::warn!("spool: {name} left for later: {e}");
            Fate::Left
        }
        Err(IntakeError::Invalid { message, field })
        | Err(IntakeError::Forbidden { message, field }) => {
            let at = field.map(|f| format!("{f}: ")).unwrap_or_default();
            fail(path, spool, format!("{name}: {at}{message}"))
        }
        Err(IntakeError::TooLarge(m)) => fail(path, spool, format!("{name}: {m}")),
    }
}

fn fail(path: &Path, spool: &Path, why: String) -> Fate {
    // What the parser quoted of the input is clipped: the note and the log
    // are read by more people than the file's author.
    let why = crate::diag::clip_quotes(&why);
    let failed = spool.join("failed");
    match move_into(path, &failed) {
        Ok(to) => {
            let mut err = to.clone().into_os_string();
            err.push(".error");
            let err = PathBuf::from(err);
            if let Err(e) = write_whole(&err, &format!("{why}\n")) {
                tracing::error!("spool: cannot write {}: {e}", err.display());
            }
            tracing::warn!("spool: refused {}: {why}", path.display());
            Fate::Failed(why)
        }
        Err(e) => {
            tracing::error!("spool: cannot move {} to failed/: {e}", path.display());
            Fate::Left
        }
    }
}

/// Written under a temporary name and renamed, so whoever watches failed/
/// never reads half an explanation.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    // Created anew (never through a link planted under that name).
    let _ = std::fs::remove_file(&tmp);
    crate::private::write_new(Path::new(&tmp), text)?;
    std::fs::rename(&tmp, path)
}

/// Every entry to look at, directories aside: links, pipes and devices are
/// listed too, so that they are moved to `failed/` (unread) rather than left.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.retain(|p| eligible(p));
    files.sort();
    files
}

/// Watches the spool directory (files present at start-up first).
pub async fn run(
    mut config: watch::Receiver<Arc<Loaded>>,
    engine: EngineHandle,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watched: Option<PathBuf> = None;
    let mut debouncer =
        match notify_debouncer_full::new_debouncer(Duration::from_millis(100), None, move |_| {
            let _ = tx.send(());
        }) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(
                    "spool: cannot watch for files ({e}); looking every {} instead",
                    crate::show::span(RESCAN)
                );
                None
            }
        };
    loop {
        let loaded = Arc::clone(&config.borrow_and_update());
        let dir = loaded.config.spool_dir.clone();
        if watched.as_ref() != Some(&dir) {
            if let Err(e) = crate::private::create_dir(&dir) {
                tracing::error!("spool: cannot create {}: {e}", dir.display());
            }
            if let Some(d) = debouncer.as_mut() {
                if let Some(old) = &watched {
                    let _ = d.unwatch(old);
                }
                if let Err(e) = d.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::error!("spool: cannot watch {}: {e}", dir.display());
                }
            }
            watched = Some(dir.clone());
        }
        for f in listing(&dir) {
            ingest_file(&engine, &loaded, &f).await;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = rx.recv() => {}
            r = config.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    /// A name reused while its file was ingested names another file then:
    /// that one is not filed away unread.
    #[test]
    fn a_file_put_under_the_same_name_while_one_is_read_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atm-07.json");
        std::fs::write(&path, r#"{"kind":"atm.down","branch":"br-a"}"#).unwrap();
        let (text, read) = super::read_regular(&path, 1 << 20).unwrap().unwrap();
        assert!(text.contains("atm.down"));
        assert!(super::still(&path, read));
        let tmp = dir.path().join("atm-07.json.tmp");
        std::fs::write(&tmp, r#"{"kind":"atm.up","branch":"br-a"}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(!super::still(&path, read), "a new file under the name");
        std::fs::remove_file(&path).unwrap();
        assert!(!super::still(&path, read), "no file under the name");
    }

    #[test]
    fn only_event_files_under_their_final_name_are_read() {
        use std::path::Path;
        assert!(super::eligible(Path::new("spool/a.json")));
        assert!(super::eligible(Path::new("spool/a.yaml")));
        assert!(!super::eligible(Path::new("spool/.a.json")), "a dot-file");
        assert!(
            !super::eligible(Path::new("spool/a.json.tmp")),
            "a temporary name"
        );
        assert!(!super::eligible(Path::new("spool/a.json~")));
        assert!(!super::eligible(Path::new("spool/a.txt")));
    }
}
