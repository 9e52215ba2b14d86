//! What `audit verify` and an export read on PostgreSQL, in the caller's
//! read-only snapshot; the checking is `store::check`'s.

use std::collections::HashMap;

use postgres::Transaction;

use super::*;
use crate::store::audit::{AuditRow, GENESIS, MARKER};
use crate::store::check::{PAGE, Stored, StoredEvent};
use crate::store::records::{Record, Sink};

const AUDIT_COLUMNS: &str = "seq, at, entity, what, by, via, detail, prev_hash, hash";

fn audit_row(r: &Row) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        seq: r.try_get(0)?,
        at: r.try_get(1)?,
        entity: r.try_get(2)?,
        what: r.try_get(3)?,
        by: r.try_get(4)?,
        via: r.try_get(5)?,
        detail: r.try_get(6)?,
        prev_hash: r.try_get(7)?,
        hash: hash_of(r, 8)?,
    })
}

struct Pg<'a, 't>(&'a mut Transaction<'t>);

impl Stored for Pg<'_, '_> {
    fn audit_after(&mut self, seq: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.0
            .query(
                &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&seq, &PAGE],
            )?
            .iter()
            .map(audit_row)
            .collect()
    }

    fn events(&mut self, ids: &[i64]) -> Result<HashMap<i64, StoredEvent>, StoreError> {
        let rows = self.0.query(
            "SELECT id, kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents, silenced, received_at, rejected
             FROM events WHERE id = ANY($1)",
            &[&ids],
        )?;
        let json = |s: String| serde_json::from_str(&s).unwrap_or_default();
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    StoredEvent {
                        kind: r.try_get(1)?,
                        branch: r.try_get(2)?,
                        severity: r.try_get(3)?,
                        status: r.try_get(4)?,
                        labels: json(r.try_get(5)?),
                        summary: r.try_get(6)?,
                        occurred_at: Some(r.try_get(7)?),
                        source: r.try_get(8)?,
                        matched: r.try_get(9)?,
                        incidents: json(r.try_get(10)?),
                        silenced: r.try_get(11)?,
                        received_at: Some(r.try_get(12)?),
                        rejected: r.try_get(13)?,
                    },
                ))
            })
            .collect()
    }

    fn event_count(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .0
            .query_one("SELECT COUNT(*) FROM events", &[])?
            .try_get(0)?)
    }

    fn incidents_after(&mut self, id: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.0
            .query(
                "SELECT id, body FROM incidents WHERE id > $1 ORDER BY id LIMIT $2",
                &[&id, &PAGE],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn history_lines(&mut self, id: i64) -> Result<i64, StoreError> {
        Ok(self
            .0
            .query_one(
                "SELECT COUNT(*) FROM audit WHERE entity = $1",
                &[&format!("incident:{id}")],
            )?
            .try_get(0)?)
    }

    fn incident_exists(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .0
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM incidents WHERE id = $1)",
                &[&id],
            )?
            .try_get(0)?)
    }
}

pub(super) fn verify(
    tx: &mut Transaction<'_>,
    key: Option<AuditKey>,
    published: Option<&Head>,
) -> Result<AuditCheck, StoreError> {
    crate::store::check::verify(&mut Pg(tx), key, published)
}

/// Every incident opened in `[from, to)`, the audit rows about them (with
/// the hash of the row before each) and their outbox rows.
pub(super) fn records(
    tx: &mut Transaction<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    each: &mut Sink<'_>,
) -> Result<(), StoreError> {
    let head = match tx.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
        Some(r) => crate::store::audit::Head {
            rows: r.try_get(0)?,
            hash: hash_of(&r, 1)?,
        },
        None => crate::store::audit::Head {
            rows: 0,
            hash: GENESIS.to_string(),
        },
    };
    let signed_from: Option<i64> = tx
        .query_one(
            "SELECT MIN(seq) FROM audit WHERE what = $1 AND entity = 'daemon'",
            &[&MARKER],
        )?
        .try_get(0)?;
    each(Record::Chain { head, signed_from })?;
    let mut ids = Vec::new();
    for r in tx.query(
        "SELECT id, opened_at, body FROM incidents WHERE opened_at >= $1 AND opened_at < $2 ORDER BY id",
        &[&from, &to],
    )? {
        let id: i64 = r.try_get(0)?;
        ids.push(id);
        each(Record::Incident {
            id,
            opened_at: r.try_get(1)?,
            body: r.try_get(2)?,
        })?;
    }
    if ids.is_empty() {
        return Ok(());
    }
    let entities: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                format!("incident:{id}"),
                format!("{}{id}", crate::engine::INCIDENT_STATE),
            ]
        })
        .collect();
    // Each row with the hash of the row before it (not stored since 2026-11-25).
    for r in tx.query(
        &format!(
            "SELECT {AUDIT_COLUMNS}, before FROM (SELECT {AUDIT_COLUMNS}, lag(hash) OVER (ORDER BY seq) AS before FROM audit) a
             WHERE entity = ANY($1) ORDER BY seq"
        ),
        &[&entities],
    )? {
        let mut row = audit_row(&r)?;
        if row.prev_hash.is_empty() {
            row.prev_hash = match r.try_get::<_, Option<Vec<u8>>>(9)? {
                Some(h) => hex::encode(h),
                None => GENESIS.to_string(),
            };
        }
        each(Record::Audit(row))?;
    }
    for r in tx.query(
        &format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE incident = ANY($1) ORDER BY incident, id"
        ),
        &[&ids],
    )? {
        each(Record::Outbox(Box::new(outbox_row(&r)?)))?;
    }
    Ok(())
}
