//! Tamper evidence: a ledger of a few dozen entries is built through the library and
//! closed; then its raw sled tree (`ledger`) is modified behind its back, the way an
//! attacker or a broken disk would, and the ledger must notice.
//!
//! For each kind of tampering the tests assert that `Ledger::open` refuses with
//! `LedgerError::Corrupt` naming the first broken seq and the right `FailureKind`; that an
//! `allow_corrupt` open succeeds read-only, with the head (and projection) at the last good
//! entry and every append refused; and that `verify()` names the same seq. Open-refusal
//! cases are built with `snapshot_every: 0`, since open only verifies the tail after the
//! latest snapshot; one test shows that a full `verify()` still catches tampering before a
//! snapshot. Snapshots are written off the append path, after a flush, at the durable head
//! (not at multiples of `snapshot_every`), and anchored in the chain by the next entry
//! appended, which commits to their bytes (its seq is in the snapshot's `P` record): a
//! forged, swapped, moved or re-committed snapshot is refused at open, a deleted one is
//! harmless, and one no entry commits to (a crash before the next append, or planted) is
//! never used and is no failure. The CLI's `verify`, `state`, `check` and
//! `--allow-corrupt` are checked on tampered ledgers too.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    normalize_event, open_ledger, open_raw, rewind_high_water, ticking_clock, RawStore,
    WatchEventGenerator,
};
use ledger::{
    CheckRequest, FailureKind, Ledger, LedgerConfig, LedgerError, Verdict, VerifyFailure,
};
use schemas::entry::snapshot_digest;
use schemas::{chain_hash, Entry, Hash, Transition};
use serde_json::{json, Value};

/// At least this many entries are built ("a few dozen").
const MIN_ENTRIES: u64 = 40;
/// The entry tampered with in the middle of the log.
const K: u64 = 17;

const STRICT: LedgerConfig = LedgerConfig {
    background_snapshots: false,
    snapshot_every: 0,
    snapshots_kept: 0,
    allow_corrupt: false,
    create: true,
    low_priority_snapshots: false,
    appends: true,
    cache_bytes: None,
    password_file: None,
    replica: false,
    lease: None,
};
const FORENSIC: LedgerConfig = LedgerConfig {
    background_snapshots: false,
    snapshot_every: 0,
    snapshots_kept: 0,
    allow_corrupt: true,
    create: true,
    low_priority_snapshots: false,
    appends: true,
    cache_bytes: None,
    password_file: None,
    replica: false,
    lease: None,
};

/// Every kind a single changed byte inside an entry's bytes can sensibly produce.
const BYTE_KINDS: &[FailureKind] = &[
    FailureKind::HashMismatch,
    FailureKind::Undecodable,
    FailureKind::SeqMismatch,
    FailureKind::PrevHashMismatch,
];

/// Builds a closed ledger of at least [`MIN_ENTRIES`] realistic entries in `dir` and
/// returns its head seq.
fn build(dir: &Path, snapshot_every: u64) -> u64 {
    build_until(dir, snapshot_every, 4, |ledger| {
        ledger.head().seq >= MIN_ENTRIES
    })
}

/// Builds a closed ledger in `dir` from the deterministic generator, `batch` events per
/// append, until `done`; returns its head seq.
fn build_until(
    dir: &Path,
    snapshot_every: u64,
    batch: usize,
    done: impl Fn(&Ledger) -> bool,
) -> u64 {
    let config = LedgerConfig {
        background_snapshots: false,
        snapshot_every,
        // Every snapshot kept: the cases tamper with old ones too.
        snapshots_kept: 0,
        ..LedgerConfig::default()
    };
    let mut ledger = open_ledger(dir, config).unwrap();
    // The same seed, the same events. The seed matters to one test:
    // `a_snapshot_forged_with_chain_and_tree_is_caught_by_a_signed_checkpoint` needs the
    // entry right after the snapshot at 40 to replay the same over the forged snapshot,
    // which holds for this seed's events (not for every seed's: 7 breaks it).
    let mut generator = WatchEventGenerator::new("tamper", 1);
    let mut clock = ticking_clock(1_790_000_000);
    while !done(&ledger) {
        let changes: Vec<_> = generator
            .events(batch)
            .iter()
            .filter_map(normalize_event)
            .collect();
        ledger.append(changes, clock()).unwrap();
        ledger.flush().unwrap();
    }
    let report = ledger.verify().unwrap();
    assert!(
        report.ok(),
        "the pristine ledger fails: {:?}",
        report.failure
    );
    ledger.head().seq
}

/// Fresh, identical ledgers (the generator and clock are deterministic) to tamper with.
///
/// Each case gets its own freshly built ledger rather than a file copy of one: sled may
/// still be closing a just-dropped database, so copying its files is not safe.
struct Fixture {
    root: tempfile::TempDir,
    head: u64,
    built: usize,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            root: tempfile::tempdir().unwrap(),
            head: 0,
            built: 0,
        }
    }

    /// The head seq every built ledger has.
    fn head(&mut self) -> u64 {
        if self.head == 0 {
            self.fresh();
        }
        self.head
    }

    /// A newly built, closed, pristine ledger.
    fn fresh(&mut self) -> PathBuf {
        self.built += 1;
        let dir = self.root.path().join(format!("ledger-{}", self.built));
        let head = build(&dir, 0);
        if self.head == 0 {
            self.head = head;
        }
        assert_eq!(head, self.head, "the build is deterministic");
        dir
    }
}

fn entry_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'E'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Opens the raw store of a closed ledger, lets `f` modify it, flushes and closes it.
fn tamper<R>(dir: &Path, f: impl FnOnce(&RawStore) -> R) -> R {
    let tree = open_raw(dir);
    let result = f(&tree);
    tree.flush().unwrap();
    drop(tree);
    result
}

fn raw_entry(tree: &RawStore, seq: u64) -> Vec<u8> {
    tree.get(entry_key(seq))
        .unwrap()
        .unwrap_or_else(|| panic!("no entry {seq}"))
        .to_vec()
}

/// Changes the entry bytes (after the 32-byte hash) of entry `seq` with `f`.
fn tamper_entry_bytes(dir: &Path, seq: u64, f: impl FnOnce(&mut [u8])) {
    tamper(dir, |tree| {
        let mut value = raw_entry(tree, seq);
        f(&mut value[32..]);
        tree.insert(entry_key(seq), value).unwrap();
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A valid change to offer a ledger that must refuse it.
fn new_change() -> schemas::ObjectChange {
    normalize_event(&json!({"type": "ADDED", "object": {
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "late", "namespace": "agents", "uid": "5a4db0x0-late",
                     "resourceVersion": "999999"}}}))
    .unwrap()
}

/// Asserts the three views of a tampered ledger: the strict open refuses with `Corrupt`
/// at `seq` with one of `kinds`; the forensic open has its head (and projection) at
/// `good_head` and refuses appends; `verify()` names the same failure. Returns it.
fn assert_tampered(dir: &Path, seq: u64, kinds: &[FailureKind], good_head: u64) -> VerifyFailure {
    let failure = match open_ledger(dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => failure,
        Err(other) => panic!("open failed, but not as Corrupt: {other}"),
        Ok(ledger) => panic!("a tampered ledger opened, head {:?}", ledger.head()),
    };
    assert_eq!(failure.seq, seq, "open named the wrong seq: {failure}");
    assert!(
        kinds.contains(&failure.kind),
        "open found {:?}, expected one of {kinds:?}: {failure}",
        failure.kind
    );

    let mut ledger = open_ledger(dir, FORENSIC).expect("allow_corrupt opens a tampered ledger");
    let corruption = ledger
        .corruption()
        .expect("the forensic ledger names the failure");
    assert_eq!(
        (corruption.seq, corruption.kind),
        (failure.seq, failure.kind)
    );
    // A snapshot refused at open is judged by the digest its committing entry (a later
    // one) commits to; the forensic walk from an older start judges it at its own seq by
    // the replayed state: the same failure in other words. Anything else, word for word.
    if failure.kind != FailureKind::SnapshotMismatch {
        assert_eq!(corruption, &failure);
    }
    let head = ledger.head();
    assert_eq!(head.seq, good_head, "forensic head");
    assert_eq!(
        ledger.projection().seq(),
        good_head,
        "the forensic projection includes entries past the last verified one"
    );
    if good_head > 0 {
        assert_eq!(ledger.entry(good_head).unwrap().unwrap().hash, head.hash);
    }
    match ledger.append([new_change()], chrono::Utc::now()) {
        Err(LedgerError::ReadOnly) => {}
        other => panic!("a forensic ledger accepted an append: {other:?}"),
    }
    assert_eq!(ledger.head(), head, "a refused append moved the head");

    let report = ledger.verify().unwrap();
    let found = report.failure.clone().expect("verify finds the tampering");
    assert_eq!(
        (found.seq, found.kind),
        (failure.seq, failure.kind),
        "verify: {found}"
    );
    assert_eq!(report.verified_seq, good_head);
    drop(ledger);
    failure
}

#[test]
fn pristine_ledger_opens_and_verifies() {
    let mut fixture = Fixture::new();
    assert!(fixture.head() >= MIN_ENTRIES);
    let dir = fixture.fresh();
    let ledger = open_ledger(&dir, STRICT).unwrap();
    assert_eq!(ledger.head().seq, fixture.head());
    assert!(ledger.corruption().is_none());
    let report = ledger.verify().unwrap();
    assert!(report.ok());
    assert_eq!(report.entries, fixture.head());
}

#[test]
fn changed_byte_inside_an_entry_is_caught_at_that_seq() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let pristine = tamper(&fixture.fresh(), |tree| raw_entry(tree, K));
    let bytes = &pristine[32..];
    let entry = Entry::decode(bytes).unwrap();
    let uid = entry.object_change().unwrap().uid.clone();

    // Targeted positions, each with the one kind it must produce.
    let uid_at = find(bytes, uid.as_bytes()).expect("the uid is stored as a string");
    let seq_at = find(bytes, b"\xa3seq").expect("named field seq") + 4;
    assert_eq!(u64::from(bytes[seq_at]), K, "seq is a positive fixint");
    let version_at = find(bytes, b"\xaeformat_version").expect("named field") + 15;
    assert_eq!(bytes[version_at], 1);
    let prev_at = find(bytes, b"\xa9prev_hash\xc4\x20").expect("named field prev_hash") + 12;
    assert_eq!(&bytes[prev_at..prev_at + 32], &entry.prev_hash.0);
    let targeted: [(&str, usize, u8, FailureKind); 5] = [
        // A letter of the uid becomes another letter: still decodes, hash differs.
        (
            "uid",
            uid_at + uid.len() - 1,
            b'x' ^ bytes[uid_at + uid.len() - 1],
            FailureKind::HashMismatch,
        ),
        (
            "seq",
            seq_at,
            (K as u8) ^ ((K + 1) as u8),
            FailureKind::SeqMismatch,
        ),
        (
            "prev_hash",
            prev_at + 5,
            0x01,
            FailureKind::PrevHashMismatch,
        ),
        (
            "format_version",
            version_at,
            1 ^ 2,
            FailureKind::Undecodable,
        ),
        // 0xc1 is never used in MessagePack.
        ("map header", 0, bytes[0] ^ 0xc1, FailureKind::Undecodable),
    ];
    for (what, at, xor, kind) in targeted {
        assert_ne!(xor, 0, "{what}: the byte must change");
        eprintln!("case: {what} (byte {at} of entry {K}, xor {xor:#04x})");
        let dir = fixture.fresh();
        tamper_entry_bytes(&dir, K, |b| b[at] ^= xor);
        let failure = assert_tampered(&dir, K, &[kind], K - 1);
        assert!(!failure.detail.is_empty(), "{what}");
    }

    // Evenly spread positions across the whole entry: whatever the byte was, the failure
    // is at K and of a kind a changed byte can cause.
    let mut seen = Vec::new();
    for i in 0..10 {
        let at = i * (bytes.len() - 1) / 9;
        eprintln!("case: byte {at} of entry {K}, xor 0x5a");
        let dir = fixture.fresh();
        tamper_entry_bytes(&dir, K, |b| b[at] ^= 0x5a);
        let failure = assert_tampered(&dir, K, BYTE_KINDS, K - 1);
        seen.push((at, failure.kind));
    }
    assert!(
        seen.iter().any(|(_, k)| *k == FailureKind::HashMismatch),
        "no sampled byte was plain content: {seen:?}"
    );

    // The entries after K are untouched and the ledger still has its head record.
    let dir = fixture.fresh();
    tamper_entry_bytes(&dir, K, |b| b[uid_at] ^= 0x01);
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    assert_eq!(ledger.verify().unwrap().head_seq, head);
}

#[test]
fn changed_stored_hash_is_a_hash_mismatch() {
    let mut fixture = Fixture::new();
    for seq in [1, K, fixture.head()] {
        eprintln!("case: stored hash of entry {seq}");
        let dir = fixture.fresh();
        tamper(&dir, |tree| {
            let mut value = raw_entry(tree, seq);
            value[7] ^= 0x80;
            tree.insert(entry_key(seq), value).unwrap();
        });
        assert_tampered(&dir, seq, &[FailureKind::HashMismatch], seq - 1);
    }
}

#[test]
fn removed_middle_entry_is_a_seq_gap() {
    let mut fixture = Fixture::new();
    let dir = fixture.fresh();
    tamper(&dir, |tree| {
        tree.remove(entry_key(K)).unwrap().expect("removed")
    });
    let failure = assert_tampered(&dir, K, &[FailureKind::SeqGap], K - 1);
    assert!(failure.detail.contains(&K.to_string()), "{failure}");
}

#[test]
fn swapped_entries_fail_at_the_first_of_them() {
    let mut fixture = Fixture::new();
    let dir = fixture.fresh();
    tamper(&dir, |tree| {
        let a = raw_entry(tree, K);
        let b = raw_entry(tree, K + 1);
        tree.insert(entry_key(K), b).unwrap();
        tree.insert(entry_key(K + 1), a).unwrap();
    });
    assert_tampered(&dir, K, &[FailureKind::SeqMismatch], K - 1);
}

#[test]
fn removed_last_entry_is_a_seq_gap_at_the_head() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    tamper(&dir, |tree| {
        tree.remove(entry_key(head)).unwrap().expect("removed")
    });
    assert_tampered(&dir, head, &[FailureKind::SeqGap], head - 1);
}

#[test]
fn changed_head_record_hash_is_a_head_mismatch() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    tamper(&dir, |tree| {
        let mut value = tree.get(b"H").unwrap().unwrap().to_vec();
        assert_eq!(value.len(), 40);
        assert_eq!(value[..8], head.to_be_bytes());
        value[8 + 31] ^= 0x01;
        tree.insert(b"H", value).unwrap();
    });
    // Every entry verifies; only the head record is wrong.
    assert_tampered(&dir, head, &[FailureKind::HeadMismatch], head);
}

#[test]
fn head_record_pointing_back_makes_later_entries_trailing() {
    let mut fixture = Fixture::new();
    let dir = fixture.fresh();
    // Roll the head back to K with K's real hash: entries after it are beyond the head.
    tamper(&dir, |tree| {
        let hash = Hash::from_slice(&raw_entry(tree, K)).unwrap();
        let mut value = K.to_be_bytes().to_vec();
        value.extend_from_slice(&hash.0);
        tree.insert(b"H", value).unwrap();
    });
    assert_tampered(&dir, K + 1, &[FailureKind::TrailingEntry], K);
}

#[test]
fn extra_entry_beyond_the_head_is_a_trailing_entry() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    // A well-formed, correctly chained entry: only the head record says it does not belong.
    tamper(&dir, |tree| {
        let last = raw_entry(tree, head);
        let last_hash = Hash::from_slice(&last).unwrap();
        let mut entry = Entry::decode(&last[32..]).unwrap();
        entry.seq = head + 1;
        entry.prev_hash = last_hash;
        entry.transitions = Vec::new();
        let schemas::Change::Object(change) = &mut entry.change else {
            panic!("an object change");
        };
        *change = new_change();
        let bytes = entry.encode().unwrap();
        let mut value = chain_hash(&last_hash, head + 1, &bytes).0.to_vec();
        value.extend_from_slice(&bytes);
        tree.insert(entry_key(head + 1), value).unwrap();
    });
    assert_tampered(&dir, head + 1, &[FailureKind::TrailingEntry], head);
}

#[test]
fn removed_head_record_leaves_every_entry_trailing() {
    let mut fixture = Fixture::new();
    let dir = fixture.fresh();
    tamper(&dir, |tree| tree.remove(b"H").unwrap().expect("removed"));
    assert_tampered(&dir, 1, &[FailureKind::TrailingEntry], 0);
}

/// Re-chains entries `from..=head` and the head record after entries were rewritten,
/// as a forger with write access (but no external anchor to fool) would.
fn rechain(tree: &RawStore, from: u64, head: u64) {
    let mut prev = if from == 1 {
        Hash::ZERO
    } else {
        Hash::from_slice(&raw_entry(tree, from - 1)).unwrap()
    };
    for seq in from..=head {
        let value = raw_entry(tree, seq);
        let mut entry = Entry::decode(&value[32..]).unwrap();
        entry.prev_hash = prev;
        let bytes = entry.encode().unwrap();
        let hash = chain_hash(&prev, seq, &bytes);
        let mut value = hash.0.to_vec();
        value.extend_from_slice(&bytes);
        tree.insert(entry_key(seq), value).unwrap();
        prev = hash;
    }
    let mut value = head.to_be_bytes().to_vec();
    value.extend_from_slice(&prev.0);
    tree.insert(b"H", value).unwrap();
}

/// The first entry (after `after`) whose transitions are not empty.
fn entry_with_transitions(dir: &Path, after: u64) -> u64 {
    let ledger = open_ledger(dir, STRICT).unwrap();
    let seq = ledger
        .entries(after + 1, u64::MAX)
        .map(Result::unwrap)
        .find(|e| !e.entry.transitions.is_empty())
        .expect("the generated log binds and releases pods")
        .entry
        .seq;
    seq
}

#[test]
fn forged_transitions_rechained_are_a_transition_mismatch() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    let target = entry_with_transitions(&dir, 1);
    assert!(target < head, "want a forged entry in the middle");
    // The entry claims no binding changed; the chain is recomputed so only replay can tell.
    tamper(&dir, |tree| {
        let value = raw_entry(tree, target);
        let mut entry = Entry::decode(&value[32..]).unwrap();
        entry.transitions.clear();
        tree.insert(
            entry_key(target),
            [&value[..32], &entry.encode().unwrap()].concat(),
        )
        .unwrap();
        rechain(tree, target, head);
    });
    let failure = match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => failure,
        other => panic!("expected Corrupt, got {other:?}"),
    };
    assert_eq!(
        (failure.seq, failure.kind),
        (target, FailureKind::TransitionMismatch)
    );
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    assert_eq!(ledger.head().seq, target - 1);
    let report = ledger.verify().unwrap();
    assert_eq!(
        report.failure.map(|f| (f.seq, f.kind)),
        Some((target, FailureKind::TransitionMismatch))
    );
    // Forging a binding that never happened is caught the same way.
    let dir = fixture.fresh();
    let target = 2;
    tamper(&dir, |tree| {
        let value = raw_entry(tree, target);
        let mut entry = Entry::decode(&value[32..]).unwrap();
        entry.transitions.push(Transition::Bound {
            binding: schemas::BindingKind::Claim,
            pod_uid: "p0d00000-forged".into(),
            sandbox_uid: "5a4db0x0-forged".into(),
            claim_uid: Some("c1a1m000-forged".into()),
        });
        tree.insert(
            entry_key(target),
            [&value[..32], &entry.encode().unwrap()].concat(),
        )
        .unwrap();
        rechain(tree, target, head);
    });
    let err = open_ledger(&dir, STRICT).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Corrupt(f) if f.seq == target && f.kind == FailureKind::TransitionMismatch),
        "{err}"
    );
}

#[test]
fn forensic_state_after_a_transition_mismatch_stops_before_the_bad_entry() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    let target = entry_with_transitions(&dir, 1);
    tamper(&dir, |tree| {
        let value = raw_entry(tree, target);
        let mut entry = Entry::decode(&value[32..]).unwrap();
        entry.transitions.clear();
        tree.insert(
            entry_key(target),
            [&value[..32], &entry.encode().unwrap()].concat(),
        )
        .unwrap();
        rechain(tree, target, head);
    });
    let expected = open_ledger(&fixture.fresh(), STRICT)
        .unwrap()
        .state_at_seq(target - 1)
        .unwrap();
    assert_tampered(&dir, target, &[FailureKind::TransitionMismatch], target - 1);
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    assert_eq!(ledger.projection(), &expected);
    assert_eq!(ledger.state_at_seq(ledger.head().seq).unwrap(), expected);
}

#[test]
fn malformed_head_record_is_refused_but_opens_for_forensics() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    tamper(&dir, |tree| {
        let value = tree.get(b"H").unwrap().unwrap();
        tree.insert(b"H", &value[..20]).unwrap();
    });
    match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => assert_eq!(failure.kind, FailureKind::HeadMismatch),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let mut ledger = open_ledger(&dir, FORENSIC).expect("allow_corrupt opens it read-only");
    assert!(ledger.corruption().is_some());
    assert!(ledger.head().seq <= head);
    assert!(matches!(
        ledger.append([new_change()], chrono::Utc::now()),
        Err(LedgerError::ReadOnly)
    ));
}

#[test]
fn full_verify_catches_tampering_before_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("snapshotted");
    let head = build(&dir, 10);
    assert!(head >= 30);
    let committed = tamper(&dir, |tree| {
        // Change a letter of entry 5's uid, before any snapshot.
        let mut value = raw_entry(tree, 5);
        let uid = Entry::decode(&value[32..])
            .unwrap()
            .object_change()
            .unwrap()
            .uid
            .clone();
        let at = 32 + find(&value[32..], uid.as_bytes()).unwrap();
        value[at + 1] ^= 0x01;
        tree.insert(entry_key(5), value).unwrap();
        committed_snapshots(tree)
    });
    assert!(
        committed.len() >= 3 && committed[0].seq > 5,
        "snapshot_every: 10 writes committed snapshots after entry 5: {committed:?}"
    );
    // Open trusts the latest snapshot and checks only the tail after it...
    let ledger = open_ledger(&dir, STRICT).expect("the tail after the snapshot is intact");
    assert_eq!(ledger.head().seq, head);
    assert!(ledger.corruption().is_none());
    // ...but the full walk does not.
    let report = ledger.verify().unwrap();
    let failure = report.failure.expect("verify walks from seq 1");
    assert_eq!((failure.seq, failure.kind), (5, FailureKind::HashMismatch));
    assert_eq!(report.verified_seq, 4);
    drop(ledger);

    // Tampering after the latest snapshot is still refused at open.
    tamper(&dir, |tree| {
        let mut value = raw_entry(tree, head);
        value[0] ^= 0x01;
        tree.insert(entry_key(head), value).unwrap();
    });
    match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => {
            assert_eq!(
                (failure.seq, failure.kind),
                (head, FailureKind::HashMismatch)
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Runs the binary (its store waits out the lock a just-closed handle of this process may
/// still hold).
fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_claim-ledger"))
        .args(args)
        .output()
        .expect("run claim-ledger");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn cli_refuses_a_tampered_ledger_and_allow_corrupt_inspects_it() {
    let mut fixture = Fixture::new();
    let head = fixture.head();
    let dir = fixture.fresh();
    let db = dir.to_str().unwrap();

    let (code, stdout, stderr) = cli(&["verify", "--db", db]);
    assert_eq!(code, 0, "pristine: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["failure"], Value::Null);
    let (code, stdout, stderr) = cli(&["verify", "--db", db, "--chain-only"]);
    assert_eq!(code, 0, "pristine, chain only: {stderr}");
    let chain: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(chain["verified_hash"], report["verified_hash"]);

    tamper(&dir, |tree| {
        let mut value = raw_entry(tree, K);
        value[3] ^= 0x10;
        tree.insert(entry_key(K), value).unwrap();
    });

    let (code, stdout, stderr) = cli(&["verify", "--db", db]);
    assert_eq!(code, 1, "verify of a tampered ledger: {stderr}");
    assert!(
        stderr.contains(&format!("seq {K}")),
        "stderr names the seq: {stderr}"
    );
    assert!(stderr.contains("hash_mismatch"), "{stderr}");
    // `verify` builds no state at open, so a ledger every other command refuses still
    // gets its full report.
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["failure"]["seq"], K);
    assert_eq!(report["verified_seq"], K - 1);

    let (code, stdout, stderr) = cli(&["verify", "--db", db, "--allow-corrupt", "--chain-only"]);
    assert_eq!(code, 1, "chain only: {stderr}");
    let chain: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(chain["failure"]["seq"], K);
    assert_eq!(chain["failure"]["kind"], "hash_mismatch");

    let (code, stdout, stderr) = cli(&["verify", "--db", db, "--allow-corrupt"]);
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["failure"]["seq"], K);
    assert_eq!(report["failure"]["kind"], "hash_mismatch");
    assert_eq!(report["verified_seq"], K - 1);
    assert_eq!(report["head_seq"], head);
    assert!(stderr.contains(&format!("seq {K}")), "{stderr}");

    for command in ["state", "export"] {
        let (code, _, stderr) = cli(&[command, "--db", db]);
        assert_eq!(code, 1, "{command} without --allow-corrupt: {stderr}");
        assert!(stderr.contains(&format!("seq {K}")), "{stderr}");
    }

    let (code, stdout, stderr) = cli(&["state", "--db", db, "--allow-corrupt"]);
    assert_eq!(code, 0, "state --allow-corrupt: {stderr}");
    let state: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        state["seq"],
        K - 1,
        "the state stops at the last verified entry"
    );
    assert!(state["objects"].as_array().is_some_and(|o| !o.is_empty()));

    // Forensics never writes: ingest is refused and the tampering is still there.
    let events = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        events.path(),
        support::to_lines(&WatchEventGenerator::new("late", 1).events(3)),
    )
    .unwrap();
    let (code, _, stderr) = cli(&[
        "ingest",
        "--db",
        db,
        "--allow-corrupt",
        events.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "ingest into a forensic ledger: {stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    let (code, _, _) = cli(&["verify", "--db", db]);
    assert_eq!(code, 1);
}

#[test]
fn forged_snapshot_is_detected() {
    let root = tempfile::tempdir().unwrap();
    let truth_dir = root.path().join("truth");
    let dir = root.path().join("snapshotted");
    // Stop right after a pod is bound, and snapshot exactly there (the entry after it
    // commits to the snapshot), so the open projection takes that binding from the
    // snapshot.
    let bound = build_until(&truth_dir, 0, 1, |ledger| {
        ledger.head().seq >= 10 && !ledger.projection().active_bindings().is_empty()
    });
    let head = build_until(&dir, bound, 1, |ledger| ledger.head().seq > bound);
    let latest = bound;
    tamper(&dir, |tree| {
        assert_eq!(
            assert_snapshot_layout(tree, bound, head),
            [Committed {
                seq: latest,
                by: latest + 1
            }],
            "the same entries, with a committed snapshot where the pod was just bound"
        );
    });

    let truth = open_ledger(&truth_dir, STRICT).unwrap();
    let binding = truth.projection().active_bindings().remove(0);
    let real_id = binding
        .sandbox_id
        .clone()
        .expect("generated pods carry a sandbox id");
    let forged_id = real_id.replacen("sbx-", "sbX-", 1);
    let request = |sandbox_id: &str| -> CheckRequest {
        serde_json::from_value(json!({
            "namespace": binding.pod.namespace, "pod_name": binding.pod.name,
            "pod_uid": binding.pod.uid, "sandbox_id": sandbox_id}))
        .unwrap()
    };
    assert_eq!(
        truth.check(&request(&real_id), true).decision,
        Verdict::Allow
    );
    assert_eq!(
        truth.check(&request(&forged_id), true).decision,
        Verdict::Deny
    );
    drop(truth);

    // Rewrite the pod's identity inside the latest snapshot only (same length, so the
    // MessagePack stays well-formed); the log itself is untouched.
    tamper(&dir, |tree| {
        let mut key = vec![b'S'];
        key.extend_from_slice(&latest.to_be_bytes());
        let mut value = tree
            .get(&key)
            .unwrap()
            .expect("the latest snapshot")
            .to_vec();
        let mut replaced = 0;
        while let Some(at) = find(&value, real_id.as_bytes()) {
            value[at..at + forged_id.len()].copy_from_slice(forged_id.as_bytes());
            replaced += 1;
        }
        assert!(replaced > 0, "the snapshot records the pod's sandbox id");
        tree.insert(key, value).unwrap();
    });

    // The entry after the snapshot commits to other bytes: open refuses the ledger rather
    // than answer from the forged projection; forensics opens it read-only at the last
    // verified entry, from replay, never from the forged snapshot.
    let failure = assert_tampered(&dir, latest, &[FailureKind::SnapshotMismatch], latest - 1);
    assert!(
        failure
            .detail
            .contains(&format!("entry {} commits to", latest + 1)),
        "{failure}"
    );
    let truth = open_ledger(&truth_dir, STRICT).unwrap();
    let expected = truth.state_at_seq(latest - 1).unwrap();
    drop(truth);
    let forensic = open_ledger(&dir, FORENSIC).unwrap();
    assert_eq!(
        forensic.projection(),
        &expected,
        "the forensic state is the replayed one"
    );
    assert_ne!(
        forensic.check(&request(&forged_id), true).decision,
        Verdict::Allow,
        "the forensic ledger allows the forged sandbox id {forged_id}"
    );
    assert_eq!(forensic.state_at_seq(latest - 1).unwrap(), expected);
    drop(forensic);

    // The same through the binary: `check` refuses to answer from the ledger, and with
    // --allow-corrupt it does not allow the forged identity.
    let db = dir.to_str().unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check",
            "--db",
            db,
            "--namespace",
            &binding.pod.namespace,
            "--pod-name",
            &binding.pod.name,
            "--pod-uid",
            &binding.pod.uid,
            "--sandbox-id",
            &forged_id,
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, _, stderr) = check(&[]);
    assert_eq!(
        code, 1,
        "check on a ledger with a forged snapshot: {stderr}"
    );
    assert!(stderr.contains(&format!("seq {latest}")), "{stderr}");
    assert!(stderr.contains("snapshot_mismatch"), "{stderr}");
    let (code, stdout, stderr) = check(&["--allow-corrupt"]);
    assert_eq!(
        code, 1,
        "the forensic check allows the forged identity: {stdout} {stderr}"
    );
    let decision: Value = serde_json::from_str(&stdout).unwrap();
    assert_ne!(decision["decision"], "allow", "{decision}");
}

fn snapshot_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'S'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of the `P` record naming the entry that commits to the snapshot at `seq`.
fn commitment_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'P'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A snapshot stored at `seq`, and the entry that commits to it (its `P` record), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    seq: u64,
    by: Option<u64>,
}

/// A committed snapshot: stored at `seq`, committed to by the entry at `by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    seq: u64,
    by: u64,
}

/// The stored snapshots with their commitments, oldest first.
fn stored_snapshots(tree: &RawStore) -> Vec<Stored> {
    tree.scan_prefix(b"S")
        .map(|item| {
            let seq = u64::from_be_bytes(item.unwrap().0[1..].try_into().unwrap());
            let by = tree.get(commitment_key(seq)).unwrap().map(|value| {
                u64::from_be_bytes(value[..].try_into().expect("a P record holds a seq"))
            });
            Stored { seq, by }
        })
        .collect()
}

/// The committed snapshots, oldest first.
fn committed_snapshots(tree: &RawStore) -> Vec<Committed> {
    stored_snapshots(tree)
        .into_iter()
        .filter_map(|s| s.by.map(|by| Committed { seq: s.seq, by }))
        .collect()
}

/// Asserts that the snapshot stored at `seq` is no longer `forged` and that the entry at
/// `by` commits to the bytes stored now.
fn assert_rewritten_and_committed(tree: &RawStore, seq: u64, by: u64, forged: &[u8]) {
    let stored = tree.get(snapshot_key(seq)).unwrap().unwrap();
    assert_ne!(
        &stored[..],
        forged,
        "the forged bytes at {seq} are still there"
    );
    assert_eq!(commitment(tree, by), Some(snapshot_digest(&stored)));
}

/// The digest the entry at `seq` commits to, if any.
fn commitment(tree: &RawStore, seq: u64) -> Option<Hash> {
    Entry::decode(&raw_entry(tree, seq)[32..]).unwrap().snapshot
}

/// Asserts the layout of snapshots written off the append path with `snapshot_every`
/// `every` in a ledger of `head` entries: each is at least `every` entries after the one
/// before; each but maybe the newest is committed to by a later entry (at most the head),
/// which commits to the digest of its stored bytes; no other entry commits to any.
/// Returns the committed ones.
fn assert_snapshot_layout(tree: &RawStore, every: u64, head: u64) -> Vec<Committed> {
    let stored = stored_snapshots(tree);
    let mut previous = 0;
    for (i, s) in stored.iter().enumerate() {
        assert!(s.seq >= previous + every, "snapshots too close: {stored:?}");
        previous = s.seq;
        match s.by {
            Some(by) => {
                assert!(s.seq < by && by <= head, "{s:?}");
                let bytes = tree.get(snapshot_key(s.seq)).unwrap().unwrap();
                assert_eq!(commitment(tree, by), Some(snapshot_digest(&bytes)), "{s:?}");
            }
            None => assert_eq!(i, stored.len() - 1, "only the newest is uncommitted"),
        }
    }
    let committed = committed_snapshots(tree);
    for seq in 1..=head {
        let expected = committed.iter().any(|c| c.by == seq);
        assert_eq!(commitment(tree, seq).is_some(), expected, "entry {seq}");
    }
    committed
}

/// A closed ledger with `snapshot_every: 10` in `dir`, the same entries without snapshots
/// in `truth`; returns the head and the committed snapshots (at least three, the latest at
/// least 30).
fn snapshotted(root: &Path) -> (PathBuf, PathBuf, u64, Vec<Committed>) {
    let dir = root.join("snapshotted");
    let truth = root.join("truth");
    let head = build(&dir, 10);
    assert_eq!(build(&truth, 0), head, "the build is deterministic");
    let committed = tamper(&dir, |tree| assert_snapshot_layout(tree, 10, head));
    assert!(committed.len() >= 3, "{committed:?}");
    assert!(committed.last().unwrap().seq >= 30, "{committed:?}");
    (dir, truth, head, committed)
}

/// Changes one letter of a uid inside the stored snapshot bytes (same length, so they stay
/// well-formed MessagePack) and returns the forged bytes.
fn forge_snapshot(tree: &RawStore, seq: u64) -> Vec<u8> {
    let mut value = tree.get(snapshot_key(seq)).unwrap().unwrap().to_vec();
    let entry = Entry::decode(&raw_entry(tree, seq)[32..]).unwrap();
    let uid = match entry.object_change() {
        Some(change) => change.uid.clone(),
        None => panic!("entry {seq} is not an object change"),
    };
    let at = find(&value, uid.as_bytes()).expect("the snapshot records the object");
    value[at + 1] ^= 0x01;
    value
}

/// Makes the entry at `seq`, which commits to a snapshot, commit to `digest` instead,
/// keeping its stored hash (no rechaining).
fn recommit(tree: &RawStore, seq: u64, digest: Hash) {
    let value = raw_entry(tree, seq);
    let mut entry = Entry::decode(&value[32..]).unwrap();
    assert!(
        entry.snapshot.is_some(),
        "entry {seq} commits to a snapshot"
    );
    assert_ne!(entry.snapshot, Some(digest), "the commitment must change");
    entry.snapshot = Some(digest);
    tree.insert(
        entry_key(seq),
        [&value[..32], &entry.encode().unwrap()].concat(),
    )
    .unwrap();
}

#[test]
fn snapshot_entries_commit_to_their_snapshots() {
    let root = tempfile::tempdir().unwrap();
    let (dir, _, head, committed) = snapshotted(root.path());
    // Off the append path: snapshots are at the durable heads of flushes, not at multiples
    // of snapshot_every, and the entry at a snapshot's seq is not the one committing to it.
    tamper(&dir, |tree| {
        for c in &committed {
            assert_eq!(commitment(tree, c.seq), None, "{c:?}");
        }
    });
    assert!(committed.iter().any(|c| c.seq % 10 != 0), "{committed:?}");
    let latest = *committed.last().unwrap();
    let ledger = open_ledger(&dir, STRICT).unwrap();
    assert_eq!(ledger.head().seq, head);
    assert!(ledger.verify().unwrap().ok());
    let exported = ledger.entry(latest.by).unwrap().unwrap();
    assert!(exported.entry.snapshot.is_some());
    assert_eq!(Entry::decode(&exported.bytes).unwrap(), exported.entry);
}

#[test]
fn deleted_snapshots_are_harmless_at_open() {
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, head, committed) = snapshotted(root.path());
    let latest = *committed.last().unwrap();
    let truth = open_ledger(&truth_dir, STRICT).unwrap();
    let expected = truth.projection().clone();
    let earlier = truth.state_at_seq(latest.seq - 3).unwrap();
    drop(truth);

    // The latest snapshot gone: open starts from the one before and replays the rest.
    tamper(&dir, |tree| {
        tree.remove(snapshot_key(latest.seq)).unwrap().unwrap()
    });
    let ledger = open_ledger(&dir, STRICT).expect("a deleted snapshot is harmless");
    assert!(ledger.corruption().is_none());
    assert_eq!(ledger.head().seq, head);
    assert_eq!(
        ledger.projection(),
        &expected,
        "the projection is a full replay's"
    );
    assert_eq!(ledger.state_at_seq(latest.seq - 3).unwrap(), earlier);
    // The log committed to it (at the entry after it), so the full walk still names it.
    let failure = ledger
        .verify()
        .unwrap()
        .failure
        .expect("verify names the gone snapshot");
    assert_eq!(
        (failure.seq, failure.kind),
        (latest.by, FailureKind::SnapshotMismatch),
        "{failure}"
    );
    drop(ledger);

    // Every snapshot gone: open replays from seq 1.
    tamper(&dir, |tree| {
        for s in stored_snapshots(tree) {
            tree.remove(snapshot_key(s.seq)).unwrap();
        }
    });
    let ledger = open_ledger(&dir, STRICT).expect("no snapshot at all is harmless");
    assert!(ledger.corruption().is_none());
    assert_eq!(ledger.projection(), &expected);
    assert_eq!(ledger.state_at_seq(latest.seq - 3).unwrap(), earlier);
}

#[test]
fn a_snapshot_moved_to_another_seq_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, _, committed) = snapshotted(root.path());
    let [.., a, b, latest] = committed[..] else {
        panic!("three committed snapshots: {committed:?}");
    };

    // An older snapshot (well-formed, once genuine) copied over the latest one.
    tamper(&dir, |tree| {
        let older = tree.get(snapshot_key(b.seq)).unwrap().unwrap();
        tree.insert(snapshot_key(latest.seq), older).unwrap();
    });
    let failure = assert_tampered(
        &dir,
        latest.seq,
        &[FailureKind::SnapshotMismatch],
        latest.seq - 1,
    );
    assert!(
        failure
            .detail
            .contains(&format!("entry {} commits to", latest.by)),
        "{failure}"
    );
    let expected = open_ledger(&truth_dir, STRICT)
        .unwrap()
        .state_at_seq(latest.seq - 1)
        .unwrap();
    assert_eq!(open_ledger(&dir, FORENSIC).unwrap().projection(), &expected);

    // Two older snapshots swapped, the copy at the latest seq removed: the newest left is
    // refused at open; verify names the first.
    tamper(&dir, |tree| {
        let bytes_a = tree.get(snapshot_key(a.seq)).unwrap().unwrap();
        let bytes_b = tree.get(snapshot_key(b.seq)).unwrap().unwrap();
        tree.insert(snapshot_key(a.seq), bytes_b).unwrap();
        tree.insert(snapshot_key(b.seq), bytes_a).unwrap();
        tree.remove(snapshot_key(latest.seq)).unwrap();
    });
    match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => assert_eq!(
            (failure.seq, failure.kind),
            (b.seq, FailureKind::SnapshotMismatch)
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    let failure = ledger.verify().unwrap().failure.unwrap();
    assert_eq!(
        (failure.seq, failure.kind),
        (a.seq, FailureKind::SnapshotMismatch)
    );
    drop(ledger);

    // The latest snapshot moved with its commitment to an earlier seq: the committing
    // entry commits to exactly these bytes, but they are the state after another seq.
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, _, committed) = snapshotted(root.path());
    let latest = *committed.last().unwrap();
    let target = latest.seq - 1;
    tamper(&dir, |tree| {
        assert_eq!(tree.get(snapshot_key(target)).unwrap(), None);
        let bytes = tree.remove(snapshot_key(latest.seq)).unwrap().unwrap();
        let by = tree.remove(commitment_key(latest.seq)).unwrap().unwrap();
        tree.insert(snapshot_key(target), bytes).unwrap();
        tree.insert(commitment_key(target), by).unwrap();
    });
    let failure = assert_tampered(&dir, target, &[FailureKind::SnapshotMismatch], target - 1);
    assert!(
        failure
            .detail
            .contains(&format!("names seq {}", latest.seq)),
        "{failure}"
    );
    let expected = open_ledger(&truth_dir, STRICT)
        .unwrap()
        .state_at_seq(target - 1)
        .unwrap();
    assert_eq!(open_ledger(&dir, FORENSIC).unwrap().projection(), &expected);
}

#[test]
fn a_snapshot_at_a_seq_without_one_is_never_used() {
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, head, committed) = snapshotted(root.path());
    let [.., previous, latest] = committed[..] else {
        panic!("two committed snapshots: {committed:?}");
    };
    let target = latest.seq - 5;
    assert!(previous.by < target, "{committed:?}");
    // A once-genuine snapshot, with a uid forged in it, planted where no entry commits to
    // one: no `P` record, and the entry at its seq commits to none.
    tamper(&dir, |tree| {
        assert_eq!(commitment(tree, target), None);
        assert_eq!(tree.get(commitment_key(target)).unwrap(), None);
        let forged = forge_snapshot(tree, previous.seq);
        tree.insert(snapshot_key(target), forged).unwrap();
    });
    let truth = open_ledger(&truth_dir, STRICT).unwrap();
    let expected = truth.state_at_seq(target + 2).unwrap();
    let expected_head = truth.projection().clone();
    drop(truth);
    // Open starts from the latest (committed) snapshot; replay passes over the planted
    // one, which is uncommitted: not a failure either.
    let ledger = open_ledger(&dir, STRICT).unwrap();
    assert_eq!(ledger.projection(), &expected_head);
    assert_eq!(ledger.state_at_seq(target + 2).unwrap(), expected);
    let report = ledger.verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.verified_seq, head);
    drop(ledger);
    // As the newest snapshot it is passed over too: open starts from the one before.
    tamper(&dir, |tree| tree.remove(snapshot_key(latest.seq)).unwrap());
    let ledger = open_ledger(&dir, STRICT).expect("an uncommitted snapshot is never used");
    assert!(ledger.corruption().is_none());
    assert_eq!(ledger.projection(), &expected_head);
    assert_eq!(ledger.state_at_seq(target + 2).unwrap(), expected);
    // The full walk names only the committed snapshot that is gone.
    let failure = ledger.verify().unwrap().failure.unwrap();
    assert_eq!(
        (failure.seq, failure.kind),
        (latest.by, FailureKind::SnapshotMismatch),
        "{failure}"
    );
}

#[test]
fn an_uncommitted_snapshot_is_never_used_and_is_not_a_failure() {
    let root = tempfile::tempdir().unwrap();
    // One event per append, so the flush at 50 writes a snapshot there, and the ledger is
    // closed before any entry commits to it: the state a crash between the snapshot write
    // and the next append leaves.
    let dir = root.path().join("crashed");
    let head = build_until(&dir, 10, 1, |ledger| ledger.head().seq >= 50);
    assert_eq!(head, 50);
    let truth_dir = root.path().join("truth");
    assert_eq!(build_until(&truth_dir, 0, 1, |l| l.head().seq >= 50), head);
    let truth = open_ledger(&truth_dir, STRICT).unwrap();
    let expected = truth.projection().clone();
    let earlier = truth.state_at_seq(head - 2).unwrap();
    drop(truth);
    let (committed, genuine) = tamper(&dir, |tree| {
        let committed = assert_snapshot_layout(tree, 10, head);
        let stored = stored_snapshots(tree);
        assert_eq!(stored.last(), Some(&Stored { seq: 50, by: None }));
        (committed, tree.get(snapshot_key(50)).unwrap().unwrap())
    });
    assert_eq!(committed.last(), Some(&Committed { seq: 40, by: 41 }));
    let assert_truth = |what: &str| {
        let ledger = open_ledger(&dir, STRICT).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(ledger.corruption().is_none(), "{what}");
        assert_eq!(ledger.head().seq, head, "{what}");
        assert_eq!(ledger.projection(), &expected, "{what}");
        assert_eq!(ledger.state_at_seq(head - 2).unwrap(), earlier, "{what}");
        let report = ledger.verify().unwrap();
        assert!(report.ok(), "{what}: {:?}", report.failure);
        assert_eq!(report.verified_seq, head, "{what}");
    };
    assert_truth("the snapshot a crash left uncommitted");

    // Its bytes forged: were it used, the projection after open would be the forged one.
    tamper(&dir, |tree| {
        let forged = forge_snapshot(tree, 50);
        assert_ne!(forged, genuine);
        tree.insert(snapshot_key(50), forged).unwrap();
    });
    assert_truth("a forged uncommitted snapshot");

    // The newest committed snapshot gone as well: the forged one is the newest stored.
    let at_40 = tamper(&dir, |tree| tree.remove(snapshot_key(40)).unwrap().unwrap());
    let ledger = open_ledger(&dir, STRICT).expect("an uncommitted snapshot is never used");
    assert_eq!(ledger.projection(), &expected);
    assert_eq!(ledger.state_at_seq(head - 2).unwrap(), earlier);
    let failure = ledger.verify().unwrap().failure.unwrap();
    assert_eq!(
        (failure.seq, failure.kind),
        (41, FailureKind::SnapshotMismatch)
    );
    drop(ledger);

    // A writer reopening the ledger never reads a snapshot left uncommitted, forged or not:
    // it writes the state it derived at its head as the snapshot there, over the bytes
    // left when they are at the head, and commits to that.
    tamper(&dir, |tree| tree.insert(snapshot_key(40), at_40).unwrap());
    let config = LedgerConfig {
        snapshot_every: 10,
        ..STRICT
    };
    let mut generator = WatchEventGenerator::new("late", 3);
    let mut clock = ticking_clock(1_800_000_000);
    // Appends one event at a time, a flush each, until the head reaches `until`.
    let mut append_until = |ledger: &mut Ledger, until: u64| {
        while ledger.head().seq < until {
            let changes: Vec<_> = generator
                .events(1)
                .iter()
                .filter_map(normalize_event)
                .collect();
            ledger.append(changes, clock()).unwrap();
            ledger.flush().unwrap();
        }
    };
    let forged_at_50 = tamper(&dir, |tree| {
        tree.get(snapshot_key(50)).unwrap().unwrap().to_vec()
    });

    // Below the head: a writer that writes no snapshots appended past the forged one.
    let mut ledger = open_ledger(
        &dir,
        LedgerConfig {
            snapshot_every: 0,
            ..STRICT
        },
    )
    .unwrap();
    append_until(&mut ledger, head + 1);
    drop(ledger);
    tamper(&dir, |tree| assert_eq!(commitment(tree, head + 1), None));
    // The next writer writes the state at the head it opened at (51) as the snapshot
    // there; the first append after it (52) commits to it, the forged bytes at 50 are
    // removed unread, and the next due one follows.
    let mut ledger = open_ledger(&dir, config.clone()).unwrap();
    append_until(&mut ledger, 45 + 20);
    drop(ledger);
    let committed = tamper(&dir, |tree| {
        assert_eq!(commitment(tree, 51), None);
        assert_eq!(
            tree.get(snapshot_key(50)).unwrap(),
            None,
            "{forged_at_50:?}"
        );
        let at_51 = tree.get(snapshot_key(51)).unwrap().unwrap();
        assert_eq!(commitment(tree, 52), Some(snapshot_digest(&at_51)));
        committed_snapshots(tree)
    });
    let before = [10, 20, 30, 40].map(|seq| Committed { seq, by: seq + 1 });
    assert_eq!(committed[..4], before, "{committed:?}");
    assert_eq!(committed[4], Committed { seq: 51, by: 52 }, "{committed:?}");
    assert!(committed.last().unwrap().seq > 51, "{committed:?}");

    // At the head: the snapshot written at the flush that reached 71 (10 after 61), left
    // uncommitted by a writer that stopped there, then forged.
    let mut ledger = open_ledger(&dir, config.clone()).unwrap();
    append_until(&mut ledger, 71);
    drop(ledger);
    let forged_at_71 = tamper(&dir, |tree| {
        assert_eq!(
            stored_snapshots(tree).last(),
            Some(&Stored { seq: 71, by: None })
        );
        let forged = forge_snapshot(tree, 71);
        tree.insert(snapshot_key(71), forged.clone()).unwrap();
        forged
    });
    let mut ledger = open_ledger(&dir, config.clone()).unwrap();
    append_until(&mut ledger, 72);
    let (head, projection) = (ledger.head().seq, ledger.projection().clone());
    drop(ledger);
    tamper(&dir, |tree| {
        assert_rewritten_and_committed(tree, 71, 72, &forged_at_71)
    });
    let ledger = open_ledger(&dir, config).unwrap();
    assert_eq!(ledger.head().seq, head);
    assert_eq!(ledger.projection(), &projection);
    let report = ledger.verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

#[test]
fn a_snapshot_written_at_a_committing_entry_and_left_uncommitted_is_not_tampering() {
    let root = tempfile::tempdir().unwrap();
    // With snapshot_every: 1 every flush writes a snapshot and every append commits to the
    // one before: the last entry commits to the snapshot before it, and the snapshot at its
    // own seq (written at its flush) is left uncommitted, as a crash would leave it.
    let dir = root.path().join("crashed");
    let head = build_until(&dir, 1, 1, |ledger| ledger.head().seq >= 12);
    let truth_dir = root.path().join("truth");
    assert_eq!(build_until(&truth_dir, 0, 1, |l| l.head().seq >= 12), head);
    let expected = open_ledger(&truth_dir, STRICT)
        .unwrap()
        .projection()
        .clone();
    let genuine = tamper(&dir, |tree| {
        let committed = assert_snapshot_layout(tree, 1, head);
        assert_eq!(committed.last().map(|c| c.by), Some(head));
        assert_eq!(
            stored_snapshots(tree).last(),
            Some(&Stored {
                seq: head,
                by: None
            })
        );
        assert!(commitment(tree, head).is_some());
        tree.get(snapshot_key(head)).unwrap().unwrap()
    });
    let assert_truth = |what: &str| {
        let ledger = open_ledger(&dir, STRICT).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ledger.projection(), &expected, "{what}");
        let report = ledger.verify().unwrap();
        assert!(report.ok(), "{what}: {:?}", report.failure);
    };
    assert_truth("the snapshot a crash left uncommitted");
    tamper(&dir, |tree| {
        let forged = forge_snapshot(tree, head);
        assert_ne!(forged, genuine);
        tree.insert(snapshot_key(head), forged).unwrap();
    });
    assert_truth("a forged uncommitted snapshot");
}

#[test]
fn a_snapshot_digest_edited_without_rechaining_breaks_the_chain() {
    // Only the committing entry's digest edited: the chain breaks there.
    let root = tempfile::tempdir().unwrap();
    let (dir, _, _, committed) = snapshotted(root.path());
    let latest = *committed.last().unwrap();
    tamper(&dir, |tree| {
        let forged = forge_snapshot(tree, latest.seq);
        recommit(tree, latest.by, snapshot_digest(&forged));
    });
    assert_tampered(&dir, latest.by, &[FailureKind::HashMismatch], latest.by - 1);

    // A forged snapshot, and its committing entry made to commit to it, keeping the stored
    // hash: the broken chain leaves the snapshot untrusted, the walk from an older one
    // finds it is not the replayed state, and the chain alone names the edited entry.
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, _, committed) = snapshotted(root.path());
    let latest = *committed.last().unwrap();
    tamper(&dir, |tree| {
        let forged = forge_snapshot(tree, latest.seq);
        recommit(tree, latest.by, snapshot_digest(&forged));
        tree.insert(snapshot_key(latest.seq), forged).unwrap();
    });
    let failure = assert_tampered(
        &dir,
        latest.seq,
        &[FailureKind::SnapshotMismatch],
        latest.seq - 1,
    );
    // Compared with the replay as it decodes: the difference is named (the record that
    // holds the edited uid).
    assert!(
        failure.detail.contains("is not the state replay derives: ")
            && failure.detail.contains("uid 5a4db0x0-tamper-"),
        "{failure}"
    );
    let expected = open_ledger(&truth_dir, STRICT)
        .unwrap()
        .state_at_seq(latest.seq - 1)
        .unwrap();
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    assert_eq!(ledger.projection(), &expected);
    let chain = ledger.verify_chain().unwrap().failure.unwrap();
    assert_eq!(
        (chain.seq, chain.kind),
        (latest.by, FailureKind::HashMismatch)
    );
}

/// Forges the snapshot `c`, makes its committing entry commit to the forged bytes and
/// rechains from there to `head`, as a forger who can write the store would.
fn forge_and_rechain(tree: &RawStore, c: Committed, head: u64) {
    let forged = forge_snapshot(tree, c.seq);
    recommit(tree, c.by, snapshot_digest(&forged));
    tree.insert(snapshot_key(c.seq), forged).unwrap();
    rechain(tree, c.by, head);
}

#[test]
fn a_snapshot_digest_edited_and_rechained_is_caught_by_the_tree() {
    // A forger who also rewrites the chain from the committing entry and the head record:
    // the chain verifies, but the Merkle node stored over the committing entry's group of
    // leaves is not the one its new bytes hash to, so open does not trust the forged
    // snapshot; the walk from an older one finds it is not the replayed state.
    let assert_caught = |dir: &Path, truth_dir: &Path, c: Committed, head: u64| {
        // Every entry chains; only the high-water mark knows the head's hash changed.
        let ledger = open_ledger(dir, FORENSIC).unwrap();
        let chain = ledger.verify_chain().unwrap();
        assert_eq!(
            chain.verified_seq, head,
            "the chain was rewritten: {chain:?}"
        );
        let failure = chain.failure.unwrap();
        assert_eq!((failure.seq, failure.kind), (head, FailureKind::RolledBack));
        drop(ledger);
        assert_tampered(dir, c.seq, &[FailureKind::SnapshotMismatch], c.seq - 1);
        let expected = open_ledger(truth_dir, STRICT)
            .unwrap()
            .state_at_seq(c.seq - 1)
            .unwrap();
        assert_eq!(
            open_ledger(dir, FORENSIC).unwrap().projection(),
            &expected,
            "the forensic state is the replayed one, not the forged snapshot's"
        );
    };
    let root = tempfile::tempdir().unwrap();
    let (dir, truth_dir, head, committed) = snapshotted(root.path());
    let latest = *committed.last().unwrap();
    tamper(&dir, |tree| forge_and_rechain(tree, latest, head));
    assert_caught(&dir, &truth_dir, latest, head);

    // The snapshot's seq ends a group of eight leaves, so the committing entry's group is
    // another one (complete here): that is the one the rechained bytes change.
    let dir = root.path().join("grouped");
    let truth_dir = root.path().join("grouped-truth");
    let head = build_until(&dir, 8, 1, |ledger| ledger.head().seq >= 40);
    assert_eq!(head, 40);
    assert_eq!(build_until(&truth_dir, 0, 1, |l| l.head().seq >= 40), head);
    let target = tamper(&dir, |tree| {
        let committed = assert_snapshot_layout(tree, 8, head);
        let target = *committed.last().unwrap();
        assert_eq!(target, Committed { seq: 32, by: 33 });
        forge_and_rechain(tree, target, head);
        target
    });
    assert_caught(&dir, &truth_dir, target, head);
}

fn rebuild_tree(tree: &RawStore, head: u64) {
    let mut range = schemas::merkle::CompactRange::new();
    for seq in 1..=head {
        let value = raw_entry(tree, seq);
        let nodes = range.append(schemas::merkle::leaf_hash(&value[32..]));
        let mut key = vec![b'T'];
        key.extend_from_slice(&(seq - 1).to_be_bytes());
        // Only nodes of level 3 and above are stored (docs/FORMAT.md, section 8.2).
        let nodes: Vec<u8> = nodes
            .iter()
            .filter(|(level, _, _)| *level >= 3)
            .flat_map(|(_, _, hash)| *hash)
            .collect();
        if nodes.is_empty() {
            tree.remove(key).unwrap();
        } else {
            tree.insert(key, nodes).unwrap();
        }
    }
    tree.insert(b"R", range.hashes().concat()).unwrap();
}

#[test]
fn a_snapshot_forged_with_chain_and_tree_is_caught_by_a_signed_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("signed");
    // One event per append, so the flush at 40 writes a snapshot and the log ends exactly
    // at the entry committing to it: no entry after the forged snapshot replays
    // differently from it before the checkpoint check.
    let head = build_until(&dir, 10, 1, |ledger| ledger.head().seq >= 41);
    assert_eq!(head, 41);
    let latest = tamper(&dir, |tree| {
        *assert_snapshot_layout(tree, 10, head).last().unwrap()
    });
    assert_eq!(latest, Committed { seq: 40, by: 41 });
    let key = schemas::checkpoint::SignerKey::from_seed("tamper.example", [7; 32]).unwrap();
    let mut ledger = open_ledger(&dir, STRICT).unwrap();
    let signed = ledger.sign_checkpoint(&key, "tamper.example").unwrap();
    assert_eq!(signed.checkpoint.size, head);
    drop(ledger);
    tamper(&dir, |tree| {
        forge_and_rechain(tree, latest, head);
        rebuild_tree(tree, head);
    });
    // The high-water mark alone catches the rewrite (another entry at the acknowledged
    // seq); a forger who can write the whole directory rewrites it too, and then only the
    // signed checkpoint is left to catch it.
    match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => assert_eq!(
            (failure.seq, failure.kind),
            (head, FailureKind::RolledBack),
            "{failure}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    rewind_high_water(&dir, head);
    match open_ledger(&dir, STRICT) {
        Err(LedgerError::Corrupt(failure)) => assert_eq!(
            (failure.seq, failure.kind),
            (head, FailureKind::CheckpointMismatch),
            "{failure}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The full walk replays past the forged snapshot before it gets to the checkpoint.
    let ledger = open_ledger(&dir, FORENSIC).unwrap();
    let failure = ledger.verify().unwrap().failure.unwrap();
    assert_eq!(
        (failure.seq, failure.kind),
        (latest.seq, FailureKind::SnapshotMismatch),
        "{failure}"
    );
}
