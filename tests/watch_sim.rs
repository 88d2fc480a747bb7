//! The live watcher end to end: the real kube client and kube-runtime watchers against the
//! project's cluster simulator over HTTP on loopback, into a real sled ledger. Lifecycles
//! driven through the simulator's agent-sandbox controller emulation must reach the
//! ledger's projection; faults (dropped watches, `410 Gone`, a restarted API server, a
//! watcher that was down during deletes) must leave watch gaps, missing-on-resync entries
//! and a chain that verifies.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ledger::{CheckRequest, Decision, Ledger, LedgerConfig, Verdict};
use schemas::{Change, ChangeKind, Reason};
use sim::{Propagation, SimConfig, Simulator};
use tokio::sync::oneshot;
use watcher::{Readiness, SharedLedger, WatchOptions};

struct Cluster {
    sim: Simulator,
    client: kube::Client,
    _stop: oneshot::Sender<()>,
}

async fn cluster() -> Cluster {
    let sim = Simulator::new(SimConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = sim.clone();
    tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(&url)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    Cluster {
        sim,
        client,
        _stop: stop,
    }
}

struct Watching {
    readiness: Readiness,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
}

fn start_watcher(cluster: &Cluster, ledger: &SharedLedger) -> Watching {
    let readiness = Readiness::new(Duration::from_secs(30));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watcher::run(
        cluster.client.clone(),
        ledger.clone(),
        readiness.clone(),
        WatchOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Watching {
        readiness,
        stop,
        task,
    }
}

async fn stop_watcher(watching: Watching) {
    let _ = watching.stop.send(());
    watching.task.await.unwrap().unwrap();
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn eventually_async<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    for _ in 0..400 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn check(ledger: &SharedLedger, readiness: &Readiness, pod: &serde_json::Value) -> Decision {
    let request = CheckRequest {
        namespace: pod["metadata"]["namespace"].as_str().unwrap().into(),
        pod_name: pod["metadata"]["name"].as_str().unwrap().into(),
        pod_uid: pod["metadata"]["uid"].as_str().unwrap().into(),
        require_claim: true,
        ..CheckRequest::default()
    };
    ledger.read().unwrap().check(&request, readiness.is_ready())
}

fn open_ledger(dir: &std::path::Path) -> SharedLedger {
    Arc::new(RwLock::new(
        Ledger::open(dir, LedgerConfig::default()).unwrap(),
    ))
}

fn changes(ledger: &SharedLedger) -> Vec<Change> {
    let ledger = ledger.read().unwrap();
    let head = ledger.head().seq;
    ledger
        .entries(1, head)
        .map(|e| e.unwrap().entry.change)
        .collect()
}

fn warm_pod(cluster: &Cluster, claim: &serde_json::Value) -> serde_json::Value {
    let sandbox = claim["status"]["sandbox"]["name"]
        .as_str()
        .expect("claim bound");
    cluster
        .sim
        .get(sim::Resource::Pod, "default", sandbox)
        .expect("the sandbox's pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_bind_release_and_pod_replacement_reach_the_projection() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(dir.path());
    let watching = start_watcher(&cluster, &ledger);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;

    cluster
        .sim
        .create_pool("default", "pool", 2, "tmpl", true)
        .unwrap();
    let claim = cluster
        .sim
        .claim_warm("default", "c1", "pool", Some("sbx-1"))
        .unwrap();
    let pod = warm_pod(&cluster, &claim);
    eventually("the warm bind", || {
        check(&ledger, &watching.readiness, &pod).decision == Verdict::Allow
    })
    .await;
    let decision = check(&ledger, &watching.readiness, &pod);
    let binding = decision.binding.unwrap();
    assert_eq!(
        binding.claim.as_ref().unwrap().uid,
        claim["metadata"]["uid"].as_str().unwrap()
    );
    assert_eq!(binding.sandbox_id.as_deref(), Some("sbx-1"));

    let sandbox = claim["status"]["sandbox"]["name"].as_str().unwrap();
    let replaced = cluster.sim.replace_pod("default", sandbox).unwrap();
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
        .sim
        .delete_claim("default", "c1", Propagation::Background)
        .unwrap();
    eventually("the release", || {
        check(&ledger, &watching.readiness, &replaced).reason == Some(Reason::BindingReleased)
    })
    .await;

    stop_watcher(watching).await;
    let report = ledger.read().unwrap().verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_leave_watch_gaps_and_deletes_missed_while_down_are_recorded() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(dir.path());
    let watching = start_watcher(&cluster, &ledger);
    eventually("the watchers to sync", || watching.readiness.is_ready()).await;
    cluster
        .sim
        .create_pool("default", "pool", 1, "tmpl", true)
        .unwrap();
    let claim = cluster
        .sim
        .claim_warm("default", "c1", "pool", Some("sbx-1"))
        .unwrap();
    let pod = warm_pod(&cluster, &claim);
    eventually("the warm bind", || {
        check(&ledger, &watching.readiness, &pod).decision == Verdict::Allow
    })
    .await;

    // The API server forgets its watch history: every resume gets 410 and relists.
    cluster.sim.restart();
    cluster.sim.drop_watches();
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
    eventually("readiness after the relist", || {
        watching.readiness.is_ready()
    })
    .await;

    // The watcher is down while the claim is deleted (everything it owned goes too).
    stop_watcher(watching).await;
    cluster
        .sim
        .delete_claim("default", "c1", Propagation::Background)
        .unwrap();
    let seq_before = ledger.read().unwrap().head().seq;

    let watching = start_watcher(&cluster, &ledger);
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
    eventually_async("the projection to equal the simulator's truth", || {
        let ledger = ledger.clone();
        let sim = cluster.sim.clone();
        async move {
            let ledger = ledger.read().unwrap();
            let mut live: Vec<String> = ledger
                .projection()
                .live_objects()
                .iter()
                .map(|r| r.current.uid.clone())
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

    stop_watcher(watching).await;
    let report = ledger.read().unwrap().verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}
