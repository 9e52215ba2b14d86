//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (tests/browser/dashboard.mjs), against the real daemon with
//! tokens, a scored drill and live incidents. Screenshots are written to
//! `target/test-artifacts/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Daemon, Fixture, wait_for};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const DRILL: &str = "scored";

fn secret(name: &str) -> String {
    format!("secret-{name}-0123456789")
}

/// `closed` is a port nobody listens on (br-a's queue system is down),
/// `open` one the test listens on (br-b's ATM is up).
fn fixture(closed: u16, open: u16) -> Fixture {
    let f = Fixture::engine();
    let mut auth = String::from("auth:\n  tokens:\n");
    for (name, role, more) in [
        ("ops", "ops", ""),
        (
            "head-a",
            "branch-head",
            ", person: head.a, branches: [br-a]",
        ),
        ("ingest", "ingest", ""),
    ] {
        let hash = hex::encode(Sha256::digest(secret(name).as_bytes()));
        auth.push_str(&format!(
            "    - {{ name: {name}, role: {role}, token_sha256: \"{hash}\"{more} }}\n"
        ));
    }
    let probe = |system: &str, port: u16| {
        format!(
            "systems: [{{ name: {system}, probe: {{ tcp: \"127.0.0.1:{port}\", interval: 1s, timeout: 1s, failures: 1 }} }}]"
        )
    };
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml"))
        .unwrap()
        .replace(
            "{ id: br-a, name: Branch A, neighbours: [br-b] }",
            &format!(
                "{{ id: br-a, name: Branch A, neighbours: [br-b], {} }}",
                probe("queue", closed)
            ),
        )
        .replace(
            "{ id: br-b, name: Branch B, neighbours: [br-a] }",
            &format!(
                "{{ id: br-b, name: Branch B, neighbours: [br-a], {} }}",
                probe("atm", open)
            ),
        );
    assert!(cfg.contains("queue") && cfg.contains("atm"), "{cfg}");
    f.write("branchguard.yaml", &format!("{cfg}{auth}"));
    f.write(
        &format!("drills/{DRILL}.yaml"),
        &format!("id: {DRILL}\nplaybook: failover\nevent: {{ kind: system.down, severity: critical, labels: {{ system: core }} }}\ntargets: {{ switch: 1s }}\nbranches: [br-a, br-b]\ntimeout: 2m\n"),
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

fn call(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let url = format!("{}{path}", d.url);
    let r = match method {
        "GET" => d.http.get(url),
        _ => d
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    }
    .bearer_auth(secret("ops"))
    .send()
    .expect("request");
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

/// Runs the drill at `branch` and waits for its score. A `late` answer comes
/// only after the step escalated (2 s, twice the drill's 1 s target), so it
/// scores far less.
fn drill_run(d: &Daemon, branch: &str, late: bool) -> f64 {
    let (code, body) = call(
        d,
        "POST",
        &format!("/api/v1/drills/{DRILL}/run"),
        &format!(r#"{{"branch":"{branch}"}}"#),
    );
    assert_eq!(code, 202, "{body}");
    let run = body["run"].as_i64().unwrap();
    let incident = body["incidents"][0].as_i64().unwrap();
    if late {
        wait_for(WAIT, "the step to escalate", || {
            let (_, i) = call(d, "GET", &format!("/api/v1/incidents/{incident}"), "");
            (common::step(&i, "switch")["escalations"].as_u64() >= Some(1)).then_some(())
        });
    }
    // The ops desk records the branch's IT duty, who answered.
    let by = if branch == "br-a" { "it.a" } else { "it.b" };
    for verb in ["ack", "done"] {
        let (code, body) = call(
            d,
            "POST",
            &format!("/api/v1/incidents/{incident}/steps/switch/{verb}"),
            &format!(r#"{{"by":"{by}"}}"#),
        );
        assert_eq!(code, 200, "{verb}: {body}");
    }
    wait_for(WAIT, "the run's score", || {
        let (_, r) = call(d, "GET", &format!("/api/v1/drill-runs/{run}"), "");
        (r["status"] == "finished").then(|| r["branches"][0]["score"].as_f64())?
    })
}

/// Width and height from a PNG's header.
fn png_size(path: &PathBuf) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let n = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    (n(16), n(20))
}

#[test]
fn the_dashboard_in_chromium_is_live_acts_scopes_by_token_and_shows_drill_trends() {
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = common::sinks::free_port();
    let f = fixture(refused.port, up.local_addr().unwrap().port());
    let d = Daemon::start(&f);
    let mut scores = vec![drill_run(&d, "br-a", false), drill_run(&d, "br-a", true)];
    drill_run(&d, "br-b", false);
    // The order the scoreboard draws them in: oldest first, from the API.
    let (_, runs) = call(
        &d,
        "GET",
        &format!("/api/v1/drill-runs?drill={DRILL}&branch=br-a"),
        "",
    );
    let from_api: Vec<f64> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|r| {
            r["branches"]
                .as_array()?
                .iter()
                .find(|b| b["branch"] == "br-a")?["score"]
                .as_f64()
        })
        .collect();
    assert_eq!(from_api, scores);
    assert!(
        scores[1] < scores[0],
        "the late answer scored lower: {scores:?}"
    );
    // A real incident at br-a for the branch head to see.
    let (code, body) = call(
        &d,
        "POST",
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#,
    );
    assert_eq!(code, 202, "{body}");

    let out_dir = common::browser::artifacts();
    let _ = std::fs::remove_file(out_dir.join("dashboard-1280x800.png"));
    let _ = std::fs::remove_file(out_dir.join("dashboard-390x844.png"));
    let figures = common::browser::run(
        "dashboard.mjs",
        &[
            ("BG_URL", d.url.clone()),
            ("BG_OPS_TOKEN", secret("ops")),
            ("BG_HEAD_TOKEN", secret("head-a")),
            ("BG_INGEST_TOKEN", secret("ingest")),
            ("BG_DRILL", DRILL.to_string()),
            (
                "BG_SCORES",
                serde_json::to_string(&std::mem::take(&mut scores)).unwrap(),
            ),
            ("BG_OUT", out_dir.display().to_string()),
        ],
    );
    eprintln!("browser figures: {figures}");
    // Live: far sooner than a reload would show it, with room for a loaded CI machine.
    assert!(
        figures["event_to_page_ms"].as_u64().unwrap() < 5000,
        "{figures}"
    );
    // The click on the page was an acknowledgement the API records.
    let id = figures["acked_incident"].as_i64().unwrap();
    let (_, inc) = call(&d, "GET", &format!("/api/v1/incidents/{id}"), "");
    let ack = inc["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["what"].as_str().is_some_and(|w| w.contains("ack")));
    assert!(
        ack.is_some_and(|h| h["by"] == "head.b" && h["via"] == "ops"),
        "{inc}"
    );
    assert_eq!(
        png_size(&out_dir.join("dashboard-1280x800.png")),
        (1280, 800)
    );
    let (w, h) = png_size(&out_dir.join("dashboard-390x844.png"));
    assert!(w == 390 && h >= 844, "{w}x{h}");

    // The page cannot be framed by another site (its buttons act).
    let page = d.http.get(format!("{}/", d.url)).send().unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // The live feed needs a token, says hello at once, and does not hold up
    // a graceful stop while a page is still connected.
    let anonymous = d
        .http
        .get(format!("{}/api/v1/stream", d.url))
        .send()
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let mut feed = d
        .http
        .get(format!("{}/api/v1/stream", d.url))
        .bearer_auth(secret("head-a"))
        .send()
        .unwrap();
    assert_eq!(
        feed.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut first = [0u8; 12];
    std::io::Read::read_exact(&mut feed, &mut first).unwrap();
    assert_eq!(&first, b"event: hello");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
}
