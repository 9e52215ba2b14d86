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
//! **Invariant:** a setting that is only read at start-up ([`START_UP_ONLY`]:
//! the listener and its bounds, the HTTP layers, the data directory, the TLS
//! files, the audit key) and changed in the file is reported as needing a
//! restart, never silently ignored (a test changes each one alone).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::clock;
use crate::config::{self, Config, Loaded};
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
    /// What the files held at the last load (taken or refused): a watched
    /// file that is read, touched or rewritten unchanged reloads nothing.
    seen: Mutex<Option<[u8; 32]>>,
}

/// A digest of every file a load reads: the configuration file, and the
/// YAML files of the playbook and drill directories it names (by name and
/// content, in name order). Unreadable files count by their error.
pub fn fingerprint(config_path: &std::path::Path, loaded: &Loaded) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut file = |p: &std::path::Path| {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0u8]);
        match std::fs::read(p) {
            Ok(b) => h.update(&b),
            Err(e) => h.update(e.kind().to_string().as_bytes()),
        }
        h.update([0u8]);
    };
    file(config_path);
    for dir in [
        &loaded.config.playbooks_dir,
        &loaded.config.drills_dir,
        &loaded.config.rosters_dir,
    ] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| crate::config::is_yaml_file(p));
        names.sort();
        for p in names {
            file(&p);
        }
    }
    h.finalize().into()
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
        let seen = fingerprint(&path, &loaded);
        Arc::new(Reloader {
            path,
            tx,
            started: loaded,
            last: Mutex::new(status),
            seen: Mutex::new(Some(seen)),
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

    /// Reloads if what the files hold changed since the last load; `None`
    /// when nothing changed (a file was only read or touched). Blocking.
    pub fn reload_if_changed(&self, trigger: &str) -> Option<Result<String, Diagnostics>> {
        let now = fingerprint(&self.path, &self.current());
        let seen = match self.seen.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        (seen != Some(now)).then(|| self.reload(trigger))
    }

    /// Loads and checks every file; publishes the new set only if all of it is valid.
    /// Blocking (reads files): call it off the async threads.
    pub fn reload(&self, trigger: &str) -> Result<String, Diagnostics> {
        // Taken before the load: a change made while it reads is a change
        // the next look sees.
        let before = fingerprint(&self.path, &self.current());
        let result = config::load(&self.path).and_then(|l| match vanished(&self.current(), &l) {
            Some(d) => Err(d),
            None => Ok(l),
        });
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
        // New directories named by the new file: their files are what was loaded.
        let moved = {
            let (was, now) = (&self.started.config, &self.current().config);
            was.playbooks_dir != now.playbooks_dir
                || was.drills_dir != now.drills_dir
                || was.rosters_dir != now.rosters_dir
        };
        let seen = if out.is_ok() && moved {
            fingerprint(&self.path, &self.current())
        } else {
            before
        };
        match self.seen.lock() {
            Ok(mut g) => *g = Some(seen),
            Err(p) => *p.into_inner() = Some(seen),
        }
        out
    }

    fn needs_restart(&self, new: &Loaded) -> Vec<String> {
        restart_needed(&self.started.config, &new.config)
    }
}

/// A setting read only at start-up: its name and how it reads.
type Setting = (&'static str, fn(&Config) -> String);

/// Every setting the daemon reads only when it starts: the listener and its
/// bounds, the HTTP layers, where the data and the audit key are. Anything
/// not here takes effect at the next reload.
pub const START_UP_ONLY: &[Setting] = &[
    ("listen", |c| c.listen.to_string()),
    ("data_dir", |c| c.data_dir.display().to_string()),
    ("tls", |c| {
        c.tls.as_ref().map_or("none".into(), |t| {
            format!("cert {}, key {}", t.cert.display(), t.key.display())
        })
    }),
    ("limits.body_bytes", |c| c.limits.body_bytes.to_string()),
    ("limits.request_timeout", |c| {
        crate::show::span(c.limits.request_timeout)
    }),
    ("limits.header_timeout", |c| {
        crate::show::span(c.limits.header_timeout)
    }),
    ("limits.connections", |c| c.limits.connections.to_string()),
    ("audit.key_file", |c| c.audit.key_file.display().to_string()),
];

/// The start-up-only settings that differ between the configuration the
/// daemon started with and a new one, each said the way an operator reads it.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    START_UP_ONLY
        .iter()
        .filter_map(|(name, read)| {
            let (was, now) = (read(old), read(new));
            (was != now).then(|| {
                format!("{name}: the file says {now}, the daemon keeps {was} until it is restarted")
            })
        })
        .collect()
}

/// A directory that held files and is gone (moved, unmounted, deleted) is
/// refused like a bad file: losing every roster at once would page everyone
/// with the role, and every playbook would open nothing, without a word. An
/// empty directory is how to drop them all.
fn vanished(was: &Loaded, now: &Loaded) -> Option<Diagnostics> {
    let mut d = Diagnostics::default();
    let c = &now.config;
    for (field, dir, held) in [
        ("playbooks_dir", &c.playbooks_dir, was.playbooks.len()),
        ("drills_dir", &c.drills_dir, was.drills.len()),
        ("rosters_dir", &c.rosters_dir, was.rosters.len()),
    ] {
        if held > 0 && !dir.is_dir() {
            d.file(
                &c.file.display().to_string(),
                format!(
                    "{field}: {} is gone (it held {held} file(s)); the previous set stays in force. To drop them all, leave the directory empty",
                    dir.display()
                ),
            );
        }
    }
    (!d.is_empty()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each start-up-only setting, changed alone in a copy of the test
    /// network's configuration, is reported by name (and nothing else is).
    #[test]
    fn every_start_up_only_setting_changed_on_its_own_is_reported_as_needing_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine");
        let base = std::fs::read_to_string(root.join("branchguard.yaml")).unwrap();
        std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        for f in ["cert.pem", "key.pem", "cert2.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let load = |text: &str| {
            let p = dir.path().join("branchguard.yaml");
            std::fs::write(&p, text).unwrap();
            config::load(&p).unwrap_or_else(|d| panic!("{d}\n{text}"))
        };
        let tls = "tls: { cert: cert.pem, key: key.pem }\n";
        let old = load(&format!("{base}{tls}"));
        let changes: &[(&str, String)] = &[
            (
                "listen",
                base.replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:9711") + tls,
            ),
            (
                "data_dir",
                base.replace("data_dir: ./data", "data_dir: ./data2") + tls,
            ),
            (
                "tls",
                format!("{base}tls: {{ cert: cert2.pem, key: key.pem }}\n"),
            ),
            (
                "limits.body_bytes",
                format!("{base}{tls}limits: {{ body_bytes: 2048 }}\n"),
            ),
            (
                "limits.request_timeout",
                format!("{base}{tls}limits: {{ request_timeout: 5s }}\n"),
            ),
            (
                "limits.header_timeout",
                format!("{base}{tls}limits: {{ header_timeout: 3s }}\n"),
            ),
            (
                "limits.connections",
                format!("{base}{tls}limits: {{ connections: 64 }}\n"),
            ),
            (
                "audit.key_file",
                format!("{base}{tls}audit: {{ key_file: other.key }}\n"),
            ),
        ];
        assert_eq!(
            changes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            START_UP_ONLY.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "a test per start-up-only setting"
        );
        for (name, text) in changes {
            let new = load(text);
            let said = restart_needed(&old.config, &new.config);
            // The audit key's default place is in the data directory.
            let also = usize::from(*name == "data_dir");
            assert_eq!(said.len(), 1 + also, "{name}: {said:?}");
            assert!(
                said[0].starts_with(&format!("{name}: the file says")),
                "{said:?}"
            );
        }
        // A live setting is not reported.
        let live = load(&format!("{base}{tls}limits: {{ denied_per_second: 9 }}\n"));
        assert!(restart_needed(&old.config, &live.config).is_empty());
    }
}
