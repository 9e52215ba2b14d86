//! Tiers reached by time, with an injected clock: a core outage open 3
//! hours becomes a major operational-risk event, and its regulator step
//! starts then; a tier that also names a severity needs an event that had it.

use chrono::{DateTime, Duration, Utc};

use super::setup_tests::t0;
use super::*;
use crate::event::{Event, Severity, Status};

const PLAYBOOK: &str = "id: outage\nname: Outage\ntrigger: { kind: system.down }\ntiers:
  - { level: 1, name: outage }
  - { level: 2, name: major-outage, open_for: 3h }
  - { level: 3, name: particularly-major, open_for: 5h, severity_at_least: critical }
steps:
  - id: switch
    assignee: role:it-duty
    deadline: 15m
  - id: report-to-regulator
    when: \"tier >= 2\"
    assignee: branch-head
    deadline: 1h
  - id: phone-the-regulator
    when: \"tier >= 3\"
    assignee: branch-head
    deadline: 30m
";

fn engine() -> (Engine, tempfile::TempDir) {
    super::setup_tests::engine_with(PLAYBOOK)
}

fn event(severity: Severity, at: DateTime<Utc>) -> Event {
    Event {
        kind: "system.down".into(),
        branch: "br-a".into(),
        severity,
        status: Status::Firing,
        labels: Default::default(),
        summary: None,
        occurred_at: at,
        source: "test".into(),
    }
}

fn step_state(e: &Engine, iid: i64, id: &str) -> StepState {
    e.live_incident(iid)
        .unwrap()
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap()
        .state
}

#[test]
fn a_tier_rises_when_the_incident_has_been_open_long_enough_and_survives_a_restart() {
    let (mut e, _dir) = engine();
    let mut r = Round::default();
    let got = e.ingest(
        vec![(event(Severity::Major, t0()), t0())],
        "test",
        t0(),
        &mut r,
    );
    let iid = got[0].1[0];
    e.tick(t0(), &mut r);
    assert_eq!(e.live_incident(iid).unwrap().tier, 1);
    assert_eq!(
        step_state(&e, iid, "report-to-regulator"),
        StepState::Pending
    );
    // The switch is done; the 3-hour tier is still the incident's next timer.
    e.step_action(
        iid,
        "switch",
        Verb::Done,
        Who::new(Some("it.a"), None),
        t0() + Duration::minutes(10),
        &mut r,
    )
    .unwrap();
    e.tick(t0() + Duration::minutes(10), &mut r);
    assert_eq!(e.next_due(), Some(t0() + Duration::hours(3)));
    // Restarted from what was stored before then.
    let stored = e.live_incident(iid).unwrap().clone();
    let (fresh, _d2) = engine();
    let mut e = Engine::new(
        fresh.loaded().clone(),
        vec![stored],
        2,
        2,
        t0() + Duration::hours(1),
    );
    assert_eq!(e.next_due(), Some(t0() + Duration::hours(3)));
    let mut r = Round::default();
    e.tick(t0() + Duration::hours(3) - Duration::seconds(1), &mut r);
    assert_eq!(e.live_incident(iid).unwrap().tier, 1);
    e.tick(t0() + Duration::hours(3), &mut r);
    assert_eq!(e.live_incident(iid).unwrap().tier, 2);
    assert_eq!(
        step_state(&e, iid, "report-to-regulator"),
        StepState::Notified
    );
    let line = r.history.iter().find(|h| h.what == "tier.raised").unwrap();
    assert_eq!(line.detail, "tier 1 → 2: open for 3h");
    assert_eq!(line.by, "branchguard");
    // Tier 3 needs a critical event: none came, so no timer for it, and
    // five hours change nothing.
    let mut r = Round::default();
    e.tick(t0() + Duration::hours(6), &mut r);
    assert_eq!(e.live_incident(iid).unwrap().tier, 2);
    assert_eq!(
        step_state(&e, iid, "phone-the-regulator"),
        StepState::Pending
    );
    // A critical event now: the 5 hours have passed, so tier 3 at once.
    let at = t0() + Duration::hours(6) + Duration::minutes(1);
    e.ingest(
        vec![(event(Severity::Critical, at), at)],
        "test",
        at,
        &mut r,
    );
    e.tick(at, &mut r);
    assert_eq!(e.live_incident(iid).unwrap().tier, 3);
    assert_eq!(
        step_state(&e, iid, "phone-the-regulator"),
        StepState::Notified
    );
}

#[test]
fn an_event_alone_never_reaches_a_timed_tier_and_a_resolved_incident_stays_put() {
    let (mut e, _dir) = engine();
    let mut r = Round::default();
    let got = e.ingest(
        vec![(event(Severity::Critical, t0()), t0())],
        "test",
        t0(),
        &mut r,
    );
    let iid = got[0].1[0];
    e.tick(t0(), &mut r);
    assert_eq!(
        e.live_incident(iid).unwrap().tier,
        1,
        "critical at once is still tier 1"
    );
    e.resolve(
        iid,
        Who::new(Some("head.a"), None),
        t0() + Duration::hours(1),
        &mut r,
    )
    .unwrap();
    e.tick(t0() + Duration::hours(4), &mut r);
    assert!(
        e.live_incident(iid).is_none_or(|i| i.tier == 1),
        "a resolved incident's tier does not rise"
    );
    assert!(!r.history.iter().any(|h| h.what == "tier.raised"));
}
