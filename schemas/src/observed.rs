//! One observed change of one object, reduced to the fields the binding rule reads.
//!
//! Everything here is what the ledger stores and hashes, so each field must be
//! identity-relevant (DOMAIN.md §1) and deterministic to encode (no maps with
//! unordered keys). Unknown Kubernetes fields are dropped by the normalizer, never stored.

use serde::{Deserialize, Serialize};

pub use crate::text::Text;

/// API group of `Sandbox`.
pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
/// API group of `SandboxClaim`, `SandboxWarmPool` and `SandboxTemplate`.
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
/// Label the claim controller sets on an adopted or created Sandbox.
pub const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";
/// Label a gateway puts on a directly created Sandbox.
pub const SANDBOX_ID_LABEL: &str = "openshell.ai/sandbox-id";
/// Annotation naming the pod of a Sandbox.
pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";
/// The gateway's sandbox identity on a pod.
pub const POD_SANDBOX_ID_ANNOTATION: &str = "openshell.io/sandbox-id";

/// The kinds the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    /// `agents.x-k8s.io` `Sandbox`.
    Sandbox,
    /// `extensions.agents.x-k8s.io` `SandboxClaim`.
    SandboxClaim,
    /// Core `Pod`.
    Pod,
    /// Core `PersistentVolumeClaim`.
    PersistentVolumeClaim,
}

impl ObjectKind {
    /// All recorded kinds, in a fixed order.
    pub const ALL: [ObjectKind; 4] = [
        ObjectKind::Sandbox,
        ObjectKind::SandboxClaim,
        ObjectKind::Pod,
        ObjectKind::PersistentVolumeClaim,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Sandbox => "Sandbox",
            ObjectKind::SandboxClaim => "SandboxClaim",
            ObjectKind::Pod => "Pod",
            ObjectKind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }

    /// The API group (empty for core).
    pub fn group(self) -> &'static str {
        match self {
            ObjectKind::Sandbox => SANDBOX_GROUP,
            ObjectKind::SandboxClaim => EXTENSIONS_GROUP,
            ObjectKind::Pod | ObjectKind::PersistentVolumeClaim => "",
        }
    }

    /// Parses a Kubernetes kind name; also accepts the lowercase plural and `pvc`.
    pub fn parse(text: &str) -> Option<ObjectKind> {
        match text.to_ascii_lowercase().as_str() {
            "sandbox" | "sandboxes" => Some(ObjectKind::Sandbox),
            "sandboxclaim" | "sandboxclaims" | "claim" => Some(ObjectKind::SandboxClaim),
            "pod" | "pods" => Some(ObjectKind::Pod),
            "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => {
                Some(ObjectKind::PersistentVolumeClaim)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the object, as the ledger saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// First time the ledger sees this uid alive.
    Created,
    /// A later state of a uid the ledger already holds.
    Updated,
    /// A delete event was observed.
    Deleted,
    /// An initial list lacked an object the ledger holds: a delete missed while blind.
    MissingOnResync,
}

impl ChangeKind {
    /// Whether the object is gone after this change.
    pub fn is_removal(self) -> bool {
        matches!(self, ChangeKind::Deleted | ChangeKind::MissingOnResync)
    }
}

/// The controller owner reference, matched on group + kind + uid, never apiVersion.
///
/// An object may name at most one controller (the API server refuses a second
/// `controller: true` reference), so one whose metadata names several is not trusted
/// whichever reference comes first: the normalizer records it with the marker built by
/// [`OwnerRef::ambiguous`] (an empty `uid`, which no real reference has: the normalizer
/// refuses empty owner uids), and the binding rule refuses every chain through it with
/// `OWNER_CHAIN_BROKEN`. The marker keeps the encoding of every other reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRef {
    /// API group, from the reference's apiVersion (empty for core).
    pub group: Text,
    /// Kind, as written in the reference.
    pub kind: Text,
    /// Name of the owner.
    pub name: Text,
    /// Uid of the owner: the identity that counts.
    pub uid: Text,
}

impl OwnerRef {
    /// Whether this reference names a `Sandbox` (any version).
    pub fn is_sandbox(&self) -> bool {
        self.group == SANDBOX_GROUP && self.kind == "Sandbox"
    }

    /// Whether this reference names a `SandboxClaim` (any version).
    pub fn is_claim(&self) -> bool {
        self.group == EXTENSIONS_GROUP && self.kind == "SandboxClaim"
    }

    /// Whether this reference names a `SandboxWarmPool` (any version).
    pub fn is_warm_pool(&self) -> bool {
        self.group == EXTENSIONS_GROUP && self.kind == "SandboxWarmPool"
    }

    /// The marker recorded for an object whose metadata names `count` (two or more)
    /// controller references: `group` and `kind` of the first of them that names a
    /// Sandbox, else of the first (so a pod or PVC claiming a Sandbox among its controllers
    /// is recorded, and then refused, rather than ignored); `uid` empty; `name` the count
    /// and the JSON array of the owner uids, in order, at most [`AMBIGUOUS_UIDS_LISTED`]
    /// of them, e.g. `2 controller references ["sb-1","sb-2"]`. `uids` are the uids of
    /// the controller references, in order.
    pub fn ambiguous(group: &str, kind: &str, count: usize, uids: &[&str]) -> OwnerRef {
        let listed: Vec<&str> = uids.iter().copied().take(AMBIGUOUS_UIDS_LISTED).collect();
        let listed = serde_json::to_string(&listed).unwrap_or_else(|_| "[]".into());
        OwnerRef {
            group: group.into(),
            kind: kind.into(),
            name: format!("{count}{AMBIGUOUS_NAME_INFIX}{listed}").into(),
            uid: Text::default(),
        }
    }

    /// Whether this is the marker of several controller references
    /// ([`OwnerRef::ambiguous`]): the object must not be trusted.
    pub fn is_ambiguous(&self) -> bool {
        self.uid.is_empty()
    }

    /// How many controller references the marker stands for (`None` for a real
    /// reference; `Some(0)` for a marker whose count cannot be read).
    pub fn ambiguous_count(&self) -> Option<usize> {
        if !self.is_ambiguous() {
            return None;
        }
        let count = self
            .name
            .split_once(AMBIGUOUS_NAME_INFIX)
            .and_then(|(count, _)| count.parse().ok())
            .unwrap_or(0);
        Some(count)
    }

    /// The owner uids this reference ties the object to: its uid, or for the marker every
    /// uid it lists (so the object stays among the dependents of each owner it names, and
    /// every binding through one of them is re-judged and refused).
    pub fn linked_uids(&self) -> Vec<Text> {
        if !self.is_ambiguous() {
            return vec![self.uid.clone()];
        }
        self.name
            .split_once(AMBIGUOUS_NAME_INFIX)
            .and_then(|(_, list)| serde_json::from_str::<Vec<String>>(list).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|uid| !uid.is_empty())
            .map(Text::from)
            .collect()
    }
}

/// At most this many owner uids are listed in the marker of an ambiguous controller.
pub const AMBIGUOUS_UIDS_LISTED: usize = 16;

/// Between the count and the uid list in the marker's `name`.
const AMBIGUOUS_NAME_INFIX: &str = " controller references ";

/// A condition reduced to what the ledger keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionSummary {
    /// `True`, `False` or `Unknown`.
    pub status: Text,
    /// Machine-readable reason, if any.
    pub reason: Option<Text>,
}

/// The kind-specific identity fields (DOMAIN.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindFields {
    /// Fields of a `Sandbox`.
    Sandbox {
        /// Label `agents.x-k8s.io/claim-uid`.
        claim_uid_label: Option<Text>,
        /// Label `openshell.ai/sandbox-id` (directly created sandboxes).
        sandbox_id_label: Option<Text>,
        /// Annotation `agents.x-k8s.io/pod-name`.
        pod_name_annotation: Option<Text>,
        /// Names of `spec.volumeClaimTemplates`.
        volume_claim_templates: Vec<Text>,
        /// `spec.shutdownPolicy`.
        shutdown_policy: Option<Text>,
    },
    /// Fields of a `SandboxClaim`.
    SandboxClaim {
        /// `status.sandbox.name`: the Sandbox the claim says it holds.
        status_sandbox_name: Option<Text>,
        /// The `Ready` condition.
        ready: Option<ConditionSummary>,
        /// `spec.lifecycle.shutdownPolicy` (`Delete`, `DeleteForeground`, `Retain`).
        shutdown_policy: Option<Text>,
        /// `spec.lifecycle.shutdownTime`.
        shutdown_time: Option<Text>,
        /// The warm pool named (`spec.warmpool` in v1alpha1, `spec.warmPoolRef.name` in v1beta1).
        warm_pool: Option<Text>,
        /// `spec.sandboxTemplateRef.name` (v1alpha1).
        template: Option<Text>,
    },
    /// Fields of a `Pod`.
    Pod {
        /// Annotation `openshell.io/sandbox-id`: the gateway's sandbox identity.
        sandbox_id_annotation: Option<Text>,
        /// `status.phase`.
        phase: Option<Text>,
    },
    /// Fields of a `PersistentVolumeClaim`.
    PersistentVolumeClaim {
        /// `spec.volumeName`: the bound PV.
        volume_name: Option<Text>,
        /// `status.phase`.
        phase: Option<Text>,
    },
}

/// One observed change of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChange {
    /// Which kind of object.
    pub kind: ObjectKind,
    /// The apiVersion it was observed in (informational; identity never depends on it).
    pub api_version: Text,
    /// Namespace.
    pub namespace: Text,
    /// Name (reused across generations: identity is the uid).
    pub name: Text,
    /// The object's uid.
    pub uid: Text,
    /// The object's resourceVersion when observed.
    pub resource_version: Text,
    /// What happened.
    pub change: ChangeKind,
    /// The controller owner reference, if any.
    pub controller: Option<OwnerRef>,
    /// `metadata.deletionTimestamp`, if the object is terminating.
    pub deletion_timestamp: Option<Text>,
    /// Kind-specific identity fields.
    pub fields: KindFields,
}

impl ObjectChange {
    /// Whether the object carries a deletionTimestamp.
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// Whether two observations carry the same identity-relevant state, ignoring the
    /// resourceVersion and the change kind (status churn appends nothing).
    pub fn same_state_as(&self, other: &ObjectChange) -> bool {
        self.kind == other.kind
            && self.api_version == other.api_version
            && self.namespace == other.namespace
            && self.name == other.name
            && self.uid == other.uid
            && self.controller == other.controller
            && self.deletion_timestamp == other.deletion_timestamp
            && self.fields == other.fields
    }

    /// The same observation, now marked as missing on resync.
    pub fn into_missing_on_resync(mut self) -> ObjectChange {
        self.change = ChangeKind::MissingOnResync;
        self
    }
}
