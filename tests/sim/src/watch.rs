//! Watch streams: newline-delimited JSON watch events read from the store's history.
//!
//! A stream first sends its synthetic `ADDED` events (when it starts from `resourceVersion`
//! unset or `0`, or with `sendInitialEvents=true`), then follows the history from its cursor.
//! It ends when the request's `timeoutSeconds` elapse, when [`crate::Simulator::drop_watches`]
//! or [`crate::Simulator::restart`] is called, or when the server shuts down; it sends a 410
//! `ERROR` event and ends when its cursor falls out of the compaction window.

use crate::representation::{Rendered, Repr};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, HistEvent, WatchStart};
use crate::{Resource, SimError, Simulator};
use futures::Stream;
use serde::Serialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;

/// How often a watch with `allowWatchBookmarks=true` sends a BOOKMARK.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// A parsed watch request.
pub(crate) struct WatchRequest {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub version: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub repr: Repr,
}

/// One watch event; fields in the order a `json!` map would write them.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    object: &'a T,
    #[serde(rename = "type")]
    event_type: &'a str,
}

fn line(event_type: &str, object: &impl Serialize) -> String {
    let mut s = serde_json::to_string(&Line { object, event_type }).unwrap_or_default();
    s.push('\n');
    s
}

fn expired_line(message: &str) -> String {
    line(
        "ERROR",
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Expired",
            "code": 410,
        }),
    )
}

impl WatchRequest {
    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| crate::util::namespace_of(object) == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    fn render<'a>(&'a self, object: &'a Value) -> Rendered<'a> {
        Rendered {
            repr: self.repr,
            object,
            resource: self.resource,
            version: &self.version,
        }
    }

    fn event_line(&self, event: &HistEvent) -> Option<String> {
        if event.resource != self.resource {
            return None;
        }
        let now = self.matches(&event.object);
        let event_type = match event.event_type {
            EventType::Modified => {
                let before = event.old.as_deref().map_or(now, |o| self.matches(o));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            other if now => other,
            _ => return None,
        };
        Some(line(event_type.as_str(), &self.render(&event.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> String {
        let (kind, api_version) = match self.repr {
            Repr::Partial => (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            ),
            _ => (
                self.resource.kind().to_string(),
                self.resource.api_version(&self.version),
            ),
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
        )
    }
}

enum Wake {
    Changed,
    Closed,
    Tick,
    Timeout,
}

/// Starts a watch; the error case (a malformed resourceVersion) is answered as HTTP.
pub(crate) fn watch_stream(
    sim: Simulator,
    request: WatchRequest,
) -> Result<impl Stream<Item = Result<String, Infallible>> + Send, SimError> {
    let mut rx = sim.subscribe();
    let start = sim.with_state(|s| {
        s.watch_start(
            request.resource,
            request.namespace.as_deref(),
            &request.labels,
            &request.fields,
            request.resource_version.as_deref(),
            request.send_initial_events,
        )
    })?;
    Ok(async_stream::stream! {
        let (initial, mut cursor, mut last_rv, drop_gen) = match start {
            WatchStart::Expired(message) => {
                yield Ok(expired_line(&message));
                return;
            }
            WatchStart::Start { initial, cursor, rv, drop_gen } => (initial, cursor, rv, drop_gen),
        };
        for object in &initial {
            yield Ok(line("ADDED", &request.render(object)));
        }
        if request.send_initial_events {
            yield Ok(request.bookmark(last_rv, true));
        }
        let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            let (events, rv, gen, shutdown) = sim.read_state(|s| {
                (s.events_since(cursor), s.rv, s.drop_gen, s.shutdown)
            });
            if gen != drop_gen || shutdown {
                return;
            }
            let Some(events) = events else {
                yield Ok(expired_line(&format!(
                    "too old resource version: the watch fell behind the compaction window (at {last_rv})"
                )));
                return;
            };
            for event in &events {
                cursor = event.seq + 1;
                if let Some(l) = request.event_line(event) {
                    yield Ok(l);
                }
            }
            last_rv = rv;
            let wake = tokio::select! {
                changed = rx.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Closed },
                _ = tick.tick(), if request.bookmarks => Wake::Tick,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timeout,
            };
            match wake {
                Wake::Changed => {}
                Wake::Closed => return,
                Wake::Tick => yield Ok(request.bookmark(last_rv, false)),
                Wake::Timeout => {
                    if request.bookmarks {
                        yield Ok(request.bookmark(last_rv, false));
                    }
                    return;
                }
            }
        }
    })
}
