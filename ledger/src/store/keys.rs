//! The key layout every store keeps. Everything is one ordered key space so that an append
//! (entries, head, Merkle nodes, a snapshot commitment) is one atomic
//! [`super::Store::commit`]. History indexes (per uid, per name) live in the projection, so
//! an entry costs one key (one eighth of a sled key in a packed sled store, which keeps
//! eight entry records per sled value underneath: `sled_store`). Snapshots are written
//! apart from appends ([`super::Store::put_snapshot`]); a backend may keep them in a space
//! of their own (sled keeps them in files, so that the writer's flushes never carry their
//! large values; PostgreSQL in a table of chunks, written and read over sessions of their
//! own).
//!
//! | prefix | key rest | value |
//! |---|---|---|
//! | `E` | seq (u64 BE) | chain hash (32 bytes) ‖ entry bytes |
//! | `H` | — | head seq (u64 BE) ‖ head hash (32 bytes) |
//! | `S` | seq | snapshot of the projection after that seq, `[seq, projection]`; a later entry commits to these exact bytes (`Entry::snapshot`), named by the `P` record (in stores of format 5 written before it existed: the entry at that seq itself) |
//! | `P` | seq | the seq (u64 BE) of the entry that commits to the snapshot after this seq; written in that entry's batch |
//! | `F` | — | store format version (u16 BE) |
//! | `I` | — | the ledger id (16 bytes), also in the directory's manifest and high-water mark |
//! | `T` | leaf index (u64 BE) | the Merkle nodes of level 3 and above appending that leaf completed, bottom-up (32 bytes each); only for leaves that complete one (index mod 8 = 7) |
//! | `R` | — | the Merkle frontier after the head (32 bytes per set bit of the head seq) |
//! | `C` | tree size (u64 BE) | a signed checkpoint of that size (C2SP signed-note text) |
//! | `W` | — | a shared store's writer status (JSON: a counter bumped at every publish, whether its watchers are ready, its identity, its durable head seq); not part of the log |

/// Prefix of entry records.
pub const ENTRY: u8 = b'E';
/// The head record.
pub const HEAD: &[u8] = b"H";
/// Prefix of snapshot records.
pub const SNAPSHOT: u8 = b'S';
/// Prefix of snapshot commitment records: which entry commits to the snapshot at a seq.
pub const SNAPSHOT_COMMITMENT: u8 = b'P';
/// The store format record.
pub const FORMAT: &[u8] = b"F";
/// The store layout version written under [`FORMAT`]. 4: snapshots are `[seq, projection]`
/// (no longer naming their entry's hash) and the entry at a snapshot seq commits to the
/// snapshot's bytes; a format-3 store's snapshots would be refused as forged. 5: the store
/// carries its ledger id (`I`) and lives in a ledger directory with a manifest and a
/// high-water mark. 6: snapshots are written off the append path and committed by a later
/// entry (`P` records); a format-5 store is read as it is (its snapshots are committed by
/// the entry at their own seq) and marked 6 when a writer opens it, so that a binary that
/// knows only format 5 cannot misread its later snapshots. 7: snapshots in layout 2 (the
/// compact projection, `projection::layout`), and in PostgreSQL in chunks; formats 5 and 6
/// are read as they are (their layout-1 snapshots still decode) and marked 7 when a writer
/// opens them, so that a binary that knows only format 6 refuses the store by its format
/// instead of calling its next snapshot forged. 8: snapshots in layout 3 (in parts that
/// decode on every core); formats 5 to 7 are read as they are (their layout-1 and layout-2
/// snapshots still decode) and marked 8 when a writer opens them, for the same reason.
/// 9: the same records, but a sled store created by this build packs its entry records
/// eight to a sled value (the sled backend's own layout record says so); an older binary
/// would read those packed values as entries and call them damaged, so a packed store is
/// marked 9 and an older binary refuses it by its format. A store whose records are kept
/// one per key (PostgreSQL, a sled store created before packing) stays at
/// [`STORE_FORMAT_PER_KEY`], so that older binaries still read it (a follower of a rolling
/// upgrade): the format a store is marked with is [`super::Store::store_format`].
pub const STORE_FORMAT: u16 = 9;
/// The format of a store that keeps every record under its own key, as this table lists
/// them: every store but a packed sled one.
pub const STORE_FORMAT_PER_KEY: u16 = 8;
/// The older formats this build still opens (a writer raises them to its store's
/// [`super::Store::store_format`]).
pub const STORE_FORMATS_READABLE: &[u16] = &[5, 6, 7, 8];
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
