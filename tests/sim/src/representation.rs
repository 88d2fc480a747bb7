//! Representations: how a stored object is shown to a request. Content negotiation of
//! the `Accept` header (plain JSON, `as=PartialObjectMetadata`, `as=Table`) and the
//! serializers that write an object in the chosen form straight from the store.
//!
//! Its own module because both the HTTP verbs (`http`) and watch streams (`watch`) render
//! objects, and the watch stream is started by the HTTP layer: keeping this here makes the
//! dependency one-way (`http` → `watch` → `representation`).

use crate::error::SimError;
use crate::resource::Resource;
use crate::store;
use crate::util;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// How an object is represented in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repr {
    /// The object itself.
    Full,
    /// `PartialObjectMetadata`.
    Partial,
    /// A `meta.k8s.io` `Table`, in the given version, with row objects per `includeObject`.
    Table(&'static str, Include),
}

/// `includeObject` for tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

/// One parsed media range of an `Accept` header.
pub(crate) struct MediaRange {
    pub mime: String,
    pub params: HashMap<String, String>,
}

pub(crate) fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            MediaRange { mime, params }
        })
        .filter(|m| !m.mime.is_empty())
        .collect()
}

pub(crate) fn json_like(mime: &str) -> bool {
    matches!(mime, "application/json" | "*/*" | "application/*")
}

pub(crate) fn negotiate(accept: &str, query: &HashMap<String, String>) -> Result<Repr, SimError> {
    let ranges = parse_accept(accept);
    if ranges.is_empty() {
        return Ok(Repr::Full);
    }
    for range in &ranges {
        if !json_like(&range.mime) {
            continue;
        }
        let group = range.params.get("g").map(String::as_str);
        let version = range.params.get("v").map(String::as_str);
        match range.params.get("as").map(String::as_str) {
            None => return Ok(Repr::Full),
            Some("Table") if group == Some("meta.k8s.io") => {
                let v = match version {
                    Some("v1") => "v1",
                    Some("v1beta1") => "v1beta1",
                    _ => continue,
                };
                let include = match query.get("includeObject").map(String::as_str) {
                    Some("None") => Include::None,
                    Some("Object") => Include::Object,
                    _ => Include::Metadata,
                };
                return Ok(Repr::Table(v, include));
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if group == Some("meta.k8s.io") && matches!(version, Some("v1" | "v1beta1")) =>
            {
                return Ok(Repr::Partial)
            }
            _ => continue,
        }
    }
    Err(SimError::NotAcceptable(format!(
        "only the following media types are accepted: application/json (as=Table, as=PartialObjectMetadata); got {accept:?}"
    )))
}

fn table_columns(resource: Resource) -> Value {
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    if matches!(resource, Resource::Pod | Resource::PersistentVolumeClaim) {
        cols.push(json!({"name": "Status", "type": "string", "format": "",
            "description": "The phase of the object.", "priority": 0}));
    }
    cols.push(json!({"name": "Age", "type": "string", "format": "",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
        "priority": 0}));
    Value::Array(cols)
}

fn table_row(resource: Resource, object: &Value, version: &str, include: Include) -> Value {
    let mut cells = vec![Value::from(util::name_of(object))];
    if matches!(resource, Resource::Pod | Resource::PersistentVolumeClaim) {
        let status = if util::is_terminating(object) {
            "Terminating"
        } else {
            util::path_str(object, "status.phase").unwrap_or("")
        };
        cells.push(status.into());
    }
    cells.push(util::age(util::meta_str(object, "creationTimestamp")).into());
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Metadata => row["object"] = store::partial_metadata(object),
        Include::Object => row["object"] = store::render(object, resource, version),
    }
    row
}

pub(crate) fn table(
    resource: Resource,
    objects: &[&Value],
    version: &str,
    table_version: &str,
    include: Include,
    list_meta: Value,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{table_version}"),
        "metadata": list_meta,
        "columnDefinitions": table_columns(resource),
        "rows": objects.iter().map(|o| table_row(resource, o, version, include)).collect::<Vec<_>>(),
    })
}

/// Renders one object as `repr` asks.
pub(crate) fn render_repr(repr: &Repr, object: &Value, resource: Resource, version: &str) -> Value {
    match repr {
        Repr::Full => store::render(object, resource, version),
        Repr::Partial => store::partial_metadata(object),
        Repr::Table(tv, include) => table(
            resource,
            &[object],
            version,
            tv,
            *include,
            json!({"resourceVersion": util::meta_str(object, "resourceVersion").unwrap_or("")}),
        ),
    }
}

/// An object as a request's representation shows it, serialized straight from the stored
/// object: what `render_repr` gives, without copying the object first (a LIST of 100k
/// objects or a watch's initial events would copy every one).
pub(crate) struct Rendered<'a> {
    pub repr: Repr,
    pub object: &'a Value,
    pub resource: Resource,
    pub version: &'a str,
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.repr {
            Repr::Full => {
                let Some(map) = self.object.as_object() else {
                    return self.object.serialize(serializer);
                };
                let api_version = self.resource.api_version(self.version);
                let kind = self.resource.kind();
                // Stored objects always have both (create and update fill them), so the keys
                // come out in the order `store::render` gives.
                let (has_version, has_kind) =
                    (map.contains_key("apiVersion"), map.contains_key("kind"));
                let extra = usize::from(!has_version) + usize::from(!has_kind);
                let mut out = serializer.serialize_map(Some(map.len() + extra))?;
                for (key, value) in map {
                    match key.as_str() {
                        "apiVersion" => out.serialize_entry(key, &api_version)?,
                        "kind" => out.serialize_entry(key, kind)?,
                        _ => out.serialize_entry(key, value)?,
                    }
                }
                if !has_version {
                    out.serialize_entry("apiVersion", &api_version)?;
                }
                if !has_kind {
                    out.serialize_entry("kind", kind)?;
                }
                out.end()
            }
            Repr::Partial => {
                let mut out = serializer.serialize_map(Some(3))?;
                out.serialize_entry("apiVersion", "meta.k8s.io/v1")?;
                out.serialize_entry("kind", "PartialObjectMetadata")?;
                match self.object.get("metadata") {
                    Some(meta) => out.serialize_entry("metadata", meta)?,
                    None => out.serialize_entry("metadata", &serde_json::Map::new())?,
                }
                out.end()
            }
            Repr::Table(..) => render_repr(&self.repr, self.object, self.resource, self.version)
                .serialize(serializer),
        }
    }
}

/// The items of a LIST page, rendered as they are written out.
pub(crate) struct RenderedItems<'a> {
    pub items: &'a [Arc<Value>],
    pub repr: Repr,
    pub resource: Resource,
    pub version: &'a str,
}

impl Serialize for RenderedItems<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.iter().map(|object| Rendered {
            repr: self.repr,
            object,
            resource: self.resource,
            version: self.version,
        }))
    }
}
