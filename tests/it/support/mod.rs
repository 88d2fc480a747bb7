//! Shared helpers for the integration tests: a seeded deterministic PRNG, a generator of
//! realistic agent-sandbox watch events (warm and cold lifecycles of Sandboxes, claims,
//! pods and workspace PVCs, interleaved, with status churn and repeated events), a
//! deterministic clock, and raw access to a ledger's store.
//!
//! Each test crate uses only part of this module.
#![allow(dead_code)]

pub mod postgres;
pub mod process;
pub mod wait;
pub mod watching;

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use ledger::dir::HighWater;
use ledger::store::{Store, StoreError};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};

/// A deterministic generator from a `u64` seed (the same seed gives the same draws), to
/// pick kill points and event orders: proptest's ChaCha [`TestRng`], drawn from with
/// `proptest::prelude::RngExt` (`random_range`, `random_ratio`).
pub fn seeded_rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// A seed from the environment variable `name` if set, otherwise from the clock.
pub fn seed_from_env(name: &str) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer, not {text:?}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42),
    }
}

/// A clock that ticks one second per call, from a fixed instant.
pub fn ticking_clock(start: i64) -> impl FnMut() -> DateTime<Utc> {
    let mut tick = 0;
    move || {
        tick += 1;
        Utc.timestamp_opt(start + tick, 0).unwrap()
    }
}

/// Parses the `{"type":..,"object":..}` event and normalizes its object as `ingest` does.
pub fn normalize_event(event: &Value) -> Option<schemas::ObjectChange> {
    let kind = schemas::WatchEventType::parse(event["type"].as_str().expect("event type"))
        .expect("known event type");
    schemas::normalize(kind, &event["object"]).expect("generated objects normalize")
}

/// Events as watch-event JSON lines.
pub fn to_lines(events: &[Value]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).unwrap());
        out.push('\n');
    }
    out
}

/// Only the watch-event lines (those with a `"type"` key) of a fixture file.
pub fn event_lines(text: &str) -> String {
    text.lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .map(|v| v.get("type").is_some())
                .unwrap_or(false)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// `Ledger::open` (the sled store waits out a lock still held by a just-dropped handle).
pub fn open_ledger(
    dir: &Path,
    config: ledger::LedgerConfig,
) -> Result<ledger::Ledger, ledger::LedgerError> {
    ledger::Ledger::open(dir, config)
}

/// The raw store of a closed ledger directory, to change it behind the ledger's back as
/// damage or an attacker would.
pub fn open_raw(dir: &Path) -> RawStore {
    RawStore(
        ledger::store::SledStore::open(&dir.join(ledger::dir::SLED_DIR), None)
            .expect("open the raw store"),
    )
}

/// A ledger's store, read and written record by record (each write its own batch).
pub struct RawStore(ledger::store::SledStore);

#[allow(dead_code)]
impl RawStore {
    /// The record under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key.as_ref())
    }

    /// Sets a record, returning what it held.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let previous = self.0.get(key.as_ref())?;
        Store::insert(&self.0, key.as_ref(), value.as_ref())?;
        Ok(previous)
    }

    /// Removes a record, returning what it held.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Store::remove(&self.0, key.as_ref())
    }

    /// Every record whose key starts with `prefix`.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        let mut to = prefix.to_vec();
        to.extend_from_slice(&[0xff; 16]);
        self.0.scan(prefix, &to, false)
    }

    /// Makes the changes durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }
}

/// Rewrites a closed ledger's high-water mark to the entry at `seq` of its store, as an
/// attacker who can write the whole directory could (both slots).
#[allow(dead_code)]
pub fn rewind_high_water(dir: &Path, seq: u64) {
    let hash = match seq {
        0 => schemas::Hash::ZERO,
        _ => {
            let raw = open_raw(dir);
            let value = raw
                .get(ledger::store::keys::seq_key(
                    ledger::store::keys::ENTRY,
                    seq,
                ))
                .unwrap()
                .expect("the entry at the new mark");
            schemas::Hash::from_slice(&value).unwrap()
        }
    };
    let mark = ledger::dir::HighWaterFile::open_dir(dir).expect("open the high-water mark");
    let acknowledged = ledger::dir::Acknowledged { seq, hash };
    mark.save(acknowledged).unwrap();
    mark.save(acknowledged).unwrap();
}

/// One simulated sandbox lifecycle.
#[derive(Debug, Clone)]
struct Sim {
    cold: bool,
    beta: bool,
    namespace: String,
    pool: String,
    sandbox: String,
    claim: String,
    sandbox_uid: String,
    pod_uid: String,
    pvc_uid: String,
    claim_uid: String,
    pool_uid: String,
    sandbox_id: String,
    volume: String,
    step: usize,
    last: Option<Value>,
}

/// The warm path (DOMAIN.md §3.1, §3.2, §3.5 background release).
const WARM: &[Step] = &[
    Step::SandboxWarm,
    Step::PvcPending,
    Step::PvcBound,
    Step::PodPending,
    Step::PodRunning,
    Step::PodChurn,
    Step::ClaimPending,
    Step::SandboxAdopted,
    Step::ClaimBound,
    Step::Repeat,
    Step::ClaimDeleted,
    Step::SandboxDeleted,
    Step::PodTerminating,
    Step::PodDeleted,
    Step::PvcDeleted,
];

/// The cold path (DOMAIN.md §3.3), then a background release.
const COLD: &[Step] = &[
    Step::ClaimPending,
    Step::SandboxAdopted,
    Step::PvcPending,
    Step::PvcBound,
    Step::PodPending,
    Step::ClaimBound,
    Step::PodRunning,
    Step::Repeat,
    Step::PodChurn,
    Step::ClaimDeleted,
    Step::SandboxDeleted,
    Step::PodTerminating,
    Step::PodDeleted,
    Step::PvcDeleted,
];

#[derive(Debug, Clone, Copy)]
enum Step {
    SandboxWarm,
    SandboxAdopted,
    SandboxDeleted,
    PvcPending,
    PvcBound,
    PvcDeleted,
    PodPending,
    PodRunning,
    PodChurn,
    PodTerminating,
    PodDeleted,
    ClaimPending,
    ClaimBound,
    ClaimDeleted,
    /// The previous event of this lifecycle again (a relist or reconnect).
    Repeat,
}

/// Generates interleaved, realistic watch events for many sandbox lifecycles.
///
/// Every uid embeds `prefix`, so generators with different prefixes never collide;
/// resourceVersions come from one counter that only goes up, like an etcd revision.
#[derive(Debug)]
pub struct WatchEventGenerator {
    rng: TestRng,
    prefix: String,
    rv: u64,
    concurrency: usize,
    active: Vec<Sim>,
    started: u64,
}

impl WatchEventGenerator {
    /// A generator whose uids embed `prefix`.
    pub fn new(prefix: &str, seed: u64) -> WatchEventGenerator {
        WatchEventGenerator {
            rng: seeded_rng(seed),
            prefix: prefix.to_string(),
            rv: 1000,
            concurrency: 3,
            active: Vec::new(),
            started: 0,
        }
    }

    /// How many lifecycles have started.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The next `n` events.
    pub fn events(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.next_event()).collect()
    }

    /// The next watch event, `{"type": ..., "object": ...}`.
    pub fn next_event(&mut self) -> Value {
        while self.active.len() < self.concurrency {
            let sim = self.new_sim();
            self.active.push(sim);
        }
        let pick = self.rng.random_range(0..self.active.len());
        let mut sim = self.active.swap_remove(pick);
        let script = if sim.cold { COLD } else { WARM };
        let step = script[sim.step];
        sim.step += 1;
        let event = match step {
            Step::Repeat => sim.last.clone().expect("a repeat follows an event"),
            step => {
                self.rv += self.rng.random_range(1..=7);
                let event = build(step, &sim, self.rv);
                sim.last = Some(event.clone());
                event
            }
        };
        if sim.step < script.len() {
            self.active.push(sim);
        }
        event
    }

    fn new_sim(&mut self) -> Sim {
        let index = self.started;
        self.started += 1;
        let cold = self.rng.random_ratio(1, 3);
        let beta = self.rng.random_ratio(1, 2);
        let namespace = format!("team-{}", self.rng.random_range(0..3));
        let pool = ["python-pool", "node-pool"][self.rng.random_range(0..2)].to_string();
        let suffix: String = (0..5)
            .map(|_| char::from(self.rng.random_range(b'a'..=b'z')))
            .collect();
        let claim = format!("agent-{}-{index}", self.prefix);
        let sandbox = if cold {
            claim.clone()
        } else {
            format!("{pool}-{suffix}")
        };
        let p = &self.prefix;
        Sim {
            cold,
            beta,
            namespace,
            pool: pool.clone(),
            claim,
            sandbox_uid: format!("5a4db0x0-{p}-{index:06}"),
            pod_uid: format!("p0d00000-{p}-{index:06}"),
            pvc_uid: format!("pvc00000-{p}-{index:06}"),
            claim_uid: format!("c1a1m000-{p}-{index:06}"),
            pool_uid: format!("p0010000-{pool}"),
            sandbox_id: format!("sbx-{p}-{index:06}"),
            volume: format!("pv-{p}-{index:06}"),
            sandbox,
            step: 0,
            last: None,
        }
    }
}

fn version(sim: &Sim) -> &'static str {
    if sim.beta {
        "v1beta1"
    } else {
        "v1alpha1"
    }
}

fn owner_sandbox(sim: &Sim) -> Value {
    json!([{"apiVersion": format!("agents.x-k8s.io/{}", version(sim)), "kind": "Sandbox",
            "name": sim.sandbox, "uid": sim.sandbox_uid, "controller": true,
            "blockOwnerDeletion": true}])
}

fn sandbox(sim: &Sim, rv: u64, adopted: bool) -> Value {
    let v = version(sim);
    let (labels, owner) = if adopted {
        (
            json!({"agents.x-k8s.io/claim-uid": sim.claim_uid}),
            json!({"apiVersion": format!("extensions.agents.x-k8s.io/{v}"), "kind": "SandboxClaim",
                   "name": sim.claim, "uid": sim.claim_uid, "controller": true,
                   "blockOwnerDeletion": true}),
        )
    } else {
        (
            json!({"agents.x-k8s.io/warm-pool-sandbox": "ed572cc4",
                   "agents.x-k8s.io/sandbox-template-ref-hash": "b713719b"}),
            json!({"apiVersion": format!("extensions.agents.x-k8s.io/{v}"), "kind": "SandboxWarmPool",
                   "name": sim.pool, "uid": sim.pool_uid, "controller": true,
                   "blockOwnerDeletion": true}),
        )
    };
    json!({
        "apiVersion": format!("agents.x-k8s.io/{v}"), "kind": "Sandbox",
        "metadata": {"name": sim.sandbox, "namespace": sim.namespace, "uid": sim.sandbox_uid,
                     "generation": 1, "labels": labels,
                     "annotations": {"agents.x-k8s.io/pod-name": sim.sandbox},
                     "ownerReferences": [owner],
                     "creationTimestamp": "2026-05-20T15:00:01Z", "resourceVersion": rv.to_string()},
        "spec": {"podTemplate": {"metadata": {}, "spec": {"containers": [
                    {"name": "agent", "image": "ghcr.io/openshell/agent-runtime:0.9.3",
                     "resources": {}, "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
                    "restartPolicy": "Always"}},
                 "replicas": 1,
                 "volumeClaimTemplates": [{"metadata": {"name": "workspace"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}},
                             "storageClassName": "standard"}}]},
        "status": {}
    })
}

fn pvc(sim: &Sim, rv: u64, bound: bool) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "1Gi"}},
                          "storageClassName": "standard", "volumeMode": "Filesystem"});
    if bound {
        spec["volumeName"] = json!(sim.volume);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("workspace-{}", sim.sandbox), "namespace": sim.namespace,
                     "uid": sim.pvc_uid, "labels": {"agents.x-k8s.io/sandbox-name-hash": "65d76649"},
                     "finalizers": ["kubernetes.io/pvc-protection"],
                     "ownerReferences": owner_sandbox(sim),
                     "creationTimestamp": "2026-05-20T15:00:02Z", "resourceVersion": rv.to_string()},
        "spec": spec,
        "status": {"phase": if bound { "Bound" } else { "Pending" }}
    })
}

fn pod(sim: &Sim, rv: u64, phase: &str, ip: &str, terminating: bool) -> Value {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": sim.sandbox, "namespace": sim.namespace, "uid": sim.pod_uid,
                     "labels": {"agents.x-k8s.io/sandbox-name-hash": "65d76649"},
                     "ownerReferences": owner_sandbox(sim),
                     "annotations": {"openshell.io/sandbox-id": sim.sandbox_id},
                     "creationTimestamp": "2026-05-20T15:00:03Z", "resourceVersion": rv.to_string()},
        "spec": {"containers": [{"name": "agent", "image": "ghcr.io/openshell/agent-runtime:0.9.3",
                                 "env": [{"name": "API_TOKEN", "value": "not-a-real-secret"}]}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30},
        "status": {"phase": phase, "podIP": ip, "qosClass": "BestEffort"}
    });
    if terminating {
        object["metadata"]["deletionTimestamp"] = json!("2026-05-20T16:00:30Z");
        object["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    }
    object
}

fn claim(sim: &Sim, rv: u64, bound: bool) -> Value {
    let v = version(sim);
    let spec = if sim.beta {
        json!({"warmPoolRef": {"name": if sim.cold { "none" } else { sim.pool.as_str() }},
               "lifecycle": {"shutdownPolicy": "Delete"}})
    } else {
        json!({"sandboxTemplateRef": {"name": "python-agent"},
               "warmpool": if sim.cold { "none" } else { sim.pool.as_str() },
               "lifecycle": {"shutdownPolicy": "Delete"}})
    };
    let status = if bound {
        json!({"conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady",
                               "message": "Sandbox is ready",
                               "lastTransitionTime": "2026-05-20T15:00:12Z"}],
               "sandbox": {"name": sim.sandbox}})
    } else {
        json!({})
    };
    json!({
        "apiVersion": format!("extensions.agents.x-k8s.io/{v}"), "kind": "SandboxClaim",
        "metadata": {"name": sim.claim, "namespace": sim.namespace, "uid": sim.claim_uid,
                     "generation": 1, "labels": {"app.kubernetes.io/managed-by": "openshell-gateway"},
                     "creationTimestamp": "2026-05-20T15:00:05Z", "resourceVersion": rv.to_string()},
        "spec": spec,
        "status": status
    })
}

fn build(step: Step, sim: &Sim, rv: u64) -> Value {
    let (kind, object) = match step {
        Step::SandboxWarm => ("ADDED", sandbox(sim, rv, false)),
        Step::SandboxAdopted if sim.cold => ("ADDED", sandbox(sim, rv, true)),
        Step::SandboxAdopted => ("MODIFIED", sandbox(sim, rv, true)),
        Step::SandboxDeleted => ("DELETED", sandbox(sim, rv, true)),
        Step::PvcPending => ("ADDED", pvc(sim, rv, false)),
        Step::PvcBound => ("MODIFIED", pvc(sim, rv, true)),
        Step::PvcDeleted => ("DELETED", pvc(sim, rv, true)),
        Step::PodPending => ("ADDED", pod(sim, rv, "Pending", "", false)),
        Step::PodRunning => ("MODIFIED", pod(sim, rv, "Running", "10.244.1.50", false)),
        // Only the pod IP and resourceVersion move: status churn, recorded as nothing.
        Step::PodChurn => ("MODIFIED", pod(sim, rv, "Running", "10.244.1.51", false)),
        Step::PodTerminating => ("MODIFIED", pod(sim, rv, "Running", "10.244.1.51", true)),
        Step::PodDeleted => ("DELETED", pod(sim, rv, "Running", "10.244.1.51", true)),
        Step::ClaimPending => ("ADDED", claim(sim, rv, false)),
        Step::ClaimBound => ("MODIFIED", claim(sim, rv, true)),
        Step::ClaimDeleted => ("DELETED", claim(sim, rv, true)),
        Step::Repeat => unreachable!("handled by the caller"),
    };
    json!({"type": kind, "object": object})
}
