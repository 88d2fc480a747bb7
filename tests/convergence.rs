//! Convergence under faults: random sequences of agent-sandbox operations against the
//! cluster simulator, interleaved with random faults (dropped watches, `410 Gone`, API
//! server restarts, duplicated and stale events, and the watcher stopped during deletes
//! and restarted), watched by the real watcher into a real ledger. After each sequence the
//! ledger's projection must equal the simulator's truth, the chain must verify, no
//! (uid, resourceVersion) may be recorded twice, and every delete of an object the ledger
//! knew — including deletes made while the watcher was down — must be in the log.
//!
//! Seeds are fixed so a failure replays; `CLAIM_LEDGER_CONVERGENCE_SEEDS=N` runs more.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ledger::LedgerConfig;
use schemas::Change;
use sim::{Propagation, Resource, SimConfig, Simulator};
use support::cluster::{open_ledger, Cluster, Watching};
use support::Rng;
use watcher::{Readiness, SharedLedger};

/// The uids of the objects the ledger must hold alive: Sandboxes, claims, and pods and
/// PVCs controlled by a Sandbox or already tracked (a retained PVC loses its owner).
fn truth(sim: &Simulator, ledger: &SharedLedger) -> BTreeSet<String> {
    let ledger = ledger.read().unwrap();
    [
        Resource::Sandbox,
        Resource::SandboxClaim,
        Resource::Pod,
        Resource::PersistentVolumeClaim,
    ]
    .into_iter()
    .flat_map(|r| sim.list(r, None))
    .filter(|o| {
        matches!(o["kind"].as_str(), Some("Sandbox" | "SandboxClaim"))
            || o["metadata"]["uid"]
                .as_str()
                .is_some_and(|uid| ledger.projection().object(uid).is_some())
            || o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["kind"] == "Sandbox" && r["controller"] == true)
                })
    })
    .map(|o| o["metadata"]["uid"].as_str().unwrap().to_string())
    .collect()
}

fn live(ledger: &SharedLedger) -> BTreeSet<String> {
    let ledger = ledger.read().unwrap();
    ledger
        .projection()
        .live_objects()
        .iter()
        .map(|r| r.current.uid.clone())
        .collect()
}

fn explain(sim: &Simulator, ledger: &SharedLedger, uid: &str) -> String {
    let ledger = ledger.read().unwrap();
    let recorded: Vec<String> = ledger
        .history_of_uid(uid)
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.entry
                .object_change()
                .map(|c| format!("{}:{:?}@{}", e.entry.seq, c.change, c.resource_version))
        })
        .collect();
    let events: Vec<String> = sim
        .events()
        .iter()
        .filter(|e| e.object["metadata"]["uid"] == uid)
        .map(|e| format!("{}@{}", e.event_type, e.resource_version))
        .collect();
    let listed: Vec<String> = sim
        .list(Resource::PersistentVolumeClaim, None)
        .iter()
        .filter(|o| o["metadata"]["uid"] == uid)
        .map(|o| o.to_string())
        .collect();
    format!("ledger {recorded:?} simulator {events:?} listed {listed:?}")
}

fn http_list(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

async fn converge(sim: &Simulator, ledger: &SharedLedger, readiness: &Readiness, url: &str) {
    for _ in 0..800 {
        if readiness.is_ready() && live(ledger) == truth(sim, ledger) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (live, truth) = (live(ledger), truth(sim, ledger));
    let describe = |uid: &String| {
        let what = {
            let ledger = ledger.read().unwrap();
            ledger.projection().object(uid).map(|r| {
                format!(
                    "{} {}/{}",
                    r.current.kind, r.current.namespace, r.current.name
                )
            })
        };
        format!(
            "{} {uid}: {}",
            what.unwrap_or_default(),
            explain(sim, ledger, uid)
        )
    };
    let listed = http_list(url, "/api/v1/persistentvolumeclaims");
    panic!(
        "no convergence ({listed}): ledger-only {:?}, simulator-only {:?}",
        live.difference(&truth).map(describe).collect::<Vec<_>>(),
        truth.difference(&live).map(describe).collect::<Vec<_>>()
    );
}

async fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let cluster = Cluster::start(SimConfig {
        compaction_window: 40,
        ..SimConfig::default()
    })
    .await;
    let (sim, client, url) = (
        cluster.sim.clone(),
        cluster.client.clone(),
        cluster.url.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(
        dir.path(),
        LedgerConfig {
            snapshot_every: 25,
            allow_corrupt: false,
        },
    );

    let namespaces = ["alpha", "beta"];
    for ns in namespaces {
        sim.create_pool(ns, "pool", 2, "tmpl", true).unwrap();
    }
    let mut watching = Some(Watching::start(&client, &ledger));
    let mut claims: Vec<(String, String)> = Vec::new();
    let mut next_claim = 0u32;
    let mut log = Vec::new();
    for _ in 0..40 {
        let ns = namespaces[rng.below(2) as usize].to_string();
        let op = rng.below(14);
        log.push(op);
        match op {
            0..=2 => {
                let name = format!("c{next_claim}");
                next_claim += 1;
                let id = format!("sbx-{next_claim}");
                let result = if op == 2 {
                    sim.claim_cold(&ns, &name, Some(&id))
                } else {
                    sim.claim_warm(&ns, &name, "pool", Some(&id))
                };
                result.unwrap();
                claims.push((ns, name));
            }
            3 | 4 if !claims.is_empty() => {
                let (ns, name) = claims.remove(rng.below(claims.len() as u64) as usize);
                let policy = [
                    Propagation::Background,
                    Propagation::Foreground,
                    Propagation::Orphan,
                ][rng.below(3) as usize];
                sim.delete_claim(&ns, &name, policy).unwrap();
            }
            5 if !claims.is_empty() => {
                let (ns, name) = claims[rng.below(claims.len() as u64) as usize].clone();
                let _ = sim.expire_claim(&ns, &name);
            }
            6 if !claims.is_empty() => {
                let (ns, name) = claims[rng.below(claims.len() as u64) as usize].clone();
                if let Some(claim) = sim.get(Resource::SandboxClaim, &ns, &name) {
                    if let Some(sandbox) = claim["status"]["sandbox"]["name"].as_str() {
                        let _ = sim.replace_pod(&ns, sandbox);
                    }
                }
            }
            7 => sim.drop_watches(),
            8 => sim.expire_next_watch(),
            9 => sim.restart(),
            10 => sim.duplicate_next_event(),
            11 if !claims.is_empty() => {
                let (ns, name) = claims[rng.below(claims.len() as u64) as usize].clone();
                sim.deliver_stale_event(Resource::SandboxClaim, &ns, &name);
            }
            12 => {
                // The watcher goes down; what happens meanwhile is only seen at the relist.
                if let Some(w) = watching.take() {
                    w.stop().await;
                } else {
                    watching = Some(Watching::start(&client, &ledger));
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
    let watching = match watching {
        Some(w) => w,
        None => Watching::start(&client, &ledger),
    };
    converge(&sim, &ledger, &watching.readiness, &url).await;
    watching.stop().await;

    let ledger = ledger.read().unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.ok(), "seed {seed} ops {log:?}: {:?}", report.failure);
    let mut recorded = HashSet::new();
    let mut removed = HashSet::new();
    let mut known = HashSet::new();
    for stored in ledger.entries(1, ledger.head().seq) {
        let stored = stored.unwrap();
        if let Change::Object(change) = &stored.entry.change {
            let key = (
                change.uid.clone(),
                change.resource_version.clone(),
                change.change.is_removal(),
            );
            assert!(
                recorded.insert(key.clone()),
                "seed {seed}: {key:?} recorded twice"
            );
            known.insert(change.uid.clone());
            if change.change.is_removal() {
                removed.insert(change.uid.clone());
            }
        }
    }
    let mut deleted_in_sim: HashMap<String, &'static str> = HashMap::new();
    for event in sim.events() {
        if event.event_type == "DELETED" {
            if let Some(uid) = event.object["metadata"]["uid"].as_str() {
                deleted_in_sim.insert(uid.to_string(), event.resource.kind());
            }
        }
    }
    for (uid, kind) in deleted_in_sim {
        if known.contains(&uid) {
            assert!(
                removed.contains(&uid),
                "seed {seed} ops {log:?}: the delete of {kind} {uid} is not in the log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_converges_to_the_cluster_under_random_faults() {
    let seeds: u64 = std::env::var("CLAIM_LEDGER_CONVERGENCE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 1..=seeds {
        run_seed(seed).await;
    }
}
