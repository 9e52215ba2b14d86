//! Drills end to end: the real daemon, a real SMTP server, drills scheduled a
//! few seconds ahead, live and rehearsal runs, restarts.

mod common;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::sinks::SmtpServer;
use common::{Daemon, Fixture, history, step, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The engine fixture with email to a real SMTP server.
fn fixture(smtp_port: u16) -> Fixture {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "notify:\n",
            &format!("notify:\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n"),
        ),
    );
    f
}

fn drill(f: &Fixture, id: &str, extra: &str) {
    f.write(
        &format!("drills/{id}.yaml"),
        &format!("id: {id}\nplaybook: failover\nevent: {{ kind: system.down, severity: critical, labels: {{ system: core }} }}\ntargets: {{ switch: 10s }}\n{extra}"),
    );
}

/// A cron expression for the second `at` falls on, in Asia/Shanghai (the fixture's zone).
fn cron_at(at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&chrono_tz::Asia::Shanghai);
    format!(
        "{} {} {} * * *",
        local.second(),
        local.minute(),
        local.hour()
    )
}

fn runs(d: &Daemon, drill: &str) -> Vec<Value> {
    d.get(&format!("/api/v1/drill-runs?drill={drill}"))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn run(d: &Daemon, id: i64) -> Value {
    d.get(&format!("/api/v1/drill-runs/{id}"))
}

#[test]
fn a_drill_scheduled_seconds_ahead_fires_once_per_branch_with_drill_marked_mail() {
    let smtp = SmtpServer::start();
    let smtp_port = smtp.port;
    let f = fixture(smtp_port);
    let at = branchguard::clock::now() + chrono::Duration::seconds(10);
    drill(
        &f,
        "soon",
        &format!(
            "schedule: \"{}\"\nbranches: all\ntimeout: 1m\n",
            cron_at(at)
        ),
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    let listed = d.get("/api/v1/drills");
    let next = listed["items"][0]["next_run"].as_str().unwrap().to_string();
    assert_eq!(
        DateTime::parse_from_rfc3339(&next).unwrap().timestamp(),
        at.timestamp()
    );
    let fired = wait_for(WAIT, "the scheduled run", || {
        runs(&d, "soon").into_iter().next()
    });
    assert_eq!(fired["trigger"], "schedule");
    let branches: Vec<&str> = fired["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["branch"].as_str().unwrap())
        .collect();
    assert_eq!(branches, vec!["br-a", "br-b"], "one incident per branch");
    for who in ["it.a@bank.example", "it.b@bank.example"] {
        let mail = wait_for(WAIT, "the drill email", || smtp.to(who).into_iter().next());
        assert!(mail.subject().starts_with("[DRILL]"), "{}", mail.subject());
        assert!(mail.text().contains("This is a drill"), "{}", mail.text());
    }
    // Each of its messages is a drill's by its flag, as the API shows.
    let incident = fired["branches"][0]["incident"].as_i64().unwrap();
    let shown = d.get(&format!("/api/v1/incidents/{incident}"));
    let outbox = shown["outbox"].as_array().unwrap();
    assert!(!outbox.is_empty());
    assert!(outbox.iter().all(|o| o["drill"] == true), "{outbox:?}");
    // Once: the next time is tomorrow.
    assert_eq!(runs(&d, "soon").len(), 1);
    let listed = d.get("/api/v1/drills");
    let next =
        DateTime::parse_from_rfc3339(listed["items"][0]["next_run"].as_str().unwrap()).unwrap();
    assert!(next.to_utc() > at + chrono::Duration::hours(23), "{next}");
}

fn marker_playbook(f: &Fixture) {
    f.write(
        "playbooks/marker.yaml",
        "id: marker\nname: Marker\ntrigger: { kind: test.marker }\nsteps:\n  - id: touch\n    action: { command: [\"sh\", \"-c\", \"touch marker-{{branch}}\"], timeout: 10s }\n    deadline: 1h\n  - id: confirm\n    assignee: role:it-duty\n    deadline: 1h\n",
    );
    for (id, live) in [("rehearse", false), ("live", true)] {
        f.write(
            &format!("drills/{id}.yaml"),
            &format!("id: {id}\nplaybook: marker\nevent: {{ kind: test.marker }}\nbranches: [br-a]\nlive: {live}\n"),
        );
    }
}

#[test]
fn a_drill_that_is_not_live_never_runs_the_command_and_a_live_one_does() {
    let f = Fixture::engine();
    marker_playbook(&f);
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/drills/rehearse/run", "");
    assert_eq!(code, 202, "{body}");
    let iid = body["incidents"][0].as_i64().unwrap();
    let inc = d.incident(iid);
    assert_eq!(step(&inc, "touch")["state"], "done");
    assert!(
        history(&inc, "step.done")[0]["detail"]
            .as_str()
            .unwrap()
            .contains("command recorded, not run"),
        "{inc}"
    );
    // Give the live one the same chance, then look for both markers.
    let (code, body) = d.post("/api/v1/drills/live/run", "");
    assert_eq!(code, 202, "{body}");
    let live = body["incidents"][0].as_i64().unwrap();
    wait_for(WAIT, "the live command", || {
        (!history(&d.incident(live), "command.finished").is_empty()).then_some(())
    });
    assert!(
        f.path("marker-br-a").exists(),
        "the live drill ran the command"
    );
    std::fs::remove_file(f.path("marker-br-a")).unwrap();
    assert!(history(&d.incident(iid), "command.finished").is_empty());
    assert!(history(&d.incident(iid), "command.started").is_empty());
    assert!(!f.path("marker-br-a").exists());
}

/// A drill's events (its start, and the follow-up it raises) are audited
/// like every event: `audit verify` is clean after drills.
#[test]
fn a_drill_and_its_raised_event_leave_the_audit_log_whole() {
    let f = Fixture::engine();
    drill(
        &f,
        "raised",
        "branches: [br-a]\ntimeout: 2m\nraise:\n  - { after: 1s, labels: { crowd: growing } }\n",
    );
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/drills/raised/run", r#"{"branch":"br-a"}"#);
    assert_eq!(code, 202, "{body}");
    let iid = body["incidents"][0].as_i64().unwrap();
    wait_for(WAIT, "the raised event to join", || {
        (d.incident(iid)["event_count"].as_i64() == Some(2)).then_some(())
    });
    let events = d.get("/api/v1/events");
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
    d.stop();
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_run_goes_on_after_kill_9_and_ends_with_the_score_its_answers_earned() {
    let f = Fixture::engine();
    drill(&f, "manual", "branches: [br-a]\ntimeout: 2m\n");
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/drills/manual/run", r#"{"branch":"br-a"}"#);
    assert_eq!(code, 202, "{body}");
    let id = body["run"].as_i64().unwrap();
    let iid = body["incidents"][0].as_i64().unwrap();
    let (code, _) = d.post(
        &format!("/api/v1/incidents/{iid}/steps/switch/ack"),
        r#"{"by":"it.a"}"#,
    );
    assert_eq!(code, 200);
    d.kill9();
    let d = Daemon::start(&f);
    assert_eq!(run(&d, id)["status"], "running");
    let (code, _) = d.post(
        &format!("/api/v1/incidents/{iid}/steps/switch/done"),
        r#"{"by":"it.a"}"#,
    );
    assert_eq!(code, 200);
    let done = wait_for(WAIT, "the run to end", || {
        let r = run(&d, id);
        (r["status"] == "finished").then_some(r)
    });
    // By hand from what was stored: the acknowledgement's response time
    // against the 10s target.
    let response = step(&d.incident(iid), "switch")["response_seconds"]
        .as_f64()
        .unwrap();
    let by_hand = if response <= 10.0 {
        100.0
    } else if response <= 20.0 {
        100.0 - 50.0 * (response - 10.0) / 10.0
    } else {
        25.0
    };
    let by_hand = (by_hand * 10.0_f64).round() / 10.0;
    assert_eq!(done["score"].as_f64(), Some(by_hand), "{done}");
    assert_eq!(done["branches"][0]["steps"][0]["by"], "it.a");
    let metrics = d
        .http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let result = if done["passed"] == true {
        "passed"
    } else {
        "failed"
    };
    assert!(
        metrics.contains(&format!(
            "branchguard_drill_runs_total{{drill=\"manual\",result=\"{result}\"}} 1"
        )) && metrics.contains(&format!(
            "branchguard_drill_score{{branch=\"br-a\",drill=\"manual\"}} {by_hand}"
        )),
        "{metrics}"
    );
    // The Markdown report, from the CLI.
    let out = f.run(&["drill", "report", &id.to_string(), "--url", &d.url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("# Drill report: manual, run {id}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("| switch |"), "{}", out.stdout);
    assert!(out.stdout.contains("| it.a |"), "{}", out.stdout);
}

#[test]
fn missed_runs_while_down_are_recorded_or_run_once() {
    let f = Fixture::engine();
    // Every three seconds: one fires while the daemon is up, one while it is down.
    drill(
        &f,
        "skipper",
        "schedule: \"*/3 * * * * *\"\nbranches: [br-a]\ntimeout: 2s\nmissed: skip\n",
    );
    drill(
        &f,
        "runner",
        "schedule: \"*/3 * * * * *\"\nbranches: [br-b]\ntimeout: 2s\nmissed: run\nstarting_deadline: 1m\n",
    );
    let d = Daemon::start(&f);
    wait_for(WAIT, "a scheduled run of each", || {
        (!runs(&d, "skipper").is_empty() && !runs(&d, "runner").is_empty()).then_some(())
    });
    let next = d.get("/api/v1/drills")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["next_run"].as_str().map(str::to_string))
        .max()
        .unwrap();
    let next = DateTime::parse_from_rfc3339(&next).unwrap().to_utc();
    d.kill9();
    // Down across a scheduled time.
    wait_for(WAIT, "a scheduled time to pass", || {
        (branchguard::clock::now() > next + chrono::Duration::milliseconds(500)).then_some(())
    });
    let d = Daemon::start(&f);
    let missed = wait_for(WAIT, "the missed run", || {
        runs(&d, "skipper")
            .into_iter()
            .find(|r| r["status"] == "missed")
    });
    assert!(missed["scheduled_for"].is_string());
    let again = wait_for(WAIT, "the missed run of `runner`", || {
        runs(&d, "runner")
            .into_iter()
            .find(|r| r["trigger"] == "missed-run")
    });
    assert_eq!(again["branches"][0]["branch"], "br-b");
}

/// A run whose time runs out while the store refuses writes ends once the
/// store takes writes again: what the engine decides while rebuilding itself
/// after the fault is stored, not only held in memory.
#[test]
fn a_run_that_ends_while_the_store_is_locked_is_recorded_once_it_clears() {
    let f = Fixture::engine();
    // A target within the run, so the run waits for it and ends at its timeout.
    f.write(
        "drills/short.yaml",
        "id: short\nplaybook: failover\nevent: { kind: system.down, severity: critical, labels: { system: core } }\ntargets: { switch: 1s }\nbranches: [br-a]\ntimeout: 2s\n",
    );
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/drills/short/run", r#"{"branch":"br-a"}"#);
    assert_eq!(code, 202, "{body}");
    let id = body["run"].as_i64().unwrap();
    let ends: DateTime<Utc> = run(&d, id)["ends_at"].as_str().unwrap().parse().unwrap();
    let healthz = || {
        d.http
            .get(format!("{}/healthz", d.url))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    // Another process holds the write lock past the run's end.
    let lock = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    wait_for(WAIT, "a refused write and the run's end", || {
        (healthz() == 503 && branchguard::clock::now() > ends + chrono::Duration::milliseconds(500))
            .then_some(())
    });
    assert_eq!(run(&d, id)["status"], "running");
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    wait_for(WAIT, "the store to take writes", || {
        (healthz() == 200).then_some(())
    });
    let ended = wait_for(WAIT, "the run's end to be stored", || {
        let r = run(&d, id);
        (r["status"] != "running").then_some(r)
    });
    assert!(ended["finished_at"].is_string(), "{ended}");
}
