//! Fail-open defects closed, each through the real binary (`ingest` + `check`/`history`/
//! `verify`, or `sim` + `serve` over HTTP):
//!
//! * an object naming several controller references (which a real API server refuses) is
//!   never judged by the first one: `check` answers `OWNER_CHAIN_BROKEN` and says why,
//!   whether the object was bound before or is first seen so, and `verify` re-derives it;
//! * resourceVersions that are integers beyond `u64` or negative compare as integers (a
//!   `"-5"` after `"10"`, an `"11"` after 10^30 are stale), other strings by arrival order;
//! * a watch event repeating its `"type"` (or `"object"`) key is refused with its line
//!   number, not read as its last value (an `ADDED` that says `DELETED` last);
//! * a line far beyond the 4 MiB limit, with or without a final newline, is skipped as it is
//!   read (memory stays flat) and reported, and the lines after it are ingested;
//! * a flood of forged-uid denials cannot push a real replay out of the audit trail: the
//!   replay is in the pod's history once `serve` flushes its denial records.

use crate::support::process;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{command, ok, run, Child, BIN};
use serde_json::{json, Value};

const SB: &str = "agents.x-k8s.io/v1alpha1";
const EXT: &str = "extensions.agents.x-k8s.io/v1alpha1";

// ----- events -----

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

fn meta(ns: &str, name: &str, uid: &str, rv: &str, owners: Vec<Value>) -> Value {
    json!({"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv,
           "ownerReferences": owners})
}

fn claim(ns: &str, name: &str, uid: &str, rv: &str, sandbox: &str) -> Value {
    json!({"apiVersion": EXT, "kind": "SandboxClaim", "metadata": meta(ns, name, uid, rv, vec![]),
           "spec": {"sandboxTemplateRef": {"name": "python"}},
           "status": {"sandbox": {"name": sandbox}}})
}

fn sandbox(ns: &str, name: &str, uid: &str, rv: &str, owners: Vec<Value>) -> Value {
    json!({"apiVersion": SB, "kind": "Sandbox", "metadata": meta(ns, name, uid, rv, owners),
           "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "x"}]}}}})
}

fn pod(ns: &str, name: &str, uid: &str, rv: &str, owners: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta(ns, name, uid, rv, owners)})
}

fn annotated(mut object: Value, sandbox_id: &str) -> Value {
    object["metadata"]["annotations"] = json!({"openshell.io/sandbox-id": sandbox_id});
    object
}

fn event(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

/// Claim `c<n>` (uid `claim-<n>`) holding Sandbox `sb<n>` (`sb-<n>`) with pod `p<n>`
/// (`pod-<n>`), in namespace `ns`: a bound pod.
fn bound_chain(n: u32) -> String {
    let (c, s, p) = (format!("c{n}"), format!("sb{n}"), format!("p{n}"));
    let (cu, su, pu) = (format!("claim-{n}"), format!("sb-{n}"), format!("pod-{n}"));
    [
        event("ADDED", &claim("ns", &c, &cu, &format!("{n}01"), &s)),
        event(
            "ADDED",
            &sandbox(
                "ns",
                &s,
                &su,
                &format!("{n}02"),
                vec![owner(EXT, "SandboxClaim", &c, &cu)],
            ),
        ),
        event(
            "ADDED",
            &pod(
                "ns",
                &p,
                &pu,
                &format!("{n}03"),
                vec![owner(SB, "Sandbox", &s, &su)],
            ),
        ),
    ]
    .concat()
}

// ----- the binary -----

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> String {
        self.dir.path().join("db").to_str().unwrap().to_string()
    }

    /// Ingests `lines` from stdin and requires exit 0; the report.
    fn ingest(&self, lines: &str) -> Value {
        ok(&["ingest", "--db", &self.db(), "-"], Some(lines)).json()
    }

    /// `check` for pod `name`/`uid` in `ns`: (exit code, decision JSON).
    fn check(&self, ns: &str, name: &str, uid: &str) -> (i32, Value) {
        let result = run(
            &[
                "check",
                "--db",
                &self.db(),
                "--namespace",
                ns,
                "--pod-name",
                name,
                "--pod-uid",
                uid,
            ],
            None,
        );
        let decision = result.json();
        (result.code, decision)
    }

    fn expect_allow(&self, name: &str, uid: &str) {
        let (code, decision) = self.check("ns", name, uid);
        assert_eq!(
            (code, &decision["decision"]),
            (0, &json!("allow")),
            "{decision}"
        );
    }

    fn expect_deny(&self, name: &str, uid: &str, reason: &str, detail: &str) {
        let (code, decision) = self.check("ns", name, uid);
        assert_eq!(code, 1, "{decision}");
        assert_eq!(decision["decision"], "deny", "{decision}");
        assert_eq!(decision["reason"], reason, "{decision}");
        let text = decision["detail"].as_str().unwrap_or_default();
        assert!(text.contains(detail), "{text:?} should contain {detail:?}");
    }

    fn history(&self, uid: &str) -> Vec<Value> {
        ok(&["history", "--db", &self.db(), "--pod-uid", uid], None).lines()
    }

    fn verify(&self) {
        ok(&["verify", "--db", &self.db()], None);
    }
}

fn released_reasons(history: &[Value], pod_uid: &str) -> Vec<String> {
    history
        .iter()
        .flat_map(|l| {
            l["entry"]["transitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|t| t["transition"] == "released" && t["pod_uid"] == pod_uid)
        .map(|t| t["reason"].as_str().unwrap().to_string())
        .collect()
}

// ----- 1. several controller references -----

#[test]
fn a_pod_given_a_second_sandbox_controller_is_refused_with_the_reason() {
    let scratch = Scratch::new();
    scratch.ingest(&(bound_chain(1) + &bound_chain(2)));
    scratch.expect_allow("p1", "pod-1");
    scratch.expect_allow("p2", "pod-2");

    // Pod p1, bound through sb1, now also names sb2 as its controller. Its own Sandbox is
    // listed first: judging by the first reference kept it allowed.
    let two = pod(
        "ns",
        "p1",
        "pod-1",
        "200",
        vec![
            owner(SB, "Sandbox", "sb1", "sb-1"),
            owner(SB, "Sandbox", "sb2", "sb-2"),
        ],
    );
    let report = scratch.ingest(&event("MODIFIED", &two));
    assert_eq!(report["appended"], 1, "{report}");
    scratch.expect_deny(
        "p1",
        "pod-1",
        "OWNER_CHAIN_BROKEN",
        "pod ns/p1 has 2 controller references",
    );
    scratch.expect_allow("p2", "pod-2");
    // The binding ended with that reason, and the record says what was seen.
    let history = scratch.history("pod-1");
    assert_eq!(released_reasons(&history, "pod-1"), ["OWNER_CHAIN_BROKEN"]);
    let controller = &history.last().unwrap()["entry"]["change"]["object"]["controller"];
    assert_eq!(controller["uid"], "", "{controller}");
    assert_eq!(
        controller["name"], r#"2 controller references ["sb-1","sb-2"]"#,
        "{controller}"
    );

    // A pod first seen with two controllers (the first a Sandbox of a live binding) is
    // recorded and refused with the reason, not ignored or allowed.
    scratch.ingest(&event(
        "ADDED",
        &pod(
            "ns",
            "q",
            "pod-9",
            "201",
            vec![
                owner(SB, "Sandbox", "sb2", "sb-2"),
                owner(SB, "Sandbox", "sbx", "sb-x"),
            ],
        ),
    ));
    scratch.expect_deny(
        "q",
        "pod-9",
        "OWNER_CHAIN_BROKEN",
        "pod ns/q has 2 controller references",
    );

    // Verification replays the log and re-derives every transition.
    scratch.verify();
}

#[test]
fn a_sandbox_controlled_by_its_claim_and_a_warm_pool_is_refused_with_the_reason() {
    let scratch = Scratch::new();
    scratch.ingest(&bound_chain(1));
    scratch.expect_allow("p1", "pod-1");
    for (rv, owners) in [
        (
            "300",
            vec![
                owner(EXT, "SandboxClaim", "c1", "claim-1"),
                owner(EXT, "SandboxWarmPool", "pool", "pool-1"),
            ],
        ),
        (
            "301",
            vec![
                owner(EXT, "SandboxWarmPool", "pool", "pool-1"),
                owner(EXT, "SandboxClaim", "c1", "claim-1"),
            ],
        ),
    ] {
        scratch.ingest(&event(
            "MODIFIED",
            &sandbox("ns", "sb1", "sb-1", rv, owners),
        ));
        scratch.expect_deny(
            "p1",
            "pod-1",
            "OWNER_CHAIN_BROKEN",
            "Sandbox ns/sb1 has 2 controller references",
        );
    }
    assert_eq!(
        released_reasons(&scratch.history("pod-1"), "pod-1"),
        ["OWNER_CHAIN_BROKEN"]
    );
    // One controller again: the binding forms again.
    scratch.ingest(&event(
        "MODIFIED",
        &sandbox(
            "ns",
            "sb1",
            "sb-1",
            "302",
            vec![owner(EXT, "SandboxClaim", "c1", "claim-1")],
        ),
    ));
    scratch.expect_allow("p1", "pod-1");
    scratch.verify();
}

// ----- 2. resource versions -----

#[test]
fn integer_resource_versions_of_any_size_and_sign_compare_as_integers() {
    let scratch = Scratch::new();
    let owners = || vec![owner(SB, "Sandbox", "sb", "sb-1")];
    let p = |uid: &str, rv: &str, id: &str| annotated(pod("ns", uid, uid, rv, owners()), id);

    // "-5" after "10" is older, not newer.
    let report = scratch
        .ingest(&(event("ADDED", &p("a", "10", "one")) + &event("MODIFIED", &p("a", "-5", "two"))));
    assert_eq!(
        (report["appended"].as_u64(), report["stale"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let history = scratch.history("a");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        history[0]["entry"]["change"]["object"]["resource_version"],
        "10"
    );

    // 10^30 after "10" is newer; "11" after it is older; 10^30 + 1 is newer again.
    let big = "1000000000000000000000000000000";
    let bigger = "1000000000000000000000000000001";
    let report = scratch.ingest(
        &[
            event("ADDED", &p("b", "10", "one")),
            event("MODIFIED", &p("b", big, "two")),
            event("MODIFIED", &p("b", "11", "three")),
            event("MODIFIED", &p("b", bigger, "four")),
        ]
        .concat(),
    );
    assert_eq!(
        (report["appended"].as_u64(), report["stale"].as_u64()),
        (Some(3), Some(1)),
        "{report}"
    );
    let versions: Vec<Value> = scratch
        .history("b")
        .iter()
        .map(|l| l["entry"]["change"]["object"]["resource_version"].clone())
        .collect();
    assert_eq!(versions, [json!("10"), json!(big), json!(bigger)]);

    // A version that is not an integer goes by arrival order, both ways.
    let report = scratch.ingest(
        &[
            event("MODIFIED", &p("b", "opaque-1", "five")),
            event("MODIFIED", &p("b", "12", "six")),
        ]
        .concat(),
    );
    assert_eq!(
        (report["appended"].as_u64(), report["stale"].as_u64()),
        (Some(2), Some(0)),
        "{report}"
    );
    scratch.verify();
}

// ----- 3. repeated keys -----

#[test]
fn a_watch_event_repeating_its_type_key_is_refused_not_read_as_the_last_value() {
    let scratch = Scratch::new();
    scratch.ingest(&bound_chain(1));
    scratch.expect_allow("p1", "pod-1");
    let object = pod(
        "ns",
        "p1",
        "pod-1",
        "400",
        vec![owner(SB, "Sandbox", "sb1", "sb-1")],
    );
    let lines = [
        // ADDED to a reader that keeps the first key, DELETED to one that keeps the last.
        format!(r#"{{"type":"ADDED","object":{object},"type":"DELETED"}}"#),
        format!(r#"{{"type":"DELETED","object":{{}},"object":{object}}}"#),
    ];
    let result = run(
        &["ingest", "--db", &scratch.db(), "-"],
        Some(&format!("{}\n{}\n", lines[0], lines[1])),
    );
    assert_eq!(result.code, 2, "{result:?}");
    for number in [1, 2] {
        assert!(
            result
                .stderr
                .contains(&format!("line {number}: refused: a repeated key")),
            "{}",
            result.stderr
        );
    }
    assert_eq!(result.json()["appended"], 0, "{result:?}");
    scratch.expect_allow("p1", "pod-1");
}

// ----- 4. over-long lines -----

/// The peak resident set (`VmHWM`) of a running process, in bytes.
#[cfg(target_os = "linux")]
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn a_huge_line_is_skipped_as_it_is_read_and_the_next_lines_are_ingested() {
    const HUGE: usize = 192 << 20;
    let scratch = Scratch::new();
    let owners = || vec![owner(SB, "Sandbox", "sb", "sb-1")];
    let mut child = Command::new(BIN)
        .args(["ingest", "--db", &scratch.db(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'x'; 1 << 20];
    stdin
        .write_all(event("ADDED", &pod("ns", "a", "a", "1", owners())).as_bytes())
        .unwrap();
    // Line 2: 192 MiB, then a newline. Line 3: a good event. Line 4: 192 MiB and the end
    // of the input, no newline.
    for _ in 0..HUGE >> 20 {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.write_all(b"\n").unwrap();
    stdin
        .write_all(event("ADDED", &pod("ns", "b", "b", "2", owners())).as_bytes())
        .unwrap();
    for _ in 0..HUGE >> 20 {
        stdin.write_all(&chunk).unwrap();
    }
    // Everything but the pipe's buffer has been read by now: the peak so far is the peak
    // of reading both lines.
    let peak = peak_rss(pid);
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        peak < 96 << 20,
        "ingest peaked at {} MiB reading two {} MiB lines",
        peak >> 20,
        HUGE >> 20
    );
    for number in [2, 4] {
        assert!(
            stderr.contains(&format!("line {number}: line is longer than 4194304 bytes")),
            "{stderr}"
        );
    }
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["appended"], 2, "{report}");
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(scratch.history("b").len(), 1);
}

#[test]
fn a_line_just_over_the_limit_is_refused_and_one_at_it_is_read() {
    let scratch = Scratch::new();
    let owners = || vec![owner(SB, "Sandbox", "sb", "sb-1")];
    let limit = 4 * 1024 * 1024;
    // An event padded with spaces to exactly the limit, and one a byte longer.
    let pad = |object: &Value, len: usize| {
        let mut line = event("ADDED", object).trim_end().to_string();
        line.push_str(&" ".repeat(len - line.len()));
        line.push('\n');
        line
    };
    let input = pad(&pod("ns", "a", "a", "1", owners()), limit)
        + &pad(&pod("ns", "b", "b", "1", owners()), limit + 1);
    let result = run(&["ingest", "--db", &scratch.db(), "-"], Some(&input));
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result
            .stderr
            .contains("line 2: line is longer than 4194304 bytes"),
        "{}",
        result.stderr
    );
    assert_eq!(result.json()["appended"], 1);
}

// ----- 5. denial records under a flood -----

const TOKEN: &str = "hardening-token-5b2c9e";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn post(address: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = process::http(
        address,
        "POST",
        path,
        Some(&bearer()),
        Some(&body.to_string()),
        Duration::from_secs(30),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn check_request(name: &str, uid: &str) -> Value {
    json!({"namespace": "default", "pod_name": name, "pod_uid": uid})
}

#[test]
fn a_flood_of_forged_uid_denials_does_not_push_a_real_replay_out_of_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger");
    let db = db.to_str().unwrap();

    // A pod "victim" that was bound and then deleted: presenting its uid again is a replay.
    let old = "0ld00000-0000-4000-8000-000000000001";
    let history = [
        event("ADDED", &claim("default", "c", "claim-old", "1", "sb-old")),
        event(
            "ADDED",
            &sandbox(
                "default",
                "sb-old",
                "sb-old-uid",
                "2",
                vec![owner(EXT, "SandboxClaim", "c", "claim-old")],
            ),
        ),
        event(
            "ADDED",
            &pod(
                "default",
                "victim",
                old,
                "3",
                vec![owner(SB, "Sandbox", "sb-old", "sb-old-uid")],
            ),
        ),
        event(
            "DELETED",
            &pod(
                "default",
                "victim",
                old,
                "4",
                vec![owner(SB, "Sandbox", "sb-old", "sb-old-uid")],
            ),
        ),
    ]
    .concat();
    ok(&["ingest", "--db", db, "-"], Some(&history));

    // The cluster now has a new pod under that name (so forged uids are POD_UID_MISMATCH).
    let kubeconfig = dir.path().join("kubeconfig");
    let mut sim = Child::start(
        command(&[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--no-controllers",
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap(),
        ])
        .stdin(Stdio::null()),
    );
    let sim_address = sim.address("listening on");
    let (status, created) = post_unauthenticated(
        &sim_address,
        "/apis/agents.x-k8s.io/v1alpha1/namespaces/default/sandboxes",
        &json!({"apiVersion": SB, "kind": "Sandbox",
                "metadata": {"name": "sb-new", "namespace": "default"},
                "spec": {"podTemplate": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}),
    );
    assert!(status < 300, "{status} {created}");
    let sandbox_uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let (status, created) = post_unauthenticated(
        &sim_address,
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "victim", "namespace": "default",
                             "ownerReferences": [owner(SB, "Sandbox", "sb-new", &sandbox_uid)]},
                "spec": {"containers": [{"name": "a", "image": "x"}]}}),
    );
    assert!(status < 300, "{status} {created}");

    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let mut serve = Child::start(
        command(&[
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .env("KUBECONFIG", &kubeconfig),
    );
    let api = serve.address("listening on");
    // Ready, and the new pod recorded: a forged uid for its name is POD_UID_MISMATCH.
    let mut probes = 0u64;
    poll("a forged uid to be denied POD_UID_MISMATCH", || {
        let (status, body) = post(
            &api,
            "/v1/identity/check",
            &check_request("victim", "probe-uid"),
        );
        if body["reason"] == "POD_UID_MISMATCH" {
            probes += 1;
        }
        match (status, body["reason"].as_str()) {
            (200, Some("POD_UID_MISMATCH")) => Ok(()),
            _ => Err(format!("{status} {body}")),
        }
    });

    // The flood: more distinct forged uids than the whole per-uid table used to hold.
    const FLOOD: usize = 10_050;
    const THREADS: usize = 4;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let api = &api;
            scope.spawn(move || {
                for i in (t..FLOOD).step_by(THREADS) {
                    let uid = format!("f0a9ed00-0000-4000-8000-{i:012}");
                    let (status, body) =
                        post(api, "/v1/identity/check", &check_request("victim", &uid));
                    assert_eq!(
                        (status, body["reason"].as_str()),
                        (200, Some("POD_UID_MISMATCH")),
                        "{body}"
                    );
                }
            });
        }
    });
    // Then the real replay.
    let (status, body) = post(&api, "/v1/identity/check", &check_request("victim", old));
    assert_eq!(
        (status, body["reason"].as_str()),
        (200, Some("BINDING_RELEASED")),
        "{body}"
    );
    let (_, metrics) = process::http(
        &api,
        "GET",
        "/metrics",
        Some(&bearer()),
        None,
        Duration::from_secs(30),
    );
    let dropped: u64 = metrics
        .lines()
        .find(|l| l.starts_with("claim_ledger_denials_dropped_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no dropped-denials counter in:\n{metrics}"));

    // Serve appends its pending denial records at shutdown.
    let status = serve.interrupt_and_wait();
    assert!(status.success(), "serve exited with {status}");
    drop(sim);

    // The replay is in the pod's history, beside its binding.
    let replay: Vec<Value> = ok(&["history", "--db", db, "--pod-uid", old], None)
        .lines()
        .into_iter()
        .filter_map(|l| l["entry"]["change"].get("check_denied").cloned())
        .collect();
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0]["reason"], "BINDING_RELEASED");
    assert_eq!(replay[0]["count"], 1);

    // The flood is bounded in the log, and every forged denial is accounted for: in a
    // per-uid record or in the counter of those past the reason's share.
    let denied: Vec<Value> = ok(&["export", "--db", db, "--format", "jsonl"], None)
        .lines()
        .into_iter()
        .filter_map(|l| l["entry"]["change"].get("check_denied").cloned())
        .filter(|d| d["reason"] == "POD_UID_MISMATCH")
        .collect();
    assert!(
        denied.len() < FLOOD / 2,
        "{} records for the flood",
        denied.len()
    );
    let recorded: u64 = denied.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(
        recorded + dropped,
        FLOOD as u64 + probes,
        "recorded {recorded}, dropped {dropped}"
    );
    // Those past the share are in the log too, summed in overflow records: every forged
    // denial is in the ledger.
    let overflow: Vec<Value> = ok(&["export", "--db", db, "--format", "jsonl"], None)
        .lines()
        .into_iter()
        .filter_map(|l| l["entry"]["change"].get("check_denied_overflow").cloned())
        .collect();
    assert!(!overflow.is_empty(), "no overflow record for the flood");
    let aggregated: u64 = overflow.iter().map(|o| o["count"].as_u64().unwrap()).sum();
    assert_eq!(aggregated, dropped, "{overflow:?}");
    assert!(overflow.iter().all(|o| o["reason"] == "POD_UID_MISMATCH"));
    ok(&["verify", "--db", db], None);
}

/// A POST to the simulator (no token): (status, body).
fn post_unauthenticated(address: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = process::http(
        address,
        "POST",
        path,
        None,
        Some(&body.to_string()),
        Duration::from_secs(30),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `serve --insecure-no-auth` on `db` against the simulator of `kubeconfig`, watching
/// `namespaces` (all when empty): the child and its API address.
fn serve_watching(db: &str, kubeconfig: &std::path::Path, namespaces: &[&str]) -> (Child, String) {
    let mut args = vec![
        "serve",
        "--db",
        db,
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
    ];
    for namespace in namespaces {
        args.extend(["--namespace", namespace]);
    }
    let mut serve = Child::start(command(&args).env("KUBECONFIG", kubeconfig));
    let api = process::address_of(&serve.line_with("listening on"));
    poll("readiness", || {
        match process::http(&api, "GET", "/readyz", None, None, Duration::from_secs(10)).0 {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    });
    (serve, api)
}

#[test]
fn a_namespace_no_longer_watched_is_not_answered_from_what_was_recorded() {
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
    let sim_api = process::address_of(&sim.line_with("listening on"));
    let db = dir.path().join("ledger");
    let db = db.to_str().unwrap();
    // A directly bound pod in tenant-b, recorded by a serve watching every namespace.
    let (status, created) = post_unauthenticated(
        &sim_api,
        "/apis/agents.x-k8s.io/v1beta1/namespaces/tenant-b/sandboxes",
        &json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "metadata": {"name": "direct", "namespace": "tenant-b",
                             "labels": {"openshell.ai/sandbox-id": "sbx-b"}},
                "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    assert_eq!(status, 201, "{created}");
    let sandbox_uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let (status, created) = post_unauthenticated(
        &sim_api,
        "/api/v1/namespaces/tenant-b/pods",
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "direct", "namespace": "tenant-b",
                             "annotations": {"openshell.io/sandbox-id": "sbx-b"},
                             "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                                                  "name": "direct", "uid": sandbox_uid, "controller": true}]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    assert_eq!(status, 201, "{created}");
    let pod_uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let request = json!({"namespace": "tenant-b", "pod_name": "direct", "pod_uid": pod_uid,
                         "require_claim": false});
    let (mut serve, api) = serve_watching(db, &kubeconfig, &[]);
    poll("the binding", || {
        let (_, decision) = post_unauthenticated(&api, "/v1/identity/check", &request);
        match decision["decision"] == "allow" {
            true => Ok(()),
            false => Err(decision.to_string()),
        }
    });
    serve.interrupt_and_wait();

    // While nothing watches, the pod is deleted; then serve comes back watching tenant-a
    // only: it never lists tenant-b again, so it must not answer for it.
    let (status, _) = process::http(
        &sim_api,
        "DELETE",
        "/api/v1/namespaces/tenant-b/pods/direct",
        None,
        None,
        Duration::from_secs(10),
    );
    assert!(status == 200 || status == 202, "{status}");
    let (mut serve, api) = serve_watching(db, &kubeconfig, &["tenant-a"]);
    let (_, decision) = post_unauthenticated(&api, "/v1/identity/check", &request);
    assert_eq!(decision["decision"], "not_ready", "{decision}");
    assert_eq!(decision["reason"], "LEDGER_NOT_READY", "{decision}");
    assert!(
        decision["detail"]
            .as_str()
            .is_some_and(|d| d.contains("namespace tenant-b is not watched")),
        "{decision}"
    );
    serve.interrupt_and_wait();
    // The change of scope is an entry: what was watched before, what is watched now.
    let scopes: Vec<Value> = ok(&["export", "--db", db], None)
        .lines()
        .into_iter()
        .filter_map(|l| l["entry"]["change"].get("watch_scope").cloned())
        .collect();
    assert_eq!(
        scopes,
        [json!({"namespaces": ["tenant-a"], "previous": null})],
        "{scopes:?}"
    );
    // Offline, the ledger answers the same.
    let offline = run(
        &[
            "check",
            "--db",
            db,
            "--namespace",
            "tenant-b",
            "--pod-name",
            "direct",
            "--pod-uid",
            &pod_uid,
            "--allow-direct",
        ],
        None,
    );
    assert_eq!(offline.code, 1, "{offline:?}");
    assert!(offline.stdout.contains("not watched"), "{offline:?}");

    // Watching every namespace again: the scope widens, and the deletion missed meanwhile
    // is recorded by the resync, so the pod is answered again, as released.
    let (mut serve, api) = serve_watching(db, &kubeconfig, &[]);
    let (_, decision) = post_unauthenticated(&api, "/v1/identity/check", &request);
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_ne!(decision["reason"], "LEDGER_NOT_READY", "{decision}");
    serve.interrupt_and_wait();
    let history = ok(&["history", "--db", db, "--pod-uid", &pod_uid], None).stdout;
    assert!(history.contains("missing_on_resync"), "{history}");
    ok(&["verify", "--db", db], None);
}

#[test]
fn the_cli_check_refuses_what_no_pod_can_present() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger");
    let db = db.to_str().unwrap();
    ok(&["ingest", "--db", db, "-"], Some(&bound_chain(1)));
    let long_uid = "u".repeat(300);
    for (namespace, name, uid, says) in [
        ("default", "Bad_Name!", "u", "not a valid Kubernetes name"),
        ("Bad_NS", "p", "u", "not a valid Kubernetes namespace"),
        ("default", "p", "", "pod_uid is empty"),
        ("default", "p", long_uid.as_str(), "at most 128"),
    ] {
        let result = run(
            &[
                "check",
                "--db",
                db,
                "--namespace",
                namespace,
                "--pod-name",
                name,
                "--pod-uid",
                uid,
            ],
            None,
        );
        assert_eq!(result.code, 2, "{result:?}");
        assert!(result.stderr.contains(says), "{}", result.stderr);
    }
}
