//! Wiring for the long-running commands: `sim`, `serve` and `demo`. Each binds its
//! listeners, starts the library parts (simulator, watcher, API) and stops them in order
//! on Ctrl-C, so the ledger is flushed and the pending denial records are appended.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::{
    Auth, FlushStats, Freshness, ServeOptions, Service, TlsFiles, WatchCounters, WriterBacklog,
};
use ledger::Ledger;
use sim::{Propagation, SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::sync::watch;
use watcher::{Readiness, SharedLedger, WatchOptions};

/// The watchers' readiness, as the API asks for it; for a replica that follows the
/// writer of a shared ledger, whether it has caught up with the log lately.
struct WatchFreshness {
    watch: Readiness,
    replica: Option<Arc<std::sync::Mutex<ReplicaState>>>,
}

/// Where a replica of a shared ledger stands.
#[derive(Debug, Clone, Copy)]
enum ReplicaState {
    /// Following the writer: when it last read the whole log, how many entries that
    /// round applied, and the writer's last published status with when (by this
    /// replica's clock) it last changed.
    Following {
        caught_up: Option<std::time::Instant>,
        applied: u64,
        unready_after: Duration,
        writer: Option<(ledger::WriterStatus, std::time::Instant)>,
    },
    /// The writer: its watchers decide readiness.
    Writing,
}

impl WatchFreshness {
    fn replica(&self) -> Option<ReplicaState> {
        self.replica.as_ref().map(|state| {
            *state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }
}

impl Freshness for WatchFreshness {
    fn ready(&self) -> bool {
        match self.replica() {
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
        match self.replica() {
            None => serde_json::json!({"role": "writer", "streams": streams, "backlog": backlog}),
            Some(ReplicaState::Writing) => {
                serde_json::json!({"role": "writer", "streams": streams, "backlog": backlog})
            }
            Some(ReplicaState::Following {
                caught_up,
                applied,
                unready_after,
                writer,
            }) => serde_json::json!({
                "role": "follower",
                "caught_up_ms_ago": caught_up.map(|at| at.elapsed().as_millis() as u64),
                "last_applied": applied,
                "writer_ready": writer.map(|(status, _)| status.ready),
                "writer_seen_ms_ago": writer.map(|(_, at)| at.elapsed().as_millis() as u64),
                "reason": match (caught_up, writer) {
                    (None, _) => "not caught up with the writer's log yet",
                    (_, None) => "no writer has published its status",
                    (_, Some((_, at))) if at.elapsed() > unready_after => "no live writer: its status has not changed lately",
                    (_, Some((status, _))) if !status.ready => "the writer's watchers are not ready",
                    _ => "following the writer of the shared log",
                },
            }),
        }
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

/// A scenario file that drives the served simulator (`sim --scenario`).
pub struct SimScenario {
    /// The file, for the report.
    pub path: PathBuf,
    /// The file, loaded and validated.
    pub scenario: crate::scenario::Scenario,
    /// Stop serving once the steps are done instead of at Ctrl-C.
    pub exit_after: bool,
}

/// `claim-ledger sim`: the cluster simulator alone, optionally driven through a scenario
/// file's cluster steps. `Ok(false)` when a scenario step could not be carried out.
pub async fn run_sim(
    listen: SocketAddr,
    kubeconfig_out: Option<PathBuf>,
    config: SimConfig,
    scenario: Option<SimScenario>,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<bool, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let sim = Simulator::new(config);
    if let Some(path) = &kubeconfig_out {
        std::fs::write(path, sim.kubeconfig(&url))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let server = tokio::spawn({
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        async move { sim.serve(listener, shutdown.wait()).await }
    });
    println!("cluster simulator listening on {url}");
    if let Some(path) = &kubeconfig_out {
        println!(
            "kubeconfig written to {} (kubectl --kubeconfig {0} get sandboxes -A)",
            path.display()
        );
    }
    let mut carried_out = true;
    if let Some(file) = scenario {
        let steps = crate::scenario::drive(&file.path, &file.scenario, sim);
        let finished = tokio::select! {
            ok = steps => Some(ok),
            _ = shutdown.clone().wait() => None,
        };
        match finished {
            None => println!("interrupted before the scenario's last step"),
            Some(ok) => {
                carried_out = ok;
                let ended = if ok {
                    "scenario finished"
                } else {
                    "scenario stopped at a step that could not be carried out"
                };
                if file.exit_after {
                    println!("{ended}; stopping");
                    let _ = stop.send(true);
                } else {
                    println!("{ended}; serving until Ctrl-C");
                }
            }
        }
    }
    server
        .await
        .map_err(|e| format!("simulator: {e}"))?
        .map_err(|e| format!("simulator: {e}"))?;
    Ok(carried_out)
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
}

/// The parts of a running service.
struct Running {
    ledger: SharedLedger,
    api: tokio::task::JoinHandle<Result<(), api::ApiError>>,
    watcher: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
    address: SocketAddr,
}

async fn start(
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
                unready_after: options.unready_after,
                writer: None,
            },
            false => ReplicaState::Writing,
        }))
    });
    let mut serve_options = ServeOptions::new(api_args.auth);
    serve_options.tls = api_args.tls;
    if let Some(timeout) = api_args.header_timeout {
        serve_options.header_timeout = timeout;
    }
    if let Some(limit) = api_args.max_connections {
        serve_options.max_connections = limit;
    }
    serve_options.checkpoints = api_args.checkpoints;
    let service = Service::new(
        ledger.clone(),
        Arc::new(WatchFreshness {
            watch: readiness.clone(),
            replica: replica.clone(),
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
            let publishing = publish_writer_status(&ledger, readiness.clone(), shared);
            tokio::select! {
                watched = watcher::run(client, ledger.clone(), readiness, options, shutdown.wait()) => watched,
                deposed = until_deposed(&ledger) => deposed,
                never = publishing => match never {},
            }
        }
    });
    let api = tokio::spawn(service.serve(listener, shutdown.wait()));
    Ok(Running {
        ledger,
        api,
        watcher,
        address,
    })
}

/// How often a follower reads the shared log, and how often it tries for the writer's
/// lock.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
const PROMOTE_EVERY: Duration = Duration::from_secs(1);

/// A replica that is not the writer: applies the writer's entries as they are committed
/// (answering checks from them) and takes over when the writer's lock frees. Returns
/// whether it became the writer (`false` when shut down first). A log that does not
/// verify stops it (and so the service): it never answers from a log it cannot trust.
async fn follow_until_promoted(
    ledger: &SharedLedger,
    replica: &Arc<std::sync::Mutex<ReplicaState>>,
    shutdown: Shutdown,
) -> Result<bool, watcher::WatcherError> {
    let mut last_try = std::time::Instant::now() - PROMOTE_EVERY;
    loop {
        let promote = last_try.elapsed() >= PROMOTE_EVERY;
        if promote {
            last_try = std::time::Instant::now();
        }
        let shared = ledger.clone();
        let round = tokio::task::spawn_blocking(move || {
            shared.with_writer(|ledger| {
                let applied = ledger.follow()?;
                let status = ledger.writer_status()?;
                let promoted = promote && ledger.try_promote()?;
                Ok::<_, ledger::LedgerError>((applied, status, promoted))
            })
        })
        .await
        .map_err(|e| watcher::WatcherError::from(ledger::LedgerError::Poisoned(e.to_string())))?;
        let (applied, status, promoted) = match round {
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
                    writer,
                    ..
                } => {
                    let now = std::time::Instant::now();
                    *caught_up = Some(now);
                    *last = applied;
                    if let Some(status) = status {
                        if writer.is_none_or(|(seen, _)| seen != status) {
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
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = shutdown.clone().wait() => return Ok(false),
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
) -> std::convert::Infallible {
    if !shared {
        // A ledger of its own has no followers to tell.
        return std::future::pending().await;
    }
    let mut beat = 0u64;
    loop {
        beat += 1;
        let (ledger, ready) = (ledger.view(), readiness.is_ready());
        let published =
            tokio::task::spawn_blocking(move || ledger.publish_writer_status(beat, ready)).await;
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
            return Err(watcher::WatcherError::from(ledger::LedgerError::Poisoned(
                "deposed: this replica no longer holds the shared ledger's writer lock".into(),
            )));
        }
    }
}

async fn finish(running: Running, stop: &watch::Sender<bool>) -> Result<(u64, String), String> {
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
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let running = start(client, ledger, options, api_args, shutdown).await?;
    println!("claim-ledger API listening on http://{}", running.address);
    let (seq, hash) = finish(running, &stop).await?;
    println!("stopped; ledger head seq {seq} hash {hash}");
    Ok(())
}

/// Options of `claim-ledger demo`.
pub struct DemoArgs {
    /// The demo's directory: ledger, kubeconfig, API token.
    pub dir: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Stop after this many scenario rounds (run until Ctrl-C when absent).
    pub rounds: Option<u64>,
    /// Pause between scenario steps.
    pub step: Duration,
}

/// `claim-ledger demo`: simulator + watcher + ledger + API with a live scenario.
pub async fn run_demo(
    args: DemoArgs,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let ledger_dir = args.dir.join("ledger");
    let ledger =
        Ledger::open(&ledger_dir, ledger::LedgerConfig::default()).map_err(|e| e.to_string())?;
    if ledger.head().seq > 0 {
        println!(
            "reusing the ledger of an earlier demo at {} (head seq {}); remove {} for a fresh one",
            ledger_dir.display(),
            ledger.head().seq,
            args.dir.display()
        );
    }

    let sim = Simulator::new(SimConfig::default());
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sim_url = format!(
        "http://{}",
        sim_listener.local_addr().map_err(|e| e.to_string())?
    );
    let kubeconfig_path = args.dir.join("kubeconfig");
    let kubeconfig = sim.kubeconfig(&sim_url);
    std::fs::write(&kubeconfig_path, &kubeconfig).map_err(|e| e.to_string())?;
    let sim_task = tokio::spawn({
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        async move { sim.serve(sim_listener, shutdown.wait()).await }
    });
    let client = client_for(&kubeconfig).await?;

    let token_path = args.dir.join("api-token");
    write_token(&token_path)?;
    // The demo signs checkpoints with its own key, kept beside the ledger, so exports
    // made from one run still verify against the same key in the next.
    let key_prefix = args.dir.join("signing");
    let key_path = key_prefix.with_extension("key");
    if !key_path.exists() {
        crate::audit::keygen("claim-ledger-demo", &key_prefix)?;
    }
    let key = crate::audit::load_signer(&key_path)?;
    let checkpoints = api::CheckpointSigning {
        origin: key.name().to_string(),
        key,
        every_entries: 20,
        interval: Duration::from_secs(5),
    };
    let running = start(
        client,
        ledger,
        WatchOptions::default(),
        ApiArgs {
            listen: args.listen,
            auth: Auth::Tokens(token_path.clone()),
            tls: None,
            checkpoints: Some(checkpoints),
            header_timeout: None,
            max_connections: None,
        },
        shutdown.clone(),
    )
    .await?;
    let api = format!("http://{}", running.address);
    print_banner(
        &args.dir,
        &sim_url,
        &api,
        &kubeconfig_path,
        &token_path,
        &ledger_dir,
    );

    let scenario = tokio::spawn(scenario(
        sim.clone(),
        api.clone(),
        args.rounds,
        args.step,
        shutdown.clone(),
    ));
    let finished_rounds = scenario.await.map_err(|e| e.to_string())??;
    if finished_rounds {
        println!("scenario finished; stopping");
        let _ = stop.send(true);
    }
    let (seq, hash) = finish(running, &stop).await?;
    let _ = sim_task.await;
    println!("stopped; ledger head seq {seq} hash {hash}");
    println!(
        "verify it: {} verify --db {}",
        command_name(),
        ledger_dir.display()
    );
    Ok(())
}

/// How to run this binary from a shell: `claim-ledger` when that name on `PATH` is this
/// very program (after `cargo install --path .`), else the path of the running binary.
fn command_name() -> String {
    let Ok(this) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "claim-ledger".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("claim-ledger")
                .canonicalize()
                .is_ok_and(|found| found == this)
        })
    });
    match on_path {
        true => "claim-ledger".into(),
        false => this.display().to_string(),
    }
}

/// A ready-to-paste identity check of pod `pod_name` (uid `pod_uid`) claiming `sandbox_id`.
fn check_command(
    api: &str,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    sandbox_id: &str,
) -> String {
    format!(
        "curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' {api}/v1/identity/check -d '{{\"namespace\":\"{namespace}\",\"pod_name\":\"{pod_name}\",\"pod_uid\":\"{pod_uid}\",\"sandbox_id\":\"{sandbox_id}\"}}'"
    )
}

async fn client_for(kubeconfig: &str) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// A fresh 256-bit token, hex, in a file only the owner can read.
fn write_token(path: &Path) -> Result<(), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the API token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, format!("{token}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())
}

fn print_banner(
    dir: &Path,
    sim_url: &str,
    api: &str,
    kubeconfig: &Path,
    token: &Path,
    ledger: &Path,
) {
    println!("claim-ledger demo — Ctrl-C to stop");
    println!("  API                {api}");
    // The demo's own, local token: one link opens a signed-in page (the page moves the
    // token to sessionStorage and removes it from the address bar).
    if let Ok(secret) = std::fs::read_to_string(token) {
        println!("  timeline page      {api}/ui/#token={}", secret.trim());
    }
    println!("  cluster simulator  {sim_url}");
    println!("  kubeconfig         {}", kubeconfig.display());
    println!("  API token file     {}", token.display());
    println!("  ledger             {}", ledger.display());
    println!();
    println!("Try (in another terminal):");
    println!("  export TOKEN=$(cat {})", token.display());
    println!("  curl -s {api}/readyz");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/head");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/state");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{api}/v1/entries?after_seq=0&limit=5'"
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/checkpoint");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{api}/v1/export?bundle=true' -o bundle.tar"
    );
    println!(
        "  {} verify-export bundle.tar --trusted-key {}",
        command_name(),
        dir.join("signing.pub").display()
    );
    println!(
        "  kubectl --kubeconfig {} get sandboxes,sandboxclaims,pods -n demo",
        kubeconfig.display()
    );
    println!("A fresh check is printed below whenever a pod binds or is replaced, with the");
    println!("answer it should get; each one goes stale at the step that replaces that pod.");
    if command_name() != "claim-ledger" {
        println!("(`cargo install --path .` puts `claim-ledger` on your PATH.)");
    }
    println!("(files under {})", dir.display());
    println!();
}

/// The live scenario: a warm pool; claims that bind, a pod that is replaced, a claim that
/// expires keeping its workspace (Retain), claims released with each propagation policy.
/// Returns whether it ended by itself (after `rounds`).
async fn scenario(
    sim: Simulator,
    api: String,
    rounds: Option<u64>,
    step: Duration,
    shutdown: Shutdown,
) -> Result<bool, String> {
    let namespace = "demo";
    let pause = |shutdown: Shutdown| async move {
        tokio::select! {
            _ = tokio::time::sleep(step) => false,
            _ = shutdown.wait() => true,
        }
    };
    sim.create_pool(namespace, "python-pool", 3, "python-template", true)
        .map_err(|e| e.to_string())?;
    println!("[demo] warm pool demo/python-pool filled with 3 sandboxes");
    let policies = [
        Propagation::Background,
        Propagation::Foreground,
        Propagation::Orphan,
    ];
    let mut round = 0u64;
    loop {
        if rounds.is_some_and(|limit| round >= limit) {
            return Ok(true);
        }
        if pause(shutdown.clone()).await {
            return Ok(false);
        }
        let claim_name = format!("session-{round}");
        let sandbox_id = format!("sbx-{round:04}");
        let claim = sim
            .claim_warm(namespace, &claim_name, "python-pool", Some(&sandbox_id))
            .map_err(|e| e.to_string())?;
        let sandbox = claim["status"]["sandbox"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut bound_uid = String::new();
        if let Some(pod) = sim.get(sim::Resource::Pod, namespace, &sandbox) {
            bound_uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            println!("[demo] claim {namespace}/{claim_name} bound warm sandbox {sandbox} (pod uid {bound_uid})");
            println!("       expect allow:");
            println!(
                "       {}",
                check_command(&api, namespace, &sandbox, &bound_uid, &sandbox_id)
            );
        }
        if pause(shutdown.clone()).await {
            return Ok(false);
        }
        let replaced = sim
            .replace_pod(namespace, &sandbox)
            .map_err(|e| e.to_string())?;
        let new_uid = replaced["metadata"]["uid"].as_str().unwrap_or_default();
        println!("[demo] pod {namespace}/{sandbox} replaced: new uid {new_uid}");
        println!("       expect allow (the new pod holds the binding):");
        println!(
            "       {}",
            check_command(&api, namespace, &sandbox, new_uid, &sandbox_id)
        );
        if !bound_uid.is_empty() {
            println!("       expect deny, BINDING_RELEASED (the old uid, replayed):");
            println!(
                "       {}",
                check_command(&api, namespace, &sandbox, &bound_uid, &sandbox_id)
            );
        }
        if round >= 1 {
            if pause(shutdown.clone()).await {
                return Ok(false);
            }
            let previous = format!("session-{}", round - 1);
            if round % 2 == 1 {
                sim.expire_claim(namespace, &previous)
                    .map_err(|e| e.to_string())?;
                println!("[demo] claim {namespace}/{previous} expired (Retain): sandbox and pod deleted, workspace PVC kept; its checks now deny");
            } else {
                let policy = policies[(round as usize / 2) % policies.len()];
                sim.delete_claim(namespace, &previous, policy)
                    .map_err(|e| e.to_string())?;
                println!("[demo] claim {namespace}/{previous} deleted ({policy:?} propagation); its checks now deny");
            }
        }
        round += 1;
    }
}
