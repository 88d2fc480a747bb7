//! Scenario files through the real binary (`claim-ledger scenario run`): every file in
//! `tests/scenarios/` passes (exit 0), each against its own simulator, watcher and ledger;
//! together they reach every lifecycle of DOMAIN.md §3 and every reason code of §5.
//! Deliberately broken scenarios, written to a temporary directory, exit 1 with a report
//! naming the failing step (and the files after them still run); invalid files exit 2 with
//! the file name, the line and what is wrong, before anything runs.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

fn scenario_run(files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claim-ledger"))
        .args(["scenario", "run"])
        .args(files)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run claim-ledger")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Writes `files` (name, content) to a fresh directory and returns it with their paths.
fn write(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = files
        .iter()
        .map(|(name, content)| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write scenario");
            path
        })
        .collect();
    (dir, paths)
}

#[test]
fn every_shipped_scenario_passes() {
    let files = shipped();
    assert!(
        files.len() >= 20,
        "expected the shipped scenarios, found {files:?}"
    );
    // One process per file (each has its own simulator on 127.0.0.1:0 and its own ledger),
    // a few at a time.
    let queue = Mutex::new(files.iter().cloned().collect::<VecDeque<_>>());
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(file) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let output = scenario_run(std::slice::from_ref(&file));
                let stdout = text(&output.stdout);
                if output.status.code() != Some(0) || stdout.contains("FAIL") {
                    failures.lock().unwrap().push(format!(
                        "{} exited {:?}\n{stdout}\n{}",
                        file.display(),
                        output.status.code(),
                        text(&output.stderr)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_shipped_scenarios_reach_every_reason_code_and_lifecycle() {
    let all: String = shipped()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for reason in schemas::Reason::ALL {
        assert!(
            all.contains(&format!("reason: {}", reason.code())),
            "no shipped scenario expects {reason}"
        );
    }
    for step in [
        "create_pool",
        "claim_warm",
        "claim_cold",
        "replace_pod",
        "propagation: Background",
        "propagation: Foreground",
        "propagation: Orphan",
        "expire_claim",
        "shutdown_policy: Retain",
        "shutdown_policy: Delete",
        "shutdown_policy: DeleteForeground",
        "expire_sandbox",
        "drop_watches",
        "expire_next_watch",
        "restart_apiserver",
        "duplicate_next_event",
        "stale_event",
        "stop_watcher",
        "start_watcher",
        "controllers: false",
        "served: v1alpha1",
        "change: missing_on_resync",
        "change: watch_gap",
    ] {
        assert!(all.contains(step), "no shipped scenario uses `{step}`");
    }
}

const BROKEN: &str = "\
name: an expectation that does not hold
timeout: 1s
steps:
  - claim_cold: {name: c1, sandbox_id: sbx-1}
  - expect: {pod: c1, decision: allow}
  - expect: {pod: c1, reason: BINDING_RELEASED}
  - expect: {pod: c1, sandbox_id: sbx-1, decision: allow}
";

const FINE: &str = "\
name: a scenario that passes
steps:
  - claim_cold: {name: c2}
  - expect: {pod: c2, decision: allow}
";

#[test]
fn a_failing_expectation_exits_1_names_the_step_and_the_next_file_still_runs() {
    let (_dir, files) = write(&[("broken.yaml", BROKEN), ("fine.yaml", FINE)]);
    let output = scenario_run(&files);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  step 3 (line 6)  expect deny BINDING_RELEASED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected deny BINDING_RELEASED, got allow"),
        "the last answer is reported: {stdout}"
    );
    // The file goes on after a failed expectation, and so does the run.
    assert!(stdout.contains("pass  step 4 (line 7)"), "{stdout}");
    assert!(stdout.contains("fine.yaml: passed"), "{stdout}");
    assert!(
        stdout.contains("1 passed, 1 failed") && stdout.contains("broken.yaml (step 3 (line 6))"),
        "{stdout}"
    );
}

#[test]
fn failing_assertions_exit_1_with_what_was_found() {
    let scenario = "\
name: assertions that do not hold
timeout: 1s
steps:
  - claim_cold: {name: c1}
  - assert:
      log_has: {change: created, kind: SandboxClaim, at_least: 2}
  - assert:
      object: {kind: Sandbox, name: c1, controller: none}
  - assert:
      counters: {relists: 1}
";
    let (_dir, files) = write(&[("asserts.yaml", scenario)]);
    let output = scenario_run(&files);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  step 2 (line 5)"), "{stdout}");
    assert!(
        stdout.contains("1 matching entries in seq 1..="),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  step 3 (line 7)"), "{stdout}");
    assert!(
        stdout.contains("controller is SandboxClaim/c1, expected none"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  step 4 (line 9)"), "{stdout}");
    assert!(
        stdout.contains("relists is 0, expected at least 1"),
        "{stdout}"
    );
}

#[test]
fn a_step_that_cannot_be_carried_out_stops_its_file_only() {
    let scenario = "\
name: a claim on a pool that does not exist
timeout: 1s
steps:
  - claim_warm: {name: c1, pool: missing}
  - expect: {pod_of_claim: c1, decision: allow}
";
    let (_dir, files) = write(&[("stops.yaml", scenario), ("fine.yaml", FINE)]);
    let output = scenario_run(&files);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  step 1 (line 4)  claim_warm c1"),
        "{stdout}"
    );
    assert!(stdout.contains("not found"), "{stdout}");
    assert!(stdout.contains("stopped: 1 step(s) not run"), "{stdout}");
    assert!(stdout.contains("fine.yaml: passed"), "{stdout}");
}

#[test]
fn invalid_files_exit_2_with_the_file_the_line_and_the_problem() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_kind.yaml",
            "name: x\nsteps:\n  - claim_cold: {name: c1}\n  - claim_hot: {name: c2}\n",
            &["unknown_kind.yaml", "unknown step kind `claim_hot`", "line 4"],
        ),
        (
            "missing_field.yaml",
            "name: x\nsteps:\n  - claim_warm: {name: c1}\n",
            &["missing_field.yaml", "missing field `pool`", "line 3"],
        ),
        (
            "bad_yaml.yaml",
            "name: x\nsteps:\n  - expect: {pod: c1, decision: allow\n",
            &["bad_yaml.yaml", "line 4"],
        ),
        (
            "unknown_reason.yaml",
            "name: x\nsteps:\n  - expect: {pod: c1, reason: NOT_A_REASON}\n",
            &["unknown_reason.yaml", "NOT_A_REASON", "line 3"],
        ),
        (
            "variable.yaml",
            "name: x\nsteps:\n  - claim_cold: {name: c1}\n  - expect: {pod: c1, pod_uid: \"${old}\", decision: allow}\n",
            &["variable.yaml", "step 2 (line 4)", "`${old}` is used before any step captures it"],
        ),
        (
            "contradiction.yaml",
            "name: x\nsteps:\n  - expect: {pod: c1, decision: allow, reason: UNKNOWN_POD}\n",
            &["contradiction.yaml", "step 1 (line 3)", "`decision: allow` has no reason"],
        ),
        (
            "controllers_off.yaml",
            "name: x\nsimulator: {controllers: false}\nsteps:\n  - claim_cold: {name: c1}\n",
            &["controllers_off.yaml", "step 1 (line 4)", "controller action"],
        ),
        (
            "no_steps.yaml",
            "name: x\n",
            &["no_steps.yaml", "missing field `steps`"],
        ),
    ];
    for (name, content, needles) in cases {
        let (_dir, files) = write(&[(name, content), ("fine.yaml", FINE)]);
        let output = scenario_run(&files);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        for needle in *needles {
            assert!(stderr.contains(needle), "{name}: no {needle:?} in {stderr}");
        }
        // Nothing runs when a file is invalid.
        assert!(text(&output.stdout).is_empty(), "{name}");
    }
    let output = scenario_run(&[PathBuf::from("/nonexistent/scenario.yaml")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("/nonexistent/scenario.yaml: cannot read"));
}
