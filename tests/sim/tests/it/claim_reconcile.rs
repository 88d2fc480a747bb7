//! The claim controller: SandboxClaims written through the API (the real kube client) are
//! bound warm or cold as agent-sandbox binds them, and expire when their
//! `spec.lifecycle.shutdownTime` passes on the simulator's clock, exactly as the explicit
//! `expire_claim` call expires them. With controllers off nothing touches a claim.

use crate::common;
use crate::common::events_after;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{json, Value};
use sim::{Propagation, Resource, Served, SimConfig, Simulator};
use std::time::Duration;

const NS: &str = "agents";

fn api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

fn ext(client: &kube::Client, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    api(client, "extensions.agents.x-k8s.io", version, kind, plural)
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap()
}

async fn post(api: &Api<DynamicObject>, object: Value) -> Value {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    to_value(&api.create(&PostParams::default(), &object).await.unwrap())
}

fn template(version: &str, name: &str) -> Value {
    json!({
        "apiVersion": format!("extensions.agents.x-k8s.io/{version}"), "kind": "SandboxTemplate",
        "metadata": {"name": name},
        "spec": {
            "podTemplate": {"spec": {"containers": [{"name": "agent", "image": "busybox",
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "workspace"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
}

fn pool(version: &str, name: &str, replicas: u32, template: &str) -> Value {
    json!({
        "apiVersion": format!("extensions.agents.x-k8s.io/{version}"), "kind": "SandboxWarmPool",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}},
    })
}

fn claim_v1beta1(name: &str, pool: &str, lifecycle: Option<Value>) -> Value {
    let mut spec = json!({"warmPoolRef": {"name": pool}});
    if let Some(l) = lifecycle {
        spec["lifecycle"] = l;
    }
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn controller_uid(v: &Value) -> Option<String> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(str::to_string)
}

fn controlled_by(sim: &Simulator, resource: Resource, owner: &Value) -> Vec<Value> {
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
    sim.list(resource, Some(NS))
        .into_iter()
        .filter(|o| controller_uid(o).as_deref() == Some(uid.as_str()))
        .collect()
}

fn ready(claim: &Value) -> (String, String) {
    let c = claim["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test]
async fn claims_created_over_http_bind_warm_then_cold() {
    let running = Simulator::start_local(SimConfig::default()).await.unwrap();
    let sim = running.simulator().clone();
    let client = running.client();
    let templates = ext(&client, "v1beta1", "SandboxTemplate", "sandboxtemplates");
    let pools = ext(&client, "v1beta1", "SandboxWarmPool", "sandboxwarmpools");
    let claims = ext(&client, "v1beta1", "SandboxClaim", "sandboxclaims");
    let sandboxes = api(
        &client,
        "agents.x-k8s.io",
        "v1beta1",
        "Sandbox",
        "sandboxes",
    );

    post(&templates, template("v1beta1", "python")).await;
    let pool_obj = post(&pools, pool("v1beta1", "python-pool", 1, "python")).await;
    let warm = controlled_by(&sim, Resource::Sandbox, &pool_obj);
    assert_eq!(warm.len(), 1, "the pool filled");
    let warm = warm.into_iter().next().unwrap();
    let warm_name = common::name(&warm);
    let warm_pod = sim.get(Resource::Pod, NS, &warm_name).unwrap();
    let warm_pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            &format!("workspace-{warm_name}"),
        )
        .unwrap();

    // A claim on the pool adopts the warm Sandbox.
    let before = sim.resource_version();
    let created = post(&claims, claim_v1beta1("session-1", "python-pool", None)).await;
    let claim_uid = common::uid(&created);
    let claim = to_value(&claims.get("session-1").await.unwrap());
    assert_eq!(claim["status"]["sandbox"]["name"], warm_name.as_str());
    assert_eq!(ready(&claim), ("True".into(), "SandboxReady".into()));
    let adopted = to_value(&sandboxes.get(&warm_name).await.unwrap());
    assert_eq!(common::uid(&adopted), common::uid(&warm), "same Sandbox");
    let refs = adopted["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0]["kind"], "SandboxClaim");
    assert_eq!(refs[0]["name"], "session-1");
    assert_eq!(refs[0]["uid"], claim_uid.as_str());
    assert_eq!(refs[0]["controller"], true);
    let labels = &adopted["metadata"]["labels"];
    assert!(
        labels.get(sim::controllers::WARM_POOL_LABEL).is_none(),
        "{labels}"
    );
    assert_eq!(
        labels[sim::controllers::CLAIM_UID_LABEL],
        claim_uid.as_str()
    );
    let pod = sim.get(Resource::Pod, NS, &warm_name).unwrap();
    assert_eq!(common::uid(&pod), common::uid(&warm_pod), "the pod stays");
    assert!(pod["metadata"]["labels"]
        .get(sim::controllers::WARM_POOL_LABEL)
        .is_none());
    let pvc = sim
        .get(
            Resource::PersistentVolumeClaim,
            NS,
            &format!("workspace-{warm_name}"),
        )
        .unwrap();
    assert_eq!(common::uid(&pvc), common::uid(&warm_pvc), "the PVC stays");
    // The same writes, in the same order, as the explicit claim_warm.
    let events = events_after(&sim, before);
    assert_eq!(
        &events[..4],
        [
            "ADDED SandboxClaim session-1".to_string(),
            format!("MODIFIED Sandbox {warm_name}"),
            "MODIFIED SandboxClaim session-1".to_string(),
            format!("MODIFIED Pod {warm_name}"),
        ]
    );
    // The pool replenished with a fresh Sandbox.
    let fresh = controlled_by(&sim, Resource::Sandbox, &pool_obj);
    assert_eq!(fresh.len(), 1);
    assert_ne!(common::name(&fresh[0]), warm_name);
    assert!(sim
        .get(Resource::Pod, NS, &common::name(&fresh[0]))
        .is_some());

    // Updates of a bound claim do not bind it again.
    claims
        .patch(
            "session-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}})),
        )
        .await
        .unwrap();
    let claim = sim.get(Resource::SandboxClaim, NS, "session-1").unwrap();
    assert_eq!(claim["status"]["sandbox"]["name"], warm_name.as_str());
    assert_eq!(controlled_by(&sim, Resource::Sandbox, &claim).len(), 1);

    // Empty the pool: no replicas, the replenished Sandbox deleted.
    pools
        .patch(
            "python-pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    sandboxes
        .delete(&common::name(&fresh[0]), &DeleteParams::default())
        .await
        .unwrap();
    assert!(controlled_by(&sim, Resource::Sandbox, &pool_obj).is_empty());

    // A second claim cold-creates a Sandbox named after it, from the pool's template.
    let second = post(&claims, claim_v1beta1("session-2", "python-pool", None)).await;
    let claim = to_value(&claims.get("session-2").await.unwrap());
    assert_eq!(claim["status"]["sandbox"]["name"], "session-2");
    assert_eq!(ready(&claim), ("True".into(), "SandboxReady".into()));
    let cold = to_value(&sandboxes.get("session-2").await.unwrap());
    assert_eq!(controller_uid(&cold).unwrap(), common::uid(&second));
    assert_eq!(
        cold["metadata"]["labels"][sim::controllers::CLAIM_UID_LABEL],
        common::uid(&second).as_str()
    );
    assert_eq!(
        cold["spec"]["podTemplate"]["spec"]["containers"][0]["image"], "busybox",
        "the template's pod"
    );
    let pod = sim.get(Resource::Pod, NS, "session-2").unwrap();
    assert_eq!(controller_uid(&pod).unwrap(), common::uid(&cold));
    assert!(sim
        .get(Resource::PersistentVolumeClaim, NS, "workspace-session-2")
        .is_some());
    assert!(controlled_by(&sim, Resource::Sandbox, &pool_obj).is_empty());

    // Deleting a claim is still garbage collection: its Sandbox, pod and PVC go.
    claims
        .delete("session-2", &DeleteParams::default())
        .await
        .unwrap();
    assert!(sim.get(Resource::Sandbox, NS, "session-2").is_none());
    assert!(sim.get(Resource::Pod, NS, "session-2").is_none());
    assert!(sim
        .get(Resource::PersistentVolumeClaim, NS, "workspace-session-2")
        .is_none());
}

#[tokio::test]
async fn v1alpha1_claims_pick_a_pool_by_template_or_name() {
    let running = Simulator::start_local(SimConfig {
        served: Served::V1alpha1Only,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sim = running.simulator().clone();
    let client = running.client();
    let templates = ext(&client, "v1alpha1", "SandboxTemplate", "sandboxtemplates");
    let pools = ext(&client, "v1alpha1", "SandboxWarmPool", "sandboxwarmpools");
    let claims = ext(&client, "v1alpha1", "SandboxClaim", "sandboxclaims");
    post(&templates, template("v1alpha1", "python")).await;
    post(&templates, template("v1alpha1", "rust")).await;
    let python_pool = post(&pools, pool("v1alpha1", "python-pool", 1, "python")).await;
    let rust_pool = post(&pools, pool("v1alpha1", "rust-pool", 1, "rust")).await;
    let python_warm = common::name(&controlled_by(&sim, Resource::Sandbox, &python_pool)[0]);
    let rust_warm = common::name(&controlled_by(&sim, Resource::Sandbox, &rust_pool)[0]);

    // `warmpool` unset (the default policy): any pool of the claim's template.
    let claim = post(
        &claims,
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
               "metadata": {"name": "a"}, "spec": {"sandboxTemplateRef": {"name": "rust"}}}),
    )
    .await;
    let stored = sim.get(Resource::SandboxClaim, NS, "a").unwrap();
    assert_eq!(stored["status"]["sandbox"]["name"], rust_warm.as_str());
    // v0.4.x: the adopted pod carries the claim uid too.
    let pod = sim.get(Resource::Pod, NS, &rust_warm).unwrap();
    assert_eq!(
        pod["metadata"]["labels"][sim::controllers::CLAIM_UID_LABEL],
        common::uid(&claim).as_str()
    );

    // A named pool.
    post(
        &claims,
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
               "metadata": {"name": "b"},
               "spec": {"sandboxTemplateRef": {"name": "python"}, "warmpool": "python-pool"}}),
    )
    .await;
    let stored = sim.get(Resource::SandboxClaim, NS, "b").unwrap();
    assert_eq!(stored["status"]["sandbox"]["name"], python_warm.as_str());

    // `none`: always cold, even with a warm Sandbox of the template available.
    post(
        &claims,
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
               "metadata": {"name": "c"},
               "spec": {"sandboxTemplateRef": {"name": "python"}, "warmpool": "none"}}),
    )
    .await;
    let stored = sim.get(Resource::SandboxClaim, NS, "c").unwrap();
    assert_eq!(stored["status"]["sandbox"]["name"], "c");
    let sandbox = sim.get(Resource::Sandbox, NS, "c").unwrap();
    assert_eq!(sandbox["apiVersion"], "agents.x-k8s.io/v1alpha1");
    assert_eq!(sandbox["spec"]["replicas"], 1);
    assert_eq!(
        controlled_by(&sim, Resource::Sandbox, &python_pool).len(),
        1
    );
}

#[tokio::test]
async fn with_controllers_off_claims_stay_untouched() {
    let running = Simulator::start_local(SimConfig {
        controllers: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sim = running.simulator().clone();
    let client = running.client();
    let claims = ext(&client, "v1beta1", "SandboxClaim", "sandboxclaims");
    let past = rfc3339(sim.now() - chrono::Duration::hours(1));
    post(
        &claims,
        claim_v1beta1(
            "idle",
            "none",
            Some(json!({"shutdownPolicy": "Delete", "shutdownTime": past})),
        ),
    )
    .await;
    post(&claims, claim_v1beta1("idle-2", "none", None)).await;
    sim.advance_clock(Duration::from_secs(7200));
    sim.reconcile();
    for name in ["idle", "idle-2"] {
        let claim = to_value(&claims.get(name).await.unwrap());
        assert!(
            claim.get("status").is_none() || claim["status"] == json!({}),
            "{claim}"
        );
    }
    assert!(sim.list(Resource::Sandbox, None).is_empty());
    assert!(sim.list(Resource::Pod, None).is_empty());
    assert_eq!(
        sim.claim_cold(NS, "x", None).unwrap_err(),
        sim::SimError::ControllersDisabled
    );
}

/// Event lines (`TYPE Kind name`) after `rv`, with the claim's name replaced by `CLAIM`.
fn normalized_events(sim: &Simulator, rv: u64, claim: &str) -> Vec<String> {
    events_after(sim, rv)
        .into_iter()
        .map(|e| e.replace(claim, "CLAIM"))
        .collect()
}

/// One cold claim per policy, expired twice: by the explicit call in one simulator, by its
/// `shutdownTime` passing on the clock of another. Both leave the same objects behind after
/// the same events.
#[test]
fn shutdown_time_expires_like_the_explicit_call() {
    for policy in ["Delete", "DeleteForeground", "Retain"] {
        // The explicit way.
        let explicit = Simulator::new(SimConfig::default());
        explicit.claim_cold(NS, "by-hand", None).unwrap();
        explicit
            .merge_patch(
                Resource::SandboxClaim,
                NS,
                "by-hand",
                json!({"spec": {"lifecycle": {"shutdownPolicy": policy}}}),
                false,
            )
            .unwrap();
        let rv = explicit.resource_version();
        explicit.expire_claim(NS, "by-hand").unwrap();
        let explicit_events = normalized_events(&explicit, rv, "by-hand");

        // The clock's way: a claim expiring in an hour, written like any client would.
        let timed = Simulator::new(SimConfig::default());
        let at = rfc3339(timed.now() + chrono::Duration::hours(1));
        timed
            .create(claim_v1beta1(
                "timed",
                "none",
                Some(json!({"shutdownPolicy": policy, "shutdownTime": at})),
            ))
            .unwrap();
        let bound = timed.get(Resource::SandboxClaim, NS, "timed").unwrap();
        assert_eq!(bound["status"]["sandbox"]["name"], "timed", "{policy}");
        assert!(timed.get(Resource::Pod, NS, "timed").is_some());
        // Not yet.
        let rv = timed.resource_version();
        timed.advance_clock(Duration::from_secs(1800));
        timed.reconcile();
        assert_eq!(timed.resource_version(), rv, "{policy}: nothing due yet");
        timed.advance_clock(Duration::from_secs(1800));
        let timed_events = normalized_events(&timed, rv, "timed");
        assert_eq!(timed_events, explicit_events, "{policy}");
        assert!(!timed_events.is_empty());

        for (sim, name) in [(&explicit, "by-hand"), (&timed, "timed")] {
            let claim = sim.get(Resource::SandboxClaim, NS, name);
            let pvc = sim.get(
                Resource::PersistentVolumeClaim,
                NS,
                &format!("workspace-{name}"),
            );
            assert!(sim.get(Resource::Sandbox, NS, name).is_none(), "{policy}");
            assert!(sim.get(Resource::Pod, NS, name).is_none(), "{policy}");
            if policy == "Retain" {
                let claim = claim.expect("Retain keeps the claim");
                assert_eq!(claim["status"]["sandbox"]["name"], name);
                assert_eq!(ready(&claim), ("False".into(), "SandboxExpired".into()));
                let pvc = pvc.expect("Retain keeps the PVC");
                assert!(pvc["metadata"].get("ownerReferences").is_none(), "{pvc}");
            } else {
                assert!(claim.is_none(), "{policy}");
                assert!(pvc.is_none(), "{policy}");
            }
        }
        // An expired claim stays as it is: not expired again, not bound again.
        let rv = timed.resource_version();
        timed.advance_clock(Duration::from_secs(86_400));
        timed.reconcile();
        assert_eq!(timed.resource_version(), rv, "{policy}");
    }
}

#[test]
fn a_claim_created_past_its_shutdown_time_expires_unbound() {
    let sim = Simulator::new(SimConfig::default());
    sim.create_pool(NS, "pool", 1, "tmpl", true).unwrap();
    let past = rfc3339(sim.now() - chrono::Duration::minutes(5));
    let warm_before = sim.list(Resource::Sandbox, Some(NS));

    sim.create(claim_v1beta1(
        "late-retain",
        "pool",
        Some(json!({"shutdownPolicy": "Retain", "shutdownTime": past})),
    ))
    .unwrap();
    let claim = sim.get(Resource::SandboxClaim, NS, "late-retain").unwrap();
    assert_eq!(ready(&claim), ("False".into(), "SandboxExpired".into()));
    assert!(claim["status"].get("sandbox").is_none(), "{claim}");

    sim.create(claim_v1beta1(
        "late-delete",
        "pool",
        Some(json!({"shutdownPolicy": "Delete", "shutdownTime": past})),
    ))
    .unwrap();
    assert!(sim.get(Resource::SandboxClaim, NS, "late-delete").is_none());
    // The warm Sandbox was never adopted.
    assert_eq!(sim.list(Resource::Sandbox, Some(NS)), warm_before);
}

#[test]
fn warm_claims_expire_by_the_clock_and_the_pool_keeps_its_size() {
    let sim = Simulator::new(SimConfig::default());
    let pool = sim.create_pool(NS, "pool", 2, "tmpl", true).unwrap();
    let at = rfc3339(sim.now() + chrono::Duration::minutes(10));
    sim.create(claim_v1beta1(
        "w",
        "pool",
        Some(json!({"shutdownPolicy": "Delete", "shutdownTime": at})),
    ))
    .unwrap();
    let claim = sim.get(Resource::SandboxClaim, NS, "w").unwrap();
    let sandbox = claim["status"]["sandbox"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sandbox.starts_with("pool-"), "{sandbox}");
    assert_eq!(controlled_by(&sim, Resource::Sandbox, &pool).len(), 2);
    sim.advance_clock(Duration::from_secs(600));
    assert!(sim.get(Resource::SandboxClaim, NS, "w").is_none());
    assert!(sim.get(Resource::Sandbox, NS, &sandbox).is_none());
    assert!(sim.get(Resource::Pod, NS, &sandbox).is_none());
    assert_eq!(controlled_by(&sim, Resource::Sandbox, &pool).len(), 2);
    // Timestamps follow the simulator's clock.
    sim.claim_cold(NS, "later", None).unwrap();
    let later = sim.get(Resource::SandboxClaim, NS, "later").unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(
        later["metadata"]["creationTimestamp"].as_str().unwrap(),
    )
    .unwrap();
    assert!(created.with_timezone(&chrono::Utc) >= sim.now() - chrono::Duration::seconds(5));
    assert!(
        created.with_timezone(&chrono::Utc) > chrono::Utc::now() + chrono::Duration::minutes(9)
    );
}

#[test]
fn explicit_claims_are_bound_once() {
    for served in [Served::Both, Served::V1alpha1Only] {
        let sim = Simulator::new(SimConfig {
            served,
            ..SimConfig::default()
        });
        sim.create_pool(NS, "pool", 1, "tmpl", true).unwrap();
        let warm = sim.claim_warm(NS, "w", "pool", Some("id-w")).unwrap();
        let cold = sim.claim_cold(NS, "c", Some("id-c")).unwrap();
        // The pool is empty for a moment only; a warm claim on an exhausted pool goes cold.
        for claim in [&warm, &cold] {
            let sandboxes = controlled_by(&sim, Resource::Sandbox, claim);
            assert_eq!(sandboxes.len(), 1, "{served:?}: {sandboxes:?}");
            assert_eq!(
                claim["status"]["sandbox"]["name"],
                common::name(&sandboxes[0]).as_str()
            );
        }
        assert_eq!(sim.list(Resource::Sandbox, Some(NS)).len(), 3, "{served:?}");
        let rv = sim.resource_version();
        sim.reconcile();
        assert_eq!(sim.resource_version(), rv, "{served:?}: nothing left to do");
        sim.delete_claim(NS, "w", Propagation::Background).unwrap();
        sim.delete_claim(NS, "c", Propagation::Background).unwrap();
        assert_eq!(sim.list(Resource::Sandbox, Some(NS)).len(), 1, "{served:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_time_passes_on_the_wall_clock_while_serving() {
    let running = Simulator::start_local(SimConfig::default()).await.unwrap();
    let sim = running.simulator().clone();
    let client = running.client();
    let claims = ext(&client, "v1beta1", "SandboxClaim", "sandboxclaims");
    // Far enough ahead that a loaded machine still sees the claim bound before it expires
    // (one second was not, under a parallel build).
    let at = rfc3339(sim.now() + chrono::Duration::seconds(4));
    post(
        &claims,
        claim_v1beta1(
            "soon",
            "none",
            Some(json!({"shutdownPolicy": "Retain", "shutdownTime": at})),
        ),
    )
    .await;
    assert_eq!(
        sim.get(Resource::SandboxClaim, NS, "soon").unwrap()["status"]["sandbox"]["name"],
        "soon"
    );
    // No request is made while waiting: the server's tick expires the claim.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let claim = sim.get(Resource::SandboxClaim, NS, "soon").unwrap();
        if ready(&claim).1 == "SandboxExpired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not expired: {claim}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sim.get(Resource::Sandbox, NS, "soon").is_none());
    assert!(sim
        .get(Resource::PersistentVolumeClaim, NS, "workspace-soon")
        .is_some());
}
