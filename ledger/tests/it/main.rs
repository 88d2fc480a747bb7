//! The ledger crate's integration tests, in one test binary (one link instead of one per
//! file): crash consistency at every write point, a reader beside a live writer, and
//! replay properties.

mod crash_points;
mod live_reader;
mod replay_prop;
