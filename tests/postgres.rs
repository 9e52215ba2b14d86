//! The daemon on PostgreSQL, through the real binary and a real server
//! (`BRANCHGUARD_TEST_POSTGRES`, started by `.ci/postgres`): the
//! configuration names the database by an environment variable, incidents
//! survive `kill -9`, and `audit verify` and `export` read the same database.

mod common;

use std::time::Duration;

use branchguard::store::pg_testing::Database;
use common::{Daemon, Fixture, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "5151515151515151515151515151515151515151515151515151515151515151";

/// The engine fixture on PostgreSQL (its URL in `BG_DATABASE_URL`).
fn on_postgres() -> Fixture {
    let f = Fixture::engine();
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("{cfg}\nstore:\n  postgres: {{ url_env: BG_DATABASE_URL }}\n"),
    );
    f
}

#[test]
fn a_daemon_on_postgres_keeps_its_incidents_through_kill_9_and_its_log_verifies() {
    let db = Database::create();
    let f = on_postgres();
    let env = [
        ("BG_DATABASE_URL", db.url()),
        ("BRANCHGUARD_AUDIT_KEY", KEY),
    ];
    let d = Daemon::start_with_env(&f, &env);
    let (code, body) = d.post(
        "/api/v1/events",
        &json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": "a1"}}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    let id = wait_for(WAIT, "the incident", || {
        d.get("/api/v1/incidents?status=open")["items"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|i| i["id"].as_i64())
    });
    d.kill9();
    let d = Daemon::start_with_env(&f, &env);
    let inc = d.incident(id);
    assert_eq!(inc["status"], "open", "{inc}");
    assert_eq!(inc["branch"], "br-a");
    assert!(
        !common::history(&inc, "incident.opened").is_empty(),
        "its history came back: {inc}"
    );
    // A second event of the group joins the incident the restart restored.
    let (code, _) = d.post(
        "/api/v1/events",
        &json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": "a1"}}).to_string(),
    );
    assert_eq!(code, 202);
    wait_for(WAIT, "the second event on the incident", || {
        (d.incident(id)["event_count"].as_i64() == Some(2)).then_some(())
    });
    let v = f.run_env(&["audit", "verify"], &env);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("audit log ok"), "{}", v.stdout);
    d.stop();
    // Nothing was written to a SQLite database beside it.
    assert!(!f.path("data/branchguard.db").exists());
}

#[test]
fn a_missing_url_variable_or_key_is_named_before_anything_starts() {
    let f = on_postgres();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("branchguard.yaml:")
            && out.stderr.contains(
                "store.postgres.url_env: the environment variable BG_DATABASE_URL is not set"
            ),
        "{}",
        out.stderr
    );
    let out = f.run_env(&["check"], &[("BG_DATABASE_URL", "mysql:/nope=")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot be used") && !out.stderr.contains("mysql:/nope="),
        "named, never quoted: {}",
        out.stderr
    );
    // Active/standby on one machine's SQLite is named.
    let alone = Fixture::engine();
    let cfg = std::fs::read_to_string(alone.path("branchguard.yaml")).unwrap();
    alone.write(
        "branchguard.yaml",
        &format!("{cfg}\nha: {{ node: bg-a }}\n"),
    );
    let out = alone.run(&["check"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("ha: active/standby needs a database the daemons share"),
        "{}",
        out.stderr
    );
    // On PostgreSQL the audit key is given, never made by the first node.
    let db = Database::create();
    let out = f.run_env(&["run"], &[("BG_DATABASE_URL", db.url())]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("every daemon of the group signs one audit chain"),
        "{}",
        out.stderr
    );
}

#[test]
fn migrate_copies_a_sqlite_database_whose_history_and_audit_log_carry_on() {
    let f = Fixture::engine();
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    // A daemon's life on SQLite: two incidents, one resolved.
    let d = Daemon::start(&f);
    let mut ids = Vec::new();
    for atm in ["m1", "m2"] {
        let (code, body) = d.post(
            "/api/v1/events",
            &json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": atm}}).to_string(),
        );
        assert_eq!(code, 202, "{body}");
        ids.push(body["incidents"][0].as_i64().unwrap());
    }
    let (code, body) = d.post(
        &format!("/api/v1/incidents/{}/resolve", ids[1]),
        &json!({"by": "it.a"}).to_string(),
    );
    assert_eq!(code, 200, "{body}");
    // Their mails written (to files: no SMTP here), so nothing changes after.
    let before: Vec<serde_json::Value> = ids
        .iter()
        .map(|i| {
            wait_for(WAIT, "the incident's mail delivered", || {
                let inc = d.incident(*i);
                (!common::history(&inc, "notification.delivered").is_empty()).then_some(inc)
            })
        })
        .collect();
    d.stop();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("{cfg}\nstore:\n  postgres: {{ url_env: BG_DATABASE_URL }}\n"),
    );
    let db = Database::create();
    let env = [("BG_DATABASE_URL", db.url())];
    let out = f.run_env(&["migrate", "--from-sqlite", "data"], &env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("incidents: 2 rows"), "{}", out.stdout);
    assert!(out.stdout.contains("audit log ok"), "{}", out.stdout);
    // Into a database that is no longer empty: refused, nothing doubled.
    let again = f.run_env(&["migrate", "--from-sqlite", "data"], &env);
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("empty database only"),
        "{}",
        again.stderr
    );
    // The daemon on PostgreSQL carries on from the copy.
    let d = Daemon::start_with_env(&f, &env);
    for (id, was) in ids.iter().zip(&before) {
        let now = d.incident(*id);
        assert_eq!(now["status"], was["status"], "{now}");
        assert_eq!(now["history"], was["history"], "incident {id}'s history");
    }
    let (code, body) = d.post(
        "/api/v1/events",
        &json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": "m3"}}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    let next = body["incidents"][0].as_i64().unwrap();
    assert!(next > ids[1], "ids go on after the copied ones: {next}");
    d.stop();
    let v = f.run_env(&["audit", "verify"], &env);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

/// The test server's CA (`.ci/postgres` makes it and turns TLS on).
fn test_ca() -> String {
    std::env::var("BRANCHGUARD_TEST_POSTGRES_CA")
        .expect("BRANCHGUARD_TEST_POSTGRES_CA: start the server with eval \"$(bash .ci/postgres)\"")
}

#[test]
fn tls_to_postgres_is_verified_and_every_connection_uses_it() {
    let db = Database::create();
    let f = on_postgres();
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), test_ca());
    let env = [
        ("BG_DATABASE_URL", url.as_str()),
        ("BRANCHGUARD_AUDIT_KEY", KEY),
    ];
    let out = f.run_env(&["check"], &env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let d = Daemon::start_with_env(&f, &env);
    let (code, body) = d.post(
        "/api/v1/events",
        &json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": "t1"}}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    wait_for(WAIT, "the incident", || {
        d.get("/api/v1/incidents?status=open")["items"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|_| ())
    });
    // Every connection the daemon holds to its database, as the server sees
    // them: the writer's two, the reader's, all in TLS.
    let name = db.url().rsplit('/').next().unwrap().to_string();
    let mut admin = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'branchguard' AND a.datname = $1",
            &[&name],
        )
        .unwrap();
    let (n, all_tls): (i64, bool) = (row.get(0), row.get(1));
    assert!(n >= 3, "the daemon's connections: {n}");
    assert!(all_tls, "every one of the {n} connections is in TLS");
    d.stop();

    // A server whose certificate the given CA did not sign is refused.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    f.write("other-ca.pem", &other.cert.pem());
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url(),
        f.path("other-ca.pem").display()
    );
    let out = f.run_env(
        &["run"],
        &[
            ("BG_DATABASE_URL", wrong.as_str()),
            ("BRANCHGUARD_AUDIT_KEY", KEY),
        ],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);

    // Settings that would fall back to plain text, or not verify, are named,
    // once: not again as an `ha` without a shared database.
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write("branchguard.yaml", &format!("{cfg}ha: {{ node: bg-a }}\n"));
    for (query, says) in [
        (
            "sslmode=prefer",
            "sslmode=prefer may fall back to an unencrypted connection",
        ),
        ("sslmode=require", "sslmode=require needs sslrootcert=FILE"),
        (
            "sslmode=verify-full&sslrootcert=ca.pem",
            "sslrootcert ca.pem is not an absolute path",
        ),
    ] {
        let url = format!("{}?{query}", db.url());
        let out = f.run_env(&["check"], &[("BG_DATABASE_URL", url.as_str())]);
        assert_eq!(out.code, 1, "{query}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("branchguard.yaml:")
                && out.stderr.contains(says)
                && out.stderr.contains("1 error(s)")
                && !out.stderr.contains("active/standby needs"),
            "{query}: {}",
            out.stderr
        );
    }
}

/// A NUL character is no text, and PostgreSQL's text cannot hold one:
/// stored, it failed the whole round's commit (503 to everyone in it, the
/// daemon unhealthy). Refused with its field instead; a refused alert is
/// kept without it, cut to the limits and not filed under a branch the
/// token may not write to.
#[test]
fn a_nul_character_is_refused_with_its_field_and_fails_no_one_elses_commit() {
    let db = Database::create();
    let f = on_postgres();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!(
            "{cfg}limits:\n  summary_bytes: 64\nauth:\n  tokens:\n    - {{ name: gw, role: ingest, token_env: BG_GW, branches: [br-a] }}\n    - {{ name: ops, role: ops, token_env: BG_OPS }}\n"
        ),
    );
    let env = [
        ("BG_DATABASE_URL", db.url()),
        ("BRANCHGUARD_AUDIT_KEY", KEY),
        ("BG_GW", "gateway-token-0123456789"),
        ("BG_OPS", "ops-desk-token-0123456789"),
    ];
    let d = Daemon::start_with_env(&f, &env);
    let post = |path: &str, token: &str, body: serde_json::Value| {
        let r = d
            .http
            .post(format!("{}{path}", d.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    let gw = "gateway-token-0123456789";
    let ops = "ops-desk-token-0123456789";
    let (code, body) = post(
        "/api/v1/events",
        gw,
        json!({"kind": "atm.down", "branch": "br-a", "summary": "jam\u{0}med", "labels": {"atm": "n1"}}),
    );
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("summary")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    let (code, body) = post(
        "/api/v1/events",
        gw,
        json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": "a1"}}),
    );
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    let (code, body) = post(
        &format!("/api/v1/incidents/{id}/steps/fix/ack"),
        ops,
        json!({"by": "it.a", "note": "on\u{0}it"}),
    );
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("note")),
        "{body}"
    );
    // An alert refused for its size, for a branch the gateway may not post
    // to, with a NUL in a label: kept, without any of the three.
    let (code, body) = post(
        "/api/v1/alertmanager",
        gw,
        json!({"version": "4", "alerts": [{"status": "firing",
            "labels": {"alertname": "X", "kind": "atm.down", "branch": "br-b", "atm": "b\u{0}1"},
            "annotations": {"summary": "x".repeat(500)}}]}),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["rejected"].as_array().map(Vec::len), Some(1), "{body}");
    let health = d.http.get(format!("{}/healthz", d.url)).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let r = d
        .http
        .get(format!("{}/api/v1/events", d.url))
        .bearer_auth(ops)
        .send()
        .unwrap();
    let events: serde_json::Value = r.json().unwrap();
    let refused: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["rejected"].is_string())
        .collect();
    assert_eq!(refused.len(), 1, "{events}");
    let kept = refused[0];
    assert_eq!(kept["branch"], "", "{kept}");
    assert_eq!(kept["summary"].as_str().map(str::len), Some(64), "{kept}");
    assert_eq!(kept["labels"]["atm"], "b1", "{kept}");
    assert!(
        kept["rejected"].as_str().unwrap().starts_with("invalid: "),
        "{kept}"
    );
    let v = f.run_env(&["audit", "verify"], &env);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}
