//! The daemon's own host: CPU, memory and free disk per mount, sampled with
//! one kept `sysinfo` state (refreshed off the async threads). Every sample
//! feeds the metrics; with `host.branch` set, crossing a threshold for two
//! samples in a row sends `host.cpu_high`, `host.memory_high` or
//! `host.disk_low` (per mount) for that branch, and crossing back resolves it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sysinfo::{Disks, System};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::Loaded;
use crate::engine::EngineHandle;
use crate::event::{EventInput, Severity, Status};

/// Samples in a row that change a condition.
const IN_A_ROW: u32 = 2;

/// One sample of the host.
#[derive(Debug, Clone)]
pub struct Sample {
    pub cpu_ratio: f64,
    pub memory_used: u64,
    pub memory_total: u64,
    /// Mount point → (free bytes, total bytes).
    pub disks: BTreeMap<String, (u64, u64)>,
}

/// The host's CPU, memory and disks, sampled with sysinfo.
pub struct Sampler {
    sys: System,
    disks: Disks,
}

impl Sampler {
    fn new() -> Sampler {
        Sampler {
            sys: System::new(),
            disks: Disks::new_with_refreshed_list(),
        }
    }

    fn sample(&mut self, data_dir: &Path) -> Sample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        let mut sample = Sample {
            cpu_ratio: f64::from(self.sys.global_cpu_usage()) / 100.0,
            memory_used: self.sys.used_memory(),
            memory_total: self.sys.total_memory(),
            disks: self
                .disks
                .iter()
                .filter(|d| d.total_space() > 0)
                .map(|d| {
                    (
                        d.mount_point().display().to_string(),
                        (d.available_space(), d.total_space()),
                    )
                })
                .collect(),
        };
        // sysinfo skips file systems it does not recognise (overlay, some
        // virtual disks); the one that holds the database must never be
        // missing from the figures, so it is asked for directly.
        let dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        let covered = sample.disks.keys().any(|m| dir.starts_with(m));
        if !covered && let Ok(st) = nix::sys::statvfs::statvfs(&dir) {
            let frag = st.fragment_size();
            sample.disks.insert(
                dir.display().to_string(),
                (st.blocks_available() * frag, st.blocks() * frag),
            );
        }
        sample
    }
}

/// A condition over its threshold, with the run that may change it.
#[derive(Debug, Default)]
struct Condition {
    firing: bool,
    run: u32,
}

impl Condition {
    /// `Some(true)`: started; `Some(false)`: ended.
    fn observe(&mut self, over: bool) -> Option<bool> {
        if over == self.firing {
            self.run = 0;
            return None;
        }
        self.run += 1;
        if self.run >= IN_A_ROW {
            self.firing = over;
            self.run = 0;
            return Some(over);
        }
        None
    }
}

fn event(
    branch: &str,
    kind: &str,
    labels: &[(&str, String)],
    firing: bool,
    summary: String,
) -> EventInput {
    EventInput {
        kind: kind.to_string(),
        branch: branch.to_string(),
        severity: Some(Severity::Major),
        status: Some(if firing {
            Status::Firing
        } else {
            Status::Resolved
        }),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        summary: Some(summary),
        occurred_at: None,
        source: Some("host".into()),
    }
}

/// A sampler that has sampled the host once, its gauges set: called (off
/// the async threads) before the daemon says it listens, so the first
/// scrape has them.
pub fn first_sample(data_dir: &std::path::Path) -> Sampler {
    let mut s = Sampler::new();
    let sample = s.sample(data_dir);
    crate::metrics::host_sampled(
        sample.cpu_ratio,
        sample.memory_used,
        sample.disks.iter().map(|(m, (free, _))| (m, *free)),
    );
    s
}

pub async fn run(
    config: watch::Receiver<Arc<Loaded>>,
    engine: EngineHandle,
    sampler: Sampler,
    stop: CancellationToken,
) {
    let sampler = Arc::new(Mutex::new(sampler));
    let mut conditions: BTreeMap<String, Condition> = BTreeMap::new();
    loop {
        let loaded = Arc::clone(&config.borrow());
        let h = loaded.config.host.clone();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(h.interval.max(Duration::from_millis(100))) => {}
        }
        let s = Arc::clone(&sampler);
        let data_dir = loaded.config.data_dir.clone();
        let sample = match tokio::task::spawn_blocking(move || {
            s.lock().ok().map(|mut s| s.sample(&data_dir))
        })
        .await
        {
            Ok(Some(x)) => x,
            _ => continue,
        };
        crate::metrics::host_sampled(
            sample.cpu_ratio,
            sample.memory_used,
            sample.disks.iter().map(|(m, (free, _))| (m, *free)),
        );
        let Some(branch) = &h.branch else { continue };
        let mut events = Vec::new();
        let memory_ratio = sample.memory_used as f64 / (sample.memory_total.max(1)) as f64;
        let checks = [
            (
                "host.cpu_high".to_string(),
                sample.cpu_ratio > h.cpu_used_max_ratio,
                Vec::new(),
                format!(
                    "CPU {:.0}% (at most {:.0}%)",
                    sample.cpu_ratio * 100.0,
                    h.cpu_used_max_ratio * 100.0
                ),
            ),
            (
                "host.memory_high".to_string(),
                memory_ratio > h.memory_used_max_ratio,
                Vec::new(),
                format!(
                    "memory {:.0}% used (at most {:.0}%)",
                    memory_ratio * 100.0,
                    h.memory_used_max_ratio * 100.0
                ),
            ),
        ];
        let disks = sample.disks.iter().map(|(mount, (free, total))| {
            let ratio = *free as f64 / (*total).max(1) as f64;
            (
                format!("host.disk_low {mount}"),
                ratio < h.disk_free_min_ratio,
                vec![("mount", mount.clone())],
                format!(
                    "{mount}: {:.0}% free (at least {:.0}%)",
                    ratio * 100.0,
                    h.disk_free_min_ratio * 100.0
                ),
            )
        });
        for (key, over, labels, summary) in checks.into_iter().chain(disks) {
            if let Some(firing) = conditions.entry(key.clone()).or_default().observe(over) {
                let kind = key.split(' ').next().unwrap_or(&key);
                events.push(event(
                    branch,
                    kind,
                    &labels,
                    firing,
                    format!("the branchguard host: {summary}"),
                ));
            }
        }
        if events.is_empty() {
            continue;
        }
        if let Err(e) = super::intake(
            &engine,
            &loaded,
            events.into_iter().map(Ok).collect(),
            &super::Origin::engine("host"),
            clock::now(),
            |_, f| f,
        )
        .await
        {
            tracing::error!("host health: could not record: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_samples_in_a_row_start_and_end_a_condition() {
        let mut c = super::Condition::default();
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None, "not in a row");
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(false));
        let dir = tempfile::tempdir().unwrap();
        let s = super::Sampler::new().sample(dir.path());
        assert!(s.memory_total > 0 && s.memory_used > 0);
        // The data directory's file system is always measured.
        let real = dir.path().canonicalize().unwrap();
        assert!(s.disks.keys().any(|m| real.starts_with(m)), "{:?}", s.disks);
    }
}
