//! The SQLite backend: WAL journal, `synchronous=FULL` (an answered request
//! survives power loss, not just `kill -9`), one writer connection owned by the
//! engine thread and separate connections for readers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

mod events;
mod reader;
mod records;
mod schema;
mod verify;

use super::audit::{AuditKey, AuditRow, Chain, Head, MARKER};
use super::*;
use crate::config::Playbook;
use crate::engine::{DrillRun, DrillState, HistoryEntry, Incident, Silence};
use schema::{SCHEMA, migrate};

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

#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_: &Path) -> Option<(u64, u64)> {
    None
}

fn identity_of_wal(db: &Path) -> Option<(u64, u64)> {
    identity(&PathBuf::from(format!("{}-wal", db.display())))
}

/// Whether the chain's `audit.keyed` row is written (the writer notes its
/// row in `meta`; a database without the note is looked through once).
fn keyed(conn: &Connection) -> Result<bool, StoreError> {
    let noted: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'audit_keyed'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if noted.is_some() {
        return Ok(true);
    }
    Ok(conn
        .query_row(
            "SELECT seq FROM audit WHERE what = ?1 AND entity = 'daemon' LIMIT 1",
            [MARKER],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
}

/// Before the writer signs anything: the log must be the one this key
/// signed and published. A log with rows but no signed start beside a key
/// that already existed had its signed rows removed or rewritten without
/// the key; a published head (`audit.head`) whose row is missing or differs
/// names a log cut back or rewritten. Either way the daemon does not start
/// (it would sign the forgery's end, and the head would follow it).
pub fn audit_at_start(data_dir: &Path, key: &AuditKey, key_is_new: bool) -> Result<(), StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_audit: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'audit'",
        [],
        |r| r.get(0),
    )?;
    if !has_audit {
        return Ok(());
    }
    let rows: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?;
    let remedy = "restore the database from a backup, or, if you know why, move the audit.head file aside and keep a record of it";
    if rows > 0 && !key_is_new && !keyed(&conn)? {
        return Err(StoreError::Tampered(format!(
            "the audit log in {} has {rows} rows but no signed start, although its key existed: its signed rows were removed or the log was rewritten without the key; {remedy}",
            path.display()
        )));
    }
    let head = match crate::store::audit::read_head(data_dir, key) {
        Ok(Some((head, _))) => head,
        Ok(None) => return Ok(()),
        Err(why) => return Err(StoreError::Tampered(format!("{why}; {remedy}"))),
    };
    let at: Option<String> = conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [head.rows], |r| {
            r.get(0)
        })
        .optional()?;
    match at {
        Some(h) if h == head.hash => Ok(()),
        Some(_) => Err(StoreError::Tampered(format!(
            "audit row {} differs from the published chain head (hash {}…): the log was rewritten; {remedy}",
            head.rows,
            head.hash.chars().take(12).collect::<String>()
        ))),
        None => Err(StoreError::Tampered(format!(
            "the audit log has {rows} rows, but the published chain head says {} (hash {}…): rows were removed or the database was rolled back; {remedy}",
            head.rows,
            head.hash.chars().take(12).collect::<String>()
        ))),
    }
}

/// The database checked before anything reads or writes it at start-up: a
/// damaged page is then named as such (`PRAGMA quick_check`), not met as
/// SQLite's "malformed" by the first statement that happens to touch it (a
/// table this version adds would even be written into the damaged file).
pub fn check_at_start(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let started = crate::clock::Stopwatch::start();
    integrity(&conn)?;
    tracing::info!(
        "database {} checked in {:.2}s (PRAGMA quick_check: ok)",
        path.display(),
        started.seconds()
    );
    Ok(())
}

/// Whether the database at `data_dir` has a signed audit chain, which its
/// key must be found for (a new key would not verify it).
pub fn needs_key(data_dir: &Path) -> Result<bool, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_audit: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name IN ('audit', 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_audit {
        return Ok(false);
    }
    keyed(&conn)
}

/// A damaged page is found at start-up, not when a read first hits it.
fn integrity(conn: &Connection) -> Result<(), StoreError> {
    let checked = (|| -> rusqlite::Result<Vec<String>> {
        let mut st = conn.prepare("PRAGMA quick_check")?;
        st.query_map([], |r| r.get(0))?.take(10).collect()
    })();
    let found = match checked {
        Ok(found) => found,
        // Damage where SQLite keeps its schema: the check cannot even run.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            vec![e.to_string()]
        }
        Err(e) => return Err(e.into()),
    };
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        what: "the database file (PRAGMA quick_check)".into(),
        detail: format!(
            "{}; restore it from a backup, or see docs/DEPLOY.md",
            found.join("; ")
        ),
    })
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
        let conn = Connection::open(&path)?;
        // Nobody else writes this database: a lock held longer than this is a
        // fault, answered with 503 rather than by stalling intake.
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')",
            [],
        )?;
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

    /// Refuses to write once the database file or its WAL is not the one
    /// this connection writes: the first time, the connection's view (which
    /// the open descriptors still hold whole) is saved back to the
    /// database's path, so every answered write survives a restart.
    fn same_file(&mut self) -> Result<(), StoreError> {
        if let Some(why) = &self.lost {
            return Err(StoreError::Replaced(why.clone()));
        }
        let db = self.identity.is_some() && identity(&self.path) != self.identity;
        let wal = self.wal_identity.is_some() && identity_of_wal(&self.path) != self.wal_identity;
        // A new shared-memory index beside a live writer would show readers
        // an old view: as much a lost file as the others.
        let shm = self.shm_identity.is_some()
            && identity(&PathBuf::from(format!("{}-shm", self.path.display())))
                != self.shm_identity;
        if !db && !wal && !shm {
            return Ok(());
        }
        let which = match (db, wal) {
            (true, true) => "the database file and its WAL were",
            (true, false) => "the database file was",
            (false, true) => "the database's WAL file was",
            (false, false) => "the database's shared-memory file (-shm) was",
        };
        let why = match self.rescue(db) {
            Ok(saved) => format!(
                "{which} removed or replaced while the daemon ran: everything stored until then was written back to {}{}; writes are refused until the daemon is restarted",
                self.path.display(),
                saved
            ),
            Err(e) => format!(
                "{which} removed or replaced while the daemon ran, and saving what the daemon holds failed ({e}): do not restart it before copying {}; writes are refused",
                self.path.display()
            ),
        };
        tracing::error!("{why}");
        self.lost = Some(why.clone());
        Err(StoreError::Replaced(why))
    }

    /// Writes the connection's whole view to a new file and puts it at the
    /// database's path. Whatever else is at that path (another database put
    /// there by hand, a WAL that is not ours) is moved aside, never deleted;
    /// the WAL of the removed file is dropped, its content being in the copy.
    fn rescue(&mut self, db_replaced: bool) -> Result<String, StoreError> {
        let stamp = crate::clock::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let side = |suffix: &str| PathBuf::from(format!("{}{suffix}", self.path.display()));
        let copy = side(&format!(".rescued-{stamp}"));
        self.conn
            .execute("VACUUM INTO ?1", [copy.display().to_string()])?;
        let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        let mut aside = Vec::new();
        let wal = side("-wal");
        let ours = identity(&wal).is_some() && identity(&wal) == self.wal_identity;
        if ours {
            std::fs::remove_file(&wal).map_err(io)?;
        } else if wal.exists() {
            let to = side(&format!("-wal.found-{stamp}"));
            std::fs::rename(&wal, &to).map_err(io)?;
            aside.push(to);
        }
        // The shared-memory index is rebuilt from the WAL by whoever opens next.
        let _ = std::fs::remove_file(side("-shm"));
        if db_replaced && self.path.exists() {
            let to = side(&format!(".found-{stamp}"));
            std::fs::rename(&self.path, &to).map_err(io)?;
            aside.push(to);
        }
        std::fs::rename(&copy, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(if aside.is_empty() {
            String::new()
        } else {
            format!(
                " (what was found at those paths was moved aside: {})",
                aside
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
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
                |r| Ok((r.get(0)?, r.get(1)?)),
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

/// Read connections, opened as needed and reused: any number of threads read at once.
pub struct SqliteReader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// A reader of an existing database.
    pub fn open(data_dir: &Path) -> Result<SqliteReader, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(data_dir.to_path_buf()));
        }
        let r = SqliteReader {
            path,
            pool: Mutex::new(Vec::new()),
        };
        // Fail now, not on the first request, if it cannot be opened.
        let c = r.connect()?;
        r.give_back(c);
        Ok(r)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        // rusqlite's default (16) is fewer than the statements the delivery
        // worker, the API and the dashboard use on one connection: past it
        // each use would parse and plan its query again.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn give_back(&self, c: Connection) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < 8
        {
            p.push(c);
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&conn);
        // A connection that just failed may be broken: open a fresh one next time.
        if out.is_ok() {
            self.give_back(conn);
        }
        out
    }

    /// Like `with`, inside one read transaction: without it each statement
    /// sees the latest commit, and a commit between two of them shows half
    /// of a round (a step done with no history line saying so).
    fn with_snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            tx.finish()?;
            Ok(out)
        })
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

/// The entity of the audit rows that record an incident's stored bytes
/// (not `incident:*`: they are not history lines).
const STATE: &str = "incident-state:";

/// SHA-256 of what was written, in hex.
fn digest(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

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
     link, payload, attempts, next_attempt_at, delivered_at, failed_at, last_error, link_until, announcement, urgent, grant_until";

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

fn json<T: Serialize>(v: &T) -> String {
    // Serialising our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Writer for SqliteWriter {
    fn commit(&mut self, round: &Round) -> Result<Committed, StoreError> {
        self.same_file()?;
        let mut chain = self.chain()?;
        let tx = self.conn.transaction()?;
        let mut committed = Committed {
            outbox: Vec::with_capacity(round.outbox.len()),
            head: None,
        };
        let now = ts(crate::clock::now());
        // Known stored only once the transaction holding them commits.
        let mut stored: Vec<((String, String), Arc<Playbook>)> = Vec::new();
        {
            let mut audit = tx.prepare_cached(
                "INSERT INTO audit (seq, at, entity, what, by, via, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut insert = |r: AuditRow| -> Result<(), rusqlite::Error> {
                audit.execute(params![
                    r.seq, r.at, r.entity, r.what, r.by, r.via, r.detail,
                    // The previous row's hash: not stored twice (see AuditRow).
                    "", r.hash
                ])?;
                Ok(())
            };
            if chain.needs_marker() {
                let m = chain.marker(&now);
                let seq = m.seq;
                insert(m)?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_keyed', ?1)",
                    [seq.to_string()],
                )?;
            }
            let mut append = |at: &str,
                              entity: &str,
                              what: &str,
                              by: &str,
                              via: &str,
                              detail: &str|
             -> Result<(), rusqlite::Error> {
                insert(chain.append(at, entity, what, by, via, detail))
            };
            let mut pbs = tx.prepare_cached("INSERT OR IGNORE INTO playbook_versions (playbook, version, body) VALUES (?1, ?2, ?3)")?;
            for pb in &round.playbooks {
                let key = (pb.id.clone(), pb.version.clone());
                if self.playbooks.contains_key(&key) || stored.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                pbs.execute(params![pb.id, pb.version, json(&**pb)])?;
                stored.push((key, Arc::clone(pb)));
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (id, received_at, occurred_at, kind, branch, severity, status, labels, summary, source, matched, incidents, rejected, silenced)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for e in &round.events {
                ev.execute(params![
                    e.id,
                    ts(e.received_at),
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
                    e.rejected,
                    e.silenced,
                ])?;
            }
            // What the engine decided to record about events and drill runs.
            for a in &round.audit {
                append(&ts(a.at), &a.entity, &a.what, &a.by, &a.via, &a.detail)?;
            }
            let mut inc = tx.prepare_cached(
                "INSERT OR REPLACE INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, resolved_at, live, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for i in &round.incidents {
                let body = json(i);
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
                    body,
                ])?;
                // The exact bytes written, so `audit verify` finds a stored
                // incident that was edited afterwards.
                append(
                    &now,
                    &format!("{STATE}{}", i.id),
                    "incident.saved",
                    "branchguard",
                    crate::engine::VIA_ENGINE,
                    &digest(&body),
                )?;
            }
            // An incident's history is its audit rows (see `history_of`).
            for h in &round.history {
                let entity = h
                    .incident
                    .map_or("daemon".to_string(), |i| format!("incident:{i}"));
                append(&ts(h.at), &entity, &h.what, &h.by, &h.via, &h.detail)?;
            }
            let mut out = tx.prepare_cached(
                "INSERT INTO outbox (incident, step, channel, target, recipient, person, subject, body, created_at, link, payload, link_until, announcement, urgent, grant_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for n in &round.outbox {
                committed.outbox.push(out.insert(params![
                    n.incident,
                    n.step,
                    n.channel.as_str(),
                    n.target,
                    n.recipient,
                    n.person,
                    n.subject,
                    n.body,
                    ts(n.created_at),
                    (!n.links.is_empty()).then(|| LinkAction::join(&n.links)),
                    n.payload,
                    n.link_until.map(ts),
                    n.announcement,
                    n.urgent,
                    n.grant_until.map(ts),
                ])?);
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
            let mut runs = tx.prepare_cached(
                "INSERT OR REPLACE INTO drill_runs (id, drill, status, started_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &round.drill_runs {
                runs.execute(params![
                    r.id,
                    r.drill,
                    r.status.as_str(),
                    ts(r.started_at),
                    json(r)
                ])?;
            }
            let mut sil = tx.prepare_cached(
                "INSERT OR REPLACE INTO silences (id, ends_at, body) VALUES (?1, ?2, ?3)",
            )?;
            for x in &round.silences {
                sil.execute(params![
                    x.id,
                    ts(x.expired_at.unwrap_or(x.ends_at)),
                    json(x)
                ])?;
            }
            let mut fires = tx.prepare_cached(
                "INSERT OR REPLACE INTO drill_schedule (drill, last_fire) VALUES (?1, ?2)",
            )?;
            for (drill, at) in &round.drill_fires {
                fires.execute(params![drill, ts(*at)])?;
            }
            let mut actions = tx.prepare_cached(
                "INSERT OR REPLACE INTO review_actions (incident, n, open, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for a in &round.review_actions {
                actions.execute(params![a.incident, a.n, a.done_at.is_none(), json(a)])?;
            }
            // Withdrawn announcements: settled as failed, so never selected again
            // (an attempt in flight then finds its row settled and changes nothing).
            let mut withdraw = tx.prepare_cached(
                "UPDATE outbox SET failed_at = ?3, last_error = 'withdrawn: the incident was resolved'
                 WHERE incident = ?1 AND step = ?2 AND announcement = 1 AND delivered_at IS NULL AND failed_at IS NULL",
            )?;
            for (incident, step, at) in &round.withdraw {
                withdraw.execute(params![incident, step, ts(*at)])?;
            }
        }
        tx.commit()?;
        committed.head = Some(chain.head());
        self.chain = Some(chain);
        self.playbooks.extend(stored);
        Ok(committed)
    }

    fn load_live(&mut self) -> Result<LiveState, StoreError> {
        let bodies = live_bodies(&self.conn)?;
        let mut incidents = Vec::with_capacity(bodies.len());
        for b in bodies {
            let mut inc = incident_from(&b)?;
            // serde grows a Vec without a size hint to room for four: an
            // incident's one step took 1,120 bytes, 84 MB at 100,000 open
            // incidents (massif, on a restart).
            inc.steps.shrink_to_fit();
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
        let running: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM drill_runs WHERE status = 'running' ORDER BY id")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let running = running
            .iter()
            .map(|b| drill_run_from(b))
            .collect::<Result<Vec<_>, _>>()?;
        let next_run: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM drill_runs", [], |r| {
                    r.get(0)
                })?;
        let last_fire = last_fires(&self.conn)?;
        let silences = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM silences WHERE ends_at > ?1 ORDER BY id")?;
            let bodies: Vec<String> = st
                .query_map([ts(crate::clock::now())], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            bodies
                .iter()
                .map(|b| silence_from(b))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut reviews = Vec::new();
        {
            let mut st = self.conn.prepare(
                "SELECT r.body, i.body FROM review_actions r JOIN incidents i ON i.id = r.incident
                 WHERE r.open = 1 ORDER BY r.incident, r.n",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let action: ReviewAction = json_col(r, 0, "review action")?;
                let inc = incident_from(&r.get::<_, String>(1)?)?;
                reviews.push((action, inc));
            }
        }
        Ok(LiveState {
            reviews,
            incidents,
            next_incident,
            next_event,
            drills: DrillState {
                running,
                last_fire,
                next_run,
            },
            silences,
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.same_file()?;
        // Taking the write lock and letting it go proves a commit could go through.
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }
}
