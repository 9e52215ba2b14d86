//! Response report over a year: 100,000 incidents opened across 365 days at
//! 200 branches, each answered (acknowledged, done, resolved) after delays
//! that vary, written through the real store; then the real daemon on that
//! data directory answers `GET /api/v1/reports/response` for the year.
//! Prints how long it takes (goal: under 2 s) and what it counted; asserts
//! only that every incident was counted.
//!
//! Run: `cargo bench --bench reports`

mod common;

use std::path::Path;

use branchguard::clock::Stopwatch;
use branchguard::engine::{DeliveryUpdate, Engine, Round, Verb, Who};
use branchguard::event::{Event, Severity, Status};
use chrono::Duration;
use serde_json::Value;

const INCIDENTS: usize = 100_000;
const BRANCHES: usize = 200;
const PER_COMMIT: usize = 1000;

fn network(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("playbooks"))?;
    std::fs::write(
        dir.join("playbooks/failover.yaml"),
        "id: failover\nname: Failover\ntrigger: { kind: bench.down }\ngroup_by: [branch, n]\nsteps:\n  - id: switch\n    assignee: role:duty\n    deadline: 15m\n  - id: vouchers\n    assignee: role:duty\n    deadline: 1h\n",
    )?;
    let mut y =
        String::from("listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\npeople:\n");
    for b in 0..BRANCHES {
        y.push_str(&format!(
            "  - {{ id: d{b}, name: Duty {b}, email: d{b}@bank.example, roles: [duty], branches: [b{b}] }}\n"
        ));
    }
    y.push_str("branches:\n");
    for b in 0..BRANCHES {
        y.push_str(&format!("  - {{ id: b{b}, name: Branch {b} }}\n"));
    }
    std::fs::write(dir.join("branchguard.yaml"), y)?;
    Ok(())
}

/// A year of incidents, answered, through the engine and the store as the
/// daemon would write them; every message marked delivered.
fn year(dir: &Path) -> anyhow::Result<String> {
    let loaded = branchguard::config::load(&dir.join("branchguard.yaml"))
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut store = branchguard::store::open(&loaded.config)?.writer;
    let end = branchguard::clock::now() - Duration::days(1);
    let start = end - Duration::days(365);
    let gap = Duration::days(365) / INCIDENTS as i32;
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, start);
    for chunk in 0..INCIDENTS / PER_COMMIT {
        let mut round = Round::default();
        let mut last = start;
        for k in chunk * PER_COMMIT..(chunk + 1) * PER_COMMIT {
            let t = start + gap * k as i32;
            let b = k % BRANCHES;
            let ev = Event {
                kind: "bench.down".into(),
                branch: format!("b{b}"),
                severity: Severity::Critical,
                status: Status::Firing,
                labels: [("n".to_string(), k.to_string())].into(),
                summary: None,
                occurred_at: t,
                source: "bench".into(),
            };
            let got = e.ingest(vec![(ev, t)], "bench", t, &mut round);
            let id = got[0].1[0];
            let by = format!("d{b}");
            let who = Who::new(Some(&by), None);
            // Delays that vary: acknowledged in 10 s to ~17 min, done after
            // a few minutes more; one in seven misses its 15 minutes.
            let ack = t + Duration::seconds(10 + (k as i64 * 37) % 1000);
            let done = ack + Duration::seconds(60 + (k as i64 * 53) % 600);
            for (step, at) in [("switch", ack), ("vouchers", ack)] {
                e.step_action(id, step, Verb::Ack, who, at, &mut round)?;
            }
            for (step, at) in [("switch", done), ("vouchers", done)] {
                e.step_action(id, step, Verb::Done, who, at, &mut round)?;
            }
            last = done + Duration::seconds(30);
            e.resolve(id, who, last, &mut round)?;
        }
        e.finish(last, &mut round);
        let c = store.commit(&round)?;
        let mut delivered = Round::default();
        delivered.deliveries = c
            .outbox
            .iter()
            .map(|id| DeliveryUpdate {
                id: *id,
                attempts: 1,
                delivered_at: Some(last),
                next_attempt_at: None,
                failed_at: None,
                last_error: None,
            })
            .collect();
        store.commit(&delivered)?;
    }
    Ok(start
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .to_string())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    network(dir.path())?;
    let t = Stopwatch::start();
    let from = year(dir.path())?;
    let db = std::fs::metadata(dir.path().join("data/branchguard.db"))?.len();
    println!(
        "response report benchmark: {INCIDENTS} incidents over 365 days at {BRANCHES} branches, written in {:.1} s, database {} MB",
        t.seconds(),
        db >> 20
    );
    let (mut child, url) = common::start(dir.path());
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let mut took = Vec::new();
    for format in ["json", "json", "json", "csv", "md"] {
        let t = Stopwatch::start();
        let r = http
            .get(format!("{url}/api/v1/reports/response"))
            .query(&[
                ("from", from.as_str()),
                ("to", "2099-12-31"),
                ("format", format),
            ])
            .send()?;
        let body = r.text()?;
        took.push(t.seconds());
        if format == "json" {
            let v: Value = serde_json::from_str(&body)?;
            let rows = v["rows"].as_array().map(Vec::len).unwrap_or(0);
            let counted: u64 = v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["step"] == "switch")
                .map(|r| r["incidents"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(counted, INCIDENTS as u64, "every incident is counted");
            println!(
                "  {format}: {:.2} s, {rows} rows, {counted} incidents counted",
                t.seconds()
            );
        } else {
            println!("  {format}: {:.2} s, {} KB", t.seconds(), body.len() >> 10);
        }
    }
    println!(
        "GET /api/v1/reports/response for the year: p50 {:.2} s, max {:.2} s (goal: under 2 s)",
        common::percentile(&mut took.clone(), 0.5),
        took.iter().cloned().fold(0.0, f64::max)
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
