//! Connections against the real service on 127.0.0.1:0: connections that send no request
//! head are closed after the header timeout (silent, partial, dripping one byte at a
//! time, idle after a response) while the service keeps answering; a client that reads
//! nothing of a response is cut off after the stalled-write timeout; and at the connection
//! limit new clients wait in the backlog until a slot frees instead of being refused.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::{responses, Server, Setup};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (end of stream or reset), at most
/// `patience`: what was read, and when it closed (`None` if it did not).
async fn until_closed(stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (read, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (read, Some(Instant::now())),
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// The value of a metric in the Prometheus text.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_request_head_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(1500);
    let server = Server::start_with(Setup {
        header_timeout: timeout,
        ..Setup::default()
    })
    .await;
    let address = server.address();
    let started = Instant::now();

    // Connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    // A head that never ends.
    let mut partial = TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A head dripped one byte at a time, forever (slowloris).
    let mut drip = TcpStream::connect(&address).await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut drip_read, mut drip_write) = drip.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            if drip_write.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // A keep-alive connection that goes idle after one answered request.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answered = Vec::new();
    while !String::from_utf8_lossy(&answered).contains("\"ok\"") {
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "the idle connection closed before answering");
        answered.extend_from_slice(&buf[..n]);
    }
    let idle_since = Instant::now();

    // While they are all held, the service answers.
    for _ in 0..5 {
        let (status, body) = server.get("/healthz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = server
        .check(&json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < timeout,
        "the test was too slow to observe"
    );

    // Each is closed by the server once the timeout has passed, not before, and without
    // an answer (there was no request to answer).
    let patience = timeout + Duration::from_secs(5);
    let late = timeout + Duration::from_millis(2500);
    for (i, stream) in silent.iter_mut().chain([&mut partial]).enumerate() {
        let (read, closed) = until_closed(stream, patience).await;
        let closed = closed.unwrap_or_else(|| panic!("connection {i} was never closed"));
        let after = closed - started;
        assert!(
            after >= timeout - Duration::from_millis(100),
            "{i}: {after:?}"
        );
        assert!(after <= late, "{i}: closed only after {after:?}");
        assert!(read.is_empty(), "{i}: {}", String::from_utf8_lossy(&read));
    }
    let mut read = Vec::new();
    let closed = tokio::time::timeout(patience, drip_read.read_to_end(&mut read)).await;
    assert!(closed.is_ok(), "the dripping connection was never closed");
    assert!(started.elapsed() <= late + Duration::from_secs(1));
    dripping.abort();
    let (read, closed) = until_closed(&mut idle, patience).await;
    let after = closed.expect("the idle connection was never closed") - idle_since;
    assert!(after >= timeout - Duration::from_millis(100), "{after:?}");
    assert!(read.is_empty(), "{}", String::from_utf8_lossy(&read));

    // The server counts a timed-out connection just after closing it, so the client may
    // see the last close before the count: wait for it, within bounds.
    let counted = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let timed_out = metric(&server, "claim_ledger_http_connections_timed_out_total").await;
        if timed_out >= 67.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < counted,
            "only {timed_out} connections counted as timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_next_client_waits_for_a_slot_and_is_served() {
    let timeout = Duration::from_millis(1000);
    let server = Server::start_with(Setup {
        header_timeout: timeout,
        max_connections: 8,
        ..Setup::default()
    })
    .await;
    let address = server.address();
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    let held_from = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The 9th client connects (the backlog takes it) and is answered once a silent
    // connection has been closed for its timeout: not refused, not before.
    let asked = Instant::now();
    let answer = server
        .raw(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            true,
            Duration::from_secs(10),
        )
        .await;
    let answered = Instant::now();
    let answers = responses(&answer);
    assert_eq!(answers.len(), 1, "{answer}");
    assert_eq!(answers[0].0, 200, "{answer}");
    assert!(answers[0].2.contains("\"ok\""), "{answer}");
    assert!(
        answered - held_from >= timeout - Duration::from_millis(100),
        "answered after {:?}: the limit did not hold",
        answered - asked
    );
    assert!(
        answered - asked < timeout + Duration::from_secs(2),
        "{:?}",
        answered - asked
    );
    for (i, stream) in silent.iter_mut().enumerate() {
        let (read, closed) = until_closed(stream, Duration::from_secs(3)).await;
        assert!(closed.is_some(), "silent connection {i} is still open");
        assert!(read.is_empty());
    }

    // Many clients at once, more than the limit: every one is served in turn.
    let request = json!({"namespace": "ns", "pod_name": "p", "pod_uid": "u"});
    let checks = futures::future::join_all((0..40).map(|_| async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .post(server.url("/v1/identity/check"))
            .bearer_auth(common::TOKEN)
            .header("connection", "close")
            .json(&request)
            .send()
            .await
            .unwrap();
        response.status()
    }))
    .await;
    assert!(checks.iter().all(|s| *s == StatusCode::OK), "{checks:?}");
    let open = metric(&server, "claim_ledger_http_connections").await;
    assert!((1.0..=8.0).contains(&open), "{open} connections open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_silent_and_idle_connections_at_once() {
    let server = Server::start_with(Setup {
        header_timeout: Duration::from_secs(60),
        ..Setup::default()
    })
    .await;
    let address = server.address();
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (_, closed) = until_closed(&mut silent, Duration::from_secs(2)).await;
    assert!(closed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_of_a_response_is_cut_off_after_the_stalled_write_timeout() {
    let mut server = Server::start_with(Setup {
        stalled_write: Duration::from_millis(1500),
        ..Setup::default()
    })
    .await;
    // An export far larger than the two sockets' buffers: about 8 MB of JSON lines.
    let mut k = common::k8s::ObjectBuilder::default();
    let events: Vec<_> = (0..5_000)
        .map(|n| {
            common::k8s::added(k.sandbox(
                &format!("sandbox-{n}"),
                &format!("5a4db0x0-0900-4000-8000-{n:012}"),
                common::k8s::Owner::None,
                None,
                Some(&format!("sb-{n}")),
            ))
        })
        .collect();
    server.ingest_events(&events);
    assert_eq!(server.head_seq(), 5_000);

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(server.address().parse().unwrap())
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                common::TOKEN
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Read nothing: the server's writes block, and it closes the connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stalled = metric(&server, "claim_ledger_http_connections_stalled_total").await;
        if stalled >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (read, closed) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the connection stayed open");
    assert!(
        read.len() < 8_000_000,
        "the whole export arrived: {} bytes",
        read.len()
    );
    // The service goes on answering.
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
