//! Probes against real listeners on loopback: an HTTP health endpoint, a TCP
//! listener, a command, a flapping endpoint, and a queue-status endpoint whose
//! JSON reports the waiting time.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Daemon, Fixture, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A loopback HTTP server: `/health` answers per `mode` (0 up, 1 down, 2
/// alternating), `/queue` reports `{"queue": {"wait_minutes": N}}`.
struct Health {
    url: String,
    mode: Arc<AtomicUsize>,
    wait: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
}

impl Health {
    fn start() -> Health {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (mode, wait, hits) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicU64::new(5)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (m, w, h) = (Arc::clone(&mode), Arc::clone(&wait), Arc::clone(&hits));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app =
                    axum::Router::new()
                        .route(
                            "/health",
                            axum::routing::get(move || {
                                let n = h.fetch_add(1, Ordering::SeqCst);
                                let up = match m.load(Ordering::SeqCst) {
                                    0 => true,
                                    1 => false,
                                    _ => n % 2 == 0,
                                };
                                async move {
                                    if up {
                                        axum::http::StatusCode::OK
                                    } else {
                                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                                    }
                                }
                            }),
                        )
                        .route(
                            "/queue",
                            axum::routing::get(move || {
                                let v = w.load(Ordering::SeqCst);
                                async move {
                                    axum::Json(serde_json::json!({"queue": {"wait_minutes": v}}))
                                }
                            }),
                        );
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Health {
            url,
            mode,
            wait,
            hits,
        }
    }
}

/// The engine fixture with br-a's systems probed every 200 ms.
fn fixture(systems: &str) -> Fixture {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let cfg = cfg.replace(
        "  - { id: br-a, name: Branch A, neighbours: [br-b] }\n",
        &format!(
            "  - id: br-a\n    name: Branch A\n    neighbours: [br-b]\n    systems:\n{systems}"
        ),
    );
    f.write("branchguard.yaml", &cfg);
    f.write(
        "playbooks/queue.yaml",
        "id: queue\nname: Queue wait\ntrigger: { kind: queue.wait }\nsteps:\n  - id: open-window\n    assignee: role:it-duty\n    deadline: 1h\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

fn open_incidents(d: &Daemon, playbook: &str) -> Vec<Value> {
    d.get(&format!(
        "/api/v1/incidents?status=open&playbook={playbook}"
    ))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn resolved(d: &Daemon, id: i64) -> bool {
    d.incident(id)["status"] == "resolved"
}

#[test]
fn an_http_endpoint_down_opens_an_incident_and_back_up_resolves_it() {
    let h = Health::start();
    let f = fixture(&format!(
        "      - name: core\n        probe: {{ http: \"{}/health\", interval: 200ms, timeout: 1s, failures: 2, successes: 2 }}\n",
        h.url
    ));
    let d = Daemon::start(&f);
    wait_for(WAIT, "a few checks", || {
        (h.hits.load(Ordering::SeqCst) >= 3).then_some(())
    });
    assert!(
        open_incidents(&d, "failover").is_empty(),
        "up: nothing opens"
    );
    h.mode.store(1, Ordering::SeqCst);
    let watch = branchguard::clock::Stopwatch::start();
    let inc = wait_for(WAIT, "the incident", || {
        open_incidents(&d, "failover").into_iter().next()
    });
    // interval × failures + one interval, with room for a loaded machine.
    assert!(watch.seconds() < 10.0, "opened after {}s", watch.seconds());
    assert_eq!(inc["labels"]["system"], "core");
    assert!(
        inc["labels"]["error"].as_str().unwrap().contains("503"),
        "{inc}"
    );
    let id = inc["id"].as_i64().unwrap();
    // A reload that leaves this probe unchanged keeps its state: no spurious
    // resolve and fire again while it stays down.
    let events_before = d.get("/api/v1/events?kind=system.down")["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(d.post("/api/v1/reload", "").0, 200);
    let hits = h.hits.load(Ordering::SeqCst);
    wait_for(WAIT, "more checks after the reload", || {
        (h.hits.load(Ordering::SeqCst) >= hits + 5).then_some(())
    });
    let events_after = d.get("/api/v1/events?kind=system.down")["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        events_after, events_before,
        "no new down/up events after the reload"
    );
    assert_eq!(d.incident(id)["status"], "open");
    h.mode.store(0, Ordering::SeqCst);
    wait_for(WAIT, "the incident to resolve by itself", || {
        resolved(&d, id).then_some(())
    });
    let metrics = d
        .http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("branchguard_probe_up{branch=\"br-a\",region=\"none\",system=\"core\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_tcp_listener_and_a_command_are_probed_too() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let f = fixture(&format!(
        "      - name: core\n        probe: {{ tcp: \"{addr}\", interval: 200ms, timeout: 1s, failures: 2, successes: 1 }}\n      - name: atm\n        probe: {{ command: [\"test\", \"-f\", \"atm-ok\"], interval: 200ms, failures: 2, successes: 1 }}\n"
    ));
    std::fs::write(f.path("atm-ok"), "").unwrap();
    f.write(
        "playbooks/atm.yaml",
        "id: atm\nname: ATM down\ntrigger: { kind: system.down, labels: { system: atm } }\nsteps:\n  - id: call\n    assignee: role:it-duty\n    deadline: 1h\n",
    );
    let d = Daemon::start(&f);
    // TCP: the listener closes, the port refuses; it listens again.
    drop(l);
    let tcp = wait_for(WAIT, "the TCP incident", || {
        open_incidents(&d, "failover").into_iter().next()
    });
    let back = TcpListener::bind(addr).unwrap();
    wait_for(WAIT, "the TCP incident to resolve", || {
        resolved(&d, tcp["id"].as_i64().unwrap()).then_some(())
    });
    drop(back);
    // Command: the check fails while the flag file is gone.
    std::fs::remove_file(f.path("atm-ok")).unwrap();
    let atm = wait_for(WAIT, "the command incident", || {
        open_incidents(&d, "atm").into_iter().next()
    });
    assert!(
        atm["labels"]["error"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{atm}"
    );
    std::fs::write(f.path("atm-ok"), "").unwrap();
    wait_for(WAIT, "the command incident to resolve", || {
        resolved(&d, atm["id"].as_i64().unwrap()).then_some(())
    });
}

#[test]
fn a_flapping_endpoint_opens_nothing() {
    let h = Health::start();
    h.mode.store(2, Ordering::SeqCst);
    let f = fixture(&format!(
        "      - name: core\n        probe: {{ http: \"{}/health\", interval: 100ms, timeout: 1s, failures: 3, successes: 2 }}\n",
        h.url
    ));
    let d = Daemon::start(&f);
    wait_for(WAIT, "twenty alternating checks", || {
        (h.hits.load(Ordering::SeqCst) >= 20).then_some(())
    });
    assert!(open_incidents(&d, "failover").is_empty());
    assert!(
        d.get("/api/v1/events")["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_queue_wait_over_the_threshold_opens_an_incident_with_its_value() {
    let h = Health::start();
    let f = fixture(&format!(
        "      - name: queue-system\n        probe: {{ http: \"{}/queue\", interval: 200ms, failures: 2, successes: 2, value: {{ path: queue.wait_minutes, warn: 10, critical: 15, kind: queue.wait }} }}\n",
        h.url
    ));
    let d = Daemon::start(&f);
    h.wait.store(18, Ordering::SeqCst);
    let inc = wait_for(WAIT, "the queue incident", || {
        open_incidents(&d, "queue").into_iter().next()
    });
    assert_eq!(inc["kind"], "queue.wait");
    assert_eq!(inc["labels"]["value"], "18");
    assert_eq!(inc["severity"], "critical");
    h.wait.store(4, Ordering::SeqCst);
    wait_for(WAIT, "the queue incident to resolve", || {
        resolved(&d, inc["id"].as_i64().unwrap()).then_some(())
    });
}

#[test]
fn host_thresholds_send_host_events_for_the_configured_branch_and_feed_the_metrics() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    // Thresholds no machine meets: every mount is "low", memory is "high".
    f.write(
        "branchguard.yaml",
        &format!("{cfg}host: {{ interval: 100ms, disk_free_min: 100%, memory_used_max: 0%, branch: br-a }}\n"),
    );
    f.write(
        "playbooks/host.yaml",
        "id: host\nname: Host health\ntrigger: { kind: host.memory_high }\nsteps:\n  - id: look\n    assignee: role:it-duty\n    deadline: 1h\n",
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    let inc = wait_for(WAIT, "the host incident", || {
        open_incidents(&d, "host").into_iter().next()
    });
    assert_eq!(inc["branch"], "br-a");
    let events = d.get("/api/v1/events?kind=host.disk_low");
    let first = &events["items"][0];
    assert_eq!(first["source"], "host");
    assert!(first["labels"]["mount"].is_string(), "{events}");
    let metrics = d
        .http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "branchguard_host_cpu_usage_ratio ",
        "branchguard_host_memory_used_bytes ",
        "branchguard_host_disk_free_bytes{mount=",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
