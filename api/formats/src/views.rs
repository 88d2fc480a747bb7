//! The JSON views: entries (history, export), state, and a plain table for people.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::{BindingView, LedgerView, ObjectRecord, Projection, StoredEntry};
use schemas::{Change, Entry, Hash, KindFields, ObjectKind};
use serde::Serialize;

use crate::names::{base64_of, change_name};
use crate::FormatError;

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
            bytes: base64_of(&stored.bytes),
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
    /// Controller kind and name, if any, for people (the table); not in the JSON view.
    #[serde(skip)]
    pub controller_name: Option<String>,
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
            controller_name: current
                .controller
                .as_ref()
                .map(|c| match c.ambiguous_count() {
                    Some(count) => format!("{count} {} controllers", c.kind),
                    None => format!("{}/{}", c.kind, c.name),
                }),
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

/// The JSON of [`StateView`], written one object at a time: a state of a million objects
/// is never held whole as lines (the CLI's `state` and `GET /v1/state` stream it).
pub struct StateJson<'a>(pub &'a Projection);

impl Serialize for StateJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        /// The live objects, each made a line as it is written.
        struct Objects<'a>(Vec<&'a ObjectRecord>);
        impl Serialize for Objects<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|record| ObjectLine::new(record)))
            }
        }
        let projection = self.0;
        // The fields of `StateView`, in its order.
        let mut state = serializer.serialize_struct("StateView", 4)?;
        state.serialize_field("seq", &projection.seq())?;
        state.serialize_field("at", &projection.at())?;
        state.serialize_field("objects", &Objects(projection.live_objects()))?;
        state.serialize_field("bindings", &projection.active_bindings())?;
        state.end()
    }
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

    /// A table for people: every live object with its controller (warm, claimed and
    /// orphaned Sandboxes differ only there) and whether it is terminating, then every
    /// active binding with its pod uid and sandbox id.
    pub fn write_table(&self, out: &mut impl Write) -> Result<(), FormatError> {
        writeln!(
            out,
            "state as of seq {} ({})",
            self.seq,
            self.at
                .map(crate::names::time_text)
                .unwrap_or_else(|| "empty".into())
        )?;
        writeln!(out)?;
        let mut objects = TextTable::new(&[
            "KIND",
            "NAMESPACE",
            "NAME",
            "UID",
            "CONTROLLER",
            "TERMINATING",
            "SEQ",
        ])
        .right_aligned(6);
        for o in &self.objects {
            objects.row(vec![
                o.kind.as_str().to_string(),
                o.namespace.to_string(),
                o.name.to_string(),
                o.uid.to_string(),
                o.controller_name.clone().unwrap_or_else(|| "-".into()),
                if o.terminating { "yes" } else { "-" }.to_string(),
                o.last_seq.to_string(),
            ]);
        }
        objects.write(out, &|_, _| None)?;
        writeln!(out)?;
        let mut bindings = TextTable::new(&[
            "BINDING",
            "NAMESPACE",
            "POD",
            "POD UID",
            "SANDBOX",
            "CLAIM",
            "SANDBOX ID",
            "SINCE",
        ])
        .right_aligned(7);
        for b in &self.bindings {
            bindings.row(vec![
                binding_kind(b.kind).to_string(),
                b.pod.namespace.to_string(),
                b.pod.name.to_string(),
                b.pod.uid.to_string(),
                b.sandbox.name.to_string(),
                b.claim
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |c| c.name.to_string()),
                b.sandbox_id.as_deref().unwrap_or("-").to_string(),
                b.since_seq.to_string(),
            ]);
        }
        bindings.write(out, &|_, _| None)?;
        Ok(())
    }
}

fn binding_kind(kind: schemas::BindingKind) -> &'static str {
    match kind {
        schemas::BindingKind::Claim => "claim",
        schemas::BindingKind::Direct => "direct",
    }
}

/// `text` with every control character escaped (`\u{1b}`, `\n`, ...), so a value from
/// the ledger can neither move a terminal's cursor nor break a table's line.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Columns for people, each as wide as its widest cell: long timestamps, names and
/// reasons never push a row out of line. The last column is not padded.
#[derive(Debug, Clone)]
pub struct TextTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<usize>,
}

impl TextTable {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> TextTable {
        TextTable {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right: Vec::new(),
        }
    }

    /// Aligns column `index` to the right (numbers).
    pub fn right_aligned(mut self, index: usize) -> TextTable {
        self.right.push(index);
        self
    }

    /// Adds a row (its cells are made printable).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| printable(cell)).collect());
    }

    /// Writes the header and the rows; `paint(column, text)` may return an ANSI colour
    /// for a cell, applied around its padded text so colours never shift a column.
    pub fn write(
        &self,
        out: &mut impl Write,
        paint: &dyn Fn(usize, &str) -> Option<&'static str>,
    ) -> Result<(), FormatError> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        // A seq column at least 6 wide, as before: scripts that cut on it keep working.
        if let Some(first) = widths.first_mut() {
            if self.right.contains(&0) {
                *first = (*first).max(6);
            }
        }
        let line = |out: &mut dyn Write, cells: &[String], header: bool| -> std::io::Result<()> {
            let mut text = String::new();
            for (index, cell) in cells.iter().enumerate().take(columns) {
                let last = index + 1 == columns;
                let pad = widths[index].saturating_sub(cell.chars().count());
                let padded = match (self.right.contains(&index), last) {
                    (true, _) => format!("{}{cell}", " ".repeat(pad)),
                    (false, true) => cell.clone(),
                    (false, false) => format!("{cell}{}", " ".repeat(pad)),
                };
                match (header, paint(index, cell)) {
                    (false, Some(colour)) => {
                        text.push_str(colour);
                        text.push_str(&padded);
                        text.push_str("\x1b[0m");
                    }
                    _ => text.push_str(&padded),
                }
                if !last {
                    text.push_str("  ");
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(out, &self.header, true)?;
        for row in &self.rows {
            line(out, row, false)?;
        }
        Ok(())
    }
}

/// Writes entries as JSON lines.
pub fn write_jsonl<'a>(
    out: &mut impl Write,
    entries: impl IntoIterator<Item = &'a StoredEntry>,
) -> Result<u64, FormatError> {
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
    ledger: &LedgerView,
    from: u64,
    to: u64,
    out: &mut impl Write,
) -> Result<u64, FormatError> {
    let mut count = 0;
    for stored in ledger.entries(from, to) {
        count += write_jsonl(out, [&stored?])?;
    }
    Ok(count)
}

/// A table of entries for people: one row per entry with the uid it recorded (replaced
/// pods share a name), the change as the JSON spells it, the reason of a release or a
/// denied check, and its transitions.
pub fn write_entries_table<'a>(
    out: &mut impl Write,
    entries: impl IntoIterator<Item = &'a StoredEntry>,
) -> Result<(), FormatError> {
    let mut table = TextTable::new(&[
        "SEQ",
        "OBSERVED",
        "CHANGE",
        "KIND",
        "NAME",
        "UID",
        "RV",
        "REASON",
        "TRANSITIONS",
    ])
    .right_aligned(0);
    for stored in entries {
        let entry = &stored.entry;
        let mut reasons: Vec<&str> = Vec::new();
        let mut transitions: Vec<String> = entry
            .transitions
            .iter()
            .map(|t| {
                if let schemas::Transition::Released { reason, .. } = t {
                    reasons.push(reason.code());
                }
                serde_json::to_value(t)
                    .ok()
                    .and_then(|v| v["transition"].as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect();
        let (change, kind, name, uid, version) = match &entry.change {
            Change::Object(change) => (
                change_name(change.change).to_string(),
                change.kind.as_str().to_string(),
                format!("{}/{}", change.namespace, change.name),
                change.uid.to_string(),
                change.resource_version.to_string(),
            ),
            Change::WatchGap(gap) => {
                transitions.insert(0, format!("reason {}", gap.reason));
                (
                    "watch_gap".to_string(),
                    "-".to_string(),
                    gap.resource.clone(),
                    "-".to_string(),
                    gap.last_resource_version
                        .clone()
                        .unwrap_or_else(|| "-".into()),
                )
            }
            Change::CheckDenied(denied) => {
                reasons.push(denied.reason.code());
                transitions.insert(0, format!("count {}", denied.count));
                (
                    "check_denied".to_string(),
                    ObjectKind::Pod.as_str().to_string(),
                    format!("{}/{}", denied.namespace, denied.pod_name),
                    denied.pod_uid.clone(),
                    "-".to_string(),
                )
            }
            Change::WatchScope(scope) => (
                "watch_scope".to_string(),
                "-".to_string(),
                match scope.namespaces.is_empty() {
                    true => "all namespaces".into(),
                    false => scope.namespaces.join(","),
                },
                "-".to_string(),
                "-".to_string(),
            ),
            Change::CheckDeniedOverflow(overflow) => {
                reasons.push(overflow.reason.code());
                transitions.insert(0, format!("count {}", overflow.count));
                (
                    "check_denied_overflow".to_string(),
                    ObjectKind::Pod.as_str().to_string(),
                    "-".to_string(),
                    format!("{} .. {}", overflow.first_pod_uid, overflow.last_pod_uid),
                    "-".to_string(),
                )
            }
        };
        table.row(vec![
            entry.seq.to_string(),
            crate::names::time_text(entry.observed_at),
            change,
            kind,
            name,
            uid,
            version,
            if reasons.is_empty() {
                "-".to_string()
            } else {
                reasons.join(",")
            },
            if transitions.is_empty() {
                "-".to_string()
            } else {
                transitions.join(",")
            },
        ]);
    }
    table.write(out, &|_, _| None)
}

/// A check's decision for people: the verdict and reason, then the binding it rests on.
pub fn write_decision_table(
    decision: &ledger::Decision,
    out: &mut impl Write,
) -> Result<(), FormatError> {
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
) -> Result<(), FormatError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::entry::CheckDenied;
    use schemas::{ChangeKind, ObjectChange, Reason};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
    }

    fn stored(seq: u64, change: Change) -> StoredEntry {
        let entry = Entry {
            format_version: schemas::entry::FORMAT_VERSION,
            seq,
            observed_at: "2026-05-20T15:00:00.123456789Z".parse().unwrap(),
            prev_hash: Hash::ZERO,
            change,
            transitions: vec![],
            snapshot: None,
        };
        StoredEntry {
            hash: Hash([seq as u8; 32]),
            bytes: entry.encode().unwrap(),
            entry,
        }
    }

    #[test]
    fn denied_checks_and_resyncs_read_as_their_json_says() {
        let missing = stored(
            7,
            Change::Object(ObjectChange {
                kind: ObjectKind::Pod,
                api_version: "v1".into(),
                namespace: "ns".into(),
                name: "a-rather-long-pod-name-that-widens-the-column".into(),
                uid: "pod-uid-1".into(),
                resource_version: "12".into(),
                change: ChangeKind::MissingOnResync,
                controller: None,
                deletion_timestamp: None,
                fields: KindFields::Pod {
                    sandbox_id_annotation: None,
                    phase: None,
                },
            }),
        );
        let denied = stored(
            1234,
            Change::CheckDenied(CheckDenied {
                pod_uid: "pod-uid-1".into(),
                namespace: "ns".into(),
                pod_name: "p".into(),
                reason: Reason::BindingReleased,
                minute: "2026-05-20T15:00:00Z".parse().unwrap(),
                count: 3,
            }),
        );
        let mut out = Vec::new();
        write_entries_table(&mut out, [&missing, &denied]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("missing_on_resync"), "{text}");
        assert!(!text.contains("missingonresync"), "{text}");
        let denied_row = lines[2];
        assert!(denied_row.contains("check_denied"), "{text}");
        // The reason is under REASON, the kind under KIND, the count with the transitions.
        let reason_at = lines[0].find("REASON").unwrap();
        assert!(
            denied_row[reason_at..].starts_with("BINDING_RELEASED"),
            "{text}"
        );
        let kind_at = lines[0].find("KIND").unwrap();
        assert!(denied_row[kind_at..].starts_with("Pod "), "{text}");
        assert!(denied_row.ends_with("count 3"), "{text}");
        // Every row's uid starts under the UID title, however long the names and times.
        let uid_at = lines[0].find("UID").unwrap();
        for row in &lines[1..] {
            assert!(row[uid_at..].starts_with("pod-uid-1"), "{text}");
        }
    }
}
