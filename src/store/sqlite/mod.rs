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
mod schema;

use super::audit::{AuditRow, Chain, Verifier};
use super::*;
use crate::config::Playbook;
use crate::engine::{DrillRun, DrillState, HistoryEntry, Incident, Silence};
use schema::{SCHEMA, migrate};

pub struct SqliteWriter {
    conn: Connection,
    path: PathBuf,
    /// The database file's identity when opened: a file removed or replaced under
    /// the daemon would otherwise take writes into a deleted inode and lose them.
    identity: Option<(u64, u64)>,
    /// The end of the audit chain, read on first use.
    chain: Option<Chain>,
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

const DB_FILE: &str = "branchguard.db";

impl SqliteWriter {
    /// Opens (creating if needed) `data_dir/branchguard.db` for writing; also
    /// says whether the database was created now.
    pub fn open(data_dir: &Path) -> Result<(SqliteWriter, bool), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
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
        let identity = identity(&path);
        Ok((
            SqliteWriter {
                conn,
                path,
                identity,
                chain: None,
                playbooks: HashMap::new(),
            },
            created,
        ))
    }

    fn same_file(&self) -> Result<(), StoreError> {
        if self.identity.is_some() && identity(&self.path) != self.identity {
            return Err(StoreError::Replaced(self.path.clone()));
        }
        Ok(())
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
        let c = Chain::after(last);
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
const HISTORY: &str = "SELECT at, what, by, detail FROM audit WHERE entity GLOB 'incident:*' AND entity = ?1 ORDER BY seq";

fn history_of(conn: &Connection, id: i64) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut st = conn.prepare_cached(HISTORY)?;
    let rows = st.query_map([format!("incident:{id}")], |r| {
        Ok(HistoryEntry {
            incident: Some(id),
            at: time_col(r, 0)?,
            what: r.get(1)?,
            by: r.get(2)?,
            detail: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const OUTBOX_COLUMNS: &str = "id, incident, step, channel, target, recipient, person, subject, body, created_at, \
     link, payload, attempts, next_attempt_at, delivered_at, failed_at, last_error, link_until, announcement";

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
        };
        // Known stored only once the transaction holding them commits.
        let mut stored: Vec<((String, String), Arc<Playbook>)> = Vec::new();
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
                let r = chain.append(at, entity, what, by, detail);
                audit.execute(params![
                    r.seq, r.at, r.entity, r.what, r.by, r.detail,
                    // The previous row's hash: not stored twice (see AuditRow).
                    "", r.hash
                ])?;
                Ok(())
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
                    e.rejected,
                    e.silenced,
                ])?;
                let (what, detail) = match &e.rejected {
                    None => ("event.received", json(&e.event)),
                    Some(why) => ("event.rejected", format!("{why}: {}", json(&e.event))),
                };
                append(
                    &received,
                    &format!("event:{}", e.id),
                    what,
                    &e.event.source,
                    &detail,
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
            // An incident's history is its audit rows (see `history_of`).
            for h in &round.history {
                let entity = h
                    .incident
                    .map_or("daemon".to_string(), |i| format!("incident:{i}"));
                append(&ts(h.at), &entity, &h.what, &h.by, &h.detail)?;
            }
            let mut out = tx.prepare_cached(
                "INSERT INTO outbox (incident, step, channel, target, recipient, person, subject, body, created_at, link, payload, link_until, announcement)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                    n.announcement
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
                append(
                    &ts(r.finished_at.unwrap_or(r.started_at)),
                    &format!("drill-run:{}", r.id),
                    &format!("drill.{}", r.status.as_str()),
                    "drill",
                    &format!(
                        "drill {}: score {}",
                        r.drill,
                        r.score.map_or("-".to_string(), |s| s.to_string())
                    ),
                )?;
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
        Ok(LiveState {
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
