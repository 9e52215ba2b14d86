//! The read side of the SQLite backend: lists, one incident, the outbox,
//! drill runs, the audit check, each on a pooled read-only connection.

use super::*;

/// A drill's messages, as the engine marked them (`outbox_groups` indexes it).
const DRILL: &str = "drill";
/// Not yet delivered or given up.
const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";
/// Due at `?1`.
const DUE: &str = "(next_attempt_at IS NULL OR next_attempt_at <= ?1)";

/// A lane's channel, and for a webhook lane its channel name (the recipient).
///
/// The channel goes into the SQL as a literal (it is one of two constants),
/// not as a parameter: compared with a bound `channel = ?`, SQLite's planner
/// marks these statements to be prepared again whenever the parameter is
/// rebound, and rusqlite clears bindings when a cached statement is put back,
/// so every use parsed and planned the query anew (13% of the daemon's CPU in
/// the storm benchmark's profile).
fn lane_parts(lane: &Lane) -> (&'static str, Option<&str>) {
    (lane.channel().as_str(), lane.webhook())
}

/// The delivery worker's statements, asked after every commit. `channel` is
/// `email` or `webhook` (see [`lane_parts`] for why it is not a parameter).
mod sql {
    use super::{DRILL, DUE, OUTBOX_COLUMNS, PENDING};

    /// The recipient `?2`. Cast, because a bare parameter compared with an
    /// indexed column in these statements also has SQLite prepare them again
    /// on each use; the cast keeps the index (`EXPLAIN QUERY PLAN`: `SEARCH
    /// outbox USING INDEX outbox_groups (channel=? AND recipient=? ...)`).
    const RECIPIENT: &str = "CAST(?2 AS TEXT)";

    /// Whether a recipient has a due drill message (`?2`).
    pub(super) fn drill_group(channel: &str) -> String {
        format!(
            "SELECT 1 FROM outbox WHERE {PENDING} AND channel = '{channel}' AND recipient = {RECIPIENT} AND {DRILL} = 1 AND {DUE} LIMIT 1"
        )
    }

    /// The first group with a due row after recipient `?2`.
    pub(super) fn next_group(channel: &str) -> String {
        format!(
            "SELECT recipient, {DRILL} FROM outbox WHERE {PENDING} AND channel = '{channel}' AND {DUE}
             AND recipient > ?2 ORDER BY recipient, {DRILL} LIMIT 1"
        )
    }

    /// Due rows of a lane (`?2`: a webhook's name, or NULL), oldest first,
    /// at most `cap`. The index does not give them in `id` order, so without
    /// a limit SQLite would sort every due row of the lane; a bound `LIMIT ?`
    /// would have the statement prepared again on each use, so the cap is a
    /// literal (a power of two: a few texts, each cached).
    pub(super) fn lane_rows(channel: &str, cap: usize) -> String {
        format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {PENDING} AND {DUE} AND channel = '{channel}'
             AND (?2 IS NULL OR recipient = {RECIPIENT})
             AND id NOT IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT {cap}"
        )
    }

    /// Whether group (`?2`, `drill`) has a due row. Drill or real is a
    /// literal too: compared with the index's expression, a parameter would
    /// have the statement prepared again on each use.
    pub(super) fn group_due(channel: &str, drill: bool) -> String {
        let drill = u8::from(drill);
        format!(
            "SELECT 1 FROM outbox WHERE {PENDING} AND channel = '{channel}' AND recipient = {RECIPIENT} AND {DRILL} = {drill} AND {DUE} LIMIT 1"
        )
    }

    /// Due rows of group (`?2`, `drill`) that may wait in a digest (not
    /// urgent ones), oldest first.
    pub(super) fn group_rows(channel: &str, drill: bool) -> String {
        let drill = u8::from(drill);
        format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {PENDING} AND channel = '{channel}'
             AND recipient = {RECIPIENT} AND {DRILL} = {drill} AND {DUE} AND urgent = 0
             AND id NOT IN (SELECT value FROM json_each(?3)) ORDER BY id"
        )
    }

    /// Due urgent rows of a lane (`?2`: a webhook's name, or NULL), oldest
    /// first, through `outbox_urgent` (which holds only pending urgent rows,
    /// so a storm's backlog of others is never walked).
    pub(super) fn urgent_rows(channel: &str, cap: usize) -> String {
        format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox INDEXED BY outbox_urgent
             WHERE urgent = 1 AND {PENDING} AND {DUE} AND channel = '{channel}'
             AND (?2 IS NULL OR recipient = {RECIPIENT})
             AND id NOT IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT {cap}"
        )
    }
}

/// The first (recipient, drill) group of `channel` after `after` that has a
/// due row, through the `outbox_groups` index: one seek per group however
/// many new messages a storm queued, so the delivery worker can ask after
/// every commit. Rows waiting for a retry are not in the index's order, so a
/// group whose oldest rows are in backoff is walked up to its first due row.
fn next_group(
    conn: &rusqlite::Connection,
    now: DateTime<Utc>,
    channel: &'static str,
    after: Option<&(String, bool)>,
) -> rusqlite::Result<Option<(String, bool)>> {
    let row = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?));
    // A row-value comparison `(recipient, drill) > (?, ?)` would seek to the
    // recipient and walk all its rows; two plain seeks never walk a group.
    if let Some((recipient, false)) = after {
        let mut st = conn.prepare_cached(&sql::drill_group(channel))?;
        if st.exists(params![ts(now), recipient])? {
            return Ok(Some((recipient.clone(), true)));
        }
    }
    let mut st = conn.prepare_cached(&sql::next_group(channel))?;
    let from = after.map_or("", |(r, _)| r.as_str());
    st.query_row(params![ts(now), from], row).optional()
}

impl SqliteReader {
    /// A lane's due rows by one of its queries (all due, or urgent only).
    fn lane_rows(
        &self,
        query: fn(&str, usize) -> String,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // The rows in flight are at most the lane's bound (a handful), passed
        // as one JSON array so the statement stays cached.
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
        let (channel, recipient) = lane_parts(lane);
        self.with(|conn| {
            let cap = limit.max(1).next_power_of_two();
            let mut st = conn.prepare_cached(&query(channel, cap))?;
            let rows = st.query_map(params![ts(now), recipient, skip], outbox_row)?;
            Ok(rows.take(limit).collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl Reader for SqliteReader {
    fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<Incident>, StoreError> {
        let mut sql = String::from("SELECT id, body FROM incidents WHERE id < ?1");
        let mut args: Vec<String> = vec![q.cursor.unwrap_or(i64::MAX).to_string()];
        let (follow_up, equal) = q.filters();
        // Resolved with a step still open: what `incidents_followup` indexes.
        if follow_up {
            sql.push_str(" AND live = 1 AND status <> 'open'");
        }
        for (col, v) in equal {
            args.push(v);
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
        within(&mut sql, &mut args, "branch", &q.scope.list());
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        self.with(|conn| {
            let mut st = conn.prepare(&sql)?;
            let rows: Vec<(i64, String)> = st
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut items = Vec::new();
            for (_, body) in rows.iter().take(q.limit) {
                items.push(incident_from(body)?);
            }
            let next = (rows.len() > q.limit)
                .then(|| items.last().map(|i| i.id))
                .flatten();
            Ok(Page { items, next })
        })
    }

    fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError> {
        self.with_snapshot(|conn| incident_in(conn, id))
    }

    fn incident_with_outbox(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        self.with_snapshot(|conn| {
            let Some((i, h)) = incident_in(conn, id)? else {
                return Ok(None);
            };
            let mut st = conn.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE incident = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([id], outbox_row)?;
            Ok(Some((i, h, rows.collect::<Result<Vec<_>, _>>()?)))
        })
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<EventRow>, StoreError> {
        self.with(|conn| super::events::list(conn, q))
    }

    fn due_lanes(&self, now: DateTime<Utc>) -> Result<Vec<Lane>, StoreError> {
        self.with(|conn| {
            let mut lanes = Vec::new();
            if next_group(conn, now, "email", None)?.is_some() {
                lanes.push(Lane::Email);
            }
            let mut after: Option<(String, bool)> = None;
            while let Some((recipient, drill)) = next_group(conn, now, "webhook", after.as_ref())? {
                if lanes.last().and_then(Lane::webhook) != Some(recipient.as_str()) {
                    lanes.push(Lane::Webhook(recipient.clone()));
                }
                after = Some((recipient, drill));
            }
            Ok(lanes)
        })
    }

    fn due_outbox_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.lane_rows(sql::lane_rows, now, lane, skip, limit)
    }

    fn due_urgent_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.lane_rows(sql::urgent_rows, now, lane, skip, limit)
    }

    fn due_groups(&self, now: DateTime<Utc>, lane: &Lane) -> Result<Vec<DueGroup>, StoreError> {
        let (channel, only) = lane_parts(lane);
        self.with(|conn| {
            let mut groups = Vec::new();
            if let Some(recipient) = only {
                for drill in [false, true] {
                    let mut st = conn.prepare_cached(&sql::group_due(channel, drill))?;
                    if st.exists(params![ts(now), recipient])? {
                        groups.push(DueGroup {
                            recipient: recipient.to_string(),
                            drill,
                        });
                    }
                }
                return Ok(groups);
            }
            let mut after: Option<(String, bool)> = None;
            while let Some(g) = next_group(conn, now, channel, after.as_ref())? {
                groups.push(DueGroup {
                    recipient: g.0.clone(),
                    drill: g.1,
                });
                after = Some(g);
            }
            Ok(groups)
        })
    }

    fn due_outbox_of(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        group: &DueGroup,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
        let (channel, _) = lane_parts(lane);
        self.with(|conn| {
            let mut st = conn.prepare_cached(&sql::group_rows(channel, group.drill))?;
            let rows = st.query_map(params![ts(now), group.recipient, skip], outbox_row)?;
            Ok(rows.take(limit).collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn next_retry_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|conn| {
            let t: Option<String> = conn
                .prepare_cached(&format!(
                    "SELECT MIN(next_attempt_at) FROM outbox WHERE {PENDING} AND next_attempt_at > ?1"
                ))?
                .query_row(params![ts(now)], |r| r.get(0))?;
            t.as_deref().map(parse_ts).transpose()
        })
    }

    fn next_outbox_attempt(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|conn| {
            // A new row (no retry time yet) is due at once; otherwise the
            // earliest retry. Both use an index; the first walks past rows in
            // backoff until it meets a new one.
            let fresh: Option<String> = conn
                .prepare_cached(&format!(
                    "SELECT created_at FROM outbox WHERE {PENDING} AND next_attempt_at IS NULL ORDER BY id LIMIT 1"
                ))?
                .query_row([], |r| r.get(0))
                .optional()?;
            if let Some(t) = fresh {
                return parse_ts(&t).map(Some);
            }
            let t: Option<String> = conn
                .prepare_cached(&format!(
                    "SELECT MIN(next_attempt_at) FROM outbox WHERE {PENDING} AND next_attempt_at IS NOT NULL"
                ))?
                .query_row([], |r| r.get(0))?;
            t.as_deref().map(parse_ts).transpose()
        })
    }

    fn outbox_pending(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    fn chain_end(&self) -> Result<Option<i64>, StoreError> {
        self.with(|conn| Ok(conn.query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))?))
    }

    fn outbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|conn| {
            let t: Option<String> = conn.query_row(
                "SELECT MIN(created_at) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
                [],
                |r| r.get(0),
            )?;
            t.as_deref().map(parse_ts).transpose()
        })
    }

    fn open_for_group(&self, group_key: &str) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .query_row("SELECT id FROM incidents WHERE group_key = ?1 AND status = 'open' ORDER BY id DESC LIMIT 1", [group_key], |r| r.get(0))
                .optional()?)
        })
    }

    fn drill_run(&self, id: i64) -> Result<Option<DrillRun>, StoreError> {
        self.with(|conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM drill_runs WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            body.as_deref().map(drill_run_from).transpose()
        })
    }

    fn list_drill_runs(&self, q: &DrillRunQuery) -> Result<Page<DrillRun>, StoreError> {
        let mut sql = String::from("SELECT body FROM drill_runs WHERE id < ?1");
        let mut args: Vec<String> = vec![q.cursor.unwrap_or(i64::MAX).to_string()];
        if let Some(d) = &q.drill {
            args.push(d.clone());
            sql.push_str(&format!(" AND drill = ?{}", args.len()));
        }
        if let Some(b) = &q.branch {
            args.push(b.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each(body, '$.branches') WHERE json_extract(value, '$.branch') = ?{})",
                args.len()
            ));
        }
        if let Some(w) = &q.scope.list() {
            let start = args.len();
            args.extend(w.iter().cloned());
            let marks: Vec<String> = (start + 1..=args.len()).map(|i| format!("?{i}")).collect();
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each(body, '$.branches') WHERE json_extract(value, '$.branch') IN ({}))",
                if marks.is_empty() { "NULL".to_string() } else { marks.join(", ") }
            ));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        self.with(|conn| {
            let mut st = conn.prepare(&sql)?;
            let bodies: Vec<String> = st
                .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let more = bodies.len() > q.limit;
            let items = bodies
                .iter()
                .take(q.limit)
                .map(|b| drill_run_from(b))
                .collect::<Result<Vec<_>, _>>()?;
            let next = if more {
                items.last().map(|r| r.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }

    fn silences(&self, in_force_at: Option<DateTime<Utc>>) -> Result<Vec<Silence>, StoreError> {
        self.with(|conn| {
            let rows = match in_force_at {
                None => conn
                    .prepare("SELECT body FROM silences ORDER BY id DESC LIMIT 1000")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?,
                Some(now) => conn
                    .prepare("SELECT body FROM silences WHERE ends_at > ?1 ORDER BY id DESC")?
                    .query_map([ts(now)], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            rows.iter().map(|b| silence_from(b)).collect()
        })
    }

    fn drill_last_fires(
        &self,
    ) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
        self.with(last_fires)
    }

    fn verify_audit(
        &self,
        key: Option<AuditKey>,
        published: Option<Head>,
    ) -> Result<AuditCheck, StoreError> {
        self.with_snapshot(|conn| super::verify::verify(conn, key, published.as_ref()))
    }

    fn overdue_review_actions(&self, now: DateTime<Utc>) -> Result<Vec<ReviewAction>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT body FROM review_actions WHERE open = 1 ORDER BY incident, n",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let a: ReviewAction = json_col(r, 0, "review action")?;
                if a.due_at <= now {
                    out.push(a);
                }
            }
            Ok(out)
        })
    }

    fn review_action(&self, incident: i64, n: u32) -> Result<Option<ReviewAction>, StoreError> {
        self.with(|conn| {
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM review_actions WHERE incident = ?1 AND n = ?2",
                    params![incident, n],
                    |r| r.get(0),
                )
                .optional()?;
            body.map(|b| {
                serde_json::from_str(&b).map_err(|e| StoreError::Corrupt {
                    what: format!("review action {incident}/{n}"),
                    detail: e.to_string(),
                })
            })
            .transpose()
        })
    }

    fn records(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        each: &mut crate::store::records::Sink<'_>,
    ) -> Result<(), StoreError> {
        self.with_snapshot(|conn| super::records::records(conn, from, to, each))
    }
}

/// An incident and its history, read inside the caller's transaction.
fn incident_in(
    conn: &Connection,
    id: i64,
) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError> {
    let body: Option<String> = conn
        .query_row("SELECT body FROM incidents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    match body {
        None => Ok(None),
        Some(b) => Ok(Some((incident_from(&b)?, history_of(conn, id)?))),
    }
}

/// `AND col IN (…)` for a scoped token's branches (none: matches nothing).
fn within(sql: &mut String, args: &mut Vec<String>, col: &str, w: &Option<Vec<String>>) {
    let Some(w) = w else { return };
    let start = args.len();
    args.extend(w.iter().cloned());
    let marks: Vec<String> = (start + 1..=args.len()).map(|i| format!("?{i}")).collect();
    if marks.is_empty() {
        sql.push_str(" AND 0");
    } else {
        sql.push_str(&format!(" AND {col} IN ({})", marks.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// The delivery worker asks its questions after every commit: none of its
    /// statements may be parsed and planned again on each use.
    #[test]
    fn the_delivery_workers_statements_stay_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        for i in 0..60 {
            let (channel, recipient) = match i % 3 {
                0 => ("email", format!("p{}@bank.example", i % 4)),
                1 => ("webhook", "lobby".to_string()),
                _ => ("webhook", "ops".to_string()),
            };
            writer
                .conn
                .execute(
                    "INSERT INTO outbox (incident, channel, target, recipient, subject, body, created_at, drill)
                     VALUES (?1, ?2, 't', ?3, 'x', 'b', '2026-11-24T00:00:00Z', ?4)",
                    params![i, channel, recipient, i % 5 == 0],
                )
                .unwrap();
        }
        let reader = SqliteReader::open(dir.path()).unwrap();
        let start: DateTime<Utc> = "2026-11-24T00:00:01Z".parse().unwrap();
        let mut seen = 0;
        for k in 0..4 {
            let now = start + chrono::Duration::seconds(k);
            let lanes = reader.due_lanes(now).unwrap();
            let shown: Vec<String> = lanes.iter().map(Lane::to_string).collect();
            assert_eq!(shown, ["email", "webhook:lobby", "webhook:ops"]);
            for lane in &lanes {
                let groups = reader.due_groups(now, lane).unwrap();
                assert!(!groups.is_empty(), "{lane}");
                for g in &groups {
                    seen += reader.due_outbox_of(now, lane, g, &[k], 200).unwrap().len();
                }
                seen += reader.due_outbox_in(now, lane, &[k], 5).unwrap().len();
            }
        }
        assert!(seen > 0);
        reader
            .with(|conn| {
                for channel in ["email", "webhook"] {
                    let mut texts = vec![
                        sql::drill_group(channel),
                        sql::next_group(channel),
                        sql::lane_rows(channel, 8),
                    ];
                    for drill in [false, true] {
                        texts.push(sql::group_rows(channel, drill));
                        // A webhook lane is one group's channel: asked directly.
                        if channel == "webhook" {
                            texts.push(sql::group_due(channel, drill));
                        }
                    }
                    for text in texts {
                        let st = conn.prepare_cached(&text)?;
                        let runs = st.get_status(StatementStatus::Run);
                        assert!(runs >= 4, "ran {runs} times: {text}");
                        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}"))?;
                        let args = [ts(start), "ops".into(), "[]".into()];
                        let args = &args[..explain.parameter_count()];
                        let plan: Vec<String> = explain
                            .query_map(rusqlite::params_from_iter(args), |r| r.get(3))?
                            .collect::<Result<_, _>>()?;
                        assert!(
                            plan.iter().any(|p| p.contains("USING INDEX outbox_groups")),
                            "{plan:?}: {text}"
                        );
                        let again = st.get_status(StatementStatus::RePrepare);
                        assert_eq!(
                            again, 0,
                            "prepared again {again} times in {runs} runs: {text}"
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// What the API shows of an incident is one commit's: read while the
    /// writer records deliveries one round at a time, every row shown
    /// delivered has its history line. Read in two statements (as it once
    /// was), a commit in between shows a row delivered with no line.
    #[test]
    fn an_incident_its_history_and_outbox_are_read_as_of_one_commit() {
        use crate::engine::{ChannelKind, DeliveryUpdate, Notification, Round};
        const ROWS: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) =
            SqliteWriter::open(dir.path(), crate::store::AuditKey::from_bytes(&[3u8; 32])).unwrap();
        let at: DateTime<Utc> = "2026-12-06T00:00:00Z".parse().unwrap();
        let mut first = Round::default();
        let inc = crate::store::testing::incident(1, "br-a", false, at);
        for i in 0..ROWS {
            first.outbox.push(Notification {
                subject: format!("message {i}"),
                ..crate::store::testing::message(&inc, ChannelKind::Webhook, "ops", at)
            });
        }
        first.save(inc, at);
        let ids = writer.commit(&first).unwrap().outbox;
        assert_eq!(ids.len(), ROWS);
        let reader = Arc::new(SqliteReader::open(dir.path()).unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (reader, done) = (Arc::clone(&reader), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (_, history, outbox) = reader.incident_with_outbox(1).unwrap().unwrap();
                    let lines = history
                        .iter()
                        .filter(|h| h.what == "notification.delivered")
                        .count();
                    let sent = outbox.iter().filter(|r| r.delivered_at.is_some()).count();
                    assert_eq!(sent, lines, "read {reads}: rows delivered vs history lines");
                    reads += 1;
                }
                reads
            })
        };
        for (k, id) in ids.iter().enumerate() {
            let when = at + chrono::Duration::milliseconds(k as i64);
            let mut round = Round::default();
            round.deliveries.push(DeliveryUpdate {
                id: *id,
                attempts: 1,
                delivered_at: Some(when),
                next_attempt_at: None,
                failed_at: None,
                last_error: None,
            });
            round.history.push(HistoryEntry {
                incident: Some(1),
                at: when,
                what: "notification.delivered".into(),
                by: "branchguard".into(),
                via: "engine".into(),
                detail: format!("webhook to ops: delivered row {id}"),
            });
            writer.commit(&round).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = watcher.join().expect("every read was one commit's");
        assert!(reads > 0);
    }
}
