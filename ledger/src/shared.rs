//! One ledger shared by the tasks of a service: a single writer path and lock-free readers.
//!
//! Every task that records something (the watcher, the API's denial records, the
//! checkpoint signer, a replica following a shared store) goes through the writer's lock,
//! and [`SharedLedger::commit`] is the one place where changes are appended *and* made
//! durable. Readers never take that lock: [`SharedLedger::view`] returns the view the
//! writer published after its last durable flush, so a check never waits for an append,
//! an fsync, a snapshot or another reader, and never sees an entry that is not durable.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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
    /// How long the flush (the fsync and the high-water mark) took; `None` when there was
    /// none (nothing was appended, and the head was already durable).
    pub flush_time: Option<Duration>,
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

    /// [`Ledger::commit`] under the writer's lock: when this returns `Ok`, every appended
    /// entry is durable and published to readers. It blocks (call it from a blocking
    /// context in async code).
    pub fn commit(
        &self,
        changes: impl IntoIterator<Item = Change>,
        now: DateTime<Utc>,
    ) -> Result<Committed, LedgerError> {
        self.lock().commit(changes, now)
    }

    /// Runs `work` with the writer's lock held (signing a checkpoint, following a shared
    /// store, promotion). Readers are not blocked meanwhile; other writers are.
    pub fn with_writer<R>(&self, work: impl FnOnce(&mut Ledger) -> R) -> R {
        work(&mut self.lock())
    }

    /// Waits up to `timeout` for another replica to commit to the shared store
    /// ([`crate::store::Store::wait_for_change`]): whether a commit was notified. Takes
    /// neither lock; it blocks (call it from a blocking context in async code).
    pub fn wait_for_change(&self, timeout: Duration) -> bool {
        // The store is the same in every view: the published one is as good as any.
        self.reader.view().store.wait_for_change(timeout)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::store::{Fault, FaultyStore, MemoryStore, Store};
    use crate::tests::pod;
    use crate::{CheckRequest, LedgerConfig};

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + second, 0).unwrap()
    }

    fn check_of(view: &LedgerView, n: u64) -> crate::Decision {
        let request = CheckRequest {
            namespace: "ns".into(),
            pod_name: format!("p{n}"),
            pod_uid: format!("pod-{n}"),
            sandbox_id: None,
            sandbox_name: None,
            sandbox_uid: None,
            claim_uid: None,
            require_claim: false,
            min_seq: None,
        };
        view.check(&request, true)
    }

    /// Write operations of this test: 0 the format record at open, 1 and 2 the first
    /// commit's batch and flush, 3 the second commit's batch, 4 its flush (held).
    const HELD_FLUSH: u64 = 4;

    #[test]
    fn a_check_completes_while_the_writer_is_blocked_mid_flush_and_sees_only_durable_entries() {
        let faulty = Arc::new(FaultyStore::new(
            Arc::new(MemoryStore::new()),
            Some((HELD_FLUSH, Fault::Hold)),
        ));
        let store: Arc<dyn Store> = Arc::clone(&faulty) as Arc<dyn Store>;
        let ledger = Ledger::open_store(store, None, None, LedgerConfig::default()).unwrap();
        let shared = SharedLedger::new(ledger);
        let first = shared
            .commit([Change::Object(pod(1))], at(1))
            .expect("first commit");
        assert_eq!(
            faulty.writes(),
            HELD_FLUSH - 1,
            "the write numbering changed"
        );
        let before = check_of(&shared.view(), 2);

        let writer = std::thread::spawn({
            let shared = shared.clone();
            move || shared.commit([Change::Object(pod(2))], at(2))
        });
        while !faulty.holding() {
            std::thread::yield_now();
        }
        // The writer holds its lock inside the flush: a reader is not blocked, and sees
        // the durable state only, although the store already holds the unflushed entry.
        let view = shared.view();
        assert_eq!(view.head().seq, first.durable_seq);
        assert_eq!(view.durable_seq(), first.durable_seq);
        assert!(view.entry(first.durable_seq + 1).unwrap().is_none());
        assert!(view.projection().object("pod-2").is_none());
        assert_eq!(check_of(&view, 2), before);
        assert_eq!(view.history_of_uid("pod-2").unwrap().len(), 0);

        faulty.release();
        let second = writer.join().unwrap().expect("second commit");
        assert_eq!(second.durable_seq, first.durable_seq + 1);
        let view = shared.view();
        assert_eq!(view.head().seq, second.durable_seq);
        assert!(view.projection().object("pod-2").is_some());
        assert_eq!(view.history_of_uid("pod-2").unwrap().len(), 1);
        assert_ne!(check_of(&view, 2).seq, before.seq);
    }

    #[test]
    fn a_commit_that_appends_nothing_does_not_flush_but_publishes_its_counters() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Ledger::open_store(store, None, None, LedgerConfig::default()).unwrap();
        let shared = SharedLedger::new(ledger);
        let first = shared.commit([Change::Object(pod(1))], at(1)).unwrap();
        assert!(first.flush_time.is_some());
        // A restart's list offers what is recorded already.
        let again = shared.commit([Change::Object(pod(1))], at(2)).unwrap();
        assert!(
            matches!(again.outcomes[..], [crate::AppendOutcome::Duplicate { .. }]),
            "{:?}",
            again.outcomes
        );
        assert_eq!(again.flush_time, None);
        assert_eq!(again.durable_seq, first.durable_seq);
        assert_eq!(shared.view().head().seq, first.durable_seq);
        assert_eq!(shared.view().stats().duplicates, 1);
        let next = shared.commit([Change::Object(pod(2))], at(3)).unwrap();
        assert!(next.flush_time.is_some());
        assert_eq!(next.durable_seq, first.durable_seq + 1);
        assert_eq!(shared.view().head().seq, next.durable_seq);
    }

    #[test]
    fn a_writer_that_panicked_leaves_a_ledger_that_refuses_writes() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Ledger::open_store(store, None, None, LedgerConfig::default()).unwrap();
        let shared = SharedLedger::new(ledger);
        shared.commit([Change::Object(pod(1))], at(1)).unwrap();
        let panicked = std::thread::spawn({
            let shared = shared.clone();
            move || shared.with_writer(|_| panic!("a writer task fails half-way"))
        })
        .join();
        assert!(panicked.is_err());
        let refused = shared.commit([Change::Object(pod(2))], at(2));
        assert!(
            matches!(refused, Err(LedgerError::Poisoned(_))),
            "{refused:?}"
        );
        // Readers still answer from the last durable view, which says it no longer writes.
        assert_eq!(shared.view().head().seq, 1);
        assert!(!shared.view().is_writer());
    }
}
