//! Watch-event lines into the ledger.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use ledger::{AppendOutcome, Ledger};
use schemas::{normalize, Change, ObjectChange, WatchEventType};
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

/// Reads watch-event lines from `input` and appends them, a batch of `batch_size`
/// changes at a time, each flushed (group commit) with the time `clock` gave when the
/// batch was cut. Lines are read and parsed on this thread while a second one commits
/// the batch before (parsing is about half of an ingest's work), so an interrupted
/// ingest loses at most the batch being committed, the one queued behind it and the lines
/// read since, and leaves the chain whole.
///
/// A line is never held in memory beyond `MAX_LINE_BYTES` (4 MiB): a longer one (with or
/// without a newline at its end) is skipped up to its newline as it is read and reported
/// as too long, and the lines after it are read as usual.
pub fn ingest(
    ledger: &mut Ledger,
    mut input: impl BufRead,
    options: IngestOptions,
    mut clock: impl FnMut() -> DateTime<Utc>,
) -> Result<IngestReport, WatcherError> {
    let batch_size = options.batch_size.max(1);
    let (batches, received) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let committer = scope.spawn(move || {
            let mut report = IngestReport::default();
            for (pending, now) in received {
                commit(ledger, pending, &mut report, now)?;
            }
            Ok::<_, WatcherError>((report, ledger.durable_seq()))
        });
        // Reading stops when the committer stopped (its error is the one reported).
        let mut from_lines = IngestReport::default();
        let mut pending: Vec<ObjectChange> = Vec::new();
        let cut = |pending: &mut Vec<ObjectChange>, clock: &mut dyn FnMut() -> _| {
            let batch = std::mem::replace(pending, Vec::with_capacity(batch_size));
            batch.is_empty() || batches.send((batch, clock())).is_ok()
        };
        let mut line = Vec::new();
        let mut line_number = 0u64;
        let read_all = loop {
            let read = match read_line(&mut input, &mut line, MAX_LINE_BYTES) {
                Ok(Some(read)) => read,
                Ok(None) => {
                    cut(&mut pending, &mut clock);
                    break Ok(());
                }
                Err(e) => break Err(WatcherError::Io(e)),
            };
            line_number += 1;
            let parsed = match read {
                LineRead::Whole => parse_line(&line),
                LineRead::TooLong => Err(too_long()),
            };
            match parsed {
                Ok(Some(change)) => pending.push(change),
                Ok(None) => from_lines.ignored += 1,
                Err(message) if message.is_empty() => {}
                Err(message) => from_lines.errors.push(LineError {
                    line: line_number,
                    message,
                }),
            }
            if pending.len() >= batch_size && !cut(&mut pending, &mut clock) {
                break Ok(());
            }
        };
        drop(batches);
        let (mut report, head_seq) = committer.join().unwrap_or_else(|_| {
            Err(WatcherError::Io(std::io::Error::other(
                "the ingest's committing thread panicked",
            )))
        })?;
        read_all?;
        report.ignored += from_lines.ignored;
        report.errors = from_lines.errors;
        report.head_seq = head_seq;
        Ok(report)
    })
}

/// Parsed changes ready to commit, and the time they were cut at.
type Batch = (Vec<ObjectChange>, DateTime<Utc>);

/// Batches parsed ahead of the one being committed.
const BATCHES_IN_FLIGHT: usize = 1;

/// How [`read_line`] read a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineRead {
    /// The whole line (without its newline) is in the buffer.
    Whole,
    /// The line is longer than the limit: it was skipped up to its newline (or the end of
    /// the input) and the buffer is empty.
    TooLong,
}

/// Reads the next line of `input` into `line` (cleared first, without the newline),
/// keeping at most `max` bytes: the rest of a longer line is consumed and dropped as it
/// arrives, so memory stays bounded by `max` plus the reader's buffer however long the
/// line is. `None` at the end of the input. Lines are split as `BufRead::split(b'\n')`
/// splits them: a final line without a newline is a line, a final newline ends the input.
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<LineRead>> {
    line.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if line.len() + part.len() > max {
                too_long = true;
                line.clear();
                line.shrink_to(max);
            } else {
                line.extend_from_slice(part);
            }
        }
        let used = part.len() + usize::from(newline.is_some());
        input.consume(used);
        if newline.is_some() {
            return Ok(Some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
    }
}

fn too_long() -> String {
    format!("line is longer than {MAX_LINE_BYTES} bytes")
}

fn commit(
    ledger: &mut Ledger,
    pending: Vec<ObjectChange>,
    report: &mut IngestReport,
    now: DateTime<Utc>,
) -> Result<(), WatcherError> {
    let committed = ledger.commit(pending.into_iter().map(Change::Object), now)?;
    for outcome in committed.outcomes {
        match outcome {
            AppendOutcome::Appended { .. } => report.appended += 1,
            AppendOutcome::Duplicate { .. } => report.duplicate += 1,
            AppendOutcome::Stale { .. } => report.stale += 1,
            AppendOutcome::Ignored { .. } => report.ignored += 1,
        }
    }
    Ok(())
}

/// One line: `Ok(Some)` a change to offer, `Ok(None)` nothing to record, `Err("")` a
/// blank line, `Err(message)` a rejected line.
fn parse_line(line: &[u8]) -> Result<Option<ObjectChange>, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(too_long());
    }
    let text = std::str::from_utf8(line).map_err(|_| "line is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err(String::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // A JSON value keeps the last of repeated keys: `{"type":"ADDED","type":"DELETED"}`
    // would be read as a delete while another reader (or a person) sees an add, and a
    // second `uid` inside the object likewise. Refused at any depth.
    schemas::json::reject_repeated_keys(text)
        .map_err(|e| format!("refused: a repeated key ({e})"))?;
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

    const POD_LINE_WITH_TWO_UIDS: &str = r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns","uid":"pod-1","uid":"pod-2","resourceVersion":"1"}}}"#;

    const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns","uid":"pod-1","resourceVersion":"1","ownerReferences":[{"apiVersion":"agents.x-k8s.io/v1alpha1","kind":"Sandbox","name":"s","uid":"sb-1","controller":true}]}}"#;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let added = format!(r#"{{"type":"ADDED","object":{POD}}}"#);
        assert!(parse_line(added.as_bytes()).unwrap().is_some());
        for line in [
            format!(r#"{{"type":"ADDED","object":{POD},"type":"DELETED"}}"#),
            format!(r#"{{"type":"ADDED","type":"ADDED","object":{POD}}}"#),
            format!(r#"{{"type":"ADDED","object":{{}},"object":{POD}}}"#),
            format!(r#"{{"type":null,"type":"DELETED","object":{POD}}}"#),
            // Inside the object: a second uid would be read as the last one.
            POD_LINE_WITH_TWO_UIDS.to_string(),
        ] {
            let message = parse_line(line.as_bytes()).unwrap_err();
            assert!(message.contains("repeated key"), "{line}: {message}");
        }
        // Other keys are no problem; a non-object is still "no type".
        let extra = format!(r#"{{"type":"ADDED","object":{POD},"x":1}}"#);
        assert!(parse_line(extra.as_bytes()).unwrap().is_some());
        let array = format!(r#"["ADDED",{POD}]"#);
        assert!(parse_line(array.as_bytes())
            .unwrap_err()
            .contains("no \"type\""));
    }

    fn lines_of(input: &[u8], max: usize) -> Vec<(LineRead, Vec<u8>)> {
        // A tiny reader buffer, so lines span many fill_buf calls.
        let mut reader = std::io::BufReader::with_capacity(3, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while let Some(read) = read_line(&mut reader, &mut line, max).unwrap() {
            out.push((read, line.clone()));
        }
        out
    }

    #[test]
    fn lines_split_as_split_does_and_long_ones_are_skipped_to_their_newline() {
        use LineRead::{TooLong, Whole};
        for input in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\nb",
            b"a\n\nb\n",
            b"abc\n\n\n",
        ] {
            let expected: Vec<(LineRead, Vec<u8>)> = input
                .split(|b| *b == b'\n')
                .map(|l| (Whole, l.to_vec()))
                .collect();
            // `split` yields a last empty piece after a final newline; BufRead::split does not.
            let expected = match input.last() {
                None => Vec::new(),
                Some(b'\n') => expected[..expected.len() - 1].to_vec(),
                Some(_) => expected,
            };
            assert_eq!(lines_of(input, 8), expected, "{input:?}");
        }
        assert_eq!(
            lines_of(b"12345678\n123456789\nok\n0123456789abcdef", 8),
            vec![
                (Whole, b"12345678".to_vec()),
                (TooLong, Vec::new()),
                (Whole, b"ok".to_vec()),
                (TooLong, Vec::new()),
            ]
        );
    }

    #[test]
    fn a_long_line_never_grows_the_buffer_past_the_limit() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nnext\n");
        let mut reader = std::io::BufReader::with_capacity(4096, &input[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut line, 1000).unwrap(),
            Some(LineRead::TooLong)
        );
        assert!(line.capacity() <= 1000 + 4096, "{}", line.capacity());
        assert_eq!(
            read_line(&mut reader, &mut line, 1000).unwrap(),
            Some(LineRead::Whole)
        );
        assert_eq!(line, b"next");
        assert_eq!(read_line(&mut reader, &mut line, 1000).unwrap(), None);
    }

    fn pod_line(n: u64) -> String {
        format!(
            r#"{{"type":"ADDED","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p{n}","namespace":"ns","uid":"pod-{n}","resourceVersion":"{n}","ownerReferences":[{{"apiVersion":"agents.x-k8s.io/v1alpha1","kind":"Sandbox","name":"s","uid":"sb-1","controller":true}}]}}}}}}"#
        )
    }

    fn open(fault: Option<(u64, ledger::store::Fault)>) -> (ledger::store::MemoryStore, Ledger) {
        let memory = ledger::store::MemoryStore::new();
        let store = std::sync::Arc::new(ledger::store::FaultyStore::new(
            std::sync::Arc::new(memory.clone()),
            fault,
        ));
        let ledger =
            Ledger::open_store(store, None, None, ledger::LedgerConfig::default()).unwrap();
        (memory, ledger)
    }

    #[test]
    fn lines_are_counted_and_numbered_across_batches_committed_on_another_thread() {
        let (_, mut ledger) = open(None);
        let mut input = String::new();
        for n in 1..=9u64 {
            match n {
                4 => input.push_str("{not json\n"),
                7 => input.push_str("{\"type\":\"BOOKMARK\",\"object\":{}}\n"),
                _ => input.push_str(&(pod_line(n) + "\n")),
            }
        }
        input.push_str(&pod_line(2)); // a duplicate, on a last line with no newline
        let report = ingest(
            &mut ledger,
            input.as_bytes(),
            IngestOptions { batch_size: 2 },
            Utc::now,
        )
        .unwrap();
        assert_eq!(report.appended, 7);
        assert_eq!(report.duplicate, 1);
        assert_eq!(report.ignored, 1);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, 4);
        assert_eq!(report.head_seq, 7);
        assert_eq!(ledger.durable_seq(), 7);
    }

    #[test]
    fn a_batch_the_ledger_refuses_stops_the_ingest_with_the_ledgers_error() {
        // Write 0 is the format record at open; 1 and 2 the first batch's commit and
        // flush; write 3, the second batch's commit, fails.
        let (memory, mut ledger) = open(Some((3, ledger::store::Fault::Fail)));
        let input: String = (1..=40u64).map(|n| pod_line(n) + "\n").collect();
        let error = ingest(
            &mut ledger,
            input.as_bytes(),
            IngestOptions { batch_size: 4 },
            Utc::now,
        )
        .unwrap_err();
        assert!(matches!(error, WatcherError::Ledger(_)), "{error}");
        drop(ledger);
        let reopened = Ledger::open_store(
            std::sync::Arc::new(memory),
            None,
            None,
            ledger::LedgerConfig::default(),
        )
        .unwrap();
        assert_eq!(
            reopened.head().seq,
            4,
            "the first batch, and nothing after it"
        );
    }
}
