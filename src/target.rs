//! Who a step or message goes to, in the forms of docs/CONFIGURATION.md.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// `person:ID`
    Person(String),
    /// `role:NAME`: people with that role in the incident's branch.
    Role(String),
    /// `branch-head`: the heads of the incident's branch.
    BranchHead,
    /// `neighbour-heads`: the heads of the branch's mutual-aid partners.
    NeighbourHeads,
    /// `channel:NAME`: a webhook channel.
    Channel(String),
    /// `contact:ID`: someone outside the staff list (`contacts:`).
    Contact(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = || {
            format!(
                "invalid target `{s}`: expected `person:ID`, `role:NAME`, `branch-head`, `neighbour-heads`, `channel:NAME` or `contact:ID`"
            )
        };
        match s {
            "branch-head" => return Ok(Target::BranchHead),
            "neighbour-heads" => return Ok(Target::NeighbourHeads),
            _ => {}
        }
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "person" => Ok(Target::Person(name.into())),
            "role" => Ok(Target::Role(name.into())),
            "channel" => Ok(Target::Channel(name.into())),
            "contact" => Ok(Target::Contact(name.into())),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Target::parse(&s)
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Person(p) => write!(f, "person:{p}"),
            Target::Role(r) => write!(f, "role:{r}"),
            Target::BranchHead => f.write_str("branch-head"),
            Target::NeighbourHeads => f.write_str("neighbour-heads"),
            Target::Channel(c) => write!(f, "channel:{c}"),
            Target::Contact(c) => write!(f, "contact:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_form() {
        for s in [
            "person:li.wei",
            "role:it-duty",
            "branch-head",
            "neighbour-heads",
            "channel:ops-centre",
        ] {
            assert_eq!(Target::parse(s).unwrap().to_string(), s);
        }
        assert!(Target::parse("team:x").is_err());
        assert!(Target::parse("role:").is_err());
        assert!(Target::parse("branchhead").is_err());
    }
}
