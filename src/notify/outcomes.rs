//! A delivery's outcomes: stored through the engine, and their lane slots,
//! rows and digest groups freed.

use super::Deliverer;
use super::flight::{Done, Flight};
use crate::clock;
use crate::engine::ChannelKind;

impl Deliverer {
    /// Stores a batch of outcomes through the engine and frees their slots.
    /// Returns false when they could not be stored (the rows are retried).
    pub(super) async fn record(&self, batch: Vec<Done>, flight: &mut Flight) -> bool {
        let warn_after = self.senders.config.delivery.warn_after;
        let mut attempts = Vec::new();
        for d in batch {
            if let Some(n) = flight.units.get_mut(&d.lane) {
                *n = n.saturating_sub(1);
            }
            if let Some(g) = d.group {
                let key = (d.lane.clone(), g);
                // The window is about what people received: after a failed
                // attempt the retry follows its own backoff, not the window.
                if d.attempts.iter().any(|a| a.error.is_some()) {
                    flight.last.remove(&key);
                }
                flight.groups.remove(&key);
            }
            if let Some(rows) = flight.rows.get_mut(&d.lane) {
                for id in &d.rows {
                    rows.remove(id);
                }
            }
            attempts.extend(d.attempts);
        }
        flight.units.retain(|_, n| *n > 0);
        flight.rows.retain(|_, r| !r.is_empty());
        for a in &attempts {
            let channel = match a.channel {
                ChannelKind::Email => "email",
                ChannelKind::Webhook => a.recipient.as_str(),
            };
            self.channels
                .record(channel, a.error.as_deref(), clock::now(), warn_after);
        }
        match self.engine.delivered(attempts).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not record delivery outcomes: {e}");
                false
            }
        }
    }
}
