//! The checked, typed configuration the rest of the program works with.
//!
//! Playbook types are serialisable because an incident stores the exact version
//! of the playbook it opened with (a reload never changes a running incident).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use super::files::{BranchSelection, MissedPolicy, ResolveMode, SmtpSecurity};
use crate::duration::{Calendar, Delay};
use crate::event::Severity;
use crate::schedule::Schedule;
use crate::target::Target;
use crate::template::Template;

/// Everything loaded from one config file and its playbook and drill directories.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub playbooks: Vec<Arc<Playbook>>,
    pub drills: Vec<Arc<Drill>>,
    /// Duty rosters: who holds a role at a branch at a given moment.
    pub rosters: Vec<Arc<crate::roster::Roster>>,
    /// Lints: what will run, but probably not as meant (`file:line:col: warning: …`).
    pub warnings: Vec<crate::diag::Diagnostic>,
}

/// A roster's duty at a moment: the person (known to the configuration) and
/// the words for the history. Shared by every message of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub person: Option<String>,
    /// `on duty: it-duty-east, layer nights`, `nobody on duty: roster …`.
    pub note: String,
}

impl Loaded {
    /// The people a target reaches at `at`. A role (or `branch-head`) that a
    /// roster covers at the branch reaches whoever is on duty then — nobody
    /// during a gap; otherwise everyone with the role, as without rosters.
    /// The note says why, for the history.
    pub fn people_at(
        &self,
        target: &Target,
        branch: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> (Vec<&Person>, Option<String>) {
        let (people, note) =
            self.people_on_duty(target, branch, &|_, r: &crate::roster::Roster| {
                self.resolve(r, at)
            });
        (people, note.map(|n| n.note.clone()))
    }

    /// A roster's duty at `at`, with the words the history gives it.
    pub fn resolve(
        &self,
        r: &crate::roster::Roster,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Arc<Resolved> {
        let duty = r.on_duty(at, &self.config.calendar, &self.config.away);
        let known = duty
            .person
            .as_ref()
            .filter(|p| self.config.people.contains_key(*p))
            .cloned();
        let note = match &known {
            Some(_) => format!("on duty: {}, {}", r.id, duty.why),
            None => format!("nobody on duty: roster {}, {}", r.id, duty.why),
        };
        Arc::new(Resolved {
            person: known,
            note,
        })
    }

    /// [`Loaded::people_at`] with the duty of a roster (by its index) asked
    /// of `duty_of`: the engine answers from what it worked out for the
    /// same moment, so a storm asks each roster once per round.
    pub fn people_on_duty(
        &self,
        target: &Target,
        branch: &str,
        duty_of: &dyn Fn(usize, &crate::roster::Roster) -> Arc<Resolved>,
    ) -> (Vec<&Person>, Option<Arc<Resolved>>) {
        let role = match target {
            Target::Role(r) => r.as_str(),
            Target::BranchHead => "branch-head",
            _ => return (self.config.people_for(target, branch), None),
        };
        let Some((i, r)) = crate::roster::covering(&self.rosters, role, branch) else {
            return (self.config.people_for(target, branch), None);
        };
        let duty = duty_of(i, r);
        let people = duty
            .person
            .as_ref()
            .and_then(|p| self.config.people.get(p))
            .into_iter()
            .collect();
        (people, Some(duty))
    }

    pub fn playbook(&self, id: &str) -> Option<&Arc<Playbook>> {
        self.playbooks.iter().find(|p| p.id == id)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} branches, {} people, {} playbooks, {} drills",
            self.config.branches.len(),
            self.config.people.len(),
            self.playbooks.len(),
            self.drills.len()
        ) + &match self.rosters.len() {
            0 => String::new(),
            n => format!(", {n} roster{}", if n == 1 { "" } else { "s" }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub playbooks_dir: PathBuf,
    pub drills_dir: PathBuf,
    pub rosters_dir: PathBuf,
    pub spool_dir: PathBuf,
    /// Reload when the configuration, playbook or drill files change.
    pub watch_files: bool,
    pub calendar: Calendar,
    pub email: Option<EmailConfig>,
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// The operations centre's channel: overdue notices, failed commands, manual
    /// escalations and steps that name nobody go there.
    pub ops_channel: Option<String>,
    pub people: BTreeMap<String, Person>,
    /// Recipients outside the staff list, by id (`contact:ID`).
    pub contacts: BTreeMap<String, Contact>,
    /// People's leave (`people[].away`), as instants: their roster turns
    /// fall to nobody meanwhile.
    pub away: crate::roster::Away,
    /// Person ids by (branch, role), in id order: role targets are resolved on
    /// every notification, so this must not scan everyone.
    pub roster: std::collections::HashMap<(String, String), Vec<String>>,
    pub branches: BTreeMap<String, Branch>,
    pub host: HostConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub maintenance: Vec<MaintenanceWindow>,
    pub engine: EngineConfig,
    pub delivery: DeliveryConfig,
    pub audit: AuditConfig,
    /// Where the records are kept.
    pub store: crate::config::Database,
    /// Active/standby with other daemons on the same PostgreSQL database.
    pub ha: Option<HaConfig>,
}

/// This daemon's place in an active/standby group.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Its name, unique in the group.
    pub node: String,
    /// How long a leader holds the lease without renewing it (every third of it).
    pub lease: Duration,
}

/// The audit log's key file and how often its chain head is published.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub key_file: PathBuf,
    pub anchor_every: Duration,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub from: String,
    pub smtp: Option<SmtpConfig>,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    /// A rate limit: at most one request per this interval (drill and real
    /// apart); what arrives meanwhile is sent as one digest payload.
    pub min_interval: Option<Duration>,
    /// The body the receiver expects (docs/WEBHOOKS.md).
    pub format: WebhookFormat,
    /// DingTalk's and Feishu's signing secret (from `secret_env`).
    pub secret: Option<SigningSecret>,
}

/// Which message body a webhook channel sends: branchguard's own JSON, or
/// a chat service's group-robot message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebhookFormat {
    #[default]
    Branchguard,
    Wecom,
    Dingtalk,
    Feishu,
    Slack,
}

impl WebhookFormat {
    pub fn parse(s: &str) -> Option<WebhookFormat> {
        Some(match s {
            "branchguard" => WebhookFormat::Branchguard,
            "wecom" => WebhookFormat::Wecom,
            "dingtalk" => WebhookFormat::Dingtalk,
            "feishu" => WebhookFormat::Feishu,
            "slack" => WebhookFormat::Slack,
            _ => return None,
        })
    }

    /// Whether the service signs its robots' requests with a secret.
    pub fn signs(&self) -> bool {
        matches!(self, WebhookFormat::Dingtalk | WebhookFormat::Feishu)
    }
}

/// A secret read from the environment; never printed.
#[derive(Clone)]
pub struct SigningSecret(pub String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// Someone outside the staff list a step may tell: by email or through a
/// webhook channel, for the branches they serve.
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub webhook: Option<String>,
    /// `None`: every branch.
    pub branches: Option<BTreeSet<String>>,
}

impl Contact {
    pub fn serves(&self, branch: &str) -> bool {
        self.branches.as_ref().is_none_or(|b| b.contains(branch))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub roles: BTreeSet<String>,
    pub branches: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
    pub region: Option<String>,
    /// The branch's own time zone, when it differs from the bank's.
    #[serde(skip)]
    pub timezone: Option<chrono_tz::Tz>,
    pub neighbours: Vec<String>,
    pub systems: Vec<SystemConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemConfig {
    pub name: String,
    pub probe: Option<ProbeConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConfig {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub command: Option<Vec<String>>,
    pub expect_status: Option<u16>,
    pub expect_body: Option<String>,
    pub value: Option<ValueProbe>,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// A number in a probe's JSON body and its thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueProbe {
    /// Field names from the top of the JSON body (`queue.wait_minutes`).
    pub path: Vec<String>,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub interval: Duration,
    pub disk_free_min_ratio: f64,
    pub memory_used_max_ratio: f64,
    pub cpu_used_max_ratio: f64,
    /// The branch host events are sent for; none: the host is only measured.
    pub branch: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub name: String,
    pub role: TokenRole,
    /// The branches it may see and act on; empty: all.
    pub branches: Vec<String>,
    /// The person it acts as (a staff token's actions are recorded as theirs).
    pub person: Option<String>,
    /// SHA-256 of the token; the token itself is never kept.
    pub sha256: [u8; 32],
    /// Requests per second (bursts of twice that).
    pub rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// All branches: read, answer, resolve, escalate, silences, drills.
    Ops,
    /// Its branches: read, answer, resolve, escalate, run and read drills.
    BranchHead,
    /// Its branches' incidents; answers the steps assigned to its person.
    Staff,
    /// Posts events only.
    Ingest,
    /// Reads only.
    Viewer,
}

impl TokenRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Ops => "ops",
            TokenRole::BranchHead => "branch-head",
            TokenRole::Staff => "staff",
            TokenRole::Ingest => "ingest",
            TokenRole::Viewer => "viewer",
        }
    }
}

/// API access: tokens, and which endpoints stay open without one.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    pub open_metrics: bool,
    pub open_healthz: bool,
}

/// Input limits (see docs/CONFIGURATION.md).
#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    pub events_per_request: usize,
    pub labels_per_event: usize,
    pub label_bytes: usize,
    pub summary_bytes: usize,
    /// Per token without its own `rate` (people's tokens).
    pub requests_per_second: u32,
    pub burst: u32,
    /// Refused requests per client address.
    pub denied_per_second: u32,
    pub denied_burst: u32,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub connections: usize,
    pub silence_max: Duration,
}

/// The default `rate` of an ingest token, and the rate of each client
/// address without tokens (loopback only): an alarm gateway posting one
/// event per request through a storm of 20,000 events a second stays under it.
pub const INGEST_RATE: u32 = 50_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            events_per_request: 1000,
            labels_per_event: 64,
            label_bytes: 1024,
            summary_bytes: 4096,
            requests_per_second: 200,
            burst: 400,
            denied_per_second: 5,
            denied_burst: 100,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            connections: 4096,
            silence_max: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A recurring maintenance window: from each `start` for `duration`, events of
/// its branches meeting its matchers open nothing.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    pub name: String,
    pub start: Schedule,
    pub duration: Duration,
    pub branches: BranchSelection,
    pub matchers: BTreeMap<String, String>,
}

impl MaintenanceWindow {
    /// Whether the window is open at `t` in the branch's time zone.
    pub fn open_at(&self, t: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> bool {
        let Ok(d) = chrono::Duration::from_std(self.duration) else {
            return false;
        };
        self.start.next_after(t - d, tz).is_some_and(|s| s <= t)
    }

    pub fn covers(&self, branch: &str) -> bool {
        match &self.branches {
            BranchSelection::All => true,
            BranchSelection::List(l) => l.iter().any(|b| b == branch),
        }
    }
}

/// HTTPS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Delivery of the outbox: retries and one-click links.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub horizon: Duration,
    /// A channel failing this long is logged once at warn and shown in status.
    pub warn_after: Duration,
    /// A link is valid at least this long after it is sent…
    pub link_ttl: Duration,
    /// …and at least this long past its step's deadline.
    pub link_margin: Duration,
    /// Deliveries at once per channel: a storm cannot crowd out intake, and a
    /// hanging receiver holds only its own channel's slots.
    pub in_flight: usize,
    /// Further emails to a person within this long after the last one are
    /// combined into one digest; zero sends each at once.
    pub digest: Duration,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub command_timeout: Duration,
    pub max_batch: usize,
    /// Events waiting for the engine at most (past it intake answers 503).
    pub queue: usize,
}

impl Config {
    /// A target in words for people: "IT duty at Shanghai Pudong: Sun Hao",
    /// not `role:it-duty`.
    pub fn describe(&self, t: &Target, branch: &str) -> String {
        let branch_name = self
            .branches
            .get(branch)
            .map_or(branch, |b| b.name.as_str());
        let names = || {
            let names: Vec<String> = self
                .people_for(t, branch)
                .iter()
                .map(|p| p.name.clone())
                .collect();
            if names.is_empty() {
                "nobody is assigned".to_string()
            } else {
                names.join(", ")
            }
        };
        match (t, self.heading(t, branch_name)) {
            (Target::Channel(c), _) => format!("the {c} channel"),
            (_, Some(head)) => format!("{head}: {}", names()),
            (_, None) => names(),
        }
    }

    /// What a role-like target is called at a branch ("IT duty at Shanghai
    /// Pudong"); none for a person or a channel.
    fn heading(&self, t: &Target, branch_name: &str) -> Option<String> {
        match t {
            Target::Role(r) => Some(format!("{} at {branch_name}", role_words(r))),
            Target::BranchHead => Some(format!("Branch head of {branch_name}")),
            Target::NeighbourHeads => Some(format!("Heads of the branches next to {branch_name}")),
            Target::Person(_) | Target::Channel(_) | Target::Contact(_) => None,
        }
    }

    /// A rostered target in words: its role and `who` instead of everyone
    /// who holds it ("IT duty at Shanghai Pudong: Ma Chao (on duty)").
    pub fn describe_on_duty(&self, t: &Target, branch: &str, who: &str) -> String {
        let branch_name = self
            .branches
            .get(branch)
            .map_or(branch, |b| b.name.as_str());
        match self.heading(t, branch_name) {
            Some(head) => format!("{head}: {who}"),
            None => who.to_string(),
        }
    }

    /// The time zone deadlines of a branch are shown in.
    pub fn tz_of(&self, branch: &str) -> chrono_tz::Tz {
        self.branches
            .get(branch)
            .and_then(|b| b.timezone)
            .unwrap_or(self.calendar.timezone)
    }

    /// The people a target names, for an incident at `branch`. Channels name nobody.
    pub fn people_for(&self, target: &Target, branch: &str) -> Vec<&Person> {
        let with_role = |role: &str, branch: &str| -> Vec<&Person> {
            self.roster
                .get(&(branch.to_string(), role.to_string()))
                .map(|ids| ids.iter().filter_map(|id| self.people.get(id)).collect())
                .unwrap_or_default()
        };
        match target {
            Target::Person(id) => self.people.get(id).into_iter().collect(),
            Target::Role(r) => with_role(r, branch),
            Target::BranchHead => with_role("branch-head", branch),
            Target::NeighbourHeads => {
                let mut out: Vec<&Person> = Vec::new();
                for n in self
                    .branches
                    .get(branch)
                    .map(|b| b.neighbours.as_slice())
                    .unwrap_or_default()
                {
                    for p in with_role("branch-head", n) {
                        if !out.iter().any(|q| q.id == p.id) {
                            out.push(p);
                        }
                    }
                }
                out
            }
            Target::Channel(_) | Target::Contact(_) => Vec::new(),
        }
    }
}

/// A regular expression that serialises as its source text.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        anchored(&s).map(Pattern).map_err(serde::de::Error::custom)
    }
}

/// `labels_re` matches the whole label value, as Prometheus matchers do.
/// Whether every wanted label has exactly the wanted value.
pub fn labels_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl Playbook {
    /// Whether the event fires this playbook's trigger. A resolved event is not
    /// held to `severity_at_least`: it closes whatever the firing one opened.
    pub fn triggers(&self, ev: &crate::event::Event) -> bool {
        let t = &self.trigger;
        t.kind == ev.kind
            && labels_match(&t.labels, &ev.labels)
            && t.labels_re
                .iter()
                .all(|(k, re)| ev.labels.get(k).is_some_and(|v| re.0.is_match(v)))
            && (ev.status == crate::event::Status::Resolved
                || t.severity_at_least.is_none_or(|s| ev.severity >= s))
    }
}

pub fn anchored(re: &str) -> Result<Regex, regex::Error> {
    // A bound on the compiled program (the default is 10 MB): matchers come
    // from people too (silences), and a pattern that big is no one's intent.
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Playbook {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// A digest of the file's text: which version an incident opened with.
    pub version: String,
    pub file: String,
    pub trigger: Trigger,
    pub group_by: Vec<String>,
    pub resolve: ResolveMode,
    pub tiers: Vec<Tier>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub labels_re: BTreeMap<String, Pattern>,
    pub severity_at_least: Option<Severity>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tier {
    pub level: u8,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub severity_at_least: Option<Severity>,
    /// Reached when the incident has been open this long (and, with labels
    /// or a severity, some event of it met them): a timer, not an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Delay>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub title: String,
    pub assignee: Option<Target>,
    pub action: Action,
    pub deadline: Delay,
    pub critical: bool,
    pub weight: f64,
    pub escalate: Vec<Escalation>,
    /// A follow-up: activated when the incident resolves, deadline counted from then.
    pub after_resolved: bool,
    /// Starts when this step of the same playbook is done (`after: STEP_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_step: Option<String>,
    /// How long after `after` (the step done, or the resolution) it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// A `notify` action's own words (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Template>,
    /// Repeats while the incident is open: occurrence `ID#N` starts this
    /// long after `ID#N-1` began, each with its own deadline and escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Delay>,
    pub when: Option<TierCondition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    pub after: Delay,
    pub to: Vec<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Task,
    Notify(Vec<Target>),
    Webhook {
        channel: String,
        body: Option<Template>,
    },
    Command {
        argv: Vec<Template>,
        timeout: Duration,
    },
    RollCall(Target),
    /// An event for the incident's branch, through the one intake: one
    /// plan opens another (a major complaint starts the conflict plan).
    Event {
        kind: String,
        labels: BTreeMap<String, Template>,
        severity: Severity,
        summary: Option<Template>,
        /// Where it is written (line, column), for `check`'s cycle error.
        #[serde(default)]
        at: (u64, u64),
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Task => "task",
            Action::Notify(_) => "notify",
            Action::Webhook { .. } => "webhook",
            Action::Command { .. } => "command",
            Action::RollCall(_) => "roll_call",
            Action::Event { .. } => "event",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

/// `tier >= N` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCondition {
    pub op: CmpOp,
    pub level: u8,
}

impl TierCondition {
    pub fn parse(s: &str) -> Result<TierCondition, String> {
        let bad = || format!("invalid condition `{s}`: expected `tier >= N` (or >, <=, <, ==)");
        let rest = s.trim().strip_prefix("tier").ok_or_else(bad)?.trim_start();
        let (op, num) = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .into_iter()
        .find_map(|(tok, op)| rest.strip_prefix(tok).map(|n| (op, n)))
        .ok_or_else(bad)?;
        let level = num.trim().parse::<u8>().map_err(|_| bad())?;
        Ok(TierCondition { op, level })
    }

    pub fn holds(&self, tier: u8) -> bool {
        match self.op {
            CmpOp::Ge => tier >= self.level,
            CmpOp::Gt => tier > self.level,
            CmpOp::Le => tier <= self.level,
            CmpOp::Lt => tier < self.level,
            CmpOp::Eq => tier == self.level,
        }
    }
}

impl std::fmt::Display for TierCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Lt => "<",
            CmpOp::Eq => "==",
        };
        write!(f, "tier {op} {}", self.level)
    }
}

impl Step {
    /// Whether the step takes part in an incident at this tier (ignoring `after`).
    pub fn eligible(&self, tier: u8) -> bool {
        self.when.is_none_or(|c| c.holds(tier))
    }

    /// Whether it starts when the incident opens (or its tier is reached):
    /// neither a follow-up nor waiting for another step.
    pub fn starts_at_open(&self) -> bool {
        !self.after_resolved && self.after_step.is_none()
    }
}

impl Playbook {
    /// Whether step `idx` belongs to what follows the resolution: a
    /// follow-up, or a step waiting (through others) for one. Such steps are
    /// not skipped when the incident resolves. `check` refuses cycles; the
    /// walk is bounded anyway.
    pub fn follows_resolution(&self, idx: usize) -> bool {
        let mut at = self.steps.get(idx);
        for _ in 0..=self.steps.len() {
            let Some(s) = at else { return false };
            if s.after_resolved {
                return true;
            }
            at = s
                .after_step
                .as_ref()
                .and_then(|id| self.steps.iter().find(|x| &x.id == id));
        }
        false
    }
}

#[derive(Debug, Clone)]
pub struct Drill {
    pub id: String,
    pub name: String,
    pub file: String,
    pub playbook: String,
    pub schedule: Option<Schedule>,
    pub branches: BranchSelection,
    pub event: DrillEvent,
    pub targets: BTreeMap<String, DrillTarget>,
    pub timeout: Duration,
    pub missed: MissedPolicy,
    pub starting_deadline: Duration,
    /// The branches' starts are spread evenly over this long.
    pub stagger: Option<Duration>,
    /// Follow-up events: after a while into the run, the drill event again
    /// with these labels added (a conflict climbing to tier 3).
    pub raise: Vec<(Duration, BTreeMap<String, String>)>,
    pub pass_score: f64,
    pub live: bool,
}

/// A step's target in a drill: how long, and measured to what.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillTarget {
    /// `None`: not scored in this drill (`STEP: none`).
    pub delay: Option<Delay>,
    /// Measured to done (`{ done: 10m }`), not to the first answer.
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct DrillEvent {
    pub kind: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub summary: Option<String>,
}

/// A role id as words: `it-duty` → "IT duty", `lobby-manager` → "Lobby manager".
pub fn role_words(role: &str) -> String {
    role.split(['-', '_'])
        .enumerate()
        .map(|(i, w)| {
            if w.len() <= 2 {
                w.to_uppercase()
            } else if i == 0 {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod words {
    #[test]
    fn roles_read_as_words() {
        assert_eq!(super::role_words("it-duty"), "IT duty");
        assert_eq!(super::role_words("lobby-manager"), "Lobby manager");
        assert_eq!(super::role_words("branch_president"), "Branch president");
    }
}
