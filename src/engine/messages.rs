//! What the engine says: template variables, subjects, email bodies, webhook
//! payloads, and the outbox rows for a list of targets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Step;
use crate::matching;
use crate::target::Target;

impl Engine {
    /// The template variables of an incident (and step).
    pub fn vars(&self, inc: &Incident, step: Option<&Step>) -> BTreeMap<String, String> {
        let cfg = &self.loaded.config;
        let branch = cfg.branches.get(&inc.branch);
        let pb = inc.playbook.as_ref();
        // People get the readable page; machines the API address.
        let link = format!("{}/incidents/{}", cfg.public_url, inc.id);
        let api = format!("{}/api/v1/incidents/{}", cfg.public_url, inc.id);
        let mut v: BTreeMap<String, String> = [
            ("branch", inc.branch.clone()),
            (
                "branch_name",
                branch
                    .map(|b| b.name.clone())
                    .unwrap_or_else(|| inc.branch.clone()),
            ),
            (
                "region",
                branch.and_then(|b| b.region.clone()).unwrap_or_default(),
            ),
            ("playbook", inc.playbook_id.clone()),
            (
                "playbook_name",
                pb.map(|p| p.name.clone()).unwrap_or_default(),
            ),
            ("incident", inc.id.to_string()),
            ("tier", inc.tier.to_string()),
            (
                "tier_name",
                pb.and_then(|p| matching::tier_name(p, inc.tier))
                    .unwrap_or_default()
                    .to_string(),
            ),
            ("kind", inc.kind.clone()),
            ("severity", inc.severity.clone()),
            ("summary", inc.summary.clone().unwrap_or_default()),
            ("drill", inc.drill.to_string()),
            ("links.incident", link.clone()),
            ("links.api", api),
            ("links.ack", link),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(s) = step {
            v.insert("step".into(), s.id.clone());
            v.insert("step_title".into(), s.title.clone());
            if let Some(run) = inc.steps.iter().find(|r| r.id == s.id)
                && let Some(d) = run.deadline
            {
                v.insert(
                    "deadline".into(),
                    crate::show::time(d, cfg.tz_of(&inc.branch)),
                );
            }
        }
        for (k, val) in &inc.labels {
            v.insert(format!("labels.{k}"), val.clone());
        }
        v
    }

    /// A message's subject: `[DRILL] `, what it asks, the branch and the
    /// step (or, without a step, the plan), in at most 78 characters.
    fn branch_name<'s>(&'s self, inc: &'s Incident) -> &'s str {
        self.loaded
            .config
            .branches
            .get(&inc.branch)
            .map_or(inc.branch.as_str(), |b| b.name.as_str())
    }

    pub(super) fn subject(&self, inc: &Incident, step: Option<&Step>, ask: Ask) -> String {
        let branch = self.branch_name(inc);
        let what = match step {
            Some(s) => s.title.clone(),
            None => inc
                .playbook
                .as_ref()
                .map_or_else(|| inc.playbook_id.clone(), |p| p.name.clone()),
        };
        subject_line(inc.drill, ask.word(), branch, &what)
    }

    /// How long the incident's page may be opened from a message: its last
    /// deadline plus seven days (and a week from now at least).
    fn grant_until(inc: &Incident, now: DateTime<Utc>) -> DateTime<Utc> {
        let last = inc
            .steps
            .iter()
            .filter_map(|s| s.deadline)
            .max()
            .unwrap_or(now)
            .max(now);
        last + chrono::Duration::days(7)
    }

    /// Queues messages to targets; returns a description for the history.
    pub(super) fn notify(
        &self,
        inc: &Incident,
        step: Option<&Step>,
        targets: &[Target],
        msg: Msg<'_>,
        round: &mut Round,
        now: DateTime<Utc>,
    ) -> String {
        let why = msg.text;
        let cfg = &self.loaded.config;
        let subject = match msg.about {
            Some(about) => subject_line(inc.drill, msg.ask.word(), self.branch_name(inc), about),
            None => self.subject(inc, step, msg.ask),
        };
        let body = self.body(inc, step, why, now);
        // Escalations, overdue notices, roll calls and critical steps go at
        // once, alone; the rest may wait in a digest window.
        let urgent = msg.ask.urgent() || step.is_some_and(|s| s.critical);
        let grant_until = Some(Self::grant_until(inc, now));
        let margin = chrono::Duration::from_std(cfg.delivery.link_margin)
            .unwrap_or(chrono::Duration::days(1));
        let link_until = step
            .and_then(|s| inc.steps.iter().find(|r| r.id == s.id))
            .and_then(|r| r.deadline)
            .map(|d| d + margin);
        let mut sent = Vec::new();
        // Roster notes: who was on duty, and roles nobody held.
        let mut on_duty: Vec<Arc<crate::config::Resolved>> = Vec::new();
        let mut gaps: Vec<String> = Vec::new();
        let mut targets: Vec<Target> = targets.to_vec();
        if targets.is_empty() {
            // Nobody named: the operations centre owns it.
            match self.ops_target() {
                Some(ops) => targets.push(ops),
                None => sent.push("nobody (no operations-centre channel is configured)".into()),
            }
        }
        for t in &targets {
            match t {
                Target::Channel(c) => {
                    if !cfg.webhooks.contains_key(c) {
                        sent.push(format!("{t} (no such channel)"));
                        continue;
                    }
                    round.outbox.push(Notification {
                        incident: inc.id,
                        step: step.map(|s| s.id.clone()),
                        channel: ChannelKind::Webhook,
                        drill: inc.drill,
                        target: t.to_string(),
                        recipient: c.clone(),
                        person: None,
                        subject: subject.clone(),
                        body: body.clone(),
                        created_at: now,
                        links: Vec::new(),
                        link_until: None,
                        announcement: false,
                        urgent,
                        grant_until: None,
                        payload: Some(self.webhook_payload(
                            inc,
                            step,
                            why,
                            (msg.ask, urgent),
                            false,
                        )),
                    });
                    sent.push(t.to_string());
                }
                Target::Contact(id) => {
                    // Someone outside the staff: no one-click links, no
                    // page of the incident; the message itself.
                    let Some(c) = cfg.contacts.get(id) else {
                        sent.push(format!("{t} (no such contact)"));
                        continue;
                    };
                    if !c.serves(&inc.branch) {
                        sent.push(format!("{} (does not serve {})", c.name, inc.branch));
                        continue;
                    }
                    // The words alone, signed by the branch: the internal
                    // block (incident number, step, owner, the address of
                    // the incident's page) is the bank's, not theirs.
                    let outside = format!("{why}\n\n— {}\n", self.branch_name(inc));
                    let (channel, recipient, payload) = match (&c.email, &c.webhook) {
                        (Some(email), _) => (ChannelKind::Email, email.clone(), None),
                        (None, Some(ch)) if cfg.webhooks.contains_key(ch) => (
                            ChannelKind::Webhook,
                            ch.clone(),
                            Some(self.webhook_payload(inc, step, why, (msg.ask, urgent), true)),
                        ),
                        _ => {
                            sent.push(format!("{} (no address)", c.name));
                            continue;
                        }
                    };
                    round.outbox.push(Notification {
                        incident: inc.id,
                        step: step.map(|s| s.id.clone()),
                        channel,
                        drill: inc.drill,
                        target: t.to_string(),
                        recipient: recipient.clone(),
                        person: None,
                        subject: subject.clone(),
                        body: outside,
                        created_at: now,
                        links: Vec::new(),
                        link_until: None,
                        announcement: false,
                        urgent,
                        grant_until: None,
                        payload,
                    });
                    sent.push(format!("{} <{recipient}>", c.name));
                }
                _ => {
                    // Resolved now, when the row is written: an escalation
                    // after a hand-over reaches the incoming person.
                    let (people, duty) = self.people_at(t, &inc.branch, now);
                    if people.is_empty() {
                        match &duty {
                            Some(d) => {
                                sent.push(format!("{t} ({})", d.note));
                                gaps.push(format!("{t} at {}: {}", inc.branch, d.note));
                            }
                            None => sent.push(format!("{t} (nobody at {})", inc.branch)),
                        }
                    } else if let Some(d) = duty
                        && !on_duty.iter().any(|x| Arc::ptr_eq(x, &d))
                    {
                        on_duty.push(d);
                    }
                    for p in people {
                        match &p.email {
                            Some(email) => {
                                round.outbox.push(Notification {
                                    incident: inc.id,
                                    step: step.map(|s| s.id.clone()),
                                    channel: ChannelKind::Email,
                                    drill: inc.drill,
                                    target: t.to_string(),
                                    recipient: email.clone(),
                                    person: Some(p.id.clone()),
                                    subject: subject.clone(),
                                    body: body.clone(),
                                    created_at: now,
                                    links: if step.is_some() {
                                        msg.links.to_vec()
                                    } else {
                                        Vec::new()
                                    },
                                    link_until,
                                    payload: None,
                                    announcement: false,
                                    urgent,
                                    grant_until,
                                });
                                sent.push(format!("{} <{email}>", p.name));
                            }
                            None => sent.push(format!("{} (no email address)", p.name)),
                        }
                    }
                }
            }
        }
        // A role nobody holds now (a gap in its roster): the operations
        // centre is told, so the message is not lost in the hole.
        if !gaps.is_empty()
            && let Some(ops) = self.ops_target()
            && !targets.contains(&ops)
        {
            let text = format!("{why} Nobody is on duty for {}.", gaps.join("; "));
            let told = self.notify(inc, step, &[ops], Msg { text: &text, ..msg }, round, now);
            sent.push(format!("and, for the gap, {told}"));
        }
        let duty = if on_duty.is_empty() {
            String::new()
        } else {
            let notes: Vec<&str> = on_duty.iter().map(|d| d.note.as_str()).collect();
            format!(" ({})", notes.join("; "))
        };
        // The reason after the recipients: it is a sentence of its own.
        match msg.ask {
            Ask::Action | Ask::Notice | Ask::RollCall => {
                format!("{} to {}{duty}", msg.ask.sent(), sent.join(", "))
            }
            _ => format!("{} to {}{duty}: {why}", msg.ask.sent(), sent.join(", ")),
        }
    }

    /// The JSON posted to webhook channels: schema `branchguard.notification.v1`,
    /// documented in docs/WEBHOOKS.md. The outbox id, `subject` and `text` are
    /// added when it is sent, from the row's own columns: the message is
    /// stored once. A contact outside the bank (`outside`) gets no links into
    /// the bank's pages, as by mail.
    pub(super) fn webhook_payload(
        &self,
        inc: &Incident,
        step: Option<&Step>,
        kind: &str,
        ask: (Ask, bool),
        outside: bool,
    ) -> String {
        let vars = self.vars(inc, step);
        let step_json = step.map(|s| {
            let run = inc.steps.iter().find(|r| r.id == s.id);
            serde_json::json!({
                "id": s.id,
                "title": s.title,
                "assignee": s.assignee.as_ref().map(|a| a.to_string()),
                "state": run.map(|r| r.state),
                "deadline": run.and_then(|r| r.deadline),
            })
        });
        let mut p = serde_json::json!({
            "schema": "branchguard.notification.v1",
            "kind": kind,
            "ask": ask.0.word(),
            "urgent": ask.1,
            "drill": inc.drill,
            "incident": {
                "id": inc.id,
                "playbook": inc.playbook_id,
                "playbook_name": vars.get("playbook_name"),
                "branch": inc.branch,
                "branch_name": vars.get("branch_name"),
                "tier": inc.tier,
                "tier_name": vars.get("tier_name"),
                "status": inc.status,
                "opened_at": inc.opened_at,
            },
            "step": step_json,
            "event": { "kind": inc.kind, "severity": inc.severity, "summary": inc.summary, "labels": inc.labels },
            "links": { "incident": vars.get("links.incident"), "api": vars.get("links.api") },
        });
        if outside {
            for_outside(&mut p);
        }
        p.to_string()
    }

    pub(super) fn body(
        &self,
        inc: &Incident,
        step: Option<&Step>,
        why: &str,
        now: DateTime<Utc>,
    ) -> String {
        let cfg = &self.loaded.config;
        let vars = self.vars(inc, step);
        let mut b = String::new();
        if inc.drill {
            b.push_str("[DRILL] This is a drill. Respond exactly as in a real incident.\n\n");
        }
        let opening = why;
        b.push_str(&format!("{opening}\n\n"));
        b.push_str(&format!(
            "Incident:  #{} {}\n",
            inc.id, vars["playbook_name"]
        ));
        b.push_str(&format!(
            "Branch:    {} ({})\n",
            vars["branch_name"], inc.branch
        ));
        let tier = match vars.get("tier_name").filter(|n| !n.is_empty()) {
            Some(n) => format!("{} ({n})", inc.tier),
            None => inc.tier.to_string(),
        };
        b.push_str(&format!("Tier:      {tier}\n"));
        b.push_str(&format!(
            "Event:     {} ({}){}\n",
            inc.kind,
            inc.severity,
            inc.summary
                .as_ref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ));
        if let Some(s) = step {
            b.push_str(&format!("Step:      {} ({})\n", s.title, s.id));
            if let Some(a) = &s.assignee {
                // A rostered role names the one person on duty, not all who hold it.
                let owner = match self.people_at(a, &inc.branch, now) {
                    (people, Some(duty)) => {
                        let who = match people.first() {
                            Some(p) => format!("{} (on duty)", p.name),
                            None => format!("nobody ({})", duty.note),
                        };
                        cfg.describe_on_duty(a, &inc.branch, &who)
                    }
                    _ => cfg.describe(a, &inc.branch),
                };
                b.push_str(&format!("Owner:     {owner}\n"));
            }
            if let Some(d) = vars.get("deadline") {
                b.push_str(&format!("Deadline:  {d}\n"));
            }
            if s.critical {
                b.push_str("Critical:  yes (a drill that misses it fails)\n");
            }
        }
        b.push_str(&format!("\nIncident:  {}\n", vars["links.incident"]));
        b
    }
}

/// A webhook payload for a contact outside the bank: the message and the
/// branch it is from, as by mail. The incident's number, its step and owner,
/// the event's labels and the links into the bank's pages are the bank's,
/// not theirs: those keys are null (the schema's keys stay).
pub fn for_outside(p: &mut serde_json::Value) {
    let branch = serde_json::json!({
        "branch": p["incident"]["branch"].take(),
        "branch_name": p["incident"]["branch_name"].take(),
    });
    p["incident"] = branch;
    for k in ["step", "event", "links"] {
        p[k] = serde_json::Value::Null;
    }
}
