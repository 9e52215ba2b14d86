//! The HTTP layer: the JSON API under `/api/v1`, `/healthz`, `/metrics` and the
//! pages behind one-click links. Writes go through the engine's door and are
//! answered after they are committed; reads go to the store's reader.
//!
//! **Invariant:** handlers never change state themselves, and never name a
//! store backend.

mod auth;
mod board;
mod dashboard;
mod drills;
mod error;
mod events;
mod incidents;
mod links;
mod pages;
mod silences;
mod status;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};

use crate::config::Loaded;
use crate::engine::EngineHandle;
use crate::notify::links::Secret;
use crate::reload::Reloader;
use crate::store::{Reader, StoreError, StoreHealth};
pub use auth::{Principal, RateLimit};
pub use error::ApiError;
pub use views::incident_json;

/// What the HTTP layer needs, and nothing more.
pub struct Parts {
    pub engine: EngineHandle,
    pub reader: Arc<dyn Reader>,
    /// The configuration in force, and the trigger of `POST /api/v1/reload`.
    pub reloader: Arc<Reloader>,
    /// Verifies one-click links.
    pub links: Secret,
    pub health: Arc<StoreHealth>,
    /// Requests per second per client.
    pub rate: auth::RateLimit,
    /// Which notification channels are failing.
    pub channels: Arc<crate::notify::channels::ChannelHealth>,
    pub started_at: DateTime<Utc>,
    /// Ticks after every committed round of the engine (the live feed).
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// Probe states, for the dashboard.
    pub probes: crate::sources::probes::ProbeBoard,
    /// Ends the live feeds, so a graceful shutdown does not wait on them.
    pub shutdown: tokio_util::sync::CancellationToken,
}

type AppState = Arc<Parts>;

impl Parts {
    fn loaded(&self) -> Arc<Loaded> {
        self.reloader.current()
    }
}

pub fn router(parts: Parts) -> Router {
    let limits = parts.loaded().config.limits.clone();
    let state = Arc::new(parts);
    Router::new()
        .route("/", get(dashboard::shell))
        .route("/ui/{file}", get(dashboard::asset))
        .route("/api/v1/dashboard", get(dashboard::data))
        .route("/api/v1/stream", get(dashboard::stream))
        .route("/healthz", get(status::healthz))
        .route("/ack/{token}", get(links::show).post(links::perform))
        .route("/incidents/{id}", get(pages::incident))
        .route("/metrics", get(status::metrics))
        .route("/api/v1/status", get(status::status))
        .route("/api/v1/reload", post(status::reload))
        .route(
            "/api/v1/events",
            post(events::post_events).get(events::list_events),
        )
        .route("/api/v1/alertmanager", post(events::post_alertmanager))
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(silences::expire),
        )
        .route("/api/v1/drills", get(drills::list))
        .route("/api/v1/drills/{id}/run", post(drills::run))
        .route("/api/v1/drill-runs", get(drills::runs))
        .route("/api/v1/drill-runs/{run}", get(drills::one))
        .route("/api/v1/drill-runs/{run}/abort", post(drills::abort))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::get_one))
        .route(
            "/api/v1/incidents/{id}/steps/{step}/{verb}",
            post(incidents::step_action),
        )
        .route(
            "/api/v1/incidents/{id}/{action}",
            post(incidents::incident_action),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::check,
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint", None) })
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(state)
}

/// Runs a read on the store off the async threads.
async fn read<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&dyn Reader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = Arc::clone(&s.reader);
    tokio::task::spawn_blocking(move || f(reader.as_ref()).map_err(ApiError::from))
        .await
        .map_err(ApiError::internal)?
}
