//! `claim-ledger history`: every entry that recorded one object, as JSON lines, a table,
//! or the object's timeline.

use std::io;

use clap::{Args, ValueEnum};
use formats::views::{write_entries_table, write_jsonl};
use formats::{Selection, SelectionFields};
use ledger::Ledger;

use crate::args::DbArgs;
use crate::error::CommandError;

/// Output of `history`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum HistoryOutput {
    /// One JSON object per entry, as `export` prints them.
    Json,
    /// One aligned row per entry: seq, time, change, kind, name, uid, reason, transitions.
    Table,
    /// The object's story, one aligned line per event (created, bound, released and why,
    /// denied checks, watch gaps...), as the page at /ui/ shows it; coloured on a terminal.
    Timeline,
}

#[derive(Args)]
#[group(required = true, multiple = true)]
struct HistoryTarget {
    /// Every entry that recorded this pod uid or names it in a transition.
    #[arg(long, group = "uid")]
    pod_uid: Option<String>,
    /// Every entry that recorded this SandboxClaim uid or names it in a transition.
    #[arg(long, group = "uid")]
    claim_uid: Option<String>,
    /// Every entry that recorded this Sandbox uid or names it in a transition.
    #[arg(long, group = "uid")]
    sandbox_uid: Option<String>,
    /// Every entry that recorded this PersistentVolumeClaim uid or names it.
    #[arg(long, group = "uid")]
    pvc_uid: Option<String>,
    /// Kind (Sandbox, SandboxClaim, Pod, PersistentVolumeClaim), with --namespace and --name.
    #[arg(long, requires_all = ["namespace", "name"], conflicts_with = "uid")]
    kind: Option<String>,
    /// The object's namespace (with --kind): every uid it had under that name.
    #[arg(long, requires = "kind")]
    namespace: Option<String>,
    /// The object's name (with --kind).
    #[arg(long, requires = "kind")]
    name: Option<String>,
}

// The help of this command is the doc comment on `Command::History` (cli.rs).
#[derive(clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    target: HistoryTarget,
    #[arg(long, value_enum, default_value_t = HistoryOutput::Json)]
    output: HistoryOutput,
}

/// Runs `claim-ledger history`.
pub fn run(args: HistoryArgs) -> Result<(), CommandError> {
    let HistoryArgs { db, target, output } = args;
    let mut out = std::io::stdout().lock();
    let ledger = db.open_existing()?;
    let selection = Selection::from_fields(SelectionFields {
        pod_uid: target.pod_uid,
        claim_uid: target.claim_uid,
        sandbox_uid: target.sandbox_uid,
        pvc_uid: target.pvc_uid,
        kind: target.kind,
        namespace: target.namespace,
        name: target.name,
    })?;
    let (uids, entries) = selection.history(&ledger)?;
    match output {
        HistoryOutput::Json => {
            write_jsonl(&mut out, &entries)?;
        }
        HistoryOutput::Table => write_entries_table(&mut out, &entries)?,
        HistoryOutput::Timeline => {
            let color = io::IsTerminal::is_terminal(&io::stdout())
                && std::env::var_os("NO_COLOR").is_none();
            timeline_of(&ledger, &uids, &entries)?.write_text(&mut out, color)?;
        }
    }
    Ok(())
}

/// The timeline of `uids` from their whole history, with the watch gaps of their
/// lifetime, as `GET /v1/timeline` builds it.
fn timeline_of(
    ledger: &Ledger,
    uids: &[String],
    entries: &[ledger::StoredEntry],
) -> Result<formats::timeline::Timeline, CommandError> {
    use formats::timeline::{gap_window, watch_gaps, Timeline, TimelineParts};
    let head_seq = ledger.head().seq;
    let gap_scan = gap_window(ledger.projection(), uids, entries, true, head_seq);
    let gaps = match gap_scan {
        Some(scan) => watch_gaps(ledger.entries(scan.from_seq, scan.to_seq))?,
        None => Vec::new(),
    };
    Ok(Timeline::build(TimelineParts {
        projection: ledger.projection(),
        uids,
        baseline: &[],
        entries,
        gaps: &gaps,
        head_seq,
        next_after_seq: None,
        gap_scan,
    }))
}
