//! `branchguard drill list | run | runs | report | abort` and `silence add | list | expire`.

use std::process::ExitCode;

use anyhow::Context;

use super::{DrillCommand, SilenceCommand, body, client, emit};

pub fn drill_command(what: DrillCommand) -> anyhow::Result<ExitCode> {
    match what {
        DrillCommand::List { client } => {
            let c = client::Client::new(&client)?;
            let v = c.get("/api/v1/drills", &[])?;
            out!("{}", client::drills_table(&v, &c.zones));
        }
        DrillCommand::Run {
            id,
            branch,
            by,
            client,
        } => {
            let c = client::Client::new(&client)?;
            let mut b = serde_json::Map::new();
            if let Some(x) = branch {
                b.insert("branch".into(), x.into());
            }
            if let Some(x) = by {
                b.insert("by".into(), x.into());
            }
            let body = serde_json::Value::Object(b).to_string();
            let v = c.post_raw(&format!("/api/v1/drills/{id}/run"), body)?;
            outln!(
                "drill {id} started: run {}; incidents: {}",
                v["run"],
                client::ids(&v["incidents"])
            );
            outln!("report: branchguard drill report {}", v["run"]);
        }
        DrillCommand::Runs {
            drill,
            branch,
            limit,
            cursor,
            client,
        } => {
            let c = client::Client::new(&client)?;
            let mut q = vec![("limit".to_string(), limit.to_string())];
            if let Some(d) = drill {
                q.push(("drill".into(), d));
            }
            if let Some(b) = branch {
                q.push(("branch".into(), b));
            }
            if let Some(cur) = cursor {
                q.push(("cursor".into(), cur.to_string()));
            }
            let v = c.get("/api/v1/drill-runs", &q)?;
            out!("{}", client::runs_table(&v, &c.zones));
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

fn matcher(arg: &str, regex: bool) -> anyhow::Result<serde_json::Value> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("`{arg}`: expected NAME=VALUE"))?;
    Ok(serde_json::json!({ "name": name, "value": value, "regex": regex }))
}

pub fn silence_command(what: SilenceCommand) -> anyhow::Result<ExitCode> {
    match what {
        SilenceCommand::Add {
            matches,
            regexes,
            duration,
            until,
            comment,
            by,
            force,
            client,
        } => {
            let mut matchers = Vec::new();
            for m in &matches {
                matchers.push(matcher(m, false)?);
            }
            for m in &regexes {
                matchers.push(matcher(m, true)?);
            }
            let ends = match (until, duration) {
                (Some(u), _) => u.to_utc(),
                (None, Some(d)) => {
                    let d = humantime::parse_duration(&d).with_context(|| {
                        format!("--for `{d}`: expected a duration such as 2h or 30m")
                    })?;
                    crate::clock::now() + chrono::Duration::from_std(d)?
                }
                (None, None) => anyhow::bail!("give --for DURATION or --until TIME"),
            };
            let mut b = serde_json::json!({ "matchers": matchers, "ends_at": ends, "comment": comment, "force": force });
            if let Some(by) = by {
                b["created_by"] = by.into();
            }
            let c = client::Client::new(&client)?;
            let v = c.post_raw("/api/v1/silences", b.to_string())?;
            // The way `silence list` writes it: the bank's time zone, with its offset.
            outln!(
                "silence {} in force until {}",
                v["id"],
                crate::show::time(ends, c.zones.default)
            );
        }
        SilenceCommand::List { all, client } => {
            let c = client::Client::new(&client)?;
            let q = if all {
                vec![("all".to_string(), "true".to_string())]
            } else {
                Vec::new()
            };
            let v = c.get("/api/v1/silences", &q)?;
            out!("{}", client::silences_table(&v, &c.zones));
        }
        SilenceCommand::Expire { id, by, client } => {
            let c = client::Client::new(&client)?;
            c.delete(&format!("/api/v1/silences/{id}"), body(by, None))?;
            outln!("silence {id} ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}
