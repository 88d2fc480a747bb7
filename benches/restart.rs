//! `claim-ledger serve` restarted against a cluster of 100k unchanged objects (issue 9):
//! how long until `/readyz` answers ready again, and what the restart appends (only its
//! `watch_gap` records: every listed object is already recorded at the same
//! resourceVersion). A load tool (`harness = false`): each phase runs once and prints its
//! numbers beside baselines of the same run.
//!
//! The cluster is the project's simulator, in this process on 127.0.0.1, preloaded with
//! `CLAIM_LEDGER_BENCH_SIM_BINDINGS` bound claims (default 25,000: claim, Sandbox, PVC and
//! pod each, so 100k objects). The service is the real binary (`claim-ledger serve`, as the
//! black-box tests run it) as a child process with a fresh sled ledger directory:
//!
//! 1. **Raw LIST**: the four paged lists a starting `serve` makes (pages of 500, as
//!    kube-runtime's watcher asks; pods metadata-only), through a kube client, timed.
//! 2. **Cold start**: `serve` on an empty ledger, from spawn until `/readyz` answers 200;
//!    stopped with SIGINT, it must exit 0. Its entries are counted by kind (`export`).
//! 3. **Restarts** (`CLAIM_LEDGER_BENCH_RESTARTS`, default 3): `serve` again on the same
//!    ledger, timed the same way, then stopped; the entries each one appended are counted
//!    by kind. Anything but `watch_gap` records is reported and fails the run: an object
//!    re-recorded on restart would be a product bug.
//!
//! 4. **PostgreSQL replicas** (a server the bench starts, as the tests do): `serve
//!    --replica` cold-started on an empty database (the writer), then a second one until
//!    it answers ready as a follower (the writer's whole log read); then the writer is
//!    stopped and the follower timed until it answers ready as the writer, which must
//!    append only `watch_gap` records. The resident memory of each at ready is what the
//!    replicated deploy overlay sizes from.
//!
//! The cluster's resourceVersion is checked unchanged from the first list to the end, so
//! the restarts really do meet the cluster the cold start recorded.
//!
//! `cargo bench --bench restart`; `cargo test --benches` runs it once, tiny (200 bindings,
//! one restart). Times are wall clock on whatever else the machine runs: compare the
//! numbers within one run. Each start also reports `serve`'s resident memory when it
//! answered ready and its peak until then (`VmRSS`, `VmHWM`): what deploy/ sizes from.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The black-box tests' child-process helpers: the binary's path and a plain HTTP client.
#[path = "../tests/it/support/postgres.rs"]
mod postgres;
#[path = "../tests/it/support/process.rs"]
mod process;
mod workload;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;
use sim::{SimConfig, Simulator};
use workload::{memory_of, setting};

/// How long a phase may take before the bench gives up (a cold start at 100k objects takes
/// seconds; a minute means something is stuck).
const PATIENCE: Duration = Duration::from_secs(120);

/// The bearer token file `serve` is given (`/readyz` itself needs none).
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

/// The resources a starting `serve` lists, in the versions discovery prefers (`v1beta1`)
/// and as its watcher reads them: pods as metadata only, the rest whole.
fn resources() -> Vec<(ApiResource, bool)> {
    let resource = |group: &str, kind: &str, plural: &str| ApiResource {
        group: group.into(),
        version: if group.is_empty() { "v1" } else { "v1beta1" }.into(),
        api_version: if group.is_empty() {
            "v1".into()
        } else {
            format!("{group}/v1beta1")
        },
        kind: kind.into(),
        plural: plural.into(),
    };
    vec![
        (resource("agents.x-k8s.io", "Sandbox", "sandboxes"), false),
        (
            resource(
                "extensions.agents.x-k8s.io",
                "SandboxClaim",
                "sandboxclaims",
            ),
            false,
        ),
        (
            resource("", "PersistentVolumeClaim", "persistentvolumeclaims"),
            false,
        ),
        (resource("", "Pod", "pods"), true),
    ]
}

/// Lists every object of the four resources in pages of 500, decoded as the watcher decodes
/// them; returns how many objects came back.
async fn list_all(client: &kube::Client) -> usize {
    let mut objects = 0;
    for (resource, metadata_only) in resources() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let mut params = ListParams::default().limit(500);
        loop {
            let next = if metadata_only {
                let page = api.list_metadata(&params).await.expect("list");
                objects += page.items.len();
                page.metadata.continue_
            } else {
                let page = api.list(&params).await.expect("list");
                objects += page.items.len();
                page.metadata.continue_
            };
            match next.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    objects
}

/// One run of `claim-ledger serve` until it is ready and stopped again.
struct Started {
    /// From spawn until the API printed its address (ledger opened, listener bound).
    listening: Duration,
    /// From spawn until `/readyz` first listed the watch streams (discovery done, the
    /// lists begun).
    discovered: Duration,
    /// From spawn until `/readyz` showed the first and the last stream synced (its list
    /// recorded, durable and diffed).
    synced: (Duration, Duration),
    /// From spawn until `/readyz` answered 200.
    ready: Duration,
    /// The head seq `serve` printed when it stopped.
    head: u64,
    /// `serve`'s resident memory when it answered ready, and its peak until then, in MiB.
    resident_mib: (u64, u64),
}

/// A running `claim-ledger serve`, its stdout read on a thread of its own; killed if
/// dropped before [`Serving::stop`] (a phase that failed leaves no process behind).
struct Serving {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    address: String,
    spawned: Instant,
    listening: Duration,
}

impl Serving {
    /// Starts `serve` on `db` (a directory or a `postgres://` URL) against the cluster of
    /// `kubeconfig`, with `extra` arguments, and waits until its API listens. Its log
    /// (stderr) goes to `log`.
    fn spawn(db: &str, kubeconfig: &Path, tokens: &Path, log: &Path, extra: &[&str]) -> Serving {
        let log = std::fs::File::create(log).expect("log file");
        let spawned = Instant::now();
        let mut child = Command::new(process::BIN)
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
            .args(["--api-token-file", tokens.to_str().expect("utf-8 path")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("PGPASSWORD", postgres::PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start claim-ledger serve");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let address = loop {
            let line = lines
                .recv_timeout(PATIENCE)
                .expect("serve printed its address");
            if line.contains("listening on") {
                break process::address_of(&line);
            }
        };
        Serving {
            child,
            lines,
            reader: Some(reader),
            address,
            listening: spawned.elapsed(),
            spawned,
        }
    }

    /// Polls `/readyz` until it answers 200 (in `role`, for a replica), timing from
    /// `since`; the head is left 0 until [`Serving::stop`].
    fn until_ready(&self, role: Option<&str>, since: Instant) -> Started {
        // Polled every 2 ms on fresh connections, as a kubelet's probe would ask: the
        // answer is seen at most that late. Its report also tells where the time went.
        let (mut discovered, mut synced) = (None, Vec::new());
        let ready = loop {
            let (status, body) = process::http(
                &self.address,
                "GET",
                "/readyz",
                None,
                None,
                Duration::from_secs(10),
            );
            let at = since.elapsed();
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            let report = &body["watchers"]["report"];
            if let Some(streams) = report["streams"].as_array() {
                if !streams.is_empty() {
                    discovered.get_or_insert(at);
                }
                let now_synced = streams.iter().filter(|s| s["synced"] == true).count();
                while synced.len() < now_synced {
                    synced.push(at);
                }
            }
            if status == 200 && role.is_none_or(|role| report["role"] == role) {
                break at;
            }
            assert!(since.elapsed() < PATIENCE, "serve was not ready in time");
            std::thread::sleep(Duration::from_millis(2));
        };
        let pid = self.child.id().to_string();
        Started {
            listening: self.listening,
            discovered: discovered.unwrap_or(ready),
            synced: (
                synced.first().copied().unwrap_or(ready),
                synced.last().copied().unwrap_or(ready),
            ),
            ready,
            head: 0,
            resident_mib: (
                memory_of(&pid, "VmRSS") >> 20,
                memory_of(&pid, "VmHWM") >> 20,
            ),
        }
    }

    /// Stops it with SIGINT, requires exit 0, and returns the head seq it printed.
    fn stop(mut self) -> u64 {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT failed");
        let status = self.child.wait().expect("wait for serve");
        assert!(status.success(), "serve exited with {status}");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.lines
            .try_iter()
            .find_map(|line| {
                line.strip_prefix("stopped; ledger head seq ")
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            })
            .expect("serve printed its head when it stopped")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // After `stop` it has exited and been waited for: this does nothing then.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `serve` on `db` against the cluster of `kubeconfig`, times it until ready, stops it
/// with SIGINT and requires exit 0. Its log (stderr) goes to `log`.
fn serve_until_ready(db: &Path, kubeconfig: &Path, tokens: &Path, log: &Path) -> Started {
    let db = db.to_str().expect("utf-8 path");
    let serving = Serving::spawn(db, kubeconfig, tokens, log, &[]);
    let mut started = serving.until_ready(None, serving.spawned);
    started.head = serving.stop();
    started
}

/// The entries of the ledger in `db` from `from_seq` on, counted by what they record
/// (`object:created`, `watch_gap:restart`, ...), read with `claim-ledger export`.
fn entries_by_kind(db: &str, from_seq: u64) -> BTreeMap<String, u64> {
    let output = Command::new(process::BIN)
        .args(["export", "--db", db])
        .env("PGPASSWORD", postgres::PASSWORD)
        .args(["--from-seq", &from_seq.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run claim-ledger export");
    assert!(output.status.success(), "export failed");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line: Value = serde_json::from_str(line).expect("an export line is JSON");
        let (record, body) = line["entry"]["change"]
            .as_object()
            .and_then(|change| change.iter().next())
            .expect("an entry records one change");
        // An object's change kind, a gap's reason: what tells a re-recorded object from
        // the gap a restart is expected to record.
        let detail = match record.as_str() {
            "object" => body["change"].as_str(),
            "watch_gap" => body["reason"].as_str(),
            _ => None,
        };
        let key = match detail {
            Some(detail) => format!("{record}:{detail}"),
            None => record.clone(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Where a start's time went, as `/readyz` showed it.
fn timeline(started: &Started) -> String {
    format!(
        "ledger opened and listening {:.3} s, lists begun {:.3} s, first list synced {:.3} s, last {:.3} s; resident at ready {} MiB, peak {} MiB",
        started.listening.as_secs_f64(),
        started.discovered.as_secs_f64(),
        started.synced.0.as_secs_f64(),
        started.synced.1.as_secs_f64(),
        started.resident_mib.0,
        started.resident_mib.1
    )
}

/// How many of the counted entries are of a kind that starts with `prefix`.
fn counted(counts: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    counts
        .iter()
        .filter(|(kind, _)| kind.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

fn show(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    match parts.is_empty() {
        true => "nothing".into(),
        false => parts.join(", "),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, tiny.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let bindings = match smoke {
        true => 200,
        false => setting("CLAIM_LEDGER_BENCH_SIM_BINDINGS", 25_000),
    };
    let restarts = match smoke {
        true => 1,
        false => setting("CLAIM_LEDGER_BENCH_RESTARTS", 3).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubeconfig, db, tokens) = (
        dir.path().join("kubeconfig"),
        dir.path().join("ledger"),
        dir.path().join("api-tokens"),
    );
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("token file");
    // Owner-only, as `serve` expects of a secret (it warns otherwise).
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the token file");

    let preloading = Instant::now();
    let simulator = Simulator::new(SimConfig {
        preload_bindings: bindings as usize,
        ..SimConfig::default()
    });
    let preload_time = preloading.elapsed();
    let cluster = runtime
        .block_on(simulator.serve_local())
        .expect("serve the simulator");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).expect("kubeconfig");
    let version = simulator.resource_version();
    let db_arg = db.to_str().expect("utf-8 path");

    // 1. The raw LIST of the same objects.
    let client = cluster.client();
    let listing = Instant::now();
    let listed = runtime.block_on(list_all(&client));
    let list_time = listing.elapsed();
    assert_eq!(
        listed as u64,
        4 * bindings,
        "every preloaded object is listed"
    );
    println!(
        "cluster: {bindings} bound claims preloaded in {:.2} s; raw LIST of its {listed} objects (4 resources, pages of 500, kube client, pods metadata-only): {:.3} s",
        preload_time.as_secs_f64(),
        list_time.as_secs_f64()
    );

    // 2. The cold start.
    let cold = serve_until_ready(&db, &kubeconfig, &tokens, &dir.path().join("cold.log"));
    let recorded = entries_by_kind(db_arg, 1);
    println!(
        "cold start (empty ledger) until /readyz ready: {:.3} s ({}): {:.1}x the raw LIST; recorded {} entries: {}",
        cold.ready.as_secs_f64(),
        timeline(&cold),
        cold.ready.as_secs_f64() / list_time.as_secs_f64(),
        cold.head,
        show(&recorded)
    );
    let objects = counted(&recorded, "object:");
    assert_eq!(objects, 4 * bindings, "the cold start records every object");

    // 3. Restarts on the same ledger, the cluster unchanged.
    let mut head = cold.head;
    let mut times = Vec::new();
    let mut unexpected = Vec::new();
    for run in 1..=restarts {
        let log = dir.path().join(format!("restart-{run}.log"));
        let restart = serve_until_ready(&db, &kubeconfig, &tokens, &log);
        let appended = entries_by_kind(db_arg, head + 1);
        let gaps = counted(&appended, "watch_gap");
        println!(
            "restart {run} (same ledger, unchanged cluster) until /readyz ready: {:.3} s ({}): {:.0}% of the cold start, {:.1}x the raw LIST; appended {}: {}",
            restart.ready.as_secs_f64(),
            timeline(&restart),
            100.0 * restart.ready.as_secs_f64() / cold.ready.as_secs_f64(),
            restart.ready.as_secs_f64() / list_time.as_secs_f64(),
            restart.head - head,
            show(&appended)
        );
        if gaps != restart.head - head {
            unexpected.push(format!("restart {run}: {}", show(&appended)));
        }
        head = restart.head;
        times.push(restart.ready);
    }
    times.sort();
    println!(
        "restart until ready, {restarts} run(s): best {:.3} s, worst {:.3} s (target ≤ 3 s at 100k objects)",
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );

    // 4. PostgreSQL replicas against the same cluster: a writer's cold start on an empty
    // database, a follower beside it, and the follower taking over when the writer stops.
    let pg = postgres::Postgres::start();
    pg.create_database("replicas");
    let url = pg.url("replicas");
    let replica = ["--replica", "--lease-seconds", "2"];
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let writer = Serving::spawn(&url, &kubeconfig, &tokens, &log("pg-writer"), &replica);
    let written = writer.until_ready(Some("writer"), writer.spawned);
    let follower = Serving::spawn(&url, &kubeconfig, &tokens, &log("pg-follower"), &replica);
    let following = follower.until_ready(Some("follower"), follower.spawned);
    let written_head = writer.stop();
    let stopped = Instant::now();
    let took_over = follower.until_ready(Some("writer"), stopped);
    let final_head = follower.stop();
    let appended = entries_by_kind(&url, written_head + 1);
    let mut recorded = entries_by_kind(&url, 1);
    for (kind, n) in &appended {
        if let Some(count) = recorded.get_mut(kind) {
            *count -= n;
        }
    }
    recorded.retain(|_, n| *n > 0);
    println!(
        "PostgreSQL: writer (`serve --replica`, empty database) until ready: {:.3} s ({}); head {written_head}: {}",
        written.ready.as_secs_f64(),
        timeline(&written),
        show(&recorded)
    );
    println!(
        "PostgreSQL: follower until ready (the writer's whole log read): {:.3} s; resident at ready {} MiB, peak {} MiB",
        following.ready.as_secs_f64(),
        following.resident_mib.0,
        following.resident_mib.1
    );
    println!(
        "PostgreSQL: the writer stopped, the follower ready as the writer {:.3} s later (lists synced after {:.3} s); resident {} MiB, peak {} MiB; appended {}: {}",
        took_over.ready.as_secs_f64(),
        took_over.synced.1.as_secs_f64(),
        took_over.resident_mib.0,
        took_over.resident_mib.1,
        final_head - written_head,
        show(&appended)
    );
    let objects = counted(&recorded, "object:");
    assert_eq!(
        objects,
        4 * bindings,
        "the PostgreSQL writer records every object"
    );
    let gaps = counted(&appended, "watch_gap");
    if gaps != final_head - written_head {
        unexpected.push(format!("the PostgreSQL takeover: {}", show(&appended)));
    }
    drop(pg);

    assert_eq!(
        simulator.resource_version(),
        version,
        "the cluster changed during the bench"
    );
    assert!(
        unexpected.is_empty(),
        "a restart or takeover over an unchanged cluster appended more than watch_gap records: {unexpected:?}"
    );
    runtime.block_on(async move {
        let _ = cluster.stop().await;
    });
}
