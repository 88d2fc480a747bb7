//! `claim-ledger migrate`: copies a ledger, record for record, into a new, empty one (a
//! directory into a PostgreSQL database or back), verifying both sides.

use std::io::Write;
use std::path::PathBuf;

use ledger::LedgerConfig;

use crate::error::CommandError;

// The help of this command is the doc comment on `Command::Migrate` (cli.rs).
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The ledger to copy: a directory or a `postgres://` URL.
    #[arg(long)]
    from: PathBuf,
    /// Where to copy it: a new directory, or a PostgreSQL database holding no ledger.
    #[arg(long)]
    to: PathBuf,
    /// The PostgreSQL password file for either side (see `--db-password-file`).
    #[arg(long, env = "CLAIM_LEDGER_DB_PASSWORD_FILE")]
    db_password_file: Option<PathBuf>,
}

/// Runs `claim-ledger migrate`.
pub fn run(args: MigrateArgs) -> Result<(), CommandError> {
    let MigrateArgs {
        from,
        to,
        db_password_file,
    } = args;
    let mut out = std::io::stdout().lock();
    let config = LedgerConfig {
        password_file: db_password_file,
        ..LedgerConfig::default()
    };
    let report = ledger::migrate(&from, &to, config.clone(), config)?;
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}
