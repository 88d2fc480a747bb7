//! The real kubectl (skipped with a message when /usr/bin/kubectl is absent).

use serde_json::{json, Value};
use sim::{Resource, SimConfig, Simulator};
use std::path::{Path, PathBuf};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl off the async runtime; returns (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = std::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.env("HOME", self.kubeconfig.parent().unwrap());
        cmd.env_remove("KUBECONFIG");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args).await;
        assert_eq!(code, 0, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }
}

/// The upstream hello-world example, kept in the repository (tests/data/crds/SOURCE.md).
fn hello_world_yaml() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/crds/examples/sandbox-hello-world.yaml");
    assert!(
        path.exists(),
        "{} is missing (the example lives in the repository, under tests/data/crds/examples/)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_patch_delete() {
    if !Path::new(KUBECTL).exists() {
        println!("skipping: {KUBECTL} is not installed");
        return;
    }
    let running = Simulator::start_local(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, running.kubeconfig()).unwrap();
    let k = Kubectl { kubeconfig };

    let (code, _, stderr) = k.run(&["get", "sandboxes", "-A"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("No resources found"), "{stderr}");

    let file = hello_world_yaml();
    let out = k
        .ok(&["create", "-f", file.to_str().unwrap(), "-n", "default"])
        .await;
    assert!(
        out.contains("sandbox.agents.x-k8s.io/hello-world created"),
        "{out}"
    );
    assert!(running
        .simulator()
        .get(Resource::Sandbox, "default", "hello-world")
        .is_some());

    let out = k.ok(&["get", "sandboxes", "-A"]).await;
    assert!(
        out.contains("NAMESPACE") && out.contains("hello-world"),
        "{out}"
    );
    let out = k.ok(&["get", "sandbox", "hello-world", "-o", "json"]).await;
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["apiVersion"], "agents.x-k8s.io/v1beta1");
    // The Sandbox controller gave it a pod.
    let out = k.ok(&["get", "pods"]).await;
    assert!(
        out.contains("hello-world") && out.contains("Running"),
        "{out}"
    );

    running
        .simulator()
        .create(
            json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": "my-claim", "namespace": "default"},
            "spec": {"sandboxTemplateRef": {"name": "t"}}}),
        )
        .unwrap();
    let out = k
        .ok(&[
            "patch",
            "sandboxclaim",
            "my-claim",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"team":"blue"}}}"#,
        ])
        .await;
    assert!(
        out.contains("sandboxclaim.extensions.agents.x-k8s.io/my-claim patched"),
        "{out}"
    );
    let claim = running
        .simulator()
        .get(Resource::SandboxClaim, "default", "my-claim")
        .unwrap();
    assert_eq!(claim["metadata"]["labels"]["team"], "blue");
    let out = k
        .ok(&[
            "patch",
            "sandboxclaim",
            "my-claim",
            "-p",
            r#"{"metadata":{"labels":{"team":"red"}}}"#,
        ])
        .await;
    assert!(out.contains("patched"), "{out}");
    let out = k
        .ok(&["get", "sandboxclaims", "-l", "team=red", "-o", "name"])
        .await;
    assert_eq!(
        out.trim(),
        "sandboxclaim.extensions.agents.x-k8s.io/my-claim"
    );

    let out = k
        .ok(&["delete", "sandboxclaim", "my-claim", "--cascade=foreground"])
        .await;
    assert!(out.contains("deleted"), "{out}");
    let out = k.ok(&["delete", "sandbox", "hello-world"]).await;
    assert!(
        out.contains("sandbox.agents.x-k8s.io \"hello-world\" deleted"),
        "{out}"
    );
    assert!(running
        .simulator()
        .get(Resource::Sandbox, "default", "hello-world")
        .is_none());
    assert!(running
        .simulator()
        .get(Resource::Pod, "default", "hello-world")
        .is_none());
    let out = k
        .ok(&["get", "sandboxes,sandboxclaims", "-A", "-o", "name"])
        .await;
    assert!(out.trim().is_empty(), "{out}");
}

/// A simulator for kubectl: the real `claim-ledger sim` binary when a build of it is newer
/// than the simulator's sources (it prints `cluster simulator listening on URL` after
/// writing the kubeconfig), else the library's [`sim::run_standalone`].
enum Served {
    Binary(std::process::Child),
    /// Stops the library's server when sent (or dropped).
    Library(Option<tokio::sync::oneshot::Sender<()>>),
}

impl Drop for Served {
    fn drop(&mut self) {
        match self {
            Served::Binary(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Served::Library(stop) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

fn fresh_binary() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = manifest.join("../../target/debug/claim-ledger");
    let built = std::fs::metadata(&binary).ok()?.modified().ok()?;
    let newest_source = std::fs::read_dir(manifest.join("src"))
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max()?;
    (built > newest_source).then_some(binary)
}

async fn serve_for_kubectl(kubeconfig: &Path) -> Served {
    if let Some(binary) = fresh_binary() {
        use std::io::BufRead;
        let mut child = std::process::Command::new(&binary)
            .args(["sim", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let line = lines
                .by_ref()
                .map_while(Result::ok)
                .find(|l| l.starts_with("cluster simulator listening on"));
            // Keep draining so the process never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            line
        })
        .await
        .unwrap();
        println!("using {}: {line:?}", binary.display());
        assert!(line.is_some(), "the binary did not report its address");
        return Served::Binary(child);
    }
    println!("using the library (no fresh target/debug/claim-ledger)");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let path = kubeconfig.to_path_buf();
    tokio::spawn(async move {
        sim::run_standalone(listener, Some(path), SimConfig::default(), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Served::Library(Some(tx))
}

impl Kubectl {
    /// Polls `kubectl get ... -o jsonpath=...` until it prints something non-empty.
    async fn eventually(&self, args: &[&str]) -> String {
        for _ in 0..50 {
            let (code, stdout, _) = self.run(args).await;
            if code == 0 && !stdout.trim().is_empty() {
                return stdout.trim().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("kubectl {args:?} never printed anything");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_created_claims_are_bound_and_expire() {
    if !Path::new(KUBECTL).exists() {
        println!("skipping: {KUBECTL} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _served = serve_for_kubectl(&kubeconfig).await;
    let k = Kubectl { kubeconfig };

    let pool_yaml = dir.path().join("pool.yaml");
    std::fs::write(
        &pool_yaml,
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxTemplate\nmetadata:\n  name: python\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - name: agent\n        image: busybox\n---\napiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\nmetadata:\n  name: python-pool\nspec:\n  replicas: 1\n  sandboxTemplateRef:\n    name: python\n",
    )
    .unwrap();
    k.ok(&["create", "-f", pool_yaml.to_str().unwrap()]).await;
    let warm = k.ok(&["get", "sandboxes", "-o", "name"]).await;
    let warm = warm
        .trim()
        .trim_start_matches("sandbox.agents.x-k8s.io/")
        .to_string();
    assert!(warm.starts_with("python-pool-"), "{warm}");

    let claim_yaml = |lifecycle: &str| {
        format!(
            "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxClaim\nmetadata:\n  name: my-claim\n  labels:\n    team: blue\nspec:\n  warmPoolRef:\n    name: python-pool\n{lifecycle}"
        )
    };
    let claim_file = dir.path().join("claim.yaml");
    std::fs::write(&claim_file, claim_yaml("")).unwrap();
    let out = k.ok(&["create", "-f", claim_file.to_str().unwrap()]).await;
    assert!(
        out.contains("sandboxclaim.extensions.agents.x-k8s.io/my-claim created"),
        "{out}"
    );
    let jsonpath = "jsonpath={.status.sandbox.name}";
    let bound = k
        .eventually(&["get", "sandboxclaim", "my-claim", "-o", jsonpath])
        .await;
    assert_eq!(bound, warm, "the warm Sandbox was adopted");
    let owner = k
        .ok(&[
            "get",
            "sandbox",
            &warm,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
        ])
        .await;
    assert_eq!(owner, "SandboxClaim/my-claim");
    let sandboxes = k.ok(&["get", "sandboxes", "-o", "name"]).await;
    assert_eq!(
        sandboxes.lines().count(),
        2,
        "the pool replenished: {sandboxes}"
    );

    // `kubectl replace` of the bound claim keeps its binding (status is not the client's).
    std::fs::write(
        &claim_file,
        claim_yaml("").replace("team: blue", "team: red"),
    )
    .unwrap();
    let out = k.ok(&["replace", "-f", claim_file.to_str().unwrap()]).await;
    assert!(out.contains("replaced"), "{out}");
    let after = k
        .ok(&["get", "sandboxclaim", "my-claim", "-o", jsonpath])
        .await;
    assert_eq!(after.trim(), warm);
    let label = k
        .ok(&[
            "get",
            "sandboxclaim",
            "my-claim",
            "-o",
            "jsonpath={.metadata.labels.team}",
        ])
        .await;
    assert_eq!(label, "red");
    assert_eq!(
        k.ok(&["get", "sandboxes", "-o", "name"])
            .await
            .lines()
            .count(),
        2
    );

    // Replaced again with a shutdownTime in the past: it expires under Retain.
    std::fs::write(
        &claim_file,
        claim_yaml("  lifecycle:\n    shutdownPolicy: Retain\n    shutdownTime: \"2020-01-01T00:00:00Z\"\n"),
    )
    .unwrap();
    k.ok(&["replace", "-f", claim_file.to_str().unwrap()]).await;
    let reason = k
        .eventually(&[
            "get",
            "sandboxclaim",
            "my-claim",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].reason}",
        ])
        .await;
    assert_eq!(reason, "SandboxExpired");
    let (code, _, stderr) = k.run(&["get", "sandbox", &warm]).await;
    assert_ne!(code, 0, "the expired claim's Sandbox is gone");
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
}
