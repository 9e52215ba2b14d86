//! Reviews in the engine with an injected clock: an action's owner is told
//! once when the day after its due date begins in the branch's zone, not
//! before, not again after a restart; numbers never repeat.

use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::*;
use crate::event::{Event, Severity, Status};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

fn loaded() -> Loaded {
    crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml")).unwrap()
}

/// An engine with one resolved core-system incident at sh-001.
fn resolved() -> (Engine, Incident) {
    let mut e = Engine::new(loaded(), Vec::new(), 1, 1, t0());
    let mut r = Round::default();
    let ev = Event {
        kind: "system.down".into(),
        branch: "sh-001".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: [("system".to_string(), "core-banking".to_string())].into(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.resolve(1, Who::new(Some("zhang.min"), None), t0(), &mut r)
        .unwrap();
    let inc = e.live_incident(1).unwrap().clone();
    (e, inc)
}

fn spec(due: &str) -> ReviewSpec {
    ReviewSpec {
        impact: "12 minutes on paper".into(),
        cause: "carrier change".into(),
        actions: vec![ActionSpec {
            what: "get the change log".into(),
            owner: "sun.hao".into(),
            due: NaiveDate::parse_from_str(due, "%Y-%m-%d").unwrap(),
        }],
    }
}

fn reminders(r: &Round) -> Vec<&Notification> {
    r.outbox
        .iter()
        .filter(|n| n.subject.starts_with("OVERDUE") && n.body.contains("Review action"))
        .collect()
}

#[test]
fn the_owner_is_told_once_when_the_day_after_the_due_date_begins_at_the_branch() {
    let (mut e, inc) = resolved();
    let mut r = Round::default();
    let who = Who::new(Some("zhang.min"), None);
    let (n, actions) = e
        .review(inc.clone(), (0, 0), spec("2026-11-26"), who, t0(), &mut r)
        .unwrap();
    assert_eq!((n, actions), (1, vec![1]));
    assert_eq!(r.review_actions.len(), 1);
    let due_at = r.review_actions[0].due_at;
    // Midnight at the end of the 26th in Shanghai.
    assert_eq!(
        due_at,
        DateTime::parse_from_rfc3339("2026-11-27T00:00:00+08:00")
            .unwrap()
            .to_utc()
    );
    assert_eq!(e.next_due(), Some(due_at));
    let mut before = Round::default();
    e.tick(due_at - Duration::seconds(1), &mut before);
    assert!(reminders(&before).is_empty());
    let mut at = Round::default();
    e.tick(due_at, &mut at);
    let sent = reminders(&at);
    assert_eq!(sent.len(), 1, "{:?}", at.outbox);
    assert_eq!(sent[0].person.as_deref(), Some("sun.hao"));
    assert!(sent[0].body.contains("get the change log"));
    // Not "the failover is overdue": the subject says what is.
    assert!(
        sent[0]
            .subject
            .starts_with("OVERDUE Shanghai Pudong: review action 1 of #1: get the change log"),
        "{}",
        sent[0].subject
    );
    assert!(at.review_actions[0].reminded_at.is_some());
    let mut later = Round::default();
    e.tick(due_at + Duration::days(3), &mut later);
    assert!(reminders(&later).is_empty(), "told once");
    // Restarted from what was stored: the reminder is not sent again.
    let stored = at.review_actions[0].clone();
    let (mut again, inc) = resolved();
    again.restore_reviews(vec![(stored, inc)]);
    let mut after = Round::default();
    again.tick(due_at + Duration::days(4), &mut after);
    assert!(reminders(&after).is_empty());
}

#[test]
fn a_restart_before_the_due_date_still_tells_the_owner_late_and_numbers_go_on() {
    let (mut e, inc) = resolved();
    let mut r = Round::default();
    let who = Who::new(Some("zhang.min"), None);
    e.review(inc.clone(), (0, 0), spec("2026-11-26"), who, t0(), &mut r)
        .unwrap();
    // A second review while the history read said none: numbered on.
    let (n, actions) = e
        .review(inc.clone(), (0, 0), spec("2026-12-26"), who, t0(), &mut r)
        .unwrap();
    assert_eq!((n, actions), (2, vec![2]));
    // And from the history after a restart.
    let (mut again, inc2) = resolved();
    let (n, actions) = again
        .review(
            inc2.clone(),
            (2, 2),
            spec("2026-12-26"),
            who,
            t0(),
            &mut Round::default(),
        )
        .unwrap();
    assert_eq!((n, actions), (3, vec![3]));
    // Down over the due date: told at the first tick after, marked late.
    let (mut restarted, inc3) = resolved();
    restarted.restore_reviews(vec![(r.review_actions[0].clone(), inc3)]);
    let mut late = Round::default();
    restarted.tick(t0() + Duration::days(5), &mut late);
    assert_eq!(reminders(&late).len(), 1);
    let line = late
        .history
        .iter()
        .find(|h| h.what == reviews::ACTION_OVERDUE)
        .unwrap();
    assert!(line.detail.contains("(late: due at"), "{}", line.detail);
    // Done: no longer due; done twice is a conflict.
    restarted
        .review_action_done(1, 1, who, t0() + Duration::days(5), &mut late)
        .unwrap();
    assert!(matches!(
        restarted.review_action_done(1, 1, who, t0(), &mut late),
        Err(ActionError::Conflict(_))
    ));
    let _ = inc;
}

#[test]
fn an_open_incident_or_an_unknown_owner_is_refused() {
    let mut e = Engine::new(loaded(), Vec::new(), 1, 1, t0());
    let (_, mut inc) = resolved();
    inc.status = IncidentStatus::Open;
    let who = Who::new(Some("zhang.min"), None);
    let mut r = Round::default();
    assert!(matches!(
        e.review(inc.clone(), (0, 0), spec("2026-11-26"), who, t0(), &mut r),
        Err(ActionError::Conflict(_))
    ));
    inc.status = IncidentStatus::Resolved;
    let mut s = spec("2026-11-26");
    s.actions[0].owner = "nobody".into();
    match e.review(inc, (0, 0), s, who, t0(), &mut r) {
        Err(ActionError::Invalid(m)) => assert!(m.contains("actions[0].owner"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(r.history.is_empty() && r.review_actions.is_empty());
}
