//! The real kubectl (skipped with a message when /usr/bin/kubectl is absent).

mod common;

use common::start;
use serde_json::{json, Value};
use sim::{Resource, SimConfig};
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

fn hello_world_yaml(dir: &Path) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/crds/examples/sandbox-hello-world.yaml");
    if shared.exists() {
        return shared;
    }
    let path = dir.join("sandbox-hello-world.yaml");
    std::fs::write(
        &path,
        "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata:\n  name: hello-world\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - name: my-container\n        image: busybox\n      restartPolicy: Never\n",
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_patch_delete() {
    if !Path::new(KUBECTL).exists() {
        println!("skipping: {KUBECTL} is not installed");
        return;
    }
    let running = start(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, running.sim.kubeconfig(&running.url)).unwrap();
    let k = Kubectl { kubeconfig };

    let (code, _, stderr) = k.run(&["get", "sandboxes", "-A"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("No resources found"), "{stderr}");

    let file = hello_world_yaml(dir.path());
    let out = k
        .ok(&["create", "-f", file.to_str().unwrap(), "-n", "default"])
        .await;
    assert!(
        out.contains("sandbox.agents.x-k8s.io/hello-world created"),
        "{out}"
    );
    assert!(running
        .sim
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
        .sim
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
        .sim
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
        .sim
        .get(Resource::Sandbox, "default", "hello-world")
        .is_none());
    assert!(running
        .sim
        .get(Resource::Pod, "default", "hello-world")
        .is_none());
    let out = k
        .ok(&["get", "sandboxes,sandboxclaims", "-A", "-o", "name"])
        .await;
    assert!(out.trim().is_empty(), "{out}");
}
