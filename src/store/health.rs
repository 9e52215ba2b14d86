//! Whether the store is taking writes: set by the engine loop after every
//! commit, read by `/healthz` and `/api/v1/status`.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: Mutex<Option<(DateTime<Utc>, String)>>,
}

impl StoreHealth {
    /// A write went through.
    pub fn ok(&self) {
        if let Ok(mut f) = self.failing.lock()
            && f.take().is_some()
        {
            tracing::warn!("the store takes writes again");
        }
    }

    /// A write failed: since when (kept from the first failure) and why (the latest).
    pub fn failed(&self, at: DateTime<Utc>, why: String) {
        if let Ok(mut f) = self.failing.lock() {
            let since = f.as_ref().map_or(at, |(s, _)| *s);
            *f = Some((since, why));
        }
    }

    /// `None` when healthy; else since when it fails, and why.
    pub fn failing(&self) -> Option<(DateTime<Utc>, String)> {
        self.failing
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}
