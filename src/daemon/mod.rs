//! The running daemon: wiring only. It opens the store, publishes the first
//! configuration, starts the engine loop, the delivery worker and the signal
//! handler, and serves HTTP until shut down. Each part is handed only what it
//! needs.
//!
//! **Invariant:** nothing here decides anything about incidents; decisions are
//! the engine's, taken in the engine loop.

mod commands;
mod engine_loop;
mod listen;
mod lock;
mod priority;
mod tls;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::Loaded;
use crate::reload::Reloader;
use crate::store::{StoreError, StoreHealth};
pub use lock::LockError;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("link secret: {0}")]
    Secret(#[from] crate::notify::links::SecretError),
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the engine thread stopped unexpectedly")]
    EngineStopped,
    #[error("TLS: cannot load the certificate or key: {0}")]
    Tls(std::io::Error),
}

/// Runs the daemon on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    loaded: Loaded,
    config_path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    serve(listener, loaded, config_path, shutdown, |_| {}).await
}

/// [`run`], calling `ready` with the address once the store is open and every
/// part has started, just before requests are served: "listening" must never
/// be said by a daemon that then fails to open its database.
pub async fn serve(
    listener: TcpListener,
    loaded: Loaded,
    config_path: PathBuf,
    shutdown: CancellationToken,
    ready: impl FnOnce(std::net::SocketAddr) + Send,
) -> Result<(), DaemonError> {
    let data_dir = loaded.config.data_dir.clone();
    if let Some(w) = crate::private::open_to_others(&data_dir) {
        tracing::warn!("{w}");
    }
    // Before the store is opened: a second daemon must not touch it at all.
    let _lock = lock::acquire(&data_dir)?;
    let opened = crate::store::open(&loaded.config)?;
    if opened.created {
        tracing::warn!(
            "created a new, empty database in {}: if this daemon had history, its data directory is not where the configuration says",
            data_dir.display()
        );
    }
    let secret = crate::notify::links::Secret::load(&data_dir)?;
    let workdir = config_path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let reloader = Reloader::start(config_path, loaded);
    // Without tokens every request is allowed: say so now and every hour.
    {
        let reloader = Arc::clone(&reloader);
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = every.tick() => {
                        if reloader.current().config.auth.tokens.is_empty() {
                            tracing::warn!("no API tokens configured: loopback only, every request is allowed");
                        }
                    }
                }
            }
        });
    }
    let health = Arc::new(StoreHealth::default());
    let wake = Arc::new(crate::notify::Wake::default());
    let probe_dir = workdir.clone();
    let changes = Arc::new(tokio::sync::watch::channel(0u64).0);
    let head = Arc::new(crate::store::AuditHead::default());
    let probes = crate::sources::probes::ProbeBoard::default();
    let engine_loop::Started {
        handle: engine,
        join,
        commands,
    } = engine_loop::start(
        reloader.current(),
        opened.writer,
        workdir,
        Arc::clone(&wake),
        Arc::clone(&health),
        Arc::clone(&changes),
        Arc::clone(&head),
    )?;
    let anchor = tokio::spawn(crate::notify::anchor::run(
        reloader.subscribe(),
        Arc::clone(&head),
        opened.key.clone(),
        shutdown.clone(),
    ));

    // The engine subscribes to the configuration through its door.
    {
        let mut rx = reloader.subscribe();
        let engine = engine.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let loaded = Arc::clone(&rx.borrow_and_update());
                if engine.reload(loaded).is_err() {
                    break;
                }
            }
        });
    }

    let channels = Arc::new(crate::notify::channels::ChannelHealth::default());
    let deliverer = crate::notify::Deliverer::new(
        reloader.subscribe(),
        Arc::clone(&opened.reader),
        engine.clone(),
        secret.clone(),
        wake,
        Arc::clone(&channels),
    )?;
    let delivery = tokio::spawn(deliverer.run(shutdown.clone()));
    tokio::spawn(crate::sources::spool::run(
        reloader.subscribe(),
        engine.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(watch::run(Arc::clone(&reloader), shutdown.clone()));
    // The host's gauges are there from the first scrape.
    let dir = data_dir.clone();
    let sampler = tokio::task::spawn_blocking(move || crate::sources::host::first_sample(&dir))
        .await
        .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?;
    tokio::spawn(crate::sources::host::run(
        reloader.subscribe(),
        engine.clone(),
        sampler,
        shutdown.clone(),
    ));
    tokio::spawn(crate::sources::probes::run(
        reloader.subscribe(),
        engine.clone(),
        probe_dir,
        Arc::clone(&probes),
        shutdown.clone(),
    ));

    #[cfg(unix)]
    {
        let reloader = Arc::clone(&reloader);
        let token = shutdown.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = hup.recv() => {
                        let r = Arc::clone(&reloader);
                        let _ = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await;
                    }
                }
            }
        });
    }

    // The engine thread ends only when told to. If it ends otherwise (a bug made it
    // panic), no timer would fire again: stop the whole daemon so its supervisor
    // restarts it, and the restart resumes every timer from the store.
    let engine_ended = tokio::task::spawn_blocking(move || join.join());
    let crashed = Arc::new(AtomicBool::new(false));
    let watch = {
        let token = shutdown.clone();
        let crashed = Arc::clone(&crashed);
        tokio::spawn(async move {
            let _ = engine_ended.await;
            if !token.is_cancelled() {
                tracing::error!(
                    "the engine thread stopped unexpectedly; shutting down so the daemon can be restarted"
                );
                crashed.store(true, Ordering::SeqCst);
                token.cancel();
            }
        })
    };

    let reloader_for_tls = Arc::clone(&reloader);
    let limits = reloader.current().config.limits.clone();
    let rate = crate::http::RateLimit::new(&limits);
    let app = crate::http::router(crate::http::Parts {
        engine: engine.clone(),
        reader: opened.reader,
        reloader,
        links: secret,
        health,
        channels,
        rate,
        denials: crate::http::Denials::default(),
        started_at: clock::now(),
        changes: changes.subscribe(),
        probes,
        head,
        shutdown: shutdown.clone(),
        streams: Default::default(),
    });
    let addr = listener.local_addr()?;
    let current = reloader_for_tls.current();
    let bounds = listen::Bounds {
        connections: current.config.limits.connections,
        header_timeout: current.config.limits.header_timeout,
    };
    let tls = match current.config.tls.clone() {
        None => None,
        Some(t) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key)
                .await
                .map_err(DaemonError::Tls)?;
            tokio::spawn(tls::follow_files(
                rustls.clone(),
                Arc::clone(&reloader_for_tls),
                shutdown.clone(),
            ));
            Some(rustls)
        }
    };
    tracing::info!(
        "listening on {addr}{}",
        if tls.is_some() { " (TLS)" } else { "" }
    );
    ready(addr);
    listen::serve(listener, app, tls, bounds, shutdown.clone()).await;
    shutdown.cancel();
    let _ = delivery.await;
    engine.shutdown();
    let _ = anchor.await;
    commands.kill_all();
    let _ = watch.await;
    if crashed.load(Ordering::SeqCst) {
        return Err(DaemonError::EngineStopped);
    }
    Ok(())
}
