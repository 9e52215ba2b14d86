//! `GET /api/v1/reports/response`: how fast each branch answers, per
//! playbook and step, over a period (docs/REPORTS.md).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Principal, read};
use crate::clock;
use crate::store::IncidentQuery;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    branch: Option<String>,
    playbook: Option<String>,
    drill: Option<bool>,
    format: Option<String>,
}

/// Incidents read per page while walking back to `from`.
const PAGE: usize = 2000;

/// See [`crate::response::period_bound`].
fn bound(v: &str, end: bool, tz: chrono_tz::Tz, field: &str) -> Result<DateTime<Utc>, ApiError> {
    crate::response::period_bound(v, end, tz).ok_or_else(|| {
        ApiError::bad(
            format!(
                "invalid `{field}` `{}`: expected a date (2026-12-01) or an RFC 3339 time",
                crate::diag::clip_quotes(v)
            ),
            field,
        )
    })
}

pub async fn response(
    State(s): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text(), None))?;
    let loaded = s.loaded();
    let tz = loaded.config.calendar.timezone;
    let to = match &p.to {
        Some(v) => bound(v, true, tz, "to")?,
        None => clock::now(),
    };
    let from = match &p.from {
        Some(v) => bound(v, false, tz, "from")?,
        None => to - chrono::Duration::days(30),
    };
    if from >= to {
        return Err(ApiError::bad("`from` must be before `to`", "from"));
    }
    let format = p.format.clone().unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "csv" | "md") {
        return Err(ApiError::bad(
            format!(
                "invalid format `{}`: expected json, csv or md",
                crate::diag::clip_quotes(&format)
            ),
            "format",
        ));
    }
    let drill = p.drill.unwrap_or(false);
    let scope = who.scope();
    let (branch, playbook) = (p.branch.clone(), p.playbook.clone());
    // Newest first: walk back page by page until the period's start.
    let incidents = read(&s, move |st| {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = st.list_incidents(&IncidentQuery {
                status: None,
                branch: branch.clone(),
                scope: scope.clone(),
                playbook: playbook.clone(),
                limit: PAGE,
                cursor,
            })?;
            let past = page.items.last().is_none_or(|i| i.opened_at < from);
            out.extend(
                page.items
                    .into_iter()
                    .filter(|i| i.opened_at >= from && i.opened_at < to && i.drill == drill),
            );
            match page.next {
                Some(n) if !past => cursor = Some(n),
                _ => break,
            }
        }
        Ok(out)
    })
    .await?;
    let rows = crate::response::rows(&incidents);
    Ok(match format.as_str() {
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::response::csv(&rows),
        )
            .into_response(),
        "md" => {
            let title = format!(
                "Response report{}: {} to {}",
                if drill { " (drills)" } else { "" },
                crate::show::time(from, tz),
                crate::show::time(to, tz)
            );
            (
                [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
                crate::response::markdown(&title, &rows),
            )
                .into_response()
        }
        _ => Json(json!({ "from": from, "to": to, "drill": drill, "rows": rows })).into_response(),
    })
}
