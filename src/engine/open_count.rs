//! The open-incident gauge, kept as counts by playbook and tier that each
//! round changes for the incidents it touched. It used to be a walk over every
//! live incident, at most once a second: with 135,000 open that walk held the
//! engine thread 20-40 ms each time (measured in the storm benchmark), and an
//! event arriving meanwhile waited for it.
//!
//! **Invariant:** after `finish`, the counts equal a walk of the live
//! incidents counting the open real ones by playbook and tier; each incident
//! records the tier it is counted under, so a change is one decrement and one
//! increment.

use std::collections::BTreeMap;

use super::{Incident, IncidentStatus};

#[derive(Debug)]
pub struct OpenCounts {
    by: BTreeMap<(String, u8), i64>,
    changed: bool,
}

impl Default for OpenCounts {
    /// Changed from the start: a new engine (a start, or a rebuild after a
    /// failed commit) publishes its counts even when there are none, so a
    /// gauge left by the engine before it never lingers.
    fn default() -> Self {
        OpenCounts {
            by: BTreeMap::new(),
            changed: true,
        }
    }
}

impl OpenCounts {
    /// Counts `inc` as it is now, undoing what it was counted as before.
    pub(super) fn settle(&mut self, inc: &mut Incident) {
        // Drill incidents are not real incidents.
        let now = (inc.status == IncidentStatus::Open && !inc.drill).then_some(inc.tier);
        if now == inc.counted_tier {
            return;
        }
        if let Some(tier) = inc.counted_tier {
            let key = (inc.playbook_id.clone(), tier);
            if let Some(n) = self.by.get_mut(&key) {
                *n -= 1;
                if *n <= 0 {
                    self.by.remove(&key);
                }
            }
        }
        if let Some(tier) = now {
            *self.by.entry((inc.playbook_id.clone(), tier)).or_default() += 1;
        }
        inc.counted_tier = now;
        self.changed = true;
    }

    /// Whether the counts changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// (playbook, tier, open incidents), none of them zero.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u8, i64)> {
        self.by.iter().map(|((p, t), n)| (p.as_str(), *t, *n))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use chrono::{DateTime, Duration, Utc};

    use crate::engine::{Engine, Round};
    use crate::event::{Event, Severity, Status};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
            .unwrap()
            .to_utc()
    }

    fn ev(kind: &str, branch: &str, status: Status, label: (&str, &str)) -> Event {
        Event {
            kind: kind.into(),
            branch: branch.into(),
            severity: Severity::Critical,
            status,
            labels: [(label.0.to_string(), label.1.to_string())].into(),
            summary: None,
            occurred_at: t0(),
            source: "test".into(),
        }
    }

    /// What the gauge held before: a walk of every live incident.
    fn walk(e: &Engine) -> Vec<(String, u8, i64)> {
        let mut by: BTreeMap<(String, u8), i64> = BTreeMap::new();
        for i in e
            .live()
            .filter(|i| i.status == super::IncidentStatus::Open && !i.drill)
        {
            *by.entry((i.playbook_id.clone(), i.tier)).or_default() += 1;
        }
        by.into_iter().map(|((p, t), n)| (p, t, n)).collect()
    }

    /// The counts, checked against the walk; and whether they changed.
    fn counts(e: &mut Engine) -> (Vec<(String, u8, i64)>, bool) {
        let expected = walk(e);
        let (c, changed) = e.open_counts();
        let got: Vec<(String, u8, i64)> =
            c.counts().map(|(p, t, n)| (p.to_string(), t, n)).collect();
        assert_eq!(
            got, expected,
            "the counts differ from a walk of the live incidents"
        );
        (got, changed)
    }

    fn ingest(e: &mut Engine, evs: Vec<Event>, minutes: i64) {
        let now = t0() + Duration::minutes(minutes);
        let mut r = Round::default();
        e.ingest(
            evs.into_iter().map(|x| (x, now)).collect(),
            "test",
            now,
            &mut r,
        );
        e.finish(t0(), &mut r);
    }

    #[test]
    fn the_counts_follow_opening_tier_raises_drills_resolving_and_a_restart() {
        let loaded =
            crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
                .unwrap();
        let mut e = Engine::new(loaded.clone(), Vec::new(), 1, 1, t0());
        // A new engine publishes its counts, even none: a gauge left by the
        // engine it replaces (after a failed commit) must not linger.
        assert_eq!(counts(&mut e), (Vec::new(), true));
        let core = |status| ev("system.down", "sh-001", status, ("system", "core-banking"));
        let conflict = |level| {
            ev(
                "customer.conflict",
                "sh-002",
                Status::Firing,
                ("conflict_level", level),
            )
        };
        ingest(&mut e, vec![core(Status::Firing), conflict("1")], 0);
        let one = |p: &str, t: u8| (p.to_string(), t, 1);
        assert_eq!(
            counts(&mut e),
            (
                vec![one("conflict-response", 1), one("system-failover", 1)],
                true
            )
        );
        // An event attaching at the same tier changes nothing.
        ingest(&mut e, vec![conflict("1")], 1);
        assert!(!counts(&mut e).1);
        // A tier raised moves the incident.
        ingest(&mut e, vec![conflict("2")], 2);
        assert_eq!(
            counts(&mut e),
            (
                vec![one("conflict-response", 2), one("system-failover", 1)],
                true
            )
        );
        // A drill incident is not counted.
        let drill = core(Status::Firing);
        let m = crate::matching::match_event(&e.loaded().playbooks, &drill).remove(0);
        let mut r = Round::default();
        e.open(&m, &drill, Some((1, true)), t0(), &mut r);
        e.finish(t0(), &mut r);
        assert_eq!(counts(&mut e).0.len(), 2);
        // Resolved by its event: it stays live for its follow-up, uncounted.
        ingest(&mut e, vec![core(Status::Resolved)], 3);
        assert!(
            e.live()
                .any(|i| i.playbook_id == "system-failover" && !i.drill)
        );
        assert_eq!(counts(&mut e), (vec![one("conflict-response", 2)], true));
        // A restart counts what the store gives back (the engine's bookkeeping is not stored).
        let stored: Vec<super::Incident> = e
            .live()
            .map(|i| serde_json::from_str(&serde_json::to_string(i).unwrap()).unwrap())
            .map(|mut i: super::Incident| {
                i.playbook = e.live_incident(i.id).and_then(|x| x.playbook.clone());
                i
            })
            .collect();
        let mut again = Engine::new(loaded, stored, 10, 10, t0());
        assert_eq!(counts(&mut again).0, vec![one("conflict-response", 2)]);
        // Resolved by hand: nothing open.
        let mut r = Round::default();
        let conflict_id = again
            .live()
            .find(|i| i.playbook_id == "conflict-response")
            .map(|i| i.id)
            .unwrap();
        again
            .resolve(
                conflict_id,
                crate::engine::Who::new(Some("ops"), None),
                t0() + Duration::hours(1),
                &mut r,
            )
            .unwrap();
        again.finish(t0(), &mut r);
        assert_eq!(counts(&mut again), (Vec::new(), true));
    }
}
