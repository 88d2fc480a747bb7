//! Signed checkpoints, Merkle proofs and export bundles over HTTP, on a real socket
//! (127.0.0.1:0) over a real sled ledger: `/v1/checkpoint` (404 until signed, then a
//! signed note that verifies with the key), `/v1/proof/inclusion` and
//! `/v1/proof/consistency` (proofs verified with the RFC 9162 verifiers against the
//! answer's roots, the checkpoint's and the ledger's; bad parameters are 400s),
//! `/v1/export?bundle=true` (a tar verified offline with `verify_bundle`, with and without
//! a previous checkpoint; a wrong previous root is a 409), the CSV and CloudEvents exports,
//! `/v1/head`'s tree, and the service's checkpoint loop signing by itself.
//!
//! Tests that sign explicitly serve `Service::router()` (no background loop, so no
//! checkpoint appears unless the test signs one); the loop test runs `Service::serve`.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{at, fixtures, TestFreshness, TOKEN};
use api::{Auth, CheckpointSigning, ServeOptions, Service};
use ledger::{Ledger, LedgerConfig};
use reqwest::StatusCode;
use schemas::bundle::{hash32_from_hex, hash32_to_hex, verify_bundle, BundleParts};
use schemas::checkpoint::{open_note, Checkpoint, SignerKey};
use schemas::merkle::{self, Hash32};
use serde_json::Value;

const ORIGIN: &str = "audit.example/ledger";

fn key() -> SignerKey {
    SignerKey::from_seed("audit.example/ledger-key", [42; 32]).unwrap()
}

fn signing(every_entries: u64, interval: Duration) -> CheckpointSigning {
    CheckpointSigning {
        key: key(),
        origin: ORIGIN.to_string(),
        every_entries,
        interval,
    }
}

/// A service over its own ledger, served on 127.0.0.1:0.
struct Served {
    base: String,
    client: reqwest::Client,
    ledger: ledger::SharedLedger,
    service: Service,
    tick: i64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// `full`: `Service::serve` with its background loops (the checkpoint loop included);
    /// otherwise only the router, so checkpoints are signed when the test says.
    async fn start(signing: CheckpointSigning, full: bool) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("tokens");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let ledger = Ledger::open(&dir.path().join("db"), LedgerConfig::default()).unwrap();
        let ledger = ledger::SharedLedger::new(ledger);
        let freshness = Arc::new(TestFreshness::default());
        freshness
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let options = ServeOptions {
            checkpoints: Some(signing),
            ..ServeOptions::new(Auth::Tokens(token_file))
        };
        let service =
            Service::with_clock(ledger.clone(), freshness, options, Arc::new(|| at(0))).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = if full {
            let serving = service.clone().serve(listener, async move {
                let _ = stopped.await;
            });
            tokio::spawn(async move { serving.await.unwrap() })
        } else {
            let router = service.router();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap()
            })
        };
        Served {
            base,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            ledger,
            service,
            tick: 0,
            stop: Some(stop),
            handle,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.handle).await.unwrap();
    }

    /// Appends watch-event lines (others skipped) in one batch and flushes, as the
    /// watcher does; returns the head seq.
    fn ingest(&mut self, lines: &str) -> u64 {
        let mut changes = Vec::new();
        for line in lines.lines() {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(kind) = value.get("type").and_then(Value::as_str) else {
                continue;
            };
            let event = schemas::WatchEventType::parse(kind).unwrap();
            if let Some(change) = schemas::normalize(event, &value["object"]).unwrap() {
                changes.push(change);
            }
        }
        self.tick += 1;
        let changes = changes.into_iter().map(schemas::Change::Object);
        self.ledger.commit(changes, at(self.tick)).unwrap();
        self.ledger.view().head().seq
    }

    /// Ingests the first `count` fixture files; returns the head seq.
    fn ingest_fixtures(&mut self, skip: usize, count: usize) -> u64 {
        let mut head = 0;
        for path in fixtures().into_iter().skip(skip).take(count) {
            head = self.ingest(&std::fs::read_to_string(path).unwrap());
        }
        head
    }

    fn leaf(&self, seq: u64) -> Hash32 {
        let stored = self.ledger.view().entry(seq).unwrap().unwrap();
        merkle::leaf_hash(&stored.bytes)
    }

    async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.get_raw(path).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Requires a 4xx JSON error with this status and code.
    async fn error(&self, path: &str, status: StatusCode, code: &str) {
        let (got, body) = self.get(path).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    async fn sign(&self) -> ledger::StoredCheckpoint {
        self.service.sign_checkpoint().await.unwrap().unwrap()
    }
}

fn hashes(body: &Value) -> Vec<Hash32> {
    body["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash32_from_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

fn hex_field(body: &Value, field: &str) -> Hash32 {
    hash32_from_hex(
        body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {body}")),
    )
    .unwrap_or_else(|| panic!("{field}: {body}"))
}

/// The four files of a tar bundle.
fn untar(bytes: &[u8]) -> [String; 4] {
    let mut files: [Option<String>; 4] = Default::default();
    let names = [
        "manifest.json",
        "entries.jsonl",
        "checkpoint",
        "proofs.json",
    ];
    let mut archive = tar::Archive::new(bytes);
    for member in archive.entries().unwrap() {
        let mut member = member.unwrap();
        let name = member.path().unwrap().to_string_lossy().into_owned();
        let index = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("unexpected member {name}"));
        let mut text = String::new();
        member.read_to_string(&mut text).unwrap();
        assert!(files[index].replace(text).is_none(), "{name} twice");
    }
    files.map(|f| f.expect("every bundle file"))
}

fn parts(files: &[String; 4]) -> BundleParts<'_> {
    BundleParts {
        manifest: &files[0],
        entries: &files[1],
        checkpoint: &files[2],
        proofs: &files[3],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_is_404_until_signed_then_a_note_that_verifies() {
    let mut server = Served::start(signing(1000, Duration::from_secs(3600)), false).await;
    let head = server.ingest_fixtures(0, 2);
    assert!(head > 0);
    server
        .error("/v1/checkpoint", StatusCode::NOT_FOUND, "no_checkpoint")
        .await;
    server
        .error(
            "/v1/export?bundle=true",
            StatusCode::NOT_FOUND,
            "no_checkpoint",
        )
        .await;
    // It needs a token like every /v1 endpoint.
    let anonymous = server
        .client
        .get(format!("{}/v1/checkpoint", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let signed = server.sign().await;
    assert_eq!(signed.checkpoint.size, head);
    assert_eq!(signed.checkpoint.origin, ORIGIN);

    let response = server.get_raw("/v1/checkpoint").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(
        response.headers()["x-claim-ledger-tree-size"],
        head.to_string().as_str()
    );
    let text = response.text().await.unwrap();
    assert_eq!(text, signed.note);
    let (note, names) = open_note(&text, &[key().verifier()]).unwrap();
    assert_eq!(names, vec![key().name().to_string()]);
    let checkpoint = Checkpoint::parse_body(&note.body).unwrap();
    assert_eq!(
        (checkpoint.origin.as_str(), checkpoint.size),
        (ORIGIN, head)
    );
    assert_eq!(
        checkpoint.root,
        server.ledger.view().tree_root(),
        "the root of the whole ledger"
    );
    // Another key does not verify it.
    let other = SignerKey::from_seed("audit.example/ledger-key", [7; 32]).unwrap();
    assert!(open_note(&text, &[other.verifier()]).is_err());

    // Signing again with no new entry keeps the same checkpoint.
    assert_eq!(server.sign().await, signed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_verify_against_the_answer_the_checkpoint_and_the_ledger() {
    let mut server = Served::start(signing(1000, Duration::from_secs(3600)), false).await;
    let signed_size = server.ingest_fixtures(0, 2);
    let checkpoint = server.sign().await.checkpoint;
    let head = server.ingest_fixtures(2, 2);
    assert!(head > signed_size + 2, "{head}");

    for seq in [1, 2, signed_size / 2, signed_size - 1, signed_size, head] {
        for size in [seq, signed_size, head] {
            if size < seq {
                continue;
            }
            let (status, body) = server
                .get(&format!("/v1/proof/inclusion?seq={seq}&tree_size={size}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(
                (
                    body["seq"].as_u64(),
                    body["leaf_index"].as_u64(),
                    body["tree_size"].as_u64()
                ),
                (Some(seq), Some(seq - 1), Some(size)),
                "{body}"
            );
            let leaf = server.leaf(seq);
            assert_eq!(hex_field(&body, "leaf_hash"), leaf, "{body}");
            let root = hex_field(&body, "root");
            assert_eq!(root, server.ledger.view().root_at(size).unwrap());
            let proof = hashes(&body);
            merkle::verify_inclusion(&leaf, seq - 1, size, &proof, &root)
                .unwrap_or_else(|e| panic!("seq {seq} in {size}: {e}"));
            if size == signed_size {
                merkle::verify_inclusion(&leaf, seq - 1, size, &proof, &checkpoint.root).unwrap();
            }
            // Another leaf does not verify with this path.
            let other = server.leaf(if seq == 1 { 2 } else { seq - 1 });
            assert!(merkle::verify_inclusion(&other, seq - 1, size, &proof, &root).is_err());
        }
    }
    // tree_size defaults to the head.
    let (status, body) = server.get("/v1/proof/inclusion?seq=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tree_size"], head);
    merkle::verify_inclusion(
        &server.leaf(3),
        2,
        head,
        &hashes(&body),
        &server.ledger.view().tree_root(),
    )
    .unwrap();

    let beyond = head + 1;
    // Past the head: a well-formed question about what the ledger does not hold yet.
    for path in [
        format!("/v1/proof/inclusion?seq={beyond}"),
        format!("/v1/proof/inclusion?seq=1&tree_size={beyond}"),
        format!("/v1/proof/inclusion?seq={beyond}&tree_size={beyond}"),
    ] {
        server
            .error(&path, StatusCode::NOT_FOUND, "out_of_range")
            .await;
    }
    for path in [
        "/v1/proof/inclusion?seq=0".to_string(),
        "/v1/proof/inclusion?seq=0&tree_size=5".to_string(),
        "/v1/proof/inclusion?seq=6&tree_size=5".to_string(),
        format!("/v1/proof/inclusion?seq={}&tree_size={beyond}", beyond + 1),
        "/v1/proof/inclusion?tree_size=5".to_string(),
        "/v1/proof/inclusion".to_string(),
        "/v1/proof/inclusion?seq=1&leaf=1".to_string(),
        "/v1/proof/inclusion?seq=abc".to_string(),
        "/v1/proof/inclusion?seq=-1".to_string(),
        "/v1/proof/inclusion?seq=1&tree_size=18446744073709551616".to_string(),
    ] {
        server
            .error(&path, StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_proofs_verify_between_any_two_sizes() {
    let mut server = Served::start(signing(1000, Duration::from_secs(3600)), false).await;
    let signed_size = server.ingest_fixtures(0, 2);
    let checkpoint = server.sign().await.checkpoint;
    let head = server.ingest_fixtures(2, 3);
    let ledger_root = |size: u64| server.ledger.view().root_at(size).unwrap();

    for (from, to) in [
        (1, head),
        (1, 2),
        (signed_size, head),
        (signed_size, signed_size),
        (signed_size - 1, signed_size),
        (3, signed_size + 1),
        (head - 1, head),
        (head, head),
    ] {
        let (status, body) = server
            .get(&format!(
                "/v1/proof/consistency?from_size={from}&to_size={to}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{from}..{to}: {body}");
        assert_eq!(
            (body["from_size"].as_u64(), body["to_size"].as_u64()),
            (Some(from), Some(to))
        );
        let (old, new) = (hex_field(&body, "from_root"), hex_field(&body, "to_root"));
        assert_eq!((old, new), (ledger_root(from), ledger_root(to)));
        let proof = hashes(&body);
        merkle::verify_consistency(from, to, &old, &new, &proof)
            .unwrap_or_else(|e| panic!("{from}..{to}: {e}"));
        if from == signed_size {
            assert_eq!(old, checkpoint.root);
        }
        if from < to {
            // The proof is for these roots only.
            let mut wrong = old;
            wrong[0] ^= 1;
            assert!(merkle::verify_consistency(from, to, &wrong, &new, &proof).is_err());
        }
    }
    // to_size defaults to the head.
    let (status, body) = server
        .get(&format!("/v1/proof/consistency?from_size={signed_size}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["to_size"], head);
    assert_eq!(
        hex_field(&body, "to_root"),
        server.ledger.view().tree_root()
    );
    merkle::verify_consistency(
        signed_size,
        head,
        &checkpoint.root,
        &hex_field(&body, "to_root"),
        &hashes(&body),
    )
    .unwrap();

    let beyond = head + 1;
    for path in [
        format!("/v1/proof/consistency?from_size={beyond}"),
        format!("/v1/proof/consistency?from_size=1&to_size={beyond}"),
    ] {
        server
            .error(&path, StatusCode::NOT_FOUND, "out_of_range")
            .await;
    }
    for path in [
        "/v1/proof/consistency?from_size=0".to_string(),
        "/v1/proof/consistency?from_size=0&to_size=0".to_string(),
        "/v1/proof/consistency?from_size=5&to_size=4".to_string(),
        "/v1/proof/consistency".to_string(),
        "/v1/proof/consistency?to_size=5".to_string(),
        "/v1/proof/consistency?from_size=1&size=2".to_string(),
        "/v1/proof/consistency?from_size=x".to_string(),
    ] {
        server
            .error(&path, StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_over_http_verify_offline_and_other_formats_stream() {
    let mut server = Served::start(signing(1000, Duration::from_secs(3600)), false).await;
    let first_size = server.ingest_fixtures(0, 2);
    let first = server.sign().await;
    let head = server.ingest_fixtures(2, 2);
    let latest = server.sign().await;
    assert_eq!(latest.checkpoint.size, head);
    let trusted = [key().verifier()];

    let response = server.get_raw("/v1/export?bundle=true").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    assert_eq!(
        response.headers()["x-claim-ledger-to-seq"],
        head.to_string()
    );
    let files = untar(&response.bytes().await.unwrap());
    assert_eq!(files[2], latest.note);
    let summary = verify_bundle(&parts(&files), &trusted, None).unwrap();
    assert_eq!(
        (
            summary.from_seq,
            summary.to_seq,
            summary.tree_size,
            summary.origin.as_str()
        ),
        (1, head, head, ORIGIN)
    );
    assert_eq!(summary.root, hash32_to_hex(&latest.checkpoint.root));
    // Without a previous checkpoint there is no consistency proof to check against one.
    let unproven = verify_bundle(&parts(&files), &trusted, Some(&first.note)).unwrap_err();
    assert_eq!(unproven.kind.as_str(), "inconsistent");
    // An untrusted key rejects it.
    let other = SignerKey::from_seed("audit.example/ledger-key", [9; 32]).unwrap();
    assert_eq!(
        verify_bundle(&parts(&files), &[other.verifier()], None)
            .unwrap_err()
            .kind
            .as_str(),
        "untrusted_checkpoint"
    );

    // Against the auditor's previous checkpoint.
    let root = hash32_to_hex(&first.checkpoint.root);
    let response = server
        .get_raw(&format!(
            "/v1/export?bundle=true&previous_size={first_size}&previous_root={root}"
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let files = untar(&response.bytes().await.unwrap());
    let proofs: Value = serde_json::from_str(&files[3]).unwrap();
    assert_eq!(proofs["consistency"]["from_size"], first_size, "{proofs}");
    assert_eq!(proofs["consistency"]["to_size"], head, "{proofs}");
    let summary = verify_bundle(&parts(&files), &trusted, Some(&first.note)).unwrap();
    assert_eq!(summary.previous_size, Some(first_size));

    // previous_root may also be the checkpoint's own root line (base64, URL-encoded).
    let root_line = first.note.lines().nth(2).unwrap().to_string();
    let response = server
        .client
        .get(format!("{}/v1/export", server.base))
        .bearer_auth(TOKEN)
        .query(&[
            ("bundle", "true"),
            ("previous_size", &first_size.to_string()),
            ("previous_root", &root_line),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let files = untar(&response.bytes().await.unwrap());
    let summary = verify_bundle(&parts(&files), &trusted, Some(&first.note)).unwrap();
    assert_eq!(summary.previous_size, Some(first_size));

    // A middle range ending inside the first checkpoint is bundled against that one.
    let response = server
        .get_raw("/v1/export?bundle=true&from_seq=3&to_seq=9")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let files = untar(&response.bytes().await.unwrap());
    let summary = verify_bundle(&parts(&files), &trusted, None).unwrap();
    assert_eq!(
        (summary.from_seq, summary.to_seq, summary.tree_size),
        (3, 9, first_size)
    );
    assert_eq!(files[1].lines().count(), 7);

    // A previous root this ledger never had at that size: a fork the auditor must hear of.
    let mut wrong = first.checkpoint.root;
    wrong[31] ^= 0x80;
    let wrong = hash32_to_hex(&wrong);
    server
        .error(
            &format!("/v1/export?bundle=true&previous_size={first_size}&previous_root={wrong}"),
            StatusCode::CONFLICT,
            "inconsistent_checkpoint",
        )
        .await;
    // A previous checkpoint larger than the latest: a rollback.
    server
        .error(
            &format!(
                "/v1/export?bundle=true&previous_size={}&previous_root={root}",
                head + 1
            ),
            StatusCode::CONFLICT,
            "inconsistent_checkpoint",
        )
        .await;
    for path in [
        "/v1/export?format=csv&bundle=true".to_string(),
        "/v1/export?format=jsonl&bundle=true".to_string(),
        format!("/v1/export?bundle=true&previous_size={first_size}"),
        format!("/v1/export?bundle=true&previous_root={root}"),
        format!("/v1/export?bundle=true&previous_size={first_size}&previous_root=abc"),
        format!("/v1/export?previous_size={first_size}&previous_root={root}"),
        "/v1/export?bundle=yes".to_string(),
        "/v1/export?bundle=true&from_seq=9&to_seq=3".to_string(),
    ] {
        server
            .error(&path, StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
    for path in [
        format!("/v1/export?bundle=true&to_seq={}", head + 1),
        format!("/v1/export?bundle=true&from_seq={}", head + 1),
        "/v1/export?bundle=true&until=2000-01-01T00:00:00Z".to_string(),
    ] {
        server
            .error(&path, StatusCode::NOT_FOUND, "out_of_range")
            .await;
    }

    // CSV: a header and one row per entry.
    let response = server.get_raw("/v1/export?format=csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let columns: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(columns, formats::csv_export::CSV_COLUMNS);
    let seqs: Vec<u64> = reader
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());

    // CloudEvents: one structured-mode event per line (newline-delimited JSON, not the
    // JSON array of application/cloudevents-batch+json), with the checkpoint origin as
    // source.
    let response = server.get_raw("/v1/export?format=cloudevents").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len() as u64, head);
    for (i, event) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], seq.to_string());
        assert_eq!(event["source"], ORIGIN);
        assert_eq!(event["data"]["leaf_index"], seq - 1);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_names_the_tree_the_proofs_are_for() {
    let mut server = Served::start(signing(1000, Duration::from_secs(3600)), false).await;
    let head = server.ingest_fixtures(0, 3);
    let (status, body) = server.get("/v1/head").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], head);
    assert_eq!(body["tree_size"], head);
    assert_eq!(body["durable_seq"], head);
    let (status, inclusion) = server.get(&format!("/v1/proof/inclusion?seq={head}")).await;
    assert_eq!(status, StatusCode::OK, "{inclusion}");
    assert_eq!(inclusion["tree_size"], head);
    assert_eq!(body["root"], inclusion["root"], "{body} {inclusion}");
    let (_, consistency) = server.get("/v1/proof/consistency?from_size=1").await;
    assert_eq!(body["root"], consistency["to_root"]);
    // It is the root of every stored entry's bytes, and what a checkpoint signs.
    let leaves: Vec<Hash32> = (1..=head).map(|seq| server.leaf(seq)).collect();
    assert_eq!(
        body["root"].as_str().unwrap(),
        hash32_to_hex(&merkle::root_from_leaf_hashes(&leaves))
    );
    let signed = server.sign().await;
    assert_eq!(body["root"], hash32_to_hex(&signed.checkpoint.root));

    // It moves with the head.
    let later = server.ingest_fixtures(3, 1);
    let (_, moved) = server.get("/v1/head").await;
    assert_eq!(moved["tree_size"], later);
    assert_ne!(moved["root"], body["root"]);
    server.stop().await;
}

/// Polls `/v1/checkpoint` until it reports tree size `size` (5 s at most).
async fn wait_for_checkpoint(server: &Served, size: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = server.get_raw("/v1/checkpoint").await;
        if response.status() == StatusCode::OK {
            let text = response.text().await.unwrap();
            let (checkpoint, _) =
                schemas::checkpoint::verify_note(&text, &[key().verifier()]).unwrap();
            if checkpoint.size == size {
                return text;
            }
            assert!(checkpoint.size < size, "{text}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint of size {size} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_loop_signs_by_itself() {
    let mut server = Served::start(signing(5, Duration::from_millis(200)), true).await;
    // An empty ledger is not signed, however many ticks pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .error("/v1/checkpoint", StatusCode::NOT_FOUND, "no_checkpoint")
        .await;
    let start = server.ingest_fixtures(0, 1);
    // The loop signs what is there...
    wait_for_checkpoint(&server, start).await;
    // ...and what is appended after.
    let more = server.ingest_fixtures(1, 2);
    assert!(more >= start + 5);
    let text = wait_for_checkpoint(&server, more).await;
    let (checkpoint, _) = schemas::checkpoint::verify_note(&text, &[key().verifier()]).unwrap();
    assert_eq!(checkpoint.origin, ORIGIN);
    assert_eq!(checkpoint.root, server.ledger.view().tree_root());
    // Every checkpoint it signed extends the one before.
    let signed = server.ledger.view().checkpoints().unwrap();
    assert!(signed.len() >= 2, "{signed:?}");
    for pair in signed.windows(2) {
        let (old, new) = (&pair[0].checkpoint, &pair[1].checkpoint);
        if old.size == 0 {
            continue;
        }
        let (status, body) = server
            .get(&format!(
                "/v1/proof/consistency?from_size={}&to_size={}",
                old.size, new.size
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes(&body))
            .unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_loop_signs_after_every_entries_without_waiting_for_the_interval() {
    let mut server = Served::start(signing(5, Duration::from_secs(3600)), true).await;
    let start = server.ingest_fixtures(0, 1);
    // Signed at start.
    wait_for_checkpoint(&server, start).await;
    // Fewer than 5 new entries, an interval of an hour: nothing new is signed.
    let events: Vec<String> = std::fs::read_to_string(&fixtures()[1])
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"type\""))
        .map(String::from)
        .collect();
    let mut lines = events.iter();
    let mut head = start;
    while head < start + 3 {
        head = server.ingest(lines.next().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = server.get_raw("/v1/checkpoint").await;
    assert_eq!(
        response.headers()["x-claim-ledger-tree-size"],
        start.to_string().as_str()
    );
    // Five: signed on the next tick (at most a second).
    while head < start + 5 {
        head = server.ingest(lines.next().unwrap());
    }
    wait_for_checkpoint(&server, head).await;
    // Stopping signs the last entries too.
    let mut last = head;
    while last == head {
        last = server.ingest(lines.next().unwrap());
    }
    let ledger = server.ledger.clone();
    server.stop().await;
    let latest = ledger.view().latest_checkpoint().unwrap().unwrap();
    assert_eq!(latest.checkpoint.size, last);
}
