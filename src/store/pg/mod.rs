//! The PostgreSQL backend: several daemons share one database.
//! Timestamps are `timestamptz` (compared as times, not text), flags are
//! booleans, audit hashes `bytea`; incident bodies and audit rows stay text,
//! byte for byte what the engine digested and the chain signed. A commit
//! sends each table's rows of a round as arrays in one statement (`unnest`),
//! so its round trips do not grow with the round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient, NoTls, Row};

mod commit;
pub mod copy;
pub mod lease;
mod pipe;
mod reader;
mod schema;
mod stored;
mod tls;

use super::audit::{AuditKey, Chain};
use super::*;
use crate::config::Playbook;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(Box::new(Said(e)))
    }
}

/// A client error shown with its causes: "error performing TLS handshake"
/// alone does not tell an operator that the server's certificate was not
/// signed by the CA they gave.
#[derive(Debug)]
struct Said(postgres::Error);

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::diag::with_causes(&self.0))
    }
}

impl std::error::Error for Said {}

/// Runs `f`, which blocks on the database, where blocking is allowed: the
/// client drives its own small runtime, which cannot start on a thread
/// that is running the daemon's async tasks (the daemon opens its store
/// from one). On the engine's thread and in `spawn_blocking` it just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A connection that may be dropped anywhere: closing it blocks too.
pub(super) struct Conn(Option<Client>, HashMap<String, postgres::Statement>);

impl Conn {
    /// `sql` prepared on this connection, the first time only: a statement
    /// sent as text is parsed and planned each time, a second round trip.
    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.1.get(sql) {
            return Ok(s.clone());
        }
        let s = self.prepare(sql)?;
        // Lists build their text from their filters: a bounded set, but
        // not kept without limit.
        if self.1.len() < 256 {
            self.1.insert(sql.to_string(), s.clone());
        }
        Ok(s)
    }

    /// `query` through a prepared statement.
    fn q(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.prepared(sql)?;
        Ok(self.query(&s, params)?)
    }

    fn q_one(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let s = self.prepared(sql)?;
        Ok(self.query_one(&s, params)?)
    }

    fn q_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let s = self.prepared(sql)?;
        Ok(self.query_opt(&s, params)?)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Present from `connect` until `drop`.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.1);
        if let Some(c) = self.0.take() {
            blocking(|| {
                drop(statements);
                drop(c);
            });
        }
    }
}

/// Connects to `url` (a `postgres://` URL or `key=value` settings).
fn connect(url: &str) -> Result<Conn, StoreError> {
    let client = match tls::target(url)? {
        (config, None) => postgres::Config::from(config).connect(NoTls)?,
        (config, Some(tls)) => postgres::Config::from(config).connect(tls)?,
    };
    Ok(Conn(Some(client), HashMap::new()))
}

/// Opens the store at `url`: its schema brought up to date, a writer and
/// a reader. The writer signs the chain with `key`.
pub fn open(
    url: &str,
    key: AuditKey,
    fence: Option<(String, i64, std::time::Duration)>,
) -> Result<(PgWriter, PgReader), StoreError> {
    blocking(|| open_here(url, key, fence))
}

fn open_here(
    url: &str,
    key: AuditKey,
    fence: Option<(String, i64, std::time::Duration)>,
) -> Result<(PgWriter, PgReader), StoreError> {
    let mut client = connect(url)?;
    schema::migrate(&mut client)?;
    let mut w = PgWriter {
        url: url.to_string(),
        client,
        pipe: None,
        ids: std::collections::VecDeque::new(),
        chain: None,
        key,
        playbooks: HashMap::new(),
        fence,
    };
    // As on SQLite: the chain carries its `audit.keyed` row from the start.
    if !w.keyed()? {
        w.commit(&Round::default())?;
    }
    let r = PgReader::open(url)?;
    Ok((w, r))
}

pub struct PgWriter {
    url: String,
    /// The writer's reads: the chain's end, the live state at start.
    client: Conn,
    /// The writer's commits, pipelined; opened on first use.
    pipe: Option<pipe::Pipe>,
    /// Outbox ids taken from the sequence, not yet used.
    ids: std::collections::VecDeque<i64>,
    /// The end of the audit chain, read on first use.
    chain: Option<Chain>,
    key: AuditKey,
    /// Playbook versions known to be stored.
    playbooks: HashMap<(String, String), Arc<Playbook>>,
    /// The node and epoch whose lease every commit checks (active/standby).
    fence: Option<(String, i64, std::time::Duration)>,
}

/// The writer's commit connection; a leader's is ended by the server if
/// it idles in a transaction for a lease.
fn commit_connection(
    url: &str,
    fence: &Option<(String, i64, std::time::Duration)>,
) -> Result<pipe::Pipe, StoreError> {
    // A leader paused in the middle of a commit holds the lease row
    // (`FOR SHARE`) and would keep every standby from taking over: the
    // server ends such a session once it has idled in its transaction for
    // a lease, and nothing of that commit is kept.
    let setup = fence.as_ref().map(|(_, _, lease)| {
        format!(
            "SET idle_in_transaction_session_timeout = {}",
            lease.as_millis().max(1000)
        )
    });
    pipe::Pipe::connect(url, setup.as_deref())
}

impl PgWriter {
    /// A connection the server closed (a restart, a network fault) is
    /// opened again: the engine retries through `check`, which must find
    /// out when the database is back.
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.client = connect(&self.url)?;
        }
        Ok(())
    }

    fn keyed(&mut self) -> Result<bool, StoreError> {
        keyed(&mut *self.client)
    }

    fn chain(&mut self) -> Result<Chain, StoreError> {
        if let Some(c) = &self.chain {
            return Ok(c.clone());
        }
        let last = self
            .client
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?
            .map(|r| Ok::<_, StoreError>((r.try_get::<_, i64>(0)?, hash_of(&r, 1)?)))
            .transpose()?;
        let keyed = self.keyed()?;
        let c = Chain::after(last, Some(self.key.clone()), keyed);
        self.chain = Some(c.clone());
        Ok(c)
    }

    fn playbook(&mut self, id: &str, version: &str) -> Result<Option<Arc<Playbook>>, StoreError> {
        let key = (id.to_string(), version.to_string());
        if let Some(p) = self.playbooks.get(&key) {
            return Ok(Some(Arc::clone(p)));
        }
        let Some(row) = self.client.query_opt(
            "SELECT body FROM playbook_versions WHERE playbook = $1 AND version = $2",
            &[&id, &version],
        )?
        else {
            return Ok(None);
        };
        let pb: Playbook = from_json(&row.try_get::<_, String>(0)?, || {
            format!("playbook {id} version {version}")
        })?;
        let pb = Arc::new(pb);
        self.playbooks.insert(key, Arc::clone(&pb));
        Ok(Some(pb))
    }
}

/// Whether the chain's `audit.keyed` row is written.
fn keyed(c: &mut impl GenericClient) -> Result<bool, StoreError> {
    Ok(
        c.query_opt("SELECT 1 FROM meta WHERE key = 'audit_keyed'", &[])?
            .is_some(),
    )
}

/// A stored audit hash (32 bytes) as the chain's hex.
fn hash_of(r: &Row, i: usize) -> Result<String, StoreError> {
    Ok(hex::encode(r.try_get::<_, Vec<u8>>(i)?))
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

fn json<T: Serialize>(v: &T) -> String {
    // Serialising our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// A reader, after bringing the schema up to date (a standby may be the
/// first node to start on a new database).
pub fn open_reader_migrated(url: &str) -> Result<PgReader, StoreError> {
    blocking(|| {
        let mut c = connect(url)?;
        schema::migrate(&mut c)?;
        drop(c);
        PgReader::open_here(url)
    })
}

/// Read connections, opened as needed and reused.
pub struct PgReader {
    url: String,
    pool: Mutex<Vec<Conn>>,
}

impl PgReader {
    pub fn open(url: &str) -> Result<PgReader, StoreError> {
        blocking(|| PgReader::open_here(url))
    }

    fn open_here(url: &str) -> Result<PgReader, StoreError> {
        let r = PgReader {
            url: url.to_string(),
            pool: Mutex::new(Vec::new()),
        };
        let mut c = connect(url)?;
        schema::up_to_date_for_reading(&mut c)?;
        r.give_back(c);
        Ok(r)
    }

    fn give_back(&self, c: Conn) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < 8
        {
            p.push(c);
        }
    }

    fn with<T>(&self, f: impl Fn(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        blocking(|| self.with_here(f))
    }

    fn with_here<T>(
        &self,
        f: impl Fn(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.url)?,
        };
        let mut out = f(&mut conn);
        // A pooled connection the server dropped (a restart) is found closed
        // only by its use: a read is made again, once, on a new one.
        if out.is_err() && conn.is_closed() {
            conn = connect(&self.url)?;
            out = f(&mut conn);
        }
        // A connection that just failed may be broken: open a fresh one next time.
        if out.is_ok() {
            self.give_back(conn);
        }
        out
    }

    /// Like `with`, in one read-only transaction that sees one commit. Not
    /// made again after a failure: an export hands rows on as it reads.
    fn with_snapshot<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        blocking(|| {
            let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
            let mut conn = match pooled {
                Some(c) if !c.is_closed() => c,
                _ => connect(&self.url)?,
            };
            let out = (|| {
                let mut tx = conn
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            })();
            if out.is_ok() {
                self.give_back(conn);
            }
            out
        })
    }
}

/// The columns `outbox_row` reads, in its order.
const OUTBOX_COLUMNS: &str = "id, incident, step, channel, target, recipient, person, subject, body, created_at, \
     link, payload, attempts, next_attempt_at, delivered_at, failed_at, last_error, link_until, announcement, urgent, grant_until, drill";

fn outbox_row(r: &Row) -> Result<OutboxRow, StoreError> {
    let channel: String = r.try_get(3)?;
    let channel = ChannelKind::parse(&channel).ok_or_else(|| StoreError::Corrupt {
        what: "outbox channel".into(),
        detail: format!("unknown channel kind `{channel}`"),
    })?;
    let links = match r.try_get::<_, Option<String>>(10)? {
        None => Vec::new(),
        Some(l) => LinkAction::split(&l).ok_or_else(|| StoreError::Corrupt {
            what: "outbox links".into(),
            detail: format!("unknown link action in `{l}`"),
        })?,
    };
    Ok(OutboxRow {
        id: r.try_get(0)?,
        incident: r.try_get(1)?,
        step: r.try_get(2)?,
        channel,
        target: r.try_get(4)?,
        recipient: r.try_get(5)?,
        person: r.try_get(6)?,
        subject: r.try_get(7)?,
        body: r.try_get(8)?,
        created_at: r.try_get(9)?,
        links,
        payload: r.try_get(11)?,
        attempts: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        delivered_at: r.try_get(14)?,
        failed_at: r.try_get(15)?,
        last_error: r.try_get(16)?,
        link_until: r.try_get(17)?,
        announcement: r.try_get(18)?,
        urgent: r.try_get(19)?,
        grant_until: r.try_get(20)?,
        drill: r.try_get(21)?,
    })
}

fn incident_from(body: &str) -> Result<Incident, StoreError> {
    from_json(body, || "incident".into())
}

/// An incident's history: its audit rows.
fn history_of(c: &mut impl GenericClient, id: i64) -> Result<Vec<HistoryEntry>, StoreError> {
    let rows = c.query(
        "SELECT at, what, by, via, detail FROM audit WHERE entity = $1 ORDER BY seq",
        &[&format!("incident:{id}")],
    )?;
    rows.iter()
        .map(|r| {
            let at: String = r.try_get(0)?;
            Ok(HistoryEntry {
                incident: Some(id),
                at: parse_at(&at)?,
                what: r.try_get(1)?,
                by: r.try_get(2)?,
                via: r.try_get(3)?,
                detail: r.try_get(4)?,
            })
        })
        .collect()
}

/// An audit row's time, kept as the text the chain signed.
fn parse_at(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| StoreError::Corrupt {
            what: format!("timestamp `{s}`"),
            detail: e.to_string(),
        })
}

fn last_fires(
    c: &mut impl GenericClient,
) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
    let rows = c.query("SELECT drill, last_fire FROM drill_schedule", &[])?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Test support, used by the unit and the integration tests alike.
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod contract_tests {
    use super::*;
    use crate::store::contract::{Backend, store_contract_suite};

    /// A database of its own for each case.
    struct Db(testing::Database);

    impl Backend for Db {
        fn open(&self) -> (Box<dyn Writer>, Arc<dyn Reader>) {
            let (w, r) = super::open(self.0.url(), self.key(), None).unwrap();
            (Box::new(w), Arc::new(r))
        }

        fn key(&self) -> AuditKey {
            AuditKey::from_bytes(&[5u8; 32])
        }
    }

    store_contract_suite!(|| Db(testing::Database::create()));
}
