//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) forwards
//! a group in which one alert is bad: the good alert still opens its incident,
//! and the bad one is kept as a rejected event with its reason.

mod common;

use std::time::Duration;

use common::sinks::free_port;
use common::{Daemon, Fixture, wait_for};
use serde_json::json;

const BINARY: &str = "prometheus-alertmanager";

struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Alertmanager on loopback, sending every group at once to `webhook`.
    fn start(webhook: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "route:\n  receiver: branchguard\n  group_by: [kind]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: branchguard\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        // Released just before Alertmanager binds it (it cannot share a held port).
        let port = free_port().port;
        let child = std::process::Command::new(BINARY)
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {BINARY} ({e}): install it with `apt-get install prometheus-alertmanager` (.ci/run does)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        wait_for(Duration::from_secs(30), "Alertmanager to be ready", || {
            http.get(format!("{url}/-/ready"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        Alertmanager {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_group_with_one_bad_alert_still_opens_the_incident_of_the_good_one() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let am = Alertmanager::start(&format!("{}/api/v1/alertmanager", d.url));
    let alerts = json!([
        {"labels": {"alertname": "CoreDown", "kind": "system.down", "branch": "br-b", "severity": "critical", "system": "core"},
         "annotations": {"summary": "core banking down at Branch B"}},
        {"labels": {"alertname": "CoreDown", "kind": "system.down", "severity": "critical", "system": "core"},
         "annotations": {"summary": "an alert someone forgot to label with its branch"}}
    ]);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alerts)
        .send()
        .expect("POST to Alertmanager");
    assert!(
        r.status().is_success(),
        "Alertmanager took the alerts: {}",
        r.status()
    );

    let incident = wait_for(Duration::from_secs(30), "the good alert's incident", || {
        let list = d.get("/api/v1/incidents?status=open");
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["branch"] == "br-b").cloned())
    });
    assert_eq!(incident["playbook"], "failover");
    assert_eq!(incident["summary"], "core banking down at Branch B");

    // With `group_wait: 0s` Alertmanager may send the group as soon as its
    // first alert is in, and the second a group_interval later: the refused
    // one can come after the good one's incident (CI saw it so).
    let events = wait_for(Duration::from_secs(30), "the refused alert", || {
        let events = d.get("/api/v1/events");
        let n = events["items"]
            .as_array()?
            .iter()
            .filter(|e| !e["rejected"].is_null())
            .count();
        (n >= 1).then_some(events)
    });
    let items = events["items"].as_array().unwrap();
    let rejected: Vec<_> = items.iter().filter(|e| !e["rejected"].is_null()).collect();
    assert_eq!(rejected.len(), 1, "{events}");
    let why = rejected[0]["rejected"].as_str().unwrap();
    assert!(
        why.starts_with("missing_branch: the alert has no `branch` label"),
        "{why}"
    );
    assert_eq!(rejected[0]["matched"], false);
    assert_eq!(
        rejected[0]["summary"],
        "an alert someone forgot to label with its branch"
    );
    let metrics = d
        .http
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("branchguard_events_rejected_total{reason=\"missing_branch\"} 1"),
        "{metrics}"
    );
}
