//! Playbook files: trigger, tiers, steps, actions, targets, deadlines.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

pub(super) fn compile_playbook(
    file: &str,
    text: &str,
    raw: PlaybookFile,
    cfg: &Config,
    diags: &mut Diagnostics,
) -> Option<Playbook> {
    let before = diags.len();
    if raw.id.value.trim().is_empty() {
        diags.at_value(file, &raw.id, "id: must not be empty");
    }
    if raw.steps.is_empty() {
        diags.at_value(file, &raw.id, "steps: a playbook needs at least one step");
    }
    let mut labels_re = BTreeMap::new();
    for (k, v) in &raw.trigger.labels_re {
        match anchored(&v.value) {
            Ok(r) => {
                labels_re.insert(k.clone(), Pattern(r));
            }
            Err(e) => diags.at_value(
                file,
                v,
                format!("trigger.labels_re.{k}: invalid regular expression: {e}"),
            ),
        }
    }
    let group_by: Vec<String> = match &raw.group_by {
        Some(g) => {
            for v in g {
                if v.value.trim().is_empty() {
                    diags.at_value(file, v, "group_by: empty field name");
                }
            }
            g.iter().map(|v| v.value.clone()).collect()
        }
        None => vec!["branch".to_string()],
    };
    let mut tiers: Vec<Tier> = Vec::new();
    for t in &raw.tiers {
        if t.level.value == 0 {
            diags.at_value(file, &t.level, "tiers.level: levels start at 1");
        }
        if tiers.iter().any(|x| x.level == t.level.value) {
            diags.at_value(
                file,
                &t.level,
                format!("tiers: duplicate level {}", t.level.value),
            );
        }
        let open_for = t
            .open_for
            .as_ref()
            .and_then(|d| delay(file, d, "tiers.open_for", diags));
        tiers.push(Tier {
            level: t.level.value,
            name: t.name.clone(),
            labels: t.labels.clone(),
            severity_at_least: t.severity_at_least,
            open_for,
        });
    }
    tiers.sort_by_key(|t| t.level);

    let mut steps: Vec<Step> = Vec::new();
    let mut step_ids = BTreeSet::new();
    for s in &raw.steps {
        let sid = &s.id.value;
        if sid.trim().is_empty() {
            diags.at_value(file, &s.id, "steps.id: must not be empty");
        }
        if !step_ids.insert(sid.clone()) {
            diags.at_value(file, &s.id, format!("duplicate step id `{sid}`"));
        }
        let f = |name: &str| format!("steps.{sid}.{name}");
        let assignee = s
            .assignee
            .as_ref()
            .and_then(|a| target(file, a, &f("assignee"), cfg, true, diags))
            .filter(|t| match (t, &s.assignee) {
                (Target::Contact(c), Some(a)) => {
                    diags.at_value(
                        file,
                        a,
                        format!(
                            "{}: `contact:{c}` is told, not asked: a step is assigned to someone on the staff (tell the contact with a notify step)",
                            f("assignee")
                        ),
                    );
                    false
                }
                _ => true,
            });
        let action = s.action.as_ref().map_or(Some(Action::Task), |a| {
            compile_action(file, &a.value, a.referenced, sid, cfg, diags)
        });
        let deadline = delay(file, &s.deadline, &f("deadline"), diags);
        let every = s.every.as_ref().and_then(|e| {
            let d = delay(file, e, &f("every"), diags)?;
            if let (Some(every), Some(dl)) = (d.fixed(), deadline.as_ref().and_then(|x| x.fixed()))
                && every < dl
            {
                diags.warn_at_value(
                    file,
                    e,
                    format!(
                        "{}: {d} is shorter than the deadline ({}): a new occurrence starts while the last may still be open",
                        f("every"),
                        deadline.as_ref().map(|x| x.to_string()).unwrap_or_default()
                    ),
                );
            }
            Some(d)
        });
        let message = s
            .action
            .as_ref()
            .and_then(|a| a.value.message.as_ref())
            .and_then(|m| template(file, m, &f("action.message"), diags));
        let weight = match &s.weight {
            Some(w) if !(w.value > 0.0 && w.value.is_finite()) => {
                diags.at_value(
                    file,
                    w,
                    format!("{}: must be a positive number", f("weight")),
                );
                1.0
            }
            Some(w) => w.value,
            None => 1.0,
        };
        let mut escalate = Vec::new();
        for e in &s.escalate {
            let after = delay(file, &e.after, &f("escalate.after"), diags);
            if e.to.is_empty() {
                diags.at_value(
                    file,
                    &e.after,
                    format!("{}: needs at least one target", f("escalate.to")),
                );
            }
            let to: Vec<Target> =
                e.to.iter()
                    .filter_map(|t| target(file, t, &f("escalate.to"), cfg, true, diags))
                    .collect();
            if let Some(after) = after {
                escalate.push(Escalation { after, to });
            }
        }
        // `resolved`, or another step's id (checked once every id is known).
        let after_resolved = s.after.as_ref().is_some_and(|a| a.value == "resolved");
        let after_step = s
            .after
            .as_ref()
            .filter(|a| a.value != "resolved")
            .map(|a| a.value.clone());
        let step_delay = s.delay.as_ref().and_then(|d| {
            if s.after.is_none() {
                diags.at_value(
                    file,
                    d,
                    format!(
                        "{}: `delay` needs `after` (a step id, or `resolved`): it counts from when that happens",
                        f("delay")
                    ),
                );
                return None;
            }
            delay(file, d, &f("delay"), diags)
        });
        let when = s
            .when
            .as_ref()
            .and_then(|w| match TierCondition::parse(&w.value) {
                Err(e) => {
                    diags.at_value(file, w, format!("{}: {e}", f("when")));
                    None
                }
                Ok(_) if tiers.is_empty() => {
                    diags.at_value(
                        file,
                        w,
                        format!(
                            "{}: `{}` but the playbook defines no tiers",
                            f("when"),
                            w.value
                        ),
                    );
                    None
                }
                Ok(c) if !tiers.iter().any(|t| t.level == c.level) => {
                    let levels: Vec<String> = tiers.iter().map(|t| t.level.to_string()).collect();
                    diags.at_value(
                        file,
                        w,
                        format!(
                            "{}: tier {} is not defined: the playbook's tiers are {}",
                            f("when"),
                            c.level,
                            levels.join(", ")
                        ),
                    );
                    None
                }
                Ok(c) => Some(c),
            });
        lint_step(
            file,
            s,
            deadline.as_ref(),
            &escalate,
            when.as_ref(),
            &tiers,
            cfg,
            diags,
        );
        if let (Some(action), Some(deadline)) = (action, deadline) {
            steps.push(Step {
                id: sid.clone(),
                title: s.title.clone().unwrap_or_else(|| sid.replace('-', " ")),
                assignee,
                action,
                deadline,
                critical: s.critical,
                weight,
                escalate,
                after_resolved,
                after_step,
                delay: step_delay,
                message,
                every,
                when,
            });
        }
    }
    sequence(file, &raw.steps, &step_ids, diags);
    if diags.len() > before {
        return None;
    }
    Some(Playbook {
        id: raw.id.value,
        name: raw.name,
        description: raw.description,
        version: hex::encode(&Sha256::digest(text.as_bytes())[..6]),
        file: file.to_string(),
        trigger: Trigger {
            kind: raw.trigger.kind.value,
            labels: raw.trigger.labels,
            labels_re,
            severity_at_least: raw.trigger.severity_at_least,
        },
        group_by,
        resolve: raw.resolve,
        tiers,
        steps,
    })
}

pub(super) fn compile_action(
    file: &str,
    a: &ActionFile,
    at: Location,
    sid: &str,
    cfg: &Config,
    diags: &mut Diagnostics,
) -> Option<Action> {
    let f = |name: &str| format!("steps.{sid}.action.{name}");
    let kinds: Vec<(&str, Location)> = [
        ("task", a.task.as_ref().map(|v| v.referenced)),
        ("notify", a.notify.as_ref().map(|v| v.referenced)),
        ("webhook", a.webhook.as_ref().map(|v| v.referenced)),
        ("command", a.command.as_ref().map(|v| v.referenced)),
        ("roll_call", a.roll_call.as_ref().map(|v| v.referenced)),
        ("event", a.event.as_ref().map(|v| v.referenced)),
    ]
    .into_iter()
    .filter_map(|(k, l)| l.map(|l| (k, l)))
    .collect();
    let kind = match kinds.as_slice() {
        [(one, _)] => *one,
        [] => {
            diags.at(file, at, format!("steps.{sid}.action: expected one of task, notify, webhook, command, roll_call or event"));
            return None;
        }
        [_, (second, l), ..] => {
            diags.at(file, *l, format!("steps.{sid}.action: `{second}` given together with `{}`: a step has one action", kinds[0].0));
            return None;
        }
    };
    if let Some(b) = &a.body
        && kind != "webhook"
    {
        diags.at_value(
            file,
            b,
            format!(
                "{}: `body` belongs to a `webhook` action, not `{kind}`",
                f("body")
            ),
        );
    }
    if let Some(m) = &a.message
        && kind != "notify"
    {
        diags.at_value(
            file,
            m,
            format!(
                "{}: `message` belongs to a `notify` action, not `{kind}`",
                f("message")
            ),
        );
    }
    if let Some(t) = &a.timeout
        && kind != "command"
    {
        diags.at_value(
            file,
            t,
            format!(
                "{}: `timeout` belongs to a `command` action, not `{kind}`",
                f("timeout")
            ),
        );
    }
    match kind {
        "task" => Some(Action::Task),
        "event" => {
            let e = a.event.as_ref()?;
            let kind = e.value.kind.value.trim();
            if kind.is_empty() {
                diags.at_value(
                    file,
                    &e.value.kind,
                    format!("{}: must not be empty", f("event.kind")),
                );
                return None;
            }
            let mut labels = BTreeMap::new();
            for (k, v) in &e.value.labels {
                labels.insert(
                    k.clone(),
                    template(file, v, &f(&format!("event.labels.{k}")), diags)?,
                );
            }
            let summary = match &e.value.summary {
                Some(s) => Some(template(file, s, &f("event.summary"), diags)?),
                None => None,
            };
            Some(Action::Event {
                kind: kind.to_string(),
                labels,
                severity: e.value.severity.unwrap_or(crate::event::Severity::Major),
                summary,
                at: (
                    e.value.kind.referenced.line(),
                    e.value.kind.referenced.column(),
                ),
            })
        }
        "notify" => {
            let list = a.notify.as_ref()?;
            if list.value.is_empty() {
                diags.at_value(
                    file,
                    list,
                    format!("{}: needs at least one target", f("notify")),
                );
            }
            let ts: Vec<Target> = list
                .value
                .iter()
                .filter_map(|t| target(file, t, &f("notify"), cfg, true, diags))
                .collect();
            (ts.len() == list.value.len()).then_some(Action::Notify(ts))
        }
        "webhook" => {
            let ch = a.webhook.as_ref()?;
            if !cfg.webhooks.contains_key(&ch.value) {
                diags.at_value(
                    file,
                    ch,
                    format!(
                        "{}: unknown channel `{}`: it is not under notify.webhooks",
                        f("webhook"),
                        ch.value
                    ),
                );
                return None;
            }
            let body = match &a.body {
                Some(b) => Some(template(file, b, &f("body"), diags)?),
                None => None,
            };
            Some(Action::Webhook {
                channel: ch.value.clone(),
                body,
            })
        }
        "command" => {
            let argv = a.command.as_ref()?;
            if argv.value.is_empty() {
                diags.at_value(
                    file,
                    argv,
                    format!("{}: needs at least the program to run", f("command")),
                );
                return None;
            }
            let args: Vec<Template> = argv
                .value
                .iter()
                .filter_map(|t| template(file, t, &f("command"), diags))
                .collect();
            let timeout = opt_fixed(
                file,
                &a.timeout,
                &f("timeout"),
                cfg.engine.command_timeout,
                diags,
            );
            (args.len() == argv.value.len()).then_some(Action::Command {
                argv: args,
                timeout,
            })
        }
        "roll_call" => {
            let t = a.roll_call.as_ref()?;
            target(file, t, &f("roll_call"), cfg, false, diags).map(Action::RollCall)
        }
        _ => None,
    }
}

/// Warnings about a step that will load but not work as meant.
#[allow(clippy::too_many_arguments)]
fn lint_step(
    file: &str,
    s: &StepFile,
    deadline: Option<&Delay>,
    escalate: &[Escalation],
    when: Option<&TierCondition>,
    tiers: &[Tier],
    cfg: &Config,
    diags: &mut Diagnostics,
) {
    let sid = &s.id.value;
    // An escalation at or past the deadline comes after the overdue notice.
    for (raw, e) in s.escalate.iter().zip(escalate) {
        let late = match (e.after, deadline) {
            (Delay::Fixed(a), Some(Delay::Fixed(d))) => a >= *d,
            (Delay::WorkingDays(a), Some(Delay::WorkingDays(d))) => a >= *d,
            _ => false,
        };
        if late && let Some(d) = deadline {
            diags.warn_at_value(
                file,
                &raw.after,
                format!(
                    "steps.{sid}.escalate.after: {} is at or past the step's deadline ({d}): the step is overdue (and the operations centre told) before this escalation; escalate earlier",
                    e.after
                ),
            );
        }
    }
    // A role (or head) nobody holds at some branch: the step would reach nobody there.
    let mut targets: Vec<(&S, String)> = Vec::new();
    if let Some(a) = &s.assignee {
        targets.push((a, format!("steps.{sid}.assignee")));
    }
    for e in &s.escalate {
        targets.extend(e.to.iter().map(|t| (t, format!("steps.{sid}.escalate.to"))));
    }
    if let Some(a) = &s.action {
        if let Some(n) = &a.value.notify {
            targets.extend(
                n.value
                    .iter()
                    .map(|t| (t, format!("steps.{sid}.action.notify"))),
            );
        }
        if let Some(r) = &a.value.roll_call {
            targets.push((r, format!("steps.{sid}.action.roll_call")));
        }
    }
    for (v, field) in targets {
        let Ok(t) = Target::parse(&v.value) else {
            continue;
        };
        // A contact serves the branches it names (told, not looked up by role).
        if matches!(
            t,
            Target::Channel(_) | Target::Person(_) | Target::NeighbourHeads | Target::Contact(_)
        ) {
            continue;
        }
        let nobody: Vec<&str> = cfg
            .branches
            .keys()
            .filter(|b| cfg.people_for(&t, b).is_empty())
            .map(String::as_str)
            .collect();
        if !nobody.is_empty() {
            diags.warn_at_value(
                file,
                v,
                format!(
                    "{field}: nobody is `{t}` at {}: the step would notify nobody there",
                    nobody.join(", ")
                ),
            );
        }
    }
    // A `when` that no tier of the playbook satisfies.
    if let (Some(c), Some(w)) = (when, &s.when)
        && !tiers.is_empty()
        && !tiers.iter().any(|t| c.holds(t.level))
    {
        let levels: Vec<String> = tiers.iter().map(|t| t.level.to_string()).collect();
        diags.warn_at_value(
            file,
            w,
            format!(
                "steps.{sid}.when: `{c}` holds at none of the playbook's tiers ({}): the step never starts",
                levels.join(", ")
            ),
        );
    }
}

/// `after: STEP_ID`: a step of this playbook, not the step itself, and no
/// cycle (a step that waits, through others, for itself would never start).
fn sequence(file: &str, steps: &[StepFile], ids: &BTreeSet<String>, diags: &mut Diagnostics) {
    let after: BTreeMap<&str, &S> = steps
        .iter()
        .filter_map(|s| {
            s.after
                .as_ref()
                .filter(|a| a.value != "resolved")
                .map(|a| (s.id.value.as_str(), a))
        })
        .collect();
    for (sid, a) in &after {
        if steps
            .iter()
            .any(|s| s.id.value == a.value && s.every.is_some())
        {
            diags.at_value(
                file,
                a,
                format!(
                    "steps.{sid}.after: `{}` repeats (`every`): a step cannot wait for one that never ends",
                    a.value
                ),
            );
            continue;
        }
        if !ids.contains(&a.value) {
            let known: Vec<&str> = ids.iter().map(String::as_str).collect();
            diags.at_value(
                file,
                a,
                format!(
                    "steps.{sid}.after: no step `{}` in this playbook: expected `resolved` or one of {}",
                    crate::diag::clip_quotes(&a.value),
                    known.join(", ")
                ),
            );
            continue;
        }
        // Follow the chain back; a cycle comes round to this step.
        let mut chain = vec![*sid];
        let mut at = a.value.as_str();
        while let Some(next) = after.get(at) {
            if chain.contains(&at) {
                break;
            }
            chain.push(at);
            at = next.value.as_str();
        }
        if at == *sid {
            chain.push(sid);
            diags.at_value(
                file,
                a,
                format!(
                    "steps.{sid}.after: a cycle ({}): none of these steps would ever start",
                    chain.join(" → ")
                ),
            );
        }
    }
}
