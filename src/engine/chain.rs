//! One plan opens another: a step whose action is `event` sends an event
//! for its incident's branch through the same intake as every other event
//! (matching, grouping, silences), so a major complaint opens the conflict
//! plan. A drill's step opens drill incidents of the same run, never real
//! ones. Each incident counts how many such hops led to it; at
//! [`MAX_HOPS`] the chain stops and the history says so — `check` refuses
//! the cycles it can see, this catches the rest.

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Action;
use crate::event::Status;
use crate::matching;

/// How many incidents one outside event may set off, each opening the next.
pub const MAX_HOPS: u8 = 5;

impl Engine {
    /// Sends step `idx`'s event; returns what the history says of it.
    pub(super) fn send_event(
        &mut self,
        inc: &Incident,
        spec: &Step,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> String {
        let Action::Event {
            kind,
            labels,
            severity,
            summary,
            ..
        } = &spec.action
        else {
            return String::new();
        };
        if inc.chain >= MAX_HOPS {
            return format!(
                "event {kind} not sent: {MAX_HOPS} incidents in a row were opened by events of steps (a loop between playbooks?)"
            );
        }
        let vars = self.vars(inc, Some(spec));
        let ev = Event {
            kind: kind.clone(),
            branch: inc.branch.clone(),
            severity: *severity,
            status: Status::Firing,
            labels: labels
                .iter()
                .map(|(k, t)| (k.clone(), t.render(&vars)))
                .collect(),
            summary: summary.as_ref().map(|t| t.render(&vars)),
            occurred_at: now,
            source: format!("incident:{}", inc.id),
        };
        let before = self.opening_hops.replace(inc.chain + 1);
        let opened = match (inc.drill, inc.drill_run) {
            (true, Some(run)) => self.drill_event(ev, run, !inc.rehearsal, now, round),
            // A drill incident without its run: nothing real may open.
            (true, None) => None,
            _ => self
                .ingest(vec![(ev, now)], VIA_ENGINE, now, round)
                .into_iter()
                .next()
                .map(|(id, incidents, _)| (id, incidents)),
        };
        self.opening_hops = before;
        match opened {
            None => format!("event {kind} not sent: a drill incident outside its run"),
            Some((id, v)) if v.is_empty() => {
                format!("event {kind} sent (event {id}); no playbook took it")
            }
            Some((id, v)) => format!(
                "event {kind} sent (event {id}); incident {}",
                v.iter()
                    .map(|i| format!("#{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// A drill's chained event: drill incidents of the same run, one per
    /// playbook that takes it, never joined to a real incident.
    fn drill_event(
        &mut self,
        ev: Event,
        run: i64,
        live: bool,
        now: DateTime<Utc>,
        round: &mut Round,
    ) -> Option<(i64, Vec<i64>)> {
        let id = self.next_event;
        self.next_event += 1;
        let matches = matching::match_event(&self.loaded.playbooks, &ev);
        let incidents: Vec<i64> = matches
            .iter()
            .map(|m| self.open(m, &ev, Some((run, live)), now, round))
            .collect();
        Self::received(
            round,
            StoredEvent {
                id,
                received_at: now,
                event: ev,
                matched: !incidents.is_empty(),
                incidents: incidents.clone(),
                rejected: None,
                silenced: None,
            },
            VIA_ENGINE,
        );
        Some((id, incidents))
    }
}
