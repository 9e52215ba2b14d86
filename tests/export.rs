//! The export for auditors against the real binary: written from the
//! database while the daemon runs, checked by `audit verify --file` in
//! another directory with only the key, and any one byte changed (or a
//! line removed) makes it exit 1 naming the line.

mod common;

use common::{Daemon, Fixture};
use serde_json::Value;

const CORE_DOWN: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;

/// The file's lines, parsed, with their numbers from 1.
fn lines(text: &str) -> Vec<(usize, Value)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, serde_json::from_str(l).unwrap()))
        .collect()
}

#[test]
fn an_export_verifies_offline_and_one_changed_byte_is_named_by_its_line() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let before = branchguard::clock::now() - chrono::Duration::seconds(1);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, body) = d.post("/api/v1/events", CORE_DOWN);
        assert_eq!(code, 202, "{body}");
        let id = body["incidents"][0].as_i64().unwrap();
        common::answer_and_resolve(&d, id);
        ids.push(id);
    }
    let after = branchguard::clock::now() + chrono::Duration::seconds(1);
    let (from, to) = (before.to_rfc3339(), after.to_rfc3339());
    let export = |out: &str| f.run(&["export", "--from", &from, "--to", &to, "--out", out]);
    // Written while the daemon runs.
    let out = export("export.jsonl");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("exported 2 incidents"), "{out:?}");
    let text = std::fs::read_to_string(f.path("export.jsonl")).unwrap();
    let parsed = lines(&text);
    // What the API shows is what the file holds: each incident, each of its
    // history lines, each of its outbox rows.
    for id in &ids {
        let api = d.incident(*id);
        let exported: Vec<&Value> = parsed
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["type"] == "history" && v["entity"] == format!("incident:{id}"))
            .collect();
        let history = api["history"].as_array().unwrap();
        assert_eq!(exported.len(), history.len(), "incident {id}");
        for (e, h) in exported.iter().zip(history) {
            assert_eq!((&e["what"], &e["by"]), (&h["what"], &h["by"]), "{e} vs {h}");
            assert_eq!(e["hash"].as_str().map(str::len), Some(64), "{e}");
        }
        let outbox = parsed
            .iter()
            .filter(|(_, v)| v["type"] == "outbox" && v["incident"] == *id)
            .count();
        assert_eq!(
            outbox,
            api["outbox"].as_array().unwrap().len(),
            "incident {id}"
        );
        assert!(outbox > 0);
        let inc = parsed
            .iter()
            .find(|(_, v)| v["type"] == "incident" && v["id"] == *id)
            .unwrap();
        assert_eq!(inc.1["body"]["status"], "resolved");
    }
    // Never overwritten.
    let again = export("export.jsonl");
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("never overwrites"), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(f.path("export.jsonl")).unwrap(),
        text
    );
    d.stop();

    // The auditor: a directory with the file and nothing else; the key in
    // the environment.
    let key = std::fs::read_to_string(f.path("data/audit.key")).unwrap();
    let auditor = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let file = auditor.path().join("export.jsonl");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(common::binary())
            .current_dir(auditor.path())
            .args(["audit", "verify", "--file", "export.jsonl"])
            .env("BRANCHGUARD_AUDIT_KEY", key.trim())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, said) = check(&text);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("export ok: 2 incidents"), "{said}");
    // One byte changed in an outbox row's message, in a history line's
    // person, in an incident's stored body: each named by its line.
    let all: Vec<&str> = text.lines().collect();
    let find = |ty: &str| parsed.iter().find(|(_, v)| v["type"] == ty).unwrap();
    for (ty, from, to, named) in [
        ("outbox", "ACTION", "ACTIOM", "outbox row"),
        (
            "history",
            "\"by\":\"it.a\"",
            "\"by\":\"it.b\"",
            "history line, audit row",
        ),
        ("incident", "\"resolved\"", "\"resolvex\"", "incident"),
    ] {
        let (n, _) = parsed
            .iter()
            .find(|(n, v)| v["type"] == ty && all[n - 1].contains(from))
            .unwrap_or_else(|| find(ty));
        let mut changed: Vec<String> = all.iter().map(|l| l.to_string()).collect();
        changed[n - 1] = changed[n - 1].replacen(from, to, 1);
        assert_ne!(changed[n - 1], all[n - 1], "{ty}: nothing to change");
        let (code, said) = check(&(changed.join("\n") + "\n"));
        assert_eq!(code, 1, "{ty}: {said}");
        assert!(
            said.contains(&format!("export BROKEN at line {n} ({named}")),
            "{ty} at line {n}: {said}"
        );
    }
    // A line removed: the next one is named.
    let mut removed: Vec<&str> = all.clone();
    removed.remove(3);
    let (code, said) = check(&(removed.join("\n") + "\n"));
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("export BROKEN at line 4"), "{said}");
    // Without the key, nothing is claimed.
    let out = std::process::Command::new(common::binary())
        .current_dir(auditor.path())
        .args(["audit", "verify", "--file", "export.jsonl"])
        .env_remove("BRANCHGUARD_AUDIT_KEY")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no audit key")
            || String::from_utf8_lossy(&out.stderr).contains("branchguard.yaml"),
        "{out:?}"
    );

    // A database whose audit log was edited is not exported.
    let db = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    db.execute_batch("UPDATE audit SET by = 'mallory' WHERE seq = 5")
        .unwrap();
    drop(db);
    let out = export("again.jsonl");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("broken at row 5"), "{out:?}");
    assert!(!f.path("again.jsonl").exists());
}

#[test]
fn export_dates_are_the_banks_days_and_mistakes_are_named() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202, "{body}");
    let opened = d.incident(body["incidents"][0].as_i64().unwrap())["opened_at"].clone();
    d.stop();
    // Its day in the bank's zone (Asia/Shanghai) holds it; the day before does not.
    let today = chrono::DateTime::parse_from_rfc3339(opened.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let yesterday = today.pred_opt().unwrap();
    let run = |from: &str, to: &str, out: &str| {
        f.run(&["export", "--from", from, "--to", to, "--out", out])
    };
    let out = run(&today.to_string(), &today.to_string(), "today.jsonl");
    assert!(out.stdout.contains("exported 1 incident ("), "{out:?}");
    let out = run(
        &yesterday.to_string(),
        &yesterday.to_string(),
        "yesterday.jsonl",
    );
    assert!(out.stdout.contains("exported 0 incidents"), "{out:?}");
    let ok = f.run(&["audit", "verify", "--file", "yesterday.jsonl"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let out = run("last tuesday", &today.to_string(), "x.jsonl");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("invalid --from `last tuesday`: expected a date"),
        "{out:?}"
    );
    let out = run(&today.to_string(), &yesterday.to_string(), "x.jsonl");
    assert!(out.stderr.contains("is not before"), "{out:?}");
    assert!(!f.path("x.jsonl").exists());
}
