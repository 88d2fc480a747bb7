//! The real kube client against the simulator: CRUD on Pods and agent-sandbox objects,
//! kube-runtime watchers (full objects and metadata only), faults, discovery.

use crate::common::next;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;
use sim::{Resource, SimConfig, Simulator};

fn sandbox_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("agents.x-k8s.io", version, "Sandbox"),
        "sandboxes",
    )
}

fn claim_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("extensions.agents.x-k8s.io", version, "SandboxClaim"),
        "sandboxclaims",
    )
}

fn no_controllers() -> SimConfig {
    SimConfig {
        controllers: false,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn pods_crud_with_k8s_openapi_types() {
    let running = Simulator::start_local(no_controllers()).await.unwrap();
    let client = running.client();
    let pods: Api<Pod> = Api::namespaced(client, "default");

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.name_any(), "p1");
    let uid = created.uid().unwrap();
    assert_eq!(uid.len(), 36);
    assert!(created.resource_version().is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    // AlreadyExists
    let err = pods.create(&PostParams::default(), &pod).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "AlreadyExists");
        }
        other => panic!("unexpected {other:?}"),
    }

    let got = pods.get("p1").await.unwrap();
    assert_eq!(got.uid().unwrap(), uid);

    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let none = pods
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert!(none.items.is_empty());

    let patched = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"openshell.io/sandbox-id": "sbx-1"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched
            .annotations()
            .get("openshell.io/sandbox-id")
            .map(String::as_str),
        Some("sbx-1")
    );
    assert_ne!(patched.resource_version(), got.resource_version());

    // status subresource
    let status = pods
        .patch_status(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.status.unwrap().phase.as_deref(), Some("Running"));

    // stale replace is a Conflict
    let mut stale = got.clone();
    stale.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let err = pods
        .replace("p1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"));

    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    let err = pods.get("p1").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));
}

#[tokio::test]
async fn pagination_and_field_selectors() {
    let running = Simulator::start_local(no_controllers()).await.unwrap();
    let client = running.client();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for i in 0..5 {
        running
            .simulator()
            .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")}, "spec": {}}))
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = pods.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|p| p.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    let fields = pods
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(fields.items.len(), 1);
}

#[tokio::test]
async fn sandboxes_and_claims_as_dynamic_objects() {
    let running = Simulator::start_local(no_controllers()).await.unwrap();
    let client = running.client();
    for version in ["v1beta1", "v1alpha1"] {
        let ar = sandbox_resource(version);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "agents", &ar);
        let name = format!("sb-{version}");
        let mut obj = DynamicObject::new(&name, &ar);
        obj.data = json!({"spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let created = api.create(&PostParams::default(), &obj).await.unwrap();
        assert_eq!(
            created.types.as_ref().unwrap().api_version,
            format!("agents.x-k8s.io/{version}")
        );
        assert_eq!(created.metadata.generation, Some(1));
        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"shutdownPolicy": "Delete"}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.metadata.generation, Some(2));
        // status changes through the main resource are ignored; through /status they stick
        let ignored = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": 1}})),
            )
            .await
            .unwrap();
        assert!(ignored.data.get("status").is_none());
        let with_status = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": 1}})),
            )
            .await
            .unwrap();
        assert_eq!(with_status.data["status"]["replicas"], 1);
        assert_eq!(with_status.metadata.generation, Some(2));
    }
    // Objects are stored once and served in both versions.
    let alpha: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "agents", &sandbox_resource("v1alpha1"));
    let items = alpha.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|o| o.types.as_ref().unwrap().api_version == "agents.x-k8s.io/v1alpha1"));

    running
        .simulator()
        .create(
            json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": "elsewhere", "namespace": "other"}, "spec": {}}),
        )
        .unwrap();
    let everywhere: Api<DynamicObject> =
        Api::all_with(client.clone(), &sandbox_resource("v1beta1"));
    let all: Vec<(String, String)> = everywhere
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], ("other".to_string(), "elsewhere".to_string()));

    let claims: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "agents", &claim_resource("v1beta1"));
    let mut claim = DynamicObject::new("c1", &claim_resource("v1beta1"));
    claim.data = json!({"spec": {"warmPoolRef": {"name": "pool"}}});
    claims.create(&PostParams::default(), &claim).await.unwrap();
    let got = claims.get("c1").await.unwrap();
    assert_eq!(got.data["spec"]["warmPoolRef"]["name"], "pool");
    claims.delete("c1", &DeleteParams::default()).await.unwrap();
    assert!(claims.get_opt("c1").await.unwrap().is_none());
    assert!(running
        .simulator()
        .get(Resource::SandboxClaim, "agents", "c1")
        .is_none());
}

/// Drains `Init`, `InitApply`*, `InitDone` and returns the names seen.
async fn expect_init<K: kube::Resource, S>(stream: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    match next(stream).await.unwrap() {
        Event::Init => {}
        other => panic!("expected Init, got {:?}", kind_of(&other)),
    }
    loop {
        match next(stream).await.unwrap() {
            Event::InitApply(o) => names.push(o.meta().name.clone().unwrap_or_default()),
            Event::InitDone => return names,
            other => panic!("expected InitApply/InitDone, got {:?}", kind_of(&other)),
        }
    }
}

fn kind_of<K>(e: &Event<K>) -> &'static str {
    match e {
        Event::Apply(_) => "Apply",
        Event::Delete(_) => "Delete",
        Event::Init => "Init",
        Event::InitApply(_) => "InitApply",
        Event::InitDone => "InitDone",
    }
}

/// The next non-error event (watch errors such as 410 are surfaced by the watcher and then
/// recovered from).
async fn next_ok<K, S>(stream: &mut S) -> Event<K>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    loop {
        if let Ok(e) = next(stream).await {
            return e;
        }
    }
}

fn sandbox_json(name: &str) -> serde_json::Value {
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "agents", "labels": {"tier": "a"}},
        "spec": {"podTemplate": {"spec": {"containers": []}}}})
}

#[tokio::test]
async fn runtime_watcher_sees_changes_resumes_and_relists() {
    let running = Simulator::start_local(no_controllers()).await.unwrap();
    let sim = running.simulator();
    sim.create(sandbox_json("s0")).unwrap();
    let client = running.client();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, "agents", &sandbox_resource("v1beta1"));
    let mut stream = watcher::watcher(api, watcher::Config::default().labels("tier=a")).boxed();

    assert_eq!(expect_init(&mut stream).await, ["s0"]);

    sim.create(sandbox_json("s1")).unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(o) => assert_eq!(o.name_any(), "s1"),
        other => panic!("expected Apply, got {}", kind_of(&other)),
    }
    // An object created without the label is not seen.
    let mut unlabelled = sandbox_json("other");
    unlabelled["metadata"]["labels"] = json!({"tier": "b"});
    sim.create(unlabelled).unwrap();
    sim.delete(
        Resource::Sandbox,
        "agents",
        "s0",
        sim::Propagation::Background,
    )
    .unwrap();
    match next_ok(&mut stream).await {
        Event::Delete(o) => assert_eq!(o.name_any(), "s0"),
        other => panic!("expected Delete, got {}", kind_of(&other)),
    }

    // Dropped watches resume from the last resourceVersion: no relist.
    sim.drop_watches();
    sim.create(sandbox_json("s2")).unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(o) => assert_eq!(o.name_any(), "s2"),
        other => panic!("expected Apply after resume, got {}", kind_of(&other)),
    }

    // After a restart every resume gets 410: the watcher relists.
    sim.restart();
    assert_eq!(expect_init_after_errors(&mut stream).await, ["s1", "s2"]);
    sim.create(sandbox_json("s3")).unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(o) => assert_eq!(o.name_any(), "s3"),
        other => panic!("expected Apply after relist, got {}", kind_of(&other)),
    }

    // expire_next_watch: the next watch request (the resume after a drop) gets 410.
    sim.expire_next_watch();
    sim.drop_watches();
    assert_eq!(
        expect_init_after_errors(&mut stream).await,
        ["s1", "s2", "s3"]
    );
}

/// Skips watch errors (the 410), then expects a full relist.
async fn expect_init_after_errors<K: kube::Resource, S>(stream: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut saw_error = false;
    let mut names = Vec::new();
    loop {
        match next(stream).await {
            Err(_) => saw_error = true,
            Ok(Event::Init) => break,
            Ok(other) => panic!("expected a 410 then Init, got {}", kind_of(&other)),
        }
    }
    assert!(saw_error, "the watcher should have surfaced the 410");
    loop {
        match next(stream).await.unwrap() {
            Event::InitApply(o) => names.push(o.meta().name.clone().unwrap_or_default()),
            Event::InitDone => return names,
            other => panic!("expected InitApply/InitDone, got {}", kind_of(&other)),
        }
    }
}

#[tokio::test]
async fn metadata_watcher_over_pods() {
    let running = Simulator::start_local(no_controllers()).await.unwrap();
    let sim = running.simulator();
    sim.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "agents"}, "spec": {}}))
        .unwrap();
    let client = running.client();
    let api: Api<PartialObjectMeta<Pod>> = Api::namespaced(client, "agents");
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    let names = expect_init::<PartialObjectMeta<Pod>, _>(&mut stream).await;
    assert_eq!(names, ["a"]);
    sim.merge_patch(
        Resource::Pod,
        "agents",
        "a",
        json!({"metadata": {"annotations": {"k": "v"}}}),
        false,
    )
    .unwrap();
    match next_ok(&mut stream).await {
        Event::Apply(o) => {
            assert_eq!(o.annotations().get("k").map(String::as_str), Some("v"));
        }
        other => panic!("expected Apply, got {}", kind_of(&other)),
    }
    sim.delete(Resource::Pod, "agents", "a", sim::Propagation::Background)
        .unwrap();
    match next_ok(&mut stream).await {
        Event::Delete(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected Delete, got {}", kind_of(&other)),
    }
    let accepts: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/namespaces/agents/pods")
        .map(|r| r.accept)
        .collect();
    assert!(accepts
        .iter()
        .any(|a| a.contains("as=PartialObjectMetadataList")));
    assert!(accepts
        .iter()
        .any(|a| a.contains("as=PartialObjectMetadata;")));
}

#[tokio::test]
async fn discovery_finds_both_groups_and_preferred_versions() {
    for (served, preferred) in [
        (sim::Served::Both, "v1beta1"),
        (sim::Served::V1alpha1Only, "v1alpha1"),
    ] {
        let running = Simulator::start_local(SimConfig {
            served,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let client = running.client();
        for discovery in [
            kube::Discovery::new(client.clone()).run().await.unwrap(),
            kube::Discovery::new(client.clone())
                .run_aggregated()
                .await
                .unwrap(),
        ] {
            for group in ["agents.x-k8s.io", "extensions.agents.x-k8s.io"] {
                let g = discovery.get(group).expect(group);
                assert_eq!(g.preferred_version_or_latest(), preferred);
            }
            let (ar, caps) = discovery
                .get("extensions.agents.x-k8s.io")
                .unwrap()
                .recommended_kind("SandboxClaim")
                .unwrap();
            assert_eq!(ar.plural, "sandboxclaims");
            assert_eq!(ar.version, preferred);
            assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
            assert!(discovery.get("").unwrap().recommended_kind("Pod").is_some());
        }
        let info = client.apiserver_version().await.unwrap();
        assert_eq!(info.major, "1");
    }
}
