//! The state of an incident and its steps, as stored and as the API shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Playbook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started: waiting for resolution (`after: resolved`) or for a higher tier.
    Pending,
    Notified,
    Acknowledged,
    Done,
    Failed,
    Overdue,
    Skipped,
}

impl StepState {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Notified => "notified",
            StepState::Acknowledged => "acknowledged",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Overdue => "overdue",
            StepState::Skipped => "skipped",
        }
    }

    /// Still someone's job: timers run on it.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            StepState::Notified | StepState::Acknowledged | StepState::Overdue
        )
    }
}

/// One step of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub id: String,
    pub title: String,
    pub action: String,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// How many of the step's `escalate` entries have fired.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub escalations_fired: usize,
    /// Whether the overdue escalation to the operations centre has fired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue_escalated: bool,
    /// Roll call: who must confirm, and who has.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub roll_call: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub confirmed: BTreeSet<String>,
    /// Roll call: when each person confirmed (drills score it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub confirmed_at: BTreeMap<String, DateTime<Utc>>,
    /// A command action is running (set when started, cleared when it ends).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub running: bool,
    /// Acknowledged, and its incident resolved before it was done: it keeps
    /// its state (the record says who took it), but nothing runs on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// The person a rostered assignee role resolved to when the step started
    /// (or at the last hand-over); none without a roster or in a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_duty: Option<String>,
    /// A step waiting out its `delay`: when it starts (pending until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
}

/// An incident: one playbook applied to one group. Stored as this JSON at
/// every save (the API has views of its own), so a field at its default
/// (none, false, zero, empty) is left out and read back as that default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub playbook_id: String,
    pub playbook_version: String,
    /// The playbook exactly as it was when the incident opened.
    #[serde(skip)]
    pub playbook: Option<Arc<Playbook>>,
    pub branch: String,
    pub tier: u8,
    pub status: IncidentStatus,
    pub drill: bool,
    /// The drill run this incident belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_run: Option<i64>,
    /// A drill that is not `live`: command and webhook actions are recorded,
    /// not carried out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
    pub group: super::Pairs,
    pub group_key: String,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub event_count: u32,
    /// The labels, kind, severity and summary of the event that opened it (for templates).
    pub kind: String,
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub labels: super::Pairs,
    pub steps: Vec<StepRun>,
    /// Events that joined after the one that opened it, summarised by kind and
    /// status (`system.down firing`): a storm of repeats is a count, not a
    /// history line each. The events themselves are in the event list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attached: BTreeMap<String, Attached>,
    /// One-click links already used (`action:step:person`): each works once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub used_links: BTreeSet<String>,
    /// The tier this incident is counted under in the open-incident gauge
    /// (see `open_count`): the engine's bookkeeping, not stored.
    #[serde(skip)]
    pub counted_tier: Option<u8>,
    /// Tiers reached by time (`open_for`) whose conditions an event of the
    /// incident met: each is reached when the incident has been open so long.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub timed_tiers: BTreeSet<u8>,
    /// How many incidents, each opened by an event of a step of the one
    /// before, led to this one (0: opened by an outside event).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chain: u8,
}

/// How many events of one kind and status joined an incident, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attached {
    pub count: u32,
    pub first_event: i64,
    pub first_at: DateTime<Utc>,
    pub last_event: i64,
    pub last_at: DateTime<Utc>,
}

impl StepRun {
    pub fn state_name(&self) -> &'static str {
        self.state.as_str()
    }

    /// Still someone's job: its timers run and it may be answered.
    pub fn open(&self) -> bool {
        self.state.is_open() && !self.closed
    }

    /// Whether the step was done by its deadline; `None` while that is not
    /// decided: no deadline, never started, still open before it, or closed
    /// unfinished (the incident resolved) before it came.
    pub fn deadline_met(&self) -> Option<bool> {
        let deadline = self.deadline?;
        self.activated_at?;
        match self.done_at {
            Some(done) => Some(done <= deadline),
            None if self.overdue_escalated || self.state == StepState::Overdue => Some(false),
            None => None,
        }
    }

    /// Closes a step whose incident ends: an acknowledged one keeps its state
    /// (closed), anything else not finished is skipped. Returns whether it
    /// was acknowledged.
    pub fn close(&mut self) -> bool {
        self.running = false;
        if self.state == StepState::Acknowledged && !self.closed {
            self.closed = true;
            return true;
        }
        if self.state == StepState::Pending || self.open() {
            self.state = StepState::Skipped;
        }
        self.starts_at = None;
        false
    }
}

impl Incident {
    /// Live incidents stay in the engine's memory: open, or with follow-ups still running.
    pub fn is_live(&self) -> bool {
        self.status == IncidentStatus::Open
            || self
                .steps
                .iter()
                .any(|s| s.open() || (s.state == StepState::Pending && s.starts_at.is_some()))
    }

    /// The index in its playbook of the step run `idx` belongs to: its own
    /// for a playbook step, its repeating step's for an occurrence `ID#N`.
    pub fn spec_of(&self, idx: usize) -> Option<usize> {
        let pb = self.playbook.as_ref()?;
        if idx < pb.steps.len() {
            return Some(idx);
        }
        let base = self.steps.get(idx)?.id.split('#').next()?;
        pb.steps.iter().position(|s| s.id == base)
    }

    pub fn step_mut(&mut self, id: &str) -> Option<(usize, &mut StepRun)> {
        self.steps.iter_mut().enumerate().find(|(_, s)| s.id == id)
    }
}

/// One line of an incident's history, and of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub incident: Option<i64>,
    pub at: DateTime<Utc>,
    pub what: String,
    pub by: String,
    /// How it came: an API token's name, `link`, `local`, or `engine`
    /// (empty on lines written before it was recorded).
    #[serde(default)]
    pub via: String,
    pub detail: String,
}

impl HistoryEntry {
    /// The audit log's entity of the line: `incident:N`, or `daemon` for a
    /// line about the daemon itself.
    pub fn entity(&self) -> String {
        self.incident
            .map_or("daemon".to_string(), |i| format!("incident:{i}"))
    }
}

/// An audit line about something other than an incident (an event received
/// or refused, a drill run's change): decided by the engine like a history
/// line, and written to the audit log as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    pub at: DateTime<Utc>,
    /// `event:N`, `drill-run:N`.
    pub entity: String,
    pub what: String,
    pub by: String,
    pub via: String,
    pub detail: String,
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Webhook,
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "email" => Some(ChannelKind::Email),
            "webhook" => Some(ChannelKind::Webhook),
            _ => None,
        }
    }
}

/// What a one-click link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkAction {
    /// Acknowledge a step assigned to the holder.
    Ack,
    /// Acknowledge a step on behalf of the team (an escalation's recipient).
    AckForTeam,
    /// Mark a step done.
    Done,
    /// Confirm "I am safe" in a roll call.
    Safe,
    /// Escalate the incident to the operations centre and the branch head.
    Escalate,
}

/// The links of a message assigning a task.
pub const TASK_LINKS: &[LinkAction] = &[LinkAction::Ack, LinkAction::Done];
/// The link of a roll call.
pub const ROLL_CALL_LINKS: &[LinkAction] = &[LinkAction::Safe];
/// What the recipient of an escalation can do about someone else's step.
pub const ESCALATION_LINKS: &[LinkAction] = &[LinkAction::AckForTeam, LinkAction::Escalate];
/// An overdue task: its owner may finish it, anyone may take it or escalate.
pub const OVERDUE_LINKS: &[LinkAction] = &[
    LinkAction::AckForTeam,
    LinkAction::Done,
    LinkAction::Escalate,
];

impl LinkAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkAction::Ack => "ack",
            LinkAction::AckForTeam => "ack-for-team",
            LinkAction::Done => "done",
            LinkAction::Safe => "safe",
            LinkAction::Escalate => "escalate",
        }
    }

    pub fn parse(s: &str) -> Option<LinkAction> {
        match s {
            "ack" => Some(LinkAction::Ack),
            "ack-for-team" => Some(LinkAction::AckForTeam),
            "done" => Some(LinkAction::Done),
            "safe" => Some(LinkAction::Safe),
            "escalate" => Some(LinkAction::Escalate),
            _ => None,
        }
    }

    /// What the link's button says, in the email and on its page.
    pub fn label(&self) -> &'static str {
        match self {
            LinkAction::Ack => "Acknowledge this step",
            LinkAction::AckForTeam => "Acknowledge for the team",
            LinkAction::Done => "Mark this step done",
            LinkAction::Safe => "Confirm that you are safe",
            LinkAction::Escalate => "Escalate to the operations centre",
        }
    }

    /// Several actions as stored (`ack,done`).
    pub fn join(links: &[LinkAction]) -> String {
        links
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses [`LinkAction::join`]'s form; `None` if any part is unknown.
    pub fn split(s: &str) -> Option<Vec<LinkAction>> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(LinkAction::parse)
            .collect()
    }
}

/// A message the engine decided to send; delivered from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub incident: i64,
    pub step: Option<String>,
    pub channel: ChannelKind,
    /// A drill's message: delivered in digests apart from real ones, and
    /// marked as a drill to whoever reads it.
    #[serde(default)]
    pub drill: bool,
    /// The target as written (`role:it-duty`), for the history.
    pub target: String,
    /// An email address or a webhook channel name.
    pub recipient: String,
    pub person: Option<String>,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// The one-click links each person gets (none for channels).
    #[serde(default)]
    pub links: Vec<LinkAction>,
    /// The link stays valid at least until then: the step's deadline plus
    /// `notify.links.margin` (a 3-working-day follow-up outlives a fixed TTL).
    #[serde(default)]
    pub link_until: Option<DateTime<Utc>>,
    /// A `webhook` step's own message (a lobby screen's text): its retries stop
    /// when the incident resolves, so a screen that comes back late does not
    /// announce what is over. Messages to people are never withdrawn.
    #[serde(default)]
    pub announcement: bool,
    /// Urgent (an escalation, an overdue notice, a roll call, a critical
    /// step): never held for a digest, sent at once and alone.
    #[serde(default)]
    pub urgent: bool,
    /// The incident page's read-only grant in the message lasts until then:
    /// the incident's last deadline plus seven days.
    #[serde(default)]
    pub grant_until: Option<DateTime<Utc>>,
    /// The JSON body for a webhook.
    pub payload: Option<String>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}
