//! The read endpoints over HTTP: readiness, bindings, history and entries pagination,
//! state as of a seq or a time, head, streamed export (re-hashed here), metrics, the
//! OpenAPI document against the router, and denial records.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::k8s::{added, deleted, modified, request, with, ObjectBuilder, Owner, NS};
use crate::common::{at, Server, Setup, TOKEN};
use base64::Engine;
use reqwest::StatusCode;
use schemas::Hash;
use serde_json::{json, Value};

const CLAIM: &str = "c1a1m000-0800-4000-8000-000000000001";
const SANDBOX: &str = "5a4db0x0-0800-4000-8000-000000000001";
const POD: &str = "p0d00000-0800-4000-8000-000000000001";
const POD2: &str = "p0d00000-0800-4000-8000-000000000002";
const PVC: &str = "pvc00000-0800-4000-8000-000000000001";

/// Cold bind of claim `alpha`: claim, Sandbox, PVC, pod (four entries, one ingest each).
fn bind(server: &mut Server, k: &mut ObjectBuilder) {
    server.ingest_events(&[added(k.claim("alpha", CLAIM, Some("alpha"), false))]);
    server.ingest_events(&[added(k.sandbox(
        "alpha",
        SANDBOX,
        Owner::Claim("alpha", CLAIM),
        Some(CLAIM),
        None,
    ))]);
    server.ingest_events(&[added(k.pvc(
        "workspace-alpha",
        PVC,
        Some(("alpha", SANDBOX)),
        "pv-1",
    ))]);
    server.ingest_events(&[added(k.pod(
        "alpha",
        POD,
        ("alpha", SANDBOX),
        Some("sb-1"),
        false,
    ))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_checks_and_bindings() {
    let mut server = Server::start_with(Setup {
        ready: false,
        ..Setup::default()
    })
    .await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);

    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["ledger"]["verified_at_open"], true);
    assert_eq!(body["watchers"]["report"]["pods/v1"]["synced"], false);
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    // Before sync even a bound pod is not_ready, never allow.
    server
        .expect(
            &request("alpha", POD),
            "not_ready",
            Some("LEDGER_NOT_READY"),
        )
        .await;
    let (status, body) = server.get(&format!("/v1/bindings/{POD}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
    );
    // A pod the unsynced ledger has not seen is not known to be unbound either.
    let (status, body) = server.get(&format!("/v1/bindings/{POD2}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")),
        "{body}"
    );

    server.set_ready(true);
    let (status, body) = server.get(&format!("/v1/bindings/{POD2}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server.get("/readyz").await;
    assert_eq!(
        (status, body["ready"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    server
        .expect(
            &with(request("alpha", POD), json!({"sandbox_id": "sb-1"})),
            "allow",
            None,
        )
        .await;

    // The watch fails past its grace period: not ready again.
    server.set_ready(false);
    server
        .expect(
            &request("alpha", POD),
            "not_ready",
            Some("LEDGER_NOT_READY"),
        )
        .await;
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_answer_the_current_binding_or_why_not() {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    let (status, body) = server.get(&format!("/v1/bindings/{POD}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["binding"]["kind"], "claim");
    assert_eq!(body["binding"]["claim"]["uid"], CLAIM);
    assert_eq!(body["binding"]["pvcs"][0]["uid"], PVC);
    assert_eq!(body["bindings"].as_array().unwrap().len(), 1);
    assert_eq!(body["ledger"]["seq"], 4);

    // A direct Sandbox (no claim) is a binding too, of kind direct.
    let direct_sandbox = "5a4db0x0-0800-4000-8000-0000000000d1";
    let direct_pod = "p0d00000-0800-4000-8000-0000000000d1";
    server.ingest_events(&[
        added(k.sandbox("direct", direct_sandbox, Owner::None, None, Some("sb-d"))),
        added(k.pod(
            "direct",
            direct_pod,
            ("direct", direct_sandbox),
            Some("sb-d"),
            false,
        )),
    ]);
    let (status, body) = server.get(&format!("/v1/bindings/{direct_pod}")).await;
    assert_eq!(
        (status, body["binding"]["kind"].as_str()),
        (StatusCode::OK, Some("direct"))
    );
    // ... which a check refuses unless the caller allows direct bindings.
    server
        .expect(&request("direct", direct_pod), "deny", Some("NOT_CLAIMED"))
        .await;
    server
        .expect(
            &with(
                request("direct", direct_pod),
                json!({"require_claim": false}),
            ),
            "allow",
            None,
        )
        .await;

    server.ingest_events(&[deleted(k.pod(
        "alpha",
        POD,
        ("alpha", SANDBOX),
        Some("sb-1"),
        false,
    ))]);
    for (uid, reason) in [(POD, "BINDING_RELEASED"), (POD2, "UNKNOWN_POD")] {
        let (status, body) = server.get(&format!("/v1/bindings/{uid}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(
            (body["error"].as_str(), body["reason"].as_str()),
            (Some("not_bound"), Some(reason))
        );
        assert!(body["detail"].as_str().is_some());
    }
    server.stop().await;
}

async fn pages(server: &Server, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    for _ in 0..10_000 {
        let (status, body) = server
            .get(&format!("{query}&after_seq={after}&limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries = body["entries"].as_array().unwrap();
        assert!(entries.len() <= limit);
        all.extend(entries.iter().cloned());
        match body["next_after_seq"].as_u64() {
            Some(next) => {
                assert_eq!(entries.len(), limit);
                assert_eq!(entries.last().unwrap()["seq"].as_u64(), Some(next));
                after = next;
            }
            None => return all,
        }
    }
    panic!("pagination does not end");
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_entries_paginate_in_order() {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    // 25 changes of the pod's identity annotation... on a pod of another, warm Sandbox
    // (so they are recorded without being mutations of a binding).
    let warm = "5a4db0x0-0800-4000-8000-0000000000a1";
    let warm_pod = "p0d00000-0800-4000-8000-0000000000a1";
    server.ingest_events(&[added(k.sandbox(
        "warm",
        warm,
        Owner::Pool("pool", "p0010000-0800-4000-8000-000000000001"),
        None,
        None,
    ))]);
    for i in 0..25 {
        let event = k.pod(
            "warm",
            warm_pod,
            ("warm", warm),
            Some(&format!("id-{i}")),
            false,
        );
        server.ingest_events(&[if i == 0 {
            added(event)
        } else {
            modified(event)
        }]);
    }
    // The pod replaced under the same name: the name's history spans both uids.
    server.ingest_events(&[deleted(k.pod(
        "warm",
        warm_pod,
        ("warm", warm),
        Some("id-24"),
        false,
    ))]);
    server.ingest_events(&[added(k.pod(
        "warm",
        POD2,
        ("warm", warm),
        Some("id-x"),
        false,
    ))]);
    let head = server.head_seq();

    let by_uid = pages(&server, &format!("/v1/history?pod_uid={warm_pod}"), 10).await;
    assert_eq!(by_uid.len(), 26);
    let by_uid_seqs = seqs(&by_uid);
    assert!(by_uid_seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(by_uid
        .iter()
        .all(|e| e["entry"]["change"]["object"]["uid"] == warm_pod));
    let (_, one_page) = server
        .get(&format!("/v1/history?pod_uid={warm_pod}&limit=1000"))
        .await;
    assert_eq!(seqs(one_page["entries"].as_array().unwrap()), by_uid_seqs);
    assert!(one_page["next_after_seq"].is_null());

    let by_name = pages(
        &server,
        &format!("/v1/history?kind=Pod&namespace={NS}&name=warm"),
        7,
    )
    .await;
    assert_eq!(by_name.len(), 27);
    assert_eq!(
        by_name.last().unwrap()["entry"]["change"]["object"]["uid"],
        POD2
    );
    let by_name_lower = pages(
        &server,
        &format!("/v1/history?kind=pod&namespace={NS}&name=warm"),
        100,
    )
    .await;
    assert_eq!(seqs(&by_name_lower), seqs(&by_name));
    // The kind's plural and short names, as the CLI and the timeline take them.
    for kind in ["pods", "PODS"] {
        let by_alias = pages(
            &server,
            &format!("/v1/history?kind={kind}&namespace={NS}&name=warm"),
            100,
        )
        .await;
        assert_eq!(seqs(&by_alias), seqs(&by_name), "{kind}");
    }

    // An object's history: the entries that recorded it, and those whose transitions
    // name it (the pod's arrival bound the claim, Sandbox and PVC).
    for (selector, uid) in [
        ("claim_uid", CLAIM),
        ("sandbox_uid", SANDBOX),
        ("pvc_uid", PVC),
    ] {
        let entries = pages(&server, &format!("/v1/history?{selector}={uid}"), 5).await;
        assert_eq!(
            entries[0]["entry"]["change"]["object"]["uid"], uid,
            "{selector}"
        );
        for entry in &entries[1..] {
            let transitions = entry["entry"]["transitions"].to_string();
            assert!(transitions.contains(uid), "{selector}: {entry}");
        }
    }
    // The short names the CLI takes: `claim` and `pvc` name the same objects.
    for (kind, name, selector, uid) in [
        ("claim", "alpha", "claim_uid", CLAIM),
        ("pvc", "workspace-alpha", "pvc_uid", PVC),
    ] {
        let by_alias = pages(
            &server,
            &format!("/v1/history?kind={kind}&namespace={NS}&name={name}"),
            100,
        )
        .await;
        let by_uid = pages(&server, &format!("/v1/history?{selector}={uid}"), 100).await;
        assert!(!by_alias.is_empty(), "{kind}");
        assert_eq!(seqs(&by_alias), seqs(&by_uid), "{kind}");
    }
    // A uid of another kind than the selector says.
    let (status, body) = server.get(&format!("/v1/history?claim_uid={POD}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    // An unknown uid has an empty history.
    let (status, body) = server.get("/v1/history?pod_uid=never-seen").await;
    assert_eq!(
        (status, body["entries"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );

    let all = pages(&server, "/v1/entries?", 9).await;
    assert_eq!(seqs(&all), (1..=head).collect::<Vec<_>>());
    for pair in all.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let (_, tail) = server.get(&format!("/v1/entries?after_seq={head}")).await;
    assert_eq!(tail["entries"].as_array().unwrap().len(), 0);
    assert!(tail["next_after_seq"].is_null());
    assert_eq!(tail["head_seq"], head);

    let (_, head_body) = server.get("/v1/head").await;
    assert_eq!(head_body["seq"], head);
    assert_eq!(head_body["durable_seq"], head);
    assert_eq!(head_body["hash"], all.last().unwrap()["hash"]);
    assert_eq!(
        head_body["observed_at"],
        all.last().unwrap()["entry"]["observed_at"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_as_of_a_seq_or_a_time() {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    server.ingest_events(&[deleted(k.claim("alpha", CLAIM, Some("alpha"), false))]);

    let (status, now) = server.get("/v1/state").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now["seq"], 5);
    assert_eq!(now["bindings"].as_array().unwrap().len(), 0);
    assert_eq!(now["objects"].as_array().unwrap().len(), 3);

    let (_, bound) = server.get("/v1/state?as_of_seq=4").await;
    assert_eq!(bound["seq"], 4);
    assert_eq!(bound["bindings"][0]["pod"]["uid"], POD);
    assert_eq!(bound["objects"].as_array().unwrap().len(), 4);

    // Ingest n was observed at at(n): the state at at(2) is after the Sandbox.
    let time = at(2).to_rfc3339();
    let (status, early) = server
        .get(&format!("/v1/state?as_of={}", time.replace('+', "%2B")))
        .await;
    assert_eq!(status, StatusCode::OK, "{early}");
    assert_eq!(early["seq"], 2);
    assert_eq!(early["objects"].as_array().unwrap().len(), 2);
    let (_, before) = server.get("/v1/state?as_of=2000-01-01T00:00:00Z").await;
    assert_eq!(before["seq"], 0);
    assert_eq!(before["objects"].as_array().unwrap().len(), 0);
    let (_, zero) = server.get("/v1/state?as_of_seq=0").await;
    assert_eq!(zero["seq"], 0);
    server.stop().await;
}

fn verify_lines(text: &str, from: u64) -> u64 {
    let mut previous: Option<Hash> = None;
    let mut expected = from;
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let seq = value["seq"].as_u64().unwrap();
        assert_eq!(seq, expected);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value["bytes"].as_str().unwrap())
            .unwrap();
        let prev = Hash::from_hex(value["prev_hash"].as_str().unwrap()).unwrap();
        if let Some(previous) = previous {
            assert_eq!(prev, previous, "seq {seq}");
        }
        let hash = schemas::chain_hash(&prev, seq, &bytes);
        assert_eq!(hash.to_hex(), value["hash"].as_str().unwrap(), "seq {seq}");
        previous = Some(hash);
        expected += 1;
    }
    expected - from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_thousands_of_entries_that_rehash() {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    // 3,000 more entries in six ingests of 500 pods each (observed at at(5)..at(10)).
    for batch in 0..6 {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                added(k.pod(
                    &format!("p-{n}"),
                    &format!("p0d00000-0801-4000-8000-{n:012}"),
                    ("alpha", SANDBOX),
                    None,
                    false,
                ))
            })
            .collect();
        server.ingest_events(&events);
    }
    let head = server.head_seq();
    assert_eq!(head, 3004);

    let response = server
        .client
        .get(server.url("/v1/export?format=jsonl"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert!(
        response.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    assert_eq!(
        response.headers()["x-claim-ledger-to-seq"],
        head.to_string().as_str()
    );
    let mut response = response;
    let mut text = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks >= 1);
    assert_eq!(verify_lines(std::str::from_utf8(&text).unwrap(), 1), head);

    // A sub-range by seq, and one by time (ingest 6 and 7 were observed at at(6), at(7)).
    let (status, body) = server.get("/v1/export?from_seq=1000&to_seq=2500").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verify_lines(body.as_str().unwrap(), 1000), 1501);
    let since = at(6).to_rfc3339().replace('+', "%2B");
    let until = at(7).to_rfc3339().replace('+', "%2B");
    let (status, body) = server
        .get(&format!("/v1/export?since={since}&until={until}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert_eq!(verify_lines(text, 505), 1000);
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let observed = value["entry"]["observed_at"].as_str().unwrap();
        assert!(
            observed == at(6).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                || observed == at(7).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "{observed}"
        );
    }
    // An empty ledger range exports nothing.
    let (status, body) = server.get("/v1/export?since=2100-01-01T00:00:00Z").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, Some("")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_checks_ledger_and_watchers() {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    // Status churn (ignored), a repeated event (duplicate), an older one (stale).
    let pod = k.pod("alpha", POD, ("alpha", SANDBOX), Some("sb-1"), false);
    server.ingest_events(&[modified(pod.clone())]);
    let extra = k.pod("extra", POD2, ("alpha", SANDBOX), Some("sb-1"), false);
    server.ingest_events(&[added(extra.clone()), added(extra.clone())]);
    let mut stale = extra;
    stale["metadata"]["resourceVersion"] = json!("1");
    server.ingest_events(&[modified(stale)]);
    server.expect(&request("alpha", POD), "allow", None).await;
    server
        .expect(&request("nobody", CLAIM), "deny", Some("UNKNOWN_POD"))
        .await;
    server.set_ready(false);
    server
        .expect(
            &request("alpha", POD),
            "not_ready",
            Some("LEDGER_NOT_READY"),
        )
        .await;
    server
        .freshness
        .watch_errors
        .store(7, std::sync::atomic::Ordering::SeqCst);

    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("text"));
    let text = response.text().await.unwrap();
    for line in [
        "claim_ledger_checks_total{decision=\"allow\",reason=\"none\"} 1",
        "claim_ledger_checks_total{decision=\"deny\",reason=\"UNKNOWN_POD\"} 1",
        "claim_ledger_checks_total{decision=\"not_ready\",reason=\"LEDGER_NOT_READY\"} 1",
        "claim_ledger_check_duration_seconds_count 3",
        "claim_ledger_appends_total 5",
        "claim_ledger_duplicates_total 1",
        "claim_ledger_stale_total 1",
        "claim_ledger_head_seq 5",
        "claim_ledger_durable_seq 5",
        "claim_ledger_ignored_total 1",
        "claim_ledger_ready 0",
        "claim_ledger_watch_errors_total 7",
        "claim_ledger_relists_total 2",
        "claim_ledger_resync_deletions_total 3",
        "claim_ledger_rejected_objects_total 4",
        "claim_ledger_denials_pending 0",
        "claim_ledger_flushes_total 12",
        "claim_ledger_flush_seconds_total 0.25",
        "claim_ledger_denials_dropped_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE claim_ledger_check_duration_seconds histogram"));
    assert!(text.contains("claim_ledger_check_duration_seconds_bucket{le="));
    server.stop().await;
}

/// Every `$ref` in the document points at a schema it defines.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let server = Server::start().await;
    let response = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document, api::openapi::document());

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = api::Service::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served, "the document and the router disagree");

    // And the router really answers every documented operation (no 404 route miss, no 405).
    for (method, path) in &documented {
        let url = server.url(&path.replace("{pod_uid}", "some-uid"));
        let request = match method.as_str() {
            "post" => server
                .client
                .post(url)
                .json(&json!({"namespace": "n", "pod_name": "p", "pod_uid": "u"})),
            "get" => server.client.get(url),
            other => panic!("undocumented method {other}"),
        };
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!text.contains("no such route"), "{method} {path}: {text}");
        let operation = &document["paths"][path][method];
        assert!(operation["operationId"].is_string(), "{method} {path}");
        assert!(operation["responses"]
            .as_object()
            .is_some_and(|r| !r.is_empty()));
        let public = !path.starts_with("/v1/");
        assert_eq!(
            operation["security"] == json!([]),
            public,
            "{method} {path}"
        );
    }
    let mut targets = Vec::new();
    refs(&document, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{target}"
        );
    }
    server.stop().await;
}

fn denied_entries(history: &Value) -> Vec<Value> {
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["entry"]["change"].get("check_denied").cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_are_aggregated_per_minute_into_the_ledger() {
    let mut server = Server::start_with(Setup {
        denial_flush: Duration::from_millis(20),
        ..Setup::default()
    })
    .await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    server.ingest_events(&[deleted(k.pod(
        "alpha",
        POD,
        ("alpha", SANDBOX),
        Some("sb-1"),
        false,
    ))]);
    server.ingest_events(&[added(k.pod(
        "alpha",
        POD2,
        ("alpha", SANDBOX),
        Some("sb-1"),
        false,
    ))]);
    let head = server.head_seq();

    // Minute 0: 40 replays of the released uid, 5 of a forged uid under the live name,
    // and denials that are not recorded (unknown pod, wrong sandbox id).
    let forged = "deadbeef-0800-4000-8000-000000000000";
    server.clock.store(5, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..40 {
        server
            .expect(&request("alpha", POD), "deny", Some("BINDING_RELEASED"))
            .await;
    }
    for _ in 0..5 {
        server
            .expect(&request("alpha", forged), "deny", Some("POD_UID_MISMATCH"))
            .await;
    }
    server
        .expect(&request("nobody", forged), "deny", Some("UNKNOWN_POD"))
        .await;
    server
        .expect(
            &with(request("alpha", POD2), json!({"sandbox_id": "sb-2"})),
            "deny",
            Some("SANDBOX_ID_MISMATCH"),
        )
        .await;
    // Nothing is written while the minute is open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.head_seq(), head);

    // The minute closes: the background flush appends one entry per (uid, reason).
    server.clock.store(65, std::sync::atomic::Ordering::SeqCst);
    let mut history = Value::Null;
    for _ in 0..1000 {
        let (_, body) = server.get(&format!("/v1/history?pod_uid={POD}")).await;
        if !denied_entries(&body).is_empty() {
            history = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let denied = denied_entries(&history);
    assert_eq!(denied.len(), 1, "{history}");
    assert_eq!(denied[0]["count"], 40);
    assert_eq!(denied[0]["reason"], "BINDING_RELEASED");
    assert_eq!(denied[0]["namespace"], NS);
    assert_eq!(denied[0]["pod_name"], "alpha");
    let minute: chrono::DateTime<chrono::Utc> =
        denied[0]["minute"].as_str().unwrap().parse().unwrap();
    assert_eq!(minute, at(0));
    // The denials sit in the uid's history after its binding and release.
    let changes: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["entry"]["change"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(changes, ["object", "object", "check_denied"]);
    assert_eq!(server.head_seq(), head + 2);
    let (_, forged_history) = server.get(&format!("/v1/history?pod_uid={forged}")).await;
    let denied = denied_entries(&forged_history);
    assert_eq!((denied.len(), denied[0]["count"].as_u64()), (1, Some(5)));
    assert_eq!(denied[0]["reason"], "POD_UID_MISMATCH");

    // Minute 1: three more, still pending at shutdown, which records them.
    for _ in 0..3 {
        server
            .expect(&request("alpha", POD), "deny", Some("BINDING_RELEASED"))
            .await;
    }
    let (dir, ledger) = server.stop().await;
    let server = Server::start_over(dir, ledger, Setup::default()).await;
    let (_, history) = server.get(&format!("/v1/history?pod_uid={POD}")).await;
    let denied = denied_entries(&history);
    let counts: Vec<u64> = denied
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [40, 3]);
    assert_eq!(server.head_seq(), head + 3);
    // The ledger with the denial records still verifies end to end.
    let report = server.ledger.view().verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_states_beyond_the_replay_limit_are_all_answered_in_turn() {
    // One permit for sixteen replays at once: each must be released once its body is
    // written, or the rest would wait out the request timeout.
    let mut server = Server::start_with(Setup {
        max_replays: 1,
        ..Setup::default()
    })
    .await;
    let mut k = ObjectBuilder::default();
    bind(&mut server, &mut k);
    let paths: Vec<String> = (0..16)
        .map(|n| format!("/v1/state?as_of_seq={}", n % 4))
        .collect();
    let answers = futures::future::join_all(paths.iter().map(|path| server.get(path))).await;
    for (n, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["seq"], n % 4, "{body}");
        assert_eq!(body["objects"].as_array().unwrap().len(), n % 4);
    }
    server.stop().await;
}
