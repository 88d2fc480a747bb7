//! What an operator configures and reads, through the binary: every `serve` flag from a
//! `CLAIM_LEDGER_*` environment variable, `--log-format json` lines naming the objects and
//! binding transitions an operator filters on, and a bad `--log-level` as a usage error.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{address_of, http, run, Child, BIN};
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
        // The object named is the one whose entry holds the transition (the watcher reads
        // a batch's transitions back in one scan and pairs them by seq).
        if line["kind"] == "SandboxClaim" {
            assert_eq!(line["claim_uid"], line["uid"], "{line}");
        }
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

#[test]
fn a_signing_key_others_can_read_is_refused_and_a_shared_token_file_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let keygen = run(
        &[
            "keygen",
            "--name",
            "ops.example",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(keygen.code, 0, "{keygen:?}");
    let private = key.with_extension("key");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t\n").unwrap();
    let ledger = dir.path().join("ledger");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--db",
            ledger.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
            "--signing-key",
            private.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for (mode, flag) in [(0o644, false), (0o640, false), (0o644, true)] {
        chmod(&private, mode);
        let mut args = serve(&[]);
        if flag {
            args.push("--allow-group-readable-secrets".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run(&args, None);
        assert_eq!(result.code, 2, "mode {mode:o}: {result:?}");
        assert!(result.stderr.contains("chmod 600"), "{}", result.stderr);
        assert!(!ledger.exists(), "nothing opened");
    }
    // Group-readable with the flag (a Secret mounted with fsGroup): it starts, and a
    // token file others can read is warned about.
    chmod(&private, 0o640);
    chmod(&tokens, 0o644);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n",
    )
    .unwrap();
    let mut args = serve(&["--allow-group-readable-secrets"]);
    args.extend(["--log-format".into(), "json".into()]);
    let mut child = Command::new(BIN)
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("CLAIM_LEDGER_LOG_LEVEL", "warn,kube_client=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("API listening"), "{line}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the API token file is readable by others"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the signing key is readable by its group"),
        "{stderr}"
    );
}

#[test]
fn serve_closes_a_connection_that_sends_nothing_within_its_header_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n",
    )
    .unwrap();
    let ledger = dir.path().join("ledger");
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--db",
            ledger.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--header-timeout-seconds",
            "1",
            "--max-connections",
            "16",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("CLAIM_LEDGER_LOG_LEVEL", "off");
    let mut serve = Child::start(&mut command);
    let address = address_of(&serve.line_with("API listening"));
    let mut silent = std::net::TcpStream::connect(&address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    // The server closes it (end of stream, or a reset) well before the read times out.
    let closed = matches!(silent.read(&mut buffer), Ok(0) | Err(_));
    assert!(closed && started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        http(
            &address,
            "GET",
            "/healthz",
            None,
            None,
            Duration::from_secs(5)
        )
        .0,
        200
    );
    serve.interrupt_and_wait();
}
