//! Verification: walk the log, recompute the chain, decode each entry and re-derive its
//! transitions by replay. The same walk serves `verify`, the tail check at open, and
//! incremental verification from a trusted watermark.

use std::collections::BTreeSet;

use schemas::merkle::{self, CompactRange, Hash32};
use schemas::{chain_hash, Entry, Hash};
use serde::Serialize;

use crate::projection::Projection;
use crate::store::{keys, Store, StoreError};
use crate::LedgerError;

/// What is wrong at the first broken seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The stored hash is not the chain hash of the stored bytes.
    HashMismatch,
    /// An entry is missing: the next stored seq is not the expected one.
    SeqGap,
    /// The entry at this position records another seq (entries reordered).
    SeqMismatch,
    /// The entry's prev_hash is not the previous entry's hash.
    PrevHashMismatch,
    /// The stored bytes do not decode as an entry.
    Undecodable,
    /// Replay does not re-derive the transitions stored in the entry.
    TransitionMismatch,
    /// The head record names the last entry's seq but another hash.
    HeadMismatch,
    /// A stored snapshot of the projection is not the one the entry at its seq commits to
    /// (its digest differs, the entry commits to none, or, for `verify`, it is missing), or
    /// it differs from the state replay derives at that seq. `open` refuses such a snapshot
    /// rather than answer from it.
    SnapshotMismatch,
    /// An entry is stored beyond the recorded head.
    TrailingEntry,
    /// The Merkle nodes stored for this entry, or the frontier stored with the head, are
    /// not what the entries' bytes hash to.
    TreeMismatch,
    /// A signed checkpoint names a tree this ledger does not extend: the ledger is shorter
    /// than it (truncation, rollback) or has another root at its size (a fork). The seq is
    /// the checkpoint's tree size.
    CheckpointMismatch,
    /// The store holds less than the head that was acknowledged durable (its high-water
    /// mark, kept outside the store), or another entry at that seq: it was rolled back,
    /// truncated or replaced. The seq is the acknowledged one.
    RolledBack,
    /// The store's files are damaged: the storage engine reported corruption or failed on
    /// what it read, or the ledger directory's manifest or high-water mark is unreadable.
    /// The seq is the first one that could not be read (0: nothing could be).
    StoreDamaged,
    /// The store belongs to another ledger (its ledger id is not the directory's), or
    /// records none.
    ForeignStore,
}

impl FailureKind {
    /// The snake_case name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::HashMismatch => "hash_mismatch",
            FailureKind::SeqGap => "seq_gap",
            FailureKind::SeqMismatch => "seq_mismatch",
            FailureKind::PrevHashMismatch => "prev_hash_mismatch",
            FailureKind::Undecodable => "undecodable",
            FailureKind::TransitionMismatch => "transition_mismatch",
            FailureKind::HeadMismatch => "head_mismatch",
            FailureKind::SnapshotMismatch => "snapshot_mismatch",
            FailureKind::TrailingEntry => "trailing_entry",
            FailureKind::TreeMismatch => "tree_mismatch",
            FailureKind::CheckpointMismatch => "checkpoint_mismatch",
            FailureKind::RolledBack => "rolled_back",
            FailureKind::StoreDamaged => "store_damaged",
            FailureKind::ForeignStore => "foreign_store",
        }
    }
}

/// A failure at `seq` for a store read that failed during a walk. (A store that is only
/// unreachable for now says nothing about the log: walks return that as an error.)
fn unreadable(seq: u64, error: &StoreError) -> VerifyFailure {
    VerifyFailure {
        seq,
        kind: FailureKind::StoreDamaged,
        detail: format!("entry {seq} cannot be read: {error}"),
    }
}

/// The first broken seq and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// The first seq that fails.
    pub seq: u64,
    /// What fails there.
    pub kind: FailureKind,
    /// A sentence for people.
    pub detail: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: {}: {}", self.seq, self.kind.name(), self.detail)
    }
}

/// The result of a verification walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The first seq checked.
    pub from_seq: u64,
    /// The last seq that verified (the trusted start if none did).
    pub verified_seq: u64,
    /// The hash at `verified_seq`: a watermark for the next incremental verification.
    pub verified_hash: Hash,
    /// How many entries verified.
    pub entries: u64,
    /// The recorded head seq.
    pub head_seq: u64,
    /// The first failure, if any.
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    /// A report before any entry after the trusted `(start_seq, start_hash)` is checked.
    fn starting(start_seq: u64, start_hash: Hash, head_seq: u64) -> VerifyReport {
        VerifyReport {
            from_seq: start_seq + 1,
            verified_seq: start_seq,
            verified_hash: start_hash,
            entries: 0,
            head_seq,
            failure: None,
        }
    }

    /// Whether the walk found nothing wrong.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// What a walk makes of an entry that commits to a snapshot no longer stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingSnapshot {
    /// A failure (`SnapshotMismatch`): what the log committed to is gone (`verify`);
    /// except snapshots older than the newest committed one, which retention removes
    /// ([`crate::LedgerConfig::snapshots_kept`]).
    Report,
    /// Harmless: a snapshot is a cache, and the walk derives the state anyway (`open`).
    Tolerate,
}

/// Where a walk ends, and what it expects there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalkEnd {
    /// At the head record: nothing may be stored beyond it (`trailing_entry`), and the
    /// frontier stored with it must be the walk's.
    Head,
    /// At a head record read a moment ago, while a writer may be appending (a replica
    /// following the log): entries beyond it and the frontier record belong to later
    /// commits, so neither is judged.
    Following,
}

/// Walks entries after `(start_seq, start_hash)` up to the head, replaying into
/// `projection` (which must be the state at `start_seq`).
/// `frontier` must be the Merkle frontier at `start_seq`; it is extended entry by entry
/// and each entry's stored nodes, then the frontier stored with the head, are checked.
/// Every snapshot passed must be the one its entry commits to and equal the replay;
/// `missing` says whether a committed snapshot that is not stored fails. With `anchored`,
/// the walk starts from the snapshot at `start_seq` that `anchor` checked against its
/// committing entry a moment before: that digest is not computed again (hundreds of
/// megabytes read and hashed at cluster scale, for every open).
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk(
    store: &dyn Store,
    projection: &mut Projection,
    frontier: &mut CompactRange,
    (start_seq, start_hash): (u64, Hash),
    head: (u64, Hash),
    missing: MissingSnapshot,
    anchored: bool,
    mut end: WalkEnd,
) -> Result<VerifyReport, LedgerError> {
    let anchored = anchored.then_some(start_seq);
    let mut report = VerifyReport::starting(start_seq, start_hash, head.0);
    // Snapshots below the newest committed one may have been removed by retention.
    let retained_from = match missing {
        MissingSnapshot::Report => crate::committed_snapshot_seqs(store)?
            .first()
            .copied()
            .unwrap_or(0),
        MissingSnapshot::Tolerate => u64::MAX,
    };
    let fail = |report: &mut VerifyReport, seq: u64, kind: FailureKind, detail: String| {
        report.failure = Some(VerifyFailure { seq, kind, detail });
    };
    if frontier.size() != start_seq {
        fail(
            &mut report,
            start_seq + 1,
            FailureKind::TreeMismatch,
            format!("the stored Merkle nodes do not rebuild the tree of size {start_seq}"),
        );
        return Ok(report);
    }
    // The seqs alone: a scan would read every snapshot's bytes (hundreds of megabytes each
    // at cluster scale) to learn its key.
    let snapshot_seqs: BTreeSet<u64> = match store.snapshot_seqs() {
        Ok(seqs) => seqs.into_iter().filter(|&seq| seq > start_seq).collect(),
        Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),
        Err(e) => {
            report.failure = Some(unreadable(start_seq + 1, &e));
            return Ok(report);
        }
    };
    // Which entry commits to which snapshot (`P` records: one per snapshot, so few).
    let mut commits_to = std::collections::HashMap::new();
    let mut committed_by = std::collections::HashMap::new();
    let commitments = store.scan(
        &keys::seq_key(keys::SNAPSHOT_COMMITMENT, 0),
        &keys::seq_key(keys::SNAPSHOT_COMMITMENT, u64::MAX),
        false,
    );
    for item in commitments {
        match item {
            Ok((key, value)) => {
                let snapshot_seq = keys::seq_of(&key).filter(|_| key.len() == 9);
                let entry_seq = keys::seq_of(&value).filter(|_| value.len() == 8);
                if let (Some(snapshot_seq), Some(entry_seq)) = (snapshot_seq, entry_seq) {
                    commits_to.insert(entry_seq, snapshot_seq);
                    committed_by.insert(snapshot_seq, entry_seq);
                }
            }
            Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),
            Err(e) => {
                report.failure = Some(unreadable(start_seq + 1, &e));
                return Ok(report);
            }
        }
    }
    // The Merkle node records of the range, read in one scan rather than one read per
    // entry: a point read is a round trip to a database store.
    let mut stored_tree = std::collections::HashMap::new();
    let nodes = store.scan(
        &keys::seq_key(keys::TREE, start_seq),
        &keys::seq_key(keys::TREE, head.0.saturating_sub(1).max(start_seq)),
        false,
    );
    for item in nodes {
        match item {
            Ok((key, value)) if key.len() == 9 => {
                stored_tree.extend(keys::seq_of(&key).map(|leaf| (leaf, value)));
            }
            Ok(_) => {}
            Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),

            Err(e) => {
                report.failure = Some(unreadable(start_seq + 1, &e));
                return Ok(report);
            }
        }
    }
    let to = match end {
        WalkEnd::Head => keys::seq_key(keys::ENTRY, u64::MAX),
        WalkEnd::Following => keys::seq_key(keys::ENTRY, head.0),
    };
    // Checks 1-8 need only the stored bytes and the stored hash before each entry, so
    // they split into independent batches of consecutive seqs, while replay (checks 9
    // and 11) and the Merkle frontier (check 10) need every entry in order on one state.
    // Checking threads take the batches in turn (batch `k` to thread `k % threads`) and
    // this thread replays them in key order, so reading, decoding and hashing overlap
    // with replay on every core. It reports the first failure in the same order of
    // checks as one thread would (see `Step`), and stops at the first batch that ends
    // the walk, ignoring what checking threads found beyond it.
    let batches = head
        .0
        .saturating_sub(start_seq)
        .div_ceil(PIPELINE_BATCH)
        .max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_CHECKING_THREADS as usize) as u64;
    let threads = threads.min(batches);
    let plan = BatchPlan {
        to: &to,
        start: (start_seq, start_hash),
        head: (head.0, end == WalkEnd::Head),
        batches,
    };
    let outcome = std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut checkers = Vec::new();
        for first in 0..threads {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(PIPELINE_BATCHES);
            receivers.push(receiver);
            checkers.push(scope.spawn(move || {
                for k in (first..batches).step_by(threads as usize) {
                    let batch = plan.check_batch(store, k);
                    let ends = batch.ends;
                    if sender.send(batch).is_err() || ends {
                        return;
                    }
                }
            }));
        }
        let replayed = (|| -> Result<(), LedgerError> {
            for k in 0..batches {
                // A checking thread only stops early after a batch that ends the walk.
                let Ok(batch) = receivers[(k % threads) as usize].recv() else {
                    return Ok(());
                };
                for step in batch.steps {
                    let checked = match step {
                        Step::Entry(checked) => checked,
                        Step::Failed(failure) => {
                            report.failure = Some(failure);
                            return Ok(());
                        }
                        Step::Unavailable(e) => return Err(LedgerError::Storage(e)),
                        Step::HeadMoved => {
                            // A live writer committed past the head this walk read: the
                            // walk ends at that head, as a follower's does.
                            end = WalkEnd::Following;
                            return Ok(());
                        }
                    };
                    let Checked {
                        seq,
                        hash: stored_hash,
                        entry,
                        leaf,
                    } = *checked;
                    let Entry {
                        observed_at,
                        change,
                        transitions,
                        snapshot,
                        ..
                    } = entry;
                    // The decoded change is not needed after replay: it moves into the
                    // projection rather than being copied.
                    let derived = projection.apply_change_owned(seq, observed_at, change);
                    if derived != transitions {
                        fail(
                            &mut report,
                            seq,
                            FailureKind::TransitionMismatch,
                            format!("stored {transitions:?}, replay derives {derived:?}"),
                        );
                        return Ok(());
                    }
                    let nodes = frontier.append(leaf);
                    let stored_nodes = stored_tree.remove(&(seq - 1));
                    if stored_nodes.as_deref()
                        != crate::merkle_store::nodes_value(&nodes).as_deref()
                    {
                        fail(
                            &mut report,
                            seq,
                            FailureKind::TreeMismatch,
                            format!(
                                "the Merkle nodes stored for leaf {} are not those its bytes complete",
                                seq - 1
                            ),
                        );
                        return Ok(());
                    }
                    // A snapshot stored at this seq that an entry commits to must be the
                    // state replay derives here; a committed digest must be that of the
                    // snapshot it names.
                    let committed_here = committed_by.contains_key(&seq)
                        || (snapshot.is_some() && !commits_to.contains_key(&seq));
                    let content = (snapshot_seqs.contains(&seq) && committed_here).then_some(seq);
                    let commitment = snapshot
                        .map(|digest| (commits_to.get(&seq).copied().unwrap_or(seq), digest));
                    if content.is_some() || commitment.is_some() {
                        let commitment = commitment.filter(|(at, _)| Some(*at) != anchored);
                        let differs = match snapshot_differs(
                            store,
                            seq,
                            content,
                            commitment,
                            projection,
                            retained_from,
                        ) {
                            Ok(differs) => differs,
                            // A store gone for now says nothing about its snapshot.
                            Err(LedgerError::Storage(e)) if e.is_unavailable() => {
                                return Err(LedgerError::Storage(e));
                            }
                            Err(LedgerError::Storage(e)) => {
                                report.failure = Some(unreadable(seq, &e));
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        };
                        if let Some(detail) = differs {
                            fail(&mut report, seq, FailureKind::SnapshotMismatch, detail);
                            return Ok(());
                        }
                    }
                    report.verified_seq = seq;
                    report.verified_hash = stored_hash;
                    report.entries += 1;
                }
                if batch.ends {
                    return Ok(());
                }
            }
            Ok(())
        })();
        // The checking threads stop at their next send once nothing receives.
        drop(receivers);
        let checked = checkers.into_iter().try_for_each(|checker| {
            checker.join().map_err(|_| {
                LedgerError::Storage(StoreError::Damaged("a verification thread panicked".into()))
            })
        });
        replayed.and(checked)
    });
    outcome?;
    if report.failure.is_some() {
        return Ok(report);
    }
    if report.verified_seq < head.0 {
        let seq = report.verified_seq + 1;
        fail(
            &mut report,
            seq,
            FailureKind::SeqGap,
            format!(
                "the log ends at seq {} but the head records seq {}",
                seq - 1,
                head.0
            ),
        );
    } else if report.verified_hash != head.1 {
        let last = report.verified_hash;
        fail(
            &mut report,
            head.0,
            FailureKind::HeadMismatch,
            format!(
                "the head records hash {} but entry {} hashes to {}",
                head.1, head.0, last
            ),
        );
    } else if head.0 > 0 && end == WalkEnd::Head {
        let stored = match store.get(keys::FRONTIER) {
            Ok(stored) => stored,
            Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),

            Err(e) => {
                report.failure = Some(unreadable(head.0, &e));
                return Ok(report);
            }
        };
        let stored = stored
            .as_deref()
            .and_then(|value| crate::merkle_store::parse_frontier(head.0, value));
        // The frontier record of a later commit (a live writer's) is not this head's.
        if stored.as_ref() != Some(&*frontier) && !committed_since(store, head.0 + 1)? {
            fail(
                &mut report,
                head.0,
                FailureKind::TreeMismatch,
                "the Merkle frontier stored with the head is not the tree of the entries".into(),
            );
        }
    }
    Ok(report)
}

/// How many consecutive entries a checking thread reads in one scan and hands over at a
/// time: enough to make a scan's start and the channel's cost per entry negligible (a
/// scan is a query to a database store), few enough that replay starts at once.
const PIPELINE_BATCH: u64 = 512;

/// How many batches each checking thread may be ahead of replay (bounds the memory of
/// decoded entries waiting).
const PIPELINE_BATCHES: usize = 2;

/// At most this many checking threads: beyond a few, replay on its one thread is the
/// bound.
const MAX_CHECKING_THREADS: u64 = 4;

/// One entry that passed checks 1-8, decoded, with its Merkle leaf hash.
struct Checked {
    seq: u64,
    hash: Hash,
    entry: Entry,
    leaf: Hash32,
}

/// What a checking thread found at the next stored record, in key order.
enum Step {
    /// Checks 1-8 passed (boxed: a decoded entry is large and most steps are entries).
    Entry(Box<Checked>),
    /// The first failure of checks 1-8 (or an unreadable record): the batch ends here.
    Failed(VerifyFailure),
    /// The store is unreachable for now: the walk returns it as an error.
    Unavailable(StoreError),
    /// An entry past the head the walk read, which a live writer committed since (see
    /// [`committed_since`]): the walk ends at that head.
    HeadMoved,
}

/// The steps of one batch of consecutive seqs.
struct Batch {
    steps: Vec<Step>,
    /// Whether the walk ends with this batch: a step that is not an entry, the end of the
    /// stored entries, or the last batch (which goes on past the head, to find trailing
    /// entries).
    ends: bool,
}

/// How [`walk`] splits its range into batches for the checking threads.
#[derive(Clone, Copy)]
struct BatchPlan<'a> {
    /// The last key of the scan.
    to: &'a [u8],
    /// The trusted seq and hash the walk starts after.
    start: (u64, Hash),
    /// The recorded head seq, and whether the walk ends at the head record (where a live
    /// writer's later entries end it: [`Step::HeadMoved`]).
    head: (u64, bool),
    /// How many batches of [`PIPELINE_BATCH`] seqs (the last one possibly shorter).
    batches: u64,
}

impl BatchPlan<'_> {
    /// Scans batch `k` (seqs `start + 1 + k * PIPELINE_BATCH` on), running checks 1-8 on
    /// each record in key order until it holds its seqs, the first failure, or the end of
    /// the range. A batch after the first starts from the stored hash of the entry before
    /// it, read in the same scan: that entry is the previous batch's, which fails first
    /// if that hash is not the one the chain gives, so every check sees the same previous
    /// hash as a walk on one thread.
    fn check_batch(&self, store: &dyn Store, k: u64) -> Batch {
        let (start_seq, start_hash) = self.start;
        let (head_seq, ends_at_head) = self.head;
        let first = start_seq + 1 + k * PIPELINE_BATCH;
        let last_batch = k + 1 == self.batches;
        let count = (head_seq.saturating_add(1).saturating_sub(first)).min(PIPELINE_BATCH) as usize;
        let from = keys::seq_key(keys::ENTRY, if k == 0 { first } else { first - 1 });
        let mut records = store.scan(&from, self.to, false);
        let seed = if k == 0 {
            Ok((start_seq, start_hash))
        } else {
            previous_hash(records.next(), first - 1)
        };
        let mut verified = match seed {
            Ok(verified) => verified,
            Err(step) => {
                return Batch {
                    steps: vec![step],
                    ends: true,
                }
            }
        };
        let mut steps = Vec::with_capacity(count);
        while last_batch || steps.len() < count {
            let Some(item) = records.next() else {
                return Batch { steps, ends: true };
            };
            let step = match check_entry(item, &mut verified, head_seq) {
                Step::Failed(trailing)
                    if trailing.kind == FailureKind::TrailingEntry && ends_at_head =>
                {
                    match committed_since(store, trailing.seq) {
                        Ok(true) => Step::HeadMoved,
                        Ok(false) => Step::Failed(trailing),
                        Err(LedgerError::Storage(e)) if e.is_unavailable() => Step::Unavailable(e),
                        Err(e) => Step::Failed(VerifyFailure {
                            detail: format!(
                                "{} (and the head cannot be read again: {e})",
                                trailing.detail
                            ),
                            ..trailing
                        }),
                    }
                }
                step => step,
            };
            let entry = matches!(step, Step::Entry(_));
            steps.push(step);
            if !entry {
                return Batch { steps, ends: true };
            }
        }
        Batch {
            steps,
            ends: last_batch,
        }
    }
}

/// The stored hash of entry `seq` from the first record of a scan starting at its key,
/// as the trusted previous hash of the batch after it; or the step that ends the walk
/// if that record is not there. (The batch before reads the same record and reports
/// what is wrong with it first; only a store changed between the two reads gets here.)
fn previous_hash(
    record: Option<Result<crate::store::Record, StoreError>>,
    seq: u64,
) -> Result<(u64, Hash), Step> {
    let damaged = |detail: String| {
        Step::Failed(VerifyFailure {
            seq,
            kind: FailureKind::StoreDamaged,
            detail,
        })
    };
    match record {
        Some(Ok((key, value))) => {
            if key != keys::seq_key(keys::ENTRY, seq) {
                return Err(damaged(format!("entry {seq} is gone on a second read")));
            }
            Hash::from_slice(&value)
                .map(|hash| (seq, hash))
                .ok_or_else(|| {
                    damaged(format!(
                        "entry {seq} is shorter than a hash on a second read"
                    ))
                })
        }
        Some(Err(e)) if e.is_unavailable() => Err(Step::Unavailable(e)),
        Some(Err(e)) => Err(Step::Failed(unreadable(seq, &e))),
        None => Err(damaged(format!("entry {seq} is gone on a second read"))),
    }
}

/// Checks 1-8 of one stored record, and its Merkle leaf hash, `verified` being the last
/// seq and hash that passed them (advanced when this one does).
fn check_entry(
    item: Result<(Vec<u8>, Vec<u8>), StoreError>,
    verified: &mut (u64, Hash),
    head_seq: u64,
) -> Step {
    let expected = verified.0 + 1;
    let failed = |seq: u64, kind: FailureKind, detail: String| {
        Step::Failed(VerifyFailure { seq, kind, detail })
    };
    let (key, value) = match item {
        Ok(record) => record,
        Err(e) if e.is_unavailable() => return Step::Unavailable(e),
        Err(e) => return Step::Failed(unreadable(expected, &e)),
    };
    let Some(seq) = keys::seq_of(&key).filter(|_| key.len() == 9) else {
        return failed(
            expected,
            FailureKind::Undecodable,
            "malformed entry key".into(),
        );
    };
    if seq > head_seq {
        return failed(
            seq,
            FailureKind::TrailingEntry,
            format!("entry {seq} is stored beyond the recorded head {head_seq}"),
        );
    }
    if seq != expected {
        return failed(
            expected,
            FailureKind::SeqGap,
            format!("entry {expected} is missing (next stored is {seq})"),
        );
    }
    let Some(stored_hash) = Hash::from_slice(&value) else {
        return failed(
            seq,
            FailureKind::Undecodable,
            "value shorter than a hash".into(),
        );
    };
    let bytes = &value[32..];
    let entry = match Entry::decode(bytes) {
        Ok(entry) => entry,
        Err(e) => return failed(seq, FailureKind::Undecodable, e.to_string()),
    };
    if entry.seq != seq {
        return failed(
            seq,
            FailureKind::SeqMismatch,
            format!("the entry stored at seq {seq} records seq {}", entry.seq),
        );
    }
    let previous = verified.1;
    if entry.prev_hash != previous {
        return failed(
            seq,
            FailureKind::PrevHashMismatch,
            format!(
                "prev_hash {} but entry {} hashes to {previous}",
                entry.prev_hash,
                seq - 1
            ),
        );
    }
    let computed = chain_hash(&previous, seq, bytes);
    if computed != stored_hash {
        return failed(
            seq,
            FailureKind::HashMismatch,
            format!("stored hash {stored_hash}, the bytes hash to {computed}"),
        );
    }
    let leaf = merkle::leaf_hash(bytes);
    *verified = (seq, stored_hash);
    Step::Entry(Box::new(Checked {
        seq,
        hash: stored_hash,
        entry,
        leaf,
    }))
}

/// At entry `seq`: `content` (this seq, when a committed snapshot is stored here) must
/// decode to `replayed`; `commitment` (the snapshot seq this entry commits to, and the
/// digest it commits to) must be the digest of the snapshot stored there (a missing one
/// fails when it is at or after `retained_from`). `Some(why)` names the first difference.
fn snapshot_differs(
    store: &dyn Store,
    seq: u64,
    content: Option<u64>,
    commitment: Option<(u64, Hash)>,
    replayed: &Projection,
    retained_from: u64,
) -> Result<Option<String>, LedgerError> {
    if let Some((snapshot_seq, committed)) = commitment {
        // Streamed: a snapshot is hundreds of megabytes at cluster scale.
        match crate::streamed_snapshot_digest(store, snapshot_seq)? {
            None => {
                if snapshot_seq >= retained_from {
                    return Ok(Some(format!(
                        "entry {seq} commits to snapshot {committed} of seq {snapshot_seq}, but no snapshot is stored at seq {snapshot_seq}"
                    )));
                }
            }
            Some(digest) => {
                if digest != committed {
                    return Ok(Some(format!(
                        "the snapshot stored at seq {snapshot_seq} hashes to {digest} but entry {seq} commits to {committed}"
                    )));
                }
            }
        }
    }
    let Some(snapshot_seq) = content else {
        return Ok(None);
    };
    let Some(stream) = store.snapshot_reader(snapshot_seq)? else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let compared = crate::projection::layout::differs_from(
        std::io::BufReader::with_capacity(1 << 20, stream),
        replayed,
    );
    tracing::debug!(
        seq = snapshot_seq,
        ms = started.elapsed().as_millis() as u64,
        "snapshot compared with the replay"
    );
    match compared {
        Ok(None) => Ok(None),
        Ok(Some(difference)) => Ok(Some(format!(
            "the snapshot at seq {snapshot_seq} is not the state replay derives: {difference}"
        ))),
        Err(
            rmp_serde::decode::Error::InvalidMarkerRead(source)
            | rmp_serde::decode::Error::InvalidDataRead(source),
        ) if source.kind() != std::io::ErrorKind::UnexpectedEof => {
            Err(LedgerError::Storage(crate::StoreError::Io {
                context: format!("reading the snapshot at seq {snapshot_seq}"),
                source,
            }))
        }
        Err(e) => Ok(Some(format!(
            "the snapshot at seq {snapshot_seq} does not decode: {e}"
        ))),
    }
}

/// Whether a live writer of a shared store has committed entry `seq` since the head was
/// read: the head record, read again, now covers it. A shared store's reader (a
/// replica, `verify` beside `serve`) reads the head and the entries in separate reads, so
/// entries, the frontier and checkpoints past the head it read may be later commits; a
/// store this process writes (and every local one) never moves under it, so there an
/// entry past the head always trails.
pub(crate) fn committed_since(store: &dyn Store, seq: u64) -> Result<bool, LedgerError> {
    Ok(!store.is_writer() && crate::read_head(store)?.0 >= seq)
}

/// Checks the chain alone (key continuity, every stored hash against
/// `chain_hash(previous stored hash, seq, bytes)`, the head), on every core: each entry's
/// check needs only the stored hash before it, so the range splits into independent
/// chunks. No decoding, no replay: a tampered entry still breaks the chain at itself or at
/// the next entry. Entries after `start_seq`, trusting `start_hash`.
pub(crate) fn walk_chain(
    store: &dyn Store,
    start_seq: u64,
    start_hash: Hash,
    head: (u64, Hash),
) -> Result<VerifyReport, LedgerError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8) as u64;
    walk_chain_in_chunks(store, start_seq, start_hash, head, threads)
}

/// [`walk_chain`] over `threads` chunks, one thread each.
pub(crate) fn walk_chain_in_chunks(
    store: &dyn Store,
    start_seq: u64,
    start_hash: Hash,
    head: (u64, Hash),
    threads: u64,
) -> Result<VerifyReport, LedgerError> {
    let mut report = VerifyReport::starting(start_seq, start_hash, head.0);
    let trailing = match store
        .scan(
            &keys::seq_key(keys::ENTRY, head.0.saturating_add(1)),
            &keys::seq_key(keys::ENTRY, u64::MAX),
            false,
        )
        .next()
        .transpose()
    {
        Ok(record) => record.and_then(|(key, _)| keys::seq_of(&key)),
        Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),

        Err(e) => {
            report.failure = Some(unreadable(head.0.saturating_add(1), &e));
            return Ok(report);
        }
    };
    let total = head.0.saturating_sub(start_seq);
    let chunk = total.div_ceil(threads.max(1)).max(1);
    let ranges: Vec<(u64, u64)> = (0..threads)
        .map(|i| {
            (
                start_seq + 1 + i * chunk,
                (start_seq + (i + 1) * chunk).min(head.0),
            )
        })
        .filter(|(from, to)| from <= to)
        .collect();
    let results: Vec<Result<ChunkResult, LedgerError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(from, to)| {
                scope.spawn(move || check_chunk(store, from, to, start_seq, start_hash))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LedgerError::Storage(StoreError::Damaged(
                        "a verification thread panicked".into(),
                    )))
                })
            })
            .collect()
    });
    // In order, each chunk continuing the one before to its own end: a chunk that checked
    // less than its range without a failure is never taken as a pass.
    for (result, &(_, to)) in results.into_iter().zip(&ranges) {
        let chunk = result?;
        report.entries += chunk.verified;
        if let Some(last) = chunk.last {
            report.verified_seq = last.0;
            report.verified_hash = last.1;
        }
        if let Some(failure) = chunk.failure {
            report.failure = Some(failure);
            return Ok(report);
        }
        if report.verified_seq != to {
            report.failure = Some(VerifyFailure {
                seq: report.verified_seq + 1,
                kind: FailureKind::SeqGap,
                detail: format!(
                    "the chain was checked to entry {} of {}",
                    report.verified_seq, head.0
                ),
            });
            return Ok(report);
        }
    }
    if let Some(seq) = trailing.filter(|&seq| !matches!(committed_since(store, seq), Ok(true))) {
        report.failure = Some(VerifyFailure {
            seq,
            kind: FailureKind::TrailingEntry,
            detail: format!("entry {seq} is stored beyond the recorded head {}", head.0),
        });
    } else if report.verified_seq == head.0 && report.verified_hash != head.1 {
        report.failure = Some(VerifyFailure {
            seq: head.0,
            kind: FailureKind::HeadMismatch,
            detail: format!(
                "the head records hash {} but entry {} hashes to {}",
                head.1, head.0, report.verified_hash
            ),
        });
    }
    Ok(report)
}

struct ChunkResult {
    verified: u64,
    last: Option<(u64, Hash)>,
    failure: Option<VerifyFailure>,
}

fn check_chunk(
    store: &dyn Store,
    from: u64,
    to: u64,
    start_seq: u64,
    start_hash: Hash,
) -> Result<ChunkResult, LedgerError> {
    let mut result = ChunkResult {
        verified: 0,
        last: None,
        failure: None,
    };
    let mut previous = if from == start_seq + 1 {
        start_hash
    } else {
        // A chunk that cannot read the hash it chains from fails rather than checks
        // nothing: the chunk before may have read that entry fine (a read that failed
        // once), and a passing report must cover every entry. When the chunk before saw
        // the same, its failure comes first in the report.
        let before = match store.get(&keys::seq_key(keys::ENTRY, from - 1)) {
            Ok(before) => before,
            Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),
            Err(e) => {
                result.failure = Some(unreadable(from - 1, &e));
                return Ok(result);
            }
        };
        match before.as_deref().and_then(Hash::from_slice) {
            Some(hash) => hash,
            None => {
                result.failure = Some(VerifyFailure {
                    seq: from - 1,
                    kind: FailureKind::SeqGap,
                    detail: format!("entry {} is missing or shorter than a hash", from - 1),
                });
                return Ok(result);
            }
        }
    };
    let mut expected = from;
    let fail = |seq: u64, kind: FailureKind, detail: String, result: &mut ChunkResult| {
        result.failure = Some(VerifyFailure { seq, kind, detail });
    };
    for item in store.scan(
        &keys::seq_key(keys::ENTRY, from),
        &keys::seq_key(keys::ENTRY, to),
        false,
    ) {
        let (key, value) = match item {
            Ok(record) => record,
            Err(e) if e.is_unavailable() => return Err(LedgerError::Storage(e)),

            Err(e) => {
                result.failure = Some(unreadable(expected, &e));
                return Ok(result);
            }
        };
        let seq = keys::seq_of(&key)
            .filter(|_| key.len() == 9)
            .unwrap_or(expected);
        if seq != expected {
            fail(
                expected,
                FailureKind::SeqGap,
                format!("entry {expected} is missing (next stored is {seq})"),
                &mut result,
            );
            return Ok(result);
        }
        let Some(stored) = Hash::from_slice(&value) else {
            fail(
                seq,
                FailureKind::Undecodable,
                "value shorter than a hash".into(),
                &mut result,
            );
            return Ok(result);
        };
        let computed = chain_hash(&previous, seq, &value[32..]);
        if computed != stored {
            fail(
                seq,
                FailureKind::HashMismatch,
                format!("stored hash {stored}, the chain gives {computed}"),
                &mut result,
            );
            return Ok(result);
        }
        previous = stored;
        result.verified += 1;
        result.last = Some((seq, stored));
        expected += 1;
    }
    if expected <= to {
        fail(
            expected,
            FailureKind::SeqGap,
            format!(
                "entry {expected} is missing (the log ends at {})",
                expected - 1
            ),
            &mut result,
        );
    }
    Ok(result)
}
