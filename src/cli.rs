//! The command line (SPEC §7): parsing with clap and one function per command.
//! Library errors become `anyhow` here, at the program's edge.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::{self, Loaded};
use crate::matching::{self, Plan};

#[derive(Debug, Parser)]
#[command(
    name = "branchguard",
    version,
    about = "Incident response and drills for a bank's branch network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config, playbooks and drills.
    Check {
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
    },
    /// Show which playbooks an event would open or join, and the steps it would start.
    Match {
        /// An event file (JSON or YAML): one event or a list.
        event_file: PathBuf,
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
        /// Pretend the event arrives at this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<DateTime<chrono::FixedOffset>>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_or_report(path: &std::path::Path) -> Result<Loaded, ExitCode> {
    config::load(path).map_err(|diags| {
        eprint!("{diags}");
        eprintln!("{} error(s)", diags.len());
        ExitCode::from(1)
    })
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(match load_or_report(&config) {
            Ok(loaded) => {
                println!("ok: {}", loaded.summary());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Command::Match {
            event_file,
            config,
            at,
        } => {
            let loaded = match load_or_report(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let now = at.map_or_else(crate::clock::now, |t| t.to_utc());
            Ok(match_command(&loaded, &event_file, now))
        }
    }
}

fn match_command(loaded: &Loaded, file: &std::path::Path, now: DateTime<Utc>) -> ExitCode {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}:1:1: cannot read event file: {e}");
            return ExitCode::from(1);
        }
    };
    let inputs = match crate::event::parse_file(&name, &text) {
        Ok(v) => v,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::from(1);
        }
    };
    let cfg = &loaded.config;
    let tz = cfg.calendar.timezone;
    let mut failed = false;
    for (i, input) in inputs.into_iter().enumerate() {
        let ev = match input.check(|b| cfg.branches.contains_key(b), now, "cli") {
            Ok(ev) => ev,
            Err(e) => {
                let field = e.field.map(|f| format!("[{i}].{f}: ")).unwrap_or_default();
                eprintln!("{name}: event {field}{}", e.message);
                failed = true;
                continue;
            }
        };
        println!(
            "event {} at {} ({}, {}){}",
            ev.kind,
            ev.branch,
            ev.severity.as_str(),
            ev.status.as_str(),
            ev.summary
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
        let matches = matching::match_event(&loaded.playbooks, &ev);
        if matches.is_empty() {
            println!("  no playbook matches: the event would be stored as unmatched");
        }
        for m in matches {
            let pb = &m.playbook;
            let tier = match matching::tier_name(pb, m.tier) {
                Some(n) => format!("tier {} ({n})", m.tier),
                None => format!("tier {}", m.tier),
            };
            let verb = if ev.status == crate::event::Status::Resolved {
                "would resolve the open incident of group"
            } else {
                "would open an incident, or join the open one, for group"
            };
            println!(
                "  playbook {} ({}), {tier}: {verb} {}",
                pb.id, pb.name, m.group_key
            );
            if ev.status == crate::event::Status::Resolved {
                continue;
            }
            for (step, plan) in matching::plan(pb, m.tier, now, &cfg.calendar) {
                let when = match plan {
                    Plan::Active(due) => {
                        let mins = (due - now).num_seconds();
                        format!(
                            "due {} (in {})",
                            due.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z"),
                            short(mins)
                        )
                    }
                    Plan::OnResolution => format!("after resolution, within {}", step.deadline),
                    Plan::NotAtTier => format!(
                        "not started: needs {}",
                        step.when.map(|c| c.to_string()).unwrap_or_default()
                    ),
                };
                let who = match (&step.assignee, &step.action) {
                    (Some(a), _) => a.to_string(),
                    (None, crate::config::Action::Notify(ts)) => ts
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    (None, crate::config::Action::RollCall(t)) => t.to_string(),
                    (None, crate::config::Action::Webhook { channel, .. }) => {
                        format!("channel:{channel}")
                    }
                    (None, _) => "-".into(),
                };
                println!(
                    "    {:<24} {:<10} {:<28} {when}",
                    step.id,
                    step.action.name(),
                    who
                );
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn short(secs: i64) -> String {
    crate::duration::short(std::time::Duration::from_secs(secs.max(0) as u64))
}
