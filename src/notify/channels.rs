//! Which delivery channels are failing, and since when. A channel (the mail
//! server, or one webhook channel) that has failed for longer than
//! `notify.retry.warn_after` is logged at warn once — not once per attempt —
//! and shown in `/api/v1/status` until a delivery through it succeeds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One failing channel.
#[derive(Debug, Clone, Serialize)]
pub struct Failing {
    pub since: DateTime<Utc>,
    pub last_error: String,
    pub failed_attempts: u64,
    /// Whether it has failed long enough to have been logged.
    pub alarmed: bool,
}

#[derive(Debug, Default)]
pub struct ChannelHealth {
    failing: Mutex<BTreeMap<String, Failing>>,
}

impl ChannelHealth {
    /// Records one attempt through `channel`: `None` for a success.
    pub fn record(
        &self,
        channel: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
        warn_after: Duration,
    ) {
        let mut map = match self.failing.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let Some(error) = error else {
            if map.remove(channel).is_some_and(|f| f.alarmed) {
                tracing::info!("notification channel {channel} delivers again");
            }
            return;
        };
        let f = map.entry(channel.to_string()).or_insert_with(|| Failing {
            since: now,
            last_error: String::new(),
            failed_attempts: 0,
            alarmed: false,
        });
        f.failed_attempts += 1;
        f.last_error = error.to_string();
        let failing_for = (now - f.since).to_std().unwrap_or(Duration::ZERO);
        if !f.alarmed && failing_for >= warn_after {
            f.alarmed = true;
            tracing::warn!(
                "notification channel {channel} has been failing for {} (since {}, {} failed attempts); messages wait in the outbox and are retried: {error}",
                crate::show::span(failing_for),
                crate::show::time(f.since, chrono_tz::UTC),
                f.failed_attempts
            );
        }
    }

    /// The channels failing now.
    pub fn failing(&self) -> BTreeMap<String, Failing> {
        match self.failing.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_alarmed_once_after_warn_after_and_cleared_by_a_success() {
        let h = ChannelHealth::default();
        let t0 = DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z")
            .unwrap()
            .to_utc();
        let after = Duration::from_secs(60);
        h.record("ops-centre", Some("500"), t0, after);
        assert!(!h.failing()["ops-centre"].alarmed);
        h.record(
            "ops-centre",
            Some("500"),
            t0 + chrono::Duration::seconds(61),
            after,
        );
        let f = &h.failing()["ops-centre"];
        assert!(f.alarmed);
        assert_eq!((f.since, f.failed_attempts), (t0, 2));
        h.record("email", None, t0, after);
        assert!(!h.failing().contains_key("email"));
        h.record(
            "ops-centre",
            None,
            t0 + chrono::Duration::seconds(62),
            after,
        );
        assert!(h.failing().is_empty());
    }
}
