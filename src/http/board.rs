//! What the dashboard shows, computed from the store's rows and the loaded
//! configuration: pure functions, so they are tested without a daemon.
//!
//! **Invariant:** the answer stays small whatever the network's size: open
//! incidents and branches are counted in full, but only the most urgent
//! [`Limits`] of them are listed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::{DrillRun, Incident, StepRun};
use crate::sources::probes::{Level, ProbeState};
use crate::target::Target;

/// How much of each list one answer carries.
pub struct Limits {
    pub incidents: usize,
    pub branches: usize,
    pub probes: usize,
    /// Points per scoreboard chart.
    pub trend: usize,
}

/// A step that is someone's job and past its deadline.
fn overdue(s: &StepRun, now: DateTime<Utc>) -> bool {
    s.open() && s.deadline.is_some_and(|d| d <= now)
}

/// Most urgent first: overdue steps, then an open critical step, then the
/// higher tier, then the nearest deadline, then the newest.
fn urgency(i: &Incident, now: DateTime<Utc>) -> impl Ord {
    let late = i.steps.iter().any(|s| overdue(s, now));
    let critical = i.steps.iter().any(|s| s.critical && s.open());
    let next = i
        .steps
        .iter()
        .filter(|s| s.open())
        .filter_map(|s| s.deadline)
        .min()
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (
        std::cmp::Reverse(late),
        std::cmp::Reverse(critical),
        std::cmp::Reverse(i.tier),
        next,
        std::cmp::Reverse(i.id),
    )
}

fn step_view(s: &StepRun, cfg: &Config, branch: &str, now: DateTime<Utc>) -> Value {
    let owner = s
        .assignee
        .as_deref()
        .and_then(|a| Target::parse(a).ok())
        .map(|t| match &s.on_duty {
            // A rostered role: the one person it went to, not all who hold it.
            Some(p) => {
                let name = cfg.people.get(p).map_or(p.as_str(), |x| x.name.as_str());
                cfg.describe_on_duty(&t, branch, &format!("{name} (on duty)"))
            }
            None => cfg.describe(&t, branch),
        });
    let missing: Vec<&String> = s.roll_call.difference(&s.confirmed).collect();
    json!({
        "id": s.id, "title": s.title, "state": s.state_name(), "owner": owner,
        "deadline": s.deadline, "overdue": overdue(s, now),
        "acknowledged_at": s.acknowledged_at, "done_at": s.done_at, "by": s.by,
        "response_seconds": s.response_seconds, "closed": s.closed, "critical": s.critical,
        "roll_call_missing": if s.roll_call.is_empty() { Value::Null } else { json!(missing) },
    })
}

fn incident_view(i: &Incident, cfg: &Config, playbook: &str, now: DateTime<Utc>) -> Value {
    json!({
        "id": i.id, "branch": i.branch,
        "branch_name": cfg.branches.get(&i.branch).map(|b| b.name.as_str()),
        "playbook": i.playbook_id, "playbook_name": playbook, "tier": i.tier, "drill": i.drill,
        "opened_at": i.opened_at, "kind": i.kind, "severity": i.severity, "summary": i.summary,
        "event_count": i.event_count,
        "steps": i.steps.iter().filter(|s| s.state.as_str() != "pending")
            .map(|s| step_view(s, cfg, &i.branch, now)).collect::<Vec<_>>(),
    })
}

/// Open incidents: totals, per-branch counts and the most urgent ones.
/// `playbook_name` names a playbook id; `branch` narrows the listed incidents.
pub fn incidents(
    open: &[Incident],
    cfg: &Config,
    playbook_name: impl Fn(&str) -> String,
    branch: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Value {
    let mut by_tier: BTreeMap<u8, usize> = BTreeMap::new();
    let mut by_playbook: BTreeMap<&str, usize> = BTreeMap::new();
    // branch -> (open, overdue, highest tier)
    let mut by_branch: BTreeMap<&str, (usize, usize, u8)> = BTreeMap::new();
    let mut late_total = 0;
    // Drills are shown apart and never counted with real incidents.
    let (mut drills, mut drills_late) = (0, 0);
    for i in open {
        let late = i.steps.iter().any(|s| overdue(s, now));
        if i.drill {
            drills += 1;
            drills_late += usize::from(late);
            continue;
        }
        late_total += usize::from(late);
        *by_tier.entry(i.tier).or_default() += 1;
        *by_playbook.entry(i.playbook_id.as_str()).or_default() += 1;
        let b = by_branch.entry(i.branch.as_str()).or_default();
        b.0 += 1;
        b.1 += usize::from(late);
        b.2 = b.2.max(i.tier);
    }
    let mut branches: Vec<(&str, (usize, usize, u8))> = by_branch.into_iter().collect();
    branches.sort_by_key(|(id, (n, late, tier))| {
        (
            std::cmp::Reverse(*late),
            std::cmp::Reverse(*tier),
            std::cmp::Reverse(*n),
            *id,
        )
    });
    let branch_rows: Vec<Value> = branches
        .iter()
        .take(limits.branches)
        .map(|(id, (n, late, tier))| {
            let b = cfg.branches.get(*id);
            json!({
                "id": id, "name": b.map(|b| b.name.as_str()),
                "region": b.and_then(|b| b.region.as_deref()),
                "open": n, "overdue": late, "tier": tier,
            })
        })
        .collect();
    let mut listed: Vec<&Incident> = open
        .iter()
        .filter(|i| branch.is_none_or(|b| i.branch == b))
        .collect();
    let matching = listed.len();
    listed.sort_by_cached_key(|i| urgency(i, now));
    let items: Vec<Value> = listed
        .iter()
        .take(limits.incidents)
        .map(|i| incident_view(i, cfg, &playbook_name(&i.playbook_id), now))
        .collect();
    json!({
        "open": open.len() - drills, "overdue": late_total,
        "drills": { "open": drills, "overdue": drills_late },
        "by_tier": by_tier.iter().map(|(t, n)| json!({"tier": t, "open": n})).collect::<Vec<_>>(),
        "by_playbook": by_playbook.iter().map(|(p, n)| json!({"playbook": p, "name": playbook_name(p), "open": n})).collect::<Vec<_>>(),
        "branches": branch_rows, "branches_total": branches.len(),
        "items": items, "matching": matching,
    })
}

/// Resolved incidents whose follow-up steps still run (a 24-hour back-fill,
/// a 72-hour report): nearest deadline first.
pub fn follow_ups(
    list: &[Incident],
    cfg: &Config,
    playbook_name: impl Fn(&str) -> String,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Value {
    let mut listed: Vec<&Incident> = list.iter().collect();
    listed.sort_by_cached_key(|i| urgency(i, now));
    json!({
        "count": list.len(),
        "items": listed
            .iter()
            .take(limits.incidents)
            .map(|i| {
                let mut v = incident_view(i, cfg, &playbook_name(&i.playbook_id), now);
                v["resolved_at"] = json!(i.resolved_at);
                v
            })
            .collect::<Vec<_>>(),
    })
}

/// Probe states: counts, and the targets that are not up first.
pub fn probes(
    states: &[((String, String), ProbeState)],
    sees: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Value {
    let status = |s: &ProbeState| match (s.down, s.level, s.last_up) {
        (true, _, _) => "down",
        (false, Level::Critical, _) => "critical",
        (false, Level::Warn, _) => "warn",
        (false, Level::Ok, None) => "unknown",
        (false, Level::Ok, Some(_)) => "up",
    };
    let mut rows: Vec<(&str, &(String, String), &ProbeState)> = states
        .iter()
        .filter(|((b, _), _)| sees(b))
        .map(|(k, s)| (status(s), k, s))
        .collect();
    let rank = |st: &str| match st {
        "down" => 0,
        "critical" => 1,
        "warn" => 2,
        "unknown" => 3,
        _ => 4,
    };
    rows.sort_by_key(|(st, k, _)| (rank(st), *k));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (st, _, _) in &rows {
        *counts.entry(st).or_default() += 1;
    }
    json!({
        "counts": counts, "total": rows.len(),
        "items": rows.iter().take(limits.probes).map(|(st, (b, sys), s)| json!({
            "branch": b, "system": sys, "status": st, "checked_at": s.checked_at,
        })).collect::<Vec<_>>(),
    })
}

/// The drill scoreboard: per drill and branch, the last score and the trend.
/// `runs` are newest first, as the store lists them.
pub fn scoreboard(
    runs: &[DrillRun],
    cfg: &Config,
    sees: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Value {
    // (drill, branch) -> points, oldest first
    let mut rows: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::new();
    let mut pass: BTreeMap<&str, f64> = BTreeMap::new();
    for run in runs.iter().rev() {
        pass.insert(run.drill.as_str(), run.pass_score);
        for b in run.branches.iter().filter(|b| sees(&b.branch)) {
            let Some(score) = b.score else { continue };
            rows.entry((run.drill.as_str(), b.branch.as_str()))
                .or_default()
                .push(json!({"run": run.id, "at": run.started_at, "score": score, "passed": b.passed}));
        }
    }
    let items: Vec<Value> = rows
        .into_iter()
        .map(|((drill, branch), mut points)| {
            let keep = points.len().saturating_sub(limits.trend);
            points.drain(..keep);
            let last = points.last().cloned().unwrap_or(Value::Null);
            json!({
                "drill": drill, "branch": branch,
                "branch_name": cfg.branches.get(branch).map(|b| b.name.as_str()),
                "pass_score": pass.get(drill),
                "score": last["score"], "passed": last["passed"], "run": last["run"], "at": last["at"],
                "points": points,
            })
        })
        .collect();
    json!({ "items": items })
}

/// Who is on duty now for the rostered roles the open incidents need (their
/// playbooks' assignees, notices, roll calls and escalations), per role and
/// branch, with until when: at most `limit` rows.
pub fn on_duty(
    open: &[Incident],
    loaded: &crate::config::Loaded,
    now: DateTime<Utc>,
    limit: usize,
) -> Value {
    if loaded.rosters.is_empty() {
        return json!([]);
    }
    let cfg = &loaded.config;
    let mut wanted: std::collections::BTreeSet<(String, String)> = Default::default();
    for i in open {
        let Some(pb) = loaded.playbook(&i.playbook_id) else {
            continue;
        };
        for s in &pb.steps {
            let mut ts: Vec<&Target> = s.assignee.iter().collect();
            ts.extend(s.escalate.iter().flat_map(|e| &e.to));
            for t in ts {
                let role = match t {
                    Target::Role(r) => r.as_str(),
                    Target::BranchHead => "branch-head",
                    _ => continue,
                };
                wanted.insert((role.to_string(), i.branch.clone()));
            }
        }
    }
    // A roster's duty is the same at each of its branches: worked out once.
    let mut duty: BTreeMap<String, (Option<String>, Option<DateTime<Utc>>)> = BTreeMap::new();
    let mut rows = Vec::new();
    for (role, branch) in wanted {
        let Some((_, r)) = crate::roster::covering(&loaded.rosters, &role, &branch) else {
            continue;
        };
        let (person, until) = duty.entry(r.id.clone()).or_insert_with(|| {
            let d = r.on_duty(now, &cfg.calendar, &cfg.away);
            let until = r
                .until(
                    now,
                    now + chrono::Duration::days(8),
                    &cfg.calendar,
                    &cfg.away,
                )
                .map(|(t, _)| t);
            (d.person, until)
        });
        let name = person
            .as_ref()
            .map(|p| cfg.people.get(p).map_or(p.clone(), |x| x.name.clone()));
        rows.push(json!({
            "role": role, "branch": branch,
            "branch_name": cfg.branches.get(&branch).map(|b| b.name.as_str()),
            "person": person, "name": name, "until": until, "roster": r.id,
        }));
        if rows.len() >= limit {
            break;
        }
    }
    json!(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Round};
    use crate::event::{Event, Severity, Status};

    fn event(kind: &str, branch: &str, labels: &[(&str, &str)], at: DateTime<Utc>) -> Event {
        Event {
            kind: kind.into(),
            branch: branch.into(),
            severity: Severity::Critical,
            status: Status::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            summary: None,
            occurred_at: at,
            source: "test".into(),
        }
    }

    #[test]
    fn overdue_incidents_come_first_counts_cover_all_and_the_list_is_capped() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml");
        let loaded = crate::config::load(&path).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
            .unwrap()
            .to_utc();
        let mut e = Engine::new(loaded.clone(), Vec::new(), 1, 1, t0);
        let mut r = Round::default();
        // #1 at sh-001: core failover, 15 minutes. #2, #3 later at sh-002 and sh-003.
        let core = event("system.down", "sh-001", &[("system", "core-banking")], t0);
        e.ingest(vec![(core, t0)], "test", t0, &mut r);
        let later = t0 + chrono::Duration::minutes(14);
        for b in ["sh-002", "sh-003"] {
            let ev = event("system.down", b, &[("system", "core-banking")], later);
            e.ingest(vec![(ev, later)], "test", later, &mut r);
        }
        let open: Vec<Incident> = e.live().cloned().collect();
        assert_eq!(open.len(), 3);
        // 16 minutes in, only #1 has steps past their deadlines.
        let now = t0 + chrono::Duration::minutes(16);
        let cfg = &loaded.config;
        let v = incidents(&open, cfg, |p| p.to_uppercase(), None, now, &limits());
        assert_eq!(v["open"], 3);
        assert_eq!(v["overdue"], 1);
        assert_eq!(
            v["items"].as_array().unwrap().len(),
            2,
            "capped at the limit"
        );
        assert_eq!(v["matching"], 3);
        assert_eq!(v["items"][0]["id"], 1, "{v}");
        assert_eq!(v["items"][0]["steps"][0]["overdue"], true);
        assert_eq!(v["branches"][0]["id"], "sh-001");
        assert_eq!(v["branches"][0]["overdue"], 1);
        assert_eq!(v["branches_total"], 3);
        let only = incidents(
            &open,
            cfg,
            |p| p.to_string(),
            Some("sh-003"),
            now,
            &limits(),
        );
        assert_eq!(only["matching"], 1);
        assert_eq!(only["items"][0]["branch"], "sh-003");
        assert_eq!(only["open"], 3, "counts stay network-wide");
    }

    fn limits() -> Limits {
        Limits {
            incidents: 2,
            branches: 10,
            probes: 10,
            trend: 3,
        }
    }

    #[test]
    fn probes_not_up_come_first_and_other_branches_are_hidden() {
        let mut up = ProbeState::default();
        up.last_up = Some(true);
        let mut down = ProbeState::default();
        down.down = true;
        let states = vec![
            (("a".to_string(), "atm".to_string()), up.clone()),
            (("a".to_string(), "core".to_string()), down),
            (("b".to_string(), "core".to_string()), up),
        ];
        let v = probes(&states, |b| b == "a", &limits());
        assert_eq!(v["total"], 2);
        assert_eq!(v["items"][0]["system"], "core");
        assert_eq!(v["items"][0]["status"], "down");
        assert_eq!(v["counts"]["up"], 1);
    }
}
