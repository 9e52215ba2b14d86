//! Timers: each timer owner's next moment in one ordered queue, so the loop
//! sleeps until the first and a tick visits only what is due.

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Action;
use crate::target::Target;

/// How far past its moment a timer may fire before it is called late in the
/// history: well above the loop's jitter (milliseconds), well below a restart.
const LATE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Who a timer belongs to. Each owner has at most one entry in the queue: its
/// next moment. Drill runs will own timers too, which is why this is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    /// A live incident's next escalation or deadline.
    Incident(i64),
    /// A scheduled drill's next fire (its slot in the schedule).
    DrillSchedule(u32),
    /// A roster's next change of duty (its index in the loaded rosters).
    Roster(u32),
    /// A review action's due date (incident, action number).
    ReviewAction(i64, u32),
    /// A drill run's timeout.
    DrillRun(i64),
}

impl TimerKey {
    /// Sorts after every key, for "everything due at or before a moment".
    const LAST: TimerKey = TimerKey::DrillRun(i64::MAX);
}

impl Engine {
    /// Puts an owner's next timer in the queue (or takes it out).
    pub(super) fn reschedule(&mut self, key: TimerKey) {
        if let Some(old) = self.timer_of.remove(&key) {
            self.timers.remove(&(old, key));
        }
        let due = match key {
            TimerKey::Incident(id) => self.live.get(&id).and_then(|inc| self.incident_due(inc)),
            TimerKey::Roster(_) => self.roster_due(key),
            TimerKey::ReviewAction(i, n) => self.review_due(i, n),
            other => self.drill_due(other),
        };
        if let Some(due) = due {
            self.timers.insert((due, key));
            self.timer_of.insert(key, due);
        }
    }

    /// The earliest escalation or deadline of an incident's open steps.
    pub(super) fn incident_due(&self, inc: &Incident) -> Option<DateTime<Utc>> {
        let cal = &self.loaded.config.calendar;
        let pb = inc.playbook.as_ref()?;
        let mut best: Option<DateTime<Utc>> = None;
        for (idx, run) in inc.steps.iter().enumerate() {
            let Some(spec) = inc.spec_of(idx).map(|i| &pb.steps[i]) else {
                continue;
            };
            // A step waiting out its delay (or a repeating step its next
            // occurrence) starts then.
            if let (StepState::Pending, Some(at)) = (run.state, run.starts_at) {
                best = Some(best.map_or(at, |b| b.min(at)));
                continue;
            }
            let (Some(start), true) = (run.activated_at, run.open()) else {
                continue;
            };
            let esc = spec
                .escalate
                .get(run.escalations_fired)
                .map(|e| e.after.after(start, cal));
            let deadline = run.deadline.filter(|_| !run.overdue_escalated);
            for c in esc.into_iter().chain(deadline) {
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }
        if let Some(t) = self.timed_tier_due(inc) {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
        best
    }

    /// The next moment at which a timer is due, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: DateTime<Utc>, round: &mut Round) {
        // Steps waiting for a step that ended this round start (or wait out
        // their delay); incidents changed earlier in this round have not
        // been rescheduled yet.
        for id in round.touched.clone() {
            self.follow(id, now, round);
            self.reschedule(TimerKey::Incident(id));
        }
        // Drill incidents answered in full end their branch's run.
        self.check_drills(now, round);
        let due: Vec<TimerKey> = self
            .timers
            .range(..=(now, TimerKey::LAST))
            .map(|(_, k)| *k)
            .collect();
        for key in due {
            match key {
                TimerKey::Incident(id) => self.fire_incident(id, now, round),
                TimerKey::DrillSchedule(slot) => self.fire_schedule(slot, now, round),
                TimerKey::DrillRun(run) => self.drill_run_due(run, now, round),
                TimerKey::Roster(i) => self.fire_roster(i, now, round),
                TimerKey::ReviewAction(i, n) => self.fire_review(i, n, now, round),
            }
            self.reschedule(key);
        }
    }

    /// An incident's due escalations, then its overdue marking.
    fn fire_incident(&mut self, iid: i64, now: DateTime<Utc>, round: &mut Round) {
        self.raise_timed(iid, now, round);
        self.start_delayed(iid, now, round);
        let cal = self.loaded.config.calendar.clone();
        let Some(inc) = self.live.get(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let runs = self.live.get(&iid).map_or(0, |i| i.steps.len());
        for idx in 0..runs {
            let Some(spec) = self
                .live
                .get(&iid)
                .and_then(|i| super::repeat::spec_for(&pb, i, idx))
            else {
                continue;
            };
            let spec: &Step = &spec;
            while let Some(inc) = self.live.get(&iid) {
                let run = &inc.steps[idx];
                let (Some(start), true) = (run.activated_at, run.open()) else {
                    break;
                };
                let Some(e) = spec.escalate.get(run.escalations_fired) else {
                    break;
                };
                let due = e.after.after(start, &cal);
                if due > now {
                    break;
                }
                let inc = inc.clone();
                let late = late_note(due, now, &self.loaded, &inc.branch);
                let mut why = format!("Not done {} after it started", e.after);
                // Whoever is told must know if someone already took it: the
                // question is then "why is it not done", not "who has it".
                if let (Some(at), Some(by)) = (run.acknowledged_at, &run.by) {
                    let name = self
                        .loaded
                        .config
                        .people
                        .get(by)
                        .map_or(by.clone(), |p| p.name.clone());
                    why.push_str(&format!(
                        "; acknowledged by {name} at {}, not yet marked done",
                        fmt_time(at, &self.loaded, &inc.branch)
                    ));
                }
                let missing = self.missing_names(&inc, idx);
                if !missing.is_empty() {
                    why.push_str(&format!("; not yet confirmed safe: {}", missing.join(", ")));
                }
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    &e.to,
                    Msg::new(Ask::Escalation, &why).links(if matches!(spec.action, Action::Task) {
                        ESCALATION_LINKS
                    } else {
                        &[]
                    }),
                    round,
                    now,
                );
                Self::history(
                    round,
                    iid,
                    now,
                    "step.escalated",
                    "branchguard",
                    format!("step {}: {sent}{late}", spec.id),
                );
                round.stats.escalation(&inc);
                if let Some(inc) = self.live.get_mut(&iid) {
                    inc.steps[idx].escalations_fired += 1;
                }
                round.touched.insert(iid);
            }
            let Some(inc) = self.live.get(&iid) else {
                continue;
            };
            let run = &inc.steps[idx];
            let Some(deadline) = run.deadline else {
                continue;
            };
            if run.open() && !run.overdue_escalated && deadline <= now {
                let inc = inc.clone();
                let late = late_note(deadline, now, &self.loaded, &inc.branch);
                // Overdue reaches the owner, everyone the step escalates to, and
                // the operations centre: each once.
                let mut to: Vec<Target> = Vec::new();
                let owner = spec.assignee.iter().cloned();
                let escalation = spec.escalate.iter().flat_map(|e| e.to.iter().cloned());
                for t in owner.chain(escalation).chain(self.ops_target()) {
                    if !to.contains(&t) {
                        to.push(t);
                    }
                }
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    &to,
                    Msg::new(Ask::Overdue, "The deadline of this step has passed.").links(
                        if matches!(spec.action, Action::Task) {
                            OVERDUE_LINKS
                        } else {
                            &[]
                        },
                    ),
                    round,
                    now,
                );
                Self::history(
                    round,
                    iid,
                    now,
                    "step.overdue",
                    "branchguard",
                    format!(
                        "step {}: deadline {} passed; {sent}{late}",
                        spec.id,
                        fmt_time(deadline, &self.loaded, &inc.branch)
                    ),
                );
                if !inc.drill {
                    round
                        .stats
                        .overdue
                        .push((inc.playbook_id.clone(), spec.id.clone()));
                }
                round.stats.escalation(&inc);
                if let Some(inc) = self.live.get_mut(&iid) {
                    inc.steps[idx].overdue_escalated = true;
                    inc.steps[idx].state = StepState::Overdue;
                }
                round.touched.insert(iid);
            }
        }
    }
}

pub(super) fn late_note(
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    loaded: &Loaded,
    branch: &str,
) -> String {
    if now - due > LATE_AFTER {
        format!(
            " (late: due at {}, fired {} after)",
            fmt_time(due, loaded, branch),
            crate::show::duration((now - due).num_milliseconds() as f64 / 1000.0)
        )
    } else {
        String::new()
    }
}
