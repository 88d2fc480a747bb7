//! The worked example of `docs/FORMAT.md`, checked against the code.
//!
//! Every hex, JSON and key-layout block of the worked example is parsed out of
//! `docs/FORMAT.md` itself (fenced blocks whose info string is `<lang> <label>`, e.g.
//! ```` ```hex example-1-bytes ````), so the document and the encoder cannot drift apart:
//! change the format and this test names the block that no longer matches and prints the
//! new value. `cargo test -p schemas --test it format_example:: -- --ignored
//! --nocapture` prints every block as it should read.
//!
//! The chain hash is also checked against the official BLAKE3 test vectors in
//! `tests/data/vectors/blake3/test_vectors.json`, to show that the blake3 in use is the
//! standard one an auditor's tool (`b3sum`, Python `blake3`) computes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use schemas::bundle::{
    verify_bundle, BundleEntryLine, BundleFailureKind, BundleParts, ConsistencyProof,
    InclusionProof, Manifest, Proofs, BUNDLE_FORMAT, CHECKPOINT_FILE, ENTRIES_FILE, MANIFEST_FILE,
    PROOFS_FILE,
};
use schemas::checkpoint::{self, Checkpoint, SignedNote, SignerKey, VerifierKey};
use schemas::merkle::{self, CompactRange, Hash32, PerfectNode};
use schemas::observed::ConditionSummary;
use schemas::{
    chain_hash, BindingKind, Change, ChangeKind, Entry, Hash, KindFields, ObjectChange, ObjectKind,
    OwnerRef, Reason, SchemaError, Transition, ENTRY_DOMAIN_TAG, FORMAT_VERSION,
};
use sha2::{Digest, Sha256};

const FORMAT_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
const BLAKE3_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/vectors/blake3/test_vectors.json"
);

// ---------------------------------------------------------------------------------------
// The documented example, built from Rust values.
// ---------------------------------------------------------------------------------------

/// The pod change of both example entries; entry 2 is the same pod one resourceVersion later.
fn pod_change(
    resource_version: &str,
    change: ChangeKind,
    annotation: Option<&str>,
    phase: Option<&str>,
) -> ObjectChange {
    ObjectChange {
        kind: ObjectKind::Pod,
        api_version: "v1".into(),
        namespace: "ns".into(),
        name: "p".into(),
        uid: "pod-1".into(),
        resource_version: resource_version.into(),
        change,
        controller: Some(OwnerRef {
            group: "agents.x-k8s.io".into(),
            kind: "Sandbox".into(),
            name: "sb".into(),
            uid: "sb-1".into(),
        }),
        deletion_timestamp: None,
        fields: KindFields::Pod {
            sandbox_id_annotation: annotation.map(Into::into),
            phase: phase.map(Into::into),
        },
    }
}

/// Example 1: seq 1, pod `ns/p` (uid `pod-1`, controlled by Sandbox `sb-1`) created.
fn example_1() -> Entry {
    Entry {
        format_version: FORMAT_VERSION,
        seq: 1,
        observed_at: "2026-11-28T12:00:00Z".parse().unwrap(),
        prev_hash: Hash::ZERO,
        change: Change::Object(pod_change("12", ChangeKind::Created, None, None)),
        transitions: vec![],
        snapshot: None,
    }
}

/// Example 2: seq 2, the same pod updated (annotation and phase set), chained to example 1.
fn example_2(prev_hash: Hash) -> Entry {
    Entry {
        format_version: FORMAT_VERSION,
        seq: 2,
        observed_at: "2026-11-28T12:00:01.250Z".parse().unwrap(),
        prev_hash,
        change: Change::Object(pod_change(
            "13",
            ChangeKind::Updated,
            Some("sbx-7"),
            Some("Running"),
        )),
        transitions: vec![],
        snapshot: None,
    }
}

/// The documented fragments: one value of each nested type the example entries lack.
fn fragments() -> Vec<(&'static str, Vec<u8>)> {
    fn named<T: serde::Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }
    vec![
        (
            "fragment-fields-sandbox",
            named(&KindFields::Sandbox {
                claim_uid_label: Some("claim-1".into()),
                sandbox_id_label: None,
                pod_name_annotation: Some("p".into()),
                volume_claim_templates: vec!["workspace".into()],
                shutdown_policy: Some("Retain".into()),
            }),
        ),
        (
            "fragment-fields-sandbox-claim",
            named(&KindFields::SandboxClaim {
                status_sandbox_name: Some("sb".into()),
                ready: Some(ConditionSummary {
                    status: "True".into(),
                    reason: Some("Bound".into()),
                }),
                shutdown_policy: Some("Delete".into()),
                shutdown_time: None,
                warm_pool: Some("pool".into()),
                template: None,
            }),
        ),
        (
            "fragment-fields-pvc",
            named(&KindFields::PersistentVolumeClaim {
                volume_name: Some("pv-1".into()),
                phase: Some("Bound".into()),
            }),
        ),
        (
            "fragment-transition-bound",
            named(&Transition::Bound {
                binding: BindingKind::Claim,
                pod_uid: "pod-1".into(),
                sandbox_uid: "sb-1".into(),
                claim_uid: Some("claim-1".into()),
            }),
        ),
        (
            "fragment-transition-released",
            named(&Transition::Released {
                pod_uid: "pod-1".into(),
                sandbox_uid: "sb-1".into(),
                claim_uid: None,
                reason: Reason::BindingReleased,
            }),
        ),
    ]
}

/// `ENTRY_DOMAIN_TAG || prev_hash || seq (u64 BE) || bytes`: what the chain hash hashes.
fn hash_input(prev_hash: &Hash, seq: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(ENTRY_DOMAIN_TAG);
    out.extend_from_slice(&prev_hash.0);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The store layout version `ledger/src/store/keys.rs` writes under `F` (`STORE_FORMAT`).
const STORE_FORMAT: u16 = 9;

/// The lowest level of Merkle nodes a `T` record holds (`STORED_LEVEL` in
/// `ledger/src/merkle_store.rs`); the nodes below are recomputed from the (at most 8) entries under
/// them.
const STORED_LEVEL: u32 = 3;

/// The most entries the ledger reads to recompute the nodes below [`STORED_LEVEL`] for one
/// past root or frontier, one inclusion proof and one consistency proof (FORMAT.md section
/// 8.2), as `sparse_tree_records_follow_the_documented_layout` finds them over every tree
/// of up to 140 leaves (what is read below level 3 depends only on positions within
/// 8-leaf groups, so larger trees add no new case).
const DOCUMENTED_MOST_ENTRIES_READ: [u64; 3] = [7, 14, 15];

/// The `T` records a ledger of these leaves holds, by leaf index, as `tree::nodes_value`
/// writes them: for each leaf whose append completed nodes of level [`STORED_LEVEL`] and
/// above, those nodes bottom-up (what `CompactRange::append` returned, filtered). A leaf
/// that completed none has no record.
fn tree_records(per_leaf: &[Vec<PerfectNode>]) -> BTreeMap<u64, Vec<Hash32>> {
    per_leaf
        .iter()
        .enumerate()
        .filter_map(|(leaf, nodes)| {
            let stored: Vec<Hash32> = nodes
                .iter()
                .filter(|(level, _, _)| *level >= STORED_LEVEL)
                .map(|(_, _, hash)| *hash)
                .collect();
            (!stored.is_empty()).then_some((leaf as u64, stored))
        })
        .collect()
}

/// `key-hex  value` lines of the `T` records of the first `size` leaves of the example
/// log, each value named by the blocks of section 11 that hold its hashes.
fn tree_record_lines(size: usize) -> Vec<(Vec<u8>, String)> {
    let log = example_log();
    let (_, per_leaf) = log.nodes();
    let leaves = log.leaves();
    let names: Vec<(Hash32, String)> = leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| (*leaf, format!("merkle-leaf-{i}")))
        .chain([(merkle::root(&log.bytes[..2]), "merkle-root-2".to_string())])
        .collect();
    let name = |hash: &Hash32| {
        names
            .iter()
            .find(|(known, _)| known == hash)
            .map_or_else(|| hex(hash), |(_, name)| name.clone())
    };
    tree_records(&per_leaf[..size])
        .into_iter()
        .map(|(leaf, nodes)| {
            let key = [b"T".as_slice(), &leaf.to_be_bytes()].concat();
            let value: Vec<String> = nodes.iter().map(name).collect();
            (key, value.join(" || "))
        })
        .collect()
}

/// The records a ledger holding exactly the two example entries stores, following
/// `ledger/src/store/keys.rs`, as `key-hex  value` lines (the `sled-records` block). The
/// ledger id is random per ledger: the block names it.
fn sled_records(hash_2: &Hash) -> Vec<String> {
    let mut head = 2u64.to_be_bytes().to_vec();
    head.extend_from_slice(&hash_2.0);
    let seq_key = |prefix: u8, seq: u64| {
        let mut key = vec![prefix];
        key.extend_from_slice(&seq.to_be_bytes());
        key
    };
    let mut records = vec![
        (
            seq_key(b'E', 1),
            "example-1-hash || example-1-bytes".to_string(),
        ),
        (
            seq_key(b'E', 2),
            "example-2-hash || example-2-bytes".to_string(),
        ),
        (b"F".to_vec(), hex(&STORE_FORMAT.to_be_bytes())),
        (b"H".to_vec(), hex(&head)),
        (b"I".to_vec(), "ledger-id (16 random bytes)".to_string()),
        // The Merkle tree (section 8): the frontier of 2 (0b10) leaves is their root.
        (b"R".to_vec(), "merkle-root-2".to_string()),
    ];
    // Neither leaf completes a node of level 3 or above, so this adds no `T` record.
    records.extend(tree_record_lines(2));
    // sled iterates keys in byte order; the document lists them that way.
    records.sort();
    records
        .into_iter()
        .map(|(key, value)| format!("{}  {value}", hex(&key)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reading docs/FORMAT.md.
// ---------------------------------------------------------------------------------------

/// Labelled fenced blocks of the document: info string `<lang> <label>` → content.
fn labelled_blocks(doc: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner.trim_end() == "```" {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        if let [_lang, label] = words.as_slice() {
            let previous = blocks.insert(label.to_string(), body);
            assert!(
                previous.is_none(),
                "block {label} appears twice in FORMAT.md"
            );
        }
    }
    blocks
}

fn doc_blocks() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(FORMAT_MD)
        .unwrap_or_else(|e| panic!("cannot read {FORMAT_MD}: {e}"));
    labelled_blocks(&doc)
}

fn block<'a>(blocks: &'a BTreeMap<String, String>, label: &str) -> &'a str {
    blocks
        .get(label)
        .unwrap_or_else(|| panic!("docs/FORMAT.md has no block labelled {label}"))
}

/// The bytes of a hex block: `;` starts a comment, whitespace is ignored.
fn hex_block(blocks: &BTreeMap<String, String>, label: &str) -> Vec<u8> {
    let digits: String = block(blocks, label)
        .lines()
        .map(|line| line.split(';').next().unwrap_or_default())
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(
        digits.len() % 2 == 0,
        "block {label}: odd number of hex digits"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("block {label}: bad hex at digit {i}: {e}"))
        })
        .collect()
}

fn hash_block(blocks: &BTreeMap<String, String>, label: &str) -> Hash {
    let bytes = hex_block(blocks, label);
    Hash::from_slice(&bytes)
        .filter(|_| bytes.len() == 32)
        .unwrap_or_else(|| panic!("block {label} is not 32 bytes"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The hash input as documented: tag, prev_hash and seq on their own commented lines,
/// then the entry bytes wrapped at 32 bytes per line.
fn hash_input_block(prev_hash: &Hash, seq: u64, bytes: &[u8]) -> String {
    format!(
        "{}  ; domain tag \"claim-ledger/entry/v1\\0\" (22 bytes)\n\
         {}  ; prev_hash (32 bytes)\n\
         {}  ; seq {seq}, u64 big-endian (8 bytes)\n\
         {}",
        hex(ENTRY_DOMAIN_TAG),
        hex(&prev_hash.0),
        hex(&seq.to_be_bytes()),
        wrapped_hex(bytes)
    )
}

/// Wraps hex at 32 bytes per line, as the raw byte blocks are written.
fn wrapped_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|chunk| format!("{}\n", hex(chunk)))
        .collect()
}

fn assert_hex_block(blocks: &BTreeMap<String, String>, label: &str, actual: &[u8]) {
    let documented = hex_block(blocks, label);
    assert!(
        documented == actual,
        "docs/FORMAT.md block {label} does not match the code.\n documented: {}\n actual:     {}\n\
         the block should read:\n{}",
        hex(&documented),
        hex(actual),
        wrapped_hex(actual)
    );
}

// ---------------------------------------------------------------------------------------
// A MessagePack annotator, to print the annotated blocks (and to check their comments
// describe the bytes they sit next to).
// ---------------------------------------------------------------------------------------

struct Annotator<'a> {
    data: &'a [u8],
    pos: usize,
    lines: Vec<(usize, String, String)>,
}

impl Annotator<'_> {
    fn annotate(data: &[u8]) -> String {
        let mut annotator = Annotator {
            data,
            pos: 0,
            lines: Vec::new(),
        };
        annotator.value(0, "");
        assert_eq!(annotator.pos, data.len(), "trailing bytes");
        let width = annotator
            .lines
            .iter()
            .map(|(_, h, _)| h.len())
            .max()
            .unwrap_or(0);
        annotator
            .lines
            .iter()
            .map(|(offset, h, comment)| format!("{h:<width$}  ; {offset:>3}  {comment}\n"))
            .collect()
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        out
    }

    fn push(&mut self, offset: usize, bytes: String, depth: usize, comment: String) {
        self.lines
            .push((offset, bytes, format!("{}{comment}", "  ".repeat(depth))));
    }

    fn value(&mut self, depth: usize, what: &str) {
        let offset = self.pos;
        let tag = self.data[self.pos];
        match tag {
            0x00..=0x7f => {
                self.take(1);
                self.push(
                    offset,
                    hex(&[tag]),
                    depth,
                    format!("{what}{tag} (positive fixint)"),
                );
            }
            0xcc..=0xcf => {
                let n = 1 << (tag - 0xcc);
                self.take(1);
                let body = self.take(n).to_vec();
                let value = body.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                self.push(
                    offset,
                    format!("{tag:02x} {}", hex(&body)),
                    depth,
                    format!("{what}{value} (uint {})", 8 * n),
                );
            }
            0xc0 => {
                self.take(1);
                self.push(offset, "c0".into(), depth, format!("{what}nil"));
            }
            0xa0..=0xbf | 0xd9 => self.string(depth, what),
            0xc4 => {
                let n = usize::from(self.data[self.pos + 1]);
                self.take(2);
                let head = format!("c4 {n:02x}");
                self.push(offset, head, depth, format!("{what}bin 8, {n} bytes:"));
                for start in (0..n).step_by(16) {
                    let at = self.pos;
                    let chunk = hex(self.take(16.min(n - start)));
                    let end = (start + 16).min(n);
                    self.push(at, chunk, depth + 1, format!("bytes {start}..{end}"));
                }
            }
            0x80..=0x8f => {
                let n = usize::from(tag & 0x0f);
                self.take(1);
                let plural = if n == 1 { "" } else { "s" };
                self.push(
                    offset,
                    hex(&[tag]),
                    depth,
                    format!("{what}fixmap, {n} pair{plural}"),
                );
                for _ in 0..n {
                    self.string(depth + 1, "key ");
                    self.value(depth + 2, "");
                }
            }
            0x90..=0x9f => {
                let n = usize::from(tag & 0x0f);
                self.take(1);
                let plural = if n == 1 { "" } else { "s" };
                self.push(
                    offset,
                    hex(&[tag]),
                    depth,
                    format!("{what}fixarray, {n} element{plural}"),
                );
                for _ in 0..n {
                    self.value(depth + 1, "");
                }
            }
            other => panic!("the annotator does not know tag {other:#04x}"),
        }
    }

    fn string(&mut self, depth: usize, what: &str) {
        let offset = self.pos;
        let tag = self.data[self.pos];
        let (head_len, n, kind) = match tag {
            0xa0..=0xbf => (1, usize::from(tag & 0x1f), format!("fixstr {}", tag & 0x1f)),
            0xd9 => {
                let n = usize::from(self.data[self.pos + 1]);
                (2, n, format!("str 8, {n}"))
            }
            other => panic!("expected a string at {offset}, found tag {other:#04x}"),
        };
        let head = hex(self.take(head_len));
        let body = self.take(n).to_vec();
        let text = String::from_utf8(body.clone()).expect("utf-8");
        self.push(
            offset,
            format!("{head} {}", hex(&body)),
            depth,
            format!("{what}{text:?} ({kind})"),
        );
    }
}

/// Every labelled block of the worked example, as it should read in FORMAT.md.
fn expected_blocks() -> Vec<(String, String)> {
    let one = example_1();
    let bytes_1 = one.encode().unwrap();
    let hash_1 = chain_hash(&Hash::ZERO, 1, &bytes_1);
    let two = example_2(hash_1);
    let bytes_2 = two.encode().unwrap();
    let hash_2 = chain_hash(&hash_1, 2, &bytes_2);
    let mut out = vec![
        (
            "example-1-entry".to_string(),
            serde_json::to_string_pretty(&one).unwrap() + "\n",
        ),
        ("example-1-annotated".into(), Annotator::annotate(&bytes_1)),
        ("example-1-bytes".into(), wrapped_hex(&bytes_1)),
        (
            "example-1-hash-input".into(),
            hash_input_block(&Hash::ZERO, 1, &bytes_1),
        ),
        ("example-1-hash".into(), format!("{hash_1}\n")),
        (
            "example-2-entry".to_string(),
            serde_json::to_string_pretty(&two).unwrap() + "\n",
        ),
        ("example-2-bytes".into(), wrapped_hex(&bytes_2)),
        (
            "example-2-hash-input".into(),
            hash_input_block(&hash_1, 2, &bytes_2),
        ),
        ("example-2-hash".into(), format!("{hash_2}\n")),
        (
            "sled-records".into(),
            sled_records(&hash_2).join("\n") + "\n",
        ),
        ("snapshot-pair".into(), snapshot_pair_block()),
    ];
    for (label, bytes) in fragments() {
        out.push((label.to_string(), Annotator::annotate(&bytes)));
    }
    out.extend(audit_blocks());
    out
}

// ---------------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------------

#[test]
fn example_1_bytes_and_hash_match_the_document() {
    let blocks = doc_blocks();
    let entry = example_1();
    let bytes = entry.encode().unwrap();
    assert_hex_block(&blocks, "example-1-bytes", &bytes);
    assert_hex_block(&blocks, "example-1-annotated", &bytes);
    assert_hex_block(
        &blocks,
        "example-1-hash-input",
        &hash_input(&Hash::ZERO, 1, &bytes),
    );
    let hash = chain_hash(&Hash::ZERO, 1, &bytes);
    assert_eq!(hash_block(&blocks, "example-1-hash"), hash);
    // The chain hash is plain BLAKE3 over the documented hash input.
    let documented_input = hex_block(&blocks, "example-1-hash-input");
    assert_eq!(blake3::hash(&documented_input).as_bytes(), &hash.0);
}

#[test]
fn example_2_is_chained_to_example_1() {
    let blocks = doc_blocks();
    let hash_1 = hash_block(&blocks, "example-1-hash");
    let entry = example_2(hash_1);
    let bytes = entry.encode().unwrap();
    assert_hex_block(&blocks, "example-2-bytes", &bytes);
    assert_hex_block(
        &blocks,
        "example-2-hash-input",
        &hash_input(&hash_1, 2, &bytes),
    );
    let hash = chain_hash(&hash_1, 2, &bytes);
    assert_eq!(hash_block(&blocks, "example-2-hash"), hash);
    let documented_input = hex_block(&blocks, "example-2-hash-input");
    assert_eq!(blake3::hash(&documented_input).as_bytes(), &hash.0);
    // prev_hash sits in the entry bytes as bin 8 (c4 20) right after its key.
    let key_and_tag = [b"\xa9prev_hash\xc4\x20".as_slice(), &hash_1.0].concat();
    assert!(bytes.windows(key_and_tag.len()).any(|w| w == key_and_tag));
}

#[test]
fn documented_bytes_decode_to_the_documented_entries() {
    let blocks = doc_blocks();
    let one = Entry::decode(&hex_block(&blocks, "example-1-bytes")).unwrap();
    assert_eq!(one, example_1());
    let two = Entry::decode(&hex_block(&blocks, "example-2-bytes")).unwrap();
    assert_eq!(two, example_2(hash_block(&blocks, "example-1-hash")));
    assert_eq!(
        two.prev_hash,
        chain_hash(&Hash::ZERO, 1, &one.encode().unwrap())
    );
    // Re-encoding what was decoded gives the stored bytes back.
    assert_eq!(one.encode().unwrap(), hex_block(&blocks, "example-1-bytes"));
}

#[test]
fn documented_json_is_the_export_form_of_the_entries() {
    let blocks = doc_blocks();
    let hash_1 = hash_block(&blocks, "example-1-hash");
    for (label, entry) in [
        ("example-1-entry", example_1()),
        ("example-2-entry", example_2(hash_1)),
    ] {
        let documented: serde_json::Value = serde_json::from_str(block(&blocks, label))
            .unwrap_or_else(|e| panic!("block {label} is not JSON: {e}"));
        assert_eq!(documented, serde_json::to_value(&entry).unwrap(), "{label}");
        let decoded: Entry = serde_json::from_str(block(&blocks, label)).unwrap();
        assert_eq!(decoded, entry, "{label}");
    }
}

/// The illustrative snapshot digest of section 2.2: of empty snapshot bytes.
fn example_snapshot_digest() -> Hash {
    schemas::entry::snapshot_digest(b"")
}

/// The pair an entry at a snapshot seq ends with (the `snapshot-pair` block), for
/// [`example_snapshot_digest`].
fn snapshot_pair() -> Vec<u8> {
    let mut pair = vec![0xa8];
    pair.extend_from_slice(b"snapshot");
    pair.extend_from_slice(&[0xc4, 0x20]);
    pair.extend_from_slice(&example_snapshot_digest().0);
    pair
}

/// The `snapshot-pair` block: the pair, one part per line with a comment.
fn snapshot_pair_block() -> String {
    let digest = example_snapshot_digest().to_hex();
    let mut out = String::new();
    for (part, comment) in [
        (hex(b"\xa8snapshot"), "key \"snapshot\" (fixstr 8)"),
        ("c4 20".to_string(), "bin 8, 32 bytes"),
        (digest, "digest of no bytes"),
    ] {
        let part = match part.strip_prefix("a8") {
            Some(key) if part.len() == 18 => format!("a8 {key}"),
            _ => part,
        };
        writeln!(out, "{part:<66} ; {comment}").unwrap();
    }
    out
}

#[test]
fn the_documented_snapshot_field_is_a_seventh_pair_at_the_end() {
    let blocks = doc_blocks();
    let pair = snapshot_pair();
    assert_hex_block(&blocks, "snapshot-pair", &pair);
    // The same entry with the field: `fixmap` of 7 instead of 6, the six pairs unchanged,
    // then the seventh; and it decodes back, while the six-pair bytes decode to `None`.
    let plain = example_1().encode().unwrap();
    let with = Entry {
        snapshot: Some(example_snapshot_digest()),
        ..example_1()
    };
    let bytes = with.encode().unwrap();
    assert_eq!((plain[0], bytes[0]), (0x86, 0x87));
    assert_eq!(bytes[1..], [&plain[1..], &pair[..]].concat()[..]);
    assert_eq!(Entry::decode(&bytes).unwrap(), with);
    assert_eq!(Entry::decode(&plain).unwrap().snapshot, None);
    // derive_key mode with the documented context: what `b3sum --derive-key` computes.
    assert!(block(&blocks, "snapshot-context").contains(schemas::entry::SNAPSHOT_CONTEXT));
    assert_eq!(
        example_snapshot_digest().0,
        *blake3::Hasher::new_derive_key(schemas::entry::SNAPSHOT_CONTEXT)
            .finalize()
            .as_bytes()
    );
}

#[test]
fn documented_fragments_match_the_code() {
    let blocks = doc_blocks();
    for (label, bytes) in fragments() {
        assert_hex_block(&blocks, label, &bytes);
    }
}

#[test]
fn documented_sled_records_follow_the_key_layout() {
    let blocks = doc_blocks();
    let hash_2 = hash_block(&blocks, "example-2-hash");
    let documented: Vec<String> = block(&blocks, "sled-records")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    let expected: Vec<String> = sled_records(&hash_2)
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(documented, expected);
}

/// Every documented block, character for character (comments and layout included), so a
/// stale annotation is caught even when its hex digits still match.
#[test]
fn documented_blocks_read_exactly_as_generated() {
    let blocks = doc_blocks();
    for (label, expected) in expected_blocks() {
        assert_eq!(
            block(&blocks, &label),
            expected,
            "docs/FORMAT.md block {label} differs from what the code generates; \
             run with --ignored --nocapture to print it"
        );
    }
}

/// Prints every block of the worked example, ready to paste into FORMAT.md.
#[test]
#[ignore = "generator: run with --ignored --nocapture to print the documented blocks"]
fn print_documented_blocks() {
    for (label, body) in expected_blocks() {
        let lang = block_lang(&label);
        println!("```{lang} {label}\n{body}```\n");
    }
}

// ---------------------------------------------------------------------------------------
// Encoding rules stated in FORMAT.md that the example does not exercise.
// ---------------------------------------------------------------------------------------

#[test]
fn integers_use_the_smallest_msgpack_width() {
    // `seq` is a u64 but is written in the smallest MessagePack integer that holds it.
    for (seq, expected) in [
        (1u64, vec![0x01]),
        (127, vec![0x7f]),
        (128, vec![0xcc, 0x80]),
        (256, vec![0xcd, 0x01, 0x00]),
        (65_536, vec![0xce, 0x00, 0x01, 0x00, 0x00]),
        (1 << 32, vec![0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
    ] {
        let mut entry = example_1();
        entry.seq = seq;
        let bytes = entry.encode().unwrap();
        let pattern = [b"\xa3seq".as_slice(), &expected].concat();
        assert!(
            bytes.windows(pattern.len()).any(|w| w == pattern),
            "seq {seq} should encode as {}",
            hex(&expected)
        );
        assert_eq!(Entry::decode(&bytes).unwrap(), entry);
    }
}

#[test]
fn observed_at_is_rfc3339_utc_with_minimal_fraction() {
    for (time, text) in [
        ("2026-11-28T12:00:00Z", "2026-11-28T12:00:00Z"),
        ("2026-11-28T12:00:01.250Z", "2026-11-28T12:00:01.250Z"),
        ("2026-11-28T12:00:01.000250Z", "2026-11-28T12:00:01.000250Z"),
        (
            "2026-11-28T12:00:01.000000250Z",
            "2026-11-28T12:00:01.000000250Z",
        ),
        ("2026-11-28T13:00:00+01:00", "2026-11-28T12:00:00Z"),
    ] {
        let mut entry = example_1();
        entry.observed_at = time.parse().unwrap();
        let bytes = entry.encode().unwrap();
        let mut pattern = b"\xabobserved_at".to_vec();
        pattern.push(0xa0 | u8::try_from(text.len()).unwrap());
        pattern.extend_from_slice(text.as_bytes());
        assert!(
            bytes.windows(pattern.len()).any(|w| w == pattern),
            "{time} should be stored as {text}"
        );
    }
}

#[test]
fn strings_of_32_bytes_or_more_use_str8() {
    let mut entry = example_1();
    let uid = "0123456789abcdef0123456789abcdef"; // 32 bytes: one more than a fixstr holds
    let Change::Object(change) = &mut entry.change else {
        panic!("example 1 records an object change");
    };
    change.uid = uid.into();
    let bytes = entry.encode().unwrap();
    let pattern = [b"\xa3uid\xd9\x20".as_slice(), uid.as_bytes()].concat();
    assert!(bytes.windows(pattern.len()).any(|w| w == pattern));
}

#[test]
fn an_unknown_format_version_is_refused() {
    let blocks = doc_blocks();
    let mut bytes = hex_block(&blocks, "example-1-bytes");
    // "format_version" is the first key; its value is the byte right after it.
    let at = 1 + 1 + "format_version".len();
    assert_eq!(bytes[at], 0x01);
    bytes[at] = 0x02;
    assert!(matches!(
        Entry::decode(&bytes),
        Err(SchemaError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    ));
}

#[test]
fn the_reader_accepts_only_the_canonical_form() {
    let entry = example_1();
    let canonical = entry.encode().unwrap();
    let refused = |bytes: &[u8], what: &str| {
        // rmp_serde alone reads every one of these; the re-encoding check refuses them.
        assert!(
            rmp_serde::from_slice::<Entry>(bytes).is_ok(),
            "{what}: rmp_serde should read it"
        );
        assert!(
            matches!(Entry::decode(bytes), Err(SchemaError::Undecodable(_))),
            "{what} was accepted"
        );
    };

    // An unknown key: add `"x": nil` to the envelope map.
    let mut extra = canonical.clone();
    assert_eq!(extra[0], 0x86);
    extra[0] = 0x87;
    extra.extend_from_slice(b"\xa1x\xc0");
    refused(&extra, "an unknown key");

    // A missing Option key: drop `"deletion_timestamp": nil`.
    let pair = b"\xb2deletion_timestamp\xc0";
    let at = canonical
        .windows(pair.len())
        .position(|w| w == pair)
        .unwrap();
    let mut missing = [&canonical[..at], &canonical[at + pair.len()..]].concat();
    let object_key = b"\xa6object\x8a";
    let object_map = canonical
        .windows(object_key.len())
        .position(|w| w == object_key)
        .unwrap()
        + object_key.len()
        - 1;
    missing[object_map] = 0x89;
    refused(&missing, "a missing Option key");

    // A wider integer than needed: seq 1 as uint 64.
    let seq_pair = b"\xa3seq\x01";
    let at = canonical
        .windows(seq_pair.len())
        .position(|w| w == seq_pair)
        .unwrap();
    let wide = [
        &canonical[..at],
        b"\xa3seq\xcf\0\0\0\0\0\0\0\x01",
        &canonical[at + seq_pair.len()..],
    ]
    .concat();
    refused(&wide, "a wide integer");

    // Structs as positional arrays (rmp_serde::to_vec).
    refused(&rmp_serde::to_vec(&entry).unwrap(), "positional structs");

    // Trailing bytes after the value.
    let mut trailing = canonical.clone();
    trailing.extend_from_slice(b"\xa4junk");
    refused(&trailing, "trailing bytes");

    assert_eq!(Entry::decode(&canonical).unwrap(), entry);
}

/// Hashes and sizes quoted in the prose (outside labelled blocks) are the example's.
#[test]
fn hashes_quoted_in_the_prose_are_the_documented_ones() {
    let doc = std::fs::read_to_string(FORMAT_MD).unwrap();
    let blocks = labelled_blocks(&doc);
    let mut known = vec![
        hash_block(&blocks, "example-1-hash").to_hex(),
        hash_block(&blocks, "example-2-hash").to_hex(),
        hash_block(&blocks, "example-3-hash").to_hex(),
        hex(&merkle::EMPTY_ROOT),
    ];
    for label in [
        "merkle-leaf-0",
        "merkle-leaf-1",
        "merkle-leaf-2",
        "merkle-root-2",
        "merkle-root-3",
        "test-key-seed",
        "test-public-key",
    ] {
        known.push(hex(&hex_block(&blocks, label)));
    }
    let mut in_labelled_block = false;
    let mut quoted = 0;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            if in_labelled_block {
                in_labelled_block = false;
            } else {
                in_labelled_block = info.split_whitespace().count() == 2;
            }
            continue;
        }
        if in_labelled_block {
            continue;
        }
        for word in line.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() == 64 {
                assert!(
                    known.iter().any(|k| k == word),
                    "FORMAT.md quotes {word}, which is no documented hash: {line}"
                );
                quoted += 1;
            }
        }
    }
    assert!(quoted >= 3, "the recompute instructions quote the hashes");
    let len = example_1().encode().unwrap().len();
    assert!(doc.contains(&format!("Its {len} bytes")));
    assert!(doc.contains(&format!("# {len} bytes")));
    let hash_1 = hash_block(&blocks, "example-1-hash");
    let len_2 = example_2(hash_1).encode().unwrap().len();
    assert!(doc.contains(&format!("Its {len_2} bytes differ")));
}

#[test]
fn the_domain_tag_is_22_bytes_ending_in_nul() {
    assert_eq!(ENTRY_DOMAIN_TAG, b"claim-ledger/entry/v1\0");
    assert_eq!(ENTRY_DOMAIN_TAG.len(), 22);
}

// ---------------------------------------------------------------------------------------
// BLAKE3 test vectors.
// ---------------------------------------------------------------------------------------

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(BLAKE3_VECTORS).unwrap_or_else(|e| {
        panic!("cannot read {BLAKE3_VECTORS} (the vectors live in the repository): {e}")
    });
    serde_json::from_str(&text).unwrap()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The official input of a given length: the bytes 0, 1, ..., 250, 0, 1, ... repeated.
fn vector_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn cases(vectors: &serde_json::Value) -> Vec<(usize, &serde_json::Value)> {
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "the vector file looks truncated");
    cases
        .iter()
        .map(|case| (case["input_len"].as_u64().unwrap() as usize, case))
        .collect()
}

#[test]
fn blake3_hash_matches_the_official_vectors() {
    let vectors = vectors();
    for (len, case) in cases(&vectors) {
        let input = vector_input(len);
        let expected = unhex(case["hash"].as_str().unwrap());
        // Default 32-byte output, as chain_hash uses.
        assert_eq!(
            blake3::hash(&input).as_bytes(),
            &expected[..32],
            "hash, input_len {len}"
        );
        // The same input fed in the pieces chain_hash feeds (22 + 32 + 8 + rest bytes).
        let mut hasher = blake3::Hasher::new();
        let mut rest = input.as_slice();
        for piece in [ENTRY_DOMAIN_TAG.len(), 32, 8] {
            let (head, tail) = rest.split_at(piece.min(rest.len()));
            hasher.update(head);
            rest = tail;
        }
        hasher.update(rest);
        assert_eq!(
            hasher.finalize().as_bytes(),
            &expected[..32],
            "incremental hash, input_len {len}"
        );
        // The extended output.
        let mut extended = vec![0u8; expected.len()];
        blake3::Hasher::new()
            .update(&input)
            .finalize_xof()
            .fill(&mut extended);
        assert_eq!(extended, expected, "extended hash, input_len {len}");
    }
}

#[test]
fn blake3_keyed_and_derive_key_match_the_official_vectors() {
    let vectors = vectors();
    let key: [u8; 32] = vectors["key"]
        .as_str()
        .unwrap()
        .as_bytes()
        .try_into()
        .unwrap();
    let context = vectors["context_string"].as_str().unwrap();
    for (len, case) in cases(&vectors) {
        let input = vector_input(len);
        let keyed = unhex(case["keyed_hash"].as_str().unwrap());
        assert_eq!(
            blake3::keyed_hash(&key, &input).as_bytes(),
            &keyed[..32],
            "keyed_hash, input_len {len}"
        );
        let derived = unhex(case["derive_key"].as_str().unwrap());
        assert_eq!(
            blake3::derive_key(context, &input),
            derived[..32],
            "derive_key, input_len {len}"
        );
    }
}

#[test]
fn chain_hash_is_blake3_of_the_concatenation() {
    // chain_hash is exactly the plain (unkeyed) BLAKE3 of tag || prev || seq_be || bytes,
    // for entry bodies around the 1024-byte chunk boundary and beyond.
    let vectors = vectors();
    let prev = Hash(*blake3::hash(b"previous").as_bytes());
    for (len, _) in cases(&vectors) {
        let body = vector_input(len);
        for seq in [1u64, 2, 255, 256, u64::MAX] {
            let expected = blake3::hash(&hash_input(&prev, seq, &body));
            assert_eq!(chain_hash(&prev, seq, &body).0, *expected.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The Merkle tree, the signed checkpoint and the export bundle of the worked example
// (FORMAT.md sections 8 to 11), recomputed with `schemas::merkle`, `schemas::checkpoint`
// and `schemas::bundle`.
// ---------------------------------------------------------------------------------------

/// The name of the published test key (and the origin of the example checkpoint).
const TEST_KEY_NAME: &str = "claim-ledger.example/test";
/// The published seed of the test key: 32 bytes of 0x01. A test key, never to sign
/// anything real.
const TEST_SEED: [u8; 32] = [0x01; 32];
/// `created_at` of the example bundle's manifest.
const BUNDLE_CREATED_AT: &str = "2026-11-28T12:05:00Z";

/// Example 3: seq 3, the same pod deleted, chained to example 2.
fn example_3(prev_hash: Hash) -> Entry {
    Entry {
        format_version: FORMAT_VERSION,
        seq: 3,
        observed_at: "2026-11-28T12:00:02Z".parse().unwrap(),
        prev_hash,
        change: Change::Object(pod_change(
            "14",
            ChangeKind::Deleted,
            Some("sbx-7"),
            Some("Running"),
        )),
        transitions: vec![],
        snapshot: None,
    }
}

/// Stored perfect nodes by `(level, index)`, as `merkle`'s `NodeReader` reads them.
type NodeMap = BTreeMap<(u32, u64), Hash32>;

/// The three-entry log of the worked example: entries, stored bytes, chain hashes.
struct ExampleLog {
    entries: Vec<Entry>,
    bytes: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
}

fn example_log() -> ExampleLog {
    let one = example_1();
    let bytes_1 = one.encode().unwrap();
    let hash_1 = chain_hash(&Hash::ZERO, 1, &bytes_1);
    let two = example_2(hash_1);
    let bytes_2 = two.encode().unwrap();
    let hash_2 = chain_hash(&hash_1, 2, &bytes_2);
    let three = example_3(hash_2);
    let bytes_3 = three.encode().unwrap();
    let hash_3 = chain_hash(&hash_2, 3, &bytes_3);
    ExampleLog {
        entries: vec![one, two, three],
        bytes: vec![bytes_1, bytes_2, bytes_3],
        hashes: vec![hash_1, hash_2, hash_3],
    }
}

impl ExampleLog {
    fn leaves(&self) -> Vec<Hash32> {
        self.bytes.iter().map(|b| merkle::leaf_hash(b)).collect()
    }

    /// Every perfect node of the tree, as `merkle` computes them (the ledger stores those
    /// of level 3 and above in `T` records and recomputes the others from its entries; its
    /// proofs are the same), and what each append completed.
    fn nodes(&self) -> (NodeMap, Vec<Vec<PerfectNode>>) {
        let mut range = CompactRange::new();
        let mut all = BTreeMap::new();
        let mut per_leaf = Vec::new();
        for leaf in self.leaves() {
            let nodes = range.append(leaf);
            for (level, index, hash) in &nodes {
                all.insert((*level, *index), *hash);
            }
            per_leaf.push(nodes);
        }
        (all, per_leaf)
    }

    fn frontier(&self, size: usize) -> CompactRange {
        let mut range = CompactRange::new();
        for leaf in &self.leaves()[..size] {
            range.append(*leaf);
        }
        range
    }

    fn inclusion(&self, leaf_index: u64) -> InclusionProof {
        let (nodes, _) = self.nodes();
        InclusionProof::new(
            leaf_index,
            3,
            merkle::inclusion_proof(&nodes, leaf_index, 3).unwrap(),
        )
    }

    fn consistency(&self, from: u64, to: u64) -> ConsistencyProof {
        let (nodes, _) = self.nodes();
        ConsistencyProof::new(
            from,
            to,
            merkle::consistency_proof(&nodes, from, to).unwrap(),
        )
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: TEST_KEY_NAME.into(),
            size: 3,
            root: merkle::root(&self.bytes),
            extensions: vec![],
        }
    }

    /// One `entries.jsonl` line, exactly as `api::bundle` writes it (`views::EntryLine`:
    /// the entry serialized in declaration order, not a re-sorted JSON value).
    fn entry_line(&self, i: usize) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            seq: u64,
            leaf_index: u64,
            hash: Hash,
            prev_hash: Hash,
            entry: &'a Entry,
            bytes: String,
        }
        let entry = &self.entries[i];
        serde_json::to_string(&Line {
            seq: entry.seq,
            leaf_index: entry.seq - 1,
            hash: self.hashes[i],
            prev_hash: entry.prev_hash,
            entry,
            bytes: B64.encode(&self.bytes[i]),
        })
        .unwrap()
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(TEST_KEY_NAME, 1, 3, 3, BUNDLE_CREATED_AT.parse().unwrap())
    }

    fn proofs(&self) -> Proofs {
        Proofs {
            tree_size: 3,
            first: self.inclusion(0),
            last: self.inclusion(2),
            consistency: None,
        }
    }
}

fn test_key() -> SignerKey {
    SignerKey::from_seed(TEST_KEY_NAME, TEST_SEED).unwrap()
}

/// A JSON file as `api::bundle` writes it: pretty-printed, then a newline.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

fn hash_line(hash: &Hash32, comment: &str) -> String {
    format!("{}  ; {comment}\n", hex(hash))
}

/// The blocks of sections 8 to 11, as they should read in FORMAT.md.
fn audit_blocks() -> Vec<(String, String)> {
    let log = example_log();
    let leaves = log.leaves();
    let root_2 = merkle::root(&log.bytes[..2]);
    let root_3 = merkle::root(&log.bytes);
    let key = test_key();
    let public = key.verifier().public_key();
    let checkpoint = log.checkpoint();
    let body = checkpoint.to_body().unwrap();
    let note = SignedNote::sign(&body, &[&key]).unwrap();
    let signature = &note.signatures[0].signature;
    let mut key_id_input = TEST_KEY_NAME.as_bytes().to_vec();
    key_id_input.extend_from_slice(&[0x0a, 0x01]);
    key_id_input.extend_from_slice(&public);
    let c_key = [b"C".as_slice(), &3u64.to_be_bytes()].concat();
    // The three-entry ledger's tree records: its `T` records (none: no leaf of the three
    // completes a node of level 3), then `R`, the frontier of 3 = 0b11 leaves.
    let mut tree_records_3: Vec<(Vec<u8>, String)> = tree_record_lines(3);
    tree_records_3.push((b"R".to_vec(), "merkle-root-2 || merkle-leaf-2".into()));
    tree_records_3.sort();
    let summary = verify_bundle(
        &BundleParts {
            manifest: &pretty(&log.manifest()),
            entries: &(0..3).map(|i| log.entry_line(i) + "\n").collect::<String>(),
            checkpoint: &note.to_text(),
            proofs: &pretty(&log.proofs()),
        },
        &[key.verifier()],
        None,
    )
    .unwrap();
    vec![
        (
            "example-3-entry".into(),
            serde_json::to_string_pretty(&log.entries[2]).unwrap() + "\n",
        ),
        ("example-3-bytes".into(), wrapped_hex(&log.bytes[2])),
        ("example-3-hash".into(), format!("{}\n", log.hashes[2])),
        (
            "merkle-leaf-0-input".into(),
            format!("00  ; leaf prefix (1 byte)\n{}", wrapped_hex(&log.bytes[0])),
        ),
        (
            "merkle-empty-root".into(),
            format!("{}\n", hex(&merkle::EMPTY_ROOT)),
        ),
        ("merkle-leaf-0".into(), format!("{}\n", hex(&leaves[0]))),
        ("merkle-leaf-1".into(), format!("{}\n", hex(&leaves[1]))),
        ("merkle-leaf-2".into(), format!("{}\n", hex(&leaves[2]))),
        ("merkle-root-1".into(), format!("{}\n", hex(&leaves[0]))),
        (
            "merkle-root-2-input".into(),
            format!(
                "01  ; node prefix (1 byte)\n{}{}",
                hash_line(&leaves[0], "left: merkle-leaf-0"),
                hash_line(&leaves[1], "right: merkle-leaf-1")
            ),
        ),
        ("merkle-root-2".into(), format!("{}\n", hex(&root_2))),
        (
            "merkle-root-3-input".into(),
            format!(
                "01  ; node prefix (1 byte)\n{}{}",
                hash_line(&root_2, "left: merkle-root-2 (leaves 0..2)"),
                hash_line(&leaves[2], "right: merkle-leaf-2 (leaf 2)")
            ),
        ),
        ("merkle-root-3".into(), format!("{}\n", hex(&root_3))),
        ("inclusion-proof-seq-1".into(), pretty(&log.inclusion(0))),
        ("inclusion-proof-seq-3".into(), pretty(&log.inclusion(2))),
        (
            "consistency-proof-2-3".into(),
            pretty(&log.consistency(2, 3)),
        ),
        (
            "tree-records-3".into(),
            tree_records_3
                .iter()
                .map(|(key, value)| format!("{}  {value}\n", hex(key)))
                .collect(),
        ),
        ("test-key-seed".into(), format!("{}\n", hex(&TEST_SEED))),
        ("test-public-key".into(), format!("{}\n", hex(&public))),
        (
            "test-key-id-input".into(),
            format!(
                "{}  ; key name {TEST_KEY_NAME:?} ({} bytes)\n\
                 0a  ; newline\n\
                 01  ; signature type: Ed25519\n\
                 {}  ; public key (32 bytes)\n",
                hex(TEST_KEY_NAME.as_bytes()),
                TEST_KEY_NAME.len(),
                hex(&public)
            ),
        ),
        ("test-key-id".into(), format!("{:08x}\n", key.key_id())),
        ("test-verifier-key".into(), format!("{}\n", key.verifier())),
        ("test-signer-key".into(), format!("{}\n", key.to_text())),
        ("checkpoint-body".into(), body.clone()),
        ("checkpoint-body-hex".into(), wrapped_hex(body.as_bytes())),
        ("checkpoint-signature".into(), wrapped_hex(signature)),
        ("checkpoint-note".into(), note.to_text()),
        (
            "checkpoint-record".into(),
            format!("{}  checkpoint-note\n", hex(&c_key)),
        ),
        ("bundle-manifest".into(), pretty(&log.manifest())),
        (
            "bundle-entries".into(),
            (0..3).map(|i| log.entry_line(i) + "\n").collect(),
        ),
        ("bundle-proofs".into(), pretty(&log.proofs())),
        ("bundle-verified".into(), summary.one_line() + "\n"),
    ]
}

/// The language tag of a printed block.
fn block_lang(label: &str) -> &'static str {
    if label.ends_with("-entry")
        || label.starts_with("inclusion-proof")
        || label.starts_with("consistency-proof")
        || label == "bundle-manifest"
        || label == "bundle-proofs"
    {
        "json"
    } else if label == "bundle-entries" {
        "jsonl"
    } else if label.ends_with("-records")
        || label.ends_with("-records-3")
        || label.ends_with("-record")
        || label == "test-verifier-key"
        || label == "test-signer-key"
        || label == "checkpoint-body"
        || label == "checkpoint-note"
        || label == "bundle-verified"
    {
        "text"
    } else {
        "hex"
    }
}

fn doc_hash32(blocks: &BTreeMap<String, String>, label: &str) -> Hash32 {
    hex_block(blocks, label)
        .try_into()
        .unwrap_or_else(|_| panic!("block {label} is not 32 bytes"))
}

#[test]
fn example_3_is_chained_to_example_2() {
    let blocks = doc_blocks();
    let hash_2 = hash_block(&blocks, "example-2-hash");
    let entry = example_3(hash_2);
    let bytes = entry.encode().unwrap();
    assert_hex_block(&blocks, "example-3-bytes", &bytes);
    let hash = chain_hash(&hash_2, 3, &bytes);
    assert_eq!(hash_block(&blocks, "example-3-hash"), hash);
    assert_eq!(
        Entry::decode(&hex_block(&blocks, "example-3-bytes")).unwrap(),
        entry
    );
    let documented: Entry = serde_json::from_str(block(&blocks, "example-3-entry")).unwrap();
    assert_eq!(documented, entry);
}

#[test]
fn documented_merkle_hashes_are_rfc6962_over_the_entry_bytes() {
    let blocks = doc_blocks();
    let entries: Vec<Vec<u8>> = (1..=3)
        .map(|n| hex_block(&blocks, &format!("example-{n}-bytes")))
        .collect();
    // Leaf hash: SHA-256(0x00 || the stored entry bytes), without the stored chain hash.
    for (i, bytes) in entries.iter().enumerate() {
        let documented = doc_hash32(&blocks, &format!("merkle-leaf-{i}"));
        assert_eq!(documented, merkle::leaf_hash(bytes), "leaf {i}");
        let mut input = vec![0x00];
        input.extend_from_slice(bytes);
        assert_eq!(documented, <Hash32>::from(Sha256::digest(&input)));
    }
    let leaf_0_input = hex_block(&blocks, "merkle-leaf-0-input");
    assert_eq!(leaf_0_input[0], 0x00);
    assert_eq!(&leaf_0_input[1..], entries[0].as_slice());
    assert_eq!(
        <Hash32>::from(Sha256::digest(&leaf_0_input)),
        doc_hash32(&blocks, "merkle-leaf-0")
    );
    // Roots of the first 1, 2 and 3 entries, and the documented node inputs.
    for size in 1..=3 {
        assert_eq!(
            doc_hash32(&blocks, &format!("merkle-root-{size}")),
            merkle::root(&entries[..size]),
            "root of size {size}"
        );
    }
    for (input, root) in [
        ("merkle-root-2-input", "merkle-root-2"),
        ("merkle-root-3-input", "merkle-root-3"),
    ] {
        let input = hex_block(&blocks, input);
        assert_eq!(input.len(), 65);
        assert_eq!(input[0], 0x01);
        assert_eq!(
            <Hash32>::from(Sha256::digest(&input)),
            doc_hash32(&blocks, root)
        );
        let (left, right) = input[1..].split_at(32);
        assert_eq!(
            merkle::node_hash(&left.try_into().unwrap(), &right.try_into().unwrap()),
            doc_hash32(&blocks, root)
        );
    }
    assert_eq!(
        <Hash32>::from(Sha256::digest([])),
        merkle::EMPTY_ROOT,
        "the empty root"
    );
    assert!(block(&blocks, "merkle-empty-root").contains(&hex(&merkle::EMPTY_ROOT)));
}

#[test]
fn documented_proofs_verify_against_the_documented_roots() {
    let blocks = doc_blocks();
    let log = example_log();
    let root_3 = doc_hash32(&blocks, "merkle-root-3");
    for (label, leaf_index) in [
        ("inclusion-proof-seq-1", 0u64),
        ("inclusion-proof-seq-3", 2),
    ] {
        let proof: InclusionProof = serde_json::from_str(block(&blocks, label)).unwrap();
        assert_eq!(proof, log.inclusion(leaf_index), "{label}");
        let leaf = doc_hash32(&blocks, &format!("merkle-leaf-{leaf_index}"));
        proof.verify(&leaf, &root_3).unwrap();
        // Any other leaf fails.
        let other = doc_hash32(&blocks, "merkle-leaf-1");
        assert!(proof.verify(&other, &root_3).is_err());
    }
    let proof: ConsistencyProof =
        serde_json::from_str(block(&blocks, "consistency-proof-2-3")).unwrap();
    assert_eq!(proof, log.consistency(2, 3));
    proof
        .verify(&doc_hash32(&blocks, "merkle-root-2"), &root_3)
        .unwrap();
    assert!(proof
        .verify(&doc_hash32(&blocks, "merkle-leaf-0"), &root_3)
        .is_err());
}

#[test]
fn documented_tree_records_are_what_the_ledger_stores() {
    // A `T` record holds what `CompactRange::append` returned for its leaf, filtered to
    // levels 3 and above; `R` is the frontier after the head, largest subtree first.
    let doc = std::fs::read_to_string(FORMAT_MD).unwrap();
    let blocks = labelled_blocks(&doc);
    let log = example_log();
    let (_, per_leaf) = log.nodes();
    let leaf = |i: usize| doc_hash32(&blocks, &format!("merkle-leaf-{i}"));
    let root_2 = doc_hash32(&blocks, "merkle-root-2");
    let value = |nodes: &[PerfectNode]| -> Vec<Hash32> { nodes.iter().map(|n| n.2).collect() };
    // What each append completes: all of it below level 3, so none of it is stored.
    assert_eq!(value(&per_leaf[0]), vec![leaf(0)]);
    assert_eq!(value(&per_leaf[1]), vec![leaf(1), root_2]);
    assert_eq!(value(&per_leaf[2]), vec![leaf(2)]);
    assert!(per_leaf.iter().flatten().all(|n| n.0 < STORED_LEVEL));
    assert_eq!(tree_records(&per_leaf[..2]), BTreeMap::new());
    assert_eq!(tree_records(&per_leaf), BTreeMap::new());
    assert_eq!(log.frontier(2).hashes(), &[root_2]);
    assert_eq!(log.frontier(3).hashes(), &[root_2, leaf(2)]);
    assert_eq!(log.frontier(3).root(), doc_hash32(&blocks, "merkle-root-3"));
    // Neither the section 5 records nor those of 11.4 hold a `T` key (prefix `54`).
    for label in ["sled-records", "tree-records-3"] {
        assert!(
            block(&blocks, label).lines().all(|l| !l.starts_with("54")),
            "{label} lists a T record"
        );
    }
    assert_eq!(
        block(&blocks, "tree-records-3"),
        "52  merkle-root-2 || merkle-leaf-2\n"
    );
    // The prose states the rule and what it means for the example.
    let prose = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for statement in [
        "only nodes of level 3 and above are stored",
        "only when appending it completes a node of level 3 or above, that is when `i mod 8 = 7`",
        "node `(level, index)` with `level ≥ 3` is at byte offset `32 · (level − 3)` of the value of `T((index + 1) · 2^level − 1)`",
        "For the two-entry ledger of section 5: no `T` record",
        "The two-entry ledger of section 5 holds no `T` record, only `R`.",
        "Appending entry 3 writes no `T` record either",
        "The first `T` record is `T(7)`",
    ] {
        assert!(prose.contains(statement), "FORMAT.md no longer says: {statement}");
    }
}

/// The ledger's node reader as FORMAT.md section 8.2 describes it: nodes of level 3 and
/// above from `T` records at the documented offset, lower ones recomputed from the leaves
/// (entries) under them. Counts the entries it reads.
struct SparseNodes<'a> {
    records: &'a BTreeMap<u64, Vec<Hash32>>,
    leaves: &'a [Hash32],
    entries_read: std::cell::Cell<u64>,
}

impl merkle::NodeReader for SparseNodes<'_> {
    type Error = merkle::MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash32, merkle::MissingNode> {
        let missing = merkle::MissingNode { level, index };
        let (start, end) = (index << level, (index + 1) << level);
        if level < STORED_LEVEL {
            let leaves = self
                .leaves
                .get(start as usize..end as usize)
                .ok_or(missing)?;
            self.entries_read
                .set(self.entries_read.get() + leaves.len() as u64);
            return Ok(merkle::root_from_leaf_hashes(leaves));
        }
        let record = self.records.get(&(end - 1)).ok_or(missing)?;
        record
            .get((level - STORED_LEVEL) as usize)
            .copied()
            .ok_or(missing)
    }
}

/// The `T` layout of FORMAT.md section 8.2 over trees larger than the example: which leaves
/// have a record, how long it is, where each node sits, and that proofs, past roots and
/// frontiers read from it (recomputing the levels below 3) are those of the whole tree.
#[test]
fn sparse_tree_records_follow_the_documented_layout() {
    const SIZE: u64 = 140;
    let leaves: Vec<Hash32> = (0..SIZE)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let mut range = CompactRange::new();
    let mut all = NodeMap::new();
    let mut per_leaf = Vec::new();
    for leaf in &leaves {
        let nodes = range.append(*leaf);
        all.extend(nodes.iter().map(|(l, i, h)| ((*l, *i), *h)));
        per_leaf.push(nodes);
    }
    let records = tree_records(&per_leaf);
    for i in 0..SIZE {
        match records.get(&i) {
            None => assert_ne!(i % 8, 7, "leaf {i} has no record"),
            Some(value) => {
                assert_eq!(i % 8, 7, "leaf {i} has a record");
                // Levels 3 ..= trailing ones of i.
                assert_eq!(value.len() as u32, i.trailing_ones() - 2, "leaf {i}");
            }
        }
    }
    for (&(level, index), hash) in all.iter().filter(|((level, _), _)| *level >= 3) {
        let last = ((index + 1) << level) - 1;
        let value = records[&last].concat();
        let offset = 32 * (level - 3) as usize;
        assert_eq!(&value[offset..offset + 32], hash, "node ({level}, {index})");
    }
    // The records 11.4 lists: T(7) first, then T(15), T(23), T(31) of 1, 2, 1 and 3 nodes.
    assert_eq!(records.keys().next(), Some(&7));
    for (leaf, nodes) in [
        (7u64, vec![(3, 0)]),
        (15, vec![(3, 1), (4, 0)]),
        (23, vec![(3, 2)]),
    ]
    .into_iter()
    .chain([(31, vec![(3, 3), (4, 1), (5, 0)])])
    {
        let expected: Vec<Hash32> = nodes.iter().map(|node| all[node]).collect();
        assert_eq!(records[&leaf], expected, "T({leaf})");
    }
    // The first record, T(7), is the level-3 node over leaves 0..8.
    assert_eq!(
        records[&7],
        vec![merkle::root_from_leaf_hashes(&leaves[..8])]
    );
    // Every node the ledger records is in `all`, so a sparse read that matches the full
    // map for every proof shows the stored layout and the recomputation are enough.
    // The most entries one read recomputes nodes from: [root or frontier, inclusion
    // proof, consistency proof].
    let mut most = [0u64; 3];
    for size in 1..=SIZE {
        let sparse = SparseNodes {
            records: &records,
            leaves: &leaves[..size as usize],
            entries_read: std::cell::Cell::new(0),
        };
        let mut check = |kind: usize, same: &dyn Fn(&SparseNodes) -> bool| {
            sparse.entries_read.set(0);
            assert!(same(&sparse), "size {size}");
            most[kind] = most[kind].max(sparse.entries_read.get());
        };
        check(0, &|r| {
            merkle::root_at(r, size).unwrap() == merkle::root_at(&all, size).unwrap()
        });
        check(0, &|r| {
            CompactRange::from_reader(r, size).unwrap()
                == CompactRange::from_reader(&all, size).unwrap()
        });
        for other in 0..size {
            check(1, &|r| {
                merkle::inclusion_proof(r, other, size).unwrap()
                    == merkle::inclusion_proof(&all, other, size).unwrap()
            });
            check(2, &|r| {
                merkle::consistency_proof(r, other + 1, size).unwrap()
                    == merkle::consistency_proof(&all, other + 1, size).unwrap()
            });
        }
    }
    assert_eq!(most, DOCUMENTED_MOST_ENTRIES_READ);
    let doc = std::fs::read_to_string(FORMAT_MD).unwrap();
    let prose = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let [root, inclusion, consistency] = DOCUMENTED_MOST_ENTRIES_READ;
    let statement = format!(
        "or a frontier reads at most {root} entries, an inclusion proof at most {inclusion} \
         and a consistency proof at most {consistency}"
    );
    assert!(
        prose.contains(&statement),
        "FORMAT.md no longer says: {statement}"
    );
}

#[test]
fn documented_test_key_is_the_published_seed() {
    let blocks = doc_blocks();
    let key = test_key();
    assert_eq!(hex_block(&blocks, "test-key-seed"), TEST_SEED);
    let public: [u8; 32] = hex_block(&blocks, "test-public-key").try_into().unwrap();
    assert_eq!(public, key.verifier().public_key());
    // Key ID: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key).
    let input = hex_block(&blocks, "test-key-id-input");
    assert_eq!(
        input,
        [TEST_KEY_NAME.as_bytes(), b"\n\x01", &public].concat()
    );
    let id = hex_block(&blocks, "test-key-id");
    assert_eq!(id, Sha256::digest(&input)[..4]);
    assert_eq!(
        u32::from_be_bytes(id.clone().try_into().unwrap()),
        checkpoint::key_id(TEST_KEY_NAME, &public)
    );
    // The key texts parse back to this key.
    let verifier = VerifierKey::parse(block(&blocks, "test-verifier-key").trim_end()).unwrap();
    assert_eq!(verifier, key.verifier());
    let signer = SignerKey::parse(block(&blocks, "test-signer-key").trim_end()).unwrap();
    assert_eq!(signer.to_text(), key.to_text());
}

#[test]
fn documented_checkpoint_is_signed_by_the_test_key() {
    let blocks = doc_blocks();
    let key = test_key();
    let body = block(&blocks, "checkpoint-body");
    assert_eq!(hex_block(&blocks, "checkpoint-body-hex"), body.as_bytes());
    let parsed = Checkpoint::parse_body(body).unwrap();
    assert_eq!(parsed, example_log().checkpoint());
    assert_eq!(parsed.root, doc_hash32(&blocks, "merkle-root-3"));
    // Ed25519 is deterministic: the documented signature is the one the key makes.
    let signature = hex_block(&blocks, "checkpoint-signature");
    let note = SignedNote::sign(body, &[&key]).unwrap();
    assert_eq!(note.signatures[0].signature, signature);
    assert!(key.verifier().verify(body.as_bytes(), &signature));
    // The note is body, blank line, `— <name> <base64(key ID || signature)>`.
    let text = block(&blocks, "checkpoint-note");
    assert_eq!(text, note.to_text());
    let line = format!(
        "\u{2014} {TEST_KEY_NAME} {}\n",
        B64.encode([hex_block(&blocks, "test-key-id"), signature].concat())
    );
    assert_eq!(text, format!("{body}\n{line}"));
    let (checkpoint, signed_by) = checkpoint::verify_note(
        text,
        &[VerifierKey::parse(block(&blocks, "test-verifier-key").trim_end()).unwrap()],
    )
    .unwrap();
    assert_eq!(checkpoint, parsed);
    assert_eq!(signed_by, vec![TEST_KEY_NAME.to_string()]);
}

#[test]
fn documented_bundle_verifies() {
    let blocks = doc_blocks();
    let log = example_log();
    let manifest: Manifest = serde_json::from_str(block(&blocks, "bundle-manifest")).unwrap();
    assert_eq!(manifest, log.manifest());
    let proofs: Proofs = serde_json::from_str(block(&blocks, "bundle-proofs")).unwrap();
    assert_eq!(proofs, log.proofs());
    let entries = block(&blocks, "bundle-entries");
    for (i, line) in entries.lines().enumerate() {
        let parsed: BundleEntryLine = serde_json::from_str(line).unwrap();
        assert_eq!(
            parsed.decode_bytes().unwrap(),
            hex_block(&blocks, &format!("example-{}-bytes", i + 1))
        );
    }
    let trusted = [VerifierKey::parse(block(&blocks, "test-verifier-key").trim_end()).unwrap()];
    let parts = BundleParts {
        manifest: block(&blocks, "bundle-manifest"),
        entries,
        checkpoint: block(&blocks, "checkpoint-note"),
        proofs: block(&blocks, "bundle-proofs"),
    };
    let summary = verify_bundle(&parts, &trusted, None).unwrap();
    assert_eq!(summary.one_line() + "\n", block(&blocks, "bundle-verified"));
    assert_eq!(summary.root, hex(&doc_hash32(&blocks, "merkle-root-3")));
    assert_eq!(
        summary.last_hash,
        hash_block(&blocks, "example-3-hash").to_hex()
    );
    // Dropping the middle line is named: entry 2 is missing.
    let cut: String = entries
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let failure = verify_bundle(
        &BundleParts {
            entries: &cut,
            ..parts
        },
        &trusted,
        None,
    )
    .unwrap_err();
    assert_eq!(
        (failure.kind, failure.seq),
        (BundleFailureKind::SeqGap, Some(2))
    );
}

/// Every failure kind of `verify-export`, by an exhaustive match: a new kind does not
/// compile here until FORMAT.md lists it.
fn bundle_failure_kinds() -> Vec<BundleFailureKind> {
    use BundleFailureKind as K;
    let all = K::ALL;
    for kind in all {
        match kind {
            K::Malformed
            | K::UntrustedCheckpoint
            | K::BadSignature
            | K::OriginMismatch
            | K::SizeMismatch
            | K::UndecodableEntry
            | K::EntryAltered
            | K::SeqGap
            | K::OutOfOrder
            | K::Truncated
            | K::TrailingEntry
            | K::ChainBroken
            | K::NotIncluded
            | K::RootMismatch
            | K::Inconsistent
            | K::PreviousUntrusted => {}
        }
    }
    all.to_vec()
}

#[test]
fn every_bundle_failure_kind_is_documented() {
    let doc = std::fs::read_to_string(FORMAT_MD).unwrap();
    for kind in bundle_failure_kinds() {
        let cell = format!("| `{}` |", kind.as_str());
        assert!(doc.contains(&cell), "FORMAT.md does not list {cell}");
    }
    assert!(doc.contains(&format!("`{BUNDLE_FORMAT}`")));
    for file in [MANIFEST_FILE, ENTRIES_FILE, CHECKPOINT_FILE, PROOFS_FILE] {
        assert!(doc.contains(&format!("`{file}`")), "{file}");
    }
}
