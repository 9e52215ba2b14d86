//! Steps that follow other steps (`after: STEP_ID`) and steps that wait
//! (`delay`): a step starts when the step it follows is done, or that long
//! after; it is skipped when that step failed or was skipped. A step waiting
//! out its delay is `pending` with `starts_at`, a timer of its incident like
//! every deadline, so it survives a restart.

use chrono::{DateTime, Utc};

use super::*;

/// What becomes of a waiting step once the step it follows has ended.
enum Next {
    /// Started (or scheduled) from the moment the step it follows was done.
    Start(DateTime<Utc>),
    Skip(String),
}

impl Engine {
    /// Starts step `idx` from `base` (when what it follows happened): now,
    /// or after its `delay` (a timer; at once if that moment has passed).
    pub(super) fn start_step(
        &mut self,
        iid: i64,
        idx: usize,
        base: DateTime<Utc>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let cal = self.loaded.config.calendar.clone();
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let spec = &pb.steps[idx];
        let at = spec.delay.as_ref().map(|d| d.after(base, &cal));
        match at {
            Some(at) if at > now => {
                inc.steps[idx].starts_at = Some(at);
                round.touched.insert(iid);
                let branch = inc.branch.clone();
                let delay = spec
                    .delay
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                let what = spec
                    .after_step
                    .as_ref()
                    .map_or("the incident was resolved".to_string(), |s| {
                        format!("step {s} was done")
                    });
                Self::history(
                    round,
                    iid,
                    now,
                    "step.scheduled",
                    "branchguard",
                    format!(
                        "step {}: starts {} ({delay} after {what})",
                        spec.id,
                        fmt_time(at, &self.loaded, &branch)
                    ),
                );
            }
            _ => {
                inc.steps[idx].starts_at = None;
                self.activate(iid, idx, now, round);
            }
        }
    }

    /// Steps whose delay has run out start.
    pub(super) fn start_delayed(&mut self, iid: i64, now: DateTime<Utc>, round: &mut Round) {
        let Some(inc) = self.live.get(&iid) else {
            return;
        };
        let due: Vec<usize> = inc
            .steps
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == StepState::Pending && r.starts_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return;
        }
        for idx in due {
            if let Some(inc) = self.live.get_mut(&iid) {
                inc.steps[idx].starts_at = None;
            }
            self.activate(iid, idx, now, round);
        }
        self.follow(iid, now, round);
    }

    /// Starts, schedules or skips the steps waiting for a step of `iid`
    /// that has ended, until nothing changes (a step that ends as it starts,
    /// a notice, lets the steps after it go at once).
    pub(super) fn follow(&mut self, iid: i64, now: DateTime<Utc>, round: &mut Round) {
        // Each pass settles at least one step; a playbook has so many.
        for _ in 0..64 {
            let Some(inc) = self.live.get(&iid) else {
                return;
            };
            let Some(pb) = inc.playbook.clone() else {
                return;
            };
            let mut next: Option<(usize, Next)> = None;
            for (idx, spec) in pb.steps.iter().enumerate() {
                let Some(before) = &spec.after_step else {
                    continue;
                };
                let run = &inc.steps[idx];
                if run.state != StepState::Pending || run.starts_at.is_some() {
                    continue;
                }
                let Some(b) = inc.steps.iter().find(|r| &r.id == before) else {
                    continue;
                };
                let open = inc.status == IncidentStatus::Open || pb.follows_resolution(idx);
                next = match b.state {
                    StepState::Done if open && spec.eligible(inc.tier) => {
                        Some((idx, Next::Start(b.done_at.unwrap_or(now))))
                    }
                    StepState::Failed | StepState::Skipped => Some((
                        idx,
                        Next::Skip(format!("step {before} {}", b.state.as_str())),
                    )),
                    _ => None,
                };
                if next.is_some() {
                    break;
                }
            }
            match next {
                None => return,
                Some((idx, Next::Start(base))) => self.start_step(iid, idx, base, now, round),
                Some((idx, Next::Skip(why))) => {
                    if let Some(inc) = self.live.get_mut(&iid) {
                        let run = &mut inc.steps[idx];
                        run.state = StepState::Skipped;
                        let detail = format!("step {}: skipped: {why}", run.id);
                        round.touched.insert(iid);
                        Self::history(round, iid, now, "step.skipped", "branchguard", detail);
                    }
                }
            }
        }
    }
}
