//! The routes, their handlers, and the layers around them.
//!
//! Every route is declared once in [`specs`]: the router is built from that table and
//! [`route_table`] lists it, so the OpenAPI test compares the document with what is
//! actually served. Layers, outermost first: JSON error bodies for anything that is not
//! already JSON, panic catching, the request timeout, the body limit; on `/v1` routes
//! also bearer authentication, then the concurrency limit.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ledger::{CheckRequest, LedgerView, StoredEntry, Verdict};
use schemas::bundle::{hash32_to_hex, ConsistencyProof, InclusionProof};
use schemas::{Hash, ObjectKind, Reason};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::bundle::EntryPages;
use crate::extract::{self, JsonBody, QueryParams};
use crate::views::{EntryLine, StateView};
use crate::{ApiError, Service, RECORDED_DENIALS};

/// Default and largest page of `/v1/history` and `/v1/entries`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Entries read per lock acquisition when exporting.
const EXPORT_PAGE: usize = 1000;

/// One route: method, path (OpenAPI syntax, which axum 0.8 shares), whether it needs a
/// bearer token, and its handler.
struct Spec {
    method: Method,
    path: &'static str,
    auth: bool,
    handler: MethodRouter<Service>,
}

fn spec(method: Method, path: &'static str, auth: bool, handler: MethodRouter<Service>) -> Spec {
    Spec {
        method,
        path,
        auth,
        handler,
    }
}

fn specs() -> Vec<Spec> {
    use axum::routing::{get, post};
    vec![
        spec(Method::POST, "/v1/identity/check", true, post(check)),
        spec(Method::GET, "/v1/bindings/{pod_uid}", true, get(binding)),
        spec(Method::GET, "/v1/history", true, get(history)),
        spec(Method::GET, "/v1/state", true, get(state)),
        spec(Method::GET, "/v1/entries", true, get(entries)),
        spec(Method::GET, "/v1/export", true, get(export)),
        spec(Method::GET, "/v1/head", true, get(head)),
        spec(Method::GET, "/v1/timeline", true, get(timeline)),
        spec(Method::GET, "/v1/integrity", true, get(integrity)),
        spec(Method::GET, "/v1/checkpoint", true, get(checkpoint)),
        spec(
            Method::GET,
            "/v1/proof/inclusion",
            true,
            get(inclusion_proof),
        ),
        spec(
            Method::GET,
            "/v1/proof/consistency",
            true,
            get(consistency_proof),
        ),
        spec(Method::GET, "/healthz", false, get(healthz)),
        spec(Method::GET, "/readyz", false, get(readyz)),
        spec(Method::GET, "/metrics", false, get(metrics)),
        spec(Method::GET, "/openapi.json", false, get(openapi)),
        // The timeline page: public static assets; its data comes from /v1 with a token.
        spec(Method::GET, "/ui", false, get(crate::ui::redirect)),
        spec(Method::GET, "/ui/", false, get(crate::ui::index)),
        spec(Method::GET, "/ui/app.js", false, get(crate::ui::script)),
        spec(Method::GET, "/ui/app.css", false, get(crate::ui::style)),
    ]
}

/// Every (lowercase method, path) served.
pub(crate) fn route_table() -> Vec<(&'static str, &'static str)> {
    specs()
        .into_iter()
        .map(|s| (method_name(&s.method), s.path))
        .collect()
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        _ => "other",
    }
}

pub(crate) fn router(service: Service) -> Router {
    let options = &service.inner.options;
    let mut protected = Router::new();
    let mut open = Router::new();
    for spec in specs() {
        if spec.auth {
            protected = protected.route(spec.path, spec.handler);
        } else {
            open = open.route(spec.path, spec.handler);
        }
    }
    let protected = protected
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            limit_concurrency,
        ))
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            crate::auth::require_token,
        ));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    options.request_timeout,
                ))
                .layer(RequestBodyLimitLayer::new(options.body_limit))
                .layer(DefaultBodyLimit::disable()),
        )
        .layer(middleware::map_response(json_errors))
        .with_state(service)
}

async fn limit_concurrency(
    State(service): State<Service>,
    request: Request,
    next: Next,
) -> Response {
    let permits = std::sync::Arc::clone(&service.inner.permits);
    match permits.acquire_owned().await {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Unavailable("the service is shutting down".into()).into_response(),
    }
}

async fn no_route() -> ApiError {
    ApiError::request(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::request(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not answer this method",
    )
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": "internal_error", "detail": "internal error"})),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Gives every 4xx/5xx the `{"error", "detail"}` shape, whoever produced it (the body
/// limit, the timeout, the router).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let detail = match (status, text.is_empty()) {
        (StatusCode::REQUEST_TIMEOUT, _) => "the request took too long".to_string(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let body = serde_json::to_vec(&serde_json::json!({"error": code, "detail": detail}))
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Runs ledger reads that may take a while (sled reads, replay) off the async workers.
async fn blocking<T: Send + 'static>(
    service: &Service,
    work: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request task failed: {e}")))?
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response()
}

/// Where the ledger stood when an answer was computed.
#[derive(Debug, Serialize)]
struct Position {
    seq: u64,
    head_hash: Hash,
}

fn position(ledger: &LedgerView) -> Position {
    let head = ledger.head();
    Position {
        seq: head.seq,
        head_hash: head.hash,
    }
}

#[derive(Serialize)]
struct CheckResponse<'a> {
    decision: Verdict,
    reason: Option<Reason>,
    detail: Option<&'a str>,
    binding: Option<&'a ledger::BindingView>,
    ledger: Position,
}

/// `POST /v1/identity/check`: the binding rule at the head; 200 allow or deny, 503 not ready.
async fn check(
    State(service): State<Service>,
    JsonBody(request): JsonBody<CheckRequest>,
) -> Result<Response, ApiError> {
    extract::check_request(&request)?;
    let started = Instant::now();
    let (decision, position) = {
        let ledger = service.read()?;
        let ready = service.ready(&ledger);
        (ledger.check(&request, ready), position(&ledger))
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
async fn binding(
    State(service): State<Service>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let pod_uid = path_uid(path)?;
    let ledger = service.read()?;
    let ready = service.ready(&ledger);
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
        namespace: pod.current.namespace.clone(),
        pod_name: pod.current.name.clone(),
        pod_uid: pod_uid.clone(),
        require_claim: false,
        ..CheckRequest::default()
    };
    let decision = ledger.check(&request, ready);
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

/// A page of entries and the cursor of the next one.
#[derive(Serialize)]
struct Page<'a> {
    entries: Vec<EntryLine<'a>>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    next_after_seq: Option<u64>,
    head_seq: u64,
}

fn page_response(stored: &[StoredEntry], more: bool, head_seq: u64) -> Result<Response, ApiError> {
    let page = Page {
        entries: stored.iter().map(EntryLine::new).collect(),
        next_after_seq: if more {
            stored.last().map(|s| s.entry.seq)
        } else {
            None
        },
        head_seq,
    };
    Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&page)?))
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::query("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(ApiError::query(format!(
            "limit is {n}; at most {MAX_LIMIT} entries per page"
        ))),
        n => Ok(n),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    pod_uid: Option<String>,
    claim_uid: Option<String>,
    sandbox_uid: Option<String>,
    pvc_uid: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

enum Selector {
    Uid(&'static str, Option<ObjectKind>, String),
    Name(ObjectKind, String, String),
}

fn selector(query: HistoryQuery) -> Result<Selector, ApiError> {
    let uids = [
        ("pod_uid", Some(ObjectKind::Pod), query.pod_uid),
        ("claim_uid", Some(ObjectKind::SandboxClaim), query.claim_uid),
        ("sandbox_uid", Some(ObjectKind::Sandbox), query.sandbox_uid),
        (
            "pvc_uid",
            Some(ObjectKind::PersistentVolumeClaim),
            query.pvc_uid,
        ),
    ];
    let by_name = query.kind.is_some() || query.namespace.is_some() || query.name.is_some();
    let mut chosen: Vec<Selector> = uids
        .into_iter()
        .filter_map(|(field, kind, uid)| uid.map(|uid| (field, kind, uid)))
        .map(|(field, kind, uid)| {
            extract::uid(field, &uid).map_err(ApiError::query)?;
            Ok(Selector::Uid(field, kind, uid))
        })
        .collect::<Result<_, ApiError>>()?;
    if by_name {
        let (Some(kind), Some(namespace), Some(name)) = (query.kind, query.namespace, query.name)
        else {
            return Err(ApiError::query(
                "a history by name needs kind, namespace and name together",
            ));
        };
        let kind = ObjectKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(&kind))
            .ok_or_else(|| {
                ApiError::query(format!(
                    "unknown kind {kind:?}: one of Sandbox, SandboxClaim, Pod, PersistentVolumeClaim"
                ))
            })?;
        extract::name("namespace", &namespace).map_err(ApiError::query)?;
        extract::name("name", &name).map_err(ApiError::query)?;
        chosen.push(Selector::Name(kind, namespace, name));
    }
    match chosen.len() {
        1 => Ok(chosen.remove(0)),
        0 => Err(ApiError::query(
            "name one object: pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
        )),
        _ => Err(ApiError::query(
            "name exactly one object: pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
        )),
    }
}

/// `GET /v1/history`: every entry that recorded one object (and, for a pod uid, the
/// denied checks that presented it), in order, a page at a time.
async fn history(
    State(service): State<Service>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    let selector = selector(query)?;
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let seqs = selected_seqs(ledger.projection(), &selector)?;
        let start = seqs.partition_point(|seq| *seq <= after);
        let mut stored = Vec::with_capacity(limit.min(seqs.len() - start));
        let mut more = false;
        for seq in &seqs[start..] {
            if stored.len() == limit {
                more = true;
                break;
            }
            if let Some(entry) = ledger.entry(*seq)? {
                stored.push(entry);
            }
        }
        let head = ledger.head().seq;
        drop(ledger);
        page_response(&stored, more, head)
    })
    .await
}

/// The uids a selector names: one, or every uid a name had. A uid of another kind than
/// its field says is refused.
fn selected_uids(
    projection: &ledger::Projection,
    selector: &Selector,
) -> Result<Vec<String>, ApiError> {
    match selector {
        Selector::Uid(field, kind, uid) => {
            if let (Some(expected), Some(record)) = (kind, projection.object(uid)) {
                if record.current.kind != *expected {
                    return Err(ApiError::query(format!(
                        "{field} {uid} is a {}, not a {}",
                        record.current.kind.as_str(),
                        expected.as_str()
                    )));
                }
            }
            Ok(vec![uid.clone()])
        }
        Selector::Name(kind, namespace, name) => {
            Ok(projection.uids_of(*kind, namespace, name).to_vec())
        }
    }
}

/// Every seq that recorded one of the selected uids or names it, in order.
fn selected_seqs(
    projection: &ledger::Projection,
    selector: &Selector,
) -> Result<Vec<u64>, ApiError> {
    let mut seqs: Vec<u64> = selected_uids(projection, selector)?
        .iter()
        .flat_map(|uid| projection.history_of(uid).iter().copied())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineQuery {
    uid: Option<String>,
    pod_uid: Option<String>,
    claim_uid: Option<String>,
    sandbox_uid: Option<String>,
    pvc_uid: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/timeline`: the history of one object (a uid of any kind with `uid`) read as
/// events for people, with the watch gaps of its lifetime; what the page at `/ui/` shows.
async fn timeline(
    State(service): State<Service>,
    QueryParams(query): QueryParams<TimelineQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    let others = [
        &query.pod_uid,
        &query.claim_uid,
        &query.sandbox_uid,
        &query.pvc_uid,
        &query.kind,
        &query.namespace,
        &query.name,
    ];
    let selector = match query.uid {
        Some(_) if others.iter().any(|field| field.is_some()) => {
            return Err(ApiError::query(
                "name exactly one object: uid, pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
            ))
        }
        Some(uid) => {
            extract::uid("uid", &uid).map_err(ApiError::query)?;
            Selector::Uid("uid", None, uid)
        }
        None => selector(HistoryQuery {
            pod_uid: query.pod_uid,
            claim_uid: query.claim_uid,
            sandbox_uid: query.sandbox_uid,
            pvc_uid: query.pvc_uid,
            kind: query.kind,
            namespace: query.namespace,
            name: query.name,
            after_seq: None,
            limit: None,
        })?,
    };
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let projection = ledger.projection();
        let uids = selected_uids(projection, &selector)?;
        let seqs = selected_seqs(projection, &selector)?;
        let start = seqs.partition_point(|seq| *seq <= after);
        let page = &seqs[start..seqs.len().min(start.saturating_add(limit))];
        let next_after_seq = (start + page.len() < seqs.len())
            .then(|| page.last().copied())
            .flatten();
        let read = |seqs: &mut dyn Iterator<Item = u64>| -> Result<Vec<StoredEntry>, ApiError> {
            Ok(seqs
                .map(|seq| ledger.entry(seq))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect())
        };
        let entries = read(&mut page.iter().copied())?;
        // Each subject's last entry before the page: what its first event changed from.
        let baseline = read(&mut uids.iter().filter_map(|uid| {
            let history = projection.history_of(uid);
            history[..history.partition_point(|seq| *seq <= after)]
                .last()
                .copied()
        }))?;
        let head_seq = ledger.head().seq;
        let gap_scan = crate::ui::timeline::gap_window(
            projection,
            &uids,
            &entries,
            next_after_seq.is_none(),
            head_seq,
        );
        let gaps = match gap_scan {
            Some(scan) => {
                crate::ui::timeline::watch_gaps(ledger.entries(scan.from_seq, scan.to_seq))?
            }
            None => Vec::new(),
        };
        let timeline = crate::ui::timeline::Timeline::build(crate::ui::timeline::TimelineParts {
            projection,
            uids: &uids,
            baseline: &baseline,
            entries: &entries,
            gaps: &gaps,
            head_seq,
            next_after_seq,
            gap_scan,
        });
        Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&timeline)?))
    })
    .await
}

/// `GET /v1/integrity`: the ledger's integrity at a glance: the head, the latest signed
/// checkpoint (its size, origin and the time of the last entry it covers) and whether the
/// ledger verified when it was opened.
async fn integrity(State(service): State<Service>) -> Result<Response, ApiError> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/entries`: raw entries with hashes after a seq, a page at a time.
async fn entries(
    State(service): State<Service>,
    QueryParams(query): QueryParams<EntriesQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let head = ledger.head().seq;
        let mut stored = ledger
            .entries(after.saturating_add(1), head)
            .take(limit + 1)
            .collect::<Result<Vec<_>, _>>()?;
        drop(ledger);
        let more = stored.len() > limit;
        stored.truncate(limit);
        page_response(&stored, more, head)
    })
    .await
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::query(format!(
                "{field} must be an RFC 3339 time such as 2026-05-20T15:00:00Z: {e}"
            ))
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    as_of_seq: Option<u64>,
    as_of: Option<String>,
}

/// `GET /v1/state`: live objects and active bindings, now or as of a seq or a time.
async fn state(
    State(service): State<Service>,
    QueryParams(query): QueryParams<StateQuery>,
) -> Result<Response, ApiError> {
    let as_of = match (query.as_of_seq, query.as_of) {
        (Some(_), Some(_)) => return Err(ApiError::query("give as_of_seq or as_of, not both")),
        (seq, time) => (seq, time.map(|t| parse_time("as_of", &t)).transpose()?),
    };
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let seq = match as_of {
            (Some(seq), _) => Some(seq),
            (None, Some(time)) => Some(ledger.seq_at_time(time)?),
            (None, None) => None,
        };
        let bytes = match seq {
            Some(seq) if seq != ledger.head().seq => {
                let projection = ledger.state_at_seq(seq)?;
                drop(ledger);
                serde_json::to_vec(&StateView::new(&projection))?
            }
            _ => serde_json::to_vec(&StateView::new(ledger.projection()))?,
        };
        Ok(json_bytes(StatusCode::OK, bytes))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    bundle: Option<bool>,
    previous_size: Option<u64>,
    previous_root: Option<String>,
}

/// The export line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Jsonl,
    Csv,
    CloudEvents,
}

impl ExportFormat {
    fn parse(format: Option<&str>) -> Result<ExportFormat, ApiError> {
        match format {
            None | Some("jsonl") => Ok(ExportFormat::Jsonl),
            Some("csv") => Ok(ExportFormat::Csv),
            Some("cloudevents") => Ok(ExportFormat::CloudEvents),
            Some(other) => Err(ApiError::query(format!(
                "unsupported format {other:?}: jsonl, csv or cloudevents"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            // One structured-mode event (`application/cloudevents+json`) per line: not a
            // JSON array, so not `application/cloudevents-batch+json`.
            ExportFormat::CloudEvents => "application/x-ndjson",
        }
    }

    /// One page of the stream: the lines of `entries` (CSV rows without the header).
    fn page(self, entries: &[StoredEntry], source: &str) -> Result<Vec<u8>, ApiError> {
        let buffer = Vec::with_capacity(256 * 1024);
        match self {
            ExportFormat::Jsonl => {
                let mut buffer = buffer;
                crate::views::write_jsonl(&mut buffer, entries)?;
                Ok(buffer)
            }
            ExportFormat::Csv => {
                let mut csv = crate::formats::CsvExport::continuing(buffer);
                for stored in entries {
                    csv.write(stored)?;
                }
                csv.finish()
            }
            ExportFormat::CloudEvents => {
                let mut events = crate::formats::CloudEventsExport::new(buffer, source)?;
                for stored in entries {
                    events.write(stored)?;
                }
                events.finish()
            }
        }
    }
}

/// `GET /v1/export`: entries as JSON lines, CSV rows or CloudEvents, streamed a page per
/// lock acquisition; with `bundle=true`, a tar export bundle for offline verification.
async fn export(
    State(service): State<Service>,
    QueryParams(query): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = ExportFormat::parse(query.format.as_deref())?;
    if query.from_seq.is_some() && query.since.is_some() {
        return Err(ApiError::query("give from_seq or since, not both"));
    }
    if query.to_seq.is_some() && query.until.is_some() {
        return Err(ApiError::query("give to_seq or until, not both"));
    }
    let bundle = query.bundle.unwrap_or(false);
    if !bundle && (query.previous_size.is_some() || query.previous_root.is_some()) {
        return Err(ApiError::query(
            "previous_size and previous_root go with bundle=true",
        ));
    }
    if bundle && query.format.is_some() {
        return Err(ApiError::query(
            "a bundle holds jsonl entries: leave format out with bundle=true",
        ));
    }
    let since = query
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?;
    let (from_seq, to_seq) = (query.from_seq, query.to_seq);
    if let (Some(from), Some(to)) = (from_seq, to_seq) {
        if from > to {
            return Err(ApiError::query(format!(
                "from_seq {from} is after to_seq {to}"
            )));
        }
    }
    let (from, to) = blocking(&service, move |service| {
        let ledger = service.read()?;
        let head = ledger.head().seq;
        let from = match (from_seq, since) {
            (Some(seq), _) => seq.max(1),
            (None, Some(since)) => {
                ledger.seq_at_time(since - chrono::Duration::nanoseconds(1))? + 1
            }
            (None, None) => 1,
        };
        let to = match (to_seq, until) {
            (Some(seq), _) if seq > head => {
                return Err(ApiError::out_of_range(format!(
                    "to_seq {seq} is beyond the head ({head})"
                )))
            }
            (Some(seq), _) => Some(seq),
            (None, Some(until)) => Some(ledger.seq_at_time(until)?),
            (None, None) => None,
        };
        Ok((from, to))
    })
    .await?;
    if bundle {
        let previous = previous_checkpoint(query.previous_size, query.previous_root.as_deref())?;
        return export_bundle(service, from, to, previous).await;
    }
    let to = match to {
        Some(to) => to,
        None => service.read()?.head().seq,
    };
    let source = service.origin().to_string();
    if format == ExportFormat::CloudEvents {
        crate::formats::check_source(&source)?;
    }

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let producer = service.clone();
    tokio::spawn(async move {
        if format == ExportFormat::Csv {
            let header = crate::formats::CsvExport::new(Vec::new()).and_then(|h| h.finish());
            let header = header
                .map(Bytes::from)
                .map_err(|e| std::io::Error::other(e.to_string()));
            if sender.send(header).await.is_err() {
                return;
            }
        }
        let mut next = from;
        while next <= to {
            let source = source.clone();
            let page = blocking(&producer, move |service| {
                let entries = service
                    .read()?
                    .entries(next, to)
                    .take(EXPORT_PAGE)
                    .collect::<Result<Vec<_>, _>>()?;
                let last = entries.last().map(|stored| stored.entry.seq);
                Ok((format.page(&entries, &source)?, last))
            })
            .await;
            match page {
                Ok((buffer, Some(last))) => {
                    if sender.send(Ok(Bytes::from(buffer))).await.is_err() {
                        return; // the client went away
                    }
                    next = last + 1;
                }
                Ok((_, None)) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "export aborted");
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::HeaderName::from_static("x-claim-ledger-from-seq"),
                from.to_string(),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-to-seq"),
                to.to_string(),
            ),
        ],
        Body::from_stream(channel_stream(receiver)),
    )
        .into_response())
}

fn channel_stream(
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// The auditor's previous checkpoint, from `previous_size` and `previous_root` (64 hex).
fn previous_checkpoint(
    size: Option<u64>,
    root: Option<&str>,
) -> Result<Option<schemas::checkpoint::Checkpoint>, ApiError> {
    match (size, root) {
        (None, None) => Ok(None),
        (Some(size), Some(root)) => {
            // Hex, or the base64 of the checkpoint's own third line.
            let root = schemas::bundle::hash32_from_hex(root)
                .or_else(|| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(root)
                        .ok()
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                })
                .ok_or_else(|| {
                    ApiError::query(
                        "previous_root must be 64 hex digits or the base64 of 32 bytes (the checkpoint's root line)",
                    )
                })?;
            // The origin is not sent: the bundle's own checkpoint carries it.
            Ok(Some(schemas::checkpoint::Checkpoint {
                origin: String::new(),
                size,
                root,
                extensions: Vec::new(),
            }))
        }
        _ => Err(ApiError::query(
            "previous_size and previous_root go together",
        )),
    }
}

/// A tar export bundle, spooled to a temporary file (tar headers carry sizes) under one
/// read lock per page of entries, then streamed.
async fn export_bundle(
    service: Service,
    from: u64,
    to: Option<u64>,
    previous: Option<schemas::checkpoint::Checkpoint>,
) -> Result<Response, ApiError> {
    let (file, manifest) = blocking(&service, move |service| {
        let plan = {
            let ledger = service.read()?;
            let request = crate::bundle::BundleRequest {
                from_seq: Some(from),
                to_seq: to,
                previous,
            };
            crate::bundle::plan(&ledger, &request, (service.inner.clock)())?
        };
        let mut file = tempfile::tempfile()?;
        let pages = |from: u64, to: u64| -> Result<Vec<StoredEntry>, ApiError> {
            let ledger = service.read()?;
            (&*ledger).page(from, to)
        };
        crate::bundle::write_tar(pages, &plan, std::io::BufWriter::new(&mut file))?;
        use std::io::Seek;
        file.rewind()?;
        Ok((file, plan.manifest))
    })
    .await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        loop {
            let mut chunk = vec![0u8; 256 * 1024];
            match file.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"claim-ledger-{}-{}.tar\"",
                    manifest.from_seq, manifest.to_seq
                ),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-from-seq"),
                manifest.from_seq.to_string(),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-to-seq"),
                manifest.to_seq.to_string(),
            ),
        ],
        Body::from_stream(channel_stream(receiver)),
    )
        .into_response())
}

/// `GET /v1/checkpoint`: the latest signed checkpoint, as the C2SP signed note itself.
async fn checkpoint(State(service): State<Service>) -> Result<Response, ApiError> {
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
struct InclusionQuery {
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
async fn inclusion_proof(
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
struct ConsistencyQuery {
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
async fn consistency_proof(
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

/// `GET /v1/head`: the newest entry.
async fn head(State(service): State<Service>) -> Result<Response, ApiError> {
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

/// `GET /healthz`: the process answers.
async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 when the watchers are synced and the ledger verified at open.
async fn readyz(State(service): State<Service>) -> Result<Response, ApiError> {
    let (verified, corruption, head) = {
        let ledger = service.read()?;
        (
            ledger.corruption().is_none(),
            ledger.corruption().map(ToString::to_string),
            ledger.head().seq,
        )
    };
    let watchers_ready = service.inner.freshness.ready();
    let ready = verified && watchers_ready;
    let body = serde_json::json!({
        "ready": ready,
        "ledger": {"verified_at_open": verified, "corruption": corruption, "head_seq": head},
        "watchers": {"ready": watchers_ready, "report": service.inner.freshness.report()},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(service): State<Service>) -> Result<Response, ApiError> {
    let text = service
        .inner
        .metrics
        .encode()
        .map_err(|_| ApiError::Unavailable("cannot encode the metrics".into()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /openapi.json`.
async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}
