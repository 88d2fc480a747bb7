//! Black-box tests of the `claim-ledger` binary on the lifecycle fixtures in
//! `tests/fixtures/`: ingest (idempotent re-ingest, bad lines reported by number with
//! exit 2), verify, state (now, `--as-of-seq`, `--as-of`, `--output table`), history by
//! uid and by name, check (exit codes and reasons, replayed step by step against the
//! fixtures' expectations), export (every line re-hashed offline with blake3 and chained,
//! `--from-seq`/`--to-seq`), and usage and input errors.
//!
//! Only the binary's arguments, exit codes, stdout and stderr are used, never the library;
//! the one exception forges a store record (with the test support's raw store access) to
//! give the binary a ledger that contradicts its own signed checkpoint.

use std::path::{Path, PathBuf};

use crate::support::process::{ok, run};
use crate::support::{event_lines, open_raw};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A temporary directory with a ledger path and a place for input files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> String {
        self.dir.path().join("db").to_str().unwrap().to_string()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path: PathBuf = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Ingests a fixture's event lines from a file; returns the report.
    fn ingest_fixture(&self, name: &str) -> Value {
        let file = self.file(name, &event_lines(&fixture(name)));
        ok(&["ingest", "--db", &self.db(), &file], None).json()
    }

    fn export(&self) -> Vec<Value> {
        ok(&["export", "--db", &self.db(), "--format", "jsonl"], None).lines()
    }
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

fn object(line: &Value) -> &Value {
    &line["entry"]["change"]["object"]
}

/// Whether an export line records `uid` or names it in one of its transitions (history
/// lists both: the claim update that binds a pod belongs to the pod's history).
fn mentions(line: &Value, uid: &str) -> bool {
    object(line)["uid"] == uid
        || line["entry"]["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .any(|t| t.iter().any(|(k, v)| k.ends_with("uid") && v == uid))
}

#[test]
fn ingest_then_ingest_again_appends_nothing() {
    let scratch = Scratch::new();
    let events = event_lines(&fixture("warm_bind.jsonl"));
    let count = events.lines().count() as u64;
    let first = scratch.ingest_fixture("warm_bind.jsonl");
    let appended = first["appended"].as_u64().unwrap();
    assert!(appended > 0, "{first}");
    assert_eq!(first["errors"], Value::Array(vec![]));
    assert_eq!(first["head_seq"], appended);
    let total = |r: &Value| {
        ["appended", "duplicate", "stale", "ignored"]
            .iter()
            .map(|k| r[k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        total(&first),
        count,
        "every event is accounted for: {first}"
    );

    let file = scratch.file("again.jsonl", &events);
    let second = ok(&["ingest", "--db", &scratch.db(), &file], None).json();
    assert_eq!(second["appended"], 0, "{second}");
    assert_eq!(second["head_seq"], appended);
    assert_eq!(second["errors"], Value::Array(vec![]));
    assert_eq!(total(&second), count);

    // The same through standard input, in small batches.
    let third = ok(
        &["ingest", "--db", &scratch.db(), "--batch-size", "3", "-"],
        Some(&events),
    )
    .json();
    assert_eq!(third["appended"], 0, "{third}");
    assert_eq!(scratch.export().len() as u64, appended);
}

#[test]
fn bad_lines_are_reported_by_number_and_good_lines_still_appended() {
    let events: Vec<String> = event_lines(&fixture("release_background.jsonl"))
        .lines()
        .map(str::to_string)
        .collect();
    let no_uid_pod = r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"agents","resourceVersion":"1","ownerReferences":[{"apiVersion":"agents.x-k8s.io/v1alpha1","kind":"Sandbox","name":"s","uid":"5a4db0x0-1","controller":true}]}}}"#;
    let mut mixed = vec![events[0].clone(), events[1].clone()];
    mixed.push("this is not JSON".into()); // line 3
    mixed.push(events[2].clone());
    mixed.push(r#"{"type":"EXPLODED","object":{"kind":"Pod"}}"#.into()); // line 5
    mixed.push(no_uid_pod.into()); // line 6
    mixed.extend(events[3..].iter().cloned());
    let good: String = events.iter().map(|l| format!("{l}\n")).collect();
    let mixed: String = mixed.iter().map(|l| format!("{l}\n")).collect();

    let control = Scratch::new();
    let file = control.file("good.jsonl", &good);
    let expected = ok(&["ingest", "--db", &control.db(), &file], None).json();

    let scratch = Scratch::new();
    let file = scratch.file("mixed.jsonl", &mixed);
    let result = run(&["ingest", "--db", &scratch.db(), &file], None);
    assert_eq!(result.code, 2, "{result:?}");
    let report = result.json();
    assert_eq!(report["appended"], expected["appended"], "{report}");
    assert_eq!(report["ignored"], expected["ignored"], "{report}");
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 5, 6]);
    for (line, what) in [(3, "not JSON"), (5, "EXPLODED"), (6, "metadata.uid")] {
        let message = result
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("line {line}: ")))
            .unwrap_or_else(|| panic!("stderr does not name line {line}: {}", result.stderr));
        assert!(message.contains(what), "{message}");
    }
    assert!(
        result.stderr.contains("3 line(s) rejected"),
        "{}",
        result.stderr
    );

    // The same objects, in the same order, were recorded as without the bad lines.
    let key = |l: &Value| {
        let o = object(l);
        (
            o["uid"].clone(),
            o["resource_version"].clone(),
            o["change"].clone(),
        )
    };
    let got: Vec<_> = scratch.export().iter().map(key).collect();
    let want: Vec<_> = control.export().iter().map(key).collect();
    assert_eq!(got, want);
    let verify = ok(&["verify", "--db", &scratch.db()], None).json();
    assert_eq!(verify["failure"], Value::Null);
    assert_eq!(verify["entries"], expected["appended"]);
}

#[test]
fn verify_prints_a_json_report_and_exits_zero() {
    let scratch = Scratch::new();
    // An empty ledger (created by ingesting nothing) verifies.
    ok(&["ingest", "--db", &scratch.db()], Some(""));
    let empty = ok(&["verify", "--db", &scratch.db()], None).json();
    assert_eq!(empty["entries"], 0);
    assert_eq!(empty["failure"], Value::Null);

    let head = scratch.ingest_fixture("pod_replacement.jsonl")["head_seq"]
        .as_u64()
        .unwrap();
    let report = ok(&["verify", "--db", &scratch.db()], None).json();
    assert_eq!(report["from_seq"], 1);
    assert_eq!(report["verified_seq"], head);
    assert_eq!(report["entries"], head);
    assert_eq!(report["head_seq"], head);
    assert_eq!(report["failure"], Value::Null);
    let export = scratch.export();
    assert_eq!(report["verified_hash"], export.last().unwrap()["hash"]);
}

/// The seq of the first entry whose transitions include a `bound`.
fn first_bind(export: &[Value]) -> (u64, Value) {
    for line in export {
        for transition in line["entry"]["transitions"].as_array().unwrap() {
            if transition["transition"] == "bound" {
                return (line["seq"].as_u64().unwrap(), transition.clone());
            }
        }
    }
    panic!("no entry binds a pod");
}

#[test]
fn state_now_and_as_of_a_seq() {
    let scratch = Scratch::new();
    let head = scratch.ingest_fixture("warm_bind.jsonl")["head_seq"]
        .as_u64()
        .unwrap();
    let db = scratch.db();
    let (bind, transition) = first_bind(&scratch.export());
    let pod_uid = transition["pod_uid"].as_str().unwrap();

    let now = ok(&["state", "--db", &db], None).json();
    assert_eq!(now["seq"], head);
    let objects = now["objects"].as_array().unwrap();
    assert!(objects
        .iter()
        .any(|o| o["uid"] == pod_uid && o["kind"] == "Pod"));
    for kind in ["Sandbox", "SandboxClaim", "Pod", "PersistentVolumeClaim"] {
        assert!(objects.iter().any(|o| o["kind"] == kind), "no live {kind}");
    }
    let bindings = now["bindings"].as_array().unwrap();
    let binding = bindings
        .iter()
        .find(|b| b["pod"]["uid"] == pod_uid)
        .expect("the pod is still bound at the head");
    assert_eq!(binding["kind"], "claim");
    assert_eq!(binding["since_seq"], bind);
    assert_eq!(binding["sandbox"]["uid"], transition["sandbox_uid"]);
    assert_eq!(binding["claim"]["uid"], transition["claim_uid"]);

    let before = ok(
        &["state", "--db", &db, "--as-of-seq", &(bind - 1).to_string()],
        None,
    )
    .json();
    assert_eq!(before["seq"], bind - 1);
    assert_eq!(
        before["bindings"],
        Value::Array(vec![]),
        "no binding before seq {bind}"
    );
    assert!(before["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["uid"] == pod_uid));
    let at = ok(
        &["state", "--db", &db, "--as-of-seq", &bind.to_string()],
        None,
    )
    .json();
    assert!(at["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["pod"]["uid"] == pod_uid && b["since_seq"] == bind));
    let zero = ok(&["state", "--db", &db, "--as-of-seq", "0"], None).json();
    assert_eq!(zero["objects"], Value::Array(vec![]));

    let beyond = run(
        &["state", "--db", &db, "--as-of-seq", &(head + 1).to_string()],
        None,
    );
    assert_eq!(beyond.code, 2, "{beyond:?}");
    assert!(
        beyond.stderr.contains("beyond the head"),
        "{}",
        beyond.stderr
    );
}

#[test]
fn state_as_of_an_rfc3339_time() {
    let scratch = Scratch::new();
    let db = scratch.db();
    // Two ingests, so the two halves carry different observation times.
    let text = event_lines(&fixture("warm_bind.jsonl"));
    let events: Vec<&str> = text.lines().collect();
    let half = events.len() / 2;
    let first: String = events[..half].iter().map(|l| format!("{l}\n")).collect();
    let second: String = events[half..].iter().map(|l| format!("{l}\n")).collect();
    ok(&["ingest", "--db", &db, "-"], Some(&first));
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(&["ingest", "--db", &db, "-"], Some(&second));
    let export = scratch.export();
    let head = export.len() as u64;

    let time_of = |line: &Value| line["entry"]["observed_at"].as_str().unwrap().to_string();
    let t1 = time_of(&export[0]);
    // The last seq observed at or before t1, computed from the export.
    let expected = export
        .iter()
        .filter(|l| {
            chrono::DateTime::parse_from_rfc3339(&time_of(l)).unwrap()
                <= chrono::DateTime::parse_from_rfc3339(&t1).unwrap()
        })
        .count() as u64;
    assert!(expected < head, "the second ingest is observed later");
    let state = ok(&["state", "--db", &db, "--as-of", &t1], None).json();
    assert_eq!(state["seq"], expected);
    assert_eq!(state["at"].as_str(), Some(t1.as_str()));

    let early = ok(
        &["state", "--db", &db, "--as-of", "2000-01-01T00:00:00Z"],
        None,
    )
    .json();
    assert_eq!(early["seq"], 0);
    assert_eq!(early["objects"], Value::Array(vec![]));
    let late = ok(
        &["state", "--db", &db, "--as-of", "2999-12-31T23:59:59+01:00"],
        None,
    )
    .json();
    assert_eq!(late["seq"], head);
    assert!(!late["bindings"].as_array().unwrap().is_empty());

    for bad in [
        vec!["state", "--db", &db, "--as-of", "yesterday"],
        vec!["state", "--db", &db, "--as-of", &t1, "--as-of-seq", "1"],
    ] {
        let result = run(&bad, None);
        assert_eq!(result.code, 2, "{bad:?}: {result:?}");
    }
}

#[test]
fn state_as_a_table() {
    let scratch = Scratch::new();
    scratch.ingest_fixture("warm_bind.jsonl");
    let table = ok(&["state", "--db", &scratch.db(), "--output", "table"], None).stdout;
    assert!(table.starts_with("state as of seq "), "{table}");
    for header in [
        "KIND",
        "NAMESPACE",
        "UID",
        "BINDING",
        "POD",
        "SANDBOX",
        "CLAIM",
        "SINCE",
    ] {
        assert!(table.contains(header), "no {header} column:\n{table}");
    }
    assert!(table.contains("python-pool-x7k2p"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("claim ") && l.contains("python-pool-x7k2p")),
        "no claim binding row:\n{table}"
    );
    assert!(serde_json::from_str::<Value>(&table).is_err());
}

#[test]
fn history_by_uid_and_by_name_lists_the_right_seqs_in_order() {
    let scratch = Scratch::new();
    scratch.ingest_fixture("pod_replacement.jsonl");
    let db = scratch.db();
    let export = scratch.export();
    let pods: Vec<&Value> = export
        .iter()
        .filter(|l| object(l)["kind"] == "Pod")
        .collect();
    let namespace = object(pods[0])["namespace"].as_str().unwrap();
    let name = object(pods[0])["name"].as_str().unwrap();
    let mut uids: Vec<&str> = pods
        .iter()
        .map(|l| object(l)["uid"].as_str().unwrap())
        .collect();
    uids.sort_unstable();
    uids.dedup();
    assert!(uids.len() >= 2, "the fixture replaces the pod: {uids:?}");

    for uid in &uids {
        let history = ok(&["history", "--db", &db, "--pod-uid", uid], None).lines();
        let expected: Vec<u64> = seqs(&export)
            .into_iter()
            .zip(&export)
            .filter(|(_, l)| mentions(l, uid))
            .map(|(s, _)| s)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(seqs(&history), expected, "history of pod {uid}");
        // History lines are export lines.
        for line in &history {
            let seq = line["seq"].as_u64().unwrap();
            assert_eq!(line, &export[seq as usize - 1]);
        }
    }

    let by_name = ok(
        &[
            "history",
            "--db",
            &db,
            "--kind",
            "Pod",
            "--namespace",
            namespace,
            "--name",
            name,
        ],
        None,
    )
    .lines();
    let expected: Vec<u64> = export
        .iter()
        .filter(|l| uids.iter().any(|uid| mentions(l, uid)))
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs(&by_name), expected);
    assert!(by_name
        .windows(2)
        .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));
    let named_uids: std::collections::BTreeSet<_> = by_name
        .iter()
        .filter(|l| object(l)["kind"] == "Pod")
        .map(|l| object(l)["uid"].to_string())
        .collect();
    assert_eq!(
        named_uids.len(),
        uids.len(),
        "the name spans every pod generation"
    );

    // The other uid flags, and the kind's short names.
    for (flag, kind) in [
        ("--claim-uid", "SandboxClaim"),
        ("--sandbox-uid", "Sandbox"),
        ("--pvc-uid", "PersistentVolumeClaim"),
    ] {
        let first = export.iter().find(|l| object(l)["kind"] == kind).unwrap();
        let uid = object(first)["uid"].as_str().unwrap();
        let history = ok(&["history", "--db", &db, flag, uid], None).lines();
        assert!(!history.is_empty());
        assert!(history.iter().all(|l| mentions(l, uid)), "{flag}");
    }
    let short = ok(
        &[
            "history",
            "--db",
            &db,
            "--kind",
            "pods",
            "--namespace",
            namespace,
            "--name",
            name,
        ],
        None,
    )
    .lines();
    assert_eq!(seqs(&short), expected);
    let unknown = ok(
        &["history", "--db", &db, "--pod-uid", "deadbeef-0000"],
        None,
    );
    assert_eq!(unknown.stdout, "");
    let bad_kind = run(
        &[
            "history",
            "--db",
            &db,
            "--kind",
            "Deployment",
            "--namespace",
            namespace,
            "--name",
            name,
        ],
        None,
    );
    assert_eq!(bad_kind.code, 2, "{bad_kind:?}");
    let table = ok(
        &[
            "history",
            "--db",
            &db,
            "--pod-uid",
            uids[0],
            "--output",
            "table",
        ],
        None,
    );
    assert!(table.stdout.starts_with("   SEQ"), "{}", table.stdout);
}

/// Replays a fixture through the CLI: ingests the events before each expectation, then
/// runs `check` with the expected request and compares decision, reason and exit code.
/// Returns the (decision, reason) pairs seen.
fn replay_checks(name: &str) -> Vec<(String, Option<String>)> {
    let scratch = Scratch::new();
    let db = scratch.db();
    let mut pending = String::new();
    let mut seen = Vec::new();
    for (number, line) in fixture(name).lines().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        if value.get("type").is_some() {
            pending.push_str(line);
            pending.push('\n');
            continue;
        }
        let Some(request) = value.get("expect") else {
            continue;
        };
        if !pending.is_empty() {
            ok(&["ingest", "--db", &db, "-"], Some(&pending));
            pending.clear();
        }
        let mut args: Vec<String> = vec!["check".into(), "--db".into(), db.clone()];
        for (field, flag) in [
            ("namespace", "--namespace"),
            ("pod_name", "--pod-name"),
            ("pod_uid", "--pod-uid"),
            ("sandbox_id", "--sandbox-id"),
            ("sandbox_name", "--sandbox-name"),
            ("sandbox_uid", "--sandbox-uid"),
            ("claim_uid", "--claim-uid"),
        ] {
            if let Some(text) = request.get(field).and_then(Value::as_str) {
                args.push(flag.into());
                args.push(text.into());
            }
        }
        if request["require_claim"] == false {
            args.push("--allow-direct".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run(&args, None);
        let decision = result.json();
        let where_ = format!("{name}:{}", number + 1);
        assert_eq!(
            decision["decision"], value["decision"],
            "{where_}: {decision}"
        );
        assert_eq!(decision["reason"], value["reason"], "{where_}: {decision}");
        let allow = value["decision"] == "allow";
        assert_eq!(
            result.code,
            if allow { 0 } else { 1 },
            "{where_}: {result:?}"
        );
        if allow {
            assert_eq!(
                decision["binding"]["pod"]["uid"], request["pod_uid"],
                "{where_}"
            );
            assert_eq!(decision["reason"], Value::Null);
        } else {
            assert!(
                decision["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{where_}"
            );
        }
        seen.push((
            value["decision"].as_str().unwrap().to_string(),
            value["reason"].as_str().map(str::to_string),
        ));
    }
    seen
}

#[test]
fn check_allows_a_bound_pod_with_exit_0() {
    let seen = replay_checks("warm_bind.jsonl");
    assert!(seen.iter().any(|(d, _)| d == "allow"));
    assert!(seen
        .iter()
        .any(|(_, r)| r.as_deref() == Some("NOT_CLAIMED")));
}

#[test]
fn check_denies_a_released_pod_with_exit_1_and_the_reason() {
    let seen = replay_checks("release_background.jsonl");
    assert!(seen.iter().any(|(d, _)| d == "allow"));
    assert!(seen
        .iter()
        .any(|(_, r)| r.as_deref() == Some("BINDING_RELEASED")));
}

#[test]
fn export_lines_rehash_and_chain() {
    let scratch = Scratch::new();
    let head = scratch.ingest_fixture("release_background.jsonl")["head_seq"]
        .as_u64()
        .unwrap();
    let export = scratch.export();
    assert_eq!(seqs(&export), (1..=head).collect::<Vec<_>>());
    let mut prev = "0".repeat(64);
    for line in &export {
        for field in ["seq", "hash", "prev_hash", "entry", "bytes"] {
            assert!(line.get(field).is_some(), "no {field}: {line}");
        }
        let seq = line["seq"].as_u64().unwrap();
        assert_eq!(line["prev_hash"], prev.as_str(), "seq {seq} does not chain");
        assert_eq!(line["entry"]["seq"], seq);
        assert_eq!(line["entry"]["prev_hash"], line["prev_hash"]);
        let bytes = B64.decode(line["bytes"].as_str().unwrap()).unwrap();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"claim-ledger/entry/v1\0");
        hasher.update(&hex(line["prev_hash"].as_str().unwrap()));
        hasher.update(&seq.to_be_bytes());
        hasher.update(&bytes);
        let hash = hasher.finalize().to_hex().to_string();
        assert_eq!(line["hash"], hash.as_str(), "seq {seq} does not re-hash");
        prev = hash;
    }
    // Changing any stored byte changes the hash: the auditor really checks the bytes.
    let line = &export[2];
    let mut bytes = B64.decode(line["bytes"].as_str().unwrap()).unwrap();
    bytes[10] ^= 1;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"claim-ledger/entry/v1\0");
    hasher.update(&hex(line["prev_hash"].as_str().unwrap()));
    hasher.update(&3u64.to_be_bytes());
    hasher.update(&bytes);
    assert_ne!(line["hash"], hasher.finalize().to_hex().as_str());
}

fn hex(text: &str) -> Vec<u8> {
    assert_eq!(text.len(), 64, "{text}");
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn export_from_and_to_seq_bound_the_range() {
    let scratch = Scratch::new();
    let head = scratch.ingest_fixture("warm_bind.jsonl")["head_seq"]
        .as_u64()
        .unwrap();
    assert!(head > 8);
    let db = scratch.db();
    let all = scratch.export();
    let range = |args: &[&str]| {
        let mut full = vec!["export", "--db", &db, "--format", "jsonl"];
        full.extend_from_slice(args);
        ok(&full, None).lines()
    };
    let middle = range(&["--from-seq", "3", "--to-seq", "7"]);
    assert_eq!(seqs(&middle), [3, 4, 5, 6, 7]);
    assert_eq!(middle[..], all[2..7]);
    assert_eq!(seqs(&range(&["--from-seq", "5", "--to-seq", "5"])), [5]);
    let from = range(&["--from-seq", &(head - 2).to_string()]);
    assert_eq!(seqs(&from), [head - 2, head - 1, head]);
    assert_eq!(seqs(&range(&["--to-seq", "2"])), [1, 2]);
    assert_eq!(
        seqs(&range(&["--to-seq", &(head + 100).to_string()])).len() as u64,
        head
    );
    assert!(range(&["--from-seq", &(head + 1).to_string()]).is_empty());
    assert!(range(&["--from-seq", "7", "--to-seq", "3"]).is_empty());
    assert_eq!(seqs(&range(&["--from-seq", "0", "--to-seq", "1"])), [1]);
}

#[test]
fn usage_errors_exit_2() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["verify"],
        vec!["state"],
        vec!["frobnicate", "--db", &db],
        vec!["verify", "--db", &db, "--no-such-flag"],
        vec!["export", "--db", &db, "--format", "xml"],
        vec!["export", "--db", &db, "--from-seq", "minus-one"],
        vec!["history", "--db", &db],
        vec!["history", "--db", &db, "--kind", "Pod"],
        vec![
            "check",
            "--db",
            &db,
            "--namespace",
            "agents",
            "--pod-name",
            "p",
        ],
        vec!["state", "--db", &db, "--output", "yaml"],
    ];
    for args in cases {
        let result = run(&args, None);
        assert_eq!(result.code, 2, "claim-ledger {args:?}: {result:?}");
        assert!(
            !result.stderr.is_empty(),
            "{args:?}: usage errors explain themselves"
        );
        assert_eq!(result.stdout, "", "{args:?}");
    }
}

#[test]
fn missing_input_file_exits_2() {
    let scratch = Scratch::new();
    let missing = scratch.dir.path().join("no-such-file.jsonl");
    let result = run(
        &["ingest", "--db", &scratch.db(), missing.to_str().unwrap()],
        None,
    );
    assert_eq!(result.code, 2, "{result:?}");
    assert!(
        result.stderr.contains("no-such-file.jsonl"),
        "{}",
        result.stderr
    );
    assert_eq!(result.stdout, "");
}

#[test]
fn reading_commands_refuse_a_missing_or_empty_ledger_and_create_nothing() {
    let scratch = Scratch::new();
    let missing = scratch.db();
    let empty = scratch.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.to_str().unwrap().to_string();
    for db in [&missing, &empty] {
        let cases: Vec<Vec<&str>> = vec![
            vec!["verify", "--db", db],
            vec!["verify", "--db", db, "--chain-only"],
            vec!["state", "--db", db],
            vec!["history", "--db", db, "--pod-uid", "p"],
            vec![
                "check",
                "--db",
                db,
                "--namespace",
                "n",
                "--pod-name",
                "p",
                "--pod-uid",
                "u",
            ],
            vec!["export", "--db", db],
        ];
        for args in cases {
            let result = run(&args, None);
            assert_eq!(result.code, 2, "claim-ledger {args:?}: {result:?}");
            assert!(
                result.stderr.contains("no ledger at"),
                "{args:?}: {}",
                result.stderr
            );
        }
    }
    assert!(
        !std::path::Path::new(&missing).exists(),
        "a reading command created a ledger"
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // Ingest creates the ledger; then the reading commands work on it.
    assert_eq!(run(&["ingest", "--db", &missing], Some("")).code, 0);
    assert_eq!(run(&["verify", "--db", &missing], None).code, 0);
}

#[test]
fn ingest_verify_and_check_print_tables_for_people() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let file = scratch.file("events.jsonl", &event_lines(&fixture("warm_bind.jsonl")));
    let ingest = ok(&["ingest", "--db", &db, &file, "--output", "table"], None);
    assert!(ingest.stdout.starts_with("appended "), "{}", ingest.stdout);
    let verify = ok(&["verify", "--db", &db, "--output", "table"], None);
    assert!(verify.stdout.starts_with("OK "), "{}", verify.stdout);
    let export = scratch.export();
    let (seq, bound) = first_bind(&export);
    let pod_uid = bound["pod_uid"].as_str().unwrap();
    let pod = export
        .iter()
        .filter_map(|line| line["entry"]["change"]["object"].as_object())
        .find(|object| object["uid"] == pod_uid)
        .unwrap();
    let (namespace, name) = (
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap(),
    );
    let allow = ok(
        &[
            "check",
            "--db",
            &db,
            "--namespace",
            namespace,
            "--pod-name",
            name,
            "--pod-uid",
            pod_uid,
            "--output",
            "table",
        ],
        None,
    );
    assert!(allow.stdout.starts_with("ALLOW "), "{}", allow.stdout);
    assert!(allow.stdout.contains("binding  claim"), "{}", allow.stdout);
    assert!(
        allow.stdout.contains(&format!("since    seq {seq} (")),
        "{}",
        allow.stdout
    );
    let deny = run(
        &[
            "check",
            "--db",
            &db,
            "--namespace",
            namespace,
            "--pod-name",
            name,
            "--pod-uid",
            "deadbeef-0000-4000-8000-000000000000",
            "--output",
            "table",
        ],
        None,
    );
    assert_eq!(deny.code, 1, "{deny:?}");
    assert!(
        deny.stdout.starts_with("DENY      POD_UID_MISMATCH"),
        "{}",
        deny.stdout
    );
}

/// Checks that every row of the table whose header line holds `columns` (title, whether
/// right-aligned) puts each cell where its title is: left-aligned cells start under their
/// title, right-aligned ones end under it, and two spaces separate the columns. Rows end
/// at the first blank line. Returns the rows.
fn assert_aligned<'a>(table: &'a str, columns: &[(&str, bool)]) -> Vec<&'a str> {
    let lines: Vec<&str> = table.lines().collect();
    let header = lines
        .iter()
        .position(|line| columns.iter().all(|(title, _)| line.contains(title)))
        .unwrap_or_else(|| panic!("no header with {columns:?}:\n{table}"));
    let positions: Vec<(usize, usize, bool)> = columns
        .iter()
        .map(|(title, right)| {
            let start = title_at(lines[header], title);
            (start, start + title.len(), *right)
        })
        .collect();
    let rows: Vec<&str> = lines[header + 1..]
        .iter()
        .take_while(|line| !line.is_empty())
        .copied()
        .collect();
    assert!(!rows.is_empty(), "no rows under the header:\n{table}");
    for row in &rows {
        let bytes = row.as_bytes();
        for (index, (start, end, right)) in positions.iter().enumerate() {
            let at = |i: usize| bytes.get(i).copied().unwrap_or(b' ');
            if *right {
                assert_ne!(
                    at(end - 1),
                    b' ',
                    "column {index} does not end under its title:\n{row}\n{table}"
                );
                assert_eq!(
                    at(*end),
                    b' ',
                    "column {index} runs past its title:\n{row}\n{table}"
                );
            } else {
                assert_ne!(
                    at(*start),
                    b' ',
                    "column {index} does not start under its title:\n{row}\n{table}"
                );
                if *start >= 2 {
                    assert_eq!(
                        &bytes[start - 2..*start],
                        b"  ",
                        "no gap before column {index}:\n{row}\n{table}"
                    );
                }
            }
        }
    }
    rows
}

/// Where the column titled `title` starts in `header` (a whole title: `NAME` is not the
/// start of `NAMESPACE`, nor `UID` the end of `POD UID`).
fn title_at(header: &str, title: &str) -> usize {
    header
        .match_indices(title)
        .map(|(start, _)| start)
        .find(|start| {
            let before = header[..*start].ends_with("  ") || header[..*start].trim().is_empty();
            let after = &header[start + title.len()..];
            before && (after.is_empty() || after.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no column {title:?} in {header:?}"))
}

/// The cell of `row` in the column titled `title` of the table's header `header`.
fn cell<'a>(header: &str, row: &'a str, title: &str) -> &'a str {
    let start = title_at(header, title);
    row.get(start..)
        .unwrap_or("")
        .split("  ")
        .next()
        .unwrap()
        .trim()
}

#[test]
fn history_table_has_uid_and_reason_columns_and_stays_aligned() {
    let scratch = Scratch::new();
    scratch.ingest_fixture("pod_replacement.jsonl");
    let db = scratch.db();
    let table = ok(
        &[
            "history",
            "--db",
            &db,
            "--kind",
            "Pod",
            "--namespace",
            "agents",
            "--name",
            "research-agent",
            "--output",
            "table",
        ],
        None,
    )
    .stdout;
    let columns = [
        ("SEQ", true),
        ("OBSERVED", false),
        ("CHANGE", false),
        ("KIND", false),
        ("NAME", false),
        ("UID", false),
        ("RV", false),
        ("REASON", false),
        ("TRANSITIONS", false),
    ];
    let rows = assert_aligned(&table, &columns);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("   SEQ"), "{table}");
    // Two pods share the name: the uid column tells them apart.
    for uid in [
        "p0d00000-0003-4000-8000-000000000001",
        "p0d00000-0003-4000-8000-000000000002",
    ] {
        assert!(
            rows.iter().any(|row| cell(header, row, "UID") == uid),
            "{uid}:\n{table}"
        );
    }
    let released: Vec<&&str> = rows
        .iter()
        .filter(|row| cell(header, row, "TRANSITIONS").contains("released"))
        .collect();
    assert!(!released.is_empty(), "{table}");
    for row in released {
        let reason = cell(header, row, "REASON");
        assert!(
            [
                "POD_TERMINATING",
                "UNKNOWN_POD",
                "BINDING_RELEASED",
                "OWNER_CHAIN_BROKEN"
            ]
            .contains(&reason),
            "a release without its reason: {row}\n{table}"
        );
    }
    for row in &rows {
        let change = cell(header, row, "CHANGE");
        assert!(
            ["created", "updated", "deleted", "missing_on_resync"].contains(&change),
            "{change:?}: {row}"
        );
        assert_eq!(cell(header, row, "KIND"), "Pod", "{row}");
    }
}

#[test]
fn state_table_has_controller_and_terminating_columns_and_stays_aligned() {
    let scratch = Scratch::new();
    let report = scratch.ingest_fixture("warm_bind.jsonl");
    let db = scratch.db();
    let objects = [
        ("KIND", false),
        ("NAMESPACE", false),
        ("NAME", false),
        ("UID", false),
        ("CONTROLLER", false),
        ("TERMINATING", false),
        ("SEQ", true),
    ];
    let bindings = [
        ("BINDING", false),
        ("NAMESPACE", false),
        ("POD", false),
        ("POD UID", false),
        ("SANDBOX", false),
        ("CLAIM", false),
        ("SANDBOX ID", false),
        ("SINCE", true),
    ];
    let now = ok(&["state", "--db", &db, "--output", "table"], None).stdout;
    let rows = assert_aligned(&now, &objects);
    let header = now.lines().find(|l| l.contains("CONTROLLER")).unwrap();
    let sandbox = rows
        .iter()
        .find(|row| cell(header, row, "NAME") == "python-pool-x7k2p" && row.starts_with("Sandbox "))
        .unwrap_or_else(|| panic!("{now}"));
    assert!(
        cell(header, sandbox, "CONTROLLER").starts_with("SandboxClaim/"),
        "{now}"
    );
    assert_aligned(&now, &bindings);
    // Before the claim adopted it, the same Sandbox was warm: the controller says so.
    let head = report["head_seq"].as_u64().unwrap();
    let warm = (1..head)
        .map(|seq| {
            ok(
                &[
                    "state",
                    "--db",
                    &db,
                    "--as-of-seq",
                    &seq.to_string(),
                    "--output",
                    "table",
                ],
                None,
            )
            .stdout
        })
        .find(|table| table.contains("SandboxWarmPool/"))
        .unwrap_or_else(|| panic!("no state with a warm Sandbox"));
    let rows = assert_aligned(&warm, &objects);
    let header = warm.lines().find(|l| l.contains("CONTROLLER")).unwrap();
    assert!(rows
        .iter()
        .any(|row| cell(header, row, "CONTROLLER").starts_with("SandboxWarmPool/")));
    assert!(rows
        .iter()
        .all(|row| ["-", "yes"].contains(&cell(header, row, "TERMINATING"))));
}

#[test]
fn history_as_a_timeline_reads_like_the_page() {
    let scratch = Scratch::new();
    scratch.ingest_fixture("pod_replacement.jsonl");
    let db = scratch.db();
    let uid = "p0d00000-0003-4000-8000-000000000001";
    let timeline = ok(
        &[
            "history",
            "--db",
            &db,
            "--pod-uid",
            uid,
            "--output",
            "timeline",
        ],
        None,
    )
    .stdout;
    assert!(
        !timeline.contains('\u{1b}'),
        "no colours into a pipe:\n{timeline}"
    );
    assert!(
        timeline.starts_with(&format!("Pod agents/research-agent  uid {uid}")),
        "{timeline}"
    );
    assert!(
        timeline.contains("the name was later held by uid p0d00000-0003-4000-8000-000000000002"),
        "{timeline}"
    );
    let rows = assert_aligned(
        &timeline,
        &[
            ("SEQ", true),
            ("OBSERVED", false),
            ("EVENT", false),
            ("REASON", false),
            ("HASH", false),
            ("SUMMARY", false),
        ],
    );
    let header = timeline.lines().find(|l| l.contains("SUMMARY")).unwrap();
    let events: Vec<&str> = rows.iter().map(|row| cell(header, row, "EVENT")).collect();
    for wanted in ["created", "bound", "terminating", "released", "deleted"] {
        assert!(events.contains(&wanted), "no {wanted} event:\n{timeline}");
    }
    let released = rows
        .iter()
        .find(|row| cell(header, row, "EVENT") == "released")
        .unwrap();
    assert_eq!(
        cell(header, released, "REASON"),
        "POD_TERMINATING",
        "{timeline}"
    );
    assert!(
        cell(header, released, "SUMMARY").contains("through claim agents/"),
        "{timeline}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).unwrap();
        }
    }
}

/// A ledger that contradicts a checkpoint it holds is an integrity failure, exit 1, for
/// every command that meets it: `export --bundle --signing-key` (which would sign and
/// export from it) as much as `verify`. Never exit 2, which would say the operator typed
/// something wrong.
#[test]
fn a_ledger_contradicting_its_checkpoint_exits_1_for_export_and_verify() {
    let scratch = Scratch::new();
    let db = scratch.db();
    scratch.ingest_fixture("warm_bind.jsonl");
    let short = scratch.dir.path().join("short");
    copy_dir(Path::new(&db), &short);
    scratch.ingest_fixture("release_orphan.jsonl");
    let prefix = scratch.dir.path().join("key");
    let prefix = prefix.to_str().unwrap();
    ok(
        &["keygen", "--name", "cli.example/ledger", "--out", prefix],
        None,
    );
    let key = format!("{prefix}.key");
    let bundle = scratch.dir.path().join("full");
    let manifest = ok(
        &[
            "export",
            "--db",
            &db,
            "--bundle",
            bundle.to_str().unwrap(),
            "--signing-key",
            &key,
        ],
        None,
    )
    .json();
    let size = manifest["tree_size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tree size in {manifest}"));

    // Give the shorter copy the checkpoint signed over the longer log: the copy's entries
    // are all valid, but it does not hold the tree its own checkpoint names.
    let mut key_bytes = vec![ledger::store::keys::CHECKPOINT];
    key_bytes.extend_from_slice(&size.to_be_bytes());
    let note = open_raw(Path::new(&db))
        .get(&key_bytes)
        .unwrap()
        .unwrap_or_else(|| panic!("no checkpoint of size {size} in {db}"));
    let raw = open_raw(&short);
    raw.insert(&key_bytes, &note).unwrap();
    raw.flush().unwrap();
    drop(raw);

    let short = short.to_str().unwrap();
    let out = scratch.dir.path().join("short-bundle");
    let export = run(
        &[
            "export",
            "--db",
            short,
            "--bundle",
            out.to_str().unwrap(),
            "--signing-key",
            &key,
        ],
        None,
    );
    assert_eq!(export.code, 1, "{export:?}");
    assert!(export.stderr.contains("checkpoint"), "{export:?}");
    assert!(!out.exists(), "nothing is exported from such a ledger");
    let verify = run(&["verify", "--db", short], None);
    assert_eq!(verify.code, 1, "{verify:?}");
}
