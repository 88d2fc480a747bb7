//! The `claim-ledger` binary as a child process of the black-box tests: run to completion
//! ([`run`], [`ok`]: exit code, stdout and stderr), or started and left running ([`Child`]:
//! stdout lines read as they come, killed when dropped, panics included), and a minimal
//! HTTP/1.1 client for its API ([`http`]).
//!
//! Included by each test file with `#[path = "support/process.rs"] mod process;`; each
//! uses a part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_claim-ledger");

/// How long a started child may take to print an awaited line, or to exit.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Stdout as JSON lines.
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect()
    }
}

/// Runs the binary with `args` to completion, with `stdin` as its standard input if given
/// (otherwise none).
pub fn run(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claim-ledger");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("exited with a code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs and requires exit 0.
pub fn ok(args: &[&str], stdin: Option<&str>) -> Run {
    let result = run(args, stdin);
    assert_eq!(result.code, 0, "claim-ledger {args:?} failed: {result:?}");
    result
}

/// A command for the binary with `args`, to configure further (environment, stdin) and
/// hand to [`Child::start`].
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    command
}

/// A started child whose stdout lines arrive on a channel (stderr is inherited); killed
/// when dropped, also on panic.
pub struct Child {
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line received so far.
    pub seen: Vec<String>,
}

impl Child {
    /// Starts `command` (see [`command`]) with its stdout piped and its stderr inherited.
    pub fn start(command: &mut Command) -> Child {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start claim-ledger: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Child {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle` and returns it (each line may take up
    /// to a minute).
    pub fn line_with(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no stdout line with {needle:?} ({e}); so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `http://ADDR` address printed on the line containing `needle`.
    pub fn address(&mut self, needle: &str) -> String {
        address_of(&self.line_with(needle))
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then the exit status.
    pub fn interrupt_and_wait(&mut self) -> ExitStatus {
        self.interrupt();
        self.wait()
    }

    /// Waits for the process to exit and returns its code with every stdout line.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let status = self.wait();
        // The reader thread ends at end of file, closing the channel.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address after `http://` on `line`, up to the next white space.
pub fn address_of(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// One HTTP/1.1 request on a fresh connection: (status, body text, de-chunked).
/// `authorization` is the whole header value (`Bearer …`, or anything a test presents);
/// a `body` is sent as JSON.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the API");
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, text)
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest.get(size + 2..).unwrap_or("");
    }
    out
}
