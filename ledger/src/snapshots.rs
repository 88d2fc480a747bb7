//! Snapshots of the projection, written by a background thread.
//!
//! A snapshot is a cache (open verifies its hash against the chain; a full verify compares
//! it with replay), so it need not land in the same batch as its entry. Encoding and writing
//! one costs time proportional to every object the ledger has seen; doing it on a second
//! thread keeps that cost off the append path, which only pays for a clone of the
//! projection. [`SnapshotWriter::wait`] (called by `Ledger::flush`) returns once every
//! snapshot submitted before it is written.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::{keys, LedgerError, Snapshot};

enum Job {
    Write(Box<Snapshot>),
    Barrier(SyncSender<Option<String>>),
}

/// The background writer; joined when dropped.
pub(crate) struct SnapshotWriter {
    sender: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// A writer into `tree`.
    pub(crate) fn start(tree: sled::Tree) -> SnapshotWriter {
        // One snapshot queued at most: a second one waits for the first to be written.
        let (sender, receiver) = sync_channel::<Job>(1);
        let handle = std::thread::Builder::new()
            .name("ledger-snapshots".into())
            .spawn(move || write_loop(&tree, receiver))
            .ok();
        SnapshotWriter {
            sender: handle.is_some().then_some(sender),
            handle,
        }
    }

    /// Queues a snapshot; written inline if the thread could not be started.
    pub(crate) fn submit(&self, tree: &sled::Tree, snapshot: Snapshot) -> Result<(), LedgerError> {
        match &self.sender {
            Some(sender) => match sender.send(Job::Write(Box::new(snapshot))) {
                Ok(()) => Ok(()),
                Err(std::sync::mpsc::SendError(Job::Write(snapshot))) => write(tree, &snapshot),
                Err(_) => Ok(()),
            },
            None => write(tree, &snapshot),
        }
    }

    /// Returns once every snapshot submitted so far is written, with the first write error.
    pub(crate) fn wait(&self) -> Result<(), LedgerError> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let (ack, acked) = sync_channel(1);
        if sender.send(Job::Barrier(ack)).is_err() {
            return Err(LedgerError::Poisoned("the snapshot writer stopped".into()));
        }
        match acked.recv() {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(LedgerError::Poisoned(format!(
                "a snapshot write failed: {error}"
            ))),
            Err(_) => Err(LedgerError::Poisoned("the snapshot writer stopped".into())),
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Closing the channel ends the loop once queued snapshots are written; joining
        // releases the thread's handle on the database before the ledger is gone.
        self.sender.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn write_loop(tree: &sled::Tree, receiver: Receiver<Job>) {
    let mut failed: Option<String> = None;
    for job in receiver {
        match job {
            Job::Write(snapshot) => {
                if let Err(e) = write(tree, &snapshot) {
                    failed.get_or_insert(e.to_string());
                }
            }
            Job::Barrier(ack) => {
                let _ = ack.send(failed.take());
            }
        }
    }
}

fn write(tree: &sled::Tree, snapshot: &Snapshot) -> Result<(), LedgerError> {
    // Positional encoding: snapshots are an internal cache, and field names would double
    // their size.
    let bytes =
        rmp_serde::to_vec(snapshot).map_err(|e| schemas::SchemaError::Encode(e.to_string()))?;
    tree.insert(keys::seq_key(keys::SNAPSHOT, snapshot.seq), bytes)?;
    Ok(())
}
