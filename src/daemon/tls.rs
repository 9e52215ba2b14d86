//! HTTPS: the certificate and key are re-read when their files change (a
//! renewed certificate is served without a restart), or when a reload names
//! other files.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

use crate::reload::Reloader;

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(1);

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Reloads the served certificate whenever its files (or their names) change.
pub async fn follow_files(rustls: RustlsConfig, reloader: Arc<Reloader>, stop: CancellationToken) {
    // The files as they were loaded: any later change is reloaded.
    let mut seen = reloader
        .current()
        .config
        .tls
        .clone()
        .map(|t| (t.clone(), stamp(&t.cert), stamp(&t.key)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let Some(t) = reloader.current().config.tls.clone() else {
            continue;
        };
        let now = (t.clone(), stamp(&t.cert), stamp(&t.key));
        let Some(previous) = &seen else {
            seen = Some(now);
            continue;
        };
        if *previous == now {
            continue;
        }
        match rustls.reload_from_pem_file(&t.cert, &t.key).await {
            Ok(()) => {
                tracing::info!("TLS: certificate reloaded from {}", t.cert.display());
                seen = Some(now);
            }
            // A half-written pair (cert renewed, key not yet) is tried again
            // at the next look: `seen` still holds the files before the change.
            Err(e) => {
                tracing::warn!(
                    "TLS: cannot reload the certificate yet, keeping the one in use: {e}"
                );
            }
        }
    }
}
