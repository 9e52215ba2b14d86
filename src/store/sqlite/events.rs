//! Listing stored events, newest first, and finding a branch's events
//! without an index that costs a page write per event.
//!
//! An index on `(branch, id)` puts each new event on the leaf page of its
//! branch: in a storm across 5,000 branches every event of a commit landed on
//! a different page, and each of those 4 KB pages was written to the WAL and
//! fsynced again (about half the pages a commit of batches wrote: 0.99 WAL
//! frames per event without it). `events_bucket ((id >> 8), branch)` leads with the id's bucket of
//! 256 instead, so a commit's new entries land on the last page or two, and a
//! branch's events are read bucket by bucket from the newest down until a page
//! of the list is full: one index seek per 256 events walked (and per branch
//! of a scope), at most [`WALK_BUCKETS`] buckets far in one request.
//!
//! **Invariant:** the bucket expression here is written exactly as in the
//! schema, or SQLite does not use the index (a unit test checks the plan).

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::{json_col, time_col};
use crate::store::{EventQuery, EventRow, Page, StoreError};

/// Bits of an event id below its bucket (`events_bucket`).
const BUCKET_BITS: u32 = 8;
/// More branches than this are found by walking all events newest first (a
/// scope that wide matches often), fewer bucket by bucket.
const WALK_AT_MOST: usize = 32;
/// How far one request looks, in buckets of ids: 4 million events, about
/// 0.1 s here for one branch. A walk for k branches takes 1/k of it (each
/// bucket is k seeks); a scan reads rows, and stops after as many ids.
const WALK_BUCKETS: i64 = 16_384;

const COLUMNS: &str = "id, received_at, kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents, rejected, silenced";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        received_at: time_col(r, 1)?,
        kind: r.get(2)?,
        branch: r.get(3)?,
        severity: r.get(4)?,
        status: r.get(5)?,
        labels: json_col(r, 6, "event labels")?,
        summary: r.get(7)?,
        occurred_at: time_col(r, 8)?,
        source: r.get(9)?,
        matched: r.get(10)?,
        incidents: json_col(r, 11, "event incidents")?,
        rejected: r.get(12)?,
        silenced: r.get(13)?,
    })
}

/// ` AND kind = ?n AND matched = 1`, binding from `args`' next position.
/// `kind` is the column as written: `+kind` keeps SQLite off `events_kind`,
/// which in the bucket walk it chose, walking all of a kind's events for
/// every bucket.
fn filters(q: &EventQuery, kind: &str, args: &mut Vec<Value>) -> String {
    let mut sql = String::new();
    if let Some(k) = &q.kind {
        args.push(Value::Text(k.clone()));
        sql.push_str(&format!(" AND {kind} = ?{}", args.len()));
    }
    match q.matched {
        Some(true) => sql.push_str(" AND matched = 1"),
        Some(false) => sql.push_str(" AND matched = 0"),
        None => {}
    }
    sql
}

/// `branch IN (?n, …)` over `branches`, appended to `args`.
fn branch_in(branches: &[String], args: &mut Vec<Value>) -> String {
    let start = args.len();
    args.extend(branches.iter().map(|b| Value::Text(b.clone())));
    let marks: Vec<String> = (start + 1..=args.len()).map(|i| format!("?{i}")).collect();
    format!("branch IN ({})", marks.join(", "))
}

pub(super) fn list(conn: &Connection, q: &EventQuery) -> Result<Page<EventRow>, StoreError> {
    list_walking(conn, q, WALK_BUCKETS)
}

/// [`list`], looking at most `budget` buckets far.
fn list_walking(
    conn: &Connection,
    q: &EventQuery,
    budget: i64,
) -> Result<Page<EventRow>, StoreError> {
    let before = q.cursor.unwrap_or(i64::MAX);
    let scope = q.branches();
    let newest = match &scope {
        Some(b) if b.is_empty() => None,
        _ => newest_below(conn, before)?,
    };
    let (rows, walked_to) = match newest {
        None => (Vec::new(), None),
        Some(newest) => {
            let look = Look {
                before,
                newest,
                want: q.limit + 1,
                budget,
            };
            match scope {
                Some(b) if b.len() <= WALK_AT_MOST => walk(conn, &b, q, &look)?,
                scope => scan(conn, scope.as_deref(), q, &look)?,
            }
        }
    };
    let more = rows.len() > q.limit;
    let items: Vec<EventRow> = rows.into_iter().take(q.limit).collect();
    let next = if more {
        items.last().map(|e| e.id)
    } else {
        walked_to
    };
    Ok(Page { items, next })
}

/// Where one request looks: below `before`, whose newest event is `newest`,
/// for `want` rows, at most `budget` buckets far.
struct Look {
    before: i64,
    newest: i64,
    want: usize,
    budget: i64,
}

/// The newest event id below `before`, if any.
fn newest_below(conn: &Connection, before: i64) -> Result<Option<i64>, StoreError> {
    let newest: Option<i64> =
        conn.query_row("SELECT MAX(id) FROM events WHERE id < ?1", [before], |r| {
            r.get(0)
        })?;
    Ok(newest.filter(|n| *n > 0))
}

/// All events (or a wide scope's) newest first, along the table itself, over
/// at most `budget` buckets of ids: with the id the scan stopped at when it
/// ran out before the page was full (the next page's cursor), as in [`walk`].
fn scan(
    conn: &Connection,
    branches: Option<&[String]>,
    q: &EventQuery,
    look: &Look,
) -> Result<(Vec<EventRow>, Option<i64>), StoreError> {
    let lowest = look
        .newest
        .saturating_sub(look.budget.saturating_mul(1 << BUCKET_BITS))
        + 1;
    let mut args = vec![Value::Integer(look.before), Value::Integer(lowest)];
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE id < ?1 AND id >= ?2");
    if let Some(b) = branches {
        let cond = branch_in(b, &mut args);
        sql.push_str(&format!(" AND {cond}"));
    }
    sql.push_str(&filters(q, "kind", &mut args));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", look.want));
    let mut st = conn.prepare(&sql)?;
    let rows: Vec<EventRow> = st
        .query_map(params_from_iter(args.iter()), event_row)?
        .collect::<Result<_, _>>()?;
    let rest = (rows.len() < look.want && lowest > 1).then_some(lowest);
    Ok((rows, rest))
}

/// The events of the branches in `cond` in bucket `?1` below id `?2`.
fn bucket_sql(cond: &str, rest: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM events WHERE (id >> {BUCKET_BITS}) = ?1 AND {cond} AND id < ?2{rest} ORDER BY id DESC"
    )
}

/// A few branches' events newest first, bucket by bucket.
///
/// Returns with fewer than `look.want` rows and the id the walk stopped at (the
/// next page's cursor) after `budget` seeks, so that one request's work is
/// bounded however rare the branch; the client follows `next` as for any page.
fn walk(
    conn: &Connection,
    branches: &[String],
    q: &EventQuery,
    look: &Look,
) -> Result<(Vec<EventRow>, Option<i64>), StoreError> {
    let budget = (look.budget / branches.len() as i64).max(1);
    // ?1: the bucket; ?2: below this id; then the branches and the filters.
    let mut args = vec![Value::Integer(0), Value::Integer(look.before)];
    let cond = branch_in(branches, &mut args);
    let rest = filters(q, "+kind", &mut args);
    let mut st = conn.prepare(&bucket_sql(&cond, &rest))?;
    let mut out: Vec<EventRow> = Vec::new();
    let top = look.newest >> BUCKET_BITS;
    for bucket in (0..=top).rev() {
        args[0] = Value::Integer(bucket);
        for r in st.query_map(params_from_iter(args.iter()), event_row)? {
            out.push(r?);
        }
        if out.len() >= look.want {
            out.truncate(look.want);
            break;
        }
        if top - bucket + 1 >= budget && bucket > 0 {
            return Ok((out, Some(bucket << BUCKET_BITS)));
        }
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Reader;
    use crate::store::sqlite::{SqliteReader, SqliteWriter};

    /// Events at sparse ids over 1,500 buckets, a dense run, a rare branch.
    fn stored(dir: &std::path::Path) -> Vec<(i64, String, String, bool)> {
        let (writer, _) =
            SqliteWriter::open(dir, crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        drop(writer);
        let conn = Connection::open(dir.join(super::super::DB_FILE)).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut ids: Vec<i64> = (0..600).map(|_| 1 + next(400_000) as i64).collect();
        ids.extend(131_000..131_300);
        ids.extend([65_535, 65_536, 65_537, 255, 256]);
        ids.sort_unstable();
        ids.dedup();
        let tx = conn.unchecked_transaction().unwrap();
        let mut all = Vec::new();
        for id in ids {
            let branch = match next(20) {
                0 if next(50) == 0 => "rare",
                0..=8 => "b1",
                9..=14 => "b2",
                15..=18 => "b3",
                _ => "b4",
            };
            let kind = if next(3) == 0 { "x" } else { "atm.down" };
            let matched = next(2) == 0;
            tx.execute(
                "INSERT INTO events (id, received_at, occurred_at, kind, branch, severity, status, labels, source, matched, incidents)
                 VALUES (?1, '2026-11-25T00:00:00Z', '2026-11-25T00:00:00Z', ?2, ?3, 'major', 'firing', '{}', 'api', ?4, '[]')",
                rusqlite::params![id, kind, branch, matched],
            )
            .unwrap();
            all.push((id, branch.to_string(), kind.to_string(), matched));
        }
        tx.commit().unwrap();
        all
    }

    /// Every page of `q` through the reader, following the cursors.
    fn pages(r: &SqliteReader, q: EventQuery) -> Vec<i64> {
        follow(q, |q| r.list_events(q).unwrap()).0
    }

    /// Every page of `q` walking at most `budget` buckets a page.
    fn pages_walking(r: &SqliteReader, q: EventQuery, budget: i64) -> (Vec<i64>, usize) {
        follow(q, |q| r.with(|conn| list_walking(conn, q, budget)).unwrap())
    }

    /// The ids of every page `list` gives for `q`, following the cursors; and
    /// how many pages came back short with a cursor.
    fn follow(
        mut q: EventQuery,
        list: impl Fn(&EventQuery) -> Page<EventRow>,
    ) -> (Vec<i64>, usize) {
        let mut got = Vec::new();
        let mut short = 0;
        loop {
            let page = list(&q);
            if page.items.len() < q.limit && page.next.is_some() {
                short += 1;
            }
            assert!(page.items.len() <= q.limit, "a page longer than its limit");
            got.extend(page.items.iter().map(|e| e.id));
            match page.next {
                Some(c) => {
                    assert!(
                        q.cursor.is_none_or(|before| c < before),
                        "a cursor that does not move"
                    );
                    q.cursor = Some(c);
                }
                None => return (got, short),
            }
        }
    }

    /// What `q` should list from `all`, newest first, by a plain filter.
    fn expected(all: &[(i64, String, String, bool)], q: &EventQuery) -> Vec<i64> {
        let mut want: Vec<i64> = all
            .iter()
            .filter(|(_, b, k, m)| {
                q.branch.as_ref().is_none_or(|x| x == b)
                    && q.scope.sees(b)
                    && q.kind.as_ref().is_none_or(|x| x == k)
                    && q.matched.is_none_or(|x| x == *m)
            })
            .map(|e| e.0)
            .collect();
        want.reverse();
        want
    }

    fn scope_of(w: &Option<Vec<String>>) -> crate::scope::Scope {
        match w {
            None => crate::scope::Scope::all(),
            Some(b) => crate::scope::Scope::branches(b.iter().cloned()),
        }
    }

    /// A token's scope of more branches than a walk takes: 40 with no events,
    /// and `also`.
    fn wide_scope(also: &[&str]) -> Vec<String> {
        (0..40)
            .map(|i| format!("w{i}"))
            .chain(also.iter().map(|b| b.to_string()))
            .collect()
    }

    #[test]
    fn a_branchs_events_are_found_newest_first_across_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let all = stored(dir.path());
        let r = SqliteReader::open(dir.path()).unwrap();
        let scopes = [
            None,
            Some(vec!["b1".to_string(), "rare".to_string()]),
            Some(vec![]),
            Some(wide_scope(&["b2", "rare"])),
        ];
        let mut checked = 0;
        for branch in [None, Some("b1"), Some("b3"), Some("rare"), Some("nobody")] {
            for within in &scopes {
                for kind in [None, Some("x")] {
                    for matched in [None, Some(true)] {
                        for limit in [1, 7, 1000] {
                            let q = EventQuery {
                                branch: branch.map(str::to_string),
                                scope: scope_of(within),
                                kind: kind.map(str::to_string),
                                matched,
                                limit,
                                cursor: None,
                            };
                            let want = expected(&all, &q);
                            assert_eq!(pages(&r, q.clone()), want, "{q:?}");
                            checked += want.len();
                        }
                    }
                }
            }
        }
        assert!(
            checked > 10_000,
            "the data left most queries empty: {checked}"
        );
    }

    #[test]
    fn a_walk_out_of_budget_returns_a_short_page_and_a_cursor_that_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let all = stored(dir.path());
        let r = SqliteReader::open(dir.path()).unwrap();
        let wide = wide_scope(&["rare"]);
        let cases = [
            ("rare", Some("rare"), None, None),
            ("b3", Some("b3"), None, None),
            (
                "two branches, walked",
                None,
                Some(vec!["b3".to_string(), "rare".to_string()]),
                None,
            ),
            ("a wide scope, scanned", None, Some(wide), None),
            ("a kind, scanned", None, None, Some("x")),
        ];
        for (what, branch, within, kind) in cases {
            let q = EventQuery {
                branch: branch.map(str::to_string),
                scope: scope_of(&within),
                kind: kind.map(str::to_string),
                limit: 50,
                ..EventQuery::default()
            };
            let want = expected(&all, &q);
            let (got, short) = pages_walking(&r, q, 7);
            assert_eq!(got, want, "{what}");
            assert!(short > 0, "{what}: the budget never ran out");
        }
    }

    #[test]
    fn the_walk_uses_the_bucket_index() {
        let dir = tempfile::tempdir().unwrap();
        stored(dir.path());
        let conn = Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
        let cond = "branch IN (?3)";
        let q = EventQuery {
            kind: Some("x".into()),
            matched: Some(true),
            ..EventQuery::default()
        };
        let mut args = vec![Value::Null; 3];
        let rest = filters(&q, "+kind", &mut args);
        for sql in [bucket_sql(cond, ""), bucket_sql(cond, &rest)] {
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = explain.parameter_count();
            let args: Vec<Value> = (0..n).map(|i| Value::Integer(i as i64)).collect();
            let plan: Vec<String> = explain
                .query_map(params_from_iter(args.iter()), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|p| p.contains("INDEX events_bucket (")),
                "{plan:?}: {sql}"
            );
        }
    }

    #[test]
    fn a_database_with_the_old_branch_index_is_moved_to_the_bucket_indexes() {
        let dir = tempfile::tempdir().unwrap();
        stored(dir.path());
        let path = dir.path().join(super::super::DB_FILE);
        let indexes = || -> Vec<String> {
            let conn = Connection::open(&path).unwrap();
            super::super::schema::tests::indexes_of(&conn, "events")
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP INDEX events_bucket;
                 CREATE INDEX events_branch ON events (branch, id);
                 DROP INDEX outbox_groups; ALTER TABLE outbox DROP COLUMN drill;
                 PRAGMA user_version = 0;",
            )
            .unwrap();
        }
        assert_eq!(indexes(), ["events_branch", "events_kind"]);
        let (writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        drop(writer);
        assert_eq!(indexes(), ["events_bucket", "events_kind"]);
    }
}
