//! Repeating steps (`every`): "for a complaint that takes longer, tell the
//! customer every 48 hours why and when it will be done". The playbook's
//! step is the schedule — pending, with `starts_at` its next occurrence —
//! and each occurrence is a step of its own, `ID#1`, `ID#2`, …, with its own
//! deadline, escalations, acknowledgement and response time. The next starts
//! `every` after the last began, whatever became of it (a missed one stays
//! overdue); none starts once the incident is resolved, and the open ones
//! are closed with it like any step.

use chrono::{DateTime, Utc};

use super::steps::pending_step;
use super::*;

impl Engine {
    /// Starts the next occurrence of repeating step `idx` and schedules the
    /// one after it.
    pub(super) fn start_occurrence(
        &mut self,
        iid: i64,
        idx: usize,
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
        let Some(every) = &spec.every else {
            return;
        };
        let prefix = format!("{}#", spec.id);
        let n = inc
            .steps
            .iter()
            .filter(|r| r.id.starts_with(&prefix))
            .count()
            + 1;
        let mut run = pending_step(spec);
        run.id = format!("{prefix}{n}");
        inc.steps.push(run);
        let occurrence = inc.steps.len() - 1;
        // The schedule waits for the next one, while the incident is open
        // (or, for a follow-up, while the follow-ups run).
        let open = inc.status == IncidentStatus::Open || pb.follows_resolution(idx);
        inc.steps[idx].starts_at = open.then(|| every.after(now, &cal));
        round.touched.insert(iid);
        self.activate(iid, occurrence, now, round);
    }
}

/// The step run `idx` of `inc` follows: the playbook's step, or for an
/// occurrence a copy named `ID#N`, so its messages, links and history name
/// the occurrence (a link to the bare step would answer nothing).
pub(super) fn spec_for<'a>(
    pb: &'a crate::config::Playbook,
    inc: &Incident,
    idx: usize,
) -> Option<std::borrow::Cow<'a, Step>> {
    let spec = &pb.steps[inc.spec_of(idx)?];
    let run = inc.steps.get(idx)?;
    if run.id == spec.id {
        return Some(std::borrow::Cow::Borrowed(spec));
    }
    let n = run.id.rsplit('#').next().unwrap_or_default();
    Some(std::borrow::Cow::Owned(Step {
        id: run.id.clone(),
        title: format!("{} (#{n})", spec.title),
        ..spec.clone()
    }))
}
