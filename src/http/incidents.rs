//! Incidents: list, one, and people's actions on them (ack, done, safe,
//! resolve, escalate).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::optional_json_body;
use super::views::incident_json;
use super::{ApiError, AppState, Principal, read};
use crate::engine::Verb;
use crate::store::IncidentQuery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    pub branch: Option<String>,
    pub playbook: Option<String>,
    pub kind: Option<String>,
    pub matched: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A list's `limit` parameter: 1 to 1000, 100 when absent.
pub fn limit_of(l: Option<&str>) -> Result<usize, ApiError> {
    match l {
        None => Ok(100),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                format!("invalid limit `{l}`: expected a number from 1 to 1000"),
                "limit",
            )),
        },
    }
}

pub fn parse_limit(p: &ListParams) -> Result<(usize, Option<i64>), ApiError> {
    let limit = limit_of(p.limit.as_deref())?;
    let cursor = match &p.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad(format!("invalid cursor `{c}`"), "cursor"))?,
        ),
    };
    Ok((limit, cursor))
}

pub fn params(
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<ListParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))
}

pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
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
        within: who.branches(),
        playbook: p.playbook,
        limit,
        cursor,
    };
    let page = read(&s, move |st| st.list_incidents(&query)).await?;
    let loaded = s.loaded();
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|i| incident_json(i, None, None, &loaded.config.people))
        .collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    super::error::path_id(id, "incident id", "id")
}

/// An incident the caller may see; another branch's is "not found", not
/// "forbidden", so its existence is not told either.
async fn visible(
    s: &AppState,
    who: &Principal,
    id: i64,
) -> Result<crate::store::IncidentRecord, ApiError> {
    let found = read(s, move |st| st.incident_with_outbox(id)).await?;
    match found {
        Some(f) if who.sees(&f.0.branch) => Ok(f),
        Some(f) => {
            s.engine.auth_denied(format!(
                "{}: incident {id}: branch {} is outside this token's branches",
                who.name(),
                f.0.branch
            ));
            Err(ApiError::not_found(format!("no incident {id}")))
        }
        None => Err(ApiError::not_found(format!("no incident {id}"))),
    }
}

async fn incident_view(s: &AppState, who: &Principal, id: i64) -> Result<Json<Value>, ApiError> {
    let (inc, history, outbox) = visible(s, who, id).await?;
    Ok(Json(incident_json(
        &inc,
        Some(&history),
        Some(&outbox),
        &s.loaded().config.people,
    )))
}

pub async fn get_one(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    incident_view(&s, &who, parse_id(&id)?).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
    note: Option<String>,
}

/// A refused action on an incident is audited (who, which incident, why).
fn audit_refusal(s: &AppState, who: &Principal, id: i64, e: &ApiError) {
    s.engine
        .auth_denied(format!("{}: incident {id}: {}", who.name(), e.error));
}

pub async fn step_action(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path((id, step, verb)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let verb = match verb.as_str() {
        "ack" => Verb::Ack,
        "done" => Verb::Done,
        "safe" => Verb::Safe,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown step action `{other}`: expected ack, done or safe"
            )));
        }
    };
    let b = optional_json_body::<ActionBody>(&body)?;
    let (inc, _, _) = visible(&s, &who, id).await?;
    let Some(run) = inc.steps.iter().find(|x| x.id == step) else {
        return Err(ApiError::not_found(format!(
            "incident {id} has no step `{step}`"
        )));
    };
    // Staff answer their own steps; in a roll call, their own safety.
    let assignee = match verb {
        Verb::Safe => None,
        _ => Some(run.assignee.clone().unwrap_or_default()),
    };
    let loaded = s.loaded();
    let by = who
        .actor(&loaded.config, b.by, &inc.branch, assignee.as_deref())
        .inspect_err(|e| audit_refusal(&s, &who, id, e))?;
    if !loaded.config.people.contains_key(&by) && matches!(*who, Principal::Local) {
        return Err(ApiError::bad(format!("unknown person `{by}`"), "by"));
    }
    s.engine.step(id, step, verb, Some(by), b.note).await?;
    incident_view(&s, &who, id).await
}

pub async fn incident_action(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let b = optional_json_body::<ActionBody>(&body)?;
    if !matches!(action.as_str(), "resolve" | "escalate") {
        return Err(ApiError::not_found(format!(
            "unknown incident action `{action}`: expected resolve or escalate"
        )));
    }
    let (inc, _, _) = visible(&s, &who, id).await?;
    let by = who
        .actor(&s.loaded().config, b.by, &inc.branch, None)
        .inspect_err(|e| audit_refusal(&s, &who, id, e))?;
    match action.as_str() {
        "resolve" => s.engine.resolve(id, by, b.note).await?,
        _ => s.engine.escalate(id, by, b.note).await?,
    }
    incident_view(&s, &who, id).await
}
