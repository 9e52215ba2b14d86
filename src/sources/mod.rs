//! Sources: where events come from. Each source turns its own input into
//! events and hands them to [`intake`], the one function that checks events
//! against the configuration, counts what it refuses and sends the rest through
//! the engine's door. The HTTP events endpoint and the Alertmanager webhook use
//! it today; the spool directory, probes, host health and drills will too.
//!
//! **Invariant:** a source never talks to the engine except through [`intake`],
//! and an intake error is not an HTTP error: each caller words it for its own users.

pub mod alertmanager;
pub mod host;
pub mod probes;
pub mod spool;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use serde::Serialize;

use crate::config::{Limits, Loaded};
use crate::engine::{EngineHandle, HandleError, RefusedEvent};
use crate::event::{EventError, EventInput};

/// Events stored, with the ids they were given and the incidents they opened
/// or joined; and, where a source keeps going past bad items, what it refused.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub events: Vec<i64>,
    pub incidents: BTreeSet<i64>,
    pub rejected: Vec<RejectedItem>,
}

/// One refused item of a batch whose other items were taken: where it was in
/// the input, the id it is stored under (as a rejected event), and why.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedItem {
    pub index: usize,
    pub event: i64,
    pub reason: &'static str,
    pub field: Option<String>,
    pub error: String,
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
    /// The sender may not post events for this branch.
    #[error("{message}")]
    Forbidden {
        message: String,
        field: Option<String>,
    },
    /// Over a size limit (too many events in one request).
    #[error("{0}")]
    TooLarge(String),
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

/// Checks an event against the size limits (labels, their lengths, summary).
fn within_limits(e: &EventInput, l: &Limits) -> Result<(), EventError> {
    let bad = |field: &str, message: String| EventError {
        field: Some(field.to_string()),
        message,
    };
    if e.labels.len() > l.labels_per_event {
        return Err(bad(
            "labels",
            format!(
                "{} labels: at most {} per event",
                e.labels.len(),
                l.labels_per_event
            ),
        ));
    }
    for (k, v) in &e.labels {
        if k.len() > l.label_bytes || v.len() > l.label_bytes {
            return Err(bad(
                &format!("labels.{}", k.chars().take(40).collect::<String>()),
                format!(
                    "a label name or value is longer than {} bytes",
                    l.label_bytes
                ),
            ));
        }
    }
    if e.kind.len() > l.label_bytes {
        return Err(bad("kind", format!("longer than {} bytes", l.label_bytes)));
    }
    if let Some(s) = &e.summary
        && s.len() > l.summary_bytes
    {
        return Err(bad(
            "summary",
            format!(
                "{} bytes: at most {} (limits.summary_bytes)",
                s.len(),
                l.summary_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks every event; one bad event refuses the whole batch, so nothing is
/// half-stored. `field_of` says where event `i`'s bad field is in the input;
/// `within` limits the branches the sender may post for.
pub async fn intake(
    engine: &EngineHandle,
    loaded: &Loaded,
    inputs: Vec<EventInput>,
    source: &str,
    now: DateTime<Utc>,
    within: Option<&[String]>,
    field_of: impl Fn(usize, Option<String>) -> Option<String>,
) -> Result<Accepted, IntakeError> {
    let limits = &loaded.config.limits;
    if inputs.len() > limits.events_per_request {
        crate::metrics::event_rejected("too_large");
        return Err(IntakeError::TooLarge(format!(
            "{} events in one request: at most {} (limits.events_per_request)",
            inputs.len(),
            limits.events_per_request
        )));
    }
    let mut events = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        if let Err(e) = within_limits(&input, limits) {
            return Err(refuse(
                EventError {
                    field: field_of(i, e.field),
                    message: e.message,
                },
                "too_large",
            ));
        }
        if let Some(w) = within
            && !w.contains(&input.branch)
        {
            crate::metrics::event_rejected("forbidden");
            return Err(IntakeError::Forbidden {
                message: format!(
                    "this token may not post events for branch `{}`",
                    input.branch
                ),
                field: field_of(i, Some("branch".into())),
            });
        }
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
        rejected: Vec::new(),
    })
}

/// A JSON body of one event or an array of them (`POST /api/v1/events`).
pub async fn json_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
    within: Option<&[String]>,
) -> Result<Accepted, IntakeError> {
    let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let inputs = crate::event::parse_json(body).map_err(|e| refuse(e, "malformed"))?;
    intake(
        engine,
        loaded,
        inputs,
        "api",
        now,
        within,
        |i, field| match (many, field) {
            (true, Some(f)) => Some(format!("[{i}].{f}")),
            (true, None) => Some(format!("[{i}]")),
            (false, f) => f,
        },
    )
    .await
}

/// An Alertmanager webhook body (payload version 4). Alertmanager does not
/// retry a refused request and sends a whole group at once, so one bad alert
/// must not lose the good ones: each alert is taken or refused on its own, and
/// a refused alert is stored as a rejected event (visible in `GET /events`,
/// counted in `events_rejected_total`). Only a payload that is not
/// Alertmanager's at all is refused whole.
pub async fn alertmanager_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
    within: Option<&[String]>,
) -> Result<Accepted, IntakeError> {
    let alerts = alertmanager::parse(body).map_err(|e| refuse(e, "malformed"))?;
    let limits = &loaded.config.limits;
    if alerts.len() > limits.events_per_request {
        crate::metrics::event_rejected("too_large");
        return Err(IntakeError::TooLarge(format!(
            "{} alerts in one request: at most {} (limits.events_per_request)",
            alerts.len(),
            limits.events_per_request
        )));
    }
    let mut events = Vec::new();
    let mut refused = Vec::new();
    let mut refusals = Vec::new();
    for (i, alert) in alerts.into_iter().enumerate() {
        let checked = alert.and_then(|input| {
            let partial = Box::new(input.clone());
            if let Err(e) = within_limits(&input, limits) {
                return Err(alertmanager::Refused {
                    error: EventError {
                        field: e.field.map(|f| format!("alerts[{i}].{f}")),
                        message: e.message,
                    },
                    partial,
                });
            }
            if let Some(w) = within
                && !w.contains(&input.branch)
            {
                return Err(alertmanager::Refused {
                    error: EventError {
                        field: Some(format!("alerts[{i}].labels.branch")),
                        message: format!(
                            "this token may not post events for branch `{}`",
                            input.branch
                        ),
                    },
                    partial,
                });
            }
            input
                .check(
                    |b| loaded.config.branches.contains_key(b),
                    now,
                    "alertmanager",
                )
                .map_err(|e| alertmanager::Refused {
                    error: EventError {
                        field: e.field.map(|f| format!("alerts[{i}].labels.{f}")),
                        message: e.message,
                    },
                    partial,
                })
        });
        match checked {
            Ok(ev) => events.push(ev),
            Err(r) => {
                let reason = match r.error.field.as_deref() {
                    Some(f) if f.ends_with(".branch") && r.partial.branch.is_empty() => {
                        "missing_branch"
                    }
                    Some(f) if f.ends_with(".branch") => "unknown_branch",
                    _ => "invalid",
                };
                crate::metrics::event_rejected(reason);
                let field = r.error.field.clone();
                refused.push(RefusedEvent {
                    event: r.partial.unchecked(now, "alertmanager"),
                    reason: format!(
                        "{reason}: {}{}",
                        r.error.message,
                        field
                            .as_deref()
                            .map(|f| format!(" ({f})"))
                            .unwrap_or_default()
                    ),
                });
                refusals.push((i, reason, field, r.error.message));
            }
        }
    }
    let (out, refused_ids) = engine.ingest_with_refused(events, refused, now).await?;
    Ok(Accepted {
        incidents: out.iter().flat_map(|(_, i)| i.iter().copied()).collect(),
        events: out.into_iter().map(|(id, _)| id).collect(),
        rejected: refusals
            .into_iter()
            .zip(refused_ids)
            .map(|((index, reason, field, error), event)| RejectedItem {
                index,
                event,
                reason,
                field,
                error,
            })
            .collect(),
    })
}
