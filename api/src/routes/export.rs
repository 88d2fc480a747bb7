//! Export: `GET /v1/export` streams a range of entries as JSON lines, CSV rows or
//! CloudEvents, a page per read lock, or a tar export bundle for offline verification.
//! The format and the range are resolved by `formats`, as for the CLI's `export`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use formats::bundle::{BundleRequest, EntryPages};
use formats::{ExportFormat, ExportRange};
use ledger::StoredEntry;
use serde::Deserialize;

use super::{blocking, parse_time, streamed_body};
use crate::extract::QueryParams;
use crate::{ApiError, Service};

/// Entries read per lock acquisition when exporting.
const EXPORT_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    format: Option<String>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    bundle: Option<bool>,
    previous_size: Option<u64>,
    previous_root: Option<String>,
}

/// `GET /v1/export`: entries as JSON lines, CSV rows or CloudEvents, streamed a page per
/// lock acquisition; with `bundle=true`, a tar export bundle for offline verification.
pub(super) async fn export(
    State(service): State<Service>,
    QueryParams(query): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let format: ExportFormat = query.format.as_deref().unwrap_or("jsonl").parse()?;
    let since = query
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?;
    let range = ExportRange {
        from_seq: query.from_seq,
        to_seq: query.to_seq,
        since,
        until,
    };
    range.check()?;
    let bundle = query.bundle.unwrap_or(false);
    if !bundle && (query.previous_size.is_some() || query.previous_root.is_some()) {
        return Err(ApiError::query(
            "previous_size and previous_root go with bundle=true",
        ));
    }
    if bundle && query.format.is_some() {
        return Err(ApiError::query(
            "a bundle holds jsonl entries: leave format out with bundle=true",
        ));
    }
    let (from, to) = blocking(&service, move |service| {
        Ok(range.resolve(&*service.read()?)?)
    })
    .await?;
    if bundle {
        let previous = previous_checkpoint(query.previous_size, query.previous_root.as_deref())?;
        return export_bundle(service, from, to, previous).await;
    }
    let to = match to {
        Some(to) => to,
        None => service.read()?.head().seq,
    };
    let source = service.origin().to_string();
    if format == ExportFormat::CloudEvents {
        formats::cloudevents::check_source(&source)?;
    }

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let producer = service.clone();
    tokio::spawn(async move {
        // The CSV header row; the other formats have none.
        match format.header() {
            Ok(header) if header.is_empty() => {}
            header => {
                let header = header
                    .map(Bytes::from)
                    .map_err(|e| std::io::Error::other(e.to_string()));
                if sender.send(header).await.is_err() {
                    return;
                }
            }
        }
        let mut next = from;
        while next <= to {
            let source = source.clone();
            let page = blocking(&producer, move |service| {
                let entries = service
                    .read()?
                    .entries(next, to)
                    .take(EXPORT_PAGE)
                    .collect::<Result<Vec<_>, _>>()?;
                let last = entries.last().map(|stored| stored.entry.seq);
                Ok((format.page(&entries, &source)?, last))
            })
            .await;
            match page {
                Ok((buffer, Some(last))) => {
                    if sender.send(Ok(Bytes::from(buffer))).await.is_err() {
                        return; // the client went away
                    }
                    next = last + 1;
                }
                Ok((_, None)) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "export aborted");
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::HeaderName::from_static("x-claim-ledger-from-seq"),
                from.to_string(),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-to-seq"),
                to.to_string(),
            ),
        ],
        Body::from_stream(channel_stream(receiver)),
    )
        .into_response())
}

fn channel_stream(
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// The auditor's previous checkpoint, from `previous_size` and `previous_root` (64 hex).
fn previous_checkpoint(
    size: Option<u64>,
    root: Option<&str>,
) -> Result<Option<schemas::checkpoint::Checkpoint>, ApiError> {
    match (size, root) {
        (None, None) => Ok(None),
        (Some(size), Some(root)) => {
            // Hex, or the base64 of the checkpoint's own third line.
            let root = schemas::bundle::hash32_from_hex(root)
                .or_else(|| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(root)
                        .ok()
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                })
                .ok_or_else(|| {
                    ApiError::query(
                        "previous_root must be 64 hex digits or the base64 of 32 bytes (the checkpoint's root line)",
                    )
                })?;
            // The origin is not sent: the bundle's own checkpoint carries it.
            Ok(Some(schemas::checkpoint::Checkpoint {
                origin: String::new(),
                size,
                root,
                extensions: Vec::new(),
            }))
        }
        _ => Err(ApiError::query(
            "previous_size and previous_root go together",
        )),
    }
}

/// A tar export bundle: planned (checkpoint, proofs) before the response head, so a range
/// it cannot cover is a client error; then written as the client reads it, one bundle at
/// a time. Its archive spools the entries to a temporary file first (tar headers carry
/// sizes), under one read of the ledger per page, which the request timeout no longer
/// bounds: a whole large ledger's bundle takes longer than a request may wait for its head.
async fn export_bundle(
    service: Service,
    from: u64,
    to: Option<u64>,
    previous: Option<schemas::checkpoint::Checkpoint>,
) -> Result<Response, ApiError> {
    let plan = blocking(&service, move |service| {
        let ledger = service.read()?;
        let request = BundleRequest {
            from_seq: Some(from),
            to_seq: to,
            previous,
        };
        Ok(formats::bundle::plan(
            &ledger,
            &request,
            (service.inner.clock)(),
        )?)
    })
    .await?;
    // Each bundle being written holds a spool of about 1.7 kB an entry on the temporary
    // disk, and both cores' time: one at a time, the others wait (within the timeout).
    let permit = std::sync::Arc::clone(&service.inner.bundles)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("the service is stopping".into()))?;
    let manifest = plan.manifest.clone();
    let body = streamed_body(
        move |out| {
            // The spool comes before the first byte: a client gone meanwhile stops it.
            let client_gone = out.client_gone();
            let pages = |from: u64, to: u64| -> Result<Vec<StoredEntry>, ApiError> {
                if client_gone() {
                    return Err(ApiError::Io(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the client went away",
                    )));
                }
                let ledger = service.read()?;
                Ok((&*ledger).page(from, to)?)
            };
            formats::bundle::write_tar(pages, &plan, out).map_err(|e| match e {
                // Its kind says whether the client went away or stalled.
                ApiError::Io(error) => error,
                other => std::io::Error::other(other.to_string()),
            })
        },
        permit,
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"claim-ledger-{}-{}.tar\"",
                    manifest.from_seq, manifest.to_seq
                ),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-from-seq"),
                manifest.from_seq.to_string(),
            ),
            (
                header::HeaderName::from_static("x-claim-ledger-to-seq"),
                manifest.to_seq.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}
