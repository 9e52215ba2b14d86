//! Sources: where events come from. Each source turns its own input into
//! events and hands them to [`intake`], the one function that checks events
//! against the limits, the sender's scope and the configuration, counts what
//! it refuses and sends the rest through the engine's door: the HTTP events
//! endpoint, the Alertmanager webhook, the spool directory, probes and host
//! health. (Drills open their incidents inside the engine, from its timers.)
//!
//! **Invariant:** a source never talks to the engine except through [`intake`]
//! (`tests/architecture.rs` checks that the one call of the door's `ingest`
//! under `sources/` and `http/` is in `intake`), and an intake error is not
//! an HTTP error: nothing here names a status; each caller maps it.

pub mod alertmanager;
pub mod host;
pub mod probes;
pub mod spool;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use serde::Serialize;

use crate::config::{Limits, Loaded};
use crate::engine::{EngineHandle, HandleError, RefusedEvent};
use crate::event::{Event, EventError, EventInput};
use crate::scope::Scope;

/// Events stored, with the ids they were given and the incidents they opened
/// or joined; and, where a source keeps going past bad items, what it refused.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub events: Vec<i64>,
    pub incidents: BTreeSet<i64>,
    pub rejected: Vec<RejectedItem>,
    /// Events taken but held back by a silence or maintenance window.
    pub held: Vec<HeldBack>,
}

/// An event stored but held back: it opened nothing because of `by`.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBack {
    pub event: i64,
    /// `silence 3`, `maintenance window Sunday upgrades`.
    pub by: String,
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

/// What a refused NUL character is told.
pub const NUL: &str = "contains a NUL character (\\u0000), which is not text";

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
    // A NUL character is no text a person wrote, and PostgreSQL's text
    // cannot hold one: stored, it failed the whole round's commit and every
    // other sender in it was answered 503.
    let nul = |s: &str| s.contains('\0');
    for (field, value) in [
        ("kind", Some(&e.kind)),
        ("branch", Some(&e.branch)),
        ("summary", e.summary.as_ref()),
        ("source", e.source.as_ref()),
    ] {
        if value.is_some_and(|v| nul(v)) {
            return Err(bad(field, NUL.to_string()));
        }
    }
    if let Some((k, _)) = e.labels.iter().find(|(k, v)| nul(k) || nul(v)) {
        let k: String = k.chars().filter(|c| *c != '\0').take(40).collect();
        return Err(bad(&format!("labels.{k}"), NUL.to_string()));
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

/// An item a source could not read as an event: what could be read of it
/// (kept, so a refused alert is visible in the event list), and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub error: EventError,
    pub partial: Box<EventInput>,
}

/// Where a batch comes from and how it is taken.
pub struct Origin<'a> {
    /// The `source` of its events when they name none (`api`, `spool`, …).
    pub source: &'a str,
    /// How it came: the API token's name, `local`, or `engine` for the
    /// daemon's own sources.
    pub via: String,
    /// The branches it may post events for.
    pub scope: &'a Scope,
    /// `true`: one bad item refuses the whole batch and nothing is stored
    /// (`POST /events`, a spool file). `false`: each item is taken or
    /// refused on its own, and a refused one is stored as a rejected event
    /// (an Alertmanager group, which Alertmanager does not send again).
    pub whole: bool,
}

impl<'a> Origin<'a> {
    /// One of the daemon's own sources (probes, host health, the spool).
    pub fn engine(source: &'a str) -> Origin<'a> {
        static ALL: std::sync::LazyLock<Scope> = std::sync::LazyLock::new(Scope::all);
        Origin {
            source,
            via: crate::engine::VIA_ENGINE.into(),
            scope: &ALL,
            whole: true,
        }
    }
}

/// Why one item was refused: the metric's reason, where, and what.
struct Refusal {
    reason: &'static str,
    field: Option<String>,
    message: String,
}

/// What is kept of a refused item, for the operations centre to see: within
/// the limits (a refusal for size is not a way to store the size), without
/// NUL characters (PostgreSQL's text holds none), and filed under its branch
/// only if the sender may write there (that branch's readers would see the
/// sender's text), whatever the item was refused for.
fn kept(mut p: EventInput, l: &Limits, scope: &Scope) -> EventInput {
    fn clean(s: &mut String, max: usize) {
        s.retain(|c| c != '\0');
        s.truncate(s.floor_char_boundary(max));
    }
    if !scope.sees(&p.branch) {
        p.branch = String::new();
    }
    clean(&mut p.branch, l.label_bytes);
    clean(&mut p.kind, l.label_bytes);
    if let Some(s) = p.source.as_mut() {
        clean(s, l.label_bytes);
    }
    if let Some(s) = p.summary.as_mut() {
        clean(s, l.summary_bytes);
    }
    p.labels = std::mem::take(&mut p.labels)
        .into_iter()
        .take(l.labels_per_event)
        .map(|(mut k, mut v)| {
            clean(&mut k, l.label_bytes);
            clean(&mut v, l.label_bytes);
            (k, v)
        })
        .collect();
    p
}

/// Checks one item against the limits, the sender's scope and the configuration.
fn check_one(
    item: Result<EventInput, Unreadable>,
    loaded: &Loaded,
    origin: &Origin<'_>,
    now: DateTime<Utc>,
) -> Result<Event, (Refusal, Box<EventInput>)> {
    let input = match item {
        Ok(i) => i,
        Err(u) => {
            let missing = u.partial.branch.is_empty()
                && u.error
                    .field
                    .as_deref()
                    .is_some_and(|f| f.ends_with("branch"));
            let r = Refusal {
                reason: if missing { "missing_branch" } else { "invalid" },
                field: u.error.field,
                message: u.error.message,
            };
            return Err((r, u.partial));
        }
    };
    if let Err(e) = within_limits(&input, &loaded.config.limits) {
        let r = Refusal {
            reason: if e.message == NUL {
                "invalid"
            } else {
                "too_large"
            },
            field: e.field,
            message: e.message,
        };
        return Err((r, Box::new(input)));
    }
    if !origin.scope.sees(&input.branch) {
        let r = Refusal {
            reason: "forbidden",
            field: Some("branch".into()),
            message: format!(
                "this token may not post events for branch `{}`",
                crate::diag::clip_quotes(&input.branch)
            ),
        };
        return Err((r, Box::new(input)));
    }
    let partial = Box::new(input.clone());
    input
        .check(
            |b| loaded.config.branches.contains_key(b),
            now,
            origin.source,
        )
        .map_err(|e| {
            let reason = if e.field.as_deref() == Some("branch") {
                "unknown_branch"
            } else {
                "invalid"
            };
            (
                Refusal {
                    reason,
                    field: e.field,
                    message: e.message,
                },
                partial,
            )
        })
}

/// The one door from every source to the engine: checks every item
/// (limits, the sender's scope, the configuration), counts what it refuses,
/// and sends the rest through the engine's door. `field_of` says where item
/// `i`'s bad field is in the input as its sender wrote it.
pub async fn intake(
    engine: &EngineHandle,
    loaded: &Loaded,
    items: Vec<Result<EventInput, Unreadable>>,
    origin: &Origin<'_>,
    now: DateTime<Utc>,
    field_of: impl Fn(usize, Option<String>) -> Option<String>,
) -> Result<Accepted, IntakeError> {
    let limits = &loaded.config.limits;
    if items.len() > limits.events_per_request {
        crate::metrics::event_rejected("too_large");
        return Err(IntakeError::TooLarge(format!(
            "{} events in one request: at most {} (limits.events_per_request)",
            items.len(),
            limits.events_per_request
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    let mut refusals = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match check_one(item, loaded, origin, now) {
            Ok(ev) => events.push(ev),
            Err((r, partial)) => {
                crate::metrics::event_rejected(r.reason);
                let field = field_of(i, r.field);
                if origin.whole {
                    return Err(if r.reason == "forbidden" {
                        IntakeError::Forbidden {
                            message: r.message,
                            field,
                        }
                    } else {
                        IntakeError::Invalid {
                            message: r.message,
                            field,
                        }
                    });
                }
                let event = kept(*partial, limits, origin.scope).unchecked(now, origin.source);
                let mut reason = format!(
                    "{}: {}{}",
                    r.reason,
                    r.message,
                    field
                        .as_deref()
                        .map(|f| format!(" ({f})"))
                        .unwrap_or_default()
                );
                reason.retain(|c| c != '\0');
                refused.push(RefusedEvent { event, reason });
                refusals.push((i, r.reason, field, r.message));
            }
        }
    }
    if events.is_empty() && refused.is_empty() {
        return Ok(Accepted::default());
    }
    let (out, refused_ids) = engine
        .ingest(events, refused, now, origin.via.clone())
        .await?;
    Ok(Accepted {
        incidents: out.iter().flat_map(|(_, i, _)| i.iter().copied()).collect(),
        held: out
            .iter()
            .filter_map(|(id, _, by)| by.clone().map(|by| HeldBack { event: *id, by }))
            .collect(),
        events: out.into_iter().map(|(id, _, _)| id).collect(),
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

/// A JSON body of one event or an array of them (`POST /api/v1/events`):
/// all or nothing.
pub async fn json_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
    origin: &Origin<'_>,
) -> Result<Accepted, IntakeError> {
    let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let inputs = crate::event::parse_json(body).map_err(|e| refuse(e, "malformed"))?;
    intake(
        engine,
        loaded,
        inputs.into_iter().map(Ok).collect(),
        origin,
        now,
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
/// must not lose the good ones: each alert is taken or refused on its own
/// (`origin.whole` is false), and a refused alert is stored as a rejected
/// event (visible in `GET /events`, counted in `events_rejected_total`).
/// Only a payload that is not Alertmanager's at all is refused whole.
pub async fn alertmanager_events(
    engine: &EngineHandle,
    loaded: &Loaded,
    body: &[u8],
    now: DateTime<Utc>,
    origin: &Origin<'_>,
) -> Result<Accepted, IntakeError> {
    let alerts = alertmanager::parse(body).map_err(|e| refuse(e, "malformed"))?;
    intake(engine, loaded, alerts, origin, now, |i, field| {
        field.map(|f| {
            if f.starts_with("alerts[") {
                f
            } else if f.starts_with("labels") {
                format!("alerts[{i}].{f}")
            } else if f == "summary" {
                format!("alerts[{i}].annotations.summary")
            } else {
                format!("alerts[{i}].labels.{f}")
            }
        })
    })
    .await
}
