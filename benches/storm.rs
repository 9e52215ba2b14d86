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
//! - person: a 10,000-incident storm for one person (digest window 10 s):
//!   emails per window, their sizes, and every one-click link opened.

mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
        "route:\n  receiver: blackhole\n  group_by: [branch, atm, n]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n  routes:\n    - receiver: probe\n      matchers: [ 'kind=\"ping\"' ]\n      group_by: [n]\n      group_wait: 0s\nreceivers:\n  - name: blackhole\n  - name: probe\n    webhook_configs:\n      - url: {hook}\n"
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
        let a = blast(Kind::Ours, &ours.url, what, batch, conns, &n).await;
        let b = blast(Kind::Am, &am.url, what, batch, conns, &n).await;
        line(label, &a, &b);
    }
    println!(
        "   RSS after ingest: branchguard {:.0} MB, Alertmanager {:.0} MB",
        rss_mb(ours.child.id()),
        rss_mb(am.child.id())
    );
}

/// A webhook receiver that notes when each ping arrived.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<HashMap<u64, f64>>>,
}

async fn receiver(clock: Arc<Stopwatch>) -> Receiver {
    let arrived: Arc<Mutex<HashMap<u64, f64>>> = Arc::default();
    let seen = Arc::clone(&arrived);
    let app = axum::Router::new()
        .route(
            "/hook/slow",
            axum::routing::post(|| async {
                // A receiver that takes 20 ms: a backlog drains at a known pace.
                tokio::time::sleep(Duration::from_millis(20)).await;
                "ok"
            }),
        )
        .fallback(move |body: axum::body::Bytes| {
            let seen = Arc::clone(&seen);
            let clock = Arc::clone(&clock);
            async move {
                let at = clock.seconds();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                // Ours: the event's labels; Alertmanager: each alert's labels.
                let mut ids: Vec<&Value> = vec![&v["event"]["labels"]["n"]];
                if let Some(alerts) = v["alerts"].as_array() {
                    ids.extend(alerts.iter().map(|a| &a["labels"]["n"]));
                }
                if let Ok(mut m) = seen.lock() {
                    for id in ids
                        .into_iter()
                        .filter_map(|x| x.as_str()?.parse::<u64>().ok())
                    {
                        m.entry(id).or_insert(at);
                    }
                }
                "ok"
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, arrived }
}

/// Pings every 20 ms for [`SECONDS`]; event -> webhook p50 and p99 in ms.
async fn pings(
    kind: Kind,
    url: &str,
    rx: &Receiver,
    clock: &Stopwatch,
    first: u64,
) -> (f64, f64, usize) {
    let http = reqwest::Client::new();
    let mut sent: Vec<(u64, f64)> = Vec::new();
    let start = clock.seconds();
    let mut id = first;
    while clock.seconds() - start < SECONDS {
        let body = match kind {
            Kind::Ours => {
                json!({"kind": "bench.ping", "branch": "b1", "labels": {"n": id.to_string()}})
            }
            Kind::Am => {
                json!([{"labels": {"alertname": "Ping", "kind": "ping", "n": id.to_string()}}])
            }
        };
        let path = if kind == Kind::Ours {
            "/api/v1/events"
        } else {
            "/api/v2/alerts"
        };
        sent.push((id, clock.seconds()));
        let r = http.post(format!("{url}{path}")).json(&body).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "ping refused");
        id += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Late arrivals get 3 s more.
    let until = clock.seconds() + 3.0;
    while clock.seconds() < until {
        let got = rx
            .arrived
            .lock()
            .map(|m| sent.iter().filter(|(i, _)| m.contains_key(i)).count())
            .unwrap_or(0);
        if got == sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = rx.arrived.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(i, at)| Some((m.get(i)? - at) * 1000.0))
        .collect();
    let lost = sent.len() - lat.len();
    (
        common::percentile(&mut lat, 0.5),
        common::percentile(&mut lat, 0.99),
        lost,
    )
}

/// A steady load of `per_second` events in batches of 100, until `stop`.
fn background(
    kind: Kind,
    url: String,
    per_second: f64,
    stop: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) {
    let tasks = 4;
    for t in 0..tasks {
        let (url, stop, done) = (url.clone(), Arc::clone(&stop), Arc::clone(&done));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let every = Duration::from_secs_f64(100.0 * tasks as f64 / per_second);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 1_000_000_000u64 * (t + 1);
            while stop.load(Ordering::Relaxed) == 0 {
                tick.tick().await;
                let (u, body) = request(kind, &url, "new", n, 100);
                n += 100;
                if http
                    .post(u)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    done.fetch_add(100, Ordering::Relaxed);
                }
            }
        });
    }
}

async fn latency(ours: &Target, am: &Target, rx: &Receiver, clock: &Stopwatch) {
    println!("== event -> webhook latency: a ping every 20 ms for {SECONDS} s");
    let mut id = 1u64;
    for loaded in [false, true] {
        let mut row = Vec::new();
        for (kind, t) in [(Kind::Ours, ours), (Kind::Am, am)] {
            let stop = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicU64::new(0));
            if loaded {
                background(
                    kind,
                    t.url.clone(),
                    BACKGROUND_PER_SECOND,
                    Arc::clone(&stop),
                    Arc::clone(&done),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let before = done.load(Ordering::Relaxed);
            let watch = Stopwatch::start();
            let r = pings(kind, &t.url, rx, clock, id).await;
            let rate = (done.load(Ordering::Relaxed) - before) as f64 / watch.seconds();
            stop.store(1, Ordering::Relaxed);
            id += 100_000;
            row.push((r, rate));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let what = if loaded {
            "under background load"
        } else {
            "at rest"
        };
        let ((o50, o99, olost), orate) = row[0];
        let ((a50, a99, alost), arate) = row[1];
        println!(
            "{what:<22} branchguard p50 {o50:.1} ms, p99 {o99:.1} ms (lost {olost}, background {orate:.0} ev/s) | Alertmanager p50 {a50:.1} ms, p99 {a99:.1} ms (lost {alost}, background {arate:.0} ev/s) | p99 ratio {:.2}",
            o99 / a99
        );
    }
}

/// Sequential single events attaching to one incident: 202 latency p50/p99.
async fn answer_latency(url: &str, n: usize) -> (f64, f64) {
    let http = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Stopwatch::start();
        let r = http
            .post(format!("{url}/api/v1/events"))
            .json(&json!({"kind": "atm.down", "branch": "b7", "labels": {"atm": "steady"}}))
            .send()
            .await;
        assert!(r.is_ok_and(|r| r.status().as_u16() == 202), "refused");
        lat.push(t.seconds() * 1000.0);
    }
    (
        common::percentile(&mut lat, 0.5),
        common::percentile(&mut lat, 0.99),
    )
}

/// Event -> 202 while a 10,000-message webhook backlog drains (a receiver
/// taking 20 ms, 8 in flight) against the same with no backlog.
async fn backlog(hook: &str) {
    println!("== event -> 202 while a 10,000-message backlog drains");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = start_branchguard(dir.path(), hook);
    let (r50, r99) = answer_latency(&t.url, 2000).await;
    let http = reqwest::Client::new();
    for start in (0..10_000).step_by(500) {
        let batch: Vec<Value> = (start..start + 500)
            .map(|i| json!({"kind": "bench.backlog", "branch": format!("b{}", i % BRANCHES), "labels": {"n": i.to_string()}}))
            .collect();
        let r = http
            .post(format!("{}/api/v1/events", t.url))
            .json(&batch)
            .send()
            .await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "backlog refused");
    }
    let pending = || async {
        let m = http
            .get(format!("{}/metrics", t.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.lines()
            .find_map(|l| l.strip_prefix("branchguard_outbox_pending "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let before = pending().await.unwrap_or(0.0);
    let (b50, b99) = answer_latency(&t.url, 2000).await;
    let after = pending().await.unwrap_or(0.0);
    println!(
        "at rest: p50 {r50:.2} ms, p99 {r99:.2} ms | while draining ({before:.0} -> {after:.0} messages pending): p50 {b50:.2} ms, p99 {b99:.2} ms"
    );
}

/// Events `from .. from + n`, each a new incident, posted in batches, one
/// after another.
async fn post_new(http: &reqwest::Client, url: &str, from: u64, n: u64, batch: u64) {
    for start in (from..from + n).step_by(batch as usize) {
        let (u, body) = request(Kind::Ours, url, "new", start, batch);
        let r = http
            .post(u)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert!(r.status().is_success(), "{}", r.status());
    }
}

async fn memory(hook: &str) {
    const N: usize = 100_000;
    println!("== memory: {N} open incidents in {N} groups (batches of 500)");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = start_branchguard(dir.path(), hook);
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    post_new(&http, &t.url, 10_000_000, N as u64, 500).await;
    let loaded = watch.seconds();
    let db = dir_bytes(&t.dir.join("data"));
    println!(
        "loaded in {loaded:.1} s; RSS {:.0} MB; database {:.0} MB = {:.0} bytes per incident",
        rss_mb(t.child.id()),
        db as f64 / 1e6,
        db as f64 / N as f64
    );
    let _ = t.child.kill();
    let _ = t.child.wait();
    let watch = Stopwatch::start();
    let t2 = spawn_branchguard(dir.path());
    let listening = watch.seconds();
    let r = http
        .get(format!("{}/api/v1/incidents?status=open&limit=1", t2.url))
        .send()
        .await
        .expect("GET");
    assert!(r.status().is_success());
    let serving = watch.seconds();
    println!(
        "after kill -9 and restart: listening in {listening:.2} s, serving in {serving:.2} s; RSS {:.0} MB",
        rss_mb(t2.child.id())
    );
    drop(t);
}

/// Every mail file in `dir` not yet in `seen`, parsed: (arrived at, size,
/// text part). A file being written (`.NAME.tmp`) is not a mail yet.
fn mail_files(
    dir: &Path,
    seen: &mut std::collections::HashSet<std::ffi::OsString>,
) -> Vec<(std::time::SystemTime, u64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let done = name
            .to_str()
            .is_some_and(|n| n.ends_with(".eml") && !n.starts_with('.'));
        if !done || seen.contains(&name) {
            continue;
        }
        let (Ok(raw), Ok(meta)) = (std::fs::read(e.path()), e.metadata()) else {
            continue;
        };
        seen.insert(name);
        let Ok(mail) = mailparse::parse_mail(&raw) else {
            continue;
        };
        fn text(m: &mailparse::ParsedMail) -> Option<String> {
            if m.ctype.mimetype == "text/plain" {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(text)
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((modified, meta.len(), text(&mail).unwrap_or_default()));
    }
    out.sort_by_key(|m| m.0);
    out
}

async fn person() {
    const N: u64 = 10_000;
    const WINDOW_S: u64 = 10;
    println!("== person: {N} incidents for one person, digest window {WINDOW_S} s");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    let branches: String = (0..BRANCHES)
        .map(|i| format!("  - {{ id: b{i}, name: Branch {i} }}\n"))
        .collect();
    let all: Vec<String> = (0..BRANCHES).map(|i| format!("b{i}")).collect();
    let all = all.join(", ");
    std::fs::write(
        dir.path().join("branchguard.yaml"),
        format!(
            "listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\nlimits: {{ requests_per_second: 1000000, burst: 1000000 }}\nnotify:\n  digest: {WINDOW_S}s\npeople:\n  - {{ id: duty, name: On duty, email: duty@bank.example, roles: [it-duty], branches: [{all}] }}\nbranches:\n{branches}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("playbooks/atm.yaml"),
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n",
    )
    .unwrap();
    let t = spawn_branchguard(dir.path());
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    post_new(&http, &t.url, 0, N, 100).await;
    let posted = watch.seconds();
    let started =
        std::time::SystemTime::from(branchguard::clock::now()) - Duration::from_secs_f64(posted);
    let maildir = dir.path().join("data/mail");
    let ack = regex::Regex::new(r"Acknowledge this step:\s+(\S+)").unwrap();
    let mut links: Vec<String> = Vec::new();
    let mut mails = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while watch.seconds() < 120.0 {
        for m in mail_files(&maildir, &mut seen) {
            links.extend(ack.captures_iter(&m.2).map(|c| c[1].to_string()));
            mails.push(m);
        }
        if links.len() as u64 >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mails.sort_by_key(|m| m.0);
    let done = watch.seconds();
    println!(
        "posted in {posted:.1} s; {} of {N} messages in {} emails after {done:.1} s",
        links.len(),
        mails.len()
    );
    let mut windows: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
    for (at, size, _) in &mails {
        let s = at
            .duration_since(started)
            .map_or(0, |d| d.as_secs() / WINDOW_S);
        let w = windows.entry(s).or_default();
        w.0 += 1;
        w.1 = w.1.max(*size);
    }
    for (w, (n, largest)) in &windows {
        println!(
            "   window {w} ({}-{} s): {n} emails, largest {:.1} MB",
            w * WINDOW_S,
            (w + 1) * WINDOW_S,
            *largest as f64 / 1e6
        );
    }
    // Every link opens its own page (a GET shows the confirmation).
    let distinct: std::collections::HashSet<&String> = links.iter().collect();
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in links.chunks(links.len().div_ceil(16).max(1)) {
        let (http, url, opened) = (http.clone(), t.url.clone(), Arc::clone(&opened));
        let chunk: Vec<String> = chunk.to_vec();
        tasks.spawn(async move {
            for l in chunk {
                // The links name the configured public URL; the daemon
                // listens on a port of its own here.
                let path = l.find("/ack/").map_or("", |at| &l[at..]);
                if let Ok(r) = http.get(format!("{url}{path}")).send().await
                    && r.status().is_success()
                    && !path.is_empty()
                {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "   links: {} acknowledge links, {} distinct, {} open with 200",
        links.len(),
        distinct.len(),
        opened.load(Ordering::Relaxed)
    );
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
                .and_then(|o| String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .map(str::to_string))
                .unwrap_or_default()
        );
        let clock = Arc::new(Stopwatch::start());
        let rx = receiver(Arc::clone(&clock)).await;
        if want("ingest") || want("latency") {
            let ours_dir = tempfile::tempdir().expect("tempdir");
            let am_dir = tempfile::tempdir().expect("tempdir");
            let ours = start_branchguard(ours_dir.path(), &rx.url);
            let am = start_alertmanager(am_dir.path(), &rx.url).await;
            if want("ingest") {
                ingest(&ours, &am).await;
            }
            if want("latency") {
                latency(&ours, &am, &rx, &clock).await;
            }
        }
        if want("backlog") {
            backlog(&rx.url).await;
        }
        if want("person") {
            person().await;
        }
        if want("memory") {
            memory(&rx.url).await;
        }
    });
}
