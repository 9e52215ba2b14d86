//! File-watch reload: the configuration file and the playbook and drill
//! directories are watched (editors save by writing a temporary file and
//! renaming it, so directories are watched, not files); a burst of changes
//! triggers one reload through the one reload path, and only when what the
//! files hold changed.
//!
//! **Invariant:** reading a watched file never reloads: reads are not
//! events here, and a touched or rewritten-unchanged file leaves the
//! fingerprint of the files as it was (`tests/watch.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reload::Reloader;

/// Changes closer together than this are one edit.
const SETTLE: Duration = Duration::from_millis(300);

/// The directories to watch and whether a changed path matters.
struct Interest {
    config: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Interest {
    fn of(reloader: &Reloader) -> Interest {
        let loaded = reloader.current();
        let config = reloader.config_path().to_path_buf();
        let mut dirs = vec![
            config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ];
        dirs.push(loaded.config.playbooks_dir.clone());
        dirs.push(loaded.config.drills_dir.clone());
        // Optional: a network without rosters has no directory to watch
        // (one created later is seen by SIGHUP or `POST /api/v1/reload`).
        if loaded.config.rosters_dir.is_dir() {
            dirs.push(loaded.config.rosters_dir.clone());
        }
        Interest { config, dirs }
    }

    fn matters(&self, p: &Path) -> bool {
        if p.file_name() == self.config.file_name() {
            return true;
        }
        let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let in_dir = p
            .parent()
            .is_some_and(|d| self.dirs[1..].iter().any(|w| same_dir(w, d)));
        yaml && !hidden && in_dir
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Reloads when a watched file changes; follows the directories a reload names.
pub async fn run(reloader: Arc<Reloader>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut debouncer = match notify_debouncer_full::new_debouncer(
        SETTLE,
        None,
        move |r: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = r {
                // Reads (`cat`, `check`, the reload itself) are not changes.
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                    .flat_map(|e| e.event.paths)
                    .collect();
                if !paths.is_empty() {
                    let _ = tx.send(paths);
                }
            }
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("file-watch reload is off: cannot watch files: {e}");
            return;
        }
    };
    let mut interest = Interest::of(&reloader);
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut rewatch = |watched: &mut Vec<PathBuf>, dirs: &Vec<PathBuf>| {
        if watched != dirs {
            for d in watched.iter() {
                let _ = debouncer.unwatch(d);
            }
            for d in dirs {
                if let Err(e) = debouncer.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!("file-watch reload: cannot watch {}: {e}", d.display());
                }
            }
            *watched = dirs.clone();
        }
    };
    loop {
        rewatch(&mut watched, &interest.dirs);
        let paths = tokio::select! {
            _ = stop.cancelled() => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        // A directory that appeared (a `rosters/` made after start-up) is
        // watched from now on, and what was put in it before the watch
        // began is read at once.
        let fresh = Interest::of(&reloader);
        let appeared = fresh.dirs != interest.dirs;
        interest = fresh;
        rewatch(&mut watched, &interest.dirs);
        if !reloader.current().config.watch_files
            || !(appeared || paths.iter().any(|p| interest.matters(p)))
        {
            continue;
        }
        // Reading or touching a file is no change: only a change of what
        // the files hold reloads, once (a reload's own reads come back
        // here as events, and would reload forever).
        let r = Arc::clone(&reloader);
        let _ = tokio::task::spawn_blocking(move || r.reload_if_changed("file-watch")).await;
        interest = Interest::of(&reloader);
    }
}
