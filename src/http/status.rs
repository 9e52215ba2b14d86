//! `/healthz`, `/metrics`, `/api/v1/status` and `/api/v1/reload`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState, read};

/// Healthy when the store takes writes; 503 naming the fault otherwise, so a
/// supervisor or load balancer sees a daemon that cannot store what it is sent.
pub async fn healthz(State(s): State<AppState>) -> Response {
    // A load balancer sends traffic to the leader only.
    if let Some(ha) = s.ha.as_ref().filter(|h| !h.is_leader()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "standby", "ha": ha.view() })),
        )
            .into_response();
    }
    match s.health.failing() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some((since, why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "store": why, "since": since })),
        )
            .into_response(),
    }
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    if let Ok((n, oldest)) = read(&s, |st| {
        Ok((st.outbox_pending()?, st.outbox_oldest_pending()?))
    })
    .await
    {
        let age = oldest.map_or(0.0, |t| {
            (crate::clock::now() - t).num_milliseconds() as f64 / 1000.0
        });
        crate::metrics::outbox_pending(n, age);
    }
    let now = crate::clock::now();
    crate::metrics::roster_gaps(&s.loaded().gap_seconds(now, now + chrono::Duration::days(7)));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

pub async fn status(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<std::sync::Arc<super::auth::Principal>>,
) -> Result<Json<Value>, ApiError> {
    // The outcome first: a reload publishes before it records its outcome, so
    // the set read after it is at least as new as the outcome says.
    let last_reload = s.reloader.status();
    let l = s.loaded();
    let playbooks: Vec<Value> = l
        .playbooks
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "version": p.version}))
        .collect();
    let drills: Vec<Value> = l
        .drills
        .iter()
        .map(|d| json!({"id": d.id, "playbook": d.playbook}))
        .collect();
    let store = match s.health.failing() {
        None => json!({ "ok": true }),
        Some((since, why)) => json!({ "ok": false, "since": since, "error": why }),
    };
    let pending = read(&s, |st| st.outbox_pending()).await.ok();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": s.started_at,
        "config": l.summary(),
        "playbooks": playbooks,
        "drills": drills,
        "last_reload": last_reload,
        "store": store,
        "failing_channels": s.channels.failing(),
        // Who would be paged into a hole in the next 7 days, at the branches
        // the caller sees: a gap names who is away, which is the branch's.
        "roster_gaps": roster_gaps(&l, &who.scope()),
        "outbox_pending": pending,
        // The audit chain's head, as published (and filed beside the database).
        "audit": s.head.get().map(|h| json!({ "rows": h.rows, "hash": h.hash })),
        // Active/standby: this node's role, who leads, and the epoch.
        "ha": s.ha.as_ref().map(|h| h.view()),
    })))
}

/// On a standby every write is answered 503, naming the leader, with
/// `Retry-After`: only the leader's engine decides anything.
pub async fn standby(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match s.ha.as_ref().filter(|h| !reads && !h.is_leader()) {
        None => next.run(req).await,
        // A person pressing a mailed link's button gets a page, not JSON.
        Some(ha) if req.uri().path().starts_with("/ack/") => standby_page(ha, req.uri().path()),
        Some(ha) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, ha.lease().as_secs().max(1).to_string())],
            Json(json!({ "error": ha.refusal() })),
        )
            .into_response(),
    }
}

/// What a person sees who pressed a link's button on a standby: nothing was
/// recorded, and where it can be (the same link at the leader's address,
/// which every mail carries; not the node's name: the link's token is not
/// checked here, so the page tells a stranger nothing a mail does not).
fn standby_page(ha: &crate::ha::Ha, path: &str) -> Response {
    use crate::html::escape;
    let v = ha.view();
    let there = match (v.leader, v.leader_url) {
        (Some(node), Some(url)) if node != v.node => format!(
            "<p><a href=\"{}{}\">Open the same link where answers are recorded now</a>, or try this one again in a minute.</p>",
            escape(url.trim_end_matches('/')),
            escape(path),
        ),
        _ => "<p>Another node is taking over; try the link again in a minute.</p>".to_string(),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, ha.lease().as_secs().max(1).to_string())],
        axum::response::Html(crate::html::page(
            "Not recorded yet",
            &format!("<p>This copy of branchguard is standing by, so nothing was recorded here.</p>{there}"),
        )),
    )
        .into_response()
}

fn roster_gaps(l: &crate::config::Loaded, scope: &crate::scope::Scope) -> Vec<Value> {
    let now = crate::clock::now();
    l.coverage_gaps(now, now + chrono::Duration::days(7))
        .into_iter()
        .filter(|g| scope.sees(&g.branch))
        .map(|g| {
            json!({
                "roster": g.roster, "role": g.role, "branch": g.branch,
                "from": g.from, "until": g.until, "why": g.why,
                "needed_by": { "playbook": g.needed_by.0, "step": g.needed_by.1 },
                "warning": g.to_string(),
            })
        })
        .collect()
}

pub async fn reload(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = std::sync::Arc::clone(&s.reloader);
    let result = tokio::task::spawn_blocking(move || r.reload("api"))
        .await
        .map_err(ApiError::internal)?;
    match result {
        Ok(summary) => Ok(Json(json!({
            "ok": true,
            "summary": summary,
            "restart_required": s.reloader.status().restart_required,
        }))),
        Err(d) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            d.to_string().trim_end().to_string(),
            None,
        )),
    }
}
