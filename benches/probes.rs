//! Probe benchmark: the real daemon (its binary, as deployed) probing 2,000
//! loopback HTTP targets every 2 seconds. Prints the daemon's CPU share while
//! it probes, and the event → incident latency (POST answered after the
//! incident is committed) with the probes running, next to the same without
//! probes. Asserts nothing about speed.
//!
//! Run: `cargo bench --bench probes`

mod common;
use std::time::Duration;

use branchguard::clock::Stopwatch;

const TARGETS: usize = 2000;

fn config(port: u16, probes: bool) -> String {
    let mut c = String::from(
        "listen: 127.0.0.1:0\ntimezone: Asia/Shanghai\nwatch_files: false\nnotify:\n  webhooks:\n    ops: { url: \"http://127.0.0.1:9/none\" }\npeople:\n  - { id: duty, name: Duty, email: duty@bank.example, roles: [duty], branches: [b0] }\nbranches:\n",
    );
    for i in 0..TARGETS {
        if probes {
            c.push_str(&format!(
                "  - {{ id: b{i}, name: Branch {i}, systems: [{{ name: core, probe: {{ http: \"http://127.0.0.1:{port}/health/{i}\", interval: 2s, timeout: 1s }} }}] }}\n"
            ));
        } else {
            c.push_str(&format!("  - {{ id: b{i}, name: Branch {i} }}\n"));
        }
    }
    c
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn run(port: u16, probes: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("branchguard.yaml"), config(port, probes)).unwrap();
    std::fs::write(
        dir.path().join("playbooks/bench.yaml"),
        "id: bench\nname: Bench\ntrigger: { kind: bench.event }\ngroup_by: [branch, n]\nsteps:\n  - id: look\n    assignee: person:duty\n    deadline: 1h\n",
    )
    .unwrap();
    let (mut child, url) = common::start(dir.path());
    let pid = child.id();
    // Let every target be checked a few times, then measure for 10 seconds.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu0, wall) = (cpu_seconds(pid), Stopwatch::start());
    std::thread::sleep(Duration::from_secs(10));
    let share = (cpu_seconds(pid) - cpu0) / wall.seconds();
    let http = reqwest::blocking::Client::new();
    let mut lat = Vec::new();
    for n in 0..300 {
        let body = format!(
            r#"{{"kind":"bench.event","branch":"b{}","labels":{{"n":"{n}"}}}}"#,
            n % TARGETS
        );
        let w = Stopwatch::start();
        let r = http
            .post(format!("{url}/api/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert!(r.status().is_success());
        lat.push(w.seconds() * 1000.0);
    }
    let (p50, p99) = (
        common::percentile(&mut lat, 0.5),
        common::percentile(&mut lat, 0.99),
    );
    // How many targets were checked and found up (from the daemon's metrics).
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let up = metrics
        .lines()
        .filter(|l| l.starts_with("branchguard_probe_up{") && l.ends_with(" 1"))
        .count();
    let checks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("branchguard_probe_duration_seconds_count "))
        .unwrap_or("0")
        .to_string();
    println!(
        "{:<34} daemon CPU {:>5.1}% of one core; event -> incident p50 {p50:.2} ms, p99 {p99:.2} ms (300 sequential events, each a new incident); targets up {up}, checks done {checks}",
        if probes {
            format!("{TARGETS} HTTP probe targets every 2s:")
        } else {
            "no probes:".to_string()
        },
        share * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    // The targets: one loopback server answering every /health/{i}.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app =
                axum::Router::new().route("/health/{i}", axum::routing::get(|| async { "ok" }));
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    println!(
        "probe benchmark, {} cores (the targets' server runs in this process, on the same cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    run(port, false);
    run(port, true);
}
