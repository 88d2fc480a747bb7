//! The sled key layout. Everything lives in one tree so that an append (entries, head, any
//! snapshot) is one atomic `apply_batch`. History indexes (per uid, per name) live in the
//! projection, so an entry costs one sled key.
//!
//! | prefix | key rest | value |
//! |---|---|---|
//! | `E` | seq (u64 BE) | chain hash (32 bytes) ‖ entry bytes |
//! | `H` | — | head seq (u64 BE) ‖ head hash (32 bytes) |
//! | `S` | seq | snapshot of the projection after that seq, `[seq, projection]`; the entry at that seq commits to these exact bytes (`Entry::snapshot`) |
//! | `F` | — | store format version (u16 BE) |
//! | `T` | leaf index (u64 BE) | the Merkle nodes of level 3 and above appending that leaf completed, bottom-up (32 bytes each); only for leaves that complete one (index mod 8 = 7) |
//! | `R` | — | the Merkle frontier after the head (32 bytes per set bit of the head seq) |
//! | `C` | tree size (u64 BE) | a signed checkpoint of that size (C2SP signed-note text) |

pub(crate) const ENTRY: u8 = b'E';
pub(crate) const HEAD: &[u8] = b"H";
pub(crate) const SNAPSHOT: u8 = b'S';
pub(crate) const FORMAT: &[u8] = b"F";
/// The store layout version written under [`FORMAT`]. 4: snapshots are `[seq, projection]`
/// (no longer naming their entry's hash) and the entry at a snapshot seq commits to the
/// snapshot's bytes; a format-3 store's snapshots would be refused as forged.
pub(crate) const STORE_FORMAT: u16 = 4;
pub(crate) const TREE: u8 = b'T';
pub(crate) const FRONTIER: &[u8] = b"R";
pub(crate) const CHECKPOINT: u8 = b'C';

pub(crate) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}
