//! The delivery worker: sends what the engine put in the outbox — email and
//! webhooks — retrying with exponential backoff and jitter while a server is
//! down, and reports each attempt back to the engine thread, which records it
//! in the incident's history and the outbox row in one transaction.
//!
//! **Invariant:** a row is in flight at most once; a row recorded as delivered
//! is never selected again. Delivery is at least once: a crash after the server
//! took a message but before the outcome was stored sends it again (webhooks
//! carry an `Idempotency-Key` for this).

pub mod anchor;
pub mod channels;
mod digest;
pub mod email;
pub mod formats;
mod job;
pub mod links;
mod wake;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{Config, DeliveryConfig, Loaded};
use crate::engine::{Attempt, ChannelKind, EngineHandle};
use crate::store::{DueGroup, Lane, OutboxRow, Reader, StoreError};
use channels::ChannelHealth;
use digest::{digest_max, window, within_budget};
use email::Mailer;
use links::Secret;
use wake::GroupKey;
pub use wake::Wake;

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

/// A finished delivery: its lane, its digest group, what became of each row.
struct Done {
    lane: Lane,
    group: Option<DueGroup>,
    /// The rows the delivery carried (freed even when it ended without outcomes).
    rows: Vec<i64>,
    attempts: Vec<Attempt>,
}

/// Reports a delivery's end even if it panicked: the rows and the lane slot
/// are freed (the rows, with no outcome stored, are tried again later), so a
/// bug in one delivery cannot hold a lane until restart.
struct Reporter {
    done: mpsc::UnboundedSender<Done>,
    report: Option<Done>,
}

impl Reporter {
    fn finish(mut self, attempts: Vec<Attempt>) {
        if let Some(mut d) = self.report.take() {
            d.attempts = attempts;
            let _ = self.done.send(d);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // A panic unwinds through here; a shutdown cancels the task instead,
        // and then the rows are simply sent again after the restart.
        if let Some(d) = self.report.take()
            && std::thread::panicking()
        {
            tracing::error!(
                "a delivery on {} ended without an outcome; its {} message(s) will be tried again",
                d.lane,
                d.rows.len()
            );
            let _ = self.done.send(d);
        }
    }
}

/// What is under way. A row leaves only once its outcome is stored, so it is
/// never picked up twice; a digest group has at most one delivery at a time.
#[derive(Default)]
struct Flight {
    /// Lane -> rows in flight.
    rows: HashMap<Lane, HashSet<i64>>,
    /// Lane -> deliveries in flight (a digest is one).
    units: HashMap<Lane, usize>,
    groups: HashSet<(Lane, DueGroup)>,
    /// Lane -> the recipient whose delivery started last (round robin).
    served: HashMap<Lane, String>,
    /// When each group's last delivery started, and whether it was a full
    /// digest: after a partial one the next waits for the window.
    last: HashMap<(Lane, DueGroup), (DateTime<Utc>, bool)>,
}

impl Flight {
    fn forget_before(&mut self, t: DateTime<Utc>) {
        self.last.retain(|_, (at, _)| *at >= t);
    }
}

/// Of the rows just committed, those that start without reading the outbox:
/// rows to lanes that send each message alone and at once (no digest window,
/// no rate limit) and have nothing in flight, at most `in_flight` per lane.
/// Such a lane's last read (if it did not fail: the caller passes no rows
/// then) found nothing due, so nothing older due then is passed over.
/// Urgent rows (escalations, overdue notices, roll calls, critical steps)
/// start in any lane with a free slot: they never wait for a window.
/// Returns them with their lanes, and the groups of the rest.
fn ready_now(
    fresh: wake::Fresh,
    flight: &Flight,
    cfg: &Config,
) -> (Vec<(Lane, OutboxRow)>, HashSet<GroupKey>) {
    let Some(rows) = fresh.rows else {
        return (Vec::new(), fresh.groups);
    };
    let per_lane = cfg.delivery.in_flight.max(1);
    let mut taken: HashMap<Lane, usize> = HashMap::new();
    let mut now = Vec::new();
    let mut rest = HashSet::new();
    for ((lane, group), row) in rows {
        let busy = flight.units.get(&lane).copied().unwrap_or(0);
        let idle = busy == 0 && window(cfg, &lane).is_zero();
        let n = taken.entry(lane.clone()).or_default();
        // An urgent message goes at once whatever the lane's digest window,
        // in a free slot (a full lane's outcome wakes the worker for it).
        if (idle || row.urgent) && busy + *n < per_lane {
            *n += 1;
            now.push((lane, row));
        } else {
            rest.insert((lane, group));
        }
    }
    (now, rest)
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
}

impl Deliverer {
    pub fn new(
        mut config: watch::Receiver<Arc<Loaded>>,
        reader: Arc<dyn Reader>,
        engine: EngineHandle,
        secret: Secret,
        wake: Arc<Wake>,
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
            read_failed: std::sync::atomic::AtomicBool::new(false),
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
                if !self.record(batch, &mut flight).await {
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
            let wait = if read_failed {
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

    /// Starts due deliveries in every lane with room. Returns the earliest
    /// time a digest held back becomes due.
    async fn top_up(
        &self,
        flight: &mut Flight,
        tasks: &mut tokio::task::JoinSet<()>,
        done: &mpsc::UnboundedSender<Done>,
    ) -> Option<DateTime<Utc>> {
        let cfg = Arc::clone(&self.senders.config);
        let per_lane = cfg.delivery.in_flight.max(1);
        // Before reading the outbox: whatever is noted after this is seen by
        // the next pass (see `wake`).
        let _ = self.wake.take();
        let now = clock::now();
        let due = self
            .read(move |st| st.due_lanes(now))
            .await
            .unwrap_or_default();
        let mut held: Option<DateTime<Utc>> = None;
        flight.forget_before(now - chrono::Duration::hours(1));
        for lane in due {
            let mut room = per_lane.saturating_sub(flight.units.get(&lane).copied().unwrap_or(0));
            if room == 0 {
                continue;
            }
            // Shared, not copied, by each group's read below: a storm's lane
            // can have thousands of rows in flight.
            let skip: Arc<[i64]> = flight
                .rows
                .get(&lane)
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            let gap = window(&cfg, &lane);
            if gap.is_zero() {
                let l = lane.clone();
                let rows = self
                    .read(move |st| st.due_outbox_in(now, &l, &skip, room))
                    .await
                    .unwrap_or_default();
                for row in rows {
                    self.start(flight, tasks, done, &lane, None, vec![row]);
                }
                continue;
            }
            // Urgent messages never wait for a digest: each goes alone, first.
            let (l, s) = (lane.clone(), Arc::clone(&skip));
            let urgent = self
                .read(move |st| st.due_urgent_in(now, &l, &s, room))
                .await
                .unwrap_or_default();
            for row in urgent {
                room -= 1;
                self.start(flight, tasks, done, &lane, None, vec![row]);
            }
            if room == 0 {
                continue;
            }
            let l = lane.clone();
            let mut groups = self
                .read(move |st| st.due_groups(now, &l))
                .await
                .unwrap_or_default();
            // Round robin: start after the recipient served last, so with more
            // recipients than slots nobody waits behind the alphabet.
            if let Some(last) = flight.served.get(&lane) {
                let at = groups.partition_point(|g| g.recipient.as_str() <= last.as_str());
                groups.rotate_left(at);
            }
            for g in groups {
                if room == 0 {
                    break;
                }
                let key = (lane.clone(), g.clone());
                if flight.groups.contains(&key) {
                    continue;
                }
                // After a full digest the rest of a backlog follows at once.
                if let Some((last, false)) = flight.last.get(&key) {
                    let until = *last + chrono::Duration::from_std(gap).unwrap_or_default();
                    if until > now {
                        held = Some(held.map_or(until, |h| h.min(until)));
                        continue;
                    }
                }
                let (l, s, g2) = (lane.clone(), skip.clone(), g.clone());
                let max = digest_max(&lane);
                let mut rows = self
                    .read(move |st| st.due_outbox_of(now, &l, &g2, &s, max))
                    .await
                    .unwrap_or_default();
                // A digest cut short by its size is full: the rest follows at once.
                let fit = within_budget(&rows);
                let full = rows.len() >= max || fit < rows.len();
                rows.truncate(fit);
                if rows.is_empty() {
                    continue;
                }
                flight.last.insert(key.clone(), (now, full));
                flight.served.insert(lane.clone(), g.recipient.clone());
                room -= 1;
                self.start(flight, tasks, done, &lane, Some(g), rows);
            }
        }
        held
    }

    /// Starts the rows just committed that [`ready_now`] lets start, and
    /// returns the groups of the others, to be read from the outbox.
    fn start_ready(
        &self,
        flight: &mut Flight,
        tasks: &mut tokio::task::JoinSet<()>,
        done: &mpsc::UnboundedSender<Done>,
        fresh: wake::Fresh,
    ) -> HashSet<GroupKey> {
        let (now, rest) = ready_now(fresh, flight, &self.senders.config);
        for (lane, row) in now {
            self.start(flight, tasks, done, &lane, None, vec![row]);
        }
        rest
    }

    /// When every group in `fresh` waits anyway, the time to look again (for
    /// a window that ends before the worker's own wake-up); None when one of
    /// them may have something to start now. A group waits while a delivery
    /// to it is under way or its lane is full (the outcome wakes the worker),
    /// or while its digest window runs.
    fn all_waiting(
        &self,
        flight: &Flight,
        fresh: HashSet<GroupKey>,
    ) -> Option<tokio::time::Instant> {
        let cfg = &self.senders.config;
        let per_lane = cfg.delivery.in_flight.max(1);
        let now = clock::now();
        let mut until: Option<DateTime<Utc>> = None;
        for key in fresh {
            let lane = &key.0;
            if flight.groups.contains(&key)
                || flight.units.get(lane).copied().unwrap_or(0) >= per_lane
            {
                continue;
            }
            let gap = chrono::Duration::from_std(window(cfg, lane)).unwrap_or_default();
            match flight.last.get(&key) {
                Some((last, false)) if *last + gap > now => {
                    until = Some(until.map_or(*last + gap, |u| u.min(*last + gap)));
                }
                _ => return None,
            }
        }
        let wait = until.map_or(Duration::MAX, |u| {
            (u - now).to_std().unwrap_or(Duration::ZERO)
        });
        Some(tokio::time::Instant::now() + wait.min(Duration::from_secs(3600)))
    }

    /// Starts one delivery of `rows` (one message, or a digest).
    fn start(
        &self,
        flight: &mut Flight,
        tasks: &mut tokio::task::JoinSet<()>,
        done: &mpsc::UnboundedSender<Done>,
        lane: &Lane,
        group: Option<DueGroup>,
        rows: Vec<OutboxRow>,
    ) {
        flight
            .rows
            .entry(lane.clone())
            .or_default()
            .extend(rows.iter().map(|r| r.id));
        *flight.units.entry(lane.clone()).or_default() += 1;
        if let Some(g) = &group {
            flight.groups.insert((lane.clone(), g.clone()));
        }
        let job = job::Job {
            senders: self.senders.clone(),
            http: self.http.clone(),
            secret: self.secret.clone(),
        };
        let done = done.clone();
        let lane = lane.clone();
        let reporter = Reporter {
            done: done.clone(),
            report: Some(Done {
                lane,
                group,
                rows: rows.iter().map(|r| r.id).collect(),
                attempts: Vec::new(),
            }),
        };
        tasks.spawn(async move {
            // The receiver lives as long as the worker; after shutdown the
            // outcome is not stored and the rows are sent again.
            let attempts = job.deliver(rows).await;
            reporter.finish(attempts);
        });
    }

    /// Stores a batch of outcomes through the engine and frees their slots.
    /// Returns false when they could not be stored (the rows are retried).
    async fn record(&self, batch: Vec<Done>, flight: &mut Flight) -> bool {
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
            digest: Duration::from_secs(30),
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

    fn lane(name: &str) -> Lane {
        match name.split_once(':') {
            Some((_, hook)) => Lane::Webhook(hook.into()),
            None => Lane::Email,
        }
    }

    fn fresh(rows: &[(&str, &str, i64)]) -> wake::Fresh {
        let mut f = wake::Fresh {
            groups: HashSet::new(),
            rows: Some(Vec::new()),
        };
        for (lane, recipient, id) in rows {
            let group = DueGroup {
                recipient: recipient.to_string(),
                drill: false,
            };
            let key = (self::lane(lane), group);
            let n = crate::engine::Notification {
                incident: *id,
                step: None,
                channel: key.0.channel(),
                drill: false,
                target: "role:it-duty".into(),
                recipient: recipient.to_string(),
                person: None,
                subject: "ATM down".into(),
                body: String::new(),
                created_at: DateTime::UNIX_EPOCH,
                links: Vec::new(),
                link_until: None,
                announcement: false,
                urgent: false,
                grant_until: None,
                payload: None,
            };
            f.groups.insert(key.clone());
            if let Some(r) = f.rows.as_mut() {
                r.push((key, OutboxRow::queued(*id, n)));
            }
        }
        f
    }

    #[test]
    fn only_rows_to_idle_lanes_that_send_at_once_start_without_a_read() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml");
        let mut cfg = (*crate::config::load(&path).unwrap().config).clone();
        cfg.delivery.in_flight = 2;
        if let Some(w) = cfg.webhooks.get_mut("lobby-display") {
            w.min_interval = Some(Duration::from_secs(5));
        }
        let mut flight = Flight::default();
        flight.units.insert(lane("webhook:queue-caller"), 1);
        let rows = fresh(&[
            ("webhook:ops-centre", "ops-centre", 1),
            ("email", "it@bank.example", 2),
            ("webhook:lobby-display", "lobby-display", 3),
            ("webhook:queue-caller", "queue-caller", 4),
            ("webhook:ops-centre", "ops-centre", 5),
            ("webhook:ops-centre", "ops-centre", 6),
        ]);
        let (now, rest) = ready_now(rows, &flight, &cfg);
        let started: Vec<(String, i64)> = now.iter().map(|(l, r)| (l.to_string(), r.id)).collect();
        // Two to the idle ops-centre (its bound), oldest first; the digest
        // lane, the rate-limited screen, a lane with a delivery under way and
        // the third ops-centre row are left to the outbox read.
        assert_eq!(
            started,
            [
                ("webhook:ops-centre".into(), 1),
                ("webhook:ops-centre".into(), 5)
            ]
        );
        let mut lanes: Vec<String> = rest.iter().map(|(l, _)| l.to_string()).collect();
        lanes.sort_unstable();
        assert_eq!(
            lanes,
            [
                "email",
                "webhook:lobby-display",
                "webhook:ops-centre",
                "webhook:queue-caller"
            ]
        );

        // Rows not all kept by the wake: nothing starts, every group is read.
        let mut spilled = fresh(&[("webhook:ops-centre", "ops-centre", 7)]);
        spilled.rows = None;
        let (now, rest) = ready_now(spilled, &Flight::default(), &cfg);
        assert!(now.is_empty());
        assert_eq!(rest.len(), 1);
    }

    #[tokio::test]
    async fn a_delivery_that_panics_still_frees_its_rows_and_slot() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reporter = Reporter {
            done: tx,
            report: Some(Done {
                lane: Lane::Email,
                group: None,
                rows: vec![7, 8],
                attempts: Vec::new(),
            }),
        };
        let task = tokio::spawn(async move {
            let _held = reporter;
            panic!("a bug in one delivery");
        });
        assert!(task.await.is_err());
        let d = rx.try_recv().expect("the end is reported");
        assert_eq!((d.lane, d.rows), (Lane::Email, vec![7, 8]));
        assert!(d.attempts.is_empty());
    }
}
