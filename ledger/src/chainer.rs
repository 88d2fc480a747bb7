//! Chaining an append's entries: each entry's `prev_hash`, chain hash, Merkle leaf and
//! nodes, and the store records that carry them.
//!
//! The writer's thread derives entries (classify, apply to the projection, encode) and
//! leaves the hashing to a [`Chainer`]: on the committing thread for a large append
//! (`committer`), inline for a small one. Hashing is about a fifth of deriving an entry
//! (BLAKE3 over ~600 bytes for the chain, SHA-256 for the Merkle leaf), and a chain is
//! sequential, so it cannot be split; moved off the deriving thread, it runs beside the
//! next chunk's derivation. An entry is therefore encoded with a zero `prev_hash` and the
//! chainer writes the real one into its bytes (`Entry::encode_into_locating_prev_hash`):
//! what is stored and hashed is exactly the entry encoded with its `prev_hash`.

use chrono::{DateTime, Utc};
use schemas::{chain_hash, merkle, merkle::CompactRange, Hash};

use crate::merkle_store;
use crate::store::{keys, Batch, Store, StoreError};

/// An entry derived but not chained yet.
pub(crate) struct Unchained {
    /// Its seq: one past the entry before it.
    pub(crate) seq: u64,
    /// When it was observed.
    pub(crate) observed_at: DateTime<Utc>,
    /// Room for the chain hash (32 bytes), then the entry's bytes with a zero `prev_hash`.
    pub(crate) value: Vec<u8>,
    /// Where `prev_hash` sits in the entry's bytes (after the 32 bytes of room).
    pub(crate) prev_hash_at: usize,
}

/// One store batch of an append, derived: its entries in seq order, and the other records
/// it writes (a snapshot's commitment).
#[derive(Default)]
pub(crate) struct DerivedChunk {
    pub(crate) entries: Vec<Unchained>,
    pub(crate) records: Batch,
}

/// The head of the chain and the Merkle frontier after it, carried from chunk to chunk.
#[derive(Debug)]
pub(crate) struct Chainer {
    /// The seq of the last entry chained.
    pub(crate) seq: u64,
    /// Its chain hash.
    pub(crate) hash: Hash,
    /// When it was observed (`None` for an empty log).
    pub(crate) observed_at: Option<DateTime<Utc>>,
    /// The Merkle frontier after it.
    pub(crate) frontier: CompactRange,
}

impl Chainer {
    /// Chains a chunk's entries and commits them to `store`. The chain moves past them
    /// even when the commit fails: the ledger then stops, and its last view shows the
    /// head it derived, with the projection it belongs to, marked as stopped
    /// (`LedgerView::stopped`).
    pub(crate) fn chain_and_commit(
        &mut self,
        store: &dyn Store,
        chunk: DerivedChunk,
    ) -> Result<(), StoreError> {
        store.commit(self.chain(chunk))
    }

    /// Chains a chunk's entries after the head and returns the store batch that writes
    /// them (the chain moves past them whether or not the batch is then committed): for
    /// each its `T` record (when its leaf completes a node of level 3 or above) and its
    /// `E` record, then the `H` and `R` records of the new head.
    pub(crate) fn chain(&mut self, chunk: DerivedChunk) -> Batch {
        let DerivedChunk {
            entries,
            mut records,
        } = chunk;
        let chained_any = !entries.is_empty();
        for Unchained {
            seq,
            observed_at,
            mut value,
            prev_hash_at,
        } in entries
        {
            debug_assert_eq!(seq, self.seq + 1, "entries chain in seq order");
            let at = 32 + prev_hash_at;
            value[at..at + 32].copy_from_slice(&self.hash.0);
            let bytes = &value[32..];
            let hash = chain_hash(&self.hash, seq, bytes);
            let nodes = self.frontier.append(merkle::leaf_hash(bytes));
            if let Some(nodes) = merkle_store::nodes_value(&nodes) {
                records.insert(keys::seq_key(keys::TREE, seq - 1), nodes);
            }
            value[..32].copy_from_slice(&hash.0);
            records.insert(keys::seq_key(keys::ENTRY, seq), value);
            self.seq = seq;
            self.hash = hash;
            self.observed_at = Some(observed_at);
        }
        if chained_any {
            records.insert(keys::HEAD, head_record(self.seq, &self.hash));
            records.insert(keys::FRONTIER, merkle_store::frontier_value(&self.frontier));
        }
        records
    }
}

/// The `H` record: the head seq (u64 BE) and its hash.
pub(crate) fn head_record(seq: u64, hash: &Hash) -> [u8; 40] {
    let mut value = [0u8; 40];
    value[..8].copy_from_slice(&seq.to_be_bytes());
    value[8..].copy_from_slice(&hash.0);
    value
}
