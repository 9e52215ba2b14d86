//! Hand-over: when the person on duty for a roster changes, the open steps
//! the outgoing person held pass to the incoming one, in one message per
//! branch, and the history records it. Also run at start and at reload, so a
//! change of duty while the daemon was down is not lost.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::roster::Roster;
use crate::target::Target;

/// How far ahead a roster's next change is looked for; past it the roster is
/// looked at again then.
const LOOK_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(8);

impl Engine {
    /// (Re)starts every roster's timer, due at once: the first tick hands
    /// over what changed while the daemon was down or the rosters changed.
    pub(super) fn schedule_rosters(&mut self, now: DateTime<Utc>) {
        let old: Vec<TimerKey> = self
            .timer_of
            .keys()
            .filter(|k| matches!(k, TimerKey::Roster(_)))
            .copied()
            .collect();
        for k in old {
            if let Some(t) = self.timer_of.remove(&k) {
                self.timers.remove(&(t, k));
            }
        }
        self.roster_next.clear();
        // Rosters are numbered afresh by each configuration.
        self.duty_memo.borrow_mut().clear();
        for i in 0..self.loaded.rosters.len() {
            self.roster_next.insert(i as u32, now);
            self.reschedule(TimerKey::Roster(i as u32));
        }
    }

    /// The people a target reaches at `now`, through the rosters (see
    /// `Loaded::people_at`), each roster's duty worked out once per moment.
    pub(super) fn people_at(
        &self,
        target: &Target,
        branch: &str,
        now: DateTime<Utc>,
    ) -> (
        Vec<&crate::config::Person>,
        Option<Arc<crate::config::Resolved>>,
    ) {
        self.loaded.people_on_duty(target, branch, &|i, r| {
            if let Some((at, d)) = self.duty_memo.borrow().get(&i)
                && *at == now
            {
                return Arc::clone(d);
            }
            let d = self.loaded.resolve(r, now);
            self.duty_memo.borrow_mut().insert(i, (now, Arc::clone(&d)));
            d
        })
    }

    pub(super) fn roster_due(&self, key: TimerKey) -> Option<DateTime<Utc>> {
        match key {
            TimerKey::Roster(i) => self.roster_next.get(&i).copied(),
            _ => None,
        }
    }

    /// A roster's duty may have changed: hand over, and note its next change.
    pub(super) fn fire_roster(&mut self, i: u32, now: DateTime<Utc>, round: &mut Round) {
        let Some(r) = self.loaded.rosters.get(i as usize).cloned() else {
            return;
        };
        let cfg = &self.loaded.config;
        let next = r.recheck(now, now + LOOK_AHEAD, &cfg.calendar, &cfg.away);
        self.roster_next.insert(i, next);
        if r.handoff {
            self.hand_over(&r, now, round);
        }
    }

    fn hand_over(&mut self, r: &Roster, now: DateTime<Utc>, round: &mut Round) {
        let cfg = &self.loaded.config;
        let duty = r.on_duty(now, &cfg.calendar, &cfg.away);
        let incoming = duty.person.clone();
        // Open, unacknowledged steps this roster's role holds at its branches
        // whose holder is not the person on duty now.
        let mut moved: BTreeMap<String, Vec<(i64, usize, Option<String>)>> = BTreeMap::new();
        for inc in self.live.values() {
            if !r.covers(&r.role, &inc.branch) {
                continue;
            }
            let Some(pb) = inc.playbook.as_ref() else {
                continue;
            };
            for (idx, run) in inc.steps.iter().enumerate() {
                // Occurrences of a repeating step are handed over like any step.
                let Some(spec) = inc.spec_of(idx).map(|i| &pb.steps[i]) else {
                    continue;
                };
                let role_of = match &spec.assignee {
                    Some(Target::Role(role)) => role.as_str(),
                    Some(Target::BranchHead) => "branch-head",
                    _ => continue,
                };
                if role_of == r.role
                    && run.activated_at.is_some()
                    && run.open()
                    && run.acknowledged_at.is_none()
                    && run.on_duty != incoming
                {
                    moved.entry(inc.branch.clone()).or_default().push((
                        inc.id,
                        idx,
                        run.on_duty.clone(),
                    ));
                }
            }
        }
        let name = |p: &Option<String>| match p {
            Some(id) => cfg.people.get(id).map_or(id.clone(), |x| x.name.clone()),
            None => "nobody".into(),
        };
        for (branch, steps) in moved {
            let mut lines = Vec::new();
            for (iid, idx, outgoing) in &steps {
                let Some(inc) = self.live.get_mut(iid) else {
                    continue;
                };
                let run = &mut inc.steps[*idx];
                run.on_duty = incoming.clone();
                let due = run
                    .deadline
                    .map(|d| format!(", due {}", fmt_time(d, &self.loaded, &branch)))
                    .unwrap_or_default();
                lines.push(format!("#{iid} {}{due}", run.title));
                let detail = format!(
                    "step {}: handed over from {} to {} (roster {}, {})",
                    run.id,
                    name(outgoing),
                    name(&incoming),
                    r.id,
                    duty.why
                );
                round.touched.insert(*iid);
                Self::history(round, *iid, now, "step.handover", "branchguard", detail);
            }
            let Some(first) = steps.first().and_then(|(iid, _, _)| self.live.get(iid)) else {
                continue;
            };
            let inc = (**first).clone();
            let text = format!(
                "You are now on duty as {} ({}). These steps are yours and not yet acknowledged:\n{}",
                r.role,
                duty.why,
                lines.join("\n")
            );
            // Nobody on duty: no target, so the operations centre is told.
            let to: Vec<Target> = incoming.iter().map(|p| Target::Person(p.clone())).collect();
            let sent = self.notify(&inc, None, &to, Msg::new(Ask::Handover, &text), round, now);
            Self::history(round, inc.id, now, "handover.sent", "branchguard", sent);
        }
    }
}
