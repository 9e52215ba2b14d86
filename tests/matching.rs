//! How each bundled playbook matches events: which playbook, which tier, which group.
//! Runs the library's matching code on the bundled configuration, and the real
//! binary's `match` command on the example event files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use branchguard::event::{Event, Severity, Status};
use branchguard::matching::{Plan, match_event, plan};
use chrono::DateTime;

fn event(
    kind: &str,
    branch: &str,
    severity: Severity,
    status: Status,
    labels: &[(&str, &str)],
) -> Event {
    Event {
        kind: kind.into(),
        branch: branch.into(),
        severity,
        status,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        summary: None,
        occurred_at: DateTime::UNIX_EPOCH,
        source: "test".into(),
    }
}

#[test]
fn bundled_playbooks_match_the_expected_events() {
    use Severity::*;
    use Status::*;
    let loaded =
        branchguard::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .unwrap();
    // (event, expected [(playbook, tier, group key)])
    type Expected<'a> = Vec<(&'a str, u8, &'a str)>;
    let table: Vec<(Event, Expected)> = vec![
        (
            event(
                "system.down",
                "sh-001",
                Critical,
                Firing,
                &[("system", "core-banking")],
            ),
            vec![(
                "system-failover",
                1,
                "system-failover/branch=sh-001,system=core-banking",
            )],
        ),
        (
            event(
                "system.down",
                "sh-001",
                Major,
                Firing,
                &[("system", "core-banking")],
            ),
            vec![(
                "system-failover",
                1,
                "system-failover/branch=sh-001,system=core-banking",
            )],
        ),
        // Below the severity threshold, or another system: nothing.
        (
            event(
                "system.down",
                "sh-001",
                Minor,
                Firing,
                &[("system", "core-banking")],
            ),
            vec![],
        ),
        (
            event(
                "system.down",
                "sh-001",
                Critical,
                Firing,
                &[("system", "queue-system")],
            ),
            vec![],
        ),
        // A resolved event is matched whatever its severity, so it can close the incident.
        (
            event(
                "system.down",
                "sh-002",
                Info,
                Resolved,
                &[("system", "core-banking")],
            ),
            vec![(
                "system-failover",
                1,
                "system-failover/branch=sh-002,system=core-banking",
            )],
        ),
        (
            event(
                "customer.conflict",
                "sh-002",
                Major,
                Firing,
                &[("conflict_level", "1")],
            ),
            vec![("conflict-response", 1, "conflict-response/branch=sh-002")],
        ),
        (
            event(
                "customer.conflict",
                "sh-002",
                Major,
                Firing,
                &[("conflict_level", "2")],
            ),
            vec![("conflict-response", 2, "conflict-response/branch=sh-002")],
        ),
        (
            event(
                "customer.conflict",
                "sh-003",
                Critical,
                Firing,
                &[("conflict_level", "3")],
            ),
            vec![("conflict-response", 3, "conflict-response/branch=sh-003")],
        ),
        // No level given: the lowest tier.
        (
            event("customer.conflict", "sh-001", Minor, Firing, &[]),
            vec![("conflict-response", 1, "conflict-response/branch=sh-001")],
        ),
        (
            event(
                "disaster.alarm",
                "sh-003",
                Critical,
                Firing,
                &[("hazard", "flood")],
            ),
            vec![(
                "disaster-evacuation",
                1,
                "disaster-evacuation/branch=sh-003",
            )],
        ),
        (
            event(
                "disaster.alarm",
                "sh-003",
                Minor,
                Firing,
                &[("hazard", "flood")],
            ),
            vec![],
        ),
        (event("atm.cash_low", "sh-001", Major, Firing, &[]), vec![]),
    ];
    for (ev, want) in table {
        let got: Vec<(String, u8, String)> = match_event(&loaded.playbooks, &ev)
            .into_iter()
            .map(|m| (m.playbook.id.clone(), m.tier, m.group_key))
            .collect();
        let want: Vec<(String, u8, String)> = want
            .into_iter()
            .map(|(p, t, g)| (p.to_string(), t, g.to_string()))
            .collect();
        assert_eq!(
            got, want,
            "event {} {:?} {:?} {:?}",
            ev.kind, ev.severity, ev.status, ev.labels
        );
    }
}

#[test]
fn conflict_tiers_start_the_right_steps() {
    let loaded =
        branchguard::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .unwrap();
    let pb = loaded.playbook("conflict-response").unwrap();
    let active = |tier| -> Vec<String> {
        plan(pb, tier, DateTime::UNIX_EPOCH, &loaded.config.calendar)
            .into_iter()
            .filter(|(_, p)| matches!(p, Plan::Active(_)))
            .map(|(s, _)| s.id.clone())
            .collect()
    };
    assert_eq!(
        active(1),
        [
            "preserve-evidence",
            "resolve-on-spot",
            "close-complaint",
            "public-opinion-report"
        ]
    );
    assert!(
        active(2).contains(&"security-intervene".to_string())
            && !active(2).contains(&"emergency-team".to_string())
    );
    assert!(
        active(3).contains(&"emergency-team".to_string())
            && active(3).contains(&"involve-ops-centre".to_string())
    );
}

#[test]
fn match_command_on_the_example_events() {
    let f = common::Fixture::bundled();
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events");
    for name in [
        "core-down.json",
        "core-restored.json",
        "conflict-tier2.json",
        "typhoon.yaml",
    ] {
        let file = events.join(name);
        let out = f.run(&[
            "match",
            file.to_str().unwrap(),
            "--at",
            "2026-11-24T09:00:00+08:00",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        insta::assert_snapshot!(name, out.stdout);
    }
}

#[test]
fn core_down_names_failover_with_a_15_minute_switchover() {
    let f = common::Fixture::bundled();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events/core-down.json");
    let out = f.run(&[
        "match",
        file.to_str().unwrap(),
        "--at",
        "2026-11-24T09:00:00+08:00",
    ]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("switch-to-backup"))
        .unwrap_or_default();
    assert!(
        out.stdout.contains("playbook system-failover"),
        "{}",
        out.stdout
    );
    assert!(
        line.contains("due 2026-11-24 09:15:00 +08:00 (in 15m)"),
        "{line}"
    );
}

#[test]
fn match_rejects_a_bad_event_file_with_its_location() {
    let f = common::Fixture::bundled();
    f.write("bad.json", "{ \"kind\": \"system.down\",\n  \"branch\": \"sh-001\",\n  \"severity\": \"disastrous\" }\n");
    let out = f.run(&["match", "bad.json"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("bad.json:3:15: severity: unknown variant `disastrous`"),
        "{}",
        out.stderr
    );
    f.write(
        "unknown-branch.json",
        "{ \"kind\": \"system.down\", \"branch\": \"xx-404\" }",
    );
    let out = f.run(&["match", "unknown-branch.json"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("[0].branch: unknown branch `xx-404`"),
        "{}",
        out.stderr
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let f = common::Fixture::bundled();
    // Far more output than a pipe buffers, so the writes must meet the closed end.
    let one = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events/core-down.json"),
    )
    .unwrap();
    f.write(
        "many.json",
        &format!("[{}]", vec![one.trim(); 500].join(",")),
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("branchguard"))
        .current_dir(f.dir.path())
        .args(["match", "many.json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
}
