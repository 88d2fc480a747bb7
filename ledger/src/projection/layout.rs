//! The byte layout of a snapshot of the projection, and reading the layouts of older
//! builds.
//!
//! A snapshot is MessagePack, positional (field names would double its size):
//!
//! * **Layout 2** (this build writes it): `["claim-ledger/projection/2", seq, projection]`,
//!   the projection as [`Projection`] serializes it (one record per uid), every string
//!   after the first occurrence of its allocation written as a back-reference: the index
//!   of that occurrence among the strings written, as an integer
//!   ([`schemas::text::encode_shared`]).
//! * **Layout 1** (builds before the compact projection): `[seq, projection]`, the
//!   projection as a map per index (objects, names, history, children, bindings,
//!   bound-under, volumes, orphaned PVCs, violations, seq, time, watched namespaces).
//!
//! The first element tells them apart (a string tag against an integer seq), so a ledger
//! written by an older build opens from its snapshots, and `verify` still compares them
//! with the state replay derives. A tag this build does not know is refused as
//! undecodable, never guessed at.
//!
//! Either layout is decoded inside [`schemas::text::decode_shared`], which resolves the
//! back-references: every reference to a uid shares one copy again, as `apply` keeps them
//! (layout 1 has none: its strings are decoded as copies, which costs memory, not
//! correctness, until the next snapshot is written in layout 2).

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemas::{ObjectKind, Text};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{BindingRecord, ObjectRecord, OwnedUids, Projection, UidState, VolumeRecord};

/// The tag that opens a snapshot of layout 2.
pub(crate) const LAYOUT_2: &str = "claim-ledger/projection/2";

/// A decoded snapshot: the projection after `seq` (its derived answers not yet rebuilt:
/// [`Projection::rebuild_derived`]).
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) projection: Projection,
}

/// The snapshot record of the projection after `seq`, in layout 2.
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
/// file).
pub(crate) fn encode_into(
    out: &mut dyn std::io::Write,
    seq: u64,
    projection: &Projection,
) -> Result<(), rmp_serde::encode::Error> {
    // Each uid, name and other shared string once, then by back-reference. The table of
    // those written (24 bytes a string, for the length of the encode) is sized once for
    // the about 6 distinct strings a uid's record brings (measured: 2.77M for 462k uids).
    let uids = projection.uids.len();
    schemas::text::encode_shared(uids.saturating_mul(6), || {
        rmp_serde::encode::write(out, &(LAYOUT_2, seq, projection))
    })
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
            Opening::Tag(tag) if tag == LAYOUT_2 => {
                let snapshot_seq = seq.next_element::<u64>()?.ok_or_else(|| missing("seq"))?;
                let projection = seq
                    .next_element::<Projection>()?
                    .ok_or_else(|| missing("projection"))?;
                (snapshot_seq, projection)
            }
            Opening::Tag(tag) => {
                return Err(de::Error::custom(format!(
                    "unknown snapshot layout {tag:?} (this build reads {LAYOUT_2:?} and the untagged layout 1)"
                )))
            }
            Opening::Seq(snapshot_seq) => {
                let legacy = seq
                    .next_element::<LayoutOne>()?
                    .ok_or_else(|| missing("projection"))?;
                (snapshot_seq, legacy.into_projection())
            }
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

/// The projection's records by uid, each decoded straight into its `Arc` (serde's `Arc`
/// decodes into a `Box` and copies it into a second allocation: 800k of them per open).
pub(super) fn uid_states<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<super::HashMap<Text, Arc<UidState>>, D::Error> {
    struct States;
    impl<'de> Visitor<'de> for States {
        type Value = super::HashMap<Text, Arc<UidState>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of uids to their records")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut states = super::HashMap::default();
            while let Some((uid, state)) = map.next_entry::<Text, UidState>()? {
                states.insert(uid, Arc::new(state));
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
                .map(|(uid, state)| (uid, Arc::new(state)))
                .collect(),
            names: self
                .names
                .into_iter()
                .map(|(name, uids)| (name, uids.into_iter().collect()))
                .collect(),
            active: Default::default(),
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
        names: StdHashMap<&'a (ObjectKind, Text, Text), Vec<&'a Text>>,
        history: StdHashMap<&'a Text, &'a [u64]>,
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
            .map(|(name, uids)| (name, uids.iter().collect()))
            .collect(),
        history: states()
            .filter(|(_, s)| !s.history.is_empty())
            .map(|(uid, s)| (uid, s.history.as_slice()))
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
