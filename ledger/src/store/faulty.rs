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
