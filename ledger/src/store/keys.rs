//! The key layout every store keeps. Everything is one ordered key space so that an append
//! (entries, head, any snapshot) is one atomic [`super::Store::commit`]. History indexes
//! (per uid, per name) live in the projection, so an entry costs one key.
//!
//! | prefix | key rest | value |
//! |---|---|---|
//! | `E` | seq (u64 BE) | chain hash (32 bytes) ‖ entry bytes |
//! | `H` | — | head seq (u64 BE) ‖ head hash (32 bytes) |
//! | `S` | seq | snapshot of the projection after that seq, `[seq, projection]`; the entry at that seq commits to these exact bytes (`Entry::snapshot`) |
//! | `F` | — | store format version (u16 BE) |
//! | `I` | — | the ledger id (16 bytes), also in the directory's manifest and high-water mark |
//! | `T` | leaf index (u64 BE) | the Merkle nodes of level 3 and above appending that leaf completed, bottom-up (32 bytes each); only for leaves that complete one (index mod 8 = 7) |
//! | `R` | — | the Merkle frontier after the head (32 bytes per set bit of the head seq) |
//! | `C` | tree size (u64 BE) | a signed checkpoint of that size (C2SP signed-note text) |
//! | `W` | — | a shared store's writer status (JSON: a counter bumped at every publish, whether its watchers are ready); not part of the log |

/// Prefix of entry records.
pub const ENTRY: u8 = b'E';
/// The head record.
pub const HEAD: &[u8] = b"H";
/// Prefix of snapshot records.
pub const SNAPSHOT: u8 = b'S';
/// The store format record.
pub const FORMAT: &[u8] = b"F";
/// The store layout version written under [`FORMAT`]. 4: snapshots are `[seq, projection]`
/// (no longer naming their entry's hash) and the entry at a snapshot seq commits to the
/// snapshot's bytes; a format-3 store's snapshots would be refused as forged. 5: the store
/// carries its ledger id (`I`) and lives in a ledger directory with a manifest and a
/// high-water mark.
pub const STORE_FORMAT: u16 = 5;
/// The ledger id record.
pub const LEDGER_ID: &[u8] = b"I";
/// Prefix of Merkle node records.
pub const TREE: u8 = b'T';
/// The Merkle frontier record.
pub const FRONTIER: &[u8] = b"R";
/// Prefix of signed checkpoint records.
pub const CHECKPOINT: u8 = b'C';
/// The writer's status record of a shared store (not part of the log).
pub const WRITER: &[u8] = b"W";

/// The key of a seq-keyed record: `prefix ‖ seq (u64 BE)`.
pub fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a seq-keyed record's key (its last 8 bytes).
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}
