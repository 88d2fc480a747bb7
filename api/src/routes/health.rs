//! Health and description: liveness (`/healthz`), readiness (`/readyz`), Prometheus
//! metrics (`/metrics`) and the OpenAPI document (`/openapi.json`); no token needed.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::{ApiError, Service};

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 when the watchers are synced, the ledger verified at open and not
/// stopped by a failed write.
pub(super) async fn readyz(State(service): State<Service>) -> Result<Response, ApiError> {
    let (verified, corruption, stopped, head) = {
        let ledger = service.read()?;
        (
            ledger.corruption().is_none(),
            ledger.corruption().map(ToString::to_string),
            ledger.stopped().map(str::to_string),
            ledger.head().seq,
        )
    };
    let watchers_ready = service.inner.freshness.ready();
    let ready = verified && stopped.is_none() && watchers_ready;
    let body = serde_json::json!({
        "ready": ready,
        "ledger": {"verified_at_open": verified, "corruption": corruption, "stopped": stopped, "head_seq": head},
        "watchers": {"ready": watchers_ready, "report": service.inner.freshness.report()},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(service): State<Service>) -> Result<Response, ApiError> {
    let text = service
        .inner
        .metrics
        .encode()
        .map_err(|_| ApiError::Unavailable("cannot encode the metrics".into()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}
