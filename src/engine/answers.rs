//! People's answers and orders: acknowledge, done, "I am safe", resolve, escalate.

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Action;
use crate::target::Target;

impl Engine {
    /// Acknowledge, complete, or (roll call) confirm safety for a step.
    pub fn step_action(
        &mut self,
        iid: i64,
        step: &str,
        verb: Verb,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let Who { by, note, .. } = who;
        let inc = self
            .live
            .get_mut(&iid)
            .ok_or(ActionError::NoIncident(iid))?;
        Self::link_unused(inc, &who)?;
        let playbook_id = inc.playbook_id.clone();
        let drill = inc.drill;
        // A repeating step is answered occurrence by occurrence.
        if inc
            .playbook
            .as_ref()
            .is_some_and(|pb| pb.steps.iter().any(|s| s.id == step && s.every.is_some()))
        {
            let prefix = format!("{step}#");
            let open: Vec<&str> = inc
                .steps
                .iter()
                .filter(|r| r.id.starts_with(&prefix) && r.open())
                .map(|r| r.id.as_str())
                .collect();
            return Err(ActionError::Invalid(format!(
                "step `{step}` repeats: answer one of its occurrences ({})",
                if open.is_empty() {
                    "none is open".to_string()
                } else {
                    format!("open: {}", open.join(", "))
                }
            )));
        }
        let (_, run) = inc
            .step_mut(step)
            .ok_or_else(|| ActionError::NoStep(iid, step.to_string()))?;
        let actor = who;
        let who = who.by().to_string();
        if !run.open() {
            let why = match run.state {
                _ if run.closed => "was closed when its incident was resolved",
                StepState::Pending => "has not started",
                StepState::Skipped => "was skipped",
                StepState::Failed => "has failed",
                _ => "is already done",
            };
            return Err(ActionError::Conflict(format!("step `{step}` {why}")));
        }
        let what = match verb {
            Verb::Ack => {
                if run.acknowledged_at.is_some() {
                    return Err(ActionError::Conflict(format!(
                        "step `{step}` is already acknowledged"
                    )));
                }
                run.acknowledged_at = Some(now);
                if run.state != StepState::Overdue {
                    run.state = StepState::Acknowledged;
                }
                "step.acknowledged"
            }
            Verb::Done => {
                run.state = StepState::Done;
                run.done_at = Some(now);
                run.running = false;
                "step.done"
            }
            Verb::Safe => {
                if run.roll_call.is_empty() {
                    return Err(ActionError::Invalid(format!(
                        "step `{step}` is not a roll call"
                    )));
                }
                let Some(person) = by else {
                    return Err(ActionError::Invalid(
                        "`by` must name the person who is safe".into(),
                    ));
                };
                if !run.roll_call.contains(person) {
                    return Err(ActionError::Invalid(format!(
                        "`{person}` is not on the roll call of step `{step}`"
                    )));
                }
                if !run.confirmed.insert(person.to_string()) {
                    return Err(ActionError::Conflict(format!(
                        "`{person}` has already confirmed"
                    )));
                }
                run.confirmed_at.insert(person.to_string(), now);
                if run.confirmed.len() == run.roll_call.len() {
                    run.state = StepState::Done;
                    run.done_at = Some(now);
                }
                "person.safe"
            }
        };
        let mut response = None;
        if run.response_seconds.is_none()
            && let Some(n) = run.notified_at
        {
            let secs = (now - n).num_milliseconds() as f64 / 1000.0;
            run.response_seconds = Some(secs);
            response = Some(secs);
        }
        if run.by.is_none() {
            run.by = Some(who.clone());
        }
        let mut detail = format!("step {step}");
        if let Some(r) = response {
            detail.push_str(&format!(", response {}", crate::show::duration(r)));
            if !drill {
                round
                    .stats
                    .responses
                    .push((playbook_id.clone(), step.to_string(), r));
            }
        }
        if let Some(n) = note {
            detail.push_str(&format!(": {n}"));
        }
        if !drill
            && run.state == StepState::Done
            && run.done_at == Some(now)
            && let Some(n) = run.notified_at
        {
            let met = run.deadline.is_none_or(|d| now <= d);
            round.stats.done.push((
                playbook_id.clone(),
                step.to_string(),
                (now - n).num_milliseconds() as f64 / 1000.0,
                met,
            ));
        }
        let done_now = run.state == StepState::Done && verb == Verb::Safe;
        Self::history_of(round, iid, now, what, &actor, detail);
        if done_now {
            Self::history(
                round,
                iid,
                now,
                "step.done",
                "branchguard",
                format!("step {step}: everyone confirmed safe"),
            );
        }
        self.link_used(iid, &actor);
        round.touched.insert(iid);
        Ok(())
    }

    /// Resolves an open incident and starts its follow-up steps.
    pub fn resolve(
        &mut self,
        iid: i64,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let note = who.note;
        let inc = self
            .live
            .get_mut(&iid)
            .ok_or(ActionError::NoIncident(iid))?;
        if inc.status != IncidentStatus::Open {
            return Err(ActionError::Conflict(format!(
                "incident {iid} is already resolved"
            )));
        }
        let Some(pb) = inc.playbook.clone() else {
            return Err(ActionError::NoIncident(iid));
        };
        inc.status = IncidentStatus::Resolved;
        inc.resolved_at = Some(now);
        self.groups.remove(&inc.group_key);
        if !inc.drill {
            round.stats.resolved.push((
                inc.playbook_id.clone(),
                (now - inc.opened_at).num_milliseconds() as f64 / 1000.0,
            ));
        }
        let mut skipped = Vec::new();
        let mut taken = Vec::new();
        let mut withdrawn = Vec::new();
        for idx in 0..inc.steps.len() {
            let Some(spec_idx) = inc.spec_of(idx) else {
                continue;
            };
            let spec = &pb.steps[spec_idx];
            let run = &mut inc.steps[idx];
            if pb.follows_resolution(spec_idx) {
                continue;
            }
            if run.open()
                && let Action::Webhook { channel, .. } = &spec.action
            {
                // Its announcement is still undelivered: stop retrying it.
                withdrawn.push((run.id.clone(), channel.clone()));
            }
            let unfinished = run.state == StepState::Pending || run.open();
            // An acknowledged step stays acknowledged: someone took it, and
            // the record must not read as if it had been skipped.
            if run.close() {
                taken.push(run.id.clone());
            } else if unfinished {
                skipped.push(run.id.clone());
            }
        }
        for step in &taken {
            Self::history_of(
                round,
                iid,
                now,
                "step.closed",
                &who,
                format!("step {step}: incident resolved before done (it stays acknowledged)"),
            );
        }
        for (step, channel) in withdrawn {
            Self::history_of(
                round,
                iid,
                now,
                "notification.withdrawn",
                &who,
                format!(
                    "step {step}: retries of the announcement to channel:{channel} stop: the incident is resolved"
                ),
            );
            round.withdraw.push((iid, step, now));
        }
        let tier = inc.tier;
        Self::history_of(
            round,
            iid,
            now,
            "incident.resolved",
            &who,
            format!(
                "{}{}",
                if skipped.is_empty() {
                    "resolved".to_string()
                } else {
                    format!("resolved; closed unfinished steps: {}", skipped.join(", "))
                },
                note.map(|n| format!(": {n}")).unwrap_or_default()
            ),
        );
        round.touched.insert(iid);
        let follow: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.after_resolved && s.eligible(tier))
            .map(|(i, _)| i)
            .collect();
        let skip: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.after_resolved && !s.eligible(tier))
            .map(|(i, _)| i)
            .collect();
        if let Some(inc) = self.live.get_mut(&iid) {
            for i in skip {
                inc.steps[i].state = StepState::Skipped;
            }
        }
        for idx in follow {
            self.start_step(iid, idx, now, now, round);
        }
        Ok(())
    }

    /// Escalates by hand: the operations centre and the branch head are told.
    pub fn escalate(
        &mut self,
        iid: i64,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let live = self
            .live
            .get_mut(&iid)
            .ok_or(ActionError::NoIncident(iid))?;
        Self::link_unused(live, &who)?;
        let inc = live.clone();
        let why = format!(
            "ESCALATED by {}{}",
            who.by(),
            who.note.map(|n| format!(": {n}")).unwrap_or_default()
        );
        let to: Vec<Target> = self
            .ops_target()
            .into_iter()
            .chain([Target::BranchHead])
            .collect();
        let sent = self.notify(&inc, None, &to, Msg::new(Ask::Escalation, &why), round, now);
        round.stats.escalation(&inc);
        Self::history_of(round, iid, now, "incident.escalated", &who, sent);
        self.link_used(iid, &who);
        round.touched.insert(iid);
        Ok(())
    }

    /// A one-click link works once: a second use is refused and changes nothing.
    fn link_unused(inc: &Incident, who: &Who<'_>) -> Result<(), ActionError> {
        match who.link {
            Some(link) if inc.used_links.contains(link) => Err(ActionError::Conflict(
                "this link has already been used".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Records a link's use, once what it did is decided.
    fn link_used(&mut self, iid: i64, who: &Who<'_>) {
        if let (Some(link), Some(inc)) = (who.link, self.live.get_mut(&iid)) {
            inc.used_links.insert(link.to_string());
        }
    }
}
