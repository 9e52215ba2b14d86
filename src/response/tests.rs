//! Every figure of a row against numbers worked out by hand, with the
//! bundled failover playbook and an injected clock.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::engine::{Engine, Round, Verb, Who};
use crate::event::{Event, Severity, Status};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

fn core(status: Status, at: DateTime<Utc>) -> (Event, DateTime<Utc>) {
    let e = Event {
        kind: "system.down".into(),
        branch: "sh-001".into(),
        severity: Severity::Critical,
        status,
        labels: [("system".to_string(), "core-banking".to_string())].into(),
        summary: None,
        occurred_at: at,
        source: "test".into(),
    };
    (e, at)
}

/// Three failovers at sh-001, one an hour apart: the switch acknowledged
/// after 30 s, 90 s and 10 s, done after 5, 20 and 8 minutes (the second
/// past its 15-minute deadline, escalated and overdue), each incident
/// resolved after 10, 30 and 9 minutes.
fn three_failovers() -> Vec<Incident> {
    let loaded =
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .unwrap();
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, t0());
    let mut seen: BTreeMap<i64, Incident> = BTreeMap::new();
    let mut keep = |r: &mut Round, e: &mut Engine| {
        e.finish(t0(), r);
        for i in r.incidents.drain(..) {
            seen.insert(i.id, i);
        }
    };
    for (k, (ack, done, resolve, late)) in [
        (30, 300, 600, false),
        (90, 1200, 1800, true),
        (10, 480, 540, false),
    ]
    .into_iter()
    .enumerate()
    {
        let start = t0() + Duration::hours(k as i64);
        let mut r = Round::default();
        let out = e.ingest(vec![core(Status::Firing, start)], "test", start, &mut r);
        let id = out[0].1[0];
        keep(&mut r, &mut e);
        let mut r = Round::default();
        e.step_action(
            id,
            "switch-to-backup",
            Verb::Ack,
            Who::new(Some("sun.hao"), None),
            start + Duration::seconds(ack),
            &mut r,
        )
        .unwrap();
        keep(&mut r, &mut e);
        if late {
            let mut r = Round::default();
            e.tick(start + Duration::minutes(16), &mut r);
            keep(&mut r, &mut e);
        }
        let mut r = Round::default();
        e.step_action(
            id,
            "switch-to-backup",
            Verb::Done,
            Who::new(Some("sun.hao"), None),
            start + Duration::seconds(done),
            &mut r,
        )
        .unwrap();
        keep(&mut r, &mut e);
        let mut r = Round::default();
        e.resolve(
            id,
            Who::new(Some("zhang.min"), None),
            start + Duration::seconds(resolve),
            &mut r,
        )
        .unwrap();
        keep(&mut r, &mut e);
    }
    seen.into_values().collect()
}

#[test]
fn a_rows_figures_are_the_hand_computed_percentiles() {
    let incidents = three_failovers();
    assert_eq!(incidents.len(), 3);
    let rows = rows(&incidents);
    let sw = rows
        .iter()
        .find(|r| r.step == "switch-to-backup" && r.branch == "sh-001")
        .unwrap();
    assert_eq!(
        (
            sw.playbook.as_str(),
            sw.incidents,
            sw.started,
            sw.acknowledged,
            sw.done
        ),
        ("system-failover", 3, 3, 3, 3)
    );
    // Acknowledged after 10, 30, 90 s: nearest rank p50 is the 2nd, p90 the 3rd.
    assert_eq!(
        sw.time_to_acknowledge,
        Stat {
            count: 3,
            p50: Some(30.0),
            p90: Some(90.0),
            max: Some(90.0)
        }
    );
    assert_eq!(
        sw.time_to_done,
        Stat {
            count: 3,
            p50: Some(480.0),
            p90: Some(1200.0),
            max: Some(1200.0)
        }
    );
    assert_eq!(
        sw.time_to_resolve,
        Stat {
            count: 3,
            p50: Some(600.0),
            p90: Some(1800.0),
            max: Some(1800.0)
        }
    );
    assert_eq!(sw.deadlines_met, Some(2.0 / 3.0));
    // Closed by the resolution before its deadline: not missed, not counted.
    // Past it and marked overdue first (the second incident): missed.
    let vouchers = |k: usize| {
        incidents[k]
            .steps
            .iter()
            .find(|s| s.id == "manual-vouchers")
            .unwrap()
            .deadline_met()
    };
    assert_eq!(
        (vouchers(0), vouchers(1), vouchers(2)),
        (None, Some(false), None)
    );
    let mv = rows.iter().find(|r| r.step == "manual-vouchers").unwrap();
    assert_eq!(
        (mv.started, mv.deadlines_met, mv.overdue),
        (3, Some(0.0), 1)
    );
    assert_eq!((sw.overdue, sw.escalations), (1, 1));
    // The same figures in the other two formats.
    let csv = csv(&rows);
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let line: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("system-failover,switch-to-backup,sh-001,"))
        .unwrap()
        .split(',')
        .collect();
    let col = |name: &str| line[head.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("time_to_acknowledge_p50"), "30");
    assert_eq!(col("time_to_done_p90"), "1200");
    assert_eq!(col("time_to_resolve_max"), "1800");
    assert_eq!(col("deadlines_met"), format!("{}", 2.0 / 3.0));
    assert_eq!((col("overdue"), col("escalations")), ("1", "1"));
    let md = markdown("Response report", &rows);
    assert!(
        md.contains("| system-failover | switch-to-backup | sh-001 | 3 | 3 | 3 | 3 | 30s / 1m30s / 1m30s (n=3) | 8m / 20m / 20m (n=3) | 10m / 30m / 30m (n=3) | 66.7% | 1 | 1 |"),
        "{md}"
    );
}

#[test]
fn nearest_rank_percentiles_of_small_sets() {
    assert_eq!(nearest_rank(&[], 0.5), None);
    assert_eq!(nearest_rank(&[7.0], 0.9), Some(7.0));
    let ten: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(nearest_rank(&ten, 0.5), Some(5.0));
    assert_eq!(nearest_rank(&ten, 0.9), Some(9.0));
    assert_eq!(nearest_rank(&ten, 1.0), Some(10.0));
}

#[test]
fn csv_quotes_what_needs_quoting() {
    assert_eq!(field("a,b"), "\"a,b\"");
    assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(field("plain"), "plain");
}

/// A repeating step's occurrences count under their step's row; the
/// incident once (the bundled complaint plan: an update every 48 hours).
#[test]
fn occurrences_of_a_repeating_step_count_under_their_step() {
    let loaded =
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .unwrap();
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, t0());
    let mut r = Round::default();
    let ev = Event {
        kind: "complaint.filed".into(),
        branch: "sh-002".into(),
        severity: Severity::Major,
        status: Status::Firing,
        labels: [
            ("case".to_string(), "C-1".to_string()),
            ("complexity".to_string(), "complex".to_string()),
        ]
        .into(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.tick(t0(), &mut r);
    let who = Who::new(Some("liu.yang"), None);
    let at = t0() + Duration::minutes(30);
    e.step_action(1, "progress-update#1", Verb::Done, who, at, &mut r)
        .unwrap();
    e.tick(t0() + Duration::hours(48), &mut r);
    e.resolve(1, who, t0() + Duration::hours(49), &mut r)
        .unwrap();
    let inc = e.live_incident(1).unwrap().clone();
    let row = rows(&[inc])
        .into_iter()
        .find(|r| r.step.starts_with("progress-update"))
        .unwrap();
    assert_eq!(
        (row.step.as_str(), row.incidents, row.started, row.done),
        ("progress-update", 1, 2, 1)
    );
    assert_eq!(row.time_to_done.max, Some(1800.0));
}
