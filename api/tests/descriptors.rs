//! The security review's case: 300 connections that never send a byte, against a service
//! whose process may open 256 descriptors. The service runs in a child process (this test
//! binary again, with `RLIMIT_NOFILE` lowered to 256 before it starts), so the limit is the
//! process's own: the service lowers its connection limit to fit, closes the silent
//! connections after the header timeout, answers `/healthz` meanwhile, and never runs out
//! of descriptors (no "accept failed" flood in its log).

#[path = "it/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{Auth, ServeOptions, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHILD: &str = "CLAIM_LEDGER_DESCRIPTOR_TEST_CHILD";
const NAME: &str = "three_hundred_silent_connections_under_a_256_descriptor_limit";
const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The child: the service with a 256-descriptor limit, until its stdin closes.
fn child() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let maximum = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum,
        },
    )
    .expect("lower RLIMIT_NOFILE");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("api=info")
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger =
            ledger::Ledger::open(&dir.path().join("db"), ledger::LedgerConfig::default()).unwrap();
        let freshness = Arc::new(common::TestFreshness::default());
        freshness
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut options = ServeOptions::new(Auth::Insecure);
        options.header_timeout = HEADER_TIMEOUT;
        let service = Service::new(ledger::SharedLedger::new(ledger), freshness, options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            })
            .await;
        };
        service.serve(listener, stdin_closed).await.unwrap();
    });
}

#[test]
fn three_hundred_silent_connections_under_a_256_descriptor_limit() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let mut service = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(service.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended");
        // libtest prints the test's name on the same line.
        if let Some(port) = line.trim().split("PORT ").nth(1) {
            break port.parse::<u16>().unwrap();
        }
    };
    let address = format!("127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
        }
        // While all 300 are held by the client, /healthz is answered: within the header
        // timeout, once the server has closed the first batch.
        let mut healthz = tokio::net::TcpStream::connect(&address).await.unwrap();
        healthz
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            HEADER_TIMEOUT * 2 + Duration::from_secs(3),
            healthz.read_to_end(&mut answer),
        )
        .await
        .expect("/healthz was not answered while the silent connections were held")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("\"ok\""), "{answer}");
        let answered = started.elapsed();
        assert!(
            answered < HEADER_TIMEOUT * 2 + Duration::from_secs(2),
            "{answered:?}"
        );
        // And every silent connection is closed by the server.
        for (i, stream) in silent.iter_mut().enumerate() {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(
                HEADER_TIMEOUT * 3 + Duration::from_secs(3),
                stream.read(&mut buf),
            )
            .await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "silent connection {i}: {read:?}"
            );
        }
    });
    drop(service.stdin.take());
    let mut log = String::new();
    service
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let status = service.wait().unwrap();
    assert!(status.success(), "{status}: {log}");
    // The limit was lowered to fit 256 descriptors, so accept never ran out of them.
    assert!(
        log.contains("the connection limit is lowered") && log.contains("limit=192"),
        "{log}"
    );
    let accept_failures = log.matches("accept failed").count();
    assert_eq!(accept_failures, 0, "{log}");
}
