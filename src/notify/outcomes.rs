//! A delivery's outcomes: stored through the engine, and their lane slots,
//! rows and digest groups freed.

use super::Deliverer;
use super::flight::{Done, Flight};
use crate::clock;
use crate::engine::ChannelKind;

impl Deliverer {
    /// Stores a batch of outcomes through the engine, then frees their
    /// slots. When they cannot be stored (the store is failing) the batch is
    /// given back with its rows still in flight, to be stored later: freed,
    /// the rows were due again at once, and every message the servers had
    /// taken went out again each time the worker looked, for the whole
    /// outage (a chat robot ignores `Idempotency-Key`).
    pub(super) async fn record(
        &self,
        batch: Vec<Done>,
        flight: &mut Flight,
    ) -> Result<(), Vec<Done>> {
        let attempts: Vec<_> = batch
            .iter()
            .flat_map(|d| d.attempts.iter().cloned())
            .collect();
        if let Err(e) = self.engine.delivered(attempts).await {
            tracing::error!(
                "could not record delivery outcomes, kept to record again in a second (their messages are not sent again meanwhile): {e}"
            );
            return Err(batch);
        }
        let warn_after = self.senders.config.delivery.warn_after;
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
            for a in &d.attempts {
                let channel = match a.channel {
                    ChannelKind::Email => "email",
                    ChannelKind::Webhook => a.recipient.as_str(),
                };
                self.channels
                    .record(channel, a.error.as_deref(), clock::now(), warn_after);
            }
        }
        flight.units.retain(|_, n| *n > 0);
        flight.rows.retain(|_, r| !r.is_empty());
        Ok(())
    }
}
