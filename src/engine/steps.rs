//! Starting a step (what each action does when it becomes active), and the end
//! of a command step.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Action;
use crate::target::Target;

impl Engine {
    pub(super) fn activate(&mut self, iid: i64, idx: usize, now: DateTime<Utc>, round: &mut Round) {
        let cal = self.loaded.config.calendar.clone();
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let Some(spec_idx) = inc.spec_of(idx) else {
            return;
        };
        // A repeating step itself is its schedule: each start is an occurrence.
        if pb.steps[spec_idx].every.is_some() && idx == spec_idx {
            self.start_occurrence(iid, idx, now, round);
            return;
        }
        let Some(spec) = super::repeat::spec_for(&pb, inc, idx) else {
            return;
        };
        let spec = spec.as_ref();
        {
            let run = &mut inc.steps[idx];
            run.activated_at = Some(now);
            run.deadline = Some(spec.deadline.after(now, &cal));
            run.notified_at = Some(now);
            run.state = StepState::Notified;
        }
        round.touched.insert(iid);
        let inc = inc.clone();
        let due = inc.steps[idx]
            .deadline
            .map(|d| fmt_time(d, &self.loaded, &inc.branch))
            .unwrap_or_default();
        match &spec.action {
            Action::Task => {
                let targets: Vec<Target> = spec.assignee.iter().cloned().collect();
                // Whom a rostered role resolved to: the step shows it, and a
                // hand-over passes the step on from them.
                let on_duty = spec.assignee.as_ref().and_then(|a| {
                    match self.people_at(a, &inc.branch, now) {
                        (people, Some(_)) => Some(people.first().map(|p| p.id.clone())),
                        _ => None,
                    }
                });
                if let Some(on_duty) = on_duty
                    && let Some(inc) = self.live.get_mut(&iid)
                {
                    inc.steps[idx].on_duty = on_duty;
                }
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    &targets,
                    Msg::new(
                        Ask::Action,
                        "You are assigned this step: acknowledge it now, then mark it done when it is.",
                    )
                    .links(TASK_LINKS),
                    round,
                    now,
                );
                Self::history(
                    round,
                    iid,
                    now,
                    "step.notified",
                    "branchguard",
                    format!("step {}: {sent}; due {due}", spec.id),
                );
            }
            Action::Event { .. } => {
                let said = self.send_event(&inc, spec, now, round);
                Self::history(
                    round,
                    iid,
                    now,
                    "step.done",
                    "branchguard",
                    format!("step {}: {said}", spec.id),
                );
                self.set_done(iid, idx, now, "branchguard");
            }
            Action::Notify(targets) => {
                let words = spec
                    .message
                    .as_ref()
                    .map(|m| m.render(&self.vars(&inc, Some(spec))));
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    targets,
                    Msg::new(
                        Ask::Notice,
                        words.as_deref().unwrap_or("For your information."),
                    ),
                    round,
                    now,
                );
                Self::history(
                    round,
                    iid,
                    now,
                    "step.done",
                    "branchguard",
                    format!("step {}: {sent}", spec.id),
                );
                self.set_done(iid, idx, now, "branchguard");
            }
            // A drill that is not live records what it would do, and does not.
            Action::Webhook { channel, .. } if inc.rehearsal => {
                Self::history(
                    round,
                    iid,
                    now,
                    "step.done",
                    "drill",
                    format!(
                        "step {}: announcement to channel:{channel} recorded, not sent (the drill is not live)",
                        spec.id
                    ),
                );
                self.set_done(iid, idx, now, "drill");
            }
            Action::Command { argv, .. } if inc.rehearsal => {
                let vars = self.vars(&inc, Some(spec));
                let line: Vec<String> = argv.iter().map(|a| a.render(&vars)).collect();
                Self::history(
                    round,
                    iid,
                    now,
                    "step.done",
                    "drill",
                    format!(
                        "step {}: command recorded, not run (the drill is not live): {}",
                        spec.id,
                        line.join(" ")
                    ),
                );
                self.set_done(iid, idx, now, "drill");
            }
            Action::Webhook { channel, body } => {
                let vars = self.vars(&inc, Some(spec));
                let text = body
                    .as_ref()
                    .map(|b| b.render(&vars))
                    .unwrap_or_else(|| spec.title.clone());
                let subject = self.subject(&inc, Some(spec), Ask::Notice);
                let text = if inc.drill {
                    format!("[DRILL] {text}")
                } else {
                    text
                };
                round.outbox.push(Notification {
                    incident: iid,
                    step: Some(spec.id.clone()),
                    channel: ChannelKind::Webhook,
                    drill: inc.drill,
                    target: format!("channel:{channel}"),
                    recipient: channel.clone(),
                    person: None,
                    payload: Some(self.webhook_payload(
                        &inc,
                        Some(spec),
                        "announcement",
                        (Ask::Notice, spec.critical),
                        false,
                    )),
                    subject,
                    body: text,
                    created_at: now,
                    links: Vec::new(),
                    link_until: None,
                    announcement: true,
                    urgent: spec.critical,
                    grant_until: None,
                });
                // Done when delivered, not when queued: see `delivered`.
                Self::history(
                    round,
                    iid,
                    now,
                    "step.notified",
                    "branchguard",
                    format!(
                        "step {}: announcement to channel:{channel} queued; done once delivered",
                        spec.id
                    ),
                );
            }
            Action::Command { .. } => {
                if let Some(req) = self.command_request(&inc, idx) {
                    Self::history(
                        round,
                        iid,
                        now,
                        "command.started",
                        "branchguard",
                        format!("step {}: {}", spec.id, req.argv.join(" ")),
                    );
                    round.commands.push(req);
                }
                if let Some(inc) = self.live.get_mut(&iid) {
                    inc.steps[idx].running = true;
                }
            }
            Action::RollCall(target) => {
                let people: BTreeSet<String> = self
                    .people_at(target, &inc.branch, now)
                    .0
                    .into_iter()
                    .map(|p| p.id.clone())
                    .collect();
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    std::slice::from_ref(target),
                    Msg::new(
                        Ask::RollCall,
                        "Roll call: confirm that you are safe, with the link below.",
                    )
                    .links(ROLL_CALL_LINKS),
                    round,
                    now,
                );
                Self::history(
                    round,
                    iid,
                    now,
                    "step.notified",
                    "branchguard",
                    format!(
                        "step {}: roll call of {} people; {sent}; due {due}",
                        spec.id,
                        people.len()
                    ),
                );
                if let Some(inc) = self.live.get_mut(&iid) {
                    inc.steps[idx].roll_call = people;
                }
            }
        }
    }

    /// Roll call: the names of those who have not confirmed yet.
    pub(super) fn missing_names(&self, inc: &Incident, idx: usize) -> Vec<String> {
        let run = &inc.steps[idx];
        run.roll_call
            .difference(&run.confirmed)
            .map(|id| {
                self.loaded
                    .config
                    .people
                    .get(id)
                    .map_or(id.clone(), |p| format!("{} ({id})", p.name))
            })
            .collect()
    }

    pub(super) fn set_done(&mut self, iid: i64, idx: usize, now: DateTime<Utc>, by: &str) {
        if let Some(inc) = self.live.get_mut(&iid) {
            let run = &mut inc.steps[idx];
            run.state = StepState::Done;
            run.done_at = Some(now);
            run.by = Some(by.to_string());
        }
    }

    pub(super) fn command_request(&self, inc: &Incident, idx: usize) -> Option<CommandRequest> {
        let pb = inc.playbook.as_ref()?;
        let spec = &pb.steps[inc.spec_of(idx)?];
        let Action::Command { argv, timeout } = &spec.action else {
            return None;
        };
        let vars = self.vars(inc, Some(spec));
        let mut env: Vec<(String, String)> = vec![
            ("BRANCHGUARD_INCIDENT".into(), inc.id.to_string()),
            ("BRANCHGUARD_BRANCH".into(), inc.branch.clone()),
            ("BRANCHGUARD_PLAYBOOK".into(), inc.playbook_id.clone()),
            ("BRANCHGUARD_TIER".into(), inc.tier.to_string()),
            ("BRANCHGUARD_STEP".into(), spec.id.clone()),
            ("BRANCHGUARD_KIND".into(), inc.kind.clone()),
            ("BRANCHGUARD_SEVERITY".into(), inc.severity.clone()),
            (
                "BRANCHGUARD_SUMMARY".into(),
                inc.summary.clone().unwrap_or_default(),
            ),
            ("BRANCHGUARD_DRILL".into(), inc.drill.to_string()),
            (
                "BRANCHGUARD_URL".into(),
                vars.get("links.incident").cloned().unwrap_or_default(),
            ),
        ];
        for (k, v) in &inc.labels {
            let name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.push((format!("BRANCHGUARD_LABEL_{name}"), v.clone()));
        }
        Some(CommandRequest {
            incident: inc.id,
            step: spec.id.clone(),
            argv: argv.iter().map(|a| a.render(&vars)).collect(),
            env,
            timeout: *timeout,
        })
    }

    /// A command step ended: exit 0 is done; anything else fails and escalates.
    pub fn command_finished(
        &mut self,
        iid: i64,
        step: &str,
        outcome: CommandOutcome,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some((idx, run)) = inc.step_mut(step) else {
            return;
        };
        if !run.running {
            return;
        }
        run.running = false;
        let output = truncate(&outcome.output, 4000);
        let ok = outcome.exit_code == Some(0);
        // Without an exit code, the output's first line says what happened
        // ("timed out after 10m", "could not start …").
        let (code, output) = match outcome.exit_code {
            Some(c) => (format!("exited with {c}"), output),
            None => {
                let (first, rest) = output.split_once('\n').unwrap_or((output.as_str(), ""));
                (first.to_string(), rest.to_string())
            }
        };
        Self::history(
            round,
            iid,
            now,
            "command.finished",
            "branchguard",
            format!("step {step}: {code}\n{output}")
                .trim_end()
                .to_string(),
        );
        round.touched.insert(iid);
        if !run.open() {
            return;
        }
        if ok {
            run.state = StepState::Done;
            run.done_at = Some(now);
            run.by = Some("command".into());
            return;
        }
        run.state = StepState::Failed;
        run.done_at = Some(now);
        let inc = inc.clone();
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let Some(spec) = super::repeat::spec_for(&pb, &inc, idx) else {
            return;
        };
        let spec = spec.as_ref();
        let mut to: Vec<Target> = spec
            .escalate
            .iter()
            .flat_map(|e| e.to.iter().cloned())
            .collect();
        if let Some(ops) = self.ops_target()
            && !to.contains(&ops)
        {
            to.push(ops);
        }
        let sent = self.notify(
            &inc,
            Some(spec),
            &to,
            Msg::new(Ask::Failed, &format!("The command of this step {code}.")),
            round,
            now,
        );
        round.stats.escalation(&inc);
        Self::history(
            round,
            iid,
            now,
            "step.failed",
            "branchguard",
            format!("step {step}: {sent}"),
        );
    }
}

pub(super) fn pending_step(s: &Step) -> StepRun {
    StepRun {
        id: s.id.clone(),
        title: s.title.clone(),
        action: s.action.name().to_string(),
        state: StepState::Pending,
        assignee: s.assignee.as_ref().map(|a| a.to_string()),
        critical: s.critical,
        activated_at: None,
        deadline: None,
        notified_at: None,
        acknowledged_at: None,
        done_at: None,
        response_seconds: None,
        by: None,
        escalations_fired: 0,
        overdue_escalated: false,
        roll_call: BTreeSet::new(),
        confirmed: BTreeSet::new(),
        confirmed_at: BTreeMap::new(),
        running: false,
        closed: false,
        on_duty: None,
        starts_at: None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let end = s.floor_char_boundary(max);
    format!("{}… ({} bytes cut)", &s[..end], s.len() - end)
}
