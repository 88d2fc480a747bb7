//! The CSV and CloudEvents exports over a real sled ledger: the lifecycle fixtures of the
//! workspace ingested as the watcher would, plus a watch gap and a denied check whose
//! free-text fields need CSV quoting. CloudEvents are validated against the CloudEvents
//! JSON schema kept in `tests/data/vectors/cloudevents/`, and both formats are re-hashed.

#[path = "../../../../tests/data/watch_events.rs"]
mod watch_events;
use watch_events::watch_event_changes;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use formats::cloudevents::{
    cloud_event, cloud_event_type, cloud_event_types, export_cloudevents, CloudEventsExport,
};
use formats::csv_export::{export_csv, CsvExport, CsvRow, CSV_COLUMNS};
use formats::{transition_name, StateJson, StateView};
use ledger::{Ledger, LedgerConfig, StoredEntry};
use schemas::{
    chain_hash, BindingKind, Change, CheckDenied, CheckDeniedOverflow, Entry, Hash, ObjectKind,
    Reason, Transition, WatchGap, WatchScope,
};
use serde_json::Value;

const SOURCE: &str = "https://ledger.example/clusters/prod";
/// Quoting bait for the CSV: a comma, a double quote and a newline.
const AWKWARD_POD_NAME: &str = "evil,\"pod\"";
const AWKWARD_GAP_REASON: &str = "relist, after \"410 Gone\"\nagain";

fn workspace_root() -> PathBuf {
    // This crate is api/formats: the workspace is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn schema_path() -> PathBuf {
    workspace_root().join("tests/data/vectors/cloudevents/cloudevents.schema.json")
}

fn at(second: u32, nanos: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, second).unwrap()
        + chrono::Duration::nanoseconds(i64::from(nanos))
}

/// A ledger holding every lifecycle fixture (one batch per file, as `ingest` would append
/// it), then a watch gap and a denied check; returns it with every stored entry.
fn ledger_with_entries() -> (tempfile::TempDir, Ledger, Vec<StoredEntry>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let fixtures = workspace_root().join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", fixtures.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", fixtures.display());
    for (tick, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let changes = watch_event_changes(&text);
        ledger
            .append(changes, at(tick as u32, 250_000_000))
            .unwrap();
    }
    ledger
        .append_changes(
            [
                Change::WatchGap(WatchGap {
                    resource: "pods/v1".into(),
                    last_resource_version: Some("90210".into()),
                    reason: AWKWARD_GAP_REASON.into(),
                }),
                Change::CheckDenied(CheckDenied {
                    pod_uid: "deadbeef-0000-4000-8000-000000000001".into(),
                    namespace: "agents".into(),
                    pod_name: AWKWARD_POD_NAME.into(),
                    reason: Reason::BindingReleased,
                    minute: at(0, 0),
                    count: 3,
                }),
                Change::WatchScope(WatchScope {
                    namespaces: vec!["tenant-a".into()],
                    previous: None,
                }),
                Change::CheckDeniedOverflow(CheckDeniedOverflow {
                    reason: Reason::PodUidMismatch,
                    minute: at(0, 0),
                    count: 4_096,
                    first_pod_uid: "f0000000-0000-4000-8000-000000000001".into(),
                    last_pod_uid: "f0000000-0000-4000-8000-000000000fff".into(),
                    uid_digest: Hash([7; 32]),
                }),
            ],
            at(59, 123),
        )
        .unwrap();
    ledger.flush().unwrap();
    let head = ledger.head().seq;
    let entries: Vec<StoredEntry> = ledger.entries(1, head).map(Result::unwrap).collect();
    assert_eq!(entries.len() as u64, head);
    (dir, ledger, entries)
}

fn compiled_schema() -> (boon::Schemas, boon::SchemaIndex) {
    let path = schema_path();
    // The schema is the contract: a missing file must fail the test, never skip it.
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the CloudEvents JSON schema must exist at {} (it lives in the repository): {e}",
            path.display()
        )
    });
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        schema["$schema"], "http://json-schema.org/draft-07/schema#",
        "expected the draft-07 CloudEvents schema"
    );
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let location = "file:///cloudevents.schema.json";
    compiler.add_resource(location, schema).unwrap();
    let index = compiler.compile(location, &mut schemas).unwrap();
    (schemas, index)
}

fn events_of(entries: &[StoredEntry]) -> Vec<Value> {
    let mut export = CloudEventsExport::new(Vec::new(), SOURCE).unwrap();
    for stored in entries {
        export.write(stored).unwrap();
    }
    assert_eq!(export.events(), entries.len() as u64);
    let text = String::from_utf8(export.finish().unwrap()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), entries.len(), "one event per line per entry");
    events
}

fn has(entry: &Entry, name: &str) -> bool {
    entry.transitions.iter().any(|t| transition_name(t) == name)
}

#[test]
fn the_streamed_state_is_the_json_of_the_state_view_at_every_seq() {
    let (_dir, ledger, entries) = ledger_with_entries();
    let mut with_bindings = 0;
    for seq in 0..=entries.len() as u64 {
        let projection = ledger.state_at_seq(seq).unwrap();
        let whole = StateView::new(&projection);
        with_bindings += usize::from(!whole.bindings.is_empty());
        assert_eq!(
            serde_json::to_string(&StateJson(&projection)).unwrap(),
            serde_json::to_string(&whole).unwrap(),
            "seq {seq}"
        );
        assert_eq!(
            serde_json::to_string_pretty(&StateJson(&projection)).unwrap(),
            serde_json::to_string_pretty(&whole).unwrap(),
            "seq {seq}"
        );
    }
    assert!(with_bindings > 0, "some states have active bindings");
}

#[test]
fn the_fixtures_give_the_records_these_tests_need() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let names: BTreeSet<&str> = entries
        .iter()
        .flat_map(|s| s.entry.transitions.iter().map(transition_name))
        .collect();
    for needed in ["bound", "released"] {
        assert!(
            names.contains(needed),
            "no {needed} transition in {names:?}"
        );
    }
    assert!(entries
        .iter()
        .any(|s| matches!(s.entry.change, Change::WatchGap(_))));
    assert!(entries
        .iter()
        .any(|s| matches!(s.entry.change, Change::CheckDenied(_))));
}

#[test]
fn every_cloud_event_validates_against_the_cloudevents_schema() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let (schemas, index) = compiled_schema();
    for event in events_of(&entries) {
        if let Err(error) = schemas.validate(&event, index) {
            panic!("event {} does not validate: {error:#}", event["id"]);
        }
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], SOURCE);
        assert_eq!(event["datacontenttype"], "application/json");
        assert!(event.get("dataschema").is_none());
        // Extension names are lowercase alphanumerics (CloudEvents 1.0 §3.1.1).
        for key in event.as_object().unwrap().keys() {
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "attribute {key} is not a valid CloudEvents attribute name"
            );
        }
    }
}

#[test]
fn the_schema_check_is_live() {
    // If format assertions or the required list were off, the positive test would prove
    // nothing: the same validator must refuse broken events.
    let (_dir, _ledger, entries) = ledger_with_entries();
    let (schemas, index) = compiled_schema();
    let good = events_of(&entries[..1]).remove(0);
    let mut no_specversion = good.clone();
    no_specversion
        .as_object_mut()
        .unwrap()
        .remove("specversion");
    let mut bad_time = good.clone();
    bad_time["time"] = "yesterday at noon".into();
    let mut bad_source = good.clone();
    bad_source["source"] = "not a uri".into();
    for bad in [no_specversion, bad_time, bad_source] {
        assert!(schemas.validate(&bad, index).is_err(), "accepted {bad}");
    }
    assert!(CloudEventsExport::new(Vec::new(), "not a uri").is_err());
    assert!(CloudEventsExport::new(Vec::new(), "").is_err());
}

#[test]
fn cloud_event_sequences_sort_in_seq_order() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let events = events_of(&entries);
    let sequences: Vec<String> = events
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = sequences.clone();
    sorted.sort();
    assert_eq!(sorted, sequences);
    for (event, stored) in events.iter().zip(&entries) {
        let sequence = event["sequence"].as_str().unwrap();
        assert_eq!(sequence.len(), 20);
        assert_eq!(sequence.parse::<u64>().unwrap(), stored.entry.seq);
        assert_eq!(event["id"], stored.entry.seq.to_string());
    }
    // Plain string order across a change of digit count, where unpadded seqs would not sort.
    let padded: Vec<String> = [9u64, 10, 99, 100, u64::MAX]
        .iter()
        .map(|s| format!("{s:020}"))
        .collect();
    let mut resorted = padded.clone();
    resorted.sort();
    assert_eq!(resorted, padded);
    assert_eq!(padded[4].len(), 20);
}

#[test]
fn cloud_event_data_rehashes_to_the_chain() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let mut previous = Hash::ZERO;
    for (event, stored) in events_of(&entries).iter().zip(&entries) {
        let data = &event["data"];
        let seq = data["seq"].as_u64().unwrap();
        assert_eq!(seq, stored.entry.seq);
        assert_eq!(data["leaf_index"].as_u64().unwrap(), seq - 1);
        let hash = Hash::from_hex(data["hash"].as_str().unwrap()).unwrap();
        let prev_hash = Hash::from_hex(data["prev_hash"].as_str().unwrap()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data["bytes"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, stored.bytes);
        assert_eq!(
            prev_hash, previous,
            "seq {seq} does not link to the one before"
        );
        assert_eq!(chain_hash(&prev_hash, seq, &bytes), hash, "seq {seq}");
        assert_eq!(hash, stored.hash);
        // The decoded entry in data is the stored one, not a re-derivation.
        let entry: Entry = serde_json::from_value(data["entry"].clone()).unwrap();
        assert_eq!(entry, Entry::decode(&bytes).unwrap());
        previous = hash;
    }
}

#[test]
fn cloud_event_types_follow_transitions_then_changes() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let known: BTreeSet<&str> = cloud_event_types().into_iter().collect();
    let events = events_of(&entries);
    for (event, stored) in events.iter().zip(&entries) {
        let event_type = event["type"].as_str().unwrap();
        assert!(known.contains(event_type), "{event_type} is not listed");
        assert_eq!(event_type, cloud_event_type(&stored.entry));
    }

    let bound_only = entries
        .iter()
        .position(|s| {
            !s.entry.transitions.is_empty()
                && s.entry
                    .transitions
                    .iter()
                    .all(|t| matches!(t, Transition::Bound { .. }))
        })
        .expect("an entry whose only transitions are bindings");
    assert_eq!(events[bound_only]["type"], "dev.claimledger.claim.bound");

    let released = entries
        .iter()
        .position(|s| has(&s.entry, "released") && s.entry.transitions.len() == 1)
        .expect("an entry that only released a binding");
    assert_eq!(events[released]["type"], "dev.claimledger.claim.released");

    let created_pod = entries
        .iter()
        .position(|s| {
            s.entry.transitions.is_empty()
                && s.entry.object_change().is_some_and(|c| {
                    c.kind == ObjectKind::Pod && c.change == schemas::ChangeKind::Created
                })
        })
        .expect("a pod created without a transition");
    assert_eq!(events[created_pod]["type"], "dev.claimledger.pod.created");
    let object = entries[created_pod].entry.object_change().unwrap();
    assert_eq!(events[created_pod]["subject"], object.uid.as_str());

    let gap = entries
        .iter()
        .position(|s| matches!(s.entry.change, Change::WatchGap(_)))
        .unwrap();
    assert_eq!(events[gap]["type"], "dev.claimledger.watch.gap");
    assert_eq!(events[gap]["subject"], "pods/v1");

    let denied = entries
        .iter()
        .position(|s| matches!(s.entry.change, Change::CheckDenied(_)))
        .unwrap();
    assert_eq!(events[denied]["type"], "dev.claimledger.check.denied");
    assert_eq!(
        events[denied]["subject"],
        "deadbeef-0000-4000-8000-000000000001"
    );
    assert_eq!(events[denied]["time"], "2026-11-28T12:00:59.000000123Z");
}

#[test]
fn the_most_significant_transition_names_the_event() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let mut entry = entries
        .iter()
        .find(|s| s.entry.object_change().is_some())
        .unwrap()
        .entry
        .clone();
    let released = Transition::Released {
        pod_uid: "p".into(),
        sandbox_uid: "s".into(),
        claim_uid: Some("c1".into()),
        reason: Reason::BindingReleased,
    };
    let violation = Transition::SingleUseViolation {
        kind: ObjectKind::Sandbox,
        uid: "s".into(),
        first_claim_uid: "c1".into(),
        new_claim_uid: "c2".into(),
    };
    let bound = Transition::Bound {
        binding: BindingKind::Claim,
        pod_uid: "p2".into(),
        sandbox_uid: "s2".into(),
        claim_uid: Some("c2".into()),
    };
    // The ledger lists a reuse after the release it caused: the reuse still names the event.
    entry.transitions = vec![released.clone(), violation];
    assert_eq!(
        cloud_event_type(&entry),
        "dev.claimledger.claim.single_use_violation"
    );
    entry.transitions = vec![bound, released];
    assert_eq!(cloud_event_type(&entry), "dev.claimledger.claim.released");
    entry.transitions = vec![Transition::WorkspaceOrphaned {
        pvc_uid: "v".into(),
        sandbox_uid: "s".into(),
    }];
    assert_eq!(
        cloud_event_type(&entry),
        "dev.claimledger.workspace.orphaned"
    );
}

#[test]
fn csv_parses_back_to_one_row_per_entry() {
    let (_dir, _ledger, entries) = ledger_with_entries();
    let mut export = CsvExport::new(Vec::new()).unwrap();
    for stored in &entries {
        export.write(stored).unwrap();
    }
    assert_eq!(export.rows(), entries.len() as u64);
    let bytes = export.finish().unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // The csv crate doubles quotes inside a quoted field.
    assert!(text.contains("\"evil,\"\"pod\"\"\""), "{text}");

    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, CSV_COLUMNS);
    let rows: Vec<CsvRow> = reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(rows.len(), entries.len());
    let engine = base64::engine::general_purpose::STANDARD;
    for (row, stored) in rows.iter().zip(&entries) {
        let entry = &stored.entry;
        assert_eq!(row.seq, entry.seq);
        assert_eq!(row.leaf_index, entry.seq - 1);
        let names: Vec<&str> = entry.transitions.iter().map(transition_name).collect();
        assert_eq!(row.transitions, names.join(";"));
        assert_eq!(row.hash, stored.hash.to_hex());
        assert_eq!(row.prev_hash, entry.prev_hash.to_hex());
        let bytes = engine.decode(&row.bytes_base64).unwrap();
        assert_eq!(chain_hash(&entry.prev_hash, entry.seq, &bytes), stored.hash);
        assert_eq!(
            DateTime::parse_from_rfc3339(&row.observed_at).unwrap(),
            entry.observed_at
        );
        match &entry.change {
            Change::Object(object) => {
                assert_eq!(row.record, "object");
                assert_eq!(row.kind, object.kind.as_str());
                assert_eq!(row.uid, object.uid);
                assert_eq!(row.name, object.name);
                assert_eq!(row.resource_version, object.resource_version);
                assert!(["created", "updated", "deleted", "missing_on_resync"]
                    .contains(&row.change.as_str()));
            }
            Change::WatchGap(_) => {
                assert_eq!(row.record, "watch_gap");
                assert_eq!(row.change, AWKWARD_GAP_REASON);
                assert_eq!(row.resource_version, "90210");
                assert!(row.detail.contains("pods/v1"), "{}", row.detail);
                assert!(row.detail.contains("90210"), "{}", row.detail);
            }
            Change::CheckDenied(_) => {
                assert_eq!(row.record, "check_denied");
                assert_eq!(row.kind, "Pod");
                assert_eq!(row.name, AWKWARD_POD_NAME);
                assert_eq!(row.change, "BINDING_RELEASED");
                assert!(row.detail.starts_with("3 checks denied BINDING_RELEASED"));
            }
            Change::WatchScope(_) => {
                assert_eq!(row.record, "watch_scope");
                assert_eq!(row.change, "scope");
                assert_eq!(row.detail, "watching tenant-a (before: all namespaces)");
            }
            Change::CheckDeniedOverflow(overflow) => {
                assert_eq!(row.record, "check_denied_overflow");
                assert_eq!(row.uid, overflow.first_pod_uid);
                assert_eq!(row.change, "POD_UID_MISMATCH");
                assert!(row
                    .detail
                    .starts_with("4096 checks denied POD_UID_MISMATCH"));
                assert!(
                    row.detail.contains(&overflow.last_pod_uid),
                    "{}",
                    row.detail
                );
            }
        }
    }
    assert!(rows.iter().any(|r| r.transitions.contains("bound")));
}

#[test]
fn an_empty_range_still_has_the_csv_header() {
    let (_dir, ledger, entries) = ledger_with_entries();
    let mut out = Vec::new();
    let head = entries.len() as u64;
    assert_eq!(
        export_csv(&ledger, head + 1, head + 5, &mut out).unwrap(),
        0
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        CSV_COLUMNS.join(",") + "\n"
    );

    let mut out = Vec::new();
    assert_eq!(export_csv(&ledger, 2, 4, &mut out).unwrap(), 3);
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let seqs: Vec<u64> = reader
        .deserialize::<CsvRow>()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
}

#[test]
fn export_cloudevents_streams_the_range() {
    let (_dir, ledger, entries) = ledger_with_entries();
    let mut out = Vec::new();
    let head = entries.len() as u64;
    assert_eq!(
        export_cloudevents(&ledger, head - 1, head, "/clusters/prod", &mut out).unwrap(),
        2
    );
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let expected =
        serde_json::to_value(cloud_event(&entries[entries.len() - 1], "/clusters/prod")).unwrap();
    assert_eq!(lines[1], expected);
}
