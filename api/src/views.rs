//! The JSON views: entries (history, export), state, and a plain table for people.

use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use ledger::{BindingView, Ledger, ObjectRecord, Projection, StoredEntry};
use schemas::{Change, Entry, Hash, KindFields, ObjectKind};
use serde::Serialize;

use crate::ApiError;

/// One entry with its chain hash, previous hash and exact stored bytes (base64), so an
/// auditor can re-hash it without trusting the decoding.
#[derive(Debug, Serialize)]
pub struct EntryLine<'a> {
    /// The entry's seq.
    pub seq: u64,
    /// Its leaf in the Merkle tree (`seq - 1`), for inclusion proofs.
    pub leaf_index: u64,
    /// Its chain hash.
    pub hash: Hash,
    /// The previous entry's hash.
    pub prev_hash: Hash,
    /// The decoded entry.
    pub entry: &'a Entry,
    /// The exact stored bytes, standard base64.
    pub bytes: String,
}

impl<'a> EntryLine<'a> {
    /// The line for a stored entry.
    pub fn new(stored: &'a StoredEntry) -> EntryLine<'a> {
        EntryLine {
            seq: stored.entry.seq,
            leaf_index: stored.entry.seq.saturating_sub(1),
            hash: stored.hash,
            prev_hash: stored.entry.prev_hash,
            entry: &stored.entry,
            bytes: base64::engine::general_purpose::STANDARD.encode(&stored.bytes),
        }
    }
}

/// A live object in a state view.
#[derive(Debug, Serialize)]
pub struct ObjectLine<'a> {
    /// Kind.
    pub kind: ObjectKind,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Uid.
    pub uid: &'a str,
    /// Last recorded resourceVersion.
    pub resource_version: &'a str,
    /// Controller kind and uid, if any.
    pub controller: Option<String>,
    /// Whether it carries a deletionTimestamp.
    pub terminating: bool,
    /// Kind-specific identity fields.
    pub fields: &'a KindFields,
    /// The entry that last recorded it.
    pub last_seq: u64,
}

impl<'a> ObjectLine<'a> {
    fn new(record: &'a ObjectRecord) -> ObjectLine<'a> {
        let current = &record.current;
        ObjectLine {
            kind: current.kind,
            namespace: &current.namespace,
            name: &current.name,
            uid: &current.uid,
            resource_version: &current.resource_version,
            controller: current
                .controller
                .as_ref()
                .map(|c| format!("{}/{}", c.kind, c.uid)),
            terminating: current.is_terminating(),
            fields: &current.fields,
            last_seq: record.last_seq,
        }
    }
}

/// The projected state at one seq: live objects and active bindings.
#[derive(Debug, Serialize)]
pub struct StateView<'a> {
    /// The seq the state is as of.
    pub seq: u64,
    /// When that entry was observed.
    pub at: Option<DateTime<Utc>>,
    /// Objects alive at that seq.
    pub objects: Vec<ObjectLine<'a>>,
    /// Bindings active at that seq.
    pub bindings: Vec<Arc<BindingView>>,
}

impl<'a> StateView<'a> {
    /// The view of a projection.
    pub fn new(projection: &'a Projection) -> StateView<'a> {
        StateView {
            seq: projection.seq(),
            at: projection.at(),
            objects: projection
                .live_objects()
                .into_iter()
                .map(ObjectLine::new)
                .collect(),
            bindings: projection.active_bindings(),
        }
    }

    /// A table for people.
    pub fn write_table(&self, out: &mut impl Write) -> Result<(), ApiError> {
        writeln!(
            out,
            "state as of seq {} ({})",
            self.seq,
            self.at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "empty".into())
        )?;
        writeln!(
            out,
            "\n{:<22} {:<14} {:<32} {:<38} {:>6}",
            "KIND", "NAMESPACE", "NAME", "UID", "SEQ"
        )?;
        for o in &self.objects {
            writeln!(
                out,
                "{:<22} {:<14} {:<32} {:<38} {:>6}",
                o.kind.as_str(),
                o.namespace,
                o.name,
                o.uid,
                o.last_seq
            )?;
        }
        writeln!(
            out,
            "\n{:<8} {:<14} {:<32} {:<32} {:<32} {:>6}",
            "BINDING", "NAMESPACE", "POD", "SANDBOX", "CLAIM", "SINCE"
        )?;
        for b in &self.bindings {
            let claim = b.claim.as_ref().map(|c| c.name.as_str()).unwrap_or("-");
            writeln!(
                out,
                "{:<8} {:<14} {:<32} {:<32} {:<32} {:>6}",
                format!("{:?}", b.kind).to_lowercase(),
                b.pod.namespace,
                b.pod.name,
                b.sandbox.name,
                claim,
                b.since_seq
            )?;
        }
        Ok(())
    }
}

/// Writes entries as JSON lines.
pub fn write_jsonl<'a>(
    out: &mut impl Write,
    entries: impl IntoIterator<Item = &'a StoredEntry>,
) -> Result<u64, ApiError> {
    let mut count = 0;
    for stored in entries {
        serde_json::to_writer(&mut *out, &EntryLine::new(stored))?;
        out.write_all(b"\n")?;
        count += 1;
    }
    Ok(count)
}

/// Streams entries `from..=to` as JSON lines, one read at a time, never buffering the range.
pub fn export_jsonl(
    ledger: &Ledger,
    from: u64,
    to: u64,
    out: &mut impl Write,
) -> Result<u64, ApiError> {
    let mut count = 0;
    for stored in ledger.entries(from, to) {
        count += write_jsonl(out, [&stored?])?;
    }
    Ok(count)
}

/// A table of entries for people.
pub fn write_entries_table<'a>(
    out: &mut impl Write,
    entries: impl IntoIterator<Item = &'a StoredEntry>,
) -> Result<(), ApiError> {
    writeln!(
        out,
        "{:>6} {:<32} {:<18} {:<22} {:<28} {:<8} TRANSITIONS",
        "SEQ", "OBSERVED", "CHANGE", "KIND", "NAME", "RV"
    )?;
    for stored in entries {
        let entry = &stored.entry;
        let transitions: Vec<String> = entry
            .transitions
            .iter()
            .map(|t| {
                serde_json::to_value(t)
                    .ok()
                    .and_then(|v| v["transition"].as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect();
        let (change, kind, name, version) = match &entry.change {
            Change::Object(change) => (
                format!("{:?}", change.change).to_lowercase(),
                change.kind.as_str().to_string(),
                format!("{}/{}", change.namespace, change.name),
                change.resource_version.clone(),
            ),
            Change::WatchGap(gap) => (
                format!("watch_gap ({})", gap.reason),
                gap.resource.clone(),
                "-".into(),
                gap.last_resource_version
                    .clone()
                    .unwrap_or_else(|| "-".into()),
            ),
            Change::CheckDenied(denied) => (
                format!("check_denied x{}", denied.count),
                denied.reason.code().to_string(),
                format!("{}/{}", denied.namespace, denied.pod_name),
                "-".into(),
            ),
            Change::WatchScope(scope) => (
                "watch_scope".into(),
                "-".into(),
                match scope.namespaces.is_empty() {
                    true => "all namespaces".into(),
                    false => scope.namespaces.join(","),
                },
                "-".into(),
            ),
            Change::CheckDeniedOverflow(overflow) => (
                format!("check_denied_overflow x{}", overflow.count),
                overflow.reason.code().to_string(),
                format!("{} .. {}", overflow.first_pod_uid, overflow.last_pod_uid),
                "-".into(),
            ),
        };
        writeln!(
            out,
            "{:>6} {:<32} {:<18} {:<22} {:<28} {:<8} {}",
            entry.seq,
            entry.observed_at.to_rfc3339(),
            change,
            kind,
            name,
            version,
            transitions.join(",")
        )?;
    }
    Ok(())
}

/// A check's decision for people: the verdict and reason, then the binding it rests on.
pub fn write_decision_table(
    decision: &ledger::Decision,
    out: &mut impl Write,
) -> Result<(), ApiError> {
    let verdict = match decision.decision {
        ledger::Verdict::Allow => "ALLOW",
        ledger::Verdict::Deny => "DENY",
        ledger::Verdict::NotReady => "NOT READY",
    };
    let reason = decision.reason.map_or("-", |r| r.code());
    writeln!(out, "{verdict:<9} {reason}  (ledger seq {})", decision.seq)?;
    if let Some(detail) = &decision.detail {
        writeln!(out, "  {detail}")?;
    }
    if let Some(binding) = &decision.binding {
        let object = |o: &ledger::ObjectView| format!("{}/{} ({})", o.namespace, o.name, o.uid);
        let kind = serde_json::to_value(binding.kind)?;
        writeln!(out, "  binding  {}", kind.as_str().unwrap_or("?"))?;
        writeln!(out, "  pod      {}", object(&binding.pod))?;
        writeln!(out, "  sandbox  {}", object(&binding.sandbox))?;
        if let Some(claim) = &binding.claim {
            writeln!(out, "  claim    {}", object(claim))?;
        }
        for pvc in &binding.pvcs {
            writeln!(out, "  pvc      {}", object(pvc))?;
        }
        if let Some(id) = &binding.sandbox_id {
            writeln!(out, "  id       {id}")?;
        }
        writeln!(
            out,
            "  since    seq {} ({})",
            binding.since_seq,
            binding.since.to_rfc3339()
        )?;
    }
    Ok(())
}

/// A verification report for people: what verified, or the first broken seq and why.
pub fn write_verify_table(
    report: &ledger::VerifyReport,
    out: &mut impl Write,
) -> Result<(), ApiError> {
    match &report.failure {
        None => writeln!(
            out,
            "OK      seqs {}..={} verified ({} entries); head seq {}, hash {}",
            report.from_seq,
            report.verified_seq,
            report.entries,
            report.head_seq,
            report.verified_hash
        )?,
        Some(failure) => {
            writeln!(
                out,
                "FAILED  at seq {}: {}",
                failure.seq,
                serde_json::to_value(failure.kind)?
                    .as_str()
                    .unwrap_or("unknown")
            )?;
            writeln!(out, "  {}", failure.detail)?;
            writeln!(
                out,
                "  verified before it: seqs {}..={} ({} entries); head seq {}",
                report.from_seq, report.verified_seq, report.entries, report.head_seq
            )?;
        }
    }
    Ok(())
}
