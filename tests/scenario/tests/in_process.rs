//! The scenario runner called in process, as other tests call it: a shipped file passes
//! end to end (its own simulator, watcher and ledger), a file whose expectation is wrong
//! is reported as failed at that step while the next file still runs, and an invalid file
//! is refused before anything runs with its name, the step and the line.

use std::path::{Path, PathBuf};

use scenario::{run_files, ScenarioError};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipped_scenario_passes_in_process() {
    let report = run_files(&[shipped("warm_bind.yaml")]).await.unwrap();
    assert_eq!(report.files, 1);
    assert!(report.all_passed(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expectation_fails_its_file_and_the_next_file_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = write(
        dir.path(),
        "wrong.yaml",
        "name: wrong\nsteps:\n  - claim_cold: {name: c1}\n  - expect: {pod_of_claim: c1, reason: UNKNOWN_POD}\n",
    );
    let fine = write(
        dir.path(),
        "fine.yaml",
        "name: fine\nsteps:\n  - claim_cold: {name: c1}\n  - expect: {pod_of_claim: c1, decision: allow}\n",
    );
    let report = run_files(&[wrong.clone(), fine]).await.unwrap();
    assert_eq!(report.files, 2);
    assert!(!report.all_passed());
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].path, wrong);
    assert_eq!(report.failed[0].at, "step 2 (line 4)");
}

#[tokio::test]
async fn an_invalid_file_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = write(
        dir.path(),
        "variable.yaml",
        "name: x\nsteps:\n  - claim_cold: {name: c1}\n  - expect: {pod: c1, pod_uid: \"${old}\", decision: allow}\n",
    );
    let missing = dir.path().join("missing.yaml");
    let error = run_files(&[invalid.clone(), missing.clone()])
        .await
        .unwrap_err();
    let ScenarioError::Files(errors) = &error else {
        panic!("expected every file's error, got {error:?}");
    };
    assert_eq!(errors.len(), 2, "{error}");
    assert!(
        matches!(&errors[0], ScenarioError::Invalid { path, .. } if *path == invalid),
        "{error}"
    );
    assert!(
        matches!(&errors[1], ScenarioError::Read { path, .. } if *path == missing),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("variable.yaml: step 2 (line 4)"), "{text}");
    assert!(
        text.contains("is used before any step captures it"),
        "{text}"
    );
    assert!(
        text.contains("missing.yaml: cannot read the file"),
        "{text}"
    );
}
