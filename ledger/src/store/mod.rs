//! The storage boundary: everything the ledger keeps goes through [`Store`], a narrow
//! ordered key-value interface (point and range reads, one atomic batch per commit, a
//! durable flush), with snapshots written, listed, streamed and removed apart from the
//! log (a backend may keep them elsewhere: sled keeps them as files). The key layout is [`keys`]; the ledger decides what to write, a backend
//! only how. Backends:
//!
//! * [`SledStore`] (module `sled_store`): the embedded default, one sled tree, with
//!   snapshots as files beside it (module `snapshot_files`).
//! * [`PostgresStore`]: one table in a PostgreSQL database, for more than one replica,
//!   with snapshots in chunks in a second.
//! * [`MemoryStore`]: in memory, with an explicit model of durability (what a flush made
//!   durable, and the batches after it that a crash may or may not keep), for tests.
//! * [`FaultyStore`]: wraps another store and fails, crashes or tears at a chosen write,
//!   so crash consistency is tested at every write point.
//!
//! A new backend is a new module implementing [`Store`]; nothing outside a backend's own
//! module names its storage engine.

mod faulty;
pub mod keys;
mod memory;
pub mod postgres;
mod sled_store;
mod snapshot_files;

pub use faulty::{Fault, FaultyStore};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sled_store::SledStore;

/// A key and its value, as stored.
pub type Record = (Vec<u8>, Vec<u8>);

/// Records of a range scan, in key order (or reverse), each read failing on its own.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Record, StoreError>> + 'a>;

/// Writes a snapshot's bytes, in order, to the writer it is given
/// ([`Store::put_snapshot_streamed`]).
pub type SnapshotEncoder<'a> = &'a mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>;

/// The ledger's view of a store.
///
/// Contract: a [`Store::commit`] is atomic (after a crash, a batch is either wholly there or
/// wholly absent) and batches survive a crash in commit order (a crash keeps a prefix of
/// them); everything committed before a successful [`Store::flush`] survives a crash.
/// Reads see every committed batch.
pub trait Store: Send + Sync {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The values stored under `keys`, in their order (`None` where nothing is). The
    /// default reads them one at a time; a store where a read is a round trip to a server
    /// reads them together (a history of hundreds of entries, read for an incident).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Records with `from <= key <= to`, ascending, or descending when `reverse`.
    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_>;
    /// Applies every write of `batch` atomically.
    fn commit(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes every committed batch durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// A short name of the backend (`sled`, `memory`), for messages and the manifest.
    fn kind(&self) -> &'static str;

    /// The store format ([`keys::FORMAT`]) this store's layout needs: what a new ledger is
    /// marked with, and what a writer raises an older mark to. The default is
    /// [`keys::STORE_FORMAT_PER_KEY`], for a store that keeps each record under its own key;
    /// a packed sled store needs [`keys::STORE_FORMAT`].
    fn store_format(&self) -> u16 {
        keys::STORE_FORMAT_PER_KEY
    }

    /// Whether a large append may reach this store as several batches, each committed by
    /// a second thread while the next is derived. Right where a commit is cheap and only
    /// [`Store::flush`] makes it durable (sled applies a batch in memory). A store whose
    /// every commit is a durable transaction answers `false`, and a large append reaches
    /// it as one batch: cut into eight transactions, a PostgreSQL writer's cold start on
    /// 100k objects took 13-17 s, against 9.7-11 s as one (`cargo bench --bench restart`).
    fn pipelines_commits(&self) -> bool {
        true
    }

    /// Whether this handle may commit, acquiring the right when it can: the embedded
    /// stores always may (their files are locked by the process); a shared database
    /// only while this handle holds its single writer's lock.
    fn try_become_writer(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Whether this handle still is the writer (a shared database's writer loses the
    /// right when its session, and so its lock, ends, or when it is fenced off).
    fn is_writer(&self) -> bool {
        true
    }

    /// Stores the snapshot record after `seq` (its `S` key, [`keys::SNAPSHOT`]) durably,
    /// apart from the log: when this returns, a crash keeps it. Called by the ledger's
    /// snapshot thread while the writer goes on appending, so a backend must not make
    /// appends wait for it where it can avoid it (sled writes it to a file). The default
    /// commits it in a batch of its own and flushes.
    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.insert(&keys::seq_key(keys::SNAPSHOT, seq), bytes)?;
        self.flush()
    }

    /// Like [`Store::put_snapshot`], with the bytes written by `encode` as it produces
    /// them: at cluster scale a snapshot is hundreds of megabytes, which a backend that
    /// writes files need never hold (or first touch) whole. Durable when this returns, and
    /// nothing is stored if `encode` fails. The default collects the bytes and calls
    /// [`Store::put_snapshot`].
    fn put_snapshot_streamed(
        &self,
        seq: u64,
        encode: SnapshotEncoder<'_>,
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        encode(&mut bytes).map_err(|source| StoreError::Io {
            context: format!("encoding the snapshot at seq {seq}"),
            source,
        })?;
        self.put_snapshot(seq, &bytes)
    }

    /// The snapshot record after `seq` as a stream, if stored: a snapshot is hundreds of
    /// megabytes at cluster scale, and decoding it as it is read spares holding (and
    /// first touching) all of its bytes at once. The default reads the record whole.
    fn snapshot_reader(
        &self,
        seq: u64,
    ) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        Ok(self
            .get(&keys::seq_key(keys::SNAPSHOT, seq))?
            .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn std::io::Read + Send>))
    }

    /// Removes the snapshot record after `seq`, if any (old snapshots past the ledger's
    /// retention), without reading it.
    fn remove_snapshot(&self, seq: u64) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.remove(keys::seq_key(keys::SNAPSHOT, seq));
        self.commit(batch)
    }

    /// The seqs of the stored snapshot records, ascending, for retention. The default
    /// reads them with their values; a backend that can list keys alone should.
    fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        seqs_under(self, keys::SNAPSHOT, false)
    }

    /// Sets one record in a batch of its own (repair tools, tests).
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.commit(batch)
    }

    /// Removes one record in a batch of its own, returning what it held.
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let previous = self.get(key)?;
        let mut batch = Batch::default();
        batch.remove(key);
        self.commit(batch)?;
        Ok(previous)
    }

    /// Blocks until another handle may have committed to the store, or `timeout` has
    /// passed; whether a change woke it (`false`: the time ran out). A follower of a
    /// shared database waits on this between reads, so it applies a commit as soon as it
    /// is notified, and polls at `timeout` whenever notifications are lost. An embedded
    /// store has no other writer to wait for: it only sleeps.
    fn wait_for_change(&self, timeout: std::time::Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }
}

/// The seqs of the well-formed records (prefix and a u64) under `prefix`, ascending, or
/// descending when `reverse`.
pub(crate) fn seqs_under<S: Store + ?Sized>(
    store: &S,
    prefix: u8,
    reverse: bool,
) -> Result<Vec<u64>, StoreError> {
    let records = store.scan(
        &keys::seq_key(prefix, 0),
        &keys::seq_key(prefix, u64::MAX),
        reverse,
    );
    let mut seqs = Vec::new();
    for record in records {
        let (key, _) = record?;
        seqs.extend(keys::seq_of(&key).filter(|_| key.len() == 9));
    }
    Ok(seqs)
}

/// Two ordered record streams as one (ascending, or descending when `reverse`); on a key
/// in both, the second's record wins (a backend's snapshot over a copy an older layout
/// kept among the log's records).
pub(crate) struct MergedRecords<'a> {
    first: std::iter::Peekable<Records<'a>>,
    second: std::iter::Peekable<Records<'a>>,
    reverse: bool,
}

impl<'a> MergedRecords<'a> {
    pub(crate) fn new(first: Records<'a>, second: Records<'a>, reverse: bool) -> MergedRecords<'a> {
        MergedRecords {
            first: first.peekable(),
            second: second.peekable(),
            reverse,
        }
    }
}

impl Iterator for MergedRecords<'_> {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        let order = match (self.first.peek(), self.second.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            // An error ends the scan where it happened.
            (Some(Err(_)), _) => Ordering::Less,
            (_, Some(Err(_))) => Ordering::Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => match self.reverse {
                false => a.cmp(b),
                true => b.cmp(a),
            },
        };
        match order {
            Ordering::Less => self.first.next(),
            Ordering::Greater => self.second.next(),
            Ordering::Equal => {
                self.first.next();
                self.second.next()
            }
        }
    }
}

/// Writes applied together by [`Store::commit`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }

    /// How many writes it holds.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether it holds no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, in order: `None` removes the key.
    pub fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_deref()))
    }

    /// The writes, consumed.
    pub fn into_writes(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.writes.into_iter()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused or failed an operation (permissions, a full disk).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store cannot be reached for now (a database restarting, a dropped connection):
    /// nothing is known to be wrong with what it holds, and a later attempt may succeed.
    #[error("{context}: the database is unavailable: {source}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the store open.
    #[error("the store at {0} is in use by another process")]
    Locked(String),
    /// The store's files are damaged: the engine reported corruption, or failed inside
    /// (it panicked) on what it read.
    #[error("the store's files are damaged: {0}")]
    Damaged(String),
    /// A failure injected by [`FaultyStore`].
    #[error("injected fault: {0}")]
    Injected(String),
    /// A commit by a handle that is not the store's writer (a replica following it).
    #[error("{0} is written by another replica: this one only follows it")]
    NotWriter(String),
    /// The store's head moved under this writer: another writer appended since this one
    /// last did, so this one was deposed and must not write again.
    #[error("deposed: {0}")]
    Fenced(String),
}

impl StoreError {
    /// Whether the failure says the stored data is damaged (as opposed to an environment
    /// problem such as permissions or a lock).
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Damaged(_))
    }

    /// Whether the store is only unreachable for now (worth trying again).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
