//! Probes of branch systems: `http` (status, optional body text, optional
//! value read from JSON), `tcp` (connect) and `command` (exit 0). Each target
//! is checked every `interval`, its first check spread over the interval by a
//! hash of its name, with a bounded number of checks in flight so thousands
//! of targets never starve the engine. A state changes only after `failures`
//! (or `successes`) consecutive results, so a flapping system opens nothing.
//! Changes become events through the one intake: `system.down` firing and
//! resolved, and for value probes the configured kind with the value and a
//! severity.
//!
//! **Invariant:** probe state is keyed by branch and system and survives a
//! reload that does not change that target's probe (no spurious down/up).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{Loaded, ProbeConfig, ValueProbe};
use crate::engine::EngineHandle;
use crate::event::{EventInput, Severity, Status};

/// At most this many checks at once, whatever the number of targets.
const IN_FLIGHT: usize = 256;

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Up { value: Option<f64> },
    Down(String),
}

/// The level a value probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Critical,
}

/// A target's state, with the run of results that may change it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    pub down: bool,
    fails: u32,
    oks: u32,
    pub level: Level,
    /// The level the latest results point at, and how many in a row.
    pending: (Level, u32),
    /// The latest check: when, and whether it answered (for the dashboard).
    pub checked_at: Option<DateTime<Utc>>,
    pub last_up: Option<bool>,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState {
            down: false,
            fails: 0,
            oks: 0,
            level: Level::Ok,
            pending: (Level::Ok, 0),
            checked_at: None,
            last_up: None,
        }
    }
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    WentDown(String),
    CameBack,
    Level { level: Level, value: f64 },
}

pub fn level_of(v: &ValueProbe, value: f64) -> Level {
    if v.critical.is_some_and(|c| value >= c) {
        Level::Critical
    } else if v.warn.is_some_and(|w| value >= w) {
        Level::Warn
    } else {
        Level::Ok
    }
}

impl ProbeState {
    /// Takes one result; returns the changes it completes. Rising to a worse
    /// level takes `failures` results in a row, falling back `successes`.
    pub fn observe(&mut self, p: &ProbeConfig, outcome: &Outcome) -> Vec<Change> {
        let mut out = Vec::new();
        match outcome {
            Outcome::Down(why) => {
                self.oks = 0;
                self.fails += 1;
                if !self.down && self.fails >= p.failures {
                    self.down = true;
                    out.push(Change::WentDown(why.clone()));
                }
            }
            Outcome::Up { value } => {
                self.fails = 0;
                self.oks += 1;
                if self.down && self.oks >= p.successes {
                    self.down = false;
                    out.push(Change::CameBack);
                }
                if let (Some(v), Some(value)) = (&p.value, value) {
                    let l = level_of(v, *value);
                    self.pending = if self.pending.0 == l {
                        (l, self.pending.1 + 1)
                    } else {
                        (l, 1)
                    };
                    let needed = if l > self.level {
                        p.failures
                    } else {
                        p.successes
                    };
                    if l != self.level && self.pending.1 >= needed {
                        self.level = l;
                        out.push(Change::Level {
                            level: l,
                            value: *value,
                        });
                    }
                }
            }
        }
        out
    }
}

/// Reads a number at a dotted path of a JSON document.
pub fn read_value(body: &str, path: &[String]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let mut at = &v;
    for p in path {
        at = at
            .get(p)
            .ok_or_else(|| format!("no field `{}` in the body", path.join(".")))?;
    }
    at.as_f64()
        .or_else(|| at.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| format!("`{}` is not a number: {at}", path.join(".")))
}

async fn check(p: &ProbeConfig, http: &reqwest::Client, workdir: &PathBuf) -> Outcome {
    if let Some(url) = &p.http {
        let r = match http.get(url).timeout(p.timeout).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Down(format!("{url}: {}", crate::diag::with_causes(&e))),
        };
        let status = r.status();
        let ok = match p.expect_status {
            Some(s) => status.as_u16() == s,
            None => status.is_success(),
        };
        if !ok {
            return Outcome::Down(format!("{url} answered {status}"));
        }
        if p.expect_body.is_none() && p.value.is_none() {
            return Outcome::Up { value: None };
        }
        let body = match r.text().await {
            Ok(b) => b,
            Err(e) => return Outcome::Down(format!("{url}: {}", crate::diag::with_causes(&e))),
        };
        if let Some(want) = &p.expect_body
            && !body.contains(want.as_str())
        {
            return Outcome::Down(format!("{url}: the body does not contain `{want}`"));
        }
        return match &p.value {
            None => Outcome::Up { value: None },
            Some(v) => match read_value(&body, &v.path) {
                Ok(x) => Outcome::Up { value: Some(x) },
                Err(e) => Outcome::Down(format!("{url}: {e}")),
            },
        };
    }
    if let Some(addr) = &p.tcp {
        return match tokio::time::timeout(p.timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Outcome::Up { value: None },
            Ok(Err(e)) => Outcome::Down(format!("{addr}: {e}")),
            Err(_) => Outcome::Down(format!(
                "{addr}: no answer within {}",
                crate::duration::short(p.timeout)
            )),
        };
    }
    if let Some(argv) = &p.command {
        let Some((prog, args)) = argv.split_first() else {
            return Outcome::Down("empty command".into());
        };
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .current_dir(workdir)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        return match tokio::time::timeout(p.timeout, cmd.output()).await {
            Ok(Ok(o)) if o.status.success() => Outcome::Up { value: None },
            Ok(Ok(o)) => Outcome::Down(format!(
                "`{prog}` exited with {}: {}",
                o.status.code().map_or("a signal".into(), |c| c.to_string()),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(Err(e)) => Outcome::Down(format!("cannot start `{prog}`: {e}")),
            Err(_) => Outcome::Down(format!(
                "`{prog}` did not finish within {}",
                crate::duration::short(p.timeout)
            )),
        };
    }
    Outcome::Down("no probe".into())
}

/// The event a change becomes.
fn event(branch: &str, system: &str, p: &ProbeConfig, change: &Change) -> EventInput {
    let mut labels = std::collections::BTreeMap::from([("system".to_string(), system.to_string())]);
    let (kind, severity, status, summary) = match change {
        Change::WentDown(why) => {
            labels.insert("error".into(), why.chars().take(200).collect());
            (
                "system.down".to_string(),
                Severity::Critical,
                Status::Firing,
                format!("{system} at {branch} is down: {why}"),
            )
        }
        Change::CameBack => (
            "system.down".to_string(),
            Severity::Critical,
            Status::Resolved,
            format!("{system} at {branch} is back"),
        ),
        Change::Level { level, value } => {
            let v = p.value.as_ref();
            labels.insert("value".into(), value.to_string());
            let kind = v.map_or("value.high".to_string(), |v| v.kind.clone());
            let (severity, status) = match level {
                Level::Critical => (Severity::Critical, Status::Firing),
                Level::Warn => (Severity::Major, Status::Firing),
                Level::Ok => (Severity::Info, Status::Resolved),
            };
            (
                kind,
                severity,
                status,
                format!(
                    "{system} at {branch}: {} = {value}",
                    v.map_or(String::new(), |v| v.path.join("."))
                ),
            )
        }
    };
    EventInput {
        kind,
        branch: branch.to_string(),
        severity: Some(severity),
        status: Some(status),
        labels,
        summary: Some(summary),
        occurred_at: None,
        source: Some("probe".into()),
    }
}

type Key = (String, String);

/// Every probed target's state by (branch, system), shared with the
/// dashboard, which only reads it.
pub type ProbeBoard = Arc<Mutex<HashMap<Key, ProbeState>>>;

struct Running {
    probe: ProbeConfig,
    task: JoinHandle<()>,
}

/// Keeps one task per probed system, following every configuration publish.
pub async fn run(
    mut config: watch::Receiver<Arc<Loaded>>,
    engine: EngineHandle,
    workdir: PathBuf,
    states: ProbeBoard,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let http = reqwest::Client::new();
    let mut running: HashMap<Key, Running> = HashMap::new();
    loop {
        let loaded = Arc::clone(&config.borrow_and_update());
        let mut wanted: HashMap<Key, ProbeConfig> = HashMap::new();
        for b in loaded.config.branches.values() {
            for s in &b.systems {
                if let Some(p) = &s.probe {
                    wanted.insert((b.id.clone(), s.name.clone()), p.clone());
                }
            }
        }
        // Unchanged targets keep their task and state; others start again.
        running.retain(|k, r| {
            let keep = wanted.get(k) == Some(&r.probe);
            if !keep {
                r.task.abort();
            }
            keep
        });
        if let Ok(mut st) = states.lock() {
            st.retain(|k, _| wanted.contains_key(k));
        }
        for (key, probe) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(target(
                key.clone(),
                probe.clone(),
                Arc::clone(&states),
                Arc::clone(&slots),
                http.clone(),
                engine.clone(),
                config.clone(),
                workdir.clone(),
            ));
            running.insert(key, Running { probe, task });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            r = config.changed() => if r.is_err() { break },
        }
    }
    for r in running.values() {
        r.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn target(
    key: Key,
    p: ProbeConfig,
    states: ProbeBoard,
    slots: Arc<Semaphore>,
    http: reqwest::Client,
    engine: EngineHandle,
    config: watch::Receiver<Arc<Loaded>>,
    workdir: PathBuf,
) {
    // Spread first checks over the interval, the same way on every start.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let interval = p.interval.max(Duration::from_millis(10));
    let offset = Duration::from_millis(h.finish() % (interval.as_millis() as u64).max(1));
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            let watch = clock::Stopwatch::start();
            let o = check(&p, &http, &workdir).await;
            let region = config
                .borrow()
                .config
                .branches
                .get(&key.0)
                .and_then(|b| b.region.clone())
                .unwrap_or_else(|| "none".into());
            crate::metrics::probe_checked(
                &key.0,
                &key.1,
                &region,
                watch.seconds(),
                matches!(o, Outcome::Up { .. }),
            );
            o
        };
        let changes = match states.lock() {
            Ok(mut st) => {
                let state = st.entry(key.clone()).or_default();
                state.checked_at = Some(clock::now());
                state.last_up = Some(matches!(outcome, Outcome::Up { .. }));
                state.observe(&p, &outcome)
            }
            Err(_) => Vec::new(),
        };
        for c in changes {
            let input = event(&key.0, &key.1, &p, &c);
            let loaded = Arc::clone(&config.borrow());
            let result = super::intake(
                &engine,
                &loaded,
                vec![Ok(input)],
                &super::Origin::engine("probe"),
                clock::now(),
                |_, f| f,
            )
            .await;
            match result {
                Ok(_) => tracing::info!("probe {} at {}: {c:?}", key.1, key.0),
                Err(e) => {
                    tracing::error!("probe {} at {}: could not record {c:?}: {e}", key.1, key.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(value: Option<ValueProbe>) -> ProbeConfig {
        ProbeConfig {
            http: Some("http://x".into()),
            tcp: None,
            command: None,
            expect_status: None,
            expect_body: None,
            value,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 3,
            successes: 2,
        }
    }

    #[test]
    fn it_takes_n_in_a_row_so_flapping_changes_nothing() {
        let p = probe(None);
        let mut s = ProbeState::default();
        let down = Outcome::Down("x".into());
        let up = Outcome::Up { value: None };
        for _ in 0..10 {
            assert!(s.observe(&p, &down).is_empty());
            assert!(s.observe(&p, &up).is_empty());
        }
        assert!(s.observe(&p, &down).is_empty());
        assert!(s.observe(&p, &down).is_empty());
        assert_eq!(s.observe(&p, &down), vec![Change::WentDown("x".into())]);
        assert!(s.observe(&p, &down).is_empty(), "once");
        assert!(s.observe(&p, &up).is_empty());
        assert_eq!(s.observe(&p, &up), vec![Change::CameBack]);
    }

    #[test]
    fn a_value_rises_and_falls_through_its_levels() {
        let p = probe(Some(ValueProbe {
            path: vec!["wait".into()],
            warn: Some(10.0),
            critical: Some(15.0),
            kind: "queue.wait".into(),
        }));
        let mut s = ProbeState::default();
        let at = |v: f64| Outcome::Up { value: Some(v) };
        assert!(s.observe(&p, &at(20.0)).is_empty());
        assert!(s.observe(&p, &at(20.0)).is_empty());
        assert_eq!(
            s.observe(&p, &at(21.0)),
            vec![Change::Level {
                level: Level::Critical,
                value: 21.0
            }]
        );
        assert!(s.observe(&p, &at(5.0)).is_empty());
        assert_eq!(
            s.observe(&p, &at(4.0)),
            vec![Change::Level {
                level: Level::Ok,
                value: 4.0
            }]
        );
        assert_eq!(
            read_value(
                r#"{"queue":{"wait":"17.5"}}"#,
                &["queue".into(), "wait".into()]
            ),
            Ok(17.5)
        );
        assert!(read_value(r#"{"queue":{}}"#, &["queue".into(), "wait".into()]).is_err());
    }
}
