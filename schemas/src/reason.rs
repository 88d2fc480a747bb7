//! The decision vocabulary: refusal reasons (DOMAIN.md §5) and the transitions an
//! entry can cause. Both are part of the stored format, so names never change.

use serde::{Deserialize, Serialize};

/// Why a check did not allow (or why a binding ended). Serialized as the
/// SCREAMING_SNAKE_CASE code of DOMAIN.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The ledger never recorded this pod uid, and its name is free.
    UnknownPod,
    /// The pod name now belongs to another uid: a replayed identity.
    PodUidMismatch,
    /// The pod has a deletionTimestamp.
    PodTerminating,
    /// This uid was bound and no longer is: a stale or replayed binding.
    BindingReleased,
    /// The sandbox is warm (pool-owned) or ownerless: nobody claimed it.
    NotClaimed,
    /// A controller reference names an object the ledger does not hold alive, or an object
    /// of the chain names several controller references.
    OwnerChainBroken,
    /// The claim uid differs from the one expected (claim recreated under the same name).
    ClaimUidMismatch,
    /// The claim has a deletionTimestamp.
    ClaimTerminating,
    /// The claim's `status.sandbox.name` does not name this sandbox.
    ClaimStatusMismatch,
    /// The caller's sandbox identity differs from the recorded one.
    SandboxIdMismatch,
    /// The pod's sandbox-id annotation changed after the binding began.
    IdentityMutated,
    /// The sandbox or pod was bound under another claim before.
    SingleUseViolation,
    /// A workspace PVC or its PV was bound under another claim before.
    WorkspaceReused,
    /// The watchers are not synced or not healthy: the answer cannot be trusted.
    LedgerNotReady,
    /// The caller asked for a newer entry than this replica holds.
    LedgerBehind,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 15] = [
        Reason::UnknownPod,
        Reason::PodUidMismatch,
        Reason::PodTerminating,
        Reason::BindingReleased,
        Reason::NotClaimed,
        Reason::OwnerChainBroken,
        Reason::ClaimUidMismatch,
        Reason::ClaimTerminating,
        Reason::ClaimStatusMismatch,
        Reason::SandboxIdMismatch,
        Reason::IdentityMutated,
        Reason::SingleUseViolation,
        Reason::WorkspaceReused,
        Reason::LedgerNotReady,
        Reason::LedgerBehind,
    ];

    /// The reason code as written in DOMAIN.md §5.
    pub fn code(self) -> &'static str {
        match self {
            Reason::UnknownPod => "UNKNOWN_POD",
            Reason::PodUidMismatch => "POD_UID_MISMATCH",
            Reason::PodTerminating => "POD_TERMINATING",
            Reason::BindingReleased => "BINDING_RELEASED",
            Reason::NotClaimed => "NOT_CLAIMED",
            Reason::OwnerChainBroken => "OWNER_CHAIN_BROKEN",
            Reason::ClaimUidMismatch => "CLAIM_UID_MISMATCH",
            Reason::ClaimTerminating => "CLAIM_TERMINATING",
            Reason::ClaimStatusMismatch => "CLAIM_STATUS_MISMATCH",
            Reason::SandboxIdMismatch => "SANDBOX_ID_MISMATCH",
            Reason::IdentityMutated => "IDENTITY_MUTATED",
            Reason::SingleUseViolation => "SINGLE_USE_VIOLATION",
            Reason::WorkspaceReused => "WORKSPACE_REUSED",
            Reason::LedgerNotReady => "LEDGER_NOT_READY",
            Reason::LedgerBehind => "LEDGER_BEHIND",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// How a pod is bound to its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// Through a `SandboxClaim` that controls the Sandbox.
    Claim,
    /// A directly created Sandbox (no claim), matched on `openshell.ai/sandbox-id`.
    Direct,
}

/// A consequence of an entry, derived while appending and re-derived on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "transition")]
pub enum Transition {
    /// Pod became bound to a sandbox.
    Bound {
        /// Claim or direct.
        binding: BindingKind,
        /// The pod's uid.
        pod_uid: String,
        /// The sandbox's uid.
        sandbox_uid: String,
        /// The claim's uid (claim bindings only).
        claim_uid: Option<String>,
    },
    /// Pod stopped being bound.
    Released {
        /// The pod's uid.
        pod_uid: String,
        /// The sandbox's uid it was bound to.
        sandbox_uid: String,
        /// The claim's uid it was bound through, if any.
        claim_uid: Option<String>,
        /// The first failing check of the binding rule after this entry.
        reason: Reason,
    },
    /// A sandbox or pod bound under one claim is now claimed by another.
    SingleUseViolation {
        /// Kind of the reused object.
        kind: crate::ObjectKind,
        /// Uid of the reused object.
        uid: String,
        /// The claim it was first bound under.
        first_claim_uid: String,
        /// The claim now trying to use it.
        new_claim_uid: String,
    },
    /// A workspace (PVC, or the PV behind it) bound under one claim is reused by another.
    WorkspaceReused {
        /// The PVC now offered to the new claim.
        pvc_uid: String,
        /// The PV name, when the reuse is through the volume.
        volume_name: Option<String>,
        /// The claim it was first bound under.
        first_claim_uid: String,
        /// The claim now trying to use it.
        new_claim_uid: String,
    },
    /// A workspace PVC outlives its sandbox.
    WorkspaceOrphaned {
        /// The PVC's uid.
        pvc_uid: String,
        /// The uid of the sandbox it belonged to.
        sandbox_uid: String,
    },
    /// A bound pod's `openshell.io/sandbox-id` annotation changed.
    IdentityMutated {
        /// The pod's uid.
        pod_uid: String,
        /// The annotation when the binding began.
        from: Option<String>,
        /// The annotation now.
        to: Option<String>,
    },
}
