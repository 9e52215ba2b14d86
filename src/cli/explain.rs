//! `branchguard match`: what an event would do, without a daemon.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::emit;
use crate::config::Loaded;
use crate::matching::{self, Plan};

pub fn match_command(loaded: &Loaded, file: &std::path::Path, now: DateTime<Utc>) -> ExitCode {
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
    // The daemon's database, when there is one, tells which groups have an open incident.
    let store = crate::store::open_reader(&cfg.store).ok();
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
        outln!(
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
            outln!("  no playbook matches: the event would be stored as unmatched");
        }
        for m in matches {
            let pb = &m.playbook;
            let tier = match matching::tier_name(pb, m.tier) {
                Some(n) => format!("tier {} ({n})", m.tier),
                None => format!("tier {}", m.tier),
            };
            let open = store
                .as_ref()
                .and_then(|st| st.open_for_group(&m.group_key).ok().flatten());
            let verb = match (ev.status, open) {
                (crate::event::Status::Resolved, Some(id)) => {
                    format!("would join and resolve open incident #{id} of group")
                }
                (crate::event::Status::Resolved, None) => {
                    "has no open incident to resolve for group".to_string()
                }
                (_, Some(id)) => {
                    format!("would join open incident #{id} (no new notifications) of group")
                }
                (_, None) => "would open a new incident for group".to_string(),
            };
            outln!(
                "  playbook {} ({}), {tier}: {verb} {}",
                pb.id,
                pb.name,
                m.group_key
            );
            if ev.status == crate::event::Status::Resolved {
                continue;
            }
            for (step, plan) in matching::plan(pb, m.tier, now, &cfg.calendar) {
                let when = match &plan {
                    Plan::Active(due) => {
                        let due = *due;
                        let mins = (due - now).num_seconds();
                        format!("due {} (in {})", crate::show::time(due, tz), short(mins))
                    }
                    Plan::OnResolution => format!(
                        "after resolution{}, within {}",
                        step.delay
                            .as_ref()
                            .map(|d| format!(" + {d}"))
                            .unwrap_or_default(),
                        step.deadline
                    ),
                    Plan::Every(due, every) => format!(
                        "#1 due {} (in {}), then one every {every} until resolved",
                        crate::show::time(*due, tz),
                        short((*due - now).num_seconds())
                    ),
                    Plan::AfterStep(before) => format!(
                        "when {before} is done{}, within {}",
                        step.delay
                            .as_ref()
                            .map(|d| format!(" + {d}"))
                            .unwrap_or_default(),
                        step.deadline
                    ),
                    Plan::NotAtTier => format!(
                        "not started: needs {}{}",
                        step.when.map(|c| c.to_string()).unwrap_or_default(),
                        // A tier reached by time: when that would be.
                        pb.tiers
                            .iter()
                            .filter(|t| step.eligible(t.level))
                            .find_map(|t| t.open_for.as_ref().map(|d| (t, d)))
                            .map(|(t, d)| format!(
                                " (tier {} {} is reached when the incident has been open {d})",
                                t.level, t.name
                            ))
                            .unwrap_or_default()
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
                    (None, crate::config::Action::Event { kind, .. }) => format!("event {kind}"),
                    (None, crate::config::Action::Webhook { channel, .. }) => {
                        format!("channel:{channel}")
                    }
                    (None, _) => "-".into(),
                };
                outln!(
                    "    {:<24} {:<10} {:<28} {when}",
                    step.id,
                    step.action.name(),
                    who
                );
                // When it would escalate, if nobody finishes it: counted from its start.
                let start = match plan {
                    Plan::Active(_) | Plan::Every(..) => Some(now),
                    _ => None,
                };
                for e in &step.escalate {
                    let to =
                        e.to.iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(", ");
                    let at = match start {
                        Some(s) => {
                            let at = e.after.after(s, &cfg.calendar);
                            format!(
                                "at {} (in {})",
                                crate::show::time(at, tz),
                                short((at - now).num_seconds())
                            )
                        }
                        None => format!("{} after it starts", e.after),
                    };
                    outln!("      escalates {at} to {to}");
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Time left, written as everywhere else (`show`).
fn short(secs: i64) -> String {
    crate::show::duration(secs.max(0) as f64)
}
