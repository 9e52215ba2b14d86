//! Which playbooks an event triggers, at which tier, in which group — and the
//! steps that an incident opened now would start. The daemon and `branchguard
//! match` share this code so that what `match` prints is what the daemon does.
//!
//! **Invariant:** pure functions of the event, the playbooks and a given time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{Playbook, Step, Tier};
use crate::duration::Calendar;
use crate::event::Event;

/// One playbook that an event triggers.
#[derive(Debug, Clone)]
pub struct Match {
    pub playbook: Arc<Playbook>,
    pub tier: u8,
    /// The `group_by` fields and their values in this event.
    pub group: BTreeMap<String, String>,
    /// `group` as one string, the key of "one open incident per group".
    pub group_key: String,
}

/// Whether the event fires the playbook's trigger (see [`Playbook::triggers`]).
pub fn triggers(pb: &Playbook, ev: &Event) -> bool {
    pb.triggers(ev)
}

fn tier_matches(t: &Tier, ev: &Event) -> bool {
    crate::config::labels_match(&t.labels, &ev.labels)
        && t.severity_at_least.is_none_or(|s| ev.severity >= s)
}

/// The levels of the tiers reached by time (`open_for`) whose conditions
/// the event meets: the incident reaches them when it has been open so long.
pub fn timed_tiers_met(pb: &Playbook, ev: &Event) -> Vec<u8> {
    pb.tiers
        .iter()
        .filter(|t| t.open_for.is_some() && tier_matches(t, ev))
        .map(|t| t.level)
        .collect()
}

/// The highest tier whose conditions the event meets; the lowest tier when it meets
/// none; 1 for a playbook without tiers. A tier with `open_for` is reached
/// by time, never by an event alone.
pub fn tier_of(pb: &Playbook, ev: &Event) -> u8 {
    pb.tiers
        .iter()
        .filter(|t| t.open_for.is_none() && tier_matches(t, ev))
        .map(|t| t.level)
        .max()
        .or_else(|| pb.tiers.first().map(|t| t.level))
        .unwrap_or(1)
}

pub fn tier_name(pb: &Playbook, level: u8) -> Option<&str> {
    pb.tiers
        .iter()
        .find(|t| t.level == level)
        .map(|t| t.name.as_str())
}

/// The event's values for the playbook's `group_by` fields.
pub fn group_of(pb: &Playbook, ev: &Event) -> BTreeMap<String, String> {
    pb.group_by
        .iter()
        .map(|f| {
            let v = match f.as_str() {
                "branch" => ev.branch.clone(),
                "kind" => ev.kind.clone(),
                "severity" => ev.severity.as_str().to_string(),
                label => ev.labels.get(label).cloned().unwrap_or_default(),
            };
            (f.clone(), v)
        })
        .collect()
}

pub fn group_key(pb: &Playbook, group: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = pb
        .group_by
        .iter()
        .map(|f| format!("{f}={}", group.get(f).map_or("", String::as_str)))
        .collect();
    format!("{}/{}", pb.id, parts.join(","))
}

/// Every playbook the event triggers (every matching playbook applies).
pub fn match_event(playbooks: &[Arc<Playbook>], ev: &Event) -> Vec<Match> {
    playbooks
        .iter()
        .filter(|pb| triggers(pb, ev))
        .map(|pb| {
            let group = group_of(pb, ev);
            Match {
                playbook: Arc::clone(pb),
                tier: tier_of(pb, ev),
                group_key: group_key(pb, &group),
                group,
            }
        })
        .collect()
}

/// What becomes of a step in an incident opened at some tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Active now, due at this moment.
    Active(DateTime<Utc>),
    /// A follow-up that starts when the incident resolves.
    OnResolution,
    /// Starts when another step is done (`after: STEP_ID`).
    AfterStep(String),
    /// Repeats (`every`): the first occurrence due at this moment.
    Every(DateTime<Utc>, String),
    /// Its `when` does not hold at this tier.
    NotAtTier,
}

/// The plan of every step of a playbook for an incident opened at `opened` with `tier`.
pub fn plan<'a>(
    pb: &'a Playbook,
    tier: u8,
    opened: DateTime<Utc>,
    cal: &Calendar,
) -> Vec<(&'a Step, Plan)> {
    pb.steps
        .iter()
        .map(|s| {
            let p = if !s.eligible(tier) {
                Plan::NotAtTier
            } else if s.after_resolved {
                Plan::OnResolution
            } else if let Some(before) = &s.after_step {
                Plan::AfterStep(before.clone())
            } else if let Some(every) = &s.every {
                Plan::Every(s.deadline.after(opened, cal), every.to_string())
            } else {
                Plan::Active(s.deadline.after(opened, cal))
            };
            (s, p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pattern, ResolveMode, Trigger, anchored};
    use crate::event::{Severity, Status};

    fn pb(labels_re: &[(&str, &str)]) -> Playbook {
        Playbook {
            id: "p".into(),
            name: "P".into(),
            description: None,
            version: "v".into(),
            file: "p.yaml".into(),
            trigger: Trigger {
                kind: "atm.fault".into(),
                labels: BTreeMap::new(),
                labels_re: labels_re
                    .iter()
                    .map(|(k, v)| (k.to_string(), Pattern(anchored(v).unwrap())))
                    .collect(),
                severity_at_least: Some(Severity::Major),
            },
            group_by: vec!["branch".into(), "atm".into()],
            resolve: ResolveMode::Auto,
            tiers: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn ev(labels: &[(&str, &str)], severity: Severity, status: Status) -> Event {
        Event {
            kind: "atm.fault".into(),
            branch: "b".into(),
            severity,
            status,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            summary: None,
            occurred_at: DateTime::UNIX_EPOCH,
            source: "t".into(),
        }
    }

    #[test]
    fn labels_re_matches_the_whole_value() {
        let p = pb(&[("atm", "atm-0[0-9]")]);
        assert!(triggers(
            &p,
            &ev(&[("atm", "atm-07")], Severity::Major, Status::Firing)
        ));
        assert!(
            !triggers(
                &p,
                &ev(&[("atm", "atm-070")], Severity::Major, Status::Firing)
            ),
            "anchored"
        );
        assert!(
            !triggers(&p, &ev(&[], Severity::Major, Status::Firing)),
            "label missing"
        );
        assert!(
            !triggers(
                &p,
                &ev(&[("atm", "atm-07")], Severity::Minor, Status::Firing)
            ),
            "below severity"
        );
        assert!(
            triggers(
                &p,
                &ev(&[("atm", "atm-07")], Severity::Minor, Status::Resolved)
            ),
            "a resolution is not held to severity"
        );
    }

    #[test]
    fn group_key_uses_the_group_by_fields_and_missing_labels_are_empty() {
        let p = pb(&[]);
        let g = group_of(
            &p,
            &ev(
                &[("atm", "atm-07"), ("other", "x")],
                Severity::Major,
                Status::Firing,
            ),
        );
        assert_eq!(group_key(&p, &g), "p/branch=b,atm=atm-07");
        let g = group_of(&p, &ev(&[], Severity::Major, Status::Firing));
        assert_eq!(group_key(&p, &g), "p/branch=b,atm=");
    }
}
