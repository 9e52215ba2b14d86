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
//! small part first, so the bulk is never put off by later small inputs. No
//! input is decided before one queued ahead of it that could change what it
//! does: a small input goes first only when nothing it may depend on stays
//! behind. Events depend on earlier events of their branch (every playbook
//! groups by branch; when one does not, events keep their order); people's
//! actions and outcomes, whose incidents are not known here, on anything that
//! stays behind. A turn holding a reload, a silence, a drill run or the
//! shutdown is not split: those change how everything after them is decided.

use std::collections::HashSet;

use crate::engine::Input;

/// An input of at most this many events (or delivery outcomes) is small.
const SMALL: usize = 8;
/// Small inputs get their own round only when the rest are at least this many
/// events: below that the rest commit quickly anyway, and a second commit (an
/// `fsync`) would cost more than it saves.
const BULK: usize = 64;

/// How many events (or outcomes) an input carries, or `None` for an input
/// that keeps the whole turn in the order queued.
fn size(input: &Input) -> Option<usize> {
    match input {
        Input::Events { .. } => Some(input.weight()),
        Input::Delivered { attempts, .. } => Some(attempts.len()),
        Input::Step { .. }
        | Input::Resolve { .. }
        | Input::Escalate { .. }
        | Input::Review { .. }
        | Input::ReviewActionDone { .. }
        | Input::CommandFinished { .. }
        | Input::AuthDenied { .. }
        | Input::LinkRefused { .. } => Some(1),
        Input::AddSilence { .. }
        | Input::ExpireSilence { .. }
        | Input::RunDrill { .. }
        | Input::AbortDrill { .. }
        | Input::Reload { .. }
        | Input::Shutdown => None,
    }
}

/// The rounds to run for one turn's inputs, in order: the small inputs that
/// may go first, then the rest (each part in the order queued), or everything
/// in one round. `by_branch`: whether every playbook groups its incidents by
/// branch, so events of different branches never meet in one incident (asked
/// only for a turn that may split).
pub(super) fn rounds(inputs: Vec<Input>, by_branch: impl FnOnce() -> bool) -> Vec<Vec<Input>> {
    let Some(sizes) = inputs.iter().map(size).collect::<Option<Vec<usize>>>() else {
        return vec![inputs];
    };
    let bulk: usize = sizes.iter().filter(|s| **s > SMALL).sum();
    if bulk < BULK || sizes.iter().all(|s| *s > SMALL) {
        return vec![inputs];
    }
    let by_branch = by_branch();
    // Walked in the order queued: what stays behind holds its branches (a
    // recovery posted before the answer to its failure's batch must not be
    // decided first, or the incident would stay open), or everything.
    let mut held: HashSet<&str> = HashSet::new();
    let mut held_all = false;
    let mut first = Vec::with_capacity(inputs.len());
    for (input, size) in inputs.iter().zip(&sizes) {
        let is_events = matches!(input, Input::Events { .. });
        let free = if is_events && by_branch {
            !held_all && !branches(input).any(|b| held.contains(b))
        } else {
            !held_all && held.is_empty()
        };
        let goes_first = *size <= SMALL && free;
        if !goes_first {
            if is_events && by_branch {
                held.extend(branches(input));
            } else {
                held_all = true;
            }
        }
        first.push(goes_first);
    }
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
            via: "test".into(),
            reply,
        }
    }

    fn ack(incident: i64) -> Input {
        let (reply, _) = tokio::sync::oneshot::channel();
        Input::Step {
            incident,
            step: "s".into(),
            verb: crate::engine::Verb::Ack,
            actor: crate::engine::handle::Actor::new("it.a", "test"),
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

    /// The rounds of a turn, with every playbook grouping by branch.
    fn split(turn: Vec<Input>) -> Vec<Vec<String>> {
        labels(&rounds(turn, || true))
    }

    /// One input of events, one for each of `branches`.
    fn events_in(tag: &str, branches: &[&str]) -> Input {
        let mut input = events_of(branches.len(), tag, "");
        if let Input::Events { events, .. } = &mut input {
            for (e, b) in events.iter_mut().zip(branches) {
                e.branch = b.to_string();
            }
        }
        input
    }

    #[test]
    fn small_inputs_beside_bulk_get_a_round_of_their_own_first() {
        let turn = vec![
            events(1, "b"),
            ack(7),
            events(100, "a"),
            events(8, "d"),
            events(200, "c"),
        ];
        assert_eq!(
            split(turn),
            vec![vec!["bx1", "ack7", "dx8"], vec!["ax100", "cx200"]]
        );
    }

    #[test]
    fn a_turn_without_bulk_or_without_small_inputs_is_one_round() {
        // 63 events of bulk: not worth a second commit.
        let few = vec![events(9, "a"), events(54, "b"), events(1, "c")];
        assert_eq!(split(few), vec![vec!["ax9", "bx54", "cx1"]]);
        let only_small = vec![events(1, "a"), ack(1), events(8, "b")];
        assert_eq!(split(only_small), vec![vec!["ax1", "ack1", "bx8"]]);
        let only_bulk = vec![events(100, "a"), events(100, "b")];
        assert_eq!(split(only_bulk), vec![vec!["ax100", "bx100"]]);
        // 64 events of bulk: split.
        let at_bulk = vec![events(64, "a"), events(1, "b")];
        assert_eq!(split(at_bulk), vec![vec!["bx1"], vec!["ax64"]]);
    }

    #[test]
    fn a_small_input_about_a_branch_the_bulk_holds_stays_behind_it() {
        // A recovery posted before the failure's batch was answered.
        let turn = vec![
            events_of(100, "down", "sh-001"),
            events_of(1, "up", "sh-001"),
            events(1, "other"),
        ];
        assert_eq!(split(turn), vec![vec!["otherx1"], vec!["downx100", "upx1"]]);
        let only_that = vec![
            events_of(100, "down", "sh-001"),
            events_of(1, "up", "sh-001"),
        ];
        assert_eq!(split(only_that), vec![vec!["downx100", "upx1"]]);
    }

    #[test]
    fn what_stays_behind_holds_its_branches_for_the_inputs_after_it() {
        // The failure of B rides with one of A, which the bulk holds: B's
        // recovery stays behind both.
        let turn = vec![
            events_of(100, "down", "A"),
            events_in("x", &["A", "B"]),
            events_of(1, "up", "B"),
            events(1, "other"),
        ];
        assert_eq!(
            split(turn),
            vec![vec!["otherx1"], vec!["downx100", "xx2", "upx1"]]
        );
    }

    #[test]
    fn an_action_behind_bulk_stays_there_and_holds_everything_after_it() {
        // Its incident is not known here: it might be the bulk's.
        let turn = vec![events(100, "a"), ack(7), events(1, "b")];
        assert_eq!(split(turn), vec![vec!["ax100", "ack7", "bx1"]]);
        let turn = vec![events(100, "a"), events(1, "b"), ack(7), events(1, "c")];
        assert_eq!(split(turn), vec![vec!["bx1"], vec!["ax100", "ack7", "cx1"]]);
    }

    #[test]
    fn without_grouping_by_branch_events_keep_their_order() {
        let turn = vec![ack(1), events(100, "a"), events(1, "b")];
        assert_eq!(
            labels(&rounds(turn, || false)),
            vec![vec!["ack1"], vec!["ax100", "bx1"]]
        );
    }

    #[test]
    fn a_turn_holding_an_input_that_keeps_its_place_is_not_split() {
        let turn = vec![events(100, "a"), Input::Shutdown, events(1, "b")];
        assert_eq!(split(turn), vec![vec!["ax100", "shutdown", "bx1"]]);
        // A silence decides what every event after it does.
        let (reply, _) = tokio::sync::oneshot::channel();
        let expire = Input::ExpireSilence {
            id: 1,
            actor: crate::engine::handle::Actor::new("ops", "test"),
            reply,
        };
        let turn = vec![events(100, "a"), expire, events(1, "b")];
        assert_eq!(split(turn), vec![vec!["ax100", "other", "bx1"]]);
    }
}
