//! Tiers rising: by an event that meets a higher tier's conditions, or by
//! time (`open_for`): a tier reached when the incident has been open that
//! long, and, where the tier names labels or a severity, some event of the
//! incident met them. The time is the incident's timer, so it survives a
//! restart like a deadline. Tiers only rise.

use chrono::{DateTime, Utc};

use super::*;

impl Engine {
    /// Raises an open incident to `tier` and starts the steps that take part
    /// from it; `by` and `detail` go to the `tier.raised` history line.
    pub(super) fn raise_tier(
        &mut self,
        iid: i64,
        tier: u8,
        by: &str,
        detail: String,
        now: DateTime<Utc>,
        round: &mut Round,
    ) {
        let Some(inc) = self.live.get_mut(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        if tier <= inc.tier || inc.status != IncidentStatus::Open {
            return;
        }
        inc.tier = tier;
        round.touched.insert(iid);
        Self::history(round, iid, now, "tier.raised", by, detail);
        let newly: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.starts_at_open() && s.eligible(tier) && inc.steps[*i].state == StepState::Pending
            })
            .map(|(i, _)| i)
            .collect();
        for idx in newly {
            self.activate(iid, idx, now, round);
        }
    }

    /// When the next tier reached by time is due, if any.
    pub(super) fn timed_tier_due(&self, inc: &Incident) -> Option<DateTime<Utc>> {
        if inc.status != IncidentStatus::Open {
            return None;
        }
        let pb = inc.playbook.as_ref()?;
        let cal = &self.loaded.config.calendar;
        pb.tiers
            .iter()
            .filter(|t| t.level > inc.tier && inc.timed_tiers.contains(&t.level))
            .filter_map(|t| t.open_for.as_ref().map(|d| d.after(inc.opened_at, cal)))
            .min()
    }

    /// The highest tier reached by time at `now`, if higher than the incident's.
    pub(super) fn raise_timed(&mut self, iid: i64, now: DateTime<Utc>, round: &mut Round) {
        let Some(inc) = self.live.get(&iid) else {
            return;
        };
        let Some(pb) = inc.playbook.clone() else {
            return;
        };
        if inc.status != IncidentStatus::Open {
            return;
        }
        let cal = &self.loaded.config.calendar;
        let reached = pb
            .tiers
            .iter()
            .filter(|t| t.level > inc.tier && inc.timed_tiers.contains(&t.level))
            .filter_map(|t| {
                let d = t.open_for.as_ref()?;
                (d.after(inc.opened_at, cal) <= now).then_some((t.level, d.to_string()))
            })
            .max_by_key(|(level, _)| *level);
        if let Some((tier, open_for)) = reached {
            let old = inc.tier;
            let late = timers::late_note(
                pb.tiers
                    .iter()
                    .find(|t| t.level == tier)
                    .and_then(|t| t.open_for.as_ref())
                    .map_or(now, |d| d.after(inc.opened_at, cal)),
                now,
                &self.loaded,
                &inc.branch,
            );
            self.raise_tier(
                iid,
                tier,
                "branchguard",
                format!("tier {old} → {tier}: open for {open_for}{late}"),
                now,
                round,
            );
        }
    }
}
