//! The real daemon on a free loopback port with a temporary data directory:
//! intake, matching, tiers, resolution, timers, restart after `kill -9`,
//! concurrent intake, bad input and the audit log.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Daemon, Fixture, history, step, wait_for};
use serde_json::{Value, json};

const CORE_DOWN: &str = r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"},"summary":"core down"}"#;

fn at(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .to_utc()
}

#[test]
fn events_open_attach_raise_tier_resolve_and_unmatched_are_listed() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);

    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["incidents"], json!([1]));
    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(
        (code, &body["incidents"]),
        (202, &json!([1])),
        "the same event joins the open incident"
    );
    let inc = d.incident(1);
    assert_eq!(inc["playbook"], "failover");
    assert_eq!(inc["event_count"], 2);
    assert_eq!(inc["group"], json!({"branch": "br-a", "system": "core"}));
    assert_eq!(step(&inc, "switch")["state"], "notified");
    assert_eq!(history(&inc, "incident.opened").len(), 1);

    // Tier 1, then tier 2 on the same group: the tier-2 step starts.
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"customer.conflict","branch":"br-a","labels":{"conflict_level":"1"}}"#,
    );
    let conflict = body["incidents"][0].as_i64().unwrap();
    assert_eq!(step(&d.incident(conflict), "security")["state"], "pending");
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"customer.conflict","branch":"br-a","labels":{"conflict_level":"2"}}"#,
    );
    assert_eq!(body["incidents"], json!([conflict]));
    let inc = d.incident(conflict);
    assert_eq!(inc["tier"], 2);
    assert_eq!(step(&inc, "security")["state"], "notified");
    assert_eq!(step(&inc, "security")["assignee"], "role:security");

    // A resolved event resolves the auto-resolving incident and starts the follow-up.
    let (code, _) = d.post(
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-a","status":"resolved","labels":{"system":"core"}}"#,
    );
    assert_eq!(code, 202);
    let inc = d.incident(1);
    assert_eq!(inc["status"], "resolved");
    assert_eq!(step(&inc, "backfill")["state"], "notified");
    let deadline = at(&step(&inc, "backfill")["deadline"]);
    assert_eq!(
        deadline - at(&inc["resolved_at"]),
        chrono::Duration::hours(1),
        "counted from resolution"
    );

    // Unmatched events are stored and listed.
    let (code, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"atm.cash_low","branch":"br-b"}"#,
    );
    assert_eq!((code, &body["incidents"]), (202, &json!([])));
    let unmatched = d.get("/api/v1/events?matched=false");
    let items = unmatched["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{unmatched}");
    assert_eq!(items[0]["kind"], "atm.cash_low");
    assert_eq!(
        d.get("/api/v1/incidents?status=open")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let listed = d.get("/api/v1/incidents?playbook=failover");
    assert_eq!(listed["items"][0]["id"], 1);
    let scrape = || d.metrics();
    // The open-incident gauge is recounted at most once a second.
    let metrics = wait_for(
        std::time::Duration::from_secs(10),
        "the open-incident gauge",
        || {
            let m = scrape();
            m.contains("branchguard_incidents_open{playbook=\"conflict\",tier=\"2\"} 1")
                .then_some(m)
        },
    );
    assert!(
        metrics.contains("branchguard_events_unmatched_total 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("branchguard_incidents_open{playbook=\"failover\""),
        "{metrics}"
    );
}

#[test]
fn escalation_and_overdue_happen_at_the_configured_times() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let inc = wait_for(Duration::from_secs(15), "the overdue mark", || {
        let inc = d.incident(1);
        (step(&inc, "switch")["state"] == "overdue").then_some(inc)
    });
    let opened = at(&inc["opened_at"]);
    let esc = history(&inc, "step.escalated");
    assert_eq!(esc.len(), 1, "{inc}");
    let esc_after = (at(&esc[0]["at"]) - opened).num_milliseconds();
    assert!(
        (2000..10_000).contains(&esc_after),
        "escalated {esc_after} ms after opening, configured 2s"
    );
    // The history names who was told, then why, in a sentence of its own.
    let told = esc[0]["detail"].as_str().unwrap();
    assert!(
        told.contains("escalation to Head A <head.a@bank.example>")
            && told.ends_with("after it started"),
        "{told}"
    );
    let overdue = history(&inc, "step.overdue");
    assert_eq!(overdue.len(), 1);
    let told = overdue[0]["detail"].as_str().unwrap();
    assert!(
        told.contains("overdue notice to ")
            && told.ends_with(": The deadline of this step has passed."),
        "{told}"
    );
    let overdue_after = (at(&overdue[0]["at"]) - opened).num_milliseconds();
    assert!(
        (4000..12_000).contains(&overdue_after) && esc_after < overdue_after,
        "overdue {overdue_after} ms after opening, configured 4s (escalated at {esc_after} ms)"
    );
    // Both are in the outbox: the escalation to the branch head and the ops centre,
    // the overdue mark to the ops centre once more.
    let outbox = inc["outbox"].as_array().unwrap();
    let to = |recipient: &str, word: &str| {
        outbox
            .iter()
            .filter(|n| {
                n["recipient"] == recipient && n["subject"].as_str().unwrap().contains(word)
            })
            .count()
    };
    assert_eq!(to("head.a@bank.example", "ESCALATION"), 1, "{outbox:?}");
    assert_eq!(to("ops-centre", "ESCALATION"), 1);
    assert_eq!(to("ops-centre", "OVERDUE"), 1);
    // Overdue also reaches the owner and the step's escalation targets by email.
    assert_eq!(to("it.a@bank.example", "OVERDUE"), 1, "{outbox:?}");
    assert_eq!(to("head.a@bank.example", "OVERDUE"), 1, "{outbox:?}");
    // The command step ran, with the incident in its environment, and is done.
    let check = step(&inc, "check");
    assert_eq!(check["state"], "done", "{inc}");
    let finished = history(&inc, "command.finished");
    assert!(
        finished[0]["detail"]
            .as_str()
            .unwrap()
            .contains("checked branch br-a for incident 1 (system core)"),
        "{finished:?}"
    );
}

#[test]
fn kill_9_and_restart_resume_incidents_and_timers_without_repeats() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"customer.conflict","branch":"br-a","labels":{"conflict_level":"2"}}"#,
    );
    assert_eq!(body["incidents"], json!([2]));
    let (code, _) = d.post(
        "/api/v1/incidents/2/steps/calm/ack",
        r#"{"by":"head.a","note":"on my way"}"#,
    );
    assert_eq!(code, 200);
    let before = d.incident(1);
    let before_conflict = d.incident(2);
    d.kill9();

    // Let both timers of `switch` (2s escalation, 4s deadline) pass while the daemon is down.
    let deadline = at(&step(&before, "switch")["deadline"]);
    wait_for(Duration::from_secs(10), "the deadline to pass", || {
        (branchguard::clock::now() > deadline + chrono::Duration::seconds(1)).then_some(())
    });

    let d = Daemon::start(&f);
    let after = wait_for(Duration::from_secs(10), "the missed timers to fire", || {
        let inc = d.incident(1);
        (step(&inc, "switch")["state"] == "overdue").then_some(inc)
    });
    assert_eq!(after["opened_at"], before["opened_at"]);
    assert_eq!(after["event_count"], before["event_count"]);
    assert_eq!(
        step(&after, "switch")["deadline"],
        step(&before, "switch")["deadline"],
        "absolute deadlines survive"
    );
    let esc = history(&after, "step.escalated");
    assert_eq!(esc.len(), 1, "{after}");
    assert!(
        esc[0]["detail"].as_str().unwrap().contains("(late: due at"),
        "{esc:?}"
    );
    assert_eq!(history(&after, "step.overdue").len(), 1);
    let conflict = d.incident(2);
    assert_eq!(step(&conflict, "calm")["state"], "acknowledged");
    assert_eq!(
        step(&conflict, "calm")["response_seconds"],
        step(&before_conflict, "calm")["response_seconds"]
    );
    assert_eq!(step(&conflict, "calm")["by"], "head.a");
    // The incident still takes events: the same group attaches.
    let (_, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(body["incidents"], json!([1]));
    let outbox_before = d.incident(1)["outbox"].as_array().unwrap().len();
    d.kill9();

    // A second restart repeats nothing.
    let d = Daemon::start(&f);
    let again = d.incident(1);
    assert_eq!(history(&again, "step.escalated").len(), 1);
    assert_eq!(history(&again, "step.overdue").len(), 1);
    assert_eq!(again["outbox"].as_array().unwrap().len(), outbox_before);
    assert_eq!(again["event_count"], 2);
}

#[test]
fn a_thousand_events_from_eight_concurrent_clients_are_all_stored() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let url = d.url.clone();
    let threads: Vec<_> = (0..8)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut ids = Vec::new();
                for batch in 0..5 {
                    let events: Vec<Value> = (0..25)
                        .map(|i| {
                            let branch = if i % 2 == 0 { "br-a" } else { "br-b" };
                            json!({"kind": "load.test", "branch": branch, "labels": {"client": c.to_string(), "n": format!("{batch}-{i}")}})
                        })
                        .collect();
                    let r = http.post(format!("{url}/api/v1/events")).json(&events).send().unwrap();
                    assert_eq!(r.status().as_u16(), 202);
                    let body: Value = r.json().unwrap();
                    assert_eq!(body["accepted"], 25);
                    ids.extend(body["events"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()));
                }
                ids
            })
        })
        .collect();
    let mut accepted: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    accepted.sort_unstable();
    assert_eq!(accepted.len(), 1000);
    accepted.dedup();
    assert_eq!(accepted.len(), 1000, "every event got its own id");

    // Kill -9 straight away: a 202 means stored.
    d.kill9();
    let d = Daemon::start(&f);
    let stored: Vec<i64> = d
        .all_ids("/api/v1/events?kind=load.test")
        .into_iter()
        .collect();
    assert_eq!(stored, accepted);
}

#[test]
fn bad_input_gets_400_naming_the_field_and_stores_nothing_of_it() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            r#"{"kind":"system.down","branch":"br-a""#,
            None,
            "malformed JSON",
        ),
        (
            r#"{"kind":"system.down","branch":"zz-9"}"#,
            Some("branch"),
            "unknown branch `zz-9`",
        ),
        (
            r#"{"kind":"system.down","branch":"br-a","severity":"bad"}"#,
            Some("severity"),
            "unknown variant `bad`",
        ),
        (
            r#"{"kind":"system.down","branch":"br-a","labels":{"system":1}}"#,
            Some("labels.system"),
            "invalid type",
        ),
        (
            r#"{"kind":"system.down","branch":"br-a","occurred_at":"yesterday"}"#,
            Some("occurred_at"),
            "",
        ),
        (
            r#"{"kind":"system.down","branch":"br-a","sevrity":"major"}"#,
            Some("sevrity"),
            "unknown field `sevrity`",
        ),
        (r#"{"branch":"br-a"}"#, None, "missing field `kind`"),
        (
            r#"[{"kind":"a","branch":"br-a"},{"kind":"b","branch":"br-a","status":"maybe"}]"#,
            Some("[1].status"),
            "unknown variant",
        ),
        (
            r#"[{"kind":"a","branch":"br-a"},{"kind":"b","branch":"nowhere"}]"#,
            Some("[1].branch"),
            "unknown branch",
        ),
        ("[]", None, "no events"),
    ];
    for (body, field, msg) in cases {
        let (code, answer) = d.post("/api/v1/events", body);
        assert_eq!(code, 400, "{body} → {answer}");
        assert_eq!(answer["field"].as_str(), *field, "{body} → {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(msg),
            "{body} → {answer}"
        );
    }
    // Nothing of a refused request was stored, and the daemon still serves.
    assert_eq!(d.get("/api/v1/events")["items"], json!([]));
    assert_eq!(d.get("/healthz")["status"], "ok");
    let (code, _) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202);
    let (code, answer) = d.post(
        "/api/v1/incidents/1/steps/switch/ack",
        r#"{"by":"nobody.known"}"#,
    );
    assert_eq!((code, answer["field"].as_str()), (400, Some("by")));
    let (code, _) = d.post("/api/v1/incidents/1/steps/nope/ack", "");
    assert_eq!(code, 404);
    let (code, _) = d.post("/api/v1/incidents/99/resolve", "");
    assert_eq!(code, 404);
    let r = d
        .http
        .get(format!("{}/api/v1/incidents?limit=5000", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn alertmanager_webhook_maps_alerts_to_events() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let firing = json!({"version": "4", "status": "firing", "receiver": "branchguard", "alerts": [
        {"status": "firing", "labels": {"alertname": "CoreDown", "kind": "system.down", "branch": "br-b", "severity": "critical", "system": "core"},
         "annotations": {"summary": "core banking down"}, "startsAt": "2026-11-24T09:00:00+08:00"}]});
    let (code, body) = d.post("/api/v1/alertmanager", &firing.to_string());
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    let inc = d.incident(id);
    assert_eq!(
        (inc["branch"].as_str(), inc["summary"].as_str()),
        (Some("br-b"), Some("core banking down"))
    );
    assert_eq!(inc["labels"]["alertname"], "CoreDown");
    let mut resolved = firing.clone();
    resolved["alerts"][0]["status"] = json!("resolved");
    d.post("/api/v1/alertmanager", &resolved.to_string());
    assert_eq!(d.incident(id)["status"], "resolved");
    // A bad alert is refused on its own (Alertmanager does not retry a 4xx, so
    // refusing the payload would lose its good alerts); it is kept visible.
    let (code, body) = d.post(
        "/api/v1/alertmanager",
        r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}"#,
    );
    assert_eq!(
        (code, body["rejected"][0]["field"].as_str()),
        (202, Some("alerts[0].labels.branch")),
        "{body}"
    );
    // A payload that is not Alertmanager's is refused whole.
    let (code, body) = d.post("/api/v1/alertmanager", r#"{"version":"3","alerts":[]}"#);
    assert_eq!((code, body["field"].as_str()), (400, Some("version")));
}

#[test]
fn audit_verify_passes_then_names_the_altered_row() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    d.post("/api/v1/incidents/1/steps/switch/ack", r#"{"by":"it.a"}"#);
    d.post("/api/v1/incidents/1/resolve", r#"{"by":"head.a"}"#);
    // A refused alert is stored with its reason: its row agrees with it.
    let (code, body) = d.post(
        "/api/v1/alertmanager",
        r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}"#,
    );
    assert_eq!(
        (code, body["rejected"].as_array().map(Vec::len)),
        (202, Some(1))
    );
    assert!(d.stop().success(), "SIGTERM ends the daemon cleanly");
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("audit log ok:"), "{}", out.stdout);

    let db = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 5, "{n} audit rows");
    db.execute("UPDATE audit SET by = 'someone.else' WHERE seq = 4", [])
        .unwrap();
    drop(db);
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("BROKEN at row 4"), "{}", out.stdout);
}

#[test]
fn cli_client_commands_drive_a_running_daemon() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let url = d.url.clone();
    let out = f.run(&[
        "event",
        "--url",
        &url,
        "--kind",
        "system.down",
        "--branch",
        "br-a",
        "--severity",
        "critical",
        "--label",
        "system=core",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("accepted 1 event(s); incidents: #1"),
        "{}",
        out.stdout
    );
    let out = f.run(&["incidents", "--open", "--url", &url]);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("1 ") && l.contains("failover") && l.contains("br-a")),
        "{}",
        out.stdout
    );
    let out = f.run(&["ack", "1", "switch", "--by", "it.a", "--url", &url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("switch") && l.contains("acknowledged") && l.contains("it.a")),
        "{}",
        out.stdout
    );
    // Nobody acts anonymously: without tokens, an action names its person.
    let out = f.run(&["resolve", "1", "--url", &url]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("`by` must be a person id"), "{out:?}");
    let out = f.run(&["resolve", "1", "--by", "head.a", "--url", &url]);
    assert!(
        out.stdout.contains("resolved (follow-up running) at br-a"),
        "{}",
        out.stdout
    );
    let out = f.run(&["incident", "show", "1", "--url", &url]);
    assert!(out.stdout.contains("incident.resolved"), "{}", out.stdout);
    let out = f.run(&[
        "event",
        "--url",
        &url,
        "--kind",
        "system.down",
        "--branch",
        "nowhere",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("unknown branch `nowhere`") && out.stderr.contains("(field branch)"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_daemon_refuses_to_start_on_invalid_config() {
    let f = Fixture::engine();
    f.write(
        "playbooks/broken.yaml",
        "id: broken\nname: B\ntrigger: { kind: x }\nsteps:\n  - { id: a, deadline: whenever }\n",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("playbooks/broken.yaml:5:24: steps.a.deadline: invalid duration `whenever`"),
        "{}",
        out.stderr
    );
}

#[test]
fn match_names_the_open_incident_an_event_would_join() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    f.write("core-down.json", CORE_DOWN);
    let out = f.run(&["match", "core-down.json"]);
    assert!(
        out.stdout
            .contains("would open a new incident for group failover/branch=br-a,system=core"),
        "{}",
        out.stdout
    );
    d.post("/api/v1/events", CORE_DOWN);
    let out = f.run(&["match", "core-down.json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("would join open incident #1 (no new notifications) of group failover/branch=br-a,system=core"), "{}", out.stdout);
}

#[test]
fn reload_keeps_running_incidents_on_their_version_and_refuses_bad_files() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let first = d.incident(1);
    assert_eq!(first["steps"].as_array().unwrap().len(), 3);

    // A new version of the playbook: one more step.
    let pb = std::fs::read_to_string(f.path("playbooks/failover.yaml")).unwrap();
    f.write(
        "playbooks/failover.yaml",
        &format!("{pb}  - {{ id: tell-boss, assignee: branch-head, deadline: 1h }}\n"),
    );
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 200, "{body}");
    let status = d.get("/api/v1/status");
    let version = status["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "failover")
        .unwrap()["version"]
        .clone();
    assert_ne!(version, first["playbook_version"]);
    assert_eq!(status["last_reload"]["ok"], true);

    // The running incident keeps its version and its steps, even through a restart.
    d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(d.incident(1)["steps"].as_array().unwrap().len(), 3);
    assert_eq!(d.incident(1)["playbook_version"], first["playbook_version"]);
    d.kill9();
    let d = Daemon::start(&f);
    assert_eq!(d.incident(1)["steps"].as_array().unwrap().len(), 3);
    d.post(
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-a","status":"resolved","labels":{"system":"core"}}"#,
    );
    assert_eq!(step(&d.incident(1), "backfill")["state"], "notified");
    // A new incident takes the new version.
    let (_, body) = d.post("/api/v1/events", CORE_DOWN);
    let second = d.incident(body["incidents"][0].as_i64().unwrap());
    assert_eq!(second["playbook_version"], version);
    assert_eq!(step(&second, "tell-boss")["state"], "notified");

    // A broken file is refused with its location; the previous set keeps running.
    f.write("playbooks/failover.yaml", "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - { id: a, deadline: 5 minutes please }\n");
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("playbooks/failover.yaml:5:24: steps.a.deadline: invalid duration"),
        "{body}"
    );
    let status = d.get("/api/v1/status");
    assert_eq!(status["last_reload"]["ok"], false);
    assert_eq!(
        status["playbooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "failover")
            .unwrap()["version"],
        version
    );
    let (_, body) = d.post("/api/v1/events", r#"{"kind":"system.down","branch":"br-b","severity":"critical","labels":{"system":"core"}}"#);
    let third = d.incident(body["incidents"][0].as_i64().unwrap());
    assert_eq!(
        third["playbook_version"], version,
        "the previous set still matches"
    );

    // SIGHUP takes the same path.
    f.write("playbooks/failover.yaml", &pb);
    std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_for(Duration::from_secs(10), "the SIGHUP reload", || {
        let s = d.get("/api/v1/status");
        (s["last_reload"]["trigger"] == "SIGHUP").then_some(s)
    });
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(
        status["playbooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "failover")
            .unwrap()["version"],
        first["playbook_version"]
    );
}

#[test]
fn the_daemon_stops_rather_than_run_on_without_its_engine() {
    let f = Fixture::engine();
    let mut d = Daemon::start_with_env(&f, &[("BRANCHGUARD_FAILPOINT", "engine-panic")]);
    d.post("/api/v1/events", CORE_DOWN);
    let r = d
        .http
        .post(format!("{}/api/v1/events", d.url))
        .header("content-type", "application/json")
        .body(r#"{"kind":"failpoint.panic","branch":"br-a"}"#)
        .send();
    assert!(
        r.map(|r| !r.status().is_success()).unwrap_or(true),
        "the request that crashed the engine is not acknowledged"
    );
    let status = wait_for(Duration::from_secs(20), "the daemon to exit", || {
        d.child.try_wait().ok().flatten()
    });
    assert!(
        !status.success(),
        "a failed engine is a failed daemon: {status:?}"
    );
    // A restart resumes from the store: the incident accepted before is there.
    drop(d);
    let d = Daemon::start(&f);
    assert_eq!(d.incident(1)["status"], "open");
}

fn healthz(d: &Daemon) -> (u16, serde_json::Value) {
    let r = d
        .http
        .get(format!("{}/healthz", d.url))
        .send()
        .expect("GET /healthz");
    (r.status().as_u16(), r.json().unwrap_or_default())
}

#[test]
fn a_store_that_fails_is_a_503_and_unhealthy_and_the_daemon_serves_again_once_it_clears() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let (code, _) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202);
    assert_eq!(healthz(&d).0, 200);

    // Another process holds the database's write lock (a stuck backup job, a
    // forgotten sqlite3 session): a fault of ours, not of the caller.
    let lock = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let other = CORE_DOWN.replace("\"br-a\"", "\"br-b\"");
    let (code, body) = d.post("/api/v1/events", &other);
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("locked"),
        "the answer names the fault: {body}"
    );
    let (code, body) = d.post("/api/v1/incidents/1/steps/switch/ack", r#"{"by":"it.a"}"#);
    assert_eq!(code, 503, "an action is not blamed on its sender: {body}");
    // A one-click link meets the same fault: 503, never recorded as a
    // refused link, and the link still works once the store does.
    let link = common::access::sign_link(
        &f,
        1,
        "switch",
        "it.a",
        branchguard::engine::LinkAction::Ack,
        common::access::in_an_hour(),
    );
    let click = || {
        d.http
            .post(format!("{}/ack/{link}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(click(), 503);
    let (code, health) = healthz(&d);
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["store"].as_str().unwrap().contains("locked"),
        "{health}"
    );

    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    wait_for(Duration::from_secs(20), "healthz to recover", || {
        (healthz(&d).0 == 200).then_some(())
    });
    let (code, body) = d.post("/api/v1/events", &other);
    assert_eq!(code, 202, "{body}");
    // Nothing of the refused requests was half-kept: two events, and the
    // acknowledgement that got a 503 did not happen.
    let events = d.get("/api/v1/events");
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
    assert!(step(&d.incident(1), "switch")["acknowledged_at"].is_null());
    assert!(
        history(&d.incident(1), "link.refused").is_empty(),
        "{}",
        d.incident(1)
    );
    assert_eq!(click(), 200, "the link was not used up by the fault");
    let (code, _) = d.post("/api/v1/incidents/1/steps/switch/ack", r#"{"by":"it.a"}"#);
    assert_eq!(code, 409, "acknowledged once, by the link");
}

/// A mail the server took while the database was locked: its outcome is
/// kept until the store takes it, and the mail is not sent again meanwhile
/// (it went out again every time the worker looked, for the whole outage).
#[test]
fn a_message_delivered_while_the_store_fails_is_sent_once() {
    let f = Fixture::engine();
    let reserved = common::sinks::free_port();
    let port = reserved.port;
    f.set_notify(&format!(
        "notify:\n  digest: 0s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {port}, security: none, timeout: 5s }}\n  retry: {{ initial: 200ms, max: 1s, horizon: 1h }}\n  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n"
    ));
    let d = Daemon::start(&f);
    let (code, _) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202);
    wait_for(
        Duration::from_secs(30),
        "an attempt failing while the mail server is down",
        || {
            d.metrics()
                .contains(r#"branchguard_notifications_total{channel="email",outcome="retry"}"#)
                .then_some(())
        },
    );
    let lock = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let smtp = common::sinks::SmtpServer::start_on(reserved);
    wait_for(Duration::from_secs(30), "a mail", || {
        (!smtp.mails().is_empty()).then_some(())
    });
    let ids = || -> Vec<String> {
        smtp.mails()
            .iter()
            .map(|m| m.header("Message-ID").unwrap_or_default())
            .collect()
    };
    let once = |ids: &[String]| {
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        distinct.len() == ids.len()
    };
    // Three of the store's 2 s waits for its lock, each followed by the
    // worker's next look.
    common::holds_for(
        Duration::from_secs(7),
        "each mail once while the store fails",
        || once(&ids()),
    );
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    // Then each mail's outcome is stored, once.
    wait_for(Duration::from_secs(30), "the outcomes stored", || {
        let inc = d.incident(1);
        let mails = history(&inc, "notification.delivered")
            .iter()
            .filter(|l| {
                l["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("email")
            })
            .count();
        (mails == ids().len()).then_some(())
    });
    let sent = ids();
    assert!(once(&sent), "{sent:?}");
}

#[test]
fn a_database_removed_under_the_daemon_is_refused_rather_than_written_to_a_deleted_file() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    assert_eq!(d.post("/api/v1/events", CORE_DOWN).0, 202);
    for name in ["branchguard.db", "branchguard.db-wal", "branchguard.db-shm"] {
        let _ = std::fs::remove_file(f.path(&format!("data/{name}")));
    }
    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("removed or replaced"),
        "{body}"
    );
    let (code, health) = healthz(&d);
    assert_eq!(code, 503, "{health}");
}

#[test]
fn a_storm_of_repeats_is_counted_not_listed_in_the_history() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    assert_eq!(d.post("/api/v1/events", CORE_DOWN).0, 202);
    let batch: Vec<Value> = (0..1000)
        .map(|_| serde_json::from_str(CORE_DOWN).unwrap())
        .collect();
    let batch = Value::Array(batch).to_string();
    for _ in 0..10 {
        let (code, body) = d.post("/api/v1/events", &batch);
        assert_eq!(code, 202, "{body}");
    }
    let raw = d
        .http
        .get(format!("{}/api/v1/incidents/1", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(raw.len() < 50_000, "incident JSON is {} bytes", raw.len());
    let inc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(inc["event_count"], 10_001);
    let repeats = &inc["attached"]["system.down firing"];
    assert_eq!(repeats["count"], 10_000, "{inc}");
    assert!(repeats["first_event"].as_i64() < repeats["last_event"].as_i64());
    assert_eq!(history(&inc, "event.attached").len(), 1);
    // The events themselves are all in the event list.
    let page = d.get("/api/v1/events?limit=1000");
    assert_eq!(page["items"].as_array().unwrap().len(), 1000);
    assert!(page["next"].is_i64());
}

/// Processes whose command line is exactly `argv`, from /proc.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
        })
        .collect()
}

#[test]
fn a_timed_out_command_leaves_no_process_of_its_group_behind() {
    let f = Fixture::engine();
    // Numbers of our own, so other runs cannot be mistaken for ours.
    let a = (std::process::id() % 1000 + 5000).to_string();
    let b = (std::process::id() % 1000 + 7000).to_string();
    f.write(
        "playbooks/hang.yaml",
        &format!("id: hang\nname: Hang\ntrigger: {{ kind: test.hang }}\nsteps:\n  - id: run\n    action: {{ command: [\"sh\", \"-c\", \"sleep {a} & sleep {b}\"], timeout: 1s }}\n    deadline: 1h\n"),
    );
    let d = Daemon::start(&f);
    let (code, _) = d.post("/api/v1/events", r#"{"kind":"test.hang","branch":"br-a"}"#);
    assert_eq!(code, 202);
    wait_for(Duration::from_secs(10), "both sleeps to run", || {
        (!processes(&["sleep", &a]).is_empty() && !processes(&["sleep", &b]).is_empty())
            .then_some(())
    });
    let inc = wait_for(Duration::from_secs(20), "the command to time out", || {
        let inc = d.incident(1);
        (!history(&inc, "command.finished").is_empty()).then_some(inc)
    });
    let detail = history(&inc, "command.finished")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(detail, "step run: timed out after 1s");
    assert_eq!(step(&inc, "run")["state"], "failed");
    // Killed with the group: gone at once, not whenever sleep would have ended.
    wait_for(Duration::from_secs(5), "the group to be gone", || {
        (processes(&["sleep", &a]).is_empty() && processes(&["sleep", &b]).is_empty()).then_some(())
    });
}

/// **Invariant:** no process started for a step outlives its step's
/// command: what a script leaves running when it exits is killed with its
/// group, and so is a command still running when the daemon stops.
#[test]
fn a_command_that_exits_or_a_daemon_that_stops_leaves_no_process_behind() {
    let f = Fixture::engine();
    let left = (std::process::id() % 1000 + 9000).to_string();
    let running = (std::process::id() % 1000 + 11000).to_string();
    f.write(
        "playbooks/leave.yaml",
        &format!("id: leave\nname: Leave\ntrigger: {{ kind: test.leave }}\nsteps:\n  - id: run\n    action: {{ command: [\"sh\", \"-c\", \"sleep {left} & exit 0\"], timeout: 1m }}\n    deadline: 1h\n"),
    );
    f.write(
        "playbooks/long.yaml",
        &format!("id: long\nname: Long\ntrigger: {{ kind: test.long }}\nsteps:\n  - id: run\n    action: {{ command: [\"sh\", \"-c\", \"sleep {running}\"], timeout: 1h }}\n    deadline: 1h\n"),
    );
    let d = Daemon::start(&f);
    assert_eq!(
        d.post("/api/v1/events", r#"{"kind":"test.leave","branch":"br-a"}"#)
            .0,
        202
    );
    let inc = wait_for(Duration::from_secs(20), "the command to finish", || {
        let inc = d.incident(1);
        (!history(&inc, "command.finished").is_empty()).then_some(inc)
    });
    assert_eq!(step(&inc, "run")["state"], "done", "{inc}");
    wait_for(
        Duration::from_secs(5),
        "what it left behind to be gone",
        || processes(&["sleep", &left]).is_empty().then_some(()),
    );
    assert_eq!(
        d.post("/api/v1/events", r#"{"kind":"test.long","branch":"br-a"}"#)
            .0,
        202
    );
    wait_for(Duration::from_secs(10), "the long command to run", || {
        (!processes(&["sleep", &running]).is_empty()).then_some(())
    });
    d.stop();
    wait_for(
        Duration::from_secs(5),
        "the long command to be gone with the daemon",
        || processes(&["sleep", &running]).is_empty().then_some(()),
    );
}

#[test]
fn listening_is_said_only_once_the_store_is_open_and_a_new_database_is_announced() {
    // A data directory that cannot be created: no `listening`, an error, exit 1.
    let f = Fixture::engine();
    f.write("data", "not a directory");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stdout.contains("listening"), "{out:?}");
    assert!(out.stderr.contains("data"), "{out:?}");

    // A first start creates the database and says so loudly; a restart does not.
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    wait_for(Duration::from_secs(10), "both warnings", || {
        let log = d.log();
        (log.contains("created a new, empty database") && log.contains("created a new link secret"))
            .then_some(())
    });
    d.stop();
    let d = Daemon::start(&f);
    assert_eq!(d.get("/healthz")["status"], "ok");
    assert!(!d.log().contains("created a new"), "{}", d.log());
}

#[test]
fn the_cli_shows_names_zoned_times_and_no_raw_control_characters() {
    let f = Fixture::engine();
    f.write(
        "playbooks/evacuate.yaml",
        "id: evacuate\nname: Evacuate\ntrigger: { kind: disaster.alarm }\nresolve: manual\nsteps:\n  - id: roll-call\n    action: { roll_call: role:staff }\n    deadline: 1h\n",
    );
    let d = Daemon::start(&f);
    // Event text with an escape sequence (it would recolour or retitle a
    // terminal). A NUL is refused at intake, with its field.
    let (code, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"disaster.alarm","branch":"br-a","summary":"fire on floor 2\u0000"}"#,
    );
    assert_eq!((code, body["field"].as_str()), (400, Some("summary")));
    let (code, _) = d.post(
        "/api/v1/events",
        r#"{"kind":"disaster.alarm","branch":"br-a","summary":"fire \u001b]0;pwned\u0007 on floor 2"}"#,
    );
    assert_eq!(code, 202);
    d.post(
        "/api/v1/incidents/1/steps/roll-call/safe",
        r#"{"by":"it.a"}"#,
    );
    let out = f.run(&["incident", "show", "1", "--url", &d.url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !out.stdout.contains('\u{1b}')
            && !out.stdout.contains('\0')
            && !out.stdout.contains('\u{7}'),
        "raw control characters reached the terminal: {:?}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r"fire \u{1b}]0;pwned\u{7} on floor 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("missing: Guard A (guard.a), Head A (head.a)"),
        "{}",
        out.stdout
    );
    // Times carry their zone (the bank's, Asia/Shanghai).
    assert!(out.stdout.contains(" +08:00"), "{}", out.stdout);
    let help = f.run(&["event", "--help"]);
    assert!(
        help.stdout
            .contains("[possible values: critical, major, minor, info]"),
        "{}",
        help.stdout
    );
    let help = f.run(&["incidents", "--help"]);
    assert!(
        help.stdout.contains("Only open incidents"),
        "{}",
        help.stdout
    );
    // A note given with resolve is kept, not dropped.
    let out = f.run(&[
        "resolve",
        "1",
        "--by",
        "head.a",
        "--note",
        "everyone out",
        "--url",
        &d.url,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let resolved = history(&d.incident(1), "incident.resolved")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(resolved.ends_with(": everyone out"), "{resolved}");
}
