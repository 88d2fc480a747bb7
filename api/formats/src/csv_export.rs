//! The CSV export, for spreadsheets: one row per entry, flattened.
//!
//! It carries the exact stored bytes in base64 beside the hash, like the jsonl export, so
//! an auditor can re-hash whatever reached them without trusting the decoding.
//!
//! # CSV
//!
//! [`CsvExport`] writes a header row ([`CSV_COLUMNS`]) and then one [`CsvRow`] per entry.
//! A column that does not apply to a record is empty. The columns, per kind of record:
//!
//! | column | `object` | `watch_gap` | `check_denied` |
//! |---|---|---|---|
//! | `kind`, `namespace`, `name`, `uid` | the object's | empty | `Pod`, the namespace, pod name and pod uid the callers presented |
//! | `resource_version` | the object's | the last one seen before the gap (or empty) | empty |
//! | `change` | `created`, `updated`, `deleted`, `missing_on_resync` | the gap's reason (`restart`, `relist`) | the denial's reason code (`BINDING_RELEASED`, ...) |
//! | `transitions` | transition names joined with `;` | empty | empty |
//! | `detail` | controller, identity fields, terminating | resource and last resourceVersion | count and minute of the denials |

use std::io::Write;

use ledger::{LedgerView, StoredEntry};
use schemas::{Change, CheckDenied, KindFields, ObjectChange, ObjectKind, Text, WatchGap};
use serde::{Deserialize, Serialize};

use crate::names::{base64_of, change_name, leaf_index, record_name, rfc3339, transition_name};
use crate::FormatError;

/// The CSV header, in column order (the field names of [`CsvRow`]).
pub const CSV_COLUMNS: [&str; 15] = [
    "seq",
    "leaf_index",
    "observed_at",
    "hash",
    "prev_hash",
    "record",
    "kind",
    "namespace",
    "name",
    "uid",
    "resource_version",
    "change",
    "transitions",
    "detail",
    "bytes_base64",
];

/// One CSV row: one entry, flattened. The field order is [`CSV_COLUMNS`]; it deserializes
/// too, so a reader can parse an export back with the `csv` crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvRow {
    /// The entry's seq.
    pub seq: u64,
    /// Its Merkle leaf index (`seq - 1`).
    pub leaf_index: u64,
    /// When the ledger observed it, RFC 3339 UTC.
    pub observed_at: String,
    /// Its chain hash, hex.
    pub hash: String,
    /// The previous entry's hash, hex.
    pub prev_hash: String,
    /// `object`, `watch_gap` or `check_denied`.
    pub record: String,
    /// The object's kind (`Pod` for a denied check; empty for a watch gap).
    pub kind: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
    /// The object's resourceVersion, or the last one a watch saw before its gap.
    pub resource_version: String,
    /// The change of an object, the reason of a watch gap or the reason code of a denial.
    pub change: String,
    /// The transition names, joined with `;`.
    pub transitions: String,
    /// A short summary of the record, for people.
    pub detail: String,
    /// The exact stored bytes, standard base64.
    pub bytes_base64: String,
}

impl CsvRow {
    /// The row of a stored entry.
    pub fn new(stored: &StoredEntry) -> CsvRow {
        let entry = &stored.entry;
        let mut row = CsvRow {
            seq: entry.seq,
            leaf_index: leaf_index(entry),
            observed_at: rfc3339(&entry.observed_at),
            hash: stored.hash.to_hex(),
            prev_hash: entry.prev_hash.to_hex(),
            record: record_name(&entry.change).to_string(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            resource_version: String::new(),
            change: String::new(),
            transitions: entry
                .transitions
                .iter()
                .map(transition_name)
                .collect::<Vec<_>>()
                .join(";"),
            detail: String::new(),
            bytes_base64: base64_of(&stored.bytes),
        };
        match &entry.change {
            Change::Object(object) => {
                row.kind = object.kind.as_str().to_string();
                row.namespace = object.namespace.to_string();
                row.name = object.name.to_string();
                row.uid = object.uid.to_string();
                row.resource_version = object.resource_version.to_string();
                row.change = change_name(object.change).to_string();
                row.detail = object_detail(object);
            }
            Change::WatchGap(gap) => {
                row.resource_version = gap.last_resource_version.clone().unwrap_or_default();
                row.change.clone_from(&gap.reason);
                row.detail = watch_gap_detail(gap);
            }
            Change::CheckDenied(denied) => {
                row.kind = ObjectKind::Pod.as_str().to_string();
                row.namespace.clone_from(&denied.namespace);
                row.name.clone_from(&denied.pod_name);
                row.uid.clone_from(&denied.pod_uid);
                row.change = denied.reason.code().to_string();
                row.detail = check_denied_detail(denied);
            }
            Change::WatchScope(scope) => {
                let show = |namespaces: &[String]| match namespaces.is_empty() {
                    true => "all namespaces".to_string(),
                    false => namespaces.join(" "),
                };
                row.change = "scope".into();
                row.detail = format!(
                    "watching {} (before: {})",
                    show(&scope.namespaces),
                    show(scope.previous.as_deref().unwrap_or_default())
                );
            }
            Change::CheckDeniedOverflow(overflow) => {
                row.kind = ObjectKind::Pod.as_str().to_string();
                row.uid.clone_from(&overflow.first_pod_uid);
                row.change = overflow.reason.code().to_string();
                let checks = if overflow.count == 1 {
                    "check"
                } else {
                    "checks"
                };
                row.detail = format!(
                    "{} {checks} denied {} in the minute from {} past the per-uid records (first uid {}, last uid {}, uid digest {})",
                    overflow.count,
                    overflow.reason.code(),
                    rfc3339(&overflow.minute),
                    overflow.first_pod_uid,
                    overflow.last_pod_uid,
                    overflow.uid_digest
                );
            }
        }
        row
    }
}

fn object_detail(object: &ObjectChange) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(owner) = &object.controller {
        parts.push(format!("controller={}/{}", owner.kind, owner.name));
    }
    let mut opt = |key: &str, value: &Option<Text>| {
        if let Some(value) = value {
            parts.push(format!("{key}={value}"));
        }
    };
    match &object.fields {
        KindFields::Sandbox {
            claim_uid_label,
            sandbox_id_label,
            pod_name_annotation,
            volume_claim_templates,
            shutdown_policy,
        } => {
            opt("claim_uid", claim_uid_label);
            opt("sandbox_id", sandbox_id_label);
            opt("pod", pod_name_annotation);
            opt("shutdown_policy", shutdown_policy);
            if !volume_claim_templates.is_empty() {
                let names: Vec<&str> = volume_claim_templates.iter().map(|v| v.as_str()).collect();
                parts.push(format!("volumes={}", names.join(",")));
            }
        }
        KindFields::SandboxClaim {
            status_sandbox_name,
            ready,
            shutdown_policy,
            shutdown_time,
            warm_pool,
            template,
        } => {
            opt("sandbox", status_sandbox_name);
            opt("warm_pool", warm_pool);
            opt("template", template);
            opt("shutdown_policy", shutdown_policy);
            opt("shutdown_time", shutdown_time);
            if let Some(ready) = ready {
                match &ready.reason {
                    Some(reason) => parts.push(format!("ready={} ({reason})", ready.status)),
                    None => parts.push(format!("ready={}", ready.status)),
                }
            }
        }
        KindFields::Pod {
            sandbox_id_annotation,
            phase,
        } => {
            opt("sandbox_id", sandbox_id_annotation);
            opt("phase", phase);
        }
        KindFields::PersistentVolumeClaim { volume_name, phase } => {
            opt("volume", volume_name);
            opt("phase", phase);
        }
    }
    if let Some(since) = &object.deletion_timestamp {
        parts.push(format!("terminating since {since}"));
    }
    parts.join(" ")
}

fn watch_gap_detail(gap: &WatchGap) -> String {
    match &gap.last_resource_version {
        Some(version) => format!(
            "{} {}: blind after resourceVersion {version}",
            gap.resource, gap.reason
        ),
        None => format!(
            "{} {}: blind, no resourceVersion seen before",
            gap.resource, gap.reason
        ),
    }
}

fn check_denied_detail(denied: &CheckDenied) -> String {
    let checks = if denied.count == 1 { "check" } else { "checks" };
    format!(
        "{} {checks} denied {} in the minute from {}",
        denied.count,
        denied.reason.code(),
        rfc3339(&denied.minute)
    )
}

fn csv_error(error: csv::Error) -> FormatError {
    // csv wraps the writer's io errors; anything else it can raise while writing plain
    // strings and integers would be a bug, still best reported as a failed write.
    FormatError::Io(std::io::Error::from(error))
}

/// A streaming CSV export: the header when created, then one row per [`CsvExport::write`].
///
/// The `csv` crate buffers internally, so `out` needs no buffering of its own; call
/// [`CsvExport::finish`] (or [`CsvExport::flush`]) to push the last rows out.
pub struct CsvExport<W: Write> {
    writer: csv::Writer<W>,
    rows: u64,
}

impl<W: Write> std::fmt::Debug for CsvExport<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvExport")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write> CsvExport<W> {
    /// Starts an export and writes the header row ([`CSV_COLUMNS`]).
    pub fn new(out: W) -> Result<CsvExport<W>, FormatError> {
        // Headers are written by hand: csv's automatic header would be missing from an
        // export of an empty range, and a reader should always find the columns.
        let mut export = CsvExport::continuing(out);
        export.writer.write_record(CSV_COLUMNS).map_err(csv_error)?;
        Ok(export)
    }

    /// Continues an export whose header was already written (the next page of a stream).
    pub fn continuing(out: W) -> CsvExport<W> {
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        CsvExport { writer, rows: 0 }
    }

    /// Writes one entry's row.
    pub fn write(&mut self, stored: &StoredEntry) -> Result<(), FormatError> {
        self.writer
            .serialize(CsvRow::new(stored))
            .map_err(csv_error)?;
        self.rows += 1;
        Ok(())
    }

    /// How many rows were written (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Pushes buffered rows to the underlying writer (and flushes it).
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Flushes and gives the underlying writer back.
    pub fn finish(self) -> Result<W, FormatError> {
        self.writer
            .into_inner()
            .map_err(|e| FormatError::Io(e.into_error()))
    }
}

/// Streams entries `from..=to` as CSV (header included), one read at a time; returns the
/// number of rows.
pub fn export_csv(
    ledger: &LedgerView,
    from: u64,
    to: u64,
    out: &mut impl Write,
) -> Result<u64, FormatError> {
    let mut export = CsvExport::new(out)?;
    for stored in ledger.entries(from, to) {
        export.write(&stored?)?;
    }
    let rows = export.rows();
    export.finish()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_the_row_fields_in_order() {
        // serde writes CsvRow's fields in declaration order without a header; the header is
        // CSV_COLUMNS, so the two must agree or every column is mislabelled.
        let row = CsvRow {
            seq: 1,
            leaf_index: 0,
            observed_at: "observed_at".into(),
            hash: "hash".into(),
            prev_hash: "prev_hash".into(),
            record: "record".into(),
            kind: "kind".into(),
            namespace: "namespace".into(),
            name: "name".into(),
            uid: "uid".into(),
            resource_version: "resource_version".into(),
            change: "change".into(),
            transitions: "transitions".into(),
            detail: "detail".into(),
            bytes_base64: "bytes_base64".into(),
        };
        let mut writer = csv::WriterBuilder::new()
            .has_headers(true)
            .from_writer(Vec::new());
        writer.serialize(&row).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(header, CSV_COLUMNS.join(","));
    }
}
