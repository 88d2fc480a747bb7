//! The PostgreSQL store and replicas, against a real server the bench starts itself (as
//! the tests do, see `tests/it/support/postgres.rs`): a load tool that prints its results.
//!
//! * **append**: durable appends of 1024 fresh pod changes per batch (`Ledger::append` +
//!   `Ledger::flush`: one transaction) beside the store alone committing the same records
//!   (the same keys and stored bytes, one transaction through `Store::commit`: the raw
//!   insert of the same bytes into the same server), in entries/s; both on the same server
//!   in the same run, so the ratio is the ledger's overhead.
//! * **follow**: a follower applying what a writer commits, 1024 entries at a time: the
//!   time from the writer's commit returning to the follower having verified and applied
//!   it (p50, p99), with the follower polling as fast as it can; `serve` polls every 200 ms,
//!   which adds up to that much.
//! * **check on a follower**: `Ledger::check` latency (p50, p99, max) on a follower while
//!   it applies the writer's batches, holding the follower's lock as `serve` does.
//! * **failover**: from the writer's session ending (its store dropped: a crash) to the
//!   first entry appended by its successor, which polls for the lock every 100 ms.
//! * **follow as `serve` does**: the same lag, with the writer committing 16 entries every
//!   37 ms and the follower applying between waits as `serve --replica` does: sleeping its
//!   200 ms poll (how `serve` followed before notifications), then woken by the writer's
//!   `NOTIFY` with the same 200 ms poll as fallback (how it follows now); both in one run.
//! * **appends beside a snapshot**: small durable commits through the store (an entry and
//!   the head, as a single-entry append writes) while `Store::put_snapshot` writes a
//!   snapshot of 256 MiB through the same store, and with nothing else running: latency
//!   p50, p99 and max; and how long the snapshot took to write, and to read back streamed.
//!
//! Run: `cargo bench --bench replicas` (`CLAIM_LEDGER_REPLICA_BATCHES`, default 40;
//! `CLAIM_LEDGER_REPLICA_SNAPSHOT_MB`, default 256). Without `--bench` (`cargo test
//! --benches`) it runs once at a smoke size: 2 batches, a snapshot of 8 MiB.

#[path = "../tests/it/support/postgres.rs"]
mod postgres;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger::store::Store;
use ledger::{CheckRequest, Ledger, LedgerConfig};
use schemas::{normalize, ObjectChange, WatchEventType};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 1024;

fn pod(n: u64) -> ObjectChange {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{n}"), "namespace": "bench", "uid": format!("pod-{n:012}"),
                     "resourceVersion": n.to_string(),
                     "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                                          "name": format!("s{n}"), "uid": format!("sandbox-{n:012}"), "controller": true}]}});
    normalize(WatchEventType::Added, &object).unwrap().unwrap()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at]
}

fn config(password: &Path) -> LedgerConfig {
    LedgerConfig {
        replica: true,
        password_file: Some(password.to_path_buf()),
        lease: Some(Duration::from_secs(3)),
        snapshot_every: 0,
        ..LedgerConfig::default()
    }
}

/// The value of environment variable `name`, else `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (batches, snapshot_mb, checks) = match smoke {
        true => (2, 8, 200),
        false => (
            setting("CLAIM_LEDGER_REPLICA_BATCHES", 40),
            setting("CLAIM_LEDGER_REPLICA_SNAPSHOT_MB", 256),
            20_000,
        ),
    };
    let pg = postgres::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, postgres::PASSWORD).unwrap();
    let at = Utc::now();

    // append: the ledger, then the store alone with the same records.
    pg.create_database("append");
    let url = pg.url("append");
    let mut writer = Ledger::open(Path::new(&url), config(&password)).unwrap();
    let started = Instant::now();
    for batch in 0..batches {
        writer
            .append((batch * BATCH + 1..=(batch + 1) * BATCH).map(pod), at)
            .unwrap();
        writer.flush().unwrap();
    }
    let ledger_rate = (batches * BATCH) as f64 / started.elapsed().as_secs_f64();
    drop(writer);
    pg.create_database("raw");
    let raw_url = pg.url("raw");
    let source = ledger::store::PostgresStore::open(
        &url,
        &ledger::store::postgres::PostgresOptions {
            password_file: Some(password.clone()),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let records: Vec<(Vec<u8>, Vec<u8>)> = source
        .scan(
            &ledger::store::keys::seq_key(ledger::store::keys::ENTRY, 0),
            &ledger::store::keys::seq_key(ledger::store::keys::ENTRY, u64::MAX),
            false,
        )
        .map(Result::unwrap)
        .collect();
    drop(source);
    let raw = ledger::store::PostgresStore::open(
        &raw_url,
        &ledger::store::postgres::PostgresOptions {
            create: true,
            writer: true,
            password_file: Some(password.clone()),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let started = Instant::now();
    for chunk in records.chunks(BATCH as usize) {
        let mut batch = ledger::store::Batch::default();
        for (key, value) in chunk {
            batch.insert(key.clone(), value.clone());
        }
        raw.commit(batch).unwrap();
        raw.flush().unwrap();
    }
    let raw_rate = records.len() as f64 / started.elapsed().as_secs_f64();
    drop(raw);
    println!(
        "append, batch {BATCH}: ledger {ledger_rate:.0} entries/s, raw store commit of the same records {raw_rate:.0}/s: {:.0}%",
        100.0 * ledger_rate / raw_rate
    );

    // follow and check on a follower: a writer thread appends while the follower applies.
    pg.create_database("follow");
    let url = pg.url("follow");
    let mut writer = Ledger::open(Path::new(&url), config(&password)).unwrap();
    writer.append((1..=BATCH).map(pod), at).unwrap();
    writer.flush().unwrap();
    let follower = Arc::new(Mutex::new(
        Ledger::open(Path::new(&url), config(&password)).unwrap(),
    ));
    assert!(!follower.lock().unwrap().is_writer());
    follower.lock().unwrap().follow().unwrap();
    let committed: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let writing = std::thread::spawn({
        let committed = Arc::clone(&committed);
        move || {
            for batch in 1..=batches {
                writer
                    .append((batch * BATCH + 1..=(batch + 1) * BATCH).map(pod), at)
                    .unwrap();
                writer.flush().unwrap();
                committed
                    .lock()
                    .unwrap()
                    .push((writer.head().seq, Instant::now()));
                std::thread::sleep(Duration::from_millis(20));
            }
            writer
        }
    });
    let checking = std::thread::spawn({
        let follower = Arc::clone(&follower);
        move || {
            let mut latencies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut n = 0u64;
            while latencies.len() < checks && Instant::now() < deadline {
                n += 1;
                let request = CheckRequest {
                    namespace: "bench".into(),
                    pod_name: format!("p{}", n % BATCH + 1),
                    pod_uid: format!("pod-{:012}", n % BATCH + 1),
                    ..CheckRequest::default()
                };
                let started = Instant::now();
                let decision = follower.lock().unwrap().check(&request, true);
                latencies.push(started.elapsed());
                std::hint::black_box(decision);
            }
            latencies
        }
    });
    let mut lags = Vec::new();
    let target = (batches + 1) * BATCH;
    let mut seen = 0;
    loop {
        let head = {
            let mut follower = follower.lock().unwrap();
            follower.follow().unwrap();
            follower.head().seq
        };
        let now = Instant::now();
        let committed = committed.lock().unwrap();
        for &(seq, at) in committed.iter().skip(seen) {
            if seq <= head {
                lags.push(now - at);
                seen += 1;
            }
        }
        drop(committed);
        if head >= target {
            break;
        }
    }
    let writer = writing.join().unwrap();
    let mut checks = checking.join().unwrap();
    println!(
        "follow, batches of {BATCH}: lag from commit to applied p50 {:?} p99 {:?} ({} batches)",
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        lags.len()
    );
    println!(
        "check on a follower while it applies the writer's batches: p50 {:?} p99 {:?} max {:?} ({} checks)",
        percentile(&mut checks, 0.5),
        percentile(&mut checks, 0.99),
        checks.iter().max().unwrap(),
        checks.len()
    );

    // failover: the writer's session ends; the follower polls for the lock.
    let died = Instant::now();
    drop(writer);
    let mut successor = Arc::try_unwrap(follower)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    while !successor.try_promote().unwrap() {
        std::thread::sleep(Duration::from_millis(100));
    }
    successor.append([pod(target + 1)], at).unwrap();
    successor.flush().unwrap();
    println!(
        "failover: writer gone to the successor's first append {:?}",
        died.elapsed()
    );
    drop(successor);

    for (name, notified) in [("polling every 200 ms", false), ("notified", true)] {
        let database = format!("wake_{notified}");
        pg.create_database(&database);
        let mut lags = serve_like_lag(&pg.url(&database), &password, batches, notified);
        println!(
            "follow as serve does, {name}: lag from commit to applied p50 {:?} p99 {:?} ({} commits of 16)",
            percentile(&mut lags, 0.5),
            percentile(&mut lags, 0.99),
            lags.len()
        );
    }

    pg.create_database("snapshot");
    appends_beside_a_snapshot(&pg.url("snapshot"), &password, (snapshot_mb as usize) << 20);
}

/// Durable appends through the store (as `Ledger::append` + `flush` of one entry writes:
/// its `E` record and the head, one transaction) beside a snapshot of `size` bytes that
/// `Store::put_snapshot` writes through the same store, and alone.
fn appends_beside_a_snapshot(url: &str, password: &Path, size: usize) {
    use ledger::store::{keys, Batch};
    let store = ledger::store::PostgresStore::open(
        url,
        &ledger::store::postgres::PostgresOptions {
            create: true,
            writer: true,
            password_file: Some(password.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let mut seq = 0u64;
    let mut append = || {
        seq += 1;
        let mut batch = Batch::default();
        batch.insert(keys::seq_key(keys::ENTRY, seq), vec![0x5a; 600]);
        batch.insert(
            keys::HEAD,
            [seq.to_be_bytes().as_slice(), &[7; 32]].concat(),
        );
        let started = Instant::now();
        store.commit(batch).unwrap();
        store.flush().unwrap();
        started.elapsed()
    };
    let mut alone: Vec<Duration> = (0..300).map(|_| append()).collect();
    // About as compressible as a snapshot's MessagePack: records of names and uids.
    let mut snapshot = Vec::with_capacity(size + 200);
    let mut n = 0u64;
    while snapshot.len() < size {
        n += 1;
        snapshot.extend_from_slice(
            format!("pod-{n:08}\u{a4}bench\u{b0}sandbox-{n:012}\u{d9}\u{24}{n:036}").as_bytes(),
        );
    }
    snapshot.truncate(size);
    let (mut beside, written) = std::thread::scope(|scope| {
        let writing = scope.spawn(|| {
            let started = Instant::now();
            store.put_snapshot(1, &snapshot).unwrap();
            started.elapsed()
        });
        let mut beside = Vec::new();
        while !writing.is_finished() {
            beside.push(append());
            std::thread::sleep(Duration::from_millis(2));
        }
        (beside, writing.join().unwrap())
    });
    let started = Instant::now();
    let mut stream = store.snapshot_reader(1).unwrap().unwrap();
    let read = std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
    let streamed = started.elapsed();
    assert_eq!(read as usize, size);
    let mb = size as f64 / (1 << 20) as f64;
    println!(
        "appends (one entry and the head each) alone: p50 {:?} p99 {:?} max {:?} ({} appends)",
        percentile(&mut alone, 0.5),
        percentile(&mut alone, 0.99),
        alone.iter().max().unwrap(),
        alone.len()
    );
    match beside.is_empty() {
        true => println!("appends beside a snapshot of {mb:.0} MiB: none completed while it was written"),
        false => println!(
            "appends beside a snapshot of {mb:.0} MiB being written: p50 {:?} p99 {:?} max {:?} ({} appends, 2 ms apart)",
            percentile(&mut beside, 0.5),
            percentile(&mut beside, 0.99),
            beside.iter().max().unwrap(),
            beside.len()
        ),
    }
    println!(
        "snapshot of {mb:.0} MiB: written in {written:?} ({:.0} MiB/s), read back streamed in {streamed:?} ({:.0} MiB/s)",
        mb / written.as_secs_f64(),
        mb / streamed.as_secs_f64()
    );
}

/// `serve`'s follower poll, before notifications and since as their fallback.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The lag of a follower that waits between rounds as `serve` does (sleeping its poll, or
/// woken by the writer's notifications), over `commits` small commits.
fn serve_like_lag(url: &str, password: &Path, commits: u64, notified: bool) -> Vec<Duration> {
    const SMALL: u64 = 16;
    let at = Utc::now();
    let mut writer = Ledger::open(Path::new(url), config(password)).unwrap();
    writer.append([pod(1)], at).unwrap();
    writer.flush().unwrap();
    let follower =
        ledger::SharedLedger::new(Ledger::open(Path::new(url), config(password)).unwrap());
    // The first wait opens the follower's LISTEN; it returns once that is in place.
    follower.with_writer(|ledger| ledger.follow()).unwrap();
    if notified {
        follower.wait_for_change(Duration::from_secs(10));
    }
    let committed: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let writing = std::thread::spawn({
        let committed = Arc::clone(&committed);
        move || {
            for commit in 0..commits {
                let first = 2 + commit * SMALL;
                writer.append((first..first + SMALL).map(pod), at).unwrap();
                writer.flush().unwrap();
                committed
                    .lock()
                    .unwrap()
                    .push((writer.head().seq, Instant::now()));
                std::thread::sleep(Duration::from_millis(37));
            }
        }
    });
    let target = 1 + commits * SMALL;
    let (mut lags, mut seen) = (Vec::new(), 0);
    loop {
        let head = follower.with_writer(|ledger| {
            ledger.follow().unwrap();
            ledger.head().seq
        });
        let now = Instant::now();
        for &(seq, at) in committed.lock().unwrap().iter().skip(seen) {
            if seq <= head {
                lags.push(now - at);
                seen += 1;
            }
        }
        if head >= target {
            break;
        }
        match notified {
            true => {
                follower.wait_for_change(FOLLOW_EVERY);
            }
            false => std::thread::sleep(FOLLOW_EVERY),
        }
    }
    writing.join().unwrap();
    lags
}
