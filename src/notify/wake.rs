//! How the engine loop tells the delivery worker that it committed outbox
//! rows, and for which groups. In a storm the engine commits a round every
//! millisecond or so; when every group that got rows is already waiting for
//! its digest window, or has a delivery under way, the worker has nothing to
//! start and skips its outbox queries (before this they were a fifth of the
//! daemon's CPU in the storm benchmark's profile).
//!
//! At rest it also hands over the committed rows themselves, so a message to
//! an idle lane starts without the worker reading the outbox at all (those
//! reads were a fifth of an event's way to a webhook at rest).
//!
//! **Invariant:** groups and rows are noted only after they are committed,
//! and the worker takes what was noted before it reads the outbox, so what a
//! pass takes is always seen by that pass's queries; each row is started from
//! one of the two, never both.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::engine::Notification;
use crate::store::{DueGroup, Lane, OutboxRow};

/// A lane and one of its groups.
pub(super) type GroupKey = (Lane, DueGroup);

/// The lane and group a new notification is delivered in.
fn key_of(n: &Notification) -> GroupKey {
    let group = DueGroup {
        recipient: n.recipient.clone(),
        drill: n.drill,
    };
    (Lane::of(n.channel, &n.recipient), group)
}

/// How many committed rows the wake keeps for the worker to start without
/// reading them back. At rest a round queues a message or two; a storm's
/// rounds queue more, and then the outbox is read anyway.
const READY_MAX: usize = 32;

/// What was committed since the worker last looked.
#[derive(Default)]
pub(super) struct Fresh {
    pub groups: HashSet<GroupKey>,
    /// Every row committed since the last take, oldest first, or `None` when
    /// there were too many to keep (then only the outbox has them all).
    pub rows: Option<Vec<(GroupKey, OutboxRow)>>,
}

#[derive(Default)]
struct Noted {
    groups: HashSet<GroupKey>,
    rows: Vec<(GroupKey, OutboxRow)>,
    spilled: bool,
}

#[derive(Default)]
pub struct Wake {
    notify: Notify,
    fresh: Mutex<Noted>,
}

impl Wake {
    /// Notes `rows`, just committed as outbox rows `ids`, and wakes the worker.
    /// A commit that withdrew announcements keeps no rows, nor does any row
    /// noted before it and not yet taken: one of them may be withdrawn, and
    /// only the outbox knows which.
    pub fn committed(&self, rows: Vec<Notification>, ids: &[i64], withdrew: bool) {
        // What is noted is always whole, so what a panic left is still good.
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        if withdrew || ids.len() != rows.len() || fresh.rows.len() + rows.len() > READY_MAX {
            fresh.spilled = true;
            fresh.rows = Vec::new();
        }
        let any = !rows.is_empty();
        for (i, n) in rows.into_iter().enumerate() {
            let key = key_of(&n);
            fresh.groups.insert(key.clone());
            match ids.get(i) {
                Some(id) if !fresh.spilled => fresh.rows.push((key, OutboxRow::queued(*id, n))),
                _ => {}
            }
        }
        drop(fresh);
        if any {
            self.notify.notify_one();
        }
    }

    pub(super) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// What was noted since the last take.
    pub(super) fn take(&self) -> Fresh {
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        let noted = std::mem::take(&mut *fresh);
        Fresh {
            groups: noted.groups,
            rows: (!noted.spilled).then_some(noted.rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ChannelKind;

    fn note(channel: ChannelKind, recipient: &str, subject: &str) -> Notification {
        Notification {
            incident: 1,
            step: None,
            channel,
            drill: false,
            target: "role:x".into(),
            recipient: recipient.into(),
            person: None,
            subject: subject.into(),
            body: String::new(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            links: Vec::new(),
            link_until: None,
            announcement: false,
            urgent: false,
            grant_until: None,
            payload: None,
        }
    }

    #[test]
    fn groups_are_noted_by_lane_recipient_and_drill_and_taken_once() {
        let wake = Wake::default();
        let rows = [
            note(ChannelKind::Email, "a@bank.example", "ATM down"),
            note(ChannelKind::Email, "a@bank.example", "ATM down again"),
            // A drill's by its flag, whatever its subject says.
            Notification {
                drill: true,
                ..note(ChannelKind::Email, "a@bank.example", "ATM down")
            },
            note(ChannelKind::Webhook, "lobby", "ATM down"),
        ];
        wake.committed(rows.to_vec(), &[1, 2, 3, 4], false);
        let taken = wake.take();
        let ready = taken.rows.expect("four rows are kept");
        let ids: Vec<i64> = ready.iter().map(|(_, r)| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4], "in commit order");
        assert_eq!(ready[3].0.0, Lane::Webhook("lobby".into()));
        assert!(ready[2].1.drill);
        let mut got: Vec<_> = taken.groups.into_iter().collect();
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
            assert_eq!(
                (lane.to_string().as_str(), g.recipient.as_str(), g.drill),
                (l, r, d)
            );
        }
        let again = wake.take();
        assert!(again.groups.is_empty());
        assert_eq!(again.rows.map(|r| r.len()), Some(0));
    }

    #[test]
    fn past_the_cap_no_rows_are_kept_but_every_group_is_noted() {
        let wake = Wake::default();
        let rows: Vec<Notification> = (0..=READY_MAX)
            .map(|i| {
                note(
                    ChannelKind::Email,
                    &format!("p{i}@bank.example"),
                    "ATM down",
                )
            })
            .collect();
        let ids: Vec<i64> = (1..=READY_MAX as i64).collect();
        wake.committed(rows[..READY_MAX].to_vec(), &ids, false);
        wake.committed(rows[READY_MAX..].to_vec(), &[100], false);
        let taken = wake.take();
        assert!(taken.rows.is_none(), "some rows were not kept");
        assert_eq!(taken.groups.len(), READY_MAX + 1);
        // The next commit after a take is kept again.
        wake.committed(rows[..1].to_vec(), &[200], false);
        assert_eq!(wake.take().rows.map(|r| r.len()), Some(1));
    }

    /// An announcement withdrawn in the round that queued it, or in a later
    /// one before the worker looked, must not be started from the note.
    #[test]
    fn a_commit_that_withdraws_keeps_no_rows_noted_before_the_next_take() {
        let wake = Wake::default();
        let screen = [note(ChannelKind::Webhook, "lobby", "ATM down")];
        wake.committed(screen.to_vec(), &[1], true);
        assert!(wake.take().rows.is_none(), "withdrawn in the same round");
        wake.committed(screen.to_vec(), &[2], false);
        wake.committed(Vec::new(), &[], true);
        let taken = wake.take();
        assert!(taken.rows.is_none(), "withdrawn in a later round");
        assert_eq!(taken.groups.len(), 1, "its group is still read");
        // Ids that do not match the rows: nothing is kept, every group noted.
        wake.committed(screen.to_vec(), &[], false);
        let taken = wake.take();
        assert!(taken.rows.is_none());
        assert_eq!(taken.groups.len(), 1);
    }
}
