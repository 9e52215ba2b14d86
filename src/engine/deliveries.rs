//! What the engine makes of delivery attempts and refused links: history lines
//! (and audit rows) decided here, not in the wiring.

use chrono::{DateTime, Utc};

use super::*;

/// The outcome of one delivery attempt, as the delivery worker reports it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub update: DeliveryUpdate,
    pub incident: i64,
    /// The step the message belongs to, if any.
    pub step: Option<String>,
    /// Whether it is a `webhook` step's own announcement.
    pub announcement: bool,
    pub channel: ChannelKind,
    pub target: String,
    pub recipient: String,
    pub error: Option<String>,
    /// How a delivered one went: `written to data/mail/…`, `accepted by
    /// 127.0.0.1:2525`, `… answered 200 OK`.
    pub how: Option<String>,
}

impl Engine {
    /// Records delivery attempts: the outbox rows' new state, a history line
    /// each, and a count for the metrics.
    pub fn delivered(&mut self, attempts: Vec<Attempt>, now: DateTime<Utc>, round: &mut Round) {
        for a in attempts {
            let u = &a.update;
            let branch = self
                .live
                .get(&a.incident)
                .map(|i| i.branch.clone())
                .unwrap_or_default();
            let to = match a.channel {
                ChannelKind::Email => format!("email to {} ({})", a.recipient, a.target),
                ChannelKind::Webhook => format!("webhook to {}", a.target),
            };
            let error = a.error.as_deref().unwrap_or("unknown error");
            let (what, outcome, detail) = match (&u.delivered_at, &u.failed_at) {
                (Some(_), _) => (
                    "notification.delivered",
                    "delivered",
                    match &a.how {
                        Some(how) => format!("{to}: {how} (attempt {})", u.attempts),
                        None => format!("{to}: delivered on attempt {}", u.attempts),
                    },
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
                            .map(|t| fmt_time(t, &self.loaded, &branch))
                            .unwrap_or_default()
                    ),
                ),
            };
            round.stats.notifications.push((a.channel, outcome));
            Self::history(round, a.incident, now, what, "branchguard", detail);
            if a.announcement
                && let Some(step) = &a.step
            {
                self.announcement_settled(a.incident, step, &a, now, round);
            }
            round.deliveries.push(a.update);
        }
    }

    /// A `webhook` step is done when its announcement is delivered, and fails
    /// when delivery is given up (the operations centre is told).
    fn announcement_settled(
        &mut self,
        iid: i64,
        step: &str,
        a: &Attempt,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some((idx, run)) = inc.step_mut(step) else {
            return;
        };
        if !run.open() {
            return;
        }
        if a.update.delivered_at.is_some() {
            run.state = StepState::Done;
            run.done_at = Some(now);
            run.by = Some("branchguard".into());
            round.touched.insert(iid);
            Self::history(
                round,
                iid,
                now,
                "step.done",
                "branchguard",
                format!("step {step}: announcement delivered to {}", a.target),
            );
        } else if a.update.failed_at.is_some() {
            run.state = StepState::Failed;
            run.done_at = Some(now);
            round.touched.insert(iid);
            let inc = inc.clone();
            let why = format!(
                "FAILED: the announcement to {} could not be delivered: {}",
                a.target,
                a.error.as_deref().unwrap_or("unknown error")
            );
            let spec = inc
                .playbook
                .as_ref()
                .and_then(|p| p.steps.get(idx))
                .cloned();
            let ops: Vec<_> = self
                .ops_target()
                .into_iter()
                .filter(|t| t.to_string() != a.target)
                .collect();
            let sent = if ops.is_empty() {
                "nobody else to tell".to_string()
            } else {
                self.notify(
                    &inc,
                    spec.as_ref(),
                    &ops,
                    Msg::new(Ask::Failed, &why),
                    round,
                    now,
                )
            };
            Self::history(
                round,
                iid,
                now,
                "step.failed",
                "branchguard",
                format!("step {step}: {why}; {sent}"),
            );
        }
    }

    /// A request refused by access control: an audit line (token name,
    /// endpoint, reason; never the token).
    pub fn auth_denied(&mut self, detail: String, now: DateTime<Utc>, round: &mut Round) {
        round.history.push(HistoryEntry {
            incident: None,
            at: now,
            what: "auth.denied".into(),
            by: "auth".into(),
            via: VIA_ENGINE.into(),
            detail,
        });
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
            via: VIA_LINK.into(),
            detail,
        });
    }
}
