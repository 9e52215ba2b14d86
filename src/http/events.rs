//! `POST /api/v1/events`, `POST /api/v1/alertmanager` (through the sources'
//! intake) and `GET /api/v1/events`.

use axum::Json;
use axum::body::Bytes;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::incidents::{ListParams, params, parse_limit};
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::sources::{self, Accepted, Origin};
use crate::store::EventQuery;

fn accepted(a: Accepted) -> Response {
    let mut body =
        json!({ "accepted": a.events.len(), "events": a.events, "incidents": a.incidents });
    if !a.rejected.is_empty() {
        body["rejected"] = json!(a.rejected);
    }
    // Held back on purpose, which an empty `incidents` does not say.
    if !a.held.is_empty() {
        body["held_back"] = json!(a.held);
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

pub async fn post_events(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scope = who.scope();
    let origin = Origin {
        source: "api",
        via: who.via(),
        scope: &scope,
        whole: true,
    };
    let a = sources::json_events(&s.engine, &s.loaded(), &body, clock::now(), &origin).await?;
    Ok(accepted(a))
}

pub async fn post_alertmanager(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scope = who.scope();
    let origin = Origin {
        source: "alertmanager",
        via: who.via(),
        scope: &scope,
        whole: false,
    };
    let a =
        sources::alertmanager_events(&s.engine, &s.loaded(), &body, clock::now(), &origin).await?;
    Ok(accepted(a))
}

pub async fn list_events(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
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
        scope: who.scope(),
        kind: p.kind,
        matched,
        limit,
        cursor,
    };
    let page = read(&s, move |st| st.list_events(&query)).await?;
    Ok(Json(json!({ "items": page.items, "next": page.next })))
}
