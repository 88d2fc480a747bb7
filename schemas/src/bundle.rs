//! The compliance export bundle: its four files' types and the offline verifier.
//!
//! A bundle lets an auditor check a range of ledger entries `from_seq..=to_seq` offline,
//! trusting neither the service nor its operator: only the Ed25519 verifier keys of the
//! log. It is four text files (the caller reads them; this module does no IO):
//!
//! * [`MANIFEST_FILE`] (`manifest.json`, a [`Manifest`]): what the bundle claims to hold;
//! * [`ENTRIES_FILE`] (`entries.jsonl`, one [`BundleEntryLine`] per line): the entries
//!   `from_seq..=to_seq` in order, each with its chain hash, the decoded entry and the exact
//!   stored bytes (standard base64);
//! * [`CHECKPOINT_FILE`] (`checkpoint`): a C2SP signed note whose text is a
//!   `tlog-checkpoint` body (see [`crate::checkpoint`]) committing to the RFC 6962 tree of
//!   the first `tree_size` entries, leaf `i` = `merkle::leaf_hash(bytes of seq i + 1)`;
//! * [`PROOFS_FILE`] (`proofs.json`, a [`Proofs`]): the inclusion proofs of the first and
//!   last entry in that tree, and optionally a consistency proof from an auditor's
//!   previous checkpoint.
//!
//! # What [`verify_bundle`] checks, in order
//!
//! The first failure is reported ([`BundleFailure`]), naming the first offending seq:
//!
//! 1. the checkpoint parses and carries a valid signature by a trusted key (signatures by
//!    unknown keys are ignored; a trusted key's bad signature rejects it);
//! 2. the manifest parses (format [`BUNDLE_FORMAT`], `1 <= from_seq <= to_seq`,
//!    `entries = to_seq - from_seq + 1`), then the proofs;
//! 3. origin and tree size agree between manifest, checkpoint and proofs, and
//!    `to_seq <= tree_size`;
//! 4. each line of `entries.jsonl`, in order: it parses; its `seq` is the one expected at
//!    its position (else `seq_gap` or `out_of_order`, naming the expected seq); its bytes
//!    decode; the line's `seq`, `leaf_index`, `prev_hash` and `entry` agree with the decoded
//!    bytes, and `hash` is their recomputed chain hash (else `entry_altered`); its
//!    `prev_hash` is the previous line's `hash` (64 zeros for seq 1; else `chain_broken`);
//!    then the count (`truncated`, `trailing_entry`);
//! 5. the first and last entries' leaves are in the checkpoint's tree (`not_included`);
//!    because the chain links every entry between them to the last one, this covers the
//!    whole range;
//! 6. when the bundle holds the whole tree, the root recomputed from every leaf is the
//!    checkpoint's (`root_mismatch`);
//! 7. with a previous checkpoint: it is trusted and of the same origin
//!    (`previous_untrusted`), not larger, and the consistency proof shows the bundle's tree
//!    extends it (`inconsistent`: a fork or a rollback).
//!
//! Nothing here panics on any input: sizes and seqs are checked arithmetic, and the Merkle
//! verifiers take slices.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, SignedNote, VerifierKey};
use crate::merkle::{self, Hash32, VerifyError, EMPTY_ROOT};
use crate::{chain_hash, Entry, Hash};

/// The `format` of every manifest this build writes and reads.
pub const BUNDLE_FORMAT: &str = "claim-ledger-export-bundle/1";

/// The manifest's file name in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The entries' file name in a bundle.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The signed checkpoint's file name in a bundle.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The proofs' file name in a bundle.
pub const PROOFS_FILE: &str = "proofs.json";

/// How failures name a previous checkpoint given beside the bundle (it is not a bundle file).
const PREVIOUS_CHECKPOINT: &str = "previous checkpoint";

// ---------------------------------------------------------------------------------------
// Hex hashes.

/// Lowercase hex of a SHA-256 hash (64 digits).
pub fn hash32_to_hex(hash: &Hash32) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Parses exactly 64 hex digits (either case) into a SHA-256 hash; `None` for anything
/// else, signs and whitespace included.
pub fn hash32_from_hex(text: &str) -> Option<Hash32> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Serde (de)serialization of a `Vec<Hash32>` as a list of 64-digit hex strings, for
/// `#[serde(with = "schemas::bundle::hex_hashes")]`. A wrong length or a
/// non-hex character is a deserialization error.
pub mod hex_hashes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use super::{hash32_from_hex, hash32_to_hex};
    use crate::merkle::Hash32;

    /// Writes the hashes as a list of lowercase hex strings.
    pub fn serialize<S: Serializer>(hashes: &[Hash32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(hashes.len()))?;
        for hash in hashes {
            seq.serialize_element(&hash32_to_hex(hash))?;
        }
        seq.end()
    }

    /// Reads a list of 64-digit hex strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Hash32>, D::Error> {
        deserializer.deserialize_seq(ListVisitor)
    }

    struct HexHash(Hash32);

    impl<'de> serde::Deserialize<'de> for HexHash {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_str(HashVisitor)
        }
    }

    struct HashVisitor;

    impl Visitor<'_> for HashVisitor {
        type Value = HexHash;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a SHA-256 hash as 64 hex digits")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<HexHash, E> {
            hash32_from_hex(v)
                .map(HexHash)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<Hash32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of SHA-256 hashes as 64 hex digits each")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Hash32>, A::Error> {
            // No capacity from the size hint: it comes from the input.
            let mut out = Vec::new();
            while let Some(HexHash(hash)) = seq.next_element()? {
                out.push(hash);
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The files.

/// `manifest.json`: what a bundle claims to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The log's origin, as in its checkpoints.
    pub origin: String,
    /// The first seq in `entries.jsonl` (at least 1).
    pub from_seq: u64,
    /// The last seq in `entries.jsonl` (at least `from_seq`, at most `tree_size`).
    pub to_seq: u64,
    /// The number of entries, `to_seq - from_seq + 1`.
    pub entries: u64,
    /// The size of the tree the checkpoint commits to.
    pub tree_size: u64,
    /// When the bundle was made (RFC 3339); informative only, nothing signs it.
    pub created_at: DateTime<Utc>,
}

impl Manifest {
    /// The manifest of entries `from_seq..=to_seq` against a checkpoint of `tree_size`.
    /// `entries` saturates for a range the verifier would refuse anyway.
    pub fn new(
        origin: impl Into<String>,
        from_seq: u64,
        to_seq: u64,
        tree_size: u64,
        created_at: DateTime<Utc>,
    ) -> Manifest {
        Manifest {
            format: BUNDLE_FORMAT.to_owned(),
            origin: origin.into(),
            from_seq,
            to_seq,
            entries: to_seq.saturating_sub(from_seq).saturating_add(1),
            tree_size,
            created_at,
        }
    }
}

/// One line of `entries.jsonl`: the ledger's export line, with the entry's leaf index in
/// the Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntryLine {
    /// The entry's seq.
    pub seq: u64,
    /// Its leaf in the Merkle tree: `seq - 1`.
    pub leaf_index: u64,
    /// Its blake3 chain hash.
    pub hash: Hash,
    /// The previous entry's chain hash (64 zeros for seq 1).
    pub prev_hash: Hash,
    /// The decoded entry (`serde_json::to_value(&Entry)`), for people; the verifier checks
    /// that it is exactly what `bytes` decode to.
    pub entry: serde_json::Value,
    /// The exact stored entry bytes, standard base64: what both hashes cover.
    pub bytes: String,
}

impl BundleEntryLine {
    /// The line of a stored entry: its stored chain `hash` (not recomputed, so that a
    /// corrupt store shows in the bundle), the decoded entry and its exact stored bytes.
    /// `leaf_index` saturates at 0 for the invalid seq 0.
    pub fn new(hash: Hash, entry: &Entry, bytes: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(BundleEntryLine {
            seq: entry.seq,
            leaf_index: entry.seq.saturating_sub(1),
            hash,
            prev_hash: entry.prev_hash,
            entry: serde_json::to_value(entry)?,
            bytes: B64.encode(bytes),
        })
    }

    /// The line as one line of JSON, final newline included.
    pub fn to_json_line(&self) -> String {
        // A struct of strings, integers and a JSON value always serializes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// The stored bytes, decoded from base64.
    pub fn decode_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        B64.decode(&self.bytes)
    }
}

/// An RFC 9162 inclusion proof (audit path) of one leaf in a tree, as
/// [`merkle::inclusion_proof`] returns it. JSON:
/// `{"leaf_index": u64, "tree_size": u64, "hashes": ["<64 hex>", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The leaf's index (an entry's `seq - 1`).
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// The audit path, from the leaf's sibling up.
    #[serde(with = "hex_hashes")]
    pub hashes: Vec<Hash32>,
}

impl InclusionProof {
    /// A proof from its parts.
    pub fn new(leaf_index: u64, tree_size: u64, hashes: Vec<Hash32>) -> Self {
        InclusionProof {
            leaf_index,
            tree_size,
            hashes,
        }
    }

    /// Whether `leaf_hash` is leaf `leaf_index` of the tree of `tree_size` leaves with
    /// root `root` ([`merkle::verify_inclusion`]).
    pub fn verify(&self, leaf_hash: &Hash32, root: &Hash32) -> Result<(), VerifyError> {
        merkle::verify_inclusion(
            leaf_hash,
            self.leaf_index,
            self.tree_size,
            &self.hashes,
            root,
        )
    }
}

/// An RFC 9162 consistency proof between two tree sizes, as [`merkle::consistency_proof`]
/// returns it. JSON: `{"from_size": u64, "to_size": u64, "hashes": ["<64 hex>", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The older (smaller) tree size.
    pub from_size: u64,
    /// The newer tree size.
    pub to_size: u64,
    /// The proof, bottom-up as the verifier consumes it.
    #[serde(with = "hex_hashes")]
    pub hashes: Vec<Hash32>,
}

impl ConsistencyProof {
    /// A proof from its parts.
    pub fn new(from_size: u64, to_size: u64, hashes: Vec<Hash32>) -> Self {
        ConsistencyProof {
            from_size,
            to_size,
            hashes,
        }
    }

    /// Whether the tree of `from_size` leaves with root `old_root` is a prefix of the tree
    /// of `to_size` leaves with root `new_root` ([`merkle::verify_consistency`]).
    pub fn verify(&self, old_root: &Hash32, new_root: &Hash32) -> Result<(), VerifyError> {
        merkle::verify_consistency(
            self.from_size,
            self.to_size,
            old_root,
            new_root,
            &self.hashes,
        )
    }
}

/// `proofs.json`: the first and last entries' inclusion in the checkpoint's tree, and the
/// consistency of that tree with an auditor's previous checkpoint, when the bundle was made
/// against one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The inclusion proof of leaf `from_seq - 1`.
    pub first: InclusionProof,
    /// The inclusion proof of leaf `to_seq - 1`.
    pub last: InclusionProof,
    /// The consistency proof from the previous checkpoint's size to `tree_size` (`null`
    /// when the bundle was made without one).
    pub consistency: Option<ConsistencyProof>,
}

/// The four files of a bundle, as text.
#[derive(Debug, Clone, Copy)]
pub struct BundleParts<'a> {
    /// `manifest.json`.
    pub manifest: &'a str,
    /// `entries.jsonl`.
    pub entries: &'a str,
    /// `checkpoint`.
    pub checkpoint: &'a str,
    /// `proofs.json`.
    pub proofs: &'a str,
}

// ---------------------------------------------------------------------------------------
// Results.

/// What a bundle that verifies proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSummary {
    /// The log's origin.
    pub origin: String,
    /// The first seq verified.
    pub from_seq: u64,
    /// The last seq verified.
    pub to_seq: u64,
    /// The number of entries verified.
    pub entries: u64,
    /// The size of the signed tree they are in.
    pub tree_size: u64,
    /// That tree's root, hex.
    pub root: String,
    /// The first entry's chain hash, hex.
    pub first_hash: String,
    /// The last entry's chain hash, hex: a watermark to chain a later export to.
    pub last_hash: String,
    /// The trusted keys whose signatures verified, in note order.
    pub signed_by: Vec<String>,
    /// The size of the previous checkpoint the tree was shown consistent with, if one was
    /// given.
    pub previous_size: Option<u64>,
}

impl BundleSummary {
    /// One line for people, e.g. `ok: entries 1..=500 (500) of origin "x" are in the tree
    /// of size 512 (root ab12cd34…) signed by key "k"; consistent with the previous
    /// checkpoint of size 300`.
    pub fn one_line(&self) -> String {
        let short_root = self.root.get(..8).unwrap_or(&self.root);
        let keys = self
            .signed_by
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let plural = if self.signed_by.len() == 1 { "" } else { "s" };
        let mut line = format!(
            "ok: entries {}..={} ({}) of origin {:?} are in the tree of size {} (root {short_root}\u{2026}) signed by key{plural} {keys}",
            self.from_seq, self.to_seq, self.entries, self.origin, self.tree_size
        );
        if let Some(size) = self.previous_size {
            line.push_str(&format!(
                "; consistent with the previous checkpoint of size {size}"
            ));
        }
        line
    }
}

/// Why a bundle does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleFailureKind {
    /// A file (or the previous checkpoint) does not parse or breaks its format's rules; the
    /// detail names the file, and the line for `entries.jsonl`.
    Malformed,
    /// The checkpoint has no signature by a trusted key.
    UntrustedCheckpoint,
    /// A trusted key's signature on the checkpoint does not verify.
    BadSignature,
    /// The manifest's origin is not the checkpoint's.
    OriginMismatch,
    /// Tree sizes disagree between manifest, checkpoint and proofs, or the range reaches
    /// beyond the tree.
    SizeMismatch,
    /// An entry's bytes are not a ledger entry this build can decode.
    UndecodableEntry,
    /// An entry line disagrees with its own bytes: the recomputed chain hash is not its
    /// `hash`, or its `seq`, `leaf_index`, `prev_hash` or `entry` are not what the bytes
    /// decode to.
    EntryAltered,
    /// An entry is missing; names the first missing seq.
    SeqGap,
    /// Entries are reordered (or repeated); names the seq expected at that position.
    OutOfOrder,
    /// Fewer entries than the manifest says; names the first missing seq.
    Truncated,
    /// More entries than the manifest says; names the first seq beyond `to_seq`.
    TrailingEntry,
    /// An entry's `prev_hash` is not the previous entry's hash (or not zero for seq 1).
    ChainBroken,
    /// The first or last entry is not in the checkpoint's tree; names its seq.
    NotIncluded,
    /// The bundle holds the whole tree and the root of all its leaves is not the
    /// checkpoint's.
    RootMismatch,
    /// The checkpoint's tree does not extend the previous checkpoint's: a missing, mismatched
    /// or failing consistency proof, or a previous checkpoint larger than this one (a fork
    /// or a rollback).
    Inconsistent,
    /// The previous checkpoint has no valid trusted signature or another origin.
    PreviousUntrusted,
}

impl BundleFailureKind {
    /// Every kind, in the order the verifier checks for them (for docs and tests; the
    /// exhaustive match in [`as_str`](Self::as_str) names each variant once more).
    pub const ALL: [BundleFailureKind; 16] = [
        BundleFailureKind::Malformed,
        BundleFailureKind::UntrustedCheckpoint,
        BundleFailureKind::BadSignature,
        BundleFailureKind::OriginMismatch,
        BundleFailureKind::SizeMismatch,
        BundleFailureKind::UndecodableEntry,
        BundleFailureKind::EntryAltered,
        BundleFailureKind::SeqGap,
        BundleFailureKind::OutOfOrder,
        BundleFailureKind::Truncated,
        BundleFailureKind::TrailingEntry,
        BundleFailureKind::ChainBroken,
        BundleFailureKind::NotIncluded,
        BundleFailureKind::RootMismatch,
        BundleFailureKind::Inconsistent,
        BundleFailureKind::PreviousUntrusted,
    ];

    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleFailureKind::Malformed => "malformed",
            BundleFailureKind::UntrustedCheckpoint => "untrusted_checkpoint",
            BundleFailureKind::BadSignature => "bad_signature",
            BundleFailureKind::OriginMismatch => "origin_mismatch",
            BundleFailureKind::SizeMismatch => "size_mismatch",
            BundleFailureKind::UndecodableEntry => "undecodable_entry",
            BundleFailureKind::EntryAltered => "entry_altered",
            BundleFailureKind::SeqGap => "seq_gap",
            BundleFailureKind::OutOfOrder => "out_of_order",
            BundleFailureKind::Truncated => "truncated",
            BundleFailureKind::TrailingEntry => "trailing_entry",
            BundleFailureKind::ChainBroken => "chain_broken",
            BundleFailureKind::NotIncluded => "not_included",
            BundleFailureKind::RootMismatch => "root_mismatch",
            BundleFailureKind::Inconsistent => "inconsistent",
            BundleFailureKind::PreviousUntrusted => "previous_untrusted",
        }
    }
}

impl fmt::Display for BundleFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first reason a bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFailure {
    /// What kind of failure.
    pub kind: BundleFailureKind,
    /// The first offending seq, when the failure is about entries.
    pub seq: Option<u64>,
    /// What exactly is wrong, naming the file (and line) where it applies.
    pub detail: String,
}

impl BundleFailure {
    /// A failure from its parts.
    pub fn new(kind: BundleFailureKind, seq: Option<u64>, detail: impl Into<String>) -> Self {
        BundleFailure {
            kind,
            seq,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for BundleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(seq) = self.seq {
            write!(f, " at seq {seq}")?;
        }
        // Details quote the bundle (field names, values): escape control characters so a
        // hostile bundle cannot rewrite the auditor's terminal ("ok: …" over the refusal).
        f.write_str(": ")?;
        for c in self.detail.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for BundleFailure {}

use BundleFailureKind as K;

fn fail(kind: BundleFailureKind, seq: Option<u64>, detail: impl Into<String>) -> BundleFailure {
    BundleFailure::new(kind, seq, detail)
}

fn malformed(file: &str, error: impl fmt::Display) -> BundleFailure {
    fail(K::Malformed, None, format!("{file}: {error}"))
}

// ---------------------------------------------------------------------------------------
// The verifier.

/// Verifies a bundle offline against the log's trusted verifier keys and, optionally, the
/// auditor's previous checkpoint of the same log (signed-note text): see the
/// [module documentation](self) for every check and its order.
pub fn verify_bundle(
    parts: &BundleParts<'_>,
    trusted: &[VerifierKey],
    previous_checkpoint: Option<&str>,
) -> Result<BundleSummary, BundleFailure> {
    let (checkpoint, signed_by) = open_checkpoint(parts.checkpoint, trusted)?;
    let manifest = parse_manifest(parts.manifest)?;
    let proofs: Proofs =
        serde_json::from_str(parts.proofs).map_err(|e| malformed(PROOFS_FILE, e))?;
    check_sizes(&manifest, &checkpoint, &proofs)?;
    let walk = walk_entries(parts.entries, &manifest)?;
    check_inclusion(
        "first",
        &proofs.first,
        manifest.from_seq,
        &walk.first_leaf,
        &checkpoint,
    )?;
    check_inclusion(
        "last",
        &proofs.last,
        manifest.to_seq,
        &walk.last_leaf,
        &checkpoint,
    )?;
    if let Some(leaves) = &walk.all_leaves {
        check_root(leaves, &checkpoint)?;
    }
    let previous_size = previous_checkpoint
        .map(|text| check_previous(text, trusted, &checkpoint, proofs.consistency.as_ref()))
        .transpose()?;
    Ok(BundleSummary {
        origin: checkpoint.origin,
        from_seq: manifest.from_seq,
        to_seq: manifest.to_seq,
        entries: manifest.entries,
        tree_size: checkpoint.size,
        root: hash32_to_hex(&checkpoint.root),
        first_hash: walk.first_hash.to_hex(),
        last_hash: walk.last_hash.to_hex(),
        signed_by,
        previous_size,
    })
}

fn open_checkpoint(
    text: &str,
    trusted: &[VerifierKey],
) -> Result<(Checkpoint, Vec<String>), BundleFailure> {
    let note = SignedNote::parse(text).map_err(|e| malformed(CHECKPOINT_FILE, e))?;
    let signed_by = note.verify(trusted).map_err(|e| match e {
        CheckpointError::InvalidSignature { .. } => {
            fail(K::BadSignature, None, format!("{CHECKPOINT_FILE}: {e}"))
        }
        _ => fail(
            K::UntrustedCheckpoint,
            None,
            format!("{CHECKPOINT_FILE}: {e}"),
        ),
    })?;
    let checkpoint =
        Checkpoint::parse_body(&note.body).map_err(|e| malformed(CHECKPOINT_FILE, e))?;
    Ok((checkpoint, signed_by))
}

fn parse_manifest(text: &str) -> Result<Manifest, BundleFailure> {
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| malformed(MANIFEST_FILE, e))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(malformed(
            MANIFEST_FILE,
            format!("format {:?} is not {BUNDLE_FORMAT:?}", manifest.format),
        ));
    }
    if manifest.from_seq == 0 {
        return Err(malformed(MANIFEST_FILE, "from_seq is 0; seqs start at 1"));
    }
    if manifest.from_seq > manifest.to_seq {
        return Err(malformed(
            MANIFEST_FILE,
            format!(
                "from_seq {} is after to_seq {}",
                manifest.from_seq, manifest.to_seq
            ),
        ));
    }
    // from_seq >= 1, so the count of from_seq..=to_seq fits a u64.
    let count = (manifest.to_seq - manifest.from_seq).checked_add(1);
    if count != Some(manifest.entries) {
        return Err(malformed(
            MANIFEST_FILE,
            format!(
                "entries is {}, but {}..={} holds {}",
                manifest.entries,
                manifest.from_seq,
                manifest.to_seq,
                manifest.to_seq - manifest.from_seq + 1
            ),
        ));
    }
    Ok(manifest)
}

fn check_sizes(
    manifest: &Manifest,
    checkpoint: &Checkpoint,
    proofs: &Proofs,
) -> Result<(), BundleFailure> {
    if manifest.origin != checkpoint.origin {
        return Err(fail(
            K::OriginMismatch,
            None,
            format!(
                "{MANIFEST_FILE} names origin {:?}, {CHECKPOINT_FILE} {:?}",
                manifest.origin, checkpoint.origin
            ),
        ));
    }
    if manifest.tree_size != checkpoint.size {
        return Err(fail(
            K::SizeMismatch,
            None,
            format!(
                "{MANIFEST_FILE} says tree size {}, {CHECKPOINT_FILE} {}",
                manifest.tree_size, checkpoint.size
            ),
        ));
    }
    if proofs.tree_size != checkpoint.size {
        return Err(fail(
            K::SizeMismatch,
            None,
            format!(
                "{PROOFS_FILE} says tree size {}, {CHECKPOINT_FILE} {}",
                proofs.tree_size, checkpoint.size
            ),
        ));
    }
    if manifest.to_seq > checkpoint.size {
        return Err(fail(
            K::SizeMismatch,
            None,
            format!(
                "{MANIFEST_FILE} range ends at seq {}, beyond the tree of size {}",
                manifest.to_seq, checkpoint.size
            ),
        ));
    }
    Ok(())
}

/// What walking the entries gives the proof checks.
struct Walk {
    first_leaf: Hash32,
    last_leaf: Hash32,
    first_hash: Hash,
    last_hash: Hash,
    /// Every leaf hash, only when the bundle holds the whole tree.
    all_leaves: Option<Vec<Hash32>>,
}

/// Just the seq of a line, read leniently to tell a gap from a reordering.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The entry lines, lazily: memory stays flat whatever the file holds. Trailing blank lines
/// (a final newline, an editor's extra one) are not entries.
fn entry_lines(text: &str) -> std::str::SplitTerminator<'_, char> {
    text.trim_end_matches(|c: char| c.is_ascii_whitespace())
        .split_terminator('\n')
}

fn walk_entries(text: &str, manifest: &Manifest) -> Result<Walk, BundleFailure> {
    let mut lines = entry_lines(text);
    let mut seen = 0u64;
    let whole_tree = manifest.from_seq == 1 && manifest.to_seq == manifest.tree_size;
    let mut all_leaves = whole_tree.then(Vec::new);
    let mut previous: Option<Hash> = None;
    let mut first: Option<(Hash32, Hash)> = None;
    let mut last: Option<(Hash32, Hash)> = None;

    while let Some(raw) = lines.next() {
        let index = seen;
        seen += 1;
        let line_no = index.saturating_add(1);
        if index >= manifest.entries {
            // from_seq + entries - 1 = to_seq, so this is to_seq + 1 (if it exists).
            return Err(fail(
                K::TrailingEntry,
                manifest.to_seq.checked_add(1),
                format!(
                    "{ENTRIES_FILE} line {line_no}: more than the {} entries of the manifest",
                    manifest.entries
                ),
            ));
        }
        // index < entries, so this is at most to_seq.
        let expected = manifest.from_seq + index;
        let at = |detail: String| format!("{ENTRIES_FILE} line {line_no}: {detail}");
        if raw.trim().is_empty() {
            return Err(fail(K::Malformed, Some(expected), at("blank line".into())));
        }
        let line: BundleEntryLine = serde_json::from_str(raw)
            .map_err(|e| fail(K::Malformed, Some(expected), at(e.to_string())))?;
        crate::json::reject_repeated_keys(raw)
            .map_err(|e| fail(K::EntryAltered, Some(expected), at(e)))?;

        if line.seq != expected {
            let later = lines
                .clone()
                .any(|l| serde_json::from_str::<SeqOnly>(l).is_ok_and(|s| s.seq == expected));
            // The expected seq nowhere later is a gap (a dropped line, or one replaced by a
            // copy of another); otherwise the lines are reordered or repeated.
            let kind = if later { K::OutOfOrder } else { K::SeqGap };
            let detail = if kind == K::SeqGap {
                format!("seq {expected} is missing (found seq {})", line.seq)
            } else {
                format!("expected seq {expected}, found seq {}", line.seq)
            };
            return Err(fail(kind, Some(expected), at(detail)));
        }
        let seq = expected;
        let bytes = line.decode_bytes().map_err(|e| {
            fail(
                K::Malformed,
                Some(seq),
                at(format!("bytes are not standard base64: {e}")),
            )
        })?;
        let entry = Entry::decode(&bytes)
            .map_err(|e| fail(K::UndecodableEntry, Some(seq), at(e.to_string())))?;
        let altered = |detail: String| fail(K::EntryAltered, Some(seq), at(detail));
        if entry.seq != seq {
            return Err(altered(format!(
                "the line says seq {seq}, its bytes seq {}",
                entry.seq
            )));
        }
        // seq >= from_seq >= 1.
        if line.leaf_index != seq - 1 {
            return Err(altered(format!(
                "leaf_index is {}, not {}",
                line.leaf_index,
                seq - 1
            )));
        }
        if line.prev_hash != entry.prev_hash {
            return Err(altered(format!(
                "the line says prev_hash {}, its bytes {}",
                line.prev_hash, entry.prev_hash
            )));
        }
        let hash = chain_hash(&entry.prev_hash, seq, &bytes);
        if hash != line.hash {
            return Err(altered(format!(
                "the bytes hash to {hash}, the line says {}",
                line.hash
            )));
        }
        if serde_json::to_value(&entry).ok().as_ref() != Some(&line.entry) {
            return Err(altered(
                "the entry JSON is not what the bytes decode to".into(),
            ));
        }
        let linked = match previous {
            Some(prev) => Some(prev),
            // The first entry of the log has no predecessor; of a later range, only the
            // inclusion proof vouches for it.
            None if seq == 1 => Some(Hash::ZERO),
            None => None,
        };
        if let Some(want) = linked {
            if entry.prev_hash != want {
                return Err(fail(
                    K::ChainBroken,
                    Some(seq),
                    at(format!(
                        "prev_hash {} is not the previous entry's hash {want}",
                        entry.prev_hash
                    )),
                ));
            }
        }
        previous = Some(hash);

        let leaf = merkle::leaf_hash(&bytes);
        if first.is_none() {
            first = Some((leaf, hash));
        }
        last = Some((leaf, hash));
        if let Some(leaves) = all_leaves.as_mut() {
            leaves.push(leaf);
        }
    }

    if seen < manifest.entries {
        // seen < entries, so this is at most to_seq.
        let missing = manifest.from_seq + seen;
        return Err(fail(
            K::Truncated,
            Some(missing),
            format!(
                "{ENTRIES_FILE} holds {seen} of the {} entries of the manifest; seq {missing} is the first missing",
                manifest.entries
            ),
        ));
    }
    match (first, last) {
        (Some((first_leaf, first_hash)), Some((last_leaf, last_hash))) => Ok(Walk {
            first_leaf,
            last_leaf,
            first_hash,
            last_hash,
            all_leaves,
        }),
        // entries >= 1 and every line was walked, so both are set.
        _ => Err(fail(
            K::Truncated,
            Some(manifest.from_seq),
            format!("{ENTRIES_FILE} holds no entries"),
        )),
    }
}

fn check_inclusion(
    which: &str,
    proof: &InclusionProof,
    seq: u64,
    leaf: &Hash32,
    checkpoint: &Checkpoint,
) -> Result<(), BundleFailure> {
    let not_included = |detail: String| {
        fail(
            K::NotIncluded,
            Some(seq),
            format!("{PROOFS_FILE} {which}: {detail}"),
        )
    };
    // seq >= 1 (checked with the manifest).
    let index = seq - 1;
    if proof.leaf_index != index || proof.tree_size != checkpoint.size {
        return Err(not_included(format!(
            "the proof is for leaf {} in the tree of size {}, not leaf {index} in the tree of size {}",
            proof.leaf_index, proof.tree_size, checkpoint.size
        )));
    }
    proof.verify(leaf, &checkpoint.root).map_err(|e| {
        not_included(format!(
            "seq {seq} is not in the checkpoint's tree of size {}: {e}",
            checkpoint.size
        ))
    })
}

/// Defense in depth: with the chain and both inclusion proofs verified, only a hash
/// collision gets here with another root.
fn check_root(leaves: &[Hash32], checkpoint: &Checkpoint) -> Result<(), BundleFailure> {
    let computed = merkle::root_from_leaf_hashes(leaves);
    if computed != checkpoint.root {
        return Err(fail(
            K::RootMismatch,
            None,
            format!(
                "the root of all {} leaves is {}, the checkpoint's is {}",
                leaves.len(),
                hash32_to_hex(&computed),
                hash32_to_hex(&checkpoint.root)
            ),
        ));
    }
    Ok(())
}

fn check_previous(
    text: &str,
    trusted: &[VerifierKey],
    current: &Checkpoint,
    consistency: Option<&ConsistencyProof>,
) -> Result<u64, BundleFailure> {
    // Its form first (check 19), then its signature (check 20).
    let note = SignedNote::parse(text).map_err(|e| malformed(PREVIOUS_CHECKPOINT, e))?;
    let previous =
        Checkpoint::parse_body(&note.body).map_err(|e| malformed(PREVIOUS_CHECKPOINT, e))?;
    note.verify(trusted).map_err(|e| {
        fail(
            K::PreviousUntrusted,
            None,
            format!("{PREVIOUS_CHECKPOINT}: {e}"),
        )
    })?;
    if previous.origin != current.origin {
        return Err(fail(
            K::PreviousUntrusted,
            None,
            format!(
                "{PREVIOUS_CHECKPOINT} is of origin {:?}, the bundle's {:?}",
                previous.origin, current.origin
            ),
        ));
    }
    let (old, new) = (previous.size, current.size);
    let inconsistent = |detail: String| fail(K::Inconsistent, None, detail);
    if old > new {
        return Err(inconsistent(format!(
            "{PREVIOUS_CHECKPOINT} has size {old}, the bundle's tree only {new}: a rollback or truncation"
        )));
    }
    if old == 0 {
        // The empty tree is a prefix of every tree; the RFC has no proof for it.
        if previous.root != EMPTY_ROOT {
            return Err(inconsistent(format!(
                "{PREVIOUS_CHECKPOINT} has size 0 but a root other than the empty tree's"
            )));
        }
        return Ok(0);
    }
    if old == new {
        // Equal sizes need equal roots and no proof: a proof the bundle carries from an
        // older checkpoint is beside the point.
        if previous.root == current.root {
            return Ok(old);
        }
        return Err(inconsistent(format!(
            "{PREVIOUS_CHECKPOINT} and the bundle's checkpoint are both of size {old} with different roots: a fork"
        )));
    }
    let Some(proof) = consistency else {
        return Err(inconsistent(format!(
            "{PROOFS_FILE} has no consistency proof from the previous size {old} to {new}"
        )));
    };
    if proof.from_size != old || proof.to_size != new {
        return Err(inconsistent(format!(
            "{PROOFS_FILE} proves consistency from {} to {}, not from the previous size {old} to {new}",
            proof.from_size, proof.to_size
        )));
    }
    proof.verify(&previous.root, &current.root).map_err(|e| {
        inconsistent(format!(
            "the tree of size {new} does not extend {PREVIOUS_CHECKPOINT} of size {old}: {e} (a fork or rewritten history)"
        ))
    })?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let hash: Hash32 = std::array::from_fn(|i| (i * 37) as u8);
        let hex = hash32_to_hex(&hash);
        assert_eq!(hash32_from_hex(&hex), Some(hash));
        assert_eq!(hash32_from_hex(&hex.to_uppercase()), Some(hash));
        for bad in [
            "",
            &hex[..62],
            &format!("{hex}00"),
            &format!("+{}", &hex[1..]),
            &format!("g{}", &hex[1..]),
            &format!(" {}", &hex[1..]),
            // A multi-byte character keeps the byte length but must not split a digit pair.
            &format!("\u{e9}{}", &hex[2..]),
        ] {
            assert_eq!(hash32_from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn failure_display_and_json() {
        let failure = BundleFailure::new(K::SeqGap, Some(7), "seq 7 is missing");
        assert_eq!(failure.to_string(), "seq_gap at seq 7: seq 7 is missing");
        let json = serde_json::to_value(&failure).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "seq_gap", "seq": 7, "detail": "seq 7 is missing"})
        );
        for kind in K::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }

    #[test]
    fn root_check_compares_the_root_of_every_leaf() {
        let leaves: Vec<Hash32> = (0..5u8).map(|i| merkle::leaf_hash(&[i])).collect();
        let mut checkpoint = Checkpoint {
            origin: "o".into(),
            size: 5,
            root: merkle::root_from_leaf_hashes(&leaves),
            extensions: vec![],
        };
        assert!(check_root(&leaves, &checkpoint).is_ok());
        checkpoint.root[0] ^= 1;
        assert_eq!(
            check_root(&leaves, &checkpoint).unwrap_err().kind,
            K::RootMismatch
        );
    }

    #[test]
    fn one_line_summary() {
        let mut summary = BundleSummary {
            origin: "x".into(),
            from_seq: 1,
            to_seq: 500,
            entries: 500,
            tree_size: 512,
            root: "ab12cd34".repeat(8),
            first_hash: "00".repeat(32),
            last_hash: "11".repeat(32),
            signed_by: vec!["k".into()],
            previous_size: Some(300),
        };
        assert_eq!(
            summary.one_line(),
            "ok: entries 1..=500 (500) of origin \"x\" are in the tree of size 512 \
             (root ab12cd34\u{2026}) signed by key \"k\"; consistent with the previous \
             checkpoint of size 300"
        );
        summary.signed_by.push("w".into());
        summary.previous_size = None;
        assert!(summary.one_line().ends_with("signed by keys \"k\", \"w\""));
    }
}
