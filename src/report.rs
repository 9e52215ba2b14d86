//! Drill reports for branch heads, in Markdown: the run's score, each branch's
//! steps (target, response, credit, who), each person's response times, the
//! weakest step across the network, and each branch's trend over its earlier
//! runs of the same drill (with a text sparkline).
//!
//! **Invariant:** a pure function of a run and its trend; no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::engine::score::StepScore;
use crate::engine::{DrillRun, RunStatus};

/// One earlier run of the same drill at a branch.
#[derive(Debug, Clone, Deserialize)]
pub struct TrendPoint {
    pub run: i64,
    pub started_at: DateTime<Utc>,
    pub status: RunStatus,
    pub score: Option<f64>,
    pub passed: Option<bool>,
}

/// A person's median response over their recent runs of a drill.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct PersonMedian {
    pub median_seconds: f64,
    /// How many answers it is the median of.
    pub answers: usize,
}

/// Every answer of a run: who, which step, how long after notification.
pub fn answers(run: &DrillRun) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for b in &run.branches {
        for s in &b.steps {
            if s.roll_call.is_empty() {
                if let (Some(by), Some(r)) = (&s.by, s.response_seconds) {
                    out.push((by.clone(), s.id.clone(), r));
                }
            } else {
                for (p, r) in &s.roll_call {
                    if let Some(r) = r {
                        out.push((p.clone(), s.id.clone(), *r));
                    }
                }
            }
        }
    }
    out
}

/// Each person's median response over the given runs.
pub fn medians<'a>(runs: impl IntoIterator<Item = &'a DrillRun>) -> BTreeMap<String, PersonMedian> {
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (p, _, t) in answers(r) {
            times.entry(p).or_default().push(t);
        }
    }
    times
        .into_iter()
        .map(|(p, mut ts)| {
            ts.sort_by(f64::total_cmp);
            let n = ts.len();
            let median = if n % 2 == 1 {
                ts[n / 2]
            } else {
                (ts[n / 2 - 1] + ts[n / 2]) / 2.0
            };
            (
                p,
                PersonMedian {
                    median_seconds: median,
                    answers: n,
                },
            )
        })
        .collect()
}

fn time(t: DateTime<Utc>, tz: Tz) -> String {
    crate::show::time(t, tz)
}

fn dur(secs: f64) -> String {
    crate::show::duration(secs)
}

/// Scores 0–100 as one block each, low to high.
pub fn sparkline(scores: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    scores
        .iter()
        .map(|s| BARS[((s.clamp(0.0, 100.0) / 100.0) * 7.0).round() as usize])
        .collect()
}

fn verdict(passed: Option<bool>) -> &'static str {
    match passed {
        Some(true) => "passed",
        Some(false) => "not passed",
        None => "not scored",
    }
}

fn score_text(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.1}"))
}

/// The Markdown report of a run. `recent` is each person's median response
/// over their recent runs of this drill (shown beside this run's answers).
pub fn markdown(
    run: &DrillRun,
    trend: &BTreeMap<String, Vec<TrendPoint>>,
    recent: &BTreeMap<String, PersonMedian>,
    tz: Tz,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Drill report: {}, run {}\n", run.drill, run.id);
    let _ = writeln!(
        o,
        "Status: **{}** · score **{}** · {} (pass mark {})  ",
        run.status.as_str(),
        score_text(run.score),
        verdict(run.passed),
        run.pass_score
    );
    let _ = writeln!(
        o,
        "Playbook `{}` · started {} ({}){}{}",
        run.playbook,
        time(run.started_at, tz),
        run.trigger,
        run.finished_at
            .map(|f| format!(" · ended {}", time(f, tz)))
            .unwrap_or_default(),
        if run.live {
            " · live"
        } else {
            " · not live: command and webhook actions were recorded, not carried out"
        }
    );
    if !run.skipped.is_empty() {
        let _ = writeln!(
            o,
            "\nNot started at {} (this drill was still running there).",
            run.skipped.join(", ")
        );
    }
    let mut people: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut by_step: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in &run.branches {
        let _ = writeln!(
            o,
            "\n## {} — {}, score {}, {}\n",
            b.branch,
            b.status.as_str(),
            score_text(b.score),
            verdict(b.passed)
        );
        if let Some(n) = &b.note {
            let _ = writeln!(o, "Aborted: {n}.\n");
        }
        if !b.steps.is_empty() {
            let _ = writeln!(o, "| Step | Target | Response | Credit | By |");
            let _ = writeln!(o, "|---|---|---|---|---|");
        }
        for s in &b.steps {
            step_row(&mut o, s);
            if let Some(c) = s.credit {
                by_step.entry(s.id.clone()).or_default().push(c);
            }
        }
        if let Some(points) = trend.get(&b.branch).filter(|p| !p.is_empty()) {
            let scores: Vec<f64> = points.iter().filter_map(|p| p.score).collect();
            let _ = writeln!(
                o,
                "\nTrend of earlier runs at {} (oldest first): {} {}\n",
                b.branch,
                sparkline(&scores),
                scores
                    .iter()
                    .map(|s| format!("{s:.1}"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
            let _ = writeln!(o, "| Run | Started | Score | Result |");
            let _ = writeln!(o, "|---|---|---|---|");
            for p in points {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    p.run,
                    time(p.started_at, tz),
                    score_text(p.score),
                    match p.status {
                        RunStatus::Finished => verdict(p.passed),
                        other => other.as_str(),
                    }
                );
            }
        }
    }
    for (p, step, t) in answers(run) {
        people.entry(p).or_default().push((step, t));
    }
    if !people.is_empty() {
        let _ = writeln!(
            o,
            "\n## People\n\n| Person | Responses | Median over recent runs |\n|---|---|---|"
        );
        for (p, rs) in &people {
            let list: Vec<String> = rs.iter().map(|(s, r)| format!("{s} {}", dur(*r))).collect();
            let median = recent.get(p).map_or("-".to_string(), |m| {
                format!(
                    "{} ({} answer{})",
                    dur(m.median_seconds),
                    m.answers,
                    if m.answers == 1 { "" } else { "s" }
                )
            });
            let _ = writeln!(o, "| {p} | {} | {median} |", list.join(", "));
        }
    }
    let weakest = by_step
        .iter()
        .map(|(s, cs)| (s, cs.iter().sum::<f64>() / cs.len() as f64))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((step, avg)) = weakest {
        let _ = writeln!(
            o,
            "\nWeakest step across the branches: `{step}` (mean credit {avg:.1})."
        );
    }
    o
}

fn step_row(o: &mut String, s: &StepScore) {
    let name = if s.critical {
        format!("{} (critical)", s.id)
    } else {
        s.id.clone()
    };
    // Left out of the score (longer than the drill, or `none`): nothing to
    // measure it against, whether or not it started.
    let left_out = s.credit.is_none();
    let response = if left_out && s.response_seconds.is_none() {
        "-".to_string()
    } else if !s.active {
        "not started".to_string()
    } else if !s.roll_call.is_empty() {
        let within = s
            .roll_call
            .iter()
            .filter(|(_, r)| r.is_some_and(|r| r <= s.target_seconds))
            .count();
        format!("{within} of {} safe in time", s.roll_call.len())
    } else {
        s.response_seconds.map_or("never".to_string(), dur)
    };
    let _ = writeln!(
        o,
        "| {name} | {} | {response} | {} | {} |",
        if left_out {
            "-".to_string()
        } else {
            dur(s.target_seconds)
        },
        s.credit
            .map_or("left out".to_string(), |c| format!("{c:.1}")),
        s.by.as_deref().unwrap_or("-")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BranchRun;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn step(id: &str, target: f64, response: Option<f64>, credit: f64, by: &str) -> StepScore {
        StepScore {
            id: id.into(),
            target_seconds: target,
            weight: 1.0,
            critical: id == "switch-to-backup",
            active: true,
            response_seconds: response,
            roll_call: Vec::new(),
            credit: Some(credit),
            by: (!by.is_empty()).then(|| by.to_string()),
        }
    }

    #[test]
    fn sparkline_spans_the_range() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0]), "▁▅█");
    }

    #[test]
    fn a_report_with_three_earlier_runs_shows_the_trend() {
        let run = DrillRun {
            id: 4,
            drill: "failover-monthly".into(),
            playbook: "system-failover".into(),
            status: RunStatus::Finished,
            trigger: "schedule".into(),
            scheduled_for: Some(at("2026-11-04T02:00:00Z")),
            started_at: at("2026-11-04T02:00:00Z"),
            ends_at: at("2026-11-04T02:30:00Z"),
            finished_at: Some(at("2026-11-04T02:21:00Z")),
            live: false,
            pass_score: 80.0,
            score: Some(83.3),
            passed: Some(true),
            branches: vec![BranchRun {
                branch: "sh-001".into(),
                incident: Some(12),
                status: RunStatus::Finished,
                starts_at: Some(at("2026-11-04T02:00:00Z")),
                ends_at: Some(at("2026-11-04T02:30:00Z")),
                raised: 0,
                score: Some(83.3),
                passed: Some(true),
                steps: vec![
                    step("switch-to-backup", 600.0, Some(420.0), 100.0, "sun.hao"),
                    step("manual-vouchers", 600.0, Some(900.0), 75.0, "wang.fang"),
                    step("guide-customers", 300.0, Some(450.0), 75.0, "li.wei"),
                ],
                note: None,
            }],
            skipped: Vec::new(),
            targets: BTreeMap::new(),
            raise: Vec::new(),
            started_by: None,
            on_done: Default::default(),
            left_out: Default::default(),
            via: None,
        };
        let trend: BTreeMap<String, Vec<TrendPoint>> = [(
            "sh-001".to_string(),
            vec![
                TrendPoint {
                    run: 1,
                    started_at: at("2026-08-05T02:00:00Z"),
                    status: RunStatus::Finished,
                    score: Some(41.7),
                    passed: Some(false),
                },
                TrendPoint {
                    run: 2,
                    started_at: at("2026-09-02T02:00:00Z"),
                    status: RunStatus::Finished,
                    score: Some(66.7),
                    passed: Some(false),
                },
                TrendPoint {
                    run: 3,
                    started_at: at("2026-10-07T02:00:00Z"),
                    status: RunStatus::Finished,
                    score: Some(91.7),
                    passed: Some(true),
                },
            ],
        )]
        .into();
        let recent = medians([&run]);
        assert_eq!(recent["sun.hao"].median_seconds, 420.0);
        let md = markdown(&run, &trend, &recent, chrono_tz::Asia::Shanghai);
        assert!(md.contains("▄▆▇ 41.7 → 66.7 → 91.7"), "{md}");
        insta::assert_snapshot!(md);
    }
}
