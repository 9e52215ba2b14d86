//! The command line (docs/CLI.md): parsing with clap and one function per command.
//! Library errors become `anyhow` here, at the program's edge.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context;
use chrono::DateTime;
use clap::{Parser, Subcommand};

use crate::config::{self, Loaded};

/// Writes to stdout. A closed pipe (`branchguard incidents | head`) ends the
/// program quietly instead of panicking as `println!` does.
fn emit(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*)) };
}

macro_rules! outln {
    ($($t:tt)*) => { emit(format_args!("{}\n", format_args!($($t)*))) };
}

mod client;
mod drills;
mod explain;
mod exports;

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
    /// Run the daemon.
    Run {
        /// The configuration file; relative paths in it are relative to its own directory.
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
        /// How the log (on stderr) is written: `text` for people (coloured
        /// only on a terminal), `json` one object per line for journald and
        /// log shippers.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
    },
    /// Post an event to a running daemon.
    Event {
        /// What happened, e.g. system.down (matched against playbook triggers).
        #[arg(long)]
        kind: Option<String>,
        /// The branch id, as in the configuration (e.g. sh-001).
        #[arg(long)]
        branch: Option<String>,
        /// critical, major, minor or info (default: major).
        #[arg(long, value_parser = ["critical", "major", "minor", "info"])]
        severity: Option<String>,
        /// firing (default: it is happening) or resolved (it is over).
        #[arg(long, value_parser = ["firing", "resolved"])]
        status: Option<String>,
        /// A label, as KEY=VALUE; may be repeated (e.g. --label system=core-banking).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// One line for people.
        #[arg(long)]
        summary: Option<String>,
        /// Post the events of this JSON or YAML file instead (one event or a list).
        #[arg(long, conflicts_with_all = ["kind", "branch"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List incidents, newest first.
    Incidents {
        /// Only open incidents (same as `--status open`).
        #[arg(long, conflicts_with = "status")]
        open: bool,
        /// Only incidents in this state: open, resolved, or follow-up
        /// (resolved, with follow-up steps such as a 24-hour back-fill still running).
        #[arg(long, value_parser = ["open", "resolved", "follow-up"])]
        status: Option<String>,
        /// Only incidents of this branch.
        #[arg(long)]
        branch: Option<String>,
        /// Only incidents of this playbook (its id).
        #[arg(long)]
        playbook: Option<String>,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a previous page: the number it printed as `--cursor N`.
        #[arg(long)]
        cursor: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one incident.
    Incident {
        #[command(subcommand)]
        what: IncidentCommand,
    },
    /// Acknowledge a step.
    Ack(StepArgs),
    /// Mark a step done.
    Done(StepArgs),
    /// Confirm a person safe in a roll call (`--by PERSON`).
    Safe(StepArgs),
    /// Resolve an incident (its follow-up steps start).
    Resolve(IncidentArgs),
    /// Escalate an incident to the operations centre and the branch head.
    Escalate(IncidentArgs),
    /// Silences: hold back matching events for a while (planned maintenance).
    Silence {
        #[command(subcommand)]
        what: SilenceCommand,
    },
    /// Drills: list, run one now, read a run's report, stop a run.
    Drill {
        #[command(subcommand)]
        what: DrillCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Write every incident that opened in a period, with its history, outbox
    /// and audit rows, as signed JSON Lines for an auditor (`audit verify
    /// --file` checks it without the database).
    Export {
        /// The first day (2026-12-01, in the bank's zone) or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// The last day, included (or an RFC 3339 time, excluded).
        #[arg(long)]
        to: String,
        /// The file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The configuration file (its data_dir holds the database).
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
    },
    /// Copy an existing SQLite database into the PostgreSQL database the configuration names (store.postgres)
    Migrate {
        /// The data directory that holds the SQLite database (branchguard.db).
        #[arg(long, value_name = "DIR")]
        from_sqlite: PathBuf,
        /// The configuration file (its store.postgres names the database to fill).
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
    },
    /// Reports: how fast each branch answers (report response).
    Report {
        #[command(subcommand)]
        what: ReportCommand,
    },
    /// Who is on duty: each rostered role at each branch, until when, and who is next.
    Oncall {
        /// Only this role (e.g. it-duty).
        #[arg(long)]
        role: Option<String>,
        /// Only this branch.
        #[arg(long)]
        branch: Option<String>,
        /// At this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<DateTime<chrono::FixedOffset>>,
        /// Print the link to this person's own shift calendar (for a phone's
        /// calendar app; it works without a token) instead.
        #[arg(long, value_name = "PERSON", conflicts_with_all = ["role", "branch", "at"])]
        calendar_link: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Validate the config, playbooks, drills and rosters.
    Check {
        /// The configuration file to check (with its playbooks, drills and rosters).
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
        /// How far ahead to look for gaps in the rosters (e.g. 28d).
        #[arg(long, default_value = "14d", value_parser = parse_span)]
        horizon: std::time::Duration,
        /// Treat roster gaps as errors (exit 1).
        #[arg(long)]
        strict: bool,
    },
    /// Show which playbooks an event would open or join, and the steps it would start.
    Match {
        /// An event file (JSON or YAML): one event or a list.
        event_file: PathBuf,
        /// The configuration file to match against.
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
        /// Pretend the event arrives at this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<DateTime<chrono::FixedOffset>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Steps, deadlines, roll call and history of one incident.
    Show {
        /// The incident's number.
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The incident's report: summary, tier history, each step's times and
    /// deadline met or missed, every notification and its delivery, the timeline.
    Report {
        /// The incident's number.
        id: i64,
        /// md (Markdown, for people), json, or html (a page to print).
        #[arg(long, value_parser = ["md", "json", "html"], default_value = "md")]
        format: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence events matching every --match (and --match-re) for a while.
    Add {
        /// A field or label that must equal a value, as NAME=VALUE (branch, kind, severity or a label); may be repeated.
        #[arg(long = "match", value_name = "NAME=VALUE")]
        matches: Vec<String>,
        /// A field or label that must match a regular expression, as NAME=REGEX.
        #[arg(long = "match-re", value_name = "NAME=REGEX")]
        regexes: Vec<String>,
        /// How long from now (e.g. 2h, 30m).
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        duration: Option<String>,
        /// Until this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<chrono::FixedOffset>>,
        /// Why (shown in the list).
        #[arg(long, default_value = "")]
        comment: String,
        /// Who sets it (a person id; required without API tokens).
        #[arg(long)]
        by: Option<String>,
        /// Allow a silence that matches every event.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Silences in force or to come (--all: also ended ones).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End a silence now.
    Expire {
        /// The silence's number.
        id: i64,
        /// Who ends it (a person id; required without API tokens).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// How fast each branch answers: per playbook, step and branch over a
    /// period, times to acknowledge, to done and to resolve (p50, p90, max).
    Response {
        /// The first day (2026-12-01, in the bank's zone) or an RFC 3339 time; default: 30 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// The last day, included (or an RFC 3339 time, excluded); default: now.
        #[arg(long)]
        to: Option<String>,
        /// Only this branch.
        #[arg(long)]
        branch: Option<String>,
        /// Only this playbook.
        #[arg(long)]
        playbook: Option<String>,
        /// md (a table for people), csv or json.
        #[arg(long, value_parser = ["md", "csv", "json"], default_value = "md")]
        format: String,
        /// Report drills instead of real incidents (never mixed).
        #[arg(long)]
        drill: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Every drill with its schedule, branches and next scheduled time.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a drill now, at all its branches or one.
    Run {
        /// The drill's id (see `drill list`).
        id: String,
        /// Only this branch (a branch head's token: its branches by default).
        #[arg(long)]
        branch: Option<String>,
        /// Who starts it (a person id; a token bound to a person gives it;
        /// without tokens, recorded as `local` when left out).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drill runs, newest first: number, status, score, each branch.
    Runs {
        /// Only runs of this drill.
        #[arg(long)]
        drill: Option<String>,
        /// Only runs that include this branch.
        #[arg(long)]
        branch: Option<String>,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after a previous page: the number it printed as `--cursor N`.
        #[arg(long)]
        cursor: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A run's report in Markdown: scores, steps, people, the trend.
    Report {
        /// The run's number (printed by `drill run`, listed by `drill runs`).
        run: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a running drill; it is recorded as aborted and not scored.
    Abort {
        /// The run's number.
        run: i64,
        /// Who stops it (a person id; a token bound to a person gives it;
        /// without tokens, recorded as `local` when left out).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; exit 1 naming the first broken row.
    /// With --file, check an export instead, without the database.
    Verify {
        /// The configuration file (its data_dir holds the database; its
        /// audit.key_file the key, unless BRANCHGUARD_AUDIT_KEY gives it).
        #[arg(long, default_value = "branchguard.yaml")]
        config: PathBuf,
        /// An export (`branchguard export`): exit 1 naming the first line
        /// that was changed, removed or inserted.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The daemon's base URL (default: from the config's `listen`).
    #[arg(long, env = "BRANCHGUARD_URL")]
    pub url: Option<String>,
    /// The configuration file: where the daemon listens, and time zones for display.
    #[arg(long, default_value = "branchguard.yaml")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The incident's number.
    pub id: i64,
    /// The step's id, as in the playbook (e.g. switch-to-backup).
    pub step: String,
    /// Who is answering: a person id from the configuration (required, unless
    /// the token in BRANCHGUARD_TOKEN is bound to a person).
    #[arg(long)]
    pub by: Option<String>,
    /// A note for the history.
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct IncidentArgs {
    /// The incident's number.
    pub id: i64,
    /// Who is doing it: a person id from the configuration (required, unless
    /// the token in BRANCHGUARD_TOKEN is bound to a person).
    #[arg(long)]
    pub by: Option<String>,
    /// A note for the history.
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
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
        Command::Run { config, log_format } => {
            init_log(log_format == "json");
            let loaded = match load_or_report(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            run_daemon(loaded, config)
        }
        Command::Audit {
            what: AuditCommand::Verify { config, file },
        } => {
            // The key may come from the environment alone: an auditor
            // checking a file needs no configuration.
            if let Some(file) = &file
                && std::env::var_os(crate::store::audit::KEY_ENV).is_some()
            {
                return exports::verify_file(file, None);
            }
            with_records(&config, |records| match file {
                Some(file) => exports::verify_file(&file, Some(records)),
                None => audit_verify(records),
            })
        }
        Command::Migrate {
            from_sqlite,
            config,
        } => with_records(&config, |records| exports::migrate(records, &from_sqlite)),
        Command::Export {
            from,
            to,
            out,
            config,
        } => with_records(&config, |records| {
            exports::export(records, &from, &to, &out)
        }),
        Command::Event {
            kind,
            branch,
            severity,
            status,
            labels,
            summary,
            file,
            client,
        } => {
            let body = match file {
                Some(f) => {
                    // JSON or YAML; checked here so a mistake is shown with its line and column.
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    let events = crate::event::parse_file(&f.display().to_string(), &text)
                        .map_err(|d| anyhow::anyhow!("{d}"))?;
                    serde_json::Value::Array(events.into_iter().map(|e| e.to_json()).collect())
                        .to_string()
                }
                None => {
                    let mut ev = serde_json::json!({
                        "kind": kind.ok_or_else(|| anyhow::anyhow!("--kind is required (or --file)"))?,
                        "branch": branch.ok_or_else(|| anyhow::anyhow!("--branch is required (or --file)"))?,
                        "source": "cli",
                    });
                    if let Some(s) = severity {
                        ev["severity"] = s.into();
                    }
                    if let Some(s) = status {
                        ev["status"] = s.into();
                    }
                    if let Some(s) = summary {
                        ev["summary"] = s.into();
                    }
                    let mut map = serde_json::Map::new();
                    for l in labels {
                        let (k, v) = l
                            .split_once('=')
                            .ok_or_else(|| anyhow::anyhow!("--label `{l}`: expected KEY=VALUE"))?;
                        map.insert(k.to_string(), v.into());
                    }
                    ev["labels"] = serde_json::Value::Object(map);
                    ev.to_string()
                }
            };
            let c = client::Client::new(&client)?;
            let v = c.post_raw("/api/v1/events", body)?;
            // A silence that held the event back is said, so "incidents: none"
            // is not read as "nothing matched".
            let held: Vec<String> = v["held_back"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| {
                            format!(
                                "event {} by {}",
                                h["event"],
                                h["by"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let held = if held.is_empty() {
                String::new()
            } else {
                format!("; held back: {}", held.join(", "))
            };
            outln!(
                "accepted {} event(s); incidents: {}{held}",
                v["accepted"],
                client::ids(&v["incidents"])
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Incidents {
            open,
            status,
            branch,
            playbook,
            limit,
            cursor,
            client,
        } => {
            let c = client::Client::new(&client)?;
            let mut q = vec![("limit".to_string(), limit.to_string())];
            let status = if open {
                Some("open".to_string())
            } else {
                status
            };
            if let Some(st) = &status {
                q.push(("status".into(), st.clone()));
            }
            let narrow = q.clone();
            if let Some(b) = branch {
                q.push(("branch".into(), b));
            }
            if let Some(p) = playbook {
                q.push(("playbook".into(), p));
            }
            if let Some(c) = cursor {
                q.push(("cursor".into(), c.to_string()));
            }
            let v = c.get("/api/v1/incidents", &q)?;
            out!("{}", client::incidents_table(&v, &c.zones));
            // Resolved incidents whose follow-up work still runs are not
            // open, but someone still has to do it: say so.
            if status.as_deref() == Some("open") {
                let mut f: Vec<(String, String)> = narrow
                    .into_iter()
                    .filter(|(k, _)| k == "branch" || k == "playbook")
                    .collect();
                f.push(("status".into(), "follow-up".into()));
                f.push(("limit".into(), "1000".into()));
                let follow = c.get("/api/v1/incidents", &f)?;
                let n = follow["items"].as_array().map_or(0, Vec::len);
                if n > 0 {
                    outln!(
                        "and {n} resolved incident(s) with follow-up steps still running: `incidents --status follow-up`"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Incident {
            what: IncidentCommand::Show { id, client },
        } => {
            let c = client::Client::new(&client)?;
            let v = c.get(&format!("/api/v1/incidents/{id}"), &[])?;
            out!("{}", client::incident_text(&v, &c.zones));
            Ok(ExitCode::SUCCESS)
        }
        Command::Incident {
            what: IncidentCommand::Report { id, format, client },
        } => {
            let c = client::Client::new(&client)?;
            let q = [("format".to_string(), format)];
            report(c.get(&format!("/api/v1/incidents/{id}/report"), &q)?)
        }
        Command::Drill { what } => drills::drill_command(what),
        Command::Report {
            what:
                ReportCommand::Response {
                    from,
                    to,
                    branch,
                    playbook,
                    format,
                    drill,
                    client,
                },
        } => {
            let c = client::Client::new(&client)?;
            let mut q: Vec<(String, String)> = vec![("format".into(), format.clone())];
            for (k, v) in [
                ("from", from),
                ("to", to),
                ("branch", branch),
                ("playbook", playbook),
            ] {
                q.extend(v.map(|v| (k.to_string(), v)));
            }
            if drill {
                q.push(("drill".into(), "true".into()));
            }
            report(c.get("/api/v1/reports/response", &q)?)
        }
        Command::Silence { what } => drills::silence_command(what),
        Command::Ack(a) => step_command(a, "ack"),
        Command::Done(a) => step_command(a, "done"),
        Command::Safe(a) => step_command(a, "safe"),
        Command::Resolve(a) => incident_command(a, "resolve"),
        Command::Escalate(a) => incident_command(a, "escalate"),
        Command::Oncall {
            role,
            branch,
            at,
            calendar_link,
            client,
        } => {
            let c = client::Client::new(&client)?;
            if let Some(p) = calendar_link {
                let v = c.get(&format!("/api/v1/people/{p}"), &[])?;
                outln!("{}", v["calendar"].as_str().unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            let mut q = Vec::new();
            q.extend(role.map(|r| ("role".to_string(), r)));
            q.extend(branch.map(|b| ("branch".to_string(), b)));
            q.extend(at.map(|t| ("at".to_string(), t.to_rfc3339())));
            let v = c.get("/api/v1/oncall", &q)?;
            out!("{}", client::oncall_table(&v, &c.zones));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            horizon,
            strict,
        } => Ok(match load_or_report(&config) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                let now = crate::clock::now();
                let until =
                    now + chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::days(14));
                let gaps = loaded.coverage_gaps(now, until);
                for g in &gaps {
                    let line = g.to_string();
                    if strict {
                        eprintln!("{}", line.replacen(": warning: ", ": error: ", 1));
                    } else {
                        eprintln!("{line}");
                    }
                }
                if strict && !gaps.is_empty() {
                    eprintln!(
                        "{} roster gap(s) in the next {}",
                        gaps.len(),
                        crate::show::duration(horizon.as_secs_f64())
                    );
                    return Ok(ExitCode::from(1));
                }
                outln!("ok: {}", loaded.summary());
                let warnings = loaded.warnings.len() + gaps.len();
                if warnings > 0 {
                    eprintln!("{warnings} warning(s)");
                }
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
            Ok(explain::match_command(&loaded, &event_file, now))
        }
    }
}

fn body(by: Option<String>, note: Option<String>) -> String {
    let mut b = serde_json::Map::new();
    if let Some(by) = by {
        b.insert("by".into(), by.into());
    }
    if let Some(n) = note {
        b.insert("note".into(), n.into());
    }
    serde_json::Value::Object(b).to_string()
}

fn step_command(a: StepArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let c = client::Client::new(&a.client)?;
    let v = c.post_raw(
        // An occurrence of a repeating step is `ID#N`: `#` would end the path.
        &format!(
            "/api/v1/incidents/{}/steps/{}/{verb}",
            a.id,
            a.step.replace('%', "%25").replace('#', "%23")
        ),
        body(a.by, a.note),
    )?;
    out!("{}", client::incident_text(&v, &c.zones));
    Ok(ExitCode::SUCCESS)
}

fn incident_command(a: IncidentArgs, action: &str) -> anyhow::Result<ExitCode> {
    let c = client::Client::new(&a.client)?;
    let v = c.post_raw(
        &format!("/api/v1/incidents/{}/{action}", a.id),
        body(a.by, a.note),
    )?;
    out!("{}", client::incident_text(&v, &c.zones));
    Ok(ExitCode::SUCCESS)
}

/// `f` on the records the configuration names; its mistakes printed, exit 1.
fn with_records(
    config: &std::path::Path,
    f: impl FnOnce(&config::Records) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    match config::records(config) {
        Ok(records) => f(&records),
        Err(diags) => {
            eprint!("{diags}");
            Ok(ExitCode::from(1))
        }
    }
}

fn audit_verify(r: &config::Records) -> anyhow::Result<ExitCode> {
    use crate::store::AuditCheck;
    let store =
        crate::store::open_reader(&r.store).with_context(|| format!("cannot open {}", r.store))?;
    let key = crate::store::AuditKey::load(&r.key_file)?;
    if key.is_none() {
        eprintln!(
            "note: no audit key at {} (nor in {}): only rows written before the log was signed can be checked",
            r.key_file.display(),
            crate::store::audit::KEY_ENV
        );
    }
    let published = match key
        .as_ref()
        .map(|k| crate::store::audit::read_head(&r.data_dir, k))
    {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(head))) => Some(head),
        Some(Err(reason)) => {
            outln!("audit log BROKEN: {reason}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some((h, at)) = &published {
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| crate::show::time(t.to_utc(), chrono_tz::UTC))
            .unwrap_or_else(|_| at.clone());
        eprintln!("published chain head ({at}): {} rows", h.rows);
    }
    match store.verify_audit(key, published.map(|(h, _)| h))? {
        AuditCheck::Ok { rows, keyed, last } => {
            outln!(
                "audit log ok: {rows} rows, {} chain intact; stored events, incidents and history agree with it",
                if keyed { "signed" } else { "hash" }
            );
            // What the `audit_anchor` webhook channel received, to compare by eye.
            eprintln!("chain head: {rows} rows, hash {last}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCheck::Broken { seq, reason } => {
            outln!("audit log BROKEN at row {seq}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The daemon's log on stderr: colour only when a person reads it on a
/// terminal (a file or journald gets plain text), or one JSON object a line.
fn init_log(json: bool) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        log.json().with_current_span(false).init();
    } else {
        log.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn run_daemon(loaded: Loaded, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    // What the daemon creates (database, mail, secrets) is its user's only.
    crate::private::umask();
    // A non-loopback `listen` was refused when the configuration was loaded.
    let addr = loaded.config.listen;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let token = tokio_util::sync::CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stopping");
            t.cancel();
        });
        // Tests and scripts read the real address (the config may say port 0),
        // printed only once the store is open. The daemon runs on even when
        // nobody reads its stdout.
        crate::daemon::serve(listener, loaded, config_path, token, |addr| {
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "listening on {addr}").and_then(|()| stdout.flush());
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A report as the daemon wrote it: Markdown or CSV as text, JSON indented.
fn report(v: serde_json::Value) -> anyhow::Result<ExitCode> {
    match v {
        serde_json::Value::String(text) => out!("{text}"),
        json => outln!("{}", serde_json::to_string_pretty(&json)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// `14d`, `28d`, `12h`: a fixed span for a command-line option.
fn parse_span(s: &str) -> Result<std::time::Duration, String> {
    match crate::duration::Delay::parse(s)? {
        crate::duration::Delay::Fixed(d) if d <= std::time::Duration::from_secs(366 * 86_400) => {
            Ok(d)
        }
        crate::duration::Delay::Fixed(_) => Err(format!("`{s}`: at most a year")),
        crate::duration::Delay::WorkingDays(_) => {
            Err(format!("`{s}`: expected a span such as 14d or 12h"))
        }
    }
}
