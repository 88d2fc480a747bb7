//! Replicas of one ledger in a real PostgreSQL server (issue 11), each a real `claim-ledger
//! serve --replica` process, against the cluster simulator served from this process on
//! loopback while a background thread churns it: claims bound warm and cold and released,
//! pods replaced, warm Sandboxes adopted and replenished, one change after another.
//!
//! - [`three_replicas_survive_two_writer_kills_under_churn`]: the writer is killed
//!   (SIGKILL) mid-stream, a follower takes over, and that one is killed too, so the third
//!   replica ends up writing. The log has no gap and no fork (`verify` through the binary),
//!   every entry any replica served before a kill is still there under the same hash, each
//!   successor recorded its takeover as a restart does (a `watch_gap` with reason
//!   `restart`, and `missing_on_resync` for what was deleted while no writer watched), and
//!   every replica (the killed ones restarted as followers) answers checks alike.
//! - [`bundles_from_different_replicas_verify_against_one_checkpoint`]: an auditor keeps a
//!   checkpoint the first writer signed; after that writer dies, bundles of the same range
//!   fetched from the new writer, from a follower and from the CLI on the same database
//!   carry that very checkpoint, verify offline with `verify-export` against it, and are
//!   the same entries and proofs; a later bundle proves the successor's tree extends it.
//!
//! Waits use [`eventually`]; nothing asserts on how long anything took.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sim::{LocalSimulator, Propagation, Resource, SimConfig, Simulator};

use crate::postgres::{call, ok, replica_with};
use crate::support::postgres::Postgres;
use crate::support::process;
use crate::support::wait::eventually;

/// Where every object of these tests lives.
const NS: &str = "default";
/// The warm pool the churn claims from.
const POOL: &str = "pool";

/// The cluster simulator served from this process on 127.0.0.1 by a runtime of its own,
/// with its kubeconfig in a file for the replicas, and a warm pool of two.
struct Cluster {
    // Dropped before the runtime that serves it (fields drop in order).
    local: LocalSimulator,
    _runtime: tokio::runtime::Runtime,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let local = runtime
            .block_on(Simulator::start_local(SimConfig::default()))
            .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, local.kubeconfig()).unwrap();
        local
            .simulator()
            .create_pool(NS, POOL, 2, "template", true)
            .unwrap();
        Cluster {
            local,
            _runtime: runtime,
            kubeconfig,
        }
    }

    fn sim(&self) -> &Simulator {
        self.local.simulator()
    }
}

/// A pod as a check names it, with the claim it is bound through when known.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    uid: String,
    claim_uid: Option<String>,
}

impl Pod {
    /// The `POST /v1/identity/check` body for this pod (`min_seq`: answer from at least
    /// that head, or `LEDGER_BEHIND`).
    fn request(&self, min_seq: Option<u64>) -> String {
        let mut body = serde_json::json!({
            "namespace": NS,
            "pod_name": self.name,
            "pod_uid": self.uid,
        });
        if let Some(claim) = &self.claim_uid {
            body["claim_uid"] = claim.as_str().into();
        }
        if let Some(seq) = min_seq {
            body["min_seq"] = seq.into();
        }
        body.to_string()
    }
}

/// The pod of `claim` in the simulator as it stands, if the claim is bound and its pod
/// exists.
fn bound_pod(sim: &Simulator, claim: &str) -> Option<Pod> {
    let claim = sim.get(Resource::SandboxClaim, NS, claim)?;
    let sandbox = claim["status"]["sandbox"]["name"].as_str()?;
    sim.list(Resource::Pod, Some(NS))
        .into_iter()
        .find(|pod| {
            pod["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|o| o["name"] == sandbox))
        })
        .map(|pod| Pod {
            name: pod["metadata"]["name"].as_str().unwrap().to_string(),
            uid: pod["metadata"]["uid"].as_str().unwrap().to_string(),
            claim_uid: claim["metadata"]["uid"].as_str().map(str::to_string),
        })
}

/// Every bound claim's pod in the simulator.
fn bound_pods(sim: &Simulator) -> Vec<Pod> {
    sim.list(Resource::SandboxClaim, Some(NS))
        .iter()
        .filter_map(|claim| bound_pod(sim, claim["metadata"]["name"].as_str()?))
        .collect()
}

/// A claim bound the cold way, with its pod.
fn cold_claim(sim: &Simulator, name: &str) -> Pod {
    sim.claim_cold(NS, name, Some(&format!("sbx-{name}")))
        .unwrap();
    bound_pod(sim, name).expect("a cold claim's pod")
}

/// The workload: a thread that, until stopped, binds a claim (two warm, one cold), every
/// other round replaces the pod of the oldest live claim, and releases the oldest claim
/// once more than four are live; it keeps every pod uid it made go away.
struct Churn {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<Pod>, String>>,
}

impl Churn {
    fn start(sim: &Simulator) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (sim, stop) = (sim.clone(), Arc::clone(&stop));
            move || {
                let mut live = VecDeque::new();
                let mut gone = Vec::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let claim = format!("churn-{round}");
                    let sandbox_id = format!("sbx-churn-{round}");
                    let bound = match round % 3 {
                        0 => sim.claim_cold(NS, &claim, Some(&sandbox_id)),
                        _ => sim.claim_warm(NS, &claim, POOL, Some(&sandbox_id)),
                    };
                    bound.map_err(|e| format!("binding {claim}: {e}"))?;
                    live.push_back(claim);
                    if round % 2 == 0 {
                        let oldest: &String = live.front().unwrap();
                        let claimed = sim.get(Resource::SandboxClaim, NS, oldest).unwrap();
                        let sandbox = claimed["status"]["sandbox"]["name"].as_str().unwrap();
                        gone.extend(bound_pod(&sim, oldest));
                        sim.replace_pod(NS, sandbox)
                            .map_err(|e| format!("replacing the pod of {oldest}: {e}"))?;
                    }
                    if live.len() > 4 {
                        let oldest = live.pop_front().unwrap();
                        gone.extend(bound_pod(&sim, &oldest));
                        sim.delete_claim(NS, &oldest, Propagation::Background)
                            .map_err(|e| format!("releasing {oldest}: {e}"))?;
                    }
                    std::thread::sleep(Duration::from_millis(40));
                }
                Ok(gone)
            }
        });
        Churn { stop, thread }
    }

    /// Stops the workload; the pods it made go away.
    fn stop(self) -> Vec<Pod> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("the churn thread panicked")
            .unwrap_or_else(|e| panic!("the simulator refused the workload: {e}"))
    }
}

/// A running `serve --replica` process and its API address.
struct Replica {
    process: process::Child,
    api: String,
}

impl Replica {
    fn start(url: &str, cluster: &Cluster, extra: &[&str]) -> Replica {
        let (process, api) = replica_with(url, &cluster.kubeconfig, extra);
        Replica { process, api }
    }

    /// `/readyz`: its status and the replica report (role, identity, writer, lag).
    fn readiness(&self) -> (u16, Value) {
        let (status, body) = call(&self.api, "GET", "/readyz", None);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        (status, body["watchers"]["report"].clone())
    }

    /// Ready, in `role`.
    fn ready_as(&self, role: &str) -> bool {
        let (status, report) = self.readiness();
        status == 200 && report["role"] == role
    }

    /// The head it serves: (seq, hash).
    fn head(&self) -> (u64, String) {
        let (status, body) = call(&self.api, "GET", "/v1/head", None);
        assert_eq!(status, 200, "{body}");
        let head: Value = serde_json::from_str(&body).unwrap();
        (
            head["seq"].as_u64().unwrap(),
            head["hash"].as_str().unwrap().to_string(),
        )
    }

    /// Its answer for `pod`: (decision, reason).
    fn check(&self, pod: &Pod, min_seq: Option<u64>) -> (String, String) {
        let (_, body) = call(
            &self.api,
            "POST",
            "/v1/identity/check",
            Some(&pod.request(min_seq)),
        );
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("check answer is not JSON ({e}): {body}"));
        (
            answer["decision"].as_str().unwrap_or_default().to_string(),
            answer["reason"].as_str().unwrap_or_default().to_string(),
        )
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// SIGKILL, and reap it.
    fn kill(mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// Every (seq, hash) some replica served: a seq served under two hashes is a fork.
#[derive(Default)]
struct Served(BTreeMap<u64, String>);

impl Served {
    fn note(&mut self, seq: u64, hash: &str, by: &str) {
        if seq == 0 {
            return;
        }
        let known = self.0.entry(seq).or_insert_with(|| hash.to_string());
        assert_eq!(known, hash, "seq {seq} served under two hashes (by {by})");
    }

    /// The replica's head, and every entry its `/v1/entries` serves.
    fn read_all(&mut self, replica: &Replica) {
        let (seq, hash) = replica.head();
        self.note(seq, &hash, &replica.api);
        let mut after = 0;
        loop {
            let (status, body) = call(
                &replica.api,
                "GET",
                &format!("/v1/entries?after_seq={after}&limit=1000"),
                None,
            );
            assert_eq!(status, 200, "{body}");
            let page: Value = serde_json::from_str(&body).unwrap();
            for line in page["entries"].as_array().unwrap() {
                let seq = line["seq"].as_u64().unwrap();
                self.note(seq, line["hash"].as_str().unwrap(), &replica.api);
            }
            match page["next_after_seq"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
    }
}

/// Waits until the process is stopped (state `T` in `/proc/PID/stat`): a SIGSTOP has
/// taken effect, so it observes nothing more.
fn wait_stopped(pid: u32) {
    eventually("the writer to be stopped", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(state == 'T' || state == 't')
            })
            .unwrap_or(false)
    });
}

fn signal(name: &str, pid: u32) {
    let sent = std::process::Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {name} {pid}");
}

/// What a writer kill left to check in the log afterwards.
struct Kill {
    /// The killed writer's head just before: what follows is its successor's (or entries
    /// it appended after that read).
    head_before: u64,
    /// The uid of the claim deleted while no writer watched.
    marker_claim_uid: String,
    /// Whether no other replica had taken over yet when the marker was deleted, so the
    /// successor can only have found its absence when it listed the cluster.
    deleted_unwatched: bool,
}

/// Kills the writer the way a crash would, after making sure something changes in the
/// cluster that it never sees: a claim every replica has recorded as bound (the
/// "marker", `marker_claim` bound to pod `marker`) is deleted while the writer is
/// stopped, then the writer is SIGKILLed. Waits until one of `survivors` is the writer.
fn kill_writer(
    writer: Replica,
    survivors: &[&Replica],
    cluster: &Cluster,
    (marker_claim, marker): (&str, &Pod),
    served: &mut Served,
) -> Kill {
    // Everything any replica has served so far is acknowledged: it must outlive the kill.
    for replica in std::iter::once(&writer).chain(survivors.iter().copied()) {
        eventually("the marker bound on every replica", || {
            replica.check(marker, None).0 == "allow"
        });
        served.read_all(replica);
    }
    let head_before = writer.head().0;
    signal("-STOP", writer.pid());
    wait_stopped(writer.pid());
    cluster
        .sim()
        .delete_claim(NS, marker_claim, Propagation::Background)
        .unwrap();
    // A stopped writer keeps its lock until its lease runs out; if a follower got it that
    // early, it may have watched the marker go rather than find it missing.
    let deleted_unwatched = survivors
        .iter()
        .all(|r| r.readiness().1["role"] != "writer");
    writer.kill();
    eventually("a survivor to take over as a ready writer", || {
        survivors.iter().any(|r| r.ready_as("writer"))
    });
    Kill {
        head_before,
        marker_claim_uid: marker.claim_uid.clone().expect("the marker's claim uid"),
        deleted_unwatched,
    }
}

/// Requires every replica to answer each of `pods` alike, once it has applied at least
/// the newest head any of them serves (`min_seq`: a replica behind answers
/// `LEDGER_BEHIND`, and is asked again); returns the answers.
fn agree(replicas: &[&Replica], pods: &[Pod]) -> Vec<(String, String)> {
    let newest = replicas.iter().map(|r| r.head().0).max().unwrap();
    let mut answers = Vec::new();
    for pod in pods {
        let mut each = Vec::new();
        eventually("every replica to answer from a caught-up log", || {
            each = replicas
                .iter()
                .map(|r| r.check(pod, Some(newest)))
                .collect();
            each.iter().all(|(decision, _)| decision != "not_ready")
        });
        assert!(
            each.iter().all(|answer| *answer == each[0]),
            "replicas disagree about {pod:?}: {each:?}"
        );
        answers.push(each[0].clone());
    }
    answers
}

/// Waits until every replica serves the same head (seq and hash): with nothing left to
/// record, the followers catch up with the writer.
fn same_head(replicas: &[&Replica]) {
    eventually("every replica at the same head", || {
        let heads: Vec<_> = replicas.iter().map(|r| r.head()).collect();
        heads.iter().all(|h| *h == heads[0])
    });
}

#[test]
fn three_replicas_survive_two_writer_kills_under_churn() {
    let pg = Postgres::start();
    pg.create_database("three");
    let url = pg.url("three");
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    // A binding the workload never touches: every replica must allow it throughout.
    let stable = cold_claim(cluster.sim(), "stable");
    let forged = Pod {
        uid: "0f0f0f0f-0000-4000-8000-000000000000".into(),
        ..stable.clone()
    };

    let first = Replica::start(&url, &cluster, &[]);
    eventually("the first replica to be the ready writer", || {
        first.ready_as("writer")
    });
    let mut others = vec![
        Replica::start(&url, &cluster, &[]),
        Replica::start(&url, &cluster, &[]),
    ];
    for replica in &others {
        eventually("the followers to be ready", || replica.ready_as("follower"));
    }
    let churn = Churn::start(cluster.sim());
    let mut served = Served::default();

    // First kill, mid-stream (once the workload has been recorded for a while): one of
    // the two followers takes over.
    let churned = |replica: &Replica, entries: u64| {
        let from = replica.head().0;
        eventually("the workload recorded", || {
            replica.head().0 >= from + entries
        });
    };
    churned(&first, 150);
    let marker_1 = cold_claim(cluster.sim(), "marker-1");
    let kill_1 = kill_writer(
        first,
        &others.iter().collect::<Vec<_>>(),
        &cluster,
        ("marker-1", &marker_1),
        &mut served,
    );
    let successor = others
        .iter()
        .position(|r| r.readiness().1["role"] == "writer")
        .expect("a writer among the survivors");
    let second = others.remove(successor);
    let third = others.pop().unwrap();
    // The two survivors answer alike, the marker's released binding included.
    let answers = agree(
        &[&second, &third],
        &[stable.clone(), marker_1.clone(), forged.clone()],
    );
    assert_eq!(answers[0].0, "allow", "{answers:?}");
    assert_eq!(answers[1], ("deny".into(), "BINDING_RELEASED".into()));
    assert_eq!(answers[2], ("deny".into(), "POD_UID_MISMATCH".into()));

    // Second kill, still mid-stream: the third replica, the only one left, takes over.
    churned(&second, 150);
    let marker_2 = cold_claim(cluster.sim(), "marker-2");
    let kill_2 = kill_writer(
        second,
        &[&third],
        &cluster,
        ("marker-2", &marker_2),
        &mut served,
    );
    assert!(third.ready_as("writer"));

    // The killed replicas come back (new processes) as followers of the third, while
    // it appends: a replica opening the shared log reads its head and its entries in
    // separate reads, and must not take the writer's later commits for damage.
    let rejoined = [
        Replica::start(&url, &cluster, &[]),
        Replica::start(&url, &cluster, &[]),
    ];
    for replica in &rejoined {
        eventually("a restarted replica to follow", || {
            replica.ready_as("follower")
        });
    }
    churned(&third, 150);
    // Readers alongside the live writer (README: readers need no lock) find nothing
    // wrong either, for the same reason.
    for args in [
        &["verify", "--db", &url][..],
        &["verify", "--db", &url, "--chain-only"],
    ] {
        let report = ok(args, None).json();
        assert_eq!(report["failure"], Value::Null, "{report}");
    }
    let gone = churn.stop();
    let writer_identity = third.readiness().1["identity"].clone();
    for replica in &rejoined {
        eventually("the restarted follower to name the third replica", || {
            replica.readiness().1["writer"] == writer_identity
        });
    }

    // Once caught up, every replica answers every pod alike: each binding the cluster
    // holds (allowed: no binding was lost across two failovers), pods that went away
    // (a sample), the markers deleted while no writer watched, a forged uid.
    let live = bound_pods(cluster.sim());
    assert!(live.len() >= 4, "{live:?}");
    let step = gone.len().div_ceil(40).max(1);
    let sample: Vec<Pod> = gone.iter().step_by(step).cloned().collect();
    let mut pods = live.clone();
    pods.extend(sample);
    pods.extend([marker_1.clone(), marker_2.clone(), forged]);
    let all = [&third, &rejoined[0], &rejoined[1]];
    same_head(&all);
    let answers = agree(&all, &pods);
    for (pod, answer) in pods.iter().zip(&answers).take(live.len()) {
        assert_eq!(answer.0, "allow", "a live binding: {pod:?} {answer:?}");
    }
    let markers = &answers[answers.len() - 3..answers.len() - 1];
    assert!(
        markers
            .iter()
            .all(|a| *a == ("deny".to_string(), "BINDING_RELEASED".to_string())),
        "{markers:?}"
    );
    assert_eq!(
        answers[answers.len() - 1],
        ("deny".into(), "POD_UID_MISMATCH".into())
    );
    // Denied checks are recorded by the writer alone (when it flushes them); whatever it
    // has recorded, the followers apply.
    same_head(&all);
    for replica in all {
        served.read_all(replica);
    }

    let [mut a, mut b] = rejoined;
    let mut third = third;
    for process in [&mut a.process, &mut b.process, &mut third.process] {
        let status = process.interrupt_and_wait();
        assert!(
            status.success(),
            "a replica failed to stop cleanly: {status}"
        );
    }

    // One log, no gap, no fork: it verifies through the binary, numbers its entries
    // 1..=N each linked to the one before, and still holds every entry any replica
    // served, under the same hash.
    let report = ok(&["verify", "--db", &url], None).json();
    assert_eq!(report["failure"], Value::Null, "{report}");
    let lines = ok(&["export", "--db", &url], None).lines();
    let mut previous = "0".repeat(64);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], index as u64 + 1, "a gap at {line}");
        assert_eq!(
            line["prev_hash"],
            previous.as_str(),
            "a broken link at {line}"
        );
        previous = line["hash"].as_str().unwrap().to_string();
    }
    assert_eq!(report["verified_seq"], lines.len() as u64);
    for (seq, hash) in &served.0 {
        let line = lines
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("served seq {seq} is gone (head {})", lines.len()));
        assert_eq!(line["hash"], hash.as_str(), "served seq {seq} changed");
    }

    // Each successor recorded its takeover as a restart does: watch gaps (reason
    // restart) after its predecessor's last read head (the first successor's before the
    // second kill), and the marker deleted while nobody watched as missing_on_resync.
    let restart_gaps = |after: u64, upto: u64| {
        lines
            .iter()
            .filter(|l| (after + 1..=upto).contains(&l["seq"].as_u64().unwrap()))
            .filter(|l| l["entry"]["change"]["watch_gap"]["reason"] == "restart")
            .count()
    };
    assert!(
        restart_gaps(kill_1.head_before, kill_2.head_before) > 0,
        "no restart watch gap from the first successor"
    );
    assert!(
        restart_gaps(kill_2.head_before, u64::MAX) > 0,
        "no restart watch gap from the third replica"
    );
    for kill in [&kill_1, &kill_2] {
        let removal = lines
            .iter()
            .filter(|l| l["seq"].as_u64().unwrap() > kill.head_before)
            .map(|l| &l["entry"]["change"]["object"])
            .find(|o| o["uid"] == kill.marker_claim_uid.as_str() && o["kind"] == "SandboxClaim")
            .unwrap_or_else(|| panic!("the marker's removal is not recorded"));
        if kill.deleted_unwatched {
            assert_eq!(removal["change"], "missing_on_resync", "{removal}");
        } else {
            assert!(
                ["missing_on_resync", "deleted"].contains(&removal["change"].as_str().unwrap()),
                "{removal}"
            );
        }
    }
}

/// `GET path` on `address` with the bytes of the body, binary-safe (a tar), de-chunked.
fn get_bytes(address: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let mut body = &response[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, out);
        }
        out.extend_from_slice(&body[line + 2..line + 2 + size]);
        body = &body[line + 2 + size + 2..];
    }
}

/// The files of a tar bundle, by name.
fn members(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// The tree size and the root line (base64) of a signed checkpoint note.
fn size_and_root(note: &str) -> (u64, String) {
    let mut lines = note.lines().skip(1);
    let size = lines.next().unwrap().parse().unwrap();
    (size, lines.next().unwrap().to_string())
}

/// The latest checkpoint `replica` serves, once it has one.
fn latest_checkpoint(replica: &Replica) -> String {
    let mut note = String::new();
    eventually("a signed checkpoint", || {
        let (status, body) = call(&replica.api, "GET", "/v1/checkpoint", None);
        note = body;
        status == 200
    });
    note
}

#[test]
fn bundles_from_different_replicas_verify_against_one_checkpoint() {
    let pg = Postgres::start();
    pg.create_database("bundles");
    let url = pg.url("bundles");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    process::ok(
        &[
            "keygen",
            "--name",
            "replicas.example/audit",
            "--out",
            &file("ledger"),
        ],
        None,
    );
    let (key, trusted) = (file("ledger.key"), file("ledger.pub"));
    let cluster = Cluster::start(dir.path());
    // Every replica holds the key: whichever writes signs, each second with new entries.
    let signing = ["--signing-key", key.as_str(), "--checkpoint-interval", "1"];
    let first = Replica::start(&url, &cluster, &signing);
    eventually("the first writer", || first.ready_as("writer"));
    let follower = Replica::start(&url, &cluster, &signing);
    eventually("a follower", || follower.ready_as("follower"));
    let churn = Churn::start(cluster.sim());

    // The auditor keeps a checkpoint the first writer signed over some churn.
    let mut kept = String::new();
    eventually("a checkpoint over some churn", || {
        kept = latest_checkpoint(&first);
        size_and_root(&kept).0 >= 30
    });
    let (kept_size, kept_root) = size_and_root(&kept);
    std::fs::write(file("kept"), &kept).unwrap();

    // That writer dies; the follower takes over, signs on, and the dead one comes back
    // as a follower.
    first.kill();
    eventually("the follower to take over", || follower.ready_as("writer"));
    let writer = follower;
    let follower = Replica::start(&url, &cluster, &signing);
    eventually("the restarted replica to follow", || {
        follower.ready_as("follower")
    });
    let mut later = String::new();
    eventually("a checkpoint by the new writer", || {
        later = latest_checkpoint(&writer);
        size_and_root(&later).0 > kept_size
    });
    churn.stop();
    let (later_size, later_root) = size_and_root(&later);
    std::fs::write(file("later"), &later).unwrap();
    eventually("the follower to hold the later tree", || {
        follower.head().0 >= later_size
    });

    // The same range from the writer, from the follower (HTTP) and from the CLI on the
    // database: each carries the kept checkpoint itself, verifies offline against it,
    // and holds the same entries and proofs.
    let range = format!("from_seq=5&to_seq={kept_size}");
    let mut bundles = Vec::new();
    for (who, replica) in [("writer", &writer), ("follower", &follower)] {
        let (status, tar_bytes) =
            get_bytes(&replica.api, &format!("/v1/export?bundle=true&{range}"));
        assert_eq!(
            status,
            200,
            "{who}: {}",
            String::from_utf8_lossy(&tar_bytes)
        );
        let path = file(&format!("{who}.tar"));
        std::fs::write(&path, &tar_bytes).unwrap();
        bundles.push(path);
    }
    let cli = file("cli.tar");
    ok(
        &[
            "export",
            "--db",
            &url,
            "--bundle",
            &cli,
            "--from-seq",
            "5",
            "--to-seq",
            &kept_size.to_string(),
        ],
        None,
    );
    bundles.push(cli);
    let verify = |bundle: &str, previous: &str| {
        let summary = process::ok(
            &[
                "verify-export",
                bundle,
                "--trusted-key",
                &trusted,
                "--previous-checkpoint",
                previous,
                "--origin",
                "replicas.example/audit",
                "--output",
                "json",
            ],
            None,
        )
        .json();
        assert_eq!(summary["ok"], true, "{summary}");
        summary
    };
    let summaries: Vec<Value> = bundles.iter().map(|b| verify(b, &file("kept"))).collect();
    assert_eq!(summaries[0]["tree_size"], kept_size);
    assert_eq!(summaries[0]["from_seq"], 5);
    assert_eq!(summaries[0]["to_seq"], kept_size);
    assert_eq!(summaries[0]["previous_size"], kept_size);
    assert!(
        summaries.iter().all(|s| *s == summaries[0]),
        "{summaries:#?}"
    );
    let contents: Vec<_> = bundles
        .iter()
        .map(|b| members(&std::fs::read(b).unwrap()))
        .collect();
    for (bundle, files) in bundles.iter().zip(&contents) {
        assert_eq!(
            String::from_utf8_lossy(&files["checkpoint"]),
            kept,
            "{bundle} carries another checkpoint"
        );
        for name in ["entries.jsonl", "proofs.json"] {
            assert_eq!(files[name], contents[0][name], "{bundle}: {name} differs");
        }
    }

    // A later bundle from either replica proves the new writer's tree extends the kept
    // one (no fork across the failover): the auditor's next-quarter loop.
    let encoded: String = kept_root
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            other => char::from(other).to_string(),
        })
        .collect();
    let next = format!(
        "/v1/export?bundle=true&to_seq={later_size}&previous_size={kept_size}&previous_root={encoded}"
    );
    let mut next_summaries = Vec::new();
    for (who, replica) in [("writer", &writer), ("follower", &follower)] {
        let (status, tar_bytes) = get_bytes(&replica.api, &next);
        assert_eq!(
            status,
            200,
            "{who}: {}",
            String::from_utf8_lossy(&tar_bytes)
        );
        assert_eq!(
            String::from_utf8_lossy(&members(&tar_bytes)["checkpoint"]),
            later
        );
        let path = file(&format!("{who}-next.tar"));
        std::fs::write(&path, &tar_bytes).unwrap();
        next_summaries.push(verify(&path, &file("kept")));
    }
    assert_eq!(next_summaries[0], next_summaries[1]);
    assert_eq!(next_summaries[0]["root"], hex_of_base64(&later_root));

    // The database itself still holds both signed trees.
    for checkpoint in ["kept", "later"] {
        ok(
            &[
                "verify",
                "--db",
                &url,
                "--checkpoint",
                &file(checkpoint),
                "--trusted-key",
                &trusted,
            ],
            None,
        );
    }
}

/// A checkpoint's root line (base64) as the hex the bundle summary prints.
fn hex_of_base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
