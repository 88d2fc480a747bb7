//! The `claim-ledger` binary: argument parsing and wiring only; the work lives in the
//! `schemas`, `ledger`, `watcher` and `api` crates.
//!
//! Exit codes: 0 ok, 1 a verification or check failure, 2 a usage or input error.

mod audit;
mod scenario;
mod service;

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use formats::views::{write_entries_table, write_jsonl};
use formats::{ExportFormat, FormatError, Selection, SelectionFields, StateView};
use ledger::{CheckRequest, Ledger, LedgerConfig, Verdict};
use schemas::Hash;

// The ledger allocates many small strings per entry; glibc's malloc spent nearly half the
// append path in allocation and consolidation (see BENCHMARKS.md), mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "claim-ledger",
    version,
    about = "Hash-chained ledger of agent-sandbox claim bindings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on standard error as text or as JSON objects (one per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CLAIM_LEDGER_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// The least severe level logged (error, warn, info, debug, trace), or a full
    /// `tracing` filter such as `warn,watcher=debug`; `RUST_LOG` wins when set.
    #[arg(
        long,
        global = true,
        default_value = "warn,watcher=info",
        env = "CLAIM_LEDGER_LOG_LEVEL"
    )]
    log_level: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with every field (kind, namespace, name, uid, seq, reason).
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    /// Machine-readable JSON.
    Json,
    /// Aligned columns for people.
    Table,
}

/// Output of `history`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum HistoryOutput {
    /// One JSON object per entry, as `export` prints them.
    Json,
    /// One aligned row per entry: seq, time, change, kind, name, uid, reason, transitions.
    Table,
    /// The object's story, one aligned line per event (created, bound, released and why,
    /// denied checks, watch gaps...), as the page at /ui/ shows it; coloured on a terminal.
    Timeline,
}

/// Output of the commands whose default is a line of text for people.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum TextOutput {
    /// A line for people.
    Text,
    /// One JSON object, for machines.
    Json,
}

#[derive(Args)]
struct DbArgs {
    /// The ledger: a directory (sled), or a `postgres://user@host:port/database` URL.
    /// `ingest` and `serve` create it when absent or empty; every other command refuses a
    /// location that holds no ledger.
    #[arg(long, env = "CLAIM_LEDGER_DB")]
    db: PathBuf,
    /// With a PostgreSQL `--db`: read the password from this file when neither the URL,
    /// `PGPASSWORD` nor `~/.pgpass` (or `PGPASSFILE`) gives one.
    #[arg(long, env = "CLAIM_LEDGER_DB_PASSWORD_FILE")]
    db_password_file: Option<PathBuf>,
    /// Open a ledger that fails verification, read-only, for forensics.
    #[arg(long)]
    allow_corrupt: bool,
    /// Snapshot the projection every N entries.
    #[arg(long, default_value_t = 100_000, env = "CLAIM_LEDGER_SNAPSHOT_EVERY")]
    snapshot_every: u64,
    /// The store's page cache in MiB (sled's default, 1024, when not given). Counted
    /// apart from the projection's memory.
    #[arg(long, env = "CLAIM_LEDGER_CACHE_MB")]
    cache_mb: Option<u64>,
}

impl DbArgs {
    /// Opens a ledger that must already exist: reading commands must not create an empty
    /// one at a mistyped path and then report it verified.
    fn open_existing(&self) -> Result<Ledger, Failure> {
        self.open_with(false)
    }

    /// Opens the ledger, creating it if absent or empty (`ingest`, `serve`).
    fn open(&self) -> Result<Ledger, Failure> {
        self.open_with(true)
    }

    /// Opens a shared (PostgreSQL) ledger as one of several `serve` replicas: the writer
    /// when its lock is free, else a follower that takes over when it frees.
    fn open_replica(&self, lease: Duration) -> Result<Ledger, Failure> {
        let is_url = self
            .db
            .to_str()
            .is_some_and(ledger::store::postgres::is_postgres_url);
        if !is_url {
            return Err(Failure::Input(
                "--replica needs a shared ledger: a postgres:// --db (a directory has one writer, its process)".into(),
            ));
        }
        let config = LedgerConfig {
            replica: true,
            lease: Some(lease),
            ..self.config(true)
        };
        Ledger::open(&self.db, config).map_err(Failure::from)
    }

    fn open_with(&self, create: bool) -> Result<Ledger, Failure> {
        Ledger::open(&self.db, self.config(create)).map_err(Failure::from)
    }

    fn config(&self, create: bool) -> LedgerConfig {
        LedgerConfig {
            snapshot_every: self.snapshot_every,
            allow_corrupt: self.allow_corrupt,
            create,
            cache_bytes: self.cache_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            password_file: self.db_password_file.clone(),
            ..LedgerConfig::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Append Kubernetes watch events (JSON lines) from FILE or standard input.
    Ingest {
        #[command(flatten)]
        db: DbArgs,
        /// A file of watch-event lines, or `-` for standard input.
        #[arg(default_value = "-")]
        input: String,
        /// Changes per atomic, flushed batch.
        #[arg(long, default_value_t = 1024)]
        batch_size: usize,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Verify the whole chain, every entry's encoding and every stored transition.
    Verify {
        #[command(flatten)]
        db: DbArgs,
        /// Verify only the entries after this watermark seq (from an earlier report's
        /// `verified_seq`); needs --from-hash.
        #[arg(long, requires = "from_hash")]
        from_seq: Option<u64>,
        /// The watermark's hash (an earlier report's `verified_hash`).
        #[arg(long, requires = "from_seq")]
        from_hash: Option<String>,
        /// Check the hash chain only (in parallel, no decoding or replay): fast, and
        /// enough to detect any altered, removed, reordered or added entry.
        #[arg(long, conflicts_with = "from_seq")]
        chain_only: bool,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
        /// Also fail unless the ledger holds the tree this signed checkpoint names: it was
        /// not truncated, rolled back or forked since (a C2SP signed note, e.g. saved from
        /// `GET /v1/checkpoint`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Verifier key file(s) (one key per line): the checkpoint must then be signed by
        /// one of them. Without it only the checkpoint's body is compared (its signature is
        /// not checked), and the report says so.
        #[arg(long, requires = "checkpoint")]
        trusted_key: Vec<PathBuf>,
    },
    /// Copy a ledger, record for record, into a new, empty one: a directory into a
    /// PostgreSQL database or back. The source is verified first and the copy after; the
    /// hashes, Merkle root and checkpoints are the same.
    Migrate {
        /// The ledger to copy: a directory or a `postgres://` URL.
        #[arg(long)]
        from: PathBuf,
        /// Where to copy it: a new directory, or a PostgreSQL database holding no ledger.
        #[arg(long)]
        to: PathBuf,
        /// The PostgreSQL password file for either side (see `--db-password-file`).
        #[arg(long, env = "CLAIM_LEDGER_DB_PASSWORD_FILE")]
        db_password_file: Option<PathBuf>,
    },
    /// Write a new Ed25519 key pair for signing checkpoints: PREFIX.key (private, mode
    /// 0600) and PREFIX.pub (the verifier key auditors trust).
    Keygen {
        /// The key name, and the default checkpoint origin (e.g. ledger.example.com/prod).
        #[arg(long)]
        name: String,
        /// Where to write: PREFIX.key and PREFIX.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export bundle offline: the blake3 chain over the exported bytes, the
    /// Merkle root against the signed checkpoint, and consistency with a previous one.
    /// Exit 0 with a one-line summary, 1 naming the first offending entry.
    VerifyExport {
        /// The bundle: a directory or a tar archive.
        bundle: PathBuf,
        /// Verifier key file(s) to trust (one key per line; several for key rotation).
        #[arg(long, required = true)]
        trusted_key: Vec<PathBuf>,
        /// The checkpoint of the auditor's previous export: the bundle must prove it is a
        /// prefix of this one (no fork, no rollback).
        #[arg(long)]
        previous_checkpoint: Option<PathBuf>,
        /// The log the bundle must be of (its checkpoint origin): trusted keys of several
        /// logs then cannot vouch for a bundle of the wrong one.
        #[arg(long)]
        origin: Option<String>,
        /// `text`: the one-line summary; `json`: the summary, or the failure, as one JSON
        /// object (`{"ok": true, ...}` or `{"ok": false, "failure": {...}}`).
        #[arg(long, value_enum, default_value_t = TextOutput::Text)]
        output: TextOutput,
    },
    /// The projected state (objects and bindings), now or as of a seq or time.
    State {
        #[command(flatten)]
        db: DbArgs,
        /// State after this entry.
        #[arg(long, conflicts_with = "as_of")]
        as_of_seq: Option<u64>,
        /// State at this RFC 3339 time.
        #[arg(long)]
        as_of: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Every entry that recorded one object.
    History {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        target: HistoryTarget,
        #[arg(long, value_enum, default_value_t = HistoryOutput::Json)]
        output: HistoryOutput,
    },
    /// Is this pod bound? Prints the decision; exit 0 allow, 1 deny.
    Check {
        #[command(flatten)]
        db: DbArgs,
        /// The pod's namespace.
        #[arg(long)]
        namespace: String,
        /// The pod's name.
        #[arg(long)]
        pod_name: String,
        /// The pod's uid, as the pod presents it (its service-account token's pod uid).
        #[arg(long)]
        pod_uid: String,
        /// The sandbox id the pod claims (its `openshell.io/sandbox-id`); must match the
        /// one bound.
        #[arg(long)]
        sandbox_id: Option<String>,
        /// The Sandbox the pod claims to belong to, by name.
        #[arg(long)]
        sandbox_name: Option<String>,
        /// The Sandbox the pod claims to belong to, by uid.
        #[arg(long)]
        sandbox_uid: Option<String>,
        /// The SandboxClaim the pod claims to be bound through, by uid.
        #[arg(long)]
        claim_uid: Option<String>,
        /// Accept a directly created Sandbox (no claim).
        #[arg(long)]
        allow_direct: bool,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Run the cluster simulator alone (a Kubernetes API server for agent-sandbox objects).
    Sim {
        /// Where it listens (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: SocketAddr,
        /// Write a kubeconfig for it here, for kubectl and any kube client.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Do not emulate the agent-sandbox controllers (drive every object by hand).
        #[arg(long)]
        no_controllers: bool,
        /// Serve only v1alpha1 (agent-sandbox v0.4.x) instead of v1beta1 + v1alpha1.
        #[arg(long)]
        v1alpha1_only: bool,
        /// Drive the simulator through this scenario file's cluster steps (see
        /// docs/SCENARIOS.md); its `simulator:` settings configure the simulator.
        #[arg(long, conflicts_with_all = ["no_controllers", "v1alpha1_only"])]
        scenario: Option<PathBuf>,
        /// Stop once the scenario's steps are done instead of serving until Ctrl-C.
        #[arg(long, requires = "scenario")]
        exit_after_scenario: bool,
        /// Start with this many bound claims in namespace `default` (claim, Sandbox, PVC,
        /// pod each), for load tests.
        #[arg(long, default_value_t = 0)]
        preload_bindings: usize,
    },
    /// Watch a cluster into the ledger and serve the HTTP API (the service's main job).
    /// The cluster comes from KUBECONFIG, ~/.kube/config or the in-cluster config.
    Serve {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        api: ApiFlags,
        /// Watch only this namespace (repeatable, or comma-separated); all namespaces by
        /// default.
        #[arg(
            long = "namespace",
            env = "CLAIM_LEDGER_NAMESPACES",
            value_delimiter = ','
        )]
        namespaces: Vec<String>,
        /// Answer not_ready once a watch has been failing this many seconds (a follower:
        /// once it has not caught up with the writer's log for this long).
        #[arg(long, default_value_t = 30, env = "CLAIM_LEDGER_UNREADY_AFTER")]
        unready_after: u64,
        /// Answer not_ready while observed changes have waited longer than this many
        /// seconds to become durable (a writer that lags must not answer allow from
        /// stale state).
        #[arg(long, default_value_t = 5.0, env = "CLAIM_LEDGER_MAX_BACKLOG_SECONDS", value_parser = positive_seconds)]
        max_backlog_seconds: f64,
        /// Run as one of several replicas of a PostgreSQL `--db`: the writer while it
        /// holds the database's writer lock, else a follower that answers checks from
        /// the writer's entries and takes over when the writer goes.
        #[arg(long, env = "CLAIM_LEDGER_REPLICA")]
        replica: bool,
        /// With --replica: seconds a writer's database session may go quiet (paused,
        /// partitioned) before another replica may take over.
        #[arg(
            long,
            default_value_t = 10,
            env = "CLAIM_LEDGER_LEASE_SECONDS",
            requires = "replica"
        )]
        lease_seconds: u64,
        #[command(flatten)]
        signing: SigningFlags,
    },
    /// Simulator + watcher + ledger + API with a live scenario, until Ctrl-C.
    Demo {
        /// The demo's directory: the ledger, the simulator's kubeconfig, the API token.
        #[arg(long, default_value = "claim-ledger-demo")]
        db: PathBuf,
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Stop after this many scenario rounds instead of at Ctrl-C.
        #[arg(long)]
        rounds: Option<u64>,
        /// Milliseconds between scenario steps.
        #[arg(long, default_value_t = 2000)]
        step_ms: u64,
    },
    /// Scenario files: lifecycles and faults against a fresh simulator + watcher + ledger.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Export entries with hashes and exact bytes, one JSON object per line.
    Export {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = ExportFormat::Jsonl, value_parser = export_format_parser())]
        format: ExportFormat,
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// The last seq (default the head; with --bundle, the covering checkpoint's size).
        #[arg(long)]
        to_seq: Option<u64>,
        /// The CloudEvents `source` (default: the latest checkpoint's origin, else
        /// `claim-ledger`).
        #[arg(long)]
        source: Option<String>,
        /// Write an export bundle for `verify-export` instead: OUT.tar (a tar archive) or
        /// a directory. Entries are jsonl; the range ends at a signed checkpoint.
        #[arg(long, value_name = "OUT")]
        bundle: Option<PathBuf>,
        /// With --bundle: the auditor's previous checkpoint, to include a consistency
        /// proof from it.
        #[arg(long, requires = "bundle")]
        previous_checkpoint: Option<PathBuf>,
        /// With --bundle: sign a checkpoint of the head first with this key (offline
        /// export of a ledger no `serve` signs).
        #[arg(long, requires = "bundle")]
        signing_key: Option<PathBuf>,
        /// The origin of a checkpoint signed with --signing-key (default the key name).
        #[arg(long, requires = "signing_key")]
        origin: Option<String>,
    },
}

/// Checkpoint signing (`serve`).
#[derive(Args)]
struct SigningFlags {
    /// Sign checkpoints of the Merkle tree with this key (from `keygen`) and keep them in
    /// the ledger; served at /v1/checkpoint.
    #[arg(long, env = "CLAIM_LEDGER_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// The checkpoint origin line (default the key name).
    #[arg(long, requires = "signing_key", env = "CLAIM_LEDGER_ORIGIN")]
    origin: Option<String>,
    /// Sign once this many entries were appended since the last checkpoint.
    #[arg(
        long,
        default_value_t = 1000,
        requires = "signing_key",
        env = "CLAIM_LEDGER_CHECKPOINT_EVERY"
    )]
    checkpoint_every: u64,
    /// ...or once this many seconds passed with new entries.
    #[arg(
        long,
        default_value_t = 60,
        requires = "signing_key",
        env = "CLAIM_LEDGER_CHECKPOINT_INTERVAL"
    )]
    checkpoint_interval: u64,
    /// Accept a signing key (and API token file) readable by its group, with a warning:
    /// a Kubernetes Secret mounted with `fsGroup`. A file readable by others is always
    /// refused (the key) or warned about (the tokens).
    #[arg(long, env = "CLAIM_LEDGER_ALLOW_GROUP_READABLE_SECRETS")]
    allow_group_readable_secrets: bool,
}

impl SigningFlags {
    fn load(self) -> Result<Option<api::CheckpointSigning>, Failure> {
        let Some(path) = self.signing_key else {
            return Ok(None);
        };
        if self.checkpoint_every == 0 || self.checkpoint_interval == 0 {
            return Err(Failure::Input(
                "--checkpoint-every and --checkpoint-interval must be positive".into(),
            ));
        }
        let key = audit::load_service_signer(&path, self.allow_group_readable_secrets)
            .map_err(Failure::Input)?;
        Ok(Some(api::CheckpointSigning {
            origin: self.origin.unwrap_or_else(|| key.name().to_string()),
            key,
            every_entries: self.checkpoint_every,
            interval: Duration::from_secs(self.checkpoint_interval),
        }))
    }
}

/// The HTTP API's flags (`serve`).
#[derive(Args)]
struct ApiFlags {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CLAIM_LEDGER_LISTEN")]
    listen: SocketAddr,
    /// Bearer tokens, one per line; reloaded when the file changes.
    #[arg(
        long,
        required_unless_present = "insecure_no_auth",
        env = "CLAIM_LEDGER_API_TOKEN_FILE"
    )]
    api_token_file: Option<PathBuf>,
    /// Serve /v1 without authentication (only for local experiments).
    #[arg(
        long,
        conflicts_with = "api_token_file",
        env = "CLAIM_LEDGER_INSECURE_NO_AUTH"
    )]
    insecure_no_auth: bool,
    /// TLS certificate chain (PEM); with --tls-key.
    #[arg(long, requires = "tls_key", env = "CLAIM_LEDGER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, requires = "tls_cert", env = "CLAIM_LEDGER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Close a connection that has not sent a complete request head within this many
    /// seconds (default 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), env = "CLAIM_LEDGER_HEADER_TIMEOUT_SECONDS")]
    header_timeout_seconds: Option<u64>,
    /// Hold at most this many connections at once (default 4096, lowered to fit the
    /// descriptor limit); more wait in the listen backlog.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), env = "CLAIM_LEDGER_MAX_CONNECTIONS")]
    max_connections: Option<u64>,
}

impl ApiFlags {
    fn into_args(self, checkpoints: Option<api::CheckpointSigning>) -> service::ApiArgs {
        service::ApiArgs {
            checkpoints,
            listen: self.listen,
            auth: match self.api_token_file {
                Some(path) if !self.insecure_no_auth => api::Auth::Tokens(path),
                _ => api::Auth::Insecure,
            },
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| api::TlsFiles { cert, key }),
            header_timeout: self.header_timeout_seconds.map(Duration::from_secs),
            max_connections: self
                .max_connections
                .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX)),
        }
    }
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Run each file end to end and report every expectation; exit 1 on any failure.
    Run {
        /// Scenario files (YAML; see docs/SCENARIOS.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--format`: the names `formats::ExportFormat` parses, listed with their descriptions
/// in the help.
fn export_format_parser() -> impl clap::builder::TypedValueParser<Value = ExportFormat> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        ExportFormat::ALL
            .map(|format| PossibleValue::new(format.name()).help(format.description())),
    )
    .try_map(|name| name.parse::<ExportFormat>())
}

#[derive(Args)]
#[group(required = true, multiple = true)]
struct HistoryTarget {
    /// Every entry that recorded this pod uid or names it in a transition.
    #[arg(long, group = "uid")]
    pod_uid: Option<String>,
    /// Every entry that recorded this SandboxClaim uid or names it in a transition.
    #[arg(long, group = "uid")]
    claim_uid: Option<String>,
    /// Every entry that recorded this Sandbox uid or names it in a transition.
    #[arg(long, group = "uid")]
    sandbox_uid: Option<String>,
    /// Every entry that recorded this PersistentVolumeClaim uid or names it.
    #[arg(long, group = "uid")]
    pvc_uid: Option<String>,
    /// Kind (Sandbox, SandboxClaim, Pod, PersistentVolumeClaim), with --namespace and --name.
    #[arg(long, requires_all = ["namespace", "name"], conflicts_with = "uid")]
    kind: Option<String>,
    /// The object's namespace (with --kind): every uid it had under that name.
    #[arg(long, requires = "kind")]
    namespace: Option<String>,
    /// The object's name (with --kind).
    #[arg(long, requires = "kind")]
    name: Option<String>,
}

/// A failure and the exit code it maps to.
enum Failure {
    /// Exit 1: verification failed, or the check denied.
    Check(String),
    /// Exit 2: bad usage or input.
    Input(String),
}

impl From<ledger::LedgerError> for Failure {
    fn from(e: ledger::LedgerError) -> Failure {
        match e.is_integrity_failure() {
            true => Failure::Check(e.to_string()),
            false => Failure::Input(e.to_string()),
        }
    }
}

impl From<FormatError> for Failure {
    /// A damaged ledger fails like a failed verification (exit 1); everything else is
    /// the input's or the output's fault (exit 2).
    fn from(e: FormatError) -> Failure {
        match e {
            FormatError::Ledger(e) => Failure::from(e),
            e => Failure::Input(e.to_string()),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Input(e.to_string())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Failure {
        Failure::Input(e.to_string())
    }
}

/// The timeline of `uids` from their whole history, with the watch gaps of their
/// lifetime, as `GET /v1/timeline` builds it.
fn timeline_of(
    ledger: &Ledger,
    uids: &[String],
    entries: &[ledger::StoredEntry],
) -> Result<formats::timeline::Timeline, Failure> {
    use formats::timeline::{gap_window, watch_gaps, Timeline, TimelineParts};
    let head_seq = ledger.head().seq;
    let gap_scan = gap_window(ledger.projection(), uids, entries, true, head_seq);
    let gaps = match gap_scan {
        Some(scan) => watch_gaps(ledger.entries(scan.from_seq, scan.to_seq))?,
        None => Vec::new(),
    };
    Ok(Timeline::build(TimelineParts {
        projection: ledger.projection(),
        uids,
        baseline: &[],
        entries,
        gaps: &gaps,
        head_seq,
        next_after_seq: None,
        gap_scan,
    }))
}

/// Reads a signed checkpoint file and, with trusted keys, checks its signature.
fn checked_checkpoint(
    path: &std::path::Path,
    trusted: &[PathBuf],
) -> Result<schemas::checkpoint::Checkpoint, Failure> {
    let text = audit::read_text(path, "checkpoint").map_err(Failure::Input)?;
    let note = schemas::checkpoint::SignedNote::parse(&text)
        .map_err(|e| Failure::Input(format!("{}: not a signed note: {e}", path.display())))?;
    if !trusted.is_empty() {
        let keys = audit::load_trusted(trusted).map_err(Failure::Input)?;
        note.verify(&keys).map_err(|e| {
            Failure::Check(format!(
                "{}: the checkpoint is not signed by a trusted key: {e}",
                path.display()
            ))
        })?;
    }
    schemas::checkpoint::Checkpoint::parse_body(&note.body)
        .map_err(|e| Failure::Input(format!("{}: not a checkpoint: {e}", path.display())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_storage_panics();
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("claim-ledger: --log-level {:?}: {e}", cli.log_level);
                return ExitCode::from(2);
            }
        },
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Check(message)) => {
            if !message.is_empty() {
                eprintln!("claim-ledger: {}", printable(&message));
            }
            ExitCode::from(1)
        }
        Err(Failure::Input(message)) => {
            eprintln!("claim-ledger: {}", printable(&message));
            ExitCode::from(2)
        }
    }
}

/// `text` with every control character escaped (`\u{1b}`, `\n`, ...): messages quote
/// untrusted input (bundle members, event lines, file names), which must not be able to
/// move the cursor, clear the screen or print a line of its own on the operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// The ledger's sled backend turns a panic inside sled (some damage to its files makes it
/// panic instead of failing) into a `store_damaged` error, which is reported; the default
/// hook would also print the panic as if claim-ledger had crashed.
fn quiet_storage_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_sled = info
            .location()
            .is_some_and(|location| location.file().contains("/sled-"));
        if !in_sled {
            default(info);
        }
    }));
}

/// Runs a long-running command on a multi-threaded runtime until Ctrl-C or SIGTERM.
fn run_async<F, Fut>(body: F) -> Result<(), Failure>
where
    F: FnOnce(tokio::sync::watch::Sender<bool>, service::Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    runtime
        .block_on(async {
            let (stop, shutdown) = service::Shutdown::new();
            service::stop_on_signal(stop.clone());
            body(stop, shutdown).await
        })
        .map_err(Failure::Input)
}

fn run(command: Command) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        Command::Sim {
            listen,
            kubeconfig_out,
            no_controllers,
            v1alpha1_only,
            scenario,
            exit_after_scenario,
            preload_bindings,
        } => {
            drop(out);
            // A scenario file is validated before anything runs (exit 2 when invalid, as
            // `scenario run`), and its `simulator:` settings replace the flags.
            let scenario = scenario
                .map(|path| {
                    scenario::load(&path).map(|scenario| service::SimScenario {
                        path,
                        scenario,
                        exit_after: exit_after_scenario,
                    })
                })
                .transpose()
                .map_err(Failure::Input)?;
            let mut config = match &scenario {
                Some(file) => file.scenario.sim_config(),
                None => sim::SimConfig {
                    controllers: !no_controllers,
                    served: if v1alpha1_only {
                        sim::Served::V1alpha1Only
                    } else {
                        sim::Served::Both
                    },
                    ..sim::SimConfig::default()
                },
            };
            config.preload_bindings = preload_bindings;
            let mut carried_out = true;
            run_async(|stop, shutdown| {
                let carried_out = &mut carried_out;
                async move {
                    *carried_out =
                        service::run_sim(listen, kubeconfig_out, config, scenario, stop, shutdown)
                            .await?;
                    Ok(())
                }
            })?;
            if !carried_out {
                return Err(Failure::Check(
                    "a scenario step could not be carried out".into(),
                ));
            }
        }
        Command::Serve {
            db,
            api,
            namespaces,
            unready_after,
            max_backlog_seconds,
            replica,
            lease_seconds,
            signing,
        } => {
            drop(out);
            if let Some(tokens) = &api.api_token_file {
                match audit::secret_file_exposure(tokens).map_err(Failure::Input)? {
                    Some("its group") if signing.allow_group_readable_secrets => {}
                    Some(who) => tracing::warn!(
                        path = %tokens.display(),
                        "the API token file is readable by {who}: anyone who reads it can ask for identity checks; chmod 600 it"
                    ),
                    None => {}
                }
            }
            let checkpoints = signing.load()?;
            let ledger = match replica {
                true => db.open_replica(Duration::from_secs(lease_seconds.max(1)))?,
                false => db.open()?,
            };
            let options = watcher::WatchOptions {
                namespaces,
                unready_after: Duration::from_secs(unready_after),
                max_backlog: Duration::from_secs_f64(max_backlog_seconds),
                ..watcher::WatchOptions::default()
            };
            let api = api.into_args(checkpoints);
            run_async(|stop, shutdown| service::run_serve(ledger, options, api, stop, shutdown))?;
        }
        Command::Scenario {
            command: ScenarioCommand::Run { files },
        } => {
            drop(out);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
            if !runtime
                .block_on(scenario::run_files(&files))
                .map_err(Failure::Input)?
            {
                return Err(Failure::Check("a scenario expectation failed".into()));
            }
        }
        Command::Demo {
            db,
            listen,
            rounds,
            step_ms,
        } => {
            drop(out);
            let args = service::DemoArgs {
                dir: db,
                listen,
                rounds,
                step: Duration::from_millis(step_ms),
            };
            run_async(|stop, shutdown| service::run_demo(args, stop, shutdown))?;
        }
        Command::Ingest {
            db,
            input,
            batch_size,
            output,
        } => {
            let reader: Box<dyn BufRead> = if input == "-" {
                Box::new(BufReader::new(io::stdin()))
            } else {
                let file = std::fs::File::open(&input)
                    .map_err(|e| Failure::Input(format!("cannot open {input}: {e}")))?;
                Box::new(BufReader::new(file))
            };
            let mut ledger = db.open()?;
            let report = watcher::ingest(
                &mut ledger,
                reader,
                watcher::IngestOptions { batch_size },
                Utc::now,
            )
            .map_err(|e| Failure::Input(e.to_string()))?;
            for error in &report.errors {
                eprintln!("line {}: {}", error.line, printable(&error.message));
            }
            match output {
                Output::Json => {
                    serde_json::to_writer(&mut out, &report)?;
                    writeln!(out)?;
                }
                Output::Table => writeln!(
                    out,
                    "appended {}, duplicate {}, stale {}, ignored {}, rejected lines {}; head seq {}",
                    report.appended,
                    report.duplicate,
                    report.stale,
                    report.ignored,
                    report.errors.len(),
                    report.head_seq
                )?,
            }
            if !report.errors.is_empty() {
                return Err(Failure::Input(format!(
                    "{} line(s) rejected",
                    report.errors.len()
                )));
            }
        }
        Command::Verify {
            db,
            from_seq,
            from_hash,
            chain_only,
            checkpoint,
            trusted_key,
            output,
        } => {
            let ledger = db.open_existing()?;
            let signed = checkpoint
                .map(|path| checked_checkpoint(&path, &trusted_key))
                .transpose()?;
            let report = match (from_seq, from_hash) {
                _ if chain_only => ledger.verify_chain()?,
                (Some(seq), Some(hash)) => {
                    let hash = Hash::from_hex(&hash).ok_or_else(|| {
                        Failure::Input(format!("--from-hash {hash:?} is not 64 hex digits"))
                    })?;
                    ledger.verify_from(seq, hash)?
                }
                _ => ledger.verify()?,
            };
            let consistency = signed.map(|checkpoint| ledger.check_checkpoint(&checkpoint));
            let mut json = serde_json::to_value(&report)?;
            if let Some(result) = &consistency {
                json["checkpoint"] = match result {
                    Ok(()) => serde_json::json!({
                        "consistent": true,
                        "signature_checked": !trusted_key.is_empty(),
                    }),
                    Err(failure) => serde_json::json!({
                        "consistent": false,
                        "signature_checked": !trusted_key.is_empty(),
                        "failure": failure,
                    }),
                };
            }
            match output {
                Output::Json => {
                    serde_json::to_writer(&mut out, &json)?;
                    writeln!(out)?;
                }
                Output::Table => {
                    formats::views::write_verify_table(&report, &mut out)?;
                    match &consistency {
                        Some(Ok(())) => writeln!(
                            out,
                            "checkpoint: consistent (signature {})",
                            if trusted_key.is_empty() {
                                "not checked"
                            } else {
                                "checked"
                            }
                        )?,
                        Some(Err(failure)) => writeln!(out, "checkpoint: INCONSISTENT: {failure}")?,
                        None => {}
                    }
                }
            }
            if let Some(failure) = report.failure {
                return Err(Failure::Check(format!("verification failed at {failure}")));
            }
            if let Some(Err(failure)) = consistency {
                return Err(Failure::Check(format!(
                    "the ledger does not hold the checkpoint's tree: {failure}"
                )));
            }
        }
        Command::Migrate {
            from,
            to,
            db_password_file,
        } => {
            let config = LedgerConfig {
                password_file: db_password_file,
                ..LedgerConfig::default()
            };
            let report = ledger::migrate(&from, &to, config.clone(), config)?;
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
        Command::Keygen { name, out: prefix } => {
            let report = audit::keygen(&name, &prefix).map_err(Failure::Input)?;
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Command::VerifyExport {
            bundle,
            trusted_key,
            previous_checkpoint,
            origin,
            output,
        } => {
            let trusted = audit::load_trusted(&trusted_key).map_err(Failure::Input)?;
            let previous = previous_checkpoint
                .map(|path| audit::read_text(&path, "previous checkpoint"))
                .transpose()
                .map_err(Failure::Input)?;
            let files = audit::read_bundle(&bundle).map_err(Failure::Input)?;
            let verdict =
                schemas::bundle::verify_bundle(&files.parts(), &trusted, previous.as_deref())
                    .and_then(|summary| match &origin {
                        Some(wanted) if *wanted != summary.origin => {
                            Err(schemas::bundle::BundleFailure::new(
                                schemas::bundle::BundleFailureKind::OriginMismatch,
                                None,
                                format!(
                                    "the bundle is of origin {:?}, not {wanted:?}",
                                    summary.origin
                                ),
                            ))
                        }
                        _ => Ok(summary),
                    });
            match (verdict, output) {
                (Ok(summary), TextOutput::Text) => writeln!(out, "{}", summary.one_line())?,
                (Ok(summary), TextOutput::Json) => {
                    let mut json = serde_json::to_value(&summary)?;
                    json["ok"] = true.into();
                    writeln!(out, "{json}")?;
                }
                (Err(failure), output) => {
                    if output == TextOutput::Json {
                        let json = serde_json::json!({"ok": false, "failure": failure});
                        writeln!(out, "{json}")?;
                    }
                    return Err(Failure::Check(format!("bundle rejected: {failure}")));
                }
            }
        }
        Command::State {
            db,
            as_of_seq,
            as_of,
            output,
        } => {
            let ledger = db.open_existing()?;
            let seq = match (as_of_seq, as_of) {
                (Some(seq), _) => seq,
                (None, Some(time)) => ledger.seq_at_time(time)?,
                (None, None) => ledger.head().seq,
            };
            let projection = ledger.state_at_seq(seq)?;
            let view = StateView::new(&projection);
            match output {
                Output::Json => {
                    serde_json::to_writer_pretty(&mut out, &view)?;
                    writeln!(out)?;
                }
                Output::Table => view.write_table(&mut out)?,
            }
        }
        Command::History { db, target, output } => {
            let ledger = db.open_existing()?;
            let selection = Selection::from_fields(SelectionFields {
                pod_uid: target.pod_uid,
                claim_uid: target.claim_uid,
                sandbox_uid: target.sandbox_uid,
                pvc_uid: target.pvc_uid,
                kind: target.kind,
                namespace: target.namespace,
                name: target.name,
            })?;
            let (uids, entries) = selection.history(&ledger)?;
            match output {
                HistoryOutput::Json => {
                    write_jsonl(&mut out, &entries)?;
                }
                HistoryOutput::Table => write_entries_table(&mut out, &entries)?,
                HistoryOutput::Timeline => {
                    let color = io::IsTerminal::is_terminal(&io::stdout())
                        && std::env::var_os("NO_COLOR").is_none();
                    timeline_of(&ledger, &uids, &entries)?.write_text(&mut out, color)?;
                }
            }
        }
        Command::Check {
            db,
            namespace,
            pod_name,
            pod_uid,
            sandbox_id,
            sandbox_name,
            sandbox_uid,
            claim_uid,
            allow_direct,
            output,
        } => {
            let request = CheckRequest {
                namespace,
                pod_name,
                pod_uid,
                sandbox_id,
                sandbox_name,
                sandbox_uid,
                claim_uid,
                require_claim: !allow_direct,
                min_seq: None,
            };
            // The same validation as the HTTP API's: a request no pod can make is refused.
            request.validate().map_err(Failure::Input)?;
            let ledger = db.open_existing()?;
            // Offline, the ledger is the whole truth: there is no watcher to be behind.
            let decision = ledger.check(&request, true);
            match output {
                Output::Json => {
                    serde_json::to_writer_pretty(&mut out, &decision)?;
                    writeln!(out)?;
                }
                Output::Table => formats::views::write_decision_table(&decision, &mut out)?,
            }
            if decision.decision != Verdict::Allow {
                return Err(Failure::Check(String::new()));
            }
        }
        Command::Export {
            db,
            format,
            from_seq,
            to_seq,
            source,
            bundle: Some(bundle),
            previous_checkpoint,
            signing_key,
            origin,
        } => {
            if format != ExportFormat::Jsonl || source.is_some() {
                return Err(Failure::Input(
                    "a bundle holds jsonl entries: --format and --source do not apply".into(),
                ));
            }
            let mut ledger = db.open_existing()?;
            if let Some(path) = signing_key {
                let key = audit::load_signer(&path).map_err(Failure::Input)?;
                let origin = origin.unwrap_or_else(|| key.name().to_string());
                ledger.sign_checkpoint(&key, &origin)?;
            }
            let previous = previous_checkpoint
                .map(|path| {
                    let text = audit::read_text(&path, "previous checkpoint")?;
                    let note = schemas::checkpoint::SignedNote::parse(&text)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    schemas::checkpoint::Checkpoint::parse_body(&note.body)
                        .map_err(|e| format!("{}: {e}", path.display()))
                })
                .transpose()
                .map_err(Failure::Input)?;
            let request = formats::bundle::BundleRequest {
                from_seq: Some(from_seq),
                to_seq,
                previous,
            };
            let plan = formats::bundle::plan(&ledger, &request, Utc::now())?;
            if bundle.extension().is_some_and(|e| e == "tar") {
                let file = std::fs::File::create(&bundle).map_err(|e| {
                    Failure::Input(format!("cannot create {}: {e}", bundle.display()))
                })?;
                let mut writer = io::BufWriter::new(file);
                formats::bundle::write_tar(&*ledger, &plan, &mut writer)?;
                writer
                    .into_inner()
                    .map_err(|e| Failure::Input(e.to_string()))?
                    .sync_all()?;
            } else {
                formats::bundle::write_dir(&*ledger, &plan, &bundle)?;
            }
            serde_json::to_writer(&mut out, &plan.manifest)?;
            writeln!(out)?;
        }
        Command::Export {
            db,
            format,
            from_seq,
            to_seq,
            source,
            ..
        } => {
            let ledger = db.open_existing()?;
            let to = to_seq.unwrap_or(u64::MAX);
            let mut buffered = io::BufWriter::new(out);
            let source = match (format, source) {
                (_, Some(source)) => source,
                (ExportFormat::CloudEvents, None) => ledger
                    .latest_checkpoint()?
                    .map_or_else(|| "claim-ledger".to_string(), |c| c.checkpoint.origin),
                // Only CloudEvents name a source.
                (ExportFormat::Jsonl | ExportFormat::Csv, None) => String::new(),
            };
            format.export(&ledger, from_seq, to, &source, &mut buffered)?;
            buffered.flush()?;
        }
    }
    Ok(())
}

/// A positive, finite number of seconds (a clap value parser).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => Ok(seconds),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}
