//! The output formats of claim-ledger, shared by the HTTP API (`api`) and the CLI, so the
//! two can never disagree about what an answer looks like. No HTTP here: every failure is
//! a [`FormatError`], which `api` maps to a status code and the binary to an exit code.
//!
//! * [`views`]: the JSON views (entry lines, state) and the tables for people.
//! * [`csv_export`] and [`cloudevents`]: the other line formats, CSV rows and CloudEvents
//!   1.0 events.
//! * [`export`]: the choice of line format ([`ExportFormat`]) and the resolution of an
//!   export's range ([`ExportRange`]).
//! * [`bundle`]: export bundles (entries, signed checkpoint, proofs) for offline audit.
//! * [`selection`]: which object a history or a timeline is about ([`Selection`]).
//! * [`timeline`]: an object's history read as events for people.

pub mod bundle;
pub mod cloudevents;
pub mod csv_export;
pub mod export;
mod names;
pub mod selection;
pub mod timeline;
pub mod views;

pub use export::{ExportFormat, ExportRange};
pub use names::{change_name, record_name, transition_name};
pub use selection::{Selection, SelectionFields};
pub use views::{EntryLine, ObjectLine, StateJson, StateView};

/// Everything that can go wrong producing an answer. The variants are categories the
/// callers map: `api` to an HTTP status, the binary to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The request itself is wrong: no object named or several, an unknown kind or
    /// format, a uid of another kind than its field says, options that cannot go
    /// together. The caller's mistake (HTTP 400, exit 2).
    #[error("{0}")]
    InvalidRequest(String),
    /// The CloudEvents `source` is not a URI-reference (HTTP 422, exit 2).
    #[error("{0}")]
    InvalidSource(String),
    /// A seq, size or range beyond what the ledger (or the covering checkpoint) holds: a
    /// well-formed request for something that does not exist yet (HTTP 404, exit 2).
    #[error("{0}")]
    OutOfRange(String),
    /// No signed checkpoint covers the range of a bundle yet (HTTP 404, exit 2).
    #[error("{0}")]
    NoCheckpoint(String),
    /// The auditor's previous checkpoint is not a prefix of this ledger's tree: a fork or
    /// a rollback, or a previous checkpoint newer than the covering one (HTTP 409, exit 2).
    #[error("{0}")]
    InconsistentCheckpoint(String),
    /// The ledger failed to read, or is damaged (an entry missing inside its range is
    /// [`ledger::LedgerError::Corrupt`]): HTTP 500 (404 for its `OutOfRange`), exit 1 for
    /// an integrity failure.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The answer could not be written (HTTP 500, exit 2).
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// The answer could not be serialized (a bug; HTTP 500, exit 2).
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
}
