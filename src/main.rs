//! The `claim-ledger` binary: argument parsing and wiring only; the work lives in the
//! `schemas`, `ledger`, `watcher` and `api` crates.
//!
//! Exit codes: 0 ok, 1 a verification or check failure, 2 a usage or input error.

mod scenario;
mod service;

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use api::views::{export_jsonl, write_entries_table, write_jsonl};
use api::StateView;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ledger::{CheckRequest, Ledger, LedgerConfig, Verdict};
use schemas::{Hash, ObjectKind};

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
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    /// Machine-readable JSON.
    Json,
    /// Aligned columns for people.
    Table,
}

#[derive(Args)]
struct DbArgs {
    /// The ledger directory (created if absent).
    #[arg(long)]
    db: PathBuf,
    /// Open a ledger that fails verification, read-only, for forensics.
    #[arg(long)]
    allow_corrupt: bool,
    /// Snapshot the projection every N entries.
    #[arg(long, default_value_t = 100_000)]
    snapshot_every: u64,
}

impl DbArgs {
    fn open(&self) -> Result<Ledger, Failure> {
        let config = LedgerConfig {
            snapshot_every: self.snapshot_every,
            allow_corrupt: self.allow_corrupt,
        };
        Ledger::open(&self.db, config).map_err(|e| match e {
            ledger::LedgerError::Corrupt(_) => Failure::Check(e.to_string()),
            other => Failure::Input(other.to_string()),
        })
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
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Is this pod bound? Prints the decision; exit 0 allow, 1 deny.
    Check {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod_name: String,
        #[arg(long)]
        pod_uid: String,
        #[arg(long)]
        sandbox_id: Option<String>,
        #[arg(long)]
        sandbox_name: Option<String>,
        #[arg(long)]
        sandbox_uid: Option<String>,
        #[arg(long)]
        claim_uid: Option<String>,
        /// Accept a directly created Sandbox (no claim).
        #[arg(long)]
        allow_direct: bool,
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
    },
    /// Watch a cluster into the ledger and serve the HTTP API (the service's main job).
    /// The cluster comes from KUBECONFIG, ~/.kube/config or the in-cluster config.
    Serve {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        api: ApiFlags,
        /// Watch only this namespace (repeatable); all namespaces by default.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Answer not_ready once a watch has been failing this many seconds.
        #[arg(long, default_value_t = 30)]
        unready_after: u64,
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
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        #[arg(long)]
        to_seq: Option<u64>,
    },
}

/// The HTTP API's flags (`serve`).
#[derive(Args)]
struct ApiFlags {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Bearer tokens, one per line; reloaded when the file changes.
    #[arg(long, required_unless_present = "insecure_no_auth")]
    api_token_file: Option<PathBuf>,
    /// Serve /v1 without authentication (only for local experiments).
    #[arg(long, conflicts_with = "api_token_file")]
    insecure_no_auth: bool,
    /// TLS certificate chain (PEM); with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ApiFlags {
    fn into_args(self) -> service::ApiArgs {
        service::ApiArgs {
            listen: self.listen,
            auth: match self.api_token_file {
                Some(path) if !self.insecure_no_auth => api::Auth::Tokens(path),
                _ => api::Auth::Insecure,
            },
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| api::TlsFiles { cert, key }),
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

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// One entry per line: seq, hash, prev_hash, entry, base64 bytes.
    Jsonl,
}

#[derive(Args)]
#[group(required = true, multiple = true)]
struct HistoryTarget {
    #[arg(long, group = "uid")]
    pod_uid: Option<String>,
    #[arg(long, group = "uid")]
    claim_uid: Option<String>,
    #[arg(long, group = "uid")]
    sandbox_uid: Option<String>,
    #[arg(long, group = "uid")]
    pvc_uid: Option<String>,
    /// Kind (Sandbox, SandboxClaim, Pod, PersistentVolumeClaim), with --namespace and --name.
    #[arg(long, requires_all = ["namespace", "name"], conflicts_with = "uid")]
    kind: Option<String>,
    #[arg(long, requires = "kind")]
    namespace: Option<String>,
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
        Failure::Input(e.to_string())
    }
}

impl From<api::ApiError> for Failure {
    fn from(e: api::ApiError) -> Failure {
        Failure::Input(e.to_string())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,claim_ledger_watcher=info")
            }),
        )
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Check(message)) => {
            if !message.is_empty() {
                eprintln!("claim-ledger: {message}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Input(message)) => {
            eprintln!("claim-ledger: {message}");
            ExitCode::from(2)
        }
    }
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
            let config = match &scenario {
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
        } => {
            drop(out);
            let ledger = db.open()?;
            let options = watcher::WatchOptions {
                namespaces,
                unready_after: Duration::from_secs(unready_after),
                ..watcher::WatchOptions::default()
            };
            let api = api.into_args();
            run_async(|_, shutdown| service::run_serve(ledger, options, api, shutdown))?;
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
                eprintln!("line {}: {}", error.line, error.message);
            }
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
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
        } => {
            let ledger = db.open()?;
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
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
            if let Some(failure) = report.failure {
                return Err(Failure::Check(format!("verification failed at {failure}")));
            }
        }
        Command::State {
            db,
            as_of_seq,
            as_of,
            output,
        } => {
            let ledger = db.open()?;
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
            let ledger = db.open()?;
            let entries = match (&target.kind, &target.namespace, &target.name) {
                (Some(kind), Some(namespace), Some(name)) => {
                    let kind = ObjectKind::parse(kind)
                        .ok_or_else(|| Failure::Input(format!("unknown kind {kind:?}")))?;
                    ledger.history_of_name(kind, namespace, name)?
                }
                _ => {
                    let uid = [
                        &target.pod_uid,
                        &target.claim_uid,
                        &target.sandbox_uid,
                        &target.pvc_uid,
                    ]
                    .into_iter()
                    .flatten()
                    .next()
                    .ok_or_else(|| {
                        Failure::Input("name a uid, or --kind with --namespace and --name".into())
                    })?;
                    ledger.history_of_uid(uid)?
                }
            };
            match output {
                Output::Json => {
                    write_jsonl(&mut out, &entries)?;
                }
                Output::Table => write_entries_table(&mut out, &entries)?,
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
        } => {
            let ledger = db.open()?;
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
            // Offline, the ledger is the whole truth: there is no watcher to be behind.
            let decision = ledger.check(&request, true);
            serde_json::to_writer_pretty(&mut out, &decision)?;
            writeln!(out)?;
            if decision.decision != Verdict::Allow {
                return Err(Failure::Check(String::new()));
            }
        }
        Command::Export {
            db,
            format: ExportFormat::Jsonl,
            from_seq,
            to_seq,
        } => {
            let ledger = db.open()?;
            let to = to_seq.unwrap_or(u64::MAX);
            let mut buffered = io::BufWriter::new(out);
            export_jsonl(&ledger, from_seq, to, &mut buffered)?;
            buffered.flush()?;
        }
    }
    Ok(())
}
