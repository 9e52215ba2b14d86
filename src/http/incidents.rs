//! Incidents: list, one, and people's actions on them (ack, done, safe,
//! resolve, escalate).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Client, count_forbidden, counted};
use super::error::optional_json_body;
use super::views::incident_json;
use super::{ApiError, AppState, Principal, read};
use crate::engine::Verb;
use crate::engine::handle::Actor;
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
        && !matches!(st.as_str(), "open" | "resolved" | "follow-up")
    {
        return Err(ApiError::bad(
            format!(
                "invalid status `{}`: expected open, resolved or follow-up (resolved, with follow-up steps still running)",
                crate::diag::clip_quotes(st)
            ),
            "status",
        ));
    }
    let query = IncidentQuery {
        status: p.status,
        branch: p.branch,
        scope: who.scope(),
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
/// "forbidden", so its existence is not told either (and counted as a
/// refusal of this client).
pub(super) async fn visible(
    s: &AppState,
    who: &Principal,
    client: Client,
    id: i64,
) -> Result<crate::store::IncidentRecord, ApiError> {
    let found = read(s, move |st| st.incident_with_outbox(id)).await?;
    match found {
        Some(f) if who.sees(&f.0.branch) => Ok(f),
        Some(f) => Err(counted(
            s,
            client,
            "out_of_scope",
            &format!(
                "{}: incident {id}: branch {} is outside its branches",
                who.name(),
                f.0.branch
            ),
            ApiError::not_found(format!("no incident {id}")),
        )),
        None => Err(ApiError::not_found(format!("no incident {id}"))),
    }
}

async fn incident_view(
    s: &AppState,
    who: &Principal,
    client: Client,
    id: i64,
) -> Result<Json<Value>, ApiError> {
    let (inc, history, outbox) = visible(s, who, client, id).await?;
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
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    incident_view(&s, &who, client, parse_id(&id)?).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
    note: Option<String>,
}

pub async fn step_action(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
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
    let (inc, _, _) = visible(&s, &who, client, id).await?;
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
        .map_err(|e| count_forbidden(&s, client, &who, e))?;
    let actor = Actor::new(by, who.via()).with_note(b.note);
    s.engine.step(id, step, verb, actor).await?;
    incident_view(&s, &who, client, id).await
}

pub async fn incident_action(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
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
    let (inc, _, _) = visible(&s, &who, client, id).await?;
    let by = who
        .actor(&s.loaded().config, b.by, &inc.branch, None)
        .map_err(|e| count_forbidden(&s, client, &who, e))?;
    let actor = Actor::new(by, who.via()).with_note(b.note);
    match action.as_str() {
        "resolve" => s.engine.resolve(id, actor).await?,
        _ => s.engine.escalate(id, actor).await?,
    }
    incident_view(&s, &who, client, id).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    format: Option<String>,
}

/// `GET /api/v1/incidents/{id}/report`: Markdown, `?format=json`, or
/// `?format=html` (printable), from what is stored.
pub async fn report(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let axum::extract::Query(p) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let format = p.format.unwrap_or_else(|| "md".into());
    if !matches!(format.as_str(), "md" | "json" | "html") {
        return Err(ApiError::bad(
            format!(
                "invalid format `{}`: expected md, json or html",
                crate::diag::clip_quotes(&format)
            ),
            "format",
        ));
    }
    let (inc, history, outbox) = visible(&s, &who, client, parse_id(&id)?).await?;
    let loaded = s.loaded();
    let cfg = &loaded.config;
    let playbook_name = loaded
        .playbook(&inc.playbook_id)
        .map_or_else(|| inc.playbook_id.clone(), |p| p.name.clone());
    let branch_name = cfg
        .branches
        .get(&inc.branch)
        .map_or_else(|| inc.branch.clone(), |b| b.name.clone());
    let r = crate::incident_report::Report {
        incident: &inc,
        playbook_name: &playbook_name,
        branch_name: &branch_name,
        history: &history,
        outbox: &outbox,
        people: &cfg.people,
        tz: cfg.tz_of(&inc.branch),
    };
    Ok(match format.as_str() {
        "json" => Json(r.json()).into_response(),
        "html" => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            r.html(),
        )
            .into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            r.markdown(),
        )
            .into_response(),
    })
}
