//! `claim-ledger ingest`: appends Kubernetes watch events (JSON lines) from a file or
//! standard input.

use std::io::{self, BufRead, BufReader, Write};

use chrono::Utc;

use crate::args::{DbArgs, Output};
use formats::views::printable;

use crate::error::CommandError;

// The help of this command is the doc comment on `Command::Ingest` (cli.rs).
#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    db: DbArgs,
    /// A file of watch-event lines, or `-` for standard input.
    #[arg(default_value = "-")]
    input: String,
    /// Changes per atomic, flushed batch.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    #[arg(long, value_enum, default_value_t = Output::Json)]
    output: Output,
}

/// Runs `claim-ledger ingest`.
pub fn run(args: IngestArgs) -> Result<(), CommandError> {
    let IngestArgs {
        db,
        input,
        batch_size,
        output,
    } = args;
    let mut out = std::io::stdout().lock();
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let file = std::fs::File::open(&input)
            .map_err(|e| CommandError::Input(format!("cannot open {input}: {e}")))?;
        Box::new(BufReader::new(file))
    };
    let mut ledger = db.open_for_batch_load()?;
    let report = watcher::ingest(
        &mut ledger,
        reader,
        watcher::IngestOptions { batch_size },
        Utc::now,
    )
    .map_err(|e| CommandError::Input(e.to_string()))?;
    for error in &report.errors {
        eprintln!("line {}: {}", error.line, printable(&error.message));
    }
    match output {
        Output::Json => {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
        Output::Table => writeln!(
            out,
            "appended {}, duplicate {}, stale {}, ignored {}, rejected lines {}; head seq {}",
            report.appended,
            report.duplicate,
            report.stale,
            report.ignored,
            report.errors.len(),
            report.head_seq
        )?,
    }
    if !report.errors.is_empty() {
        return Err(CommandError::Input(format!(
            "{} line(s) rejected",
            report.errors.len()
        )));
    }
    Ok(())
}
