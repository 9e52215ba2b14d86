//! The command-line client of a running daemon: requests and readable tables.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use chrono::DateTime;
use chrono_tz::Tz;
use serde_json::Value;

use super::ClientArgs;

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
    /// Times are shown in each branch's time zone when the config can be read.
    pub zones: Zones,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let loaded = crate::config::load(&args.config).ok();
        let base = match (&args.url, &loaded) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(l)) => format!("http://{}", l.config.listen),
            (None, None) => "http://127.0.0.1:9700".to_string(),
        };
        Ok(Client {
            base,
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
            token: std::env::var("BRANCHGUARD_TOKEN").ok(),
            zones: loaded.map_or_else(Zones::default, |l| Zones {
                default: l.config.calendar.timezone,
                branches: l
                    .config
                    .branches
                    .keys()
                    .map(|b| (b.clone(), l.config.tz_of(b)))
                    .collect(),
            }),
        })
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> anyhow::Result<Value> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .with_context(|| format!("cannot reach branchguard at {}", self.base))?;
        let status = resp.status();
        let text = resp.text()?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or("request failed");
            match v["field"].as_str() {
                Some(f) => bail!("{status}: {msg} (field {f})"),
                None => bail!("{status}: {msg}"),
            }
        }
        Ok(v)
    }

    pub fn get(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
    }

    pub fn delete(&self, path: &str, body: String) -> anyhow::Result<Value> {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    pub fn post_raw(&self, path: &str, body: String) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }
}

pub fn ids(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|x| format!("#{x}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_string(),
    }
}

/// The time zone of each branch (the bank's when a branch has none of its own).
#[derive(Debug, Clone, Default)]
pub struct Zones {
    pub default: Tz,
    pub branches: std::collections::HashMap<String, Tz>,
}

impl Zones {
    fn of(&self, branch: &Value) -> Tz {
        branch
            .as_str()
            .and_then(|b| self.branches.get(b).copied())
            .unwrap_or(self.default)
    }
}

/// A time in a zone, with its offset so nobody has to guess which zone it is.
fn time(v: &Value, tz: Tz) -> String {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| crate::show::time(t.to_utc(), tz))
        .unwrap_or_else(|| "-".to_string())
}

/// Text from the daemon made safe for a terminal: control characters (an ESC
/// that would start a terminal sequence, a NUL) are shown escaped, not sent.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => clean(x),
        other => clean(&other.to_string()),
    }
}

pub fn incidents_table(v: &Value, zones: &Zones) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<9} {:<22} {:<8} {:<4} {:<26} {:<6} STEPS",
        "ID", "STATUS", "PLAYBOOK", "BRANCH", "TIER", "OPENED", "EVENTS"
    );
    for i in v["items"].as_array().into_iter().flatten() {
        let steps = i["steps"].as_array().cloned().unwrap_or_default();
        let count = |st: &str| steps.iter().filter(|x| x["state"] == st).count();
        let mut summary = format!(
            "{}/{} done",
            count("done"),
            steps
                .iter()
                .filter(|x| x["state"] != "skipped" && x["state"] != "pending")
                .count()
        );
        if count("overdue") > 0 {
            summary.push_str(&format!(", {} overdue", count("overdue")));
        }
        let drill = if i["drill"] == true { " [DRILL]" } else { "" };
        let _ = writeln!(
            out,
            "{:<6} {:<9} {:<22} {:<8} {:<4} {:<26} {:<6} {summary}{drill}",
            s(&i["id"]),
            if i["follow_up"] == true {
                "follow-up".to_string()
            } else {
                s(&i["status"])
            },
            s(&i["playbook"]),
            s(&i["branch"]),
            s(&i["tier"]),
            time(&i["opened_at"], zones.of(&i["branch"])),
            s(&i["event_count"])
        );
    }
    if v["next"].is_number() {
        let _ = writeln!(out, "(more: --cursor {})", v["next"]);
    }
    out
}

pub fn incident_text(i: &Value, zones: &Zones) -> String {
    let tz = zones.of(&i["branch"]);
    let mut out = String::new();
    let drill = if i["drill"] == true { " [DRILL]" } else { "" };
    // Resolved with steps still running: say so, as `incidents` does.
    let status = if i["follow_up"] == true {
        format!("{} (follow-up running)", s(&i["status"]))
    } else {
        s(&i["status"])
    };
    let _ = writeln!(
        out,
        "Incident #{} {}{} — {} at {}, tier {}",
        s(&i["id"]),
        s(&i["playbook"]),
        drill,
        status,
        s(&i["branch"]),
        s(&i["tier"])
    );
    let _ = writeln!(
        out,
        "Opened {}   resolved {}   events {}",
        time(&i["opened_at"], tz),
        time(&i["resolved_at"], tz),
        s(&i["event_count"])
    );
    if let Some(sum) = i["summary"].as_str() {
        let _ = writeln!(out, "{}", clean(sum));
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<13} {:<28} {:<26} {:<10} BY",
        "STEP", "STATE", "ASSIGNEE", "DEADLINE", "RESPONSE"
    );
    for st in i["steps"].as_array().into_iter().flatten() {
        let resp = st["response_seconds"]
            .as_f64()
            .map_or("-".to_string(), crate::show::duration);
        let _ = writeln!(
            out,
            "{:<24} {:<13} {:<28} {:<26} {:<10} {}",
            s(&st["id"]),
            s(&st["state"]),
            // A rostered role: whom it went to.
            match st["on_duty"].as_str() {
                Some(p) => format!("{} ({p})", s(&st["assignee"])),
                None => s(&st["assignee"]),
            },
            time(&st["deadline"], tz),
            resp,
            s(&st["by"])
        );
        // Waiting out a delay, or a repeating step's next occurrence.
        if st["starts_at"].is_string() {
            let _ = writeln!(out, "{:<24} starts {}", "", time(&st["starts_at"], tz));
        }
        if let Some(missing) = st["roll_call"]["missing"]
            .as_array()
            .filter(|m| !m.is_empty())
        {
            let _ = writeln!(
                out,
                "{:<24} missing: {}",
                "",
                missing
                    .iter()
                    .map(|p| match p["name"].as_str() {
                        Some(name) => format!("{} ({})", clean(name), s(&p["id"])),
                        None => s(&p["id"]),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let Some(h) = i["history"].as_array() {
        let _ = writeln!(out, "\nHistory:");
        for e in h {
            // Who, and how they came when it was not the daemon itself.
            let who = match e["via"].as_str() {
                Some(via) if !via.is_empty() && via != "engine" => {
                    format!("{} (via {via})", s(&e["by"]))
                }
                _ => s(&e["by"]),
            };
            let _ = writeln!(
                out,
                "  {}  {:<22} {:<12} {}",
                time(&e["at"], tz),
                s(&e["what"]),
                who,
                s(&e["detail"]).replace('\n', "\n      ")
            );
        }
    }
    out
}

/// `drill list`: each drill's schedule, branches and next scheduled time.
pub fn drills_table(v: &Value, zones: &Zones) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<22} {:<34} {:<26} BRANCHES",
        "DRILL", "PLAYBOOK", "SCHEDULE", "NEXT RUN"
    );
    for d in v["items"].as_array().into_iter().flatten() {
        let branches: Vec<String> = d["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let _ = writeln!(
            out,
            "{:<26} {:<22} {:<34} {:<26} {}",
            s(&d["id"]),
            s(&d["playbook"]),
            s(&d["schedule"]),
            time(&d["next_run"], zones.default),
            branches.join(", ")
        );
    }
    out
}

/// `drill runs`: run number, drill, status, score, when, each branch's score.
pub fn runs_table(v: &Value, zones: &Zones) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<24} {:<9} {:<6} {:<7} {:<26} BRANCHES",
        "RUN", "DRILL", "STATUS", "SCORE", "PASSED", "STARTED"
    );
    for r in v["items"].as_array().into_iter().flatten() {
        let branches: Vec<String> = r["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let score = b["score"]
                    .as_f64()
                    .map_or(s(&b["status"]), crate::show::score);
                format!("{} {score} (#{})", s(&b["branch"]), s(&b["incident"]))
            })
            .collect();
        let passed = match r["passed"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<5} {:<24} {:<9} {:<6} {:<7} {:<26} {}",
            s(&r["id"]),
            s(&r["drill"]),
            s(&r["status"]),
            r["score"].as_f64().map_or("-".into(), crate::show::score),
            passed,
            time(&r["started_at"], zones.default),
            branches.join(", ")
        );
    }
    if v["next"].is_number() {
        let _ = writeln!(out, "(more: --cursor {})", v["next"]);
    }
    out
}

/// `silence list`.
pub fn silences_table(v: &Value, zones: &Zones) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<7} {:<26} {:<26} {:<14} MATCHERS / COMMENT",
        "ID", "ACTIVE", "FROM", "UNTIL", "BY"
    );
    for x in v["items"].as_array().into_iter().flatten() {
        let m: Vec<String> = x["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{}{}{}",
                    s(&m["name"]),
                    if m["regex"] == true { "=~" } else { "=" },
                    s(&m["value"])
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<5} {:<7} {:<26} {:<26} {:<14} {} {}",
            s(&x["id"]),
            if x["active"] == true { "yes" } else { "no" },
            time(&x["starts_at"], zones.default),
            time(&x["ends_at"], zones.default),
            s(&x["created_by"]),
            m.join(", "),
            s(&x["comment"])
        );
    }
    out
}

/// `branchguard oncall`: who holds each rostered role, until when, and who is next.
pub fn oncall_table(v: &Value, zones: &Zones) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<8} {:<14} {:<26} NEXT",
        "ROLE", "BRANCH", "ON DUTY", "UNTIL"
    );
    let items = v["items"].as_array().cloned().unwrap_or_default();
    for i in &items {
        let tz = zones.of(&i["branch"]);
        let person = i["person"]
            .as_str()
            .map_or_else(|| format!("nobody ({})", s(&i["why"])), str::to_string);
        let next = match &i["next"] {
            Value::Null => "-".to_string(),
            n => format!(
                "{} from {}",
                n["person"].as_str().unwrap_or("nobody"),
                time(&n["from"], tz)
            ),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<14} {:<26} {next}",
            s(&i["role"]),
            s(&i["branch"]),
            person,
            time(&i["until"], tz),
        );
    }
    if items.is_empty() {
        let _ = writeln!(
            out,
            "no roster covers this (without a roster, a role reaches everyone who has it)"
        );
    }
    out
}
