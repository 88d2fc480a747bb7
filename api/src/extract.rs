//! Request parsing that answers every client mistake with the JSON error shape: bodies
//! (size, media type, syntax, unknown fields), query strings, and the limits on names
//! and uids (the same the normalizer applies to what the ledger records).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Longest name or namespace, in characters (Kubernetes allows 253).
pub(crate) const MAX_NAME_LEN: usize = ledger::projection::MAX_NAME_LEN;
/// Longest uid, in characters (Kubernetes uids are 36-character UUIDs).
pub(crate) const MAX_UID_LEN: usize = ledger::projection::MAX_UID_LEN;

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
        utf8_query(parts.uri.query().unwrap_or_default())?;
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|r| ApiError::query(r.body_text()))
    }
}

/// Refuses a query string whose names or values are not UTF-8 once percent-decoded
/// (the form decoding would otherwise replace the bytes with U+FFFD and go on).
pub(crate) fn utf8_query(query: &str) -> Result<(), ApiError> {
    for pair in query.split('&') {
        for part in pair.splitn(2, '=') {
            if std::str::from_utf8(&percent_decode(part.as_bytes())).is_err() {
                let shown: String = part.chars().take(64).collect();
                return Err(ApiError::query(format!(
                    "the query string is not UTF-8 once percent-decoded: {shown:?}"
                )));
            }
        }
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte, and a `%`
/// not followed by two hex digits stands for itself.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A uid: 1 to 128 characters, no control characters.
pub(crate) fn uid(field: &str, value: &str) -> Result<(), String> {
    ledger::projection::bounded_text(field, value, MAX_UID_LEN)
}

/// Every field of a check request, by the one validation the CLI's `check` uses too
/// ([`ledger::CheckRequest::validate`]).
pub(crate) fn check_request(request: &ledger::CheckRequest) -> Result<(), ApiError> {
    request.validate().map_err(ApiError::invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_bounded() {
        assert!(uid("pod_uid", "p0d00000-0001-4000-8000-000000000001").is_ok());
        assert!(uid("pod_uid", "").unwrap_err().contains("empty"));
        assert!(uid("pod_uid", &"a".repeat(129))
            .unwrap_err()
            .contains("129 characters"));
        // Characters, not bytes (as JSON Schema's maxLength).
        assert!(uid("pod_uid", &"é".repeat(128)).is_ok());
        assert!(uid("pod_uid", &"é".repeat(129)).is_err());
        assert!(uid("pod_uid", "a\u{0}b").unwrap_err().contains("control"));
    }

    #[test]
    fn query_strings_must_decode_to_utf8() {
        assert_eq!(percent_decode(b"a+b%20c%2"), b"a b c%2");
        assert_eq!(percent_decode(b"%e2%82%ac%zz"), "€%zz".as_bytes());
        assert!(utf8_query("").is_ok());
        assert!(utf8_query("pod_uid=%e2%82%ac&limit=5&x").is_ok());
        assert!(utf8_query("pod_uid=%ff%fe").is_err());
        assert!(utf8_query("%c3=1").is_err());
        assert!(utf8_query("a=%e2%82").is_err());
    }
}
