//! The read side on PostgreSQL: lists, one incident, the outbox, drill runs.

use postgres::types::ToSql;

use super::*;
use crate::engine::{DrillRun, ReviewAction, Silence};
use crate::store::records::Sink;

/// Not yet delivered or given up.
const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";
/// Due at `$1`.
const DUE: &str = "(next_attempt_at IS NULL OR next_attempt_at <= $1)";

/// Every (channel, recipient, drill) group with a due row at `$1`, in that
/// order. The delivery worker asks after every commit, while a storm's
/// backlog may hold tens of thousands of pending rows: `SELECT DISTINCT`
/// read them all (11 ms at 20,000), this walks `outbox_groups` one seek per
/// group (0.5 ms), then asks each group for one due row.
const DUE_GROUPS: &str = "WITH RECURSIVE g(channel, recipient, drill) AS (
    (SELECT channel, recipient, drill FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL
     ORDER BY channel, recipient, drill LIMIT 1)
    UNION ALL
    SELECT n.channel, n.recipient, n.drill FROM g CROSS JOIN LATERAL (
        SELECT o.channel, o.recipient, o.drill FROM outbox o
        WHERE o.delivered_at IS NULL AND o.failed_at IS NULL
          AND (o.channel, o.recipient, o.drill) > (g.channel, g.recipient, g.drill)
        ORDER BY o.channel, o.recipient, o.drill LIMIT 1) n
)
SELECT g.channel, g.recipient, g.drill FROM g WHERE EXISTS (
    SELECT 1 FROM outbox o WHERE o.delivered_at IS NULL AND o.failed_at IS NULL
      AND o.channel = g.channel AND o.recipient = g.recipient AND o.drill = g.drill
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $1))
ORDER BY g.channel, g.recipient, g.drill";

fn due_groups(c: &mut Conn, now: DateTime<Utc>) -> Result<Vec<(String, String, bool)>, StoreError> {
    c.q(DUE_GROUPS, &[&now])?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Parameters built up with a query: `push` gives the next `$n`.
#[derive(Default)]
struct Args(Vec<Box<dyn ToSql + Sync>>);

impl Args {
    fn push(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn bodies<T: serde::de::DeserializeOwned>(rows: &[Row], what: &str) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| from_json(&r.try_get::<_, String>(0)?, || what.to_string()))
        .collect()
}

/// A page from rows fetched one past `limit`: the cursor is the last id shown.
fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> i64) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(&id) } else { None };
    Page { items, next }
}

fn event_row(r: &Row) -> Result<EventRow, StoreError> {
    let json = |i: usize, what: &str| -> Result<serde_json::Value, StoreError> {
        from_json(&r.try_get::<_, String>(i)?, || what.to_string())
    };
    Ok(EventRow {
        id: r.try_get(0)?,
        received_at: r.try_get(1)?,
        kind: r.try_get(2)?,
        branch: r.try_get(3)?,
        severity: r.try_get(4)?,
        status: r.try_get(5)?,
        labels: json(6, "event labels")?,
        summary: r.try_get(7)?,
        occurred_at: r.try_get(8)?,
        source: r.try_get(9)?,
        matched: r.try_get(10)?,
        incidents: from_json(&r.try_get::<_, String>(11)?, || "event incidents".into())?,
        rejected: r.try_get(12)?,
        silenced: r.try_get(13)?,
    })
}

impl PgReader {
    /// Due rows of a lane, oldest first: all, or (`urgent`) urgent ones only.
    fn lane_rows(
        &self,
        urgent: bool,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let only = if urgent { " AND urgent" } else { "" };
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {PENDING} AND {DUE}{only} AND channel = $2
             AND ($3::text IS NULL OR recipient = $3) AND NOT (id = ANY($4)) ORDER BY id LIMIT $5"
        );
        let (channel, recipient) = (lane.channel().as_str(), lane.webhook());
        self.with(|c| {
            c.q(&sql, &[&now, &channel, &recipient, &skip, &(limit as i64)])?
                .iter()
                .map(outbox_row)
                .collect()
        })
    }
}

impl Reader for PgReader {
    fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<Incident>, StoreError> {
        let mut a = Args::default();
        let mut sql = format!(
            "SELECT body FROM incidents WHERE id < {}",
            a.push(q.cursor.unwrap_or(i64::MAX))
        );
        let (follow_up, equal) = q.filters();
        if follow_up {
            sql.push_str(" AND live AND status <> 'open'");
        }
        for (col, v) in equal {
            sql.push_str(&format!(" AND {col} = {}", a.push(v)));
        }
        if let Some(w) = q.scope.list() {
            sql.push_str(&format!(" AND branch = ANY({})", a.push(w)));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        self.with(|c| {
            let items: Vec<Incident> = bodies(&c.q(&sql, &a.refs())?, "incident")?;
            Ok(page(items, q.limit, |i| i.id))
        })
    }

    fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError> {
        self.with_snapshot(|tx| incident_in(tx, id))
    }

    fn incident_with_outbox(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        self.with_snapshot(|tx| {
            let Some((i, h)) = incident_in(tx, id)? else {
                return Ok(None);
            };
            let rows = tx.query(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE incident = $1 ORDER BY id"),
                &[&id],
            )?;
            let out = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>()?;
            Ok(Some((i, h, out)))
        })
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<EventRow>, StoreError> {
        let mut a = Args::default();
        let mut sql = format!(
            "SELECT id, received_at, kind, branch, severity, status, labels, summary, occurred_at, source, matched, incidents, rejected, silenced
             FROM events WHERE id < {}",
            a.push(q.cursor.unwrap_or(i64::MAX))
        );
        if let Some(b) = q.branches() {
            sql.push_str(&format!(" AND branch = ANY({})", a.push(b)));
        }
        if let Some(k) = &q.kind {
            sql.push_str(&format!(" AND kind = {}", a.push(k.clone())));
        }
        if let Some(m) = q.matched {
            sql.push_str(&format!(" AND matched = {}", a.push(m)));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        self.with(|c| {
            let rows = c.q(&sql, &a.refs())?;
            let items = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
            Ok(page(items, q.limit, |e| e.id))
        })
    }

    fn due_lanes(&self, now: DateTime<Utc>) -> Result<Vec<Lane>, StoreError> {
        let groups = self.with(|c| due_groups(c, now))?;
        let mut lanes: Vec<Lane> = Vec::new();
        for (channel, recipient, _) in groups {
            let lane = match channel.as_str() {
                "email" => Lane::Email,
                "webhook" => Lane::Webhook(recipient),
                other => {
                    return Err(StoreError::Corrupt {
                        what: "outbox channel".into(),
                        detail: format!("unknown channel kind `{other}`"),
                    });
                }
            };
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
        lanes.sort();
        Ok(lanes)
    }

    fn due_outbox_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.lane_rows(false, now, lane, skip, limit)
    }

    fn due_urgent_in(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.lane_rows(true, now, lane, skip, limit)
    }

    fn due_groups(&self, now: DateTime<Utc>, lane: &Lane) -> Result<Vec<DueGroup>, StoreError> {
        let (channel, only) = (lane.channel().as_str(), lane.webhook());
        let groups = self.with(|c| due_groups(c, now))?;
        Ok(groups
            .into_iter()
            .filter(|(ch, r, _)| ch == channel && only.is_none_or(|o| o == r))
            .map(|(_, recipient, drill)| DueGroup { recipient, drill })
            .collect())
    }

    fn due_outbox_of(
        &self,
        now: DateTime<Utc>,
        lane: &Lane,
        group: &DueGroup,
        skip: &[i64],
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let channel = lane.channel().as_str();
        self.with(|c| {
            c.q(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {PENDING} AND {DUE} AND channel = $2
                     AND recipient = $3 AND drill = $4 AND NOT urgent AND NOT (id = ANY($5)) ORDER BY id LIMIT $6"
                ),
                &[&now, &channel, &group.recipient, &group.drill, &skip, &(limit as i64)],
            )?
            .iter()
            .map(outbox_row)
            .collect()
        })
    }

    fn next_retry_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|c| {
            Ok(c.q_one(
                &format!("SELECT MIN(next_attempt_at) FROM outbox WHERE {PENDING} AND next_attempt_at > $1"),
                &[&now],
            )?
            .try_get(0)?)
        })
    }

    fn next_outbox_attempt(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|c| {
            // A new row (no retry time yet) is due at once; otherwise the earliest retry.
            let fresh = c.q_opt(
                &format!("SELECT created_at FROM outbox WHERE {PENDING} AND next_attempt_at IS NULL ORDER BY id LIMIT 1"),
                &[],
            )?;
            if let Some(r) = fresh {
                return Ok(Some(r.try_get(0)?));
            }
            Ok(c.q_one(
                &format!("SELECT MIN(next_attempt_at) FROM outbox WHERE {PENDING}"),
                &[],
            )?
            .try_get(0)?)
        })
    }

    fn outbox_pending(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let n: i64 = c
                .query_one(&format!("SELECT COUNT(*) FROM outbox WHERE {PENDING}"), &[])?
                .try_get(0)?;
            Ok(n as u64)
        })
    }

    fn chain_end(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| Ok(c.q_one("SELECT MAX(seq) FROM audit", &[])?.try_get(0)?))
    }

    fn outbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|c| {
            Ok(c.q_one(
                &format!("SELECT MIN(created_at) FROM outbox WHERE {PENDING}"),
                &[],
            )?
            .try_get(0)?)
        })
    }

    fn verify_audit(
        &self,
        key: Option<AuditKey>,
        published: Option<Head>,
    ) -> Result<AuditCheck, StoreError> {
        self.with_snapshot(|tx| super::stored::verify(tx, key, published.as_ref()))
    }

    fn records(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        each: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        self.with_snapshot(|tx| super::stored::records(tx, from, to, each))
    }

    fn overdue_review_actions(&self, now: DateTime<Utc>) -> Result<Vec<ReviewAction>, StoreError> {
        self.with(|c| {
            let rows = c.q(
                "SELECT body FROM review_actions WHERE open ORDER BY incident, n",
                &[],
            )?;
            let all: Vec<ReviewAction> = bodies(&rows, "review action")?;
            Ok(all.into_iter().filter(|a| a.due_at <= now).collect())
        })
    }

    fn review_action(&self, incident: i64, n: u32) -> Result<Option<ReviewAction>, StoreError> {
        self.with(|c| {
            let rows = c.q(
                "SELECT body FROM review_actions WHERE incident = $1 AND n = $2",
                &[&incident, &(n as i32)],
            )?;
            Ok(bodies(&rows, &format!("review action {incident}/{n}"))?.pop())
        })
    }

    fn open_for_group(&self, group_key: &str) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            c.q_opt(
                "SELECT id FROM incidents WHERE group_key = $1 AND status = 'open' ORDER BY id DESC LIMIT 1",
                &[&group_key],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
        })
    }

    fn drill_run(&self, id: i64) -> Result<Option<DrillRun>, StoreError> {
        self.with(|c| {
            let rows = c.q("SELECT body FROM drill_runs WHERE id = $1", &[&id])?;
            Ok(bodies(&rows, "drill run")?.pop())
        })
    }

    fn list_drill_runs(&self, q: &DrillRunQuery) -> Result<Page<DrillRun>, StoreError> {
        let mut a = Args::default();
        let mut sql = format!(
            "SELECT body FROM drill_runs WHERE id < {}",
            a.push(q.cursor.unwrap_or(i64::MAX))
        );
        if let Some(d) = &q.drill {
            sql.push_str(&format!(" AND drill = {}", a.push(d.clone())));
        }
        // A run includes a branch when one of its `branches` names it.
        let includes = |list: String| {
            format!(
                " AND EXISTS (SELECT 1 FROM jsonb_array_elements(body::jsonb -> 'branches') b WHERE b ->> 'branch' = ANY({list}))"
            )
        };
        if let Some(b) = &q.branch {
            sql.push_str(&includes(a.push(vec![b.clone()])));
        }
        if let Some(w) = q.scope.list() {
            sql.push_str(&includes(a.push(w)));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        self.with(|c| {
            let items: Vec<DrillRun> = bodies(&c.q(&sql, &a.refs())?, "drill run")?;
            Ok(page(items, q.limit, |r| r.id))
        })
    }

    fn silences(&self, in_force_at: Option<DateTime<Utc>>) -> Result<Vec<Silence>, StoreError> {
        self.with(|c| {
            let rows = match in_force_at {
                None => c.q("SELECT body FROM silences ORDER BY id DESC LIMIT 1000", &[])?,
                Some(now) => c.q(
                    "SELECT body FROM silences WHERE ends_at > $1 ORDER BY id DESC",
                    &[&now],
                )?,
            };
            bodies(&rows, "silence")
        })
    }

    fn drill_last_fires(
        &self,
    ) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
        self.with(|c| last_fires(&mut **c))
    }
}

/// An incident and its history, read inside the caller's transaction.
fn incident_in(
    tx: &mut postgres::Transaction<'_>,
    id: i64,
) -> Result<Option<(Incident, Vec<HistoryEntry>)>, StoreError> {
    let Some(r) = tx.query_opt("SELECT body FROM incidents WHERE id = $1", &[&id])? else {
        return Ok(None);
    };
    let inc = incident_from(&r.try_get::<_, String>(0)?)?;
    Ok(Some((inc, history_of(tx, id)?)))
}
