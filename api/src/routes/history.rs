//! History and state: one object's entries (`/v1/history`) or its story for people
//! (`/v1/timeline`), every entry in order (`/v1/entries`), and the projected state now or
//! as of a seq or a time (`/v1/state`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use formats::timeline::{gap_window, watch_gaps, Timeline, TimelineParts};
use formats::{Selection, SelectionFields, StateJson};
use ledger::StoredEntry;
use serde::Deserialize;

use super::{blocking, json_bytes, limit_of, page_response, parse_time, streamed_body};
use crate::extract::QueryParams;
use crate::{ApiError, Service};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    pod_uid: Option<String>,
    claim_uid: Option<String>,
    sandbox_uid: Option<String>,
    pvc_uid: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

impl HistoryQuery {
    /// The object the query names (`formats::Selection` holds the rules).
    fn selection(self) -> Result<Selection, ApiError> {
        Ok(Selection::from_fields(SelectionFields {
            pod_uid: self.pod_uid,
            claim_uid: self.claim_uid,
            sandbox_uid: self.sandbox_uid,
            pvc_uid: self.pvc_uid,
            kind: self.kind,
            namespace: self.namespace,
            name: self.name,
        })?)
    }
}

/// `GET /v1/history`: every entry that recorded one object (and, for a pod uid, the
/// denied checks that presented it), in order, a page at a time.
pub(super) async fn history(
    State(service): State<Service>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    let selection = query.selection()?;
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let seqs = selection.seqs(ledger.projection())?;
        let start = seqs.partition_point(|seq| *seq <= after);
        let page = &seqs[start..seqs.len().min(start.saturating_add(limit))];
        let more = start + page.len() < seqs.len();
        let stored = ledger.entries_at(page)?;
        let head = ledger.head().seq;
        drop(ledger);
        page_response(&stored, more, head)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineQuery {
    uid: Option<String>,
    pod_uid: Option<String>,
    claim_uid: Option<String>,
    sandbox_uid: Option<String>,
    pvc_uid: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/timeline`: the history of one object (a uid of any kind with `uid`) read as
/// events for people, with the watch gaps of its lifetime; what the page at `/ui/` shows.
pub(super) async fn timeline(
    State(service): State<Service>,
    QueryParams(query): QueryParams<TimelineQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    let others = [
        &query.pod_uid,
        &query.claim_uid,
        &query.sandbox_uid,
        &query.pvc_uid,
        &query.kind,
        &query.namespace,
        &query.name,
    ];
    let selection = match query.uid {
        Some(_) if others.iter().any(|field| field.is_some()) => {
            return Err(ApiError::query(
                "name exactly one object: uid, pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
            ))
        }
        Some(uid) => Selection::any_uid("uid", uid)?,
        None => HistoryQuery {
            pod_uid: query.pod_uid,
            claim_uid: query.claim_uid,
            sandbox_uid: query.sandbox_uid,
            pvc_uid: query.pvc_uid,
            kind: query.kind,
            namespace: query.namespace,
            name: query.name,
            after_seq: None,
            limit: None,
        }
        .selection()?,
    };
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let projection = ledger.projection();
        let uids = selection.uids(projection)?;
        let seqs = selection.seqs(projection)?;
        let start = seqs.partition_point(|seq| *seq <= after);
        let page = &seqs[start..seqs.len().min(start.saturating_add(limit))];
        let next_after_seq = (start + page.len() < seqs.len())
            .then(|| page.last().copied())
            .flatten();
        let read = |seqs: &mut dyn Iterator<Item = u64>| -> Result<Vec<StoredEntry>, ApiError> {
            Ok(ledger.entries_at(&seqs.collect::<Vec<_>>())?)
        };
        let entries = read(&mut page.iter().copied())?;
        // Each subject's last entry before the page: what its first event changed from.
        let baseline = read(&mut uids.iter().filter_map(|uid| {
            projection
                .history_of(uid)
                .take_while(|seq| *seq <= after)
                .last()
        }))?;
        let head_seq = ledger.head().seq;
        let gap_scan = gap_window(
            projection,
            &uids,
            &entries,
            next_after_seq.is_none(),
            head_seq,
        );
        let gaps = match gap_scan {
            Some(scan) => watch_gaps(ledger.entries(scan.from_seq, scan.to_seq))?,
            None => Vec::new(),
        };
        let timeline = Timeline::build(TimelineParts {
            projection,
            uids: &uids,
            baseline: &baseline,
            entries: &entries,
            gaps: &gaps,
            head_seq,
            next_after_seq,
            gap_scan,
        });
        Ok(json_bytes(StatusCode::OK, serde_json::to_vec(&timeline)?))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EntriesQuery {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/entries`: raw entries with hashes after a seq, a page at a time.
pub(super) async fn entries(
    State(service): State<Service>,
    QueryParams(query): QueryParams<EntriesQuery>,
) -> Result<Response, ApiError> {
    let after = query.after_seq.unwrap_or(0);
    let limit = limit_of(query.limit)?;
    blocking(&service, move |service| {
        let ledger = service.read()?;
        let head = ledger.head().seq;
        let mut stored = ledger
            .entries(after.saturating_add(1), head)
            .take(limit + 1)
            .collect::<Result<Vec<_>, _>>()?;
        drop(ledger);
        let more = stored.len() > limit;
        stored.truncate(limit);
        page_response(&stored, more, head)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateQuery {
    as_of_seq: Option<u64>,
    as_of: Option<String>,
}

/// `GET /v1/state`: live objects and active bindings, now or as of a seq or a time.
pub(super) async fn state(
    State(service): State<Service>,
    QueryParams(query): QueryParams<StateQuery>,
) -> Result<Response, ApiError> {
    let as_of = match (query.as_of_seq, query.as_of) {
        (Some(_), Some(_)) => return Err(ApiError::query("give as_of_seq or as_of, not both")),
        (seq, time) => (seq, time.map(|t| parse_time("as_of", &t)).transpose()?),
    };
    let (ledger, seq) = blocking(&service, move |service| {
        let ledger = service.read()?;
        let seq = match as_of {
            (Some(seq), _) => Some(seq),
            (None, Some(time)) => Some(ledger.seq_at_time(time)?),
            (None, None) => None,
        };
        Ok((ledger, seq))
    })
    .await?;
    // The state is written as the client reads it (`StateJson`: never whole in memory);
    // a replayed one holds a replay permit until it is written.
    let (projection, permit) = match seq {
        Some(seq) if seq != ledger.head().seq => {
            let permit = Arc::clone(&service.inner.replays)
                .acquire_owned()
                .await
                .map_err(|_| ApiError::Unavailable("the service is stopping".into()))?;
            // The permit goes with the replay: a request that times out stops waiting for
            // it, but the replay runs on, and must keep counting against the limit.
            let (projection, permit) =
                blocking(&service, move |_| Ok((ledger.state_at_seq(seq)?, permit))).await?;
            (projection, Some(permit))
        }
        _ => (ledger.projection().clone(), None),
    };
    let body = streamed_body(
        move |out| serde_json::to_writer(out, &StateJson(&projection)).map_err(Into::into),
        permit,
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
