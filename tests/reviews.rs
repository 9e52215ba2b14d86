//! Post-incident reviews against the real daemon and a real SMTP server:
//! recorded after resolution, appended and never overwritten, an action
//! past its due date reaches its owner once (also across a restart), and
//! the incident report carries them.

mod common;

use std::time::Duration;

use common::sinks::SmtpServer;
use common::{Daemon, Fixture, holds_for, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CORE_DOWN: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;

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

/// Days from today in the bank's zone (Asia/Shanghai), as a date.
fn day(offset: i64) -> String {
    (branchguard::clock::now().with_timezone(&chrono_tz::Asia::Shanghai)
        + chrono::Duration::days(offset))
    .date_naive()
    .to_string()
}

fn overdue_mails(smtp: &SmtpServer, who: &str) -> Vec<String> {
    smtp.to(who)
        .iter()
        .filter(|m| m.subject().starts_with("OVERDUE") && m.text().contains("Review action"))
        .map(|m| m.text())
        .collect()
}

#[test]
fn a_review_is_appended_its_overdue_action_reaches_its_owner_once_and_the_report_shows_it() {
    let smtp = SmtpServer::start();
    let f = fixture(smtp.port);
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    let review = |body: Value| d.post(&format!("/api/v1/incidents/{id}/review"), &body.to_string());
    let first = json!({
        "impact": "Counters 1-4 on paper vouchers for 12 minutes",
        "cause": "Core banking link flapped after a carrier change",
        "actions": [
            {"what": "Ask the carrier for the change log", "owner": "it.a", "due": day(-1)},
            {"what": "Revise the failover plan's switch step", "owner": "head.a", "due": day(365)}
        ],
        "by": "head.a"
    });
    // Not while it is open.
    let (code, b) = review(first.clone());
    assert_eq!(code, 409, "{b}");
    assert!(b["error"].as_str().unwrap().contains("still open"), "{b}");
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/resolve"),
        r#"{"by":"head.a"}"#,
    );
    assert_eq!(code, 200, "{b}");
    // Mistakes, each named by its field.
    for (bad, field, says) in [
        (
            json!({"impact": "x", "actions": [{"what": "y", "owner": "nobody", "due": day(1)}], "by": "head.a"}),
            None,
            "actions[0].owner: no person `nobody`",
        ),
        (
            json!({"impact": "x", "actions": [{"what": "y", "owner": "it.a", "due": "next week"}], "by": "head.a"}),
            Some("actions[0].due"),
            "invalid due date `next week`",
        ),
        (json!({"by": "head.a"}), None, "all three are empty"),
        (
            json!({"impact": "x", "actions": [{"what": "y", "owner": "it.a", "due": "0001-01-01"}], "by": "head.a"}),
            Some("actions[0].due"),
            "due date 0001-01-01 is out of range: expected a day from 2000-01-01 to 2099-12-31",
        ),
        (
            json!({"impact": "x", "actions": [{"what": "y", "owner": "it.a", "due": "9999-12-31"}], "by": "head.a"}),
            Some("actions[0].due"),
            "due date 9999-12-31 is out of range",
        ),
        (
            json!({"impact": "x", "severity": "high", "by": "head.a"}),
            None,
            "unknown field `severity`",
        ),
        (json!({"impact": "x"}), Some("by"), "by"),
    ] {
        let (code, b) = review(bad.clone());
        assert_eq!(code, 400, "{bad}: {b}");
        assert!(b["error"].as_str().unwrap().contains(says), "{bad}: {b}");
        if let Some(field) = field {
            assert_eq!(b["field"], field, "{bad}: {b}");
        }
    }
    let (code, b) = review(first.clone());
    assert_eq!(code, 201, "{b}");
    assert_eq!(
        (&b["review"], &b["actions"]),
        (&json!(1), &json!([1, 2])),
        "{b}"
    );
    // Action 1 was due yesterday: its owner is told, at once and once.
    let mail = wait_for(WAIT, "the overdue review action mail", || {
        overdue_mails(&smtp, "it.a@bank.example").into_iter().next()
    });
    assert!(
        mail.contains("Ask the carrier for the change log"),
        "{mail}"
    );
    assert!(overdue_mails(&smtp, "head.a@bank.example").is_empty());
    let listed = d.get("/api/v1/reviews/overdue");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(
        (&items[0]["incident"], &items[0]["n"]),
        (&json!(id), &json!(1))
    );
    assert_eq!(items[0]["owner_name"], "IT A");
    assert!(items[0]["reminded_at"].is_string(), "{listed}");
    // A second review appends; the first stays as it was.
    let (code, b) = review(json!({
        "cause": "The carrier's change was not announced to the branch",
        "actions": [{"what": "Add the carrier to the change calendar", "owner": "it.a", "due": day(30)}],
        "by": "head.a"
    }));
    assert_eq!(code, 201, "{b}");
    assert_eq!(
        (&b["review"], &b["actions"]),
        (&json!(2), &json!([3])),
        "{b}"
    );
    // Restarted (killed): the reminder is not sent again.
    d.kill9();
    let d = Daemon::start(&f);
    holds_for(Duration::from_secs(2), "one reminder only", || {
        overdue_mails(&smtp, "it.a@bank.example").len() == 1
    });
    // Its owner marks it done; again is a conflict; someone else's name is refused.
    let done = |n: u32, body: &str| {
        d.post(
            &format!("/api/v1/incidents/{id}/review/actions/{n}/done"),
            body,
        )
    };
    let (code, b) = done(9, r#"{"by":"it.a"}"#);
    assert_eq!(code, 404, "{b}");
    let (code, b) = done(1, r#"{"by":"it.a","note":"log received"}"#);
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["action"]["done_by"], "it.a", "{b}");
    let (code, b) = done(1, r#"{"by":"it.a"}"#);
    assert_eq!(code, 409, "{b}");
    assert_eq!(d.get("/api/v1/reviews/overdue")["items"], json!([]));
    // The report: both reviews, each action's state.
    let report = d.get(&format!("/api/v1/incidents/{id}/report?format=json"));
    let reviews = report["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 2, "{report}");
    assert_eq!(reviews[0]["impact"], first["impact"]);
    assert_eq!(reviews[0]["actions"][0]["done_by"], "it.a");
    assert!(reviews[0]["actions"][0]["reminded_at"].is_string());
    assert!(reviews[0]["actions"][1]["done_at"].is_null());
    assert_eq!(reviews[1]["actions"][0]["n"], 3);
    let md = d
        .http
        .get(format!("{}/api/v1/incidents/{id}/report", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(md.contains("### Review 1 —"), "{md}");
    assert!(md.contains("- Cause: Core banking link flapped"), "{md}");
    assert!(
        md.contains(&format!(
            "| 1 | Ask the carrier for the change log | IT A | {} | done ",
            day(-1)
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| 2 | Revise the failover plan's switch step | Head A | {} | open |",
            day(365)
        )),
        "{md}"
    );
    // Each review is a history line: audited, in the chain.
    let inc = d.incident(id);
    let lines = common::history(&inc, "review.recorded");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["by"], "head.a");
    d.stop();
    let ok = f.run(&["audit", "verify"]);
    assert_eq!(ok.code, 0, "{ok:?}");
}

/// Another branch's head, a staff token for someone else's action, a staff
/// token recording a review, a token acting in another's name: each refused,
/// and nothing recorded.
#[test]
fn reviews_keep_to_their_branch_and_their_people() {
    use common::access::{add_tokens, call};
    let f = Fixture::engine();
    add_tokens(
        &f,
        &[
            ("ops", "ops", ""),
            ("head-b", "branch-head", ", person: head.b"),
            ("head-a", "branch-head", ", person: head.a"),
            ("it-a", "staff", ", person: it.a"),
            ("guard-a", "staff", ", person: guard.a"),
        ],
    );
    let d = Daemon::start(&f);
    let (code, b) = call(&d, "POST", "/api/v1/events", Some("ops"), CORE_DOWN);
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();
    let (code, b) = call(
        &d,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        Some("head-a"),
        "{}",
    );
    assert_eq!(code, 200, "{b}");
    let path = format!("/api/v1/incidents/{id}/review");
    let body = json!({"impact": "x", "actions": [{"what": "y", "owner": "it.a", "due": day(-1)}]})
        .to_string();
    // Another branch: as if it did not exist.
    let (code, b) = call(&d, "POST", &path, Some("head-b"), &body);
    assert_eq!(code, 404, "{b}");
    // Staff answer steps; they do not record reviews.
    let (code, b) = call(&d, "POST", &path, Some("it-a"), &body);
    assert_eq!(code, 403, "{b}");
    // A person-bound token acts as its person only.
    let as_other = json!({"impact": "x", "by": "head.b"}).to_string();
    let (code, b) = call(&d, "POST", &path, Some("head-a"), &as_other);
    assert_eq!(code, 403, "{b}");
    let (code, b) = call(&d, "POST", &path, Some("head-a"), &body);
    assert_eq!(code, 201, "{b}");
    // The overdue list is the caller's branches'.
    let (_, mine) = call(&d, "GET", "/api/v1/reviews/overdue", Some("head-a"), "");
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1), "{mine}");
    let (_, theirs) = call(&d, "GET", "/api/v1/reviews/overdue", Some("head-b"), "");
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    // Someone else's action: refused for staff; its owner may.
    let done = format!("/api/v1/incidents/{id}/review/actions/1/done");
    let (code, b) = call(&d, "POST", &done, Some("guard-a"), "{}");
    assert_eq!(code, 403, "{b}");
    let (code, b) = call(&d, "POST", &done, Some("head-b"), "{}");
    assert_eq!(code, 404, "{b}");
    let (code, b) = call(
        &d,
        "POST",
        &format!("/api/v1/incidents/{id}/review/actions/99999999999/done"),
        Some("it-a"),
        "{}",
    );
    assert_eq!(code, 400, "{b}");
    let (code, b) = call(&d, "POST", &done, Some("it-a"), "{}");
    assert_eq!(code, 200, "{b}");
    // One review line, by head.a; one done line, by it.a.
    let (_, inc) = call(
        &d,
        "GET",
        &format!("/api/v1/incidents/{id}"),
        Some("ops"),
        "",
    );
    let recorded = common::history(&inc, "review.recorded");
    assert_eq!(recorded.len(), 1, "{inc}");
    assert_eq!(recorded[0]["by"], "head.a");
    let done_lines = common::history(&inc, "review.action.done");
    assert_eq!(done_lines.len(), 1);
    assert_eq!(done_lines[0]["by"], "it.a");
}
