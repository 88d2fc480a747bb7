//! The ledger entry: a versioned envelope, its exact bytes and the chain hash.
//!
//! An entry is encoded with MessagePack using named fields (`rmp_serde::to_vec_named`),
//! so later versions can add fields. The bytes hashed are exactly the bytes stored:
//! `hash = blake3(ENTRY_DOMAIN_TAG || prev_hash || seq as u64 big-endian || entry bytes)`.
//! See `docs/FORMAT.md` for the byte layout and a worked example.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ObjectChange, SchemaError, Transition};

/// The entry format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Domain separation for the chain hash, so an entry hash can never be confused with
/// any other blake3 digest.
pub const ENTRY_DOMAIN_TAG: &[u8] = b"claim-ledger/entry/v1\0";

/// The BLAKE3 `derive_key` context of [`snapshot_digest`]: the digest an entry's
/// [`Entry::snapshot`] field holds can never equal any other claim-ledger digest (entry
/// chain hashes are plain BLAKE3 over [`ENTRY_DOMAIN_TAG`]-prefixed input).
pub const SNAPSHOT_CONTEXT: &str = "claim-ledger 2026-01 projection snapshot v1";

/// A 32-byte blake3 digest. Hex in human-readable encodings (JSON), raw bytes in MessagePack.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first entry.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Hash> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }

    /// Takes the first 32 bytes of a slice, if it has them.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.get(..32)?.try_into().ok().map(Hash)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        struct HashVisitor;
        impl<'de> serde::de::Visitor<'de> for HashVisitor {
            type Value = Hash;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Hash, E> {
                if v.len() != 32 {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Hash::from_slice(v).unwrap_or_default())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hash, E> {
                Hash::from_hex(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(HashVisitor)
        } else {
            deserializer.deserialize_bytes(HashVisitor)
        }
    }
}

/// What an entry records. One variant today; new kinds of records (watch gaps,
/// denied checks, checkpoints) are added as new variants.
// Object changes are nearly every record; boxing them would cost an allocation per entry
// on the append path to save space on the rare watch gap.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// One observed change of one Kubernetes object.
    Object(ObjectChange),
    /// A watch had to relist: the ledger was blind between the last event it saw and the
    /// list that followed, so incident responders can see the window.
    WatchGap(WatchGap),
    /// Checks denied for one pod uid and reason within one minute, aggregated so a flood of
    /// replayed identities cannot grow the log without bound.
    CheckDenied(CheckDenied),
    /// Checks denied for one reason within one minute past the per-uid records a replica
    /// holds for that reason: every one counted, none named one by one, so a flood of
    /// forged uids neither grows the log without bound nor goes unrecorded.
    CheckDeniedOverflow(CheckDeniedOverflow),
    /// The watcher's scope changed: the namespaces it watches from this entry on, and
    /// those it watched before. Objects outside the scope are no longer seen, so checks of
    /// them are not answered from what was recorded before.
    WatchScope(WatchScope),
}

/// The namespaces a watcher watches (empty: all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchScope {
    /// The namespaces watched from this entry on, sorted; empty for all.
    pub namespaces: Vec<String>,
    /// Those watched before, as recorded (`None` when no scope was recorded: all).
    pub previous: Option<Vec<String>>,
}

/// Denied checks of one reason in one minute beyond the per-uid records of that reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDeniedOverflow {
    /// Why the checks were denied.
    pub reason: crate::Reason,
    /// The start of the minute (UTC) the denials fall in.
    pub minute: DateTime<Utc>,
    /// How many checks were aggregated.
    pub count: u64,
    /// The pod uid the first of them presented.
    pub first_pod_uid: String,
    /// The pod uid the last of them presented.
    pub last_pod_uid: String,
    /// The sum modulo 2^256 (each value read as a little-endian integer) of
    /// `blake3::derive_key("claim-ledger 2026-01 check-denied overflow uid v1", pod uid)` over every
    /// aggregated check (a uid denied twice adds twice): order-independent, so whoever
    /// holds the denied uids from elsewhere (the gateway's log) can recompute it.
    pub uid_digest: Hash,
}

/// Denied identity checks for one (pod uid, reason) in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDenied {
    /// The pod uid the callers presented.
    pub pod_uid: String,
    /// The namespace they named.
    pub namespace: String,
    /// The pod name they named.
    pub pod_name: String,
    /// Why the checks were denied.
    pub reason: crate::Reason,
    /// The start of the minute (UTC) the denials fall in.
    pub minute: DateTime<Utc>,
    /// How many checks were denied in that minute.
    pub count: u64,
}

/// A blind window of one watched resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchGap {
    /// The resource, as `plural.group/version` (`plural/version` for core: `pods/v1`).
    pub resource: String,
    /// The last resourceVersion the watcher saw before the relist, if any.
    pub last_resource_version: Option<String>,
    /// Why: `restart` (the watcher started over a non-empty ledger) or `relist` (the watch
    /// broke and the watcher listed again, e.g. after `410 Gone`).
    pub reason: String,
}

/// Room reserved for an encoded entry: most are 400 to 700 bytes, and growing the buffer
/// by doubling from empty cost a tenth of the encode.
pub const ENCODED_SIZE_HINT: usize = 1024;

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format_version: u16,
    /// Position in the log, starting at 1 with no gaps.
    pub seq: u64,
    /// When the ledger observed the change (UTC, never decreasing along the log).
    pub observed_at: DateTime<Utc>,
    /// Hash of the entry at `seq - 1` ([`Hash::ZERO`] for seq 1).
    pub prev_hash: Hash,
    /// What was observed.
    pub change: Change,
    /// What it caused, derived when appending and re-derived on replay.
    pub transitions: Vec<Transition>,
    /// On an entry at a snapshot seq only: [`snapshot_digest`] of the exact stored bytes of
    /// the snapshot of the projection *after* this entry, so the chain commits to the
    /// snapshot and a snapshot edited in the store is refused at open. Absent (the key is
    /// not written at all) on every other entry, which therefore encode as if the field did
    /// not exist; a missing key decodes as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Hash>,
}

impl Entry {
    /// The exact bytes stored and hashed.
    pub fn encode(&self) -> Result<Vec<u8>, SchemaError> {
        let mut bytes = Vec::with_capacity(ENCODED_SIZE_HINT);
        self.encode_into(&mut bytes)?;
        Ok(bytes)
    }

    /// [`Entry::encode`], appended to `out` (the writer puts the chain hash before it, in
    /// one buffer, instead of copying the entry after it).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        rmp_serde::encode::write_named(out, self).map_err(|e| SchemaError::Encode(e.to_string()))
    }

    /// [`Entry::encode_into`], returning where in the entry's bytes (counted from their
    /// start, not from `out`'s) the 32 bytes of `prev_hash` sit. The writer encodes an
    /// entry before the hash it chains to is known, and another thread, which computes
    /// the chain, writes that hash there: the bytes are then exactly those of the entry
    /// encoded with it, since a hash always encodes as 32 bytes (`bin 8`, length 32).
    pub fn encode_into_locating_prev_hash(&self, out: &mut Vec<u8>) -> Result<usize, SchemaError> {
        let start = out.len();
        self.encode_into(out)?;
        // The key `prev_hash` (fixstr of 9) and the header of a 32-byte `bin 8`. The
        // fields before it (an integer, an integer, an RFC 3339 string) cannot hold these
        // bytes, so the first match is the field.
        const MARKER: &[u8] = b"\xa9prev_hash\xc4\x20";
        let encoded = &out[start..];
        encoded
            .windows(MARKER.len())
            .position(|window| window == MARKER)
            .map(|at| at + MARKER.len())
            .filter(|&at| encoded.get(at..at + 32) == Some(&self.prev_hash.0[..]))
            .ok_or_else(|| SchemaError::Encode("prev_hash is not where the format puts it".into()))
    }

    /// Decodes stored bytes, refusing unknown format versions and any bytes that are not
    /// exactly the canonical encoding of what they decode to: the hashed bytes must never
    /// carry data the decoded entry does not show (trailing bytes, a hash as a string,
    /// wider integers, positional structs, unknown keys).
    pub fn decode(bytes: &[u8]) -> Result<Entry, SchemaError> {
        let entry: Entry =
            rmp_serde::from_slice(bytes).map_err(|e| SchemaError::Undecodable(e.to_string()))?;
        if entry.format_version != FORMAT_VERSION {
            return Err(SchemaError::UnsupportedVersion {
                found: entry.format_version,
                supported: FORMAT_VERSION,
            });
        }
        // The canonical bytes are written into a buffer this thread keeps: every read of
        // the log (verify, replay, export) pays this check, and growing a fresh vector for
        // each entry cost more than encoding it.
        let at = CANONICAL.with_borrow_mut(|canonical| {
            canonical.clear();
            rmp_serde::encode::write_named(canonical, &entry)
                .map_err(|e| SchemaError::Encode(e.to_string()))?;
            let at = (canonical[..] != *bytes).then(|| {
                let at = canonical
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(canonical.len().min(bytes.len()));
                (at, canonical.len())
            });
            if canonical.capacity() > CANONICAL_KEPT {
                *canonical = Vec::new();
            }
            Ok::<_, SchemaError>(at)
        })?;
        if let Some((at, canonical_len)) = at {
            return Err(SchemaError::Undecodable(format!(
                "not the canonical encoding of the entry it decodes to ({} bytes stored, {canonical_len} canonical, first difference at byte {at})",
                bytes.len(),
            )));
        }
        Ok(entry)
    }

    /// The object change this entry records, if it records one.
    pub fn object_change(&self) -> Option<&ObjectChange> {
        match &self.change {
            Change::Object(change) => Some(change),
            Change::WatchGap(_)
            | Change::CheckDenied(_)
            | Change::CheckDeniedOverflow(_)
            | Change::WatchScope(_) => None,
        }
    }
}

thread_local! {
    /// Where [`Entry::decode`] writes the canonical encoding it compares with.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A canonical buffer grown past this (an unusually large entry) is not kept.
const CANONICAL_KEPT: usize = 64 * 1024;

/// The chain hash of an entry: `blake3(ENTRY_DOMAIN_TAG || prev_hash || seq_be || bytes)`.
pub fn chain_hash(prev_hash: &Hash, seq: u64, entry_bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ENTRY_DOMAIN_TAG);
    hasher.update(&prev_hash.0);
    hasher.update(&seq.to_be_bytes());
    hasher.update(entry_bytes);
    Hash(*hasher.finalize().as_bytes())
}

/// The digest an entry at a snapshot seq commits to: BLAKE3 in `derive_key` mode with the
/// context [`SNAPSHOT_CONTEXT`] over the exact stored snapshot bytes (32-byte output).
pub fn snapshot_digest(snapshot_bytes: &[u8]) -> Hash {
    Hash(blake3::derive_key(SNAPSHOT_CONTEXT, snapshot_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeKind, KindFields, ObjectKind};

    fn sample() -> Entry {
        Entry {
            format_version: FORMAT_VERSION,
            seq: 7,
            observed_at: "2026-11-28T12:00:00Z".parse().unwrap(),
            prev_hash: Hash([3; 32]),
            change: Change::Object(ObjectChange {
                kind: ObjectKind::Pod,
                api_version: "v1".into(),
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                resource_version: "12".into(),
                change: ChangeKind::Created,
                controller: None,
                deletion_timestamp: None,
                fields: KindFields::Pod {
                    sandbox_id_annotation: Some("sb".into()),
                    phase: None,
                },
            }),
            transitions: vec![],
            snapshot: None,
        }
    }

    #[test]
    fn an_entry_encoded_with_a_zero_prev_hash_and_patched_is_the_entry_encoded_with_it() {
        for (seq, observed_at, snapshot) in [
            (1, "2026-11-28T12:00:00Z", None),
            (
                u64::MAX,
                "2026-11-28T12:00:00.123456789Z",
                Some(Hash([9; 32])),
            ),
            (300, "1970-01-01T00:00:00Z", None),
        ] {
            let entry = Entry {
                seq,
                observed_at: observed_at.parse().unwrap(),
                snapshot,
                ..sample()
            };
            let mut out = b"hash slot".to_vec();
            let unchained = Entry {
                prev_hash: Hash::ZERO,
                ..entry.clone()
            };
            let at = unchained.encode_into_locating_prev_hash(&mut out).unwrap();
            let bytes = &mut out[9..];
            bytes[at..at + 32].copy_from_slice(&entry.prev_hash.0);
            assert_eq!(bytes, &entry.encode().unwrap()[..], "seq {seq}");
        }
    }

    #[test]
    fn encode_decode_round_trip_is_exact() {
        let entry = sample();
        let bytes = entry.encode().unwrap();
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn the_snapshot_field_is_written_only_when_present_and_round_trips() {
        // Without a snapshot: exactly the six-pair envelope of before, no `snapshot` key.
        let entry = sample();
        let bytes = entry.encode().unwrap();
        assert_eq!(bytes[0], 0x86, "a fixmap of 6 pairs");
        assert!(!bytes.windows(8).any(|w| w == b"snapshot"));

        // An entry written before the field existed (the six fields, no key) decodes.
        #[derive(Serialize)]
        struct Old<'a> {
            format_version: u16,
            seq: u64,
            observed_at: DateTime<Utc>,
            prev_hash: Hash,
            change: &'a Change,
            transitions: &'a [Transition],
        }
        let old = rmp_serde::to_vec_named(&Old {
            format_version: entry.format_version,
            seq: entry.seq,
            observed_at: entry.observed_at,
            prev_hash: entry.prev_hash,
            change: &entry.change,
            transitions: &entry.transitions,
        })
        .unwrap();
        assert_eq!(old, bytes);
        assert_eq!(Entry::decode(&old).unwrap(), entry);

        // With a snapshot: a seventh pair, last, `"snapshot": bin 8 of 32 bytes`.
        let digest = snapshot_digest(b"snapshot bytes");
        let with = Entry {
            snapshot: Some(digest),
            ..sample()
        };
        let with_bytes = with.encode().unwrap();
        assert_eq!(with_bytes[0], 0x87, "a fixmap of 7 pairs");
        let mut tail = vec![0xa8];
        tail.extend_from_slice(b"snapshot");
        tail.extend_from_slice(&[0xc4, 0x20]);
        tail.extend_from_slice(&digest.0);
        assert!(with_bytes.ends_with(&tail));
        assert_eq!(with_bytes[1..with_bytes.len() - tail.len()], bytes[1..]);
        let back = Entry::decode(&with_bytes).unwrap();
        assert_eq!(back, with);
        assert_eq!(back.encode().unwrap(), with_bytes);

        // The JSON form: hex when present, no key when absent.
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["snapshot"], serde_json::json!(digest.to_hex()));
        assert_eq!(serde_json::from_value::<Entry>(json).unwrap(), with);
        let json = serde_json::to_value(&entry).unwrap();
        assert!(json.get("snapshot").is_none());
        assert_eq!(serde_json::from_value::<Entry>(json).unwrap(), entry);
    }

    #[test]
    fn the_snapshot_digest_is_domain_separated() {
        let bytes = b"some snapshot";
        let digest = snapshot_digest(bytes);
        assert_ne!(digest.0, *blake3::hash(bytes).as_bytes());
        assert_ne!(digest, snapshot_digest(b"some snapshoT"));
        let mut hasher = blake3::Hasher::new_derive_key(SNAPSHOT_CONTEXT);
        hasher.update(bytes);
        assert_eq!(digest.0, *hasher.finalize().as_bytes());
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut entry = sample();
        entry.format_version = 99;
        let bytes = rmp_serde::to_vec_named(&entry).unwrap();
        assert!(matches!(
            Entry::decode(&bytes),
            Err(SchemaError::UnsupportedVersion { found: 99, .. })
        ));
    }

    #[test]
    fn garbage_is_undecodable_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"\x81\xa3seq\x07"] {
            assert!(Entry::decode(bytes).is_err());
        }
    }

    #[test]
    fn hash_hex_round_trip_and_json_form() {
        let hash = chain_hash(&Hash::ZERO, 1, b"x");
        assert_eq!(Hash::from_hex(&hash.to_hex()), Some(hash));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), hash);
    }

    #[test]
    fn chain_hash_covers_every_input() {
        let base = chain_hash(&Hash::ZERO, 1, b"entry");
        assert_ne!(base, chain_hash(&Hash([1; 32]), 1, b"entry"));
        assert_ne!(base, chain_hash(&Hash::ZERO, 2, b"entry"));
        assert_ne!(base, chain_hash(&Hash::ZERO, 1, b"entrY"));
    }

    #[test]
    fn only_the_canonical_encoding_decodes() {
        let entry = sample();
        let canonical = entry.encode().unwrap();
        let refused = |bytes: &[u8], what: &str| {
            assert!(
                matches!(Entry::decode(bytes), Err(SchemaError::Undecodable(_))),
                "{what} was accepted"
            );
        };

        let mut trailing = canonical.clone();
        trailing.extend_from_slice(b"\xa5hello");
        refused(&trailing, "trailing bytes");

        // prev_hash as a hex string instead of `bin 8` (rmp_serde reads both).
        let bin = [b"\xa9prev_hash\xc4\x20".as_slice(), &[3u8; 32]].concat();
        let at = canonical.windows(bin.len()).position(|w| w == bin).unwrap();
        let hex: String = std::iter::repeat_n("03", 32).collect();
        let as_string = [
            &canonical[..at],
            b"\xa9prev_hash\xd9\x40".as_slice(),
            hex.as_bytes(),
            &canonical[at + bin.len()..],
        ]
        .concat();
        assert!(rmp_serde::from_slice::<Entry>(&as_string).is_ok());
        refused(&as_string, "a hash as a string");

        // seq 7 as uint 64.
        let seq = b"\xa3seq\x07";
        let at = canonical.windows(seq.len()).position(|w| w == seq).unwrap();
        let wide = [
            &canonical[..at],
            b"\xa3seq\xcf\0\0\0\0\0\0\0\x07".as_slice(),
            &canonical[at + seq.len()..],
        ]
        .concat();
        refused(&wide, "a wide integer");
        refused(&rmp_serde::to_vec(&entry).unwrap(), "positional structs");
        assert_eq!(Entry::decode(&canonical).unwrap(), entry);
    }
}
