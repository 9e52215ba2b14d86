//! Durable state behind two traits: one [`Writer`] (owned by the engine loop:
//! every round of decisions in one transaction) and a [`Reader`] shared by the
//! API, the delivery worker and the CLI. [`open`] picks the backend from the
//! configuration; SQLite is the one backend today, and nothing outside this
//! folder names it. The audit hash chain lives in [`audit`] so a second backend
//! shares it.
//!
//! **Invariant:** a [`Round`] is written in one transaction or not at all; the
//! engine answers nobody before `commit` returns.
//!
//! **Invariant:** a stored value that cannot be read back (a bad timestamp, bad
//! JSON) is a [`StoreError::Corrupt`], never a default (a unit test in
//! `sqlite/schema.rs` damages incident bodies).

pub mod audit;
mod check;
#[cfg(test)]
pub(crate) mod contract;
mod health;
mod lane;
mod pg;
#[doc(hidden)]
pub use pg::testing as pg_testing;
pub mod records;
mod sqlite;
#[cfg(test)]
pub(crate) mod testing;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::engine::{
    ChannelKind, DrillRun, DrillState, HistoryEntry, Incident, LinkAction, Notification,
    ReviewAction, Round, Silence,
};
pub use audit::{AuditCheck, AuditHead, AuditKey, Head};
pub use health::StoreHealth;
pub use lane::Lane;
pub use pg::lease::{Campaign, Leader, Lease};

/// What went wrong in the store. None of these is the caller's fault: the API
/// answers them with 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no database in {0} (has the daemon run here yet?)")]
    Missing(PathBuf),
    /// A file of the store was removed or replaced under the running daemon.
    #[error("{0}")]
    Replaced(String),
    /// An operation the store will not do as asked (said why).
    #[error("{0}")]
    Refused(String),
    /// Active/standby: this node's lease was taken over; it writes nothing more.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// A round whose parts do not agree: a bug of ours, nothing is written.
    #[error("a round handed to the store is inconsistent (a bug in branchguard): {0}")]
    Inconsistent(String),
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Key(#[from] audit::KeyError),
    #[error(
        "no audit key at {0} (nor in BRANCHGUARD_AUDIT_KEY): on PostgreSQL every daemon of the group signs one audit chain, so the key is given, never made by whichever starts first; copy the same key file to each node (see docs/DEPLOY.md)"
    )]
    KeyNotGiven(PathBuf),
    #[error(
        "the audit key {0} is missing, but the audit log in the database is signed with one: restore the key file from its backup (a new key would not verify the log)"
    )]
    KeyMissing(PathBuf),
    /// The audit log is not the one the daemon signed and published: the
    /// daemon does not start on it (it would sign the forgery's end).
    #[error("{0}")]
    Tampered(String),
}

/// What the engine needs at start-up.
#[derive(Debug)]
pub struct LiveState {
    pub incidents: Vec<Incident>,
    pub next_incident: i64,
    pub next_event: i64,
    /// Drill runs in progress, last fire times, the next run id.
    pub drills: DrillState,
    /// Silences still in force or to come.
    pub silences: Vec<Silence>,
    /// Open review actions, each with its incident.
    pub reviews: Vec<(ReviewAction, Incident)>,
}

#[derive(Debug, Default, Clone)]
pub struct DrillRunQuery {
    pub drill: Option<String>,
    pub branch: Option<String>,
    /// Only runs that include one of the scope's branches.
    pub scope: crate::scope::Scope,
    pub limit: usize,
    pub cursor: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct IncidentQuery {
    /// `open`, `resolved`, or `follow-up` (resolved with steps still open).
    pub status: Option<String>,
    pub branch: Option<String>,
    /// Only the scope's branches.
    pub scope: crate::scope::Scope,
    pub playbook: Option<String>,
    pub limit: usize,
    pub cursor: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct EventQuery {
    pub branch: Option<String>,
    /// Only the scope's branches.
    pub scope: crate::scope::Scope,
    pub kind: Option<String>,
    pub matched: Option<bool>,
    pub limit: usize,
    pub cursor: Option<i64>,
}

impl IncidentQuery {
    /// Whether it asks for resolved incidents with a step still open
    /// (`follow-up`), and the columns it asks to equal a value, in order.
    pub fn filters(&self) -> (bool, Vec<(&'static str, String)>) {
        let follow_up = self.status.as_deref() == Some("follow-up");
        let status = self.status.clone().filter(|_| !follow_up);
        let equal = [
            ("status", status),
            ("branch", self.branch.clone()),
            ("playbook", self.playbook.clone()),
        ]
        .into_iter()
        .filter_map(|(col, v)| v.map(|v| (col, v)))
        .collect();
        (follow_up, equal)
    }
}

impl EventQuery {
    /// The branches the query is limited to: `None` for all of them.
    pub fn branches(&self) -> Option<Vec<String>> {
        match (&self.branch, &self.scope.list()) {
            (None, None) => None,
            (None, Some(w)) => Some(w.clone()),
            (Some(b), None) => Some(vec![b.clone()]),
            (Some(b), Some(w)) => Some(w.iter().filter(|x| *x == b).cloned().collect()),
        }
    }
}

/// One page of a list, newest first; `next` is the cursor of the following page.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub kind: String,
    pub branch: String,
    pub severity: String,
    pub status: String,
    pub labels: serde_json::Value,
    pub summary: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub matched: bool,
    pub incidents: Vec<i64>,
    /// Why it was refused at intake (kept visible, never matched).
    pub rejected: Option<String>,
    /// What silenced it (stored, opened nothing).
    pub silenced: Option<String>,
}

/// Due messages to one recipient of a lane, drill or real.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DueGroup {
    pub recipient: String,
    pub drill: bool,
}

/// One outbox row: what the engine queued and what delivery made of it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub incident: i64,
    pub step: Option<String>,
    pub channel: ChannelKind,
    /// A drill's message (never in a digest with real ones).
    pub drill: bool,
    pub target: String,
    pub recipient: String,
    pub person: Option<String>,
    pub subject: String,
    /// The message text and webhook JSON stay out of the incident view.
    #[serde(skip)]
    pub body: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub links: Vec<LinkAction>,
    #[serde(skip)]
    pub payload: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub link_until: Option<DateTime<Utc>>,
    /// A `webhook` step's own announcement (withdrawn when the incident resolves).
    pub announcement: bool,
    /// Never held for a digest: sent at once, alone.
    pub urgent: bool,
    #[serde(skip)]
    pub grant_until: Option<DateTime<Utc>>,
}

impl OutboxRow {
    /// The row a notification became when it was committed as `id`: what a
    /// read of the outbox would give before any attempt.
    pub fn queued(id: i64, n: Notification) -> OutboxRow {
        OutboxRow {
            id,
            incident: n.incident,
            step: n.step,
            channel: n.channel,
            drill: n.drill,
            target: n.target,
            recipient: n.recipient,
            person: n.person,
            subject: n.subject,
            body: n.body,
            created_at: n.created_at,
            links: n.links,
            payload: n.payload,
            attempts: 0,
            next_attempt_at: None,
            delivered_at: None,
            failed_at: None,
            last_error: None,
            link_until: n.link_until,
            announcement: n.announcement,
            urgent: n.urgent,
            grant_until: n.grant_until,
        }
    }
}

/// What a commit assigned: the outbox ids of the round's notifications, in
/// the round's order, and the audit chain's head after it.
#[derive(Debug, Default)]
pub struct Committed {
    pub outbox: Vec<i64>,
    pub head: Option<audit::Head>,
}

/// An incident with everything the API shows of it.
pub type IncidentRecord = (Incident, Vec<HistoryEntry>, Vec<OutboxRow>);

/// The one writer: only the engine loop holds it.
pub trait Writer: Send {
    /// Writes everything a round decided, in one transaction.
    fn commit(&mut self, round: &Round) -> Result<Committed, StoreError>;
    /// Live incidents (with the playbook versions they opened with), the
    /// silences in force at `now` or to come, and the next ids.
    fn load_live(&mut self, now: DateTime<Utc>) -> Result<LiveState, StoreError>;
    /// Whether a write would go through now (used to find out that a fault has cleared).
    fn check(&mut self) -> Result<(), StoreError>;
}

/// Reads, from any thread; each call sees committed data only, and a call
/// that reads several tables reads them as of one commit.
pub trait Reader: Send + Sync {
    fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<Incident>, StoreError>;
    /// An incident and its history, as of one commit.
    fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError>;
    /// An incident, its history and its outbox rows, as of one commit: a
    /// row shown delivered has its history line, and a step its outcome.
    fn incident_with_outbox(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError>;
    fn list_events(&self, q: &EventQuery) -> Result<Page<EventRow>, StoreError>;
    /// The delivery lanes with rows due at `now`, in [`Lane`] order.
    fn due_lanes(&self, now: DateTime<Utc>) -> Result<Vec<Lane>, StoreError>;
    /// Due rows of one lane, oldest first, leaving out those in `skip` (in flight).
    fn due_outbox_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Due urgent rows of one lane (never held for a digest), oldest first,
    /// leaving out those in `skip`.
    fn due_urgent_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// The groups of one lane with due rows: by recipient, and drill or real
    /// (a digest never mixes the two), in recipient order. A group with a
    /// delivery under way is passed over by the worker, so nothing is skipped here.
    fn due_groups(&self, now: DateTime<Utc>, lane: &Lane) -> Result<Vec<DueGroup>, StoreError>;
    /// The due rows of one group, oldest first, leaving out `skip`.
    fn due_outbox_of(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        group: &DueGroup,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// The earliest retry time after `now`, if any.
    fn next_retry_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// When the next undelivered row is due, if any.
    fn next_outbox_attempt(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn outbox_pending(&self) -> Result<u64, StoreError>;
    /// The audit chain's last row, which every commit of a change moves
    /// (a standby's dashboard follows the leader's commits by it).
    fn chain_end(&self) -> Result<Option<i64>, StoreError>;
    /// When the oldest undelivered row was queued, if any.
    fn outbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Checks the audit chain with `key`, the stored rows against it, and
    /// its length against the `published` head.
    fn verify_audit(
        &self,
        key: Option<audit::AuditKey>,
        published: Option<audit::Head>,
    ) -> Result<AuditCheck, StoreError>;
    /// Every incident opened in `[from, to)` with the audit rows and outbox
    /// rows about it, as of one commit, handed to `each` in the order
    /// [`records::Record`] gives (an export for auditors).
    fn records(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        each: &mut records::Sink<'_>,
    ) -> Result<(), StoreError>;
    /// Open review actions whose due moment is at or before `now`.
    fn overdue_review_actions(&self, now: DateTime<Utc>) -> Result<Vec<ReviewAction>, StoreError>;
    /// One review action.
    fn review_action(&self, incident: i64, n: u32) -> Result<Option<ReviewAction>, StoreError>;
    /// The open incident of a group, if any.
    fn open_for_group(&self, group_key: &str) -> Result<Option<i64>, StoreError>;
    fn drill_run(&self, id: i64) -> Result<Option<DrillRun>, StoreError>;
    /// Drill runs, newest first (a branch filter keeps runs that include it).
    fn list_drill_runs(&self, q: &DrillRunQuery) -> Result<Page<DrillRun>, StoreError>;
    /// Silences: those in force at `in_force_at` or to come, or (`None`)
    /// the latest thousand.
    fn silences(&self, in_force_at: Option<DateTime<Utc>>) -> Result<Vec<Silence>, StoreError>;
    /// Each drill's last scheduled fire time.
    fn drill_last_fires(
        &self,
    ) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError>;
}

/// The opened store: its writer (for the engine loop) and a shared reader.
pub struct Opened {
    pub writer: Box<dyn Writer>,
    pub reader: Arc<dyn Reader>,
    /// The audit chain's key (for publishing its head).
    pub key: audit::AuditKey,
    /// Whether the database was created just now (an empty data directory).
    pub created: bool,
}

/// The audit key of the configuration: from its file or the environment; a
/// missing one is created, unless the database's log is already signed.
pub fn audit_key(cfg: &Config) -> Result<audit::AuditKey, StoreError> {
    Ok(key_and_whether_new(cfg)?.0)
}

fn key_and_whether_new(cfg: &Config) -> Result<(audit::AuditKey, bool), StoreError> {
    if let Some(k) = audit::AuditKey::load(&cfg.audit.key_file)? {
        return Ok((k, false));
    }
    if sqlite::needs_key(&cfg.data_dir)? {
        return Err(StoreError::KeyMissing(cfg.audit.key_file.clone()));
    }
    let k = audit::AuditKey::create(&cfg.audit.key_file)?;
    tracing::warn!(
        "created the audit key {}: keep a copy of it with your backups, apart from the database; `audit verify` needs it",
        cfg.audit.key_file.display()
    );
    Ok((k, true))
}

/// Opens (creating if needed) the store the configuration names.
pub fn open(cfg: &Config) -> Result<Opened, StoreError> {
    if let crate::config::Database::Postgres(url) = &cfg.store {
        return open_postgres(cfg, url, None);
    }
    sqlite::check_at_start(&cfg.data_dir)?;
    let (key, new) = key_and_whether_new(cfg)?;
    sqlite::audit_at_start(&cfg.data_dir, &key, new)?;
    let (writer, created) = sqlite::SqliteWriter::open(&cfg.data_dir, key.clone())?;
    let reader = sqlite::SqliteReader::open(&cfg.data_dir)?;
    Ok(Opened {
        writer: Box::new(writer),
        reader: Arc::new(reader),
        key,
        created,
    })
}

/// Every daemon of a group signs one chain: the key is given (by file or
/// environment), never made by whichever node starts first. The node's data
/// directory (its own files: link secret, published head, lock) is made.
fn given_key(cfg: &Config) -> Result<audit::AuditKey, StoreError> {
    let key = audit::AuditKey::load(&cfg.audit.key_file)?
        .ok_or_else(|| StoreError::KeyNotGiven(cfg.audit.key_file.clone()))?;
    crate::private::create_dir(&cfg.data_dir).map_err(|source| StoreError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    Ok(key)
}

fn open_postgres(
    cfg: &Config,
    url: &crate::config::PgUrl,
    fence: Option<(String, i64, std::time::Duration)>,
) -> Result<Opened, StoreError> {
    let key = given_key(cfg)?;
    let (writer, reader) = pg::open(url.url(), key.clone(), fence)?;
    Ok(Opened {
        writer: Box::new(writer),
        reader: Arc::new(reader),
        key,
        created: false,
    })
}

/// What a standby of an active/standby group opens: a reader of the shared
/// database (its schema brought up to date) and the group's audit key.
pub fn open_standby(cfg: &Config) -> Result<(Arc<dyn Reader>, audit::AuditKey), StoreError> {
    let crate::config::Database::Postgres(url) = &cfg.store else {
        let o = open(cfg)?;
        return Ok((o.reader, o.key));
    };
    let key = given_key(cfg)?;
    Ok((Arc::new(pg::open_reader_migrated(url.url())?), key))
}

/// The store as the leader of an active/standby group opens it at `epoch`:
/// every commit first checks that this node still holds that lease.
pub fn open_as_leader(cfg: &Config, epoch: i64) -> Result<Opened, StoreError> {
    match (&cfg.store, &cfg.ha) {
        (crate::config::Database::Postgres(url), Some(ha)) => {
            open_postgres(cfg, url, Some((ha.node.clone(), epoch, ha.lease)))
        }
        _ => open(cfg),
    }
}

/// This node's hold on the group's lease: `None` unless the configuration
/// sets `ha` (which needs PostgreSQL).
pub fn lease(cfg: &Config) -> Option<Lease> {
    match (&cfg.store, &cfg.ha) {
        (crate::config::Database::Postgres(url), Some(ha)) => {
            Some(Lease::new(url.url(), &ha.node, &cfg.public_url, ha.lease))
        }
        _ => None,
    }
}

/// Copies the SQLite database in `data_dir` into the PostgreSQL database of
/// `to`, which must be empty; the source is first brought up to date and its
/// audit log checked with `key`, and the copy's after.
pub fn migrate_from_sqlite(
    data_dir: &std::path::Path,
    to: &crate::config::Database,
    key: audit::AuditKey,
) -> Result<(pg::copy::Copied, AuditCheck), StoreError> {
    let crate::config::Database::Postgres(url) = to else {
        return Err(StoreError::Refused(
            "the configuration names no PostgreSQL database to copy into (store.postgres.url_env)"
                .into(),
        ));
    };
    let source = sqlite::SqliteReader::open(data_dir)?;
    if let AuditCheck::Broken { seq, reason } = source.verify_audit(Some(key.clone()), None)? {
        return Err(StoreError::Tampered(format!(
            "the audit log in {} is broken at row {seq} ({reason}): nothing copied",
            data_dir.display()
        )));
    }
    let copied = pg::copy::from_sqlite(&data_dir.join("branchguard.db"), url.url())?;
    let check = pg::PgReader::open(url.url())?.verify_audit(Some(key), None)?;
    Ok((copied, check))
}

/// A reader of an existing store (the CLI): [`StoreError::Missing`] when
/// a data directory holds none.
pub fn open_reader(at: &crate::config::Database) -> Result<Arc<dyn Reader>, StoreError> {
    match at {
        crate::config::Database::Embedded(data_dir) => {
            Ok(Arc::new(sqlite::SqliteReader::open(data_dir)?))
        }
        crate::config::Database::Postgres(url) => Ok(Arc::new(pg::PgReader::open(url.url())?)),
    }
}
