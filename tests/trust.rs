//! Trust, against the real daemon: what a hostile client or an insider tried
//! (docs/SECURITY.md says what is and is not defended). Nothing read that
//! should not be, nothing lost or doubled, nobody acting as somebody else,
//! and records that show tampering.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::access::{add_tokens, call, in_an_hour, secret, sign_link};
use common::{Daemon, Fixture, history, step, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const CORE_DOWN_A: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;

/// The engine fixture with tokens: (name, role, extra fields).
fn with_tokens(f: &Fixture, tokens: &[(&str, &str, &str)]) {
    add_tokens(f, tokens);
}

/// Every regular file under `dir` (links are not followed), with its mode.
fn files_under(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            out.push((e.path(), mode, true));
            files_under(&e.path(), out);
        } else if meta.is_file() {
            out.push((e.path(), mode, false));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A link to a 0600 file in the spool (the daemon's own link secret, or a
/// file of another's), a named pipe and a file of another user are moved to
/// failed/ unread, each with an `.error` naming why; no byte of the linked
/// files appears anywhere the daemon writes; every file under `data_dir` is
/// its owner's only.
#[test]
fn spool_links_pipes_and_foreign_files_are_moved_aside_unread_and_data_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::engine();
    let outside = tempfile::tempdir().unwrap();
    let private = outside.path().join("shadow");
    let token = "S3CRET-e1d2c3b4a5968778695a4b3c2d1e0f1e2d3c4b5a69788796a5b4c3d2e1f";
    std::fs::write(&private, format!("root:{token}:19000:0:99999:7:::\n")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(&f);
    let link_secret = std::fs::read_to_string(f.path("data/link-secret")).unwrap();
    let link_secret = link_secret.trim().to_string();
    std::os::unix::fs::symlink(&private, f.path("spool/x.yaml")).unwrap();
    std::os::unix::fs::symlink(f.path("data/link-secret"), f.path("spool/y.json")).unwrap();
    nix::unistd::mkfifo(
        &f.path("spool/pipe.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        // A file written by another user (nobody): taken as theirs, not ours.
        std::fs::write(f.path("spool/foreign.json"), CORE_DOWN_A).unwrap();
        nix::unistd::chown(
            &f.path("spool/foreign.json"),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .unwrap();
    }
    let why = |name: &str| {
        wait_for(WAIT, &format!("{name} in failed/"), || {
            std::fs::read_to_string(f.path(&format!("spool/failed/{name}.error"))).ok()
        })
    };
    assert!(
        why("x.yaml").contains("a symbolic link"),
        "{}",
        why("x.yaml")
    );
    assert!(why("y.json").contains("a symbolic link"));
    assert!(
        why("pipe.yaml").contains("named pipe"),
        "{}",
        why("pipe.yaml")
    );
    if root {
        assert!(why("foreign.json").contains("owned by uid 65534"));
    }
    // The links themselves were moved, still pointing where they did.
    assert!(
        std::fs::symlink_metadata(f.path("spool/failed/x.yaml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Nothing of the linked files anywhere the daemon writes, nor in its log.
    let mut files = Vec::new();
    files_under(&f.path("data"), &mut files);
    files_under(&f.path("spool"), &mut files);
    for (p, _, dir) in &files {
        if *dir || p.ends_with("link-secret") {
            continue;
        }
        let mut bytes = Vec::new();
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        for needle in [token, &link_secret[..32]] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{} holds a secret",
                p.display()
            );
        }
    }
    assert!(!d.log().contains(token) && !d.log().contains(&link_secret[..32]));
    // Everything under the data directory is the daemon user's only.
    let mut data = Vec::new();
    files_under(&f.path("data"), &mut data);
    assert!(data.len() > 5, "{data:?}");
    for (p, mode, dir) in &data {
        let want = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", p.display());
    }
    let mode = std::fs::metadata(f.path("spool/failed"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "spool/failed");
}

/// Someone who can write the spool directory plants a second name of the
/// link secret, a link where the daemon writes its `.error` note, and a
/// `done/` that leads elsewhere: the hard link is refused unread, the note
/// is written as a new file (the link's target untouched), and a good file
/// is not moved out of the daemon's hands, nor read twice.
#[test]
fn spool_hard_links_planted_links_and_a_redirected_done_are_refused() {
    let f = Fixture::engine();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, "precious\n").unwrap();
    let d = Daemon::start(&f);
    // A second name of the link secret.
    std::fs::hard_link(f.path("data/link-secret"), f.path("spool/h.json")).unwrap();
    let why = wait_for(WAIT, "h.json in failed/", || {
        std::fs::read_to_string(f.path("spool/failed/h.json.error")).ok()
    });
    assert!(why.contains("hard links"), "{why}");
    let secret = std::fs::read_to_string(f.path("data/link-secret")).unwrap();
    assert!(!why.contains(secret.trim()), "{why}");
    // A link planted where the next note's temporary file goes.
    std::os::unix::fs::symlink(&target, f.path("spool/failed/bad.json.error.tmp")).unwrap();
    std::fs::write(f.path("spool/bad.json"), "{ not json").unwrap();
    let why = wait_for(WAIT, "bad.json in failed/", || {
        std::fs::read_to_string(f.path("spool/failed/bad.json.error")).ok()
    });
    assert!(why.contains("bad.json"), "{why}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    // `done/` leads elsewhere: the good file stays in the spool, hidden.
    std::fs::remove_dir_all(f.path("spool/done")).ok();
    std::os::unix::fs::symlink(outside.path(), f.path("spool/done")).unwrap();
    drop_file(&f, "good.json", CORE_DOWN_A);
    wait_for(WAIT, "good.json ingested and hidden", || {
        f.path("spool/.ingested-good.json").exists().then_some(())
    });
    assert!(!outside.path().join("good.json").exists());
    // Read once: another file, ingested after it, finds one event before it.
    drop_file(&f, "later.json", r#"{"kind":"nothing","branch":"br-a"}"#);
    wait_for(WAIT, "later.json ingested", || {
        f.path("spool/.ingested-later.json").exists().then_some(())
    });
    let events = d.get("/api/v1/events");
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "system.down").count(),
        1,
        "{kinds:?}"
    );
    assert!(d.log().contains("cannot be moved to done/"), "{}", d.log());
}

/// With the link secret read off the disk, a self-signed link that lives
/// until 2100 is still refused: no link lives longer than its step's
/// deadline plus the margin (or the TTL from now).
#[test]
fn a_link_signed_to_live_for_decades_is_refused() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN_A);
    let forged = sign_link(
        &f,
        1,
        "switch",
        "it.a",
        branchguard::engine::LinkAction::Done,
        4_102_444_800,
    );
    let r = d
        .http
        .post(format!("{}/ack/{forged}", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(step(&d.incident(1), "switch")["state"], "notified");
}

/// Removing the WAL (or the database file) under the running daemon, then
/// `kill -9`: every event answered 202 is there after the restart. The
/// daemon notices at its next commit, writes back what it holds, refuses
/// writes with 503 and says so in /healthz.
#[test]
fn every_202_survives_a_removed_wal_or_database_file_and_kill_9() {
    for removed in ["branchguard.db-wal", "branchguard.db"] {
        let f = Fixture::engine();
        let d = Daemon::start(&f);
        let mut accepted = Vec::new();
        let post = |d: &Daemon, i: usize| {
            let ev =
                json!({"kind": "test.trust", "branch": "br-a", "labels": {"n": i.to_string()}});
            d.post("/api/v1/events", &ev.to_string())
        };
        for i in 0..20 {
            let (code, body) = post(&d, i);
            assert_eq!(code, 202, "{body}");
            accepted.push(body["events"][0].as_i64().unwrap());
        }
        std::fs::remove_file(f.path(&format!("data/{removed}"))).unwrap();
        let mut refused = 0;
        for i in 20..30 {
            match post(&d, i) {
                (202, body) => accepted.push(body["events"][0].as_i64().unwrap()),
                (503, body) => {
                    refused += 1;
                    assert!(
                        body["error"]
                            .as_str()
                            .unwrap()
                            .contains("removed or replaced"),
                        "{body}"
                    );
                }
                (code, body) => panic!("{removed}: {code} {body}"),
            }
        }
        assert!(refused > 0, "{removed}: writes went on into a removed file");
        let health = d.http.get(format!("{}/healthz", d.url)).send().unwrap();
        assert_eq!(health.status().as_u16(), 503, "{removed}");
        d.kill9();
        let d = Daemon::start(&f);
        let stored = d.all_ids("/api/v1/events?kind=test.trust");
        for id in &accepted {
            assert!(
                stored.contains(id),
                "{removed}: event {id} got 202 and was lost"
            );
        }
        let out = f.run(&["audit", "verify"]);
        assert_eq!(out.code, 0, "{removed}: {out:?}");
    }
}

/// A second daemon on the same data directory exits at once, naming it and
/// the running daemon's pid; `audit verify` still works beside it.
#[test]
fn a_second_daemon_on_one_data_directory_exits_naming_the_first() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    // Not exited within 10 s: killed, and no exit code.
    let second = assert_cmd::Command::new(common::binary())
        .current_dir(f.dir.path())
        .args(["run"])
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    assert!(
        second.status.code().is_some_and(|c| c != 0),
        "exits non-zero within 10 s: {second:?}"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another branchguard daemon")
            && err.contains(&format!("(pid {})", d.child.id()))
            && err.contains("data"),
        "{err}"
    );
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(d.get("/healthz")["status"], "ok");
}

/// 3,000 anonymous requests: answered 401, then 429 once the address runs
/// out of refusals; counted in a metric, summarised in one audit line; the
/// database grows by well under 2 MB.
#[test]
fn refused_requests_are_rate_limited_counted_and_never_fill_the_disk() {
    let f = Fixture::engine();
    with_tokens(&f, &[("admin", "admin", "")]);
    let d = Daemon::start(&f);
    let size = || {
        ["data/branchguard.db", "data/branchguard.db-wal"]
            .iter()
            .map(|p| std::fs::metadata(f.path(p)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let before = size();
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..3000 {
        let code = d
            .http
            .get(format!("{}/api/v1/incidents", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16();
        *codes.entry(code).or_insert(0) += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) > 2000, "{codes:?}");
    assert!(codes.get(&401).copied().unwrap_or(0) >= 1, "{codes:?}");
    assert!(size() < before + 2_000_000, "{} → {}", before, size());
    eprintln!(
        "figures: 3000 anonymous requests: {codes:?}; database and WAL {before} → {} bytes",
        size()
    );
    // While the address is out of refusals, a request with a valid token is
    // served, and so is /healthz: behind a proxy every client shares its
    // address, and one client's refusals must not turn the others away.
    let anonymous = || {
        d.http
            .get(format!("{}/api/v1/incidents", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(anonymous(), 429);
    let (code, body) = call(&d, "GET", "/api/v1/incidents", Some("admin"), "");
    assert_eq!(code, 200, "{body}");
    let health = d.http.get(format!("{}/healthz", d.url)).send().unwrap();
    assert_ne!(health.status().as_u16(), 429);
    assert_eq!(anonymous(), 429, "the valid token refilled nothing");
    // Read without a token: once the address has refilled.
    let denied = wait_for(WAIT, "the metrics page", || {
        d.metric(r#"branchguard_requests_denied_total{reason="rate_limited"}"#)
    });
    assert!(denied > 2000.0, "{denied}");
    let db = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    let lines: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE what = 'auth.denied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lines, 1, "one summary line a minute per client");
}

/// 3,000 silent connections: /healthz answers within a second meanwhile,
/// and they are closed within 15 s (headers are due within 10 s).
#[test]
fn idle_connections_do_not_stop_the_daemon_and_are_closed() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(20_000);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    let n = 3000.min(want as usize / 3);
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let addr = d.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(std::net::TcpStream::connect(&addr).unwrap());
    }
    let watch = branchguard::clock::Stopwatch::start();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("{}/healthz", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(watch.seconds() < 1.0, "{}s", watch.seconds());
    let healthz = watch.seconds();
    let since = branchguard::clock::Stopwatch::start();
    for s in &held {
        s.set_read_timeout(Some(Duration::from_secs(16))).unwrap();
    }
    for mut s in held {
        let mut b = [0u8; 1];
        // Closed by the daemon: end of stream (or a reset), not a timeout.
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was not closed: {other:?}"),
        }
    }
    assert!(since.seconds() < 15.0, "closed after {}s", since.seconds());
    eprintln!(
        "figures: {n} idle connections held; /healthz answered in {:.0} ms; all closed {:.1} s later",
        healthz * 1000.0,
        since.seconds()
    );
    // A slow client that sends a byte now and then is closed all the same.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(16)))
        .unwrap();
    let since = branchguard::clock::Stopwatch::start();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut b = [0u8; 64];
    let got = slow.read(&mut b).unwrap_or(0);
    assert!(since.seconds() < 15.0 && (got == 0 || !b.starts_with(b"HTTP/1.1 200")));
}

/// A branch head's token runs, reads and stops drills at its own branches
/// only, and the run records who started it.
#[test]
fn a_branch_heads_drills_stay_in_their_branch() {
    let f = Fixture::engine();
    f.write(
        "drills/both.yaml",
        "id: both\nplaybook: failover\nevent: { kind: system.down, severity: critical, labels: { system: core } }\nbranches: [br-a, br-b]\ntargets: { switch: 1m }\ntimeout: 2m\n",
    );
    with_tokens(
        &f,
        &[
            ("head-a", "branch-head", ", person: head.a"),
            ("ops", "ops", ""),
        ],
    );
    let d = Daemon::start(&f);
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/drills/both/run",
        Some("head-a"),
        r#"{"branch":"br-b"}"#,
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(&d, "POST", "/api/v1/drills/both/run", Some("head-a"), "");
    assert_eq!(code, 202, "{body}");
    let run = body["run"].as_i64().unwrap();
    let (_, r) = call(
        &d,
        "GET",
        &format!("/api/v1/drill-runs/{run}"),
        Some("ops"),
        "",
    );
    let branches: Vec<&str> = r["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["branch"].as_str().unwrap())
        .collect();
    assert_eq!(branches, ["br-a"], "{r}");
    assert_eq!(
        (&r["started_by"], &r["via"]),
        (&json!("head.a"), &json!("head-a"))
    );
    // An ops run of both branches: the head sees its branch's part only.
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/drills/both/run",
        Some("ops"),
        r#"{"branch":"br-b"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let other = body["run"].as_i64().unwrap();
    let (code, _) = call(
        &d,
        "GET",
        &format!("/api/v1/drill-runs/{other}"),
        Some("head-a"),
        "",
    );
    assert_eq!(code, 404, "another branch's run");
    let (code, _) = call(
        &d,
        "POST",
        &format!("/api/v1/drill-runs/{other}/abort"),
        Some("head-a"),
        "",
    );
    assert_eq!(code, 404);
    let (_, list) = call(&d, "GET", "/api/v1/drill-runs", Some("head-a"), "");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["branches"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["branch"] == "br-a")),
        "{list}"
    );
}

/// One escalate link, posted 100 times: one escalation.
#[test]
fn a_one_click_link_works_once_whatever_it_does() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN_A);
    let link = sign_link(
        &f,
        1,
        "switch",
        "head.a",
        branchguard::engine::LinkAction::Escalate,
        in_an_hour(),
    );
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let code = d
            .http
            .post(format!("{}/ack/{link}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16();
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(codes.get(&200), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&409), Some(&99), "{codes:?}");
    let inc = d.incident(1);
    assert_eq!(history(&inc, "incident.escalated").len(), 1);
    let esc = &history(&inc, "incident.escalated")[0];
    assert_eq!(
        (&esc["by"], &esc["via"]),
        (&json!("head.a"), &json!("link"))
    );
    // Another escalate link of the same incident, never used, posted once
    // the incident is resolved: its page says "no longer open", and so does
    // its POST (it paged the operations centre before).
    let (code, body) = d.post("/api/v1/incidents/1/resolve", r#"{"by":"head.a"}"#);
    assert_eq!(code, 200, "{body}");
    let other = sign_link(
        &f,
        1,
        "check",
        "head.a",
        branchguard::engine::LinkAction::Escalate,
        in_an_hour(),
    );
    let r = d
        .http
        .post(format!("{}/ack/{other}", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert!(r.text().unwrap().contains("no longer open"));
    assert_eq!(history(&d.incident(1), "incident.escalated").len(), 1);
}

/// With tokens configured, the Incident: link of an email opens that
/// incident's page in a browser (no token) through its signed grant, and
/// the grant opens no other incident.
#[test]
fn the_incident_link_of_a_message_opens_that_incident_and_no_other() {
    let f = Fixture::engine();
    with_tokens(&f, &[("ingest", "ingest", "")]);
    let d = Daemon::start(&f);
    let (code, _) = call(&d, "POST", "/api/v1/events", Some("ingest"), CORE_DOWN_A);
    assert_eq!(code, 202);
    let (code, _) = call(
        &d,
        "POST",
        "/api/v1/events",
        Some("ingest"),
        &CORE_DOWN_A.replace("br-a", "br-b"),
    );
    assert_eq!(code, 202);
    let mail = wait_for(WAIT, "it.a's email", || {
        std::fs::read_dir(f.path("data/mail"))
            .ok()?
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name().to_string_lossy().contains("incident-1-row-")
                    && e.file_name().to_string_lossy().contains("it.a")
            })
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
    });
    // The text part is quoted-printable or 7bit; the link is on one line.
    let text = mail.replace("=\r\n", "").replace("=3D", "=");
    let start = text
        .find("/incidents/1?grant=")
        .expect("a granted incident link");
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();
    let page = d.http.get(format!("{}{link}", d.url)).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().unwrap().contains("Incident #1"));
    let grant = link.split("grant=").nth(1).unwrap();
    let other = d
        .http
        .get(format!("{}/incidents/2?grant={grant}", d.url))
        .send()
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    let bare = d.http.get(format!("{}/incidents/1", d.url)).send().unwrap();
    assert_eq!(bare.status().as_u16(), 401);
}

/// What an insider with the sqlite3 CLI (but not the audit key) would do:
/// each is found by `audit verify`, which exits 1 naming the first bad row,
/// and needs no API token variables.
#[test]
fn audit_verify_finds_what_an_insider_would_do_to_the_database() {
    let f = Fixture::engine();
    // A token from the environment: `audit verify` must not need it.
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!(
            "{cfg}auth:\n  tokens:\n    - {{ name: ops, role: ops, token_env: BG_TRUST_OPS }}\n"
        ),
    );
    let token = "a-long-token-for-the-test-0001";
    let d = Daemon::start_with_env(&f, &[("BG_TRUST_OPS", token)]);
    for i in 0..60 {
        let mut ev =
            json!({"kind": "test.audit", "branch": "br-a", "labels": {"n": i.to_string()}});
        if i == 7 {
            // A time finer than the store keeps: verify found it 'altered'.
            ev["occurred_at"] = json!("2026-12-01T08:00:00.123456+08:00");
        }
        let r = d
            .http
            .post(format!("{}/api/v1/events", d.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(ev.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let r = d
        .http
        .post(format!("{}/api/v1/events", d.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(CORE_DOWN_A)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The chain head is published (file, status) within a second or so.
    let status = wait_for(WAIT, "the published head", || {
        let s: Value = d
            .http
            .get(format!("{}/api/v1/status", d.url))
            .bearer_auth(token)
            .send()
            .ok()?
            .json()
            .ok()?;
        let rows = s["audit"]["rows"].as_i64()?;
        let file = std::fs::read_to_string(f.path("data/audit.head")).ok()?;
        (file.contains(&format!("\"rows\":{rows}")) && rows > 60).then_some(s)
    });
    assert!(
        status["audit"]["hash"].as_str().unwrap().len() == 64,
        "{status}"
    );
    d.stop();
    let verify = || f.run_env(&["audit", "verify"], &[]);
    let ok = verify();
    assert_eq!(ok.code, 0, "{ok:?}");
    // It prints the head, to compare with what the `audit_anchor` channel received.
    let head: Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("data/audit.head")).unwrap()).unwrap();
    let printed = format!(
        "chain head: {} rows, hash {}",
        head["rows"],
        head["hash"].as_str().unwrap()
    );
    assert!(ok.stderr.contains(&printed), "{printed}: {ok:?}");
    let db = || rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    let backup = f.path("data/pristine.db");
    db().execute("VACUUM INTO ?1", [backup.display().to_string()])
        .unwrap();
    let restore = || {
        std::fs::copy(&backup, f.path("data/branchguard.db")).unwrap();
        let _ = std::fs::remove_file(f.path("data/branchguard.db-wal"));
        let _ = std::fs::remove_file(f.path("data/branchguard.db-shm"));
        assert_eq!(verify().code, 0, "restored: {:?}", verify());
    };
    let broken = |what: &str| {
        let out = verify();
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert!(
            out.stdout.contains("BROKEN at row"),
            "{what}: {}",
            out.stdout
        );
        out.stdout
    };
    // The newest 50 audit rows deleted.
    db().execute_batch("DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 50 FROM audit)")
        .unwrap();
    assert!(broken("truncated").contains("missing"));
    restore();
    // An incident's stored body edited (the API would serve the forgery).
    db().execute_batch(
        "UPDATE incidents SET body = replace(body, '\"tier\":1', '\"tier\":3') WHERE id = 1",
    )
    .unwrap();
    assert!(broken("incident").contains("incident 1"));
    restore();
    // An event row edited.
    db().execute_batch("UPDATE events SET branch = 'br-b' WHERE id = 5")
        .unwrap();
    assert!(broken("event").contains("event 5"));
    restore();
    // Its time and source, which its audit row no longer writes in its
    // detail (the row's own `at` and `by` say them): found all the same.
    let detail: String = db()
        .query_row(
            "SELECT detail FROM audit WHERE entity = 'event:5'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !detail.contains("occurred_at") && !detail.contains("source") && !detail.contains("null"),
        "{detail}"
    );
    db().execute_batch(
        "UPDATE events SET occurred_at = '2020-01-01T00:00:00.000Z', source = 'mallory' WHERE id = 5",
    )
    .unwrap();
    let said = broken("event time and source");
    assert!(
        said.contains("event 5") && said.contains("occurred_at, source differ"),
        "{said}"
    );
    restore();
    // Moved in time, or marked refused: the row's own `at` and `what` say
    // otherwise.
    db().execute_batch("UPDATE events SET received_at = '2020-01-01T00:00:00.000Z' WHERE id = 5")
        .unwrap();
    assert!(broken("received").contains("event 5: its stored received_at differs"));
    restore();
    db().execute_batch("UPDATE events SET rejected = 'unknown branch' WHERE id = 5")
        .unwrap();
    assert!(broken("refused").contains("event 5: its stored rejected differs"));
    restore();
    // An audit row edited, and the chain after it recomputed with plain
    // SHA-256, as someone without the key would.
    {
        let c = db();
        c.execute_batch("UPDATE audit SET by = 'mallory' WHERE seq = 10")
            .unwrap();
        let rows: Vec<(i64, String, String, String, String, String)> = c
            .prepare(
                "SELECT seq, at, entity, what, by, detail FROM audit WHERE seq >= 10 ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut prev: String = c
            .query_row(
                "SELECT lower(hex(hash)) FROM audit WHERE seq = 9",
                [],
                |r| r.get(0),
            )
            .unwrap();
        for (seq, at, entity, what, by, detail) in rows {
            let h = branchguard::store::audit::hash(&prev, seq, &at, &entity, &what, &by, &detail);
            c.execute(
                "UPDATE audit SET hash = ?1 WHERE seq = ?2",
                rusqlite::params![h, seq],
            )
            .unwrap();
            prev = h;
        }
    }
    assert!(broken("recomputed").contains("row 10"));
    restore();
    // The daemon does not start on a log cut back, rewritten under its
    // published head, or stripped of its signed start (which it would
    // otherwise sign anew).
    let refused = |what: &str, sql: &str, says: &str| {
        db().execute_batch(sql).unwrap();
        let out = f.run_env(&["run"], &[("BG_TRUST_OPS", token)]);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert!(out.stderr.contains(says), "{what}: {out:?}");
        assert!(!out.stdout.contains("listening"), "{what}: {out:?}");
        restore();
    };
    refused(
        "cut back",
        "DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 50 FROM audit)",
        "rows were removed or the database was rolled back",
    );
    refused(
        "rewritten",
        "UPDATE audit SET hash = 'f00d' WHERE seq = (SELECT MAX(seq) FROM audit)",
        "differs from the published chain head",
    );
    refused(
        "unsigned",
        "DELETE FROM meta WHERE key = 'audit_keyed'; DELETE FROM audit WHERE what = 'audit.keyed'",
        "no signed start",
    );
    // The published head forged (rows removed, and the head rewritten to
    // match without the key): said, not skipped.
    let head_file = f.path("data/audit.head");
    let genuine = std::fs::read_to_string(&head_file).unwrap();
    std::fs::write(&head_file, genuine.replace("\"rows\":", "\"rows\":1")).unwrap();
    let out = verify();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("audit.head is not signed with the audit key"),
        "{out:?}"
    );
    std::fs::write(&head_file, genuine).unwrap();
    assert_eq!(verify().code, 0);
}

/// Past `engine.queue` waiting events, intake answers 503 with Retry-After
/// at once (never a timeout), and a refused batch is stored not at all.
#[test]
fn a_full_engine_queue_answers_503_with_retry_after_and_stores_nothing_of_it() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("{cfg}engine: {{ queue: 200, max_batch: 100 }}\n"),
    );
    let d = Daemon::start(&f);
    let batch = |tag: usize| {
        let evs: Vec<Value> = (0..100)
            .map(|i| json!({"kind": "test.queue", "branch": "br-a", "labels": {"b": tag.to_string(), "i": i.to_string()}}))
            .collect();
        Value::Array(evs).to_string()
    };
    let url = format!("{}/api/v1/events", d.url);
    let results: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|t| {
                let url = url.clone();
                let body = batch(t);
                s.spawn(move || {
                    let r = reqwest::blocking::Client::new()
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .unwrap();
                    let code = r.status().as_u16();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (code, retry, r.json().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<_> = results.iter().filter(|(c, _, _)| *c == 503).collect();
    let ok: Vec<_> = results.iter().filter(|(c, _, _)| *c == 202).collect();
    assert_eq!(busy.len() + ok.len(), 40, "{results:?}");
    assert!(!busy.is_empty(), "the queue was never full");
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
    }
    let stored = d.all_ids("/api/v1/events?kind=test.queue");
    assert_eq!(stored.len(), ok.len() * 100, "only whole accepted batches");
}

/// A removed token's open event stream ends at the reload that removes it.
#[test]
fn an_event_stream_ends_when_its_token_is_removed() {
    let f = Fixture::engine();
    with_tokens(&f, &[("viewer", "viewer", ""), ("admin", "admin", "")]);
    let d = Daemon::start(&f);
    let mut stream = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{}/api/v1/stream", d.url))
        .bearer_auth(secret("viewer"))
        .send()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut first = [0u8; 16];
    stream.read_exact(&mut first).unwrap();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let without: String = cfg
        .lines()
        .filter(|l| !l.contains("name: viewer"))
        .map(|l| format!("{l}\n"))
        .collect();
    f.write("branchguard.yaml", &without);
    let (code, body) = call(&d, "POST", "/api/v1/reload", Some("admin"), "");
    assert_eq!(code, 200, "{body}");
    // Read on a thread of its own: a stream that runs on (with keep-alive
    // lines) would never end the read.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the stream ran on for 10 s after its token was removed"
    );
}

/// Live feeds hold at most half the connections; a feed whose client went
/// away gives its place back.
#[test]
fn live_feeds_are_capped_and_a_closed_one_frees_its_place() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("{cfg}limits: {{ connections: 8 }}\n"),
    );
    let d = Daemon::start(&f);
    let open = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .get(format!("{}/api/v1/stream", d.url))
            .send()
            .unwrap()
    };
    let mut held: Vec<_> = (0..4).map(|_| open()).collect();
    assert!(held.iter().all(|r| r.status().as_u16() == 200));
    let fifth = open();
    assert_eq!(fifth.status().as_u16(), 503);
    assert!(fifth.headers().contains_key("retry-after"));
    // Three clients go away: their places come back (the feed notices when
    // it next writes, at most one keep-alive later).
    held.truncate(1);
    let again = wait_for(WAIT, "a freed place", || {
        let r = open();
        (r.status().as_u16() == 200).then_some(r)
    });
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(d.get("/healthz")["status"], "ok");
}

/// An Alertmanager alert for a branch the token may not post to is refused
/// as `forbidden` (not `unknown_branch`): the same intake as every source.
#[test]
fn an_alertmanager_alert_for_a_foreign_branch_is_forbidden() {
    let f = Fixture::engine();
    with_tokens(
        &f,
        &[
            ("ingest-b", "ingest", ", branches: [br-b]"),
            ("viewer-a", "viewer", ", branches: [br-a]"),
            ("viewer", "viewer", ""),
        ],
    );
    let d = Daemon::start(&f);
    let payload = json!({
        "version": "4",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "CoreDown", "branch": "br-a", "severity": "critical"}},
            {"status": "firing", "labels": {"alertname": "CoreDown", "branch": "br-b", "severity": "critical"}},
        ]
    });
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/alertmanager",
        Some("ingest-b"),
        &payload.to_string(),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["reason"], "forbidden", "{body}");
    assert_eq!(
        d.metric(r#"branchguard_events_rejected_total{reason="forbidden"}"#),
        Some(1.0)
    );
    // Kept for the operations centre, not filed under br-a, whose readers
    // would read the sender's text as their branch's.
    let (_, mine) = call(&d, "GET", "/api/v1/events", Some("viewer-a"), "");
    assert_eq!(mine["items"].as_array().unwrap().len(), 0, "{mine}");
    let (_, all) = call(&d, "GET", "/api/v1/events", Some("viewer"), "");
    let refused: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["rejected"].is_string())
        .collect();
    assert_eq!(refused.len(), 1, "{all}");
    assert!(
        refused[0]["rejected"].as_str().unwrap().contains("br-a"),
        "{all}"
    );
}

/// A damaged database is found at start-up (and said so), not when a read
/// first hits the damaged page.
#[test]
fn a_damaged_database_is_found_at_start_up() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    for i in 0..200 {
        let ev = json!({"kind": "test.pages", "branch": "br-a", "summary": "x".repeat(500), "labels": {"n": i.to_string()}});
        d.post("/api/v1/events", &ev.to_string());
    }
    d.stop();
    // Everything into the database file first: whether the daemon's last
    // connection at stop folds the WAL in depends on which closes last (a
    // read-only one cannot), and the file alone is what is damaged here.
    let path = f.path("data/branchguard.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    // Scribble over the middle half of the file (not the header): a few
    // pages could be free ones quick_check does not read, half cannot.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 40_000, "{}", bytes.len());
    let n = bytes.len();
    for b in &mut bytes[n / 4..n * 3 / 4] {
        *b = 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let out = f.run(&["run"]);
    assert!(out.code > 0, "refused to start: {out:?}");
    assert!(
        out.stderr.contains("quick_check") && out.stderr.contains("corrupt"),
        "{out:?}"
    );
}

/// Writes a spool file as a gateway should: under a hidden name, then
/// renamed (a file written in place can be read half-written).
fn drop_file(f: &Fixture, name: &str, text: &str) {
    let tmp = f.path(&format!("spool/.{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, f.path(&format!("spool/{name}"))).unwrap();
}
