//! How times, durations and scores are written for people — in messages,
//! pages, the CLI and the dashboard alike — so that they read one way
//! everywhere: `2026-11-24 09:15:00 +08:00` in the branch's time zone, to the
//! second, with its offset; `7m32s`; a score to one decimal (`91.5`). JSON
//! keeps RFC 3339.
//!
//! **Invariant:** no other module writes a moment, a measured span or a
//! score for people (`tests/architecture.rs` looks for stray format
//! strings). A configured duration is echoed as it was configured
//! (`duration::short`: `timeout: 90s` stays `90s`), and file names carry
//! times in a sortable form of their own.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A moment for people, in `tz`.
pub fn time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A moment for people, or `-` when there is none.
pub fn time_or_dash(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    t.map_or_else(|| "-".to_string(), |t| time(t, tz))
}

/// A span in seconds for people: `45s`, `7m32s`, `2h5m`, `3d4h` (whole
/// seconds; under a day to the second, from a day on to the minute).
pub fn duration(seconds: f64) -> String {
    let neg = seconds < 0.0;
    let s = seconds.abs().round() as u64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if d > 0 {
        out.push_str(&format!("{d}d"));
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        return out;
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// A std duration for people, as [`duration`].
pub fn span(d: std::time::Duration) -> String {
    duration(d.as_secs_f64())
}

/// A score (0-100) to one decimal: `91.5`, `100.0`.
pub fn score(x: f64) -> String {
    format!("{x:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_to_write_a_time_a_duration_and_a_score() {
        let t: DateTime<Utc> = "2026-11-24T01:15:00.789Z".parse().unwrap();
        assert_eq!(
            time(t, chrono_tz::Asia::Shanghai),
            "2026-11-24 09:15:00 +08:00"
        );
        assert_eq!(time(t, chrono_tz::UTC), "2026-11-24 01:15:00 +00:00");
        assert_eq!(time_or_dash(None, chrono_tz::UTC), "-");
        assert_eq!(duration(452.0), "7m32s");
        assert_eq!(duration(21.4), "21s");
        assert_eq!(duration(0.2), "0s");
        assert_eq!(duration(3600.0), "1h");
        assert_eq!(duration(3725.0), "1h2m5s");
        assert_eq!(duration(259_200.0), "3d");
        assert_eq!(duration(4320.0 * 60.0), "3d");
        assert_eq!(duration(90_061.0), "1d1h1m");
        assert_eq!(duration(-30.0), "-30s");
        assert_eq!(score(91.5), "91.5");
        assert_eq!(score(100.0), "100.0");
        assert_eq!(score(91.54), "91.5");
    }
}
