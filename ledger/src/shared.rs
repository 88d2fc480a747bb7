//! One ledger shared by the tasks of a service: a single writer path and lock-free readers.
//!
//! Every task that records something (the watcher, the API's denial records, the
//! checkpoint signer, a replica following a shared store) goes through the writer's lock,
//! and [`SharedLedger::commit`] is the one place where changes are appended *and* made
//! durable. Readers never take that lock: [`SharedLedger::view`] returns the view the
//! writer published after its last durable flush, so a check never waits for an append,
//! an fsync, a snapshot or another reader, and never sees an entry that is not durable.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemas::Change;

use crate::{AppendOutcome, Ledger, LedgerError, LedgerReader, LedgerView};

/// A ledger shared between one writer path and any number of readers. Cheap to clone.
#[derive(Clone)]
pub struct SharedLedger {
    writer: Arc<Mutex<Ledger>>,
    reader: LedgerReader,
}

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// What one [`SharedLedger::commit`] did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// One outcome per offered change, in order.
    pub outcomes: Vec<AppendOutcome>,
    /// The durable head after the flush.
    pub durable_seq: u64,
    /// How long the flush (the fsync and the high-water mark) took.
    pub flush_time: Duration,
}

impl SharedLedger {
    /// Shares `ledger`.
    pub fn new(ledger: Ledger) -> SharedLedger {
        let reader = ledger.reader();
        SharedLedger {
            writer: Arc::new(Mutex::new(ledger)),
            reader,
        }
    }

    /// The view as of the last durable flush. Never blocks.
    pub fn view(&self) -> Arc<LedgerView> {
        self.reader.view()
    }

    /// A handle that reads views only (for whoever must not write).
    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    /// Appends `changes` and flushes them: when this returns `Ok`, every appended entry is
    /// durable and published to readers. Takes the writer's lock, so it blocks (call it
    /// from a blocking context in async code).
    pub fn commit(
        &self,
        changes: impl IntoIterator<Item = Change>,
        now: DateTime<Utc>,
    ) -> Result<Committed, LedgerError> {
        let mut ledger = self.lock();
        let outcomes = ledger.append_changes(changes, now)?;
        let started = Instant::now();
        let durable_seq = ledger.flush()?;
        Ok(Committed {
            outcomes,
            durable_seq,
            flush_time: started.elapsed(),
        })
    }

    /// Runs `work` with the writer's lock held (signing a checkpoint, following a shared
    /// store, promotion). Readers are not blocked meanwhile; other writers are.
    pub fn with_writer<R>(&self, work: impl FnOnce(&mut Ledger) -> R) -> R {
        work(&mut self.lock())
    }

    /// The writer's lock. A task that panicked while holding it may have left the working
    /// state ahead of the disk, so the ledger then refuses to write (fail closed) instead
    /// of going on from a state nobody can vouch for.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            let mut ledger = poisoned.into_inner();
            ledger.poison("a task panicked while writing to the ledger; restart the service");
            ledger
        })
    }
}
