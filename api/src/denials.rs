//! Denied checks, aggregated per (pod uid, reason, minute) in memory until the minute
//! closes, then appended to the ledger as one `check_denied` entry each.
//!
//! A flood of replayed identities costs at most one entry per pod uid, reason and minute,
//! and memory stays bounded: at most [`MAX_PENDING_DENIALS`] per-uid keys
//! in all, split evenly between the recorded reasons
//! ([`RECORDED_DENIALS`]). The split is what keeps a flood from crowding a
//! real replay out of the audit trail: forged pod uids (uids the ledger never recorded) can
//! only be denied `POD_UID_MISMATCH` (every other recorded reason needs a pod uid the ledger
//! holds, and for `BINDING_RELEASED` one that was bound), so however many an authenticated
//! caller presents, they fill that reason's share and never the share of
//! `BINDING_RELEASED`, where the replay of a released binding lands.
//!
//! Past a reason's share, a denial is not dropped from the count: it joins that reason's
//! per-minute overflow aggregate ([`DeniedOverflow`]: how many, the first and last uid, an
//! order-independent digest of the uids). The aggregate needs a record type the entry
//! format does not have yet (see [`DeniedOverflow`]); until it has one, [`Denials::take`]
//! writes each closed aggregate to the service log (`warn`), and [`Denials::record`] answers
//! `false` for an aggregated denial, which the caller counts in
//! `claim_ledger_denials_dropped_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use schemas::{CheckDenied, Reason};

/// Denials with these reasons are recorded in the ledger (aggregated per pod uid, reason
/// and minute): they are the signatures of replayed, stale or reused identities.
pub const RECORDED_DENIALS: [Reason; 5] = [
    Reason::BindingReleased,
    Reason::PodUidMismatch,
    Reason::ClaimUidMismatch,
    Reason::SingleUseViolation,
    Reason::WorkspaceReused,
];

/// At most this many distinct (pod uid, reason, minute) denial keys are held in memory;
/// denials past it are counted in `claim_ledger_denials_dropped_total` and not recorded.
pub const MAX_PENDING_DENIALS: usize = 10_000;

/// The BLAKE3 `derive_key` context of the uid digest of [`DeniedOverflow`].
pub(crate) const OVERFLOW_UID_CONTEXT: &str = "claim-ledger 2026-01 check-denied overflow uid v1";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    minute: i64,
    pod_uid: String,
    reason: Reason,
}

#[derive(Debug)]
struct Pending {
    namespace: String,
    pod_name: String,
    count: u64,
}

/// Denied checks of one reason in one minute that came past the reason's share of per-uid
/// records: every one counted, none named one by one.
///
/// Recorded as a `check_denied_overflow` entry (`schemas::CheckDeniedOverflow`, FORMAT.md
/// §2.3), in the histories of its first and last uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeniedOverflow {
    /// Why the checks were denied.
    pub(crate) reason: Reason,
    /// The start of the minute (UTC).
    pub(crate) minute: DateTime<Utc>,
    /// How many checks of this reason and minute were aggregated.
    pub(crate) count: u64,
    /// The pod uid of the first of them.
    pub(crate) first_pod_uid: String,
    /// The pod uid of the last of them.
    pub(crate) last_pod_uid: String,
    /// The sum, modulo 2^256 (each 32-byte value read as a little-endian integer), of
    /// `BLAKE3-derive_key(OVERFLOW_UID_CONTEXT, pod uid)` over every aggregated denial (a
    /// uid denied twice is added twice). Order-independent, so an auditor holding the
    /// denied uids from elsewhere (the gateway's own log) recomputes it in any order; a
    /// list missing or adding a denial does not match.
    pub(crate) uid_digest: [u8; 32],
}

impl DeniedOverflow {
    fn new(reason: Reason, minute: i64, pod_uid: &str) -> DeniedOverflow {
        DeniedOverflow {
            reason,
            minute: minute_start(minute),
            count: 0,
            first_pod_uid: pod_uid.to_string(),
            last_pod_uid: pod_uid.to_string(),
            uid_digest: [0; 32],
        }
    }

    fn add(&mut self, pod_uid: &str) {
        self.count += 1;
        self.last_pod_uid.clear();
        self.last_pod_uid.push_str(pod_uid);
        add_digest(&mut self.uid_digest, &uid_term(pod_uid));
    }
}

/// One uid's term of [`DeniedOverflow::uid_digest`].
pub(crate) fn uid_term(pod_uid: &str) -> [u8; 32] {
    blake3::derive_key(OVERFLOW_UID_CONTEXT, pod_uid.as_bytes())
}

/// `sum += term` modulo 2^256, both little-endian.
pub(crate) fn add_digest(sum: &mut [u8; 32], term: &[u8; 32]) {
    let mut carry = 0u16;
    for (s, t) in sum.iter_mut().zip(term) {
        let total = u16::from(*s) + u16::from(*t) + carry;
        *s = total as u8;
        carry = total >> 8;
    }
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<Key, Pending>,
    /// How many of `keys` each reason holds.
    per_reason: HashMap<Reason, usize>,
    /// The overflow aggregates, by (minute, reason).
    overflow: BTreeMap<(i64, Reason), DeniedOverflow>,
}

/// The pending denial records.
#[derive(Debug)]
pub(crate) struct Denials {
    table: Mutex<Table>,
    /// Per-uid keys each reason may hold.
    share: usize,
}

/// The start of the minute of `time`, in Unix seconds.
pub(crate) fn minute_of(time: DateTime<Utc>) -> i64 {
    time.timestamp().div_euclid(60) * 60
}

fn minute_start(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(minute, 0).single().unwrap_or_default()
}

impl Denials {
    /// At most `cap` per-uid keys in all: `cap` split evenly between the recorded reasons
    /// (at least one each).
    pub(crate) fn new(cap: usize) -> Denials {
        Denials::with_share((cap / RECORDED_DENIALS.len()).max(1))
    }

    /// At most `share` per-uid keys for each reason.
    fn with_share(share: usize) -> Denials {
        Denials {
            table: Mutex::new(Table::default()),
            share,
        }
    }

    /// Counts one denial: in its (pod uid, reason, minute) record, `true`; or, when its
    /// reason's share of records is full, in the reason's overflow aggregate of the minute,
    /// `false` (see the module documentation).
    pub(crate) fn record(
        &self,
        pod_uid: &str,
        namespace: &str,
        pod_name: &str,
        reason: Reason,
        at: DateTime<Utc>,
    ) -> bool {
        let key = Key {
            minute: minute_of(at),
            pod_uid: pod_uid.to_string(),
            reason,
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = table.keys.get_mut(&key) {
            entry.count += 1;
            return true;
        }
        let held = table.per_reason.entry(reason).or_default();
        if *held >= self.share {
            table
                .overflow
                .entry((key.minute, reason))
                .or_insert_with(|| DeniedOverflow::new(reason, key.minute, pod_uid))
                .add(pod_uid);
            return false;
        }
        *held += 1;
        table.keys.insert(
            key,
            Pending {
                namespace: namespace.to_string(),
                pod_name: pod_name.to_string(),
                count: 1,
            },
        );
        true
    }

    /// How many per-uid keys are pending.
    pub(crate) fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    /// Removes and returns the records and the overflow aggregates of minutes before
    /// `before` (all when `None`): the records ordered by minute, pod uid and reason, the
    /// aggregates by minute and reason.
    pub(crate) fn take(&self, before: Option<i64>) -> (Vec<CheckDenied>, Vec<DeniedOverflow>) {
        let closed = |minute: i64| before.is_none_or(|before| minute < before);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<Key> = table
            .keys
            .keys()
            .filter(|k| closed(k.minute))
            .cloned()
            .collect();
        let mut taken: Vec<(Key, Pending)> = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = table.keys.remove(&key) {
                if let Some(held) = table.per_reason.get_mut(&key.reason) {
                    *held = held.saturating_sub(1);
                }
                taken.push((key, value));
            }
        }
        let open = match before {
            Some(before) => table.overflow.split_off(&(before, Reason::ALL[0])),
            None => BTreeMap::new(),
        };
        let overflow: Vec<DeniedOverflow> = std::mem::replace(&mut table.overflow, open)
            .into_values()
            .collect();
        drop(table);
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        let records = taken
            .into_iter()
            .map(|(key, value)| CheckDenied {
                pod_uid: key.pod_uid,
                namespace: value.namespace,
                pod_name: value.pod_name,
                reason: key.reason,
                minute: minute_start(key.minute),
                count: value.count,
            })
            .collect();
        (records, overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_040 + second, 0).unwrap()
    }

    #[test]
    fn denials_aggregate_per_uid_reason_and_minute_and_each_reason_has_its_share() {
        let denials = Denials::with_share(2);
        for _ in 0..5 {
            assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(0)));
        }
        assert!(denials.record("u1", "ns", "p", Reason::PodUidMismatch, at(1)));
        assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(60)));
        // BINDING_RELEASED's share (2) is full: u2 goes to the overflow aggregate.
        assert!(!denials.record("u2", "ns", "p", Reason::BindingReleased, at(0)));
        // An existing key still counts up.
        assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(1)));
        // Another reason still has room.
        assert!(denials.record("u3", "ns", "p", Reason::PodUidMismatch, at(2)));
        assert_eq!(denials.len(), 4);

        let (closed, overflow) = denials.take(Some(minute_of(at(60))));
        assert_eq!(closed.len(), 3);
        // Ordered by minute, pod uid, then reason in declaration order.
        assert_eq!(closed[0].reason, Reason::PodUidMismatch);
        assert_eq!(closed[0].count, 1);
        assert_eq!(closed[1].reason, Reason::BindingReleased);
        assert_eq!(closed[1].count, 6);
        assert_eq!(closed[1].minute, at(0));
        assert_eq!(closed[2].pod_uid, "u3");
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].count, 1);
        assert_eq!(overflow[0].first_pod_uid, "u2");
        // Taking frees the shares: a new key of the open minute fits again.
        assert!(denials.record("u4", "ns", "p", Reason::BindingReleased, at(61)));
        let (rest, _) = denials.take(None);
        assert_eq!(rest.len(), 2);
        assert_eq!(denials.len(), 0);
    }

    #[test]
    fn a_flood_of_forged_uids_cannot_crowd_out_a_replay_and_every_denial_is_counted() {
        let denials = Denials::new(MAX_PENDING_DENIALS);
        let flood = MAX_PENDING_DENIALS + 500;
        let mut accepted = 0;
        for i in 0..flood {
            let uid = format!("forged-{i}");
            if denials.record(
                &uid,
                "ns",
                "victim",
                Reason::PodUidMismatch,
                at(i as i64 % 50),
            ) {
                accepted += 1;
            }
        }
        assert!(denials.record(
            "real-old-uid",
            "ns",
            "victim",
            Reason::BindingReleased,
            at(55)
        ));
        assert!(denials.len() <= MAX_PENDING_DENIALS);

        let (records, overflow) = denials.take(None);
        assert!(records
            .iter()
            .any(|r| r.pod_uid == "real-old-uid" && r.reason == Reason::BindingReleased));
        let recorded: u64 = records
            .iter()
            .filter(|r| r.reason == Reason::PodUidMismatch)
            .map(|r| r.count)
            .sum();
        let aggregated: u64 = overflow.iter().map(|o| o.count).sum();
        assert_eq!(recorded, accepted);
        assert_eq!(recorded + aggregated, flood as u64);
        assert_eq!(overflow.len(), 1);
        let aggregate = &overflow[0];
        assert_eq!(aggregate.reason, Reason::PodUidMismatch);
        assert_eq!(aggregate.first_pod_uid, format!("forged-{accepted}"));
        assert_eq!(aggregate.last_pod_uid, format!("forged-{}", flood - 1));
        // The digest is the sum of the terms of exactly the aggregated uids, in any order.
        let mut expected = [0u8; 32];
        for i in (accepted as usize..flood).rev() {
            add_digest(&mut expected, &uid_term(&format!("forged-{i}")));
        }
        assert_eq!(aggregate.uid_digest, expected);
    }

    #[test]
    fn overflow_aggregates_are_per_minute_and_reason_and_taken_with_their_minute() {
        let denials = Denials::with_share(1);
        assert!(denials.record("a", "ns", "p", Reason::PodUidMismatch, at(0)));
        assert!(!denials.record("b", "ns", "p", Reason::PodUidMismatch, at(1)));
        assert!(!denials.record("c", "ns", "p", Reason::PodUidMismatch, at(61)));
        assert!(denials.record("d", "ns", "p", Reason::ClaimUidMismatch, at(61)));
        assert!(!denials.record("e", "ns", "p", Reason::ClaimUidMismatch, at(62)));
        let (records, overflow) = denials.take(Some(minute_of(at(61))));
        assert_eq!(records.len(), 1);
        assert_eq!(overflow.len(), 1);
        assert_eq!(
            (overflow[0].first_pod_uid.as_str(), overflow[0].count),
            ("b", 1)
        );
        let (records, overflow) = denials.take(None);
        assert_eq!(records.len(), 1);
        let summary: Vec<(Reason, &str, u64)> = overflow
            .iter()
            .map(|o| (o.reason, o.first_pod_uid.as_str(), o.count))
            .collect();
        assert_eq!(
            summary,
            [
                (Reason::PodUidMismatch, "c", 1),
                (Reason::ClaimUidMismatch, "e", 1)
            ]
        );
    }

    #[test]
    fn the_digest_adds_modulo_two_to_the_256() {
        let mut sum = [0xff; 32];
        let mut one = [0; 32];
        one[0] = 1;
        add_digest(&mut sum, &one);
        assert_eq!(sum, [0; 32]);
        let mut a = [0; 32];
        add_digest(&mut a, &uid_term("x"));
        add_digest(&mut a, &uid_term("y"));
        let mut b = [0; 32];
        add_digest(&mut b, &uid_term("y"));
        add_digest(&mut b, &uid_term("x"));
        assert_eq!(a, b);
    }
}
