//! Benchmarks of claim-ledger's compliance-export paths on a 1M-entry ledger, beside raw
//! baselines measured in the same run (see `BENCHMARKS.md`, "Compliance export").
//!
//! * `proof/*`: `Ledger::inclusion_proof` of a leaf drawn at random for every iteration,
//!   `Ledger::consistency_proof` from a random old size to the head and between two random
//!   sizes, and `Ledger::root_at` of a random size, all from stored nodes in sled; beside
//!   the client's `merkle::verify_inclusion` of such proofs and a one-entry ledger read.
//! * `checkpoint/*`: `Ledger::sign_checkpoint` after a one-entry durable append (so every
//!   iteration signs a new tree size; the append is untimed), beside a one-entry durable
//!   append (its flush is the same fsync), the pure `SignedNote::sign` of a checkpoint
//!   body, and Ed25519 verification of the signed note (`SignedNote::verify`, and
//!   `checkpoint::verify_note`, which parses the note and the body too).
//! * `export/*`: `formats::views::export_jsonl`, `formats::csv_export::export_csv` and
//!   `formats::cloudevents::export_cloudevents` of a 100k-entry window into `std::io::sink()`,
//!   beside reading and decoding the same entries (`Ledger::entries`), serde_json of the
//!   decoded entries, and (once the ledger is closed) a raw sled scan of the same values.
//! * `bundle/*`: `formats::bundle::plan` + `formats::bundle::write_tar` of 100k entries into a sink
//!   (with and without a previous checkpoint to prove consistency from).
//!
//! The ledger is built once per run (untimed) in a temporary directory from the same
//! Kubernetes lifecycle workload as `benches/ledger.rs`, with `Ledger::append` in batches
//! of 4096 and `LedgerConfig { snapshot_every: 0, .. }`: no projection snapshots.
//! `CLAIM_LEDGER_AUDIT_ENTRIES` changes its size (default 1,000,000).
//!
//! Run: `cargo bench --bench audit`; then `bash benches/report.sh` prints the medians.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use formats::bundle::{self, BundleRequest};
use ledger::{AppendOutcome, Ledger, LedgerConfig, StoredEntry};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use schemas::checkpoint::{self, Checkpoint, SignedNote, SignerKey};
use schemas::merkle;
use schemas::ObjectChange;
use tempfile::TempDir;

// The same allocator as the `claim-ledger` binary, so the numbers are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Entries in the ledger (`CLAIM_LEDGER_AUDIT_ENTRIES` overrides).
const DEFAULT_ENTRIES: u64 = 1_000_000;
/// Changes per `Ledger::append` while building it.
const BUILD_BATCH: usize = 4096;
/// Entries per export and per bundle.
const WINDOW: u64 = 100_000;
/// The checkpoint origin and key name.
const ORIGIN: &str = "bench.example/claim-ledger";
/// The CloudEvents `source`.
const SOURCE: &str = "/claim-ledger/bench";

mod workload;
use workload::*;

/// A different leaf or size every iteration, reproducibly: proptest's ChaCha generator
/// from a fixed seed (a few ns a draw, nothing next to a proof).
fn seeded_rng(seed: u8) -> TestRng {
    TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
}

fn entries_wanted() -> u64 {
    std::env::var("CLAIM_LEDGER_AUDIT_ENTRIES")
        .ok()
        .map(|v| v.parse().expect("CLAIM_LEDGER_AUDIT_ENTRIES is a number"))
        .unwrap_or(DEFAULT_ENTRIES)
}

/// Appends `changes` and flushes; every change must append.
fn durable_append(ledger: &mut Ledger, changes: Vec<ObjectChange>) {
    let n = changes.len();
    let outcomes = ledger.append(changes, Utc::now()).expect("append");
    ledger.flush().expect("flush");
    let appended = outcomes
        .iter()
        .filter(|o| matches!(o, AppendOutcome::Appended { .. }))
        .count();
    assert_eq!(appended, n, "every generated change is a new entry");
}

/// Builds the ledger: the changes are generated and normalized on a second thread while
/// the main one appends them, 4096 per flushed `append`. Returns the change stream too,
/// for appending more later.
fn build(dir: &TempDir, entries: u64) -> (Ledger, ChangeStream) {
    let config = LedgerConfig {
        snapshot_every: 0,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(dir.path(), config).expect("open ledger");
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Vec<ObjectChange>>(4);
    let producer = std::thread::spawn(move || {
        let mut stream = ChangeStream::new();
        let mut left = entries;
        while left > 0 {
            let n = left.min(BUILD_BATCH as u64) as usize;
            tx.send(stream.take(n)).expect("the builder is listening");
            left -= n as u64;
        }
        stream
    });
    for batch in rx {
        durable_append(&mut ledger, batch);
    }
    let stream = producer.join().expect("producer");
    assert_eq!(ledger.head().seq, entries);
    eprintln!(
        "audit ledger: {entries} entries appended in batches of {BUILD_BATCH} (no snapshots) in {:.1?}",
        started.elapsed()
    );
    (ledger, stream)
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    samples: usize,
    seconds: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(samples)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(seconds));
    group
}

// ---------------------------------------------------------------------------------------
// proofs
// ---------------------------------------------------------------------------------------

fn bench_proofs(c: &mut Criterion, ledger: &Ledger) {
    let n = ledger.tree_size();
    let root = ledger.tree_root();
    let label = |what: &str| format!("{what}/{}", size_label(n));
    let mut group = group(c, "proof", 100, 5);

    let mut rng = seeded_rng(1);
    group.bench_function(label("inclusion"), |b| {
        b.iter(|| {
            let leaf = rng.random_range(0..n);
            black_box(ledger.inclusion_proof(leaf, n).expect("inclusion proof"))
        })
    });
    let mut rng = seeded_rng(2);
    group.bench_function(label("consistency_to_head"), |b| {
        b.iter(|| {
            let old = rng.random_range(1..n);
            black_box(ledger.consistency_proof(old, n).expect("consistency proof"))
        })
    });
    let mut rng = seeded_rng(3);
    group.bench_function(label("consistency_random"), |b| {
        b.iter(|| {
            let new = rng.random_range(2..n + 1);
            let old = rng.random_range(1..new);
            black_box(
                ledger
                    .consistency_proof(old, new)
                    .expect("consistency proof"),
            )
        })
    });
    let mut rng = seeded_rng(4);
    group.bench_function(label("root_at_random"), |b| {
        b.iter(|| black_box(ledger.root_at(rng.random_range(1..n + 1)).expect("root")))
    });

    // Baselines: one sled point read of an entry (read + decode), and the client's
    // verification of an inclusion proof (log2 n SHA-256 compressions).
    let mut rng = seeded_rng(5);
    group.bench_function(label("read_one_entry"), |b| {
        b.iter(|| {
            let seq = rng.random_range(1..n + 1);
            black_box(
                ledger
                    .entries(seq, seq)
                    .next()
                    .expect("entry")
                    .expect("read"),
            )
        })
    });
    let mut rng = seeded_rng(6);
    let proofs: Vec<(u64, merkle::Hash32, Vec<merkle::Hash32>)> = (0..1024)
        .map(|_| {
            let leaf = rng.random_range(0..n);
            let stored = ledger
                .entries(leaf + 1, leaf + 1)
                .next()
                .expect("entry")
                .expect("read");
            let proof = ledger.inclusion_proof(leaf, n).expect("proof");
            (leaf, merkle::leaf_hash(&stored.bytes), proof)
        })
        .collect();
    for (leaf, hash, proof) in &proofs {
        merkle::verify_inclusion(hash, *leaf, n, proof, &root).expect("the proofs verify");
    }
    let mut i = 0usize;
    group.bench_function(label("verify_inclusion"), |b| {
        b.iter(|| {
            i = (i + 1) % proofs.len();
            let (leaf, hash, proof) = &proofs[i];
            black_box(merkle::verify_inclusion(hash, *leaf, n, proof, &root))
        })
    });
    group.finish();
}

fn size_label(n: u64) -> String {
    if n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// checkpoints
// ---------------------------------------------------------------------------------------

fn bench_checkpoints(c: &mut Criterion, ledger: &mut Ledger, stream: &mut ChangeStream) {
    let key = SignerKey::from_seed(ORIGIN, [42; 32]).expect("key");
    let verifier = key.verifier();
    let mut group = group(c, "checkpoint", 20, 5);
    group.sampling_mode(SamplingMode::Flat);

    // The service's signing step: flush, consistency with the latest checkpoint, sign,
    // keep the note, flush. One entry is appended and flushed first (untimed) so every
    // iteration signs a new tree size rather than returning the latest checkpoint.
    group.bench_function("sign_checkpoint_after_append_1", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                durable_append(ledger, stream.take(1));
                let start = Instant::now();
                let signed = ledger.sign_checkpoint(&key, ORIGIN).expect("sign");
                total += start.elapsed();
                assert_eq!(signed.checkpoint.size, ledger.tree_size());
            }
            total
        })
    });
    // Baseline: a one-entry durable append (the same kind of fsync).
    group.bench_function("durable_append_1", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let changes = stream.take(1);
                let start = Instant::now();
                durable_append(ledger, changes);
                total += start.elapsed();
            }
            total
        })
    });
    // Bring the latest checkpoint up to the head again for the bundles.
    ledger.sign_checkpoint(&key, ORIGIN).expect("sign");
    group.finish();

    let body = Checkpoint {
        origin: ORIGIN.to_string(),
        size: ledger.tree_size(),
        root: ledger.tree_root(),
        extensions: Vec::new(),
    }
    .to_body()
    .expect("body");
    let note_text = SignedNote::sign(&body, &[&key]).expect("sign").to_text();
    let note = SignedNote::parse(&note_text).expect("parse");
    let trusted = [verifier];
    note.verify(&trusted).expect("the note verifies");

    let mut group = self::group(c, "checkpoint", 100, 3);
    group.bench_function("note_sign", |b| {
        b.iter(|| {
            black_box(
                SignedNote::sign(black_box(&body), &[&key])
                    .expect("sign")
                    .to_text(),
            )
        })
    });
    group.bench_function("note_verify", |b| {
        b.iter(|| black_box(note.verify(black_box(&trusted)).expect("verify")))
    });
    group.bench_function("verify_note_parse_and_verify", |b| {
        b.iter(|| black_box(checkpoint::verify_note(black_box(&note_text), &trusted).expect("ok")))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------

/// The windows the exports rotate through: `WINDOW` entries each, spread over the ledger.
fn windows(entries: u64) -> Vec<(u64, u64)> {
    let count = (entries / WINDOW).max(1);
    (0..count)
        .map(|i| (i * WINDOW + 1, ((i + 1) * WINDOW).min(entries)))
        .collect()
}

/// Times `run(from, to)` on the next window per iteration; checks the count it returns.
fn rotate<'a>(
    windows: &'a [(u64, u64)],
    mut run: impl FnMut(u64, u64) -> u64 + 'a,
) -> impl FnMut(u64) -> Duration + 'a {
    let mut next = 0usize;
    move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let (from, to) = windows[next % windows.len()];
            next += 1;
            let start = Instant::now();
            let count = run(from, to);
            total += start.elapsed();
            assert_eq!(count, to - from + 1);
        }
        total
    }
}

fn bench_export(c: &mut Criterion, ledger: &Ledger, windows: &[(u64, u64)]) {
    let label = |what: &str| format!("{what}/{}", size_label(WINDOW));
    let mut group = group(c, "export", 10, 8);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WINDOW));

    group.bench_function(label("jsonl"), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            formats::views::export_jsonl(ledger, from, to, &mut std::io::sink()).expect("jsonl")
        }))
    });
    group.bench_function(label("csv"), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            formats::csv_export::export_csv(ledger, from, to, &mut std::io::sink()).expect("csv")
        }))
    });
    group.bench_function(label("cloudevents"), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            formats::cloudevents::export_cloudevents(ledger, from, to, SOURCE, &mut std::io::sink())
                .expect("cloudevents")
        }))
    });

    // Baselines: the read and decode every export starts with, and serde_json of the
    // decoded entries alone (no hashes, no base64 of the stored bytes).
    group.bench_function(label("read_decode"), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            let mut count = 0;
            for stored in ledger.entries(from, to) {
                black_box(stored.expect("read"));
                count += 1;
            }
            count
        }))
    });
    group.bench_function(label("serde_json_entries"), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            let mut count = 0;
            let mut out = std::io::sink();
            for stored in ledger.entries(from, to) {
                let StoredEntry { entry, .. } = stored.expect("read");
                serde_json::to_writer(&mut out, &entry).expect("json");
                count += 1;
            }
            count
        }))
    });
    group.finish();

    // What the lines weigh.
    let (from, to) = windows[0];
    let mut counter = Counting(0);
    formats::views::export_jsonl(ledger, from, to, &mut counter).expect("jsonl");
    let jsonl = counter.0;
    let mut counter = Counting(0);
    formats::csv_export::export_csv(ledger, from, to, &mut counter).expect("csv");
    let csv = counter.0;
    let mut counter = Counting(0);
    formats::cloudevents::export_cloudevents(ledger, from, to, SOURCE, &mut counter).expect("ce");
    let cloudevents = counter.0;
    let per = |bytes: u64| bytes as f64 / (to - from + 1) as f64;
    eprintln!(
        "export bytes per entry: jsonl {:.0}, csv {:.0}, cloudevents {:.0}",
        per(jsonl),
        per(csv),
        per(cloudevents)
    );

    // The whole ledger once, for scale (not a criterion measurement; it includes the
    // few entries the checkpoint benchmarks appended).
    let entries = ledger.tree_size();
    let start = Instant::now();
    let count =
        formats::views::export_jsonl(ledger, 1, entries, &mut std::io::sink()).expect("jsonl");
    let elapsed = start.elapsed();
    eprintln!(
        "export_jsonl of all {count} entries once: {elapsed:.2?} ({:.0} entries/s)",
        count as f64 / elapsed.as_secs_f64()
    );
}

/// A sink that counts the bytes written to it.
struct Counting(u64);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// bundles
// ---------------------------------------------------------------------------------------

fn bench_bundle(c: &mut Criterion, ledger: &Ledger, windows: &[(u64, u64)]) {
    let latest = ledger
        .latest_checkpoint()
        .expect("checkpoints")
        .expect("a checkpoint was signed");
    let previous = ledger
        .checkpoints()
        .expect("checkpoints")
        .into_iter()
        .next()
        .expect("a checkpoint")
        .checkpoint;
    assert!(previous.size < latest.checkpoint.size);
    let label = |what: &str| format!("{what}/{}", size_label(WINDOW));
    let mut group = group(c, "bundle", 10, 8);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WINDOW));

    for (id, previous) in [("tar", None), ("tar_with_previous", Some(previous))] {
        group.bench_function(label(id), |b| {
            b.iter_custom(rotate(windows, |from, to| {
                let request = BundleRequest {
                    from_seq: Some(from),
                    to_seq: Some(to),
                    previous: previous.clone(),
                };
                let plan = bundle::plan(ledger, &request, Utc::now()).expect("plan");
                let entries = plan.manifest.to_seq - plan.manifest.from_seq + 1;
                bundle::write_tar(&**ledger, &plan, std::io::sink()).expect("tar");
                entries
            }))
        });
    }
    group.finish();

    // The plan alone: choosing the checkpoint and the proofs.
    let mut next = 0usize;
    let mut plan_group = self::group(c, "bundle", 50, 3);
    plan_group.bench_function("plan_only", |b| {
        b.iter(|| {
            let (from, to) = windows[next % windows.len()];
            next += 1;
            let request = BundleRequest {
                from_seq: Some(from),
                to_seq: Some(to),
                previous: None,
            };
            black_box(bundle::plan(ledger, &request, Utc::now()).expect("plan"))
        })
    });
    plan_group.finish();
}

// ---------------------------------------------------------------------------------------
// raw sled scan (after the ledger is closed)
// ---------------------------------------------------------------------------------------

fn bench_sled_scan(c: &mut Criterion, dir: &TempDir, windows: &[(u64, u64)]) {
    let db = sled::Config::new()
        .path(dir.path().join(ledger::dir::SLED_DIR))
        .open()
        .expect("sled");
    let tree = db.open_tree("ledger").expect("tree");
    // The sled store packs entries eight to a record (seqs 8g+1 ..= 8g+8 under `E` ‖ g,
    // docs/FORMAT.md 5.4): the window's records, each counted for the entries it holds.
    let key = |seq: u64| {
        let mut key = [b'E'; 9];
        key[1..].copy_from_slice(&((seq - 1) / 8).to_be_bytes());
        key
    };
    let mut group = group(c, "export", 10, 8);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WINDOW));
    group.bench_function(format!("raw_sled_scan/{}", size_label(WINDOW)), |b| {
        b.iter_custom(rotate(windows, |from, to| {
            let mut count = 0;
            for item in tree.range(key(from)..=key(to)) {
                let (record, value) = item.expect("scan");
                black_box(value.len());
                let first =
                    u64::from_be_bytes(record[1..].try_into().expect("a record key")) * 8 + 1;
                count += (0..8u64)
                    .filter(|i| value[0] & (1 << i) != 0 && (from..=to).contains(&(first + i)))
                    .count() as u64;
            }
            count
        }))
    });
    group.finish();
}

fn bench_audit(c: &mut Criterion) {
    let entries = entries_wanted();
    assert!(
        entries >= 2,
        "the proofs need a tree of two leaves at least"
    );
    let dir = TempDir::new().expect("temp dir");
    let (mut ledger, mut stream) = build(&dir, entries);
    let windows = windows(entries);

    bench_proofs(c, &ledger);
    // Two checkpoints, so the bundle benches have a previous one to prove consistency
    // from even when a filter skips the signing benches.
    let key = SignerKey::from_seed(ORIGIN, [42; 32]).expect("key");
    for _ in 0..2 {
        durable_append(&mut ledger, stream.take(1));
        ledger.sign_checkpoint(&key, ORIGIN).expect("sign");
    }
    bench_checkpoints(c, &mut ledger, &mut stream);
    bench_export(c, &ledger, &windows);
    bench_bundle(c, &ledger, &windows);
    // sled's own read cost: the ledger must be closed for sled to open its files.
    drop(ledger);
    bench_sled_scan(c, &dir, &windows);
}

/// The criterion entry points (a private module: `criterion_group!` declares a `pub fn`).
mod harness {
    use super::bench_audit;
    criterion::criterion_group!(benches, bench_audit);
}

criterion_main!(harness::benches);
