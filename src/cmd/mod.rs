//! One module per command: each holds the command's own flags and its `run`, which does
//! the command's work through the library crates and returns a
//! [`crate::error::CommandError`] for `main` to turn into an exit code.

pub mod check;
#[cfg(feature = "sim")]
pub mod demo;
pub mod export;
pub mod history;
pub mod ingest;
pub mod keygen;
pub mod migrate;
#[cfg(feature = "sim")]
pub mod scenario;
pub mod serve;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod verify;
pub mod verify_export;
