//! Property: for random watch-event sequences over a small universe of agent-sandbox
//! objects, the live projection equals the projection rebuilt by replay (from empty, and
//! from the latest snapshot at open), replay re-derives every stored transition, incident
//! replay (`state_at_seq`, `verify_from`) reproduces what was live at that seq, no
//! (uid, resourceVersion, removal) is recorded twice, and `check` answers the same on the
//! live and reopened ledger. Along the way every append outcome is checked against what the
//! log already records, and the incrementally derived bindings against `check`.
//!
//! The universe is deliberately tiny (2 namespaces, 3 claim names, 4 sandbox names, pods and
//! PVCs named after sandboxes, 3 PVs) so names collide, uids get reused under the same name,
//! and the binding rule actually forms, releases and violates bindings. Every object is built
//! as Kubernetes JSON and goes through `schemas::normalize`, with one global, increasing
//! resourceVersion counter (even numbers; odd ones are only used for stale replays).
//!
//! `PROPTEST_CASES` overrides the case count (48 by default) for longer exploratory runs.
//! Known bugs are kept at the end as `#[ignore]`d tests with their minimized inputs.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::{AppendOutcome, CheckRequest, Decision, Ledger, LedgerConfig, Projection, Verdict};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use schemas::{normalize, ObjectChange, ObjectKind, Reason, Transition, WatchEventType};
use serde_json::{json, Map, Value};

const NAMESPACES: [&str; 2] = ["tenant-a", "tenant-b"];
const CLAIMS: [&str; 3] = ["alpha", "beta", "gamma"];
/// The first three coincide with the claim names: the cold path names a Sandbox after its claim.
const SANDBOXES: [&str; 4] = ["alpha", "beta", "gamma", "pool-x7k2p"];
const TEMPLATES: [&str; 2] = ["workspace", "cache"];
const PVS: [&str; 3] = ["pv-0001", "pv-0002", "pv-0003"];
const SANDBOX_IDS: [&str; 3] = ["gw-0", "gw-1", "gw-2"];
const POLICIES: [Option<&str>; 4] = [
    None,
    Some("Delete"),
    Some("DeleteForeground"),
    Some("Retain"),
];
const PHASES: [&str; 3] = ["Pending", "Running", "Succeeded"];

const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";
const SANDBOX_ID_LABEL: &str = "openshell.ai/sandbox-id";
const POD_SANDBOX_ID: &str = "openshell.io/sandbox-id";
const POOL_LABEL: &str = "agents.x-k8s.io/pool";

/// What an adopted Sandbox's `claim-uid` label says.
#[derive(Debug, Clone, Copy)]
enum Label {
    Absent,
    Right,
    /// The uid of another claim (or a made-up one): `CLAIM_UID_MISMATCH`.
    Wrong,
}

/// Who controls a pod.
#[derive(Debug, Clone, Copy)]
enum PodOwner {
    /// A Sandbox, referenced in `v1alpha1` (false) or `v1beta1` (true).
    Sandbox(bool),
    /// A reference to the Sandbox without `controller: true`: not sandbox-owned.
    SandboxNotController,
    ReplicaSet,
    Nobody,
}

/// Picks an element of a non-empty list (modulo its length; shrinks towards the first).
#[derive(Debug, Clone, Copy)]
struct Pick(u16);

impl Pick {
    fn index(&self, len: usize) -> usize {
        usize::from(self.0) % len
    }
}

/// One step of the simulated cluster (and of the ledger's life).
#[derive(Debug, Clone)]
enum Op {
    /// The pool creates (or takes back) Sandbox `sb`, owned by a SandboxWarmPool.
    WarmSandbox {
        ns: usize,
        sb: usize,
        beta: bool,
        templates: usize,
        pv: Option<usize>,
    },
    /// A gateway creates Sandbox `sb` directly, labelled `openshell.ai/sandbox-id`.
    DirectSandbox { ns: usize, sb: usize, id: usize },
    /// Creates (or re-specs) a claim, in the v1alpha1 or v1beta1 layout.
    Claim {
        ns: usize,
        claim: usize,
        beta: bool,
        policy: usize,
    },
    /// Sandbox `sb` gets its ownerReferences replaced by claim (`claim_ns`, `claim`).
    Adopt {
        ns: usize,
        sb: usize,
        claim_ns: usize,
        claim: usize,
        label: Label,
        beta_ref: bool,
    },
    /// Sets (`Some`, right or wrong) or clears `status.sandbox.name` of a claim.
    ClaimStatus {
        ns: usize,
        claim: usize,
        sandbox: Option<usize>,
        ready: bool,
    },
    /// Warm bind: adopt Sandbox `sb` (created warm first if absent) and set the status.
    BindWarm { ns: usize, claim: usize, sb: usize },
    /// Cold bind: claim, Sandbox named after it, PVC, pod, status; each only if absent.
    ColdBind {
        ns: usize,
        claim: usize,
        beta: bool,
        pv: Option<usize>,
        id: Option<usize>,
    },
    /// Creates pod `sb` (or rewrites its owner and annotation if it exists).
    Pod {
        ns: usize,
        sb: usize,
        owner: PodOwner,
        id: Option<usize>,
    },
    /// Changes a live pod's sandbox-id annotation and phase.
    PodUpdate {
        ns: usize,
        sb: usize,
        id: Option<usize>,
        phase: usize,
    },
    /// Creates PVC `<template>-<sb>` owned by Sandbox `owner` (usually `sb`), or rewrites it.
    Pvc {
        ns: usize,
        sb: usize,
        template: usize,
        owner: usize,
        pv: Option<usize>,
    },
    /// Orphan-deletes a claim's Sandbox: ownerReferences dropped, labels kept.
    Orphan { ns: usize, sb: usize },
    /// Sets deletionTimestamp on a live object.
    Terminate { target: Pick },
    /// DELETED event (fresh resourceVersion).
    Delete { target: Pick },
    /// The same name under a new uid; the old uid's DELETED is emitted or missed.
    Recreate { target: Pick, emit_delete: bool },
    /// Status churn: a fresh resourceVersion, no identity-relevant change.
    Churn { target: Pick },
    /// Replays an earlier event verbatim.
    Duplicate { event: Pick },
    /// Replays an earlier event with an older, never-used resourceVersion.
    Stale { event: Pick },
    /// A relist lacks an object: its last observation, marked missing on resync.
    MissingOnResync { event: Pick, fresh_rv: bool },
    /// Appends the pending changes; the clock moves (possibly backwards).
    EndBatch { capture: bool, advance_ms: i64 },
    /// `Ledger::flush`.
    Flush,
    /// Appends pending changes, drops the ledger and opens it again.
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let ns = || prop_oneof![5 => Just(0usize), 1 => Just(1usize)];
    let claim = || 0..CLAIMS.len();
    let sb = || 0..SANDBOXES.len();
    let id = || proptest::option::weighted(0.8, 0..SANDBOX_IDS.len());
    let label = prop_oneof![
        1 => Just(Label::Absent),
        3 => Just(Label::Right),
        1 => Just(Label::Wrong),
    ];
    let pod_owner = prop_oneof![
        8 => any::<bool>().prop_map(PodOwner::Sandbox),
        1 => Just(PodOwner::SandboxNotController),
        1 => Just(PodOwner::ReplicaSet),
        1 => Just(PodOwner::Nobody),
    ];
    prop_oneof![
        6 => (ns(), sb(), any::<bool>(), 0..3usize, proptest::option::weighted(0.8, 0..PVS.len()))
            .prop_map(|(ns, sb, beta, templates, pv)| Op::WarmSandbox { ns, sb, beta, templates, pv }),
        3 => (ns(), sb(), 0..SANDBOX_IDS.len())
            .prop_map(|(ns, sb, id)| Op::DirectSandbox { ns, sb, id }),
        5 => (ns(), claim(), any::<bool>(), 0..POLICIES.len()).prop_map(
            |(ns, claim, beta, policy)| Op::Claim { ns, claim, beta, policy }
        ),
        5 => (ns(), sb(), prop_oneof![4 => Just(None), 1 => Just(Some(()))], claim(), label, any::<bool>())
            .prop_map(|(ns, sb, cross, claim, label, beta_ref)| Op::Adopt {
                ns,
                sb,
                claim_ns: if cross.is_some() { 1 - ns } else { ns },
                claim,
                label,
                beta_ref,
            }),
        5 => (ns(), claim(), proptest::option::weighted(0.85, sb()), any::<bool>()).prop_map(
            |(ns, claim, sandbox, ready)| Op::ClaimStatus { ns, claim, sandbox, ready }
        ),
        8 => (ns(), claim(), sb()).prop_map(|(ns, claim, sb)| Op::BindWarm { ns, claim, sb }),
        5 => (ns(), claim(), any::<bool>(), proptest::option::weighted(0.8, 0..PVS.len()), id())
            .prop_map(|(ns, claim, beta, pv, id)| Op::ColdBind { ns, claim, beta, pv, id }),
        7 => (ns(), sb(), pod_owner, id())
            .prop_map(|(ns, sb, owner, id)| Op::Pod { ns, sb, owner, id }),
        6 => (ns(), sb(), id(), 0..PHASES.len())
            .prop_map(|(ns, sb, id, phase)| Op::PodUpdate { ns, sb, id, phase }),
        6 => (ns(), sb(), 0..TEMPLATES.len(), prop_oneof![3 => Just(None), 1 => sb().prop_map(Some)],
              proptest::option::weighted(0.8, 0..PVS.len()))
            .prop_map(|(ns, sb, template, other, pv)| Op::Pvc {
                ns,
                sb,
                template,
                owner: other.unwrap_or(sb),
                pv,
            }),
        1 => (ns(), sb()).prop_map(|(ns, sb)| Op::Orphan { ns, sb }),
        3 => any::<u16>().prop_map(Pick).prop_map(|target| Op::Terminate { target }),
        4 => any::<u16>().prop_map(Pick).prop_map(|target| Op::Delete { target }),
        3 => (any::<u16>().prop_map(Pick), any::<bool>())
            .prop_map(|(target, emit_delete)| Op::Recreate { target, emit_delete }),
        2 => any::<u16>().prop_map(Pick).prop_map(|target| Op::Churn { target }),
        3 => any::<u16>().prop_map(Pick).prop_map(|event| Op::Duplicate { event }),
        3 => any::<u16>().prop_map(Pick).prop_map(|event| Op::Stale { event }),
        2 => (any::<u16>().prop_map(Pick), any::<bool>())
            .prop_map(|(event, fresh_rv)| Op::MissingOnResync { event, fresh_rv }),
        8 => (any::<bool>(), -2_000i64..5_000)
            .prop_map(|(capture, advance_ms)| Op::EndBatch { capture, advance_ms }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn case_strategy() -> impl Strategy<Value = (u64, Vec<Op>)> {
    (0u64..7, proptest::collection::vec(op_strategy(), 1..120))
}

type Key = (ObjectKind, usize, String);

fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str, controller: bool) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": true,
    })
}

fn agents_version(beta: bool) -> &'static str {
    if beta {
        "v1beta1"
    } else {
        "v1alpha1"
    }
}

fn claim_spec(beta: bool, policy: usize) -> Value {
    let mut lifecycle = Map::new();
    if let Some(policy) = POLICIES[policy] {
        lifecycle.insert("shutdownPolicy".into(), json!(policy));
    }
    if beta {
        json!({"warmPoolRef": {"name": "pool"}, "lifecycle": lifecycle})
    } else {
        json!({"sandboxTemplateRef": {"name": "python-agent"}, "warmpool": "pool",
               "lifecycle": lifecycle})
    }
}

/// Counters of what a run exercised, to show the generator reaches the interesting paths.
#[derive(Debug, Default, Clone)]
struct Coverage {
    appended: usize,
    duplicates: usize,
    stale: usize,
    ignored: usize,
    bound_claim: usize,
    bound_direct: usize,
    released: usize,
    single_use: usize,
    workspace_reused: usize,
    orphaned: usize,
    mutated: usize,
    missing_on_resync: usize,
    snapshots_cases: usize,
    reopens: usize,
}

/// The simulated cluster plus the ledger under test.
struct Run {
    dir: tempfile::TempDir,
    config: LedgerConfig,
    ledger: Option<Ledger>,
    /// Last global resourceVersion handed out (always even).
    rv: u64,
    next_uid: u64,
    now: DateTime<Utc>,
    /// The current generation of each (kind, namespace, name), as JSON without resourceVersion.
    live: BTreeMap<Key, Value>,
    /// Every change offered to the ledger, in order.
    emitted: Vec<ObjectChange>,
    pending: Vec<ObjectChange>,
    /// Every pod uid ever emitted, with its namespace and name.
    pods: BTreeMap<String, (String, String)>,
    /// Live projections captured right after a batch, by head seq.
    captured: BTreeMap<u64, Projection>,
    /// Whether a duplicate of a change appended earlier in the same batch must be reported
    /// as a duplicate (the known within-batch bug is tolerated when false).
    strict: bool,
    /// Every (uid, resourceVersion, removal) appended, with its seq.
    recorded: HashMap<(String, String, bool), u64>,
    /// Whether each uid is gone after its last appended entry.
    recorded_gone: HashMap<String, bool>,
    coverage: Coverage,
}

impl Run {
    fn new(snapshot_every: u64) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            background_snapshots: false,
            snapshot_every,
            ..LedgerConfig::default()
        };
        let ledger = open(dir.path(), &config);
        Run {
            dir,
            config,
            ledger: Some(ledger),
            rv: 1_000,
            next_uid: 0,
            now: Utc.timestamp_opt(1_790_000_000, 123_456_789).unwrap(),
            live: BTreeMap::new(),
            emitted: Vec::new(),
            pending: Vec::new(),
            pods: BTreeMap::new(),
            captured: BTreeMap::new(),
            strict: true,
            recorded: HashMap::new(),
            recorded_gone: HashMap::new(),
            coverage: Coverage::default(),
        }
    }

    fn ledger(&mut self) -> &mut Ledger {
        self.ledger.as_mut().expect("ledger open")
    }

    fn fresh_rv(&mut self) -> String {
        self.rv += 2;
        self.rv.to_string()
    }

    fn fresh_uid(&mut self, kind: ObjectKind) -> String {
        self.next_uid += 1;
        let prefix = match kind {
            ObjectKind::Sandbox => "sbx",
            ObjectKind::SandboxClaim => "clm",
            ObjectKind::Pod => "pod",
            ObjectKind::PersistentVolumeClaim => "pvc",
        };
        format!("{prefix}-{:04}", self.next_uid)
    }

    fn uid_of(&self, kind: ObjectKind, ns: usize, name: &str) -> Option<String> {
        self.live
            .get(&(kind, ns, name.to_string()))
            .map(|v| v["metadata"]["uid"].as_str().unwrap().to_string())
    }

    /// Emits one watch event for `object` with a fresh resourceVersion, through the normalizer.
    fn emit(&mut self, event: WatchEventType, object: &Value) {
        let mut object = object.clone();
        object["metadata"]["resourceVersion"] = json!(self.fresh_rv());
        let change = normalize(event, &object)
            .expect("generated objects normalize")
            .expect("generated objects are recorded kinds");
        if change.kind == ObjectKind::Pod {
            self.pods.insert(
                change.uid.to_string(),
                (change.namespace.to_string(), change.name.to_string()),
            );
        }
        self.emitted.push(change.clone());
        self.pending.push(change);
    }

    /// Stores `object` as the live generation of its key and emits ADDED or MODIFIED.
    fn put(&mut self, key: Key, object: Value, added: bool) {
        let event = if added {
            WatchEventType::Added
        } else {
            WatchEventType::Modified
        };
        self.emit(event, &object);
        self.live.insert(key, object);
    }

    fn sandbox_uid_or_ghost(&self, ns: usize, sb: usize) -> String {
        self.uid_of(ObjectKind::Sandbox, ns, SANDBOXES[sb])
            .unwrap_or_else(|| format!("ghost-sbx-{ns}-{sb}"))
    }

    fn claim_uid_or_ghost(&self, ns: usize, claim: usize) -> String {
        self.uid_of(ObjectKind::SandboxClaim, ns, CLAIMS[claim])
            .unwrap_or_else(|| format!("ghost-clm-{ns}-{claim}"))
    }

    fn new_sandbox(&mut self, ns: usize, sb: usize, beta: bool, templates: usize) -> Value {
        let name = SANDBOXES[sb];
        let uid = self.fresh_uid(ObjectKind::Sandbox);
        let templates: Vec<Value> = TEMPLATES[..templates]
            .iter()
            .map(|t| json!({"metadata": {"name": t}, "spec": {"accessModes": ["ReadWriteOnce"]}}))
            .collect();
        json!({
            "apiVersion": format!("agents.x-k8s.io/{}", agents_version(beta)),
            "kind": "Sandbox",
            "metadata": {
                "name": name,
                "namespace": NAMESPACES[ns],
                "uid": uid,
                "generation": 1,
                "labels": {},
                "annotations": {"agents.x-k8s.io/pod-name": name},
            },
            "spec": {
                "podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
                "volumeClaimTemplates": templates,
            },
            "status": {},
        })
    }

    /// The pool creates Sandbox `sb` (the Sandbox controller then creates its PVCs, the
    /// first on volume `pv`, and its pod, without a gateway identity yet), or takes an
    /// existing Sandbox back into the pool.
    fn warm_sandbox(
        &mut self,
        ns: usize,
        sb: usize,
        beta: bool,
        templates: usize,
        pv: Option<usize>,
    ) {
        let key = (ObjectKind::Sandbox, ns, SANDBOXES[sb].to_string());
        let (mut object, added) = match self.live.get(&key) {
            Some(object) => (object.clone(), false),
            None => (self.new_sandbox(ns, sb, beta, templates), true),
        };
        let meta = &mut object["metadata"];
        meta["ownerReferences"] = json!([owner_ref(
            &format!("extensions.agents.x-k8s.io/{}", agents_version(beta)),
            "SandboxWarmPool",
            "pool",
            &format!("pool-uid-{ns}"),
            true
        )]);
        meta["labels"][POOL_LABEL] = json!("pool");
        self.put(key, object, added);
        if added {
            for (template, prefix) in TEMPLATES.iter().enumerate().take(templates) {
                let name = format!("{prefix}-{}", SANDBOXES[sb]);
                if !self
                    .live
                    .contains_key(&(ObjectKind::PersistentVolumeClaim, ns, name))
                {
                    self.pvc(ns, sb, template, sb, pv.filter(|_| template == 0));
                }
            }
            if !self
                .live
                .contains_key(&(ObjectKind::Pod, ns, SANDBOXES[sb].to_string()))
            {
                self.pod(ns, sb, PodOwner::Sandbox(beta), None);
            }
        }
    }

    /// A gateway creates Sandbox `sb` directly (its pod then carries the same identity), or
    /// turns an existing one into a direct Sandbox.
    fn direct_sandbox(&mut self, ns: usize, sb: usize, id: usize) {
        let key = (ObjectKind::Sandbox, ns, SANDBOXES[sb].to_string());
        let (mut object, added) = match self.live.get(&key) {
            Some(object) => (object.clone(), false),
            None => (self.new_sandbox(ns, sb, true, 1), true),
        };
        let meta = &mut object["metadata"];
        if let Some(map) = meta.as_object_mut() {
            map.remove("ownerReferences");
        }
        meta["labels"][SANDBOX_ID_LABEL] = json!(SANDBOX_IDS[id]);
        self.put(key, object, added);
        let pod_key = (ObjectKind::Pod, ns, SANDBOXES[sb].to_string());
        if added && !self.live.contains_key(&pod_key) {
            self.pod(ns, sb, PodOwner::Sandbox(true), Some(id));
        }
    }

    fn claim(&mut self, ns: usize, claim: usize, beta: bool, policy: usize) {
        let key = (ObjectKind::SandboxClaim, ns, CLAIMS[claim].to_string());
        let (mut object, added) = match self.live.get(&key) {
            Some(object) => (object.clone(), false),
            None => {
                let uid = self.fresh_uid(ObjectKind::SandboxClaim);
                let object = json!({
                    "kind": "SandboxClaim",
                    "metadata": {
                        "name": CLAIMS[claim],
                        "namespace": NAMESPACES[ns],
                        "uid": uid,
                        "generation": 1,
                        "labels": {"app.kubernetes.io/managed-by": "openshell-gateway"},
                    },
                    "status": {},
                });
                (object, true)
            }
        };
        object["apiVersion"] = json!(format!(
            "extensions.agents.x-k8s.io/{}",
            agents_version(beta)
        ));
        object["spec"] = claim_spec(beta, policy);
        self.put(key, object, added);
    }

    fn adopt(
        &mut self,
        ns: usize,
        sb: usize,
        claim_ns: usize,
        claim: usize,
        label: Label,
        beta: bool,
    ) {
        let key = (ObjectKind::Sandbox, ns, SANDBOXES[sb].to_string());
        let Some(mut object) = self.live.get(&key).cloned() else {
            return;
        };
        let claim_uid = self.claim_uid_or_ghost(claim_ns, claim);
        let meta = &mut object["metadata"];
        meta["ownerReferences"] = json!([owner_ref(
            &format!("extensions.agents.x-k8s.io/{}", agents_version(beta)),
            "SandboxClaim",
            CLAIMS[claim],
            &claim_uid,
            true
        )]);
        let labels = meta["labels"].as_object_mut().unwrap();
        labels.remove(POOL_LABEL);
        match label {
            Label::Absent => {
                labels.remove(CLAIM_UID_LABEL);
            }
            Label::Right => {
                labels.insert(CLAIM_UID_LABEL.into(), json!(claim_uid));
            }
            Label::Wrong => {
                let other = self.claim_uid_or_ghost(claim_ns, (claim + 1) % CLAIMS.len());
                let wrong = if other == claim_uid {
                    format!("{claim_uid}-old")
                } else {
                    other
                };
                labels.insert(CLAIM_UID_LABEL.into(), json!(wrong));
            }
        }
        self.put(key, object, false);
    }

    fn claim_status(&mut self, ns: usize, claim: usize, sandbox: Option<usize>, ready: bool) {
        let key = (ObjectKind::SandboxClaim, ns, CLAIMS[claim].to_string());
        let Some(mut object) = self.live.get(&key).cloned() else {
            return;
        };
        let (status, reason) = if ready {
            ("True", "SandboxReady")
        } else {
            ("False", "SandboxNotReady")
        };
        let mut new_status = json!({"conditions": [{
            "type": "Ready", "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-05-21T04:00:03Z",
        }]});
        if let Some(sb) = sandbox {
            new_status["sandbox"] = json!({"name": SANDBOXES[sb]});
        }
        object["status"] = new_status;
        self.put(key, object, false);
    }

    fn pod(&mut self, ns: usize, sb: usize, owner: PodOwner, id: Option<usize>) {
        let name = SANDBOXES[sb];
        let key = (ObjectKind::Pod, ns, name.to_string());
        let (mut object, added) = match self.live.get(&key) {
            Some(object) => (object.clone(), false),
            None => {
                let uid = self.fresh_uid(ObjectKind::Pod);
                let object = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": NAMESPACES[ns], "uid": uid,
                                 "labels": {"agents.x-k8s.io/sandbox-name-hash": "d0dcf09b"}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:1",
                             "env": [{"name": "TOKEN", "value": "hunter2"}]}]},
                    "status": {"phase": "Pending"},
                });
                (object, true)
            }
        };
        let sandbox_uid = self.sandbox_uid_or_ghost(ns, sb);
        let meta = &mut object["metadata"];
        let refs = match owner {
            PodOwner::Sandbox(beta) => vec![owner_ref(
                &format!("agents.x-k8s.io/{}", agents_version(beta)),
                "Sandbox",
                name,
                &sandbox_uid,
                true,
            )],
            PodOwner::SandboxNotController => vec![owner_ref(
                "agents.x-k8s.io/v1beta1",
                "Sandbox",
                name,
                &sandbox_uid,
                false,
            )],
            PodOwner::ReplicaSet => vec![owner_ref("apps/v1", "ReplicaSet", name, "rs-uid", true)],
            PodOwner::Nobody => vec![],
        };
        meta["ownerReferences"] = json!(refs);
        set_annotation(meta, POD_SANDBOX_ID, id.map(|id| SANDBOX_IDS[id]));
        self.put(key, object, added);
    }

    fn pod_update(&mut self, ns: usize, sb: usize, id: Option<usize>, phase: usize) {
        let key = (ObjectKind::Pod, ns, SANDBOXES[sb].to_string());
        let Some(mut object) = self.live.get(&key).cloned() else {
            return;
        };
        set_annotation(
            &mut object["metadata"],
            POD_SANDBOX_ID,
            id.map(|id| SANDBOX_IDS[id]),
        );
        object["status"]["phase"] = json!(PHASES[phase]);
        self.put(key, object, false);
    }

    fn pvc(&mut self, ns: usize, sb: usize, template: usize, owner: usize, pv: Option<usize>) {
        let name = format!("{}-{}", TEMPLATES[template], SANDBOXES[sb]);
        let key = (ObjectKind::PersistentVolumeClaim, ns, name.clone());
        let (mut object, added) = match self.live.get(&key) {
            Some(object) => (object.clone(), false),
            None => {
                let uid = self.fresh_uid(ObjectKind::PersistentVolumeClaim);
                let object = json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": NAMESPACES[ns], "uid": uid,
                                 "finalizers": ["kubernetes.io/pvc-protection"]},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard"},
                    "status": {"phase": "Pending"},
                });
                (object, true)
            }
        };
        let sandbox_uid = self.sandbox_uid_or_ghost(ns, owner);
        object["metadata"]["ownerReferences"] = json!([owner_ref(
            "agents.x-k8s.io/v1alpha1",
            "Sandbox",
            SANDBOXES[owner],
            &sandbox_uid,
            true
        )]);
        match pv {
            Some(pv) => {
                object["spec"]["volumeName"] = json!(PVS[pv]);
                object["status"]["phase"] = json!("Bound");
            }
            None => {
                object["spec"].as_object_mut().unwrap().remove("volumeName");
                object["status"]["phase"] = json!("Pending");
            }
        }
        self.put(key, object, added);
    }

    fn orphan(&mut self, ns: usize, sb: usize) {
        let key = (ObjectKind::Sandbox, ns, SANDBOXES[sb].to_string());
        let Some(mut object) = self.live.get(&key).cloned() else {
            return;
        };
        object["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        self.put(key, object, false);
    }

    fn pick_live(&self, target: &Pick) -> Option<(Key, Value)> {
        if self.live.is_empty() {
            return None;
        }
        let i = target.index(self.live.len());
        self.live.iter().nth(i).map(|(k, v)| (k.clone(), v.clone()))
    }

    fn pick_emitted(&self, event: &Pick) -> Option<ObjectChange> {
        if self.emitted.is_empty() {
            return None;
        }
        Some(self.emitted[event.index(self.emitted.len())].clone())
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::WarmSandbox {
                ns,
                sb,
                beta,
                templates,
                pv,
            } => self.warm_sandbox(ns, sb, beta, templates, pv),
            Op::DirectSandbox { ns, sb, id } => self.direct_sandbox(ns, sb, id),
            Op::Claim {
                ns,
                claim,
                beta,
                policy,
            } => self.claim(ns, claim, beta, policy),
            Op::Adopt {
                ns,
                sb,
                claim_ns,
                claim,
                label,
                beta_ref,
            } => self.adopt(ns, sb, claim_ns, claim, label, beta_ref),
            Op::ClaimStatus {
                ns,
                claim,
                sandbox,
                ready,
            } => self.claim_status(ns, claim, sandbox, ready),
            Op::BindWarm { ns, claim, sb } => {
                if self
                    .uid_of(ObjectKind::Sandbox, ns, SANDBOXES[sb])
                    .is_none()
                {
                    self.warm_sandbox(ns, sb, true, 1, Some(sb % PVS.len()));
                }
                if self
                    .uid_of(ObjectKind::SandboxClaim, ns, CLAIMS[claim])
                    .is_none()
                {
                    self.claim(ns, claim, true, 0);
                }
                self.adopt(ns, sb, ns, claim, Label::Right, true);
                self.claim_status(ns, claim, Some(sb), true);
                // The claim injects the gateway identity once bound (an assignment).
                self.pod_update(ns, sb, Some(claim % SANDBOX_IDS.len()), 1);
            }
            Op::ColdBind {
                ns,
                claim,
                beta,
                pv,
                id,
            } => {
                let sb = claim; // the Sandbox is named after the claim
                if self
                    .uid_of(ObjectKind::SandboxClaim, ns, CLAIMS[claim])
                    .is_none()
                {
                    self.claim(ns, claim, beta, 1);
                }
                let sandbox_key = (ObjectKind::Sandbox, ns, SANDBOXES[sb].to_string());
                if !self.live.contains_key(&sandbox_key) {
                    let mut object = self.new_sandbox(ns, sb, beta, 1);
                    let claim_uid = self.claim_uid_or_ghost(ns, claim);
                    object["metadata"]["ownerReferences"] = json!([owner_ref(
                        &format!("extensions.agents.x-k8s.io/{}", agents_version(beta)),
                        "SandboxClaim",
                        CLAIMS[claim],
                        &claim_uid,
                        true
                    )]);
                    object["metadata"]["labels"][CLAIM_UID_LABEL] = json!(claim_uid);
                    self.put(sandbox_key, object, true);
                }
                let pvc_name = format!("{}-{}", TEMPLATES[0], SANDBOXES[sb]);
                if !self
                    .live
                    .contains_key(&(ObjectKind::PersistentVolumeClaim, ns, pvc_name))
                {
                    self.pvc(ns, sb, 0, sb, pv);
                }
                let pod_key = (ObjectKind::Pod, ns, SANDBOXES[sb].to_string());
                if !self.live.contains_key(&pod_key) {
                    self.pod(ns, sb, PodOwner::Sandbox(beta), id);
                }
                self.claim_status(ns, claim, Some(sb), true);
            }
            Op::Pod { ns, sb, owner, id } => self.pod(ns, sb, owner, id),
            Op::PodUpdate { ns, sb, id, phase } => self.pod_update(ns, sb, id, phase),
            Op::Pvc {
                ns,
                sb,
                template,
                owner,
                pv,
            } => self.pvc(ns, sb, template, owner, pv),
            Op::Orphan { ns, sb } => self.orphan(ns, sb),
            Op::Terminate { ref target } => {
                if let Some((key, mut object)) = self.pick_live(target) {
                    object["metadata"]["deletionTimestamp"] = json!("2026-06-01T00:00:00Z");
                    self.put(key, object, false);
                }
            }
            Op::Delete { ref target } => {
                if let Some((key, object)) = self.pick_live(target) {
                    self.emit(WatchEventType::Deleted, &object);
                    self.live.remove(&key);
                }
            }
            Op::Recreate {
                ref target,
                emit_delete,
            } => {
                if let Some((key, mut object)) = self.pick_live(target) {
                    if emit_delete {
                        self.emit(WatchEventType::Deleted, &object);
                    }
                    let uid = self.fresh_uid(key.0);
                    let meta = object["metadata"].as_object_mut().unwrap();
                    meta.insert("uid".into(), json!(uid));
                    meta.remove("deletionTimestamp");
                    self.put(key, object, true);
                }
            }
            Op::Churn { ref target } => {
                if let Some((key, mut object)) = self.pick_live(target) {
                    let n = self.rv;
                    object["metadata"]["annotations"]["example.com/churn"] = json!(n.to_string());
                    self.put(key, object, false);
                }
            }
            Op::Duplicate { ref event } => {
                if let Some(change) = self.pick_emitted(event) {
                    self.pending.push(change);
                }
            }
            Op::Stale { ref event } => {
                if let Some(mut change) = self.pick_emitted(event) {
                    let rv: u64 = change.resource_version.parse().unwrap();
                    // Odd: never handed out by the cluster, older than the event it copies.
                    change.resource_version = (rv - 1).to_string().into();
                    self.pending.push(change);
                }
            }
            Op::MissingOnResync {
                ref event,
                fresh_rv,
            } => {
                if let Some(picked) = self.pick_emitted(event) {
                    let last = self
                        .emitted
                        .iter()
                        .rev()
                        .find(|c| c.uid == picked.uid)
                        .cloned()
                        .unwrap();
                    let mut change = last.into_missing_on_resync();
                    if fresh_rv {
                        change.resource_version = self.fresh_rv().into();
                    }
                    self.live
                        .retain(|_, v| v["metadata"]["uid"].as_str() != Some(change.uid.as_str()));
                    self.emitted.push(change.clone());
                    self.pending.push(change);
                }
            }
            Op::EndBatch {
                capture,
                advance_ms,
            } => {
                self.now += Duration::milliseconds(advance_ms);
                self.end_batch()?;
                if capture {
                    let ledger = self.ledger.as_ref().unwrap();
                    self.captured
                        .insert(ledger.head().seq, ledger.projection().clone());
                }
            }
            Op::Flush => {
                let head = self.ledger().head().seq;
                let durable = self.ledger().flush().unwrap();
                prop_assert_eq!(durable, head);
                prop_assert_eq!(self.ledger().durable_seq(), head);
            }
            Op::Reopen => {
                self.end_batch()?;
                let before = self.ledger.take().unwrap();
                let projection = before.projection().clone();
                let head = before.head();
                drop(before);
                let reopened = open(self.dir.path(), &self.config);
                prop_assert_eq!(reopened.head(), head);
                prop_assert!(
                    reopened.projection() == &projection,
                    "projection after a mid-run reopen differs from the live one at seq {}",
                    head.seq
                );
                self.ledger = Some(reopened);
                self.coverage.reopens += 1;
            }
        }
        Ok(())
    }

    /// Appends the pending changes in one `append` and checks each outcome against what
    /// the log already records (DOMAIN.md §6): a recorded (uid, resourceVersion, removal) is
    /// a duplicate, never appended again nor called stale.
    fn end_batch(&mut self) -> Result<(), TestCaseError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.pending);
        let now = self.now;
        let ledger = self.ledger.as_mut().unwrap();
        let before = ledger.head().seq;
        let outcomes = ledger.append(changes.clone(), now).unwrap();
        let after = ledger.head().seq;
        prop_assert_eq!(outcomes.len(), changes.len());
        let mut expected = before;
        for (change, outcome) in changes.iter().zip(&outcomes) {
            let removal = change.change.is_removal();
            let key = (
                change.uid.to_string(),
                change.resource_version.to_string(),
                removal,
            );
            let already = self.recorded.get(&key).copied();
            match outcome {
                AppendOutcome::Appended { seq, .. } => {
                    expected += 1;
                    prop_assert_eq!(*seq, expected, "appended seqs must be contiguous");
                    prop_assert!(
                        already.is_none(),
                        "{:?} appended at seq {} though seq {:?} records it",
                        key,
                        seq,
                        already
                    );
                    self.recorded.insert(key, *seq);
                    self.recorded_gone.insert(change.uid.to_string(), removal);
                    self.coverage.appended += 1;
                }
                AppendOutcome::Duplicate { seq } => {
                    prop_assert!(*seq >= 1 && *seq <= expected);
                    let gone = self.recorded_gone.get(change.uid.as_str()).copied();
                    prop_assert!(
                        already.is_some() || (removal && gone == Some(true)),
                        "{:?} called a duplicate of seq {} but nothing records it",
                        key,
                        seq
                    );
                    self.coverage.duplicates += 1;
                }
                AppendOutcome::Stale { .. } => {
                    let same_batch = already.is_some_and(|seq| seq > before);
                    prop_assert!(
                        already.is_none() || (same_batch && !self.strict),
                        "{:?} refused as stale though seq {:?} records it (batch of {} changes \
                         appended at head {})",
                        key,
                        already,
                        changes.len(),
                        before
                    );
                    self.coverage.stale += 1;
                }
                AppendOutcome::Ignored { .. } => {
                    prop_assert!(
                        already.is_none(),
                        "{:?} ignored though seq {:?} records it",
                        key,
                        already
                    );
                    self.coverage.ignored += 1;
                }
            }
        }
        prop_assert_eq!(after, expected);
        let live = self.ledger.as_ref().unwrap().projection();
        check_bindings_consistent(live, &self.pods)?;
        Ok(())
    }

    fn requests(&self) -> Vec<CheckRequest> {
        let mut out = Vec::new();
        for (uid, (namespace, name)) in &self.pods {
            for require_claim in [true, false] {
                for sandbox_id in [None, Some(SANDBOX_IDS[0].to_string())] {
                    out.push(CheckRequest {
                        namespace: namespace.clone(),
                        pod_name: name.clone(),
                        pod_uid: uid.clone(),
                        sandbox_id,
                        require_claim,
                        ..CheckRequest::default()
                    });
                }
            }
        }
        out
    }

    /// Runs the final assertions on the ledger as the operations left it.
    fn finish(mut self) -> Result<Coverage, TestCaseError> {
        self.end_batch()?;
        let ledger = self.ledger.take().unwrap();
        let head = ledger.head();
        let live = ledger.projection().clone();
        prop_assert_eq!(live.seq(), head.seq);

        // verify(): the whole chain replays and re-derives the stored transitions.
        let report = ledger.verify().unwrap();
        prop_assert!(report.ok(), "verify failed: {:?}", report.failure);
        prop_assert_eq!(report.entries, head.seq);
        prop_assert_eq!(report.verified_seq, head.seq);
        prop_assert_eq!(report.verified_hash, head.hash);

        // Replay by hand from empty, comparing each entry's stored transitions, and collect
        // the projection after every seq.
        let mut replayed = Projection::default();
        let mut after_seq = vec![Projection::default()];
        let mut recorded: HashSet<(String, String, bool)> = HashSet::new();
        let mut by_uid: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut prev_at = None;
        for seq in 1..=head.seq {
            let stored = ledger.entry(seq).unwrap();
            prop_assert!(stored.is_some(), "entry {} is missing", seq);
            let stored = stored.unwrap();
            let entry = &stored.entry;
            prop_assert_eq!(entry.seq, seq);
            prop_assert!(prev_at <= Some(entry.observed_at), "observed_at went back");
            prev_at = Some(entry.observed_at);
            let change = entry.object_change().unwrap();
            let derived = replayed.apply(seq, entry.observed_at, change);
            prop_assert_eq!(
                &derived,
                &entry.transitions,
                "replay derives other transitions at seq {}",
                seq
            );
            let key = (
                change.uid.to_string(),
                change.resource_version.to_string(),
                change.change.is_removal(),
            );
            prop_assert!(
                recorded.insert(key.clone()),
                "(uid, resourceVersion, removal) {:?} recorded twice (again at seq {})",
                key,
                seq
            );
            by_uid.entry(change.uid.to_string()).or_default().push(seq);
            // An entry is also in the history of every uid its transitions name.
            for transition in &entry.transitions {
                let value = serde_json::to_value(transition).unwrap();
                for (key, named) in value.as_object().unwrap() {
                    if let (true, Some(named)) = (key.ends_with("uid"), named.as_str()) {
                        let seqs = by_uid.entry(named.to_string()).or_default();
                        if seqs.last() != Some(&seq) {
                            seqs.push(seq);
                        }
                    }
                }
            }
            if change.change == schemas::ChangeKind::MissingOnResync {
                self.coverage.missing_on_resync += 1;
            }
            for transition in &entry.transitions {
                match transition {
                    Transition::Bound { claim_uid, .. } => {
                        if claim_uid.is_some() {
                            self.coverage.bound_claim += 1;
                        } else {
                            self.coverage.bound_direct += 1;
                        }
                    }
                    Transition::Released { .. } => self.coverage.released += 1,
                    Transition::SingleUseViolation { .. } => self.coverage.single_use += 1,
                    Transition::WorkspaceReused { .. } => self.coverage.workspace_reused += 1,
                    Transition::WorkspaceOrphaned { .. } => self.coverage.orphaned += 1,
                    Transition::IdentityMutated { .. } => self.coverage.mutated += 1,
                }
            }
            after_seq.push(replayed.clone());
        }
        prop_assert!(
            replayed == live,
            "the projection replayed from empty differs from the live one"
        );
        prop_assert!(ledger.entry(head.seq + 1).unwrap().is_none());

        // The per-uid index agrees with the log.
        for (uid, seqs) in &by_uid {
            let history: Vec<u64> = ledger
                .history_of_uid(uid)
                .unwrap()
                .iter()
                .map(|e| e.entry.seq)
                .collect();
            prop_assert_eq!(&history, seqs, "history_of_uid({})", uid);
        }

        // Incident replay: state_at_seq(k) is what was live (captured) and what replay gives.
        for k in 0..=head.seq {
            let at_k = ledger.state_at_seq(k).unwrap();
            prop_assert!(
                at_k == after_seq[k as usize],
                "state_at_seq({}) differs from the replayed projection",
                k
            );
        }
        for (k, captured) in &self.captured {
            let at_k = ledger.state_at_seq(*k).unwrap();
            prop_assert!(
                &at_k == captured,
                "state_at_seq({}) differs from the projection captured live",
                k
            );
            // Incremental verification from that watermark (replay from its snapshot).
            let hash = match ledger.entry(*k).unwrap() {
                Some(stored) => stored.hash,
                None => schemas::Hash::ZERO,
            };
            let report = ledger.verify_from(*k, hash).unwrap();
            prop_assert!(
                report.ok(),
                "verify_from({}) failed: {:?}",
                k,
                report.failure
            );
            prop_assert_eq!(report.verified_seq, head.seq);
        }
        prop_assert!(ledger.state_at_seq(head.seq + 1).is_err());

        // Check answers on the live ledger, then on a fresh open (snapshot + tail).
        let requests = self.requests();
        let answers: Vec<Decision> = requests.iter().map(|r| ledger.check(r, true)).collect();
        drop(ledger);
        let reopened = open(self.dir.path(), &self.config);
        prop_assert_eq!(reopened.head(), head);
        prop_assert!(
            reopened.projection() == &live,
            "the projection of a fresh open differs from the live one"
        );
        for (request, answer) in requests.iter().zip(&answers) {
            let again = reopened.check(request, true);
            prop_assert_eq!(&again, answer, "check {:?}", request);
        }
        prop_assert!(reopened.verify().unwrap().ok());
        if self.config.snapshot_every > 0 && head.seq >= self.config.snapshot_every {
            self.coverage.snapshots_cases += 1;
        }
        Ok(self.coverage)
    }
}

fn set_annotation(meta: &mut Value, key: &str, value: Option<&str>) {
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    let annotations = meta["annotations"].as_object_mut().unwrap();
    match value {
        Some(value) => {
            annotations.insert(key.into(), json!(value));
        }
        None => {
            annotations.remove(key);
        }
    }
}

/// The bindings the projection derived incrementally agree with the binding rule evaluated
/// from scratch by `check`: a pod has an active binding record exactly when a check without
/// expectations allows it (or denies it for a mutated identity), and the binding's sandbox
/// and claim are the pod's current owner chain. A missed re-evaluation shows up here.
fn check_bindings_consistent(
    projection: &Projection,
    pods: &BTreeMap<String, (String, String)>,
) -> Result<(), TestCaseError> {
    for (uid, (namespace, name)) in pods {
        let request = CheckRequest {
            namespace: namespace.clone(),
            pod_name: name.clone(),
            pod_uid: uid.clone(),
            require_claim: false,
            ..CheckRequest::default()
        };
        let decision = projection.check(&request, true);
        let active = projection
            .bindings_of(uid)
            .last()
            .filter(|r| r.ended_seq.is_none());
        let holds =
            decision.decision == Verdict::Allow || decision.reason == Some(Reason::IdentityMutated);
        prop_assert_eq!(
            holds,
            active.is_some(),
            "pod {} at seq {}: check says {:?} ({:?}) but the active binding record is {:?}",
            uid,
            projection.seq(),
            decision.reason,
            decision.detail,
            active
        );
        if let Some(binding) = decision.binding {
            let pod = projection.object(uid).unwrap();
            let sandbox_uid = pod.current.controller.as_ref().map(|c| c.uid.clone());
            prop_assert_eq!(Some(binding.sandbox.uid.clone()), sandbox_uid);
            let sandbox = projection.object(&binding.sandbox.uid).unwrap();
            let claim_uid = sandbox
                .current
                .controller
                .as_ref()
                .filter(|c| c.is_claim())
                .map(|c| c.uid.clone());
            prop_assert_eq!(binding.claim.as_ref().map(|c| c.uid.clone()), claim_uid);
        }
    }
    Ok(())
}

/// Opens the ledger (the sled store waits out a lock a just-dropped handle still holds).
fn open(path: &std::path::Path, config: &LedgerConfig) -> Ledger {
    Ledger::open(path, config.clone()).unwrap_or_else(|e| panic!("cannot open the ledger: {e}"))
}

fn run_case(snapshot_every: u64, ops: &[Op]) -> Result<Coverage, TestCaseError> {
    run_case_with(snapshot_every, ops, false)
}

fn run_case_with(snapshot_every: u64, ops: &[Op], strict: bool) -> Result<Coverage, TestCaseError> {
    let mut run = Run::new(snapshot_every);
    run.strict = strict;
    for op in ops {
        run.apply_op(op)?;
    }
    run.finish()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
        max_shrink_iters: 2_000,
        // Regressions are kept as explicit tests in this file, not in a side file.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Live projection == replayed projection, and replay re-derives stored transitions.
    #[test]
    fn live_projection_equals_replay((snapshot_every, ops) in case_strategy()) {
        run_case(snapshot_every, &ops)?;
    }
}

/// The generator is meaningful: over a fixed set of generated cases, bindings form (claim
/// and direct), release, and every kind of violation, duplicate, stale and resync happens.
#[test]
fn generator_exercises_the_binding_rule() {
    const COVERAGE_CASES: usize = 24;
    let mut runner = TestRunner::deterministic();
    let strategy = case_strategy();
    let mut total = Coverage::default();
    for _ in 0..COVERAGE_CASES {
        let (snapshot_every, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let coverage = run_case(snapshot_every, &ops).unwrap();
        total.appended += coverage.appended;
        total.duplicates += coverage.duplicates;
        total.stale += coverage.stale;
        total.ignored += coverage.ignored;
        total.bound_claim += coverage.bound_claim;
        total.bound_direct += coverage.bound_direct;
        total.released += coverage.released;
        total.single_use += coverage.single_use;
        total.workspace_reused += coverage.workspace_reused;
        total.orphaned += coverage.orphaned;
        total.mutated += coverage.mutated;
        total.missing_on_resync += coverage.missing_on_resync;
        total.snapshots_cases += coverage.snapshots_cases;
        total.reopens += coverage.reopens;
    }
    eprintln!("coverage over {COVERAGE_CASES} generated cases: {total:?}");
    let counts = [
        ("appended", total.appended),
        ("duplicates", total.duplicates),
        ("stale", total.stale),
        ("ignored", total.ignored),
        ("claim bindings", total.bound_claim),
        ("direct bindings", total.bound_direct),
        ("releases", total.released),
        ("single-use violations", total.single_use),
        ("workspace reuse", total.workspace_reused),
        ("orphaned workspaces", total.orphaned),
        ("identity mutations", total.mutated),
        ("missing on resync", total.missing_on_resync),
        ("cases with snapshots", total.snapshots_cases),
        ("mid-run reopens", total.reopens),
    ];
    for (what, count) in counts {
        assert!(count > 0, "the generator never produced {what}: {total:?}");
    }
}

/// The minimized case of the within-batch duplicate bug: a claim is created and updated,
/// then its creation event is offered again, all in one `append`.
fn duplicate_within_one_batch_ops() -> Vec<Op> {
    vec![
        Op::Claim {
            ns: 0,
            claim: 0,
            beta: false,
            policy: 0,
        },
        Op::ClaimStatus {
            ns: 0,
            claim: 0,
            sandbox: None,
            ready: true,
        },
        Op::Duplicate { event: Pick(0) },
    ]
}

/// Regression: a change recorded earlier in the same `append` batch is not in sled yet;
/// replaying it within the batch must still be a `Duplicate` (DOMAIN.md §6), not `Stale`.
#[test]
fn duplicate_within_one_batch_is_not_stale() {
    if let Err(e) = run_case_with(0, &duplicate_within_one_batch_ops(), true) {
        panic!("{e}");
    }
}

/// The same events split over two batches are classified correctly: the bug above is
/// specific to one batch.
#[test]
fn duplicate_across_batches_is_a_duplicate() {
    let mut ops = duplicate_within_one_batch_ops();
    ops.insert(
        2,
        Op::EndBatch {
            capture: true,
            advance_ms: 1,
        },
    );
    if let Err(e) = run_case_with(0, &ops, true) {
        panic!("{e}");
    }
}

/// A claim observation with an opaque (non-integer) resourceVersion.
fn opaque_claim(resource_version: &str, status_sandbox: Option<&str>) -> ObjectChange {
    let mut object = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxClaim",
        "metadata": {"name": "alpha", "namespace": "tenant-a", "uid": "clm-opaque",
                     "resourceVersion": resource_version},
        "spec": {"warmPoolRef": {"name": "pool"}},
        "status": {},
    });
    if let Some(name) = status_sandbox {
        object["status"]["sandbox"] = json!({"name": name});
    }
    normalize(WatchEventType::Modified, &object)
        .unwrap()
        .unwrap()
}

/// Regression: with opaque resourceVersions (compared "by arrival", DOMAIN.md §6) an event
/// replayed within the same batch must not be recorded twice.
#[test]
fn opaque_resource_version_replayed_within_one_batch_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), &LedgerConfig::default());
    let now = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let first = opaque_claim("rv-a", None);
    let second = opaque_claim("rv-b", Some("alpha"));
    let outcomes = ledger.append([first.clone(), second, first], now).unwrap();
    assert!(
        matches!(outcomes[2], AppendOutcome::Duplicate { seq: 1 }),
        "the replay of rv-a was {:?}; the log now holds {} entries",
        outcomes[2],
        ledger.head().seq
    );
}

/// The same replay in a later batch is recognised as a duplicate.
#[test]
fn opaque_resource_version_replayed_in_a_later_batch_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), &LedgerConfig::default());
    let now = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    let first = opaque_claim("rv-a", None);
    let second = opaque_claim("rv-b", Some("alpha"));
    ledger.append([first.clone(), second], now).unwrap();
    let outcomes = ledger.append([first], now).unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Duplicate { seq: 1 }]);
    assert_eq!(ledger.head().seq, 2);
}
