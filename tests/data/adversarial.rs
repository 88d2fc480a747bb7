//! The one table of adversarial cases (`tests/data/adversarial.json`, DOMAIN.md §8) and
//! what every harness needs to run it: the table's types, a [`World`] that follows a
//! case's cluster history object by object, and the three forms a harness feeds to what
//! it tests: watch events (in process and `claim-ledger ingest`), merge patches for a
//! live API server (the black-box test and the generated scenario files), and check
//! requests. Included with `#[path]` by `api/tests/it/adversarial.rs`, `tests/it/fixtures.rs`,
//! `tests/it/blackbox_api.rs` and `tests/it/scenarios.rs`, so the cases are written once.
//! The format is described in `tests/fixtures/README.md` ("The adversarial table").

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The table's text, next to this file.
const TABLE: &str = include_str!("adversarial.json");

const SANDBOX_API: &str = "agents.x-k8s.io/v1beta1";
const CLAIM_API: &str = "extensions.agents.x-k8s.io/v1beta1";
/// The finalizer every harness that drives an API server uses to hold an object terminating.
pub const HOLD: &str = "example.com/hold";

/// The harnesses that run the table; a case's `skip` names them.
pub const HARNESSES: [&str; 4] = ["in_process", "ingest", "blackbox", "scenario"];

/// The whole table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Prose for readers.
    #[serde(default)]
    pub description: String,
    /// Shared opening histories, by name; a case starts with one through `prelude`.
    #[serde(default)]
    pub preludes: BTreeMap<String, Vec<Step>>,
    /// Reason codes no case can reach, each with why.
    #[serde(default)]
    pub unreachable: BTreeMap<String, String>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One adversarial case: a cluster history with checks along the way.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique, snake_case: harnesses report failures by it.
    pub name: String,
    /// What the attack or mistake is, for readers.
    pub description: String,
    /// The prelude the steps continue.
    #[serde(default)]
    pub prelude: Option<String>,
    /// Harnesses that cannot express this case, each with why.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    /// The history and the checks, in order.
    pub steps: Vec<Step>,
}

/// One step of a case.
#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A new object (a new uid, even when the name was used before).
    Create(Object),
    /// Fields of a live object change (`set` holds the fields of [`Object`] to replace).
    Update {
        /// The object's handle.
        r#ref: String,
        /// The new values; `null` clears an optional field.
        set: Map<String, Value>,
    },
    /// The object gets a deletionTimestamp (held by a finalizer).
    Terminate(String),
    /// The object is gone.
    Delete(String),
    /// A check and its answer.
    Expect(Expect),
    /// A transition the log holds about an object.
    ExpectLog(ExpectLog),
}

/// A recorded kind, with the fields the cases vary. Object handles (`ref`) name one
/// generation of an object; `forged:<tag>` in place of a handle is a uid no cluster holds.
#[derive(Debug, Deserialize, serde::Serialize, Clone)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Object {
    /// A SandboxClaim; `sandbox` is its `status.sandbox.name`.
    SandboxClaim {
        r#ref: String,
        name: String,
        #[serde(default)]
        sandbox: Option<String>,
    },
    /// A Sandbox with its controller and labels.
    Sandbox {
        r#ref: String,
        name: String,
        #[serde(default)]
        owner: Option<Owner>,
        /// The `agents.x-k8s.io/claim-uid` label: a claim handle or `forged:<tag>`.
        #[serde(default)]
        claim_uid_label: Option<String>,
        /// The `openshell.ai/sandbox-id` label (a direct Sandbox).
        #[serde(default)]
        sandbox_id_label: Option<String>,
    },
    /// A pod; its controller is the Sandbox `sandbox` (or a ReplicaSet).
    Pod {
        r#ref: String,
        name: String,
        /// The controller: a Sandbox handle or `forged:<tag>`.
        sandbox: String,
        /// The controller's name when `sandbox` is forged.
        #[serde(default)]
        sandbox_name: Option<String>,
        /// `ReplicaSet` for a pod no Sandbox controls (default `Sandbox`).
        #[serde(default)]
        controller_kind: Option<String>,
        /// The `openshell.io/sandbox-id` annotation.
        #[serde(default)]
        sandbox_id: Option<String>,
    },
    /// A workspace PVC bound to `volume`, controlled by the Sandbox `sandbox` if any.
    PersistentVolumeClaim {
        r#ref: String,
        name: String,
        #[serde(default)]
        sandbox: Option<String>,
        volume: String,
    },
}

/// Who controls a Sandbox: a claim (a handle, or `forged:<tag>` with `name`) or a
/// SandboxWarmPool by name (pools are never recorded, so their uid is forged).
#[derive(Debug, Deserialize, serde::Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// A check: the pod `pod` (or `name` with `uid`), the caller's expectations, the answer.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub pod: Option<String>,
    /// Ask under this name instead of the pod's.
    #[serde(default)]
    pub name: Option<String>,
    /// Ask with this uid (a handle or `forged:<tag>`) instead of the pod's.
    #[serde(default)]
    pub uid: Option<String>,
    /// Ask in another namespace than the case's.
    #[serde(default)]
    pub other_namespace: bool,
    #[serde(default)]
    pub sandbox_id: Option<String>,
    #[serde(default)]
    pub sandbox_name: Option<String>,
    /// A Sandbox handle or `forged:<tag>`.
    #[serde(default)]
    pub sandbox_uid: Option<String>,
    /// A claim handle or `forged:<tag>`.
    #[serde(default)]
    pub claim_uid: Option<String>,
    #[serde(default)]
    pub require_claim: Option<bool>,
    /// `allow` or `deny`.
    pub decision: String,
    /// The reason code (`null` exactly on allow).
    #[serde(default)]
    pub reason: Option<String>,
    /// On allow, the binding's parts: `kind`, `sandbox` and `claim` (handles), `pvcs`
    /// (handles), `sandbox_id`.
    #[serde(default)]
    pub binding: Option<Map<String, Value>>,
}

/// `count` transitions named `transition` in the log mention the uid of `about`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExpectLog {
    pub transition: String,
    pub about: String,
    pub count: usize,
}

impl Object {
    pub fn handle(&self) -> &str {
        match self {
            Object::SandboxClaim { r#ref, .. }
            | Object::Sandbox { r#ref, .. }
            | Object::Pod { r#ref, .. }
            | Object::PersistentVolumeClaim { r#ref, .. } => r#ref,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::SandboxClaim { name, .. }
            | Object::Sandbox { name, .. }
            | Object::Pod { name, .. }
            | Object::PersistentVolumeClaim { name, .. } => name,
        }
    }

    /// The kind as the API server names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::SandboxClaim { .. } => "SandboxClaim",
            Object::Sandbox { .. } => "Sandbox",
            Object::Pod { .. } => "Pod",
            Object::PersistentVolumeClaim { .. } => "PersistentVolumeClaim",
        }
    }

    /// The handle of the object's controller, when it is one of the case's objects.
    fn controller(&self) -> Option<&str> {
        match self {
            Object::Sandbox {
                owner: Some(Owner {
                    claim: Some(claim), ..
                }),
                ..
            } => Some(claim),
            Object::Pod {
                sandbox,
                controller_kind: None,
                ..
            } => Some(sandbox),
            Object::PersistentVolumeClaim {
                sandbox: Some(sandbox),
                ..
            } => Some(sandbox),
            _ => None,
        }
    }
}

impl Table {
    /// The table, parsed and checked (unique case names, known harnesses and preludes).
    pub fn load() -> Table {
        let table: Table = serde_json::from_str(TABLE)
            .unwrap_or_else(|e| panic!("tests/data/adversarial.json: {e}"));
        let mut names = BTreeSet::new();
        for case in &table.cases {
            assert!(names.insert(&case.name), "case {} twice", case.name);
            for harness in case.skip.keys() {
                assert!(
                    HARNESSES.contains(&harness.as_str()),
                    "case {}: unknown harness {harness}",
                    case.name
                );
            }
            if let Some(prelude) = &case.prelude {
                assert!(
                    table.preludes.contains_key(prelude),
                    "case {}: no prelude {prelude}",
                    case.name
                );
            }
        }
        table
    }

    /// The cases `harness` runs, each with its prelude's steps in front.
    pub fn cases_for(&self, harness: &str) -> Vec<Case> {
        self.cases
            .iter()
            .filter(|case| !case.skip.contains_key(harness))
            .map(|case| {
                let mut steps = case
                    .prelude
                    .as_ref()
                    .map(|p| self.preludes[p].clone())
                    .unwrap_or_default();
                steps.extend(case.steps.iter().cloned());
                Case {
                    steps,
                    ..case.clone()
                }
            })
            .collect()
    }
}

/// FNV-1a: stable across runs and platforms, unlike the std hasher.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uid no cluster holds, stable per tag.
pub fn forged_uid(tag: &str) -> String {
    format!(
        "deadbeef-0000-4000-8000-{:012x}",
        fnv(tag) & 0xffff_ffff_ffff
    )
}

/// Four hex digits naming a case in the uids invented for it.
pub fn case_tag(case: &str) -> String {
    format!("{:04x}", fnv(case) & 0xffff)
}

/// What a step asks of a harness, with everything resolved against the [`World`].
#[derive(Debug)]
pub enum Action {
    /// The object `handle` was created; a harness that creates it must then call
    /// [`World::register`] with its uid (a harness that invents uids already has).
    Create { handle: String },
    /// The object changed from `before` to the world's manifest.
    Update { handle: String, before: Value },
    /// The object is now terminating.
    Terminate { handle: String },
    /// The object is gone. `collected`: its dependents an API server's garbage collector
    /// removes with it (a harness that writes events deletes them explicitly later).
    Delete {
        handle: String,
        was_terminating: bool,
        collected: Vec<String>,
    },
    /// A check to make, and its answer.
    Expect(Check),
    /// A transition count to find in the log.
    ExpectLog(LogCheck),
}

/// A check request (JSON, as `POST /v1/identity/check` takes it) and the answer it must get.
#[derive(Debug, Clone)]
pub struct Check {
    pub request: Value,
    pub decision: String,
    pub reason: Option<String>,
    /// Parts the allowed binding must hold ([`contains`]).
    pub binding: Option<Value>,
}

/// How many `transition`s about `uid` the log must hold; `selector` is the history query
/// key of the uid's kind.
#[derive(Debug, Clone)]
pub struct LogCheck {
    pub transition: String,
    pub selector: &'static str,
    pub uid: String,
    pub count: usize,
}

/// A case's cluster as its history has made it so far.
pub struct World {
    namespace: String,
    objects: BTreeMap<String, Object>,
    uids: BTreeMap<String, String>,
    terminating: BTreeSet<String>,
    gone: BTreeSet<String>,
    /// Assigns uids when the harness does not get them from an API server: the case's tag
    /// (so that cases replayed into one ledger never share a uid) and a counter.
    invent: Option<(String, usize)>,
}

impl World {
    /// A world whose uids the harness registers as the API server assigns them.
    pub fn served(namespace: &str) -> World {
        World {
            namespace: namespace.to_string(),
            objects: BTreeMap::new(),
            uids: BTreeMap::new(),
            terminating: BTreeSet::new(),
            gone: BTreeSet::new(),
            invent: None,
        }
    }

    /// A world that invents a fresh uid for every created object, unique to the case.
    pub fn inventing(namespace: &str, case: &str) -> World {
        World {
            invent: Some((case_tag(case), 0)),
            ..World::served(namespace)
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn object(&self, handle: &str) -> &Object {
        self.objects
            .get(handle)
            .unwrap_or_else(|| panic!("no object {handle}"))
    }

    /// Records the uid the API server gave `handle`.
    pub fn register(&mut self, handle: &str, uid: &str) {
        self.uids.insert(handle.to_string(), uid.to_string());
    }

    /// The uid of a handle, or of `forged:<tag>`.
    pub fn uid(&self, reference: &str) -> String {
        if let Some(tag) = reference.strip_prefix("forged:") {
            return forged_uid(tag);
        }
        self.uids
            .get(reference)
            .unwrap_or_else(|| panic!("no uid for {reference}"))
            .clone()
    }

    /// Every handle created so far.
    pub fn handles(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// Whether the case deleted the object.
    pub fn is_gone(&self, handle: &str) -> bool {
        self.gone.contains(handle)
    }

    pub fn is_terminating(&self, handle: &str) -> bool {
        self.terminating.contains(handle)
    }

    /// Applies one step and says what the harness must do.
    pub fn step(&mut self, step: &Step) -> Action {
        match step {
            Step::Create(object) => {
                let handle = object.handle().to_string();
                assert!(
                    !self.objects.contains_key(&handle),
                    "handle {handle} created twice"
                );
                if let Some((tag, counter)) = self.invent.as_mut() {
                    *counter += 1;
                    let prefix = match object {
                        Object::SandboxClaim { .. } => "c1a1m000",
                        Object::Sandbox { .. } => "5a4db0x0",
                        Object::Pod { .. } => "p0d00000",
                        Object::PersistentVolumeClaim { .. } => "pvc00000",
                    };
                    let uid = format!("{prefix}-{tag}-4000-8000-{:012}", *counter);
                    self.uids.insert(handle.clone(), uid);
                }
                self.objects.insert(handle.clone(), object.clone());
                Action::Create { handle }
            }
            Step::Update { r#ref, set } => {
                self.assert_live(r#ref);
                let before = self.manifest(r#ref);
                let mut fields = serde_json::to_value(self.object(r#ref)).unwrap();
                for (key, value) in set {
                    assert!(key != "ref" && key != "kind", "{ref}: {key} cannot change");
                    fields[key] = value.clone();
                }
                let object: Object = serde_json::from_value(fields)
                    .unwrap_or_else(|e| panic!("update of {ref}: {e}"));
                self.objects.insert(r#ref.clone(), object);
                Action::Update {
                    handle: r#ref.clone(),
                    before,
                }
            }
            Step::Terminate(handle) => {
                self.assert_live(handle);
                self.terminating.insert(handle.clone());
                Action::Terminate {
                    handle: handle.clone(),
                }
            }
            Step::Delete(handle) => {
                self.assert_live(handle);
                let was_terminating = self.terminating.remove(handle);
                self.gone.insert(handle.clone());
                let collected = self.dependents(handle);
                Action::Delete {
                    handle: handle.clone(),
                    was_terminating,
                    collected,
                }
            }
            Step::Expect(expect) => self.expect(expect),
            Step::ExpectLog(log) => Action::ExpectLog(LogCheck {
                transition: log.transition.clone(),
                selector: match self.object(&log.about) {
                    Object::SandboxClaim { .. } => "claim_uid",
                    Object::Sandbox { .. } => "sandbox_uid",
                    Object::Pod { .. } => "pod_uid",
                    Object::PersistentVolumeClaim { .. } => "pvc_uid",
                },
                uid: self.uid(&log.about),
                count: log.count,
            }),
        }
    }

    fn assert_live(&self, handle: &str) {
        assert!(self.objects.contains_key(handle), "no object {handle}");
        assert!(!self.gone.contains(handle), "{handle} is gone");
    }

    /// Live objects whose controller chain leads to `handle` and which no finalizer holds.
    fn dependents(&self, handle: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut owners = vec![handle.to_string()];
        while let Some(owner) = owners.pop() {
            for (child, object) in &self.objects {
                if object.controller() == Some(owner.as_str())
                    && !self.gone.contains(child)
                    && !self.terminating.contains(child)
                    && !out.contains(child)
                {
                    out.push(child.clone());
                    owners.push(child.clone());
                }
            }
        }
        out
    }

    fn expect(&self, expect: &Expect) -> Action {
        let pod = expect.pod.as_ref().map(|p| self.object(p));
        let name = expect
            .name
            .clone()
            .or_else(|| pod.map(|p| p.name().to_string()))
            .expect("expect needs `pod` or `name`");
        let uid = match (&expect.uid, &expect.pod) {
            (Some(uid), _) => self.uid(uid),
            (None, Some(pod)) => self.uid(pod),
            (None, None) => panic!("expect needs `pod` or `uid`"),
        };
        let namespace = if expect.other_namespace {
            format!("{}-other", self.namespace)
        } else {
            self.namespace.clone()
        };
        let mut request = json!({"namespace": namespace, "pod_name": name, "pod_uid": uid});
        if let Some(id) = &expect.sandbox_id {
            request["sandbox_id"] = json!(id);
        }
        if let Some(sandbox) = &expect.sandbox_name {
            request["sandbox_name"] = json!(sandbox);
        }
        if let Some(sandbox) = &expect.sandbox_uid {
            request["sandbox_uid"] = json!(self.uid(sandbox));
        }
        if let Some(claim) = &expect.claim_uid {
            request["claim_uid"] = json!(self.uid(claim));
        }
        if let Some(require) = expect.require_claim {
            request["require_claim"] = json!(require);
        }
        assert_eq!(
            expect.reason.is_none(),
            expect.decision == "allow",
            "a reason exactly when the decision is not allow: {expect:?}"
        );
        let binding = expect.binding.as_ref().map(|parts| {
            let mut binding = json!({});
            for (key, value) in parts {
                binding[key] = match key.as_str() {
                    "sandbox" | "claim" => json!({"uid": self.uid(value.as_str().unwrap())}),
                    "pvcs" => value
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|pvc| json!({"uid": self.uid(pvc.as_str().unwrap())}))
                        .collect(),
                    _ => value.clone(),
                };
            }
            binding
        });
        Action::Expect(Check {
            request,
            decision: expect.decision.clone(),
            reason: expect.reason.clone(),
            binding,
        })
    }

    fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
        json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}])
    }

    fn name_of(&self, reference: &str, fallback: &Option<String>) -> String {
        match fallback {
            Some(name) => name.clone(),
            None => self.object(reference).name().to_string(),
        }
    }

    /// The object as a client writes it: no uid, resourceVersion, deletion state or
    /// finalizers (each harness adds those its way). Empty maps are left out, as the API
    /// server leaves them out.
    pub fn manifest(&self, handle: &str) -> Value {
        let object = self.object(handle);
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(object.name()));
        metadata.insert("namespace".into(), json!(self.namespace));
        let mut labels = Map::new();
        let mut annotations = Map::new();
        let value = match object {
            Object::SandboxClaim { sandbox, .. } => {
                let mut claim = json!({"apiVersion": CLAIM_API, "kind": "SandboxClaim",
                    "spec": {"warmPoolRef": {"name": "python-pool"}}});
                if let Some(sandbox) = sandbox {
                    claim["status"] = json!({"sandbox": {"name": sandbox},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady",
                                        "lastTransitionTime": "2026-05-20T15:00:05Z", "message": ""}]});
                }
                claim
            }
            Object::Sandbox {
                owner,
                claim_uid_label,
                sandbox_id_label,
                ..
            } => {
                match owner {
                    Some(Owner {
                        claim: Some(claim),
                        name,
                        ..
                    }) => {
                        let name = self.name_of(claim, name);
                        metadata.insert(
                            "ownerReferences".into(),
                            Self::controller_ref(
                                CLAIM_API,
                                "SandboxClaim",
                                &name,
                                &self.uid(claim),
                            ),
                        );
                    }
                    Some(Owner {
                        pool: Some(pool), ..
                    }) => {
                        metadata.insert(
                            "ownerReferences".into(),
                            Self::controller_ref(
                                CLAIM_API,
                                "SandboxWarmPool",
                                pool,
                                &forged_uid(pool),
                            ),
                        );
                        labels.insert(
                            "agents.x-k8s.io/warm-pool-sandbox".into(),
                            json!("ed572cc4"),
                        );
                    }
                    Some(owner) => panic!("an owner is a claim or a pool: {owner:?}"),
                    None => {}
                }
                if let Some(claim) = claim_uid_label {
                    labels.insert("agents.x-k8s.io/claim-uid".into(), json!(self.uid(claim)));
                }
                if let Some(id) = sandbox_id_label {
                    labels.insert("openshell.ai/sandbox-id".into(), json!(id));
                }
                annotations.insert("agents.x-k8s.io/pod-name".into(), json!(object.name()));
                json!({"apiVersion": SANDBOX_API, "kind": "Sandbox",
                    "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
                             "volumeClaimTemplates": [{"metadata": {"name": "workspace"}, "spec": {}}]}})
            }
            Object::Pod {
                sandbox,
                sandbox_name,
                controller_kind,
                sandbox_id,
                ..
            } => {
                let owner = match controller_kind.as_deref() {
                    None | Some("Sandbox") => Self::controller_ref(
                        SANDBOX_API,
                        "Sandbox",
                        &self.name_of(sandbox, sandbox_name),
                        &self.uid(sandbox),
                    ),
                    Some(kind) => Self::controller_ref(
                        "apps/v1",
                        kind,
                        &self.name_of(sandbox, sandbox_name),
                        &self.uid(sandbox),
                    ),
                };
                metadata.insert("ownerReferences".into(), owner);
                if let Some(id) = sandbox_id {
                    annotations.insert("openshell.io/sandbox-id".into(), json!(id));
                }
                json!({"apiVersion": "v1", "kind": "Pod",
                       "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}})
            }
            Object::PersistentVolumeClaim {
                sandbox, volume, ..
            } => {
                if let Some(sandbox) = sandbox {
                    metadata.insert(
                        "ownerReferences".into(),
                        Self::controller_ref(
                            SANDBOX_API,
                            "Sandbox",
                            self.object(sandbox).name(),
                            &self.uid(sandbox),
                        ),
                    );
                }
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                                "resources": {"requests": {"storage": "1Gi"}}},
                       "status": {"phase": "Bound"}})
            }
        };
        if !labels.is_empty() {
            metadata.insert("labels".into(), Value::Object(labels));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), Value::Object(annotations));
        }
        let mut value = value;
        value["metadata"] = Value::Object(metadata);
        value
    }
}

/// The JSON merge patch (RFC 7386) that turns `before` into `after`.
pub fn merge_patch(before: &Value, after: &Value) -> Value {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) if previous == value => {}
                    Some(previous) => {
                        patch.insert(key.clone(), merge_patch(previous, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

/// Turns a case into watch events and expectations, inventing uids and resourceVersions
/// (the in-process and `ingest` harnesses). Deletes follow the history exactly: nothing
/// is collected that the case does not delete.
pub struct EventWriter {
    pub world: World,
    resource_version: u64,
}

/// A watch event line, or a check to make after the events before it.
#[derive(Debug)]
pub enum Line {
    Event(Value),
    Expect(Check),
    ExpectLog(LogCheck),
}

impl EventWriter {
    pub fn new(namespace: &str, case: &str) -> EventWriter {
        EventWriter {
            world: World::inventing(namespace, case),
            resource_version: 100,
        }
    }

    fn object(&mut self, handle: &str, terminating: bool) -> Value {
        // Uneven steps, as when unrelated objects are written in between.
        self.resource_version += 3 + self.resource_version % 5;
        let mut object = self.world.manifest(handle);
        let metadata = object["metadata"].as_object_mut().unwrap();
        metadata.insert("uid".into(), json!(self.world.uid(handle)));
        metadata.insert(
            "resourceVersion".into(),
            json!(self.resource_version.to_string()),
        );
        if terminating {
            metadata.insert("deletionTimestamp".into(), json!("2026-05-20T16:00:30Z"));
            metadata.insert("finalizers".into(), json!([HOLD]));
        }
        object
    }

    /// The lines of one step.
    pub fn step(&mut self, step: &Step) -> Vec<Line> {
        let event =
            |kind: &str, object: Value| Line::Event(json!({"type": kind, "object": object}));
        match self.world.step(step) {
            Action::Create { handle } => vec![event("ADDED", self.object(&handle, false))],
            Action::Update { handle, .. } => {
                let terminating = self.world.is_terminating(&handle);
                vec![event("MODIFIED", self.object(&handle, terminating))]
            }
            Action::Terminate { handle } => vec![event("MODIFIED", self.object(&handle, true))],
            Action::Delete {
                handle,
                was_terminating,
                ..
            } => {
                let mut object = self.object(&handle, was_terminating);
                // The update that removes the last finalizer is the one that deletes.
                if let Some(metadata) = object["metadata"].as_object_mut() {
                    metadata.remove("finalizers");
                }
                vec![event("DELETED", object)]
            }
            Action::Expect(check) => vec![Line::Expect(check)],
            Action::ExpectLog(check) => vec![Line::ExpectLog(check)],
        }
    }
}

/// Every transition of the entries of a `/v1/history` answer; `None` when the answer holds
/// no entries or an entry no transitions.
pub fn history_transitions(history: &Value) -> Option<Vec<Value>> {
    let mut transitions = Vec::new();
    for entry in history["entries"].as_array()? {
        transitions.extend(entry["entry"]["transitions"].as_array()?.iter().cloned());
    }
    Some(transitions)
}

/// The transitions named `transition` whose JSON mentions `uid`, in `transitions`.
pub fn count_transitions<'a>(
    transitions: impl IntoIterator<Item = &'a Value>,
    transition: &str,
    uid: &str,
) -> usize {
    transitions
        .into_iter()
        .filter(|t| t["transition"] == transition && t.to_string().contains(uid))
        .count()
}

/// Whether `actual` holds everything `expected` names (objects by key, arrays by
/// position, anything else equal); the first difference otherwise.
pub fn contains(actual: &Value, expected: &Value) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, value) in expected {
                contains(actual.get(key).unwrap_or(&Value::Null), value)
                    .map_err(|e| format!("{key}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(actual), Value::Array(expected)) if actual.len() == expected.len() => {
            for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
                contains(a, e).map_err(|e| format!("[{index}]: {e}"))?;
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => Err(format!("expected {expected}, got {actual}")),
    }
}
