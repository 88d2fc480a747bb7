//! The command line: the global flags, the commands, and the flags several commands
//! share. Each command's own flags are in its module under `cmd`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd;

/// The whole command line.
#[derive(Parser)]
#[command(
    name = "claim-ledger",
    version,
    about = "Hash-chained ledger of agent-sandbox claim bindings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on standard error as text or as JSON objects (one per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CLAIM_LEDGER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// The least severe level logged (error, warn, info, debug, trace), or a full
    /// `tracing` filter such as `warn,watcher=debug`; `RUST_LOG` wins when set.
    #[arg(
        long,
        global = true,
        default_value = "warn,watcher=info",
        env = "CLAIM_LEDGER_LOG_LEVEL"
    )]
    pub log_level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with every field (kind, namespace, name, uid, seq, reason).
    Json,
}

/// Output of the commands whose default is JSON.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Machine-readable JSON.
    Json,
    /// Aligned columns for people.
    Table,
}

/// Where the ledger is and how to open it (every command that reads or writes one).
#[derive(Args)]
pub struct DbArgs {
    /// The ledger: a directory (sled), or a `postgres://user@host:port/database` URL.
    /// `ingest` and `serve` create it when absent or empty; every other command refuses a
    /// location that holds no ledger.
    #[arg(long, env = "CLAIM_LEDGER_DB")]
    pub db: PathBuf,
    /// With a PostgreSQL `--db`: read the password from this file when neither the URL,
    /// `PGPASSWORD` nor `~/.pgpass` (or `PGPASSFILE`) gives one.
    #[arg(long, env = "CLAIM_LEDGER_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,
    /// Open a ledger that fails verification, read-only, for forensics.
    #[arg(long)]
    pub allow_corrupt: bool,
    /// Snapshot the projection every N entries.
    #[arg(long, default_value_t = 100_000, env = "CLAIM_LEDGER_SNAPSHOT_EVERY")]
    pub snapshot_every: u64,
    /// The store's page cache in MiB (sled's default, 1024, when not given). Counted
    /// apart from the projection's memory.
    #[arg(long, env = "CLAIM_LEDGER_CACHE_MB")]
    pub cache_mb: Option<u64>,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Append Kubernetes watch events (JSON lines) from FILE or standard input.
    Ingest(cmd::ingest::IngestArgs),
    /// Verify the whole chain, every entry's encoding and every stored transition.
    Verify(cmd::verify::VerifyArgs),
    /// Copy a ledger, record for record, into a new, empty one: a directory into a
    /// PostgreSQL database or back. The source is verified first and the copy after; the
    /// hashes, Merkle root and checkpoints are the same.
    Migrate(cmd::migrate::MigrateArgs),
    /// Write a new Ed25519 key pair for signing checkpoints: PREFIX.key (private, mode
    /// 0600) and PREFIX.pub (the verifier key auditors trust).
    Keygen(cmd::keygen::KeygenArgs),
    /// Verify an export bundle offline: the blake3 chain over the exported bytes, the
    /// Merkle root against the signed checkpoint, and consistency with a previous one.
    /// Exit 0 with a one-line summary, 1 naming the first offending entry.
    VerifyExport(cmd::verify_export::VerifyExportArgs),
    /// The projected state (objects and bindings), now or as of a seq or time.
    State(cmd::state::StateArgs),
    /// Every entry that recorded one object.
    History(cmd::history::HistoryArgs),
    /// Is this pod bound? Prints the decision; exit 0 allow, 1 deny.
    Check(cmd::check::CheckArgs),
    /// Run the cluster simulator alone (a Kubernetes API server for agent-sandbox objects).
    #[cfg(feature = "sim")]
    Sim(cmd::sim::SimArgs),
    /// Watch a cluster into the ledger and serve the HTTP API (the service's main job).
    /// The cluster comes from KUBECONFIG, ~/.kube/config or the in-cluster config.
    Serve(cmd::serve::ServeArgs),
    /// Simulator + watcher + ledger + API with a live scenario, until Ctrl-C.
    #[cfg(feature = "sim")]
    Demo(cmd::demo::DemoArgs),
    /// Scenario files: lifecycles and faults against a fresh simulator + watcher + ledger.
    #[cfg(feature = "sim")]
    Scenario(cmd::scenario::ScenarioArgs),
    /// Export entries with hashes and exact bytes, one JSON object per line.
    Export(cmd::export::ExportArgs),
}
