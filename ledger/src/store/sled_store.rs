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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
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
        let (db, tree, snapshot_tree) = contain(&context, || {
            let mut config = sled::Config::new().path(path);
            if let Some(bytes) = cache_bytes {
                config = config.cache_capacity(bytes);
            }
            let db = config.open()?;
            let tree = db.open_tree(TREE)?;
            let snapshot_tree = db.open_tree(SNAPSHOT_TREE)?;
            Ok((db, tree, snapshot_tree))
        })
        .map_err(|e| match e {
            StoreError::Io { source, .. } if is_lock_error(&source) => {
                StoreError::Locked(path.display().to_string())
            }
            other => other,
        })?;
        Ok(SledStore {
            path: path.to_path_buf(),
            db,
            tree,
            snapshot_tree,
            snapshot_files: SnapshotFiles::new(path.join(SNAPSHOT_DIR)),
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
        let context = || "scanning the sled store".to_string();
        match contain(&context, || Ok(tree.range(from.to_vec()..=to.to_vec()))) {
            Ok(iter) => Box::new(SledRecords {
                iter,
                reverse,
                failed: false,
            }),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(seq) = snapshot_seq(key) {
            if let Some(value) = self.snapshot_files.get(seq)? {
                return Ok(Some(value));
            }
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

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
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

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut log = sled::Batch::default();
        let (mut log_writes, mut older_snapshots) = (false, sled::Batch::default());
        let mut snapshot_removals = false;
        for (key, value) in batch.into_writes() {
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
