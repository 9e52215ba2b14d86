//! How the engine loop tells the delivery worker that it committed outbox
//! rows, and for which groups. In a storm the engine commits a round every
//! millisecond or so; when every group that got rows is already waiting for
//! its digest window, or has a delivery under way, the worker has nothing to
//! start and skips its outbox queries (before this they were a fifth of the
//! daemon's CPU in the storm benchmark's profile).
//!
//! **Invariant:** groups are noted only after their rows are committed, and
//! the worker takes the noted groups before it reads the outbox, so a group
//! taken by a pass is always seen by that pass's queries.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::engine::{ChannelKind, Notification};
use crate::store::DueGroup;

/// A lane (`email`, `webhook:<name>`) and one of its groups.
pub(super) type GroupKey = (String, DueGroup);

/// Whether an outbox row is a drill's. The engine marks drill messages in
/// their subject, and the store groups rows the same way.
pub(super) fn is_drill(subject: &str) -> bool {
    subject.starts_with("[DRILL]")
}

/// The lane and group a new notification is delivered in.
fn key_of(n: &Notification) -> GroupKey {
    let lane = match n.channel {
        ChannelKind::Email => "email".to_string(),
        ChannelKind::Webhook => format!("webhook:{}", n.recipient),
    };
    let group = DueGroup {
        recipient: n.recipient.clone(),
        drill: is_drill(&n.subject),
    };
    (lane, group)
}

#[derive(Default)]
pub struct Wake {
    notify: Notify,
    fresh: Mutex<HashSet<GroupKey>>,
}

impl Wake {
    /// Notes the groups of `rows`, just committed, and wakes the worker.
    pub fn committed<'a>(&self, rows: impl IntoIterator<Item = &'a Notification>) {
        // A set is always whole, so one left by a panic is still good.
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        fresh.extend(rows.into_iter().map(key_of));
        drop(fresh);
        self.notify.notify_one();
    }

    pub(super) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The groups noted since the last take.
    pub(super) fn take(&self) -> HashSet<GroupKey> {
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(channel: ChannelKind, recipient: &str, subject: &str) -> Notification {
        Notification {
            incident: 1,
            step: None,
            channel,
            target: "role:x".into(),
            recipient: recipient.into(),
            person: None,
            subject: subject.into(),
            body: String::new(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            links: Vec::new(),
            link_until: None,
            announcement: false,
            payload: None,
        }
    }

    #[test]
    fn groups_are_noted_by_lane_recipient_and_drill_and_taken_once() {
        let wake = Wake::default();
        let rows = [
            note(ChannelKind::Email, "a@bank.example", "ATM down"),
            note(ChannelKind::Email, "a@bank.example", "ATM down again"),
            note(ChannelKind::Email, "a@bank.example", "[DRILL] ATM down"),
            note(ChannelKind::Webhook, "lobby", "ATM down"),
        ];
        wake.committed(&rows);
        let mut got: Vec<_> = wake.take().into_iter().collect();
        got.sort_by(|a, b| {
            (&a.0, &a.1.recipient, a.1.drill).cmp(&(&b.0, &b.1.recipient, b.1.drill))
        });
        let want = [
            ("email", "a@bank.example", false),
            ("email", "a@bank.example", true),
            ("webhook:lobby", "lobby", false),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((lane, g), (l, r, d)) in got.iter().zip(want) {
            assert_eq!((lane.as_str(), g.recipient.as_str(), g.drill), (l, r, d));
        }
        assert!(wake.take().is_empty());
    }
}
