//! The api crate's integration tests, in one test binary (one link instead of one per
//! file): the HTTP API in process and over real sockets. `descriptors` stays a binary of
//! its own: it counts the process's open file descriptors and installs a global log
//! subscriber, which other tests running beside it would disturb.

mod adversarial;
mod common;
mod connections;
mod endpoints;
mod fixtures_http;
mod proofs;
mod security;
