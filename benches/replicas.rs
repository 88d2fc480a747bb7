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
//!
//! Run: `cargo bench --bench replicas` (`CLAIM_LEDGER_REPLICA_BATCHES`, default 40).

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

fn main() {
    let batches: u64 = std::env::var("CLAIM_LEDGER_REPLICA_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
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
            while latencies.len() < 20_000 && Instant::now() < deadline {
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
