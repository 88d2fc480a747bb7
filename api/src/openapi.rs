//! The OpenAPI 3.1 document served at `/openapi.json`. A test compares its paths and
//! methods with the router's route table, both ways; `scripts/schemathesis.sh` fuzzes the
//! service against it with every schemathesis check.
//!
//! It states what the service enforces, so that a request valid under the document is
//! accepted and one invalid under it is refused with a 4xx:
//!
//! * names and uids: 1 to 253 (128) characters, no control characters;
//! * seqs and sizes: unsigned 64-bit integers (`maximum` 2^64 − 1);
//! * parameters that exclude or require one another (history selectors, `as_of_seq` or
//!   `as_of`, `from_seq` or `since`, the bundle's parameters): the query parameters of
//!   those operations are one exploded object (`style: form`, `explode: true`, so on the
//!   wire they are ordinary parameters) whose schema says so with `oneOf`, `not` and
//!   `if`/`then`;
//! * orderings between two parameters (`from_seq ≤ to_seq`, `seq ≤ tree_size`,
//!   `from_size ≤ to_size`), which JSON Schema cannot express, are listed in the
//!   operation's `x-claim-ledger-ordered` (pairs of parameter names: the first may not
//!   exceed the second when both are given; refused with a 400) and in its description;
//! * positions beyond what the ledger holds (a seq or size past the head, a range past the
//!   covering checkpoint) depend on the ledger, not on the request's shape: `404
//!   out_of_range`.

use serde_json::{json, Value};

/// The largest value of a `u64` parameter.
const U64_MAX: u64 = u64::MAX;

/// No control characters (Unicode `Cc`: what the service refuses in names and uids).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn query(name: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": description, "schema": schema})
}

/// Query parameters that constrain one another, as one exploded object: on the wire,
/// ordinary `name=value` pairs.
fn query_object(name: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": required,
        "style": "form",
        "explode": true,
        "description": description,
        "schema": schema
    })
}

/// Every `/v1` operation may answer these.
fn common_errors(mut responses: Value) -> Value {
    let defaults = [
        (
            "401",
            error_response("No valid bearer token (unauthorized)"),
        ),
        (
            "400",
            error_response("A malformed request (bad_request, invalid_query, duplicate_header)"),
        ),
        (
            "408",
            error_response("The request took longer than the request timeout (timeout)"),
        ),
        (
            "503",
            error_response("Not ready (not_ready), or unavailable (unavailable)"),
        ),
    ];
    for (status, response) in defaults {
        if responses.get(status).is_none() {
            responses[status] = response;
        }
    }
    responses
}

fn u64_from(minimum: u64) -> Value {
    json!({"type": "integer", "minimum": minimum, "maximum": U64_MAX})
}

/// A string of 1 to `max` characters without control characters.
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": NO_CONTROL})
}

/// The same, or null.
fn optional_text(max: usize, description: &str) -> Value {
    json!({"type": ["string", "null"], "minLength": 1, "maxLength": max, "pattern": NO_CONTROL, "description": description})
}

/// A regular expression matching `word` in any case (the service compares kinds
/// ignoring ASCII case).
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// The paths of the timeline: its two `/v1` routes and the page's public assets.
fn timeline_paths(timeline_query: Value) -> Value {
    json!({
            "/v1/timeline": {"get": {
                "operationId": "timeline",
                "summary": "The history of one object read as events for people: created, bound, identity assigned, released and why, denied checks, watch gaps, deleted",
                "description": "Name exactly one object: uid (any kind), pod_uid, claim_uid, sandbox_uid or pvc_uid, or kind, namespace and name together (every uid that name had). Each event names its entry (seq, hash) and the related objects. Watch gaps are searched in the subjects' lifetime, at most 20,000 entries per request (gap_scan says where). Paginated by after_seq and limit. What the page at /ui/ shows and `history --output timeline` prints.",
                "parameters": [query_object("selector", true, "The object (exactly one selector), and the page", timeline_query)],
                "responses": common_errors(json!({
                    "200": json_response("The timeline", "Timeline"),
                    "400": error_response("No selector, several, a uid of another kind than its field, or a bad parameter (invalid_query)")
                }))
            }},
            "/v1/integrity": {"get": {
                "operationId": "integrity",
                "summary": "The ledger's integrity at a glance: head, latest signed checkpoint, verified at open",
                "responses": common_errors(json!({
                    "200": json_response("Integrity", "Integrity")
                }))
            }},
            "/ui": {"get": {
                "operationId": "uiRedirect",
                "summary": "Redirects to /ui/ (the query kept)",
                "security": [],
                "responses": {"308": {"description": "To /ui/"}}
            }},
            "/ui/": {"get": {
                "operationId": "ui",
                "summary": "The timeline page (HTML; its data comes from /v1 with the user's bearer token)",
                "description": "Deep links: ?pod_uid=, ?claim_uid=, ?sandbox_uid=, ?pvc_uid=, ?uid=, ?kind=&namespace=&name=, ?view=state&as_of_seq= or &as_of=, ?entry=SEQ. Sign in with /ui/#token=TOKEN (kept in sessionStorage, removed from the address bar).",
                "security": [],
                "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}}
            }},
            "/ui/app.js": {"get": {
                "operationId": "uiScript",
                "summary": "The page's script",
                "security": [],
                "responses": {"200": {"description": "JavaScript", "content": {"text/javascript": {"schema": {"type": "string"}}}}}
            }},
            "/ui/app.css": {"get": {
                "operationId": "uiStyle",
                "summary": "The page's style sheet",
                "security": [],
                "responses": {"200": {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}}}
            }}
    })
}

/// The schemas of the timeline's answers.
fn timeline_schemas(hash: &Value) -> Value {
    json!({
                "Link": {
                    "type": "object",
                    "required": ["role", "kind", "uid", "namespace", "name", "recorded"],
                    "properties": {
                        "role": {"type": "string", "enum": ["pod", "sandbox", "claim", "pvc", "controller"]},
                        "kind": {"type": "string"},
                        "uid": {"type": "string"},
                        "namespace": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                        "recorded": {"type": "boolean", "description": "Whether the ledger recorded this uid (only those have a timeline)"}
                    }
                },
                "TimelineEvent": {
                    "type": "object",
                    "required": ["seq", "hash", "at", "subject", "event", "summary", "reason", "count", "links"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "hash": hash,
                        "at": {"type": "string", "format": "date-time"},
                        "subject": {"type": ["string", "null"], "description": "The uid of the subject it concerns; null for a watch gap"},
                        "event": {"type": "string", "enum": ["created", "updated", "controller_changed", "terminating", "identity_assigned", "identity_changed", "deleted", "missing_on_resync", "bound", "released", "identity_mutated", "single_use_violation", "workspace_reused", "workspace_orphaned", "check_denied", "check_denied_overflow", "watch_gap"]},
                        "summary": {"type": "string"},
                        "reason": {"oneOf": [{"$ref": "#/components/schemas/Reason"}, {"type": "null"}]},
                        "count": {"type": ["integer", "null"], "minimum": 1},
                        "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
                    }
                },
                "Timeline": {
                    "type": "object",
                    "required": ["subjects", "events", "head_seq", "next_after_seq", "gap_scan"],
                    "properties": {
                        "subjects": {"type": "array", "items": {"type": "object", "required": ["kind", "namespace", "name", "uid", "first_seq", "last_seq", "gone", "terminating", "controller", "bindings", "same_name"]}},
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineEvent"}},
                        "head_seq": {"type": "integer", "minimum": 0},
                        "next_after_seq": {"type": ["integer", "null"]},
                        "gap_scan": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["from_seq", "to_seq", "complete"]}]}
                    }
                },
                "Integrity": {
                    "type": "object",
                    "required": ["head", "durable_seq", "tree_size", "root", "verified_at_open", "corruption", "checkpoint", "now"],
                    "properties": {
                        "head": {"type": "object", "required": ["seq", "hash", "observed_at"]},
                        "durable_seq": {"type": "integer", "minimum": 0},
                        "tree_size": {"type": "integer", "minimum": 0},
                        "root": hash,
                        "verified_at_open": {"type": "boolean"},
                        "corruption": {"type": ["string", "null"]},
                        "checkpoint": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["origin", "size", "root", "covers_entry_observed_at", "note"]}]},
                        "now": {"type": "string", "format": "date-time"}
                    }
                }
    })
}

/// The whole document.
pub fn document() -> Value {
    let uid = text(crate::extract::MAX_UID_LEN);
    let name = text(crate::extract::MAX_NAME_LEN);
    let reasons: Vec<&str> = schemas::Reason::ALL.iter().map(|r| r.code()).collect();
    let kinds: Vec<&str> = schemas::ObjectKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    // Every word `formats::Selection` takes for a kind: the kinds, their plurals, the
    // short names.
    let kind_pattern = format!(
        "^(?:{})$",
        formats::selection::KIND_WORDS
            .iter()
            .map(|k| any_case(k))
            .collect::<Vec<_>>()
            .join("|")
    );
    let hash = json!({"type": "string", "pattern": "^[0-9a-f]{64}$"});
    let after_seq = u64_from(0);
    let limit = json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100});
    let selector_uids = ["pod_uid", "claim_uid", "sandbox_uid", "pvc_uid"];
    let name_selector = ["kind", "namespace", "name"];
    // A uid selector alone, or kind, namespace and name together: exactly one.
    let mut selectors: Vec<Value> = selector_uids
        .iter()
        .map(|uid| {
            let others: serde_json::Map<String, Value> = name_selector
                .iter()
                .map(|n| ((*n).to_string(), json!(false)))
                .collect();
            json!({"required": [uid], "properties": others})
        })
        .collect();
    let no_uid: serde_json::Map<String, Value> = selector_uids
        .iter()
        .map(|u| ((*u).to_string(), json!(false)))
        .collect();
    selectors.push(json!({"required": name_selector, "properties": no_uid}));
    // The timeline takes the history's selectors, or a uid of any kind alone.
    let mut timeline_selectors: Vec<Value> = selectors
        .iter()
        .map(|s| json!({"allOf": [s, {"properties": {"uid": false}}]}))
        .collect();
    let only_uid: serde_json::Map<String, Value> = selector_uids
        .iter()
        .chain(name_selector.iter())
        .map(|n| ((*n).to_string(), json!(false)))
        .collect();
    timeline_selectors.push(json!({"required": ["uid"], "properties": only_uid}));
    let history_query = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "pod_uid": uid,
            "claim_uid": uid,
            "sandbox_uid": uid,
            "pvc_uid": uid,
            "kind": {"type": "string", "pattern": kind_pattern, "description": format!("One of {} (any case; also the plurals, claim and pvc)", kinds.join(", "))},
            "namespace": name,
            "name": name,
            "after_seq": after_seq,
            "limit": limit
        },
        "oneOf": selectors
    });
    let timeline_query = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "uid": uid,
            "pod_uid": uid,
            "claim_uid": uid,
            "sandbox_uid": uid,
            "pvc_uid": uid,
            "kind": {"type": "string", "pattern": kind_pattern, "description": format!("One of {} (any case; also the plurals, claim and pvc)", kinds.join(", "))},
            "namespace": name,
            "name": name,
            "after_seq": after_seq,
            "limit": limit
        },
        "oneOf": timeline_selectors
    });
    let state_query = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "as_of_seq": u64_from(0),
            "as_of": date_time()
        },
        "not": {"required": ["as_of_seq", "as_of"]}
    });
    let bundle_true = json!({"required": ["bundle"], "properties": {"bundle": {"const": true}}});
    let export_query = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "format": {"type": "string", "enum": ["jsonl", "csv", "cloudevents"], "default": "jsonl", "description": "jsonl (one EntryLine per line), csv (a header, then one row per entry) or cloudevents (one CloudEvents 1.0 structured-mode event per line). Not with bundle=true"},
            "bundle": {"type": "boolean", "default": false, "description": "A tar export bundle (manifest.json, entries.jsonl, checkpoint, proofs.json) for claim-ledger verify-export; the range ends at the covering signed checkpoint by default"},
            "previous_size": {"type": "integer", "minimum": 1, "maximum": U64_MAX, "description": "With bundle=true and previous_root: the tree size of the auditor's previous checkpoint, to include a consistency proof from it"},
            "previous_root": {"type": "string", "pattern": "^(?:[0-9A-Fa-f]{64}|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$", "description": "With bundle=true and previous_size: that checkpoint's root, 64 hex digits or its base64 root line"},
            "from_seq": {"type": "integer", "minimum": 0, "maximum": U64_MAX, "description": "First seq (default 1); not with since; at most to_seq"},
            "to_seq": {"type": "integer", "minimum": 0, "maximum": U64_MAX, "description": "Last seq (default the head at the start of the export, or the covering checkpoint's size for a bundle); not with until; 404 out_of_range past the head"},
            "since": {"type": "string", "format": "date-time", "description": "First entry observed at or after this time (instead of from_seq)"},
            "until": {"type": "string", "format": "date-time", "description": "Last entry observed at or before this time (instead of to_seq)"}
        },
        "allOf": [
            {"not": {"required": ["from_seq", "since"]}},
            {"not": {"required": ["to_seq", "until"]}},
            {"if": {"required": ["previous_size"]}, "then": {"required": ["previous_root"]}},
            {"if": {"required": ["previous_root"]}, "then": {"required": ["previous_size"]}},
            {"if": {"anyOf": [{"required": ["previous_size"]}, {"required": ["previous_root"]}]}, "then": bundle_true},
            {"if": bundle_true, "then": {"not": {"required": ["format"]}}}
        ]
    });
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "claim-ledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Is pod uid P bound to sandbox X? Fail-closed identity checks over a hash-chained ledger of agent-sandbox bindings, with incident replay and export. Every error is {\"error\": code, \"detail\": text} with a 4xx or 5xx status, including the refusals of malformed HTTP/1 requests before routing (400 bad_request, 414 uri_too_long, 431 headers_too_large)."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/identity/check": {"post": {
                "operationId": "check",
                "summary": "The binding rule at the ledger's head",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckRequest"}}}},
                "responses": common_errors(json!({
                    "200": json_response("Allow or deny", "CheckResponse"),
                    "400": error_response("Malformed JSON (malformed_json), or a malformed request"),
                    "413": error_response("Body too large (body_too_large)"),
                    "415": error_response("Not JSON (unsupported_media_type)"),
                    "422": error_response("Unknown or invalid fields (invalid_request)"),
                    "503": {
                        "description": "not_ready: the watchers are not synced (LEDGER_NOT_READY) or the caller's min_seq is ahead of this replica (LEDGER_BEHIND), answered with the check-response shape; or the service is unavailable (Error)",
                        "content": {"application/json": {"schema": {"anyOf": [
                            {"$ref": "#/components/schemas/CheckResponse"},
                            {"$ref": "#/components/schemas/Error"}
                        ]}}}
                    }
                }))
            }},
            "/v1/bindings/{pod_uid}": {"get": {
                "operationId": "binding",
                "summary": "The current binding of a pod uid",
                "parameters": [{"name": "pod_uid", "in": "path", "required": true, "schema": uid}],
                "responses": common_errors(json!({
                    "200": json_response("Bound", "BindingAnswer"),
                    "400": error_response("Invalid uid (invalid_query)"),
                    "404": error_response("Not bound: error is not_bound and reason the first failing check (BINDING_RELEASED, UNKNOWN_POD, ...)")
                }))
            }},
            "/v1/history": {"get": {
                "operationId": "history",
                "summary": "Every entry that recorded one object, in order (for a pod uid, also the denied checks that presented it)",
                "description": "Name exactly one object: pod_uid, claim_uid, sandbox_uid or pvc_uid, or kind, namespace and name together. Paginated by after_seq and limit.",
                "parameters": [query_object("selector", true, "The object (one uid, or kind with namespace and name) and the page", history_query)],
                "responses": common_errors(json!({
                    "200": json_response("A page of entries", "EntriesPage"),
                    "400": error_response("No selector, several, or an invalid one (invalid_query)")
                }))
            }},
            "/v1/state": {"get": {
                "operationId": "state",
                "summary": "Live objects and active bindings, now or as of a seq or a time",
                "parameters": [query_object("point", false, "as_of_seq (after applying this entry) or as_of (RFC 3339: after the last entry observed at or before it), not both; neither: now", state_query)],
                "responses": common_errors(json!({
                    "200": json_response("The state", "State"),
                    "400": error_response("Both parameters or a bad time (invalid_query)"),
                    "404": error_response("as_of_seq is beyond the head (out_of_range)")
                }))
            }},
            "/v1/entries": {"get": {
                "operationId": "entries",
                "summary": "Raw entries with their hashes and exact bytes, for followers and exporters",
                "parameters": [
                    query("after_seq", false, "Return entries with a seq greater than this (the previous page's next_after_seq)", json!({"type": "integer", "minimum": 0, "maximum": U64_MAX, "default": 0})),
                    query("limit", false, "Entries per page", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}))
                ],
                "responses": common_errors(json!({
                    "200": json_response("A page of entries", "EntriesPage"),
                    "400": error_response("Invalid parameters (invalid_query)")
                }))
            }},
            "/v1/export": {"get": {
                "operationId": "export",
                "summary": "Entries as JSON lines, CSV or CloudEvents, streamed; or an export bundle",
                "description": "from_seq may not exceed to_seq (400). A to_seq past the head, or a bundle range past its covering checkpoint, is 404 out_of_range.",
                "x-claim-ledger-ordered": [["from_seq", "to_seq"]],
                "parameters": [query_object("range", false, "The format or bundle, and the range (from_seq or since, to_seq or until)", export_query)],
                "responses": common_errors(json!({
                    "200": {
                        "description": "format=jsonl or cloudevents: newline-delimited JSON (application/x-ndjson), one EntryLine or one CloudEvents structured-mode event per line (x-claim-ledger-line-schema); format=csv: CSV; bundle=true: a tar",
                        "headers": {
                            "x-claim-ledger-from-seq": {"schema": {"type": "integer"}},
                            "x-claim-ledger-to-seq": {"schema": {"type": "integer"}}
                        },
                        "content": {
                            "application/x-ndjson": {
                                "schema": {"type": "string", "description": "One JSON object per line"},
                                "x-claim-ledger-line-schema": {"oneOf": [
                                    {"$ref": "#/components/schemas/EntryLine"},
                                    {"$ref": "#/components/schemas/CloudEvent"}
                                ]}
                            },
                            "text/csv": {"schema": {"type": "string"}},
                            "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                        }
                    },
                    "400": error_response("Invalid parameters, an unsupported format, parameters that exclude each other, or from_seq after to_seq (invalid_query)"),
                    "404": error_response("to_seq past the head, or a bundle range past its covering checkpoint (out_of_range); bundle=true and no signed checkpoint covers the range (no_checkpoint)"),
                    "409": error_response("bundle=true and the previous checkpoint is not a prefix of this ledger's tree (inconsistent_checkpoint)")
                }))
            }},
            "/v1/head": {"get": {
                "operationId": "head",
                "summary": "The newest entry",
                "responses": common_errors(json!({"200": json_response("The head", "Head")}))
            }},
            "/v1/checkpoint": {"get": {
                "operationId": "checkpoint",
                "summary": "The latest signed checkpoint: a C2SP tlog-checkpoint in a C2SP signed note (Ed25519)",
                "responses": common_errors(json!({
                    "200": {
                        "description": "The signed note",
                        "headers": {"x-claim-ledger-tree-size": {"schema": {"type": "integer"}}},
                        "content": {"text/plain": {"schema": {"type": "string"}}}
                    },
                    "404": error_response("No checkpoint signed yet (no_checkpoint)")
                }))
            }},
            "/v1/proof/inclusion": {"get": {
                "operationId": "inclusionProof",
                "summary": "RFC 9162 inclusion proof of entry seq (leaf seq - 1) in the tree of tree_size leaves",
                "description": "seq may not exceed tree_size (400). A seq or tree_size past the head is 404 out_of_range.",
                "x-claim-ledger-ordered": [["seq", "tree_size"]],
                "parameters": [
                    query("seq", true, "The entry (at most tree_size)", u64_from(1)),
                    query("tree_size", false, "The tree size (default the head)", u64_from(1))
                ],
                "responses": common_errors(json!({
                    "200": json_response("The proof", "InclusionProof"),
                    "400": error_response("seq missing, 0, or after tree_size (invalid_query)"),
                    "404": error_response("seq or tree_size past the head (out_of_range)")
                }))
            }},
            "/v1/proof/consistency": {"get": {
                "operationId": "consistencyProof",
                "summary": "RFC 9162 consistency proof that the tree of from_size leaves is a prefix of the tree of to_size",
                "description": "from_size may not exceed to_size (400). A size past the head is 404 out_of_range.",
                "x-claim-ledger-ordered": [["from_size", "to_size"]],
                "parameters": [
                    query("from_size", true, "The smaller tree size (at most to_size)", u64_from(1)),
                    query("to_size", false, "The larger tree size (default the head)", u64_from(1))
                ],
                "responses": common_errors(json!({
                    "200": json_response("The proof", "ConsistencyProof"),
                    "400": error_response("from_size missing, 0, or after to_size (invalid_query)"),
                    "404": error_response("from_size or to_size past the head (out_of_range)")
                }))
            }},
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "The process answers",
                "security": [],
                "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}}}}}
            }},
            "/readyz": {"get": {
                "operationId": "readyz",
                "summary": "Watchers synced and the ledger verified at open",
                "security": [],
                "responses": {
                    "200": json_response("Ready", "Ready"),
                    "503": json_response("Not ready", "Ready")
                }
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (OpenMetrics text)",
                "security": [],
                "responses": {
                    "200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}},
                    "503": error_response("The metrics cannot be encoded (unavailable)")
                }
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token listed in the service's --api-token-file. Send exactly one Authorization header (several: 400 duplicate_header)."}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string", "description": "A stable code: malformed_json, invalid_request, invalid_query, bad_request, duplicate_header, uri_too_long, headers_too_large, body_too_large, unsupported_media_type, unauthorized, not_found, not_bound, method_not_allowed, timeout, out_of_range, no_checkpoint, inconsistent_checkpoint, not_ready, unavailable, ..."},
                        "detail": {"type": "string"},
                        "reason": {"type": "string", "enum": reasons, "description": "not_bound only"}
                    }
                },
                "Reason": {"type": "string", "enum": reasons},
                "CheckRequest": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["namespace", "pod_name", "pod_uid"],
                    "properties": {
                        "namespace": {"type": "string", "minLength": 1, "maxLength": ledger::projection::MAX_NAMESPACE_LEN, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "description": "A Kubernetes namespace (DNS-1123 label)"},
                        "pod_name": {"type": "string", "minLength": 1, "maxLength": ledger::projection::MAX_NAME_LEN, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "description": "A Kubernetes object name (DNS-1123 subdomain)"},
                        "pod_uid": uid,
                        "sandbox_id": optional_text(crate::extract::MAX_NAME_LEN, "The gateway sandbox id expected in the pod's openshell.io/sandbox-id"),
                        "sandbox_name": {"type": ["string", "null"], "minLength": 1, "maxLength": ledger::projection::MAX_NAME_LEN, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "description": "The Sandbox name expected (a Kubernetes object name)"},
                        "sandbox_uid": optional_text(crate::extract::MAX_UID_LEN, "The Sandbox uid expected"),
                        "claim_uid": optional_text(crate::extract::MAX_UID_LEN, "The SandboxClaim uid expected"),
                        "require_claim": {"type": "boolean", "default": true, "description": "Refuse direct bindings"},
                        "min_seq": {"type": ["integer", "null"], "minimum": 0, "maximum": U64_MAX, "description": "Answer LEDGER_BEHIND (503) unless this replica holds this entry"}
                    }
                },
                "LedgerPosition": {
                    "type": "object",
                    "required": ["seq", "head_hash"],
                    "properties": {"seq": {"type": "integer", "minimum": 0}, "head_hash": hash}
                },
                "CheckResponse": {
                    "type": "object",
                    "required": ["decision", "reason", "detail", "binding", "ledger"],
                    "properties": {
                        "decision": {"type": "string", "enum": ["allow", "deny", "not_ready"]},
                        "reason": {"oneOf": [{"$ref": "#/components/schemas/Reason"}, {"type": "null"}]},
                        "detail": {"type": ["string", "null"]},
                        "binding": {"oneOf": [{"$ref": "#/components/schemas/Binding"}, {"type": "null"}]},
                        "ledger": {"$ref": "#/components/schemas/LedgerPosition"}
                    }
                },
                "ObjectRef": {
                    "type": "object",
                    "required": ["namespace", "name", "uid"],
                    "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}, "uid": {"type": "string"}}
                },
                "Binding": {
                    "type": "object",
                    "required": ["kind", "pod", "sandbox", "claim", "pvcs", "sandbox_id", "since_seq", "since"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["claim", "direct"]},
                        "pod": {"$ref": "#/components/schemas/ObjectRef"},
                        "sandbox": {"$ref": "#/components/schemas/ObjectRef"},
                        "claim": {"oneOf": [{"$ref": "#/components/schemas/ObjectRef"}, {"type": "null"}]},
                        "pvcs": {"type": "array", "items": {"$ref": "#/components/schemas/ObjectRef"}},
                        "sandbox_id": {"type": ["string", "null"]},
                        "since_seq": {"type": "integer", "minimum": 1},
                        "since": {"type": "string", "format": "date-time"}
                    }
                },
                "BindingAnswer": {
                    "type": "object",
                    "required": ["binding", "bindings", "ledger"],
                    "properties": {
                        "binding": {"$ref": "#/components/schemas/Binding"},
                        "bindings": {"type": "array", "description": "Every binding this pod uid had, oldest first", "items": {"type": "object"}},
                        "ledger": {"$ref": "#/components/schemas/LedgerPosition"}
                    }
                },
                "EntryLine": {
                    "type": "object",
                    "required": ["seq", "leaf_index", "hash", "prev_hash", "entry", "bytes"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "leaf_index": {"type": "integer", "minimum": 0, "description": "The entry's Merkle leaf (seq - 1)"},
                        "hash": hash,
                        "prev_hash": hash,
                        "entry": {"type": "object", "description": "The decoded entry (docs/FORMAT.md)"},
                        "bytes": {"type": "string", "contentEncoding": "base64", "description": "The exact stored bytes the hash covers"}
                    }
                },
                "CloudEvent": {
                    "type": "object",
                    "description": "A CloudEvents 1.0 event in structured mode (what application/cloudevents+json carries); data is the EntryLine",
                    "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "sequence", "data"],
                    "properties": {
                        "specversion": {"const": "1.0"},
                        "id": {"type": "string", "description": "The seq"},
                        "source": {"type": "string", "description": "The checkpoint origin"},
                        "type": {"type": "string", "pattern": "^dev\\.claimledger\\."},
                        "subject": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "datacontenttype": {"const": "application/json"},
                        "sequence": {"type": "string", "description": "The seq, zero-padded so that it sorts"},
                        "data": {"$ref": "#/components/schemas/EntryLine"}
                    }
                },
                "EntriesPage": {
                    "type": "object",
                    "required": ["entries", "next_after_seq", "head_seq"],
                    "properties": {
                        "entries": {"type": "array", "items": {"$ref": "#/components/schemas/EntryLine"}},
                        "next_after_seq": {"type": ["integer", "null"], "description": "after_seq of the next page; null on the last"},
                        "head_seq": {"type": "integer", "minimum": 0}
                    }
                },
                "Head": {
                    "type": "object",
                    "required": ["seq", "hash", "observed_at", "durable_seq", "tree_size", "root"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 0},
                        "hash": hash,
                        "observed_at": {"type": ["string", "null"], "format": "date-time"},
                        "durable_seq": {"type": "integer", "minimum": 0},
                        "tree_size": {"type": "integer", "minimum": 0, "description": "Merkle tree leaves: one per entry"},
                        "root": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "RFC 6962 root at tree_size (SHA-256, hex)"}
                    }
                },
                "InclusionProof": {
                    "type": "object",
                    "required": ["seq", "leaf_index", "tree_size", "leaf_hash", "root", "hashes"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "leaf_index": {"type": "integer", "minimum": 0},
                        "tree_size": {"type": "integer", "minimum": 1},
                        "leaf_hash": hash,
                        "root": hash,
                        "hashes": {"type": "array", "items": hash}
                    }
                },
                "ConsistencyProof": {
                    "type": "object",
                    "required": ["from_size", "to_size", "from_root", "to_root", "hashes"],
                    "properties": {
                        "from_size": {"type": "integer", "minimum": 1},
                        "to_size": {"type": "integer", "minimum": 1},
                        "from_root": hash,
                        "to_root": hash,
                        "hashes": {"type": "array", "items": hash}
                    }
                },
                "ObjectLine": {
                    "type": "object",
                    "required": ["kind", "namespace", "name", "uid", "resource_version", "controller", "terminating", "fields", "last_seq"],
                    "properties": {
                        "kind": {"type": "string", "enum": kinds},
                        "namespace": {"type": "string"},
                        "name": {"type": "string"},
                        "uid": {"type": "string"},
                        "resource_version": {"type": "string"},
                        "controller": {"type": ["string", "null"], "description": "kind/uid of the controller"},
                        "terminating": {"type": "boolean"},
                        "fields": {"type": "object", "description": "Kind-specific identity fields"},
                        "last_seq": {"type": "integer", "minimum": 1}
                    }
                },
                "State": {
                    "type": "object",
                    "required": ["seq", "at", "objects", "bindings"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 0},
                        "at": {"type": ["string", "null"], "format": "date-time"},
                        "objects": {"type": "array", "items": {"$ref": "#/components/schemas/ObjectLine"}},
                        "bindings": {"type": "array", "items": {"$ref": "#/components/schemas/Binding"}}
                    }
                },
                "Ready": {
                    "type": "object",
                    "required": ["ready", "ledger", "watchers"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "ledger": {"type": "object"},
                        "watchers": {"type": "object"}
                    }
                }
            }
        }
    });
    let additions = [
        ("paths", timeline_paths(timeline_query)),
        ("components", json!({"schemas": timeline_schemas(&hash)})),
    ];
    for (section, added) in additions {
        merge(&mut document[section], added);
    }
    document
}

/// Adds every key of `added` to `into`, recursively.
fn merge(into: &mut Value, added: Value) {
    match (into, added) {
        (Value::Object(into), Value::Object(added)) => {
            for (key, value) in added {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (slot, value) => *slot = value,
    }
}
