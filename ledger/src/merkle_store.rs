//! How the RFC 6962 Merkle tree over the ledger's entries is kept beside them in the
//! store: which nodes are stored, under which keys, and how the others are recomputed.
//! (Proofs and checkpoints built from these nodes are in `proofs`; `verify` checks the
//! stored nodes against the entries.)
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

use schemas::merkle::{self, CompactRange, Hash32, NodeReader, HASH_SIZE};

use crate::store::{keys, Store, StoreError};
use crate::LedgerError;

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
pub(crate) fn stored_group_matches(store: &dyn Store, leaf: u64) -> Result<bool, LedgerError> {
    let index = leaf >> STORED_LEVEL;
    let last = ((index + 1) << STORED_LEVEL) - 1;
    let Some(value) = store.get(&keys::seq_key(keys::TREE, last))? else {
        // Either the group is incomplete or the record is gone; the walk judges the latter.
        return Ok(true);
    };
    let computed = match StoredNodes(store).node_from_entries(STORED_LEVEL, index) {
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
