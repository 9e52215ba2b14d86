//! The one reload path: load → validate everything → publish an `Arc` of the
//! loaded set on a watch channel. Start-up is the first publish; SIGHUP and
//! `POST /api/v1/reload` only trigger [`Reloader::reload`]. Every part that
//! depends on configuration subscribes and rebuilds what it needs (the engine
//! takes new playbooks, the delivery worker a new SMTP transport, the API reads
//! the set in force).
//!
//! **Invariant:** there is one copy of the configuration in force: the value on
//! the watch channel. A refused reload publishes nothing.
//!
//! **Invariant:** a setting that is only read at start-up (`listen`, `data_dir`)
//! and changed in the file is reported as needing a restart, never silently ignored.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::clock;
use crate::config::{self, Loaded};
use crate::diag::Diagnostics;

/// The outcome of the last publish, for `/api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub trigger: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Lints of the set in force (`file:line:col: warning: …`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Settings changed in the file that take effect only after a restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<String>,
}

pub struct Reloader {
    path: PathBuf,
    tx: watch::Sender<Arc<Loaded>>,
    /// The set the daemon started with: what start-up-only settings still are.
    started: Arc<Loaded>,
    last: Mutex<ReloadStatus>,
}

impl Reloader {
    /// The first publish, at start-up.
    pub fn start(path: PathBuf, loaded: Loaded) -> Arc<Reloader> {
        let loaded = Arc::new(loaded);
        let (tx, _) = watch::channel(Arc::clone(&loaded));
        crate::metrics::config_loaded(&loaded, true);
        let status = ReloadStatus {
            at: clock::now(),
            ok: true,
            trigger: "start-up".into(),
            errors: Vec::new(),
            warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
            restart_required: Vec::new(),
        };
        Arc::new(Reloader {
            path,
            tx,
            started: loaded,
            last: Mutex::new(status),
        })
    }

    /// A receiver that sees every later publish.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Loaded>> {
        self.tx.subscribe()
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.tx.borrow())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn status(&self) -> ReloadStatus {
        match self.last.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Loads and checks every file; publishes the new set only if all of it is valid.
    /// Blocking (reads files): call it off the async threads.
    pub fn reload(&self, trigger: &str) -> Result<String, Diagnostics> {
        let result = config::load(&self.path);
        let mut status = ReloadStatus {
            at: clock::now(),
            ok: result.is_ok(),
            trigger: trigger.to_string(),
            errors: Vec::new(),
            warnings: Vec::new(),
            restart_required: Vec::new(),
        };
        let out = match result {
            Ok(loaded) => {
                status.restart_required = self.needs_restart(&loaded);
                status.warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
                for w in &status.warnings {
                    tracing::warn!("{w}");
                }
                let summary = loaded.summary();
                crate::metrics::config_loaded(&loaded, true);
                tracing::info!("configuration reloaded ({trigger}): {summary}");
                for r in &status.restart_required {
                    tracing::warn!("{r}");
                }
                self.tx.send_replace(Arc::new(loaded));
                Ok(summary)
            }
            Err(d) => {
                crate::metrics::config_loaded(&self.current(), false);
                tracing::error!(
                    "configuration reload ({trigger}) refused; the previous set keeps running:\n{d}"
                );
                status.errors = d.0.iter().map(|x| x.to_string()).collect();
                Err(d)
            }
        };
        match self.last.lock() {
            Ok(mut l) => *l = status,
            Err(p) => *p.into_inner() = status,
        }
        out
    }

    fn needs_restart(&self, new: &Loaded) -> Vec<String> {
        let (old, new) = (&self.started.config, &new.config);
        let mut out = Vec::new();
        if old.listen != new.listen {
            out.push(format!(
                "listen: the file says {}, the daemon listens on {} until it is restarted",
                new.listen, old.listen
            ));
        }
        if old.data_dir != new.data_dir {
            out.push(format!(
                "data_dir: the file says {}, the daemon uses {} until it is restarted",
                new.data_dir.display(),
                old.data_dir.display()
            ));
        }
        out
    }
}
