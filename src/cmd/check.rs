//! `claim-ledger check`: is this pod bound? The binding rule's decision from the ledger
//! alone; exit 0 allow, 1 deny.

use ledger::{CheckRequest, Verdict};

use std::io::Write;

use crate::args::{DbArgs, Output};
use crate::error::CommandError;

// The help of this command is the doc comment on `Command::Check` (cli.rs).
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The pod's namespace.
    #[arg(long)]
    namespace: String,
    /// The pod's name.
    #[arg(long)]
    pod_name: String,
    /// The pod's uid, as the pod presents it (its service-account token's pod uid).
    #[arg(long)]
    pod_uid: String,
    /// The sandbox id the pod claims (its `openshell.io/sandbox-id`); must match the
    /// one bound.
    #[arg(long)]
    sandbox_id: Option<String>,
    /// The Sandbox the pod claims to belong to, by name.
    #[arg(long)]
    sandbox_name: Option<String>,
    /// The Sandbox the pod claims to belong to, by uid.
    #[arg(long)]
    sandbox_uid: Option<String>,
    /// The SandboxClaim the pod claims to be bound through, by uid.
    #[arg(long)]
    claim_uid: Option<String>,
    /// Accept a directly created Sandbox (no claim).
    #[arg(long)]
    allow_direct: bool,
    #[arg(long, value_enum, default_value_t = Output::Json)]
    output: Output,
}

/// Runs `claim-ledger check`.
pub fn run(args: CheckArgs) -> Result<(), CommandError> {
    let CheckArgs {
        db,
        namespace,
        pod_name,
        pod_uid,
        sandbox_id,
        sandbox_name,
        sandbox_uid,
        claim_uid,
        allow_direct,
        output,
    } = args;
    let mut out = std::io::stdout().lock();
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
    // The same validation as the HTTP API's: a request no pod can make is refused.
    request.validate().map_err(CommandError::Input)?;
    let ledger = db.open_existing()?;
    // Offline, the ledger is the whole truth: there is no watcher to be behind.
    let decision = ledger.check(&request, true);
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &decision)?;
            writeln!(out)?;
        }
        Output::Table => formats::views::write_decision_table(&decision, &mut out)?,
    }
    out.flush()?;
    // The process exits next. Freeing a projection of a million objects one block at a
    // time took a third of a `check` at that size; the ledger was opened for reading, so
    // nothing of it waits to be written, and the exit returns the memory at once.
    std::mem::forget(ledger);
    if decision.decision != Verdict::Allow {
        return Err(CommandError::Check(String::new()));
    }
    Ok(())
}
