//! Who is asking, and may they: bearer tokens, a message's signed incident
//! grant, one permission table for every endpoint, cross-site refusal, and
//! the rate limits of `limits.rs`.
//!
//! **Invariant:** every route the router serves is in [`RULES`] (a test
//! reads the router's own list); a route missing from it is refused, never
//! allowed by default. Branch scope is the principal's [`Scope`], applied by
//! the store query (lists) or on the one incident a handler touches.
//!
//! **Invariant:** a token is never stored or logged: only its SHA-256 is kept,
//! compared in constant time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limits::Verdict;
use super::{ApiError, AppState};
use crate::config::{Config, TokenConfig, TokenRole};
use crate::scope::Scope;
use crate::target::Target;

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: the signed link is the credential.
    Open,
    /// A page for people: a token that may read, or a message's signed
    /// grant for that one incident.
    Page,
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
    ("GET", "/wall", Need::Open),
    ("GET", "/ui/{file}", Need::Open),
    ("GET", "/api/v1/dashboard", Need::Read),
    ("GET", "/api/v1/stream", Need::Read),
    ("GET", "/healthz", Need::Healthz),
    ("GET", "/metrics", Need::Metrics),
    ("GET", "/ack/{token}", Need::Open),
    ("POST", "/ack/{token}", Need::Open),
    ("GET", "/incidents/{id}", Need::Page),
    ("GET", "/api/v1/status", Need::Read),
    ("GET", "/api/v1/oncall", Need::Read),
    ("GET", "/api/v1/reports/response", Need::Read),
    ("GET", "/api/v1/incidents/{id}/report", Need::Read),
    // Read-only: what a silence would match, before it is made.
    ("POST", "/api/v1/silences/preview", Need::Read),
    ("GET", "/api/v1/rosters/{file}", Need::Read),
    ("GET", "/api/v1/people/{id}", Need::Read),
    // The signed key in the link is the credential (a phone's calendar app).
    ("GET", "/api/v1/people/{id}/shifts.ics", Need::Open),
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
    ("POST", "/api/v1/incidents/{id}/review", Need::Command),
    (
        "POST",
        "/api/v1/incidents/{id}/review/actions/{n}/done",
        Need::Answer,
    ),
    ("GET", "/api/v1/reviews/overdue", Need::Read),
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
        TokenRole::BranchHead => {
            matches!(need, Page | Read | Answer | Command | DrillRead | DrillRun)
        }
        TokenRole::Staff => matches!(need, Page | Read | Answer),
        TokenRole::Ingest => matches!(need, Ingest),
        TokenRole::Viewer => matches!(need, Page | Read | DrillRead),
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
        scope: Scope,
        person: Option<String>,
    },
    /// A message's signed, read-only grant for one incident's page.
    Grant { incident: i64 },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Local => "local",
            Principal::Token { name, .. } => name,
            Principal::Grant { .. } => "link",
        }
    }

    /// How a history line records the way it came: the token's name,
    /// `local` without tokens, `link` for a message's link.
    pub fn via(&self) -> String {
        match self {
            Principal::Local => crate::engine::VIA_LOCAL.to_string(),
            Principal::Token { name, .. } => name.clone(),
            Principal::Grant { .. } => crate::engine::VIA_LINK.to_string(),
        }
    }

    /// The branches it may see and act on.
    pub fn scope(&self) -> Scope {
        match self {
            Principal::Local => Scope::all(),
            Principal::Token { scope, .. } => scope.clone(),
            // A grant reads its one incident, whatever its branch, and nothing else.
            Principal::Grant { .. } => Scope::branches(Vec::<String>::new()),
        }
    }

    pub fn sees(&self, branch: &str) -> bool {
        self.scope().sees(branch)
    }

    pub fn role(&self) -> Option<TokenRole> {
        match self {
            Principal::Token { role, .. } => Some(*role),
            _ => None,
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

    /// May it do what the `ops` role may (a silence of every branch, with
    /// `force`)? A token by its role; without tokens, the person named.
    pub fn is_ops(&self, cfg: &Config, person: &str) -> bool {
        match self {
            Principal::Token { role, .. } => matches!(role, TokenRole::Ops | TokenRole::Admin),
            Principal::Local => {
                crate::scope::Scope::of_person(cfg, person).is_some_and(|s| s.is_all())
            }
            Principal::Grant { .. } => false,
        }
    }

    /// The person an action is recorded as: `by` must be a known person. A
    /// token bound to a person acts only as that person (and a staff token
    /// only on steps assigned to them); any other token, or a request without
    /// tokens, may record any person of `branch`, or of the operations
    /// centre (role `ops`): ops desks take calls.
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
            Principal::Token { .. } | Principal::Local => {
                let Some(by) = body_by.filter(|b| !b.trim().is_empty()) else {
                    return Err(ApiError::bad(
                        "name who is acting: `by` must be a person id from the configuration (the history records a person, and the token or `local` it came through)",
                        "by",
                    ));
                };
                if !cfg.people.contains_key(&by) {
                    return Err(ApiError::bad(
                        format!("unknown person `{}`", crate::diag::clip_quotes(&by)),
                        "by",
                    ));
                }
                let sees = crate::scope::Scope::of_person(cfg, &by).is_some_and(|s| s.sees(branch));
                if !sees {
                    return Err(forbidden(format!(
                        "`{by}` does not belong to branch {branch} (and does not have the role `ops`)"
                    )));
                }
                Ok(by)
            }
            Principal::Grant { .. } => {
                Err(forbidden("a link to read an incident cannot act".into()))
            }
        }
    }

    /// A person named outside any incident (a silence's author, who stops a
    /// drill): the token's own person, else a known person id.
    pub fn author(
        &self,
        cfg: &Config,
        given: Option<String>,
        field: &str,
    ) -> Result<String, ApiError> {
        if let Some(p) = self.person() {
            if given.as_deref().is_some_and(|g| g != p) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("this token acts as `{p}`; it cannot act as someone else"),
                    Some(field.into()),
                ));
            }
            return Ok(p.to_string());
        }
        let Some(by) = given.filter(|g| !g.trim().is_empty()) else {
            return Err(ApiError::bad(
                format!("name who is acting: `{field}` must be a person id from the configuration"),
                field,
            ));
        };
        let Some(theirs) = Scope::of_person(cfg, &by) else {
            return Err(ApiError::bad(
                format!("unknown person `{}`", crate::diag::clip_quotes(&by)),
                field,
            ));
        };
        // A branch's token names its own people or the operations centre,
        // as on an incident: not someone of another branch.
        if matches!(self, Principal::Token { .. }) && !self.scope().meets(&theirs) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "`{by}` belongs to none of this token's branches (and does not have the role `ops`)"
                ),
                Some(field.into()),
            ));
        }
        Ok(by)
    }

    /// What it may act on where a person, not just a token, is in play:
    /// a token's scope; without tokens, the named person's branches.
    pub fn scope_as(&self, cfg: &Config, person: &str) -> Scope {
        match self {
            Principal::Local => Scope::of_person(cfg, person).unwrap_or_default(),
            other => other.scope(),
        }
    }
}

/// Whether `person` is among the people a step's assignee names.
fn assigned(cfg: &Config, assignee: &str, branch: &str, person: &str) -> bool {
    Target::parse(assignee)
        .map(|t| cfg.people_for(&t, branch).iter().any(|p| p.id == person))
        .unwrap_or(false)
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

/// The client's address, for handlers that refuse (a scoped 404 counts as
/// a refusal of that client).
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

/// Refuses a request: counted, summarised in the audit log at most once a
/// minute per client, and answered 429 once the client's refusals run out.
pub fn refuse(
    s: &AppState,
    ip: IpAddr,
    reason: &'static str,
    detail: &str,
    answer: ApiError,
) -> Response {
    let limits = &s.loaded().config.limits;
    let (verdict, line) = s.denials.record(ip, reason, detail, limits);
    if let Some(line) = line {
        s.engine.auth_denied(line);
    }
    match verdict {
        Verdict::Refuse => answer.into_response(),
        Verdict::Limited => too_many(&format!(
            "too many refused requests from {ip}: at most {} per second (bursts of {})",
            limits.denied_per_second, limits.denied_burst
        )),
    }
}

/// A handler's refusal (something outside the principal's scope, answered
/// 404 so its existence is not told either; acting as someone it may not):
/// counted like every refusal, 429 once the client's refusals run out.
pub fn counted(
    s: &AppState,
    client: Client,
    reason: &'static str,
    detail: &str,
    answer: ApiError,
) -> ApiError {
    let limits = &s.loaded().config.limits;
    let (verdict, line) = s.denials.record(client.0, reason, detail, limits);
    if let Some(line) = line {
        s.engine.auth_denied(line);
    }
    match verdict {
        Verdict::Refuse => answer,
        Verdict::Limited => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many refused requests",
            None,
        )
        .retry_after(1),
    }
}

fn too_many(why: &str) -> Response {
    crate::metrics::request_denied("rate_limited");
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// A 403 among a handler's errors is a refusal of this client: counted.
pub fn count_forbidden(s: &AppState, client: Client, who: &Principal, e: ApiError) -> ApiError {
    if e.status == StatusCode::FORBIDDEN {
        let detail = format!("{}: {}", who.name(), e.error);
        counted(s, client, "forbidden", &detail, e)
    } else {
        e
    }
}

/// The middleware every matched route runs through.
pub async fn check(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    matched: MatchedPath,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let method = req.method().clone();
    let path = matched.as_str().to_string();
    let loaded = s.loaded();
    let cfg = &loaded.config;
    // Before anything is decided: a client out of refusals gets nothing more,
    // unless it shows a valid token, or asks /healthz. Behind a proxy every
    // client has the proxy's address: one script with a revoked token must
    // not turn away the alarm gateway, the staff, or the proxy's own health
    // checks. (A token is at least 16 characters: the refusals are no
    // guard against guessing one, only against the cost of the guesses.)
    if s.denials.exhausted(ip, &cfg.limits)
        && need_of(&method, &path) != Some(Need::Healthz)
        && token_found(cfg, req.headers()).is_none()
    {
        return too_many(&format!(
            "too many refused requests from {ip}: try again in a second"
        ));
    }
    let what = format!("{method} {path}");
    // A known path asked with another method is the client's slip, as the
    // API promises: 405 naming the methods it takes, not "no access rule".
    let allowed: Vec<&str> = RULES
        .iter()
        .filter(|(_, p, _)| *p == path)
        .map(|(m, _, _)| *m)
        .collect();
    if need_of(&method, &path).is_none() && !allowed.is_empty() {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, allowed.join(", "))],
        )
            .into_response();
    }
    let Some(need) = need_of(&method, &path) else {
        return refuse(
            &s,
            ip,
            "forbidden",
            &format!("{what}: no access rule"),
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this endpoint has no access rule",
                None,
            ),
        );
    };
    // State changes from a browser on another site are refused (CSRF), and
    // the JSON API takes JSON only, so a plain HTML form cannot post to it.
    if method != Method::GET {
        if cross_site(req.headers()) {
            return refuse(
                &s,
                ip,
                "cross_site",
                &format!("{what}: cross-site"),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross-site requests are refused",
                    None,
                ),
            );
        }
        let headers = req.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let json = content_type.is_some_and(|c| c.starts_with("application/json"));
        // A POST with no body at all (`curl -X POST $BG/api/v1/reload`)
        // has nothing to be JSON; any body must say it is (a form cannot).
        let empty = content_type.is_none()
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|n| n.trim() == "0");
        if method == Method::POST && path.starts_with("/api/") && !json && !empty {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send JSON with `Content-Type: application/json` (curl: -H 'Content-Type: application/json')",
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
    let principal = match principal_of(&s, cfg, &req, need, open) {
        Ok(p) => p,
        Err((reason, why)) => {
            let status = if reason == "unauthorized" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::NOT_FOUND
            };
            return refuse(
                &s,
                ip,
                reason,
                &format!("{what}: {why}"),
                ApiError::new(status, why, None),
            );
        }
    };
    if !open
        && let Some(role) = principal.role()
        && !allows(role, need)
    {
        let why = format!("a token with the role `{}` may not do this", role.as_str());
        return refuse(
            &s,
            ip,
            "forbidden",
            &format!("{}: {what}: {why}", principal.name()),
            ApiError::new(StatusCode::FORBIDDEN, why, None),
        );
    }
    let allowed = match &principal {
        _ if need == Need::Healthz => true,
        Principal::Token { name, .. } => {
            let rate = cfg
                .auth
                .tokens
                .iter()
                .find(|t| &t.name == name)
                .map_or(cfg.limits.requests_per_second, |t| t.rate);
            s.rate.token(name, rate)
        }
        Principal::Local => s.rate.local(ip),
        Principal::Grant { .. } => s.rate.grant(ip, &cfg.limits),
    };
    if !allowed {
        return too_many(&format!(
            "too many requests from {}: slow down (its `rate`)",
            principal.name()
        ));
    }
    req.extensions_mut().insert(Client(ip));
    req.extensions_mut().insert(Arc::new(principal));
    next.run(req).await
}

/// Who the request is from: a token, a message's incident grant, or
/// (without tokens, or on an open route) `Local`. `Err`: the metric's
/// reason and why.
fn principal_of(
    s: &AppState,
    cfg: &Config,
    req: &Request,
    need: Need,
    open: bool,
) -> Result<Principal, (&'static str, String)> {
    if cfg.auth.tokens.is_empty() {
        return Ok(Principal::Local);
    }
    let presented = token_of(req.headers());
    if let Some(t) = token_found(cfg, req.headers()) {
        return Ok(Principal::Token {
            name: t.name.clone(),
            role: t.role,
            scope: if t.branches.is_empty() {
                Scope::all()
            } else {
                Scope::branches(t.branches.iter().cloned())
            },
            person: t.person.clone(),
        });
    }
    if open {
        return Ok(Principal::Local);
    }
    // The incident page opened from a message: its signed grant is the credential.
    if need == Need::Page
        && presented.is_none()
        && let Some(grant) = grant_of(req)
    {
        return match s.links.verify_grant(&grant, crate::clock::now()) {
            Ok(incident) => Ok(Principal::Grant { incident }),
            Err(e) => Err(("forbidden", format!("this link is not valid: {e}"))),
        };
    }
    Err((
        "unauthorized",
        if presented.is_some() {
            "this token is not valid".into()
        } else {
            "a bearer token is required (Authorization: Bearer …)".into()
        },
    ))
}

/// The configured token a request presents, if any matches (compared in
/// constant time, by SHA-256).
fn token_found<'a>(cfg: &'a Config, headers: &HeaderMap) -> Option<&'a TokenConfig> {
    let h = Sha256::digest(token_of(headers)?.as_bytes());
    cfg.auth
        .tokens
        .iter()
        .find(|t| bool::from(t.sha256.ct_eq(h.as_slice())))
}

/// The `grant` query parameter of a request.
fn grant_of(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "grant").then(|| v.to_string())
    })
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
