//! `claim-ledger ingest` end to end (issue 9), as an operator runs it: watch events of
//! claim-bound lifecycles (8 events and 4 live objects each; `CLAIM_LEDGER_BENCH_EVENTS`,
//! default 1,000,000) written to a file, then ingested by the real binary into a fresh
//! ledger twice: at the default settings (a snapshot every 100k entries) and with
//! `--snapshot-every 0`. It prints entries/s of each, their ratio, and each run's peak
//! resident memory (the child's `VmHWM`, sampled every 20 ms, so a peak in the last 20 ms
//! may be missed). A load tool (`harness = false`): `cargo test --benches` runs it once,
//! tiny. `CLAIM_LEDGER_BENCH_DIR=DIR` keeps the events file, both ledgers and each run's
//! log (`DIR/default.stderr`; `RUST_LOG=ledger=debug` logs every snapshot's timings) in
//! `DIR`, which must not hold ledgers yet.

mod workload;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use schemas::WatchEventType;
use workload::{memory_of, setting, Lifecycles};

/// What one `ingest` run did.
struct Run {
    appended: u64,
    seconds: f64,
    peak_mib: f64,
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let events = match smoke {
        true => 800,
        false => setting("CLAIM_LEDGER_BENCH_EVENTS", 1_000_000),
    };
    let temporary = tempfile::tempdir().expect("tempdir");
    let root = match std::env::var_os("CLAIM_LEDGER_BENCH_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => temporary.path().to_path_buf(),
    };
    std::fs::create_dir_all(&root).expect("bench dir");
    let file = root.join("events.jsonl");
    write_events(&file, events.div_ceil(8));

    let plain = ingest(
        &root.join("no-snapshots"),
        &file,
        &["--snapshot-every", "0"],
    );
    let default = ingest(&root.join("default"), &file, &[]);
    assert_eq!(default.appended, plain.appended);
    let rate = |run: &Run| run.appended as f64 / run.seconds;
    println!(
        "ingest of {} events: {} entries in {:.1} s at the default settings, {:.1}k entries/s, peak resident {:.0} MiB; with --snapshot-every 0: {:.1} s, {:.1}k entries/s, peak resident {:.0} MiB; default {:.0}% of no snapshots",
        events.div_ceil(8) * 8,
        default.appended,
        default.seconds,
        rate(&default) / 1e3,
        default.peak_mib,
        plain.seconds,
        rate(&plain) / 1e3,
        plain.peak_mib,
        100.0 * rate(&default) / rate(&plain)
    );
}

/// Writes `lifecycles` cold-bound lifecycles as watch-event lines (`{"type", "object"}`).
fn write_events(path: &Path, lifecycles: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("events file"));
    let mut generator = Lifecycles::new();
    let mut batch = Vec::new();
    for k in 0..lifecycles {
        generator.bind(k, &mut batch);
        for (event, object) in batch.drain(..) {
            let kind = match event {
                WatchEventType::Added => "ADDED",
                WatchEventType::Modified => "MODIFIED",
                WatchEventType::Deleted => "DELETED",
            };
            let line = serde_json::json!({"type": kind, "object": object});
            writeln!(out, "{line}").expect("write an event");
        }
    }
    out.flush().expect("flush the events file");
}

/// Runs `claim-ledger ingest` of `file` into a new ledger at `db` with `flags`.
fn ingest(db: &Path, file: &Path, flags: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_claim-ledger"))
        .arg("ingest")
        .arg("--db")
        .arg(db)
        .args(flags)
        .arg(file)
        .stdout(Stdio::piped())
        // A file, not a pipe: nothing reads it while the child runs.
        .stderr(std::fs::File::create(db.with_extension("stderr")).expect("stderr file"))
        .spawn()
        .expect("start claim-ledger ingest");
    let pid = child.id().to_string();
    let mut peak_kib = 0u64;
    while child.try_wait().expect("wait for ingest").is_none() {
        peak_kib = peak_kib.max(memory_of(&pid, "VmHWM") / 1024);
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().expect("ingest output");
    assert!(
        output.status.success(),
        "ingest failed: {:?}: {}",
        output.status,
        std::fs::read_to_string(db.with_extension("stderr")).unwrap_or_default()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("ingest prints a JSON summary");
    Run {
        appended: summary["appended"].as_u64().expect("appended"),
        seconds,
        peak_mib: peak_kib as f64 / 1024.0,
    }
}
