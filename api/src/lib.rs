//! HTTP out, and the JSON shapes it shares with the offline CLI.
//!
//! Every answer the service gives — a decision, a state as of some point, a history, an
//! export line — is built here, so the CLI and the HTTP API can never disagree about
//! what an answer looks like.

pub mod views;

pub use views::{EntryLine, ObjectLine, StateView};

/// Everything that can go wrong producing an answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The ledger failed to read.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The answer could not be written.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// The answer could not be serialized (a bug).
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
}
