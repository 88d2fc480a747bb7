//! Denied checks, aggregated per (pod uid, reason, minute) in memory until the minute
//! closes, then appended to the ledger as one `check_denied` entry each.
//!
//! A flood of replayed identities costs at most one entry per pod uid, reason and minute,
//! and at most [`crate::service::MAX_PENDING_DENIALS`] keys of memory: past that, new keys
//! are dropped and counted (existing keys still count up).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use schemas::{CheckDenied, Reason};

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

/// The pending denial records.
#[derive(Debug)]
pub(crate) struct Denials {
    pending: Mutex<HashMap<Key, Pending>>,
    cap: usize,
}

/// The start of the minute of `time`, in Unix seconds.
pub(crate) fn minute_of(time: DateTime<Utc>) -> i64 {
    time.timestamp().div_euclid(60) * 60
}

impl Denials {
    pub(crate) fn new(cap: usize) -> Denials {
        Denials {
            pending: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// Counts one denial; `false` when it was dropped because the table is full.
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
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pending.get_mut(&key) {
            entry.count += 1;
            return true;
        }
        if pending.len() >= self.cap {
            return false;
        }
        pending.insert(
            key,
            Pending {
                namespace: namespace.to_string(),
                pod_name: pod_name.to_string(),
                count: 1,
            },
        );
        true
    }

    /// How many keys are pending.
    pub(crate) fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Removes and returns the records of minutes before `before` (all when `None`),
    /// ordered by minute, pod uid and reason.
    pub(crate) fn take(&self, before: Option<i64>) -> Vec<CheckDenied> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<Key> = pending
            .keys()
            .filter(|k| before.is_none_or(|before| k.minute < before))
            .cloned()
            .collect();
        let mut taken: Vec<(Key, Pending)> = keys
            .into_iter()
            .filter_map(|k| pending.remove(&k).map(|v| (k, v)))
            .collect();
        drop(pending);
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
            .into_iter()
            .map(|(key, value)| CheckDenied {
                pod_uid: key.pod_uid,
                namespace: value.namespace,
                pod_name: value.pod_name,
                reason: key.reason,
                minute: Utc
                    .timestamp_opt(key.minute, 0)
                    .single()
                    .unwrap_or_default(),
                count: value.count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_040 + second, 0).unwrap()
    }

    #[test]
    fn denials_aggregate_per_uid_reason_and_minute_and_are_capped() {
        let denials = Denials::new(3);
        for _ in 0..5 {
            assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(0)));
        }
        assert!(denials.record("u1", "ns", "p", Reason::PodUidMismatch, at(1)));
        assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(60)));
        assert!(!denials.record("u2", "ns", "p", Reason::BindingReleased, at(0)));
        assert!(denials.record("u1", "ns", "p", Reason::BindingReleased, at(1)));
        assert_eq!(denials.len(), 3);

        let closed = denials.take(Some(minute_of(at(60))));
        assert_eq!(closed.len(), 2);
        // Ordered by minute, pod uid, then reason in declaration order.
        assert_eq!(closed[0].reason, Reason::PodUidMismatch);
        assert_eq!(closed[0].count, 1);
        assert_eq!(closed[1].reason, Reason::BindingReleased);
        assert_eq!(closed[1].count, 6);
        assert_eq!(closed[1].minute, at(0));
        let rest = denials.take(None);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].count, 1);
        assert_eq!(denials.len(), 0);
    }
}
