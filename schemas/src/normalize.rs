//! Kubernetes object JSON to an [`ObjectChange`].
//!
//! The one place where cluster objects become ledger records: used by `ingest` and by the
//! watcher alike, so both claim layouts (`v1alpha1`, `v1beta1`) are read by the same code.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::observed::*;
use crate::resources::{self, ObjectMeta};
use crate::SchemaError;

/// Longest name, namespace or resourceVersion accepted (Kubernetes allows 253 for names).
const MAX_FIELD_LEN: usize = 253;
/// Longest uid accepted (Kubernetes uids are 36-character UUIDs).
const MAX_UID_LEN: usize = 128;

/// The type of a Kubernetes watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

impl WatchEventType {
    /// Parses `ADDED`, `MODIFIED` or `DELETED`.
    pub fn parse(text: &str) -> Option<WatchEventType> {
        match text {
            "ADDED" => Some(WatchEventType::Added),
            "MODIFIED" => Some(WatchEventType::Modified),
            "DELETED" => Some(WatchEventType::Deleted),
            _ => None,
        }
    }
}

/// Turns one object (as JSON) seen in a watch event into an observed change.
///
/// Returns `Ok(None)` for kinds the ledger does not record (warm pools, templates, any
/// other resource). Added and modified both map to [`ChangeKind::Updated`] unless the
/// ledger decides otherwise: only the ledger knows whether it has seen the uid before.
pub fn normalize(
    event: WatchEventType,
    object: &Value,
) -> Result<Option<ObjectChange>, SchemaError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("object", "missing apiVersion"))?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("object", "missing kind"))?;
    let (group, version) = match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let change = match event {
        WatchEventType::Added => ChangeKind::Created,
        WatchEventType::Modified => ChangeKind::Updated,
        WatchEventType::Deleted => ChangeKind::Deleted,
    };

    let (object_kind, metadata, fields) = match (group, kind) {
        (SANDBOX_GROUP, "Sandbox") => {
            require_agent_sandbox_version(kind, version)?;
            let sandbox: resources::Sandbox = parse(kind, object)?;
            let spec = sandbox.spec.unwrap_or_default();
            let fields = KindFields::Sandbox {
                claim_uid_label: sandbox.metadata.label(CLAIM_UID_LABEL).map(Text::from),
                sandbox_id_label: sandbox.metadata.label(SANDBOX_ID_LABEL).map(Text::from),
                pod_name_annotation: sandbox
                    .metadata
                    .annotation(POD_NAME_ANNOTATION)
                    .map(Text::from),
                volume_claim_templates: spec
                    .volume_claim_templates
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t.metadata.and_then(|m| m.name))
                    .map(Text::from)
                    .collect(),
                shutdown_policy: spec.shutdown_policy.map(Text::from),
            };
            (ObjectKind::Sandbox, sandbox.metadata, fields)
        }
        (EXTENSIONS_GROUP, "SandboxClaim") => {
            require_agent_sandbox_version(kind, version)?;
            let (metadata, spec_fields, status) = if version == "v1alpha1" {
                let claim: resources::SandboxClaimV1alpha1 = parse(kind, object)?;
                let spec = claim.spec.unwrap_or_default();
                let pool = spec.warmpool;
                let template = spec.sandbox_template_ref.and_then(|r| r.name);
                (
                    claim.metadata,
                    (spec.lifecycle, pool, template),
                    claim.status,
                )
            } else {
                let claim: resources::SandboxClaimV1beta1 = parse(kind, object)?;
                let spec = claim.spec.unwrap_or_default();
                let pool = spec.warm_pool_ref.and_then(|r| r.name);
                (claim.metadata, (spec.lifecycle, pool, None), claim.status)
            };
            let (lifecycle, warm_pool, template) = spec_fields;
            let lifecycle = lifecycle.unwrap_or_default();
            let status = status.unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| ConditionSummary {
                    status: c.status.into(),
                    reason: c.reason.map(Text::from),
                });
            let fields = KindFields::SandboxClaim {
                status_sandbox_name: status.sandbox.and_then(|s| s.name).map(Text::from),
                ready,
                shutdown_policy: lifecycle.shutdown_policy.map(Text::from),
                shutdown_time: lifecycle.shutdown_time.map(Text::from),
                warm_pool: warm_pool.map(Text::from),
                template: template.map(Text::from),
            };
            (ObjectKind::SandboxClaim, metadata, fields)
        }
        ("", "Pod") => {
            let pod: resources::Pod = parse(kind, object)?;
            let fields = KindFields::Pod {
                sandbox_id_annotation: pod
                    .metadata
                    .annotation(POD_SANDBOX_ID_ANNOTATION)
                    .map(Text::from),
                phase: pod.status.and_then(|s| s.phase).map(Text::from),
            };
            (ObjectKind::Pod, pod.metadata, fields)
        }
        ("", "PersistentVolumeClaim") => {
            let pvc: resources::PersistentVolumeClaim = parse(kind, object)?;
            let fields = KindFields::PersistentVolumeClaim {
                volume_name: pvc.spec.and_then(|s| s.volume_name).map(Text::from),
                phase: pvc.status.and_then(|s| s.phase).map(Text::from),
            };
            (ObjectKind::PersistentVolumeClaim, pvc.metadata, fields)
        }
        _ => return Ok(None),
    };

    from_parts(object_kind, api_version, change, metadata, fields).map(Some)
}

fn from_parts(
    kind: ObjectKind,
    api_version: &str,
    change: ChangeKind,
    metadata: ObjectMeta,
    fields: KindFields,
) -> Result<ObjectChange, SchemaError> {
    let kind_name = kind.as_str();
    let name = required(
        kind_name,
        "metadata.name",
        metadata.name.as_deref(),
        MAX_FIELD_LEN,
    )?;
    let namespace = required(
        kind_name,
        "metadata.namespace",
        metadata.namespace.as_deref(),
        MAX_FIELD_LEN,
    )?;
    let uid = required(
        kind_name,
        "metadata.uid",
        metadata.uid.as_deref(),
        MAX_UID_LEN,
    )?;
    let resource_version = required(
        kind_name,
        "metadata.resourceVersion",
        metadata.resource_version.as_deref(),
        MAX_FIELD_LEN,
    )?;
    let controller = controller_of(kind_name, &metadata)?;
    Ok(ObjectChange {
        kind,
        api_version: api_version.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        resource_version: resource_version.into(),
        change,
        controller,
        deletion_timestamp: metadata.deletion_timestamp.as_deref().map(Text::from),
        fields,
    })
}

/// The controller reference of an object: `None` when no owner reference says
/// `controller: true`, that one when exactly one does, and when several do (which a real
/// API server refuses to store, so only a forged event file or a compromised API server
/// can show it) the marker of [`OwnerRef::ambiguous`], never the first of them: the binding
/// rule then refuses the object with a reason instead of trusting whichever reference
/// happens to come first. Every controller reference's uid is checked as a uid.
fn controller_of(kind_name: &str, metadata: &ObjectMeta) -> Result<Option<OwnerRef>, SchemaError> {
    let controllers: Vec<&resources::OwnerReference> = metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|r| r.controller == Some(true))
        .collect();
    let mut references = Vec::with_capacity(controllers.len());
    for reference in &controllers {
        let group = match reference.api_version.rsplit_once('/') {
            Some((group, _)) => group.to_string(),
            None => String::new(),
        };
        let uid = required(
            kind_name,
            "ownerReferences[].uid",
            Some(&reference.uid),
            MAX_UID_LEN,
        )?;
        references.push(OwnerRef {
            group: group.into(),
            kind: reference.kind.as_str().into(),
            name: reference.name.as_str().into(),
            uid: uid.into(),
        });
    }
    if references.len() <= 1 {
        return Ok(references.pop());
    }
    let shown = references
        .iter()
        .find(|r| r.is_sandbox())
        .unwrap_or(&references[0]);
    let uids: Vec<&str> = references.iter().map(|r| r.uid.as_str()).collect();
    Ok(Some(OwnerRef::ambiguous(
        &shown.group,
        &shown.kind,
        references.len(),
        &uids,
    )))
}

fn require_agent_sandbox_version(kind: &str, version: &str) -> Result<(), SchemaError> {
    match version {
        "v1alpha1" | "v1beta1" => Ok(()),
        other => Err(invalid(
            kind,
            &format!("unsupported apiVersion {other:?} (this build reads v1alpha1 and v1beta1)"),
        )),
    }
}

fn parse<T: DeserializeOwned>(kind: &str, object: &Value) -> Result<T, SchemaError> {
    T::deserialize(object).map_err(|e| invalid(kind, &e.to_string()))
}

fn required(
    kind: &str,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<String, SchemaError> {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        return Err(invalid(kind, &format!("{field} is missing or empty")));
    }
    if value.len() > max {
        return Err(invalid(
            kind,
            &format!("{field} is longer than {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            kind,
            &format!("{field} contains control characters"),
        ));
    }
    Ok(value.to_string())
}

fn invalid(kind: &str, detail: &str) -> SchemaError {
    SchemaError::InvalidObject {
        kind: kind.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim_v1beta1() -> Value {
        json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
            "kind": "SandboxClaim",
            "metadata": {"name": "c", "namespace": "ns", "uid": "claim-1", "resourceVersion": "5"},
            "spec": {"warmPoolRef": {"name": "pool"}, "lifecycle": {"shutdownPolicy": "Retain"}},
            "status": {"sandbox": {"name": "pool-abc"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Bound",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}]}
        })
    }

    #[test]
    fn both_claim_layouts_normalize_to_the_same_fields() {
        let beta = normalize(WatchEventType::Modified, &claim_v1beta1())
            .unwrap()
            .unwrap();
        let mut alpha_json = claim_v1beta1();
        alpha_json["apiVersion"] = json!("extensions.agents.x-k8s.io/v1alpha1");
        alpha_json["spec"] = json!({"warmpool": "pool", "sandboxTemplateRef": {"name": "t"},
                                    "lifecycle": {"shutdownPolicy": "Retain"}});
        let alpha = normalize(WatchEventType::Modified, &alpha_json)
            .unwrap()
            .unwrap();
        let KindFields::SandboxClaim {
            status_sandbox_name,
            warm_pool,
            ready,
            ..
        } = &beta.fields
        else {
            panic!("not a claim");
        };
        assert_eq!(status_sandbox_name.as_deref(), Some("pool-abc"));
        assert_eq!(warm_pool.as_deref(), Some("pool"));
        assert_eq!(ready.as_ref().map(|r| r.status.as_str()), Some("True"));
        let KindFields::SandboxClaim {
            warm_pool: alpha_pool,
            template,
            ..
        } = &alpha.fields
        else {
            panic!("not a claim");
        };
        assert_eq!(alpha_pool.as_deref(), Some("pool"));
        assert_eq!(template.as_deref(), Some("t"));
    }

    #[test]
    fn owner_is_matched_on_group_and_kind_not_version() {
        let pod = |version: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1", "resourceVersion": "9",
                                "ownerReferences": [
                                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "rs"},
                                    {"apiVersion": format!("agents.x-k8s.io/{version}"), "kind": "Sandbox",
                                     "name": "s", "uid": "sb-1", "controller": true}]}})
        };
        let a = normalize(WatchEventType::Added, &pod("v1alpha1"))
            .unwrap()
            .unwrap();
        let b = normalize(WatchEventType::Added, &pod("v1beta1"))
            .unwrap()
            .unwrap();
        assert_eq!(a.controller, b.controller);
        assert!(a.controller.unwrap().is_sandbox());
    }

    fn owned_pod(owners: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1", "resourceVersion": "9",
                            "ownerReferences": owners}})
    }

    fn sandbox_ref(name: &str, uid: &str, controller: bool) -> Value {
        json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox", "name": name,
               "uid": uid, "controller": controller})
    }

    #[test]
    fn several_controller_references_are_recorded_as_ambiguous_never_as_the_first() {
        let pod = owned_pod(json!([
            sandbox_ref("mine", "sb-1", true),
            sandbox_ref("theirs", "sb-2", true)
        ]));
        let change = normalize(WatchEventType::Added, &pod).unwrap().unwrap();
        let controller = change.controller.unwrap();
        assert!(controller.is_ambiguous());
        assert_eq!(controller.ambiguous_count(), Some(2));
        assert_eq!(controller.linked_uids(), ["sb-1", "sb-2"]);
        assert_eq!(controller.uid, "");
        assert_eq!(
            controller.name,
            r#"2 controller references ["sb-1","sb-2"]"#
        );
        // Still a Sandbox-kind reference, so a first-seen pod is recorded (then refused).
        assert!(controller.is_sandbox());

        // A Sandbox controlled by a claim and a warm pool: group and kind of the first.
        let sandbox = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": "s", "namespace": "ns", "uid": "sb-1", "resourceVersion": "3",
                "ownerReferences": [
                    {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
                     "name": "c", "uid": "claim-1", "controller": true},
                    {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
                     "name": "pool", "uid": "pool-1", "controller": true}]}});
        let controller = normalize(WatchEventType::Modified, &sandbox)
            .unwrap()
            .unwrap()
            .controller
            .unwrap();
        assert!(controller.is_ambiguous() && controller.is_claim());
        assert_eq!(controller.linked_uids(), ["claim-1", "pool-1"]);

        // A Sandbox reference among the controllers is the one shown, wherever it is.
        let pod = owned_pod(json!([
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true},
            sandbox_ref("s", "sb-1", true)
        ]));
        let controller = normalize(WatchEventType::Added, &pod)
            .unwrap()
            .unwrap()
            .controller
            .unwrap();
        assert!(controller.is_ambiguous() && controller.is_sandbox());
    }

    #[test]
    fn one_controller_among_other_owners_is_that_controller() {
        let pod = owned_pod(json!([
            sandbox_ref("other", "sb-2", false),
            sandbox_ref("mine", "sb-1", true)
        ]));
        let controller = normalize(WatchEventType::Added, &pod)
            .unwrap()
            .unwrap()
            .controller
            .unwrap();
        assert!(!controller.is_ambiguous());
        assert_eq!(controller.ambiguous_count(), None);
        assert_eq!(controller.uid, "sb-1");
        assert_eq!(controller.linked_uids(), ["sb-1"]);
        let unowned = owned_pod(json!([sandbox_ref("other", "sb-2", false)]));
        let change = normalize(WatchEventType::Added, &unowned).unwrap().unwrap();
        assert!(change.controller.is_none());
    }

    #[test]
    fn many_controllers_list_a_bounded_number_of_uids_and_every_uid_is_checked() {
        let owners: Vec<Value> = (0..40)
            .map(|i| sandbox_ref("s", &format!("sb-{i}"), true))
            .collect();
        let controller = normalize(WatchEventType::Added, &owned_pod(json!(owners)))
            .unwrap()
            .unwrap()
            .controller
            .unwrap();
        assert_eq!(controller.ambiguous_count(), Some(40));
        assert_eq!(controller.linked_uids().len(), AMBIGUOUS_UIDS_LISTED);
        let bad = owned_pod(json!([
            sandbox_ref("s", "sb-1", true),
            sandbox_ref("t", "", true)
        ]));
        let err = normalize(WatchEventType::Added, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ownerReferences[].uid"), "{err}");
    }

    #[test]
    fn secrets_and_specs_never_reach_the_record() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1", "resourceVersion": "9",
                         "annotations": {"openshell.io/sandbox-id": "sb"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "TOKEN", "value": "hunter2"}]}]}});
        let change = normalize(WatchEventType::Added, &pod).unwrap().unwrap();
        let encoded = format!("{change:?}");
        assert!(!encoded.contains("hunter2"));
    }

    #[test]
    fn malformed_objects_get_clear_errors() {
        let cases = [
            (json!({"kind": "Pod"}), "apiVersion"),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}}),
                "metadata.uid",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": "nope"}),
                "Pod",
            ),
            (
                json!({"apiVersion": "agents.x-k8s.io/v2", "kind": "Sandbox"}),
                "unsupported apiVersion",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n",
                   "uid": "x".repeat(200), "resourceVersion": "1"}}),
                "longer than",
            ),
        ];
        for (object, expected) in cases {
            let err = normalize(WatchEventType::Added, &object)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn other_kinds_are_not_recorded() {
        let pool = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
                          "metadata": {"name": "p"}});
        assert!(normalize(WatchEventType::Added, &pool).unwrap().is_none());
    }
}
