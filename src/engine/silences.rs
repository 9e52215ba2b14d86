//! Silences and maintenance windows: firing events they match are stored and
//! marked silenced, but open and join nothing. A resolved event is never
//! silenced (it closes what was opened before the silence).
//!
//! **Invariant:** a silence applies only inside its time window; an expired
//! silence stops applying by itself, with no timer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::config::anchored;
use crate::event::{Event, Status};

/// One condition on an event: a field (`branch`, `kind`, `severity`) or a label.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub regex: bool,
    /// The compiled pattern, built once: the engine asks every active
    /// silence about every firing event.
    #[serde(skip)]
    compiled: std::sync::OnceLock<Option<regex::Regex>>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.value, self.regex) == (&other.name, &other.value, other.regex)
    }
}

impl Eq for Matcher {}

/// How long a matcher's name and value may be, and how many a silence may
/// have: enough for any branch, kind or alternation of them.
pub const MATCHER_NAME_MAX: usize = 64;
pub const MATCHER_VALUE_MAX: usize = 1024;
pub const MATCHERS_MAX: usize = 16;

/// Checks a silence's matchers: sizes, and that each pattern compiles.
pub fn check_matchers(matchers: &[Matcher]) -> Result<(), String> {
    if matchers.len() > MATCHERS_MAX {
        return Err(format!(
            "a silence has at most {MATCHERS_MAX} matchers, not {}",
            matchers.len()
        ));
    }
    for m in matchers {
        if m.name.chars().count() > MATCHER_NAME_MAX || m.value.chars().count() > MATCHER_VALUE_MAX
        {
            return Err(format!(
                "matcher `{}`: names are at most {MATCHER_NAME_MAX} characters and values {MATCHER_VALUE_MAX}",
                crate::diag::clip_quotes(&m.name)
            ));
        }
        if m.regex && m.compiled().is_none() {
            return Err(format!(
                "matcher `{}`: `{}` is not a valid regular expression (or is too large)",
                crate::diag::clip_quotes(&m.name),
                crate::diag::clip_quotes(&m.value)
            ));
        }
    }
    Ok(())
}

impl Matcher {
    pub fn new(name: impl Into<String>, value: impl Into<String>, regex: bool) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            regex,
            compiled: std::sync::OnceLock::new(),
        }
    }

    fn compiled(&self) -> Option<&regex::Regex> {
        self.compiled
            .get_or_init(|| anchored(&self.value).ok())
            .as_ref()
    }

    fn field<'a>(&self, ev: &'a Event) -> Option<&'a str> {
        match self.name.as_str() {
            "branch" => Some(&ev.branch),
            "kind" => Some(&ev.kind),
            "severity" => Some(ev.severity.as_str()),
            label => ev.labels.get(label).map(String::as_str),
        }
    }

    pub fn matches(&self, ev: &Event) -> bool {
        let Some(have) = self.field(ev) else {
            return false;
        };
        if self.regex {
            self.compiled().is_some_and(|re| re.is_match(have))
        } else {
            have == self.value
        }
    }

    /// Whether it accepts `value` for its field (a matcher of another field
    /// accepts anything).
    fn accepts(&self, field: &str, value: &str) -> bool {
        if self.name != field {
            return true;
        }
        if self.regex {
            self.compiled().is_some_and(|re| re.is_match(value))
        } else {
            self.value == value
        }
    }
}

/// Values no configuration names, each of a different shape: a matcher
/// that accepts all of them accepts anything a sender could write.
const UNSEEN: [&str; 5] = [
    "",
    "x",
    "zz-9 unseen.value_42",
    "Ünïcödé/\\ \t~!@#$%^&*()",
    "a-much-longer.value.than.anything.configured.would.be.0123456789",
];

/// What a silence can match, decided by what its matchers accept rather
/// than by how they are written (`branch =~ ".+"`, `[^\n]+` and an
/// alternation of every branch id all match every branch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breadth {
    /// The configured branches whose events it can match.
    pub branches: std::collections::BTreeSet<String>,
    pub every_branch: bool,
    pub every_kind: bool,
    pub every_severity: bool,
}

impl Breadth {
    /// Whether it needs `"force": true` (and the `ops` or `admin` role).
    pub fn is_broad(&self) -> bool {
        self.every_branch || self.every_kind || self.every_severity
    }

    /// Why it is broad, for the refusal.
    pub fn why(&self) -> String {
        let mut w = Vec::new();
        if self.every_branch {
            w.push("every branch");
        }
        if self.every_kind {
            w.push("every kind of event");
        }
        if self.every_severity {
            w.push("every severity");
        }
        w.join(", ")
    }
}

/// What `matchers` can match in the configuration `loaded`.
pub fn breadth(matchers: &[Matcher], loaded: &Loaded) -> Breadth {
    let accepts_all = |field: &str, values: &mut dyn Iterator<Item = &str>| {
        let values: Vec<&str> = values.collect();
        values
            .iter()
            .all(|v| matchers.iter().all(|m| m.accepts(field, v)))
    };
    let branches: std::collections::BTreeSet<String> = loaded
        .config
        .branches
        .keys()
        .filter(|b| matchers.iter().all(|m| m.accepts("branch", b)))
        .cloned()
        .collect();
    let configured = loaded.config.branches.len();
    // One equality on a branch is never "every branch", even in a
    // one-branch network: it names the branch.
    let named = matchers.iter().any(|m| m.name == "branch" && !m.regex);
    let every_branch = !named
        && branches.len() == configured
        && (configured > 1 || accepts_all("branch", &mut UNSEEN.into_iter()));
    let mut kinds: Vec<&str> = loaded
        .playbooks
        .iter()
        .map(|p| p.trigger.kind.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let every_kind = accepts_all("kind", &mut UNSEEN.into_iter())
        || (kinds.len() > 1 && accepts_all("kind", &mut kinds.iter().copied()));
    let every_severity = accepts_all(
        "severity",
        &mut ["critical", "major", "minor", "info"].into_iter(),
    ) && matchers.iter().any(|m| m.name == "severity");
    Breadth {
        branches,
        every_branch,
        every_kind: every_kind && matchers.iter().any(|m| m.name == "kind"),
        every_severity,
    }
}

/// A silence as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    /// How it was created (an API token's name, `local`).
    #[serde(default)]
    pub via: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_by: Option<String>,
}

impl Silence {
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.starts_at <= t && t < self.ends_at && self.expired_at.is_none_or(|e| t < e)
    }

    pub fn matches(&self, ev: &Event) -> bool {
        self.matchers.iter().all(|m| m.matches(ev))
    }
}

/// What a new silence asks for.
#[derive(Debug, Clone)]
pub struct SilenceSpec {
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub via: String,
    pub comment: String,
    /// Allow a silence that matches every branch, kind or severity.
    pub force: bool,
}

impl Engine {
    /// Takes back the silences the store holds.
    pub fn restore_silences(&mut self, silences: Vec<Silence>) {
        for s in silences {
            self.next_silence = self.next_silence.max(s.id + 1);
            self.silences.insert(s.id, s);
        }
    }

    pub fn add_silence(
        &mut self,
        spec: SilenceSpec,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<i64, ActionError> {
        check_matchers(&spec.matchers).map_err(ActionError::Invalid)?;
        let b = breadth(&spec.matchers, &self.loaded);
        if !spec.force && b.is_broad() {
            return Err(ActionError::Invalid(format!(
                "this silence would match {}: name a branch (e.g. branch=sh-001) and what to hold back, or send \"force\": true (ops or admin only)",
                b.why()
            )));
        }
        if spec.ends_at <= spec.starts_at || spec.ends_at <= now {
            return Err(ActionError::Invalid(
                "ends_at must be after starts_at and in the future".into(),
            ));
        }
        let max = self.loaded.config.limits.silence_max;
        if (spec.ends_at - spec.starts_at.max(now))
            .to_std()
            .is_ok_and(|d| d > max)
        {
            return Err(ActionError::Invalid(format!(
                "a silence may last at most {} (limits.silence_max)",
                crate::duration::short(max)
            )));
        }
        let id = self.next_silence;
        self.next_silence += 1;
        let s = Silence {
            id,
            matchers: spec.matchers,
            starts_at: spec.starts_at,
            ends_at: spec.ends_at,
            created_by: spec.created_by,
            via: spec.via,
            comment: spec.comment,
            created_at: now,
            expired_at: None,
            expired_by: None,
        };
        round.history.push(HistoryEntry {
            incident: None,
            at: now,
            what: "silence.created".into(),
            by: s.created_by.clone(),
            via: s.via.clone(),
            detail: format!(
                "silence {id}: {}",
                describe(&s, self.loaded.config.calendar.timezone)
            ),
        });
        round.silences.push(s.clone());
        self.silences.insert(id, s);
        Ok(id)
    }

    pub fn expire_silence(
        &mut self,
        id: i64,
        who: Who<'_>,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let tz = self.loaded.config.calendar.timezone;
        let s = self
            .silences
            .get_mut(&id)
            .filter(|s| s.expired_at.is_none() && s.ends_at > now)
            .ok_or_else(|| ActionError::Conflict(format!("silence {id} is not in force")))?;
        s.expired_at = Some(now);
        s.expired_by = Some(who.by().to_string());
        round.history.push(HistoryEntry {
            incident: None,
            at: now,
            what: "silence.expired".into(),
            by: who.by().to_string(),
            via: who.via.to_string(),
            detail: format!("silence {id}: {}", describe(s, tz)),
        });
        round.silences.push(s.clone());
        Ok(())
    }

    /// What silences a firing event at `now`, if anything.
    pub(super) fn silenced_by(&self, ev: &Event, now: DateTime<Utc>) -> Option<String> {
        if ev.status == Status::Resolved {
            return None;
        }
        if let Some(s) = self
            .silences
            .values()
            .find(|s| s.active_at(now) && s.matches(ev))
        {
            return Some(format!("silence {}", s.id));
        }
        let cfg = &self.loaded.config;
        cfg.maintenance
            .iter()
            .find(|w| {
                w.covers(&ev.branch)
                    && w.matchers
                        .iter()
                        .all(|(k, v)| Matcher::new(k.clone(), v.clone(), false).matches(ev))
                    && w.open_at(now, cfg.tz_of(&ev.branch))
            })
            .map(|w| format!("maintenance window {}", w.name))
    }

    /// Forgets silences that ended (they stay in the store).
    pub(super) fn drop_ended_silences(&mut self, now: DateTime<Utc>) {
        self.silences
            .retain(|_, s| s.ends_at > now && s.expired_at.is_none());
    }
}

fn describe(s: &Silence, tz: chrono_tz::Tz) -> String {
    let m: Vec<String> = s
        .matchers
        .iter()
        .map(|m| format!("{}{}{}", m.name, if m.regex { "=~" } else { "=" }, m.value))
        .collect();
    format!(
        "{} from {} to {}{}",
        if m.is_empty() {
            "everything".into()
        } else {
            m.join(", ")
        },
        crate::show::time(s.starts_at, tz),
        crate::show::time(s.ends_at, tz),
        if s.comment.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.comment)
        }
    )
}

/// Silences as a map for the store.
pub type Silences = BTreeMap<i64, Silence>;

#[cfg(test)]
mod tests {
    use super::*;

    /// **Invariant:** a silence applies only inside its time window: not
    /// before it starts, not from its end on, not once ended early.
    #[test]
    fn a_silence_applies_only_inside_its_window() {
        let t = |m: i64| -> DateTime<Utc> {
            "2026-12-07T01:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(m)
        };
        let mut s = Silence {
            id: 1,
            matchers: Vec::new(),
            starts_at: t(10),
            ends_at: t(20),
            created_by: "ops.a".into(),
            via: "local".into(),
            comment: String::new(),
            created_at: t(0),
            expired_at: None,
            expired_by: None,
        };
        let window: Vec<bool> = [0, 9, 10, 15, 19, 20, 30]
            .map(|m| s.active_at(t(m)))
            .to_vec();
        assert_eq!(window, [false, false, true, true, true, false, false]);
        s.expired_at = Some(t(12));
        assert!(s.active_at(t(11)));
        assert!(!s.active_at(t(12)) && !s.active_at(t(15)));
    }
}
