//! The response report against the real daemon: its figures are those of the
//! stored incidents, the same in JSON, CSV and Markdown, and drills apart.

mod common;

use common::{Daemon, Fixture, answer_and_resolve, step};
use serde_json::Value;

const CORE_DOWN: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;

fn secs(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (t(b) - t(a)).num_milliseconds() as f64 / 1000.0
}

#[test]
fn the_response_report_gives_the_stored_figures_in_three_formats() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, body) = d.post("/api/v1/events", CORE_DOWN);
        assert_eq!(code, 202, "{body}");
        let id = body["incidents"][0].as_i64().unwrap();
        answer_and_resolve(&d, id);
        ids.push(id);
    }
    // What was stored, worked out here.
    let incs: Vec<Value> = ids.iter().map(|id| d.incident(*id)).collect();
    let mut ack: Vec<f64> = incs
        .iter()
        .map(|i| step(i, "switch")["response_seconds"].as_f64().unwrap())
        .collect();
    let mut done: Vec<f64> = incs
        .iter()
        .map(|i| {
            secs(
                &step(i, "switch")["notified_at"],
                &step(i, "switch")["done_at"],
            )
        })
        .collect();
    let mut resolve: Vec<f64> = incs
        .iter()
        .map(|i| secs(&i["opened_at"], &i["resolved_at"]))
        .collect();
    for v in [&mut ack, &mut done, &mut resolve] {
        v.sort_by(f64::total_cmp);
    }
    // Two values: nearest-rank p50 is the first, p90 the second.
    let report = d.get("/api/v1/reports/response?branch=br-a");
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == "switch")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert_eq!(
        (
            row["playbook"].as_str(),
            row["incidents"].as_u64(),
            row["started"].as_u64(),
            row["acknowledged"].as_u64(),
            row["done"].as_u64()
        ),
        (Some("failover"), Some(2), Some(2), Some(2), Some(2)),
        "{row}"
    );
    for (name, v) in [
        ("time_to_acknowledge", &ack),
        ("time_to_done", &done),
        ("time_to_resolve", &resolve),
    ] {
        let s = &row[name];
        assert_eq!(s["count"], 2, "{name}: {row}");
        assert_eq!(s["p50"].as_f64(), Some(v[0]), "{name}: {row}");
        assert_eq!(s["p90"].as_f64(), Some(v[1]), "{name}: {row}");
        assert_eq!(s["max"].as_f64(), Some(v[1]), "{name}: {row}");
    }
    assert_eq!(row["deadlines_met"].as_f64(), Some(1.0), "{row}");
    // CSV: the same numbers in flattened columns.
    let csv = d
        .http
        .get(format!(
            "{}/api/v1/reports/response?branch=br-a&format=csv",
            d.url
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let line: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("failover,switch,br-a,"))
        .unwrap()
        .split(',')
        .collect();
    let col = |n: &str| {
        line[head.iter().position(|h| *h == n).unwrap()]
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(col("time_to_acknowledge_p50"), ack[0]);
    assert_eq!(col("time_to_done_max"), done[1]);
    assert_eq!(col("time_to_resolve_p90"), resolve[1]);
    // Markdown through the CLI.
    let out = f.run(&["report", "response", "--branch", "br-a", "--url", &d.url]);
    assert!(
        out.code == 0
            && out
                .stdout
                .contains("| failover | switch | br-a | 2 | 2 | 2 | 2 |"),
        "{out:?}"
    );
    // Drills apart: none ran.
    assert_eq!(
        d.get("/api/v1/reports/response?drill=true")["rows"],
        serde_json::json!([])
    );
    // A day that holds nothing, and a mistake named by its field.
    assert_eq!(
        d.get("/api/v1/reports/response?from=2020-01-01&to=2020-01-31")["rows"],
        serde_json::json!([])
    );
    let bad = d
        .http
        .get(format!("{}/api/v1/reports/response?from=yesterday", d.url))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(bad.json::<Value>().unwrap()["field"], "from");
}

/// The incident report of a resolved failover: every step's times as stored,
/// met or missed, the notifications and their delivery, the timeline; in
/// Markdown, JSON and a printable page.
#[test]
fn the_incident_report_gives_each_steps_times_met_or_missed_and_the_timeline() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let (code, body) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    // Done only after its 4-second deadline: missed.
    common::wait_for(
        std::time::Duration::from_secs(20),
        "the switch to be overdue",
        || (step(&d.incident(id), "switch")["state"] == "overdue").then_some(()),
    );
    answer_and_resolve(&d, id);
    let inc = d.incident(id);
    let sw = step(&inc, "switch");
    let local = |v: &Value| {
        branchguard::show::time(
            chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
                .unwrap()
                .to_utc(),
            chrono_tz::Asia::Shanghai,
        )
    };
    let get = |q: &str| {
        d.http
            .get(format!("{}/api/v1/incidents/{id}/report{q}", d.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let md = get("");
    assert!(
        md.starts_with(&format!("# Incident #{id} — Failover at Branch A")),
        "{md}"
    );
    let row = format!(
        "| switch | role:it-duty | {} | {} | {} | {} | IT A | missed | 1 |",
        local(&sw["deadline"]),
        local(&sw["notified_at"]),
        local(&sw["acknowledged_at"]),
        local(&sw["done_at"])
    );
    assert!(md.contains(&row), "missing {row}:\n{md}");
    assert!(
        md.contains("| check | - |") && md.contains("| met |"),
        "{md}"
    );
    assert!(
        md.contains(&format!("- Resolved: {}", local(&inc["resolved_at"]))),
        "{md}"
    );
    assert!(
        md.contains("it.a@bank.example") && md.contains("`incident.resolved` head.a"),
        "{md}"
    );
    let json: Value = serde_json::from_str(&get("?format=json")).unwrap();
    let s = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "switch")
        .unwrap();
    assert_eq!(
        (s["met"].as_bool(), s["escalations"].as_u64()),
        (Some(false), Some(1)),
        "{json}"
    );
    // Read after the incident: its history can only have grown (deliveries).
    assert!(json["timeline"].as_array().unwrap().len() >= inc["history"].as_array().unwrap().len());
    let html = get("?format=html");
    assert!(
        html.contains("<table>") && html.contains("missed") && !html.contains("<script"),
        "{html}"
    );
    let out = f.run(&["incident", "report", &id.to_string(), "--url", &d.url]);
    assert!(out.code == 0 && out.stdout.contains(&row), "{out:?}");
}
