//! Pages for people: `GET /incidents/{id}`, the readable incident that the
//! "Incident:" link of every email opens (the JSON stays under `/api/v1`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::AppState;
use crate::html::escape;
use crate::target::Target;

/// How many history lines a page shows (the newest); the API has them all.
const HISTORY_LINES: usize = 300;

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (status, Html(crate::html::page(title, body))).into_response()
}

fn when(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    crate::show::time_or_dash(t, tz)
}

pub async fn incident(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<super::Principal>>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return page(
            StatusCode::BAD_REQUEST,
            "No such incident",
            "<p>An incident number is a whole number, like <code>/incidents/7</code>.</p>",
        );
    };
    let reader = Arc::clone(&s.reader);
    let found = match tokio::task::spawn_blocking(move || reader.incident(id)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            tracing::error!("incident page: {e}");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a minute",
                "<p>branchguard cannot read its database right now (a fault on our side). Try again shortly.</p>",
            );
        }
        Err(e) => {
            tracing::error!("incident page: {e}");
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again",
                "<p>Something went wrong on our side.</p>",
            );
        }
    };
    // A message's grant opens its own incident and no other.
    let allowed = |i: &crate::engine::Incident| match &*who {
        super::Principal::Grant { incident } => *incident == i.id,
        other => other.sees(&i.branch),
    };
    let Some((inc, history)) = found.filter(|(i, _)| allowed(i)) else {
        return page(
            StatusCode::NOT_FOUND,
            "No such incident",
            &format!("<p>There is no incident #{id}.</p>"),
        );
    };
    let loaded = s.loaded();
    let cfg = &loaded.config;
    let tz = cfg.tz_of(&inc.branch);
    let branch = cfg
        .branches
        .get(&inc.branch)
        .map_or(inc.branch.as_str(), |b| b.name.as_str());
    let playbook = loaded
        .playbook(&inc.playbook_id)
        .map_or(inc.playbook_id.clone(), |p| p.name.clone());
    let mut b = String::new();
    if inc.drill {
        b.push_str("<p><strong>[DRILL]</strong> This is a drill.</p>");
    }
    b.push_str(&format!(
        "<dl><dt>Branch</dt><dd>{}</dd><dt>Status</dt><dd>{}, tier {}</dd><dt>Opened</dt><dd>{}</dd><dt>Resolved</dt><dd>{}</dd><dt>What happened</dt><dd>{} ({}){}</dd><dt>Events</dt><dd>{}</dd></dl>",
        escape(branch),
        inc.status.as_str(),
        inc.tier,
        escape(&when(Some(inc.opened_at), tz)),
        escape(&when(inc.resolved_at, tz)),
        escape(&inc.kind),
        escape(&inc.severity),
        inc.summary
            .as_deref()
            .map(|s| format!(": {}", escape(s)))
            .unwrap_or_default(),
        inc.event_count
    ));
    b.push_str("<h2>Steps</h2><table><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">State</th><th scope=\"col\">Owner</th><th scope=\"col\">Deadline</th><th scope=\"col\">Answered by</th></tr></thead><tbody>");
    for st in &inc.steps {
        let owner = st
            .assignee
            .as_deref()
            .and_then(|a| Target::parse(a).ok())
            .map_or_else(|| "-".to_string(), |t| cfg.describe(&t, &inc.branch));
        let mut state = st.state_name().to_string();
        if !st.roll_call.is_empty() {
            let missing: Vec<String> = st
                .roll_call
                .difference(&st.confirmed)
                .map(|p| cfg.people.get(p).map_or(p.clone(), |x| x.name.clone()))
                .collect();
            if !missing.is_empty() {
                state.push_str(&format!("; not yet safe: {}", missing.join(", ")));
            }
        }
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&st.title),
            escape(&state),
            escape(&owner),
            escape(&when(st.deadline, tz)),
            escape(st.by.as_deref().unwrap_or("-"))
        ));
    }
    b.push_str("</tbody></table><h2>History</h2><ul>");
    let skip = history.len().saturating_sub(HISTORY_LINES);
    if skip > 0 {
        b.push_str(&format!(
            "<li>… {skip} earlier lines (all of them: <code>/api/v1/incidents/{id}</code>)</li>"
        ));
    }
    for h in history.iter().skip(skip) {
        b.push_str(&format!(
            "<li><time>{}</time> {} — {}: {}</li>",
            escape(&when(Some(h.at), tz)),
            escape(&h.what),
            escape(&h.by),
            escape(&h.detail)
        ));
    }
    b.push_str("</ul>");
    page(StatusCode::OK, &format!("Incident #{id}: {playbook}"), &b)
}
