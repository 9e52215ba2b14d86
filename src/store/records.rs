//! What an export for auditors is made of, as a backend gives it: every
//! incident that opened in a period, the audit rows that record it (its
//! history lines and the digests of its stored state), and its outbox rows.
//! The file format and its signatures are `crate::export`'s.

use chrono::{DateTime, Utc};

use super::OutboxRow;
use super::audit::AuditRow;

/// One stored record, in the order a backend reads them: first every
/// incident, then the audit rows in `seq` order, then the outbox rows.
#[derive(Debug, Clone)]
pub enum Record {
    /// First: the chain as the export read it, and the row from which rows
    /// are signed with the audit key (`audit.keyed`; none in a log written
    /// entirely before 0.2). Rows before it carry plain SHA-256 hashes.
    Chain {
        head: super::audit::Head,
        signed_from: Option<i64>,
    },
    /// An incident as stored: its exact bytes, which the digest in its last
    /// `incident.saved` audit row covers.
    Incident {
        id: i64,
        opened_at: DateTime<Utc>,
        body: String,
    },
    /// An audit row about one of the incidents, with `prev_hash` filled in
    /// (a row stored without it is checked against the row before, which an
    /// export does not carry).
    Audit(AuditRow),
    Outbox(Box<OutboxRow>),
}

/// The audit entities that record incident `id`: its history lines and its
/// stored state.
pub fn incident_of(entity: &str) -> Option<i64> {
    entity
        .strip_prefix("incident:")
        .or_else(|| entity.strip_prefix(crate::engine::INCIDENT_STATE))
        .and_then(|id| id.parse().ok())
}

/// Where the rows of an export go; an error stops the reading.
pub type Sink<'a> = dyn FnMut(Record) -> Result<(), super::StoreError> + 'a;
