//! The words every export spells the same way: record, change and transition names as
//! the stored format writes them, the one time format, and the base64 of stored bytes.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use schemas::{Change, ChangeKind, Entry, Transition};

/// Standard base64 of the stored bytes, the same alphabet the jsonl export uses.
pub(crate) fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The one time format of every export: FORMAT.md's (fewest sub-second digits, `Z`).
pub(crate) fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The Merkle leaf index of an entry: leaves are numbered from 0, seqs from 1.
pub(crate) fn leaf_index(entry: &Entry) -> u64 {
    // A stored entry never has seq 0; saturating keeps a forged one from panicking an export.
    entry.seq.saturating_sub(1)
}

/// The word naming a kind of record (`object`, `watch_gap`, `check_denied`): the key the
/// record has in the stored format.
pub fn record_name(change: &Change) -> &'static str {
    match change {
        Change::Object(_) => "object",
        Change::WatchGap(_) => "watch_gap",
        Change::CheckDenied(_) => "check_denied",
        Change::CheckDeniedOverflow(_) => "check_denied_overflow",
        Change::WatchScope(_) => "watch_scope",
    }
}

/// The word naming a change of an object, as stored (`created`, `updated`, `deleted`,
/// `missing_on_resync`).
pub fn change_name(change: ChangeKind) -> &'static str {
    match change {
        ChangeKind::Created => "created",
        ChangeKind::Updated => "updated",
        ChangeKind::Deleted => "deleted",
        ChangeKind::MissingOnResync => "missing_on_resync",
    }
}

/// The name of a transition, as stored in its `transition` tag (`bound`, `released`,
/// `single_use_violation`, `workspace_reused`, `workspace_orphaned`, `identity_mutated`).
pub fn transition_name(transition: &Transition) -> &'static str {
    match transition {
        Transition::Bound { .. } => "bound",
        Transition::Released { .. } => "released",
        Transition::SingleUseViolation { .. } => "single_use_violation",
        Transition::WorkspaceReused { .. } => "workspace_reused",
        Transition::WorkspaceOrphaned { .. } => "workspace_orphaned",
        Transition::IdentityMutated { .. } => "identity_mutated",
    }
}

/// An RFC 3339 time with milliseconds, always the same width (aligned columns).
pub fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
