//! `{"error": "...", "field": "..."}` with a status code, and how every error
//! of the layers below becomes one.
//!
//! **Invariant:** a fault of ours (store, engine) is a 5xx; only the caller's
//! own mistakes are 4xx.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::engine::{ActionError, DrillError, HandleError};
use crate::sources::IntakeError;
use crate::store::StoreError;

/// A number in the path (`/incidents/{id}`): `what` names it in the error,
/// `field` is the field reported.
pub fn path_id(raw: &str, what: &str, field: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::bad(format!("invalid {what} `{raw}`"), field))
}

/// A JSON request body, with the path of the field that is wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(b);
    let t = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            e.into_inner().to_string(),
            (path != ".").then_some(path),
        )
    })?;
    // No text a person writes holds a NUL, and PostgreSQL's text cannot: a
    // note with one failed the round's commit, and everyone in it got 503.
    // (A raw NUL is not JSON at all; only the escape can carry one.)
    if b.windows(6).any(|w| w == b"\\u0000")
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(b)
        && let Some(at) = nul_at(&v, String::new())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::sources::NUL,
            Some(at),
        ));
    }
    Ok(t)
}

/// Where in `v` a string or key holds a NUL character, as a field path.
fn nul_at(v: &serde_json::Value, at: String) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, format!("{at}[{i}]"))),
        serde_json::Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "")))
            } else {
                nul_at(x, join(k))
            }
        }),
        _ => None,
    }
}

/// Like [`json_body`], but an empty body means every field left out.
/// A time in a query: RFC 3339 with its offset, 1970 to 9999; else a 400
/// naming `field` and saying what was `expected`.
pub fn time_param(v: &str, field: &str, expected: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.to_utc())
        .ok()
        .filter(|t| crate::event::writable(*t))
        .ok_or_else(|| {
            ApiError::bad(
                format!(
                    "invalid `{field}` `{}`: expected {expected}",
                    crate::diag::clip_quotes(v)
                ),
                field,
            )
        })
}

pub fn optional_json_body<T: serde::de::DeserializeOwned + Default>(
    b: &[u8],
) -> Result<T, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(b)
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
    /// Seconds to wait before trying again (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, field: Option<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad(error: impl Into<String>, field: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, Some(field.into()))
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error, None)
    }

    /// Our own fault: the caller may try again later.
    pub fn unavailable(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("branchguard cannot serve this now (not your request's fault): {error}"),
            None,
        )
        .retry_after(5)
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store: {e}");
        ApiError::unavailable(format!("the database: {e}"))
    }
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Action(a) => a.into(),
            HandleError::Busy { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None).retry_after(1)
            }
            HandleError::Drill(d) => {
                let status = match d {
                    DrillError::NoDrill(_) | DrillError::NoRun(_) => StatusCode::NOT_FOUND,
                    DrillError::NotAtBranch { .. } => StatusCode::BAD_REQUEST,
                    DrillError::AlreadyRunning(_) => StatusCode::CONFLICT,
                    DrillError::NoBranchInScope(_) => StatusCode::FORBIDDEN,
                };
                let field =
                    matches!(d, DrillError::NotAtBranch { .. }).then(|| "branch".to_string());
                ApiError::new(status, d.to_string(), field)
            }
            other => ApiError::unavailable(other),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let status = match e {
            ActionError::NoIncident(_) | ActionError::NoStep(..) => StatusCode::NOT_FOUND,
            ActionError::Conflict(_) => StatusCode::CONFLICT,
            ActionError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string(), None)
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid { message, field } => {
                ApiError::new(StatusCode::BAD_REQUEST, message, field)
            }
            IntakeError::Forbidden { message, field } => {
                ApiError::new(StatusCode::FORBIDDEN, message, field)
            }
            IntakeError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m, None),
            IntakeError::Engine(h) => h.into(),
        }
    }
}
