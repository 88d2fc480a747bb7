//! Fault injection, bookmarks, compaction, streaming lists and request recording.

use crate::common::next;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;
use sim::{Resource, SimConfig, Simulator};

fn sandboxes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("agents.x-k8s.io", "v1beta1", "Sandbox"),
        "sandboxes",
    )
}

fn config() -> SimConfig {
    SimConfig {
        controllers: false,
        ..SimConfig::default()
    }
}

fn sandbox(name: &str) -> serde_json::Value {
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "agents", "labels": {"tier": "a"}}, "spec": {}})
}

#[tokio::test]
async fn duplicate_and_stale_events() {
    let running = Simulator::start_local(config()).await.unwrap();
    let sim = running.simulator();
    sim.create(sandbox("s")).unwrap();
    let v1 = sim.get(Resource::Sandbox, "agents", "s").unwrap();
    sim.merge_patch(
        Resource::Sandbox,
        "agents",
        "s",
        json!({"metadata": {"labels": {"x": "1"}}}),
        false,
    )
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(running.client(), "agents", &sandboxes());
    let rv = sim.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    sim.deliver_stale_event(Resource::Sandbox, "agents", "s");
    match next(&mut stream).await.unwrap() {
        WatchEvent::Modified(o) => {
            assert_eq!(
                o.resource_version(),
                v1["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string)
            );
            assert!(o.labels().get("x").is_none(), "the older version");
        }
        other => panic!("expected the stale MODIFIED, got {other:?}"),
    }

    sim.duplicate_next_event();
    sim.create(sandbox("t")).unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next(&mut stream).await.unwrap() {
            WatchEvent::Added(o) => seen.push((o.name_any(), o.resource_version())),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    assert_eq!(seen[0], seen[1]);
    sim.create(sandbox("u")).unwrap();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "u"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_window_gives_410() {
    let running = Simulator::start_local(SimConfig {
        compaction_window: 5,
        ..config()
    })
    .await
    .unwrap();
    let sim = running.simulator();
    let api: Api<DynamicObject> = Api::namespaced_with(running.client(), "agents", &sandboxes());
    let old = sim.resource_version().to_string();
    for i in 0..10 {
        sim.create(sandbox(&format!("s{i}"))).unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // A recent resourceVersion is fine.
    let recent = (sim.resource_version() - 2).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &recent)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "s8"),
        other => panic!("expected s8, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_timeouts_and_streaming_lists() {
    let running = Simulator::start_local(config()).await.unwrap();
    let sim = running.simulator();
    sim.create(sandbox("a")).unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(running.client(), "agents", &sandboxes());
    let rv = sim.resource_version();
    let wp = WatchParams::default().timeout(1); // bookmarks are on by default
    let mut stream = api.watch(&wp, &rv.to_string()).await.unwrap().boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv.to_string()),
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    // the request times out and the stream ends
    while let Some(item) = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("the watch should end after timeoutSeconds")
    {
        assert!(matches!(item.unwrap(), WatchEvent::Bookmark(_)));
    }

    let mut stream = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(next(&mut stream).await.unwrap(), Event::Init));
    match next(&mut stream).await.unwrap() {
        Event::InitApply(o) => assert_eq!(o.name_any(), "a"),
        _ => panic!("expected InitApply"),
    }
    assert!(matches!(next(&mut stream).await.unwrap(), Event::InitDone));
    sim.create(sandbox("b")).unwrap();
    match next(&mut stream).await.unwrap() {
        Event::Apply(o) => assert_eq!(o.name_any(), "b"),
        _ => panic!("expected Apply"),
    }
}

#[tokio::test]
async fn recorded_requests_of_a_runtime_watcher() {
    let running = Simulator::start_local(config()).await.unwrap();
    let sim = running.simulator();
    sim.create(sandbox("a")).unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(running.client(), "agents", &sandboxes());
    let mut stream = watcher::watcher(api, watcher::Config::default().labels("tier=a")).boxed();
    while !matches!(next(&mut stream).await.unwrap(), Event::InitDone) {}
    sim.create(sandbox("b")).unwrap();
    assert!(matches!(next(&mut stream).await.unwrap(), Event::Apply(_)));

    let requests = sim.requests();
    let path = "/apis/agents.x-k8s.io/v1beta1/namespaces/agents/sandboxes";
    let list = requests
        .iter()
        .find(|r| r.path == path && r.query_param("watch").is_none())
        .expect("a LIST");
    assert_eq!(list.method, "GET");
    assert_eq!(list.query_param("labelSelector").as_deref(), Some("tier=a"));
    assert!(list.query_param("limit").is_some());
    let watch = requests
        .iter()
        .find(|r| r.path == path && r.query_param("watch").is_some())
        .expect("a WATCH");
    assert_eq!(watch.query_param("watch").as_deref(), Some("true"));
    assert_eq!(
        watch.query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        watch.query_param("labelSelector").as_deref(),
        Some("tier=a")
    );
    let rv: u64 = watch
        .query_param("resourceVersion")
        .expect("resourceVersion")
        .parse()
        .unwrap();
    assert!(rv > 0);
    assert!(watch.accept.contains("application/json") || watch.accept.is_empty());
}
