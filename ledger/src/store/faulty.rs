//! A store that fails on purpose: it wraps another and, at a chosen write operation
//! (every commit, flush, snapshot write and snapshot removal is one, numbered from 0),
//! fails it, crashes before or after it, or holds it until released, so tests reach every
//! write point of an append deterministically. Everything else is the wrapped store's own
//! (its snapshot layout and streams, its writer's lock, its change notifications), so a
//! test of a backend through it tests that backend; reads fail once it has crashed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{Batch, Records, Store, StoreError};

/// What happens at the chosen write operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails and is not applied; later operations work.
    Fail,
    /// The process "dies" just before the operation: it is not applied, and it and every
    /// later operation, reads included, fail.
    CrashBefore,
    /// The process "dies" just after the operation was applied: it reports failure, and
    /// every later operation fails.
    CrashAfter,
    /// The operation waits until [`FaultyStore::release`] (a writer stuck in a slow fsync).
    Hold,
}

/// A store that injects one [`Fault`] at one write operation.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    fault: Option<(u64, Fault)>,
    writes: AtomicU64,
    crashed: AtomicBool,
    hold: Arc<(Mutex<HoldState>, Condvar)>,
}

#[derive(Debug, Default)]
struct HoldState {
    holding: bool,
    released: bool,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("fault", &self.fault)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// Wraps `inner`, injecting `fault` at write operation `at` (`None`: never).
    pub fn new(inner: Arc<dyn Store>, fault: Option<(u64, Fault)>) -> FaultyStore {
        FaultyStore {
            inner,
            fault,
            writes: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
            hold: Arc::default(),
        }
    }

    /// How many write operations were attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Whether the injected crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Whether a write is being held by [`Fault::Hold`] right now.
    pub fn holding(&self) -> bool {
        self.hold
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holding
    }

    /// Lets a held write (and any later one) go on.
    pub fn release(&self) {
        let (lock, wake) = &*self.hold;
        lock.lock().unwrap_or_else(|e| e.into_inner()).released = true;
        wake.notify_all();
    }

    fn dead(&self) -> Result<(), StoreError> {
        match self.crashed() {
            true => Err(StoreError::Injected("the store crashed".into())),
            false => Ok(()),
        }
    }

    /// Runs one write operation under the plan.
    fn write(
        &self,
        what: &str,
        apply: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.dead()?;
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Some((at, fault)) if at == n => match fault {
                Fault::Fail => Err(StoreError::Injected(format!("{what} #{n} failed"))),
                Fault::CrashBefore => {
                    self.crashed.store(true, Ordering::SeqCst);
                    Err(StoreError::Injected(format!("crashed before {what} #{n}")))
                }
                Fault::CrashAfter => {
                    let applied = apply();
                    self.crashed.store(true, Ordering::SeqCst);
                    applied?;
                    Err(StoreError::Injected(format!("crashed after {what} #{n}")))
                }
                Fault::Hold => {
                    let (lock, wake) = &*self.hold;
                    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                    state.holding = true;
                    while !state.released {
                        state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    state.holding = false;
                    drop(state);
                    apply()
                }
            },
            _ => apply(),
        }
    }
}

impl Store for FaultyStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.dead()?;
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.dead()?;
        self.inner.get_many(keys)
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if let Err(e) = self.dead() {
            return Box::new(std::iter::once(Err(e)));
        }
        self.inner.scan(from, to, reverse)
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.write("commit", || self.inner.commit(batch))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.write("flush", || self.inner.flush())
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn pipelines_commits(&self) -> bool {
        self.inner.pipelines_commits()
    }

    fn store_format(&self) -> u16 {
        self.inner.store_format()
    }

    fn try_become_writer(&self) -> Result<bool, StoreError> {
        self.dead()?;
        self.inner.try_become_writer()
    }

    fn is_writer(&self) -> bool {
        !self.crashed() && self.inner.is_writer()
    }

    // The snapshot methods are forwarded rather than left to the trait's defaults, which
    // would turn them into commits and flushes of this store and so hide the wrapped
    // one's own (sled's files, PostgreSQL's chunk table and its sessions). A snapshot
    // write is one write operation: durable when it returns, as the trait says.
    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.write("put_snapshot", || self.inner.put_snapshot(seq, bytes))
    }

    fn put_snapshot_streamed(
        &self,
        seq: u64,
        encode: super::SnapshotEncoder<'_>,
    ) -> Result<(), StoreError> {
        self.write("put_snapshot", || {
            self.inner.put_snapshot_streamed(seq, encode)
        })
    }

    fn snapshot_reader(
        &self,
        seq: u64,
    ) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        self.dead()?;
        self.inner.snapshot_reader(seq)
    }

    fn remove_snapshot(&self, seq: u64) -> Result<(), StoreError> {
        self.write("remove_snapshot", || self.inner.remove_snapshot(seq))
    }

    fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        self.dead()?;
        self.inner.snapshot_seqs()
    }

    fn wait_for_change(&self, timeout: std::time::Duration) -> bool {
        // A crashed store has no writer left to wait for: a plain wait.
        match self.crashed() {
            true => {
                std::thread::sleep(timeout);
                false
            }
            false => self.inner.wait_for_change(timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{keys, MemoryStore};
    use std::io::Read;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A memory store that keeps snapshots apart, as sled and PostgreSQL do, and counts
    /// the change waits it is asked for: what reaches it shows what was forwarded.
    #[derive(Default)]
    struct Apart {
        log: MemoryStore,
        snapshots: Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
        waits: AtomicUsize,
    }

    impl Store for Apart {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.log.get(key)
        }
        fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
            self.log.scan(from, to, reverse)
        }
        fn commit(&self, batch: Batch) -> Result<(), StoreError> {
            self.log.commit(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.log.flush()
        }
        fn kind(&self) -> &'static str {
            "apart"
        }
        fn is_writer(&self) -> bool {
            false
        }
        fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
            self.snapshots.lock().unwrap().insert(seq, bytes.to_vec());
            Ok(())
        }
        fn snapshot_reader(
            &self,
            seq: u64,
        ) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
            Ok(self.snapshots.lock().unwrap().get(&seq).map(|bytes| {
                Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn std::io::Read + Send>
            }))
        }
        fn remove_snapshot(&self, seq: u64) -> Result<(), StoreError> {
            self.snapshots.lock().unwrap().remove(&seq);
            Ok(())
        }
        fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
            Ok(self.snapshots.lock().unwrap().keys().copied().collect())
        }
        fn wait_for_change(&self, _timeout: Duration) -> bool {
            self.waits.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    #[test]
    fn snapshots_writer_state_and_change_waits_are_the_wrapped_stores() {
        let inner = Arc::new(Apart::default());
        let faulty = FaultyStore::new(inner.clone(), Some((2, Fault::Fail)));
        faulty.put_snapshot(5, b"five").unwrap();
        faulty.put_snapshot(6, b"six").unwrap();
        // Write operation 2, the third snapshot write, fails and is not applied.
        assert!(faulty.put_snapshot(7, b"seven").is_err());
        assert_eq!(faulty.writes(), 3);
        // Kept apart by the wrapped store, not committed to its log as `S` records.
        assert_eq!(
            inner.log.get(&keys::seq_key(keys::SNAPSHOT, 5)).unwrap(),
            None
        );
        assert_eq!(faulty.snapshot_seqs().unwrap(), [5, 6]);
        let mut read = Vec::new();
        faulty
            .snapshot_reader(6)
            .unwrap()
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, b"six");
        faulty.remove_snapshot(5).unwrap();
        assert_eq!(inner.snapshot_seqs().unwrap(), [6]);
        assert!(faulty.wait_for_change(Duration::from_secs(3600)));
        assert_eq!(inner.waits.load(Ordering::SeqCst), 1);
        assert!(!faulty.is_writer());

        // After a crash nothing is read, written or waited for through it.
        let faulty = FaultyStore::new(inner.clone(), Some((0, Fault::CrashBefore)));
        assert!(faulty.remove_snapshot(6).is_err());
        assert!(faulty.crashed());
        assert!(faulty.snapshot_seqs().is_err());
        assert!(faulty.snapshot_reader(6).is_err());
        assert!(!faulty.wait_for_change(Duration::from_millis(1)));
        assert_eq!(inner.waits.load(Ordering::SeqCst), 1);
        assert_eq!(inner.snapshot_seqs().unwrap(), [6]);
    }
}
