//! The flags several commands share (where the ledger is and how to open it, JSON or
//! table output), and opening the ledger they name.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ledger::{Ledger, LedgerConfig};

use crate::error::CommandError;

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
    /// Keep the newest N snapshots the log commits to and remove older ones when a new
    /// one is written (0 keeps every one). Older states are replayed from the nearest
    /// snapshot kept, or from the first entry.
    #[arg(long, default_value_t = 2, env = "CLAIM_LEDGER_KEEP_SNAPSHOTS")]
    pub keep_snapshots: usize,
    /// The store's page cache in MiB (default 256; 64 for `verify`, which reads every
    /// record once). Counted apart from the projection's memory.
    #[arg(long, env = "CLAIM_LEDGER_CACHE_MB")]
    pub cache_mb: Option<u64>,
}

/// The store's page cache for `verify` when `--cache-mb` is not given, in MiB.
const AUDIT_CACHE_MB: u64 = 64;

impl DbArgs {
    /// Opens a ledger that must already exist: reading commands must not create an empty
    /// one at a mistyped path and then report it verified.
    pub fn open_existing(&self) -> Result<Ledger, CommandError> {
        self.open_with(false)
    }

    /// Opens an existing ledger to be verified from its first entry (`verify`): no state
    /// is built at open ([`Ledger::open_for_audit`]).
    pub fn open_for_audit(&self) -> Result<ledger::Audit, CommandError> {
        let config = LedgerConfig {
            // A verification reads every record once, in key order: a page cache larger
            // than a few segments only costs fresh pages (a gigabyte at 1.9M entries,
            // and 4-6% of the walk's time), unless asked for.
            cache_bytes: Some(
                self.cache_mb
                    .unwrap_or(AUDIT_CACHE_MB)
                    .saturating_mul(1024 * 1024),
            ),
            ..self.config(false)
        };
        Ledger::open_for_audit(&self.db, config).map_err(CommandError::from)
    }

    /// Opens the ledger, creating it if absent or empty (`ingest`, `serve`).
    pub fn open(&self) -> Result<Ledger, CommandError> {
        self.open_with(true)
    }

    /// [`DbArgs::open`] for a batch load (`ingest`): nothing answers checks meanwhile, so
    /// snapshots run at the writer's priority.
    pub fn open_for_batch_load(&self) -> Result<Ledger, CommandError> {
        let config = LedgerConfig {
            low_priority_snapshots: false,
            ..self.config(true)
        };
        Ledger::open(&self.db, config).map_err(CommandError::from)
    }

    /// Opens a shared (PostgreSQL) ledger as one of several `serve` replicas: the writer
    /// when its lock is free, else a follower that takes over when it frees.
    pub fn open_replica(&self, lease: Duration) -> Result<Ledger, CommandError> {
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
            snapshots_kept: self.keep_snapshots,
            allow_corrupt: self.allow_corrupt,
            create,
            // Only the commands that may create a ledger append to it.
            appends: create,
            cache_bytes: Some(self.cache_mb.map_or(ledger::DEFAULT_CACHE_BYTES, |mb| {
                mb.saturating_mul(1024 * 1024)
            })),
            password_file: self.db_password_file.clone(),
            ..LedgerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        db: DbArgs,
    }

    fn cache_of(args: &[&str]) -> Option<u64> {
        let parsed =
            Command::try_parse_from(["claim-ledger", "--db", "/nowhere"].iter().chain(args))
                .expect("the arguments parse");
        parsed.db.config(true).cache_bytes
    }

    #[test]
    fn the_store_cache_is_256_mib_unless_asked_for() {
        // The environment would win over the default: none is set in tests.
        if std::env::var_os("CLAIM_LEDGER_CACHE_MB").is_some() {
            return;
        }
        assert_eq!(cache_of(&[]), Some(256 << 20));
        assert_eq!(cache_of(&["--cache-mb", "32"]), Some(32 << 20));
    }
}
