//! `claim-ledger state`: the projected state (objects and bindings), now or as of a seq
//! or a time.

use std::io::Write;

use chrono::{DateTime, Utc};
use formats::{StateJson, StateView};

use crate::args::{DbArgs, Output};
use crate::error::CommandError;

// The help of this command is the doc comment on `Command::State` (cli.rs).
#[derive(clap::Args)]
pub struct StateArgs {
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
}

/// Runs `claim-ledger state`.
pub fn run(args: StateArgs) -> Result<(), CommandError> {
    let StateArgs {
        db,
        as_of_seq,
        as_of,
        output,
    } = args;
    // Buffered: the standard output flushes every line, and a state is millions of lines.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let ledger = db.open_existing()?;
    let seq = match (as_of_seq, as_of) {
        (Some(seq), _) => seq,
        (None, Some(time)) => ledger.seq_at_time(time)?,
        (None, None) => ledger.head().seq,
    };
    let projection = ledger.state_at_seq(seq)?;
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &StateJson(&projection))?;
            writeln!(out)?;
        }
        Output::Table => StateView::new(&projection).write_table(&mut out)?,
    }
    out.flush()?;
    Ok(())
}
