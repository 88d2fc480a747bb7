//! The claim-ledger log: a hash-chained, append-only sled store of observed changes,
//! the projection that answers "is pod P bound to sandbox S?", verification and replay.
//!
//! * [`Ledger::append`] classifies each change (new, duplicate, stale, unchanged), derives
//!   its transitions, and writes entries, indexes, head and any snapshot in one atomic
//!   sled batch. [`Ledger::flush`] makes them durable (group commit): nothing appended is
//!   acknowledged durable before a flush that covers it.
//! * [`Ledger::open`] loads the latest snapshot and verifies the tail after it; a ledger
//!   that fails is refused unless opened with `allow_corrupt` (read-only, for forensics).
//! * [`Ledger::verify`] walks everything; [`Ledger::verify_from`] continues from a watermark.
//! * [`Ledger::state_at_seq`], [`Ledger::seq_at_time`], [`Ledger::history_of_uid`] and
//!   [`Ledger::history_of_name`] serve incident replay.
//! * The same entries are the leaves of an RFC 6962 Merkle tree, written in the same
//!   batches: [`Ledger::inclusion_proof`], [`Ledger::consistency_proof`] and signed
//!   checkpoints ([`Ledger::sign_checkpoint`]) let outsiders check the log without us.

mod keys;
pub mod projection;
mod tree;
mod verify;

use std::cmp::Ordering;
use std::path::Path;

use chrono::{DateTime, Utc};
use schemas::merkle::{self, CompactRange};
use schemas::{
    chain_hash, Change, ChangeKind, Entry, Hash, ObjectChange, ObjectKind, FORMAT_VERSION,
};
use serde::{Deserialize, Serialize};

pub use projection::{
    BindingRecord, BindingView, CheckRequest, Decision, ObjectRecord, ObjectView, Projection,
    Verdict,
};
pub use tree::StoredCheckpoint;
pub use verify::{FailureKind, VerifyFailure, VerifyReport};

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// sled failed (IO error, a lock held by another process, corrupted pages).
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// The ledger fails verification; the service must not run on it.
    #[error("the ledger fails verification at {0}; open it read-only with --allow-corrupt to inspect it")]
    Corrupt(VerifyFailure),
    /// A write was attempted on a ledger opened with `allow_corrupt`.
    #[error("the ledger was opened read-only for forensics; it accepts no appends")]
    ReadOnly,
    /// A previous write failed after the projection had moved; reopen to recover.
    #[error("the ledger refused further writes after a failed write ({0}); reopen it")]
    Poisoned(String),
    /// An entry could not be encoded or a stored one decoded.
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
    /// The store was written by an unknown layout version.
    #[error("unknown store format {0} (this build reads {STORE_FORMAT})", STORE_FORMAT = keys::STORE_FORMAT)]
    StoreFormat(u16),
    /// A seq or time outside the log was asked for.
    #[error("{0}")]
    OutOfRange(String),
    /// A stored Merkle node is missing or unreadable, so a proof or root cannot be made.
    #[error("Merkle tree: {0}")]
    Tree(String),
    /// A checkpoint could not be signed, or a stored one does not parse.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] schemas::checkpoint::CheckpointError),
}

/// Tunables of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Write a snapshot of the projection every this many entries (0: never).
    pub snapshot_every: u64,
    /// Open a ledger that fails verification, read-only, with the projection up to the
    /// last verified entry.
    pub allow_corrupt: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            snapshot_every: 100_000,
            allow_corrupt: false,
        }
    }
}

/// The newest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Its seq (0 for an empty ledger).
    pub seq: u64,
    /// Its chain hash ([`Hash::ZERO`] for an empty ledger).
    pub hash: Hash,
    /// When it was observed.
    pub observed_at: Option<DateTime<Utc>>,
}

/// Why a change appended nothing without being a duplicate or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreReason {
    /// Nothing identity-relevant changed (status churn).
    Unchanged,
    /// A pod or PVC whose controller is not a Sandbox.
    NotSandboxOwned,
}

/// What one offered change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum AppendOutcome {
    /// Recorded as a new entry.
    Appended {
        /// Its seq.
        seq: u64,
        /// How many transitions it caused.
        transitions: usize,
    },
    /// This (uid, resourceVersion) is already recorded.
    Duplicate {
        /// The entry that recorded it.
        seq: u64,
    },
    /// Refused: older than what is recorded for this uid.
    Stale {
        /// The uid.
        uid: String,
        /// The resourceVersion offered.
        offered: String,
        /// The resourceVersion recorded.
        recorded: String,
    },
    /// Not recorded, by design.
    Ignored {
        /// Why.
        reason: IgnoreReason,
    },
}

/// Counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Entries appended.
    pub appended: u64,
    /// Duplicates offered.
    pub duplicates: u64,
    /// Stale changes refused.
    pub stale: u64,
    /// Changes ignored.
    pub ignored: u64,
}

/// An entry as stored, with its hash and exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The chain hash.
    pub hash: Hash,
    /// The exact stored bytes (what the hash covers).
    pub bytes: Vec<u8>,
    /// The decoded entry.
    pub entry: Entry,
}

/// The projection after `seq`, stored every `snapshot_every` entries.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) hash: Hash,
    pub(crate) projection: Projection,
}

/// An open ledger.
pub struct Ledger {
    db: sled::Db,
    tree: sled::Tree,
    projection: Projection,
    head: Head,
    frontier: CompactRange,
    durable_seq: u64,
    config: LedgerConfig,
    stats: Stats,
    poisoned: Option<String>,
    corruption: Option<VerifyFailure>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `path` and verifies the tail after the latest
    /// snapshot. Fails closed: a ledger whose tail does not verify is refused unless
    /// `config.allow_corrupt` is set.
    pub fn open(path: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let db = sled::Config::new().path(path).open()?;
        let tree = db.open_tree("ledger")?;
        match tree.get(keys::FORMAT)? {
            Some(version) => {
                let version =
                    u16::from_be_bytes(version.as_ref().try_into().unwrap_or([0xff, 0xff]));
                if version != keys::STORE_FORMAT {
                    return Err(LedgerError::StoreFormat(version));
                }
            }
            None if !config.allow_corrupt => {
                tree.insert(keys::FORMAT, &keys::STORE_FORMAT.to_be_bytes())?;
            }
            None => {}
        }
        let (head_seq, head_hash, malformed_head) = match read_head(&tree) {
            Ok((seq, hash)) => (seq, hash, None),
            // For forensics, walk as far as the entries verify and report the head itself.
            Err(LedgerError::Corrupt(failure)) if config.allow_corrupt => {
                (u64::MAX, Hash::ZERO, Some(failure))
            }
            Err(e) => return Err(e),
        };
        let (mut projection, start_seq, start_hash) = match latest_snapshot(&tree, head_seq)? {
            Some(snapshot) => (snapshot.projection, snapshot.seq, snapshot.hash),
            None => (Projection::default(), 0, Hash::ZERO),
        };
        let mut frontier = start_frontier(&tree, start_seq);
        let mut report = verify::walk(
            &tree,
            &mut projection,
            &mut frontier,
            start_seq,
            start_hash,
            (head_seq, head_hash),
        )?;
        if malformed_head.is_some() {
            report.failure = malformed_head;
        }
        if report.ok() {
            // The service must never extend a log that contradicts what it once signed.
            if let Some(latest) = tree::latest_checkpoint(&tree)? {
                report.failure = tree::check_consistent(&tree, &frontier, &latest.checkpoint).err();
            }
        }
        if let Some(failure) = report.failure.clone() {
            if !config.allow_corrupt {
                return Err(LedgerError::Corrupt(failure));
            }
            if projection.seq() != report.verified_seq {
                // The walk applied the entry that then failed (a transition or snapshot
                // mismatch): forensics must see the state up to the last verified entry.
                projection = replay_to(&tree, report.verified_seq)?;
            }
            if frontier.size() != report.verified_seq {
                frontier = start_frontier(&tree, report.verified_seq);
            }
        }
        let head = Head {
            seq: report.verified_seq,
            hash: report.verified_hash,
            observed_at: projection.at(),
        };
        Ok(Ledger {
            db,
            tree,
            projection,
            head,
            frontier,
            durable_seq: head.seq,
            config,
            stats: Stats::default(),
            poisoned: None,
            corruption: report.failure,
        })
    }

    /// The newest entry (for a ledger opened with `allow_corrupt`, the last verified one).
    pub fn head(&self) -> Head {
        self.head
    }

    /// The newest entry known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The current projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The verification failure found at open (only with `allow_corrupt`).
    pub fn corruption(&self) -> Option<&VerifyFailure> {
        self.corruption.as_ref()
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The binding rule at the head. `ready` is the freshness check (watchers synced).
    pub fn check(&self, request: &CheckRequest, ready: bool) -> Decision {
        self.projection.check(request, ready)
    }

    /// Offers changes, in order, and writes those that are new in one atomic batch.
    /// They are durable only after [`Ledger::flush`].
    pub fn append(
        &mut self,
        changes: impl IntoIterator<Item = ObjectChange>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        self.append_changes(changes.into_iter().map(Change::Object), now)
    }

    /// Like [`Ledger::append`] for any kind of record. Object changes are classified
    /// (duplicate, stale, ignored); other records (watch gaps) are always appended.
    pub fn append_changes(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        if let Some(reason) = &self.poisoned {
            return Err(LedgerError::Poisoned(reason.clone()));
        }
        if self.corruption.is_some() || self.config.allow_corrupt {
            return Err(LedgerError::ReadOnly);
        }
        let changes: Vec<Change> = changes.into_iter().collect();
        let start = self.head;
        let tree = self.tree.clone();
        let result = std::thread::scope(|scope| {
            // A large append is written in chunks by a second thread while this one derives
            // the next chunk: each chunk is one atomic sled batch carrying its own head
            // record, so whatever reaches the disk is a verified prefix of the log.
            let mut writer = None;
            let mut chunk_size = usize::MAX;
            if changes.len() > 2 * PIPELINE_CHUNK {
                let (sender, receiver) = std::sync::mpsc::sync_channel::<sled::Batch>(2);
                let tree = &tree;
                let handle = scope.spawn(move || -> Result<(), sled::Error> {
                    for batch in receiver {
                        tree.apply_batch(batch)?;
                    }
                    Ok(())
                });
                writer = Some((sender, handle));
                chunk_size = PIPELINE_CHUNK;
            }
            let outcome = self.derive_and_write(changes, now, chunk_size, |batch| match &writer {
                Some((sender, _)) => sender.send(batch).map_err(|_| {
                    LedgerError::Poisoned("the ledger's writer thread stopped".into())
                }),
                None => tree.apply_batch(batch).map_err(LedgerError::from),
            });
            let written = match writer {
                Some((sender, handle)) => {
                    drop(sender);
                    handle
                        .join()
                        .unwrap_or_else(|_| {
                            Err(sled::Error::ReportableBug(
                                "the ledger's writer thread panicked".into(),
                            ))
                        })
                        .map_err(LedgerError::from)
                }
                None => Ok(()),
            };
            outcome.and_then(|outcomes| written.map(|()| outcomes))
        });
        if let Err(e) = &result {
            if self.head.seq != start.seq || self.projection.seq() != start.seq {
                // The projection already holds changes the disk may not: refuse to go on
                // with a state the disk does not have.
                self.poisoned = Some(e.to_string());
            }
        }
        result
    }

    /// Classifies and derives each change, encodes and hashes its entry, and hands the
    /// sled batches (at most `chunk_size` entries each, each with the head record) to `write`.
    fn derive_and_write(
        &mut self,
        changes: Vec<Change>,
        now: DateTime<Utc>,
        chunk_size: usize,
        mut write: impl FnMut(sled::Batch) -> Result<(), LedgerError>,
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        let mut batch = sled::Batch::default();
        let mut in_chunk = 0usize;
        let mut outcomes = Vec::with_capacity(changes.len());
        // (uid, resourceVersion, removal, seq) appended in this call, maybe not yet in sled.
        let mut in_batch: Vec<(String, String, bool, u64)> = Vec::new();
        for mut change in changes {
            let classified = match &mut change {
                Change::Object(object) => self.classify(object, &in_batch)?,
                Change::WatchGap(_) | Change::CheckDenied(_) => None,
            };
            let outcome = match classified {
                Some(outcome) => outcome,
                None => {
                    let head = self.head;
                    let seq = head.seq + 1;
                    let observed_at = head.observed_at.map_or(now, |last| last.max(now));
                    let transitions = self.projection.apply_change(seq, observed_at, &change);
                    if let Change::Object(object) = &change {
                        in_batch.push((
                            object.uid.clone(),
                            object.resource_version.clone(),
                            object.change.is_removal(),
                            seq,
                        ));
                    }
                    let count = transitions.len();
                    let entry = Entry {
                        format_version: FORMAT_VERSION,
                        seq,
                        observed_at,
                        prev_hash: head.hash,
                        change,
                        transitions,
                    };
                    let bytes = entry.encode()?;
                    let hash = chain_hash(&head.hash, seq, &bytes);
                    let nodes = self.frontier.append(merkle::leaf_hash(&bytes));
                    batch.insert(
                        &keys::seq_key(keys::TREE, seq - 1),
                        tree::nodes_value(&nodes),
                    );
                    let mut value = Vec::with_capacity(32 + bytes.len());
                    value.extend_from_slice(&hash.0);
                    value.extend_from_slice(&bytes);
                    batch.insert(&keys::seq_key(keys::ENTRY, seq), value);
                    if self.config.snapshot_every > 0 && seq % self.config.snapshot_every == 0 {
                        let snapshot = Snapshot {
                            seq,
                            hash,
                            projection: self.projection.clone(),
                        };
                        // Positional encoding: snapshots are an internal cache, and field
                        // names would double their size.
                        let bytes = rmp_serde::to_vec(&snapshot)
                            .map_err(|e| schemas::SchemaError::Encode(e.to_string()))?;
                        batch.insert(&keys::seq_key(keys::SNAPSHOT, seq), bytes);
                    }
                    self.head = Head {
                        seq,
                        hash,
                        observed_at: Some(observed_at),
                    };
                    in_chunk += 1;
                    if in_chunk >= chunk_size {
                        batch.insert(keys::HEAD, &head_record(&self.head)[..]);
                        batch.insert(keys::FRONTIER, tree::frontier_value(&self.frontier));
                        write(std::mem::take(&mut batch))?;
                        in_chunk = 0;
                    }
                    AppendOutcome::Appended {
                        seq,
                        transitions: count,
                    }
                }
            };
            match &outcome {
                AppendOutcome::Appended { .. } => self.stats.appended += 1,
                AppendOutcome::Duplicate { .. } => self.stats.duplicates += 1,
                AppendOutcome::Stale { .. } => self.stats.stale += 1,
                AppendOutcome::Ignored { .. } => self.stats.ignored += 1,
            }
            outcomes.push(outcome);
        }
        if in_chunk > 0 {
            batch.insert(keys::HEAD, &head_record(&self.head)[..]);
            batch.insert(keys::FRONTIER, tree::frontier_value(&self.frontier));
            write(batch)?;
        }
        Ok(outcomes)
    }

    /// Makes everything appended so far durable and returns the durable head seq.
    pub fn flush(&mut self) -> Result<u64, LedgerError> {
        let target = self.head.seq;
        self.db.flush()?;
        self.durable_seq = target;
        Ok(target)
    }

    /// Decides whether a change is a duplicate, stale, ignored (`Some`) or to be
    /// appended (`None`, with its change kind set from what the ledger holds).
    fn classify(
        &self,
        change: &mut ObjectChange,
        in_batch: &[(String, String, bool, u64)],
    ) -> Result<Option<AppendOutcome>, LedgerError> {
        let removal = change.change.is_removal();
        let Some(record) = self.projection.object(&change.uid) else {
            let sandbox_owned = change.controller.as_ref().is_some_and(|c| c.is_sandbox());
            let needs_sandbox = matches!(
                change.kind,
                ObjectKind::Pod | ObjectKind::PersistentVolumeClaim
            );
            if needs_sandbox && !sandbox_owned {
                return Ok(Some(AppendOutcome::Ignored {
                    reason: IgnoreReason::NotSandboxOwned,
                }));
            }
            if !removal {
                change.change = ChangeKind::Created;
            }
            return Ok(None);
        };
        let recorded = &record.current.resource_version;
        match compare_versions(&change.resource_version, removal, recorded, record.gone) {
            Some(Ordering::Equal) => {
                return Ok(Some(AppendOutcome::Duplicate {
                    seq: record.last_seq,
                }))
            }
            Some(Ordering::Less) => {
                return Ok(Some(match self.find_recorded(change, in_batch)? {
                    Some(seq) => AppendOutcome::Duplicate { seq },
                    None => AppendOutcome::Stale {
                        uid: change.uid.clone(),
                        offered: change.resource_version.clone(),
                        recorded: recorded.clone(),
                    },
                }));
            }
            Some(Ordering::Greater) => {}
            None => {
                if let Some(seq) = self.find_recorded(change, in_batch)? {
                    return Ok(Some(AppendOutcome::Duplicate { seq }));
                }
            }
        }
        if removal && record.gone {
            return Ok(Some(AppendOutcome::Duplicate {
                seq: record.last_seq,
            }));
        }
        if !removal {
            if !record.gone && change.same_state_as(&record.current) {
                return Ok(Some(AppendOutcome::Ignored {
                    reason: IgnoreReason::Unchanged,
                }));
            }
            change.change = if record.gone {
                ChangeKind::Created
            } else {
                ChangeKind::Updated
            };
        }
        Ok(None)
    }

    /// The seq recording exactly this (uid, resourceVersion, removal), searching the
    /// current batch and then the uid's history. Only stale-looking changes get here.
    fn find_recorded(
        &self,
        change: &ObjectChange,
        in_batch: &[(String, String, bool, u64)],
    ) -> Result<Option<u64>, LedgerError> {
        let removal = change.change.is_removal();
        let same = |uid: &str, rv: &str, gone: bool| {
            uid == change.uid && rv == change.resource_version && gone == removal
        };
        if let Some((.., seq)) = in_batch.iter().find(|(u, rv, gone, _)| same(u, rv, *gone)) {
            return Ok(Some(*seq));
        }
        for item in self.history_of_uid(&change.uid)? {
            if let Some(recorded) = item.entry.object_change() {
                if same(
                    &recorded.uid,
                    &recorded.resource_version,
                    recorded.change.is_removal(),
                ) {
                    return Ok(Some(item.entry.seq));
                }
            }
        }
        Ok(None)
    }

    /// The stored entry at `seq`.
    pub fn entry(&self, seq: u64) -> Result<Option<StoredEntry>, LedgerError> {
        match self.tree.get(keys::seq_key(keys::ENTRY, seq))? {
            Some(value) => Ok(Some(decode_stored(&value)?)),
            None => Ok(None),
        }
    }

    /// Stored entries with `from <= seq <= to`, in order.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<StoredEntry, LedgerError>> + '_ {
        let from = from.max(1);
        // An inverted range is an empty one, not a panic in sled.
        let to = to.min(self.head.seq).max(from - 1);
        let range = keys::seq_key(keys::ENTRY, from)..keys::seq_key(keys::ENTRY, to + 1);
        self.tree.range(range).map(|item| decode_stored(&item?.1))
    }

    /// Every entry that recorded this uid, in order.
    pub fn history_of_uid(&self, uid: &str) -> Result<Vec<StoredEntry>, LedgerError> {
        self.read_seqs(self.projection.history_of(uid).iter().copied())
    }

    /// Every entry that recorded an object of this kind, namespace and name (any uid).
    pub fn history_of_name(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<StoredEntry>, LedgerError> {
        let mut seqs: Vec<u64> = self
            .projection
            .uids_of(kind, namespace, name)
            .iter()
            .flat_map(|uid| self.projection.history_of(uid).iter().copied())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        self.read_seqs(seqs.into_iter())
    }

    /// The stored entries at these seqs; seqs not yet written (the batch in flight) are skipped.
    fn read_seqs(&self, seqs: impl Iterator<Item = u64>) -> Result<Vec<StoredEntry>, LedgerError> {
        let mut out = Vec::new();
        for seq in seqs {
            if let Some(entry) = self.entry(seq)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The projection as of `seq` (after applying it), from the nearest snapshot.
    pub fn state_at_seq(&self, seq: u64) -> Result<Projection, LedgerError> {
        if seq > self.head.seq {
            return Err(LedgerError::OutOfRange(format!(
                "seq {seq} is beyond the head ({})",
                self.head.seq
            )));
        }
        if seq == self.head.seq {
            return Ok(self.projection.clone());
        }
        replay_to(&self.tree, seq)
    }

    /// The last seq observed at or before `time` (0 if none), by binary search.
    pub fn seq_at_time(&self, time: DateTime<Utc>) -> Result<u64, LedgerError> {
        let (mut low, mut high) = (0u64, self.head.seq);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let entry = self
                .entry(mid)?
                .ok_or_else(|| LedgerError::OutOfRange(format!("entry {mid} is missing")))?;
            if entry.entry.observed_at <= time {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(low)
    }

    /// Verifies the whole log from seq 1: chain, decoding, and replayed transitions.
    /// Also checks the Merkle nodes stored for every entry, the frontier stored with the
    /// head, and every signed checkpoint against the tree recomputed at its size.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let (head_seq, head_hash) = read_head(&self.tree)?;
        let mut frontier = CompactRange::new();
        let mut report = verify::walk(
            &self.tree,
            &mut Projection::default(),
            &mut frontier,
            0,
            Hash::ZERO,
            (head_seq, head_hash),
        )?;
        if report.ok() {
            for stored in self.checkpoints()? {
                if let Err(failure) =
                    tree::check_consistent(&self.tree, &frontier, &stored.checkpoint)
                {
                    report.failure = Some(failure);
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Verifies the chain alone, in parallel: every stored hash recomputed from the previous
    /// one, no gaps, the head. Much faster than [`Ledger::verify`], which also decodes every
    /// entry and re-derives its transitions; both name the first broken seq.
    pub fn verify_chain(&self) -> Result<VerifyReport, LedgerError> {
        let (head_seq, head_hash) = read_head(&self.tree)?;
        verify::walk_chain(&self.tree, 0, Hash::ZERO, (head_seq, head_hash))
    }

    /// Verifies the entries after a watermark `(seq, hash)` from an earlier report. The
    /// watermark's hash must match the stored one; replay starts from the nearest snapshot.
    pub fn verify_from(&self, seq: u64, hash: Hash) -> Result<VerifyReport, LedgerError> {
        let (head_seq, head_hash) = read_head(&self.tree)?;
        let stored = self
            .entry(seq)?
            .map(|e| e.hash)
            .or((seq == 0).then_some(Hash::ZERO));
        if stored != Some(hash) {
            return Ok(VerifyReport {
                from_seq: seq,
                verified_seq: seq.saturating_sub(1),
                verified_hash: Hash::ZERO,
                entries: 0,
                head_seq,
                failure: Some(VerifyFailure {
                    seq,
                    kind: FailureKind::HashMismatch,
                    detail: format!(
                        "the watermark hash {hash} is not the stored hash of entry {seq}"
                    ),
                }),
            });
        }
        let mut projection = self.state_at_seq(seq.min(self.head.seq))?;
        let mut frontier = start_frontier(&self.tree, seq);
        verify::walk(
            &self.tree,
            &mut projection,
            &mut frontier,
            seq,
            hash,
            (head_seq, head_hash),
        )
    }
}

/// Orders (resourceVersion, removed) pairs: integers as integers; `None` when either
/// version is not an integer (then arrival order decides).
fn compare_versions(
    offered: &str,
    offered_removal: bool,
    recorded: &str,
    recorded_gone: bool,
) -> Option<Ordering> {
    let offered: u64 = offered.parse().ok()?;
    let recorded: u64 = recorded.parse().ok()?;
    Some((offered, offered_removal).cmp(&(recorded, recorded_gone)))
}

/// The Merkle frontier after `seq` from stored nodes (empty if they are missing: the walk
/// from it then reports the first entry whose stored nodes disagree).
fn start_frontier(tree: &sled::Tree, seq: u64) -> CompactRange {
    CompactRange::from_reader(&tree::StoredNodes(tree), seq).unwrap_or_default()
}

/// Entries per sled batch when a large append is written by the second thread.
const PIPELINE_CHUNK: usize = 256;

fn head_record(head: &Head) -> [u8; 40] {
    let mut value = [0u8; 40];
    value[..8].copy_from_slice(&head.seq.to_be_bytes());
    value[8..].copy_from_slice(&head.hash.0);
    value
}

fn read_head(tree: &sled::Tree) -> Result<(u64, Hash), LedgerError> {
    match tree.get(keys::HEAD)? {
        None => Ok((0, Hash::ZERO)),
        Some(value) if value.len() == 40 => {
            let seq = keys::seq_of(&value[..8]).unwrap_or_default();
            Ok((seq, Hash::from_slice(&value[8..]).unwrap_or_default()))
        }
        Some(_) => Err(LedgerError::Corrupt(VerifyFailure {
            seq: 0,
            kind: FailureKind::HeadMismatch,
            detail: "the head record is malformed".into(),
        })),
    }
}

/// The newest snapshot at or before `max_seq` whose hash matches the stored entry; a
/// snapshot that does not decode or match is skipped (the walk then starts earlier).
fn latest_snapshot(tree: &sled::Tree, max_seq: u64) -> Result<Option<Snapshot>, LedgerError> {
    let range = keys::seq_key(keys::SNAPSHOT, 1)..=keys::seq_key(keys::SNAPSHOT, max_seq);
    for item in tree.range(range).rev() {
        let (key, value) = item?;
        let Ok(mut snapshot) = rmp_serde::from_slice::<Snapshot>(&value) else {
            continue;
        };
        snapshot.projection.rebuild_derived();
        if Some(snapshot.seq) != keys::seq_of(&key) || snapshot.projection.seq() != snapshot.seq {
            continue;
        }
        let stored = tree.get(keys::seq_key(keys::ENTRY, snapshot.seq))?;
        if stored.as_deref().and_then(Hash::from_slice) == Some(snapshot.hash) {
            return Ok(Some(snapshot));
        }
    }
    Ok(None)
}

/// The projection after `seq`, from the nearest usable snapshot, replaying without checks.
fn replay_to(tree: &sled::Tree, seq: u64) -> Result<Projection, LedgerError> {
    let mut projection = match latest_snapshot(tree, seq)? {
        Some(snapshot) => snapshot.projection,
        None => Projection::default(),
    };
    let from = keys::seq_key(keys::ENTRY, projection.seq() + 1);
    let to = keys::seq_key(keys::ENTRY, seq);
    if projection.seq() < seq {
        for item in tree.range(from..=to) {
            let stored = decode_stored(&item?.1)?;
            projection.apply_change(
                stored.entry.seq,
                stored.entry.observed_at,
                &stored.entry.change,
            );
        }
    }
    Ok(projection)
}

fn decode_stored(value: &[u8]) -> Result<StoredEntry, LedgerError> {
    let hash = Hash::from_slice(value).ok_or_else(|| {
        schemas::SchemaError::Undecodable("stored value shorter than a hash".into())
    })?;
    let bytes = value[32..].to_vec();
    let entry = Entry::decode(&bytes)?;
    Ok(StoredEntry { hash, bytes, entry })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use schemas::{normalize, WatchEventType};

    pub(crate) fn pod(n: u64) -> ObjectChange {
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{n}"), "namespace": "ns", "uid": format!("pod-{n}"),
                         "resourceVersion": n.to_string(),
                         "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                              "name": "s", "uid": "sb-1", "controller": true}]}});
        normalize(WatchEventType::Added, &object).unwrap().unwrap()
    }

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + second, 0).unwrap()
    }

    #[test]
    fn a_forged_snapshot_is_caught_by_full_verification() {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            snapshot_every: 4,
            allow_corrupt: false,
        };
        let mut ledger = Ledger::open(dir.path(), config).unwrap();
        ledger.append((1..=6).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        assert!(ledger.verify().unwrap().ok());

        let key = keys::seq_key(keys::SNAPSHOT, 4);
        let mut snapshot: Snapshot =
            rmp_serde::from_slice(&ledger.tree.get(key).unwrap().unwrap()).unwrap();
        snapshot.projection.apply(4, at(0), &pod(99));
        ledger
            .tree
            .insert(key, rmp_serde::to_vec_named(&snapshot).unwrap())
            .unwrap();

        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!(
            (failure.seq, failure.kind),
            (4, FailureKind::SnapshotMismatch)
        );
    }

    #[test]
    fn duplicates_stale_and_unchanged_append_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let mut newer = pod(1);
        newer.resource_version = "10".into();
        newer.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        let mut churn = newer.clone();
        churn.resource_version = "11".into();
        let outcomes = ledger
            .append([pod(1), newer, pod(1), churn], at(0))
            .unwrap();
        assert_eq!(
            outcomes[0],
            AppendOutcome::Appended {
                seq: 1,
                transitions: 0
            }
        );
        assert_eq!(
            outcomes[1],
            AppendOutcome::Appended {
                seq: 2,
                transitions: 0
            }
        );
        assert_eq!(outcomes[2], AppendOutcome::Duplicate { seq: 1 });
        assert_eq!(
            outcomes[3],
            AppendOutcome::Ignored {
                reason: IgnoreReason::Unchanged
            }
        );
        let mut stale = pod(1);
        stale.resource_version = "5".into();
        assert!(matches!(
            ledger.append([stale], at(1)).unwrap()[0],
            AppendOutcome::Stale { .. }
        ));
        assert_eq!(ledger.head().seq, 2);
        assert_eq!(ledger.stats().stale, 1);
    }

    fn ledger_of(n: u64) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        ledger.append((1..=n).map(pod), at).unwrap();
        (dir, ledger)
    }

    fn failure(report: VerifyReport) -> Option<(u64, FailureKind)> {
        report.failure.map(|f| (f.seq, f.kind))
    }

    #[test]
    fn chain_verification_agrees_with_full_verification() {
        let (_dir, ledger) = ledger_of(50);
        let chain = ledger.verify_chain().unwrap();
        assert!(chain.ok());
        assert_eq!((chain.entries, chain.verified_seq), (50, 50));
        assert_eq!(chain.verified_hash, ledger.head().hash);

        let mut value = ledger
            .tree
            .get(keys::seq_key(keys::ENTRY, 31))
            .unwrap()
            .unwrap()
            .to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        ledger
            .tree
            .insert(keys::seq_key(keys::ENTRY, 31), value)
            .unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((31, FailureKind::HashMismatch))
        );

        ledger.tree.remove(keys::seq_key(keys::ENTRY, 12)).unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((12, FailureKind::SeqGap))
        );
        assert_eq!(
            failure(ledger.verify().unwrap()),
            Some((12, FailureKind::SeqGap))
        );
    }

    #[test]
    fn chain_verification_sees_a_cut_tail_a_trailing_entry_and_a_changed_head() {
        let (_dir, ledger) = ledger_of(20);
        let last = ledger
            .tree
            .get(keys::seq_key(keys::ENTRY, 20))
            .unwrap()
            .unwrap();
        ledger
            .tree
            .insert(keys::seq_key(keys::ENTRY, 21), last.clone())
            .unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((21, FailureKind::TrailingEntry))
        );
        ledger.tree.remove(keys::seq_key(keys::ENTRY, 21)).unwrap();

        let mut head = ledger.tree.get(keys::HEAD).unwrap().unwrap().to_vec();
        head[39] ^= 1;
        ledger.tree.insert(keys::HEAD, head).unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((20, FailureKind::HeadMismatch))
        );

        ledger.tree.remove(keys::seq_key(keys::ENTRY, 20)).unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((20, FailureKind::SeqGap))
        );
    }

    #[test]
    fn a_large_append_is_written_in_chunks_that_each_leave_a_verified_prefix() {
        let (dir, mut ledger) = ledger_of(0);
        let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        let outcomes = ledger.append((1..=2_000).map(pod), at).unwrap();
        assert_eq!(outcomes.len(), 2_000);
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, AppendOutcome::Appended { .. })));
        assert_eq!(ledger.head().seq, 2_000);
        // Every chunk carried the head of its last entry; the final one is the real head.
        assert_eq!(
            read_head(&ledger.tree).unwrap(),
            (2_000, ledger.head().hash)
        );
        let report = ledger.verify().unwrap();
        assert!(report.ok(), "{:?}", report.failure);
        ledger.flush().unwrap();
        let projection = ledger.projection().clone();
        drop(ledger);
        let reopened = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(reopened.head().seq, 2_000);
        assert_eq!(reopened.projection(), &projection);
    }
}
