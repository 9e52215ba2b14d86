//! Who is on duty: `GET /api/v1/oncall?role=&branch=&at=`, from the rosters.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Principal};
use crate::clock;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OncallParams {
    role: Option<String>,
    branch: Option<String>,
    at: Option<String>,
}

/// How far `until`, `next` and `from` are looked for.
const REACH: chrono::TimeDelta = chrono::TimeDelta::days(8);

pub async fn oncall(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    q: Result<Query<OncallParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let at: DateTime<Utc> = match &p.at {
        None => clock::now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.to_utc())
            .ok()
            .filter(|t| crate::event::writable(*t))
            .ok_or_else(|| {
                ApiError::bad(
                    format!(
                        "invalid time `{}`: expected RFC 3339 with an offset, e.g. 2026-12-24T03:00:00+08:00",
                        crate::diag::clip_quotes(t)
                    ),
                    "at",
                )
            })?,
    };
    let loaded = s.loaded();
    let cfg = &loaded.config;
    if let Some(b) = &p.branch
        && !cfg.branches.contains_key(b)
    {
        return Err(ApiError::bad(
            format!("unknown branch `{}`", crate::diag::clip_quotes(b)),
            "branch",
        ));
    }
    let scope = who.scope();
    let mut items = Vec::new();
    for r in &loaded.rosters {
        if p.role.as_ref().is_some_and(|x| *x != r.role) {
            continue;
        }
        let branches: Vec<&String> = r
            .branches
            .iter()
            .filter(|b| p.branch.as_ref().is_none_or(|x| x == *b) && scope.sees(b))
            .collect();
        if branches.is_empty() {
            continue;
        }
        let duty = r.on_duty(at, &cfg.calendar, &cfg.away);
        let next = r.until(at, at + REACH, &cfg.calendar, &cfg.away);
        let from = r.since(at, REACH, &cfg.calendar, &cfg.away);
        for b in branches {
            items.push(json!({
                "role": r.role,
                "branch": b,
                "roster": r.id,
                "person": duty.person,
                "why": duty.why,
                "from": from,
                "until": next.as_ref().map(|(t, _)| t),
                "next": next.as_ref().map(|(t, d)| json!({"person": d.person, "from": t})),
            }));
        }
    }
    Ok(Json(json!({ "items": items, "at": at })))
}
