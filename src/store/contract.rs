//! The store's contract, for every backend: what a `Writer` and a `Reader`
//! must do, whatever holds the rows. A backend implements [`Backend`] (one
//! constructor) and invokes [`store_contract_suite!`], which makes one test
//! per case. The rounds are the engine's own, run on the bundled network with
//! an injected clock, and the expected answers are taken from the engine and
//! the rounds, never written by hand.
#![cfg(test)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::records::Record;
use super::{
    AuditCheck, AuditKey, DrillRunQuery, EventQuery, IncidentQuery, Lane, Reader, StoreError,
    Writer,
};
use crate::engine::{
    ActionSpec, Attempt, DeliveryUpdate, Engine, Notification, ReviewSpec, Round, SilenceSpec, Who,
};
use crate::event::{Event, Severity, Status};
use crate::scope::Scope;

/// A backend under test.
pub trait Backend {
    /// The store: a new, empty one the first time; the same one after that
    /// (as a restart finds it).
    fn open(&self) -> (Box<dyn Writer>, Arc<dyn Reader>);
    /// The audit key the store signs with.
    fn key(&self) -> AuditKey;
}

/// One `#[test]` per case of the contract, for the backend `$new()` makes.
macro_rules! store_contract_suite {
    ($new:expr) => {
        #[test]
        fn contract_every_kind_of_row_is_read_back() {
            $crate::store::contract::every_kind_of_row_is_read_back(&$new());
        }
        #[test]
        fn contract_lists_page_and_filter_by_scope() {
            $crate::store::contract::lists_page_and_filter_by_scope(&$new());
        }
        #[test]
        fn contract_the_outbox_gives_lanes_groups_and_retries() {
            $crate::store::contract::the_outbox_gives_lanes_groups_and_retries(&$new());
        }
        #[test]
        fn contract_a_restart_finds_the_live_state() {
            $crate::store::contract::a_restart_finds_the_live_state(&$new());
        }
        #[test]
        fn contract_the_audit_chain_verifies_and_a_cut_is_found() {
            $crate::store::contract::the_audit_chain_verifies_and_a_cut_is_found(&$new());
        }
        #[test]
        fn contract_records_cover_each_incident_of_the_period() {
            $crate::store::contract::records_cover_each_incident_of_the_period(&$new());
        }
        #[test]
        fn contract_a_commit_that_fails_midway_leaves_nothing() {
            $crate::store::contract::a_commit_that_fails_midway_leaves_nothing(&$new());
        }

        #[test]
        fn contract_a_commit_the_database_refuses_leaves_nothing() {
            $crate::store::contract::a_commit_the_database_refuses_leaves_nothing(&$new());
        }
    };
}
pub(crate) use store_contract_suite;

fn matcher(name: &str, value: &str) -> crate::engine::Matcher {
    crate::engine::Matcher::new(name, value, false)
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

fn event(kind: &str, branch: &str, severity: Severity, labels: &[(&str, &str)]) -> Event {
    Event {
        kind: kind.into(),
        branch: branch.into(),
        severity,
        status: Status::Firing,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        summary: None,
        occurred_at: t0(),
        source: "contract".into(),
    }
}

/// What the engine did, committed round by round: a core-system outage at
/// sh-001 (incident 1), a queue at sh-002 (2, later resolved and reviewed,
/// with an action due on the day), an event nothing matches, a failover drill
/// at sh-003 (a run and a drill incident), a silence, a scheduled drill's
/// fire time, and the outcomes of three deliveries: one delivered, one to be
/// retried, one given up.
pub struct World {
    pub engine: Engine,
    /// Each incident as last committed.
    pub incidents: std::collections::BTreeMap<i64, crate::engine::Incident>,
    /// Every message committed, with its outbox id.
    pub messages: Vec<(i64, Notification)>,
    pub delivered: i64,
    pub retried: (i64, DateTime<Utc>),
    pub failed: i64,
    pub drill_run: i64,
    pub head: super::Head,
    /// When the last round was committed.
    pub now: DateTime<Utc>,
}

/// What was committed: each message with its id, each incident as last saved.
#[derive(Default)]
struct Log {
    messages: Vec<(i64, Notification)>,
    incidents: std::collections::BTreeMap<i64, crate::engine::Incident>,
}

fn commit(
    w: &mut dyn Writer,
    e: &mut Engine,
    now: DateTime<Utc>,
    mut r: Round,
    log: &mut Log,
) -> super::Committed {
    e.finish(now, &mut r);
    let c = w.commit(&r).expect("a round the engine made is stored");
    for i in &r.incidents {
        log.incidents.insert(i.id, i.clone());
    }
    assert_eq!(c.outbox.len(), r.outbox.len(), "an id for each message");
    log.messages
        .extend(c.outbox.iter().copied().zip(r.outbox.iter().cloned()));
    c
}

pub fn world(w: &mut dyn Writer) -> World {
    let loaded =
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("branchguard.yaml"))
            .expect("the bundled configuration loads");
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, t0());
    let mut log = Log::default();
    let who = Who::new(Some("zhang.min"), None);

    let mut r = Round::default();
    e.ingest(
        vec![
            (
                event(
                    "system.down",
                    "sh-001",
                    Severity::Critical,
                    &[("system", "core-banking")],
                ),
                t0(),
            ),
            (event("queue.wait", "sh-002", Severity::Major, &[]), t0()),
            (
                event("nothing.matches", "sh-003", Severity::Info, &[]),
                t0(),
            ),
        ],
        "contract",
        t0(),
        &mut r,
    );
    commit(w, &mut e, t0(), r, &mut log);

    let at = t0() + Duration::minutes(1);
    let mut r = Round::default();
    let (drill_run, _) = e
        .run_drill(
            "failover-monthly",
            Some("sh-003"),
            &Scope::all(),
            who,
            at,
            &mut r,
        )
        .expect("the bundled drill runs");
    r.drill_fires.push(("evacuation-half-yearly".into(), at));
    commit(w, &mut e, at, r, &mut log);

    let at = t0() + Duration::minutes(2);
    let mut r = Round::default();
    e.add_silence(
        SilenceSpec {
            matchers: vec![matcher("branch", "sh-002"), matcher("kind", "queue.wait")],
            starts_at: at,
            ends_at: at + Duration::hours(4),
            created_by: "wang.fang".into(),
            via: "contract".into(),
            comment: "queue system replaced today".into(),
            force: false,
        },
        at,
        &mut r,
    )
    .expect("a narrow silence is taken");
    commit(w, &mut e, at, r, &mut log);

    let at = t0() + Duration::minutes(3);
    let mut r = Round::default();
    e.resolve(2, who, at, &mut r).expect("incident 2 resolves");
    let inc = e.live_incident(2).cloned();
    if let Some(inc) = inc {
        e.review(
            inc,
            (0, 0),
            ReviewSpec {
                impact: "a long queue for 20 minutes".into(),
                cause: "a ticket printer jammed".into(),
                actions: vec![ActionSpec {
                    what: "a spare printer".into(),
                    owner: "liu.yang".into(),
                    due: t0().date_naive(),
                }],
            },
            who,
            at,
            &mut r,
        )
        .expect("the review is recorded");
    }
    commit(w, &mut e, at, r, &mut log);

    // Three outcomes, as the delivery worker reports them.
    let at = t0() + Duration::minutes(4);
    let pick = |n: usize| log.messages[n].clone();
    let (delivered, retried, failed) = (pick(0), pick(1), pick(2));
    let retry_at = at + Duration::minutes(10);
    let attempt = |(id, n): &(i64, Notification), update: DeliveryUpdate| Attempt {
        update,
        incident: n.incident,
        step: n.step.clone(),
        announcement: n.announcement,
        channel: n.channel,
        target: n.target.clone(),
        recipient: n.recipient.clone(),
        error: None.or((*id != delivered.0).then(|| "554 refused".to_string())),
        how: (*id == delivered.0).then(|| "accepted".to_string()),
    };
    let none = |id| DeliveryUpdate {
        id,
        attempts: 1,
        delivered_at: None,
        next_attempt_at: None,
        failed_at: None,
        last_error: None,
    };
    let mut r = Round::default();
    e.delivered(
        vec![
            attempt(
                &delivered,
                DeliveryUpdate {
                    delivered_at: Some(at),
                    ..none(delivered.0)
                },
            ),
            attempt(
                &retried,
                DeliveryUpdate {
                    next_attempt_at: Some(retry_at),
                    last_error: Some("554 refused".into()),
                    ..none(retried.0)
                },
            ),
            attempt(
                &failed,
                DeliveryUpdate {
                    failed_at: Some(at),
                    last_error: Some("554 refused".into()),
                    ..none(failed.0)
                },
            ),
        ],
        at,
        &mut r,
    );
    let c = commit(w, &mut e, at, r, &mut log);
    World {
        engine: e,
        messages: log.messages,
        incidents: log.incidents,
        delivered: delivered.0,
        retried: (retried.0, retry_at),
        failed: failed.0,
        drill_run,
        head: c.head.expect("a commit names the chain's head"),
        now: at,
    }
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<i64> {
    items.iter().map(id).collect()
}

pub fn every_kind_of_row_is_read_back(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let e = &world.engine;
    // Incidents, each as the engine holds it, with its history.
    for id in 1..=3 {
        let (inc, history) = r.incident(id).unwrap().expect("stored");
        let live = &world.incidents[&id];
        assert_eq!(
            serde_json::to_value(&inc).unwrap(),
            serde_json::to_value(live).unwrap(),
            "incident {id}"
        );
        assert!(
            history.iter().any(|h| h.what == "incident.opened"),
            "incident {id}: {history:?}"
        );
        assert!(history.iter().all(|h| h.incident == Some(id)));
        let (_, again, outbox) = r.incident_with_outbox(id).unwrap().unwrap();
        assert_eq!(again, history);
        let want: Vec<i64> = world
            .messages
            .iter()
            .filter(|(_, n)| n.incident == id)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(ids(&outbox, |o| o.id), want, "incident {id}: its messages");
        for o in &outbox {
            let (_, n) = world.messages.iter().find(|(i, _)| *i == o.id).unwrap();
            assert_eq!(
                (&o.subject, &o.body, &o.recipient, o.drill, o.urgent),
                (&n.subject, &n.body, &n.recipient, n.drill, n.urgent)
            );
        }
    }
    assert!(r.incident(99).unwrap().is_none());
    assert!(
        r.incident(3).unwrap().unwrap().0.drill,
        "the drill's incident"
    );
    // Events: all three, the unmatched one too.
    let events = r
        .list_events(&EventQuery {
            limit: 10,
            scope: Scope::all(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.items.len(), 4, "three received and the drill's");
    let unmatched: Vec<&str> = events
        .items
        .iter()
        .filter(|e| !e.matched)
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(unmatched, ["nothing.matches"]);
    // Delivery outcomes.
    let (_, _, outbox) = r
        .incident_with_outbox(world.messages[0].1.incident)
        .unwrap()
        .unwrap();
    let row = outbox.iter().find(|o| o.id == world.delivered).unwrap();
    assert_eq!((row.attempts, row.delivered_at), (1, Some(world.now)));
    // Drill runs, silences, the drill schedule, review actions.
    let run = r
        .drill_run(world.drill_run)
        .unwrap()
        .expect("the run is stored");
    let held = e.drill_runs().find(|d| d.id == world.drill_run).unwrap();
    assert_eq!(
        serde_json::to_value(&run).unwrap(),
        serde_json::to_value(held).unwrap()
    );
    assert!(r.drill_run(world.drill_run + 100).unwrap().is_none());
    let silences = r.silences(Some(world.now)).unwrap();
    assert_eq!(silences.len(), 1);
    assert_eq!(silences[0].comment, "queue system replaced today");
    assert_eq!(r.silences(None).unwrap().len(), 1);
    let over = world.now + Duration::hours(5);
    assert!(r.silences(Some(over)).unwrap().is_empty(), "over by then");
    let fires = r.drill_last_fires().unwrap();
    assert_eq!(
        fires.get("evacuation-half-yearly"),
        Some(&(t0() + Duration::minutes(1)))
    );
    let action = r.review_action(2, 1).unwrap().expect("the review's action");
    assert_eq!((action.owner.as_str(), action.done_at), ("liu.yang", None));
    assert!(r.review_action(2, 2).unwrap().is_none());
    w.check().expect("a write would go through");
}

pub fn lists_page_and_filter_by_scope(b: &dyn Backend) {
    let (mut w, r) = b.open();
    world(w.as_mut());
    let q = |f: &dyn Fn(&mut IncidentQuery)| {
        let mut q = IncidentQuery {
            limit: 10,
            scope: Scope::all(),
            ..Default::default()
        };
        f(&mut q);
        ids(&r.list_incidents(&q).unwrap().items, |i| i.id)
    };
    assert_eq!(q(&|_| {}), [3, 2, 1], "newest first");
    assert_eq!(q(&|q| q.status = Some("open".into())), [3, 1]);
    assert_eq!(q(&|q| q.status = Some("resolved".into())), [2]);
    assert_eq!(q(&|q| q.branch = Some("sh-001".into())), [1]);
    assert_eq!(q(&|q| q.playbook = Some("queue-wait".into())), [2]);
    assert_eq!(
        q(&|q| q.scope = Scope::branches(["sh-002", "sh-003"])),
        [3, 2]
    );
    assert_eq!(
        q(&|q| q.scope = Scope::branches(Vec::<String>::new())),
        Vec::<i64>::new()
    );
    // Page by page, one at a time, each once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = r
            .list_incidents(&IncidentQuery {
                limit: 1,
                cursor,
                scope: Scope::all(),
                ..Default::default()
            })
            .unwrap();
        seen.extend(ids(&page.items, |i| i.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [3, 2, 1]);
    // Events: by branch, kind, matched, scope; paged.
    let ev = |f: &dyn Fn(&mut EventQuery)| {
        let mut q = EventQuery {
            limit: 10,
            scope: Scope::all(),
            ..Default::default()
        };
        f(&mut q);
        r.list_events(&q)
            .unwrap()
            .items
            .iter()
            .map(|e| e.kind.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ev(&|q| q.branch = Some("sh-002".into())), ["queue.wait"]);
    assert_eq!(
        ev(&|q| q.kind = Some("nothing.matches".into())),
        ["nothing.matches"]
    );
    assert_eq!(ev(&|q| q.matched = Some(false)), ["nothing.matches"]);
    assert_eq!(
        ev(&|q| q.scope = Scope::branches(["sh-001"])),
        ["system.down"]
    );
    let first = r
        .list_events(&EventQuery {
            limit: 2,
            scope: Scope::all(),
            ..Default::default()
        })
        .unwrap();
    let rest = r
        .list_events(&EventQuery {
            limit: 10,
            cursor: first.next,
            scope: Scope::all(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.items.len() + rest.items.len(), 4);
    assert!(rest.next.is_none());
    let all: BTreeSet<i64> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), 4, "no event twice");
    // Drill runs: by drill, branch and scope.
    let runs = |q: DrillRunQuery| {
        ids(
            &r.list_drill_runs(&DrillRunQuery { limit: 10, ..q })
                .unwrap()
                .items,
            |d| d.id,
        )
    };
    let one = runs(DrillRunQuery {
        scope: Scope::all(),
        ..Default::default()
    });
    assert_eq!(one.len(), 1);
    assert_eq!(
        runs(DrillRunQuery {
            drill: Some("failover-monthly".into()),
            scope: Scope::all(),
            ..Default::default()
        }),
        one
    );
    assert!(
        runs(DrillRunQuery {
            drill: Some("conflict-quarterly".into()),
            scope: Scope::all(),
            ..Default::default()
        })
        .is_empty()
    );
    assert_eq!(
        runs(DrillRunQuery {
            branch: Some("sh-003".into()),
            scope: Scope::all(),
            ..Default::default()
        }),
        one
    );
    assert!(
        runs(DrillRunQuery {
            scope: Scope::branches(["sh-001"]),
            ..Default::default()
        })
        .is_empty()
    );
    // The open incident of a group.
    let group = r.incident(1).unwrap().unwrap().0.group_key;
    assert_eq!(r.open_for_group(&group).unwrap(), Some(1));
    let resolved = r.incident(2).unwrap().unwrap().0.group_key;
    assert_eq!(r.open_for_group(&resolved).unwrap(), None);
}

pub fn the_outbox_gives_lanes_groups_and_retries(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let now = world.now;
    assert!(
        world.messages.iter().any(|(_, n)| n.urgent),
        "the world has urgent messages"
    );
    let settled = [world.delivered, world.retried.0, world.failed];
    let due: Vec<&(i64, Notification)> = world
        .messages
        .iter()
        .filter(|(id, _)| !settled.contains(id))
        .collect();
    assert_eq!(
        r.outbox_pending().unwrap(),
        due.len() as u64 + 1,
        "the due ones and the one to retry"
    );
    assert_eq!(r.outbox_oldest_pending().unwrap(), Some(t0()));
    assert_eq!(
        r.next_outbox_attempt().unwrap(),
        Some(t0()),
        "new rows are due at once"
    );
    // Lanes, in order, from the messages still due.
    let want: BTreeSet<Lane> = due
        .iter()
        .map(|(_, n)| Lane::of(n.channel, &n.recipient))
        .collect();
    let lanes = r.due_lanes(now).unwrap();
    assert_eq!(lanes, want.iter().cloned().collect::<Vec<_>>());
    let mut through_groups = Vec::new();
    let mut through_lanes = Vec::new();
    for lane in &lanes {
        for g in r.due_groups(now, lane).unwrap() {
            // Not urgent ones: a group of urgent rows only gives none.
            let rows = r.due_outbox_of(now, lane, &g, &[], 5000).unwrap();
            assert!(
                rows.iter()
                    .all(|o| o.recipient == g.recipient && o.drill == g.drill && !o.urgent)
            );
            assert!(rows.windows(2).all(|p| p[0].id < p[1].id), "oldest first");
            through_groups.extend(rows.iter().map(|o| o.id));
        }
        let urgent = r.due_urgent_in(now, lane, &[], 5000).unwrap();
        assert!(
            urgent
                .iter()
                .all(|o| o.urgent && Lane::of(o.channel, &o.recipient) == *lane)
        );
        through_groups.extend(urgent.iter().map(|o| o.id));
        let rows = r.due_outbox_in(now, lane, &[], 5000).unwrap();
        assert!(
            rows.iter()
                .all(|o| Lane::of(o.channel, &o.recipient) == *lane)
        );
        // In flight: left out; a limit: kept.
        if let Some(first) = rows.first() {
            let rest = r.due_outbox_in(now, lane, &[first.id], 5000).unwrap();
            assert_eq!(rest.len(), rows.len() - 1);
            assert!(rest.iter().all(|o| o.id != first.id));
            assert_eq!(r.due_outbox_in(now, lane, &[], 1).unwrap().len(), 1);
        }
        through_lanes.extend(rows.iter().map(|o| o.id));
    }
    through_groups.sort_unstable();
    through_lanes.sort_unstable();
    let mut want: Vec<i64> = due.iter().map(|(id, _)| *id).collect();
    want.sort_unstable();
    assert_eq!(through_lanes, want, "each due row once, by lane");
    assert_eq!(
        through_groups, want,
        "each due row once, by group or as urgent"
    );
    // Drill and real to one person are two groups.
    let drill = world
        .messages
        .iter()
        .find(|(_, n)| n.drill)
        .expect("the drill sent messages");
    let lane = Lane::of(drill.1.channel, &drill.1.recipient);
    assert!(
        r.due_groups(now, &lane)
            .unwrap()
            .iter()
            .any(|g| g.drill && g.recipient == drill.1.recipient)
    );
    // The retry: not due before its time, due at it; settled rows never.
    let (retried, at) = world.retried;
    assert_eq!(r.next_retry_after(now).unwrap(), Some(at));
    assert_eq!(r.next_retry_after(at).unwrap(), None);
    assert!(!through_lanes.contains(&retried));
    let later: Vec<i64> = lanes_rows(r.as_ref(), at);
    assert!(later.contains(&retried));
    for gone in [world.delivered, world.failed] {
        assert!(
            !later.contains(&gone),
            "a settled row is never selected again"
        );
    }
}

fn lanes_rows(r: &dyn Reader, now: DateTime<Utc>) -> Vec<i64> {
    let mut out = Vec::new();
    for lane in r.due_lanes(now).unwrap() {
        out.extend(
            r.due_outbox_in(now, &lane, &[], 5000)
                .unwrap()
                .iter()
                .map(|o| o.id),
        );
    }
    out
}

pub fn a_restart_finds_the_live_state(b: &dyn Backend) {
    let world = {
        let (mut w, _) = b.open();
        world(w.as_mut())
    };
    let (mut w, r) = b.open();
    let live = w.load_live(world.now).unwrap();
    let held: Vec<i64> = world.engine.live().map(|i| i.id).collect();
    assert_eq!(
        ids(&live.incidents, |i| i.id),
        held,
        "the live incidents, by id"
    );
    for inc in &live.incidents {
        assert!(
            inc.playbook.is_some(),
            "incident {}: its playbook version",
            inc.id
        );
    }
    assert_eq!(live.next_incident, 4);
    assert_eq!(live.next_event, 5);
    assert_eq!(ids(&live.drills.running, |d| d.id), [world.drill_run]);
    assert_eq!(live.drills.next_run, world.drill_run + 1);
    assert_eq!(live.drills.last_fire.len(), 1);
    assert_eq!(live.silences.len(), 1);
    let reviews: Vec<(i64, u32)> = live
        .reviews
        .iter()
        .map(|(a, _)| (a.incident, a.n))
        .collect();
    assert_eq!(reviews, [(2, 1)]);
    assert_eq!(live.reviews[0].1.id, 2, "with its incident");
    // Overdue from the day after it was due, in the branch's zone.
    let due = r.review_action(2, 1).unwrap().unwrap().due_at;
    assert!(
        r.overdue_review_actions(due - Duration::seconds(1))
            .unwrap()
            .is_empty()
    );
    let overdue = r.overdue_review_actions(due).unwrap();
    assert_eq!(
        overdue
            .iter()
            .map(|a| (a.incident, a.n))
            .collect::<Vec<_>>(),
        [(2, 1)]
    );
    // And the store takes the next round.
    let mut e = Engine::new(
        world.engine.loaded().clone(),
        live.incidents,
        live.next_incident,
        live.next_event,
        world.now,
    );
    let mut round = Round::default();
    e.resolve(1, Who::new(Some("zhang.min"), None), world.now, &mut round)
        .unwrap();
    e.finish(world.now, &mut round);
    w.commit(&round).unwrap();
    assert_eq!(
        r.incident(1).unwrap().unwrap().0.status.as_str(),
        "resolved"
    );
}

pub fn the_audit_chain_verifies_and_a_cut_is_found(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let head = world.head.clone();
    match r.verify_audit(Some(b.key()), Some(head.clone())).unwrap() {
        AuditCheck::Ok { rows, keyed, last } => {
            assert_eq!(
                (rows as i64, keyed, last.as_str()),
                (head.rows, true, head.hash.as_str())
            );
        }
        AuditCheck::Broken { seq, reason } => panic!("row {seq}: {reason}"),
    }
    // A head published past the stored end: rows were cut off.
    let longer = super::Head {
        rows: head.rows + 1,
        hash: head.hash.clone(),
    };
    assert!(matches!(
        r.verify_audit(Some(b.key()), Some(longer)).unwrap(),
        AuditCheck::Broken { .. }
    ));
    // Another key: the signatures do not hold.
    let other = AuditKey::from_bytes(&[9u8; 32]);
    assert!(matches!(
        r.verify_audit(Some(other), None).unwrap(),
        AuditCheck::Broken { .. }
    ));
}

pub fn records_cover_each_incident_of_the_period(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let mut incidents = Vec::new();
    let mut audit = BTreeSet::new();
    let mut outbox = Vec::new();
    let mut chain = 0;
    r.records(t0(), t0() + Duration::days(1), &mut |rec| {
        match rec {
            Record::Chain { head, .. } => {
                chain += 1;
                assert_eq!(head, world.head);
            }
            Record::Incident { id, body, .. } => {
                let _: serde_json::Value = serde_json::from_str(&body).unwrap();
                incidents.push(id);
            }
            Record::Audit(row) => {
                audit.insert(super::records::incident_of(&row.entity));
            }
            Record::Outbox(o) => outbox.push(o.id),
        }
        Ok::<(), StoreError>(())
    })
    .unwrap();
    assert_eq!(chain, 1);
    assert_eq!(incidents, [1, 2, 3]);
    assert_eq!(audit, [Some(1), Some(2), Some(3)].into_iter().collect());
    let mut want: Vec<i64> = world.messages.iter().map(|(id, _)| *id).collect();
    want.sort_unstable();
    outbox.sort_unstable();
    assert_eq!(outbox, want);
    // Outside the period: nothing but the chain.
    let mut n = 0;
    r.records(
        t0() + Duration::days(1),
        t0() + Duration::days(2),
        &mut |rec| {
            n += usize::from(!matches!(rec, Record::Chain { .. }));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(n, 0);
}

pub fn a_commit_that_fails_midway_leaves_nothing(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let mut e = world.engine;
    let before = r
        .list_events(&EventQuery {
            limit: 100,
            scope: Scope::all(),
            ..Default::default()
        })
        .unwrap()
        .items
        .len();
    let round = outage_round(&mut e, world.now);
    assert!(!round.events.is_empty() && !round.incidents.is_empty());
    // Its event and audit rows are written before its incidents, whose
    // bodies are missing: the commit fails midway.
    let mut broken = Round::default();
    broken.events = round.events.clone();
    broken.audit = round.audit.clone();
    broken.incidents = round.incidents.clone();
    broken.outbox = round.outbox.clone();
    assert!(matches!(
        w.commit(&broken),
        Err(StoreError::Inconsistent(_))
    ));
    let after = r
        .list_events(&EventQuery {
            limit: 100,
            scope: Scope::all(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(after.items.len(), before, "no event of the failed commit");
    assert!(r.incident(4).unwrap().is_none());
    chain_ok(&*r, b, Some(world.head.clone()));
    // The same round, whole, goes through after it, and the chain holds.
    let c = w.commit(&round).unwrap();
    assert!(r.incident(4).unwrap().is_some());
    chain_ok(&*r, b, c.head);
}

/// The audit chain verifies under the backend's key, up to `head`.
fn chain_ok(r: &dyn Reader, b: &dyn Backend, head: Option<super::Head>) {
    assert!(matches!(
        r.verify_audit(Some(b.key()), head).unwrap(),
        AuditCheck::Ok { .. }
    ));
}

/// What the engine decides on a core-system outage at sh-002: a new
/// incident (4 in the world), its history, its messages.
pub(crate) fn outage_round(e: &mut Engine, now: DateTime<Utc>) -> Round {
    let mut round = Round::default();
    e.ingest(
        vec![(
            event(
                "system.down",
                "sh-002",
                Severity::Critical,
                &[("system", "core-banking")],
            ),
            now,
        )],
        "contract",
        now,
        &mut round,
    );
    e.finish(now, &mut round);
    round
}

/// A round the database itself refuses part-way (an event id already
/// stored): the statements sent before and after it leave nothing, the
/// error is returned (not lost in a pipelined COMMIT that became a
/// rollback), and the writer goes on.
pub fn a_commit_the_database_refuses_leaves_nothing(b: &dyn Backend) {
    let (mut w, r) = b.open();
    let world = world(w.as_mut());
    let mut e = world.engine;
    let all = EventQuery {
        limit: 100,
        scope: Scope::all(),
        ..Default::default()
    };
    let before = r.list_events(&all).unwrap().items;
    let end = r.chain_end().unwrap();
    assert!(end.is_some(), "the world's commits wrote audit rows");
    let round = outage_round(&mut e, world.now);
    assert!(!round.outbox.is_empty() && !round.history.is_empty());
    let mut broken = Round::default();
    broken.events = round.events.clone();
    broken.events[0].id = before[0].id;
    broken.incidents = round.incidents.clone();
    broken.bodies = round.bodies.clone();
    broken.playbooks = round.playbooks.clone();
    broken.history = round.history.clone();
    broken.audit = round.audit.clone();
    broken.outbox = round.outbox.clone();
    assert!(w.commit(&broken).is_err(), "a stored event id is refused");
    let after = r.list_events(&all).unwrap().items;
    assert_eq!(after.len(), before.len(), "no event of the refused commit");
    assert!(r.incident(4).unwrap().is_none(), "no incident of it");
    assert_eq!(r.chain_end().unwrap(), end, "the chain did not move");
    chain_ok(&*r, b, Some(world.head.clone()));
    let c = w.commit(&round).unwrap();
    assert!(r.incident(4).unwrap().is_some());
    assert_eq!(r.list_events(&all).unwrap().items.len(), before.len() + 1);
    assert!(
        r.chain_end().unwrap() > end,
        "a commit moves the chain's end"
    );
    chain_ok(&*r, b, c.head);
}

/// The suite calls every method of both traits: a method added to either
/// without a case here fails this.
#[test]
fn the_contract_calls_every_method_of_both_traits() {
    let traits = include_str!("mod.rs");
    let suite = include_str!("contract.rs");
    let mut methods = 0;
    for name in ["pub trait Writer", "pub trait Reader"] {
        let start = traits.find(name).expect("the trait is in store/mod.rs");
        let end = start + traits[start..].find("\n}\n").expect("the trait ends");
        for line in traits[start..end].lines() {
            let Some(rest) = line.trim().strip_prefix("fn ") else {
                continue;
            };
            let method = rest.split(['(', '<']).next().unwrap_or_default();
            methods += 1;
            assert!(
                suite.contains(&format!(".{method}(")),
                "{name}::{method} is not in the contract suite"
            );
        }
    }
    assert!(methods >= 25, "found {methods} methods");
}
