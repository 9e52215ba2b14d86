//! The bundled plans, run by the real daemon with their durations cut to
//! seconds and email to a real SMTP server: the fraud plan's hold starts
//! only when the freeze is done and its release comes due when the hold
//! ends; a complex complaint's progress update recurs and stops when the
//! complaint is closed.

mod common;

use std::time::Duration;

use common::sinks::SmtpServer;
use common::{Daemon, Fixture, holds_for, step, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// The bundled network with email to `smtp` and `edit` applied to a bundled
/// playbook (its durations cut to seconds).
fn bundled(smtp: &SmtpServer, playbook: &str, edits: &[(&str, &str)]) -> Fixture {
    let f = Fixture::bundled();
    f.set_notify(&format!(
        "notify:\n  digest: 0s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {}, security: none, timeout: 5s }}\n  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n    lobby-display: {{ url: \"http://127.0.0.1:9/a\" }}\n    queue-caller: {{ url: \"http://127.0.0.1:9/b\" }}\n",
        smtp.port
    ));
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:9700", "listen: 127.0.0.1:0"),
    );
    let path = format!("playbooks/{playbook}.yaml");
    let mut text = std::fs::read_to_string(f.path(&path)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{playbook}: no `{from}`");
        text = text.replace(from, to);
    }
    f.write(&path, &text);
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

fn subjects(smtp: &SmtpServer, to: &str, having: &str) -> Vec<String> {
    smtp.to(to)
        .iter()
        .map(|m| m.subject())
        .filter(|s| s.contains(having))
        .collect()
}

#[test]
fn the_fraud_plans_hold_waits_for_the_freeze_and_its_release_for_the_hold() {
    let smtp = SmtpServer::start();
    let f = bundled(&smtp, "telecom-fraud", &[("delay: 3d", "delay: 3s")]);
    let d = Daemon::start(&f);
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"fraud.reported","branch":"sh-001","summary":"card skimmer found on ATM 2","labels":{"account":"6222-0210-7788"}}"#,
    );
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();
    // Wang Fang, operations supervisor at sh-001: the freeze now, not the hold.
    wait_for(WAIT, "the freeze", || {
        (!subjects(
            &smtp,
            "wang.fang@bank.example",
            "Freeze the affected accounts",
        )
        .is_empty())
        .then_some(())
    });
    let inc = d.incident(id);
    assert_eq!(step(&inc, "hold-funds")["state"], "pending");
    assert!(subjects(&smtp, "wang.fang@bank.example", "Hold the disputed funds").is_empty());
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/steps/freeze-accounts/done"),
        r#"{"by":"wang.fang"}"#,
    );
    assert_eq!(code, 200, "{b}");
    wait_for(WAIT, "the hold, once the freeze is done", || {
        (!subjects(&smtp, "wang.fang@bank.example", "Hold the disputed funds").is_empty())
            .then_some(())
    });
    // Legal affairs (a contact) told, in the plan's words.
    let legal = wait_for(WAIT, "legal affairs", || {
        smtp.to("legal@bank.example").into_iter().next()
    });
    assert!(
        legal.text().contains("the disputed funds are held 3 days"),
        "{}",
        legal.text()
    );
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/steps/hold-funds/done"),
        r#"{"by":"wang.fang"}"#,
    );
    assert_eq!(code, 200, "{b}");
    let held_at = step(&b, "hold-funds")["done_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(step(&b, "release-or-extend-hold")["state"], "pending");
    // Zhang Min, branch head: the release comes due when the hold ends.
    let release = wait_for(WAIT, "the release, when the hold ends", || {
        let inc = d.incident(id);
        (step(&inc, "release-or-extend-hold")["state"] == "notified").then_some(inc)
    });
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let started = step(&release, "release-or-extend-hold")["notified_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        (t(&started) - t(&held_at)).num_milliseconds() >= 3000,
        "{held_at} → {started}"
    );
    wait_for(WAIT, "the release mail", || {
        (!subjects(
            &smtp,
            "zhang.min@bank.example",
            "release the funds or extend",
        )
        .is_empty())
        .then_some(())
    });
}

#[test]
fn a_complex_complaints_progress_update_recurs_and_stops_when_it_is_closed() {
    let smtp = SmtpServer::start();
    let f = bundled(
        &smtp,
        "complaint-handling",
        &[
            ("every: 48h", "every: 2s"),
            ("    deadline: 4h\n", "    deadline: 1s\n"),
        ],
    );
    let d = Daemon::start(&f);
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"complaint.filed","branch":"sh-001","summary":"wrong fee charged twice","labels":{"case":"C-1","complexity":"complex"}}"#,
    );
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();
    // Li Wei, lobby manager at sh-001: the first update at once, the second 2 s later.
    let updates = || {
        subjects(
            &smtp,
            "li.wei@bank.example",
            "Tell the customer how the case stands",
        )
        .into_iter()
        .filter(|s| s.starts_with("ACTION"))
        .count()
    };
    wait_for(WAIT, "two progress updates", || {
        (updates() >= 2).then_some(())
    });
    let inc = d.incident(id);
    assert_eq!(
        step(&inc, "progress-update#1")["state"],
        "overdue",
        "missed #1 stays overdue"
    );
    assert!(step(&inc, "progress-update#2")["notified_at"].is_string());
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/resolve"),
        r#"{"by":"zhang.min"}"#,
    );
    assert_eq!(code, 200, "{b}");
    let sent = updates();
    // Closed: no more updates; the survey starts.
    holds_for(Duration::from_secs(3), "no update after closing", || {
        updates() == sent
    });
    let inc = d.incident(id);
    assert_eq!(step(&inc, "satisfaction-survey")["state"], "notified");
    assert_eq!(step(&inc, "progress-update")["state"], "skipped");
}
