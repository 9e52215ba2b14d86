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

pub fn parse(body: &[u8]) -> Result<Vec<EventInput>, EventError> {
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
    let mut out = Vec::with_capacity(p.alerts.len());
    for (i, a) in p.alerts.into_iter().enumerate() {
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
        out.push(EventInput {
            kind,
            branch,
            severity,
            status: Some(status),
            labels,
            summary,
            occurred_at,
            source: Some("alertmanager".into()),
        });
    }
    Ok(out)
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
        let evs = parse(body).unwrap();
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
        let e =
            parse(br#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}"#)
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("alerts[0].labels.branch"));
        let e = parse(br#"{"version":"3","alerts":[]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("version"));
    }
}
