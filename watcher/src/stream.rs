//! One watch stream as an explicit state machine: [`step`] takes a stream's state and one
//! input (a kube-runtime watcher event, or a failed request) and returns the next state and
//! what to do about it, without doing any of it.
//!
//! kube-runtime drives each stream through `Init`, `InitApply`…, `InitDone` (a list, after
//! start and after every `410 Gone`) and then `Apply` / `Delete` (the watch). The writer in
//! [`crate::live`] feeds those events here one at a time and performs the outputs: appends
//! to the ledger, counters, log lines. Keeping the decisions pure means the whole lifecycle
//! (list, watch, failure, relist, deletes missed while blind) is unit-tested without a
//! cluster, and readiness is read off the states instead of being kept in step by hand.
//!
//! The ledger facts a decision needs (which objects of the stream it holds as live) come in
//! with the input that needs them, read by the writer from a published view.

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use schemas::{normalize, Change, ObjectChange, ObjectKind, WatchEventType, WatchGap};

/// Which objects one stream watches: fixed when the watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The kind of object it lists and watches.
    pub kind: ObjectKind,
    /// The resource, `plural.group/version` (`plural/version` for the core group), as
    /// `watch_gap` entries and `/readyz` name it.
    pub resource: String,
    /// The namespace, or `None` for all.
    pub namespace: Option<String>,
}

impl Stream {
    /// Whether a recorded object is one this stream would list: the diff after a list must
    /// only consider objects the list could have returned.
    fn holds(&self, object: &ObjectChange) -> bool {
        object.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|namespace| *namespace == object.namespace)
    }
}

/// A point in time, on the monotonic clock (for durations) and the wall clock (for reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// For measuring how long a stream has been failing.
    pub instant: Instant,
    /// For telling operators since when.
    pub utc: DateTime<Utc>,
}

impl Moment {
    /// Now.
    pub fn now() -> Moment {
        Moment {
            instant: Instant::now(),
            utc: Utc::now(),
        }
    }
}

/// Where a stream is in kube-runtime's list-then-watch cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Phase {
    /// Registered; no list has begun.
    #[default]
    Starting,
    /// A list is under way: the uids it has returned so far, to find what it lacks.
    Listing {
        /// Uids of the objects listed so far.
        listed: HashSet<String>,
    },
    /// The list is recorded and diffed; following the watch.
    Watching,
    /// The last request failed; kube-runtime retries it with backoff.
    Failing {
        /// The uids of a list the failure interrupted, kept in case it resumes (a list
        /// that starts over begins with `Init` and an empty set).
        interrupted_list: Option<HashSet<String>>,
    },
}

impl Phase {
    /// The set of uids listed so far, while a list is under way (or interrupted).
    fn listed_mut(&mut self) -> Option<&mut HashSet<String>> {
        match self {
            Phase::Listing { listed }
            | Phase::Failing {
                interrupted_list: Some(listed),
            } => Some(listed),
            Phase::Starting | Phase::Watching | Phase::Failing { .. } => None,
        }
    }
}

/// The last error a stream saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// What failed.
    pub message: String,
    /// When.
    pub at: Instant,
}

/// Everything the watcher knows about one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Where it is in the list-then-watch cycle.
    pub phase: Phase,
    /// Whether a list has completed since start. A relist does not reset it: objects the
    /// ledger holds stay answerable while a relist fills in what the gap missed.
    pub synced: bool,
    /// The newest resourceVersion seen, for the `watch_gap` entry of the next list.
    pub last_resource_version: Option<String>,
    /// When the current run of failures began; it ends with the next object or completed
    /// list, not with a retried `Init` (a list that keeps failing keeps failing).
    pub failing_since: Option<Moment>,
    /// The last error seen, kept after recovery so `/readyz` can show it.
    pub last_error: Option<LastError>,
}

/// One object of a watch event, read once: its identity for the list diff and the gap
/// record, and what the normalizer made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedObject {
    /// Whether it came from a list (`InitApply`) rather than the watch.
    pub initial: bool,
    /// `metadata.uid`, even for objects the ledger does not record.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`, likewise.
    pub resource_version: Option<String>,
    /// The change to record, `None` for objects recorded by design as nothing, or why the
    /// object was rejected.
    pub normalized: Result<Option<ObjectChange>, String>,
}

impl ObservedObject {
    /// Reads an object seen in a `event`, given its metadata (already typed, so the JSON
    /// is read by the normalizer alone).
    pub fn new(
        event: WatchEventType,
        initial: bool,
        uid: Option<String>,
        resource_version: Option<String>,
        object: &serde_json::Value,
    ) -> ObservedObject {
        ObservedObject {
            initial,
            uid,
            resource_version,
            normalized: normalize(event, object).map_err(|error| error.to_string()),
        }
    }
}

/// What happened to a stream.
#[derive(Debug)]
pub enum StreamInput<'a> {
    /// kube-runtime's `Init`: a list begins. `recorded`: the objects the ledger holds as
    /// live (any stream's; [`step`] picks this stream's), to tell a restart over a
    /// non-empty ledger from a first start.
    ListStarted {
        /// The ledger's live objects.
        recorded: &'a [&'a ObjectChange],
    },
    /// `InitApply`, `Apply` or `Delete`.
    Object(ObservedObject),
    /// kube-runtime's `InitDone`: the list is complete. `recorded`: the ledger's live
    /// objects after every listed one is durable, to find those the list lacks.
    ListDone {
        /// The ledger's live objects.
        recorded: &'a [&'a ObjectChange],
    },
    /// A list or watch request failed; kube-runtime retries it.
    Failed {
        /// What failed.
        error: String,
    },
}

/// What the writer must do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutput {
    /// Append this change (an observed object, a watch gap, a missing-on-resync delete).
    Append(Change),
    /// An object failed to normalize: report and count it, never record it.
    Rejected {
        /// Why.
        error: String,
    },
    /// A request failed: report and count it.
    WatchFailed {
        /// What failed.
        error: String,
    },
    /// A list completed.
    Listed {
        /// Whether it followed an earlier list since start (a relist).
        relist: bool,
        /// How many objects it recorded as missing on resync.
        missing: u64,
    },
}

/// The next state of `stream` after `input` at `now`, and what to do about it. Pure: the
/// caller appends, counts and logs the outputs in order.
pub fn step(
    stream: &Stream,
    mut state: StreamState,
    input: StreamInput<'_>,
    now: Moment,
) -> (StreamState, Vec<StreamOutput>) {
    let mut outputs = Vec::new();
    match input {
        StreamInput::ListStarted { recorded } => {
            if let Some(gap) = gap_before_list(stream, &state, recorded) {
                outputs.push(StreamOutput::Append(Change::WatchGap(gap)));
            }
            state.phase = Phase::Listing {
                listed: HashSet::new(),
            };
        }
        StreamInput::Object(object) => {
            if let (true, Some(uid), Some(listed)) =
                (object.initial, object.uid, state.phase.listed_mut())
            {
                listed.insert(uid);
            }
            if let Some(version) = object.resource_version {
                state.last_resource_version = Some(version);
            }
            match object.normalized {
                Ok(Some(change)) => outputs.push(StreamOutput::Append(Change::Object(change))),
                Ok(None) => {}
                Err(error) => outputs.push(StreamOutput::Rejected { error }),
            }
            recover(&mut state);
        }
        StreamInput::ListDone { recorded } => {
            // Without a list under way (kube-runtime always sends `Init` first) the list
            // is taken as empty, as it always was.
            let listed = match std::mem::take(&mut state.phase) {
                Phase::Listing { listed }
                | Phase::Failing {
                    interrupted_list: Some(listed),
                } => listed,
                Phase::Starting | Phase::Watching | Phase::Failing { .. } => HashSet::new(),
            };
            let missing: Vec<StreamOutput> = recorded
                .iter()
                .filter(|object| stream.holds(object) && !listed.contains(&object.uid))
                .map(|object| {
                    StreamOutput::Append(Change::Object(
                        (*object).clone().into_missing_on_resync(),
                    ))
                })
                .collect();
            let listed = StreamOutput::Listed {
                relist: state.synced,
                missing: missing.len() as u64,
            };
            outputs.extend(missing);
            outputs.push(listed);
            state.synced = true;
            state.phase = Phase::Watching;
            recover(&mut state);
        }
        StreamInput::Failed { error } => {
            state.phase = match std::mem::take(&mut state.phase) {
                Phase::Listing { listed } => Phase::Failing {
                    interrupted_list: Some(listed),
                },
                failing @ Phase::Failing { .. } => failing,
                Phase::Starting | Phase::Watching => Phase::Failing {
                    interrupted_list: None,
                },
            };
            state.failing_since.get_or_insert(now);
            state.last_error = Some(LastError {
                message: error.clone(),
                at: now.instant,
            });
            outputs.push(StreamOutput::WatchFailed { error });
        }
    }
    (state, outputs)
}

/// A request succeeded: the run of failures is over.
fn recover(state: &mut StreamState) {
    if let Phase::Failing { interrupted_list } = &mut state.phase {
        state.phase = match interrupted_list.take() {
            Some(listed) => Phase::Listing { listed },
            None if state.synced => Phase::Watching,
            None => Phase::Starting,
        };
    }
    state.failing_since = None;
}

/// A list after the first one since start, or a first list over a ledger that already
/// holds objects of this stream, follows a window the ledger did not see.
fn gap_before_list(
    stream: &Stream,
    state: &StreamState,
    recorded: &[&ObjectChange],
) -> Option<WatchGap> {
    let relist = state.synced;
    let last = state.last_resource_version.clone().or_else(|| {
        recorded
            .iter()
            .filter(|object| stream.holds(object))
            .filter_map(|object| object.resource_version.parse::<u64>().ok())
            .max()
            .map(|version| version.to_string())
    });
    if !relist && last.is_none() {
        return None;
    }
    Some(WatchGap {
        resource: stream.resource.clone(),
        last_resource_version: last,
        reason: if relist { "relist" } else { "restart" }.into(),
    })
}
