//! Rows for the store's tests: an incident and a message as the engine
//! would hand them over, built here once for every backend's tests.
#![cfg(test)]

use chrono::{DateTime, Utc};

use crate::engine::{ChannelKind, Incident, IncidentStatus, Notification};

/// An incident of playbook `atm` at `branch`, opened at `at`.
pub fn incident(id: i64, branch: &str, drill: bool, at: DateTime<Utc>) -> Incident {
    Incident {
        id,
        playbook_id: "atm".into(),
        playbook_version: "v".into(),
        playbook: None,
        branch: branch.into(),
        tier: 1,
        status: IncidentStatus::Open,
        drill,
        drill_run: None,
        rehearsal: false,
        group: Default::default(),
        group_key: format!("{branch}/{id}"),
        opened_at: at,
        resolved_at: None,
        event_count: 1,
        kind: "atm.down".into(),
        severity: "warning".into(),
        summary: None,
        labels: Default::default(),
        steps: Vec::new(),
        attached: Default::default(),
        used_links: Default::default(),
        counted_tier: None,
        timed_tiers: Default::default(),
        chain: 0,
    }
}

/// A message about `incident` to `recipient` (an address for email, a
/// channel's name for a webhook).
pub fn message(
    incident: &Incident,
    channel: ChannelKind,
    recipient: &str,
    at: DateTime<Utc>,
) -> Notification {
    Notification {
        incident: incident.id,
        step: None,
        channel,
        drill: incident.drill,
        target: "role:it-duty".into(),
        recipient: recipient.into(),
        person: None,
        subject: format!("ACK {}: ATM down", incident.branch),
        body: "ATM 3 is down.".into(),
        created_at: at,
        links: Vec::new(),
        link_until: None,
        announcement: false,
        urgent: false,
        grant_until: None,
        payload: None,
    }
}
