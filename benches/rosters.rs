//! Roster resolution in a storm: 10,000 new incidents at 5,000 branches whose
//! ten roles are all rostered, against the same storm with no rosters (each
//! role held by one person per branch). In-process engine ingest, no I/O:
//! the share of each round a roster adds. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench rosters`

use std::path::Path;

use branchguard::clock::Stopwatch;
use branchguard::engine::{Engine, Round};
use branchguard::event::{Event, Severity, Status};
use chrono::{DateTime, Utc};

const BRANCHES: usize = 5000;
const ROLES: usize = 10;
const INCIDENTS: usize = 10_000;
const RUNS: usize = 5;

fn network(dir: &Path, rosters: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("playbooks"))?;
    let mut pb = String::from(
        "id: storm\nname: Storm\ntrigger: { kind: storm.test }\ngroup_by: [branch, system]\nsteps:\n",
    );
    for r in 0..ROLES {
        pb.push_str(&format!(
            "  - id: s{r}\n    assignee: role:r{r}\n    deadline: 1h\n    escalate:\n      - {{ after: 30m, to: [role:r{r}] }}\n"
        ));
    }
    std::fs::write(dir.join("playbooks/storm.yaml"), pb)?;
    let all: Vec<String> = (0..BRANCHES).map(|b| format!("b{b:05}")).collect();
    let mut y = String::from(
        "timezone: Asia/Shanghai\nnotify:\n  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/\" }\npeople:\n",
    );
    // Without rosters: two people per branch, five roles each.
    for (i, b) in all.iter().enumerate() {
        for half in 0..2 {
            let roles: Vec<String> = (0..ROLES / 2)
                .map(|r| format!("r{}", half * 5 + r))
                .collect();
            y.push_str(&format!(
                "  - {{ id: p{i}.{half}, name: P {i} {half}, email: p{i}.{half}@bank.example, roles: [{}], branches: [{b}] }}\n",
                roles.join(", ")
            ));
        }
    }
    // With rosters: twenty duty people per role, for the whole network.
    for r in 0..ROLES {
        for k in 0..20 {
            y.push_str(&format!(
                "  - {{ id: d{r}.{k}, name: D {r} {k}, email: d{r}.{k}@bank.example }}\n"
            ));
        }
    }
    y.push_str("branches:\n");
    for (i, b) in all.iter().enumerate() {
        y.push_str(&format!("  - {{ id: {b}, name: Branch {i} }}\n"));
    }
    std::fs::write(dir.join("branchguard.yaml"), y)?;
    if rosters {
        std::fs::create_dir_all(dir.join("rosters"))?;
        for r in 0..ROLES {
            let day: Vec<String> = (0..10).map(|k| format!("d{r}.{k}")).collect();
            let night: Vec<String> = (10..20).map(|k| format!("d{r}.{k}")).collect();
            std::fs::write(
                dir.join(format!("rosters/r{r}.yaml")),
                format!(
                    "id: r{r}\nrole: r{r}\nbranches: all\nlayers:\n  - name: days\n    start: 2026-11-02T08:00\n    shift: 1d\n    people: [{}]\n    only: {{ days: [working], from: \"08:00\", to: \"20:00\" }}\n  - name: nights\n    start: 2026-11-02T20:00\n    shift: 7d\n    people: [{}]\n    only: {{ from: \"20:00\", to: \"08:00\" }}\n  - name: weekends\n    start: 2026-11-07T08:00\n    shift: 1d\n    people: [{}]\n    only: {{ days: [weekend, holiday], from: \"08:00\", to: \"20:00\" }}\noverrides:\n  - {{ person: d{r}.3, from: 2026-11-24T12:00, to: 2026-11-24T18:00 }}\nhandoff: {{ notify: true }}\n",
                    day.join(", "),
                    night.join(", "),
                    day.join(", ")
                ),
            )?;
        }
    }
    Ok(())
}

fn storm(t0: DateTime<Utc>) -> Vec<(Event, DateTime<Utc>)> {
    (0..INCIDENTS)
        .map(|i| {
            let e = Event {
                kind: "storm.test".into(),
                branch: format!("b{:05}", i % BRANCHES),
                severity: Severity::Critical,
                status: Status::Firing,
                labels: [("system".to_string(), format!("s{}", i / BRANCHES))].into(),
                summary: None,
                occurred_at: t0,
                source: "bench".into(),
            };
            (e, t0)
        })
        .collect()
}

/// The best of `RUNS` storms into a fresh engine: events per second and
/// messages queued.
fn run(rosters: bool) -> anyhow::Result<(f64, usize)> {
    let dir = tempfile::tempdir()?;
    network(dir.path(), rosters)?;
    let loaded = branchguard::config::load(&dir.path().join("branchguard.yaml"))
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    assert_eq!(loaded.rosters.len(), if rosters { ROLES } else { 0 });
    let t0 = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")?.to_utc();
    let mut best = f64::MAX;
    let mut messages = 0;
    for _ in 0..RUNS {
        let mut engine = Engine::new(loaded.clone(), Vec::new(), 1, 1, t0);
        let mut round = Round::default();
        engine.tick(t0, &mut round);
        let evs = storm(t0);
        let watch = Stopwatch::start();
        let mut round = Round::default();
        engine.ingest(evs, "bench", t0, &mut round);
        engine.finish(t0, &mut round);
        best = best.min(watch.seconds());
        messages = round.outbox.len();
    }
    Ok((INCIDENTS as f64 / best, messages))
}

fn main() -> anyhow::Result<()> {
    println!(
        "roster benchmark: {INCIDENTS} new incidents at {BRANCHES} branches, {ROLES} roles a step each; best of {RUNS}"
    );
    let (without, m0) = run(false)?;
    println!("without rosters: {without:.0} incidents/s ({m0} messages)");
    let (with, m1) = run(true)?;
    println!("with a roster for each of the {ROLES} roles: {with:.0} incidents/s ({m1} messages)");
    println!(
        "with rosters / without: {:.2} (goal: at least 0.90)",
        with / without
    );
    Ok(())
}
