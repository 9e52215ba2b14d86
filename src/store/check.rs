//! `audit verify` for every backend: the chain row by row ([`Verifier`]),
//! and every stored event, incident and history line against the audit rows
//! that recorded it. History lines are audit rows, so the chain covers them;
//! an event row is compared with its `event.received` row, an incident's
//! body with the digest of its last `incident.saved` row. A backend only
//! reads its rows, a page at a time ([`Stored`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::StoreError;
use super::audit::{AuditCheck, AuditKey, AuditRow, Head, Verifier};
use crate::engine::{INCIDENT_STATE as STATE, body_digest as digest};

/// Rows read at once: a page of the log, and the events it recorded.
pub(crate) const PAGE: i64 = 5000;

/// An event as a backend stored it.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub kind: String,
    pub branch: String,
    pub severity: String,
    pub status: String,
    /// The labels as JSON (unreadable: `Null`, which differs).
    pub labels: serde_json::Value,
    pub summary: Option<String>,
    /// Unreadable: `None`, which differs.
    pub occurred_at: Option<DateTime<Utc>>,
    pub source: String,
    pub matched: bool,
    pub incidents: serde_json::Value,
    pub silenced: Option<String>,
    /// When it came (unreadable: `None`, which differs): its row's `at`.
    pub received_at: Option<DateTime<Utc>>,
    /// Why it was refused: its row is `event.rejected` and says so first.
    pub rejected: Option<String>,
}

/// What a backend reads for a check, all within one snapshot.
pub(crate) trait Stored {
    /// Up to [`PAGE`] audit rows after `seq`, in order, `prev_hash` as stored.
    fn audit_after(&mut self, seq: i64) -> Result<Vec<AuditRow>, StoreError>;
    /// The stored events among `ids`.
    fn events(&mut self, ids: &[i64]) -> Result<HashMap<i64, StoredEvent>, StoreError>;
    fn event_count(&mut self) -> Result<i64, StoreError>;
    /// Up to [`PAGE`] incidents after `id`, in order: id and stored body.
    fn incidents_after(&mut self, id: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// How many history lines incident `id` has.
    fn history_lines(&mut self, id: i64) -> Result<i64, StoreError>;
    fn incident_exists(&mut self, id: i64) -> Result<bool, StoreError>;
}

/// Checks the whole log and what it recorded; the first fault found is named.
pub(crate) fn verify(
    s: &mut dyn Stored,
    key: Option<AuditKey>,
    published: Option<&Head>,
) -> Result<AuditCheck, StoreError> {
    let mut v = Verifier::new(key).with_head(published);
    // incident id -> (seq of its last `incident.saved` row, the digest).
    let mut saved: HashMap<i64, (i64, String)> = HashMap::new();
    let mut events_recorded: i64 = 0;
    let mut after = 0;
    'pages: loop {
        let rows = s.audit_after(after)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let ids: Vec<i64> = rows.iter().filter_map(event_of).collect();
        let events = s.events(&ids)?;
        for row in rows {
            if !v.check(&row) {
                break 'pages;
            }
            if let Some(id) = row.entity.strip_prefix(STATE) {
                if let Ok(id) = id.parse::<i64>() {
                    saved.insert(id, (row.seq, row.detail));
                }
            } else if let Some(id) = event_of(&row) {
                events_recorded += 1;
                if let Some(why) = event_differs(events.get(&id), &row) {
                    v.fail(row.seq, format!("event {id}: {why}"));
                    break 'pages;
                }
            }
        }
    }
    // A shorter chain than published is the first thing to say.
    v.against(published);
    if !v.is_broken() {
        let stored = s.event_count()?;
        if stored != events_recorded {
            let head = v.head();
            v.fail(
                head.rows,
                format!(
                    "the events table holds {stored} rows but the audit log recorded {events_recorded}: events were inserted or deleted outside branchguard"
                ),
            );
        }
    }
    if !v.is_broken() {
        check_incidents(s, &saved, &mut v)?;
    }
    Ok(v.finish(published))
}

/// The event an `event.received` or `event.rejected` row records (a bad
/// id: -1, which no stored event has).
fn event_of(row: &AuditRow) -> Option<i64> {
    let id = row.entity.strip_prefix("event:")?;
    matches!(row.what.as_str(), "event.received" | "event.rejected")
        .then(|| id.parse().unwrap_or(-1))
}

/// Why the stored event differs from the audit row that recorded it.
fn event_differs(stored: Option<&StoredEvent>, row: &AuditRow) -> Option<String> {
    let Some(e) = stored else {
        return Some(format!(
            "it is recorded by audit row {} but missing from the events table",
            row.seq
        ));
    };
    let Some(recorded) = recorded_event(&row.detail) else {
        return Some(format!(
            "audit row {} does not hold the event as JSON",
            row.seq
        ));
    };
    let same_time = |want: Option<&serde_json::Value>| {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        match (want.and_then(|w| w.as_str()).map(parse), e.occurred_at) {
            (Some(Ok(a)), Some(b)) => a == b,
            _ => false,
        }
    };
    let mut differs = Vec::new();
    let eq = |k: &str, have: serde_json::Value| recorded.get(k) == Some(&have);
    for (k, ok) in [
        ("kind", eq("kind", e.kind.clone().into())),
        ("branch", eq("branch", e.branch.clone().into())),
        ("severity", eq("severity", e.severity.clone().into())),
        ("status", eq("status", e.status.clone().into())),
        ("labels", eq("labels", e.labels.clone())),
        (
            "summary",
            recorded.get("summary").cloned().unwrap_or_default()
                == e.summary
                    .clone()
                    .map_or(serde_json::Value::Null, Into::into),
        ),
        // Left out since 2026-12-08 when the row's own `at` and `by` say it.
        (
            "occurred_at",
            same_time(Some(
                recorded
                    .get("occurred_at")
                    .unwrap_or(&serde_json::Value::from(row.at.as_str())),
            )),
        ),
        (
            "source",
            match recorded.get("source") {
                Some(s) => s == &serde_json::Value::from(e.source.as_str()),
                None => row.by == e.source,
            },
        ),
        // When it came and whether it was refused are the row's own `at`
        // and `what`: an insider moving an event in time, or turning a
        // refused one into an accepted one, is found too.
        (
            "received_at",
            e.received_at.is_some_and(|t| {
                DateTime::parse_from_rfc3339(&row.at).is_ok_and(|a| a.to_utc() == t)
            }),
        ),
        (
            "rejected",
            match (row.what.as_str(), &e.rejected) {
                ("event.received", None) => true,
                ("event.rejected", Some(why)) => row.detail.starts_with(&format!("{why}: ")),
                _ => false,
            },
        ),
    ] {
        if !ok {
            differs.push(k);
        }
    }
    // Recorded since 0.2: what became of it.
    if let Some(m) = recorded.get("matched")
        && m != &serde_json::Value::Bool(e.matched)
    {
        differs.push("matched");
    }
    if let Some(i) = recorded.get("incidents") {
        if i != &e.incidents {
            differs.push("incidents");
        }
        let want = recorded.get("silenced").and_then(|s| s.as_str());
        if want != e.silenced.as_deref() {
            differs.push("silenced");
        }
    }
    (!differs.is_empty()).then(|| {
        let (what, verb) = match differs.as_slice() {
            [one] => (one.to_string(), "differs"),
            many => (many.join(", "), "differ"),
        };
        format!(
            "its stored {what} {verb} from audit row {} that recorded it",
            row.seq
        )
    })
}

/// The event JSON an `event.received` or `event.rejected` row holds (a
/// refused one is `REASON: JSON`).
fn recorded_event(detail: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(detail) {
        return Some(o);
    }
    let mut from = 0;
    while let Some(i) = detail[from..].find(": {") {
        let at = from + i + 2;
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&detail[at..]) {
            return Some(o);
        }
        from = at;
    }
    None
}

/// Every incident row against the digest its last `incident.saved` row
/// recorded. Incidents last written before 0.2 have none and are not checked.
fn check_incidents(
    s: &mut dyn Stored,
    saved: &HashMap<i64, (i64, String)>,
    v: &mut Verifier,
) -> Result<(), StoreError> {
    let mut seen = 0usize;
    let mut after = 0;
    loop {
        let page = s.incidents_after(after)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (id, body) in page {
            match saved.get(&id) {
                Some((seq, want)) => {
                    seen += 1;
                    if &digest(&body) != want {
                        v.fail(
                            *seq,
                            format!(
                                "incident {id}: its stored body differs from what audit row {seq} recorded (edited outside branchguard)"
                            ),
                        );
                        return Ok(());
                    }
                }
                // Last written before 0.2: not digested, but it has a history.
                None => {
                    if s.history_lines(id)? == 0 {
                        let head = v.head();
                        v.fail(
                            head.rows,
                            format!("incident {id}: the audit log never recorded it (inserted outside branchguard)"),
                        );
                        return Ok(());
                    }
                }
            }
        }
    }
    if seen < saved.len() {
        let mut missing: Vec<(&i64, &(i64, String))> = saved.iter().collect();
        missing.sort();
        for (id, (seq, _)) in missing {
            if !s.incident_exists(*id)? {
                v.fail(
                    *seq,
                    format!("incident {id}: recorded by audit row {seq} but missing from the incidents table"),
                );
                return Ok(());
            }
        }
    }
    Ok(())
}
