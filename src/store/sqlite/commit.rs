//! The writer's side of the trait: a round in one transaction, and the live
//! state read back at start.

use super::*;

fn json<T: Serialize>(v: &T) -> String {
    // Serialising our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Writer for SqliteWriter {
    fn commit(&mut self, round: &Round) -> Result<Committed, StoreError> {
        self.same_file()?;
        let mut chain = self.chain()?;
        let tx = self.conn.transaction()?;
        let mut committed = Committed {
            outbox: Vec::with_capacity(round.outbox.len()),
            head: None,
        };
        let now = ts(crate::clock::now());
        // Known stored only once the transaction holding them commits.
        let mut stored: Vec<((String, String), Arc<Playbook>)> = Vec::new();
        {
            let mut audit = tx.prepare_cached(
                "INSERT INTO audit (seq, at, entity, what, by, via, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut insert = |r: AuditRow| -> Result<(), rusqlite::Error> {
                audit.execute(params![
                    r.seq,
                    r.at,
                    r.entity,
                    r.what,
                    r.by,
                    r.via,
                    r.detail,
                    // The previous row's hash: not stored twice (see AuditRow).
                    "",
                    hash_blob(&r.hash)
                ])?;
                Ok(())
            };
            if chain.needs_marker() {
                let m = chain.marker(&now);
                let seq = m.seq;
                insert(m)?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_keyed', ?1)",
                    [seq.to_string()],
                )?;
            }
            let mut append = |at: &str,
                              entity: &str,
                              what: &str,
                              by: &str,
                              via: &str,
                              detail: &str|
             -> Result<(), rusqlite::Error> {
                insert(chain.append(at, entity, what, by, via, detail))
            };
            let mut pbs = tx.prepare_cached("INSERT OR IGNORE INTO playbook_versions (playbook, version, body) VALUES (?1, ?2, ?3)")?;
            for pb in &round.playbooks {
                let key = (pb.id.clone(), pb.version.clone());
                if self.playbooks.contains_key(&key) || stored.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                pbs.execute(params![pb.id, pb.version, json(&**pb)])?;
                stored.push((key, Arc::clone(pb)));
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (id, received_at, occurred_at, kind, branch, severity, status, labels, summary, source, matched, incidents, rejected, silenced)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for e in &round.events {
                ev.execute(params![
                    e.id,
                    ts(e.received_at),
                    ts(e.event.occurred_at),
                    e.event.kind,
                    e.event.branch,
                    e.event.severity.as_str(),
                    e.event.status.as_str(),
                    json(&e.event.labels),
                    e.event.summary,
                    e.event.source,
                    e.matched,
                    json(&e.incidents),
                    e.rejected,
                    e.silenced,
                ])?;
            }
            // What the engine decided to record about events and drill runs.
            for a in &round.audit {
                append(&ts(a.at), &a.entity, &a.what, &a.by, &a.via, &a.detail)?;
            }
            let mut inc = tx.prepare_cached(
                "INSERT OR REPLACE INTO incidents (id, playbook, playbook_version, branch, tier, status, drill, group_key, opened_at, resolved_at, live, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            if round.bodies.len() != round.incidents.len() {
                return Err(StoreError::Inconsistent(format!(
                    "{} incidents with {} stored bodies",
                    round.incidents.len(),
                    round.bodies.len()
                )));
            }
            for (i, body) in round.incidents.iter().zip(&round.bodies) {
                inc.execute(params![
                    i.id,
                    i.playbook_id,
                    i.playbook_version,
                    i.branch,
                    i.tier,
                    i.status.as_str(),
                    i.drill,
                    i.group_key,
                    ts(i.opened_at),
                    i.resolved_at.map(ts),
                    i.is_live(),
                    body,
                ])?;
            }
            // An incident's history is its audit rows (see `history_of`).
            for h in &round.history {
                append(&ts(h.at), &h.entity(), &h.what, &h.by, &h.via, &h.detail)?;
            }
            let mut out = tx.prepare_cached(
                "INSERT INTO outbox (incident, step, channel, target, recipient, person, subject, body, created_at, link, payload, link_until, announcement, urgent, grant_until, drill)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            for n in &round.outbox {
                committed.outbox.push(out.insert(params![
                    n.incident,
                    n.step,
                    n.channel.as_str(),
                    n.target,
                    n.recipient,
                    n.person,
                    n.subject,
                    n.body,
                    ts(n.created_at),
                    (!n.links.is_empty()).then(|| LinkAction::join(&n.links)),
                    n.payload,
                    n.link_until.map(ts),
                    n.announcement,
                    n.urgent,
                    n.grant_until.map(ts),
                    n.drill,
                ])?);
            }
            // Only a row not yet settled is updated: an outcome is never recorded twice.
            let mut upd = tx.prepare_cached(
                "UPDATE outbox SET attempts = ?2, delivered_at = ?3, next_attempt_at = ?4, failed_at = ?5, last_error = ?6
                 WHERE id = ?1 AND delivered_at IS NULL AND failed_at IS NULL",
            )?;
            for d in &round.deliveries {
                upd.execute(params![
                    d.id,
                    d.attempts,
                    d.delivered_at.map(ts),
                    d.next_attempt_at.map(ts),
                    d.failed_at.map(ts),
                    d.last_error
                ])?;
            }
            let mut runs = tx.prepare_cached(
                "INSERT OR REPLACE INTO drill_runs (id, drill, status, started_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &round.drill_runs {
                runs.execute(params![
                    r.id,
                    r.drill,
                    r.status.as_str(),
                    ts(r.started_at),
                    json(r)
                ])?;
            }
            let mut sil = tx.prepare_cached(
                "INSERT OR REPLACE INTO silences (id, ends_at, body) VALUES (?1, ?2, ?3)",
            )?;
            for x in &round.silences {
                sil.execute(params![
                    x.id,
                    ts(x.expired_at.unwrap_or(x.ends_at)),
                    json(x)
                ])?;
            }
            let mut fires = tx.prepare_cached(
                "INSERT OR REPLACE INTO drill_schedule (drill, last_fire) VALUES (?1, ?2)",
            )?;
            for (drill, at) in &round.drill_fires {
                fires.execute(params![drill, ts(*at)])?;
            }
            let mut actions = tx.prepare_cached(
                "INSERT OR REPLACE INTO review_actions (incident, n, open, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for a in &round.review_actions {
                actions.execute(params![a.incident, a.n, a.done_at.is_none(), json(a)])?;
            }
            // Withdrawn announcements: settled as failed, so never selected again
            // (an attempt in flight then finds its row settled and changes nothing).
            let mut withdraw = tx.prepare_cached(
                "UPDATE outbox SET failed_at = ?3, last_error = 'withdrawn: the incident was resolved'
                 WHERE incident = ?1 AND step = ?2 AND announcement = 1 AND delivered_at IS NULL AND failed_at IS NULL",
            )?;
            for (incident, step, at) in &round.withdraw {
                withdraw.execute(params![incident, step, ts(*at)])?;
            }
        }
        tx.commit()?;
        committed.head = Some(chain.head());
        self.chain = Some(chain);
        self.playbooks.extend(stored);
        Ok(committed)
    }

    fn load_live(&mut self, now: DateTime<Utc>) -> Result<LiveState, StoreError> {
        let bodies = live_bodies(&self.conn)?;
        let mut incidents = Vec::with_capacity(bodies.len());
        for b in bodies {
            let mut inc = incident_from(&b)?;
            // serde grows a Vec without a size hint to room for four: an
            // incident's one step took 1,120 bytes, 84 MB at 100,000 open
            // incidents (massif, on a restart).
            inc.steps.shrink_to_fit();
            inc.playbook = self.playbook(&inc.playbook_id, &inc.playbook_version)?;
            incidents.push(inc);
        }
        let next_incident: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents", [], |r| {
                    r.get(0)
                })?;
        let next_event: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })?;
        let running: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM drill_runs WHERE status = 'running' ORDER BY id")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let running = running
            .iter()
            .map(|b| drill_run_from(b))
            .collect::<Result<Vec<_>, _>>()?;
        let next_run: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM drill_runs", [], |r| {
                    r.get(0)
                })?;
        let last_fire = last_fires(&self.conn)?;
        let silences = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM silences WHERE ends_at > ?1 ORDER BY id")?;
            let bodies: Vec<String> = st
                .query_map([ts(now)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            bodies
                .iter()
                .map(|b| silence_from(b))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut reviews = Vec::new();
        {
            let mut st = self.conn.prepare(
                "SELECT r.body, i.body FROM review_actions r JOIN incidents i ON i.id = r.incident
                 WHERE r.open = 1 ORDER BY r.incident, r.n",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let action: ReviewAction = json_col(r, 0, "review action")?;
                let inc = incident_from(&r.get::<_, String>(1)?)?;
                reviews.push((action, inc));
            }
        }
        Ok(LiveState {
            reviews,
            incidents,
            next_incident,
            next_event,
            drills: DrillState {
                running,
                last_fire,
                next_run,
            },
            silences,
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.same_file()?;
        // Taking the write lock and letting it go proves a commit could go through.
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }
}
