//! The connection layer under the router: how long a connection may stay without a
//! request, how HTTP/1 request heads are checked before hyper sees them, and the
//! rate-limited log of accept errors.
//!
//! * **Idle connections.** A connection that has no request in process is closed once
//!   [`crate::ServeOptions::header_timeout`] has passed without a complete request head:
//!   counted from the accept (the TLS handshake included) and, on a keep-alive
//!   connection, from the end of the last response. This holds for every protocol,
//!   including a connection that never sends a byte (which hyper's protocol detection
//!   would otherwise wait on forever) and an idle HTTP/2 connection.
//! * **Request heads.** [`Framing`] sits between the socket (or the TLS stream) and hyper
//!   and holds each HTTP/1 request head until it is complete, then checks it the way
//!   hyper will parse it (httparse, the `http` types, the body framing rules) and against
//!   stricter limits ([`MAX_URI_LEN`], [`MAX_HEAD_LEN`], [`MAX_HEADERS`]). A head hyper
//!   would refuse with an empty-bodied 400, 414 or 431 is refused here instead with the
//!   JSON error shape: hyper is handed an end of stream, answers what it already has, and
//!   the refusal is written when it closes the connection. Bodies pass through while
//!   their framing (`Content-Length` or chunked) is followed to find the next head.
//!   HTTP/2 (prior knowledge or ALPN) passes through untouched.
//! * **Accept errors** (out of file descriptors, ...) are logged at most once per second,
//!   with the count of those not logged ([`LogLimiter`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{self, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::Service;

/// Longest request target (the URI of an HTTP/1 request line) accepted, in bytes: a
/// longer one is answered `414` `uri_too_long`.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Longest HTTP/1 request head (request line and header fields) accepted, in bytes: a
/// longer one is answered `431` `headers_too_large`.
pub const MAX_HEAD_LEN: usize = 32 * 1024;
/// Most header fields accepted in one request: more are answered `431`
/// `headers_too_large`.
pub const MAX_HEADERS: usize = 100;

/// How long a connection being closed for idleness may take to close by itself before
/// it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After a refusal is written, how long the client's remaining bytes are read and
/// discarded (so closing does not reset the connection before the refusal is read)...
const LINGER: Duration = Duration::from_secs(2);
/// ...and at most how many.
const LINGER_BYTES: usize = 1 << 20;
/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest chunk-extension and trailer section accepted per body (hyper's limits).
const CHUNK_EXTENSIONS_LIMIT: u64 = 16 * 1024;
const TRAILERS_LIMIT: u64 = 16 * 1024;

// ---------------------------------------------------------------------------------------
// The rate-limited log
// ---------------------------------------------------------------------------------------

/// Lets one log line through per interval and counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// At most one line per `interval`.
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when it is to be logged (`n` events were held
    /// back since the last logged one), `None` when it is held back.
    pub(crate) fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The events held back and not reported yet (reported by the caller now), if any.
    pub(crate) fn take_suppressed(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }
}

// ---------------------------------------------------------------------------------------
// The connection limit
// ---------------------------------------------------------------------------------------

/// The connection limit the service runs with: `configured`, lowered so connections
/// cannot use up the process's descriptors (the soft `RLIMIT_NOFILE` less a reserve of
/// an eighth, at least 64, for the ledger, the watchers' connections and spooled files).
pub(crate) fn connection_limit(configured: usize) -> (usize, Option<u64>) {
    let configured = configured.clamp(1, u32::MAX as usize);
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft {
        Some(soft) => {
            let allowed = soft.saturating_sub((soft / 8).max(64)).max(1);
            let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
            (configured.min(allowed), Some(soft))
        }
        None => (configured, None),
    }
}

// ---------------------------------------------------------------------------------------
// Requests in process on one connection
// ---------------------------------------------------------------------------------------

/// Requests in process on one connection and when it last went idle.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests in process.
    in_flight: usize,
    /// When the last one ended (or the connection was accepted).
    idle_since: Instant,
    /// HTTP/1 heads [`Framing`] passed to hyper, and requests hyper passed to the service.
    released: u64,
    started: u64,
    /// The read side waiting for every request to be answered before the end of stream.
    reader: Option<std::task::Waker>,
    /// Since when a write has waited on a client that reads nothing (none written since).
    write_blocked_since: Option<Instant>,
}

impl Activity {
    fn new(since: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: since,
                released: 0,
                started: 0,
                reader: None,
                write_blocked_since: None,
            }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request head arrived: in process until the guard (held by its response body)
    /// is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        {
            let mut state = self.state();
            state.in_flight += 1;
            state.started += 1;
        }
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// When the connection is to be closed if no request arrives; `None` while a request
    /// is in process.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let state = self.state();
        (state.in_flight == 0).then(|| state.idle_since + timeout)
    }

    /// When the connection is to be closed for a write that makes no progress.
    fn stall_deadline(&self, stalled_write: Duration) -> Option<Instant> {
        self.state()
            .write_blocked_since
            .map(|since| since + stalled_write)
    }

    /// Writes to the client started waiting (its receive window is full): `drive` takes
    /// up the new deadline.
    fn write_blocked(&self) {
        self.state().write_blocked_since = Some(Instant::now());
        self.changed.notify_one();
    }

    /// Writes to the client go through again.
    fn write_progressed(&self) {
        self.state().write_blocked_since = None;
    }

    /// [`Framing`] passed one more request head to hyper.
    fn released(&self) {
        self.state().released += 1;
    }

    /// Whether every head passed to hyper has been answered; if not, `waker` is woken
    /// when the last answer is done.
    fn answered_all(&self, waker: &std::task::Waker) -> bool {
        let mut state = self.state();
        if state.in_flight == 0 && state.started >= state.released {
            true
        } else {
            state.reader = Some(waker.clone());
            false
        }
    }
}

/// One request in process.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let reader = {
            let mut state = self.0.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
            }
            state.reader.take()
        };
        self.0.changed.notify_one();
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// A response body that keeps its request counted as in process until hyper drops it
/// (written out, or the connection gone).
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that records whether it was read to its end.
struct ReadToEnd {
    body: Incoming,
    read: Arc<AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() || self.body.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

// ---------------------------------------------------------------------------------------
// Serving one connection
// ---------------------------------------------------------------------------------------

/// What every connection of one `serve` shares.
#[derive(Clone)]
pub(crate) struct Connections {
    service: Service,
    router: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
    stalled_write: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Connections {
    pub(crate) fn new(service: Service, shutdown: watch::Receiver<bool>) -> Connections {
        let options = &service.inner.options;
        let (header_timeout, stalled_write) = (options.header_timeout, options.stalled_write);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own header read timeout is off: the deadline of `drive` covers it (and
        // the protocol detection before it, which hyper's does not), so one place decides.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let tls = service
            .inner
            .tls
            .as_ref()
            .map(|config| tokio_rustls::TlsAcceptor::from(Arc::clone(config)));
        Connections {
            router: service.router(),
            service,
            builder,
            tls,
            header_timeout,
            stalled_write,
            shutdown,
        }
    }

    /// Serves one accepted connection until it ends, is closed for idleness, or the
    /// service shuts down; `permit` (one of the connection limit) is held until then.
    pub(crate) async fn serve(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        accepted: Instant,
        permit: OwnedSemaphorePermit,
    ) {
        let metrics = &self.service.inner.metrics;
        metrics.connection_opened();
        let _open = scopeguard(|| self.service.inner.metrics.connection_closed());
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => self.http(stream, peer, accepted).await,
            Some(acceptor) => {
                let mut shutdown = self.shutdown.clone();
                let deadline = accepted + self.header_timeout;
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => handshake,
                    () = stopped(&mut shutdown) => return,
                };
                match handshake {
                    Ok(Ok(stream)) => self.http(stream, peer, accepted).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        metrics.connection_timed_out();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            }
        }
        drop(permit);
    }

    async fn http<IO>(&self, io: IO, peer: SocketAddr, accepted: Instant)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new(accepted);
        let service = {
            let router = self.router.clone();
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = activity.begin();
                let router = router.clone();
                let http1 = request.version() < http::Version::HTTP_2;
                let (parts, body) = request.into_parts();
                let read = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
                let body = Body::new(ReadToEnd {
                    body,
                    read: Arc::clone(&read),
                });
                let request = http::Request::from_parts(parts, body);
                async move {
                    let mut response = router.oneshot(request).await?;
                    // Answered before its body was read (413, 401, ...): hyper will not
                    // reuse the connection, so say so, or the client may send its next
                    // request on a connection that is closing.
                    if http1 && !read.load(Ordering::Acquire) {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let framing = Framing::new(io, Some(self.service.clone()), Some(Arc::clone(&activity)));
        let connection = self
            .builder
            .serve_connection(TokioIo::new(framing), service);
        tokio::pin!(connection);
        let mut shutdown = self.shutdown.clone();
        let (result, ended) = drive(
            connection.as_mut(),
            &activity,
            (self.header_timeout, self.stalled_write),
            &mut shutdown,
        )
        .await;
        match ended {
            Ended::Done => {}
            Ended::Idle => {
                self.service.inner.metrics.connection_timed_out();
                tracing::debug!(%peer, "closed a connection that sent no request head in time");
            }
            Ended::Stalled => {
                self.service.inner.metrics.connection_stalled();
                tracing::debug!(%peer, "closed a connection whose client read nothing in time");
            }
        }
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Resolves once the service is shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// By itself (the client closed it, or a graceful shutdown finished).
    Done,
    /// Closed for sending no request head in time.
    Idle,
    /// Closed for a write the client did not read in time: dropped, not shut down
    /// gracefully, since a graceful close would wait on that same write.
    Stalled,
}

/// Runs a connection until it ends; closes it gracefully when the service shuts down,
/// closes it (gracefully, then by dropping it) when it has been idle past `timeout`, and
/// drops it when a write has waited on the client past `stalled_write`. Returns its
/// result and how it ended.
async fn drive<C>(
    mut connection: Pin<&mut C>,
    activity: &Activity,
    (timeout, stalled_write): (Duration, Duration),
    shutdown: &mut watch::Receiver<bool>,
) -> (Result<(), C::Error>, Ended)
where
    C: GracefulConnection,
{
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(timeout);
        let stall = activity.stall_deadline(stalled_write);
        tokio::select! {
            biased;
            result = connection.as_mut() => return (result, Ended::Done),
            () = stopped(shutdown), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {}
            () = sleep_until(stall) => {
                if activity.stall_deadline(stalled_write).is_some_and(|d| d <= Instant::now()) {
                    return (Ok(()), Ended::Stalled);
                }
            }
            () = sleep_until(deadline) => {
                if activity.deadline(timeout).is_some_and(|d| d <= Instant::now()) {
                    connection.as_mut().graceful_shutdown();
                    let result = tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()));
                    return (result, Ended::Idle);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

// ---------------------------------------------------------------------------------------
// HTTP/1 request heads
// ---------------------------------------------------------------------------------------

/// A request refused by the connection layer, answered with the JSON error shape and
/// `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

impl Rejection {
    fn bad(detail: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            detail: detail.into(),
        }
    }

    fn uri_too_long() -> Rejection {
        Rejection {
            status: StatusCode::URI_TOO_LONG,
            code: "uri_too_long",
            detail: format!("the request target is longer than {MAX_URI_LEN} bytes"),
        }
    }

    fn head_too_large(detail: String) -> Rejection {
        Rejection {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            detail,
        }
    }

    /// The whole HTTP/1.1 response.
    pub(crate) fn response(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": self.code,
            "detail": self.detail,
        }))
        .unwrap_or_default();
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("Error"),
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(&body);
        response
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a head buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadStatus {
    /// Not a whole head yet.
    Partial,
    /// A valid head of this many bytes, followed by a body framed so.
    Complete(usize, BodyFraming),
}

/// Checks the bytes of a request head as hyper will parse them, with this module's
/// stricter limits; `Partial` until the head is complete.
pub(crate) fn check_head(bytes: &[u8]) -> Result<HeadStatus, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            // The request line alone already too long, or the head.
            let start = bytes
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(bytes.len());
            let line = bytes[start..].iter().position(|b| *b == b'\n');
            if line.is_none() && bytes.len() - start > MAX_URI_LEN + 64 {
                return Err(Rejection::uri_too_long());
            }
            if bytes.len() > MAX_HEAD_LEN {
                return Err(Rejection::head_too_large(format!(
                    "the request head is longer than {MAX_HEAD_LEN} bytes"
                )));
            }
            return Ok(HeadStatus::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::head_too_large(format!(
                "the request has more than {MAX_HEADERS} header fields"
            )))
        }
        Err(e) => return Err(Rejection::bad(format!("malformed request head: {e}"))),
    };
    if length > MAX_HEAD_LEN {
        return Err(Rejection::head_too_large(format!(
            "the request head is {length} bytes long; at most {MAX_HEAD_LEN} are accepted"
        )));
    }
    let method = request.method.unwrap_or_default();
    http::Method::from_bytes(method.as_bytes())
        .map_err(|_| Rejection::bad("malformed request head: invalid method"))?;
    let target = request.path.unwrap_or_default();
    if target.len() > MAX_URI_LEN {
        return Err(Rejection::uri_too_long());
    }
    target
        .parse::<http::Uri>()
        .map_err(|e| Rejection::bad(format!("malformed request target: {e}")))?;
    let http11 = request.version == Some(1);
    let mut transfer_encoding = None;
    let mut content_length = None;
    for field in request.headers.iter() {
        http::HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Rejection::bad("malformed request head: invalid header name"))?;
        http::HeaderValue::from_bytes(field.value)
            .map_err(|_| Rejection::bad("malformed request head: invalid header value"))?;
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(Rejection::bad(
                    "Transfer-Encoding is not allowed in an HTTP/1.0 request",
                ));
            }
            // As hyper: the last field decides, by its last coding.
            transfer_encoding = Some(is_chunked(field.value));
        } else if field.name.eq_ignore_ascii_case("content-length") {
            let value = parse_content_length(field.value)
                .ok_or_else(|| Rejection::bad("invalid Content-Length"))?;
            if content_length.is_some_and(|previous| previous != value) {
                return Err(Rejection::bad("conflicting Content-Length values"));
            }
            content_length = Some(value);
        }
    }
    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(Rejection::bad(
                "both Transfer-Encoding and Content-Length: the body length is ambiguous",
            ))
        }
        (Some(true), None) => BodyFraming::Chunked,
        (Some(false), None) => {
            return Err(Rejection::bad(
                "Transfer-Encoding must end with chunked in a request",
            ))
        }
        (None, Some(0) | None) => BodyFraming::Empty,
        (None, Some(length)) => BodyFraming::Length(length),
    };
    Ok(HeadStatus::Complete(length, framing))
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
fn is_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// A `Content-Length` value as hyper reads it: decimal digits, possibly a comma-separated
/// list of equal ones, below `u64::MAX - 1`.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut length = None;
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = part.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length.filter(|n| *n < u64::MAX - 1)
}

/// Where a chunked body is (hyper's chunked decoder states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// A chunked body followed byte by byte.
#[derive(Debug, Clone, Copy)]
struct Chunked {
    state: Chunk,
    size: u64,
    extensions: u64,
    trailers: u64,
}

/// What following a chunked body found in the bytes given.
#[derive(Debug, PartialEq, Eq)]
enum ChunkStep {
    /// All bytes belong to the body; more to come.
    More,
    /// The body ends after this many bytes.
    End(usize),
    /// The body is malformed: hyper will refuse it and close the connection.
    Invalid,
}

impl Chunked {
    fn new() -> Chunked {
        Chunked {
            state: Chunk::Start,
            size: 0,
            extensions: 0,
            trailers: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> ChunkStep {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == Chunk::Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (Chunk::Start, b) if b.is_ascii_hexdigit() => {
                    self.size = u64::from(hex(b));
                    Chunk::Size
                }
                (Chunk::Size, b) if b.is_ascii_hexdigit() => {
                    match self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(hex(b))))
                    {
                        Some(size) => self.size = size,
                        None => return ChunkStep::Invalid,
                    }
                    Chunk::Size
                }
                (Chunk::Size | Chunk::SizeLws, b'\t' | b' ') => Chunk::SizeLws,
                (Chunk::Size | Chunk::SizeLws, b';') => Chunk::Extension,
                (Chunk::Size | Chunk::SizeLws | Chunk::Extension, b'\r') => Chunk::SizeLf,
                (Chunk::Extension, b'\n') => return ChunkStep::Invalid,
                (Chunk::Extension, _) => {
                    self.extensions += 1;
                    if self.extensions > CHUNK_EXTENSIONS_LIMIT {
                        return ChunkStep::Invalid;
                    }
                    Chunk::Extension
                }
                (Chunk::SizeLf, b'\n') if self.size == 0 => Chunk::EndCr,
                (Chunk::SizeLf, b'\n') => Chunk::Data,
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Start,
                (Chunk::EndCr, b'\r') => Chunk::EndLf,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::EndCr | Chunk::Trailer, _) => {
                    self.trailers += 1;
                    if self.trailers > TRAILERS_LIMIT {
                        return ChunkStep::Invalid;
                    }
                    Chunk::Trailer
                }
                (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
                (Chunk::EndLf, b'\n') => return ChunkStep::End(i),
                _ => return ChunkStep::Invalid,
            };
        }
        ChunkStep::More
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Where the read side of a connection is.
#[derive(Debug)]
enum Reading {
    /// Collecting a request head (held back from hyper until complete and valid).
    Head,
    /// Passing this many more body bytes.
    Body(u64),
    /// Passing a chunked body.
    Chunked(Chunked),
    /// Passing everything unchecked: HTTP/2, or after a body hyper will refuse.
    Through,
    /// The client's bytes end here for hyper: end of stream, or a refused head.
    Closed,
}

/// Where the write side is when hyper closes the connection.
enum Closing {
    Open,
    /// Writing a refusal.
    Refusing(Vec<u8>, usize),
    Shutdown {
        linger: bool,
    },
    /// Reading and discarding what the client still sends after a refusal.
    Lingering(Pin<Box<tokio::time::Sleep>>, usize),
    Done,
}

/// The socket (or TLS stream) as hyper sees it: HTTP/1 request heads are held until
/// complete and checked; a refused one ends the stream for hyper (once hyper has answered
/// every request before it) and is answered with the JSON error when hyper closes the
/// connection.
pub(crate) struct Framing<IO> {
    io: IO,
    service: Option<Service>,
    activity: Option<Arc<Activity>>,
    reading: Reading,
    /// No request head has been seen yet (an HTTP/2 preface may come).
    first: bool,
    /// The head being collected.
    head: Vec<u8>,
    /// Checked bytes not yet read by hyper, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    refusal: Option<Rejection>,
    closing: Closing,
    /// The last write waited on the client: the activity was told, and is told again only
    /// when a write goes through (so that a write that does not wait takes no lock).
    write_waiting: bool,
}

impl<IO> Framing<IO> {
    /// Wraps a stream; refusals are counted in the service's metrics, if given. With the
    /// connection's activity, the end of stream that follows a refused head waits until
    /// hyper has answered every head before it (hyper drops the requests it still holds
    /// when it reads an end of stream); without, it comes at once.
    pub(crate) fn new(
        io: IO,
        service: Option<Service>,
        activity: Option<Arc<Activity>>,
    ) -> Framing<IO> {
        Framing {
            io,
            service,
            activity,
            reading: Reading::Head,
            first: true,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            refusal: None,
            closing: Closing::Open,
            write_waiting: false,
        }
    }

    /// Follows the client's bytes, moving the ones hyper may read to `out`.
    fn feed(&mut self, data: &[u8]) {
        let mut rest: Vec<u8>;
        let mut input = data;
        while !input.is_empty() {
            match &mut self.reading {
                Reading::Head => {
                    self.head.extend_from_slice(input);
                    if self.first {
                        let n = self.head.len().min(H2_PREFACE.len());
                        if self.head[..n] == H2_PREFACE[..n] {
                            if n == H2_PREFACE.len() {
                                self.out.append(&mut self.head);
                                self.reading = Reading::Through;
                            }
                            return;
                        }
                    }
                    match check_head(&self.head) {
                        Ok(HeadStatus::Partial) => return,
                        Ok(HeadStatus::Complete(length, framing)) => {
                            rest = self.head.split_off(length);
                            self.out.append(&mut self.head);
                            if let Some(activity) = &self.activity {
                                activity.released();
                            }
                            self.first = false;
                            self.reading = match framing {
                                BodyFraming::Empty => Reading::Head,
                                BodyFraming::Length(n) => Reading::Body(n),
                                BodyFraming::Chunked => Reading::Chunked(Chunked::new()),
                            };
                            input = &rest;
                        }
                        Err(refusal) => {
                            if let Some(service) = &self.service {
                                service.inner.metrics.request_refused();
                            }
                            tracing::debug!(status = %refusal.status, detail = %refusal.detail, "refused a request head");
                            self.head = Vec::new();
                            self.refusal = Some(refusal);
                            self.reading = Reading::Closed;
                            return;
                        }
                    }
                }
                Reading::Body(remaining) => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.reading = Reading::Head;
                    }
                    input = &input[n..];
                }
                Reading::Chunked(chunked) => match chunked.feed(input) {
                    ChunkStep::More => {
                        self.out.extend_from_slice(input);
                        return;
                    }
                    ChunkStep::End(n) => {
                        self.out.extend_from_slice(&input[..n]);
                        self.reading = Reading::Head;
                        input = &input[n..];
                    }
                    ChunkStep::Invalid => {
                        self.out.extend_from_slice(input);
                        self.reading = Reading::Through;
                        return;
                    }
                },
                Reading::Through => {
                    self.out.extend_from_slice(input);
                    return;
                }
                Reading::Closed => return,
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Framing<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.reading {
                Reading::Through => return Pin::new(&mut this.io).poll_read(cx, buf),
                Reading::Closed => {
                    if let (Some(_), Some(activity)) = (&this.refusal, &this.activity) {
                        if !activity.answered_all(cx.waker()) {
                            return Poll::Pending;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Reading::Head | Reading::Body(_) | Reading::Chunked(_) => {}
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.reading = Reading::Closed;
                continue;
            }
            this.feed(read.filled());
        }
    }
}

impl<IO> Framing<IO> {
    /// Tells the connection's activity when writes start and stop waiting on the client
    /// (for the stalled-write deadline).
    fn written<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let waiting = polled.is_pending();
        if waiting != self.write_waiting {
            self.write_waiting = waiting;
            if let Some(activity) = &self.activity {
                match waiting {
                    true => activity.write_blocked(),
                    false => activity.write_progressed(),
                }
            }
        }
        polled
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Framing<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes the refusal, if any, before closing; then (after a refusal, or when the
    /// client was still sending a request body) reads and discards what the client still
    /// sends for a moment, so that it gets to read the answer instead of a reset.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.closing {
                Closing::Open => {
                    this.closing = match this.refusal.take() {
                        Some(refusal) => Closing::Refusing(refusal.response(), 0),
                        // Closed in the middle of a request body (answered early: 413,
                        // 401...): the client may still be sending it.
                        None => Closing::Shutdown {
                            linger: matches!(this.reading, Reading::Body(_) | Reading::Chunked(_)),
                        },
                    };
                }
                Closing::Refusing(bytes, written) => {
                    while *written < bytes.len() {
                        let n = ready!(Pin::new(&mut this.io).poll_write(cx, &bytes[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *written += n;
                    }
                    ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                    this.closing = Closing::Shutdown { linger: true };
                }
                Closing::Shutdown { linger } => {
                    let linger = *linger;
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    this.closing = if linger {
                        Closing::Lingering(Box::pin(tokio::time::sleep(LINGER)), 0)
                    } else {
                        Closing::Done
                    };
                }
                Closing::Lingering(timer, discarded) => {
                    if timer.as_mut().poll(cx).is_ready() {
                        this.closing = Closing::Done;
                        continue;
                    }
                    let mut chunk = [0u8; 8192];
                    let mut read = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                            *discarded += read.filled().len();
                            if *discarded > LINGER_BYTES {
                                this.closing = Closing::Done;
                            }
                        }
                        Poll::Ready(_) => this.closing = Closing::Done,
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_one_line_a_second_through_and_counts_the_rest() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut limiter = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(limiter.admit(at(0)), Some(0));
        // Thousands of errors in the same second: none logged, all counted.
        for i in 1..=5000 {
            assert_eq!(limiter.admit(at(i * 999 / 5000)), None);
        }
        assert_eq!(limiter.admit(at(1000)), Some(5000));
        assert_eq!(limiter.admit(at(1500)), None);
        assert_eq!(limiter.take_suppressed(), Some(1));
        assert_eq!(limiter.take_suppressed(), None);
        assert_eq!(limiter.admit(at(1999)), None);
        assert_eq!(limiter.admit(at(5000)), Some(1));
        // A clock that goes back does not hold lines back forever.
        assert_eq!(limiter.admit(at(4000)), None);
        assert_eq!(limiter.admit(at(6000)), Some(1));
    }

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_rest() {
        let (limit, soft) = connection_limit(usize::MAX);
        assert!(limit >= 1 && limit <= u32::MAX as usize);
        if let Some(soft) = soft {
            assert!((limit as u64) < soft, "{limit} of {soft}");
        }
        assert_eq!(connection_limit(1).0, 1);
        assert_eq!(connection_limit(0).0, 1);
    }

    fn complete(head: &str) -> BodyFraming {
        match check_head(head.as_bytes()) {
            Ok(HeadStatus::Complete(n, framing)) => {
                assert_eq!(n, head.len(), "{head:?}");
                framing
            }
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn refused(head: &[u8]) -> Rejection {
        match check_head(head) {
            Err(refusal) => refusal,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn heads_are_checked_as_hyper_parses_them() {
        assert_eq!(complete("GET / HTTP/1.1\r\n\r\n"), BodyFraming::Empty);
        assert_eq!(complete("\r\nGET / HTTP/1.0\r\n\r\n"), BodyFraming::Empty);
        assert_eq!(
            complete("POST /v1/identity/check HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            BodyFraming::Length(12)
        );
        assert_eq!(
            complete("POST / HTTP/1.1\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
            BodyFraming::Length(7)
        );
        assert_eq!(
            complete("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(HeadStatus::Partial)
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nName: a\x00b\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            let refusal = refused(bad);
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{refusal:?}");
            assert_eq!(refusal.code, "bad_request");
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_LEN));
        assert_eq!(refused(long.as_bytes()).status, StatusCode::URI_TOO_LONG);
        let partial = format!("GET /{}", "a".repeat(MAX_URI_LEN + 100));
        assert_eq!(refused(partial.as_bytes()).status, StatusCode::URI_TOO_LONG);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_LEN));
        assert_eq!(
            refused(big.as_bytes()).status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: a\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            refused(many.as_bytes()).status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET";
        let mut chunked = Chunked::new();
        assert_eq!(chunked.feed(body), ChunkStep::End(body.len() - 3));
        // Byte by byte, the same.
        let mut chunked = Chunked::new();
        let mut end = None;
        for (i, b) in body.iter().enumerate() {
            if let ChunkStep::End(n) = chunked.feed(&[*b]) {
                assert_eq!(n, 1);
                end = Some(i + 1);
                break;
            }
        }
        assert_eq!(end, Some(body.len() - 3));
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloX",
            b"5;a\nb",
            b"fffffffffffffffff\r\n",
        ] {
            assert_eq!(Chunked::new().feed(bad), ChunkStep::Invalid, "{bad:?}");
        }
        assert_eq!(Chunked::new().feed(b"10\r\n0123"), ChunkStep::More);
    }

    #[tokio::test]
    async fn framing_holds_heads_passes_bodies_and_refuses_with_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut framing = Framing::new(server, None, None);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nGET /bGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\nX: a\x01b\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        framing.read_to_end(&mut seen).await.unwrap();
        assert_eq!(
            String::from_utf8(seen).unwrap(),
            "POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nGET /bGET /c HTTP/1.1\r\n\r\n"
        );
        client_write.shutdown().await.unwrap();
        framing.shutdown().await.unwrap();
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("content-type: application/json\r\n"));
        assert!(answer.contains("connection: close\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(body["detail"].as_str().unwrap().contains("header value"));
    }

    #[tokio::test]
    async fn framing_passes_http2_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut framing = Framing::new(server, None, None);
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        client.write_all(&sent[..10]).await.unwrap();
        client.write_all(&sent[10..]).await.unwrap();
        drop(client);
        let mut seen = Vec::new();
        framing.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, sent);
    }
}
