//! A snapshot's entries as decoded, found through a hash table of their positions.
//!
//! An open decodes a snapshot of about a million uids, as many names and a volume for
//! every PVC. Inserting each into a persistent map (what the writer needs, to publish a
//! copy of its state after every flush in `O(1)`) took about 40% of an open's CPU time. A
//! decoded state instead keeps the entries in the vectors they were decoded into, with a
//! table of 8-byte positions filled while the parts decode, and never changes them: it is
//! shared by every copy of that state. What changes after the decode is kept above it, in
//! persistent maps ([`super::names`], [`super::text_map`]).

use std::fmt;

/// An entry of a decoded table: what its key hashes to, and whether two entries have
/// the same key.
pub(super) trait Keyed {
    /// The hash of the entry's key, exactly as its lookups hash it.
    fn key_hash(&self, hasher: &ahash::RandomState) -> u64;

    /// Whether `other` has the same key.
    fn same_key(&self, other: &Self) -> bool;
}

/// Entries as decoded, part by part, and where each is.
pub(super) struct DecodedTable<T> {
    parts: Vec<Vec<T>>,
    /// Each entry's position (part, index), by the hash of its key.
    positions: hashbrown::HashTable<(u32, u32)>,
    /// Keyed by this process, so no one who names objects can choose keys that collide.
    hasher: ahash::RandomState,
    len: usize,
}

impl<T> fmt::Debug for DecodedTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Keyed> DecodedTable<T> {
    /// None yet; `parts` is how many parts of about equal size are to be added (the table
    /// is sized from the first, instead of grown by rehashing every key).
    pub(super) fn new(parts: usize) -> DecodedTable<T> {
        DecodedTable {
            parts: Vec::with_capacity(parts),
            positions: hashbrown::HashTable::new(),
            hasher: ahash::RandomState::new(),
            len: 0,
        }
    }

    fn at(parts: &[Vec<T>], (part, index): (u32, u32)) -> &T {
        &parts[part as usize][index as usize]
    }

    /// Adds one part's entries. A key already added is refused, as `twice` describes it.
    pub(super) fn add(
        &mut self,
        entries: Vec<T>,
        twice: impl FnOnce(&T) -> String,
    ) -> Result<(), String> {
        let too_many = || "a snapshot part holds more entries than a table can".to_string();
        let part = u32::try_from(self.parts.len()).map_err(|_| too_many())?;
        u32::try_from(entries.len()).map_err(|_| too_many())?;
        let expected = match self.parts.is_empty() {
            // A tenth more than the parts' share, for parts a little larger than the first.
            true => entries.len().saturating_mul(self.parts.capacity().max(1)) / 10 * 11,
            false => entries.len(),
        };
        self.parts.push(entries);
        let DecodedTable {
            parts,
            positions,
            hasher,
            len,
        } = self;
        let rehash = |&position: &(u32, u32)| Self::at(parts, position).key_hash(hasher);
        positions.reserve(expected, rehash);
        for (index, entry) in parts[part as usize].iter().enumerate() {
            let same = |&position: &(u32, u32)| Self::at(parts, position).same_key(entry);
            match positions.entry(entry.key_hash(hasher), same, rehash) {
                hashbrown::hash_table::Entry::Occupied(_) => return Err(twice(entry)),
                hashbrown::hash_table::Entry::Vacant(slot) => {
                    slot.insert((part, index as u32));
                }
            }
            *len += 1;
        }
        Ok(())
    }

    /// The hash a lookup of `key` gives [`DecodedTable::find`].
    pub(super) fn hash(&self, key: impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The entry whose key hashes to `hash` and that `is` accepts.
    pub(super) fn find(&self, hash: u64, is: impl Fn(&T) -> bool) -> Option<&T> {
        let position = self
            .positions
            .find(hash, |&position| is(Self::at(&self.parts, position)))?;
        Some(Self::at(&self.parts, *position))
    }

    /// How many entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in the order added.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().flatten()
    }
}
