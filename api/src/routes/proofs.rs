//! Proofs and integrity: the head (`/v1/head`), the ledger's integrity at a glance
//! (`/v1/integrity`), the latest signed checkpoint, and inclusion and consistency proofs
//! in the Merkle tree of the entries.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::LedgerView;
use schemas::bundle::{hash32_to_hex, ConsistencyProof, InclusionProof};
use serde::{Deserialize, Serialize};

use super::{blocking, json_bytes};
use crate::extract::QueryParams;
use crate::{ApiError, Service};

/// `GET /v1/head`: the newest entry.
pub(super) async fn head(State(service): State<Service>) -> Result<Response, ApiError> {
    let ledger = service.read()?;
    let head = ledger.head();
    let body = serde_json::json!({
        "seq": head.seq,
        "hash": head.hash,
        "observed_at": head.observed_at,
        "durable_seq": ledger.durable_seq(),
        "tree_size": ledger.tree_size(),
        "root": hash32_to_hex(&ledger.tree_root()),
    });
    Ok(Json(body).into_response())
}

/// `GET /v1/integrity`: the ledger's integrity at a glance: the head, the latest signed
/// checkpoint (its size, origin and the time of the last entry it covers) and whether the
/// ledger verified when it was opened.
pub(super) async fn integrity(State(service): State<Service>) -> Result<Response, ApiError> {
    blocking(&service, |service| {
        let ledger = service.read()?;
        let head = ledger.head();
        let latest = ledger.latest_checkpoint()?;
        let covered_at = match &latest {
            Some(latest) => ledger
                .entry(latest.checkpoint.size)?
                .map(|s| s.entry.observed_at),
            None => None,
        };
        let checkpoint = latest.map(|latest| {
            serde_json::json!({
                "origin": latest.checkpoint.origin,
                "size": latest.checkpoint.size,
                "root": hash32_to_hex(&latest.checkpoint.root),
                "covers_entry_observed_at": covered_at,
                "note": latest.note,
            })
        });
        let body = serde_json::json!({
            "head": {"seq": head.seq, "hash": head.hash, "observed_at": head.observed_at},
            "durable_seq": ledger.durable_seq(),
            "tree_size": ledger.tree_size(),
            "root": hash32_to_hex(&ledger.tree_root()),
            "verified_at_open": ledger.corruption().is_none(),
            "corruption": ledger.corruption().map(ToString::to_string),
            "checkpoint": checkpoint,
            "now": (service.inner.clock)(),
        });
        Ok(Json(body).into_response())
    })
    .await
}

/// `GET /v1/checkpoint`: the latest signed checkpoint, as the C2SP signed note itself.
pub(super) async fn checkpoint(State(service): State<Service>) -> Result<Response, ApiError> {
    let latest = blocking(&service, |service| {
        Ok(service.read()?.latest_checkpoint()?)
    })
    .await?;
    let Some(latest) = latest else {
        return Err(ApiError::request(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "no checkpoint has been signed yet (serve --signing-key signs them)",
        ));
    };
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-tree-size"),
                latest.checkpoint.size.to_string(),
            ),
        ],
        latest.note,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InclusionQuery {
    seq: Option<u64>,
    tree_size: Option<u64>,
}

#[derive(Serialize)]
struct InclusionAnswer {
    seq: u64,
    leaf_hash: String,
    root: String,
    #[serde(flatten)]
    proof: InclusionProof,
}

/// `GET /v1/proof/inclusion?seq=&tree_size=`: the audit path of entry `seq` (leaf
/// `seq - 1`) in the tree of `tree_size` leaves (default: the head).
pub(super) async fn inclusion_proof(
    State(service): State<Service>,
    QueryParams(query): QueryParams<InclusionQuery>,
) -> Result<Response, ApiError> {
    let seq = query
        .seq
        .ok_or_else(|| ApiError::query("seq is required"))?;
    if seq == 0 {
        return Err(ApiError::query("seq must be at least 1 (seqs start at 1)"));
    }
    if let Some(size) = query.tree_size.filter(|size| seq > *size) {
        return Err(ApiError::query(format!(
            "seq {seq} is not in the tree of size {size}"
        )));
    }
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let size = tree_size_of(&ledger, query.tree_size)?;
        if seq > size {
            return Err(ApiError::out_of_range(format!(
                "seq {seq} is beyond the head ({size})"
            )));
        }
        let stored = ledger
            .entry(seq)?
            .ok_or_else(|| ApiError::query(format!("entry {seq} is not stored")))?;
        let hashes = ledger.inclusion_proof(seq - 1, size)?;
        let answer = InclusionAnswer {
            seq,
            leaf_hash: hash32_to_hex(&schemas::merkle::leaf_hash(&stored.bytes)),
            root: hash32_to_hex(&ledger.root_at(size)?),
            proof: InclusionProof::new(seq - 1, size, hashes),
        };
        Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&answer)?))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsistencyQuery {
    from_size: Option<u64>,
    to_size: Option<u64>,
}

#[derive(Serialize)]
struct ConsistencyAnswer {
    from_root: String,
    to_root: String,
    #[serde(flatten)]
    proof: ConsistencyProof,
}

/// `GET /v1/proof/consistency?from_size=&to_size=`: the proof that the tree of
/// `from_size` leaves is a prefix of the tree of `to_size` (default: the head).
pub(super) async fn consistency_proof(
    State(service): State<Service>,
    QueryParams(query): QueryParams<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let from = query
        .from_size
        .ok_or_else(|| ApiError::query("from_size is required"))?;
    if from == 0 {
        return Err(ApiError::query("from_size must be at least 1"));
    }
    if let Some(to) = query.to_size.filter(|to| from > *to) {
        return Err(ApiError::query(format!(
            "from_size {from} is after to_size {to}"
        )));
    }
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let to = tree_size_of(&ledger, query.to_size)?;
        if from > to {
            return Err(ApiError::out_of_range(format!(
                "from_size {from} is beyond the head ({to})"
            )));
        }
        let hashes = ledger.consistency_proof(from, to)?;
        let answer = ConsistencyAnswer {
            from_root: hash32_to_hex(&ledger.root_at(from)?),
            to_root: hash32_to_hex(&ledger.root_at(to)?),
            proof: ConsistencyProof::new(from, to, hashes),
        };
        Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&answer)?))
    })
    .await
}

/// A requested tree size, checked against the head (default: the head's).
fn tree_size_of(ledger: &LedgerView, requested: Option<u64>) -> Result<u64, ApiError> {
    let head = ledger.tree_size();
    match requested {
        Some(size) if size > head => Err(ApiError::out_of_range(format!(
            "tree size {size} is beyond the head ({head})"
        ))),
        Some(size) => Ok(size),
        None => Ok(head),
    }
}
