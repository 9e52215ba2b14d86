//! What is under way in each lane, and which freshly committed rows start
//! without reading the outbox.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::wake::{self, GroupKey};
use super::window;
use crate::config::Config;
use crate::engine::Attempt;
use crate::store::{DueGroup, Lane, OutboxRow};

/// A finished delivery: its lane, its digest group, what became of each row.
pub(super) struct Done {
    pub(super) lane: Lane,
    pub(super) group: Option<DueGroup>,
    /// The rows the delivery carried (freed even when it ended without outcomes).
    pub(super) rows: Vec<i64>,
    pub(super) attempts: Vec<Attempt>,
}

/// Reports a delivery's end even if it panicked: the rows and the lane slot
/// are freed (the rows, with no outcome stored, are tried again later), so a
/// bug in one delivery cannot hold a lane until restart.
pub(super) struct Reporter {
    pub(super) done: mpsc::UnboundedSender<Done>,
    pub(super) report: Option<Done>,
}

impl Reporter {
    pub(super) fn finish(mut self, attempts: Vec<Attempt>) {
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
pub(super) struct Flight {
    /// Lane -> rows in flight.
    pub(super) rows: HashMap<Lane, HashSet<i64>>,
    /// Lane -> deliveries in flight (a digest is one).
    pub(super) units: HashMap<Lane, usize>,
    pub(super) groups: HashSet<(Lane, DueGroup)>,
    /// Lane -> the recipient whose delivery started last (round robin).
    pub(super) served: HashMap<Lane, String>,
    /// When each group's last delivery started, and whether it was a full
    /// digest: after a partial one the next waits for the window.
    pub(super) last: HashMap<(Lane, DueGroup), (DateTime<Utc>, bool)>,
}

impl Flight {
    pub(super) fn forget_before(&mut self, t: DateTime<Utc>) {
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
pub(super) fn ready_now(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
