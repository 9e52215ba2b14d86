//! Drill files: schedule, branches, the event a drill sends, targets, scoring.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

pub(super) fn compile_drill(
    file: &str,
    raw: DrillFile,
    cfg: &Config,
    playbooks: &[Arc<Playbook>],
    playbook_failed: bool,
    diags: &mut Diagnostics,
) -> Option<Drill> {
    let before = diags.len();
    let pb = playbooks.iter().find(|p| p.id == raw.playbook.value);
    if pb.is_none() && !playbook_failed {
        let known: Vec<&str> = playbooks.iter().map(|p| p.id.as_str()).collect();
        diags.at_value(
            file,
            &raw.playbook,
            format!(
                "playbook: unknown playbook `{}`: expected one of {}",
                raw.playbook.value,
                known.join(", ")
            ),
        );
    }
    let schedule = raw.schedule.as_ref().and_then(|s| {
        Schedule::parse(&s.value)
            .map_err(|e| diags.at_value(file, s, format!("schedule: {e}")))
            .ok()
    });
    if let BranchSelection::List(list) = &raw.branches.value {
        if list.is_empty() {
            diags.at_value(
                file,
                &raw.branches,
                "branches: expected `all` or at least one branch",
            );
        }
        for b in list {
            if !cfg.branches.contains_key(b) {
                diags.at_value(
                    file,
                    &raw.branches,
                    format!("branches: unknown branch `{b}`"),
                );
            }
        }
    }
    let mut targets = BTreeMap::new();
    for (step, v) in &raw.targets {
        if let Some(pb) = pb
            && !pb.steps.iter().any(|s| &s.id == step)
        {
            diags.at_value(
                file,
                v,
                format!("targets.{step}: playbook `{}` has no step `{step}`", pb.id),
            );
        }
        let (text, done) = match &v.value {
            TargetValue::Respond(t) => (t.clone(), false),
            TargetValue::Done(t) => (t.clone(), true),
        };
        let at = S {
            value: text,
            referenced: v.referenced,
            defined: v.defined,
        };
        if at.value.trim() == "none" && !done {
            targets.insert(step.clone(), DrillTarget { delay: None, done });
        } else if let Some(d) = delay(file, &at, &format!("targets.{step}"), diags) {
            targets.insert(
                step.clone(),
                DrillTarget {
                    delay: Some(d),
                    done,
                },
            );
        }
    }
    let severity = raw.event.severity.unwrap_or(Severity::Major);
    if let Some(pb) = pb {
        let probe = crate::event::Event {
            kind: raw.event.kind.value.clone(),
            branch: String::new(),
            severity,
            status: crate::event::Status::Firing,
            labels: raw.event.labels.clone(),
            summary: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            source: "drill".into(),
        };
        if !pb.triggers(&probe) {
            diags.at_value(file, &raw.event.kind, format!("event: this event would not trigger playbook `{}` (kind, labels or severity differ)", pb.id));
        }
    }
    let timeout = opt_fixed(
        file,
        &raw.timeout,
        "timeout",
        Duration::from_secs(30 * 60),
        diags,
    );
    let mut raise = Vec::new();
    for (i, r) in raw.raise.iter().enumerate() {
        if let Some(after) = fixed(file, &r.after, &format!("raise[{i}].after"), diags) {
            raise.push((after, r.labels.clone()));
        }
    }
    let stagger = raw
        .stagger
        .as_ref()
        .and_then(|v| fixed(file, v, "stagger", diags));
    let starting_deadline = opt_fixed(
        file,
        &raw.starting_deadline,
        "starting_deadline",
        Duration::from_secs(30 * 60),
        diags,
    );
    let pass_score = match &raw.pass_score {
        Some(p) if !(0.0..=100.0).contains(&p.value) => {
            diags.at_value(
                file,
                p,
                format!("pass_score: {} is out of range: expected 0 to 100", p.value),
            );
            80.0
        }
        Some(p) => p.value,
        None => 80.0,
    };
    if diags.len() > before || pb.is_none() {
        return None;
    }
    if let Some(pb) = pb {
        unreachable_targets(file, &raw, pb, &targets, timeout, diags);
    }
    Some(Drill {
        id: raw.id.value.clone(),
        name: raw.name.unwrap_or(raw.id.value),
        file: file.to_string(),
        playbook: raw.playbook.value,
        schedule,
        branches: raw.branches.value,
        event: DrillEvent {
            kind: raw.event.kind.value,
            severity,
            labels: raw.event.labels,
            summary: raw.event.summary,
        },
        targets,
        timeout,
        missed: raw.missed,
        starting_deadline,
        stagger,
        raise,
        pass_score,
        live: raw.live,
    })
}

/// The shortest a target can be, for comparing with the drill's timeout:
/// a working day is at least a day.
fn at_least(d: &Delay) -> Duration {
    match d {
        Delay::Fixed(d) => *d,
        Delay::WorkingDays(n) => Duration::from_secs(u64::from(*n) * 86_400),
    }
}

/// Warns about each scored step (a task or a roll call, active when the
/// incident opens) whose target cannot fall within the drill's timeout: the
/// run leaves it out of the score, and the author should know.
fn unreachable_targets(
    file: &str,
    raw: &DrillFile,
    pb: &Playbook,
    targets: &BTreeMap<String, DrillTarget>,
    timeout: Duration,
    diags: &mut Diagnostics,
) {
    for s in &pb.steps {
        // Follow-ups never start in a drill (its incident is not resolved).
        if !matches!(s.action, Action::Task | Action::RollCall(_)) || s.after_resolved {
            continue;
        }
        let (target, given) = match targets.get(&s.id) {
            Some(DrillTarget { delay: None, .. }) => continue,
            Some(DrillTarget { delay: Some(d), .. }) => (d, true),
            None => (&s.deadline, false),
        };
        if at_least(target) <= timeout {
            continue;
        }
        let what = if given {
            format!("its target {target}")
        } else {
            format!("its target (the step's deadline, {target})")
        };
        let message = format!(
            "step `{}`: {what} cannot fall within the drill's timeout ({}): it is left out of the score (say `{}: none` if that is meant)",
            s.id,
            crate::show::span(timeout),
            s.id
        );
        match (raw.targets.get(&s.id), &raw.timeout) {
            (Some(v), _) => diags.warn_at_value(file, v, format!("targets.{}: {message}", s.id)),
            (None, Some(t)) => diags.warn_at_value(file, t, format!("timeout: {message}")),
            (None, None) => diags.warn_at_value(file, &raw.playbook, message),
        }
    }
}
