//! The live watcher: one kube-runtime watcher per resource and namespace, merged into a
//! single writer that turns events into group-committed ledger appends.
//!
//! The writer sees every stream's `Init` / `InitApply` / `InitDone` and `Apply` / `Delete`
//! events in arrival order, steps that stream's state machine (`stream::step`)
//! and performs what it asks for: appends (observed objects, `watch_gap` entries before
//! every list that follows a blind window, `missing_on_resync` deletes for objects the
//! ledger holds but a list lacks), counters and log lines. A batch of events is appended
//! and flushed before the next is read, and the streams' states are published to
//! [`Readiness`] only after that, so nothing is visible, and no stream counts as synced,
//! before what it saw is durable.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{discovery, Client};
use schemas::observed::{EXTENSIONS_GROUP, SANDBOX_GROUP};
use schemas::{Change, ObjectChange, ObjectKind, WatchEventType};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::readiness::{Readiness, StreamStatus, DEFAULT_MAX_BACKLOG};
use crate::stream::{step, Moment, ObservedObject, Stream, StreamInput, StreamOutput, StreamState};
use crate::WatcherError;

pub use ledger::SharedLedger;

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Answer `not_ready` once a watch has been failing for longer than this.
    pub unready_after: Duration,
    /// Most events appended in one group commit.
    pub max_batch: usize,
    /// Answer `not_ready` while observed events have waited longer than this to become
    /// durable: a ledger that lags must not answer `allow` from stale state.
    pub max_backlog: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            namespaces: Vec::new(),
            unready_after: Duration::from_secs(30),
            max_batch: 1024,
            max_backlog: DEFAULT_MAX_BACKLOG,
        }
    }
}

/// An event of one stream, its object (if any) already read: kube-runtime's `Init`,
/// `InitApply` / `Apply` / `Delete`, `InitDone`, or an error it retries after.
// Objects are nearly every event; boxing them would cost an allocation per event to save
// space on the rare list boundary or failure (the same trade as `schemas::Change`).
#[allow(clippy::large_enum_variant)]
enum Observed {
    Init,
    Object(ObservedObject),
    InitDone,
    Error(String),
}

/// The versions of the agent-sandbox resources the cluster serves, chosen by discovery.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// `Sandbox`, in the preferred served version.
    pub sandbox: ApiResource,
    /// `SandboxClaim`, in the preferred served version.
    pub claim: ApiResource,
}

/// Asks the cluster which versions of the agent-sandbox groups it serves; prefers
/// `v1beta1`, falls back to `v1alpha1`.
pub async fn discover(client: &Client) -> Result<Discovered, WatcherError> {
    let sandbox = discover_kind(client, SANDBOX_GROUP, "Sandbox").await?;
    let claim = discover_kind(client, EXTENSIONS_GROUP, "SandboxClaim").await?;
    tracing::info!(
        sandbox = %sandbox.api_version,
        claim = %claim.api_version,
        "agent-sandbox versions chosen by discovery"
    );
    Ok(Discovered { sandbox, claim })
}

async fn discover_kind(
    client: &Client,
    group: &str,
    kind: &str,
) -> Result<ApiResource, WatcherError> {
    let api_group = discovery::group(client, group)
        .await
        .map_err(|e| WatcherError::Discovery(format!("group {group}: {e}")))?;
    let served: Vec<String> = api_group.versions().map(str::to_string).collect();
    let version = ["v1beta1", "v1alpha1"]
        .into_iter()
        .find(|v| served.iter().any(|s| s == v))
        .ok_or_else(|| {
            WatcherError::Discovery(format!(
                "group {group} serves {served:?}; this build reads v1beta1 or v1alpha1"
            ))
        })?;
    api_group
        .versioned_resources(version)
        .into_iter()
        .map(|(resource, _)| resource)
        .find(|resource| resource.kind == kind)
        .ok_or_else(|| WatcherError::Discovery(format!("{group}/{version} serves no {kind}")))
}

/// The longest wait before retrying a failed watch or list, before jitter (which adds up
/// to as much again). kube-runtime's default waits up to 30 s plus as much jitter: a
/// stream still failing could then go a minute without an error, longer than
/// [`crate::readiness`] counts a quiet failing stream as recovered.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// How long the client may take to connect to the API server (kube's default is 30 s):
/// with [`MAX_RETRY_DELAY`] it bounds the time between two errors of a stream whose API
/// server is unreachable. `serve` builds its client with it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client may wait for the API server's next bytes (kube's default: for
/// ever): a list or watch request that connected to a server that then says nothing
/// fails after it, instead of hanging without an error while readiness counts the
/// stream as recovered. Longer than a watch request lasts ([`WATCH_SECONDS`]), so a quiet
/// watch ends before it. `serve` builds its client with it, counted from each request
/// sent (`reset_reader_on_write`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 10);

/// How long each watch request lasts before the API server ends it and kube-runtime
/// resumes from the last resourceVersion. It also sets kube-runtime's detection of a
/// connection that died without a word (this plus 5 s with nothing received): a
/// half-open watch is replaced within 30 s, the default `--unready-after`, instead of the
/// 295 s of kube-runtime's default, during which deletions went unseen.
const WATCH_SECONDS: u32 = 25;

/// Retries of a failed watch or list: 0.8 s doubling up to [`MAX_RETRY_DELAY`], jittered;
/// reset by any success.
fn retry_schedule() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// The events of a kube-runtime watcher over `api` (with backoff on errors), each object
/// read once, tagged with the stream's `index`.
fn tagged<K>(
    api: Api<K>,
    api_version: String,
    kind: String,
    index: usize,
) -> BoxStream<'static, (usize, Observed)>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Serialize + 'static,
{
    // The typed metadata gives uid and resourceVersion; the JSON is read by the
    // normalizer alone.
    let observe = move |event: WatchEventType, initial: bool, object: &K| {
        let mut value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), api_version.clone().into());
            map.insert("kind".into(), kind.clone().into());
        }
        let meta = object.meta();
        Observed::Object(ObservedObject::new(
            event,
            initial,
            meta.uid.clone(),
            meta.resource_version.clone(),
            &value,
        ))
    };
    watcher::watcher(api, watcher::Config::default().timeout(WATCH_SECONDS))
        .backoff(retry_schedule())
        .map(move |event| {
            let observed = match event {
                Ok(Event::Init) => Observed::Init,
                Ok(Event::InitApply(object)) => observe(WatchEventType::Added, true, &object),
                Ok(Event::InitDone) => Observed::InitDone,
                Ok(Event::Apply(object)) => observe(WatchEventType::Modified, false, &object),
                Ok(Event::Delete(object)) => observe(WatchEventType::Deleted, false, &object),
                Err(error) => Observed::Error(error.to_string()),
            };
            (index, observed)
        })
        .boxed()
}

/// The first and the longest pause between discovery attempts.
const DISCOVERY_RETRY_MIN: Duration = Duration::from_millis(200);
const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(10);

/// Watches Sandboxes, SandboxClaims, Pods (metadata only) and PVCs until `shutdown`
/// resolves, recording every identity-relevant change in the ledger.
pub async fn run(
    client: Client,
    ledger: SharedLedger,
    readiness: Readiness,
    options: WatchOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    let shutdown = shutdown.fuse();
    futures::pin_mut!(shutdown);
    // An API server that is down or not serving the CRDs yet when the service starts is
    // retried: the checks answer not_ready meanwhile, instead of a replica that is alive
    // but never ready.
    let mut delay = DISCOVERY_RETRY_MIN;
    let discovered = loop {
        let attempt = discover(&client).fuse();
        futures::pin_mut!(attempt);
        let result = futures::select! {
            _ = shutdown => return Ok(()),
            result = attempt => result,
        };
        match result {
            Ok(discovered) => break discovered,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "discovery failed; retrying");
                let sleep = tokio::time::sleep(delay).fuse();
                futures::pin_mut!(sleep);
                futures::select! {
                    _ = shutdown => return Ok(()),
                    () = sleep => {}
                }
                delay = (delay * 2).min(DISCOVERY_RETRY_MAX);
            }
        }
    };
    // Before this process records anything: a ledger holding entries was watched (or
    // ingested) by someone before, and each stream's first list follows a blind window.
    let resumes_a_ledger = ledger.view().head().seq > 0;
    record_scope(&ledger, &options.namespaces)?;
    let namespaces: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let pvc = ApiResource::erase::<PersistentVolumeClaim>(&());
    let mut streams = Vec::new();
    let mut event_streams = Vec::new();
    for namespace in &namespaces {
        for (kind, resource) in [
            (ObjectKind::Sandbox, &discovered.sandbox),
            (ObjectKind::SandboxClaim, &discovered.claim),
            (ObjectKind::PersistentVolumeClaim, &pvc),
        ] {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
                None => Api::all_with(client.clone(), resource),
            };
            event_streams.push(tagged(
                api,
                resource.api_version.clone(),
                resource.kind.clone(),
                streams.len(),
            ));
            streams.push(Stream {
                kind,
                resource: stream_name(resource),
                namespace: namespace.clone(),
            });
        }
        let pods: Api<PartialObjectMeta<Pod>> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        event_streams.push(tagged(pods, "v1".into(), "Pod".into(), streams.len()));
        streams.push(Stream {
            kind: ObjectKind::Pod,
            resource: "pods/v1".into(),
            namespace: namespace.clone(),
        });
    }
    let states = vec![
        StreamState {
            resumes_a_ledger,
            ..StreamState::default()
        };
        streams.len()
    ];
    readiness.register(
        streams
            .iter()
            .zip(&states)
            .map(|(stream, state)| StreamStatus::of(stream, state))
            .collect(),
        options.max_backlog,
    );

    let writer = Writer {
        ledger,
        readiness: readiness.clone(),
        streams,
        states,
    };
    let max_batch = options.max_batch.max(1);
    // The writer runs on a thread of its own, fed through a bounded queue, each event
    // stamped with when it arrived: so a list's next page is fetched while the writer
    // commits the last one (this task used to poll the streams only between commits),
    // a writer that lags still stops the reading once the queue is full, and the
    // backlog's age counts the time queued.
    let (events, queued) = tokio::sync::mpsc::channel::<Queued>(READ_AHEAD_BATCHES * max_batch);
    let writing = std::thread::Builder::new()
        .name("claim-ledger-writer".into())
        .spawn(move || writer.write_queued(queued, max_batch))
        .map_err(|e| WatcherError::Writer(format!("cannot start the writer's thread: {e}")))?;
    let mut merged = stream::select_all(event_streams);
    loop {
        let next = futures::select! {
            _ = shutdown => break,
            // A writer that stopped has failed: its error is returned below, at once.
            () = events.closed().fuse() => break,
            next = merged.next().fuse() => next,
        };
        let Some(item) = next else { break };
        match events.try_send((Instant::now(), item)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(queued)) => {
                // The writer lags: what arrives from here on waits in the connection.
                readiness.queue_full(Instant::now());
                if events.send(queued).await.is_err() {
                    break;
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    // The writer commits what is queued, then ends.
    drop(events);
    match tokio::task::spawn_blocking(move || writing.join()).await {
        Ok(Ok(written)) => written,
        Ok(Err(_)) => Err(WatcherError::Writer("its thread panicked".into())),
        Err(e) => Err(WatcherError::Writer(format!("waiting for its thread: {e}"))),
    }
}

/// How many of the writer's batches the stream reader may queue ahead of it.
const READ_AHEAD_BATCHES: usize = 2;

/// A queued event: when it arrived, and the index of the stream it came from.
type Queued = (Instant, (usize, Observed));

/// The single writer: steps each stream's state machine with its events and performs
/// the outputs.
struct Writer {
    ledger: SharedLedger,
    readiness: Readiness,
    /// What each stream watches, by stream index.
    streams: Vec<Stream>,
    /// Each stream's state, by stream index.
    states: Vec<StreamState>,
}

impl Writer {
    /// Commits the queued events, up to `max_batch` at a time, until the queue is closed
    /// and empty (or a commit fails).
    fn write_queued(
        mut self,
        mut queued: tokio::sync::mpsc::Receiver<Queued>,
        max_batch: usize,
    ) -> Result<(), WatcherError> {
        loop {
            let (since, first) = match queued.try_recv() {
                Ok(item) => item,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    self.readiness.set_backlog(None);
                    match queued.blocking_recv() {
                        Some(item) => item,
                        None => return Ok(()),
                    }
                }
            };
            // The queue is in arrival order: the first event has waited longest.
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match queued.try_recv() {
                    Ok((_, item)) => batch.push(item),
                    Err(_) => break,
                }
            }
            self.readiness.set_backlog(Some((since, batch.len())));
            if queued.len() < max_batch {
                self.readiness.queue_shallow();
            }
            self.process(batch)?;
        }
    }

    fn process(&mut self, batch: Vec<(usize, Observed)>) -> Result<(), WatcherError> {
        let mut pending: Vec<Change> = Vec::new();
        let mut stepped = vec![false; self.streams.len()];
        for (index, observed) in batch {
            stepped[index] = true;
            let now = Moment::now();
            match observed {
                Observed::Object(object) => {
                    let outputs = self.step(index, StreamInput::Object(object), now);
                    self.perform(index, outputs, &mut pending);
                }
                Observed::Error(error) => {
                    let outputs = self.step(index, StreamInput::Failed { error }, now);
                    self.perform(index, outputs, &mut pending);
                }
                // A list boundary reads the ledger's live objects, so what came before it
                // must be in the ledger first.
                Observed::Init => {
                    self.commit(&mut pending)?;
                    let view = self.ledger.view();
                    let recorded = live_objects(&view);
                    let input = StreamInput::ListStarted {
                        recorded: &recorded,
                    };
                    let outputs = self.step(index, input, now);
                    self.perform(index, outputs, &mut pending);
                }
                // The missing-on-resync deletes are committed at once, before the stream
                // counts as synced.
                Observed::InitDone => {
                    self.commit(&mut pending)?;
                    let view = self.ledger.view();
                    let recorded = live_objects(&view);
                    let input = StreamInput::ListDone {
                        recorded: &recorded,
                    };
                    let outputs = self.step(index, input, now);
                    self.perform(index, outputs, &mut pending);
                    self.commit(&mut pending)?;
                }
            }
        }
        self.commit(&mut pending)?;
        for (index, stepped) in stepped.into_iter().enumerate() {
            if stepped {
                let status = StreamStatus::of(&self.streams[index], &self.states[index]);
                self.readiness.publish(index, status);
            }
        }
        Ok(())
    }

    /// Steps the state machine of the stream at `index`.
    fn step(&mut self, index: usize, input: StreamInput<'_>, now: Moment) -> Vec<StreamOutput> {
        let state = std::mem::take(&mut self.states[index]);
        let (state, outputs) = step(&self.streams[index], state, input, now);
        self.states[index] = state;
        outputs
    }

    /// The deletion of `uid` as last recorded (in the batch being gathered, `pending`, or
    /// else in the ledger), for a delete event whose object was rejected: its last state
    /// cannot be read, but a pod deleted must not stay bound because someone made its
    /// final state unreadable. `None` when that record is a removal, or there is none (it
    /// was never recorded, so nothing stays live).
    fn deletion_of_recorded(
        &self,
        uid: &str,
        resource_version: Option<String>,
        pending: &[Change],
    ) -> Option<Change> {
        let in_batch = pending.iter().rev().find_map(|change| match change {
            Change::Object(object) if object.uid == uid => Some(object),
            _ => None,
        });
        let view = self.ledger.view();
        let last = match in_batch {
            Some(object) => object,
            None => &view.projection().object(uid)?.current,
        };
        if last.change.is_removal() {
            return None;
        }
        let mut deleted = last.clone();
        deleted.change = schemas::ChangeKind::Deleted;
        if let Some(version) = resource_version {
            deleted.resource_version = version.into();
        }
        tracing::warn!(
            uid,
            "a deleted object was rejected: recording the deletion of its last recorded state"
        );
        Some(Change::Object(deleted))
    }

    /// Queues the appends, counts and logs the rest.
    fn perform(&self, index: usize, outputs: Vec<StreamOutput>, pending: &mut Vec<Change>) {
        let resource = &self.streams[index].resource;
        for output in outputs {
            match output {
                StreamOutput::Append(change) => pending.push(change),
                StreamOutput::Rejected { error, deleted } => {
                    tracing::warn!(%resource, %error, "object rejected");
                    self.readiness.count(|c| c.rejected_objects += 1);
                    if let Some((uid, resource_version)) = deleted {
                        let deletion = self.deletion_of_recorded(&uid, resource_version, pending);
                        pending.extend(deletion);
                    }
                }
                StreamOutput::WatchFailed { error } => {
                    tracing::warn!(%resource, %error, "watch failed; retrying");
                    self.readiness.count(|c| c.watch_errors += 1);
                }
                StreamOutput::Listed { relist, missing } => self.readiness.count(|c| {
                    c.resync_deletions += missing;
                    c.relists += u64::from(relist);
                }),
            }
        }
    }

    /// Logs each recorded change (debug) and each binding transition it caused (info),
    /// with the fields operators filter on: kind, namespace, name, uid, seq, reason.
    fn log_recorded(&self, described: &[Option<Described>], outcomes: &[ledger::AppendOutcome]) {
        let mut with_transitions = Vec::new();
        for (described, outcome) in described.iter().zip(outcomes) {
            let (
                Some((kind, namespace, name, uid)),
                ledger::AppendOutcome::Appended { seq, transitions },
            ) = (described, outcome)
            else {
                continue;
            };
            tracing::debug!(seq, kind = ?kind, namespace, name, uid, "recorded");
            if *transitions > 0 {
                with_transitions.push((*seq, (kind, namespace, name, uid)));
            }
        }
        if with_transitions.is_empty() {
            return;
        }
        // Read back together: a read per entry is a round trip to a database store
        // (PostgreSQL), and these reads once took two thirds of a replica's cold start.
        let seqs: Vec<u64> = with_transitions.iter().map(|(seq, _)| *seq).collect();
        let stored = match self.ledger.view().entries_at(&seqs) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the recorded entries back to log their binding transitions");
                return;
            }
        };
        let mut stored = stored.into_iter().peekable();
        for (seq, (kind, namespace, name, uid)) in with_transitions {
            let Some(stored) = stored.next_if(|stored| stored.entry.seq == seq) else {
                continue;
            };
            for transition in &stored.entry.transitions {
                let detail = serde_json::to_value(transition).unwrap_or_default();
                let field = |key: &str| detail.get(key).and_then(|v| v.as_str()).unwrap_or("");
                tracing::info!(
                    seq,
                    kind = ?kind,
                    namespace,
                    name,
                    uid,
                    transition = field("transition"),
                    reason = field("reason"),
                    pod_uid = field("pod_uid"),
                    sandbox_uid = field("sandbox_uid"),
                    claim_uid = field("claim_uid"),
                    "binding transition"
                );
            }
        }
    }

    fn commit(&self, pending: &mut Vec<Change>) -> Result<(), WatcherError> {
        if pending.is_empty() {
            return Ok(());
        }
        // Only what the log lines need, and only when someone reads them.
        let described: Vec<Option<Described>> = match tracing::enabled!(tracing::Level::INFO) {
            true => pending.iter().map(describe).collect(),
            false => Vec::new(),
        };
        let committed = self.ledger.commit(pending.drain(..), Utc::now())?;
        if !described.is_empty() {
            self.log_recorded(&described, &committed.outcomes);
        }
        if let Some(flush_time) = committed.flush_time {
            let micros = flush_time.as_micros() as u64;
            self.readiness.count(|c| {
                c.flushes += 1;
                c.flush_micros += micros;
            });
        }
        Ok(())
    }
}

/// The ledger's live objects, as the state machines read them at list boundaries.
fn live_objects(view: &ledger::LedgerView) -> Vec<&ObjectChange> {
    view.projection()
        .live_objects()
        .into_iter()
        .map(|record| &record.current)
        .collect()
}

/// Records a change of the watched namespaces (what was watched before, what is now) as an
/// entry, so that checks of namespaces no longer watched are not answered from stale
/// records, and incident responders see when the scope changed. Nothing is recorded when
/// the scope is the one last recorded (or all namespaces, never narrowed).
fn record_scope(ledger: &SharedLedger, namespaces: &[String]) -> Result<(), WatcherError> {
    let mut wanted: Vec<String> = namespaces.to_vec();
    wanted.sort();
    wanted.dedup();
    let previous = ledger
        .view()
        .projection()
        .watched_namespaces()
        .map(<[String]>::to_vec);
    let unchanged = match &previous {
        Some(previous) => *previous == wanted,
        None => wanted.is_empty(),
    };
    if unchanged {
        return Ok(());
    }
    tracing::warn!(
        previous = ?previous,
        now = ?wanted,
        "the watched namespaces changed; checks outside them are answered not_ready"
    );
    ledger.commit(
        [Change::WatchScope(schemas::WatchScope {
            namespaces: wanted,
            previous,
        })],
        Utc::now(),
    )?;
    Ok(())
}

/// The kind, namespace, name and uid of a recorded object change.
type Described = (ObjectKind, String, String, String);

/// What the log line of a recorded change names (watch gaps are logged where they happen).
fn describe(change: &Change) -> Option<Described> {
    match change {
        Change::Object(object) => Some((
            object.kind,
            object.namespace.to_string(),
            object.name.to_string(),
            object.uid.to_string(),
        )),
        Change::WatchGap(_)
        | Change::CheckDenied(_)
        | Change::CheckDeniedOverflow(_)
        | Change::WatchScope(_) => None,
    }
}

/// A stream's name as `watch_gap` entries and `/readyz` give it: `plural.group/version`,
/// and `plural/version` for the core group (`pods/v1`, `persistentvolumeclaims/v1`).
fn stream_name(resource: &ApiResource) -> String {
    match resource.group.as_str() {
        "" => format!("{}/{}", resource.plural, resource.version),
        group => format!("{}.{group}/{}", resource.plural, resource.version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamCondition;
    use ledger::{Ledger, LedgerConfig};
    use schemas::observed::POD_NAME_ANNOTATION;
    use schemas::ChangeKind;
    use serde_json::json;

    /// A writer of one all-namespace Sandbox stream over a fresh ledger in `dir`.
    fn writer(dir: &std::path::Path) -> Writer {
        let ledger = SharedLedger::new(Ledger::open(dir, LedgerConfig::default()).unwrap());
        let streams = vec![Stream {
            kind: ObjectKind::Sandbox,
            resource: "sandboxes.agents.x-k8s.io/v1beta1".into(),
            namespace: None,
        }];
        let states = vec![StreamState::default()];
        let readiness = Readiness::new(Duration::from_secs(30));
        readiness.register(
            vec![StreamStatus::of(&streams[0], &states[0])],
            DEFAULT_MAX_BACKLOG,
        );
        Writer {
            ledger,
            readiness,
            streams,
            states,
        }
    }

    /// A Sandbox event; `pod` changes an identity field, so versions differ in substance.
    fn sandbox(
        event: WatchEventType,
        initial: bool,
        uid: &str,
        version: u64,
        pod: &str,
    ) -> Observed {
        let object = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid,
                         "resourceVersion": version.to_string(),
                         "annotations": {POD_NAME_ANNOTATION: pod}}});
        Observed::Object(ObservedObject::new(
            event,
            initial,
            Some(uid.into()),
            Some(version.to_string()),
            &object,
        ))
    }

    fn batch(events: impl IntoIterator<Item = Observed>) -> Vec<(usize, Observed)> {
        events.into_iter().map(|event| (0, event)).collect()
    }

    fn versions_of(writer: &Writer, uid: &str) -> Vec<(String, ChangeKind)> {
        writer
            .ledger
            .view()
            .history_of_uid(uid)
            .unwrap()
            .into_iter()
            .filter_map(|stored| match stored.entry.change {
                Change::Object(o) => Some((o.resource_version.to_string(), o.change)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_delete_whose_object_is_rejected_still_deletes_what_the_ledger_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path());
        use WatchEventType::{Added, Deleted, Modified};
        writer
            .process(batch([
                Observed::Init,
                sandbox(Added, true, "sb-a", 1, "pod-a"),
                Observed::InitDone,
            ]))
            .unwrap();
        // Someone made the object's last state one the normalizer refuses (an owner uid
        // longer than any Kubernetes makes): its update is rejected, and so is its delete.
        let refused = |event: WatchEventType, version: u64| {
            let object = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "metadata": {"name": "sb-a", "namespace": "ns", "uid": "sb-a",
                             "resourceVersion": version.to_string(),
                             "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                                 "kind": "SandboxClaim", "name": "c", "uid": "u".repeat(4096),
                                 "controller": true}]}});
            Observed::Object(ObservedObject::new(
                event,
                false,
                Some("sb-a".into()),
                Some(version.to_string()),
                &object,
            ))
        };
        writer.process(batch([refused(Modified, 2)])).unwrap();
        assert_eq!(writer.readiness.counters().rejected_objects, 1);
        assert_eq!(
            versions_of(&writer, "sb-a").len(),
            1,
            "an update is not guessed at"
        );
        writer.process(batch([refused(Deleted, 3)])).unwrap();
        assert_eq!(writer.readiness.counters().rejected_objects, 2);
        assert_eq!(
            versions_of(&writer, "sb-a"),
            [
                ("1".to_string(), ChangeKind::Created),
                ("3".to_string(), ChangeKind::Deleted)
            ]
        );
        // A rejected delete of what the ledger holds as gone records nothing more.
        let head = writer.ledger.view().head().seq;
        writer.process(batch([refused(Deleted, 4)])).unwrap();
        assert_eq!(writer.ledger.view().head().seq, head);

        // Created and deleted within one batch, the delete rejected: the batch's own
        // record of it is what gets deleted.
        let created = sandbox(Added, false, "sb-b", 5, "pod-b");
        let rejected_delete = match refused(Deleted, 6) {
            Observed::Object(mut object) => {
                object.uid = Some("sb-b".into());
                Observed::Object(object)
            }
            other => other,
        };
        writer.process(batch([created, rejected_delete])).unwrap();
        assert_eq!(
            versions_of(&writer, "sb-b"),
            [
                ("5".to_string(), ChangeKind::Created),
                ("6".to_string(), ChangeKind::Deleted)
            ]
        );
    }

    #[test]
    fn the_writer_records_each_version_once_and_is_ready_only_after_the_list_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path());
        use WatchEventType::{Added, Modified};

        writer
            .process(batch([
                Observed::Init,
                sandbox(Added, true, "sb-a", 1, "pod-a"),
                sandbox(Added, true, "sb-b", 2, "pod-b"),
            ]))
            .unwrap();
        assert!(!writer.readiness.is_ready(), "the list is not complete");
        assert_eq!(
            writer.ledger.view().head().seq,
            2,
            "no gap on a first start"
        );

        writer
            .process(batch([
                Observed::InitDone,
                sandbox(Modified, false, "sb-a", 5, "pod-a2"),
                // Delivered twice.
                sandbox(Modified, false, "sb-a", 5, "pod-a2"),
                // Older than what is recorded, and never recorded itself.
                sandbox(Modified, false, "sb-a", 4, "pod-a1"),
            ]))
            .unwrap();
        assert!(writer.readiness.is_ready());
        assert_eq!(
            versions_of(&writer, "sb-a"),
            [
                ("1".to_string(), ChangeKind::Created),
                ("5".to_string(), ChangeKind::Updated)
            ]
        );
        let stats = writer.ledger.view().stats();
        assert_eq!((stats.duplicates, stats.stale), (1, 1), "{stats:?}");
        assert_eq!(
            writer.readiness.streams()[0].state,
            StreamCondition::Watching
        );

        // The watch expires; the relist no longer finds sb-b.
        writer
            .process(batch([Observed::Error("410 Gone".into())]))
            .unwrap();
        let status = &writer.readiness.streams()[0];
        assert_eq!(status.state, StreamCondition::Failing);
        assert_eq!(status.last_error.as_deref(), Some("410 Gone"));
        writer
            .process(batch([
                Observed::Init,
                sandbox(Added, true, "sb-a", 5, "pod-a2"),
                Observed::InitDone,
            ]))
            .unwrap();
        assert_eq!(
            versions_of(&writer, "sb-b"),
            [
                ("2".to_string(), ChangeKind::Created),
                ("2".to_string(), ChangeKind::MissingOnResync)
            ]
        );
        let gaps: Vec<WatchGapSeen> = writer
            .ledger
            .view()
            .entries(1, u64::MAX)
            .filter_map(|stored| match stored.unwrap().entry.change {
                Change::WatchGap(gap) => Some((gap.reason, gap.last_resource_version)),
                _ => None,
            })
            .collect();
        assert_eq!(gaps, [("relist".to_string(), Some("4".to_string()))]);
        let counters = writer.readiness.counters();
        assert_eq!(
            (
                counters.watch_errors,
                counters.relists,
                counters.resync_deletions
            ),
            (1, 1, 1)
        );
        assert!(counters.flushes >= 3, "{counters:?}");
        assert!(writer.readiness.is_ready());
        assert_eq!(writer.readiness.streams()[0].failing_since, None);
    }

    /// A gap's reason and last resourceVersion.
    type WatchGapSeen = (String, Option<String>);
}
