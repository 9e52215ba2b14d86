//! Durable state behind the [`Store`] trait: events, incidents, history, the
//! notification outbox and the audit log. SQLite is the one backend today; the
//! trait is the seam for PostgreSQL.
//!
//! **Invariant:** a [`Round`] is written in one transaction or not at all; the
//! engine answers nobody before `commit` returns.

mod sqlite;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::{HistoryEntry, Incident, Round};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("stored data is corrupt ({what}): {source}")]
    Corrupt {
        what: String,
        source: serde_json::Error,
    },
}

/// What the engine needs at start-up.
#[derive(Debug)]
pub struct LiveState {
    pub incidents: Vec<Incident>,
    pub next_incident: i64,
    pub next_event: i64,
}

#[derive(Debug, Default, Clone)]
pub struct IncidentQuery {
    pub status: Option<String>,
    pub branch: Option<String>,
    pub playbook: Option<String>,
    pub limit: usize,
    pub cursor: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct EventQuery {
    pub branch: Option<String>,
    pub kind: Option<String>,
    pub matched: Option<bool>,
    pub limit: usize,
    pub cursor: Option<i64>,
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
}

/// One outbox row: what the engine queued and what delivery made of it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub incident: i64,
    pub step: Option<String>,
    pub channel: String,
    pub target: String,
    pub recipient: String,
    pub person: Option<String>,
    pub subject: String,
    /// The message text and webhook JSON stay out of the incident view.
    #[serde(skip)]
    pub body: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub link: Option<String>,
    #[serde(skip)]
    pub payload: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The result of checking the audit log's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCheck {
    Ok { rows: u64 },
    Broken { seq: i64, reason: String },
}

pub trait Store: Send {
    /// Writes everything a round decided, in one transaction.
    fn commit(&mut self, round: &Round) -> Result<(), StoreError>;
    /// Live incidents (with the playbook versions they opened with) and the next ids.
    fn load_live(&mut self) -> Result<LiveState, StoreError>;
    fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<Incident>, StoreError>;
    fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError>;
    fn list_events(&self, q: &EventQuery) -> Result<Page<EventRow>, StoreError>;
    fn outbox(&self, incident: i64) -> Result<Vec<OutboxRow>, StoreError>;
    /// Undelivered rows whose next attempt is due at `now`, oldest first.
    fn due_outbox(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// When the next undelivered row is due, if any.
    fn next_outbox_attempt(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn outbox_pending(&self) -> Result<u64, StoreError>;
    fn verify_audit(&self) -> Result<AuditCheck, StoreError>;
    /// The open incident of a group, if any.
    fn open_for_group(&self, group_key: &str) -> Result<Option<i64>, StoreError>;
}
