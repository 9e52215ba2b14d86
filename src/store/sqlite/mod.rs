//! The SQLite backend: WAL journal, `synchronous=FULL` (an answered request
//! survives power loss, not just `kill -9`), one writer connection owned by the
//! engine thread and separate connections for readers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

mod commit;
mod events;
mod files;
mod pool;
mod reader;
mod records;
mod schema;
mod start;
mod verify;

use super::audit::{AuditKey, AuditRow, Chain, Head, MARKER};
use super::*;
use crate::config::Playbook;
use crate::engine::{DrillRun, DrillState, HistoryEntry, Incident, Silence};
use files::{identity, identity_of_wal};
pub use pool::SqliteReader;
use schema::migrate;
use start::keyed;
pub use start::{audit_at_start, check_at_start, needs_key};

pub struct SqliteWriter {
    conn: Connection,
    path: PathBuf,
    /// The identities of the database file and its WAL when opened: a file
    /// removed or replaced under the daemon would otherwise take writes into a
    /// deleted inode and lose them at the next start.
    identity: Option<(u64, u64)>,
    wal_identity: Option<(u64, u64)>,
    shm_identity: Option<(u64, u64)>,
    /// Set once a removed or replaced file was found: what was saved, and
    /// where. Every later write is refused with it until a restart.
    lost: Option<String>,
    /// The end of the audit chain, read on first use.
    chain: Option<Chain>,
    key: AuditKey,
    /// Playbook versions known to be stored: read back, or written by a
    /// commit that went through. A storm opens thousands of incidents of one
    /// version, and serializing it again for each was wasted work.
    playbooks: HashMap<(String, String), Arc<Playbook>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored timestamp. One that does not parse is corrupt data, reported as such.
fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| StoreError::Corrupt {
            what: format!("timestamp `{s}`"),
            detail: e.to_string(),
        })
}

/// A column read as a timestamp, for row-mapping closures.
fn time_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = r.get(i)?;
    parse_ts(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_time_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => time_col(r, i).map(Some),
    }
}

/// An audit row's hash as written: 32 bytes, not 64 hex characters (a
/// tenth of a new incident's audit bytes).
fn hash_blob(hex_hash: &str) -> rusqlite::types::Value {
    match hex::decode(hex_hash) {
        Ok(bytes) => rusqlite::types::Value::Blob(bytes),
        // Never made by the chain; kept as it came rather than lost.
        Err(_) => rusqlite::types::Value::Text(hex_hash.to_string()),
    }
}

/// An audit row's hash read back as hex: a blob in rows written since
/// 2026-12-07, text before (and in a row someone wrote by hand, which the
/// check then judges).
fn hash_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    match r.get_ref(i)? {
        ValueRef::Blob(b) => Ok(hex::encode(b)),
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "hash".into(),
            other.data_type(),
        )),
    }
}

fn conversion(i: usize, e: StoreError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
                match inner.downcast::<StoreError>() {
                    Ok(se) => *se,
                    Err(other) => StoreError::Corrupt {
                        what: "a stored value".into(),
                        detail: other.to_string(),
                    },
                }
            }
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

const DB_FILE: &str = "branchguard.db";

impl SqliteWriter {
    /// Opens (creating if needed) `data_dir/branchguard.db` for writing; also
    /// says whether the database was created now.
    pub fn open(data_dir: &Path, key: AuditKey) -> Result<(SqliteWriter, bool), StoreError> {
        crate::private::create_dir(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let created = !path.exists();
        let mut conn = Connection::open(&path)?;
        // Nobody else writes this database: a lock held longer than this is a
        // fault, answered with 503 rather than by stalling intake.
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        let db_identity = identity(&path);
        let wal_identity = identity_of_wal(&path);
        let keyed = keyed(&conn)?;
        let shm_identity = identity(&PathBuf::from(format!("{}-shm", path.display())));
        Ok((
            SqliteWriter {
                conn,
                path,
                identity: db_identity,
                wal_identity,
                shm_identity,
                lost: None,
                chain: None,
                key,
                playbooks: HashMap::new(),
            },
            created,
        ))
        .and_then(|(mut w, created)| {
            // A key exists from here on, so the chain carries its marker at
            // once: `audit verify` takes a key beside a chain without one
            // for a log whose signed rows were removed.
            if !keyed {
                w.commit(&Round::default())?;
            }
            Ok((w, created))
        })
    }

    fn chain(&mut self) -> Result<Chain, StoreError> {
        if let Some(c) = &self.chain {
            return Ok(c.clone());
        }
        let last: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, hash_col(r, 1)?)),
            )
            .optional()?;
        let c = Chain::after(last, Some(self.key.clone()), keyed(&self.conn)?);
        self.chain = Some(c.clone());
        Ok(c)
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
        let pb: Playbook = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
            what: format!("playbook {id} version {version}"),
            detail: e.to_string(),
        })?;
        let pb = Arc::new(pb);
        self.playbooks.insert(key, Arc::clone(&pb));
        Ok(Some(pb))
    }
}

/// The bodies of the live incidents, by id: every open incident is live, and
/// so is a resolved one with a step still open. Two queries, each answered by
/// an index, rather than one whose `OR` SQLite would answer with a scan.
const LIVE: [&str; 2] = [
    "SELECT id, body FROM incidents WHERE status = 'open' ORDER BY id",
    "SELECT id, body FROM incidents WHERE live = 1 AND status <> 'open' ORDER BY id",
];

fn live_bodies(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut rows: Vec<(i64, String)> = Vec::new();
    for sql in LIVE {
        let mut st = conn.prepare(sql)?;
        for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            rows.push(r?);
        }
    }
    rows.sort_unstable_by_key(|(id, _)| *id);
    Ok(rows.into_iter().map(|(_, body)| body).collect())
}

/// An incident's history: its audit rows, through `audit_incident_lines`.
const HISTORY: &str = "SELECT at, what, by, via, detail FROM audit WHERE entity GLOB 'incident:*' AND entity = ?1 ORDER BY seq";

fn history_of(conn: &Connection, id: i64) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut st = conn.prepare_cached(HISTORY)?;
    let rows = st.query_map([format!("incident:{id}")], |r| {
        Ok(HistoryEntry {
            incident: Some(id),
            at: time_col(r, 0)?,
            what: r.get(1)?,
            by: r.get(2)?,
            via: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const OUTBOX_COLUMNS: &str = "id, incident, step, channel, target, recipient, person, subject, body, created_at, \
     link, payload, attempts, next_attempt_at, delivered_at, failed_at, last_error, link_until, announcement, urgent, grant_until, drill";

/// One row of `SELECT {OUTBOX_COLUMNS}`: the API's view and the delivery worker's input alike.
fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let channel: String = r.get(3)?;
    let channel = ChannelKind::parse(&channel).ok_or_else(|| {
        conversion(
            3,
            StoreError::Corrupt {
                what: "outbox channel".into(),
                detail: format!("unknown channel kind `{channel}`"),
            },
        )
    })?;
    let links = match r.get::<_, Option<String>>(10)? {
        None => Vec::new(),
        Some(l) => LinkAction::split(&l).ok_or_else(|| {
            conversion(
                10,
                StoreError::Corrupt {
                    what: "outbox links".into(),
                    detail: format!("unknown link action in `{l}`"),
                },
            )
        })?,
    };
    Ok(OutboxRow {
        id: r.get(0)?,
        incident: r.get(1)?,
        step: r.get(2)?,
        channel,
        target: r.get(4)?,
        recipient: r.get(5)?,
        person: r.get(6)?,
        subject: r.get(7)?,
        body: r.get(8)?,
        created_at: time_col(r, 9)?,
        links,
        payload: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_at: opt_time_col(r, 13)?,
        delivered_at: opt_time_col(r, 14)?,
        failed_at: opt_time_col(r, 15)?,
        last_error: r.get(16)?,
        link_until: opt_time_col(r, 17)?,
        announcement: r.get(18)?,
        urgent: r.get(19)?,
        grant_until: opt_time_col(r, 20)?,
        drill: r.get(21)?,
    })
}

fn incident_from(body: &str) -> Result<Incident, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: "incident".into(),
        detail: e.to_string(),
    })
}

fn silence_from(body: &str) -> Result<Silence, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: "silence".into(),
        detail: e.to_string(),
    })
}

fn drill_run_from(body: &str) -> Result<DrillRun, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: "drill run".into(),
        detail: e.to_string(),
    })
}

fn last_fires(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
    let mut st = conn.prepare_cached("SELECT drill, last_fire FROM drill_schedule")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, time_col(r, 1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
    what: &str,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        conversion(
            i,
            StoreError::Corrupt {
                what: what.to_string(),
                detail: e.to_string(),
            },
        )
    })
}

#[cfg(test)]
mod contract_tests {
    use super::*;
    use crate::store::contract::{Backend, store_contract_suite};

    /// A data directory of its own for each case.
    struct Dir(tempfile::TempDir);

    impl Backend for Dir {
        fn open(&self) -> (Box<dyn Writer>, Arc<dyn Reader>) {
            let (w, _) = SqliteWriter::open(self.0.path(), self.key()).unwrap();
            let r = SqliteReader::open(self.0.path()).unwrap();
            (Box::new(w), Arc::new(r))
        }

        fn key(&self) -> AuditKey {
            AuditKey::from_bytes(&[5u8; 32])
        }
    }

    store_contract_suite!(|| Dir(tempfile::tempdir().unwrap()));
}
