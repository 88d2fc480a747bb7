//! Deletion and garbage collection: finalizers, background/foreground/orphan cascades of a
//! claim in the DOMAIN.md §3.5 event orders (the orders of tests/fixtures/release_*.jsonl).

use crate::common::events_after;
use serde_json::{json, Value};
use sim::{Propagation, Resource, SimConfig, Simulator};

fn sim() -> Simulator {
    Simulator::new(SimConfig {
        controllers: false,
        ..SimConfig::default()
    })
}

fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// A cold-bound claim `name` in `agents`, built by hand: claim, Sandbox, PVC, pod.
fn cold_bind(sim: &Simulator, name: &str) -> (Value, Value, Value, Value) {
    let claim = sim
        .create(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": "agents"},
            "spec": {"sandboxTemplateRef": {"name": "t"}, "lifecycle": {"shutdownPolicy": "Delete"}},
            "status": {"sandbox": {"name": name}},
        }))
        .unwrap();
    let sandbox = sim
        .create(json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": name, "namespace": "agents",
                "labels": {"agents.x-k8s.io/claim-uid": claim["metadata"]["uid"]},
                "ownerReferences": [controller_ref(&claim)]},
            "spec": {"podTemplate": {"spec": {"containers": []}}},
        }))
        .unwrap();
    let pvc = sim
        .create(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": format!("workspace-{name}"), "namespace": "agents",
                "finalizers": ["kubernetes.io/pvc-protection"],
                "ownerReferences": [controller_ref(&sandbox)]},
            "spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"},
        }))
        .unwrap();
    let pod = sim
        .create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "agents",
                "ownerReferences": [controller_ref(&sandbox)]},
            "spec": {"nodeName": "n1", "containers": [],
                "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": format!("workspace-{name}")}}]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
    (claim, sandbox, pvc, pod)
}

fn check_rvs_increase(sim: &Simulator) {
    let rvs: Vec<u64> = sim.events().iter().map(|e| e.resource_version).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

#[test]
fn background_release_order() {
    let sim = sim();
    cold_bind(&sim, "build-agent");
    let before = sim.resource_version();
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "build-agent",
        Propagation::Background,
    )
    .unwrap();
    assert_eq!(
        events_after(&sim, before),
        [
            "DELETED SandboxClaim build-agent",
            "DELETED Sandbox build-agent",
            "MODIFIED Pod build-agent",
            "MODIFIED PersistentVolumeClaim workspace-build-agent",
            "DELETED Pod build-agent",
            "DELETED PersistentVolumeClaim workspace-build-agent",
        ]
    );
    let events = sim.events();
    let pod_terminating = events
        .iter()
        .find(|e| e.event_type == "MODIFIED" && e.resource == Resource::Pod)
        .unwrap();
    assert!(pod_terminating.object["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        pod_terminating.object["metadata"]["deletionGracePeriodSeconds"],
        30
    );
    let deleted_pvc = events.last().unwrap();
    assert!(deleted_pvc.object["metadata"].get("finalizers").is_none());
    for r in Resource::ALL {
        assert!(sim.list(r, None).is_empty(), "{r:?} left");
    }
    check_rvs_increase(&sim);
}

#[test]
fn foreground_release_order() {
    let sim = sim();
    cold_bind(&sim, "eval-agent");
    let before = sim.resource_version();
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "eval-agent",
        Propagation::Foreground,
    )
    .unwrap();
    assert_eq!(
        events_after(&sim, before),
        [
            "MODIFIED SandboxClaim eval-agent",
            "MODIFIED Sandbox eval-agent",
            "MODIFIED Pod eval-agent",
            "MODIFIED PersistentVolumeClaim workspace-eval-agent",
            "DELETED Pod eval-agent",
            "DELETED PersistentVolumeClaim workspace-eval-agent",
            "DELETED Sandbox eval-agent",
            "DELETED SandboxClaim eval-agent",
        ]
    );
    let events = sim.events();
    let claim_terminating = events
        .iter()
        .find(|e| e.resource == Resource::SandboxClaim && e.event_type == "MODIFIED")
        .unwrap();
    assert_eq!(
        claim_terminating.object["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let sandbox_terminating = events
        .iter()
        .find(|e| e.resource == Resource::Sandbox && e.event_type == "MODIFIED")
        .unwrap();
    assert_eq!(
        sandbox_terminating.object["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    check_rvs_increase(&sim);
}

#[test]
fn orphan_release_order() {
    let sim = sim();
    let (claim, ..) = cold_bind(&sim, "notebook-agent");
    let before = sim.resource_version();
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "notebook-agent",
        Propagation::Orphan,
    )
    .unwrap();
    assert_eq!(
        events_after(&sim, before),
        [
            "MODIFIED SandboxClaim notebook-agent",
            "MODIFIED Sandbox notebook-agent",
            "DELETED SandboxClaim notebook-agent",
        ]
    );
    let first = &sim.events()[sim.events().len() - 3];
    assert_eq!(first.object["metadata"]["finalizers"], json!(["orphan"]));
    let sandbox = sim
        .get(Resource::Sandbox, "agents", "notebook-agent")
        .unwrap();
    assert!(sandbox["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        sandbox["metadata"]["labels"]["agents.x-k8s.io/claim-uid"], claim["metadata"]["uid"],
        "the claim-uid label stays (stale)"
    );
    assert!(sim.get(Resource::Pod, "agents", "notebook-agent").is_some());
    assert!(sim
        .get(
            Resource::PersistentVolumeClaim,
            "agents",
            "workspace-notebook-agent"
        )
        .is_some());
}

#[test]
fn sandbox_orphan_delete_keeps_the_pvc() {
    let sim = sim();
    cold_bind(&sim, "report-agent");
    sim.delete(
        Resource::Pod,
        "agents",
        "report-agent",
        Propagation::Background,
    )
    .unwrap();
    let before = sim.resource_version();
    sim.delete(
        Resource::Sandbox,
        "agents",
        "report-agent",
        Propagation::Orphan,
    )
    .unwrap();
    assert_eq!(
        events_after(&sim, before),
        [
            "MODIFIED Sandbox report-agent",
            "MODIFIED PersistentVolumeClaim workspace-report-agent",
            "DELETED Sandbox report-agent",
        ]
    );
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            "agents",
            "workspace-report-agent",
        )
        .unwrap();
    assert!(pvc["metadata"].get("ownerReferences").is_none());
    assert!(pvc["metadata"].get("deletionTimestamp").is_none());
}

#[test]
fn user_finalizers_hold_deletion_until_removed() {
    let sim = sim();
    sim.create(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": "held", "namespace": "agents", "finalizers": ["example.com/hold"]},
        "spec": {"warmPoolRef": {"name": "p"}},
    }))
    .unwrap();
    let before = sim.resource_version();
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "held",
        Propagation::Background,
    )
    .unwrap();
    let held = sim.get(Resource::SandboxClaim, "agents", "held").unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    // a second delete is a no-op
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "held",
        Propagation::Background,
    )
    .unwrap();
    // adding a finalizer to a terminating object is forbidden
    let err = sim
        .merge_patch(
            Resource::SandboxClaim,
            "agents",
            "held",
            json!({"metadata": {"finalizers": ["example.com/hold", "x/y"]}}),
            false,
        )
        .unwrap_err();
    assert_eq!(err.code(), 422);
    sim.merge_patch(
        Resource::SandboxClaim,
        "agents",
        "held",
        json!({"metadata": {"finalizers": null}}),
        false,
    )
    .unwrap();
    assert!(sim.get(Resource::SandboxClaim, "agents", "held").is_none());
    assert_eq!(
        events_after(&sim, before),
        ["MODIFIED SandboxClaim held", "DELETED SandboxClaim held"]
    );
}

#[test]
fn owner_refs_to_unknown_uids_are_left_alone_but_known_dead_owners_collect() {
    let sim = sim();
    // An owner the simulator never saw (e.g. replayed fixtures): not collected.
    sim.create(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "warm", "namespace": "agents", "ownerReferences": [{
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "name": "pool", "uid": "p0010000-0001-4000-8000-000000000001", "controller": true}]},
        "spec": {},
    }))
    .unwrap();
    assert!(sim.get(Resource::Sandbox, "agents", "warm").is_some());
    // An owner that existed and is gone: its dependent is collected on creation.
    let owner = sim
        .create(
            json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
            "metadata": {"name": "gone", "namespace": "agents"}, "spec": {}}),
        )
        .unwrap();
    sim.delete(
        Resource::SandboxClaim,
        "agents",
        "gone",
        Propagation::Background,
    )
    .unwrap();
    sim.create(json!({
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "late", "namespace": "agents", "ownerReferences": [controller_ref(&owner)]},
        "spec": {},
    }))
    .unwrap();
    assert!(sim.get(Resource::Sandbox, "agents", "late").is_none());
}
