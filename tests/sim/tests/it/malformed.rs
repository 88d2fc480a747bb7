//! Malformed requests get 4xx `Status` objects, never a panic; the server keeps serving.

use serde_json::{json, Value};
use sim::{SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw HTTP/1.1 request; returns (status code, body as JSON or Null).
async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// (method, path, headers, body, expected code, expected reason)
type Case<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    &'a str,
);

const JSON: (&str, &str) = ("Content-Type", "application/json");
const MERGE: (&str, &str) = ("Content-Type", "application/merge-patch+json");

#[tokio::test]
async fn malformed_requests_get_status_errors() {
    let running = Simulator::start_local(SimConfig {
        controllers: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let url = running.url();
    let claims = "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/default/sandboxclaims";
    let claim = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": "c"}, "spec": {"warmPoolRef": {"name": "p"}}})
    .to_string();
    assert_eq!(raw(url, "POST", claims, &[JSON], &claim).await.0, 201);

    let cases: Vec<Case> = vec![
        (
            "POST",
            claims.into(),
            vec![JSON],
            "{not json".into(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            "null".into(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            "[1,2]".into(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            claim.clone(),
            409,
            "AlreadyExists",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"kind": "SandboxClaim", "metadata": {"name": "Bad_Name"}}).to_string(),
            422,
            "Invalid",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"kind": "SandboxClaim", "metadata": {}}).to_string(),
            422,
            "Invalid",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"kind": "Pod", "metadata": {"name": "x"}}).to_string(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "metadata": {"name": "x"}})
                .to_string(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"metadata": {"name": "x", "labels": {"a": 1}}}).to_string(),
            422,
            "Invalid",
        ),
        (
            "POST",
            claims.into(),
            vec![JSON],
            json!({"metadata": "x"}).to_string(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            claims.into(),
            vec![("Content-Type", "application/yaml")],
            "a: b".into(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims".into(),
            vec![JSON],
            claim.clone(),
            405,
            "MethodNotAllowed",
        ),
        (
            "GET",
            "/apis/agents.x-k8s.io/v1beta1/namespaces/default/foos".into(),
            vec![],
            "".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/unknown.example.com/v1/namespaces/default/foos".into(),
            vec![],
            "".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/agents.x-k8s.io/v9/namespaces/default/sandboxes".into(),
            vec![],
            "".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/nonsense/path".into(),
            vec![],
            "".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{claims}/missing"),
            vec![],
            "".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{claims}?labelSelector=a%3D%28"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?labelSelector=%21"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?fieldSelector=spec.foo%3Dx"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?limit=abc"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?continue=zz"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?watch=true&resourceVersion=abc"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?watch=maybe"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{claims}?watch=true&timeoutSeconds=-1"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            claims.into(),
            vec![("Accept", "application/vnd.kubernetes.protobuf")],
            "".into(),
            406,
            "NotAcceptable",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![MERGE],
            "{bad".into(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![MERGE],
            "[1]".into(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![("Content-Type", "application/apply-patch+yaml")],
            "a: b".into(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![("Content-Type", "application/json-patch+json")],
            "{}".into(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![("Content-Type", "application/json-patch+json")],
            r#"[{"op":"test","path":"/spec","value":1}]"#.into(),
            422,
            "Invalid",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![("Content-Type", "application/json-patch+json")],
            r#"[{"op":"remove","path":"/nope/deeper"}]"#.into(),
            422,
            "Invalid",
        ),
        (
            "PATCH",
            format!("{claims}/c"),
            vec![MERGE],
            r#"{"metadata":{"resourceVersion":"1"}}"#.into(),
            409,
            "Conflict",
        ),
        (
            "PATCH",
            format!("{claims}/missing"),
            vec![MERGE],
            "{}".into(),
            404,
            "NotFound",
        ),
        (
            "PUT",
            format!("{claims}/c"),
            vec![JSON],
            json!({"metadata": {"name": "other"}}).to_string(),
            400,
            "BadRequest",
        ),
        (
            "PUT",
            format!("{claims}/c"),
            vec![JSON],
            "{".into(),
            400,
            "BadRequest",
        ),
        (
            "DELETE",
            format!("{claims}/c?propagationPolicy=Sideways"),
            vec![],
            "".into(),
            400,
            "BadRequest",
        ),
        (
            "DELETE",
            format!("{claims}/c"),
            vec![JSON],
            "{oops".into(),
            400,
            "BadRequest",
        ),
        (
            "DELETE",
            format!("{claims}/c"),
            vec![JSON],
            r#"{"preconditions":{"uid":"nope"}}"#.into(),
            409,
            "Conflict",
        ),
        (
            "POST",
            format!("{claims}/c"),
            vec![JSON],
            "{}".into(),
            405,
            "MethodNotAllowed",
        ),
        (
            "PUT",
            "/version".into(),
            vec![],
            "".into(),
            405,
            "MethodNotAllowed",
        ),
    ];
    for (method, path, headers, body, code, reason) in cases {
        let (got, status) = raw(url, method, &path, &headers, &body).await;
        assert_eq!(got, code, "{method} {path} {body}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {path}");
        assert_eq!(status["code"], code, "{method} {path}");
        assert_eq!(status["reason"], reason, "{method} {path}");
    }
    // Still serving, and the claim survived all of it.
    let (code, got) = raw(url, "GET", &format!("{claims}/c"), &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(got["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");

    // An expired continue token is a 410.
    let (_, page) = raw(url, "GET", &format!("{claims}?limit=1"), &[], "").await;
    let mut second = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": "d"}, "spec": {}});
    second["metadata"]["name"] = "d".into();
    raw(url, "POST", claims, &[JSON], &second.to_string()).await;
    let (_, page) = if page["metadata"]["continue"].is_string() {
        (200, page)
    } else {
        raw(url, "GET", &format!("{claims}?limit=1"), &[], "").await
    };
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    running.simulator().restart();
    let (code, status) = raw(
        url,
        "GET",
        &format!("{claims}?limit=1&continue={token}"),
        &[],
        "",
    )
    .await;
    assert_eq!(code, 410);
    assert_eq!(status["reason"], "Expired");
}
