//! The files exactly as users write them: `branchguard.yaml`, `playbooks/*.yaml`
//! and `drills/*.yaml`. Every struct denies unknown fields, and values that are
//! checked later carry their location (`Spanned`) so the check can point at them.
//!
//! **Invariant:** nothing here interprets a value; `config::validate` does.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub type S<T = String> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<S>,
    pub public_url: Option<S>,
    pub data_dir: Option<String>,
    pub playbooks_dir: Option<S>,
    pub drills_dir: Option<S>,
    /// Duty rosters (`rosters/*.yaml`); a missing default directory means none.
    pub rosters_dir: Option<S>,
    pub spool_dir: Option<String>,
    /// Reload when the configuration, playbook or drill files change (default true).
    pub watch_files: Option<bool>,
    pub timezone: Option<S>,
    pub calendar: Option<CalendarFile>,
    pub notify: Option<NotifyFile>,
    #[serde(default)]
    pub people: Vec<PersonFile>,
    /// Recipients outside the staff list: the regulator's desk, the police
    /// liaison, the fire department (`contact:ID`).
    #[serde(default)]
    pub contacts: Vec<ContactFile>,
    #[serde(default)]
    pub branches: Vec<BranchFile>,
    pub host: Option<HostFile>,
    pub auth: Option<AuthFile>,
    pub limits: Option<LimitsFile>,
    pub tls: Option<TlsFile>,
    /// Recurring maintenance windows: matching events are stored, open nothing.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceFile>,
    pub engine: Option<EngineFile>,
    pub audit: Option<AuditFile>,
    pub store: Option<StoreFile>,
    pub ha: Option<HaFile>,
}

/// Active/standby: this daemon's name in its group, and the leader's lease.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    pub node: S,
    pub lease: Option<S>,
}

/// Where the records are kept: SQLite in `data_dir` unless this names a
/// PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub postgres: Option<PostgresFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    /// The environment variable holding the database's URL (it carries a
    /// password, so never the file itself).
    pub url_env: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactFile {
    pub id: S,
    pub name: String,
    pub email: Option<S>,
    /// A webhook channel under `notify.webhooks`.
    pub webhook: Option<S>,
    pub branches: S<BranchSelection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    pub name: S,
    /// When each window starts: a cron expression, in each branch's time zone.
    pub start: S,
    pub duration: S,
    /// `all` or a list of branch ids.
    pub branches: S<BranchSelection>,
    /// Label (or kind, severity) equality the events must meet.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
}

/// What one request may carry, and how fast a client may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub body_bytes: Option<S<usize>>,
    pub events_per_request: Option<S<usize>>,
    pub labels_per_event: Option<usize>,
    pub label_bytes: Option<S<usize>>,
    pub summary_bytes: Option<S<usize>>,
    /// Requests per second per token without its own `rate` (people's
    /// tokens; ingest tokens have their own default).
    pub requests_per_second: Option<S<usize>>,
    pub burst: Option<S<usize>>,
    /// Refused requests (401, 403, 404 of a scoped read) per second per
    /// client address, and their burst.
    pub denied_per_second: Option<S<usize>>,
    pub denied_burst: Option<S<usize>>,
    /// A request taking longer than this (a slow client) is cut off.
    pub request_timeout: Option<S>,
    /// A connection that has not sent its request headers by then is closed.
    pub header_timeout: Option<S>,
    /// Connections open at once; more wait in the kernel's backlog.
    pub connections: Option<S<usize>>,
    /// The longest a silence may last.
    pub silence_max: Option<S>,
}

/// HTTPS: PEM files, re-read when they change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: S,
    pub key: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarFile {
    #[serde(default)]
    pub weekend: Vec<S>,
    #[serde(default)]
    pub holidays: Vec<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub email: Option<EmailFile>,
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookFile>,
    pub retry: Option<RetryFile>,
    pub links: Option<LinksFile>,
    /// The operations centre's webhook channel (default `ops-centre`, when configured).
    pub ops_channel: Option<S>,
    /// Deliveries at once per channel (email is one channel, each webhook one).
    pub in_flight: Option<S<usize>>,
    /// Emails to one person within this window after the last are combined
    /// into one digest (`0s`: each is sent at once).
    pub digest: Option<S>,
}

/// How undelivered notifications are retried: exponential backoff with jitter
/// from `initial` up to `max` between attempts, until `horizon` after queueing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub initial: Option<S>,
    pub max: Option<S>,
    pub horizon: Option<S>,
    /// A channel failing for this long is logged at warn (once) and shown in status.
    pub warn_after: Option<S>,
}

/// One-click links in emails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksFile {
    /// How long a link stays valid after the message is sent, at least.
    pub ttl: Option<S>,
    /// How long past its step's deadline a link stays valid.
    pub margin: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    pub from: S,
    pub smtp: Option<SmtpFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub timeout: Option<S>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: S,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<S>,
    /// At most one request per this interval; what waits meanwhile goes as
    /// one digest payload.
    pub min_interval: Option<S>,
    /// The receiver's own message format: wecom, dingtalk, feishu, slack.
    pub format: Option<S>,
    /// DingTalk and Feishu robots: the variable holding the signing secret.
    pub secret_env: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonFile {
    pub id: S,
    pub name: String,
    pub email: Option<S>,
    #[serde(default)]
    pub roles: Vec<S>,
    #[serde(default)]
    pub branches: Vec<S>,
    /// Leave: the person's roster turns fall to nobody meanwhile.
    #[serde(default)]
    pub away: Vec<AwayFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwayFile {
    /// A date (from its start) or a local time.
    pub from: S,
    /// A date (to its end, inclusive) or a local time (exclusive).
    pub to: S,
}

/// A duty roster file (`rosters/*.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    pub id: S,
    pub role: S,
    pub branches: S<RosterBranches>,
    pub timezone: Option<S>,
    #[serde(default)]
    pub layers: Vec<LayerFile>,
    #[serde(default)]
    pub overrides: Vec<OverrideFile>,
    pub handoff: Option<HandoffFile>,
}

/// `all`, a list of branch ids, or `{ region: east }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RosterBranches {
    Named(String),
    List(Vec<String>),
    Region { region: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFile {
    pub name: S,
    pub start: S,
    pub shift: S,
    #[serde(default)]
    pub people: Vec<S>,
    pub only: Option<OnlyFile>,
    /// Nobody on duty in this layer's window, on purpose (not a gap).
    #[serde(default)]
    pub uncovered: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlyFile {
    #[serde(default)]
    pub days: Vec<S>,
    pub from: Option<S>,
    pub to: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideFile {
    pub person: S,
    pub from: S,
    pub to: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffFile {
    #[serde(default)]
    pub notify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchFile {
    pub id: S,
    pub name: String,
    pub region: Option<String>,
    pub timezone: Option<S>,
    #[serde(default)]
    pub neighbours: Vec<S>,
    #[serde(default)]
    pub systems: Vec<SystemFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemFile {
    pub name: S,
    pub probe: Option<ProbeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    pub http: Option<S>,
    pub tcp: Option<S>,
    /// A program; exit 0 is up.
    pub command: Option<S<Vec<String>>>,
    /// HTTP: the status that means up (default: any 2xx).
    pub expect_status: Option<u16>,
    /// HTTP: text the body must contain.
    pub expect_body: Option<String>,
    /// HTTP: read a number from the JSON body and compare it with thresholds.
    pub value: Option<ValueFile>,
    pub interval: Option<S>,
    pub timeout: Option<S>,
    pub failures: Option<u32>,
    pub successes: Option<u32>,
}

/// A number read from a probe's JSON body (`path`: dotted field names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueFile {
    pub path: S,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
    /// The event kind it emits (default `value.high`).
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub interval: Option<S>,
    pub disk_free_min: Option<S>,
    pub memory_used_max: Option<S>,
    pub cpu_used_max: Option<S>,
    /// The branch host events are sent for (the daemon's own site).
    pub branch: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
    /// `/metrics` without a token (default true).
    pub open_metrics: Option<bool>,
    /// `/healthz` without a token (default true).
    pub open_healthz: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub name: S,
    pub role: S,
    #[serde(default)]
    pub branches: Vec<S>,
    pub person: Option<S>,
    pub token_env: Option<String>,
    pub token_sha256: Option<S>,
    /// Requests per second this token may send (bursts of twice that).
    pub rate: Option<S<usize>>,
}

/// Engine tuning; the defaults suit production, tests shorten them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// How long a command step may run when the playbook gives no timeout.
    pub command_timeout: Option<S>,
    /// Largest number of events written in one transaction.
    pub max_batch: Option<S<usize>>,
    /// Events waiting for the engine at most; past it intake answers 503.
    pub queue: Option<S<usize>>,
}

/// The audit log's key and where its chain head is published.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// The key the chain is signed with (default `DATA_DIR/audit.key`).
    pub key_file: Option<String>,
    /// How often the chain head is published (at most 10m).
    pub anchor_every: Option<S>,
}

// ---- playbooks ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookFile {
    pub id: S,
    pub name: String,
    pub description: Option<String>,
    pub trigger: TriggerFile,
    pub group_by: Option<Vec<S>>,
    #[serde(default)]
    pub resolve: ResolveMode,
    #[serde(default)]
    pub tiers: Vec<TierFile>,
    pub steps: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerFile {
    pub kind: S,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub labels_re: BTreeMap<String, S>,
    pub severity_at_least: Option<crate::event::Severity>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveMode {
    #[default]
    Auto,
    Manual,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub level: S<u8>,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub severity_at_least: Option<crate::event::Severity>,
    pub open_for: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    pub id: S,
    pub title: Option<String>,
    pub assignee: Option<S>,
    pub action: Option<S<ActionFile>>,
    pub deadline: S,
    #[serde(default)]
    pub critical: bool,
    pub weight: Option<S<f64>>,
    #[serde(default)]
    pub escalate: Vec<EscalateFile>,
    pub after: Option<S>,
    pub delay: Option<S>,
    /// Repeats: a new occurrence (`STEP#N`) this long after the last began.
    pub every: Option<S>,
    pub when: Option<S>,
}

/// A step action, written as a mapping with one action key (`command`, `webhook`,
/// `notify`, `roll_call`, `task`) and that action's options. A flat struct rather
/// than an enum so that an error points at the offending key, not at the mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFile {
    pub task: Option<S<bool>>,
    pub notify: Option<S<Vec<S>>>,
    pub webhook: Option<S>,
    pub body: Option<S>,
    pub command: Option<S<Vec<S>>>,
    pub timeout: Option<S>,
    pub roll_call: Option<S>,
    /// A `notify` action's own words (templated), instead of "For your information."
    pub message: Option<S>,
    /// Send an event through the one intake (one plan opens another).
    pub event: Option<S<EventActionFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventActionFile {
    pub kind: S,
    #[serde(default)]
    pub labels: BTreeMap<String, S>,
    pub severity: Option<crate::event::Severity>,
    pub summary: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateFile {
    pub after: S,
    pub to: Vec<S>,
}

// ---- drills ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillFile {
    pub id: S,
    pub name: Option<String>,
    pub playbook: S,
    pub schedule: Option<S>,
    pub branches: S<BranchSelection>,
    pub event: DrillEventFile,
    /// Per step: `10m` (time to the first acknowledgement or done) or
    /// `{ done: 10m }` (time to done).
    #[serde(default)]
    pub targets: BTreeMap<String, S<TargetValue>>,
    pub timeout: Option<S>,
    #[serde(default)]
    pub missed: MissedPolicy,
    pub starting_deadline: Option<S>,
    /// Spread the branches' starts over this long (a large network is not
    /// paged in the same second).
    pub stagger: Option<S>,
    /// Follow-up events during the run: the same event with more labels after
    /// a while, so a drill can climb through a playbook's tiers.
    #[serde(default)]
    pub raise: Vec<RaiseFile>,
    pub pass_score: Option<S<f64>>,
    #[serde(default)]
    pub live: bool,
}

/// A drill target as written: a duration, or `{ done: DURATION }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetValue {
    /// Time to the first acknowledgement (or done).
    Respond(String),
    /// Time to done.
    Done(String),
}

impl<'de> Deserialize<'de> for TargetValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TargetValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a duration such as `10m` (time to answer), or `{ done: 10m }` (time to done)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetValue, E> {
                Ok(TargetValue::Respond(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<TargetValue, A::Error> {
                let mut done = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k == "done" {
                        done = Some(m.next_value::<String>()?);
                    } else {
                        return Err(serde::de::Error::unknown_field(&k, &["done"]));
                    }
                }
                done.map(TargetValue::Done)
                    .ok_or_else(|| serde::de::Error::missing_field("done"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaiseFile {
    pub after: S,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillEventFile {
    pub kind: S,
    pub severity: Option<crate::event::Severity>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub summary: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MissedPolicy {
    #[default]
    Skip,
    Run,
}

/// `all`, or a list of branch ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchSelection {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for BranchSelection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BranchSelection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all` or a list of branch ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "all" {
                    Ok(BranchSelection::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(BranchSelection::List(out))
            }
        }
        d.deserialize_any(V)
    }
}
