//! Drills through the engine with an injected clock: scores at controlled
//! answer times, critical steps, aborts, schedules across daylight saving,
//! missed runs.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::config::{Drill, MissedPolicy};
use crate::event::{Event, Severity, Status};
use crate::schedule::Schedule;

fn loaded() -> Loaded {
    crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml")).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// A Tuesday morning in Shanghai.
fn t0() -> DateTime<Utc> {
    at("2026-11-24T09:00:00+08:00")
}

/// The bundled network with one drill changed by `f`.
fn with_drill(id: &str, f: impl FnOnce(&mut Drill)) -> Loaded {
    let mut l = loaded();
    if let Some(d) = l.drills.iter_mut().find(|d| d.id == id) {
        let mut x = (**d).clone();
        f(&mut x);
        *d = Arc::new(x);
    }
    l
}

fn engine_with(l: Loaded, now: DateTime<Utc>) -> Engine {
    Engine::new(l, Vec::new(), 1, 1, now)
}

fn act(e: &mut Engine, iid: i64, step: &str, verb: Verb, by: &str, now: DateTime<Utc>) -> Round {
    let mut r = Round::default();
    e.step_action(iid, step, verb, Who::new(Some(by), None), now, &mut r)
        .unwrap();
    e.tick(now, &mut r);
    e.finish(t0(), &mut r);
    r
}

fn tick(e: &mut Engine, now: DateTime<Utc>) -> Round {
    let mut r = Round::default();
    e.tick(now, &mut r);
    e.finish(t0(), &mut r);
    r
}

fn run(e: &mut Engine, drill: &str, branch: &str, now: DateTime<Utc>) -> (i64, i64, Round) {
    let mut r = Round::default();
    let (run, incidents) = e
        .run_drill(
            drill,
            Some(branch),
            &crate::scope::Scope::all(),
            Who::new(Some("ops"), None),
            now,
            &mut r,
        )
        .unwrap();
    e.tick(now, &mut r);
    e.finish(t0(), &mut r);
    (run, incidents[0], r)
}

/// The last state of a run as the round stored it.
fn stored(r: &Round, run: i64) -> DrillRun {
    r.drill_runs
        .iter()
        .rev()
        .find(|x| x.id == run)
        .cloned()
        .unwrap_or_else(|| panic!("run {run} not in the round"))
}

#[test]
fn a_run_is_scored_from_the_answer_times_as_the_rule_says() {
    // failover-monthly: targets switch-to-backup 10m, manual-vouchers 10m,
    // guide-customers 5m; timeout 30m.
    let mut e = engine_with(loaded(), t0());
    let (id, iid, r) = run(&mut e, "failover-monthly", "sh-001", t0());
    let started = stored(&r, id);
    assert_eq!(started.status, RunStatus::Running);
    let inc = e.live_incident(iid).unwrap();
    assert!(inc.drill && inc.rehearsal && inc.drill_run == Some(id));
    // Every message is marked; the lobby screen is recorded, not sent.
    assert!(r.outbox.iter().all(|n| n.subject.starts_with("[DRILL]")));
    assert!(!r.outbox.iter().any(|n| n.recipient == "lobby-display"));
    assert!(
        r.history
            .iter()
            .any(|h| h.detail.contains("recorded, not sent"))
    );

    // The switch is scored on done (`{ done: 10m }`): acknowledged at 21 s,
    // done at 7m34s, within its target.
    act(
        &mut e,
        iid,
        "switch-to-backup",
        Verb::Ack,
        "sun.hao",
        t0() + Duration::seconds(21),
    );
    act(
        &mut e,
        iid,
        "switch-to-backup",
        Verb::Done,
        "sun.hao",
        t0() + Duration::seconds(454),
    );
    act(
        &mut e,
        iid,
        "manual-vouchers",
        Verb::Done,
        "wang.fang",
        t0() + Duration::minutes(15),
    );
    assert!(
        e.drill_runs().any(|r| r.id == id),
        "still running until the timeout"
    );
    let r = tick(&mut e, t0() + Duration::minutes(30));
    let done = stored(&r, id);
    assert_eq!(done.status, RunStatus::Finished);
    let b = &done.branches[0];
    let credit = |s: &str| b.steps.iter().find(|x| x.id == s).unwrap().credit;
    // By hand: done at 7m34s of 10m → 100; 15m of 10m → 100 − 50·5/10 = 75; never → 0.
    assert_eq!(credit("switch-to-backup"), Some(100.0));
    let switch = b.steps.iter().find(|x| x.id == "switch-to-backup").unwrap();
    assert_eq!(switch.response_seconds, Some(454.0), "measured to done");
    assert_eq!(credit("manual-vouchers"), Some(75.0));
    assert_eq!(credit("guide-customers"), Some(0.0));
    // The follow-up never started: left out.
    assert_eq!(credit("backfill-ledger"), None);
    let by_hand = ((100.0 + 75.0 + 0.0) / 3.0_f64 * 10.0).round() / 10.0;
    assert_eq!(b.score, Some(by_hand));
    assert_eq!(done.score, Some(by_hand));
    assert_eq!(done.passed, Some(false));
    // The drill incident is closed, and its follow-up did not start.
    let r2 = &r.incidents.iter().find(|i| i.id == iid).unwrap();
    assert_eq!(r2.status, IncidentStatus::Resolved);
    assert!(
        r.stats
            .drills
            .iter()
            .any(|(d, res, _)| d == "failover-monthly" && *res == "failed")
    );
}

#[test]
fn a_late_critical_step_fails_a_run_whose_mean_passes() {
    let l = with_drill("failover-monthly", |d| d.pass_score = 70.0);
    let mut e = engine_with(l, t0());
    let (id, iid, _) = run(&mut e, "failover-monthly", "sh-002", t0());
    // switch-to-backup is critical, target 10m: answered at 25m, after 2T → 25.
    act(
        &mut e,
        iid,
        "manual-vouchers",
        Verb::Done,
        "huang.li",
        t0() + Duration::minutes(1),
    );
    act(
        &mut e,
        iid,
        "guide-customers",
        Verb::Done,
        "liu.yang",
        t0() + Duration::minutes(1),
    );
    let mut r = Round::default();
    e.step_action(
        iid,
        "switch-to-backup",
        Verb::Done,
        Who::new(Some("wu.tao"), None),
        t0() + Duration::minutes(25),
        &mut r,
    )
    .unwrap();
    e.tick(t0() + Duration::minutes(25), &mut r);
    e.finish(t0(), &mut r);
    // Every active step is done: the run ends before its timeout.
    let done = stored(&r, id);
    assert_eq!(done.status, RunStatus::Finished);
    assert_eq!(done.score, Some(75.0), "(25 + 100 + 100) / 3");
    assert_eq!(
        done.passed,
        Some(false),
        "75 ≥ 70, but the critical step was late"
    );
}

#[test]
fn a_real_incident_on_the_branch_aborts_the_drill_which_is_not_scored() {
    let mut e = engine_with(loaded(), t0());
    let (id, iid, _) = run(&mut e, "failover-monthly", "sh-001", t0());
    let real = Event {
        kind: "system.down".into(),
        branch: "sh-001".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: [("system".to_string(), "core-banking".to_string())].into(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    let mut r = Round::default();
    let out = e.ingest(
        vec![(real, t0() + Duration::minutes(2))],
        "test",
        t0() + Duration::minutes(2),
        &mut r,
    );
    e.finish(t0(), &mut r);
    assert_ne!(out[0].1, vec![iid], "the real event opens its own incident");
    let aborted = stored(&r, id);
    assert_eq!(aborted.status, RunStatus::Aborted);
    assert_eq!(aborted.score, None);
    assert!(
        aborted.branches[0]
            .note
            .as_deref()
            .unwrap()
            .contains("real incident")
    );
    assert!(r.history.iter().any(|h| h.what == "drill.aborted"));
}

#[test]
fn a_drill_never_overlaps_itself_on_a_branch() {
    let mut e = engine_with(loaded(), t0());
    run(&mut e, "failover-monthly", "sh-001", t0());
    let mut r = Round::default();
    let again = e.run_drill(
        "failover-monthly",
        Some("sh-001"),
        &crate::scope::Scope::all(),
        Who::new(Some("ops"), None),
        t0(),
        &mut r,
    );
    assert_eq!(
        again,
        Err(DrillError::AlreadyRunning("failover-monthly".into()))
    );
    // All branches: the busy one is skipped, the others start.
    let (id, incidents) = e
        .run_drill(
            "failover-monthly",
            None,
            &crate::scope::Scope::all(),
            Who::new(Some("ops"), None),
            t0(),
            &mut r,
        )
        .unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(stored(&r, id).skipped, vec!["sh-001".to_string()]);
}

fn london(schedule: &str) -> Loaded {
    let mut l = with_drill("failover-monthly", |d| {
        d.schedule = Some(Schedule::parse(schedule).unwrap());
        d.branches = crate::config::BranchSelection::List(vec!["sh-001".into()]);
    });
    let mut cfg = (*l.config).clone();
    cfg.calendar.timezone = chrono_tz::Europe::London;
    l.config = Arc::new(cfg);
    l.drills.retain(|d| d.id == "failover-monthly");
    l
}

#[test]
fn a_run_in_the_spring_gap_fires_once_just_after_it() {
    // 2026-03-29: at 01:00 GMT clocks go to 02:00 BST; 01:30 does not exist.
    let mut e = engine_with(london("0 30 1 * * *"), at("2026-03-28T12:00:00Z"));
    let due = at("2026-03-29T01:00:00Z"); // 02:00 BST, the first valid instant
    assert_eq!(e.next_due(), Some(due));
    assert!(
        tick(&mut e, due - Duration::seconds(1))
            .drill_runs
            .is_empty()
    );
    let r = tick(&mut e, due);
    let runs: Vec<_> = r
        .drill_runs
        .iter()
        .filter(|x| x.trigger == "schedule")
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_for, Some(due));
    assert_eq!(r.drill_fires, vec![("failover-monthly".to_string(), due)]);
    // The next is 01:30 BST the day after.
    assert_eq!(
        e.drill_schedule().get("failover-monthly"),
        Some(&at("2026-03-30T00:30:00Z"))
    );
}

#[test]
fn a_run_in_the_repeated_autumn_hour_fires_once() {
    // 2026-10-25: 01:30 happens at 00:30Z (BST) and again at 01:30Z (GMT).
    let mut e = engine_with(london("0 30 1 * * *"), at("2026-10-24T12:00:00Z"));
    let first = at("2026-10-25T00:30:00Z");
    assert_eq!(e.next_due(), Some(first));
    let r = tick(&mut e, first);
    assert_eq!(r.drill_fires.len(), 1);
    assert_eq!(
        e.drill_schedule().get("failover-monthly"),
        Some(&at("2026-10-26T01:30:00Z")),
        "not again at 01:30 GMT the same night"
    );
}

fn daily(policy: MissedPolicy) -> Loaded {
    let mut l = with_drill("failover-monthly", |d| {
        d.schedule = Some(Schedule::parse("0 0 10 * * *").unwrap()); // 02:00Z
        d.missed = policy;
        d.starting_deadline = std::time::Duration::from_secs(30 * 60);
        d.branches = crate::config::BranchSelection::List(vec!["sh-001".into()]);
    });
    l.drills.retain(|d| d.id == "failover-monthly");
    l
}

fn restart(l: Loaded, last_fire: DateTime<Utc>, now: DateTime<Utc>) -> (Engine, Round) {
    let mut e = engine_with(l, now);
    let mut r = Round::default();
    e.restore_drills(
        DrillState {
            running: Vec::new(),
            last_fire: [("failover-monthly".to_string(), last_fire)].into(),
            next_run: 1,
        },
        now,
        &mut r,
    );
    e.finish(t0(), &mut r);
    (e, r)
}

#[test]
fn missed_runs_are_recorded_or_run_once_within_the_starting_deadline_never_back_filled() {
    let last = at("2026-11-21T02:00:00Z");
    // Down for three days; back 10 minutes after the latest scheduled time.
    let now = at("2026-11-24T02:10:00Z");
    let (_, r) = restart(daily(MissedPolicy::Skip), last, now);
    assert_eq!(r.drill_runs.len(), 1, "one record, not one per missed day");
    assert_eq!(r.drill_runs[0].status, RunStatus::Missed);
    assert_eq!(
        r.drill_runs[0].scheduled_for,
        Some(at("2026-11-24T02:00:00Z"))
    );
    assert!(r.incidents.is_empty());

    let (e, r) = restart(daily(MissedPolicy::Run), last, now);
    let runs: Vec<_> = r
        .drill_runs
        .iter()
        .filter(|x| x.status == RunStatus::Running)
        .collect();
    assert_eq!(runs.len(), 1, "only the latest missed run fires");
    assert_eq!(runs[0].trigger, "missed-run");
    assert_eq!(r.incidents.len(), 1);
    assert_eq!(
        e.drill_schedule().get("failover-monthly"),
        Some(&at("2026-11-25T02:00:00Z"))
    );

    // Back after the starting deadline: recorded as missed, not run.
    let (_, r) = restart(daily(MissedPolicy::Run), last, at("2026-11-24T02:45:00Z"));
    assert_eq!(r.drill_runs.len(), 1);
    assert_eq!(r.drill_runs[0].status, RunStatus::Missed);
    assert!(r.incidents.is_empty());
}

#[test]
fn a_stagger_spreads_the_branches_starts_evenly() {
    let l = with_drill("failover-monthly", |d| {
        d.stagger = Some(std::time::Duration::from_secs(600));
    });
    let mut e = engine_with(l, t0());
    let mut r = Round::default();
    let (id, incidents) = e
        .run_drill(
            "failover-monthly",
            None,
            &crate::scope::Scope::all(),
            Who::new(Some("ops"), None),
            t0(),
            &mut r,
        )
        .unwrap();
    e.finish(t0(), &mut r);
    assert_eq!(incidents.len(), 1, "only the first branch starts at once");
    let run = e.drill_runs().find(|x| x.id == id).unwrap().clone();
    let starts: Vec<_> = run.branches.iter().map(|b| b.starts_at.unwrap()).collect();
    let third = Duration::seconds(200);
    assert_eq!(starts, vec![t0(), t0() + third, t0() + third * 2]);
    assert_eq!(run.branches[1].status, RunStatus::Pending);
    assert_eq!(e.next_due(), Some(t0() + third));
    let r = tick(&mut e, t0() + third);
    assert_eq!(
        r.incidents.iter().filter(|i| i.drill).count(),
        1,
        "the second branch starts"
    );
    let r = tick(&mut e, t0() + third * 2);
    let started: Vec<_> = r
        .incidents
        .iter()
        .filter(|i| i.drill)
        .map(|i| i.branch.clone())
        .collect();
    assert_eq!(started, vec!["sh-003".to_string()]);
    // Each branch has its own timeout, counted from its start.
    let run = e.drill_runs().find(|x| x.id == id).unwrap();
    assert_eq!(
        run.branches[2].ends_at,
        Some(t0() + third * 2 + Duration::minutes(30))
    );
}

#[test]
fn the_conflict_drill_climbs_to_tier_3_and_starts_the_tier_3_steps() {
    // conflict-quarterly: tier 2 (safety), then `raise` to tier 3 after 5m.
    let mut e = engine_with(loaded(), t0());
    let (id, iid, _) = run(&mut e, "conflict-quarterly", "sh-002", t0());
    let inc = e.live_incident(iid).unwrap();
    assert_eq!(inc.tier, 2);
    let pending = |e: &Engine, s: &str| {
        e.live_incident(iid)
            .unwrap()
            .steps
            .iter()
            .find(|x| x.id == s)
            .unwrap()
            .state
    };
    assert_eq!(pending(&e, "emergency-team"), StepState::Pending);
    assert_eq!(
        e.next_due().map(|d| d <= t0() + Duration::minutes(5)),
        Some(true)
    );
    let r = tick(&mut e, t0() + Duration::minutes(5));
    assert_eq!(e.live_incident(iid).unwrap().tier, 3, "raised");
    assert_eq!(pending(&e, "emergency-team"), StepState::Notified);
    assert!(r.history.iter().any(|h| h.what == "tier.raised"));
    assert!(
        r.events
            .iter()
            .any(|ev| ev.event.labels.get("conflict_level").map(String::as_str) == Some("3"))
    );
    // Once: a later tick raises nothing more.
    let again = tick(&mut e, t0() + Duration::minutes(6));
    assert!(!again.history.iter().any(|h| h.what == "tier.raised"));
    assert!(e.drill_runs().any(|r| r.id == id));
}

#[test]
fn a_sunday_night_window_holds_back_events_in_the_branch_s_own_time() {
    use crate::config::{BranchSelection, MaintenanceWindow};
    let mut l = loaded();
    let mut cfg = (*l.config).clone();
    cfg.calendar.timezone = chrono_tz::Europe::London;
    cfg.maintenance = vec![MaintenanceWindow {
        name: "core-sunday".into(),
        start: Schedule::parse("0 0 1 * * Sun").unwrap(),
        duration: std::time::Duration::from_secs(4 * 3600),
        branches: BranchSelection::List(vec!["sh-001".into()]),
        matchers: [("system".to_string(), "core-banking".to_string())].into(),
    }];
    l.config = Arc::new(cfg);
    let mut e = engine_with(l, at("2026-11-29T00:00:00Z"));
    let ev = |t: DateTime<Utc>| Event {
        kind: "system.down".into(),
        branch: "sh-001".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: [("system".to_string(), "core-banking".to_string())].into(),
        summary: None,
        occurred_at: t,
        source: "test".into(),
    };
    // Sunday 29 November 2026, London (GMT): 02:00 is inside 01:00–05:00.
    let inside = at("2026-11-29T02:00:00Z");
    let mut r = Round::default();
    let out = e.ingest(vec![(ev(inside), inside)], "test", inside, &mut r);
    assert!(out[0].1.is_empty());
    assert_eq!(
        r.events[0].silenced.as_deref(),
        Some("maintenance window core-sunday")
    );
    let after = at("2026-11-29T05:30:00Z");
    let mut r = Round::default();
    let out = e.ingest(vec![(ev(after), after)], "test", after, &mut r);
    assert_eq!(out[0].1.len(), 1, "after the window the incident opens");
}

/// A bare acknowledgement does not finish the switchover: the bundled
/// failover drill scores the switch on done.
#[test]
fn the_bundled_failover_drill_scores_the_switch_when_it_is_done_not_when_acknowledged() {
    let mut e = engine_with(loaded(), t0());
    let (id, iid, _) = run(&mut e, "failover-monthly", "sh-001", t0());
    act(
        &mut e,
        iid,
        "switch-to-backup",
        Verb::Ack,
        "sun.hao",
        t0() + Duration::seconds(21),
    );
    for s in ["manual-vouchers", "guide-customers"] {
        act(
            &mut e,
            iid,
            s,
            Verb::Done,
            "wang.fang",
            t0() + Duration::seconds(30),
        );
    }
    // Done after 2T (20m): 25, and a late critical step fails the run.
    let r = act(
        &mut e,
        iid,
        "switch-to-backup",
        Verb::Done,
        "sun.hao",
        t0() + Duration::minutes(21),
    );
    let done = stored(&r, id);
    let b = &done.branches[0];
    let switch = b.steps.iter().find(|x| x.id == "switch-to-backup").unwrap();
    assert_eq!(switch.credit, Some(25.0));
    assert_eq!(done.passed, Some(false));
}

/// A perfect evacuation drill answered at once scores 100: the 4-hour,
/// 24-hour and 72-hour steps cannot fall within its 30 minutes and are left
/// out, not scored 0, and the run ends when the rest is answered.
#[test]
fn the_bundled_evacuation_drill_answered_at_once_scores_100() {
    let mut e = engine_with(loaded(), t0());
    let (id, iid, _) = run(&mut e, "evacuation-half-yearly", "sh-001", t0());
    let at = t0() + Duration::seconds(30);
    let inc = e.live_incident(iid).unwrap().clone();
    let mut last = Round::default();
    for s in &inc.steps {
        if !s.open()
            || ["mutual-aid", "priority-payments", "damage-report"].contains(&s.id.as_str())
        {
            continue;
        }
        if s.roll_call.is_empty() {
            last = act(&mut e, iid, &s.id, Verb::Done, "xu.ming", at);
        } else {
            for p in s.roll_call.clone() {
                last = act(&mut e, iid, &s.id, Verb::Safe, &p, at);
            }
        }
    }
    let done = stored(&last, id);
    assert_eq!(
        done.status,
        RunStatus::Finished,
        "ended once answered, not at the timeout"
    );
    let b = &done.branches[0];
    for s in ["mutual-aid", "priority-payments", "damage-report"] {
        let step = b.steps.iter().find(|x| x.id == s).unwrap();
        assert!(!step.active && step.credit.is_none(), "{s} is left out");
    }
    assert_eq!(b.score, Some(100.0), "{b:?}");
    assert_eq!(done.passed, Some(true));
}

/// A drill of a plan with a repeating step scores every occurrence that
/// started during the run, each against the step's target.
#[test]
fn each_occurrence_of_a_repeating_step_in_a_drill_is_scored() {
    use crate::config::{DrillEvent, DrillTarget};
    let mut l = with_drill("failover-monthly", |d| {
        d.playbook = "complaint-handling".into();
        d.event = DrillEvent {
            kind: "complaint.filed".into(),
            severity: Severity::Major,
            labels: [
                ("complexity".to_string(), "complex".to_string()),
                ("case".to_string(), "D-1".to_string()),
            ]
            .into(),
            summary: None,
        };
        let target = |s: Option<i64>| DrillTarget {
            delay: s
                .map(|s| crate::duration::Delay::Fixed(std::time::Duration::from_secs(s as u64))),
            done: false,
        };
        d.targets = [
            ("progress-update".to_string(), target(Some(60))),
            ("close-complex".to_string(), target(None)),
            ("close-simple".to_string(), target(None)),
            ("start-conflict-response".to_string(), target(None)),
            ("satisfaction-survey".to_string(), target(None)),
        ]
        .into();
        d.timeout = std::time::Duration::from_secs(25 * 60);
        d.raise.clear();
    });
    // Every 10 minutes instead of 48 hours, so three fall in the drill.
    if let Some(p) = l
        .playbooks
        .iter_mut()
        .find(|p| p.id == "complaint-handling")
    {
        let mut x = (**p).clone();
        for s in &mut x.steps {
            if s.id == "progress-update" {
                s.every = Some(crate::duration::Delay::Fixed(
                    std::time::Duration::from_secs(600),
                ));
            }
        }
        *p = Arc::new(x);
    }
    let mut e = engine_with(l, t0());
    let (run_id, iid, _) = run(&mut e, "failover-monthly", "sh-001", t0());
    act(
        &mut e,
        iid,
        "progress-update#1",
        Verb::Ack,
        "li.wei",
        t0() + Duration::seconds(30),
    );
    tick(&mut e, t0() + Duration::minutes(10));
    act(
        &mut e,
        iid,
        "progress-update#2",
        Verb::Ack,
        "li.wei",
        t0() + Duration::minutes(10) + Duration::seconds(90),
    );
    tick(&mut e, t0() + Duration::minutes(20));
    let r = tick(&mut e, t0() + Duration::minutes(26));
    let done = stored(&r, run_id);
    let steps: Vec<(String, f64, Option<f64>)> = done.branches[0]
        .steps
        .iter()
        .filter(|s| s.active)
        .map(|s| (s.id.clone(), s.target_seconds, s.response_seconds))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("progress-update#1".to_string(), 60.0, Some(30.0)),
            ("progress-update#2".to_string(), 60.0, Some(90.0)),
            ("progress-update#3".to_string(), 60.0, None),
        ],
        "{:?}",
        done.branches[0].steps
    );
}
