//! The cached answers of bound pods, and when `apply` keeps them.
//!
//! An allowed check is one lookup in a map of answers that `apply` keeps current. Building
//! that map for a decoded snapshot (one answer per bound pod: 200k at cluster scale) took
//! a quarter of an open, so an open no longer waits for it. Until the map is built the
//! answers are *pending*: a reader computes the one answer it needs from the pod's
//! records, which is what building the map does for every pod. A thread the open starts
//! builds the map for exactly the state the open published; the writer waits for it
//! before its first change, and from then on keeps the map current.
//!
//! A new projection keeps its answers from the start; a decoded one's are pending, and so
//! are those of `Projection::unanswered` (verification and other replays that need none).
//! A pending cell belongs to one state. It is filled at most once, and a projection whose
//! cell is filled or shared (with a published view, or with the thread building it)
//! settles to a kept map before a change; one whose cell nobody else holds (a replay, the
//! open's walk of the tail) changes without keeping answers at all, and builds them once,
//! at the end, if ever.

use std::sync::{Arc, OnceLock};

use schemas::Text;

use super::{ActiveView, HashMap};

/// Every bound pod's answer, by pod uid.
pub(super) type AnswerMap = HashMap<Text, ActiveView>;

/// The answers of bound pods: kept current, or pending for the state they were made at.
#[derive(Debug, Clone)]
pub(super) enum Answers {
    /// Kept current by every change.
    Kept(AnswerMap),
    /// Not kept: filled in at most once, with the answers of the state the projection has
    /// then (a change settles a built or shared cell first, so no cell outlives its
    /// state).
    Pending(Arc<OnceLock<AnswerMap>>),
}

/// A new projection keeps its answers from its first change.
impl Default for Answers {
    fn default() -> Answers {
        Answers::Kept(AnswerMap::default())
    }
}

impl Answers {
    /// Answers not built yet: a decoded projection's.
    pub(super) fn pending() -> Answers {
        Answers::Pending(Arc::default())
    }

    /// The map of answers, when there is one: kept, or pending and already built.
    pub(super) fn map(&self) -> Option<&AnswerMap> {
        match self {
            Answers::Kept(map) => Some(map),
            Answers::Pending(cell) => cell.get(),
        }
    }

    /// The kept map a change updates; `None` while no one but this projection needs
    /// answers (the change then leaves them alone).
    pub(super) fn kept_mut(&mut self) -> Option<&mut AnswerMap> {
        match self {
            Answers::Kept(map) => Some(map),
            Answers::Pending(_) => None,
        }
    }

    /// The cell a change must settle first: pending and already built, or shared with a
    /// published view or the thread building it (whose answers are for the state before
    /// the change). `None` when the answers are kept, or pending in a cell no one else
    /// holds.
    pub(super) fn to_settle(&self) -> Option<Arc<OnceLock<AnswerMap>>> {
        match self {
            Answers::Pending(cell) if cell.get().is_some() || Arc::strong_count(cell) > 1 => {
                Some(Arc::clone(cell))
            }
            _ => None,
        }
    }

    /// The pending cell no one has filled yet, for a thread to build it.
    pub(super) fn unbuilt(&self) -> Option<Arc<OnceLock<AnswerMap>>> {
        match self {
            Answers::Pending(cell) if cell.get().is_none() => Some(Arc::clone(cell)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_settled_only_when_built_or_shared() {
        let answers = Answers::pending();
        assert!(answers.to_settle().is_none(), "a cell no one else holds");
        let shared = answers.unbuilt().expect("not built yet");
        assert!(answers.to_settle().is_some(), "a cell a thread holds");
        drop(shared);
        assert!(answers.to_settle().is_none());
        let Answers::Pending(cell) = &answers else {
            unreachable!()
        };
        cell.set(AnswerMap::default()).expect("empty");
        assert!(answers.to_settle().is_some(), "a built cell");
        assert!(answers.unbuilt().is_none());
        assert!(answers.map().is_some());
        let mut kept = Answers::Kept(AnswerMap::default());
        assert!(kept.to_settle().is_none() && kept.kept_mut().is_some());
    }
}
