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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub regex: bool,
}

impl Matcher {
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
            anchored(&self.value).is_ok_and(|re| re.is_match(have))
        } else {
            have == self.value
        }
    }

    /// Whether it would match anything at all (a regex such as `.*`).
    fn matches_anything(&self) -> bool {
        self.regex
            && anchored(&self.value)
                .is_ok_and(|re| re.is_match("") && re.is_match("x") && re.is_match("sh-001"))
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
    pub comment: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expired_at: Option<DateTime<Utc>>,
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
    pub comment: String,
    /// Allow a silence that matches every event.
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
        for m in &spec.matchers {
            if m.regex && anchored(&m.value).is_err() {
                return Err(ActionError::Invalid(format!(
                    "matcher `{}`: `{}` is not a valid regular expression",
                    m.name, m.value
                )));
            }
        }
        if !spec.force && spec.matchers.iter().all(Matcher::matches_anything) {
            return Err(ActionError::Invalid(
                "this silence would match every event: give matchers (e.g. branch and system), or \"force\": true".into(),
            ));
        }
        if spec.ends_at <= spec.starts_at || spec.ends_at <= now {
            return Err(ActionError::Invalid(
                "ends_at must be after starts_at and in the future".into(),
            ));
        }
        let id = self.next_silence;
        self.next_silence += 1;
        let s = Silence {
            id,
            matchers: spec.matchers,
            starts_at: spec.starts_at,
            ends_at: spec.ends_at,
            created_by: spec.created_by,
            comment: spec.comment,
            created_at: now,
            expired_at: None,
        };
        round.history.push(HistoryEntry {
            incident: None,
            at: now,
            what: "silence.created".into(),
            by: s.created_by.clone(),
            detail: format!("silence {id}: {}", describe(&s)),
        });
        round.silences.push(s.clone());
        self.silences.insert(id, s);
        Ok(id)
    }

    pub fn expire_silence(
        &mut self,
        id: i64,
        by: &str,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Result<(), ActionError> {
        let s = self
            .silences
            .get_mut(&id)
            .filter(|s| s.expired_at.is_none() && s.ends_at > now)
            .ok_or_else(|| ActionError::Conflict(format!("silence {id} is not in force")))?;
        s.expired_at = Some(now);
        round.history.push(HistoryEntry {
            incident: None,
            at: now,
            what: "silence.expired".into(),
            by: by.to_string(),
            detail: format!("silence {id}: {}", describe(s)),
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
                    && w.matchers.iter().all(|(k, v)| {
                        Matcher {
                            name: k.clone(),
                            value: v.clone(),
                            regex: false,
                        }
                        .matches(ev)
                    })
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

fn describe(s: &Silence) -> String {
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
        s.starts_at.to_rfc3339(),
        s.ends_at.to_rfc3339(),
        if s.comment.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.comment)
        }
    )
}

/// Silences as a map for the store.
pub type Silences = BTreeMap<i64, Silence>;
