//! Shared test support: a real sled ledger in a temporary directory, the service on a
//! real socket (127.0.0.1:0), a freshness whose readiness the test flips, a clock the
//! test moves, a plain HTTP client, and builders for Kubernetes objects.

#![allow(dead_code)]

pub mod k8s;

#[path = "../../../../tests/data/watch_events.rs"]
mod watch_events;
pub use watch_events::watch_event_changes;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::{ApiError, Auth, FlushStats, Freshness, ServeOptions, Service, TlsFiles, WatchCounters};
use chrono::{DateTime, TimeZone, Utc};
use ledger::{Ledger, LedgerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The first instant of the test clock: the start of a minute.
pub const EPOCH: i64 = 1_790_000_040;

/// Readiness the test controls.
#[derive(Debug, Default)]
pub struct TestFreshness {
    pub ready: AtomicBool,
    pub watch_errors: AtomicU64,
}

impl Freshness for TestFreshness {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    fn report(&self) -> Value {
        json!({"pods/v1": {"synced": self.ready(), "healthy": self.ready()}})
    }
    fn counters(&self) -> WatchCounters {
        WatchCounters {
            watch_errors: self.watch_errors.load(Ordering::SeqCst),
            relists: 2,
            resync_deletions: 3,
            rejected_objects: 4,
        }
    }
    fn flushes(&self) -> Option<FlushStats> {
        Some(FlushStats {
            count: 12,
            seconds: 0.25,
        })
    }
}

/// How a test server is set up.
pub struct Setup {
    pub auth: bool,
    pub tls: bool,
    pub body_limit: usize,
    pub concurrency: usize,
    pub denial_flush: Duration,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub stalled_write: Duration,
    pub max_connections: usize,
    pub max_replays: usize,
    pub ready: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            auth: true,
            tls: false,
            body_limit: 16 * 1024,
            concurrency: 64,
            denial_flush: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            stalled_write: Duration::from_secs(60),
            max_connections: 4096,
            max_replays: 2,
            ready: true,
        }
    }
}

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const OTHER_TOKEN: &str = "second-token-fedcba9876543210";

/// A running service over its own ledger.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub ledger: ledger::SharedLedger,
    pub freshness: Arc<TestFreshness>,
    pub service: Service,
    /// Seconds since [`EPOCH`] of the service's clock (denial minutes).
    pub clock: Arc<AtomicI64>,
    pub token_file: PathBuf,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), ApiError>>>,
    ingest_tick: i64,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("db"), LedgerConfig::default()).unwrap();
        let ledger = ledger::SharedLedger::new(ledger);
        Server::start_over(dir, ledger, setup).await
    }

    /// A server over an existing ledger (the directory is kept alive by the server).
    pub async fn start_over(
        dir: tempfile::TempDir,
        ledger: ledger::SharedLedger,
        setup: Setup,
    ) -> Server {
        let token_file = dir.path().join("tokens");
        std::fs::write(
            &token_file,
            format!("# test tokens\n{TOKEN}\n\n{OTHER_TOKEN}\n"),
        )
        .unwrap();
        let freshness = Arc::new(TestFreshness::default());
        freshness.ready.store(setup.ready, Ordering::SeqCst);
        let mut options = ServeOptions::new(if setup.auth {
            Auth::Tokens(token_file.clone())
        } else {
            Auth::Insecure
        });
        options.body_limit = setup.body_limit;
        options.concurrency = setup.concurrency;
        options.denial_flush = setup.denial_flush;
        options.request_timeout = setup.request_timeout;
        options.header_timeout = setup.header_timeout;
        options.stalled_write = setup.stalled_write;
        options.max_connections = setup.max_connections;
        options.max_replays = setup.max_replays;
        let mut client = reqwest::Client::builder().no_proxy();
        let scheme = if setup.tls {
            let (cert, key) = self_signed(&dir);
            let pem = std::fs::read(&cert).unwrap();
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            options.tls = Some(TlsFiles { cert, key });
            "https"
        } else {
            "http"
        };
        let clock = Arc::new(AtomicI64::new(0));
        let seconds = Arc::clone(&clock);
        let service = Service::with_clock(
            ledger.clone(),
            freshness.clone(),
            options,
            Arc::new(move || at(seconds.load(Ordering::SeqCst))),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(service.clone().serve(listener, async move {
            let _ = stop.await;
        }));
        let host = if setup.tls { "localhost" } else { "127.0.0.1" };
        if setup.tls {
            client = client.resolve(
                "localhost",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            );
        }
        Server {
            base: format!("{scheme}://{host}:{port}"),
            client: client.build().unwrap(),
            ledger,
            freshness,
            service,
            clock,
            token_file,
            dir,
            shutdown: Some(shutdown),
            handle: Some(handle),
            ingest_tick: 0,
        }
    }

    /// Stops the server (which flushes pending denial records) and returns the directory
    /// and ledger, so another server can be started over them.
    pub async fn stop(mut self) -> (tempfile::TempDir, ledger::SharedLedger) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
        (self.dir, self.ledger)
    }

    pub fn set_ready(&self, ready: bool) {
        self.freshness.ready.store(ready, Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Appends the watch-event lines (`{"type", "object"}`; other lines skipped) to the
    /// ledger as the watcher would: one batch under the write lock, then a flush.
    pub fn ingest(&mut self, lines: &str) -> usize {
        let changes = watch_event_changes(lines);
        self.ingest_tick += 1;
        let changes = changes.into_iter().map(schemas::Change::Object);
        let committed = self.ledger.commit(changes, at(self.ingest_tick)).unwrap();
        committed.outcomes.len()
    }

    /// Ingests watch events given as JSON values.
    pub fn ingest_events(&mut self, events: &[Value]) {
        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
        self.ingest(&lines);
    }

    pub fn head_seq(&self) -> u64 {
        self.ledger.view().head().seq
    }

    pub async fn check(&self, request: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/v1/identity/check"))
            .bearer_auth(TOKEN)
            .json(request)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Asserts a check's decision and reason (`None` for allow).
    pub async fn expect(&self, request: &Value, decision: &str, reason: Option<&str>) -> Value {
        let (status, body) = self.check(request).await;
        assert_eq!(
            (body["decision"].as_str(), body["reason"].as_str()),
            (Some(decision), reason),
            "{request}: {body}"
        );
        let expected_status = if decision == "not_ready" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected_status, "{body}");
        body
    }

    /// The `host:port` the server listens on.
    pub fn address(&self) -> String {
        self.base
            .split("://")
            .nth(1)
            .unwrap()
            .replace("localhost", "127.0.0.1")
    }

    /// Sends `bytes` on a new plain connection, half-closes it unless `keep_open`, and
    /// reads until the server closes it (or `patience` passes): every response, as text.
    /// (The service drops a request whose client half-closes before it is answered, as
    /// hyper does: keep it open, with `Connection: close`, to read answers.)
    pub async fn raw(&self, bytes: &[u8], keep_open: bool, patience: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.address())
            .await
            .unwrap();
        let (mut reader, mut writer) = stream.split();
        let send = async {
            // The server may answer and close before everything is written.
            let _ = writer.write_all(bytes).await;
            if !keep_open {
                let _ = writer.shutdown().await;
            }
        };
        let receive = async {
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(patience, reader.read_to_end(&mut answer)).await;
            answer
        };
        let ((), answer) = tokio::join!(send, receive);
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }
}

/// The responses in a raw answer: (status, headers lowercased, body).
pub fn responses(text: &str) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {head:?}"));
        let lower = head.to_ascii_lowercase();
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse().unwrap());
        let body_start = end + 4;
        let body_end = (body_start + length).min(rest.len());
        out.push((status, lower, rest[body_start..body_end].to_string()));
        rest = &rest[body_end..];
    }
    out
}

/// The test clock: [`EPOCH`] plus `seconds`.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(EPOCH + seconds, 0).unwrap()
}

/// A self-signed certificate for `localhost` and its key, as PEM files.
fn self_signed(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// The fixture files of the workspace.
pub fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}
