//! Freshness (binding rule check 7): whether checks may be answered from the ledger, read
//! off the watch streams' states and the writer's backlog, plus the counters `/metrics`
//! reports. Shared between the writer (which publishes) and whoever answers checks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::stream::{Phase, Stream, StreamState};

/// How long after its last error a failing stream that has shown nothing since counts as
/// recovered (a watch resumed on a quiet resource sends no event to say so): longer than
/// the longest wait between two errors of a stream still failing, the watcher's longest
/// retry delay doubled by jitter plus the longest a request takes to fail (the client's
/// connect or read timeout), so that a stream still retrying keeps reporting errors
/// within it.
const RECOVERED_AFTER: Duration = Duration::from_secs(60);

const _: () = {
    let retry = 2 * crate::live::MAX_RETRY_DELAY.as_secs();
    let connect = crate::live::CONNECT_TIMEOUT.as_secs();
    let read = crate::live::READ_TIMEOUT.as_secs();
    assert!(RECOVERED_AFTER.as_secs() > retry + connect);
    assert!(RECOVERED_AFTER.as_secs() > retry + read);
};

/// The default of [`crate::WatchOptions::max_backlog`]: a few group commits' worth of slack
/// on a slow disk, far less than the time a deleted pod takes to be replaced.
pub const DEFAULT_MAX_BACKLOG: Duration = Duration::from_secs(5);

/// What a stream is doing, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamCondition {
    /// A list is under way (or none has begun).
    Listing,
    /// The list is recorded and diffed; watching.
    Watching,
    /// The last request failed; the watcher is retrying with backoff.
    Failing,
}

/// One stream's status, as `/readyz` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// The resource, `plural.group/version`.
    pub resource: String,
    /// The namespace, or `None` for all.
    pub namespace: Option<String>,
    /// What it is doing.
    pub state: StreamCondition,
    /// Whether a list has completed since start.
    pub synced: bool,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last error seen.
    pub last_error: Option<String>,
    #[serde(skip)]
    failing_since_instant: Option<Instant>,
    #[serde(skip)]
    last_error_instant: Option<Instant>,
}

impl StreamStatus {
    /// The status of `stream` in `state`.
    pub(crate) fn of(stream: &Stream, state: &StreamState) -> StreamStatus {
        StreamStatus {
            resource: stream.resource.clone(),
            namespace: stream.namespace.clone(),
            state: match state.phase {
                Phase::Starting | Phase::Listing { .. } => StreamCondition::Listing,
                Phase::Watching => StreamCondition::Watching,
                Phase::Failing { .. } => StreamCondition::Failing,
            },
            synced: state.synced,
            failing_since: state.failing_since.map(|since| since.utc),
            last_error: state.last_error.as_ref().map(|e| e.message.clone()),
            failing_since_instant: state.failing_since.map(|since| since.instant),
            last_error_instant: state.last_error.as_ref().map(|e| e.at),
        }
    }

    /// Whether this stream lets checks be answered at `now`: it has listed, and it has not
    /// been failing for longer than `unready_after`, where a failure lasts until the stream
    /// shows it works (a watch event, or the end of the list it restarted with: until
    /// then the ledger lacks what the list will find deleted) or, for a stream showing
    /// nothing, until its last error is [`RECOVERED_AFTER`] old.
    fn serves_checks(&self, now: Instant, unready_after: Duration) -> bool {
        let still_failing = self.state == StreamCondition::Listing
            || self
                .last_error_instant
                .is_some_and(|at| now.saturating_duration_since(at) < RECOVERED_AFTER);
        let failing_too_long = still_failing
            && self
                .failing_since_instant
                .is_some_and(|since| now.saturating_duration_since(since) > unready_after);
        self.synced && !failing_too_long
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WatchCounters {
    /// Errors from watch or list requests (each followed by a retry).
    pub watch_errors: u64,
    /// Initial lists after the first (relists).
    pub relists: u64,
    /// Objects recorded as missing on resync.
    pub resync_deletions: u64,
    /// Objects that failed to normalize (reported, not recorded).
    pub rejected_objects: u64,
    /// Group commits (append + flush) done.
    pub flushes: u64,
    /// Time spent flushing, in microseconds.
    pub flush_micros: u64,
}

/// Observed events not yet durable, as `/readyz` and `/metrics` report them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backlog {
    /// Events in the group commit under way.
    pub events: usize,
    /// How long the oldest of them (or of those still queued behind it) has waited, or,
    /// when longer, how long the queue has stayed full (the events behind it then wait
    /// where they cannot be counted).
    pub age_seconds: f64,
    /// The bound past which checks answer `not_ready`.
    pub limit_seconds: f64,
}

/// Freshness (binding rule check 7): shared by the watcher and whoever answers checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Mutex<ReadinessInner>>,
}

#[derive(Debug)]
struct ReadinessInner {
    /// Each stream's status as last published by the writer, in stream order.
    streams: Vec<StreamStatus>,
    counters: WatchCounters,
    unready_after: Duration,
    /// Whether the watcher has registered its streams (discovery succeeded).
    started: bool,
    /// Since when observed events have waited to become durable, and how many are in the
    /// group commit under way (`None`: the writer has caught up).
    backlog: Option<(Instant, usize)>,
    /// Since when the event queue has stayed at least a batch deep after the reader found
    /// it full: events then wait unstamped in the connection and on the API server, so
    /// the queued events' age understates how far the ledger lags.
    saturated_since: Option<Instant>,
    max_backlog: Duration,
}

impl ReadinessInner {
    /// Since when the oldest change not yet durable has waited, as far as can be told.
    fn lagging_since(&self) -> Option<Instant> {
        match (self.backlog.map(|(since, _)| since), self.saturated_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether checks may answer at `now`.
    fn ready_at(&self, now: Instant) -> bool {
        let lagging = self
            .lagging_since()
            .is_some_and(|since| now.saturating_duration_since(since) > self.max_backlog);
        self.started
            && !lagging
            && self
                .streams
                .iter()
                .all(|stream| stream.serves_checks(now, self.unready_after))
    }
}

impl Readiness {
    /// Not ready until [`crate::run`] has registered and synced every stream.
    pub fn new(unready_after: Duration) -> Readiness {
        Readiness {
            inner: Arc::new(Mutex::new(ReadinessInner {
                streams: Vec::new(),
                counters: WatchCounters::default(),
                unready_after,
                started: false,
                backlog: None,
                saturated_since: None,
                max_backlog: DEFAULT_MAX_BACKLOG,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReadinessInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether checks may answer: every stream synced, none failing for longer than the
    /// grace period, and no observed event waiting longer than the backlog bound.
    pub fn is_ready(&self) -> bool {
        self.lock().ready_at(Instant::now())
    }

    /// The writer's backlog now: events observed and not yet durable, and their age.
    pub fn backlog(&self) -> Backlog {
        let inner = self.lock();
        let events = inner.backlog.map_or(0, |(_, events)| events);
        let age = inner.lagging_since().map_or(Duration::ZERO, |since| {
            Instant::now().saturating_duration_since(since)
        });
        Backlog {
            events,
            age_seconds: age.as_secs_f64(),
            limit_seconds: inner.max_backlog.as_secs_f64(),
        }
    }

    /// Every stream's status.
    pub fn streams(&self) -> Vec<StreamStatus> {
        self.lock().streams.clone()
    }

    /// The counters since start.
    pub fn counters(&self) -> WatchCounters {
        self.lock().counters
    }

    /// Registers the watcher's streams (in their initial states) and its backlog bound.
    pub(crate) fn register(&self, streams: Vec<StreamStatus>, max_backlog: Duration) {
        let mut inner = self.lock();
        inner.streams = streams;
        inner.max_backlog = max_backlog;
        inner.started = true;
    }

    /// Publishes the status of the stream at `index`.
    pub(crate) fn publish(&self, index: usize, status: StreamStatus) {
        if let Some(stream) = self.lock().streams.get_mut(index) {
            *stream = status;
        }
    }

    /// Records that `events` observed since `since` wait for a group commit (`None`: the
    /// writer has caught up, and the queue is empty).
    pub(crate) fn set_backlog(&self, backlog: Option<(Instant, usize)>) {
        let mut inner = self.lock();
        inner.backlog = backlog;
        if backlog.is_none() {
            inner.saturated_since = None;
        }
    }

    /// Records that the reader found the event queue full at `at` (the first time since
    /// the queue last ran shallow).
    pub(crate) fn queue_full(&self, at: Instant) {
        self.lock().saturated_since.get_or_insert(at);
    }

    /// Records that the queue is less than a batch deep: the writer keeps up again.
    pub(crate) fn queue_shallow(&self) {
        self.lock().saturated_since = None;
    }

    /// Updates the counters.
    pub(crate) fn count(&self, change: impl FnOnce(&mut WatchCounters)) {
        change(&mut self.lock().counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{step, Moment, ObservedObject, StreamInput};
    use schemas::{ObjectKind, WatchEventType};

    fn pods() -> Stream {
        Stream {
            kind: ObjectKind::Pod,
            resource: "pods/v1".into(),
            namespace: None,
        }
    }

    /// A stream that has listed once, at `at`.
    fn synced_at(at: Moment) -> StreamState {
        let stream = pods();
        let (state, _) = step(
            &stream,
            StreamState::default(),
            StreamInput::ListStarted { recorded: &[] },
            at,
        );
        step(&stream, state, StreamInput::ListDone { recorded: &[] }, at).0
    }

    fn readiness_of(states: &[StreamState], max_backlog: Duration) -> Readiness {
        let readiness = Readiness::new(Duration::from_secs(30));
        readiness.register(
            states
                .iter()
                .map(|state| StreamStatus::of(&pods(), state))
                .collect(),
            max_backlog,
        );
        readiness
    }

    #[test]
    fn a_backlog_older_than_its_bound_makes_the_ledger_not_ready() {
        let readiness = readiness_of(&[synced_at(Moment::now())], Duration::from_secs(5));
        assert!(readiness.is_ready());
        assert_eq!(readiness.backlog().events, 0);

        // Events waiting, but not for long: still ready.
        readiness.set_backlog(Some((Instant::now(), 12)));
        assert!(readiness.is_ready());
        assert_eq!(readiness.backlog().events, 12);

        // Events that have waited past the bound: checks must not answer from stale state.
        let long_ago = Instant::now() - Duration::from_secs(6);
        readiness.set_backlog(Some((long_ago, 3)));
        assert!(!readiness.is_ready());
        let backlog = readiness.backlog();
        assert_eq!(backlog.events, 3);
        assert!(backlog.age_seconds >= 6.0, "{backlog:?}");
        assert_eq!(backlog.limit_seconds, 5.0);

        // The writer caught up.
        readiness.set_backlog(None);
        assert!(readiness.is_ready());

        // A queue that has stayed full past the bound: the events behind it wait where
        // they are not counted, so a young batch does not make the ledger fresh.
        readiness.queue_full(long_ago);
        readiness.queue_full(Instant::now());
        readiness.set_backlog(Some((Instant::now(), 1024)));
        assert!(!readiness.is_ready());
        let backlog = readiness.backlog();
        assert_eq!(backlog.events, 1024);
        assert!(backlog.age_seconds >= 6.0, "{backlog:?}");
        // It ran shallow again: the batch's own age counts.
        readiness.queue_shallow();
        assert!(readiness.is_ready());
        // A writer with nothing queued has caught up with a full queue too.
        readiness.queue_full(long_ago);
        assert!(!readiness.is_ready());
        readiness.set_backlog(None);
        assert!(readiness.is_ready());
    }

    #[test]
    fn nothing_is_ready_before_the_streams_are_registered_and_listed() {
        let readiness = Readiness::new(Duration::from_secs(30));
        assert!(!readiness.is_ready(), "no streams registered yet");
        let readiness = readiness_of(
            &[synced_at(Moment::now()), StreamState::default()],
            DEFAULT_MAX_BACKLOG,
        );
        assert!(!readiness.is_ready(), "one stream has not listed");
        let statuses = readiness.streams();
        assert_eq!(statuses[1].state, StreamCondition::Listing);
        assert!(!statuses[1].synced);
        readiness.publish(1, StreamStatus::of(&pods(), &synced_at(Moment::now())));
        assert!(readiness.is_ready());
        assert_eq!(readiness.streams()[1].state, StreamCondition::Watching);
    }

    #[test]
    fn a_stream_failing_past_the_grace_period_is_not_ready_until_it_recovers_or_goes_quiet() {
        let start = Moment::now();
        let stream = pods();
        let state = synced_at(start);
        let (failing, _) = step(
            &stream,
            state,
            StreamInput::Failed {
                error: "connection refused".into(),
            },
            start,
        );
        let status = StreamStatus::of(&stream, &failing);
        assert_eq!(status.state, StreamCondition::Failing);
        assert_eq!(status.failing_since, Some(start.utc));
        assert_eq!(status.last_error.as_deref(), Some("connection refused"));
        let grace = Duration::from_secs(30);
        let at = |seconds: u64| start.instant + Duration::from_secs(seconds);
        // Within the grace period: still answering.
        assert!(status.serves_checks(at(10), grace));
        // Past it, with the last error recent: not ready.
        assert!(!status.serves_checks(at(31), grace));
        // An error long ago and none since: the stream counts as recovered.
        assert!(!status.serves_checks(at(59), grace));
        assert!(status.serves_checks(at(61), grace));

        // A retry that fails again at 35 s keeps it failing since the start.
        let later = Moment {
            instant: at(35),
            utc: start.utc,
        };
        let (still, _) = step(
            &stream,
            failing,
            StreamInput::Failed {
                error: "again".into(),
            },
            later,
        );
        let status = StreamStatus::of(&stream, &still);
        assert_eq!(status.failing_since, Some(start.utc));
        assert!(!status.serves_checks(at(60), grace));

        // A relist that starts (Init) is not a success; the completed list is.
        let (relisting, _) = step(
            &stream,
            still,
            StreamInput::ListStarted { recorded: &[] },
            later,
        );
        let status = StreamStatus::of(&stream, &relisting);
        assert_eq!(status.state, StreamCondition::Listing);
        assert!(!status.serves_checks(at(60), grace));
        // Nor are its pages: until the list ends the ledger lacks what it will find
        // deleted, however long ago the last error was.
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1", "resourceVersion": "7"}});
        let page = StreamInput::Object(ObservedObject::new(
            WatchEventType::Added,
            true,
            Some("pod-1".into()),
            Some("7".into()),
            &pod,
        ));
        let (relisting, _) = step(&stream, relisting, page, later);
        let status = StreamStatus::of(&stream, &relisting);
        assert_eq!(status.state, StreamCondition::Listing);
        assert_eq!(status.failing_since, Some(start.utc));
        assert!(!status.serves_checks(at(60), grace));
        assert!(!status.serves_checks(at(35) + 2 * RECOVERED_AFTER, grace));
        let (recovered, _) = step(
            &stream,
            relisting,
            StreamInput::ListDone { recorded: &[] },
            later,
        );
        let status = StreamStatus::of(&stream, &recovered);
        assert_eq!(status.state, StreamCondition::Watching);
        assert_eq!(status.failing_since, None);
        assert_eq!(status.last_error.as_deref(), Some("again"));
        assert!(status.serves_checks(at(60), grace));
    }

    #[test]
    fn the_report_shows_state_not_instants() {
        let status = StreamStatus::of(&pods(), &StreamState::default());
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"resource": "pods/v1", "namespace": null, "state": "listing",
                               "synced": false, "failing_since": null, "last_error": null})
        );
    }
}
