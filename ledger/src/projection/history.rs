//! A uid's history: every seq that recorded the uid or named it, in order.
//!
//! Most uids' whole history is three seqs or fewer (created, changed once, named by a
//! binding), so up to three are kept inline in 16 bytes: the first seq, then the gaps to
//! the next two as 32-bit numbers. With its tag the history is 24 bytes, where a small
//! vector of three took 32: one of the three savings (with `gone` derived and an 8-byte
//! reference count) that bring a uid's record (one per uid, behind an `Arc`) into the
//! allocator's 224-byte class instead of its 256-byte one.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

/// The seqs of a uid's history, in order. Encoded as an array of seqs.
#[derive(Debug, Clone)]
pub(super) enum History {
    /// `first`, then `first + gaps[0]`, then that `+ gaps[1]`; a gap of 0 is no seq (a
    /// history never holds a seq twice in a row).
    Inline { first: u64, gaps: [u32; 2] },
    /// Every other history: empty, longer than three, or with a gap of 2^32 or more (or
    /// none, as a decoded snapshot may hold).
    Listed(ThinVec<u64>),
}

impl Default for History {
    fn default() -> Self {
        History::Listed(ThinVec::new())
    }
}

/// Two histories are equal when their seqs are, whichever form holds them.
impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for History {}

impl History {
    /// The seqs, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (inline, inline_len, listed): ([u64; 3], usize, &[u64]) = match self {
            History::Inline { first, gaps } => {
                let second = first + u64::from(gaps[0]);
                let third = second + u64::from(gaps[1]);
                let len = 1 + gaps.iter().filter(|gap| **gap != 0).count();
                ([*first, second, third], len, &[])
            }
            History::Listed(seqs) => ([0; 3], 0, seqs.as_slice()),
        };
        inline
            .into_iter()
            .take(inline_len)
            .chain(listed.iter().copied())
    }

    /// The last seq.
    pub(super) fn last(&self) -> Option<u64> {
        match self {
            History::Inline { .. } => self.iter().last(),
            History::Listed(seqs) => seqs.last().copied(),
        }
    }

    /// Whether the history holds no seq.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, History::Listed(seqs) if seqs.is_empty())
    }

    /// Appends `seq`.
    pub(super) fn push(&mut self, seq: u64) {
        match self {
            History::Listed(seqs) if seqs.is_empty() => {
                *self = History::Inline {
                    first: seq,
                    gaps: [0, 0],
                }
            }
            History::Listed(seqs) => seqs.push(seq),
            History::Inline { .. } => {
                let last = self.last().expect("an inline history holds a seq");
                let gap = seq
                    .checked_sub(last)
                    .and_then(|gap| u32::try_from(gap).ok())
                    .filter(|gap| *gap != 0);
                if let (History::Inline { gaps, .. }, Some(gap)) = (&mut *self, gap) {
                    if let Some(free) = gaps.iter_mut().find(|slot| **slot == 0) {
                        *free = gap;
                        return;
                    }
                }
                let mut seqs = ThinVec::with_capacity(4);
                seqs.extend(self.iter());
                seqs.push(seq);
                *self = History::Listed(seqs);
            }
        }
    }
}

impl FromIterator<u64> for History {
    fn from_iter<I: IntoIterator<Item = u64>>(seqs: I) -> Self {
        let mut history = History::default();
        for seq in seqs {
            history.push(seq);
        }
        history
    }
}

impl Serialize for History {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqsVisitor;
        impl<'de> Visitor<'de> for SeqsVisitor {
            type Value = History;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of seqs")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<History, A::Error> {
                let mut history = History::default();
                while let Some(seq) = items.next_element::<u64>()? {
                    history.push(seq);
                }
                Ok(history)
            }
        }
        deserializer.deserialize_seq(SeqsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any sequence of seqs (repeats, gaps past 32 bits, going backwards, as a damaged
        /// snapshot could hold) reads back as pushed, and encodes as the array it is.
        #[test]
        fn a_history_holds_exactly_the_seqs_pushed(
            seqs in prop::collection::vec(
                prop_oneof![0u64..8, any::<u64>(), (1u64 << 32)..(1u64 << 33)],
                0..9,
            ),
        ) {
            let mut running = 0u64;
            let increasing: Vec<u64> = seqs
                .iter()
                .map(|step| {
                    running = running.saturating_add(*step);
                    running
                })
                .collect();
            for seqs in [seqs, increasing] {
                let history: History = seqs.iter().copied().collect();
                prop_assert_eq!(history.iter().collect::<Vec<_>>(), seqs.clone());
                prop_assert_eq!(history.last(), seqs.last().copied());
                prop_assert_eq!(history.is_empty(), seqs.is_empty());
                let bytes = rmp_serde::to_vec(&history).unwrap();
                prop_assert_eq!(&bytes, &rmp_serde::to_vec(&seqs).unwrap());
                let decoded: History = rmp_serde::from_slice(&bytes).unwrap();
                prop_assert_eq!(&decoded, &history);
            }
        }
    }

    #[test]
    fn three_close_seqs_stay_inline_and_a_fourth_moves_to_a_list() {
        let mut history: History = [7, 9, 4_000_000_000].into_iter().collect();
        assert!(matches!(history, History::Inline { .. }));
        history.push(4_000_000_001);
        assert!(matches!(history, History::Listed(_)));
        assert_eq!(
            history.iter().collect::<Vec<_>>(),
            [7, 9, 4_000_000_000, 4_000_000_001]
        );
        let far: History = [1, 1 + (1 << 32)].into_iter().collect();
        assert!(matches!(far, History::Listed(_)));
        assert_eq!(std::mem::size_of::<History>(), 24);
    }
}
