//! The simulator's integration tests, in one test binary (one link instead of one per
//! file): the real kube client and kubectl against the simulator over HTTP, its
//! controllers, garbage collection, faults and malformed input.

mod claim_reconcile;
mod common;
mod controllers;
mod faults;
mod gc;
mod kube_client;
mod kubectl;
mod local;
mod malformed;
