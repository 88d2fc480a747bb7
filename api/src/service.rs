//! The service: its options, the freshness interface the binary implements over the
//! watchers, the shared state behind every handler, and the accept loop (plain or TLS;
//! each connection is served by [`crate::conn`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger::{LedgerView, SharedLedger};
use schemas::checkpoint::SignerKey;

use crate::auth::TokenStore;
use crate::denials::{Denials, MAX_PENDING_DENIALS};
use crate::freshness::Freshness;
use crate::metrics::Metrics;
use crate::ApiError;

/// How `/v1` requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` with a token listed in this file (`--api-token-file`):
    /// one per line, blank lines and `#` comments ignored, re-read when the file changes.
    Tokens(PathBuf),
    /// No authentication at all (`--insecure-no-auth`).
    Insecure,
}

/// PEM files for TLS (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Authentication of `/v1`.
    pub auth: Auth,
    /// TLS, if any (plain HTTP otherwise).
    pub tls: Option<TlsFiles>,
    /// The largest request body accepted, in bytes (413 past it).
    pub body_limit: usize,
    /// The longest a request may take to produce its response head (408 past it).
    pub request_timeout: Duration,
    /// The longest a connection may go without a complete request head while no request
    /// is in process: from the accept (the TLS handshake included) to its first request
    /// head, and on a keep-alive connection from the end of the last response to the next
    /// head. Past it the connection is closed. Default 10 s.
    pub header_timeout: Duration,
    /// The longest a connection may wait to write a response to a client that reads
    /// nothing: past it the connection is closed, and what its response was written from
    /// (a page of entries, a replayed state) is freed. Default 60 s.
    pub stalled_write: Duration,
    /// At most this many connections are open at once; at the limit the service stops
    /// accepting until one closes (new clients wait in the listen backlog). Lowered at
    /// start to what the descriptor limit allows: the soft `RLIMIT_NOFILE` less an eighth
    /// of it (at least 64) kept for the ledger, the watchers and files. Default 4,096.
    pub max_connections: usize,
    /// At most this many requests are processed at once; the rest wait (within the timeout).
    pub concurrency: usize,
    /// At most this many states "as of" an earlier point (`GET /v1/state`) are replayed
    /// and written at once: each holds a second projection for as long as its response
    /// takes, so this bounds their memory. The rest wait (within the timeout). Default 2.
    pub max_replays: usize,
    /// How often pending denial records of closed minutes are appended to the ledger.
    pub denial_flush: Duration,
    /// Signed checkpoints, if the service has a signing key.
    pub checkpoints: Option<CheckpointSigning>,
}

/// When and how the service signs checkpoints of its Merkle tree.
#[derive(Debug, Clone)]
pub struct CheckpointSigning {
    /// The Ed25519 signed-note key.
    pub key: SignerKey,
    /// The checkpoint origin line (the log's identity; by convention the key name).
    pub origin: String,
    /// Sign once this many entries were appended since the last checkpoint...
    pub every_entries: u64,
    /// ...or once this long has passed with any new entry.
    pub interval: Duration,
}

impl ServeOptions {
    /// Options with this authentication and the defaults: no TLS, 64 KiB bodies, 10 s
    /// request timeout, 10 s header timeout, 60 s stalled writes, 4,096 connections, 1,024
    /// concurrent requests, 2 concurrent replays, denial records flushed every 60 s.
    pub fn new(auth: Auth) -> ServeOptions {
        ServeOptions {
            auth,
            tls: None,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            stalled_write: Duration::from_secs(60),
            max_connections: 4096,
            concurrency: 1024,
            max_replays: 2,
            denial_flush: Duration::from_secs(60),
            checkpoints: None,
        }
    }
}

/// Where the service reads the time (the real clock, or a test's).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The HTTP API over one ledger. Cheap to clone: every clone shares the same state.
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

/// What every handler shares.
pub(crate) struct Inner {
    pub(crate) ledger: SharedLedger,
    pub(crate) freshness: Arc<dyn Freshness>,
    pub(crate) options: ServeOptions,
    pub(crate) tokens: Option<TokenStore>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) metrics: Metrics,
    pub(crate) denials: Arc<Denials>,
    pub(crate) clock: Clock,
    /// One permit per `/v1` request in process (the concurrency limit).
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// One permit per replayed state being built or written (`max_replays`).
    pub(crate) replays: Arc<tokio::sync::Semaphore>,
    /// One permit per export bundle being written ([`MAX_BUNDLES`]).
    pub(crate) bundles: Arc<tokio::sync::Semaphore>,
}

/// Export bundles written at once: each spools its entries to the temporary disk.
const MAX_BUNDLES: usize = 1;

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over a shared ledger (the watcher appends to it under the write lock)
    /// and the watchers' freshness. Reads the token file and the TLS files now, so a
    /// misconfiguration fails at start.
    pub fn new(
        ledger: SharedLedger,
        freshness: Arc<dyn Freshness>,
        options: ServeOptions,
    ) -> Result<Service, ApiError> {
        Service::with_clock(ledger, freshness, options, Arc::new(Utc::now))
    }

    /// Like [`Service::new`], reading the time from `clock` (denial records' minutes and
    /// their entries' `observed_at`).
    pub fn with_clock(
        ledger: SharedLedger,
        freshness: Arc<dyn Freshness>,
        options: ServeOptions,
        clock: Clock,
    ) -> Result<Service, ApiError> {
        if options.concurrency == 0 || options.max_replays == 0 {
            return Err(ApiError::Config(
                "the concurrency limit and the replay limit must be at least 1".into(),
            ));
        }
        if options.max_connections == 0 {
            return Err(ApiError::Config(
                "the connection limit must be at least 1".into(),
            ));
        }
        if options.request_timeout.is_zero()
            || options.header_timeout.is_zero()
            || options.denial_flush.is_zero()
        {
            return Err(ApiError::Config(
                "the request timeout, the header timeout and the denial flush interval must be positive".into(),
            ));
        }
        let tokens = match &options.auth {
            Auth::Tokens(path) => Some(TokenStore::open(path.clone())?),
            Auth::Insecure => None,
        };
        let tls = options.tls.as_ref().map(tls_config).transpose()?;
        let denials = Arc::new(Denials::new(MAX_PENDING_DENIALS));
        let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
        let replays = Arc::new(tokio::sync::Semaphore::new(options.max_replays));
        let bundles = Arc::new(tokio::sync::Semaphore::new(MAX_BUNDLES));
        let metrics = Metrics::new(
            ledger.reader(),
            Arc::clone(&freshness),
            Arc::clone(&denials),
        );
        Ok(Service {
            inner: Arc::new(Inner {
                ledger,
                freshness,
                options,
                tokens,
                tls,
                metrics,
                denials,
                clock,
                permits,
                replays,
                bundles,
            }),
        })
    }

    /// The ledger's origin: the checkpoint origin when the service signs, else
    /// `claim-ledger` (the CloudEvents `source` of exports).
    pub fn origin(&self) -> &str {
        self.inner
            .options
            .checkpoints
            .as_ref()
            .map_or("claim-ledger", |signing| signing.origin.as_str())
    }

    /// Signs a checkpoint of the durable head now (with the configured key), unless the
    /// latest one already covers it; `None` without a signing key or with an empty ledger.
    pub async fn sign_checkpoint(&self) -> Result<Option<ledger::StoredCheckpoint>, ApiError> {
        let Some(signing) = self.inner.options.checkpoints.clone() else {
            return Ok(None);
        };
        let service = self.clone();
        let signed = tokio::task::spawn_blocking(move || {
            service.inner.ledger.with_writer(|ledger| {
                // Only the writer of a shared ledger signs: a follower's tree is the writer's.
                if ledger.tree_size() == 0 || !ledger.is_writer() {
                    return Ok(None);
                }
                ledger
                    .sign_checkpoint(&signing.key, &signing.origin)
                    .map(Some)
                    .map_err(ApiError::from)
            })
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("the checkpoint task failed: {e}")))??;
        if let Some(signed) = &signed {
            self.inner.metrics.checkpoint_signed(signed.checkpoint.size);
        }
        Ok(signed)
    }

    /// Signs a checkpoint at start when the head is past the latest one, then whenever
    /// `every_entries` entries were appended or `interval` passed with new entries.
    pub(crate) async fn checkpoint_loop(self, signing: CheckpointSigning) {
        let poll = signing.interval.min(Duration::from_secs(1));
        let mut interval = tokio::time::interval(poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut signed_size: Option<u64> = None;
        let mut signed_at = tokio::time::Instant::now();
        loop {
            interval.tick().await;
            let head = match self.read() {
                Ok(ledger) if ledger.is_writer() => ledger.durable_seq(),
                // A follower of a shared ledger signs nothing; if it becomes the writer it
                // signs from then on.
                Ok(_) | Err(_) => continue,
            };
            let due = match signed_size {
                None => head > 0,
                Some(size) => {
                    head > size
                        && (head - size >= signing.every_entries
                            || signed_at.elapsed() >= signing.interval)
                }
            };
            if !due {
                continue;
            }
            match self.sign_checkpoint().await {
                Ok(Some(signed)) => {
                    signed_size = Some(signed.checkpoint.size);
                    signed_at = tokio::time::Instant::now();
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot sign a checkpoint"),
            }
        }
    }

    /// Appends every pending denial record (closed minutes and the current one) to the
    /// ledger and flushes it; returns how many entries were appended. `serve` calls it at
    /// shutdown.
    pub async fn flush_denials(&self) -> Result<usize, ApiError> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.flush_denials_blocking(None))
            .await
            .map_err(|e| ApiError::Unavailable(format!("the denial flush task failed: {e}")))?
    }

    /// Every `denial_flush`, appends the records of the minutes that have closed.
    pub(crate) async fn flush_loop(self) {
        let mut interval = tokio::time::interval(self.inner.options.denial_flush);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let service = self.clone();
            let before = crate::denials::minute_of((self.inner.clock)());
            let result =
                tokio::task::spawn_blocking(move || service.flush_denials_blocking(Some(before)))
                    .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record denied checks"),
                Err(e) => tracing::warn!(error = %e, "the denial flush task failed"),
            }
        }
    }

    /// Takes the pending records (of minutes before `before`, or all) and appends them in
    /// one batch, then flushes: the same write-then-flush under the write lock as the
    /// watcher, so readers never see records that are not durable.
    fn flush_denials_blocking(&self, before: Option<i64>) -> Result<usize, ApiError> {
        let (records, overflow) = self.inner.denials.take(before);
        if records.is_empty() && overflow.is_empty() {
            return Ok(0);
        }
        let count = records.len() + overflow.len();
        if !self.read()?.is_writer() {
            // Only the writer of a shared ledger appends: a follower's denials are counted
            // in its metrics and logged here, not recorded.
            let checks: u64 = records.iter().map(|r| r.count).sum::<u64>()
                + overflow.iter().map(|o| o.count).sum::<u64>();
            tracing::warn!(
                records = count,
                checks,
                "denied checks answered by this follower are not recorded in the shared ledger (only the writer appends)"
            );
            self.inner.metrics.denial_flush_failed(count);
            return Ok(0);
        }
        let changes: Vec<schemas::Change> = records
            .into_iter()
            .map(schemas::Change::CheckDenied)
            .chain(overflow.into_iter().map(|aggregate| {
                schemas::Change::CheckDeniedOverflow(schemas::CheckDeniedOverflow {
                    reason: aggregate.reason,
                    minute: aggregate.minute,
                    count: aggregate.count,
                    first_pod_uid: aggregate.first_pod_uid,
                    last_pod_uid: aggregate.last_pod_uid,
                    uid_digest: schemas::Hash(aggregate.uid_digest),
                })
            }))
            .collect();
        let started = std::time::Instant::now();
        let now = (self.inner.clock)();
        match self.inner.ledger.commit(changes, now) {
            Ok(_) => {
                self.inner
                    .metrics
                    .denial_flushed(count, started.elapsed().as_secs_f64());
                Ok(count)
            }
            Err(e) => {
                self.inner.metrics.denial_flush_failed(count);
                Err(e.into())
            }
        }
    }

    /// The ledger as of its last durable flush, for reading: never waits for the writer.
    pub(crate) fn read(&self) -> Result<Arc<LedgerView>, ApiError> {
        Ok(self.inner.ledger.view())
    }

    /// Freshness check 7 for this replica, `None` when it holds, else why not in words for
    /// a `not_ready` answer: the watchers are synced, the ledger was verified at open (not
    /// a forensic, read-only open of a corrupt ledger), and it has not stopped (a writer
    /// whose flush failed published entries the disk may lack).
    pub(crate) fn unready_because(&self, ledger: &LedgerView) -> Option<String> {
        if let Some(why) = ledger.stopped() {
            return Some(format!("the ledger stopped writing: {why}"));
        }
        if ledger.corruption().is_some() {
            return Some("the ledger failed verification at open".into());
        }
        (!self.inner.freshness.ready()).then(|| "the watchers are not synced".into())
    }
}

/// A rustls server configuration from PEM files (ring provider; HTTP/2 and HTTP/1.1).
fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ApiError::Config(format!(
                "cannot read the TLS certificate {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ApiError::Config(format!(
            "no certificate in {}",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        ApiError::Config(format!(
            "cannot read the TLS key {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ApiError::Config(format!("invalid TLS certificate or key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
