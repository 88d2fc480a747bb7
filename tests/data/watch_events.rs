//! The fixtures' watch events as the watcher would record them, for the test crates that
//! need them without running the watcher (included with `#[path]`, so it is written once).

use serde_json::Value;

/// The normalized changes of watch-event lines (`{"type", "object"}`); other lines (a
/// fixture's comments and expectations) and objects the normalizer skips are left out.
pub fn watch_event_changes(lines: &str) -> Vec<schemas::ObjectChange> {
    let mut changes = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap();
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            continue;
        };
        let event = schemas::WatchEventType::parse(kind).unwrap();
        if let Some(change) = schemas::normalize(event, &value["object"]).unwrap() {
            changes.push(change);
        }
    }
    changes
}
