//! Verification: walk the log, recompute the chain, decode each entry and re-derive its
//! transitions by replay. The same walk serves `verify`, the tail check at open, and
//! incremental verification from a trusted watermark.

use std::collections::BTreeSet;

use schemas::{chain_hash, Entry, Hash};
use serde::Serialize;

use crate::keys;
use crate::projection::Projection;
use crate::{LedgerError, Snapshot};

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
    /// A stored snapshot of the projection differs from the state replay derives at its
    /// seq (a forged or corrupted snapshot would otherwise be trusted at open).
    SnapshotMismatch,
    /// An entry is stored beyond the recorded head.
    TrailingEntry,
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
        write!(f, "seq {}: {:?}: {}", self.seq, self.kind, self.detail)
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
    /// Whether the walk found nothing wrong.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Walks entries after `(start_seq, start_hash)` up to the head, replaying into
/// `projection` (which must be the state at `start_seq`).
pub(crate) fn walk(
    tree: &sled::Tree,
    projection: &mut Projection,
    start_seq: u64,
    start_hash: Hash,
    head: (u64, Hash),
) -> Result<VerifyReport, LedgerError> {
    let mut report = VerifyReport {
        from_seq: start_seq + 1,
        verified_seq: start_seq,
        verified_hash: start_hash,
        entries: 0,
        head_seq: head.0,
        failure: None,
    };
    let fail = |report: &mut VerifyReport, seq: u64, kind: FailureKind, detail: String| {
        report.failure = Some(VerifyFailure { seq, kind, detail });
    };
    let mut snapshot_seqs = BTreeSet::new();
    let snapshot_range =
        keys::seq_key(keys::SNAPSHOT, start_seq + 1)..=keys::seq_key(keys::SNAPSHOT, u64::MAX);
    for item in tree.range(snapshot_range) {
        snapshot_seqs.extend(keys::seq_of(&item?.0));
    }
    let from = keys::seq_key(keys::ENTRY, start_seq + 1);
    let to = keys::seq_key(keys::ENTRY, u64::MAX);
    for item in tree.range(from..=to) {
        let (key, value) = item?;
        let expected = report.verified_seq + 1;
        let Some(seq) = keys::seq_of(&key).filter(|_| key.len() == 9) else {
            fail(
                &mut report,
                expected,
                FailureKind::Undecodable,
                "malformed entry key".into(),
            );
            return Ok(report);
        };
        if seq > head.0 {
            fail(
                &mut report,
                seq,
                FailureKind::TrailingEntry,
                format!("entry {seq} is stored beyond the recorded head {}", head.0),
            );
            return Ok(report);
        }
        if seq != expected {
            fail(
                &mut report,
                expected,
                FailureKind::SeqGap,
                format!("entry {expected} is missing (next stored is {seq})"),
            );
            return Ok(report);
        }
        let Some(stored_hash) = Hash::from_slice(&value) else {
            fail(
                &mut report,
                seq,
                FailureKind::Undecodable,
                "value shorter than a hash".into(),
            );
            return Ok(report);
        };
        let bytes = &value[32..];
        let entry = match Entry::decode(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                fail(&mut report, seq, FailureKind::Undecodable, e.to_string());
                return Ok(report);
            }
        };
        if entry.seq != seq {
            fail(
                &mut report,
                seq,
                FailureKind::SeqMismatch,
                format!("the entry stored at seq {seq} records seq {}", entry.seq),
            );
            return Ok(report);
        }
        if entry.prev_hash != report.verified_hash {
            let previous = report.verified_hash;
            fail(
                &mut report,
                seq,
                FailureKind::PrevHashMismatch,
                format!(
                    "prev_hash {} but entry {} hashes to {previous}",
                    entry.prev_hash,
                    seq - 1
                ),
            );
            return Ok(report);
        }
        let computed = chain_hash(&report.verified_hash, seq, bytes);
        if computed != stored_hash {
            fail(
                &mut report,
                seq,
                FailureKind::HashMismatch,
                format!("stored hash {stored_hash}, the bytes hash to {computed}"),
            );
            return Ok(report);
        }
        let derived = projection.apply_change(seq, entry.observed_at, &entry.change);
        if derived != entry.transitions {
            fail(
                &mut report,
                seq,
                FailureKind::TransitionMismatch,
                format!(
                    "stored {:?}, replay derives {:?}",
                    entry.transitions, derived
                ),
            );
            return Ok(report);
        }
        if snapshot_seqs.contains(&seq) {
            if let Some(detail) = snapshot_differs(tree, seq, stored_hash, projection)? {
                fail(&mut report, seq, FailureKind::SnapshotMismatch, detail);
                return Ok(report);
            }
        }
        report.verified_seq = seq;
        report.verified_hash = stored_hash;
        report.entries += 1;
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
    }
    Ok(report)
}

/// Compares the snapshot stored at `seq` with the replayed projection; `Some(why)` if it
/// differs or does not decode.
fn snapshot_differs(
    tree: &sled::Tree,
    seq: u64,
    hash: Hash,
    replayed: &Projection,
) -> Result<Option<String>, LedgerError> {
    let Some(bytes) = tree.get(keys::seq_key(keys::SNAPSHOT, seq))? else {
        return Ok(None);
    };
    let snapshot: Snapshot = match rmp_serde::from_slice(&bytes) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            return Ok(Some(format!(
                "the snapshot at seq {seq} does not decode: {e}"
            )))
        }
    };
    if snapshot.seq != seq || snapshot.hash != hash {
        return Ok(Some(format!(
            "the snapshot at seq {seq} names seq {} hash {}",
            snapshot.seq, snapshot.hash
        )));
    }
    if &snapshot.projection != replayed {
        return Ok(Some(format!(
            "the snapshot at seq {seq} differs from the state replay derives"
        )));
    }
    Ok(None)
}
