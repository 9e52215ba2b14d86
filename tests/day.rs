//! A day at the operations centre, against the real daemon: what a newcomer
//! met in twenty minutes of using it (the evacuation order in a digest, a
//! perfect drill scoring 50, follow-up work out of sight, times written
//! three ways, a log full of colour codes, a gateway throttled in a storm,
//! metrics missing until something happened).

mod common;

use std::time::Duration;

use common::sinks::SmtpServer;
use common::{Daemon, Fixture, history, step, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CORE_DOWN: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;
const CORE_UP: &str = r#"{"kind":"system.down","branch":"br-a","severity":"critical","status":"resolved","labels":{"system":"core"}}"#;

/// During a person's digest window, an escalation to them is its own mail,
/// sent at once (within 2 s of its time), its subject leading with
/// ESCALATION in at most 78 characters.
#[test]
fn an_escalation_in_a_digest_window_arrives_alone_and_at_once() {
    let smtp = SmtpServer::start();
    let f = Fixture::engine();
    f.set_notify(&format!(
        "notify:\n  digest: 60s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {}, security: none, timeout: 5s }}\n  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n",
        smtp.port
    ));
    // Something for the branch head first: their digest window opens.
    f.write(
        "playbooks/heads-up.yaml",
        "id: heads-up\nname: Heads-up\ntrigger: { kind: test.heads-up }\nsteps:\n  - id: look\n    title: Look at the queue\n    assignee: branch-head\n    deadline: 1h\n",
    );
    let d = Daemon::start(&f);
    d.post(
        "/api/v1/events",
        r#"{"kind":"test.heads-up","branch":"br-a","labels":{"n":"1"}}"#,
    );
    wait_for(WAIT, "the head's first mail", || {
        smtp.to("head.a@bank.example").into_iter().next()
    });
    // A second one now waits for the window ...
    d.post(
        "/api/v1/events",
        r#"{"kind":"test.heads-up","branch":"br-b","labels":{"n":"2"}}"#,
    );
    d.post(
        "/api/v1/events",
        r#"{"kind":"test.heads-up","branch":"br-a","labels":{"n":"3"}}"#,
    );
    // ... but the failover's escalation (after 2 s) does not.
    let posted = branchguard::clock::Stopwatch::start();
    d.post("/api/v1/events", CORE_DOWN);
    let esc = wait_for(WAIT, "the escalation mail", || {
        smtp.to("head.a@bank.example")
            .into_iter()
            .find(|m| m.subject().contains("ESCALATION"))
    });
    let took = posted.seconds();
    assert!(
        took < 2.0 + 2.0,
        "the escalation came {took}s after the event (due at 2s)"
    );
    assert_eq!(esc.subject(), "ESCALATION Branch A: switch");
    assert!(esc.subject().chars().count() <= 78);
    assert_eq!(esc.messages(), 1, "alone, not in a digest");
    // The held one is still held: only the first and the escalation so far.
    assert_eq!(smtp.to("head.a@bank.example").len(), 2);
}

/// Every subject leads with what it asks and fits a phone, however long the
/// step's title.
#[test]
fn subjects_lead_with_what_they_ask_in_78_characters() {
    let f = Fixture::bundled();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:9700", "listen: 127.0.0.1:0"),
    );
    let d = Daemon::start(&f);
    let (code, body) = d.post(
        "/api/v1/drills/evacuation-half-yearly/run",
        r#"{"branch":"sh-001"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let iid = body["incidents"][0].as_i64().unwrap();
    let rows = d.incident(iid)["outbox"].as_array().unwrap().clone();
    assert!(rows.len() > 5, "{rows:?}");
    for r in &rows {
        let s = r["subject"].as_str().unwrap();
        assert!(s.chars().count() <= 78, "{s}");
        assert!(s.starts_with("[DRILL] "), "{s}");
        let ask = s.trim_start_matches("[DRILL] ");
        assert!(
            [
                "ACTION ",
                "NOTICE ",
                "ROLL CALL ",
                "ESCALATION ",
                "OVERDUE "
            ]
            .iter()
            .any(|a| ask.starts_with(a)),
            "{s}"
        );
    }
    let evacuate = rows
        .iter()
        .find(|r| r["step"] == "evacuate")
        .expect("the evacuation order");
    assert_eq!(evacuate["urgent"], true, "a critical step is urgent");
    assert!(
        evacuate["subject"]
            .as_str()
            .unwrap()
            .starts_with("[DRILL] ACTION Shanghai Pudong: Evacuate customers and staff"),
        "{evacuate}"
    );
}

/// The bundled half-yearly evacuation drill, answered at once, scores 100
/// and ends at once: its 4-hour, 24-hour and 72-hour steps are left out.
#[test]
fn the_bundled_evacuation_drill_answered_at_once_scores_100() {
    let f = Fixture::bundled();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:9700", "listen: 127.0.0.1:0"),
    );
    let d = Daemon::start(&f);
    let (code, body) = d.post(
        "/api/v1/drills/evacuation-half-yearly/run",
        r#"{"branch":"sh-001"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let run = body["run"].as_i64().unwrap();
    let iid = body["incidents"][0].as_i64().unwrap();
    let inc = d.incident(iid);
    let staff: Vec<String> = step(&inc, "roll-call")["roll_call"]["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let someone = staff[0].clone();
    for s in ["evacuate", "secure-cash"] {
        let (code, body) = d.post(
            &format!("/api/v1/incidents/{iid}/steps/{s}/done"),
            &json!({ "by": someone }).to_string(),
        );
        assert_eq!(code, 200, "{s}: {body}");
    }
    for p in &staff {
        let (code, body) = d.post(
            &format!("/api/v1/incidents/{iid}/steps/roll-call/safe"),
            &json!({ "by": p }).to_string(),
        );
        assert_eq!(code, 200, "{p}: {body}");
    }
    let done = wait_for(WAIT, "the run's score", || {
        let r = d.get(&format!("/api/v1/drill-runs/{run}"));
        (r["status"] == "finished").then_some(r)
    });
    assert_eq!(done["score"], 100.0, "{done}");
    assert_eq!(done["passed"], true);
    let out = f.run(&["drill", "report", &run.to_string(), "--url", &d.url]);
    assert!(out.stdout.contains("100.0"), "{}", out.stdout);
    // A left-out step shows no target nor response to be measured by (it
    // started, so "not started" would be wrong).
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("| mutual-aid | - | - | left out |")),
        "{}",
        out.stdout
    );
    let out = f.run(&["drill", "runs", "--url", &d.url]);
    assert!(
        out.stdout.lines().any(
            |l| l.starts_with(&format!("{run:<5} evacuation-half-yearly")) && l.contains("100.0")
        ),
        "{}",
        out.stdout
    );
}

/// After the core system is back, the 24-hour back-fill keeps the incident
/// in view (status=follow-up, the CLI says so), and the acknowledged but
/// unfinished switch reads acknowledged, never skipped.
#[test]
fn follow_up_work_stays_in_view_and_an_acknowledged_step_is_not_skipped() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let (code, body) = d.post("/api/v1/incidents/1/steps/switch/ack", r#"{"by":"it.a"}"#);
    assert_eq!(code, 200, "{body}");
    d.post("/api/v1/events", CORE_UP);
    let listed = d.get("/api/v1/incidents?status=follow-up");
    let ids: Vec<i64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1], "{listed}");
    let inc = d.incident(1);
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["follow_up"], true);
    assert_eq!(step(&inc, "switch")["state"], "acknowledged");
    assert_eq!(step(&inc, "backfill")["state"], "notified");
    assert!(
        history(&inc, "step.closed")[0]["detail"]
            .as_str()
            .unwrap()
            .contains("incident resolved before done")
    );
    let out = f.run(&["incidents", "--open", "--url", &d.url]);
    assert!(
        out.stdout
            .contains("1 resolved incident(s) with follow-up steps still running"),
        "{out:?}"
    );
    let out = f.run(&["incidents", "--status", "follow-up", "--url", &d.url]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("follow-up")),
        "{out:?}"
    );
    let out = f.run(&["incident", "show", "1", "--url", &d.url]);
    assert!(
        out.stdout
            .starts_with("Incident #1 failover — resolved (follow-up running) at br-a"),
        "{out:?}"
    );
    // Done later, from the follow-up: it leaves the list.
    let (code, _) = d.post(
        "/api/v1/incidents/1/steps/backfill/done",
        r#"{"by":"it.a"}"#,
    );
    assert_eq!(code, 200);
    let listed = d.get("/api/v1/incidents?status=follow-up");
    assert_eq!(listed["items"], json!([]));
}

/// Times for people are written one way: the branch's zone with its offset,
/// to the second; durations as 7m32s.
#[test]
fn times_and_durations_are_written_one_way() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    // The ops-centre webhook of the fixture has nobody listening: a retry
    // line with its next attempt.
    let inc = wait_for(WAIT, "a retry", || {
        let inc = d.incident(1);
        (!history(&inc, "notification.retry").is_empty()).then_some(inc)
    });
    // No line says a time in UTC or as RFC 3339 (that is for JSON fields).
    let rfc3339 = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:").unwrap();
    for h in inc["history"].as_array().unwrap() {
        let detail = h["detail"].as_str().unwrap();
        assert!(
            !detail.contains("+00:00") && !rfc3339.is_match(detail),
            "{detail}"
        );
    }
    let retry = history(&inc, "notification.retry")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let at = retry.rsplit("next attempt at ").next().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&at[..19], "%Y-%m-%d %H:%M:%S").is_ok()
            && at.ends_with("+08:00"),
        "{retry}"
    );
    let (code, _) = d.post("/api/v1/incidents/1/steps/switch/ack", r#"{"by":"it.a"}"#);
    assert_eq!(code, 200);
    let out = f.run(&["incident", "show", "1", "--url", &d.url]);
    assert!(out.stdout.contains("+08:00"), "{}", out.stdout);
    assert!(!out.stdout.contains("+00:00"), "{}", out.stdout);
    // The silence the CLI sets is said in the same zone as the list says it.
    let out = f.run(&[
        "silence",
        "add",
        "--match",
        "branch=br-b",
        "--for",
        "1h",
        "--by",
        "head.b",
        "--url",
        &d.url,
    ]);
    assert!(out.stdout.trim_end().ends_with("+08:00"), "{out:?}");
}

/// The log written to a file (not a terminal) has no colour codes, and
/// `--log-format json` writes one JSON object a line.
#[test]
fn the_log_has_no_colour_codes_off_a_terminal_and_json_for_shippers() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    wait_for(WAIT, "a warning in the log", || {
        (!d.log().is_empty()).then_some(())
    });
    assert!(!d.log().contains('\u{1b}'), "{:?}", d.log());
    d.stop();
    let f = Fixture::engine();
    let d = Daemon::start_with(&f, &["--log-format", "json"], &[]);
    wait_for(WAIT, "a line in the log", || {
        (!d.log().is_empty()).then_some(())
    });
    for line in d.log().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

/// An alarm gateway posting single events through a storm is not
/// throttled: its ingest token's default rate is far above it, and so is a
/// loopback client's without tokens.
#[test]
fn a_gateway_posting_single_events_in_a_storm_is_not_throttled() {
    for tokens in [false, true] {
        let f = Fixture::engine();
        let token = "an-ingest-token-for-the-storm-01";
        if tokens {
            let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
            f.write(
                "branchguard.yaml",
                &format!("{cfg}auth:\n  tokens:\n    - {{ name: gateway, role: ingest, token_env: BG_DAY_GATEWAY }}\n"),
            );
        }
        let d = Daemon::start_with_env(&f, &[("BG_DAY_GATEWAY", token)]);
        let url = format!("{}/api/v1/events", d.url);
        let codes: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let url = url.clone();
                    s.spawn(move || {
                        let c = reqwest::blocking::Client::new();
                        (0..750)
                            .map(|i| {
                                let mut r = c
                                    .post(&url)
                                    .header("content-type", "application/json")
                                    .body(
                                        json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": format!("{t}-{i}")}})
                                            .to_string(),
                                    );
                                if tokens {
                                    r = r.bearer_auth(token);
                                }
                                r.send().unwrap().status().as_u16()
                            })
                            .collect::<Vec<u16>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(codes.len(), 3000);
        assert!(
            codes.iter().all(|c| *c == 202),
            "tokens {tokens}: {:?}",
            codes
                .iter()
                .filter(|c| **c != 202)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}

/// A fresh daemon exports the families whose labels the configuration
/// names at zero, and the host's gauges, from its first scrape.
#[test]
fn metrics_are_there_from_the_first_scrape() {
    let f = Fixture::engine();
    f.write(
        "drills/quiet.yaml",
        "id: quiet\nplaybook: failover\nevent: { kind: system.down, severity: critical, labels: { system: core } }\nbranches: [br-a]\n",
    );
    let d = Daemon::start(&f);
    let m = d.metrics();
    for series in [
        r#"branchguard_drill_runs_total{drill="quiet",result="passed"} 0"#,
        r#"branchguard_drill_runs_total{drill="quiet",result="missed"} 0"#,
        r#"branchguard_incidents_opened_total{drill="false",playbook="failover"} 0"#,
        r#"branchguard_steps_overdue_total{playbook="failover",step="switch"} 0"#,
        r#"branchguard_escalations_total{playbook="failover"} 0"#,
        r#"branchguard_notifications_total{channel="email",outcome="failed"} 0"#,
        r#"branchguard_requests_denied_total{reason="unauthorized"} 0"#,
    ] {
        assert!(m.lines().any(|l| l == series), "{series} missing:\n{m}");
    }
    assert!(
        m.lines()
            .any(|l| l.starts_with("branchguard_host_disk_free_bytes{")),
        "{m}"
    );
}
