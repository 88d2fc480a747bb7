//! Freeing superseded projections off the writer's thread.
//!
//! The writer publishes a new view after every durable flush and lets go of the one
//! before. The maps are persistent, so what that old projection owns alone is every node
//! a batch copied before changing it: thousands of blocks per batch of 1024 entries, whose
//! freeing cost the writer about 5% of an `ingest` at cluster scale. When the writer held
//! the last reference, the projection is handed to a thread that only drops what it
//! receives. Only the projection goes there: it owns memory and nothing else, so no file,
//! lock or connection outlives the ledger that held it.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::projection::Projection;

/// Projections waiting to be freed: past this many the writer frees them itself (the
/// drop thread is behind, and memory must not grow for it).
const WAITING: usize = 16;

fn dropper() -> Option<&'static Mutex<SyncSender<Projection>>> {
    static DROPPER: OnceLock<Option<Mutex<SyncSender<Projection>>>> = OnceLock::new();
    DROPPER
        .get_or_init(|| {
            let (sender, receiver) = sync_channel::<Projection>(WAITING);
            std::thread::Builder::new()
                .name("claim-ledger-reclaim".into())
                .spawn(move || receiver.into_iter().for_each(drop))
                .ok()
                .map(|_| Mutex::new(sender))
        })
        .as_ref()
}

/// Frees `projection` on the drop thread when there is room, else here.
pub(crate) fn later(projection: Projection) {
    let Some(dropper) = dropper() else { return };
    let sender = dropper.lock().unwrap_or_else(PoisonError::into_inner);
    match sender.try_send(projection) {
        Ok(()) => {}
        Err(TrySendError::Full(projection) | TrySendError::Disconnected(projection)) => {
            drop(sender);
            drop(projection);
        }
    }
}
