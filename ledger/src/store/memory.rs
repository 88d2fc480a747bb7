//! An in-memory store with an explicit durability model, for tests: the state a flush made
//! durable, and the batches committed since, which a crash keeps a prefix of (sled writes
//! batches to its log in commit order, so a crash may keep any prefix of the unflushed
//! ones, and no more).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Batch, Records, Store, StoreError};

/// An in-memory store. Clones share the same records.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every committed batch applied.
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What the last flush made durable.
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches committed after the last flush, in order.
    unflushed: Vec<Batch>,
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &Batch) {
    for (key, value) in batch.writes() {
        match value {
            Some(value) => map.insert(key.to_vec(), value.to_vec()),
            None => map.remove(key),
        };
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic elsewhere in a test must not hide the records from the assertions.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// How many committed batches a crash now could lose (committed after the last flush).
    pub fn unflushed_batches(&self) -> usize {
        self.read().unflushed.len()
    }

    /// A new, independent store holding what a crash now leaves: the durable state plus
    /// the first `keep` unflushed batches (at most all of them).
    pub fn after_crash(&self, keep: usize) -> MemoryStore {
        let state = self.read();
        let mut durable = state.durable.clone();
        for batch in state.unflushed.iter().take(keep) {
            apply(&mut durable, batch);
        }
        MemoryStore {
            state: Arc::new(RwLock::new(State {
                live: durable.clone(),
                durable,
                unflushed: Vec::new(),
            })),
        }
    }

    /// Sets a record directly, as damage or an attacker would (not a ledger write).
    pub fn tamper_insert(&self, key: &[u8], value: &[u8]) {
        let mut state = self.write();
        state.live.insert(key.to_vec(), value.to_vec());
        state.durable.insert(key.to_vec(), value.to_vec());
    }

    /// Removes a record directly, as damage or an attacker would.
    pub fn tamper_remove(&self, key: &[u8]) {
        let mut state = self.write();
        state.live.remove(key);
        state.durable.remove(key);
    }

    /// Every record, in key order.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.read()
            .live
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().live.get(key).cloned())
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        // Collected, so no lock is held while the caller reads other keys or commits.
        let mut records: Vec<_> = self
            .read()
            .live
            .range(from.to_vec()..=to.to_vec())
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        if reverse {
            records.reverse();
        }
        Box::new(records.into_iter())
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut state = self.write();
        apply(&mut state.live, &batch);
        state.unflushed.push(batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.write();
        let unflushed = std::mem::take(&mut state.unflushed);
        for batch in &unflushed {
            apply(&mut state.durable, batch);
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
