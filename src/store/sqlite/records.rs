//! The records of an export on SQLite, read in one snapshot.

use std::collections::HashSet;

use super::*;
use crate::store::records::{Record, Sink, incident_of};

/// Every incident opened in `[from, to)`, the audit rows about them and
/// their outbox rows, in one read transaction. The audit log is read from
/// its first row: an incident's state rows have no index of their own, and
/// each row's `prev_hash` (not stored since 2026-11-25) is the row before's
/// `hash`.
pub(super) fn records(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    each: &mut Sink<'_>,
) -> Result<(), StoreError> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, super::hash_col(r, 1)?)),
        )
        .optional()?
        .map(|(rows, hash)| crate::store::audit::Head { rows, hash })
        .unwrap_or(crate::store::audit::Head {
            rows: 0,
            hash: crate::store::audit::GENESIS.to_string(),
        });
    let signed_from = conn
        .query_row(
            "SELECT MIN(seq) FROM audit WHERE what = ?1 AND entity = 'daemon'",
            [crate::store::audit::MARKER],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    each(Record::Chain { head, signed_from })?;
    let mut ids = HashSet::new();
    {
        let mut st = conn.prepare(
            "SELECT id, opened_at, body FROM incidents WHERE opened_at >= ?1 AND opened_at < ?2 ORDER BY id",
        )?;
        let mut rows = st.query([ts(from), ts(to)])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            ids.insert(id);
            each(Record::Incident {
                id,
                opened_at: time_col(r, 1)?,
                body: r.get(2)?,
            })?;
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    {
        let mut st = conn.prepare(
            "SELECT seq, at, entity, what, by, via, detail, prev_hash, hash FROM audit ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        let mut prev = crate::store::audit::GENESIS.to_string();
        while let Some(r) = rows.next()? {
            let entity: String = r.get(2)?;
            let hash: String = super::hash_col(r, 8)?;
            if incident_of(&entity).is_some_and(|id| ids.contains(&id)) {
                let stored: String = r.get(7)?;
                each(Record::Audit(AuditRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    entity,
                    what: r.get(3)?,
                    by: r.get(4)?,
                    via: r.get(5)?,
                    detail: r.get(6)?,
                    prev_hash: if stored.is_empty() { prev } else { stored },
                    hash: hash.clone(),
                }))?;
            }
            prev = hash;
        }
    }
    let first = ids.iter().min().copied().unwrap_or(0);
    let mut st = conn.prepare(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE incident >= ?1 ORDER BY incident, id"
    ))?;
    let mut rows = st.query([first])?;
    while let Some(r) = rows.next()? {
        let row = outbox_row(r)?;
        if ids.contains(&row.incident) {
            each(Record::Outbox(Box::new(row)))?;
        }
    }
    Ok(())
}
