//! The name index: every uid ever recorded under a (kind, namespace, name), oldest first.
//!
//! Two levels. A state decoded from a snapshot keeps the snapshot's entries as decoded:
//! plain vectors, found through a hash table of their positions (8 bytes a slot) that is
//! filled while the snapshot decodes, shared by every copy of that state and never
//! changed (see [`super::decoded`]). Building persistent maps of them instead took a fifth
//! of an open's CPU time (a profiled open of 894k live objects: about 1M entries, each an
//! insert into a persistent map). Above them, names recorded since (every name, for a
//! state that was never decoded) are in persistent maps, so the writer publishes a copy
//! after each flush in `O(1)`; a name recorded there hides its decoded entry. The next
//! snapshot writes both levels as one index, and the next open decodes them into one
//! table. A decoded name recorded again (an object created again under an earlier one's
//! name) keeps its old entry in the table: tens of bytes each, at most one per decoded
//! name, so the table is never folded into the maps (as the records' is, see
//! [`super::text_map`]).
//!
//! The maps are one per kind, keyed by namespace and name: the kind is which map, not a
//! byte of every key, so an entry is 40 bytes where one map of `(kind, namespace, name)`
//! keys took 48. Lookups borrow the namespace and name (`&str`) instead of building a
//! key.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use schemas::{ObjectKind, Text};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

use super::decoded::{DecodedTable, Keyed};
use super::HashMap;

/// A name within one kind, as the index stores it (both strings shared with the record
/// that named them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameKey {
    namespace: Text,
    name: Text,
}

/// A name as a lookup gives it, owned or borrowed: what lets a `&str` pair find a
/// [`NameKey`] without allocating one.
trait NamePair {
    fn pair(&self) -> (&str, &str);
}

impl NamePair for NameKey {
    fn pair(&self) -> (&str, &str) {
        (self.namespace.as_str(), self.name.as_str())
    }
}

impl NamePair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

/// Hashes as `(namespace, name)` string slices: the key and a borrowed pair must hash
/// alike.
fn hash_pair<H: Hasher>((namespace, name): (&str, &str), state: &mut H) {
    namespace.hash(state);
    name.hash(state);
}

impl Hash for dyn NamePair + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pair(self.pair(), state);
    }
}

impl PartialEq for dyn NamePair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn NamePair + '_ {}

impl Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pair(self.pair(), state);
    }
}

impl<'a> Borrow<dyn NamePair + 'a> for NameKey {
    fn borrow(&self) -> &(dyn NamePair + 'a) {
        self
    }
}

/// A name index key as snapshots and [`NameIndex::iter`] give it.
pub(super) type NameRef<'a> = (ObjectKind, &'a Text, &'a Text);

/// A name index key as decoded.
pub(super) type OwnedName = (ObjectKind, Text, Text);

/// Every uid ever recorded under a (kind, namespace, name): the entries a snapshot held,
/// as decoded, under the names recorded since (see the module doc).
#[derive(Debug, Clone, Default)]
pub(super) struct NameIndex {
    /// The entries of the snapshot this state was decoded from, shared by every copy of
    /// it and never changed.
    decoded: Option<Arc<DecodedNames>>,
    /// The names recorded since the decode (every name, for a state never decoded), each
    /// with all its uids: a name here hides its decoded entry.
    changed: NameMaps,
    /// How many names `changed` holds that `decoded` does not.
    added: usize,
}

/// Decoded name index entries (one part's).
pub(super) type NameEntries = Vec<(OwnedName, NameUids)>;

/// A snapshot's name index entries as decoded (see [`super::decoded`]).
pub(super) type DecodedNames = DecodedTable<(OwnedName, NameUids)>;

/// A name hashes as `(kind, namespace, name)` with string slices, as a lookup's does.
impl Keyed for (OwnedName, NameUids) {
    fn key_hash(&self, hasher: &ahash::RandomState) -> u64 {
        let (kind, namespace, name) = &self.0;
        hasher.hash_one((*kind, namespace.as_str(), name.as_str()))
    }

    fn same_key(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Adds one part's decoded entries; a name already added is refused (written twice).
pub(super) fn add_decoded(names: &mut DecodedNames, entries: NameEntries) -> Result<(), String> {
    names.add(entries, |_| {
        "a name index entry is written twice".to_string()
    })
}

fn decoded_get<'a>(
    names: &'a DecodedNames,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> Option<&'a (OwnedName, NameUids)> {
    names.find(names.hash((kind, namespace, name)), |((k, n, m), _)| {
        *k == kind && n.as_str() == namespace && m.as_str() == name
    })
}

impl NameIndex {
    /// The index of a decoded snapshot's entries.
    pub(super) fn decoded(names: DecodedNames) -> NameIndex {
        NameIndex {
            decoded: Some(Arc::new(names)),
            ..NameIndex::default()
        }
    }

    /// Whether this index holds a snapshot's entries as decoded.
    #[cfg(test)]
    pub(super) fn is_decoded(&self) -> bool {
        self.decoded.is_some()
    }

    /// The decoded entry of a name no change has recorded since.
    fn decoded_entry(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Option<&(OwnedName, NameUids)> {
        decoded_get(self.decoded.as_ref()?, kind, namespace, name)
    }

    /// The uids under a name, oldest first.
    pub(super) fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&NameUids> {
        match self.changed.get(kind, namespace, name) {
            Some(uids) => Some(uids),
            None => self
                .decoded_entry(kind, namespace, name)
                .map(|(_, uids)| uids),
        }
    }

    /// The name as the index holds it (shared with the record that named it first).
    pub(super) fn key_of(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&Text> {
        match self.changed.key_of(kind, namespace, name) {
            Some(key) => Some(key),
            None => self
                .decoded_entry(kind, namespace, name)
                .map(|((_, _, name), _)| name),
        }
    }

    /// Records `uid` under a name unless it is already the name's newest uid.
    pub(super) fn record(&mut self, kind: ObjectKind, namespace: &Text, name: &Text, uid: &Text) {
        if self.changed.get(kind, namespace, name).is_none() {
            match self.decoded_entry(kind, namespace, name) {
                Some((_, uids)) if uids.last() == Some(uid) => return,
                // First recorded since the decode: the name moves up, with its uids.
                Some(((_, namespace, name), uids)) => {
                    let key = (kind, namespace.clone(), name.clone());
                    let uids = uids.clone();
                    self.changed.insert(key, uids);
                }
                None => self.added += 1,
            }
        }
        self.changed.record(kind, namespace, name, uid);
    }

    /// Sets a name's uids (a decoded entry of an older layout); returns what was there.
    pub(super) fn insert(&mut self, name: OwnedName, uids: NameUids) -> Option<NameUids> {
        let hidden = match self.changed.get(name.0, &name.1, &name.2) {
            Some(_) => None,
            None => self
                .decoded_entry(name.0, &name.1, &name.2)
                .map(|(_, uids)| uids.clone()),
        };
        let previous = self.changed.insert(name, uids).or(hidden);
        if previous.is_none() {
            self.added += 1;
        }
        previous
    }

    /// The number of names.
    pub(super) fn len(&self) -> usize {
        self.decoded.as_ref().map_or(0, |decoded| decoded.len()) + self.added
    }

    /// Every name and its uids (in no order).
    pub(super) fn iter(&self) -> impl Iterator<Item = (NameRef<'_>, &NameUids)> {
        let decoded = self.decoded.iter().flat_map(|decoded| decoded.iter());
        decoded
            .filter(|((kind, namespace, name), _)| {
                self.changed.get(*kind, namespace, name).is_none()
            })
            .map(|((kind, namespace, name), uids)| ((*kind, namespace, name), uids))
            .chain(self.changed.iter())
    }
}

/// Equal indexes hold the same names with the same uids, however they hold them.
impl PartialEq for NameIndex {
    fn eq(&self, other: &NameIndex) -> bool {
        self.len() == other.len()
            && self.iter().all(|((kind, namespace, name), uids)| {
                other.get(kind, namespace, name) == Some(uids)
            })
    }
}

impl Eq for NameIndex {}

/// Names as persistent maps, one per kind.
#[derive(Debug, Clone, Default)]
struct NameMaps {
    by_kind: [HashMap<NameKey, NameUids>; ObjectKind::ALL.len()],
}

/// The map of `kind`'s position in [`ObjectKind::ALL`].
fn slot(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Sandbox => 0,
        ObjectKind::SandboxClaim => 1,
        ObjectKind::Pod => 2,
        ObjectKind::PersistentVolumeClaim => 3,
    }
}

impl NameMaps {
    fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&NameUids> {
        self.by_kind[slot(kind)].get(&(namespace, name) as &dyn NamePair)
    }

    fn key_of(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&Text> {
        self.by_kind[slot(kind)]
            .get_key_value(&(namespace, name) as &dyn NamePair)
            .map(|(key, _)| &key.name)
    }

    fn record(&mut self, kind: ObjectKind, namespace: &Text, name: &Text, uid: &Text) {
        if self.get(kind, namespace, name).and_then(NameUids::last) == Some(uid) {
            return;
        }
        let key = NameKey {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        self.by_kind[slot(kind)]
            .entry(key)
            .or_default()
            .push(uid.clone());
    }

    fn insert(&mut self, (kind, namespace, name): OwnedName, uids: NameUids) -> Option<NameUids> {
        self.by_kind[slot(kind)].insert(NameKey { namespace, name }, uids)
    }

    fn iter(&self) -> impl Iterator<Item = (NameRef<'_>, &NameUids)> {
        ObjectKind::ALL.into_iter().flat_map(move |kind| {
            self.by_kind[slot(kind)]
                .iter()
                .map(move |(key, uids)| ((kind, &key.namespace, &key.name), uids))
        })
    }
}

impl FromIterator<(OwnedName, NameUids)> for NameIndex {
    fn from_iter<I: IntoIterator<Item = (OwnedName, NameUids)>>(names: I) -> Self {
        let mut index = NameIndex::default();
        for (name, uids) in names {
            index.insert(name, uids);
        }
        index
    }
}

/// Encoded as one map of `(kind, namespace, name)` keys, as before the index was split.
impl Serialize for NameIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, uids) in self.iter() {
            map.serialize_entry(&name, uids)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for NameIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IndexVisitor;
        impl<'de> Visitor<'de> for IndexVisitor {
            type Value = NameIndex;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of (kind, namespace, name) to uids")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NameIndex, A::Error> {
                let mut index = NameIndex::default();
                while let Some((name, uids)) = map.next_entry::<OwnedName, NameUids>()? {
                    index.insert(name, uids);
                }
                Ok(index)
            }
        }
        deserializer.deserialize_map(IndexVisitor)
    }
}

/// The uids under one name, oldest first: nearly always one, kept inline, without a heap
/// block. 16 bytes (a small vector with one inline was 24). Encoded as an array of uids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NameUids {
    /// Exactly one uid (never a list of one: the two would compare unequal).
    One(Text),
    /// None (only before the first push), or two or more.
    Many(ThinVec<Text>),
}

impl Default for NameUids {
    fn default() -> Self {
        NameUids::Many(ThinVec::new())
    }
}

impl NameUids {
    pub(super) fn as_slice(&self) -> &[Text] {
        match self {
            NameUids::One(uid) => std::slice::from_ref(uid),
            NameUids::Many(uids) => uids,
        }
    }

    pub(super) fn last(&self) -> Option<&Text> {
        self.as_slice().last()
    }

    pub(super) fn push(&mut self, uid: Text) {
        match self {
            NameUids::Many(uids) if uids.is_empty() => *self = NameUids::One(uid),
            NameUids::Many(uids) => uids.push(uid),
            NameUids::One(first) => {
                let mut uids = ThinVec::with_capacity(2);
                uids.push(first.clone());
                uids.push(uid);
                *self = NameUids::Many(uids);
            }
        }
    }
}

impl FromIterator<Text> for NameUids {
    fn from_iter<I: IntoIterator<Item = Text>>(uids: I) -> Self {
        let mut collected = NameUids::default();
        for uid in uids {
            collected.push(uid);
        }
        collected
    }
}

impl Serialize for NameUids {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for NameUids {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UidsVisitor;
        impl<'de> serde::de::Visitor<'de> for UidsVisitor {
            type Value = NameUids;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of uids")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut items: A,
            ) -> Result<NameUids, A::Error> {
                let mut uids = NameUids::default();
                while let Some(uid) = items.next_element::<Text>()? {
                    uids.push(uid);
                }
                Ok(uids)
            }
        }
        deserializer.deserialize_seq(UidsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as StdHashMap;

    use super::*;

    fn text(s: &str) -> Text {
        Text::from(s)
    }

    #[test]
    fn a_name_is_found_by_borrowed_strings_within_its_kind_only() {
        let mut index = NameIndex::default();
        let (ns, name) = (text("tenant-a"), text("agent-1"));
        index.record(ObjectKind::Pod, &ns, &name, &text("uid-1"));
        index.record(ObjectKind::Pod, &ns, &name, &text("uid-1"));
        index.record(ObjectKind::Sandbox, &ns, &name, &text("uid-2"));
        index.record(ObjectKind::Pod, &ns, &name, &text("uid-3"));
        let uids = |kind, ns, name| {
            index
                .get(kind, ns, name)
                .map(|uids| uids.as_slice().iter().map(Text::as_str).collect::<Vec<_>>())
        };
        assert_eq!(
            uids(ObjectKind::Pod, "tenant-a", "agent-1"),
            Some(vec!["uid-1", "uid-3"])
        );
        assert_eq!(
            uids(ObjectKind::Sandbox, "tenant-a", "agent-1"),
            Some(vec!["uid-2"])
        );
        assert_eq!(uids(ObjectKind::SandboxClaim, "tenant-a", "agent-1"), None);
        assert_eq!(uids(ObjectKind::Pod, "tenant-b", "agent-1"), None);
        // The pair is hashed as two strings, not one: no collision by concatenation.
        assert_eq!(uids(ObjectKind::Pod, "tenant-aagent", "-1"), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn decoded_names_written_twice_are_refused_within_a_part_and_across_parts() {
        let entry = |ns: &str, name: &str, uid: &str| {
            (
                (ObjectKind::Pod, text(ns), text(name)),
                NameUids::One(text(uid)),
            )
        };
        let mut names = DecodedNames::new(2);
        add_decoded(
            &mut names,
            vec![entry("a", "p1", "u1"), entry("a", "p2", "u2")],
        )
        .unwrap();
        // The same name in another kind or namespace is another name.
        let mut sandbox = entry("a", "p1", "u3");
        sandbox.0 .0 = ObjectKind::Sandbox;
        add_decoded(&mut names, vec![sandbox, entry("b", "p1", "u4")]).unwrap();
        let twice = "a name index entry is written twice";
        assert_eq!(
            add_decoded(
                &mut names,
                vec![entry("c", "p1", "u5"), entry("a", "p2", "u6")]
            ),
            Err(twice.to_string())
        );
        let mut within = DecodedNames::new(2);
        assert_eq!(
            add_decoded(
                &mut within,
                vec![entry("a", "p1", "u1"), entry("a", "p1", "u2")]
            ),
            Err(twice.to_string())
        );

        // Decoded entries under the names recorded since.
        let mut names = DecodedNames::new(2);
        add_decoded(
            &mut names,
            vec![entry("a", "p1", "u1"), entry("a", "p2", "u2")],
        )
        .unwrap();
        add_decoded(&mut names, vec![entry("a", "p3", "u3")]).unwrap();
        let decoded = NameIndex::decoded(names);
        let mut index = decoded.clone();
        let mut built: NameIndex = [
            entry("a", "p1", "u1"),
            entry("a", "p2", "u2"),
            entry("a", "p3", "u3"),
        ]
        .into_iter()
        .collect();
        assert_eq!(index, built);
        let (a, p1, p2, p4) = (text("a"), text("p1"), text("p2"), text("p4"));
        for index in [&mut index, &mut built] {
            // Already the newest: nothing changes.
            index.record(ObjectKind::Pod, &a, &p2, &text("u2"));
            index.record(ObjectKind::Pod, &a, &p1, &text("u7"));
            index.record(ObjectKind::Pod, &a, &p1, &text("u8"));
            index.record(ObjectKind::Pod, &a, &p4, &text("u9"));
            index.record(ObjectKind::Sandbox, &a, &p1, &text("u10"));
        }
        fn uids<'a>(index: &'a NameIndex, kind: ObjectKind, name: &str) -> Option<Vec<&'a str>> {
            index
                .get(kind, "a", name)
                .map(|uids| uids.as_slice().iter().map(Text::as_str).collect())
        }
        for index in [&index, &built] {
            assert_eq!(
                uids(index, ObjectKind::Pod, "p1"),
                Some(vec!["u1", "u7", "u8"])
            );
            assert_eq!(uids(index, ObjectKind::Pod, "p2"), Some(vec!["u2"]));
            assert_eq!(uids(index, ObjectKind::Pod, "p3"), Some(vec!["u3"]));
            assert_eq!(uids(index, ObjectKind::Pod, "p4"), Some(vec!["u9"]));
            assert_eq!(uids(index, ObjectKind::Sandbox, "p1"), Some(vec!["u10"]));
            assert_eq!(uids(index, ObjectKind::Pod, "p5"), None);
            assert_eq!(index.len(), 5);
            assert_eq!(index.iter().count(), 5);
            assert_eq!(
                index.key_of(ObjectKind::Pod, "a", "p3").map(Text::as_str),
                Some("p3")
            );
        }
        assert_eq!(index, built);
        assert_ne!(index, decoded);
        // The copy the changes were made to shares the decoded entries, unchanged.
        assert_eq!(uids(&decoded, ObjectKind::Pod, "p1"), Some(vec!["u1"]));
        assert_eq!(uids(&decoded, ObjectKind::Pod, "p4"), None);
        assert_eq!(decoded.len(), 3);
        // Encoded alike, so decoded again alike.
        let encoded = |index: &NameIndex| {
            let map: StdHashMap<OwnedName, Vec<Text>> =
                rmp_serde::from_slice(&rmp_serde::to_vec(index).unwrap()).unwrap();
            map
        };
        assert_eq!(encoded(&index), encoded(&built));
    }

    #[test]
    fn the_index_encodes_as_one_map_of_kind_namespace_and_name() {
        let mut index = NameIndex::default();
        let mut expected: StdHashMap<OwnedName, Vec<Text>> = StdHashMap::new();
        for (i, kind) in ObjectKind::ALL.into_iter().enumerate() {
            let (ns, name) = (text("tenant-a"), text(&format!("agent-{}", i % 2)));
            let uid = text(&format!("uid-{i}"));
            index.record(kind, &ns, &name, &uid);
            expected.insert((kind, ns, name), vec![uid]);
        }
        let bytes = rmp_serde::to_vec(&index).unwrap();
        let decoded: StdHashMap<OwnedName, Vec<Text>> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded, expected);
        let older = rmp_serde::to_vec(&expected).unwrap();
        let read: NameIndex = rmp_serde::from_slice(&older).unwrap();
        assert_eq!(read, index);
    }
}
