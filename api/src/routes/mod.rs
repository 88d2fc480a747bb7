//! The routes, their handlers, and the layers around them. The handlers live in one
//! module per area: [`identity`], [`history`] (and state), [`export`], [`proofs`] (and
//! integrity), [`health`]; the helpers they share are here.
//!
//! Every route is declared once in [`specs`]: the router is built from that table and
//! [`route_table`] lists it, so the OpenAPI test compares the document with what is
//! actually served. Layers, outermost first: JSON error bodies for anything that is not
//! already JSON, panic catching, the request timeout, the body limit; on `/v1` routes
//! also bearer authentication, then the concurrency limit.

mod export;
mod health;
mod history;
mod identity;
mod proofs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use formats::EntryLine;
use ledger::{LedgerView, StoredEntry};
use schemas::Hash;
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::{ApiError, Service};

/// Default and largest page of `/v1/history` and `/v1/entries`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// One route: method, path (OpenAPI syntax, which axum 0.8 shares), whether it needs a
/// bearer token, and its handler.
struct Spec {
    method: Method,
    path: &'static str,
    auth: bool,
    handler: MethodRouter<Service>,
}

fn spec(method: Method, path: &'static str, auth: bool, handler: MethodRouter<Service>) -> Spec {
    Spec {
        method,
        path,
        auth,
        handler,
    }
}

fn specs() -> Vec<Spec> {
    use axum::routing::{get, post};
    vec![
        spec(
            Method::POST,
            "/v1/identity/check",
            true,
            post(identity::check),
        ),
        spec(
            Method::GET,
            "/v1/bindings/{pod_uid}",
            true,
            get(identity::binding),
        ),
        spec(Method::GET, "/v1/history", true, get(history::history)),
        spec(Method::GET, "/v1/state", true, get(history::state)),
        spec(Method::GET, "/v1/entries", true, get(history::entries)),
        spec(Method::GET, "/v1/export", true, get(export::export)),
        spec(Method::GET, "/v1/head", true, get(proofs::head)),
        spec(Method::GET, "/v1/timeline", true, get(history::timeline)),
        spec(Method::GET, "/v1/integrity", true, get(proofs::integrity)),
        spec(Method::GET, "/v1/checkpoint", true, get(proofs::checkpoint)),
        spec(
            Method::GET,
            "/v1/proof/inclusion",
            true,
            get(proofs::inclusion_proof),
        ),
        spec(
            Method::GET,
            "/v1/proof/consistency",
            true,
            get(proofs::consistency_proof),
        ),
        spec(Method::GET, "/healthz", false, get(health::healthz)),
        spec(Method::GET, "/readyz", false, get(health::readyz)),
        spec(Method::GET, "/metrics", false, get(health::metrics)),
        spec(Method::GET, "/openapi.json", false, get(health::openapi)),
        // The timeline page: public static assets; its data comes from /v1 with a token.
        spec(Method::GET, "/ui", false, get(crate::ui::redirect)),
        spec(Method::GET, "/ui/", false, get(crate::ui::index)),
        spec(Method::GET, "/ui/app.js", false, get(crate::ui::script)),
        spec(Method::GET, "/ui/app.css", false, get(crate::ui::style)),
    ]
}

/// Every (lowercase method, path) served.
pub(crate) fn route_table() -> Vec<(&'static str, &'static str)> {
    specs()
        .into_iter()
        .map(|s| (method_name(&s.method), s.path))
        .collect()
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        _ => "other",
    }
}

pub(crate) fn router(service: Service) -> Router {
    let options = &service.inner.options;
    let mut protected = Router::new();
    let mut open = Router::new();
    for spec in specs() {
        if spec.auth {
            protected = protected.route(spec.path, spec.handler);
        } else {
            open = open.route(spec.path, spec.handler);
        }
    }
    let protected = protected
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            limit_concurrency,
        ))
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            require_token,
        ));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    options.request_timeout,
                ))
                .layer(RequestBodyLimitLayer::new(options.body_limit))
                .layer(DefaultBodyLimit::disable()),
        )
        .layer(middleware::map_response(json_errors))
        .with_state(service)
}

async fn limit_concurrency(
    State(service): State<Service>,
    request: Request,
    next: Next,
) -> Response {
    let permits = std::sync::Arc::clone(&service.inner.permits);
    match permits.acquire_owned().await {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Unavailable("the service is shutting down".into()).into_response(),
    }
}

async fn no_route() -> ApiError {
    ApiError::request(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::request(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not answer this method",
    )
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": "internal_error", "detail": "internal error"})),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Gives every 4xx/5xx the `{"error", "detail"}` shape, whoever produced it (the body
/// limit, the timeout, the router).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let detail = match (status, text.is_empty()) {
        (StatusCode::REQUEST_TIMEOUT, _) => "the request took too long".to_string(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let body = serde_json::to_vec(&serde_json::json!({"error": code, "detail": detail}))
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Runs ledger reads that may take a while (sled reads, replay) off the async workers.
async fn blocking<T: Send + 'static>(
    service: &Service,
    work: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request task failed: {e}")))?
}

/// A body streamed from a blocking task is handed on a chunk each time this many bytes
/// are written (serde and `io::copy` write in small pieces)...
const CHUNK_BYTES: usize = 256 * 1024;
/// ...and at most this many chunks written ahead of the client's reading, so a response
/// of any size holds about a megabyte at a time.
const CHUNKS_AHEAD: usize = 2;

/// How long a streamed body waits for a client that reads nothing before it gives up: a
/// client that stops reading would otherwise pin what the body is written from (a state
/// replayed for it, or the projection as of its request) for as long as it likes.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// A blocking writer into a streamed response body: it hands what it is given on in
/// chunks and waits while the client has not read the ones before (up to a stall limit).
pub(super) struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    runtime: tokio::runtime::Handle,
    stall: Duration,
    cut: Arc<AtomicBool>,
}

impl ChunkWriter {
    /// A writer and the body it streams to; called on the runtime, written from a
    /// blocking task of it.
    fn new(stall: Duration) -> (ChunkWriter, Body) {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let cut = Arc::new(AtomicBool::new(false));
        let chunks = futures::stream::poll_fn({
            let cut = Arc::clone(&cut);
            move |context| match receiver.poll_recv(context) {
                // The writer stopped without finishing: end in an error, so the client
                // sees the body cut short, never a complete-looking one.
                std::task::Poll::Ready(None) if cut.swap(false, Ordering::AcqRel) => {
                    std::task::Poll::Ready(Some(Err(std::io::Error::other(
                        "the response was cut short",
                    ))))
                }
                polled => polled,
            }
        });
        let writer = ChunkWriter {
            sender,
            buffer: Vec::with_capacity(CHUNK_BYTES),
            runtime: tokio::runtime::Handle::current(),
            stall,
            cut,
        };
        (writer, Body::from_stream(chunks))
    }

    fn send(&mut self, chunk: Result<axum::body::Bytes, std::io::Error>) -> std::io::Result<()> {
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(self.stall, self.sender.send(chunk)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", self.stall.as_secs()),
            )),
        }
    }

    /// Whether the client has gone (the body dropped), for a writer with long work before
    /// its first byte.
    fn client_gone(&self) -> impl Fn() -> bool + Send + 'static {
        let sender = self.sender.clone();
        move || sender.is_closed()
    }

    /// Ends the body with an error after what was already handed on.
    fn fail(self) {
        self.cut.store(true, Ordering::Release);
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.send(Ok(chunk.into()))
    }
}

/// A response body that `write` writes on a blocking task as the client reads it. `held`
/// (a permit, say) is kept until the body is written.
fn streamed_body<H: Send + 'static>(
    write: impl FnOnce(&mut ChunkWriter) -> std::io::Result<()> + Send + 'static,
    held: H,
) -> Body {
    let (mut writer, body) = ChunkWriter::new(STALLED_CLIENT);
    tokio::task::spawn_blocking(move || {
        let _held = held;
        match write(&mut writer).and_then(|()| std::io::Write::flush(&mut writer)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                tracing::warn!(error = %e, "a streamed response was cut short");
                writer.fail();
            }
        }
    });
    body
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response()
}

/// Where the ledger stood when an answer was computed.
#[derive(Debug, Serialize)]
struct Position {
    seq: u64,
    head_hash: Hash,
}

fn position(ledger: &LedgerView) -> Position {
    let head = ledger.head();
    Position {
        seq: head.seq,
        head_hash: head.hash,
    }
}

/// A page of entries and the cursor of the next one.
#[derive(Serialize)]
struct Page<'a> {
    entries: Vec<EntryLine<'a>>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    next_after_seq: Option<u64>,
    head_seq: u64,
}

fn page_response(stored: &[StoredEntry], more: bool, head_seq: u64) -> Result<Response, ApiError> {
    let page = Page {
        entries: stored.iter().map(EntryLine::new).collect(),
        next_after_seq: if more {
            stored.last().map(|s| s.entry.seq)
        } else {
            None
        },
        head_seq,
    };
    Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&page)?))
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::query("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(ApiError::query(format!(
            "limit is {n}; at most {MAX_LIMIT} entries per page"
        ))),
        n => Ok(n),
    }
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::query(format!(
                "{field} must be an RFC 3339 time such as 2026-05-20T15:00:00Z: {e}"
            ))
        })
}

/// Middleware on every `/v1` route: 401 unless a listed bearer token is presented.
pub(crate) async fn require_token(
    State(service): State<Service>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(tokens) = &service.inner.tokens {
        let verdict = crate::auth::bearer(&request).and_then(|token| {
            if tokens.verify(token) {
                Ok(())
            } else {
                Err(ApiError::Unauthorized(
                    "the bearer token is not valid".into(),
                ))
            }
        });
        if let Err(e) = verdict {
            service.inner.metrics.unauthorized();
            return e.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_streamed_body_arrives_in_bounded_chunks_and_whole() {
        let line = b"0123456789abcdef".repeat(1000);
        let lines = 100; // 1.6 MB: several chunks
        let body = streamed_body(
            move |out| {
                for _ in 0..lines {
                    out.write_all(&line)?;
                }
                Ok(())
            },
            (),
        );
        let mut stream = body.into_data_stream();
        let (mut total, mut chunks) = (0, 0);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() < CHUNK_BYTES + 16_000, "{}", chunk.len());
            total += chunk.len();
            chunks += 1;
        }
        assert_eq!(total, 16_000 * lines);
        assert!(chunks > 1, "{chunks}");
    }

    #[tokio::test]
    async fn a_body_that_fails_midway_ends_in_an_error_not_a_short_success() {
        let body = streamed_body(
            |out| {
                out.write_all(&[b'x'; CHUNK_BYTES + 1])?;
                Err(std::io::Error::other("the replay failed"))
            },
            (),
        );
        let mut stream = body.into_data_stream();
        let first = stream.next().await.unwrap();
        assert_eq!(first.unwrap().len(), CHUNK_BYTES + 1);
        let failed = stream.next().await.unwrap();
        assert!(failed.is_err(), "cut short, not ended");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_writer_whose_client_reads_nothing_gives_up_and_cuts_the_body_short() {
        let (mut writer, body) = ChunkWriter::new(Duration::from_millis(50));
        let written = tokio::task::spawn_blocking(move || {
            let written =
                (0..CHUNKS_AHEAD + 2).try_for_each(|_| writer.write_all(&[b'x'; CHUNK_BYTES]));
            writer.fail();
            written
        })
        .await
        .unwrap();
        assert_eq!(written.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        let mut stream = body.into_data_stream();
        for _ in 0..CHUNKS_AHEAD {
            assert_eq!(stream.next().await.unwrap().unwrap().len(), CHUNK_BYTES);
        }
        assert!(
            stream.next().await.unwrap().is_err(),
            "cut short, not ended"
        );
    }

    #[tokio::test]
    async fn a_writer_whose_client_went_away_stops_with_a_broken_pipe() {
        let (mut writer, body) = ChunkWriter::new(STALLED_CLIENT);
        drop(body);
        let written = tokio::task::spawn_blocking(move || writer.write_all(&[0; CHUNK_BYTES]))
            .await
            .unwrap();
        assert_eq!(written.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }
}
