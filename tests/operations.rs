//! What an operator configures and reads, through the binary: every `serve` flag from a
//! `CLAIM_LEDGER_*` environment variable, `--log-format json` lines naming the objects and
//! binding transitions an operator filters on, and a bad `--log-level` as a usage error.

#[path = "support/process.rs"]
mod process;

use std::process::{Command, Stdio};
use std::time::Duration;

use process::{address_of, http, run, Child, BIN};
use serde_json::Value;

#[test]
fn json_logs_name_the_objects_and_the_binding_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo");
    let output = Command::new(BIN)
        .args([
            "demo",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--rounds",
            "2",
            "--step-ms",
            "200",
        ])
        .env("CLAIM_LEDGER_LOG_FORMAT", "json")
        .env("CLAIM_LEDGER_LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "demo failed: {stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    let bound: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "binding transition" && l["transition"] == "bound")
        .collect();
    assert!(!bound.is_empty(), "no bound transition logged: {stderr}");
    for line in bound {
        assert!(line["seq"].as_u64().is_some_and(|seq| seq > 0), "{line}");
        for field in ["kind", "namespace", "name", "uid", "pod_uid", "sandbox_uid"] {
            assert!(
                line[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} missing: {line}"
            );
        }
        assert_eq!(line["level"], "INFO");
    }
    assert!(
        lines.iter().any(|l| l["transition"] == "released"
            && l["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "no release with its reason logged: {stderr}"
    );
}

#[test]
fn serve_takes_its_flags_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "env-token\n").unwrap();
    // No cluster: serve answers from the ledger and reports not ready while it retries.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n",
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env("KUBECONFIG", &kubeconfig)
        .env("CLAIM_LEDGER_DB", &db)
        .env("CLAIM_LEDGER_LISTEN", "127.0.0.1:0")
        .env("CLAIM_LEDGER_API_TOKEN_FILE", &tokens)
        .env("CLAIM_LEDGER_NAMESPACES", "tenant-a,tenant-b")
        .env("CLAIM_LEDGER_LOG_LEVEL", "error");
    let mut serve = Child::start(&mut command);
    let address = address_of(&serve.line_with("API listening"));
    let readyz = |token: Option<&str>| {
        let authorization = token.map(|t| format!("Bearer {t}"));
        http(
            &address,
            "GET",
            "/v1/head",
            authorization.as_deref(),
            None,
            Duration::from_secs(10),
        )
    };
    assert_eq!(readyz(Some("env-token")).0, 200);
    assert_eq!(readyz(Some("other")).0, 401);
    serve.interrupt_and_wait();
    // The ledger was created where the environment said.
    assert!(db.join("manifest.json").is_file());
}

#[test]
fn a_bad_log_level_or_format_is_a_usage_error() {
    let result = run(
        &["--log-level", "warn,[", "verify", "--db", "/nonexistent"],
        None,
    );
    assert_eq!(result.code, 2, "{result:?}");
    assert!(result.stderr.contains("--log-level"), "{}", result.stderr);
    let result = run(
        &["--log-format", "xml", "verify", "--db", "/nonexistent"],
        None,
    );
    assert_eq!(result.code, 2, "{result:?}");
    assert!(result.stderr.contains("xml"), "{}", result.stderr);
}
