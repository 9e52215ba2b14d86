//! The only place that reads the wall clock. Everything else takes `now` as an
//! argument, so timer logic is tested with any time it likes (clippy's
//! `disallowed-methods` keeps it that way).

use chrono::{DateTime, SubsecRound, Utc};

/// The current time, to the millisecond: the precision the store keeps, so a
/// time read back compares equal to the time that was decided on.
#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Measures how long something took (for metrics and benchmarks, never for timers).
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A monotonic instant, for rate limits and idle times (never for timers,
/// which take `now` as an argument).
#[allow(clippy::disallowed_methods)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}
