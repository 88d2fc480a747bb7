//! RFC 6962 / RFC 9162 Merkle tree math over SHA-256: hashes, compact ranges, proof
//! generation from stored node hashes, and proof verification. Pure functions, no IO.
//!
//! # Hashes
//!
//! * leaf hash: `SHA-256(0x00 || leaf bytes)` ([`leaf_hash`]);
//! * interior node: `SHA-256(0x01 || left || right)` ([`node_hash`]);
//! * the root of the empty tree: `SHA-256("")` ([`EMPTY_ROOT`]);
//! * the root of `n > 1` leaves: split at `k`, the largest power of two below `n`, and hash
//!   the roots of the first `k` and of the remaining `n - k` leaves ([`root`], RFC 9162
//!   §2.1.1 "MTH").
//!
//! # Node addresses
//!
//! A node is addressed by `(level, index)`: level 0 holds the leaf hashes (index = leaf
//! index), and node `(level, index)` is the root of the **perfect** subtree over the
//! `2^level` leaves `[index * 2^level, (index + 1) * 2^level)`. Only perfect subtrees have
//! an address: the nodes on the ragged right edge of a tree whose size is not a power of two
//! are not stored anywhere; they are recomputed from perfect nodes when needed.
//!
//! # What a store must keep
//!
//! [`CompactRange::append`] returns, for each appended leaf, every perfect node that the
//! append completes: always the leaf itself `(0, i)`, then `(1, i / 2)` when `i` is odd,
//! `(2, i / 4)` when `i % 4 == 3`, and so on. A store that keeps **every** node that
//! `append` ever returned (about `2n` nodes for `n` leaves) holds every `(level, index)`
//! that [`inclusion_proof`], [`consistency_proof`], [`root_at`] and
//! [`CompactRange::from_reader`] ask their [`NodeReader`] for, for every tree size up to
//! `n`: these only ever read perfect nodes lying entirely inside the requested tree size.
//! Each proof reads fewer than `2 * b` nodes, `b` being the bit length of the tree size
//! (one node per proof element, except the single ragged right-edge element a proof can
//! have, which is folded from at most `b` nodes); the property test checks this bound.
//!
//! # Verification
//!
//! [`verify_inclusion`] and [`verify_consistency`] are the RFC 9162 §2.1.3.2 and §2.1.4.2
//! algorithms, with the extra rules of the transparency-dev/merkle Go verifier: a leaf hash
//! must be 32 bytes, a consistency proof from size 0 is always rejected (even `0 → 0`), and
//! equal sizes need an empty proof and equal roots. They take byte slices, not
//! [`Hash32`]s, so that malformed input (wrong lengths) is a typed error and not a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash32 = [u8; 32];

/// The size of a [`Hash32`] in bytes.
pub const HASH_SIZE: usize = 32;

/// The root of the empty tree: SHA-256 of the empty string
/// (`e3b0c442…b855`).
pub const EMPTY_ROOT: Hash32 = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The domain-separation prefix of a leaf hash.
pub const LEAF_PREFIX: u8 = 0x00;
/// The domain-separation prefix of an interior node hash.
pub const NODE_PREFIX: u8 = 0x01;

/// `SHA-256(0x00 || data)`: the hash of one leaf (one stored ledger entry's bytes).
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    hash_children(left, right)
}

/// [`node_hash`] over slices of any length (the verifiers hash what they are given).
fn hash_children(left: &[u8], right: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The RFC 6962 Merkle Tree Hash (MTH) of a list of leaves given as their raw bytes.
///
/// Recursive and O(n) memory-light; meant for small trees, tests and offline checks. An
/// empty list gives [`EMPTY_ROOT`].
pub fn root<L: AsRef<[u8]>>(leaves: &[L]) -> Hash32 {
    let hashes: Vec<Hash32> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    root_from_leaf_hashes(&hashes)
}

/// The Merkle Tree Hash of a list of leaf hashes (each already `SHA-256(0x00 || data)`).
/// An empty list gives [`EMPTY_ROOT`].
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash32]) -> Hash32 {
    match leaf_hashes.len() {
        0 => EMPTY_ROOT,
        1 => leaf_hashes[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_from_leaf_hashes(&leaf_hashes[..k]),
                &root_from_leaf_hashes(&leaf_hashes[k..]),
            )
        }
    }
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

// ---------------------------------------------------------------------------------------
// Compact range.

/// The right-edge frontier of a Merkle tree of `size` leaves: the roots of the perfect
/// subtrees that tile `[0, size)`, one per set bit of `size`, from the largest (leftmost)
/// to the smallest. Enough to append further leaves and to compute the current root, in
/// `O(log n)` space (the compact range `[0, size)` of transparency-dev / Trillian).
///
/// Serialized (serde) as `{size, hashes}` where `hashes` is the concatenation of the
/// frontier hashes as one byte string (32 bytes each); deserialization checks that there
/// is exactly one hash per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash32>,
}

/// One perfect node completed by an append: `(level, index, hash)`, addressed as described
/// in the [module documentation](self).
pub type PerfectNode = (u32, u64, Hash32);

impl CompactRange {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from its parts, checked: `hashes` must hold one hash per set bit of
    /// `size`, largest subtree first.
    pub fn from_parts(size: u64, hashes: Vec<Hash32>) -> Result<Self, CompactRangeError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(CompactRangeError::HashCount {
                size,
                expected: size.count_ones() as usize,
                found: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// Rebuilds the frontier of the tree of `size` leaves from stored perfect nodes
    /// (`popcount(size)` reads).
    pub fn from_reader<R: NodeReader + ?Sized>(
        reader: &R,
        size: u64,
    ) -> Result<Self, ProofError<R::Error>> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut pos = 0u64;
        for level in (0..64u32).rev() {
            if (size >> level) & 1 == 1 {
                hashes.push(read(reader, level, pos >> level)?);
                pos += 1 << level;
            }
        }
        Ok(Self { size, hashes })
    }

    /// The number of leaves appended so far (the tree size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, largest subtree first (one per set bit of [`size`](Self::size)).
    pub fn hashes(&self) -> &[Hash32] {
        &self.hashes
    }

    /// Appends one leaf hash (`SHA-256(0x00 || entry bytes)`, see [`leaf_hash`]) and returns
    /// every perfect node this append completes, bottom-up: the leaf `(0, i)` first, then
    /// each parent it closes. Amortized O(1) hashes, O(log n) worst case.
    ///
    /// # Panics
    ///
    /// When the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf_hash: Hash32) -> Vec<PerfectNode> {
        let index = self.size;
        assert!(index < u64::MAX, "Merkle tree is full");
        let mut nodes = Vec::with_capacity(1 + index.trailing_ones() as usize);
        let mut hash = leaf_hash;
        let mut level = 0u32;
        nodes.push((0, index, hash));
        while (index >> level) & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("one frontier hash per set bit of the size");
            hash = node_hash(&left, &hash);
            level += 1;
            nodes.push((level, index >> level, hash));
        }
        self.hashes.push(hash);
        self.size += 1;
        nodes
    }

    /// The root of the tree of [`size`](Self::size) leaves ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Hash32 {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// A [`CompactRange`] whose parts do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactRangeError {
    /// The number of frontier hashes is not the number of set bits of the size.
    #[error("compact range of size {size} needs {expected} hashes, found {found}")]
    HashCount {
        /// The declared tree size.
        size: u64,
        /// `popcount(size)`.
        expected: usize,
        /// The number of hashes given.
        found: usize,
    },
    /// The serialized hash bytes are not a multiple of 32 bytes long.
    #[error("compact range hashes are {0} bytes, not a multiple of 32")]
    HashBytes(usize),
}

#[derive(Serialize)]
struct CompactRangeOut<'a> {
    size: u64,
    hashes: HashBytesOut<'a>,
}

struct HashBytesOut<'a>(&'a [Hash32]);

impl Serialize for HashBytesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flatten().copied().collect();
        serializer.serialize_bytes(&bytes)
    }
}

impl Serialize for CompactRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CompactRangeOut {
            size: self.size,
            hashes: HashBytesOut(&self.hashes),
        }
        .serialize(serializer)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactRangeIn {
    size: u64,
    hashes: HashBytesIn,
}

struct HashBytesIn(Vec<u8>);

impl<'de> Deserialize<'de> for HashBytesIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = HashBytesIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string of concatenated 32-byte hashes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(HashBytesIn(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(HashBytesIn(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 32));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(HashBytesIn(out))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

impl<'de> Deserialize<'de> for CompactRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = CompactRangeIn::deserialize(deserializer)?;
        let bytes = raw.hashes.0;
        if bytes.len() % HASH_SIZE != 0 {
            return Err(de::Error::custom(CompactRangeError::HashBytes(bytes.len())));
        }
        let hashes = bytes
            .chunks_exact(HASH_SIZE)
            .map(|c| <Hash32>::try_from(c).expect("chunk of 32"))
            .collect();
        CompactRange::from_parts(raw.size, hashes).map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Reading stored nodes.

/// Read access to stored perfect-node hashes, addressed `(level, index)` as in the
/// [module documentation](self). The ledger implements it over its node store; the proof
/// generators call [`node`](NodeReader::node) `O(log n)` times per proof.
pub trait NodeReader {
    /// Why a node could not be read (missing, storage error, …).
    type Error;

    /// The hash of the perfect subtree root `(level, index)`.
    fn node(&self, level: u32, index: u64) -> Result<Hash32, Self::Error>;
}

impl<R: NodeReader + ?Sized> NodeReader for &R {
    type Error = R::Error;
    fn node(&self, level: u32, index: u64) -> Result<Hash32, Self::Error> {
        (**self).node(level, index)
    }
}

/// An in-memory node store lacks a requested node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored Merkle node at level {level}, index {index}")]
pub struct MissingNode {
    /// The level of the missing node.
    pub level: u32,
    /// The index of the missing node within its level.
    pub index: u64,
}

impl<S: std::hash::BuildHasher> NodeReader for HashMap<(u32, u64), Hash32, S> {
    type Error = MissingNode;
    fn node(&self, level: u32, index: u64) -> Result<Hash32, MissingNode> {
        self.get(&(level, index))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

impl NodeReader for BTreeMap<(u32, u64), Hash32> {
    type Error = MissingNode;
    fn node(&self, level: u32, index: u64) -> Result<Hash32, MissingNode> {
        self.get(&(level, index))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

/// Why a proof (or a past root) could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ProofError<E> {
    /// An inclusion proof was asked for a leaf at or beyond the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The requested tree size.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old tree size {old} is greater than new tree size {new}")]
    SizeOrder {
        /// The requested old (first) size.
        old: u64,
        /// The requested new (second) size.
        new: u64,
    },
    /// The [`NodeReader`] failed to produce a node.
    #[error("cannot read Merkle node (level {level}, index {index}): {error}")]
    Node {
        /// The level of the node asked for.
        level: u32,
        /// The index of the node asked for.
        index: u64,
        /// The reader's error.
        error: E,
    },
}

fn read<R: NodeReader + ?Sized>(
    reader: &R,
    level: u32,
    index: u64,
) -> Result<Hash32, ProofError<R::Error>> {
    reader.node(level, index).map_err(|error| ProofError::Node {
        level,
        index,
        error,
    })
}

/// The perfect subtree of `width` (a power of two) leaves starting at leaf `start`.
fn perfect<R: NodeReader + ?Sized>(
    reader: &R,
    start: u64,
    width: u64,
) -> Result<Hash32, ProofError<R::Error>> {
    let level = width.trailing_zeros();
    read(reader, level, start >> level)
}

/// The Merkle Tree Hash of leaves `[start, end)`, `start < end`, where `start` is a multiple
/// of the largest power of two not above `end - start` (true of every subtree the RFC's
/// recursive split produces): the fold of the perfect nodes tiling the range, one per set
/// bit of its width, largest first.
fn range_root<R: NodeReader + ?Sized>(
    reader: &R,
    start: u64,
    end: u64,
) -> Result<Hash32, ProofError<R::Error>> {
    debug_assert!(start < end);
    let width = end - start;
    let mut nodes = Vec::with_capacity(width.count_ones() as usize);
    let mut pos = start;
    for level in (0..64u32).rev() {
        if (width >> level) & 1 == 1 {
            debug_assert_eq!(pos % (1 << level), 0);
            nodes.push(read(reader, level, pos >> level)?);
            pos += 1 << level;
        }
    }
    let mut acc = nodes.pop().expect("width > 0");
    while let Some(left) = nodes.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The root of the tree of the first `size` leaves, from stored perfect nodes
/// (`popcount(size)` reads; [`EMPTY_ROOT`] for 0). Lets the ledger recompute the root of
/// any past size, e.g. to check an old checkpoint.
pub fn root_at<R: NodeReader + ?Sized>(
    reader: &R,
    size: u64,
) -> Result<Hash32, ProofError<R::Error>> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    range_root(reader, 0, size)
}

/// The RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf `index` in the tree of the
/// first `tree_size` leaves, ordered from the leaf's sibling up to the root's child.
///
/// Reads one stored node per proof element except for at most one element on the ragged
/// right edge, which is folded from `popcount` stored nodes: `O(log n)` reads in all.
pub fn inclusion_proof<R: NodeReader + ?Sized>(
    reader: &R,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash32>, ProofError<R::Error>> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let mut proof = Vec::with_capacity(64 - tree_size.leading_zeros() as usize);
    let (mut lo, mut hi) = (0u64, tree_size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            proof.push(range_root(reader, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(perfect(reader, lo, k)?);
            lo += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The RFC 9162 §2.1.4.1 consistency proof that the tree of the first `old_size` leaves is
/// a prefix of the tree of the first `new_size` leaves, ordered bottom-up as the verifier
/// consumes it.
///
/// Empty when `old_size == new_size` or `old_size == 0` (nothing to prove; note that
/// [`verify_consistency`] rejects every proof from size 0). `O(log n)` reads.
pub fn consistency_proof<R: NodeReader + ?Sized>(
    reader: &R,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash32>, ProofError<R::Error>> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    let mut proof = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    // SUBPROOF(m, D[lo..hi], b) with m = old_size - lo, iteratively.
    let (mut lo, mut hi, mut whole_old_tree) = (0u64, new_size, true);
    loop {
        if old_size == hi {
            if !whole_old_tree {
                // [lo, hi) is a left child reached on the way: a perfect subtree.
                proof.push(perfect(reader, lo, hi - lo)?);
            }
            break;
        }
        let k = split_point(hi - lo);
        if old_size - lo <= k {
            proof.push(range_root(reader, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(perfect(reader, lo, k)?);
            lo += k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

// ---------------------------------------------------------------------------------------
// Verification.

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf hash is not 32 bytes long.
    #[error("leaf hash is {0} bytes, not 32")]
    LeafHashLength(usize),
    /// A proof element is not 32 bytes long.
    #[error("proof element {position} is {len} bytes, not 32")]
    ProofHashLength {
        /// Its position in the proof (0-based).
        position: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// The leaf index is not below the tree size (this includes every index in a tree of
    /// size 0).
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// A root to be used in a consistency computation is not 32 bytes long. (Roots of equal
    /// sizes are only compared, byte for byte, as the transparency-dev vectors require.)
    #[error("root hash is {0} bytes, not 32")]
    RootLength(usize),
    /// The old size is greater than the new size.
    #[error("old tree size {old} is greater than new tree size {new}")]
    SizeOrder {
        /// The claimed old size.
        old: u64,
        /// The claimed new size.
        new: u64,
    },
    /// A consistency proof from the empty tree (size 0) proves nothing and is rejected,
    /// whatever the new size.
    #[error("consistency proof from tree size 0 is meaningless")]
    OldSizeZero,
    /// The proof has more elements than the sizes call for (for equal sizes: any element).
    #[error("proof has more elements than the tree sizes call for")]
    ProofTooLong,
    /// The proof has fewer elements than the sizes call for (including an empty
    /// consistency proof between different sizes).
    #[error("proof has fewer elements than the tree sizes call for")]
    ProofTooShort,
    /// The root computed from an inclusion proof is not the given root, or two claimed
    /// roots of the same size differ.
    #[error("root hash mismatch")]
    RootMismatch,
    /// The old root computed from a consistency proof is not the given old root.
    #[error("old root hash mismatch")]
    OldRootMismatch,
    /// The new root computed from a consistency proof is not the given new root.
    #[error("new root hash mismatch")]
    NewRootMismatch,
}

fn check_proof_lengths<P: AsRef<[u8]>>(proof: &[P]) -> Result<(), VerifyError> {
    for (position, p) in proof.iter().enumerate() {
        let len = p.as_ref().len();
        if len != HASH_SIZE {
            return Err(VerifyError::ProofHashLength { position, len });
        }
    }
    Ok(())
}

/// Shifts `fn_` and `sn` right together until `fn_`'s lowest bit is set or it is 0.
fn shift_until_lsb_or_zero(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// The root that an inclusion proof yields for `leaf_hash` at `index` in a tree of
/// `tree_size` leaves (RFC 9162 §2.1.3.2 steps 1–4, and the `sn == 0` check of step 5).
pub fn root_from_inclusion_proof<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    tree_size: u64,
    proof: &[P],
) -> Result<Hash32, VerifyError> {
    let mut r: Hash32 = leaf_hash
        .try_into()
        .map_err(|_| VerifyError::LeafHashLength(leaf_hash.len()))?;
    if index >= tree_size {
        return Err(VerifyError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    check_proof_lengths(proof)?;
    let (mut fn_, mut sn) = (index, tree_size - 1);
    for p in proof {
        let p = p.as_ref();
        if sn == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = hash_children(p, &r);
            if fn_ & 1 == 0 {
                shift_until_lsb_or_zero(&mut fn_, &mut sn);
            }
        } else {
            r = hash_children(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `tree_size` leaves whose root is
/// `root`, given its inclusion proof (RFC 9162 §2.1.3.2; a leaf hash must be 32 bytes).
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    tree_size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), VerifyError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)?;
    if computed.as_slice() != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree
/// of `new_size` leaves with root `new_root`, given a consistency proof (RFC 9162
/// §2.1.4.2), with these rules first:
///
/// * `old_size > new_size` is [`VerifyError::SizeOrder`];
/// * `old_size == 0` is [`VerifyError::OldSizeZero`], even when `new_size` is 0 too;
/// * equal sizes need an empty proof ([`VerifyError::ProofTooLong`] otherwise) and equal
///   roots, compared byte for byte ([`VerifyError::RootMismatch`] otherwise);
/// * otherwise an empty proof is [`VerifyError::ProofTooShort`] (RFC step 1), and both
///   roots and every proof element must be 32 bytes ([`VerifyError::RootLength`],
///   [`VerifyError::ProofHashLength`]): without this, a power-of-two old "root" of any
///   length would seed the path and could be "proved" consistent with a hash of itself.
pub fn verify_consistency<P: AsRef<[u8]>>(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[P],
) -> Result<(), VerifyError> {
    if old_size > new_size {
        return Err(VerifyError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 {
        return Err(VerifyError::OldSizeZero);
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(VerifyError::ProofTooLong);
        }
        if old_root != new_root {
            return Err(VerifyError::RootMismatch);
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(VerifyError::ProofTooShort);
    }
    for r in [old_root, new_root] {
        if r.len() != HASH_SIZE {
            return Err(VerifyError::RootLength(r.len()));
        }
    }
    check_proof_lengths(proof)?;
    // Step 2: when old_size is a power of two, the old root is the first path element.
    let mut path: Vec<&[u8]> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter().map(AsRef::as_ref));
    // Steps 3–4.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let mut fr: Vec<u8> = path[0].to_vec();
    let mut sr: Vec<u8> = path[0].to_vec();
    // Step 6.
    for c in &path[1..] {
        if sn == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = hash_children(c, &fr).to_vec();
            sr = hash_children(c, &sr).to_vec();
            if fn_ & 1 == 0 {
                shift_until_lsb_or_zero(&mut fn_, &mut sn);
            }
        } else {
            sr = hash_children(&sr, c).to_vec();
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    if fr != old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if sr != new_root {
        return Err(VerifyError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let h: Hash32 = Sha256::digest([]).into();
        assert_eq!(h, EMPTY_ROOT);
        assert_eq!(root::<&[u8]>(&[]), EMPTY_ROOT);
        assert_eq!(CompactRange::new().root(), EMPTY_ROOT);
    }

    #[test]
    fn split_points() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn append_reports_perfect_nodes() {
        let mut cr = CompactRange::new();
        let levels: Vec<Vec<(u32, u64)>> = (0..8u8)
            .map(|i| {
                cr.append(leaf_hash(&[i]))
                    .into_iter()
                    .map(|(l, i, _)| (l, i))
                    .collect()
            })
            .collect();
        assert_eq!(levels[0], vec![(0, 0)]);
        assert_eq!(levels[1], vec![(0, 1), (1, 0)]);
        assert_eq!(levels[2], vec![(0, 2)]);
        assert_eq!(levels[3], vec![(0, 3), (1, 1), (2, 0)]);
        assert_eq!(levels[7], vec![(0, 7), (1, 3), (2, 1), (3, 0)]);
        assert_eq!(cr.hashes().len(), 1);
    }

    #[test]
    fn compact_range_serde_round_trip_and_checks() {
        let mut cr = CompactRange::new();
        for i in 0..11u8 {
            cr.append(leaf_hash(&[i]));
        }
        let bytes = rmp_serde::to_vec_named(&cr).unwrap();
        // 3 frontier hashes as one bin field, not 96 small integers.
        assert!(bytes.len() < 3 * 32 + 32, "{} bytes", bytes.len());
        let back: CompactRange = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, cr);
        let json = serde_json::to_string(&cr).unwrap();
        let back: CompactRange = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cr);
        let bad = serde_json::json!({"size": 12, "hashes": vec![0u8; 96]});
        assert!(serde_json::from_value::<CompactRange>(bad).is_err());
        let bad = serde_json::json!({"size": 11, "hashes": vec![0u8; 95]});
        assert!(serde_json::from_value::<CompactRange>(bad).is_err());
    }
}
