//! The sled backend: the log's records in one sled tree, so an append is one atomic
//! `apply_batch`, and snapshots (`S` records) as files beside it (`snapshot_files`, in
//! the subdirectory [`SNAPSHOT_DIR`] of the store's directory). sled rewrites a leaf with
//! the values it holds whenever one of its keys changes, and its flush writes whatever
//! changed since the last: a snapshot of hundreds of megabytes kept in sled was written
//! by the flush that made the next append durable, while the writer waited. Reads and
//! scans see one key space; snapshots that stores of before kept in sled (in a tree of
//! their own, or earlier in the log's tree) are still read from there.
//!
//! sled 0.34 trusts its own files: some damage makes it panic on open or on a read
//! ("tried to serialize Uninitialized"), other damage it reports as an error with debug
//! text. Every call into sled here runs under `catch_unwind` and every sled error is
//! classified, so damage reaches the ledger as [`StoreError::Damaged`], never as a panic.
//! sled also releases its directory lock only when its last background handle goes, a
//! moment after the database is dropped; [`SledStore::open`] waits that out briefly.
//!
//! **Entries eight to a sled value.** sled's cost is mostly per key (each insert is a
//! delta on a node, each node rewritten with all its values): one `apply_batch` of 1,024
//! values of 600 bytes plus a flush took 4.6-4.9 ms here, the same bytes as 128 values of
//! 4,800 bytes 1.6 ms. So a store created by this build keeps the ledger's entry records
//! (`E` ‖ seq, one per entry in the ledger's key space, [`keys`]) packed: the entries of
//! seqs 8g+1 ..= 8g+8 are one sled record under `E` ‖ u64_be(g), its value a byte whose
//! bit i says whether seq 8g+1+i is present, then for each present seq in order its
//! value's length (u32 LE) and the value. The groups follow the Merkle tree's level-3
//! nodes (one `T` record per 8 leaves) and the appends' 128-entry chunks, so a chunk
//! reads back at most its first and last records, and none when it starts after a
//! multiple of 8 and holds a multiple of 8 entries. Everything above this module still
//! sees one `E` record per entry: reads and scans unpack, a commit packs (reading back a
//! group it only partly rewrites). A store created before keeps one sled key per entry
//! ([`EntryLayout::PerKey`]); which layout a store has is recorded once, in the sled tree
//! [`LAYOUT_TREE`], when the store is created.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::snapshot_files::SnapshotFiles;
use super::{keys, Batch, MergedRecords, Record, Records, Store, StoreError};

/// The name of the sled tree holding the ledger's records.
const TREE: &str = "ledger";
/// The name of the sled tree that held snapshots before they moved to files (read only).
const SNAPSHOT_TREE: &str = "snapshots";
/// The subdirectory of the store's directory holding the snapshot files. (sled keeps its
/// own files there too; none of its names starts with this.)
const SNAPSHOT_DIR: &str = "claim-ledger-snapshots";

/// Whether `key` is a snapshot record's (kept in files, or in [`SNAPSHOT_TREE`] by stores
/// of before).
fn is_snapshot_key(key: &[u8]) -> bool {
    key.first() == Some(&keys::SNAPSHOT)
}

/// The seq of a well-formed snapshot key (`S` and a u64).
fn snapshot_seq(key: &[u8]) -> Option<u64> {
    match key.len() == 9 && is_snapshot_key(key) {
        true => keys::seq_of(key),
        false => None,
    }
}

/// The sled tree recording the store's [`EntryLayout`] (under [`LAYOUT_KEY`]).
const LAYOUT_TREE: &str = "layout";
/// The key of the entry layout in [`LAYOUT_TREE`].
const LAYOUT_KEY: &[u8] = b"entries";
/// The value of [`LAYOUT_KEY`] for [`EntryLayout::Packed`].
const PACKED_LAYOUT: &[u8] = b"packed-8";
/// Entries per packed record.
const GROUP: u64 = 8;

/// How a sled store keeps the ledger's entry records (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryLayout {
    /// One sled key per entry, as the ledger names it: stores created before packing.
    PerKey,
    /// The entries of eight consecutive seqs in one sled value.
    Packed,
}

/// How long [`SledStore::open`] waits for a lock left by a just-dropped handle.
const LOCK_GRACE: Duration = Duration::from_secs(5);

/// A ledger store in a sled database directory.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// Snapshots written before they moved to files.
    snapshot_tree: sled::Tree,
    snapshot_files: SnapshotFiles,
    layout: EntryLayout,
    /// Held while a commit reads back and rewrites packed records, so that two commits
    /// (the ledger has one writer, but the interface allows more) cannot lose each
    /// other's entries of one record.
    packing: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating when absent) the sled database in `path`, with a page cache of
    /// `cache_bytes` (sled's default when `None`).
    pub fn open(path: &Path, cache_bytes: Option<u64>) -> Result<SledStore, StoreError> {
        let deadline = Instant::now() + LOCK_GRACE;
        loop {
            match Self::try_open(path, cache_bytes) {
                Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path, cache_bytes: Option<u64>) -> Result<SledStore, StoreError> {
        let context = || format!("opening the sled store at {}", path.display());
        let (db, tree, snapshot_tree, layout) = contain(&context, || {
            let mut config = sled::Config::new().path(path);
            if let Some(bytes) = cache_bytes {
                config = config.cache_capacity(bytes);
            }
            let db = config.open()?;
            let tree = db.open_tree(TREE)?;
            let snapshot_tree = db.open_tree(SNAPSHOT_TREE)?;
            let recorded = db.open_tree(LAYOUT_TREE)?;
            let layout = match recorded.get(LAYOUT_KEY)? {
                Some(value) if value == PACKED_LAYOUT => Some(EntryLayout::Packed),
                Some(_) => None,
                None if tree.is_empty() && snapshot_tree.is_empty() => {
                    // A new store: recorded (durably) before anything is written to it.
                    recorded.insert(LAYOUT_KEY, PACKED_LAYOUT)?;
                    db.flush()?;
                    Some(EntryLayout::Packed)
                }
                None => Some(EntryLayout::PerKey),
            };
            Ok((db, tree, snapshot_tree, layout))
        })
        .map_err(|e| match e {
            StoreError::Io { source, .. } if is_lock_error(&source) => {
                StoreError::Locked(path.display().to_string())
            }
            other => other,
        })?;
        let layout = layout.ok_or_else(|| {
            StoreError::Damaged(format!(
                "{}: the sled store records an entry layout this build does not know",
                context()
            ))
        })?;
        Ok(SledStore {
            path: path.to_path_buf(),
            db,
            tree,
            snapshot_tree,
            snapshot_files: SnapshotFiles::new(path.join(SNAPSHOT_DIR)),
            layout,
            packing: Mutex::new(()),
        })
    }
}

fn is_lock_error(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock || error.to_string().contains("lock")
}

/// Runs a sled call, turning a panic inside sled or a sled error into a [`StoreError`].
fn contain<T>(
    context: &dyn Fn() -> String,
    call: impl FnOnce() -> Result<T, sled::Error>,
) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(context(), error)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(StoreError::Damaged(format!(
                "{}: sled failed on what it read ({message})",
                context()
            )))
        }
    }
}

fn classify(context: String, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(source) => StoreError::Io { context, source },
        sled::Error::Corruption { at, .. } => StoreError::Damaged(match at {
            Some(at) => format!("{context}: sled read corrupted data at {at}"),
            None => format!("{context}: sled read corrupted data"),
        }),
        sled::Error::CollectionNotFound(_) => {
            StoreError::Damaged(format!("{context}: sled lost the ledger's tree"))
        }
        sled::Error::Unsupported(what) => {
            StoreError::Damaged(format!("{context}: sled refused its files: {what}"))
        }
        sled::Error::ReportableBug(what) => {
            StoreError::Damaged(format!("{context}: sled failed: {what}"))
        }
    }
}

impl SledStore {
    /// The records of `tree` with `from <= key <= to`.
    fn range(&self, tree: &sled::Tree, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        self.bounded(
            tree,
            Bound::Included(from.to_vec()),
            Bound::Included(to.to_vec()),
            reverse,
        )
    }

    /// The records of `tree` within the bounds.
    fn bounded(
        &self,
        tree: &sled::Tree,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Records<'_> {
        let context = || "scanning the sled store".to_string();
        match contain(&context, || Ok(tree.range((from, to)))) {
            Ok(iter) => Box::new(SledRecords {
                iter,
                reverse,
                failed: false,
            }),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// The log's records and the snapshots with `from <= key <= to`, as sled holds them
    /// (in a packed store, entries come out packed).
    fn scan_stored(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        let log = self.range(&self.tree, from, to, reverse);
        // The snapshot tree holds only `S` keys: scan it only where the range reaches them.
        let first = [keys::SNAPSHOT];
        let past = [keys::SNAPSHOT + 1];
        if to < &first[..] || from >= &past[..] {
            return log;
        }
        let in_sled = self.range(&self.snapshot_tree, from, to, reverse);
        let older = Box::new(MergedRecords::new(log, in_sled, reverse));
        let files = self.snapshot_files.scan(from, to, reverse);
        Box::new(MergedRecords::new(older, files, reverse))
    }

    /// A packed store's scan: the records before the entries, the entries unpacked, the
    /// records after them.
    fn scan_packed(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        let entries_start = [keys::ENTRY];
        let entries_end = [keys::ENTRY + 1];
        let before: Records<'_> = match from < &entries_start[..] {
            true => self.bounded(
                &self.tree,
                Bound::Included(from.to_vec()),
                match to < &entries_start[..] {
                    true => Bound::Included(to.to_vec()),
                    false => Bound::Excluded(entries_start.to_vec()),
                },
                reverse,
            ),
            false => Box::new(std::iter::empty()),
        };
        let after = self.scan_stored(from.max(&entries_end[..]), to, reverse);
        let entries = match seqs_within(from, to) {
            Some((first, last)) => self.unpacked(first, last, reverse),
            None => Box::new(std::iter::empty()),
        };
        match reverse {
            false => Box::new(before.chain(entries).chain(after)),
            true => Box::new(after.chain(entries).chain(before)),
        }
    }

    /// The entry records of seqs `first ..= last` of a packed store, unpacked, in seq
    /// order (or reverse).
    fn unpacked(&self, first: u64, last: u64, reverse: bool) -> Records<'_> {
        let groups = self.range(
            &self.tree,
            &group_key(group_of(first)),
            &group_key(group_of(last)),
            reverse,
        );
        Box::new(groups.flat_map(move |record| {
            let unpacked: Vec<Result<Record, StoreError>> = match record
                .and_then(|(key, value)| unpack(group_number(&key)?, &value))
            {
                Ok(mut slots) => {
                    slots.retain(|(seq, _)| (first..=last).contains(seq));
                    if reverse {
                        slots.reverse();
                    }
                    slots
                        .into_iter()
                        .map(|(seq, value)| Ok((keys::seq_key(keys::ENTRY, seq).to_vec(), value)))
                        .collect()
                }
                Err(e) => vec![Err(e)],
            };
            unpacked
        }))
    }

    /// The packed record of group `group`, as stored.
    fn stored_group(&self, group: u64) -> Result<Option<sled::IVec>, StoreError> {
        contain(&|| "reading the sled store".into(), || {
            self.tree.get(group_key(group))
        })
    }

    /// Packs a batch's entry writes (in seq order) into their groups' records, merged
    /// with what those records hold for the seqs the batch leaves alone.
    fn pack_entries(
        &self,
        entry_writes: BTreeMap<u64, Option<Vec<u8>>>,
        log: &mut sled::Batch,
    ) -> Result<(), StoreError> {
        let mut writes = entry_writes.into_iter().peekable();
        while let Some((seq, value)) = writes.next() {
            let group = group_of(seq);
            let mut in_group = vec![(seq, value)];
            while let Some((seq, _)) = writes.peek() {
                if group_of(*seq) != group {
                    break;
                }
                in_group.extend(writes.next());
            }
            // A group the batch writes whole keeps nothing stored: no read back.
            let mut slots: BTreeMap<u64, Vec<u8>> = match in_group.len() as u64 == GROUP {
                true => BTreeMap::new(),
                false => match self.stored_group(group)? {
                    Some(packed) => unpack(group, &packed)?.into_iter().collect(),
                    None => BTreeMap::new(),
                },
            };
            for (seq, value) in in_group {
                match value {
                    Some(value) => slots.insert(seq, value),
                    None => slots.remove(&seq),
                };
            }
            match slots.is_empty() {
                true => log.remove(&group_key(group)),
                false => log.insert(&group_key(group), pack(group, &slots)),
            }
        }
        Ok(())
    }
}

/// The group (packed record) holding `seq` (seq ≥ 1).
fn group_of(seq: u64) -> u64 {
    (seq - 1) / GROUP
}

/// The key of a packed record.
fn group_key(group: u64) -> [u8; 9] {
    keys::seq_key(keys::ENTRY, group)
}

/// The group number of a packed record's key.
fn group_number(key: &[u8]) -> Result<u64, StoreError> {
    match (key.len(), keys::seq_of(key)) {
        (9, Some(group)) if group <= (u64::MAX - 1) / GROUP => Ok(group),
        _ => Err(StoreError::Damaged(format!(
            "the sled store holds a malformed entry record key {key:02x?}"
        ))),
    }
}

/// The seq of an entry record's key, if `key` is one the ledger can write (`E` and a
/// u64 ≥ 1); `Ok(None)` for a key outside the entries.
fn entry_seq(key: &[u8]) -> Result<Option<u64>, StoreError> {
    if key.first() != Some(&keys::ENTRY) {
        return Ok(None);
    }
    match (key.len(), keys::seq_of(key)) {
        (9, Some(seq)) if seq >= 1 => Ok(Some(seq)),
        _ => Err(StoreError::Io {
            context: format!("writing the entry record key {key:02x?}"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an entry record's key is `E` and a seq of at least 1 (u64 BE)",
            ),
        }),
    }
}

/// The seqs `first ..= last` (`first` ≥ 1) of the entry record keys within
/// `from ..= to`, if any.
fn seqs_within(from: &[u8], to: &[u8]) -> Option<(u64, u64)> {
    let key = |seq: u64| keys::seq_key(keys::ENTRY, seq);
    // Keys grow with their seq, so both ends are a binary search over the seqs.
    let first_at_least = |bound: &[u8]| -> Option<u64> {
        if key(u64::MAX).as_slice() < bound {
            return None;
        }
        let (mut low, mut high) = (0u64, u64::MAX);
        while low < high {
            let middle = low + (high - low) / 2;
            match key(middle).as_slice() < bound {
                true => low = middle + 1,
                false => high = middle,
            }
        }
        Some(low)
    };
    let first = first_at_least(from)?.max(1);
    let last = match first_at_least(to) {
        None => u64::MAX,
        Some(seq) if key(seq).as_slice() == to => seq,
        Some(0) => return None,
        Some(seq) => seq - 1,
    };
    (first <= last).then_some((first, last))
}

/// A packed record's value: a byte of present slots, then each present entry's length
/// (u32 LE) and bytes.
fn pack(group: u64, slots: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let size = 1 + slots.values().map(|value| 4 + value.len()).sum::<usize>();
    let mut packed = Vec::with_capacity(size);
    packed.push(0u8);
    for (seq, value) in slots {
        packed[0] |= 1 << (seq - 1 - group * GROUP);
        // An entry record is far below 4 GiB: the ledger caps a change's size.
        packed.extend_from_slice(&(value.len() as u32).to_le_bytes());
        packed.extend_from_slice(value);
    }
    packed
}

/// The `(seq, value)` pairs of a packed record, in seq order; damage if it is malformed.
fn unpack(group: u64, packed: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    Ok(slots(group, packed)?
        .map(|(seq, value)| (seq, value.to_vec()))
        .collect())
}

/// The value of `seq` in a packed record of its group, if present.
fn unpack_one(group: u64, packed: &[u8], seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
    // The whole record is checked, so that damage is reported whichever entry is read.
    let mut found = None;
    for (at, value) in slots(group, packed)? {
        if at == seq {
            found = Some(value.to_vec());
        }
    }
    Ok(found)
}

/// The `(seq, value)` pairs of a packed record, borrowed from it, once its framing has
/// been checked whole.
fn slots(group: u64, packed: &[u8]) -> Result<impl Iterator<Item = (u64, &[u8])> + '_, StoreError> {
    let damaged = || {
        StoreError::Damaged(format!(
            "the sled store's record of entries {} to {} is malformed",
            group * GROUP + 1,
            (group * GROUP).saturating_add(GROUP)
        ))
    };
    let (&present, mut rest) = packed.split_first().ok_or_else(damaged)?;
    let mut slots: [(u64, &[u8]); GROUP as usize] = [(0, &[]); GROUP as usize];
    let mut count = 0;
    for slot in 0..GROUP {
        if present & (1 << slot) == 0 {
            continue;
        }
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(damaged)?;
        let length = u32::from_le_bytes(*length) as usize;
        if tail.len() < length {
            return Err(damaged());
        }
        let (value, tail) = tail.split_at(length);
        let seq = (group * GROUP).checked_add(1 + slot).ok_or_else(damaged)?;
        slots[count] = (seq, value);
        count += 1;
        rest = tail;
    }
    match rest.is_empty() && present != 0 {
        true => Ok(slots.into_iter().take(count)),
        false => Err(damaged()),
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(seq) = snapshot_seq(key) {
            if let Some(value) = self.snapshot_files.get(seq)? {
                return Ok(Some(value));
            }
        }
        if self.layout == EntryLayout::Packed && key.first() == Some(&keys::ENTRY) {
            let Ok(Some(seq)) = entry_seq(key) else {
                return Ok(None);
            };
            let group = group_of(seq);
            return match self.stored_group(group)? {
                Some(packed) => unpack_one(group, &packed, seq),
                None => Ok(None),
            };
        }
        contain(&|| "reading the sled store".into(), || {
            if is_snapshot_key(key) {
                if let Some(value) = self.snapshot_tree.get(key)? {
                    return Ok(Some(value.to_vec()));
                }
            }
            Ok(self.tree.get(key)?.map(|value| value.to_vec()))
        })
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if self.layout == EntryLayout::PerKey {
            return keys.iter().map(|key| self.get(key)).collect();
        }
        // A history's entries are often neighbours: each packed record is read once.
        let mut groups: HashMap<u64, Option<sled::IVec>> = HashMap::new();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let seq = match key.first() == Some(&keys::ENTRY) {
                true => match entry_seq(key) {
                    Ok(Some(seq)) => seq,
                    _ => {
                        values.push(None);
                        continue;
                    }
                },
                false => {
                    values.push(self.get(key)?);
                    continue;
                }
            };
            let group = group_of(seq);
            let stored = match groups.entry(group) {
                std::collections::hash_map::Entry::Occupied(read) => read.into_mut(),
                std::collections::hash_map::Entry::Vacant(unread) => {
                    unread.insert(self.stored_group(group)?)
                }
            };
            values.push(match stored {
                Some(packed) => unpack_one(group, packed, seq)?,
                None => None,
            });
        }
        Ok(values)
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        match (self.layout, from > to) {
            (_, true) => Box::new(std::iter::empty()),
            (EntryLayout::PerKey, false) => self.scan_stored(from, to, reverse),
            (EntryLayout::Packed, false) => self.scan_packed(from, to, reverse),
        }
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut log = sled::Batch::default();
        let (mut log_writes, mut older_snapshots) = (false, sled::Batch::default());
        let mut snapshot_removals = false;
        // A packed store's entry writes, by seq (a later write of a seq wins, as in sled),
        // packed (a record read back may fail) before any snapshot file is touched, so that
        // a commit that fails changes nothing.
        let mut entry_writes = BTreeMap::new();
        let mut writes = Vec::with_capacity(batch.len());
        for (key, value) in batch.into_writes() {
            match self.layout {
                EntryLayout::Packed => match entry_seq(&key)? {
                    Some(seq) => drop(entry_writes.insert(seq, value)),
                    None => writes.push((key, value)),
                },
                EntryLayout::PerKey => writes.push((key, value)),
            }
        }
        let _packing = match entry_writes.is_empty() {
            true => None,
            false => {
                let packing = self.packing.lock().unwrap_or_else(|e| e.into_inner());
                self.pack_entries(entry_writes, &mut log)?;
                log_writes = true;
                Some(packing)
            }
        };
        for (key, value) in writes {
            match (snapshot_seq(&key), value) {
                // Snapshot files first: the ledger never puts a snapshot in an append (they
                // are written on their own), so what follows is what one commit asked for.
                (Some(seq), Some(value)) => self
                    .snapshot_files
                    .put(seq, &mut |file| file.write_all(&value))?,
                (Some(seq), None) => {
                    // Copies kept in sled by stores of before go too.
                    self.snapshot_files.remove(seq)?;
                    log_writes = true;
                    snapshot_removals = true;
                    log.remove(key.clone());
                    older_snapshots.remove(key);
                }
                (None, value) => {
                    log_writes = true;
                    match value {
                        Some(value) => log.insert(key, value),
                        None => log.remove(key),
                    }
                }
            }
        }
        // (sled's multi-tree transactions are not used: with a value of tens of megabytes
        // one left a later flush waiting forever.)
        contain(&|| "writing the sled store".into(), || {
            if snapshot_removals {
                self.snapshot_tree.apply_batch(older_snapshots)?;
            }
            if log_writes {
                self.tree.apply_batch(log)?;
            }
            Ok(())
        })
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        // Durable on its own, with no sled flush: the writer's flushes never carry it.
        self.snapshot_files
            .put(seq, &mut |file| file.write_all(bytes))
    }

    fn put_snapshot_streamed(
        &self,
        seq: u64,
        encode: super::SnapshotEncoder<'_>,
    ) -> Result<(), StoreError> {
        self.snapshot_files.put(seq, encode)
    }

    fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        let mut seqs = self.snapshot_files.seqs()?;
        // Copies kept in sled by stores of before (read with their values: sled has no
        // key-only scan, and only such stores have any).
        let (first, last) = (
            keys::seq_key(keys::SNAPSHOT, 0),
            keys::seq_key(keys::SNAPSHOT, u64::MAX),
        );
        for tree in [&self.snapshot_tree, &self.tree] {
            for record in self.range(tree, &first, &last, false) {
                let (key, _) = record?;
                seqs.extend(snapshot_seq(&key));
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    fn snapshot_reader(
        &self,
        seq: u64,
    ) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        if let Some(file) = self.snapshot_files.open(seq)? {
            return Ok(Some(Box::new(file)));
        }
        let in_sled = self.get(&keys::seq_key(keys::SNAPSHOT, seq))?;
        Ok(in_sled
            .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn std::io::Read + Send>))
    }

    fn remove_snapshot(&self, seq: u64) -> Result<(), StoreError> {
        self.snapshot_files.remove(seq)?;
        // A copy kept in sled by a store of before goes too; sled is written only then.
        let key = keys::seq_key(keys::SNAPSHOT, seq);
        let in_sled = contain(&|| "reading the sled store".into(), || {
            Ok(self.snapshot_tree.contains_key(key)? || self.tree.contains_key(key)?)
        })?;
        match in_sled {
            true => self.commit({
                let mut batch = Batch::default();
                batch.remove(key);
                batch
            }),
            false => Ok(()),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        contain(&|| "flushing the sled store".into(), || {
            self.db.flush().map(|_| ())
        })
    }

    fn kind(&self) -> &'static str {
        "sled"
    }

    fn store_format(&self) -> u16 {
        match self.layout {
            EntryLayout::Packed => keys::STORE_FORMAT,
            EntryLayout::PerKey => keys::STORE_FORMAT_PER_KEY,
        }
    }
}

/// A sled range iterator whose every step is contained; it ends after its first error.
struct SledRecords {
    iter: sled::Iter,
    reverse: bool,
    failed: bool,
}

impl Iterator for SledRecords {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (iter, reverse) = (&mut self.iter, self.reverse);
        let step = contain(&|| "scanning the sled store".into(), || {
            match if reverse {
                iter.next_back()
            } else {
                iter.next()
            } {
                None => Ok(None),
                Some(item) => item.map(|(k, v)| Some((k.to_vec(), v.to_vec()))),
            }
        });
        match step {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keys the model test writes and reads: entries of a few groups (the packed ones),
    /// and records before and after them.
    fn key_of(choice: u8) -> Vec<u8> {
        match choice % 6 {
            0 => b"A".to_vec(),
            1 => b"H".to_vec(),
            2 => keys::seq_key(keys::TREE, u64::from(choice)).to_vec(),
            _ => keys::seq_key(keys::ENTRY, u64::from(choice % 29) + 1).to_vec(),
        }
    }

    /// Scan bounds: the keys above, and bytes between, around and inside them.
    fn bound_of(choice: u8) -> Vec<u8> {
        match choice % 12 {
            0 => Vec::new(),
            1 => b"E".to_vec(),
            2 => vec![b'E', 0],
            3 => vec![b'E', 0, 0, 0, 0, 0, 0, 0, 0x0c, 0xff],
            4 => vec![b'E', 0xff],
            5 => b"F".to_vec(),
            6 => vec![0xff; 10],
            7 => keys::seq_key(keys::ENTRY, 0).to_vec(),
            _ => key_of(choice / 3),
        }
    }

    fn scanned(store: &SledStore, from: &[u8], to: &[u8], reverse: bool) -> Vec<Record> {
        store
            .scan(from, to, reverse)
            .collect::<Result<_, _>>()
            .expect("scan")
    }

    fn modelled(
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        from: &[u8],
        to: &[u8],
        reverse: bool,
    ) -> Vec<Record> {
        if from > to {
            return Vec::new();
        }
        let mut records: Vec<Record> = model
            .range(from.to_vec()..=to.to_vec())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if reverse {
            records.reverse();
        }
        records
    }

    /// Every read of `store` agrees with `model`.
    fn agrees(
        store: &SledStore,
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        bounds: &[(u8, u8)],
    ) -> Result<(), TestCaseError> {
        let every_key: Vec<Vec<u8>> = (0..=255u8).map(key_of).collect();
        for key in &every_key {
            prop_assert_eq!(store.get(key).unwrap(), model.get(key).cloned());
        }
        let many = store.get_many(&every_key).unwrap();
        let expected: Vec<_> = every_key
            .iter()
            .map(|key| model.get(key).cloned())
            .collect();
        prop_assert_eq!(many, expected);
        for &(from, to) in bounds {
            let (from, to) = (bound_of(from), bound_of(to));
            for reverse in [false, true] {
                prop_assert_eq!(
                    scanned(store, &from, &to, reverse),
                    modelled(model, &from, &to, reverse),
                    "scan {:02x?} ..= {:02x?}, reverse {}",
                    from,
                    to,
                    reverse
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A packed store reads back exactly what was committed, one record per key, as
        /// a store of one sled key per record would, before and after a reopen.
        #[test]
        fn a_packed_store_reads_like_one_record_per_key(
            batches in prop::collection::vec(
                prop::collection::vec((any::<u8>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..40))), 1..20),
                1..12,
            ),
            bounds in prop::collection::vec((any::<u8>(), any::<u8>()), 1..24),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model = BTreeMap::new();
            {
                let store = SledStore::open(dir.path(), None).unwrap();
                prop_assert_eq!(store.layout, EntryLayout::Packed);
                for writes in &batches {
                    let mut batch = Batch::default();
                    for (choice, value) in writes {
                        let key = key_of(*choice);
                        match value {
                            Some(value) => {
                                batch.insert(key.clone(), value.clone());
                                model.insert(key, value.clone());
                            }
                            None => {
                                batch.remove(key.clone());
                                model.remove(&key);
                            }
                        }
                    }
                    store.commit(batch).unwrap();
                }
                agrees(&store, &model, &bounds)?;
                store.flush().unwrap();
            }
            let reopened = SledStore::open(dir.path(), None).unwrap();
            prop_assert_eq!(reopened.layout, EntryLayout::Packed);
            agrees(&reopened, &model, &bounds)?;
        }
    }

    #[test]
    fn packed_records_hold_eight_consecutive_entries_and_whole_groups_need_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), None).unwrap();
        let mut batch = Batch::default();
        for seq in 1..=20u64 {
            batch.insert(
                keys::seq_key(keys::ENTRY, seq),
                vec![seq as u8; seq as usize],
            );
        }
        store.commit(batch).unwrap();
        let stored: Vec<(Vec<u8>, usize)> = store
            .tree
            .iter()
            .map(|record| record.map(|(key, value)| (key.to_vec(), value.len())))
            .collect::<Result<_, _>>()
            .unwrap();
        let group_bytes =
            |seqs: std::ops::RangeInclusive<usize>| 1 + seqs.map(|seq| 4 + seq).sum::<usize>();
        assert_eq!(
            stored,
            vec![
                (group_key(0).to_vec(), group_bytes(1..=8)),
                (group_key(1).to_vec(), group_bytes(9..=16)),
                (group_key(2).to_vec(), group_bytes(17..=20)),
            ]
        );
        // A removal rewrites its group without it; the last one removes the record.
        for seq in 17..=20u64 {
            store.remove(&keys::seq_key(keys::ENTRY, seq)).unwrap();
        }
        assert_eq!(store.tree.len(), 2);
        assert_eq!(
            store.get(&keys::seq_key(keys::ENTRY, 9)).unwrap(),
            Some(vec![9; 9])
        );
    }

    #[test]
    fn a_store_created_before_packing_keeps_one_key_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_sled(dir.path());
            let tree = db.open_tree(TREE).unwrap();
            tree.insert(keys::seq_key(keys::ENTRY, 1), b"one".to_vec())
                .unwrap();
            tree.insert(keys::HEAD, b"head".to_vec()).unwrap();
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path(), None).unwrap();
            assert_eq!(store.layout, EntryLayout::PerKey);
            assert_eq!(
                store.get(&keys::seq_key(keys::ENTRY, 1)).unwrap(),
                Some(b"one".to_vec())
            );
            store
                .insert(&keys::seq_key(keys::ENTRY, 2), b"two")
                .unwrap();
            let all = scanned(&store, b"", &[0xff], false);
            assert_eq!(all.len(), 3);
            store.flush().unwrap();
        }
        let db = raw_sled(dir.path());
        let tree = db.open_tree(TREE).unwrap();
        assert_eq!(
            tree.get(keys::seq_key(keys::ENTRY, 2)).unwrap().as_deref(),
            Some(&b"two"[..]),
            "still one sled key per entry"
        );
    }

    #[test]
    fn a_malformed_packed_record_is_damage_and_a_bad_entry_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), None).unwrap();
        store
            .insert(&keys::seq_key(keys::ENTRY, 3), b"three")
            .unwrap();
        // Slot 2 present, but its length runs past the value's end.
        store
            .tree
            .insert(group_key(0), vec![0b100, 9, 0, 0, 0, b'x'])
            .unwrap();
        assert!(store
            .get(&keys::seq_key(keys::ENTRY, 3))
            .unwrap_err()
            .is_damage());
        let scan: Vec<_> = store.scan(b"E", b"F", false).collect();
        assert!(matches!(&scan[..], [Err(e)] if e.is_damage()));
        // A commit into that group cannot merge with it, and writes nothing: not even the
        // snapshot file it also carries (as a `migrate` copy batch does).
        let mut batch = Batch::default();
        batch.insert(keys::seq_key(keys::SNAPSHOT, 5), b"snapshot".to_vec());
        batch.insert(keys::seq_key(keys::ENTRY, 4), b"four".to_vec());
        assert!(store.commit(batch).unwrap_err().is_damage());
        assert_eq!(store.get(&keys::seq_key(keys::SNAPSHOT, 5)).unwrap(), None);
        assert_eq!(store.snapshot_seqs().unwrap(), Vec::<u64>::new());
        for bad in [keys::seq_key(keys::ENTRY, 0).to_vec(), b"E1".to_vec()] {
            let refused = store.insert(&bad, b"x").unwrap_err();
            assert!(
                matches!(&refused, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
                "{refused}"
            );
        }
    }

    #[test]
    fn an_unknown_entry_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_sled(dir.path());
            let recorded = db.open_tree(LAYOUT_TREE).unwrap();
            recorded.insert(LAYOUT_KEY, b"packed-16".to_vec()).unwrap();
            db.flush().unwrap();
        }
        let refused = SledStore::open(dir.path(), None).unwrap_err();
        assert!(refused.is_damage(), "{refused}");
    }

    /// Opens a sled database directly, waiting out the lock a just-dropped handle's
    /// background threads hold for a moment (as [`SledStore::open`] does).
    fn raw_sled(path: &Path) -> sled::Db {
        let deadline = Instant::now() + LOCK_GRACE;
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("opening {}: {e}", path.display()),
            }
        }
    }

    /// Rewrites the packed sled store in `sled_dir` as a store created before packing
    /// would hold the same records: one sled key per entry, no layout record.
    fn unpack_into_one_key_per_entry(sled_dir: &Path) {
        let db = raw_sled(sled_dir);
        let tree = db.open_tree(TREE).unwrap();
        let start = [keys::ENTRY];
        let past = [keys::ENTRY + 1];
        let groups: Vec<(sled::IVec, sled::IVec)> = tree
            .range(&start[..]..&past[..])
            .collect::<Result<_, _>>()
            .unwrap();
        let mut batch = sled::Batch::default();
        for (key, _) in &groups {
            batch.remove(key.to_vec());
        }
        for (key, packed) in &groups {
            for (seq, value) in unpack(group_number(key).unwrap(), packed).unwrap() {
                batch.insert(&keys::seq_key(keys::ENTRY, seq), value);
            }
        }
        tree.apply_batch(batch).unwrap();
        db.drop_tree(LAYOUT_TREE).unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn a_ledger_of_one_key_per_entry_verifies_appends_and_migrates_into_a_packed_store() {
        use crate::{tests::pod, Ledger, LedgerConfig};
        let config = LedgerConfig {
            background_snapshots: false,
            ..LedgerConfig::default()
        };
        let now = chrono::Utc::now();
        let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        {
            let mut ledger = Ledger::open(old.path(), config.clone()).unwrap();
            ledger.append((1..=700).map(pod), now).unwrap();
            ledger.flush().unwrap();
        }
        let sled_dir = old.path().join(crate::dir::SLED_DIR);
        unpack_into_one_key_per_entry(&sled_dir);
        {
            let store = SledStore::open(&sled_dir, None).unwrap();
            assert_eq!(store.layout, EntryLayout::PerKey);
        }
        let head = {
            let mut ledger = Ledger::open(old.path(), config.clone()).unwrap();
            assert!(ledger.verify().unwrap().ok());
            // A large append (chained in chunks) and a small one, both one key per entry.
            ledger.append((701..=1300).map(pod), now).unwrap();
            ledger.append((1301..=1303).map(pod), now).unwrap();
            ledger.flush().unwrap();
            assert!(ledger.verify().unwrap().ok());
            ledger.head()
        };
        {
            let store = SledStore::open(&sled_dir, None).unwrap();
            assert_eq!(store.layout, EntryLayout::PerKey);
            let raw = store.tree.get(keys::seq_key(keys::ENTRY, 1303)).unwrap();
            assert!(raw.is_some(), "the entry is under its own sled key");
        }
        let report =
            crate::migrate(old.path(), new.path(), config.clone(), config.clone()).unwrap();
        assert_eq!((report.entries, report.head_hash), (1303, head.hash));
        {
            let store = SledStore::open(&new.path().join(crate::dir::SLED_DIR), None).unwrap();
            assert_eq!(store.layout, EntryLayout::Packed);
            assert_eq!(
                store.tree.get(keys::seq_key(keys::ENTRY, 1303)).unwrap(),
                None
            );
        }
        let copy = Ledger::open(new.path(), config).unwrap();
        assert!(copy.verify().unwrap().ok());
        assert_eq!(copy.head(), head);
    }
}
