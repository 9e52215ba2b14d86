//! An incident as stored: fields at their defaults are left out, and what is
//! read back is the incident that was saved, with and without them.

use super::setup_tests::{engine_with, t0};
use super::*;
use crate::event::{Event, Severity, Status};

const PLAYBOOK: &str = "id: atm\nname: ATM\ntrigger: { kind: atm.down }\nsteps:
  - id: fix
    assignee: role:it-duty
    deadline: 1h
  - id: later
    after: fix
    assignee: branch-head
    deadline: 1h
";

fn same(a: &Incident, b: &Incident) {
    assert_eq!(
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap()
    );
}

#[test]
fn an_incident_is_stored_without_its_defaults_and_read_back_whole() {
    let (mut e, _dir) = engine_with(PLAYBOOK);
    let mut r = Round::default();
    let ev = Event {
        kind: "atm.down".into(),
        branch: "br-a".into(),
        severity: Severity::Major,
        status: Status::Firing,
        labels: [("atm".to_string(), "3".to_string())].into(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.finish(t0(), &mut r);
    let fresh = &r.incidents[0];
    let body = &r.bodies[0];
    // A new incident: no resolution, no answer, a pending step, nothing fired.
    for absent in [
        "null",
        "\"resolved_at\"",
        "\"acknowledged_at\"",
        "\"escalations_fired\"",
        "\"running\"",
        "\"rehearsal\"",
    ] {
        assert!(!body.contains(absent), "{absent} in {body}");
    }
    let back: Incident = serde_json::from_str(body).unwrap();
    same(&back, fresh);
    assert_eq!(back.steps[1].assignee.as_deref(), Some("branch-head"));
    assert_eq!(back.steps[0].escalations_fired, 0);

    // Answered, resolved: what is set is stored and read back.
    let who = Who::new(Some("it.a"), None);
    let at = t0() + chrono::Duration::minutes(5);
    let mut r = Round::default();
    e.step_action(1, "fix", Verb::Ack, who, at, &mut r).unwrap();
    e.resolve(1, who, at, &mut r).unwrap();
    e.finish(at, &mut r);
    let body = r.bodies.last().unwrap();
    for present in ["\"resolved_at\"", "\"acknowledged_at\"", "\"by\""] {
        assert!(body.contains(present), "{present} missing from {body}");
    }
    let back: Incident = serde_json::from_str(body).unwrap();
    same(&back, r.incidents.last().unwrap());
    assert_eq!(back.resolved_at, Some(at));
}
