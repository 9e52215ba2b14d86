//! Sources: where events come from. Each source turns its own input into
//! events and hands them to [`intake`], the one function that checks events
//! against the configuration, counts what it refuses and sends the rest through
//! the engine's door. The HTTP events endpoint and the Alertmanager webhook use
//! it today; the spool directory, probes, host health and drills will too.
//!
//! **Invariant:** a source never talks to the engine except through [`intake`],
//! and an intake error is not an HTTP error: each caller words it for its own users.

pub mod alertmanager;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::config::Loaded;
use crate::engine::{EngineHandle, HandleError};
use crate::event::{EventError, EventInput};

/// Events stored, with the ids they were given and the incidents they opened or joined.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub events: Vec<i64>,
    pub incidents: BTreeSet<i64>,
}

/// Why a batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The input's fault: nothing of the batch was stored.
    #[error("{message}")]
    Invalid {
        message: String,
        /// Where in the input, as the source's user writes it (`[1].branch`).
        field: Option<String>,
    },
    /// Ours: the engine or the store could not take it.
    #[error(transparent)]
    Engine(#[from] HandleError),
}

/// Counts a refusal and turns it into an [`IntakeError`].
pub fn refuse(e: EventError, reason: &'static str) -> IntakeError {
    crate::metrics::event_rejected(reason);
    IntakeError::Invalid {
        message: e.message,
        field: e.field,
    }
}

/// Checks every event; one bad event refuses the whole batch, so nothing is
/// half-stored. `field_of` says where event `i`'s bad field is in the input.
pub async fn intake(
    engine: &EngineHandle,
    loaded: &Loaded,
    inputs: Vec<EventInput>,
    source: &str,
    now: DateTime<Utc>,
    field_of: impl Fn(usize, Option<String>) -> Option<String>,
) -> Result<Accepted, IntakeError> {
    let mut events = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let ev = input
            .check(|b| loaded.config.branches.contains_key(b), now, source)
            .map_err(|e| {
                let reason = if e.field.as_deref() == Some("branch") {
                    "unknown_branch"
                } else {
                    "invalid"
                };
                refuse(
                    EventError {
                        field: field_of(i, e.field),
                        message: e.message,
                    },
                    reason,
                )
            })?;
        events.push(ev);
    }
    if events.is_empty() {
        return Ok(Accepted::default());
    }
    let out = engine.ingest(events, now).await?;
    Ok(Accepted {
        incidents: out.iter().flat_map(|(_, i)| i.iter().copied()).collect(),
        events: out.into_iter().map(|(id, _)| id).collect(),
    })
}

/// A JSON body of one event or an array of them (`POST /api/v1/events`).
pub async fn json_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Accepted, IntakeError> {
    let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let inputs = crate::event::parse_json(body).map_err(|e| refuse(e, "malformed"))?;
    intake(engine, loaded, inputs, "api", now, |i, field| {
        match (many, field) {
            (true, Some(f)) => Some(format!("[{i}].{f}")),
            (true, None) => Some(format!("[{i}]")),
            (false, f) => f,
        }
    })
    .await
}

/// An Alertmanager webhook body (payload version 4).
pub async fn alertmanager_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Accepted, IntakeError> {
    let inputs = alertmanager::parse(body).map_err(|e| refuse(e, "malformed"))?;
    // `branch` came from the alert's labels.
    intake(engine, loaded, inputs, "alertmanager", now, |i, field| {
        field.map(|f| format!("alerts[{i}].labels.{f}"))
    })
    .await
}
