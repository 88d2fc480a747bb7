//! Convergence under faults: random sequences of agent-sandbox operations against the
//! cluster simulator, interleaved with random faults (dropped watches, `410 Gone`, API
//! server restarts, duplicated and stale events, and the watcher stopped during deletes
//! and restarted), watched by the real watcher into a real ledger. After each sequence:
//!
//! * state: every object the simulator holds (Sandboxes, claims, and pods and PVCs
//!   controlled by a Sandbox or already recorded) is live in the projection with the same
//!   identity-relevant fields (`ObjectChange::same_state_as`) as the normalizer reads from
//!   the simulator's object as the watcher sees it (preferred served version, pods as
//!   metadata only), and a resourceVersion no newer than the simulator's (status churn
//!   appends nothing, so older is fine); every live object of the projection
//!   exists in the simulator's store (no ghost). The oracle is the simulator's own store;
//!   the ledger's knowledge only decides whether an unowned pod/PVC must be tracked;
//! * bindings: the projection's active bindings equal those of a fresh ledger fed the
//!   simulator's final objects (the DOMAIN.md §4 rule applied to the cluster's truth);
//! * the chain verifies and no (uid, resourceVersion) is recorded twice;
//! * every delete of an object the ledger knew is in the log, counting every uid the
//!   simulator ever held between operations (not only the events still in its compacted
//!   history), and in particular every object the ledger held live when the watcher
//!   stopped and that was deleted before it restarted has a removal entry after the stop.
//!   Each seed deletes at least one such object (a seed whose random operations did not
//!   ends with a forced stop / delete / restart episode), so that property is never vacuous.
//!
//! Seeds are fixed so a failure replays; `CLAIM_LEDGER_CONVERGENCE_SEEDS=N` runs more.

use crate::support;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::support::seeded_rng;
use crate::support::watching::{open_shared_ledger, Watching};
use ledger::LedgerConfig;
use proptest::prelude::RngExt;
use schemas::{Change, ChangeKind, ObjectChange, ObjectKind, WatchEventType};
use serde_json::json;
use sim::{Propagation, Resource, SimConfig, Simulator};
use watcher::{Readiness, SharedLedger};

const RECORDED: [Resource; 4] = [
    Resource::SandboxClaim,
    Resource::Sandbox,
    Resource::PersistentVolumeClaim,
    Resource::Pod,
];

/// Every object of a recorded kind the simulator holds now, by uid, read from its store
/// (not from its event history, nor from what the ledger knows), normalized as the
/// watcher would record it: in the preferred served version, pods as metadata only (the
/// watcher watches `PartialObjectMeta<Pod>`, so a pod's phase is never observed).
fn cluster_state(sim: &Simulator) -> BTreeMap<String, ObjectChange> {
    let served = sim.config().served;
    RECORDED
        .into_iter()
        .flat_map(|r| sim.list(r, None).into_iter().map(move |o| (r, o)))
        .map(|(r, stored)| {
            let mut object = if r == Resource::Pod {
                json!({"kind": stored["kind"], "metadata": stored["metadata"]})
            } else {
                stored.clone()
            };
            object["apiVersion"] = json!(r.preferred_api_version(served));
            let observed = schemas::normalize(WatchEventType::Added, &object)
                .unwrap_or_else(|e| panic!("the simulator's object normalizes: {e}: {stored}"))
                .expect("a recorded kind");
            (observed.uid.to_string(), observed)
        })
        .collect()
}

/// The uids (and kinds) the simulator holds now.
fn cluster_uids(sim: &Simulator) -> HashMap<String, &'static str> {
    RECORDED
        .into_iter()
        .flat_map(|r| {
            sim.list(r, None)
                .into_iter()
                .map(move |o| (o["metadata"]["uid"].as_str().unwrap().to_string(), r.kind()))
        })
        .collect()
}

fn sandbox_controlled(change: &ObjectChange) -> bool {
    change.controller.as_ref().is_some_and(|c| c.is_sandbox())
}

fn rv_number(rv: &str) -> Option<u64> {
    rv.parse().ok()
}

/// Everything in which the projection differs from the simulator's store: (uid, what).
fn differences(sim: &Simulator, ledger: &SharedLedger) -> Vec<(String, String)> {
    let held = cluster_state(sim);
    let ledger = ledger.view();
    let projection = ledger.projection();
    let mut out = Vec::new();
    for (uid, o) in &held {
        let record = projection.object(uid);
        // The ledger records every Sandbox and claim, pods and PVCs controlled by a
        // Sandbox, and keeps following a pod/PVC it once recorded (a retained PVC loses
        // its owner); it ignores pods/PVCs it first sees unowned.
        let required = matches!(o.kind, ObjectKind::Sandbox | ObjectKind::SandboxClaim)
            || sandbox_controlled(o)
            || record.is_some();
        if !required {
            continue;
        }
        let what = format!("{:?} {}/{} {uid}", o.kind, o.namespace, o.name);
        match record {
            None => out.push((
                uid.clone(),
                format!("missing: {what} is in the simulator, never recorded"),
            )),
            Some(r) if r.gone() => out.push((
                uid.clone(),
                format!(
                    "wrongly gone: {what} is in the simulator, the ledger says {:?}@{}",
                    r.current.change, r.current.resource_version
                ),
            )),
            Some(r) => {
                if !r.current.same_state_as(o) {
                    out.push((uid.clone(), format!(
                        "stale state: {what}: ledger {} {:?} / {:?} / {:?} @{}, simulator {} {:?} / {:?} / {:?} @{}",
                        r.current.api_version,
                        r.current.controller,
                        r.current.deletion_timestamp,
                        r.current.fields,
                        r.current.resource_version,
                        o.api_version,
                        o.controller,
                        o.deletion_timestamp,
                        o.fields,
                        o.resource_version
                    )));
                }
                if let (Some(l), Some(s)) = (
                    rv_number(&r.current.resource_version),
                    rv_number(&o.resource_version),
                ) {
                    if l > s {
                        out.push((
                            uid.clone(),
                            format!("from the future: {what}: ledger @{l}, simulator @{s}"),
                        ));
                    }
                }
            }
        }
    }
    for r in projection.live_objects() {
        if !held.contains_key(r.current.uid.as_str()) {
            out.push((
                r.current.uid.to_string(),
                format!(
                    "ghost: {:?} {}/{} {} is live in the ledger (@{}), not in the simulator",
                    r.current.kind,
                    r.current.namespace,
                    r.current.name,
                    r.current.uid,
                    r.current.resource_version
                ),
            ));
        }
    }
    out
}

fn explain(sim: &Simulator, ledger: &SharedLedger, uid: &str) -> String {
    let ledger = ledger.view();
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
    format!("ledger {recorded:?} simulator history {events:?}")
}

/// Waits until the watcher is synced and the projection matches the simulator's store.
async fn converge(sim: &Simulator, ledger: &SharedLedger, readiness: &Readiness, seed: u64) {
    for _ in 0..800 {
        if readiness.is_ready() && differences(sim, ledger).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let described: Vec<String> = differences(sim, ledger)
        .into_iter()
        .map(|(uid, d)| format!("{d}\n      {}", explain(sim, ledger, &uid)))
        .collect();
    panic!(
        "seed {seed}: no convergence (ready: {}):\n  {}",
        readiness.is_ready(),
        described.join("\n  ")
    );
}

type BindingKey = (String, String, Option<String>, String);

fn binding_keys(ledger: &ledger::LedgerView) -> BTreeSet<BindingKey> {
    ledger
        .projection()
        .active_bindings()
        .iter()
        .map(|b| {
            (
                b.pod.uid.to_string(),
                b.sandbox.uid.to_string(),
                b.claim.as_ref().map(|c| c.uid.to_string()),
                format!("{:?}", b.kind),
            )
        })
        .collect()
}

/// The bindings the DOMAIN.md §4 rule gives on the simulator's final objects: they are
/// replayed as ADDED events (claims, Sandboxes, PVCs, pods) into a fresh ledger.
fn oracle_bindings(sim: &Simulator) -> BTreeSet<BindingKey> {
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = support::open_ledger(
        dir.path(),
        LedgerConfig {
            background_snapshots: true,
            snapshot_every: 0,
            ..LedgerConfig::default()
        },
    )
    .unwrap();
    let changes: Vec<ObjectChange> = cluster_state(sim).into_values().collect();
    let mut ordered = Vec::with_capacity(changes.len());
    for kind in [
        ObjectKind::SandboxClaim,
        ObjectKind::Sandbox,
        ObjectKind::PersistentVolumeClaim,
        ObjectKind::Pod,
    ] {
        ordered.extend(changes.iter().filter(|c| c.kind == kind).cloned());
    }
    fresh.append(ordered, chrono::Utc::now()).unwrap();
    binding_keys(&fresh)
}

/// The watcher was stopped at `stop_seq`; `known` are the objects the ledger then held
/// live that the simulator still held too.
struct Blind {
    stop_seq: u64,
    known: Vec<(String, &'static str)>,
}

async fn stop(watching: Watching, sim: &Simulator, ledger: &SharedLedger) -> Blind {
    watching.stop().await;
    let held = cluster_uids(sim);
    let ledger = ledger.view();
    let known = ledger
        .projection()
        .live_objects()
        .iter()
        .filter_map(|r| {
            held.get(r.current.uid.as_str())
                .map(|kind| (r.current.uid.to_string(), *kind))
        })
        .collect();
    Blind {
        stop_seq: ledger.head().seq,
        known,
    }
}

/// Restarts the watcher, noting (in `blind_deletes`) what was deleted while it was down.
fn resume(
    blind: Blind,
    client: &kube::Client,
    sim: &Simulator,
    ledger: &SharedLedger,
    blind_deletes: &mut Vec<(String, &'static str, u64)>,
) -> Watching {
    let held = cluster_uids(sim);
    for (uid, kind) in blind.known {
        if !held.contains_key(&uid) {
            blind_deletes.push((uid, kind, blind.stop_seq));
        }
    }
    Watching::start(client, ledger)
}

/// What one seed exercised, for the summary.
#[derive(Debug, Default)]
struct SeedReport {
    deletes_checked: usize,
    blind_deletes: usize,
    blind_missing_on_resync: usize,
    blind_deleted: usize,
    forced_blind_episode: bool,
    bindings: usize,
    objects: usize,
}

async fn run_seed(seed: u64) -> SeedReport {
    let mut rng = seeded_rng(seed);
    let cluster = Simulator::start_local(SimConfig {
        compaction_window: 40,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (sim, client) = (cluster.simulator().clone(), cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_shared_ledger(
        dir.path(),
        LedgerConfig {
            background_snapshots: true,
            snapshot_every: 25,
            ..LedgerConfig::default()
        },
    );

    let namespaces = ["alpha", "beta"];
    for ns in namespaces {
        sim.create_pool(ns, "pool", 2, "tmpl", true).unwrap();
    }
    // Every uid the simulator held between operations, so deletes are checked even once
    // the simulator's history has been compacted or forgotten by a restart.
    let mut ever_held = cluster_uids(&sim);
    let mut watching = Some(Watching::start(&client, &ledger));
    let mut blind: Option<Blind> = None;
    let mut blind_deletes: Vec<(String, &'static str, u64)> = Vec::new();
    let mut claims: Vec<(String, String)> = Vec::new();
    let mut next_claim = 0u32;
    let mut log = Vec::new();
    let mut report = SeedReport::default();
    for _ in 0..40 {
        let ns = namespaces[rng.random_range(0..2)].to_string();
        let op = rng.random_range(0..14u64);
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
                let (ns, name) = claims.remove(rng.random_range(0..claims.len()));
                let policy = [
                    Propagation::Background,
                    Propagation::Foreground,
                    Propagation::Orphan,
                ][rng.random_range(0..3)];
                sim.delete_claim(&ns, &name, policy).unwrap();
            }
            5 if !claims.is_empty() => {
                let (ns, name) = claims[rng.random_range(0..claims.len())].clone();
                let _ = sim.expire_claim(&ns, &name);
            }
            6 if !claims.is_empty() => {
                let (ns, name) = claims[rng.random_range(0..claims.len())].clone();
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
                let (ns, name) = claims[rng.random_range(0..claims.len())].clone();
                sim.deliver_stale_event(Resource::SandboxClaim, &ns, &name);
            }
            12 => {
                // The watcher goes down; what happens meanwhile is only seen at the relist.
                if let Some(w) = watching.take() {
                    blind = Some(stop(w, &sim, &ledger).await);
                } else {
                    let b = blind.take().expect("stopped");
                    watching = Some(resume(b, &client, &sim, &ledger, &mut blind_deletes));
                }
            }
            _ => {}
        }
        ever_held.extend(cluster_uids(&sim));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
    let mut watching = match (watching, blind.take()) {
        (Some(w), _) => w,
        (None, b) => resume(
            b.expect("stopped"),
            &client,
            &sim,
            &ledger,
            &mut blind_deletes,
        ),
    };
    if blind_deletes.is_empty() {
        // The random operations deleted nothing the ledger knew while the watcher was
        // down: end with one such episode, so the property below is never vacuous.
        report.forced_blind_episode = true;
        // A fresh cold claim, so the delete cascades through a claim, its Sandbox, PVC
        // and pod that the ledger has all recorded.
        sim.claim_cold("alpha", "forced", Some("sbx-forced"))
            .unwrap();
        ever_held.extend(cluster_uids(&sim));
        converge(&sim, &ledger, &watching.readiness, seed).await;
        let b = stop(watching, &sim, &ledger).await;
        sim.delete_claim("alpha", "forced", Propagation::Background)
            .unwrap();
        watching = resume(b, &client, &sim, &ledger, &mut blind_deletes);
    }
    converge(&sim, &ledger, &watching.readiness, seed).await;
    watching.stop().await;

    // The simulator is quiescent and the watcher stopped: compare once more for certain.
    let left = differences(&sim, &ledger);
    assert!(left.is_empty(), "seed {seed} ops {log:?}: {left:#?}");

    let oracle = oracle_bindings(&sim);
    let ledger = ledger.view();
    let bindings = binding_keys(&ledger);
    // Equality, not inclusion: the operations here never re-adopt a Sandbox under a
    // second claim nor change a pod's sandbox-id, so single use and identity history
    // cannot make the long-lived ledger deny what a fresh one allows.
    assert_eq!(
        bindings,
        oracle,
        "seed {seed} ops {log:?}: active bindings (pod, sandbox, claim, kind) differ from \
         the binding rule on the simulator's objects: ledger-only {:?}, oracle-only {:?}",
        bindings.difference(&oracle).collect::<Vec<_>>(),
        oracle.difference(&bindings).collect::<Vec<_>>()
    );
    report.bindings = bindings.len();
    report.objects = ledger.projection().live_objects().len();

    let verified = ledger.verify().unwrap();
    assert!(
        verified.ok(),
        "seed {seed} ops {log:?}: {:?}",
        verified.failure
    );
    let mut recorded = HashSet::new();
    // uid -> (seq, kind) of every removal entry.
    let mut removals: HashMap<String, Vec<(u64, ChangeKind)>> = HashMap::new();
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
            known.insert(change.uid.to_string());
            if change.change.is_removal() {
                removals
                    .entry(change.uid.to_string())
                    .or_default()
                    .push((stored.entry.seq, change.change));
            }
        }
    }
    // Every delete of a known object is in the log: deletes in the simulator's (compacted)
    // history, and every uid it held between operations that it no longer holds.
    let mut deleted_in_sim: HashMap<String, &'static str> = HashMap::new();
    for event in sim.events() {
        if event.event_type == "DELETED" {
            if let Some(uid) = event.object["metadata"]["uid"].as_str() {
                deleted_in_sim.insert(uid.to_string(), event.resource.kind());
            }
        }
    }
    let final_uids = cluster_uids(&sim);
    for (uid, kind) in &ever_held {
        if !final_uids.contains_key(uid) {
            deleted_in_sim.insert(uid.clone(), kind);
        }
    }
    for (uid, kind) in &deleted_in_sim {
        if known.contains(uid) {
            report.deletes_checked += 1;
            assert!(
                removals.contains_key(uid),
                "seed {seed} ops {log:?}: the delete of {kind} {uid} is not in the log"
            );
        }
    }
    // Every delete made while the watcher was down, of an object the ledger held live when
    // it stopped, is recorded after the stop.
    for (uid, kind, stop_seq) in &blind_deletes {
        let after = removals
            .get(uid)
            .and_then(|r| r.iter().find(|(seq, _)| seq > stop_seq));
        match after {
            Some((_, ChangeKind::MissingOnResync)) => report.blind_missing_on_resync += 1,
            Some(_) => report.blind_deleted += 1,
            None => panic!(
                "seed {seed} ops {log:?}: {kind} {uid}, deleted while the watcher was down \
                 (stopped at seq {stop_seq}), has no removal entry after the stop: {:?}",
                removals.get(uid)
            ),
        }
    }
    report.blind_deletes = blind_deletes.len();
    assert!(
        report.blind_deletes > 0,
        "seed {seed}: nothing the ledger knew was deleted while the watcher was down"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_converges_to_the_cluster_under_random_faults() {
    let seeds: u64 = std::env::var("CLAIM_LEDGER_CONVERGENCE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut blind_deletes = 0;
    for seed in 1..=seeds {
        let report = run_seed(seed).await;
        eprintln!("seed {seed}: {report:?}");
        blind_deletes += report.blind_deletes;
    }
    assert!(
        seeds == 0 || blind_deletes > 0,
        "no seed deleted anything while the watcher was down"
    );
}
