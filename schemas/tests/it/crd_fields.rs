//! Schema conformance of the normalizer against the agent-sandbox CRDs.
//!
//! `schemas/src/resources.rs` reads a handful of fields from `Sandbox` and `SandboxClaim`
//! objects, listed per version in `SANDBOX_PATHS`, `CLAIM_V1ALPHA1_PATHS` and
//! `CLAIM_V1BETA1_PATHS`. This test parses the CRDs of agent-sandbox v0.4.6
//! (`tests/data/crds/`, serves `v1alpha1`) and v0.5.6 (`tests/data/crds/v0.5/`, serves
//! `v1beta1` and `v1alpha1`), and checks that:
//!
//! * every served version is one the normalizer reads, and every path it reads exists in
//!   that version's `openAPIV3Schema` with the JSON type the Rust type expects;
//! * the claim's `shutdownPolicy` enum is the one `docs/DOMAIN.md` names;
//! * every `spec` field of a served version is either read or listed here as deliberately
//!   not read, so a new CRD field is noticed;
//! * the upstream example objects in `tests/data/crds/examples/` normalize to the fields their
//!   YAML states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use schemas::resources::{CLAIM_V1ALPHA1_PATHS, CLAIM_V1BETA1_PATHS, SANDBOX_PATHS};
use schemas::{normalize, ChangeKind, KindFields, ObjectKind, Text, WatchEventType};
use serde_json::Value;

/// The repository's test data (the CRDs and examples are in `crds/`; see its SOURCE.md).
const TEST_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data");
/// The domain document, which names the `shutdownPolicy` values.
const DOMAIN_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DOMAIN.md");

/// The agent-sandbox releases whose CRDs are checked: (release, directory under tests/data/).
const RELEASES: [(&str, &str); 2] = [("v0.4.6", "crds"), ("v0.5.6", "crds/v0.5")];
const SANDBOX_CRD: &str = "agents.x-k8s.io_sandboxes.yaml";
const CLAIM_CRD: &str = "extensions.agents.x-k8s.io_sandboxclaims.yaml";

fn test_data(path: &str) -> PathBuf {
    Path::new(TEST_DATA).join(path)
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the CRDs live in the repository, under tests/data/crds/): {e}",
            path.display()
        )
    });
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// One served version of one CRD.
struct Served {
    release: &'static str,
    kind: String,
    version: String,
    schema: Value,
}

impl Served {
    fn what(&self) -> String {
        format!("{} {} {}", self.release, self.kind, self.version)
    }
}

/// Every served version of the Sandbox and SandboxClaim CRDs of every release.
fn served_versions() -> Vec<Served> {
    let mut out = Vec::new();
    for (release, dir) in RELEASES {
        for file in [SANDBOX_CRD, CLAIM_CRD] {
            let crd = read_yaml(&test_data(&format!("{dir}/{file}")));
            assert_eq!(crd["kind"], "CustomResourceDefinition", "{release} {file}");
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
            let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
            for version in versions {
                if version["served"] != Value::Bool(true) {
                    continue;
                }
                out.push(Served {
                    release,
                    kind: kind.clone(),
                    version: version["name"].as_str().unwrap().to_string(),
                    schema: version["schema"]["openAPIV3Schema"].clone(),
                });
            }
        }
    }
    out
}

/// The paths the normalizer reads for a kind and version, if it reads that version.
fn paths_read(kind: &str, version: &str) -> Option<&'static [&'static str]> {
    match (kind, version) {
        ("Sandbox", "v1alpha1" | "v1beta1") => Some(SANDBOX_PATHS),
        ("SandboxClaim", "v1alpha1") => Some(CLAIM_V1ALPHA1_PATHS),
        ("SandboxClaim", "v1beta1") => Some(CLAIM_V1BETA1_PATHS),
        _ => None,
    }
}

/// Walks a dotted path through `properties`, and `items.properties` for arrays. Returns
/// the schema node of each segment.
fn walk<'a>(schema: &'a Value, path: &str) -> Result<Vec<&'a Value>, String> {
    let mut node = schema;
    let mut nodes = Vec::new();
    let mut so_far = String::new();
    for segment in path.split('.') {
        let properties = if node["type"] == "array" {
            &node["items"]["properties"]
        } else {
            &node["properties"]
        };
        node = properties.get(segment).ok_or_else(|| {
            let known: Vec<&String> = properties
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            format!("no `{segment}` under `{so_far}` (it has {known:?})")
        })?;
        nodes.push(node);
        if !so_far.is_empty() {
            so_far.push('.');
        }
        so_far.push_str(segment);
    }
    Ok(nodes)
}

/// The JSON type the Rust field at this path deserializes from (see resources.rs).
fn expected_type(path: &str) -> &'static str {
    match path {
        "spec.volumeClaimTemplates" | "status.conditions" => "array",
        _ => "string",
    }
}

#[test]
fn every_served_version_is_one_the_normalizer_reads() {
    let served = served_versions();
    let seen: BTreeSet<(String, String, String)> = served
        .iter()
        .map(|s| (s.release.to_string(), s.kind.clone(), s.version.clone()))
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("v0.4.6", "Sandbox", "v1alpha1"),
        ("v0.4.6", "SandboxClaim", "v1alpha1"),
        ("v0.5.6", "Sandbox", "v1alpha1"),
        ("v0.5.6", "Sandbox", "v1beta1"),
        ("v0.5.6", "SandboxClaim", "v1alpha1"),
        ("v0.5.6", "SandboxClaim", "v1beta1"),
    ]
    .iter()
    .map(|(r, k, v)| (r.to_string(), k.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen, expected);
    for s in &served {
        assert!(
            paths_read(&s.kind, &s.version).is_some(),
            "{} is served but the normalizer has no paths for it",
            s.what()
        );
    }
}

#[test]
fn every_path_the_normalizer_reads_exists_in_each_served_schema() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for s in served_versions() {
        let paths = paths_read(&s.kind, &s.version).unwrap_or_default();
        for path in paths {
            checked += 1;
            match walk(&s.schema, path) {
                Err(e) => failures.push(format!("{}: {path}: {e}", s.what())),
                Ok(nodes) => {
                    let (leaf, parents) = nodes.split_last().unwrap();
                    let want = expected_type(path);
                    if leaf["type"] != want {
                        failures.push(format!(
                            "{}: {path} has type {} but the normalizer reads a {want}",
                            s.what(),
                            leaf["type"]
                        ));
                    }
                    // Everything above the leaf is deserialized as a struct.
                    for parent in parents {
                        if parent["type"] != "object" {
                            failures.push(format!(
                                "{}: a parent of {path} has type {}, not object",
                                s.what(),
                                parent["type"]
                            ));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 3 + 2 * 6 + 5, "paths checked");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The walk is not vacuous: the v1alpha1 claim fields are absent from v1beta1, and the
/// reverse, which is why each version has its own path list.
#[test]
fn the_claim_versions_differ_where_the_path_lists_differ() {
    for s in served_versions() {
        if s.kind != "SandboxClaim" {
            continue;
        }
        let (present, absent) = if s.version == "v1beta1" {
            (CLAIM_V1BETA1_PATHS, CLAIM_V1ALPHA1_PATHS)
        } else {
            (CLAIM_V1ALPHA1_PATHS, CLAIM_V1BETA1_PATHS)
        };
        for path in absent.iter().filter(|p| !present.contains(p)) {
            assert!(
                walk(&s.schema, path).is_err(),
                "{}: {path} exists, but the normalizer does not read it there",
                s.what()
            );
        }
    }
}

/// Fields the normalizer reads inside array elements, which the path constants stop short of.
#[test]
fn fields_read_inside_arrays_exist() {
    let mut failures = Vec::new();
    for s in served_versions() {
        let nested: &[&str] = match s.kind.as_str() {
            "Sandbox" => &["spec.volumeClaimTemplates.metadata.name"],
            _ => &[
                "status.conditions.type",
                "status.conditions.status",
                "status.conditions.reason",
            ],
        };
        for path in nested {
            match walk(&s.schema, path) {
                Ok(nodes) if nodes.last().unwrap()["type"] == "string" => {}
                Ok(_) => failures.push(format!("{}: {path} is not a string", s.what())),
                Err(e) => failures.push(format!("{}: {path}: {e}", s.what())),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The shutdownPolicy names and default of DOMAIN.md §1, read from the document itself.
fn domain_shutdown_policies() -> (BTreeSet<String>, String) {
    let text = std::fs::read_to_string(DOMAIN_MD)
        .unwrap_or_else(|e| panic!("cannot read {DOMAIN_MD}: {e}"));
    let marker = "`spec.lifecycle.shutdownPolicy` (";
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("DOMAIN.md no longer lists {marker}…)"))
        + marker.len();
    let inside = &text[start..start + text[start..].find(')').unwrap()];
    let (names, default) = inside
        .split_once(';')
        .expect("DOMAIN.md: `(names; default X)`");
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let names: BTreeSet<String> = ticked(names).into_iter().collect();
    let default = ticked(default).pop().expect("a default");
    (names, default)
}

fn string_set(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn claim_shutdown_policies_are_the_ones_domain_md_names() {
    let (names, default) = domain_shutdown_policies();
    let expected: BTreeSet<String> = ["Delete", "DeleteForeground", "Retain"]
        .map(String::from)
        .into();
    assert_eq!(names, expected, "DOMAIN.md §1 changed its list");
    let mut failures = Vec::new();
    for s in served_versions() {
        let (path, must_equal) = match s.kind.as_str() {
            "SandboxClaim" => ("spec.lifecycle.shutdownPolicy", true),
            // A Sandbox's own policy allows only Delete and Retain: a subset.
            _ => ("spec.shutdownPolicy", false),
        };
        let node = *walk(&s.schema, path).unwrap().last().unwrap();
        let allowed = string_set(&node["enum"]);
        if allowed.is_empty() {
            failures.push(format!("{}: {path} has no enum", s.what()));
        }
        let unknown: Vec<_> = allowed.difference(&names).collect();
        if !unknown.is_empty() {
            failures.push(format!(
                "{}: {path} allows {unknown:?}, which DOMAIN.md does not name",
                s.what()
            ));
        }
        if must_equal && allowed != names {
            let absent: Vec<_> = names.difference(&allowed).collect();
            failures.push(format!(
                "{}: {path} lacks {absent:?}, which DOMAIN.md names",
                s.what()
            ));
        }
        if node["default"] != Value::String(default.clone()) {
            failures.push(format!(
                "{}: {path} defaults to {}, DOMAIN.md says {default}",
                s.what(),
                node["default"]
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `spec` fields the normalizer does not read, on purpose: none of them is an identity
/// field of DOMAIN.md §1.
const UNREAD_SPEC_FIELDS: &[(&str, &str)] = &[
    ("Sandbox", "podTemplate"),
    ("Sandbox", "replicas"),
    ("Sandbox", "service"),
    // Expiry is observed through the deletes it causes.
    ("Sandbox", "shutdownTime"),
    // v1beta1 only: Running or Suspended. A suspended sandbox shows as its pod going away.
    ("Sandbox", "operatingMode"),
    ("SandboxClaim", "additionalPodMetadata"),
    ("SandboxClaim", "env"),
    // v1beta1 only. The PVCs are recorded from their Sandbox owner reference, not from the
    // claim's templates.
    ("SandboxClaim", "volumeClaimTemplates"),
];

#[test]
fn every_spec_field_is_read_or_known_unread() {
    let mut failures = Vec::new();
    for s in served_versions() {
        let read: BTreeSet<&str> = paths_read(&s.kind, &s.version)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.strip_prefix("spec."))
            .map(|p| p.split('.').next().unwrap())
            .collect();
        let fields = s.schema["properties"]["spec"]["properties"]
            .as_object()
            .unwrap();
        for field in fields.keys() {
            let unread = UNREAD_SPEC_FIELDS.contains(&(s.kind.as_str(), field.as_str()));
            if !read.contains(field.as_str()) && !unread {
                failures.push(format!(
                    "{}: spec.{field} is neither read nor listed as unread",
                    s.what()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// The upstream example objects.
// ---------------------------------------------------------------------------------------

/// What each example must normalize to (`None`: a kind the ledger does not record).
#[derive(Debug, PartialEq)]
enum Expected {
    Sandbox {
        volume_claim_templates: Vec<&'static str>,
        shutdown_policy: Option<&'static str>,
    },
    Claim {
        warm_pool: Option<&'static str>,
        template: Option<&'static str>,
        shutdown_policy: Option<&'static str>,
        shutdown_time: Option<&'static str>,
    },
    NotRecorded,
}

fn expectations() -> BTreeMap<&'static str, Expected> {
    BTreeMap::from([
        (
            "sandbox-hello-world.yaml",
            Expected::Sandbox {
                volume_claim_templates: vec![],
                shutdown_policy: None,
            },
        ),
        (
            "sandbox-with-pvc.yaml",
            Expected::Sandbox {
                volume_claim_templates: vec!["my-pvc"],
                shutdown_policy: None,
            },
        ),
        (
            "sandboxclaim-lifecycle.yaml",
            Expected::Claim {
                warm_pool: None,
                template: Some("secure-datascience-template"),
                shutdown_policy: Some("Delete"),
                shutdown_time: Some("2025-12-31T23:59:59Z"),
            },
        ),
        (
            // `warmpool` is commented out in the YAML: the CRD default ("default") is the
            // API server's business; the normalizer stores what the object carries.
            "sandboxclaim-warmpool.yaml",
            Expected::Claim {
                warm_pool: None,
                template: Some("secure-datascience-template"),
                shutdown_policy: None,
                shutdown_time: None,
            },
        ),
        ("sandboxtemplate-workspace-pvc.yaml", Expected::NotRecorded),
        ("sandboxwarmpool.yaml", Expected::NotRecorded),
    ])
}

fn examples() -> Vec<(String, Value)> {
    let dir = test_data("crds/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read_yaml(&p))
        })
        .collect()
}

/// The metadata a live object has and a manifest lacks.
fn as_observed(name: &str, mut object: Value) -> Value {
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    metadata
        .entry("namespace")
        .or_insert_with(|| Value::from("default"));
    metadata.insert("uid".into(), Value::from(format!("uid-{name}")));
    metadata.insert("resourceVersion".into(), Value::from("1"));
    object
}

fn text(value: &Value) -> Option<Text> {
    value.as_str().map(Text::from)
}

fn owned(value: Option<&str>) -> Option<Text> {
    value.map(Text::from)
}

#[test]
fn examples_normalize_to_the_fields_their_yaml_states() {
    let mut expectations = expectations();
    for (name, yaml) in examples() {
        let expected = expectations
            .remove(name.as_str())
            .unwrap_or_else(|| panic!("no expectation for the example {name}"));
        let object = as_observed(&name, yaml.clone());
        let normalized =
            normalize(WatchEventType::Added, &object).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(change) = normalized else {
            assert_eq!(expected, Expected::NotRecorded, "{name} was not recorded");
            continue;
        };

        // Common metadata, as the YAML (plus the added uid/resourceVersion) states.
        assert_eq!(change.api_version.as_str(), yaml["apiVersion"], "{name}");
        assert_eq!(change.kind.as_str(), yaml["kind"], "{name}");
        assert_eq!(change.name.as_str(), yaml["metadata"]["name"], "{name}");
        assert_eq!(
            change.namespace.as_str(),
            object["metadata"]["namespace"],
            "{name}"
        );
        assert_eq!(change.uid, format!("uid-{name}"), "{name}");
        assert_eq!(change.resource_version, "1", "{name}");
        assert_eq!(change.change, ChangeKind::Created, "{name}");
        assert_eq!(change.controller, None, "{name}");
        assert_eq!(change.deletion_timestamp, None, "{name}");

        let spec = &yaml["spec"];
        match (&change.fields, expected) {
            (
                KindFields::Sandbox {
                    claim_uid_label,
                    sandbox_id_label,
                    pod_name_annotation,
                    volume_claim_templates,
                    shutdown_policy,
                },
                Expected::Sandbox {
                    volume_claim_templates: want_templates,
                    shutdown_policy: want_policy,
                },
            ) => {
                assert_eq!(change.kind, ObjectKind::Sandbox);
                // Read back from the YAML independently of the normalizer...
                let from_yaml: Vec<Text> = spec["volumeClaimTemplates"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| text(&t["metadata"]["name"]))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(volume_claim_templates, &from_yaml, "{name}");
                assert_eq!(shutdown_policy, &text(&spec["shutdownPolicy"]), "{name}");
                // ...and against the values written down above.
                assert_eq!(volume_claim_templates, &want_templates, "{name}");
                assert_eq!(shutdown_policy, &owned(want_policy), "{name}");
                // The pod template's labels and annotations are not the Sandbox's.
                assert_eq!(claim_uid_label, &None, "{name}");
                assert_eq!(sandbox_id_label, &None, "{name}");
                assert_eq!(pod_name_annotation, &None, "{name}");
            }
            (
                KindFields::SandboxClaim {
                    status_sandbox_name,
                    ready,
                    shutdown_policy,
                    shutdown_time,
                    warm_pool,
                    template,
                },
                Expected::Claim {
                    warm_pool: want_pool,
                    template: want_template,
                    shutdown_policy: want_policy,
                    shutdown_time: want_time,
                },
            ) => {
                assert_eq!(change.kind, ObjectKind::SandboxClaim);
                assert_eq!(yaml["apiVersion"], "extensions.agents.x-k8s.io/v1alpha1");
                let lifecycle = &spec["lifecycle"];
                assert_eq!(warm_pool, &text(&spec["warmpool"]), "{name}");
                assert_eq!(
                    template,
                    &text(&spec["sandboxTemplateRef"]["name"]),
                    "{name}"
                );
                assert_eq!(
                    shutdown_policy,
                    &text(&lifecycle["shutdownPolicy"]),
                    "{name}"
                );
                assert_eq!(shutdown_time, &text(&lifecycle["shutdownTime"]), "{name}");
                assert_eq!(warm_pool, &owned(want_pool), "{name}");
                assert_eq!(template, &owned(want_template), "{name}");
                assert_eq!(shutdown_policy, &owned(want_policy), "{name}");
                assert_eq!(shutdown_time, &owned(want_time), "{name}");
                // The examples carry no status.
                assert_eq!(status_sandbox_name, &None, "{name}");
                assert_eq!(ready, &None, "{name}");
            }
            (fields, expected) => panic!("{name}: got {fields:?}, expected {expected:?}"),
        }
    }
    assert!(
        expectations.is_empty(),
        "examples missing from tests/data/crds/examples: {:?}",
        expectations.keys().collect::<Vec<_>>()
    );
}

/// The same claim examples served as v1beta1 (what a v0.5 cluster returns after
/// conversion): the template reference is gone and the pool is `spec.warmPoolRef.name`.
#[test]
fn claim_examples_as_v1beta1_read_the_pool_from_warm_pool_ref() {
    for (name, yaml) in examples() {
        if yaml["kind"] != "SandboxClaim" {
            continue;
        }
        let mut object = as_observed(&name, yaml.clone());
        object["apiVersion"] = Value::from("extensions.agents.x-k8s.io/v1beta1");
        let spec = object["spec"].as_object_mut().unwrap();
        spec.remove("sandboxTemplateRef");
        spec.remove("warmpool");
        spec.insert(
            "warmPoolRef".into(),
            serde_json::json!({"name": "fast-pool"}),
        );
        let change = normalize(WatchEventType::Modified, &object)
            .unwrap()
            .unwrap();
        let KindFields::SandboxClaim {
            warm_pool,
            template,
            shutdown_policy,
            shutdown_time,
            ..
        } = change.fields
        else {
            panic!("{name}: not a claim");
        };
        assert_eq!(warm_pool.as_deref(), Some("fast-pool"), "{name}");
        assert_eq!(template, None, "{name}");
        let lifecycle = &yaml["spec"]["lifecycle"];
        assert_eq!(
            shutdown_policy,
            text(&lifecycle["shutdownPolicy"]),
            "{name}"
        );
        assert_eq!(shutdown_time, text(&lifecycle["shutdownTime"]), "{name}");
    }
}
