//! The `claim-ledger` package's integration tests, in one test binary: each module was
//! a test binary of its own, and linking kube, axum and tokio into each of them dominated
//! the build. The binary under test is `env!("CARGO_BIN_EXE_claim-ledger")`; `support`
//! holds what several modules share, and `adversarial_table` loads the one table of
//! adversarial cases (`tests/data/adversarial.json`) that several harnesses run.
//!
//! Run one module with `cargo test --test it MODULE::` (for example
//! `cargo test --test it tamper::`).

#[path = "../data/adversarial.rs"]
mod adversarial_table;
mod support;

mod blackbox_api;
mod cli;
mod convergence;
mod crash;
mod demo;
mod deploy;
mod export;
mod fixtures;
mod hardening;
mod operations;
mod postgres;
mod replicas;
mod scenarios;
mod storage;
mod tamper;
mod ui;
mod watch_sim;
