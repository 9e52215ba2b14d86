//! Starting deliveries: each lane topped up to its in-flight bound, digest
//! groups in round robin, rows just committed started without a read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::digest::{digest_max, window, within_budget};
use super::flight::{Done, Flight, Reporter, ready_now};
use super::wake::{self, GroupKey};
use super::{Deliverer, job};
use crate::clock;
use crate::store::{DueGroup, Lane, OutboxRow};

impl Deliverer {
    /// Starts due deliveries in every lane with room. Returns the earliest
    /// time a digest held back becomes due.
    pub(super) async fn top_up(
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
    pub(super) fn start_ready(
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
    pub(super) fn all_waiting(
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
            ha: self.ha.clone(),
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
}
