//! The projection's records by uid: a decoded snapshot's, as decoded (see
//! [`super::decoded`]), under the records changed since.
//!
//! A state never decoded keeps every record in the persistent map. A decoded one keeps
//! the snapshot's records where they were decoded, shared by every copy of that state, and
//! a record changed since moves up into the map (a pointer copy: the record itself stays
//! shared until it changes). A uid removed since is marked removed in the map, so its
//! decoded record is hidden. Lookups look in the map first.
//!
//! A decoded record that moved up and then changed is held twice: its old state by the
//! table, which never changes, and its new one by the map. So once a quarter of the
//! decoded records have moved up, the writer folds the rest into the map and drops its
//! reference to the table, once in a process's life (an estimate from the insert rate a
//! microbenchmark measured, not timed: about 0.3 s of the writer's time for 700k records
//! left, during which checks go on reading the published view). So a long-running writer
//! holds at most a quarter of its decoded records twice.

use std::sync::Arc;

use schemas::Text;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::decoded::{DecodedTable, Keyed};
use super::{HashMap, SharedState};

/// A snapshot's records as decoded.
pub(super) type DecodedRecords = DecodedTable<(Text, SharedState)>;

/// A uid hashes as a string slice, as a lookup's does.
impl Keyed for (Text, SharedState) {
    fn key_hash(&self, hasher: &ahash::RandomState) -> u64 {
        hasher.hash_one(self.0.as_str())
    }

    fn same_key(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Adds one part's decoded records; a uid already added is refused (written twice).
pub(super) fn add_decoded(
    records: &mut DecodedRecords,
    part: Vec<(Text, SharedState)>,
) -> Result<(), String> {
    records.add(part, |(uid, _)| format!("uid {uid} is written twice"))
}

/// A decoded table is folded into the map once more than this fraction (one in so many)
/// of its records have moved up.
const FOLD_WHEN_ONE_IN: usize = 4;

/// Every uid's record.
#[derive(Debug, Clone, Default)]
pub(super) struct UidMap {
    /// The records of the snapshot this state was decoded from, never changed.
    decoded: Option<Arc<DecodedRecords>>,
    /// The records changed since the decode (every record, for a state never decoded);
    /// `None` for a decoded uid removed since.
    changed: HashMap<Text, Option<SharedState>>,
    /// How many uids have a record.
    len: usize,
    /// How many decoded records the map hides (moved up or removed).
    moved: usize,
}

impl UidMap {
    /// The map of a decoded snapshot's records.
    pub(super) fn decoded(records: DecodedRecords) -> UidMap {
        UidMap {
            len: records.len(),
            decoded: Some(Arc::new(records)),
            changed: HashMap::default(),
            moved: 0,
        }
    }

    /// Whether this map holds a snapshot's records as decoded.
    #[cfg(test)]
    pub(super) fn is_decoded(&self) -> bool {
        self.decoded.is_some()
    }

    fn decoded_entry(&self, uid: &str) -> Option<&(Text, SharedState)> {
        let decoded = self.decoded.as_ref()?;
        decoded.find(decoded.hash(uid), |(key, _)| key.as_str() == uid)
    }

    /// The uid as the map holds it, and its record.
    pub(super) fn get_key_value(&self, uid: &str) -> Option<(&Text, &SharedState)> {
        match self.changed.get_key_value(uid) {
            Some((key, Some(state))) => Some((key, state)),
            Some((_, None)) => None,
            None => self.decoded_entry(uid).map(|(key, state)| (key, state)),
        }
    }

    /// The record of a uid.
    pub(super) fn get(&self, uid: &str) -> Option<&SharedState> {
        self.get_key_value(uid).map(|(_, state)| state)
    }

    /// Whether a uid has a record.
    pub(super) fn contains_key(&self, uid: &str) -> bool {
        self.get(uid).is_some()
    }

    /// Whether the map hides a decoded record of `uid` from now on (it did not before).
    fn moves_up(&self, uid: &str) -> bool {
        !self.changed.contains_key(uid) && self.decoded_entry(uid).is_some()
    }

    /// Counts a decoded record the map now hides; folds the table into the map once
    /// enough of them are (see the module doc).
    fn moved_up(&mut self) {
        self.moved += 1;
        let Some(decoded) = &self.decoded else {
            return;
        };
        if self.moved <= decoded.len() / FOLD_WHEN_ONE_IN {
            return;
        }
        for (uid, state) in decoded.iter() {
            if !self.changed.contains_key(uid.as_str()) {
                self.changed.insert(uid.clone(), Some(state.clone()));
            }
        }
        self.changed.retain(|_, state| state.is_some());
        self.decoded = None;
        self.moved = 0;
    }

    /// Sets the record of a uid.
    pub(super) fn insert(&mut self, uid: Text, state: SharedState) {
        let moves_up = self.moves_up(uid.as_str());
        if !self.contains_key(uid.as_str()) {
            self.len += 1;
        }
        self.changed.insert(uid, Some(state));
        if moves_up {
            self.moved_up();
        }
    }

    /// The record of a uid, for changing (a decoded one moves up into the map first).
    pub(super) fn get_mut(&mut self, uid: &str) -> Option<&mut SharedState> {
        if !self.changed.contains_key(uid) {
            let (key, state) = self.decoded_entry(uid)?;
            let (key, state) = (key.clone(), state.clone());
            self.changed.insert(key, Some(state));
            self.moved_up();
        }
        self.changed.get_mut(uid)?.as_mut()
    }

    /// Removes the record of a uid.
    pub(super) fn remove(&mut self, uid: &str) {
        if !self.contains_key(uid) {
            return;
        }
        self.len -= 1;
        let moves_up = self.moves_up(uid);
        match self.decoded_entry(uid) {
            Some((key, _)) => {
                let key = key.clone();
                self.changed.insert(key, None);
            }
            None => {
                self.changed.remove(uid);
            }
        }
        if moves_up {
            self.moved_up();
        }
    }

    /// How many uids have a record.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every uid and its record (in no order).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Text, &SharedState)> {
        let decoded = self.decoded.iter().flat_map(|decoded| decoded.iter());
        decoded
            .filter(|(uid, _)| !self.changed.contains_key(uid.as_str()))
            .map(|(uid, state)| (uid, state))
            .chain(
                self.changed
                    .iter()
                    .filter_map(|(uid, state)| Some((uid, state.as_ref()?))),
            )
    }

    /// Every uid with a record (in no order).
    pub(super) fn keys(&self) -> impl Iterator<Item = &Text> {
        self.iter().map(|(uid, _)| uid)
    }

    /// Every record (in no order).
    pub(super) fn values(&self) -> impl Iterator<Item = &SharedState> {
        self.iter().map(|(_, state)| state)
    }
}

/// Equal maps hold the same records, however they hold them.
impl PartialEq for UidMap {
    fn eq(&self, other: &UidMap) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|(uid, state)| other.get(uid) == Some(state))
    }
}

impl Eq for UidMap {}

impl FromIterator<(Text, SharedState)> for UidMap {
    fn from_iter<I: IntoIterator<Item = (Text, SharedState)>>(records: I) -> Self {
        let mut map = UidMap::default();
        for (uid, state) in records {
            map.insert(uid, state);
        }
        map
    }
}

/// A map of uids to records, as the persistent map was encoded.
impl Serialize for UidMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (uid, state) in self.iter() {
            map.serialize_entry(uid, state)?;
        }
        map.end()
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
        let mut decoded = DecodedRecords::new(2);
        let entries = |uids: &[(&str, u64)]| {
            uids.iter()
                .map(|&(uid, seq)| (Text::from(uid), state(seq)))
                .collect::<Vec<_>>()
        };
        add_decoded(&mut decoded, entries(&[("a", 1), ("b", 2)])).unwrap();
        add_decoded(&mut decoded, entries(&[("c", 3)])).unwrap();
        assert_eq!(
            add_decoded(&mut decoded, entries(&[("d", 4), ("b", 5)])),
            Err("uid b is written twice".to_string())
        );
        let mut within = DecodedRecords::new(1);
        assert!(add_decoded(&mut within, entries(&[("x", 1), ("x", 2)])).is_err());

        let mut decoded = DecodedRecords::new(2);
        add_decoded(&mut decoded, entries(&[("a", 1), ("b", 2)])).unwrap();
        add_decoded(&mut decoded, entries(&[("c", 3)])).unwrap();
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
        let mut decoded = DecodedRecords::new(1);
        let part = uids.iter().enumerate();
        let part = part.map(|(k, uid)| (Text::from(uid.as_str()), state(k as u64)));
        add_decoded(&mut decoded, part.collect()).unwrap();
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
