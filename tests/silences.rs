//! Silences and maintenance windows against the real daemon.

mod common;

use std::time::Duration;

use chrono::Timelike;
use common::{Daemon, Fixture, wait_for};
use serde_json::{Value, json};

const A: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;
const B: &str =
    r#"{"kind":"system.down","branch":"br-b","severity":"critical","labels":{"system":"core"}}"#;

fn silence(d: &Daemon, matchers: Value, secs: i64, force: bool) -> (u16, Value) {
    let end = branchguard::clock::now() + chrono::Duration::seconds(secs);
    d.post(
        "/api/v1/silences",
        &json!({"matchers": matchers, "ends_at": end.to_rfc3339(), "created_by": "head.a", "comment": "core upgrade", "force": force}).to_string(),
    )
}

fn post(d: &Daemon, ev: &str) -> Value {
    let (code, body) = d.post("/api/v1/events", ev);
    assert_eq!(code, 202, "{body}");
    body
}

#[test]
fn a_silenced_branch_opens_nothing_until_the_silence_ends_and_it_survives_a_restart() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let (code, body) = silence(
        &d,
        json!([{"name": "branch", "value": "br-a"}]),
        3600,
        false,
    );
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let held = post(&d, A);
    assert_eq!(held["incidents"], json!([]), "silenced: opens nothing");
    // The sender is told why nothing opened, not left to think nothing matched.
    assert_eq!(
        held["held_back"],
        json!([{"event": held["events"][0], "by": format!("silence {id}")}]),
        "{held}"
    );
    assert_eq!(
        post(&d, B)["incidents"].as_array().unwrap().len(),
        1,
        "another branch"
    );
    let events = d.get("/api/v1/events?branch=br-a");
    assert_eq!(events["items"][0]["silenced"], format!("silence {id}"));
    let metrics = d
        .http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("branchguard_events_silenced_total 1"),
        "{metrics}"
    );
    // Still in force after kill -9.
    d.kill9();
    let d = Daemon::start(&f);
    assert_eq!(post(&d, A)["incidents"], json!([]));
    let out = f.run(&[
        "event",
        "--kind",
        "system.down",
        "--branch",
        "br-a",
        "--severity",
        "critical",
        "--label",
        "system=core",
        "--url",
        &d.url,
    ]);
    assert!(
        out.stdout.contains("incidents: none; held back: event")
            && out.stdout.contains(&format!("by silence {id}")),
        "{out:?}"
    );
    let out = f.run(&["silence", "list", "--url", &d.url]);
    assert!(
        out.stdout.contains("branch=br-a") && out.stdout.contains("core upgrade"),
        "{out:?}"
    );
    // Ended by hand (the CLI): events open incidents again.
    let out = f.run(&[
        "silence",
        "expire",
        &id.to_string(),
        "--by",
        "head.a",
        "--url",
        &d.url,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(post(&d, A)["incidents"].as_array().unwrap().len(), 1);
}

fn silence_by(d: &Daemon, by: &str, matchers: Value, secs: i64, force: bool) -> (u16, Value) {
    let end = branchguard::clock::now() + chrono::Duration::seconds(secs);
    d.post(
        "/api/v1/silences",
        &json!({"matchers": matchers, "ends_at": end.to_rfc3339(), "created_by": by, "comment": "core upgrade", "force": force}).to_string(),
    )
}

/// A silence is judged by what it can match, not by how it is written:
/// every branch (no branch matcher, `.+`, `[^\n]+`, an alternation of every
/// branch id), every kind or every severity needs `force` and the `ops`
/// role; a branch's own person silences only their branch; a silence has a
/// maximum length. It ends by itself.
#[test]
fn a_silence_ends_by_itself_and_one_matching_everything_needs_force() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "people:\n",
            "people:\n  - { id: ops.desk, name: Ops Desk, email: ops@bank.example, roles: [ops], branches: [br-a] }\n",
        ),
    );
    let d = Daemon::start(&f);
    let m = |name: &str, value: &str, regex: bool| json!({"name": name, "value": value, "regex": regex});
    let br_a = m("branch", "br-a", false);
    for (what, matchers) in [
        ("no matcher", json!([])),
        ("a system only", json!([m("system", ".*", true)])),
        ("branch =~ .+", json!([m("branch", ".+", true)])),
        ("branch =~ [^\\n]+", json!([m("branch", "[^\n]+", true)])),
        ("every branch id", json!([m("branch", "br-a|br-b", true)])),
        (
            "every kind",
            json!([br_a.clone(), m("kind", "[^\n]+", true)]),
        ),
        (
            "every severity",
            json!([
                br_a.clone(),
                m("severity", "critical|major|minor|info", true)
            ]),
        ),
    ] {
        let (code, body) = silence_by(&d, "head.a", matchers, 60, false);
        assert_eq!(code, 400, "{what}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("force"),
            "{what}: {body}"
        );
    }
    // `force` is for the operations centre only.
    let (code, body) = silence_by(&d, "head.a", json!([]), 60, true);
    assert_eq!(
        (code, body["field"].as_str()),
        (403, Some("force")),
        "{body}"
    );
    // A branch's person silences their branch, not another.
    let (code, body) = silence_by(&d, "head.a", json!([m("branch", "br-b", false)]), 60, false);
    assert_eq!(code, 403, "{body}");
    let (code, body) = silence_by(
        &d,
        "head.a",
        json!([m("branch", "br-a|br-b", true)]),
        60,
        true,
    );
    assert_eq!(code, 403, "{body}");
    // Too long.
    let (code, body) = silence_by(&d, "head.a", json!([br_a.clone()]), 31 * 86_400, false);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("limits.silence_max"),
        "{body}"
    );
    // A length past any calendar, or a start the store could not read back:
    // a 400 naming the field, not a dropped connection.
    let (code, body) = d.post(
        "/api/v1/silences",
        &json!({"matchers": [br_a.clone()], "for": "99999999999h", "created_by": "head.a"})
            .to_string(),
    );
    assert_eq!((code, body["field"].as_str()), (400, Some("for")), "{body}");
    let (code, body) = d.post(
        "/api/v1/silences",
        &json!({"matchers": [br_a.clone()], "starts_at": "9999-12-31T23:59:59-23:59", "for": "1h", "created_by": "head.a"}).to_string(),
    );
    assert_eq!(code, 400, "{body}");
    // A pattern too long for anyone's intent, or too many matchers.
    let long = m("kind", &"(a|b)*".repeat(300), true);
    let (code, body) = silence_by(&d, "head.a", json!([br_a.clone(), long]), 60, false);
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("matchers")),
        "{body}"
    );
    let many: Vec<Value> = (0..17).map(|i| m(&format!("l{i}"), "x", false)).collect();
    let (code, body) = silence_by(&d, "head.a", json!(many), 60, false);
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("matchers")),
        "{body}"
    );
    // Unknown people are refused.
    let (code, body) = silence_by(&d, "nobody-at-all", json!([br_a.clone()]), 60, false);
    assert_eq!(code, 400, "{body}");
    // One branch and a kind: no force needed; it holds back only that.
    let (code, body) = silence_by(
        &d,
        "head.a",
        json!([br_a.clone(), m("kind", "system\\..*", true)]),
        2,
        false,
    );
    assert_eq!(code, 201, "{body}");
    let until = branchguard::clock::now() + chrono::Duration::seconds(2);
    assert_eq!(post(&d, A)["incidents"], json!([]));
    assert_eq!(post(&d, B)["incidents"].as_array().unwrap().len(), 1);
    wait_for(Duration::from_secs(10), "the silence to end", || {
        (branchguard::clock::now() > until).then_some(())
    });
    assert_eq!(post(&d, A)["incidents"].as_array().unwrap().len(), 1);
    // The operations centre may silence everything, on purpose.
    let (code, body) = silence_by(&d, "ops.desk", json!([]), 60, true);
    assert_eq!(code, 201, "forced: {body}");
}

#[test]
fn a_recurring_maintenance_window_applies_at_its_local_time() {
    let f = Fixture::engine();
    // A daily window that opened a few seconds ago, in the branches' time zone.
    let start = (branchguard::clock::now() - chrono::Duration::seconds(5))
        .with_timezone(&chrono_tz::Asia::Shanghai);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!(
            "{cfg}maintenance:\n  - {{ name: core-upgrade, start: \"{} {} {} * * *\", duration: 1h, branches: [br-a], matchers: {{ system: core }} }}\n",
            start.second(),
            start.minute(),
            start.hour()
        ),
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    assert_eq!(post(&d, A)["incidents"], json!([]));
    let events = d.get("/api/v1/events?branch=br-a");
    assert_eq!(
        events["items"][0]["silenced"],
        "maintenance window core-upgrade"
    );
    assert_eq!(
        post(&d, B)["incidents"].as_array().unwrap().len(),
        1,
        "not its branch"
    );
}

/// A preview says which open incidents and recent events a silence would
/// match, before it is made, and changes nothing.
#[test]
fn a_silence_preview_lists_what_it_would_match_and_changes_nothing() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let opened = post(&d, A)["incidents"][0].as_i64().unwrap();
    post(&d, B);
    let (code, p) = d.post(
        "/api/v1/silences/preview",
        r#"{"matchers":[{"name":"branch","value":"br-a"},{"name":"system","value":"core"}]}"#,
    );
    assert_eq!(code, 200, "{p}");
    let ids: Vec<i64> = p["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![opened], "{p}");
    assert_eq!(p["events"]["count"], 1, "{p}");
    assert_eq!(p["events"]["complete"], true, "{p}");
    let (code, p) = d.post(
        "/api/v1/silences/preview",
        r#"{"matchers":[{"name":"branch","value":"br-a"},{"name":"system","value":"queue"}]}"#,
    );
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (
            p["incidents"].as_array().unwrap().len(),
            &p["events"]["count"]
        ),
        (0, &json!(0))
    );
    let (code, p) = d.post(
        "/api/v1/silences/preview",
        r#"{"matchers":[{"name":"x","value":"(","regex":true}]}"#,
    );
    assert_eq!((code, p["field"].as_str()), (400, Some("matchers")), "{p}");
    // Nothing was made: events still open incidents.
    assert_eq!(d.get("/api/v1/silences")["items"], json!([]));
}
