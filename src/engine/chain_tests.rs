//! The run-time cap on chains the check cannot see (here: a playbook put
//! together in memory, past `check`): each incident opens the next until
//! the fifth hop, and the sixth says it stopped.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Action;
use crate::event::{Event, Severity, Status};

#[test]
fn a_loop_stops_after_five_hops_and_says_so() {
    let (mut loaded, _dir) = super::setup_tests::loaded_with(
        "id: ping\nname: Ping\ntrigger: { kind: ping }\ngroup_by: [branch, n]\nsteps:\n  - id: look\n    assignee: branch-head\n    deadline: 1h\n",
    );
    let mut pb = (*loaded.playbooks[0]).clone();
    let mut step = pb.steps[0].clone();
    step.id = "again".into();
    step.assignee = None;
    step.action = Action::Event {
        kind: "ping".into(),
        labels: [(
            "n".to_string(),
            crate::template::Template::parse("{{incident}}").unwrap(),
        )]
        .into(),
        severity: Severity::Major,
        summary: None,
        at: (0, 0),
    };
    pb.steps.push(step);
    loaded.playbooks = vec![Arc::new(pb)];
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc();
    let mut e = Engine::new(loaded, Vec::new(), 1, 1, t0);
    let mut r = Round::default();
    let ev = Event {
        kind: "ping".into(),
        branch: "br-a".into(),
        severity: Severity::Major,
        status: Status::Firing,
        labels: [("n".to_string(), "outside".to_string())].into(),
        summary: None,
        occurred_at: t0,
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0)], "test", t0, &mut r);
    let ids: Vec<i64> = e.live().map(|i| i.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6], "one outside event, five hops");
    let chains: Vec<u8> = e.live().map(|i| i.chain).collect();
    assert_eq!(chains, vec![0, 1, 2, 3, 4, 5]);
    let last = r
        .history
        .iter()
        .filter(|h| h.incident == Some(6) && h.what == "step.done")
        .map(|h| h.detail.clone())
        .collect::<Vec<_>>();
    assert_eq!(last.len(), 1);
    assert!(
        last[0].contains("event ping not sent: 5 incidents in a row"),
        "{last:?}"
    );
}
