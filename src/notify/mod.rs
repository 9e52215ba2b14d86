//! The delivery worker: sends what the engine put in the outbox — email and
//! webhooks — retrying with exponential backoff and jitter while a server is
//! down, and reports each attempt back to the engine thread, which records it
//! in the incident's history and the outbox row in one transaction.
//!
//! **Invariant:** a row is in flight at most once, and until its outcome is
//! stored (an outcome the store refuses is kept and stored later); a row
//! recorded as delivered is never selected again. Delivery is at least once: a crash after the server
//! took a message but before the outcome was stored sends it again (webhooks
//! carry an `Idempotency-Key` for this).

pub mod anchor;
pub mod channels;
mod digest;
pub mod email;
mod flight;
pub mod formats;
mod job;
mod lanes;
pub mod links;
mod outcomes;
mod retry;
mod wake;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{Config, Loaded};
use crate::engine::EngineHandle;
use crate::store::{Reader, StoreError};
use channels::ChannelHealth;
use digest::window;
use email::Mailer;
use flight::{Done, Flight};
use links::Secret;
pub use retry::next_attempt;
pub use wake::Wake;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("email: {0}")]
    Email(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What one batch is sent with: the configuration in force and the mail
/// transport built from it.
#[derive(Clone)]
struct Senders {
    config: Arc<Config>,
    mailer: Arc<Mailer>,
}

pub struct Deliverer {
    channels: Arc<ChannelHealth>,
    config: watch::Receiver<Arc<Loaded>>,
    senders: Senders,
    reader: Arc<dyn Reader>,
    engine: EngineHandle,
    http: reqwest::Client,
    secret: Secret,
    wake: Arc<Wake>,
    /// An outbox read failed since the last look: the groups a wake named
    /// may not have been read, so the worker looks again soon.
    read_failed: std::sync::atomic::AtomicBool,
    /// Active/standby: this node's role (sends only while it leads).
    ha: Option<Arc<crate::ha::Ha>>,
}

impl Deliverer {
    pub fn new(
        mut config: watch::Receiver<Arc<Loaded>>,
        reader: Arc<dyn Reader>,
        engine: EngineHandle,
        secret: Secret,
        wake: Arc<Wake>,
        channels: Arc<ChannelHealth>,
        ha: Option<Arc<crate::ha::Ha>>,
    ) -> Result<Deliverer, NotifyError> {
        let current = Arc::clone(&config.borrow_and_update().config);
        let mailer = Arc::new(Mailer::new(&current)?);
        Ok(Deliverer {
            channels,
            config,
            senders: Senders {
                config: current,
                mailer,
            },
            reader,
            engine,
            http: reqwest::Client::builder().build()?,
            secret,
            wake,
            read_failed: std::sync::atomic::AtomicBool::new(false),
            ha,
        })
    }

    /// Takes a newly published configuration: webhooks, retry policy and links
    /// are read from it per message; the mail transport is rebuilt from it.
    fn follow_config(&mut self) {
        // Compared by identity: waiting on `changed()` also marks a publish seen.
        let cfg = Arc::clone(&self.config.borrow_and_update().config);
        if Arc::ptr_eq(&cfg, &self.senders.config) {
            return;
        }
        match Mailer::new(&cfg) {
            Ok(m) => {
                self.senders = Senders {
                    config: cfg,
                    mailer: Arc::new(m),
                };
                tracing::info!("delivery: configuration reloaded, mail transport rebuilt");
            }
            Err(e) => {
                // The reload was valid, so this is the environment (a password
                // variable unset, say): keep sending with what works.
                tracing::error!(
                    "delivery: cannot build the new mail transport, keeping the previous one: {e}"
                );
                self.senders.config = cfg;
            }
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Reader) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let r = Arc::clone(&self.reader);
        match tokio::task::spawn_blocking(move || f(r.as_ref())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::error!("outbox: {e}");
                self.read_failed.store(true, Ordering::Relaxed);
                None
            }
            Err(e) => {
                tracing::error!("outbox: {e}");
                self.read_failed.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Delivers until `shutdown`. Each lane (email; each webhook channel) has
    /// at most `notify.in_flight` deliveries at once, topped up as each one
    /// ends, so a receiver that hangs holds only its own lane and a storm's
    /// backlog drains at a bounded pace beside intake.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut flight = Flight::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut outcomes = Vec::new();
        loop {
            self.follow_config();
            while tasks.try_join_next().is_some() {}
            if !outcomes.is_empty() {
                let batch = std::mem::take(&mut outcomes);
                if let Err(kept) = self.record(batch, &mut flight).await {
                    outcomes = kept;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            // A pass starts all it can; what it started wakes the worker when
            // it ends, so another pass right away would find nothing new.
            let held_until = self.top_up(&mut flight, &mut tasks, &done_tx).await;
            let in_flight: usize = flight.units.values().sum();
            let wait = {
                let now = clock::now();
                let next = self.read(|st| st.next_outbox_attempt()).await.flatten();
                // Rows held back for a digest are due but wait for their window.
                let held = held_until.map(|h| (h - now).to_std().unwrap_or(Duration::ZERO));
                match (next.map(|t| (t - now).to_std()), held) {
                    (Some(Ok(d)), _) if !d.is_zero() => held.map_or(d, |h| h.min(d)),
                    // Something is due but its lane is full: an outcome wakes us.
                    (Some(_), h) if in_flight > 0 => {
                        h.map_or(Duration::from_secs(1), |h| h.min(Duration::from_secs(1)))
                    }
                    // Only held rows are due: wake at the window's end, or for a
                    // retry in another lane that comes sooner.
                    (Some(_), Some(h)) => {
                        let retry = self
                            .read(move |st| st.next_retry_after(now))
                            .await
                            .flatten()
                            .and_then(|t| (t - now).to_std().ok());
                        retry.map_or(h, |r| r.min(h))
                    }
                    (Some(_), None) => Duration::ZERO,
                    (None, _) => Duration::from_secs(30),
                }
                .clamp(Duration::from_millis(20), Duration::from_secs(30))
            };
            // After a failed read a lane may look idle with due rows unread:
            // until the next pass, new rows are not started ahead of them.
            let read_failed = self.read_failed.swap(false, Ordering::Relaxed);
            // Outcomes not yet stored are tried again within a second.
            let wait = if read_failed || !outcomes.is_empty() {
                wait.min(Duration::from_secs(1))
            } else {
                wait
            };
            if wait.is_zero() {
                continue;
            }
            let mut until = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {
                        // A new configuration first: what starts here is sent
                        // with the one in force (a window, a URL).
                        if self.config.has_changed().unwrap_or(true) {
                            break;
                        }
                        // New rows that can start at once start here; if the
                        // rest are only for groups that wait anyway, there is
                        // nothing else to start and no need to read the outbox.
                        let mut fresh = self.wake.take();
                        if read_failed {
                            fresh.rows = None;
                        }
                        let rest = self.start_ready(&mut flight, &mut tasks, &done_tx, fresh);
                        match self.all_waiting(&flight, rest) {
                            Some(due) => until = until.min(due),
                            None => break,
                        }
                    }
                    _ = self.config.changed() => break,
                    _ = done_rx.recv_many(&mut outcomes, 512) => break,
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            while let Ok(a) = done_rx.try_recv() {
                outcomes.push(a);
            }
        }
    }
}
