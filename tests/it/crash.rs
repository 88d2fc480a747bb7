//! Crash consistency of the on-disk ledger under SIGKILL.
//!
//! The parent test re-executes this test binary as a child process (selected with
//! `--exact` and the environment variable [`CHILD_ENV`]) that opens a `Ledger` on a shared
//! directory and appends realistic watch-event changes forever, in batches of 1 to 64
//! (and now and then 600 to 1200, written in pipelined chunks),
//! alternating `Ledger::append` + `Ledger::flush` with `watcher::ingest`, and prints
//! `ack <seq>` after each flush returns. The parent kills the child with SIGKILL at a random
//! point (sometimes before it has acknowledged anything, mostly in the middle of the
//! stream), then reopens the same directory and requires that:
//!
//! * `Ledger::open` succeeds (the tail after the latest snapshot verifies);
//! * a full `verify()` is ok and covers every entry up to the head;
//! * the head is at or beyond the last acknowledged seq (no acknowledged entry lost), and
//!   an entry acknowledged in an earlier cycle still has the same hash;
//! * an append works, and the next child run starts from there.
//!
//! The log grows across all cycles. Set `CLAIM_LEDGER_CRASH_TEST_SEED` to replay the same
//! kill schedule and event streams (kill points still depend on the machine's speed).
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::support::{
    normalize_event, open_ledger, seed_from_env, seeded_rng, to_lines, WatchEventGenerator,
};
use chrono::Utc;
use ledger::{AppendOutcome, LedgerConfig};
use proptest::prelude::{Rng, RngExt};
use proptest::test_runner::TestRng;
use serde_json::json;

/// Set in the child: the ledger directory to append to.
const CHILD_ENV: &str = "CLAIM_LEDGER_CRASH_CHILD";
/// Set in the child: the cycle number (makes its uids unique).
const RUN_ENV: &str = "CLAIM_LEDGER_CRASH_RUN";
/// Set in the child: its event and batch-size seed.
const CHILD_SEED_ENV: &str = "CLAIM_LEDGER_CRASH_CHILD_SEED";
/// Optional, for the parent: the seed of the whole schedule.
const SEED_ENV: &str = "CLAIM_LEDGER_CRASH_TEST_SEED";
/// The name of the child test within this module, for `--exact` (see [`child_test`]).
const CHILD_TEST: &str = "crash_child_appends_until_killed";

/// The child test's full name as the test binary lists it: its module path (without the
/// binary's crate name) and its name.
fn child_test() -> String {
    let module = module_path!()
        .split_once("::")
        .map_or("", |(_, module)| module);
    format!("{module}::{CHILD_TEST}")
}
/// Kill/reopen cycles.
const CYCLES: u64 = 24;
/// Snapshots every this many entries, so reopen exercises snapshot + tail verification.
const SNAPSHOT_EVERY: u64 = 200;

fn config() -> LedgerConfig {
    LedgerConfig {
        background_snapshots: false,
        snapshot_every: SNAPSHOT_EVERY,
        ..LedgerConfig::default()
    }
}

/// The child: appends until killed. Without [`CHILD_ENV`] (a normal test run) it does nothing.
#[test]
fn crash_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let run: u64 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut ledger = match open_ledger(Path::new(&dir), config()) {
        Ok(ledger) => ledger,
        Err(e) => {
            println!("error open: {e}");
            std::process::exit(3);
        }
    };
    println!("opened {}", ledger.head().seq);
    let mut rng = seeded_rng(seed);
    let mut generator = WatchEventGenerator::new(&format!("run{run}"), rng.next_u64());
    // A safety net only: the parent always kills well before this.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batch = 0u64;
    while Instant::now() < deadline {
        // Now and then a batch large enough to be written in pipelined chunks.
        let size = if rng.random_ratio(1, 8) {
            rng.random_range(600..=1200)
        } else {
            rng.random_range(1..=64)
        } as usize;
        let events = generator.events(size);
        let acked = if batch % 2 == 0 {
            let changes: Vec<_> = events.iter().filter_map(normalize_event).collect();
            let outcomes = ledger.append(changes, Utc::now()).expect("append");
            assert!(outcomes
                .iter()
                .all(|o| !matches!(o, AppendOutcome::Stale { .. })));
            ledger.flush().expect("flush")
        } else {
            // Through the ingest path, sometimes in several flushed batches.
            let options = watcher::IngestOptions {
                batch_size: rng.random_range(1..=size as u64) as usize,
            };
            let report =
                watcher::ingest(&mut ledger, to_lines(&events).as_bytes(), options, Utc::now)
                    .expect("ingest");
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            report.head_seq
        };
        assert_eq!(
            acked,
            ledger.head().seq,
            "flush acknowledged less than the head"
        );
        println!("ack {acked}");
        batch += 1;
    }
    panic!("the child was not killed within 60 s");
}

/// What the parent appends after each reopen: a directly created Sandbox with its own uid.
fn marker(cycle: u64) -> schemas::ObjectChange {
    let object = json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": format!("marker-{cycle}"), "namespace": "crash",
                     "uid": format!("5a4db0x0-marker-{cycle:04}"),
                     "labels": {"openshell.ai/sandbox-id": format!("sbx-marker-{cycle}")},
                     "resourceVersion": (cycle + 1).to_string()},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent"}]}}}
    });
    normalize_event(&json!({"type": "ADDED", "object": object})).expect("a Sandbox is recorded")
}

/// One child run: spawns it, kills it at a random point, returns the acked seqs, the
/// head it opened at (if it got that far).
fn run_child(dir: &Path, cycle: u64, rng: &mut TestRng) -> (Vec<u64>, Option<u64>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([&child_test(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(RUN_ENV, cycle.to_string())
        .env(CHILD_SEED_ENV, rng.next_u64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test binary");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    let ack_count = |lines: &[String]| lines.iter().filter(|l| l.starts_with("ack ")).count();
    if rng.random_ratio(1, 5) {
        // Anywhere, including during open and recovery.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=60)));
    } else {
        // In the middle of the stream: after a few acks, then a little later.
        let wanted = rng.random_range(1..=3) as usize;
        while ack_count(&lines) < wanted {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("cycle {cycle}: the child acknowledged nothing in 30 s: {lines:?}");
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=50)));
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    out_reader.join().unwrap();
    lines.extend(rx.try_iter());
    let stderr_text = err_reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "cycle {cycle}: the child ended by itself ({status:?}) instead of being killed\n\
         stdout: {lines:?}\nstderr: {stderr_text}"
    );
    let mut acks = Vec::new();
    let mut opened = None;
    for line in &lines {
        if let Some(seq) = line.strip_prefix("ack ") {
            acks.push(seq.trim().parse::<u64>().unwrap());
        } else if let Some(seq) = line.strip_prefix("opened ") {
            opened = Some(seq.trim().parse::<u64>().unwrap());
        } else {
            assert!(
                !line.starts_with("error"),
                "cycle {cycle}: the child failed: {line}\nstderr: {stderr_text}"
            );
        }
    }
    (acks, opened)
}

#[test]
fn acknowledged_entries_survive_sigkill_and_appending_resumes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed = seed_from_env(SEED_ENV);
    eprintln!("crash schedule seed {seed} (set {SEED_ENV}={seed} to replay it)");
    let mut rng = seeded_rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // (seq, hash) of the parent's own last append: durable, so it must never change.
    let mut watermark: Option<(u64, schemas::Hash)> = None;
    let mut durable = 0u64;
    let mut cycles_with_acks = 0;
    for cycle in 0..CYCLES {
        let (acks, opened) = run_child(dir.path(), cycle, &mut rng);
        if let Some(opened) = opened {
            assert!(
                opened >= durable,
                "cycle {cycle}: the child opened at seq {opened}, before the durable {durable}"
            );
        }
        assert!(
            acks.windows(2).all(|w| w[0] <= w[1]),
            "cycle {cycle}: acks went backwards: {acks:?}"
        );
        let last_ack = acks.last().copied().unwrap_or(0);
        if !acks.is_empty() {
            cycles_with_acks += 1;
        }

        let mut ledger = open_ledger(dir.path(), config()).unwrap_or_else(|e| {
            panic!("cycle {cycle}: reopening after SIGKILL failed (last ack {last_ack}): {e}")
        });
        let head = ledger.head();
        assert!(
            head.seq >= last_ack,
            "cycle {cycle}: acknowledged seq {last_ack} lost: the head is {}",
            head.seq
        );
        assert!(
            head.seq >= durable,
            "cycle {cycle}: durable seq {durable} lost: the head is {}",
            head.seq
        );
        let report = ledger.verify().unwrap();
        assert!(
            report.ok(),
            "cycle {cycle}: verification failed after SIGKILL: {:?}",
            report.failure
        );
        assert_eq!(report.verified_seq, head.seq, "cycle {cycle}");
        assert_eq!(report.entries, head.seq, "cycle {cycle}");
        assert_eq!(report.verified_hash, head.hash, "cycle {cycle}");
        if let Some((seq, hash)) = watermark {
            let stored = ledger
                .entry(seq)
                .unwrap()
                .expect("a durable entry is present");
            assert_eq!(
                stored.hash, hash,
                "cycle {cycle}: durable entry {seq} changed"
            );
        }

        let outcomes = ledger.append([marker(cycle)], Utc::now()).unwrap();
        assert!(
            matches!(outcomes[..], [AppendOutcome::Appended { seq, .. }] if seq == head.seq + 1),
            "cycle {cycle}: appending after recovery gave {outcomes:?}"
        );
        assert_eq!(ledger.flush().unwrap(), head.seq + 1);
        durable = head.seq + 1;
        watermark = Some((durable, ledger.head().hash));
        eprintln!(
            "cycle {cycle}: {} acks, last {last_ack}, reopened at {}, {} entries verified",
            acks.len(),
            head.seq,
            report.entries
        );
        drop(ledger);
    }
    assert!(
        cycles_with_acks >= CYCLES / 2,
        "only {cycles_with_acks} of {CYCLES} children acknowledged anything before the kill"
    );

    // Everything the parent appended is still there, once, in order.
    let ledger = open_ledger(dir.path(), config()).unwrap();
    assert_eq!(ledger.head().seq, durable);
    let mut last = 0;
    for cycle in 0..CYCLES {
        let history = ledger
            .history_of_uid(&format!("5a4db0x0-marker-{cycle:04}"))
            .unwrap();
        assert_eq!(history.len(), 1, "marker {cycle}");
        assert!(history[0].entry.seq > last, "markers out of order");
        last = history[0].entry.seq;
    }
    assert!(ledger.verify().unwrap().ok());
}
