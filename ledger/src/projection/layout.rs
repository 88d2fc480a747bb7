//! The byte layout of a snapshot of the projection, and reading the layouts of older
//! builds.
//!
//! A snapshot is MessagePack, positional (field names would double its size):
//!
//! * **Layout 3** (this build writes it): `["claim-ledger/projection/3", seq, parts,
//!   rest]`. `parts` is an array of [`PARTS`] MessagePack `bin` values, each the encoding
//!   of an array of *families*: `[records, names, volumes]`, `records` an array of
//!   `[uid, record]` (the uid's [`UidState`]), `names` an array of `[[kind, namespace,
//!   name], uids]` (the name index entries whose newest uid is in the family) and
//!   `volumes` an array of `[volume, record]` (the volumes whose newest PVC is in the
//!   family). A family is an object and everything below it by controller reference (a
//!   claim, its Sandbox, the Sandbox's pod and PVCs), written together. `rest` is
//!   `[volumes, orphaned, violations, seq, time, watched, names]`, its `volumes` and
//!   `names` those no family took. Inside each part, and inside `rest`, every string
//!   after the first occurrence of its allocation is written as a back-reference (the index of that occurrence among the strings of
//!   that part, as an integer: [`schemas::text::encode_shared`]), so each part decodes on
//!   its own: on every core at once, and with the strings a back-reference names written
//!   a few records before it rather than anywhere in hundreds of megabytes.
//! * **Layout 2** (builds before layout 3): `["claim-ledger/projection/2", seq,
//!   projection]`, the projection as [`Projection`] serializes it (one record per uid), in
//!   one back-reference scope (so it decodes on one thread).
//! * **Layout 1** (builds before the compact projection): `[seq, projection]`, the
//!   projection as a map per index (objects, names, history, children, bindings,
//!   bound-under, volumes, orphaned PVCs, violations, seq, time, watched namespaces).
//!
//! The first element tells them apart (a string tag against an integer seq), so a ledger
//! written by an older build opens from its snapshots, and `verify` still compares them
//! with the state replay derives. A tag this build does not know is refused as
//! undecodable, never guessed at; so is a uid, a name or a volume written twice.
//!
//! Back-references resolve so that every reference to a uid within a part shares one copy
//! again, as `apply` keeps them; a string named from two parts (a uid whose owner is in
//! another family) is two copies, which costs memory, not correctness (layout 1 has no
//! back-references at all).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::fmt;

use ahash::{AHashMap, AHashSet};

use chrono::{DateTime, Utc};
use schemas::{ObjectKind, Text};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::{self, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::answers::Answers;
use super::names::{add_decoded, DecodedNames, NameIndex, NameRef, OwnedName};
use super::text_map::{self, DecodedEntries, UidMap, VolumeMap};
use super::{
    BindingRecord, NameUids, ObjectRecord, OwnedUids, Projection, SharedState, UidState,
    VolumeRecord,
};

/// The tag that opens a snapshot of layout 2.
pub(crate) const LAYOUT_2: &str = "claim-ledger/projection/2";

/// The tag that opens a snapshot of layout 3.
pub(crate) const LAYOUT_3: &str = "claim-ledger/projection/3";

/// How many parts layout 3 splits the records into: fixed, so the layout does not depend
/// on the machine that wrote it, and enough for the decoding threads of any machine to
/// share the parts evenly (a decoder uses up to [`MAX_DECODE_THREADS`]).
const PARTS: usize = 32;

/// The most threads a decoder of layout 3 uses.
const MAX_DECODE_THREADS: usize = 8;

/// How far up its controller chain the encoder looks for the top of a uid's family (a
/// claim is three levels above a pod; a longer or circular chain only splits a family).
const MAX_CLIMB: usize = 8;

/// A decoded snapshot: the projection after `seq` (its answers of bound pods pending: see
/// [`super::answers`]).
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) projection: Projection,
}

/// The snapshot record of the projection after `seq`, in layout 3.
#[cfg(test)]
pub(crate) fn encode(
    seq: u64,
    projection: &Projection,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut bytes = Vec::new();
    encode_into(&mut bytes, seq, projection)?;
    Ok(bytes)
}

/// [`encode`], written to `out` as it is produced (a snapshot thread streams it to its
/// file): a part at a time, the only one held whole.
pub(crate) fn encode_into(
    out: &mut dyn std::io::Write,
    seq: u64,
    projection: &Projection,
) -> Result<(), rmp_serde::encode::Error> {
    let families = Families::new(projection);
    rmp_serde::encode::write(
        out,
        &(LAYOUT_3, seq, EncodedParts(&families), RestOf(&families)),
    )
}

/// The snapshot record of the projection after `seq` in layout 2, as the builds before
/// layout 3 wrote it: for tests that open a ledger an older build left.
#[cfg(test)]
pub(crate) fn encode_layout_two(
    seq: u64,
    projection: &Projection,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let uids = projection.uids.len();
    schemas::text::encode_shared(uids.saturating_mul(6), || {
        rmp_serde::to_vec(&(LAYOUT_2, seq, projection))
    })
}

/// A layout-3 snapshot taken apart: its seq, each part's bytes and the bytes of `rest`
/// (for tests that damage one part).
#[cfg(test)]
pub(crate) fn split_layout_three(bytes: &[u8]) -> (u64, Vec<Vec<u8>>, Vec<u8>) {
    let (tag, seq, parts, _): (String, u64, Vec<PartBytes>, de::IgnoredAny) =
        rmp_serde::from_slice(bytes).expect("a layout-3 snapshot");
    assert_eq!(tag, LAYOUT_3);
    let parts: Vec<Vec<u8>> = parts.into_iter().map(|part| part.0).collect();
    let head = join_layout_three(seq, &parts, &[]);
    (seq, parts, bytes[head.len()..].to_vec())
}

/// The layout-3 snapshot of these parts and `rest` ([`split_layout_three`]).
#[cfg(test)]
pub(crate) fn join_layout_three(seq: u64, parts: &[Vec<u8>], rest: &[u8]) -> Vec<u8> {
    let bins: Vec<Bin> = parts.iter().map(|part| Bin(part)).collect();
    let mut bytes = rmp_serde::to_vec(&(LAYOUT_3, seq, bins)).expect("encodes");
    // A fixarray of 3 elements becomes one of 4: `rest` follows.
    assert_eq!(bytes[0], 0x93);
    bytes[0] = 0x94;
    bytes.extend_from_slice(rest);
    bytes
}

/// The projection's records in families, for layout 3: the order the parts are written
/// in, computed as they are written.
struct Families<'a> {
    projection: &'a Projection,
    /// Every uid, in the map's order: where the search for the next family goes on.
    order: Vec<&'a Text>,
    /// The name index entries by the newest uid each names (taken by that uid's family;
    /// those left at the end go in `rest`).
    names_of: RefCell<AHashMap<&'a str, NameEntries<'a>>>,
    /// The volumes by their newest PVC, the same way.
    volumes_of: RefCell<AHashMap<&'a str, VolumeEntries<'a>>>,
    /// The uids already written, and where the search for the next family is.
    written: RefCell<(AHashSet<&'a str>, usize)>,
}

/// The name index entries whose newest uid is one uid: nearly always one.
type NameEntries<'a> = smallvec::SmallVec<[(NameRef<'a>, &'a NameUids); 1]>;

/// The volumes whose newest PVC is one uid: nearly always none or one.
type VolumeEntries<'a> = smallvec::SmallVec<[(&'a Text, &'a VolumeRecord); 1]>;

/// One part of layout 3, as written: its records, name entries and volumes in family
/// order, and where each family ends in each.
#[derive(Default)]
struct Part<'a> {
    records: Vec<(&'a Text, &'a UidState)>,
    names: Vec<(NameRef<'a>, &'a NameUids)>,
    volumes: Vec<(&'a Text, &'a VolumeRecord)>,
    /// Where each family ends in `records`, `names` and `volumes`.
    ends: Vec<[usize; 3]>,
}

impl<'a> Families<'a> {
    fn new(projection: &'a Projection) -> Self {
        let mut names_of: AHashMap<&str, NameEntries<'a>> =
            AHashMap::with_capacity(projection.names.len());
        for (name, uids) in projection.names.iter() {
            if let Some(newest) = uids.last() {
                names_of
                    .entry(newest.as_str())
                    .or_default()
                    .push((name, uids));
            }
        }
        let mut volumes_of: AHashMap<&str, VolumeEntries<'a>> = AHashMap::default();
        for (volume, record) in projection.volumes.iter() {
            if let Some(newest) = record.pvc_uids.last() {
                volumes_of
                    .entry(newest.as_str())
                    .or_default()
                    .push((volume, record));
            }
        }
        Families {
            projection,
            order: projection.uids.keys().collect(),
            names_of: RefCell::new(names_of),
            volumes_of: RefCell::new(volumes_of),
            written: RefCell::new((AHashSet::with_capacity(projection.uids.len()), 0)),
        }
    }

    /// The uid whose record names `uid`'s controller, if it has a record.
    fn controller_of(&self, uid: &str) -> Option<&'a Text> {
        let state = self.projection.uids.get(uid)?;
        let controller = state.object.as_ref()?.current.controller.as_ref()?;
        let (key, _) = self
            .projection
            .uids
            .get_key_value(controller.uid.as_str())?;
        Some(key)
    }

    /// The next part: whole families, in the map's order of their members, until it holds
    /// `records` records (the last part takes every family left).
    fn next_part(&self, records: usize, part: &mut Part<'a>) {
        part.records.clear();
        part.names.clear();
        part.volumes.clear();
        part.ends.clear();
        let mut names_of = self.names_of.borrow_mut();
        let mut volumes_of = self.volumes_of.borrow_mut();
        let mut written = self.written.borrow_mut();
        let (written, next) = &mut *written;
        let mut stack: Vec<&'a Text> = Vec::new();
        while part.records.len() < records && *next < self.order.len() {
            let start = self.order[*next];
            *next += 1;
            if written.contains(start.as_str()) {
                continue;
            }
            let mut top = start;
            for _ in 0..MAX_CLIMB {
                match self.controller_of(top) {
                    Some(owner) if !written.contains(owner.as_str()) && owner != top => top = owner,
                    _ => break,
                }
            }
            stack.push(top);
            while let Some(uid) = stack.pop() {
                if !written.insert(uid.as_str()) {
                    continue;
                }
                let Some((key, state)) = self.projection.uids.get_key_value(uid.as_str()) else {
                    continue;
                };
                part.records.push((key, state));
                if let Some(entries) = names_of.remove(key.as_str()) {
                    part.names.extend(entries);
                }
                if let Some(entries) = volumes_of.remove(key.as_str()) {
                    part.volumes.extend(entries);
                }
                stack.extend(state.children.0.iter().rev());
            }
            part.ends
                .push([part.records.len(), part.names.len(), part.volumes.len()]);
        }
    }
}

/// Layout 3's parts: each encoded in a back-reference scope of its own and written as a
/// `bin`.
struct EncodedParts<'p, 'a>(&'p Families<'a>);

impl Serialize for EncodedParts<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let families = self.0;
        let total = families.order.len();
        let mut parts = serializer.serialize_seq(Some(PARTS))?;
        let mut part = Part::default();
        let mut bytes = Vec::new();
        let mut done = 0;
        for index in 0..PARTS {
            // Part `index` ends once `(index + 1) / PARTS` of the records are written.
            let records = match index + 1 == PARTS {
                true => usize::MAX,
                false => (total * (index + 1)).div_ceil(PARTS).saturating_sub(done),
            };
            families.next_part(records, &mut part);
            done += part.records.len();
            bytes.clear();
            // About 6 distinct strings a record (measured: 2.77M for 462k uids).
            schemas::text::encode_shared(part.records.len().saturating_mul(6), || {
                rmp_serde::encode::write(&mut bytes, &PartFamilies(&part))
            })
            .map_err(ser::Error::custom)?;
            parts.serialize_element(&Bin(&bytes))?;
        }
        parts.end()
    }
}

/// The families of a part, as an array of `[records, names, volumes]`.
struct PartFamilies<'p, 'a>(&'p Part<'a>);

impl Serialize for PartFamilies<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let part = self.0;
        let mut families = serializer.serialize_seq(Some(part.ends.len()))?;
        let mut from = [0; 3];
        for &end in &part.ends {
            families.serialize_element(&(
                &part.records[from[0]..end[0]],
                &part.names[from[1]..end[1]],
                &part.volumes[from[2]..end[2]],
            ))?;
            from = end;
        }
        families.end()
    }
}

/// Bytes written as MessagePack `bin`.
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Layout 3's `rest`, in a back-reference scope of its own (written after the parts: the
/// name entries no family took are known then).
struct RestOf<'p, 'a>(&'p Families<'a>);

impl Serialize for RestOf<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let projection = self.0.projection;
        let names: Vec<(NameRef, &NameUids)> = self
            .0
            .names_of
            .borrow()
            .values()
            .flatten()
            .copied()
            .collect();
        let volumes: Vec<(&Text, &VolumeRecord)> = self
            .0
            .volumes_of
            .borrow()
            .values()
            .flatten()
            .copied()
            // A volume that names no PVC (none is recorded so) is in no entry above.
            .chain(
                projection
                    .volumes
                    .iter()
                    .filter(|(_, record)| record.pvc_uids.is_empty()),
            )
            .collect();
        schemas::text::encode_shared(names.len().saturating_mul(3), || {
            (
                volumes,
                &projection.orphaned,
                &projection.violations,
                projection.seq,
                projection.at,
                &projection.watched,
                names,
            )
                .serialize(serializer)
        })
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Layout 2 writes each shared string once and then back-references to it (a uid
        // named by its key, its record, its owner's children, bindings and the name
        // index): decoded, they are one copy again, as `apply` keeps them.
        schemas::text::decode_shared(|| deserializer.deserialize_seq(SnapshotVisitor))
    }
}

struct SnapshotVisitor;

impl<'de> Visitor<'de> for SnapshotVisitor {
    type Value = Snapshot;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a snapshot: [layout tag, seq, projection] or [seq, projection]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Snapshot, A::Error> {
        let missing = |what: &str| de::Error::custom(format!("the snapshot has no {what}"));
        let opening = seq
            .next_element::<Opening>()?
            .ok_or_else(|| missing("layout tag or seq"))?;
        let (snapshot_seq, projection) = match opening {
            Opening::Tag(tag) if tag == LAYOUT_3 => {
                let snapshot_seq = seq.next_element::<u64>()?.ok_or_else(|| missing("seq"))?;
                let parts = seq
                    .next_element::<DecodedParts>()?
                    .ok_or_else(|| missing("parts"))?;
                let rest = seq.next_element::<Rest>()?.ok_or_else(|| missing("rest"))?;
                (snapshot_seq, parts.into_projection(rest)?)
            }
            older => older_layout(older, &mut seq)?,
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("the snapshot has trailing elements"));
        }
        Ok(Snapshot {
            seq: snapshot_seq,
            projection,
        })
    }
}

/// Layout 3's `rest`, decoded in a back-reference scope of its own.
struct Rest {
    volumes: Vec<(Text, VolumeRecord)>,
    orphaned: super::OrdSet<Text>,
    violations: super::OrdSet<(Text, Text)>,
    seq: u64,
    at: Option<DateTime<Utc>>,
    watched: Option<Vec<String>>,
    names: Vec<(OwnedName, NameUids)>,
}

impl<'de> Deserialize<'de> for Rest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Fields = (
            Vec<(Text, VolumeRecord)>,
            super::OrdSet<Text>,
            super::OrdSet<(Text, Text)>,
            u64,
            Option<DateTime<Utc>>,
            Option<Vec<String>>,
            Vec<(OwnedName, NameUids)>,
        );
        let (volumes, orphaned, violations, seq, at, watched, names) =
            schemas::text::decode_shared(|| Fields::deserialize(deserializer))?;
        Ok(Rest {
            volumes,
            orphaned,
            violations,
            seq,
            at,
            watched,
            names,
        })
    }
}

/// Layout 3's parts, decoded: the projection's maps of records, names and volumes.
struct DecodedParts {
    uids: DecodedEntries<SharedState>,
    names: DecodedNames,
    volumes: DecodedEntries<VolumeRecord>,
}

impl<'de> Deserialize<'de> for DecodedParts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PartsVisitor)
    }
}

/// The seq and projection of a snapshot of layout 2 or 1, after its opening element.
fn older_layout<'de, A: SeqAccess<'de>>(
    opening: Opening,
    seq: &mut A,
) -> Result<(u64, Projection), A::Error> {
    let missing = |what: &str| de::Error::custom(format!("the snapshot has no {what}"));
    match opening {
        Opening::Tag(tag) if tag == LAYOUT_2 => {
            let snapshot_seq = seq.next_element::<u64>()?.ok_or_else(|| missing("seq"))?;
            let projection = seq
                .next_element::<Projection>()?
                .ok_or_else(|| missing("projection"))?;
            Ok((snapshot_seq, projection))
        }
        Opening::Tag(tag) => Err(de::Error::custom(format!(
            "unknown snapshot layout {tag:?} (this build reads {LAYOUT_3:?}, {LAYOUT_2:?} and the untagged layout 1)"
        ))),
        Opening::Seq(snapshot_seq) => {
            let legacy = seq
                .next_element::<LayoutOne>()?
                .ok_or_else(|| missing("projection"))?;
            Ok((snapshot_seq, legacy.into_projection()))
        }
    }
}

/// Whether the snapshot read from `reader` holds the stored state of `reference` (the
/// projection replay derives at its seq; derived answers are not stored): `Ok(None)` when
/// it does, `Ok(Some(why))` naming a difference, an error when it does not decode or the
/// read fails.
///
/// Layout 3 is compared as it decodes, part by part on every core, each record looked up
/// in `reference` and dropped: no projection is built. `verify` compares every committed
/// snapshot, and at a million objects building one (a gigabyte of fresh pages, then
/// freed) cost more than walking the entries between two snapshots. Older layouts are
/// decoded whole and compared.
pub(crate) fn differs_from(
    reader: impl std::io::Read,
    reference: &Projection,
) -> Result<Option<String>, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::new(reader);
    schemas::text::decode_shared(|| {
        de::DeserializeSeed::deserialize(Against(reference), &mut deserializer)
    })
}

/// A snapshot compared with a projection as it decodes ([`differs_from`]).
struct Against<'r>(&'r Projection);

impl<'de> de::DeserializeSeed<'de> for Against<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Against<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a snapshot: [layout tag, seq, projection] or [seq, projection]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        let reference = self.0;
        let missing = |what: &str| de::Error::custom(format!("the snapshot has no {what}"));
        let opening = seq
            .next_element::<Opening>()?
            .ok_or_else(|| missing("layout tag or seq"))?;
        let difference = match opening {
            Opening::Tag(tag) if tag == LAYOUT_3 => {
                let snapshot_seq = seq.next_element::<u64>()?.ok_or_else(|| missing("seq"))?;
                if snapshot_seq != reference.seq {
                    // Read through, not decoded: the sequence must end where it says.
                    while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                    return Ok(Some(format!("it names seq {snapshot_seq}")));
                }
                let parts = seq
                    .next_element_seed(PartsAgainst(reference))?
                    .ok_or_else(|| missing("parts"))?;
                let rest = seq.next_element::<Rest>()?.ok_or_else(|| missing("rest"))?;
                parts
                    .with_rest(rest, reference)
                    .map_err(de::Error::custom)?
            }
            older => {
                let (snapshot_seq, projection) = older_layout(older, &mut seq)?;
                if snapshot_seq != reference.seq {
                    Some(format!("it names seq {snapshot_seq}"))
                } else {
                    stored_state_differs(&projection, reference)
                }
            }
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("the snapshot has trailing elements"));
        }
        Ok(difference)
    }
}

/// A snapshot's `what` (plural) that is not the replay's.
fn differs(what: &str) -> Option<String> {
    Some(format!("its {what} differ from the state replay derives"))
}

/// The first difference between the stored state of two projections (what a snapshot
/// holds: everything but the derived answers).
fn stored_state_differs(decoded: &Projection, reference: &Projection) -> Option<String> {
    if decoded.uids != reference.uids {
        return differs("records");
    }
    if decoded.names != reference.names {
        return differs("name index entries");
    }
    if decoded.volumes != reference.volumes {
        return differs("volumes");
    }
    // The fields layout 3 keeps in `rest` (cheap to copy: shared sets, a short list).
    let rest = Rest {
        volumes: Vec::new(),
        orphaned: decoded.orphaned.clone(),
        violations: decoded.violations.clone(),
        seq: decoded.seq,
        at: decoded.at,
        watched: decoded.watched.clone(),
        names: Vec::new(),
    };
    rest_differs(&rest, reference)
}

/// The first difference in the fields of layout 3's `rest` besides its names and volumes.
fn rest_differs(rest: &Rest, reference: &Projection) -> Option<String> {
    if rest.orphaned != reference.orphaned {
        return differs("orphaned PVCs");
    }
    if rest.violations != reference.violations {
        return differs("recorded violations");
    }
    if rest.seq != reference.seq || rest.at != reference.at {
        return differs("seq and time");
    }
    if rest.watched != reference.watched {
        return differs("watched namespaces");
    }
    None
}

/// A part's records compared: the first difference, and the records found equal (the
/// address of the reference's record, and the uid).
type ComparedRecords = (Option<String>, Vec<(usize, Text)>);

/// Layout 3's parts, compared with a projection as they decode.
struct PartsAgainst<'r>(&'r Projection);

impl<'de> de::DeserializeSeed<'de> for PartsAgainst<'_> {
    type Value = ComparedParts;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// What comparing the parts found: the first difference, and which of the reference's
/// entries the parts held (by address: the reference does not change while it is
/// compared), so that `rest` and the counts can be checked after.
struct ComparedParts {
    difference: Option<String>,
    records: usize,
    names: AHashSet<usize>,
    volumes: AHashSet<usize>,
}

impl<'de> Visitor<'de> for PartsAgainst<'_> {
    type Value = ComparedParts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the parts of a snapshot: an array of bin")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, parts: A) -> Result<ComparedParts, A::Error> {
        let reference = self.0;
        // Each decoding thread compares its parts' records (a lookup and a deep comparison
        // each: the costliest step, so on every core); one thread gathers which records
        // they found, to refuse one written twice.
        let compare = |part: PartRecords| {
            let mut found = Vec::with_capacity(part.len());
            for (uid, state) in part {
                let Some(expected) = reference.uids.get(uid.as_str()) else {
                    let why = format!("uid {uid} is not in the state replay derives");
                    return (Some(why), found);
                };
                if **expected != *state {
                    let why = format!("the record of uid {uid} differs from the replay's");
                    return (Some(why), found);
                }
                found.push((SharedState::as_ptr(expected) as usize, uid));
            }
            (None, found)
        };
        let gather = |received: std::sync::mpsc::Receiver<ComparedRecords>| {
            let mut seen = AHashSet::with_capacity(reference.uids.len());
            for (difference, found) in received {
                for (address, uid) in found {
                    if !seen.insert(address) {
                        return Err(format!("uid {uid} is written twice"));
                    }
                }
                if difference.is_some() {
                    return Ok((difference, seen.len()));
                }
            }
            Ok((None, seen.len()))
        };
        let ((record_difference, records), (name_difference, names, volumes)) =
            read_parts(parts, (compare, gather), |received| {
                let mut names = AHashSet::with_capacity(reference.names.len());
                let mut volumes = AHashSet::with_capacity(reference.volumes.len());
                for (part_names, part_volumes) in received {
                    if let Some(why) = compare_names(reference, part_names, &mut names)?
                        .or(compare_volumes(reference, part_volumes, &mut volumes)?)
                    {
                        return Ok((Some(why), names, volumes));
                    }
                }
                Ok((None, names, volumes))
            })?;
        Ok(ComparedParts {
            difference: record_difference.or(name_difference),
            records,
            names,
            volumes,
        })
    }
}

impl ComparedParts {
    /// The first difference, once `rest` is compared too and every record, name and volume
    /// of `reference` was found; an error for an entry written twice.
    fn with_rest(
        mut self,
        mut rest: Rest,
        reference: &Projection,
    ) -> Result<Option<String>, String> {
        if self.difference.is_some() {
            return Ok(self.difference);
        }
        let (names, volumes) = (
            std::mem::take(&mut rest.names),
            std::mem::take(&mut rest.volumes),
        );
        if let Some(why) = compare_names(reference, names, &mut self.names)?.or(compare_volumes(
            reference,
            volumes,
            &mut self.volumes,
        )?) {
            return Ok(Some(why));
        }
        let missing = |count: usize, what: &str| {
            Some(format!(
                "{count} {what} of the state replay derives are not in it"
            ))
        };
        if self.records != reference.uids.len() {
            return Ok(missing(reference.uids.len() - self.records, "records"));
        }
        if self.names.len() != reference.names.len() {
            return Ok(missing(
                reference.names.len() - self.names.len(),
                "name index entries",
            ));
        }
        if self.volumes.len() != reference.volumes.len() {
            return Ok(missing(
                reference.volumes.len() - self.volumes.len(),
                "volumes",
            ));
        }
        Ok(rest_differs(&rest, reference))
    }
}

/// Compares decoded name index entries with `reference`'s, noting each one found in
/// `seen`: the first difference, or an error for one written twice.
fn compare_names(
    reference: &Projection,
    names: Vec<(OwnedName, NameUids)>,
    seen: &mut AHashSet<usize>,
) -> Result<Option<String>, String> {
    for (name, uids) in names {
        let Some(expected) = reference.names.get(name.0, &name.1, &name.2) else {
            return Ok(Some(format!(
                "its name index holds {}/{} ({:?}), which the replay's does not",
                name.1, name.2, name.0
            )));
        };
        if !seen.insert(expected as *const NameUids as usize) {
            return Err("a name index entry is written twice".to_string());
        }
        if *expected != uids {
            return Ok(Some(format!(
                "its name index entry of {}/{} ({:?}) differs from the replay's",
                name.1, name.2, name.0
            )));
        }
    }
    Ok(None)
}

/// Compares decoded volumes with `reference`'s, noting each one found in `seen`: the
/// first difference, or an error for one written twice.
fn compare_volumes(
    reference: &Projection,
    volumes: Vec<(Text, VolumeRecord)>,
    seen: &mut AHashSet<usize>,
) -> Result<Option<String>, String> {
    for (volume, record) in volumes {
        let Some(expected) = reference.volumes.get(volume.as_str()) else {
            return Ok(Some(format!(
                "it holds volume {volume}, which the replay's state does not"
            )));
        };
        if !seen.insert(expected as *const VolumeRecord as usize) {
            return Err(format!("volume {volume} is written twice"));
        }
        if *expected != record {
            return Ok(Some(format!(
                "its record of volume {volume} differs from the replay's"
            )));
        }
    }
    Ok(None)
}

/// Reads layout 3's parts and hands them, as they are read, to threads that decode them.
struct PartsVisitor;

impl<'de> Visitor<'de> for PartsVisitor {
    type Value = DecodedParts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the parts of a snapshot: an array of bin")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, parts: A) -> Result<DecodedParts, A::Error> {
        // Two threads take each part as it is decoded, so that their work overlaps the
        // decoding instead of following it: one fills the table of records, the other the
        // tables of the name index's entries and of the volumes (see `decoded`).
        let (uids, (names, volumes)) = read_parts(
            parts,
            (
                |records| records,
                |records| {
                    let mut uids = DecodedEntries::new(PARTS);
                    for part in records {
                        text_map::add_decoded(&mut uids, part, "uid")?;
                    }
                    Ok(uids)
                },
            ),
            |names| {
                let mut by_name = DecodedNames::new(PARTS);
                let mut by_volume = DecodedEntries::new(PARTS);
                for (names, volumes) in names {
                    add_decoded(&mut by_name, names)?;
                    text_map::add_decoded(&mut by_volume, volumes, "volume")?;
                }
                Ok((by_name, by_volume))
            },
        )?;
        Ok(DecodedParts {
            uids,
            names,
            volumes,
        })
    }
}

/// A decoding thread's records of one part.
type PartRecords = Vec<(Text, SharedState)>;

/// A decoding thread's name index entries and volumes of one part.
type PartNames = (Vec<(OwnedName, NameUids)>, Vec<(Text, VolumeRecord)>);

/// Reads layout 3's parts and hands them, as they are read, to threads that decode them;
/// two more threads take what they decode, part by part: `records` the records (after
/// `stage`, which runs on the decoding thread), `names` the name index entries and
/// volumes. Their errors (and the decoders') are the
/// snapshot's; a part count other than [`PARTS`] is refused.
fn read_parts<'de, A, S, R, N>(
    mut parts: A,
    (stage, records): (
        impl Fn(PartRecords) -> S + Sync,
        impl FnOnce(std::sync::mpsc::Receiver<S>) -> Result<R, String> + Send,
    ),
    names: impl FnOnce(std::sync::mpsc::Receiver<PartNames>) -> Result<N, String> + Send,
) -> Result<(R, N), A::Error>
where
    A: SeqAccess<'de>,
    S: Send,
    R: Send,
    N: Send,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_DECODE_THREADS);
    std::thread::scope(|scope| {
        let (records_sender, records_received) = std::sync::mpsc::channel::<S>();
        let (names_sender, names_received) = std::sync::mpsc::channel::<PartNames>();
        let records = scope.spawn(move || records(records_received));
        let names = scope.spawn(move || names(names_received));
        let mut senders = Vec::with_capacity(threads);
        let mut decoders = Vec::with_capacity(threads);
        for _ in 0..threads {
            // One part queued per thread: the bytes read ahead stay a few parts.
            let (sender, receiver) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(1);
            senders.push(sender);
            let (records, names) = (records_sender.clone(), names_sender.clone());
            let stage = &stage;
            decoders.push(scope.spawn(move || {
                for (index, bytes) in receiver {
                    let mut decoded = Decoded::default();
                    decode_part(&bytes, &mut decoded).map_err(|e| format!("part {index}: {e}"))?;
                    drop(bytes);
                    // A taker that stopped has failed or is done: reported below.
                    let _ = records.send(stage(decoded.records));
                    let _ = names.send((decoded.names, decoded.volumes));
                }
                Ok::<_, String>(())
            }));
        }
        drop((records_sender, names_sender));
        let mut read = Ok(());
        let mut index = 0;
        loop {
            match parts.next_element::<PartBytes>() {
                Ok(Some(PartBytes(bytes))) => {
                    // A thread that stopped has failed: its error is reported below.
                    if senders[index % threads].send((index, bytes)).is_err() {
                        break;
                    }
                    index += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        drop(senders);
        let mut failed = None;
        for decoder in decoders {
            if let Err(e) = joined(decoder) {
                failed = failed.or(Some(e));
            }
        }
        let records = joined(records);
        let names = joined(names);
        // A read that failed is the storage's (or the framing's): reported first.
        read?;
        if let Some(e) = failed {
            return Err(de::Error::custom(e));
        }
        if index != PARTS {
            return Err(de::Error::custom(format!(
                "the snapshot has {index} parts; layout 3 has {PARTS}"
            )));
        }
        let records = records.map_err(de::Error::custom)?;
        let names = names.map_err(de::Error::custom)?;
        Ok((records, names))
    })
}

/// What a scoped thread returned (its panic, resumed here).
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One part's bytes, as read.
struct PartBytes(Vec<u8>);

impl<'de> Deserialize<'de> for PartBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = PartBytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a part's bytes (bin)")
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<PartBytes, E> {
                Ok(PartBytes(bytes.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<PartBytes, E> {
                Ok(PartBytes(bytes))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// What one thread decoded from its parts.
#[derive(Default)]
struct Decoded {
    records: Vec<(Text, SharedState)>,
    names: Vec<(OwnedName, NameUids)>,
    volumes: Vec<(Text, VolumeRecord)>,
}

/// Decodes one part of layout 3 (in a back-reference scope of its own) onto what a thread
/// has decoded so far.
fn decode_part(bytes: &[u8], decoded: &mut Decoded) -> Result<(), rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::new(bytes);
    schemas::text::decode_shared(|| {
        de::DeserializeSeed::deserialize(FamiliesInto(decoded), &mut deserializer)
    })?;
    match deserializer.get_ref().len() {
        0 => Ok(()),
        left => Err(de::Error::custom(format!(
            "{left} bytes after the part's families"
        ))),
    }
}

/// A part's families, decoded onto the lists of a thread: records straight into their
/// `Arc` (serde's `Arc` decodes into a `Box` and copies it into a second allocation).
struct FamiliesInto<'v>(&'v mut Decoded);

impl<'de> de::DeserializeSeed<'de> for FamiliesInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FamiliesInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of families: [records, names, volumes]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut families: A) -> Result<(), A::Error> {
        let decoded = self.0;
        while families
            .next_element_seed(FamilyInto(&mut *decoded))?
            .is_some()
        {}
        Ok(())
    }
}

/// One family: `[records, names, volumes]`.
struct FamilyInto<'v>(&'v mut Decoded);

impl<'de> de::DeserializeSeed<'de> for FamilyInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FamilyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a family: [records, names, volumes]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut family: A) -> Result<(), A::Error> {
        let missing = |what: &str| de::Error::custom(format!("a family has no {what}"));
        let decoded = self.0;
        family
            .next_element_seed(ListInto(
                &mut decoded.records,
                |(uid, state): (Text, UidState)| (uid, SharedState::new(state)),
                std::marker::PhantomData,
            ))?
            .ok_or_else(|| missing("records"))?;
        family
            .next_element_seed(ListInto(
                &mut decoded.names,
                |entry: (OwnedName, NameUids)| entry,
                std::marker::PhantomData,
            ))?
            .ok_or_else(|| missing("names"))?;
        family
            .next_element_seed(ListInto(
                &mut decoded.volumes,
                |entry: (Text, VolumeRecord)| entry,
                std::marker::PhantomData,
            ))?
            .ok_or_else(|| missing("volumes"))?;
        if family.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a family has trailing elements"));
        }
        Ok(())
    }
}

/// An array whose elements (`E`), each mapped by the function, are pushed onto a list.
struct ListInto<'v, T, E, F>(&'v mut Vec<T>, F, std::marker::PhantomData<fn() -> E>);

impl<'de, T, E: Deserialize<'de>, F: FnMut(E) -> T> de::DeserializeSeed<'de>
    for ListInto<'_, T, E, F>
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        struct ListVisitor<'v, T, F, E>(&'v mut Vec<T>, F, std::marker::PhantomData<E>);
        impl<'de, T, E: Deserialize<'de>, F: FnMut(E) -> T> Visitor<'de> for ListVisitor<'_, T, F, E> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
                while let Some(item) = items.next_element::<E>()? {
                    self.0.push((self.1)(item));
                }
                Ok(())
            }
        }
        deserializer.deserialize_seq(ListVisitor(self.0, self.1, std::marker::PhantomData))
    }
}

impl DecodedParts {
    /// The projection the parts and `rest` hold. A name or a volume of `rest` already in a
    /// part is refused, as one written twice within the parts is.
    fn into_projection<E: de::Error>(self, rest: Rest) -> Result<Projection, E> {
        let DecodedParts {
            uids,
            mut names,
            mut volumes,
        } = self;
        add_decoded(&mut names, rest.names).map_err(E::custom)?;
        text_map::add_decoded(&mut volumes, rest.volumes, "volume").map_err(E::custom)?;
        Ok(Projection {
            uids: UidMap::decoded(uids),
            names: NameIndex::decoded(names),
            answers: Answers::pending(),
            volumes: VolumeMap::decoded(volumes),
            orphaned: rest.orphaned,
            violations: rest.violations,
            seq: rest.seq,
            at: rest.at,
            watched: rest.watched,
        })
    }
}

/// The projection's records by uid, each decoded straight into its `Arc` (serde's `Arc`
/// decodes into a `Box` and copies it into a second allocation: 800k of them per open).
pub(super) fn uid_states<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UidMap, D::Error> {
    struct States;
    impl<'de> Visitor<'de> for States {
        type Value = UidMap;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of uids to their records")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut states = UidMap::default();
            while let Some((uid, state)) = map.next_entry::<Text, UidState>()? {
                states.insert(uid, SharedState::new(state));
            }
            Ok(states)
        }
    }
    deserializer.deserialize_map(States)
}

/// The first element of a snapshot: layout 2's tag, or layout 1's seq.
enum Opening {
    Tag(String),
    Seq(u64),
}

impl<'de> Deserialize<'de> for Opening {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OpeningVisitor;
        impl Visitor<'_> for OpeningVisitor {
            type Value = Opening;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a layout tag (string) or a seq (integer)")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Opening, E> {
                Ok(Opening::Tag(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Opening, E> {
                Ok(Opening::Seq(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Opening, E> {
                u64::try_from(value)
                    .map(Opening::Seq)
                    .map_err(|_| E::custom(format!("negative snapshot seq {value}")))
            }
        }
        deserializer.deserialize_any(OpeningVisitor)
    }
}

/// The projection as layout 1 stored it: a map per index, in field order.
#[derive(Deserialize)]
struct LayoutOne {
    objects: StdHashMap<Text, ObjectRecord>,
    names: StdHashMap<(ObjectKind, Text, Text), Vec<Text>>,
    history: StdHashMap<Text, Vec<u64>>,
    children: StdHashMap<Text, OwnedUids>,
    bindings: StdHashMap<Text, Vec<BindingRecord>>,
    bound_under: StdHashMap<Text, Text>,
    volumes: StdHashMap<Text, VolumeRecord>,
    orphaned: BTreeSet<Text>,
    violations: BTreeSet<(Text, Text)>,
    seq: u64,
    at: Option<DateTime<Utc>>,
    #[serde(default)]
    watched: Option<Vec<String>>,
}

impl LayoutOne {
    /// The same state, one record per uid.
    fn into_projection(self) -> Projection {
        let mut states: StdHashMap<Text, UidState> = StdHashMap::new();
        for (uid, object) in self.objects {
            states.entry(uid).or_default().object = Some(object);
        }
        for (uid, history) in self.history {
            states.entry(uid).or_default().history = history.into_iter().collect();
        }
        for (uid, children) in self.children {
            states.entry(uid).or_default().children = children;
        }
        for (uid, bindings) in self.bindings {
            states.entry(uid).or_default().bindings = bindings.into();
        }
        for (uid, claim) in self.bound_under {
            states.entry(uid).or_default().bound_under = Some(claim);
        }
        Projection {
            uids: states
                .into_iter()
                .map(|(uid, state)| (uid, SharedState::new(state)))
                .collect(),
            names: self
                .names
                .into_iter()
                .map(|(name, uids)| (name, uids.into_iter().collect()))
                .collect(),
            answers: Answers::pending(),
            volumes: self.volumes.into_iter().collect(),
            orphaned: self.orphaned.into_iter().collect(),
            violations: self.violations.into_iter().collect(),
            seq: self.seq,
            at: self.at,
            watched: self.watched,
        }
    }
}

/// The snapshot of `projection` after `seq` in layout 1, as builds before layout 2 wrote
/// it: for tests that open a ledger an older build left.
#[cfg(test)]
pub(crate) fn encode_layout_one(seq: u64, projection: &Projection) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct LayoutOneRef<'a> {
        objects: StdHashMap<&'a Text, &'a ObjectRecord>,
        names: StdHashMap<NameRef<'a>, Vec<&'a Text>>,
        history: StdHashMap<&'a Text, Vec<u64>>,
        children: StdHashMap<&'a Text, &'a OwnedUids>,
        bindings: StdHashMap<&'a Text, &'a [BindingRecord]>,
        bound_under: StdHashMap<&'a Text, &'a Text>,
        volumes: StdHashMap<&'a Text, &'a VolumeRecord>,
        orphaned: Vec<&'a Text>,
        violations: Vec<&'a (Text, Text)>,
        seq: u64,
        at: Option<DateTime<Utc>>,
        watched: &'a Option<Vec<String>>,
    }
    let states = || projection.uids.iter();
    let layout = LayoutOneRef {
        objects: states()
            .filter_map(|(uid, s)| Some((uid, s.object.as_ref()?)))
            .collect(),
        names: projection
            .names
            .iter()
            .map(|(name, uids)| (name, uids.as_slice().iter().collect()))
            .collect(),
        history: states()
            .filter(|(_, s)| !s.history.is_empty())
            .map(|(uid, s)| (uid, s.history.iter().collect()))
            .collect(),
        children: states()
            .filter(|(_, s)| !s.children.0.is_empty())
            .map(|(uid, s)| (uid, &s.children))
            .collect(),
        bindings: states()
            .filter(|(_, s)| !s.bindings.is_empty())
            .map(|(uid, s)| (uid, s.bindings.as_slice()))
            .collect(),
        bound_under: states()
            .filter_map(|(uid, s)| Some((uid, s.bound_under.as_ref()?)))
            .collect(),
        volumes: projection.volumes.iter().collect(),
        orphaned: projection.orphaned.iter().collect(),
        violations: projection.violations.iter().collect(),
        seq: projection.seq,
        at: projection.at,
        watched: &projection.watched,
    };
    rmp_serde::to_vec(&(seq, layout)).expect("a projection encodes")
}
