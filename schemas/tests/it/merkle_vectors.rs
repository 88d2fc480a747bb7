//! Conformance of `schemas::merkle` with RFC 6962 / RFC 9162.
//!
//! * Every one of the 196 transparency-dev/merkle proof vectors in
//!   `tests/data/vectors/transparency-dev-merkle/testdata/` gives its expected result (with the
//!   two extra rejection rules `tests/data/vectors/SOURCE.md` names).
//! * The leaf hashes and roots of `tests/data/vectors/rfc6962/reference-tree.json` match, and
//!   the happy-path vectors' proofs over that tree are exactly the proofs we generate.
//! * A property test compares `CompactRange` roots and the proofs generated through an
//!   in-memory `NodeReader` (fed only from `append`'s perfect nodes) with a naive recursive
//!   transcription of the RFC, checks that every proof verifies, and that it stops verifying
//!   when any byte, the index or a size is altered (unless the altered claim is, for the
//!   verifier, the very same computation: see `inclusion_trace`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use schemas::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, root_at, root_from_leaf_hashes,
    verify_consistency, verify_inclusion, CompactRange, Hash32, MissingNode, NodeReader,
    ProofError, VerifyError, EMPTY_ROOT,
};
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vectors");

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the vectors live in the repository, under tests/data/vectors/): {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the vectors live in the repository, under tests/data/vectors/): {e}",
            dir.display()
        )
    });
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn b64_list(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(b64).collect(),
        other => panic!("proof is neither null nor a list: {other}"),
    }
}

fn hex32(s: &str) -> Hash32 {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The outcome of one transparency-dev vector with our verifier.
fn run_vector(kind: &str, v: &Value) -> Result<(), VerifyError> {
    let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} is not a u64"));
    match kind {
        "inclusion" => verify_inclusion(
            &b64(&v["leafHash"]),
            u("leafIdx"),
            u("treeSize"),
            &b64_list(&v["proof"]),
            &b64(&v["root"]),
        ),
        "consistency" => verify_consistency(
            u("size1"),
            u("size2"),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
            &b64_list(&v["proof"]),
        ),
        other => panic!("unknown vector kind {other}"),
    }
}

#[test]
fn transparency_dev_vectors_all_give_the_expected_result() {
    let base = Path::new(VECTORS).join("transparency-dev-merkle/testdata");
    let mut counts: HashMap<(&str, bool), usize> = HashMap::new();
    let mut failures = Vec::new();
    for kind in ["inclusion", "consistency"] {
        let mut files = Vec::new();
        json_files(&base.join(kind), &mut files);
        files.sort();
        for file in files {
            let v = read_json(&file);
            let want_err = v["wantErr"].as_bool().expect("wantErr");
            let got = run_vector(kind, &v);
            if got.is_err() != want_err {
                failures.push(format!(
                    "{}: want error {want_err}, got {got:?}",
                    file.strip_prefix(&base).unwrap().display()
                ));
            }
            *counts.entry((kind, want_err)).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let total: usize = counts.values().sum();
    let valid = counts.get(&("inclusion", false)).copied().unwrap_or(0)
        + counts.get(&("consistency", false)).copied().unwrap_or(0);
    assert_eq!(total, 196, "SOURCE.md lists 196 vectors: {counts:?}");
    assert_eq!(valid, 12, "SOURCE.md lists 12 valid proofs: {counts:?}");
}

#[test]
fn the_two_extra_rules_of_source_md() {
    // Rule 1: a leaf hash of the wrong length is rejected even when it "matches" the root.
    assert_eq!(
        verify_inclusion(b"", 0, 1, &[] as &[Hash32], b""),
        Err(VerifyError::LeafHashLength(0))
    );
    // Rule 2: a consistency proof from size 0 is rejected, even 0 -> 0 with equal roots.
    assert_eq!(
        verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[] as &[Hash32]),
        Err(VerifyError::OldSizeZero)
    );
}

#[test]
fn roots_of_the_wrong_length_are_refused_between_different_sizes() {
    // Old size 1 is a power of two: its root seeds the path. A 12-byte "root" must not be
    // provable consistent with H(0x01 || it || sibling).
    let fake_old = b"don't care 1".to_vec();
    let sibling = leaf_hash(b"x");
    let mut pre = vec![0x01];
    pre.extend_from_slice(&fake_old);
    pre.extend_from_slice(&sibling);
    let fake_new = sha256(&pre);
    assert_eq!(
        verify_consistency(1, 2, &fake_old, &fake_new, &[sibling]),
        Err(VerifyError::RootLength(12))
    );
    // With a real 32-byte root the same computation verifies.
    let old = leaf_hash(b"o");
    assert_eq!(
        verify_consistency(1, 2, &old, &node_hash(&old, &sibling), &[sibling]),
        Ok(())
    );
    // Equal sizes only compare (the transparency-dev vector with 12-byte roots passes).
    assert_eq!(
        verify_consistency(1, 1, b"don't care 2", b"don't care 2", &[] as &[Hash32]),
        Ok(())
    );
}

struct Reference {
    leaves: Vec<Vec<u8>>,
    leaf_hashes: Vec<Hash32>,
    roots: Vec<Hash32>,
}

fn reference_tree() -> (Reference, Value) {
    let v = read_json(&Path::new(VECTORS).join("rfc6962/reference-tree.json"));
    let leaves: Vec<Vec<u8>> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex_bytes(s.as_str().unwrap()))
        .collect();
    let leaf_hashes = v["leaf_hashes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex32(s.as_str().unwrap()))
        .collect();
    let roots = (0..=leaves.len())
        .map(|n| hex32(v["roots_by_tree_size_hex"][n.to_string()].as_str().unwrap()))
        .collect();
    (
        Reference {
            leaves,
            leaf_hashes,
            roots,
        },
        v,
    )
}

#[test]
fn rfc6962_reference_tree_matches() {
    let (r, v) = reference_tree();
    assert_eq!(r.leaves.len(), 8);
    assert_eq!(r.roots.len(), 9);
    for (leaf, want) in r.leaves.iter().zip(&r.leaf_hashes) {
        assert_eq!(&leaf_hash(leaf), want);
    }
    let mut cr = CompactRange::new();
    let mut store = HashMap::new();
    assert_eq!(cr.root(), r.roots[0]);
    assert_eq!(root::<Vec<u8>>(&[]), r.roots[0]);
    for n in 1..=8 {
        store.extend(
            cr.append(leaf_hash(&r.leaves[n - 1]))
                .into_iter()
                .map(|(l, i, h)| ((l, i), h)),
        );
        assert_eq!(root(&r.leaves[..n]), r.roots[n], "root({n})");
        assert_eq!(root_from_leaf_hashes(&r.leaf_hashes[..n]), r.roots[n]);
        assert_eq!(cr.root(), r.roots[n], "compact range root at {n}");
    }
    for n in 0..=8u64 {
        assert_eq!(
            root_at(&store, n).unwrap(),
            r.roots[n as usize],
            "root_at {n}"
        );
        assert_eq!(
            CompactRange::from_reader(&store, n).unwrap().root(),
            r.roots[n as usize]
        );
    }
    let extra = &v["extra"];
    let l = &extra["leaf_hash_of_L123456"];
    assert_eq!(
        leaf_hash(l["input_ascii"].as_str().unwrap().as_bytes()),
        hex32(l["want_hex"].as_str().unwrap())
    );
    let n = &extra["hash_children_N123_N456"];
    // HashChildren over arbitrary-length children: the same prefix rule over raw bytes.
    let (left, right) = (
        n["left_ascii"].as_str().unwrap().as_bytes(),
        n["right_ascii"].as_str().unwrap().as_bytes(),
    );
    let mut pre = vec![0x01];
    pre.extend_from_slice(left);
    pre.extend_from_slice(right);
    let want = hex32(n["want_hex"].as_str().unwrap());
    assert_eq!(<Hash32>::from(sha256(&pre)), want);
    // And node_hash is that rule over 32-byte children.
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let mut pre = vec![0x01];
    pre.extend_from_slice(&a);
    pre.extend_from_slice(&b);
    assert_eq!(node_hash(&a, &b), sha256(&pre));
}

/// SHA-256 from the independent implementation below.
fn sha256(data: &[u8]) -> Hash32 {
    sha2_for_tests::digest(data)
}

/// A tiny FIPS 180-4 SHA-256, so the test checks the library against an independent
/// implementation rather than against the crate it uses.
mod sha2_for_tests {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut h: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let mut msg = data.to_vec();
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
        for block in msg.chunks_exact(64) {
            let mut w = [0u32; 64];
            for (i, word) in block.chunks_exact(4).enumerate() {
                w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let mut v = h;
            for i in 0..64 {
                let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
                let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
                let t1 = v[7]
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(K[i])
                    .wrapping_add(w[i]);
                let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
                let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
                let t2 = s0.wrapping_add(maj);
                v = [
                    t1.wrapping_add(t2),
                    v[0],
                    v[1],
                    v[2],
                    v[3].wrapping_add(t1),
                    v[4],
                    v[5],
                    v[6],
                ];
            }
            for (hi, vi) in h.iter_mut().zip(v) {
                *hi = hi.wrapping_add(vi);
            }
        }
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[test]
fn independent_sha256_agrees_with_the_library() {
    assert_eq!(sha256(b""), EMPTY_ROOT);
    for data in [&b""[..], b"abc", &[0u8; 200][..]] {
        let mut pre = vec![0x00];
        pre.extend_from_slice(data);
        assert_eq!(leaf_hash(data), sha256(&pre));
    }
}

#[test]
fn happy_path_proofs_over_the_reference_tree_are_ours() {
    let (r, _) = reference_tree();
    let mut cr = CompactRange::new();
    let mut store = HashMap::new();
    for l in &r.leaf_hashes {
        store.extend(cr.append(*l).into_iter().map(|(l, i, h)| ((l, i), h)));
    }
    let base = Path::new(VECTORS).join("transparency-dev-merkle/testdata");
    let mut checked = 0;
    for kind in ["inclusion", "consistency"] {
        let mut files = Vec::new();
        json_files(&base.join(kind), &mut files);
        for file in files {
            let v = read_json(&file);
            if v["wantErr"].as_bool() != Some(false) {
                continue;
            }
            let proof: Vec<Vec<u8>> = b64_list(&v["proof"]);
            let ours: Vec<Vec<u8>> = match kind {
                "inclusion" => {
                    let (idx, size) = (
                        v["leafIdx"].as_u64().unwrap(),
                        v["treeSize"].as_u64().unwrap(),
                    );
                    if size == 0 || size > 8 || b64(&v["root"]) != r.roots[size as usize] {
                        continue;
                    }
                    inclusion_proof(&store, idx, size).unwrap()
                }
                _ => {
                    let (s1, s2) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
                    if s2 > 8 || b64(&v["root2"]) != r.roots[s2 as usize] {
                        continue;
                    }
                    consistency_proof(&store, s1, s2).unwrap()
                }
            }
            .into_iter()
            .map(|h| h.to_vec())
            .collect();
            assert_eq!(ours, proof, "{}", file.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} happy paths were over the reference tree"
    );
}

#[test]
fn generation_errors() {
    let mut cr = CompactRange::new();
    let mut store = HashMap::new();
    for i in 0..5u8 {
        store.extend(
            cr.append(leaf_hash(&[i]))
                .into_iter()
                .map(|(l, i, h)| ((l, i), h)),
        );
    }
    assert!(matches!(
        inclusion_proof(&store, 5, 5),
        Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
    ));
    assert!(matches!(
        inclusion_proof(&store, 0, 0),
        Err(ProofError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        consistency_proof(&store, 4, 3),
        Err(ProofError::SizeOrder { old: 4, new: 3 })
    ));
    assert!(consistency_proof(&store, 0, 5).unwrap().is_empty());
    assert!(consistency_proof(&store, 5, 5).unwrap().is_empty());
    let err = inclusion_proof(&store, 0, 6).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read Merkle node (level 1, index 2): no stored Merkle node at level 1, index 2"
    );
    let _: Box<dyn std::error::Error> = Box::new(err);
    // Asking beyond what was stored names the missing node: the right sibling of leaf 0's
    // ancestor [0, 4) in a tree of 6 is the perfect node (1, 2) over leaves 4 and 5.
    match inclusion_proof(&store, 0, 6) {
        Err(ProofError::Node {
            level: 1,
            index: 2,
            error: MissingNode { level: 1, index: 2 },
        }) => {}
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Naive RFC 9162 transcription and the property test.

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn naive_path(m: usize, d: &[Hash32]) -> Vec<Hash32> {
    let n = d.len();
    if n == 1 {
        return Vec::new();
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        let mut p = naive_path(m, &d[..k]);
        p.push(root_from_leaf_hashes(&d[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &d[k..]);
        p.push(root_from_leaf_hashes(&d[..k]));
        p
    }
}

fn naive_subproof(m: usize, d: &[Hash32], b: bool) -> Vec<Hash32> {
    let n = d.len();
    if m == n {
        return if b {
            Vec::new()
        } else {
            vec![root_from_leaf_hashes(d)]
        };
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        let mut p = naive_subproof(m, &d[..k], b);
        p.push(root_from_leaf_hashes(&d[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &d[k..], false);
        p.push(root_from_leaf_hashes(&d[..k]));
        p
    }
}

/// The verifier's computation for an inclusion claim `(index, size)`: for each proof
/// element, whether it is hashed on the left. Two claims with the same trace accept exactly
/// the same (leaf, proof, root) triples, so altering the index or size of a valid proof may
/// only keep it valid when the trace is unchanged (e.g. index 0 of size 3 and of size 4).
fn inclusion_trace(index: u64, size: u64) -> Option<Vec<bool>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut t = Vec::new();
    while s != 0 {
        if f & 1 == 1 || f == s {
            t.push(true);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            t.push(false);
        }
        f >>= 1;
        s >>= 1;
    }
    Some(t)
}

/// The same idea for consistency claims: whether the old root seeds the path, and for each
/// further element whether it updates both roots (on the left) or only the new one (on
/// the right).
fn consistency_trace(old: u64, new: u64) -> Option<(bool, Vec<bool>)> {
    if old == 0 || old >= new {
        return None;
    }
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut t = Vec::new();
    while s != 0 {
        if f & 1 == 1 || f == s {
            t.push(true);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            t.push(false);
        }
        f >>= 1;
        s >>= 1;
    }
    Some((old.is_power_of_two(), t))
}

/// An in-memory node store, fed only from `CompactRange::append`.
type Store = HashMap<(u32, u64), Hash32>;

/// `n` distinct leaf hashes, the store of every node their appends reported, and the root
/// after each append (index = size).
fn build(n: usize) -> (Vec<Hash32>, Store, Vec<Hash32>) {
    let leaves: Vec<Hash32> = (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let mut cr = CompactRange::new();
    let mut store = HashMap::new();
    let mut roots = vec![cr.root()];
    for l in &leaves {
        for (level, index, hash) in cr.append(*l) {
            assert!(
                store.insert((level, index), hash).is_none(),
                "node reported twice"
            );
        }
        roots.push(cr.root());
    }
    (leaves, store, roots)
}

fn flip(h: &Hash32, byte: usize, bit: u8) -> Hash32 {
    let mut h = *h;
    h[byte % 32] ^= 1 << (bit % 8);
    h
}

/// Counts the reads a proof makes, to check the `O(log n)` claim.
struct Counting<'a>(&'a HashMap<(u32, u64), Hash32>, std::cell::Cell<usize>);

impl NodeReader for Counting<'_> {
    type Error = MissingNode;
    fn node(&self, level: u32, index: u64) -> Result<Hash32, MissingNode> {
        self.1.set(self.1.get() + 1);
        self.0.node(level, index)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn compact_range_and_proofs_match_the_naive_rfc(
        n in 1usize..300,
        a in any::<u64>(),
        b in any::<u64>(),
        olds in proptest::collection::vec(any::<u64>(), 6),
        byte in 0usize..32,
        bit in 0u8..8,
    ) {
        let (leaves, store, roots) = build(n);
        // Every prefix root of the frontier is the one recomputed from the store, and the
        // naive MTH's at the sizes this case looks at.
        for (size, r) in roots.iter().enumerate() {
            prop_assert_eq!(root_at(&store, size as u64).unwrap(), *r);
        }
        let size = (a % n as u64) + 1;
        let mut olds: Vec<u64> = olds.iter().map(|o| o % size + 1).collect();
        olds.extend([1, size]);
        for s in olds.iter().copied().chain([n as u64, 0]) {
            prop_assert_eq!(roots[s as usize], root_from_leaf_hashes(&leaves[..s as usize]));
        }
        let root_n = roots[size as usize];
        let prefix = &leaves[..size as usize];
        let mut appended = CompactRange::new();
        prefix.iter().for_each(|l| { appended.append(*l); });
        prop_assert_eq!(CompactRange::from_reader(&store, size).unwrap(), appended);

        // Inclusion.
        let index = b % size;
        let counting = Counting(&store, std::cell::Cell::new(0));
        let proof = inclusion_proof(&counting, index, size).unwrap();
        let bound = 2 * (64 - size.leading_zeros()) as usize;
        prop_assert!(counting.1.get() <= bound, "{} reads for size {}", counting.1.get(), size);
        prop_assert_eq!(&proof, &naive_path(index as usize, prefix));
        let leaf = leaves[index as usize];
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root_n), Ok(()));
        prop_assert!(verify_inclusion(&flip(&leaf, byte, bit), index, size, &proof, &root_n).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root_n, byte, bit)).is_err());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], byte, bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root_n).is_err());
            let mut short = proof.clone();
            short.remove(i);
            prop_assert!(verify_inclusion(&leaf, index, size, &short, &root_n).is_err());
        }
        let mut long = proof.clone();
        long.push(leaf);
        prop_assert!(verify_inclusion(&leaf, index, size, &long, &root_n).is_err());
        let mut altered = vec![
            (index.wrapping_sub(1), size), (index + 1, size), (index ^ 2, size),
            (index, size + 1), (index, size - 1), (index, size * 2), (index, size / 2),
        ];
        altered.retain(|&c| c != (index, size));
        for (i2, s2) in altered {
            let ok = verify_inclusion(&leaf, i2, s2, &proof, &root_n).is_ok();
            let same = inclusion_trace(i2, s2) == inclusion_trace(index, size);
            prop_assert!(!ok || same, "altered claim ({}, {}) of ({}, {}) verified", i2, s2, index, size);
            prop_assert!(!same || ok);
        }

        // Consistency to `size` from 1, from `size` itself and from six random old sizes.
        for old in olds {
            let counting = Counting(&store, std::cell::Cell::new(0));
            let proof = consistency_proof(&counting, old, size).unwrap();
            prop_assert!(counting.1.get() <= bound, "{} reads", counting.1.get());
            let naive = if old == size { Vec::new() } else { naive_subproof(old as usize, prefix, true) };
            prop_assert_eq!(&proof, &naive);
            let root_m = roots[old as usize];
            prop_assert_eq!(verify_consistency(old, size, &root_m, &root_n, &proof), Ok(()));
            prop_assert!(verify_consistency(old, size, &flip(&root_m, byte, bit), &root_n, &proof).is_err());
            prop_assert!(verify_consistency(old, size, &root_m, &flip(&root_n, byte, bit), &proof).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i], byte, bit);
                prop_assert!(verify_consistency(old, size, &root_m, &root_n, &bad).is_err());
                let mut short = proof.clone();
                short.remove(i);
                prop_assert!(verify_consistency(old, size, &root_m, &root_n, &short).is_err());
            }
            let mut long = proof.clone();
            long.push(root_m);
            prop_assert!(verify_consistency(old, size, &root_m, &root_n, &long).is_err());
            let mut altered = vec![(old - 1, size), (old + 1, size), (old, size + 1), (old, size - 1), (old, size * 2)];
            altered.retain(|&c| c != (old, size));
            for (o2, s2) in altered {
                let ok = verify_consistency(o2, s2, &root_m, &root_n, &proof).is_ok();
                let same = consistency_trace(o2, s2) == consistency_trace(old, size);
                prop_assert!(!ok || same, "altered claim ({}, {}) of ({}, {}) verified", o2, s2, old, size);
            }
        }
    }
}
