//! The engine loop: one thread owns the engine and the store's writer. Each
//! turn takes everything queued on the handle's channel (up to
//! `engine.max_batch` events), lets the engine decide, fires due timers, writes
//! the whole round in one transaction (group commit) and only then answers.
//! A turn that mixes small inputs with bulk runs the small ones as a round of
//! their own first (see `priority`).
//!
//! **Invariant:** no input is answered before what it caused is committed; an
//! input whose round could not be stored is answered with the store's error and
//! the engine's memory is rebuilt from the store, so nothing half-done remains.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock;
use crate::config::Loaded;
use crate::engine::handle::Queue;
use crate::engine::handle::{HandleError, Input, StoreFault};
use crate::engine::{Engine, EngineHandle, Round};
use crate::event::Event;
use crate::store::{Committed, StoreError, StoreHealth, Writer};

use super::commands::CommandRunner;

/// How often a failing store is tried again when nobody is asking.
const RETRY: Duration = Duration::from_secs(1);

type Reply = Box<dyn FnOnce(Result<(), &StoreFault>) + Send>;

pub struct EngineLoop {
    engine: Engine,
    store: Box<dyn Writer>,
    rx: mpsc::Receiver<Input>,
    commands: CommandRunner,
    /// Wakes the delivery worker when new rows are in the outbox.
    wake: Arc<crate::notify::Wake>,
    health: Arc<StoreHealth>,
    /// Counts committed rounds; the dashboard's live feed follows it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The engine's memory is ahead of the store (a commit failed and the
    /// rebuild from the store failed too): rebuild before deciding anything.
    stale: bool,
    /// Inputs without a reply (command results) of a round that was not stored:
    /// handled again next round instead of being lost.
    carry: Vec<Input>,
    /// The bound on waiting events: released as they are taken off the channel.
    queue: Queue,
    /// The audit chain's head after the last commit, for whoever publishes it.
    head: Arc<crate::store::AuditHead>,
}

/// What [`start`] hands back: the door, the thread, and the command runner
/// (whose running commands are killed when the daemon stops).
pub struct Started {
    pub handle: EngineHandle,
    pub join: std::thread::JoinHandle<()>,
    pub commands: CommandRunner,
}

/// Builds the engine from the store and starts its thread.
// Wiring: each argument is one shared part the loop is handed.
#[allow(clippy::too_many_arguments)]
pub fn start(
    loaded: Arc<Loaded>,
    mut store: Box<dyn Writer>,
    workdir: PathBuf,
    wake: Arc<crate::notify::Wake>,
    health: Arc<StoreHealth>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    head: Arc<crate::store::AuditHead>,
    channel: (EngineHandle, mpsc::Receiver<Input>, Queue),
) -> Result<Started, StoreError> {
    let now = clock::now();
    let live = store.load_live(now)?;
    let mut round = Round::default();
    let mut engine = Engine::new(
        (*loaded).clone(),
        live.incidents,
        live.next_incident,
        live.next_event,
        now,
    );
    engine.restart_commands(now, &mut round);
    engine.restore_silences(live.silences);
    engine.restore_drills(live.drills, now, &mut round);
    engine.restore_reviews(live.reviews);
    let (handle, rx, queue) = channel;
    let commands = CommandRunner::new(tokio::runtime::Handle::current(), handle.clone(), workdir);
    let mut this = EngineLoop {
        engine,
        store,
        rx,
        commands: commands.clone(),
        wake,
        health,
        changes,
        stale: false,
        carry: Vec::new(),
        queue,
        head: Arc::clone(&head),
    };
    if !round.is_empty() || !round.history.is_empty() {
        this.engine.finish(now, &mut round);
        let committed = this.store.commit(&round)?;
        if let Some(h) = committed.head {
            this.head.set(h);
        }
        for c in std::mem::take(&mut round.commands) {
            this.commands.spawn(c);
        }
    }
    this.publish_open();
    let join = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || this.run())
        .map_err(|source| StoreError::DataDir {
            path: "engine thread".into(),
            source,
        })?;
    Ok(Started {
        handle,
        join,
        commands,
    })
}

impl EngineLoop {
    fn run(mut self) {
        let mut stop = false;
        while !stop {
            let failing = self.health.failing().is_some();
            let mut wait = self
                .engine
                .next_due()
                .map(|d| (d - clock::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            if failing || self.stale {
                // Timers wait for the store, which is tried again every RETRY
                // (a due timer cannot be stored before that anyway); inputs
                // are still answered at once. Waiting for the next timer
                // instead left the daemon unhealthy, and its memory stale,
                // for as long as nothing came in.
                wait = RETRY;
            }
            let mut inputs: Vec<Input> = std::mem::take(&mut self.carry);
            if inputs.is_empty() {
                match self.rx.recv_timeout(wait) {
                    Ok(i) => {
                        self.taken(&i);
                        inputs.push(i);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let max = self.engine.loaded().config.engine.max_batch;
            let mut weight = inputs.iter().map(Input::weight).sum::<usize>();
            while weight < max {
                match self.rx.try_recv() {
                    Ok(i) => {
                        weight += i.weight();
                        self.taken(&i);
                        inputs.push(i);
                    }
                    Err(_) => break,
                }
            }
            let loaded = self.engine.loaded();
            let by_branch = || {
                loaded
                    .playbooks
                    .iter()
                    .all(|p| p.group_by.iter().any(|f| f == "branch"))
            };
            for part in super::priority::rounds(inputs, by_branch) {
                let now = clock::now();
                let failing = self.health.failing().is_some();
                if (failing || self.stale) && !self.store_usable(now) {
                    stop |= self.refuse(part);
                    continue;
                }
                stop |= self.turn(part, now);
            }
            self.publish_open();
        }
        tracing::info!("engine stopped");
    }

    /// An input is off the channel: its events no longer count as waiting.
    fn taken(&self, input: &Input) {
        if let Input::Events { .. } = input {
            self.queue.release(input.weight());
        }
    }

    /// A new configuration: the engine takes it, and the queue its bound.
    fn reload(&mut self, loaded: Arc<Loaded>) {
        self.queue.set_capacity(loaded.config.engine.queue);
        self.engine.reload((*loaded).clone(), clock::now());
    }

    /// Whether the store takes writes again (rebuilding the engine if it is stale).
    fn store_usable(&mut self, now: DateTime<Utc>) -> bool {
        let result = self.store.check().and_then(|()| {
            if self.stale {
                self.rebuild()?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.health.ok();
                true
            }
            Err(e) => {
                self.health.failed(now, e.to_string());
                false
            }
        }
    }

    /// Answers every input with the store's fault, deciding nothing.
    fn refuse(&mut self, inputs: Vec<Input>) -> bool {
        let fault: StoreFault = Arc::new(StoreError::Backend(
            self.health
                .failing()
                .map_or_else(|| "the store is failing".to_string(), |(_, why)| why)
                .into(),
        ));
        let mut stop = false;
        for input in inputs {
            match input {
                Input::Shutdown => stop = true,
                Input::Reload { loaded } => self.reload(loaded),
                Input::CommandFinished { .. } => self.carry.push(input),
                Input::Events { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::Review { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::Step { reply, .. }
                | Input::ReviewActionDone { reply, .. }
                | Input::Resolve { reply, .. }
                | Input::Escalate { reply, .. }
                | Input::AbortDrill { reply, .. }
                | Input::Delivered { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::RunDrill { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::AddSilence { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::ExpireSilence { reply, .. } => {
                    let _ = reply.send(Err(HandleError::Store(Arc::clone(&fault))));
                }
                Input::LinkRefused { .. } | Input::AuthDenied { .. } => {}
            }
        }
        stop
    }

    /// One round: decide, fire timers, commit, answer. Returns whether to stop.
    fn turn(&mut self, inputs: Vec<Input>, now: DateTime<Utc>) -> bool {
        let mut stop = false;
        let mut round = Round::default();
        let mut replies: Vec<Reply> = Vec::new();
        let mut commands_reported = Vec::new();
        for input in inputs {
            match input {
                Input::Shutdown => stop = true,
                Input::CommandFinished {
                    incident,
                    step,
                    outcome,
                } => {
                    self.engine
                        .command_finished(incident, &step, outcome.clone(), now, &mut round);
                    commands_reported.push(Input::CommandFinished {
                        incident,
                        step,
                        outcome,
                    });
                }
                other => self.handle(other, now, &mut round, &mut replies),
            }
        }
        self.engine.tick(now, &mut round);
        self.engine.finish(now, &mut round);
        let started = clock::Stopwatch::start();
        let result = if round.is_empty() {
            Ok(Committed::default())
        } else {
            self.store.commit(&round)
        };
        crate::metrics::commit_took(started.seconds());
        match result {
            Ok(committed) => {
                self.health.ok();
                self.published(&mut round, &committed);
                for r in replies {
                    r(Ok(()));
                }
                for c in std::mem::take(&mut round.commands) {
                    self.commands.spawn(c);
                }
            }
            Err(e) => {
                tracing::error!("could not store a round of work, nothing of it was answered: {e}");
                self.health.failed(now, e.to_string());
                let fault: StoreFault = Arc::new(e);
                for r in replies {
                    r(Err(&fault));
                }
                self.carry.extend(commands_reported);
                self.stale = true;
                if self.rebuild().is_ok() {
                    self.stale = false;
                }
            }
        }
        stop
    }

    /// After a failed commit the engine's memory is ahead of the store: rebuild it.
    fn rebuild(&mut self) -> Result<(), StoreError> {
        let now = clock::now();
        let live = self.store.load_live(now)?;
        let mut round = Round::default();
        self.engine = Engine::new(
            self.engine.loaded().clone(),
            live.incidents,
            live.next_incident,
            live.next_event,
            now,
        );
        self.engine.restore_silences(live.silences);
        self.engine.restore_drills(live.drills, now, &mut round);
        self.engine.restore_reviews(live.reviews);
        // What restoring decided (a drill run whose time ran out while the
        // store failed, a scheduled drill it missed) is stored like any round:
        // dropped, the engine would hold it and the store never would. The
        // store's fault did not stop running commands, so none starts again
        // (the engine restarts them only when asked, at start-up).
        if !round.is_empty() {
            self.engine.finish(now, &mut round);
            let committed = self.store.commit(&round)?;
            self.published(&mut round, &committed);
        }
        self.stale = false;
        Ok(())
    }

    /// The open-incident gauge, when the engine's counts changed.
    fn publish_open(&mut self) {
        let (counts, changed) = self.engine.open_counts();
        if changed {
            crate::metrics::open_incidents(counts.counts());
        }
    }

    /// What follows a stored round: its metrics, the live views of a change,
    /// the delivery worker given its messages (moved, not copied: they are
    /// stored, and the round has no more use for them).
    fn published(&mut self, round: &mut Round, committed: &Committed) {
        crate::metrics::record_round(round);
        if let Some(h) = &committed.head {
            self.head.set(h.clone());
        }
        if !round.is_empty() {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        if !round.outbox.is_empty() || !round.withdraw.is_empty() {
            let withdrew = !round.withdraw.is_empty();
            let rows = std::mem::take(&mut round.outbox);
            self.wake.committed(rows, &committed.outbox, withdrew);
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
                refused,
                received_at,
                via,
                reply,
            } => {
                failpoint(&events);
                let ingested = self.engine.ingest(
                    events.into_iter().map(|e| (e, received_at)).collect(),
                    &via,
                    now,
                    round,
                );
                let out = (
                    ingested,
                    self.engine.refused(refused, received_at, &via, round),
                );
                replies.push(Box::new(move |r| {
                    let _ = reply.send(
                        r.map(|()| out)
                            .map_err(|f| HandleError::Store(Arc::clone(f))),
                    );
                }));
            }
            Input::Step {
                incident,
                step,
                verb,
                actor,
                reply,
            } => {
                let r = self
                    .engine
                    .step_action(incident, &step, verb, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::Resolve {
                incident,
                actor,
                reply,
            } => {
                let r = self.engine.resolve(incident, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::Review {
                incident,
                prior,
                spec,
                actor,
                reply,
            } => {
                let r = self
                    .engine
                    .review(*incident, prior, spec, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::ReviewActionDone {
                incident,
                n,
                actor,
                reply,
            } => {
                let r = self
                    .engine
                    .review_action_done(incident, n, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::Escalate {
                incident,
                actor,
                reply,
            } => {
                let r = self.engine.escalate(incident, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::Reload { loaded } => self.reload(loaded),
            Input::RunDrill {
                drill,
                branch,
                scope,
                actor,
                reply,
            } => {
                let r = self.engine.run_drill(
                    &drill,
                    branch.as_deref(),
                    &scope,
                    actor.who(),
                    now,
                    round,
                );
                replies.push(Box::new(move |stored| {
                    let out = match stored {
                        Ok(()) => r.map_err(HandleError::from),
                        Err(f) => Err(HandleError::Store(Arc::clone(f))),
                    };
                    let _ = reply.send(out);
                }));
            }
            Input::AddSilence { spec, reply } => {
                let r = self.engine.add_silence(spec, now, round);
                replies.push(Box::new(move |stored| {
                    let out = match stored {
                        Ok(()) => r.map_err(HandleError::from),
                        Err(f) => Err(HandleError::Store(Arc::clone(f))),
                    };
                    let _ = reply.send(out);
                }));
            }
            Input::ExpireSilence { id, actor, reply } => {
                let r = self.engine.expire_silence(id, actor.who(), now, round);
                replies.push(answer(reply, r));
            }
            Input::AbortDrill { run, actor, reply } => {
                let r = self.engine.abort_drill(run, actor.who(), now, round);
                replies.push(Box::new(move |stored| {
                    let out = match stored {
                        Ok(()) => r.map_err(HandleError::from),
                        Err(f) => Err(HandleError::Store(Arc::clone(f))),
                    };
                    let _ = reply.send(out);
                }));
            }
            Input::Delivered { attempts, reply } => {
                self.engine.delivered(attempts, now, round);
                replies.push(answer(reply, Ok(())));
            }
            Input::LinkRefused { incident, detail } => {
                self.engine.link_refused(incident, detail, now, round);
            }
            Input::AuthDenied { detail } => self.engine.auth_denied(detail, now, round),
            // Handled by the caller.
            Input::CommandFinished { .. } | Input::Shutdown => {}
        }
    }
}

/// The answer to an action: the engine's verdict once stored, or the store's fault.
fn answer<T: Send + 'static>(
    reply: crate::engine::handle::Reply<T>,
    verdict: Result<T, crate::engine::ActionError>,
) -> Reply {
    Box::new(move |stored| {
        let out = match stored {
            Ok(()) => verdict.map_err(HandleError::from),
            Err(f) => Err(HandleError::Store(Arc::clone(f))),
        };
        let _ = reply.send(out);
    })
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
