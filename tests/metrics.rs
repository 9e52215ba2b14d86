//! Metrics and the operations kit, checked by the real tools: promtool on a
//! live scrape with incidents, notifications, probes, a drill and host health
//! behind it; a real Prometheus scraping the daemon; the alerting rules and
//! their unit tests; the Grafana dashboard's metrics; the systemd unit.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sinks::free_port;
use common::{Daemon, Fixture, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> Command {
    Command::new(name)
}

/// A daemon with something behind every metric family.
fn busy_daemon() -> (Fixture, Daemon, std::thread::JoinHandle<()>) {
    // A health endpoint for a probe: a plain TCP listener answering HTTP 200.
    let health = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = health.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in health.incoming().take(200) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let cfg = cfg.replace(
        "  - { id: br-a, name: Branch A, neighbours: [br-b] }\n",
        &format!("  - {{ id: br-c, name: Branch C }}\n  - id: br-a\n    name: Branch A\n    region: east\n    neighbours: [br-b]\n    systems:\n      - name: core\n        probe: {{ http: \"http://{addr}/health\", interval: 200ms }}\n"),
    );
    f.write(
        "branchguard.yaml",
        &format!("{cfg}host: {{ interval: 100ms, branch: br-a }}\n"),
    );
    f.write(
        "drills/metrics.yaml",
        "id: metrics\nplaybook: failover\nevent: { kind: system.down, severity: critical, labels: { system: core } }\nbranches: [br-b]\n",
    );
    // A roster, so its gap metric is served (nights at br-b are nobody's).
    f.write(
        "rosters/it-duty.yaml",
        "id: it-duty-b\nrole: it-duty\nbranches: [br-b]\nlayers:\n  - { name: days, start: 2026-01-01T08:00, shift: 1d, people: [it.b], only: { from: \"08:00\", to: \"20:00\" } }\n",
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    let (code, _) = d.post(
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#,
    );
    assert_eq!(code, 202);
    assert_eq!(
        d.post("/api/v1/events", r#"{"kind":"nothing","branch":"br-a"}"#)
            .0,
        202
    );
    for verb in ["ack", "done"] {
        let (code, _) = d.post(
            &format!("/api/v1/incidents/1/steps/switch/{verb}"),
            r#"{"by":"it.a"}"#,
        );
        assert_eq!(code, 200);
    }
    // br-c: nobody answers, so the step escalates (2s) and goes overdue (4s).
    let (code, _) = d.post(
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-c","severity":"critical","labels":{"system":"core"}}"#,
    );
    assert_eq!(code, 202);
    // A refused event.
    assert_eq!(d.post("/api/v1/events", r#"{"kind":"system.down"}"#).0, 400);
    // br-a comes back: its incident resolves.
    let (code, _) = d.post(
        "/api/v1/events",
        r#"{"kind":"system.down","branch":"br-a","status":"resolved","labels":{"system":"core"}}"#,
    );
    assert_eq!(code, 202);
    // A drill at br-b, answered to the end: it is scored.
    let (code, body) = d.post("/api/v1/drills/metrics/run", "");
    assert_eq!(code, 202, "{body}");
    let iid = body["incidents"][0].as_i64().unwrap();
    for verb in ["ack", "done"] {
        let (code, _) = d.post(
            &format!("/api/v1/incidents/{iid}/steps/switch/{verb}"),
            r#"{"by":"it.b"}"#,
        );
        assert_eq!(code, 200);
    }
    wait_for(WAIT, "notifications, probes and host samples", || {
        let m = scrape(&d);
        (m.contains("branchguard_notifications_total{")
            && m.contains("branchguard_probe_up{")
            && m.contains("branchguard_host_disk_free_bytes{")
            && m.contains("branchguard_steps_overdue_total{")
            && m.contains("branchguard_escalations_total{")
            && m.contains("branchguard_incident_duration_seconds_bucket{")
            && m.contains("branchguard_drill_score{")
            && !m.contains("branchguard_host_memory_used_bytes 0\n"))
        .then_some(())
    });
    (f, d, server)
}

fn scrape(d: &Daemon) -> String {
    d.http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn promtool_finds_no_error_and_no_lint_in_a_live_scrape_and_the_dashboard_uses_only_real_metrics() {
    let (_f, d, _server) = busy_daemon();
    let text = scrape(&d);
    let mut child = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; .ci/run does)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    for family in [
        "branchguard_events_received_total",
        "branchguard_events_unmatched_total",
        "branchguard_incidents_opened_total",
        "branchguard_incidents_open",
        "branchguard_step_response_seconds_bucket",
        "branchguard_step_done_seconds_bucket",
        "branchguard_steps_done_total",
        "branchguard_notifications_total",
        "branchguard_outbox_pending",
        "branchguard_outbox_oldest_pending_seconds",
        "branchguard_probe_up",
        "branchguard_probe_duration_seconds_bucket",
        "branchguard_drill_runs_total",
        "branchguard_host_cpu_usage_ratio",
        "branchguard_host_disk_free_bytes",
        "branchguard_config_reloads_total",
        "branchguard_config_last_reload_success_timestamp_seconds",
        "branchguard_playbooks_loaded",
        "branchguard_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(family), "{family} missing from the scrape");
    }
    // Every metric the Grafana dashboard queries exists in the scrape.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/branchguard-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let re = regex::Regex::new(r"\b(branchguard_[a-z_]+|process_[a-z_]+)\b").unwrap();
    let mut used = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            for m in re.find_iter(t["expr"].as_str().unwrap()) {
                used.push(m.as_str().to_string());
            }
        }
    }
    assert!(used.len() > 15, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| {
            !text
                .lines()
                .any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the daemon does not have: {missing:?}"
    );
    // docs/METRICS.md describes every family the daemon serves, and nothing else.
    let doc = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let undocumented: Vec<&&str> = served
        .iter()
        .filter(|m| !doc.contains(&format!("`{m}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/METRICS.md lacks {undocumented:?}"
    );
    let unserved: Vec<&str> = re
        .find_iter(&doc)
        .map(|m| m.as_str().trim_end_matches("_bucket"))
        .filter(|m| !served.contains(m))
        .collect();
    assert!(
        unserved.is_empty(),
        "docs/METRICS.md names metrics the daemon does not serve: {unserved:?}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_values_the_daemon_caused() {
    let (_f, d, _server) = busy_daemon();
    let dir = tempfile::tempdir().unwrap();
    let target = d.url.trim_start_matches("http://").to_string();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: branchguard\n    static_configs:\n      - targets: [\"{target}\"]\n"),
    )
    .unwrap();
    // Released just before Prometheus binds it (it cannot share a held port).
    let port = free_port().port;
    let mut prom = tool("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (apt-get install prometheus; .ci/run does)");
    let http = reqwest::blocking::Client::new();
    let query = |q: &str| -> Value {
        http.get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .ok()
            .and_then(|r| r.json().ok())
            .unwrap_or(Value::Null)
    };
    let open = wait_for(WAIT, "Prometheus to have scraped the daemon", || {
        let v = query(r#"branchguard_incidents_open{playbook="failover"}"#);
        v["data"]["result"]
            .as_array()
            .filter(|r| !r.is_empty())
            .cloned()
    });
    assert_eq!(open[0]["value"][1], "1", "{open:?}");
    assert_eq!(open[0]["metric"]["tier"], "1");
    // The acknowledgement took well under 5 seconds: it is in the first bucket.
    let bucket = query(
        r#"branchguard_step_response_seconds_bucket{playbook="failover",step="switch",le="5"}"#,
    );
    assert_eq!(bucket["data"]["result"][0]["value"][1], "1", "{bucket}");
    // Done at once, by its deadline: the report's time to done and deadlines
    // met, as Prometheus carries them (the drill's step is not counted).
    let done =
        query(r#"branchguard_step_done_seconds_bucket{playbook="failover",step="switch",le="5"}"#);
    assert_eq!(done["data"]["result"][0]["value"][1], "1", "{done}");
    let met = query(
        r#"sum by (deadline) (branchguard_steps_done_total{playbook="failover",step="switch"})"#,
    );
    let mut by: Vec<(String, String)> = met["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["deadline"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by.sort();
    assert_eq!(
        by,
        vec![("met".into(), "1".into()), ("missed".into(), "0".into())],
        "{met}"
    );
    let _ = prom.kill();
    let _ = prom.wait();
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let check = tool("promtool")
        .args(["check", "rules", "branchguard.rules.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = tool("promtool")
        .args(["test", "rules", "branchguard.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    let said =
        String::from_utf8_lossy(&test.stdout).to_string() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success() && said.contains("SUCCESS"), "{said}");
    let tests = std::fs::read_to_string(dir.join("branchguard.rules.test.yml")).unwrap();
    assert!(tests.matches("alertname:").count() >= 5);
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root().join("deploy/branchguard.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/branchguard",
            env!("CARGO_BIN_EXE_branchguard"),
        );
    let path = dir.path().join("branchguard.service");
    std::fs::write(&path, unit).unwrap();
    let out = tool("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd; .ci/run does)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The series of a scrape: each sample's name and labels, without values.
fn series(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_string()))
        .collect()
}

/// **Invariant:** label values come from configuration or small fixed sets,
/// never ids or free text: events with a hundred new kinds, summaries,
/// labels and unknown branches add not one series to those the first few
/// made.
#[test]
fn events_with_new_free_text_add_no_series() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let round = |n: usize, tag: &str| {
        for i in 0..n {
            let known = format!(
                r#"{{"kind":"{tag}.kind.{i}","branch":"br-a","summary":"free text {tag} {i}","labels":{{"system":"{tag}-{i}","host":"h{i}"}}}}"#
            );
            assert_eq!(d.post("/api/v1/events", &known).0, 202);
            let unknown = format!(r#"{{"kind":"x","branch":"no-such-{tag}-{i}"}}"#);
            assert_eq!(d.post("/api/v1/events", &unknown).0, 400);
            let bad = format!(r#"{{"kind":"x","branch":"br-a","severity":"{tag}-{i}"}}"#);
            assert_eq!(d.post("/api/v1/events", &bad).0, 400);
        }
    };
    round(1, "first");
    let before = wait_for(WAIT, "the first events counted", || {
        let s = scrape(&d);
        (s.contains("branchguard_events_received_total{")
            && s.contains("branchguard_events_rejected_total{"))
        .then(|| series(&s))
    });
    round(100, "storm");
    let s = scrape(&d);
    let received = d.metric("branchguard_events_received_total{source=\"api\"}");
    assert!(received.is_some_and(|n| n >= 101.0), "{received:?}");
    let after = series(&s);
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.is_empty(), "series made from free text: {new:?}");
    assert!(before.len() > 20, "{}", before.len());
}
