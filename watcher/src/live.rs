//! The live watcher: one kube-runtime watcher per resource and namespace, merged into a
//! single writer that turns events into group-committed ledger appends.
//!
//! The writer is the one state machine: it sees every stream's `Init` / `InitApply` /
//! `InitDone` and `Apply` / `Delete` events in arrival order. After every initial list it
//! diffs what was listed against the projection and records objects the ledger holds but
//! the list lacks as `missing_on_resync` (deletes missed while blind); every list after the
//! first (a restart over a non-empty ledger, a relist after `410 Gone`) is recorded as a
//! `watch_gap` entry. A batch of events is appended and flushed before the next is read,
//! and readers take the ledger lock only between batches, so nothing is visible before it
//! is durable.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{discovery, Client};
use schemas::observed::{EXTENSIONS_GROUP, SANDBOX_GROUP};
use schemas::{normalize, Change, ObjectKind, WatchEventType, WatchGap};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::WatcherError;

pub use ledger::SharedLedger;

/// How long after its last error a failing stream counts as recovered: longer than the
/// watcher's longest backoff, so a stream still retrying keeps reporting errors within it.
const RECOVERED_AFTER: Duration = Duration::from_secs(40);

/// The default of [`WatchOptions::max_backlog`]: a few group commits' worth of slack on a
/// slow disk, far less than the time a deleted pod takes to be replaced.
pub const DEFAULT_MAX_BACKLOG: Duration = Duration::from_secs(5);

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

/// The state of one watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Discovery done, the first list not finished.
    Listing,
    /// The initial list is recorded and diffed; watching.
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
    /// The state.
    pub state: StreamState,
    /// Whether an initial list has ever completed.
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
    /// A stream registered and not yet listed.
    fn listing(resource: String, namespace: Option<String>) -> StreamStatus {
        StreamStatus {
            resource,
            namespace,
            state: StreamState::Listing,
            synced: false,
            failing_since: None,
            last_error: None,
            failing_since_instant: None,
            last_error_instant: None,
        }
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

/// Freshness (binding rule check 7): shared by the watcher and whoever answers checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Mutex<ReadinessInner>>,
}

#[derive(Debug)]
struct ReadinessInner {
    streams: Vec<StreamStatus>,
    counters: WatchCounters,
    unready_after: Duration,
    started: bool,
    /// Since when observed events have waited to become durable, and how many are in the
    /// group commit under way (`None`: the writer has caught up).
    backlog: Option<(Instant, usize)>,
    max_backlog: Duration,
}

/// Observed events not yet durable, as `/readyz` and `/metrics` report them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backlog {
    /// Events in the group commit under way.
    pub events: usize,
    /// How long the oldest of them (or of those still queued behind it) has waited.
    pub age_seconds: f64,
    /// The bound past which checks answer `not_ready`.
    pub limit_seconds: f64,
}

impl Readiness {
    /// Not ready until [`run`] has registered and synced every stream.
    pub fn new(unready_after: Duration) -> Readiness {
        Readiness {
            inner: Arc::new(Mutex::new(ReadinessInner {
                streams: Vec::new(),
                counters: WatchCounters::default(),
                unready_after,
                started: false,
                backlog: None,
                max_backlog: DEFAULT_MAX_BACKLOG,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadinessInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether checks may answer: every stream synced, none failing for longer than the
    /// grace period, and no observed event waiting longer than the backlog bound.
    pub fn is_ready(&self) -> bool {
        let inner = self.lock();
        let now = Instant::now();
        let lagging = inner
            .backlog
            .is_some_and(|(since, _)| now.saturating_duration_since(since) > inner.max_backlog);
        inner.started
            && !lagging
            && inner.streams.iter().all(|s| {
                let recovering = s
                    .last_error_instant
                    .is_some_and(|t| now - t < RECOVERED_AFTER);
                let failing_too_long = recovering
                    && s.failing_since_instant
                        .is_some_and(|t| now - t > inner.unready_after);
                s.synced && !failing_too_long
            })
    }

    /// The writer's backlog now: events observed and not yet durable, and their age.
    pub fn backlog(&self) -> Backlog {
        let inner = self.lock();
        let (events, age) = match inner.backlog {
            Some((since, events)) => (events, Instant::now().saturating_duration_since(since)),
            None => (0, Duration::ZERO),
        };
        Backlog {
            events,
            age_seconds: age.as_secs_f64(),
            limit_seconds: inner.max_backlog.as_secs_f64(),
        }
    }

    /// Records that `events` observed since `since` wait for a group commit (`None`: the
    /// writer has caught up).
    fn set_backlog(&self, backlog: Option<(Instant, usize)>) {
        self.lock().backlog = backlog;
    }

    /// Every stream's status.
    pub fn streams(&self) -> Vec<StreamStatus> {
        self.lock().streams.clone()
    }

    /// The counters since start.
    pub fn counters(&self) -> WatchCounters {
        self.lock().counters
    }

    fn register(&self, streams: Vec<StreamStatus>, max_backlog: Duration) {
        let mut inner = self.lock();
        inner.streams = streams;
        inner.max_backlog = max_backlog;
        inner.started = true;
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut StreamStatus, &mut WatchCounters)) {
        let mut inner = self.lock();
        let ReadinessInner {
            streams, counters, ..
        } = &mut *inner;
        if let Some(stream) = streams.get_mut(index) {
            change(stream, counters);
        }
    }
}

/// One watched stream.
#[derive(Debug, Clone)]
struct StreamInfo {
    kind: ObjectKind,
    resource: String,
    namespace: Option<String>,
}

/// An event of one stream, with the object already as JSON.
enum Observed {
    Init,
    Object {
        event: WatchEventType,
        object: serde_json::Value,
        initial: bool,
    },
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

fn tagged<K>(
    api: Api<K>,
    api_version: String,
    kind: String,
    index: usize,
) -> BoxStream<'static, (usize, Observed)>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Serialize + 'static,
{
    let as_json = move |object: &K| {
        let mut value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), api_version.clone().into());
            map.insert("kind".into(), kind.clone().into());
        }
        value
    };
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| {
            let observed = match event {
                Ok(Event::Init) => Observed::Init,
                Ok(Event::InitApply(object)) => Observed::Object {
                    event: WatchEventType::Added,
                    object: as_json(&object),
                    initial: true,
                },
                Ok(Event::InitDone) => Observed::InitDone,
                Ok(Event::Apply(object)) => Observed::Object {
                    event: WatchEventType::Modified,
                    object: as_json(&object),
                    initial: false,
                },
                Ok(Event::Delete(object)) => Observed::Object {
                    event: WatchEventType::Deleted,
                    object: as_json(&object),
                    initial: false,
                },
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
    record_scope(&ledger, &options.namespaces)?;
    let namespaces: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let pvc = ApiResource::erase::<PersistentVolumeClaim>(&());
    let mut infos = Vec::new();
    let mut streams = Vec::new();
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
            streams.push(tagged(
                api,
                resource.api_version.clone(),
                resource.kind.clone(),
                infos.len(),
            ));
            infos.push(StreamInfo {
                kind,
                resource: stream_name(resource),
                namespace: namespace.clone(),
            });
        }
        let pods: Api<PartialObjectMeta<Pod>> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        streams.push(tagged(pods, "v1".into(), "Pod".into(), infos.len()));
        infos.push(StreamInfo {
            kind: ObjectKind::Pod,
            resource: "pods/v1".into(),
            namespace: namespace.clone(),
        });
    }
    readiness.register(
        infos
            .iter()
            .map(|info| StreamStatus::listing(info.resource.clone(), info.namespace.clone()))
            .collect(),
        options.max_backlog,
    );

    let mut writer = Writer {
        ledger,
        readiness,
        infos,
        listing: HashMap::new(),
        listed: HashSet::new(),
        last_version: HashMap::new(),
    };
    let mut merged = stream::select_all(streams);
    let max_batch = options.max_batch.max(1);
    // Since when the events still to commit have waited. Events that were not ready when
    // a batch was collected arrived after that moment; those left behind by a full batch
    // arrived before it, so they keep the older time.
    let mut waiting_since: Option<Instant> = None;
    loop {
        if shutdown.as_mut().now_or_never().is_some() {
            break;
        }
        let first = match merged.next().now_or_never() {
            Some(Some(item)) => item,
            Some(None) => break,
            None => {
                writer.readiness.set_backlog(None);
                waiting_since = None;
                futures::select! {
                    _ = shutdown => break,
                    next = merged.next().fuse() => match next {
                        Some(item) => item,
                        None => break,
                    },
                }
            }
        };
        let collected_at = Instant::now();
        let since = waiting_since.unwrap_or(collected_at);
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match merged.next().now_or_never() {
                Some(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let full = batch.len() >= max_batch;
        writer.readiness.set_backlog(Some((since, batch.len())));
        tokio::task::block_in_place(|| writer.process(batch))?;
        waiting_since = Some(if full { since } else { collected_at });
    }
    Ok(())
}

/// The single writer: turns tagged events into appends.
struct Writer {
    ledger: SharedLedger,
    readiness: Readiness,
    infos: Vec<StreamInfo>,
    /// Uids listed so far by streams in their initial list.
    listing: HashMap<usize, HashSet<String>>,
    /// Streams that completed an initial list since start.
    listed: HashSet<usize>,
    /// The last resourceVersion seen per stream.
    last_version: HashMap<usize, String>,
}

impl Writer {
    fn process(&mut self, batch: Vec<(usize, Observed)>) -> Result<(), WatcherError> {
        let mut pending: Vec<Change> = Vec::new();
        for (index, observed) in batch {
            match observed {
                Observed::Init => {
                    self.commit(&mut pending)?;
                    if let Some(gap) = self.gap_before_list(index) {
                        pending.push(Change::WatchGap(gap));
                    }
                    self.listing.insert(index, HashSet::new());
                    self.readiness
                        .update(index, |s, _| s.state = StreamState::Listing);
                }
                Observed::Object {
                    event,
                    object,
                    initial,
                } => {
                    let uid = object["metadata"]["uid"].as_str().map(str::to_string);
                    if let (true, Some(uid), Some(listing)) =
                        (initial, uid, self.listing.get_mut(&index))
                    {
                        listing.insert(uid);
                    }
                    if let Some(version) = object["metadata"]["resourceVersion"].as_str() {
                        self.last_version.insert(index, version.to_string());
                    }
                    match normalize(event, &object) {
                        Ok(Some(change)) => pending.push(Change::Object(change)),
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(resource = %self.infos[index].resource, %error, "object rejected");
                            self.readiness.update(index, |_, c| c.rejected_objects += 1);
                        }
                    }
                    self.recovered(index);
                }
                Observed::InitDone => {
                    self.commit(&mut pending)?;
                    let listed = self.listing.remove(&index).unwrap_or_default();
                    let missing = self.missing_from(index, &listed);
                    let count = missing.len() as u64;
                    pending.extend(missing);
                    self.commit(&mut pending)?;
                    let relist = !self.listed.insert(index);
                    self.readiness.update(index, |s, c| {
                        s.synced = true;
                        s.state = StreamState::Watching;
                        c.resync_deletions += count;
                        if relist {
                            c.relists += 1;
                        }
                    });
                    self.recovered(index);
                }
                Observed::Error(error) => {
                    tracing::warn!(resource = %self.infos[index].resource, %error, "watch failed; retrying");
                    self.readiness.update(index, |s, c| {
                        let now = Instant::now();
                        c.watch_errors += 1;
                        s.state = StreamState::Failing;
                        s.last_error = Some(error);
                        s.last_error_instant = Some(now);
                        if s.failing_since_instant.is_none() {
                            s.failing_since_instant = Some(now);
                            s.failing_since = Some(Utc::now());
                        }
                    });
                }
            }
        }
        self.commit(&mut pending)
    }

    fn recovered(&self, index: usize) {
        self.readiness.update(index, |s, _| {
            if s.state == StreamState::Failing {
                s.state = if s.synced {
                    StreamState::Watching
                } else {
                    StreamState::Listing
                };
            }
            s.failing_since = None;
            s.failing_since_instant = None;
        });
    }

    /// A list after the first one since start, or a first list over a ledger that already
    /// holds objects of this stream, follows a window the ledger did not see.
    fn gap_before_list(&self, index: usize) -> Option<WatchGap> {
        let info = &self.infos[index];
        let relist = self.listed.contains(&index);
        let last = match self.last_version.get(&index) {
            Some(version) => Some(version.clone()),
            None => {
                let ledger = self.ledger.view();
                ledger
                    .projection()
                    .live_objects()
                    .into_iter()
                    .filter(|r| self.in_stream(index, &r.current))
                    .filter_map(|r| r.current.resource_version.parse::<u64>().ok())
                    .max()
                    .map(|v| v.to_string())
            }
        };
        if !relist && last.is_none() {
            return None;
        }
        Some(WatchGap {
            resource: info.resource.clone(),
            last_resource_version: last,
            reason: if relist { "relist" } else { "restart" }.into(),
        })
    }

    fn in_stream(&self, index: usize, change: &schemas::ObjectChange) -> bool {
        let info = &self.infos[index];
        change.kind == info.kind
            && info
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == change.namespace)
    }

    /// Objects of this stream alive in the ledger that the completed list lacks.
    fn missing_from(&self, index: usize, listed: &HashSet<String>) -> Vec<Change> {
        let ledger = self.ledger.view();
        ledger
            .projection()
            .live_objects()
            .into_iter()
            .filter(|r| self.in_stream(index, &r.current) && !listed.contains(&r.current.uid))
            .map(|r| Change::Object(r.current.clone().into_missing_on_resync()))
            .collect()
    }

    /// Logs each recorded change (debug) and each binding transition it caused (info),
    /// with the fields operators filter on: kind, namespace, name, uid, seq, reason.
    fn log_recorded(&self, described: &[Option<Described>], outcomes: &[ledger::AppendOutcome]) {
        let ledger = self.ledger.view();
        for (described, outcome) in described.iter().zip(outcomes) {
            let (
                Some((kind, namespace, name, uid)),
                ledger::AppendOutcome::Appended { seq, transitions },
            ) = (described, outcome)
            else {
                continue;
            };
            tracing::debug!(seq, kind = ?kind, namespace, name, uid, "recorded");
            if *transitions == 0 {
                continue;
            }
            let Ok(Some(stored)) = ledger.entry(*seq) else {
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
        let micros = committed.flush_time.as_micros() as u64;
        if !described.is_empty() {
            self.log_recorded(&described, &committed.outcomes);
        }
        let mut inner = self.readiness.lock();
        inner.counters.flushes += 1;
        inner.counters.flush_micros += micros;
        Ok(())
    }
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
            object.namespace.clone(),
            object.name.clone(),
            object.uid.clone(),
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

    fn synced(readiness: &Readiness, max_backlog: Duration) {
        let stream = StreamStatus {
            state: StreamState::Watching,
            synced: true,
            ..StreamStatus::listing("pods/v1".into(), None)
        };
        readiness.register(vec![stream], max_backlog);
    }

    #[test]
    fn a_backlog_older_than_its_bound_makes_the_ledger_not_ready() {
        let readiness = Readiness::new(Duration::from_secs(30));
        synced(&readiness, Duration::from_secs(5));
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
    }
}
