//! The live watcher end to end: the real kube client and kube-runtime watchers against the
//! project's cluster simulator over HTTP on loopback, into a real sled ledger. Lifecycles
//! driven through the simulator's agent-sandbox controller emulation must reach the
//! ledger's projection; faults (dropped watches, `410 Gone`, a restarted API server, a
//! watcher that was down during deletes) must leave watch gaps, missing-on-resync entries
//! and a chain that verifies.

use crate::support::wait::eventually_async as eventually;
use crate::support::watching::{open_shared_ledger, Watching};
use ledger::{CheckRequest, Decision, LedgerConfig, Verdict};
use schemas::{Change, ChangeKind, Reason};
use sim::{LocalSimulator, Propagation, SimConfig, Simulator};
use watcher::{Readiness, SharedLedger};

async fn cluster() -> LocalSimulator {
    Simulator::start_local(SimConfig::default()).await.unwrap()
}

fn check(ledger: &SharedLedger, readiness: &Readiness, pod: &serde_json::Value) -> Decision {
    let request = CheckRequest {
        namespace: pod["metadata"]["namespace"].as_str().unwrap().into(),
        pod_name: pod["metadata"]["name"].as_str().unwrap().into(),
        pod_uid: pod["metadata"]["uid"].as_str().unwrap().into(),
        require_claim: true,
        ..CheckRequest::default()
    };
    ledger.view().check(&request, readiness.is_ready())
}

fn changes(ledger: &SharedLedger) -> Vec<Change> {
    let ledger = ledger.view();
    let head = ledger.head().seq;
    ledger
        .entries(1, head)
        .map(|e| e.unwrap().entry.change)
        .collect()
}

fn warm_pod(cluster: &LocalSimulator, claim: &serde_json::Value) -> serde_json::Value {
    let sandbox = claim["status"]["sandbox"]["name"]
        .as_str()
        .expect("claim bound");
    cluster
        .simulator()
        .get(sim::Resource::Pod, "default", sandbox)
        .expect("the sandbox's pod")
}

/// Waits until `pod` is allowed with the gateway's `sandbox_id`. The warm path annotates
/// the pod after the claim is bound (its own watch stream): the binding may be allowed a
/// moment before it carries the sandbox id.
async fn warm_bound(
    ledger: &SharedLedger,
    readiness: &Readiness,
    pod: &serde_json::Value,
    sandbox_id: &str,
) {
    eventually("the warm bind, with the pod's sandbox id", || {
        let decision = check(ledger, readiness, pod);
        decision.decision == Verdict::Allow
            && decision
                .binding
                .is_some_and(|b| b.sandbox_id.as_deref() == Some(sandbox_id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_bind_release_and_pod_replacement_reach_the_projection() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_shared_ledger(dir.path(), LedgerConfig::default());
    let watching = Watching::start(&cluster.client(), &ledger);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;

    cluster
        .simulator()
        .create_pool("default", "pool", 2, "tmpl", true)
        .unwrap();
    let claim = cluster
        .simulator()
        .claim_warm("default", "c1", "pool", Some("sbx-1"))
        .unwrap();
    let pod = warm_pod(&cluster, &claim);
    warm_bound(&ledger, &watching.readiness, &pod, "sbx-1").await;
    let decision = check(&ledger, &watching.readiness, &pod);
    let binding = decision.binding.unwrap();
    assert_eq!(
        binding.claim.as_ref().unwrap().uid,
        claim["metadata"]["uid"].as_str().unwrap()
    );
    assert_eq!(binding.sandbox_id.as_deref(), Some("sbx-1"));

    let sandbox = claim["status"]["sandbox"]["name"].as_str().unwrap();
    let replaced = cluster.simulator().replace_pod("default", sandbox).unwrap();
    assert_ne!(replaced["metadata"]["uid"], pod["metadata"]["uid"]);
    eventually("the replaced pod's binding", || {
        check(&ledger, &watching.readiness, &replaced).decision == Verdict::Allow
    })
    .await;
    assert_eq!(
        check(&ledger, &watching.readiness, &pod).reason,
        Some(Reason::BindingReleased)
    );

    cluster
        .simulator()
        .delete_claim("default", "c1", Propagation::Background)
        .unwrap();
    eventually("the release", || {
        check(&ledger, &watching.readiness, &replaced).reason == Some(Reason::BindingReleased)
    })
    .await;

    watching.stop().await;
    let report = ledger.view().verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_leave_watch_gaps_and_deletes_missed_while_down_are_recorded() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_shared_ledger(dir.path(), LedgerConfig::default());
    let watching = Watching::start(&cluster.client(), &ledger);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;
    cluster
        .simulator()
        .create_pool("default", "pool", 1, "tmpl", true)
        .unwrap();
    let claim = cluster
        .simulator()
        .claim_warm("default", "c1", "pool", Some("sbx-1"))
        .unwrap();
    let pod = warm_pod(&cluster, &claim);
    warm_bound(&ledger, &watching.readiness, &pod, "sbx-1").await;

    // The API server forgets its watch history: every resume gets 410 and relists.
    cluster.simulator().restart();
    cluster.simulator().drop_watches();
    eventually("watch gaps after the relist", || {
        changes(&ledger)
            .iter()
            .filter(|c| matches!(c, Change::WatchGap(g) if g.reason == "relist"))
            .count()
            >= 4
    })
    .await;
    eventually("a relist to be counted", || {
        watching.readiness.counters().relists >= 4
    })
    .await;
    // Streams are named `plural.group/version`, core ones `plural/version`.
    let mut gap_streams: Vec<String> = changes(&ledger)
        .iter()
        .filter_map(|c| match c {
            Change::WatchGap(g) if g.reason == "relist" => Some(g.resource.clone()),
            _ => None,
        })
        .collect();
    gap_streams.sort();
    gap_streams.dedup();
    for stream in &gap_streams {
        assert!(
            stream == "pods/v1"
                || stream == "persistentvolumeclaims/v1"
                || stream.starts_with("sandboxes.agents.x-k8s.io/")
                || stream.starts_with("sandboxclaims.extensions.agents.x-k8s.io/"),
            "{stream}"
        );
    }
    assert!(
        gap_streams.iter().any(|s| s == "persistentvolumeclaims/v1"),
        "{gap_streams:?}"
    );
    eventually("readiness after the relist", || {
        watching.readiness.is_ready()
    })
    .await;

    // The watcher is down while the claim is deleted (everything it owned goes too).
    watching.stop().await;
    cluster
        .simulator()
        .delete_claim("default", "c1", Propagation::Background)
        .unwrap();
    let seq_before = ledger.view().head().seq;

    let watching = Watching::start(&cluster.client(), &ledger);
    eventually("the restarted watchers to sync", || {
        watching.readiness.is_ready()
    })
    .await;
    assert_eq!(
        check(&ledger, &watching.readiness, &pod).reason,
        Some(Reason::BindingReleased)
    );
    let after: Vec<Change> = changes(&ledger)
        .into_iter()
        .skip(seq_before as usize)
        .collect();
    let missing: Vec<&str> = after
        .iter()
        .filter_map(|c| match c {
            Change::Object(o) if o.change == ChangeKind::MissingOnResync => Some(o.kind.as_str()),
            _ => None,
        })
        .collect();
    for kind in ["SandboxClaim", "Sandbox", "Pod", "PersistentVolumeClaim"] {
        assert!(
            missing.contains(&kind),
            "no missing_on_resync for {kind}: {missing:?}"
        );
    }
    assert!(after
        .iter()
        .any(|c| matches!(c, Change::WatchGap(g) if g.reason == "restart")));

    // Nothing the simulator says is alive is missing from the ledger, and vice versa.
    eventually("the projection to equal the simulator's truth", || {
        let sim = cluster.simulator();
        {
            let ledger = ledger.view();
            let mut live: Vec<String> = ledger
                .projection()
                .live_objects()
                .iter()
                .map(|r| r.current.uid.to_string())
                .collect();
            live.sort();
            let mut truth: Vec<String> = [
                sim::Resource::Sandbox,
                sim::Resource::SandboxClaim,
                sim::Resource::Pod,
                sim::Resource::PersistentVolumeClaim,
            ]
            .into_iter()
            .flat_map(|r| sim.list(r, None))
            .filter(|o| {
                let kind = o["kind"].as_str().unwrap_or_default();
                matches!(kind, "Sandbox" | "SandboxClaim")
                    || o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r["kind"] == "Sandbox" && r["controller"] == true)
                        })
            })
            .map(|o| o["metadata"]["uid"].as_str().unwrap().to_string())
            .collect();
            truth.sort();
            live == truth
        }
    })
    .await;

    watching.stop().await;
    let report = ledger.view().verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchers_requests_are_those_a_real_api_server_accepts() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_shared_ledger(dir.path(), LedgerConfig::default());
    let watching = Watching::start(&cluster.client(), &ledger);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;
    cluster
        .simulator()
        .create_pool("default", "pool", 1, "tmpl", true)
        .unwrap();
    eventually("the pool's pod in the ledger", || {
        ledger.view().head().seq >= 3
    })
    .await;
    watching.stop().await;

    let requests = cluster.simulator().requests();
    for path in [
        "/apis/agents.x-k8s.io/v1beta1/sandboxes",
        "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims",
        "/api/v1/pods",
        "/api/v1/persistentvolumeclaims",
    ] {
        let of_path: Vec<_> = requests.iter().filter(|r| r.path == path).collect();
        let list = of_path
            .iter()
            .find(|r| r.query_param("watch").is_none())
            .unwrap_or_else(|| panic!("no LIST of {path}: {requests:?}"));
        assert_eq!(list.method, "GET");
        assert!(list.query_param("limit").is_some(), "{list:?}");
        let watch = of_path
            .iter()
            .find(|r| matches!(r.query_param("watch").as_deref(), Some("true" | "1")))
            .unwrap_or_else(|| panic!("no WATCH of {path}: {requests:?}"));
        assert!(watch.query_param("resourceVersion").is_some(), "{watch:?}");
        assert_eq!(
            watch.query_param("allowWatchBookmarks").as_deref(),
            Some("true"),
            "{watch:?}"
        );
        assert!(watch.query_param("timeoutSeconds").is_some(), "{watch:?}");
        if path == "/api/v1/pods" {
            // Pods are watched as metadata only.
            assert!(
                list.accept.contains("as=PartialObjectMetadataList"),
                "{list:?}"
            );
            assert!(
                watch.accept.contains("as=PartialObjectMetadata"),
                "{watch:?}"
            );
        }
    }
    // Discovery asked for the agent-sandbox groups before anything was watched.
    assert!(requests
        .iter()
        .any(|r| r.path == "/apis" || r.path.starts_with("/apis/agents.x-k8s.io")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_restrict_what_is_watched_and_recorded() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_shared_ledger(dir.path(), LedgerConfig::default());
    let options = watcher::WatchOptions {
        namespaces: vec!["alpha".into()],
        ..watcher::WatchOptions::default()
    };
    let watching = Watching::start_with(&cluster.client(), &ledger, options);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;
    for ns in ["alpha", "beta"] {
        cluster
            .simulator()
            .create_pool(ns, "pool", 1, "tmpl", true)
            .unwrap();
        cluster
            .simulator()
            .claim_warm(ns, "c", "pool", Some("sbx"))
            .unwrap();
    }
    eventually("alpha's objects in the ledger", || {
        let ledger = ledger.view();
        ledger
            .projection()
            .live_objects()
            .iter()
            .filter(|r| r.current.namespace == "alpha")
            .count()
            >= 4
    })
    .await;
    watching.stop().await;
    let ledger = ledger.view();
    assert!(ledger
        .projection()
        .live_objects()
        .iter()
        .all(|r| r.current.namespace == "alpha"));
    assert!(cluster
        .simulator()
        .requests()
        .iter()
        .filter(|r| r.query_param("watch").is_some())
        .all(|r| r.path.contains("/namespaces/alpha/")));
}
