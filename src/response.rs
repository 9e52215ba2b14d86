//! The response report: per playbook, step and branch over a period, how
//! fast people acknowledged and finished, as counts and percentiles — no
//! means, which hide the slow tail — with deadlines met, overdue steps and
//! escalations. Built from the stored incidents; drills are reported apart
//! by the caller choosing which incidents to give.
//!
//! **Invariant:** a pure function of the incidents it is given: no I/O, no
//! clock (`tests/architecture.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::Incident;

/// One end of a report's or an export's period: a date is a whole day in
/// the bank's zone (`end`: the day is included, so the bound is the next
/// midnight); an RFC 3339 time is itself (as `to`, excluded). `None` when
/// `v` is neither.
pub fn period_bound(
    v: &str,
    end: bool,
    tz: chrono_tz::Tz,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let day = if end { d.succ_opt()? } else { d };
        return Some(crate::roster::to_utc(
            tz,
            day.and_time(chrono::NaiveTime::MIN),
        ));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.to_utc())
        .filter(|t| crate::event::writable(*t))
}

/// Count and nearest-rank percentiles of a set of spans, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

impl Stat {
    pub fn of(mut values: Vec<f64>) -> Stat {
        values.sort_by(f64::total_cmp);
        Stat {
            count: values.len(),
            p50: nearest_rank(&values, 0.5),
            p90: nearest_rank(&values, 0.9),
            max: values.last().copied(),
        }
    }
}

/// The smallest value with at least `p` of the values at or below it.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// One playbook step at one branch over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub playbook: String,
    pub step: String,
    pub branch: String,
    /// Incidents of the playbook at the branch.
    pub incidents: usize,
    pub started: usize,
    pub acknowledged: usize,
    pub done: usize,
    /// The step's response time: notification to the first answer.
    pub time_to_acknowledge: Stat,
    /// Notification to done.
    pub time_to_done: Stat,
    /// Opened to resolved, of the incidents (the same on each step's row).
    pub time_to_resolve: Stat,
    /// Of the started steps whose deadline is decided (done, or passed), the
    /// share done by it.
    pub deadlines_met: Option<f64>,
    pub overdue: usize,
    pub escalations: usize,
}

#[derive(Default)]
struct Acc {
    incidents: usize,
    started: usize,
    acknowledged: usize,
    done: usize,
    ack: Vec<f64>,
    to_done: Vec<f64>,
    resolve: Vec<f64>,
    with_deadline: usize,
    met: usize,
    overdue: usize,
    escalations: usize,
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// The rows, by playbook, then step in playbook order, then branch.
pub fn rows(incidents: &[Incident]) -> Vec<Row> {
    // (playbook, branch) -> step order and per-step figures.
    let mut acc: BTreeMap<(String, String), Vec<(String, Acc)>> = BTreeMap::new();
    for inc in incidents {
        let steps = acc
            .entry((inc.playbook_id.clone(), inc.branch.clone()))
            .or_default();
        let resolve = inc.resolved_at.map(|r| secs(r - inc.opened_at));
        for s in &inc.steps {
            // A repeating step's occurrences (`ID#N`) count under its row;
            // the incident counts once, by the step's own run.
            let base = s.id.split('#').next().unwrap_or(&s.id);
            let i = match steps.iter().position(|(id, _)| id == base) {
                Some(i) => i,
                None => {
                    steps.push((base.to_string(), Acc::default()));
                    steps.len() - 1
                }
            };
            let a = &mut steps[i].1;
            if s.id == base {
                a.incidents += 1;
                a.resolve.extend(resolve);
            }
            if s.activated_at.is_none() {
                continue;
            }
            a.started += 1;
            if s.acknowledged_at.is_some() || s.done_at.is_some() {
                a.acknowledged += 1;
            }
            a.ack.extend(s.response_seconds);
            if let Some(done) = s.done_at {
                a.done += 1;
                if let Some(n) = s.notified_at {
                    a.to_done.push(secs(done - n));
                }
            }
            if let Some(met) = s.deadline_met() {
                a.with_deadline += 1;
                a.met += usize::from(met);
            }
            a.overdue += usize::from(s.overdue_escalated || s.state.as_str() == "overdue");
            a.escalations += s.escalations_fired;
        }
    }
    let mut out = Vec::new();
    for ((playbook, branch), steps) in acc {
        for (step, a) in steps {
            out.push(Row {
                playbook: playbook.clone(),
                step,
                branch: branch.clone(),
                incidents: a.incidents,
                started: a.started,
                acknowledged: a.acknowledged,
                done: a.done,
                time_to_acknowledge: Stat::of(a.ack),
                time_to_done: Stat::of(a.to_done),
                time_to_resolve: Stat::of(a.resolve),
                deadlines_met: (a.with_deadline > 0).then(|| a.met as f64 / a.with_deadline as f64),
                overdue: a.overdue,
                escalations: a.escalations,
            });
        }
    }
    out
}

const COLUMNS: &[&str] = &[
    "playbook",
    "step",
    "branch",
    "incidents",
    "started",
    "acknowledged",
    "done",
    "time_to_acknowledge_count",
    "time_to_acknowledge_p50",
    "time_to_acknowledge_p90",
    "time_to_acknowledge_max",
    "time_to_done_count",
    "time_to_done_p50",
    "time_to_done_p90",
    "time_to_done_max",
    "time_to_resolve_count",
    "time_to_resolve_p50",
    "time_to_resolve_p90",
    "time_to_resolve_max",
    "deadlines_met",
    "overdue",
    "escalations",
];

/// RFC 4180: a field with a comma, quote or line break is quoted.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

/// The same columns as the JSON, flattened; seconds as numbers.
pub fn csv(rows: &[Row]) -> String {
    let mut out = COLUMNS.join(",");
    out.push_str("\r\n");
    for r in rows {
        let mut f = vec![field(&r.playbook), field(&r.step), field(&r.branch)];
        f.extend([r.incidents, r.started, r.acknowledged, r.done].map(|n| n.to_string()));
        for s in [&r.time_to_acknowledge, &r.time_to_done, &r.time_to_resolve] {
            f.push(s.count.to_string());
            f.extend([s.p50, s.p90, s.max].map(num));
        }
        f.push(num(r.deadlines_met));
        f.push(r.overdue.to_string());
        f.push(r.escalations.to_string());
        out.push_str(&f.join(","));
        out.push_str("\r\n");
    }
    out
}

fn span(s: &Stat) -> String {
    match (s.p50, s.p90, s.max) {
        (Some(a), Some(b), Some(c)) => format!(
            "{} / {} / {} (n={})",
            crate::show::duration(a),
            crate::show::duration(b),
            crate::show::duration(c),
            s.count
        ),
        _ => "-".into(),
    }
}

/// A Markdown table for people: spans as p50 / p90 / max.
pub fn markdown(title: &str, rows: &[Row]) -> String {
    let mut out = format!("# {title}\n\n");
    if rows.is_empty() {
        out.push_str("No incidents in this period.\n");
        return out;
    }
    out.push_str("Times are p50 / p90 / max (n = how many).\n\n");
    out.push_str("| playbook | step | branch | incidents | started | acknowledged | done | time to acknowledge | time to done | time to resolve | deadlines met | overdue | escalations |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let met = r.deadlines_met.map_or("-".to_string(), |m| {
            format!("{}%", crate::show::score(m * 100.0))
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.playbook.replace('|', "\\|"),
            r.step.replace('|', "\\|"),
            r.branch.replace('|', "\\|"),
            r.incidents,
            r.started,
            r.acknowledged,
            r.done,
            span(&r.time_to_acknowledge),
            span(&r.time_to_done),
            span(&r.time_to_resolve),
            met,
            r.overdue,
            r.escalations
        );
    }
    out
}

#[cfg(test)]
mod tests;
