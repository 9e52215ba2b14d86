//! Engine benchmark at network scale: a generated network of thousands of
//! branches with an open incident at each, then the cost of ingesting events,
//! of finding the next timer and of firing timers. In-process, no I/O: this is
//! the engine thread's share of every round. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench engine`

use std::path::Path;

use branchguard::clock::Stopwatch;
use branchguard::engine::{Engine, Round};
use branchguard::event::{Event, Severity, Status};
use chrono::{DateTime, Duration};

const BRANCHES: usize = 3000;

fn network(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("playbooks"))?;
    for e in std::fs::read_dir(root.join("playbooks"))? {
        let e = e?;
        std::fs::copy(e.path(), dir.join("playbooks").join(e.file_name()))?;
    }
    let mut y = String::from(
        "timezone: Asia/Shanghai\nnotify:\n  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/\" }\n    lobby-display: { url: \"http://127.0.0.1:9/\" }\n    queue-caller: { url: \"http://127.0.0.1:9/\" }\npeople:\n",
    );
    let all: Vec<String> = (0..BRANCHES).map(|b| format!("b{b:05}")).collect();
    y.push_str(&format!(
        "  - {{ id: tech, name: Tech, email: tech@bank.example, roles: [technology, spokesperson], branches: [{}] }}\n",
        all.join(", ")
    ));
    for (i, b) in all.iter().enumerate() {
        for role in [
            "branch-head",
            "lobby-manager",
            "operations-supervisor",
            "security",
            "it-duty",
        ] {
            let extra = if role == "branch-head" {
                ", branch-president"
            } else {
                ""
            };
            y.push_str(&format!(
                "  - {{ id: {role}.{i}, name: {role} {i}, email: {role}.{i}@bank.example, roles: [{role}{extra}, staff], branches: [{b}] }}\n"
            ));
        }
    }
    y.push_str("branches:\n");
    for (i, b) in all.iter().enumerate() {
        let n = &all[(i + 1) % BRANCHES];
        y.push_str(&format!(
            "  - {{ id: {b}, name: Branch {i}, neighbours: [{n}] }}\n"
        ));
    }
    std::fs::write(dir.join("branchguard.yaml"), y)?;
    Ok(())
}

fn event(branch: &str, kind: &str, labels: &[(&str, &str)]) -> Event {
    Event {
        kind: kind.into(),
        branch: branch.into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        summary: None,
        occurred_at: DateTime::UNIX_EPOCH,
        source: "bench".into(),
    }
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    network(dir.path())?;
    let watch = Stopwatch::start();
    let loaded = branchguard::config::load(&dir.path().join("branchguard.yaml"))
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    println!(
        "engine benchmark: {BRANCHES} branches, {} people; config loaded and checked in {:.0} ms",
        loaded.config.people.len(),
        watch.seconds() * 1000.0
    );
    let t0 = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")?.to_utc();
    let mut engine = Engine::new(loaded, Vec::new(), 1, 1, t0);

    let branches: Vec<String> = (0..BRANCHES).map(|b| format!("b{b:05}")).collect();
    let opens: Vec<(Event, DateTime<chrono::Utc>)> = branches
        .iter()
        .map(|b| (event(b, "system.down", &[("system", "core-banking")]), t0))
        .collect();
    let watch = Stopwatch::start();
    let mut round = Round::default();
    engine.ingest(opens, "test", t0, &mut round);
    engine.finish(t0, &mut round);
    let s = watch.seconds();
    println!(
        "open {BRANCHES} incidents (one per branch, {} messages queued): {:.1} ms, {:.1} µs per incident",
        round.outbox.len(),
        s * 1000.0,
        s * 1e6 / BRANCHES as f64
    );

    for (label, kind, labels) in [
        (
            "1000 events joining open incidents",
            "system.down",
            vec![("system", "core-banking")],
        ),
        ("1000 unmatched events", "atm.cash_low", vec![]),
    ] {
        let evs: Vec<(Event, DateTime<chrono::Utc>)> = (0..1000)
            .map(|i| (event(&branches[i % BRANCHES], kind, &labels), t0))
            .collect();
        let watch = Stopwatch::start();
        let mut round = Round::default();
        engine.ingest(evs, "test", t0, &mut round);
        engine.finish(t0, &mut round);
        let s = watch.seconds();
        println!(
            "{label}: {:.2} ms, {:.1} µs per event",
            s * 1000.0,
            s * 1e6 / 1000.0
        );
    }

    let watch = Stopwatch::start();
    let mut due = None;
    for _ in 0..100 {
        due = engine.next_due();
    }
    println!(
        "next timer among {} live incidents: {:.0} µs per lookup (next due {:?})",
        engine.live().count(),
        watch.seconds() * 1e6 / 100.0,
        due.map(|d| d - t0)
    );

    let watch = Stopwatch::start();
    let mut round = Round::default();
    engine.tick(t0 + Duration::seconds(30), &mut round);
    println!("a tick with nothing due: {:.0} µs", watch.seconds() * 1e6);

    let watch = Stopwatch::start();
    let mut round = Round::default();
    engine.tick(t0 + Duration::minutes(10), &mut round);
    engine.finish(t0 + Duration::minutes(10), &mut round);
    println!(
        "a tick firing {} escalations at once: {:.1} ms",
        round
            .history
            .iter()
            .filter(|h| h.what == "step.escalated")
            .count(),
        watch.seconds() * 1000.0
    );
    Ok(())
}
