//! `cargo bench --bench storm -- postgres`: the daemon on PostgreSQL beside
//! the same daemon on SQLite in one run: ingest of new incidents (durable
//! 202s), event -> webhook latency at rest, and the time a standby takes to
//! lead after the leader is killed (10 kills). Needs a server:
//! `eval "$(bash .ci/postgres)"` sets `BRANCHGUARD_TEST_POSTGRES`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use branchguard::clock::Stopwatch;
use branchguard::store::pg_testing::Database;
use serde_json::json;

use super::latency::{Receiver, pings};
use super::{Kind, Target, blast, branchguard_config, common, settle};

const KEY: &str = "7171717171717171717171717171717171717171717171717171717171717171";
/// The lease of the takeover runs.
const LEASE_S: u64 = 3;

/// The storm network on PostgreSQL at `url` (in `BG_BENCH_URL`), with `ha`.
fn start_on(dir: &Path, hook: &str, url: &str, ha: Option<&str>) -> Target {
    std::fs::create_dir_all(dir.join("playbooks")).expect("dir");
    let mut cfg = branchguard_config(hook);
    cfg.push_str("store:\n  postgres: { url_env: BG_BENCH_URL }\n");
    if let Some(node) = ha {
        cfg.push_str(&format!(
            "public_url: http://{node}.bench:9700\nha:\n  node: {node}\n  lease: {LEASE_S}s\n"
        ));
    }
    std::fs::write(dir.join("branchguard.yaml"), cfg).expect("config");
    std::fs::write(
        dir.join("playbooks/atm.yaml"),
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n",
    )
    .expect("playbook");
    std::fs::write(
        dir.join("playbooks/ping.yaml"),
        "id: ping\nname: Ping\ntrigger: { kind: bench.ping }\ngroup_by: [branch, n]\nsteps:\n  - id: tell\n    action: { webhook: probe, body: \"{{labels.n}}\" }\n    deadline: 1h\n",
    )
    .expect("playbook");
    let (child, url_) = common::start_with_env(
        dir,
        &[
            ("BG_BENCH_URL", url),
            ("BRANCHGUARD_AUDIT_KEY", KEY),
            (
                "BRANCHGUARD_LINK_SECRET",
                "a-link-secret-for-the-benchmark-0001",
            ),
        ],
    );
    Target {
        child,
        url: url_,
        dir: dir.to_path_buf(),
    }
}

pub async fn postgres(sqlite: &Target, rx: &Receiver, clock: &Stopwatch) {
    if std::env::var(branchguard::store::pg_testing::ENV).is_err() {
        println!("== postgres: skipped (no server: eval \"$(bash .ci/postgres)\")");
        return;
    }
    let db = Database::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = start_on(dir.path(), &rx.url, db.url(), None);
    settle(&[sqlite.child.id(), pg.child.id()]).await;
    let (s50, s99, slost) = pings(Kind::Ours, &sqlite.url, rx, clock, 50_000_000).await;
    settle(&[sqlite.child.id(), pg.child.id()]).await;
    let (p50, p99, plost) = pings(Kind::Ours, &pg.url, rx, clock, 60_000_000).await;
    println!(
        "event -> webhook at rest (before any load): SQLite p50 {s50:.1} ms, p99 {s99:.1} ms (lost {slost}) | PostgreSQL p50 {p50:.1} ms, p99 {p99:.1} ms (lost {plost})"
    );
    println!("== PostgreSQL beside SQLite, new incidents, durable 202s, 5 s each");
    let n = Arc::new(AtomicU64::new(10_000_000));
    for (label, batch, conns) in [
        ("single events, each a new incident", 1, 16),
        ("batches of 100, each event a new incident", 100, 8),
    ] {
        let pids = [sqlite.child.id(), pg.child.id()];
        settle(&pids).await;
        let s0 = commits(&sqlite.url).await;
        let s = blast(Kind::Ours, &sqlite.url, "new", batch, conns, &n).await;
        let sc = commits(&sqlite.url).await.since(s0);
        settle(&pids).await;
        let p0 = commits(&pg.url).await;
        let p = blast(Kind::Ours, &pg.url, "new", batch, conns, &n).await;
        let pc = commits(&pg.url).await.since(p0);
        println!(
            "{label:<44} SQLite {:>8.0}/s (p99 {:.2} ms) | PostgreSQL {:>8.0}/s (p99 {:.2} ms) | ratio {:.2}",
            s.per_second,
            s.p99_ms,
            p.per_second,
            p.p99_ms,
            p.per_second / s.per_second
        );
        // Where the time goes: how many rounds, how big, and how long the
        // store took for each (from the daemon's own histogram).
        println!(
            "{:<44} SQLite {} | PostgreSQL {}",
            "  commits (group commit)",
            sc.show(s.per_second * super::SECONDS),
            pc.show(p.per_second * super::SECONDS)
        );
    }
    drop(pg);
    takeover(&rx.url).await;
}

/// `branchguard_store_commit_seconds`' count and sum.
#[derive(Clone, Copy)]
struct Commits(f64, f64);

impl Commits {
    fn since(self, before: Commits) -> Commits {
        Commits(self.0 - before.0, self.1 - before.1)
    }

    fn show(self, events: f64) -> String {
        format!(
            "{:>6.0} commits, {:>5.1} events each, {:.2} ms each",
            self.0,
            events / self.0.max(1.0),
            self.1 * 1000.0 / self.0.max(1.0)
        )
    }
}

async fn commits(url: &str) -> Commits {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Commits(
        value("branchguard_store_commit_seconds_count"),
        value("branchguard_store_commit_seconds_sum"),
    )
}

/// Two nodes on a new database; the leader is killed ten times (and
/// restarted as a standby each time): from `kill -9` to the other node's
/// first commit (an event answered 202).
async fn takeover(hook: &str) {
    let db = Database::create();
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let names = ["bg-a", "bg-b"];
    let mut nodes: Vec<Option<Target>> = vec![
        Some(start_on(dirs[0].path(), hook, db.url(), Some(names[0]))),
        None,
    ];
    let http = reqwest::Client::new();
    let role = |url: String| {
        let http = http.clone();
        async move {
            let v: serde_json::Value = http
                .get(format!("{url}/api/v1/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["ha"]["role"].as_str().map(str::to_string)
        }
    };
    let watch = Stopwatch::start();
    while role(nodes[0].as_ref().expect("node").url.clone())
        .await
        .as_deref()
        != Some("leader")
    {
        assert!(watch.seconds() < 30.0, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut leader = 0;
    let mut times = Vec::new();
    for k in 0..10 {
        let standby = 1 - leader;
        nodes[standby] = Some(start_on(
            dirs[standby].path(),
            hook,
            db.url(),
            Some(names[standby]),
        ));
        let s_url = nodes[standby].as_ref().expect("node").url.clone();
        while role(s_url.clone()).await.as_deref() != Some("standby") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(mut t) = nodes[leader].take() {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
        let killed = Stopwatch::start();
        loop {
            let r = http
                .post(format!("{s_url}/api/v1/events"))
                .json(&json!({"kind": "atm.down", "branch": "b1", "labels": {"atm": format!("t{k}")}}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().as_u16() == 202) {
                break;
            }
            assert!(killed.seconds() < 60.0, "no takeover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(killed.seconds());
        leader = standby;
    }
    let mut sorted = times.clone();
    println!(
        "takeover (lease {LEASE_S} s; kill -9 of the leader -> the standby's first commit), 10 kills: p50 {:.2} s, max {:.2} s ({})",
        common::percentile(&mut sorted, 0.5),
        times.iter().copied().fold(0.0, f64::max),
        times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
