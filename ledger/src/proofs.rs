//! Merkle proofs and signed checkpoints over the ledger: roots at past sizes, inclusion
//! and consistency proofs (from the nodes `merkle_store` keeps), and the signed
//! checkpoints kept under `C ‖ tree size` as C2SP signed-note text, with the check that
//! this ledger extends a given checkpoint.

use schemas::bundle::hash32_to_hex;
use schemas::checkpoint::{Checkpoint, SignedNote, SignerKey};
use schemas::merkle::{self, CompactRange, Hash32};

use crate::merkle_store::{NodeReadError, StoredNodes};
use crate::store::{keys, Batch, Store};
use crate::verify::{FailureKind, VerifyFailure};
use crate::{Ledger, LedgerError, LedgerView};

/// A signed checkpoint kept in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The parsed body: origin, tree size, root.
    pub checkpoint: Checkpoint,
    /// The whole signed note, exactly as signed (what `GET /v1/checkpoint` serves).
    pub note: String,
}

impl StoredCheckpoint {
    /// A stored `C` record's value: the signed note's text.
    fn from_record(value: &[u8]) -> Result<StoredCheckpoint, LedgerError> {
        StoredCheckpoint::parse(String::from_utf8_lossy(value).into_owned())
    }

    fn parse(note: String) -> Result<StoredCheckpoint, LedgerError> {
        let parsed = SignedNote::parse(&note)?;
        let checkpoint = Checkpoint::parse_body(&parsed.body)?;
        Ok(StoredCheckpoint { checkpoint, note })
    }
}

fn proof_error(error: merkle::ProofError<NodeReadError>) -> LedgerError {
    match error {
        merkle::ProofError::IndexOutOfRange { .. } | merkle::ProofError::SizeOrder { .. } => {
            LedgerError::OutOfRange(error.to_string())
        }
        merkle::ProofError::Node {
            error: NodeReadError::Storage(error),
            ..
        } => LedgerError::Storage(error),
        merkle::ProofError::Node {
            level,
            index,
            error: NodeReadError::Missing,
        } => LedgerError::NodeMissing { level, index },
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

    /// The newest signed checkpoint this view's log reaches, if any. A checkpoint past
    /// the view's head (signed since by the writer, when this view is an older one or a
    /// follower's) is not this view's: nothing it serves could be proved against it.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        first_checkpoint(self.store.as_ref(), (0, self.head.seq), true)
    }

    /// The smallest signed checkpoint whose tree holds at least `size` leaves, among those
    /// this view's log reaches.
    pub fn checkpoint_covering(&self, size: u64) -> Result<Option<StoredCheckpoint>, LedgerError> {
        first_checkpoint(self.store.as_ref(), (size, self.head.seq), false)
    }

    /// Every signed checkpoint this view's log reaches, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        stored_checkpoints(self.store.as_ref(), self.head.seq)
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
    /// is not signed ([`LedgerError::Empty`]). Returns the latest
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
            return Err(LedgerError::Empty);
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
                return Err(LedgerError::OriginMismatch {
                    kept: latest.checkpoint.origin.clone(),
                    requested: origin.to_string(),
                });
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

/// The signed checkpoints kept in `store` of a tree size up to `max_size`, oldest first.
pub(crate) fn stored_checkpoints(
    store: &dyn Store,
    max_size: u64,
) -> Result<Vec<StoredCheckpoint>, LedgerError> {
    let records = store.scan(
        &keys::seq_key(keys::CHECKPOINT, 0),
        &keys::seq_key(keys::CHECKPOINT, max_size),
        false,
    );
    let mut out = Vec::new();
    for item in records {
        out.push(StoredCheckpoint::from_record(&item?.1)?);
    }
    Ok(out)
}

/// The first checkpoint kept in `store` of a tree size in `from..=to`: the smallest, or the
/// largest when `newest`.
fn first_checkpoint(
    store: &dyn Store,
    (from, to): (u64, u64),
    newest: bool,
) -> Result<Option<StoredCheckpoint>, LedgerError> {
    let mut records = store.scan(
        &keys::seq_key(keys::CHECKPOINT, from),
        &keys::seq_key(keys::CHECKPOINT, to),
        newest,
    );
    match records.next() {
        Some(item) => Ok(Some(StoredCheckpoint::from_record(&item?.1)?)),
        None => Ok(None),
    }
}

/// The stored checkpoints of tree sizes up to `max_size` (only the newest with `newest`),
/// each checked against `head` as [`check_consistent`] does: the first failure, where a
/// record that does not parse as a signed checkpoint is damage at the tree size its key
/// names (not an error that would keep a damaged ledger from being opened for forensics).
pub(crate) fn verify_stored_checkpoints(
    store: &dyn Store,
    head: &CompactRange,
    max_size: u64,
    newest: bool,
) -> Result<Option<VerifyFailure>, LedgerError> {
    let records = store.scan(
        &keys::seq_key(keys::CHECKPOINT, 0),
        &keys::seq_key(keys::CHECKPOINT, max_size),
        newest,
    );
    for item in records {
        let (key, value) = item?;
        let size = keys::seq_of(&key).unwrap_or(0);
        let failure = match StoredCheckpoint::from_record(&value) {
            Ok(stored) => check_consistent(store, head, &stored.checkpoint).err(),
            Err(error) => Some(VerifyFailure {
                seq: size,
                kind: FailureKind::CheckpointMismatch,
                detail: format!("the checkpoint kept for tree size {size} does not parse: {error}"),
            }),
        };
        if failure.is_some() || newest {
            return Ok(failure);
        }
    }
    Ok(None)
}

/// Proves, from stored nodes, that the tree `checkpoint` names is a prefix of the tree
/// whose frontier is `head`: its root at that size and a consistency proof to the head.
pub(crate) fn check_consistent(
    store: &dyn Store,
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
        // Signed by a live writer after the head was read (see `committed_since`).
        if matches!(crate::verify::committed_since(store, size), Ok(true)) {
            return Ok(());
        }
        return Err(failure(format!(
            "the ledger holds {} entries but a checkpoint was signed at tree size {size}: it was truncated or rolled back",
            head.size()
        )));
    }
    let nodes = StoredNodes(store);
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
    use crate::merkle_store::frontier_value;
    use crate::tests::{pod, raw_store, rewind_high_water};
    use crate::{LedgerConfig, StoredEntry};
    use chrono::{TimeZone, Utc};
    use schemas::Hash;

    fn config() -> LedgerConfig {
        LedgerConfig {
            background_snapshots: false,
            snapshot_every: 16,
            ..LedgerConfig::default()
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
            Err(LedgerError::Empty)
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
        let at_ten = ledger.reader().view();
        append(&mut ledger, 11..=20);
        let second = ledger
            .sign_checkpoint(&key(), "test.example/ledger")
            .unwrap();
        assert_eq!(second.checkpoint.size, 20);
        // A view published before it (a follower's, or one a reader still holds) does not
        // see a checkpoint past its head.
        assert_eq!(at_ten.head().seq, 10);
        assert_eq!(at_ten.latest_checkpoint().unwrap(), Some(first.clone()));
        assert_eq!(at_ten.checkpoint_covering(11).unwrap(), None);
        assert_eq!(at_ten.checkpoints().unwrap(), vec![first.clone()]);
        // (It holds the store open.)
        drop(at_ten);
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
            Err(LedgerError::OriginMismatch { .. })
        ));
        append(&mut ledger, 21..=22);
        assert!(matches!(
            ledger.sign_checkpoint(&key(), "another.example/ledger"),
            Err(LedgerError::OriginMismatch { .. })
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
        let store = raw_store(dir);
        let (head, _) = crate::read_head(&store).unwrap();
        for seq in keep + 1..=head {
            store.remove(&keys::seq_key(keys::ENTRY, seq)).unwrap();
            store.remove(&keys::seq_key(keys::TREE, seq - 1)).unwrap();
            store.remove(&keys::seq_key(keys::SNAPSHOT, seq)).unwrap();
        }
        let frontier = CompactRange::from_reader(&StoredNodes(&store), keep).unwrap();
        let hash = Hash::from_slice(
            &store
                .get(&keys::seq_key(keys::ENTRY, keep))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        store
            .insert(keys::HEAD, &crate::chainer::head_record(keep, &hash)[..])
            .unwrap();
        store
            .insert(keys::FRONTIER, &frontier_value(&frontier))
            .unwrap();
        store.flush().unwrap();
        drop(store);
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
            let store = raw_store(dir.path());
            let value = store
                .remove(&keys::seq_key(keys::CHECKPOINT, 30))
                .unwrap()
                .unwrap();
            store.flush().unwrap();
            value
        };
        rewrite_after(dir.path(), 20, Some(21..=30));
        {
            let store = raw_store(dir.path());
            store
                .insert(&keys::seq_key(keys::CHECKPOINT, 30), &checkpoint)
                .unwrap();
            store.flush().unwrap();
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
    fn a_damaged_checkpoint_record_is_damage_found_not_an_error_that_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), config()).unwrap();
        append(&mut ledger, 1..=30);
        ledger.sign_checkpoint(&key(), "o").unwrap();
        drop(ledger);
        {
            let store = raw_store(dir.path());
            let key = keys::seq_key(keys::CHECKPOINT, 30);
            let mut note = store.get(&key).unwrap().unwrap().to_vec();
            note.truncate(10);
            store.insert(&key, &note).unwrap();
            store.flush().unwrap();
        }
        match Ledger::open(dir.path(), config()) {
            Err(LedgerError::Corrupt(failure)) => {
                assert_eq!(
                    (failure.seq, failure.kind),
                    (30, FailureKind::CheckpointMismatch),
                    "{failure}"
                );
                assert!(failure.detail.contains("does not parse"), "{failure}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let forensic = LedgerConfig {
            allow_corrupt: true,
            ..config()
        };
        let ledger = Ledger::open(dir.path(), forensic).unwrap();
        assert_eq!(
            ledger.corruption().map(|f| f.kind),
            Some(FailureKind::CheckpointMismatch)
        );
        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!(
            (failure.seq, failure.kind),
            (30, FailureKind::CheckpointMismatch)
        );
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
