//! How a lane's messages to one recipient are combined: the window they wait
//! for after the last one sent, and how much one digest carries.

use std::time::Duration;

use crate::config::Config;
use crate::store::{Lane, OutboxRow};

/// The most messages one digest carries; a larger backlog follows at once in
/// further digests. For email, a 10,000-incident storm for one person is five
/// digests (sizes in the storm benchmark's `person` part), well under the
/// 10 MB message limit common on mail servers; a webhook digest goes to small
/// receivers (a lobby screen) and stays short.
pub(super) fn digest_max(lane: &Lane) -> usize {
    match lane {
        Lane::Webhook(_) => 200,
        Lane::Email => 2000,
    }
}

/// The most message text one digest carries. Rendered with its links, as text
/// and HTML, and encoded, a digest is about five times this: well under the
/// 10 MB many mail servers take, whatever the templates write.
const DIGEST_BYTES: usize = 1_000_000;

/// How many of `rows` (oldest first) one digest takes: up to [`DIGEST_BYTES`]
/// of text, and always the first.
pub(super) fn within_budget(rows: &[OutboxRow]) -> usize {
    let mut total = 0;
    rows.iter()
        .take_while(|r| {
            total += r.body.len();
            total <= DIGEST_BYTES
        })
        .count()
        .max(1)
        .min(rows.len())
}

/// The window within which a lane's messages to one recipient are combined:
/// `notify.digest` for email, a webhook channel's `min_interval`; zero: none.
pub(super) fn window(cfg: &Config, lane: &Lane) -> Duration {
    match lane {
        Lane::Email => cfg.delivery.digest,
        Lane::Webhook(name) => cfg
            .webhooks
            .get(name)
            .and_then(|w| w.min_interval)
            .unwrap_or(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ChannelKind;

    fn row(id: i64, body_len: usize) -> OutboxRow {
        OutboxRow {
            id,
            incident: id,
            step: None,
            channel: ChannelKind::Email,
            drill: false,
            target: "role:it-duty".into(),
            recipient: "it@bank.example".into(),
            person: None,
            subject: "ATM down".into(),
            body: "x".repeat(body_len),
            created_at: chrono::DateTime::UNIX_EPOCH,
            links: Vec::new(),
            payload: None,
            attempts: 0,
            next_attempt_at: None,
            delivered_at: None,
            failed_at: None,
            last_error: None,
            link_until: None,
            announcement: false,
            urgent: false,
            grant_until: None,
        }
    }

    #[test]
    fn a_digest_takes_rows_up_to_its_size_and_always_the_first() {
        let rows: Vec<OutboxRow> = (0..5).map(|i| row(i, 400_000)).collect();
        assert_eq!(within_budget(&rows), 2);
        let small: Vec<OutboxRow> = (0..2000).map(|i| row(i, 400)).collect();
        assert_eq!(within_budget(&small), 2000);
        // One message larger than the budget still goes, on its own.
        assert_eq!(within_budget(&[row(1, 3_000_000), row(2, 10)]), 1);
        assert_eq!(within_budget(&[]), 0);
    }
}
