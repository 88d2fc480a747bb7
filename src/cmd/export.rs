//! `claim-ledger export`: the entries with their hashes and exact bytes (jsonl, CSV or
//! CloudEvents), or an export bundle for `verify-export` that ends at a signed checkpoint.

use std::io::{self, Write};
use std::path::PathBuf;

use chrono::Utc;
use formats::ExportFormat;

use crate::args::DbArgs;
use crate::audit;
use crate::error::CommandError;

/// `--format`: the names `formats::ExportFormat` parses, listed with their descriptions
/// in the help.
fn export_format_parser() -> impl clap::builder::TypedValueParser<Value = ExportFormat> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        ExportFormat::ALL
            .map(|format| PossibleValue::new(format.name()).help(format.description())),
    )
    .try_map(|name| name.parse::<ExportFormat>())
}

// The help of this command is the doc comment on `Command::Export` (cli.rs).
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, default_value_t = ExportFormat::Jsonl, value_parser = export_format_parser())]
    format: ExportFormat,
    #[arg(long, default_value_t = 1)]
    from_seq: u64,
    /// The last seq (default the head; with --bundle, the covering checkpoint's size).
    #[arg(long)]
    to_seq: Option<u64>,
    /// The CloudEvents `source` (default: the latest checkpoint's origin, else
    /// `claim-ledger`).
    #[arg(long)]
    source: Option<String>,
    /// Write an export bundle for `verify-export` instead: OUT.tar (a tar archive) or
    /// a directory. Entries are jsonl; the range ends at a signed checkpoint.
    #[arg(long, value_name = "OUT")]
    bundle: Option<PathBuf>,
    /// With --bundle: the auditor's previous checkpoint, to include a consistency
    /// proof from it.
    #[arg(long, requires = "bundle")]
    previous_checkpoint: Option<PathBuf>,
    /// With --bundle: sign a checkpoint of the head first with this key (offline
    /// export of a ledger no `serve` signs).
    #[arg(long, requires = "bundle")]
    signing_key: Option<PathBuf>,
    /// The origin of a checkpoint signed with --signing-key (default the key name).
    #[arg(long, requires = "signing_key")]
    origin: Option<String>,
}

/// Runs `claim-ledger export`: a bundle with `--bundle`, else the entries on standard
/// output.
pub fn run(mut args: ExportArgs) -> Result<(), CommandError> {
    match args.bundle.take() {
        Some(bundle) => write_bundle(args, bundle),
        None => write_entries(args),
    }
}

/// `export --bundle OUT`: a bundle for `verify-export`, ending at a signed checkpoint.
fn write_bundle(args: ExportArgs, bundle: PathBuf) -> Result<(), CommandError> {
    let ExportArgs {
        db,
        format,
        from_seq,
        to_seq,
        source,
        previous_checkpoint,
        signing_key,
        origin,
        ..
    } = args;
    let mut out = io::stdout().lock();
    if format != ExportFormat::Jsonl || source.is_some() {
        return Err(CommandError::Input(
            "a bundle holds jsonl entries: --format and --source do not apply".into(),
        ));
    }
    let mut ledger = db.open_existing()?;
    if let Some(path) = signing_key {
        let key = audit::load_signer(&path).map_err(CommandError::Input)?;
        let origin = origin.unwrap_or_else(|| key.name().to_string());
        ledger.sign_checkpoint(&key, &origin)?;
    }
    let previous = previous_checkpoint
        .map(|path| {
            let text = audit::read_text(&path, "previous checkpoint")?;
            let note = schemas::checkpoint::SignedNote::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            schemas::checkpoint::Checkpoint::parse_body(&note.body)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .transpose()
        .map_err(CommandError::Input)?;
    let request = formats::bundle::BundleRequest {
        from_seq: Some(from_seq),
        to_seq,
        previous,
    };
    let plan = formats::bundle::plan(&ledger, &request, Utc::now())?;
    if bundle.extension().is_some_and(|e| e == "tar") {
        let file = std::fs::File::create(&bundle)
            .map_err(|e| CommandError::Input(format!("cannot create {}: {e}", bundle.display())))?;
        let mut writer = io::BufWriter::new(file);
        formats::bundle::write_tar(&*ledger, &plan, &mut writer)?;
        writer
            .into_inner()
            .map_err(|e| CommandError::Input(e.to_string()))?
            .sync_all()?;
    } else {
        formats::bundle::write_dir(&*ledger, &plan, &bundle)?;
    }
    serde_json::to_writer(&mut out, &plan.manifest)?;
    writeln!(out)?;
    Ok(())
}

/// `export` without `--bundle`: the entries in `--format`, on standard output.
fn write_entries(args: ExportArgs) -> Result<(), CommandError> {
    let ExportArgs {
        db,
        format,
        from_seq,
        to_seq,
        source,
        ..
    } = args;
    let out = io::stdout().lock();
    let ledger = db.open_existing()?;
    let to = to_seq.unwrap_or(u64::MAX);
    let mut buffered = io::BufWriter::new(out);
    let source = match (format, source) {
        (_, Some(source)) => source,
        (ExportFormat::CloudEvents, None) => ledger
            .latest_checkpoint()?
            .map_or_else(|| "claim-ledger".to_string(), |c| c.checkpoint.origin),
        // Only CloudEvents name a source.
        (ExportFormat::Jsonl | ExportFormat::Csv, None) => String::new(),
    };
    format.export(&ledger, from_seq, to, &source, &mut buffered)?;
    buffered.flush()?;
    Ok(())
}
