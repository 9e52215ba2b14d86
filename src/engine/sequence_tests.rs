//! Sequence with an injected clock: the telecom-fraud shape (freeze 1 h,
//! then hold, then release-or-extend 3 days after the hold) and follow-ups
//! that wait for each other after the resolution.

use chrono::{DateTime, Duration, Utc};

use super::setup_tests::t0;
use super::*;
use crate::event::{Event, Severity, Status};

const PLAYBOOK: &str = "id: fraud\nname: Fraud\ntrigger: { kind: fraud.reported }\nsteps:
  - id: freeze
    assignee: role:it-duty
    deadline: 1h
  - id: hold
    after: freeze
    assignee: branch-head
    deadline: 15m
  - id: release-or-extend
    after: hold
    delay: 3d
    assignee: branch-head
    deadline: 4h
  - id: notice
    action: { notify: [branch-head] }
    after: freeze
    deadline: 1h
  - id: debrief
    after: resolved
    assignee: branch-head
    deadline: 1h
  - id: file-report
    after: debrief
    delay: 1h
    assignee: branch-head
    deadline: 1h
";

fn engine() -> (Engine, tempfile::TempDir) {
    super::setup_tests::engine_with(PLAYBOOK)
}

fn open(e: &mut Engine) -> i64 {
    let ev = Event {
        kind: "fraud.reported".into(),
        branch: "br-a".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: Default::default(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    let mut r = Round::default();
    let got = e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.tick(t0(), &mut r);
    got[0].1[0]
}

fn state(e: &Engine, iid: i64, step: &str) -> (StepState, Option<DateTime<Utc>>) {
    let s = e
        .live_incident(iid)
        .unwrap()
        .steps
        .iter()
        .find(|s| s.id == step)
        .unwrap();
    (s.state, s.activated_at)
}

fn done(e: &mut Engine, iid: i64, step: &str, at: DateTime<Utc>) -> Round {
    let mut r = Round::default();
    let who = Who::new(Some("head.a"), None);
    e.step_action(iid, step, Verb::Done, who, at, &mut r)
        .unwrap();
    e.tick(at, &mut r);
    r
}

#[test]
fn a_step_starts_when_the_one_it_follows_is_done_and_a_delay_is_a_timer() {
    let (mut e, _dir) = engine();
    let iid = open(&mut e);
    assert_eq!(state(&e, iid, "freeze").0, StepState::Notified);
    for s in ["hold", "release-or-extend", "notice", "debrief"] {
        assert_eq!(state(&e, iid, s), (StepState::Pending, None), "{s}");
    }
    // Freeze done after 40 minutes: the hold starts then, its 15 minutes
    // from then; the notice (a step that ends as it starts) goes too.
    let t1 = t0() + Duration::minutes(40);
    done(&mut e, iid, "freeze", t1);
    assert_eq!(state(&e, iid, "hold"), (StepState::Notified, Some(t1)));
    let hold = e.live_incident(iid).unwrap().steps[1].clone();
    assert_eq!(hold.deadline, Some(t1 + Duration::minutes(15)));
    assert_eq!(state(&e, iid, "notice").0, StepState::Done);
    // Hold done: release-or-extend waits 3 days, pending, with its time.
    let t2 = t1 + Duration::minutes(10);
    let r = done(&mut e, iid, "hold", t2);
    let waiting = e.live_incident(iid).unwrap().steps[2].clone();
    assert_eq!(
        (waiting.state, waiting.starts_at, waiting.notified_at),
        (StepState::Pending, Some(t2 + Duration::days(3)), None)
    );
    let line = r
        .history
        .iter()
        .find(|h| h.what == "step.scheduled")
        .unwrap();
    assert!(
        line.detail.starts_with("step release-or-extend: starts 2026-11-27 09:50:00 +08:00 (72h after step hold was done)"),
        "{}",
        line.detail
    );
    assert_eq!(e.next_due(), Some(t2 + Duration::days(3)));
    // Restarted from what was stored: the timer is still there.
    let stored = e.live_incident(iid).unwrap().clone();
    let (fresh, _dir2) = engine();
    let mut e = Engine::new(
        fresh.loaded().clone(),
        vec![stored],
        iid + 1,
        2,
        t2 + Duration::days(1),
    );
    assert_eq!(e.next_due(), Some(t2 + Duration::days(3)));
    let mut r = Round::default();
    e.tick(t2 + Duration::days(3) - Duration::seconds(1), &mut r);
    assert_eq!(state(&e, iid, "release-or-extend").0, StepState::Pending);
    let t3 = t2 + Duration::days(3);
    e.tick(t3, &mut r);
    let started = e.live_incident(iid).unwrap().steps[2].clone();
    assert_eq!(
        (
            started.state,
            started.notified_at,
            started.deadline,
            started.starts_at
        ),
        (
            StepState::Notified,
            Some(t3),
            Some(t3 + Duration::hours(4)),
            None
        )
    );
    assert!(
        r.outbox
            .iter()
            .any(|n| n.step.as_deref() == Some("release-or-extend"))
    );
}

#[test]
fn resolution_skips_waiting_steps_and_follow_ups_wait_for_each_other() {
    let (mut e, _dir) = engine();
    let iid = open(&mut e);
    let mut r = Round::default();
    let t1 = t0() + Duration::minutes(5);
    e.resolve(iid, Who::new(Some("head.a"), None), t1, &mut r)
        .unwrap();
    e.tick(t1, &mut r);
    // Waiting for the freeze, which the resolution closed: skipped.
    for s in ["hold", "release-or-extend", "notice"] {
        assert_eq!(state(&e, iid, s).0, StepState::Skipped, "{s}");
    }
    // The follow-up starts; the one after it waits an hour after it is done.
    assert_eq!(state(&e, iid, "debrief"), (StepState::Notified, Some(t1)));
    assert_eq!(state(&e, iid, "file-report").0, StepState::Pending);
    let t2 = t1 + Duration::minutes(20);
    done(&mut e, iid, "debrief", t2);
    let mut r = Round::default();
    e.finish(t0(), &mut r);
    // Nothing open, but a step to start: the incident stays live.
    assert!(e.live_incident(iid).is_some(), "dropped while a step waits");
    assert_eq!(e.next_due(), Some(t2 + Duration::hours(1)));
    e.tick(t2 + Duration::hours(1), &mut r);
    assert_eq!(
        state(&e, iid, "file-report"),
        (StepState::Notified, Some(t2 + Duration::hours(1)))
    );
}

#[test]
fn a_step_that_waits_for_a_failed_one_is_skipped_and_says_why() {
    let (mut e, _dir) = engine();
    let iid = open(&mut e);
    if let Some(inc) = e.live.get_mut(&iid) {
        inc.steps[0].state = StepState::Failed;
    }
    let mut r = Round::default();
    r.touched.insert(iid);
    e.tick(t0(), &mut r);
    assert_eq!(state(&e, iid, "hold").0, StepState::Skipped);
    assert_eq!(state(&e, iid, "release-or-extend").0, StepState::Skipped);
    let lines: Vec<&str> = r
        .history
        .iter()
        .filter(|h| h.what == "step.skipped")
        .map(|h| h.detail.as_str())
        .collect();
    assert!(
        lines.contains(&"step hold: skipped: step freeze failed"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"step release-or-extend: skipped: step hold skipped"),
        "{lines:?}"
    );
}
