//! The engine: incidents, their steps and their timers.
//!
//! It takes inputs (events, people's actions, command results, the passing of
//! time) together with the current time, changes its in-memory state of live
//! incidents, and records what it decided in a [`Round`]: the incidents it
//! touched, history lines, notifications for the outbox, commands to start. The
//! caller writes a round to the store in one transaction and only then answers
//! anyone, so nothing decided is lost and nothing is done twice.
//!
//! **Invariant:** the engine does no I/O and never reads the clock: time is an
//! argument, which is how a 15-minute deadline is tested in microseconds.

pub mod incident;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Action, Loaded, Playbook, ResolveMode, Step};
use crate::event::{Event, Status};
use crate::matching::{self, Match};
use crate::target::Target;
pub use incident::*;

/// How far past its moment a timer may fire before it is called late in the
/// history: well above the loop's jitter (milliseconds), well below a restart.
const LATE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// An accepted event with the id the engine gave it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub event: Event,
    pub matched: bool,
    pub incidents: Vec<i64>,
}

/// A command step to start (SPEC §5): argv, `BRANCHGUARD_*` environment, timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub incident: i64,
    pub step: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What a finished command reported.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The exit code, or `None` when it was killed, timed out or could not start.
    pub exit_code: Option<i32>,
    pub output: String,
}

/// Everything one round of work decided, to be stored in one transaction.
#[derive(Debug, Default)]
pub struct Round {
    pub events: Vec<StoredEvent>,
    pub incidents: Vec<Incident>,
    pub playbooks: Vec<Arc<Playbook>>,
    pub history: Vec<HistoryEntry>,
    pub outbox: Vec<Notification>,
    pub commands: Vec<CommandRequest>,
    /// Outcomes of delivery attempts, written to the outbox rows.
    pub deliveries: Vec<DeliveryUpdate>,
    pub stats: RoundStats,
    touched: BTreeSet<i64>,
}

/// The outcome of one attempt to deliver an outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
    pub id: i64,
    pub attempts: i64,
    pub delivered_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Counts for the metrics module.
#[derive(Debug, Default, Clone)]
pub struct RoundStats {
    pub unmatched: u64,
    pub opened: Vec<(String, bool)>,
    pub escalations: Vec<String>,
    pub overdue: Vec<(String, String)>,
    pub responses: Vec<(String, String, f64)>,
    pub resolved: Vec<(String, f64)>,
    /// (channel kind, outcome) of each delivery attempt.
    pub notifications: Vec<(String, &'static str)>,
    /// An incident opened, resolved or changed tier: the open-incident gauge is stale.
    pub open_set_changed: bool,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.touched.is_empty()
            && self.history.is_empty()
            && self.outbox.is_empty()
            && self.deliveries.is_empty()
    }
}

/// Who answered a step, and what they said.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub by: Option<&'a str>,
    pub note: Option<&'a str>,
}

impl<'a> Who<'a> {
    pub fn new(by: Option<&'a str>, note: Option<&'a str>) -> Who<'a> {
        Who { by, note }
    }
}

/// The ids an ingested batch was given: per event, its id and its incidents.
pub type Ingested = Vec<(i64, Vec<i64>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ack,
    Done,
    Safe,
}

/// Why a person's action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no open incident {0}")]
    NoIncident(i64),
    #[error("incident {0} has no step `{1}`")]
    NoStep(i64, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a message says, and which one-click link (`ack` or `safe`) each person gets.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub text: &'a str,
    pub link: Option<&'static str>,
}

impl<'a> Msg<'a> {
    pub fn text(text: &'a str) -> Msg<'a> {
        Msg { text, link: None }
    }

    pub fn link(text: &'a str, link: &'static str) -> Msg<'a> {
        Msg {
            text,
            link: Some(link),
        }
    }
}

/// The engine's state: the live incidents and the configuration they run under.
pub struct Engine {
    loaded: Loaded,
    live: BTreeMap<i64, Incident>,
    /// Open incidents by group key: where a new event of the group attaches.
    groups: HashMap<String, i64>,
    next_incident: i64,
    next_event: i64,
    /// Each live incident's next timer, ordered: the engine thread sleeps until
    /// the first, and a tick visits only incidents that are due.
    timers: BTreeSet<(DateTime<Utc>, i64)>,
    timer_of: HashMap<i64, DateTime<Utc>>,
}

fn fmt_time(t: DateTime<Utc>, loaded: &Loaded) -> String {
    fmt_time_in(t, loaded.config.calendar.timezone)
}

fn fmt_time_in(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

impl Engine {
    /// Builds the engine from what the store holds. Commands that were running
    /// when the daemon stopped are started again (at least once, never zero times).
    pub fn new(
        loaded: Loaded,
        live: Vec<Incident>,
        next_incident: i64,
        next_event: i64,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Engine {
        let mut e = Engine {
            loaded,
            live: BTreeMap::new(),
            groups: HashMap::new(),
            next_incident,
            next_event,
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
        };
        for inc in live {
            if inc.status == IncidentStatus::Open {
                e.groups.insert(inc.group_key.clone(), inc.id);
            }
            let id = inc.id;
            e.live.insert(id, inc);
            e.reschedule(id);
        }
        let ids: Vec<i64> = e.live.keys().copied().collect();
        for id in ids {
            let running: Vec<usize> = e.live[&id]
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.running)
                .map(|(i, _)| i)
                .collect();
            for idx in running {
                if let Some(inc) = e.live.get(&id) {
                    let step_id = inc.steps[idx].id.clone();
                    round.history.push(HistoryEntry {
                        incident: Some(id),
                        at: now,
                        what: "command.restarted".into(),
                        by: "branchguard".into(),
                        detail: format!(
                            "step {step_id}: the daemon stopped while it ran; starting it again"
                        ),
                    });
                    if let Some(req) = e.command_request(inc, idx) {
                        round.commands.push(req);
                    }
                }
            }
        }
        e
    }

    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// A new configuration: new incidents use it, running ones keep their playbook.
    pub fn reload(&mut self, loaded: Loaded) {
        self.loaded = loaded;
    }

    pub fn live(&self) -> impl Iterator<Item = &Incident> {
        self.live.values()
    }

    pub fn live_incident(&self, id: i64) -> Option<&Incident> {
        self.live.get(&id)
    }

    /// The open incident of a group, if any (for `match` and the API).
    pub fn open_for_group(&self, key: &str) -> Option<i64> {
        self.groups.get(key).copied()
    }

    /// Copies the touched incidents into the round, ready to be stored.
    pub fn finish(&mut self, round: &mut Round) {
        let touched = std::mem::take(&mut round.touched);
        for id in touched {
            if let Some(inc) = self.live.get(&id) {
                round.incidents.push(inc.clone());
                if !inc.is_live() {
                    self.live.remove(&id);
                }
            }
            self.reschedule(id);
        }
    }

    /// Puts an incident's next timer in the queue (or takes it out).
    fn reschedule(&mut self, id: i64) {
        if let Some(old) = self.timer_of.remove(&id) {
            self.timers.remove(&(old, id));
        }
        if let Some(due) = self.live.get(&id).and_then(|inc| self.incident_due(inc)) {
            self.timers.insert((due, id));
            self.timer_of.insert(id, due);
        }
    }

    /// The earliest escalation or deadline of an incident's open steps.
    fn incident_due(&self, inc: &Incident) -> Option<DateTime<Utc>> {
        let cal = &self.loaded.config.calendar;
        let pb = inc.playbook.as_ref()?;
        let mut best: Option<DateTime<Utc>> = None;
        for (run, spec) in inc.steps.iter().zip(&pb.steps) {
            let (Some(start), true) = (run.activated_at, run.state.is_open()) else {
                continue;
            };
            let esc = spec
                .escalate
                .get(run.escalations_fired)
                .map(|e| e.after.after(start, cal));
            let deadline = run.deadline.filter(|_| !run.overdue_escalated);
            for c in esc.into_iter().chain(deadline) {
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }
        best
    }

    fn history(
        round: &mut Round,
        incident: i64,
        at: DateTime<Utc>,
        what: &str,
        by: &str,
        detail: String,
    ) {
        round.history.push(HistoryEntry {
            incident: Some(incident),
            at,
            what: what.to_string(),
            by: by.to_string(),
            detail,
        });
    }

    // ---- events ----

    /// Stores and matches events. Returns, per event, its id and the incidents it opened or joined.
    pub fn ingest(
        &mut self,
        events: Vec<(Event, DateTime<Utc>)>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Ingested {
        let mut out = Vec::with_capacity(events.len());
        for (ev, received_at) in events {
            let id = self.next_event;
            self.next_event += 1;
            let matches = matching::match_event(&self.loaded.playbooks, &ev);
            let mut incidents = Vec::new();
            for m in &matches {
                if let Some(iid) = self.apply_match(id, &ev, m, now, round) {
                    incidents.push(iid);
                }
            }
            if matches.is_empty() {
                round.stats.unmatched += 1;
            }
            out.push((id, incidents.clone()));
            round.events.push(StoredEvent {
                id,
                received_at,
                event: ev,
                matched: !matches.is_empty(),
                incidents,
            });
        }
        out
    }

    fn apply_match(
        &mut self,
        event_id: i64,
        ev: &Event,
        m: &Match,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Option<i64> {
        let existing = self.groups.get(&m.group_key).copied();
        match (ev.status, existing) {
            (Status::Resolved, None) => None,
            (Status::Resolved, Some(iid)) => {
                let auto = self
                    .live
                    .get(&iid)
                    .and_then(|i| i.playbook.as_ref())
                    .is_some_and(|p| p.resolve == ResolveMode::Auto);
                self.attach(iid, event_id, ev, now, round);
                if auto {
                    let _ = self.resolve(iid, "event", now, round);
                }
                Some(iid)
            }
            (Status::Firing, Some(iid)) => {
                self.attach(iid, event_id, ev, now, round);
                Some(iid)
            }
            (Status::Firing, None) => Some(self.open(m, ev, false, now, round)),
        }
    }

    fn attach(
        &mut self,
        iid: i64,
        event_id: i64,
        ev: &Event,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        inc.event_count += 1;
        round.touched.insert(iid);
        Self::history(
            round,
            iid,
            now,
            "event.attached",
            "event",
            format!(
                "event {event_id} ({} {}) joined",
                ev.kind,
                ev.status.as_str()
            ),
        );
        if ev.status == Status::Resolved {
            return;
        }
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let tier = matching::tier_of(&pb, ev);
        if tier > inc.tier {
            let old = inc.tier;
            inc.tier = tier;
            round.stats.open_set_changed = true;
            Self::history(
                round,
                iid,
                now,
                "tier.raised",
                "event",
                format!("tier {old} → {tier}"),
            );
            let newly: Vec<usize> = pb
                .steps
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    !s.after_resolved
                        && s.eligible(tier)
                        && inc.steps[*i].state == StepState::Pending
                        && inc.status == IncidentStatus::Open
                })
                .map(|(i, _)| i)
                .collect();
            for idx in newly {
                self.activate(iid, idx, now, round);
            }
        }
    }

    /// Opens an incident for a match (also used by drills, with `drill = true`).
    pub fn open(
        &mut self,
        m: &Match,
        ev: &Event,
        drill: bool,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> i64 {
        let iid = self.next_incident;
        self.next_incident += 1;
        let pb = Arc::clone(&m.playbook);
        let group_key = if drill {
            format!("drill:{iid}:{}", m.group_key)
        } else {
            m.group_key.clone()
        };
        let inc = Incident {
            id: iid,
            playbook_id: pb.id.clone(),
            playbook_version: pb.version.clone(),
            playbook: Some(Arc::clone(&pb)),
            branch: ev.branch.clone(),
            tier: m.tier,
            status: IncidentStatus::Open,
            drill,
            group: m.group.clone(),
            group_key: group_key.clone(),
            opened_at: now,
            resolved_at: None,
            event_count: 1,
            kind: ev.kind.clone(),
            severity: ev.severity.as_str().to_string(),
            summary: ev.summary.clone(),
            labels: ev.labels.clone(),
            steps: pb.steps.iter().map(pending_step).collect(),
        };
        round.playbooks.push(Arc::clone(&pb));
        round.stats.opened.push((pb.id.clone(), drill));
        round.stats.open_set_changed = true;
        Self::history(
            round,
            iid,
            now,
            "incident.opened",
            "event",
            format!(
                "playbook {} (version {}), tier {}, group {}",
                pb.id,
                pb.version,
                m.tier,
                m.group
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        self.groups.insert(group_key, iid);
        self.live.insert(iid, inc);
        round.touched.insert(iid);
        let active: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.after_resolved && s.eligible(m.tier))
            .map(|(i, _)| i)
            .collect();
        for idx in active {
            self.activate(iid, idx, now, round);
        }
        iid
    }

    // ---- steps ----

    fn activate(&mut self, iid: i64, idx: usize, now: DateTime<Utc>, round: &mut Round) {
        let cal = self.loaded.config.calendar.clone();
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        let spec = &pb.steps[idx];
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
            .map(|d| fmt_time(d, &self.loaded))
            .unwrap_or_default();
        match &spec.action {
            Action::Task => {
                let targets: Vec<Target> = spec.assignee.iter().cloned().collect();
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    &targets,
                    Msg::link("assigned", "ack"),
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
            Action::Notify(targets) => {
                let sent = self.notify(&inc, Some(spec), targets, Msg::text("notice"), round, now);
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
            Action::Webhook { channel, body } => {
                let vars = self.vars(&inc, Some(spec));
                let text = body
                    .as_ref()
                    .map(|b| b.render(&vars))
                    .unwrap_or_else(|| spec.title.clone());
                let subject = self.subject(&inc, spec);
                let text = if inc.drill {
                    format!("[DRILL] {text}")
                } else {
                    text
                };
                round.outbox.push(Notification {
                    incident: iid,
                    step: Some(spec.id.clone()),
                    channel: "webhook".into(),
                    target: format!("channel:{channel}"),
                    recipient: channel.clone(),
                    person: None,
                    payload: Some(self.webhook_payload(
                        &inc,
                        Some(spec),
                        "announcement",
                        &subject,
                        &text,
                    )),
                    subject,
                    body: text,
                    created_at: now,
                    link: None,
                });
                Self::history(
                    round,
                    iid,
                    now,
                    "step.done",
                    "branchguard",
                    format!("step {}: webhook to channel:{channel} queued", spec.id),
                );
                self.set_done(iid, idx, now, "branchguard");
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
                    .loaded
                    .config
                    .people_for(target, &inc.branch)
                    .into_iter()
                    .map(|p| p.id.clone())
                    .collect();
                let sent = self.notify(
                    &inc,
                    Some(spec),
                    std::slice::from_ref(target),
                    Msg::link("roll call: confirm you are safe", "safe"),
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
    fn missing_names(&self, inc: &Incident, idx: usize) -> Vec<String> {
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

    fn set_done(&mut self, iid: i64, idx: usize, now: DateTime<Utc>, by: &str) {
        if let Some(inc) = self.live.get_mut(&iid) {
            let run = &mut inc.steps[idx];
            run.state = StepState::Done;
            run.done_at = Some(now);
            run.by = Some(by.to_string());
        }
    }

    fn command_request(&self, inc: &Incident, idx: usize) -> Option<CommandRequest> {
        let pb = inc.playbook.as_ref()?;
        let spec = &pb.steps[idx];
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

    /// The template variables of an incident (and step).
    pub fn vars(&self, inc: &Incident, step: Option<&Step>) -> BTreeMap<String, String> {
        let cfg = &self.loaded.config;
        let branch = cfg.branches.get(&inc.branch);
        let pb = inc.playbook.as_ref();
        let link = format!("{}/api/v1/incidents/{}", cfg.public_url, inc.id);
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
                v.insert("deadline".into(), fmt_time_in(d, cfg.tz_of(&inc.branch)));
            }
        }
        for (k, val) in &inc.labels {
            v.insert(format!("labels.{k}"), val.clone());
        }
        v
    }

    fn subject(&self, inc: &Incident, step: &Step) -> String {
        let drill = if inc.drill { "[DRILL] " } else { "" };
        let branch = self
            .loaded
            .config
            .branches
            .get(&inc.branch)
            .map_or(inc.branch.as_str(), |b| b.name.as_str());
        format!("{drill}[{}] {branch}: {}", inc.playbook_id, step.title)
    }

    /// Queues messages to targets; returns a description for the history.
    fn notify(
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
        let drill = if inc.drill { "[DRILL] " } else { "" };
        let branch_name = cfg
            .branches
            .get(&inc.branch)
            .map_or(inc.branch.as_str(), |b| b.name.as_str());
        let subject = match step {
            Some(s) => format!("{} ({why})", self.subject(inc, s)),
            None => format!("{drill}[{}] {branch_name}: {why}", inc.playbook_id),
        };
        let body = self.body(inc, step, why);
        let mut sent = Vec::new();
        let mut targets: Vec<Target> = targets.to_vec();
        if targets.is_empty() {
            // Nobody named: the operations centre owns it.
            targets.push(Target::Channel("ops-centre".into()));
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
                        channel: "webhook".into(),
                        target: t.to_string(),
                        recipient: c.clone(),
                        person: None,
                        subject: subject.clone(),
                        body: body.clone(),
                        created_at: now,
                        link: None,
                        payload: Some(self.webhook_payload(inc, step, why, &subject, &body)),
                    });
                    sent.push(t.to_string());
                }
                _ => {
                    let people = cfg.people_for(t, &inc.branch);
                    if people.is_empty() {
                        sent.push(format!("{t} (nobody at {})", inc.branch));
                    }
                    for p in people {
                        match &p.email {
                            Some(email) => {
                                round.outbox.push(Notification {
                                    incident: inc.id,
                                    step: step.map(|s| s.id.clone()),
                                    channel: "email".into(),
                                    target: t.to_string(),
                                    recipient: email.clone(),
                                    person: Some(p.id.clone()),
                                    subject: subject.clone(),
                                    body: body.clone(),
                                    created_at: now,
                                    link: step.and(msg.link).map(str::to_string),
                                    payload: None,
                                });
                                sent.push(format!("{} <{email}>", p.name));
                            }
                            None => sent.push(format!("{} (no email address)", p.name)),
                        }
                    }
                }
            }
        }
        format!("{why} to {}", sent.join(", "))
    }

    /// The JSON posted to webhook channels: schema `branchguard.notification.v1`,
    /// documented in docs/WEBHOOKS.md. The outbox id is added when it is sent.
    fn webhook_payload(
        &self,
        inc: &Incident,
        step: Option<&Step>,
        kind: &str,
        subject: &str,
        text: &str,
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
        serde_json::json!({
            "schema": "branchguard.notification.v1",
            "kind": kind,
            "drill": inc.drill,
            "subject": subject,
            "text": text,
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
            "links": { "incident": vars.get("links.incident") },
        })
        .to_string()
    }

    fn body(&self, inc: &Incident, step: Option<&Step>, why: &str) -> String {
        let cfg = &self.loaded.config;
        let vars = self.vars(inc, step);
        let mut b = String::new();
        if inc.drill {
            b.push_str("[DRILL] This is a drill. Respond exactly as in a real incident.\n\n");
        }
        let opening = match why {
            "assigned" => {
                "You are assigned this step: acknowledge it now, then mark it done when it is."
            }
            "notice" => "For your information.",
            other => other,
        };
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
                let names: Vec<String> = cfg
                    .people_for(a, &inc.branch)
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                b.push_str(&format!(
                    "Owner:     {a}{}\n",
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", names.join(", "))
                    }
                ));
            }
            if let Some(d) = vars.get("deadline") {
                b.push_str(&format!("Deadline:  {d}\n"));
            }
        }
        b.push_str(&format!("\nIncident:  {}\n", vars["links.incident"]));
        b
    }

    // ---- timers ----

    /// The next moment at which a timer is due, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires every timer due at `now`: escalations, then overdue marking.
    pub fn tick(&mut self, now: DateTime<Utc>, round: &mut Round) {
        let cal = self.loaded.config.calendar.clone();
        // Incidents changed earlier in this round have not been rescheduled yet.
        for id in round.touched.clone() {
            self.reschedule(id);
        }
        let ids: Vec<i64> = self
            .timers
            .range(..=(now, i64::MAX))
            .map(|(_, id)| *id)
            .collect();
        for iid in ids {
            let Some(inc) = self.live.get(&iid) else {
                continue;
            };
            let Some(pb) = inc.playbook.clone() else {
                continue;
            };
            for idx in 0..pb.steps.len() {
                let spec = &pb.steps[idx];
                while let Some(inc) = self.live.get(&iid) {
                    let run = &inc.steps[idx];
                    let (Some(start), true) = (run.activated_at, run.state.is_open()) else {
                        break;
                    };
                    let Some(e) = spec.escalate.get(run.escalations_fired) else {
                        break;
                    };
                    let due = e.after.after(start, &cal);
                    if due > now {
                        break;
                    }
                    let inc = inc.clone();
                    let late = late_note(due, now, &self.loaded);
                    let mut why = format!("ESCALATION: not done {} after start", e.after);
                    let missing = self.missing_names(&inc, idx);
                    if !missing.is_empty() {
                        why.push_str(&format!("; not yet confirmed safe: {}", missing.join(", ")));
                    }
                    let sent = self.notify(
                        &inc,
                        Some(spec),
                        &e.to,
                        Msg {
                            text: &why,
                            link: matches!(spec.action, Action::Task).then_some("ack"),
                        },
                        round,
                        now,
                    );
                    Self::history(
                        round,
                        iid,
                        now,
                        "step.escalated",
                        "branchguard",
                        format!("step {}: {sent}{late}", spec.id),
                    );
                    round.stats.escalations.push(inc.playbook_id.clone());
                    if let Some(inc) = self.live.get_mut(&iid) {
                        inc.steps[idx].escalations_fired += 1;
                    }
                    round.touched.insert(iid);
                }
                let Some(inc) = self.live.get(&iid) else {
                    continue;
                };
                let run = &inc.steps[idx];
                let Some(deadline) = run.deadline else {
                    continue;
                };
                if run.state.is_open() && !run.overdue_escalated && deadline <= now {
                    let inc = inc.clone();
                    let late = late_note(deadline, now, &self.loaded);
                    let ops = [Target::Channel("ops-centre".into())];
                    let sent = self.notify(
                        &inc,
                        Some(spec),
                        &ops,
                        Msg {
                            text: "OVERDUE: the deadline has passed",
                            link: matches!(spec.action, Action::Task).then_some("ack"),
                        },
                        round,
                        now,
                    );
                    Self::history(
                        round,
                        iid,
                        now,
                        "step.overdue",
                        "branchguard",
                        format!(
                            "step {}: deadline {} passed; {sent}{late}",
                            spec.id,
                            fmt_time(deadline, &self.loaded)
                        ),
                    );
                    round
                        .stats
                        .overdue
                        .push((inc.playbook_id.clone(), spec.id.clone()));
                    round.stats.escalations.push(inc.playbook_id.clone());
                    if let Some(inc) = self.live.get_mut(&iid) {
                        inc.steps[idx].overdue_escalated = true;
                        inc.steps[idx].state = StepState::Overdue;
                    }
                    round.touched.insert(iid);
                }
            }
            self.reschedule(iid);
        }
    }

    // ---- people's actions ----

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
        let Who { by, note } = who;
        let inc = self
            .live
            .get_mut(&iid)
            .ok_or(ActionError::NoIncident(iid))?;
        let playbook_id = inc.playbook_id.clone();
        let (_, run) = inc
            .step_mut(step)
            .ok_or_else(|| ActionError::NoStep(iid, step.to_string()))?;
        let who = by.unwrap_or("anonymous").to_string();
        if !run.state.is_open() {
            let why = match run.state {
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
            detail.push_str(&format!(", response {r:.1}s"));
            round
                .stats
                .responses
                .push((playbook_id, step.to_string(), r));
        }
        if let Some(n) = note {
            detail.push_str(&format!(": {n}"));
        }
        let done_now = run.state == StepState::Done && verb == Verb::Safe;
        Self::history(round, iid, now, what, &who, detail);
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
        round.touched.insert(iid);
        Ok(())
    }

    /// Resolves an open incident and starts its follow-up steps.
    pub fn resolve(
        &mut self,
        iid: i64,
        by: &str,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
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
        round.stats.open_set_changed = true;
        round.stats.resolved.push((
            inc.playbook_id.clone(),
            (now - inc.opened_at).num_milliseconds() as f64 / 1000.0,
        ));
        let mut skipped = Vec::new();
        for (run, spec) in inc.steps.iter_mut().zip(&pb.steps) {
            if spec.after_resolved {
                continue;
            }
            if run.state == StepState::Pending || run.state.is_open() {
                run.state = StepState::Skipped;
                run.running = false;
                skipped.push(run.id.clone());
            }
        }
        let tier = inc.tier;
        Self::history(
            round,
            iid,
            now,
            "incident.resolved",
            by,
            if skipped.is_empty() {
                "resolved".into()
            } else {
                format!("resolved; closed unfinished steps: {}", skipped.join(", "))
            },
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
            self.activate(iid, idx, now, round);
        }
        Ok(())
    }

    /// Escalates by hand: the operations centre and the branch head are told.
    pub fn escalate(
        &mut self,
        iid: i64,
        by: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let inc = self
            .live
            .get(&iid)
            .ok_or(ActionError::NoIncident(iid))?
            .clone();
        let why = format!(
            "ESCALATED by {by}{}",
            note.map(|n| format!(": {n}")).unwrap_or_default()
        );
        let sent = self.notify(
            &inc,
            None,
            &[Target::Channel("ops-centre".into()), Target::BranchHead],
            Msg::text(&why),
            round,
            now,
        );
        round.stats.escalations.push(inc.playbook_id.clone());
        Self::history(round, iid, now, "incident.escalated", by, sent);
        round.touched.insert(iid);
        Ok(())
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
        let code = outcome.exit_code.map_or(
            "none (killed, timed out or could not start)".to_string(),
            |c| c.to_string(),
        );
        Self::history(
            round,
            iid,
            now,
            "command.finished",
            "branchguard",
            format!("step {step}: exit {code}\n{output}"),
        );
        round.touched.insert(iid);
        if !run.state.is_open() {
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
        let spec = &pb.steps[idx];
        let mut to: Vec<Target> = spec
            .escalate
            .iter()
            .flat_map(|e| e.to.iter().cloned())
            .collect();
        let ops = Target::Channel("ops-centre".into());
        if !to.contains(&ops) {
            to.push(ops);
        }
        let sent = self.notify(
            &inc,
            Some(spec),
            &to,
            Msg::text(&format!("FAILED: the command exited with {code}")),
            round,
            now,
        );
        round.stats.escalations.push(inc.playbook_id.clone());
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

fn pending_step(s: &Step) -> StepRun {
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
        running: false,
    }
}

fn late_note(due: DateTime<Utc>, now: DateTime<Utc>, loaded: &Loaded) -> String {
    if now - due > LATE_AFTER {
        format!(
            " (late: due at {}, fired {}s after)",
            fmt_time(due, loaded),
            (now - due).num_seconds()
        )
    } else {
        String::new()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests;
