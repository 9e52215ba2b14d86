//! The SQLite schema as numbered steps: a database made by any earlier
//! version is brought to the current one step by step.

use rusqlite::Connection;

use crate::store::StoreError;

/// Step 1's schema, frozen: never edited once shipped (a database already
/// at version 1 or later would not see the change); a change is a new step.
const SCHEMA_1: &str = r#"
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
    incidents TEXT NOT NULL,
    rejected TEXT,
    silenced TEXT
);
-- A branch's events, found bucket by bucket (see `events.rs`): an index led
-- by the branch cost a page write per event in a storm across branches.
CREATE INDEX IF NOT EXISTS events_bucket ON events ((id >> 8), branch);
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
-- The live incidents a start restores are the open ones (incidents_status) and
-- the resolved ones with steps still open, such as a 72-hour report: only those
-- are indexed by `live`, since an entry for every incident was a page written
-- in each commit of a storm.
CREATE INDEX IF NOT EXISTS incidents_followup ON incidents (id) WHERE live = 1 AND status <> 'open';
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, id);
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
    last_error TEXT,
    link_until TEXT,
    announcement INTEGER NOT NULL DEFAULT 0,
    urgent INTEGER NOT NULL DEFAULT 0,
    grant_until TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox (incident, id);
-- The delivery worker's questions, answered by seeks rather than scans of a
-- storm's backlog: due messages by channel, recipient, drill or real, oldest
-- first (`outbox_groups`, made by step 2); and the next retry.
CREATE INDEX IF NOT EXISTS outbox_retry ON outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS drill_runs (
    id INTEGER PRIMARY KEY,
    drill TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drill_runs_drill ON drill_runs (drill, id);
CREATE INDEX IF NOT EXISTS drill_runs_status ON drill_runs (status);
CREATE TABLE IF NOT EXISTS drill_schedule (
    drill TEXT PRIMARY KEY,
    last_fire TEXT NOT NULL
);
-- Post-incident review actions: the open ones are restored at start (their
-- reminders are timers) and listed when overdue. What each review said is
-- its history line; this is the actions' state.
CREATE TABLE IF NOT EXISTS review_actions (
    incident INTEGER NOT NULL,
    n INTEGER NOT NULL,
    open INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (incident, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY,
    ends_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    entity TEXT NOT NULL,
    what TEXT NOT NULL,
    by TEXT NOT NULL,
    via TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL,
    -- Empty since 2026-11-25: the previous row's `hash` (see `AuditRow`).
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- An incident's history is its audit rows: every line has been one since the
-- first version (entity `incident:N`, with the line's time, what, by and
-- detail), so it is written once and covered by the hash chain. A query must
-- name this GLOB to use the index.
CREATE INDEX IF NOT EXISTS audit_incident_lines ON audit (entity, seq) WHERE entity GLOB 'incident:*';
"#;

/// Whether `table` has `column` (a database made by an earlier version may not).
pub(super) fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?)
}

/// One numbered step of the schema: it brings a database at version `to - 1`
/// to `to`, in one transaction with the new version number, so a crash
/// leaves the database at one version or the next.
struct Step {
    to: u32,
    run: fn(&Connection) -> Result<(), StoreError>,
}

/// Every step, in order. A database's version is SQLite's `user_version`:
/// the steps it has taken. A new database takes them all. Never edit a step
/// that has shipped: add one.
const STEPS: &[Step] = &[
    Step { to: 1, run: step_1 },
    Step { to: 2, run: step_2 },
    Step { to: 3, run: step_3 },
];

/// The version this build brings every database to.
pub(super) const LATEST: u32 = STEPS.len() as u32;

/// 1: the schema as of 2026-12-07 ([`SCHEMA_1`]), over whatever an earlier,
/// unnumbered version made: the columns those versions added one by one
/// first (to tables that exist), then the tables and indexes that are
/// missing, then the indexes that were replaced.
fn step_1(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, def) in [
        ("events", "rejected", "TEXT"),
        ("events", "silenced", "TEXT"),
        ("outbox", "failed_at", "TEXT"),
        ("outbox", "link", "TEXT"),
        ("outbox", "payload", "TEXT"),
        ("outbox", "link_until", "TEXT"),
        ("outbox", "announcement", "INTEGER NOT NULL DEFAULT 0"),
        ("outbox", "urgent", "INTEGER NOT NULL DEFAULT 0"),
        ("outbox", "grant_until", "TEXT"),
        ("audit", "via", "TEXT NOT NULL DEFAULT ''"),
    ] {
        if has_table(conn, table)? && !has_column(conn, table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {def};"))?;
        }
    }
    // The first versions made `outbox_pending` on (delivered_at, id); the
    // schema's own is partial, on the rows still to send (found by the
    // migration test from the first schema).
    conn.execute_batch("DROP INDEX IF EXISTS outbox_pending;")?;
    conn.execute_batch(SCHEMA_1)?;
    // Urgent messages (escalations, overdue notices, roll calls, critical
    // steps) never wait for a digest; the few pending ones are found here
    // without walking a storm's backlog.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS outbox_urgent ON outbox (id)
             WHERE urgent = 1 AND delivered_at IS NULL AND failed_at IS NULL;",
    )?;
    // Replaced by events_bucket (see `events.rs`), and incidents_followup.
    conn.execute_batch("DROP INDEX IF EXISTS events_branch; DROP INDEX IF EXISTS incidents_live;")?;
    // An earlier version also filed history lines by an unhashed column, read
    // through this index and checked from the row this key named; the lines
    // are found by their hashed entity now (see the schema). The column stays
    // in such a database, unread: dropping it would rewrite the audit log.
    // Likewise `history`, where versions before that wrote each line a second
    // time: every one of its lines is also an audit row.
    conn.execute_batch(
        "DROP INDEX IF EXISTS audit_incident;
         DELETE FROM meta WHERE key = 'audit_incident_since';",
    )?;
    Ok(())
}

/// 2: whether a message is a drill's is a column the engine sets, not the
/// mark its subject began with; rows already queued take their
/// incident's flag. The delivery worker's groups index follows, and the
/// `schema_version` note that never changed goes (the version is SQLite's
/// `user_version`).
fn step_2(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "ALTER TABLE outbox ADD COLUMN drill INTEGER NOT NULL DEFAULT 0;
         UPDATE outbox SET drill = 1 WHERE incident IN (SELECT id FROM incidents WHERE drill = 1);
         DROP INDEX IF EXISTS outbox_groups;
         CREATE INDEX outbox_groups ON outbox (channel, recipient, drill, id)
             WHERE delivered_at IS NULL AND failed_at IS NULL;
         DELETE FROM meta WHERE key = 'schema_version';",
    )?;
    Ok(())
}

/// 3 (2026-12-08): no table changes, but rows an earlier build cannot read
/// right: webhook payloads stored without their subject and text (the row's
/// columns hold them), event audit rows without their source and time (the
/// row's `by` and `at` say them). Numbered so such a build refuses the
/// database by name instead of sending empty chat messages or calling an
/// honest audit log broken.
fn step_3(_: &Connection) -> Result<(), StoreError> {
    Ok(())
}

pub(super) fn has_table(conn: &Connection, table: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?)
}

/// The database's schema version (`user_version`).
pub(super) fn version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings a database (new, or made by any earlier version) to [`LATEST`],
/// one step per transaction. A database made by a later version is refused:
/// this build would not know what its columns mean.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let at = version(conn)?;
    if at > LATEST {
        return Err(StoreError::Corrupt {
            what: "the database's schema version".into(),
            detail: format!(
                "it is {at}, made by a later version of branchguard; this one knows up to {LATEST}: run the later version, or restore a backup made by this one"
            ),
        });
    }
    let existed = has_table(conn, "meta")?;
    for step in STEPS.iter().filter(|s| s.to > at) {
        // Taken with the write lock, and the version asked again inside: a
        // second process bringing the same database up (the CLI beside a
        // starting daemon) finds the step taken and skips it.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if version(&tx)? >= step.to {
            continue;
        }
        (step.run)(&tx)?;
        tx.pragma_update(None, "user_version", step.to)?;
        tx.commit()?;
        if existed {
            tracing::info!("database schema brought to version {}", step.to);
        }
    }
    Ok(())
}

/// For a reader outside the daemon (the CLI's `export`, `audit verify`): a
/// database an earlier version made is brought up to date first, as the
/// daemon's next start would (the steps add, never remove, what is read);
/// one a later version made is refused. When it cannot be written here (a
/// read-only copy, another user's file) the error says what to do.
pub(super) fn up_to_date_for_reading(path: &std::path::Path) -> Result<(), StoreError> {
    let at = {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        version(&conn)?
    };
    if at == LATEST {
        return Ok(());
    }
    let opened = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE);
    let mut conn = match opened {
        Ok(c) => c,
        Err(e) if at < LATEST => {
            return Err(StoreError::Corrupt {
                what: "the database's schema version".into(),
                detail: format!(
                    "it is {at}, made by an earlier version; this one reads version {LATEST} and cannot bring it up to date here ({e}): start the daemon on it once, or run this where the database can be written"
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn)
}

#[cfg(test)]
pub(super) mod tests {
    use rusqlite::{Connection, params};

    use crate::engine::{HistoryEntry, Round};
    use crate::store::audit::AuditCheck;
    use crate::store::audit::Chain;
    use crate::store::sqlite::{
        DB_FILE, HISTORY, LIVE, SqliteReader, SqliteWriter, history_of, live_bodies,
    };
    use crate::store::{Reader, Writer};

    /// Incidents open, resolved with a step still open, and resolved and done,
    /// in a database made by an earlier version (with `incidents_live`).
    fn earlier_database(dir: &std::path::Path) -> Connection {
        drop(SqliteWriter::open(dir, crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap());
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP INDEX incidents_followup;
             CREATE INDEX incidents_live ON incidents (live);
             DROP INDEX outbox_groups; ALTER TABLE outbox DROP COLUMN drill;
             PRAGMA user_version = 0;",
        )
        .unwrap();
        for (id, status, live) in [
            (1, "resolved", false),
            (2, "open", true),
            (3, "resolved", true),
            (4, "open", true),
            (5, "resolved", false),
            (6, "resolved", true),
            (7, "open", true),
        ] {
            conn.execute(
                "INSERT INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, live, body)
                 VALUES (?1, 'p', 'v', 'b', 1, ?2, 0, ?3, '2026-11-25T00:00:00Z', ?4, ?5)",
                params![id, status, format!("g{id}"), live, format!("body {id}")],
            )
            .unwrap();
        }
        conn
    }

    /// The names of `table`'s indexes, in order (the migration tests' check).
    pub(in crate::store::sqlite) fn indexes_of(conn: &Connection, table: &str) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 ORDER BY name")
            .unwrap();
        st.query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn indexes(conn: &Connection) -> Vec<String> {
        indexes_of(conn, "incidents")
    }

    /// The tables' columns (`table.column`), sorted.
    fn columns(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare(
                "SELECT m.name || '.' || p.name FROM sqlite_schema m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' ORDER BY 1",
            )
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Every index, with its definition, sorted.
    fn all_indexes(conn: &Connection) -> Vec<(String, String)> {
        let mut st = conn
            .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// What an earlier version left that is kept, unread: its `history`
    /// table (and index), and the audit column that filed lines by incident.
    fn left_over(name: &str) -> bool {
        name.starts_with("history") || name == "audit.incident"
    }

    /// A database made by each schema the project has shipped (the files in
    /// `schemas/`, taken from its history) is brought to the current one:
    /// the same columns and indexes as a new database, its version the
    /// latest, its rows read back, and a drill's queued message marked as a
    /// drill's by its incident.
    #[test]
    fn a_database_made_by_every_earlier_schema_is_brought_to_the_current_one() {
        use crate::engine::ChannelKind;
        use crate::store::{Lane, testing};
        let key = crate::store::AuditKey::from_bytes(&[3u8; 32]);
        let new = tempfile::tempdir().unwrap();
        drop(SqliteWriter::open(new.path(), key.clone()).unwrap());
        let conn = Connection::open(new.path().join(DB_FILE)).unwrap();
        let (want_columns, want_indexes) = (columns(&conn), all_indexes(&conn));
        assert_eq!(super::version(&conn).unwrap(), super::LATEST);
        assert!(want_columns.contains(&"outbox.drill".to_string()));

        let at: chrono::DateTime<chrono::Utc> = "2026-11-24T09:00:00Z".parse().unwrap();
        let folder =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sqlite/schemas");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 15, "{files:?}");
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            let dir = tempfile::tempdir().unwrap();
            {
                let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
                conn.execute_batch(&std::fs::read_to_string(&file).unwrap())
                    .unwrap();
                let cols = columns(&conn);
                let has = |c: &str| cols.iter().any(|x| x == c);
                for (id, drill) in [(1, true), (2, false)] {
                    let inc = testing::incident(id, "br-a", drill, at);
                    conn.execute(
                        "INSERT INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, live, body)
                         VALUES (?1, 'atm', 'v', 'br-a', 1, 'open', ?2, ?3, '2026-11-24T09:00:00.000Z', 1, ?4)",
                        params![id, drill, inc.group_key, serde_json::to_string(&inc).unwrap()],
                    )
                    .unwrap();
                    // A message still to send, in the columns this schema had.
                    let subject = if drill {
                        "[DRILL] ACK br-a"
                    } else {
                        "ACK br-a"
                    };
                    conn.execute(
                        "INSERT INTO outbox (incident, step, channel, target, recipient, person, subject, body, created_at)
                         VALUES (?1, NULL, 'email', 'role:it-duty', 'it@bank.example', NULL, ?2, 'ATM 3 is down.', '2026-11-24T09:00:00.000Z')",
                        params![id, subject],
                    )
                    .unwrap();
                }
                assert!(has("outbox.subject"), "{name}");
            }
            let (mut writer, created) = SqliteWriter::open(dir.path(), key.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!created, "{name}");
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            assert_eq!(super::version(&conn).unwrap(), super::LATEST, "{name}");
            let got: Vec<String> = columns(&conn)
                .into_iter()
                .filter(|c| !left_over(c))
                .collect();
            assert_eq!(got, want_columns, "{name}: columns");
            let got: Vec<(String, String)> = all_indexes(&conn)
                .into_iter()
                .filter(|(n, _)| !left_over(n))
                .collect();
            assert_eq!(got, want_indexes, "{name}: indexes");
            let now = at + chrono::Duration::seconds(1);
            let live = writer.load_live(now).unwrap();
            assert_eq!(live.incidents.len(), 2, "{name}");
            assert_eq!(live.next_incident, 3, "{name}");
            let reader = SqliteReader::open(dir.path()).unwrap();
            let groups = reader.due_groups(now, &Lane::Email).unwrap();
            let drills: Vec<bool> = groups.iter().map(|g| g.drill).collect();
            assert_eq!(drills, [false, true], "{name}: a real group and a drill's");
            let (_, _, rows) = reader.incident_with_outbox(1).unwrap().unwrap();
            assert!(rows[0].drill, "{name}");
            assert_eq!(rows[0].channel, ChannelKind::Email);
            // And it takes a new round on top.
            let mut round = crate::engine::Round::default();
            let inc = testing::incident(3, "br-b", false, now);
            round.outbox.push(testing::message(
                &inc,
                ChannelKind::Email,
                "a@bank.example",
                now,
            ));
            round.save(inc, now);
            assert_eq!(writer.commit(&round).unwrap().outbox.len(), 1, "{name}");
        }
    }

    /// The CLI reads a database an earlier version made (an export right
    /// after an upgrade, before the daemon started on it): brought up to
    /// date first, not failed on a column it does not have yet.
    #[test]
    fn a_reader_outside_the_daemon_brings_an_earlier_database_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let folder =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sqlite/schemas");
        let last = std::fs::read_to_string(folder.join("15-9a58d3c.sql")).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&last).unwrap();
            let at = "2026-11-24T09:00:00Z".parse().unwrap();
            let inc = crate::store::testing::incident(1, "br-a", true, at);
            conn.execute(
                "INSERT INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, live, body)
                 VALUES (1, 'atm', 'v', 'br-a', 1, 'open', 1, 'g', '2026-11-24T09:00:00.000Z', 1, ?1)",
                [serde_json::to_string(&inc).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO outbox (incident, channel, target, recipient, subject, body, created_at)
                 VALUES (1, 'email', 't', 'a@bank.example', 's', 'b', '2026-11-24T09:00:00.000Z')",
                [],
            )
            .unwrap();
            assert_eq!(super::version(&conn).unwrap(), 0);
        }
        let reader = SqliteReader::open(dir.path()).unwrap();
        let (_, _, outbox) = reader.incident_with_outbox(1).unwrap().unwrap();
        assert!(outbox[0].drill, "the drill incident's message, flagged");
        let conn = Connection::open(&path).unwrap();
        assert_eq!(super::version(&conn).unwrap(), super::LATEST);
        // A later version's database: refused by name, left as it is.
        conn.pragma_update(None, "user_version", super::LATEST + 1)
            .unwrap();
        let err = SqliteReader::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("made by a later version"), "{err}");
        assert_eq!(super::version(&conn).unwrap(), super::LATEST + 1);
    }

    /// A database made by a later version is refused, not written into.
    #[test]
    fn a_database_from_a_later_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::store::AuditKey::from_bytes(&[3u8; 32]);
        drop(SqliteWriter::open(dir.path(), key.clone()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", super::LATEST + 1)
            .unwrap();
        drop(conn);
        let err = SqliteWriter::open(dir.path(), key)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("made by a later version of branchguard"),
            "{err}"
        );
        assert!(
            err.contains(&format!("knows up to {}", super::LATEST)),
            "{err}"
        );
    }

    #[test]
    fn the_steps_are_numbered_one_by_one() {
        let numbers: Vec<u32> = super::STEPS.iter().map(|s| s.to).collect();
        let want: Vec<u32> = (1..=super::LATEST).collect();
        assert_eq!(numbers, want);
    }

    #[test]
    fn the_live_incidents_are_the_open_ones_and_the_resolved_ones_with_open_steps_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let conn = earlier_database(dir.path());
        assert_eq!(indexes(&conn), ["incidents_live", "incidents_status"]);
        drop(
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap(),
        );
        assert_eq!(indexes(&conn), ["incidents_followup", "incidents_status"]);
        assert_eq!(
            live_bodies(&conn).unwrap(),
            ["body 2", "body 3", "body 4", "body 6", "body 7"]
        );
    }

    /// **Invariant:** a stored value that cannot be read back is an error,
    /// never a default: an incident whose body is not what was written
    /// stops a start (rather than restore it without its timers) and is a
    /// fault on read.
    #[test]
    fn a_stored_value_that_cannot_be_read_back_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(earlier_database(dir.path()));
        let (mut writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        match writer.load_live(crate::clock::now()) {
            Err(crate::store::StoreError::Corrupt { what, .. }) => {
                assert!(what.contains("incident"), "{what}")
            }
            Err(other) => panic!("not named as damage: {other}"),
            Ok(_) => panic!("bodies `body 2` … were read back as incidents"),
        }
        let reader = SqliteReader::open(dir.path()).unwrap();
        assert!(matches!(
            reader.incident(2),
            Err(crate::store::StoreError::Corrupt { .. })
        ));
        assert!(matches!(reader.incident(99), Ok(None)));
    }

    /// **Invariant:** no index the writer maintains is led by the branch.
    #[test]
    fn no_index_is_led_by_the_branch() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap(),
        );
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let mut st = conn
            .prepare(
                "SELECT s.name, (SELECT name FROM pragma_index_xinfo(s.name) WHERE seqno = 0)
                 FROM sqlite_schema s WHERE s.type = 'index'",
            )
            .unwrap();
        let leads: Vec<(String, Option<String>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(leads.len() >= 8, "{leads:?}");
        let by_branch: Vec<_> = leads
            .iter()
            .filter(|(_, first)| first.as_deref() == Some("branch"))
            .collect();
        assert!(
            by_branch.is_empty(),
            "indexes led by the branch: {by_branch:?}"
        );
        // The events' bucket index names the branch second.
        assert!(leads.iter().any(|(n, _)| n == "events_bucket"), "{leads:?}");
    }

    /// A start restores the live incidents without reading every incident
    /// ever opened: both of its queries are answered by an index.
    #[test]
    fn the_live_incidents_are_found_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        drop(earlier_database(dir.path()));
        drop(
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap(),
        );
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        for (sql, index) in LIVE
            .into_iter()
            .zip(["incidents_status", "incidents_followup"])
        {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join(" | ");
            assert!(
                plan.contains(&format!("USING INDEX {index}")),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }

    /// Every history line has always been an audit row of its incident, so
    /// a line is written once and an incident's history is its audit rows,
    /// found through their index: in a database made by the versions that
    /// also wrote `history`, or that filed lines by an unhashed column, the
    /// older lines are found the same way, and that column's index and key go.
    #[test]
    fn an_incidents_history_is_its_audit_rows_old_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            drop(
                SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32]))
                    .unwrap(),
            );
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE history (id INTEGER PRIMARY KEY, incident INTEGER, at TEXT NOT NULL,
                     what TEXT NOT NULL, by TEXT NOT NULL, detail TEXT NOT NULL);
                 ALTER TABLE audit ADD COLUMN incident INTEGER;
                 CREATE INDEX audit_incident ON audit (incident, seq) WHERE incident IS NOT NULL;
                 INSERT INTO meta (key, value) VALUES ('audit_incident_since', '3');
                 DELETE FROM audit; DELETE FROM meta WHERE key = 'audit_keyed';
                 DROP INDEX outbox_groups; ALTER TABLE outbox DROP COLUMN drill;
                 PRAGMA user_version = 0;",
            )
            .unwrap();
            // What earlier versions wrote: each line in `history` and, with
            // both hashes, in the audit log; then filed by the column.
            let mut chain = Chain::after(None, None, false);
            for (incident, at, what, by, detail) in [
                (
                    1,
                    "2026-11-24T01:00:00.000Z",
                    "incident.opened",
                    "event",
                    "old 1",
                ),
                (
                    2,
                    "2026-11-24T01:00:01.000Z",
                    "incident.opened",
                    "event",
                    "old 2",
                ),
                (
                    1,
                    "2026-11-24T01:00:02.000Z",
                    "step.notified",
                    "branchguard",
                    "old 3",
                ),
            ] {
                let r = chain.append(at, &format!("incident:{incident}"), what, by, "", detail);
                let filed = (r.seq >= 3).then_some(incident);
                if filed.is_none() {
                    conn.execute(
                        "INSERT INTO history (incident, at, what, by, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![incident, at, what, by, detail],
                    )
                    .unwrap();
                }
                conn.execute(
                    "INSERT INTO audit (seq, at, entity, what, by, detail, prev_hash, hash, incident) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![r.seq, r.at, r.entity, r.what, r.by, r.detail, r.prev_hash, r.hash, filed],
                )
                .unwrap();
            }
        }
        let (mut writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(indexes_of(&conn, "audit"), ["audit_incident_lines"]);
        let key: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM meta WHERE key = 'audit_incident_since'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key, 0);
        let mut round = Round::default();
        for (incident, detail) in [
            (Some(1), "new 1"),
            (None, "daemon"),
            (Some(2), "new 2"),
            (Some(1), "new 3"),
            (Some(10), "new 4"),
        ] {
            round.history.push(HistoryEntry {
                incident,
                at: "2026-11-25T01:00:00Z".parse().unwrap(),
                what: "step.acknowledged".into(),
                by: "it.a".into(),
                via: "test".into(),
                detail: detail.into(),
            });
        }
        writer.commit(&round).unwrap();
        let details = |id| -> Vec<String> {
            history_of(&conn, id)
                .unwrap()
                .into_iter()
                .map(|h| h.detail)
                .collect()
        };
        assert_eq!(details(1), ["old 1", "old 3", "new 1", "new 3"]);
        assert_eq!(details(2), ["old 2", "new 2"]);
        // `incident:10` is not `incident:1`'s: the entity is matched whole.
        assert_eq!(details(10), ["new 4"]);
        let history_rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            history_rows, 2,
            "a new line is written once, to the audit log"
        );
        // New rows store their own hash only: the previous one is the row
        // before's.
        let with_prev: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE seq > 3 AND prev_hash <> ''",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(with_prev, 0);
        let reader = SqliteReader::open(dir.path()).unwrap();
        let key = || Some(crate::store::AuditKey::from_bytes(&[3u8; 32]));
        // Three rows of the earlier version, the `audit.keyed` row, five new.
        // The earlier rows' hashes are text, the new ones' 32-byte blobs:
        // one chain, checked across both.
        let kinds: Vec<String> = conn
            .prepare("SELECT typeof(hash) FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kinds[..3], ["text", "text", "text"]);
        assert!(kinds[3..].iter().all(|k| k == "blob"), "{kinds:?}");
        let blob: i64 = conn
            .query_row(
                "SELECT MAX(length(hash)) FROM audit WHERE typeof(hash) = 'blob'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(blob, 32);
        let last: String = conn
            .query_row(
                "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| super::super::hash_col(r, 0),
            )
            .unwrap();
        let intact = AuditCheck::Ok {
            rows: 9,
            keyed: true,
            last,
        };
        assert_eq!(reader.verify_audit(key(), None).unwrap(), intact);
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {HISTORY}"),
                ["incident:1"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("USING INDEX audit_incident_lines"), "{plan}");
        // What files a line is hashed: a line moved to another incident, or
        // hidden from its own, breaks the chain at that row.
        for tamper in ["incident:2", "event:1"] {
            conn.execute(
                "UPDATE audit SET entity = ?1 WHERE detail = 'new 1'",
                [tamper],
            )
            .unwrap();
            assert!(
                matches!(
                    reader.verify_audit(key(), None).unwrap(),
                    AuditCheck::Broken { seq: 5, .. }
                ),
                "{tamper}"
            );
            conn.execute(
                "UPDATE audit SET entity = 'incident:1' WHERE detail = 'new 1'",
                [],
            )
            .unwrap();
            assert_eq!(reader.verify_audit(key(), None).unwrap(), intact);
        }
    }

    /// A storm opens thousands of incidents of one playbook version: it is
    /// written once, and only a commit that went through makes it known.
    #[test]
    fn a_playbook_version_is_written_once_and_only_a_commit_that_went_through_counts() {
        use crate::engine::StoredEvent;
        use crate::event::{Event, Severity, Status};
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        // The test's own fixture, by id: not whatever sorts first in playbooks/.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/engine/branchguard.yaml");
        let pb = std::sync::Arc::clone(
            crate::config::load(&path)
                .unwrap()
                .playbook("failover")
                .unwrap(),
        );
        let versions = || -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM playbook_versions WHERE playbook = ?1",
                [&pb.id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let event = |id| StoredEvent {
            id,
            received_at: "2026-11-25T01:00:00Z".parse().unwrap(),
            event: Event {
                kind: "atm.down".into(),
                branch: "sh-001".into(),
                severity: Severity::Critical,
                status: Status::Firing,
                labels: Default::default(),
                summary: None,
                occurred_at: "2026-11-25T01:00:00Z".parse().unwrap(),
                source: "test".into(),
            },
            matched: false,
            incidents: Vec::new(),
            rejected: None,
            silenced: None,
        };
        // Two events with one id: the commit fails and stores nothing.
        let mut failing = Round::default();
        failing.playbooks = vec![pb.clone(), pb.clone()];
        failing.events = vec![event(1), event(1)];
        assert!(writer.commit(&failing).is_err());
        assert_eq!(versions(), 0);
        let mut round = Round::default();
        round.playbooks = vec![pb.clone(), pb.clone()];
        writer.commit(&round).unwrap();
        assert_eq!(versions(), 1);
        // Known stored now, so not serialized and written again.
        conn.execute("DELETE FROM playbook_versions", []).unwrap();
        writer.commit(&round).unwrap();
        assert_eq!(versions(), 0, "a version known stored is not written again");
    }
}
