//! The SQLite backend: WAL journal, `synchronous=FULL` (an answered request
//! survives power loss, not just `kill -9`), one writer connection owned by the
//! engine thread and separate connections for readers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::*;
use crate::config::Playbook;
use crate::engine::{HistoryEntry, Incident, IncidentStatus};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    branch TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    summary TEXT,
    source TEXT NOT NULL,
    matched INTEGER NOT NULL,
    incidents TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_branch ON events (branch, id);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS playbook_versions (
    playbook TEXT NOT NULL,
    version TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (playbook, version)
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    playbook TEXT NOT NULL,
    playbook_version TEXT NOT NULL,
    branch TEXT NOT NULL,
    tier INTEGER NOT NULL,
    status TEXT NOT NULL,
    drill INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    live INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_live ON incidents (live);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    incident INTEGER,
    at TEXT NOT NULL,
    what TEXT NOT NULL,
    by TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_incident ON history (incident, id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    incident INTEGER NOT NULL,
    step TEXT,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    recipient TEXT NOT NULL,
    person TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    link TEXT,
    payload TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox (incident, id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    entity TEXT NOT NULL,
    what TEXT NOT NULL,
    by TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"#;

/// The hash of the row before the first one.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct SqliteStore {
    conn: Connection,
    /// The last audit row's (seq, hash), read on first use.
    tail: Option<(i64, String)>,
    playbooks: HashMap<(String, String), Arc<Playbook>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The audit chain: each row's hash covers its content and the previous hash.
pub fn audit_hash(
    prev: &str,
    seq: i64,
    at: &str,
    entity: &str,
    what: &str,
    by: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, entity, what, by, detail] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/branchguard.db` for writing.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(data_dir.join("branchguard.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')",
            [],
        )?;
        Ok(SqliteStore {
            conn,
            tail: None,
            playbooks: HashMap::new(),
        })
    }

    /// Opens an existing database for reading only (the API, `audit verify`).
    pub fn open_read_only(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            data_dir.join("branchguard.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(SqliteStore {
            conn,
            tail: None,
            playbooks: HashMap::new(),
        })
    }

    fn audit_tail(&mut self) -> Result<(i64, String), StoreError> {
        if let Some(t) = &self.tail {
            return Ok(t.clone());
        }
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let t = row.unwrap_or((0, GENESIS.to_string()));
        self.tail = Some(t.clone());
        Ok(t)
    }

    fn playbook(&mut self, id: &str, version: &str) -> Result<Option<Arc<Playbook>>, StoreError> {
        let key = (id.to_string(), version.to_string());
        if let Some(p) = self.playbooks.get(&key) {
            return Ok(Some(Arc::clone(p)));
        }
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM playbook_versions WHERE playbook = ?1 AND version = ?2",
                params![id, version],
                |r| r.get(0),
            )
            .optional()?;
        let Some(body) = body else { return Ok(None) };
        let pb: Playbook = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
            what: format!("playbook {id} version {version}"),
            source,
        })?;
        let pb = Arc::new(pb);
        self.playbooks.insert(key, Arc::clone(&pb));
        Ok(Some(pb))
    }

    fn history_of(&self, id: i64) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT at, what, by, detail FROM history WHERE incident = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([id], |r| {
            Ok(HistoryEntry {
                incident: Some(id),
                at: parse_ts(&r.get::<_, String>(0)?),
                what: r.get(1)?,
                by: r.get(2)?,
                detail: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

const OUTBOX_COLUMNS: &str = "id, incident, step, channel, target, recipient, person, subject, body, created_at, \
     link, payload, attempts, next_attempt_at, delivered_at, failed_at, last_error";

/// One row of `SELECT {OUTBOX_COLUMNS}`: the API's view and the delivery worker's input alike.
fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let time = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<String>>(i)?.as_deref().map(parse_ts))
    };
    Ok(OutboxRow {
        id: r.get(0)?,
        incident: r.get(1)?,
        step: r.get(2)?,
        channel: r.get(3)?,
        target: r.get(4)?,
        recipient: r.get(5)?,
        person: r.get(6)?,
        subject: r.get(7)?,
        body: r.get(8)?,
        created_at: parse_ts(&r.get::<_, String>(9)?),
        link: r.get(10)?,
        payload: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_at: time(13)?,
        delivered_at: time(14)?,
        failed_at: time(15)?,
        last_error: r.get(16)?,
    })
}

fn incident_from(body: &str) -> Result<Incident, StoreError> {
    serde_json::from_str(body).map_err(|source| StoreError::Corrupt {
        what: "incident".into(),
        source,
    })
}

fn json<T: Serialize>(v: &T) -> String {
    // Serialising our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Store for SqliteStore {
    fn commit(&mut self, round: &Round) -> Result<(), StoreError> {
        let (mut seq, mut prev) = self.audit_tail()?;
        let tx = self.conn.transaction()?;
        {
            let mut audit = tx.prepare_cached(
                "INSERT INTO audit (seq, at, entity, what, by, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut append = |at: &str,
                              entity: &str,
                              what: &str,
                              by: &str,
                              detail: &str|
             -> Result<(), rusqlite::Error> {
                seq += 1;
                let hash = audit_hash(&prev, seq, at, entity, what, by, detail);
                audit.execute(params![seq, at, entity, what, by, detail, prev, hash])?;
                prev = hash;
                Ok(())
            };
            let mut pbs = tx.prepare_cached("INSERT OR IGNORE INTO playbook_versions (playbook, version, body) VALUES (?1, ?2, ?3)")?;
            for pb in &round.playbooks {
                pbs.execute(params![pb.id, pb.version, json(&**pb)])?;
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (id, received_at, occurred_at, kind, branch, severity, status, labels, summary, source, matched, incidents)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for e in &round.events {
                let received = ts(e.received_at);
                ev.execute(params![
                    e.id,
                    received,
                    ts(e.event.occurred_at),
                    e.event.kind,
                    e.event.branch,
                    e.event.severity.as_str(),
                    e.event.status.as_str(),
                    json(&e.event.labels),
                    e.event.summary,
                    e.event.source,
                    e.matched,
                    json(&e.incidents),
                ])?;
                append(
                    &received,
                    &format!("event:{}", e.id),
                    "event.received",
                    &e.event.source,
                    &json(&e.event),
                )?;
            }
            let mut inc = tx.prepare_cached(
                "INSERT OR REPLACE INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, resolved_at, live, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for i in &round.incidents {
                inc.execute(params![
                    i.id,
                    i.playbook_id,
                    i.playbook_version,
                    i.branch,
                    i.tier,
                    i.status.as_str(),
                    i.drill,
                    i.group_key,
                    ts(i.opened_at),
                    i.resolved_at.map(ts),
                    i.is_live(),
                    json(i),
                ])?;
            }
            let mut hist = tx.prepare_cached(
                "INSERT INTO history (incident, at, what, by, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for h in &round.history {
                let at = ts(h.at);
                hist.execute(params![h.incident, at, h.what, h.by, h.detail])?;
                let entity = h
                    .incident
                    .map_or("daemon".to_string(), |i| format!("incident:{i}"));
                append(&at, &entity, &h.what, &h.by, &h.detail)?;
            }
            let mut out = tx.prepare_cached(
                "INSERT INTO outbox (incident, step, channel, target, recipient, person, subject, body, created_at, link, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for n in &round.outbox {
                out.execute(params![
                    n.incident,
                    n.step,
                    n.channel,
                    n.target,
                    n.recipient,
                    n.person,
                    n.subject,
                    n.body,
                    ts(n.created_at),
                    n.link,
                    n.payload
                ])?;
            }
            // Only a row not yet settled is updated: an outcome is never recorded twice.
            let mut upd = tx.prepare_cached(
                "UPDATE outbox SET attempts = ?2, delivered_at = ?3, next_attempt_at = ?4, failed_at = ?5, last_error = ?6
                 WHERE id = ?1 AND delivered_at IS NULL AND failed_at IS NULL",
            )?;
            for d in &round.deliveries {
                upd.execute(params![
                    d.id,
                    d.attempts,
                    d.delivered_at.map(ts),
                    d.next_attempt_at.map(ts),
                    d.failed_at.map(ts),
                    d.last_error
                ])?;
            }
        }
        tx.commit()?;
        self.tail = Some((seq, prev));
        Ok(())
    }

    fn load_live(&mut self) -> Result<LiveState, StoreError> {
        let bodies: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM incidents WHERE live = 1 ORDER BY id")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let mut incidents = Vec::with_capacity(bodies.len());
        for b in bodies {
            let mut inc = incident_from(&b)?;
            inc.playbook = self.playbook(&inc.playbook_id, &inc.playbook_version)?;
            incidents.push(inc);
        }
        let next_incident: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents", [], |r| {
                    r.get(0)
                })?;
        let next_event: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })?;
        Ok(LiveState {
            incidents,
            next_incident,
            next_event,
        })
    }

    fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<Incident>, StoreError> {
        let mut sql = String::from("SELECT id, body FROM incidents WHERE id < ?1");
        let mut args: Vec<String> = vec![q.cursor.unwrap_or(i64::MAX).to_string()];
        for (col, v) in [
            ("status", &q.status),
            ("branch", &q.branch),
            ("playbook", &q.playbook),
        ] {
            if let Some(v) = v {
                args.push(v.clone());
                sql.push_str(&format!(" AND {col} = ?{}", args.len()));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        let mut st = self.conn.prepare(&sql)?;
        let rows: Vec<(i64, String)> = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut items = Vec::new();
        for (_, body) in rows.iter().take(q.limit) {
            items.push(incident_from(body)?);
        }
        let next = (rows.len() > q.limit)
            .then(|| items.last().map(|i| i.id))
            .flatten();
        Ok(Page { items, next })
    }

    fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row("SELECT body FROM incidents WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        match body {
            None => Ok(None),
            Some(b) => Ok(Some((incident_from(&b)?, self.history_of(id)?))),
        }
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<EventRow>, StoreError> {
        let mut sql = String::from(
            "SELECT id, received_at, kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents FROM events WHERE id < ?1",
        );
        let mut args: Vec<String> = vec![q.cursor.unwrap_or(i64::MAX).to_string()];
        for (col, v) in [("branch", &q.branch), ("kind", &q.kind)] {
            if let Some(v) = v {
                args.push(v.clone());
                sql.push_str(&format!(" AND {col} = ?{}", args.len()));
            }
        }
        if let Some(m) = q.matched {
            sql.push_str(if m {
                " AND matched = 1"
            } else {
                " AND matched = 0"
            });
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        let mut st = self.conn.prepare(&sql)?;
        let rows: Vec<EventRow> = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(EventRow {
                    id: r.get(0)?,
                    received_at: parse_ts(&r.get::<_, String>(1)?),
                    kind: r.get(2)?,
                    branch: r.get(3)?,
                    severity: r.get(4)?,
                    status: r.get(5)?,
                    labels: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    summary: r.get(7)?,
                    occurred_at: parse_ts(&r.get::<_, String>(8)?),
                    source: r.get(9)?,
                    matched: r.get(10)?,
                    incidents: serde_json::from_str(&r.get::<_, String>(11)?).unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let more = rows.len() > q.limit;
        let items: Vec<EventRow> = rows.into_iter().take(q.limit).collect();
        let next = if more {
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    fn outbox(&self, incident: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE incident = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map([incident], outbox_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn due_outbox(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL
             AND (next_attempt_at IS NULL OR next_attempt_at <= ?1) ORDER BY id LIMIT ?2"
        ))?;
        let rows = st.query_map(params![ts(now), limit as i64], outbox_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn next_outbox_attempt(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let t: Option<String> = self.conn.query_row(
            "SELECT MIN(COALESCE(next_attempt_at, created_at)) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(t.as_deref().map(parse_ts))
    }

    fn outbox_pending(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    fn open_for_group(&self, group_key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT id FROM incidents WHERE group_key = ?1 AND status = 'open' ORDER BY id DESC LIMIT 1", [group_key], |r| r.get(0))
            .optional()?)
    }

    fn verify_audit(&self) -> Result<AuditCheck, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT seq, at, entity, what, by, detail, prev_hash, hash FROM audit ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        let mut prev = GENESIS.to_string();
        let mut expect_seq = 1;
        let mut count = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let (at, entity, what, by, detail): (String, String, String, String, String) =
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
            let (prev_hash, hash): (String, String) = (r.get(6)?, r.get(7)?);
            if seq != expect_seq {
                return Ok(AuditCheck::Broken {
                    seq,
                    reason: format!("row {expect_seq} is missing (found {seq})"),
                });
            }
            if prev_hash != prev {
                return Ok(AuditCheck::Broken {
                    seq,
                    reason: "its prev_hash does not match the hash of the row before".into(),
                });
            }
            if audit_hash(&prev, seq, &at, &entity, &what, &by, &detail) != hash {
                return Ok(AuditCheck::Broken {
                    seq,
                    reason: "its content does not match its hash (altered)".into(),
                });
            }
            prev = hash;
            expect_seq += 1;
            count += 1;
        }
        Ok(AuditCheck::Ok { rows: count })
    }
}

impl IncidentStatus {
    pub fn parse(s: &str) -> Option<IncidentStatus> {
        match s {
            "open" => Some(IncidentStatus::Open),
            "resolved" => Some(IncidentStatus::Resolved),
            _ => None,
        }
    }
}
