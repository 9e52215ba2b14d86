//! The running daemon: wiring only. It opens the store, publishes the first
//! configuration, starts the engine loop, the delivery worker and the signal
//! handler, and serves HTTP until shut down. Each part is handed only what it
//! needs.
//!
//! **Invariant:** nothing here decides anything about incidents; decisions are
//! the engine's, taken in the engine loop.

mod commands;
mod engine_loop;
mod lead;
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
    #[error(
        "this node lost the group's lease to another (active/standby): restart it to rejoin as a standby"
    )]
    LostLease,
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
    let ha = loaded
        .config
        .ha
        .as_ref()
        .map(|h| Arc::new(crate::ha::Ha::new(&h.node, h.lease)));
    // A standby reads (and its key is checked) now; it writes only once it leads.
    let (reader, key, writer) = if ha.is_some() {
        let (reader, key) = crate::store::open_standby(&loaded.config)?;
        (reader, key, None)
    } else {
        let opened = crate::store::open(&loaded.config)?;
        if opened.created {
            tracing::warn!(
                "created a new, empty database in {}: if this daemon had history, its data directory is not where the configuration says",
                data_dir.display()
            );
        }
        (opened.reader, opened.key, Some(opened.writer))
    };
    let secret = if ha.is_some() {
        crate::notify::links::Secret::load_given(&data_dir)?
    } else {
        crate::notify::links::Secret::load(&data_dir)?
    };
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
    let changes = Arc::new(tokio::sync::watch::channel(0u64).0);
    let head = Arc::new(crate::store::AuditHead::default());
    let probes = crate::sources::probes::ProbeBoard::default();
    let channel = crate::engine::EngineHandle::channel(reloader.current().config.engine.queue);
    let engine = channel.0.clone();
    let channels = Arc::new(crate::notify::channels::ChannelHealth::default());
    tokio::spawn(watch::run(Arc::clone(&reloader), shutdown.clone()));
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

    let reloader_for_tls = Arc::clone(&reloader);
    let limits = reloader.current().config.limits.clone();
    let rate = crate::http::RateLimit::new(&limits);
    let app = crate::http::router(crate::http::Parts {
        engine: engine.clone(),
        reader: Arc::clone(&reader),
        reloader: Arc::clone(&reloader),
        links: secret.clone(),
        health: Arc::clone(&health),
        channels: Arc::clone(&channels),
        rate,
        denials: crate::http::Denials::default(),
        started_at: clock::now(),
        changes: changes.subscribe(),
        probes: probes.clone(),
        head: Arc::clone(&head),
        shutdown: shutdown.clone(),
        streams: Default::default(),
        ha: ha.clone(),
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
    // A standby campaigns for the lease; the leader's part starts once it leads.
    let mut leadership = match (crate::store::lease(&current.config), &ha) {
        (Some(lease), Some(ha)) => Some(lead::start(
            lease,
            Arc::clone(ha),
            current.config.public_url.clone(),
        )?),
        _ => None,
    };
    let leading = Leading {
        writer,
        channel,
        reader: Arc::clone(&reader),
        key,
        secret,
        workdir,
        wake,
        health,
        changes,
        head,
        probes,
        channels,
        ha: ha.clone(),
    };
    // Alone, the daemon leads from the start: its engine is running (and
    // its metrics there) before it says it listens.
    let (mut leading, mut led) = match leadership {
        None => (
            None,
            Some(leading.start(&reloader, &data_dir, &shutdown).await?),
        ),
        Some(_) => (Some(leading), None),
    };
    tracing::info!(
        "listening on {addr}{}",
        if tls.is_some() { " (TLS)" } else { "" }
    );
    ready(addr);
    let serving = tokio::spawn(listen::serve(listener, app, tls, bounds, shutdown.clone()));
    if let (Some(l), Some(mut waiting)) = (leadership.as_mut(), leading.take()) {
        tracing::info!("standby: waiting for the lease");
        let following = shutdown.child_token();
        tokio::spawn(lead::follow_commits(
            Arc::clone(&waiting.reader),
            Arc::clone(&waiting.changes),
            following.clone(),
        ));
        let won = tokio::select! {
            _ = shutdown.cancelled() => None,
            w = l.won.wait_for(|e| e.is_some()) => w.ok().and_then(|e| *e),
        };
        // Leading, the engine ticks the feed at each of its own commits.
        following.cancel();
        let Some(epoch) = won else {
            let _ = serving.await;
            if let Some(l) = leadership {
                tokio::task::block_in_place(|| l.stop());
            }
            return Ok(());
        };
        let cfg = reloader.current();
        let opened =
            tokio::task::block_in_place(|| crate::store::open_as_leader(&cfg.config, epoch))?;
        waiting.writer = Some(opened.writer);
        led = Some(waiting.start(&reloader, &data_dir, &shutdown).await?);
    }
    let Some(led) = led else {
        return Err(DaemonError::EngineStopped);
    };
    let lost = leadership.as_ref().map(|l| l.lost.clone());
    let stepped_down = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = async { match &lost { Some(l) => l.cancelled().await, None => std::future::pending().await } } => true,
    };
    if stepped_down {
        tracing::error!(
            "this node lost the lease and stops: a supervisor restarts it as a standby (its engine state is no longer the group's)"
        );
        shutdown.cancel();
    }
    let _ = serving.await;
    shutdown.cancel();
    let _ = led.delivery.await;
    engine.shutdown();
    let _ = led.anchor.await;
    led.commands.kill_all();
    let _ = led.watch.await;
    if let Some(l) = leadership {
        tokio::task::block_in_place(|| l.stop());
    }
    if stepped_down {
        return Err(DaemonError::LostLease);
    }
    let crashed = led.crashed;
    if crashed.load(Ordering::SeqCst) {
        return Err(DaemonError::EngineStopped);
    }
    Ok(())
}

/// What only the leader runs: the engine on its writer, the delivery
/// worker, the spool, host health, probes and the chain head's publisher.
struct Leading {
    /// Opened at start alone, or once the lease is won.
    writer: Option<Box<dyn crate::store::Writer>>,
    channel: (
        crate::engine::EngineHandle,
        std::sync::mpsc::Receiver<crate::engine::handle::Input>,
        crate::engine::handle::Queue,
    ),
    reader: Arc<dyn crate::store::Reader>,
    key: crate::store::AuditKey,
    secret: crate::notify::links::Secret,
    workdir: PathBuf,
    wake: Arc<crate::notify::Wake>,
    health: Arc<StoreHealth>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    head: Arc<crate::store::AuditHead>,
    probes: crate::sources::probes::ProbeBoard,
    channels: Arc<crate::notify::channels::ChannelHealth>,
    ha: Option<Arc<crate::ha::Ha>>,
}

/// The leader's running parts, to be awaited at shutdown.
struct Led {
    delivery: tokio::task::JoinHandle<()>,
    anchor: tokio::task::JoinHandle<()>,
    commands: commands::CommandRunner,
    watch: tokio::task::JoinHandle<()>,
    crashed: Arc<AtomicBool>,
}

impl Leading {
    async fn start(
        self,
        reloader: &Arc<Reloader>,
        data_dir: &Path,
        shutdown: &CancellationToken,
    ) -> Result<Led, DaemonError> {
        let Some(writer) = self.writer else {
            return Err(DaemonError::EngineStopped);
        };
        let engine_loop::Started {
            handle: engine,
            join,
            commands,
        } = tokio::task::block_in_place(|| {
            engine_loop::start(
                reloader.current(),
                writer,
                self.workdir.clone(),
                Arc::clone(&self.wake),
                Arc::clone(&self.health),
                Arc::clone(&self.changes),
                Arc::clone(&self.head),
                self.channel,
            )
        })?;
        let anchor = tokio::spawn(crate::notify::anchor::run(
            reloader.subscribe(),
            Arc::clone(&self.head),
            self.key.clone(),
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
        let deliverer = crate::notify::Deliverer::new(
            reloader.subscribe(),
            self.reader,
            engine.clone(),
            self.secret,
            self.wake,
            self.channels,
            self.ha,
        )?;
        let delivery = tokio::spawn(deliverer.run(shutdown.clone()));
        tokio::spawn(crate::sources::spool::run(
            reloader.subscribe(),
            engine.clone(),
            shutdown.clone(),
        ));
        // The host's gauges are there from the first scrape.
        let dir = data_dir.to_path_buf();
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
            engine,
            self.workdir,
            self.probes,
            shutdown.clone(),
        ));
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
        Ok(Led {
            delivery,
            anchor,
            commands,
            watch,
            crashed,
        })
    }
}
