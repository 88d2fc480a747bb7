//! The stored objects and the secondary indexes kept beside them, so that a write, the
//! garbage collector and the controllers find what they need in O(log n) of the number of
//! stored objects instead of scanning the whole store after every change.
//!
//! Two kinds of structure live here:
//!
//! * **Indexes**, pure functions of the stored objects, updated on every insert and removal:
//!   uid → objects, owner uid → dependents, terminating objects, PVC → pods mounting it,
//!   pod/PVC name → Sandboxes expecting it, unbound claims, claims by `shutdownTime`.
//! * **Work queues** of keys whose rule may fire after a change: the garbage collector's
//!   "owner gone" check and the Sandbox controller. A key enters when the object itself is
//!   written or when something it depends on appears or disappears; the consumer takes keys
//!   in key order, the order in which the full scans the queues replace visited objects, so
//!   the event order of every operation is unchanged.

use crate::conventions;
use crate::resource::Resource;
use crate::util;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// `(resource, namespace, name)`.
pub(crate) type Key = (Resource, String, String);

/// What one object contributes to the indexes.
#[derive(Debug, Default, PartialEq)]
struct Entries {
    uid: String,
    /// Distinct uids of its ownerReferences.
    owners: Vec<String>,
    terminating: bool,
    /// Pods: the PVC names its volumes mount.
    mounts: Vec<String>,
    /// Sandboxes: the keys of the PVCs and the pod the Sandbox controller keeps for it.
    expects: Vec<Key>,
    /// Claims the claim controller still has to bind.
    pending_claim: bool,
    /// Claims the claim controller will expire at this time.
    deadline: Option<DateTime<Utc>>,
}

impl Entries {
    fn of(key: &Key, object: &Value) -> Entries {
        let mut owners: Vec<String> = util::owner_refs(object)
            .iter()
            .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
            .collect();
        owners.sort();
        owners.dedup();
        let terminating = util::is_terminating(object);
        let mut entries = Entries {
            uid: util::uid_of(object).to_string(),
            owners,
            terminating,
            ..Entries::default()
        };
        let ns = &key.1;
        match key.0 {
            Resource::Pod => {
                entries.mounts = object
                    .get("spec")
                    .and_then(|s| s.get("volumes"))
                    .and_then(Value::as_array)
                    .map(|vols| {
                        vols.iter()
                            .filter_map(|v| util::path_str(v, "persistentVolumeClaim.claimName"))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                entries.mounts.sort();
                entries.mounts.dedup();
            }
            Resource::Sandbox => {
                let mut expects: Vec<Key> = conventions::expected_pvc_names(object)
                    .into_iter()
                    .map(|pvc| (Resource::PersistentVolumeClaim, ns.clone(), pvc))
                    .collect();
                expects.push((Resource::Pod, ns.clone(), conventions::pod_name_of(object)));
                expects.sort();
                expects.dedup();
                entries.expects = expects;
            }
            Resource::SandboxClaim if !terminating && !conventions::has_expired(object) => {
                entries.pending_claim = !conventions::is_bound(object);
                entries.deadline = conventions::shutdown_time(object);
            }
            _ => {}
        }
        entries
    }
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BTreeSet<Key>>, at: K, key: &Key) {
    map.entry(at).or_default().insert(key.clone());
}

/// Removes `key` under `at`, dropping the set when it empties (so presence means non-empty).
fn del<K, Q>(map: &mut HashMap<K, BTreeSet<Key>>, at: &Q, key: &Key)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(set) = map.get_mut(at) {
        set.remove(key);
        if set.is_empty() {
            map.remove(at);
        }
    }
}

/// The first key of `set` after `after` (from the start when `None`), taken out of the set.
fn take_after(set: &mut BTreeSet<Key>, after: Option<&Key>) -> Option<Key> {
    let next = match after {
        None => set.iter().next(),
        Some(k) => set.range((Bound::Excluded(k), Bound::Unbounded)).next(),
    }
    .cloned()?;
    set.remove(&next);
    Some(next)
}

/// Every stored object by key, with its indexes and work queues. Objects are shared
/// (`Arc`) with the watch history and with LIST pages, which take them under the lock
/// without copying and render them after it is released.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    map: BTreeMap<Key, Arc<Value>>,
    by_uid: HashMap<String, BTreeSet<Key>>,
    dependents: HashMap<String, BTreeSet<Key>>,
    terminating: BTreeSet<Key>,
    /// `(namespace, PVC name)` → pods mounting it.
    pvc_users: HashMap<(String, String), BTreeSet<Key>>,
    /// PVC or pod key → Sandboxes whose controller keeps an object under that key.
    expected_by: HashMap<Key, BTreeSet<Key>>,
    pending_claims: BTreeSet<Key>,
    deadlines: BTreeSet<(DateTime<Utc>, Key)>,
    /// Objects whose ownerReferences may name an owner that is gone.
    gc_queue: BTreeSet<Key>,
    /// Sandboxes that may miss a PVC or their pod, or have an ownerless PVC to adopt.
    sandbox_queue: BTreeSet<Key>,
}

impl Objects {
    /// The object under `key`.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.map.get(key).map(|v| &**v)
    }

    /// Objects of `resource` (in `namespace`, or all) in key order, starting after
    /// `(namespace, name)` when `after` is given.
    pub fn iter<'a>(
        &'a self,
        resource: Resource,
        namespace: Option<&'a str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
        let first = (resource, namespace.unwrap_or("").to_string(), String::new());
        // A continue position before the namespace asked for (a token from another list)
        // starts at the namespace, as skipping everything up to it would.
        let start = match after {
            Some((ns, name)) if (ns, name) >= (first.1.as_str(), "") => {
                Bound::Excluded((resource, ns.to_string(), name.to_string()))
            }
            _ => Bound::Included(first),
        };
        self.map
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| k.0 == resource && namespace.is_none_or(|ns| k.1 == ns))
    }

    /// Stores `object` under `key`; returns what was there.
    pub fn insert(&mut self, key: Key, object: Arc<Value>) -> Option<Arc<Value>> {
        let new = Entries::of(&key, &object);
        let old = self.map.insert(key.clone(), object);
        let old_entries = old.as_ref().map(|o| Entries::of(&key, o));
        if let Some(entries) = &old_entries {
            self.unindex(&key, entries);
        }
        let arrived = !self.by_uid.contains_key(&new.uid);
        self.index(&key, &new);
        if !new.owners.is_empty() {
            self.gc_queue.insert(key.clone());
        }
        if arrived {
            // A uid coming back (a privileged create may choose one) turns a dependent whose
            // owners were all gone into one with some gone, which the collector trims.
            self.queue_dependents(&new.uid);
        }
        if let Some(entries) = &old_entries {
            if entries.uid != new.uid {
                self.uid_left(&entries.uid);
            }
        }
        self.touched(&key);
        old
    }

    /// Removes the object under `key`; returns it.
    pub fn remove(&mut self, key: &Key) -> Option<Arc<Value>> {
        let old = self.map.remove(key)?;
        let entries = Entries::of(key, &old);
        self.unindex(key, &entries);
        self.gc_queue.remove(key);
        self.sandbox_queue.remove(key);
        self.uid_left(&entries.uid);
        self.touched(key);
        Some(old)
    }

    fn index(&mut self, key: &Key, e: &Entries) {
        add(&mut self.by_uid, e.uid.clone(), key);
        for owner in &e.owners {
            add(&mut self.dependents, owner.clone(), key);
        }
        if e.terminating {
            self.terminating.insert(key.clone());
        }
        for pvc in &e.mounts {
            add(&mut self.pvc_users, (key.1.clone(), pvc.clone()), key);
        }
        for expected in &e.expects {
            add(&mut self.expected_by, expected.clone(), key);
        }
        if e.pending_claim {
            self.pending_claims.insert(key.clone());
        }
        if let Some(t) = e.deadline {
            self.deadlines.insert((t, key.clone()));
        }
    }

    fn unindex(&mut self, key: &Key, e: &Entries) {
        del(&mut self.by_uid, e.uid.as_str(), key);
        for owner in &e.owners {
            del(&mut self.dependents, owner.as_str(), key);
        }
        self.terminating.remove(key);
        for pvc in &e.mounts {
            del(&mut self.pvc_users, &(key.1.clone(), pvc.clone()), key);
        }
        for expected in &e.expects {
            del(&mut self.expected_by, expected, key);
        }
        self.pending_claims.remove(key);
        if let Some(t) = e.deadline {
            self.deadlines.remove(&(t, key.clone()));
        }
    }

    /// When no stored object carries `uid` any more, its dependents may have lost their
    /// owner.
    fn uid_left(&mut self, uid: &str) {
        if !self.by_uid.contains_key(uid) {
            self.queue_dependents(uid);
        }
    }

    fn queue_dependents(&mut self, uid: &str) {
        if let Some(deps) = self.dependents.get(uid) {
            self.gc_queue.extend(deps.iter().cloned());
        }
    }

    /// A Sandbox, or a PVC or pod a Sandbox expects, was written or removed.
    fn touched(&mut self, key: &Key) {
        match key.0 {
            Resource::Sandbox if self.map.contains_key(key) => {
                self.sandbox_queue.insert(key.clone());
            }
            Resource::Pod | Resource::PersistentVolumeClaim => {
                if let Some(sandboxes) = self.expected_by.get(key) {
                    self.sandbox_queue.extend(sandboxes.iter().cloned());
                }
            }
            _ => {}
        }
    }

    /// Whether some stored object has uid `uid`.
    pub fn uid_alive(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Keys of the objects with an ownerReference to `uid`, in key order.
    pub fn dependents_of<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a Key> + 'a {
        self.dependents.get(uid).into_iter().flatten()
    }

    /// Keys of the objects with a `deletionTimestamp`, in key order.
    pub fn terminating(&self) -> impl Iterator<Item = &Key> {
        self.terminating.iter()
    }

    /// Whether a pod in `namespace` mounts PVC `name`.
    pub fn pvc_in_use(&self, namespace: &str, name: &str) -> bool {
        self.pvc_users
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The claims the claim controller may act on at `now`, in key order: the unbound ones
    /// and those whose `shutdownTime` is not after `now` (neither terminating nor expired).
    pub fn claims_to_reconcile(&self, now: DateTime<Utc>) -> BTreeSet<Key> {
        let mut keys = self.pending_claims.clone();
        keys.extend(
            self.deadlines
                .iter()
                .take_while(|(t, _)| *t <= now)
                .map(|(_, k)| k.clone()),
        );
        keys
    }

    /// Whether some claim's `shutdownTime` is not after `now` (and it has not expired yet).
    pub fn claim_due(&self, now: DateTime<Utc>) -> bool {
        self.deadlines.first().is_some_and(|(t, _)| *t <= now)
    }

    /// The next key after `after` the garbage collector's owner check should look at.
    pub fn next_gc_candidate(&mut self, after: Option<&Key>) -> Option<Key> {
        take_after(&mut self.gc_queue, after)
    }

    /// The next Sandbox after `after` the Sandbox controller should look at.
    pub fn next_sandbox_candidate(&mut self, after: Option<&Key>) -> Option<Key> {
        take_after(&mut self.sandbox_queue, after)
    }

    /// Puts a Sandbox back on the Sandbox controller's queue (its last pass did something,
    /// so the next pass must look again, as a full scan would).
    pub fn requeue_sandbox(&mut self, key: Key) {
        if self.map.contains_key(&key) {
            self.sandbox_queue.insert(key);
        }
    }
}

#[cfg(test)]
impl Objects {
    /// Rebuilds every index from the objects alone and compares: the incremental updates
    /// must give exactly what a rebuild gives.
    pub fn check_indexes(&self) {
        let mut fresh = Objects::default();
        for (k, v) in &self.map {
            fresh.index(k, &Entries::of(k, v));
        }
        assert_eq!(self.by_uid, fresh.by_uid, "by_uid");
        assert_eq!(self.dependents, fresh.dependents, "dependents");
        assert_eq!(self.terminating, fresh.terminating, "terminating");
        assert_eq!(self.pvc_users, fresh.pvc_users, "pvc_users");
        assert_eq!(self.expected_by, fresh.expected_by, "expected_by");
        assert_eq!(self.pending_claims, fresh.pending_claims, "pending_claims");
        assert_eq!(self.deadlines, fresh.deadlines, "deadlines");
    }

    /// Queues every object for the garbage collector's owner check and every Sandbox for
    /// the Sandbox controller: the next settle then does what the full scans did.
    pub fn queue_everything(&mut self) {
        for (k, v) in &self.map {
            if !util::owner_refs(v).is_empty() {
                self.gc_queue.insert(k.clone());
            }
            if k.0 == Resource::Sandbox {
                self.sandbox_queue.insert(k.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Propagation, Served, SimConfig, Simulator};
    use serde_json::json;

    /// After every operation of a seeded random workload: the incrementally kept indexes
    /// equal a rebuild, and a settle that looks at every object (what the simulator did
    /// before the work queues) finds nothing left to do.
    fn random_workload(seed: u64, config: SimConfig, steps: usize) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let sim = Simulator::new(config);
        let pick = |rng: &mut fastrand::Rng, xs: &[&'static str]| xs[rng.usize(..xs.len())];
        let nss = ["a", "b"];
        let pools = ["p1", "p2"];
        let names = ["c1", "c2", "c3", "c4", "c5"];
        let policies = [
            Propagation::Background,
            Propagation::Foreground,
            Propagation::Orphan,
        ];
        let version = config.served.preferred();
        let day = chrono::Duration::days(1);
        // Every object ever listed, so owners may be long gone and uids may come back.
        let mut seen: Vec<Value> = Vec::new();
        for step in 0..steps {
            let ns = pick(&mut rng, &nss);
            let name = pick(&mut rng, &names);
            // Errors are part of the workload (a claim that exists, a missing pool ...).
            let _ = match rng.usize(..13) {
                0 => sim
                    .create_pool(ns, pick(&mut rng, &pools), rng.u32(0..3), "t", rng.bool())
                    .map(drop),
                1 => sim
                    .claim_warm(ns, name, pick(&mut rng, &pools), Some("id"))
                    .map(drop),
                2 => sim.claim_cold(ns, name, None).map(drop),
                3 => {
                    // Deadlines are whole days away and the clock moves by whole days, so
                    // no claim comes due between an operation and the check after it.
                    let mut spec = json!({"warmPoolRef": {"name": pick(&mut rng, &["p1", "none"])},
                        "sandboxTemplateRef": {"name": "t"}, "warmpool": pick(&mut rng, &["p1", "default", "none"])});
                    if rng.bool() {
                        let at = sim.now() + day * rng.i32(-1..3);
                        spec["lifecycle"] = json!({"shutdownTime": util::rfc3339(at),
                            "shutdownPolicy": pick(&mut rng, &["Retain", "Delete", "DeleteForeground"])});
                    }
                    sim.create(json!({"apiVersion": format!("extensions.agents.x-k8s.io/{version}"),
                        "kind": "SandboxClaim", "metadata": {"name": name, "namespace": ns}, "spec": spec}))
                        .map(drop)
                }
                4 => sim
                    .delete_claim(ns, name, policies[rng.usize(..3)])
                    .map(drop),
                5 => sim.expire_claim(ns, name),
                6 => sim.replace_pod(ns, name).map(drop),
                7 => sim.expire_sandbox(ns, name),
                8 => {
                    let resource = Resource::ALL[rng.usize(..6)];
                    let objects = sim.list(resource, Some(ns));
                    match objects.get(rng.usize(..objects.len().max(1))) {
                        Some(o) => sim.delete(resource, ns, util::name_of(o), policies[rng.usize(..3)]),
                        None => Ok(()),
                    }
                }
                9 => {
                    sim.advance_clock((day * rng.i32(0..2)).to_std().unwrap_or_default());
                    Ok(())
                }
                10 => {
                    // A hand-made PVC or pod, maybe owned by objects that may be gone.
                    seen.extend(Resource::ALL.iter().flat_map(|r| sim.list(*r, None)));
                    let mut meta = json!({"name": format!("workspace-{name}"), "namespace": ns});
                    let mut refs: Vec<Value> = Vec::new();
                    for _ in 0..rng.usize(..3) {
                        if let Some(o) = seen.get(rng.usize(..seen.len().max(1))) {
                            refs.push(json!({"apiVersion": o["apiVersion"], "kind": o["kind"],
                                "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
                                "blockOwnerDeletion": rng.bool()}));
                        }
                    }
                    if !refs.is_empty() {
                        meta["ownerReferences"] = refs.into();
                    }
                    if rng.bool() {
                        meta["finalizers"] = json!([crate::store::PVC_PROTECTION_FINALIZER]);
                        sim.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta}))
                    } else {
                        sim.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": "n",
                            "volumes": [{"name": "w", "persistentVolumeClaim": {"claimName": format!("workspace-{}", pick(&mut rng, &names))}}]}}))
                    }
                    .map(drop)
                }
                11 => match seen.get(rng.usize(..seen.len().max(1))) {
                    // A uid that may be gone comes back (the Rust API may choose uids).
                    Some(o) => sim
                        .create(json!({"apiVersion": format!("extensions.agents.x-k8s.io/{version}"),
                            "kind": "SandboxTemplate",
                            "metadata": {"name": format!("revived-{step}"), "namespace": ns, "uid": o["metadata"]["uid"]}}))
                        .map(drop),
                    None => Ok(()),
                },
                _ => sim
                    .apply(json!({"apiVersion": format!("agents.x-k8s.io/{version}"), "kind": "Sandbox",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"replicas": rng.u32(0..2),
                            "volumeClaimTemplates": [{"metadata": {"name": "workspace"}, "spec": {}}]}}))
                    .map(drop),
            };
            sim.with_state(|s| {
                s.objects.check_indexes();
                let rv = s.rv;
                s.objects.queue_everything();
                s.settle_all();
                assert_eq!(
                    s.rv, rv,
                    "a full settle found work the queues missed (seed {seed})"
                );
            });
        }
    }

    #[test]
    fn preloaded_bindings_are_whole_and_leave_the_controllers_as_configured() {
        let sim = Simulator::new(SimConfig {
            controllers: false,
            preload_bindings: 3,
            ..SimConfig::default()
        });
        assert!(!sim.config().controllers);
        for resource in [
            Resource::SandboxClaim,
            Resource::Sandbox,
            Resource::Pod,
            Resource::PersistentVolumeClaim,
        ] {
            assert_eq!(sim.list(resource, Some("default")).len(), 3, "{resource:?}");
        }
        let claim = sim
            .get(Resource::SandboxClaim, "default", "preload-000001")
            .unwrap();
        assert_eq!(claim["status"]["sandbox"]["name"], "preload-000001");
        let pod = sim.get(Resource::Pod, "default", "preload-000001").unwrap();
        assert_eq!(
            pod["metadata"]["annotations"][conventions::SANDBOX_ID_ANNOTATION],
            "preload-000001"
        );
        assert_eq!(
            sim.preload_bound_claims("default", 1),
            Err(crate::SimError::ControllersDisabled)
        );
        // More on a cluster with controllers: the next free names.
        let sim = Simulator::new(SimConfig {
            preload_bindings: 2,
            ..SimConfig::default()
        });
        let names = sim.preload_bound_claims("default", 2).unwrap();
        assert_eq!(names, ["preload-000002", "preload-000003"]);
        assert_eq!(sim.list(Resource::Pod, None).len(), 4);
        sim.read_state(|s| s.objects.check_indexes());
    }

    #[test]
    fn indexes_and_queues_match_full_scans() {
        for seed in 0..6 {
            let config = SimConfig {
                controllers: seed % 3 != 2,
                served: if seed % 2 == 0 {
                    Served::Both
                } else {
                    Served::V1alpha1Only
                },
                ..SimConfig::default()
            };
            random_workload(seed, config, 250);
        }
    }

    fn obj(
        resource: Resource,
        ns: &str,
        name: &str,
        uid: &str,
        meta: Value,
        rest: Value,
    ) -> (Key, Value) {
        let mut v = json!({"metadata": {"name": name, "namespace": ns, "uid": uid}});
        util::merge_patch(&mut v, &json!({"metadata": meta}));
        util::merge_patch(&mut v, &rest);
        ((resource, ns.to_string(), name.to_string()), v)
    }

    #[test]
    fn owner_uid_and_mount_indexes_follow_writes_and_removals() {
        let mut objects = Objects::default();
        let (sk, sandbox) = obj(
            Resource::Sandbox,
            "ns",
            "s",
            "u-s",
            json!({}),
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "workspace"}}]}}),
        );
        objects.insert(sk.clone(), Arc::new(sandbox));
        // A new Sandbox is queued for its controller; it expects its PVC and pod.
        assert_eq!(objects.next_sandbox_candidate(None), Some(sk.clone()));
        assert_eq!(objects.next_sandbox_candidate(None), None);
        let owned = json!({"ownerReferences": [{"uid": "u-s"}, {"uid": "u-s"}]});
        let (pk, pod) = obj(
            Resource::Pod,
            "ns",
            "s",
            "u-p",
            owned.clone(),
            json!({"spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "workspace-s"}}]}}),
        );
        objects.insert(pk.clone(), Arc::new(pod.clone()));
        assert!(objects.uid_alive("u-p"));
        assert_eq!(objects.dependents_of("u-s").collect::<Vec<_>>(), [&pk]);
        assert!(objects.pvc_in_use("ns", "workspace-s"));
        assert!(!objects.pvc_in_use("other", "workspace-s"));
        // The pod is the Sandbox's: writing it queues the Sandbox, and the pod itself is
        // queued for the owner check.
        assert_eq!(objects.next_sandbox_candidate(None), Some(sk.clone()));
        assert_eq!(objects.next_gc_candidate(None), Some(pk.clone()));
        assert_eq!(objects.next_gc_candidate(None), None);
        // Removing the owner queues its dependents for the owner check.
        objects.remove(&sk);
        assert!(!objects.uid_alive("u-s"));
        assert_eq!(objects.next_gc_candidate(None), Some(pk.clone()));
        // Removing the pod frees the PVC.
        objects.remove(&pk);
        assert!(!objects.pvc_in_use("ns", "workspace-s"));
        assert_eq!(objects.dependents_of("u-s").count(), 0);
        // A uid coming back queues its dependents too (some owners gone is not all gone).
        let (dk, dependent) = obj(
            Resource::PersistentVolumeClaim,
            "ns",
            "d",
            "u-d",
            json!({"ownerReferences": [{"uid": "u-1"}, {"uid": "u-2"}]}),
            json!({}),
        );
        objects.insert(dk.clone(), Arc::new(dependent));
        assert_eq!(objects.next_gc_candidate(None), Some(dk.clone()));
        let (tk, template) = obj(
            Resource::SandboxTemplate,
            "ns",
            "t",
            "u-1",
            json!({}),
            json!({}),
        );
        objects.insert(tk, Arc::new(template));
        assert_eq!(objects.next_gc_candidate(None), Some(dk));
        objects.check_indexes();
    }

    #[test]
    fn claims_to_reconcile_are_the_unbound_and_the_due() {
        let mut objects = Objects::default();
        let now = chrono::Utc::now();
        let claim = |name: &str, status: Value, at: Option<DateTime<Utc>>| {
            let spec = match at {
                Some(t) => json!({"lifecycle": {"shutdownTime": util::rfc3339(t)}}),
                None => json!({}),
            };
            obj(
                Resource::SandboxClaim,
                "ns",
                name,
                name,
                json!({}),
                json!({"spec": spec, "status": status}),
            )
        };
        let bound = json!({"sandbox": {"name": "x"}});
        let expired = json!({"sandbox": {"name": "x"}, "conditions": [{"type": "Ready", "reason": conventions::EXPIRED_REASON}]});
        for (k, v) in [
            claim("unbound", json!({}), None),
            claim("bound", bound.clone(), None),
            claim("due", bound.clone(), Some(now - chrono::Duration::hours(1))),
            claim("later", bound, Some(now + chrono::Duration::hours(1))),
            claim("expired", expired, Some(now - chrono::Duration::hours(1))),
        ] {
            objects.insert(k, Arc::new(v));
        }
        let names = |keys: BTreeSet<Key>| keys.into_iter().map(|k| k.2).collect::<Vec<_>>();
        assert_eq!(names(objects.claims_to_reconcile(now)), ["due", "unbound"]);
        assert!(objects.claim_due(now));
        assert_eq!(
            names(objects.claims_to_reconcile(now + chrono::Duration::hours(2))),
            ["due", "later", "unbound"]
        );
        objects.remove(&(Resource::SandboxClaim, "ns".into(), "due".into()));
        assert!(!objects.claim_due(now));
        objects.check_indexes();
    }

    #[test]
    fn iteration_starts_at_the_namespace_or_after_the_continue_position() {
        let mut objects = Objects::default();
        for (ns, name) in [("a", "x"), ("b", "x"), ("b", "y"), ("c", "x")] {
            let (k, v) = obj(
                Resource::Pod,
                ns,
                name,
                &format!("{ns}{name}"),
                json!({}),
                json!({}),
            );
            objects.insert(k, Arc::new(v));
        }
        let (k, v) = obj(Resource::Sandbox, "b", "z", "s", json!({}), json!({}));
        objects.insert(k, Arc::new(v));
        let names = |it: Vec<(&Key, &Arc<Value>)>| {
            it.into_iter()
                .map(|(k, _)| format!("{}/{}", k.1, k.2))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(objects.iter(Resource::Pod, None, None).collect()),
            ["a/x", "b/x", "b/y", "c/x"]
        );
        assert_eq!(
            names(objects.iter(Resource::Pod, Some("b"), None).collect()),
            ["b/x", "b/y"]
        );
        assert_eq!(
            names(
                objects
                    .iter(Resource::Pod, None, Some(("b", "x")))
                    .collect()
            ),
            ["b/y", "c/x"]
        );
        assert_eq!(
            names(
                objects
                    .iter(Resource::Pod, Some("b"), Some(("b", "x")))
                    .collect()
            ),
            ["b/y"]
        );
        // A position before the namespace starts at the namespace; one after it, nowhere.
        assert_eq!(
            names(
                objects
                    .iter(Resource::Pod, Some("b"), Some(("a", "x")))
                    .collect()
            ),
            ["b/x", "b/y"]
        );
        assert!(objects
            .iter(Resource::Pod, Some("b"), Some(("c", "")))
            .next()
            .is_none());
        assert_eq!(
            names(objects.iter(Resource::Sandbox, None, None).collect()),
            ["b/z"]
        );
    }
}
