//! A delivery lane: all email goes through one mail server, and each webhook
//! channel is its own receiver, so each is scheduled (in-flight bound, digest
//! window, round robin) on its own.
//!
//! **Invariant:** a lane is this type everywhere, never a string built or
//! parsed by hand (`tests/architecture.rs` looks for `"webhook:`).

use std::fmt;

use crate::engine::ChannelKind;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Email,
    /// A webhook channel, by its name in `webhooks:`.
    Webhook(String),
}

impl Lane {
    /// The lane of a message on `channel` to `recipient` (an address, or a
    /// webhook channel's name).
    pub fn of(channel: ChannelKind, recipient: &str) -> Lane {
        match channel {
            ChannelKind::Email => Lane::Email,
            ChannelKind::Webhook => Lane::Webhook(recipient.to_string()),
        }
    }

    pub fn channel(&self) -> ChannelKind {
        match self {
            Lane::Email => ChannelKind::Email,
            Lane::Webhook(_) => ChannelKind::Webhook,
        }
    }

    /// A webhook lane's channel name.
    pub fn webhook(&self) -> Option<&str> {
        match self {
            Lane::Email => None,
            Lane::Webhook(name) => Some(name),
        }
    }
}

/// For logs: `email`, or `webhook:NAME`.
impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Email => f.write_str("email"),
            Lane::Webhook(name) => write!(f, "webhook:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_lanes_come_before_webhook_lanes_in_name_order() {
        let mut lanes = [
            Lane::of(ChannelKind::Webhook, "ops"),
            Lane::of(ChannelKind::Email, "a@bank.example"),
            Lane::of(ChannelKind::Webhook, "lobby"),
        ];
        lanes.sort();
        let shown: Vec<String> = lanes.iter().map(Lane::to_string).collect();
        assert_eq!(shown, ["email", "webhook:lobby", "webhook:ops"]);
        assert_eq!(lanes[1].webhook(), Some("lobby"));
        assert_eq!(lanes[0].webhook(), None);
        assert_eq!(lanes[2].channel(), ChannelKind::Webhook);
    }
}
