//! Events into incidents: an event is stored, matched against every playbook,
//! and opens an incident for its group or joins the open one (raising its tier).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::steps::pending_step;
use super::*;
use crate::config::ResolveMode;
use crate::event::{Event, Status};
use crate::matching::{self, Match};

impl Engine {
    /// Stores and matches events. Returns, per event, its id and the incidents it opened or joined.
    pub fn ingest(
        &mut self,
        events: Vec<(Event, DateTime<Utc>)>,
        via: &str,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Ingested {
        let mut out = Vec::with_capacity(events.len());
        self.drop_ended_silences(now);
        for (ev, received_at) in events {
            let id = self.next_event;
            self.next_event += 1;
            if let Some(by) = self.silenced_by(&ev, now) {
                round.stats.silenced += 1;
                out.push((id, Vec::new(), Some(by.clone())));
                Self::received(
                    round,
                    StoredEvent {
                        id,
                        received_at,
                        event: ev,
                        matched: false,
                        incidents: Vec::new(),
                        rejected: None,
                        silenced: Some(by),
                    },
                    via,
                );
                continue;
            }
            let mut matches = matching::match_event(&self.loaded.playbooks, &ev);
            // An incident whose playbook was removed or changed since it
            // opened still resolves by its own version's trigger and group.
            if ev.status == Status::Resolved && !self.retired.is_empty() {
                for m in matching::match_event(&self.retired, &ev) {
                    if !matches.iter().any(|x| x.group_key == m.group_key) {
                        matches.push(m);
                    }
                }
            }
            let mut incidents = Vec::new();
            for m in &matches {
                if let Some(iid) = self.apply_match(id, &ev, m, now, round) {
                    incidents.push(iid);
                }
            }
            if matches.is_empty() {
                round.stats.unmatched += 1;
            }
            out.push((id, incidents.clone(), None));
            Self::received(
                round,
                StoredEvent {
                    id,
                    received_at,
                    event: ev,
                    matched: !matches.is_empty(),
                    incidents,
                    rejected: None,
                    silenced: None,
                },
                via,
            );
        }
        out
    }

    /// An event into the round, with the audit line that records it: the
    /// event as received, and what became of it (its incidents, a silence),
    /// so a stored row that disagrees with it is found by `audit verify`.
    pub(super) fn received(round: &mut Round, e: StoredEvent, via: &str) {
        let mut detail = serde_json::to_value(&e.event).unwrap_or_default();
        if let Some(o) = detail.as_object_mut() {
            // What the row says in its own columns (`by` is the source, `at`
            // the time it came) or a null is not written again: about 70 of
            // the row's 200 bytes. `audit verify` reads them from there.
            o.remove("source");
            if e.event.summary.is_none() {
                o.remove("summary");
            }
            if e.event.occurred_at == e.received_at {
                o.remove("occurred_at");
            }
            o.insert("matched".into(), e.matched.into());
            o.insert("incidents".into(), serde_json::json!(e.incidents));
            if let Some(s) = &e.silenced {
                o.insert("silenced".into(), s.clone().into());
            }
        }
        let (what, detail) = match &e.rejected {
            None => ("event.received", detail.to_string()),
            Some(why) => ("event.rejected", format!("{why}: {detail}")),
        };
        round.audit.push(AuditLine {
            at: e.received_at,
            entity: format!("event:{}", e.id),
            what: what.to_string(),
            by: e.event.source.clone(),
            via: via.to_string(),
            detail,
        });
        round.events.push(e);
    }

    /// Stores refused events (unmatched, with their reason); returns their ids.
    pub fn refused(
        &mut self,
        events: Vec<RefusedEvent>,
        received_at: DateTime<Utc>,
        via: &str,
        round: &mut Round,
    ) -> Vec<i64> {
        events
            .into_iter()
            .map(|r| {
                let id = self.next_event;
                self.next_event += 1;
                Self::received(
                    round,
                    StoredEvent {
                        id,
                        received_at,
                        event: r.event,
                        matched: false,
                        incidents: Vec::new(),
                        rejected: Some(r.reason),
                        silenced: None,
                    },
                    via,
                );
                id
            })
            .collect()
    }

    pub(super) fn apply_match(
        &mut self,
        event_id: i64,
        ev: &Event,
        m: &Match,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Option<i64> {
        let existing = self.groups.get(&m.group_key).copied();
        match (ev.status, existing) {
            (Status::Resolved, None) => None,
            (Status::Resolved, Some(iid)) => {
                let auto = self
                    .live
                    .get(&iid)
                    .and_then(|i| i.playbook.as_ref())
                    .is_some_and(|p| p.resolve == ResolveMode::Auto);
                self.attach(iid, event_id, ev, now, round);
                if auto {
                    let _ = self.resolve(iid, Who::engine("event"), now, round);
                }
                Some(iid)
            }
            (Status::Firing, Some(iid)) => {
                self.attach(iid, event_id, ev, now, round);
                Some(iid)
            }
            (Status::Firing, None) => {
                let iid = self.open(m, ev, None, now, round);
                // A real incident ends a drill of the same plan on the branch.
                self.abort_drills_for(&m.playbook.id, &ev.branch, iid, now, round);
                Some(iid)
            }
        }
    }

    pub(super) fn attach(
        &mut self,
        iid: i64,
        event_id: i64,
        ev: &Event,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        inc.event_count += 1;
        round.touched.insert(iid);
        let key = format!("{} {}", ev.kind, ev.status.as_str());
        match inc.attached.get_mut(&key) {
            Some(a) => {
                a.count += 1;
                a.last_event = event_id;
                a.last_at = now;
            }
            None => {
                inc.attached.insert(
                    key,
                    Attached {
                        count: 1,
                        first_event: event_id,
                        first_at: now,
                        last_event: event_id,
                        last_at: now,
                    },
                );
                // Only the first of each kind is a history line; the rest are counted.
                Self::history(
                    round,
                    iid,
                    now,
                    "event.attached",
                    "event",
                    format!(
                        "event {event_id} ({} {}) joined; more like it are counted, not listed",
                        ev.kind,
                        ev.status.as_str()
                    ),
                );
            }
        }
        if ev.status == Status::Resolved {
            return;
        }
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        inc.timed_tiers.extend(matching::timed_tiers_met(&pb, ev));
        let tier = matching::tier_of(&pb, ev);
        if tier > inc.tier {
            let old = inc.tier;
            self.raise_tier(
                iid,
                tier,
                "event",
                format!("tier {old} → {tier}"),
                now,
                round,
            );
        }
    }

    /// Opens an incident for a match; a drill's incidents name their run and
    /// whether it is live.
    pub fn open(
        &mut self,
        m: &Match,
        ev: &Event,
        drill_of: Option<(i64, bool)>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> i64 {
        let drill = drill_of.is_some();
        let iid = self.next_incident;
        self.next_incident += 1;
        let pb = Arc::clone(&m.playbook);
        let group_key = if drill {
            format!("drill:{iid}:{}", m.group_key)
        } else {
            m.group_key.clone()
        };
        let inc = Incident {
            id: iid,
            playbook_id: pb.id.clone(),
            playbook_version: pb.version.clone(),
            playbook: Some(Arc::clone(&pb)),
            branch: ev.branch.clone(),
            tier: m.tier,
            status: IncidentStatus::Open,
            drill,
            drill_run: drill_of.map(|(run, _)| run),
            rehearsal: drill_of.is_some_and(|(_, live)| !live),
            group: m.group.clone().into(),
            group_key: group_key.clone(),
            opened_at: now,
            resolved_at: None,
            event_count: 1,
            kind: ev.kind.clone(),
            severity: ev.severity.as_str().to_string(),
            summary: ev.summary.clone(),
            labels: ev.labels.clone().into(),
            steps: pb.steps.iter().map(pending_step).collect(),
            attached: BTreeMap::new(),
            used_links: Default::default(),
            counted_tier: None,
            timed_tiers: matching::timed_tiers_met(&pb, ev).into_iter().collect(),
            chain: self.opening_hops.unwrap_or(0),
        };
        // Once per round, not per incident: a storm opens hundreds of one
        // playbook's incidents in a round, and the store writes each version once.
        if !round.playbooks.iter().any(|p| Arc::ptr_eq(p, &pb)) {
            round.playbooks.push(Arc::clone(&pb));
        }
        round.stats.opened.push((pb.id.clone(), drill));
        Self::history(
            round,
            iid,
            now,
            "incident.opened",
            "event",
            format!(
                "playbook {} (version {}), tier {}, group {}",
                pb.id,
                pb.version,
                m.tier,
                m.group
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        self.groups.insert(group_key, iid);
        self.live.insert(iid, Box::new(inc));
        round.touched.insert(iid);
        let active: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.starts_at_open() && s.eligible(m.tier))
            .map(|(i, _)| i)
            .collect();
        for idx in active {
            self.activate(iid, idx, now, round);
        }
        iid
    }
}
