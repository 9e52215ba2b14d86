//! Dashboard benchmark: the real binary with 5,000 branches and 10,000 open
//! incidents. Prints how long `GET /api/v1/dashboard` takes and how big it
//! is, and, when Chromium and playwright-core are installed, how long the page
//! takes to show in the browser. Asserts nothing about speed.
//!
//! Run: `cargo bench --bench dashboard`

mod common;
use std::process::Command;

use branchguard::clock::Stopwatch;
use serde_json::{Value, json};

const BRANCHES: usize = 5000;
const INCIDENTS: usize = 10_000;

fn config() -> String {
    let mut c = String::from(
        "listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\npeople:\n  - { id: duty, name: Duty, email: duty@bank.example, roles: [duty], branches: [b0] }\nbranches:\n",
    );
    for i in 0..BRANCHES {
        c.push_str(&format!(
            "  - {{ id: b{i}, name: Branch {i}, region: r{} }}\n",
            i % 20
        ));
    }
    c
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("branchguard.yaml"), config()).unwrap();
    std::fs::write(
        dir.path().join("playbooks/bench.yaml"),
        "id: bench\nname: Bench\ntrigger: { kind: bench.event }\ngroup_by: [branch, n]\nsteps:\n  - id: look\n    assignee: person:duty\n    deadline: 1h\n",
    )
    .unwrap();
    let (mut child, url) = common::start(dir.path());
    let http = reqwest::blocking::Client::new();
    for chunk in (0..INCIDENTS).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"kind": "bench.event", "branch": format!("b{}", i % BRANCHES), "labels": {"n": i.to_string()}}))
            .collect();
        let r = http
            .post(format!("{url}/api/v1/events"))
            .json(&batch)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    println!("dashboard benchmark: {BRANCHES} branches, {INCIDENTS} open incidents");
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let t = Stopwatch::start();
        let body = http
            .get(format!("{url}/api/v1/dashboard"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        took.push(t.seconds() * 1000.0);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["incidents"]["open"], INCIDENTS);
        bytes = body.len();
    }
    println!(
        "GET /api/v1/dashboard: p50 {:.0} ms, p99 {:.0} ms, {} KB",
        common::percentile(&mut took, 0.5),
        common::percentile(&mut took, 0.99),
        bytes / 1024
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/render.mjs");
    match Command::new("node").arg(script).arg(&url).output() {
        Ok(o) if o.status.success() => {
            print!("in Chromium: {}", String::from_utf8_lossy(&o.stdout))
        }
        Ok(o) => println!(
            "in Chromium: not measured: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => println!("in Chromium: not measured (node: {e})"),
    }
    let _ = child.kill();
    let _ = child.wait();
}
