//! A drill run's life: its branches start (at once or staggered), receive
//! follow-up events, end when answered or at the timeout, are scored, or are
//! aborted by hand or by a real incident.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::drills::{BranchRun, DrillError, DrillRun, RunStatus};
use super::score::{self, StepScore};
use super::*;
use crate::config::{Action, BranchSelection, Drill};
use crate::event::{Event, Status};
use crate::matching::{self, Match};

impl Engine {
    pub(super) fn start_run(
        &mut self,
        d: &Drill,
        at: super::drills::Start<'_>,
        trigger: &str,
        scheduled_for: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(i64, Vec<i64>), DrillError> {
        let Some(pb) = self.loaded.playbook(&d.playbook).cloned() else {
            return Err(DrillError::NoDrill(d.id.clone()));
        };
        let mut branches: Vec<String> = match &d.branches {
            BranchSelection::All => self.loaded.config.branches.keys().cloned().collect(),
            BranchSelection::List(l) => l.clone(),
        };
        match at {
            super::drills::Start::Everywhere => {}
            super::drills::Start::At(b) => {
                if !branches.iter().any(|x| x == b) {
                    return Err(DrillError::NotAtBranch {
                        drill: d.id.clone(),
                        branch: b.to_string(),
                    });
                }
                branches = vec![b.to_string()];
            }
            super::drills::Start::Within(scope) => {
                branches = scope.pick(&branches);
                if branches.is_empty() {
                    return Err(DrillError::NoBranchInScope(d.id.clone()));
                }
            }
        }
        let (busy, free): (Vec<String>, Vec<String>) = branches
            .into_iter()
            .partition(|b| self.drill_running_at(&d.id, b));
        if free.is_empty() {
            return Err(DrillError::AlreadyRunning(d.id.clone()));
        }
        let cal = self.loaded.config.calendar.clone();
        let targets: BTreeMap<String, f64> = pb
            .steps
            .iter()
            .map(|s| {
                let delay = d
                    .targets
                    .get(&s.id)
                    .and_then(|t| t.delay.as_ref())
                    .unwrap_or(&s.deadline);
                let secs = (delay.after(now, &cal) - now).num_milliseconds() as f64 / 1000.0;
                (s.id.clone(), secs)
            })
            .collect();
        let on_done = d
            .targets
            .iter()
            .filter(|(_, t)| t.done)
            .map(|(s, _)| s.clone())
            .collect();
        // A step whose target cannot fall within the run (a 72-hour report in
        // a 30-minute drill) is left out of the score, not scored 0.
        // Only steps people answer are scored (and so left out); a command or
        // an announcement runs as it would.
        let left_out = pb
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::Task | Action::RollCall(_)))
            .filter(|s| {
                targets
                    .get(&s.id)
                    .is_some_and(|secs| *secs > d.timeout.as_secs_f64())
                    || d.targets.get(&s.id).is_some_and(|t| t.delay.is_none())
            })
            .map(|s| s.id.clone())
            .collect();
        let id = self.next_run;
        self.next_run += 1;
        let timeout = chrono::Duration::from_std(d.timeout).unwrap_or(chrono::Duration::hours(1));
        let stagger = d
            .stagger
            .and_then(|s| chrono::Duration::from_std(s).ok())
            .unwrap_or(chrono::Duration::zero());
        let n = free.len().max(1) as i32;
        let mut run = DrillRun {
            id,
            drill: d.id.clone(),
            playbook: pb.id.clone(),
            status: RunStatus::Running,
            trigger: trigger.to_string(),
            scheduled_for,
            started_at: now,
            ends_at: now + timeout,
            finished_at: None,
            live: d.live,
            pass_score: d.pass_score,
            score: None,
            passed: None,
            branches: Vec::new(),
            skipped: busy,
            targets,
            raise: d
                .raise
                .iter()
                .map(|(after, labels)| (after.as_secs() as i64, labels.clone()))
                .collect(),
            on_done,
            left_out,
            // A manual run names its starter (`run_drill`); the others are the daemon's.
            started_by: (trigger != "manual").then(|| trigger.to_string()),
            via: (trigger != "manual").then(|| VIA_ENGINE.to_string()),
        };
        for (k, branch) in free.into_iter().enumerate() {
            // Branch k of n starts k/n of the way through the stagger.
            let starts_at = now + stagger * (k as i32) / n;
            run.ends_at = run.ends_at.max(starts_at + timeout);
            run.branches.push(BranchRun {
                branch,
                incident: None,
                status: RunStatus::Pending,
                starts_at: Some(starts_at),
                ends_at: Some(starts_at + timeout),
                raised: 0,
                score: None,
                passed: None,
                steps: Vec::new(),
                note: None,
            });
        }
        self.runs.insert(id, run);
        let incidents = self.start_due_branches(id, now, round);
        if let Some(run) = self.runs.get(&id) {
            round.drill_runs.push(run.clone());
        }
        self.reschedule(TimerKey::DrillRun(id));
        Ok((id, incidents))
    }

    /// Opens the drill incident of every branch whose start has come.
    pub(super) fn start_due_branches(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Vec<i64> {
        let Some(r) = self.runs.get(&id) else {
            return Vec::new();
        };
        let due: Vec<String> = r
            .branches
            .iter()
            .filter(|b| b.status == RunStatus::Pending && b.starts_at.is_none_or(|s| s <= now))
            .map(|b| b.branch.clone())
            .collect();
        let drill = self.loaded.drills.iter().find(|d| d.id == r.drill).cloned();
        let pb = self.loaded.playbook(&r.playbook).cloned();
        let (trigger, live, ends) = (r.trigger.clone(), r.live, r.ends_at);
        let mut incidents = Vec::new();
        for branch in due {
            let (Some(d), Some(pb)) = (&drill, &pb) else {
                if let Some(b) = self
                    .runs
                    .get_mut(&id)
                    .and_then(|r| r.branches.iter_mut().find(|b| b.branch == branch))
                {
                    b.status = RunStatus::Aborted;
                    b.note = Some("the drill or its playbook was removed before it started".into());
                }
                continue;
            };
            let ev = Event {
                kind: d.event.kind.clone(),
                branch: branch.clone(),
                severity: d.event.severity,
                status: Status::Firing,
                labels: d.event.labels.clone(),
                summary: d.event.summary.clone(),
                occurred_at: now,
                source: "drill".into(),
            };
            let group = matching::group_of(pb, &ev);
            let m = Match {
                playbook: Arc::clone(pb),
                tier: matching::tier_of(pb, &ev),
                group_key: matching::group_key(pb, &group),
                group,
            };
            let event_id = self.next_event;
            self.next_event += 1;
            let iid = self.open(&m, &ev, Some((id, live)), now, round);
            // Stored and audited like every event (audit verify counts them).
            Self::received(
                round,
                StoredEvent {
                    id: event_id,
                    received_at: now,
                    event: ev,
                    matched: true,
                    incidents: vec![iid],
                    rejected: None,
                    silenced: None,
                },
                VIA_ENGINE,
            );
            Self::history(
                round,
                iid,
                now,
                "drill.started",
                "drill",
                format!(
                    "drill {} run {id} ({trigger}){}; ends by {}",
                    d.id,
                    if live {
                        ", live"
                    } else {
                        ": command and webhook actions are recorded, not carried out"
                    },
                    fmt_time(ends, &self.loaded, &branch)
                ),
            );
            incidents.push(iid);
            if let Some(b) = self
                .runs
                .get_mut(&id)
                .and_then(|r| r.branches.iter_mut().find(|b| b.branch == branch))
            {
                b.status = RunStatus::Running;
                b.incident = Some(iid);
            }
        }
        incidents
    }

    pub(super) fn drill_running_at(&self, drill: &str, branch: &str) -> bool {
        self.runs.values().any(|r| {
            r.drill == drill
                && r.branches.iter().any(|b| {
                    b.branch == branch
                        && matches!(b.status, RunStatus::Running | RunStatus::Pending)
                })
        })
    }

    /// After a round's answers: ends the branch runs whose incident has no
    /// active step left.
    pub(super) fn check_drills(&mut self, now: DateTime<Utc>, round: &mut Round) {
        let touched: Vec<i64> = round.touched.iter().copied().collect();
        for iid in touched {
            let Some(inc) = self.live.get(&iid) else {
                continue;
            };
            let (Some(run), IncidentStatus::Open) = (inc.drill_run, inc.status) else {
                continue;
            };
            // Steps left out of the score (longer than the drill) do not
            // keep it running.
            let left_out = self.runs.get(&run).map(|r| &r.left_out);
            let pending = inc
                .steps
                .iter()
                .any(|s| s.open() && !left_out.is_some_and(|l| l.contains(&s.id)));
            if !pending {
                self.end_branch(run, iid, RunStatus::Finished, None, now, round);
            }
        }
    }

    /// A run's timer: staggered branches whose start has come start; branches
    /// whose time is up end, unanswered steps scoring 0.
    pub(super) fn drill_run_due(&mut self, run: i64, now: DateTime<Utc>, round: &mut Round) {
        self.start_due_branches(run, now, round);
        self.raise_due(run, now, round);
        let Some(r) = self.runs.get(&run) else { return };
        let over: Vec<i64> = r
            .branches
            .iter()
            .filter(|b| b.status == RunStatus::Running && b.ends_at.unwrap_or(r.ends_at) <= now)
            .filter_map(|b| b.incident)
            .collect();
        for iid in over {
            self.end_branch(run, iid, RunStatus::Finished, None, now, round);
        }
        if let Some(r) = self.runs.get(&run) {
            round.drill_runs.push(r.clone());
        }
    }

    /// Sends each running branch the follow-up events whose time has come:
    /// the drill event again with more labels, joining the drill incident
    /// (which may raise its tier and start more steps).
    pub(super) fn raise_due(&mut self, run: i64, now: DateTime<Utc>, round: &mut Round) {
        let Some(r) = self.runs.get(&run) else { return };
        let Some(d) = self.loaded.drills.iter().find(|d| d.id == r.drill).cloned() else {
            return;
        };
        let mut due: Vec<(String, i64, usize)> = Vec::new();
        for b in r.branches.iter().filter(|b| b.status == RunStatus::Running) {
            let (Some(start), Some(iid)) = (b.starts_at, b.incident) else {
                continue;
            };
            let mut k = b.raised;
            while let Some((secs, _)) = r.raise.get(k) {
                if start + chrono::Duration::seconds(*secs) > now {
                    break;
                }
                k += 1;
            }
            if k > b.raised {
                due.push((b.branch.clone(), iid, k));
            }
        }
        let raises = r.raise.clone();
        for (branch, iid, upto) in due {
            let from = self
                .runs
                .get(&run)
                .and_then(|r| r.branches.iter().find(|b| b.branch == branch))
                .map_or(upto, |b| b.raised);
            for (_, labels) in &raises[from..upto] {
                let mut all = d.event.labels.clone();
                all.extend(labels.clone());
                let ev = Event {
                    kind: d.event.kind.clone(),
                    branch: branch.clone(),
                    severity: d.event.severity,
                    status: Status::Firing,
                    labels: all,
                    summary: d.event.summary.clone(),
                    occurred_at: now,
                    source: "drill".into(),
                };
                let event_id = self.next_event;
                self.next_event += 1;
                self.attach(iid, event_id, &ev, now, round);
                Self::received(
                    round,
                    StoredEvent {
                        id: event_id,
                        received_at: now,
                        event: ev,
                        matched: true,
                        incidents: vec![iid],
                        rejected: None,
                        silenced: None,
                    },
                    VIA_ENGINE,
                );
            }
            if let Some(b) = self
                .runs
                .get_mut(&run)
                .and_then(|r| r.branches.iter_mut().find(|b| b.branch == branch))
            {
                b.raised = upto;
            }
        }
    }

    /// Stops a run by hand: every branch still running is aborted, not scored.
    pub fn abort_drill(
        &mut self,
        run: i64,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), DrillError> {
        let by = format!("{} (via {})", who.by(), who.via);
        let r = self.runs.get(&run).ok_or(DrillError::NoRun(run))?;
        let running: Vec<i64> = r
            .branches
            .iter()
            .filter(|b| b.status == RunStatus::Running)
            .filter_map(|b| b.incident)
            .collect();
        for iid in running {
            self.end_branch(
                run,
                iid,
                RunStatus::Aborted,
                Some(format!("stopped by {by}")),
                now,
                round,
            );
        }
        Ok(())
    }

    /// A real incident of `playbook` opened at `branch`: drills of that plan
    /// running there are aborted (their answers would be mixed with real ones).
    pub(super) fn abort_drills_for(
        &mut self,
        playbook: &str,
        branch: &str,
        real: i64,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let hit: Vec<(i64, i64)> = self
            .runs
            .values()
            .filter(|r| r.playbook == playbook)
            .flat_map(|r| {
                r.branches
                    .iter()
                    .filter(|b| b.branch == branch && b.status == RunStatus::Running)
                    .filter_map(move |b| b.incident.map(|i| (r.id, i)))
            })
            .collect();
        let why = format!("a real incident #{real} of the same plan opened at {branch}");
        // Branches that had not started yet there will not start.
        let mut waiting = Vec::new();
        for r in self.runs.values_mut().filter(|r| r.playbook == playbook) {
            for b in r
                .branches
                .iter_mut()
                .filter(|b| b.branch == branch && b.status == RunStatus::Pending)
            {
                b.status = RunStatus::Aborted;
                b.note = Some(why.clone());
                waiting.push(r.id);
            }
        }
        for (run, iid) in hit {
            self.end_branch(run, iid, RunStatus::Aborted, Some(why.clone()), now, round);
        }
        for run in waiting {
            let done = self.runs.get(&run).is_some_and(|r| {
                r.branches
                    .iter()
                    .all(|b| !matches!(b.status, RunStatus::Running | RunStatus::Pending))
            });
            if done {
                self.finish_run(run, now, round);
            } else if let Some(r) = self.runs.get(&run) {
                round.drill_runs.push(r.clone());
            }
        }
    }

    /// Ends one branch's part of a run: scores it (unless aborted), closes its
    /// incident without starting follow-ups, and finishes the run when it was
    /// the last branch.
    pub(super) fn end_branch(
        &mut self,
        run: i64,
        iid: i64,
        status: RunStatus,
        note: Option<String>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(r) = self.runs.get(&run) else { return };
        let pass_score = r.pass_score;
        let steps = match (status, self.live.get(&iid)) {
            (RunStatus::Finished, Some(inc)) => scored_steps(inc, r),
            _ => Vec::new(),
        };
        let mut steps = steps;
        let outcome = (status == RunStatus::Finished).then(|| score::score(&mut steps, pass_score));
        // Close the drill incident: open steps are skipped, follow-ups never start.
        if let Some(inc) = self.live.get_mut(&iid) {
            inc.status = IncidentStatus::Resolved;
            inc.resolved_at = Some(now);
            for s in inc.steps.iter_mut() {
                s.close();
            }
            self.groups.remove(&inc.group_key);
            round.touched.insert(iid);
            let detail = match (&outcome, &note) {
                (_, Some(n)) => format!("drill run {run} aborted: {n}; not scored"),
                (Some(o), None) => format!(
                    "drill run {run} ended: score {}{}",
                    o.score
                        .map_or("- (no step to score)".to_string(), |s| format!("{s:.1}")),
                    if o.passed { ", passed" } else { ", not passed" }
                ),
                (None, None) => format!("drill run {run} ended"),
            };
            let what = if status == RunStatus::Aborted {
                "drill.aborted"
            } else {
                "drill.ended"
            };
            Self::history(round, iid, now, what, "drill", detail);
        }
        let Some(r) = self.runs.get_mut(&run) else {
            return;
        };
        if let Some(b) = r.branches.iter_mut().find(|b| b.incident == Some(iid)) {
            b.status = status;
            b.steps = steps;
            b.note = note;
            if let Some(o) = &outcome {
                b.score = o.score;
                b.passed = Some(o.passed);
            }
        }
        if r.branches
            .iter()
            .all(|b| !matches!(b.status, RunStatus::Running | RunStatus::Pending))
        {
            self.finish_run(run, now, round);
        } else {
            round.drill_runs.push(r.clone());
        }
    }

    pub(super) fn finish_run(&mut self, run: i64, now: DateTime<Utc>, round: &mut Round) {
        let Some(mut r) = self.runs.remove(&run) else {
            return;
        };
        let scored: Vec<&BranchRun> = r
            .branches
            .iter()
            .filter(|b| b.status == RunStatus::Finished && b.score.is_some())
            .collect();
        if r.branches.iter().all(|b| b.status == RunStatus::Aborted) {
            r.status = RunStatus::Aborted;
        } else {
            r.status = RunStatus::Finished;
            if !scored.is_empty() {
                let mean = scored.iter().filter_map(|b| b.score).sum::<f64>() / scored.len() as f64;
                r.score = Some((mean * 10.0).round() / 10.0);
                r.passed = Some(scored.iter().all(|b| b.passed == Some(true)));
            }
        }
        r.finished_at = Some(now);
        let result = match (r.status, r.passed) {
            (RunStatus::Aborted, _) => "aborted",
            (_, Some(true)) => "passed",
            _ => "failed",
        };
        let scores: Vec<(String, f64)> = r
            .branches
            .iter()
            .filter_map(|b| b.score.map(|s| (b.branch.clone(), s)))
            .collect();
        round.stats.drills.push((r.drill.clone(), result, scores));
        round.drill_runs.push(r);
        self.reschedule(TimerKey::DrillRun(run));
    }
}

/// The steps people answer (tasks and roll calls), with their responses, for
/// scoring: to the first answer, or to done where the target says so; steps
/// left out of the run (longer than it) are inactive.
fn scored_steps(inc: &Incident, drill: &DrillRun) -> Vec<StepScore> {
    let targets = &drill.targets;
    let Some(pb) = inc.playbook.as_ref() else {
        return Vec::new();
    };
    // Every occurrence of a repeating step that started during the run
    // counts, under its step's target; the step itself (its schedule) never
    // starts, so it is not scored.
    inc.steps
        .iter()
        .enumerate()
        .filter_map(|(i, run)| Some((run, &pb.steps[inc.spec_of(i)?])))
        .filter(|(_, spec)| matches!(spec.action, Action::Task | Action::RollCall(_)))
        .filter(|(run, spec)| spec.every.is_none() || run.id != spec.id)
        .map(|(run, spec)| {
            let since = |t: DateTime<Utc>| {
                run.notified_at
                    .map(|n| (t - n).num_milliseconds() as f64 / 1000.0)
            };
            let roll_call = run
                .roll_call
                .iter()
                .map(|p| (p.clone(), run.confirmed_at.get(p).and_then(|t| since(*t))))
                .collect();
            StepScore {
                id: run.id.clone(),
                target_seconds: targets.get(&spec.id).copied().unwrap_or(0.0),
                weight: spec.weight,
                critical: spec.critical,
                active: run.activated_at.is_some() && !drill.left_out.contains(&spec.id),
                response_seconds: if drill.on_done.contains(&spec.id) {
                    run.done_at.and_then(since)
                } else {
                    run.response_seconds
                },
                roll_call,
                credit: None,
                by: run.by.clone(),
            }
        })
        .collect()
}
