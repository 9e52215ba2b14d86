//! The delivery worker: sends what the engine put in the outbox — email and
//! webhooks — retrying with exponential backoff and jitter while a server is
//! down, and reports each attempt back to the engine thread, which records it
//! in the incident's history and the outbox row in one transaction.
//!
//! **Invariant:** a row is in flight at most once; a row recorded as delivered
//! is never selected again. Delivery is at least once: a crash after the server
//! took a message but before the outcome was stored sends it again (webhooks
//! carry an `Idempotency-Key` for this).

pub mod channels;
pub mod email;
pub mod links;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{Config, DeliveryConfig, Loaded};
use crate::engine::{Attempt, ChannelKind, DeliveryUpdate, EngineHandle, LinkAction};
use crate::html::escape;
use crate::store::{OutboxRow, Reader, StoreError};
use channels::ChannelHealth;
use email::{Mailer, SendError};
use links::{Claims, Secret};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("email: {0}")]
    Email(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

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
    wake: Arc<Notify>,
}

impl Deliverer {
    pub fn new(
        mut config: watch::Receiver<Arc<Loaded>>,
        reader: Arc<dyn Reader>,
        engine: EngineHandle,
        secret: Secret,
        wake: Arc<Notify>,
        channels: Arc<ChannelHealth>,
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
                None
            }
            Err(e) => {
                tracing::error!("outbox: {e}");
                None
            }
        }
    }

    /// Delivers until `shutdown`. Each lane (email; each webhook channel) has
    /// at most `notify.in_flight` deliveries at once, topped up as each one
    /// ends, so a receiver that hangs holds only its own lane and a storm's
    /// backlog drains at a bounded pace beside intake.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Attempt>();
        // Lane -> its rows in flight. A row leaves only once its outcome is
        // stored, so it is never picked up twice.
        let mut lanes: HashMap<String, HashSet<i64>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut outcomes = Vec::new();
        loop {
            self.follow_config();
            while tasks.try_join_next().is_some() {}
            if !outcomes.is_empty() {
                let batch = std::mem::take(&mut outcomes);
                if !self.record(batch, &mut lanes).await {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            let started = self.top_up(&mut lanes, &mut tasks, &done_tx).await;
            let in_flight: usize = lanes.values().map(HashSet::len).sum();
            let wait = if started > 0 {
                Duration::ZERO
            } else {
                let next = self.read(|st| st.next_outbox_attempt()).await.flatten();
                match next.map(|t| (t - clock::now()).to_std()) {
                    // Something is due but its lane is full: an outcome wakes us.
                    Some(Err(_)) | Some(Ok(Duration::ZERO)) if in_flight > 0 => {
                        Duration::from_secs(1)
                    }
                    Some(Ok(d)) => d,
                    Some(Err(_)) => Duration::ZERO,
                    None => Duration::from_secs(30),
                }
                .clamp(Duration::from_millis(20), Duration::from_secs(30))
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = self.config.changed() => {}
                _ = done_rx.recv_many(&mut outcomes, 512) => {}
                _ = tokio::time::sleep(wait) => {}
            }
            while let Ok(a) = done_rx.try_recv() {
                outcomes.push(a);
            }
        }
    }

    /// Starts due rows in every lane with room; returns how many started.
    async fn top_up(
        &self,
        lanes: &mut HashMap<String, HashSet<i64>>,
        tasks: &mut tokio::task::JoinSet<()>,
        done: &mpsc::UnboundedSender<Attempt>,
    ) -> usize {
        let per_lane = self.senders.config.delivery.in_flight.max(1);
        let now = clock::now();
        let due = self
            .read(move |st| st.due_lanes(now))
            .await
            .unwrap_or_default();
        let mut started = 0;
        for lane in due {
            let busy = lanes.entry(lane.clone()).or_default();
            let room = per_lane.saturating_sub(busy.len());
            if room == 0 {
                continue;
            }
            let skip: Vec<i64> = busy.iter().copied().collect();
            let rows = self
                .read(move |st| st.due_outbox_in(now, &lane, &skip, room))
                .await
                .unwrap_or_default();
            for row in rows {
                busy.insert(row.id);
                started += 1;
                let job = Job {
                    senders: self.senders.clone(),
                    http: self.http.clone(),
                    secret: self.secret.clone(),
                };
                let done = done.clone();
                tasks.spawn(async move {
                    // The receiver lives as long as the worker; after shutdown
                    // the outcome is not stored and the row is sent again.
                    let _ = done.send(job.deliver(row).await);
                });
            }
        }
        started
    }

    /// Stores a batch of outcomes through the engine and frees their slots.
    /// Returns false when they could not be stored (the rows are retried).
    async fn record(
        &self,
        attempts: Vec<Attempt>,
        lanes: &mut HashMap<String, HashSet<i64>>,
    ) -> bool {
        let warn_after = self.senders.config.delivery.warn_after;
        let mut ids = Vec::with_capacity(attempts.len());
        for a in &attempts {
            let channel = match a.channel {
                ChannelKind::Email => "email",
                ChannelKind::Webhook => a.recipient.as_str(),
            };
            self.channels
                .record(channel, a.error.as_deref(), clock::now(), warn_after);
            ids.push(a.update.id);
        }
        let stored = match self.engine.delivered(attempts).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not record delivery outcomes: {e}");
                false
            }
        };
        for busy in lanes.values_mut() {
            for id in &ids {
                busy.remove(id);
            }
        }
        lanes.retain(|_, busy| !busy.is_empty());
        stored
    }
}

/// The longest one delivery attempt may take: three times the channel's own
/// timeout (an SMTP exchange is several round trips), at least 10 s.
fn attempt_limit(cfg: &Config, row: &OutboxRow) -> Duration {
    let own = match row.channel {
        ChannelKind::Email => cfg
            .email
            .as_ref()
            .and_then(|e| e.smtp.as_ref())
            .map(|s| s.timeout),
        ChannelKind::Webhook => cfg.webhooks.get(&row.recipient).map(|w| w.timeout),
    };
    (own.unwrap_or(Duration::from_secs(30)) * 3).max(Duration::from_secs(10))
}

/// One message's delivery, with everything it needs.
struct Job {
    senders: Senders,
    http: reqwest::Client,
    secret: Secret,
}

impl Job {
    async fn deliver(&self, row: OutboxRow) -> Attempt {
        let cfg = &self.senders.config;
        // A watchdog over the whole attempt. lettre's async SMTP `timeout`
        // bounds only connecting (lettre issue #1027): a server that accepts
        // and never greets - seen in the storm test, with a busy server's
        // backlog - would hold the lane slot and the row forever.
        let limit = attempt_limit(cfg, &row);
        let send = async {
            match row.channel {
                ChannelKind::Email => self.send_email(cfg, &row).await,
                ChannelKind::Webhook => self.send_webhook(cfg, &row).await,
            }
        };
        let result = match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Retry(format!(
                "no outcome within {}s",
                limit.as_secs()
            ))),
        };
        let now = clock::now();
        let attempts = row.attempts + 1;
        let mut update = DeliveryUpdate {
            id: row.id,
            attempts,
            delivered_at: None,
            next_attempt_at: None,
            failed_at: None,
            last_error: None,
        };
        let error = match result {
            Ok(()) => {
                update.delivered_at = Some(now);
                None
            }
            Err(SendError::Retry(e)) => {
                update.next_attempt_at =
                    next_attempt(&cfg.delivery, row.id, attempts, row.created_at, now);
                if update.next_attempt_at.is_none() {
                    update.failed_at = Some(now);
                }
                update.last_error = Some(e.clone());
                Some(e)
            }
            Err(SendError::Permanent(e)) => {
                update.failed_at = Some(now);
                update.last_error = Some(e.clone());
                Some(e)
            }
        };
        Attempt {
            update,
            incident: row.incident,
            step: row.step,
            announcement: row.announcement,
            channel: row.channel,
            target: row.target,
            recipient: row.recipient,
            error,
        }
    }

    /// The row's one-click links, each signed for its recipient.
    fn links(&self, cfg: &Config, row: &OutboxRow) -> Vec<(LinkAction, String)> {
        let (Some(step), Some(person)) = (&row.step, &row.person) else {
            return Vec::new();
        };
        // Valid for the TTL at least, and until the step's deadline plus the
        // margin: a link must not die before the work it asks for is due.
        let ttl = clock::now()
            + chrono::Duration::from_std(cfg.delivery.link_ttl)
                .unwrap_or(chrono::Duration::days(3));
        let expires = row.link_until.map_or(ttl, |until| until.max(ttl));
        row.links
            .iter()
            .map(|&action| {
                let token = self.secret.sign(&Claims {
                    incident: row.incident,
                    step: step.clone(),
                    person: person.clone(),
                    action,
                    expires: expires.timestamp(),
                });
                (action, format!("{}/ack/{token}", cfg.public_url))
            })
            .collect()
    }

    async fn send_email(&self, cfg: &Config, row: &OutboxRow) -> Result<(), SendError> {
        let mut text = row.body.clone();
        // The HTML part is the same text, with the links as buttons big enough for a phone.
        let mut html = format!(
            "<!doctype html><html><body><pre style=\"font:14px/1.4 monospace;white-space:pre-wrap\">{}</pre>",
            escape(&row.body)
        );
        let links = self.links(cfg, row);
        if !links.is_empty() {
            text.push_str("\nEach link opens a page with a confirm button:\n");
        }
        for (action, url) in links {
            let what = action.label();
            text.push_str(&format!("\n{what}:\n{url}\n"));
            let colour = match action {
                LinkAction::Escalate => "#c30",
                _ => "#0b5",
            };
            html.push_str(&format!(
                "<p><a href=\"{}\" style=\"display:inline-block;padding:12px 24px;background:{colour};color:#fff;font:bold 18px sans-serif;text-decoration:none;border-radius:6px\">{what}</a></p>",
                escape(&url)
            ));
        }
        html.push_str("</body></html>");
        let from = cfg
            .email
            .as_ref()
            .map_or("branchguard <branchguard@localhost>", |e| e.from.as_str());
        let envelope = email::Envelope {
            from,
            to: &row.recipient,
            subject: &row.subject,
            incident: row.incident,
            row: row.id,
            at: clock::now(),
        };
        self.senders.mailer.send(&envelope, text, html).await
    }

    async fn send_webhook(&self, cfg: &Config, row: &OutboxRow) -> Result<(), SendError> {
        let Some(hook) = cfg.webhooks.get(&row.recipient) else {
            return Err(SendError::Permanent(format!(
                "channel `{}` is no longer configured",
                row.recipient
            )));
        };
        let mut payload: serde_json::Value = row
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_else(|| serde_json::json!({ "schema": "branchguard.notification.v1", "subject": row.subject, "text": row.body }));
        payload["id"] = serde_json::json!(row.id);
        let mut req = self
            .http
            .post(&hook.url)
            .timeout(hook.timeout)
            .header("Idempotency-Key", format!("branchguard-{}", row.id))
            .json(&payload);
        for (k, v) in &hook.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SendError::Retry(format!(
                "{} answered {}",
                hook.url,
                r.status()
            ))),
            Err(e) => Err(SendError::Retry(format!("{}: {e}", hook.url))),
        }
    }
}

#[cfg(test)]
mod tests {
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
