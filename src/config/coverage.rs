//! Coverage: where a roster leaves a role nobody holds while a playbook
//! needs it. `check` lists these gaps; the daemon counts their seconds.

use chrono::{DateTime, Utc};

use super::model::{Action, Loaded};
use crate::roster::Roster;
use crate::target::Target;

/// Nobody holds `role` at `branch` from `from` until `until`.
#[derive(Debug, Clone)]
pub struct CoverageGap {
    /// `file:line:col` of the roster.
    pub at: String,
    pub roster: String,
    pub role: String,
    pub branch: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The first playbook step that needs the role: `(playbook, step)`.
    pub needed_by: (String, String),
    /// Why nobody: `nobody in any layer`, `sun.hao is away (layer days)`.
    pub why: String,
    pub tz: chrono_tz::Tz,
}

impl std::fmt::Display for CoverageGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: warning: gap {} .. {}: nobody is role:{} at {}; needed by playbook {} step {} ({})",
            self.at,
            crate::show::time(self.from, self.tz),
            crate::show::time(self.until, self.tz),
            self.role,
            self.branch,
            self.needed_by.0,
            self.needed_by.1,
            self.why
        )
    }
}

/// The role a target asks for, if it is one a roster can fill.
fn role_of(t: &Target) -> Option<&str> {
    match t {
        Target::Role(r) => Some(r),
        Target::BranchHead => Some("branch-head"),
        _ => None,
    }
}

impl Loaded {
    /// The first playbook step that targets `role` (as assignee, notice,
    /// roll call or escalation).
    fn needs(&self, role: &str) -> Option<(String, String)> {
        self.playbooks.iter().find_map(|pb| {
            pb.steps.iter().find_map(|s| {
                let mut targets: Vec<&Target> = s.assignee.iter().collect();
                match &s.action {
                    Action::Notify(ts) => targets.extend(ts),
                    Action::RollCall(t) => targets.push(t),
                    _ => {}
                }
                targets.extend(s.escalate.iter().flat_map(|e| &e.to));
                targets
                    .into_iter()
                    .any(|t| role_of(t) == Some(role))
                    .then(|| (pb.id.clone(), s.id.clone()))
            })
        })
    }

    /// Every gap in `from..until` of a role a playbook needs, per branch the
    /// roster covers.
    pub fn coverage_gaps(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<CoverageGap> {
        let mut out = Vec::new();
        for r in &self.rosters {
            let Some(needed_by) = self.needs(&r.role) else {
                continue;
            };
            for g in self.gaps_of(r, from, until) {
                for b in &r.branches {
                    out.push(CoverageGap {
                        at: r.at.clone(),
                        roster: r.id.clone(),
                        role: r.role.clone(),
                        branch: b.clone(),
                        from: g.from,
                        until: g.until,
                        needed_by: needed_by.clone(),
                        why: g.why.clone(),
                        tz: r.tz,
                    });
                }
            }
        }
        out
    }

    pub fn gaps_of(
        &self,
        r: &Roster,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<crate::roster::Gap> {
        r.gaps(from, until, &self.config.calendar, &self.config.away)
    }

    /// Seconds nobody is on duty in each roster over `from..until` (each
    /// second once, however many branches the roster covers).
    pub fn gap_seconds(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(String, f64)> {
        self.rosters
            .iter()
            .map(|r| {
                let secs = self
                    .gaps_of(r, from, until)
                    .iter()
                    .map(|g| (g.until - g.from).num_milliseconds() as f64 / 1000.0)
                    .sum();
                (r.id.clone(), secs)
            })
            .collect()
    }
}
