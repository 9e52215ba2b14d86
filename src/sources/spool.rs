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

fn move_into(file: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
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

/// Reads, ingests and files away one spool file.
pub async fn ingest_file(engine: &EngineHandle, loaded: &Loaded, path: &Path) -> Fate {
    let spool = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // Gone between the listing and the read: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Fate::Left,
        Err(e) => {
            return fail(
                path,
                spool,
                format!("{name}:1:1: cannot read the file: {e}"),
            );
        }
    };
    let inputs = match crate::event::parse_file(&name, &text) {
        Ok(v) => v,
        Err(d) => return fail(path, spool, d.to_string()),
    };
    let many = text.trim_start().starts_with('[') || text.trim_start().starts_with('-');
    let result = super::intake(
        engine,
        loaded,
        inputs,
        "spool",
        clock::now(),
        None,
        |i, f| match (many, f) {
            (true, Some(f)) => Some(format!("[{i}].{f}")),
            (true, None) => Some(format!("[{i}]")),
            (false, f) => f,
        },
    )
    .await;
    match result {
        Ok(_) => match move_into(path, &spool.join("done")) {
            Ok(_) => Fate::Done,
            Err(e) => {
                // The events are stored; the file must not be read twice.
                tracing::error!("spool: {name} was ingested but cannot be moved to done/: {e}");
                Fate::Left
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
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && eligible(p));
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
                    "spool: cannot watch for files ({e}); looking every {}s instead",
                    RESCAN.as_secs()
                );
                None
            }
        };
    loop {
        let loaded = Arc::clone(&config.borrow_and_update());
        let dir = loaded.config.spool_dir.clone();
        if watched.as_ref() != Some(&dir) {
            if let Err(e) = std::fs::create_dir_all(&dir) {
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
