//! The writer's side on PostgreSQL: a round in one transaction, each table's
//! rows in one statement; the live state read back at start.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;
use crate::engine::{DrillState, ReviewAction};
use crate::store::audit::AuditRow;

use super::pipe::{Batch, Pipe, params};

/// Outbox ids taken from the sequence at a time.
const OUTBOX_ID_BLOCK: usize = 256;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The last of each id in `items` (a round that saves a thing twice keeps
/// its last state, as a sequence of upserts would), in first-seen order.
fn last_of<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut keep: Vec<usize> = (0..items.len())
        .rev()
        .filter(|&i| seen.insert(id(&items[i])))
        .collect();
    keep.reverse();
    keep
}

/// Appends `rows` to the audit table in one statement.
fn insert_audit<'a>(batch: &mut Batch<'a>, rows: &'a [AuditRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&AuditRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let mut hashes = Vec::with_capacity(rows.len());
    for r in rows {
        hashes.push(hex::decode(&r.hash).map_err(|e| StoreError::Corrupt {
            what: format!("audit row {}'s hash", r.seq),
            detail: e.to_string(),
        })?);
    }
    batch.push(
        "INSERT INTO audit (seq, at, entity, what, by, via, detail, prev_hash, hash)
         SELECT s, a, e, w, b, v, d, '', h FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[]) AS t(s, a, e, w, b, v, d, h)",
        params![
            seq,
            col(|r| &r.at),
            col(|r| &r.entity),
            col(|r| &r.what),
            col(|r| &r.by),
            col(|r| &r.via),
            col(|r| &r.detail),
            hashes,
        ],
    );
    Ok(())
}

/// The writer's commit connection, opened again if the server closed it.
fn open_pipe<'p>(
    pipe: &'p mut Option<Pipe>,
    url: &str,
    fence: &Option<(String, i64, std::time::Duration)>,
) -> Result<&'p mut Pipe, StoreError> {
    if pipe.as_ref().is_none_or(Pipe::is_closed) {
        *pipe = None;
        Ok(pipe.insert(commit_connection(url, fence)?))
    } else {
        pipe.as_mut()
            .ok_or_else(|| StoreError::Inconsistent("no commit connection".into()))
    }
}

impl Writer for PgWriter {
    fn commit(&mut self, round: &Round) -> Result<Committed, StoreError> {
        blocking(|| {
            self.reconnect_if_closed()?;
            let out = self.commit_here(round);
            if out.is_err() {
                // A commit whose answer was lost may have gone through: the
                // chain's end is read again rather than trusted.
                self.chain = None;
            }
            out
        })
    }

    fn load_live(&mut self, now: DateTime<Utc>) -> Result<LiveState, StoreError> {
        blocking(|| {
            self.reconnect_if_closed()?;
            self.load_live_here(now)
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        blocking(|| {
            self.reconnect_if_closed()?;
            Ok(self.client.batch_execute("SELECT 1")?)
        })
    }
}

impl PgWriter {
    fn commit_here(&mut self, round: &Round) -> Result<Committed, StoreError> {
        let mut chain = self.chain()?;
        let mut stored: Vec<((String, String), Arc<Playbook>)> = Vec::new();
        let outbox_ids = self.outbox_ids(round.outbox.len())?;
        // The chain's rows, in the same order as on every backend: its
        // marker, what the engine decided to record, then the incidents'
        // history lines (an incident's history is its audit rows).
        let now = ts(crate::clock::now());
        let marker = chain.needs_marker().then(|| chain.marker(&now));
        let mut audit: Vec<AuditRow> = marker.iter().cloned().collect();
        for a in &round.audit {
            audit.push(chain.append(&ts(a.at), &a.entity, &a.what, &a.by, &a.via, &a.detail));
        }
        let lines: Vec<AuditRow> = round
            .history
            .iter()
            .map(|h| chain.append(&ts(h.at), &h.entity(), &h.what, &h.by, &h.via, &h.detail))
            .collect();
        let mut batch = Batch::default();
        if let Some((node, epoch, _)) = &self.fence {
            batch.push(lease::STILL_LEADS, params![node.as_str(), *epoch]);
        }
        if let Some(m) = &marker {
            batch.push(
                "INSERT INTO meta (key, value) VALUES ('audit_keyed', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![m.seq.to_string()],
            );
        }
        for pb in &round.playbooks {
            let key = (pb.id.clone(), pb.version.clone());
            if self.playbooks.contains_key(&key) || stored.iter().any(|(k, _)| *k == key) {
                continue;
            }
            batch.push(
                "INSERT INTO playbook_versions (playbook, version, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                params![pb.id.as_str(), pb.version.as_str(), json(&**pb)],
            );
            stored.push((key, Arc::clone(pb)));
        }
        if !round.events.is_empty() {
            let ev = &round.events;
            let col = |f: fn(&crate::engine::StoredEvent) -> &str| {
                ev.iter().map(f).collect::<Vec<&str>>()
            };
            batch.push(
                "INSERT INTO events (id, received_at, occurred_at, kind, branch, severity, status, labels, summary, source, matched, incidents, rejected, silenced)
                 SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::boolean[], $12::text[], $13::text[], $14::text[])",
                params![
                    ev.iter().map(|e| e.id).collect::<Vec<_>>(),
                    ev.iter().map(|e| e.received_at).collect::<Vec<_>>(),
                    ev.iter().map(|e| e.event.occurred_at).collect::<Vec<_>>(),
                    col(|e| e.event.kind.as_str()),
                    col(|e| e.event.branch.as_str()),
                    col(|e| e.event.severity.as_str()),
                    col(|e| e.event.status.as_str()),
                    ev.iter().map(|e| json(&e.event.labels)).collect::<Vec<_>>(),
                    ev.iter().map(|e| e.event.summary.as_deref()).collect::<Vec<_>>(),
                    col(|e| e.event.source.as_str()),
                    ev.iter().map(|e| e.matched).collect::<Vec<_>>(),
                    ev.iter().map(|e| json(&e.incidents)).collect::<Vec<_>>(),
                    ev.iter().map(|e| e.rejected.as_deref()).collect::<Vec<_>>(),
                    ev.iter().map(|e| e.silenced.as_deref()).collect::<Vec<_>>(),
                ],
            );
        }
        if round.bodies.len() != round.incidents.len() {
            return Err(StoreError::Inconsistent(format!(
                "{} incidents with {} stored bodies",
                round.incidents.len(),
                round.bodies.len()
            )));
        }
        insert_audit(&mut batch, &audit)?;
        let keep = last_of(&round.incidents, |i| i.id);
        if !keep.is_empty() {
            let inc = |i: usize| &round.incidents[i];
            let col =
                |f: fn(&Incident) -> &str| keep.iter().map(|&i| f(inc(i))).collect::<Vec<&str>>();
            batch.push(
                "INSERT INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, resolved_at, live, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::boolean[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::boolean[], $12::text[])
                 ON CONFLICT (id) DO UPDATE SET playbook = excluded.playbook, playbook_version = excluded.playbook_version,
                   branch = excluded.branch, tier = excluded.tier, status = excluded.status, drill = excluded.drill,
                   group_key = excluded.group_key, opened_at = excluded.opened_at, resolved_at = excluded.resolved_at,
                   live = excluded.live, body = excluded.body",
                params![
                    keep.iter().map(|&i| inc(i).id).collect::<Vec<_>>(),
                    col(|i| i.playbook_id.as_str()),
                    col(|i| i.playbook_version.as_str()),
                    col(|i| i.branch.as_str()),
                    keep.iter().map(|&i| i32::from(inc(i).tier)).collect::<Vec<_>>(),
                    col(|i| i.status.as_str()),
                    keep.iter().map(|&i| inc(i).drill).collect::<Vec<_>>(),
                    col(|i| i.group_key.as_str()),
                    keep.iter().map(|&i| inc(i).opened_at).collect::<Vec<_>>(),
                    keep.iter().map(|&i| inc(i).resolved_at).collect::<Vec<_>>(),
                    keep.iter().map(|&i| inc(i).is_live()).collect::<Vec<_>>(),
                    keep.iter().map(|&i| round.bodies[i].as_str()).collect::<Vec<_>>(),
                ],
            );
        }
        insert_audit(&mut batch, &lines)?;
        if !round.outbox.is_empty() {
            let n = &round.outbox;
            let col = |f: fn(&crate::engine::Notification) -> &str| {
                n.iter().map(f).collect::<Vec<&str>>()
            };
            batch.push(
                "INSERT INTO outbox (id, incident, step, channel, target, recipient, person, subject, body, created_at, link, payload, link_until, announcement, urgent, grant_until, drill)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::timestamptz[], $14::boolean[], $15::boolean[], $16::timestamptz[], $17::boolean[])",
                params![
                    &outbox_ids,
                    n.iter().map(|m| m.incident).collect::<Vec<_>>(),
                    n.iter().map(|m| m.step.as_deref()).collect::<Vec<_>>(),
                    col(|m| m.channel.as_str()),
                    col(|m| m.target.as_str()),
                    col(|m| m.recipient.as_str()),
                    n.iter().map(|m| m.person.as_deref()).collect::<Vec<_>>(),
                    col(|m| m.subject.as_str()),
                    col(|m| m.body.as_str()),
                    n.iter().map(|m| m.created_at).collect::<Vec<_>>(),
                    n.iter()
                        .map(|m| (!m.links.is_empty()).then(|| LinkAction::join(&m.links)))
                        .collect::<Vec<_>>(),
                    n.iter().map(|m| m.payload.as_deref()).collect::<Vec<_>>(),
                    n.iter().map(|m| m.link_until).collect::<Vec<_>>(),
                    n.iter().map(|m| m.announcement).collect::<Vec<_>>(),
                    n.iter().map(|m| m.urgent).collect::<Vec<_>>(),
                    n.iter().map(|m| m.grant_until).collect::<Vec<_>>(),
                    n.iter().map(|m| m.drill).collect::<Vec<_>>(),
                ],
            );
        }
        // Only a row not yet settled is updated: an outcome is never
        // recorded twice. Outcomes of distinct rows go in one statement; a
        // round with two outcomes of one row applies them in order.
        let d = &round.deliveries;
        let distinct = d.iter().map(|x| x.id).collect::<HashSet<_>>().len() == d.len();
        let chunks: Vec<&[crate::engine::DeliveryUpdate]> = if distinct {
            vec![&d[..]]
        } else {
            d.chunks(1).collect()
        };
        for c in chunks.into_iter().filter(|c| !c.is_empty()) {
            batch.push(
                "UPDATE outbox o SET attempts = t.attempts, delivered_at = t.delivered_at,
                     next_attempt_at = t.next_attempt_at, failed_at = t.failed_at, last_error = t.last_error
                 FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::text[])
                     AS t(id, attempts, delivered_at, next_attempt_at, failed_at, last_error)
                 WHERE o.id = t.id AND o.delivered_at IS NULL AND o.failed_at IS NULL",
                params![
                    c.iter().map(|x| x.id).collect::<Vec<_>>(),
                    c.iter().map(|x| x.attempts).collect::<Vec<_>>(),
                    c.iter().map(|x| x.delivered_at).collect::<Vec<_>>(),
                    c.iter().map(|x| x.next_attempt_at).collect::<Vec<_>>(),
                    c.iter().map(|x| x.failed_at).collect::<Vec<_>>(),
                    c.iter().map(|x| x.last_error.as_deref()).collect::<Vec<_>>(),
                ],
            );
        }
        // Drill runs, silences, fire times and review actions come a few at
        // a time (a person's request, a schedule): one statement each.
        for r in &round.drill_runs {
            batch.push(
                "INSERT INTO drill_runs (id, drill, status, started_at, body) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET drill = excluded.drill, status = excluded.status, started_at = excluded.started_at, body = excluded.body",
                params![r.id, r.drill.as_str(), r.status.as_str(), r.started_at, json(r)],
            );
        }
        for x in &round.silences {
            batch.push(
                "INSERT INTO silences (id, ends_at, body) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET ends_at = excluded.ends_at, body = excluded.body",
                params![x.id, x.expired_at.unwrap_or(x.ends_at), json(x)],
            );
        }
        for (drill, at) in &round.drill_fires {
            batch.push(
                "INSERT INTO drill_schedule (drill, last_fire) VALUES ($1, $2)
                 ON CONFLICT (drill) DO UPDATE SET last_fire = excluded.last_fire",
                params![drill.as_str(), *at],
            );
        }
        for a in &round.review_actions {
            batch.push(
                "INSERT INTO review_actions (incident, n, open, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (incident, n) DO UPDATE SET open = excluded.open, body = excluded.body",
                params![a.incident, a.n as i32, a.done_at.is_none(), json(a)],
            );
        }
        // Withdrawn announcements: settled as failed, so never selected again.
        for (incident, step, at) in &round.withdraw {
            batch.push(
                "UPDATE outbox SET failed_at = $3, last_error = 'withdrawn: the incident was resolved'
                 WHERE incident = $1 AND step = $2 AND announcement AND delivered_at IS NULL AND failed_at IS NULL",
                params![*incident, step.as_str(), *at],
            );
        }
        let pipe = open_pipe(&mut self.pipe, &self.url, &self.fence)?;
        if let Err(e) = pipe.transaction(&batch) {
            // Whatever the server made of the rest, a new connection starts
            // from no transaction.
            self.pipe = None;
            return Err(e);
        }
        // The batch borrows the ids it sent.
        drop(batch);
        let head = chain.head();
        self.chain = Some(chain);
        self.playbooks.extend(stored);
        Ok(Committed {
            outbox: outbox_ids,
            head: Some(head),
        })
    }

    /// `n` outbox ids, ascending. Taken from the sequence in blocks: one
    /// round trip per block rather than one per commit. A block's unused
    /// ids are skipped after a restart or takeover (ids order messages;
    /// gaps mean nothing), and a new leader's are above every old one's.
    fn outbox_ids(&mut self, n: usize) -> Result<Vec<i64>, StoreError> {
        if self.ids.len() < n {
            let more = (n - self.ids.len()).max(OUTBOX_ID_BLOCK) as i64;
            let mut got: Vec<i64> = self
                .client
                .query(
                    "SELECT nextval(pg_get_serial_sequence('outbox', 'id')) FROM generate_series(1, $1::bigint)",
                    &[&more],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            got.sort_unstable();
            self.ids.extend(got);
        }
        Ok(self.ids.drain(..n).collect())
    }

    fn load_live_here(&mut self, now: DateTime<Utc>) -> Result<LiveState, StoreError> {
        let rows = self.client.query(
            "SELECT body FROM incidents WHERE status = 'open' OR (live AND status <> 'open') ORDER BY id",
            &[],
        )?;
        let mut incidents = Vec::with_capacity(rows.len());
        for r in rows {
            let mut inc = incident_from(&r.try_get::<_, String>(0)?)?;
            inc.steps.shrink_to_fit();
            inc.playbook = self.playbook(&inc.playbook_id, &inc.playbook_version)?;
            incidents.push(inc);
        }
        let next = |c: &mut Client, table: &str| -> Result<i64, StoreError> {
            Ok(c.query_one(
                &format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"),
                &[],
            )?
            .try_get(0)?)
        };
        let next_incident = next(&mut self.client, "incidents")?;
        let next_event = next(&mut self.client, "events")?;
        let next_run = next(&mut self.client, "drill_runs")?;
        let running = self
            .client
            .query(
                "SELECT body FROM drill_runs WHERE status = 'running' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| from_json(&r.try_get::<_, String>(0)?, || "drill run".into()))
            .collect::<Result<Vec<_>, _>>()?;
        let last_fire = last_fires(&mut *self.client)?;
        let silences = self
            .client
            .query(
                "SELECT body FROM silences WHERE ends_at > $1 ORDER BY id",
                &[&now],
            )?
            .iter()
            .map(|r| from_json(&r.try_get::<_, String>(0)?, || "silence".into()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut reviews = Vec::new();
        for r in self.client.query(
            "SELECT r.body, i.body FROM review_actions r JOIN incidents i ON i.id = r.incident
             WHERE r.open ORDER BY r.incident, r.n",
            &[],
        )? {
            let action: ReviewAction =
                from_json(&r.try_get::<_, String>(0)?, || "review action".into())?;
            reviews.push((action, incident_from(&r.try_get::<_, String>(1)?)?));
        }
        Ok(LiveState {
            incidents,
            next_incident,
            next_event,
            drills: DrillState {
                running,
                last_fire,
                next_run,
            },
            silences,
            reviews,
        })
    }
}
