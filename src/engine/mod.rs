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
pub mod open_count;
pub mod pairs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Loaded, Playbook, Step};
use crate::event::Event;
use crate::target::Target;
pub use deliveries::Attempt;
pub use drills::{BranchRun, DrillError, DrillRun, DrillState, RunStatus};
pub use handle::{EngineHandle, HandleError, Input};
pub use incident::*;
pub use messages::for_outside;
pub use pairs::Pairs;
pub use reviews::{ActionSpec, ReviewAction, ReviewSpec};
pub use silences::{Breadth, Matcher, Silence, SilenceSpec, breadth, check_matchers};
pub use timers::TimerKey;

/// An accepted event with the id the engine gave it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub event: Event,
    pub matched: bool,
    pub incidents: Vec<i64>,
    /// Why it was refused at intake; a refused event is stored, never matched.
    pub rejected: Option<String>,
    /// What silenced it (a silence or a maintenance window): stored, matched to nothing.
    pub silenced: Option<String>,
}

/// An event a source refused but keeps visible: what could be read, and why.
#[derive(Debug, Clone)]
pub struct RefusedEvent {
    pub event: Event,
    pub reason: String,
}

/// A command step to start: argv, `BRANCHGUARD_*` environment, timeout.
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
    /// The JSON to store of each of `incidents`, in the same order: the
    /// bytes whose digest the round's `incident.saved` audit line carries.
    pub bodies: Vec<String>,
    pub playbooks: Vec<Arc<Playbook>>,
    pub history: Vec<HistoryEntry>,
    /// Audit lines of what is not an incident (events, drill runs).
    pub audit: Vec<AuditLine>,
    pub outbox: Vec<Notification>,
    pub commands: Vec<CommandRequest>,
    /// Outcomes of delivery attempts, written to the outbox rows.
    pub deliveries: Vec<DeliveryUpdate>,
    /// Undelivered announcements of these (incident, step) to withdraw, and when.
    pub withdraw: Vec<(i64, String, DateTime<Utc>)>,
    /// Drill runs started, changed or ended.
    pub drill_runs: Vec<DrillRun>,
    /// Silences created or expired.
    pub silences: Vec<Silence>,
    /// Scheduled drills that fired (or were missed): (drill, scheduled time).
    pub drill_fires: Vec<(String, DateTime<Utc>)>,
    /// Review actions recorded or changed (done, reminded).
    pub review_actions: Vec<ReviewAction>,
    pub stats: RoundStats,
    touched: BTreeSet<i64>,
    /// How many of `drill_runs` have their audit line already.
    runs_audited: usize,
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

/// A drill run that ended: the drill, its result (`passed`, `failed`,
/// `aborted`, `missed`) and each branch's score.
pub type DrillResult = (String, &'static str, Vec<(String, f64)>);

/// Counts for the metrics module.
#[derive(Debug, Default, Clone)]
pub struct RoundStats {
    pub unmatched: u64,
    /// Events a silence or maintenance window held back.
    pub silenced: u64,
    pub opened: Vec<(String, bool)>,
    pub escalations: Vec<String>,
    pub overdue: Vec<(String, String)>,
    pub responses: Vec<(String, String, f64)>,
    /// Steps people finished: (playbook, step, seconds from notified to
    /// done, whether by the deadline) — the response report's time to done
    /// and deadlines met, as Prometheus can carry them.
    pub done: Vec<(String, String, f64, bool)>,
    pub resolved: Vec<(String, f64)>,
    /// (channel kind, outcome) of each delivery attempt.
    pub notifications: Vec<(ChannelKind, &'static str)>,
    /// Drill runs that ended.
    pub drills: Vec<DrillResult>,
}

impl RoundStats {
    /// Drill incidents do not count in the real-incident metrics.
    fn escalation(&mut self, inc: &Incident) {
        if !inc.drill {
            self.escalations.push(inc.playbook_id.clone());
        }
    }
}

impl Round {
    /// Adds `inc` to be stored as it is, with its JSON and the audit line
    /// of that JSON's digest, at `at`.
    pub fn save(&mut self, inc: Incident, at: DateTime<Utc>) {
        // Serializing our own plain data cannot fail.
        let body = serde_json::to_string(&inc).unwrap_or_default();
        self.audit.push(AuditLine {
            at,
            entity: format!("{INCIDENT_STATE}{}", inc.id),
            what: "incident.saved".into(),
            by: "branchguard".into(),
            via: VIA_ENGINE.into(),
            detail: body_digest(&body),
        });
        self.bodies.push(body);
        self.incidents.push(inc);
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.touched.is_empty()
            && self.incidents.is_empty()
            && self.history.is_empty()
            && self.audit.is_empty()
            && self.outbox.is_empty()
            && self.deliveries.is_empty()
            && self.withdraw.is_empty()
            && self.drill_runs.is_empty()
            && self.silences.is_empty()
            && self.drill_fires.is_empty()
            && self.review_actions.is_empty()
    }
}

/// Who acted, how they reached us, and what they said: every history line
/// records `by` (a person id, or the daemon's own name for what it did by
/// itself) and `via` (an API token's name, `link`, `local`, or `engine`).
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub by: Option<&'a str>,
    pub via: &'a str,
    pub note: Option<&'a str>,
    /// The one-click link this came through (its action, step and person):
    /// a link works once.
    pub link: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// A person's action without tokens (`via: local`).
    pub fn new(by: Option<&'a str>, note: Option<&'a str>) -> Who<'a> {
        Who {
            by,
            via: VIA_LOCAL,
            note,
            link: None,
        }
    }

    /// What the daemon did by itself, on behalf of `by` (`event`, `drill`).
    pub fn engine(by: &'a str) -> Who<'a> {
        Who {
            by: Some(by),
            via: VIA_ENGINE,
            note: None,
            link: None,
        }
    }

    pub fn by(&self) -> &'a str {
        self.by.unwrap_or("anonymous")
    }
}

/// `via` of what the daemon decided by itself.
pub const VIA_ENGINE: &str = "engine";
/// `via` of a request when no API tokens are configured.
pub const VIA_LOCAL: &str = "local";
/// `via` of a one-click link.
pub const VIA_LINK: &str = "link";

/// The ids an ingested batch was given: per event, its id and its incidents.
/// Per event taken, in order: its id, the incidents it opened or joined, and
/// the silence or maintenance window that held it back, if one did (so the
/// sender is told, rather than left to think nothing matched).
pub type Ingested = Vec<(i64, Vec<i64>, Option<String>)>;

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

/// What a message asks of its reader: the first word of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A task assigned: acknowledge it, then mark it done.
    Action,
    /// For information.
    Notice,
    /// Confirm that you are safe.
    RollCall,
    /// Someone else's step is late: take it or push it on.
    Escalation,
    /// You are now on duty: these open steps are yours.
    Handover,
    /// A deadline has passed.
    Overdue,
    /// An action failed (a command, an announcement).
    Failed,
}

impl Ask {
    pub fn word(&self) -> &'static str {
        match self {
            Ask::Action => "ACTION",
            Ask::Notice => "NOTICE",
            Ask::RollCall => "ROLL CALL",
            Ask::Escalation => "ESCALATION",
            Ask::Handover => "HANDOVER",
            Ask::Overdue => "OVERDUE",
            Ask::Failed => "FAILED",
        }
    }

    /// What the history says was sent.
    pub fn sent(&self) -> &'static str {
        match self {
            Ask::Action => "assigned",
            Ask::Notice => "notice",
            Ask::RollCall => "roll call",
            Ask::Escalation => "escalation",
            Ask::Handover => "hand-over",
            Ask::Overdue => "overdue notice",
            Ask::Failed => "failure notice",
        }
    }

    /// Never held for a digest: each goes at once, alone.
    pub fn urgent(&self) -> bool {
        !matches!(self, Ask::Action | Ask::Notice)
    }
}

/// What a message asks, says, and which one-click links each person gets.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ask: Ask,
    /// The opening of the body (the detail the subject leaves out).
    pub text: &'a str,
    pub links: &'static [LinkAction],
    /// What the subject names when it is neither a step nor the plan (a
    /// review action of a resolved incident is not its plan overdue).
    pub about: Option<&'a str>,
}

impl<'a> Msg<'a> {
    pub fn new(ask: Ask, text: &'a str) -> Msg<'a> {
        Msg {
            ask,
            text,
            links: &[],
            about: None,
        }
    }

    pub fn links(mut self, links: &'static [LinkAction]) -> Msg<'a> {
        self.links = links;
        self
    }

    pub fn about(mut self, about: &'a str) -> Msg<'a> {
        self.about = Some(about);
        self
    }
}

/// The entity of the audit lines that record an incident's stored bytes
/// (not `incident:N`: they are not history lines).
pub const INCIDENT_STATE: &str = "incident-state:";

/// SHA-256 of an incident's stored JSON, in hex.
pub fn body_digest(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// The longest subject before any detail: what a phone shows of it.
pub const SUBJECT_MAX: usize = 78;

/// A subject: `[DRILL] ` where it applies, what it asks, the branch and the
/// step (or what happened), cut to [`SUBJECT_MAX`] characters.
pub fn subject_line(drill: bool, ask: &str, branch: &str, what: &str) -> String {
    let full = format!("{}{ask} {branch}: {what}", drill_mark(drill));
    cut(&full, SUBJECT_MAX)
}

/// What a drill's subject starts with (nothing for a real one): a drill is
/// known by its flag, and this is only how people are told.
pub fn drill_mark(drill: bool) -> &'static str {
    if drill { "[DRILL] " } else { "" }
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The engine's state: the live incidents and the configuration they run under.
pub struct Engine {
    loaded: Loaded,
    /// Boxed: a map node has room for eleven values, so unboxed incidents
    /// (312 bytes each) left about 500 bytes per incident in part-filled
    /// nodes; boxed, the nodes hold pointers (massif, 100,000 open: 207 ->
    /// 184 MB).
    live: BTreeMap<i64, Box<Incident>>,
    /// Open incidents by group key: where a new event of the group attaches.
    groups: HashMap<String, i64>,
    next_incident: i64,
    next_event: i64,
    /// Every timer owner's next moment, ordered: the engine loop sleeps until
    /// the first, and a tick visits only owners that are due.
    timers: BTreeSet<(DateTime<Utc>, TimerKey)>,
    timer_of: HashMap<TimerKey, DateTime<Utc>>,
    /// Drill runs in progress, by id, and the next run id.
    runs: BTreeMap<i64, DrillRun>,
    next_run: i64,
    /// Scheduled drills: their timer slots, next and last fire times.
    drill_slots: Vec<String>,
    drill_next: BTreeMap<String, DateTime<Utc>>,
    last_fire: BTreeMap<String, DateTime<Utc>>,
    /// Silences in force or to come, and the next silence id.
    silences: silences::Silences,
    next_silence: i64,
    open: open_count::OpenCounts,
    /// Playbook versions that open incidents still run under but the
    /// configuration no longer holds (removed or changed since): a resolved
    /// event is matched against them too, so those incidents still resolve.
    retired: Vec<Arc<Playbook>>,
    /// Each roster's next change of duty, by its index.
    roster_next: BTreeMap<u32, DateTime<Utc>>,
    /// The last duty worked out per roster, and for which moment: every
    /// message of a round is written at the same moment.
    duty_memo: std::cell::RefCell<DutyMemo>,
    /// Open review actions and how far each reviewed incident is numbered.
    reviews: reviews::Reviews,
    /// While a step's event is taken in: the hop count its incidents get.
    opening_hops: Option<u8>,
}

/// Per roster (by index): the moment its duty was worked out for, and it.
type DutyMemo = HashMap<usize, (DateTime<Utc>, Arc<crate::config::Resolved>)>;

/// A time for people, in `branch`'s time zone (see `show`).
fn fmt_time(t: DateTime<Utc>, loaded: &Loaded, branch: &str) -> String {
    crate::show::time(t, loaded.config.tz_of(branch))
}

impl Engine {
    /// Builds the engine from what the store holds (see
    /// [`Engine::restart_commands`] for the commands that were running).
    pub fn new(
        loaded: Loaded,
        live: Vec<Incident>,
        next_incident: i64,
        next_event: i64,
        now: DateTime<Utc>,
    ) -> Engine {
        let mut e = Engine {
            loaded,
            live: BTreeMap::new(),
            groups: HashMap::new(),
            next_incident,
            next_event,
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            runs: BTreeMap::new(),
            next_run: 1,
            drill_slots: Vec::new(),
            drill_next: BTreeMap::new(),
            last_fire: BTreeMap::new(),
            silences: BTreeMap::new(),
            next_silence: 1,
            open: open_count::OpenCounts::default(),
            retired: Vec::new(),
            roster_next: BTreeMap::new(),
            duty_memo: std::cell::RefCell::new(HashMap::new()),
            reviews: reviews::Reviews::default(),
            opening_hops: None,
        };
        for mut inc in live {
            if inc.status == IncidentStatus::Open {
                e.groups.insert(inc.group_key.clone(), inc.id);
            }
            e.open.settle(&mut inc);
            let id = inc.id;
            e.live.insert(id, Box::new(inc));
            e.reschedule(TimerKey::Incident(id));
        }
        e.schedule_drills(now);
        e.schedule_rosters(now);
        e.retire_playbooks();
        e
    }

    /// At start-up: the commands that were running when the daemon stopped
    /// are started again (at least once, never zero times). Not after the
    /// engine is rebuilt from the store following a failed commit: the
    /// daemon did not stop, and they still run.
    pub fn restart_commands(&mut self, now: DateTime<Utc>, round: &mut Round) {
        let e = self;
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
                        via: VIA_ENGINE.into(),
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
    }

    /// Notes the playbook versions of open incidents that the configuration
    /// no longer holds. A walk of the live incidents, at start-up and reload
    /// only (not per round).
    fn retire_playbooks(&mut self) {
        let current = &self.loaded.playbooks;
        let mut retired: Vec<Arc<Playbook>> = Vec::new();
        for inc in self.live.values() {
            let Some(pb) = inc.playbook.as_ref() else {
                continue;
            };
            if inc.status != IncidentStatus::Open
                || current
                    .iter()
                    .any(|c| c.id == pb.id && c.version == pb.version)
                || retired
                    .iter()
                    .any(|r| r.id == pb.id && r.version == pb.version)
            {
                continue;
            }
            retired.push(Arc::clone(pb));
        }
        self.retired = retired;
    }

    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// A new configuration: new incidents use it, running ones keep their
    /// playbook; drill schedules are laid out again.
    pub fn reload(&mut self, loaded: Loaded, now: DateTime<Utc>) {
        self.loaded = loaded;
        self.schedule_drills(now);
        self.schedule_rosters(now);
        self.retire_playbooks();
    }

    pub fn live(&self) -> impl Iterator<Item = &Incident> {
        self.live.values().map(|i| &**i)
    }

    /// The open-incident gauge's counts, and whether they changed since asked.
    pub fn open_counts(&mut self) -> (&open_count::OpenCounts, bool) {
        let changed = self.open.take_changed();
        (&self.open, changed)
    }

    pub fn live_incident(&self, id: i64) -> Option<&Incident> {
        self.live.get(&id).map(|i| &**i)
    }

    /// The open incident of a group, if any (for `match` and the API).
    pub fn open_for_group(&self, key: &str) -> Option<i64> {
        self.groups.get(key).copied()
    }

    /// Copies the touched incidents into the round, ready to be stored, each
    /// with its stored JSON and the audit line of that JSON's digest (so
    /// `audit verify` finds a stored incident edited afterwards), and writes
    /// the audit line of each drill run's change. `now`: the round's time.
    pub fn finish(&mut self, now: DateTime<Utc>, round: &mut Round) {
        for r in &round.drill_runs[round.runs_audited..] {
            round.audit.push(AuditLine {
                at: r.finished_at.unwrap_or(r.started_at),
                entity: format!("drill-run:{}", r.id),
                what: format!("drill.{}", r.status.as_str()),
                by: r.started_by.clone().unwrap_or_else(|| "drill".into()),
                via: r.via.clone().unwrap_or_else(|| VIA_ENGINE.into()),
                detail: format!(
                    "drill {}: score {}",
                    r.drill,
                    r.score.map_or("-".to_string(), |s| s.to_string())
                ),
            });
        }
        round.runs_audited = round.drill_runs.len();
        let touched = std::mem::take(&mut round.touched);
        for id in touched {
            if let Some(inc) = self.live.get_mut(&id) {
                self.open.settle(inc);
                round.save((**inc).clone(), now);
                if !inc.is_live() {
                    self.live.remove(&id);
                }
            }
            self.reschedule(TimerKey::Incident(id));
        }
    }

    /// The operations centre's channel, when one is configured.
    pub(super) fn ops_target(&self) -> Option<Target> {
        self.loaded
            .config
            .ops_channel
            .as_ref()
            .map(|c| Target::Channel(c.clone()))
    }

    /// A line of what the daemon did by itself (`via: engine`).
    pub(super) fn history(
        round: &mut Round,
        incident: i64,
        at: DateTime<Utc>,
        what: &str,
        by: &str,
        detail: String,
    ) {
        Self::history_of(round, incident, at, what, &Who::engine(by), detail);
    }

    /// A line of what someone did, through whatever way they came.
    pub(super) fn history_of(
        round: &mut Round,
        incident: i64,
        at: DateTime<Utc>,
        what: &str,
        who: &Who<'_>,
        detail: String,
    ) {
        round.history.push(HistoryEntry {
            incident: Some(incident),
            at,
            what: what.to_string(),
            by: who.by().to_string(),
            via: who.via.to_string(),
            detail,
        });
    }
}

mod answers;
mod chain;
mod deliveries;
mod drill_runs;
mod drills;
pub mod handle;
mod handover;
mod intake;
mod messages;
mod repeat;
pub mod reviews;
pub mod score;
mod sequence;
mod silences;
mod steps;
mod tiers;
mod timers;

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod drill_tests;
#[cfg(test)]
mod repeat_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod roster_tests;
#[cfg(test)]
mod sequence_tests;
#[cfg(test)]
mod setup_tests;
#[cfg(test)]
mod stored_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tier_tests;
