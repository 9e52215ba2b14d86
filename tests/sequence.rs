//! Steps in sequence against the real daemon: a step that waits out its
//! delay survives `kill -9` and starts on time after the restart.

mod common;

use std::time::Duration;

use common::{Daemon, Fixture, step, wait_for};

#[test]
fn a_delayed_step_survives_kill_9_and_starts_on_time() {
    let f = Fixture::engine();
    f.write(
        "playbooks/hold.yaml",
        "id: hold\nname: Hold\ntrigger: { kind: fraud.reported }\nsteps:\n  - id: freeze\n    assignee: role:it-duty\n    deadline: 1h\n  - id: hold-funds\n    after: freeze\n    assignee: branch-head\n    deadline: 1h\n  - id: release\n    after: hold-funds\n    delay: 3s\n    assignee: branch-head\n    deadline: 1h\n",
    );
    let d = Daemon::start(&f);
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"fraud.reported","branch":"br-a"}"#,
    );
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();
    let inc = d.incident(id);
    assert_eq!(step(&inc, "hold-funds")["state"], "pending");
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/steps/freeze/done"),
        r#"{"by":"it.a"}"#,
    );
    assert_eq!(code, 200, "{b}");
    assert_eq!(step(&b, "hold-funds")["state"], "notified", "{b}");
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/steps/hold-funds/done"),
        r#"{"by":"head.a"}"#,
    );
    assert_eq!(code, 200, "{b}");
    let waiting = step(&b, "release").clone();
    assert_eq!(waiting["state"], "pending", "{b}");
    let starts_at = waiting["starts_at"].as_str().unwrap().to_string();
    // The CLI says when it starts.
    let shown = f.run(&["incident", "show", &id.to_string(), "--url", &d.url]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("starts 20")),
        "{}",
        shown.stdout
    );
    let done_at = step(&b, "hold-funds")["done_at"]
        .as_str()
        .unwrap()
        .to_string();
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!((t(&starts_at) - t(&done_at)).num_milliseconds(), 3000);
    // Killed while it waits; restarted: it starts then, once.
    d.kill9();
    let d = Daemon::start(&f);
    let started = wait_for(Duration::from_secs(20), "the delayed step", || {
        let inc = d.incident(id);
        (step(&inc, "release")["state"] == "notified").then_some(inc)
    });
    let release = step(&started, "release");
    assert!(
        t(release["notified_at"].as_str().unwrap()) >= t(&starts_at),
        "{release}"
    );
    let lines = common::history(&started, "step.scheduled");
    assert_eq!(lines.len(), 1, "{started}");
    let mails = started["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["step"] == "release")
        .count();
    assert_eq!(mails, 1, "{started}");
}
