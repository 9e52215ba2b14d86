//! Accepting connections, with bounds a hostile client cannot get around:
//! at most `limits.connections` open at once (beyond that, new ones wait in
//! the kernel's backlog instead of taking file descriptors), and a
//! connection that has not sent complete request headers within
//! `limits.header_timeout` (a TLS handshake included) is closed, whether it
//! never sent a byte, sends one a minute, or idles between requests.
//!
//! **Invariant:** `/healthz` answers while thousands of idle connections are
//! held: they wait for a permit or are closed, never the accept loop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a graceful stop waits for requests under way.
const DRAIN: Duration = Duration::from_secs(10);

/// What the loop needs besides the router.
pub struct Bounds {
    pub connections: usize,
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`; with `tls`, every connection
/// is a TLS one (the configuration is read per connection, so a renewed
/// certificate applies to the next one).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    bounds: Bounds,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(bounds.connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut warned_full = false;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        if permits.available_permits() == 0 && !warned_full {
            warned_full = true;
            tracing::warn!(
                "{} connections are open (limits.connections): further ones wait in the kernel's backlog",
                bounds.connections
            );
        } else if permits.available_permits() > bounds.connections / 2 {
            warned_full = false;
        }
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to
                    // close rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let header_timeout = bounds.header_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg.get_inner());
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "stopping: some connections were still busy after {} and were cut",
            crate::show::span(DRAIN)
        );
    }
}
