//! Roster files: who holds a role at which branches, by layers, overrides
//! and the people's leave (`docs/ROSTERS.md`).

use std::collections::BTreeSet;

use super::*;
use crate::roster::{DayKind, Layer, Only, Override, Roster, parse_clock, parse_local, to_utc};

pub(super) fn compile_roster(
    file: &str,
    raw: RosterFile,
    cfg: &Config,
    diags: &mut Diagnostics,
) -> Option<Roster> {
    let before = diags.len();
    let tz = match &raw.timezone {
        None => cfg.calendar.timezone,
        Some(v) => zone(file, v, diags).unwrap_or(cfg.calendar.timezone),
    };
    let branches: BTreeSet<String> = match &raw.branches.value {
        RosterBranches::Named(s) if s == "all" => cfg.branches.keys().cloned().collect(),
        RosterBranches::Named(s) => {
            diags.at_value(
                file,
                &raw.branches,
                format!(
                    "branches: `{s}`: expected `all`, a list of branch ids or `{{ region: NAME }}`"
                ),
            );
            BTreeSet::new()
        }
        RosterBranches::List(list) => {
            for b in list.iter().filter(|b| !cfg.branches.contains_key(*b)) {
                diags.at_value(
                    file,
                    &raw.branches,
                    format!("branches: unknown branch `{b}`"),
                );
            }
            list.iter().cloned().collect()
        }
        RosterBranches::Region { region } => {
            let set: BTreeSet<String> = cfg
                .branches
                .values()
                .filter(|b| b.region.as_deref() == Some(region.as_str()))
                .map(|b| b.id.clone())
                .collect();
            if set.is_empty() {
                diags.at_value(
                    file,
                    &raw.branches,
                    format!("branches: no branch is in region `{region}`"),
                );
            }
            set
        }
    };
    let person = |p: &S, field: &str, diags: &mut Diagnostics| {
        if !cfg.people.contains_key(&p.value) {
            diags.at_value(file, p, format!("{field}: unknown person `{}`", p.value));
        }
        p.value.clone()
    };
    if raw.layers.is_empty() && raw.overrides.is_empty() {
        diags.at_value(file, &raw.id, "layers: expected at least one layer");
    }
    let mut layers = Vec::new();
    for (i, l) in raw.layers.iter().enumerate() {
        let field = format!("layers[{i}]");
        let start = parse_local(&l.start.value)
            .map_err(|e| diags.at_value(file, &l.start, format!("{field}.start: {e}")))
            .ok();
        let shift = fixed(file, &l.shift, &format!("{field}.shift"), diags);
        if shift.is_some_and(|s| s < Duration::from_secs(1)) {
            diags.at_value(
                file,
                &l.shift,
                format!("{field}.shift: expected at least 1s"),
            );
        }
        let people: Vec<String> = l
            .people
            .iter()
            .map(|p| person(p, &format!("{field}.people"), diags))
            .collect();
        if people.is_empty() && !l.uncovered {
            diags.at_value(
                file,
                &l.name,
                format!("{field}.people: expected at least one person (or `uncovered: true` for a window nobody covers on purpose)"),
            );
        }
        if !people.is_empty() && l.uncovered {
            diags.at_value(
                file,
                &l.name,
                format!("{field}: an `uncovered` layer names nobody: remove `people`"),
            );
        }
        let only = match &l.only {
            None => Only::default(),
            Some(o) => {
                let days: BTreeSet<DayKind> = o
                    .days
                    .iter()
                    .filter_map(|d| {
                        DayKind::parse(&d.value)
                            .map_err(|e| diags.at_value(file, d, format!("{field}.only.days: {e}")))
                            .ok()
                    })
                    .collect();
                let clock = |v: &S, which: &str, diags: &mut Diagnostics| {
                    parse_clock(&v.value)
                        .map_err(|e| diags.at_value(file, v, format!("{field}.only.{which}: {e}")))
                        .ok()
                };
                let window = match (&o.from, &o.to) {
                    (Some(f), Some(t)) => clock(f, "from", diags).zip(clock(t, "to", diags)),
                    (None, None) => None,
                    (Some(v), None) | (None, Some(v)) => {
                        diags.at_value(
                            file,
                            v,
                            format!("{field}.only: expected both `from` and `to`"),
                        );
                        None
                    }
                };
                Only {
                    days: (!o.days.is_empty()).then_some(days),
                    window,
                }
            }
        };
        if let (Some(start), Some(shift)) = (start, shift) {
            layers.push(Layer {
                name: l.name.value.clone(),
                start,
                shift: chrono::Duration::from_std(shift).unwrap_or(chrono::Duration::days(1)),
                people,
                only,
                uncovered: l.uncovered,
            });
        }
    }
    let mut overrides = Vec::new();
    for (i, o) in raw.overrides.iter().enumerate() {
        let field = format!("overrides[{i}]");
        let who = person(&o.person, &format!("{field}.person"), diags);
        let at = |v: &S, diags: &mut Diagnostics| {
            parse_local(&v.value)
                .map(|t| to_utc(tz, t))
                .map_err(|e| diags.at_value(file, v, format!("{field}: {e}")))
                .ok()
        };
        if let (Some(from), Some(to)) = (at(&o.from, diags), at(&o.to, diags)) {
            if to <= from {
                diags.at_value(file, &o.to, format!("{field}.to: not after `from`"));
            }
            overrides.push(Override {
                person: who,
                from,
                to,
            });
        }
    }
    (diags.len() == before).then(|| Roster {
        id: raw.id.value.clone(),
        at: format!(
            "{file}:{}:{}",
            raw.id.referenced.line().max(1),
            raw.id.referenced.column().max(1)
        ),
        role: raw.role.value.clone(),
        branches,
        tz,
        layers,
        overrides,
        handoff: raw.handoff.is_some_and(|h| h.notify),
    })
}

/// Loads every roster of `rosters_dir`; two rosters for one (role, branch)
/// would make "who is on duty" ambiguous, so that is an error.
pub(super) fn load_rosters(
    cfg: &Config,
    cfg_file: &str,
    written_at: Option<Location>,
    diags: &mut Diagnostics,
) -> Vec<Arc<Roster>> {
    let mut out: Vec<Arc<Roster>> = Vec::new();
    for (path, text) in read_dir_yaml(&cfg.rosters_dir, cfg_file, "rosters_dir", written_at, diags)
    {
        let file = display(&path);
        let raw = match parse_yaml::<RosterFile>(&file, &text) {
            Ok(r) => r,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        if let Some(prev) = out.iter().find(|r| r.id == raw.id.value) {
            diags.at_value(
                &file,
                &raw.id,
                format!(
                    "duplicate roster id `{}`: already defined at {}",
                    raw.id.value, prev.at
                ),
            );
            continue;
        }
        let role = raw.role.clone();
        let Some(r) = compile_roster(&file, raw, cfg, diags) else {
            continue;
        };
        if let Some((prev, b)) = out
            .iter()
            .filter(|p| p.role == r.role)
            .find_map(|p| p.branches.intersection(&r.branches).next().map(|b| (p, b)))
        {
            diags.at_value(
                &file,
                &role,
                format!(
                    "role: `{}` at {b} is already covered by roster `{}` ({}): one roster per role and branch",
                    r.role, prev.id, prev.at
                ),
            );
            continue;
        }
        out.push(Arc::new(r));
    }
    out
}
