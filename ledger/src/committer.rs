//! The long-lived thread that chains a large append's chunks and writes them to the store.
//!
//! A large append is derived on the writer's thread and chained (`chainer`) and written,
//! chunk by chunk, on a second one (see `Ledger::append_changes`). That second thread
//! used to be spawned for every append. A fresh thread starts with an empty allocator
//! heap, so every batch the store built (sled copies and splits its nodes on insert) came
//! from freshly mapped pages: the kernel zeroing them was over a quarter of the store
//! thread's time at batch 1024. One thread per ledger, kept for its life, reuses its heap
//! from append to append.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::chainer::{Chainer, DerivedChunk};
use crate::store::{Store, StoreError};

/// Chunks in flight between the deriving thread and the committing one.
const CHUNKS_IN_FLIGHT: usize = 2;

/// How writing an append's chunks ended, and the chain after the last chunk chained.
type Written = (Result<(), StoreError>, Chainer);

/// One append's chunks, in order, the chain they continue, and where to report how
/// writing them ended.
struct Job {
    store: Arc<dyn Store>,
    chainer: Chainer,
    chunks: Receiver<DerivedChunk>,
    done: SyncSender<Written>,
}

/// The committing thread of one ledger; started on the first large append, stopped (and
/// joined, so that no store outlives its ledger) when dropped.
#[derive(Default)]
pub(crate) struct Committer {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// One append's side of the committing thread: send its chunks, then [`Append::finish`].
pub(crate) struct Append {
    chunks: SyncSender<DerivedChunk>,
    done: Receiver<Written>,
}

impl Committer {
    /// Starts chaining one append's chunks after `chainer`'s head and writing them to
    /// `store`, in the order they are sent. After a chunk fails nothing more of that
    /// append is written: each chunk carries its own head record, so the store holds a
    /// prefix of the log whatever happens.
    pub(crate) fn begin(
        &mut self,
        store: Arc<dyn Store>,
        chainer: Chainer,
    ) -> Result<Append, StoreError> {
        let (chunks, chunk_receiver) = sync_channel(CHUNKS_IN_FLIGHT);
        let (done_sender, done) = sync_channel(1);
        let mut job = Job {
            store,
            chainer,
            chunks: chunk_receiver,
            done: done_sender,
        };
        // A thread that stopped (it never should: the store contains its own panics) is
        // replaced once.
        for _ in 0..2 {
            let jobs = match &self.jobs {
                Some(jobs) => jobs,
                None => self.start()?,
            };
            match jobs.send(job) {
                Ok(()) => return Ok(Append { chunks, done }),
                Err(returned) => {
                    job = returned.0;
                    self.stop();
                }
            }
        }
        Err(StoreError::Damaged(
            "the ledger's committing thread stopped".into(),
        ))
    }

    fn start(&mut self) -> Result<&SyncSender<Job>, StoreError> {
        let (jobs, receiver) = sync_channel::<Job>(1);
        let thread = std::thread::Builder::new()
            .name("claim-ledger-commit".into())
            .spawn(move || {
                for job in receiver {
                    let mut chainer = job.chainer;
                    let written = job
                        .chunks
                        .iter()
                        .try_for_each(|chunk| chainer.chain_and_commit(job.store.as_ref(), chunk));
                    // The append may have given up waiting (its own error came first).
                    let _ = job.done.send((written, chainer));
                }
            })
            .map_err(|e| {
                StoreError::Damaged(format!("cannot start the ledger's committing thread: {e}"))
            })?;
        self.thread = Some(thread);
        Ok(self.jobs.insert(jobs))
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Append {
    /// Hands the next chunk to the committing thread; fails once an earlier chunk failed
    /// (the reason comes from [`Append::finish`]).
    pub(crate) fn send(&self, chunk: DerivedChunk) -> Result<(), ()> {
        self.chunks.send(chunk).map_err(|_| ())
    }

    /// Waits until every chunk sent is written, or one failed; returns how it ended and
    /// the chain after the last chunk written (`None` if the thread stopped).
    pub(crate) fn finish(self) -> (Result<(), StoreError>, Option<Chainer>) {
        drop(self.chunks);
        match self.done.recv() {
            Ok((written, chainer)) => (written, Some(chainer)),
            Err(_) => (
                Err(StoreError::Damaged(
                    "the ledger's committing thread stopped".into(),
                )),
                None,
            ),
        }
    }
}
