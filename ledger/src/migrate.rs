//! Moving a ledger between stores (a sled directory and a PostgreSQL database, either
//! way) without changing a byte: every record the source holds is copied as stored, so
//! the chain hashes, the Merkle root and the signed checkpoints are the same afterwards,
//! and the copy is verified in full before it is reported done.

use std::path::Path;

use schemas::Hash;
use serde::Serialize;

use crate::store::{keys, Batch};
use crate::{Ledger, LedgerConfig, LedgerError};

/// Records per committed batch while copying.
const COPY_BATCH: usize = 4096;

/// What a migration copied and what both ledgers agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Entries in both ledgers.
    pub entries: u64,
    /// Records copied (entries, Merkle nodes, snapshots, checkpoints, head, frontier).
    pub records: u64,
    /// The head both ledgers have.
    pub head_hash: Hash,
    /// The Merkle root both ledgers have (hex).
    pub tree_root: String,
    /// Signed checkpoints carried over.
    pub checkpoints: usize,
}

/// Copies the ledger at `from` into a new, empty ledger at `to` (each a directory or a
/// PostgreSQL URL, see [`Ledger::open`]). The source must verify first; the copy is
/// verified in full after, and must have the same head, root and checkpoints.
pub fn migrate(
    from: &Path,
    to: &Path,
    from_config: LedgerConfig,
    to_config: LedgerConfig,
) -> Result<MigrateReport, LedgerError> {
    let source = Ledger::open(
        from,
        LedgerConfig {
            create: false,
            allow_corrupt: false,
            ..from_config
        },
    )?;
    let verified = source.verify()?;
    if let Some(failure) = verified.failure {
        return Err(LedgerError::Corrupt(failure));
    }
    let to_config = LedgerConfig {
        create: true,
        allow_corrupt: false,
        ..to_config
    };
    let target = Ledger::open(to, to_config.clone())?;
    let occupied = target.head().seq;
    if occupied != 0 || !target.checkpoints()?.is_empty() {
        return Err(LedgerError::TargetNotEmpty {
            path: to.to_path_buf(),
            entries: occupied,
        });
    }
    let mut records = 0u64;
    let mut batch = Batch::default();
    for record in source.store.scan(&[0u8], &[0xffu8; 16], false) {
        let (key, value) = record?;
        // The target keeps its own format and identity records; a shared store's writer
        // status is not part of the ledger.
        if key == keys::FORMAT || key == keys::LEDGER_ID || key == keys::WRITER {
            continue;
        }
        batch.insert(key, value);
        records += 1;
        if batch.len() >= COPY_BATCH {
            target.store.commit(std::mem::take(&mut batch))?;
        }
    }
    target.store.commit(batch)?;
    target.store.flush()?;
    drop(target);
    // Reopened, the target walks its new tail; a flush then records its head as the
    // acknowledged high-water mark (for a directory).
    let mut target = Ledger::open(to, to_config)?;
    target.flush()?;
    let copied = target.verify()?;
    if let Some(failure) = copied.failure {
        return Err(LedgerError::Corrupt(failure));
    }
    let (source_checkpoints, target_checkpoints) = (source.checkpoints()?, target.checkpoints()?);
    if target.head() != source.head()
        || target.tree_root() != source.tree_root()
        || target_checkpoints != source_checkpoints
    {
        return Err(LedgerError::Storage(crate::store::StoreError::Damaged(
            format!(
                "the copy at {} does not read back as the source: head {} vs {}",
                to.display(),
                target.head().hash,
                source.head().hash
            ),
        )));
    }
    Ok(MigrateReport {
        entries: target.head().seq,
        records,
        head_hash: target.head().hash,
        tree_root: schemas::bundle::hash32_to_hex(&target.tree_root()),
        checkpoints: target_checkpoints.len(),
    })
}
