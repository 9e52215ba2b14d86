//! The only place that reads the wall clock. Everything else takes `now` as an
//! argument, so timer logic is tested with any time it likes (clippy's
//! `disallowed-methods` keeps it that way).

use chrono::{DateTime, Utc};

#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
