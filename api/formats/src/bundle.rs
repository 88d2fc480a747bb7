//! Export bundles: a range of entries with everything an auditor needs to verify it offline
//! (`schemas::bundle` documents the files and verifies them): the entries and their exact
//! bytes, the signed checkpoint that covers them, inclusion proofs of the first and last
//! entry in that checkpoint's tree, and, given the auditor's previous checkpoint, a
//! consistency proof from it. Written as a directory or as a tar archive (the same four
//! files at its top level).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use ledger::{LedgerView, StoredCheckpoint, StoredEntry};
use schemas::bundle::{
    ConsistencyProof, InclusionProof, Manifest, Proofs, CHECKPOINT_FILE, ENTRIES_FILE,
    MANIFEST_FILE, PROOFS_FILE,
};
use schemas::checkpoint::Checkpoint;

use crate::views::EntryLine;
use crate::FormatError;

/// What to put in a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleRequest {
    /// The first seq (default 1).
    pub from_seq: Option<u64>,
    /// The last seq (default: the covering checkpoint's tree size).
    pub to_seq: Option<u64>,
    /// The auditor's previous checkpoint: the bundle then proves the new tree extends it.
    pub previous: Option<Checkpoint>,
}

/// What a bundle will hold, decided before any file is written.
#[derive(Debug, Clone)]
pub struct BundlePlan {
    /// The manifest.
    pub manifest: Manifest,
    /// The signed checkpoint covering the range.
    pub checkpoint: StoredCheckpoint,
    /// The proofs.
    pub proofs: Proofs,
}

/// Chooses the checkpoint and computes the proofs for `request` on `ledger`.
///
/// Fails with [`FormatError::NoCheckpoint`] when no signed checkpoint covers the range,
/// [`FormatError::OutOfRange`] when the range is empty or beyond the checkpoint, and
/// [`FormatError::InconsistentCheckpoint`] when the previous checkpoint is not a prefix of
/// this ledger's tree (a fork or a rollback the auditor must hear about).
pub fn plan(
    ledger: &LedgerView,
    request: &BundleRequest,
    now: DateTime<Utc>,
) -> Result<BundlePlan, FormatError> {
    let from = request.from_seq.unwrap_or(1);
    let covering = match request.to_seq {
        Some(to) => ledger.checkpoint_covering(to)?,
        None => ledger.latest_checkpoint()?,
    };
    let Some(checkpoint) = covering else {
        return Err(FormatError::NoCheckpoint(
            match request.to_seq {
                Some(to) => format!("no signed checkpoint covers seq {to} yet (serve --signing-key signs them; export --signing-key signs one offline)"),
                None => "no checkpoint has been signed yet (serve --signing-key signs them; export --signing-key signs one offline)".into(),
            },
        ));
    };
    let size = checkpoint.checkpoint.size;
    let to = request.to_seq.unwrap_or(size);
    if from == 0 || from > to || to > size {
        return Err(FormatError::OutOfRange(format!(
            "the range {from}..={to} is not a non-empty range of seqs within the checkpoint's tree of size {size} (seqs start at 1)"
        )));
    }
    let consistency = match &request.previous {
        None => None,
        Some(previous) => {
            // An empty origin: the caller sent only a size and a root (HTTP).
            if !previous.origin.is_empty() && previous.origin != checkpoint.checkpoint.origin {
                return Err(FormatError::InconsistentCheckpoint(format!(
                    "the previous checkpoint is of origin {:?}, this ledger's is {:?}",
                    previous.origin, checkpoint.checkpoint.origin
                )));
            }
            if previous.size > size {
                return Err(FormatError::InconsistentCheckpoint(format!(
                    "the previous checkpoint has tree size {} but the covering checkpoint only {size}: ask for a later range",
                    previous.size
                )));
            }
            if previous.size == 0 || ledger.root_at(previous.size)? != previous.root {
                return Err(FormatError::InconsistentCheckpoint(format!(
                    "this ledger's tree of size {} is not the one the previous checkpoint signed",
                    previous.size
                )));
            }
            Some(ConsistencyProof::new(
                previous.size,
                size,
                ledger.consistency_proof(previous.size, size)?,
            ))
        }
    };
    let proofs = Proofs {
        tree_size: size,
        first: InclusionProof::new(from - 1, size, ledger.inclusion_proof(from - 1, size)?),
        last: InclusionProof::new(to - 1, size, ledger.inclusion_proof(to - 1, size)?),
        consistency,
    };
    let manifest = Manifest::new(checkpoint.checkpoint.origin.clone(), from, to, size, now);
    Ok(BundlePlan {
        manifest,
        checkpoint,
        proofs,
    })
}

/// An entry missing below a signed checkpoint: the store is damaged (corruption, not the
/// caller's mistake).
fn missing_entry(seq: u64) -> FormatError {
    FormatError::Ledger(ledger::LedgerError::Corrupt(ledger::VerifyFailure {
        seq,
        kind: ledger::FailureKind::SeqGap,
        detail: format!("entry {seq} is missing from the ledger below a signed checkpoint"),
    }))
}

/// Entries read per call of an [`EntryPages`] source.
pub const BUNDLE_PAGE: usize = 1000;

/// Where a bundle's entries come from: `page(from, to)` returns stored entries from
/// `from` on, in order, at most [`BUNDLE_PAGE`] of them and none past `to`. The service
/// takes its read lock per page, so a large bundle never holds the watcher up; entries of
/// an append-only ledger below a signed checkpoint cannot change between pages.
///
/// A source fails with its own error type (the service's lock has failures a ledger
/// does not), which the bundle writers return as is; theirs convert into it.
pub trait EntryPages {
    /// What a failed read is, and what the bundle writers return.
    type Error: From<FormatError>;

    /// One page of entries.
    fn page(&mut self, from: u64, to: u64) -> Result<Vec<StoredEntry>, Self::Error>;
}

impl EntryPages for &LedgerView {
    type Error = FormatError;

    fn page(&mut self, from: u64, to: u64) -> Result<Vec<StoredEntry>, FormatError> {
        Ok(self
            .entries(from, to)
            .take(BUNDLE_PAGE)
            .collect::<Result<Vec<_>, _>>()?)
    }
}

impl<E, F> EntryPages for F
where
    E: From<FormatError>,
    F: FnMut(u64, u64) -> Result<Vec<StoredEntry>, E>,
{
    type Error = E;

    fn page(&mut self, from: u64, to: u64) -> Result<Vec<StoredEntry>, E> {
        self(from, to)
    }
}

/// A bundle writer's own failure, in the error type of its source.
fn fail<E: From<FormatError>>(error: impl Into<FormatError>) -> E {
    E::from(error.into())
}

/// Writes `entries.jsonl` for the plan's range, a page at a time.
fn write_entries<S: EntryPages>(
    source: &mut S,
    plan: &BundlePlan,
    out: &mut impl Write,
) -> Result<(), S::Error> {
    let mut expected = plan.manifest.from_seq;
    while expected <= plan.manifest.to_seq {
        let page = source.page(expected, plan.manifest.to_seq)?;
        if page.is_empty() {
            break;
        }
        for stored in page {
            if stored.entry.seq != expected {
                return Err(fail(missing_entry(expected)));
            }
            serde_json::to_writer(&mut *out, &EntryLine::new(&stored)).map_err(fail)?;
            out.write_all(b"\n").map_err(fail)?;
            expected += 1;
        }
    }
    if expected != plan.manifest.to_seq + 1 {
        return Err(fail(missing_entry(expected)));
    }
    Ok(())
}

fn small_files(plan: &BundlePlan) -> Result<[(&'static str, Vec<u8>); 3], FormatError> {
    let mut manifest = serde_json::to_vec_pretty(&plan.manifest)?;
    manifest.push(b'\n');
    let mut proofs = serde_json::to_vec_pretty(&plan.proofs)?;
    proofs.push(b'\n');
    Ok([
        (MANIFEST_FILE, manifest),
        (CHECKPOINT_FILE, plan.checkpoint.note.clone().into_bytes()),
        (PROOFS_FILE, proofs),
    ])
}

/// Writes the bundle's four files into `dir` (created if absent; existing bundle files are
/// replaced).
pub fn write_dir<S: EntryPages>(
    mut source: S,
    plan: &BundlePlan,
    dir: &Path,
) -> Result<(), S::Error> {
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = std::fs::File::create(dir.join(ENTRIES_FILE)).map_err(fail)?;
    let mut entries = std::io::BufWriter::new(file);
    write_entries(&mut source, plan, &mut entries)?;
    entries.flush().map_err(fail)?;
    entries
        .into_inner()
        .map_err(|e| fail(e.into_error()))?
        .sync_all()
        .map_err(fail)?;
    for (name, bytes) in small_files(plan)? {
        std::fs::write(dir.join(name), bytes).map_err(fail)?;
    }
    Ok(())
}

/// Writes the bundle as a tar archive to `out`. The entries are spooled to a temporary
/// file first: a tar member's header carries its size.
pub fn write_tar<S: EntryPages>(
    mut source: S,
    plan: &BundlePlan,
    out: impl Write,
) -> Result<(), S::Error> {
    let mut spool = tempfile::tempfile().map_err(fail)?;
    {
        let mut writer = std::io::BufWriter::new(&mut spool);
        write_entries(&mut source, plan, &mut writer)?;
        writer.flush().map_err(fail)?;
    }
    Ok(archive(plan, spool, out)?)
}

/// The tar archive of a plan whose entries are spooled in `spool`.
fn archive(
    plan: &BundlePlan,
    mut spool: std::fs::File,
    out: impl Write,
) -> Result<(), FormatError> {
    let entries_len = spool.stream_position()?;
    spool.seek(SeekFrom::Start(0))?;
    let mtime = u64::try_from(plan.manifest.created_at.timestamp()).unwrap_or(0);
    let mut archive = tar::Builder::new(out);
    let header = |len: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header
    };
    let [manifest, checkpoint, proofs] = small_files(plan)?;
    let (name, bytes) = manifest;
    archive.append_data(&mut header(bytes.len() as u64), name, &bytes[..])?;
    archive.append_data(&mut header(entries_len), ENTRIES_FILE, &mut spool)?;
    for (name, bytes) in [checkpoint, proofs] {
        archive.append_data(&mut header(bytes.len() as u64), name, &bytes[..])?;
    }
    archive.into_inner()?.flush()?;
    Ok(())
}
