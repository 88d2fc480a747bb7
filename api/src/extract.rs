//! Request parsing that answers every client mistake with the JSON error shape: bodies
//! (size, media type, syntax, unknown fields), query strings, and the limits on names
//! and uids (the same the normalizer applies to what the ledger records).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Longest name or namespace (Kubernetes allows 253).
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Longest uid (Kubernetes uids are 36-character UUIDs).
pub(crate) const MAX_UID_LEN: usize = 128;

/// A JSON body parsed with serde (so `deny_unknown_fields` applies).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::request(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                ));
            }
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|r| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::request(status, "body_too_large", "the request body is too large")
            } else if status.is_client_error() {
                ApiError::request(status, "bad_body", r.body_text())
            } else {
                ApiError::request(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the request body: {}", r.body_text()),
                )
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
                _ => ApiError::request(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("the body is not valid JSON: {e}"),
                ),
            })
    }
}

/// Query parameters parsed with serde (unknown parameters refused where the type says so).
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|r| ApiError::query(r.body_text()))
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// A namespace or object name: 1 to 253 bytes, no control characters.
pub(crate) fn name(field: &str, value: &str) -> Result<(), String> {
    text(field, value, MAX_NAME_LEN)
}

/// A uid: 1 to 128 bytes, no control characters.
pub(crate) fn uid(field: &str, value: &str) -> Result<(), String> {
    text(field, value, MAX_UID_LEN)
}

/// The optional fields of a check request.
pub(crate) fn check_request(request: &ledger::CheckRequest) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    let mut push = |result: Result<(), String>| {
        if let Err(problem) = result {
            problems.push(problem);
        }
    };
    push(name("namespace", &request.namespace));
    push(name("pod_name", &request.pod_name));
    push(uid("pod_uid", &request.pod_uid));
    if let Some(value) = &request.sandbox_id {
        push(name("sandbox_id", value));
    }
    if let Some(value) = &request.sandbox_name {
        push(name("sandbox_name", value));
    }
    if let Some(value) = &request.sandbox_uid {
        push(uid("sandbox_uid", value));
    }
    if let Some(value) = &request.claim_uid {
        push(uid("claim_uid", value));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_uids_are_bounded() {
        assert!(uid("pod_uid", "p0d00000-0001-4000-8000-000000000001").is_ok());
        assert!(uid("pod_uid", "").unwrap_err().contains("empty"));
        assert!(uid("pod_uid", &"a".repeat(129))
            .unwrap_err()
            .contains("129 bytes"));
        assert!(uid("pod_uid", "a\u{0}b").unwrap_err().contains("control"));
        assert!(name("pod_name", &"a".repeat(253)).is_ok());
        assert!(name("pod_name", &"a".repeat(254)).is_err());
        assert!(name("pod_name", "a\nb").is_err());
    }
}
