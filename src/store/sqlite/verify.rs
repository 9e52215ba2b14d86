//! What `audit verify` reads on SQLite; the checking is `store::check`'s.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::store::StoreError;
use crate::store::audit::{AuditCheck, AuditKey, AuditRow, Head};
use crate::store::check::{PAGE, Stored, StoredEvent};

struct Sqlite<'c>(&'c Connection);

impl Stored for Sqlite<'_> {
    fn audit_after(&mut self, seq: i64) -> Result<Vec<AuditRow>, StoreError> {
        let mut st = self.0.prepare_cached(
            "SELECT seq, at, entity, what, by, via, detail, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map([seq, PAGE], |r| {
            Ok(AuditRow {
                seq: r.get(0)?,
                at: r.get(1)?,
                entity: r.get(2)?,
                what: r.get(3)?,
                by: r.get(4)?,
                via: r.get(5)?,
                detail: r.get(6)?,
                prev_hash: r.get(7)?,
                hash: super::hash_col(r, 8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn events(&mut self, ids: &[i64]) -> Result<HashMap<i64, StoredEvent>, StoreError> {
        let mut st = self.0.prepare_cached(
            "SELECT id, kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents, silenced, received_at, rejected
             FROM events WHERE id IN (SELECT value FROM json_each(?1))",
        )?;
        let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let json = |s: String| serde_json::from_str(&s).unwrap_or_default();
        let rows = st.query_map([ids], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                StoredEvent {
                    kind: r.get(1)?,
                    branch: r.get(2)?,
                    severity: r.get(3)?,
                    status: r.get(4)?,
                    labels: json(r.get(5)?),
                    summary: r.get(6)?,
                    occurred_at: super::parse_ts(&r.get::<_, String>(7)?).ok(),
                    source: r.get(8)?,
                    matched: r.get(9)?,
                    incidents: json(r.get(10)?),
                    silenced: r.get(11)?,
                    received_at: super::parse_ts(&r.get::<_, String>(12)?).ok(),
                    rejected: r.get(13)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn event_count(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .0
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?)
    }

    fn incidents_after(&mut self, id: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let mut st = self
            .0
            .prepare_cached("SELECT id, body FROM incidents WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map([id, PAGE], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn history_lines(&mut self, id: i64) -> Result<i64, StoreError> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) FROM audit WHERE entity GLOB 'incident:*' AND entity = ?1",
            [format!("incident:{id}")],
            |r| r.get(0),
        )?)
    }

    fn incident_exists(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) > 0 FROM incidents WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?)
    }
}

/// Checks the whole log and what it recorded; the first fault found is named.
pub(super) fn verify(
    conn: &Connection,
    key: Option<AuditKey>,
    published: Option<&Head>,
) -> Result<AuditCheck, StoreError> {
    crate::store::check::verify(&mut Sqlite(conn), key, published)
}
