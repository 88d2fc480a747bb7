//! `claim-ledger verify-export`: verifies an export bundle offline (the chain over the
//! exported bytes, the Merkle root against the signed checkpoint, consistency with a
//! previous one).

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use crate::audit;
use crate::error::CommandError;

/// Output of the commands whose default is a line of text for people.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TextOutput {
    /// A line for people.
    Text,
    /// One JSON object, for machines.
    Json,
}

// The help of this command is the doc comment on `Command::VerifyExport` (cli.rs).
#[derive(clap::Args)]
pub struct VerifyExportArgs {
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
}

/// Runs `claim-ledger verify-export`.
pub fn run(args: VerifyExportArgs) -> Result<(), CommandError> {
    let VerifyExportArgs {
        bundle,
        trusted_key,
        previous_checkpoint,
        origin,
        output,
    } = args;
    let mut out = std::io::stdout().lock();
    let trusted = audit::load_trusted(&trusted_key).map_err(CommandError::Input)?;
    let previous = previous_checkpoint
        .map(|path| audit::read_text(&path, "previous checkpoint"))
        .transpose()
        .map_err(CommandError::Input)?;
    let files = audit::read_bundle(&bundle).map_err(CommandError::Input)?;
    let verdict = schemas::bundle::verify_bundle(&files.parts(), &trusted, previous.as_deref())
        .and_then(|summary| match &origin {
            Some(wanted) if *wanted != summary.origin => Err(schemas::bundle::BundleFailure::new(
                schemas::bundle::BundleFailureKind::OriginMismatch,
                None,
                format!(
                    "the bundle is of origin {:?}, not {wanted:?}",
                    summary.origin
                ),
            )),
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
            return Err(CommandError::Check(format!("bundle rejected: {failure}")));
        }
    }
    Ok(())
}
