//! `branchguard drill list | run | report | abort`.

use std::process::ExitCode;

use anyhow::Context;

use super::{DrillCommand, body, client, emit};

pub fn drill_command(what: DrillCommand) -> anyhow::Result<ExitCode> {
    match what {
        DrillCommand::List { client } => {
            let c = client::Client::new(&client)?;
            let v = c.get("/api/v1/drills", &[])?;
            out!("{}", client::drills_table(&v, &c.zones));
        }
        DrillCommand::Run { id, branch, client } => {
            let c = client::Client::new(&client)?;
            let body = match branch {
                Some(b) => serde_json::json!({ "branch": b }).to_string(),
                None => String::new(),
            };
            let v = c.post_raw(&format!("/api/v1/drills/{id}/run"), body)?;
            outln!(
                "drill {id} started: run {}; incidents: {}",
                v["run"],
                client::ids(&v["incidents"])
            );
            outln!("report: branchguard drill report {}", v["run"]);
        }
        DrillCommand::Report { run, client } => {
            let c = client::Client::new(&client)?;
            let v = c.get(&format!("/api/v1/drill-runs/{run}"), &[])?;
            let parsed: crate::engine::DrillRun = serde_json::from_value(v.clone())
                .context("the daemon's answer is not a drill run")?;
            let trend: std::collections::BTreeMap<String, Vec<crate::report::TrendPoint>> =
                serde_json::from_value(v["trend"].clone()).unwrap_or_default();
            let people: std::collections::BTreeMap<String, crate::report::PersonMedian> =
                serde_json::from_value(v["people"].clone()).unwrap_or_default();
            out!(
                "{}",
                client::clean(&crate::report::markdown(
                    &parsed,
                    &trend,
                    &people,
                    c.zones.default
                ))
            );
        }
        DrillCommand::Abort { run, by, client } => {
            let c = client::Client::new(&client)?;
            let v = c.post_raw(&format!("/api/v1/drill-runs/{run}/abort"), body(by, None))?;
            outln!("run {run}: {}", v["status"].as_str().unwrap_or("?"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
