//! HTTP load on `POST /v1/identity/check`: the real API service (`api::Service`, plain HTTP
//! on 127.0.0.1) over a real sled ledger holding 100k live claim bindings (snapshots at the
//! default interval, every 100k entries), every request carrying a bearer token checked
//! against a token file, as in production. Prints throughput and latency percentiles (see
//! `BENCHMARKS.md`), each phase with and without a writer appending fresh lifecycles:
//!
//! * **Closed loop**: keep-alive connections in the same process, each sending its next
//!   check as soon as the last one is answered: the most checks/s the 2 cores give, with
//!   latencies that are mostly the generator's own queueing at saturation.
//! * **Open loop**, as a gateway sees the service: checks issued on a fixed schedule
//!   (`CLAIM_LEDGER_BENCH_OPEN_RATES` checks/s, default 2000 and 5000) whatever the answers
//!   do, each latency measured from the check's *scheduled* send time, so a stall delays
//!   and counts every check scheduled during it (no coordinated omission). The writer of
//!   these phases is paced at `CLAIM_LEDGER_BENCH_WRITER_RATE` entries/s (default 12000).
//! * `wrk` in another process, closed loop, when installed.
//!
//! Run: `cargo bench --bench http_load` (`CLAIM_LEDGER_BENCH_BINDINGS`,
//! `CLAIM_LEDGER_BENCH_CONNECTIONS`, `CLAIM_LEDGER_BENCH_SECONDS`,
//! `CLAIM_LEDGER_BENCH_OPEN_CONNECTIONS` override the defaults 100000, 32, 10 and 16).

mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{Auth, Freshness, ServeOptions, Service, WatchCounters};
use chrono::Utc;
use ledger::{Ledger, LedgerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use workload::{
    append_bound, name, namespace, normalized, pod_uid, sandbox_id, setting, Lifecycles,
};

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

/// Entries between snapshots: the default, so every 10 s writer phase (≥ 100k entries at
/// ≥ 10k/s) has one due, encoded and written off the append path as in `serve`.
const SNAPSHOT_EVERY: u64 = 100_000;

fn filled_ledger(dir: &std::path::Path, bindings: u64) -> Ledger {
    let config = LedgerConfig {
        snapshot_every: SNAPSHOT_EVERY,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(dir, config).expect("open");
    append_bound(&mut ledger, &mut Lifecycles::new(), 0..bindings, 512);
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
    stream
        .write_all(check_request(body).as_bytes())
        .await
        .expect("write");
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some((head, _)) = whole_response(buffer) {
            return head[9..12].parse().unwrap_or(0);
        }
    }
}

/// The HTTP request of one check of `body`.
fn check_request(body: &str) -> String {
    format!(
        "POST /v1/identity/check HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The lowercased head and the body of the response in `buffer`, once all of it (as its
/// Content-Length says) has arrived.
fn whole_response(buffer: &[u8]) -> Option<(String, &[u8])> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (buffer.len() >= end + 4 + length).then(|| (head, &buffer[end + 4..]))
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
                let body = check_body(k);
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

/// The JSON body of a check of lifecycle `k`'s bound pod.
fn check_body(k: u64) -> String {
    format!(
        r#"{{"namespace":"{}","pod_name":"{}","pod_uid":"{}","sandbox_id":"{}"}}"#,
        namespace(k),
        name(k),
        pod_uid(k),
        sandbox_id(k)
    )
}

/// One check on a blocking keep-alive connection: whether it was answered 200 `allow`.
fn check_blocking(stream: &mut std::net::TcpStream, buffer: &mut Vec<u8>, body: &str) -> bool {
    use std::io::{Read, Write};
    stream
        .write_all(check_request(body).as_bytes())
        .expect("write");
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).expect("read");
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some((head, body)) = whole_response(buffer) {
            return head.starts_with("http/1.1 200")
                && body.windows(17).any(|w| w == br#""decision":"allow"#);
        }
    }
}

/// What an open-loop phase measured.
struct OpenLoop {
    /// Scheduled send time to answer, per check (µs).
    latencies: Vec<u64>,
    /// Actual send to answer, per check (µs): the service's share of the latency.
    service: Vec<u64>,
    /// How late a connection that was free sent its check (µs): the generator's own timer
    /// and scheduling lateness, already inside the latencies.
    oversleep: Vec<u64>,
    /// Checks not answered 200 `allow`.
    failures: u64,
}

/// `rate` checks/s for `seconds` on a fixed schedule, over `connections` keep-alive
/// connections, one blocking thread each (`std::thread::sleep` is precise to tens of µs;
/// tokio's timer rounds up to whole milliseconds, which would swamp a 1 ms target).
/// Connection `c` sends checks `c`, `c + connections`, ... of the schedule; a check is sent
/// at its time, or at once if its connection is still waiting for an earlier answer, and
/// its latency runs from its scheduled time either way.
fn open_loop(
    address: std::net::SocketAddr,
    rate: u64,
    connections: u64,
    bindings: u64,
    seconds: u64,
) -> OpenLoop {
    let total = rate * seconds;
    // Every thread connects first: the schedule starts once all are ready.
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(address).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut buffer = Vec::new();
                let mut result = OpenLoop {
                    latencies: Vec::new(),
                    service: Vec::new(),
                    oversleep: Vec::new(),
                    failures: 0,
                };
                let mut i = c;
                while i < total {
                    let scheduled = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    let now = Instant::now();
                    let free_in_time = now < scheduled;
                    if free_in_time {
                        std::thread::sleep(scheduled - now);
                    }
                    let sent = Instant::now();
                    let k = i.wrapping_mul(0x9e37_79b9) % bindings;
                    if !check_blocking(&mut stream, &mut buffer, &check_body(k)) {
                        result.failures += 1;
                    }
                    result
                        .latencies
                        .push(scheduled.elapsed().as_micros() as u64);
                    result.service.push(sent.elapsed().as_micros() as u64);
                    if free_in_time {
                        result
                            .oversleep
                            .push(sent.duration_since(scheduled).as_micros() as u64);
                    }
                    i += connections;
                }
                result
            })
        })
        .collect();
    let mut all = OpenLoop {
        latencies: Vec::with_capacity(total as usize),
        service: Vec::with_capacity(total as usize),
        oversleep: Vec::new(),
        failures: 0,
    };
    for thread in threads {
        let mut one = thread.join().expect("open-loop connection");
        all.latencies.append(&mut one.latencies);
        all.service.append(&mut one.service);
        all.oversleep.append(&mut one.oversleep);
        all.failures += one.failures;
    }
    all
}

/// Prints one open-loop phase's line and insists that every bound pod was allowed.
fn report_open(phase: &str, rate: u64, connections: u64, seconds: u64, mut run: OpenLoop) {
    run.latencies.sort_unstable();
    run.service.sort_unstable();
    run.oversleep.sort_unstable();
    let at = |v: &[u64], p: f64| match v.is_empty() {
        true => 0,
        false => v[((v.len() as f64 * p) as usize).min(v.len() - 1)],
    };
    println!(
        "http check, open loop {rate}/s, {phase}: {connections} connections, {seconds}s: {} requests, latency from the scheduled send: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; from the actual send: p50 {} µs, p99 {} µs, max {} µs; generator's own lateness p99 {} µs, max {} µs; {} not allowed",
        run.latencies.len(),
        at(&run.latencies, 0.50),
        at(&run.latencies, 0.99),
        at(&run.latencies, 0.999),
        at(&run.latencies, 1.0),
        at(&run.service, 0.50),
        at(&run.service, 0.99),
        at(&run.service, 1.0),
        at(&run.oversleep, 0.99),
        at(&run.oversleep, 1.0),
        run.failures
    );
    assert_eq!(run.failures, 0, "every bound pod must be allowed");
}

/// A thread committing fresh lifecycles (batches of 256 changes) until stopped: as fast as
/// it can, or paced at `rate` entries/s.
struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(f64, u64)>,
    ledger: ledger::SharedLedger,
    head_before: u64,
}

impl Writer {
    /// Starts writing lifecycles from `first` on (uids never used before).
    fn start(ledger: ledger::SharedLedger, first: u64, rate: Option<f64>) -> Writer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let head_before = ledger.view().head().seq;
        let thread = std::thread::spawn({
            let (ledger, stop) = (ledger.clone(), Arc::clone(&stop));
            move || {
                let mut lifecycles = Lifecycles::new();
                let (mut k, mut written) = (first, 0u64);
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(rate) = rate {
                        // Behind schedule it writes at once: the pace is a ceiling.
                        let due = started + Duration::from_secs_f64(written as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let mut events = Vec::with_capacity(256);
                    for _ in 0..32 {
                        lifecycles.bind(k, &mut events);
                        k += 1;
                    }
                    written += events.len() as u64;
                    let changes = normalized(events).map(schemas::Change::Object);
                    ledger.commit(changes, Utc::now()).expect("commit");
                }
                (written as f64 / started.elapsed().as_secs_f64(), k)
            }
        });
        Writer {
            stop,
            thread,
            ledger,
            head_before,
        }
    }

    /// Stops it: (entries/s, the next unused lifecycle, snapshots that fell due).
    fn stop(self) -> (f64, u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (rate, next) = self.thread.join().expect("writer");
        let head = self.ledger.view().head().seq;
        let snapshots = head / SNAPSHOT_EVERY - self.head_before / SNAPSHOT_EVERY;
        (rate, next, snapshots)
    }
}

fn main() {
    let bindings = setting("CLAIM_LEDGER_BENCH_BINDINGS", 100_000);
    let connections = setting("CLAIM_LEDGER_BENCH_CONNECTIONS", 32);
    let seconds = setting("CLAIM_LEDGER_BENCH_SECONDS", 10);
    let open_connections = setting("CLAIM_LEDGER_BENCH_OPEN_CONNECTIONS", 16);
    let writer_rate = setting("CLAIM_LEDGER_BENCH_WRITER_RATE", 12_000) as f64;
    let open_rates: Vec<u64> = std::env::var("CLAIM_LEDGER_BENCH_OPEN_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2_000, 5_000]);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, tiny.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (bindings, seconds, open_rates) = match smoke {
        true => (200, 1, vec![200]),
        false => (bindings, seconds, open_rates),
    };

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
        let writer = Writer::start(writer_ledger.clone(), 10 * bindings, None);
        let (latencies, failures) = load(address, connections, bindings, seconds).await;
        let (rate, mut next_lifecycle, snapshots) = writer.stop();
        report(
            &format!(
                "while a writer appends {:.1}k entries/s ({snapshots} snapshot(s) due)",
                rate / 1e3
            ),
            bindings,
            connections,
            seconds,
            latencies,
            failures,
        );
        // Open loop, as a gateway sees the service: a fixed rate whatever the answers do,
        // without and then with a writer paced at `writer_rate` entries/s.
        for &rate in &open_rates {
            let run = tokio::task::spawn_blocking(move || {
                open_loop(address, rate, open_connections, bindings, seconds)
            })
            .await
            .expect("open loop");
            report_open("no writer", rate, open_connections, seconds, run);
            let writer = Writer::start(writer_ledger.clone(), next_lifecycle, Some(writer_rate));
            let run = tokio::task::spawn_blocking(move || {
                open_loop(address, rate, open_connections, bindings, seconds)
            })
            .await
            .expect("open loop");
            let (written, next, snapshots) = writer.stop();
            next_lifecycle = next;
            report_open(
                &format!(
                    "while a writer appends {:.1}k entries/s ({snapshots} snapshot(s) due)",
                    written / 1e3
                ),
                rate,
                open_connections,
                seconds,
                run,
            );
        }
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
