//! Every expectation of every lifecycle fixture in `tests/fixtures/`, asked over HTTP
//! (`POST /v1/identity/check`, bearer token, real socket) against a server whose ledger
//! is fed the fixture's events step by step; plus the two reasons an event replay cannot
//! express (`LEDGER_NOT_READY`, `LEDGER_BEHIND`), so every reason code of DOMAIN.md §5
//! is reached through the API.

use crate::common;
use std::collections::BTreeSet;

use crate::common::Server;
use reqwest::StatusCode;
use schemas::Reason;
use serde_json::{json, Value};

async fn replay(path: &std::path::Path, reached: &mut BTreeSet<String>) -> Server {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut server = Server::start().await;
    let text = std::fs::read_to_string(path).unwrap();
    let mut pending = String::new();
    let mut expectations = 0;
    for (number, line) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        if value.get("comment").is_some() {
            continue;
        }
        let Some(request) = value.get("expect") else {
            pending.push_str(line);
            pending.push('\n');
            continue;
        };
        server.ingest(&pending);
        pending.clear();
        let (status, body) = server.check(request).await;
        let expected = (value["decision"].as_str(), value["reason"].as_str());
        assert_eq!(
            (body["decision"].as_str(), body["reason"].as_str()),
            expected,
            "{name}:{}: {body}",
            number + 1
        );
        assert_eq!(status, StatusCode::OK, "{name}:{}", number + 1);
        assert_eq!(body["ledger"]["seq"], json!(server.head_seq()));
        assert_eq!(body["ledger"]["head_hash"].as_str().unwrap().len(), 64);
        if expected.0 == Some("allow") {
            assert_eq!(body["binding"]["pod"]["uid"], request["pod_uid"], "{name}");
            assert!(body["detail"].is_null());
        } else {
            assert!(body["binding"].is_null());
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
        reached.insert(body["reason"].as_str().unwrap_or("allow").to_string());
        expectations += 1;
    }
    assert!(
        expectations >= 3,
        "{name}: only {expectations} expectations"
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_expectation_holds_over_http_and_every_reason_is_reachable() {
    let files = common::fixtures();
    assert!(files.len() >= 14, "fixtures missing");
    let mut reached = BTreeSet::new();
    let mut last = None;
    for file in &files {
        let server = replay(file, &mut reached).await;
        if let Some(previous) = last.replace(server) {
            previous.stop().await;
        }
    }
    let server = last.unwrap();

    // Not synced: every check is not_ready (503), whatever the pod.
    let request = json!({"namespace": "agents", "pod_name": "anything", "pod_uid": "u-1"});
    server.set_ready(false);
    let (status, body) = server.check(&request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["decision"], "not_ready");
    reached.insert(body["reason"].as_str().unwrap().to_string());
    server.set_ready(true);

    // A caller that has seen a newer entry on another replica.
    let mut behind = request.clone();
    behind["min_seq"] = json!(server.head_seq() + 1);
    let (status, body) = server.check(&behind).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (body["decision"].as_str(), body["reason"].as_str()),
        (Some("not_ready"), Some("LEDGER_BEHIND"))
    );
    reached.insert("LEDGER_BEHIND".into());
    // At the head it answers.
    behind["min_seq"] = json!(server.head_seq());
    let (status, body) = server.check(&behind).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["decision"], "deny");

    let all: BTreeSet<String> = Reason::ALL.iter().map(|r| r.code().to_string()).collect();
    let missing: Vec<_> = all.difference(&reached).collect();
    assert!(missing.is_empty(), "reason codes not reached: {missing:?}");
    assert!(reached.contains("allow"));
    server.stop().await;
}
