//! `claim-ledger keygen`: writes a new Ed25519 key pair for signing checkpoints.

use std::io::Write;
use std::path::PathBuf;

use crate::audit;
use crate::error::CommandError;

// The help of this command is the doc comment on `Command::Keygen` (cli.rs).
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The key name, and the default checkpoint origin (e.g. ledger.example.com/prod).
    #[arg(long)]
    name: String,
    /// Where to write: PREFIX.key and PREFIX.pub.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `claim-ledger keygen`.
pub fn run(args: KeygenArgs) -> Result<(), CommandError> {
    let KeygenArgs { name, out: prefix } = args;
    let mut out = std::io::stdout().lock();
    let report = audit::keygen(&name, &prefix).map_err(CommandError::Input)?;
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}
