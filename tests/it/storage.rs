//! The ledger directory and its store under damage, through the binary: what a damaged,
//! truncated, rolled-back or foreign store, or a directory that is not a ledger, makes of
//! every opening command. The rule: exit 0 with the full, unchanged ledger, or exit 1
//! naming a cause; a path that is not a ledger is exit 2 and nothing is written there.
//! Never a panic (exit 101), a hang, or a pass with fewer entries.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{ok, Run, BIN};
use serde_json::Value;

/// The causes a refusal may name (`verify`'s failure kinds).
const CAUSES: &[&str] = &[
    "hash_mismatch",
    "seq_gap",
    "seq_mismatch",
    "prev_hash_mismatch",
    "undecodable",
    "transition_mismatch",
    "head_mismatch",
    "snapshot_mismatch",
    "trailing_entry",
    "tree_mismatch",
    "checkpoint_mismatch",
    "rolled_back",
    "store_damaged",
    "foreign_store",
];

/// How long one command may take on a damaged store before it counts as hung.
const HANG: Duration = Duration::from_secs(60);

fn fixture_events() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("adversarial")
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| support::event_lines(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// Runs the binary with a deadline; a run past it is a hang and fails the test.
fn run_bounded(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claim-ledger");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > HANG {
            child.kill().ok();
            panic!("claim-ledger {args:?} hung for {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A ledger built by `ingest` from every lifecycle fixture, with snapshots and a signed
/// checkpoint; returns its verify report.
fn build(dir: &Path) -> Value {
    let db = dir.to_str().unwrap();
    ok(
        &["ingest", "--db", db, "--snapshot-every", "40", "-"],
        Some(&fixture_events()),
    );
    let report = ok(&["verify", "--db", db], None).json();
    assert!(report["verified_seq"].as_u64().unwrap() > 100, "{report}");
    report
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file below `dir`, with its size and bytes, to show nothing was written.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if dir.is_file() {
        return vec![(dir.to_path_buf(), std::fs::read(dir).unwrap())];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push((path.clone(), Vec::new()));
            out.extend(snapshot_of(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// Judges one opening command's result on a possibly damaged copy of a ledger whose
/// pristine verify report is `pristine`.
fn judge(what: &str, args: &[&str], result: &Run, pristine: &Value) {
    assert_ne!(
        result.code, 101,
        "{what}: claim-ledger {args:?} panicked: {result:?}"
    );
    assert!(
        !result.stderr.contains("panicked at"),
        "{what}: a panic was printed: {}",
        result.stderr
    );
    match result.code {
        0 => {
            if args[0] == "verify" && !args.contains(&"--allow-corrupt") {
                let report = result.json();
                assert_eq!(
                    (&report["verified_seq"], &report["verified_hash"]),
                    (&pristine["verified_seq"], &pristine["verified_hash"]),
                    "{what}: verify passed with another ledger: {report}"
                );
            }
        }
        1 => {
            let text = format!("{}{}", result.stdout, result.stderr);
            assert!(
                CAUSES.iter().any(|cause| text.contains(cause)),
                "{what}: exit 1 without a named cause: {result:?}"
            );
        }
        other => panic!("{what}: claim-ledger {args:?} exited {other}: {result:?}"),
    }
}

/// Opening commands to try on a damaged copy.
fn opening_commands(db: &str) -> Vec<Vec<String>> {
    let commands: [&[&str]; 5] = [
        &["verify", "--db", db],
        &["verify", "--db", db, "--chain-only"],
        &["state", "--db", db],
        &["history", "--db", db, "--pod-uid", "p"],
        &["verify", "--db", db, "--allow-corrupt"],
    ];
    commands
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// A deterministic stream of numbers for trial `i` (blake3 of a seed and the index).
fn draw(seed: &str, i: u64) -> u64 {
    let digest = blake3::hash(format!("{seed}/{i}").as_bytes());
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap())
}

fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = snapshot_of(&dir.join("sled"))
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.is_file() && std::fs::metadata(path).unwrap().len() > 0)
        .collect();
    files.sort();
    files
}

#[test]
fn damage_at_random_offsets_is_refused_with_a_cause_or_harmless() {
    let root = tempfile::tempdir().unwrap();
    let pristine_dir = root.path().join("pristine");
    let pristine = build(&pristine_dir);
    let trials: u64 = std::env::var("CLAIM_LEDGER_DAMAGE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut refused = 0;
    for trial in 0..trials {
        let dir = root.path().join(format!("trial-{trial}"));
        copy_dir(&pristine_dir, &dir);
        let files = store_files(&dir);
        let file = &files[(draw("file", trial) % files.len() as u64) as usize];
        let mut bytes = std::fs::read(file).unwrap();
        let len = bytes.len() as u64;
        let offset = (draw("offset", trial) % len) as usize;
        let what = match trial % 3 {
            // Zero a 4 KiB page, as a lost write would.
            0 => {
                let end = (offset + 4096).min(bytes.len());
                bytes[offset..end].fill(0);
                format!("{} zeroed at {offset}..{end}", file.display())
            }
            // Flip one byte.
            1 => {
                bytes[offset] ^= 0x5a;
                format!("{} byte {offset} flipped", file.display())
            }
            // Random garbage over 64 bytes.
            _ => {
                let end = (offset + 64).min(bytes.len());
                for (i, byte) in bytes[offset..end].iter_mut().enumerate() {
                    *byte = draw("garbage", trial * 64 + i as u64) as u8;
                }
                format!("{} garbage at {offset}..{end}", file.display())
            }
        };
        std::fs::write(file, &bytes).unwrap();
        let db = dir.to_str().unwrap().to_string();
        for args in opening_commands(&db) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let result = run_bounded(&args);
            if result.code == 1 {
                refused += 1;
            }
            judge(&what, &args, &result, &pristine);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    eprintln!("{refused} refusals over {trials} damaged copies");
}

#[test]
fn a_truncated_emptied_or_older_store_is_refused_as_rolled_back() {
    let root = tempfile::tempdir().unwrap();
    let pristine_dir = root.path().join("pristine");
    let db_pristine = pristine_dir.to_str().unwrap();
    // An older copy of the store, taken after the first half of the events.
    let events = fixture_events();
    let lines: Vec<&str> = events.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    ok(
        &["ingest", "--db", db_pristine, "-"],
        Some(&(first.join("\n") + "\n")),
    );
    let older = root.path().join("older-sled");
    copy_dir(&pristine_dir.join("sled"), &older);
    ok(
        &["ingest", "--db", db_pristine, "-"],
        Some(&(second.join("\n") + "\n")),
    );
    let pristine = ok(&["verify", "--db", db_pristine], None).json();

    type Damage = fn(&Path, &Path);
    fn truncate(dir: &Path, percent: u64) {
        let file = dir.join("sled/db");
        let len = std::fs::metadata(&file).unwrap().len();
        let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        handle.set_len(len * percent / 100).unwrap();
    }
    // A truncation sled notices is refused as damage; one it does not notice (it drops
    // everything after the cut) must be refused as a rollback, never pass.
    let truncations: [(&str, Damage); 4] = [
        ("db truncated to 90%", |dir, _| truncate(dir, 90)),
        ("db truncated to 50%", |dir, _| truncate(dir, 50)),
        ("db truncated to 25%", |dir, _| truncate(dir, 25)),
        ("db truncated to nothing", |dir, _| truncate(dir, 0)),
    ];
    for (i, (what, damage)) in truncations.iter().enumerate() {
        let dir = root.path().join(format!("truncated-{i}"));
        copy_dir(&pristine_dir, &dir);
        damage(&dir, &older);
        let db = dir.to_str().unwrap();
        for args in opening_commands(db) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let result = run_bounded(&args);
            // Exit 0 only with the whole ledger (a cut through sled's unused tail).
            judge(what, &args, &result, &pristine);
            let text = format!("{}{}", result.stdout, result.stderr);
            assert!(
                result.code == 0 || text.contains("rolled_back") || text.contains("store_damaged"),
                "{what}: {args:?}: {text}"
            );
        }
    }
    let cases: [(&str, Damage); 3] = [
        ("db deleted, conf kept", |dir, _| {
            std::fs::remove_file(dir.join("sled/db")).unwrap();
        }),
        ("the whole store deleted", |dir, _| {
            std::fs::remove_dir_all(dir.join("sled")).unwrap();
            std::fs::create_dir(dir.join("sled")).unwrap();
        }),
        (
            "the store replaced by an older copy of itself",
            |dir, older| {
                std::fs::remove_dir_all(dir.join("sled")).unwrap();
                copy_dir(older, &dir.join("sled"));
            },
        ),
    ];
    for (i, (what, damage)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case-{i}"));
        copy_dir(&pristine_dir, &dir);
        damage(&dir, &older);
        let db = dir.to_str().unwrap();
        let result = run_bounded(&["verify", "--db", db]);
        assert_eq!(result.code, 1, "{what}: {result:?}");
        // sled refuses its own files when its snapshot outlives the log it indexes.
        let noticed_by_sled = i == 0 && result.stderr.contains("store_damaged");
        assert!(
            result.stderr.contains("rolled_back") || noticed_by_sled,
            "{what}: not named rolled back: {}",
            result.stderr
        );
        assert!(
            result.stderr.contains(&format!(
                "entry {} (hash {})",
                pristine["verified_seq"],
                pristine["verified_hash"].as_str().unwrap()
            )),
            "{what}: the acknowledged head is not named: {}",
            result.stderr
        );
        // Nothing is appended onto a shortened chain.
        let ingest = run_bounded(&["ingest", "--db", db, "/dev/null"]);
        assert_eq!(ingest.code, 1, "{what}: ingest on it: {ingest:?}");
        for args in opening_commands(db) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let result = run_bounded(&args);
            judge(what, &args, &result, &pristine);
            assert_ne!(result.code, 0, "{what}: {args:?} passed: {result:?}");
        }
    }
}

#[test]
fn a_store_from_another_ledger_is_refused_as_foreign() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let events = fixture_events();
    for dir in [&a, &b] {
        ok(
            &["ingest", "--db", dir.to_str().unwrap(), "-"],
            Some(&events),
        );
    }
    std::fs::remove_dir_all(b.join("sled")).unwrap();
    copy_dir(&a.join("sled"), &b.join("sled"));
    let result = run_bounded(&["verify", "--db", b.to_str().unwrap()]);
    assert_eq!(result.code, 1, "{result:?}");
    assert!(result.stderr.contains("foreign_store"), "{}", result.stderr);
}

#[test]
fn a_path_that_is_not_a_ledger_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    // A demo-like directory: the ledger is one level down.
    let parent = root.path().join("claim-ledger-demo");
    let ledger = parent.join("ledger");
    ok(
        &["ingest", "--db", ledger.to_str().unwrap(), "-"],
        Some(&fixture_events()),
    );
    std::fs::write(parent.join("token"), "secret\n").unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, "not a ledger\n").unwrap();
    let legacy = root.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(legacy.join("conf"), "segment_size: 524288\n").unwrap();
    std::fs::write(legacy.join("db"), [0u8; 64]).unwrap();

    let cases: [(&Path, &str); 4] = [
        (&parent, "a ledger is at"),
        (&empty, "the directory is empty"),
        (&file, "it is a file"),
        (&legacy, "before ledger manifests"),
    ];
    for (path, says) in cases {
        let before = snapshot_of(path);
        let db = path.to_str().unwrap();
        for command in [
            vec!["verify", "--db", db],
            vec!["verify", "--db", db, "--chain-only"],
            vec!["verify", "--db", db, "--allow-corrupt"],
            vec!["state", "--db", db],
            vec!["export", "--db", db],
            vec!["history", "--db", db, "--pod-uid", "p"],
        ] {
            let result = run_bounded(&command);
            assert_eq!(result.code, 2, "{command:?}: {result:?}");
            assert!(
                result.stderr.contains("no ledger at") && result.stderr.contains(says),
                "{command:?}: {}",
                result.stderr
            );
        }
        // ingest creates ledgers only in absent or empty directories.
        if path != empty.as_path() {
            let result = run_bounded(&["ingest", "--db", db, "/dev/null"]);
            assert_eq!(result.code, 2, "ingest into {}: {result:?}", path.display());
        }
        assert_eq!(
            snapshot_of(path),
            before,
            "{} was written to",
            path.display()
        );
    }
    if let Some(hint) = run_bounded(&["verify", "--db", parent.to_str().unwrap()])
        .stderr
        .split("a ledger is at ")
        .nth(1)
    {
        assert!(hint.contains(ledger.to_str().unwrap()), "{hint}");
    }
    // The ledger below still verifies, and ingest did create one in the empty directory.
    ok(&["verify", "--db", ledger.to_str().unwrap()], None);
    ok(
        &["ingest", "--db", empty.to_str().unwrap(), "/dev/null"],
        None,
    );
    ok(&["verify", "--db", empty.to_str().unwrap()], None);
}

#[test]
fn a_new_ledger_directory_is_owner_only_and_carries_a_manifest() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fresh");
    ok(
        &["ingest", "--db", dir.to_str().unwrap(), "/dev/null"],
        None,
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("sled")), 0o700);
    assert_eq!(mode(&dir.join("manifest.json")), 0o600);
    assert_eq!(mode(&dir.join("high-water")), 0o600);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["claim_ledger"], "ledger");
    assert_eq!(manifest["store"], "sled");
    assert_eq!(manifest["ledger_id"].as_str().unwrap().len(), 32);
}

#[test]
fn snapshots_are_files_beside_sled_and_only_the_newest_kept_ones_stay() {
    let root = tempfile::tempdir().unwrap();
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir.join("sled").join("claim-ledger-snapshots"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
        names.sort();
        names
    };
    let mut counts = Vec::new();
    let events = fixture_events();
    let lines: Vec<&str> = events.lines().collect();
    let quarter = lines.len().div_ceil(4);
    for keep in ["1", "0"] {
        let dir = root.path().join(format!("keep-{keep}"));
        let db = dir.to_str().unwrap();
        let args = [
            "ingest",
            "--db",
            db,
            "--snapshot-every",
            "20",
            "--keep-snapshots",
            keep,
            // A flush per batch, and a snapshot due at every few.
            "--batch-size",
            "8",
            "-",
        ];
        // In four runs: each writes at least the snapshot due at its end and waits for
        // it (within one run, one written in the background while others fall due may be
        // all there is on a busy machine).
        for run in lines.chunks(quarter) {
            ok(&args, Some(&(run.join("\n") + "\n")));
        }
        let names = files(&dir);
        assert!(
            names
                .iter()
                .all(|n| n.len() == 29 && n.ends_with(".snapshot")),
            "{names:?}"
        );
        // What is left verifies, and so do state and history before the snapshots kept.
        let report = ok(&["verify", "--db", db], None).json();
        assert!(report["failure"].is_null(), "{report}");
        ok(&["state", "--db", db, "--as-of-seq", "3"], None);
        counts.push(names.len());
    }
    // Keeping one: the newest committed one, and perhaps one written after it that no
    // entry commits to yet. Keeping every one: more.
    assert!(counts[0] <= 2, "{counts:?}");
    assert!(counts[1] > counts[0], "{counts:?}");
}

#[test]
fn a_snapshot_left_at_the_head_by_one_run_is_committed_to_by_the_next() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ledger");
    let db = dir.to_str().unwrap();
    let all = fixture_events();
    let lines: Vec<&str> = all.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let ingest = |events: &[&str]| {
        let args = ["ingest", "--db", db, "--snapshot-every", "10", "-"];
        ok(&args, Some(&(events.join("\n") + "\n"))).json()["head_seq"]
            .as_u64()
            .unwrap()
    };
    // One batch, one flush: the first run's snapshot is written at its head, after its
    // last append, so no entry of that run commits to it.
    let head = ingest(first);
    let snapshot_file = dir
        .join("sled")
        .join("claim-ledger-snapshots")
        .join(format!("{head:020}.snapshot"));
    assert!(snapshot_file.exists());
    // The second run checks it against the state it derives at that head, and its first
    // entry commits to it.
    let later = ingest(second);
    assert!(later > head);
    let export = ok(&["export", "--db", db], None).stdout;
    let entry: Value = serde_json::from_str(export.lines().nth(head as usize).unwrap()).unwrap();
    assert_eq!(entry["seq"], head + 1, "{entry}");
    let digest = entry["entry"]["snapshot"]
        .as_str()
        .expect("a snapshot digest");
    let bytes = std::fs::read(&snapshot_file).unwrap();
    assert_eq!(digest, schemas::entry::snapshot_digest(&bytes).to_string());
    let report = ok(&["verify", "--db", db], None).json();
    assert!(report["failure"].is_null(), "{report}");
}
