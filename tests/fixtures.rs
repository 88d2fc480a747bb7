//! Every lifecycle fixture in `tests/fixtures/` replayed into a real on-disk ledger, with
//! the decision and reason asserted after each step; then the chain verifies, replay
//! re-derives every transition, and ingesting the file again appends nothing.

use std::path::Path;

use chrono::{TimeZone, Utc};
use ledger::{CheckRequest, Ledger, LedgerConfig, Verdict};
use serde_json::Value;

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
    // Case 1: Sandbox theta left ownerless by its claim's orphan delete, its PVC alive;
    // case 2: a Retain claim's PVC that outlives its Sandbox. Case 3 is a background release.
    assert_eq!(orphaned_workspaces("adversarial_reuse.jsonl").len(), 2);
}
