//! The latency parts: event -> webhook at rest and under a background load,
//! and event -> 202 while a backlog drains.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

/// A webhook receiver that notes when each ping arrived.
pub struct Receiver {
    pub url: String,
    arrived: Arc<Mutex<HashMap<u64, f64>>>,
}

pub async fn receiver(clock: Arc<Stopwatch>) -> Receiver {
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
pub(super) async fn pings(
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

pub async fn latency(ours: &Target, am: &Target, rx: &Receiver, clock: &Stopwatch) {
    println!("== event -> webhook latency: a ping every 20 ms for {SECONDS} s");
    let mut id = 1u64;
    for loaded in [false, true] {
        let mut row = Vec::new();
        for (kind, t) in [(Kind::Ours, ours), (Kind::Am, am)] {
            super::settle(&[ours.child.id(), am.child.id()]).await;
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
pub async fn backlog(hook: &str) {
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
