//! The HTTP surface: routing, discovery documents (aggregated discovery included), and the
//! verbs. How objects are represented (JSON, `PartialObjectMetadata`, `Table`) is the
//! `representation` module's; watch streams are the `watch` module's.
//!
//! Every request is recorded before it is handled. Errors are `Status` objects with the
//! right `code` and `reason`; malformed input never panics.

use crate::representation::{
    json_like, negotiate, parse_accept, render_repr, table, RenderedItems, Repr,
};
use crate::resource::{Resource, Served, AGENTS_GROUP, EXTENSIONS_GROUP};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{self, DeleteOpts, DeleteOutcome, StatusMode};
use crate::watch::{watch_stream, WatchRequest};
use crate::{util, Propagation, RecordedRequest, SimError, Simulator};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The router serving everything through one handler.
pub(crate) fn router(sim: Simulator) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// A LIST response body; fields in the order a `json!` map would write them.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    items: RenderedItems<'a>,
    kind: String,
    metadata: Value,
}

fn json_response(code: StatusCode, value: &impl Serialize) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &SimError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

fn not_found_path() -> SimError {
    SimError::NotFound {
        resource: String::new(),
        name: String::new(),
    }
}

fn not_found_response() -> Response {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound", "details": {}, "code": 404,
    });
    json_response(StatusCode::NOT_FOUND, &status)
}

async fn handle(State(sim): State<Simulator>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query_string = parts.uri.query().unwrap_or("").to_string();
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let host = header_str(header::HOST);
    drop(parts);
    sim.record_request(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query_string.clone(),
        accept: accept.clone(),
    });
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&SimError::BadRequest(format!(
                "could not read the request body: {e}"
            )))
        }
    };
    let query: HashMap<String, String> = form_urlencoded::parse(query_string.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let ctx = Ctx {
        sim: &sim,
        method: &method,
        query: &query,
        accept: &accept,
        content_type: &content_type,
        host: &host,
        body: &body,
    };
    match route(&ctx, &path) {
        Ok(resp) => resp,
        Err(e) if e == not_found_path() => not_found_response(),
        Err(e) => error_response(&e),
    }
}

struct Ctx<'a> {
    sim: &'a Simulator,
    method: &'a Method,
    query: &'a HashMap<String, String>,
    accept: &'a str,
    content_type: &'a str,
    host: &'a str,
    body: &'a [u8],
}

impl Ctx<'_> {
    fn served(&self) -> Served {
        self.sim.read_state(|s| s.config.served)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn only_get(&self) -> Result<(), SimError> {
        if self.method == Method::GET || self.method == Method::HEAD {
            Ok(())
        } else {
            Err(SimError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource: {}",
                self.method
            )))
        }
    }

    fn body_json(&self) -> Result<Value, SimError> {
        if self.body.is_empty() {
            return Err(SimError::BadRequest("the request body is empty".into()));
        }
        serde_json::from_slice(self.body)
            .map_err(|e| SimError::BadRequest(format!("the request body is not valid JSON: {e}")))
    }
}

fn route(ctx: &Ctx<'_>, path: &str) -> Result<Response, SimError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let served = ctx.served();
    match segs.as_slice() {
        ["version"] => {
            ctx.only_get()?;
            Ok(json_response(StatusCode::OK, &version_doc()))
        }
        ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            ctx.only_get()?;
            if let Some(v) = aggregated_version(ctx.accept) {
                return Ok(aggregated_response(v, &[core_group_discovery()]));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.host}]}),
            ))
        }
        ["api", "v1"] => {
            ctx.only_get()?;
            Ok(json_response(
                StatusCode::OK,
                &resource_list("", "v1", served),
            ))
        }
        ["apis"] => {
            ctx.only_get()?;
            if let Some(v) = aggregated_version(ctx.accept) {
                let groups: Vec<Value> = [AGENTS_GROUP, EXTENSIONS_GROUP]
                    .iter()
                    .map(|g| group_discovery(g, served))
                    .collect();
                return Ok(aggregated_response(v, &groups));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [group_doc(AGENTS_GROUP, served), group_doc(EXTENSIONS_GROUP, served)]}),
            ))
        }
        ["apis", group] if is_group(group) => {
            ctx.only_get()?;
            let mut doc = group_doc(group, served);
            doc["kind"] = "APIGroup".into();
            doc["apiVersion"] = "v1".into();
            Ok(json_response(StatusCode::OK, &doc))
        }
        ["apis", group, version] if is_group(group) && served.versions().contains(version) => {
            ctx.only_get()?;
            Ok(json_response(
                StatusCode::OK,
                &resource_list(group, version, served),
            ))
        }
        ["openapi", "v3"] => {
            ctx.only_get()?;
            Ok(json_response(StatusCode::OK, &openapi_root(served)))
        }
        ["openapi", "v3", "api", "v1"] => {
            ctx.only_get()?;
            Ok(json_response(
                StatusCode::OK,
                &openapi_group_version("", "v1"),
            ))
        }
        ["openapi", "v3", "apis", group, version]
            if is_group(group) && served.versions().contains(version) =>
        {
            ctx.only_get()?;
            Ok(json_response(
                StatusCode::OK,
                &openapi_group_version(group, version),
            ))
        }
        ["api", "v1", rest @ ..] => resource_route(ctx, "", "v1", rest),
        ["apis", group, version, rest @ ..]
            if is_group(group) && served.versions().contains(version) =>
        {
            resource_route(ctx, group, version, rest)
        }
        _ => Err(not_found_path()),
    }
}

/// The OpenAPI v3 root: one entry per served group-version.
fn openapi_root(served: Served) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=sim"}),
    );
    for group in [AGENTS_GROUP, EXTENSIONS_GROUP] {
        for version in served.versions() {
            let key = format!("apis/{group}/{version}");
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=sim")}),
            );
        }
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for one group-version: the item paths with their PATCH
/// operation tagged with the group-version-kind and the `fieldValidation` query parameter,
/// which is what kubectl checks to hand validation to the server (the simulator accepts
/// and ignores `fieldValidation`). Schemas are left out.
fn openapi_group_version(group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in resources_in(group) {
        let prefix = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/{version}")
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind()});
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind()),
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": verb,
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural()),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural()),
            json!({"get": op("list"), "post": op("post")}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (claim-ledger simulator)", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

fn is_group(group: &str) -> bool {
    group == AGENTS_GROUP || group == EXTENSIONS_GROUP
}

fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "35", "gitVersion": "v1.35.0-claim-ledger-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resources_in(group: &str) -> Vec<Resource> {
    Resource::ALL
        .into_iter()
        .filter(|r| r.group() == group)
        .collect()
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

fn resource_list(group: &str, version: &str, _served: Served) -> Value {
    let mut resources = Vec::new();
    for r in resources_in(group) {
        let mut entry = json!({
            "name": r.plural(), "singularName": r.singular(), "namespaced": true,
            "kind": r.kind(), "verbs": VERBS, "shortNames": r.short_names(),
        });
        if r.is_core() {
            entry["categories"] = json!(["all"]);
            entry["storageVersionHash"] = json!(util::fnv32a(r.plural()));
        }
        resources.push(entry);
        resources.push(json!({
            "name": format!("{}/status", r.plural()), "singularName": "", "namespaced": true,
            "kind": r.kind(), "verbs": STATUS_VERBS,
        }));
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn group_doc(group: &str, served: Served) -> Value {
    let versions: Vec<Value> = served
        .versions()
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": {"groupVersion": format!("{group}/{}", served.preferred()), "version": served.preferred()},
    })
}

fn aggregated_version(accept: &str) -> Option<&'static str> {
    for range in parse_accept(accept) {
        if !json_like(&range.mime) {
            continue;
        }
        if range.params.get("as").map(String::as_str) == Some("APIGroupDiscoveryList")
            && range.params.get("g").map(String::as_str) == Some("apidiscovery.k8s.io")
        {
            match range.params.get("v").map(String::as_str) {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => {}
            }
        } else if !range.params.contains_key("as") {
            return None;
        }
    }
    None
}

fn resource_discovery(r: Resource, version: &str) -> Value {
    let kind = json!({"group": r.group(), "version": version, "kind": r.kind()});
    let mut entry = json!({
        "resource": r.plural(), "responseKind": kind, "scope": "Namespaced",
        "singularResource": r.singular(), "verbs": VERBS, "shortNames": r.short_names(),
        "subresources": [{"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS}],
    });
    if r.is_core() {
        entry["categories"] = json!(["all"]);
    }
    entry
}

fn core_group_discovery() -> Value {
    json!({
        "metadata": {"name": ""},
        "versions": [{"version": "v1", "freshness": "Current",
            "resources": resources_in("").into_iter().map(|r| resource_discovery(r, "v1")).collect::<Vec<_>>()}],
    })
}

fn group_discovery(group: &str, served: Served) -> Value {
    let versions: Vec<Value> = served
        .versions()
        .iter()
        .map(|v| {
            json!({"version": v, "freshness": "Current",
                "resources": resources_in(group).into_iter().map(|r| resource_discovery(r, v)).collect::<Vec<_>>()})
        })
        .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

fn aggregated_response(version: &str, groups: &[Value]) -> Response {
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": groups,
    });
    let mut resp = json_response(StatusCode::OK, &doc);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn resource_route(
    ctx: &Ctx<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response, SimError> {
    let find = |plural: &str| Resource::from_plural(group, plural).ok_or_else(not_found_path);
    match rest {
        [plural] => {
            let resource = find(plural)?;
            if ctx.method != Method::GET {
                return Err(SimError::MethodNotAllowed(format!(
                    "{} on all namespaces is not allowed; use a namespaced path",
                    ctx.method
                )));
            }
            collection_get(ctx, resource, version, None)
        }
        ["namespaces", ns, plural] => {
            let resource = find(plural)?;
            match *ctx.method {
                Method::GET => collection_get(ctx, resource, version, Some(ns)),
                Method::POST => create(ctx, resource, version, ns),
                Method::DELETE => delete_collection(ctx, resource, version, ns),
                _ => Err(method_not_allowed(ctx)),
            }
        }
        ["namespaces", ns, plural, name] => {
            let resource = find(plural)?;
            match *ctx.method {
                Method::GET => get(ctx, resource, version, ns, name),
                Method::PUT => update(ctx, resource, version, ns, name, StatusMode::Ignore),
                Method::PATCH => patch(ctx, resource, version, ns, name, StatusMode::Ignore),
                Method::DELETE => delete(ctx, resource, version, ns, name),
                _ => Err(method_not_allowed(ctx)),
            }
        }
        ["namespaces", ns, plural, name, "status"] => {
            let resource = find(plural)?;
            match *ctx.method {
                Method::GET => get(ctx, resource, version, ns, name),
                Method::PUT => update(ctx, resource, version, ns, name, StatusMode::Only),
                Method::PATCH => patch(ctx, resource, version, ns, name, StatusMode::Only),
                _ => Err(method_not_allowed(ctx)),
            }
        }
        _ => Err(not_found_path()),
    }
}

fn method_not_allowed(ctx: &Ctx<'_>) -> SimError {
    SimError::MethodNotAllowed(format!(
        "the server does not allow this method on the requested resource: {}",
        ctx.method
    ))
}

fn selectors(ctx: &Ctx<'_>) -> Result<(LabelSelector, FieldSelector), SimError> {
    Ok((
        LabelSelector::parse(ctx.param("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(ctx.param("fieldSelector").unwrap_or(""))?,
    ))
}

fn flag(ctx: &Ctx<'_>, name: &str) -> Result<bool, SimError> {
    match ctx.param(name) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(SimError::BadRequest(format!(
            "invalid value for {name}: {other:?}"
        ))),
    }
}

fn collection_get(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    namespace: Option<&str>,
) -> Result<Response, SimError> {
    let repr = negotiate(ctx.accept, ctx.query)?;
    let (labels, fields) = selectors(ctx)?;
    if flag(ctx, "watch")? {
        let timeout = match ctx.param("timeoutSeconds") {
            None | Some("") => None,
            Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
                SimError::BadRequest(format!("invalid timeoutSeconds {t:?}"))
            })?)),
        };
        let request = WatchRequest {
            resource,
            namespace: namespace.map(str::to_string),
            version: version.to_string(),
            labels,
            fields,
            resource_version: ctx.param("resourceVersion").map(str::to_string),
            send_initial_events: flag(ctx, "sendInitialEvents")?,
            bookmarks: flag(ctx, "allowWatchBookmarks")?,
            timeout,
            repr,
        };
        let stream = watch_stream(ctx.sim.clone(), request)?;
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }
    let limit = match ctx.param("limit") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| SimError::BadRequest(format!("invalid limit {l:?}")))?,
        ),
    };
    if let Some(rv) = ctx.param("resourceVersion").filter(|v| !v.is_empty()) {
        rv.parse::<u64>()
            .map_err(|_| SimError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
    }
    let (items, rv, next) = ctx.sim.read_state(|s| {
        s.list_page(
            resource,
            namespace,
            &labels,
            &fields,
            limit,
            ctx.param("continue"),
        )
    })?;
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        list_meta["continue"] = next.into();
    }
    // Rendered after the state lock is released, from the shared stored objects.
    let (kind, api_version) = match repr {
        Repr::Full => (
            format!("{}List", resource.kind()),
            resource.api_version(version),
        ),
        Repr::Partial => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
        Repr::Table(tv, include) => {
            let objects: Vec<&Value> = items.iter().map(|o| &**o).collect();
            let body = table(resource, &objects, version, tv, include, list_meta);
            return Ok(json_response(StatusCode::OK, &body));
        }
    };
    let body = ListBody {
        api_version,
        items: RenderedItems {
            items: &items,
            repr,
            resource,
            version,
        },
        kind,
        metadata: list_meta,
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn respond_object(
    ctx: &Ctx<'_>,
    code: StatusCode,
    object: &Value,
    resource: Resource,
    version: &str,
) -> Result<Response, SimError> {
    let repr = negotiate(ctx.accept, ctx.query).unwrap_or(Repr::Full);
    Ok(json_response(
        code,
        &render_repr(&repr, object, resource, version),
    ))
}

fn get(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
    name: &str,
) -> Result<Response, SimError> {
    negotiate(ctx.accept, ctx.query)?;
    let object = ctx
        .sim
        .read_state(|s| s.get(resource, ns, name).cloned())
        .ok_or_else(|| SimError::not_found(resource, name))?;
    respond_object(ctx, StatusCode::OK, &object, resource, version)
}

fn require_json(ctx: &Ctx<'_>) -> Result<(), SimError> {
    let mime = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.is_empty() || mime == "application/json" {
        Ok(())
    } else {
        Err(SimError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json; got {mime:?}"
        )))
    }
}

fn create(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
) -> Result<Response, SimError> {
    require_json(ctx)?;
    let object = ctx.body_json()?;
    let created = ctx.sim.with_state(|s| {
        let created = s.create(resource, ns, object, Some(version), false)?;
        s.settle_all();
        Ok::<_, SimError>(created)
    })?;
    respond_object(ctx, StatusCode::CREATED, &created, resource, version)
}

fn update(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
    name: &str,
    mode: StatusMode,
) -> Result<Response, SimError> {
    require_json(ctx)?;
    let object = ctx.body_json()?;
    let updated = ctx.sim.with_state(|s| {
        let updated = s.update(resource, ns, name, object, mode, Some(version))?;
        s.settle_all();
        Ok::<_, SimError>(updated)
    })?;
    respond_object(ctx, StatusCode::OK, &updated, resource, version)
}

fn patch(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
    name: &str,
    mode: StatusMode,
) -> Result<Response, SimError> {
    let mime = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json_patch = match mime.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
        "application/json-patch+json" => true,
        _ => {
            return Err(SimError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {mime:?}"
            )))
        }
    };
    let body = ctx.body_json()?;
    let patched = ctx.sim.with_state(|s| {
        let patched = if json_patch {
            let mut doc = s
                .get(resource, ns, name)
                .map(|o| store::render(o, resource, version))
                .ok_or_else(|| SimError::not_found(resource, name))?;
            apply_json_patch(&mut doc, &body)?;
            s.update(resource, ns, name, doc, mode, Some(version))?
        } else {
            s.merge_patch(resource, ns, name, &body, mode, Some(version))?
        };
        s.settle_all();
        Ok::<_, SimError>(patched)
    })?;
    respond_object(ctx, StatusCode::OK, &patched, resource, version)
}

fn delete_opts(ctx: &Ctx<'_>) -> Result<DeleteOpts, SimError> {
    let mut opts = DeleteOpts::default();
    let body: Value = if ctx.body.is_empty() {
        Value::Null
    } else {
        ctx.body_json()?
    };
    if !body.is_null() && !body.is_object() {
        return Err(SimError::BadRequest(
            "DeleteOptions must be a JSON object".into(),
        ));
    }
    let policy = ctx
        .param("propagationPolicy")
        .map(str::to_string)
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let orphan = ctx
        .param("orphanDependents")
        .map(|v| v == "true")
        .or_else(|| body.get("orphanDependents").and_then(Value::as_bool));
    opts.policy = match (policy.as_deref(), orphan) {
        (Some(p), _) => Propagation::parse(p).ok_or_else(|| {
            SimError::BadRequest(format!(
                "invalid propagationPolicy {p:?}: must be Background, Foreground or Orphan"
            ))
        })?,
        (None, Some(true)) => Propagation::Orphan,
        _ => Propagation::Background,
    };
    opts.grace = match ctx.param("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse()
                .map_err(|_| SimError::BadRequest(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    if let Some(pre) = body.get("preconditions") {
        opts.uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.resource_version = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(opts)
}

fn success_status(resource: Resource, object: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": util::name_of(object), "group": resource.group(),
            "kind": resource.plural(), "uid": util::uid_of(object)},
    })
}

fn delete(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
    name: &str,
) -> Result<Response, SimError> {
    let opts = delete_opts(ctx)?;
    let outcome = ctx.sim.with_state(|s| {
        let outcome = s.delete(resource, ns, name, &opts)?;
        s.settle_all();
        Ok::<_, SimError>(outcome)
    })?;
    match outcome {
        DeleteOutcome::Deleted(object) => Ok(json_response(
            StatusCode::OK,
            &success_status(resource, &object),
        )),
        DeleteOutcome::Terminating(object) => {
            respond_object(ctx, StatusCode::OK, &object, resource, version)
        }
    }
}

fn delete_collection(
    ctx: &Ctx<'_>,
    resource: Resource,
    version: &str,
    ns: &str,
) -> Result<Response, SimError> {
    let opts = delete_opts(ctx)?;
    let (labels, fields) = selectors(ctx)?;
    let deleted = ctx.sim.with_state(|s| {
        let names: Vec<String> = s
            .iter(resource, Some(ns))
            .filter(|(_, v)| labels.matches(v) && fields.matches(v))
            .map(|(k, _)| k.2.clone())
            .collect();
        let mut out = Vec::new();
        for name in names {
            match s.delete(resource, ns, &name, &opts) {
                Ok(DeleteOutcome::Deleted(o) | DeleteOutcome::Terminating(o)) => out.push(o),
                Err(_) => {}
            }
        }
        s.settle_all();
        (out, s.rv)
    });
    let body = json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(version),
        "metadata": {"resourceVersion": deleted.1.to_string()},
        "items": deleted.0.iter().map(|o| store::render(o, resource, version)).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

// ----- RFC 6902 JSON patch -----

fn pointer_parts(path: &str) -> Result<Vec<String>, SimError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SimError::BadRequest(format!(
            "invalid JSON pointer {path:?}"
        )));
    };
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn bad_patch(msg: &str) -> SimError {
    SimError::Invalid(format!("the JSON patch could not be applied: {msg}"))
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, SimError> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| bad_patch(&format!("missing {p:?}")))?,
            Value::Array(a) => {
                let i: usize = p
                    .parse()
                    .map_err(|_| bad_patch(&format!("bad index {p:?}")))?;
                a.get_mut(i)
                    .ok_or_else(|| bad_patch(&format!("index {i} out of range")))?
            }
            _ => return Err(bad_patch("path goes through a scalar")),
        };
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, parts: &[String]) -> Result<Value, SimError> {
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| bad_patch("cannot remove the root"))?;
    match parent_mut(doc, parents)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| bad_patch(&format!("missing {last:?}"))),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| bad_patch("bad index"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(bad_patch("index out of range"))
            }
        }
        _ => Err(bad_patch("path goes through a scalar")),
    }
}

fn add_at(doc: &mut Value, parts: &[String], value: Value) -> Result<(), SimError> {
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| bad_patch("bad index"))?;
            if i <= a.len() {
                a.insert(i, value);
                Ok(())
            } else {
                Err(bad_patch("index out of range"))
            }
        }
        _ => Err(bad_patch("path goes through a scalar")),
    }
}

fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), SimError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| SimError::BadRequest("a JSON patch must be an array".into()))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = pointer_parts(op.get("path").and_then(Value::as_str).unwrap_or(""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| bad_patch("missing value"))
        };
        let from = || pointer_parts(op.get("from").and_then(Value::as_str).unwrap_or(""));
        match name {
            "add" => add_at(doc, &path, value()?)?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                remove_at(doc, &path)?;
                add_at(doc, &path, value()?)?;
            }
            "test" => {
                if *parent_mut(doc, &path)? != value()? {
                    return Err(bad_patch("test failed"));
                }
            }
            "move" => {
                let v = remove_at(doc, &from()?)?;
                add_at(doc, &path, v)?;
            }
            "copy" => {
                let v = parent_mut(doc, &from()?)?.clone();
                add_at(doc, &path, v)?;
            }
            other => {
                return Err(SimError::BadRequest(format!(
                    "unknown JSON patch op {other:?}"
                )))
            }
        }
    }
    Ok(())
}
