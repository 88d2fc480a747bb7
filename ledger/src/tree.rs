//! The RFC 6962 Merkle tree over the ledger's entries, stored beside them in the store.
//!
//! Leaf `i` is entry seq `i + 1`, and its leaf hash is `SHA-256(0x00 || stored entry
//! bytes)`: the very bytes the blake3 chain covers, so the chain and the tree can never
//! disagree about what was logged. Appending leaf `i` completes the perfect nodes
//! `(0, i), (1, i / 2), …` (one more per trailing one bit of `i`). Those of level
//! [`STORED_LEVEL`] (3) and above are stored under one key per completing leaf, `T ‖ i`, as
//! their concatenation bottom-up: node `(level, index)` is at offset
//! `32 * (level - STORED_LEVEL)` of the value of leaf `(index + 1) * 2^level - 1`. The
//! nodes below are recomputed from the entries they cover (at most 8) when a proof needs
//! them. So only one entry in eight costs an extra key: a key costs about as much to
//! write as a whole entry, and a key per entry halved the append rate. The frontier
//! (compact range) after the head is stored under `R` in the same batch as the head
//! record, so open needs no reads to resume appending.
//!
//! Signed checkpoints are kept under `C ‖ tree size` as the C2SP signed-note text.

use schemas::bundle::hash32_to_hex;
use schemas::checkpoint::{Checkpoint, SignedNote, SignerKey};
use schemas::merkle::{self, CompactRange, Hash32, NodeReader, HASH_SIZE};

use crate::store::{keys, Batch, Store, StoreError};
use crate::verify::{FailureKind, VerifyFailure};
use crate::{Ledger, LedgerError, LedgerView};

/// Reads stored perfect nodes for the proof generators.
pub(crate) struct StoredNodes<'a>(pub(crate) &'a dyn Store);

/// Why a stored node could not be read.
#[derive(Debug)]
pub(crate) enum NodeReadError {
    /// The store failed.
    Storage(StoreError),
    /// The node is not stored, or its record is too short.
    Missing,
}

/// The lowest level of Merkle nodes kept in `T` records; lower ones are recomputed from
/// the (at most `2^STORED_LEVEL`) entries under them.
pub(crate) const STORED_LEVEL: u32 = 3;

impl NodeReader for StoredNodes<'_> {
    type Error = NodeReadError;

    fn node(&self, level: u32, index: u64) -> Result<Hash32, NodeReadError> {
        if level < STORED_LEVEL {
            return self.node_from_entries(level, index);
        }
        // The last leaf under the node is the one whose append completed it.
        let end = 1u64
            .checked_shl(level)
            .and_then(|width| index.checked_add(1)?.checked_mul(width))
            .ok_or(NodeReadError::Missing)?;
        let value = self
            .0
            .get(&keys::seq_key(keys::TREE, end - 1))
            .map_err(NodeReadError::Storage)?
            .ok_or(NodeReadError::Missing)?;
        let offset = (level - STORED_LEVEL) as usize * HASH_SIZE;
        value
            .get(offset..offset + HASH_SIZE)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(NodeReadError::Missing)
    }
}

impl StoredNodes<'_> {
    /// Node `(level, index)` recomputed from the stored bytes of the `2^level` entries
    /// under it, ignoring any stored record.
    fn node_from_entries(&self, level: u32, index: u64) -> Result<Hash32, NodeReadError> {
        let width = 1u64.checked_shl(level).ok_or(NodeReadError::Missing)?;
        let start = index.checked_mul(width).ok_or(NodeReadError::Missing)?;
        let end = start.checked_add(width).ok_or(NodeReadError::Missing)?;
        let mut leaves = Vec::with_capacity(usize::try_from(width).unwrap_or(0));
        let records = self.0.scan(
            &keys::seq_key(keys::ENTRY, start + 1),
            &keys::seq_key(keys::ENTRY, end),
            false,
        );
        for item in records {
            let (_, value) = item.map_err(NodeReadError::Storage)?;
            let bytes = value.get(HASH_SIZE..).ok_or(NodeReadError::Missing)?;
            leaves.push(merkle::leaf_hash(bytes));
        }
        if leaves.len() as u64 != width {
            return Err(NodeReadError::Missing);
        }
        Ok(merkle::root_from_leaf_hashes(&leaves))
    }
}

impl std::fmt::Display for NodeReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeReadError::Storage(e) => write!(f, "storage error: {e}"),
            NodeReadError::Missing => f.write_str("the node is not stored"),
        }
    }
}

/// Whether the stored node of level [`STORED_LEVEL`] over leaf `leaf` equals the one its
/// entries hash to. `true` when that group of leaves is not complete yet (nothing stored
/// to compare with).
pub(crate) fn stored_group_matches(tree: &dyn Store, leaf: u64) -> Result<bool, LedgerError> {
    let index = leaf >> STORED_LEVEL;
    let last = ((index + 1) << STORED_LEVEL) - 1;
    let Some(value) = tree.get(&keys::seq_key(keys::TREE, last))? else {
        // Either the group is incomplete or the record is gone; the walk judges the latter.
        return Ok(true);
    };
    let computed = match StoredNodes(tree).node_from_entries(STORED_LEVEL, index) {
        Ok(computed) => computed,
        Err(NodeReadError::Storage(e)) => return Err(e.into()),
        Err(NodeReadError::Missing) => return Ok(false),
    };
    Ok(value.get(..HASH_SIZE) == Some(&computed[..]))
}

/// The value stored under `T ‖ i` for the nodes appending leaf `i` completed: those of
/// level [`STORED_LEVEL`] and above, bottom-up; `None` when there are none (seven leaves in
/// eight), and then no `T` record is written.
pub(crate) fn nodes_value(nodes: &[merkle::PerfectNode]) -> Option<Vec<u8>> {
    let stored: Vec<u8> = nodes
        .iter()
        .filter(|(level, _, _)| *level >= STORED_LEVEL)
        .flat_map(|(_, _, hash)| hash.iter().copied())
        .collect();
    (!stored.is_empty()).then_some(stored)
}

/// The value stored under `R`: the frontier's hashes, largest subtree first (the size is
/// the head seq).
pub(crate) fn frontier_value(range: &CompactRange) -> Vec<u8> {
    range.hashes().concat()
}

/// Parses the `R` value for a tree of `size` leaves.
pub(crate) fn parse_frontier(size: u64, value: &[u8]) -> Option<CompactRange> {
    if value.len() % HASH_SIZE != 0 {
        return None;
    }
    let hashes = value
        .chunks_exact(HASH_SIZE)
        .map(|chunk| chunk.try_into().expect("32-byte chunks"))
        .collect();
    CompactRange::from_parts(size, hashes).ok()
}

/// A signed checkpoint kept in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The parsed body: origin, tree size, root.
    pub checkpoint: Checkpoint,
    /// The whole signed note, exactly as signed (what `GET /v1/checkpoint` serves).
    pub note: String,
}

impl StoredCheckpoint {
    fn parse(note: String) -> Result<StoredCheckpoint, LedgerError> {
        let parsed = SignedNote::parse(&note)?;
        let checkpoint = Checkpoint::parse_body(&parsed.body)?;
        Ok(StoredCheckpoint { checkpoint, note })
    }
}

fn proof_error<E: std::fmt::Display>(error: merkle::ProofError<E>) -> LedgerError {
    match error {
        merkle::ProofError::IndexOutOfRange { .. } | merkle::ProofError::SizeOrder { .. } => {
            LedgerError::OutOfRange(error.to_string())
        }
        merkle::ProofError::Node { .. } => LedgerError::Tree(error.to_string()),
    }
}

impl LedgerView {
    /// The number of leaves in the Merkle tree: one per entry, so the head seq.
    pub fn tree_size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of the Merkle tree at the head.
    pub fn tree_root(&self) -> Hash32 {
        self.frontier.root()
    }

    /// The root of the tree of the first `size` entries (any past size), from stored nodes.
    pub fn root_at(&self, size: u64) -> Result<Hash32, LedgerError> {
        self.within_tree(size)?;
        merkle::root_at(&StoredNodes(self.store.as_ref()), size).map_err(proof_error)
    }

    /// The inclusion proof of leaf `leaf_index` (entry seq `leaf_index + 1`) in the tree of
    /// `tree_size` leaves, in `O(log n)` reads of stored nodes.
    pub fn inclusion_proof(
        &self,
        leaf_index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash32>, LedgerError> {
        self.within_tree(tree_size)?;
        merkle::inclusion_proof(&StoredNodes(self.store.as_ref()), leaf_index, tree_size)
            .map_err(proof_error)
    }

    /// The consistency proof that the tree of `from_size` leaves is a prefix of the tree of
    /// `to_size` leaves.
    pub fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<Hash32>, LedgerError> {
        self.within_tree(to_size)?;
        merkle::consistency_proof(&StoredNodes(self.store.as_ref()), from_size, to_size)
            .map_err(proof_error)
    }

    fn within_tree(&self, size: u64) -> Result<(), LedgerError> {
        if size > self.tree_size() {
            return Err(LedgerError::OutOfRange(format!(
                "tree size {size} is beyond the head ({})",
                self.tree_size()
            )));
        }
        Ok(())
    }

    /// The newest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        latest_checkpoint(self.store.as_ref())
    }

    /// The smallest signed checkpoint whose tree holds at least `size` leaves.
    pub fn checkpoint_covering(&self, size: u64) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let mut records = self.store.scan(
            &keys::seq_key(keys::CHECKPOINT, size),
            &keys::seq_key(keys::CHECKPOINT, u64::MAX),
            false,
        );
        match records.next() {
            Some(item) => {
                let note = String::from_utf8_lossy(&item?.1).into_owned();
                Ok(Some(StoredCheckpoint::parse(note)?))
            }
            None => Ok(None),
        }
    }

    /// Every signed checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        let records = self.store.scan(
            &keys::seq_key(keys::CHECKPOINT, 0),
            &keys::seq_key(keys::CHECKPOINT, u64::MAX),
            false,
        );
        let mut out = Vec::new();
        for item in records {
            let note = String::from_utf8_lossy(&item?.1).into_owned();
            out.push(StoredCheckpoint::parse(note)?);
        }
        Ok(out)
    }

    /// Whether this ledger holds the tree `checkpoint` describes as a prefix: `Err` names
    /// a truncation (the ledger is shorter), or a rollback or fork (another root at that
    /// size, or no consistency proof to the head). The root at the checkpoint's size is
    /// recomputed from the stored entries' bytes, not taken from the stored nodes, so a
    /// store whose node records were forged along with its entries cannot pass.
    pub fn check_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), VerifyFailure> {
        let size = checkpoint.size;
        if size <= self.tree_size() {
            let failure = |detail: String| VerifyFailure {
                seq: size,
                kind: FailureKind::CheckpointMismatch,
                detail,
            };
            let mut range = CompactRange::new();
            for stored in self.entries(1, size) {
                let stored =
                    stored.map_err(|e| failure(format!("cannot read the entries: {e}")))?;
                range.append(merkle::leaf_hash(&stored.bytes));
            }
            if range.size() != size {
                return Err(failure(format!(
                    "entry {} is missing below the checkpoint's tree size {size}",
                    range.size() + 1
                )));
            }
            if range.root() != checkpoint.root {
                return Err(failure(format!(
                    "the checkpoint at tree size {size} has root {} but this ledger's entries hash to {}: the log was rewritten (a fork)",
                    hash32_to_hex(&checkpoint.root),
                    hash32_to_hex(&range.root())
                )));
            }
        }
        check_consistent(self.store.as_ref(), &self.frontier, checkpoint)
    }
}

impl Ledger {
    /// Signs a checkpoint of the durable head with `key` under `origin` and keeps it.
    ///
    /// Flushes first: a checkpoint only ever covers entries on disk, and an empty ledger
    /// is not signed (`OutOfRange`). Returns the latest
    /// checkpoint unchanged when it already covers the head, and refuses (fails closed) if
    /// the head's tree is not an extension of the latest signed one, so the service can
    /// never sign two inconsistent trees.
    pub fn sign_checkpoint(
        &mut self,
        key: &SignerKey,
        origin: &str,
    ) -> Result<StoredCheckpoint, LedgerError> {
        if self.view.corruption.is_some() || self.config.allow_corrupt {
            return Err(LedgerError::ReadOnly);
        }
        if !self.is_writer() {
            return Err(LedgerError::Follower);
        }
        self.flush()?;
        let size = self.tree_size();
        if size == 0 {
            // Verifiers reject proofs from the empty tree: there is nothing to commit to.
            return Err(LedgerError::OutOfRange(
                "the ledger is empty: there is no tree to sign".into(),
            ));
        }
        let latest = self.latest_checkpoint()?;
        if let Some(latest) = &latest {
            check_consistent(
                self.view.store.as_ref(),
                &self.view.frontier,
                &latest.checkpoint,
            )
            .map_err(LedgerError::Corrupt)?;
            if latest.checkpoint.origin != origin {
                // The origin is the log's identity in every checkpoint auditors hold:
                // signing under another one would start a second, unrelated log.
                return Err(LedgerError::OutOfRange(format!(
                    "this ledger's checkpoints are of origin {:?}; refusing to sign one of origin {origin:?}",
                    latest.checkpoint.origin
                )));
            }
            if latest.checkpoint.size == size {
                let mut note = SignedNote::parse(&latest.note)?;
                let signed_by_key = note
                    .signatures
                    .iter()
                    .any(|s| s.name == key.name() && s.key_id == key.key_id());
                // A note holds at most MAX_SIGNATURES lines: a note past it would not parse.
                if signed_by_key || note.signatures.len() >= schemas::checkpoint::MAX_SIGNATURES {
                    return Ok(latest.clone());
                }
                // A rotated key cosigns the same tree: the note then verifies for auditors
                // who trust either key.
                note.signatures
                    .extend(SignedNote::sign(&note.body, &[key])?.signatures);
                let text = note.to_text();
                self.keep_checkpoint(size, &text)?;
                return Ok(StoredCheckpoint {
                    checkpoint: latest.checkpoint.clone(),
                    note: text,
                });
            }
        }
        let checkpoint = Checkpoint {
            origin: origin.to_string(),
            size,
            root: self.tree_root(),
            extensions: Vec::new(),
        };
        let body = checkpoint.to_body()?;
        let note = SignedNote::sign(&body, &[key])?.to_text();
        self.keep_checkpoint(size, &note)?;
        Ok(StoredCheckpoint { checkpoint, note })
    }

    /// Stores a signed checkpoint note of tree size `size`, durably.
    fn keep_checkpoint(&mut self, size: u64, note: &str) -> Result<(), LedgerError> {
        let mut batch = Batch::default();
        batch.insert(keys::seq_key(keys::CHECKPOINT, size), note.as_bytes());
        self.view.store.commit(batch)?;
        self.flush()?;
        Ok(())
    }
}

/// The newest checkpoint stored in `tree`.
pub(crate) fn latest_checkpoint(tree: &dyn Store) -> Result<Option<StoredCheckpoint>, LedgerError> {
    let mut records = tree.scan(
        &keys::seq_key(keys::CHECKPOINT, 0),
        &keys::seq_key(keys::CHECKPOINT, u64::MAX),
        true,
    );
    match records.next() {
        Some(item) => {
            let note = String::from_utf8_lossy(&item?.1).into_owned();
            Ok(Some(StoredCheckpoint::parse(note)?))
        }
        None => Ok(None),
    }
}

/// Proves, from stored nodes, that the tree `checkpoint` names is a prefix of the tree
/// whose frontier is `head`: its root at that size and a consistency proof to the head.
pub(crate) fn check_consistent(
    tree: &dyn Store,
    head: &CompactRange,
    checkpoint: &Checkpoint,
) -> Result<(), VerifyFailure> {
    let failure = |detail: String| VerifyFailure {
        seq: checkpoint.size,
        kind: FailureKind::CheckpointMismatch,
        detail,
    };
    let size = checkpoint.size;
    if size > head.size() {
        return Err(failure(format!(
            "the ledger holds {} entries but a checkpoint was signed at tree size {size}: it was truncated or rolled back",
            head.size()
        )));
    }
    let nodes = StoredNodes(tree);
    let root = merkle::root_at(&nodes, size)
        .map_err(|e| failure(format!("the tree of size {size} cannot be recomputed: {e}")))?;
    if root != checkpoint.root {
        return Err(failure(format!(
            "the checkpoint at tree size {size} has root {} but the ledger's tree of that size has root {}: the log was rewritten (a fork)",
            hash32_to_hex(&checkpoint.root),
            hash32_to_hex(&root)
        )));
    }
    if size > 0 {
        let proof = merkle::consistency_proof(&nodes, size, head.size())
            .map_err(|e| failure(format!("no consistency proof from size {size}: {e}")))?;
        merkle::verify_consistency(size, head.size(), &checkpoint.root, &head.root(), &proof)
            .map_err(|e| {
                failure(format!(
                    "the head is not consistent with the checkpoint at size {size}: {e}"
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{pod, raw_store, rewind_high_water};
    use crate::{LedgerConfig, StoredEntry};
    use chrono::{TimeZone, Utc};
    use schemas::Hash;

    fn config() -> LedgerConfig {
        LedgerConfig {
            background_snapshots: false,
            snapshot_every: 16,
            allow_corrupt: false,
            create: true,
            cache_bytes: None,
            password_file: None,
            replica: false,
            lease: None,
        }
    }

    fn key() -> SignerKey {
        SignerKey::from_seed("test.example/ledger", [7; 32]).unwrap()
    }

    fn leaves(ledger: &Ledger) -> Vec<Vec<u8>> {
        ledger
            .entries(1, u64::MAX)
            .map(|e| e.map(|StoredEntry { bytes, .. }| bytes).unwrap())
            .collect()
    }

    fn append(ledger: &mut Ledger, range: std::ops::RangeInclusive<u64>) {
        let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        ledger.append(range.map(pod), at).unwrap();
        ledger.flush().unwrap();
    }

    #[test]
    fn the_tree_is_the_rfc6962_tree_of_the_stored_bytes_across_batches_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        assert_eq!(ledger.tree_root(), merkle::EMPTY_ROOT);
        append(&mut ledger, 1..=1);
        append(&mut ledger, 2..=37);
        // More than two pipeline chunks: written by the second thread.
        append(&mut ledger, 38..=700);
        let bytes = leaves(&ledger);
        assert_eq!(ledger.tree_size(), 700);
        assert_eq!(ledger.tree_root(), merkle::root(&bytes));
        for size in [1, 2, 3, 37, 64, 255, 256, 699, 700] {
            assert_eq!(
                ledger.root_at(size).unwrap(),
                merkle::root(&bytes[..size as usize])
            );
        }
        drop(ledger);
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        assert_eq!(ledger.tree_root(), merkle::root(&bytes));
        append(&mut ledger, 701..=705);
        let bytes = leaves(&ledger);
        assert_eq!(ledger.tree_root(), merkle::root(&bytes));
        assert!(ledger.verify().unwrap().ok());
    }

    #[test]
    fn proofs_from_stored_nodes_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=300);
        let bytes = leaves(&ledger);
        for (index, size) in [
            (0, 1),
            (0, 300),
            (150, 300),
            (299, 300),
            (5, 6),
            (63, 64),
            (64, 65),
        ] {
            let proof = ledger.inclusion_proof(index, size).unwrap();
            let root = ledger.root_at(size).unwrap();
            let leaf = merkle::leaf_hash(&bytes[index as usize]);
            merkle::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        }
        for (from, to) in [
            (1, 300),
            (7, 8),
            (64, 300),
            (299, 300),
            (300, 300),
            (100, 200),
        ] {
            let proof = ledger.consistency_proof(from, to).unwrap();
            let (old, new) = (ledger.root_at(from).unwrap(), ledger.root_at(to).unwrap());
            merkle::verify_consistency(from, to, &old, &new, &proof).unwrap();
        }
        assert!(matches!(
            ledger.inclusion_proof(300, 300),
            Err(LedgerError::OutOfRange(_))
        ));
        assert!(matches!(
            ledger.consistency_proof(10, 301),
            Err(LedgerError::OutOfRange(_))
        ));
    }

    #[test]
    fn checkpoints_are_kept_and_reused_until_the_head_moves() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        assert!(matches!(
            ledger.sign_checkpoint(&key(), "test.example/ledger"),
            Err(LedgerError::OutOfRange(_))
        ));
        append(&mut ledger, 1..=10);
        let first = ledger
            .sign_checkpoint(&key(), "test.example/ledger")
            .unwrap();
        assert_eq!(first.checkpoint.size, 10);
        assert_eq!(first.checkpoint.root, ledger.tree_root());
        schemas::checkpoint::open_note(&first.note, &[key().verifier()]).unwrap();
        let again = ledger
            .sign_checkpoint(&key(), "test.example/ledger")
            .unwrap();
        assert_eq!(again, first);
        // A rotated key cosigns the same tree instead of leaving the old key's note alone.
        let rotated = SignerKey::from_seed("test.example/rotated", [8; 32]).unwrap();
        let cosigned = ledger
            .sign_checkpoint(&rotated, "test.example/ledger")
            .unwrap();
        assert_eq!(cosigned.checkpoint, first.checkpoint);
        schemas::checkpoint::open_note(&cosigned.note, &[rotated.verifier()]).unwrap();
        schemas::checkpoint::open_note(&cosigned.note, &[key().verifier()]).unwrap();
        assert_eq!(
            ledger
                .sign_checkpoint(&rotated, "test.example/ledger")
                .unwrap(),
            cosigned
        );
        let first = cosigned;
        append(&mut ledger, 11..=20);
        let second = ledger
            .sign_checkpoint(&key(), "test.example/ledger")
            .unwrap();
        assert_eq!(second.checkpoint.size, 20);
        assert_eq!(
            ledger.checkpoints().unwrap(),
            vec![first.clone(), second.clone()]
        );
        assert_eq!(ledger.checkpoint_covering(5).unwrap(), Some(first.clone()));
        assert_eq!(
            ledger.checkpoint_covering(11).unwrap(),
            Some(second.clone())
        );
        assert_eq!(ledger.checkpoint_covering(21).unwrap(), None);
        // The origin is the log's identity: another one is refused, now and later.
        assert!(matches!(
            ledger.sign_checkpoint(&key(), "another.example/ledger"),
            Err(LedgerError::OutOfRange(_))
        ));
        append(&mut ledger, 21..=22);
        assert!(matches!(
            ledger.sign_checkpoint(&key(), "another.example/ledger"),
            Err(LedgerError::OutOfRange(_))
        ));
        assert_eq!(ledger.latest_checkpoint().unwrap(), Some(second.clone()));
        drop(ledger);
        let ledger = Ledger::open(dir.path(), config()).unwrap();
        assert_eq!(ledger.latest_checkpoint().unwrap(), Some(second));
        assert!(ledger.check_checkpoint(&first.checkpoint).is_ok());
        assert!(ledger.verify().unwrap().ok());
    }

    /// Rewrites the store as a forger with write access would: entries after `keep`
    /// removed (and, with `replacement`, new ones appended in their place), every chain
    /// hash, Merkle node, the frontier and the head recomputed.
    fn rewrite_after(
        dir: &std::path::Path,
        keep: u64,
        replacement: Option<std::ops::RangeInclusive<u64>>,
    ) {
        let tree = raw_store(dir);
        let (head, _) = crate::read_head(&tree).unwrap();
        for seq in keep + 1..=head {
            tree.remove(&keys::seq_key(keys::ENTRY, seq)).unwrap();
            tree.remove(&keys::seq_key(keys::TREE, seq - 1)).unwrap();
            tree.remove(&keys::seq_key(keys::SNAPSHOT, seq)).unwrap();
        }
        let frontier = CompactRange::from_reader(&StoredNodes(&tree), keep).unwrap();
        let hash = Hash::from_slice(
            &tree
                .get(&keys::seq_key(keys::ENTRY, keep))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        let seq_hash = crate::Head {
            seq: keep,
            hash,
            observed_at: None,
        };
        tree.insert(keys::HEAD, &crate::head_record(&seq_hash)[..])
            .unwrap();
        tree.insert(keys::FRONTIER, &frontier_value(&frontier))
            .unwrap();
        tree.flush().unwrap();
        drop(tree);
        // The forger rewrites the high-water mark too: only the checkpoint catches this.
        rewind_high_water(dir, keep);
        if let Some(range) = replacement {
            let mut ledger = Ledger::open(dir, config()).unwrap();
            let at = Utc.timestamp_opt(1_790_000_100, 0).unwrap();
            ledger.append(range.map(|n| pod(n + 1000)), at).unwrap();
            ledger.flush().unwrap();
        }
    }
    #[test]
    fn a_ledger_rolled_back_behind_its_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=30);
        ledger.sign_checkpoint(&key(), "o").unwrap();
        drop(ledger);
        // Only the entries are rolled back: the checkpoint the ledger signed remains.
        rewrite_after(dir.path(), 25, None);
        match Ledger::open(dir.path(), config()) {
            Err(LedgerError::Corrupt(failure)) => {
                assert_eq!(
                    (failure.seq, failure.kind),
                    (30, FailureKind::CheckpointMismatch)
                );
                assert!(failure.detail.contains("truncated"), "{}", failure.detail);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_forked_ledger_is_refused_at_open_and_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=30);
        ledger.sign_checkpoint(&key(), "o").unwrap();
        drop(ledger);
        // Rolling back is refused by open, so a forger who wants a different history of
        // the same length must write it under the checkpoint's nose: rewrite the store.
        let checkpoint = {
            let tree = raw_store(dir.path());
            let value = tree
                .remove(&keys::seq_key(keys::CHECKPOINT, 30))
                .unwrap()
                .unwrap();
            tree.flush().unwrap();
            value
        };
        rewrite_after(dir.path(), 20, Some(21..=30));
        {
            let tree = raw_store(dir.path());
            tree.insert(&keys::seq_key(keys::CHECKPOINT, 30), &checkpoint)
                .unwrap();
            tree.flush().unwrap();
        }
        match Ledger::open(dir.path(), config()) {
            Err(LedgerError::Corrupt(failure)) => {
                assert_eq!(
                    (failure.seq, failure.kind),
                    (30, FailureKind::CheckpointMismatch)
                );
                assert!(failure.detail.contains("fork"), "{}", failure.detail);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let forensic = LedgerConfig {
            allow_corrupt: true,
            create: true,
            cache_bytes: None,
            password_file: None,
            replica: false,
            lease: None,
            ..config()
        };
        let ledger = Ledger::open(dir.path(), forensic).unwrap();
        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!(failure.kind, FailureKind::CheckpointMismatch);
    }

    #[test]
    fn a_changed_merkle_node_or_frontier_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=40);
        // Leaf 15 completes nodes of levels 0 to 4: levels 3 and 4 are stored.
        assert_eq!(
            ledger
                .store
                .get(&keys::seq_key(keys::TREE, 15))
                .unwrap()
                .map(|v| v.len()),
            Some(64)
        );
        // Seven leaves in eight complete no stored level: no record at all.
        assert_eq!(
            ledger.store.get(&keys::seq_key(keys::TREE, 4)).unwrap(),
            None
        );
        let mut value = ledger
            .store
            .get(&keys::seq_key(keys::TREE, 15))
            .unwrap()
            .unwrap()
            .to_vec();
        value[40] ^= 1;
        ledger
            .store
            .insert(&keys::seq_key(keys::TREE, 15), &value)
            .unwrap();
        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!((failure.seq, failure.kind), (16, FailureKind::TreeMismatch));
        ledger
            .store
            .remove(&keys::seq_key(keys::TREE, 15))
            .unwrap()
            .unwrap();
        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!((failure.seq, failure.kind), (16, FailureKind::TreeMismatch));
        // A stray record where none belongs is caught too.
        ledger
            .store
            .insert(&keys::seq_key(keys::TREE, 4), &[0u8; 32][..])
            .unwrap();
        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!((failure.seq, failure.kind), (5, FailureKind::TreeMismatch));
        drop(ledger);

        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=40);
        let mut value = ledger.store.get(keys::FRONTIER).unwrap().unwrap().to_vec();
        value[3] ^= 1;
        ledger.store.insert(keys::FRONTIER, &value).unwrap();
        ledger.flush().unwrap();
        drop(ledger);
        match Ledger::open(dir.path(), config()) {
            Err(LedgerError::Corrupt(failure)) => {
                assert_eq!((failure.seq, failure.kind), (40, FailureKind::TreeMismatch))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
