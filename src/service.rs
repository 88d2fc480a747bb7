//! Wiring for the long-running commands (`serve`, and `demo` with the `sim` feature): binds
//! the API's listener, starts the watcher and the API (as the writer of the ledger or as a
//! follower replica of a shared one) and stops them in order on Ctrl-C, so the ledger is
//! flushed and the pending denial records are appended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{
    Auth, FlushStats, Freshness, ReplicaReport, ServeOptions, Service, TlsFiles, WatchCounters,
    WriterBacklog,
};
use ledger::Ledger;
use tokio::net::TcpListener;
use tokio::sync::watch;
use watcher::{Readiness, SharedLedger, WatchOptions};

use crate::error::CommandError;

/// The watchers' readiness, as the API asks for it; for a replica that follows the
/// writer of a shared ledger, whether it has caught up with the log lately.
struct WatchFreshness {
    watch: Readiness,
    replica: Option<Arc<std::sync::Mutex<ReplicaState>>>,
    /// This process, as the writer publishes itself to its followers.
    identity: String,
}

/// Where a replica of a shared ledger stands.
#[derive(Debug, Clone)]
enum ReplicaState {
    /// Following the writer: when it last read the whole log, how many entries that
    /// round applied, the head it has applied, and the writer's last published status
    /// with when (by this replica's clock) it last changed.
    Following {
        caught_up: Option<std::time::Instant>,
        applied: u64,
        head_seq: u64,
        unready_after: Duration,
        writer: Option<(ledger::WriterStatus, std::time::Instant)>,
    },
    /// The writer: its watchers decide readiness.
    Writing,
}

impl WatchFreshness {
    fn replica_state(&self) -> Option<ReplicaState> {
        self.replica.as_ref().map(|state| {
            state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }
}

impl Freshness for WatchFreshness {
    fn ready(&self) -> bool {
        match self.replica_state() {
            // A follower answers only while it has read the whole log lately and a live
            // writer records the cluster into it: without one, the log stops moving and
            // its answers go stale.
            Some(ReplicaState::Following {
                caught_up,
                unready_after,
                writer,
                ..
            }) => {
                caught_up.is_some_and(|at| at.elapsed() <= unready_after)
                    && writer.is_some_and(|(status, changed)| {
                        status.ready && changed.elapsed() <= unready_after
                    })
            }
            Some(ReplicaState::Writing) | None => self.watch.is_ready(),
        }
    }

    fn report(&self) -> serde_json::Value {
        let streams = serde_json::to_value(self.watch.streams()).unwrap_or_default();
        let backlog = self.watch.backlog();
        let lagging = backlog.age_seconds > backlog.limit_seconds;
        let backlog = serde_json::json!({
            "events": backlog.events,
            "age_seconds": backlog.age_seconds,
            "limit_seconds": backlog.limit_seconds,
            "reason": lagging.then_some("observed changes have waited longer than the backlog bound to become durable: checks answer not_ready"),
        });
        match self.replica_state() {
            None => serde_json::json!({"role": "writer", "streams": streams, "backlog": backlog}),
            Some(ReplicaState::Writing) => serde_json::json!({
                "role": "writer",
                "identity": self.identity,
                "streams": streams,
                "backlog": backlog,
            }),
            Some(ReplicaState::Following {
                caught_up,
                applied,
                head_seq,
                unready_after,
                writer,
            }) => serde_json::json!({
                "role": "follower",
                "identity": self.identity,
                "caught_up_ms_ago": caught_up.map(|at| at.elapsed().as_millis() as u64),
                "last_applied": applied,
                "head_seq": head_seq,
                "writer": writer.as_ref().map(|(status, _)| status.identity.clone()),
                "lag_entries": writer.as_ref().map(|(status, _)| status.durable_seq.saturating_sub(head_seq)),
                "writer_ready": writer.as_ref().map(|(status, _)| status.ready),
                "writer_seen_ms_ago": writer.as_ref().map(|(_, at)| at.elapsed().as_millis() as u64),
                "reason": match (caught_up, &writer) {
                    (None, _) => "not caught up with the writer's log yet",
                    (_, None) => "no writer has published its status",
                    (_, Some((_, at))) if at.elapsed() > unready_after => "no live writer: its status has not changed lately",
                    (_, Some((status, _))) if !status.ready => "the writer's watchers are not ready",
                    _ => "following the writer of the shared log",
                },
            }),
        }
    }

    fn replica(&self) -> Option<ReplicaReport> {
        Some(match self.replica_state()? {
            ReplicaState::Writing => ReplicaReport {
                follower: false,
                writer: Some(self.identity.clone()),
                ..ReplicaReport::default()
            },
            ReplicaState::Following {
                caught_up,
                head_seq,
                writer,
                ..
            } => ReplicaReport {
                follower: true,
                writer: writer.as_ref().map(|(status, _)| status.identity.clone()),
                lag_entries: writer
                    .as_ref()
                    .map(|(status, _)| status.durable_seq.saturating_sub(head_seq)),
                caught_up_age_seconds: caught_up.map(|at| at.elapsed().as_secs_f64()),
                writer_status_age_seconds: writer.map(|(_, at)| at.elapsed().as_secs_f64()),
            },
        })
    }

    fn counters(&self) -> WatchCounters {
        let counters = self.watch.counters();
        WatchCounters {
            watch_errors: counters.watch_errors,
            relists: counters.relists,
            resync_deletions: counters.resync_deletions,
            rejected_objects: counters.rejected_objects,
        }
    }

    fn backlog(&self) -> Option<WriterBacklog> {
        let backlog = self.watch.backlog();
        Some(WriterBacklog {
            events: backlog.events as u64,
            age_seconds: backlog.age_seconds,
            limit_seconds: backlog.limit_seconds,
        })
    }

    fn flushes(&self) -> Option<FlushStats> {
        let counters = self.watch.counters();
        Some(FlushStats {
            count: counters.flushes,
            seconds: counters.flush_micros as f64 / 1e6,
        })
    }
}

/// A shutdown signal every task can wait on: set by Ctrl-C or by the demo's end.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (sender, Shutdown(receiver))
    }

    /// Resolves once shutdown is asked for.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Triggers `sender` on Ctrl-C (SIGINT) or SIGTERM.
pub fn stop_on_signal(sender: watch::Sender<bool>) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        let _ = sender.send(true);
    });
}

/// What `serve` and `demo` share: the HTTP API's configuration.
pub struct ApiArgs {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Authentication.
    pub auth: Auth,
    /// TLS files, if any.
    pub tls: Option<TlsFiles>,
    /// Checkpoint signing, if any.
    pub checkpoints: Option<api::CheckpointSigning>,
    /// How long a connection may take to send a complete request head (the API's
    /// default when `None`).
    pub header_timeout: Option<Duration>,
    /// Most connections held at once (the API's default, fitted to the descriptor
    /// limit, when `None`).
    pub max_connections: Option<usize>,
    /// Most replayed states written at once (the API's default when `None`).
    pub max_replays: Option<usize>,
}

/// The parts of a running service.
pub struct Running {
    ledger: SharedLedger,
    /// The API's state, to sign the last checkpoint once the watcher has stopped.
    service: Service,
    api: tokio::task::JoinHandle<Result<(), api::ApiError>>,
    watcher: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
    /// Where the API listens.
    pub address: SocketAddr,
}

/// Starts the watcher (or, for a follower replica, the follower until it is promoted) and
/// the HTTP API on `ledger`; both stop at `shutdown`.
pub async fn start(
    client: kube::Client,
    ledger: Ledger,
    options: WatchOptions,
    api_args: ApiArgs,
    shutdown: Shutdown,
) -> Result<Running, String> {
    // A ledger in a shared database has replicas: say which role this one has.
    let shared = ledger.store_kind() == "postgres";
    let following = !ledger.is_writer();
    let ledger = SharedLedger::new(ledger);
    let readiness = Readiness::new(options.unready_after);
    let replica = shared.then(|| {
        Arc::new(std::sync::Mutex::new(match following {
            true => ReplicaState::Following {
                caught_up: None,
                applied: 0,
                head_seq: 0,
                unready_after: options.unready_after,
                writer: None,
            },
            false => ReplicaState::Writing,
        }))
    });
    // How this process names itself to the other replicas (published and shown alike).
    let identity = replica_identity();
    let mut serve_options = ServeOptions::new(api_args.auth);
    serve_options.tls = api_args.tls;
    if let Some(timeout) = api_args.header_timeout {
        serve_options.header_timeout = timeout;
    }
    if let Some(limit) = api_args.max_connections {
        serve_options.max_connections = limit;
    }
    if let Some(limit) = api_args.max_replays {
        serve_options.max_replays = limit;
    }
    serve_options.checkpoints = api_args.checkpoints;
    let service = Service::new(
        ledger.clone(),
        Arc::new(WatchFreshness {
            watch: readiness.clone(),
            replica: replica.clone(),
            identity: identity.clone(),
        }),
        serve_options,
    )
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(api_args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", api_args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let watcher = tokio::spawn({
        let ledger = ledger.clone();
        let shutdown = shutdown.clone();
        async move {
            if let Some(replica) = replica.filter(|_| following) {
                if !follow_until_promoted(&ledger, &replica, shutdown.clone()).await? {
                    return Ok(());
                }
            }
            let publishing = publish_writer_status(&ledger, readiness.clone(), shared, identity);
            tokio::select! {
                watched = watcher::run(client, ledger.clone(), readiness, options, shutdown.wait()) => watched,
                deposed = until_deposed(&ledger) => deposed,
                never = publishing => match never {},
            }
        }
    });
    let api = tokio::spawn(service.clone().serve(listener, shutdown.wait()));
    Ok(Running {
        ledger,
        service,
        api,
        watcher,
        address,
    })
}

/// How often a follower reads the shared log when no commit was notified (a database
/// notifies its followers of every commit; this poll covers a lost notification
/// connection), and how often it tries for the writer's lock.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
const PROMOTE_EVERY: Duration = Duration::from_secs(1);

/// The longest single blocking wait for a notification: a shutdown waits for it to end.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// The follower's fallback poll: [`FOLLOW_EVERY`], unless `CLAIM_LEDGER_FOLLOW_POLL_MS`
/// says otherwise (tests lengthen it to show that notifications alone keep a follower
/// current; an operator may, to read the database less often). Promotion is tried only
/// when the follower wakes, so a poll far above [`PROMOTE_EVERY`] also slows a takeover
/// once the writer has gone quiet.
fn follow_poll() -> Duration {
    match std::env::var("CLAIM_LEDGER_FOLLOW_POLL_MS") {
        Err(_) => FOLLOW_EVERY,
        Ok(text) => match text.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                tracing::warn!(value = %text, "CLAIM_LEDGER_FOLLOW_POLL_MS is not a positive number of milliseconds; polling every 200 ms");
                FOLLOW_EVERY
            }
        },
    }
}

/// Waits until the shared store notifies a commit or `poll` has passed; `false` when shut
/// down meanwhile. The blocking wait is cut in slices so that a shutdown never waits
/// long for it.
async fn wait_for_change(ledger: &SharedLedger, poll: Duration, shutdown: &Shutdown) -> bool {
    let deadline = tokio::time::Instant::now() + poll;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let shared = ledger.clone();
        let slice = left.min(WAIT_SLICE);
        let waited = tokio::task::spawn_blocking(move || shared.wait_for_change(slice));
        tokio::select! {
            woke = waited => if woke.unwrap_or(false) { return true },
            _ = shutdown.clone().wait() => return false,
        }
    }
}

/// A replica that is not the writer: applies the writer's entries as they are committed
/// (woken by the database's notification of each commit, else polling; answering checks
/// from them) and takes over when the writer's lock frees. Returns
/// whether it became the writer (`false` when shut down first). A log that does not
/// verify stops it (and so the service): it never answers from a log it cannot trust.
async fn follow_until_promoted(
    ledger: &SharedLedger,
    replica: &Arc<std::sync::Mutex<ReplicaState>>,
    shutdown: Shutdown,
) -> Result<bool, watcher::WatcherError> {
    let mut last_try = std::time::Instant::now() - PROMOTE_EVERY;
    let poll = follow_poll();
    loop {
        let promote = last_try.elapsed() >= PROMOTE_EVERY;
        if promote {
            last_try = std::time::Instant::now();
        }
        let shared = ledger.clone();
        let round = tokio::task::spawn_blocking(move || {
            shared.with_writer(|ledger| {
                let applied = ledger.follow()?;
                let head_seq = ledger.head().seq;
                let status = ledger.writer_status()?;
                let promoted = promote && ledger.try_promote()?;
                Ok::<_, ledger::LedgerError>((applied, head_seq, status, promoted))
            })
        })
        .await
        .map_err(|e| watcher::WatcherError::from(ledger::LedgerError::Poisoned(e.to_string())))?;
        let (applied, applied_head, status, promoted) = match round {
            Ok(round) => round,
            // The database is unreachable for now (a restart, a dropped connection): this
            // replica stops being caught up, so it soon answers not_ready, and tries again.
            Err(ledger::LedgerError::Storage(e)) if e.is_unavailable() => {
                tracing::warn!(error = %e, "cannot read the shared log; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(PROMOTE_EVERY) => continue,
                    _ = shutdown.clone().wait() => return Ok(false),
                }
            }
            Err(e) => return Err(e.into()),
        };
        {
            let mut state = replica
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &mut *state {
                _ if promoted => *state = ReplicaState::Writing,
                ReplicaState::Following {
                    caught_up,
                    applied: last,
                    head_seq,
                    writer,
                    ..
                } => {
                    let now = std::time::Instant::now();
                    *caught_up = Some(now);
                    *last = applied;
                    *head_seq = applied_head;
                    if let Some(status) = status {
                        if writer.as_ref().is_none_or(|(seen, _)| *seen != status) {
                            *writer = Some((status, now));
                        }
                    }
                }
                ReplicaState::Writing => {}
            }
        }
        if promoted {
            tracing::warn!("this replica is now the writer of the shared ledger");
            return Ok(true);
        }
        if !wait_for_change(ledger, poll, &shutdown).await {
            return Ok(false);
        }
    }
}

/// How often the writer of a shared ledger publishes its status for the followers.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The writer of a shared ledger tells its followers, every second, that it lives and
/// whether its watchers are ready (they answer only while it does). Never returns; a
/// failed publish is logged (a deposed writer is stopped by [`until_deposed`]).
async fn publish_writer_status(
    ledger: &SharedLedger,
    readiness: Readiness,
    shared: bool,
    identity: String,
) -> std::convert::Infallible {
    if !shared {
        // A ledger of its own has no followers to tell.
        return std::future::pending().await;
    }
    let mut beat = 0u64;
    loop {
        beat += 1;
        let (ledger, ready, identity) = (ledger.view(), readiness.is_ready(), identity.clone());
        let published = tokio::task::spawn_blocking(move || {
            ledger.publish_writer_status(beat, ready, &identity)
        })
        .await;
        if let Ok(Err(e)) = published {
            tracing::warn!(error = %e, "cannot publish the writer's status");
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
}

/// Resolves (with the reason) once this replica is no longer the writer of its ledger: a
/// shared ledger's writer whose database session (and lock) ended, or that was fenced
/// off, must stop answering as if it still recorded the cluster.
async fn until_deposed(ledger: &SharedLedger) -> Result<(), watcher::WatcherError> {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writing = ledger.view().is_writer();
        if !writing {
            tracing::error!(
                "deposed: this replica no longer holds the ledger's writer lock; stopping"
            );
            return Err(watcher::WatcherError::from(ledger::LedgerError::Deposed(
                "this replica no longer holds the shared ledger's writer lock".into(),
            )));
        }
    }
}

/// Waits for the watcher and the API to stop, flushes the ledger and returns its head (seq,
/// hash); a watcher that failed stops the API first.
pub async fn finish(running: Running, stop: &watch::Sender<bool>) -> Result<(u64, String), String> {
    let watched = running.watcher.await.map_err(|e| e.to_string())?;
    if watched.is_err() {
        // Nothing records the cluster any more (a deposed writer, a failed write): the
        // API must not go on answering from this ledger.
        let _ = stop.send(true);
    }
    let served = running.api.await.map_err(|e| e.to_string())?;
    let head = running
        .ledger
        .with_writer(|ledger| ledger.flush().map(|_| ledger.head()))
        .map_err(|e| e.to_string())?;
    watched.map_err(|e| format!("watcher: {e}"))?;
    served.map_err(|e| format!("api: {e}"))?;
    // The API signed at its own shutdown, while the watcher may still have been writing
    // its queue: the entries written since get a checkpoint too, so a successor can prove
    // it extends everything this process appended (nothing is signed when none were).
    running
        .service
        .sign_checkpoint()
        .await
        .map_err(|e| format!("the final checkpoint: {e}"))?;
    Ok((head.seq, head.hash.to_hex()))
}

/// `claim-ledger serve`: watcher + ledger + HTTP API against the cluster of the standard
/// kube config resolution (KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn run_serve(
    ledger: Ledger,
    options: WatchOptions,
    api_args: ApiArgs,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    // A stream that cannot connect, or connects to a server that says nothing, must
    // report an error often enough for readiness to tell it from one that recovered
    // quietly (`watcher::live::CONNECT_TIMEOUT`, `READ_TIMEOUT`).
    config.connect_timeout = Some(watcher::live::CONNECT_TIMEOUT);
    config.read_timeout = Some(watcher::live::READ_TIMEOUT);
    config.reset_reader_on_write = true;
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let running = start(client, ledger, options, api_args, shutdown).await?;
    println!("claim-ledger API listening on http://{}", running.address);
    let (seq, hash) = finish(running, &stop).await?;
    println!("stopped; ledger head seq {seq} hash {hash}");
    Ok(())
}

/// A multi-threaded runtime for the commands that run async code.
pub fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Input(format!("cannot start the runtime: {e}")))
}

/// Runs a long-running command on a multi-threaded runtime until Ctrl-C or SIGTERM (or
/// until `body` triggers the stop it is given).
pub fn run_until_signal<F, Fut>(body: F) -> Result<(), CommandError>
where
    F: FnOnce(watch::Sender<bool>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    runtime()?
        .block_on(async {
            let (stop, shutdown) = Shutdown::new();
            stop_on_signal(stop.clone());
            body(stop, shutdown).await
        })
        .map_err(CommandError::Input)
}

/// This process as replicas name it: the host name (a pod's name in Kubernetes) and the
/// process id.
fn replica_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}
