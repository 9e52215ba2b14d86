//! This daemon's role in an active/standby group, as its lease last said.
//! The lease thread (`daemon::lead`) writes it; the HTTP layer (standby
//! answers, `/healthz`, status) and the delivery worker read it.
//!
//! **Invariant:** a node counts itself leader only until `lease` after the
//! moment it *sent* its last successful renewal, on its own monotonic
//! clock: the database extended the lease from a later moment, so a node
//! paused past its lease (SIGSTOP, a VM frozen) knows it no longer leads
//! before it sends anything (`ha::tests`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug)]
pub struct Ha {
    node: String,
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// Leader until then (this node's clock).
    until: Option<Instant>,
    epoch: i64,
    leader: Option<(String, String)>,
}

/// What `/api/v1/status` shows under `ha`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct View {
    pub node: String,
    pub role: &'static str,
    pub leader: Option<String>,
    pub leader_url: Option<String>,
    pub epoch: i64,
}

impl Ha {
    pub fn new(node: &str, lease: Duration) -> Ha {
        Ha {
            node: node.to_string(),
            lease,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leads_at(crate::clock::instant())
    }

    fn leads_at(&self, now: Instant) -> bool {
        self.state().until.is_some_and(|u| now < u)
    }

    /// The lease at `epoch` was taken or renewed by a request sent at `sent`.
    pub fn led(&self, epoch: i64, sent: Instant, public_url: &str) {
        let mut s = self.state();
        s.until = Some(sent + self.lease);
        s.epoch = epoch;
        s.leader = Some((self.node.clone(), public_url.to_string()));
    }

    /// Another node leads (or nobody yet): this one is a standby.
    pub fn follow(&self, leader: Option<(String, String, i64)>) {
        let mut s = self.state();
        s.until = None;
        match leader {
            Some((node, url, epoch)) => {
                s.leader = Some((node, url));
                s.epoch = epoch;
            }
            None => s.leader = None,
        }
    }

    pub fn view(&self) -> View {
        let leads = self.is_leader();
        let s = self.state().clone();
        View {
            node: self.node.clone(),
            role: if leads { "leader" } else { "standby" },
            leader: s.leader.as_ref().map(|l| l.0.clone()),
            leader_url: s.leader.map(|l| l.1),
            epoch: s.epoch,
        }
    }

    /// What a standby says to a write: who leads, and where.
    pub fn refusal(&self) -> String {
        let v = self.view();
        match (v.leader, v.leader_url) {
            (Some(node), Some(url)) if node != self.node => {
                format!("standby: the leader is {node} ({url})")
            }
            _ => "standby: no leader yet (a takeover is under way)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_paused_past_its_lease_knows_it_no_longer_leads() {
        let ha = Ha::new("bg-a", Duration::from_secs(12));
        let sent = crate::clock::instant();
        ha.led(3, sent, "http://a");
        assert!(ha.leads_at(sent + Duration::from_secs(11)));
        // The database extended the lease from a moment after `sent`: this
        // node gives up first.
        assert!(!ha.leads_at(sent + Duration::from_secs(12)));
        assert_eq!(ha.view().epoch, 3);
        ha.follow(Some(("bg-b".into(), "http://b".into(), 4)));
        assert!(!ha.is_leader());
        assert_eq!(ha.refusal(), "standby: the leader is bg-b (http://b)");
        let v = ha.view();
        assert_eq!((v.role, v.epoch), ("standby", 4));
    }
}
