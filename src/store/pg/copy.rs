//! `branchguard migrate --from-sqlite DIR`: an existing SQLite database
//! copied into an empty PostgreSQL one, table by table, in one transaction
//! (all of it or nothing). Rows keep their ids and the audit rows their
//! text and hashes, so the chain verifies on the copy as on the original.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use rusqlite::types::ValueRef;

use super::*;

/// How a column is read from SQLite and sent to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Int32,
    Text,
    Bool,
    Time,
    /// An audit hash: a blob, or hex text in rows written before 2026-12-07.
    Hash,
}

impl Kind {
    fn array_type(self) -> &'static str {
        match self {
            Kind::Int => "bigint[]",
            Kind::Int32 => "int[]",
            Kind::Text => "text[]",
            Kind::Bool => "boolean[]",
            Kind::Time => "timestamptz[]",
            Kind::Hash => "bytea[]",
        }
    }
}

/// One column's values of a page of rows.
enum Column {
    Int(Vec<Option<i64>>),
    Int32(Vec<Option<i32>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(k: Kind) -> Column {
        match k {
            Kind::Int => Column::Int(Vec::new()),
            Kind::Int32 => Column::Int32(Vec::new()),
            Kind::Text => Column::Text(Vec::new()),
            Kind::Bool => Column::Bool(Vec::new()),
            Kind::Time => Column::Time(Vec::new()),
            Kind::Hash => Column::Bytes(Vec::new()),
        }
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Int(v) => v,
            Column::Int32(v) => v,
            Column::Text(v) => v,
            Column::Bool(v) => v,
            Column::Time(v) => v,
            Column::Bytes(v) => v,
        }
    }

    /// Appends one SQLite value; `Err` says what it is instead.
    fn push(&mut self, v: ValueRef<'_>) -> Result<(), String> {
        let text = |v: ValueRef<'_>| -> Result<Option<String>, String> {
            match v {
                ValueRef::Null => Ok(None),
                ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
                ValueRef::Integer(i) => Ok(Some(i.to_string())),
                other => Err(format!("{:?} where text was expected", other.data_type())),
            }
        };
        let int = |v: ValueRef<'_>| -> Result<Option<i64>, String> {
            match v {
                ValueRef::Null => Ok(None),
                ValueRef::Integer(i) => Ok(Some(i)),
                other => Err(format!(
                    "{:?} where an integer was expected",
                    other.data_type()
                )),
            }
        };
        match self {
            Column::Int(c) => c.push(int(v)?),
            Column::Int32(c) => c.push(
                int(v)?
                    .map(i32::try_from)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            ),
            Column::Bool(c) => c.push(int(v)?.map(|i| i != 0)),
            Column::Text(c) => c.push(text(v)?),
            Column::Time(c) => c.push(
                text(v)?
                    .map(|s| {
                        DateTime::parse_from_rfc3339(&s)
                            .map(|t| t.to_utc())
                            .map_err(|e| format!("timestamp `{s}`: {e}"))
                    })
                    .transpose()?,
            ),
            Column::Bytes(c) => c.push(match v {
                ValueRef::Null => None,
                ValueRef::Blob(b) => Some(b.to_vec()),
                ValueRef::Text(t) => {
                    Some(hex::decode(t).map_err(|e| format!("audit hash is not hex: {e}"))?)
                }
                other => return Err(format!("{:?} where a hash was expected", other.data_type())),
            }),
        }
        Ok(())
    }
}

/// A table to copy: its columns, and whether it has a rowid to page by
/// (small tables are read whole).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    paged: bool,
}

use Kind::*;

const TABLES: &[Table] = &[
    Table {
        name: "meta",
        columns: &[("key", Text), ("value", Text)],
        paged: false,
    },
    Table {
        name: "playbook_versions",
        columns: &[("playbook", Text), ("version", Text), ("body", Text)],
        paged: false,
    },
    Table {
        name: "events",
        columns: &[
            ("id", Int),
            ("received_at", Time),
            ("occurred_at", Time),
            ("kind", Text),
            ("branch", Text),
            ("severity", Text),
            ("status", Text),
            ("labels", Text),
            ("summary", Text),
            ("source", Text),
            ("matched", Bool),
            ("incidents", Text),
            ("rejected", Text),
            ("silenced", Text),
        ],
        paged: true,
    },
    Table {
        name: "incidents",
        columns: &[
            ("id", Int),
            ("playbook", Text),
            ("playbook_version", Text),
            ("branch", Text),
            ("tier", Int32),
            ("status", Text),
            ("drill", Bool),
            ("group_key", Text),
            ("opened_at", Time),
            ("resolved_at", Time),
            ("live", Bool),
            ("body", Text),
        ],
        paged: true,
    },
    Table {
        name: "outbox",
        columns: &[
            ("id", Int),
            ("incident", Int),
            ("step", Text),
            ("channel", Text),
            ("target", Text),
            ("recipient", Text),
            ("person", Text),
            ("subject", Text),
            ("body", Text),
            ("created_at", Time),
            ("link", Text),
            ("payload", Text),
            ("attempts", Int),
            ("next_attempt_at", Time),
            ("delivered_at", Time),
            ("failed_at", Time),
            ("last_error", Text),
            ("link_until", Time),
            ("announcement", Bool),
            ("urgent", Bool),
            ("grant_until", Time),
            ("drill", Bool),
        ],
        paged: true,
    },
    Table {
        name: "drill_runs",
        columns: &[
            ("id", Int),
            ("drill", Text),
            ("status", Text),
            ("started_at", Time),
            ("body", Text),
        ],
        paged: true,
    },
    Table {
        name: "drill_schedule",
        columns: &[("drill", Text), ("last_fire", Time)],
        paged: false,
    },
    Table {
        name: "review_actions",
        columns: &[
            ("incident", Int),
            ("n", Int32),
            ("open", Bool),
            ("body", Text),
        ],
        paged: false,
    },
    Table {
        name: "silences",
        columns: &[("id", Int), ("ends_at", Time), ("body", Text)],
        paged: true,
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", Int),
            ("at", Text),
            ("entity", Text),
            ("what", Text),
            ("by", Text),
            ("via", Text),
            ("detail", Text),
            ("prev_hash", Text),
            ("hash", Hash),
        ],
        paged: true,
    },
];

/// Rows copied at once.
const PAGE: i64 = 5000;

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies the SQLite database at `db` (brought up to date, read in one
/// snapshot) into the empty PostgreSQL database at `url`.
pub fn from_sqlite(db: &std::path::Path, url: &str) -> Result<Copied, StoreError> {
    blocking(|| copy(db, url))
}

fn copy(db: &std::path::Path, url: &str) -> Result<Copied, StoreError> {
    let src = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let snapshot = src
        .unchecked_transaction()
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let mut pg = connect(url)?;
    schema::migrate(&mut pg)?;
    let mut tx = pg.transaction()?;
    let rows: i64 = tx
        .query_one("SELECT COUNT(*) FROM audit", &[])?
        .try_get(0)?;
    let incidents: i64 = tx
        .query_one("SELECT COUNT(*) FROM incidents", &[])?
        .try_get(0)?;
    if rows > 0 || incidents > 0 {
        return Err(StoreError::Refused(format!(
            "the PostgreSQL database already holds {rows} audit rows and {incidents} incidents: migrate copies into an empty database only (a daemon that started on it writes its first audit row at once)"
        )));
    }
    let mut copied = Vec::new();
    for t in TABLES {
        copied.push((t.name, copy_table(&snapshot, &mut tx, t)?));
    }
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM outbox",
        &[],
    )?;
    tx.commit()?;
    Ok(copied)
}

fn copy_table(
    src: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    t: &Table,
) -> Result<u64, StoreError> {
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| *n).collect();
    let select = if t.paged {
        format!(
            "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT {PAGE}",
            names.join(", "),
            t.name
        )
    } else {
        format!(
            "SELECT 0, {} FROM {} WHERE ?1 = ?1",
            names.join(", "),
            t.name
        )
    };
    let casts: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| format!("${}::{}", i + 1, k.array_type()))
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        t.name,
        names.join(", "),
        casts.join(", ")
    );
    let backend = |e: rusqlite::Error| StoreError::Backend(Box::new(e));
    let mut st = src.prepare(&select).map_err(backend)?;
    let mut after = 0i64;
    let mut total = 0u64;
    loop {
        let mut cols: Vec<Column> = t.columns.iter().map(|(_, k)| Column::new(*k)).collect();
        let mut rows = st.query([after]).map_err(backend)?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(backend)? {
            after = r.get(0).map_err(backend)?;
            for (i, col) in cols.iter_mut().enumerate() {
                let v = r.get_ref(i + 1).map_err(backend)?;
                col.push(v).map_err(|why| StoreError::Corrupt {
                    what: format!("{}.{} (row {after})", t.name, t.columns[i].0),
                    detail: why,
                })?;
            }
            n += 1;
        }
        if n > 0 {
            let params: Vec<&(dyn ToSql + Sync)> = cols.iter().map(Column::sql).collect();
            tx.execute(&insert, &params)?;
            total += n;
        }
        if !t.paged || n < PAGE as u64 {
            return Ok(total);
        }
    }
}
