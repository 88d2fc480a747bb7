//! The agent-sandbox conventions on objects: the labels and annotations the controllers
//! write, and what a claim or a Sandbox says (bound, expired, when it shuts down, which pod
//! and PVCs it has).
//!
//! Its own module because two sides read them: the controllers, which write objects this
//! way, and the indexes kept beside the store, which look objects up by them. With these in
//! `controllers`, the store (through its indexes) and the controllers would depend on each
//! other.

use crate::util;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Label on warm Sandboxes and pods: FNV-32a of the pool name.
pub const WARM_POOL_LABEL: &str = "agents.x-k8s.io/warm-pool-sandbox";
/// Label on pool Sandboxes: FNV-32a of the template name.
pub const TEMPLATE_HASH_LABEL: &str = "agents.x-k8s.io/sandbox-template-ref-hash";
/// Label on claimed Sandboxes (and, on v0.4.x, their pods): the claim uid.
pub const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";
/// Label on pods and PVCs: FNV-32a of the Sandbox name.
pub const SANDBOX_NAME_HASH_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";
/// Annotation on Sandboxes naming their pod.
pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";
/// Annotation on pods: the gateway's sandbox identity.
pub const SANDBOX_ID_ANNOTATION: &str = "openshell.io/sandbox-id";
/// Annotation on warm pods, stripped on adoption.
pub const SAFE_TO_EVICT_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The node controller-created pods are scheduled on.
pub const NODE_NAME: &str = "sim-node-1";
/// The reason of an expired claim's `Ready=False` condition.
pub const EXPIRED_REASON: &str = "SandboxExpired";

/// Whether the claim names its Sandbox (`status.sandbox.name` non-empty).
pub(crate) fn is_bound(claim: &Value) -> bool {
    util::path_str(claim, "status.sandbox.name").is_some_and(|n| !n.is_empty())
}

/// Whether the claim's Ready condition says it expired (reason [`EXPIRED_REASON`]).
pub(crate) fn has_expired(claim: &Value) -> bool {
    claim
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("reason").and_then(Value::as_str) == Some(EXPIRED_REASON)
            })
        })
}

/// The claim's `spec.lifecycle.shutdownTime`, if it is set and parses as RFC 3339.
pub(crate) fn shutdown_time(claim: &Value) -> Option<DateTime<Utc>> {
    util::path_str(claim, "spec.lifecycle.shutdownTime")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The name of the Sandbox's pod: its `agents.x-k8s.io/pod-name` annotation, else its own.
pub(crate) fn pod_name_of(sandbox: &Value) -> String {
    sandbox
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(POD_NAME_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or_else(|| util::name_of(sandbox))
        .to_string()
}

/// The names of the PVCs the Sandbox controller keeps for `sandbox`: one per volume claim
/// template, `<template name>-<sandbox>`.
pub(crate) fn expected_pvc_names(sandbox: &Value) -> Vec<String> {
    let name = util::name_of(sandbox);
    sandbox
        .get("spec")
        .and_then(|s| s.get("volumeClaimTemplates"))
        .and_then(Value::as_array)
        .map(|templates| {
            templates
                .iter()
                .filter_map(|vct| util::path_str(vct, "metadata.name"))
                .map(|vct_name| format!("{vct_name}-{name}"))
                .collect()
        })
        .unwrap_or_default()
}
