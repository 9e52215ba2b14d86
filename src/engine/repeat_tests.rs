//! Repeating steps with an injected clock: the complaint rule "tell the
//! customer every 48 hours", each occurrence its own step, across a
//! restart, stopping when the incident is resolved.

use chrono::Duration;

use super::setup_tests::t0;
use super::*;
use crate::event::{Event, Severity, Status};

const PLAYBOOK: &str = "id: complaint\nname: Complaint\ntrigger: { kind: complaint.filed }\nsteps:
  - id: progress-update
    title: Tell the customer how the case stands
    every: 48h
    assignee: branch-head
    deadline: 4h
";

fn engine() -> (Engine, tempfile::TempDir) {
    super::setup_tests::engine_with(PLAYBOOK)
}

fn run<'a>(e: &'a Engine, id: &str) -> &'a StepRun {
    e.live_incident(1)
        .unwrap()
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap()
}

#[test]
fn each_occurrence_is_a_step_of_its_own_until_the_incident_resolves() {
    let (mut e, _dir) = engine();
    let mut r = Round::default();
    let ev = Event {
        kind: "complaint.filed".into(),
        branch: "br-a".into(),
        severity: Severity::Major,
        status: Status::Firing,
        labels: Default::default(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.tick(t0(), &mut r);
    let first = run(&e, "progress-update#1").clone();
    assert_eq!(
        (first.state, first.notified_at, first.deadline),
        (
            StepState::Notified,
            Some(t0()),
            Some(t0() + Duration::hours(4))
        )
    );
    let schedule = run(&e, "progress-update").clone();
    assert_eq!(
        (schedule.state, schedule.starts_at),
        (StepState::Pending, Some(t0() + Duration::hours(48)))
    );
    // #1 missed: it goes overdue and stays so; #2 still starts on time.
    let mut r = Round::default();
    e.tick(t0() + Duration::hours(4), &mut r);
    assert_eq!(run(&e, "progress-update#1").state, StepState::Overdue);
    assert_eq!(e.next_due(), Some(t0() + Duration::hours(48)));
    // Restarted before it.
    let stored = e.live_incident(1).unwrap().clone();
    let (fresh, _d2) = engine();
    let mut e = Engine::new(
        fresh.loaded().clone(),
        vec![stored],
        2,
        2,
        t0() + Duration::hours(47),
    );
    let mut r = Round::default();
    e.tick(t0() + Duration::hours(48), &mut r);
    let second = run(&e, "progress-update#2").clone();
    assert_eq!(
        (second.state, second.notified_at),
        (StepState::Notified, Some(t0() + Duration::hours(48)))
    );
    assert!(
        r.outbox
            .iter()
            .any(|n| n.step.as_deref() == Some("progress-update#2"))
    );
    assert_eq!(run(&e, "progress-update#1").state, StepState::Overdue);
    // Answered one by one; the step itself is not an answer.
    let who = Who::new(Some("head.a"), None);
    let at = t0() + Duration::hours(49);
    match e.step_action(1, "progress-update", Verb::Ack, who, at, &mut r) {
        Err(ActionError::Invalid(m)) => assert!(
            m.contains(
                "answer one of its occurrences (open: progress-update#1, progress-update#2)"
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    e.step_action(1, "progress-update#2", Verb::Done, who, at, &mut r)
        .unwrap();
    assert_eq!(
        run(&e, "progress-update#2").response_seconds,
        Some(3600.0),
        "its own response time"
    );
    // Resolved: no occurrence after it; #1 is closed with it.
    e.resolve(1, who, t0() + Duration::hours(50), &mut r)
        .unwrap();
    e.tick(t0() + Duration::hours(50), &mut r);
    let ids: Vec<(String, StepState)> = e
        .live_incident(1)
        .unwrap()
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.state))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("progress-update".into(), StepState::Skipped),
            ("progress-update#1".into(), StepState::Skipped),
            ("progress-update#2".into(), StepState::Done),
        ]
    );
    assert_eq!(e.next_due(), None, "no timer left");
    e.finish(t0(), &mut r);
    assert!(e.live_incident(1).is_none(), "nothing left to run");
}
