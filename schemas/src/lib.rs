//! Types and encodings shared by every claim-ledger crate, with no IO.
//!
//! * [`entry`]: the versioned ledger entry, its exact byte encoding and the chain hash rule.
//! * [`observed`]: one observed change of one object, reduced to the identity-relevant
//!   fields of the domain model (never whole objects: no env, no secrets, no pod specs).
//! * [`resources`]: typed agent-sandbox and core resources, as far as the ledger reads them.
//! * [`normalize`]: Kubernetes object JSON to an [`observed::ObjectChange`].
//! * [`reason`]: the decision vocabulary (reason codes, transitions).
//! * [`merkle`]: the RFC 6962 / RFC 9162 Merkle tree over the entries: hashes, compact
//!   ranges, inclusion and consistency proofs and their verification.
//! * [`checkpoint`]: C2SP `tlog-checkpoint` bodies in C2SP signed notes (Ed25519): keys,
//!   signing and verification.
//! * [`bundle`]: the compliance export bundle (manifest, entry lines, signed checkpoint,
//!   proofs) and its offline verifier.
//! * [`json`]: strict JSON reading (no repeated keys) for untrusted input.
//! * [`text`]: the shared immutable string of observed objects' fields.
//!
//! The byte layout is documented in `docs/FORMAT.md` at the workspace root.

pub mod bundle;
pub mod checkpoint;
pub mod entry;
pub mod json;
pub mod merkle;
pub mod normalize;
pub mod observed;
pub mod reason;
pub mod resources;
pub mod text;

pub use entry::{
    chain_hash, Change, CheckDenied, CheckDeniedOverflow, Entry, Hash, WatchGap, WatchScope,
    ENTRY_DOMAIN_TAG, FORMAT_VERSION,
};
pub use normalize::{normalize, WatchEventType};
pub use observed::{ChangeKind, KindFields, ObjectChange, ObjectKind, OwnerRef};
pub use reason::{BindingKind, Reason, Transition};
pub use text::Text;

/// Everything that can go wrong turning bytes or JSON into claim-ledger types.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The stored bytes are not a MessagePack entry of a known layout.
    #[error("undecodable entry: {0}")]
    Undecodable(String),
    /// The entry decodes but declares a format version this build cannot read.
    #[error("unsupported entry format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found in the entry.
        found: u16,
        /// The version this build writes and reads.
        supported: u16,
    },
    /// An entry could not be encoded (a bug: every entry type is encodable).
    #[error("cannot encode entry: {0}")]
    Encode(String),
    /// A Kubernetes object is malformed or lacks a field the ledger needs.
    #[error("invalid {kind} object: {detail}")]
    InvalidObject {
        /// The object's kind, or `object` when even that is unknown.
        kind: String,
        /// What is wrong, naming the field.
        detail: String,
    },
}
