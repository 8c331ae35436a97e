//! [`ApiError`]: one HTTP request's error, always answered as
//! `{"error": "<code>", "message": ...}` with its status; the mapping of the
//! library's errors to statuses and codes.
//!
//! It must never be used outside `http/`: the shared modules report their
//! own errors, and this module maps them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::Denied;
use crate::state::Interrupted;

/// An error answered to one request.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) extra: Map<String, Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_input", message)
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated => ApiError::unauthorized(),
            Denied::Forbidden(message) => ApiError::forbidden(message),
        }
    }
}

impl From<Interrupted> for ApiError {
    fn from(e: Interrupted) -> Self {
        match e {
            Interrupted::Panicked => ApiError::internal("the request failed unexpectedly"),
            Interrupted::Cancelled => ApiError::internal("the request was cancelled"),
        }
    }
}

impl From<annal::Error> for ApiError {
    fn from(e: annal::Error) -> Self {
        use annal::Error as E;
        let message = e.to_string();
        match e {
            E::WrongExpectedVersion { expected, actual, .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_expected_version", message)
                    .with("expected", expected_json(&expected))
                    .with("actual", json!(actual))
            }
            E::ConditionFailed { position } => {
                ApiError::new(StatusCode::CONFLICT, "condition_failed", message).with("position", json!(position))
            }
            // Where the id is stored may be a stream the caller may not read:
            // the answer names the caller's own id and nothing else.
            E::IdempotencyConflict { id, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("event id {id} is already stored, not as part of this append; give the event a new id"),
            )
            .with("id", json!(id)),
            E::StreamNotFound(_) => ApiError::not_found("stream_not_found", message),
            E::StreamDeleted(_) => ApiError::new(StatusCode::GONE, "stream_deleted", message),
            E::InvalidInput(_) => ApiError::invalid(message),
            E::DiskFull { .. } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message),
            E::BudgetFull { .. } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "budget_full", message),
            E::Closed(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_closed", message),
            E::Poisoned { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_failed", message),
            E::ReadOnly { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_read_only", message),
            // Its request gave up (the request timeout): the answer is the timeout's.
            E::Cancelled => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message),
            E::Corruption { .. } | E::BadSystemEvent { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corruption", message)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", message),
        }
    }
}

/// `e` as answered to a caller who may not be shown where damage lies
/// ([`crate::auth::Principal::sees_damage`]): damage is answered as damage,
/// without its file and offset (`annal verify` finds it for the operator).
pub(crate) fn without_place(e: annal::Error) -> ApiError {
    if e.is_corruption() {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corruption",
            crate::auth::DAMAGE_ELSEWHERE,
        )
    } else {
        e.into()
    }
}

/// An expected version as JSON: a number for a revision, else its name.
fn expected_json(expected: &str) -> Value {
    expected.parse::<u64>().map_or_else(|_| json!(expected), |n| json!(n))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Classifies a JSON decoding error: malformed JSON, or JSON of the wrong shape.
pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request("invalid_json", e.to_string()),
        Category::Data => ApiError::bad_request("invalid_request", e.to_string()),
    }
}
