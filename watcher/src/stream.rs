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
    /// ledger holds stay answerable while a relist fills in what the gap missed, as long
    /// as the failure before it is within the grace period (`failing_since`).
    pub synced: bool,
    /// Whether the ledger held entries when this process began watching: its first list
    /// then follows a window no watcher of this process saw, whatever the ledger still
    /// holds live of this stream.
    pub resumes_a_ledger: bool,
    /// The newest resourceVersion seen, for the `watch_gap` entry of the next list.
    pub last_resource_version: Option<String>,
    /// When the current run of failures began; it ends with the next watch event or
    /// completed list, not with a retried `Init` or a page of the list (a list that keeps
    /// failing keeps failing, and one under way has not yet found what was deleted).
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
    /// Whether the event deleted it.
    pub deleted: bool,
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
            deleted: event == WatchEventType::Deleted,
            normalized: normalize(event, object).map_err(|error| error.to_string()),
        }
    }
}

/// What happened to a stream.
// Objects are nearly every event; boxing them would cost an allocation per event to save
// space on the rare list boundary or failure (the same trade as `schemas::Change`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StreamInput<'a> {
    /// kube-runtime's `Init`: a list begins. `recorded`: the objects the ledger holds as
    /// live (any stream's; [`step`] picks this stream's), for the newest resourceVersion
    /// a restart's gap names.
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
// Objects are nearly every event; boxing them would cost an allocation per event to save
// space on the rare list boundary or failure (the same trade as `schemas::Change`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutput {
    /// Append this change (an observed object, a watch gap, a missing-on-resync delete).
    Append(Change),
    /// An object failed to normalize: report and count it, never record it.
    Rejected {
        /// Why.
        error: String,
        /// For a deletion: the uid and resourceVersion deleted. The object is gone whatever
        /// its last state held, and a record the ledger holds of it must not stay live.
        deleted: Option<(String, Option<String>)>,
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
            // A deletion keeps its identity for a rejection (a list's object never deletes).
            let deleted = match (object.deleted, &object.uid) {
                (true, Some(uid)) => Some((uid.clone(), object.resource_version.clone())),
                _ => None,
            };
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
                Err(error) => outputs.push(StreamOutput::Rejected { error, deleted }),
            }
            if object.initial {
                // A page of a list is progress, not recovery: until the list ends the
                // ledger still lacks the deletions it will find.
                resume_list(&mut state);
            } else {
                recover(&mut state);
            }
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
                .filter(|object| stream.holds(object) && !listed.contains(object.uid.as_str()))
                .map(|object| {
                    StreamOutput::Append(Change::Object((*object).clone().into_missing_on_resync()))
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

/// A list interrupted by a failure goes on: listing again, still failing since the
/// failure began (see [`recover`]).
fn resume_list(state: &mut StreamState) {
    if let Phase::Failing {
        interrupted_list: Some(listed),
    } = &mut state.phase
    {
        state.phase = Phase::Listing {
            listed: std::mem::take(listed),
        };
    }
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
/// holds entries (objects of this stream live or not), follows a window the ledger did
/// not see.
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
    if !relist && last.is_none() && !state.resumes_a_ledger {
        return None;
    }
    Some(WatchGap {
        resource: stream.resource.clone(),
        last_resource_version: last,
        reason: if relist { "relist" } else { "restart" }.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::ChangeKind;
    use serde_json::{json, Value};
    use std::time::Duration;

    fn sandboxes(namespace: Option<&str>) -> Stream {
        Stream {
            kind: ObjectKind::Sandbox,
            resource: "sandboxes.agents.x-k8s.io/v1beta1".into(),
            namespace: namespace.map(str::to_string),
        }
    }

    fn sandbox_json(namespace: &str, name: &str, uid: &str, version: u64) -> Value {
        json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
               "metadata": {"name": name, "namespace": namespace, "uid": uid,
                            "resourceVersion": version.to_string()}})
    }

    /// An object as the kube-runtime adapter reads it: identity from the metadata, the
    /// change from the normalizer.
    fn seen(event: WatchEventType, initial: bool, object: &Value) -> StreamInput<'static> {
        let meta = &object["metadata"];
        let text = |key: &str| meta[key].as_str().map(str::to_string);
        StreamInput::Object(ObservedObject::new(
            event,
            initial,
            text("uid"),
            text("resourceVersion"),
            object,
        ))
    }

    fn listed(object: &Value) -> StreamInput<'static> {
        seen(WatchEventType::Added, true, object)
    }

    fn recorded(object: &Value) -> ObjectChange {
        normalize(WatchEventType::Added, object).unwrap().unwrap()
    }

    /// Feeds `inputs` in order at `now`, returning the final state and every output.
    fn run<'a>(
        stream: &Stream,
        state: StreamState,
        inputs: impl IntoIterator<Item = StreamInput<'a>>,
        now: Moment,
    ) -> (StreamState, Vec<StreamOutput>) {
        let mut outputs = Vec::new();
        let state = inputs.into_iter().fold(state, |state, input| {
            let (state, out) = step(stream, state, input, now);
            outputs.extend(out);
            state
        });
        (state, outputs)
    }

    fn appended(outputs: &[StreamOutput]) -> Vec<&Change> {
        outputs
            .iter()
            .filter_map(|o| match o {
                StreamOutput::Append(change) => Some(change),
                _ => None,
            })
            .collect()
    }

    fn object_changes(outputs: &[StreamOutput]) -> Vec<(String, ChangeKind)> {
        appended(outputs)
            .into_iter()
            .filter_map(|c| match c {
                Change::Object(o) => Some((o.uid.to_string(), o.change)),
                _ => None,
            })
            .collect()
    }

    fn gaps(outputs: &[StreamOutput]) -> Vec<&WatchGap> {
        appended(outputs)
            .into_iter()
            .filter_map(|c| match c {
                Change::WatchGap(gap) => Some(gap),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_first_list_over_an_empty_ledger_records_the_objects_and_syncs() {
        let stream = sandboxes(None);
        let (a, b) = (
            sandbox_json("ns", "a", "sb-a", 10),
            sandbox_json("ns", "b", "sb-b", 11),
        );
        let now = Moment::now();
        let (state, outputs) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                listed(&a),
                listed(&b),
            ],
            now,
        );
        assert!(gaps(&outputs).is_empty(), "nothing was missed: {outputs:?}");
        assert_eq!(
            object_changes(&outputs),
            [
                ("sb-a".into(), ChangeKind::Created),
                ("sb-b".into(), ChangeKind::Created)
            ]
        );
        assert_eq!(
            state.phase,
            Phase::Listing {
                listed: HashSet::from(["sb-a".into(), "sb-b".into()])
            }
        );
        assert!(!state.synced, "synced only once the list is complete");

        // By InitDone, what was listed is in the ledger: nothing is missing.
        let in_ledger = [recorded(&a), recorded(&b)];
        let in_ledger: Vec<&ObjectChange> = in_ledger.iter().collect();
        let (state, outputs) = step(
            &stream,
            state,
            StreamInput::ListDone {
                recorded: &in_ledger,
            },
            now,
        );
        assert_eq!(
            outputs,
            [StreamOutput::Listed {
                relist: false,
                missing: 0
            }]
        );
        assert!(state.synced);
        assert_eq!(state.phase, Phase::Watching);
        assert_eq!(state.last_resource_version.as_deref(), Some("11"));
        assert_eq!(state.failing_since, None);
    }

    #[test]
    fn watch_events_are_recorded_as_they_come_and_advance_the_version() {
        let stream = sandboxes(None);
        let now = Moment::now();
        let (state, _) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                StreamInput::ListDone { recorded: &[] },
            ],
            now,
        );
        let (state, outputs) = run(
            &stream,
            state,
            [
                seen(
                    WatchEventType::Modified,
                    false,
                    &sandbox_json("ns", "a", "sb-a", 20),
                ),
                seen(
                    WatchEventType::Deleted,
                    false,
                    &sandbox_json("ns", "a", "sb-a", 21),
                ),
            ],
            now,
        );
        assert_eq!(
            object_changes(&outputs),
            [
                ("sb-a".into(), ChangeKind::Updated),
                ("sb-a".into(), ChangeKind::Deleted)
            ]
        );
        assert_eq!(state.phase, Phase::Watching);
        assert_eq!(state.last_resource_version.as_deref(), Some("21"));
    }

    #[test]
    fn a_restart_over_a_ledger_holding_nothing_live_of_the_stream_is_a_gap_too() {
        let stream = sandboxes(Some("ns"));
        let resumed = StreamState {
            resumes_a_ledger: true,
            ..StreamState::default()
        };
        // Every Sandbox of the stream was deleted before the restart: what happened while
        // nobody watched is still a window the ledger did not see.
        let (_, outputs) = step(
            &stream,
            resumed,
            StreamInput::ListStarted { recorded: &[] },
            Moment::now(),
        );
        assert_eq!(
            gaps(&outputs),
            [&WatchGap {
                resource: stream.resource.clone(),
                last_resource_version: None,
                reason: "restart".into(),
            }]
        );
    }

    #[test]
    fn a_restart_over_a_ledger_holding_the_streams_objects_is_a_gap() {
        let stream = sandboxes(Some("ns"));
        // Of what the ledger holds, only this stream's objects count: not another kind,
        // not another namespace.
        let mine = [
            recorded(&sandbox_json("ns", "a", "sb-a", 7)),
            recorded(&sandbox_json("ns", "b", "sb-b", 12)),
        ];
        let elsewhere = recorded(&sandbox_json("other", "c", "sb-c", 99));
        let pod = normalize(
            WatchEventType::Added,
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1", "resourceVersion": "50"}}),
        )
        .unwrap()
        .unwrap();
        let everything = vec![&mine[0], &mine[1], &elsewhere, &pod];
        let (state, outputs) = step(
            &stream,
            StreamState::default(),
            StreamInput::ListStarted {
                recorded: &everything,
            },
            Moment::now(),
        );
        assert_eq!(
            gaps(&outputs),
            [&WatchGap {
                resource: stream.resource.clone(),
                last_resource_version: Some("12".into()),
                reason: "restart".into(),
            }]
        );
        // The list finds `a` only: `b` was deleted while nobody watched. Objects outside
        // the stream are not this list's to judge.
        let (state, outputs) = run(
            &stream,
            state,
            [
                listed(&sandbox_json("ns", "a", "sb-a", 7)),
                StreamInput::ListDone {
                    recorded: &everything,
                },
            ],
            Moment::now(),
        );
        assert_eq!(
            object_changes(&outputs),
            [
                ("sb-a".into(), ChangeKind::Created),
                ("sb-b".into(), ChangeKind::MissingOnResync)
            ]
        );
        assert_eq!(
            outputs.last(),
            Some(&StreamOutput::Listed {
                relist: false,
                missing: 1
            })
        );
        assert!(state.synced);
    }

    #[test]
    fn a_relist_after_410_records_a_gap_and_the_deletes_missed_meanwhile() {
        let stream = sandboxes(None);
        let (a, b) = (
            sandbox_json("ns", "a", "sb-a", 3),
            sandbox_json("ns", "b", "sb-b", 4),
        );
        let in_ledger = [recorded(&a), recorded(&b)];
        let in_ledger: Vec<&ObjectChange> = in_ledger.iter().collect();
        let now = Moment::now();
        let (state, _) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                listed(&a),
                listed(&b),
                StreamInput::ListDone {
                    recorded: &in_ledger,
                },
                seen(
                    WatchEventType::Modified,
                    false,
                    &sandbox_json("ns", "b", "sb-b", 8),
                ),
            ],
            now,
        );
        // The watch expires (410 Gone); kube-runtime reports it and lists again.
        let (state, outputs) = run(
            &stream,
            state,
            [
                StreamInput::Failed {
                    error: "WatchFailed: 410 Gone".into(),
                },
                StreamInput::ListStarted {
                    recorded: &in_ledger,
                },
            ],
            now,
        );
        assert_eq!(
            gaps(&outputs),
            [&WatchGap {
                resource: stream.resource.clone(),
                // The last version this stream saw, not the ledger's.
                last_resource_version: Some("8".into()),
                reason: "relist".into(),
            }]
        );
        assert!(state.synced, "a relist keeps serving what the ledger holds");
        // `b` was deleted during the gap: the relist lacks it.
        let (state, outputs) = run(
            &stream,
            state,
            [
                listed(&sandbox_json("ns", "a", "sb-a", 3)),
                StreamInput::ListDone {
                    recorded: &in_ledger,
                },
            ],
            now,
        );
        assert_eq!(
            object_changes(&outputs),
            [
                ("sb-a".into(), ChangeKind::Created),
                ("sb-b".into(), ChangeKind::MissingOnResync)
            ]
        );
        let Some(Change::Object(missing)) = appended(&outputs).last().copied() else {
            panic!("{outputs:?}");
        };
        // The missing record is the ledger's last observation, marked as missing.
        assert_eq!(
            *missing,
            in_ledger[1].clone().into_missing_on_resync(),
            "{missing:?}"
        );
        assert_eq!(
            outputs.last(),
            Some(&StreamOutput::Listed {
                relist: true,
                missing: 1
            })
        );
        assert_eq!(state.phase, Phase::Watching);
    }

    #[test]
    fn a_failure_makes_the_stream_failing_until_a_request_succeeds() {
        let stream = sandboxes(None);
        let first = Moment::now();
        let later = Moment {
            instant: first.instant + Duration::from_secs(5),
            utc: first.utc + chrono::Duration::seconds(5),
        };
        let (state, _) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                StreamInput::ListDone { recorded: &[] },
            ],
            first,
        );
        let (state, outputs) = step(
            &stream,
            state,
            StreamInput::Failed {
                error: "connection reset".into(),
            },
            first,
        );
        assert_eq!(
            outputs,
            [StreamOutput::WatchFailed {
                error: "connection reset".into()
            }]
        );
        assert_eq!(
            state.phase,
            Phase::Failing {
                interrupted_list: None
            }
        );
        assert_eq!(state.failing_since, Some(first));
        // Retries that fail again do not end the run of failures.
        let (state, _) = run(
            &stream,
            state,
            [
                StreamInput::Failed {
                    error: "connection refused".into(),
                },
                StreamInput::Failed {
                    error: "still refused".into(),
                },
            ],
            later,
        );
        assert_eq!(state.failing_since, Some(first));
        assert_eq!(
            state.last_error,
            Some(LastError {
                message: "still refused".into(),
                at: later.instant
            })
        );
        assert!(state.synced);
        // An object seen is a request that succeeded.
        let (state, _) = step(
            &stream,
            state,
            seen(
                WatchEventType::Modified,
                false,
                &sandbox_json("ns", "a", "sb-a", 30),
            ),
            later,
        );
        assert_eq!(state.failing_since, None);
        assert_eq!(state.phase, Phase::Watching);
        assert_eq!(
            state.last_error.as_ref().map(|e| e.message.as_str()),
            Some("still refused"),
            "the last error stays visible after recovery"
        );

        // A list that begins is not a success either (kube-runtime sends `Init` before
        // each attempt); the completed list is.
        let (state, _) = run(
            &stream,
            state,
            [
                StreamInput::Failed {
                    error: "410 Gone".into(),
                },
                StreamInput::ListStarted { recorded: &[] },
            ],
            later,
        );
        assert_eq!(state.failing_since, Some(later));
        assert_eq!(
            state.phase,
            Phase::Listing {
                listed: HashSet::new()
            }
        );
        let (state, _) = step(
            &stream,
            state,
            StreamInput::ListDone { recorded: &[] },
            later,
        );
        assert_eq!(state.failing_since, None);
        assert_eq!(state.phase, Phase::Watching);
    }

    #[test]
    fn a_list_interrupted_by_an_error_keeps_what_it_listed_if_it_resumes() {
        let stream = sandboxes(None);
        let (a, b) = (
            sandbox_json("ns", "a", "sb-a", 1),
            sandbox_json("ns", "b", "sb-b", 2),
        );
        let in_ledger = [recorded(&a), recorded(&b)];
        let in_ledger: Vec<&ObjectChange> = in_ledger.iter().collect();
        let (state, outputs) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                listed(&a),
                StreamInput::Failed {
                    error: "timeout".into(),
                },
                listed(&b),
                StreamInput::ListDone {
                    recorded: &in_ledger,
                },
            ],
            Moment::now(),
        );
        assert_eq!(
            outputs.last(),
            Some(&StreamOutput::Listed {
                relist: false,
                missing: 0
            }),
            "{outputs:?}"
        );
        assert!(state.synced);
        assert_eq!(state.failing_since, None);
    }

    #[test]
    fn an_object_that_fails_to_normalize_is_rejected_but_still_counts_as_listed() {
        let stream = sandboxes(None);
        let good = sandbox_json("ns", "a", "sb-a", 5);
        let in_ledger = [recorded(&good)];
        let in_ledger: Vec<&ObjectChange> = in_ledger.iter().collect();
        // Same uid, now with a name no API server would store: rejected, not recorded,
        // and not taken for deleted either.
        let bad = sandbox_json("ns", &"x".repeat(300), "sb-a", 6);
        let (state, outputs) = run(
            &stream,
            StreamState::default(),
            [
                StreamInput::ListStarted { recorded: &[] },
                listed(&bad),
                StreamInput::ListDone {
                    recorded: &in_ledger,
                },
            ],
            Moment::now(),
        );
        let [StreamOutput::Rejected { error, .. }, StreamOutput::Listed {
            relist: false,
            missing: 0,
        }] = &outputs[..]
        else {
            panic!("{outputs:?}");
        };
        assert!(error.contains("metadata.name"), "{error}");
        assert_eq!(state.last_resource_version.as_deref(), Some("6"));
    }

    #[test]
    fn objects_of_kinds_the_ledger_does_not_record_append_nothing() {
        let stream = sandboxes(None);
        let pool = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                          "kind": "SandboxWarmPool",
                          "metadata": {"name": "p", "namespace": "ns", "uid": "pool-1",
                                       "resourceVersion": "9"}});
        let (state, outputs) = run(
            &stream,
            StreamState::default(),
            [StreamInput::ListStarted { recorded: &[] }, listed(&pool)],
            Moment::now(),
        );
        assert!(outputs.is_empty(), "{outputs:?}");
        assert_eq!(
            state.phase,
            Phase::Listing {
                listed: HashSet::from(["pool-1".into()])
            }
        );
    }

    #[test]
    fn duplicated_and_stale_events_are_passed_on_for_the_ledger_to_refuse() {
        // Only the ledger knows what it recorded: the stream hands every event on, in
        // order, and the writer's test shows the ledger appending each version once.
        let stream = sandboxes(None);
        let newer = sandbox_json("ns", "a", "sb-a", 9);
        let older = sandbox_json("ns", "a", "sb-a", 8);
        let (state, outputs) = run(
            &stream,
            StreamState::default(),
            [
                seen(WatchEventType::Modified, false, &newer),
                seen(WatchEventType::Modified, false, &newer),
                seen(WatchEventType::Modified, false, &older),
            ],
            Moment::now(),
        );
        let versions: Vec<&str> = appended(&outputs)
            .into_iter()
            .filter_map(|c| match c {
                Change::Object(o) => Some(o.resource_version.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(versions, ["9", "9", "8"]);
        // The gap of a later relist names the last version delivered.
        assert_eq!(state.last_resource_version.as_deref(), Some("8"));
    }
}
