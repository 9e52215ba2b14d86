//! The one door into the engine. Every source (through `sources::intake`:
//! HTTP intake, Alertmanager, the spool, probes, host health), the HTTP layer's
//! people's actions, the command runner and the delivery worker talk to the
//! engine only by sending an [`Input`] through an [`EngineHandle`]; the engine
//! loop answers each after the round it caused is committed.
//!
//! **Invariant:** nothing outside the engine loop changes engine state (only
//! it builds an `Engine`: `tests/architecture.rs`); an input is answered only
//! after what it caused is stored, or with the store's error (`tests/daemon.rs`,
//! a store that fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{
    ActionError, Attempt, CommandOutcome, DrillError, Ingested, RefusedEvent, SilenceSpec, Verb,
    Who,
};
use crate::config::Loaded;
use crate::event::Event;

/// A store failure as the engine loop reports it to whoever waits: the
/// backend's own error, shared by every input of the failed round.
pub type StoreFault = Arc<dyn std::error::Error + Send + Sync>;

/// The answer to one input.
pub type Reply<T> = oneshot::Sender<Result<T, HandleError>>;

/// Who asks, as the HTTP layer established it: the person recorded as
/// `by`, the way they came (`via`), their note, and the one-click link used.
#[derive(Debug, Clone)]
pub struct Actor {
    pub by: String,
    pub via: String,
    pub note: Option<String>,
    pub link: Option<String>,
}

impl Actor {
    pub fn new(by: impl Into<String>, via: impl Into<String>) -> Actor {
        Actor {
            by: by.into(),
            via: via.into(),
            note: None,
            link: None,
        }
    }

    pub fn with_note(mut self, note: Option<String>) -> Actor {
        self.note = note;
        self
    }

    pub fn who(&self) -> Who<'_> {
        Who {
            by: Some(&self.by),
            via: &self.via,
            note: self.note.as_deref(),
            link: self.link.as_deref(),
        }
    }
}

/// What the engine loop is asked to do.
pub enum Input {
    Events {
        events: Vec<Event>,
        /// Refused by the source but kept visible (Alertmanager's bad alerts).
        refused: Vec<RefusedEvent>,
        received_at: DateTime<Utc>,
        /// The token's name (`local`, `engine` for the daemon's own sources).
        via: String,
        reply: Reply<(Ingested, Vec<i64>)>,
    },
    Step {
        incident: i64,
        step: String,
        verb: Verb,
        actor: Actor,
        reply: Reply<()>,
    },
    Resolve {
        incident: i64,
        actor: Actor,
        reply: Reply<()>,
    },
    Escalate {
        incident: i64,
        actor: Actor,
        reply: Reply<()>,
    },
    /// Record a post-incident review (the incident as stored, and the
    /// reviews and actions its history holds).
    Review {
        incident: Box<crate::engine::Incident>,
        prior: (u32, u32),
        spec: crate::engine::ReviewSpec,
        actor: Actor,
        reply: Reply<(u32, Vec<u32>)>,
    },
    /// Mark a review action done.
    ReviewActionDone {
        incident: i64,
        n: u32,
        actor: Actor,
        reply: Reply<()>,
    },
    CommandFinished {
        incident: i64,
        step: String,
        outcome: CommandOutcome,
    },
    /// Start a drill now (one branch, or all of its branches within scope).
    RunDrill {
        drill: String,
        branch: Option<String>,
        scope: crate::scope::Scope,
        actor: Actor,
        reply: Reply<(i64, Vec<i64>)>,
    },
    /// Stop a drill run by hand.
    AbortDrill {
        run: i64,
        actor: Actor,
        reply: Reply<()>,
    },
    /// Create a silence.
    AddSilence {
        spec: SilenceSpec,
        reply: Reply<i64>,
    },
    /// End a silence now.
    ExpireSilence {
        id: i64,
        actor: Actor,
        reply: Reply<()>,
    },
    /// A newly published configuration.
    Reload {
        loaded: Arc<Loaded>,
    },
    /// Outcomes of delivery attempts from the delivery worker.
    Delivered {
        attempts: Vec<Attempt>,
        reply: Reply<()>,
    },
    /// A request was refused by access control: audited.
    AuthDenied {
        detail: String,
    },
    /// A one-click link was refused (forged, expired, already used): audited.
    LinkRefused {
        incident: Option<i64>,
        detail: String,
    },
    Shutdown,
}

impl Input {
    /// How much work an input is, for bounding a round.
    pub fn weight(&self) -> usize {
        match self {
            Input::Events {
                events, refused, ..
            } => (events.len() + refused.len()).max(1),
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HandleError {
    #[error("the engine has stopped")]
    Stopped,
    /// Too many events wait for the engine: try again shortly (503 with
    /// `Retry-After`); nothing of the request was stored.
    #[error(
        "{waiting} events are waiting to be stored (engine.queue is {capacity}): try again in a second"
    )]
    Busy { waiting: usize, capacity: usize },
    /// Our own fault: the round could not be stored, so nothing of it happened.
    #[error("could not store: {0}")]
    Store(StoreFault),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Drill(#[from] DrillError),
}

/// The bound on events waiting for the engine. People's actions and the
/// daemon's own inputs (delivery outcomes, command results) are bounded by
/// their producers and never refused; events from outside are, once this
/// many wait, so a flood is answered 503 rather than held in memory.
#[derive(Debug, Clone)]
pub struct Queue {
    waiting: Arc<AtomicUsize>,
    capacity: Arc<AtomicUsize>,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            waiting: Arc::new(AtomicUsize::new(0)),
            capacity: Arc::new(AtomicUsize::new(capacity.max(1))),
        }
    }

    /// Counts `weight` events as waiting, or refuses them. One batch is
    /// always taken into an empty queue, however large.
    fn take(&self, weight: usize) -> Result<(), HandleError> {
        let capacity = self.capacity.load(Ordering::Relaxed);
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w == 0 || w + weight <= capacity).then_some(w + weight)
            })
            .map(|_| ())
            .map_err(|waiting| HandleError::Busy { waiting, capacity })
    }

    /// The engine loop took `weight` events off the channel.
    pub fn release(&self, weight: usize) {
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(weight))
            });
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A cheap, cloneable way to talk to the engine loop.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Input>,
    queue: Queue,
}

impl EngineHandle {
    /// A handle and the receiving end, which the engine loop owns, with the
    /// bound on waiting events.
    pub fn channel(capacity: usize) -> (EngineHandle, mpsc::Receiver<Input>, Queue) {
        let (tx, rx) = mpsc::channel();
        let queue = Queue::new(capacity);
        (
            EngineHandle {
                tx,
                queue: queue.clone(),
            },
            rx,
            queue,
        )
    }

    pub fn send(&self, input: Input) -> Result<(), HandleError> {
        self.tx.send(input).map_err(|_| HandleError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Input) -> Result<T, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| HandleError::Stopped)?
    }

    /// Stores and matches events, and stores refused ones as such; answers
    /// with the ids of both once they are durable. Refused at once with
    /// [`HandleError::Busy`] when the queue is full: nothing is half-stored.
    pub async fn ingest(
        &self,
        events: Vec<Event>,
        refused: Vec<RefusedEvent>,
        received_at: DateTime<Utc>,
        via: String,
    ) -> Result<(Ingested, Vec<i64>), HandleError> {
        let weight = (events.len() + refused.len()).max(1);
        self.queue.take(weight)?;
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Input::Events {
            events,
            refused,
            received_at,
            via,
            reply,
        });
        if let Err(e) = sent {
            self.queue.release(weight);
            return Err(e);
        }
        rx.await.map_err(|_| HandleError::Stopped)?
    }

    pub async fn step(
        &self,
        incident: i64,
        step: String,
        verb: Verb,
        actor: Actor,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Input::Step {
            incident,
            step,
            verb,
            actor,
            reply,
        })
        .await
    }

    pub async fn resolve(&self, incident: i64, actor: Actor) -> Result<(), HandleError> {
        self.ask(|reply| Input::Resolve {
            incident,
            actor,
            reply,
        })
        .await
    }

    pub async fn escalate(&self, incident: i64, actor: Actor) -> Result<(), HandleError> {
        self.ask(|reply| Input::Escalate {
            incident,
            actor,
            reply,
        })
        .await
    }

    pub async fn review(
        &self,
        incident: crate::engine::Incident,
        prior: (u32, u32),
        spec: crate::engine::ReviewSpec,
        actor: Actor,
    ) -> Result<(u32, Vec<u32>), HandleError> {
        self.ask(|reply| Input::Review {
            incident: Box::new(incident),
            prior,
            spec,
            actor,
            reply,
        })
        .await
    }

    pub async fn review_action_done(
        &self,
        incident: i64,
        n: u32,
        actor: Actor,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Input::ReviewActionDone {
            incident,
            n,
            actor,
            reply,
        })
        .await
    }

    pub async fn run_drill(
        &self,
        drill: String,
        branch: Option<String>,
        scope: crate::scope::Scope,
        actor: Actor,
    ) -> Result<(i64, Vec<i64>), HandleError> {
        self.ask(|reply| Input::RunDrill {
            drill,
            branch,
            scope,
            actor,
            reply,
        })
        .await
    }

    pub async fn abort_drill(&self, run: i64, actor: Actor) -> Result<(), HandleError> {
        self.ask(|reply| Input::AbortDrill { run, actor, reply })
            .await
    }

    pub async fn add_silence(&self, spec: SilenceSpec) -> Result<i64, HandleError> {
        self.ask(|reply| Input::AddSilence { spec, reply }).await
    }

    pub async fn expire_silence(&self, id: i64, actor: Actor) -> Result<(), HandleError> {
        self.ask(|reply| Input::ExpireSilence { id, actor, reply })
            .await
    }

    pub async fn delivered(&self, attempts: Vec<Attempt>) -> Result<(), HandleError> {
        self.ask(|reply| Input::Delivered { attempts, reply }).await
    }

    /// Audits refused requests (a summary per client); fire and forget.
    pub fn auth_denied(&self, detail: String) {
        let _ = self.send(Input::AuthDenied { detail });
    }

    /// The bound on waiting events (the reload path sets its capacity).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Audits a refused link; fire and forget (the page is shown either way).
    pub fn link_refused(&self, incident: Option<i64>, detail: String) {
        let _ = self.send(Input::LinkRefused { incident, detail });
    }

    pub fn command_finished(&self, incident: i64, step: String, outcome: CommandOutcome) {
        let _ = self.send(Input::CommandFinished {
            incident,
            step,
            outcome,
        });
    }

    pub fn reload(&self, loaded: Arc<Loaded>) -> Result<(), HandleError> {
        self.send(Input::Reload { loaded })
    }

    pub fn shutdown(&self) {
        let _ = self.send(Input::Shutdown);
    }
}
