//! Alertmanager's webhook (payload version 4) → our events (docs/API.md): `kind` is
//! the `kind` label or `alertmanager.<alertname>`, `branch` the `branch` label,
//! `severity` the `severity` label, the status the alert's own; other labels are kept.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

use crate::event::{EventError, EventInput, Severity, Status};

#[derive(Debug, Deserialize)]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: Option<String>,
}

fn err(field: String, message: String) -> EventError {
    EventError {
        field: Some(field),
        message,
    }
}

/// Alertmanager setups name severities their own way; the common ones map onto ours.
fn severity(s: &str) -> Option<Severity> {
    Severity::parse(s).or(match s {
        "page" | "error" | "high" => Some(Severity::Major),
        "warning" | "warn" | "medium" => Some(Severity::Minor),
        "none" | "low" | "informational" => Some(Severity::Info),
        _ => None,
    })
}

/// One alert of a payload: an event, or why it is refused (the rest of the
/// payload still counts).
pub type AlertResult = Result<EventInput, super::Unreadable>;

/// Parses a payload. A payload that is not Alertmanager's (malformed, wrong
/// version) is refused whole; each alert is then mapped on its own.
pub fn parse(body: &[u8]) -> Result<Vec<AlertResult>, EventError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let p: Payload = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        EventError {
            field: (path != "." && !path.is_empty()).then_some(path),
            message: if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else {
                inner.to_string()
            },
        }
    })?;
    if p.version != "4" {
        return Err(err(
            "version".into(),
            format!(
                "unsupported payload version `{}`: expected \"4\"",
                p.version
            ),
        ));
    }
    Ok(p.alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| alert(i, a))
        .collect())
}

/// The `i`-th alert as an event.
fn alert(i: usize, a: Alert) -> AlertResult {
    let partial = Box::new(EventInput {
        kind: a
            .labels
            .get("kind")
            .cloned()
            .or_else(|| {
                a.labels
                    .get("alertname")
                    .map(|n| format!("alertmanager.{n}"))
            })
            .unwrap_or_default(),
        branch: a.labels.get("branch").cloned().unwrap_or_default(),
        severity: None,
        status: None,
        labels: a.labels.clone(),
        summary: a.annotations.get("summary").cloned(),
        occurred_at: None,
        source: Some("alertmanager".into()),
    });
    map_alert(i, a).map_err(|error| super::Unreadable { error, partial })
}

fn map_alert(i: usize, a: Alert) -> Result<EventInput, EventError> {
    let mut labels = a.labels;
    let branch = labels.remove("branch").ok_or_else(|| {
        err(
            format!("alerts[{i}].labels.branch"),
            "the alert has no `branch` label".into(),
        )
    })?;
    let kind = match labels.remove("kind") {
        Some(k) => k,
        None => format!(
            "alertmanager.{}",
            labels.get("alertname").ok_or_else(|| err(
                format!("alerts[{i}].labels.alertname"),
                "the alert has neither `kind` nor `alertname`".into()
            ))?
        ),
    };
    let severity = match labels.remove("severity") {
        None => None,
        Some(s) => Some(severity(&s).ok_or_else(|| {
            err(
                format!("alerts[{i}].labels.severity"),
                format!("unknown severity `{s}`: expected critical, major, minor or info"),
            )
        })?),
    };
    let status = match a.status.as_str() {
        "firing" => Status::Firing,
        "resolved" => Status::Resolved,
        other => {
            return Err(err(
                format!("alerts[{i}].status"),
                format!("unknown status `{other}`: expected firing or resolved"),
            ));
        }
    };
    let occurred_at = match a.starts_at.as_deref() {
        None => None,
        Some(s) => Some(DateTime::<FixedOffset>::parse_from_rfc3339(s).map_err(|e| {
            err(
                format!("alerts[{i}].startsAt"),
                format!("invalid time `{s}`: {e}"),
            )
        })?),
    };
    let summary = a
        .annotations
        .get("summary")
        .or_else(|| a.annotations.get("description"))
        .cloned();
    Ok(EventInput {
        kind,
        branch,
        severity,
        status: Some(status),
        labels,
        summary,
        occurred_at,
        source: Some("alertmanager".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_alerts_to_events() {
        let body = br#"{"version":"4","status":"firing","alerts":[
            {"status":"firing","labels":{"alertname":"CoreDown","branch":"sh-001","severity":"critical","system":"core-banking"},
             "annotations":{"summary":"core down"},"startsAt":"2026-11-24T09:00:00+08:00"},
            {"status":"resolved","labels":{"kind":"system.down","branch":"sh-002","severity":"warning"}}]}"#;
        let evs: Vec<EventInput> = parse(body)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(evs[0].kind, "alertmanager.CoreDown");
        assert_eq!(evs[0].severity, Some(Severity::Critical));
        assert_eq!(
            evs[0].labels.get("system").map(String::as_str),
            Some("core-banking")
        );
        assert_eq!(evs[0].summary.as_deref(), Some("core down"));
        assert_eq!(
            (evs[1].kind.as_str(), evs[1].status, evs[1].severity),
            ("system.down", Some(Status::Resolved), Some(Severity::Minor))
        );
    }

    #[test]
    fn missing_branch_names_the_alert() {
        let alerts = parse(
            br#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X","branch":"b"}},{"status":"firing","labels":{"alertname":"X"}}]}"#,
        )
        .unwrap();
        assert!(alerts[0].is_ok(), "the good alert is kept");
        let e = alerts[1].clone().unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("alerts[1].labels.branch"));
        assert_eq!(
            e.partial.kind, "alertmanager.X",
            "what could be read is kept"
        );
        let e = parse(br#"{"version":"3","alerts":[]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("version"));
    }
}
