//! The formats crate's integration tests, in one test binary (one link instead of one per
//! file): CSV and CloudEvents exports over a real ledger, and export bundles.

mod bundles;
mod exports;
