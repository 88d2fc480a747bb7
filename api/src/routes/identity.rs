//! Identity: `POST /v1/identity/check` (is this pod bound to what it claims?) and
//! `GET /v1/bindings/{pod_uid}` (its current binding).

use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{CheckRequest, Verdict};
use schemas::{ObjectKind, Reason};
use serde::Serialize;

use super::{position, Position};
use crate::extract::{self, JsonBody};
use crate::{ApiError, Service, RECORDED_DENIALS};

#[derive(Serialize)]
struct CheckResponse<'a> {
    decision: Verdict,
    reason: Option<Reason>,
    detail: Option<&'a str>,
    binding: Option<&'a ledger::BindingView>,
    ledger: Position,
}

/// `POST /v1/identity/check`: the binding rule at the head; 200 allow or deny, 503 not ready.
pub(super) async fn check(
    State(service): State<Service>,
    JsonBody(request): JsonBody<CheckRequest>,
) -> Result<Response, ApiError> {
    extract::check_request(&request)?;
    let started = Instant::now();
    let (decision, position) = {
        let ledger = service.read()?;
        let unready = service.unready_because(&ledger);
        let mut decision = ledger.check(&request, unready.is_none());
        if let (Verdict::NotReady, Some(why)) = (decision.decision, unready) {
            // The projection knows only that it may not answer; say why.
            decision.detail = Some(why);
        }
        (decision, position(&ledger))
    };
    let inner = &service.inner;
    inner
        .metrics
        .check(&decision, started.elapsed().as_secs_f64());
    if let (Verdict::Deny, Some(reason)) = (decision.decision, decision.reason) {
        if RECORDED_DENIALS.contains(&reason)
            && !inner.denials.record(
                &request.pod_uid,
                &request.namespace,
                &request.pod_name,
                reason,
                (inner.clock)(),
            )
        {
            inner.metrics.denial_dropped();
        }
    }
    let status = match decision.decision {
        Verdict::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        Verdict::Allow | Verdict::Deny => StatusCode::OK,
    };
    let body = CheckResponse {
        decision: decision.decision,
        reason: decision.reason,
        detail: decision.detail.as_deref(),
        binding: decision.binding.as_deref(),
        ledger: position,
    };
    Ok((status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

fn path_uid(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(uid) = path.map_err(|r| ApiError::query(r.body_text()))?;
    extract::uid("pod_uid", &uid).map_err(ApiError::query)?;
    Ok(uid)
}

/// `GET /v1/bindings/{pod_uid}`: the current binding (claim or direct), or 404 with the
/// first failing check.
pub(super) async fn binding(
    State(service): State<Service>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let pod_uid = path_uid(path)?;
    let ledger = service.read()?;
    // Before the lookup: a pod the ledger has not seen yet is unknown only to a fresh one.
    if let Some(why) = service.unready_because(&ledger) {
        return Err(ApiError::NotReady(why));
    }
    let Some(pod) = ledger
        .projection()
        .object(&pod_uid)
        .filter(|r| r.current.kind == ObjectKind::Pod)
    else {
        return Err(ApiError::NotBound {
            reason: Reason::UnknownPod,
            detail: "the ledger never recorded this pod uid".into(),
        });
    };
    let request = CheckRequest {
        namespace: pod.current.namespace.to_string(),
        pod_name: pod.current.name.to_string(),
        pod_uid: pod_uid.clone(),
        require_claim: false,
        ..CheckRequest::default()
    };
    let decision = ledger.check(&request, true);
    match (decision.decision, decision.binding) {
        (Verdict::Allow, Some(binding)) => {
            let body = serde_json::json!({
                "binding": binding,
                "bindings": ledger.projection().bindings_of(&pod_uid),
                "ledger": position(&ledger),
            });
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        (Verdict::NotReady, _) => Err(ApiError::NotReady(decision.detail.unwrap_or_default())),
        (_, _) => Err(ApiError::NotBound {
            reason: decision.reason.unwrap_or(Reason::OwnerChainBroken),
            detail: decision.detail.unwrap_or_default(),
        }),
    }
}
