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
        Some(t) => super::error::time_param(
            t,
            "at",
            "RFC 3339 with an offset, e.g. 2026-12-24T03:00:00+08:00",
        )?,
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

/// How far ahead calendars reach.
const CALENDAR_DAYS: i64 = 90;

fn ics(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/calendar; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /api/v1/rosters/{id}.ics`: the roster's turns for the next 90 days.
pub async fn roster_calendar(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let loaded = s.loaded();
    let cfg = &loaded.config;
    let scope = who.scope();
    let r = file
        .strip_suffix(".ics")
        .and_then(|id| loaded.rosters.iter().find(|r| r.id == id))
        .filter(|r| r.branches.iter().any(|b| scope.sees(b)))
        .ok_or_else(|| {
            ApiError::not_found(format!("no roster `{}`", crate::diag::clip_quotes(&file)))
        })?;
    let now = clock::now();
    let turns = r.turns(
        now,
        now + chrono::Duration::days(CALENDAR_DAYS),
        &cfg.calendar,
        &cfg.away,
        |p| cfg.people.get(p).map_or(p.to_string(), |x| x.name.clone()),
    );
    Ok(ics(crate::roster::ics::render(
        &format!("{} ({})", r.id, r.role),
        &turns,
    )))
}

/// `GET /api/v1/people/{id}`: a person, with the link to their own shift
/// calendar (for a phone: it works without a token).
pub async fn person(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let loaded = s.loaded();
    let cfg = &loaded.config;
    let scope = who.scope();
    let p = cfg
        .people
        .get(&id)
        .filter(|p| scope.is_all() || !scope.pick(&p.branches).is_empty())
        .ok_or_else(|| {
            ApiError::not_found(format!("no person `{}`", crate::diag::clip_quotes(&id)))
        })?;
    // The calendar's key never expires and outlives any token: it is
    // given to the person's own token, and to those who hand links out (the
    // operations centre, an admin, the local CLI), not to every colleague.
    let own = who.person() == Some(p.id.as_str());
    let hands_out = matches!(
        who.role(),
        None | Some(crate::config::TokenRole::Ops | crate::config::TokenRole::Admin)
    );
    Ok(Json(json!({
        "id": p.id, "name": p.name, "roles": p.roles, "branches": p.branches,
        "rosters": loaded.rosters.iter().filter(|r| r.layers.iter().any(|l| l.people.contains(&p.id)) || r.overrides.iter().any(|o| o.person == p.id)).map(|r| r.id.clone()).collect::<Vec<_>>(),
        "calendar": (own || hands_out).then(|| calendar_link(&s, &p.id)),
    })))
}

pub fn calendar_link(s: &AppState, person: &str) -> String {
    format!(
        "{}/api/v1/people/{person}/shifts.ics?key={}",
        s.loaded().config.public_url,
        s.links.calendar_key(person)
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyParams {
    key: Option<String>,
}

/// `GET /api/v1/people/{id}/shifts.ics?key=`: a person's turns in every
/// roster for the next 90 days, by their signed link.
pub async fn shifts(
    State(s): State<AppState>,
    Extension(client): Extension<super::auth::Client>,
    axum::extract::Path(id): axum::extract::Path<String>,
    q: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    let key = q.ok().and_then(|Query(k)| k.key).unwrap_or_default();
    let loaded = s.loaded();
    let cfg = &loaded.config;
    // A wrong key counts as a refusal, so guessing is throttled like any other.
    if !cfg.people.contains_key(&id) || !s.links.calendar_key_holds(&id, &key) {
        return super::auth::refuse(
            &s,
            client.0,
            "link_refused",
            &format!(
                "calendar link refused for `{}`",
                crate::diag::clip_quotes(&id)
            ),
            ApiError::not_found("no such calendar link"),
        );
    }
    let now = clock::now();
    let until = now + chrono::Duration::days(CALENDAR_DAYS);
    let name_of = |p: &str| cfg.people.get(p).map_or(p.to_string(), |x| x.name.clone());
    let mut turns: Vec<crate::roster::ics::Turn> = loaded
        .rosters
        .iter()
        .flat_map(|r| r.turns(now, until, &cfg.calendar, &cfg.away, name_of))
        .filter(|t| t.person == id)
        .collect();
    turns.sort_by_key(|t| t.from);
    let name = name_of(&id);
    ics(crate::roster::ics::render(
        &format!("{name}: shifts"),
        &turns,
    ))
}
