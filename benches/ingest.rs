//! Ingest benchmark: the real HTTP API, engine and SQLite store in one process,
//! loaded by concurrent clients on loopback. Prints events per second and
//! request latency; asserts nothing about speed.
//!
//! Run: `cargo bench --bench ingest`

use std::path::Path;
use std::sync::Arc;

use branchguard::clock::Stopwatch;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn event(i: usize) -> Value {
    let branch = ["sh-001", "sh-002", "sh-003"][i % 3];
    if i.is_multiple_of(10) {
        json!({"kind": "system.down", "branch": branch, "severity": "critical", "labels": {"system": "core-banking"}})
    } else {
        json!({"kind": "atm.cash_low", "branch": branch, "labels": {"atm": format!("atm-{}", i % 50)}})
    }
}

async fn scenario(url: &str, clients: usize, requests: usize, batch: usize) {
    let http = reqwest::Client::new();
    let watch = Stopwatch::start();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(requests);
            for r in 0..requests {
                let body: Value = if batch == 1 {
                    event(c * requests + r)
                } else {
                    Value::Array(
                        (0..batch)
                            .map(|i| event((c * requests + r) * batch + i))
                            .collect(),
                    )
                };
                let t = Stopwatch::start();
                let resp = http
                    .post(format!("{url}/api/v1/events"))
                    .json(&body)
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(resp.status().as_u16(), 202);
                lat.push(t.seconds());
            }
            lat
        }));
    }
    let mut lat: Vec<f64> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    let secs = watch.seconds();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1000.0;
    let events = clients * requests * batch;
    println!(
        "{clients} clients x {requests} requests x {batch} events: {events} events in {secs:.2}s = {:.0} events/s, {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        events as f64 / secs,
        (clients * requests) as f64 / secs,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0) * 1000.0
    );
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    for d in ["playbooks", "drills"] {
        std::fs::create_dir_all(dir.path().join(d))?;
        for e in std::fs::read_dir(root.join(d))? {
            let e = e?;
            std::fs::copy(e.path(), dir.path().join(d).join(e.file_name()))?;
        }
    }
    let cfg = std::fs::read_to_string(root.join("branchguard.yaml"))?
        .replace("listen: 127.0.0.1:9700", "listen: 127.0.0.1:0");
    let cfg_path = dir.path().join("branchguard.yaml");
    std::fs::write(&cfg_path, cfg)?;
    let loaded = branchguard::config::load(&cfg_path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = CancellationToken::new();
        let server = tokio::spawn(branchguard::daemon::run(
            listener,
            loaded,
            cfg_path,
            token.clone(),
        ));
        let ready = Arc::new(reqwest::Client::new());
        while ready.get(format!("{url}/healthz")).send().await.is_err() {
            tokio::task::yield_now().await;
        }
        println!(
            "ingest benchmark (SQLite WAL, synchronous=FULL, group commit), {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        scenario(&url, 1, 300, 1).await;
        scenario(&url, 8, 300, 1).await;
        scenario(&url, 32, 100, 1).await;
        scenario(&url, 8, 50, 100).await;
        token.cancel();
        server.await??;
        anyhow::Ok(())
    })?;
    Ok(())
}
