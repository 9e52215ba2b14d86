//! The incident report: one incident as it was recorded — summary, tier
//! history, each step with its times and whether its deadline was met,
//! every notification and its delivery, and the timeline — for the 72-hour
//! damage report and the case review. Markdown for people, JSON for tools,
//! printable HTML.
//!
//! It is given what the store holds for the incident (the incident, its
//! history and its outbox), never the engine's memory, and does no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::config::Person;
use crate::engine::{HistoryEntry, Incident};
use crate::html::escape;
use crate::store::OutboxRow;

/// One step as the report gives it.
#[derive(Debug, Clone, Serialize)]
pub struct StepLine {
    pub id: String,
    pub title: String,
    pub assignee: Option<String>,
    pub on_duty: Option<String>,
    pub critical: bool,
    pub state: String,
    pub deadline: Option<DateTime<Utc>>,
    pub notified_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub by: Option<String>,
    /// Done by its deadline (`None`: it had none, or never started).
    pub met: Option<bool>,
    pub escalations: usize,
}

pub fn steps(inc: &Incident) -> Vec<StepLine> {
    inc.steps
        .iter()
        .map(|s| StepLine {
            id: s.id.clone(),
            title: s.title.clone(),
            assignee: s.assignee.clone(),
            on_duty: s.on_duty.clone(),
            critical: s.critical,
            state: s.state.as_str().to_string(),
            deadline: s.deadline,
            notified_at: s.notified_at,
            acknowledged_at: s.acknowledged_at,
            done_at: s.done_at,
            by: s.by.clone(),
            met: s.deadline_met(),
            escalations: s.escalations_fired,
        })
        .collect()
}

/// The tier changes, oldest first: when, and what the history says.
fn tiers(history: &[HistoryEntry]) -> Vec<&HistoryEntry> {
    history
        .iter()
        .filter(|h| matches!(h.what.as_str(), "incident.opened" | "tier.raised"))
        .collect()
}

/// One review as the history recorded it, with what became of its actions.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub review: u32,
    pub at: DateTime<Utc>,
    pub by: String,
    pub impact: String,
    pub cause: String,
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub n: u32,
    pub what: String,
    pub owner: String,
    pub due: chrono::NaiveDate,
    pub done_at: Option<DateTime<Utc>>,
    pub done_by: Option<String>,
    /// When its owner was told it is overdue.
    pub reminded_at: Option<DateTime<Utc>>,
}

/// The reviews of an incident, from its history lines (`review.recorded`,
/// `review.action.done`, `review.action.overdue`).
pub fn reviews(history: &[HistoryEntry]) -> Vec<ReviewView> {
    use crate::engine::reviews::{ACTION_DONE, ACTION_OVERDUE, RECORDED, RecordedReview};
    let mut out: Vec<ReviewView> = Vec::new();
    let number = |detail: &str| -> Option<u32> {
        detail
            .strip_prefix("action ")?
            .split(':')
            .next()?
            .parse()
            .ok()
    };
    for h in history {
        match h.what.as_str() {
            RECORDED => {
                if let Ok(r) = serde_json::from_str::<RecordedReview>(&h.detail) {
                    out.push(ReviewView {
                        review: r.review,
                        at: h.at,
                        by: h.by.clone(),
                        impact: r.impact,
                        cause: r.cause,
                        actions: r
                            .actions
                            .into_iter()
                            .map(|a| ActionView {
                                n: a.n,
                                what: a.what,
                                owner: a.owner,
                                due: a.due,
                                done_at: None,
                                done_by: None,
                                reminded_at: None,
                            })
                            .collect(),
                    });
                }
            }
            ACTION_DONE | ACTION_OVERDUE => {
                let Some(n) = number(&h.detail) else { continue };
                if let Some(a) = out
                    .iter_mut()
                    .flat_map(|r| r.actions.iter_mut())
                    .find(|a| a.n == n)
                {
                    if h.what == ACTION_DONE {
                        a.done_at = Some(h.at);
                        a.done_by = Some(h.by.clone());
                    } else {
                        a.reminded_at = Some(h.at);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Everything a report says, in one place for the three formats.
pub struct Report<'a> {
    pub incident: &'a Incident,
    pub playbook_name: &'a str,
    pub branch_name: &'a str,
    pub history: &'a [HistoryEntry],
    pub outbox: &'a [OutboxRow],
    pub people: &'a BTreeMap<String, Person>,
    pub tz: Tz,
}

impl Report<'_> {
    fn t(&self, t: Option<DateTime<Utc>>) -> String {
        t.map_or_else(|| "-".to_string(), |t| crate::show::time(t, self.tz))
    }

    fn name(&self, id: &str) -> String {
        self.people
            .get(id)
            .map_or(id.to_string(), |p| p.name.clone())
    }

    fn action_state(&self, a: &ActionView) -> String {
        match (&a.done_at, &a.done_by, &a.reminded_at) {
            (Some(at), by, _) => format!(
                "done {} by {}",
                self.t(Some(*at)),
                by.as_deref().map_or("-".into(), |b| self.name(b))
            ),
            (None, _, Some(at)) => format!("overdue; owner told {}", self.t(Some(*at))),
            _ => "open".to_string(),
        }
    }

    fn met(m: Option<bool>) -> &'static str {
        match m {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        }
    }

    fn delivery(o: &OutboxRow, t: impl Fn(Option<DateTime<Utc>>) -> String) -> String {
        if o.delivered_at.is_some() {
            format!("delivered {} (attempt {})", t(o.delivered_at), o.attempts)
        } else if o.failed_at.is_some() {
            format!(
                "failed {}: {}",
                t(o.failed_at),
                o.last_error.as_deref().unwrap_or("-")
            )
        } else {
            format!("pending after {} attempt(s)", o.attempts)
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let inc = self.incident;
        serde_json::json!({
            "id": inc.id, "playbook": inc.playbook_id, "playbook_name": self.playbook_name,
            "playbook_version": inc.playbook_version, "branch": inc.branch, "branch_name": self.branch_name,
            "drill": inc.drill, "status": inc.status, "tier": inc.tier,
            "kind": inc.kind, "severity": inc.severity, "summary": inc.summary, "labels": inc.labels,
            "opened_at": inc.opened_at, "resolved_at": inc.resolved_at,
            "tiers": tiers(self.history),
            "steps": steps(inc),
            "notifications": self.outbox,
            "timeline": self.history,
            "reviews": reviews(self.history),
        })
    }

    pub fn markdown(&self) -> String {
        let inc = self.incident;
        let mut o = String::new();
        let drill = if inc.drill { " [DRILL]" } else { "" };
        let _ = writeln!(
            o,
            "# Incident #{} — {} at {}{drill}\n",
            inc.id, self.playbook_name, self.branch_name
        );
        let _ = writeln!(o, "- Branch: {} ({})", self.branch_name, inc.branch);
        let _ = writeln!(
            o,
            "- Playbook: {} (version {})",
            inc.playbook_id, inc.playbook_version
        );
        let _ = writeln!(
            o,
            "- Event: {} ({}){}",
            inc.kind,
            inc.severity,
            inc.summary
                .as_ref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
        let _ = writeln!(o, "- Opened: {}", self.t(Some(inc.opened_at)));
        let _ = writeln!(o, "- Resolved: {}", self.t(inc.resolved_at));
        let _ = writeln!(o, "- Tier now: {}\n", inc.tier);
        o.push_str("## Tier history\n\n");
        for h in tiers(self.history) {
            let _ = writeln!(o, "- {} — {}", self.t(Some(h.at)), h.detail);
        }
        o.push_str("\n## Steps\n\n| step | owner | deadline | notified | acknowledged | done | by | deadline met | escalations |\n|---|---|---|---|---|---|---|---|---|\n");
        for s in steps(inc) {
            let owner = match (&s.assignee, &s.on_duty) {
                (Some(a), Some(p)) => format!("{a} ({})", self.name(p)),
                (Some(a), None) => a.clone(),
                _ => "-".into(),
            };
            let _ = writeln!(
                o,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.title.replace('|', "\\|"),
                if s.critical { " (critical)" } else { "" },
                owner,
                self.t(s.deadline),
                self.t(s.notified_at),
                self.t(s.acknowledged_at),
                self.t(s.done_at),
                s.by.as_deref().map_or("-".to_string(), |b| self.name(b)),
                Self::met(s.met),
                s.escalations
            );
        }
        o.push_str("\n## Notifications\n\n| sent | to | subject | delivery |\n|---|---|---|---|\n");
        for n in self.outbox {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                self.t(Some(n.created_at)),
                n.recipient.replace('|', "\\|"),
                n.subject.replace('|', "\\|"),
                Self::delivery(n, |t| self.t(t)).replace('|', "\\|")
            );
        }
        o.push_str("\n## Review\n\n");
        let rs = reviews(self.history);
        if rs.is_empty() {
            o.push_str("No review recorded yet.\n");
        }
        for r in &rs {
            let _ = writeln!(
                o,
                "### Review {} — {} by {}\n\n- Impact: {}\n- Cause: {}\n",
                r.review,
                self.t(Some(r.at)),
                self.name(&r.by),
                if r.impact.is_empty() { "-" } else { &r.impact },
                if r.cause.is_empty() { "-" } else { &r.cause },
            );
            if !r.actions.is_empty() {
                o.push_str("| action | what | owner | due | state |\n|---|---|---|---|---|\n");
                for a in &r.actions {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {} |",
                        a.n,
                        a.what.replace('|', "\\|"),
                        self.name(&a.owner),
                        a.due,
                        self.action_state(a).replace('|', "\\|")
                    );
                }
                o.push('\n');
            }
        }
        // One blank line before the next section, however the reviews ended.
        while o.ends_with("\n\n") {
            o.pop();
        }
        o.push_str("\n## Timeline\n\n");
        for h in self.history {
            let _ = writeln!(
                o,
                "- {} `{}` {} ({}): {}",
                self.t(Some(h.at)),
                h.what,
                h.by,
                h.via,
                h.detail
            );
        }
        o
    }

    /// A page to print: the same sections as HTML tables, every value escaped.
    pub fn html(&self) -> String {
        let inc = self.incident;
        let e = |s: &str| escape(s);
        let mut o = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Incident #{}</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:.2em .4em;text-align:left}}@media print{{a{{color:inherit}}}}</style></head><body>",
            inc.id
        );
        let _ = write!(
            o,
            "<h1>Incident #{} — {} at {}{}</h1><ul><li>Event: {} ({}){}</li><li>Opened: {}</li><li>Resolved: {}</li><li>Tier now: {}</li></ul>",
            inc.id,
            e(self.playbook_name),
            e(self.branch_name),
            if inc.drill { " [DRILL]" } else { "" },
            e(&inc.kind),
            e(&inc.severity),
            inc.summary
                .as_ref()
                .map(|s| format!(": {}", e(s)))
                .unwrap_or_default(),
            e(&self.t(Some(inc.opened_at))),
            e(&self.t(inc.resolved_at)),
            inc.tier
        );
        o.push_str("<h2>Tier history</h2><ul>");
        for h in tiers(self.history) {
            let _ = write!(o, "<li>{} — {}</li>", e(&self.t(Some(h.at))), e(&h.detail));
        }
        o.push_str("</ul><h2>Steps</h2><table><tr><th>step</th><th>owner</th><th>deadline</th><th>notified</th><th>acknowledged</th><th>done</th><th>by</th><th>deadline met</th><th>escalations</th></tr>");
        for s in steps(inc) {
            let _ = write!(
                o,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&s.title),
                if s.critical { " (critical)" } else { "" },
                e(s.assignee.as_deref().unwrap_or("-")),
                e(&self.t(s.deadline)),
                e(&self.t(s.notified_at)),
                e(&self.t(s.acknowledged_at)),
                e(&self.t(s.done_at)),
                e(&s.by.as_deref().map_or("-".to_string(), |b| self.name(b))),
                Self::met(s.met),
                s.escalations
            );
        }
        o.push_str("</table><h2>Notifications</h2><table><tr><th>sent</th><th>to</th><th>subject</th><th>delivery</th></tr>");
        for n in self.outbox {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&self.t(Some(n.created_at))),
                e(&n.recipient),
                e(&n.subject),
                e(&Self::delivery(n, |t| self.t(t)))
            );
        }
        o.push_str("</table><h2>Review</h2>");
        let rs = reviews(self.history);
        if rs.is_empty() {
            o.push_str("<p>No review recorded yet.</p>");
        }
        for r in &rs {
            let _ = write!(
                o,
                "<h3>Review {} — {} by {}</h3><ul><li>Impact: {}</li><li>Cause: {}</li></ul>",
                r.review,
                e(&self.t(Some(r.at))),
                e(&self.name(&r.by)),
                e(&r.impact),
                e(&r.cause)
            );
            if !r.actions.is_empty() {
                o.push_str("<table><tr><th>action</th><th>what</th><th>owner</th><th>due</th><th>state</th></tr>");
                for a in &r.actions {
                    let _ = write!(
                        o,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        a.n,
                        e(&a.what),
                        e(&self.name(&a.owner)),
                        a.due,
                        e(&self.action_state(a))
                    );
                }
                o.push_str("</table>");
            }
        }
        o.push_str("<h2>Timeline</h2><ul>");
        for h in self.history {
            let _ = write!(
                o,
                "<li>{} <code>{}</code> {} ({}): {}</li>",
                e(&self.t(Some(h.at))),
                e(&h.what),
                e(&h.by),
                e(&h.via),
                e(&h.detail)
            );
        }
        o.push_str("</ul></body></html>\n");
        o
    }
}
