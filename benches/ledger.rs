//! Benchmarks of claim-ledger, beside raw baselines (see `BENCHMARKS.md`).
//!
//! * `append/*`: durable appends (`Ledger::append` + `Ledger::flush`) of fresh changes at
//!   batch sizes 1, 64 and 1024, beside a plain sled tree receiving the same number of
//!   values of the same sizes (the stored bytes of real entries) in one `apply_batch`
//!   followed by `Db::flush`. Reported in entries/s.
//! * `append_parts/*`: where the time of a 1024-entry append goes (no flush, no snapshot,
//!   sled receiving the same bytes packed eight to a value as the ledger's sled store
//!   keeps them (`sled_packed_same_bytes`), sled receiving one key per entry and the head,
//!   projection apply, encode, chain hash, the same with the projection published after
//!   each batch as the ledger does, JSON ingest end to end).
//! * `verify/*`: `Ledger::verify` over a 100k-entry ledger beside raw blake3 over the same
//!   bytes, and the parts of the walk (sled scan, decode, chain hash, replay).
//! * `check/*`: `Projection::check` (what `Ledger::check` delegates to) with 100k live claim
//!   bindings, for an allowed pod chosen round-robin and for released pods.
//!
//! The changes are Kubernetes object JSON for claim-bound sandbox lifecycles (claim,
//! Sandbox owned by the claim with the claim-uid label, workspace PVC, pod with the
//! `openshell.io/sandbox-id` annotation, claim status naming the Sandbox, then release),
//! normalized with `schemas::normalize`, with fresh uids and resourceVersions throughout.
//!
//! Run: `cargo bench --bench ledger`; then `bash benches/report.sh` prints the medians.

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use ledger::{AppendOutcome, CheckRequest, Ledger, LedgerConfig, Projection, StoredEntry, Verdict};
use schemas::{chain_hash, Entry, Hash, ObjectChange, WatchEventType};
use serde_json::Value;
use tempfile::TempDir;

// The same allocator as the `claim-ledger` binary, so the numbers are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Live claim bindings in the check projection.
const CHECK_BINDINGS: u64 = 100_000;
/// Released bindings in the check projection (denied pods).
const CHECK_RELEASED: u64 = 1_024;
/// Entries in the verified ledger.
const VERIFY_ENTRIES: u64 = 100_000;
/// An append fixture starts over (untimed) once it holds this many entries, so every
/// append is measured on a ledger of 0..100k entries whatever the machine's speed.
const RESET_AT: u64 = 100_000;

mod workload;
use workload::*;

// ---------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------

/// A ledger in a temporary directory, fed from its own change stream.
struct LedgerFixture {
    config: LedgerConfig,
    dir: TempDir,
    ledger: Ledger,
    stream: ChangeStream,
    resets: u32,
}

impl LedgerFixture {
    fn new(config: LedgerConfig) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ledger = Ledger::open(dir.path(), config.clone()).expect("open ledger");
        LedgerFixture {
            config,
            dir,
            ledger,
            stream: ChangeStream::new(),
            resets: 0,
        }
    }

    /// Starts over with an empty ledger once it holds `RESET_AT` entries (untimed).
    fn maybe_reset(&mut self) {
        if self.ledger.head().seq < RESET_AT {
            return;
        }
        let fresh = LedgerFixture::new(self.config.clone());
        self.resets += 1;
        let resets = self.resets;
        *self = fresh;
        self.resets = resets;
    }

    /// Appends `changes` and flushes; returns the time taken. Every change must append.
    fn durable_append(&mut self, changes: Vec<ObjectChange>, flush: bool) -> Duration {
        let n = changes.len();
        let start = Instant::now();
        let outcomes = self.ledger.append(changes, Utc::now()).expect("append");
        if flush {
            self.ledger.flush().expect("flush");
        }
        let elapsed = start.elapsed();
        let appended = outcomes
            .iter()
            .filter(|o| matches!(o, AppendOutcome::Appended { .. }))
            .count();
        assert_eq!(appended, n, "every generated change is a new entry");
        elapsed
    }

    fn stored(&self) -> Vec<StoredEntry> {
        self.ledger
            .entries(1, self.ledger.head().seq)
            .collect::<Result<_, _>>()
            .expect("entries read back")
    }
}

/// Fills a ledger with `entries` entries of the change stream, 1024 per flushed batch.
fn filled_ledger(entries: u64, config: LedgerConfig) -> LedgerFixture {
    let mut fixture = LedgerFixture::new(config);
    let mut left = entries;
    while left > 0 {
        let n = left.min(1024) as usize;
        let changes = fixture.stream.take(n);
        fixture.durable_append(changes, true);
        left -= n as u64;
    }
    fixture
}

/// A sample of real stored entry values (`hash ‖ entry bytes`, as `keys.rs` lays them out):
/// the only key the ledger writes per entry.
fn sample_writes() -> Vec<Vec<u8>> {
    let fixture = filled_ledger(12 * 1024, LedgerConfig::default());
    fixture
        .stored()
        .into_iter()
        .map(|stored| {
            let mut value = stored.hash.0.to_vec();
            value.extend_from_slice(&stored.bytes);
            value
        })
        .collect()
}

/// A plain sled database receiving the same values under sequential keys.
struct RawSled {
    _dir: TempDir,
    db: sled::Db,
    tree: sled::Tree,
    next: u64,
    cursor: usize,
}

impl RawSled {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let tree = db.open_tree("raw").expect("tree");
        RawSled {
            _dir: dir,
            db,
            tree,
            next: 0,
            cursor: 0,
        }
    }

    fn maybe_reset(&mut self) {
        if self.next >= RESET_AT {
            *self = RawSled::new();
        }
    }

    /// `n` values in one batch then a flush; with `head`, also the head record, i.e.
    /// exactly the ledger's sled writes in a store of one sled key per entry.
    fn durable_batch(&mut self, sample: &[Vec<u8>], n: usize, head: bool) -> Duration {
        let start = Instant::now();
        let mut batch = sled::Batch::default();
        for _ in 0..n {
            let value = &sample[self.cursor % sample.len()];
            self.cursor += 1;
            let mut key = [b'E'; 9];
            key[1..].copy_from_slice(&self.next.to_be_bytes());
            batch.insert(&key, &value[..]);
            self.next += 1;
        }
        if head {
            let mut head = self.next.to_be_bytes().to_vec();
            head.extend_from_slice(&[7u8; 32]);
            batch.insert(b"H", head);
        }
        self.tree.apply_batch(batch).expect("apply_batch");
        self.db.flush().expect("flush");
        start.elapsed()
    }

    /// The same `n` values packed eight to a sled value, as the ledger's sled store keeps
    /// them (docs/FORMAT.md 5.4: a byte of present slots, then length-prefixed values),
    /// in one batch then a flush: sled's own cost for the ledger's layout.
    fn durable_packed_batch(&mut self, sample: &[Vec<u8>], n: usize) -> Duration {
        let start = Instant::now();
        let mut batch = sled::Batch::default();
        for _ in 0..n.div_ceil(8) {
            let mut packed = vec![0u8];
            for slot in 0..8 {
                let value = &sample[self.cursor % sample.len()];
                self.cursor += 1;
                packed[0] |= 1 << slot;
                packed.extend_from_slice(&(value.len() as u32).to_le_bytes());
                packed.extend_from_slice(value);
            }
            let mut key = [b'E'; 9];
            key[1..].copy_from_slice(&(self.next / 8).to_be_bytes());
            batch.insert(&key, packed);
            self.next += 8;
        }
        self.tree.apply_batch(batch).expect("apply_batch");
        self.db.flush().expect("flush");
        start.elapsed()
    }
}

fn fast_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);
    group
}

// ---------------------------------------------------------------------------------------
// append
// ---------------------------------------------------------------------------------------

fn bench_append(c: &mut Criterion) {
    let sample = sample_writes();
    let mean_value = sample.iter().map(|w| w.len()).sum::<usize>() as f64 / sample.len() as f64;
    eprintln!(
        "stored entry values: {} sampled, mean {mean_value:.0} bytes (32-byte hash included)",
        sample.len()
    );

    let mut group = fast_group(c, "append");
    for batch in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(batch as u64));

        let mut fixture = LedgerFixture::new(LedgerConfig::default());
        group.bench_function(BenchmarkId::new("ledger", batch), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fixture.maybe_reset();
                    let changes = fixture.stream.take(batch);
                    total += fixture.durable_append(changes, true);
                }
                total
            })
        });
        eprintln!(
            "append/ledger/{batch}: ledger restarted empty {} times (at {RESET_AT} entries)",
            fixture.resets
        );
        drop(fixture);

        let mut raw = RawSled::new();
        group.bench_function(BenchmarkId::new("raw_sled", batch), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    raw.maybe_reset();
                    total += raw.durable_batch(&sample, batch, false);
                }
                total
            })
        });
    }
    group.finish();

    // Where the time of a 1024-entry durable append goes.
    let mut group = fast_group(c, "append_parts");
    let batch = 1024usize;
    group.throughput(Throughput::Elements(batch as u64));

    let mut raw = RawSled::new();
    group.bench_function("sled_packed_same_bytes/1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                raw.maybe_reset();
                total += raw.durable_packed_batch(&sample, batch);
            }
            total
        })
    });
    drop(raw);

    let mut raw = RawSled::new();
    group.bench_function("sled_same_writes/1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                raw.maybe_reset();
                total += raw.durable_batch(&sample, batch, true);
            }
            total
        })
    });
    drop(raw);

    for (id, config, flush) in [
        ("ledger_no_flush/1024", LedgerConfig::default(), false),
        (
            "ledger_no_snapshot/1024",
            LedgerConfig {
                snapshot_every: 0,
                ..LedgerConfig::default()
            },
            true,
        ),
    ] {
        let mut fixture = LedgerFixture::new(config);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fixture.maybe_reset();
                    let changes = fixture.stream.take(batch);
                    total += fixture.durable_append(changes, flush);
                }
                total
            })
        });
    }

    // The CPU work of an append without sled: projection apply, encode, chain hash; and
    // the same with a copy of the projection published after each batch and held until
    // the next (as the ledger publishes its view to readers after every flush): the
    // persistent maps then copy the path to every entry a batch changes.
    for (id, publish) in [
        ("apply_encode_hash/1024", false),
        ("apply_encode_hash_published/1024", true),
    ] {
        let mut stream = ChangeStream::new();
        let mut projection = Projection::default();
        let mut published = None;
        let mut seq = 0u64;
        let mut prev = Hash::ZERO;
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if seq >= RESET_AT {
                        projection = Projection::default();
                        published = None;
                        seq = 0;
                    }
                    let changes = stream.take(batch);
                    let now = Utc::now();
                    let start = Instant::now();
                    for change in changes {
                        seq += 1;
                        let transitions = projection.apply(seq, now, &change);
                        let entry = Entry {
                            format_version: schemas::FORMAT_VERSION,
                            seq,
                            observed_at: now,
                            prev_hash: prev,
                            change: schemas::Change::Object(change),
                            transitions,
                            snapshot: None,
                        };
                        let bytes = entry.encode().expect("encode");
                        prev = chain_hash(&prev, seq, &bytes);
                    }
                    if publish {
                        // The view before is dropped here, as readers let go of it.
                        published = Some(projection.clone());
                    }
                    total += start.elapsed();
                }
                black_box(&published);
                total
            })
        });
    }

    let entries: Vec<Entry> = filled_ledger(batch as u64, LedgerConfig::default())
        .stored()
        .into_iter()
        .map(|s| s.entry)
        .collect();
    group.bench_function("encode/1024", |b| {
        b.iter(|| {
            for entry in &entries {
                black_box(entry.encode().expect("encode"));
            }
        })
    });
    let encoded: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| e.encode().expect("encode"))
        .collect();
    group.bench_function("chain_hash/1024", |b| {
        b.iter(|| {
            let mut prev = Hash::ZERO;
            for (i, bytes) in encoded.iter().enumerate() {
                prev = chain_hash(&prev, i as u64 + 1, bytes);
            }
            black_box(prev)
        })
    });

    // End to end as `claim-ledger ingest` runs it: JSON lines parsed, normalized, appended,
    // flushed (the JSON is ~20x larger than what is stored).
    let mut fixture = LedgerFixture::new(LedgerConfig::default());
    group.bench_function("ingest_jsonl/1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fixture.maybe_reset();
                let lines = fixture.stream.take_jsonl(batch);
                let start = Instant::now();
                let report = watcher::ingest(
                    &mut fixture.ledger,
                    Cursor::new(lines),
                    watcher::IngestOptions { batch_size: batch },
                    Utc::now,
                )
                .expect("ingest");
                total += start.elapsed();
                assert_eq!(report.appended, batch as u64);
            }
            total
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

/// Reads every entry value through sled alone (no decode, no hash).
fn sled_scan(tree: &sled::Tree) -> usize {
    let mut bytes = 0;
    for item in tree.range(&b"E"[..]..&b"F"[..]) {
        let (_, value) = item.expect("scan");
        bytes += value.len();
    }
    bytes
}

/// The snapshot files a sled ledger keeps beside sled (`docs/FORMAT.md` §5), as
/// (seq, bytes).
fn snapshot_sizes(sled_dir: &std::path::Path) -> Vec<(u64, usize)> {
    let mut sizes: Vec<(u64, usize)> = std::fs::read_dir(sled_dir.join("claim-ledger-snapshots"))
        .map(|listing| {
            listing
                .filter_map(|item| {
                    let item = item.ok()?;
                    let name = item.file_name().into_string().ok()?;
                    let seq = name.strip_suffix(".snapshot")?.parse().ok()?;
                    Some((seq, item.metadata().ok()?.len() as usize))
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort_unstable();
    sizes
}

fn bench_verify(c: &mut Criterion) {
    // Snapshots every 25k entries: three committed to (a full verify decodes each and
    // compares it with the state replayed there), the one at 100k not yet.
    let fixture = filled_ledger(
        VERIFY_ENTRIES,
        LedgerConfig {
            snapshot_every: VERIFY_ENTRIES / 4,
            ..LedgerConfig::default()
        },
    );
    let stored = fixture.stored();
    assert_eq!(stored.len() as u64, VERIFY_ENTRIES);
    let total_bytes: usize = stored.iter().map(|s| s.bytes.len()).sum();
    eprintln!(
        "verify ledger: {} entries, {total_bytes} entry bytes (mean {:.0})",
        stored.len(),
        total_bytes as f64 / stored.len() as f64
    );
    let report = fixture.ledger.verify().expect("verify");
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.entries, VERIFY_ENTRIES);

    let mut group = c.benchmark_group("verify");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(VERIFY_ENTRIES));

    group.bench_function("ledger_verify/100k", |b| {
        b.iter(|| {
            let report = fixture.ledger.verify().expect("verify");
            assert!(report.ok());
            black_box(report)
        })
    });
    // The chain alone, on every core (`verify --chain-only`).
    group.bench_function("ledger_verify_chain/100k", |b| {
        b.iter(|| {
            let report = fixture.ledger.verify_chain().expect("verify");
            assert!(report.ok());
            assert_eq!(report.entries, VERIFY_ENTRIES);
            black_box(report)
        })
    });
    // The same walk on a ledger that stores no snapshots (a full verify decodes every
    // stored snapshot and compares it with the replayed projection).
    {
        let plain = filled_ledger(
            VERIFY_ENTRIES,
            LedgerConfig {
                snapshot_every: 0,
                ..LedgerConfig::default()
            },
        );
        group.bench_function("ledger_verify_no_snapshots/100k", |b| {
            b.iter(|| {
                let report = plain.ledger.verify().expect("verify");
                assert!(report.ok());
                assert_eq!(report.entries, VERIFY_ENTRIES);
                black_box(report)
            })
        });
    }
    group.bench_function("raw_blake3/100k", |b| {
        b.iter(|| {
            for entry in &stored {
                black_box(blake3::hash(&entry.bytes));
            }
        })
    });

    // The parts of the walk.
    group.bench_function("chain_hash/100k", |b| {
        b.iter(|| {
            let mut prev = Hash::ZERO;
            for entry in &stored {
                prev = chain_hash(&prev, entry.entry.seq, &entry.bytes);
            }
            black_box(prev)
        })
    });
    group.bench_function("decode/100k", |b| {
        b.iter(|| {
            for entry in &stored {
                black_box(Entry::decode(&entry.bytes).expect("decode"));
            }
        })
    });
    group.bench_function("replay_apply/100k", |b| {
        b.iter(|| {
            let mut projection = Projection::default();
            for entry in &stored {
                let change = entry.entry.object_change().expect("object entries");
                black_box(projection.apply(entry.entry.seq, entry.entry.observed_at, change));
            }
            projection
        })
    });

    // sled's own read cost: the ledger must be closed for sled to open its files.
    let LedgerFixture { dir, ledger, .. } = fixture;
    drop(ledger);
    let sled_dir = dir.path().join(ledger::dir::SLED_DIR);
    let db = sled::Config::new().path(&sled_dir).open().expect("sled");
    let tree = db.open_tree("ledger").expect("tree");
    // The entries are packed eight to a record (docs/FORMAT.md 5.4): a byte of present
    // slots per record, and each entry's hash and length before its bytes.
    assert_eq!(
        sled_scan(&tree),
        total_bytes + (32 + 4) * stored.len() + stored.len().div_ceil(8),
        "the scan reads every entry"
    );
    let snapshots = snapshot_sizes(&sled_dir);
    eprintln!(
        "verify ledger snapshots (seq, bytes): {snapshots:?}, total {} bytes",
        snapshots.iter().map(|(_, n)| n).sum::<usize>()
    );
    group.bench_function("sled_scan/100k", |b| b.iter(|| black_box(sled_scan(&tree))));
    group.finish();
}

// ---------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------

fn bench_check(c: &mut Criterion) {
    // 100k live claim bindings, then CHECK_RELEASED more that bind and are released.
    let started = Instant::now();
    let mut lifecycles = Lifecycles::new();
    let mut projection = Projection::default();
    let mut seq = 0u64;
    let now = Utc::now();
    let mut apply = |events: Vec<(WatchEventType, Value)>, projection: &mut Projection| {
        for change in normalized(events) {
            seq += 1;
            projection.apply(seq, now, &change);
        }
    };
    for k in 0..CHECK_BINDINGS + CHECK_RELEASED {
        let mut events = Vec::new();
        lifecycles.bind(k, &mut events);
        if k >= CHECK_BINDINGS {
            lifecycles.release(k, &mut events);
        }
        apply(events, &mut projection);
    }
    let live = projection.active_bindings().len() as u64;
    eprintln!(
        "check projection: {} entries applied, {} objects, {live} active bindings, built in {:.1?}",
        projection.seq(),
        projection.object_count(),
        started.elapsed()
    );
    assert_eq!(live, CHECK_BINDINGS);

    let allowed: Vec<CheckRequest> = (0..CHECK_BINDINGS).map(check_request).collect();
    let released: Vec<CheckRequest> = (CHECK_BINDINGS..CHECK_BINDINGS + CHECK_RELEASED)
        .map(check_request)
        .collect();
    for request in &allowed {
        assert_eq!(projection.check(request, true).decision, Verdict::Allow);
    }
    for request in &released {
        let decision = projection.check(request, true);
        assert_eq!(decision.reason, Some(schemas::Reason::BindingReleased));
    }

    let mut group = c.benchmark_group("check");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    group.bench_function("allow_round_robin/100k", |b| {
        b.iter(|| {
            i = (i + 1) % allowed.len();
            black_box(projection.check(&allowed[i], true))
        })
    });
    let mut i = 0usize;
    group.bench_function("deny_released", |b| {
        b.iter(|| {
            i = (i + 1) % released.len();
            black_box(projection.check(&released[i], true))
        })
    });
    // The same pod over and over: its records stay in cache, so this is the instruction
    // cost of a check without the cache misses of a round-robin over 400k objects.
    group.bench_function("allow_same_pod", |b| {
        b.iter(|| black_box(projection.check(&allowed[12_345], true)))
    });
    let unknown = CheckRequest {
        pod_uid: uid("deadbeef", 1),
        ..check_request(CHECK_BINDINGS * 10)
    };
    group.bench_function("deny_unknown_pod", |b| {
        b.iter(|| black_box(projection.check(&unknown, true)))
    });
    group.finish();
}

/// The criterion entry points (a private module: `criterion_group!` declares a `pub fn`).
mod harness {
    use super::{bench_append, bench_check, bench_verify};
    criterion::criterion_group!(benches, bench_append, bench_verify, bench_check);
}

criterion_main!(harness::benches);
