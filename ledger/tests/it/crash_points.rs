//! Crash consistency at every write point, deterministically: a workload of appends (some
//! large enough to be written in chunks by the writer thread), flushes, snapshots and
//! signed checkpoints runs against an in-memory store wrapped in the fault-injecting one,
//! which crashes before or after, or fails, its n-th write operation, for every n. After a
//! crash the store keeps what the last flush made durable plus any prefix of the batches
//! committed since (as sled may); each such image must reopen, verify, and hold every
//! acknowledged entry, with exactly the bytes the run wrote before it crashed.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use ledger::dir::{HighWater, MemoryHighWater};
use ledger::store::{keys, Fault, FaultyStore, MemoryStore, Store};
use ledger::{Ledger, LedgerConfig, LedgerError};
use schemas::checkpoint::SignerKey;
use schemas::{normalize, Hash, ObjectChange, WatchEventType};

fn pod(n: u64) -> ObjectChange {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{n}"), "namespace": "ns", "uid": format!("pod-{n}"),
                     "resourceVersion": n.to_string(),
                     "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                          "name": "s", "uid": "sb-1", "controller": true}]}});
    normalize(WatchEventType::Added, &object).unwrap().unwrap()
}

fn config() -> LedgerConfig {
    LedgerConfig {
        snapshot_every: 5,
        // Snapshots written inline at the flush that makes them due: the same store
        // writes in the same order in every run, so each one is a numbered write point.
        background_snapshots: false,
        ..LedgerConfig::default()
    }
}

enum Step {
    Append(std::ops::RangeInclusive<u64>),
    Flush,
    Sign,
}

/// The workload: small appends, snapshots every 5 entries, a checkpoint, and one append
/// of 600 changes (written in chunks by the ledger's writer thread).
fn steps() -> Vec<Step> {
    use Step::*;
    vec![
        Append(1..=3),
        Flush,
        Append(4..=7),
        Append(8..=8),
        Flush,
        Sign,
        Append(9..=609),
        Flush,
        Append(610..=612),
        Sign,
        Append(613..=613),
        Flush,
    ]
}

/// What a run acknowledged: the durable heads its flushes reported, and every entry hash
/// it wrote (by seq - 1).
#[derive(Debug, Default)]
struct Run {
    acknowledged: (u64, Hash),
    hashes: Vec<Hash>,
}

/// Runs the workload until the first error.
fn run(ledger: &mut Ledger, key: &SignerKey, out: &mut Run) -> Result<(), LedgerError> {
    let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    for step in steps() {
        match step {
            Step::Append(range) => {
                ledger.append(range.map(pod), at)?;
            }
            Step::Flush => {
                let seq = ledger.flush()?;
                out.acknowledged = (seq, ledger.head().hash);
            }
            Step::Sign => {
                let signed = ledger.sign_checkpoint(key, "crash.example")?;
                out.acknowledged = (signed.checkpoint.size, ledger.head().hash);
            }
        }
        let head = ledger.head().seq;
        while (out.hashes.len() as u64) < head {
            let seq = out.hashes.len() as u64 + 1;
            out.hashes
                .push(ledger.entry(seq)?.expect("an appended entry").hash);
        }
    }
    Ok(())
}

/// The stored record of entry `seq` (chain hash ‖ bytes).
fn image_bytes(ledger: &Ledger, seq: u64) -> Vec<u8> {
    let stored = ledger.entry(seq).unwrap().unwrap();
    [stored.hash.0.as_slice(), &stored.bytes].concat()
}

fn open(store: Arc<dyn Store>, mark: &Arc<MemoryHighWater>) -> Result<Ledger, LedgerError> {
    let mark: Arc<dyn HighWater> = mark.clone();
    Ledger::open_store(store, Some(mark), None, config())
}

/// Reopens a crash image and checks it against what was acknowledged and what the run
/// wrote (`written`: every batch it committed, crash or not).
fn check_image(
    what: &str,
    image: MemoryStore,
    mark: &Arc<MemoryHighWater>,
    acknowledged: (u64, Hash),
    written: &MemoryStore,
) {
    let ledger = open(Arc::new(image), mark)
        .unwrap_or_else(|e| panic!("{what}: the crash image does not open: {e}"));
    let report = ledger.verify().unwrap();
    assert!(report.ok(), "{what}: {:?}", report.failure);
    let head = ledger.head().seq;
    assert!(
        head >= acknowledged.0,
        "{what}: acknowledged entry {} lost (head {head})",
        acknowledged.0
    );
    for seq in 1..=head {
        let key = keys::seq_key(keys::ENTRY, seq);
        assert_eq!(
            image_bytes(&ledger, seq),
            written.get(&key).unwrap().unwrap(),
            "{what}: entry {seq} differs from the one written"
        );
    }
    if acknowledged.0 > 0 {
        assert_eq!(
            ledger.entry(acknowledged.0).unwrap().unwrap().hash,
            acknowledged.1,
            "{what}"
        );
    }
    if let Some(latest) = ledger.latest_checkpoint().unwrap() {
        assert!(
            ledger.check_checkpoint(&latest.checkpoint).is_ok(),
            "{what}"
        );
    }
}

#[test]
fn every_write_point_survives_a_crash_with_every_acknowledged_entry() {
    let key = SignerKey::from_seed("crash.example", [7; 32]).unwrap();
    // The fault-free run: how many write operations, and what it wrote.
    let memory = MemoryStore::new();
    let counter = Arc::new(FaultyStore::new(Arc::new(memory.clone()), None));
    let mark = Arc::new(MemoryHighWater::default());
    let mut reference = Run::default();
    let mut ledger = open(counter.clone(), &mark).unwrap();
    run(&mut ledger, &key, &mut reference).unwrap();
    drop(ledger);
    let writes = counter.writes();
    assert!(writes >= 15, "{writes} write operations");
    assert_eq!(reference.hashes.len(), 613);

    let mut images = 0;
    for at in 0..writes {
        for fault in [Fault::CrashBefore, Fault::CrashAfter, Fault::Fail] {
            let what = format!("{fault:?} at write {at}");
            let memory = MemoryStore::new();
            let faulty = Arc::new(FaultyStore::new(
                Arc::new(memory.clone()),
                Some((at, fault)),
            ));
            let mark = Arc::new(MemoryHighWater::default());
            let mut out = Run::default();
            let result =
                open(faulty.clone(), &mark).and_then(|mut ledger| run(&mut ledger, &key, &mut out));
            assert!(faulty.writes() > at, "{what}: the fault was never hit");
            if result.is_ok() {
                // Only a failed snapshot write goes unreported (a snapshot is a cache, and
                // the next open replays the tail instead): every entry was still written
                // (committing to no snapshot, so with other hashes from there on).
                assert_eq!(fault, Fault::Fail, "{what}: a crash went unnoticed");
                assert_eq!(out.hashes.len(), reference.hashes.len(), "{what}");
            }
            let acknowledged = mark
                .load()
                .unwrap()
                .map_or((0, Hash::ZERO), |m| (m.seq, m.hash));
            // The mark is only ever saved after a successful flush.
            assert!(acknowledged.0 >= out.acknowledged.0, "{what}");
            match fault {
                Fault::CrashBefore | Fault::CrashAfter => {
                    assert!(faulty.crashed(), "{what}");
                    for keep in 0..=memory.unflushed_batches() {
                        check_image(
                            &format!("{what}, {keep} unflushed batches kept"),
                            memory.after_crash(keep),
                            &mark,
                            acknowledged,
                            &memory,
                        );
                        images += 1;
                    }
                }
                _ => {
                    // A failed write leaves a store that reopens as it stands.
                    check_image(
                        &what,
                        memory.after_crash(usize::MAX),
                        &mark,
                        acknowledged,
                        &memory,
                    );
                    images += 1;
                }
            }
        }
    }
    eprintln!("{writes} write points, {images} crash images reopened and verified");
}

#[test]
fn a_failed_write_refuses_further_writes_until_reopened() {
    let memory = MemoryStore::new();
    // Write 0 is the format record at open; fail the first append's commit.
    let faulty = Arc::new(FaultyStore::new(
        Arc::new(memory.clone()),
        Some((1, Fault::Fail)),
    ));
    let mark = Arc::new(MemoryHighWater::default());
    let mut ledger = open(faulty, &mark).unwrap();
    let reader = ledger.reader();
    let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    assert_eq!(reader.view().stopped(), None);
    assert!(ledger.append((1..=3).map(pod), at).is_err());
    // What readers see now holds entries the store may not: it says the writer stopped,
    // so that no one answers from it as fresh.
    let view = reader.view();
    assert!(view.head().seq > view.durable_seq());
    assert!(
        view.stopped()
            .is_some_and(|why| why.contains("commit #1 failed")),
        "{:?}",
        view.stopped()
    );
    assert!(matches!(
        ledger.append((4..=4).map(pod), at),
        Err(LedgerError::Poisoned(_))
    ));
    assert!(matches!(ledger.flush(), Err(LedgerError::Poisoned(_))));
    drop(ledger);
    let mut reopened = open(Arc::new(memory), &mark).unwrap();
    assert_eq!(reopened.head().seq, 0);
    reopened.append((1..=3).map(pod), at).unwrap();
    assert_eq!(reopened.flush().unwrap(), 3);
}

#[test]
fn a_store_shorter_than_the_high_water_mark_is_refused_as_rolled_back() {
    let memory = MemoryStore::new();
    let mark = Arc::new(MemoryHighWater::default());
    let mut ledger = open(Arc::new(memory.clone()), &mark).unwrap();
    let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    ledger.append((1..=3).map(pod), at).unwrap();
    ledger.flush().unwrap();
    let snapshot_of_three = memory.after_crash(0);
    ledger.append((4..=6).map(pod), at).unwrap();
    ledger.flush().unwrap();
    drop(ledger);
    match open(Arc::new(snapshot_of_three), &mark) {
        Err(LedgerError::Corrupt(failure)) => {
            assert_eq!(
                (failure.seq, failure.kind.name()),
                (6, "rolled_back"),
                "{failure}"
            );
        }
        other => panic!("an older copy of the store was accepted: {other:?}"),
    }
}

#[test]
fn a_chunk_that_fails_mid_append_reports_the_stores_error_and_leaves_a_verified_prefix() {
    let memory = MemoryStore::new();
    let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let mark = Arc::new(MemoryHighWater::default());
    // Write 0 is the format record at open; writes 1 and 2 the first two chunks of a
    // large append (chunks of 128 entries); write 3, its third chunk, fails.
    let faulty = Arc::new(FaultyStore::new(
        Arc::new(memory.clone()),
        Some((3, Fault::Fail)),
    ));
    let mut ledger = open(faulty, &mark).unwrap();
    match ledger.append((1..=1_000).map(pod), at) {
        Err(e @ LedgerError::Storage(_)) => {
            let message = format!("{e}: {:?}", std::error::Error::source(&e));
            assert!(message.contains("commit #3 failed"), "{message}");
        }
        other => panic!("expected the store's own error, got {other:?}"),
    }
    assert!(matches!(
        ledger.append((1_001..=1_001).map(pod), at),
        Err(LedgerError::Poisoned(_))
    ));
    drop(ledger);
    let mut reopened = open(Arc::new(memory), &mark).unwrap();
    assert_eq!(
        reopened.head().seq,
        256,
        "the two chunks written before the failure"
    );
    assert!(reopened.verify().unwrap().ok());
    // The rest goes in again, through a committing thread of the reopened ledger.
    let outcomes = reopened.append((1..=1_000).map(pod), at).unwrap();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, ledger::AppendOutcome::Appended { .. }))
            .count(),
        744
    );
    assert_eq!(reopened.flush().unwrap(), 1_000);
    assert!(reopened.verify().unwrap().ok());
}
