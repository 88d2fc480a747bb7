//! Kubernetes objects of claim-bound (cold path, v1alpha1) sandbox lifecycles, shared by
//! the benches: fresh uids, one ever-increasing resourceVersion, realistic object shapes.

// Each bench uses a subset of these.
#![allow(dead_code)]

use std::collections::VecDeque;

use schemas::{normalize, ObjectChange, WatchEventType};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Kubernetes objects of a claim-bound (cold path, v1alpha1) sandbox lifecycle.
// ---------------------------------------------------------------------------------------

pub fn uid(prefix: &str, k: u64) -> String {
    format!(
        "{prefix}-{:04x}-4000-8000-{:012x}",
        (k >> 48) & 0xffff,
        k & 0xffff_ffff_ffff
    )
}

pub fn claim_uid(k: u64) -> String {
    uid("c1a1m000", k)
}
pub fn sandbox_uid(k: u64) -> String {
    uid("5a4db0x0", k)
}
pub fn pod_uid(k: u64) -> String {
    uid("p0d00000", k)
}
pub fn pvc_uid(k: u64) -> String {
    uid("pvc00000", k)
}
pub fn name(k: u64) -> String {
    format!("agent-{k:08}")
}
pub fn namespace(k: u64) -> String {
    format!("tenant-{:02}", k % 64)
}
pub fn sandbox_id(k: u64) -> String {
    format!("sbx-{k:010x}")
}

/// How far the claim's status has got.
#[derive(Clone, Copy, PartialEq)]
pub enum ClaimStatus {
    Empty,
    SandboxNotReady,
    Ready,
}

pub fn claim(k: u64, rv: u64, status: ClaimStatus) -> Value {
    let status = match status {
        ClaimStatus::Empty => json!({}),
        ClaimStatus::SandboxNotReady => json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "SandboxNotReady",
                            "message": "Sandbox is not ready",
                            "lastTransitionTime": "2026-05-20T16:00:06Z", "observedGeneration": 1}],
            "sandbox": {"name": name(k)}
        }),
        ClaimStatus::Ready => json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady",
                            "message": "Sandbox is ready",
                            "lastTransitionTime": "2026-05-20T16:00:13Z", "observedGeneration": 1}],
            "sandbox": {"name": name(k)}
        }),
    };
    json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": {
            "name": name(k), "namespace": namespace(k), "uid": claim_uid(k), "generation": 1,
            "labels": {"app.kubernetes.io/managed-by": "openshell-gateway"},
            "creationTimestamp": "2026-05-20T16:00:01Z", "resourceVersion": rv.to_string()
        },
        "spec": {"sandboxTemplateRef": {"name": "python-agent"}, "warmpool": "none",
                 "lifecycle": {"shutdownPolicy": "Delete"}},
        "status": status
    })
}

pub fn sandbox(k: u64, rv: u64) -> Value {
    json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": name(k), "namespace": namespace(k), "uid": sandbox_uid(k), "generation": 1,
            "labels": {"agents.x-k8s.io/claim-uid": claim_uid(k)},
            "annotations": {"agents.x-k8s.io/pod-name": name(k)},
            "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                                 "kind": "SandboxClaim", "name": name(k), "uid": claim_uid(k),
                                 "controller": true, "blockOwnerDeletion": true}],
            "creationTimestamp": "2026-05-20T16:00:02Z", "resourceVersion": rv.to_string()
        },
        "spec": {
            "podTemplate": {"metadata": {}, "spec": {"containers": [{
                "name": "agent", "image": "ghcr.io/openshell/agent-runtime:0.9.3", "resources": {},
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
                "restartPolicy": "Always"}},
            "replicas": 1,
            "volumeClaimTemplates": [{"metadata": {"name": "workspace"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}},
                         "storageClassName": "standard"}}]
        },
        "status": {}
    })
}

pub fn pvc(k: u64, rv: u64, bound: bool) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "1Gi"}},
                          "storageClassName": "standard", "volumeMode": "Filesystem"});
    if bound {
        spec["volumeName"] = json!(format!("pv-{k:010}"));
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": format!("workspace-{}", name(k)), "namespace": namespace(k), "uid": pvc_uid(k),
            "labels": {"agents.x-k8s.io/sandbox-name-hash": "a0dcfeaf"},
            "finalizers": ["kubernetes.io/pvc-protection"],
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                 "name": name(k), "uid": sandbox_uid(k),
                                 "controller": true, "blockOwnerDeletion": true}],
            "creationTimestamp": "2026-05-20T16:00:03Z", "resourceVersion": rv.to_string()
        },
        "spec": spec,
        "status": {"phase": if bound { "Bound" } else { "Pending" }}
    })
}

pub fn pod(k: u64, rv: u64, running: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name(k), "namespace": namespace(k), "uid": pod_uid(k),
            "labels": {"agents.x-k8s.io/sandbox-name-hash": "a0dcfeaf"},
            "annotations": {"openshell.io/sandbox-id": sandbox_id(k)},
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                 "name": name(k), "uid": sandbox_uid(k),
                                 "controller": true, "blockOwnerDeletion": true}],
            "creationTimestamp": "2026-05-20T16:00:05Z", "resourceVersion": rv.to_string()
        },
        "spec": {
            "containers": [{"name": "agent", "image": "ghcr.io/openshell/agent-runtime:0.9.3",
                            "imagePullPolicy": "IfNotPresent", "resources": {},
                            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
            "restartPolicy": "Always", "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": format!("workspace-{}", name(k))}}]
        },
        "status": {"phase": if running { "Running" } else { "Pending" }, "qosClass": "BestEffort"}
    })
}

/// Watch events of claim-bound sandbox lifecycles, with one ever-increasing
/// resourceVersion (like an etcd revision) and uids never reused.
pub struct Lifecycles {
    rv: u64,
}

impl Lifecycles {
    pub fn new() -> Self {
        Lifecycles { rv: 1_000 }
    }

    pub fn rv(&mut self) -> u64 {
        self.rv += 3;
        self.rv
    }

    /// Cold bind of lifecycle `k`: 8 identity-relevant events; the binding forms at the 6th.
    pub fn bind(&mut self, k: u64, out: &mut Vec<(WatchEventType, Value)>) {
        use WatchEventType::{Added, Modified};
        out.push((Added, claim(k, self.rv(), ClaimStatus::Empty)));
        out.push((Added, sandbox(k, self.rv())));
        out.push((Added, pvc(k, self.rv(), false)));
        out.push((Modified, pvc(k, self.rv(), true)));
        out.push((Added, pod(k, self.rv(), false)));
        out.push((Modified, claim(k, self.rv(), ClaimStatus::SandboxNotReady)));
        out.push((Modified, pod(k, self.rv(), true)));
        out.push((Modified, claim(k, self.rv(), ClaimStatus::Ready)));
    }

    /// Background-deletion release of lifecycle `k`: claim, Sandbox, pod, PVC deleted.
    pub fn release(&mut self, k: u64, out: &mut Vec<(WatchEventType, Value)>) {
        use WatchEventType::Deleted;
        out.push((Deleted, claim(k, self.rv(), ClaimStatus::Ready)));
        out.push((Deleted, sandbox(k, self.rv())));
        out.push((Deleted, pod(k, self.rv(), true)));
        out.push((Deleted, pvc(k, self.rv(), true)));
    }
}

/// Appends the claim-bound lifecycles `range` to `ledger`, `per_append` lifecycles (8
/// events each) per append, each followed by a flush.
pub fn append_bound(
    ledger: &mut ledger::Ledger,
    lifecycles: &mut Lifecycles,
    range: std::ops::Range<u64>,
    per_append: u64,
) {
    let mut k = range.start;
    while k < range.end {
        let mut events = Vec::new();
        for _ in 0..per_append.min(range.end - k) {
            lifecycles.bind(k, &mut events);
            k += 1;
        }
        ledger
            .append(normalized(events), chrono::Utc::now())
            .expect("append");
        ledger.flush().expect("flush");
    }
}

pub fn normalized(events: Vec<(WatchEventType, Value)>) -> impl Iterator<Item = ObjectChange> {
    events.into_iter().map(|(event, object)| {
        normalize(event, &object)
            .expect("generated objects normalize")
            .expect("generated kinds are recorded")
    })
}

// ---------------------------------------------------------------------------------------
// The append stream both ledger benches use.
// ---------------------------------------------------------------------------------------

/// Lifecycles released this many lifecycles after they bound, in the append stream.
pub const RELEASE_LAG: u64 = 64;

/// An endless stream of changes: lifecycle k binds, and lifecycle k - RELEASE_LAG is
/// released right after, so entries mix creations, updates, bindings and releases.
pub struct ChangeStream {
    lifecycles: Lifecycles,
    next: u64,
    pending: VecDeque<(WatchEventType, Value)>,
}

impl ChangeStream {
    pub fn new() -> Self {
        ChangeStream {
            lifecycles: Lifecycles::new(),
            next: 0,
            pending: VecDeque::new(),
        }
    }

    fn refill(&mut self) {
        let mut events = Vec::new();
        let k = self.next;
        self.next += 1;
        self.lifecycles.bind(k, &mut events);
        if k >= RELEASE_LAG {
            self.lifecycles.release(k - RELEASE_LAG, &mut events);
        }
        self.pending.extend(events);
    }

    pub fn take_events(&mut self, n: usize) -> Vec<(WatchEventType, Value)> {
        while self.pending.len() < n {
            self.refill();
        }
        self.pending.drain(..n).collect()
    }

    pub fn take(&mut self, n: usize) -> Vec<ObjectChange> {
        normalized(self.take_events(n)).collect()
    }

    /// The same events as watch-event JSON lines (what `claim-ledger ingest` reads).
    pub fn take_jsonl(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (event, object) in self.take_events(n) {
            let kind = match event {
                WatchEventType::Added => "ADDED",
                WatchEventType::Modified => "MODIFIED",
                WatchEventType::Deleted => "DELETED",
            };
            serde_json::to_writer(&mut out, &json!({"type": kind, "object": object}))
                .expect("JSON serializes");
            out.push(b'\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// What every load tool reads and reports.
// ---------------------------------------------------------------------------------------

/// A check of lifecycle `k`'s pod, as a gateway would send it (claim required).
pub fn check_request(k: u64) -> ledger::CheckRequest {
    ledger::CheckRequest {
        namespace: namespace(k),
        pod_name: name(k),
        pod_uid: pod_uid(k),
        sandbox_id: Some(sandbox_id(k)),
        require_claim: true,
        ..ledger::CheckRequest::default()
    }
}

/// A numeric setting from the environment, or `default`.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's resident set (Linux), in bytes; 0 where /proc is absent.
pub fn resident_bytes() -> u64 {
    memory_of("self", "VmRSS")
}

/// A memory figure of process `pid` ("self" for this one) from /proc/PID/status, in bytes:
/// `VmRSS` (resident now), `VmHWM` (its peak). 0 where /proc is absent or the process gone.
pub fn memory_of(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
