//! Engine behaviour with injected time: the bundled playbooks' real deadlines
//! (15 minutes, 24 hours, 3 working days) are checked without waiting.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::config::Action;
use crate::event::{Event, Severity, Status};

fn loaded() -> Loaded {
    crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml")).unwrap()
}

fn t0() -> DateTime<Utc> {
    // A Tuesday morning in Shanghai.
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

fn ev(kind: &str, branch: &str, status: Status, labels: &[(&str, &str)]) -> Event {
    Event {
        kind: kind.into(),
        branch: branch.into(),
        severity: Severity::Critical,
        status,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        summary: Some("test".into()),
        occurred_at: t0(),
        source: "test".into(),
    }
}

fn core_down() -> Event {
    ev(
        "system.down",
        "sh-001",
        Status::Firing,
        &[("system", "core-banking")],
    )
}

fn engine() -> Engine {
    Engine::new(loaded(), Vec::new(), 1, 1, t0())
}

fn step<'a>(e: &'a Engine, iid: i64, id: &str) -> &'a StepRun {
    e.live_incident(iid)
        .unwrap()
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap()
}

fn ingest(e: &mut Engine, evs: Vec<Event>, now: DateTime<Utc>) -> (Ingested, Round) {
    let mut r = Round::default();
    let out = e.ingest(
        evs.into_iter().map(|x| (x, now)).collect(),
        "test",
        now,
        &mut r,
    );
    e.finish(t0(), &mut r);
    (out, r)
}

fn tick(e: &mut Engine, now: DateTime<Utc>) -> Round {
    let mut r = Round::default();
    e.tick(now, &mut r);
    e.finish(t0(), &mut r);
    r
}

#[test]
fn core_down_opens_failover_and_notifies_the_assignees() {
    let mut e = engine();
    let (out, r) = ingest(&mut e, vec![core_down()], t0());
    assert_eq!(out, vec![(1, vec![1], None)]);
    let inc = e.live_incident(1).unwrap();
    assert_eq!(
        (inc.playbook_id.as_str(), inc.tier, inc.status),
        ("system-failover", 1, IncidentStatus::Open)
    );
    let sw = step(&e, 1, "switch-to-backup");
    assert_eq!(sw.state, StepState::Notified);
    assert_eq!(sw.deadline, Some(t0() + Duration::minutes(15)));
    // A notify step is done once its messages are queued; a webhook step once
    // its announcement is delivered.
    assert_eq!(step(&e, 1, "notify-technology").state, StepState::Done);
    assert_eq!(step(&e, 1, "led-notice").state, StepState::Notified);
    announcement_delivered(&mut e, 1, "led-notice", t0() + Duration::seconds(1));
    assert_eq!(step(&e, 1, "led-notice").state, StepState::Done);
    // The follow-up waits for resolution.
    assert_eq!(step(&e, 1, "backfill-ledger").state, StepState::Pending);
    let to_sun: Vec<_> = r
        .outbox
        .iter()
        .filter(|n| n.recipient == "sun.hao@bank.example")
        .collect();
    assert_eq!(
        to_sun.len(),
        1,
        "the it-duty person of sh-001 gets the switchover"
    );
    assert!(
        to_sun[0]
            .body
            .contains("Deadline:  2026-11-24 09:15:00 +08:00"),
        "{}",
        to_sun[0].body
    );
    assert!(r.outbox.iter().any(|n| n.recipient == "lobby-display"
        && n.body.contains("Shanghai Pudong: system maintenance")));
    assert!(
        !r.outbox
            .iter()
            .any(|n| n.recipient == "wu.tao@bank.example"),
        "sh-002's it-duty is not involved"
    );
}

#[test]
fn the_same_event_again_attaches_without_new_messages() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    let (out, r) = ingest(&mut e, vec![core_down()], t0() + Duration::seconds(30));
    assert_eq!(out, vec![(2, vec![1], None)]);
    assert_eq!(e.live_incident(1).unwrap().event_count, 2);
    assert!(r.outbox.is_empty());
    // Another branch is another group.
    let mut other = core_down();
    other.branch = "sh-002".into();
    let (out, _) = ingest(&mut e, vec![other], t0());
    assert_eq!(out, vec![(3, vec![2], None)]);
}

/// A round names each playbook it opened incidents of once, however many it
/// opened: the store writes a version once, not per incident.
#[test]
fn a_round_names_each_playbook_it_opened_once() {
    let mut e = engine();
    let branches = ["sh-001", "sh-002", "sh-003"];
    let evs = branches
        .iter()
        .map(|b| {
            let mut ev = core_down();
            ev.branch = b.to_string();
            ev
        })
        .collect();
    let (out, r) = ingest(&mut e, evs, t0());
    assert_eq!(out.len(), 3);
    assert_eq!(r.incidents.len(), 3, "three incidents opened");
    let names: Vec<&str> = r.playbooks.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(names, ["system-failover"]);
}

/// The delivery worker reports the announcement of `step` delivered.
fn announcement_delivered(e: &mut Engine, iid: i64, step: &str, now: DateTime<Utc>) {
    let mut r = Round::default();
    e.delivered(
        vec![Attempt {
            update: DeliveryUpdate {
                id: 1,
                attempts: 1,
                delivered_at: Some(now),
                next_attempt_at: None,
                failed_at: None,
                last_error: None,
            },
            incident: iid,
            step: Some(step.into()),
            announcement: true,
            channel: ChannelKind::Webhook,
            target: "channel:lobby-display".into(),
            recipient: "lobby-display".into(),
            error: None,
            how: None,
        }],
        now,
        &mut r,
    );
    e.finish(t0(), &mut r);
}

#[test]
fn escalation_then_overdue_fire_once_each_at_their_times() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    announcement_delivered(&mut e, 1, "led-notice", t0());
    announcement_delivered(&mut e, 1, "queue-announcement", t0());
    assert_eq!(e.next_due(), Some(t0() + Duration::minutes(10)));
    assert!(
        tick(&mut e, t0() + Duration::seconds(599))
            .history
            .is_empty()
    );
    let r = tick(&mut e, t0() + Duration::minutes(10));
    let escalated: Vec<_> = r
        .history
        .iter()
        .filter(|h| h.what == "step.escalated")
        .map(|h| h.detail.clone())
        .collect();
    assert_eq!(
        escalated.len(),
        2,
        "switch-to-backup and manual-vouchers: {escalated:?}"
    );
    assert!(
        r.outbox
            .iter()
            .any(|n| n.recipient == "zhang.min@bank.example" && n.subject.contains("ESCALATION"))
    );
    assert!(r.outbox.iter().any(|n| n.recipient == "ops-centre"));
    assert!(
        tick(&mut e, t0() + Duration::minutes(11))
            .history
            .is_empty(),
        "nothing twice"
    );
    let r = tick(&mut e, t0() + Duration::minutes(15));
    let overdue: Vec<_> = r
        .history
        .iter()
        .filter(|h| h.what == "step.overdue")
        .collect();
    assert_eq!(overdue.len(), 2);
    assert_eq!(step(&e, 1, "switch-to-backup").state, StepState::Overdue);
    // Overdue reaches the owner, the step's escalation targets and the ops
    // centre, each once (switch-to-backup: IT duty, the branch head, ops-centre).
    let switch: Vec<&str> = r
        .outbox
        .iter()
        .filter(|n| n.step.as_deref() == Some("switch-to-backup"))
        .map(|n| n.recipient.as_str())
        .collect();
    assert!(switch.contains(&"sun.hao@bank.example"), "{switch:?}");
    assert!(switch.contains(&"zhang.min@bank.example"), "{switch:?}");
    assert_eq!(switch.iter().filter(|r| **r == "ops-centre").count(), 1);
    assert!(r.outbox.iter().all(|n| n.subject.contains("OVERDUE")));
    // Five hours on: the outage has lasted over 3 hours, so the tier rises
    // and the regulator's report starts (NFRA's rule); nothing fires twice.
    let r = tick(&mut e, t0() + Duration::hours(5));
    let what: Vec<&str> = r.history.iter().map(|h| h.what.as_str()).collect();
    assert_eq!(
        what,
        vec!["tier.raised", "step.notified"],
        "{:?}",
        r.history
    );
    assert_eq!(
        step(&e, 1, "report-to-regulator").state,
        StepState::Notified
    );
    assert!(
        tick(&mut e, t0() + Duration::hours(6)).history.is_empty(),
        "nothing twice"
    );
}

/// An escalation of a step someone acknowledged says who has it and since
/// when: the person told asks "why is it not done", not "who has it".
#[test]
fn an_escalation_after_an_acknowledgement_names_who_acknowledged() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    let mut r = Round::default();
    e.step_action(
        1,
        "switch-to-backup",
        Verb::Ack,
        Who::new(Some("sun.hao"), None),
        t0() + Duration::seconds(90),
        &mut r,
    )
    .unwrap();
    let r = tick(&mut e, t0() + Duration::minutes(10));
    let told: Vec<_> = r
        .outbox
        .iter()
        .filter(|n| {
            n.step.as_deref() == Some("switch-to-backup") && n.subject.contains("ESCALATION")
        })
        .collect();
    assert!(!told.is_empty(), "{:?}", r.outbox);
    let name = &e.loaded.config.people["sun.hao"].name;
    for n in told {
        assert!(
            n.body.contains(&format!("acknowledged by {name} at "))
                && n.body.contains("not yet marked done"),
            "{}",
            n.body
        );
    }
    // A step nobody acknowledged says nothing of the kind.
    let other: Vec<_> = r
        .outbox
        .iter()
        .filter(|n| n.step.as_deref() == Some("manual-vouchers"))
        .collect();
    assert!(!other.is_empty());
    assert!(other.iter().all(|n| !n.body.contains("acknowledged by")));
}

#[test]
fn a_timer_that_passed_long_ago_fires_once_and_is_marked_late() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    let r = tick(&mut e, t0() + Duration::hours(1));
    let sw: Vec<_> = r
        .history
        .iter()
        .filter(|h| h.detail.starts_with("step switch-to-backup"))
        .collect();
    assert_eq!(sw.len(), 2, "one escalation and one overdue: {sw:?}");
    assert!(
        sw.iter().all(|h| h.detail.contains("(late: due at")),
        "{sw:?}"
    );
    assert!(tick(&mut e, t0() + Duration::hours(2)).history.is_empty());
}

#[test]
fn acknowledgement_records_the_response_time_and_stops_nothing_else() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    let mut r = Round::default();
    e.step_action(
        1,
        "switch-to-backup",
        Verb::Ack,
        Who::new(Some("sun.hao"), None),
        t0() + Duration::seconds(90),
        &mut r,
    )
    .unwrap();
    let sw = step(&e, 1, "switch-to-backup");
    assert_eq!(
        (sw.state, sw.response_seconds, sw.by.as_deref()),
        (StepState::Acknowledged, Some(90.0), Some("sun.hao"))
    );
    let again = e.step_action(
        1,
        "switch-to-backup",
        Verb::Ack,
        Who::new(None, None),
        t0(),
        &mut r,
    );
    assert!(matches!(again, Err(ActionError::Conflict(_))));
    e.step_action(
        1,
        "switch-to-backup",
        Verb::Done,
        Who::new(Some("sun.hao"), Some("on backup")),
        t0() + Duration::minutes(4),
        &mut r,
    )
    .unwrap();
    assert_eq!(
        step(&e, 1, "switch-to-backup").response_seconds,
        Some(90.0),
        "response time is the first answer"
    );
    assert!(matches!(
        e.step_action(1, "nope", Verb::Ack, Who::new(None, None), t0(), &mut r),
        Err(ActionError::NoStep(..))
    ));
    assert!(matches!(
        e.step_action(
            1,
            "backfill-ledger",
            Verb::Ack,
            Who::new(None, None),
            t0(),
            &mut r
        ),
        Err(ActionError::Conflict(_))
    ));
}

#[test]
fn resolved_event_resolves_and_starts_follow_ups_from_then() {
    let mut e = engine();
    ingest(&mut e, vec![core_down()], t0());
    let resolved_at = t0() + Duration::minutes(40);
    let (out, _) = ingest(
        &mut e,
        vec![ev(
            "system.down",
            "sh-001",
            Status::Resolved,
            &[("system", "core-banking")],
        )],
        resolved_at,
    );
    assert_eq!(out[0].1, vec![1]);
    let inc = e.live_incident(1).unwrap();
    assert_eq!(
        (inc.status, inc.resolved_at, inc.event_count),
        (IncidentStatus::Resolved, Some(resolved_at), 2)
    );
    let bf = step(&e, 1, "backfill-ledger");
    assert_eq!(
        (bf.state, bf.deadline),
        (StepState::Notified, Some(resolved_at + Duration::hours(24)))
    );
    assert_eq!(step(&e, 1, "switch-to-backup").state, StepState::Skipped);
    // A new failure now opens a new incident.
    let (out, _) = ingest(
        &mut e,
        vec![core_down()],
        resolved_at + Duration::minutes(1),
    );
    assert_eq!(out[0].1, vec![2]);
}

#[test]
fn tier_rises_and_activates_newly_eligible_steps_only() {
    let mut e = engine();
    let conflict = |level: &str| {
        ev(
            "customer.conflict",
            "sh-002",
            Status::Firing,
            &[("conflict_level", level)],
        )
    };
    ingest(&mut e, vec![conflict("1")], t0());
    assert_eq!(step(&e, 1, "security-intervene").state, StepState::Pending);
    let (_, r) = ingest(&mut e, vec![conflict("2")], t0() + Duration::minutes(2));
    assert_eq!(e.live_incident(1).unwrap().tier, 2);
    let sec = step(&e, 1, "security-intervene");
    assert_eq!(
        (sec.state, sec.deadline),
        (StepState::Notified, Some(t0() + Duration::minutes(7)))
    );
    assert!(
        r.outbox
            .iter()
            .any(|n| n.recipient == "zhou.qiang@bank.example")
    );
    assert!(
        !r.outbox
            .iter()
            .any(|n| n.step.as_deref() == Some("preserve-evidence")),
        "tier-1 steps are not notified again"
    );
    // A lower tier never lowers it.
    ingest(&mut e, vec![conflict("1")], t0() + Duration::minutes(3));
    assert_eq!(e.live_incident(1).unwrap().tier, 2);
    // Manual resolve; the return visit is due 3 working days later (Tuesday → Friday).
    let mut r = Round::default();
    e.resolve(
        1,
        Who::new(Some("ops"), None),
        t0() + Duration::hours(1),
        &mut r,
    )
    .unwrap();
    assert_eq!(
        step(&e, 1, "return-visit").deadline,
        Some(t0() + Duration::hours(1) + Duration::days(3))
    );
    assert_eq!(step(&e, 1, "emergency-team").state, StepState::Skipped);
}

#[test]
fn roll_call_is_done_when_everyone_is_safe_and_names_the_missing() {
    let mut e = engine();
    ingest(
        &mut e,
        vec![ev("disaster.alarm", "sh-003", Status::Firing, &[])],
        t0(),
    );
    let rc = step(&e, 1, "roll-call");
    let people: Vec<String> = rc.roll_call.iter().cloned().collect();
    assert_eq!(
        people,
        ["guo.jun", "he.ping", "lin.na", "ma.chao", "xu.ming"]
    );
    let mut r = Round::default();
    for p in &people[..4] {
        e.step_action(
            1,
            "roll-call",
            Verb::Safe,
            Who::new(Some(p), None),
            t0() + Duration::minutes(3),
            &mut r,
        )
        .unwrap();
    }
    assert!(
        e.step_action(
            1,
            "roll-call",
            Verb::Safe,
            Who::new(Some("zhang.min"), None),
            t0(),
            &mut r
        )
        .is_err(),
        "not on this roll call"
    );
    assert_eq!(step(&e, 1, "roll-call").state, StepState::Notified);
    e.step_action(
        1,
        "roll-call",
        Verb::Safe,
        Who::new(Some("xu.ming"), None),
        t0() + Duration::minutes(4),
        &mut r,
    )
    .unwrap();
    assert_eq!(step(&e, 1, "roll-call").state, StepState::Done);
}

#[test]
fn unmatched_events_are_counted() {
    let mut e = engine();
    let (out, r) = ingest(
        &mut e,
        vec![ev("atm.cash_low", "sh-001", Status::Firing, &[])],
        t0(),
    );
    assert_eq!(out, vec![(1, vec![], None)]);
    assert_eq!(r.stats.unmatched, 1);
    assert!(!r.events[0].matched);
}

#[test]
fn failing_command_fails_the_step_and_escalates() {
    let mut l = loaded();
    // By id: a playbook someone adds to playbooks/ must not change the test.
    let mut pb = (**l.playbook("system-failover").unwrap()).clone();
    pb.steps[0].action = Action::Command {
        argv: vec![crate::template::Template::parse("false").unwrap()],
        timeout: std::time::Duration::from_secs(5),
    };
    let kind = pb.trigger.kind.clone();
    let labels: Vec<(String, String)> = pb.trigger.labels.clone().into_iter().collect();
    let sid = pb.steps[0].id.clone();
    l.playbooks = vec![Arc::new(pb)];
    let mut e = Engine::new(l, Vec::new(), 1, 1, t0());
    let lab: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (_, r) = ingest(
        &mut e,
        vec![ev(&kind, "sh-001", Status::Firing, &lab)],
        t0(),
    );
    assert_eq!(r.commands.len(), 1);
    assert!(
        r.commands[0]
            .env
            .contains(&("BRANCHGUARD_BRANCH".to_string(), "sh-001".to_string()))
    );
    let mut r = Round::default();
    e.command_finished(
        1,
        &sid,
        CommandOutcome {
            exit_code: Some(3),
            output: "boom".into(),
        },
        t0() + Duration::seconds(2),
        &mut r,
    );
    assert_eq!(step(&e, 1, &sid).state, StepState::Failed);
    assert!(r.history.iter().any(|h| h.what == "step.failed"));
    assert!(
        r.outbox
            .iter()
            .any(|n| n.recipient == "ops-centre" && n.subject.contains("FAILED"))
    );
}

#[test]
fn every_message_of_a_drill_incident_is_marked() {
    let mut e = engine();
    let ev = core_down();
    let m = crate::matching::match_event(&e.loaded().playbooks, &ev).remove(0);
    let mut r = Round::default();
    let iid = e.open(&m, &ev, Some((1, true)), t0(), &mut r);
    let mut t = Round::default();
    e.tick(t0() + Duration::minutes(20), &mut t);
    let all: Vec<&Notification> = r.outbox.iter().chain(t.outbox.iter()).collect();
    assert!(all.len() > 5);
    for n in all {
        assert!(n.subject.starts_with("[DRILL] "), "{}", n.subject);
        if let Some(p) = &n.payload {
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            assert_eq!(v["drill"], true);
            // The words are the row's, added when sent: stored once.
            assert!(v.get("subject").is_none() && v.get("text").is_none(), "{v}");
            assert!(n.body.contains("[DRILL]"), "{}", n.body);
        } else {
            assert!(n.body.starts_with("[DRILL] This is a drill."), "{}", n.body);
        }
    }
    // A drill incident never absorbs a real event of the same group.
    let (out, _) = ingest(&mut e, vec![core_down()], t0());
    assert_ne!(out[0].1, vec![iid]);
}

#[test]
fn overdue_and_manual_escalation_go_to_the_configured_ops_channel() {
    let mut l = loaded();
    let mut cfg = (*l.config).clone();
    let hook = cfg.webhooks["ops-centre"].clone();
    cfg.webhooks.insert("noc".into(), hook);
    cfg.ops_channel = Some("noc".into());
    l.config = std::sync::Arc::new(cfg);
    let mut e = Engine::new(l, Vec::new(), 1, 1, t0());
    let mut r = Round::default();
    e.ingest(vec![(core_down(), t0())], "test", t0(), &mut r);
    e.finish(t0(), &mut r);
    let r = tick(&mut e, t0() + Duration::minutes(15));
    let overdue_to: Vec<&str> = r
        .outbox
        .iter()
        .filter(|n| n.subject.contains("OVERDUE") && n.channel == ChannelKind::Webhook)
        .map(|n| n.recipient.as_str())
        .collect();
    // The configured ops channel, once per overdue step; ops-centre only where
    // a step itself escalates to it.
    let overdue_steps = r
        .history
        .iter()
        .filter(|h| h.what == "step.overdue")
        .count();
    assert!(overdue_steps > 0);
    assert_eq!(
        overdue_to.iter().filter(|c| **c == "noc").count(),
        overdue_steps,
        "{overdue_to:?}"
    );
    let mut r = Round::default();
    e.escalate(
        1,
        Who::new(Some("ops"), None),
        t0() + Duration::minutes(16),
        &mut r,
    )
    .unwrap();
    assert!(r.outbox.iter().any(|n| n.recipient == "noc"));
    assert!(r.outbox.iter().all(|n| n.recipient != "ops-centre"));
}

#[test]
fn an_incident_whose_playbook_was_removed_still_resolves_by_its_own_version() {
    let mut e = engine();
    let (out, _) = ingest(&mut e, vec![core_down()], t0());
    let iid = out[0].1[0];
    // The playbook is removed from the configuration; the incident keeps its version.
    let mut without = loaded();
    without.playbooks.retain(|p| p.id != "system-failover");
    e.reload(without, t0());
    let up = ev(
        "system.down",
        "sh-001",
        Status::Resolved,
        &[("system", "core-banking")],
    );
    let (out, r) = ingest(&mut e, vec![up], t0() + Duration::minutes(5));
    assert_eq!(
        out[0].1,
        vec![iid],
        "the resolved event joined its incident"
    );
    assert!(r.events[0].matched);
    let inc = r.incidents.iter().find(|i| i.id == iid).unwrap();
    assert_eq!(inc.status, IncidentStatus::Resolved);
    // A firing event of the removed playbook opens nothing.
    let (out, _) = ingest(&mut e, vec![core_down()], t0() + Duration::minutes(6));
    assert!(out[0].1.is_empty());
}

/// The failover was taken in hand but not marked done when core banking came
/// back: the record keeps it acknowledged (never "skipped"), nothing runs on
/// it any more, and the incident lives on for its 24-hour back-fill.
#[test]
fn an_acknowledged_step_stays_acknowledged_when_its_incident_resolves() {
    let mut e = engine();
    let (out, _) = ingest(&mut e, vec![core_down()], t0());
    let iid = out[0].1[0];
    let mut r = Round::default();
    e.step_action(
        iid,
        "switch-to-backup",
        Verb::Ack,
        Who::new(Some("sun.hao"), None),
        t0() + Duration::seconds(21),
        &mut r,
    )
    .unwrap();
    let up = ev(
        "system.down",
        "sh-001",
        Status::Resolved,
        &[("system", "core-banking")],
    );
    let (_, r) = ingest(&mut e, vec![up], t0() + Duration::minutes(8));
    let inc = e.live_incident(iid).expect("live: the back-fill runs");
    assert_eq!(inc.status, IncidentStatus::Resolved);
    let sw = step(&e, iid, "switch-to-backup");
    assert_eq!(sw.state, StepState::Acknowledged);
    assert!(sw.closed && !sw.open());
    assert!(
        r.history.iter().any(|h| h.what == "step.closed"
            && h.detail
                .contains("switch-to-backup: incident resolved before done")),
        "{:?}",
        r.history
    );
    assert_eq!(step(&e, iid, "backfill-ledger").state, StepState::Notified);
    // No escalation or overdue notice for the closed step, ever.
    let mut r = Round::default();
    e.tick(t0() + Duration::hours(2), &mut r);
    assert!(
        !r.outbox
            .iter()
            .any(|n| n.step.as_deref() == Some("switch-to-backup")),
        "{:?}",
        r.outbox
    );
    // And it cannot be answered any more.
    let mut r = Round::default();
    let again = e.step_action(
        iid,
        "switch-to-backup",
        Verb::Done,
        Who::new(Some("sun.hao"), None),
        t0() + Duration::hours(2),
        &mut r,
    );
    assert!(matches!(again, Err(ActionError::Conflict(m)) if m.contains("closed")));
}
