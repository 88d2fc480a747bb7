//! The deployment manifests of `deploy/`, rendered and checked against the real binary.
//!
//! * Every overlay under `deploy/overlays/` is rendered with `kubectl kustomize` (kubectl
//!   is required: a missing kubectl fails these tests, it never skips them; `KUBECTL`
//!   names another binary) and parsed with `serde_yaml_ng`. Each runs one workload: the
//!   sled overlays (`single-node`, `namespaced`) a single-replica StatefulSet with its
//!   ledger on a volume claim template, `replicated` a Deployment of several
//!   `serve --replica` pods on a PostgreSQL URL from a Secret, with no volume claim, a
//!   PodDisruptionBudget, anti-affinity and a topology spread. The pod must be hardened
//!   (non-root, read-only root file system, no privilege escalation, every capability
//!   dropped, RuntimeDefault seccomp), probe `/healthz` and `/readyz`, mount every Secret
//!   file it is given (the database password included) owner-read-only with an fsGroup,
//!   pass only flags `serve --help` lists, and the Service, NetworkPolicy and
//!   ServiceMonitor must point at the pod's port. No Role or ClusterRole may hold a
//!   wildcard or any verb but get, list and watch; the replicated ClusterRole's rules are
//!   single-node's.
//! * RBAC against behaviour: the real `claim-ledger serve`, started with the very
//!   arguments of each overlay's workload (paths moved to a temporary directory; for the
//!   replicated overlay, two replicas on a real PostgreSQL server, the writer killed so
//!   the follower takes over),
//!   watches the cluster simulator (the library `claim-ledger sim` serves; used in-process
//!   because the simulator's request records are only readable through its Rust API) until
//!   it is ready, records objects, and relists after a simulated API server restart. Every
//!   request it made, turned into the attributes the Kubernetes authorizer sees (verb from
//!   the method and the `watch` parameter, API group, resource, namespace, or the
//!   non-resource path), must be allowed by the overlay's RBAC; every rule, and every
//!   verb x resource (or URL) of a rule, must be used; and dropping any single rule or
//!   item must deny some request the service made (an in-process mutation test).
//! * Every `claim_ledger_*` metric the PrometheusRule names exists in a live scrape of
//!   `/metrics` of that same `serve`, and every alert has its section in
//!   `docs/OPERATIONS.md`.
//! * `deploy/Containerfile`: a locked build stage and a distroless non-root runtime stage
//!   whose exec-form ENTRYPOINT runs `serve` with flags it has.

use crate::support::postgres;
use crate::support::process;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::process::{command, Child};
use serde::Deserialize;
use serde_json::Value;
use sim::{RecordedRequest, Served, SimConfig, Simulator};

/// How long the service may take to become ready, record objects or relist.
const PATIENCE: Duration = Duration::from_secs(60);

/// The only verbs any Role or ClusterRole of `deploy/` may grant.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// The non-resource URLs of the default `system:discovery` ClusterRole, bound to every
/// authenticated identity by default. The namespaced overlay relies on it for discovery.
const DEFAULT_DISCOVERY: [&str; 11] = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

const TOKEN: &str = "deploy-test-token-5b0c1e";

// ----- rendering -----

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The overlay directories, sorted.
fn overlays() -> Vec<String> {
    let dir = repo().join("deploy/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("kustomization.yaml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for expected in ["namespaced", "replicated", "single-node"] {
        assert!(
            names.iter().any(|n| n == expected),
            "deploy/overlays/{expected} is missing: {names:?}"
        );
    }
    names
}

/// One overlay, rendered.
struct Rendered {
    overlay: String,
    objects: Vec<Value>,
}

/// `kubectl kustomize deploy/overlays/<overlay>`, every document parsed.
fn render(overlay: &str) -> Rendered {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let dir = repo().join("deploy/overlays").join(overlay);
    let output = std::process::Command::new(&kubectl)
        .arg("kustomize")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{kubectl} kustomize` ({e}): kubectl is REQUIRED by tests/it/deploy.rs \
                 (install it, or set KUBECTL to its path); this test does not skip"
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {}` failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{overlay}: unparsable YAML document: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect();
    assert!(!objects.is_empty(), "{overlay} renders nothing");
    Rendered {
        overlay: overlay.to_string(),
        objects,
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(|v| text(v).to_string()).collect())
        .unwrap_or_default()
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "{}: expected one {kind}", self.overlay);
        found[0]
    }

    /// The one workload running `serve`: a StatefulSet (the sled form) or a Deployment
    /// (the replicated form), never both.
    fn workload(&self) -> &Value {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one StatefulSet or Deployment",
            self.overlay
        );
        found[0]
    }

    /// Whether this is the replicated form (a Deployment of `serve --replica`).
    fn replicated(&self) -> bool {
        self.workload()["kind"] == "Deployment"
    }

    fn statefulset(&self) -> &Value {
        self.one("StatefulSet")
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> &Value {
        &self.workload()["spec"]["template"]["spec"]
    }

    fn pod_labels(&self) -> &Value {
        &self.workload()["spec"]["template"]["metadata"]["labels"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{}: one container", self.overlay);
        &containers[0]
    }

    /// The container's arguments (the first is the subcommand).
    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    /// `--flag=value` / `--flag value` / `--flag` arguments after `serve`.
    fn flags(&self) -> BTreeMap<String, Vec<String>> {
        let args = self.args();
        assert_eq!(
            args.first().map(String::as_str),
            Some("serve"),
            "{}: the container runs `serve`",
            self.overlay
        );
        parse_flags(&args[1..])
    }

    fn flag(&self, name: &str) -> String {
        let flags = self.flags();
        let values = flags
            .get(name)
            .unwrap_or_else(|| panic!("{}: no --{name} in {:?}", self.overlay, self.args()));
        assert_eq!(values.len(), 1, "{}: --{name} given once", self.overlay);
        values[0].clone()
    }

    /// The `--namespace` values: the namespaces serve watches (none: all).
    fn namespaces(&self) -> Vec<String> {
        self.flags().remove("namespace").unwrap_or_default()
    }

    /// The namespace the workload (and its ServiceAccount) runs in.
    fn namespace(&self) -> String {
        text(&self.workload()["metadata"]["namespace"]).to_string()
    }

    /// The container's environment variables.
    fn env(&self) -> Vec<&Value> {
        self.container()["env"]
            .as_array()
            .map(|vars| vars.iter().collect())
            .unwrap_or_default()
    }

    /// The Secret volume and item that hold the file `--<flag>` names, checked: mounted
    /// read-only (never through `subPath`), mode 0400, and the file is one of the
    /// volume's items. Returns the Secret's name and the item's key.
    fn secret_file(&self, flag: &str) -> (String, String) {
        let overlay = &self.overlay;
        let file = self.flag(flag);
        let (mount, volume) = self.mount_of(&file);
        let volume = volume.unwrap_or_else(|| panic!("{overlay}: --{flag} on no volume"));
        let secret = &volume["secret"];
        assert!(
            secret["secretName"].is_string(),
            "{overlay}: --{flag} {file} comes from a Secret"
        );
        assert_eq!(
            secret["defaultMode"], 0o400,
            "{overlay}: --{flag}'s Secret has defaultMode 0400"
        );
        assert_eq!(
            mount["readOnly"], true,
            "{overlay}: --{flag} mount read-only"
        );
        assert!(
            mount["subPath"].is_null(),
            "{overlay}: a subPath mount never sees Secret updates"
        );
        let relative = Path::new(&file)
            .strip_prefix(text(&mount["mountPath"]))
            .expect("below its mount")
            .to_string_lossy()
            .into_owned();
        let items = secret["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{overlay}: --{flag}'s Secret volume lists its items"));
        let item = items
            .iter()
            .find(|item| item["path"] == relative.as_str())
            .unwrap_or_else(|| {
                panic!("{overlay}: --{flag} {file} is none of the Secret's items: {items:?}")
            });
        assert!(
            item["mode"].is_null() || item["mode"] == 0o400,
            "{overlay}: {item}"
        );
        (
            text(&secret["secretName"]).to_string(),
            text(&item["key"]).to_string(),
        )
    }

    /// The mount whose path holds `file`, with its volume.
    fn mount_of(&self, file: &str) -> (&Value, Option<&Value>) {
        let mounts = self.container()["volumeMounts"].as_array().expect("mounts");
        let mount = mounts
            .iter()
            .filter(|m| Path::new(file).starts_with(text(&m["mountPath"])))
            .max_by_key(|m| text(&m["mountPath"]).len())
            .unwrap_or_else(|| panic!("{}: nothing mounted at {file}", self.overlay));
        let name = text(&mount["name"]);
        let volume = self.pod_spec()["volumes"]
            .as_array()
            .and_then(|volumes| volumes.iter().find(|v| v["name"] == name));
        (mount, volume)
    }
}

fn parse_flags(args: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let name = arg
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("positional argument {arg:?} to serve"));
        let (name, value) = match name.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None if args.get(i + 1).is_some_and(|next| !next.starts_with("--")) => {
                i += 1;
                (name.to_string(), args[i].clone())
            }
            None => (name.to_string(), String::new()),
        };
        flags.entry(name).or_default().push(value);
        i += 1;
    }
    flags
}

/// The `--flags` `claim-ledger serve --help` lists.
fn serve_flags() -> BTreeSet<String> {
    let help = process::ok(&["serve", "--help"], None).stdout;
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| {
            flag.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|flag| !flag.is_empty())
        .collect()
}

// ----- (a) the rendered manifests -----

#[test]
fn every_overlay_renders_a_hardened_pod() {
    let known = serve_flags();
    for overlay in overlays() {
        let r = render(&overlay);
        let pod = r.pod_spec();
        let container = r.container();

        // Flags: only ones serve has, and the ones a cluster needs.
        for flag in r.flags().keys() {
            assert!(
                known.contains(flag),
                "{overlay}: --{flag} is not a flag of `claim-ledger serve` ({known:?})"
            );
        }
        let listen: std::net::SocketAddr = r.flag("listen").parse().expect("--listen");
        assert!(
            listen.ip().is_unspecified(),
            "{overlay}: --listen {listen} is unreachable through a Service"
        );
        assert!(
            !r.flags().contains_key("insecure-no-auth"),
            "{overlay}: no --insecure-no-auth"
        );
        // The Secrets are group-readable through the fsGroup (0440): without this flag
        // serve refuses the signing key.
        assert_eq!(
            r.flag("allow-group-readable-secrets"),
            "",
            "{overlay}: --allow-group-readable-secrets"
        );

        // The arguments are the configuration: a variable only ever feeds an argument
        // (`$(NAME)`), none configures serve (or the database client) behind them.
        assert!(
            container["envFrom"].is_null(),
            "{overlay}: no envFrom: {}",
            container["envFrom"]
        );
        let args = r.args();
        for var in r.env() {
            let name = text(&var["name"]);
            assert!(
                !name.starts_with("CLAIM_LEDGER_") && !name.starts_with("PG") && name != "RUST_LOG",
                "{overlay}: the variable {name} configures serve outside its arguments"
            );
            assert!(
                args.iter().any(|a| a.contains(&format!("$({name})"))),
                "{overlay}: the variable {name} feeds no argument"
            );
        }

        // Every namespaced object is in the service's namespace (an object without one
        // would land in whatever namespace `kubectl apply` defaults to).
        let home = r.namespace();
        assert_eq!(home, "claim-ledger", "{overlay}: the workload's namespace");
        for object in &r.objects {
            let kind = text(&object["kind"]);
            if matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
                continue;
            }
            assert!(
                object["metadata"]["namespace"].is_string(),
                "{overlay}: {kind} {} has no namespace",
                object["metadata"]["name"]
            );
        }

        // Non-root, hardened.
        let psc = &pod["securityContext"];
        let csc = &container["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{overlay}: pod runAsNonRoot");
        assert_eq!(
            csc["runAsNonRoot"], true,
            "{overlay}: container runAsNonRoot"
        );
        for sc in [psc, csc] {
            if !sc["runAsUser"].is_null() {
                assert_eq!(
                    sc["runAsUser"], 65532,
                    "{overlay}: uid 65532 (distroless nonroot)"
                );
            }
        }
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{overlay}");
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{overlay}");
        assert_ne!(csc["privileged"], true, "{overlay}");
        assert_eq!(
            strings(&csc["capabilities"]["drop"]),
            ["ALL"],
            "{overlay}: drop ALL capabilities"
        );
        assert!(
            csc["capabilities"]["add"].is_null(),
            "{overlay}: adds no capability"
        );
        for sc in [psc, csc] {
            assert_eq!(
                sc["seccompProfile"]["type"], "RuntimeDefault",
                "{overlay}: seccomp RuntimeDefault"
            );
        }
        assert_ne!(pod["hostNetwork"], true);
        assert_ne!(pod["hostPID"], true);
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            assert!(
                volume["hostPath"].is_null(),
                "{overlay}: a hostPath volume: {volume}"
            );
        }
        // With a read-only root, /tmp (export bundles spool there) must be a volume.
        let (tmp, tmp_volume) = r.mount_of("/tmp/spool");
        assert_eq!(tmp["mountPath"], "/tmp", "{overlay}: /tmp is mounted");
        assert!(
            tmp_volume.is_some_and(|v| v["emptyDir"].is_object()),
            "{overlay}: /tmp is an emptyDir"
        );

        // Probes: alive and ready, on the container's port.
        let port = &container["ports"][0];
        assert_eq!(
            port["containerPort"],
            listen.port(),
            "{overlay}: containerPort"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe}");
            assert!(
                get["port"] == port["name"] || get["port"] == port["containerPort"],
                "{overlay}: {probe} port {}",
                get["port"]
            );
        }

        // Secrets: owner-read-only files, readable through the fsGroup.
        assert!(
            psc["fsGroup"].as_u64().is_some(),
            "{overlay}: an fsGroup lets the non-root user read the Secrets"
        );
        let mut secret_flags = vec!["api-token-file", "signing-key"];
        if r.flags().contains_key("db-password-file") {
            secret_flags.push("db-password-file");
        }
        for flag in secret_flags {
            r.secret_file(flag);
        }
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            if volume["secret"].is_object() {
                assert_eq!(
                    volume["secret"]["defaultMode"], 0o400,
                    "{overlay}: {volume}"
                );
            }
        }

        // Resources.
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][bound][resource].is_string(),
                    "{overlay}: resources.{bound}.{resource}"
                );
            }
        }

        // The ServiceAccount serve runs as exists.
        let account = text(&pod["serviceAccountName"]);
        assert!(
            r.of_kind("ServiceAccount")
                .iter()
                .any(|sa| sa["metadata"]["name"] == account),
            "{overlay}: ServiceAccount {account}"
        );

        check_service_and_monitoring(&r, listen.port());
        check_rbac_static(&r);
    }
}

#[test]
fn the_sled_overlays_run_one_replica_on_its_volume() {
    let mut sled = 0;
    for overlay in overlays() {
        let r = render(&overlay);
        if r.replicated() {
            continue;
        }
        sled += 1;
        let sts = r.statefulset();
        assert_eq!(sts["spec"]["replicas"], 1, "{overlay}: one replica (sled)");
        assert!(
            !r.flags().contains_key("replica"),
            "{overlay}: --replica needs a PostgreSQL ledger"
        );

        // The ledger on the volume claim template.
        let db = r.flag("db");
        assert_eq!(db, "/var/lib/claim-ledger/ledger", "{overlay}: --db");
        let (mount, volume) = r.mount_of(&db);
        assert!(
            volume.is_none(),
            "{overlay}: the ledger is not a pod volume"
        );
        let templates = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .expect("volumeClaimTemplates");
        let claim = templates
            .iter()
            .find(|t| t["metadata"]["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{overlay}: {db} is not on a volumeClaimTemplate"));
        assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
        assert!(claim["spec"]["resources"]["requests"]["storage"].is_string());
        assert_ne!(mount["readOnly"], true, "{overlay}: the ledger is writable");
    }
    assert!(
        sled >= 2,
        "the single-node and namespaced overlays are sled"
    );
}

/// The Secret the replicated overlay takes the database from.
const POSTGRES_SECRET: &str = "claim-ledger-postgres";

/// The `$(NAME)` variable the replicated overlay's `--db` is, checked to come from the
/// `url` key of the PostgreSQL Secret.
fn db_url_variable(r: &Rendered) -> String {
    let overlay = &r.overlay;
    let db = r.flag("db");
    let name = db
        .strip_prefix("$(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| {
            panic!("{overlay}: --db {db:?} is not a variable (the URL comes from a Secret)")
        });
    let vars: Vec<&Value> = r.env().into_iter().filter(|v| v["name"] == name).collect();
    assert_eq!(vars.len(), 1, "{overlay}: one variable {name}");
    let source = &vars[0]["valueFrom"]["secretKeyRef"];
    assert_eq!(
        source["name"], POSTGRES_SECRET,
        "{overlay}: {name} from the Secret {POSTGRES_SECRET}"
    );
    assert_eq!(source["key"], "url", "{overlay}: {name} from its key url");
    assert_ne!(
        source["optional"], true,
        "{overlay}: without the URL the container must not start"
    );
    name.to_string()
}

#[test]
fn the_replicated_overlay_runs_replicas_on_postgres() {
    let r = render("replicated");
    let overlay = &r.overlay;
    assert!(r.replicated(), "{overlay}: a Deployment");
    assert!(
        r.of_kind("StatefulSet").is_empty(),
        "{overlay}: no StatefulSet"
    );
    let deployment = r.deployment();
    let replicas = deployment["spec"]["replicas"]
        .as_u64()
        .expect("spec.replicas");
    assert!(replicas >= 2, "{overlay}: {replicas} replica(s)");
    assert_ne!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "{overlay}: a rollout must not stop every replica at once"
    );

    // serve --replica on the database of the Secret; every flag is checked against
    // `serve --help` by every_overlay_renders_a_hardened_pod.
    assert_eq!(r.flag("replica"), "", "{overlay}: --replica");
    db_url_variable(&r);
    if r.flags().contains_key("lease-seconds") {
        let lease: u64 = r.flag("lease-seconds").parse().expect("--lease-seconds");
        assert!(lease >= 1, "{overlay}: --lease-seconds {lease}");
    }
    let (secret, key) = r.secret_file("db-password-file");
    assert_eq!(
        (secret.as_str(), key.as_str()),
        (POSTGRES_SECRET, "password"),
        "{overlay}: --db-password-file is the Secret's password"
    );

    // No ledger volume: no claim, no claim template, nothing writable but /tmp.
    assert!(
        r.of_kind("PersistentVolumeClaim").is_empty(),
        "{overlay}: no PersistentVolumeClaim"
    );
    assert!(
        deployment["spec"]["volumeClaimTemplates"].is_null(),
        "{overlay}: no volume claim template"
    );
    for volume in r.pod_spec()["volumes"].as_array().into_iter().flatten() {
        assert!(
            volume["secret"].is_object() || volume["emptyDir"].is_object(),
            "{overlay}: only Secrets and the /tmp emptyDir: {volume}"
        );
    }
    for mount in r.container()["volumeMounts"].as_array().expect("mounts") {
        assert!(
            mount["readOnly"] == true || mount["mountPath"] == "/tmp",
            "{overlay}: only /tmp is writable: {mount}"
        );
    }

    // A disruption budget over these pods that lets a drain proceed one pod at a time.
    let labels = r.pod_labels();
    let budget = r.one("PodDisruptionBudget");
    assert!(
        selects(&budget["spec"]["selector"]["matchLabels"], labels),
        "{overlay}: the PodDisruptionBudget selects the pods"
    );
    assert_eq!(
        budget["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    let spec = &budget["spec"];
    let tolerable = match (
        spec["maxUnavailable"].as_u64(),
        spec["minAvailable"].as_u64(),
    ) {
        (Some(max), None) => max,
        (None, Some(min)) => {
            assert!(min >= 2, "{overlay}: minAvailable {min}");
            replicas.saturating_sub(min)
        }
        _ => panic!("{overlay}: one of maxUnavailable and minAvailable, as a number: {spec}"),
    };
    assert!(
        (1..replicas).contains(&tolerable),
        "{overlay}: the budget allows {tolerable} of {replicas} replicas down"
    );

    // Replicas apart: anti-affinity across nodes, and a topology spread.
    let anti = &r.pod_spec()["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|weighted| &weighted["podAffinityTerm"])
        .chain(
            anti["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    assert!(
        terms
            .iter()
            .any(|term| term["topologyKey"] == "kubernetes.io/hostname"
                && selects(&term["labelSelector"]["matchLabels"], labels)),
        "{overlay}: pod anti-affinity across nodes: {anti}"
    );
    let spread = r.pod_spec()["topologySpreadConstraints"]
        .as_array()
        .unwrap_or_else(|| panic!("{overlay}: topologySpreadConstraints"));
    assert!(!spread.is_empty(), "{overlay}: a topology spread");
    for constraint in spread {
        assert!(
            selects(&constraint["labelSelector"]["matchLabels"], labels),
            "{overlay}: {constraint}"
        );
        assert!(
            constraint["maxSkew"].as_u64().is_some_and(|skew| skew >= 1),
            "{overlay}: {constraint}"
        );
        assert!(constraint["topologyKey"].is_string(), "{overlay}");
    }

    // The replicas watch what the single-node pod watches: the same ClusterRole rules,
    // bound to the same ServiceAccount (the behaviour test of single-node covers them;
    // replicated_rbac_allows_exactly_what_serve_does runs these arguments too).
    let single = render("single-node");
    assert_eq!(
        r.one("ClusterRole")["rules"],
        single.one("ClusterRole")["rules"],
        "{overlay}: the ClusterRole rules of single-node"
    );
    assert_eq!(
        r.one("ClusterRoleBinding")["subjects"],
        single.one("ClusterRoleBinding")["subjects"]
    );
    assert!(r.namespaces().is_empty(), "{overlay}: every namespace");

    // No volume, so no volume alert; and no alert that a follower trips by being one.
    let rules = r.one("PrometheusRule");
    for group in rules["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = text(&rule["expr"]);
            assert!(
                !expr.contains("kubelet_volume_stats") && !expr.contains("persistentvolumeclaim"),
                "{overlay}: alert {} is about a volume there is not",
                rule["alert"]
            );
        }
    }
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

fn check_service_and_monitoring(r: &Rendered, port: u16) {
    let overlay = &r.overlay;
    let pod_labels = r.pod_labels();
    let port_name = &r.container()["ports"][0]["name"];

    let service = r.one("Service");
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "{overlay}: Service selector"
    );
    let service_port = &service["spec"]["ports"][0];
    assert!(
        service_port["targetPort"] == *port_name || service_port["targetPort"] == port,
        "{overlay}: the Service targets the API port"
    );
    if !r.replicated() {
        assert_eq!(
            r.statefulset()["spec"]["serviceName"],
            service["metadata"]["name"],
            "{overlay}: serviceName"
        );
    }

    let policy = r.one("NetworkPolicy");
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let mut admitted = BTreeSet::new();
    for rule in ingress {
        let from = rule["from"]
            .as_array()
            .expect("every rule names its sources");
        assert!(
            !from.is_empty(),
            "{overlay}: an empty `from` admits everyone"
        );
        for source in from {
            let name = &source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"];
            assert!(
                name.is_string(),
                "{overlay}: sources are namespaces: {source}"
            );
            admitted.insert(text(name).to_string());
        }
        let ports = rule["ports"]
            .as_array()
            .expect("every rule names its ports");
        for p in ports {
            assert!(
                p["port"] == *port_name || p["port"] == port,
                "{overlay}: only the API/metrics port: {p}"
            );
        }
    }
    assert_eq!(
        admitted,
        BTreeSet::from(["gateway".to_string(), "monitoring".to_string()]),
        "{overlay}: the gateway and monitoring namespaces (placeholders)"
    );

    let monitor = r.one("ServiceMonitor");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(
        endpoint["port"], service_port["name"],
        "{overlay}: scrape port"
    );
    assert_eq!(endpoint["path"], "/metrics");

    let rules = r.one("PrometheusRule");
    let alerts: Vec<&Value> = rules["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert!(alerts.len() >= 5, "{overlay}: alerts");
    let guide = std::fs::read_to_string(repo().join("docs/OPERATIONS.md")).unwrap();
    for alert in alerts {
        assert!(
            alert["alert"].is_string() && alert["expr"].is_string(),
            "{alert}"
        );
        assert!(alert["annotations"]["summary"].is_string(), "{alert}");
        let name = text(&alert["alert"]);
        assert!(
            guide.contains(&format!("\n### {name}\n")),
            "{overlay}: docs/OPERATIONS.md has no section on alert {name}"
        );
    }
}

#[test]
fn the_containerfile_builds_locked_and_runs_serve_as_nonroot() {
    let text = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].contains("rust:"), "{}", froms[0]);
    assert!(
        froms[1].contains("distroless") && froms[1].ends_with(":nonroot"),
        "{}",
        froms[1]
    );
    assert!(
        text.contains("cargo build")
            && text.contains("--locked")
            && text.contains("--bin claim-ledger"),
        "a locked build of the binary"
    );
    assert!(lines.contains(&"USER 65532:65532"), "runs as uid/gid 65532");
    let entrypoint = lines
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec form, no shell");
    assert_eq!(entrypoint[1], "serve");
    let known = serve_flags();
    for flag in parse_flags(&entrypoint[2..]).keys() {
        assert!(known.contains(flag), "--{flag} is not a flag of serve");
    }
}

/// Every Role and ClusterRole: read verbs only, no wildcard, no resourceNames; every
/// binding refers to a rendered role.
fn check_rbac_static(r: &Rendered) {
    let overlay = &r.overlay;
    for role in r
        .of_kind("Role")
        .into_iter()
        .chain(r.of_kind("ClusterRole"))
    {
        let name = format!("{} {}", role["kind"], role["metadata"]["name"]);
        for rule in role["rules"].as_array().expect("rules") {
            let verbs = strings(&rule["verbs"]);
            assert!(!verbs.is_empty(), "{overlay}: {name}: a rule without verbs");
            for verb in &verbs {
                assert!(
                    READ_VERBS.contains(&verb.as_str()),
                    "{overlay}: {name} grants {verb:?}: only get, list and watch are allowed"
                );
            }
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for value in strings(&rule[field]) {
                    assert!(
                        !value.contains('*'),
                        "{overlay}: {name}: wildcard {value:?} in {field}"
                    );
                }
            }
            assert!(
                rule["resourceNames"].is_null(),
                "{overlay}: {name}: resourceNames"
            );
            for url in strings(&rule["nonResourceURLs"]) {
                assert!(
                    role["kind"] == "ClusterRole",
                    "{overlay}: {name}: URLs in a Role"
                );
                assert!(url.starts_with('/'), "{overlay}: {name}: URL {url:?}");
                let star = url.find('*');
                assert!(
                    star.is_none() || (url.ends_with("/*") && star == Some(url.len() - 1)),
                    "{overlay}: {name}: {url:?}: only a trailing /* prefix match"
                );
                assert_ne!(url, "/*", "{overlay}: {name}: every URL");
                assert!(
                    verbs.iter().all(|v| v == "get"),
                    "{overlay}: {name}: URLs are read"
                );
            }
        }
    }
    for binding in r
        .of_kind("RoleBinding")
        .into_iter()
        .chain(r.of_kind("ClusterRoleBinding"))
    {
        let target = &binding["roleRef"];
        let found = r.objects.iter().any(|o| {
            o["kind"] == target["kind"]
                && o["metadata"]["name"] == target["name"]
                && (o["kind"] == "ClusterRole"
                    || o["metadata"]["namespace"] == binding["metadata"]["namespace"])
        });
        assert!(
            found,
            "{overlay}: {binding} refers to a role that is not rendered"
        );
    }
    let watched = r.namespaces();
    if watched.is_empty() {
        assert!(
            !r.of_kind("ClusterRole").is_empty() && !r.of_kind("ClusterRoleBinding").is_empty(),
            "{overlay}: watching every namespace needs a ClusterRole"
        );
    } else {
        assert!(
            r.of_kind("ClusterRole").is_empty() && r.of_kind("ClusterRoleBinding").is_empty(),
            "{overlay}: with --namespace, no cluster-scoped RBAC"
        );
        let role_namespaces: BTreeSet<String> = r
            .of_kind("Role")
            .iter()
            .map(|role| text(&role["metadata"]["namespace"]).to_string())
            .collect();
        assert_eq!(
            role_namespaces,
            watched.iter().cloned().collect::<BTreeSet<_>>(),
            "{overlay}: one Role per --namespace, and no other"
        );
    }
}

// ----- the RBAC model -----

/// What the Kubernetes authorizer sees of one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Resource {
        verb: String,
        group: String,
        /// `resource` or `resource/subresource`.
        resource: String,
        namespace: Option<String>,
        name: Option<String>,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

/// The request attributes, as the API server's request-info resolver derives them
/// (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go).
fn access_of(request: &RecordedRequest) -> Access {
    let method_verb = match request.method.as_str() {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => panic!("unexpected method {other}: {request:?}"),
    };
    let non_resource = || Access::NonResource {
        verb: method_verb.to_ascii_lowercase(),
        path: request.path.clone(),
    };
    let parts: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() < 3 {
        return non_resource();
    }
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[2..]),
        "apis" if parts.len() >= 4 => (parts[1], &parts[3..]),
        _ => return non_resource(),
    };
    // `/namespaces/NS/RESOURCE...` is in namespace NS; `/namespaces/NS` (and its status
    // and finalize subresources) is the namespace object NS itself, also "in" NS.
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, next, ..] if !matches!(*next, "status" | "finalize") => {
            (Some(ns.to_string()), &rest[2..])
        }
        ["namespaces", ns, ..] => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let resource = match rest {
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => resource.to_string(),
        [] => unreachable!("at least the resource"),
    };
    let mut name = rest.get(1).map(|n| n.to_string());
    let mut verb = method_verb.to_string();
    if name.is_none() && verb == "get" {
        let watch = request
            .query_param("watch")
            .is_some_and(|w| matches!(w.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
        verb = if watch { "watch" } else { "list" }.into();
        if let Some(selector) = request.query_param("fieldSelector") {
            name = selector
                .split(',')
                .find_map(|term| term.strip_prefix("metadata.name="))
                .map(str::to_string);
        }
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection".into();
    }
    Access::Resource {
        verb,
        group: group.to_string(),
        resource,
        namespace,
        name,
    }
}

/// One grant: a verb on a group's resource (in one namespace, or in all for a
/// ClusterRole bound cluster-wide), or a verb on a non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Resource {
        scope: Option<String>,
        verb: String,
        group: String,
        resource: String,
    },
    Url {
        verb: String,
        url: String,
    },
}

impl Item {
    fn allows(&self, access: &Access) -> bool {
        match (self, access) {
            (
                Item::Resource {
                    scope,
                    verb,
                    group,
                    resource,
                },
                Access::Resource {
                    verb: v,
                    group: g,
                    resource: res,
                    namespace,
                    ..
                },
            ) => {
                verb == v
                    && group == g
                    && resource == res
                    && scope
                        .as_ref()
                        .is_none_or(|ns| namespace.as_ref() == Some(ns))
            }
            (Item::Url { verb, url }, Access::NonResource { verb: v, path }) => {
                verb == v
                    && match url.strip_suffix('*') {
                        Some(prefix) => path.starts_with(prefix),
                        None => url == path,
                    }
            }
            _ => false,
        }
    }
}

/// One rule of a role, as bound to serve's ServiceAccount.
#[derive(Debug, Clone)]
struct Rule {
    origin: String,
    items: Vec<Item>,
}

/// The rules bound to the workload's ServiceAccount, flattened to items.
fn granted_rules(r: &Rendered) -> Vec<Rule> {
    let account = text(&r.pod_spec()["serviceAccountName"]).to_string();
    let home = r.namespace();
    let mut rules = Vec::new();
    let bindings = r
        .of_kind("RoleBinding")
        .into_iter()
        .chain(r.of_kind("ClusterRoleBinding"));
    for binding in bindings {
        let ours = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == home
            });
        if !ours {
            continue;
        }
        let scope = (binding["kind"] == "RoleBinding")
            .then(|| text(&binding["metadata"]["namespace"]).to_string());
        let target = &binding["roleRef"];
        let role = r
            .objects
            .iter()
            .find(|o| {
                o["kind"] == target["kind"]
                    && o["metadata"]["name"] == target["name"]
                    && (o["kind"] == "ClusterRole"
                        || o["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: {} {} refers to {target}, which is not rendered",
                    r.overlay, binding["kind"], binding["metadata"]["name"]
                )
            });
        for (index, rule) in role["rules"].as_array().expect("rules").iter().enumerate() {
            let mut items = Vec::new();
            for verb in strings(&rule["verbs"]) {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        items.push(Item::Resource {
                            scope: scope.clone(),
                            verb: verb.clone(),
                            group: group.clone(),
                            resource,
                        });
                    }
                }
                // Non-resource URLs only count in a ClusterRole bound cluster-wide.
                if scope.is_none() {
                    for url in strings(&rule["nonResourceURLs"]) {
                        items.push(Item::Url {
                            verb: verb.clone(),
                            url,
                        });
                    }
                }
            }
            rules.push(Rule {
                origin: format!(
                    "{} {}/{} rule {index} (via {} {})",
                    role["kind"],
                    text(&role["metadata"]["namespace"]),
                    text(&role["metadata"]["name"]),
                    binding["kind"],
                    text(&binding["metadata"]["name"])
                ),
                items,
            });
        }
    }
    assert!(
        !rules.is_empty(),
        "{}: nothing is bound to {account}",
        r.overlay
    );
    rules
}

/// Whether `access` is allowed by `items` or by the cluster's default grants.
fn allowed(items: &[&Item], defaults: &[Item], access: &Access) -> bool {
    items.iter().any(|item| item.allows(access)) || defaults.iter().any(|d| d.allows(access))
}

/// The requests of `accesses` the items (plus defaults) do not allow.
fn denied<'a>(items: &[&Item], defaults: &[Item], accesses: &'a [Access]) -> Vec<&'a Access> {
    accesses
        .iter()
        .filter(|access| !allowed(items, defaults, access))
        .collect()
}

/// Every request allowed, every rule and item used, and none removable.
fn check_rbac_against(r: &Rendered, accesses: &[Access], defaults: &[Item]) {
    let overlay = &r.overlay;
    let rules = granted_rules(r);
    let all: Vec<&Item> = rules.iter().flat_map(|rule| &rule.items).collect();

    let refused = denied(&all, defaults, accesses);
    assert!(
        refused.is_empty(),
        "{overlay}: serve made requests its RBAC does not allow: {refused:#?}"
    );

    // The model denies what is not granted (so the checks below can fail).
    let forbidden = [
        Access::Resource {
            verb: "get".into(),
            group: String::new(),
            resource: "secrets".into(),
            namespace: Some("default".into()),
            name: None,
        },
        Access::Resource {
            verb: "create".into(),
            group: String::new(),
            resource: "pods".into(),
            namespace: r.namespaces().first().cloned(),
            name: None,
        },
    ];
    for access in &forbidden {
        assert!(
            !allowed(&all, defaults, access),
            "{overlay}: allows {access:?}"
        );
    }

    for rule in &rules {
        assert!(
            accesses
                .iter()
                .any(|a| rule.items.iter().any(|item| item.allows(a))),
            "{overlay}: {} is never used by serve",
            rule.origin
        );
        for item in &rule.items {
            assert!(
                accesses.iter().any(|a| item.allows(a)),
                "{overlay}: {} grants {item:?}, which serve never uses",
                rule.origin
            );
        }
    }

    // Mutations: without any one rule, or any one item, some request is denied.
    for (index, rule) in rules.iter().enumerate() {
        let without: Vec<&Item> = rules
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .flat_map(|(_, rule)| &rule.items)
            .collect();
        assert!(
            !denied(&without, defaults, accesses).is_empty(),
            "{overlay}: removing {} denies nothing: it is not needed",
            rule.origin
        );
    }
    for (index, removed) in all.iter().enumerate() {
        let without: Vec<&Item> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, item)| *item)
            .collect();
        assert!(
            !denied(&without, defaults, accesses).is_empty(),
            "{overlay}: removing {removed:?} denies nothing: it is not needed"
        );
    }
}

// ----- (b) serve against the simulator -----

/// What one run of `serve` did.
struct Observed {
    requests: Vec<RecordedRequest>,
    metrics: String,
}

fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
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

fn get(api: &str, path: &str) -> (u16, String) {
    process::http(
        api,
        "GET",
        path,
        Some(&format!("Bearer {TOKEN}")),
        None,
        PATIENCE,
    )
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}

fn wait_ready(api: &str) {
    poll("/readyz", || {
        let (status, body) = get(api, "/readyz");
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
}

/// Runs `serve` with the arguments of the overlay's StatefulSet (paths moved to a
/// temporary directory) against a simulator serving `served`, until it is ready, has
/// recorded a warm pool and a bound claim, and has relisted after an API server restart.
fn observe(r: &Rendered, served: Served) -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime
        .block_on(Simulator::start_local(SimConfig {
            served,
            ..SimConfig::default()
        }))
        .unwrap();
    let sim = cluster.simulator().clone();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let key = dir.path().join("signing");
    process::ok(
        &[
            "keygen",
            "--name",
            "deploy-test.example/ledger",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );

    // The manifest's arguments, with the paths and the address of this test.
    let mut args = Vec::new();
    let mut seen = BTreeSet::new();
    let args_in = r.args();
    for (name, values) in parse_flags(&args_in[1..]) {
        for value in values {
            let value = match name.as_str() {
                "listen" => "127.0.0.1:0".to_string(),
                "db" => dir.path().join("ledger").to_str().unwrap().to_string(),
                "api-token-file" => tokens.to_str().unwrap().to_string(),
                "signing-key" => key.with_extension("key").to_str().unwrap().to_string(),
                _ => value,
            };
            seen.insert(name.clone());
            args.push(if value.is_empty() {
                format!("--{name}")
            } else {
                format!("--{name}={value}")
            });
        }
    }
    for needed in ["listen", "db", "api-token-file", "signing-key"] {
        assert!(seen.contains(needed), "{}: no --{needed}", r.overlay);
    }
    let mut full = vec!["serve".to_string()];
    full.extend(args);
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let mut serve_command = command(&full);
    // The manifest's arguments are the whole configuration: no CLAIM_LEDGER_* variable
    // of the test's environment may add to them.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLAIM_LEDGER_") {
            serve_command.env_remove(name);
        }
    }
    let mut serve = Child::start(
        serve_command
            .stdin(Stdio::null())
            .env("KUBECONFIG", &kubeconfig)
            // The restart below makes every watch fail once: expected, not worth a warning.
            .env("RUST_LOG", "error"),
    );
    let api = serve.address("listening on");
    wait_ready(&api);

    // Objects to record, in the first watched namespace.
    let namespace = r
        .namespaces()
        .first()
        .cloned()
        .unwrap_or_else(|| "default".into());
    sim.create_pool(&namespace, "pool", 1, "tmpl", true)
        .unwrap();
    sim.claim_warm(&namespace, "claim", "pool", Some("sbx-deploy"))
        .unwrap();
    poll("the pool and the claim in the ledger", || {
        let (status, body) = get(&api, "/v1/head");
        let head: Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && head["seq"].as_u64().unwrap_or(0) >= 5 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
    // A denied check in a watched namespace, so the checks counter has a sample to scrape.
    let check = format!(
        r#"{{"namespace":"{namespace}","pod_name":"nobody","pod_uid":"00000000-dead-4000-8000-000000000000"}}"#
    );
    let (status, _) = process::http(
        &api,
        "POST",
        "/v1/identity/check",
        Some(&format!("Bearer {TOKEN}")),
        Some(&check),
        PATIENCE,
    );
    assert_eq!(status, 200);

    // An API server restart: every watch ends, every stream relists.
    sim.restart();
    poll("a relist after the restart", || {
        let (_, metrics) = get(&api, "/metrics");
        match metric(&metrics, "claim_ledger_relists_total") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("relists {other:?}")),
        }
    });
    wait_ready(&api);
    let (status, metrics) = get(&api, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "claim_ledger_ready"),
        Some(1.0),
        "{metrics}"
    );

    let exit = serve.interrupt_and_wait();
    assert!(exit.success(), "serve stopped with {exit:?}");
    let requests = sim.requests();
    runtime.block_on(cluster.stop()).unwrap();
    assert!(!requests.is_empty());
    Observed { requests, metrics }
}

/// Both discovery outcomes: v1beta1 preferred (agent-sandbox v0.5) and v1alpha1 only
/// (v0.4).
fn accesses_of(r: &Rendered) -> (Vec<Access>, Vec<Observed>) {
    let runs = vec![observe(r, Served::Both), observe(r, Served::V1alpha1Only)];
    let accesses: BTreeSet<Access> = runs
        .iter()
        .flat_map(|run| run.requests.iter().map(access_of))
        .collect();
    // Not vacuous: both versions were discovered and every resource listed and watched.
    let paths: BTreeSet<&str> = runs
        .iter()
        .flat_map(|run| run.requests.iter().map(|q| q.path.as_str()))
        .collect();
    for version in ["v1beta1", "v1alpha1"] {
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("/apis/agents.x-k8s.io/")
                    && p.contains(&format!("/{version}/"))),
            "{}: no {version} request: {paths:?}",
            r.overlay
        );
    }
    (accesses.into_iter().collect(), runs)
}

#[test]
fn single_node_rbac_allows_exactly_what_serve_does() {
    let r = render("single-node");
    assert!(
        r.namespaces().is_empty(),
        "single-node watches every namespace"
    );
    let (accesses, runs) = accesses_of(&r);
    // No default discovery grant: the ClusterRole must carry its own.
    check_rbac_against(&r, &accesses, &[]);
    // Every request is cluster-wide.
    for access in &accesses {
        if let Access::Resource { namespace, .. } = access {
            assert_eq!(namespace, &None, "{access:?}");
        }
    }
    check_alert_metrics(&r, &runs[0].metrics);
}

#[test]
fn namespaced_rbac_allows_exactly_what_serve_does() {
    let r = render("namespaced");
    let watched = r.namespaces();
    assert!(!watched.is_empty(), "namespaced passes --namespace");
    let (accesses, runs) = accesses_of(&r);
    let defaults: Vec<Item> = DEFAULT_DISCOVERY
        .iter()
        .map(|url| Item::Url {
            verb: "get".into(),
            url: url.to_string(),
        })
        .collect();
    check_rbac_against(&r, &accesses, &defaults);
    for access in &accesses {
        if let Access::Resource { namespace, .. } = access {
            assert!(
                namespace.as_ref().is_some_and(|ns| watched.contains(ns)),
                "a request outside the watched namespaces: {access:?}"
            );
        }
    }
    check_alert_metrics(&r, &runs[0].metrics);
}

/// A `serve` of the replicated overlay: the process and its API address.
struct Replica {
    process: Child,
    api: String,
}

/// Whether a replica answers `/readyz` with 200 in `role`, else why not: every replica's
/// report names its role, `"follower"` or `"writer"`.
fn ready_as(api: &str, role: &str) -> Result<(), String> {
    let (status, body) = get(api, "/readyz");
    let readyz: Value = serde_json::from_str(&body).unwrap_or_default();
    let actual = readyz["watchers"]["report"]["role"]
        .as_str()
        .unwrap_or("unknown");
    if status == 200 && actual == role {
        Ok(())
    } else {
        Err(format!("{status} as {actual}: {body}"))
    }
}

/// What the two replicas did: every request they made, and a scrape of each.
struct ObservedReplicas {
    requests: Vec<RecordedRequest>,
    writer_metrics: String,
    follower_metrics: String,
}

/// Runs two replicas of the replicated overlay's Deployment, with its very arguments
/// (the database URL variable expanded to a real PostgreSQL server's, the password file,
/// token file and key moved to a temporary directory, the address this test's), against
/// the simulator: the first becomes the writer, the second a follower that applies the
/// writer's entries and answers checks; then the writer is killed and the follower takes
/// over, discovering, listing and watching the cluster itself.
fn observe_replicas(r: &Rendered) -> ObservedReplicas {
    let url_variable = db_url_variable(r);
    let pg = postgres::Postgres::start();
    pg.create_database("ledger");
    let url = pg.url("ledger");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime
        .block_on(Simulator::start_local(SimConfig {
            served: Served::Both,
            ..SimConfig::default()
        }))
        .unwrap();
    let sim = cluster.simulator().clone();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let key = dir.path().join("signing");
    process::ok(
        &[
            "keygen",
            "--name",
            "deploy-test.example/ledger",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    // The Secret's password file as the kubelet would leave it for the owner: 0400.
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{}\n", postgres::PASSWORD)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o400)).unwrap();
    }

    let mut args = vec!["serve".to_string()];
    let mut seen = BTreeSet::new();
    let args_in = r.args();
    for (name, values) in parse_flags(&args_in[1..]) {
        for value in values {
            let value = match name.as_str() {
                "listen" => "127.0.0.1:0".to_string(),
                "db" => {
                    assert_eq!(value, format!("$({url_variable})"));
                    url.clone()
                }
                "db-password-file" => password.to_str().unwrap().to_string(),
                "api-token-file" => tokens.to_str().unwrap().to_string(),
                "signing-key" => key.with_extension("key").to_str().unwrap().to_string(),
                _ => value,
            };
            seen.insert(name.clone());
            args.push(if value.is_empty() {
                format!("--{name}")
            } else {
                format!("--{name}={value}")
            });
        }
    }
    for needed in [
        "listen",
        "db",
        "db-password-file",
        "replica",
        "api-token-file",
        "signing-key",
    ] {
        assert!(seen.contains(needed), "{}: no --{needed}", r.overlay);
    }
    let start = || {
        let full: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut serve_command = command(&full);
        // The manifest's arguments are the whole configuration, and the password comes
        // from the file: no CLAIM_LEDGER_* variable, PGPASSWORD or .pgpass of the test's
        // environment may add to them.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CLAIM_LEDGER_") {
                serve_command.env_remove(name);
            }
        }
        let mut process = Child::start(
            serve_command
                .stdin(Stdio::null())
                .env_remove("PGPASSWORD")
                .env_remove("PGPASSFILE")
                .env("HOME", "/nonexistent")
                .env("KUBECONFIG", &kubeconfig)
                // A follower fails to sign a checkpoint every second (only the writer
                // appends): expected here, not worth the noise.
                .env("RUST_LOG", "error,api::service=off"),
        );
        let api = process.address("listening on");
        Replica { process, api }
    };

    let mut writer = start();
    poll("the first replica to be the ready writer", || {
        ready_as(&writer.api, "writer")
    });
    let mut follower = start();
    poll("the second replica to be a ready follower", || {
        ready_as(&follower.api, "follower")
    });

    // Objects the writer records and the follower applies.
    sim.create_pool("default", "pool", 1, "tmpl", true).unwrap();
    sim.claim_warm("default", "claim", "pool", Some("sbx-deploy"))
        .unwrap();
    let head = |api: &str| {
        let (status, body) = get(api, "/v1/head");
        let head: Value = serde_json::from_str(&body).unwrap_or_default();
        (status == 200)
            .then(|| head["seq"].as_u64())
            .flatten()
            .ok_or(format!("{status} {body}"))
    };
    let recorded = poll("the pool and the claim in the writer's ledger", || {
        head(&writer.api).and_then(|seq| {
            if seq >= 5 {
                Ok(seq)
            } else {
                Err(format!("seq {seq}"))
            }
        })
    });
    poll("the follower to apply the writer's entries", || {
        head(&follower.api).and_then(|seq| {
            if seq >= recorded {
                Ok(())
            } else {
                Err(format!("seq {seq} < {recorded}"))
            }
        })
    });
    // A follower answers checks: a denied one, so the checks counter has a sample.
    let check = r#"{"namespace":"default","pod_name":"nobody","pod_uid":"00000000-dead-4000-8000-000000000000"}"#;
    for api in [&writer.api, &follower.api] {
        let (status, body) = process::http(
            api,
            "POST",
            "/v1/identity/check",
            Some(&format!("Bearer {TOKEN}")),
            Some(check),
            PATIENCE,
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""decision":"deny""#), "{body}");
    }

    // Only the writer signs: the replicated alert rules tell it from the followers by a
    // signed tree size above 0.
    let writer_metrics = poll("the writer to sign a checkpoint", || {
        let (_, metrics) = get(&writer.api, "/metrics");
        match metric(&metrics, "claim_ledger_checkpoint_tree_size") {
            Some(size) if size > 0.0 => Ok(metrics),
            other => Err(format!("checkpoint_tree_size {other:?}")),
        }
    });
    let (status, follower_metrics) = get(&follower.api, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&follower_metrics, "claim_ledger_checkpoint_tree_size"),
        Some(0.0),
        "a follower signs nothing"
    );
    assert_eq!(
        metric(&follower_metrics, "claim_ledger_ready"),
        Some(1.0),
        "{follower_metrics}"
    );

    // The writer dies; the follower takes over and watches the cluster itself.
    let _ = writer.process.child.kill();
    let _ = writer.process.child.wait();
    let before = sim.requests().len();
    poll("the follower to become the ready writer", || {
        ready_as(&follower.api, "writer")
    });
    let takeover: BTreeSet<Access> = sim.requests()[before..].iter().map(access_of).collect();
    assert!(
        takeover.contains(&Access::NonResource {
            verb: "get".into(),
            path: "/apis".into()
        }),
        "the new writer discovers the API groups: {takeover:#?}"
    );
    for (group, resource) in [
        ("agents.x-k8s.io", "sandboxes"),
        ("extensions.agents.x-k8s.io", "sandboxclaims"),
        ("", "pods"),
        ("", "persistentvolumeclaims"),
    ] {
        assert!(
            takeover.iter().any(
                |a| matches!(a, Access::Resource { verb, group: g, resource: res, .. }
                if verb == "list" && g == group && res == resource)
            ),
            "the new writer lists {resource}: {takeover:#?}"
        );
    }

    let exit = follower.process.interrupt_and_wait();
    assert!(exit.success(), "serve stopped with {exit:?}");
    let requests = sim.requests();
    runtime.block_on(cluster.stop()).unwrap();
    drop(pg);
    ObservedReplicas {
        requests,
        writer_metrics,
        follower_metrics,
    }
}

#[test]
fn replicated_rbac_allows_exactly_what_serve_does() {
    let r = render("replicated");
    assert!(
        r.namespaces().is_empty(),
        "replicated watches every namespace"
    );
    let observed = observe_replicas(&r);
    let accesses: Vec<Access> = observed
        .requests
        .iter()
        .map(access_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    check_rbac_against(&r, &accesses, &[]);
    for access in &accesses {
        if let Access::Resource { namespace, .. } = access {
            assert_eq!(namespace, &None, "{access:?}");
        }
    }
    check_alert_metrics(&r, &observed.writer_metrics);
    check_alert_metrics(&r, &observed.follower_metrics);
}

// ----- (c) the alerts' metric names -----

/// The metric names of a scrape's samples.
fn sample_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The `claim_ledger_*` identifiers in a PromQL expression.
fn claim_ledger_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("claim_ledger_") {
        let before = rest[..start].chars().next_back();
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn check_alert_metrics(r: &Rendered, metrics: &str) {
    let scraped = sample_names(metrics);
    let rules = r.one("PrometheusRule");
    let mut used = BTreeSet::new();
    for group in rules["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            for name in claim_ledger_names(text(&rule["expr"])) {
                assert!(
                    scraped.contains(&name),
                    "{}: alert {} uses {name}, which /metrics does not export: {scraped:?}",
                    r.overlay,
                    rule["alert"]
                );
                used.insert(name);
            }
        }
    }
    for expected in [
        "claim_ledger_ready",
        "claim_ledger_watch_errors_total",
        "claim_ledger_checkpoints_signed_total",
        "claim_ledger_checks_total",
    ] {
        assert!(
            used.contains(expected),
            "{}: no alert on {expected}",
            r.overlay
        );
    }
}

#[test]
fn the_request_model_follows_the_api_servers_request_info() {
    let request = |method: &str, path: &str, query: &str| RecordedRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        accept: String::new(),
    };
    let resource =
        |verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>| {
            Access::Resource {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                namespace: ns.map(str::to_string),
                name: name.map(str::to_string),
            }
        };
    let url = |verb: &str, path: &str| Access::NonResource {
        verb: verb.into(),
        path: path.into(),
    };
    let cases = [
        (request("GET", "/apis", ""), url("get", "/apis")),
        (request("GET", "/api/v1", ""), url("get", "/api/v1")),
        (
            request("GET", "/apis/agents.x-k8s.io/v1beta1", ""),
            url("get", "/apis/agents.x-k8s.io/v1beta1"),
        ),
        (
            request("GET", "/api/v1/pods", "limit=500"),
            resource("list", "", "pods", None, None),
        ),
        (
            request("GET", "/api/v1/pods", "watch=true&resourceVersion=5"),
            resource("watch", "", "pods", None, None),
        ),
        (
            request(
                "GET",
                "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/a/sandboxclaims",
                "watch=1",
            ),
            resource(
                "watch",
                "extensions.agents.x-k8s.io",
                "sandboxclaims",
                Some("a"),
                None,
            ),
        ),
        (
            request("GET", "/api/v1/namespaces/a/pods/p", ""),
            resource("get", "", "pods", Some("a"), Some("p")),
        ),
        (
            request(
                "GET",
                "/api/v1/namespaces/a/pods",
                "fieldSelector=metadata.name%3Dp",
            ),
            resource("list", "", "pods", Some("a"), Some("p")),
        ),
        (
            request(
                "PUT",
                "/apis/agents.x-k8s.io/v1beta1/namespaces/a/sandboxes/s/status",
                "",
            ),
            resource(
                "update",
                "agents.x-k8s.io",
                "sandboxes/status",
                Some("a"),
                Some("s"),
            ),
        ),
        (
            request("DELETE", "/api/v1/namespaces/a/pods", ""),
            resource("deletecollection", "", "pods", Some("a"), None),
        ),
        (
            request("GET", "/api/v1/namespaces", ""),
            resource("list", "", "namespaces", None, None),
        ),
        (
            request("GET", "/api/v1/namespaces/a", ""),
            resource("get", "", "namespaces", Some("a"), Some("a")),
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(access_of(&request), expected, "{request:?}");
    }
    let prefix = Item::Url {
        verb: "get".into(),
        url: "/apis/*".into(),
    };
    assert!(prefix.allows(&url("get", "/apis/agents.x-k8s.io")));
    assert!(!prefix.allows(&url("get", "/apis")));
    assert!(!prefix.allows(&url("get", "/api/v1")));
    let scoped = Item::Resource {
        scope: Some("a".into()),
        verb: "list".into(),
        group: String::new(),
        resource: "pods".into(),
    };
    assert!(scoped.allows(&resource("list", "", "pods", Some("a"), None)));
    assert!(!scoped.allows(&resource("list", "", "pods", Some("b"), None)));
    assert!(!scoped.allows(&resource("list", "", "pods", None, None)));
    assert!(!scoped.allows(&resource("watch", "", "pods", Some("a"), None)));
}
