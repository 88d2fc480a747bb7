//! The OpenAPI 3.1 document served at `/openapi.json`. A test compares its paths and
//! methods with the router's route table, both ways.

use serde_json::{json, Value};

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

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn common_errors(mut responses: Value) -> Value {
    responses["401"] = error_response("No valid bearer token");
    responses["408"] = error_response("The request took longer than the request timeout");
    responses["503"] = error_response("Not ready, or unavailable");
    responses
}

fn paging() -> [Value; 2] {
    [
        query(
            "after_seq",
            "Return entries with a seq greater than this (the previous page's next_after_seq)",
            json!({"type": "integer", "minimum": 0, "default": 0}),
        ),
        query(
            "limit",
            "Entries per page",
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        ),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let uid = json!({"type": "string", "minLength": 1, "maxLength": 128});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 253});
    let reasons: Vec<&str> = schemas::Reason::ALL.iter().map(|r| r.code()).collect();
    let [after_seq, limit] = paging();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "claim-ledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Is pod uid P bound to sandbox X? Fail-closed identity checks over a hash-chained ledger of agent-sandbox bindings, with incident replay and export."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/identity/check": {"post": {
                "operationId": "check",
                "summary": "The binding rule at the ledger's head",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckRequest"}}}},
                "responses": common_errors(json!({
                    "200": json_response("Allow or deny", "CheckResponse"),
                    "400": error_response("Malformed JSON"),
                    "413": error_response("Body too large"),
                    "415": error_response("Not JSON"),
                    "422": error_response("Unknown or invalid fields"),
                    "503": json_response("not_ready: the watchers are not synced (LEDGER_NOT_READY) or the caller's min_seq is ahead of this replica (LEDGER_BEHIND)", "CheckResponse")
                }))
            }},
            "/v1/bindings/{pod_uid}": {"get": {
                "operationId": "binding",
                "summary": "The current binding of a pod uid",
                "parameters": [{"name": "pod_uid", "in": "path", "required": true, "schema": uid}],
                "responses": common_errors(json!({
                    "200": json_response("Bound", "BindingAnswer"),
                    "400": error_response("Invalid uid"),
                    "404": error_response("Not bound: error is not_bound and reason the first failing check (BINDING_RELEASED, UNKNOWN_POD, ...)")
                }))
            }},
            "/v1/history": {"get": {
                "operationId": "history",
                "summary": "Every entry that recorded one object, in order (for a pod uid, also the denied checks that presented it)",
                "parameters": [
                    query("pod_uid", "A pod uid", uid.clone()),
                    query("claim_uid", "A SandboxClaim uid", uid.clone()),
                    query("sandbox_uid", "A Sandbox uid", uid.clone()),
                    query("pvc_uid", "A PersistentVolumeClaim uid", uid.clone()),
                    query("kind", "With namespace and name: every uid that held that name", json!({"type": "string", "enum": ["Sandbox", "SandboxClaim", "Pod", "PersistentVolumeClaim"]})),
                    query("namespace", "With kind and name", name.clone()),
                    query("name", "With kind and namespace", name.clone()),
                    after_seq.clone(),
                    limit.clone()
                ],
                "responses": common_errors(json!({
                    "200": json_response("A page of entries", "EntriesPage"),
                    "400": error_response("No selector, several, or an invalid one")
                }))
            }},
            "/v1/state": {"get": {
                "operationId": "state",
                "summary": "Live objects and active bindings, now or as of a seq or a time",
                "parameters": [
                    query("as_of_seq", "After applying this entry", json!({"type": "integer", "minimum": 0})),
                    query("as_of", "At this time (RFC 3339): after the last entry observed at or before it", json!({"type": "string", "format": "date-time"}))
                ],
                "responses": common_errors(json!({
                    "200": json_response("The state", "State"),
                    "400": error_response("Both parameters, a bad time, or a seq beyond the head")
                }))
            }},
            "/v1/entries": {"get": {
                "operationId": "entries",
                "summary": "Raw entries with their hashes and exact bytes, for followers and exporters",
                "parameters": [after_seq, limit],
                "responses": common_errors(json!({
                    "200": json_response("A page of entries", "EntriesPage"),
                    "400": error_response("Invalid parameters")
                }))
            }},
            "/v1/export": {"get": {
                "operationId": "export",
                "summary": "Entries as JSON lines, streamed",
                "parameters": [
                    query("format", "jsonl (EntryLine per line), csv (one row per entry, a header first) or cloudevents (CloudEvents 1.0 structured JSON, one event per line)", json!({"type": "string", "enum": ["jsonl", "csv", "cloudevents"], "default": "jsonl"})),
                    query("bundle", "A tar export bundle (manifest.json, entries.jsonl, checkpoint, proofs.json) for claim-ledger verify-export; the range ends at the covering signed checkpoint by default", json!({"type": "boolean", "default": false})),
                    query("previous_size", "With bundle: the tree size of the auditor's previous checkpoint, to include a consistency proof from it", json!({"type": "integer", "minimum": 1})),
                    query("previous_root", "With bundle and previous_size: that checkpoint's root, 64 hex digits or its base64 root line", json!({"type": "string"})),
                    query("from_seq", "First seq (default 1)", json!({"type": "integer", "minimum": 0})),
                    query("to_seq", "Last seq (default the head at the start of the export)", json!({"type": "integer", "minimum": 0})),
                    query("since", "First entry observed at or after this time (instead of from_seq)", json!({"type": "string", "format": "date-time"})),
                    query("until", "Last entry observed at or before this time (instead of to_seq)", json!({"type": "string", "format": "date-time"}))
                ],
                "responses": common_errors(json!({
                    "200": {
                        "description": "One EntryLine per line",
                        "headers": {
                            "x-claim-ledger-from-seq": {"schema": {"type": "integer"}},
                            "x-claim-ledger-to-seq": {"schema": {"type": "integer"}}
                        },
                        "content": {
                            "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/EntryLine"}},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/cloudevents-batch+json": {"schema": {"type": "object", "description": "One CloudEvent per line"}},
                            "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                        }
                    },
                    "400": error_response("Invalid parameters, an unsupported format, or a range beyond the head"),
                    "404": error_response("bundle=true and no signed checkpoint covers the range (no_checkpoint)"),
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
                    "200": {"description": "The signed note", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "404": error_response("No checkpoint signed yet (no_checkpoint)")
                }))
            }},
            "/v1/proof/inclusion": {"get": {
                "operationId": "inclusionProof",
                "summary": "RFC 9162 inclusion proof of entry seq (leaf seq - 1) in the tree of tree_size leaves",
                "parameters": [
                    {"name": "seq", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}},
                    query("tree_size", "The tree size (default the head)", json!({"type": "integer", "minimum": 1}))
                ],
                "responses": common_errors(json!({
                    "200": json_response("The proof", "InclusionProof"),
                    "400": error_response("seq missing, 0 or beyond the tree; tree_size beyond the head")
                }))
            }},
            "/v1/proof/consistency": {"get": {
                "operationId": "consistencyProof",
                "summary": "RFC 9162 consistency proof that the tree of from_size leaves is a prefix of the tree of to_size",
                "parameters": [
                    {"name": "from_size", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}},
                    query("to_size", "The larger tree size (default the head)", json!({"type": "integer", "minimum": 1}))
                ],
                "responses": common_errors(json!({
                    "200": json_response("The proof", "ConsistencyProof"),
                    "400": error_response("from_size missing, 0 or above to_size; to_size beyond the head")
                }))
            }},
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "The process answers",
                "security": [],
                "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}
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
                "responses": {"200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token listed in the service's --api-token-file"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string", "description": "A stable code: malformed_json, invalid_request, invalid_query, body_too_large, unsupported_media_type, unauthorized, not_found, not_bound, method_not_allowed, timeout, out_of_range, not_ready, unavailable, ..."},
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
                        "namespace": name,
                        "pod_name": name,
                        "pod_uid": uid,
                        "sandbox_id": {"type": ["string", "null"], "maxLength": 253, "description": "The gateway sandbox id expected in the pod's openshell.io/sandbox-id"},
                        "sandbox_name": {"type": ["string", "null"], "maxLength": 253},
                        "sandbox_uid": {"type": ["string", "null"], "maxLength": 128},
                        "claim_uid": {"type": ["string", "null"], "maxLength": 128},
                        "require_claim": {"type": "boolean", "default": true, "description": "Refuse direct bindings"},
                        "min_seq": {"type": ["integer", "null"], "minimum": 0, "description": "Answer LEDGER_BEHIND unless this replica holds this entry"}
                    }
                },
                "LedgerPosition": {
                    "type": "object",
                    "required": ["seq", "head_hash"],
                    "properties": {"seq": {"type": "integer"}, "head_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
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
                        "since_seq": {"type": "integer"},
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
                        "seq": {"type": "integer"},
                        "leaf_index": {"type": "integer", "description": "The entry's Merkle leaf (seq - 1)"},
                        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "entry": {"type": "object", "description": "The decoded entry (docs/FORMAT.md)"},
                        "bytes": {"type": "string", "contentEncoding": "base64", "description": "The exact stored bytes the hash covers"}
                    }
                },
                "EntriesPage": {
                    "type": "object",
                    "required": ["entries", "next_after_seq", "head_seq"],
                    "properties": {
                        "entries": {"type": "array", "items": {"$ref": "#/components/schemas/EntryLine"}},
                        "next_after_seq": {"type": ["integer", "null"], "description": "after_seq of the next page; null on the last"},
                        "head_seq": {"type": "integer"}
                    }
                },
                "Head": {
                    "type": "object",
                    "required": ["seq", "hash", "observed_at", "durable_seq", "tree_size", "root"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "hash": {"type": "string"},
                        "observed_at": {"type": ["string", "null"], "format": "date-time"},
                        "durable_seq": {"type": "integer"},
                        "tree_size": {"type": "integer", "description": "Merkle tree leaves: one per entry"},
                        "root": {"type": "string", "description": "RFC 6962 root at tree_size (SHA-256, hex)"}
                    }
                },
                "InclusionProof": {
                    "type": "object",
                    "required": ["seq", "leaf_index", "tree_size", "leaf_hash", "root", "hashes"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "leaf_index": {"type": "integer"},
                        "tree_size": {"type": "integer"},
                        "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "root": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "hashes": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
                    }
                },
                "ConsistencyProof": {
                    "type": "object",
                    "required": ["from_size", "to_size", "from_root", "to_root", "hashes"],
                    "properties": {
                        "from_size": {"type": "integer"},
                        "to_size": {"type": "integer"},
                        "from_root": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "to_root": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "hashes": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
                    }
                },
                "State": {
                    "type": "object",
                    "required": ["seq", "at", "objects", "bindings"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "at": {"type": ["string", "null"], "format": "date-time"},
                        "objects": {"type": "array", "items": {"type": "object"}},
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
    })
}
