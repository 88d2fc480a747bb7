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

use schemas::{KindFields, ObjectChange, Text};

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
            volume_claim_templates,
            ..
        } => {
            if let Some(label) = claim_uid_label.as_mut() {
                *label = uid(label);
            }
            shared_option(shutdown_policy);
            // Template names come from a handful of templates (`workspace`).
            for template in volume_claim_templates.iter_mut() {
                *template = shared(template);
            }
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

/// The kind fields that name or identify a family member (see [`family_strings`]), as
/// `[Option<&Text>; 2]` or `[Option<&mut Text>; 2]`: one match for both borrows.
macro_rules! family_fields {
    ($fields:expr, $borrow:ident) => {
        match $fields {
            KindFields::Sandbox {
                sandbox_id_label,
                pod_name_annotation,
                ..
            } => [pod_name_annotation.$borrow(), sandbox_id_label.$borrow()],
            KindFields::SandboxClaim {
                status_sandbox_name,
                ..
            } => [status_sandbox_name.$borrow(), None],
            KindFields::Pod {
                sandbox_id_annotation,
                ..
            } => [sandbox_id_annotation.$borrow(), None],
            KindFields::PersistentVolumeClaim { volume_name, .. } => [volume_name.$borrow(), None],
        }
    };
}

/// The strings a record repeats from its family's other records, or from the record it
/// replaces: its name, its owner's name, and the names and ids its kind fields give (a
/// Sandbox's pod-name annotation and sandbox-id label, a claim's Sandbox, a pod's
/// sandbox id, a PVC's volume). Not uids (their shared copy is the uid map's key) nor
/// interned values.
fn family_strings(change: &mut ObjectChange) -> impl Iterator<Item = &mut Text> {
    let ObjectChange {
        name,
        controller,
        fields,
        ..
    } = change;
    let fields: [Option<&mut Text>; 2] = family_fields!(fields, as_mut);
    std::iter::once(name)
        .chain(controller.as_mut().map(|owner| &mut owner.name))
        .chain(fields.into_iter().flatten())
}

/// Strings already held by the projection, which a change's equal strings share.
pub(crate) type Known<'a> = smallvec::SmallVec<[&'a Text; 12]>;

/// The family strings of `record` (see [`share_family_strings`]), added to `known`.
pub(crate) fn remember_family_strings<'a>(record: &'a ObjectChange, known: &mut Known<'a>) {
    known.push(&record.name);
    known.extend(record.controller.as_ref().map(|owner| &owner.name));
    let fields: [Option<&Text>; 2] = family_fields!(&record.fields, as_ref);
    known.extend(fields.into_iter().flatten());
}

/// Points each of `change`'s family strings (names and ids it repeats) at an equal string
/// in `known`, or at an equal one the change itself holds (a claim named after its
/// Sandbox): one copy of each.
pub(crate) fn share_family_strings(change: &mut ObjectChange, known: &[&Text]) {
    let mut own: smallvec::SmallVec<[Text; 4]> = smallvec::SmallVec::new();
    for text in family_strings(change) {
        let held = known
            .iter()
            .copied()
            .chain(own.iter())
            .find(|held| held.as_str() == text.as_str());
        match held {
            Some(held) => *text = held.clone(),
            None => own.push(text.clone()),
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
