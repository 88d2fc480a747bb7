//! One shared copy of each recurring string of the projection's records.
//!
//! Namespaces, API versions, owner groups and kinds, phases, policies and condition
//! values take a few hundred distinct values in a cluster but recur in every record: each
//! record pointing at one shared [`Text`] instead of its own copy is a large part of
//! keeping the projection near 1 KiB per live object. The set is process-wide (the writer,
//! replay and snapshot decoding all share it) and bounded: past [`MAX_INTERNED`] distinct
//! values a string is kept as it is, so a cluster with unusual values costs memory, never
//! correctness. Uids are not interned here: a uid's shared text is its key in the
//! projection's map.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use schemas::{KindFields, Text};

/// At most this many distinct strings are interned.
pub(crate) const MAX_INTERNED: usize = 1 << 16;

/// The interned strings: ahash, seeded at random as the projection's maps are (SipHash
/// was most of the cost of the few lookups every applied change makes).
type Interned = HashSet<Text, ahash::RandomState>;

fn interned() -> &'static Mutex<Interned> {
    static INTERNED: OnceLock<Mutex<Interned>> = OnceLock::new();
    INTERNED.get_or_init(Default::default)
}

/// The shared copy of `text` (the first one seen), or `text` itself when the set is full.
pub(crate) fn shared(text: &Text) -> Text {
    // A poisoned lock only means another thread panicked mid-insert of a plain set: the
    // set is still a set.
    let mut set = interned().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = set.get(text.as_str()) {
        return existing.clone();
    }
    if set.len() < MAX_INTERNED {
        set.insert(text.clone());
    }
    text.clone()
}

/// [`shared`] for an optional value.
fn shared_option(text: &mut Option<Text>) {
    if let Some(value) = text.as_mut() {
        *value = shared(value);
    }
}

/// Shares the recurring values of an object's kind fields; `uid` gives the shared text
/// of a uid (a Sandbox's claim-uid label is its claim's uid).
pub(crate) fn share_fields(fields: &mut KindFields, uid: impl Fn(&Text) -> Text) {
    match fields {
        KindFields::Sandbox {
            claim_uid_label,
            shutdown_policy,
            ..
        } => {
            if let Some(label) = claim_uid_label.as_mut() {
                *label = uid(label);
            }
            shared_option(shutdown_policy);
        }
        KindFields::SandboxClaim {
            ready,
            shutdown_policy,
            warm_pool,
            template,
            ..
        } => {
            if let Some(ready) = ready.as_mut() {
                ready.status = shared(&ready.status);
                shared_option(&mut ready.reason);
            }
            shared_option(shutdown_policy);
            shared_option(warm_pool);
            shared_option(template);
        }
        KindFields::Pod { phase, .. } | KindFields::PersistentVolumeClaim { phase, .. } => {
            shared_option(phase)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let first = shared(&Text::from("tenant-interned-test"));
        let second = shared(&Text::from("tenant-interned-test"));
        assert!(first.shares_storage_with(&second));
        assert_eq!(first, "tenant-interned-test");
    }
}
