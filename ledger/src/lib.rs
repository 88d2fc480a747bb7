//! The claim-ledger log: a hash-chained, append-only log of observed changes kept in a
//! [`store::Store`] (sled by default), the projection that answers "is pod P bound to
//! sandbox S?", verification and replay.
//!
//! * [`Ledger::open`] opens a ledger directory ([`dir`]: a manifest, the store, and a
//!   high-water mark of the acknowledged head that catches a store rolled back or replaced
//!   behind the ledger's back); [`Ledger::open_store`] opens any store.
//! * [`Ledger::append`] classifies each change (new, duplicate, stale, unchanged), derives
//!   its transitions, and writes entries, Merkle nodes, head and any snapshot commitment in
//!   atomic store batches (one, or for a large append chunks of 128 entries, each with
//!   its own head record, chained and written by a second thread). [`Ledger::flush`]
//!   makes them durable (group commit): nothing appended is acknowledged durable before a
//!   flush that covers it, and the high-water mark follows it (written at every flush,
//!   synced at most once a second).
//! * [`Ledger`] is the writer's side; after every durable flush it publishes an immutable
//!   [`LedgerView`] that readers take without a lock ([`Ledger::reader`],
//!   [`SharedLedger`], which is also the one append-and-flush path of a service).
//! * Snapshots of the projection are encoded from a published view by a thread of their
//!   own, written apart from appends, and committed to by the next entry
//!   ([`Entry::snapshot`]). [`Ledger::open`] loads the latest committed one and verifies
//!   the tail after it; a ledger that fails, or whose latest committed snapshot is not the
//!   one its entry commits to, is refused unless opened with `allow_corrupt` (read-only,
//!   for forensics).
//! * [`LedgerView::verify`] walks everything; [`LedgerView::verify_from`] continues from a
//!   watermark.
//! * [`LedgerView::state_at_seq`], [`LedgerView::seq_at_time`],
//!   [`LedgerView::history_of_uid`] and [`LedgerView::history_of_name`] serve incident
//!   replay.
//! * The same entries are the leaves of an RFC 6962 Merkle tree, written in the same
//!   batches: [`LedgerView::inclusion_proof`], [`LedgerView::consistency_proof`] and signed
//!   checkpoints ([`Ledger::sign_checkpoint`]) let outsiders check the log without us.

mod chainer;
mod committer;
pub mod dir;
mod merkle_store;
mod migrate;
pub mod projection;
mod proofs;
mod reclaim;
mod shared;
pub mod store;
mod verify;

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use chrono::{DateTime, Utc};
use schemas::merkle::CompactRange;
use schemas::{
    chain_hash, Change, ChangeKind, Entry, Hash, ObjectChange, ObjectKind, Text, FORMAT_VERSION,
};
use serde::{Deserialize, Serialize};

use chainer::{Chainer, DerivedChunk, Unchained};
use dir::{Acknowledged, HighWater, LedgerId};
use store::{keys, Batch, Store, StoreError};

pub use migrate::{migrate, MigrateReport};
pub use projection::{
    BindingRecord, BindingView, CheckRequest, Decision, ObjectRecord, ObjectView, Projection,
    Verdict,
};
pub use proofs::StoredCheckpoint;
pub use shared::{Committed, SharedLedger};
pub use verify::{FailureKind, VerifyFailure, VerifyReport};

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed (IO error, a lock held by another process, damaged files).
    #[error("storage error: {0}")]
    Storage(#[source] StoreError),
    /// This replica was the writer of a shared ledger and is no longer: another writer
    /// appended since (its commit was fenced off and wrote nothing), or its session and
    /// the writer's lock ended. It must stop recording; a follower may take over.
    #[error("deposed: {0}")]
    Deposed(String),
    /// A migration's target already holds a ledger.
    #[error("{} already holds a ledger ({entries} entries): migrate only into a new, empty one", path.display())]
    TargetNotEmpty {
        /// The target given.
        path: PathBuf,
        /// How many entries it holds.
        entries: u64,
    },
    /// The path is not a ledger (absent, a file, or a directory without a manifest).
    #[error("no ledger at {}: {detail}", path.display())]
    NotALedger {
        /// The path given.
        path: PathBuf,
        /// What was found there, and where a ledger probably is.
        detail: String,
    },
    /// The ledger fails verification; the service must not run on it. (It can still be
    /// opened read-only for forensics: [`LedgerConfig::allow_corrupt`].)
    #[error("the ledger fails verification at {0}")]
    Corrupt(VerifyFailure),
    /// A write was attempted on a replica that follows another writer.
    #[error("this replica follows the writer of the shared log; it does not append")]
    Follower,
    /// An append was attempted on a ledger opened with `allow_corrupt` (for forensics)
    /// or for reading only ([`LedgerConfig::appends`] off).
    #[error(
        "the ledger was opened read-only (for forensics or for reading); it accepts no appends"
    )]
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
    /// A seq, tree size or leaf beyond what the ledger holds was asked for: a request for
    /// something that does not exist (yet), not damage.
    #[error("{0}")]
    OutOfRange(String),
    /// An entry inside the ledger's range (at or below its head) is not in the store: the
    /// store is damaged.
    #[error("entry {seq} is missing below the head: the store is damaged")]
    EntryMissing {
        /// The seq that should be stored.
        seq: u64,
    },
    /// A Merkle node that the store must hold for a proof or a past root is missing or
    /// too short: the store is damaged. (A node the store fails to read is `Storage`.)
    #[error("the Merkle node at level {level}, index {index} is missing: the store is damaged")]
    NodeMissing {
        /// The node's level (0: leaves).
        level: u32,
        /// The node's index within its level.
        index: u64,
    },
    /// There is nothing to sign: the ledger holds no entry, and the empty tree is not a
    /// log auditors can check anything against.
    #[error("the ledger is empty: there is no tree to sign")]
    Empty,
    /// A checkpoint was to be signed under another origin than this ledger's checkpoints
    /// carry: the origin is the log's identity, and a second one would start an unrelated
    /// log.
    #[error("this ledger's checkpoints are of origin {kept:?}; refusing to sign one of origin {requested:?}")]
    OriginMismatch {
        /// The origin of the checkpoints already kept.
        kept: String,
        /// The origin asked for.
        requested: String,
    },
    /// A checkpoint could not be signed, or a stored one does not parse.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] schemas::checkpoint::CheckpointError),
}

/// The storage engine's page cache of the default configuration (and of the binary
/// unless `--cache-mb` says otherwise): 256 MiB. The writer's working set is the log's
/// tail, and older entries (history, exports) are read back through the operating
/// system's file cache: measured on 1M entries (BENCHMARKS.md), sled's own default of
/// 1 GiB added 540 MB to an ingest's peak and 480 MB to an export's, and made neither
/// faster.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// How long a high-water mark recorded after a flush may wait to be synced to disk
/// ([`Ledger::flush`]).
pub const MARK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Tunables of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Write a snapshot of the projection every this many entries (0: never). Snapshots
    /// are written apart from appends, from the view published after a flush, and the
    /// next append commits to them ([`Entry::snapshot`]).
    pub snapshot_every: u64,
    /// How many of the snapshots the log commits to are kept: when a new one is written,
    /// committed ones older than the newest `snapshots_kept` are removed (0 keeps every
    /// one). Each is a full copy of the projection, so keeping them all grows the disk
    /// with the square of the log. Verification requires only the newest committed one.
    pub snapshots_kept: usize,
    /// Encode and write snapshots on a thread of their own (the default), so that neither
    /// appends nor readers wait for them; `false` does it inline at the flush that makes
    /// them due, in a deterministic order of store writes (crash tests).
    pub background_snapshots: bool,
    /// Open a ledger that fails verification, read-only, with the projection up to the
    /// last verified entry.
    pub allow_corrupt: bool,
    /// Create a ledger when the directory is absent or empty ([`Ledger::open`]); reading
    /// commands set this to `false` so that a mistyped path is an error, not a new ledger.
    pub create: bool,
    /// Run the snapshot thread at a lower scheduling priority (`nice` 10 on Linux), so
    /// that identity checks and appends preempt it (the default, for `serve`). A batch
    /// load with nothing to preempt for (`ingest`) turns it off: a snapshot starved of CPU
    /// there only ends later, and the process waits for it when it stops.
    pub low_priority_snapshots: bool,
    /// Whether this process appends (`ingest`, `serve`). Reading commands turn it off:
    /// appends are then refused, and nothing is prepared for them at open (such as
    /// checking a snapshot an earlier writer left, a full decode, which the process would
    /// then wait for on exit).
    pub appends: bool,
    /// The storage engine's page cache in bytes (its own default when `None`; the
    /// default configuration sets [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: Option<u64>,
    /// A file holding the PostgreSQL password, for a `postgres://` location whose URL,
    /// `PGPASSWORD` and `.pgpass` give none.
    pub password_file: Option<PathBuf>,
    /// For a shared (PostgreSQL) ledger: open as one of several replicas, the writer when
    /// the writer's lock is free and a follower ([`Ledger::follow`], [`Ledger::try_promote`])
    /// when another replica holds it, instead of failing.
    pub replica: bool,
    /// For a shared ledger: the writer's lease (how long its session may go quiet before
    /// another replica may take over); the store's default when `None`.
    pub lease: Option<std::time::Duration>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            snapshot_every: 100_000,
            snapshots_kept: 2,
            background_snapshots: true,
            allow_corrupt: false,
            create: true,
            low_priority_snapshots: true,
            appends: true,
            cache_bytes: Some(DEFAULT_CACHE_BYTES),
            password_file: None,
            replica: false,
            lease: None,
        }
    }
}

impl From<StoreError> for LedgerError {
    /// A store error; a commit fenced off by another writer is [`LedgerError::Deposed`].
    fn from(error: StoreError) -> LedgerError {
        match error {
            StoreError::Fenced(detail) => LedgerError::Deposed(detail),
            other => LedgerError::Storage(other),
        }
    }
}

impl LedgerError {
    /// Whether this error says the ledger's data is wrong (it fails verification, or the
    /// store's files are damaged), as opposed to a usage or environment problem.
    pub fn is_integrity_failure(&self) -> bool {
        match self {
            LedgerError::Corrupt(_)
            | LedgerError::EntryMissing { .. }
            | LedgerError::NodeMissing { .. } => true,
            LedgerError::Storage(e) => e.is_damage(),
            LedgerError::TargetNotEmpty { .. }
            | LedgerError::Deposed(_)
            | LedgerError::NotALedger { .. }
            | LedgerError::Follower
            | LedgerError::ReadOnly
            | LedgerError::Poisoned(_)
            | LedgerError::Schema(_)
            | LedgerError::StoreFormat(_)
            | LedgerError::OutOfRange(_)
            | LedgerError::Empty
            | LedgerError::OriginMismatch { .. }
            | LedgerError::Checkpoint(_) => false,
        }
    }
}

/// What the writer of a shared store publishes for its followers
/// ([`LedgerView::publish_writer_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStatus {
    /// Changes at every publish: a follower that sees it change knows the writer lives.
    pub beat: u64,
    /// Whether the writer's watchers are synced and healthy.
    pub ready: bool,
    /// Who the writer is (its host and process), for the followers to show; empty from a
    /// writer that predates it.
    #[serde(default)]
    pub identity: String,
    /// The writer's durable head seq when it published: how far a follower is behind.
    #[serde(default)]
    pub durable_seq: u64,
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

/// The projection after `seq`, stored every `snapshot_every` entries
/// ([`projection::layout`]). The entry at `seq` commits to its exact stored bytes
/// ([`Entry::snapshot`]), so the snapshot cannot name that entry's chain hash (which
/// covers the digest); the stored `E(seq)` record gives it.
pub(crate) use projection::layout::Snapshot;

/// The snapshot record of the projection after `seq` ([`projection::layout`]).
#[cfg(test)]
fn encode_snapshot(seq: u64, projection: &Projection) -> Result<Vec<u8>, LedgerError> {
    projection::layout::encode(seq, projection)
        .map_err(|e| LedgerError::Schema(schemas::SchemaError::Encode(e.to_string())))
}

/// A writer that passes bytes on and digests exactly those it passed.
struct Digesting<'a> {
    out: &'a mut dyn std::io::Write,
    digest: &'a mut blake3::Hasher,
    bytes: &'a mut u64,
}

impl std::io::Write for Digesting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.digest.update(&buf[..written]);
        *self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Lowers the calling thread's scheduling priority (`nice` 10, Linux only): a snapshot is
/// background work, and on a machine with few cores its encoder otherwise takes turns
/// with the identity checks and the writer (a check preempted for a whole time slice is a
/// 10 ms outlier). It still runs whenever a core is free, so on a busy machine a snapshot
/// only finishes later, and the tail an open replays is that much longer.
fn yield_to_checks_and_appends() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(SNAPSHOT_NICENESS) {
        tracing::debug!(error = %e, "cannot lower the snapshot thread's priority");
    }
}

/// How much lower than the writer's the snapshot thread's priority is.
#[cfg(target_os = "linux")]
const SNAPSHOT_NICENESS: i32 = 10;

/// What an open builds: the state at the head (every ledger a process serves or reads),
/// or nothing beyond the store and its head ([`Audit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenState {
    Replayed,
    Unreplayed,
}

/// A ledger opened to be verified from its first entry ([`Ledger::open_for_audit`]): its
/// store, identity and head, and no state (verification derives its own). It answers
/// nothing else: an identity check, a state or a history needs [`Ledger::open`].
pub struct Audit {
    ledger: Ledger,
}

impl Audit {
    /// The head record as stored (verification checks it against the entries).
    pub fn head(&self) -> Head {
        self.ledger.view.head
    }

    /// [`LedgerView::verify`]: the whole log from seq 1.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.ledger.view.verify()
    }

    /// [`LedgerView::verify_chain`]: the hash chain alone, on every core.
    pub fn verify_chain(&self) -> Result<VerifyReport, LedgerError> {
        self.ledger.view.verify_chain()
    }

    /// [`LedgerView::verify_from`]: the entries after a watermark of an earlier report.
    pub fn verify_from(&self, seq: u64, hash: Hash) -> Result<VerifyReport, LedgerError> {
        // This view holds no state: the watermark's is replayed from the nearest snapshot.
        let view = &self.ledger.view;
        view.verify_from_state(seq, hash, |seq| {
            replay_to(view.store.as_ref(), seq.min(view.head.seq))
        })
    }

    /// [`LedgerView::check_checkpoint`]: whether the store holds the tree a signed
    /// checkpoint names (its size and Merkle frontier as stored with the head).
    pub fn check_checkpoint(
        &self,
        checkpoint: &schemas::checkpoint::Checkpoint,
    ) -> Result<(), VerifyFailure> {
        self.ledger.view.check_checkpoint(checkpoint)
    }
}

/// What readers see of a ledger: the projection, head and Merkle frontier as of the last
/// durable flush, and the store to read entries, proofs and checkpoints from. Immutable
/// and cheap to clone (the projection's maps are persistent, shared with the writer's):
/// the writer publishes a new one after every flush ([`LedgerReader`]), so an identity
/// check, a history or an export never waits for an append, an fsync or a snapshot, and
/// never sees an entry that is not durable.
#[derive(Clone)]
pub struct LedgerView {
    store: Arc<dyn Store>,
    projection: Projection,
    head: Head,
    frontier: CompactRange,
    durable_seq: u64,
    stats: Stats,
    /// The mark last saved in the high-water file.
    acknowledged: Acknowledged,
    /// Why the store is not this ledger's (opened with `allow_corrupt` only).
    foreign: Option<VerifyFailure>,
    corruption: Option<VerifyFailure>,
    /// Whether the ledger this view was published by appends (see [`Ledger::is_writer`]).
    writer: bool,
    /// Why the ledger that published this view stopped (a failed write or flush, a log
    /// that no longer verifies): its projection may then hold entries the disk does not.
    stopped: Option<Arc<str>>,
}

impl std::fmt::Debug for LedgerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerView")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// A handle on the latest [`LedgerView`] a [`Ledger`] published: cheap to clone, and
/// [`LedgerReader::view`] never blocks (an atomic pointer load).
#[derive(Clone)]
pub struct LedgerReader {
    published: Arc<ArcSwap<LedgerView>>,
}

impl LedgerReader {
    /// The view as of the ledger's last durable flush.
    pub fn view(&self) -> Arc<LedgerView> {
        self.published.load_full()
    }
}

impl std::fmt::Debug for LedgerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerReader")
            .field("head", &self.published.load().head)
            .finish()
    }
}

/// An open ledger: the writer's side. Its own working view runs ahead of what it has
/// published by whatever it appended since the last flush; readers use
/// [`Ledger::reader`].
pub struct Ledger {
    view: LedgerView,
    high_water: Option<Arc<dyn HighWater>>,
    /// When the high-water mark was last synced, if a mark recorded since is not yet
    /// (see [`Ledger::flush`]).
    mark_unsynced_since: Option<std::time::Instant>,
    config: LedgerConfig,
    poisoned: Option<String>,
    published: Arc<ArcSwap<LedgerView>>,
    snapshots: Snapshots,
    /// Chains and writes the chunks of large appends (started on the first one).
    committer: committer::Committer,
}

/// The snapshot written (durably) and not yet committed to, shared between the snapshot
/// thread, which sets it, and the writer, whose next append commits to it.
type WrittenSnapshot = Arc<std::sync::Mutex<Option<(u64, Hash)>>>;

/// Snapshots off the append path: encoded one at a time, from a published view, and
/// written through [`Store::put_snapshot`] by a thread of their own while the writer goes
/// on appending (sled keeps them in files, so the writer's flushes never carry them); the
/// next append commits to the last one written.
#[derive(Default)]
struct Snapshots {
    /// The seq of the newest snapshot written or under way: the next one is due
    /// `snapshot_every` entries after it.
    last_seq: u64,
    /// The snapshot written (durably) and not yet committed to: its seq and digest.
    written: WrittenSnapshot,
    /// The task encoding and writing one, if any.
    task: Option<std::thread::JoinHandle<()>>,
    /// The head when the ledger was opened: uncommitted snapshots at or below it were
    /// left by an earlier process, and nothing will commit to them.
    opened_head: u64,
    /// Whether `task` is writing the snapshot at the head over one left there
    /// uncommitted: the first append waits for it, so that it is the one that commits to
    /// it.
    adopting: bool,
    /// Tests write snapshots in an older layout (1 or 2), as older builds did.
    #[cfg(test)]
    older_layout: Option<u8>,
}

impl Snapshots {
    /// Takes the snapshot written and not yet committed to.
    fn take_written(&self) -> Option<(u64, Hash)> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Puts back a snapshot no append committed to (the next one will), unless a newer
    /// one was written meanwhile.
    fn restore_written(&self, unused: (u64, Hash)) {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(unused);
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // A snapshot under way finishes first, so that a dropped ledger leaves its store
        // closed (and a reopen in this process finds it unlocked); the high-water mark is
        // synced, so that a ledger closed cleanly has its whole head acknowledged durably.
        if let Some(task) = self.snapshots.task.take() {
            let _ = task.join();
        }
        if let (Some(mark), Some(_)) = (&self.high_water, self.mark_unsynced_since) {
            let _ = mark.sync();
        }
    }
}

impl std::ops::Deref for Ledger {
    type Target = LedgerView;

    /// The writer's working view: everything appended, flushed or not.
    fn deref(&self) -> &LedgerView {
        &self.view
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("head", &self.view.head)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the ledger directory `path` ([`dir`]), creating it when absent or empty if
    /// `config.create` is set, and verifies the tail after the latest snapshot. Fails
    /// closed: a ledger whose tail does not verify, whose store is damaged, or whose store
    /// holds less than the acknowledged high-water mark (rolled back) is refused unless
    /// `config.allow_corrupt` is set. A path that is not a ledger is refused
    /// ([`LedgerError::NotALedger`]) and nothing is written there.
    ///
    /// A `postgres://` or `postgresql://` URL instead of a directory opens the ledger kept
    /// in that database ([`store::postgres`]); a writer (`config.create`) takes the
    /// database's writer lock.
    pub fn open(path: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, config, OpenState::Replayed)
    }

    /// Opens the ledger at `path` for [`Audit`]: the store, its identity and its head, as
    /// [`Ledger::open`] does, but no state is built (no snapshot is decoded, no tail
    /// walked). At a million objects that is seconds and a gigabyte a verification from
    /// the first entry does not use. Creates nothing and appends nothing
    /// (`config.create` and `config.appends` are ignored).
    pub fn open_for_audit(path: &Path, config: LedgerConfig) -> Result<Audit, LedgerError> {
        let config = LedgerConfig {
            create: false,
            appends: false,
            ..config
        };
        Ok(Audit {
            ledger: Ledger::open_with(path, config, OpenState::Unreplayed)?,
        })
    }

    fn open_with(
        path: &Path,
        config: LedgerConfig,
        state: OpenState,
    ) -> Result<Ledger, LedgerError> {
        if let Some(url) = path
            .to_str()
            .filter(|p| store::postgres::is_postgres_url(p))
        {
            return Ledger::open_postgres(url, config, state);
        }
        let manifest = match dir::inspect(path)? {
            dir::Found::Ledger(manifest) => manifest,
            dir::Found::Vacant if config.create && !config.allow_corrupt => {
                return Ledger::create(path, config)
            }
            dir::Found::Vacant => {
                return Err(LedgerError::NotALedger {
                    path: path.to_path_buf(),
                    detail: match path.exists() {
                        true => "the directory is empty".into(),
                        false => "no such directory".into(),
                    },
                })
            }
        };
        let id = manifest.id().ok_or_else(|| LedgerError::NotALedger {
            path: path.to_path_buf(),
            detail: "its manifest has no valid ledger id".into(),
        })?;
        let writable = !config.allow_corrupt;
        let high_water = dir::HighWaterFile::open(&path.join(dir::HIGH_WATER), id, writable)
            .map_err(LedgerError::Storage)?;
        let store = match store::SledStore::open(&path.join(dir::SLED_DIR), config.cache_bytes) {
            Ok(store) => store,
            Err(e) if e.is_damage() => {
                let acknowledged = match high_water.load() {
                    Ok(Some(mark)) => format!(
                        "; entry {} (hash {}) was acknowledged durable",
                        mark.seq, mark.hash
                    ),
                    _ => String::new(),
                };
                return Err(LedgerError::Corrupt(VerifyFailure {
                    seq: 0,
                    kind: FailureKind::StoreDamaged,
                    detail: format!("{e}; nothing could be read{acknowledged}"),
                }));
            }
            Err(e) => return Err(e.into()),
        };
        Ledger::open_store_with(
            Arc::new(store),
            Some(Arc::new(high_water)),
            Some(id),
            config,
            state,
        )
    }

    /// Opens the ledger in the PostgreSQL database `url`: the store's own `I` record is its
    /// identity (there is no directory, manifest or high-water mark: the database is the
    /// durable authority).
    fn open_postgres(
        url: &str,
        config: LedgerConfig,
        state: OpenState,
    ) -> Result<Ledger, LedgerError> {
        let writer = config.create && !config.allow_corrupt;
        let options = store::postgres::PostgresOptions {
            create: writer,
            writer,
            follow_if_locked: config.replica,
            lease: config.lease,
            password_file: config.password_file.clone(),
        };
        let not_a_ledger =
            |store: Option<&store::PostgresStore>, detail: &str| LedgerError::NotALedger {
                path: PathBuf::from(
                    store.map_or_else(|| url.to_string(), |s| s.label().to_string()),
                ),
                detail: detail.to_string(),
            };
        let Some(store) = store::PostgresStore::open(url, &options)? else {
            return Err(not_a_ledger(
                None,
                &format!("the database has no {} table", store::postgres::TABLE),
            ));
        };
        let id = match store.get(keys::LEDGER_ID)? {
            Some(id) => id.as_slice().try_into().ok(),
            None if store.record_count()? == 0 => {
                if !Store::is_writer(&store) {
                    return Err(not_a_ledger(Some(&store), "its ledger table is empty"));
                }
                let id = dir::new_id()?;
                let mut batch = Batch::default();
                batch.insert(keys::FORMAT, Store::store_format(&store).to_be_bytes());
                batch.insert(keys::LEDGER_ID, id);
                store.commit(batch)?;
                Some(id)
            }
            None => None,
        };
        let Some(id) = id else {
            return Err(LedgerError::Corrupt(VerifyFailure {
                seq: 0,
                kind: FailureKind::ForeignStore,
                detail: format!(
                    "{} holds ledger records but no valid ledger id",
                    store.label()
                ),
            }));
        };
        let is_writer = Store::is_writer(&store);
        let mut ledger = Ledger::open_store_with(Arc::new(store), None, Some(id), config, state)?;
        ledger.view.writer = is_writer;
        ledger.publish();
        Ok(ledger)
    }

    /// Creates a new ledger in `path` (absent, empty, or holding the remains of an
    /// interrupted creation): the store with its format and id records, the high-water
    /// mark, and last the manifest.
    fn create(path: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        dir::prepare(path)?;
        let id = dir::new_id()?;
        let store = store::SledStore::open(&path.join(dir::SLED_DIR), config.cache_bytes)?;
        let mut batch = Batch::default();
        batch.insert(keys::FORMAT, store.store_format().to_be_bytes());
        batch.insert(keys::LEDGER_ID, id);
        store.commit(batch)?;
        store.flush()?;
        let high_water = dir::HighWaterFile::create(&path.join(dir::HIGH_WATER), id)?;
        dir::write_manifest(
            path,
            &dir::Manifest {
                claim_ledger: "ledger".into(),
                layout: 1,
                ledger_id: dir::id_hex(&id),
                store: store.kind().into(),
                created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        )?;
        Ledger::open_store(
            Arc::new(store),
            Some(Arc::new(high_water)),
            Some(id),
            config,
        )
    }

    /// Opens the ledger kept in `store` and verifies the tail after the latest snapshot.
    /// `high_water`, when given, is the acknowledged head kept outside the store: a store
    /// holding less is refused as rolled back. `expected_id`, when given, must be the
    /// ledger id the store records. An empty store is initialised (unless opened with
    /// `allow_corrupt`).
    pub fn open_store(
        store: Arc<dyn Store>,
        high_water: Option<Arc<dyn HighWater>>,
        expected_id: Option<LedgerId>,
        config: LedgerConfig,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_store_with(store, high_water, expected_id, config, OpenState::Replayed)
    }

    fn open_store_with(
        store: Arc<dyn Store>,
        high_water: Option<Arc<dyn HighWater>>,
        expected_id: Option<LedgerId>,
        config: LedgerConfig,
        state: OpenState,
    ) -> Result<Ledger, LedgerError> {
        let opening = std::time::Instant::now();
        let integrity = |e: StoreError| match e.is_damage() {
            true => LedgerError::Corrupt(VerifyFailure {
                seq: 0,
                kind: FailureKind::StoreDamaged,
                detail: e.to_string(),
            }),
            false => LedgerError::Storage(e),
        };
        match store.get(keys::FORMAT).map_err(integrity)? {
            Some(version) => {
                let version =
                    u16::from_be_bytes(version.as_slice().try_into().unwrap_or([0xff, 0xff]));
                let upgrade = config.create && !config.allow_corrupt && store.is_writer();
                let readable = version == keys::STORE_FORMAT
                    || keys::STORE_FORMATS_READABLE.contains(&version);
                if !readable {
                    return Err(LedgerError::StoreFormat(version));
                }
                // A writer raises an older mark to what this store's layout needs (a packed
                // sled store 9, any other 8: an older binary reads those), never lowers one.
                let needed = store.store_format();
                if version < needed && upgrade {
                    let mut batch = Batch::default();
                    batch.insert(keys::FORMAT, needed.to_be_bytes());
                    store.commit(batch)?;
                }
            }
            None if !config.allow_corrupt && expected_id.is_none() => {
                let mut batch = Batch::default();
                batch.insert(keys::FORMAT, store.store_format().to_be_bytes());
                store.commit(batch)?;
            }
            None => {}
        }
        let acknowledged = match &high_water {
            Some(mark) => mark
                .load()
                .map_err(integrity)?
                .unwrap_or(Acknowledged::NOTHING),
            None => Acknowledged::NOTHING,
        };
        // A store that is not this ledger's is judged before any entry is looked at: only
        // a forensic open goes on from it (there is no verified prefix to salvage from an
        // emptied one).
        let mut foreign: Option<VerifyFailure> = None;
        if let Some(expected) = expected_id {
            let stored = store.get(keys::LEDGER_ID).map_err(integrity)?;
            if stored.as_deref() != Some(&expected[..]) {
                let emptied = store.scan(&[0u8], &[0xffu8; 9], false).next().is_none();
                foreign = Some(match (stored, emptied && acknowledged.seq > 0) {
                    (_, true) => rolled_back(acknowledged, 0, "the store is empty"),
                    (None, false) => VerifyFailure {
                        seq: 0,
                        kind: FailureKind::ForeignStore,
                        detail: format!(
                            "the store records no ledger id; this ledger is {}: the store was emptied or replaced",
                            dir::id_hex(&expected)
                        ),
                    },
                    (Some(found), false) => VerifyFailure {
                        seq: 0,
                        kind: FailureKind::ForeignStore,
                        detail: format!(
                            "the store belongs to ledger {} but this ledger is {}",
                            found.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                            dir::id_hex(&expected)
                        ),
                    },
                });
            }
        }
        if let Some(failure) = &foreign {
            if !config.allow_corrupt || failure.kind != FailureKind::ForeignStore {
                return Err(LedgerError::Corrupt(failure.clone()));
            }
        }
        let (head_seq, head_hash, early_failure) = match read_head(store.as_ref()) {
            Ok((seq, hash)) => (seq, hash, None),
            // For forensics, walk as far as the entries verify and report the head itself.
            Err(LedgerError::Corrupt(failure)) if config.allow_corrupt => {
                (u64::MAX, Hash::ZERO, Some(failure))
            }
            Err(LedgerError::Storage(e)) => return Err(integrity(e)),
            Err(e) => return Err(e),
        };
        // A snapshot the chain does not commit to is refused (fail closed), or, for
        // forensics, passed over: the walk from an older one then reports it.
        let trust = match config.allow_corrupt {
            false => SnapshotTrust::Refuse,
            true => SnapshotTrust::Skip,
        };
        let store_ref = store.as_ref();
        if state == OpenState::Unreplayed {
            // For an audit: what its verification reads, and nothing it would rebuild.
            let head = Head {
                seq: head_seq,
                hash: head_hash,
                observed_at: None,
            };
            let view = LedgerView {
                frontier: start_frontier(store_ref, head_seq),
                store,
                projection: Projection::default(),
                head,
                durable_seq: head_seq,
                stats: Stats::default(),
                acknowledged,
                foreign,
                corruption: early_failure,
                writer: false,
                stopped: None,
            };
            return Ok(Ledger {
                published: Arc::new(ArcSwap::from_pointee(view.clone())),
                view,
                high_water,
                mark_unsynced_since: None,
                config,
                poisoned: None,
                snapshots: Snapshots::default(),
                committer: committer::Committer::default(),
            });
        }
        let (mut projection, start_seq, start_hash) =
            match latest_snapshot(store_ref, head_seq, head_seq, trust).map_err(|e| match e {
                LedgerError::Storage(e) => integrity(e),
                other => other,
            })? {
                Some((snapshot, hash)) => (snapshot.projection, snapshot.seq, hash),
                None => (Projection::unanswered(), 0, Hash::ZERO),
            };
        let mut frontier = start_frontier(store_ref, start_seq);
        // A deleted snapshot is only a slower start: the tail walk tolerates it.
        let mut report = verify::walk(
            store_ref,
            &mut projection,
            &mut frontier,
            (start_seq, start_hash),
            (head_seq, head_hash),
            verify::MissingSnapshot::Tolerate,
            start_seq > 0,
            verify::WalkEnd::Head,
        )?;
        if early_failure.is_some() {
            report.failure = early_failure;
        }
        if report.ok() {
            report.failure = foreign.clone();
        }
        if report.ok() {
            report.failure = acknowledged_failure(store_ref, acknowledged, report.verified_seq);
        }
        if report.ok() {
            // The service must never extend a log that contradicts what it once signed.
            report.failure =
                proofs::verify_stored_checkpoints(store_ref, &frontier, u64::MAX, true)?;
        }
        if let Some(failure) = report.failure.clone() {
            if !config.allow_corrupt {
                return Err(LedgerError::Corrupt(failure));
            }
            if projection.seq() != report.verified_seq {
                // The walk applied the entry that then failed (a transition or snapshot
                // mismatch): forensics must see the state up to the last verified entry.
                projection = replay_to(store_ref, report.verified_seq)?;
            }
            if frontier.size() != report.verified_seq {
                frontier = start_frontier(store_ref, report.verified_seq);
            }
        }
        let head = Head {
            seq: report.verified_seq,
            hash: report.verified_hash,
            observed_at: projection.at(),
        };
        // Checks are answered from here on; the first append waits for the answers.
        projection.build_answers_in_background();
        let view = LedgerView {
            store,
            projection,
            head,
            frontier,
            durable_seq: head.seq,
            stats: Stats::default(),
            acknowledged,
            foreign,
            corruption: report.failure,
            writer: true,
            stopped: None,
        };
        let published = Arc::new(ArcSwap::from_pointee(view.clone()));
        let mut ledger = Ledger {
            view,
            high_water,
            mark_unsynced_since: None,
            config,
            poisoned: None,
            published,
            snapshots: Snapshots {
                last_seq: start_seq,
                opened_head: head.seq,
                ..Snapshots::default()
            },
            committer: committer::Committer::default(),
        };
        ledger.adopt_leftover_snapshot(start_seq);
        tracing::debug!(
            head = head.seq,
            snapshot = start_seq,
            ms = opening.elapsed().as_millis() as u64,
            "ledger opened"
        );
        Ok(ledger)
    }

    /// A handle on the views this ledger publishes after every durable flush: what the
    /// API, metrics and every other reader use while the writer goes on appending.
    pub fn reader(&self) -> LedgerReader {
        LedgerReader {
            published: Arc::clone(&self.published),
        }
    }

    /// Publishes the working view as the readers' view. Called only when the working view
    /// is durable (after a flush, a follow, at open) or when the ledger stops appending
    /// (poisoned: readers must see that it no longer writes).
    fn publish(&self) {
        let mut view = self.view.clone();
        view.writer = self.view.writer && self.poisoned.is_none();
        view.stopped = self.poisoned.as_deref().map(Arc::from);
        let previous = self.published.swap(Arc::new(view));
        // Readers still holding it free it when they let go; if none does, its projection
        // is freed off this thread (`reclaim`).
        if let Ok(previous) = Arc::try_unwrap(previous) {
            reclaim::later(previous.projection);
        }
    }

    /// Stops this ledger from writing, for `reason` (a writer that failed half-way).
    pub(crate) fn poison(&mut self, reason: &str) {
        if self.poisoned.is_none() {
            self.poisoned = Some(reason.to_string());
            self.publish();
        }
    }

    /// Whether this ledger appends: always for a store of its own; for a shared one, while
    /// this replica holds the writer's lock.
    pub fn is_writer(&self) -> bool {
        self.view.writer && self.poisoned.is_none() && self.view.store.is_writer()
    }

    /// Applies what the writer appended to a shared store since this replica's head,
    /// verifying every entry as `open` does (chain link and hash, canonical decoding,
    /// replayed transitions, stored Merkle nodes). Returns how many entries it applied. A
    /// log that does not verify, or that no longer extends what this replica applied (a
    /// rollback or a fork), is refused and the replica stops following (fail closed).
    pub fn follow(&mut self) -> Result<u64, LedgerError> {
        if let Some(reason) = &self.poisoned {
            return Err(LedgerError::Poisoned(reason.clone()));
        }
        let (head_seq, head_hash) = read_head(self.view.store.as_ref())?;
        let fail = |ledger: &mut Ledger, failure: VerifyFailure| {
            ledger.poisoned = Some(failure.to_string());
            ledger.publish();
            Err(LedgerError::Corrupt(failure))
        };
        if head_seq < self.view.head.seq {
            let failure = rolled_back(
                Acknowledged {
                    seq: self.view.head.seq,
                    hash: self.view.head.hash,
                },
                head_seq,
                "the shared log is shorter than what this replica applied",
            );
            return fail(self, failure);
        }
        if head_seq == self.view.head.seq {
            if head_hash != self.view.head.hash {
                let failure = VerifyFailure {
                    seq: head_seq,
                    kind: FailureKind::HeadMismatch,
                    detail: format!(
                        "the shared log's head {head_hash} is not the entry this replica applied at seq {head_seq} ({}): a fork",
                        self.view.head.hash
                    ),
                };
                return fail(self, failure);
            }
            return Ok(0);
        }
        // Walked on copies (cheap: persistent maps), kept only when the walk verified to
        // its end: a walk cut short by a store that went away must leave this replica's
        // state at its head, to be followed again, and one that met a bad entry must not
        // leave that entry for readers of the view published as it stops.
        let mut projection = self.view.projection.clone();
        let mut frontier = self.view.frontier.clone();
        let report = verify::walk(
            self.view.store.as_ref(),
            &mut projection,
            &mut frontier,
            (self.view.head.seq, self.view.head.hash),
            (head_seq, head_hash),
            verify::MissingSnapshot::Tolerate,
            false,
            verify::WalkEnd::Following,
        )?;
        if let Some(failure) = report.failure {
            return fail(self, failure);
        }
        self.view.projection = projection;
        self.view.frontier = frontier;
        self.view.head = Head {
            seq: report.verified_seq,
            hash: report.verified_hash,
            observed_at: self.view.projection.at(),
        };
        self.view.durable_seq = self.view.head.seq;
        self.publish();
        Ok(report.entries)
    }

    /// Becomes the writer of a shared store if its writer's lock is free, after applying
    /// everything the previous writer appended. Whether this ledger is now the writer.
    pub fn try_promote(&mut self) -> Result<bool, LedgerError> {
        if self.view.writer {
            return Ok(self.is_writer());
        }
        if !self.view.store.try_become_writer()? {
            return Ok(false);
        }
        self.follow()?;
        self.view.writer = true;
        self.publish();
        Ok(true)
    }
}

impl LedgerView {
    /// The writer's last published status, if any (a follower's view of the writer).
    pub fn writer_status(&self) -> Result<Option<WriterStatus>, LedgerError> {
        Ok(self
            .store
            .get(keys::WRITER)?
            .and_then(|value| serde_json::from_slice(&value).ok()))
    }

    /// The kind of store the ledger is kept in (`sled`, `postgres`, `memory`).
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Publishes, for the followers of a shared store, that this writer is alive and
    /// whether its watchers are ready (a `W` record beside the log, not in it); `beat`
    /// must change at every call, so followers can tell a live writer by their own clock.
    /// Nothing is written when this ledger is not the writer.
    pub fn publish_writer_status(
        &self,
        beat: u64,
        ready: bool,
        identity: &str,
    ) -> Result<(), LedgerError> {
        if !self.is_writer() {
            return Ok(());
        }
        let status = WriterStatus {
            beat,
            ready,
            identity: identity.to_string(),
            durable_seq: self.durable_seq,
        };
        let value = serde_json::to_vec(&status)
            .map_err(|e| LedgerError::Schema(schemas::SchemaError::Encode(e.to_string())))?;
        let mut batch = Batch::default();
        batch.insert(keys::WRITER, value);
        self.store.commit(batch)?;
        Ok(())
    }

    /// Whether the ledger that published this view appends (see [`Ledger::is_writer`]).
    pub fn is_writer(&self) -> bool {
        self.writer && self.store.is_writer()
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

    /// Why the ledger that published this view stopped writing or following, if it did.
    /// Such a view may hold entries that never became durable (or that a follower could
    /// not verify past), so it must not answer checks as fresh.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The binding rule at the head. `ready` is the freshness check (watchers synced).
    pub fn check(&self, request: &CheckRequest, ready: bool) -> Decision {
        self.projection.check(request, ready)
    }
}

impl Ledger {
    /// Appends `changes` and flushes them, the one append-and-flush path (the watcher, the
    /// API's denial records, `ingest`): when this returns `Ok`, every appended entry is
    /// durable and published to readers. A commit that appends nothing (every change a
    /// duplicate, stale or ignored: a restart's lists) onto a head already durable does
    /// not flush, as there is nothing to make durable; its counters are published.
    pub fn commit(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        now: DateTime<Utc>,
    ) -> Result<Committed, LedgerError> {
        let outcomes = self.append_changes(changes, now)?;
        let started = std::time::Instant::now();
        let nothing_new = self.poisoned.is_none() && self.view.head.seq == self.view.durable_seq;
        let (durable_seq, flush_time) = match nothing_new {
            true => {
                self.publish();
                (self.view.durable_seq, None)
            }
            false => (self.flush()?, Some(started.elapsed())),
        };
        Ok(Committed {
            outcomes,
            durable_seq,
            flush_time,
        })
    }

    /// Offers changes, in order, and writes those that are new in atomic batches (one, or
    /// chunks of a large append, each a verified prefix of the log).
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
        if self.view.corruption.is_some() || self.config.allow_corrupt || !self.config.appends {
            return Err(LedgerError::ReadOnly);
        }
        if !self.view.writer {
            return Err(LedgerError::Follower);
        }
        let changes: Vec<Change> = changes.into_iter().collect();
        let start = self.view.head;
        let store = Arc::clone(&self.view.store);
        let chainer = Chainer {
            seq: start.seq,
            hash: start.hash,
            observed_at: start.observed_at,
            frontier: self.view.frontier.clone(),
        };
        // A large append is chained and written in chunks by the committing thread while
        // this one derives the next chunk: each chunk is one atomic batch carrying its own
        // head record, so whatever reaches the disk is a verified prefix of the log.
        let (result, chained) = if changes.len() > 2 * PIPELINE_CHUNK && store.pipelines_commits() {
            let append = self.committer.begin(Arc::clone(&store), chainer)?;
            let derived = self.derive_and_write(changes, now, PIPELINE_CHUNK, |chunk| {
                append.send(chunk).map_err(|()| {
                    LedgerError::Poisoned("the ledger's committing thread stopped".into())
                })
            });
            let (written, chained) = append.finish();
            // The store's own error explains a chunk that could not be handed over.
            let result = match (derived, written.map_err(LedgerError::from)) {
                (Ok(derived), Ok(())) => Ok(derived),
                (Err(LedgerError::Poisoned(_)), Err(e)) | (Ok(_), Err(e)) => Err(e),
                (Err(e), _) => Err(e),
            };
            (result, chained)
        } else {
            let mut chainer = chainer;
            let derived = self.derive_and_write(changes, now, usize::MAX, |chunk| {
                chainer
                    .chain_and_commit(store.as_ref(), chunk)
                    .map_err(LedgerError::from)
            });
            (derived, Some(chainer))
        };
        // The head of what was chained (after a failure, more than the store may hold: the
        // ledger then stops, and says so to its readers).
        if let Some(chained) = chained {
            self.view.head = Head {
                seq: chained.seq,
                hash: chained.hash,
                observed_at: chained.observed_at,
            };
            self.view.frontier = chained.frontier;
        }
        if let Err(e) = &result {
            if self.view.head.seq != start.seq || self.view.projection.seq() != start.seq {
                // The projection already holds changes the disk may not: refuse to go on
                // with a state the disk does not have.
                self.poisoned = Some(e.to_string());
                self.publish();
            }
        }
        result
    }

    /// Classifies and derives each change and encodes its entry, and hands the chunks
    /// (at most `chunk_size` entries each) to `write`, which chains and stores them.
    fn derive_and_write(
        &mut self,
        changes: Vec<Change>,
        now: DateTime<Utc>,
        chunk_size: usize,
        mut write: impl FnMut(DerivedChunk) -> Result<(), LedgerError>,
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        let mut chunk = DerivedChunk::default();
        let mut outcomes = Vec::with_capacity(changes.len());
        // (uid, resourceVersion, removal, seq) appended in this call, maybe not yet stored.
        let mut in_batch: Vec<(Text, Text, bool, u64)> = Vec::new();
        if std::mem::take(&mut self.snapshots.adopting) {
            // Once after opening, and only when a snapshot was left at the head: otherwise
            // an append that starts first (an `ingest`) would never commit to it.
            if let Some(task) = self.snapshots.task.take() {
                let _ = task.join();
            }
        }
        // The seq and time of the last entry derived.
        let (mut last_seq, mut last_observed_at) = (self.view.head.seq, self.view.head.observed_at);
        // The first entry appended commits to the snapshot written since the last append.
        let mut commitment = self.snapshots.take_written();
        for mut change in changes {
            let classified = match &mut change {
                Change::Object(object) => self.classify(object, &in_batch)?,
                Change::WatchGap(_)
                | Change::CheckDenied(_)
                | Change::CheckDeniedOverflow(_)
                | Change::WatchScope(_) => None,
            };
            let outcome = match classified {
                Some(outcome) => outcome,
                None => {
                    let seq = last_seq + 1;
                    let observed_at = last_observed_at.map_or(now, |last| last.max(now));
                    let transitions = self.view.projection.apply_change(seq, observed_at, &change);
                    if let Change::Object(object) = &change {
                        in_batch.push((
                            object.uid.clone(),
                            object.resource_version.clone(),
                            object.change.is_removal(),
                            seq,
                        ));
                    }
                    let count = transitions.len();
                    let snapshot = commitment.take();
                    if let Some((snapshot_seq, _)) = snapshot {
                        chunk.records.insert(
                            keys::seq_key(keys::SNAPSHOT_COMMITMENT, snapshot_seq),
                            seq.to_be_bytes(),
                        );
                    }
                    // Encoded with a zero `prev_hash`, which the chainer fills in.
                    let entry = Entry {
                        format_version: FORMAT_VERSION,
                        seq,
                        observed_at,
                        prev_hash: Hash::ZERO,
                        change,
                        transitions,
                        snapshot: snapshot.map(|(_, digest)| digest),
                    };
                    // The stored value is the chain hash, then the entry's bytes: encoded
                    // in place after room for the hash.
                    let mut value = Vec::with_capacity(32 + schemas::entry::ENCODED_SIZE_HINT);
                    value.extend_from_slice(&[0; 32]);
                    let prev_hash_at = entry.encode_into_locating_prev_hash(&mut value)?;
                    chunk.entries.push(Unchained {
                        seq,
                        observed_at,
                        value,
                        prev_hash_at,
                    });
                    (last_seq, last_observed_at) = (seq, Some(observed_at));
                    if chunk.entries.len() >= chunk_size {
                        write(std::mem::take(&mut chunk))?;
                    }
                    AppendOutcome::Appended {
                        seq,
                        transitions: count,
                    }
                }
            };
            match &outcome {
                AppendOutcome::Appended { .. } => self.view.stats.appended += 1,
                AppendOutcome::Duplicate { .. } => self.view.stats.duplicates += 1,
                AppendOutcome::Stale { .. } => self.view.stats.stale += 1,
                AppendOutcome::Ignored { .. } => self.view.stats.ignored += 1,
            }
            outcomes.push(outcome);
        }
        if let Some(unused) = commitment {
            // Nothing was appended: the next append commits to it.
            self.snapshots.restore_written(unused);
        }
        if !chunk.entries.is_empty() {
            write(chunk)?;
        }
        Ok(outcomes)
    }

    /// Makes everything appended so far durable and returns the durable head seq; records
    /// the durable head as the acknowledged high-water mark. A failed flush leaves what is
    /// durable unknown: the ledger then refuses further writes.
    ///
    /// The mark is written after every flush, once the store holds everything it names,
    /// so it never runs ahead of the store and survives the process at once; it is synced
    /// to disk at most once every [`MARK_SYNC_INTERVAL`] (and when the ledger is dropped),
    /// so that a single-entry append waits for one fsync, not two. After a power loss the
    /// mark may therefore name an older head than the store holds: rollback detection then
    /// covers all but that last interval.
    pub fn flush(&mut self) -> Result<u64, LedgerError> {
        if let Some(reason) = &self.poisoned {
            return Err(LedgerError::Poisoned(reason.clone()));
        }
        let target = self.view.head;
        let result = self
            .store
            .flush()
            .map_err(LedgerError::from)
            .and_then(|()| self.record_mark(target));
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
            self.publish();
        }
        result?;
        self.view.durable_seq = target.seq;
        self.publish();
        self.request_snapshot();
        Ok(target.seq)
    }

    /// Records `durable` (just made durable in the store) as the high-water mark, and syncs
    /// the mark when the last sync is [`MARK_SYNC_INTERVAL`] old.
    fn record_mark(&mut self, durable: Head) -> Result<(), LedgerError> {
        let Some(mark) = &self.high_water else {
            return Ok(());
        };
        if durable.seq != self.view.acknowledged.seq {
            let acknowledged = Acknowledged {
                seq: durable.seq,
                hash: durable.hash,
            };
            mark.record(acknowledged)?;
            self.view.acknowledged = acknowledged;
            self.mark_unsynced_since
                .get_or_insert_with(std::time::Instant::now);
        }
        if self
            .mark_unsynced_since
            .is_some_and(|since| since.elapsed() >= MARK_SYNC_INTERVAL)
        {
            mark.sync()?;
            self.mark_unsynced_since = None;
        }
        Ok(())
    }

    /// Starts writing a snapshot of the view just published when one is due (every
    /// `snapshot_every` entries, one at a time): encoded and written through the store on
    /// its own thread, or inline when `background_snapshots` is off. The next append after
    /// it is written commits to it. A failure is logged: a snapshot is a cache, and
    /// without it the next open replays a longer tail.
    fn request_snapshot(&mut self) {
        let every = self.config.snapshot_every;
        let seq = self.view.durable_seq;
        let running = self
            .snapshots
            .task
            .as_ref()
            .is_some_and(|t| !t.is_finished());
        if every == 0
            || running
            || seq < self.snapshots.last_seq.saturating_add(every)
            || !self.is_writer()
            || self.view.corruption.is_some()
            || self.config.allow_corrupt
        {
            return;
        }
        if let Some(task) = self.snapshots.task.take() {
            let _ = task.join();
        }
        self.snapshots.last_seq = seq;
        let view = self.published.load_full();
        let job = self.snapshot_job(
            view.head.seq,
            view.projection.clone(),
            self.config.low_priority_snapshots,
        );
        self.run_snapshot_task(job);
    }

    /// The snapshot thread's work: encode `projection` (the state after `seq`), store it as
    /// the snapshot at `seq` (replacing any left there), and hand its digest to the next
    /// append, which commits to it; then prune. `background` lowers the thread's priority
    /// (`yield_to_checks_and_appends`), for snapshots nothing waits for.
    fn snapshot_job(
        &self,
        seq: u64,
        projection: Projection,
        background: bool,
    ) -> impl FnOnce() + Send + 'static {
        let store = Arc::clone(&self.view.store);
        let written = Arc::clone(&self.snapshots.written);
        let (kept, opened_head) = (self.config.snapshots_kept, self.snapshots.opened_head);
        #[cfg(test)]
        let older_layout = self.snapshots.older_layout;
        move || {
            if background {
                yield_to_checks_and_appends();
            }
            let started = std::time::Instant::now();
            // Streamed to the store through the digest the next append commits to: the
            // bytes are never held whole (195 MB at 800k objects, and first touching that
            // much fresh memory was a third of the encode).
            let mut digest = blake3::Hasher::new_derive_key(schemas::entry::SNAPSHOT_CONTEXT);
            let mut bytes = 0u64;
            let stored = store
                .put_snapshot_streamed(seq, &mut |out| {
                    let digesting = Digesting {
                        out,
                        digest: &mut digest,
                        bytes: &mut bytes,
                    };
                    use std::io::Write as _;
                    let mut buffered = std::io::BufWriter::with_capacity(1 << 18, digesting);
                    #[cfg(test)]
                    if let Some(layout) = older_layout {
                        let bytes = match layout {
                            1 => projection::layout::encode_layout_one(seq, &projection),
                            _ => projection::layout::encode_layout_two(seq, &projection)
                                .map_err(std::io::Error::other)?,
                        };
                        return buffered.write_all(&bytes).and_then(|()| buffered.flush());
                    }
                    projection::layout::encode_into(&mut buffered, seq, &projection)
                        .map_err(std::io::Error::other)
                        .and_then(|()| buffered.flush())
                })
                .map_err(LedgerError::from);
            match stored {
                Ok(()) => {
                    let digest = Hash(*digest.finalize().as_bytes());
                    tracing::debug!(
                        seq,
                        bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot written"
                    );
                    *written
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((seq, digest));
                }
                Err(e) => tracing::warn!(seq, error = %e, "cannot write a snapshot"),
            }
            if let Err(e) = prune_snapshots(store.as_ref(), kept, seq, opened_head) {
                tracing::warn!(error = %e, "cannot remove old snapshots");
            }
        }
    }

    /// Waits until the snapshot being written, if any, is stored (benches measure memory
    /// once it is: its encoder holds a table of the strings it wrote until then).
    pub fn wait_for_snapshot(&mut self) {
        if let Some(task) = self.snapshots.task.take() {
            let _ = task.join();
        }
    }

    /// Runs `job` on the snapshot thread, or inline when `background_snapshots` is off.
    fn run_snapshot_task(&mut self, job: impl FnOnce() + Send + 'static) {
        if !self.config.background_snapshots {
            job();
            return;
        }
        match std::thread::Builder::new()
            .name("claim-ledger-snapshot".into())
            .spawn(job)
        {
            Ok(task) => self.snapshots.task = Some(task),
            Err(e) => tracing::warn!(error = %e, "cannot start the snapshot thread"),
        }
    }

    /// Takes over the snapshot an earlier process wrote last, when no entry commits to it
    /// yet: it was written at the head this ledger opened at (nothing was appended after
    /// it: a quiet cluster, a restart), or below it, when the earlier writer appended past
    /// it and stopped before an append could commit to it. A writer commits only to
    /// snapshots it wrote, so the snapshot thread writes the state at the head (the one
    /// this writer derived and published) as the snapshot there: over the bytes left,
    /// unread, when they are at the head; below it, the bytes left are never used and are
    /// removed once the new one is written. The next append commits to it. Without this,
    /// a ledger whose process stops right after a snapshot never uses one: every restart
    /// replays from the previous committed snapshot (or from the first entry). (Checking
    /// the bytes left instead, by decoding them and comparing, held a second copy of the
    /// projection at every restart; rewriting one below the head from the state at its seq
    /// made the open's walk keep that state, and copy every part of the projection an
    /// entry after it changed: 126 MB more and a third slower over a 233k-entry tail.)
    fn adopt_leftover_snapshot(&mut self, start_seq: u64) {
        let head = self.view.head.seq;
        if self.config.snapshot_every == 0
            || self.config.allow_corrupt
            || !self.config.appends
            || self.view.corruption.is_some()
            || !self.is_writer()
            || head <= start_seq
        {
            return;
        }
        let leftover = match leftover_snapshot(self.view.store.as_ref(), start_seq, head) {
            Ok(Some(seq)) => seq,
            Ok(None) | Err(_) => return,
        };
        let state = self.published.load_full().projection.clone();
        // The next snapshot is due `snapshot_every` entries after this one. Over one left
        // at the head, the first append waits for it, so that it is the one that commits
        // to it (a process that appends once and stops, an `ingest`, would otherwise leave
        // it uncommitted again); for one below it, appends go on and the first one after
        // it is written commits to it (hundreds of megabytes must not hold back a
        // restarted watcher).
        self.snapshots.last_seq = head;
        self.snapshots.adopting = leftover == head;
        let job = self.snapshot_job(head, state, false);
        self.run_snapshot_task(job);
    }

    /// Decides whether a change is a duplicate, stale, ignored (`Some`) or to be
    /// appended (`None`, with its change kind set from what the ledger holds).
    fn classify(
        &self,
        change: &mut ObjectChange,
        in_batch: &[(Text, Text, bool, u64)],
    ) -> Result<Option<AppendOutcome>, LedgerError> {
        let removal = change.change.is_removal();
        let Some(record) = self.view.projection.object(&change.uid) else {
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
        match compare_versions(&change.resource_version, removal, recorded, record.gone()) {
            Some(Ordering::Equal) => {
                return Ok(Some(AppendOutcome::Duplicate {
                    seq: record.last_seq,
                }))
            }
            Some(Ordering::Less) => {
                return Ok(Some(match self.find_recorded(change, in_batch)? {
                    Some(seq) => AppendOutcome::Duplicate { seq },
                    None => AppendOutcome::Stale {
                        uid: change.uid.to_string(),
                        offered: change.resource_version.to_string(),
                        recorded: recorded.to_string(),
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
        if removal && record.gone() {
            return Ok(Some(AppendOutcome::Duplicate {
                seq: record.last_seq,
            }));
        }
        if !removal {
            if !record.gone() && change.same_state_as(&record.current) {
                return Ok(Some(AppendOutcome::Ignored {
                    reason: IgnoreReason::Unchanged,
                }));
            }
            change.change = if record.gone() {
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
        in_batch: &[(Text, Text, bool, u64)],
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
}

impl LedgerView {
    /// The stored entry at `seq` (`None` past this view's head: the store may already
    /// hold entries the writer has not flushed).
    pub fn entry(&self, seq: u64) -> Result<Option<StoredEntry>, LedgerError> {
        if seq > self.head.seq {
            return Ok(None);
        }
        read_entry(self.store.as_ref(), seq)
    }

    /// Stored entries with `from <= seq <= to`, in order.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<StoredEntry, LedgerError>> + '_ {
        let from = from.max(1);
        let to = to.min(self.head.seq);
        self.store
            .scan(
                &keys::seq_key(keys::ENTRY, from),
                &keys::seq_key(keys::ENTRY, to),
                false,
            )
            .map(|item| decode_stored(&item?.1))
    }

    /// Every entry that recorded this uid, in order.
    pub fn history_of_uid(&self, uid: &str) -> Result<Vec<StoredEntry>, LedgerError> {
        self.read_seqs(self.projection.history_of(uid))
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
            .flat_map(|uid| self.projection.history_of(uid))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        self.read_seqs(seqs.into_iter())
    }

    /// The stored entries at these seqs; seqs not yet written (the batch in flight) are skipped.
    fn read_seqs(&self, seqs: impl Iterator<Item = u64>) -> Result<Vec<StoredEntry>, LedgerError> {
        self.entries_at(&seqs.collect::<Vec<_>>())
    }

    /// The stored entries at `seqs`, in their order, skipping those past this view's head
    /// or not stored (as [`LedgerView::entry`] answers `None`). Read together: a history's
    /// entries are scattered through the log, and in a database each read is a round trip.
    pub fn entries_at(&self, seqs: &[u64]) -> Result<Vec<StoredEntry>, LedgerError> {
        let keys: Vec<Vec<u8>> = seqs
            .iter()
            .filter(|&&seq| seq <= self.head.seq)
            .map(|&seq| keys::seq_key(keys::ENTRY, seq).to_vec())
            .collect();
        let mut entries = Vec::with_capacity(keys.len());
        for value in self.store.get_many(&keys)?.into_iter().flatten() {
            entries.push(decode_stored(&value)?);
        }
        Ok(entries)
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
        replay_to(self.store.as_ref(), seq)
    }

    /// The last seq observed at or before `time` (0 if none), by binary search.
    pub fn seq_at_time(&self, time: DateTime<Utc>) -> Result<u64, LedgerError> {
        let (mut low, mut high) = (0u64, self.head.seq);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let entry = self
                .entry(mid)?
                .ok_or(LedgerError::EntryMissing { seq: mid })?;
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
        let (head_seq, head_hash) = read_head(self.store.as_ref())?;
        let mut frontier = CompactRange::new();
        let mut replayed = Projection::unanswered();
        let walked = verify::walk(
            self.store.as_ref(),
            &mut replayed,
            &mut frontier,
            (0, Hash::ZERO),
            (head_seq, head_hash),
            verify::MissingSnapshot::Report,
            false,
            verify::WalkEnd::Head,
        );
        // The whole state at the head: freeing it here took 0.7 s of a 1.79M-entry
        // ledger's verify, and a command exits before it would matter.
        reclaim::later(replayed);
        let mut report = walked?;
        self.check_store_identity(&mut report);
        if report.ok() {
            // Every stored checkpoint, past this view's head too: one past the log's end
            // is a truncation or rollback behind what was signed.
            report.failure =
                proofs::verify_stored_checkpoints(self.store.as_ref(), &frontier, u64::MAX, false)?;
        }
        Ok(report)
    }

    /// Verifies the chain alone, in parallel: every stored hash recomputed from the previous
    /// one, no gaps, the head. Much faster than [`LedgerView::verify`], which also decodes every
    /// entry and re-derives its transitions; both name the first broken seq.
    pub fn verify_chain(&self) -> Result<VerifyReport, LedgerError> {
        let (head_seq, head_hash) = read_head(self.store.as_ref())?;
        let mut report =
            verify::walk_chain(self.store.as_ref(), 0, Hash::ZERO, (head_seq, head_hash))?;
        self.check_store_identity(&mut report);
        Ok(report)
    }

    /// Adds to a report whose walk passed what the walk cannot see: a store that is not
    /// this ledger's, or that holds less than (or other than) the acknowledged head.
    fn check_store_identity(&self, report: &mut VerifyReport) {
        if report.ok() {
            report.failure = self.foreign.clone().or_else(|| {
                acknowledged_failure(self.store.as_ref(), self.acknowledged, report.verified_seq)
            });
        }
    }

    /// Verifies the entries after a watermark `(seq, hash)` from an earlier report. The
    /// watermark's hash must match the stored one; replay starts from the nearest snapshot.
    pub fn verify_from(&self, seq: u64, hash: Hash) -> Result<VerifyReport, LedgerError> {
        self.verify_from_state(seq, hash, |seq| self.state_at_seq(seq.min(self.head.seq)))
    }

    /// [`LedgerView::verify_from`], the state at the watermark from `state_at`.
    fn verify_from_state(
        &self,
        seq: u64,
        hash: Hash,
        state_at: impl FnOnce(u64) -> Result<Projection, LedgerError>,
    ) -> Result<VerifyReport, LedgerError> {
        let (head_seq, head_hash) = read_head(self.store.as_ref())?;
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
        let mut projection = state_at(seq)?;
        let mut frontier = start_frontier(self.store.as_ref(), seq);
        let walked = verify::walk(
            self.store.as_ref(),
            &mut projection,
            &mut frontier,
            (seq, hash),
            (head_seq, head_hash),
            verify::MissingSnapshot::Report,
            false,
            verify::WalkEnd::Head,
        );
        reclaim::later(projection);
        let mut report = walked?;
        self.check_store_identity(&mut report);
        Ok(report)
    }
}

/// Orders (resourceVersion, removed) pairs as DOMAIN.md §6 says: when both versions are
/// integers they compare as integers, of any size and sign (an optional `+` or `-`, then
/// ASCII digits: `"-5"` is older than `"10"`, `"11"` older than 10^30, `"007"` equals
/// `"7"`), and at the same version a removal comes after a live observation. `None` when
/// either version is not an integer: then arrival order decides (the caller takes the
/// offered change as the newer one unless that exact (uid, resourceVersion, removal) is
/// already recorded).
fn compare_versions(
    offered: &str,
    offered_removal: bool,
    recorded: &str,
    recorded_gone: bool,
) -> Option<Ordering> {
    /// `(negative, magnitude without leading zeros)`; `-0` is `0`.
    fn integer(text: &str) -> Option<(bool, &str)> {
        let (negative, digits) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let magnitude = digits.trim_start_matches('0');
        Some((negative && !magnitude.is_empty(), magnitude))
    }
    fn magnitude_cmp(a: &str, b: &str) -> Ordering {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
    let (offered_negative, offered) = integer(offered)?;
    let (recorded_negative, recorded) = integer(recorded)?;
    let by_value = match (offered_negative, recorded_negative) {
        (false, false) => magnitude_cmp(offered, recorded),
        (true, true) => magnitude_cmp(recorded, offered),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    };
    Some(by_value.then(offered_removal.cmp(&recorded_gone)))
}

/// The Merkle frontier after `seq` from stored nodes (empty if they are missing: the walk
/// from it then reports the first entry whose stored nodes disagree).
fn start_frontier(store: &dyn Store, seq: u64) -> CompactRange {
    CompactRange::from_reader(&merkle_store::StoredNodes(store), seq).unwrap_or_default()
}

/// Entries per store batch when a large append is written by the second thread.
const PIPELINE_CHUNK: usize = 128;

fn read_head(store: &dyn Store) -> Result<(u64, Hash), LedgerError> {
    match store.get(keys::HEAD)? {
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

/// What [`latest_snapshot`] does with a snapshot its (intact) entry does not commit to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotTrust {
    /// Refuse the ledger: `Corrupt` with `SnapshotMismatch` at the snapshot's seq (a strict
    /// open: the store was edited behind the ledger's back).
    Refuse,
    /// Pass over it to an older snapshot (forensic opens, and replay on an open ledger).
    Skip,
}

/// Whether the snapshot stored at `seq` may be used, judged against the chain.
enum Anchor {
    /// The entry that commits to it is intact and commits to exactly these snapshot
    /// bytes, which decode to the projection after `seq`; with the stored chain hash of
    /// the entry at `seq` (where the walk from the snapshot starts).
    Usable(Box<Snapshot>, Hash),
    /// The entry at `seq` or the committing one is missing or itself broken (it does not
    /// decode, or its bytes do not hash to its stored chain hash or Merkle leaf), or lies
    /// past the head: the snapshot cannot be judged, and a walk from an older start
    /// reports the entry.
    Unverifiable,
    /// No entry commits to it: a snapshot written just before a crash (the commitment
    /// rides on the next append), or one put there behind the ledger's back. Never used.
    Uncommitted,
    /// The committing entry is intact but commits to other bytes (or to none), or the
    /// committed bytes do not decode to the projection at `seq`.
    Tampered(VerifyFailure),
}

/// The entry at `seq` if it is stored, decodes, and hashes to its stored chain hash.
fn intact_entry(store: &dyn Store, seq: u64) -> Result<Option<StoredEntry>, LedgerError> {
    let Some(stored) = store.get(&keys::seq_key(keys::ENTRY, seq))? else {
        return Ok(None);
    };
    let Ok(stored) = decode_stored(&stored) else {
        return Ok(None);
    };
    let entry = &stored.entry;
    let intact =
        entry.seq == seq && chain_hash(&entry.prev_hash, seq, &stored.bytes) == stored.hash;
    Ok(intact.then_some(stored))
}

/// The seq of the entry that commits to the snapshot after `seq`: the one its `P` record
/// names, or (a snapshot written inside its entry's batch, before `P` records existed) the
/// entry at `seq` itself. `None` when the `P` record is malformed.
fn committing_seq(store: &dyn Store, seq: u64) -> Result<Option<u64>, LedgerError> {
    Ok(
        match store.get(&keys::seq_key(keys::SNAPSHOT_COMMITMENT, seq))? {
            None => Some(seq),
            Some(value) => keys::seq_of(&value).filter(|_| value.len() == 8),
        },
    )
}

/// Whether a `P` record names the entry at `seq` as the one committing to an older
/// snapshot.
fn commits_to_older(store: &dyn Store, seq: u64) -> Result<bool, LedgerError> {
    let records = store.scan(
        &keys::seq_key(keys::SNAPSHOT_COMMITMENT, 0),
        &keys::seq_key(keys::SNAPSHOT_COMMITMENT, seq.saturating_sub(1)),
        true,
    );
    for item in records {
        let (key, value) = item?;
        if key.len() == 9 && value.len() == 8 && keys::seq_of(&value) == Some(seq) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Judges the snapshot stored at `seq` against the entry that commits to it, which must
/// be at or before `head_seq`. Its bytes (hundreds of megabytes at cluster scale) are
/// read only once an entry is found to commit to it.
fn anchor(store: &dyn Store, seq: u64, head_seq: u64) -> Result<Anchor, LedgerError> {
    let Some(committing) = committing_seq(store, seq)? else {
        return Ok(Anchor::Unverifiable);
    };
    if committing < seq || committing > head_seq {
        return Ok(Anchor::Unverifiable);
    }
    let Some(start) = intact_entry(store, seq)? else {
        return Ok(Anchor::Unverifiable);
    };
    // The walk from this snapshot starts from the Merkle frontier of stored nodes: the
    // lowest stored node over this entry, when its group of leaves is complete, must be
    // the one the entries under it hash to (a rechained entry changes it).
    if !merkle_store::stored_group_matches(store, seq - 1)? {
        return Ok(Anchor::Unverifiable);
    }
    // The same for the committing entry, whose digest decides whether the snapshot is
    // used: a forger who rewrote it and rechained from there changes its group's node.
    if committing != seq && !merkle_store::stored_group_matches(store, committing - 1)? {
        return Ok(Anchor::Unverifiable);
    }
    let commits = match committing == seq {
        true => start.entry.snapshot,
        false => match intact_entry(store, committing)? {
            Some(entry) => entry.entry.snapshot,
            None => return Ok(Anchor::Unverifiable),
        },
    };
    let tampered = |detail: String| {
        Ok(Anchor::Tampered(VerifyFailure {
            seq,
            kind: FailureKind::SnapshotMismatch,
            detail,
        }))
    };
    match commits {
        None if committing == seq => return Ok(Anchor::Uncommitted),
        // Entry `seq` commits to an older snapshot (a `P` record names it): this one was
        // written at the flush that made that entry durable, and nothing commits to it yet.
        Some(_) if committing == seq && commits_to_older(store, seq)? => {
            return Ok(Anchor::Uncommitted)
        }
        _ => {}
    }
    // Two passes over the stored bytes, neither holding them all: the digest first, so
    // that only bytes the chain commits to are decoded (a forged length prefix must not
    // make the decoder allocate what it claims), then the decode.
    let started = std::time::Instant::now();
    let Some(digest) = streamed_snapshot_digest(store, seq)? else {
        // Removed since it was listed (retention): as if it had never been there.
        return Ok(Anchor::Unverifiable);
    };
    match commits {
        None => {
            return tampered(format!(
                "the snapshot stored at seq {seq} is named as committed to by entry {committing}, which commits to none"
            ))
        }
        Some(committed) if committed != digest => {
            return tampered(format!(
                "the snapshot stored at seq {seq} hashes to {digest} but entry {committing} commits to {committed}"
            ))
        }
        Some(_) => {}
    }
    let hashed = started.elapsed();
    let Some(stream) = store.snapshot_reader(seq)? else {
        return Ok(Anchor::Unverifiable);
    };
    let decoded =
        rmp_serde::from_read::<_, Snapshot>(std::io::BufReader::with_capacity(1 << 20, stream));
    let snapshot = match decoded {
        Ok(snapshot) => snapshot,
        // The bytes hashed to the committed digest a moment ago: a read failing now is the
        // storage's, not the snapshot's.
        Err(
            rmp_serde::decode::Error::InvalidMarkerRead(source)
            | rmp_serde::decode::Error::InvalidDataRead(source),
        ) => {
            return Err(LedgerError::Storage(StoreError::Io {
                context: format!("reading the snapshot at seq {seq}"),
                source,
            }))
        }
        Err(e) => {
            return tampered(format!(
                "the snapshot at seq {seq} is the one entry {committing} commits to but does not decode: {e}"
            ))
        }
    };
    // The answers of bound pods stay pending: whoever needs them builds them (an open,
    // on a thread of its own once the tail is applied).
    tracing::debug!(
        seq,
        hash_ms = hashed.as_millis() as u64,
        decode_ms = (started.elapsed() - hashed).as_millis() as u64,
        "snapshot loaded"
    );
    if snapshot.seq != seq || snapshot.projection.seq() != seq {
        return tampered(format!(
            "the snapshot at seq {seq} is the one entry {committing} commits to but names seq {} (projection seq {})",
            snapshot.seq,
            snapshot.projection.seq()
        ));
    }
    Ok(Anchor::Usable(Box::new(snapshot), start.hash))
}

/// The digest ([`schemas::entry::snapshot_digest`]) of the snapshot stored after `seq`, read as a stream;
/// `None` when none is stored.
fn streamed_snapshot_digest(store: &dyn Store, seq: u64) -> Result<Option<Hash>, LedgerError> {
    let Some(stream) = store.snapshot_reader(seq)? else {
        return Ok(None);
    };
    let mut hasher = blake3::Hasher::new_derive_key(schemas::entry::SNAPSHOT_CONTEXT);
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, stream),
        &mut hasher,
    )
    .map_err(|source| {
        LedgerError::Storage(StoreError::Io {
            context: format!("reading the snapshot at seq {seq}"),
            source,
        })
    })?;
    Ok(Some(Hash(*hasher.finalize().as_bytes())))
}

/// The newest snapshot at or before `max_seq` that the chain (up to `head_seq`) commits
/// to, with the stored chain hash of the entry at its seq: that entry and the committing
/// one decode and hash to their stored chain hashes, the Merkle groups over both entries
/// match, and the committing entry's `snapshot` digest is [`schemas::entry::snapshot_digest`] of
/// the stored snapshot bytes. A snapshot whose entries are broken, or that no entry
/// commits to (including one stored at the seq of an entry that a `P` record names as
/// committing to an older snapshot), is skipped (the walk from an older start reports a broken entry); one the
/// intact committing entry does not commit to is refused or skipped as `trust` says. A
/// deleted snapshot is simply not found: the older one, or replay from seq 1, is used.
fn latest_snapshot(
    store: &dyn Store,
    max_seq: u64,
    head_seq: u64,
    trust: SnapshotTrust,
) -> Result<Option<(Snapshot, Hash)>, LedgerError> {
    let mut stored = store.snapshot_seqs()?;
    stored.retain(|&seq| (1..=max_seq).contains(&seq));
    for seq in stored.into_iter().rev() {
        match anchor(store, seq, head_seq)? {
            Anchor::Usable(snapshot, hash) => return Ok(Some((*snapshot, hash))),
            Anchor::Unverifiable | Anchor::Uncommitted => {}
            Anchor::Tampered(failure) => match trust {
                SnapshotTrust::Refuse => return Err(LedgerError::Corrupt(failure)),
                SnapshotTrust::Skip => {}
            },
        }
    }
    Ok(None)
}

/// The seqs of the snapshots the log commits to (those its `P` records name), newest
/// first. (Snapshots of format-5 stores, committed by their own entry, have none.)
pub(crate) fn committed_snapshot_seqs(store: &dyn Store) -> Result<Vec<u64>, LedgerError> {
    Ok(store::seqs_under(store, keys::SNAPSHOT_COMMITMENT, true)?)
}

/// Removes, after the snapshot at `written` was written, the snapshots nothing will use:
/// committed ones older than the newest `kept` (none when `kept` is 0; their `P` records
/// stay, the chain still commits to them, and verification asks only for the newest),
/// and uncommitted ones left by an earlier process (at or below `opened_head`, the head
/// when this process opened the ledger: a writer commits only to snapshots it wrote).
/// Uncommitted ones this process wrote stay: an append may be committing to one now.
/// The newest stored snapshot after `start_seq` and at or below `head` that no entry
/// commits to (no `P` record names it, and it is not a format-5 snapshot committed by the
/// entry at its own seq): one an earlier writer wrote and stopped before committing to.
fn leftover_snapshot(
    store: &dyn Store,
    start_seq: u64,
    head: u64,
) -> Result<Option<u64>, LedgerError> {
    let Some(seq) = store
        .snapshot_seqs()?
        .into_iter()
        .filter(|&seq| seq > start_seq && seq <= head)
        .max()
    else {
        return Ok(None);
    };
    let uncommitted = store
        .get(&keys::seq_key(keys::SNAPSHOT_COMMITMENT, seq))?
        .is_none()
        && !committed_by_own_entry(store, seq)?;
    Ok(uncommitted.then_some(seq))
}

fn prune_snapshots(
    store: &dyn Store,
    kept: usize,
    written: u64,
    opened_head: u64,
) -> Result<(), LedgerError> {
    let committed = committed_snapshot_seqs(store)?;
    let keep = match kept {
        0 => committed.len(),
        kept => kept,
    };
    let (_, older) = committed.split_at(keep.min(committed.len()));
    for &seq in older {
        store.remove_snapshot(seq)?;
    }
    for seq in store.snapshot_seqs()? {
        let leftover = seq <= opened_head && seq != written && !committed.contains(&seq);
        if leftover && !committed_by_own_entry(store, seq)? {
            store.remove_snapshot(seq)?;
        }
    }
    Ok(())
}

/// Whether the snapshot at `seq` is committed to by the entry at `seq` itself, as format-5
/// stores did (no `P` record names it, and that entry commits to no older one).
fn committed_by_own_entry(store: &dyn Store, seq: u64) -> Result<bool, LedgerError> {
    if store
        .get(&keys::seq_key(keys::SNAPSHOT_COMMITMENT, seq))?
        .is_some()
    {
        return Ok(false);
    }
    let commits = read_entry(store, seq)?.is_some_and(|stored| stored.entry.snapshot.is_some());
    Ok(commits && !commits_to_older(store, seq)?)
}

/// The projection after `seq`, from the nearest snapshot the chain commits to, replaying
/// without checks.
fn replay_to(store: &dyn Store, seq: u64) -> Result<Projection, LedgerError> {
    let mut projection = match latest_snapshot(store, seq, u64::MAX, SnapshotTrust::Skip)? {
        Some((snapshot, _)) => snapshot.projection,
        None => Projection::unanswered(),
    };
    let from = keys::seq_key(keys::ENTRY, projection.seq() + 1);
    let to = keys::seq_key(keys::ENTRY, seq);
    if projection.seq() < seq {
        for item in store.scan(&from, &to, false) {
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

/// Whether a store whose entries verified up to `verified_seq` holds the acknowledged head:
/// `Some` failure when it ends before it (a truncation or rollback: sled drops everything
/// after damage to its log, or an older copy was put back) or holds another entry at its
/// seq (a store replaced by another history).
fn acknowledged_failure(
    store: &dyn Store,
    acknowledged: Acknowledged,
    verified_seq: u64,
) -> Option<VerifyFailure> {
    if verified_seq < acknowledged.seq {
        return Some(rolled_back(
            acknowledged,
            verified_seq,
            "the store ends before the acknowledged head",
        ));
    }
    if acknowledged.seq == 0 {
        return None;
    }
    let found = read_entry(store, acknowledged.seq)
        .ok()
        .flatten()
        .map(|stored| stored.hash);
    (found != Some(acknowledged.hash)).then(|| VerifyFailure {
        seq: acknowledged.seq,
        kind: FailureKind::RolledBack,
        detail: format!(
            "entry {} was acknowledged with hash {} but the store holds {}: the store was replaced by another history",
            acknowledged.seq,
            acknowledged.hash,
            found.map_or("no such entry".to_string(), |h| h.to_string())
        ),
    })
}

/// A failure naming a store holding less than, or other than, the acknowledged head.
fn rolled_back(acknowledged: Acknowledged, found: u64, why: &str) -> VerifyFailure {
    VerifyFailure {
        seq: acknowledged.seq,
        kind: FailureKind::RolledBack,
        detail: format!(
            "{why}: entry {} (hash {}) was acknowledged durable but the store's head is seq {found}: the store was rolled back, truncated or replaced",
            acknowledged.seq, acknowledged.hash
        ),
    }
}

/// The stored entry at `seq` in `store`.
fn read_entry(store: &dyn Store, seq: u64) -> Result<Option<StoredEntry>, LedgerError> {
    match store.get(&keys::seq_key(keys::ENTRY, seq))? {
        Some(value) => Ok(Some(decode_stored(&value)?)),
        None => Ok(None),
    }
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

    /// The raw store of a closed ledger directory, to change it behind the ledger's back.
    pub(crate) fn raw_store(path: &Path) -> store::SledStore {
        store::SledStore::open(&path.join(dir::SLED_DIR), None).expect("open the raw store")
    }

    /// Rewrites the high-water mark of a closed ledger to the entry at `seq` in its store,
    /// as an attacker with write access to the whole directory could.
    pub(crate) fn rewind_high_water(path: &Path, seq: u64) {
        let hash = match seq {
            0 => Hash::ZERO,
            _ => read_entry(&raw_store(path), seq).unwrap().unwrap().hash,
        };
        let mark = dir::HighWaterFile::open_dir(path).unwrap();
        // Both slots: the newer of the two wins on reading.
        mark.save(Acknowledged { seq, hash }).unwrap();
        mark.save(Acknowledged { seq, hash }).unwrap();
    }
    use chrono::TimeZone;
    use schemas::entry::snapshot_digest;
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
    fn older_store_formats_open_and_are_marked_current_by_a_writer_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            background_snapshots: false,
            ..LedgerConfig::default()
        };
        let mut ledger = Ledger::open(dir.path(), config.clone()).unwrap();
        ledger.append((1..=3).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        let format = |ledger: &Ledger| ledger.store.get(keys::FORMAT).unwrap().unwrap();
        assert_eq!(format(&ledger), keys::STORE_FORMAT.to_be_bytes());
        for older in keys::STORE_FORMATS_READABLE {
            ledger
                .store
                .insert(keys::FORMAT, &older.to_be_bytes())
                .unwrap();
            drop(ledger);
            ledger = Ledger::open(dir.path(), config.clone()).unwrap();
            assert_eq!(
                format(&ledger),
                keys::STORE_FORMAT.to_be_bytes(),
                "from {older}"
            );
            assert!(ledger.verify().unwrap().ok());
        }
        let newer = keys::STORE_FORMAT + 1;
        ledger
            .store
            .insert(keys::FORMAT, &newer.to_be_bytes())
            .unwrap();
        drop(ledger);
        match Ledger::open(dir.path(), config) {
            Err(LedgerError::StoreFormat(found)) => assert_eq!(found, newer),
            other => panic!("a newer format must be refused: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_store_of_one_record_per_key_is_marked_with_the_format_older_binaries_read() {
        let memory = store::MemoryStore::new();
        let config = LedgerConfig {
            background_snapshots: false,
            ..LedgerConfig::default()
        };
        let open =
            || Ledger::open_store(Arc::new(memory.clone()), None, None, config.clone()).unwrap();
        let format = || {
            u16::from_be_bytes(
                memory.get(keys::FORMAT).unwrap().unwrap()[..]
                    .try_into()
                    .unwrap(),
            )
        };
        let mut ledger = open();
        ledger.append((1..=3).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        drop(ledger);
        assert_eq!(format(), keys::STORE_FORMAT_PER_KEY);
        // A writer raises an older mark to what the layout needs, and never lowers one.
        for (marked, after) in [
            (5, keys::STORE_FORMAT_PER_KEY),
            (keys::STORE_FORMAT, keys::STORE_FORMAT),
        ] {
            memory.insert(keys::FORMAT, &marked.to_be_bytes()).unwrap();
            let ledger = open();
            assert!(ledger.verify().unwrap().ok());
            drop(ledger);
            assert_eq!(format(), after, "marked {marked}");
        }
    }

    /// A ledger in `dir` that writes a snapshot every 4 entries, inline, and its config.
    fn snapshot_every_4(dir: &std::path::Path) -> (Ledger, LedgerConfig) {
        let config = LedgerConfig {
            background_snapshots: false,
            snapshot_every: 4,
            ..LedgerConfig::default()
        };
        (Ledger::open(dir, config.clone()).unwrap(), config)
    }

    #[test]
    fn an_audit_verifies_what_the_open_ledger_verifies_without_building_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, config) = snapshot_every_4(dir.path());
        ledger.append((1..=10).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        ledger.append((11..=13).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        let head = ledger.head();
        let watermark = ledger.entry(7).unwrap().unwrap().hash;
        let (full, chain) = (ledger.verify().unwrap(), ledger.verify_chain().unwrap());
        let from_watermark = ledger.verify_from(7, watermark).unwrap();
        let from_head = ledger.verify_from(head.seq, head.hash).unwrap();
        assert!(full.ok() && chain.ok() && from_watermark.ok() && from_head.ok());
        drop(ledger);

        let audit = Ledger::open_for_audit(dir.path(), config.clone()).unwrap();
        assert_eq!((audit.head().seq, audit.head().hash), (head.seq, head.hash));
        assert_eq!(audit.verify().unwrap(), full);
        assert_eq!(audit.verify_chain().unwrap(), chain);
        assert_eq!(audit.verify_from(7, watermark).unwrap(), from_watermark);
        assert_eq!(audit.verify_from(head.seq, head.hash).unwrap(), from_head);
        drop(audit);

        // An entry gone below the newest snapshot: an open starts after it and does not
        // see it; the audit's verification (as the open ledger's) names it.
        let (ledger, _) = snapshot_every_4(dir.path());
        ledger.store.remove(&keys::seq_key(keys::ENTRY, 3)).unwrap();
        let expected = ledger.verify().unwrap();
        assert_eq!(
            expected.failure.as_ref().map(|f| (f.seq, f.kind)),
            Some((3, FailureKind::SeqGap))
        );
        drop(ledger);
        let audit = Ledger::open_for_audit(dir.path(), config.clone()).unwrap();
        assert_eq!(audit.verify().unwrap(), expected);
        // Opening for an audit wrote nothing: the same failure again, from a fresh open.
        drop(audit);
        let audit = Ledger::open_for_audit(dir.path(), config).unwrap();
        assert_eq!(audit.verify().unwrap(), expected);
    }

    #[test]
    fn a_ledger_whose_snapshots_an_older_build_wrote_opens_from_them_and_verifies() {
        // Layout 1 opens with the seq (a positive fixint); layout 2 with its tag.
        for (layout, opening) in [(1, vec![0x92, 0x04]), (2, vec![0x93, 0xb9])] {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, config) = snapshot_every_4(dir.path());
            ledger.snapshots.older_layout = Some(layout);
            ledger.append((1..=4).map(pod), at(0)).unwrap();
            ledger.flush().unwrap();
            ledger.append((5..=6).map(pod), at(1)).unwrap();
            ledger.flush().unwrap();
            let committed = ledger.entry(5).unwrap().unwrap().entry.snapshot.unwrap();
            let stored = ledger.store.get(&keys::seq_key(keys::SNAPSHOT, 4)).unwrap();
            let stored = stored.unwrap();
            assert_eq!(&stored[..2], &opening[..], "layout {layout}");
            assert_eq!(snapshot_digest(&stored), committed);
            let expected = ledger.projection().clone();
            drop(ledger);

            let reopened = Ledger::open(dir.path(), config).unwrap();
            assert_eq!(reopened.projection(), &expected, "layout {layout}");
            let report = reopened.verify().unwrap();
            assert!(report.ok(), "layout {layout}: {report:?}");
            // The anchor the open used is the older layout's snapshot at seq 4.
            let (snapshot, _) =
                latest_snapshot(reopened.store.as_ref(), 6, 6, SnapshotTrust::Refuse)
                    .unwrap()
                    .unwrap();
            assert_eq!(snapshot.seq, 4);
        }
    }

    #[test]
    fn a_forged_snapshot_is_caught_by_full_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, config) = snapshot_every_4(dir.path());
        // The flush at seq 4 writes the snapshot; entry 5 commits to it.
        ledger.append((1..=4).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        ledger.append((5..=6).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        assert!(ledger.entry(5).unwrap().unwrap().entry.snapshot.is_some());
        assert!(ledger.verify().unwrap().ok());

        let key = keys::seq_key(keys::SNAPSHOT, 4);
        let mut snapshot: Snapshot =
            rmp_serde::from_slice(&ledger.store.get(&key).unwrap().unwrap()).unwrap();
        snapshot.projection.apply(4, at(0), &pod(99));
        ledger
            .store
            .insert(&key, &encode_snapshot(4, &snapshot.projection).unwrap())
            .unwrap();

        let failure = ledger.verify().unwrap().failure.unwrap();
        assert_eq!(
            (failure.seq, failure.kind),
            (4, FailureKind::SnapshotMismatch)
        );
        // Replay on the open ledger passes over it; a strict reopen refuses it.
        assert_eq!(
            ledger.state_at_seq(5).unwrap(),
            replay_from_scratch(&ledger, 5)
        );
        drop(ledger);
        match Ledger::open(dir.path(), config) {
            Err(LedgerError::Corrupt(failure)) => assert_eq!(
                (failure.seq, failure.kind),
                (4, FailureKind::SnapshotMismatch)
            ),
            other => panic!("a forged snapshot was accepted at open: {other:?}"),
        }
    }

    /// The projection after `seq` replayed from seq 1, using no snapshot.
    fn replay_from_scratch(ledger: &Ledger, seq: u64) -> Projection {
        let mut projection = Projection::default();
        for stored in ledger.entries(1, seq) {
            let entry = stored.unwrap().entry;
            projection.apply_change(entry.seq, entry.observed_at, &entry.change);
        }
        projection
    }

    #[test]
    fn snapshots_are_written_after_a_flush_and_committed_to_by_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            background_snapshots: false,
            snapshot_every: 3,
            ..LedgerConfig::default()
        };
        let mut ledger = Ledger::open(dir.path(), config.clone()).unwrap();
        for n in 1..=9 {
            ledger.append([pod(n)], at(0)).unwrap();
            ledger.flush().unwrap();
        }
        let stored = |ledger: &Ledger, seq: u64| {
            ledger
                .store
                .get(&keys::seq_key(keys::SNAPSHOT, seq))
                .unwrap()
        };
        for seq in 1..=9 {
            let entry = ledger.entry(seq).unwrap().unwrap().entry;
            // The flushes at 3 and 6 wrote snapshots; entries 4 and 7 commit to them.
            let committed = matches!(seq, 4 | 7).then(|| seq - 1);
            assert_eq!(
                entry.snapshot,
                committed.map(|n| snapshot_digest(&stored(&ledger, n).unwrap())),
                "seq {seq}"
            );
            let commitment = ledger
                .store
                .get(&keys::seq_key(keys::SNAPSHOT_COMMITMENT, seq))
                .unwrap();
            assert_eq!(
                commitment,
                matches!(seq, 3 | 6).then(|| (seq + 1).to_be_bytes().to_vec()),
                "seq {seq}"
            );
        }
        // The flush at 9 wrote one that no entry commits to yet: it is not used.
        assert!(stored(&ledger, 9).is_some());
        // The sled store keeps them as files of their own, outside sled's.
        let files: Vec<_> = std::fs::read_dir(
            dir.path()
                .join(dir::SLED_DIR)
                .join("claim-ledger-snapshots"),
        )
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.contains(&"00000000000000000009.snapshot".to_string()));
        let (snapshot, hash) =
            latest_snapshot(ledger.store.as_ref(), 9, u64::MAX, SnapshotTrust::Refuse)
                .unwrap()
                .unwrap();
        assert_eq!(
            (snapshot.seq, hash),
            (6, ledger.entry(6).unwrap().unwrap().hash)
        );
        assert_eq!(snapshot.projection, replay_from_scratch(&ledger, 6));
        assert!(ledger.verify().unwrap().ok());
        let projection = ledger.projection().clone();
        drop(ledger);
        // A copy of the ledger whose snapshot at the head is replaced by another state's
        // (the one at 6, which names seq 6): a reopened writer must not commit to it.
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        let mut reopened = Ledger::open(dir.path(), config.clone()).unwrap();
        assert_eq!(reopened.projection(), &projection);
        // The answers of bound pods are built beside the open; the first append waits
        // for them and keeps them from then on. The records, name index and volumes are the
        // snapshot's as decoded, under what changed since.
        assert!(!reopened.projection().answers_are_kept());
        assert!(reopened.projection().is_decoded());
        // The previous process left a snapshot at the head that nothing commits to: this
        // writer writes the state there again, and its next append commits to that.
        reopened.append([pod(10)], at(0)).unwrap();
        assert!(reopened.projection().answers_are_kept());
        reopened.flush().unwrap();
        committed_snapshot_bytes(&reopened, 10, 9);
        assert!(reopened.verify().unwrap().ok());
        drop(reopened);
        let last = Ledger::open(dir.path(), config.clone()).unwrap();
        let (snapshot, _) = latest_snapshot(last.store.as_ref(), 10, 10, SnapshotTrust::Refuse)
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.seq, 9);
        assert_eq!(last.projection(), &replay_from_scratch(&last, 10));
        drop(last);

        let other = Ledger::open(copy.path(), config.clone()).unwrap();
        let older = stored(&other, 6).unwrap();
        other
            .store
            .insert(&keys::seq_key(keys::SNAPSHOT, 9), &older)
            .unwrap();
        drop(other);
        let mut other = Ledger::open(copy.path(), config).unwrap();
        other.append([pod(10)], at(0)).unwrap();
        other.flush().unwrap();
        // The bytes left there are never read: the state this writer derived at 9 replaces
        // them, and that is what entry 10 commits to.
        assert_ne!(committed_snapshot_bytes(&other, 10, 9), older);
        assert_opens_from(&other, 9, &replay_from_scratch(&other, 9));
        assert!(other.verify().unwrap().ok());
    }

    #[test]
    fn the_first_append_after_opening_waits_for_the_snapshot_left_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            snapshot_every: 2000,
            ..LedgerConfig::default()
        };
        let mut ledger = Ledger::open(dir.path(), config.clone()).unwrap();
        ledger.append((1..=2000).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        // Dropping waits for the snapshot thread: the snapshot at 2000 is written, and
        // nothing commits to it.
        drop(ledger);
        let mut reopened = Ledger::open(dir.path(), config).unwrap();
        // Appended at once, while the snapshot thread is still writing the state at 2000
        // again over the snapshot left there: the append waits for it, and commits to it.
        reopened.append([pod(2001)], at(1)).unwrap();
        reopened.flush().unwrap();
        committed_snapshot_bytes(&reopened, 2001, 2000);
    }

    #[test]
    fn a_snapshot_left_below_the_head_is_replaced_by_one_at_the_head_and_opens_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, config) = snapshot_every_4(dir.path());
        leave_a_snapshot_below_the_head(&mut ledger);
        assert_eq!(ledger.entry(5).unwrap().unwrap().entry.snapshot, None);
        let at_head = ledger.projection().clone();
        drop(ledger);
        assert_eq!(
            leftover_snapshot_seq(dir.path(), &config),
            (Some(4), None),
            "stored, uncommitted, and no start for an open"
        );

        let mut reopened = Ledger::open(dir.path(), config.clone()).unwrap();
        reopened.append([pod(7)], at(2)).unwrap();
        reopened.flush().unwrap();
        // The state at the head it opened at (6), written there and committed to by 7;
        // the bytes left at 4 are never used, and removed.
        committed_snapshot_bytes(&reopened, 7, 6);
        assert_opens_from(&reopened, 6, &at_head);
        assert_eq!(reopened.store.snapshot_seqs().unwrap(), vec![6]);
        assert!(reopened.verify().unwrap().ok());
        drop(reopened);
        assert_eq!(
            leftover_snapshot_seq(dir.path(), &config),
            (None, Some(6)),
            "committed now: the next open starts from it"
        );
    }

    /// The bytes stored for the snapshot at `snapshot`, after asserting that the entry at
    /// `by` commits to exactly them.
    fn committed_snapshot_bytes(ledger: &Ledger, by: u64, snapshot: u64) -> Vec<u8> {
        let bytes = ledger
            .store
            .get(&keys::seq_key(keys::SNAPSHOT, snapshot))
            .unwrap()
            .unwrap();
        assert_eq!(
            ledger.entry(by).unwrap().unwrap().entry.snapshot,
            Some(snapshot_digest(&bytes)),
            "entry {by} commits to the snapshot stored at {snapshot}"
        );
        bytes
    }

    /// Asserts that an open of `ledger` at its head starts from the committed snapshot at
    /// `seq`, and that it holds `state`.
    fn assert_opens_from(ledger: &Ledger, seq: u64, state: &Projection) {
        let head = ledger.head().seq;
        let (snapshot, _) =
            latest_snapshot(ledger.store.as_ref(), head, head, SnapshotTrust::Refuse)
                .unwrap()
                .unwrap();
        assert_eq!((snapshot.seq, &snapshot.projection), (seq, state));
    }

    /// Appends 1..=4, whose snapshot at 4 is written, then 5..=6, as a writer that stops
    /// before any append commits to it (the snapshot thread finished after its last one).
    fn leave_a_snapshot_below_the_head(ledger: &mut Ledger) {
        ledger.append((1..=4).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        assert_eq!(ledger.snapshots.take_written().map(|(seq, _)| seq), Some(4));
        ledger.append((5..=6).map(pod), at(1)).unwrap();
        ledger.flush().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_snapshot_threads_lower_priority_is_its_own() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let (in_thread, expected) = std::thread::spawn(move || {
            let own = rustix::process::getpriority_process(None).unwrap();
            yield_to_checks_and_appends();
            let lowered = rustix::process::getpriority_process(None).unwrap();
            (lowered, (own + SNAPSHOT_NICENESS).min(19))
        })
        .join()
        .unwrap();
        assert_eq!(in_thread, expected);
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            before,
            "the other threads (the writer, the checks) keep theirs"
        );
    }

    #[test]
    fn a_ledger_opened_for_reading_adopts_no_snapshot_and_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, config) = snapshot_every_4(dir.path());
        leave_a_snapshot_below_the_head(&mut ledger);
        drop(ledger);
        let reading = LedgerConfig {
            appends: false,
            create: false,
            ..config.clone()
        };
        let mut reader = Ledger::open(dir.path(), reading).unwrap();
        // (This config checks snapshots inline, at open.)
        assert_eq!(
            reader.snapshots.written.lock().unwrap().map(|(seq, _)| seq),
            None,
            "no decode of the snapshot left at 4 for a process that never appends"
        );
        assert_eq!(reader.head().seq, 6);
        assert!(matches!(
            reader.append([pod(7)], at(2)),
            Err(LedgerError::ReadOnly)
        ));
        drop(reader);
        // A writer still takes it over, writing the state at its head (6) instead.
        let mut writer = Ledger::open(dir.path(), config).unwrap();
        assert_eq!(
            writer.snapshots.written.lock().unwrap().map(|(seq, _)| seq),
            Some(6)
        );
        writer.append([pod(7)], at(2)).unwrap();
        writer.flush().unwrap();
        assert!(writer.entry(7).unwrap().unwrap().entry.snapshot.is_some());
    }

    #[test]
    fn a_snapshot_left_below_the_head_is_never_read_nor_committed_to() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, config) = snapshot_every_4(dir.path());
        leave_a_snapshot_below_the_head(&mut ledger);
        // Rewritten with the state after 3 under seq 4: one no writer could vouch for.
        let wrong = encode_snapshot(4, &ledger.state_at_seq(3).unwrap()).unwrap();
        ledger.store.put_snapshot(4, &wrong).unwrap();
        let truth = ledger.projection().clone();
        drop(ledger);
        let mut reopened = Ledger::open(dir.path(), config.clone()).unwrap();
        reopened.append([pod(7)], at(2)).unwrap();
        reopened.flush().unwrap();
        // Entry 7 commits to the state the writer derived at its head, never to the bytes
        // left, which are gone.
        assert_ne!(committed_snapshot_bytes(&reopened, 7, 6), wrong);
        assert_eq!(reopened.store.snapshot_seqs().unwrap(), vec![6]);
        assert_opens_from(&reopened, 6, &truth);
        assert!(reopened.verify().unwrap().ok());
    }

    /// The snapshot a writer opening `dir` would adopt, and the one an open starts from.
    fn leftover_snapshot_seq(dir: &Path, config: &LedgerConfig) -> (Option<u64>, Option<u64>) {
        let ledger = Ledger::open(
            dir,
            LedgerConfig {
                snapshot_every: 0,
                ..config.clone()
            },
        )
        .unwrap();
        let store = ledger.store.as_ref();
        let head = ledger.head().seq;
        let start = latest_snapshot(store, head, head, SnapshotTrust::Refuse)
            .unwrap()
            .map(|(snapshot, _)| snapshot.seq);
        (
            leftover_snapshot(store, start.unwrap_or(0), head).unwrap(),
            start,
        )
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for item in std::fs::read_dir(from).unwrap() {
            let item = item.unwrap();
            let target = to.join(item.file_name());
            match item.file_type().unwrap().is_dir() {
                true => copy_tree(&item.path(), &target),
                false => {
                    std::fs::copy(item.path(), &target).unwrap();
                }
            }
        }
    }

    /// No snapshots, and nothing on other threads: what a test of the log alone needs.
    #[test]
    fn old_snapshots_are_removed_past_retention_and_verification_asks_only_for_the_newest() {
        let stored = |ledger: &Ledger| -> Vec<u64> {
            let records = ledger.store.scan(
                &keys::seq_key(keys::SNAPSHOT, 0),
                &keys::seq_key(keys::SNAPSHOT, u64::MAX),
                false,
            );
            records
                .map(|record| keys::seq_of(&record.unwrap().0).unwrap())
                .collect()
        };
        for (kept, expected) in [(2, vec![6, 8, 10]), (0, vec![2, 4, 6, 8, 10])] {
            let dir = tempfile::tempdir().unwrap();
            let config = LedgerConfig {
                background_snapshots: false,
                snapshot_every: 2,
                snapshots_kept: kept,
                ..LedgerConfig::default()
            };
            let mut ledger = Ledger::open(dir.path(), config.clone()).unwrap();
            for n in 1..=10 {
                ledger.append([pod(n)], at(n as i64)).unwrap();
                ledger.flush().unwrap();
            }
            // Written at 2, 4, ..., 10; the one at 10 is not committed to yet, and the two
            // committed before it are kept.
            assert_eq!(stored(&ledger), expected, "kept {kept}");
            assert!(ledger.verify().unwrap().ok(), "kept {kept}");
            assert_eq!(
                ledger.state_at_seq(3).unwrap(),
                replay_from_scratch(&ledger, 3)
            );
            let projection = ledger.projection().clone();
            drop(ledger);
            let reopened = Ledger::open(dir.path(), config).unwrap();
            assert_eq!(reopened.projection(), &projection);
            // The newest committed snapshot gone is still named by verification.
            reopened
                .store
                .remove_snapshot(8)
                .expect("remove the newest committed snapshot");
            let failure = reopened.verify().unwrap().failure.expect("a failure");
            assert_eq!(
                (failure.seq, failure.kind),
                (9, FailureKind::SnapshotMismatch),
                "{failure}"
            );
        }
    }

    fn without_snapshots() -> LedgerConfig {
        LedgerConfig {
            snapshot_every: 0,
            background_snapshots: false,
            ..LedgerConfig::default()
        }
    }

    /// A memory store that counts its commits and says whether it takes an append's
    /// chunks from the committing thread.
    struct CountingCommits {
        inner: store::MemoryStore,
        pipelines: bool,
        commits: std::sync::atomic::AtomicUsize,
    }

    impl Store for CountingCommits {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> store::Records<'_> {
            self.inner.scan(from, to, reverse)
        }
        fn commit(&self, batch: Batch) -> Result<(), StoreError> {
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.commit(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn kind(&self) -> &'static str {
            "counting"
        }
        fn pipelines_commits(&self) -> bool {
            self.pipelines
        }
    }

    /// A memory store whose point reads of entries fail once armed (its scans work): a
    /// read that fails on one thread after another thread read the same entry fine.
    struct FailingEntryReads {
        inner: store::MemoryStore,
        armed: std::sync::atomic::AtomicBool,
    }

    impl Store for FailingEntryReads {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            if self.armed.load(std::sync::atomic::Ordering::SeqCst) && key[0] == keys::ENTRY {
                return Err(StoreError::Damaged("a read failed".into()));
            }
            self.inner.get(key)
        }
        fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> store::Records<'_> {
            self.inner.scan(from, to, reverse)
        }
        fn commit(&self, batch: Batch) -> Result<(), StoreError> {
            self.inner.commit(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn kind(&self) -> &'static str {
            "failing-entry-reads"
        }
    }

    #[test]
    fn a_chain_check_that_cannot_read_where_a_chunk_starts_fails_rather_than_skips_it() {
        let store = Arc::new(FailingEntryReads {
            inner: store::MemoryStore::new(),
            armed: Default::default(),
        });
        let mut ledger =
            Ledger::open_store(store.clone(), None, None, without_snapshots()).unwrap();
        ledger.append((1..=100).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        let head = read_head(store.as_ref()).unwrap();
        let healthy = verify::walk_chain_in_chunks(store.as_ref(), 0, Hash::ZERO, head, 4).unwrap();
        assert!(healthy.ok(), "{:?}", healthy.failure);
        assert_eq!((healthy.entries, healthy.verified_seq), (100, 100));

        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let report = verify::walk_chain_in_chunks(store.as_ref(), 0, Hash::ZERO, head, 4).unwrap();
        let failure = report.failure.expect("three chunks could not be checked");
        assert_eq!(failure.seq, 25, "{failure}");
        assert_eq!(failure.kind, FailureKind::StoreDamaged, "{failure}");
        assert!(report.verified_seq < 100);
    }

    #[test]
    fn a_large_append_is_one_commit_to_a_store_whose_commits_are_transactions() {
        for pipelines in [true, false] {
            let store = Arc::new(CountingCommits {
                inner: store::MemoryStore::new(),
                pipelines,
                commits: Default::default(),
            });
            let mut ledger =
                Ledger::open_store(store.clone(), None, None, without_snapshots()).unwrap();
            let before = store.commits.load(std::sync::atomic::Ordering::SeqCst);
            let changes = 8 * PIPELINE_CHUNK as u64;
            ledger
                .commit((1..=changes).map(pod).map(Change::Object), at(0))
                .unwrap();
            let commits = store.commits.load(std::sync::atomic::Ordering::SeqCst) - before;
            let expected = if pipelines { 8 } else { 1 };
            assert_eq!(commits, expected, "pipelines_commits: {pipelines}");
            // Either way the same log: every entry, verified.
            assert_eq!(ledger.head().seq, changes);
            assert!(ledger.verify().unwrap().ok());
        }
    }

    #[test]
    fn an_entry_missing_below_the_head_is_damage_not_a_request_out_of_range() {
        let store = store::MemoryStore::new();
        let mut ledger =
            Ledger::open_store(Arc::new(store.clone()), None, None, without_snapshots()).unwrap();
        ledger.append((1..=8).map(pod), at(0)).unwrap();
        ledger.flush().unwrap();
        // Lost behind the open ledger's back: only a read can notice.
        store.tamper_remove(&keys::seq_key(keys::ENTRY, 4));
        let error = ledger.seq_at_time(at(0)).unwrap_err();
        assert!(
            matches!(error, LedgerError::EntryMissing { seq: 4 }),
            "{error}"
        );
        assert!(error.is_integrity_failure());
        // Past the head is a request for what does not exist yet, not damage.
        let beyond = ledger.state_at_seq(9).unwrap_err();
        assert!(matches!(beyond, LedgerError::OutOfRange(_)), "{beyond}");
        assert!(!beyond.is_integrity_failure());
    }

    /// A high-water mark that refuses marks from seq `fail_from` on, checks that every
    /// mark it is given is already held by the store, and counts its syncs.
    struct CheckedMark {
        store: store::MemoryStore,
        fail_from: u64,
        recorded: std::sync::Mutex<Vec<u64>>,
        syncs: std::sync::atomic::AtomicU64,
    }

    impl HighWater for CheckedMark {
        fn load(&self) -> Result<Option<Acknowledged>, StoreError> {
            Ok(None)
        }

        fn save(&self, mark: Acknowledged) -> Result<(), StoreError> {
            self.record(mark)?;
            self.sync()
        }

        fn record(&self, mark: Acknowledged) -> Result<(), StoreError> {
            let stored = read_entry(&self.store, mark.seq).unwrap().map(|e| e.hash);
            assert_eq!(stored, Some(mark.hash), "a mark ran ahead of the store");
            if mark.seq >= self.fail_from {
                return Err(StoreError::Injected("the mark's disk is full".into()));
            }
            self.recorded.lock().unwrap().push(mark.seq);
            Ok(())
        }

        fn sync(&self) -> Result<(), StoreError> {
            self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn the_high_water_mark_follows_every_flush_and_is_synced_at_most_once_a_second() {
        let store = store::MemoryStore::new();
        let mark = Arc::new(CheckedMark {
            store: store.clone(),
            fail_from: 7,
            recorded: Default::default(),
            syncs: Default::default(),
        });
        let mut ledger = Ledger::open_store(
            Arc::new(store.clone()),
            Some(mark.clone() as Arc<dyn HighWater>),
            None,
            without_snapshots(),
        )
        .unwrap();
        for n in 1..=5 {
            ledger.append([pod(n)], at(0)).unwrap();
            assert_eq!(ledger.flush().unwrap(), n);
            assert_eq!(ledger.reader().view().acknowledged.seq, n);
        }
        // Five flushes within a second: the marks are recorded, not yet synced.
        assert_eq!(*mark.recorded.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(mark.syncs.load(std::sync::atomic::Ordering::SeqCst), 0);
        std::thread::sleep(MARK_SYNC_INTERVAL);
        ledger.append([pod(6)], at(0)).unwrap();
        ledger.flush().unwrap();
        assert_eq!(mark.syncs.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A mark that cannot be recorded fails its flush, and the ledger writes no more.
        ledger.append([pod(7)], at(0)).unwrap();
        let refused = ledger.flush().unwrap_err();
        assert!(refused.to_string().contains("disk is full"), "{refused}");
        assert!(matches!(
            ledger.append([pod(8)], at(0)),
            Err(LedgerError::Poisoned(_))
        ));
        drop(ledger);
        assert_eq!(*mark.recorded.lock().unwrap(), vec![1, 2, 3, 4, 5, 6]);
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
            .store
            .get(&keys::seq_key(keys::ENTRY, 31))
            .unwrap()
            .unwrap()
            .to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        ledger
            .store
            .insert(&keys::seq_key(keys::ENTRY, 31), &value)
            .unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((31, FailureKind::HashMismatch))
        );

        ledger
            .store
            .remove(&keys::seq_key(keys::ENTRY, 12))
            .unwrap();
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
            .store
            .get(&keys::seq_key(keys::ENTRY, 20))
            .unwrap()
            .unwrap();
        ledger
            .store
            .insert(&keys::seq_key(keys::ENTRY, 21), &last)
            .unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((21, FailureKind::TrailingEntry))
        );
        ledger
            .store
            .remove(&keys::seq_key(keys::ENTRY, 21))
            .unwrap();

        let mut head = ledger.store.get(keys::HEAD).unwrap().unwrap().to_vec();
        head[39] ^= 1;
        ledger.store.insert(keys::HEAD, &head).unwrap();
        assert_eq!(
            failure(ledger.verify_chain().unwrap()),
            Some((20, FailureKind::HeadMismatch))
        );

        ledger
            .store
            .remove(&keys::seq_key(keys::ENTRY, 20))
            .unwrap();
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
            read_head(ledger.store.as_ref()).unwrap(),
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
