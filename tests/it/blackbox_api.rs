//! The identity API black-box against the real binary: `claim-ledger sim --no-controllers`
//! and `claim-ledger serve --api-token-file` run as child processes on 127.0.0.1:0, joined
//! by a kubeconfig. The tests create Sandboxes, SandboxClaims, Pods and PVCs by hand with
//! the kube client (explicit ownerReferences, labels, annotations and status), and ask
//! the real HTTP API with a minimal HTTP/1.1 client, asserting the exact status, decision
//! and reason of every answer:
//!
//! * readiness before the API server answers (`503 not_ready LEDGER_NOT_READY`, `/readyz`
//!   503), then answers once the watchers sync;
//! * every adversarial case of the one table `tests/data/adversarial.json` (DOMAIN.md §8;
//!   the same table runs in process in `api/tests/it/adversarial.rs`), each against its own
//!   `sim` and `serve`, reported by name; and a plain allow;
//! * bearer tokens through the real binary, including one revoked by editing the file;
//! * `min_seq` beyond the head (`LEDGER_BEHIND`);
//! * denied checks recorded as `check_denied` entries once `serve` flushes them (at
//!   shutdown, or when their minute closes, every 60 s).
//!
//! The watcher is asynchronous: every expectation polls with a generous bound (30 s), and
//! no fixed sleep is ever an assertion. Children are killed on drop, panics included.

use crate::adversarial_table;
use crate::support::process;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::adversarial_table::{merge_patch, Action, Table, World};
use crate::support::process::{command, Child, BIN};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams,
    PropagationPolicy,
};
use serde_json::{json, Value};

/// How long any expectation may take to come true (the watcher is asynchronous).
const PATIENCE: Duration = Duration::from_secs(30);

/// The first API token: the one revoked in the auth test.
const TOKEN: &str = "blackbox-token-one-7d1f0c9a2b";
/// The second API token (a different length, so revoking the first changes the file size).
const TOKEN_2: &str = "blackbox-token-two-e4";

const NS: &str = "default";
const WARM: &str = "python-pool-x1";
const WARM_PVC: &str = "workspace-python-pool-x1";
const POOL_UID: &str = "0f0f0f0f-0900-4000-8000-000000000001";

// ----- child processes -----

fn start_sim(kubeconfig: &Path, listen: &str) -> (Child, String) {
    let mut sim = Child::start(
        command(&[
            "sim",
            "--listen",
            listen,
            "--no-controllers",
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap(),
        ])
        .stdin(Stdio::null()),
    );
    let address = sim.address("listening on");
    (sim, address)
}

fn start_serve(db: &Path, tokens: &Path, kubeconfig: &Path) -> (Child, String) {
    let mut serve = Child::start(
        command(&[
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
            "--max-backlog-seconds",
            "7.5",
            "--max-replays",
            "1",
        ])
        .stdin(Stdio::null())
        .env("KUBECONFIG", kubeconfig),
    );
    let address = serve.address("listening on");
    (serve, address)
}

// ----- a minimal HTTP/1.1 client -----

/// One request: (status, body as JSON, or a JSON string when it is not JSON).
fn http(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let (status, text) = process::http(address, method, path, token, body.as_deref(), PATIENCE);
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls `probe` until it returns `Some`, for up to [`PATIENCE`]; panics with the last
/// observation otherwise.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

// ----- the kube client, driven synchronously -----

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sandbox,
    Claim,
    Pod,
    Pvc,
}

impl Kind {
    fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::Sandbox => ("agents.x-k8s.io", "v1beta1", "Sandbox", "sandboxes"),
            Kind::Claim => (
                "extensions.agents.x-k8s.io",
                "v1beta1",
                "SandboxClaim",
                "sandboxclaims",
            ),
            Kind::Pod => ("", "v1", "Pod", "pods"),
            Kind::Pvc => ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }
}

/// A kube client for the simulator, with blocking calls on its own runtime.
struct Kube {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Kube {
    fn connect(kubeconfig: &Path) -> Kube {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = std::fs::read_to_string(kubeconfig).unwrap();
        let client = runtime
            .block_on(sim::client_from_kubeconfig(&kubeconfig))
            .unwrap();
        Kube { runtime, client }
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NS, &kind.resource())
    }

    fn create(&self, kind: Kind, object: Value) -> Value {
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        let created = self
            .runtime
            .block_on(self.api(kind).create(&PostParams::default(), &object))
            .unwrap_or_else(|e| panic!("create {kind:?}: {e}"));
        serde_json::to_value(created).unwrap()
    }

    /// A merge patch of the object (`status` is left alone by the API server).
    fn patch(&self, kind: Kind, name: &str, patch: Value) -> Value {
        let patched = self
            .runtime
            .block_on(
                self.api(kind)
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .unwrap_or_else(|e| panic!("patch {kind:?} {name}: {e}"));
        serde_json::to_value(patched).unwrap()
    }

    /// A merge patch of the `/status` subresource.
    fn patch_status(&self, kind: Kind, name: &str, status: Value) -> Value {
        let patch = json!({ "status": status });
        let patched = self
            .runtime
            .block_on(self.api(kind).patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ))
            .unwrap_or_else(|e| panic!("patch the status of {kind:?} {name}: {e}"));
        serde_json::to_value(patched).unwrap()
    }

    fn delete(&self, kind: Kind, name: &str, policy: PropagationPolicy) {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            ..DeleteParams::default()
        };
        self.runtime
            .block_on(self.api(kind).delete(name, &params))
            .unwrap_or_else(|e| panic!("delete {kind:?} {name}: {e}"));
    }

    fn exists(&self, kind: Kind, name: &str) -> bool {
        self.runtime
            .block_on(self.api(kind).get_opt(name))
            .unwrap_or_else(|e| panic!("get {kind:?} {name}: {e}"))
            .is_some()
    }
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uid in {object}"))
        .to_string()
}

fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion in {object}"))
        .to_string()
}

// ----- the objects, as the agent-sandbox controllers write them -----

const SANDBOX_API: &str = "agents.x-k8s.io/v1beta1";
const CLAIM_API: &str = "extensions.agents.x-k8s.io/v1beta1";

fn controller(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

/// Who controls a Sandbox.
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// A SandboxClaim (name, uid).
    Claim(&'a str, &'a str),
    /// A SandboxWarmPool (name, uid): warm.
    Pool(&'a str, &'a str),
}

fn owner_refs(owner: Owner<'_>) -> Value {
    match owner {
        Owner::Claim(name, uid) => controller(CLAIM_API, "SandboxClaim", name, uid),
        Owner::Pool(name, uid) => controller(CLAIM_API, "SandboxWarmPool", name, uid),
    }
}

fn sandbox(name: &str, owner: Owner<'_>, claim_uid_label: Option<&str>) -> Value {
    let mut labels = serde_json::Map::new();
    if let Some(label) = claim_uid_label {
        labels.insert("agents.x-k8s.io/claim-uid".into(), json!(label));
    } else {
        labels.insert(
            "agents.x-k8s.io/warm-pool-sandbox".into(),
            json!("ed572cc4"),
        );
    }
    json!({
        "apiVersion": SANDBOX_API, "kind": "Sandbox",
        "metadata": {"name": name, "namespace": NS, "labels": labels,
                     "annotations": {"agents.x-k8s.io/pod-name": name},
                     "ownerReferences": owner_refs(owner)},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "workspace"}, "spec": {}}]}
    })
}

fn claim(name: &str) -> Value {
    json!({
        "apiVersion": CLAIM_API, "kind": "SandboxClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"warmPoolRef": {"name": "python-pool"}}
    })
}

fn claim_status(sandbox: &str) -> Value {
    json!({"sandbox": {"name": sandbox},
           "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady",
                           "lastTransitionTime": "2026-05-20T15:00:05Z", "message": ""}]})
}

/// A pod controlled by the Sandbox (name, uid), with an `openshell.io/sandbox-id`.
fn pod(name: &str, sandbox: (&str, &str), sandbox_id: Option<&str>) -> Value {
    let annotations = match sandbox_id {
        Some(id) => json!({"openshell.io/sandbox-id": id}),
        None => Value::Null,
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations,
                     "ownerReferences": controller(SANDBOX_API, "Sandbox", sandbox.0, sandbox.1)},
        "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}
    })
}

/// A workspace PVC controlled by the Sandbox (name, uid), bound to `volume`.
fn pvc(name: &str, sandbox: (&str, &str), volume: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS,
                     "ownerReferences": controller(SANDBOX_API, "Sandbox", sandbox.0, sandbox.1)},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}}
    })
}

/// A check request for a pod in [`NS`].
fn request(pod_name: &str, pod_uid: &str) -> Value {
    json!({"namespace": NS, "pod_name": pod_name, "pod_uid": pod_uid})
}

/// The same request with more fields.
fn with(mut request: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().unwrap() {
        request[key] = value.clone();
    }
    request
}

// ----- the stack: sim + serve as two processes -----

/// Fields drop in declaration order: serve, then the simulator it watches, then the
/// directory they use.
struct Stack {
    serve: Option<Child>,
    _sim: Child,
    kube: Kube,
    api: String,
    dir: tempfile::TempDir,
}

impl Stack {
    /// `sim --no-controllers` and `serve` over it, ready.
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let (sim, _) = start_sim(&kubeconfig, "127.0.0.1:0");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("{TOKEN}\n{TOKEN_2}\n")).unwrap();
        let (serve, api) = start_serve(&dir.path().join("ledger"), &tokens, &kubeconfig);
        wait_ready(&api);
        let kube = Kube::connect(&kubeconfig);
        Stack {
            dir,
            kube,
            api,
            serve: Some(serve),
            _sim: sim,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    fn check_as(&self, token: Option<&str>, request: &Value) -> (u16, Value) {
        let token = token.map(bearer);
        http(
            &self.api,
            "POST",
            "/v1/identity/check",
            token.as_deref(),
            Some(request),
        )
    }

    fn check(&self, request: &Value) -> (u16, Value) {
        self.check_as(Some(TOKEN), request)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        http(&self.api, "GET", path, Some(&bearer(TOKEN)), None)
    }

    /// Polls the check until it answers exactly (status, decision, reason); returns the body.
    fn expect(&self, request: &Value, decision: &str, reason: Option<&str>) -> Value {
        let status = if decision == "not_ready" { 503 } else { 200 };
        expect_check(&self.api, TOKEN, request, status, decision, reason)
    }

    /// Waits until the ledger holds `uid` at `resource_version` (its history shows it), for
    /// a change whose answer is the same as before it.
    fn wait_recorded(&self, selector: &str, uid: &str, resource_version: &str) {
        poll(
            &format!("{uid} at resourceVersion {resource_version}"),
            || {
                let (status, body) = self.get(&format!("/v1/history?{selector}={uid}"));
                let seen = status == 200
                    && body["entries"].as_array().is_some_and(|entries| {
                        entries.iter().any(|e| {
                            e["entry"]["change"]["object"]["resource_version"] == resource_version
                        })
                    });
                if seen {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        )
    }
}

fn wait_ready(api: &str) {
    poll("readiness", || {
        let (status, body) = http(api, "GET", "/readyz", None, None);
        if status == 200 && body["ready"] == true {
            // The writer's backlog is reported, with the bound `serve` was given; a
            // ready writer is within it.
            let backlog = &body["watchers"]["report"]["backlog"];
            assert_eq!(backlog["limit_seconds"], 7.5, "{body}");
            assert!(backlog["age_seconds"].as_f64().unwrap() <= 7.5, "{body}");
            assert!(backlog["reason"].is_null(), "{body}");
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
}

/// Polls `POST /v1/identity/check` until it answers exactly (status, decision, reason).
fn expect_check(
    api: &str,
    token: &str,
    request: &Value,
    status: u16,
    decision: &str,
    reason: Option<&str>,
) -> Value {
    let what = format!("{request} to answer {status} {decision} {reason:?}");
    poll(&what, || {
        let (got, body) = http(
            api,
            "POST",
            "/v1/identity/check",
            Some(&bearer(token)),
            Some(request),
        );
        let answer = (got, body["decision"].as_str(), body["reason"].as_str());
        if answer == (status, Some(decision), reason) {
            Ok(body)
        } else {
            Err(format!("{got} {body}"))
        }
    })
}

/// The warm-bound setup of `api/tests/it/adversarial.rs`.
struct Bound {
    claim_uid: String,
    sandbox_uid: String,
    pod_uid: String,
}

/// Warm create, then bind: claim `alpha` adopts Sandbox `python-pool-x1` with its pod
/// (sandbox id `sb-a`) and workspace PVC (PV `pv-a`). Asserts the warm pod is not claimed,
/// then that it is bound (a plain allow, with the binding's objects).
fn bound(stack: &Stack) -> Bound {
    let k = &stack.kube;
    let sandbox_uid = uid(&k.create(
        Kind::Sandbox,
        sandbox(WARM, Owner::Pool("python-pool", POOL_UID), None),
    ));
    let pvc_uid = uid(&k.create(Kind::Pvc, pvc(WARM_PVC, (WARM, &sandbox_uid), "pv-a")));
    let pod_uid = uid(&k.create(Kind::Pod, pod(WARM, (WARM, &sandbox_uid), Some("sb-a"))));
    stack.expect(&request(WARM, &pod_uid), "deny", Some("NOT_CLAIMED"));

    // The claim controller: the claim exists, adopts the Sandbox, then names it.
    let claim_uid = uid(&k.create(Kind::Claim, claim("alpha")));
    k.patch(
        Kind::Sandbox,
        WARM,
        json!({"metadata": {
            "ownerReferences": owner_refs(Owner::Claim("alpha", &claim_uid)),
            "labels": {"agents.x-k8s.io/warm-pool-sandbox": null,
                       "agents.x-k8s.io/claim-uid": claim_uid}}}),
    );
    k.patch_status(Kind::Claim, "alpha", claim_status(WARM));
    let body = stack.expect(
        &with(
            request(WARM, &pod_uid),
            json!({"sandbox_id": "sb-a", "claim_uid": claim_uid}),
        ),
        "allow",
        None,
    );
    let binding = &body["binding"];
    assert_eq!(binding["kind"], "claim", "{body}");
    assert_eq!(binding["sandbox"]["uid"], sandbox_uid.as_str(), "{body}");
    assert_eq!(binding["claim"]["uid"], claim_uid.as_str(), "{body}");
    assert_eq!(binding["pvcs"][0]["uid"], pvc_uid.as_str(), "{body}");
    assert_eq!(binding["sandbox_id"], "sb-a", "{body}");
    assert!(body["ledger"]["seq"].as_u64().unwrap() > 0, "{body}");
    Bound {
        claim_uid,
        sandbox_uid,
        pod_uid,
    }
}

// ----- 1. readiness -----

/// A TCP proxy that accepts connections at once but holds them (no byte either way) until
/// [`HeldProxy::open`] names where to forward them: an API server that does not answer yet.
struct HeldProxy {
    address: SocketAddr,
    target: Arc<(Mutex<Option<String>>, Condvar)>,
}

impl HeldProxy {
    fn start() -> HeldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let target: Arc<(Mutex<Option<String>>, Condvar)> = Arc::default();
        let shared = Arc::clone(&target);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let (lock, opened) = &*shared;
                    let target = {
                        let mut target = lock.lock().unwrap();
                        while target.is_none() {
                            target = opened.wait(target).unwrap();
                        }
                        target.clone().unwrap()
                    };
                    let Ok(server) = TcpStream::connect(&target) else {
                        return;
                    };
                    pipe(client, server);
                });
            }
        });
        HeldProxy { address, target }
    }

    fn open(&self, target: &str) {
        let (lock, opened) = &*self.target;
        *lock.lock().unwrap() = Some(target.to_string());
        opened.notify_all();
    }
}

fn pipe(client: TcpStream, server: TcpStream) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = std::io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Write);
}

fn kubeconfig_for(server: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "held", "cluster": {"server": format!("http://{server}")}}],
        "users": [{"name": "held", "user": {}}],
        "contexts": [{"name": "held", "context": {"cluster": "held", "user": "held",
                                                  "namespace": NS}}],
        "current-context": "held",
    })
    .to_string()
}

fn assert_not_ready(api: &str, request: &Value) {
    let (status, body) = http(
        api,
        "POST",
        "/v1/identity/check",
        Some(&bearer(TOKEN)),
        Some(request),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["decision"], "not_ready", "{body}");
    assert_eq!(body["reason"], "LEDGER_NOT_READY", "{body}");
    assert!(body["binding"].is_null(), "{body}");
    let (status, body) = http(api, "GET", "/readyz", None, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    let (status, _) = http(api, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "alive while not ready");
}

#[test]
fn checks_answer_not_ready_until_the_api_server_answers_and_the_watches_sync() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = HeldProxy::start();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(&proxy.address.to_string())).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (serve, api) = start_serve(&dir.path().join("ledger"), &tokens, &kubeconfig);

    // The API server accepted the connections but has not answered discovery.
    let unknown = request("p", "00000000-0000-4000-8000-000000000001");
    assert_not_ready(&api, &unknown);
    // Still not ready a few polls later: nothing but the API server can make it ready.
    for _ in 0..5 {
        assert_not_ready(&api, &unknown);
    }

    // The simulator comes up behind the proxy: discovery answers, the watches sync.
    let (_sim, sim_address) = start_sim(&dir.path().join("sim-kubeconfig"), "127.0.0.1:0");
    proxy.open(&sim_address);
    wait_ready(&api);
    let (status, body) = http(
        &api,
        "POST",
        "/v1/identity/check",
        Some(&bearer(TOKEN)),
        Some(&unknown),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["reason"], "UNKNOWN_POD", "{body}");
    // Stop serve before the simulator it watches.
    drop(serve);
}

/// `serve` started while nothing listens at its API server's address yet, then the
/// simulator started on that address: discovery is retried, and checks answer once it is
/// up and synced (until then `503 LEDGER_NOT_READY`).
#[test]
fn serve_started_before_the_api_server_listens_becomes_ready_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bound, then released, so nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim_address = format!("127.0.0.1:{port}");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(&sim_address)).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (_serve, api) = start_serve(&dir.path().join("ledger"), &tokens, &kubeconfig);
    let unknown = request("p", "00000000-0000-4000-8000-000000000001");
    assert_not_ready(&api, &unknown);

    let (_sim, _) = start_sim(&dir.path().join("sim-kubeconfig"), &sim_address);
    wait_ready(&api);
    expect_check(&api, TOKEN, &unknown, 200, "deny", Some("UNKNOWN_POD"));
}

// ----- 2. the adversarial cases, and a plain allow -----

#[test]
fn a_warm_pod_is_not_claimed_until_adopted_then_allowed() {
    let stack = Stack::start();
    let b = bound(&stack);
    // The binding endpoint agrees.
    let (status, body) = stack.get(&format!("/v1/bindings/{}", b.pod_uid));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["binding"]["claim"]["uid"],
        b.claim_uid.as_str(),
        "{body}"
    );
    // Without a sandbox id or claim uid the caller still gets the allow.
    let body = stack.expect(&request(WARM, &b.pod_uid), "allow", None);
    assert_eq!(body["binding"]["sandbox"]["uid"], b.sandbox_uid.as_str());
    // The state now holds the binding; replayed as of the first entry, it holds none.
    let (status, now) = stack.get("/v1/state");
    assert_eq!(status, 200, "{now}");
    let pods: Vec<&Value> = now["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|binding| &binding["pod"]["uid"])
        .collect();
    assert!(pods.contains(&&Value::from(b.pod_uid.as_str())), "{now}");
    let (status, first) = stack.get("/v1/state?as_of_seq=1");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["seq"], 1, "{first}");
    assert_eq!(first["bindings"], json!([]), "{first}");
}

/// The kind a table object is written as.
fn kind_of(object: &adversarial_table::Object) -> Kind {
    match object {
        adversarial_table::Object::SandboxClaim { .. } => Kind::Claim,
        adversarial_table::Object::Sandbox { .. } => Kind::Sandbox,
        adversarial_table::Object::Pod { .. } => Kind::Pod,
        adversarial_table::Object::PersistentVolumeClaim { .. } => Kind::Pvc,
    }
}

/// The history selector of a kind.
fn selector_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Sandbox => "sandbox_uid",
        Kind::Claim => "claim_uid",
        Kind::Pod => "pod_uid",
        Kind::Pvc => "pvc_uid",
    }
}

impl Kube {
    /// Deletes in the background; an object the garbage collector already took is fine.
    fn delete_if_present(&self, kind: Kind, name: &str) {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match self.runtime.block_on(self.api(kind).delete(name, &params)) {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("delete {kind:?} {name}: {e}"),
        }
    }
}

/// Writes one table object's change to the simulator as a controller would (the
/// object, then its status), and waits until the ledger records it, so that a check
/// whose answer the change does not alter still sees it.
fn write_change(stack: &Stack, world: &World, handle: &str, before: Option<&Value>) -> String {
    let k = &stack.kube;
    let object = world.object(handle);
    let kind = kind_of(object);
    let name = object.name();
    let mut after = world.manifest(handle);
    let status = after.as_object_mut().unwrap().remove("status");
    let mut written = match before {
        None => k.create(kind, after),
        Some(before) => {
            let mut before = before.clone();
            let old_status = before.as_object_mut().unwrap().remove("status");
            let patch = merge_patch(&before, &after);
            let patched = (patch != json!({})).then(|| k.patch(kind, name, patch));
            if old_status == status {
                patched.unwrap_or_else(|| panic!("{handle}: an update that changes nothing"))
            } else {
                // Only the status changed, or the status too: the status write is last.
                let status = status.clone().unwrap_or(Value::Null);
                k.patch_status(kind, name, status)
            }
        }
    };
    if before.is_none() {
        if let Some(status) = status {
            written = k.patch_status(kind, name, status);
        }
    }
    let uid = uid(&written);
    let recorded = !matches!(
        object,
        adversarial_table::Object::Pod {
            controller_kind: Some(_),
            ..
        }
    );
    if recorded {
        stack.wait_recorded(selector_of(kind), &uid, &resource_version(&written));
    }
    uid
}

/// After a delete: every object the case deleted, or the garbage collector took with it,
/// is gone (once collection finishes), and every other object is still there (an orphaned
/// workspace or an ownerless Sandbox survives its claim).
fn assert_the_simulator_holds_what_the_case_says(
    stack: &Stack,
    world: &World,
    collected: &std::collections::BTreeSet<String>,
) {
    let k = &stack.kube;
    let (deleted, live): (Vec<&str>, Vec<&str>) = world
        .handles()
        .partition(|h| world.is_gone(h) || collected.contains(*h));
    let same = |a: &str, b: &str| {
        let (a, b) = (world.object(a), world.object(b));
        a.kind() == b.kind() && a.name() == b.name()
    };
    for handle in &live {
        let object = world.object(handle);
        assert!(
            k.exists(kind_of(object), object.name()),
            "{} {} should still exist",
            object.kind(),
            object.name()
        );
    }
    // A deleted object whose name a live one reuses is not looked up by name.
    for handle in deleted.iter().filter(|d| !live.iter().any(|l| same(d, l))) {
        let object = world.object(handle);
        poll(
            &format!("{} {} to be gone", object.kind(), object.name()),
            || {
                if k.exists(kind_of(object), object.name()) {
                    Err("still there".into())
                } else {
                    Ok(())
                }
            },
        );
    }
}

/// One case of the table against its own `sim` and `serve`.
fn run_case(case: &adversarial_table::Case) {
    let stack = Stack::start();
    let k = &stack.kube;
    let mut world = World::served(NS);
    // What the simulator's garbage collector has already deleted.
    let mut collected = std::collections::BTreeSet::new();
    for (index, step) in case.steps.iter().enumerate() {
        match world.step(step) {
            Action::Create { handle } => {
                let uid = write_change(&stack, &world, &handle, None);
                world.register(&handle, &uid);
            }
            Action::Update { handle, before } => {
                write_change(&stack, &world, &handle, Some(&before));
            }
            Action::Terminate { handle } => {
                let object = world.object(&handle);
                let kind = kind_of(object);
                k.patch(
                    kind,
                    object.name(),
                    json!({"metadata": {"finalizers": [adversarial_table::HOLD]}}),
                );
                k.delete(kind, object.name(), PropagationPolicy::Background);
            }
            Action::Delete {
                handle,
                was_terminating,
                collected: dependents,
            } => {
                let object = world.object(&handle);
                let kind = kind_of(object);
                if was_terminating {
                    k.patch(
                        kind,
                        object.name(),
                        json!({"metadata": {"finalizers": null}}),
                    );
                } else if !collected.contains(&handle) {
                    k.delete_if_present(kind, object.name());
                }
                collected.extend(dependents);
                assert_the_simulator_holds_what_the_case_says(&stack, &world, &collected);
            }
            Action::Expect(adversarial_table::Check {
                request,
                decision,
                reason,
                binding,
            }) => {
                let body = stack.expect(&request, &decision, reason.as_deref());
                if let Some(binding) = binding {
                    if let Err(e) = adversarial_table::contains(&body["binding"], &binding) {
                        panic!("step {}: binding: {e}: {body}", index + 1);
                    }
                }
            }
            Action::ExpectLog(adversarial_table::LogCheck {
                transition,
                selector,
                uid,
                count,
            }) => poll(&format!("{count} {transition} about {uid}"), || {
                let (status, history) = stack.get(&format!("/v1/history?{selector}={uid}"));
                let transitions =
                    adversarial_table::history_transitions(&history).unwrap_or_default();
                let found = adversarial_table::count_transitions(&transitions, &transition, &uid);
                if status == 200 && found == count {
                    Ok(())
                } else {
                    Err(format!("{status}: found {found} in {history}"))
                }
            }),
        }
    }
}

#[test]
fn every_adversarial_case_of_the_table_answers_as_the_table_says() {
    let table = Table::load();
    let cases = table.cases_for("blackbox");
    assert!(cases.len() >= 10, "cases missing: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = std::panic::catch_unwind(|| run_case(case));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ----- 3. auth -----

#[test]
fn bearer_tokens_through_the_real_binary_and_revocation_by_editing_the_file() {
    let stack = Stack::start();
    let unknown = request("p", "00000000-0000-4000-8000-000000000002");
    let answered = |token: Option<&str>| {
        let (status, body) = http(
            &stack.api,
            "POST",
            "/v1/identity/check",
            token,
            Some(&unknown),
        );
        (status, body)
    };
    let assert_unauthorized = |token: Option<&str>| {
        let (status, body) = answered(token);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
        assert!(body.get("decision").is_none(), "{body}");
    };
    let assert_answered = |token: &str| {
        let (status, body) = answered(Some(&bearer(token)));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "deny", "{body}");
        assert_eq!(body["reason"], "UNKNOWN_POD", "{body}");
    };

    assert_unauthorized(None);
    assert_unauthorized(Some(&bearer("not-a-token")));
    assert_unauthorized(Some(&bearer(&TOKEN[..TOKEN.len() - 1])));
    assert_unauthorized(Some(&format!("Basic {TOKEN}")));
    assert_unauthorized(Some("Bearer "));
    assert_answered(TOKEN);
    assert_answered(TOKEN_2);
    let (status, _) = http(&stack.api, "GET", "/v1/head", None, None);
    assert_eq!(status, 401, "every /v1 endpoint needs a token");
    let (status, _) = http(&stack.api, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "/healthz needs no token");
    let (status, _) = http(&stack.api, "GET", "/readyz", None, None);
    assert_eq!(status, 200, "/readyz needs no token");

    // Revoked while running: the file is re-read when it changes, at once.
    std::fs::write(stack.tokens(), format!("{TOKEN_2}\n")).unwrap();
    assert_unauthorized(Some(&bearer(TOKEN)));
    assert_answered(TOKEN_2);
    let (status, _) = http(&stack.api, "GET", "/v1/head", Some(&bearer(TOKEN)), None);
    assert_eq!(status, 401);
    let (status, _) = http(&stack.api, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
}

// ----- 4. min_seq -----

#[test]
fn min_seq_beyond_the_head_answers_ledger_behind() {
    let stack = Stack::start();
    let b = bound(&stack);
    let (status, head) = stack.get("/v1/head");
    assert_eq!(status, 200, "{head}");
    let seq = head["seq"].as_u64().expect("head seq");
    assert!(seq > 0, "{head}");
    let check = request(WARM, &b.pod_uid);

    // At the head (or behind it), the caller gets the real answer.
    for min_seq in [0, seq] {
        let (status, body) = stack.check(&with(check.clone(), json!({"min_seq": min_seq})));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "allow", "{body}");
        assert!(body["ledger"]["seq"].as_u64().unwrap() >= seq, "{body}");
    }
    // Beyond it: this replica has not seen that entry yet.
    for min_seq in [seq + 1_000_000, u64::MAX / 2] {
        let (status, body) = stack.check(&with(check.clone(), json!({"min_seq": min_seq})));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["decision"], "not_ready", "{body}");
        assert_eq!(body["reason"], "LEDGER_BEHIND", "{body}");
        assert!(body["binding"].is_null(), "{body}");
    }
}

// ----- 5. denial records -----

/// The `check_denied` records for `pod_uid` in entries shaped like export lines.
fn denials_in<'a>(entries: impl Iterator<Item = &'a Value>, pod_uid: &str) -> Vec<Value> {
    entries
        .filter_map(|e| e["entry"]["change"].get("check_denied").cloned())
        .filter(|d| d["pod_uid"] == pod_uid)
        .collect()
}

fn count_of(denials: &[Value], reason: &str) -> u64 {
    denials
        .iter()
        .filter(|d| d["reason"] == reason)
        .map(|d| d["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn denied_checks_are_recorded_as_check_denied_once_serve_flushes_them() {
    let mut stack = Stack::start();
    let b = bound(&stack);
    stack
        .kube
        .delete(Kind::Pod, WARM, PropagationPolicy::Background);
    // The first BINDING_RELEASED answer is one denial; two more replays make three.
    let stale = request(WARM, &b.pod_uid);
    stack.expect(&stale, "deny", Some("BINDING_RELEASED"));
    for _ in 0..2 {
        let (status, body) = stack.check(&stale);
        assert_eq!(
            (status, body["reason"].as_str()),
            (200, Some("BINDING_RELEASED")),
            "{body}"
        );
    }
    // An unknown pod uid is denied without a record (UNKNOWN_POD is not recorded).
    let never = "00000000-0000-4000-8000-0000000000ff";
    stack.expect(&request("ghost", never), "deny", Some("UNKNOWN_POD"));

    // Pending denial records are appended when their minute closes (every 60 s) and at
    // shutdown: stop serve with Ctrl-C and read the ledger offline.
    let mut serve = stack.serve.take().unwrap();
    let status = serve.interrupt_and_wait();
    assert!(status.success(), "serve exited with {status}");
    let db = stack.db();
    let history = Command::new(BIN)
        .args([
            "history",
            "--db",
            db.to_str().unwrap(),
            "--pod-uid",
            &b.pod_uid,
        ])
        .output()
        .unwrap();
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let denials = denials_in(lines.iter(), &b.pod_uid);
    // Exactly the three replays (one record per minute: two if a minute closed between).
    assert_eq!(count_of(&denials, "BINDING_RELEASED"), 3, "{denials:?}");
    assert!(
        denials
            .iter()
            .filter(|d| d["reason"] == "BINDING_RELEASED")
            .all(|d| d["namespace"] == NS && d["pod_name"] == WARM && d["minute"].is_string()),
        "{denials:?}"
    );
    // Beside the pod's own bound and released transitions.
    let transitions: Vec<&str> = lines
        .iter()
        .flat_map(|l| l["entry"]["transitions"].as_array().into_iter().flatten())
        .filter_map(|t| t["transition"].as_str())
        .collect();
    assert!(transitions.contains(&"bound"), "{transitions:?}");
    assert!(transitions.contains(&"released"), "{transitions:?}");
    let never_history = Command::new(BIN)
        .args(["history", "--db", db.to_str().unwrap(), "--pod-uid", never])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&never_history.stdout).contains("check_denied"),
        "UNKNOWN_POD is not recorded"
    );
    let verify = Command::new(BIN)
        .args(["verify", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // And over HTTP, from a restarted serve on the same ledger.
    let kubeconfig = stack.dir.path().join("kubeconfig");
    let (serve, api) = start_serve(&db, &stack.tokens(), &kubeconfig);
    stack.serve = Some(serve);
    stack.api = api;
    wait_ready(&stack.api);
    let (status, page) = stack.get(&format!("/v1/history?pod_uid={}", b.pod_uid));
    assert_eq!(status, 200, "{page}");
    let over_http = denials_in(page["entries"].as_array().unwrap().iter(), &b.pod_uid);
    assert_eq!(over_http, denials);
}
