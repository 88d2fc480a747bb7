//! A small Kubernetes API server for agent-sandbox objects: the cluster simulator
//! claim-ledger runs and tests against.
//!
//! It speaks the real wire protocol over plain HTTP, so the real `kube` client, kube-runtime
//! watchers and `kubectl` talk to it unchanged. It serves six namespaced resources
//! ([`Resource`]): `Sandbox` (`agents.x-k8s.io`), `SandboxClaim`, `SandboxWarmPool`,
//! `SandboxTemplate` (`extensions.agents.x-k8s.io`) in `v1beta1` + `v1alpha1`
//! ([`Served::Both`], agent-sandbox v0.5.x) or `v1alpha1` only ([`Served::V1alpha1Only`],
//! v0.4.x), and core `v1` `Pod` and `PersistentVolumeClaim`.
//!
//! # Quick start
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sim::{SimConfig, Simulator};
//! // Serves on a free loopback port until `cluster` is dropped (or `cluster.stop().await`).
//! let cluster = Simulator::start_local(SimConfig::default()).await?;
//! let client: kube::Client = cluster.client(); // or cluster.kubeconfig() for kubectl
//! let sim = cluster.simulator();
//! sim.create_pool("default", "python-pool", 2, "python-template", true).unwrap();
//! let claim = sim.claim_warm("default", "my-claim", "python-pool", Some("sbx-1")).unwrap();
//! # let _ = (client, claim); Ok(()) }
//! ```
//!
//! To serve on a listener of your own, call [`Simulator::serve`]; to turn any kubeconfig
//! into a client, [`client_from_kubeconfig`].
//!
//! For a standalone server, pass a bound listener and an optional kubeconfig path to
//! [`run_standalone`], then `kubectl --kubeconfig PATH get sandboxes -A`.
//! Rust tests can read the exact event order with [`Simulator::events`] and the requests
//! clients made with [`Simulator::requests`].
//!
//! # What the server does
//!
//! * **Storage.** Objects are stored once, keyed by (resource, namespace, name), and served in
//!   whichever version the request path names (`apiVersion` is rewritten; the spec layout is
//!   stored as given, no conversion). The server fills `uid` (random v4), `creationTimestamp`,
//!   `generation` (bumped when anything outside `metadata`/`status` changes) and
//!   `resourceVersion` from ONE global counter (decimal string), like etcd. Create, update,
//!   delete, a LIST page and a watch start or resume cost O(log n) in the number of stored
//!   objects (plus what they return): the garbage collector and the controllers look up
//!   owners, dependents, mounts and due claims in indexes kept beside the objects, and
//!   revisit only what a change can affect (see the `index` module). For benches and large
//!   demos, [`SimConfig::preload_bindings`] and [`Simulator::preload_bound_claims`] load
//!   bound claims (4 objects each) in bulk.
//! * **Verbs.** GET, LIST (`limit`/`continue`, `labelSelector` with `=`, `==`, `!=`, exists,
//!   `!`, `in`, `notin`; `fieldSelector` on `metadata.name`, `metadata.namespace`,
//!   `status.phase`, `spec.nodeName`, `spec.volumeName`), WATCH, POST (`generateName`
//!   supported), PUT (409 `Conflict` on a stale `metadata.resourceVersion`), PATCH
//!   (`application/merge-patch+json`; `strategic-merge-patch+json` is treated as a merge
//!   patch), DELETE (`propagationPolicy` in the query or a `DeleteOptions` body,
//!   `gracePeriodSeconds`, preconditions) and DELETE on a collection. `/status` subresources
//!   exist for all six resources: a `/status` write changes only `status`; main-resource
//!   writes over HTTP keep the stored `status`; HTTP creates drop `status` (pods and PVCs get
//!   `phase: Pending`, PVCs get the `kubernetes.io/pvc-protection` finalizer, as admission
//!   adds it). The Rust API ([`Simulator::create`], [`Simulator::apply`]) is privileged: it
//!   stores `status` and finalizers as given.
//! * **Representations.** Plain JSON, `as=PartialObjectMetadata[List]` (what
//!   `Api<PartialObjectMeta<K>>` asks for) and `as=Table` (what `kubectl get` asks for; columns
//!   Name and Age). Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}`, and aggregated discovery (`apidiscovery.k8s.io/v2`) on `/api`
//!   and `/apis`. `/openapi/v3` serves a minimal document per group-version (paths and
//!   the `fieldValidation` parameter, no schemas): enough for `kubectl create`/`apply` to hand
//!   validation to the server, which accepts and ignores `fieldValidation` (no schema
//!   validation happens). `/openapi/v2` answers 404.
//! * **Watches.** `watch=true|1`, from `resourceVersion` (strictly after it; unset or `0`
//!   first sends a synthetic `ADDED` per current object), `sendInitialEvents=true` (initial
//!   events then a BOOKMARK annotated `k8s.io/initial-events-end`), `timeoutSeconds`,
//!   `allowWatchBookmarks=true` (a BOOKMARK every second and when the request times out),
//!   label/field selectors (an object that stops matching is sent as `DELETED`, one that
//!   starts matching as `ADDED`). The history keeps the last
//!   [`SimConfig::compaction_window`] resourceVersions; a watch from an older version gets
//!   an `ERROR` event carrying a 410 `Expired` `Status` (a LIST with an expired `continue`
//!   gets an HTTP 410).
//! * **Deletion and garbage collection** (always on, like kube-controller-manager):
//!   deleting an object with finalizers sets `deletionTimestamp` (MODIFIED) and it is removed
//!   (DELETED, with a fresh resourceVersion) when its finalizers are empty. `Background`:
//!   the owner goes first, then its dependents, recursively. `Foreground`: the owner gets
//!   `foregroundDeletion`, dependents are deleted (those with dependents of their own in the
//!   foreground too), and the owner goes when no `blockOwnerDeletion` dependent is left.
//!   `Orphan`: the owner gets the `orphan` finalizer, the dependents lose their
//!   ownerReference to it (MODIFIED), then the owner goes. Pods with `spec.nodeName` are
//!   deleted gracefully (MODIFIED with `deletionTimestamp` = now + grace, then DELETED as the
//!   kubelet would, immediately); PVCs with `kubernetes.io/pvc-protection` go once no pod
//!   mounts them. Owner references to uids the simulator never stored are ignored (the owner
//!   is assumed to live outside the simulated part of the cluster), so replayed fixture
//!   objects are not collected.
//! * **agent-sandbox controllers** (when [`SimConfig::controllers`] is true; see
//!   [`controllers`]): warm pools keep `spec.replicas` Sandboxes, every Sandbox gets its
//!   PVCs (`<template>-<sandbox>`, bound to a fresh `pv-NNNN`) and its pod (same name), and a
//!   missing pod is recreated with a new uid. SandboxClaims however they are created (HTTP,
//!   `kubectl create -f`, [`Simulator::create`]) are bound: a warm Sandbox of a matching pool
//!   is adopted, else one is created from the template; a claim whose
//!   `spec.lifecycle.shutdownTime` has passed expires under its `shutdownPolicy`. The explicit
//!   calls ([`Simulator::claim_warm`], [`Simulator::claim_cold`], [`Simulator::expire_claim`],
//!   ...) go through the same code. Everything runs synchronously inside the call (or HTTP
//!   request) that triggered it, so the event order is deterministic; time is the
//!   simulator's clock ([`Simulator::now`], moved by [`Simulator::advance_clock`]), and while
//!   serving a background tick ([`CLOCK_TICK`]) expires claims whose time comes without a
//!   request.
//! * **Faults.** [`Simulator::drop_watches`], [`Simulator::expire_next_watch`],
//!   [`Simulator::restart`], [`Simulator::duplicate_next_event`],
//!   [`Simulator::deliver_stale_event`]; every request is recorded ([`Simulator::requests`]).

pub mod controllers;
mod conventions;
mod error;
mod http;
mod index;
mod local;
mod representation;
pub mod resource;
pub mod selector;
mod store;
pub mod util;
mod watch;

pub use error::SimError;
pub use local::{client_from_kubeconfig, LocalSimulator};
pub use resource::{Resource, Served};

use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use store::{DeleteOpts, State, StatusMode};

/// How the simulated cluster behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Emulate the agent-sandbox controllers (warm pools, Sandbox → PVC + pod, claim binding
    /// and expiry). Default true. When false, claims (like everything else) are left as
    /// written.
    pub controllers: bool,
    /// How many resourceVersions of history watches can resume from. Default 1000.
    pub compaction_window: u64,
    /// Which agent-sandbox versions are served. Default [`Served::Both`].
    pub served: Served,
    /// Bound claims the cluster starts with, in namespace `default`: what
    /// [`Simulator::preload_bound_claims`] makes (4 objects each), for benches and large
    /// demos. Default 0.
    pub preload_bindings: usize,
}

/// How often [`Simulator::serve`] checks for claims whose `shutdownTime` has passed.
pub const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(250);

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            controllers: true,
            compaction_window: 1000,
            served: Served::Both,
            preload_bindings: 0,
        }
    }
}

/// Deletion propagation policy (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now, then its dependents.
    #[default]
    Background,
    /// Delete the dependents first, the owner waits with `foregroundDeletion`.
    Foreground,
    /// Keep the dependents, strip their ownerReferences to the owner.
    Orphan,
}

impl Propagation {
    /// Parses the wire name (`Background`, `Foreground`, `Orphan`).
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, ...).
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
    /// The `Accept` header (empty if none).
    pub accept: String,
}

impl RecordedRequest {
    /// The decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bumped after every change; open watches wait on it.
    signal: tokio::sync::watch::Sender<u64>,
}

/// One recorded watch event ([`Simulator::events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: &'static str,
    /// The object's resource type.
    pub resource: Resource,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object's resourceVersion in this event.
    pub resource_version: u64,
    /// The object as stored (its stored apiVersion).
    pub object: Value,
}

/// The simulated cluster. Cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    /// An empty cluster.
    pub fn new(config: SimConfig) -> Simulator {
        let (signal, _) = tokio::sync::watch::channel(0u64);
        let mut state = State::new(config);
        if config.preload_bindings > 0 {
            // Fresh names in a valid namespace of an empty cluster: nothing can fail.
            let _ = state.preload("default", config.preload_bindings);
        }
        Simulator {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                signal,
            }),
        }
    }

    /// The configuration this simulator was built with.
    pub fn config(&self) -> SimConfig {
        self.lock().config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state, then wakes the watches.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state);
        drop(state);
        self.shared.signal.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    /// Records a request. The watches are not woken: nothing they send changed.
    pub(crate) fn record_request(&self, request: RecordedRequest) {
        self.lock().requests.push(request);
    }

    /// Runs `f` on the state without waking the watches.
    pub(crate) fn read_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.signal.subscribe()
    }

    /// Serves HTTP on `listener` until `shutdown` resolves; open watches end then.
    ///
    /// While serving with controllers on, a background tick ([`CLOCK_TICK`]) runs the
    /// controllers whenever a claim's `spec.lifecycle.shutdownTime` has passed on the
    /// simulator's clock, so claims expire as time goes by without any request.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sim = self.clone();
        let on_shutdown = async move {
            shutdown.await;
            sim.with_state(|s| {
                s.shutdown = true;
                s.drop_gen += 1;
            });
        };
        let ticker = {
            let sim = self.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(CLOCK_TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    sim.expire_due_claims();
                }
            })
        };
        let served = axum::serve(listener, http::router(self.clone()))
            .with_graceful_shutdown(on_shutdown)
            .await;
        ticker.abort();
        served
    }

    /// The simulator's clock: the wall clock plus every [`Simulator::advance_clock`] so far.
    /// `creationTimestamp`, `deletionTimestamp`, condition times and claim expiry use it.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.lock().now()
    }

    /// Moves the simulator's clock forward by `by`, then runs the controllers: with
    /// controllers on, every claim whose `spec.lifecycle.shutdownTime` is now past expires
    /// (as [`Simulator::expire_claim`]) before this returns.
    pub fn advance_clock(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.with_state(|s| {
            s.clock_offset = s.clock_offset.checked_add(&by).unwrap_or(s.clock_offset);
            s.settle_all();
        });
    }

    /// Runs the garbage collector and (when enabled) the controllers now, against the
    /// current clock. Every call and request already does; this is for time passing alone
    /// (what the background tick of [`Simulator::serve`] does when a claim is due).
    pub fn reconcile(&self) {
        self.with_state(State::settle_all);
    }

    /// Expires the claims whose `shutdownTime` has passed, if controllers are on and there
    /// are any (without waking the watches otherwise).
    fn expire_due_claims(&self) {
        if self.read_state(|s| s.config.controllers && s.claim_expiry_due()) {
            self.reconcile();
        }
    }

    /// A kubeconfig (YAML) for `server` (e.g. `http://127.0.0.1:PORT`): one cluster, one
    /// user without credentials, one context `claim-ledger-sim` with namespace `default`.
    pub fn kubeconfig(&self, server: &str) -> String {
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "claim-ledger-sim", "cluster": {"server": server}}],
            "users": [{"name": "claim-ledger-sim", "user": {}}],
            "contexts": [{"name": "claim-ledger-sim", "context": {
                "cluster": "claim-ledger-sim", "user": "claim-ledger-sim", "namespace": "default"}}],
            "current-context": "claim-ledger-sim",
            "preferences": {},
        });
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }

    fn resource_of(object: &Value) -> Result<Resource, SimError> {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| SimError::BadRequest("object has no kind".into()))?;
        Resource::from_kind(kind)
            .ok_or_else(|| SimError::BadRequest(format!("kind {kind} is not served")))
    }

    fn namespace_in(object: &Value) -> String {
        match util::namespace_of(object) {
            "" => "default".to_string(),
            ns => ns.to_string(),
        }
    }

    /// Creates an object (namespace from `metadata.namespace`, default `default`). The
    /// server fills uid, resourceVersion, creationTimestamp and generation; `status` and
    /// finalizers are stored as given.
    pub fn create(&self, object: Value) -> Result<Value, SimError> {
        let resource = Self::resource_of(&object)?;
        let ns = Self::namespace_in(&object);
        self.with_state(|s| {
            let created = s.create(resource, &ns, object, None, true)?;
            s.settle_all();
            Ok(created)
        })
    }

    /// Creates the object, or replaces the one with the same (kind, namespace, name)
    /// (its uid and creationTimestamp are kept; `status` is stored as given).
    pub fn apply(&self, object: Value) -> Result<Value, SimError> {
        let resource = Self::resource_of(&object)?;
        let ns = Self::namespace_in(&object);
        let name = util::name_of(&object).to_string();
        self.with_state(|s| {
            let result = if s.get(resource, &ns, &name).is_some() {
                let mut body = object;
                let meta = util::meta_mut(&mut body);
                meta.remove("resourceVersion");
                meta.remove("uid");
                s.update(resource, &ns, &name, body, StatusMode::Keep, None)
            } else {
                s.create(resource, &ns, object, None, true)
            }?;
            s.settle_all();
            Ok(result)
        })
    }

    /// Applies a JSON merge patch (RFC 7386) to the object, or to its `status` only when
    /// `subresource_status` (otherwise status changes are ignored, as for HTTP).
    pub fn merge_patch(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: Value,
        subresource_status: bool,
    ) -> Result<Value, SimError> {
        let mode = if subresource_status {
            StatusMode::Only
        } else {
            StatusMode::Ignore
        };
        self.with_state(|s| {
            let patched = s.merge_patch(resource, namespace, name, &patch, mode, None)?;
            s.settle_all();
            Ok(patched)
        })
    }

    /// Deletes the object with the given propagation policy (garbage collection runs before
    /// this returns).
    pub fn delete(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        policy: Propagation,
    ) -> Result<(), SimError> {
        self.with_state(|s| {
            s.delete(
                resource,
                namespace,
                name,
                &DeleteOpts {
                    policy,
                    ..Default::default()
                },
            )?;
            s.settle_all();
            Ok(())
        })
    }

    /// The stored object, if any.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.lock().get(resource, namespace, name).cloned()
    }

    /// Every stored object of `resource` (in `namespace`, or everywhere), by namespace and name.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.lock()
            .iter(resource, namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current value of the global resourceVersion counter.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Ends every open watch stream now (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.with_state(|s| s.drop_gen += 1);
    }

    /// The next watch request gets a 410 Gone (`ERROR` event, `Status` reason `Expired`).
    pub fn expire_next_watch(&self) {
        self.with_state(|s| s.expire_next_watch = true);
    }

    /// Simulates an API server restart with a compacted store: open watches end, the history
    /// is forgotten and every resourceVersion handed out so far is too old to resume from.
    pub fn restart(&self) {
        self.with_state(State::restart);
    }

    /// The next watch event is delivered twice.
    pub fn duplicate_next_event(&self) {
        self.with_state(|s| s.duplicate_next_event = true);
    }

    /// Re-sends the previous version of the object as a MODIFIED event on open watches.
    /// Does nothing if the object does not exist or was never modified.
    pub fn deliver_stale_event(&self, resource: Resource, namespace: &str, name: &str) {
        self.with_state(|s| {
            s.inject_stale(resource, namespace, name);
        });
    }

    /// The watch events still in the history window, oldest first (what a watch from the
    /// oldest resumable resourceVersion would see, before selectors).
    pub fn events(&self) -> Vec<SimEvent> {
        self.read_state(|s| {
            s.history
                .iter()
                .map(|e| SimEvent {
                    event_type: e.event_type.as_str(),
                    resource: e.resource,
                    namespace: util::namespace_of(&e.object).to_string(),
                    name: util::name_of(&e.object).to_string(),
                    resource_version: store::resource_version_of(&e.object),
                    object: (*e.object).clone(),
                })
                .collect()
        })
    }

    /// Every request served so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

/// Runs a standalone simulator (what `claim-ledger sim` does): writes a kubeconfig for
/// `http://<listener address>` to `kubeconfig_out` if given, then serves until `shutdown`.
pub async fn run_standalone(
    listener: tokio::net::TcpListener,
    kubeconfig_out: Option<PathBuf>,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sim = Simulator::new(config);
    let url = format!("http://{}", listener.local_addr()?);
    if let Some(path) = kubeconfig_out {
        std::fs::write(path, sim.kubeconfig(&url))?;
    }
    sim.serve(listener, shutdown).await
}
