//! The one door into the engine. Every source (HTTP intake, Alertmanager,
//! and next the spool, probes, host health and drills), the HTTP layer's
//! people's actions, the command runner and the delivery worker talk to the
//! engine only by sending an [`Input`] through an [`EngineHandle`]; the engine
//! loop answers each after the round it caused is committed.
//!
//! **Invariant:** nothing outside the engine loop changes engine state; an input
//! is answered only after what it caused is stored (or with the store's error).

use std::sync::Arc;
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{
    ActionError, Attempt, CommandOutcome, DrillError, Ingested, RefusedEvent, SilenceSpec, Verb,
};
use crate::config::Loaded;
use crate::event::Event;

/// A store failure as the engine loop reports it to whoever waits: the
/// backend's own error, shared by every input of the failed round.
pub type StoreFault = Arc<dyn std::error::Error + Send + Sync>;

/// The answer to one input.
pub type Reply<T> = oneshot::Sender<Result<T, HandleError>>;

/// What the engine loop is asked to do.
pub enum Input {
    Events {
        events: Vec<Event>,
        /// Refused by the source but kept visible (Alertmanager's bad alerts).
        refused: Vec<RefusedEvent>,
        received_at: DateTime<Utc>,
        reply: Reply<(Ingested, Vec<i64>)>,
    },
    Step {
        incident: i64,
        step: String,
        verb: Verb,
        by: Option<String>,
        note: Option<String>,
        reply: Reply<()>,
    },
    Resolve {
        incident: i64,
        by: String,
        note: Option<String>,
        reply: Reply<()>,
    },
    Escalate {
        incident: i64,
        by: String,
        note: Option<String>,
        reply: Reply<()>,
    },
    CommandFinished {
        incident: i64,
        step: String,
        outcome: CommandOutcome,
    },
    /// Start a drill now (all its branches, or one).
    RunDrill {
        drill: String,
        branch: Option<String>,
        reply: Reply<(i64, Vec<i64>)>,
    },
    /// Stop a drill run by hand.
    AbortDrill {
        run: i64,
        by: String,
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
        by: String,
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
    /// Our own fault: the round could not be stored, so nothing of it happened.
    #[error("could not store: {0}")]
    Store(StoreFault),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Drill(#[from] DrillError),
}

/// A cheap, cloneable way to talk to the engine loop.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Input>,
}

impl EngineHandle {
    /// A handle and the receiving end, which the engine loop owns.
    pub fn channel() -> (EngineHandle, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel();
        (EngineHandle { tx }, rx)
    }

    pub fn send(&self, input: Input) -> Result<(), HandleError> {
        self.tx.send(input).map_err(|_| HandleError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Input) -> Result<T, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| HandleError::Stopped)?
    }

    /// Stores and matches events; answers once they are durable.
    pub async fn ingest(
        &self,
        events: Vec<Event>,
        received_at: DateTime<Utc>,
    ) -> Result<Ingested, HandleError> {
        Ok(self
            .ingest_with_refused(events, Vec::new(), received_at)
            .await?
            .0)
    }

    /// Stores and matches events, and stores refused ones as such; answers
    /// with the ids of both once they are durable.
    pub async fn ingest_with_refused(
        &self,
        events: Vec<Event>,
        refused: Vec<RefusedEvent>,
        received_at: DateTime<Utc>,
    ) -> Result<(Ingested, Vec<i64>), HandleError> {
        self.ask(|reply| Input::Events {
            events,
            refused,
            received_at,
            reply,
        })
        .await
    }

    pub async fn step(
        &self,
        incident: i64,
        step: String,
        verb: Verb,
        by: Option<String>,
        note: Option<String>,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Input::Step {
            incident,
            step,
            verb,
            by,
            note,
            reply,
        })
        .await
    }

    pub async fn resolve(
        &self,
        incident: i64,
        by: String,
        note: Option<String>,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Input::Resolve {
            incident,
            by,
            note,
            reply,
        })
        .await
    }

    pub async fn escalate(
        &self,
        incident: i64,
        by: String,
        note: Option<String>,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Input::Escalate {
            incident,
            by,
            note,
            reply,
        })
        .await
    }

    pub async fn run_drill(
        &self,
        drill: String,
        branch: Option<String>,
    ) -> Result<(i64, Vec<i64>), HandleError> {
        self.ask(|reply| Input::RunDrill {
            drill,
            branch,
            reply,
        })
        .await
    }

    pub async fn abort_drill(&self, run: i64, by: String) -> Result<(), HandleError> {
        self.ask(|reply| Input::AbortDrill { run, by, reply }).await
    }

    pub async fn add_silence(&self, spec: SilenceSpec) -> Result<i64, HandleError> {
        self.ask(|reply| Input::AddSilence { spec, reply }).await
    }

    pub async fn expire_silence(&self, id: i64, by: String) -> Result<(), HandleError> {
        self.ask(|reply| Input::ExpireSilence { id, by, reply })
            .await
    }

    pub async fn delivered(&self, attempts: Vec<Attempt>) -> Result<(), HandleError> {
        self.ask(|reply| Input::Delivered { attempts, reply }).await
    }

    /// Audits a request refused by access control; fire and forget.
    pub fn auth_denied(&self, detail: String) {
        let _ = self.send(Input::AuthDenied { detail });
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
