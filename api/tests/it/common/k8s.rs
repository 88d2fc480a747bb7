//! Kubernetes objects as the API server prints them in watch events (v1alpha1
//! agent-sandbox), with a global resourceVersion counter.

use serde_json::{json, Map, Value};

pub const NS: &str = "agents";
const SANDBOX_API: &str = "agents.x-k8s.io/v1alpha1";
const CLAIM_API: &str = "extensions.agents.x-k8s.io/v1alpha1";

/// Who controls a Sandbox.
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    /// A SandboxClaim (name, uid).
    Claim(&'a str, &'a str),
    /// A SandboxWarmPool (name, uid): warm.
    Pool(&'a str, &'a str),
    /// Nobody.
    None,
}

/// Builds the objects watch events carry, with strictly increasing resourceVersions (no
/// cluster behind them: the tests feed the events to the ledger directly).
#[derive(Default)]
pub struct ObjectBuilder {
    rv: u64,
}

fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

impl ObjectBuilder {
    fn metadata(&mut self, name: &str, uid: &str) -> Map<String, Value> {
        self.rv += 7;
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        metadata.insert("namespace".into(), json!(NS));
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("resourceVersion".into(), json!(self.rv.to_string()));
        metadata
    }

    /// A SandboxClaim whose status names `sandbox` (if any).
    pub fn claim(
        &mut self,
        name: &str,
        uid: &str,
        sandbox: Option<&str>,
        terminating: bool,
    ) -> Value {
        let mut metadata = self.metadata(name, uid);
        if terminating {
            metadata.insert("deletionTimestamp".into(), json!("2026-05-20T16:00:00Z"));
            metadata.insert("finalizers".into(), json!(["foregroundDeletion"]));
        }
        let mut claim = json!({
            "apiVersion": CLAIM_API, "kind": "SandboxClaim", "metadata": metadata,
            "spec": {"sandboxTemplateRef": {"name": "python"}, "warmpool": "python-pool"},
        });
        if let Some(sandbox) = sandbox {
            claim["status"] = json!({"sandbox": {"name": sandbox},
                "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady",
                                "lastTransitionTime": "2026-05-20T15:00:05Z", "message": ""}]});
        }
        claim
    }

    /// A Sandbox with its controller, `claim-uid` label and `openshell.ai/sandbox-id` label.
    pub fn sandbox(
        &mut self,
        name: &str,
        uid: &str,
        owner: Owner<'_>,
        claim_uid_label: Option<&str>,
        sandbox_id_label: Option<&str>,
    ) -> Value {
        let mut metadata = self.metadata(name, uid);
        let mut labels = Map::new();
        if let Some(label) = claim_uid_label {
            labels.insert("agents.x-k8s.io/claim-uid".into(), json!(label));
        }
        if let Some(label) = sandbox_id_label {
            labels.insert("openshell.ai/sandbox-id".into(), json!(label));
        }
        if !labels.is_empty() {
            metadata.insert("labels".into(), Value::Object(labels));
        }
        metadata.insert(
            "annotations".into(),
            json!({"agents.x-k8s.io/pod-name": name}),
        );
        match owner {
            Owner::Claim(claim, claim_uid) => {
                metadata.insert(
                    "ownerReferences".into(),
                    owner_ref(CLAIM_API, "SandboxClaim", claim, claim_uid),
                );
            }
            Owner::Pool(pool, pool_uid) => {
                metadata.insert(
                    "ownerReferences".into(),
                    owner_ref(CLAIM_API, "SandboxWarmPool", pool, pool_uid),
                );
            }
            Owner::None => {}
        }
        json!({
            "apiVersion": SANDBOX_API, "kind": "Sandbox", "metadata": metadata,
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "workspace"}, "spec": {}}]},
        })
    }

    /// A pod controlled by the Sandbox (name, uid), with an `openshell.io/sandbox-id`.
    pub fn pod(
        &mut self,
        name: &str,
        uid: &str,
        sandbox: (&str, &str),
        sandbox_id: Option<&str>,
        terminating: bool,
    ) -> Value {
        let mut metadata = self.metadata(name, uid);
        metadata.insert(
            "ownerReferences".into(),
            owner_ref(SANDBOX_API, "Sandbox", sandbox.0, sandbox.1),
        );
        if let Some(id) = sandbox_id {
            metadata.insert("annotations".into(), json!({"openshell.io/sandbox-id": id}));
        }
        if terminating {
            metadata.insert("deletionTimestamp".into(), json!("2026-05-20T16:00:30Z"));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(30));
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
               "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
               "status": {"phase": "Running"}})
    }

    /// A workspace PVC controlled by the Sandbox (name, uid), bound to `volume`.
    pub fn pvc(
        &mut self,
        name: &str,
        uid: &str,
        sandbox: Option<(&str, &str)>,
        volume: &str,
    ) -> Value {
        let mut metadata = self.metadata(name, uid);
        if let Some((sandbox, sandbox_uid)) = sandbox {
            metadata.insert(
                "ownerReferences".into(),
                owner_ref(SANDBOX_API, "Sandbox", sandbox, sandbox_uid),
            );
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata,
               "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume},
               "status": {"phase": "Bound"}})
    }
}

pub fn added(object: Value) -> Value {
    json!({"type": "ADDED", "object": object})
}

pub fn modified(object: Value) -> Value {
    json!({"type": "MODIFIED", "object": object})
}

pub fn deleted(object: Value) -> Value {
    json!({"type": "DELETED", "object": object})
}

/// A check request for a pod in [`NS`].
pub fn request(pod_name: &str, pod_uid: &str) -> Value {
    json!({"namespace": NS, "pod_name": pod_name, "pod_uid": pod_uid})
}

/// The same request with more fields.
pub fn with(mut request: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().unwrap() {
        request[key] = value.clone();
    }
    request
}
