//! Scenario files through the real binary (`claim-ledger scenario run`): every file in
//! `tests/scenarios/` passes (exit 0), each against its own simulator, watcher and ledger;
//! together they reach every lifecycle of DOMAIN.md §3 and every reason code of §5.
//! Deliberately broken scenarios, written to a temporary directory, exit 1 with a report
//! naming the failing step (and the files after them still run); invalid files exit 2 with
//! the file name, the line and what is wrong, before anything runs.
//!
//! The adversarial cases of the one table `tests/data/adversarial.json` run here too: each
//! case becomes a scenario file at test time (controllers off, every object applied,
//! patched and deleted by hand, uids captured as variables) run by the same binary; a
//! failure names the case.
//!
//! `claim-ledger sim --scenario` drives a served simulator through a file's cluster steps
//! (skipping those that need the watcher or the ledger): its report, its exit codes, and
//! the objects it leaves for `kubectl` and raw HTTP clients while it keeps serving.

use crate::adversarial_table;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::adversarial_table::{merge_patch, Action, Table, World};
use crate::support::process::{address_of, command, Child, BIN};
use serde_json::{json, Value};

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
    // 18 files since the reason-code files became cases of the adversarial table (run by
    // `every_adversarial_case_of_the_table_passes_as_a_scenario`); the same slack as before.
    assert!(
        files.len() >= 15,
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

/// The scenario file of one adversarial case: the objects driven by hand, each created
/// object's uid captured as `${handle}`, and an `expect` step per check. The table's
/// `binding` parts and `expect_log` lines become notes: a scenario's `expect` does not
/// report the binding, and `log_has` cannot select transitions (the other harnesses
/// check both).
fn adversarial_scenario(case: &adversarial_table::Case, namespace: &str) -> String {
    let mut world = World::served(namespace);
    let mut steps: Vec<Value> = Vec::new();
    // What the simulator's garbage collector has already deleted.
    let mut collected = std::collections::BTreeSet::new();
    for step in &case.steps {
        match world.step(step) {
            Action::Create { handle } => {
                steps.push(json!({"apply": world.manifest(&handle), "capture": handle}));
                world.register(&handle, &format!("${{{handle}}}"));
            }
            Action::Update { handle, before } => {
                let object = world.object(&handle);
                let merge = merge_patch(&before, &world.manifest(&handle));
                steps.push(
                    json!({"patch": {"kind": object.kind(), "name": object.name(), "merge": merge}}),
                );
            }
            Action::Terminate { handle } => {
                let object = world.object(&handle);
                let (kind, name) = (object.kind(), object.name());
                steps.push(json!({"patch": {"kind": kind, "name": name,
                    "merge": {"metadata": {"finalizers": [adversarial_table::HOLD]}}}}));
                steps.push(json!({"delete": {"kind": kind, "name": name}}));
            }
            Action::Delete {
                handle,
                was_terminating,
                collected: dependents,
            } => {
                let object = world.object(&handle);
                let (kind, name) = (object.kind(), object.name());
                if was_terminating {
                    steps.push(json!({"patch": {"kind": kind, "name": name,
                        "merge": {"metadata": {"finalizers": null}}}}));
                } else if collected.contains(&handle) {
                    steps.push(json!({"note": format!("{kind} {name}: already collected")}));
                } else {
                    steps.push(json!({"delete": {"kind": kind, "name": name}}));
                }
                collected.extend(dependents);
            }
            Action::Expect(adversarial_table::Check {
                request,
                decision,
                reason,
                binding,
            }) => {
                let mut expect = json!({"pod": request["pod_name"], "decision": decision});
                for key in [
                    "namespace",
                    "pod_uid",
                    "sandbox_id",
                    "sandbox_name",
                    "sandbox_uid",
                    "claim_uid",
                    "require_claim",
                ] {
                    if let Some(value) = request.get(key) {
                        expect[key] = value.clone();
                    }
                }
                if let Some(reason) = reason {
                    expect["reason"] = json!(reason);
                }
                if let Some(binding) = binding {
                    steps.push(json!({"note": format!("binding checked by the other harnesses: {binding}")}));
                }
                steps.push(json!({"expect": expect}));
            }
            Action::ExpectLog(adversarial_table::LogCheck {
                transition, count, ..
            }) => steps.push(json!({"note": format!(
                "{count} {transition} transition(s): checked by the other harnesses"
            )})),
        }
    }
    let scenario = json!({
        "name": format!("adversarial case {} (tests/data/adversarial.json)", case.name),
        "description": case.description,
        "simulator": {"controllers": false},
        "namespace": namespace,
        "steps": steps,
    });
    serde_yaml_ng::to_string(&scenario).expect("scenario YAML")
}

/// Every adversarial case the scenario harness runs, as (case name, scenario text).
fn adversarial_scenarios() -> Vec<(String, String)> {
    Table::load()
        .cases_for("scenario")
        .iter()
        .map(|case| (case.name.clone(), adversarial_scenario(case, "adversarial")))
        .collect()
}

#[test]
fn every_adversarial_case_of_the_table_passes_as_a_scenario() {
    let scenarios = adversarial_scenarios();
    assert!(scenarios.len() >= 10, "cases missing: {}", scenarios.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Mutex::new(scenarios.into_iter().collect::<VecDeque<_>>());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some((name, scenario)) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let file = dir.path().join(format!("{name}.yaml"));
                std::fs::write(&file, &scenario).expect("write scenario");
                let output = scenario_run(std::slice::from_ref(&file));
                let stdout = text(&output.stdout);
                if output.status.code() != Some(0) || stdout.contains("FAIL") {
                    failures.lock().unwrap().push(format!(
                        "case {name} exited {:?}\n{stdout}\n{}\n{scenario}",
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
    // With the adversarial cases, which run as scenarios generated from the table.
    let all: String = shipped()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .chain(adversarial_scenarios().into_iter().map(|(_, text)| text))
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

// ---------------------------------------------------------------------------------------
// `claim-ledger sim --scenario`
// ---------------------------------------------------------------------------------------

const KUBECTL: &str = "/usr/bin/kubectl";

/// A `claim-ledger sim` process (with `RUST_LOG=warn`); killed when dropped.
fn start_sim(args: &[&str]) -> Child {
    Child::start(command(&["sim"]).args(args).env("RUST_LOG", "warn"))
}

/// A GET on a fresh connection (HTTP/1.0, so the body ends at the close): (status, body).
fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the simulator");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

#[test]
fn sim_scenario_runs_the_cluster_steps_skips_the_ledger_steps_and_exits_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/warm_bind.yaml");
    let sim = start_sim(&[
        "--listen",
        "127.0.0.1:0",
        "--scenario",
        file.to_str().unwrap(),
        "--exit-after-scenario",
        "--kubeconfig-out",
        kubeconfig.to_str().unwrap(),
    ]);
    let (code, stdout) = sim.finish();
    assert_eq!(code, Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let listening = lines[0];
    assert!(
        listening.starts_with("cluster simulator listening on http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("kubeconfig written to"), "{stdout}");
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        written.contains(&format!("http://{}", address_of(listening))),
        "{written}"
    );
    assert!(
        lines[2].contains("warm_bind.yaml: warm bind, then replenish")
            && lines[2].contains("(controllers on, serving v1beta1 + v1alpha1)"),
        "{stdout}"
    );
    let step = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{stdout}"))
            .to_string()
    };
    // Cluster steps run (captures and `${var}` included); expectations and assertions are
    // skipped with a note; notes are printed.
    assert!(step("   ok    step 1 (line 8) ").contains("create_pool python-pool replicas=1"));
    assert!(step("   ok    step 2 (line 9) ").contains("warm = python-pool-"));
    assert!(step("   ok    step 3 (line 10) ").contains("warm_pod = "));
    assert!(step("   skip  step 5 (line 12) ")
        .contains("expect deny NOT_CLAIMED -- needs the watcher and the ledger"));
    assert!(step("   ok    step 7 (line 15) ").contains("claim_warm session-1 from pool"));
    assert!(step("   skip  step 12 (line 26) ").contains("assert object Sandbox"));
    assert!(step("   ok    step 14 (line 30) ").contains("fresh = python-pool-"));
    assert!(
        stdout.contains("   # the claim adopted the warm Sandbox"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let ran = lines.iter().filter(|l| l.starts_with("   ok  ")).count();
    let skipped = lines.iter().filter(|l| l.starts_with("   skip  ")).count();
    assert_eq!((ran, skipped), (5, 8), "{stdout}");
    assert!(
        stdout.contains("warm_bind.yaml: done (8 step(s) skipped"),
        "{stdout}"
    );
    assert_eq!(
        lines.last(),
        Some(&"scenario finished; stopping"),
        "{stdout}"
    );
}

const DRIVEN: &str = "\
name: a simulator driven by a scenario
namespace: team-s
steps:
  - claim_cold: {name: alpha, sandbox_id: sbx-a}
    capture: alpha
  - claim_cold: {name: beta}
  - capture: {as: alpha_sandbox, kind: SandboxClaim, name: alpha, field: status.sandbox.name}
  - patch:
      kind: SandboxClaim
      name: alpha
      merge: {metadata: {labels: {claim-uid-copy: \"${alpha}\", sandbox: \"${alpha_sandbox}\"}}}
  - expect: {pod: alpha, decision: allow}
  - note: a short pause, then beta goes
    wait: {sleep: 50ms}
  - delete_claim: {name: beta}
  - wait: synced
  - drop_watches
";

#[test]
fn sim_scenario_keeps_serving_what_the_steps_made_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driven.yaml");
    std::fs::write(&file, DRIVEN).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut sim = start_sim(&[
        "--listen",
        "127.0.0.1:0",
        "--scenario",
        file.to_str().unwrap(),
        "--kubeconfig-out",
        kubeconfig.to_str().unwrap(),
    ]);
    let address = address_of(&sim.line_with("cluster simulator listening on"));
    sim.line_with("scenario finished; serving until Ctrl-C");
    let report = sim.seen.join("\n");
    for (prefix, needle) in [
        (
            "   ok    step 1 (line 4) ",
            "claim_cold alpha sandbox_id=sbx-a",
        ),
        ("   ok    step 4 (line 8) ", "patch SandboxClaim alpha"),
        ("   skip  step 5 (line 12) ", "expect allow"),
        ("   ok    step 6 (line 13) ", "wait sleep 50ms"),
        (
            "   ok    step 7 (line 15) ",
            "delete_claim beta (Background)",
        ),
        ("   skip  step 8 (line 16) ", "wait synced"),
        ("   ok    step 9 (line 17) ", "drop_watches"),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(prefix) && l.contains(needle)),
            "no {prefix:?} line with {needle:?} in\n{report}"
        );
    }
    assert!(
        report.contains("   # a short pause, then beta goes"),
        "{report}"
    );
    let alpha_uid = report
        .lines()
        .find(|l| l.starts_with("   ok    step 1 "))
        .and_then(|l| l.split("alpha = ").nth(1))
        .expect("the captured uid")
        .to_string();

    // The served simulator holds what the steps made, for any client.
    let (status, body) = http_get(
        &address,
        "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims",
    );
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let claims = list["items"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "beta was deleted: {body}");
    let alpha = &claims[0];
    assert_eq!(alpha["metadata"]["name"], "alpha");
    assert_eq!(alpha["metadata"]["namespace"], "team-s");
    assert_eq!(alpha["metadata"]["uid"], alpha_uid.as_str());
    // `${var}` substitution reached the patch.
    assert_eq!(
        alpha["metadata"]["labels"]["claim-uid-copy"],
        alpha_uid.as_str()
    );
    assert_eq!(alpha["metadata"]["labels"]["sandbox"], "alpha");
    let (status, _) = http_get(&address, "/api/v1/namespaces/team-s/pods/alpha");
    assert_eq!(status, 200);
    let (status, _) = http_get(&address, "/api/v1/namespaces/team-s/pods/beta");
    assert_eq!(status, 404);

    if Path::new(KUBECTL).exists() {
        let output = Command::new(KUBECTL)
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(["get", "sandboxclaims", "-A"])
            .output()
            .unwrap();
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("team-s") && l.contains("alpha")),
            "{stdout}"
        );
        assert!(!stdout.contains("beta"), "{stdout}");
    } else {
        println!("skipped the kubectl check: {KUBECTL} is absent");
    }

    sim.interrupt();
    let (code, _) = sim.finish();
    assert_eq!(code, Some(0));
}

#[test]
fn sim_scenario_validates_like_scenario_run_and_uses_the_files_simulator_settings() {
    let (_dir, files) = write(&[
        (
            "invalid.yaml",
            "name: x\nsteps:\n  - claim_cold: {name: c1}\n  - claim_hot: {name: c2}\n",
        ),
        (
            "stops.yaml",
            "name: a claim on a pool that does not exist\nsteps:\n  - claim_cold: {name: c1}\n  - claim_warm: {name: c2, pool: missing}\n  - claim_cold: {name: c3}\n",
        ),
        (
            "v1alpha1.yaml",
            "name: hand-driven v0.4.x\nsimulator: {controllers: false, served: v1alpha1}\nsteps:\n  - apply:\n      apiVersion: agents.x-k8s.io/v1alpha1\n      kind: Sandbox\n      metadata: {name: hand}\n      spec: {podTemplate: {spec: {containers: [{name: c, image: busybox}]}}}\n  - assert: chain_verifies\n",
        ),
    ]);
    let sim = |args: &[&str]| {
        Command::new(BIN)
            .args(["sim", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run claim-ledger sim")
    };
    let path = |i: usize| files[i].to_str().unwrap();

    // An invalid file: exit 2 with exactly `scenario run`'s error, nothing served.
    let output = sim(&["--scenario", path(0), "--exit-after-scenario"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stdout).is_empty(), "{}", text(&output.stdout));
    let expected = scenario_run(&files[..1]);
    assert_eq!(expected.status.code(), Some(2));
    assert_eq!(text(&output.stderr), text(&expected.stderr));
    assert!(text(&output.stderr).contains("unknown step kind `claim_hot`"));

    // The file configures the simulator: the flags that would too are refused beside it.
    for flag in ["--no-controllers", "--v1alpha1-only"] {
        let output = sim(&["--scenario", path(2), flag]);
        assert_eq!(output.status.code(), Some(2), "{flag}");
        assert!(
            text(&output.stderr).contains("cannot be used with"),
            "{flag}"
        );
    }
    let output = sim(&["--exit-after-scenario"]);
    assert_eq!(output.status.code(), Some(2));

    let output = sim(&["--scenario", path(2), "--exit-after-scenario"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("hand-driven v0.4.x (controllers off, serving v1alpha1)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("   ok    step 1 (line 4)  apply Sandbox hand -- Sandbox default/hand uid "),
        "{stdout}"
    );
    assert!(
        stdout.contains("   skip  step 2 (line 9)  assert chain_verifies"),
        "{stdout}"
    );

    // A step that cannot be carried out stops the steps: exit 1.
    let output = sim(&["--scenario", path(1), "--exit-after-scenario"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("   ok    step 1 (line 3)  claim_cold c1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("   FAIL  step 2 (line 4)  claim_warm c2 from pool missing"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped: 1 step(s) not run"), "{stdout}");
    assert!(!stdout.contains("claim_cold c3"), "{stdout}");
    assert!(
        stdout.contains("scenario stopped at a step that could not be carried out; stopping"),
        "{stdout}"
    );
    assert!(text(&output.stderr).contains("a scenario step could not be carried out"));
}
