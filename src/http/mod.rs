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
mod limits;
mod links;
mod oncall;
mod pages;
mod reports;
mod reviews;
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
pub use auth::Principal;
pub use error::ApiError;
pub use limits::{Denials, RateLimit};
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
    pub rate: RateLimit,
    /// Refused requests per client address.
    pub denials: Denials,
    /// Which notification channels are failing.
    pub channels: Arc<crate::notify::channels::ChannelHealth>,
    pub started_at: DateTime<Utc>,
    /// Ticks after every committed round of the engine (the live feed).
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// Probe states, for the dashboard.
    pub probes: crate::sources::probes::ProbeBoard,
    /// The audit chain's head, published in `/api/v1/status`.
    pub head: Arc<crate::store::AuditHead>,
    /// Ends the live feeds, so a graceful shutdown does not wait on them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Live feeds open now: at most half of `limits.connections`, so feeds
    /// never hold every connection.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Active/standby: this node's role (a standby answers writes 503).
    pub ha: Option<Arc<crate::ha::Ha>>,
}

type AppState = Arc<Parts>;

impl Parts {
    fn loaded(&self) -> Arc<Loaded> {
        self.reloader.current()
    }
}

/// The router as it is built, and every (method, path) it was given: the
/// permission table is checked against this list, not against a copy of it.
struct Routes {
    router: Router<AppState>,
    added: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            added: Vec::new(),
        }
    }

    fn route(
        mut self,
        path: &'static str,
        methods: &[&'static str],
        handler: axum::routing::MethodRouter<AppState>,
    ) -> Routes {
        self.added.extend(methods.iter().map(|m| (*m, path)));
        self.router = self.router.route(path, handler);
        self
    }
}

/// Every route of the daemon.
fn routes() -> Routes {
    Routes::new()
        .route("/", &["GET"], get(dashboard::shell))
        .route("/wall", &["GET"], get(dashboard::wall))
        .route("/ui/{file}", &["GET"], get(dashboard::asset))
        .route("/api/v1/dashboard", &["GET"], get(dashboard::data))
        .route("/api/v1/stream", &["GET"], get(dashboard::stream))
        .route("/healthz", &["GET"], get(status::healthz))
        .route(
            "/ack/{token}",
            &["GET", "POST"],
            get(links::show).post(links::perform),
        )
        .route("/incidents/{id}", &["GET"], get(pages::incident))
        .route("/metrics", &["GET"], get(status::metrics))
        .route("/api/v1/status", &["GET"], get(status::status))
        .route("/api/v1/oncall", &["GET"], get(oncall::oncall))
        .route("/api/v1/reports/response", &["GET"], get(reports::response))
        .route(
            "/api/v1/incidents/{id}/report",
            &["GET"],
            get(incidents::report),
        )
        .route(
            "/api/v1/rosters/{file}",
            &["GET"],
            get(oncall::roster_calendar),
        )
        .route("/api/v1/people/{id}", &["GET"], get(oncall::person))
        .route(
            "/api/v1/people/{id}/shifts.ics",
            &["GET"],
            get(oncall::shifts),
        )
        .route("/api/v1/reload", &["POST"], post(status::reload))
        .route(
            "/api/v1/events",
            &["POST", "GET"],
            post(events::post_events).get(events::list_events),
        )
        .route(
            "/api/v1/alertmanager",
            &["POST"],
            post(events::post_alertmanager),
        )
        .route(
            "/api/v1/silences",
            &["GET", "POST"],
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/preview",
            &["POST"],
            post(silences::preview),
        )
        .route(
            "/api/v1/silences/{id}",
            &["DELETE"],
            axum::routing::delete(silences::expire),
        )
        .route("/api/v1/drills", &["GET"], get(drills::list))
        .route("/api/v1/drills/{id}/run", &["POST"], post(drills::run))
        .route("/api/v1/drill-runs", &["GET"], get(drills::runs))
        .route("/api/v1/drill-runs/{run}", &["GET"], get(drills::one))
        .route(
            "/api/v1/drill-runs/{run}/abort",
            &["POST"],
            post(drills::abort),
        )
        .route("/api/v1/incidents", &["GET"], get(incidents::list))
        .route("/api/v1/incidents/{id}", &["GET"], get(incidents::get_one))
        .route(
            "/api/v1/incidents/{id}/steps/{step}/{verb}",
            &["POST"],
            post(incidents::step_action),
        )
        .route(
            "/api/v1/incidents/{id}/{action}",
            &["POST"],
            post(incidents::incident_action),
        )
        .route(
            "/api/v1/incidents/{id}/review",
            &["POST"],
            post(reviews::record),
        )
        .route(
            "/api/v1/incidents/{id}/review/actions/{n}/done",
            &["POST"],
            post(reviews::done),
        )
        .route("/api/v1/reviews/overdue", &["GET"], get(reviews::overdue))
}

pub fn router(parts: Parts) -> Router {
    let limits = parts.loaded().config.limits.clone();
    let state = Arc::new(parts);
    // Refusals are summarised in the audit log once a minute per client.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let s = Arc::clone(&state);
        rt.spawn(async move {
            let mut every = tokio::time::interval(limits::SUMMARY_EVERY);
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = every.tick() => {
                        for line in s.denials.due(&s.loaded().config.limits) {
                            s.engine.auth_denied(line);
                        }
                        s.rate.prune();
                    }
                }
            }
        });
    }
    routes()
        .router
        // Inside the token check: a standby names its leader only to a
        // client that may write at all.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            status::standby,
        ))
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

#[cfg(test)]
mod tests {
    use super::auth::RULES;

    /// Every route the router serves has a rule, and every rule a route:
    /// the list is the one the router was built from.
    #[test]
    fn every_route_of_the_router_has_an_access_rule_and_every_rule_a_route() {
        let added = super::routes().added;
        assert!(added.len() > 20, "{added:?}");
        for (m, p) in &added {
            assert!(
                RULES.iter().any(|(rm, rp, _)| rm == m && rp == p),
                "{m} {p} is routed but has no access rule in auth::RULES"
            );
        }
        for (m, p, _) in RULES {
            assert!(
                added.iter().any(|(am, ap)| am == m && ap == p),
                "{m} {p} has a rule but no route"
            );
        }
    }
}
