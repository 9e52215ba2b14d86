//! What is checked before the daemon reads or writes a database at start:
//! its pages, and that its audit log is the one the key signed.

use super::*;

/// Whether the chain's `audit.keyed` row is written (the writer notes its
/// row in `meta`; a database without the note is looked through once).
pub(super) fn keyed(conn: &Connection) -> Result<bool, StoreError> {
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
    if !super::schema::has_table(&conn, "audit")? {
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
            super::hash_col(r, 0)
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
    let has_audit =
        super::schema::has_table(&conn, "audit")? || super::schema::has_table(&conn, "meta")?;
    if !has_audit {
        return Ok(false);
    }
    keyed(&conn)
}

/// A damaged page is found at start-up, not when a read first hits it.
pub(super) fn integrity(conn: &Connection) -> Result<(), StoreError> {
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
