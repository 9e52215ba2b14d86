//! The HTTP API of SPEC §8 (JSON under `/api/v1`), `/healthz` and `/metrics`.
//!
//! Writes go to the engine thread and are answered after they are committed;
//! reads go straight to the store through a read-only connection.
//!
//! **Invariant:** handlers never change state themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock;
use crate::config::{Config, Person};
use crate::daemon::{HandleError, Input, Shared};
use crate::engine::{ActionError, HistoryEntry, Incident, Verb};
use crate::event::{EventError, EventInput};
use crate::store::{EventQuery, IncidentQuery, OutboxRow, Store, StoreError};

type AppState = Arc<Shared>;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/ack/{token}",
            get(crate::links_page::show).post(crate::links_page::perform),
        )
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/events", post(post_events).get(list_events))
        .route("/api/v1/alertmanager", post(post_alertmanager))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route(
            "/api/v1/incidents/{id}/steps/{step}/{verb}",
            post(step_action),
        )
        .route("/api/v1/incidents/{id}/{action}", post(incident_action))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint", None) })
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(shared)
}

/// `{"error": "...", "field": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, field: Option<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field,
        }
    }

    fn bad(error: impl Into<String>, field: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, Some(field.into()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
    }
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Action(a) => a.into(),
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string(), None),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let status = match e {
            ActionError::NoIncident(_) | ActionError::NoStep(..) => StatusCode::NOT_FOUND,
            ActionError::Conflict(_) => StatusCode::CONFLICT,
            ActionError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string(), None)
    }
}

/// Runs a read on the store's reader connection off the async threads.
async fn read<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&crate::store::SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = Arc::clone(s);
    tokio::task::spawn_blocking(move || {
        let guard = s.reader.lock().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reader lock poisoned",
                None,
            )
        })?;
        f(&guard).map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn metrics(State(s): State<AppState>) -> Response {
    if let Ok(n) = read(&s, |st| st.outbox_pending()).await {
        crate::metrics::get().outbox_pending.set(n as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (playbooks, drills, summary) = {
        let l = s.loaded.read().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "config lock poisoned",
                None,
            )
        })?;
        let pbs: Vec<Value> = l
            .playbooks
            .iter()
            .map(|p| json!({"id": p.id, "name": p.name, "version": p.version}))
            .collect();
        let drills: Vec<Value> = l
            .drills
            .iter()
            .map(|d| json!({"id": d.id, "playbook": d.playbook}))
            .collect();
        (pbs, drills, l.summary())
    };
    let last_reload = s
        .last_reload
        .lock()
        .map(|r| r.clone())
        .unwrap_or(Value::Null);
    let pending = read(&s, |st| st.outbox_pending()).await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": s.started_at,
        "config": summary,
        "playbooks": playbooks,
        "drills": drills,
        "last_reload": last_reload,
        "outbox_pending": pending,
    })))
}

async fn reload(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s2 = Arc::clone(&s);
    let result = tokio::task::spawn_blocking(move || crate::daemon::reload(&s2, "api"))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    match result {
        Ok(summary) => Ok(Json(json!({ "ok": true, "summary": summary }))),
        Err(d) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            d.to_string().trim_end().to_string(),
            None,
        )),
    }
}

fn reject(e: EventError, reason: &'static str) -> ApiError {
    crate::metrics::event_rejected(reason);
    ApiError::new(StatusCode::BAD_REQUEST, e.message, e.field)
}

/// Checks every event; one bad event refuses the whole request, so nothing is
/// half-stored. `field_of` says where event `i`'s bad field is in the request.
async fn accept(
    s: &AppState,
    inputs: Vec<EventInput>,
    default_source: &str,
    field_of: impl Fn(usize, Option<String>) -> Option<String>,
) -> Result<Response, ApiError> {
    let now = clock::now();
    let mut events = Vec::with_capacity(inputs.len());
    {
        let l = s.loaded.read().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "config lock poisoned",
                None,
            )
        })?;
        for (i, input) in inputs.into_iter().enumerate() {
            let ev = input
                .check(|b| l.config.branches.contains_key(b), now, default_source)
                .map_err(|e| {
                    let reason = if e.field.as_deref() == Some("branch") {
                        "unknown_branch"
                    } else {
                        "invalid"
                    };
                    reject(
                        EventError {
                            field: field_of(i, e.field),
                            message: e.message,
                        },
                        reason,
                    )
                })?;
            events.push(ev);
        }
    }
    let n = events.len();
    let out = if events.is_empty() {
        Vec::new()
    } else {
        s.engine.ingest(events, now).await?
    };
    let incidents: BTreeSet<i64> = out.iter().flat_map(|(_, i)| i.iter().copied()).collect();
    let ids: Vec<i64> = out.iter().map(|(id, _)| *id).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": n, "events": ids, "incidents": incidents })),
    )
        .into_response())
}

async fn post_events(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let many = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let inputs = crate::event::parse_json(&body).map_err(|e| reject(e, "malformed"))?;
    accept(&s, inputs, "api", |i, field| match (many, field) {
        (true, Some(f)) => Some(format!("[{i}].{f}")),
        (true, None) => Some(format!("[{i}]")),
        (false, f) => f,
    })
    .await
}

async fn post_alertmanager(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let inputs = crate::alertmanager::parse(&body).map_err(|e| reject(e, "malformed"))?;
    // `branch` came from the alert's labels.
    accept(&s, inputs, "alertmanager", |i, field| {
        field.map(|f| format!("alerts[{i}].labels.{f}"))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    branch: Option<String>,
    playbook: Option<String>,
    kind: Option<String>,
    matched: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_limit(p: &ListParams) -> Result<(usize, Option<i64>), ApiError> {
    let limit = match &p.limit {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    format!("invalid limit `{l}`: expected a number from 1 to 1000"),
                    "limit",
                ));
            }
        },
    };
    let cursor = match &p.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad(format!("invalid cursor `{c}`"), "cursor"))?,
        ),
    };
    Ok((limit, cursor))
}

fn params(
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<ListParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))
}

async fn list_incidents(
    State(s): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q)?;
    let (limit, cursor) = parse_limit(&p)?;
    if let Some(st) = &p.status
        && st != "open"
        && st != "resolved"
    {
        return Err(ApiError::bad(
            format!("invalid status `{st}`: expected open or resolved"),
            "status",
        ));
    }
    let query = IncidentQuery {
        status: p.status,
        branch: p.branch,
        playbook: p.playbook,
        limit,
        cursor,
    };
    let page = read(&s, move |st| st.list_incidents(&query)).await?;
    let cfg = config_of(&s)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|i| incident_json(i, None, None, &cfg.people))
        .collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
}

async fn list_events(
    State(s): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q)?;
    let (limit, cursor) = parse_limit(&p)?;
    let matched = match p.matched.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad(
                format!("invalid matched `{other}`: expected true or false"),
                "matched",
            ));
        }
    };
    let query = EventQuery {
        branch: p.branch,
        kind: p.kind,
        matched,
        limit,
        cursor,
    };
    let page = read(&s, move |st| st.list_events(&query)).await?;
    Ok(Json(json!({ "items": page.items, "next": page.next })))
}

/// The configuration in force (a shared pointer, not a copy), for names in incident views.
fn config_of(s: &AppState) -> Result<Arc<Config>, ApiError> {
    s.loaded.read().map(|l| Arc::clone(&l.config)).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "config lock poisoned",
            None,
        )
    })
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .map_err(|_| ApiError::bad(format!("invalid incident id `{id}`"), "id"))
}

async fn get_incident(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let found = read(&s, move |st| {
        Ok(st.incident(id)?.map(|(i, h)| (i, h, st.outbox(id))))
    })
    .await?;
    match found {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no incident {id}"),
            None,
        )),
        Some((inc, history, outbox)) => Ok(Json(incident_json(
            &inc,
            Some(&history),
            Some(&outbox?),
            &config_of(&s)?.people,
        ))),
    }
}

/// The incident resource of SPEC §8.
pub fn incident_json(
    i: &Incident,
    history: Option<&[HistoryEntry]>,
    outbox: Option<&[OutboxRow]>,
    people: &BTreeMap<String, Person>,
) -> Value {
    let steps: Vec<Value> = i
        .steps
        .iter()
        .map(|s| {
            let mut v = json!({
                "id": s.id, "title": s.title, "action": s.action, "state": s.state, "assignee": s.assignee,
                "critical": s.critical, "deadline": s.deadline, "activated_at": s.activated_at,
                "notified_at": s.notified_at, "acknowledged_at": s.acknowledged_at, "done_at": s.done_at,
                "response_seconds": s.response_seconds, "by": s.by, "escalations": s.escalations_fired,
                "overdue": s.overdue_escalated,
            });
            if !s.roll_call.is_empty() {
                let missing: Vec<Value> = s
                    .roll_call
                    .difference(&s.confirmed)
                    .map(|id| json!({ "id": id, "name": people.get(id).map(|p| p.name.as_str()) }))
                    .collect();
                v["roll_call"] = json!({ "people": s.roll_call, "confirmed": s.confirmed, "missing": missing });
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": i.id, "playbook": i.playbook_id, "playbook_version": i.playbook_version, "branch": i.branch,
        "tier": i.tier, "status": i.status, "drill": i.drill, "group": i.group, "opened_at": i.opened_at,
        "resolved_at": i.resolved_at, "event_count": i.event_count, "kind": i.kind, "severity": i.severity,
        "summary": i.summary, "labels": i.labels, "steps": steps,
    });
    if let Some(h) = history {
        v["history"] = json!(
            h.iter()
                .map(|h| json!({"at": h.at, "what": h.what, "by": h.by, "detail": h.detail}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(o) = outbox {
        v["outbox"] = json!(o);
    }
    v
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
    note: Option<String>,
}

fn action_body(body: &Bytes) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            e.into_inner().to_string(),
            (path != ".").then_some(path),
        )
    })
}

async fn step_action(
    State(s): State<AppState>,
    Path((id, step, verb)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let verb = match verb.as_str() {
        "ack" => Verb::Ack,
        "done" => Verb::Done,
        "safe" => Verb::Safe,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown step action `{other}`: expected ack, done or safe"),
                None,
            ));
        }
    };
    let b = action_body(&body)?;
    if let Some(p) = &b.by {
        let known = s
            .loaded
            .read()
            .map(|l| l.config.people.contains_key(p))
            .unwrap_or(false);
        if !known {
            return Err(ApiError::bad(format!("unknown person `{p}`"), "by"));
        }
    }
    s.engine
        .act(|reply| Input::Step {
            incident: id,
            step,
            verb,
            by: b.by,
            note: b.note,
            reply,
        })
        .await?;
    get_incident(State(s), Path(id.to_string())).await
}

async fn incident_action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let b = action_body(&body)?;
    let by = b.by.unwrap_or_else(|| "api".into());
    match action.as_str() {
        "resolve" => {
            s.engine
                .act(|reply| Input::Resolve {
                    incident: id,
                    by,
                    reply,
                })
                .await?
        }
        "escalate" => {
            s.engine
                .act(|reply| Input::Escalate {
                    incident: id,
                    by,
                    note: b.note,
                    reply,
                })
                .await?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown incident action `{other}`: expected resolve or escalate"),
                None,
            ));
        }
    }
    get_incident(State(s), Path(id.to_string())).await
}
