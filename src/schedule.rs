//! Cron schedules for drills, in the dialect of docs/PLAYBOOKS.md (drills): a seconds field, an
//! optional year, five-field expressions run at second 0, and day-of-week by name.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

/// A checked drill schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub source: String,
    inner: cron::Schedule,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let full = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 | 7 => fields.join(" "),
            n => {
                return Err(format!(
                    "cron expression `{expr}` has {n} fields: expected `sec min hour day-of-month month day-of-week [year]` or the five-field `min hour day-of-month month day-of-week`"
                ));
            }
        };
        let dow_index = 5;
        let normalized: Vec<&str> = full.split_whitespace().collect();
        check_day_of_week(normalized[dow_index])?;
        let inner = cron::Schedule::from_str(&full).map_err(|e| invalid(expr, &e))?;
        Ok(Schedule {
            source: expr.to_string(),
            inner,
        })
    }

    /// The first run strictly after `t`, evaluated in `tz`.
    ///
    /// The cron crate skips local times that do not exist, so the schedule is
    /// walked in naive local time and each hit placed on the zone here: a time in
    /// a daylight-saving gap moves to the first valid instant after the gap, and a
    /// time in a repeated hour takes its first occurrence only.
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let naive_now = t.with_timezone(&tz).naive_local();
        let start = Utc.from_utc_datetime(&naive_now);
        for hit in self.inner.after(&start).take(1000) {
            let naive = hit.naive_utc();
            let placed = match tz.from_local_datetime(&naive) {
                LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => Some(x),
                LocalResult::None => (1..=180).find_map(|m| {
                    tz.from_local_datetime(&(naive + chrono::Duration::minutes(m)))
                        .earliest()
                }),
            };
            if let Some(p) = placed.map(|p| p.with_timezone(&Utc))
                && p > t
            {
                return Some(p);
            }
        }
        None
    }
}

/// The cron crate's message repeats the expression with a caret under the bad
/// spot; on one line we say which field that is instead.
fn invalid(expr: &str, e: &cron::error::Error) -> String {
    const NAMES: [&str; 7] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
        "year",
    ];
    let text = e.to_string();
    let caret = text.lines().nth(1).and_then(|l| l.find('^'));
    let field = caret.map(|c| {
        let first = text.lines().next().unwrap_or_default();
        let before = first.get(..c).unwrap_or(first);
        let idx = before.split_whitespace().count();
        NAMES.get(idx).copied().unwrap_or("expression")
    });
    match field {
        Some(f) => {
            format!("invalid cron expression `{expr}`: the {f} field is out of range or malformed")
        }
        None => format!(
            "invalid cron expression `{expr}`: {}",
            text.lines().next().unwrap_or_default()
        ),
    }
}

/// Dialects disagree on whether day 1 is Sunday or Monday, so numbers are refused.
fn check_day_of_week(field: &str) -> Result<(), String> {
    for part in field.split(',') {
        let range = part.split('/').next().unwrap_or(part);
        for bound in range.split('-') {
            if !bound.is_empty() && bound.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "day-of-week `{field}` is numeric: write days by name (e.g. MON-FRI, Sat,Sun), because cron dialects disagree on whether 1 is Sunday or Monday"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn six_and_five_field_forms() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let s = Schedule::parse("0 0 10 * * Wed").unwrap();
        // Tuesday 2026-11-24 → Wednesday 10:00 Shanghai.
        assert_eq!(
            s.next_after(at("2026-11-24T12:00:00+08:00"), tz),
            Some(at("2026-11-25T10:00:00+08:00"))
        );
        let five = Schedule::parse("30 9 * * MON-FRI").unwrap();
        assert_eq!(
            five.next_after(at("2026-11-27T10:00:00+08:00"), tz),
            Some(at("2026-11-30T09:30:00+08:00"))
        );
    }

    #[test]
    fn numeric_day_of_week_is_rejected() {
        for e in ["0 0 10 * * 1", "0 10 * * 1-5", "0 0 10 * * MON,3"] {
            let err = Schedule::parse(e).unwrap_err();
            assert!(err.contains("write days by name"), "{e}: {err}");
        }
    }

    #[test]
    fn day_of_month_and_weekday_both_apply() {
        // "first Wednesday of the month": both fields must hold.
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let s = Schedule::parse("0 0 10 1-7 * Wed").unwrap();
        assert_eq!(
            s.next_after(at("2026-11-24T12:00:00+08:00"), tz),
            Some(at("2026-12-02T10:00:00+08:00"))
        );
    }

    #[test]
    fn wrong_field_count_and_garbage() {
        assert!(
            Schedule::parse("* * *")
                .unwrap_err()
                .contains("has 3 fields")
        );
        assert!(
            Schedule::parse("0 0 25 * * Wed")
                .unwrap_err()
                .contains("invalid cron")
        );
    }

    #[test]
    fn dst_gap_fires_after_the_gap_and_repeated_hour_fires_once() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 02:30 does not exist in New York.
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        let next = s.next_after(at("2026-03-08T00:00:00-05:00"), tz).unwrap();
        assert_eq!(next, at("2026-03-08T03:00:00-04:00"));
        // 2026-11-01 01:30 happens twice; the schedule fires once that day.
        let s = Schedule::parse("0 30 1 * * *").unwrap();
        let first = s.next_after(at("2026-11-01T00:00:00-04:00"), tz).unwrap();
        let second = s.next_after(first, tz).unwrap();
        assert!(
            second - first >= chrono::Duration::hours(23),
            "{first} then {second}"
        );
    }
}
