//! Access control against the real daemon: who may do what on which branch,
//! no anonymous or foreign actions, cross-site requests, input limits and the
//! rate limit, a public address with tokens, and TLS with a certificate that
//! is replaced on disk.

mod common;

use std::time::Duration;

use common::access::{add_tokens, call, secret};
use common::{Daemon, Fixture, wait_for};

const CORE_DOWN_A: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;
const CORE_DOWN_B: &str =
    r#"{"kind":"system.down","branch":"br-b","severity":"critical","labels":{"system":"core"}}"#;

/// (token name, role, extra fields) — each token's secret is `secret-<name>`.
const TOKENS: &[(&str, &str, &str)] = &[
    ("admin", "admin", ""),
    ("ops", "ops", ""),
    ("head-a", "branch-head", ", person: head.a"),
    ("staff-it-a", "staff", ", person: it.a"),
    ("staff-guard-a", "staff", ", person: guard.a"),
    ("ingest", "ingest", ""),
    ("ingest-b", "ingest", ", branches: [br-b]"),
    ("viewer", "viewer", ""),
];

fn with_tokens(extra: &str) -> Fixture {
    let f = Fixture::engine();
    add_tokens(&f, TOKENS);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write("branchguard.yaml", &format!("{cfg}{extra}"));
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

#[test]
fn roles_and_branches_decide_who_may_do_what() {
    let f = with_tokens("");
    let d = Daemon::start(&f);
    // Incident 1 at br-a (step `switch` for it.a), incident 2 at br-b.
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_A).0,
        202
    );
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_B).0,
        202
    );

    let ack = |n: i64| format!("/api/v1/incidents/{n}/steps/switch/ack");
    // (token, method, path, body, expected status)
    let table: Vec<(Option<&str>, &str, String, &str, u16)> = vec![
        (None, "GET", "/api/v1/incidents".into(), "", 401),
        (None, "GET", "/healthz".into(), "", 200),
        (None, "GET", "/metrics".into(), "", 200),
        (Some("nobody"), "GET", "/api/v1/incidents".into(), "", 401),
        // ingest posts events and nothing else
        (Some("ingest"), "GET", "/api/v1/incidents".into(), "", 403),
        (
            Some("ingest-b"),
            "POST",
            "/api/v1/events".into(),
            CORE_DOWN_A,
            403,
        ),
        (
            Some("ingest-b"),
            "POST",
            "/api/v1/events".into(),
            CORE_DOWN_B,
            202,
        ),
        // viewer reads
        (Some("viewer"), "GET", "/api/v1/incidents/2".into(), "", 200),
        (Some("viewer"), "POST", ack(1), "{}", 403),
        (
            Some("viewer"),
            "POST",
            "/api/v1/events".into(),
            CORE_DOWN_A,
            403,
        ),
        // a branch head of br-a: its branch, not br-b
        (Some("head-a"), "GET", "/api/v1/incidents/1".into(), "", 200),
        (Some("head-a"), "GET", "/api/v1/incidents/2".into(), "", 404),
        (Some("head-a"), "POST", ack(2), "{}", 404),
        (
            Some("head-a"),
            "POST",
            "/api/v1/incidents/2/resolve".into(),
            "{}",
            404,
        ),
        (Some("head-a"), "POST", "/api/v1/reload".into(), "", 403),
        // staff: only the steps assigned to their person, never as someone else
        (Some("staff-guard-a"), "POST", ack(1), "{}", 403),
        (
            Some("staff-it-a"),
            "POST",
            ack(1),
            r#"{"by":"head.a"}"#,
            403,
        ),
        (Some("staff-it-a"), "POST", ack(1), "{}", 200),
        (
            Some("staff-it-a"),
            "POST",
            "/api/v1/incidents/1/resolve".into(),
            "{}",
            403,
        ),
        (
            Some("staff-it-a"),
            "GET",
            "/api/v1/incidents/2".into(),
            "",
            404,
        ),
        // ops: every branch, recording the person who called (a known
        // person of the incident's branch), but not admin's reload
        (
            Some("ops"),
            "POST",
            "/api/v1/incidents/2/escalate".into(),
            "{}",
            400,
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/incidents/2/escalate".into(),
            r#"{"by":"nobody-at-all"}"#,
            400,
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/incidents/2/escalate".into(),
            r#"{"by":"head.a"}"#,
            403,
        ),
        (
            Some("ops"),
            "POST",
            "/api/v1/incidents/2/escalate".into(),
            r#"{"by":"head.b"}"#,
            200,
        ),
        (Some("ops"), "POST", "/api/v1/reload".into(), "", 403),
        (Some("admin"), "POST", "/api/v1/reload".into(), "", 200),
        (
            Some("head-a"),
            "POST",
            "/api/v1/incidents/1/resolve".into(),
            "{}",
            200,
        ),
    ];
    let mut wrong = Vec::new();
    for (token, method, path, body, want) in &table {
        let (got, answer) = call(&d, method, path, *token, body);
        if got != *want {
            wrong.push(format!(
                "{token:?} {method} {path} {body}: {got}, expected {want}: {answer}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The staff member's acknowledgement is recorded as theirs, and the
    // token it came through; lists are scoped.
    let inc = call(&d, "GET", "/api/v1/incidents/1", Some("admin"), "").1;
    let sw = common::step(&inc, "switch");
    assert_eq!(sw["by"], "it.a");
    let acked = &common::history(&inc, "step.acknowledged")[0];
    assert_eq!(
        (&acked["by"], &acked["via"]),
        (&"it.a".into(), &"staff-it-a".into())
    );
    let inc2 = call(&d, "GET", "/api/v1/incidents/2", Some("admin"), "").1;
    let esc = common::history(&inc2, "incident.escalated");
    assert_eq!(esc.len(), 1, "only the one with a known person of br-b");
    assert_eq!(
        (&esc[0]["by"], &esc[0]["via"]),
        (&"head.b".into(), &"ops".into())
    );
    let listed = call(&d, "GET", "/api/v1/incidents", Some("head-a"), "").1;
    let branches: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["branch"].as_str().unwrap())
        .collect();
    assert!(
        !branches.is_empty() && branches.iter().all(|b| *b == "br-a"),
        "{branches:?}"
    );
    // Refusals are counted by reason, and summarised in the audit log at
    // most once a minute per client: here, one line for the whole table,
    // naming the token of the first but never its secret.
    let metrics = d.metrics();
    let denied = |reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "branchguard_requests_denied_total{{reason=\"{reason}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(denied("unauthorized"), 2.0, "{metrics}");
    assert!(denied("forbidden") >= 8.0, "{metrics}");
    assert_eq!(denied("out_of_scope"), 4.0, "{metrics}");
    let db = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    let audited = wait_for(Duration::from_secs(10), "the audit summary", || {
        let rows: Vec<String> = db
            .prepare("SELECT detail FROM audit WHERE what = 'auth.denied'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0].starts_with(
            "client 127.0.0.1: 1 request(s) refused (unauthorized 1); first: GET /api/v1/incidents"
        ),
        "{audited:?}"
    );
    assert!(
        !audited.iter().any(|r| r.contains("secret-")),
        "{audited:?}"
    );
}

#[test]
fn without_tokens_nobody_acts_anonymously_or_from_another_site() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN_A);
    let ack = "/api/v1/incidents/1/steps/switch/ack";
    let (code, body) = d.post(ack, "");
    assert_eq!((code, body["field"].as_str()), (400, Some("by")), "{body}");
    let (code, body) = d.post(ack, r#"{"by":"it.b"}"#);
    assert_eq!(code, 403, "a person of br-b on a br-a incident: {body}");
    // A form posted by a page on another site.
    let r = d
        .http
        .post(format!("{}/api/v1/incidents/1/resolve", d.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .body("by=head.a")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = d
        .http
        .post(format!("{}/api/v1/events", d.url))
        .header("content-type", "text/plain")
        .body(CORE_DOWN_A)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // A known path with another method is 405 naming what it takes, as the
    // API promises (it was 403 "no access rule").
    let r = d
        .http
        .get(format!("{}/api/v1/reload", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    // A summary over the limit is refused and nothing of it is stored.
    let long = format!(
        r#"{{"kind":"x","branch":"br-a","summary":"{}"}}"#,
        "a".repeat(5000)
    );
    let before = d.get("/api/v1/events")["items"].as_array().unwrap().len();
    let (code, body) = d.post("/api/v1/events", &long);
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("summary")),
        "{body}"
    );
    assert_eq!(
        d.get("/api/v1/events")["items"].as_array().unwrap().len(),
        before
    );
    let (code, _) = d.post(ack, r#"{"by":"it.a"}"#);
    assert_eq!(code, 200);
}

#[test]
fn oversized_input_and_bursts_are_refused_while_others_are_served() {
    let f = with_tokens(
        "limits: { body_bytes: 65536, events_per_request: 10, labels_per_event: 4, requests_per_second: 1, burst: 5 }\n",
    );
    let d = Daemon::start(&f);
    let big = format!(
        r#"{{"kind":"x","branch":"br-a","summary":"{}"}}"#,
        "a".repeat(70_000)
    );
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("admin"), &big).0,
        413
    );
    let many = format!("[{}]", [CORE_DOWN_A; 11].join(","));
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ops"), &many).0,
        413
    );
    let labels =
        r#"{"kind":"x","branch":"br-a","labels":{"a":"1","b":"2","c":"3","d":"4","e":"5"}}"#;
    let (code, body) = call(&d, "POST", "/api/v1/events", Some("viewer"), labels);
    assert_eq!(code, 403, "viewer may not post: {body}");
    let (code, body) = call(&d, "POST", "/api/v1/events", Some("ingest"), labels);
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("labels")),
        "{body}"
    );
    // A burst from one token: refused past its burst; another token is served.
    let codes: Vec<u16> = (0..12)
        .map(|_| call(&d, "GET", "/api/v1/incidents", Some("head-a"), "").0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(codes[0], 200);
    assert_eq!(
        call(&d, "GET", "/api/v1/incidents", Some("staff-it-a"), "").0,
        200
    );
}

#[test]
fn with_tokens_a_public_listen_address_works() {
    let f = with_tokens("");
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0"),
    );
    let mut d = Daemon::start(&f);
    assert!(d.url.starts_with("http://0.0.0.0:"), "{}", d.url);
    d.url = d.url.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(call(&d, "GET", "/api/v1/status", Some("viewer"), "").0, 200);
    assert_eq!(call(&d, "GET", "/api/v1/status", None, "").0, 401);
}

fn cert() -> (String, String, reqwest::Certificate) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let pem = c.cert.pem();
    let trust = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    (pem, c.signing_key.serialize_pem(), trust)
}

#[test]
fn tls_serves_and_a_certificate_replaced_on_disk_is_picked_up() {
    let f = Fixture::engine();
    let (pem, key, trust) = cert();
    f.write("tls/cert.pem", &pem).write("tls/key.pem", &key);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("{cfg}tls: {{ cert: tls/cert.pem, key: tls/key.pem }}\n"),
    );
    let d = Daemon::start(&f);
    let https = d.url.replace("http://", "https://");
    let client = |trust: &reqwest::Certificate| {
        reqwest::blocking::Client::builder()
            .add_root_certificate(trust.clone())
            .build()
            .unwrap()
    };
    let r = client(&trust)
        .get(format!("{https}/healthz"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP gets nothing.
    assert!(d.http.get(format!("{}/healthz", d.url)).send().is_err());
    // A renewed certificate, written over the old files: served without a restart.
    let (pem2, key2, trust2) = cert();
    f.write("tls/key.pem", &key2).write("tls/cert.pem", &pem2);
    wait_for(Duration::from_secs(20), "the new certificate", || {
        client(&trust2)
            .get(format!("{https}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    assert!(
        client(&trust)
            .get(format!("{https}/healthz"))
            .send()
            .is_err(),
        "the old certificate is no longer served"
    );
}

/// **Invariant:** a token is never stored or logged: after tokens were used
/// (accepted, refused, acting, reading), no file under the data directory
/// and no line of the log holds one, neither the secret nor a prefix of it.
#[test]
fn tokens_are_never_stored_or_logged() {
    let f = with_tokens("");
    let d = Daemon::start_with(&f, &[], &[("RUST_LOG", "debug")]);
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_A).0,
        202
    );
    assert_eq!(
        call(
            &d,
            "POST",
            "/api/v1/incidents/1/steps/switch/ack",
            Some("staff-it-a"),
            "{}"
        )
        .0,
        200
    );
    assert_eq!(
        call(&d, "GET", "/api/v1/incidents/1", Some("viewer"), "").0,
        200
    );
    assert_eq!(
        call(&d, "POST", "/api/v1/reload", Some("viewer"), "").0,
        403
    );
    // A wrong token that differs from a real one in its last character.
    let near = format!("{}X", &secret("admin")[..secret("admin").len() - 1]);
    let r = d
        .http
        .get(format!("{}/api/v1/incidents", d.url))
        .bearer_auth(&near)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let log = d.log();
    d.stop();
    let mut files = Vec::new();
    let mut dirs = vec![f.path("data")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(
        files.iter().any(|p| p.ends_with("branchguard.db")),
        "{files:?}"
    );
    // The part every secret of this test shares, and the near miss.
    let needles = ["0123456789".to_string(), near.clone()];
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{} holds `{n}`",
                p.display()
            );
        }
    }
    assert!(log.contains("DEBUG"), "debug logging was on: {log}");
    for n in &needles {
        assert!(!log.contains(n.as_str()), "the log holds `{n}`");
    }
}

/// A branch's token without a person names who acts on silences and drills
/// as on incidents: one of its branch's people (or the operations centre),
/// never someone of another branch.
#[test]
fn a_branch_token_names_only_its_own_people_on_silences_and_drills() {
    let f = Fixture::engine();
    add_tokens(&f, &[("desk-a", "ops", ", branches: [br-a]")]);
    f.write(
        "drills/d.yaml",
        "id: d\nplaybook: failover\nevent: { kind: system.down, severity: critical, labels: { system: core } }\nbranches: [br-a]\n",
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    let silence = |by: &str| {
        call(
            &d,
            "POST",
            "/api/v1/silences",
            Some("desk-a"),
            &serde_json::json!({"matchers": [{"name": "branch", "value": "br-a"}], "for": "1h", "created_by": by, "comment": "works"}).to_string(),
        )
    };
    let (code, body) = silence("head.b");
    assert_eq!(
        (code, body["field"].as_str()),
        (403, Some("created_by")),
        "{body}"
    );
    assert_eq!(silence("head.a").0, 201);
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/drills/d/run",
        Some("desk-a"),
        r#"{"by":"it.b"}"#,
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/drills/d/run",
        Some("desk-a"),
        r#"{"by":"it.a"}"#,
    );
    assert_eq!(code, 202, "{body}");
}

/// The new reads are scoped like every other: a branch head sees only its
/// branch in who is on duty, calendars, people, silence previews and reports.
#[test]
fn a_branch_head_sees_only_its_branch_in_duty_calendars_previews_and_reports() {
    let f = with_tokens("");
    f.write(
        "rosters/it.yaml",
        "id: it-duty\nrole: it-duty\nbranches: [br-a, br-b]\nlayers:\n  - { name: all, start: 2026-01-01T00:00, shift: 1d, people: [it.a, it.b] }\n",
    );
    f.write(
        "rosters/guard-b.yaml",
        "id: guard-b\nrole: security\nbranches: [br-b]\nlayers:\n  - { name: all, start: 2026-01-01T00:00, shift: 1d, people: [it.b] }\n",
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_A).0,
        202
    );
    assert_eq!(
        call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_B).0,
        202
    );
    let head = Some("head-a");
    let (code, on) = call(&d, "GET", "/api/v1/oncall", head, "");
    assert_eq!(code, 200, "{on}");
    let branches: Vec<&str> = on["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["branch"].as_str().unwrap())
        .collect();
    assert_eq!(branches, vec!["br-a"], "{on}");
    assert_eq!(call(&d, "GET", "/api/v1/oncall", None, "").0, 401);
    let status = |path: &str| {
        let mut r = d.http.get(format!("{}{path}", d.url));
        r = r.bearer_auth(secret("head-a"));
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(status("/api/v1/rosters/it-duty.ics"), 200);
    assert_eq!(
        status("/api/v1/rosters/guard-b.ics"),
        404,
        "a roster of another branch"
    );
    assert_eq!(status("/api/v1/rosters/..%2Fbranchguard.yaml"), 404);
    assert_eq!(call(&d, "GET", "/api/v1/people/it.a", head, "").0, 200);
    assert_eq!(
        call(&d, "GET", "/api/v1/people/it.b", head, "").0,
        404,
        "a person of another branch"
    );
    let (code, p) = call(
        &d,
        "POST",
        "/api/v1/silences/preview",
        head,
        r#"{"matchers":[{"name":"branch","value":"br-b"}]}"#,
    );
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (
            p["incidents"].as_array().unwrap().len(),
            &p["events"]["count"]
        ),
        (0, &serde_json::json!(0)),
        "{p}"
    );
    let (code, r) = call(&d, "GET", "/api/v1/reports/response", head, "");
    assert_eq!(code, 200, "{r}");
    let rows = r["rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|x| x["branch"] == "br-a"),
        "{r}"
    );
    assert_eq!(
        call(
            &d,
            "GET",
            "/api/v1/incidents/1/report?format=json",
            head,
            ""
        )
        .0,
        200
    );
    assert_eq!(
        call(
            &d,
            "GET",
            "/api/v1/incidents/2/report?format=json",
            head,
            ""
        )
        .0,
        404,
        "another branch's incident"
    );
}
