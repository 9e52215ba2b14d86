//! When a failed delivery is tried again: exponential backoff with jitter,
//! up to a horizon after which the row is given up.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::DeliveryConfig;

/// When to try again after the `attempts`-th failure, or `None` to give up.
pub fn next_attempt(
    cfg: &DeliveryConfig,
    id: i64,
    attempts: i64,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let exp = 2f64.powi((attempts - 1).clamp(0, 30) as i32);
    let base = (cfg.retry_initial.as_secs_f64() * exp).min(cfg.retry_max.as_secs_f64());
    // Jitter of ±20%, derived from the row and attempt so it is reproducible.
    let h = Sha256::digest(format!("{id}/{attempts}").as_bytes());
    let unit = f64::from(u16::from_be_bytes([h[0], h[1]])) / f64::from(u16::MAX);
    let delay = base * (0.8 + 0.4 * unit);
    let next = now + chrono::Duration::milliseconds((delay * 1000.0) as i64);
    let horizon =
        created + chrono::Duration::from_std(cfg.horizon).unwrap_or(chrono::Duration::MAX);
    (next <= horizon).then_some(next)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max_then_gives_up_at_the_horizon() {
        let cfg = DeliveryConfig {
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            horizon: Duration::from_secs(300),
            warn_after: Duration::from_secs(60),
            link_ttl: Duration::from_secs(3600),
            link_margin: Duration::from_secs(3600),
            in_flight: 8,
            digest: Duration::from_secs(30),
        };
        let t0 = DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z")
            .unwrap()
            .to_utc();
        let gap = |n: i64| {
            (next_attempt(&cfg, 1, n, t0, t0).unwrap() - t0).num_milliseconds() as f64 / 1000.0
        };
        assert!((8.0..=12.0).contains(&gap(1)), "{}", gap(1));
        assert!((16.0..=24.0).contains(&gap(2)), "{}", gap(2));
        assert!((48.0..=72.0).contains(&gap(5)), "capped at max: {}", gap(5));
        assert_eq!(
            next_attempt(&cfg, 1, 3, t0, t0 + chrono::Duration::seconds(290)),
            None,
            "past the horizon"
        );
    }
}
