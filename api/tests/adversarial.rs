//! The adversarial cases of the design discussion (`docs/DOMAIN.md` §8), each asked over
//! HTTP with the exact decision and reason: the pod annotation not matching the expected
//! sandbox id; a Sandbox owner uid mismatch; a claim owner uid mismatch or a missing
//! owner; a claim status naming another Sandbox; a claim deleted and recreated under the
//! same name; a stale binding after deletion; the identity annotation changed after
//! binding; a claimed pod, Sandbox or PVC (or its PV) reused for a later claim.

mod common;

use common::k8s::{added, deleted, modified, request, with, ObjectBuilder, Owner};
use common::Server;
use serde_json::json;

const POOL: &str = "p0010000-0900-4000-8000-000000000001";
const CLAIM_A: &str = "c1a1m000-0900-4000-8000-00000000000a";
const CLAIM_B: &str = "c1a1m000-0900-4000-8000-00000000000b";
const SANDBOX_A: &str = "5a4db0x0-0900-4000-8000-00000000000a";
const SANDBOX_B: &str = "5a4db0x0-0900-4000-8000-00000000000b";
const POD_A: &str = "p0d00000-0900-4000-8000-00000000000a";
const POD_A2: &str = "p0d00000-0900-4000-8000-0000000000a2";
const POD_B: &str = "p0d00000-0900-4000-8000-00000000000b";
const PVC_A: &str = "pvc00000-0900-4000-8000-00000000000a";
const PVC_B: &str = "pvc00000-0900-4000-8000-00000000000b";
const FORGED: &str = "deadbeef-0900-4000-8000-000000000000";

const WARM: &str = "python-pool-x1";

/// Warm create, then bind: claim `alpha` adopts Sandbox `python-pool-x1` with its pod
/// (`sb-a`) and workspace PVC (PV `pv-a`). Asserts the warm pod is not claimed, then bound.
async fn bound() -> (Server, ObjectBuilder) {
    let mut server = Server::start().await;
    let mut k = ObjectBuilder::default();
    server.ingest_events(&[
        added(k.sandbox(
            WARM,
            SANDBOX_A,
            Owner::Pool("python-pool", POOL),
            None,
            None,
        )),
        added(k.pvc(
            "workspace-python-pool-x1",
            PVC_A,
            Some((WARM, SANDBOX_A)),
            "pv-a",
        )),
        added(k.pod(WARM, POD_A, (WARM, SANDBOX_A), Some("sb-a"), false)),
    ]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("NOT_CLAIMED"))
        .await;
    server.ingest_events(&[
        modified(k.sandbox(
            WARM,
            SANDBOX_A,
            Owner::Claim("alpha", CLAIM_A),
            Some(CLAIM_A),
            None,
        )),
        added(k.claim("alpha", CLAIM_A, Some(WARM), false)),
    ]);
    let body = server
        .expect(
            &with(
                request(WARM, POD_A),
                json!({"sandbox_id": "sb-a", "claim_uid": CLAIM_A}),
            ),
            "allow",
            None,
        )
        .await;
    let binding = &body["binding"];
    assert_eq!(binding["kind"], "claim");
    assert_eq!(binding["sandbox"]["uid"], SANDBOX_A);
    assert_eq!(binding["claim"]["uid"], CLAIM_A);
    assert_eq!(binding["pvcs"][0]["uid"], PVC_A);
    assert_eq!(binding["sandbox_id"], "sb-a");
    assert!(binding["since_seq"].as_u64().unwrap() > 0);
    assert!(binding["since"].as_str().is_some());
    (server, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_annotation_not_matching_the_expected_sandbox_id() {
    let (server, _) = bound().await;
    for extra in [
        json!({"sandbox_id": "sb-b"}),
        json!({"sandbox_name": "python-pool-x2"}),
        json!({"sandbox_uid": SANDBOX_B}),
    ] {
        server
            .expect(
                &with(request(WARM, POD_A), extra),
                "deny",
                Some("SANDBOX_ID_MISMATCH"),
            )
            .await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_owner_uid_mismatch() {
    let (mut server, mut k) = bound().await;
    // A pod naming the real Sandbox by name but another uid.
    server.ingest_events(&[added(k.pod(
        "forged",
        POD_B,
        (WARM, FORGED),
        Some("sb-a"),
        false,
    ))]);
    server
        .expect(
            &request("forged", POD_B),
            "deny",
            Some("OWNER_CHAIN_BROKEN"),
        )
        .await;
    // A caller expecting another Sandbox uid than the bound pod's.
    server
        .expect(
            &with(request(WARM, POD_A), json!({"sandbox_uid": FORGED})),
            "deny",
            Some("SANDBOX_ID_MISMATCH"),
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_owner_uid_mismatch_or_missing_owner() {
    let (mut server, mut k) = bound().await;
    server.ingest_events(&[
        // Controlled by "alpha" with a uid that is not the live claim's.
        added(k.sandbox(
            "s-forged",
            SANDBOX_B,
            Owner::Claim("alpha", FORGED),
            Some(FORGED),
            None,
        )),
        added(k.pod(
            "s-forged",
            POD_B,
            ("s-forged", SANDBOX_B),
            Some("sb-a"),
            false,
        )),
        // Controlled by the live claim, but its claim-uid label names another claim.
        added(k.sandbox(
            "s-label",
            "5a4db0x0-0900-4000-8000-0000000000c1",
            Owner::Claim("alpha", CLAIM_A),
            Some(CLAIM_B),
            None,
        )),
        added(k.pod(
            "s-label",
            "p0d00000-0900-4000-8000-0000000000c1",
            ("s-label", "5a4db0x0-0900-4000-8000-0000000000c1"),
            Some("sb-a"),
            false,
        )),
        // No owner at all (and no direct sandbox-id label).
        added(k.sandbox(
            "s-none",
            "5a4db0x0-0900-4000-8000-0000000000d1",
            Owner::None,
            None,
            None,
        )),
        added(k.pod(
            "s-none",
            "p0d00000-0900-4000-8000-0000000000d1",
            ("s-none", "5a4db0x0-0900-4000-8000-0000000000d1"),
            Some("sb-a"),
            false,
        )),
    ]);
    server
        .expect(
            &request("s-forged", POD_B),
            "deny",
            Some("OWNER_CHAIN_BROKEN"),
        )
        .await;
    server
        .expect(
            &request("s-label", "p0d00000-0900-4000-8000-0000000000c1"),
            "deny",
            Some("CLAIM_UID_MISMATCH"),
        )
        .await;
    server
        .expect(
            &request("s-none", "p0d00000-0900-4000-8000-0000000000d1"),
            "deny",
            Some("NOT_CLAIMED"),
        )
        .await;
    // The caller expects another claim than the one the pod is bound through.
    server
        .expect(
            &with(request(WARM, POD_A), json!({"claim_uid": CLAIM_B})),
            "deny",
            Some("CLAIM_UID_MISMATCH"),
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_status_naming_another_sandbox() {
    let (mut server, mut k) = bound().await;
    // A shadow Sandbox controlled by the claim, while the status names the real one.
    server.ingest_events(&[
        added(k.sandbox(
            "shadow",
            SANDBOX_B,
            Owner::Claim("alpha", CLAIM_A),
            Some(CLAIM_A),
            None,
        )),
        added(k.pod("shadow", POD_B, ("shadow", SANDBOX_B), Some("sb-a"), false)),
    ]);
    server
        .expect(
            &request("shadow", POD_B),
            "deny",
            Some("CLAIM_STATUS_MISMATCH"),
        )
        .await;
    // The status moves away from the bound Sandbox.
    server.ingest_events(&[modified(k.claim(
        "alpha",
        CLAIM_A,
        Some("python-pool-x9"),
        false,
    ))]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("CLAIM_STATUS_MISMATCH"))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_deleted_and_recreated_under_the_same_name() {
    let (mut server, mut k) = bound().await;
    server.ingest_events(&[deleted(k.claim("alpha", CLAIM_A, Some(WARM), false))]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    server.ingest_events(&[
        deleted(k.pod(WARM, POD_A, (WARM, SANDBOX_A), Some("sb-a"), false)),
        deleted(k.pvc(
            "workspace-python-pool-x1",
            PVC_A,
            Some((WARM, SANDBOX_A)),
            "pv-a",
        )),
        deleted(k.sandbox(
            WARM,
            SANDBOX_A,
            Owner::Claim("alpha", CLAIM_A),
            Some(CLAIM_A),
            None,
        )),
        // Recreated: same claim name, new uids everywhere (cold path).
        added(k.claim("alpha", CLAIM_B, Some("alpha"), false)),
        added(k.sandbox(
            "alpha",
            SANDBOX_B,
            Owner::Claim("alpha", CLAIM_B),
            Some(CLAIM_B),
            None,
        )),
        added(k.pvc("workspace-alpha", PVC_B, Some(("alpha", SANDBOX_B)), "pv-b")),
        added(k.pod("alpha", POD_B, ("alpha", SANDBOX_B), Some("sb-b"), false)),
    ]);
    // A caller that remembers the old claim uid.
    server
        .expect(
            &with(request("alpha", POD_B), json!({"claim_uid": CLAIM_A})),
            "deny",
            Some("CLAIM_UID_MISMATCH"),
        )
        .await;
    server
        .expect(
            &with(
                request("alpha", POD_B),
                json!({"claim_uid": CLAIM_B, "sandbox_id": "sb-b"}),
            ),
            "allow",
            None,
        )
        .await;
    // The old pod uid replayed, under its own name and under the new pod's name.
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    server
        .expect(&request("alpha", POD_A), "deny", Some("POD_UID_MISMATCH"))
        .await;
    // A uid the ledger never saw, presented under the new pod's name.
    server
        .expect(&request("alpha", FORGED), "deny", Some("POD_UID_MISMATCH"))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_binding_after_deletion() {
    let (mut server, mut k) = bound().await;
    server.ingest_events(&[modified(k.pod(
        WARM,
        POD_A,
        (WARM, SANDBOX_A),
        Some("sb-a"),
        true,
    ))]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("POD_TERMINATING"))
        .await;
    server.ingest_events(&[deleted(k.pod(
        WARM,
        POD_A,
        (WARM, SANDBOX_A),
        Some("sb-a"),
        true,
    ))]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    // The Sandbox controller replaces the pod: same name, new uid, same claim.
    server.ingest_events(&[added(k.pod(
        WARM,
        POD_A2,
        (WARM, SANDBOX_A),
        Some("sb-a"),
        false,
    ))]);
    server
        .expect(
            &with(request(WARM, POD_A2), json!({"sandbox_id": "sb-a"})),
            "allow",
            None,
        )
        .await;
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    // The Sandbox goes (background cascade): the live pod's binding is stale too.
    server.ingest_events(&[deleted(k.sandbox(
        WARM,
        SANDBOX_A,
        Owner::Claim("alpha", CLAIM_A),
        Some(CLAIM_A),
        None,
    ))]);
    server
        .expect(&request(WARM, POD_A2), "deny", Some("BINDING_RELEASED"))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_annotation_changed_after_binding() {
    let (mut server, mut k) = bound().await;
    server.ingest_events(&[modified(k.pod(
        WARM,
        POD_A,
        (WARM, SANDBOX_A),
        Some("sb-evil"),
        false,
    ))]);
    for extra in [
        json!({}),
        json!({"sandbox_id": "sb-evil"}),
        json!({"sandbox_id": "sb-a"}),
    ] {
        server
            .expect(
                &with(request(WARM, POD_A), extra),
                "deny",
                Some("IDENTITY_MUTATED"),
            )
            .await;
    }
    // Removing it is no better.
    server.ingest_events(&[modified(k.pod(WARM, POD_A, (WARM, SANDBOX_A), None, false))]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("IDENTITY_MUTATED"))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_sandbox_and_its_pod_reused_for_a_later_claim() {
    let (mut server, mut k) = bound().await;
    // Orphan release: the Sandbox loses its controller (the stale claim-uid label stays).
    server.ingest_events(&[
        modified(k.claim("alpha", CLAIM_A, Some(WARM), true)),
        modified(k.sandbox(WARM, SANDBOX_A, Owner::None, Some(CLAIM_A), None)),
        deleted(k.claim("alpha", CLAIM_A, Some(WARM), true)),
    ]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    // A later claim adopts the used Sandbox (and so the pod that ran under claim alpha).
    server.ingest_events(&[
        modified(k.sandbox(
            WARM,
            SANDBOX_A,
            Owner::Claim("beta", CLAIM_B),
            Some(CLAIM_B),
            None,
        )),
        added(k.claim("beta", CLAIM_B, Some(WARM), false)),
    ]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("SINGLE_USE_VIOLATION"))
        .await;
    server
        .expect(
            &with(request(WARM, POD_A), json!({"claim_uid": CLAIM_B})),
            "deny",
            Some("SINGLE_USE_VIOLATION"),
        )
        .await;
    // A fresh pod on the reused Sandbox is refused as well.
    server.ingest_events(&[added(k.pod(
        WARM,
        POD_A2,
        (WARM, SANDBOX_A),
        Some("sb-b"),
        false,
    ))]);
    server
        .expect(&request(WARM, POD_A2), "deny", Some("SINGLE_USE_VIOLATION"))
        .await;
    // The violation is in the Sandbox's history.
    let (_, history) = server
        .get(&format!("/v1/history?sandbox_uid={SANDBOX_A}"))
        .await;
    let transitions: Vec<String> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["entry"]["transitions"].as_array().unwrap().clone())
        .map(|t| t["transition"].as_str().unwrap().to_string())
        .collect();
    assert!(
        transitions.contains(&"single_use_violation".to_string()),
        "{transitions:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_workspace_pvc_or_its_volume_reused_for_a_later_claim() {
    let (mut server, mut k) = bound().await;
    // Retain-style release: the PVC is orphaned and outlives its Sandbox and pod.
    server.ingest_events(&[
        modified(k.pvc("workspace-python-pool-x1", PVC_A, None, "pv-a")),
        deleted(k.pod(WARM, POD_A, (WARM, SANDBOX_A), Some("sb-a"), false)),
        deleted(k.sandbox(
            WARM,
            SANDBOX_A,
            Owner::Claim("alpha", CLAIM_A),
            Some(CLAIM_A),
            None,
        )),
        deleted(k.claim("alpha", CLAIM_A, Some(WARM), false)),
    ]);
    server
        .expect(&request(WARM, POD_A), "deny", Some("BINDING_RELEASED"))
        .await;
    // A later claim's Sandbox adopts the used PVC.
    server.ingest_events(&[
        added(k.claim("gamma", CLAIM_B, Some("gamma"), false)),
        added(k.sandbox(
            "gamma",
            SANDBOX_B,
            Owner::Claim("gamma", CLAIM_B),
            Some(CLAIM_B),
            None,
        )),
        modified(k.pvc(
            "workspace-python-pool-x1",
            PVC_A,
            Some(("gamma", SANDBOX_B)),
            "pv-a",
        )),
        added(k.pod("gamma", POD_B, ("gamma", SANDBOX_B), Some("sb-g"), false)),
    ]);
    server
        .expect(&request("gamma", POD_B), "deny", Some("WORKSPACE_REUSED"))
        .await;
    // Another claim gets a new PVC bound to the same PV.
    let (claim, sandbox, pvc, pod) = (
        "c1a1m000-0900-4000-8000-0000000000e1",
        "5a4db0x0-0900-4000-8000-0000000000e1",
        "pvc00000-0900-4000-8000-0000000000e1",
        "p0d00000-0900-4000-8000-0000000000e1",
    );
    server.ingest_events(&[
        added(k.claim("delta", claim, Some("delta"), false)),
        added(k.sandbox(
            "delta",
            sandbox,
            Owner::Claim("delta", claim),
            Some(claim),
            None,
        )),
        added(k.pvc("workspace-delta", pvc, Some(("delta", sandbox)), "pv-a")),
        added(k.pod("delta", pod, ("delta", sandbox), Some("sb-d"), false)),
    ]);
    server
        .expect(&request("delta", pod), "deny", Some("WORKSPACE_REUSED"))
        .await;
    server.stop().await;
}
