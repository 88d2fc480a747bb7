//! The sled backend: every record in one sled tree, so a commit is one atomic
//! `apply_batch`.
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

use super::{Batch, Record, Records, Store, StoreError};

/// The name of the sled tree holding the ledger's records.
const TREE: &str = "ledger";

/// How long [`SledStore::open`] waits for a lock left by a just-dropped handle.
const LOCK_GRACE: Duration = Duration::from_secs(5);

/// A ledger store in a sled database directory.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
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
        let (db, tree) = contain(&context, || {
            let mut config = sled::Config::new().path(path);
            if let Some(bytes) = cache_bytes {
                config = config.cache_capacity(bytes);
            }
            let db = config.open()?;
            let tree = db.open_tree(TREE)?;
            Ok((db, tree))
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

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        contain(&|| "reading the sled store".into(), || {
            Ok(self.tree.get(key)?.map(|value| value.to_vec()))
        })
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        let context = || "scanning the sled store".to_string();
        let iter = match contain(&context, || {
            Ok(self.tree.range(from.to_vec()..=to.to_vec()))
        }) {
            Ok(iter) => iter,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(SledRecords {
            iter,
            reverse,
            failed: false,
        })
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_writes() {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        contain(&|| "writing the sled store".into(), || {
            self.tree.apply_batch(sled_batch)
        })
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
