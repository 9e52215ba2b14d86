//! What the engine makes of delivery attempts and refused links: history lines
//! (and audit rows) decided here, not in the wiring.

use chrono::{DateTime, Utc};

use super::*;

/// The outcome of one delivery attempt, as the delivery worker reports it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub update: DeliveryUpdate,
    pub incident: i64,
    pub channel: ChannelKind,
    pub target: String,
    pub recipient: String,
    pub error: Option<String>,
}

impl Engine {
    /// Records delivery attempts: the outbox rows' new state, a history line
    /// each, and a count for the metrics.
    pub fn delivered(&mut self, attempts: Vec<Attempt>, now: DateTime<Utc>, round: &mut Round) {
        for a in attempts {
            let u = &a.update;
            let to = match a.channel {
                ChannelKind::Email => format!("email to {} ({})", a.recipient, a.target),
                ChannelKind::Webhook => format!("webhook to {}", a.target),
            };
            let error = a.error.as_deref().unwrap_or("unknown error");
            let (what, outcome, detail) = match (&u.delivered_at, &u.failed_at) {
                (Some(_), _) => (
                    "notification.delivered",
                    "delivered",
                    format!("{to}: delivered on attempt {}", u.attempts),
                ),
                (None, Some(_)) => (
                    "notification.failed",
                    "failed",
                    format!("{to}: gave up after {} attempts: {error}", u.attempts),
                ),
                (None, None) => (
                    "notification.retry",
                    "retry",
                    format!(
                        "{to}: attempt {} failed: {error}; next attempt at {}",
                        u.attempts,
                        u.next_attempt_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    ),
                ),
            };
            round.stats.notifications.push((a.channel, outcome));
            Self::history(round, a.incident, now, what, "branchguard", detail);
            round.deliveries.push(a.update);
        }
    }

    /// A refused one-click link: an audit line, on the incident when it names one
    /// we can trust, else on the daemon.
    pub fn link_refused(
        &mut self,
        incident: Option<i64>,
        detail: String,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        round.history.push(HistoryEntry {
            incident,
            at: now,
            what: "link.refused".into(),
            by: "link".into(),
            detail,
        });
    }
}
