//! The ledger crate's integration tests, in one test binary (one link instead of one per
//! file): crash consistency at every write point, and replay properties.

mod crash_points;
mod replay_prop;
