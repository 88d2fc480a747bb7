//! One module per command: each holds the command's own flags and its `run`, which does
//! the command's work through the library crates and returns a [`CommandError`] for
//! `main` to turn into an exit code.

pub mod check;
#[cfg(feature = "sim")]
pub mod demo;
pub mod export;
pub mod history;
pub mod ingest;
pub mod keygen;
pub mod migrate;
#[cfg(feature = "sim")]
pub mod scenario;
pub mod serve;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod verify;
pub mod verify_export;

use std::time::Duration;

use ledger::{Ledger, LedgerConfig};

use crate::cli::{Command, DbArgs};
use crate::error::CommandError;

/// Runs one command.
pub fn run(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Ingest(args) => ingest::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::VerifyExport(args) => verify_export::run(args),
        Command::State(args) => state::run(args),
        Command::History(args) => history::run(args),
        Command::Check(args) => check::run(args),
        #[cfg(feature = "sim")]
        Command::Sim(args) => sim::run(args),
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "sim")]
        Command::Scenario(args) => scenario::run(args),
        Command::Export(args) => export::run(args),
    }
}

impl DbArgs {
    /// Opens a ledger that must already exist: reading commands must not create an empty
    /// one at a mistyped path and then report it verified.
    fn open_existing(&self) -> Result<Ledger, CommandError> {
        self.open_with(false)
    }

    /// Opens the ledger, creating it if absent or empty (`ingest`, `serve`).
    fn open(&self) -> Result<Ledger, CommandError> {
        self.open_with(true)
    }

    /// Opens a shared (PostgreSQL) ledger as one of several `serve` replicas: the writer
    /// when its lock is free, else a follower that takes over when it frees.
    fn open_replica(&self, lease: Duration) -> Result<Ledger, CommandError> {
        let is_url = self
            .db
            .to_str()
            .is_some_and(ledger::store::postgres::is_postgres_url);
        if !is_url {
            return Err(CommandError::Input(
                "--replica needs a shared ledger: a postgres:// --db (a directory has one writer, its process)".into(),
            ));
        }
        let config = LedgerConfig {
            replica: true,
            lease: Some(lease),
            ..self.config(true)
        };
        Ledger::open(&self.db, config).map_err(CommandError::from)
    }

    fn open_with(&self, create: bool) -> Result<Ledger, CommandError> {
        Ledger::open(&self.db, self.config(create)).map_err(CommandError::from)
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
