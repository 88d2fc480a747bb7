//! Watch-event lines into the ledger.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use ledger::{AppendOutcome, Ledger};
use schemas::{normalize, ObjectChange, WatchEventType};
use serde::Serialize;
use serde_json::Value;

use crate::WatcherError;

/// Longest line accepted; Kubernetes objects are limited to about 1.5 MiB in etcd.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// How to ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Changes per atomic batch; each batch is flushed (group commit).
    pub batch_size: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { batch_size: 1024 }
    }
}

/// A rejected line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Entries appended.
    pub appended: u64,
    /// Events already recorded.
    pub duplicate: u64,
    /// Events older than what is recorded, refused.
    pub stale: u64,
    /// Events that record nothing by design (other kinds, bookmarks, status churn,
    /// pods and PVCs not owned by a Sandbox).
    pub ignored: u64,
    /// Lines rejected, with their numbers.
    pub errors: Vec<LineError>,
    /// The durable head after the ingest.
    pub head_seq: u64,
}

/// Reads watch-event lines from `input` and appends them. Every batch is flushed before
/// the next is read, so an interrupted ingest loses at most the batch in flight and
/// leaves the chain whole.
pub fn ingest(
    ledger: &mut Ledger,
    input: impl BufRead,
    options: IngestOptions,
    mut clock: impl FnMut() -> DateTime<Utc>,
) -> Result<IngestReport, WatcherError> {
    let mut report = IngestReport::default();
    let mut pending: Vec<ObjectChange> = Vec::new();
    let batch_size = options.batch_size.max(1);
    for (index, line) in input.split(b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let line = line?;
        match parse_line(&line) {
            Ok(Some(change)) => pending.push(change),
            Ok(None) => report.ignored += 1,
            Err(message) if message.is_empty() => {}
            Err(message) => report.errors.push(LineError {
                line: line_number,
                message,
            }),
        }
        if pending.len() >= batch_size {
            commit(ledger, &mut pending, &mut report, clock())?;
        }
    }
    commit(ledger, &mut pending, &mut report, clock())?;
    report.head_seq = ledger.durable_seq();
    Ok(report)
}

fn commit(
    ledger: &mut Ledger,
    pending: &mut Vec<ObjectChange>,
    report: &mut IngestReport,
    now: DateTime<Utc>,
) -> Result<(), WatcherError> {
    if pending.is_empty() {
        return Ok(());
    }
    for outcome in ledger.append(pending.drain(..), now)? {
        match outcome {
            AppendOutcome::Appended { .. } => report.appended += 1,
            AppendOutcome::Duplicate { .. } => report.duplicate += 1,
            AppendOutcome::Stale { .. } => report.stale += 1,
            AppendOutcome::Ignored { .. } => report.ignored += 1,
        }
    }
    ledger.flush()?;
    Ok(())
}

/// One line: `Ok(Some)` a change to offer, `Ok(None)` nothing to record, `Err("")` a
/// blank line, `Err(message)` a rejected line.
fn parse_line(line: &[u8]) -> Result<Option<ObjectChange>, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("line is longer than {MAX_LINE_BYTES} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| "line is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err(String::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let event_type = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("not a watch event: no \"type\"")?;
    let event = match event_type {
        "BOOKMARK" => return Ok(None),
        other => WatchEventType::parse(other).ok_or_else(|| {
            format!(
                "unsupported event type {other:?} (expected ADDED, MODIFIED, DELETED or BOOKMARK)"
            )
        })?,
    };
    let object = value
        .get("object")
        .filter(|o| o.is_object())
        .ok_or("not a watch event: no \"object\"")?;
    normalize(event, object).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_with_reasons() {
        let cases: [(&[u8], &str); 5] = [
            (b"{", "not JSON"),
            (b"{\"object\":{}}", "no \"type\""),
            (
                b"{\"type\":\"ERROR\",\"object\":{}}",
                "unsupported event type",
            ),
            (b"{\"type\":\"ADDED\"}", "no \"object\""),
            (b"\xff\xfe", "UTF-8"),
        ];
        for (line, expected) in cases {
            let message = parse_line(line).unwrap_err();
            assert!(
                message.contains(expected),
                "{message} should mention {expected}"
            );
        }
        assert_eq!(parse_line(b"  ").unwrap_err(), "");
        assert!(parse_line(b"{\"type\":\"BOOKMARK\",\"object\":{}}")
            .unwrap()
            .is_none());
    }
}
