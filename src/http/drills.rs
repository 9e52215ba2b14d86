//! Drills: the list with next scheduled times, running one on demand, runs
//! and their reports (with each branch's trend), stopping a run.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::optional_json_body;
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::config::BranchSelection;
use crate::store::DrillRunQuery;

/// How many earlier runs a report's trend shows per branch.
const TREND: usize = 10;

pub async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let loaded = s.loaded();
    let last = read(&s, |st| st.drill_last_fires()).await?;
    let tz = loaded.config.calendar.timezone;
    let now = clock::now();
    let items: Vec<Value> = loaded
        .drills
        .iter()
        .map(|d| {
            let from = last.get(&d.id).map_or(now, |l| (*l).max(now));
            let next = d.schedule.as_ref().and_then(|sc| sc.next_after(from, tz));
            let branches: Vec<String> = match &d.branches {
                BranchSelection::All => loaded.config.branches.keys().cloned().collect(),
                BranchSelection::List(l) => l.clone(),
            };
            json!({
                "id": d.id, "name": d.name, "playbook": d.playbook,
                "schedule": d.schedule.as_ref().map(|sc| sc.source.clone()),
                "next_run": next, "last_run": last.get(&d.id),
                "branches": branches, "timeout_seconds": d.timeout.as_secs(),
                "pass_score": d.pass_score, "live": d.live,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    branch: Option<String>,
    by: Option<String>,
}

pub async fn run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Response, ApiError> {
    let b: RunBody = optional_json_body(&b)?;
    if let Some(branch) = &b.branch
        && !s.loaded().config.branches.contains_key(branch)
    {
        return Err(ApiError::bad(
            format!("unknown branch `{branch}`"),
            "branch",
        ));
    }
    let (run, incidents) = s.engine.run_drill(id, b.branch).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run": run, "incidents": incidents })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    drill: Option<String>,
    branch: Option<String>,
    limit: Option<usize>,
    cursor: Option<i64>,
}

pub async fn runs(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    q: Result<Query<RunsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(
            format!("invalid limit `{limit}`: expected a number from 1 to 1000"),
            "limit",
        ));
    }
    let q = DrillRunQuery {
        drill: p.drill,
        branch: p.branch,
        within: who.branches(),
        limit,
        cursor: p.cursor,
    };
    let page = read(&s, move |st| st.list_drill_runs(&q)).await?;
    Ok(Json(json!({ "items": page.items, "next": page.next })))
}

/// A run with, for each of its branches, the trend of that branch's earlier
/// runs of the same drill (oldest first).
pub async fn one(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "run id", "run")?;
    let found = read(&s, move |st| {
        let Some(run) = st.drill_run(id)? else {
            return Ok(None);
        };
        let mut trends = serde_json::Map::new();
        let mut recent: Vec<crate::engine::DrillRun> = vec![run.clone()];
        for b in &run.branches {
            let page = st.list_drill_runs(&DrillRunQuery {
                drill: Some(run.drill.clone()),
                branch: Some(b.branch.clone()),
                within: None,
                limit: TREND,
                cursor: Some(run.id),
            })?;
            let mut points: Vec<Value> = page
                .items
                .iter()
                .filter_map(|r| {
                    let br = r.branches.iter().find(|x| x.branch == b.branch)?;
                    Some(json!({ "run": r.id, "started_at": r.started_at, "status": br.status, "score": br.score, "passed": br.passed }))
                })
                .collect();
            points.reverse();
            trends.insert(b.branch.clone(), Value::Array(points));
            for r in page.items {
                if !recent.iter().any(|x| x.id == r.id) {
                    recent.push(r);
                }
            }
        }
        let people = crate::report::medians(&recent);
        Ok(Some((run, trends, people)))
    })
    .await?;
    let Some((run, trends, people)) = found.filter(|(r, _, _)| {
        r.branches.is_empty() || r.branches.iter().any(|b| who.sees(&b.branch))
    }) else {
        return Err(ApiError::not_found(format!("no drill run {id}")));
    };
    let mut v = json!(run);
    v["trend"] = Value::Object(trends);
    v["people"] = json!(people);
    Ok(Json(v))
}

pub async fn abort(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "run id", "run")?;
    let b: RunBody = optional_json_body(&b)?;
    if who.branches().is_some() {
        let run = read(&s, move |st| st.drill_run(id)).await?;
        let all_mine = run.is_some_and(|r| r.branches.iter().all(|b| who.sees(&b.branch)));
        if !all_mine {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token may not stop a drill run that includes other branches",
                None,
            ));
        }
    }
    s.engine
        .abort_drill(id, b.by.unwrap_or_else(|| "api".into()))
        .await?;
    one(State(s), Extension(who), Path(id.to_string())).await
}
