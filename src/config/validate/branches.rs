//! The branches of `branchguard.yaml`: each branch with its neighbours and
//! systems, each system's probe, and the maintenance windows over branches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

/// Branches come first: people, neighbours and tokens refer to them.
pub(super) fn branches(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Branch> {
    let mut branches: BTreeMap<String, Branch> = BTreeMap::new();
    for b in &raw.branches {
        if b.id.value.trim().is_empty() {
            diags.at_value(file, &b.id, "branches.id: must not be empty");
        }
        if branches.contains_key(&b.id.value) {
            diags.at_value(file, &b.id, format!("duplicate branch id `{}`", b.id.value));
            continue;
        }
        let branch_tz = b.timezone.as_ref().and_then(|tz| zone(file, tz, diags));
        for n in &b.neighbours {
            if !branch_ids.contains(&n.value) {
                diags.at_value(file, n, format!("neighbours: unknown branch `{}`", n.value));
            } else if n.value == b.id.value {
                diags.at_value(
                    file,
                    n,
                    format!(
                        "neighbours: branch `{}` cannot be its own neighbour",
                        n.value
                    ),
                );
            }
        }
        let mut systems = Vec::new();
        let mut names = BTreeSet::new();
        for s in &b.systems {
            if !names.insert(s.name.value.clone()) {
                diags.at_value(
                    file,
                    &s.name,
                    format!(
                        "duplicate system `{}` in branch `{}`",
                        s.name.value, b.id.value
                    ),
                );
            }
            let probe = s.probe.as_ref().map(|p| probe(file, &s.name, p, diags));
            systems.push(SystemConfig {
                name: s.name.value.clone(),
                probe,
            });
        }
        branches.insert(
            b.id.value.clone(),
            Branch {
                id: b.id.value.clone(),
                name: b.name.clone(),
                region: b.region.clone(),
                timezone: branch_tz,
                neighbours: b.neighbours.iter().map(|n| n.value.clone()).collect(),
                systems,
            },
        );
    }
    branches
}

/// A system's probe: exactly one way to check it, and its timings.
fn probe(file: &str, system: &S, p: &ProbeFile, diags: &mut Diagnostics) -> ProbeConfig {
    let given = [p.http.is_some(), p.tcp.is_some(), p.command.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        diags.at(
            file,
            system.referenced,
            format!(
                "probe of `{}`: give exactly one of `http: URL`, `tcp: HOST:PORT` or `command: [PROGRAM, ARG, …]`",
                system.value
            ),
        );
    }
    if let Some(u) = &p.http
        && !(u.value.starts_with("http://") || u.value.starts_with("https://"))
    {
        diags.at_value(
            file,
            u,
            format!("probe.http: `{}` is not an http(s) URL", u.value),
        );
    }
    if let Some(t) = &p.tcp
        && !t.value.contains(':')
    {
        diags.at_value(
            file,
            t,
            format!("probe.tcp: `{}`: expected HOST:PORT", t.value),
        );
    }
    if let Some(c) = &p.command
        && c.value.is_empty()
    {
        diags.at_value(file, c, "probe.command: expected [PROGRAM, ARG, …]");
    }
    let value = p.value.as_ref().map(|v| {
        if p.http.is_none() {
            diags.at_value(
                file,
                &v.path,
                "probe.value: reads an `http` probe's JSON body: give `http`",
            );
        }
        if v.warn.is_none() && v.critical.is_none() {
            diags.at_value(
                file,
                &v.path,
                "probe.value: give `warn`, `critical` or both",
            );
        }
        if let (Some(w), Some(c)) = (v.warn, v.critical)
            && w > c
        {
            diags.at_value(
                file,
                &v.path,
                format!("probe.value: warn ({w}) is above critical ({c})"),
            );
        }
        ValueProbe {
            path: v.path.value.split('.').map(str::to_string).collect(),
            warn: v.warn,
            critical: v.critical,
            kind: v.kind.clone().unwrap_or_else(|| "value.high".into()),
        }
    });
    ProbeConfig {
        http: p.http.as_ref().map(|v| v.value.clone()),
        tcp: p.tcp.as_ref().map(|v| v.value.clone()),
        command: p.command.as_ref().map(|v| v.value.clone()),
        expect_status: p.expect_status,
        expect_body: p.expect_body.clone(),
        value,
        interval: opt_fixed(
            file,
            &p.interval,
            "probe.interval",
            Duration::from_secs(15),
            diags,
        ),
        timeout: opt_fixed(
            file,
            &p.timeout,
            "probe.timeout",
            Duration::from_secs(3),
            diags,
        ),
        failures: p.failures.unwrap_or(3).max(1),
        successes: p.successes.unwrap_or(2).max(1),
    }
}

/// Maintenance windows: when, over which branches, and which events they hold back.
pub(super) fn maintenance(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Vec<MaintenanceWindow> {
    let mut out = Vec::new();
    for m in &raw.maintenance {
        let start = crate::schedule::Schedule::parse(&m.start.value)
            .map_err(|e| diags.at_value(file, &m.start, format!("maintenance.start: {e}")))
            .ok();
        let duration = fixed(file, &m.duration, "maintenance.duration", diags);
        if let BranchSelection::List(l) = &m.branches.value {
            for b in l {
                if !branch_ids.contains(b) {
                    diags.at_value(
                        file,
                        &m.branches,
                        format!("maintenance.branches: unknown branch `{b}`"),
                    );
                }
            }
        }
        if m.matchers.is_empty() {
            diags.at_value(
                file,
                &m.name,
                format!(
                    "maintenance `{}`: give `matchers` (e.g. {{ system: core-banking }}): a window without them would silence every event of its branches",
                    m.name.value
                ),
            );
        }
        if let (Some(start), Some(duration)) = (start, duration) {
            out.push(MaintenanceWindow {
                name: m.name.value.clone(),
                start,
                duration,
                branches: m.branches.value.clone(),
                matchers: m.matchers.clone(),
            });
        }
    }
    out
}
