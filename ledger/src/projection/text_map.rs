//! The projection's maps keyed by a string (records by uid, volumes by name): a decoded
//! snapshot's entries, as decoded (see [`super::decoded`]), under the entries changed
//! since.
//!
//! A state never decoded keeps every entry in the persistent map. A decoded one keeps the
//! snapshot's entries where they were decoded, shared by every copy of that state, and an
//! entry changed since moves up into the map (for a record, a pointer copy: the record
//! itself stays shared until it changes). A key removed since is marked removed in the
//! map, so its decoded entry is hidden. Lookups look in the map first.
//!
//! A decoded entry that moved up and then changed is held twice: its old value by the
//! table, which never changes, and its new one by the map. So once a quarter of the
//! decoded entries have moved up, the writer folds the rest into the map and drops its
//! reference to the table, once in a process's life: the append that folds the 600k
//! records left of 800k took 0.48-0.51 s against a median of 22-24 ms (`cargo bench
//! --bench memory`, phase 3, 2 cores); checks go on reading the published view meanwhile.
//! So a long-running writer holds at most a quarter of its decoded entries twice.

use std::sync::Arc;

use schemas::Text;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::decoded::{DecodedTable, Keyed};
use super::{HashMap, SharedState, VolumeRecord};

/// A snapshot's entries keyed by a string, as decoded.
pub(super) type DecodedEntries<V> = DecodedTable<(Text, V)>;

/// The records of every uid.
pub(super) type UidMap = TextMap<SharedState>;

/// Who first held each workspace volume, by volume name.
pub(super) type VolumeMap = TextMap<VolumeRecord>;

/// A key hashes as a string slice, as a lookup's does.
impl<V> Keyed for (Text, V) {
    fn key_hash(&self, hasher: &ahash::RandomState) -> u64 {
        hasher.hash_one(self.0.as_str())
    }

    fn same_key(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Adds one part's decoded entries; a key already added is refused, as `what` (the kind
/// of key: "uid", "volume") written twice.
pub(super) fn add_decoded<V>(
    entries: &mut DecodedEntries<V>,
    part: Vec<(Text, V)>,
    what: &str,
) -> Result<(), String> {
    entries.add(part, |(key, _)| format!("{what} {key} is written twice"))
}

/// A decoded table is folded into the map once more than this fraction (one in so many)
/// of its records have moved up.
const FOLD_WHEN_ONE_IN: usize = 4;

/// Entries keyed by a string.
#[derive(Debug, Clone)]
pub(super) struct TextMap<V> {
    /// The entries of the snapshot this state was decoded from, never changed.
    decoded: Option<Arc<DecodedEntries<V>>>,
    /// The entries changed since the decode (every entry, for a state never decoded);
    /// `None` for a decoded key removed since.
    changed: HashMap<Text, Option<V>>,
    /// How many keys have an entry.
    len: usize,
    /// How many decoded entries the map hides (moved up or removed).
    moved: usize,
}

impl<V> Default for TextMap<V> {
    fn default() -> Self {
        TextMap {
            decoded: None,
            changed: HashMap::default(),
            len: 0,
            moved: 0,
        }
    }
}

impl<V: Clone> TextMap<V> {
    /// The map of a decoded snapshot's entries.
    pub(super) fn decoded(entries: DecodedEntries<V>) -> TextMap<V> {
        TextMap {
            len: entries.len(),
            decoded: Some(Arc::new(entries)),
            changed: HashMap::default(),
            moved: 0,
        }
    }

    /// Whether this map holds a snapshot's entries as decoded.
    #[cfg(test)]
    pub(super) fn is_decoded(&self) -> bool {
        self.decoded.is_some()
    }

    fn decoded_entry(&self, key: &str) -> Option<&(Text, V)> {
        let decoded = self.decoded.as_ref()?;
        decoded.find(decoded.hash(key), |(stored, _)| stored.as_str() == key)
    }

    /// The key as the map holds it, and its entry.
    pub(super) fn get_key_value(&self, key: &str) -> Option<(&Text, &V)> {
        match self.changed.get_key_value(key) {
            Some((stored, Some(entry))) => Some((stored, entry)),
            Some((_, None)) => None,
            None => self
                .decoded_entry(key)
                .map(|(stored, entry)| (stored, entry)),
        }
    }

    /// The entry of a key.
    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.get_key_value(key).map(|(_, entry)| entry)
    }

    /// Whether a key has an entry.
    #[cfg(test)]
    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Whether `key` has an entry, and whether that entry is a decoded one the map does
    /// not hide yet (a change to it moves it up).
    fn presence(&self, key: &str) -> (bool, bool) {
        match self.changed.get(key) {
            Some(entry) => (entry.is_some(), false),
            None => {
                let decoded = self.decoded_entry(key).is_some();
                (decoded, decoded)
            }
        }
    }

    /// Counts a decoded entry the map now hides; folds the table into the map once
    /// enough of them are (see the module doc).
    fn moved_up(&mut self) {
        self.moved += 1;
        let Some(decoded) = &self.decoded else {
            return;
        };
        if self.moved <= decoded.len() / FOLD_WHEN_ONE_IN {
            return;
        }
        for (key, entry) in decoded.iter() {
            if !self.changed.contains_key(key.as_str()) {
                self.changed.insert(key.clone(), Some(entry.clone()));
            }
        }
        self.changed.retain(|_, entry| entry.is_some());
        self.decoded = None;
        self.moved = 0;
    }

    /// Sets the entry of a key.
    pub(super) fn insert(&mut self, key: Text, entry: V) {
        let (present, moves_up) = self.presence(key.as_str());
        if !present {
            self.len += 1;
        }
        self.changed.insert(key, Some(entry));
        if moves_up {
            self.moved_up();
        }
    }

    /// The entry of a key, for changing (a decoded one moves up into the map first).
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if !self.changed.contains_key(key) {
            let (stored, entry) = self.decoded_entry(key)?;
            let (stored, entry) = (stored.clone(), entry.clone());
            self.changed.insert(stored, Some(entry));
            self.moved_up();
        }
        self.changed.get_mut(key)?.as_mut()
    }

    /// The entry of a key, for changing; a new one (the default) if it has none.
    pub(super) fn get_or_default_mut(&mut self, key: &Text) -> &mut V
    where
        V: Default,
    {
        // Absent: not decoded, or decoded and already hidden, so nothing moves up.
        if !self.presence(key.as_str()).0 {
            self.len += 1;
            self.changed.insert(key.clone(), Some(V::default()));
        }
        self.get_mut(key.as_str())
            .expect("an entry, inserted just above if it had none")
    }

    /// Removes the entry of a key.
    pub(super) fn remove(&mut self, key: &str) {
        let (present, moves_up) = self.presence(key);
        if !present {
            return;
        }
        self.len -= 1;
        // A decoded entry stays hidden by a mark; one only in the map just goes.
        match self.decoded_entry(key) {
            Some((stored, _)) => {
                let stored = stored.clone();
                self.changed.insert(stored, None);
            }
            None => {
                self.changed.remove(key);
            }
        }
        if moves_up {
            self.moved_up();
        }
    }

    /// How many keys have an entry.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every key and its entry (in no order).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Text, &V)> {
        let decoded = self.decoded.iter().flat_map(|decoded| decoded.iter());
        decoded
            .filter(|(key, _)| !self.changed.contains_key(key.as_str()))
            .map(|(key, entry)| (key, entry))
            .chain(
                self.changed
                    .iter()
                    .filter_map(|(key, entry)| Some((key, entry.as_ref()?))),
            )
    }

    /// Every key (in no order).
    pub(super) fn keys(&self) -> impl Iterator<Item = &Text> {
        self.iter().map(|(key, _)| key)
    }

    /// Every entry (in no order).
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, entry)| entry)
    }
}

/// Equal maps hold the same entries, however they hold them.
impl<V: Clone + PartialEq> PartialEq for TextMap<V> {
    fn eq(&self, other: &TextMap<V>) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|(key, entry)| other.get(key) == Some(entry))
    }
}

impl<V: Clone + Eq> Eq for TextMap<V> {}

impl<V: Clone> FromIterator<(Text, V)> for TextMap<V> {
    fn from_iter<I: IntoIterator<Item = (Text, V)>>(records: I) -> Self {
        let mut map = TextMap::default();
        for (key, entry) in records {
            map.insert(key, entry);
        }
        map
    }
}

/// A map of keys to entries, as the persistent map was encoded.
impl<V: Clone + Serialize> Serialize for TextMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (key, entry) in self.iter() {
            map.serialize_entry(key, entry)?;
        }
        map.end()
    }
}

/// Decoded from a map of keys to entries, as the persistent map was encoded.
impl<'de, V: Clone + Deserialize<'de>> Deserialize<'de> for TextMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Clone + Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = TextMap<V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of keys to entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextMap<V>, A::Error> {
                let mut entries = TextMap::default();
                while let Some((key, entry)) = map.next_entry::<Text, V>()? {
                    entries.insert(key, entry);
                }
                Ok(entries)
            }
        }
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::UidState;

    fn state(first_seq: u64) -> SharedState {
        let mut state = UidState::default();
        state.history.push(first_seq);
        SharedState::new(state)
    }

    #[test]
    fn a_decoded_map_and_a_map_of_the_same_changes_agree() {
        let mut decoded = DecodedEntries::<SharedState>::new(2);
        let entries = |uids: &[(&str, u64)]| {
            uids.iter()
                .map(|&(uid, seq)| (Text::from(uid), state(seq)))
                .collect::<Vec<_>>()
        };
        add_decoded(&mut decoded, entries(&[("a", 1), ("b", 2)]), "uid").unwrap();
        add_decoded(&mut decoded, entries(&[("c", 3)]), "uid").unwrap();
        assert_eq!(
            add_decoded(&mut decoded, entries(&[("d", 4), ("b", 5)]), "uid"),
            Err("uid b is written twice".to_string())
        );
        let mut within = DecodedEntries::<SharedState>::new(1);
        assert!(add_decoded(&mut within, entries(&[("x", 1), ("x", 2)]), "uid").is_err());

        let mut decoded = DecodedEntries::<SharedState>::new(2);
        add_decoded(&mut decoded, entries(&[("a", 1), ("b", 2)]), "uid").unwrap();
        add_decoded(&mut decoded, entries(&[("c", 3)]), "uid").unwrap();
        let original = UidMap::decoded(decoded);
        let mut from_decoded = original.clone();
        let mut built: UidMap = entries(&[("a", 1), ("b", 2), ("c", 3)])
            .into_iter()
            .collect();
        assert!(from_decoded.is_decoded() && !built.is_decoded());
        assert_eq!(from_decoded, built);
        for map in [&mut from_decoded, &mut built] {
            SharedState::make_mut(map.get_mut("a").unwrap())
                .history
                .push(10);
            map.remove("b");
            map.remove("b");
            map.remove("nobody");
            map.insert(Text::from("d"), state(11));
            map.insert(Text::from("c"), state(12));
            // Removed, then recorded again.
            map.insert(Text::from("b"), state(13));
            map.remove("b");
            assert!(map.get_mut("b").is_none());
        }
        for map in [&from_decoded, &built] {
            assert_eq!(map.len(), 3);
            assert_eq!(map.iter().count(), 3);
            assert!(!map.contains_key("b"));
            assert_eq!(
                map.get("a").unwrap().history.iter().collect::<Vec<_>>(),
                [1, 10]
            );
            assert_eq!(
                map.get("c").unwrap().history.iter().collect::<Vec<_>>(),
                [12]
            );
            assert_eq!(map.get_key_value("d").unwrap().0.as_str(), "d");
        }
        assert_eq!(from_decoded, built);
        // The decoded records themselves never change: the copy made before still has them.
        assert_eq!(original.len(), 3);
        assert_eq!(
            original
                .get("a")
                .unwrap()
                .history
                .iter()
                .collect::<Vec<_>>(),
            [1]
        );
        assert!(original.contains_key("b") && !original.contains_key("d"));
        assert_ne!(original, from_decoded);
        assert_eq!(
            rmp_serde::to_vec(&from_decoded).unwrap().len(),
            rmp_serde::to_vec(&built).unwrap().len()
        );
    }

    #[test]
    fn a_decoded_table_is_folded_into_the_map_once_a_quarter_of_it_moved_up() {
        let uids: Vec<String> = (0..40).map(|k| format!("uid-{k}")).collect();
        let mut decoded = DecodedEntries::<SharedState>::new(1);
        let part = uids.iter().enumerate();
        let part = part.map(|(k, uid)| (Text::from(uid.as_str()), state(k as u64)));
        add_decoded(&mut decoded, part.collect(), "uid").unwrap();
        let original = UidMap::decoded(decoded);
        let mut map = original.clone();
        let mut built: UidMap = original
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        // Ten records hidden: changed, removed, replaced; moving one up twice counts once.
        for (k, uid) in uids.iter().enumerate().take(10) {
            for map in [&mut map, &mut built] {
                match k % 3 {
                    0 => SharedState::make_mut(map.get_mut(uid).unwrap())
                        .history
                        .push(100),
                    1 => map.remove(uid),
                    _ => map.insert(Text::from(uid.as_str()), state(200)),
                }
                if k == 0 {
                    SharedState::make_mut(map.get_mut(uid).unwrap())
                        .history
                        .push(101);
                }
            }
        }
        assert!(
            map.is_decoded(),
            "a quarter of 40 moved up: not more than it"
        );
        assert_eq!(map, built);
        for map in [&mut map, &mut built] {
            map.remove(&uids[10]);
        }
        assert!(!map.is_decoded(), "folded");
        assert_eq!(map, built);
        assert_eq!(map.len(), 36);
        assert_eq!(map.changed.len(), 36, "no removed mark is left");
        assert_eq!(
            map.get(&uids[0])
                .unwrap()
                .history
                .iter()
                .collect::<Vec<_>>(),
            [0, 100, 101]
        );
        // Copies made before still read the table.
        assert!(original.is_decoded() && original.len() == 40);
    }
}
