//! `audit verify` on SQLite: the chain row by row ([`Verifier`]), and every
//! stored event, incident and history line against the audit rows that
//! recorded it. History lines are audit rows, so the chain covers them; an
//! event row is compared with its `event.received` row, an incident's body
//! with the digest of its last `incident.saved` row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::{STATE, digest};
use crate::store::StoreError;
use crate::store::audit::{AuditCheck, AuditKey, AuditRow, Head, Verifier};

/// Checks the whole log and what it recorded; the first fault found is named.
pub(super) fn verify(
    conn: &Connection,
    key: Option<AuditKey>,
    published: Option<&Head>,
) -> Result<AuditCheck, StoreError> {
    let mut v = Verifier::new(key).with_head(published);
    // incident id -> (seq of its last `incident.saved` row, the digest).
    let mut saved: HashMap<i64, (i64, String)> = HashMap::new();
    let mut events_recorded: i64 = 0;
    {
        let mut st = conn.prepare(
            "SELECT seq, at, entity, what, by, via, detail, prev_hash, hash FROM audit ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        let mut event = conn.prepare(
            "SELECT kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents, silenced FROM events WHERE id = ?1",
        )?;
        while let Some(r) = rows.next()? {
            let row = AuditRow {
                seq: r.get(0)?,
                at: r.get(1)?,
                entity: r.get(2)?,
                what: r.get(3)?,
                by: r.get(4)?,
                via: r.get(5)?,
                detail: r.get(6)?,
                prev_hash: r.get(7)?,
                hash: super::hash_col(r, 8)?,
            };
            if !v.check(&row) {
                break;
            }
            if let Some(id) = row.entity.strip_prefix(STATE) {
                if let Ok(id) = id.parse::<i64>() {
                    saved.insert(id, (row.seq, row.detail));
                }
            } else if let Some(id) = row.entity.strip_prefix("event:")
                && matches!(row.what.as_str(), "event.received" | "event.rejected")
            {
                events_recorded += 1;
                let id: i64 = id.parse().unwrap_or(-1);
                if let Some(why) = event_differs(&mut event, id, &row)? {
                    v.fail(row.seq, format!("event {id}: {why}"));
                    break;
                }
            }
        }
    }
    // A shorter chain than published is the first thing to say.
    v.against(published);
    if !v.is_broken() {
        let stored: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
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
        check_incidents(conn, &saved, &mut v)?;
    }
    Ok(v.finish(published))
}

/// Why the stored event `id` differs from the audit row that recorded it.
fn event_differs(
    st: &mut rusqlite::Statement<'_>,
    id: i64,
    row: &AuditRow,
) -> Result<Option<String>, StoreError> {
    type Stored = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
        bool,
        String,
        Option<String>,
    );
    let stored: Option<Stored> = st
        .query_row([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })
        .optional()?;
    let Some((
        kind,
        branch,
        severity,
        status,
        labels,
        summary,
        occurred_at,
        source,
        matched,
        incidents,
        silenced,
    )) = stored
    else {
        return Ok(Some(format!(
            "it is recorded by audit row {} but missing from the events table",
            row.seq
        )));
    };
    let Some(recorded) = recorded_event(&row.detail) else {
        return Ok(Some(format!(
            "audit row {} does not hold the event as JSON",
            row.seq
        )));
    };
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap_or_default();
    let same_time = |want: &serde_json::Value, have: &str| {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        match (want.as_str().map(parse), parse(have)) {
            (Some(Ok(a)), Ok(b)) => a == b,
            _ => false,
        }
    };
    let mut differs = Vec::new();
    let eq = |k: &str, have: serde_json::Value| recorded.get(k) == Some(&have);
    for (k, ok) in [
        ("kind", eq("kind", kind.into())),
        ("branch", eq("branch", branch.into())),
        ("severity", eq("severity", severity.into())),
        ("status", eq("status", status.into())),
        ("labels", eq("labels", labels)),
        (
            "summary",
            recorded.get("summary").cloned().unwrap_or_default()
                == summary.map_or(serde_json::Value::Null, Into::into),
        ),
        (
            "occurred_at",
            same_time(
                recorded
                    .get("occurred_at")
                    .unwrap_or(&serde_json::Value::Null),
                &occurred_at,
            ),
        ),
        ("source", eq("source", source.into())),
    ] {
        if !ok {
            differs.push(k);
        }
    }
    // Recorded since 0.2: what became of it.
    if let Some(m) = recorded.get("matched")
        && m != &serde_json::Value::Bool(matched)
    {
        differs.push("matched");
    }
    if let Some(i) = recorded.get("incidents") {
        let have: serde_json::Value = serde_json::from_str(&incidents).unwrap_or_default();
        if i != &have {
            differs.push("incidents");
        }
        let want = recorded.get("silenced").and_then(|s| s.as_str());
        if want != silenced.as_deref() {
            differs.push("silenced");
        }
    }
    Ok((!differs.is_empty()).then(|| {
        let (what, verb) = match differs.as_slice() {
            [one] => (one.to_string(), "differs"),
            many => (many.join(", "), "differ"),
        };
        format!(
            "its stored {what} {verb} from audit row {} that recorded it",
            row.seq
        )
    }))
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
    conn: &Connection,
    saved: &HashMap<i64, (i64, String)>,
    v: &mut Verifier,
) -> Result<(), StoreError> {
    let mut st = conn.prepare("SELECT id, body FROM incidents ORDER BY id")?;
    let mut rows = st.query([])?;
    let mut seen = 0usize;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let body: String = r.get(1)?;
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
                let lines: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM audit WHERE entity GLOB 'incident:*' AND entity = ?1",
                    [format!("incident:{id}")],
                    |r| r.get(0),
                )?;
                if lines == 0 {
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
    if seen < saved.len() {
        let mut missing: Vec<(&i64, &(i64, String))> = saved.iter().collect();
        missing.sort();
        for (id, (seq, _)) in missing {
            let exists: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM incidents WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if !exists {
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
