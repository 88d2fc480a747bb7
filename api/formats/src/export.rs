//! An export: which line format ([`ExportFormat`]) and which seqs ([`ExportRange`]), the
//! same for `GET /v1/export` and the CLI's `export`.

use std::io::Write;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ledger::{LedgerView, StoredEntry};

use crate::cloudevents::{export_cloudevents, CloudEventsExport};
use crate::csv_export::{export_csv, CsvExport};
use crate::views::{export_jsonl, write_jsonl};
use crate::FormatError;

/// The line formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// One entry per line: seq, leaf_index, hash, prev_hash, entry, base64 bytes.
    #[default]
    Jsonl,
    /// One row per entry, a header first.
    Csv,
    /// CloudEvents 1.0 structured JSON, one event per line.
    CloudEvents,
}

impl ExportFormat {
    /// Every format, in the order the names are listed to people.
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Jsonl,
        ExportFormat::Csv,
        ExportFormat::CloudEvents,
    ];

    /// The name a caller gives (`jsonl`, `csv`, `cloudevents`).
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
            ExportFormat::CloudEvents => "cloudevents",
        }
    }

    /// What a line holds, for people (the CLI's help).
    pub fn description(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => {
                "One entry per line: seq, leaf_index, hash, prev_hash, entry, base64 bytes"
            }
            ExportFormat::Csv => "One row per entry, a header first",
            ExportFormat::CloudEvents => "CloudEvents 1.0 structured JSON, one event per line",
        }
    }

    /// The media type of an export in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            // One structured-mode event (`application/cloudevents+json`) per line: not a
            // JSON array, so not `application/cloudevents-batch+json`.
            ExportFormat::CloudEvents => "application/x-ndjson",
        }
    }

    /// What comes before the first entry: the CSV header row; nothing for the others.
    pub fn header(self) -> Result<Vec<u8>, FormatError> {
        match self {
            ExportFormat::Csv => CsvExport::new(Vec::new())?.finish(),
            ExportFormat::Jsonl | ExportFormat::CloudEvents => Ok(Vec::new()),
        }
    }

    /// One page of a stream: the lines of `entries` (CSV rows without the header), the
    /// CloudEvents naming `source`.
    pub fn page(self, entries: &[StoredEntry], source: &str) -> Result<Vec<u8>, FormatError> {
        let buffer = Vec::with_capacity(256 * 1024);
        match self {
            ExportFormat::Jsonl => {
                let mut buffer = buffer;
                write_jsonl(&mut buffer, entries)?;
                Ok(buffer)
            }
            ExportFormat::Csv => {
                let mut csv = CsvExport::continuing(buffer);
                for stored in entries {
                    csv.write(stored)?;
                }
                csv.finish()
            }
            ExportFormat::CloudEvents => {
                let mut events = CloudEventsExport::new(buffer, source)?;
                for stored in entries {
                    events.write(stored)?;
                }
                events.finish()
            }
        }
    }

    /// Streams entries `from..=to` in this format (the CSV header included), one read at
    /// a time; returns the number of entries written.
    pub fn export(
        self,
        ledger: &LedgerView,
        from: u64,
        to: u64,
        source: &str,
        out: &mut impl Write,
    ) -> Result<u64, FormatError> {
        match self {
            ExportFormat::Jsonl => export_jsonl(ledger, from, to, out),
            ExportFormat::Csv => export_csv(ledger, from, to, out),
            ExportFormat::CloudEvents => export_cloudevents(ledger, from, to, source, out),
        }
    }
}

impl FromStr for ExportFormat {
    type Err = FormatError;

    fn from_str(text: &str) -> Result<ExportFormat, FormatError> {
        ExportFormat::ALL
            .into_iter()
            .find(|format| format.name() == text)
            .ok_or_else(|| {
                FormatError::InvalidRequest(format!(
                    "unsupported format {text:?}: jsonl, csv or cloudevents"
                ))
            })
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The seqs an export asks for: a first seq or a time (`since`, exclusive of entries
/// observed before it), a last seq or a time (`until`, inclusive), each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportRange {
    /// The first seq (0 reads as 1).
    pub from_seq: Option<u64>,
    /// The last seq; refused beyond the head.
    pub to_seq: Option<u64>,
    /// The first entry observed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// The last entry observed at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl ExportRange {
    /// Refuses what no ledger could answer: a seq and a time for the same end, or a first
    /// seq after the last.
    pub fn check(&self) -> Result<(), FormatError> {
        if self.from_seq.is_some() && self.since.is_some() {
            return Err(FormatError::InvalidRequest(
                "give from_seq or since, not both".into(),
            ));
        }
        if self.to_seq.is_some() && self.until.is_some() {
            return Err(FormatError::InvalidRequest(
                "give to_seq or until, not both".into(),
            ));
        }
        if let (Some(from), Some(to)) = (self.from_seq, self.to_seq) {
            if from > to {
                return Err(FormatError::InvalidRequest(format!(
                    "from_seq {from} is after to_seq {to}"
                )));
            }
        }
        Ok(())
    }

    /// The first seq and, when one was asked for, the last, on this ledger: times become
    /// the seqs observed at them, a last seq beyond the head is
    /// [`FormatError::OutOfRange`]. Without a last seq the caller decides (the head, or
    /// the covering checkpoint of a bundle).
    pub fn resolve(&self, ledger: &LedgerView) -> Result<(u64, Option<u64>), FormatError> {
        self.check()?;
        let head = ledger.head().seq;
        let from = match (self.from_seq, self.since) {
            (Some(seq), _) => seq.max(1),
            // The first entry at or after `since`: one past the last entry before it.
            (None, Some(since)) => {
                ledger.seq_at_time(since - chrono::Duration::nanoseconds(1))? + 1
            }
            (None, None) => 1,
        };
        let to = match (self.to_seq, self.until) {
            (Some(seq), _) if seq > head => {
                return Err(FormatError::OutOfRange(format!(
                    "to_seq {seq} is beyond the head ({head})"
                )))
            }
            (Some(seq), _) => Some(seq),
            (None, Some(until)) => Some(ledger.seq_at_time(until)?),
            (None, None) => None,
        };
        Ok((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_their_names_and_nothing_else() {
        for format in ExportFormat::ALL {
            assert_eq!(format.name().parse::<ExportFormat>().unwrap(), format);
            assert_eq!(format.to_string(), format.name());
        }
        for bad in ["", "JSONL", "json", "cloud-events", "csv "] {
            let error = bad.parse::<ExportFormat>().unwrap_err();
            assert!(
                matches!(&error, FormatError::InvalidRequest(m) if m.contains("unsupported format")),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn ranges_that_cannot_be_answered_are_refused_before_reading() {
        let time: DateTime<Utc> = "2026-05-20T15:00:00Z".parse().unwrap();
        for (range, message) in [
            (
                ExportRange {
                    from_seq: Some(1),
                    since: Some(time),
                    ..ExportRange::default()
                },
                "from_seq or since",
            ),
            (
                ExportRange {
                    to_seq: Some(1),
                    until: Some(time),
                    ..ExportRange::default()
                },
                "to_seq or until",
            ),
            (
                ExportRange {
                    from_seq: Some(5),
                    to_seq: Some(4),
                    ..ExportRange::default()
                },
                "from_seq 5 is after to_seq 4",
            ),
        ] {
            let error = range.check().unwrap_err();
            assert!(
                matches!(&error, FormatError::InvalidRequest(m) if m.contains(message)),
                "{range:?}: {error}"
            );
        }
        assert!(ExportRange::default().check().is_ok());
    }
}
