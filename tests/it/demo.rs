//! `claim-ledger demo` and `claim-ledger sim` + `serve` as black boxes: the real binary,
//! real sockets on 127.0.0.1, real sled files. The demo's scenario must bind, replace and
//! release pods through the simulator, the watcher and the ledger, answer over HTTP with
//! the generated token, and leave a ledger that verifies.

use crate::support::process;
use std::process::Command;
use std::time::Duration;

use crate::support::process::{address_of, command, Child, BIN};
use crate::support::wait::eventually;

/// One request with the demo's bearer token, if any: (status, body).
fn http(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    process::http(
        address,
        method,
        path,
        authorization.as_deref(),
        body,
        Duration::from_secs(30),
    )
}

#[test]
fn demo_binds_and_releases_pods_answers_over_http_and_leaves_a_verified_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo");
    let mut demo = Child::start(&mut command(&[
        "demo",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--rounds",
        "4",
        "--step-ms",
        "300",
    ]));
    let api = address_of(&demo.line_with("API  "));
    let token = std::fs::read_to_string(db.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);

    let bound = demo.line_with("bound warm sandbox");
    let pod_uid = bound
        .split("pod uid ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let sandbox = bound
        .split("sandbox ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let request = format!(
        r#"{{"namespace":"demo","pod_name":"{sandbox}","pod_uid":"{pod_uid}","sandbox_id":"sbx-0000"}}"#
    );
    eventually("the first binding to be answered", || {
        let (status, body) = http(
            &api,
            "POST",
            "/v1/identity/check",
            Some(&token),
            Some(&request),
        );
        status == 200 && body.contains(r#""decision":"allow""#)
    });
    let (status, _) = http(&api, "POST", "/v1/identity/check", None, Some(&request));
    assert_eq!(status, 401, "no token, no answer");
    let (status, _) = http(&api, "GET", "/healthz", None, None);
    assert_eq!(status, 200);

    demo.line_with("replaced");
    eventually("the replaced pod's uid to be released", || {
        let (_, body) = http(
            &api,
            "POST",
            "/v1/identity/check",
            Some(&token),
            Some(&request),
        );
        body.contains("BINDING_RELEASED")
    });

    demo.line_with("scenario finished");
    assert!(demo.wait().success());

    let ledger = db.join("ledger");
    let verify = Command::new(BIN)
        .args(["verify", "--db", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let history = Command::new(BIN)
        .args([
            "history",
            "--db",
            ledger.to_str().unwrap(),
            "--pod-uid",
            &pod_uid,
        ])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(r#""transition":"bound""#), "{history}");
    assert!(history.contains(r#""transition":"released""#), "{history}");
}

#[test]
fn serve_watches_a_separate_simulator_process_through_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut sim = Child::start(&mut command(&[
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--no-controllers",
        "--kubeconfig-out",
        kubeconfig.to_str().unwrap(),
    ]));
    let sim_address = address_of(&sim.line_with("listening on"));
    let db = dir.path().join("ledger");
    let mut serve = Child::start(
        command(&[
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
        ])
        .env("KUBECONFIG", kubeconfig.to_str().unwrap()),
    );
    let api = address_of(&serve.line_with("listening on"));
    eventually("readiness", || {
        http(&api, "GET", "/readyz", None, None).0 == 200
    });

    // A directly created Sandbox and its pod, through the simulator's HTTP API.
    let sandbox = r#"{"apiVersion":"agents.x-k8s.io/v1beta1","kind":"Sandbox","metadata":{"name":"direct","namespace":"default","labels":{"openshell.ai/sandbox-id":"sbx-d"}},"spec":{"podTemplate":{"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let (status, created) = http(
        &sim_address,
        "POST",
        "/apis/agents.x-k8s.io/v1beta1/namespaces/default/sandboxes",
        None,
        Some(sandbox),
    );
    assert_eq!(status, 201, "{created}");
    let sandbox_uid = serde_json::from_str::<serde_json::Value>(&created).unwrap()["metadata"]
        ["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"direct","namespace":"default","annotations":{{"openshell.io/sandbox-id":"sbx-d"}},"ownerReferences":[{{"apiVersion":"agents.x-k8s.io/v1beta1","kind":"Sandbox","name":"direct","uid":"{sandbox_uid}","controller":true}}]}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    );
    let (status, created) = http(
        &sim_address,
        "POST",
        "/api/v1/namespaces/default/pods",
        None,
        Some(&pod),
    );
    assert_eq!(status, 201, "{created}");
    let pod_uid = serde_json::from_str::<serde_json::Value>(&created).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let request = format!(
        r#"{{"namespace":"default","pod_name":"direct","pod_uid":"{pod_uid}","require_claim":false}}"#
    );
    eventually("the direct binding", || {
        let (_, body) = http(&api, "POST", "/v1/identity/check", None, Some(&request));
        body.contains(r#""decision":"allow""#) && body.contains(r#""kind":"direct""#)
    });
    let claimed = request.replace(r#","require_claim":false"#, "");
    let (_, body) = http(&api, "POST", "/v1/identity/check", None, Some(&claimed));
    assert!(body.contains("NOT_CLAIMED"), "{body}");

    serve.interrupt();
    assert!(serve.wait().success());
    let verify = Command::new(BIN)
        .args(["verify", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn checks_answer_not_ready_once_the_watches_fail_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut sim = Child::start(&mut command(&[
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        kubeconfig.to_str().unwrap(),
    ]));
    sim.line_with("listening on");
    let db = dir.path().join("ledger");
    let mut serve = Child::start(
        command(&[
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--unready-after",
            "1",
        ])
        .env("KUBECONFIG", kubeconfig.to_str().unwrap()),
    );
    let api = address_of(&serve.line_with("listening on"));
    let request = r#"{"namespace":"default","pod_name":"p","pod_uid":"00000000-0000-4000-8000-000000000001"}"#;
    eventually("readiness", || {
        http(&api, "GET", "/readyz", None, None).0 == 200
    });
    let (status, body) = http(&api, "POST", "/v1/identity/check", None, Some(request));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("UNKNOWN_POD"), "{body}");

    // The API server goes away: every watch fails and keeps failing.
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    eventually("not ready after the grace period", || {
        let (status, body) = http(&api, "POST", "/v1/identity/check", None, Some(request));
        status == 503 && body.contains("LEDGER_NOT_READY")
    });
    assert_eq!(http(&api, "GET", "/readyz", None, None).0, 503);
    assert_eq!(
        http(&api, "GET", "/healthz", None, None).0,
        200,
        "alive all the same"
    );
}

/// The JSON body of a printed ready-to-paste check (`... -d '{...}'`).
fn printed_request(line: &str) -> String {
    let body = line.split(" -d '").nth(1).expect("a -d argument");
    body.trim_end().trim_end_matches('\'').to_string()
}

/// Runs `demo` for two rounds in `db`, and every printed check gets the answer the demo
/// says it should get.
fn demo_printed_checks_hold(db: &std::path::Path, reused: bool) -> Vec<String> {
    let mut demo = Child::start(&mut command(&[
        "demo",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--rounds",
        "2",
        "--step-ms",
        "1500",
    ]));
    if reused {
        let line = demo.line_with("reusing the ledger of an earlier demo");
        assert!(line.contains("head seq"), "{line}");
    }
    let api = address_of(&demo.line_with("API  "));
    let token = std::fs::read_to_string(db.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    let mut answered = Vec::new();
    // Two rounds: bind (allow), replace (allow the new uid, deny the old one), each round.
    for _ in 0..2 {
        for expectation in ["expect allow:", "expect allow (the new pod", "expect deny"] {
            demo.line_with(expectation);
            let request = printed_request(&demo.line_with("/v1/identity/check"));
            let wanted = match expectation {
                "expect deny" => "BINDING_RELEASED",
                _ => r#""decision":"allow""#,
            };
            eventually(&format!("{expectation} for {request}"), || {
                let (status, body) = http(
                    &api,
                    "POST",
                    "/v1/identity/check",
                    Some(&token),
                    Some(&request),
                );
                status == 200 && body.contains(wanted)
            });
            answered.push(format!("{expectation} {request}"));
        }
    }
    demo.line_with("scenario finished");
    assert!(demo.wait().success());
    answered
}

#[test]
fn every_printed_check_gets_its_printed_answer_and_a_second_demo_reuses_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo");
    let first = demo_printed_checks_hold(&db, false);
    // A second demo in the same directory: a fresh simulator over the old ledger. Its
    // volumes are named after their PVCs' uids, so no workspace looks reused.
    let second = demo_printed_checks_hold(&db, true);
    assert_eq!((first.len(), second.len()), (6, 6));
    assert_ne!(first, second, "the second run has new pods");
    let verify = Command::new(BIN)
        .args(["verify", "--db", db.join("ledger").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(verify.status.success());
}
