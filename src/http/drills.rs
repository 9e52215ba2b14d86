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

use super::auth::{Client, counted};
use super::error::optional_json_body;
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::config::BranchSelection;
use crate::engine::handle::Actor;
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

/// Who starts or stops a run: a person-bound token's person, else the
/// person named in `by`, else the token itself (a scheduler's token), or
/// `local` without tokens (the operator at the daemon's own machine).
fn starter(
    who: &Principal,
    cfg: &crate::config::Config,
    by: Option<String>,
) -> Result<Actor, ApiError> {
    let by = match (who.person(), who, by) {
        (Some(_), _, by) => who.author(cfg, by, "by")?,
        (None, Principal::Token { name, .. }, None) => name.clone(),
        (None, Principal::Local, None) => crate::engine::VIA_LOCAL.to_string(),
        (None, _, by) => who.author(cfg, by, "by")?,
    };
    Ok(Actor::new(by, who.via()))
}

/// What a run may reach: the token's branches; without tokens, the named
/// person's (all of them for the operator at the daemon's own machine).
fn scope_of(who: &Principal, cfg: &crate::config::Config, by: &str) -> crate::scope::Scope {
    match who {
        Principal::Local if by == crate::engine::VIA_LOCAL => crate::scope::Scope::all(),
        other => other.scope_as(cfg, by),
    }
}

pub async fn run(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Response, ApiError> {
    let b: RunBody = optional_json_body(&b)?;
    let loaded = s.loaded();
    if let Some(branch) = &b.branch
        && !loaded.config.branches.contains_key(branch)
    {
        return Err(ApiError::bad(
            format!("unknown branch `{}`", crate::diag::clip_quotes(branch)),
            "branch",
        ));
    }
    let actor = starter(&who, &loaded.config, b.by)?;
    let scope = scope_of(&who, &loaded.config, &actor.by);
    if let Some(branch) = &b.branch
        && !scope.sees(branch)
    {
        return Err(counted(
            &s,
            client,
            "forbidden",
            &format!("{}: run drill {id} at {branch}", who.name()),
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token may not run drills at branch `{branch}`"),
                Some("branch".into()),
            ),
        ));
    }
    let (run, incidents) = s.engine.run_drill(id, b.branch, scope, actor).await?;
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
    let scope = who.scope();
    let q = DrillRunQuery {
        drill: p.drill,
        branch: p.branch,
        scope: scope.clone(),
        limit,
        cursor: p.cursor,
    };
    let page = read(&s, move |st| st.list_drill_runs(&q)).await?;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|r| json!(visible_part(r, &scope)))
        .collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
}

/// A run with, for each of its branches, the trend of that branch's earlier
/// runs of the same drill (oldest first).
pub async fn one(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "run id", "run")?;
    let scope = who.scope();
    let sc = scope.clone();
    let found = read(&s, move |st| {
        let Some(run) = st.drill_run(id)? else {
            return Ok(None);
        };
        let mut trends = serde_json::Map::new();
        // A scoped reader's medians are of its own branches' people only.
        let mut recent: Vec<crate::engine::DrillRun> = vec![visible_part(run.clone(), &sc)];
        for b in &run.branches {
            let page = st.list_drill_runs(&DrillRunQuery {
                drill: Some(run.drill.clone()),
                branch: Some(b.branch.clone()),
                scope: crate::scope::Scope::all(),
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
                    recent.push(visible_part(r, &sc));
                }
            }
        }
        let people = crate::report::medians(&recent);
        Ok(Some((run, trends, people)))
    })
    .await?;
    let Some((run, mut trends, people)) = found.filter(|(r, _, _)| {
        r.branches.is_empty() || r.branches.iter().any(|b| scope.sees(&b.branch))
    }) else {
        return Err(ApiError::not_found(format!("no drill run {id}")));
    };
    trends.retain(|b, _| scope.sees(b));
    let mut v = json!(visible_part(run, &scope));
    v["trend"] = Value::Object(trends);
    v["people"] = json!(people);
    Ok(Json(v))
}

/// A run as a scoped principal may see it: only its branches, and the run's
/// score and verdict over those alone (another branch's score is not told).
fn visible_part(
    mut run: crate::engine::DrillRun,
    scope: &crate::scope::Scope,
) -> crate::engine::DrillRun {
    if scope.is_all() {
        return run;
    }
    let before = run.branches.len();
    run.branches.retain(|b| scope.sees(&b.branch));
    run.skipped.retain(|b| scope.sees(b));
    if run.branches.len() != before {
        let scored: Vec<f64> = run.branches.iter().filter_map(|b| b.score).collect();
        run.score = (!scored.is_empty())
            .then(|| (scored.iter().sum::<f64>() / scored.len() as f64 * 10.0).round() / 10.0);
        run.passed = run
            .branches
            .iter()
            .map(|b| b.passed)
            .collect::<Option<Vec<bool>>>()
            .map(|p| p.iter().all(|x| *x));
    }
    run
}

pub async fn abort(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = super::error::path_id(&id, "run id", "run")?;
    let b: RunBody = optional_json_body(&b)?;
    let loaded = s.loaded();
    let actor = starter(&who, &loaded.config, b.by)?;
    let scope = scope_of(&who, &loaded.config, &actor.by);
    if !scope.is_all() {
        let run = read(&s, move |st| st.drill_run(id)).await?;
        let Some(run) = run.filter(|r| r.branches.iter().any(|b| scope.sees(&b.branch))) else {
            return Err(ApiError::not_found(format!("no drill run {id}")));
        };
        if !run.branches.iter().all(|b| scope.sees(&b.branch)) {
            return Err(counted(
                &s,
                client,
                "forbidden",
                &format!("{}: abort drill run {id}", who.name()),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this token may not stop a drill run that includes other branches",
                    None,
                ),
            ));
        }
    }
    s.engine.abort_drill(id, actor).await?;
    one(State(s), Extension(who), Path(id.to_string())).await
}
