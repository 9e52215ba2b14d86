//! Post-incident reviews: after an incident is resolved, its impact, cause
//! and actions (each with an owner and a due date) are recorded as a history
//! line — audited, appended, never overwritten: a later review adds to the
//! earlier ones. An action still open when its due date has passed reaches
//! its owner once, as an `OVERDUE` message, and the history says so.
//!
//! A resolved incident is usually no longer in memory, so the caller hands
//! over the stored incident and how many reviews and actions its history
//! already holds; the engine numbers on from the larger of that and what it
//! recorded itself since it started (two reviews of one incident in flight
//! at once are numbered apart).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::target::Target;

/// The most actions one review may hold, and the longest texts.
pub const MAX_ACTIONS: usize = 50;
pub const MAX_TEXT: usize = 4000;
pub const MAX_WHAT: usize = 500;

/// One action of a review, as stored and as the engine keeps the open ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewAction {
    pub incident: i64,
    /// Numbered from 1 across all of the incident's reviews.
    pub n: u32,
    /// The review that recorded it.
    pub review: u32,
    pub what: String,
    pub owner: String,
    pub due: NaiveDate,
    /// When it is overdue: the start of the day after `due` in the branch's zone.
    pub due_at: DateTime<Utc>,
    pub branch: String,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
    pub done_at: Option<DateTime<Utc>>,
    pub done_by: Option<String>,
    /// When its owner was told it is overdue.
    pub reminded_at: Option<DateTime<Utc>>,
}

/// What a review says, as asked.
#[derive(Debug, Clone, Default)]
pub struct ReviewSpec {
    pub impact: String,
    pub cause: String,
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub what: String,
    pub owner: String,
    pub due: NaiveDate,
}

/// What a history line `review.recorded` holds (its detail is this, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedReview {
    pub review: u32,
    pub impact: String,
    pub cause: String,
    pub actions: Vec<RecordedAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedAction {
    pub n: u32,
    pub what: String,
    pub owner: String,
    pub due: NaiveDate,
}

/// How many reviews and actions an incident's history holds.
pub fn counted(history: &[HistoryEntry]) -> (u32, u32) {
    let mut out = (0, 0);
    for h in history.iter().filter(|h| h.what == RECORDED) {
        if let Ok(r) = serde_json::from_str::<RecordedReview>(&h.detail) {
            out.0 = out.0.max(r.review);
            out.1 = out.1.max(r.actions.iter().map(|a| a.n).max().unwrap_or(0));
        }
    }
    out
}

/// The history line of a review.
pub const RECORDED: &str = "review.recorded";
/// The history line of an action done.
pub const ACTION_DONE: &str = "review.action.done";
/// The history line of an action's owner told it is overdue.
pub const ACTION_OVERDUE: &str = "review.action.overdue";

/// The open actions (with the incident their reminder is about) and, per
/// incident reviewed since start, the last review and action numbers.
#[derive(Debug, Default)]
pub struct Reviews {
    open: BTreeMap<(i64, u32), (ReviewAction, Arc<Incident>)>,
    numbered: HashMap<i64, (u32, u32)>,
}

fn clip_check(field: &str, v: &str, max: usize) -> Result<(), ActionError> {
    if v.chars().count() > max {
        return Err(ActionError::Invalid(format!(
            "{field}: longer than {max} characters"
        )));
    }
    Ok(())
}

impl Engine {
    /// Records a review of a resolved incident; `prior`: the reviews and
    /// actions its stored history holds. Returns the review's number and
    /// its actions' numbers.
    pub fn review(
        &mut self,
        inc: Incident,
        prior: (u32, u32),
        spec: ReviewSpec,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(u32, Vec<u32>), ActionError> {
        if inc.status == IncidentStatus::Open {
            return Err(ActionError::Conflict(format!(
                "incident {} is still open: a review is recorded once it is resolved",
                inc.id
            )));
        }
        let (impact, cause) = (spec.impact.trim(), spec.cause.trim());
        if impact.is_empty() && cause.is_empty() && spec.actions.is_empty() {
            return Err(ActionError::Invalid(
                "a review says its impact, its cause or its actions: all three are empty".into(),
            ));
        }
        clip_check("impact", impact, MAX_TEXT)?;
        clip_check("cause", cause, MAX_TEXT)?;
        if spec.actions.len() > MAX_ACTIONS {
            return Err(ActionError::Invalid(format!(
                "actions: {} given, at most {MAX_ACTIONS}",
                spec.actions.len()
            )));
        }
        for (i, a) in spec.actions.iter().enumerate() {
            let field = format!("actions[{i}]");
            if a.what.trim().is_empty() {
                return Err(ActionError::Invalid(format!("{field}.what: empty")));
            }
            clip_check(&format!("{field}.what"), &a.what, MAX_WHAT)?;
            if !self.loaded.config.people.contains_key(&a.owner) {
                return Err(ActionError::Invalid(format!(
                    "{field}.owner: no person `{}` in the configuration",
                    crate::diag::clip_quotes(&a.owner)
                )));
            }
        }
        let seen = self
            .reviews
            .numbered
            .get(&inc.id)
            .copied()
            .unwrap_or((0, 0));
        let (review, mut n) = (prior.0.max(seen.0) + 1, prior.1.max(seen.1));
        let tz = self.loaded.config.tz_of(&inc.branch);
        let inc = Arc::new(inc);
        let mut recorded = Vec::new();
        for a in spec.actions {
            n += 1;
            let due_at = crate::roster::to_utc(
                tz,
                a.due
                    .succ_opt()
                    .unwrap_or(a.due)
                    .and_time(chrono::NaiveTime::MIN),
            );
            let action = ReviewAction {
                incident: inc.id,
                n,
                review,
                what: a.what.trim().to_string(),
                owner: a.owner,
                due: a.due,
                due_at,
                branch: inc.branch.clone(),
                recorded_at: now,
                recorded_by: who.by().to_string(),
                done_at: None,
                done_by: None,
                reminded_at: None,
            };
            recorded.push(RecordedAction {
                n,
                what: action.what.clone(),
                owner: action.owner.clone(),
                due: action.due,
            });
            round.review_actions.push(action.clone());
            self.reviews
                .open
                .insert((inc.id, n), (action, Arc::clone(&inc)));
            self.reschedule(TimerKey::ReviewAction(inc.id, n));
        }
        self.reviews.numbered.insert(inc.id, (review, n));
        let numbers = recorded.iter().map(|a| a.n).collect();
        let detail = serde_json::to_string(&RecordedReview {
            review,
            impact: impact.to_string(),
            cause: cause.to_string(),
            actions: recorded,
        })
        .unwrap_or_default();
        Self::history_of(round, inc.id, now, RECORDED, &who, detail);
        Ok((review, numbers))
    }

    /// Marks a review action done.
    pub fn review_action_done(
        &mut self,
        incident: i64,
        n: u32,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let Some((mut action, _)) = self.reviews.open.remove(&(incident, n)) else {
            return Err(ActionError::Conflict(format!(
                "incident {incident} has no open review action {n} (done already, or never recorded)"
            )));
        };
        self.reschedule(TimerKey::ReviewAction(incident, n));
        action.done_at = Some(now);
        action.done_by = Some(who.by().to_string());
        let note = who.note.map(|t| format!(" — {t}")).unwrap_or_default();
        Self::history_of(
            round,
            incident,
            now,
            ACTION_DONE,
            &who,
            format!("action {n}: {}{note}", action.what),
        );
        round.review_actions.push(action);
        Ok(())
    }

    /// The open actions the store holds, each with its incident (at start).
    pub fn restore_reviews(&mut self, open: Vec<(ReviewAction, Incident)>) {
        for (a, inc) in open {
            let key = (a.incident, a.n);
            self.reviews.open.insert(key, (a, Arc::new(inc)));
            self.reschedule(TimerKey::ReviewAction(key.0, key.1));
        }
    }

    pub(super) fn review_due(&self, incident: i64, n: u32) -> Option<DateTime<Utc>> {
        self.reviews
            .open
            .get(&(incident, n))
            .filter(|(a, _)| a.reminded_at.is_none())
            .map(|(a, _)| a.due_at)
    }

    /// An action's due date passed: its owner is told, once.
    pub(super) fn fire_review(
        &mut self,
        incident: i64,
        n: u32,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some((a, inc)) = self.reviews.open.get(&(incident, n)).cloned() else {
            return;
        };
        if a.reminded_at.is_some() || a.due_at > now {
            return;
        }
        let late = timers::late_note(a.due_at, now, &self.loaded, &a.branch);
        let text = format!(
            "Review action {n} is overdue (due {}): {}\nRecorded in review {} by {} on {}. Mark it done: POST /api/v1/incidents/{incident}/review/actions/{n}/done",
            a.due,
            a.what,
            a.review,
            self.person_name(&a.recorded_by),
            fmt_time(a.recorded_at, &self.loaded, &a.branch),
        );
        let about = format!("review action {n} of #{incident}: {}", a.what);
        let sent = self.notify(
            &inc,
            None,
            &[Target::Person(a.owner.clone())],
            Msg::new(Ask::Overdue, &text).about(&about),
            round,
            now,
        );
        Self::history(
            round,
            incident,
            now,
            ACTION_OVERDUE,
            "branchguard",
            format!("action {n}: due {} passed; {sent}{late}", a.due),
        );
        if let Some((open, _)) = self.reviews.open.get_mut(&(incident, n)) {
            open.reminded_at = Some(now);
            round.review_actions.push(open.clone());
        }
    }

    fn person_name(&self, id: &str) -> String {
        self.loaded
            .config
            .people
            .get(id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }
}
