//! Drills: scheduled and on-demand exercises of a playbook, run through the
//! same engine as real incidents (one drill incident per branch, every message
//! marked `[DRILL]`), ended when every active step is answered or at the
//! drill's timeout, then scored (`score.rs`).
//!
//! Schedules are engine timers: each scheduled drill's next fire time sits in
//! the timer queue, so a test moves the clock instead of waiting. The last fire
//! time is stored; runs missed while the daemon was down are never back-filled
//! (`missed: skip` records a missed run; `missed: run` fires the latest one if
//! it is still within `starting_deadline`).
//!
//! **Invariant:** a drill never overlaps itself on a branch, and a drill
//! incident never joins or blocks a real incident (its group key is its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::score::StepScore;
use super::*;
use crate::config::Drill;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A branch waiting for its staggered start.
    Pending,
    Running,
    Finished,
    Aborted,
    Missed,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Aborted => "aborted",
            RunStatus::Missed => "missed",
        }
    }
}

/// One branch's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchRun {
    pub branch: String,
    pub incident: Option<i64>,
    pub status: RunStatus,
    /// When this branch starts (later than the run with `stagger`) and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// How many of the run's follow-up events this branch has had.
    #[serde(default)]
    pub raised: usize,
    pub score: Option<f64>,
    pub passed: Option<bool>,
    #[serde(default)]
    pub steps: Vec<StepScore>,
    /// Why it was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One run of a drill, over one or more branches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRun {
    pub id: i64,
    pub drill: String,
    pub playbook: String,
    pub status: RunStatus,
    /// `schedule`, `manual` or `missed-run`.
    pub trigger: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub live: bool,
    pub pass_score: f64,
    /// Over all scored branches: the mean score, and whether every one passed.
    pub score: Option<f64>,
    pub passed: Option<bool>,
    pub branches: Vec<BranchRun>,
    /// Branches left out because this drill was still running there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Each step's target, in seconds, fixed when the run started.
    #[serde(default)]
    pub targets: BTreeMap<String, f64>,
    /// Steps whose target is measured to done, not to the first answer.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub on_done: BTreeSet<String>,
    /// Steps left out of the score: their target is longer than the run.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub left_out: BTreeSet<String>,
    /// Follow-up events: seconds after a branch's start, and the labels added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raise: Vec<(i64, BTreeMap<String, String>)>,
    /// Who started it (a person, or `schedule`) and how (a token's name,
    /// `local`, `engine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// Why a drill could not be started or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrillError {
    #[error("no drill `{0}`")]
    NoDrill(String),
    #[error("drill `{drill}` does not run at branch `{branch}`")]
    NotAtBranch { drill: String, branch: String },
    #[error("drill `{0}` is already running at every branch it would start at")]
    AlreadyRunning(String),
    #[error("drill `{0}` runs at none of the branches this token may act on")]
    NoBranchInScope(String),
    #[error("no running drill run {0}")]
    NoRun(i64),
}

/// Where a run starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start<'a> {
    /// Every branch of the drill.
    Everywhere,
    /// One branch, which must be one of the drill's.
    At(&'a str),
    /// The drill's branches within a scope.
    Within(&'a crate::scope::Scope),
}

/// What the store keeps of drills, given back at start-up.
#[derive(Debug, Default)]
pub struct DrillState {
    pub running: Vec<DrillRun>,
    pub last_fire: BTreeMap<String, DateTime<Utc>>,
    pub next_run: i64,
}

/// At most this many missed schedule times are walked to find the latest.
const MISSED_WALK: usize = 100_000;

impl Engine {
    /// The runs in progress.
    pub fn drill_runs(&self) -> impl Iterator<Item = &DrillRun> {
        self.runs.values()
    }

    /// The next scheduled fire of each scheduled drill.
    pub fn drill_schedule(&self) -> &BTreeMap<String, DateTime<Utc>> {
        &self.drill_next
    }

    /// Takes back what the store holds of drills, and decides about runs
    /// missed while the daemon was down.
    pub fn restore_drills(&mut self, state: DrillState, now: DateTime<Utc>, round: &mut Round) {
        self.next_run = self.next_run.max(state.next_run);
        self.last_fire = state.last_fire;
        for run in state.running {
            let id = run.id;
            self.runs.insert(id, run);
            self.reschedule(TimerKey::DrillRun(id));
        }
        // Runs whose time ran out while the daemon was down end first, so a
        // missed run of the same drill is not refused as overlapping.
        let over: Vec<i64> = self
            .runs
            .values()
            .filter(|r| r.ends_at <= now)
            .map(|r| r.id)
            .collect();
        for id in over {
            self.drill_run_due(id, now, round);
        }
        let drills: Vec<Arc<Drill>> = self.loaded.drills.clone();
        let tz = self.loaded.config.calendar.timezone;
        for d in drills {
            let (Some(schedule), Some(last)) = (&d.schedule, self.last_fire.get(&d.id).copied())
            else {
                continue;
            };
            // The latest scheduled time at or before now, after the last fire.
            let mut latest = None;
            let mut t = last;
            for _ in 0..MISSED_WALK {
                match schedule.next_after(t, tz) {
                    Some(n) if n <= now => {
                        latest = Some(n);
                        t = n;
                    }
                    _ => break,
                }
            }
            let Some(missed) = latest else { continue };
            let within =
                chrono::Duration::from_std(d.starting_deadline).is_ok_and(|sd| now - missed <= sd);
            self.last_fire.insert(d.id.clone(), missed);
            round.drill_fires.push((d.id.clone(), missed));
            if d.missed == crate::config::MissedPolicy::Run && within {
                let _ = self.start_run(
                    &d,
                    Start::Everywhere,
                    "missed-run",
                    Some(missed),
                    now,
                    round,
                );
            } else {
                self.record_missed(&d, missed, now, round);
            }
        }
        self.schedule_drills(now);
    }

    /// Puts every scheduled drill's next fire in the timer queue (at start-up
    /// and after a reload).
    pub(super) fn schedule_drills(&mut self, now: DateTime<Utc>) {
        for slot in 0..self.drill_slots.len() {
            let key = TimerKey::DrillSchedule(slot as u32);
            if let Some(old) = self.timer_of.remove(&key) {
                self.timers.remove(&(old, key));
            }
        }
        let tz = self.loaded.config.calendar.timezone;
        self.drill_slots.clear();
        self.drill_next.clear();
        let drills: Vec<Arc<Drill>> = self.loaded.drills.clone();
        for d in drills {
            let Some(schedule) = &d.schedule else {
                continue;
            };
            // Never before the last fire (a reload must not fire it again).
            let from = self.last_fire.get(&d.id).map_or(now, |l| (*l).max(now));
            if let Some(next) = schedule.next_after(from, tz) {
                self.drill_next.insert(d.id.clone(), next);
            }
            self.drill_slots.push(d.id.clone());
            self.reschedule(TimerKey::DrillSchedule(self.drill_slots.len() as u32 - 1));
        }
    }

    /// When a drill timer is due.
    pub(super) fn drill_due(&self, key: TimerKey) -> Option<DateTime<Utc>> {
        match key {
            TimerKey::DrillSchedule(slot) => self
                .drill_slots
                .get(slot as usize)
                .and_then(|d| self.drill_next.get(d))
                .copied(),
            TimerKey::DrillRun(id) => self.runs.get(&id).and_then(|r| {
                r.branches
                    .iter()
                    .filter_map(|b| match b.status {
                        RunStatus::Pending => b.starts_at,
                        RunStatus::Running => {
                            let end = b.ends_at.unwrap_or(r.ends_at);
                            let raise = r.raise.get(b.raised).and_then(|(secs, _)| {
                                b.starts_at.map(|s| s + chrono::Duration::seconds(*secs))
                            });
                            Some(raise.map_or(end, |x| x.min(end)))
                        }
                        _ => None,
                    })
                    .min()
            }),
            TimerKey::Incident(_) | TimerKey::Roster(_) | TimerKey::ReviewAction(..) => None,
        }
    }

    /// A scheduled drill's time has come: run it, and schedule the next.
    pub(super) fn fire_schedule(&mut self, slot: u32, now: DateTime<Utc>, round: &mut Round) {
        let Some(id) = self.drill_slots.get(slot as usize).cloned() else {
            return;
        };
        let Some(due) = self.drill_next.get(&id).copied() else {
            return;
        };
        let Some(d) = self.loaded.drills.iter().find(|d| d.id == id).cloned() else {
            return;
        };
        self.last_fire.insert(id.clone(), due);
        round.drill_fires.push((id.clone(), due));
        let _ = self.start_run(&d, Start::Everywhere, "schedule", Some(due), now, round);
        let tz = self.loaded.config.calendar.timezone;
        // Never back-filled: if the loop was late past the next time too, skip it.
        let next = d
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(due.max(now), tz));
        match next {
            Some(n) => self.drill_next.insert(id, n),
            None => self.drill_next.remove(&id),
        };
    }

    /// Starts a drill by hand (all its branches, or one).
    /// Starts a drill now: at `branch`, or at every branch of the drill
    /// within `scope` (a branch head runs drills at their own branches).
    pub fn run_drill(
        &mut self,
        drill: &str,
        branch: Option<&str>,
        scope: &crate::scope::Scope,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(i64, Vec<i64>), DrillError> {
        let d = self
            .loaded
            .drills
            .iter()
            .find(|d| d.id == drill)
            .cloned()
            .ok_or_else(|| DrillError::NoDrill(drill.to_string()))?;
        let at = match branch {
            Some(b) => Start::At(b),
            None if scope.is_all() => Start::Everywhere,
            None => Start::Within(scope),
        };
        let (id, incidents) = self.start_run(&d, at, "manual", None, now, round)?;
        if let Some(run) = self.runs.get_mut(&id) {
            run.started_by = Some(who.by().to_string());
            run.via = Some(who.via.to_string());
            if let Some(r) = round.drill_runs.iter_mut().rev().find(|r| r.id == id) {
                r.started_by = run.started_by.clone();
                r.via = run.via.clone();
            }
        }
        Ok((id, incidents))
    }

    pub(super) fn record_missed(
        &mut self,
        d: &Drill,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let id = self.next_run;
        self.next_run += 1;
        round.drill_runs.push(DrillRun {
            id,
            drill: d.id.clone(),
            playbook: d.playbook.clone(),
            status: RunStatus::Missed,
            trigger: "schedule".into(),
            scheduled_for: Some(at),
            started_at: now,
            ends_at: now,
            finished_at: Some(now),
            live: d.live,
            pass_score: d.pass_score,
            score: None,
            passed: None,
            branches: Vec::new(),
            skipped: Vec::new(),
            targets: BTreeMap::new(),
            raise: Vec::new(),
            started_by: None,
            on_done: Default::default(),
            left_out: Default::default(),
            via: None,
        });
        round
            .stats
            .drills
            .push((d.id.clone(), "missed", Vec::new()));
    }
}
