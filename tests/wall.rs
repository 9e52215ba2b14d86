//! The operations centre's wall screen in a real browser (Debian's Chromium
//! through playwright-core, tests/browser/wall.mjs) against the real daemon:
//! 300 open incidents at 40 branches, one with an overdue critical step, and
//! a drill running. Screenshots go to target/test-artifacts/.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, Fixture, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn fixture() -> Fixture {
    let f = Fixture::engine();
    // Thirty-eight more branches: forty in all.
    let more: String = (3..=40)
        .map(|n| format!("  - {{ id: br-{n:02}, name: Branch {n:02} }}\n"))
        .collect();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let cfg = cfg.replace(
        "  - { id: br-b, name: Branch B, neighbours: [br-a] }\n",
        &format!("  - {{ id: br-b, name: Branch B, neighbours: [br-a] }}\n{more}"),
    );
    f.write("branchguard.yaml", &cfg);
    f.write(
        "playbooks/wall.yaml",
        "id: wall\nname: Queue system slow\ntrigger: { kind: queue.slow }\ngroup_by: [branch, system]\nresolve: manual\nsteps:\n  - id: tell\n    title: Tell the customers waiting\n    assignee: role:staff\n    deadline: 1h\n  - id: look\n    title: Look at the queue system\n    assignee: role:it-duty\n    critical: true\n    deadline: 2h\n",
    );
    f.write(
        "playbooks/guard.yaml",
        "id: guard\nname: Security alarm\ntrigger: { kind: alarm.security }\nresolve: manual\nsteps:\n  - id: intervene\n    title: Security intervenes\n    assignee: role:security\n    critical: true\n    deadline: 2s\n",
    );
    f.write(
        "drills/wall-drill.yaml",
        "id: wall-drill\nplaybook: wall\nevent: { kind: queue.slow, labels: { system: drill } }\nbranches: [br-b]\ntargets: { look: 10m, tell: 10m }\ntimeout: 10m\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

#[test]
fn the_wall_fits_the_screen_shows_the_overdue_critical_step_first_and_keeps_drills_apart() {
    let f = fixture();
    let d = Daemon::start(&f);
    // 299 ordinary incidents at 40 branches, in one request.
    let branches: Vec<String> = std::iter::once("br-a".to_string())
        .chain(std::iter::once("br-b".to_string()))
        .chain((3..=40).map(|n| format!("br-{n:02}")))
        .collect();
    let storm: Vec<Value> = (0..299)
        .map(|i| json!({"kind": "queue.slow", "branch": branches[i % 40], "labels": {"system": format!("q{}", i / 40)}}))
        .collect();
    let (code, body) = d.post("/api/v1/events", &Value::Array(storm).to_string());
    assert_eq!(code, 202, "{body}");
    // The 300th: a security alarm whose critical step is overdue in 2 s.
    let (code, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"alarm.security","branch":"br-17"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let urgent = body["incidents"][0].as_i64().unwrap();
    let (code, body) = d.post("/api/v1/drills/wall-drill/run", "{}");
    assert_eq!(code, 202, "{body}");
    let drill = body["incidents"][0].as_i64().unwrap();
    wait_for(WAIT, "the critical step to be overdue", || {
        let i = d.incident(urgent);
        (common::step(&i, "intervene")["state"] == "overdue").then_some(())
    });
    // The API counts real incidents apart from drills too.
    let board = d.get("/api/v1/dashboard?limit=1000");
    assert_eq!(
        board["incidents"]["open"], 300,
        "{}",
        board["incidents"]["drills"]
    );
    assert_eq!(board["incidents"]["drills"]["open"], 1);
    let out_dir = common::browser::artifacts();
    let figures = common::browser::run(
        "wall.mjs",
        &[
            ("BG_URL", d.url.clone()),
            ("BG_URGENT", urgent.to_string()),
            ("BG_DRILL_INCIDENT", drill.to_string()),
            ("BG_OUT", out_dir.display().to_string()),
        ],
    );
    eprintln!("wall figures: {figures}");
    assert_eq!(figures["first"], urgent, "{figures}");
    assert_eq!(figures["open"], "300", "real incidents only: {figures}");
    for view in ["1920x1080", "1280x800", "3840x2160", "390x844"] {
        let f = &figures["views"][view];
        assert!(f["tiles"].as_u64() > Some(0), "{figures}");
        assert!(f["scroll_h"].as_u64() <= f["height"].as_u64(), "{figures}");
        assert!(f["scroll_w"].as_u64() <= f["width"].as_u64(), "{figures}");
        assert!(out_dir.join(format!("wall-{view}.png")).is_file());
    }
}

/// The daemon killed and started again under an open wall: the banner shows,
/// the last picture stays, and live data comes back without a reload.
#[test]
fn the_wall_shows_a_lost_feed_and_comes_back_by_itself_after_a_restart() {
    let browser_dir = common::browser::dir();
    let f = fixture();
    let d = Daemon::start(&f);
    let (code, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"queue.slow","branch":"br-a","labels":{"system":"q"}}"#,
    );
    assert_eq!(code, 202, "{body}");
    // Started again on the same port: the page's address.
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}")),
    );
    let signals = tempfile::tempdir().unwrap();
    let node = Command::new("node")
        .arg(browser_dir.join("wall-restart.mjs"))
        .current_dir(&browser_dir)
        .env("BG_URL", &d.url)
        .env("BG_SIGNALS", signals.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    wait_for(WAIT, "the wall to be up", || {
        signals.path().join("ready").exists().then_some(())
    });
    d.kill9();
    wait_for(Duration::from_secs(30), "the banner", || {
        signals.path().join("banner").exists().then_some(())
    });
    let again = Daemon::start(&f);
    let out = node.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("restart figures: {stdout}");
    assert_eq!(again.url, format!("http://127.0.0.1:{port}"));
}
