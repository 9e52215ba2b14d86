//! Durations as people write them in playbooks: `15m`, `1h30m`, `72h`, or
//! `3 working days`, and the business calendar that working days count on.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How long after a reference moment something is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delay {
    /// A fixed span of wall-clock time.
    Fixed(#[serde(with = "secs")] Duration),
    /// Whole working days on the calendar, ending at the same local time of day.
    WorkingDays(u32),
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl Delay {
    /// Parses `90s`, `15m`, `1h30m`, `72h` or `N working day(s)`.
    pub fn parse(text: &str) -> Result<Delay, String> {
        let t = text.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if let [n, "working", "day" | "days"] = words.as_slice() {
            return match n.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "invalid working-day duration `{t}`: expected a positive whole number, as in `3 working days`"
                )),
                Ok(n) => Ok(Delay::WorkingDays(n)),
            };
        }
        match humantime::parse_duration(t) {
            Ok(d) if d.is_zero() => Err(format!("duration `{t}` is zero")),
            Ok(d) => Ok(Delay::Fixed(d)),
            Err(e) => Err(format!(
                "invalid duration `{t}` ({e}): expected e.g. `90s`, `15m`, `1h30m`, `72h` or `3 working days`"
            )),
        }
    }

    /// The moment `self` after `from`, counting working days on `cal`.
    pub fn after(&self, from: DateTime<Utc>, cal: &Calendar) -> DateTime<Utc> {
        match self {
            Delay::Fixed(d) => {
                from + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)
            }
            Delay::WorkingDays(n) => cal.add_working_days(from, *n),
        }
    }

    /// A fixed delay, for comparing escalation times with deadlines.
    pub fn fixed(&self) -> Option<Duration> {
        match self {
            Delay::Fixed(d) => Some(*d),
            Delay::WorkingDays(_) => None,
        }
    }
}

impl std::fmt::Display for Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delay::Fixed(d) => f.write_str(&short(*d)),
            Delay::WorkingDays(1) => write!(f, "1 working day"),
            Delay::WorkingDays(n) => write!(f, "{n} working days"),
        }
    }
}

/// `15m`, `1h30m`, `24h`, `72h`, `45s`: the way playbooks write durations.
pub fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// Which days are working days, in the bank's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub timezone: Tz,
    pub weekend: BTreeSet<u8>,
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            timezone: Tz::UTC,
            weekend: [Weekday::Sat, Weekday::Sun]
                .iter()
                .map(|d| d.num_days_from_monday() as u8)
                .collect(),
            holidays: BTreeSet::new(),
        }
    }
}

impl Calendar {
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        !self
            .weekend
            .contains(&(d.weekday().num_days_from_monday() as u8))
            && !self.holidays.contains(&d)
    }

    /// Counts `n` working days after the local date of `from` and keeps the local time
    /// of day. A time that does not exist on that day (a DST gap) moves to the first
    /// valid instant after it.
    pub fn add_working_days(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let local = from.with_timezone(&self.timezone);
        let mut date = local.date_naive();
        let mut left = n;
        // A calendar with no working days at all would never end; ten years is plenty.
        let mut guard = 3660;
        while left > 0 && guard > 0 {
            date = date.checked_add_days(Days::new(1)).unwrap_or(date);
            if self.is_working_day(date) {
                left -= 1;
            }
            guard -= 1;
        }
        let naive = date.and_time(local.time());
        let mut probe = naive;
        for _ in 0..=120 {
            if let Some(t) = self.timezone.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += chrono::Duration::minutes(1);
        }
        from + chrono::Duration::days(i64::from(n))
    }
}

/// Parses a weekday name as written in the calendar (`Sat`, `Sunday`).
pub fn parse_weekday(s: &str) -> Result<u8, String> {
    s.parse::<Weekday>()
        .map(|d| d.num_days_from_monday() as u8)
        .map_err(|_| format!("unknown weekday `{s}`: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_of_the_spec() {
        assert_eq!(
            Delay::parse("90s"),
            Ok(Delay::Fixed(Duration::from_secs(90)))
        );
        assert_eq!(
            Delay::parse("1h30m"),
            Ok(Delay::Fixed(Duration::from_secs(5400)))
        );
        assert_eq!(
            Delay::parse("72h"),
            Ok(Delay::Fixed(Duration::from_secs(72 * 3600)))
        );
        assert_eq!(Delay::parse("3 working days"), Ok(Delay::WorkingDays(3)));
        assert_eq!(Delay::parse("1 working day"), Ok(Delay::WorkingDays(1)));
        assert!(Delay::parse("15 minutes please").is_err());
        assert!(Delay::parse("0 working days").is_err());
        assert!(Delay::parse("0s").is_err());
        assert!(Delay::parse("soon").unwrap_err().contains("expected e.g."));
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let cal = Calendar {
            timezone: "Asia/Shanghai".parse().unwrap(),
            holidays: [NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()].into(),
            ..Calendar::default()
        };
        // Friday 2026-11-27 16:00 +08:00 plus 3 working days is Wednesday 16:00.
        let fri = DateTime::parse_from_rfc3339("2026-11-27T16:00:00+08:00")
            .unwrap()
            .to_utc();
        let due = cal.add_working_days(fri, 3);
        assert_eq!(
            due,
            DateTime::parse_from_rfc3339("2026-12-02T16:00:00+08:00")
                .unwrap()
                .to_utc()
        );
        // Wednesday 2026-09-30 plus 1 working day skips the holiday on Thursday.
        let wed = DateTime::parse_from_rfc3339("2026-09-30T09:00:00+08:00")
            .unwrap()
            .to_utc();
        let due = cal.add_working_days(wed, 1);
        assert_eq!(
            due,
            DateTime::parse_from_rfc3339("2026-10-02T09:00:00+08:00")
                .unwrap()
                .to_utc()
        );
    }
}
