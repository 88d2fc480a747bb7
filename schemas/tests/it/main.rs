//! The schemas crate's integration tests, in one test binary (one link instead of one per
//! file): conformance vectors (RFC 6962 Merkle trees, C2SP checkpoints), the CRDs' field
//! paths, export bundles, and the byte-level examples of docs/FORMAT.md.

mod bundle;
mod checkpoint_vectors;
mod crd_fields;
mod format_example;
mod merkle_vectors;
