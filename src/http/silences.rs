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

use super::error::{json_body, optional_json_body};
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::engine::{Matcher, SilenceSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    all: Option<bool>,
}

pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let all = p.all.unwrap_or(false);
    let items = read(&s, move |st| st.silences(all)).await?;
    let now = clock::now();
    let items: Vec<Value> = items
        .into_iter()
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
    ends_at: DateTime<FixedOffset>,
    created_by: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    force: bool,
}

/// Who a silence is recorded as created or ended by.
fn author(who: &Principal, given: Option<String>) -> Result<String, ApiError> {
    match (who.person(), who, given) {
        (Some(p), _, _) => Ok(p.to_string()),
        (None, Principal::Token { name, .. }, g) => Ok(g.unwrap_or_else(|| name.clone())),
        (None, Principal::Local, Some(g)) if !g.trim().is_empty() => Ok(g),
        (None, Principal::Local, _) => Err(ApiError::bad(
            "say who sets it: `created_by` (no API tokens are configured, so nothing is anonymous)",
            "created_by",
        )),
    }
}

pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    b: Bytes,
) -> Result<Response, ApiError> {
    let n: NewSilence = json_body(&b)?;
    let spec = SilenceSpec {
        matchers: n.matchers,
        starts_at: n.starts_at.map_or_else(clock::now, |t| t.to_utc()),
        ends_at: n.ends_at.to_utc(),
        created_by: author(&who, n.created_by)?,
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
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "silence id", "id")?;
    let body: ExpireBody = optional_json_body(&b)?;
    let by = author(&who, body.by).map_err(|_| {
        ApiError::bad(
            "say who ends it: {\"by\": PERSON} (no API tokens are configured)",
            "by",
        )
    })?;
    s.engine.expire_silence(id, by).await?;
    Ok(Json(json!({ "id": id, "expired": true })))
}
