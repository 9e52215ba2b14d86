//! The storm benchmark: a load generator run against the release binary and,
//! in the same run, against Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`, loopback, group_wait 0s), printing both figures
//! and the ratio. Asserts nothing about speed.
//!
//! Run: `cargo bench --bench storm` (all parts), or name parts:
//! `cargo bench --bench storm -- ingest latency memory`.
//!
//! - ingest: single events that each open a new incident over 5,000 branches,
//!   batches of 100, and events that attach to one open incident;
//! - latency: event -> webhook p50/p99 at rest and under a background load of
//!   17,000 events/s (batches of 100);
//! - backlog: event -> 202 while a 10,000-message webhook backlog drains;
//! - memory: 100,000 open incidents: load time, RSS, database bytes per
//!   incident, and RSS and time to serve after `kill -9` and a restart;
//! - postgres: the daemon on PostgreSQL beside SQLite (ingest, event ->
//!   webhook at rest) and the time a standby takes to lead after `kill -9`
//!   (10 kills); needs `BRANCHGUARD_TEST_POSTGRES` (`.ci/postgres`);
//! - person: a 10,000-incident storm for one person (digest window 10 s):
//!   emails per window, their sizes, and every one-click link opened.

#[path = "../common/mod.rs"]
mod common;
mod latency;
mod postgres;
mod volume;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use branchguard::clock::Stopwatch;
use serde_json::{Value, json};

const BRANCHES: usize = 5000;
const SECONDS: f64 = 5.0;
const BACKGROUND_PER_SECOND: f64 = 17_000.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Waits (up to 60 s) until both programs are idle: Alertmanager goes on
/// grouping and dispatching the alerts it has answered for seconds after a
/// run, and branchguard sends its digests, each on the two cores the next
/// run measures. Returns how long it waited.
async fn settle(pids: &[u32]) -> f64 {
    let clock = Stopwatch::start();
    let mut last: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    while clock.seconds() < 60.0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        // Under 5% of one core each (ticks are 10 ms: 2 of 50).
        // A process that has exited reads as 0 ticks: idle.
        let idle = now
            .iter()
            .zip(&last)
            .all(|(n, l)| n.saturating_sub(*l) <= 2);
        last = now;
        if idle {
            break;
        }
    }
    clock.seconds()
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name() != "mail")
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A program under test: our daemon or Alertmanager.
struct Target {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn branchguard_config(hook: &str) -> String {
    let mut c = format!(
        "listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\nlimits: {{ requests_per_second: 1000000, burst: 1000000 }}\nnotify:\n  webhooks:\n    probe: {{ url: \"{hook}\" }}\n    slow: {{ url: \"{hook}/slow\" }}\npeople:\n"
    );
    // Regional IT duty: one engineer for each 250 branches.
    for r in 0..BRANCHES / 250 {
        let list: Vec<String> = (r * 250..(r + 1) * 250).map(|i| format!("b{i}")).collect();
        c.push_str(&format!(
            "  - {{ id: it{r}, name: IT {r}, email: it{r}@bank.example, roles: [it-duty], branches: [{}] }}\n",
            list.join(", ")
        ));
    }
    c.push_str("branches:\n");
    for i in 0..BRANCHES {
        c.push_str(&format!("  - {{ id: b{i}, name: Branch {i} }}\n"));
    }
    c
}

/// Our release binary with 5,000 branches: `atm.down` opens an incident per
/// (branch, atm) with one step for `role:it-duty`; `bench.ping` one whose
/// step is a webhook to `hook`.
fn start_branchguard(dir: &Path, hook: &str) -> Target {
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::write(dir.join("branchguard.yaml"), branchguard_config(hook)).unwrap();
    std::fs::write(
        dir.join("playbooks/atm.yaml"),
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("playbooks/ping.yaml"),
        "id: ping\nname: Ping\ntrigger: { kind: bench.ping }\ngroup_by: [branch, n]\nsteps:\n  - id: tell\n    action: { webhook: probe, body: \"{{labels.n}}\" }\n    deadline: 1h\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("playbooks/backlog.yaml"),
        "id: backlog\nname: Backlog\ntrigger: { kind: bench.backlog }\ngroup_by: [branch, n]\nsteps:\n  - id: tell\n    action: { webhook: slow, body: \"{{labels.n}}\" }\n    deadline: 1h\n",
    )
    .unwrap();
    spawn_branchguard(dir)
}

fn spawn_branchguard(dir: &Path) -> Target {
    let (child, url) = common::start(dir);
    Target {
        child,
        url,
        dir: dir.to_path_buf(),
    }
}

/// Alertmanager: `kind="ping"` alerts go to `hook`, everything else nowhere.
async fn start_alertmanager(dir: &Path, hook: &str) -> Target {
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "route:\n  receiver: blackhole\n  group_by: [branch, atm, n]\n  group_wait: 0s\n  repeat_interval: 1h\n  routes:\n    - receiver: probe\n      matchers: [ 'kind=\"ping\"' ]\n      group_by: [n]\n      group_wait: 0s\nreceivers:\n  - name: blackhole\n  - name: probe\n    webhook_configs:\n      - url: {hook}\n"
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (apt-get install prometheus-alertmanager)");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    while !http
        .get(format!("{url}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            watch.seconds() < 30.0,
            "Alertmanager did not get ready: {:?}",
            http.get(format!("{url}/-/ready")).send().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Target {
        child,
        url,
        dir: dir.to_path_buf(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours,
    Am,
}

/// The request that carries events number `n .. n + count`.
fn request(kind: Kind, url: &str, what: &str, n: u64, count: u64) -> (String, String) {
    let one = |i: u64| -> Value {
        let branch = if what == "attach" {
            "b0".to_string()
        } else {
            format!("b{}", i % BRANCHES as u64)
        };
        let atm = if what == "attach" {
            "same".to_string()
        } else {
            format!("atm-{i}")
        };
        match kind {
            Kind::Ours => {
                json!({"kind": "atm.down", "branch": branch, "severity": "major", "labels": {"atm": atm}})
            }
            Kind::Am => {
                json!({"labels": {"alertname": "AtmDown", "kind": "atm.down", "branch": branch, "atm": atm}})
            }
        }
    };
    let body = if count == 1 && kind == Kind::Ours {
        one(n).to_string()
    } else {
        Value::Array((n..n + count).map(one).collect()).to_string()
    };
    let path = match kind {
        Kind::Ours => "/api/v1/events",
        Kind::Am => "/api/v2/alerts",
    };
    (format!("{url}{path}"), body)
}

struct Rate {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `conns` connections posting as fast as answers come, for [`SECONDS`].
async fn blast(
    kind: Kind,
    url: &str,
    what: &str,
    batch: u64,
    conns: usize,
    next: &Arc<AtomicU64>,
) -> Rate {
    let watch = Stopwatch::start();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let url = url.to_string();
        let what = what.to_string();
        let next = Arc::clone(next);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let clock = Stopwatch::start();
            let mut lat = Vec::new();
            while clock.seconds() < SECONDS {
                let n = next.fetch_add(batch, Ordering::Relaxed);
                let (u, body) = request(kind, &url, &what, n, batch);
                let t = Stopwatch::start();
                let r = http
                    .post(u)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => lat.push(t.seconds() * 1000.0),
                    Ok(r) => panic!("answered {}", r.status()),
                    Err(e) => panic!("{e}"),
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let secs = watch.seconds();
    Rate {
        per_second: lat.len() as f64 * batch as f64 / secs,
        p50_ms: common::percentile(&mut lat, 0.5),
        p99_ms: common::percentile(&mut lat, 0.99),
    }
}

fn line(what: &str, ours: &Rate, am: &Rate) {
    println!(
        "{what:<44} branchguard {:>8.0}/s (p50 {:.2} ms, p99 {:.2} ms) | Alertmanager {:>8.0}/s (p50 {:.2} ms, p99 {:.2} ms) | ratio {:.2}",
        ours.per_second,
        ours.p50_ms,
        ours.p99_ms,
        am.per_second,
        am.p50_ms,
        am.p99_ms,
        ours.per_second / am.per_second
    );
}

async fn ingest(ours: &Target, am: &Target) {
    println!(
        "== ingest: {SECONDS} s each, {BRANCHES} branches, durable 202s (branchguard) vs 200s (Alertmanager)"
    );
    let n = Arc::new(AtomicU64::new(0));
    for (what, label, batch, conns) in [
        ("new", "single events, each a new incident", 1, 16),
        ("new", "batches of 100, each event a new incident", 100, 8),
        (
            "attach",
            "single events attaching to one open incident",
            1,
            16,
        ),
    ] {
        let pids = [ours.child.id(), am.child.id()];
        let mut waited = settle(&pids).await;
        let a = blast(Kind::Ours, &ours.url, what, batch, conns, &n).await;
        waited += settle(&pids).await;
        let b = blast(Kind::Am, &am.url, what, batch, conns, &n).await;
        line(label, &a, &b);
        println!("   (both idle before each run: waited {waited:.1} s)");
    }
    println!(
        "   RSS after ingest: branchguard {:.0} MB, Alertmanager {:.0} MB",
        rss_mb(ours.child.id()),
        rss_mb(am.child.id())
    );
    branch_reads(ours).await;
}

/// What an operator reads after a storm: one branch's latest events, and a
/// branch with none (which walks every epoch of the table).
async fn branch_reads(ours: &Target) {
    let http = reqwest::Client::new();
    for (what, branch) in [
        ("a branch's latest 100 events", None),
        ("a branch with no events", Some("nowhere")),
    ] {
        let mut ms = Vec::new();
        let mut found = 0;
        for i in 0..40 {
            let b = branch.map_or_else(|| format!("b{}", i * 123 % BRANCHES), str::to_string);
            let started = Stopwatch::start();
            let r = http
                .get(format!("{}/api/v1/events?branch={b}&limit=100", ours.url))
                .send()
                .await
                .expect("GET events");
            assert!(r.status().is_success(), "GET events: {}", r.status());
            let body: Value = r.json().await.expect("events JSON");
            ms.push(started.seconds() * 1e3);
            found += body["items"].as_array().map_or(0, Vec::len);
        }
        println!(
            "   GET /api/v1/events?branch=…&limit=100, {what}: p50 {:.1} ms, p99 {:.1} ms ({found} events in 40 reads)",
            common::percentile(&mut ms.clone(), 0.5),
            common::percentile(&mut ms, 0.99),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "storm benchmark, {} cores; Alertmanager: {}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            Command::new("prometheus-alertmanager")
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string))
                .unwrap_or_default()
        );
        let clock = Arc::new(Stopwatch::start());
        let rx = latency::receiver(Arc::clone(&clock)).await;
        if want("ingest") || want("latency") {
            let ours_dir = tempfile::tempdir().expect("tempdir");
            let am_dir = tempfile::tempdir().expect("tempdir");
            let ours = start_branchguard(ours_dir.path(), &rx.url);
            let am = start_alertmanager(am_dir.path(), &rx.url).await;
            if want("ingest") {
                ingest(&ours, &am).await;
            }
            if want("latency") {
                latency::latency(&ours, &am, &rx, &clock).await;
            }
        }
        if want("postgres") {
            let dir = tempfile::tempdir().expect("tempdir");
            let sqlite = start_branchguard(dir.path(), &rx.url);
            postgres::postgres(&sqlite, &rx, &clock).await;
        }
        if want("backlog") {
            latency::backlog(&rx.url).await;
        }
        if want("person") {
            volume::person().await;
        }
        if want("memory") {
            volume::memory(&rx.url).await;
        }
    });
}
