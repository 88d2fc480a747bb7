//! Every lifecycle fixture in `tests/fixtures/` replayed into a real on-disk ledger, with
//! the decision and reason asserted after each step; then the chain verifies, replay
//! re-derives every transition, and ingesting the file again appends nothing.
//!
//! The `adversarial_*.jsonl` fixtures are generated from the one table of adversarial
//! cases (`tests/data/adversarial.json`): a test checks that each file is exactly what
//! its case generates (`UPDATE_ADVERSARIAL_FIXTURES=1` rewrites them), and every case
//! also runs through the real binary, `claim-ledger ingest` then `claim-ledger check`
//! and `claim-ledger history`, step by step.

use crate::adversarial_table;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::adversarial_table::{contains, count_transitions, EventWriter, Line, Table};
use chrono::{TimeZone, Utc};
use ledger::{CheckRequest, Ledger, LedgerConfig, Verdict};
use serde_json::{json, Value};

fn clock() -> impl FnMut() -> chrono::DateTime<Utc> {
    let mut tick = 0;
    move || {
        tick += 1;
        Utc.timestamp_opt(1_790_000_000 + tick, 0).unwrap()
    }
}

fn ingest(
    ledger: &mut Ledger,
    lines: &str,
    clock: &mut impl FnMut() -> chrono::DateTime<Utc>,
) -> watcher::IngestReport {
    let report = watcher::ingest(
        ledger,
        lines.as_bytes(),
        watcher::IngestOptions::default(),
        &mut *clock,
    )
    .unwrap();
    assert!(
        report.errors.is_empty(),
        "fixture lines rejected: {:?}",
        report.errors
    );
    report
}

fn run_fixture(path: &Path) -> usize {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        snapshot_every: 5,
        background_snapshots: false,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(dir.path(), config.clone()).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let mut clock = clock();
    let mut pending = String::new();
    let mut expectations = 0;
    for (number, line) in text.lines().enumerate() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", number + 1));
        if value.get("comment").is_some() {
            continue;
        }
        if let Some(log) = value.get("expect_log") {
            ingest(&mut ledger, &pending, &mut clock);
            pending.clear();
            let transitions = all_transitions(&ledger);
            let uid = log["uid"].as_str().unwrap();
            let transition = log["transition"].as_str().unwrap();
            assert_eq!(
                count_transitions(&transitions, transition, uid) as u64,
                log["count"].as_u64().unwrap(),
                "{name}:{}: {transition} about {uid} in {transitions:?}",
                number + 1
            );
            continue;
        }
        let Some(request) = value.get("expect") else {
            pending.push_str(line);
            pending.push('\n');
            continue;
        };
        ingest(&mut ledger, &pending, &mut clock);
        pending.clear();
        let request: CheckRequest = serde_json::from_value(request.clone())
            .unwrap_or_else(|e| panic!("{name}:{}: bad request: {e}", number + 1));
        let decision = ledger.check(&request, true);
        let expected_verdict: Verdict = serde_json::from_value(value["decision"].clone()).unwrap();
        let expected_reason = value["reason"].as_str();
        let got_reason = decision.reason.map(|r| r.code());
        assert_eq!(
            (decision.decision, got_reason),
            (expected_verdict, expected_reason),
            "{name}:{}: {:?}\n{}",
            number + 1,
            decision.detail,
            line
        );
        if expected_verdict == Verdict::Allow {
            let binding = decision
                .binding
                .as_ref()
                .expect("allow carries the binding");
            assert_eq!(binding.pod.uid, request.pod_uid);
            if let Some(expected) = value.get("binding") {
                let actual = serde_json::to_value(binding).unwrap();
                if let Err(e) = contains(&actual, expected) {
                    panic!("{name}:{}: binding: {e}: {actual}", number + 1);
                }
            }
        }
        expectations += 1;
    }
    ingest(&mut ledger, &pending, &mut clock);

    let report = ledger.verify().unwrap();
    assert!(report.ok(), "{name}: {:?}", report.failure);
    assert_eq!(report.entries, ledger.head().seq);

    let again = ingest(&mut ledger, &text_events(&text), &mut clock);
    assert_eq!(again.appended, 0, "{name}: re-ingesting appended entries");

    let live = ledger.projection().clone();
    let head = ledger.head();
    drop(ledger);
    let reopened = Ledger::open(dir.path(), config).unwrap();
    assert_eq!(reopened.head(), head);
    assert_eq!(
        reopened.projection(),
        &live,
        "{name}: reopened projection differs"
    );
    let rebuilt = reopened.state_at_seq(head.seq.saturating_sub(1)).unwrap();
    assert_eq!(rebuilt.seq(), head.seq.saturating_sub(1));
    expectations
}

/// Every transition in the ledger's log, as JSON.
fn all_transitions(ledger: &Ledger) -> Vec<Value> {
    let head = ledger.head().seq;
    if head == 0 {
        return Vec::new();
    }
    ledger
        .entries(1, head)
        .map(Result::unwrap)
        .flat_map(|stored| stored.entry.transitions)
        .map(|t| serde_json::to_value(t).unwrap())
        .collect()
}

fn text_events(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v.get("type").is_some()
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn every_lifecycle_fixture_gives_the_expected_decisions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures missing in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let result = std::panic::catch_unwind(|| run_fixture(file));
        match result {
            Ok(count) => assert!(
                count >= 3,
                "{} has only {count} expectations",
                file.display()
            ),
            Err(panic) => failures.push(format!(
                "{}: {}",
                file.display(),
                panic.downcast_ref::<String>().cloned().unwrap_or_default()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The `workspace_orphaned` transitions a fixture's events cause, as (pvc uid, sandbox uid).
fn orphaned_workspaces(fixture: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let events: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| line.contains("\"type\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    ingest(&mut ledger, &events, &mut clock());
    let head = ledger.head().seq;
    ledger
        .entries(1, head)
        .map(Result::unwrap)
        .flat_map(|stored| stored.entry.transitions)
        .filter_map(|transition| match transition {
            schemas::Transition::WorkspaceOrphaned {
                pvc_uid,
                sandbox_uid,
            } => Some((pvc_uid, sandbox_uid)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bound_workspace_outliving_its_sandbox_or_its_claim_is_reported_once() {
    // Retain expiry: the Sandbox is deleted, its PVC survives.
    assert_eq!(orphaned_workspaces("retain_expiry.jsonl").len(), 1);
    // Orphan propagation: the claim is deleted, the Sandbox survives ownerless with its PVC.
    let orphaned = orphaned_workspaces("release_orphan.jsonl");
    assert_eq!(orphaned.len(), 1, "{orphaned:?}");
    // Background and foreground releases delete the PVC with its Sandbox: nothing outlives.
    assert_eq!(orphaned_workspaces("release_background.jsonl"), []);
    assert_eq!(orphaned_workspaces("release_foreground.jsonl"), []);
    assert_eq!(orphaned_workspaces("warm_bind.jsonl"), []);
    assert_eq!(orphaned_workspaces("cold_bind.jsonl"), []);
    assert_eq!(orphaned_workspaces("pod_replacement.jsonl"), []);
    // The adversarial reuse cases (a Sandbox left ownerless by its claim's orphan delete,
    // its PVC alive; a Retain-style PVC that outlives its Sandbox) each expect one
    // `workspace_orphaned` in the table (`expect_log`), checked with every other line of
    // their generated fixtures.
    let table = Table::load();
    let mut orphaned = 0;
    for case in table.cases_for("ingest") {
        let file = format!("adversarial_{}.jsonl", case.name);
        let expected: u64 = generate(&case)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["expect_log"]["transition"] == "workspace_orphaned")
            .map(|v| v["expect_log"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(orphaned_workspaces(&file).len() as u64, expected, "{file}");
        orphaned += expected;
    }
    assert!(
        orphaned >= 2,
        "the reuse cases expect their orphaned workspaces"
    );
}

// ----- the adversarial table -----

/// The fixture text of one case: a comment naming it, then its watch events, checks and
/// log expectations in order.
fn generate(case: &adversarial_table::Case) -> String {
    let mut writer = EventWriter::new("adversarial", &case.name);
    let mut out = vec![
        json!({"comment": format!("generated from tests/data/adversarial.json, case {}: do not edit", case.name)}),
        json!({"comment": case.description}),
    ];
    for step in &case.steps {
        for line in writer.step(step) {
            out.push(match line {
                Line::Event(event) => event,
                Line::Expect(adversarial_table::Check {
                    mut request,
                    decision,
                    reason,
                    binding,
                }) => {
                    // The fixture format writes require_claim out (README.md).
                    if request.get("require_claim").is_none() {
                        request["require_claim"] = json!(true);
                    }
                    let mut line =
                        json!({"expect": request, "decision": decision, "reason": reason});
                    if let Some(binding) = binding {
                        line["binding"] = binding;
                    }
                    line
                }
                Line::ExpectLog(adversarial_table::LogCheck {
                    transition,
                    selector,
                    uid,
                    count,
                }) => json!({"expect_log": {"transition": transition, "selector": selector,
                                            "uid": uid, "count": count}}),
            });
        }
    }
    out.iter().map(|line| format!("{line}\n")).collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn the_adversarial_fixtures_are_exactly_what_the_table_generates() {
    let table = Table::load();
    let update = std::env::var_os("UPDATE_ADVERSARIAL_FIXTURES").is_some();
    let mut expected_files = Vec::new();
    let mut stale = Vec::new();
    for case in table.cases_for("ingest") {
        let file = format!("adversarial_{}.jsonl", case.name);
        let path = fixtures_dir().join(&file);
        let text = generate(&case);
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(file.clone());
        }
        expected_files.push(file);
    }
    let mut present: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("adversarial_") && name.ends_with(".jsonl"))
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "adversarial_*.jsonl files that no case of the table generates (or missing ones)"
    );
    assert!(
        stale.is_empty(),
        "not what tests/data/adversarial.json generates (rerun with \
         UPDATE_ADVERSARIAL_FIXTURES=1 and review the diff): {stale:?}"
    );
}

/// Runs the binary to completion: (exit code, stdout, stderr).
fn claim_ledger(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_claim-ledger"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run claim-ledger");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One case through `claim-ledger ingest`, `check` and `history`; the first failure.
fn run_case_through_the_binary(case: &adversarial_table::Case) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let mut pending = String::new();
    let mut segments = 0;
    let mut flush = |pending: &mut String| -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        segments += 1;
        let file = dir.path().join(format!("segment-{segments}.jsonl"));
        std::fs::write(&file, &*pending).unwrap();
        pending.clear();
        let (code, stdout, stderr) = claim_ledger(&["ingest", "--db", db, file.to_str().unwrap()]);
        if code != 0 || !stderr.trim().is_empty() {
            return Err(format!("ingest exited {code}: {stdout}{stderr}"));
        }
        Ok(())
    };
    for (number, line) in generate(case).lines().enumerate() {
        let at = format!("{} line {}", case.name, number + 1);
        let value: Value = serde_json::from_str(line).unwrap();
        if value.get("type").is_some() {
            pending.push_str(line);
            pending.push('\n');
        } else if let Some(request) = value.get("expect") {
            flush(&mut pending).map_err(|e| format!("{at}: {e}"))?;
            let mut args = vec!["check".to_string(), "--db".into(), db.into()];
            for (flag, key) in [
                ("--namespace", "namespace"),
                ("--pod-name", "pod_name"),
                ("--pod-uid", "pod_uid"),
                ("--sandbox-id", "sandbox_id"),
                ("--sandbox-name", "sandbox_name"),
                ("--sandbox-uid", "sandbox_uid"),
                ("--claim-uid", "claim_uid"),
            ] {
                if let Some(v) = request[key].as_str() {
                    args.push(flag.into());
                    args.push(v.into());
                }
            }
            if request["require_claim"] == false {
                args.push("--allow-direct".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stdout, stderr) = claim_ledger(&args);
            let body: Value = serde_json::from_str(&stdout)
                .map_err(|e| format!("{at}: check printed no decision ({e}): {stdout}{stderr}"))?;
            let expected = (value["decision"].as_str(), value["reason"].as_str());
            let expected_code = if expected.0 == Some("allow") { 0 } else { 1 };
            if (body["decision"].as_str(), body["reason"].as_str()) != expected
                || code != expected_code
            {
                return Err(format!(
                    "{at}: {request}: expected {expected:?}, got exit {code} {body}"
                ));
            }
            if let Some(binding) = value.get("binding") {
                contains(&body["binding"], binding).map_err(|e| format!("{at}: binding: {e}"))?;
            }
        } else if let Some(log) = value.get("expect_log") {
            flush(&mut pending).map_err(|e| format!("{at}: {e}"))?;
            let selector = format!("--{}", log["selector"].as_str().unwrap().replace('_', "-"));
            let uid = log["uid"].as_str().unwrap();
            let (code, stdout, stderr) = claim_ledger(&["history", "--db", db, &selector, uid]);
            if code != 0 {
                return Err(format!("{at}: history exited {code}: {stderr}"));
            }
            let transitions: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .flat_map(|l| {
                    l["entry"]["transitions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let transition = log["transition"].as_str().unwrap();
            let found = count_transitions(&transitions, transition, uid) as u64;
            if found != log["count"].as_u64().unwrap() {
                return Err(format!("{at}: {log}: found {found} in {transitions:?}"));
            }
        }
    }
    flush(&mut pending).map_err(|e| format!("{}: {e}", case.name))
}

#[test]
fn every_adversarial_case_answers_as_the_table_says_through_the_binary() {
    let table = Table::load();
    let cases = table.cases_for("ingest");
    assert!(cases.len() >= 10, "cases missing: {}", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| run_case_through_the_binary(case).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
