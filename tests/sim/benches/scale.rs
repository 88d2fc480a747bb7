//! The cluster simulator at scale (issue 9): what its HTTP API costs as the number of stored
//! objects grows, measured over loopback with a minimal HTTP/1.1 client (keep-alive, bodies
//! read as bytes: the client decodes nothing it does not need, so the numbers are the
//! server's).
//!
//! * `load`: one-shot timings, printed before criterion starts: 25k SandboxClaims POSTed one
//!   after another into an empty cluster with controllers on (each bound cold: claim,
//!   Sandbox, PVC, pod, so 100k objects), with the cost per create as the store grows; then
//!   100k pods POSTed on 4 connections with controllers off; then the bulk-load path
//!   ([`sim::Simulator::preload_bound_claims`]) for the same 25k bindings.
//! * `create/pod/N`, `create/claim/N`: one POST into a cluster preloaded with N objects (N/4
//!   bound claims), controllers on. A pod is one object; a claim is bound before its POST
//!   answers (4 objects). Created objects are deleted outside the timing every 256 creates,
//!   so the store stays at N.
//! * `list/pods/full`, `list/pods/paged500`: every pod of a 100k-pod cluster in one LIST, and
//!   in pages of 500 (`limit` + `continue`).
//! * `list/restart_4x25k_paged500`: what a restarted `serve` asks of a 100k-object cluster:
//!   all SandboxClaims, Sandboxes, pods and PVCs (25k each) in pages of 500, as
//!   kube-runtime's watcher lists by default.
//! * `watch/resume_recent/N`: a WATCH from a resourceVersion 64 events back, until those
//!   64 events have arrived, in a cluster of N objects.
//!
//! Run: `cargo bench -p sim --bench scale` (`CLAIM_LEDGER_BENCH_SIM_OBJECTS`
//! changes the largest size, default 100000; `CLAIM_LEDGER_BENCH_SIM_LOAD=0` skips the
//! one-shot load timings).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::{json, Value};
use sim::{LocalSimulator, Propagation, Resource, SimConfig, Simulator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

// The same allocator as the `claim-ledger` binary, whose `sim` command serves the simulator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLAIMS: &str = "/apis/extensions.agents.x-k8s.io/v1beta1";
const SANDBOXES: &str = "/apis/agents.x-k8s.io/v1beta1";
/// Creates between two clean-ups in the create benchmarks.
const CREATE_CHUNK: u64 = 256;
/// How far back a resumed watch starts.
const RESUME_EVENTS: usize = 64;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves `sim` on loopback until the result is dropped.
fn serve(runtime: &Runtime, sim: Simulator) -> LocalSimulator {
    runtime
        .block_on(sim.serve_local())
        .expect("serve on loopback")
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: &[u8]) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: sim\r\naccept: application/json\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let w = self.stream.get_mut();
        w.write_all(head.as_bytes()).await.expect("write");
        w.write_all(body).await.expect("write");
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("read");
        line
    }

    /// The status code and whether the body is chunked (else its length).
    async fn head(&mut self) -> (u16, Option<usize>) {
        let status = self.line().await;
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut length = Some(0);
        loop {
            let line = self.line().await;
            let line = line.trim_end();
            if line.is_empty() {
                return (code, length);
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                length = None;
            }
        }
    }

    /// The next chunk of a chunked body (empty at the end).
    async fn chunk(&mut self) -> Vec<u8> {
        let size = usize::from_str_radix(self.line().await.trim(), 16).unwrap_or(0);
        let mut data = vec![0; size];
        self.stream.read_exact(&mut data).await.expect("chunk");
        self.line().await;
        data
    }

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.send(method, path, body).await;
        let (code, length) = self.head().await;
        let body = match length {
            Some(n) => {
                let mut data = vec![0; n];
                self.stream.read_exact(&mut data).await.expect("body");
                data
            }
            None => {
                let mut data = Vec::new();
                loop {
                    let chunk = self.chunk().await;
                    if chunk.is_empty() {
                        break data;
                    }
                    data.extend(chunk);
                }
            }
        };
        (code, body)
    }

    async fn post(&mut self, path: &str, object: &Value) {
        let (code, body) = self
            .request("POST", path, object.to_string().as_bytes())
            .await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    }

    /// Every object of a LIST at `path`, in pages of `limit` (0: one page); returns the count.
    async fn list(&mut self, path: &str, limit: usize) -> usize {
        #[derive(serde::Deserialize)]
        struct Page {
            metadata: Meta,
            items: Vec<serde::de::IgnoredAny>,
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(default, rename = "continue")]
            next: Option<String>,
        }
        let mut count = 0;
        let mut next: Option<String> = None;
        loop {
            let query = match (&next, limit) {
                (_, 0) => String::new(),
                (None, l) => format!("?limit={l}"),
                (Some(token), l) => format!("?limit={l}&continue={token}"),
            };
            let (code, body) = self.request("GET", &format!("{path}{query}"), b"").await;
            assert_eq!(code, 200);
            let page: Page = serde_json::from_slice(&body).expect("a list");
            count += page.items.len();
            match page.metadata.next.filter(|t| !t.is_empty()) {
                Some(token) => next = Some(token),
                None => return count,
            }
        }
    }

    /// Opens a watch from `rv` and reads `events` lines; the connection is spent.
    async fn watch(mut self, path: &str, rv: u64, events: usize) {
        self.send("GET", &format!("{path}?watch=1&resourceVersion={rv}"), b"")
            .await;
        let (code, _) = self.head().await;
        assert_eq!(code, 200);
        let mut seen = 0;
        while seen < events {
            let chunk = self.chunk().await;
            assert!(!chunk.is_empty(), "the watch ended");
            seen += chunk.iter().filter(|b| **b == b'\n').count();
        }
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "agent", "image": "ghcr.io/openshell/agent-runtime:0.9.3"}]}})
}

fn claim(name: &str) -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": name}, "spec": {"warmPoolRef": {"name": "none"}}})
}

fn objects(sim: &Simulator) -> usize {
    Resource::ALL.iter().map(|r| sim.list(*r, None).len()).sum()
}

/// A cluster with `objects` objects: `objects / 4` preloaded bound claims.
fn preloaded(objects: usize) -> Simulator {
    Simulator::new(SimConfig {
        preload_bindings: objects / 4,
        ..SimConfig::default()
    })
}

fn load_report(runtime: &Runtime, total: usize) {
    let bindings = total / 4;
    let served = serve(runtime, Simulator::new(SimConfig::default()));
    let step = (bindings / 4).max(1);
    println!("load: {bindings} SandboxClaims POSTed on one connection, controllers on");
    let mut loading = Duration::ZERO;
    runtime.block_on(async {
        let mut conn = Conn::open(served.addr()).await;
        let path = format!("{CLAIMS}/namespaces/load/sandboxclaims");
        let mut done = 0;
        while done < bindings {
            let batch = Instant::now();
            let end = (done + step).min(bindings);
            for i in done..end {
                conn.post(&path, &claim(&format!("claim-{i:06}"))).await;
            }
            done = end;
            let spent = batch.elapsed();
            loading += spent;
            println!(
                "  {:>7} objects stored: {:>7.1} µs per claim create (last {} creates)",
                objects(served.simulator()),
                spent.as_secs_f64() * 1e6 / step as f64,
                step
            );
        }
    });
    println!(
        "  {} objects loaded through HTTP in {:.2} s",
        objects(served.simulator()),
        loading.as_secs_f64()
    );
    drop(served);

    let served = serve(
        runtime,
        Simulator::new(SimConfig {
            controllers: false,
            ..SimConfig::default()
        }),
    );
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|c| {
                let addr = served.addr();
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await;
                    for i in (c..total).step_by(4) {
                        conn.post("/api/v1/namespaces/load/pods", &pod(&format!("pod-{i:06}")))
                            .await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("loader");
        }
    });
    let spent = started.elapsed();
    println!(
        "load: {} pods POSTed on 4 connections, controllers off, in {:.2} s",
        objects(served.simulator()),
        spent.as_secs_f64()
    );
    drop(served);

    let started = Instant::now();
    let sim = preloaded(total);
    let spent = started.elapsed();
    println!(
        "load: SimConfig::preload_bindings = {bindings}: {} objects in {:.2} s",
        objects(&sim),
        spent.as_secs_f64()
    );
}

fn bench_scale(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let largest = setting("CLAIM_LEDGER_BENCH_SIM_OBJECTS", 100_000);
    if setting("CLAIM_LEDGER_BENCH_SIM_LOAD", 1) != 0 {
        load_report(&runtime, largest);
    }
    let sizes: Vec<usize> = [1_000, 10_000, 100_000]
        .into_iter()
        .filter(|n| *n < largest)
        .chain([largest])
        .collect();
    let clusters: Vec<(usize, LocalSimulator)> = sizes
        .iter()
        .map(|n| (*n, serve(&runtime, preloaded(*n))))
        .collect();

    let mut group = c.benchmark_group("create");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for (n, served) in &clusters {
        let mut serial = 0u64;
        group.bench_with_input(BenchmarkId::new("pod", n), served, |b, served| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut conn = Conn::open(served.addr()).await;
                    let mut spent = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let chunk = left.min(CREATE_CHUNK);
                        let names: Vec<String> = (0..chunk)
                            .map(|i| format!("bench-{}", serial + i))
                            .collect();
                        serial += chunk;
                        let started = Instant::now();
                        for name in &names {
                            conn.post("/api/v1/namespaces/bench/pods", &pod(name)).await;
                        }
                        spent += started.elapsed();
                        for name in &names {
                            let _ = served.simulator().delete(
                                Resource::Pod,
                                "bench",
                                name,
                                Propagation::Background,
                            );
                        }
                        left -= chunk;
                    }
                    spent
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("claim", n), served, |b, served| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut conn = Conn::open(served.addr()).await;
                    let path = format!("{CLAIMS}/namespaces/bench/sandboxclaims");
                    let mut spent = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let chunk = left.min(CREATE_CHUNK);
                        let names: Vec<String> = (0..chunk)
                            .map(|i| format!("bench-{}", serial + i))
                            .collect();
                        serial += chunk;
                        let started = Instant::now();
                        for name in &names {
                            conn.post(&path, &claim(name)).await;
                        }
                        spent += started.elapsed();
                        for name in &names {
                            let _ = served.simulator().delete_claim(
                                "bench",
                                name,
                                Propagation::Background,
                            );
                        }
                        left -= chunk;
                    }
                    spent
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("watch");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (n, served) in &clusters {
        // Recent history: RESUME_EVENTS pod changes after `from`.
        let from = served.simulator().resource_version();
        let pods = served.simulator().list(Resource::Pod, None);
        for p in pods.iter().take(RESUME_EVENTS) {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("");
            served
                .simulator()
                .merge_patch(
                    Resource::Pod,
                    ns,
                    name,
                    json!({"metadata": {"labels": {"bench": "touched"}}}),
                    false,
                )
                .expect("patch");
        }
        group.bench_with_input(BenchmarkId::new("resume_recent", n), served, |b, served| {
            b.iter(|| {
                runtime.block_on(async {
                    Conn::open(served.addr())
                        .await
                        .watch("/api/v1/pods", from, RESUME_EVENTS)
                        .await
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("list");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    let (n, restart) = clusters.last().expect("a cluster");
    group.throughput(Throughput::Elements(*n as u64));
    group.bench_function(format!("restart_4x{}k_paged500", n / 4000), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut conn = Conn::open(restart.addr()).await;
                let mut count = 0;
                for path in [
                    format!("{CLAIMS}/sandboxclaims"),
                    format!("{SANDBOXES}/sandboxes"),
                    "/api/v1/pods".to_string(),
                    "/api/v1/persistentvolumeclaims".to_string(),
                ] {
                    count += conn.list(&path, 500).await;
                }
                assert!(count >= *n, "{count} < {n}");
            })
        })
    });
    drop(clusters);
    // A cluster of `largest` pods (controllers off), for lists of one resource.
    let sim = Simulator::new(SimConfig {
        controllers: false,
        ..SimConfig::default()
    });
    for i in 0..largest {
        let mut p = pod(&format!("pod-{i:06}"));
        p["metadata"]["namespace"] = "list".into();
        sim.create(p).expect("pod");
    }
    let served = serve(&runtime, sim);
    group.throughput(Throughput::Elements(largest as u64));
    for (name, limit) in [("pods/full", 0), ("pods/paged500", 500)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut conn = Conn::open(served.addr()).await;
                    assert_eq!(conn.list("/api/v1/pods", limit).await, largest);
                })
            })
        });
    }
    group.finish();
}

/// The criterion entry points (a private module: `criterion_group!` declares a `pub fn`).
mod harness {
    criterion::criterion_group!(benches, super::bench_scale);
}

criterion_main!(harness::benches);
