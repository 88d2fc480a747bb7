//! Typed views of the Kubernetes resources the ledger reads, for both served versions
//! of the agent-sandbox CRDs (`v1alpha1` from v0.4.x, `v1beta1` from v0.5.x).
//!
//! Hand-written serde types rather than generated ones: they name only the fields the
//! binding rule needs and ignore everything else, so a pod spec or an env var can never
//! reach the ledger. A test (`tests/crd_fields.rs`) checks every path read here against
//! the CRD schemas in the repository's `tests/data/crds/` (see `docs/DOMAIN.md` §1).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata`, reduced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.labels`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    pub annotations: Option<BTreeMap<String, String>>,
    /// `metadata.ownerReferences`.
    pub owner_references: Option<Vec<OwnerReference>>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<String>,
}

impl ObjectMeta {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<String> {
        self.labels.as_ref()?.get(key).cloned()
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.annotations.as_ref()?.get(key).cloned()
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .as_deref()?
            .iter()
            .find(|r| r.controller == Some(true))
    }
}

/// One entry of `metadata.ownerReferences`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// `apiVersion`, e.g. `agents.x-k8s.io/v1beta1`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `uid`.
    pub uid: String,
    /// `controller`.
    pub controller: Option<bool>,
}

/// A `{name: ...}` reference.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NameRef {
    /// The referenced name.
    pub name: Option<String>,
}

/// A `metadata` with only a name (volume claim templates).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VolumeClaimTemplate {
    /// The template's metadata.
    pub metadata: Option<NameRef>,
}

/// `agents.x-k8s.io` `Sandbox`, `v1alpha1` and `v1beta1` (the fields read are identical).
#[derive(Debug, Clone, Deserialize)]
pub struct Sandbox {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<SandboxSpec>,
}

/// `Sandbox.spec`, reduced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// `spec.volumeClaimTemplates`.
    pub volume_claim_templates: Option<Vec<VolumeClaimTemplate>>,
    /// `spec.shutdownPolicy`.
    pub shutdown_policy: Option<String>,
}

/// `spec.lifecycle` of a claim (both versions).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// `shutdownPolicy`.
    pub shutdown_policy: Option<String>,
    /// `shutdownTime`.
    pub shutdown_time: Option<String>,
}

/// A status condition, reduced.
#[derive(Debug, Clone, Deserialize)]
pub struct Condition {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`.
    pub status: String,
    /// `reason`.
    pub reason: Option<String>,
}

/// `SandboxClaim.status` (both versions).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClaimStatus {
    /// `status.sandbox`.
    pub sandbox: Option<NameRef>,
    /// `status.conditions`.
    pub conditions: Option<Vec<Condition>>,
}

/// `extensions.agents.x-k8s.io/v1alpha1` `SandboxClaim`.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxClaimV1alpha1 {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<ClaimSpecV1alpha1>,
    /// Status.
    pub status: Option<ClaimStatus>,
}

/// `SandboxClaim.spec` in `v1alpha1`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpecV1alpha1 {
    /// `spec.sandboxTemplateRef`.
    pub sandbox_template_ref: Option<NameRef>,
    /// `spec.warmpool`: `none`, `default` or a pool name.
    pub warmpool: Option<String>,
    /// `spec.lifecycle`.
    pub lifecycle: Option<ClaimLifecycle>,
}

/// `extensions.agents.x-k8s.io/v1beta1` `SandboxClaim`.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxClaimV1beta1 {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<ClaimSpecV1beta1>,
    /// Status.
    pub status: Option<ClaimStatus>,
}

/// `SandboxClaim.spec` in `v1beta1`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpecV1beta1 {
    /// `spec.warmPoolRef`.
    pub warm_pool_ref: Option<NameRef>,
    /// `spec.lifecycle`.
    pub lifecycle: Option<ClaimLifecycle>,
}

/// Core `Pod`, reduced to metadata and phase.
#[derive(Debug, Clone, Deserialize)]
pub struct Pod {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Status.
    pub status: Option<PhaseStatus>,
}

/// A `status` with a `phase`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PhaseStatus {
    /// `status.phase`.
    pub phase: Option<String>,
}

/// Core `PersistentVolumeClaim`, reduced.
#[derive(Debug, Clone, Deserialize)]
pub struct PersistentVolumeClaim {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<PvcSpec>,
    /// Status.
    pub status: Option<PhaseStatus>,
}

/// `PersistentVolumeClaim.spec`, reduced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSpec {
    /// `spec.volumeName`: the bound PV.
    pub volume_name: Option<String>,
}

/// The CRD field paths read above, per version, for the schema conformance test.
pub const SANDBOX_PATHS: &[&str] = &["spec.volumeClaimTemplates", "spec.shutdownPolicy"];
/// Claim paths read in `v1alpha1`.
pub const CLAIM_V1ALPHA1_PATHS: &[&str] = &[
    "spec.sandboxTemplateRef.name",
    "spec.warmpool",
    "spec.lifecycle.shutdownPolicy",
    "spec.lifecycle.shutdownTime",
    "status.sandbox.name",
    "status.conditions",
];
/// Claim paths read in `v1beta1`.
pub const CLAIM_V1BETA1_PATHS: &[&str] = &[
    "spec.warmPoolRef.name",
    "spec.lifecycle.shutdownPolicy",
    "spec.lifecycle.shutdownTime",
    "status.sandbox.name",
    "status.conditions",
];
