//! Rosters in the engine, with an injected clock: a role reaches whoever is
//! on duty when the message is written, and a change of duty hands the open
//! steps over.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::event::{Event, Severity, Status};
use crate::roster::{Layer, Only, Override, Roster, parse_local};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

/// The bundled network, with IT duty at sh-001 rostered: Wu Tao by override
/// until 09:05, then Ma Chao by the daily layer.
fn loaded(away: bool) -> Loaded {
    let mut l =
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .unwrap();
    l.rosters = vec![Arc::new(Roster {
        id: "it-duty-east".into(),
        at: "rosters/it-duty.yaml:1:5".into(),
        role: "it-duty".into(),
        branches: ["sh-001".to_string()].into(),
        tz: chrono_tz::Asia::Shanghai,
        layers: vec![Layer {
            name: "days".into(),
            start: parse_local("2026-11-01T08:00").unwrap(),
            shift: Duration::days(1),
            people: vec!["ma.chao".into()],
            only: Only::default(),
            uncovered: false,
        }],
        overrides: vec![Override {
            person: "wu.tao".into(),
            from: t0() - Duration::hours(1),
            to: t0() + Duration::minutes(5),
        }],
        handoff: true,
    })];
    if away {
        Arc::make_mut(&mut l.config)
            .away
            .insert("ma.chao".into(), vec![(t0(), t0() + Duration::days(2))]);
    }
    l
}

fn core_down() -> Event {
    Event {
        kind: "system.down".into(),
        branch: "sh-001".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: [("system".to_string(), "core-banking".to_string())].into(),
        summary: Some("test".into()),
        occurred_at: t0(),
        source: "test".into(),
    }
}

fn start(away: bool) -> (Engine, Round) {
    let mut e = Engine::new(loaded(away), Vec::new(), 1, 1, t0());
    let mut r = Round::default();
    e.tick(t0(), &mut r);
    let mut r = Round::default();
    e.ingest(vec![(core_down(), t0())], "test", t0(), &mut r);
    (e, r)
}

fn switch(e: &Engine) -> &StepRun {
    e.live_incident(1)
        .unwrap()
        .steps
        .iter()
        .find(|s| s.id == "switch-to-backup")
        .unwrap()
}

#[test]
fn a_rostered_role_reaches_the_person_on_duty_and_the_history_says_why() {
    let (e, r) = start(false);
    let to: Vec<&str> = r
        .outbox
        .iter()
        .filter(|n| n.step.as_deref() == Some("switch-to-backup"))
        .map(|n| n.recipient.as_str())
        .collect();
    assert_eq!(
        to,
        vec!["wu.tao@bank.example"],
        "not everyone with the role"
    );
    assert_eq!(switch(&e).on_duty.as_deref(), Some("wu.tao"));
    let notified = r
        .history
        .iter()
        .find(|h| h.what == "step.notified" && h.detail.starts_with("step switch-to-backup"))
        .unwrap();
    assert!(
        notified
            .detail
            .contains("(on duty: it-duty-east, override)"),
        "{}",
        notified.detail
    );
    // Without a roster the role reaches everyone with it, as before.
    let l = loaded(false);
    let it = crate::target::Target::Role("it-duty".into());
    assert_eq!(l.people_at(&it, "sh-002", t0()).0.len(), 1);
    assert_eq!(l.people_at(&it, "sh-002", t0()).1, None);
    // At the change, the daily layer's person.
    let later = l.people_at(&it, "sh-001", t0() + Duration::minutes(5)).0;
    assert_eq!(
        later.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["ma.chao"]
    );
}

#[test]
fn a_change_of_duty_hands_the_open_step_to_the_incoming_person_once() {
    let (mut e, _) = start(false);
    assert_eq!(
        e.next_due().map(|t| t <= t0() + Duration::minutes(5)),
        Some(true)
    );
    let mut r = Round::default();
    e.tick(t0() + Duration::minutes(5), &mut r);
    let mail: Vec<_> = r
        .outbox
        .iter()
        .filter(|n| n.recipient == "ma.chao@bank.example")
        .collect();
    assert_eq!(mail.len(), 1, "{:?}", r.outbox);
    assert!(
        mail[0].subject.starts_with("HANDOVER"),
        "{}",
        mail[0].subject
    );
    assert!(mail[0].body.contains("#1 Switch"), "{}", mail[0].body);
    let h = r
        .history
        .iter()
        .find(|h| h.what == "step.handover")
        .unwrap();
    assert!(
        h.detail.contains("handed over from Wu Tao to Ma Chao"),
        "{}",
        h.detail
    );
    assert_eq!(switch(&e).on_duty.as_deref(), Some("ma.chao"));
    // Nothing twice.
    let mut r = Round::default();
    e.tick(t0() + Duration::minutes(6), &mut r);
    assert!(r.history.iter().all(|h| h.what != "step.handover"));
}

/// An acknowledged step stays with whoever took it: the hand-over is only of
/// steps nobody has taken yet.
#[test]
fn an_acknowledged_step_is_not_handed_over() {
    let (mut e, _) = start(false);
    let mut r = Round::default();
    e.step_action(
        1,
        "switch-to-backup",
        Verb::Ack,
        Who::new(Some("wu.tao"), None),
        t0() + Duration::minutes(1),
        &mut r,
    )
    .unwrap();
    let mut r = Round::default();
    e.tick(t0() + Duration::minutes(5), &mut r);
    assert!(
        r.history.iter().all(|h| h.what != "step.handover"),
        "{:?}",
        r.history
    );
    assert!(
        r.outbox
            .iter()
            .all(|n| n.recipient != "ma.chao@bank.example")
    );
}

#[test]
fn a_hand_over_into_a_gap_tells_the_operations_centre() {
    let (mut e, _) = start(true);
    let mut r = Round::default();
    e.tick(t0() + Duration::minutes(5), &mut r);
    let h = r
        .history
        .iter()
        .find(|h| h.what == "step.handover")
        .unwrap();
    assert!(h.detail.contains("from Wu Tao to nobody"), "{}", h.detail);
    assert!(h.detail.contains("ma.chao is away"), "{}", h.detail);
    assert!(
        r.outbox.iter().any(|n| n.recipient == "ops-centre"),
        "{:?}",
        r.outbox
    );
    assert!(
        r.outbox
            .iter()
            .all(|n| n.recipient != "ma.chao@bank.example")
    );
}

/// An occurrence of a repeating step is handed over like any step.
#[test]
fn an_occurrence_of_a_repeating_step_is_handed_over() {
    let mut l = loaded(false);
    if let Some(p) = l.playbooks.iter_mut().find(|p| p.id == "system-failover") {
        let mut x = (**p).clone();
        for s in &mut x.steps {
            if s.id == "switch-to-backup" {
                s.every = Some(crate::duration::Delay::Fixed(
                    std::time::Duration::from_secs(48 * 3600),
                ));
            }
        }
        *p = Arc::new(x);
    }
    let mut e = Engine::new(l, Vec::new(), 1, 1, t0());
    let mut r = Round::default();
    e.tick(t0(), &mut r);
    e.ingest(vec![(core_down(), t0())], "test", t0(), &mut r);
    let first = |e: &Engine| {
        e.live_incident(1)
            .unwrap()
            .steps
            .iter()
            .find(|s| s.id == "switch-to-backup#1")
            .unwrap()
            .on_duty
            .clone()
    };
    assert_eq!(first(&e).as_deref(), Some("wu.tao"));
    let mut r = Round::default();
    e.tick(t0() + Duration::minutes(5), &mut r);
    assert_eq!(first(&e).as_deref(), Some("ma.chao"));
    let h = r
        .history
        .iter()
        .find(|h| h.what == "step.handover")
        .unwrap();
    assert!(
        h.detail
            .starts_with("step switch-to-backup#1: handed over from Wu Tao to Ma Chao"),
        "{}",
        h.detail
    );
}
