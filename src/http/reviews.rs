//! Post-incident reviews: record one (`POST /api/v1/incidents/{id}/review`),
//! mark an action done, list the overdue actions. The engine numbers and
//! records them (`engine/reviews.rs`); handlers check the caller and the
//! input and read what the store holds.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Client, count_forbidden};
use super::error::{json_body, optional_json_body};
use super::incidents::visible;
use super::{ApiError, AppState, Principal, read};
use crate::engine::handle::Actor;
use crate::engine::reviews::counted;
use crate::engine::{ActionSpec, ReviewSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    impact: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    actions: Vec<ActionBody>,
    by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    what: String,
    owner: String,
    due: String,
}

/// The due dates a review action may have.
const DUE_FROM: NaiveDate = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
const DUE_TO: NaiveDate = NaiveDate::from_ymd_opt(2099, 12, 31).expect("a valid date");

fn parse_id(id: &str) -> Result<i64, ApiError> {
    super::error::path_id(id, "incident id", "id")
}

/// `POST /api/v1/incidents/{id}/review`: 201 with the review's number and
/// its actions' numbers.
pub async fn record(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let b: ReviewBody = json_body(&body)?;
    let mut actions = Vec::with_capacity(b.actions.len());
    for (i, a) in b.actions.into_iter().enumerate() {
        let due = NaiveDate::parse_from_str(&a.due, "%Y-%m-%d").map_err(|_| {
            ApiError::bad(
                format!(
                    "invalid due date `{}`: expected a date (2026-12-31)",
                    crate::diag::clip_quotes(&a.due)
                ),
                format!("actions[{i}].due"),
            )
        })?;
        actions.push(ActionSpec {
            what: a.what,
            owner: a.owner,
            due,
        });
    }
    let (inc, history, _) = visible(&s, &who, client, id).await?;
    // A year like 0001 or 9999 is a typing mistake, not a plan (a date
    // already past is not: the action is overdue at once). Fixed bounds, so
    // what is accepted does not change with the day it is asked.
    for (i, a) in actions.iter().enumerate() {
        if !(DUE_FROM..=DUE_TO).contains(&a.due) {
            return Err(ApiError::bad(
                format!(
                    "due date {} is out of range: expected a day from {DUE_FROM} to {DUE_TO}",
                    a.due
                ),
                format!("actions[{i}].due"),
            ));
        }
    }
    let by = who
        .actor(&s.loaded().config, b.by, &inc.branch, None)
        .map_err(|e| count_forbidden(&s, client, &who, e))?;
    let actor = Actor::new(by, who.via());
    let spec = ReviewSpec {
        impact: b.impact,
        cause: b.cause,
        actions,
    };
    let (review, numbers) = s.engine.review(inc, counted(&history), spec, actor).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "incident": id, "review": review, "actions": numbers })),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneBody {
    by: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/incidents/{id}/review/actions/{n}/done`: its owner (or
/// anyone who may command at the branch) marks it done.
pub async fn done(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Extension(client): Extension<Client>,
    Path((id, n)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let n: u32 = n.parse().map_err(|_| {
        ApiError::bad(
            format!("invalid action number `{}`", crate::diag::clip_quotes(&n)),
            "n",
        )
    })?;
    let b = optional_json_body::<DoneBody>(&body)?;
    let (inc, _, _) = visible(&s, &who, client, id).await?;
    let Some(action) = read(&s, move |st| st.review_action(id, n)).await? else {
        return Err(ApiError::not_found(format!(
            "incident {id} has no review action {n}"
        )));
    };
    if action.done_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("review action {n} of incident {id} is done already"),
            None,
        ));
    }
    // Staff mark their own actions; others who may command at the branch any.
    let owner = format!("person:{}", action.owner);
    let by = who
        .actor(&s.loaded().config, b.by, &inc.branch, Some(&owner))
        .map_err(|e| count_forbidden(&s, client, &who, e))?;
    let actor = Actor::new(by, who.via()).with_note(b.note);
    s.engine.review_action_done(id, n, actor).await?;
    let done = read(&s, move |st| st.review_action(id, n)).await?;
    Ok(Json(json!({ "action": done })))
}

/// `GET /api/v1/reviews/overdue`: open review actions past their due date,
/// within the caller's branches.
pub async fn overdue(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
) -> Result<Json<Value>, ApiError> {
    let now = crate::clock::now();
    let all = read(&s, move |st| st.overdue_review_actions(now)).await?;
    let loaded = s.loaded();
    let people = &loaded.config.people;
    let items: Vec<Value> = all
        .into_iter()
        .filter(|a| who.sees(&a.branch))
        .map(|a| {
            let name = people.get(&a.owner).map(|p| p.name.clone());
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            v["owner_name"] = json!(name);
            v
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
