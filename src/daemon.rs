//! The running daemon: wires the sources (HTTP intake), the engine thread and
//! the sinks (store, command runner) together.
//!
//! The engine runs on its own thread and owns the store's writer connection.
//! Requests queue on a channel; each turn of the loop takes everything queued
//! (up to `engine.max_batch` inputs), lets the engine decide, fires due timers,
//! writes the whole round in one transaction (group commit) and only then
//! answers the waiting requests.
//!
//! **Invariant:** no request is answered before what it caused is committed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::Loaded;
use crate::engine::{
    ActionError, CommandOutcome, CommandRequest, Engine, Ingested, Round, Verb, Who,
};
use crate::event::Event;
use crate::store::{SqliteStore, Store, StoreError};

/// What the engine thread is asked to do.
pub enum Input {
    Events {
        events: Vec<Event>,
        received_at: DateTime<Utc>,
        reply: oneshot::Sender<Result<Ingested, String>>,
    },
    Step {
        incident: i64,
        step: String,
        verb: Verb,
        by: Option<String>,
        note: Option<String>,
        reply: oneshot::Sender<Result<(), ActionError>>,
    },
    Resolve {
        incident: i64,
        by: String,
        reply: oneshot::Sender<Result<(), ActionError>>,
    },
    Escalate {
        incident: i64,
        by: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<(), ActionError>>,
    },
    CommandFinished {
        incident: i64,
        step: String,
        outcome: CommandOutcome,
    },
    Reload {
        loaded: Box<Loaded>,
    },
    /// Outcomes of delivery attempts from the notify worker.
    Delivered {
        attempts: Vec<crate::notify::Attempt>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A line for the audit log that changes no incident (a refused link, say).
    Note {
        incident: Option<i64>,
        what: String,
        by: String,
        detail: String,
    },
    Shutdown,
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Input>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Action(#[from] ActionError),
}

impl EngineHandle {
    pub fn send(&self, input: Input) -> Result<(), HandleError> {
        self.tx.send(input).map_err(|_| HandleError::Stopped)
    }

    pub async fn ingest(
        &self,
        events: Vec<Event>,
        received_at: DateTime<Utc>,
    ) -> Result<Ingested, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Events {
            events,
            received_at,
            reply,
        })?;
        rx.await
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Store)
    }

    pub async fn delivered(
        &self,
        attempts: Vec<crate::notify::Attempt>,
    ) -> Result<(), HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Delivered { attempts, reply })?;
        rx.await
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Store)
    }

    pub async fn act(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ActionError>>) -> Input,
    ) -> Result<(), HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }
}

/// The configuration in force, shared with the API.
pub struct Shared {
    pub loaded: RwLock<Loaded>,
    pub config_path: PathBuf,
    pub reader: Mutex<SqliteStore>,
    pub engine: EngineHandle,
    pub started_at: DateTime<Utc>,
    /// The outcome of the last reload, for `/api/v1/status`.
    pub last_reload: Mutex<serde_json::Value>,
    /// The key that signs one-click links.
    pub links: crate::notify::links::Secret,
}

type Reply = Box<dyn FnOnce(Result<(), &str>) + Send>;

struct EngineThread {
    engine: Engine,
    store: SqliteStore,
    rx: mpsc::Receiver<Input>,
    tx: mpsc::Sender<Input>,
    runtime: tokio::runtime::Handle,
    workdir: PathBuf,
    /// Wakes the delivery worker when new rows are in the outbox.
    wake: Arc<tokio::sync::Notify>,
}

impl EngineThread {
    fn run(mut self) {
        let mut stop = false;
        while !stop {
            let wait = self
                .engine
                .next_due()
                .map(|d| (d - clock::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            let first = match self.rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let max = self.engine.loaded().config.engine.max_batch;
            let mut inputs: Vec<Input> = first.into_iter().collect();
            let mut events = inputs.iter().map(input_weight).sum::<usize>();
            while events < max {
                match self.rx.try_recv() {
                    Ok(i) => {
                        events += input_weight(&i);
                        inputs.push(i);
                    }
                    Err(_) => break,
                }
            }
            let now = clock::now();
            let mut round = Round::default();
            let mut replies: Vec<Reply> = Vec::new();
            for input in inputs {
                if matches!(input, Input::Shutdown) {
                    stop = true;
                    continue;
                }
                self.handle(input, now, &mut round, &mut replies);
            }
            self.engine.tick(now, &mut round);
            self.engine.finish(&mut round);
            let started = clock::Stopwatch::start();
            let result = if round.is_empty() {
                Ok(())
            } else {
                self.store.commit(&round)
            };
            crate::metrics::get()
                .commit_seconds
                .observe(started.seconds());
            match result {
                Ok(()) => {
                    crate::metrics::record_round(&round);
                    if !round.outbox.is_empty() {
                        self.wake.notify_one();
                    }
                    if round.stats.open_set_changed {
                        crate::metrics::open_incidents(self.engine.live());
                    }
                    for r in replies {
                        r(Ok(()));
                    }
                    for c in std::mem::take(&mut round.commands) {
                        self.spawn_command(c);
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "could not store a round of work, nothing of it was answered: {e}"
                    );
                    let msg = format!("could not store: {e}");
                    for r in replies {
                        r(Err(&msg));
                    }
                    self.recover();
                }
            }
        }
        tracing::info!("engine stopped");
    }

    /// After a failed commit the in-memory state is ahead of the store: rebuild it.
    fn recover(&mut self) {
        match self.store.load_live() {
            Ok(live) => {
                let mut round = Round::default();
                self.engine = Engine::new(
                    self.engine.loaded().clone(),
                    live.incidents,
                    live.next_incident,
                    live.next_event,
                    clock::now(),
                    &mut round,
                );
            }
            Err(e) => tracing::error!("could not reload state after a failed commit: {e}"),
        }
    }

    fn handle(
        &mut self,
        input: Input,
        now: DateTime<Utc>,
        round: &mut Round,
        replies: &mut Vec<Reply>,
    ) {
        match input {
            Input::Events {
                events,
                received_at,
                reply,
            } => {
                failpoint(&events);
                let n = events.len();
                let out = self.engine.ingest(
                    events.into_iter().map(|e| (e, received_at)).collect(),
                    now,
                    round,
                );
                debug_assert_eq!(out.len(), n);
                replies.push(Box::new(move |r| {
                    let _ = reply.send(r.map(|()| out).map_err(str::to_string));
                }));
            }
            Input::Step {
                incident,
                step,
                verb,
                by,
                note,
                reply,
            } => {
                let r = self.engine.step_action(
                    incident,
                    &step,
                    verb,
                    Who::new(by.as_deref(), note.as_deref()),
                    now,
                    round,
                );
                replies.push(action_reply(reply, r));
            }
            Input::Resolve {
                incident,
                by,
                reply,
            } => {
                let r = self.engine.resolve(incident, &by, now, round);
                replies.push(action_reply(reply, r));
            }
            Input::Escalate {
                incident,
                by,
                note,
                reply,
            } => {
                let r = self
                    .engine
                    .escalate(incident, &by, note.as_deref(), now, round);
                replies.push(action_reply(reply, r));
            }
            Input::CommandFinished {
                incident,
                step,
                outcome,
            } => {
                self.engine
                    .command_finished(incident, &step, outcome, now, round);
            }
            Input::Reload { loaded } => self.engine.reload(*loaded),
            Input::Delivered { attempts, reply } => {
                for a in attempts {
                    record_attempt(&a, now, round);
                    round.deliveries.push(a.update);
                }
                replies.push(Box::new(move |r| {
                    let _ = reply.send(r.map_err(str::to_string));
                }));
            }
            Input::Note {
                incident,
                what,
                by,
                detail,
            } => {
                round.history.push(crate::engine::HistoryEntry {
                    incident,
                    at: now,
                    what,
                    by,
                    detail,
                });
            }
            Input::Shutdown => {}
        }
    }

    fn spawn_command(&self, c: CommandRequest) {
        let tx = self.tx.clone();
        let workdir = self.workdir.clone();
        self.runtime.spawn(async move {
            let outcome = run_command(&c, &workdir).await;
            let _ = tx.send(Input::CommandFinished {
                incident: c.incident,
                step: c.step,
                outcome,
            });
        });
    }
}

/// A delivery attempt as a history line, and as a count for the metrics.
fn record_attempt(a: &crate::notify::Attempt, now: DateTime<Utc>, round: &mut Round) {
    let u = &a.update;
    let to = if a.channel == "email" {
        format!("email to {} ({})", a.recipient, a.target)
    } else {
        format!("webhook to {}", a.target)
    };
    let (what, outcome, detail) = match (&u.delivered_at, &u.failed_at, &a.error) {
        (Some(_), _, _) => (
            "notification.delivered",
            "delivered",
            format!("{to}: delivered on attempt {}", u.attempts),
        ),
        (None, Some(_), e) => (
            "notification.failed",
            "failed",
            format!(
                "{to}: gave up after {} attempts: {}",
                u.attempts,
                e.as_deref().unwrap_or("unknown error")
            ),
        ),
        (None, None, e) => (
            "notification.retry",
            "retry",
            format!(
                "{to}: attempt {} failed: {}; next attempt at {}",
                u.attempts,
                e.as_deref().unwrap_or("unknown error"),
                u.next_attempt_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
        ),
    };
    round.stats.notifications.push((a.channel.clone(), outcome));
    round.history.push(crate::engine::HistoryEntry {
        incident: Some(a.incident),
        at: now,
        what: what.into(),
        by: "branchguard".into(),
        detail,
    });
}

/// Debug builds only: with `BRANCHGUARD_FAILPOINT=engine-panic`, an event of kind
/// `failpoint.panic` makes the engine thread panic, so tests can check that the
/// daemon then stops (to be restarted) instead of running on without timers.
fn failpoint(events: &[Event]) {
    if cfg!(debug_assertions)
        && events.iter().any(|e| e.kind == "failpoint.panic")
        && std::env::var("BRANCHGUARD_FAILPOINT").as_deref() == Ok("engine-panic")
    {
        panic!("failpoint: engine-panic");
    }
}

fn input_weight(i: &Input) -> usize {
    match i {
        Input::Events { events, .. } => events.len().max(1),
        _ => 1,
    }
}

fn action_reply(
    reply: oneshot::Sender<Result<(), ActionError>>,
    r: Result<(), ActionError>,
) -> Reply {
    Box::new(move |stored| {
        let out = match (stored, r) {
            (Ok(()), r) => r,
            (Err(msg), _) => Err(ActionError::Invalid(msg.to_string())),
        };
        let _ = reply.send(out);
    })
}

/// Runs a command step with its timeout; output is captured for the history.
async fn run_command(c: &CommandRequest, workdir: &Path) -> CommandOutcome {
    let Some((prog, args)) = c.argv.split_first() else {
        return CommandOutcome {
            exit_code: None,
            output: "empty command".into(),
        };
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(c.env.iter().cloned())
        .current_dir(workdir)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    match tokio::time::timeout(c.timeout, cmd.output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            CommandOutcome {
                exit_code: out.status.code(),
                output: text,
            }
        }
        Ok(Err(e)) => CommandOutcome {
            exit_code: None,
            output: format!("could not start `{prog}`: {e}"),
        },
        Err(_) => CommandOutcome {
            exit_code: None,
            output: format!("timed out after {}", crate::duration::short(c.timeout)),
        },
    }
}

/// Starts the engine thread on an opened store. Returns the handle and the thread.
pub fn start_engine(
    loaded: Loaded,
    mut store: SqliteStore,
    workdir: PathBuf,
    wake: Arc<tokio::sync::Notify>,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), StoreError> {
    let live = store.load_live()?;
    let mut round = Round::default();
    let now = clock::now();
    let engine = Engine::new(
        loaded,
        live.incidents,
        live.next_incident,
        live.next_event,
        now,
        &mut round,
    );
    let (tx, rx) = mpsc::channel();
    let handle = EngineHandle { tx: tx.clone() };
    let runtime = tokio::runtime::Handle::current();
    let mut thread = EngineThread {
        engine,
        store,
        rx,
        tx,
        runtime,
        workdir,
        wake,
    };
    if !round.history.is_empty() {
        thread.engine.finish(&mut round);
        thread.store.commit(&round)?;
        for c in std::mem::take(&mut round.commands) {
            thread.spawn_command(c);
        }
    }
    crate::metrics::open_incidents(thread.engine.live());
    let join = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || thread.run())
        .map_err(|source| StoreError::DataDir {
            path: "engine thread".into(),
            source,
        })?;
    Ok((handle, join))
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("link secret: {0}")]
    Secret(#[from] crate::notify::links::SecretError),
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the engine thread stopped unexpectedly")]
    EngineStopped,
}

/// Runs the daemon on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    loaded: Loaded,
    config_path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let data_dir = loaded.config.data_dir.clone();
    let store = SqliteStore::open(&data_dir)?;
    let reader = SqliteStore::open_read_only(&data_dir)?;
    let workdir = config_path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    crate::metrics::config_loaded(&loaded, true);
    let secret = crate::notify::links::Secret::load(&data_dir)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (engine, join) = start_engine(loaded.clone(), store, workdir, Arc::clone(&wake))?;
    let shared = Arc::new(Shared {
        loaded: RwLock::new(loaded),
        config_path,
        reader: Mutex::new(reader),
        engine: engine.clone(),
        started_at: clock::now(),
        last_reload: Mutex::new(
            serde_json::json!({ "at": clock::now(), "ok": true, "trigger": "start-up" }),
        ),
        links: secret.clone(),
    });
    let deliverer = crate::notify::Deliverer::new(
        Arc::clone(&shared),
        SqliteStore::open_read_only(&data_dir)?,
        secret,
        wake,
    )?;
    let delivery = tokio::spawn(deliverer.run(shutdown.clone()));
    #[cfg(unix)]
    {
        let s = Arc::clone(&shared);
        let token = shutdown.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = hup.recv() => {
                        let s = Arc::clone(&s);
                        let _ = tokio::task::spawn_blocking(move || reload(&s, "SIGHUP")).await;
                    }
                }
            }
        });
    }
    // The engine thread ends only when told to. If it ends otherwise (a bug made it
    // panic), no timer would fire again: stop the whole daemon so its supervisor
    // restarts it, and the restart resumes every timer from the store.
    let engine_ended = tokio::task::spawn_blocking(move || join.join());
    let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let token = shutdown.clone();
        let crashed = Arc::clone(&crashed);
        tokio::spawn(async move {
            let _ = engine_ended.await;
            if !token.is_cancelled() {
                tracing::error!(
                    "the engine thread stopped unexpectedly; shutting down so the daemon can be restarted"
                );
                crashed.store(true, std::sync::atomic::Ordering::SeqCst);
                token.cancel();
            }
        })
    };
    let app = crate::api::router(Arc::clone(&shared));
    tracing::info!("listening on {}", listener.local_addr()?);
    let token = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await?;
    shutdown.cancel();
    let _ = delivery.await;
    let _ = engine.send(Input::Shutdown);
    let _ = watch.await;
    if crashed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(DaemonError::EngineStopped);
    }
    Ok(())
}

/// The one reload path: start-up, SIGHUP and the API all call this.
pub fn reload(shared: &Shared, trigger: &str) -> Result<String, crate::diag::Diagnostics> {
    let result = crate::config::load(&shared.config_path);
    if let Ok(mut r) = shared.last_reload.lock() {
        *r = match &result {
            Ok(_) => serde_json::json!({ "at": clock::now(), "ok": true, "trigger": trigger }),
            Err(d) => {
                serde_json::json!({ "at": clock::now(), "ok": false, "trigger": trigger, "errors": d.0.iter().map(|x| x.to_string()).collect::<Vec<_>>() })
            }
        };
    }
    match &result {
        Ok(_) => tracing::info!("configuration reloaded ({trigger})"),
        Err(d) => tracing::error!(
            "configuration reload ({trigger}) refused; the previous set keeps running:\n{d}"
        ),
    }
    match result {
        Ok(loaded) => {
            let summary = loaded.summary();
            crate::metrics::config_loaded(&loaded, true);
            if let Ok(mut l) = shared.loaded.write() {
                *l = loaded.clone();
            }
            let _ = shared.engine.send(Input::Reload {
                loaded: Box::new(loaded),
            });
            Ok(summary)
        }
        Err(d) => {
            if let Ok(l) = shared.loaded.read() {
                crate::metrics::config_loaded(&l, false);
            }
            Err(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str], timeout_ms: u64) -> CommandRequest {
        CommandRequest {
            incident: 1,
            step: "s".into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("BRANCHGUARD_BRANCH".into(), "sh-001".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn commands_report_exit_output_timeout_and_start_failure() {
        let dir = std::env::temp_dir();
        let ok = run_command(
            &req(
                &["sh", "-c", "echo on $BRANCHGUARD_BRANCH; echo oops >&2"],
                10_000,
            ),
            &dir,
        )
        .await;
        assert_eq!(ok.exit_code, Some(0));
        assert!(
            ok.output.contains("on sh-001") && ok.output.contains("oops"),
            "{}",
            ok.output
        );
        let failed = run_command(&req(&["sh", "-c", "exit 3"], 10_000), &dir).await;
        assert_eq!(failed.exit_code, Some(3));
        let slow = run_command(&req(&["sleep", "5"], 100), &dir).await;
        assert_eq!(slow.exit_code, None);
        assert_eq!(slow.output, "timed out after 100ms");
        let missing = run_command(&req(&["/no/such/program"], 1000), &dir).await;
        assert_eq!(missing.exit_code, None);
        assert!(
            missing.output.contains("could not start"),
            "{}",
            missing.output
        );
    }
}
