//! agent-sandbox controller emulation (DOMAIN.md §2-3): warm pools, warm and cold binds, pod
//! replacement, expiry.

use crate::common::{events_after, name, owner_kinds, uid};
use serde_json::{json, Value};
use sim::{Propagation, Resource, Served, SimConfig, SimError, Simulator};

const NS: &str = "agents";

fn sim() -> Simulator {
    Simulator::new(SimConfig::default())
}

fn owned_by(sim: &Simulator, resource: Resource, owner: &Value) -> Vec<Value> {
    sim.list(resource, Some(NS))
        .into_iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner["metadata"]["uid"]))
        })
        .collect()
}

fn ready(claim: &Value) -> (String, String) {
    let c = claim["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn warm_pool_fills_with_sandbox_pvc_and_pod() {
    let sim = sim();
    let pool = sim
        .create_pool(NS, "python-pool", 2, "python-template", true)
        .unwrap();
    assert!(sim
        .get(Resource::SandboxTemplate, NS, "python-template")
        .is_some());
    let sandboxes = owned_by(&sim, Resource::Sandbox, &pool);
    assert_eq!(sandboxes.len(), 2);
    for s in &sandboxes {
        let n = name(s);
        let suffix = n.strip_prefix("python-pool-").expect("pool prefix");
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(s["apiVersion"], "agents.x-k8s.io/v1beta1");
        assert_eq!(owner_kinds(s), ["SandboxWarmPool"]);
        assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            s["metadata"]["labels"]["agents.x-k8s.io/warm-pool-sandbox"],
            "ed572cc4"
        );
        assert_eq!(s["metadata"]["annotations"]["agents.x-k8s.io/pod-name"], n);

        let pvc = sim
            .get(
                Resource::PersistentVolumeClaim,
                NS,
                &format!("workspace-{n}"),
            )
            .expect("PVC");
        assert_eq!(
            pvc["metadata"]["ownerReferences"][0]["uid"],
            s["metadata"]["uid"]
        );
        assert_eq!(pvc["status"]["phase"], "Bound");
        // Named after the PVC, as dynamic provisioners do: never reused across runs.
        assert_eq!(
            pvc["spec"]["volumeName"].as_str().unwrap(),
            format!("pvc-{}", pvc["metadata"]["uid"].as_str().unwrap())
        );
        let pod = sim.get(Resource::Pod, NS, &n).expect("pod");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["uid"],
            s["metadata"]["uid"]
        );
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("workspace-{n}")
        );
        // order: Sandbox, then PVC, then pod
        let events = events_after(&sim, 0);
        let pos = |e: &str| events.iter().position(|x| x == e).unwrap();
        assert!(
            pos(&format!("ADDED Sandbox {n}"))
                < pos(&format!("ADDED PersistentVolumeClaim workspace-{n}"))
        );
        assert!(
            pos(&format!("ADDED PersistentVolumeClaim workspace-{n}"))
                < pos(&format!("ADDED Pod {n}"))
        );
    }
    let pvs: std::collections::BTreeSet<String> = sim
        .list(Resource::PersistentVolumeClaim, Some(NS))
        .iter()
        .map(|p| p["spec"]["volumeName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pvs.len(), 2, "fresh PV per PVC");
}

#[test]
fn claim_warm_adopts_with_one_patch_and_the_pool_replenishes() {
    let sim = sim();
    let pool = sim
        .create_pool(NS, "python-pool", 1, "python-template", true)
        .unwrap();
    let warm = owned_by(&sim, Resource::Sandbox, &pool).remove(0);
    let warm_name = name(&warm);
    let pod_before = sim.get(Resource::Pod, NS, &warm_name).unwrap();
    let pvc_before = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            &format!("workspace-{warm_name}"),
        )
        .unwrap();
    let before = sim.resource_version();

    let claim = sim
        .claim_warm(NS, "my-claim", "python-pool", Some("sbx-7f3a9c01"))
        .unwrap();
    assert_eq!(claim["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
    assert_eq!(claim["spec"]["warmPoolRef"]["name"], "python-pool");
    assert_eq!(claim["status"]["sandbox"]["name"], warm_name);
    assert_eq!(ready(&claim), ("True".into(), "SandboxReady".into()));

    let adopted = sim.get(Resource::Sandbox, NS, &warm_name).unwrap();
    assert_eq!(uid(&adopted), uid(&warm));
    let refs = adopted["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["kind"], "SandboxClaim");
    assert_eq!(refs[0]["uid"], claim["metadata"]["uid"]);
    assert_eq!(refs[0]["controller"], true);
    assert_eq!(refs[0]["blockOwnerDeletion"], true);
    let labels = &adopted["metadata"]["labels"];
    assert!(labels.get("agents.x-k8s.io/warm-pool-sandbox").is_none());
    assert_eq!(
        labels["agents.x-k8s.io/claim-uid"],
        claim["metadata"]["uid"]
    );

    let pod = sim.get(Resource::Pod, NS, &warm_name).unwrap();
    assert_eq!(uid(&pod), uid(&pod_before), "the pod uid does not change");
    assert_eq!(
        pod["metadata"]["annotations"]["openshell.io/sandbox-id"],
        "sbx-7f3a9c01"
    );
    assert!(pod["metadata"]["labels"]
        .get("agents.x-k8s.io/warm-pool-sandbox")
        .is_none());
    assert!(
        pod["metadata"]["labels"]
            .get("agents.x-k8s.io/claim-uid")
            .is_none(),
        "v0.5 pods carry no claim-uid"
    );
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            &format!("workspace-{warm_name}"),
        )
        .unwrap();
    assert_eq!(uid(&pvc), uid(&pvc_before), "the PVC stays");

    let events = events_after(&sim, before);
    assert_eq!(events[0], "ADDED SandboxClaim my-claim");
    assert_eq!(events[1], format!("MODIFIED Sandbox {warm_name}"));
    assert_eq!(events[2], "MODIFIED SandboxClaim my-claim");
    assert_eq!(events[3], format!("MODIFIED Pod {warm_name}"));
    assert!(
        events[4].starts_with("ADDED Sandbox python-pool-"),
        "{events:?}"
    );

    // replenished: one warm Sandbox again, a different one
    let warm_now = owned_by(&sim, Resource::Sandbox, &pool);
    assert_eq!(warm_now.len(), 1);
    assert_ne!(name(&warm_now[0]), warm_name);
    assert!(sim.get(Resource::Pod, NS, &name(&warm_now[0])).is_some());
}

#[test]
fn claim_cold_and_pod_replacement() {
    let sim = sim();
    let claim = sim
        .claim_cold(NS, "research-agent", Some("sbx-5e4c0001"))
        .unwrap();
    let sandbox = sim.get(Resource::Sandbox, NS, "research-agent").unwrap();
    assert_eq!(owner_kinds(&sandbox), ["SandboxClaim"]);
    assert_eq!(
        sandbox["metadata"]["ownerReferences"][0]["uid"],
        claim["metadata"]["uid"]
    );
    assert_eq!(
        sandbox["metadata"]["labels"]["agents.x-k8s.io/claim-uid"],
        claim["metadata"]["uid"]
    );
    assert_eq!(claim["status"]["sandbox"]["name"], "research-agent");
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            "workspace-research-agent",
        )
        .unwrap();
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["uid"],
        sandbox["metadata"]["uid"]
    );
    let pod = sim.get(Resource::Pod, NS, "research-agent").unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["openshell.io/sandbox-id"],
        "sbx-5e4c0001"
    );

    let before = sim.resource_version();
    let new_pod = sim.replace_pod(NS, "research-agent").unwrap();
    assert_eq!(name(&new_pod), "research-agent");
    assert_ne!(uid(&new_pod), uid(&pod));
    assert_eq!(
        new_pod["metadata"]["annotations"]["openshell.io/sandbox-id"],
        "sbx-5e4c0001"
    );
    assert_eq!(
        new_pod["metadata"]["ownerReferences"][0]["uid"],
        sandbox["metadata"]["uid"]
    );
    assert_eq!(
        events_after(&sim, before),
        [
            "MODIFIED Pod research-agent",
            "DELETED Pod research-agent",
            "ADDED Pod research-agent"
        ]
    );
    // a pod deleted by hand is recreated too
    sim.delete(Resource::Pod, NS, "research-agent", Propagation::Background)
        .unwrap();
    let again = sim.get(Resource::Pod, NS, "research-agent").unwrap();
    assert_ne!(uid(&again), uid(&new_pod));
}

#[test]
fn expire_claim_retain_keeps_claim_and_pvc() {
    let sim = sim();
    sim.claim_cold(NS, "report-agent", None).unwrap();
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            "workspace-report-agent",
        )
        .unwrap();
    let before = sim.resource_version();
    sim.expire_claim(NS, "report-agent").unwrap();
    assert_eq!(
        events_after(&sim, before),
        [
            "MODIFIED Pod report-agent",
            "DELETED Pod report-agent",
            "MODIFIED SandboxClaim report-agent",
            "MODIFIED Sandbox report-agent",
            "MODIFIED PersistentVolumeClaim workspace-report-agent",
            "DELETED Sandbox report-agent",
        ]
    );
    let claim = sim.get(Resource::SandboxClaim, NS, "report-agent").unwrap();
    assert_eq!(ready(&claim), ("False".into(), "SandboxExpired".into()));
    assert_eq!(claim["status"]["sandbox"]["name"], "report-agent");
    let kept = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            "workspace-report-agent",
        )
        .unwrap();
    assert_eq!(uid(&kept), uid(&pvc));
    assert!(kept["metadata"].get("ownerReferences").is_none());
    assert!(sim.get(Resource::Sandbox, NS, "report-agent").is_none());
    assert!(sim.get(Resource::Pod, NS, "report-agent").is_none());
}

#[test]
fn expire_claim_delete_and_delete_foreground() {
    let sim = sim();
    for (claim, policy) in [("a", "Delete"), ("b", "DeleteForeground")] {
        sim.claim_cold(NS, claim, None).unwrap();
        sim.merge_patch(
            Resource::SandboxClaim,
            NS,
            claim,
            json!({"spec": {"lifecycle": {"shutdownPolicy": policy}}}),
            false,
        )
        .unwrap();
        let before = sim.resource_version();
        sim.expire_claim(NS, claim).unwrap();
        let events = events_after(&sim, before);
        let first = if policy == "Delete" {
            "DELETED"
        } else {
            "MODIFIED"
        };
        assert_eq!(events[0], format!("{first} SandboxClaim {claim}"));
        assert_eq!(
            events.last().unwrap(),
            &format!(
                "DELETED {}",
                if policy == "Delete" {
                    format!("PersistentVolumeClaim workspace-{claim}")
                } else {
                    format!("SandboxClaim {claim}")
                }
            )
        );
        assert!(sim.get(Resource::Pod, NS, claim).is_none());
        assert!(sim
            .get(
                Resource::PersistentVolumeClaim,
                NS,
                &format!("workspace-{claim}")
            )
            .is_none());
        assert!(sim.get(Resource::Sandbox, NS, claim).is_none());
        assert!(sim.get(Resource::SandboxClaim, NS, claim).is_none());
    }
}

#[test]
fn delete_claim_background_releases_everything() {
    let sim = sim();
    sim.claim_cold(NS, "build-agent", None).unwrap();
    let before = sim.resource_version();
    sim.delete_claim(NS, "build-agent", Propagation::Background)
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
}

#[test]
fn expire_sandbox_keeps_pvc_unless_policy_delete() {
    let sim = sim();
    sim.claim_cold(NS, "keep", None).unwrap();
    sim.expire_sandbox(NS, "keep").unwrap();
    assert!(sim.get(Resource::Sandbox, NS, "keep").is_none());
    assert!(sim.get(Resource::Pod, NS, "keep").is_none());
    let pvc = sim
        .get(Resource::PersistentVolumeClaim, NS, "workspace-keep")
        .unwrap();
    assert!(pvc["metadata"].get("ownerReferences").is_none());

    sim.claim_cold(NS, "drop", None).unwrap();
    sim.merge_patch(
        Resource::Sandbox,
        NS,
        "drop",
        json!({"spec": {"shutdownPolicy": "Delete"}}),
        false,
    )
    .unwrap();
    sim.expire_sandbox(NS, "drop").unwrap();
    assert!(sim
        .get(Resource::PersistentVolumeClaim, NS, "workspace-drop")
        .is_none());
}

#[test]
fn v1alpha1_only_cluster_and_disabled_controllers() {
    let sim = Simulator::new(SimConfig {
        served: Served::V1alpha1Only,
        ..SimConfig::default()
    });
    sim.create_pool(NS, "pool", 1, "tmpl", true).unwrap();
    let claim = sim.claim_warm(NS, "c", "pool", Some("id")).unwrap();
    assert_eq!(claim["apiVersion"], "extensions.agents.x-k8s.io/v1alpha1");
    assert_eq!(claim["spec"]["warmpool"], "pool");
    assert_eq!(claim["spec"]["sandboxTemplateRef"]["name"], "tmpl");
    let sandbox = claim["status"]["sandbox"]["name"].as_str().unwrap();
    let pod = sim.get(Resource::Pod, NS, sandbox).unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["agents.x-k8s.io/claim-uid"],
        claim["metadata"]["uid"]
    );

    let off = Simulator::new(SimConfig {
        controllers: false,
        ..SimConfig::default()
    });
    assert_eq!(
        off.create_pool(NS, "pool", 1, "t", true).unwrap_err(),
        SimError::ControllersDisabled
    );
    off.create(
        json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "s", "namespace": NS}, "spec": {"podTemplate": {}}}),
    )
    .unwrap();
    assert!(
        off.list(Resource::Pod, None).is_empty(),
        "no controller, no pod"
    );
}

#[test]
fn sandboxes_created_by_hand_get_pvcs_and_pods() {
    let sim = sim();
    let sandbox = sim
        .create(json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "sandbox-example", "namespace": NS},
            "spec": {"podTemplate": {"metadata": {"labels": {"sandbox": "my-sandbox"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "my-pvc"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}))
        .unwrap();
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            "my-pvc-sandbox-example",
        )
        .unwrap();
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["uid"],
        sandbox["metadata"]["uid"]
    );
    let pod = sim.get(Resource::Pod, NS, "sandbox-example").unwrap();
    assert_eq!(pod["metadata"]["labels"]["sandbox"], "my-sandbox");
    let stored = sim.get(Resource::Sandbox, NS, "sandbox-example").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["agents.x-k8s.io/pod-name"],
        "sandbox-example"
    );
}
