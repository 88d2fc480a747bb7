//! The name index: every uid ever recorded under a (kind, namespace, name), oldest first.
//!
//! One map per kind, keyed by namespace and name: the kind is which map, not a byte of
//! every key, so an entry is 40 bytes where one map of `(kind, namespace, name)` keys took
//! 48. The index holds an entry for every object ever named, in map nodes that are about
//! half full, so each byte of an entry costs about two per object at cluster scale.
//! Lookups borrow the namespace and name (`&str`) instead of building a key.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use schemas::{ObjectKind, Text};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

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

/// Every uid ever recorded under a (kind, namespace, name), one map per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NameIndex {
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

impl NameIndex {
    /// The uids under a name, oldest first.
    pub(super) fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&NameUids> {
        self.by_kind[slot(kind)].get(&(namespace, name) as &dyn NamePair)
    }

    /// The name as the index holds it (shared with the record that named it first).
    pub(super) fn key_of(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&Text> {
        self.by_kind[slot(kind)]
            .get_key_value(&(namespace, name) as &dyn NamePair)
            .map(|(key, _)| &key.name)
    }

    /// Records `uid` under a name unless it is already the name's newest uid.
    pub(super) fn record(&mut self, kind: ObjectKind, namespace: &Text, name: &Text, uid: &Text) {
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

    /// Sets a name's uids (a decoded entry); returns what was there.
    pub(super) fn insert(
        &mut self,
        (kind, namespace, name): OwnedName,
        uids: NameUids,
    ) -> Option<NameUids> {
        self.by_kind[slot(kind)].insert(NameKey { namespace, name }, uids)
    }

    /// The number of names.
    pub(super) fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }

    /// Every name and its uids, a kind at a time (in no order within a kind).
    pub(super) fn iter(&self) -> impl Iterator<Item = (NameRef<'_>, &NameUids)> {
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
