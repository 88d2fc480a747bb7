//! The command line: the global flags and the commands, and the dispatch of a command to
//! its module under `cmd` (which holds the command's own flags; the flags several commands
//! share are in `args`).

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd;
use crate::error::CommandError;

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

impl Command {
    /// Runs the command.
    pub fn run(self) -> Result<(), CommandError> {
        match self {
            Command::Ingest(args) => cmd::ingest::run(args),
            Command::Verify(args) => cmd::verify::run(args),
            Command::Migrate(args) => cmd::migrate::run(args),
            Command::Keygen(args) => cmd::keygen::run(args),
            Command::VerifyExport(args) => cmd::verify_export::run(args),
            Command::State(args) => cmd::state::run(args),
            Command::History(args) => cmd::history::run(args),
            Command::Check(args) => cmd::check::run(args),
            #[cfg(feature = "sim")]
            Command::Sim(args) => cmd::sim::run(args),
            Command::Serve(args) => cmd::serve::run(args),
            #[cfg(feature = "sim")]
            Command::Demo(args) => cmd::demo::run(args),
            #[cfg(feature = "sim")]
            Command::Scenario(args) => cmd::scenario::run(args),
            Command::Export(args) => cmd::export::run(args),
        }
    }
}
