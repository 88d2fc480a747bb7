//! The export bundle verifier against real bundles.
//!
//! Every bundle here is built the way the service builds one: real entries encoded and
//! chained with `chain_hash`, an RFC 6962 tree grown with `CompactRange` into a node store,
//! proofs generated from that store, an Ed25519-signed C2SP checkpoint. Then a tamper
//! matrix: each alteration an attacker (or a broken exporter) could make is refused with
//! the exact failure kind and the first offending seq. Property tests mutate every file
//! at random: the verifier never panics, and a mutated bundle that still verifies proves
//! exactly what the original proved.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use schemas::bundle::{
    hash32_to_hex, verify_bundle, BundleEntryLine, BundleFailure, BundleFailureKind as K,
    BundleParts, BundleSummary, ConsistencyProof, InclusionProof, Manifest, Proofs, BUNDLE_FORMAT,
};
use schemas::checkpoint::{Checkpoint, SignedNote, SignerKey};
use schemas::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root_at, CompactRange, Hash32,
};
use schemas::{
    chain_hash, Change, ChangeKind, Entry, Hash, KindFields, ObjectChange, ObjectKind, OwnerRef,
    WatchGap, FORMAT_VERSION,
};
use serde_json::Value;

const ORIGIN: &str = "claim-ledger.example/test";

// ---------------------------------------------------------------------------------------
// Building ledgers and bundles.
// ---------------------------------------------------------------------------------------

/// A ledger in memory: entries, their exact bytes and chain hashes, and the Merkle node store.
struct Ledger {
    entries: Vec<Entry>,
    bytes: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
    nodes: BTreeMap<(u32, u64), Hash32>,
}

/// The change recorded at `seq`: mostly pod changes, a watch gap every seventh entry.
/// `tag` goes into names, so two ledgers with different tags differ from that seq on.
fn change(seq: u64, tag: &str) -> Change {
    if seq % 7 == 0 {
        return Change::WatchGap(WatchGap {
            resource: "pods/v1".into(),
            last_resource_version: Some(format!("{}", 100 + seq)),
            reason: "relist".into(),
        });
    }
    Change::Object(ObjectChange {
        kind: ObjectKind::Pod,
        api_version: "v1".into(),
        namespace: "tenant-a".into(),
        name: format!("pod-{seq}{tag}").into(),
        uid: format!("uid-{seq}").into(),
        resource_version: format!("{}", 100 + seq).into(),
        change: if seq % 3 == 0 {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        },
        controller: Some(OwnerRef {
            group: "agents.x-k8s.io".into(),
            kind: "Sandbox".into(),
            name: format!("sb-{seq}").into(),
            uid: format!("sb-uid-{seq}").into(),
        }),
        deletion_timestamp: None,
        fields: KindFields::Pod {
            sandbox_id_annotation: Some(format!("sbx-{seq}").into()),
            phase: Some("Running".into()),
        },
    })
}

/// `n` entries; from seq `fork_from` on, names carry `tag` (a different history).
fn changes(n: u64, fork_from: u64, tag: &str) -> Vec<Change> {
    (1..=n)
        .map(|seq| change(seq, if seq >= fork_from { tag } else { "" }))
        .collect()
}

/// Chains changes into entries from seq 1 with the given genesis `prev_hash` (zero in a
/// real ledger), and grows the tree.
fn chain_from(changes: Vec<Change>, genesis: Hash) -> Ledger {
    let base: chrono::DateTime<chrono::Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
    let mut ledger = Ledger {
        entries: vec![],
        bytes: vec![],
        hashes: vec![],
        nodes: BTreeMap::new(),
    };
    let mut tree = CompactRange::new();
    let mut prev = genesis;
    for (i, change) in changes.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let entry = Entry {
            format_version: FORMAT_VERSION,
            seq,
            observed_at: base + chrono::TimeDelta::milliseconds(1250 * seq as i64),
            prev_hash: prev,
            change,
            transitions: vec![],
            snapshot: None,
        };
        let bytes = entry.encode().unwrap();
        let hash = chain_hash(&prev, seq, &bytes);
        for (level, index, node) in tree.append(leaf_hash(&bytes)) {
            ledger.nodes.insert((level, index), node);
        }
        prev = hash;
        ledger.entries.push(entry);
        ledger.bytes.push(bytes);
        ledger.hashes.push(hash);
    }
    ledger
}

fn chain(changes: Vec<Change>) -> Ledger {
    chain_from(changes, Hash::ZERO)
}

fn signer() -> SignerKey {
    SignerKey::from_seed("claim-ledger.example", [42; 32]).unwrap()
}

fn other_signer() -> SignerKey {
    SignerKey::from_seed("someone-else", [7; 32]).unwrap()
}

impl Ledger {
    fn root(&self, size: u64) -> Hash32 {
        root_at(&self.nodes, size).unwrap()
    }

    fn checkpoint_body(&self, origin: &str, size: u64) -> String {
        Checkpoint {
            origin: origin.into(),
            size,
            root: self.root(size),
            extensions: vec![],
        }
        .to_body()
        .unwrap()
    }

    fn checkpoint(&self, size: u64, keys: &[&SignerKey]) -> String {
        SignedNote::sign(&self.checkpoint_body(ORIGIN, size), keys)
            .unwrap()
            .to_text()
    }

    fn line(&self, seq: u64) -> String {
        let i = (seq - 1) as usize;
        BundleEntryLine::new(self.hashes[i], &self.entries[i], &self.bytes[i])
            .unwrap()
            .to_json_line()
    }

    fn inclusion(&self, seq: u64, size: u64) -> InclusionProof {
        InclusionProof::new(
            seq - 1,
            size,
            inclusion_proof(&self.nodes, seq - 1, size).unwrap(),
        )
    }

    /// The bundle of `from..=to` against the checkpoint of `size`, with the consistency
    /// proof from `previous` when given.
    fn bundle(&self, from: u64, to: u64, size: u64, previous: Option<u64>) -> Bundle {
        let manifest = Manifest::new(
            ORIGIN,
            from,
            to,
            size,
            "2026-12-01T08:30:00Z".parse().unwrap(),
        );
        let proofs = Proofs {
            tree_size: size,
            first: self.inclusion(from, size),
            last: self.inclusion(to, size),
            consistency: previous.map(|old| {
                ConsistencyProof::new(
                    old,
                    size,
                    consistency_proof(&self.nodes, old, size).unwrap(),
                )
            }),
        };
        Bundle {
            manifest: serde_json::to_string_pretty(&manifest).unwrap(),
            entries: (from..=to).map(|seq| self.line(seq)).collect(),
            checkpoint: self.checkpoint(size, &[&signer()]),
            proofs: serde_json::to_string_pretty(&proofs).unwrap(),
        }
    }
}

#[derive(Clone, Debug)]
struct Bundle {
    manifest: String,
    entries: String,
    checkpoint: String,
    proofs: String,
}

impl Bundle {
    fn parts(&self) -> BundleParts<'_> {
        BundleParts {
            manifest: &self.manifest,
            entries: &self.entries,
            checkpoint: &self.checkpoint,
            proofs: &self.proofs,
        }
    }

    fn verify(&self) -> Result<BundleSummary, BundleFailure> {
        verify_bundle(&self.parts(), &[signer().verifier()], None)
    }

    fn verify_with(&self, previous: &str) -> Result<BundleSummary, BundleFailure> {
        verify_bundle(&self.parts(), &[signer().verifier()], Some(previous))
    }

    fn lines(&self) -> Vec<String> {
        self.entries.lines().map(str::to_owned).collect()
    }

    fn with_lines(&self, lines: &[String]) -> Bundle {
        let mut out = self.clone();
        out.entries = lines.iter().map(|l| format!("{l}\n")).collect();
        out
    }

    /// The bundle with the JSON of the line of `seq` (the first line is `first`) edited.
    fn edit_line(&self, first: u64, seq: u64, edit: impl FnOnce(&mut Value)) -> Bundle {
        let mut lines = self.lines();
        let i = (seq - first) as usize;
        let mut value: Value = serde_json::from_str(&lines[i]).unwrap();
        edit(&mut value);
        lines[i] = serde_json::to_string(&value).unwrap();
        self.with_lines(&lines)
    }

    fn edit_json(text: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut value: Value = serde_json::from_str(text).unwrap();
        edit(&mut value);
        serde_json::to_string(&value).unwrap()
    }

    fn edit_manifest(&self, edit: impl FnOnce(&mut Value)) -> Bundle {
        let mut out = self.clone();
        out.manifest = Self::edit_json(&self.manifest, edit);
        out
    }

    fn edit_proofs(&self, edit: impl FnOnce(&mut Value)) -> Bundle {
        let mut out = self.clone();
        out.proofs = Self::edit_json(&self.proofs, edit);
        out
    }
}

/// The 40-entry ledger most tests use.
fn ledger() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(|| chain(changes(40, u64::MAX, "")))
}

#[track_caller]
fn assert_fails(result: Result<BundleSummary, BundleFailure>, kind: K, seq: Option<u64>) -> String {
    match result {
        Ok(summary) => panic!(
            "expected {kind} at {seq:?}, verified: {}",
            summary.one_line()
        ),
        Err(failure) => {
            assert_eq!(
                (failure.kind, failure.seq),
                (kind, seq),
                "wrong failure: {failure}"
            );
            failure.detail
        }
    }
}

/// Whether two JSON texts hold the same value (the edit helpers re-serialize).
fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok()
}

/// An edit of one entry line's JSON.
type LineEdit = dyn Fn(&mut Value);

fn b64_edit(value: &mut Value, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = B64.decode(value["bytes"].as_str().unwrap()).unwrap();
    edit(&mut bytes);
    value["bytes"] = Value::String(B64.encode(bytes));
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in entry bytes")
}

// ---------------------------------------------------------------------------------------
// Valid bundles.
// ---------------------------------------------------------------------------------------

#[test]
fn whole_tree_bundle_verifies() {
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    let summary = bundle.verify().unwrap();
    assert_eq!(
        summary,
        BundleSummary {
            origin: ORIGIN.into(),
            from_seq: 1,
            to_seq: 40,
            entries: 40,
            tree_size: 40,
            root: hash32_to_hex(&l.root(40)),
            first_hash: l.hashes[0].to_hex(),
            last_hash: l.hashes[39].to_hex(),
            signed_by: vec!["claim-ledger.example".into()],
            previous_size: None,
        }
    );
    let root = hash32_to_hex(&l.root(40));
    assert_eq!(
        summary.one_line(),
        format!(
            "ok: entries 1..=40 (40) of origin \"{ORIGIN}\" are in the tree of size 40 (root {}\u{2026}) signed by key \"claim-ledger.example\"",
            &root[..8]
        )
    );
    // The summary is JSON for the binary's output.
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["previous_size"], Value::Null);
    assert_eq!(json["signed_by"][0], "claim-ledger.example");
}

#[test]
fn middle_ranges_prefix_trees_and_single_entries_verify() {
    let l = ledger();
    for (from, to, size) in [
        (11, 30, 40),
        (1, 20, 40),
        (21, 40, 40),
        (17, 17, 40),
        (1, 1, 1),
        (1, 1, 40),
        (40, 40, 40),
        (5, 25, 25),
        (1, 25, 25),
        (3, 9, 33),
    ] {
        let summary = l
            .bundle(from, to, size, None)
            .verify()
            .unwrap_or_else(|f| panic!("{from}..={to} of {size}: {f}"));
        assert_eq!(
            (
                summary.from_seq,
                summary.to_seq,
                summary.entries,
                summary.tree_size
            ),
            (from, to, to - from + 1, size)
        );
        assert_eq!(summary.last_hash, l.hashes[to as usize - 1].to_hex());
    }
}

#[test]
fn whitespace_and_trailing_blank_lines_are_accepted() {
    let l = ledger();
    let mut bundle = l.bundle(11, 30, 40, None);
    bundle.entries.push_str("\n\n");
    bundle.verify().unwrap();
    bundle.entries = bundle.entries.trim_end().to_owned(); // no final newline at all
    bundle.verify().unwrap();
    bundle.entries = bundle.entries.replace('\n', "\r\n");
    bundle.verify().unwrap();
}

#[test]
fn consistency_with_a_previous_checkpoint() {
    let l = ledger();
    for old in [1, 8, 25, 39] {
        let previous = l.checkpoint(old, &[&signer()]);
        let summary = l
            .bundle(11, 30, 40, Some(old))
            .verify_with(&previous)
            .unwrap();
        assert_eq!(summary.previous_size, Some(old));
        assert!(summary.one_line().ends_with(&format!(
            "; consistent with the previous checkpoint of size {old}"
        )));
    }
    // The same size: no proof needed, or the empty one.
    let previous = l.checkpoint(40, &[&signer()]);
    let summary = l.bundle(1, 40, 40, None).verify_with(&previous).unwrap();
    assert_eq!(summary.previous_size, Some(40));
    l.bundle(1, 40, 40, Some(40))
        .verify_with(&previous)
        .unwrap();
    // The empty tree is a prefix of everything.
    let empty = chain(vec![]).checkpoint(0, &[&signer()]);
    let summary = l.bundle(1, 40, 40, None).verify_with(&empty).unwrap();
    assert_eq!(summary.previous_size, Some(0));
    // A bundle made against a previous checkpoint still verifies on its own.
    l.bundle(11, 30, 40, Some(25)).verify().unwrap();
    // The auditor's previous checkpoint is the bundle's own, and the bundle carries a
    // proof from an older one: equal sizes need equal roots, whatever proof is there.
    let summary = l
        .bundle(11, 30, 40, Some(25))
        .verify_with(&l.checkpoint(40, &[&signer()]))
        .unwrap();
    assert_eq!(summary.previous_size, Some(40));
}

#[test]
fn unknown_cosigners_are_ignored_and_rotated_keys_accepted() {
    let l = ledger();
    let mut bundle = l.bundle(1, 40, 40, None);
    bundle.checkpoint = l.checkpoint(40, &[&other_signer(), &signer()]);
    let summary = bundle.verify().unwrap();
    assert_eq!(summary.signed_by, vec!["claim-ledger.example".to_owned()]);
    let both = [signer().verifier(), other_signer().verifier()];
    let summary = verify_bundle(&bundle.parts(), &both, None).unwrap();
    assert_eq!(
        summary.signed_by,
        vec!["someone-else".to_owned(), "claim-ledger.example".to_owned()]
    );
    assert!(summary
        .one_line()
        .contains("signed by keys \"someone-else\", \"claim-ledger.example\""));
}

// ---------------------------------------------------------------------------------------
// The tamper matrix: entries.
// ---------------------------------------------------------------------------------------

#[test]
fn a_changed_byte_that_still_decodes_is_entry_altered() {
    let l = ledger();
    for (from, to) in [(1, 40), (11, 30)] {
        let bundle = l.bundle(from, to, 40, None);
        for seq in [from, 16, to] {
            let tampered = bundle.edit_line(from, seq, |v| {
                b64_edit(v, |bytes| {
                    // Inside the pod name string: same length, still a valid entry.
                    let at = find(bytes, format!("pod-{seq}").as_bytes());
                    bytes[at] = b'q';
                });
            });
            // It still decodes, so this is about the hash, not the encoding.
            let line: BundleEntryLine =
                serde_json::from_str(&tampered.lines()[(seq - from) as usize]).unwrap();
            Entry::decode(&line.decode_bytes().unwrap()).unwrap();
            let detail = assert_fails(tampered.verify(), K::EntryAltered, Some(seq));
            assert!(detail.contains("hash"), "{detail}");
        }
    }
}

#[test]
fn bytes_that_no_longer_decode_are_undecodable() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let cases: [fn(&mut Vec<u8>); 6] = [
        |b| b[0] = 0xc1, // never used in MessagePack
        // Decodes (rmp_serde ignores what follows the value) but is not canonical.
        |b| b.extend_from_slice(b"\xa5extra"),
        |b| {
            // seq 18 as uint 64 instead of a positive fixint: same value, wider bytes.
            let at = find(b, b"\xa3seq\x12") + 4;
            b.splice(at..at + 1, *b"\xcf\0\0\0\0\0\0\0\x12");
        },
        |b| b.truncate(b.len() / 2),
        |b| b.clear(),
        |b| {
            // format_version 1 -> 2: decodes, but a version this build cannot read.
            let at = find(b, b"format_version");
            b[at + 14] = 0x02;
        },
    ];
    for edit in cases {
        let tampered = bundle.edit_line(11, 18, |v| b64_edit(v, edit));
        assert_fails(tampered.verify(), K::UndecodableEntry, Some(18));
    }
    let tampered = bundle.edit_line(11, 18, |v| v["bytes"] = "not base64!".into());
    let detail = assert_fails(tampered.verify(), K::Malformed, Some(18));
    assert!(detail.starts_with("entries.jsonl line 8:"), "{detail}");
}

#[test]
fn a_changed_entry_json_is_entry_altered() {
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    let edits: [fn(&mut Value); 4] = [
        |v| v["entry"]["change"]["object"]["name"] = "someone-else".into(),
        |v| v["entry"]["observed_at"] = "2020-01-01T00:00:00Z".into(),
        |v| v["entry"]["transitions"] = serde_json::json!([{"bogus": 1}]),
        |v| v["entry"] = Value::Null,
    ];
    for edit in edits {
        let detail = assert_fails(
            bundle.edit_line(1, 23, edit).verify(),
            K::EntryAltered,
            Some(23),
        );
        assert!(detail.contains("entry JSON"), "{detail}");
    }
}

#[test]
fn line_fields_that_disagree_with_the_bytes_are_entry_altered() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let other = l.hashes[3].to_hex();
    let edits: Vec<Box<LineEdit>> = vec![
        Box::new(|v| v["leaf_index"] = 15.into()),
        Box::new(|v| v["leaf_index"] = u64::MAX.into()),
        Box::new(move |v| v["hash"] = other.clone().into()),
        Box::new(|v| v["prev_hash"] = "00".repeat(32).into()),
    ];
    for edit in edits {
        assert_fails(
            bundle.edit_line(11, 20, edit).verify(),
            K::EntryAltered,
            Some(20),
        );
    }
    // The bytes of seq 21 under the line of seq 20: the line's seq no longer matches them.
    let line21: Value = serde_json::from_str(&l.line(21)).unwrap();
    let tampered = bundle.edit_line(11, 20, |v| {
        v["bytes"] = line21["bytes"].clone();
        v["entry"] = line21["entry"].clone();
        v["hash"] = line21["hash"].clone();
        v["prev_hash"] = line21["prev_hash"].clone();
    });
    assert_fails(tampered.verify(), K::EntryAltered, Some(20));
}

#[test]
fn a_rehashed_line_breaks_the_chain_at_the_next_entry() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    // Alter seq 16 and fix its own line completely (hash, JSON): only the link shows it.
    let mut entry = l.entries[15].clone();
    entry.observed_at += chrono::TimeDelta::seconds(1);
    let bytes = entry.encode().unwrap();
    let hash = chain_hash(&entry.prev_hash, 16, &bytes);
    let mut lines = bundle.lines();
    lines[5] = BundleEntryLine::new(hash, &entry, &bytes)
        .unwrap()
        .to_json_line()
        .trim_end()
        .to_owned();
    let detail = assert_fails(bundle.with_lines(&lines).verify(), K::ChainBroken, Some(17));
    assert!(detail.contains("previous entry's hash"), "{detail}");
}

#[test]
fn a_bad_genesis_prev_hash_breaks_the_chain_at_seq_1() {
    let l = chain_from(changes(12, u64::MAX, ""), Hash([1; 32]));
    assert_fails(l.bundle(1, 12, 12, None).verify(), K::ChainBroken, Some(1));
    // A range not starting at 1 cannot see the genesis, and its inclusion is real.
    l.bundle(2, 12, 12, None).verify().unwrap();
}

#[test]
fn a_dropped_line_is_a_seq_gap_naming_it() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    for seq in [11, 15, 29] {
        let mut lines = bundle.lines();
        lines.remove((seq - 11) as usize);
        let detail = assert_fails(bundle.with_lines(&lines).verify(), K::SeqGap, Some(seq));
        assert!(
            detail.contains(&format!("seq {seq} is missing")),
            "{detail}"
        );
    }
    // Several dropped: the first is named.
    let mut lines = bundle.lines();
    lines.drain(4..9);
    assert_fails(bundle.with_lines(&lines).verify(), K::SeqGap, Some(15));
}

#[test]
fn swapped_or_repeated_lines_are_out_of_order() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let mut lines = bundle.lines();
    lines.swap(4, 5); // 15 and 16
    assert_fails(bundle.with_lines(&lines).verify(), K::OutOfOrder, Some(15));
    let mut lines = bundle.lines();
    lines.swap(2, 12); // 13 and 23
    assert_fails(bundle.with_lines(&lines).verify(), K::OutOfOrder, Some(13));
    // The last line moved to the front.
    let mut lines = bundle.lines();
    let last = lines.pop().unwrap();
    lines.insert(0, last);
    assert_fails(bundle.with_lines(&lines).verify(), K::OutOfOrder, Some(11));
    // A repeated line: the next position expects 15 and finds 14 again.
    let mut lines = bundle.lines();
    lines.insert(4, lines[3].clone());
    assert_fails(bundle.with_lines(&lines).verify(), K::OutOfOrder, Some(15));
}

#[test]
fn a_line_replaced_by_a_copy_of_another_is_a_seq_gap() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    // 15 replaced by a second 14: 15 is nowhere, so it is missing.
    let mut lines = bundle.lines();
    lines[4] = lines[3].clone();
    let detail = assert_fails(bundle.with_lines(&lines).verify(), K::SeqGap, Some(15));
    assert!(detail.contains("seq 15 is missing"), "{detail}");
}

#[test]
fn a_key_repeated_inside_the_entry_json_is_entry_altered() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let mut lines = bundle.lines();
    // `"entry":{"format_version":1,...` gets a second, contradicting format_version.
    let line = &lines[2];
    let at = line.find("\"entry\":{").unwrap() + "\"entry\":{".len();
    lines[2] = format!("{}\"seq\":999,{}", &line[..at], &line[at..]);
    let detail = assert_fails(
        bundle.with_lines(&lines).verify(),
        K::EntryAltered,
        Some(13),
    );
    assert!(detail.contains("appears twice"), "{detail}");
}

#[test]
fn a_cut_tail_is_truncated_and_an_extra_line_trailing() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let mut lines = bundle.lines();
    lines.pop();
    assert_fails(bundle.with_lines(&lines).verify(), K::Truncated, Some(30));
    lines.truncate(lines.len() - 2);
    assert_fails(bundle.with_lines(&lines).verify(), K::Truncated, Some(28));
    for empty in ["", "\n", "\n\n  \n"] {
        let mut b = bundle.clone();
        b.entries = empty.into();
        assert_fails(b.verify(), K::Truncated, Some(11));
    }
    // Cut in the middle of the last line: that line no longer parses.
    let mut b = bundle.clone();
    b.entries.truncate(b.entries.len() - 40);
    let detail = assert_fails(b.verify(), K::Malformed, Some(30));
    assert!(detail.starts_with("entries.jsonl line 20:"), "{detail}");
    // One more entry than the manifest says.
    let mut lines = bundle.lines();
    lines.push(l.line(31).trim_end().to_owned());
    assert_fails(
        bundle.with_lines(&lines).verify(),
        K::TrailingEntry,
        Some(31),
    );
}

#[test]
fn a_rewritten_consistent_chain_is_not_included() {
    let l = ledger();
    // The attacker alters seq 16 and re-hashes everything after it: a perfectly consistent
    // chain, but not the one the checkpoint commits to.
    let mut rewritten = changes(40, u64::MAX, "");
    rewritten[15] = change(16, "-forged");
    let forged = chain(rewritten);
    for (from, to) in [(1, 40), (11, 30), (16, 16), (16, 40)] {
        let real = l.bundle(from, to, 40, None);
        let mut bundle = forged.bundle(from, to, 40, None);
        bundle.checkpoint = real.checkpoint.clone();
        bundle.proofs = real.proofs.clone();
        // The first entry is altered only when the range starts at 16.
        let seq = if from == 16 { 16 } else { to };
        let detail = assert_fails(bundle.verify(), K::NotIncluded, Some(seq));
        assert!(detail.contains(&format!("seq {seq} is not in")), "{detail}");
    }
}

#[test]
fn proofs_for_other_leaves_or_sizes_are_not_included() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let other = serde_json::to_value(l.inclusion(12, 40)).unwrap();
    assert_fails(
        bundle.edit_proofs(|p| p["first"] = other.clone()).verify(),
        K::NotIncluded,
        Some(11),
    );
    assert_fails(
        bundle.edit_proofs(|p| p["last"] = other.clone()).verify(),
        K::NotIncluded,
        Some(30),
    );
    // The right leaf in the tree of another size.
    let smaller = serde_json::to_value(l.inclusion(30, 35)).unwrap();
    assert_fails(
        bundle.edit_proofs(|p| p["last"] = smaller).verify(),
        K::NotIncluded,
        Some(30),
    );
    // A flipped proof element, a missing one, an extra one.
    let edits: [fn(&mut Value); 3] = [
        |p| p["last"]["hashes"][0] = "ab".repeat(32).into(),
        |p| {
            p["last"]["hashes"].as_array_mut().unwrap().pop();
        },
        |p| {
            p["last"]["hashes"]
                .as_array_mut()
                .unwrap()
                .push("cd".repeat(32).into())
        },
    ];
    for edit in edits {
        assert_fails(bundle.edit_proofs(edit).verify(), K::NotIncluded, Some(30));
    }
}

// ---------------------------------------------------------------------------------------
// The tamper matrix: checkpoint, manifest, proofs, previous checkpoint.
// ---------------------------------------------------------------------------------------

#[test]
fn a_checkpoint_without_a_trusted_signature_is_untrusted() {
    let l = ledger();
    let mut bundle = l.bundle(1, 40, 40, None);
    bundle.checkpoint = l.checkpoint(40, &[&other_signer()]);
    assert_fails(bundle.verify(), K::UntrustedCheckpoint, None);
    let bundle = l.bundle(1, 40, 40, None);
    assert_fails(
        verify_bundle(&bundle.parts(), &[], None),
        K::UntrustedCheckpoint,
        None,
    );
    // A key with the trusted name but another key ID is someone else.
    let impostor = SignerKey::from_seed("claim-ledger.example", [9; 32]).unwrap();
    let mut bundle = l.bundle(1, 40, 40, None);
    bundle.checkpoint = l.checkpoint(40, &[&impostor]);
    assert_fails(bundle.verify(), K::UntrustedCheckpoint, None);
}

#[test]
fn a_corrupted_trusted_signature_is_bad_signature() {
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    // One bit of the signature flipped.
    let mut note = SignedNote::parse(&bundle.checkpoint).unwrap();
    note.signatures[0].signature[10] ^= 0x20;
    let mut tampered = bundle.clone();
    tampered.checkpoint = note.to_text();
    assert_fails(tampered.verify(), K::BadSignature, None);
    // The same key's valid signature of another checkpoint, spliced in.
    let other = SignedNote::sign(&l.checkpoint_body(ORIGIN, 39), &[&signer()]).unwrap();
    let mut note = SignedNote::parse(&bundle.checkpoint).unwrap();
    note.signatures = other.signatures;
    tampered.checkpoint = note.to_text();
    assert_fails(tampered.verify(), K::BadSignature, None);
    // The signed body changed (size, root) under the original signature.
    let mut note = SignedNote::parse(&bundle.checkpoint).unwrap();
    note.body = l.checkpoint_body(ORIGIN, 39);
    tampered.checkpoint = note.to_text();
    assert_fails(tampered.verify(), K::BadSignature, None);
}

#[test]
fn garbage_in_each_file_is_malformed_naming_it() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    for garbage in ["", "garbage", "{", "[]", "null", "\u{0}\u{1}"] {
        let mut b = bundle.clone();
        b.manifest = garbage.into();
        let detail = assert_fails(b.verify(), K::Malformed, None);
        assert!(detail.starts_with("manifest.json:"), "{detail}");

        let mut b = bundle.clone();
        b.proofs = garbage.into();
        let detail = assert_fails(b.verify(), K::Malformed, None);
        assert!(detail.starts_with("proofs.json:"), "{detail}");

        let mut b = bundle.clone();
        b.checkpoint = garbage.into();
        let detail = assert_fails(b.verify(), K::Malformed, None);
        assert!(detail.starts_with("checkpoint:"), "{detail}");

        if !garbage.is_empty() {
            let mut lines = bundle.lines();
            lines[2] = garbage.into();
            let detail = assert_fails(bundle.with_lines(&lines).verify(), K::Malformed, Some(13));
            assert!(detail.starts_with("entries.jsonl line 3:"), "{detail}");
        }

        let previous = garbage.to_owned();
        let detail = assert_fails(bundle.verify_with(&previous), K::Malformed, None);
        assert!(detail.starts_with("previous checkpoint:"), "{detail}");
    }
    // A blank line inside the file.
    let mut lines = bundle.lines();
    lines[4] = "   ".into();
    let detail = assert_fails(bundle.with_lines(&lines).verify(), K::Malformed, Some(15));
    assert!(detail.contains("line 5: blank line"), "{detail}");
    // A checkpoint body that is signed but is not a checkpoint.
    let mut b = bundle.clone();
    b.checkpoint = SignedNote::sign("just a note\n", &[&signer()])
        .unwrap()
        .to_text();
    let detail = assert_fails(b.verify(), K::Malformed, None);
    assert!(detail.starts_with("checkpoint:"), "{detail}");
}

#[test]
fn strict_manifest_and_proofs() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let manifest_edits: [fn(&mut Value); 9] = [
        |m| m["extra"] = 1.into(),
        |m| m["format"] = "claim-ledger-export-bundle/2".into(),
        |m| m["from_seq"] = 0.into(),
        |m| m["from_seq"] = 31.into(),
        |m| m["entries"] = 19.into(),
        |m| m["entries"] = (-1).into(),
        |m| m["created_at"] = "yesterday".into(),
        |m| m["tree_size"] = "40".into(),
        |m| {
            m.as_object_mut().unwrap().remove("origin");
        },
    ];
    for edit in manifest_edits {
        let detail = assert_fails(bundle.edit_manifest(edit).verify(), K::Malformed, None);
        assert!(detail.starts_with("manifest.json:"), "{detail}");
    }
    let proof_edits: [fn(&mut Value); 7] = [
        |p| p["extra"] = 1.into(),
        |p| p["first"]["hashes"][0] = "ab".repeat(31).into(),
        |p| p["first"]["hashes"][0] = "ab".repeat(33).into(),
        |p| p["first"]["hashes"][0] = format!("zz{}", "ab".repeat(31)).into(),
        |p| p["first"]["hashes"][0] = format!("+b{}", "ab".repeat(31)).into(),
        |p| p["first"]["hashes"][0] = 7.into(),
        |p| p["consistency"] = serde_json::json!({"from_size": 1, "to_size": 40, "hashes": ["x"]}),
    ];
    for edit in proof_edits {
        let detail = assert_fails(bundle.edit_proofs(edit).verify(), K::Malformed, None);
        assert!(detail.starts_with("proofs.json:"), "{detail}");
    }
    // A missing consistency member is the same as null.
    bundle
        .edit_proofs(|p| {
            p.as_object_mut().unwrap().remove("consistency");
        })
        .verify()
        .unwrap();
}

#[test]
fn origins_and_sizes_must_agree() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    assert_fails(
        bundle
            .edit_manifest(|m| m["origin"] = "elsewhere".into())
            .verify(),
        K::OriginMismatch,
        None,
    );
    assert_fails(
        bundle
            .edit_manifest(|m| m["tree_size"] = 41.into())
            .verify(),
        K::SizeMismatch,
        None,
    );
    assert_fails(
        bundle.edit_proofs(|p| p["tree_size"] = 39.into()).verify(),
        K::SizeMismatch,
        None,
    );
    // A checkpoint of another size (validly signed) than manifest and proofs.
    let mut b = bundle.clone();
    b.checkpoint = l.checkpoint(35, &[&signer()]);
    assert_fails(b.verify(), K::SizeMismatch, None);
    // A range beyond the tree.
    let b = l.bundle(30, 40, 40, None).edit_manifest(|m| {
        m["from_seq"] = 31.into();
        m["to_seq"] = 41.into();
    });
    assert_fails(b.verify(), K::SizeMismatch, None);
    // The checkpoint of another log, validly signed.
    let mut b = bundle.clone();
    b.checkpoint = SignedNote::sign(&l.checkpoint_body("other-log", 40), &[&signer()])
        .unwrap()
        .to_text();
    assert_fails(b.verify(), K::OriginMismatch, None);
}

#[test]
fn a_forked_tree_is_inconsistent_with_the_real_previous_checkpoint() {
    let l = ledger();
    // Same size, same key, different history from seq 10 on.
    let fork = chain(changes(40, 10, "-fork"));
    assert_ne!(fork.root(40), l.root(40));
    for old in [10, 25, 39] {
        let previous = l.checkpoint(old, &[&signer()]);
        let bundle = fork.bundle(1, 40, 40, Some(old));
        // On its own, the fork is a perfectly good bundle.
        bundle.verify().unwrap();
        let detail = assert_fails(bundle.verify_with(&previous), K::Inconsistent, None);
        assert!(detail.contains("does not extend"), "{detail}");
    }
    // Entries 1..=9 are common to both histories: up to there, the fork is consistent.
    let previous = l.checkpoint(9, &[&signer()]);
    assert_eq!(
        fork.bundle(1, 40, 40, Some(9))
            .verify_with(&previous)
            .unwrap()
            .previous_size,
        Some(9)
    );
    // The fork and the real log at the same size: no proof can help.
    let previous = l.checkpoint(40, &[&signer()]);
    let detail = assert_fails(
        fork.bundle(1, 40, 40, None).verify_with(&previous),
        K::Inconsistent,
        None,
    );
    assert!(detail.contains("fork"), "{detail}");
    assert_fails(
        fork.bundle(1, 40, 40, Some(40)).verify_with(&previous),
        K::Inconsistent,
        None,
    );
}

#[test]
fn a_previous_checkpoint_larger_than_the_bundle_is_a_rollback() {
    let l = ledger();
    let previous = l.checkpoint(40, &[&signer()]);
    let detail = assert_fails(
        l.bundle(1, 30, 30, None).verify_with(&previous),
        K::Inconsistent,
        None,
    );
    assert!(detail.contains("rollback"), "{detail}");
}

#[test]
fn a_missing_or_mismatched_consistency_proof_is_inconsistent() {
    let l = ledger();
    let previous = l.checkpoint(25, &[&signer()]);
    // Made without the auditor's checkpoint.
    assert_fails(
        l.bundle(11, 30, 40, None).verify_with(&previous),
        K::Inconsistent,
        None,
    );
    // Made against another previous size.
    assert_fails(
        l.bundle(11, 30, 40, Some(20)).verify_with(&previous),
        K::Inconsistent,
        None,
    );
    // A proof with the right sizes but a corrupted element.
    let b = l
        .bundle(11, 30, 40, Some(25))
        .edit_proofs(|p| p["consistency"]["hashes"][0] = "ee".repeat(32).into());
    assert_fails(b.verify_with(&previous), K::Inconsistent, None);
    // A previous checkpoint of size 0 must have the empty tree's root.
    let body = format!("{ORIGIN}\n0\n{}\n", B64.encode(l.root(40)));
    let forged_empty = SignedNote::sign(&body, &[&signer()]).unwrap().to_text();
    assert_fails(
        l.bundle(1, 40, 40, None).verify_with(&forged_empty),
        K::Inconsistent,
        None,
    );
}

#[test]
fn an_untrusted_or_foreign_previous_checkpoint_is_refused() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, Some(25));
    // Its form is checked before its signature: an unsigned note with a broken body is
    // malformed (check 19), not untrusted (check 20).
    let broken_body = SignedNote::sign("not a checkpoint\n", &[&other_signer()])
        .unwrap()
        .to_text();
    let detail = assert_fails(bundle.verify_with(&broken_body), K::Malformed, None);
    assert!(detail.starts_with("previous checkpoint:"), "{detail}");
    assert_fails(
        bundle.verify_with(&l.checkpoint(25, &[&other_signer()])),
        K::PreviousUntrusted,
        None,
    );
    let mut note = SignedNote::parse(&l.checkpoint(25, &[&signer()])).unwrap();
    note.signatures[0].signature[0] ^= 1;
    assert_fails(
        bundle.verify_with(&note.to_text()),
        K::PreviousUntrusted,
        None,
    );
    let foreign = SignedNote::sign(&l.checkpoint_body("other-log", 25), &[&signer()])
        .unwrap()
        .to_text();
    assert_fails(bundle.verify_with(&foreign), K::PreviousUntrusted, None);
}

// ---------------------------------------------------------------------------------------
// The proof types as JSON bodies.
// ---------------------------------------------------------------------------------------

#[test]
fn proof_json_shapes() {
    let proof = InclusionProof::new(3, 8, vec![[0xab; 32], [0x01; 32]]);
    let json = serde_json::to_value(&proof).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "leaf_index": 3,
            "tree_size": 8,
            "hashes": ["ab".repeat(32), "01".repeat(32)],
        })
    );
    assert_eq!(
        serde_json::from_value::<InclusionProof>(json).unwrap(),
        proof
    );
    let proof = ConsistencyProof::new(2, 8, vec![]);
    let json = serde_json::to_value(&proof).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"from_size": 2, "to_size": 8, "hashes": []})
    );
    assert_eq!(
        serde_json::from_value::<ConsistencyProof>(json).unwrap(),
        proof
    );
    // Uppercase hex is read, lowercase written.
    let upper = serde_json::json!({"leaf_index": 0, "tree_size": 1, "hashes": ["AB".repeat(32)]});
    assert_eq!(
        serde_json::from_value::<InclusionProof>(upper)
            .unwrap()
            .hashes,
        vec![[0xab; 32]]
    );
    for bad in [
        serde_json::json!({"leaf_index": 0, "tree_size": 1, "hashes": ["ab"]}),
        serde_json::json!({"leaf_index": 0, "tree_size": 1, "hashes": "ab"}),
        serde_json::json!({"leaf_index": 0, "tree_size": 1, "hashes": [null]}),
        serde_json::json!({"leaf_index": -1, "tree_size": 1, "hashes": []}),
        serde_json::json!({"leaf_index": 0, "tree_size": 1}),
        serde_json::json!({"leaf_index": 0, "tree_size": 1, "hashes": [], "x": 1}),
    ] {
        assert!(
            serde_json::from_value::<InclusionProof>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    // The helpers verify as the merkle functions do.
    let l = ledger();
    let proof = l.inclusion(7, 40);
    proof.verify(&leaf_hash(&l.bytes[6]), &l.root(40)).unwrap();
    assert!(proof.verify(&leaf_hash(&l.bytes[7]), &l.root(40)).is_err());
    let proof = ConsistencyProof::new(13, 40, consistency_proof(&l.nodes, 13, 40).unwrap());
    proof.verify(&l.root(13), &l.root(40)).unwrap();
    assert!(proof.verify(&l.root(12), &l.root(40)).is_err());
}

#[test]
fn manifest_and_line_json_shapes() {
    let l = ledger();
    let bundle = l.bundle(11, 30, 40, None);
    let manifest: Value = serde_json::from_str(&bundle.manifest).unwrap();
    assert_eq!(
        manifest,
        serde_json::json!({
            "format": BUNDLE_FORMAT,
            "origin": ORIGIN,
            "from_seq": 11,
            "to_seq": 30,
            "entries": 20,
            "tree_size": 40,
            "created_at": "2026-12-01T08:30:00Z",
        })
    );
    let line: Value = serde_json::from_str(&bundle.lines()[0]).unwrap();
    assert_eq!(line["seq"], 11);
    assert_eq!(line["leaf_index"], 10);
    assert_eq!(line["hash"], l.hashes[10].to_hex());
    assert_eq!(line["prev_hash"], l.hashes[9].to_hex());
    assert_eq!(line["entry"], serde_json::to_value(&l.entries[10]).unwrap());
    assert_eq!(line["bytes"], B64.encode(&l.bytes[10]));
    let proofs: Value = serde_json::from_str(&bundle.proofs).unwrap();
    assert_eq!(proofs["tree_size"], 40);
    assert_eq!(proofs["first"]["leaf_index"], 10);
    assert_eq!(proofs["last"]["leaf_index"], 29);
    assert_eq!(proofs["consistency"], Value::Null);
}

// ---------------------------------------------------------------------------------------
// Never a panic.
// ---------------------------------------------------------------------------------------

fn fixture() -> &'static (Bundle, String, BundleSummary, BundleSummary) {
    static FIXTURE: OnceLock<(Bundle, String, BundleSummary, BundleSummary)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let l = chain(changes(12, u64::MAX, ""));
        let bundle = l.bundle(1, 12, 12, Some(5));
        let previous = l.checkpoint(5, &[&signer()]);
        let alone = bundle.verify().unwrap();
        let with_previous = bundle.verify_with(&previous).unwrap();
        (bundle, previous, alone, with_previous)
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Truncate { at: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (
            any::<usize>(),
            prop_oneof![
                Just("\n".to_owned()),
                Just("0".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("\u{2014} ".to_owned()),
                Just("\"".to_owned()),
                "\\PC{0,12}",
            ]
        )
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
    match m {
        Mutation::Replace { at, byte } => {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = *byte;
            }
        }
        Mutation::Delete { at, len } => {
            let start = pos(*at, bytes.len());
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Insert { at, text } => {
            let i = pos(*at, bytes.len());
            bytes.splice(i..i, text.bytes());
        }
        Mutation::Truncate { at } => bytes.truncate(pos(*at, bytes.len())),
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = line % lines.len();
            lines.insert(i, lines[i]);
            return lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            return lines.join("\n");
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A few numbers that break naive arithmetic, and any others.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(11),
        Just(12),
        Just(13),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 63),
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any mutations of one file: never a panic, and a bundle that still verifies proves
    /// exactly what the original did.
    #[test]
    fn mutated_files_never_panic(
        file in 0usize..5,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (bundle, previous, alone, with_previous) = fixture();
        let mut b = bundle.clone();
        let mut prev = previous.clone();
        let target = match file {
            0 => &mut b.manifest,
            1 => &mut b.entries,
            2 => &mut b.checkpoint,
            3 => &mut b.proofs,
            _ => &mut prev,
        };
        for m in &mutations {
            *target = apply(target, m);
        }
        let trusted = [signer().verifier()];
        if let Ok(summary) = verify_bundle(&b.parts(), &trusted, None) {
            prop_assert_eq!(&summary, alone);
        }
        if let Ok(summary) = verify_bundle(&b.parts(), &trusted, Some(&prev)) {
            prop_assert_eq!(&summary, with_previous);
        }
    }

    /// Arbitrary (and extreme) numbers in the manifest, the lines and the proofs.
    #[test]
    fn extreme_numbers_never_panic(
        from in edge_u64(),
        to in edge_u64(),
        entries in edge_u64(),
        tree_size in edge_u64(),
        first_index in edge_u64(),
        last_index in edge_u64(),
        proof_size in edge_u64(),
        from_size in edge_u64(),
        to_size in edge_u64(),
        line in 0usize..12,
        line_seq in edge_u64(),
        leaf_index in edge_u64(),
        hashes in 0usize..70,
    ) {
        let (bundle, previous, _, _) = fixture();
        let trusted = [signer().verifier()];
        let b = bundle.edit_manifest(|m| {
            m["from_seq"] = from.into();
            m["to_seq"] = to.into();
            m["entries"] = entries.into();
            m["tree_size"] = tree_size.into();
        });
        let result = verify_bundle(&b.parts(), &trusted, Some(previous));
        // No panic, and a changed manifest never verifies.
        prop_assert!(same_json(&b.manifest, &bundle.manifest) || result.is_err(), "{}", b.manifest);
        let b = bundle.edit_proofs(|p| {
            p["tree_size"] = proof_size.into();
            p["first"]["leaf_index"] = first_index.into();
            p["last"]["tree_size"] = last_index.into();
            p["last"]["hashes"] = vec!["ab".repeat(32); hashes].into();
            p["consistency"]["from_size"] = from_size.into();
            p["consistency"]["to_size"] = to_size.into();
        });
        let result = verify_bundle(&b.parts(), &trusted, Some(previous));
        prop_assert!(same_json(&b.proofs, &bundle.proofs) || result.is_err(), "{}", b.proofs);
        let b = bundle.edit_line(1, line as u64 + 1, |v| {
            v["seq"] = line_seq.into();
            v["leaf_index"] = leaf_index.into();
        });
        let result = verify_bundle(&b.parts(), &trusted, Some(previous));
        let unchanged = b
            .lines()
            .iter()
            .zip(bundle.lines())
            .all(|(edited, original)| same_json(edited, &original));
        prop_assert!(unchanged || result.is_err());
    }
}

#[test]
fn a_repeated_key_in_an_entry_line_is_entry_altered() {
    // A JSON value keeps the last of repeated keys, so an earlier one could show a reader
    // (or a parser that keeps the first) a seq or time the bytes do not hold.
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    for (needle, forged) in [
        (
            "\"entry\":{",
            "\"entry\":{\"seq\":999,\"observed_at\":\"1999-01-01T00:00:00Z\",",
        ),
        ("\"object\":{", "\"object\":{\"name\":\"someone-else\","),
    ] {
        let mut lines = bundle.lines();
        assert!(lines[22].contains(needle), "{needle} in {}", lines[22]);
        lines[22] = lines[22].replacen(needle, forged, 1);
        let detail = assert_fails(
            bundle.with_lines(&lines).verify(),
            K::EntryAltered,
            Some(23),
        );
        assert!(detail.contains("appears twice"), "{detail}");
    }
}

#[test]
fn failure_details_cannot_write_control_characters_to_a_terminal() {
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    let mut hostile = bundle.clone();
    hostile.proofs = bundle.proofs.replacen(
        '{',
        "{\"\\r\\u001b[2Kok: entries 1..=40 verified\\u001b[8m\": 1, ",
        1,
    );
    let failure = hostile.verify().unwrap_err();
    assert_eq!(failure.kind, K::Malformed);
    let shown = failure.to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.contains("\\u{1b}"), "{shown}");
}

#[test]
fn a_huge_file_of_blank_lines_is_refused_without_collecting_it() {
    let l = ledger();
    let bundle = l.bundle(1, 40, 40, None);
    let mut padded = bundle.clone();
    // Blank lines between entries: refused at the first one, whatever follows.
    let mut lines = bundle.lines();
    lines.insert(5, String::new());
    padded.entries = lines.join("\n") + &"\n".repeat(4_000_000);
    assert_fails(padded.verify(), K::Malformed, Some(6));
    // Trailing blank lines only: accepted.
    let mut trailing = bundle.clone();
    trailing.entries.push_str(&"\n \r\n".repeat(100_000));
    trailing.verify().unwrap();
}
