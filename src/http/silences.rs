//! `GET|POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Client, count_forbidden, counted};
use super::error::{json_body, optional_json_body};
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::engine::handle::Actor;
use crate::engine::{Matcher, SilenceSpec, breadth};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    all: Option<bool>,
}

pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let all = p.all.unwrap_or(false);
    let now = clock::now();
    let items = read(&s, move |st| st.silences((!all).then_some(now))).await?;
    let loaded = s.loaded();
    let scope = who.scope();
    let items: Vec<Value> = items
        .into_iter()
        // A scoped principal sees the silences that can hold back events of
        // its branches; network-wide ones included (they affect it too).
        .filter(|x| {
            scope.is_all()
                || breadth(&x.matchers, &loaded)
                    .branches
                    .iter()
                    .any(|b| scope.sees(b))
        })
        .map(|x| {
            let active = x.active_at(now);
            let mut v = json!(x);
            v["active"] = json!(active);
            v
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<Matcher>,
    starts_at: Option<DateTime<FixedOffset>>,
    /// When it ends; or `for`, how long from its start (`2h`).
    ends_at: Option<DateTime<FixedOffset>>,
    #[serde(rename = "for")]
    lasts: Option<String>,
    created_by: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    force: bool,
}

/// Whether `who` (acting as `person`) may silence what `matchers` can
/// match: within its branches, and only with `force` and the `ops` or
/// `admin` role when it matches every branch, kind or severity.
fn may_silence(
    who: &Principal,
    loaded: &crate::config::Loaded,
    person: &str,
    matchers: &[Matcher],
    force: bool,
) -> Result<(), ApiError> {
    let b = breadth(matchers, loaded);
    if b.is_broad() {
        if !force {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "this silence would match {}: name a branch (e.g. branch=sh-001) and what to hold back, or send \"force\": true (ops or admin only)",
                    b.why()
                ),
                None,
            ));
        }
        if !who.is_ops(&loaded.config, person) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("a silence of {} needs the `ops` or `admin` role", b.why()),
                Some("force".into()),
            ));
        }
    }
    let scope = who.scope_as(&loaded.config, person);
    if !scope.is_all() && !scope.covers(&b.branches) {
        let outside: Vec<String> = b
            .branches
            .iter()
            .filter(|x| !scope.sees(x))
            .cloned()
            .collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            if b.branches.is_empty() {
                "this silence matches no configured branch".to_string()
            } else {
                format!(
                    "this silence would hold back events of branches outside yours ({}): add a `branch` matcher naming yours",
                    outside.join(", ")
                )
            },
            Some("matchers".into()),
        ));
    }
    Ok(())
}

pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    b: Bytes,
) -> Result<Response, ApiError> {
    let n: NewSilence = json_body(&b)?;
    // Sizes and patterns first: judging a silence's reach runs its patterns.
    crate::engine::check_matchers(&n.matchers).map_err(|e| ApiError::bad(e, "matchers"))?;
    let loaded = s.loaded();
    let created_by = who.author(&loaded.config, n.created_by, "created_by")?;
    may_silence(&who, &loaded, &created_by, &n.matchers, n.force)
        .map_err(|e| count_forbidden(&s, client, &who, e))?;
    let starts_at = n.starts_at.map_or_else(clock::now, |t| t.to_utc());
    let ends_at = match (n.ends_at, n.lasts.as_deref()) {
        (Some(e), None) => e.to_utc(),
        (None, Some(d)) => {
            // A duration past any calendar (`99999999999h`) is refused here,
            // not overflowed into a panic; `silence_max` bounds the rest.
            humantime::parse_duration(d)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .and_then(|d| starts_at.checked_add_signed(d))
                .ok_or_else(|| {
                    ApiError::bad(
                        format!(
                            "`for`: `{}` is not a duration such as `2h` or `90m`",
                            crate::diag::clip_quotes(d)
                        ),
                        "for",
                    )
                })?
        }
        _ => {
            return Err(ApiError::bad(
                "give `ends_at` (a time) or `for` (a duration such as `2h`), not both",
                "ends_at",
            ));
        }
    };
    for (t, field) in [(starts_at, "starts_at"), (ends_at, "ends_at")] {
        if !crate::event::writable(t) {
            return Err(ApiError::bad(
                format!("`{field}` is out of range: a time in UTC from 1970 to 9999"),
                field,
            ));
        }
    }
    let spec = SilenceSpec {
        matchers: n.matchers,
        starts_at,
        ends_at,
        created_by,
        via: who.via(),
        comment: n.comment,
        force: n.force,
    };
    let id = s.engine.add_silence(spec).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireBody {
    by: Option<String>,
}

pub async fn expire(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "silence id", "id")?;
    let body: ExpireBody = optional_json_body(&b)?;
    let loaded = s.loaded();
    let by = who.author(&loaded.config, body.by, "by")?;
    let found = read(&s, |st| st.silences(None)).await?;
    let Some(silence) = found.into_iter().find(|x| x.id == id) else {
        return Err(ApiError::not_found(format!("no silence {id}")));
    };
    // Ending a silence lets events through again: the same reach as creating it.
    let scope = who.scope_as(&loaded.config, &by);
    if !scope.is_all() && !scope.covers(&breadth(&silence.matchers, &loaded).branches) {
        return Err(counted(
            &s,
            client,
            "forbidden",
            &format!("{}: end silence {id}", who.name()),
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this silence holds back events of branches outside yours",
                None,
            ),
        ));
    }
    s.engine
        .expire_silence(id, Actor::new(by, who.via()))
        .await?;
    Ok(Json(json!({ "id": id, "expired": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    matchers: Vec<Matcher>,
}

/// How far back a preview looks for events.
const PREVIEW_EVENTS: chrono::TimeDelta = chrono::TimeDelta::days(1);

fn event_of(
    kind: &str,
    branch: &str,
    severity: &str,
    labels: std::collections::BTreeMap<String, String>,
    at: chrono::DateTime<chrono::Utc>,
) -> crate::event::Event {
    crate::event::Event {
        kind: kind.to_string(),
        branch: branch.to_string(),
        severity: crate::event::Severity::parse(severity).unwrap_or(crate::event::Severity::Major),
        status: crate::event::Status::Firing,
        labels,
        summary: None,
        occurred_at: at,
        source: String::new(),
    }
}

/// `POST /api/v1/silences/preview`: which open incidents and which of the
/// last day's events these matchers would have matched, before the silence
/// is made (as `amtool silence query` and karma show). Within the caller's
/// branches; nothing is changed.
pub async fn preview(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n: PreviewBody = json_body(&b)?;
    crate::engine::check_matchers(&n.matchers).map_err(|e| ApiError::bad(e, "matchers"))?;
    let scope = who.scope();
    let (open, events) = read(&s, move |st| {
        let open = st.list_incidents(&crate::store::IncidentQuery {
            status: Some("open".into()),
            scope: scope.clone(),
            limit: 20_000,
            ..crate::store::IncidentQuery::default()
        })?;
        let events = st.list_events(&crate::store::EventQuery {
            branch: None,
            scope,
            kind: None,
            matched: None,
            limit: 1000,
            cursor: None,
        })?;
        Ok((open.items, events))
    })
    .await?;
    let now = clock::now();
    let holds = |e: &crate::event::Event| n.matchers.iter().all(|m| m.matches(e));
    let incidents: Vec<Value> = open
        .iter()
        .filter(|i| {
            let labels = i
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            holds(&event_of(
                &i.kind,
                &i.branch,
                &i.severity,
                labels,
                i.opened_at,
            ))
        })
        .map(|i| {
            json!({
                "id": i.id, "branch": i.branch, "playbook": i.playbook_id, "tier": i.tier,
                "drill": i.drill, "opened_at": i.opened_at, "summary": i.summary,
            })
        })
        .collect();
    let since = now - PREVIEW_EVENTS;
    let recent: Vec<&crate::store::EventRow> = events
        .items
        .iter()
        .filter(|r| r.received_at >= since && r.rejected.is_none())
        .collect();
    // Only the newest thousand are read: say so when the day held more.
    let complete = events.next.is_none() || recent.len() < events.items.len();
    let matched: Vec<Value> = recent
        .into_iter()
        .filter(|r| {
            let labels = r
                .labels
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            holds(&event_of(
                &r.kind,
                &r.branch,
                &r.severity,
                labels,
                r.occurred_at,
            ))
        })
        .map(|r| {
            json!({
                "id": r.id, "kind": r.kind, "branch": r.branch, "received_at": r.received_at,
                "summary": r.summary,
            })
        })
        .collect();
    Ok(Json(json!({
        "incidents": incidents,
        "events": { "count": matched.len(), "items": matched.iter().take(50).collect::<Vec<_>>(), "complete": complete },
    })))
}
