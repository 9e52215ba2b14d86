//! The JSON resources the API answers with.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::Person;
use crate::engine::{HistoryEntry, Incident};
use crate::store::OutboxRow;

/// The incident resource (docs/API.md).
pub fn incident_json(
    i: &Incident,
    history: Option<&[HistoryEntry]>,
    outbox: Option<&[OutboxRow]>,
    people: &BTreeMap<String, Person>,
) -> Value {
    let steps: Vec<Value> = i
        .steps
        .iter()
        .map(|s| {
            let mut v = json!({
                "id": s.id, "title": s.title, "action": s.action, "state": s.state, "assignee": s.assignee,
                "critical": s.critical, "deadline": s.deadline, "activated_at": s.activated_at,
                "notified_at": s.notified_at, "acknowledged_at": s.acknowledged_at, "done_at": s.done_at,
                "response_seconds": s.response_seconds, "by": s.by, "escalations": s.escalations_fired,
                "overdue": s.overdue_escalated, "closed": s.closed,
            });
            // Whom a rostered assignee resolved to (the person on duty).
            if let Some(p) = &s.on_duty {
                v["on_duty"] = json!(p);
            }
            // A step waiting out its `delay`: when it starts.
            if let Some(t) = s.starts_at {
                v["starts_at"] = json!(t);
            }
            if !s.roll_call.is_empty() {
                let missing: Vec<Value> = s
                    .roll_call
                    .difference(&s.confirmed)
                    .map(|id| json!({ "id": id, "name": people.get(id).map(|p| p.name.as_str()) }))
                    .collect();
                v["roll_call"] = json!({ "people": s.roll_call, "confirmed": s.confirmed, "missing": missing });
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": i.id, "playbook": i.playbook_id, "playbook_version": i.playbook_version, "branch": i.branch,
        "tier": i.tier, "status": i.status, "drill": i.drill, "group": i.group, "opened_at": i.opened_at,
        "resolved_at": i.resolved_at, "event_count": i.event_count, "kind": i.kind, "severity": i.severity,
        "summary": i.summary, "labels": i.labels, "steps": steps, "attached": i.attached,
        // Resolved, with follow-up steps still running (`status=follow-up`).
        "follow_up": i.status == crate::engine::IncidentStatus::Resolved && i.is_live(),
    });
    if let Some(h) = history {
        v["history"] = json!(
            h.iter()
                .map(|h| json!({"at": h.at, "what": h.what, "by": h.by, "via": h.via, "detail": h.detail}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(o) = outbox {
        v["outbox"] = json!(o);
    }
    v
}
