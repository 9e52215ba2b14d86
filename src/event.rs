//! Events: what the monitoring world tells us (docs/API.md), and how raw input
//! (JSON bodies, YAML or JSON files) becomes a checked [`Event`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, parse_yaml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "minor" => Some(Severity::Minor),
            "major" => Some(Severity::Major),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// An event as submitted. Unknown fields are refused so a typo (`sevrity`) is
/// not silently read as the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub kind: String,
    pub branch: String,
    pub severity: Option<Severity>,
    pub status: Option<Status>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub summary: Option<String>,
    pub occurred_at: Option<DateTime<FixedOffset>>,
    pub source: Option<String>,
}

/// A checked event, ready to be stored and matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: String,
    pub branch: String,
    pub severity: Severity,
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub summary: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
}

/// Why an event was refused, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    pub field: Option<String>,
    pub message: String,
}

impl EventError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        EventError {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl EventInput {
    /// Back to the wire format, for the command-line client.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v =
            serde_json::json!({ "kind": self.kind, "branch": self.branch, "labels": self.labels });
        if let Some(s) = self.severity {
            v["severity"] = s.as_str().into();
        }
        if let Some(s) = self.status {
            v["status"] = s.as_str().into();
        }
        if let Some(s) = &self.summary {
            v["summary"] = s.as_str().into();
        }
        if let Some(t) = self.occurred_at {
            v["occurred_at"] = t.to_rfc3339().into();
        }
        v["source"] = self.source.clone().unwrap_or_else(|| "cli".into()).into();
        v
    }

    /// What can be read of a refused event, with the defaults filled in and
    /// nothing checked: kept so a refusal is visible, never matched.
    pub fn unchecked(self, received_at: DateTime<Utc>, default_source: &str) -> Event {
        Event {
            kind: self.kind,
            branch: self.branch,
            severity: self.severity.unwrap_or(Severity::Major),
            status: self.status.unwrap_or(Status::Firing),
            labels: self.labels,
            summary: self.summary,
            // Out of range (refused for it below): the time it came.
            occurred_at: self
                .occurred_at
                .map(|t| t.to_utc().trunc_subsecs(3))
                .filter(|t| writable(*t))
                .unwrap_or(received_at),
            source: self.source.unwrap_or_else(|| default_source.to_string()),
        }
    }

    /// Checks the event against the known branches and fills the defaults.
    pub fn check(
        self,
        branch_known: impl Fn(&str) -> bool,
        received_at: DateTime<Utc>,
        default_source: &str,
    ) -> Result<Event, EventError> {
        if self.kind.trim().is_empty() {
            return Err(EventError::field("kind", "`kind` must not be empty"));
        }
        if let Some(t) = self.occurred_at
            && !writable(t.to_utc())
        {
            return Err(EventError::field(
                "occurred_at",
                format!("`{t}` is out of range: a time in UTC from 1970 to 9999"),
            ));
        }
        if !branch_known(&self.branch) {
            return Err(EventError::field(
                "branch",
                format!(
                    "unknown branch `{}`: it is not in the configuration",
                    self.branch
                ),
            ));
        }
        Ok(Event {
            kind: self.kind,
            branch: self.branch,
            severity: self.severity.unwrap_or(Severity::Major),
            status: self.status.unwrap_or(Status::Firing),
            labels: self.labels,
            summary: self.summary,
            // To the millisecond, as every time the store keeps: a finer one
            // read back would differ from what its audit row recorded, and
            // `audit verify` would call an honest database broken.
            occurred_at: self
                .occurred_at
                .map_or(received_at, |t| t.to_utc().trunc_subsecs(3)),
            source: self.source.unwrap_or_else(|| default_source.to_string()),
        })
    }
}

/// Whether a time can be stored and read back as RFC 3339 (four-digit
/// years, in UTC): `9999-12-31T23:59:59-23:59` is in the year 10000.
pub fn writable(t: DateTime<Utc>) -> bool {
    (1970..=9999).contains(&chrono::Datelike::year(&t))
}

/// One event or an array of them.
struct OneOrMany(Vec<EventInput>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object or an array of event objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
                EventInput::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|e| OneOrMany(vec![e]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = seq.next_element::<EventInput>()? {
                    out.push(e);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses an API body: one JSON event or an array. The error names the field path.
pub fn parse_json(body: &[u8]) -> Result<Vec<EventInput>, EventError> {
    // Syntax first, so that "malformed JSON" means exactly that; then the shape,
    // whose errors carry the path of the field at fault.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| EventError {
        field: None,
        message: format!("malformed JSON: {e}"),
    })?;
    match serde_path_to_error::deserialize::<_, OneOrMany>(value) {
        Ok(v) if v.0.is_empty() => Err(EventError {
            field: None,
            message: "no events: expected an event object or a non-empty array".into(),
        }),
        Ok(v) => Ok(v.0),
        Err(e) => {
            let path = e.path().to_string();
            let field = (!path.is_empty() && path != ".").then_some(path);
            Err(EventError {
                field,
                message: e.into_inner().to_string(),
            })
        }
    }
}

/// Parses an event file (JSON or YAML) with file:line:col errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<EventInput>, Diagnostic> {
    parse_yaml::<OneOrMany>(file, text).map(|v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json(br#"{"kind":"x","branch":"b","severity":"awful"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("severity"));
        let e = parse_json(
            br#"[{"kind":"x","branch":"b"},{"kind":"x","branch":"b","labels":{"a":1}}]"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("[1].labels.a"));
        let e = parse_json(br#"{"kind":"x","branch":"b","severity":3}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("severity"));
        assert!(!e.message.contains("malformed"), "{}", e.message);
        let e = parse_json(br#"{"kind":"x""#).unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = parse_json(br#"{"branch":"b"}"#).unwrap_err();
        assert!(e.message.contains("missing field `kind`"), "{}", e.message);
    }

    #[test]
    fn defaults_and_unknown_branch() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
            .unwrap()
            .to_utc();
        let ev = parse_json(br#"{"kind":"system.down","branch":"sh-001"}"#)
            .unwrap()
            .remove(0);
        let ev = ev.check(|b| b == "sh-001", now, "api").unwrap();
        assert_eq!(
            (ev.severity, ev.status, ev.occurred_at),
            (Severity::Major, Status::Firing, now)
        );
        let ev = parse_json(br#"{"kind":"system.down","branch":"xx-9"}"#)
            .unwrap()
            .remove(0);
        let e = ev.check(|b| b == "sh-001", now, "api").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("branch"));
    }

    /// A time the store could not read back (a five-digit year in UTC) is
    /// refused, and a refused event keeps the time it came instead.
    #[test]
    fn an_occurred_at_past_the_year_9999_is_refused() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
            .unwrap()
            .to_utc();
        let far = || {
            parse_json(
                br#"{"kind":"x","branch":"sh-001","occurred_at":"9999-12-31T23:59:59-23:59"}"#,
            )
            .unwrap()
            .remove(0)
        };
        let e = far().check(|_| true, now, "api").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("occurred_at"), "{e}");
        assert_eq!(far().unchecked(now, "api").occurred_at, now);
        let fine = parse_json(
            br#"{"kind":"x","branch":"sh-001","occurred_at":"9999-12-31T23:59:59+01:00"}"#,
        )
        .unwrap()
        .remove(0);
        assert!(fine.check(|_| true, now, "api").is_ok());
    }
}
