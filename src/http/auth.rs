//! Who is asking, and may they: bearer tokens, one permission table for every
//! endpoint, cross-site refusal, and a per-client rate limit.
//!
//! **Invariant:** every route is in [`RULES`]; a route missing from it is
//! refused, never allowed by default. Branch scoping is applied by the
//! handlers in the store query (lists) or on the one incident they touch.
//!
//! **Invariant:** a token is never stored or logged: only its SHA-256 is kept,
//! compared in constant time.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::{Config, TokenRole};
use crate::target::Target;

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: the signed link is the credential.
    Open,
    /// Open unless `auth.open_metrics: false`.
    Metrics,
    /// Open unless `auth.open_healthz: false`.
    Healthz,
    /// Post events.
    Ingest,
    /// Read incidents, events, status.
    Read,
    /// Acknowledge, mark done, confirm safe.
    Answer,
    /// Resolve or escalate an incident.
    Command,
    DrillRead,
    DrillRun,
    /// Create or end silences.
    Silence,
    /// Reload the configuration.
    Admin,
}

/// Every route and what it needs: the one place access is decided.
pub const RULES: &[(&str, &str, Need)] = &[
    ("GET", "/", Need::Open),
    ("GET", "/ui/{file}", Need::Open),
    ("GET", "/api/v1/dashboard", Need::Read),
    ("GET", "/api/v1/stream", Need::Read),
    ("GET", "/healthz", Need::Healthz),
    ("GET", "/metrics", Need::Metrics),
    ("GET", "/ack/{token}", Need::Open),
    ("POST", "/ack/{token}", Need::Open),
    ("GET", "/incidents/{id}", Need::Read),
    ("GET", "/api/v1/status", Need::Read),
    ("POST", "/api/v1/reload", Need::Admin),
    ("POST", "/api/v1/events", Need::Ingest),
    ("GET", "/api/v1/events", Need::Read),
    ("POST", "/api/v1/alertmanager", Need::Ingest),
    ("GET", "/api/v1/incidents", Need::Read),
    ("GET", "/api/v1/incidents/{id}", Need::Read),
    (
        "POST",
        "/api/v1/incidents/{id}/steps/{step}/{verb}",
        Need::Answer,
    ),
    ("POST", "/api/v1/incidents/{id}/{action}", Need::Command),
    ("GET", "/api/v1/silences", Need::Read),
    ("POST", "/api/v1/silences", Need::Silence),
    ("DELETE", "/api/v1/silences/{id}", Need::Silence),
    ("GET", "/api/v1/drills", Need::DrillRead),
    ("POST", "/api/v1/drills/{id}/run", Need::DrillRun),
    ("GET", "/api/v1/drill-runs", Need::DrillRead),
    ("GET", "/api/v1/drill-runs/{run}", Need::DrillRead),
    ("POST", "/api/v1/drill-runs/{run}/abort", Need::DrillRun),
];

/// What each role may do (branch scoping comes on top).
pub fn allows(role: TokenRole, need: Need) -> bool {
    use Need::*;
    match role {
        TokenRole::Admin => true,
        TokenRole::Ops => !matches!(need, Admin),
        TokenRole::BranchHead => matches!(need, Read | Answer | Command | DrillRead | DrillRun),
        TokenRole::Staff => matches!(need, Read | Answer),
        TokenRole::Ingest => matches!(need, Ingest),
        TokenRole::Viewer => matches!(need, Read | DrillRead),
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No tokens are configured: loopback only, and every action names a
    /// person of the incident's branch.
    Local,
    Token {
        name: String,
        role: TokenRole,
        /// Empty: every branch.
        branches: Vec<String>,
        person: Option<String>,
    },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Local => "local",
            Principal::Token { name, .. } => name,
        }
    }

    /// The branches it is limited to; `None`: all of them.
    pub fn branches(&self) -> Option<Vec<String>> {
        match self {
            Principal::Token { branches, .. } if !branches.is_empty() => Some(branches.clone()),
            _ => None,
        }
    }

    pub fn sees(&self, branch: &str) -> bool {
        self.branches()
            .is_none_or(|b| b.iter().any(|x| x == branch))
    }

    pub fn role(&self) -> Option<TokenRole> {
        match self {
            Principal::Local => None,
            Principal::Token { role, .. } => Some(*role),
        }
    }

    /// The person the token acts as.
    pub fn person(&self) -> Option<&str> {
        match self {
            Principal::Token {
                person: Some(p), ..
            } => Some(p),
            _ => None,
        }
    }

    /// Who an action is recorded as, and whether they may act on an
    /// incident of `branch` (a step assigned to `assignee`, if given).
    pub fn actor(
        &self,
        cfg: &Config,
        body_by: Option<String>,
        branch: &str,
        assignee: Option<&str>,
    ) -> Result<String, ApiError> {
        let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, why, Some("by".into()));
        match self {
            Principal::Token {
                person: Some(p),
                role,
                ..
            } => {
                if body_by.as_deref().is_some_and(|b| b != p) {
                    return Err(forbidden(format!(
                        "this token acts as `{p}`; it cannot act as `{}`",
                        body_by.unwrap_or_default()
                    )));
                }
                if *role == TokenRole::Staff
                    && let Some(a) = assignee
                    && !assigned(cfg, a, branch, p)
                {
                    return Err(forbidden(format!("`{p}` is not assigned this step ({a})")));
                }
                Ok(p.clone())
            }
            Principal::Token { name, .. } => Ok(body_by.unwrap_or_else(|| name.clone())),
            Principal::Local => {
                let Some(by) = body_by else {
                    return Err(ApiError::bad(
                        "name who is acting: `by` must be a person id (no API tokens are configured, so nobody acts anonymously)",
                        "by",
                    ));
                };
                let Some(p) = cfg.people.get(&by) else {
                    return Err(ApiError::bad(format!("unknown person `{by}`"), "by"));
                };
                if !p.branches.contains(branch) && !p.roles.contains("ops") {
                    return Err(forbidden(format!(
                        "`{by}` does not belong to branch {branch} (and does not have the role `ops`)"
                    )));
                }
                Ok(by)
            }
        }
    }
}

/// Whether `person` is among the people a step's assignee names.
fn assigned(cfg: &Config, assignee: &str, branch: &str, person: &str) -> bool {
    Target::parse(assignee)
        .map(|t| cfg.people_for(&t, branch).iter().any(|p| p.id == person))
        .unwrap_or(false)
}

/// The per-client request rate limiter.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    /// (requests per second, burst) it was built with.
    pub quota: (u32, u32),
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let ps = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let b = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(ps).allow_burst(b)),
            quota: (per_second, burst),
        }
    }
}

fn need_of(method: &Method, path: &str) -> Option<Need> {
    RULES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, n)| *n)
}

fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether a browser sent this from another site (CSRF).
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(o), Some(h)) => o.split_once("://").map(|x| x.1) != Some(h),
        (Some(_), None) => true,
        _ => false,
    }
}

fn deny(
    s: &AppState,
    who: &str,
    method: &Method,
    path: &str,
    status: StatusCode,
    why: String,
) -> Response {
    s.engine
        .auth_denied(format!("{who}: {method} {path}: {why}"));
    ApiError::new(status, why, None).into_response()
}

/// The middleware every matched route runs through.
pub async fn check(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    matched: MatchedPath,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = matched.as_str().to_string();
    let cfg = s.loaded().config.clone();
    let Some(need) = need_of(&method, &path) else {
        return deny(
            &s,
            "-",
            &method,
            &path,
            StatusCode::FORBIDDEN,
            "this endpoint has no access rule".into(),
        );
    };
    // State changes from a browser on another site are refused (CSRF), and
    // the JSON API takes JSON only, so a plain HTML form cannot post to it.
    if method != Method::GET {
        if cross_site(req.headers()) {
            return deny(
                &s,
                "-",
                &method,
                &path,
                StatusCode::FORBIDDEN,
                "cross-site requests are refused".into(),
            );
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if method == Method::POST && path.starts_with("/api/") && !json {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send JSON with `Content-Type: application/json`",
                None,
            )
            .into_response();
        }
    }
    let open = match need {
        Need::Open => true,
        Need::Metrics => cfg.auth.open_metrics,
        Need::Healthz => cfg.auth.open_healthz,
        _ => false,
    };
    let principal = if cfg.auth.tokens.is_empty() {
        Principal::Local
    } else {
        let presented = token_of(req.headers()).map(|t| Sha256::digest(t.as_bytes()));
        let found = presented.and_then(|h| {
            cfg.auth
                .tokens
                .iter()
                .find(|t| bool::from(t.sha256.ct_eq(h.as_slice())))
        });
        match (found, open) {
            (Some(t), _) => Principal::Token {
                name: t.name.clone(),
                role: t.role,
                branches: t.branches.clone(),
                person: t.person.clone(),
            },
            (None, true) => Principal::Local,
            (None, false) => {
                let why = if presented.is_some() {
                    "this token is not valid"
                } else {
                    "a bearer token is required (Authorization: Bearer …)"
                };
                return deny(
                    &s,
                    "-",
                    &method,
                    &path,
                    StatusCode::UNAUTHORIZED,
                    why.into(),
                );
            }
        }
    };
    if !open
        && let Some(role) = principal.role()
        && !allows(role, need)
    {
        let why = format!("a token with the role `{}` may not do this", role.as_str());
        return deny(
            &s,
            principal.name(),
            &method,
            &path,
            StatusCode::FORBIDDEN,
            why,
        );
    }
    // One bucket per token, or per address without tokens.
    let key = match &principal {
        Principal::Token { name, .. } => format!("token:{name}"),
        Principal::Local => format!("ip:{}", peer.ip()),
    };
    if need != Need::Healthz && s.rate.limiter.check_key(&key).is_err() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({
                "error": format!("too many requests from {}: at most {} per second (bursts of {})", principal.name(), s.rate.quota.0, s.rate.quota.1)
            })),
        )
            .into_response();
    }
    req.extensions_mut().insert(Arc::new(principal));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_has_a_rule_and_roles_are_as_documented() {
        assert!(allows(TokenRole::Admin, Need::Admin));
        assert!(!allows(TokenRole::Ops, Need::Admin));
        assert!(allows(TokenRole::Staff, Need::Answer));
        assert!(!allows(TokenRole::Staff, Need::Command));
        assert!(!allows(TokenRole::Ingest, Need::Read));
        assert!(!allows(TokenRole::Viewer, Need::Answer));
        assert!(allows(TokenRole::Ops, Need::Silence));
        assert!(!allows(TokenRole::BranchHead, Need::Silence));
        assert!(need_of(&Method::GET, "/nowhere").is_none());
    }

    #[test]
    fn cross_site_is_told_by_fetch_metadata_or_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9700".parse().unwrap());
        assert!(!cross_site(&h), "a client without browser headers");
        h.insert(header::ORIGIN, "http://127.0.0.1:9700".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_site(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&h));
    }
}
