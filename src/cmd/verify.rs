//! `claim-ledger verify`: verifies the chain, every entry's encoding and every stored
//! transition, and optionally that the ledger holds a signed checkpoint's tree.

use std::io::Write;
use std::path::PathBuf;

use schemas::Hash;

use crate::args::{DbArgs, Output};
use crate::audit;
use crate::error::CommandError;

// The help of this command is the doc comment on `Command::Verify` (cli.rs).
#[derive(clap::Args)]
pub struct VerifyArgs {
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
}

/// Runs `claim-ledger verify`.
pub fn run(args: VerifyArgs) -> Result<(), CommandError> {
    let VerifyArgs {
        db,
        from_seq,
        from_hash,
        chain_only,
        checkpoint,
        trusted_key,
        output,
    } = args;
    let mut out = std::io::stdout().lock();
    // Verification derives its own state from the first entry: the open builds none.
    let ledger = db.open_for_audit()?;
    let signed = checkpoint
        .map(|path| checked_checkpoint(&path, &trusted_key))
        .transpose()?;
    let report = match (from_seq, from_hash) {
        _ if chain_only => ledger.verify_chain()?,
        (Some(seq), Some(hash)) => {
            let hash = Hash::from_hex(&hash).ok_or_else(|| {
                CommandError::Input(format!("--from-hash {hash:?} is not 64 hex digits"))
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
        return Err(CommandError::Check(format!(
            "verification failed at {failure}"
        )));
    }
    if let Some(Err(failure)) = consistency {
        return Err(CommandError::Check(format!(
            "the ledger does not hold the checkpoint's tree: {failure}"
        )));
    }
    Ok(())
}

/// Reads a signed checkpoint file and, with trusted keys, checks its signature.
fn checked_checkpoint(
    path: &std::path::Path,
    trusted: &[PathBuf],
) -> Result<schemas::checkpoint::Checkpoint, CommandError> {
    let text = audit::read_text(path, "checkpoint").map_err(CommandError::Input)?;
    let note = schemas::checkpoint::SignedNote::parse(&text)
        .map_err(|e| CommandError::Input(format!("{}: not a signed note: {e}", path.display())))?;
    if !trusted.is_empty() {
        let keys = audit::load_trusted(trusted).map_err(CommandError::Input)?;
        note.verify(&keys).map_err(|e| {
            CommandError::Check(format!(
                "{}: the checkpoint is not signed by a trusted key: {e}",
                path.display()
            ))
        })?;
    }
    schemas::checkpoint::Checkpoint::parse_body(&note.body)
        .map_err(|e| CommandError::Input(format!("{}: not a checkpoint: {e}", path.display())))
}
