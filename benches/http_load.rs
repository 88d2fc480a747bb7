//! HTTP load on `POST /v1/identity/check`: the real API service (`api::Service`, plain HTTP
//! on 127.0.0.1) over a real sled ledger holding 100k live claim bindings, driven by a
//! closed-loop load generator on keep-alive connections in the same process, every request
//! carrying a bearer token checked against a token file, as in production. Prints
//! throughput and latency percentiles (see `BENCHMARKS.md`).
//!
//! Run: `cargo bench --bench http_load` (`CLAIM_LEDGER_BENCH_BINDINGS`,
//! `CLAIM_LEDGER_BENCH_CONNECTIONS`, `CLAIM_LEDGER_BENCH_SECONDS` override the defaults
//! 100000, 32 and 10).

mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{Auth, Freshness, ServeOptions, Service, WatchCounters};
use chrono::Utc;
use ledger::{Ledger, LedgerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use workload::{name, namespace, normalized, pod_uid, sandbox_id, setting, Lifecycles};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct AlwaysReady;

impl Freshness for AlwaysReady {
    fn ready(&self) -> bool {
        true
    }
    fn report(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn counters(&self) -> WatchCounters {
        WatchCounters::default()
    }
}

/// The process's resident set (Linux), in MiB; 0 where /proc is absent.
fn resident_mib() -> u64 {
    workload::resident_bytes() / (1024 * 1024)
}

fn filled_ledger(dir: &std::path::Path, bindings: u64) -> Ledger {
    // Snapshots every 200k entries: few while filling (at 100k bindings each is hundreds
    // of MB), and due again while the writer of the second phase appends.
    let config = LedgerConfig {
        snapshot_every: 200_000,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(dir, config).expect("open");
    let mut lifecycles = Lifecycles::new();
    let mut k = 0;
    while k < bindings {
        let mut events = Vec::new();
        for _ in 0..512.min(bindings - k) {
            lifecycles.bind(k, &mut events);
            k += 1;
        }
        ledger
            .append(normalized(events), Utc::now())
            .expect("append");
        ledger.flush().expect("flush");
    }
    ledger
}

/// The bearer token the load generator presents (the service reads it from a file).
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

/// A wrk script that posts checks of 4096 bound pods spread over the ledger, round robin,
/// with the bearer token.
fn wrk_script(bindings: u64) -> String {
    let mut script = String::from("local bodies = {\n");
    for i in 0..4096u64 {
        let k = i.wrapping_mul(0x9e37_79b9) % bindings;
        let body = format!(
            r#"{{"namespace":"{}","pod_name":"{}","pod_uid":"{}","sandbox_id":"{}"}}"#,
            namespace(k),
            name(k),
            pod_uid(k),
            sandbox_id(k)
        );
        script.push_str(&format!("  {body:?},\n"));
    }
    script.push_str(&format!(
        r#"}}
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {TOKEN}"}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/identity/check", headers, bodies[i])
end
"#
    ));
    script
}

/// Runs `wrk` against the service and prints its summary; says so and returns when wrk is
/// not installed (`apt-get install wrk`).
fn run_wrk(
    address: std::net::SocketAddr,
    script: &std::path::Path,
    connections: u64,
    seconds: u64,
) {
    let output = std::process::Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{address}/v1/identity/check"))
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
            return;
        }
        Err(e) => {
            eprintln!("wrk not run ({e}); install it (Debian: apt-get install wrk) for the out-of-process load");
            return;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "?".into())
    };
    let non_2xx = field("Non-2xx or 3xx responses:");
    println!(
        "wrk (2 threads, {connections} connections, {seconds}s, another process): {} checks/s, p50 {}, p99 {}, non-2xx {}",
        field("Requests/sec:"),
        field("50%"),
        field("99%"),
        if non_2xx == "?" { "0".into() } else { non_2xx }
    );
}

/// One check on a keep-alive connection; returns the status code.
async fn check(stream: &mut TcpStream, buffer: &mut Vec<u8>, body: &str) -> u16 {
    let request = format!(
        "POST /v1/identity/check HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return head[9..12].parse().unwrap_or(0);
        }
    }
}

/// `connections` closed-loop clients checking random bound pods for `seconds`: every
/// latency (µs) and how many answers were not `allow`.
async fn load(
    address: std::net::SocketAddr,
    connections: u64,
    bindings: u64,
    seconds: u64,
) -> (Vec<u64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for c in 0..connections {
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buffer = Vec::new();
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (c + 1);
            while Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let k = state % bindings;
                let body = format!(
                    r#"{{"namespace":"{}","pod_name":"{}","pod_uid":"{}","sandbox_id":"{}"}}"#,
                    namespace(k),
                    name(k),
                    pod_uid(k),
                    sandbox_id(k)
                );
                let sent = Instant::now();
                if check(&mut stream, &mut buffer, &body).await != 200
                    || !buffer.windows(17).any(|w| w == br#""decision":"allow"#)
                {
                    failures += 1;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for client in clients {
        let (mut l, f) = client.await.expect("client");
        latencies.append(&mut l);
        failures += f;
    }
    (latencies, failures)
}

/// Prints one phase's line and insists that every bound pod was allowed.
fn report(
    phase: &str,
    bindings: u64,
    connections: u64,
    seconds: u64,
    mut latencies: Vec<u64>,
    failures: u64,
) {
    latencies.sort_unstable();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "http check, {phase}: {bindings} live bindings, {connections} connections, {seconds}s: {} requests, {:.0} checks/s, p50 {} µs, p99 {} µs, max {} µs, {failures} not allowed",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        percentile(0.50),
        percentile(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    assert_eq!(failures, 0, "every bound pod must be allowed");
}

fn main() {
    let bindings = setting("CLAIM_LEDGER_BENCH_BINDINGS", 100_000);
    let connections = setting("CLAIM_LEDGER_BENCH_CONNECTIONS", 32);
    let seconds = setting("CLAIM_LEDGER_BENCH_SECONDS", 10);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, tiny.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (bindings, seconds) = if smoke { (200, 1) } else { (bindings, seconds) };

    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let ledger = filled_ledger(dir.path(), bindings);
    eprintln!(
        "ledger: {bindings} live bindings, {} entries, built in {:.1}s, resident {} MiB",
        ledger.head().seq,
        started.elapsed().as_secs_f64(),
        resident_mib()
    );
    let ledger = ledger::SharedLedger::new(ledger);
    let writer_ledger = ledger.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let tokens = dir.path().join("api-tokens");
        std::fs::write(&tokens, format!("{TOKEN}\n")).expect("token file");
        let service = Service::new(
            ledger,
            Arc::new(AlwaysReady),
            ServeOptions::new(Auth::Tokens(tokens)),
        )
        .expect("service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));

        let (latencies, failures) = load(address, connections, bindings, seconds).await;
        report(
            "no writer",
            bindings,
            connections,
            seconds,
            latencies,
            failures,
        );
        // Again while a writer appends batches of 256 changes (fresh lifecycles) as fast as
        // it can: the checks read the published view and must not wait for it.
        let stop_writer = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::spawn({
            let (ledger, stop_writer) = (writer_ledger, Arc::clone(&stop_writer));
            move || {
                let mut lifecycles = Lifecycles::new();
                let (mut k, mut written) = (10 * bindings, 0u64);
                let started = Instant::now();
                while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut events = Vec::with_capacity(256);
                    for _ in 0..32 {
                        lifecycles.bind(k, &mut events);
                        k += 1;
                    }
                    written += events.len() as u64;
                    let changes = normalized(events).map(schemas::Change::Object);
                    ledger.commit(changes, Utc::now()).expect("commit");
                }
                written as f64 / started.elapsed().as_secs_f64()
            }
        });
        let (latencies, failures) = load(address, connections, bindings, seconds).await;
        stop_writer.store(true, std::sync::atomic::Ordering::Relaxed);
        let rate = writer.join().expect("writer");
        report(
            &format!("while a writer appends {:.1}k entries/s", rate / 1e3),
            bindings,
            connections,
            seconds,
            latencies,
            failures,
        );
        // The same service under a load generator in another process, when `wrk` (Debian's
        // package) is installed: the in-process generator above shares the runtime with the
        // server, wrk does not.
        if !smoke {
            let script = dir.path().join("checks.lua");
            std::fs::write(&script, wrk_script(bindings)).expect("wrk script");
            run_wrk(address, &script, connections, seconds);
        }
        let _ = stop.send(());
        let _ = server.await;
    });
}
