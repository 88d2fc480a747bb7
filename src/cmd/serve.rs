//! `claim-ledger serve`: watches a cluster into the ledger and serves the HTTP API (the
//! service's main job); its flags and their translation into the service's options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::args::DbArgs;
use crate::audit;
use crate::error::CommandError;
use crate::service;

// The help of this command is the doc comment on `Command::Serve` (cli.rs).
#[derive(clap::Args)]
pub struct ServeArgs {
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
}

/// Runs `claim-ledger serve`.
pub fn run(args: ServeArgs) -> Result<(), CommandError> {
    let ServeArgs {
        db,
        api,
        namespaces,
        unready_after,
        max_backlog_seconds,
        replica,
        lease_seconds,
        signing,
    } = args;
    if let Some(tokens) = &api.api_token_file {
        match audit::secret_file_exposure(tokens).map_err(CommandError::Input)? {
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
    service::run_until_signal(|stop, shutdown| {
        service::run_serve(ledger, options, api, stop, shutdown)
    })?;
    Ok(())
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
    fn load(self) -> Result<Option<api::CheckpointSigning>, CommandError> {
        let Some(path) = self.signing_key else {
            return Ok(None);
        };
        if self.checkpoint_every == 0 || self.checkpoint_interval == 0 {
            return Err(CommandError::Input(
                "--checkpoint-every and --checkpoint-interval must be positive".into(),
            ));
        }
        let key = audit::load_service_signer(&path, self.allow_group_readable_secrets)
            .map_err(CommandError::Input)?;
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
    /// Replay and write at most this many states "as of" an earlier point at once
    /// (`GET /v1/state`; default 2): each holds a second projection while it is written.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), env = "CLAIM_LEDGER_MAX_REPLAYS")]
    max_replays: Option<u64>,
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
            max_replays: self
                .max_replays
                .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX)),
        }
    }
}

/// A positive, finite number of seconds (a clap value parser).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => Ok(seconds),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}
