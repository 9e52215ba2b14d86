//! `{{…}}` templates used in command arguments, webhook bodies and messages.
//!
//! Templates are checked when the playbook loads, so an unknown variable is a
//! config error with a line number, never an empty string in a 3 a.m. message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The variables a template may name. `labels.NAME` is any event label.
pub const VARIABLES: &[&str] = &[
    "branch",
    "branch_name",
    "region",
    "playbook",
    "playbook_name",
    "incident",
    "tier",
    "tier_name",
    "kind",
    "severity",
    "summary",
    "step",
    "step_title",
    "deadline",
    "drill",
    "links.incident",
    "links.api",
    "links.ack",
];

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Character offset of the bad placeholder within the template.
    pub offset: usize,
    pub message: String,
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut consumed = 0;
    while let Some(start) = rest.find("{{") {
        out.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError {
                offset: s[..consumed + start].chars().count(),
                message: "unclosed `{{`: expected `}}`".into(),
            });
        };
        out.push(Piece::Var(after[..end].trim()));
        let used = start + 2 + end + 2;
        consumed += used;
        rest = &rest[used..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

impl Template {
    /// The text when it has no placeholders: the same whatever it is filled with.
    pub fn fixed(&self) -> Option<&str> {
        (!self.0.contains("{{")).then_some(self.0.as_str())
    }

    /// Checks that every placeholder names a known variable.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut offset = 0;
        let mut pos = 0;
        for p in pieces(s)? {
            match p {
                Piece::Text(t) => {
                    offset += t.chars().count();
                    pos += t.len();
                }
                Piece::Var(v) => {
                    let known = VARIABLES.contains(&v)
                        || v.strip_prefix("labels.").is_some_and(|l| !l.is_empty());
                    if !known {
                        return Err(TemplateError {
                            offset,
                            message: format!(
                                "unknown template variable `{{{{{v}}}}}`: expected one of {}, or labels.NAME",
                                VARIABLES.join(", ")
                            ),
                        });
                    }
                    let raw = &s[pos..];
                    let len = raw.find("}}").map_or(raw.len(), |e| e + 2);
                    offset += raw[..len].chars().count();
                    pos += len;
                }
            }
        }
        Ok(Template(s.to_string()))
    }

    /// Fills the placeholders; a label the event does not carry renders empty.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(self.0.len());
        // Parsing succeeded at load time, so pieces() cannot fail here; fall back to the raw text.
        match pieces(&self.0) {
            Ok(ps) => {
                for p in ps {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Var(v) => out.push_str(vars.get(v).map_or("", String::as_str)),
                    }
                }
            }
            Err(_) => out.push_str(&self.0),
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_variables_and_labels() {
        let t = Template::parse("{{branch}}/{{ labels.system }}: tier {{tier}}").unwrap();
        let vars: BTreeMap<String, String> = [
            ("branch", "sh-001"),
            ("labels.system", "core"),
            ("tier", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(t.render(&vars), "sh-001/core: tier 2");
    }

    #[test]
    fn unknown_variable_is_reported_with_its_offset() {
        let e = Template::parse("go {{branch}} {{brnach}}").unwrap_err();
        assert_eq!(e.offset, 14);
        assert!(e.message.contains("`{{brnach}}`"), "{}", e.message);
    }

    #[test]
    fn unclosed_placeholder_is_an_error() {
        let e = Template::parse("ab {{branch").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("unclosed"));
    }
}
