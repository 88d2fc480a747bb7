//! Export formats beside the JSON lines of [`crate::views`]: CSV for spreadsheets and
//! CloudEvents 1.0 (structured JSON, one event per line) for event buses.
//!
//! Both carry the exact stored bytes in base64 beside the hash, like the jsonl export, so
//! an auditor can re-hash whatever format reached them without trusting the decoding.
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
//!
//! # CloudEvents
//!
//! [`cloud_event`] maps one entry to one [`CloudEvent`]; [`CloudEventsExport`] writes them
//! one per line. The event `type` is one of [`cloud_event_types`]: the most significant
//! transition of the entry if it caused any (see [`transition_significance`]), else the
//! record itself.

use std::io::Write;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ledger::{LedgerView, StoredEntry};
use schemas::{
    Change, ChangeKind, CheckDenied, Entry, KindFields, ObjectChange, ObjectKind, Transition,
    WatchGap,
};
use serde::{Deserialize, Serialize};

use crate::views::EntryLine;
use crate::ApiError;

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

/// The CloudEvents version every event declares.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// The `datacontenttype` of every event: `data` is a JSON object.
pub const CLOUDEVENTS_DATA_CONTENT_TYPE: &str = "application/json";

/// The prefix of every CloudEvents `type` this module produces (reverse-DNS, as the
/// CloudEvents spec recommends, so consumers can route on it).
pub const CLOUDEVENTS_TYPE_PREFIX: &str = "dev.claimledger.";

/// Standard base64 of the stored bytes, the same alphabet the jsonl export uses.
fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The one time format of every export: FORMAT.md's (fewest sub-second digits, `Z`).
fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The Merkle leaf index of an entry: leaves are numbered from 0, seqs from 1.
fn leaf_index(entry: &Entry) -> u64 {
    // A stored entry never has seq 0; saturating keeps a forged one from panicking an export.
    entry.seq.saturating_sub(1)
}

/// The word naming a kind of record (`object`, `watch_gap`, `check_denied`): the key the
/// record has in the stored format.
pub fn record_name(change: &Change) -> &'static str {
    match change {
        Change::Object(_) => "object",
        Change::WatchGap(_) => "watch_gap",
        Change::CheckDenied(_) => "check_denied",
        Change::CheckDeniedOverflow(_) => "check_denied_overflow",
        Change::WatchScope(_) => "watch_scope",
    }
}

/// The word naming a change of an object, as stored (`created`, `updated`, `deleted`,
/// `missing_on_resync`).
pub fn change_name(change: ChangeKind) -> &'static str {
    match change {
        ChangeKind::Created => "created",
        ChangeKind::Updated => "updated",
        ChangeKind::Deleted => "deleted",
        ChangeKind::MissingOnResync => "missing_on_resync",
    }
}

/// The name of a transition, as stored in its `transition` tag (`bound`, `released`,
/// `single_use_violation`, `workspace_reused`, `workspace_orphaned`, `identity_mutated`).
pub fn transition_name(transition: &Transition) -> &'static str {
    match transition {
        Transition::Bound { .. } => "bound",
        Transition::Released { .. } => "released",
        Transition::SingleUseViolation { .. } => "single_use_violation",
        Transition::WorkspaceReused { .. } => "workspace_reused",
        Transition::WorkspaceOrphaned { .. } => "workspace_orphaned",
        Transition::IdentityMutated { .. } => "identity_mutated",
    }
}

/// How much a transition matters to whoever consumes events, highest first: an attack
/// signal (a reused sandbox or workspace, a mutated identity) before a binding that ended
/// (credentials to revoke), before a leftover workspace, before a new binding.
///
/// The ledger lists an entry's transitions in the order it derived them, so a reuse is
/// often listed after the release it caused; the event type follows this rank instead, and
/// the first listed wins a tie.
pub fn transition_significance(transition: &Transition) -> u8 {
    match transition {
        Transition::SingleUseViolation { .. } => 6,
        Transition::WorkspaceReused { .. } => 5,
        Transition::IdentityMutated { .. } => 4,
        Transition::Released { .. } => 3,
        Transition::WorkspaceOrphaned { .. } => 2,
        Transition::Bound { .. } => 1,
    }
}

// ---------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------

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
                row.namespace.clone_from(&object.namespace);
                row.name.clone_from(&object.name);
                row.uid.clone_from(&object.uid);
                row.resource_version.clone_from(&object.resource_version);
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
    let mut opt = |key: &str, value: &Option<String>| {
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
                parts.push(format!("volumes={}", volume_claim_templates.join(",")));
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

fn csv_error(error: csv::Error) -> ApiError {
    // csv wraps the writer's io errors; anything else it can raise while writing plain
    // strings and integers would be a bug, still best reported as a failed write.
    ApiError::Io(std::io::Error::from(error))
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
    pub fn new(out: W) -> Result<CsvExport<W>, ApiError> {
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
    pub fn write(&mut self, stored: &StoredEntry) -> Result<(), ApiError> {
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
    pub fn flush(&mut self) -> Result<(), ApiError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Flushes and gives the underlying writer back.
    pub fn finish(self) -> Result<W, ApiError> {
        self.writer
            .into_inner()
            .map_err(|e| ApiError::Io(e.into_error()))
    }
}

/// Streams entries `from..=to` as CSV (header included), one read at a time; returns the
/// number of rows.
pub fn export_csv(
    ledger: &LedgerView,
    from: u64,
    to: u64,
    out: &mut impl Write,
) -> Result<u64, ApiError> {
    let mut export = CsvExport::new(out)?;
    for stored in ledger.entries(from, to) {
        export.write(&stored?)?;
    }
    let rows = export.rows();
    export.finish()?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// CloudEvents
// ---------------------------------------------------------------------------------------

/// Every CloudEvents `type` [`cloud_event`] can produce, in a fixed order: one per
/// transition, then one per (object kind, change), then the watch gap and the denied check.
///
/// | type | when |
/// |---|---|
/// | `dev.claimledger.claim.bound` | a pod became bound to a sandbox |
/// | `dev.claimledger.claim.released` | a pod stopped being bound |
/// | `dev.claimledger.claim.single_use_violation` | a sandbox or pod bound under one claim is claimed by another |
/// | `dev.claimledger.workspace.reused` | a workspace PVC or PV bound under one claim is offered to another |
/// | `dev.claimledger.workspace.orphaned` | a workspace PVC outlives its sandbox |
/// | `dev.claimledger.identity.mutated` | a bound pod's sandbox-id annotation changed |
/// | `dev.claimledger.<kind>.<change>` | an object change that caused no transition; `<kind>` is `sandbox`, `sandboxclaim`, `pod` or `persistentvolumeclaim`, `<change>` is `created`, `updated`, `deleted` or `missing_on_resync` |
/// | `dev.claimledger.watch.gap` | a watch relisted: the ledger was blind for a while |
/// | `dev.claimledger.check.denied` | identity checks denied for a pod uid within a minute |
pub fn cloud_event_types() -> Vec<&'static str> {
    let mut types = vec![
        "dev.claimledger.claim.bound",
        "dev.claimledger.claim.released",
        "dev.claimledger.claim.single_use_violation",
        "dev.claimledger.workspace.reused",
        "dev.claimledger.workspace.orphaned",
        "dev.claimledger.identity.mutated",
    ];
    for kind in ObjectKind::ALL {
        for change in [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
            ChangeKind::MissingOnResync,
        ] {
            types.push(object_event_type(kind, change));
        }
    }
    types.push("dev.claimledger.watch.gap");
    types.push("dev.claimledger.check.denied");
    types.push("dev.claimledger.check.denied_overflow");
    types.push("dev.claimledger.watch.scope");
    types
}

fn transition_event_type(transition: &Transition) -> &'static str {
    match transition {
        Transition::Bound { .. } => "dev.claimledger.claim.bound",
        Transition::Released { .. } => "dev.claimledger.claim.released",
        Transition::SingleUseViolation { .. } => "dev.claimledger.claim.single_use_violation",
        Transition::WorkspaceReused { .. } => "dev.claimledger.workspace.reused",
        Transition::WorkspaceOrphaned { .. } => "dev.claimledger.workspace.orphaned",
        Transition::IdentityMutated { .. } => "dev.claimledger.identity.mutated",
    }
}

fn object_event_type(kind: ObjectKind, change: ChangeKind) -> &'static str {
    // Spelled out rather than formatted so every type is a `&'static str` that a grep of
    // the source (and the README's list) can find.
    use ChangeKind::*;
    use ObjectKind::*;
    match (kind, change) {
        (Sandbox, Created) => "dev.claimledger.sandbox.created",
        (Sandbox, Updated) => "dev.claimledger.sandbox.updated",
        (Sandbox, Deleted) => "dev.claimledger.sandbox.deleted",
        (Sandbox, MissingOnResync) => "dev.claimledger.sandbox.missing_on_resync",
        (SandboxClaim, Created) => "dev.claimledger.sandboxclaim.created",
        (SandboxClaim, Updated) => "dev.claimledger.sandboxclaim.updated",
        (SandboxClaim, Deleted) => "dev.claimledger.sandboxclaim.deleted",
        (SandboxClaim, MissingOnResync) => "dev.claimledger.sandboxclaim.missing_on_resync",
        (Pod, Created) => "dev.claimledger.pod.created",
        (Pod, Updated) => "dev.claimledger.pod.updated",
        (Pod, Deleted) => "dev.claimledger.pod.deleted",
        (Pod, MissingOnResync) => "dev.claimledger.pod.missing_on_resync",
        (PersistentVolumeClaim, Created) => "dev.claimledger.persistentvolumeclaim.created",
        (PersistentVolumeClaim, Updated) => "dev.claimledger.persistentvolumeclaim.updated",
        (PersistentVolumeClaim, Deleted) => "dev.claimledger.persistentvolumeclaim.deleted",
        (PersistentVolumeClaim, MissingOnResync) => {
            "dev.claimledger.persistentvolumeclaim.missing_on_resync"
        }
    }
}

/// The CloudEvents `type` of an entry: its most significant transition
/// ([`transition_significance`], the first listed on a tie), else its record.
pub fn cloud_event_type(entry: &Entry) -> &'static str {
    let mut top: Option<&Transition> = None;
    for transition in &entry.transitions {
        if top.is_none_or(|t| transition_significance(transition) > transition_significance(t)) {
            top = Some(transition);
        }
    }
    if let Some(transition) = top {
        return transition_event_type(transition);
    }
    match &entry.change {
        Change::Object(object) => object_event_type(object.kind, object.change),
        Change::WatchGap(_) => "dev.claimledger.watch.gap",
        Change::CheckDenied(_) => "dev.claimledger.check.denied",
        Change::CheckDeniedOverflow(_) => "dev.claimledger.check.denied_overflow",
        Change::WatchScope(_) => "dev.claimledger.watch.scope",
    }
}

/// One entry as a CloudEvents 1.0 event in the structured JSON format.
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a> {
    /// Always [`CLOUDEVENTS_SPEC_VERSION`].
    pub specversion: &'static str,
    /// The seq, in decimal: unique within one ledger (`source`).
    pub id: String,
    /// The ledger's origin, a URI-reference given by the caller (see [`check_source`]).
    pub source: &'a str,
    /// One of [`cloud_event_types`].
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// The object uid; for a watch gap the resource (`pods/v1`); for a denied check the
    /// pod uid presented.
    pub subject: &'a str,
    /// When the ledger observed the entry, RFC 3339 UTC.
    pub time: String,
    /// Always [`CLOUDEVENTS_DATA_CONTENT_TYPE`].
    pub datacontenttype: &'static str,
    /// Extension attribute: the seq zero-padded to 20 digits (every `u64` fits), so events
    /// sort in ledger order as plain strings.
    pub sequence: String,
    /// The entry, its hashes and its stored bytes.
    pub data: EntryLine<'a>,
}

/// The CloudEvent of a stored entry. `source` is written as given: check it once with
/// [`check_source`] (as [`CloudEventsExport::new`] does).
pub fn cloud_event<'a>(stored: &'a StoredEntry, source: &'a str) -> CloudEvent<'a> {
    let entry = &stored.entry;
    let subject = match &entry.change {
        Change::Object(object) => object.uid.as_str(),
        Change::WatchGap(gap) => gap.resource.as_str(),
        Change::CheckDenied(denied) => denied.pod_uid.as_str(),
        Change::CheckDeniedOverflow(overflow) => overflow.first_pod_uid.as_str(),
        Change::WatchScope(_) => "watch_scope",
    };
    CloudEvent {
        specversion: CLOUDEVENTS_SPEC_VERSION,
        id: entry.seq.to_string(),
        source,
        event_type: cloud_event_type(entry),
        subject,
        time: rfc3339(&entry.observed_at),
        datacontenttype: CLOUDEVENTS_DATA_CONTENT_TYPE,
        sequence: format!("{:020}", entry.seq),
        data: EntryLine::new(stored),
    }
}

/// Checks that `source` is a non-empty RFC 3986 URI-reference, as CloudEvents requires of
/// the `source` attribute: an absolute URI (`https://ledger.example/prod`,
/// `urn:claim-ledger:prod`) or a relative reference (`/clusters/prod/claim-ledger`).
pub fn check_source(source: &str) -> Result<(), ApiError> {
    let fail = |why: &str| {
        Err(ApiError::invalid(format!(
            "CloudEvents source {source:?} is not a URI-reference: {why}"
        )))
    };
    if source.is_empty() {
        return fail("it is empty");
    }
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return fail("a '%' not followed by two hex digits");
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b);
        if !allowed {
            return fail("a character that must be percent-encoded");
        }
        i += 1;
    }
    // A ':' before any '/', '?' or '#' makes the text before it a scheme (RFC 3986 §4.2),
    // which must start with a letter and hold only letters, digits, '+', '-' and '.'.
    let head_end = source.find(['/', '?', '#']).unwrap_or(source.len());
    if let Some(colon) = source[..head_end].find(':') {
        let scheme = &source[..colon];
        let valid = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid {
            return fail("the part before ':' is not a valid scheme");
        }
    }
    Ok(())
}

/// A streaming CloudEvents export: one structured-mode JSON event per line.
///
/// Each event is serialized straight into `out`; give it a buffered writer when it is a
/// file or a socket.
#[derive(Debug)]
pub struct CloudEventsExport<W: Write> {
    out: W,
    source: String,
    events: u64,
}

impl<W: Write> CloudEventsExport<W> {
    /// Starts an export whose events name `source` (refused unless [`check_source`]
    /// accepts it).
    pub fn new(out: W, source: &str) -> Result<CloudEventsExport<W>, ApiError> {
        check_source(source)?;
        Ok(CloudEventsExport {
            out,
            source: source.to_string(),
            events: 0,
        })
    }

    /// Writes one entry's event and its newline.
    pub fn write(&mut self, stored: &StoredEntry) -> Result<(), ApiError> {
        serde_json::to_writer(&mut self.out, &cloud_event(stored, &self.source))?;
        self.out.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// How many events were written.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Flushes and gives the underlying writer back.
    pub fn finish(mut self) -> Result<W, ApiError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Streams entries `from..=to` as CloudEvents lines, one read at a time; returns the
/// number of events.
pub fn export_cloudevents(
    ledger: &LedgerView,
    from: u64,
    to: u64,
    source: &str,
    out: &mut impl Write,
) -> Result<u64, ApiError> {
    let mut export = CloudEventsExport::new(out, source)?;
    for stored in ledger.entries(from, to) {
        export.write(&stored?)?;
    }
    let events = export.events();
    export.finish()?;
    Ok(events)
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

    #[test]
    fn every_type_is_listed_once_and_prefixed() {
        let types = cloud_event_types();
        assert_eq!(types.len(), 6 + 4 * 4 + 4);
        let unique: std::collections::BTreeSet<_> = types.iter().collect();
        assert_eq!(unique.len(), types.len());
        for t in &types {
            assert!(t.starts_with(CLOUDEVENTS_TYPE_PREFIX), "{t}");
            let kind_part = t.trim_start_matches(CLOUDEVENTS_TYPE_PREFIX);
            assert!(
                kind_part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{t}"
            );
        }
        for kind in ObjectKind::ALL {
            let prefix = format!(
                "{CLOUDEVENTS_TYPE_PREFIX}{}.",
                kind.as_str().to_ascii_lowercase()
            );
            assert_eq!(types.iter().filter(|t| t.starts_with(&prefix)).count(), 4);
        }
    }

    #[test]
    fn sources_are_uri_references() {
        for good in [
            "https://ledger.example/clusters/prod",
            "urn:claim-ledger:prod",
            "/clusters/prod/claim-ledger",
            "claim-ledger",
            "mailto:ops@example.com",
            "http://[::1]:8080/ledger",
            "/a%20b",
        ] {
            assert!(check_source(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "has space",
            "1http://x",
            "a%2",
            "a%zz",
            "tab\t",
            "é",
            "\"q\"",
        ] {
            assert!(check_source(bad).is_err(), "{bad:?}");
        }
    }
}
