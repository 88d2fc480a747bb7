//! Kubernetes in: turns watch events into ledger appends.
//!
//! [`live::run`] watches a cluster through kube-runtime (the service's main job): each
//! watch stream is a state machine with a pure step function (`stream`, unit-tested
//! without a cluster), and [`Readiness`] (`readiness`) is read off the streams' states.
//! [`ingest()`] reads watch-event JSON lines (the shape `kubectl get --watch
//! --output-watch-events -o json` prints), normalizes each object with the same code the
//! live watcher uses, and appends in group-committed batches. A bad line is reported with
//! its line number and skipped; it never reaches the ledger.

pub mod ingest;
pub mod live;
mod readiness;
mod stream;

pub use ingest::{ingest, IngestOptions, IngestReport, LineError};
pub use live::{run, SharedLedger, WatchOptions};
pub use readiness::{
    Backlog, Readiness, StreamCondition, StreamStatus, WatchCounters, DEFAULT_MAX_BACKLOG,
};

/// Everything that can go wrong feeding the ledger.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The ledger refused or failed a write.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The input could not be read.
    #[error("cannot read input: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster does not serve the agent-sandbox resources in a version this build reads.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The writer's thread could not start, or panicked.
    #[error("the watcher's writer: {0}")]
    Writer(String),
}
