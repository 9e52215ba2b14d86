//! The operations centre's page: `GET /` serves a shell and its script and
//! style (embedded in the binary); the script reads `GET /api/v1/dashboard`
//! with the signed-in token and refreshes when `GET /api/v1/stream` says the
//! engine committed something.
//!
//! **Invariant:** the page holds no data of its own: everything it shows comes
//! from the API with the viewer's token, so the token's role and branches
//! decide what is shown exactly as they decide what the API answers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Need, allows};
use super::board::{self, Limits};
use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::config::BranchSelection;
use crate::store::{DrillRunQuery, IncidentQuery};
use tokio_util::sync::CancellationToken;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const WALL: &str = include_str!("ui/wall.html");
const WALL_SCRIPT: &str = include_str!("ui/wall.js");
const WALL_STYLE: &str = include_str!("ui/wall.css");

/// Open incidents read for one answer; beyond this the counts say "at least".
const OPEN_READ: usize = 20_000;
/// Drill runs behind the scoreboard.
const RUNS_READ: usize = 500;
/// Live-feed messages to one page are at most this often: a storm of commits
/// becomes one refresh per interval, not one per commit.
const FEED_EVERY: Duration = Duration::from_millis(300);

pub async fn shell() -> Response {
    page(INDEX)
}

/// `GET /wall`: the operations centre's wall screen (its data, like the
/// dashboard's, comes from the API with a token).
pub async fn wall() -> Response {
    page(WALL)
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // Its buttons act: no other site may frame it (clickjacking).
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        "wall.js" => (WALL_SCRIPT, "text/javascript; charset=utf-8"),
        "wall.css" => (WALL_STYLE, "text/css; charset=utf-8"),
        _ => return ApiError::not_found(format!("no file `{file}`")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    branch: Option<String>,
    limit: Option<String>,
}

pub async fn data(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let limit = super::incidents::limit_of(p.limit.as_deref())?;
    let scope = who.scope();
    let within = scope.list();
    let sc = scope.clone();
    let (open, truncated, runs, silences, follow) = read(&s, move |st| {
        let page = st.list_incidents(&IncidentQuery {
            status: Some("open".into()),
            scope: sc.clone(),
            limit: OPEN_READ,
            ..IncidentQuery::default()
        })?;
        let follow = st.list_incidents(&IncidentQuery {
            status: Some("follow-up".into()),
            scope: sc.clone(),
            limit: 1000,
            ..IncidentQuery::default()
        })?;
        let runs = st.list_drill_runs(&DrillRunQuery {
            drill: None,
            branch: None,
            scope: sc,
            limit: RUNS_READ,
            cursor: None,
        })?;
        Ok((
            page.items,
            page.next.is_some(),
            runs.items,
            st.silences(Some(crate::clock::now()))?,
            follow.items,
        ))
    })
    .await?;
    let loaded = s.loaded();
    let cfg = &loaded.config;
    let now = clock::now();
    let limits = Limits {
        incidents: limit,
        branches: 300,
        probes: 300,
        trend: 20,
    };
    let name = |id: &str| {
        loaded
            .playbook(id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    let mut incidents = board::incidents(&open, cfg, name, p.branch.as_deref(), now, &limits);
    incidents["truncated"] = json!(truncated);
    let states: Vec<_> = match s.probes.lock() {
        Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(_) => Vec::new(),
    };
    let sees = |b: &str| scope.sees(b);
    // A standby takes no action (each would be answered 503): the page says
    // where the leader is instead of offering buttons.
    let standby =
        s.ha.as_ref()
            .filter(|h| !h.is_leader())
            .map(|h| h.refusal());
    let may = |need: Need| standby.is_none() && who.role().is_none_or(|r| allows(r, need));
    // A scoped viewer sees the silences that can hold back its branches' events.
    let silences: Vec<Value> = silences
        .iter()
        .filter(|x| {
            scope.is_all()
                || crate::engine::breadth(&x.matchers, &loaded)
                    .branches
                    .iter()
                    .any(|b| scope.sees(b))
        })
        .map(|x| {
            json!({
                "id": x.id, "matchers": x.matchers, "starts_at": x.starts_at, "ends_at": x.ends_at,
                "created_by": x.created_by, "comment": x.comment, "active": x.active_at(now),
            })
        })
        .collect();
    let windows: Vec<Value> = cfg
        .maintenance
        .iter()
        .filter(|m| match &m.branches {
            BranchSelection::All => true,
            BranchSelection::List(l) => l.iter().any(|b| scope.sees(b)),
        })
        .map(|m| {
            json!({
                "name": m.name, "start": m.start.source, "duration_seconds": m.duration.as_secs(),
                "matchers": m.matchers,
            })
        })
        .collect();
    Ok(Json(json!({
        "now": now,
        "who": {
            "name": who.name(), "role": who.role().map(|r| r.as_str()),
            "branches": within, "person": who.person(),
            "tokens": !cfg.auth.tokens.is_empty(),
        },
        "standby": standby,
        "can": {
            "answer": may(Need::Answer), "command": may(Need::Command),
            "silence": may(Need::Silence), "drill_run": may(Need::DrillRun),
        },
        // Time zones for writing times: the bank's, and branches' own.
        "zones": {
            "default": cfg.calendar.timezone.name(),
            "branches": cfg.branches.values()
                .filter_map(|b| b.timezone.map(|z| (b.id.clone(), z.name())))
                .collect::<BTreeMap<_, _>>(),
        },
        "incidents": incidents,
        "follow_up": board::follow_ups(&follow, cfg, name, now, &limits),
        "probes": board::probes(&states, sees, &limits),
        "silences": silences,
        "maintenance": windows,
        "scoreboard": board::scoreboard(&runs, cfg, sees, &limits),
        "on_duty": board::on_duty(&open, &loaded, now, 100),
    })))
}

/// Server-sent events: `change` after engine commits (at most one per
/// [`FEED_EVERY`]), so the page refreshes without polling. The feed ends
/// when a reload removes (or changes) the token it was opened with.
pub async fn stream(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
) -> Response {
    let most = (s.loaded().config.limits.connections / 2).max(1);
    let Some(open) = FeedSlot::take(&s.streams, most) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{most} live feeds are open already (half of limits.connections); try again later"
            ),
            None,
        )
        .retry_after(5)
        .into_response();
    };
    let rx = s.changes.clone();
    let stop = s.shutdown.clone();
    let revoked = CancellationToken::new();
    if let Principal::Token { name, .. } = &*who {
        let name = name.clone();
        let token_of = move |l: &crate::config::Loaded| {
            l.config
                .auth
                .tokens
                .iter()
                .find(|t| t.name == name)
                .map(|t| (t.sha256, t.role, t.branches.clone(), t.person.clone()))
        };
        let opened_with = token_of(&s.loaded());
        let mut config = s.reloader.subscribe();
        let (revoked, stop) = (revoked.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = revoked.cancelled() => break,
                    r = config.changed() => {
                        if r.is_err() {
                            break;
                        }
                        let now = token_of(&config.borrow_and_update());
                        if now != opened_with {
                            revoked.cancel();
                            break;
                        }
                    }
                }
            }
        });
    }
    let ends = revoked.clone();
    // Dropped with the feed (the client went away): ends the watcher of the
    // token above and frees the feed's slot.
    let gone = (revoked.drop_guard(), open);
    let feed = futures_util::stream::unfold((rx, stop, true), move |(mut rx, stop, first)| {
        let ends = ends.clone();
        let _held = &gone;
        async move {
            if ends.is_cancelled() {
                return None;
            }
            if !first {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = ends.cancelled() => return None,
                    r = rx.changed() => r.ok()?,
                }
                // Let a burst of commits settle into one message.
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(FEED_EVERY) => {}
                }
            }
            let seq = *rx.borrow_and_update();
            let ev = SseEvent::default()
                .event(if first { "hello" } else { "change" })
                .data(seq.to_string());
            Some((Ok::<_, Infallible>(ev), (rx, stop, false)))
        }
    });
    Sse::new(feed)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One live feed's place in the count; given back when dropped.
struct FeedSlot(Arc<std::sync::atomic::AtomicUsize>);

impl FeedSlot {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, most: usize) -> Option<FeedSlot> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()
            .map(|_| FeedSlot(Arc::clone(count)))
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
