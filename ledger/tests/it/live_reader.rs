//! A reader of a shared store (a follower replica starting, `verify` beside a live
//! writer) reads the head record and then the entries in separate reads, and a writer
//! may commit in between: entries, a frontier and a checkpoint past the head it read are
//! then later commits, not damage. Each case is made deterministic by a store that hands
//! the reader the head as it was before the writer's last commits. An entry past a head
//! that did not move is still a trailing entry.

use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use ledger::store::{keys, Batch, MemoryStore, Records, Store, StoreError};
use ledger::{FailureKind, Ledger, LedgerConfig, LedgerError};
use schemas::checkpoint::SignerKey;
use schemas::{normalize, ObjectChange, WatchEventType};

fn pod(n: u64) -> ObjectChange {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{n}"), "namespace": "ns", "uid": format!("pod-{n}"),
                     "resourceVersion": n.to_string(),
                     "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                          "name": "s", "uid": "sb-1", "controller": true}]}});
    normalize(WatchEventType::Added, &object).unwrap().unwrap()
}

/// The writer's store as another process sees it: not the writer, and, once armed, its
/// next read of the head record answers the head as it was before (the writer commits
/// right after the reader read it); with `entries_upto`, its scans of entries end there
/// (the writer commits after the reader's last page of entries, before it reads the
/// frontier).
struct Reader {
    inner: MemoryStore,
    stale_head: Mutex<Option<Vec<u8>>>,
    entries_upto: Mutex<Option<u64>>,
    /// Once set, the next scan of entries yields this many and then fails as a database
    /// that went away would.
    entries_then_gone: Mutex<Option<usize>>,
    /// Once set, the next point read of a snapshot fails as a database that went away
    /// would.
    snapshot_gone: Mutex<bool>,
}

impl Store for Reader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if key.first() == Some(&keys::SNAPSHOT)
            && std::mem::take(&mut *self.snapshot_gone.lock().unwrap())
        {
            return Err(StoreError::Unavailable {
                context: "reading a snapshot".into(),
                source: std::io::Error::other("connection reset"),
            });
        }
        if key == keys::HEAD {
            if let Some(stale) = self.stale_head.lock().unwrap().take() {
                return Ok(Some(stale));
            }
        }
        self.inner.get(key)
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from.first() == Some(&keys::ENTRY) {
            if let Some(yielded) = self.entries_then_gone.lock().unwrap().take() {
                let gone = StoreError::Unavailable {
                    context: "reading entries".into(),
                    source: std::io::Error::other("connection reset"),
                };
                return Box::new(
                    self.inner
                        .scan(from, to, reverse)
                        .take(yielded)
                        .chain(std::iter::once(Err(gone))),
                );
            }
        }
        match *self.entries_upto.lock().unwrap() {
            Some(seq) if from.first() == Some(&keys::ENTRY) => {
                let last = keys::seq_key(keys::ENTRY, seq);
                self.inner.scan(from, to.min(&last[..]), reverse)
            }
            _ => self.inner.scan(from, to, reverse),
        }
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.commit(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn kind(&self) -> &'static str {
        "reader"
    }

    fn is_writer(&self) -> bool {
        false
    }
}

fn config() -> LedgerConfig {
    LedgerConfig {
        background_snapshots: false,
        ..LedgerConfig::default()
    }
}

/// A writer that appended 10 entries (the head a reader reads), then 5 more and signed a
/// checkpoint of 15; the reader's view of its store, armed with the head of 10; and that
/// head record, to arm it again.
fn writer_and_reader() -> (Ledger, Arc<Reader>, Vec<u8>) {
    writer_and_reader_with(config())
}

/// [`writer_and_reader`] with a writer of `config`.
fn writer_and_reader_with(config: LedgerConfig) -> (Ledger, Arc<Reader>, Vec<u8>) {
    let memory = MemoryStore::new();
    let mut writer = Ledger::open_store(Arc::new(memory.clone()), None, None, config).unwrap();
    let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    writer.append((1..=10).map(pod), at).unwrap();
    writer.flush().unwrap();
    let head_of_10 = memory.get(keys::HEAD).unwrap().unwrap();
    writer.append((11..=15).map(pod), at).unwrap();
    writer.flush().unwrap();
    let key = SignerKey::from_seed("reader.example", [9; 32]).unwrap();
    writer.sign_checkpoint(&key, "reader.example").unwrap();
    let reader = Arc::new(Reader {
        inner: memory,
        stale_head: Mutex::new(Some(head_of_10.clone())),
        entries_upto: Mutex::new(None),
        entries_then_gone: Mutex::new(None),
        snapshot_gone: Mutex::new(false),
    });
    (writer, reader, head_of_10)
}

#[test]
fn a_reader_opens_while_the_writer_commits_past_the_head_it_read() {
    let (_writer, reader, _) = writer_and_reader();
    let mut follower = Ledger::open_store(reader.clone(), None, None, config())
        .unwrap_or_else(|e| panic!("a follower starting beside a live writer: {e}"));
    assert_eq!(follower.head().seq, 10);
    // It follows on to the writer's head.
    assert_eq!(follower.follow().unwrap(), 5);
    assert_eq!(follower.head().seq, 15);
}

#[test]
fn a_follower_whose_store_goes_away_mid_walk_follows_again_once_it_is_back() {
    let (_writer, reader, _) = writer_and_reader();
    let mut follower = Ledger::open_store(reader.clone(), None, None, config()).unwrap();
    assert_eq!(follower.head().seq, 10);
    let before = follower.reader().view().projection().clone();
    *reader.entries_then_gone.lock().unwrap() = Some(2);
    match follower.follow() {
        Err(LedgerError::Storage(e)) if e.is_unavailable() => {}
        other => panic!("expected the store's unavailability, got {other:?}"),
    }
    assert_eq!(follower.head().seq, 10);
    assert!(follower.reader().view().projection() == &before);
    // The store is back: the follower goes on from its head, not from where the walk
    // that failed had got to.
    assert_eq!(follower.follow().unwrap(), 5);
    assert_eq!(follower.head().seq, 15);
    assert!(follower.verify().unwrap().ok());
}

#[test]
fn a_follower_whose_store_goes_away_while_it_checks_a_snapshot_follows_again() {
    // A writer whose snapshot at seq 10 is committed to by entry 11.
    let (_writer, reader, _) = writer_and_reader_with(LedgerConfig {
        snapshot_every: 10,
        ..config()
    });
    assert!(reader
        .inner
        .get(&keys::seq_key(keys::SNAPSHOT, 10))
        .unwrap()
        .is_some());
    let mut follower = Ledger::open_store(reader.clone(), None, None, config()).unwrap();
    assert_eq!(follower.head().seq, 10);
    *reader.snapshot_gone.lock().unwrap() = true;
    match follower.follow() {
        Err(LedgerError::Storage(e)) if e.is_unavailable() => {}
        other => panic!("expected the store's unavailability, got {other:?}"),
    }
    assert_eq!(follower.follow().unwrap(), 5);
    assert_eq!(follower.head().seq, 15);
}

#[test]
fn a_full_verify_beside_the_live_writer_is_not_a_false_alarm() {
    let (_writer, reader, head_of_10) = writer_and_reader();
    let opened = Ledger::open_store(reader.clone(), None, None, config()).unwrap();
    *reader.stale_head.lock().unwrap() = Some(head_of_10.clone());
    let report = opened.verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.verified_seq, 10);
    *reader.stale_head.lock().unwrap() = Some(head_of_10);
    let report = opened.verify_chain().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

#[test]
fn the_frontier_of_a_later_commit_is_not_judged_against_the_head_read() {
    let (_writer, reader, _) = writer_and_reader();
    *reader.entries_upto.lock().unwrap() = Some(10);
    let follower = Ledger::open_store(reader.clone(), None, None, config())
        .unwrap_or_else(|e| panic!("the frontier of the writer's later commit: {e}"));
    assert_eq!(follower.head().seq, 10);
}

#[test]
fn an_entry_past_a_head_that_did_not_move_still_trails() {
    let (writer, reader, _) = writer_and_reader();
    reader.stale_head.lock().unwrap().take();
    // Entry 15's record copied to seq 16, with no head covering it.
    let record = reader
        .inner
        .get(&keys::seq_key(keys::ENTRY, 15))
        .unwrap()
        .unwrap();
    drop(writer);
    reader
        .inner
        .insert(&keys::seq_key(keys::ENTRY, 16), &record)
        .unwrap();
    match Ledger::open_store(reader, None, None, config()) {
        Err(LedgerError::Corrupt(failure)) => {
            assert_eq!(
                (failure.seq, failure.kind),
                (16, FailureKind::TrailingEntry)
            )
        }
        other => panic!("a trailing entry was let in: {:?}", other.map(|l| l.head())),
    }
}
