//! The ledger at cluster scale (issue 9), as the service lives in it: a ledger of a
//! million-plus entries with its snapshots, a big projection, and a writer busy while
//! identity checks run. A load tool (`harness = false`), not criterion: each phase runs
//! once, on one fixture, and prints its numbers beside a baseline of the same run.
//!
//! 1. **Fill**: `CLAIM_LEDGER_BENCH_BINDINGS` claim-bound lifecycles (8 events each, 4 live
//!    objects) appended through `SharedLedger::commit` in batches of 1024, once with the
//!    default snapshots (every 100k entries, written off the append path) and once with
//!    none: entries/s of each and their ratio.
//! 2. **Steady-state single appends** on the filled ledger (one change, one fsync each),
//!    beside raw sled insert + flush of one value in the same run.
//! 3. **Checks while the writer appends**: one reader thread checking bound pods from the
//!    published view, first with no writer, then while a writer commits batches of 256
//!    changes (with a snapshot due every 25k entries), paced at
//!    `CLAIM_LEDGER_BENCH_WRITE_RATE` entries/s (default 12,000: the target's 10k with a
//!    margin), then as fast as it goes: p50/p99/max and the writer's rate.
//! 4. **Reopen**: the filled ledger closed and opened again until it answers a check, and
//!    the resident memory per live object (the storage engine's cache set to
//!    `CLAIM_LEDGER_BENCH_CACHE_MB`, default 64), beside what the storage engine alone
//!    takes to open the same store (its page table: it grows with the log).
//!
//! `cargo bench --bench scale` runs it at the default size (200k lifecycles: 1.6M entries,
//! 800k live objects); `cargo test --benches` runs it once, tiny. With
//! `CLAIM_LEDGER_BENCH_DIR=DIR` the filled ledger is kept in `DIR`, and a later run with the
//! same `DIR` and size skips phases 1 and 2 and reopens it (to profile the reopen alone),
//! then appends one entry (so a run after it reopens from the snapshot this one wrote).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod workload;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger::{Ledger, LedgerConfig, SharedLedger, Verdict};
use schemas::Change;
use workload::{check_request, normalized, resident_bytes, setting, Lifecycles};

/// Opens the filled ledger in `dir` until it answers a check, and prints how long that
/// took and the resident memory per live object.
fn reopen(dir: &Path, bindings: u64, snapshot_every: u64, cache_mb: u64) -> Ledger {
    let before = resident_bytes();
    let storage = storage_engine_resident(dir, cache_mb);
    let started = Instant::now();
    let mut reopened = Ledger::open(dir, config(snapshot_every / 4, cache_mb)).expect("reopen");
    let decision = reopened.check(&check_request(bindings / 2), true);
    let open_time = started.elapsed();
    assert_eq!(decision.decision, Verdict::Allow);
    let after = resident_bytes();
    let live = reopened.projection().live_objects().len() as u64;
    println!(
        "reopen of {} entries until a check is answered: {:.2} s; resident +{:.0} MiB for {live} live objects: {:.0} bytes per live object (storage cache up to {cache_mb} MiB counted in that)",
        reopened.head().seq,
        open_time.as_secs_f64(),
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) as f64 / live.max(1) as f64
    );
    println!(
        "of which the storage engine alone, opened with the same cache and one key read: +{:.0} MiB: {:.0} bytes per live object; the projection and the rest: {:.0} bytes per live object",
        mib(storage),
        storage as f64 / live.max(1) as f64,
        after.saturating_sub(before).saturating_sub(storage) as f64 / live.max(1) as f64
    );
    // What stays resident once the open's temporary allocations are given back: the
    // snapshot a reopened writer writes again (one left uncommitted) is stored, and the
    // allocator has returned freed pages (after a short delay). What a running service
    // holds.
    reopened.wait_for_snapshot();
    std::thread::sleep(Duration::from_secs(2));
    let settled = resident_bytes();
    println!(
        "resident 2 s after the open and its snapshot: +{:.0} MiB: {:.0} bytes per live object",
        mib(settled.saturating_sub(before)),
        settled.saturating_sub(before) as f64 / live.max(1) as f64
    );
    reopened
}

/// The resident memory the storage engine takes to open the ledger's store and read one
/// key (its page table; the cache is set as the ledger's): the part of the reopen's
/// resident memory that is not the projection's. Measured before the ledger opens, as
/// growth from `resident_bytes()`; what the store frees when it closes is reused by the
/// open after it, so the reopen's own growth still counts everything once.
fn storage_engine_resident(dir: &Path, cache_mb: u64) -> u64 {
    let before = resident_bytes();
    let db = sled::Config::new()
        .path(dir.join(ledger::dir::SLED_DIR))
        .cache_capacity(cache_mb * 1024 * 1024)
        .open()
        .expect("open the ledger's sled store");
    let _ = db.first().expect("read one key");
    let grown = resident_bytes().saturating_sub(before);
    drop(db);
    grown
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn config(snapshot_every: u64, cache_mb: u64) -> LedgerConfig {
    LedgerConfig {
        snapshot_every,
        cache_bytes: Some(cache_mb * 1024 * 1024),
        ..LedgerConfig::default()
    }
}

/// Appends `bindings` lifecycles from `first` in commits of about `batch` changes;
/// returns entries/s.
fn fill(shared: &SharedLedger, first: u64, bindings: u64, batch: usize) -> f64 {
    let mut lifecycles = Lifecycles::new();
    let started = Instant::now();
    let before = shared.view().head().seq;
    let mut k = first;
    while k < first + bindings {
        let mut events = Vec::with_capacity(batch);
        while events.len() + 8 <= batch.max(8) && k < first + bindings {
            lifecycles.bind(k, &mut events);
            k += 1;
        }
        shared
            .commit(normalized(events).map(Change::Object), Utc::now())
            .expect("commit");
    }
    let entries = shared.view().head().seq - before;
    entries as f64 / started.elapsed().as_secs_f64()
}

/// Latency percentiles of `samples` (nanoseconds), as "p50 / p99 / max".
fn percentiles(samples: &mut [u64]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.2} µs, p99 {:.2} µs, max {:.2} ms ({} checks)",
        at(0.5) as f64 / 1e3,
        at(0.99) as f64 / 1e3,
        *samples.last().unwrap() as f64 / 1e6,
        samples.len()
    )
}

/// Checks bound pods from the published view for `window`; returns the latencies.
fn check_for(shared: &SharedLedger, bindings: u64, window: Duration) -> Vec<u64> {
    let mut samples = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < window {
        let k = i.wrapping_mul(0x9e37_79b9) % bindings;
        i += 1;
        let request = check_request(k);
        let at = Instant::now();
        let decision = shared.view().check(&request, true);
        samples.push(at.elapsed().as_nanos() as u64);
        assert_eq!(decision.decision, Verdict::Allow, "pod {k}: {decision:?}");
    }
    samples
}

fn raw_sled_single_appends(dir: &Path, window: Duration) -> f64 {
    let db = sled::open(dir).expect("raw sled");
    let value = vec![0x5au8; 600];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < window {
        n += 1;
        db.insert(n.to_be_bytes(), value.as_slice())
            .expect("insert");
        db.flush().expect("flush");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let bindings = match smoke {
        true => 300,
        false => setting("CLAIM_LEDGER_BENCH_BINDINGS", 200_000),
    };
    let window = Duration::from_secs(match smoke {
        true => 1,
        false => setting("CLAIM_LEDGER_BENCH_SECONDS", 5),
    });
    let cache_mb = setting("CLAIM_LEDGER_BENCH_CACHE_MB", 64);
    let snapshot_every = match smoke {
        true => 500,
        false => 100_000,
    };
    let root = tempfile::tempdir().expect("tempdir");
    let kept = std::env::var_os("CLAIM_LEDGER_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| root.path().join("ledger"));
    if kept.is_some() && dir.join(ledger::dir::MANIFEST).exists() {
        let mut reopened = reopen(&dir, bindings, snapshot_every, cache_mb);
        // One entry, as a restarted service appends: it commits to the snapshot the open
        // wrote (one left uncommitted is replaced by the state at the head), so the next
        // reopen-only run starts at the head, as a service's next restart does.
        let mut events = Vec::new();
        Lifecycles::new().bind(10_000_000 + reopened.head().seq, &mut events);
        events.truncate(1);
        reopened
            .append(normalized(events), Utc::now())
            .expect("append");
        reopened.flush().expect("flush");
        return;
    }

    // 1. Fill, with and without snapshots.
    let plain_dir = root.path().join("no-snapshots");
    let plain = SharedLedger::new(Ledger::open(&plain_dir, config(0, cache_mb)).expect("open"));
    let plain_rate = fill(&plain, 0, bindings, 1024);
    drop(plain);
    let _ = std::fs::remove_dir_all(&plain_dir);
    let shared =
        SharedLedger::new(Ledger::open(&dir, config(snapshot_every, cache_mb)).expect("open"));
    let rate = fill(&shared, 0, bindings, 1024);
    let head = shared.view().head().seq;
    println!(
        "fill: {head} entries, {} live objects: {:.1}k entries/s with snapshots every {snapshot_every}, {:.1}k/s without: {:.0}%",
        4 * bindings,
        rate / 1e3,
        plain_rate / 1e3,
        100.0 * rate / plain_rate
    );

    // 2. Steady-state single appends on the filled ledger, beside raw sled.
    let mut lifecycles = Lifecycles::new();
    let mut k = bindings;
    let started = Instant::now();
    let mut singles = 0u64;
    let mut pending = Vec::new();
    while started.elapsed() < window {
        if pending.is_empty() {
            lifecycles.bind(k, &mut pending);
            k += 1;
            pending.reverse();
        }
        let event = pending.pop().expect("an event");
        shared
            .commit(normalized(vec![event]).map(Change::Object), Utc::now())
            .expect("commit");
        singles += 1;
    }
    let single_rate = singles as f64 / started.elapsed().as_secs_f64();
    let raw_rate = raw_sled_single_appends(&root.path().join("raw-sled"), window);
    println!(
        "single appends (one fsync each) at {} entries: {:.2}k/s; raw sled insert + flush: {:.2}k/s: {:.0}%",
        head,
        single_rate / 1e3,
        raw_rate / 1e3,
        100.0 * single_rate / raw_rate
    );
    // The lifecycle left half-bound is finished, so every checked pod is bound.
    if !pending.is_empty() {
        pending.reverse();
        shared
            .commit(normalized(pending).map(Change::Object), Utc::now())
            .expect("commit");
    }
    drop(shared);

    // 4 (first, it reopens). Reopen until a check is answered; memory per live object.
    let reopened = reopen(&dir, bindings, snapshot_every, cache_mb);

    // 3. Checks with no writer, then while a writer appends.
    let shared = SharedLedger::new(reopened);
    let mut idle = check_for(&shared, bindings, window);
    println!("checks, no writer: {}", percentiles(&mut idle));
    // The target's rate (at least 10k entries/s) with a margin, then as fast as the writer
    // goes, which on 2 cores leaves the reader a share of a core at best.
    let paced = setting("CLAIM_LEDGER_BENCH_WRITE_RATE", 12_000);
    let mut next = 10 * bindings;
    for rate in [paced, 0] {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = std::thread::spawn({
            let (shared, stop, written) = (shared.clone(), Arc::clone(&stop), Arc::clone(&written));
            let first = next;
            move || {
                let mut lifecycles = Lifecycles::new();
                let mut k = first;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let mut events = Vec::with_capacity(256);
                    for _ in 0..32 {
                        lifecycles.bind(k, &mut events);
                        k += 1;
                    }
                    let count = events.len() as u64;
                    shared
                        .commit(normalized(events).map(Change::Object), Utc::now())
                        .expect("commit");
                    let total = written.fetch_add(count, Ordering::Relaxed) + count;
                    if rate > 0 {
                        // Commits of 256 on schedule: sleep until this one was due.
                        let due = Duration::from_secs_f64(total as f64 / rate as f64);
                        if let Some(early) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(early);
                        }
                    }
                }
                k
            }
        });
        let started = Instant::now();
        let mut busy = check_for(&shared, bindings, window);
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        next = writer.join().expect("writer");
        println!(
            "checks while the writer appends {:.1}k entries/s ({}; snapshot due every {} entries): {}",
            written.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64() / 1e3,
            match rate {
                0 => "as fast as it goes".to_string(),
                rate => format!("paced at {:.1}k/s", rate as f64 / 1e3),
            },
            snapshot_every / 4,
            percentiles(&mut busy)
        );
    }
}
