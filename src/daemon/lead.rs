//! The lease thread of an active/standby node: campaigns every third of the
//! lease while a standby, renews as the leader, and says when this node
//! won and when it lost. It runs on its own thread so that a busy runtime
//! never delays a renewal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ha::Ha;
use crate::store::{Campaign, Lease};

/// What the daemon hears from the lease thread.
pub struct Leadership {
    /// Set to the epoch once this node leads.
    pub won: tokio::sync::watch::Receiver<Option<i64>>,
    /// Cancelled when this node led and no longer does.
    pub lost: CancellationToken,
    stop: std::sync::mpsc::Sender<()>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Leadership {
    /// Stops campaigning; a leader gives its lease up so a standby takes
    /// over at once rather than after the lease runs out.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

pub fn start(mut lease: Lease, ha: Arc<Ha>, public_url: String) -> std::io::Result<Leadership> {
    let (won_tx, won) = tokio::sync::watch::channel(None);
    let lost = CancellationToken::new();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let lost_tx = lost.clone();
    let every = ha.lease() / 3;
    let join = std::thread::Builder::new()
        .name("lease".into())
        .spawn(move || {
            let mut leading: Option<i64> = None;
            loop {
                let sent = crate::clock::instant();
                match leading {
                    Some(epoch) => match lease.renew(epoch) {
                        Ok(true) => ha.led(epoch, sent, &public_url),
                        Ok(false) => {
                            tracing::error!(
                                "{}: the lease of epoch {epoch} was taken over: stepping down",
                                ha.node()
                            );
                            ha.follow(None);
                            lost_tx.cancel();
                            break;
                        }
                        Err(e) if ha.is_leader() => {
                            tracing::warn!(
                                "{}: cannot renew the lease (will retry): {e}",
                                ha.node()
                            );
                        }
                        Err(e) => {
                            tracing::error!(
                                "{}: the lease ran out without a renewal ({e}): stepping down",
                                ha.node()
                            );
                            ha.follow(None);
                            lost_tx.cancel();
                            break;
                        }
                    },
                    None => match lease.campaign() {
                        Ok(Campaign::Won(epoch)) => {
                            ha.led(epoch, sent, &public_url);
                            tracing::info!("{}: leader of epoch {epoch}", ha.node());
                            leading = Some(epoch);
                            let _ = won_tx.send(Some(epoch));
                        }
                        Ok(Campaign::Held(l)) => ha.follow(l.map(|l| (l.node, l.url, l.epoch))),
                        Err(e) => tracing::warn!("{}: cannot reach the lease: {e}", ha.node()),
                    },
                }
                let v = ha.view();
                crate::metrics::ha_role(v.role == "leader", v.epoch);
                match stopped.recv_timeout(every) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => {
                        if let Some(epoch) = leading
                            && let Err(e) = lease.release(epoch)
                        {
                            tracing::warn!("{}: cannot give the lease up: {e}", ha.node());
                        }
                        break;
                    }
                }
            }
        })?;
    Ok(Leadership {
        won,
        lost,
        stop,
        join: Some(join),
    })
}

/// A standby's live feed follows the leader's commits: every second it
/// reads where the audit chain ends, and ticks the feed when that moved, so
/// a wall screen on the standby refreshes as one on the leader would.
pub async fn follow_commits(
    reader: Arc<dyn crate::store::Reader>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let r = Arc::clone(&reader);
        // A read that fails (the database restarting) is tried next second.
        let Ok(Ok(end)) = tokio::task::spawn_blocking(move || r.chain_end()).await else {
            continue;
        };
        if last.is_some_and(|l| l != end) {
            changes.send_modify(|n| *n += 1);
        }
        last = Some(end);
    }
}
