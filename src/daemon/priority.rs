//! Small inputs first. A turn of the engine loop takes everything queued; when
//! that mixes a few single events or people's clicks with bulk batches (an
//! Alertmanager flushing hundreds of alerts), the small ones get a round of
//! their own, committed and answered before the bulk. A round's cost grows
//! with its events, so an acknowledgement or a lone alarm that arrived beside
//! a 500-event batch no longer waits for the batch's pages to be written: in
//! the storm benchmark, a ping's round used to carry the next 100-event batch
//! too, which was most of its p99 under a 17,000 events/s background load.
//!
//! **Invariant:** both parts are decided and committed in the same turn, the
//! small part first, so the bulk is never put off by later small inputs; a
//! turn that holds a reload, a drill run or the shutdown is not split, so no
//! input is decided under a different configuration or drill state than the
//! order it was queued in would give; events of a branch the bulk also holds
//! are never decided before it.

use std::collections::HashSet;

use crate::engine::Input;

/// An input of at most this many events (or delivery outcomes) is small.
const SMALL: usize = 8;
/// Small inputs get their own round only when the rest are at least this many
/// events: below that the rest commit quickly anyway, and a second commit (an
/// `fsync`) would cost more than it saves.
const BULK: usize = 64;

/// How many events (or outcomes) an input carries, or `None` for an input
/// that must keep its place in the queue's order.
fn size(input: &Input) -> Option<usize> {
    match input {
        Input::Events { .. } => Some(input.weight()),
        Input::Delivered { attempts, .. } => Some(attempts.len()),
        Input::Step { .. }
        | Input::Resolve { .. }
        | Input::Escalate { .. }
        | Input::AddSilence { .. }
        | Input::ExpireSilence { .. }
        | Input::CommandFinished { .. }
        | Input::AuthDenied { .. }
        | Input::LinkRefused { .. } => Some(1),
        Input::RunDrill { .. }
        | Input::AbortDrill { .. }
        | Input::Reload { .. }
        | Input::Shutdown => None,
    }
}

/// The rounds to run for one turn's inputs, in order: the small inputs, then
/// the rest (each part in the order queued), or everything in one round.
pub(super) fn rounds(inputs: Vec<Input>) -> Vec<Vec<Input>> {
    let Some(sizes) = inputs.iter().map(size).collect::<Option<Vec<usize>>>() else {
        return vec![inputs];
    };
    let bulk: usize = sizes.iter().filter(|s| **s > SMALL).sum();
    if bulk < BULK || sizes.iter().all(|s| *s > SMALL) {
        return vec![inputs];
    }
    // A monitoring system that posts a branch's recovery without waiting for
    // the answer to its failure must not see the recovery decided first (the
    // incident would stay open): events of a branch the bulk also holds keep
    // their place behind it.
    let bulk_branches: HashSet<&str> = inputs
        .iter()
        .zip(&sizes)
        .filter(|(_, s)| **s > SMALL)
        .flat_map(|(i, _)| branches(i))
        .collect();
    let first: Vec<bool> = inputs
        .iter()
        .zip(&sizes)
        .map(|(i, s)| *s <= SMALL && !branches(i).any(|b| bulk_branches.contains(b)))
        .collect();
    if !first.contains(&true) {
        return vec![inputs];
    }
    let mut small = Vec::new();
    let mut rest = Vec::new();
    for (input, first) in inputs.into_iter().zip(first) {
        if first {
            small.push(input);
        } else {
            rest.push(input);
        }
    }
    vec![small, rest]
}

/// The branches an input's events are about (none for other inputs).
fn branches(input: &Input) -> impl Iterator<Item = &str> {
    let events: &[crate::event::Event] = match input {
        Input::Events { events, .. } => events,
        _ => &[],
    };
    events.iter().map(|e| e.branch.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Severity, Status};

    fn events(n: usize, tag: &str) -> Input {
        events_of(n, tag, &format!("branch-{tag}"))
    }

    fn events_of(n: usize, tag: &str, branch: &str) -> Input {
        let (reply, _) = tokio::sync::oneshot::channel();
        let event = Event {
            kind: tag.to_string(),
            branch: branch.into(),
            severity: Severity::Critical,
            status: Status::Firing,
            labels: Default::default(),
            summary: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            source: "test".into(),
        };
        Input::Events {
            events: vec![event; n],
            refused: Vec::new(),
            received_at: chrono::DateTime::UNIX_EPOCH,
            reply,
        }
    }

    fn ack(incident: i64) -> Input {
        let (reply, _) = tokio::sync::oneshot::channel();
        Input::Step {
            incident,
            step: "s".into(),
            verb: crate::engine::Verb::Ack,
            by: None,
            note: None,
            reply,
        }
    }

    /// Each round as a list of labels: the events' kind and count, or the
    /// acknowledged incident.
    fn labels(rounds: &[Vec<Input>]) -> Vec<Vec<String>> {
        rounds
            .iter()
            .map(|r| {
                r.iter()
                    .map(|i| match i {
                        Input::Events { events, .. } => {
                            format!("{}x{}", events[0].kind, events.len())
                        }
                        Input::Step { incident, .. } => format!("ack{incident}"),
                        Input::Shutdown => "shutdown".into(),
                        _ => "other".into(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn small_inputs_beside_bulk_get_a_round_of_their_own_first() {
        let turn = vec![
            events(100, "a"),
            events(1, "b"),
            ack(7),
            events(200, "c"),
            events(8, "d"),
        ];
        assert_eq!(
            labels(&rounds(turn)),
            vec![vec!["bx1", "ack7", "dx8"], vec!["ax100", "cx200"]]
        );
    }

    #[test]
    fn a_turn_without_bulk_or_without_small_inputs_is_one_round() {
        // 63 events of bulk: not worth a second commit.
        let few = vec![events(9, "a"), events(54, "b"), events(1, "c")];
        assert_eq!(labels(&rounds(few)), vec![vec!["ax9", "bx54", "cx1"]]);
        let only_small = vec![events(1, "a"), ack(1), events(8, "b")];
        assert_eq!(
            labels(&rounds(only_small)),
            vec![vec!["ax1", "ack1", "bx8"]]
        );
        let only_bulk = vec![events(100, "a"), events(100, "b")];
        assert_eq!(labels(&rounds(only_bulk)), vec![vec!["ax100", "bx100"]]);
        // 64 events of bulk: split.
        let at_bulk = vec![events(64, "a"), events(1, "b")];
        assert_eq!(labels(&rounds(at_bulk)), vec![vec!["bx1"], vec!["ax64"]]);
    }

    #[test]
    fn a_small_input_about_a_branch_the_bulk_holds_stays_behind_it() {
        // A recovery posted before the failure's batch was answered.
        let turn = vec![
            events_of(100, "down", "sh-001"),
            events_of(1, "up", "sh-001"),
            events(1, "other"),
        ];
        assert_eq!(
            labels(&rounds(turn)),
            vec![vec!["otherx1"], vec!["downx100", "upx1"]]
        );
        let only_that = vec![
            events_of(100, "down", "sh-001"),
            events_of(1, "up", "sh-001"),
        ];
        assert_eq!(labels(&rounds(only_that)), vec![vec!["downx100", "upx1"]]);
    }

    #[test]
    fn a_turn_holding_an_input_that_keeps_its_place_is_not_split() {
        let turn = vec![events(100, "a"), Input::Shutdown, events(1, "b")];
        assert_eq!(
            labels(&rounds(turn)),
            vec![vec!["ax100", "shutdown", "bx1"]]
        );
    }
}
