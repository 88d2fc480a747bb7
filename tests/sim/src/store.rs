//! The object store: objects, the global resourceVersion counter, the bounded event history
//! watches resume from, and the API server's write semantics (create, update, merge patch,
//! delete with finalizers) plus Kubernetes' built-in controllers that every cluster runs:
//! the garbage collector (ownerReferences, `orphan` and `foregroundDeletion` finalizers),
//! the kubelet's completion of graceful pod deletion, and `kubernetes.io/pvc-protection`.
//!
//! Everything here runs under one lock and synchronously, so the event order of an
//! operation is deterministic.

use crate::error::SimError;
use crate::index::Objects;
use crate::resource::{group_of, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::util::{self, meta_mut};
use crate::{Propagation, RecordedRequest, SimConfig};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

pub(crate) use crate::index::Key;

/// The finalizer the API server adds for `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer the API server adds for `propagationPolicy: Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that keeps a PVC until no pod uses it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the event history.
#[derive(Debug, Clone)]
pub(crate) struct HistEvent {
    /// Position in the history (monotonic, never reused).
    pub seq: u64,
    /// The global resourceVersion when the event was recorded (resume position).
    pub at_rv: u64,
    pub resource: Resource,
    pub event_type: EventType,
    pub object: Arc<Value>,
    /// The previous state for MODIFIED events (selector transitions).
    pub old: Option<Arc<Value>>,
}

/// How a write treats `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusMode {
    /// Store the status as given (Rust API and controllers).
    Keep,
    /// Main-resource write: keep the stored status.
    Ignore,
    /// `/status` write: change only the status.
    Only,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub policy: Propagation,
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub(crate) enum DeleteOutcome {
    /// The object is gone (its last state).
    Deleted(Value),
    /// The object is terminating, waiting for finalizers or the kubelet.
    Terminating(Value),
}

/// One page of a LIST: the objects, the list's resourceVersion, the continue token if more
/// follow.
pub(crate) type Page = (Vec<Arc<Value>>, u64, Option<String>);

/// How a watch starts.
pub(crate) enum WatchStart {
    /// The requested resourceVersion is older than the compaction window.
    Expired(String),
    /// Events to send first (synthetic ADDED), then the history from `cursor`.
    Start {
        initial: Vec<Arc<Value>>,
        cursor: u64,
        rv: u64,
        drop_gen: u64,
    },
}

/// The whole simulated cluster state.
pub(crate) struct State {
    pub config: SimConfig,
    pub objects: Objects,
    pub rv: u64,
    pub floor: u64,
    pub history: VecDeque<HistEvent>,
    pub next_seq: u64,
    pub known_uids: HashSet<String>,
    pub previous: HashMap<String, Arc<Value>>,
    pub expire_next_watch: bool,
    pub duplicate_next_event: bool,
    pub drop_gen: u64,
    pub shutdown: bool,
    pub requests: Vec<RecordedRequest>,
    pub sandbox_ids: HashMap<String, String>,
    /// Uids of the claims a controller call is binding right now (the claim reconciler
    /// leaves them alone).
    pub binding_claims: HashSet<String>,
    /// How far the simulator's clock is ahead of the wall clock.
    pub clock_offset: chrono::Duration,
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checks the shape of an object's metadata so later code can rely on it.
fn validate_shape(object: &Value) -> Result<(), SimError> {
    let Some(map) = object.as_object() else {
        return Err(SimError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    let Some(meta) = map.get("metadata") else {
        return Ok(());
    };
    let Some(meta) = meta.as_object() else {
        return Err(SimError::BadRequest("metadata must be an object".into()));
    };
    for field in [
        "name",
        "namespace",
        "generateName",
        "resourceVersion",
        "uid",
    ] {
        if meta
            .get(field)
            .is_some_and(|v| !v.is_string() && !v.is_null())
        {
            return Err(SimError::BadRequest(format!(
                "metadata.{field} must be a string"
            )));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(v) = meta.get(field) {
            let ok = v.is_null()
                || v.as_object()
                    .is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return Err(SimError::Invalid(format!(
                    "metadata.{field}: must be a map of strings"
                )));
            }
        }
    }
    if let Some(v) = meta.get("finalizers") {
        let ok = v.is_null()
            || v.as_array()
                .is_some_and(|a| a.iter().all(|v| v.is_string()));
        if !ok {
            return Err(SimError::Invalid(
                "metadata.finalizers: must be a list of strings".into(),
            ));
        }
    }
    if let Some(v) = meta.get("ownerReferences") {
        let ok = v.is_null()
            || v.as_array().is_some_and(|a| {
                a.iter().all(|r| {
                    ["apiVersion", "kind", "name", "uid"]
                        .iter()
                        .all(|f| r.get(f).is_some_and(Value::is_string))
                })
            });
        if !ok {
            return Err(SimError::Invalid(
                "metadata.ownerReferences: each needs apiVersion, kind, name and uid strings"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Whether two maps are equal apart from the keys `skip`, compared in place (every write
/// compares whole objects; copying them first was most of its cost).
fn eq_except(a: &Map<String, Value>, b: &Map<String, Value>, skip: &[&str]) -> bool {
    let kept = |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether the objects differ outside `metadata` and `status`: what bumps `generation`.
fn spec_changed(new: &Value, old: &Value) -> bool {
    match (new.as_object(), old.as_object()) {
        (Some(n), Some(o)) => !eq_except(n, o, &["metadata", "status", "apiVersion", "kind"]),
        _ => new != old,
    }
}

/// Whether the objects are equal apart from `metadata.resourceVersion` (a missing
/// `metadata` counting as an empty one).
fn same_but_rv(a: &Value, b: &Value) -> bool {
    fn meta<'a>(v: &'a Value, none: &'a Map<String, Value>) -> &'a Map<String, Value> {
        v.get("metadata").and_then(Value::as_object).unwrap_or(none)
    }
    let none = Map::new();
    match (a.as_object(), b.as_object()) {
        (Some(ma), Some(mb)) => {
            eq_except(ma, mb, &["metadata"])
                && eq_except(meta(a, &none), meta(b, &none), &["resourceVersion"])
        }
        _ => a == b,
    }
}

fn rv_of(object: &Value) -> u64 {
    util::meta_str(object, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl State {
    /// A fresh, empty cluster.
    pub fn new(config: SimConfig) -> State {
        State {
            config,
            objects: Objects::default(),
            rv: 1,
            floor: 0,
            history: VecDeque::new(),
            next_seq: 0,
            known_uids: HashSet::new(),
            previous: HashMap::new(),
            expire_next_watch: false,
            duplicate_next_event: false,
            drop_gen: 0,
            shutdown: false,
            requests: Vec::new(),
            sandbox_ids: HashMap::new(),
            binding_claims: HashSet::new(),
            clock_offset: chrono::Duration::zero(),
        }
    }

    /// The simulator's clock: the wall clock plus [`State::clock_offset`]. Timestamps the
    /// server writes and claim expiry (`spec.lifecycle.shutdownTime`) use it.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.clock_offset
    }

    /// [`State::now`] as RFC 3339 with second precision.
    pub fn now_rfc3339(&self) -> String {
        util::rfc3339(self.now())
    }

    // ----- history -----

    fn emit(
        &mut self,
        resource: Resource,
        event_type: EventType,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let event = HistEvent {
            seq: self.next_seq,
            at_rv: self.rv,
            resource,
            event_type,
            object,
            old,
        };
        self.next_seq += 1;
        self.history.push_back(event.clone());
        if self.duplicate_next_event {
            self.duplicate_next_event = false;
            self.history.push_back(HistEvent {
                seq: self.next_seq,
                ..event
            });
            self.next_seq += 1;
        }
        self.compact();
    }

    /// Records an older version of an object as a MODIFIED event for open watches.
    pub fn inject_stale(&mut self, resource: Resource, namespace: &str, name: &str) -> bool {
        let key = (resource, namespace.to_string(), name.to_string());
        let Some(current) = self.objects.get(&key) else {
            return false;
        };
        let uid = util::uid_of(current).to_string();
        let Some(old) = self.previous.get(&uid).cloned() else {
            return false;
        };
        self.history.push_back(HistEvent {
            seq: self.next_seq,
            at_rv: self.rv,
            resource,
            event_type: EventType::Modified,
            object: old,
            old: None,
        });
        self.next_seq += 1;
        self.compact();
        true
    }

    fn compact(&mut self) {
        let window = self.config.compaction_window.max(1);
        while let Some(front) = self.history.front() {
            if front.at_rv.saturating_add(window) <= self.rv {
                self.floor = self.floor.max(front.at_rv);
                self.history.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forgets the history and moves the compaction window past every resourceVersion
    /// handed out so far.
    pub fn restart(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
        self.drop_gen += 1;
    }

    // ----- raw writes -----

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    // The store, the history and `previous` share one copy of each object version; the
    // caller gets its own copy of the new one.

    fn insert_new(&mut self, key: Key, mut object: Value) -> Value {
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), rv.to_string().into());
        let shared = Arc::new(object);
        self.objects.insert(key.clone(), shared.clone());
        let object = (*shared).clone();
        self.emit(key.0, EventType::Added, shared, None);
        object
    }

    fn write(&mut self, key: &Key, mut object: Value) -> Value {
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), rv.to_string().into());
        let shared = Arc::new(object);
        let old = self.objects.insert(key.clone(), shared.clone());
        if let Some(old) = &old {
            self.previous
                .insert(util::uid_of(old).to_string(), old.clone());
        }
        let object = (*shared).clone();
        self.emit(key.0, EventType::Modified, shared, old);
        object
    }

    fn finish_delete(&mut self, key: &Key, mut object: Value) -> Value {
        if let Some(old) = self.objects.remove(key) {
            self.previous.insert(util::uid_of(&old).to_string(), old);
        }
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), rv.to_string().into());
        self.emit(key.0, EventType::Deleted, Arc::new(object.clone()), None);
        object
    }

    /// Stores `new` over `old`: nothing when unchanged, a delete when a terminating object
    /// lost its last finalizer, a MODIFIED otherwise.
    fn commit(&mut self, key: &Key, old: &Value, new: Value) -> Value {
        if same_but_rv(&new, old) {
            return old.clone();
        }
        if util::is_terminating(&new) && util::finalizers(&new).is_empty() {
            return self.finish_delete(key, new);
        }
        self.write(key, new)
    }

    // ----- API semantics -----

    fn key(resource: Resource, namespace: &str, name: &str) -> Key {
        (resource, namespace.to_string(), name.to_string())
    }

    /// GET.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(resource, namespace, name))
    }

    /// Objects of `resource` (in `namespace`, or all), in (namespace, name) order.
    pub fn iter<'a>(
        &'a self,
        resource: Resource,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects
            .iter(resource, namespace, None)
            .map(|(k, v)| (k, &**v))
    }

    /// Checks and fills `apiVersion`/`kind`.
    fn check_type(
        resource: Resource,
        object: &mut Value,
        version: Option<&str>,
        served: crate::Served,
    ) -> Result<(), SimError> {
        let map = object.as_object_mut().expect("validated object");
        match map.get("kind").and_then(Value::as_str) {
            Some(kind) if kind != resource.kind() => {
                return Err(SimError::BadRequest(format!(
                    "the kind of the object ({kind}) does not match the resource ({})",
                    resource.kind()
                )))
            }
            _ => {}
        }
        map.insert("kind".into(), resource.kind().into());
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let wanted = match (version, api_version) {
            (Some(v), Some(av)) => {
                let want = resource.api_version(v);
                if av != want {
                    return Err(SimError::BadRequest(format!(
                        "the API version in the data ({av}) does not match the expected API version ({want})"
                    )));
                }
                want
            }
            (Some(v), None) => resource.api_version(v),
            (None, Some(av)) => {
                let version = av.rsplit('/').next().unwrap_or("");
                if group_of(&av) != resource.group()
                    || !resource.versions(served).contains(&version)
                {
                    return Err(SimError::BadRequest(format!(
                        "apiVersion {av} is not served for {}",
                        resource.kind()
                    )));
                }
                av
            }
            (None, None) => resource.preferred_api_version(served),
        };
        map.insert("apiVersion".into(), wanted.into());
        Ok(())
    }

    /// POST. `privileged` (Rust API, controllers) keeps `status` as given and skips
    /// admission defaults.
    pub fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
        version: Option<&str>,
        privileged: bool,
    ) -> Result<Value, SimError> {
        validate_shape(&object)?;
        Self::check_type(resource, &mut object, version, self.config.served)?;
        let meta = meta_mut(&mut object);
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
            if !ns.is_empty() && ns != namespace {
                return Err(SimError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        let name = match meta.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => loop {
                    let candidate = format!("{prefix}{}", util::random_suffix(5));
                    if self.get(resource, namespace, &candidate).is_none() {
                        break candidate;
                    }
                },
                _ => {
                    return Err(SimError::Invalid(format!(
                        "{} is invalid: metadata.name: Required value: name or generateName is required",
                        resource.kind()
                    )))
                }
            },
        };
        if !is_dns_subdomain(&name) {
            return Err(SimError::Invalid(format!(
                "{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                resource.kind()
            )));
        }
        if !is_dns_subdomain(namespace) {
            return Err(SimError::BadRequest(format!(
                "invalid namespace {namespace:?}"
            )));
        }
        if self.get(resource, namespace, &name).is_some() {
            return Err(SimError::AlreadyExists {
                resource: resource.qualified(),
                name,
            });
        }
        // The simulator's own controllers may choose the uid up front (the PVC binder
        // names the PV after it, as real provisioners do); clients never can.
        let uid = match meta.get("uid").and_then(Value::as_str) {
            Some(chosen) if privileged && !chosen.is_empty() => chosen.to_string(),
            _ => util::new_uid(),
        };
        meta.insert("name".into(), name.clone().into());
        meta.insert("namespace".into(), namespace.into());
        meta.insert("uid".into(), uid.clone().into());
        meta.insert("creationTimestamp".into(), self.now_rfc3339().into());
        meta.insert("generation".into(), 1.into());
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            if meta.get(field).is_some_and(Value::is_null) {
                meta.remove(field);
            }
        }
        if !privileged {
            let map = object.as_object_mut().expect("object");
            match resource {
                Resource::Pod | Resource::PersistentVolumeClaim => {
                    map.insert("status".into(), json!({"phase": "Pending"}));
                }
                _ => {
                    map.remove("status");
                }
            }
            if resource == Resource::PersistentVolumeClaim {
                let mut fins = util::finalizers(&object);
                if !fins.iter().any(|f| f == PVC_PROTECTION_FINALIZER) {
                    fins.push(PVC_PROTECTION_FINALIZER.into());
                }
                util::set_finalizers(&mut object, &fins);
            }
        }
        self.known_uids.insert(uid);
        Ok(self.insert_new(Self::key(resource, namespace, &name), object))
    }

    /// PUT (or the write half of a PATCH).
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut body: Value,
        mode: StatusMode,
        version: Option<&str>,
    ) -> Result<Value, SimError> {
        validate_shape(&body)?;
        let key = Self::key(resource, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| SimError::not_found(resource, name))?;
        Self::check_type(resource, &mut body, version, self.config.served)?;
        let meta = meta_mut(&mut body);
        if let Some(n) = meta.get("name").and_then(Value::as_str) {
            if n != name {
                return Err(SimError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
            if !ns.is_empty() && ns != namespace {
                return Err(SimError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        if let Some(rv) = meta.get("resourceVersion").and_then(Value::as_str) {
            if !rv.is_empty() && Some(rv) != util::meta_str(&old, "resourceVersion") {
                return Err(SimError::conflict(
                    resource,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        if let Some(uid) = meta.get("uid").and_then(Value::as_str) {
            if !uid.is_empty() && uid != util::uid_of(&old) {
                return Err(SimError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        util::uid_of(&old)
                    ),
                ));
            }
        }
        let mut new = match mode {
            StatusMode::Only => {
                let mut n = old.clone();
                let map = n.as_object_mut().expect("object");
                match body.get("status") {
                    Some(s) if !s.is_null() => {
                        map.insert("status".into(), s.clone());
                    }
                    _ => {
                        map.remove("status");
                    }
                }
                n
            }
            StatusMode::Ignore => {
                let map = body.as_object_mut().expect("object");
                match old.get("status") {
                    Some(s) => {
                        map.insert("status".into(), s.clone());
                    }
                    None => {
                        map.remove("status");
                    }
                }
                body
            }
            StatusMode::Keep => body,
        };
        // Server-managed metadata survives every write.
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let meta = meta_mut(&mut new);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        meta.insert(
            "resourceVersion".into(),
            old_meta
                .get("resourceVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match meta.get(field) {
                Some(Value::Null) => true,
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
        if util::is_terminating(&old) {
            let old_fins = util::finalizers(&old);
            if util::finalizers(&new).iter().any(|f| !old_fins.contains(f)) {
                return Err(SimError::Invalid(format!(
                    "{} {name:?} is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                    resource.kind()
                )));
            }
        }
        if spec_changed(&new, &old) {
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new).insert("generation".into(), generation.into());
        }
        Ok(self.commit(&key, &old, new))
    }

    /// PATCH with a JSON merge patch.
    pub fn merge_patch(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: &Value,
        mode: StatusMode,
        version: Option<&str>,
    ) -> Result<Value, SimError> {
        if !patch.is_object() {
            return Err(SimError::BadRequest(
                "a merge patch must be a JSON object".into(),
            ));
        }
        let old = self
            .get(resource, namespace, name)
            .cloned()
            .ok_or_else(|| SimError::not_found(resource, name))?;
        let mut doc = match version {
            Some(v) => render(&old, resource, v),
            None => old,
        };
        util::merge_patch(&mut doc, patch);

        self.update(resource, namespace, name, doc, mode, version)
    }

    /// DELETE without running the garbage collector.
    pub fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<DeleteOutcome, SimError> {
        let key = Self::key(resource, namespace, name);
        let mut object = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| SimError::not_found(resource, name))?;
        if let Some(uid) = &opts.uid {
            if uid != util::uid_of(&object) {
                return Err(SimError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        util::uid_of(&object)
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if Some(rv.as_str()) != util::meta_str(&object, "resourceVersion") {
                return Err(SimError::conflict(
                    resource,
                    name,
                    "Precondition failed: the resourceVersion in the precondition does not match",
                ));
            }
        }
        if util::is_terminating(&object) {
            return Ok(DeleteOutcome::Terminating(object));
        }
        let mut fins = util::finalizers(&object);
        let gc_finalizer = match opts.policy {
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Background => None,
        };
        if let Some(f) = gc_finalizer {
            if !fins.iter().any(|x| x == f) {
                fins.push(f.to_string());
            }
        }
        let node = util::path_str(&object, "spec.nodeName").unwrap_or("");
        let graceful_pod = resource == Resource::Pod && !node.is_empty() && opts.grace != Some(0);
        if fins.is_empty() && !graceful_pod {
            return Ok(DeleteOutcome::Deleted(self.finish_delete(&key, object)));
        }
        let grace = if graceful_pod {
            opts.grace
                .or_else(|| {
                    object
                        .get("spec")
                        .and_then(|s| s.get("terminationGracePeriodSeconds"))
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .max(0)
        } else {
            0
        };
        util::set_finalizers(&mut object, &fins);
        let when = self.now() + chrono::Duration::seconds(grace);
        let meta = meta_mut(&mut object);
        meta.insert("deletionTimestamp".into(), util::rfc3339(when).into());
        meta.insert("deletionGracePeriodSeconds".into(), grace.into());
        let generation = meta.get("generation").and_then(Value::as_i64);
        if let Some(g) = generation {
            meta.insert("generation".into(), (g + 1).into());
        }
        Ok(DeleteOutcome::Terminating(self.write(&key, object)))
    }

    // ----- built-in controllers -----

    /// Keys of objects in `namespace` with an ownerReference to `uid`.
    pub fn dependents(&self, namespace: &str, uid: &str) -> Vec<Key> {
        self.objects
            .dependents_of(uid)
            .filter(|k| k.1 == namespace)
            .cloned()
            .collect()
    }

    fn gc_delete(&mut self, key: &Key, policy: Propagation) {
        let opts = DeleteOpts {
            policy,
            ..Default::default()
        };
        let _ = self.delete(key.0, &key.1.clone(), &key.2.clone(), &opts);
    }

    fn remove_finalizer(&mut self, key: &Key, finalizer: &str) {
        if let Some(old) = self.objects.get(key).cloned() {
            let fins: Vec<String> = util::finalizers(&old)
                .into_iter()
                .filter(|f| f != finalizer)
                .collect();
            let mut new = old.clone();
            util::set_finalizers(&mut new, &fins);
            self.commit(key, &old, new);
        }
    }

    fn terminating_with(&self, finalizer: &str) -> Vec<Key> {
        self.objects
            .terminating()
            .filter(|k| {
                self.objects
                    .get(k)
                    .is_some_and(|v| util::finalizers(v).iter().any(|f| f == finalizer))
            })
            .cloned()
            .collect()
    }

    /// One pass of the garbage collector, the kubelet and pvc-protection; true if anything
    /// changed.
    fn settle_once(&mut self) -> bool {
        let mut changed = false;
        // A: orphan finalizers: strip the owner from its dependents, then let it go.
        for key in self.terminating_with(ORPHAN_FINALIZER) {
            let Some(owner) = self.objects.get(&key).cloned() else {
                continue;
            };
            let uid = util::uid_of(&owner).to_string();
            for dep in self.dependents(&key.1, &uid) {
                if let Some(old) = self.objects.get(&dep).cloned() {
                    let refs = util::owner_refs(&old)
                        .into_iter()
                        .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                        .collect();
                    let mut new = old.clone();
                    util::set_owner_refs(&mut new, refs);
                    self.commit(&dep, &old, new);
                }
            }
            self.remove_finalizer(&key, ORPHAN_FINALIZER);
            changed = true;
        }
        // B: foreground deletion: delete dependents, drop the finalizer once no blocking
        // dependent is left.
        for key in self.terminating_with(FOREGROUND_FINALIZER) {
            let Some(owner) = self.objects.get(&key).cloned() else {
                continue;
            };
            let uid = util::uid_of(&owner).to_string();
            for dep in self.dependents(&key.1, &uid) {
                let Some(d) = self.objects.get(&dep) else {
                    continue;
                };
                if util::is_terminating(d) {
                    continue;
                }
                let has_deps = !self.dependents(&dep.1, util::uid_of(d)).is_empty();
                let policy = if has_deps {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                self.gc_delete(&dep, policy);
                changed = true;
            }
            let blocking = self.dependents(&key.1, &uid).into_iter().any(|dep| {
                self.objects.get(&dep).is_some_and(|d| {
                    util::owner_refs(d).iter().any(|r| {
                        r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                            && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
                })
            });
            if !blocking {
                self.remove_finalizer(&key, FOREGROUND_FINALIZER);
                changed = true;
            }
        }
        // C: dependents whose owners are gone. Only objects written since their last check,
        // or whose owner uid disappeared, can have a gone owner (the index's queue); taken in
        // key order, and a key queued behind the cursor during the pass is seen in this pass,
        // as a scan of every object with ownerReferences would.
        let mut cursor: Option<Key> = None;
        while let Some(key) = self.objects.next_gc_candidate(cursor.as_ref()) {
            cursor = Some(key.clone());
            let Some(obj) = self.objects.get(&key).cloned() else {
                continue;
            };
            let refs = util::owner_refs(&obj);
            if refs.is_empty() {
                continue;
            }
            let absent: Vec<bool> = refs
                .iter()
                .map(|r| {
                    let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
                    !self.objects.uid_alive(uid) && self.known_uids.contains(uid)
                })
                .collect();
            if absent.iter().all(|a| *a) {
                if !util::is_terminating(&obj) {
                    self.gc_delete(&key, Propagation::Background);
                    changed = true;
                }
            } else if absent.iter().any(|a| *a) {
                let kept = refs
                    .into_iter()
                    .zip(absent)
                    .filter(|(_, a)| !a)
                    .map(|(r, _)| r)
                    .collect();
                let mut new = obj.clone();
                util::set_owner_refs(&mut new, kept);
                self.commit(&key, &obj, new);
                changed = true;
            }
        }
        // D: the kubelet finishes graceful pod deletion.
        let pods: Vec<(Key, Value)> = self
            .objects
            .terminating()
            .filter(|k| k.0 == Resource::Pod)
            .filter_map(|k| self.objects.get(k).map(|v| (k.clone(), v.clone())))
            .filter(|(_, v)| util::finalizers(v).is_empty())
            .collect();
        for (key, pod) in pods {
            self.finish_delete(&key, pod);
            changed = true;
        }
        // E: pvc-protection releases PVCs no pod uses.
        for key in self.terminating_with(PVC_PROTECTION_FINALIZER) {
            if key.0 != Resource::PersistentVolumeClaim {
                continue;
            }
            if !self.objects.pvc_in_use(&key.1, &key.2) {
                self.remove_finalizer(&key, PVC_PROTECTION_FINALIZER);
                changed = true;
            }
        }
        changed
    }

    /// Runs the built-in controllers until nothing changes.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            if !self.settle_once() {
                break;
            }
        }
    }

    // ----- list and watch -----

    /// One page of a LIST.
    pub fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, SimError> {
        let (list_rv, after) = match continue_token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let bad = || SimError::BadRequest(format!("continue key is not valid: {token:?}"));
                let decoded: Value = util::hex_decode(token)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(bad)?;
                let rv = decoded.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
                let ns = decoded.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
                let name = decoded
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?;
                if rv < self.floor {
                    return Err(SimError::Gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    ));
                }
                (rv, Some((ns.to_string(), name.to_string())))
            }
            None => (self.rv, None),
        };
        let mut items: Vec<Arc<Value>> = Vec::new();
        let mut next = None;
        let after = after
            .as_ref()
            .map(|(ns, name)| (ns.as_str(), name.as_str()));
        // The page starts at the continue position in the ordered store, not at the first
        // object, so paging through n objects costs O(n), not O(n²/limit).
        for (_, object) in self.objects.iter(resource, namespace, after) {
            if !labels.matches(object) || !fields.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                let last: &Value = items.last().expect("limit > 0");
                let token = json!({"rv": list_rv, "ns": util::namespace_of(last), "name": util::name_of(last)});
                next = Some(util::hex_encode(token.to_string().as_bytes()));
                break;
            }
            items.push(object.clone());
        }
        Ok((items, list_rv, next))
    }

    /// Where a watch from `resource_version` starts.
    pub fn watch_start(
        &mut self,
        resource: Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        resource_version: Option<&str>,
        send_initial_events: bool,
    ) -> Result<WatchStart, SimError> {
        if self.expire_next_watch {
            self.expire_next_watch = false;
            return Ok(WatchStart::Expired(
                "too old resource version (injected by expire_next_watch)".into(),
            ));
        }
        let rv = match resource_version.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                SimError::BadRequest(format!("invalid resourceVersion {v:?}: not a number"))
            })?),
        };
        let initial_wanted = send_initial_events || matches!(rv, None | Some(0));
        let initial: Vec<Arc<Value>> = if initial_wanted {
            self.objects
                .iter(resource, namespace, None)
                .filter(|(_, v)| labels.matches(v) && fields.matches(v))
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            Vec::new()
        };
        let cursor = match rv {
            Some(x) if x != 0 && !send_initial_events => {
                if x < self.floor {
                    return Ok(WatchStart::Expired(format!(
                        "too old resource version: {x} ({})",
                        self.floor
                    )));
                }
                // The history is in resourceVersion order: binary search.
                let first = self.history.partition_point(|e| e.at_rv <= x);
                self.history.get(first).map_or(self.next_seq, |e| e.seq)
            }
            _ => self.next_seq,
        };
        Ok(WatchStart::Start {
            initial,
            cursor,
            rv: self.rv,
            drop_gen: self.drop_gen,
        })
    }

    /// History entries from `cursor` on; `None` if the cursor was compacted away.
    pub fn events_since(&self, cursor: u64) -> Option<Vec<HistEvent>> {
        match self.history.front() {
            Some(front) if front.seq > cursor => None,
            None if cursor < self.next_seq => None,
            _ => {
                // In seq order: binary search, then copy only what the watch has not seen.
                let first = self.history.partition_point(|e| e.seq < cursor);
                Some(self.history.range(first..).cloned().collect())
            }
        }
    }
}

/// Renders a stored object in the version a request asked for.
pub(crate) fn render(object: &Value, resource: Resource, version: &str) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version(version).into());
        map.insert("kind".into(), resource.kind().into());
    }
    o
}

/// The `PartialObjectMetadata` form of an object.
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}

/// `rv_of` for other modules.
pub(crate) fn resource_version_of(object: &Value) -> u64 {
    rv_of(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{FieldSelector, LabelSelector};

    fn state(window: u64) -> State {
        State::new(SimConfig {
            controllers: false,
            compaction_window: window,
            ..SimConfig::default()
        })
    }

    fn pod(s: &mut State, ns: &str, name: &str) {
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}});
        s.create(Resource::Pod, ns, object, None, true).unwrap();
    }

    fn cursor(s: &mut State, rv: u64) -> Result<u64, String> {
        let labels = LabelSelector::default();
        let fields = FieldSelector::default();
        match s.watch_start(
            Resource::Pod,
            None,
            &labels,
            &fields,
            Some(&rv.to_string()),
            false,
        ) {
            Ok(WatchStart::Start { cursor, .. }) => Ok(cursor),
            Ok(WatchStart::Expired(message)) => Err(message),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn watch_positions_are_found_by_resource_version_and_expire_with_the_window() {
        let mut s = state(8);
        for i in 0..20 {
            pod(&mut s, "a", &format!("p{i}"));
        }
        // Writes at rv 2..=21; the window keeps the last 8 resourceVersions.
        assert_eq!(s.rv, 21);
        assert_eq!(s.history.len(), 8);
        for rv in s.floor..=s.rv {
            // The first event strictly after `rv`, as a scan would find it.
            let expected = s
                .history
                .iter()
                .find(|e| e.at_rv > rv)
                .map_or(s.next_seq, |e| e.seq);
            assert_eq!(cursor(&mut s, rv), Ok(expected), "from {rv}");
            let events = s.events_since(expected).expect("in the window");
            assert!(events.iter().all(|e| e.at_rv > rv));
            assert_eq!(events.len() as u64, s.rv - rv.max(s.history[0].at_rv - 1));
        }
        // Older than the window: 410 at the start, `None` for a stream that fell behind.
        let before_window = s.floor - 1;
        let too_old = cursor(&mut s, before_window).unwrap_err();
        assert!(too_old.starts_with("too old resource version"), "{too_old}");
        assert!(s.events_since(s.history[0].seq - 1).is_none());
        assert_eq!(s.events_since(s.next_seq).map(|e| e.len()), Some(0));
    }

    #[test]
    fn pages_resume_at_their_continue_position() {
        let mut s = state(1000);
        for ns in ["a", "b", "c"] {
            for i in 0..7 {
                pod(&mut s, ns, &format!("p{i}"));
            }
        }
        let labels = LabelSelector::default();
        let fields = FieldSelector::default();
        for (namespace, total) in [(None, 21), (Some("b"), 7)] {
            let all = s
                .list_page(Resource::Pod, namespace, &labels, &fields, None, None)
                .unwrap()
                .0;
            assert_eq!(all.len(), total);
            let mut paged = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let (items, rv, next) = s
                    .list_page(
                        Resource::Pod,
                        namespace,
                        &labels,
                        &fields,
                        Some(4),
                        token.as_deref(),
                    )
                    .unwrap();
                assert_eq!(rv, s.rv);
                assert!(items.len() <= 4);
                paged.extend(items);
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            assert_eq!(paged, all);
        }
        // A token older than the window is refused with 410.
        let (_, _, token) = s
            .list_page(Resource::Pod, None, &labels, &fields, Some(1), None)
            .unwrap();
        s.restart();
        let err = s
            .list_page(
                Resource::Pod,
                None,
                &labels,
                &fields,
                Some(1),
                token.as_deref(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 410);
    }
}
