//! Publishing the audit chain's head (its row count and last hash) outside
//! the database, so that removing the newest rows shows: to a signed file
//! beside the database (`audit.head`, read by `audit verify`) within a second
//! of a change, and at least every `audit.anchor_every` (10 minutes at most)
//! to the log and to the `audit_anchor` webhook channel when one is
//! configured. `/api/v1/status` shows it as well.
//!
//! **Invariant:** the head is published from what was committed, never
//! ahead of it: it is set by the engine loop after each commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::Loaded;
use crate::store::audit::write_head;
use crate::store::{AuditHead, AuditKey, Head};

/// The webhook channel that receives the head, when configured.
pub const CHANNEL: &str = "audit_anchor";

/// Runs until `stop`.
pub async fn run(
    config: watch::Receiver<Arc<Loaded>>,
    head: Arc<AuditHead>,
    key: AuditKey,
    stop: CancellationToken,
) {
    let http = reqwest::Client::new();
    let mut filed: Option<Head> = None;
    let mut announced: Option<Head> = None;
    let mut last_announce = clock::Stopwatch::start();
    let mut first = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let loaded = Arc::clone(&config.borrow());
        let cfg = &loaded.config;
        let Some(now) = head.get() else { continue };
        if filed.as_ref() != Some(&now) {
            let dir = cfg.data_dir.clone();
            let (k, h) = (key.clone(), now.clone());
            match tokio::task::spawn_blocking(move || write_head(&dir, &k, &h)).await {
                Ok(Ok(())) => filed = Some(now.clone()),
                Ok(Err(e)) => tracing::error!("audit: cannot write the chain head file: {e}"),
                Err(e) => tracing::error!("audit: cannot write the chain head file: {e}"),
            }
        }
        let due = first || last_announce.seconds() >= cfg.audit.anchor_every.as_secs_f64();
        if !due {
            continue;
        }
        first = false;
        last_announce = clock::Stopwatch::start();
        tracing::info!("audit chain head: {} rows, hash {}", now.rows, now.hash);
        if announced.as_ref() == Some(&now) {
            continue;
        }
        if let Some(hook) = cfg.webhooks.get(CHANNEL) {
            let body = serde_json::json!({
                "schema": "branchguard.audit-head.v1",
                "rows": now.rows,
                "hash": now.hash,
                "at": clock::now(),
            });
            let mut req = http
                .post(&hook.url)
                .timeout(hook.timeout)
                .header("Idempotency-Key", format!("branchguard-audit-{}", now.rows))
                .json(&body);
            for (k, v) in &hook.headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => announced = Some(now.clone()),
                Ok(r) => tracing::warn!(
                    "audit: the {CHANNEL} channel answered {}; the head is sent again next time",
                    r.status()
                ),
                // Without the address: its path or query may be the secret.
                Err(e) => tracing::warn!(
                    "audit: cannot send the head to the {CHANNEL} channel ({}); sent again next time",
                    crate::diag::with_causes(&e.without_url())
                ),
            }
        } else {
            announced = Some(now.clone());
        }
    }
    // A clean stop files the final head.
    if let Some(now) = head.get() {
        let loaded = Arc::clone(&config.borrow());
        if let Err(e) = write_head(&loaded.config.data_dir, &key, &now) {
            tracing::error!("audit: cannot write the chain head file: {e}");
        }
    }
}
