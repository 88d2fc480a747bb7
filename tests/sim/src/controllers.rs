//! Emulation of the agent-sandbox controllers (DOMAIN.md §2-3), active when
//! [`SimConfig::controllers`](crate::SimConfig::controllers) is true.
//!
//! Three controllers react to every change (they run synchronously at the end of each
//! Rust call or HTTP request, after the garbage collector):
//!
//! * **Warm pools**: each `SandboxWarmPool` keeps `spec.replicas` non-terminating Sandboxes it
//!   controls, named `<pool>-<5 random lowercase alphanumerics>`, labelled
//!   `agents.x-k8s.io/warm-pool-sandbox` (FNV-32a of the pool name) and
//!   `agents.x-k8s.io/sandbox-template-ref-hash`, annotated `agents.x-k8s.io/pod-name`, with
//!   the `SandboxTemplate`'s `podTemplate` and `volumeClaimTemplates`. Claimed Sandboxes never
//!   return to a pool.
//! * **Sandboxes**: each non-terminating Sandbox (not scaled to `replicas: 0`) gets one PVC per
//!   volume claim template, `<template name>-<sandbox>`, controlled by the Sandbox, with the
//!   `kubernetes.io/pvc-protection` finalizer, `spec.volumeName` `pvc-<its uid>` and
//!   `status.phase: Bound` (an existing ownerless PVC of that name is adopted instead); then its
//!   pod, named after the Sandbox (or its `agents.x-k8s.io/pod-name` annotation), controlled
//!   by the Sandbox, scheduled on `sim-node-1`, `status.phase: Running`. A pod that disappears
//!   is recreated with the same name and a new uid. Warm pods carry the pool label and
//!   `cluster-autoscaler.kubernetes.io/safe-to-evict: "true"`.
//!
//! * **Claims** (DOMAIN.md §3.2, §3.3, §3.5), for every SandboxClaim however it was written
//!   (HTTP, `kubectl`, [`Simulator::create`]/[`Simulator::apply`]) that is not terminating:
//!   - a claim whose `spec.lifecycle.shutdownTime` (both versions) is not after the
//!     simulator's clock ([`Simulator::now`]) expires under its `shutdownPolicy`, exactly as
//!     [`Simulator::expire_claim`]; an expired claim (Ready=False, reason `SandboxExpired`)
//!     is left alone from then on, and is never bound;
//!   - an unbound claim (no `status.sandbox.name`) is bound: it adopts the oldest warm
//!     Sandbox of its pool (`spec.warmPoolRef.name` in v1beta1; `spec.warmpool` in
//!     v1alpha1: a pool name, `default` = every pool whose template is
//!     `spec.sandboxTemplateRef.name`, `none` = cold) with one merge patch (ownerReferences
//!     replaced by the claim as controller, warm-pool label dropped, `claim-uid` set), then
//!     gets `status.sandbox.name` and Ready=True, and the pool replenishes; with no warm
//!     Sandbox it gets a Sandbox named after it, made from the template (the pool's, or
//!     `spec.sandboxTemplateRef.name`; a missing template is the default agent template).
//!     A Sandbox of that name it already controls is taken as it is.
//!   - bound claims are not bound again; deleting a claim is garbage collection's business.
//!
//! The explicit calls on [`Simulator`] fail with [`SimError::ControllersDisabled`] when
//! controllers are off: [`create_pool`](Simulator::create_pool),
//! [`claim_warm`](Simulator::claim_warm), [`claim_cold`](Simulator::claim_cold),
//! [`delete_claim`](Simulator::delete_claim), [`expire_claim`](Simulator::expire_claim),
//! [`replace_pod`](Simulator::replace_pod), [`expire_sandbox`](Simulator::expire_sandbox)
//! and [`preload_bound_claims`](Simulator::preload_bound_claims).
//! `claim_warm` and `claim_cold` create the claim and bind it at once through the claim
//! controller's own binding code (the reconciler skips a claim while it is being bound), so a
//! claim is never bound twice and the event order is the same as before the reconciler
//! existed. With controllers off nothing touches claims.

pub use crate::conventions::{
    CLAIM_UID_LABEL, EXPIRED_REASON, NODE_NAME, POD_NAME_ANNOTATION, SAFE_TO_EVICT_ANNOTATION,
    SANDBOX_ID_ANNOTATION, SANDBOX_NAME_HASH_LABEL, TEMPLATE_HASH_LABEL, WARM_POOL_LABEL,
};

use crate::conventions::{has_expired, is_bound, pod_name_of, shutdown_time};
use crate::resource::{Resource, Served};
use crate::store::{DeleteOpts, State, StatusMode, PVC_PROTECTION_FINALIZER};
use crate::util::{self, fnv32a};
use crate::{Propagation, SimError, Simulator};
use serde_json::{json, Value};

fn default_pod_template(with_pvc: bool) -> Value {
    let mut container = json!({
        "name": "agent",
        "image": "ghcr.io/openshell/agent-runtime:0.9.3",
        "resources": {},
    });
    if with_pvc {
        container["volumeMounts"] = json!([{"name": "workspace", "mountPath": "/workspace"}]);
    }
    json!({"metadata": {}, "spec": {"containers": [container], "restartPolicy": "Always"}})
}

fn workspace_template() -> Value {
    json!([{
        "metadata": {"name": "workspace"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "standard",
        },
    }])
}

fn owner_ref(object: &Value, resource: Resource) -> Value {
    json!({
        "apiVersion": object.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
        "kind": resource.kind(),
        "name": util::name_of(object),
        "uid": util::uid_of(object),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the controller ownerReference, if any.
fn controller_uid(object: &Value) -> Option<String> {
    util::owner_refs(object)
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid").and_then(Value::as_str))
        .map(str::to_string)
}

fn condition(status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!([{
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": 1,
    }])
}

impl State {
    /// Runs the built-in controllers (garbage collection, see [`State::settle`]) and, when
    /// enabled, the agent-sandbox controllers, until nothing changes. Here rather than in
    /// `store` so the store does not depend on the controllers built on top of it.
    pub(crate) fn settle_all(&mut self) {
        for _ in 0..100 {
            self.settle();
            if !(self.config.controllers && self.reconcile()) {
                break;
            }
        }
    }
}

impl State {
    fn served(&self) -> Served {
        self.config.served
    }

    /// The `spec` of template `name` in `ns`, or the default one.
    fn template_spec(&self, ns: &str, name: &str) -> Value {
        self.get(Resource::SandboxTemplate, ns, name)
            .and_then(|t| t.get("spec").cloned())
            .unwrap_or_else(|| {
                json!({"podTemplate": default_pod_template(true), "volumeClaimTemplates": workspace_template()})
            })
    }

    fn sandbox_spec(&self, template: &Value) -> Value {
        let mut spec = json!({
            "podTemplate": template.get("podTemplate").cloned().unwrap_or_else(|| default_pod_template(false)),
        });
        if let Some(vct) = template
            .get("volumeClaimTemplates")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            spec["volumeClaimTemplates"] = vct.clone();
        }
        if self.served() == Served::V1alpha1Only {
            spec["replicas"] = 1.into();
        }
        spec
    }

    /// Runs the pool, Sandbox and claim controllers once; true if anything changed.
    pub(crate) fn reconcile(&mut self) -> bool {
        let mut changed = false;
        // Warm pools.
        let pools: Vec<Value> = self
            .iter(Resource::SandboxWarmPool, None)
            .filter(|(_, v)| !util::is_terminating(v))
            .map(|(_, v)| v.clone())
            .collect();
        for pool in pools {
            let ns = util::namespace_of(&pool).to_string();
            let uid = util::uid_of(&pool).to_string();
            let replicas = pool
                .get("spec")
                .and_then(|s| s.get("replicas"))
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize;
            let owned = self
                .objects
                .dependents_of(&uid)
                .filter(|k| k.0 == Resource::Sandbox && k.1 == ns)
                .filter_map(|k| self.objects.get(k))
                .filter(|s| {
                    !util::is_terminating(s) && controller_uid(s).as_deref() == Some(uid.as_str())
                })
                .count();
            for _ in owned..replicas {
                self.create_warm_sandbox(&pool);
                changed = true;
            }
        }
        // Sandboxes: only those written since their last pass, or whose pod or a PVC came
        // or went, can need anything (the index's queue), taken in key order.
        let mut cursor = None;
        while let Some(key) = self.objects.next_sandbox_candidate(cursor.as_ref()) {
            cursor = Some(key.clone());
            let Some(sandbox) = self
                .objects
                .get(&key)
                .filter(|v| !util::is_terminating(v))
                .cloned()
            else {
                continue;
            };
            if self.reconcile_sandbox(&sandbox) {
                changed = true;
                self.objects.requeue_sandbox(key);
            }
        }
        // Claims.
        changed |= self.reconcile_claims();
        changed
    }

    fn create_warm_sandbox(&mut self, pool: &Value) {
        let ns = util::namespace_of(pool).to_string();
        let pool_name = util::name_of(pool).to_string();
        let template_name = util::path_str(pool, "spec.sandboxTemplateRef.name")
            .unwrap_or("")
            .to_string();
        let spec = self.sandbox_spec(&self.template_spec(&ns, &template_name));
        let name = loop {
            let candidate = format!("{pool_name}-{}", util::random_suffix(5));
            if self.get(Resource::Sandbox, &ns, &candidate).is_none() {
                break candidate;
            }
        };
        let sandbox = json!({
            "apiVersion": Resource::Sandbox.preferred_api_version(self.served()),
            "kind": "Sandbox",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    WARM_POOL_LABEL: fnv32a(&pool_name),
                    TEMPLATE_HASH_LABEL: fnv32a(&template_name),
                },
                "annotations": {POD_NAME_ANNOTATION: name},
                "ownerReferences": [owner_ref(pool, Resource::SandboxWarmPool)],
            },
            "spec": spec,
        });
        let _ = self.create(Resource::Sandbox, &ns, sandbox, None, true);
    }

    fn reconcile_sandbox(&mut self, sandbox: &Value) -> bool {
        if sandbox
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .and_then(Value::as_u64)
            == Some(0)
        {
            return false;
        }
        let mut changed = false;
        let ns = util::namespace_of(sandbox).to_string();
        let name = util::name_of(sandbox).to_string();
        let uid = util::uid_of(sandbox).to_string();
        let sandbox_ref = owner_ref(sandbox, Resource::Sandbox);
        let templates: Vec<Value> = sandbox
            .get("spec")
            .and_then(|s| s.get("volumeClaimTemplates"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut claim_names = Vec::new();
        for vct in &templates {
            let Some(vct_name) = util::path_str(vct, "metadata.name") else {
                continue;
            };
            let pvc_name = format!("{vct_name}-{name}");
            claim_names.push((vct_name.to_string(), pvc_name.clone()));
            match self
                .get(Resource::PersistentVolumeClaim, &ns, &pvc_name)
                .cloned()
            {
                None => {
                    let mut spec = vct.get("spec").cloned().unwrap_or_else(|| json!({}));
                    if !spec.is_object() {
                        spec = json!({});
                    }
                    spec["volumeMode"] = "Filesystem".into();
                    // Named after the PVC, as dynamic provisioners name their PVs, so volume
                    // names never repeat across simulator runs.
                    let pvc_uid = util::new_uid();
                    spec["volumeName"] = format!("pvc-{pvc_uid}").into();
                    let storage = util::path_str(&spec, "resources.requests.storage")
                        .unwrap_or("1Gi")
                        .to_string();
                    let pvc = json!({
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {
                            "name": pvc_name,
                            "namespace": ns,
                            "uid": pvc_uid,
                            "labels": {SANDBOX_NAME_HASH_LABEL: fnv32a(&name)},
                            "annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"},
                            "finalizers": [PVC_PROTECTION_FINALIZER],
                            "ownerReferences": [sandbox_ref.clone()],
                        },
                        "spec": spec,
                        "status": {"phase": "Bound", "accessModes": vct.get("spec").and_then(|s| s.get("accessModes")).cloned().unwrap_or_else(|| json!(["ReadWriteOnce"])), "capacity": {"storage": storage}},
                    });
                    let _ = self.create(Resource::PersistentVolumeClaim, &ns, pvc, None, true);
                    changed = true;
                }
                Some(pvc) if controller_uid(&pvc).is_none() && !util::is_terminating(&pvc) => {
                    let patch = json!({"metadata": {"ownerReferences": [sandbox_ref.clone()]}});
                    let _ = self.merge_patch(
                        Resource::PersistentVolumeClaim,
                        &ns,
                        &pvc_name,
                        &patch,
                        StatusMode::Keep,
                        None,
                    );
                    changed = true;
                }
                Some(_) => {}
            }
        }
        let pod_name = pod_name_of(sandbox);
        if self.get(Resource::Pod, &ns, &pod_name).is_none() {
            let annotated = sandbox
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(POD_NAME_ANNOTATION))
                .is_some();
            if !annotated {
                let patch = json!({"metadata": {"annotations": {POD_NAME_ANNOTATION: pod_name}}});
                let _ = self.merge_patch(
                    Resource::Sandbox,
                    &ns,
                    &name,
                    &patch,
                    StatusMode::Keep,
                    None,
                );
            }
            let pod = self.build_pod(sandbox, &pod_name, &claim_names, &uid);
            let _ = self.create(Resource::Pod, &ns, pod, None, true);
            changed = true;
        }
        changed
    }

    fn build_pod(
        &mut self,
        sandbox: &Value,
        pod_name: &str,
        claims: &[(String, String)],
        sandbox_uid: &str,
    ) -> Value {
        let ns = util::namespace_of(sandbox);
        let name = util::name_of(sandbox);
        let template = sandbox
            .get("spec")
            .and_then(|s| s.get("podTemplate"))
            .cloned()
            .unwrap_or_else(|| default_pod_template(false));
        let sandbox_labels = util::labels(sandbox);
        let mut labels = template
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert(SANDBOX_NAME_HASH_LABEL.into(), fnv32a(name).into());
        let mut annotations = template
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(hash) = sandbox_labels.get(WARM_POOL_LABEL) {
            labels.insert(WARM_POOL_LABEL.into(), hash.clone().into());
            annotations.insert(SAFE_TO_EVICT_ANNOTATION.into(), "true".into());
        }
        if self.served() == Served::V1alpha1Only {
            if let Some(claim_uid) = sandbox_labels.get(CLAIM_UID_LABEL) {
                labels.insert(CLAIM_UID_LABEL.into(), claim_uid.clone().into());
            }
        }
        if let Some(id) = self.sandbox_ids.get(sandbox_uid) {
            annotations.insert(SANDBOX_ID_ANNOTATION.into(), id.clone().into());
        }
        let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
        if !spec.is_object() {
            spec = json!({});
        }
        let mut volumes = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (vct_name, pvc_name) in claims {
            if !volumes
                .iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(vct_name))
            {
                volumes.push(
                    json!({"name": vct_name, "persistentVolumeClaim": {"claimName": pvc_name}}),
                );
            }
        }
        if !volumes.is_empty() {
            spec["volumes"] = Value::Array(volumes);
        }
        spec["nodeName"] = NODE_NAME.into();
        if spec.get("serviceAccountName").is_none() {
            spec["serviceAccountName"] = "default".into();
        }
        if spec.get("terminationGracePeriodSeconds").is_none() {
            spec["terminationGracePeriodSeconds"] = 30.into();
        }
        let ip = format!("10.244.{}.{}", fastrand::u8(1..250), fastrand::u8(2..250));
        let now = self.now_rfc3339();
        let mut meta = json!({
            "name": pod_name,
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [owner_ref(sandbox, Resource::Sandbox)],
        });
        if !annotations.is_empty() {
            meta["annotations"] = Value::Object(annotations);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {
                "phase": "Running",
                "hostIP": "172.18.0.2",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "qosClass": "BestEffort",
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}],
            },
        })
    }

    fn claim_object(&self, ns: &str, name: &str, pool: Option<&str>, template: &str) -> Value {
        let spec = match (self.served(), pool) {
            (Served::Both, Some(pool)) => json!({"warmPoolRef": {"name": pool}}),
            (Served::Both, None) => json!({"warmPoolRef": {"name": "none"}}),
            (Served::V1alpha1Only, Some(pool)) => {
                json!({"sandboxTemplateRef": {"name": template}, "warmpool": pool})
            }
            (Served::V1alpha1Only, None) => {
                json!({"sandboxTemplateRef": {"name": template}, "warmpool": "none"})
            }
        };
        json!({
            "apiVersion": Resource::SandboxClaim.preferred_api_version(self.served()),
            "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        })
    }

    fn set_claim_ready(&mut self, ns: &str, claim: &str, sandbox: &str) -> Result<Value, SimError> {
        let patch = json!({"status": {
            "sandbox": {"name": sandbox},
            "conditions": condition("True", "SandboxReady", "Sandbox is ready", &self.now_rfc3339()),
        }});
        self.merge_patch(
            Resource::SandboxClaim,
            ns,
            claim,
            &patch,
            StatusMode::Only,
            None,
        )
    }

    /// Where claim `claim` gets its Sandbox from: the uids of the warm pools it may adopt
    /// from (oldest warm Sandbox first) and the template a cold Sandbox is made of.
    ///
    /// * `spec.warmPoolRef.name` (v1beta1): that pool, if it exists, with its template; a
    ///   missing pool (or `none`) means cold, from `spec.sandboxTemplateRef.name` if the
    ///   object has one, else template `default`.
    /// * `spec.sandboxTemplateRef.name` + `spec.warmpool` (v1alpha1, default `default`):
    ///   `none` is cold; `default` is every pool in the namespace whose template is the
    ///   claim's; any other value is that pool.
    ///
    /// A template that does not exist is the default agent pod template (as for
    /// [`Simulator::claim_cold`]).
    fn claim_source(&self, ns: &str, claim: &Value) -> (Vec<String>, String) {
        let pool_by_name = |name: &str| {
            self.get(Resource::SandboxWarmPool, ns, name)
                .filter(|p| name != "none" && !util::is_terminating(p))
        };
        let pool_template =
            |pool: &Value| util::path_str(pool, "spec.sandboxTemplateRef.name").map(str::to_string);
        let claim_template = util::path_str(claim, "spec.sandboxTemplateRef.name");
        if let Some(pool) = util::path_str(claim, "spec.warmPoolRef.name") {
            return match pool_by_name(pool) {
                Some(p) => (
                    vec![util::uid_of(p).to_string()],
                    claim_template
                        .map(str::to_string)
                        .or_else(|| pool_template(p))
                        .unwrap_or_else(|| "default".to_string()),
                ),
                None => (Vec::new(), claim_template.unwrap_or("default").to_string()),
            };
        }
        let template = claim_template.unwrap_or("default").to_string();
        let pools = match util::path_str(claim, "spec.warmpool").unwrap_or("default") {
            "none" => Vec::new(),
            "default" => self
                .iter(Resource::SandboxWarmPool, Some(ns))
                .filter(|(_, p)| {
                    !util::is_terminating(p) && pool_template(p).as_deref() == Some(&template)
                })
                .map(|(_, p)| util::uid_of(p).to_string())
                .collect(),
            pool => pool_by_name(pool)
                .map(|p| vec![util::uid_of(p).to_string()])
                .unwrap_or_default(),
        };
        (pools, template)
    }

    /// Binds the unbound claim `claim` as the agent-sandbox claim controller does: adopts
    /// the oldest warm Sandbox of the pools [`State::claim_source`] names (DOMAIN.md §3.2),
    /// or creates one from the template (§3.3). The one path behind
    /// [`Simulator::claim_warm`], [`Simulator::claim_cold`] and the claim reconciler; while
    /// it runs the reconciler leaves the claim alone. Returns the claim.
    pub(crate) fn bind_claim(
        &mut self,
        ns: &str,
        claim: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Value, SimError> {
        let claim_obj = self
            .get(Resource::SandboxClaim, ns, claim)
            .cloned()
            .ok_or_else(|| SimError::not_found(Resource::SandboxClaim, claim))?;
        let uid = util::uid_of(&claim_obj).to_string();
        self.binding_claims.insert(uid.clone());
        let result = self.bind_claim_now(ns, &claim_obj, sandbox_id);
        self.binding_claims.remove(&uid);
        result
    }

    fn bind_claim_now(
        &mut self,
        ns: &str,
        claim_obj: &Value,
        sandbox_id: Option<&str>,
    ) -> Result<Value, SimError> {
        let claim = util::name_of(claim_obj).to_string();
        let (pools, template) = self.claim_source(ns, claim_obj);
        let candidates: std::collections::BTreeSet<&crate::store::Key> = pools
            .iter()
            .flat_map(|pool| self.objects.dependents_of(pool))
            .filter(|k| k.0 == Resource::Sandbox && k.1 == ns)
            .collect();
        let mut warm: Vec<Value> = candidates
            .into_iter()
            .filter_map(|k| self.objects.get(k))
            .filter(|v| {
                !util::is_terminating(v)
                    && controller_uid(v).is_some_and(|owner| pools.contains(&owner))
            })
            .cloned()
            .collect();
        warm.sort_by(|a, b| {
            (
                util::meta_str(a, "creationTimestamp"),
                crate::store::resource_version_of(a),
            )
                .cmp(&(
                    util::meta_str(b, "creationTimestamp"),
                    crate::store::resource_version_of(b),
                ))
        });
        let Some(sandbox) = warm.into_iter().next() else {
            return self.bind_cold(ns, claim_obj, &template, sandbox_id);
        };
        let sandbox_name = util::name_of(&sandbox).to_string();
        let adopt = json!({"metadata": {
            "ownerReferences": [owner_ref(claim_obj, Resource::SandboxClaim)],
            "labels": {WARM_POOL_LABEL: null, CLAIM_UID_LABEL: util::uid_of(claim_obj)},
        }});
        self.merge_patch(
            Resource::Sandbox,
            ns,
            &sandbox_name,
            &adopt,
            StatusMode::Keep,
            None,
        )?;
        let claim_obj = self.set_claim_ready(ns, &claim, &sandbox_name)?;
        let pod_name = pod_name_of(&sandbox);
        if let Some(id) = sandbox_id {
            self.sandbox_ids
                .insert(util::uid_of(&sandbox).to_string(), id.to_string());
        }
        if self.get(Resource::Pod, ns, &pod_name).is_some() {
            let mut labels = json!({WARM_POOL_LABEL: null});
            if self.served() == Served::V1alpha1Only {
                labels[CLAIM_UID_LABEL] = util::uid_of(&claim_obj).into();
            }
            let mut annotations = json!({SAFE_TO_EVICT_ANNOTATION: null});
            if let Some(id) = sandbox_id {
                annotations[SANDBOX_ID_ANNOTATION] = id.into();
            }
            let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
            self.merge_patch(Resource::Pod, ns, &pod_name, &patch, StatusMode::Keep, None)?;
        }
        Ok(claim_obj)
    }

    /// Cold path: a Sandbox named after the claim, owned by it; the Sandbox controller adds
    /// PVC and pod; then the claim status. A Sandbox of that name the claim already controls
    /// is taken as it is.
    fn bind_cold(
        &mut self,
        ns: &str,
        claim: &Value,
        template: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Value, SimError> {
        let claim_name = util::name_of(claim).to_string();
        let claim_uid = util::uid_of(claim).to_string();
        let own = self
            .get(Resource::Sandbox, ns, &claim_name)
            .is_some_and(|s| controller_uid(s).as_deref() == Some(claim_uid.as_str()));
        if !own {
            let spec = self.sandbox_spec(&self.template_spec(ns, template));
            let sandbox = json!({
                "apiVersion": Resource::Sandbox.preferred_api_version(self.served()),
                "kind": "Sandbox",
                "metadata": {
                    "name": claim_name,
                    "namespace": ns,
                    "labels": {CLAIM_UID_LABEL: claim_uid},
                    "annotations": {POD_NAME_ANNOTATION: claim_name},
                    "ownerReferences": [owner_ref(claim, Resource::SandboxClaim)],
                },
                "spec": spec,
            });
            let sandbox = self.create(Resource::Sandbox, ns, sandbox, None, true)?;
            if let Some(id) = sandbox_id {
                self.sandbox_ids
                    .insert(util::uid_of(&sandbox).to_string(), id.to_string());
            }
            self.settle_all();
        }
        self.set_claim_ready(ns, &claim_name, &claim_name)
    }

    /// Expires claim `claim` per its `spec.lifecycle.shutdownPolicy` (the one path behind
    /// [`Simulator::expire_claim`] and the reconciler's `shutdownTime` handling).
    fn expire_claim_now(&mut self, ns: &str, claim: &str) -> Result<(), SimError> {
        let claim_obj = self
            .get(Resource::SandboxClaim, ns, claim)
            .cloned()
            .ok_or_else(|| SimError::not_found(Resource::SandboxClaim, claim))?;
        match util::path_str(&claim_obj, "spec.lifecycle.shutdownPolicy").unwrap_or("Retain") {
            "Delete" => self.delete_now(Resource::SandboxClaim, ns, claim, Propagation::Background),
            "DeleteForeground" => {
                self.delete_now(Resource::SandboxClaim, ns, claim, Propagation::Foreground)
            }
            _ => {
                let sandbox_name = util::path_str(&claim_obj, "status.sandbox.name")
                    .unwrap_or(claim)
                    .to_string();
                let sandbox = self.get(Resource::Sandbox, ns, &sandbox_name).cloned();
                if let Some(sandbox) = &sandbox {
                    let pod = pod_name_of(sandbox);
                    if self.get(Resource::Pod, ns, &pod).is_some() {
                        self.delete_now(Resource::Pod, ns, &pod, Propagation::Background)?;
                    }
                }
                let now = self.now_rfc3339();
                let patch = json!({"status": {"conditions": condition("False", EXPIRED_REASON, "Sandbox has expired", &now)}});
                self.merge_patch(
                    Resource::SandboxClaim,
                    ns,
                    claim,
                    &patch,
                    StatusMode::Only,
                    None,
                )?;
                if sandbox.is_some() {
                    self.delete_now(Resource::Sandbox, ns, &sandbox_name, Propagation::Orphan)?;
                }
                Ok(())
            }
        }
    }

    /// The claim reconciler, one pass: every non-terminating SandboxClaim not being bound
    /// right now that has not expired yet (no Ready condition with reason `SandboxExpired`)
    /// expires if its `spec.lifecycle.shutdownTime` is not after the simulator's clock, and
    /// is otherwise bound if it is unbound (no `status.sandbox.name`). True if anything
    /// changed.
    fn reconcile_claims(&mut self) -> bool {
        let now = self.now();
        // Only unbound claims and claims whose time has come can need anything.
        let keys: Vec<(String, String)> = self
            .objects
            .claims_to_reconcile(now)
            .into_iter()
            .map(|k| (k.1, k.2))
            .collect();
        let mut changed = false;
        for (ns, name) in keys {
            let Some(claim) = self.get(Resource::SandboxClaim, &ns, &name) else {
                continue;
            };
            if util::is_terminating(claim)
                || self.binding_claims.contains(util::uid_of(claim))
                || has_expired(claim)
            {
                continue;
            }
            if shutdown_time(claim).is_some_and(|t| t <= now) {
                changed |= self.expire_claim_now(&ns, &name).is_ok();
                continue;
            }
            if is_bound(claim) {
                continue;
            }
            changed |= self.bind_claim(&ns, &name, None).is_ok();
        }
        changed
    }

    /// Whether a claim's `shutdownTime` has passed without the claim having expired yet.
    pub(crate) fn claim_expiry_due(&self) -> bool {
        self.objects.claim_due(self.now())
    }

    /// Creates `count` claims bound the cold way (claim, Sandbox, PVC and pod each, pod
    /// annotated with the claim name as its sandbox id), named `preload-NNNNNN` from the
    /// first free number, under this one call: the bulk load behind
    /// [`Simulator::preload_bound_claims`] and [`SimConfig::preload_bindings`]. The objects
    /// are what the controllers make, so they run for the load even when the configuration
    /// turns them off (they stay off afterwards). Returns the names of the claims.
    ///
    /// [`SimConfig::preload_bindings`]: crate::SimConfig::preload_bindings
    pub(crate) fn preload(&mut self, ns: &str, count: usize) -> Result<Vec<String>, SimError> {
        let controllers = std::mem::replace(&mut self.config.controllers, true);
        let mut names = Vec::with_capacity(count);
        let mut result = Ok(());
        let mut next = 0usize;
        while names.len() < count {
            let name = format!("preload-{next:06}");
            next += 1;
            if self.get(Resource::SandboxClaim, ns, &name).is_some()
                || self.get(Resource::Sandbox, ns, &name).is_some()
            {
                continue;
            }
            let claim = self.claim_object(ns, &name, None, "default");
            result = self
                .create(Resource::SandboxClaim, ns, claim, None, true)
                .and_then(|_| self.bind_claim(ns, &name, Some(&name)))
                .map(drop);
            if result.is_err() {
                break;
            }
            names.push(name);
        }
        self.settle_all();
        self.config.controllers = controllers;
        result.map(|()| names)
    }

    fn delete_now(
        &mut self,
        resource: Resource,
        ns: &str,
        name: &str,
        policy: Propagation,
    ) -> Result<(), SimError> {
        self.delete(
            resource,
            ns,
            name,
            &DeleteOpts {
                policy,
                ..Default::default()
            },
        )?;
        self.settle();
        Ok(())
    }
}

impl Simulator {
    fn controller_action<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, SimError>,
    ) -> Result<R, SimError> {
        self.with_state(|s| {
            if !s.config.controllers {
                return Err(SimError::ControllersDisabled);
            }
            let result = f(s);
            s.settle_all();
            result
        })
    }

    /// Creates SandboxTemplate `template_name` if missing (the default agent pod template,
    /// plus a `workspace` volume claim template when `with_pvc`) and SandboxWarmPool `pool`
    /// with `replicas`; the pool fills before this returns. Returns the pool.
    pub fn create_pool(
        &self,
        ns: &str,
        pool: &str,
        replicas: u32,
        template_name: &str,
        with_pvc: bool,
    ) -> Result<Value, SimError> {
        self.controller_action(|s| {
            let served = s.served();
            if s.get(Resource::SandboxTemplate, ns, template_name)
                .is_none()
            {
                let mut spec = json!({"podTemplate": default_pod_template(with_pvc)});
                if with_pvc {
                    spec["volumeClaimTemplates"] = workspace_template();
                }
                let template = json!({
                    "apiVersion": Resource::SandboxTemplate.preferred_api_version(served),
                    "kind": "SandboxTemplate",
                    "metadata": {"name": template_name, "namespace": ns},
                    "spec": spec,
                });
                s.create(Resource::SandboxTemplate, ns, template, None, true)?;
            }
            let pool = json!({
                "apiVersion": Resource::SandboxWarmPool.preferred_api_version(served),
                "kind": "SandboxWarmPool",
                "metadata": {"name": pool, "namespace": ns},
                "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template_name}},
            });
            let pool = s.create(Resource::SandboxWarmPool, ns, pool, None, true)?;
            s.settle_all();
            Ok(s.get(Resource::SandboxWarmPool, ns, util::name_of(&pool))
                .cloned()
                .unwrap_or(pool))
        })
    }

    /// Creates claim `claim` on `pool` and binds it the warm way (DOMAIN.md §3.2): one merge
    /// patch on the oldest warm Sandbox of the pool replaces its ownerReferences with the
    /// claim (controller, blockOwnerDeletion), drops the warm-pool label and sets
    /// `agents.x-k8s.io/claim-uid`; then the claim gets `status.sandbox.name` and Ready=True;
    /// then the pod loses its warm-pool label and safe-to-evict annotation and gets
    /// `openshell.io/sandbox-id` (if given; replacement pods keep it). The pool replenishes.
    /// With no warm Sandbox available it falls back to the cold path. Returns the claim.
    ///
    /// This is the claim reconciler's binding (see [`controllers`](crate::controllers)),
    /// run at once on the new claim, so the reconciler finds it bound.
    pub fn claim_warm(
        &self,
        ns: &str,
        claim: &str,
        pool: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Value, SimError> {
        self.controller_action(|s| {
            let pool_obj = s
                .get(Resource::SandboxWarmPool, ns, pool)
                .cloned()
                .ok_or_else(|| SimError::not_found(Resource::SandboxWarmPool, pool))?;
            let template = util::path_str(&pool_obj, "spec.sandboxTemplateRef.name")
                .unwrap_or("")
                .to_string();
            let claim_obj = s.claim_object(ns, claim, Some(pool), &template);
            s.create(Resource::SandboxClaim, ns, claim_obj, None, true)?;
            s.bind_claim(ns, claim, sandbox_id)
        })
    }

    /// Creates claim `claim` and binds it the cold way (DOMAIN.md §3.3): a Sandbox named
    /// after the claim, controlled by it, labelled with the claim uid; its PVC
    /// (`workspace-<claim>`) and pod (carrying `openshell.io/sandbox-id` if given); then the
    /// claim's `status.sandbox.name` and Ready=True. Returns the claim.
    ///
    /// The claim names no pool (`warmPoolRef: none` / `warmpool: none`) and template
    /// `default`; it is bound by the same code as the reconciler's.
    pub fn claim_cold(
        &self,
        ns: &str,
        claim: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Value, SimError> {
        self.controller_action(|s| {
            let claim_obj = s.claim_object(ns, claim, None, "default");
            s.create(Resource::SandboxClaim, ns, claim_obj, None, true)?;
            s.bind_claim(ns, claim, sandbox_id)
        })
    }

    /// Bulk load for benches and large demos: `count` claims bound the cold way in
    /// `namespace` (claim, Sandbox, PVC and pod each: 4 objects per binding), named
    /// `preload-NNNNNN` from the first free number, the pods annotated with the claim name as
    /// their `openshell.io/sandbox-id`. Done in process under one lock, with no client or
    /// server to start first (25k bindings, 100k objects, in about 5 s on 2 cores). Returns
    /// the claim names.
    pub fn preload_bound_claims(
        &self,
        namespace: &str,
        count: usize,
    ) -> Result<Vec<String>, SimError> {
        self.controller_action(|s| s.preload(namespace, count))
    }

    /// Deletes the claim with `policy`; garbage collection releases its Sandbox, pod and PVC
    /// (DOMAIN.md §3.5).
    pub fn delete_claim(&self, ns: &str, claim: &str, policy: Propagation) -> Result<(), SimError> {
        self.controller_action(|s| s.delete_now(Resource::SandboxClaim, ns, claim, policy))
    }

    /// Expires the claim per its `spec.lifecycle.shutdownPolicy` (default `Retain`):
    /// `Delete` deletes the claim in the background, `DeleteForeground` in the foreground;
    /// `Retain` deletes the pod, sets the claim Ready=False (reason `SandboxExpired`, status
    /// name kept) and deletes the Sandbox with `propagationPolicy: Orphan`, so its PVC
    /// survives ownerless. The reconciler does the same when the claim's
    /// `spec.lifecycle.shutdownTime` passes ([`Simulator::advance_clock`]).
    pub fn expire_claim(&self, ns: &str, claim: &str) -> Result<(), SimError> {
        self.controller_action(|s| s.expire_claim_now(ns, claim))
    }

    /// Deletes the Sandbox's pod; the Sandbox controller recreates it with the same name and
    /// a new uid. Returns the new pod.
    pub fn replace_pod(&self, ns: &str, sandbox: &str) -> Result<Value, SimError> {
        self.controller_action(|s| {
            let sandbox_obj = s
                .get(Resource::Sandbox, ns, sandbox)
                .cloned()
                .ok_or_else(|| SimError::not_found(Resource::Sandbox, sandbox))?;
            let pod = pod_name_of(&sandbox_obj);
            s.delete_now(Resource::Pod, ns, &pod, Propagation::Background)?;
            s.settle_all();
            s.get(Resource::Pod, ns, &pod)
                .cloned()
                .ok_or_else(|| SimError::not_found(Resource::Pod, &pod))
        })
    }

    /// The Sandbox's own expiry: deletes its pod, then the Sandbox; the PVC survives
    /// (ownerless) unless the Sandbox's `spec.shutdownPolicy` is `Delete`.
    pub fn expire_sandbox(&self, ns: &str, sandbox: &str) -> Result<(), SimError> {
        self.controller_action(|s| {
            let sandbox_obj = s
                .get(Resource::Sandbox, ns, sandbox)
                .cloned()
                .ok_or_else(|| SimError::not_found(Resource::Sandbox, sandbox))?;
            let pod = pod_name_of(&sandbox_obj);
            if s.get(Resource::Pod, ns, &pod).is_some() {
                s.delete_now(Resource::Pod, ns, &pod, Propagation::Background)?;
            }
            let policy = match util::path_str(&sandbox_obj, "spec.shutdownPolicy") {
                Some("Delete") => Propagation::Background,
                _ => Propagation::Orphan,
            };
            s.delete_now(Resource::Sandbox, ns, sandbox, policy)
        })
    }
}
