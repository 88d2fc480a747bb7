//! Authentication (bearer tokens from a reloaded file), TLS, and client mistakes: every
//! one answered with a 4xx and the JSON error shape, never a 5xx.

use crate::common;
use std::time::Duration;

use crate::common::{Server, Setup, OTHER_TOKEN, TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A concrete URL for every route of the table (path parameters filled in).
fn concrete(path: &str) -> String {
    path.replace("{pod_uid}", "p0d00000-0000-4000-8000-000000000001")
}

async fn status_with(
    server: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let url = server.url(&concrete(path));
    let mut request = match method {
        "post" => server
            .client
            .post(url)
            .json(&json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"})),
        _ => server.client.get(url),
    };
    if let Some(header) = auth {
        request = request.header("authorization", header);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_needs_a_listed_token_and_a_removed_token_stops_working() {
    let server = Server::start().await;
    let routes = api::Service::routes();
    for (method, path) in &routes {
        let open = !path.starts_with("/v1/");
        let (status, body, headers) = status_with(&server, method, path, None).await;
        if open {
            assert!(
                status.is_success(),
                "{method} {path} without a token: {status}"
            );
            continue;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert!(headers.get("www-authenticate").is_some());
        for header in [
            "Bearer wrong-token",
            "Bearer",
            "Bearer    ",
            "Basic dGVzdDp0ZXN0",
            &format!("Token {TOKEN}"),
            &format!("Bearer {TOKEN}x"),
        ] {
            let (status, body, _) = status_with(&server, method, path, Some(header)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {header:?}: {body}"
            );
            assert_eq!(body["error"], "unauthorized");
        }
        for token in [TOKEN, OTHER_TOKEN] {
            let (status, body, _) =
                status_with(&server, method, path, Some(&format!("Bearer {token}"))).await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        }
        // The scheme is case-insensitive.
        let (status, _, _) =
            status_with(&server, method, path, Some(&format!("bearer {TOKEN}"))).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED);
    }

    // Remove the second token from the file: it stops working at once, the first stays.
    std::fs::write(
        &server.token_file,
        format!("{TOKEN}\n# {OTHER_TOKEN} revoked\n"),
    )
    .unwrap();
    let head = "/v1/head";
    let (status, _, _) =
        status_with(&server, "get", head, Some(&format!("Bearer {OTHER_TOKEN}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = status_with(&server, "get", head, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK);
    // A token added later works without a restart.
    std::fs::write(&server.token_file, format!("{TOKEN}\nthird-token-5555\n")).unwrap();
    let (status, _, _) = status_with(&server, "get", head, Some("Bearer third-token-5555")).await;
    assert_eq!(status, StatusCode::OK);
    // An unreadable (removed) file leaves no valid token.
    std::fs::remove_file(&server.token_file).unwrap();
    let (status, _, _) = status_with(&server, "get", head, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = status_with(&server, "get", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    let (_, metrics, _) = status_with(&server, "get", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    let refused: u64 = metrics
        .lines()
        .find(|l| l.starts_with("claim_ledger_unauthorized_requests_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refused >= 7, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_token_file_is_refused_at_start_and_insecure_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(&dir.path().join("db"), Default::default()).unwrap();
    let ledger = ledger::SharedLedger::new(ledger);
    let freshness = std::sync::Arc::new(common::TestFreshness::default());
    for content in [None, Some("# no tokens\n\n")] {
        let path = dir.path().join("tokens");
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let options = api::ServeOptions::new(api::Auth::Tokens(path));
        let error = api::Service::new(ledger.clone(), freshness.clone(), options).unwrap_err();
        assert!(matches!(error, api::ApiError::Config(_)), "{error}");
    }
    drop(ledger);

    let server = Server::start_with(Setup {
        auth: false,
        ..Setup::default()
    })
    .await;
    let response = server
        .client
        .get(server.url("/v1/head"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_refuses_plain_http() {
    let server = Server::start_with(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    assert!(server.base.starts_with("https://"));
    let (status, body) = server.get("/v1/head").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], 0);
    let (status, body) = server
        .check(&json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"}))
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::OK, Some("UNKNOWN_POD"))
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = server.base.replace("https://localhost", "http://127.0.0.1") + "/healthz";
    let answer = plain.get(url).send().await;
    assert!(answer.is_err() || !answer.unwrap().status().is_success());
    server.stop().await;
}

async fn post_raw(
    server: &Server,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = server
        .client
        .post(server.url("/v1/identity/check"))
        .bearer_auth(TOKEN)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    (status, response.json().await.unwrap())
}

fn assert_client_error(status: StatusCode, body: &Value, code: &str, what: &str) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_check_requests_get_a_4xx_json_error() {
    let server = Server::start().await;
    let json_type = Some("application/json");
    let long = |n: usize| "a".repeat(n);
    let cases: Vec<(Vec<u8>, StatusCode, &str, &str)> = vec![
        (
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "EOF",
        ),
        (
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "expected",
        ),
        (
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "EOF",
        ),
        (
            vec![0xff, 0xfe, 0x00],
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "JSON",
        ),
        (
            "[".repeat(10_000).into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid type",
        ),
        (
            b"null".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid type",
        ),
        (
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "missing field `pod_uid`",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "admin": true})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "unknown field `admin`",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": 7})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid type",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "min_seq": -1})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid value",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "require_claim": "yes"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid type",
        ),
        (
            json!({"namespace": "ns", "pod_name": long(300), "pod_uid": "u"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "pod_name is 300 characters long; at most 253",
        ),
        (
            json!({"namespace": long(254), "pod_name": "p", "pod_uid": "u"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "namespace is 254 characters",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": long(129)})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "pod_uid is 129 characters long; at most 128",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": ""})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "pod_uid is empty",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "a\u{0}b"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "pod_uid contains control characters",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p\nq", "pod_uid": "u"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "pod_name contains control",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "claim_uid": long(200)})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "claim_uid is 200 characters",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "sandbox_id": ""})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "sandbox_id is empty",
        ),
        (
            json!({"namespace": "", "pod_name": "", "pod_uid": ""})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "namespace is empty; pod_name is empty; pod_uid is empty",
        ),
        (
            json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u", "pad": long(20_000)})
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "",
        ),
    ];
    for (body, status, code, detail) in cases {
        let what = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let (got, answer) = post_raw(&server, body, json_type).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_client_error(got, &answer, code, &what);
        assert!(
            answer["detail"].as_str().unwrap().contains(detail),
            "{what}: {answer}"
        );
    }

    // min_seq is a JSON Schema integer: 3.0 and 3e0 are 3; 2.5 is not an integer.
    for (min_seq, status) in [
        ("0.0", StatusCode::OK),
        ("0e0", StatusCode::OK),
        ("2.5", StatusCode::UNPROCESSABLE_ENTITY),
        ("18446744073709551616", StatusCode::UNPROCESSABLE_ENTITY),
        ("-0.5", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let body = format!(
            r#"{{"namespace": "ns", "pod_name": "p", "pod_uid": "u", "min_seq": {min_seq}}}"#
        );
        let (got, answer) = post_raw(&server, body.into_bytes(), json_type).await;
        assert_eq!(got, status, "{min_seq}: {answer}");
    }

    let valid = json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"}).to_string();
    let (status, body) = post_raw(&server, valid.clone().into_bytes(), Some("text/plain")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_client_error(status, &body, "unsupported_media_type", "text/plain");
    // No content type at all is accepted, as is a JSON one with parameters.
    let (status, _) = post_raw(&server, valid.clone().into_bytes(), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post_raw(
        &server,
        valid.into_bytes(),
        Some("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // An oversized body sent in chunks, without a Content-Length: through the same
    // router in process (over a socket the server may close before the client has
    // written everything, and the client then never reads the answer).
    use tower::ServiceExt;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 1024])).collect();
    let request = axum::http::Request::post("/v1/identity/check")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let response = server.service.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_client_error(status, &body, "body_too_large", "chunked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_methods_and_query_parameters_get_a_4xx_json_error() {
    let server = Server::start().await;
    let long_uid = "u".repeat(129);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("/v1/nope".into(), StatusCode::NOT_FOUND, "not_found"),
        ("/nope".into(), StatusCode::NOT_FOUND, "not_found"),
        (
            "/v1/history".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&claim_uid=b".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&bogus=1".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&limit=0".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&limit=5000".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&after_seq=-1".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a&after_seq=x".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/v1/history?pod_uid={long_uid}"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?pod_uid=a%00b".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?kind=Pod&namespace=ns".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?kind=Deployment&namespace=ns&name=n".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/entries?limit=abc".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/entries?after_seq=99999999999999999999999".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/state?as_of=yesterday".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/state?as_of_seq=5&as_of=2026-01-01T00:00:00Z".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/state?as_of_seq=99".into(),
            StatusCode::NOT_FOUND,
            "out_of_range",
        ),
        (
            "/v1/export?format=xml".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/export?to_seq=99".into(),
            StatusCode::NOT_FOUND,
            "out_of_range",
        ),
        (
            "/v1/export?from_seq=5&to_seq=4".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/export?from_seq=1&since=2026-01-01T00:00:00Z".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/export?until=noon".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/v1/bindings/{long_uid}"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/bindings/a%0Ab".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/bindings/p0d00000-0000-4000-8000-000000000001".into(),
            StatusCode::NOT_FOUND,
            "not_bound",
        ),
        // Not UTF-8 once percent-decoded: refused, not decoded lossily to U+FFFD.
        (
            "/v1/history?pod_uid=%ff%fe".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?%ff=a".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/history?kind=Pod&namespace=ns&name=a%c3".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/export?format=%ff".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/bindings/%ff%fe".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    for (path, status, code) in cases {
        let (got, body) = server.get(&path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_client_error(got, &body, code, &path);
    }
    // UTF-8 that is not ASCII is fine.
    let (status, body) = server.get("/v1/history?pod_uid=%e2%82%ac+x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/identity/check"),
        (reqwest::Method::DELETE, "/v1/head"),
        (reqwest::Method::POST, "/healthz"),
    ] {
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert_client_error(status, &body, "method_not_allowed", path);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_times_out_with_a_json_408() {
    use tower::ServiceExt;
    let server = Server::start_with(Setup {
        request_timeout: Duration::from_millis(200),
        ..Setup::default()
    })
    .await;
    let never = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let request = axum::http::Request::post("/v1/identity/check")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(never))
        .unwrap();
    let response = server.service.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_client_error(status, &body, "timeout", "pending body");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_wait_their_turn() {
    let server = Server::start_with(Setup {
        concurrency: 2,
        ..Setup::default()
    })
    .await;
    let request = json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"});
    let answers = futures::future::join_all((0..64).map(|_| server.check(&request))).await;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["reason"], "UNKNOWN_POD");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_authorization_headers_are_refused_not_picked_from() {
    let server = Server::start().await;
    let pairs = [
        (format!("Bearer {TOKEN}"), format!("Bearer {OTHER_TOKEN}")),
        (format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")),
        (format!("Bearer {TOKEN}"), "Basic dXNlcjpwYXNz".to_string()),
        ("Bearer wrong".to_string(), format!("Bearer {TOKEN}")),
    ];
    for (first, second) in pairs {
        let response = server
            .client
            .get(server.url("/v1/head"))
            .header("authorization", &first)
            .header("authorization", &second)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{first} / {second}: {body}"
        );
        assert_client_error(status, &body, "duplicate_header", &first);
        assert!(body["detail"].as_str().unwrap().contains("2 Authorization"));
    }
    // One is fine.
    let (status, _) = server.get("/v1/head").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

/// What a refused request head must be answered with: one response, the status, the JSON
/// error shape with this code, and `Connection: close`.
fn assert_refused(answer: &str, status: u16, code: &str, what: &str) {
    let answers = common::responses(answer);
    assert_eq!(answers.len(), 1, "{what}: {answer:.300}");
    let (got, headers, body) = &answers[0];
    assert_eq!(*got, status, "{what}: {answer:.300}");
    assert!(
        headers.contains("content-type: application/json"),
        "{what}: {headers}"
    );
    assert!(headers.contains("connection: close"), "{what}: {headers}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_level_rejections_answer_the_json_error_shape() {
    let server = Server::start().await;
    let patience = Duration::from_secs(10);
    let header_lines = |count: usize, size: usize| -> String {
        (0..count)
            .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(size)))
            .collect()
    };
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "two Content-Length values",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a Content-Length that is not a number",
        ),
        (
            b"POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "Content-Length and Transfer-Encoding",
        ),
        (
            b"POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a Transfer-Encoding that is not chunked",
        ),
        (
            b"POST /v1/identity/check HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "Transfer-Encoding in HTTP/1.0",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a header name with a space",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a NUL in a header value",
        ),
        (
            b"GET /he\x01lthz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a control character in the target",
        ),
        (
            b"GET /healthz HTTP/3.0\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "an unknown version",
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "a TLS client hello on the plain port",
        ),
        (
            format!("GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000)).into_bytes(),
            414,
            "uri_too_long",
            "a 10 KB target",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
            "a 70 KB target (past hyper's own limit)",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", header_lines(1, 40_000)).into_bytes(),
            431,
            "headers_too_large",
            "a 40 KB header",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", header_lines(1000, 500)).into_bytes(),
            431,
            "headers_too_large",
            "500 KB of headers (past hyper's own buffer)",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", header_lines(150, 1)).into_bytes(),
            431,
            "headers_too_large",
            "150 header fields",
        ),
    ];
    for (bytes, status, code, what) in &cases {
        // Half-closed after sending, and kept open: answered either way.
        for keep_open in [false, true] {
            let answer = server.raw(bytes, keep_open, patience).await;
            assert_refused(&answer, *status, code, what);
        }
    }

    // Pipelined: the requests before a refused head are answered, then the refusal.
    let body = r#"{"namespace":"ns","pod_name":"p","pod_uid":"u"}"#;
    let (first, second) = body.split_at(10);
    let pipelined = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};ext=1\r\n{first}\r\n{:X}\r\n{second}\r\n0\r\nX-Trailer: t\r\n\r\n\
         POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n{body}\
         GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        first.len(),
        second.len(),
        body.len(),
    );
    let answer = server.raw(pipelined.as_bytes(), true, patience).await;
    let answers = common::responses(&answer);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200, 400], "{answer}");
    assert!(answers[1].2.contains("UNKNOWN_POD"), "{answer}");
    assert!(answers[2].2.contains("UNKNOWN_POD"), "{answer}");
    let refusal: Value = serde_json::from_str(&answers[3].2).unwrap();
    assert_eq!(refusal["error"], "bad_request");

    // Valid keep-alive requests with bodies keep working on one connection.
    let keep_alive = format!(
        "POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = server.raw(keep_alive.as_bytes(), true, patience).await;
    let statuses: Vec<u16> = common::responses(&answer).iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200], "{answer}");

    // A request answered before its body is read (the body limit refuses it by its
    // Content-Length): the answer says the connection closes, so no client sends its next
    // request on it, and the client gets to send the body and read the answer.
    let oversized = format!(
        "POST /v1/identity/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n{}",
        " ".repeat(200_000)
    );
    let answer = server.raw(oversized.as_bytes(), true, patience).await;
    let answers = common::responses(&answer);
    assert_eq!(answers.len(), 1, "{answer:.300}");
    assert_eq!(answers[0].0, 413, "{answer:.300}");
    assert!(answers[0].1.contains("connection: close"), "{answer:.300}");
    assert!(answers[0].2.contains("body_too_large"), "{answer:.300}");

    // HTTP/2 (prior knowledge) passes through the HTTP/1 checks untouched.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(server.url("/v1/head"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("claim_ledger_http_requests_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= (cases.len() * 2 + 1) as f64, "{refused}");
    server.stop().await;
}
