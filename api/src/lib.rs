//! HTTP out: claim-ledger's API over axum. Every answer's shape (the JSON views, the
//! export lines, bundles, timelines) comes from the `formats` crate, which the CLI uses
//! too; this crate adds only what HTTP needs: routes, authentication, limits, metrics,
//! the OpenAPI document, and the status code of every error ([`ApiError`]).
//!
//! * [`Service`]: the HTTP API: identity checks, bindings, history, state, entries,
//!   export, proofs, head, health, readiness, metrics and the OpenAPI document. The binary
//!   builds one with [`Service::new`] over the shared ledger and a [`Freshness`] of its
//!   watchers, binds a listener and calls [`Service::serve`].
//! * `routes`: the route table and its handlers, one module per area (identity, history
//!   and state, export, proofs, health).
//! * [`openapi`]: the OpenAPI 3.1 description of every route.
//! * [`ui`]: the timeline page at `/ui/` (embedded assets).

mod auth;
mod conn;
mod denials;
mod extract;
mod freshness;
mod metrics;
pub mod openapi;
mod routes;
mod server;
mod service;
pub mod ui;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::Reason;

pub use conn::{MAX_HEADERS, MAX_HEAD_LEN, MAX_URI_LEN};
pub use denials::{MAX_PENDING_DENIALS, RECORDED_DENIALS};
pub use freshness::{FlushStats, Freshness, ReplicaReport, WatchCounters, WriterBacklog};
pub use service::{Auth, CheckpointSigning, Clock, ServeOptions, Service, TlsFiles};

/// Every error the HTTP API answers with (see [`ApiError::status`] and [`ApiError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The ledger failed to read.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The answer could not be written.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// The answer could not be serialized (a bug).
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
    /// The service cannot start as configured (token file, TLS certificate or key).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A client mistake: malformed JSON, unknown fields, invalid values, bad query
    /// parameters, an oversized body, an unknown route. Always a 4xx.
    #[error("{detail}")]
    Request {
        /// The HTTP status (4xx).
        status: StatusCode,
        /// A stable, machine-readable code (`malformed_json`, `invalid_request`, ...).
        code: &'static str,
        /// What is wrong, for people.
        detail: String,
    },
    /// No valid bearer token was presented.
    #[error("{0}")]
    Unauthorized(String),
    /// The pod uid has no current binding; `reason` is the first failing check.
    #[error("{detail}")]
    NotBound {
        /// Why it is not bound (`BINDING_RELEASED`, `UNKNOWN_POD`, ...).
        reason: Reason,
        /// A sentence for people.
        detail: String,
    },
    /// The watchers are not synced (or the ledger was not verified at open): the answer
    /// cannot be trusted. A 503 `not_ready`.
    #[error("{0}")]
    NotReady(String),
    /// The service cannot answer now (a poisoned ledger lock, a
    /// task that could not run). A 503: retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 4xx error with a code and a sentence.
    pub fn request(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::Request {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// A 422 `invalid_request`: a well-formed body whose fields are wrong.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::request(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }

    /// A 400 `invalid_query`: query or path parameters that are missing, unknown or wrong.
    pub fn query(detail: impl Into<String>) -> ApiError {
        ApiError::request(StatusCode::BAD_REQUEST, "invalid_query", detail)
    }

    /// A 404 `out_of_range`: a seq, size or range beyond what the ledger (or the covering
    /// checkpoint) holds: a well-formed request for something that does not exist yet.
    pub fn out_of_range(detail: impl Into<String>) -> ApiError {
        ApiError::request(StatusCode::NOT_FOUND, "out_of_range", detail)
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            // A seq or size the ledger does not hold (yet): depends on the ledger, not on
            // the request's shape.
            ApiError::Ledger(ledger::LedgerError::OutOfRange(_)) => StatusCode::NOT_FOUND,
            ApiError::Request { status, .. } => *status,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotBound { .. } => StatusCode::NOT_FOUND,
            // Another replica writes now: retry there (or here, once this one follows).
            ApiError::NotReady(_)
            | ApiError::Unavailable(_)
            | ApiError::Ledger(ledger::LedgerError::Deposed(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Ledger(_) | ApiError::Io(_) | ApiError::Json(_) | ApiError::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The machine-readable `error` code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Ledger(ledger::LedgerError::OutOfRange(_)) => "out_of_range",
            ApiError::Ledger(ledger::LedgerError::Deposed(_)) => "unavailable",
            ApiError::Ledger(_) => "ledger_error",
            ApiError::Io(_) => "io_error",
            ApiError::Json(_) => "internal_error",
            ApiError::Config(_) => "config_error",
            ApiError::Request { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotBound { .. } => "not_bound",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<formats::FormatError> for ApiError {
    /// The HTTP meaning of a format error: the caller's mistakes are 4xx with the codes
    /// the API always used, a damaged or unreadable ledger is a 500.
    fn from(error: formats::FormatError) -> ApiError {
        use formats::FormatError;
        match error {
            FormatError::InvalidRequest(detail) => ApiError::query(detail),
            FormatError::InvalidSource(detail) => ApiError::invalid(detail),
            FormatError::OutOfRange(detail) => ApiError::out_of_range(detail),
            FormatError::NoCheckpoint(detail) => {
                ApiError::request(StatusCode::NOT_FOUND, "no_checkpoint", detail)
            }
            FormatError::InconsistentCheckpoint(detail) => {
                ApiError::request(StatusCode::CONFLICT, "inconsistent_checkpoint", detail)
            }
            FormatError::Ledger(error) => ApiError::Ledger(error),
            FormatError::Io(error) => ApiError::Io(error),
            FormatError::Json(error) => ApiError::Json(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = serde_json::json!({"error": self.code(), "detail": self.to_string()});
        if let ApiError::NotBound { reason, .. } = &self {
            body["reason"] = serde_json::json!(reason);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"claim-ledger\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::FormatError;

    #[test]
    fn format_errors_answer_with_the_status_and_code_of_their_category() {
        let corrupt = ledger::LedgerError::Corrupt(ledger::VerifyFailure {
            seq: 3,
            kind: ledger::FailureKind::SeqGap,
            detail: "entry 3 is missing".into(),
        });
        for (error, status, code) in [
            (
                FormatError::InvalidRequest("x".into()),
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                FormatError::InvalidSource("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
            ),
            (
                FormatError::OutOfRange("x".into()),
                StatusCode::NOT_FOUND,
                "out_of_range",
            ),
            (
                FormatError::NoCheckpoint("x".into()),
                StatusCode::NOT_FOUND,
                "no_checkpoint",
            ),
            (
                FormatError::InconsistentCheckpoint("x".into()),
                StatusCode::CONFLICT,
                "inconsistent_checkpoint",
            ),
            // A missing entry inside the ledger's range: the server's fault, not the caller's.
            (
                FormatError::Ledger(corrupt),
                StatusCode::INTERNAL_SERVER_ERROR,
                "ledger_error",
            ),
            (
                FormatError::Ledger(ledger::LedgerError::EntryMissing { seq: 3 }),
                StatusCode::INTERNAL_SERVER_ERROR,
                "ledger_error",
            ),
            // A writer deposed by another replica: retry there.
            (
                FormatError::Ledger(ledger::LedgerError::Deposed("fenced".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                FormatError::Io(std::io::Error::other("disk")),
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
            ),
        ] {
            let detail = error.to_string();
            let api = ApiError::from(error);
            assert_eq!((api.status(), api.code()), (status, code), "{detail}");
            assert_eq!(api.to_string(), detail);
        }
    }
}
