//! The CloudEvents 1.0 export, for event buses: one structured-mode JSON event per line.
//!
//! Each event's `data` is the entry's jsonl line ([`EntryLine`]): its hashes and its exact
//! stored bytes in base64, so an auditor can re-hash it without trusting the decoding.
//!
//! # CloudEvents
//!
//! [`cloud_event`] maps one entry to one [`CloudEvent`]; [`CloudEventsExport`] writes them
//! one per line. The event `type` is one of [`cloud_event_types`]: the most significant
//! transition of the entry if it caused any (see [`transition_significance`]), else the
//! record itself.

use std::io::Write;

use ledger::{LedgerView, StoredEntry};
use schemas::{Change, ChangeKind, Entry, ObjectKind, Transition};
use serde::Serialize;

use crate::names::rfc3339;
use crate::views::EntryLine;
use crate::FormatError;

/// The CloudEvents version every event declares.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// The `datacontenttype` of every event: `data` is a JSON object.
pub const CLOUDEVENTS_DATA_CONTENT_TYPE: &str = "application/json";

/// The prefix of every CloudEvents `type` this module produces (reverse-DNS, as the
/// CloudEvents spec recommends, so consumers can route on it).
pub const CLOUDEVENTS_TYPE_PREFIX: &str = "dev.claimledger.";

/// How much a transition matters to whoever consumes events, highest first: an attack
/// signal (a reused sandbox or workspace, a mutated identity) before a binding that ended
/// (credentials to revoke), before a leftover workspace, before a new binding.
///
/// The ledger lists an entry's transitions in the order it derived them, so a reuse is
/// often listed after the release it caused; the event type follows this rank instead, and
/// the first listed wins a tie.
pub fn transition_significance(transition: &Transition) -> u8 {
    match transition {
        Transition::SingleUseViolation { .. } => 6,
        Transition::WorkspaceReused { .. } => 5,
        Transition::IdentityMutated { .. } => 4,
        Transition::Released { .. } => 3,
        Transition::WorkspaceOrphaned { .. } => 2,
        Transition::Bound { .. } => 1,
    }
}

/// Every CloudEvents `type` [`cloud_event`] can produce, in a fixed order: one per
/// transition, then one per (object kind, change), then the watch gap and the denied check.
///
/// | type | when |
/// |---|---|
/// | `dev.claimledger.claim.bound` | a pod became bound to a sandbox |
/// | `dev.claimledger.claim.released` | a pod stopped being bound |
/// | `dev.claimledger.claim.single_use_violation` | a sandbox or pod bound under one claim is claimed by another |
/// | `dev.claimledger.workspace.reused` | a workspace PVC or PV bound under one claim is offered to another |
/// | `dev.claimledger.workspace.orphaned` | a workspace PVC outlives its sandbox |
/// | `dev.claimledger.identity.mutated` | a bound pod's sandbox-id annotation changed |
/// | `dev.claimledger.<kind>.<change>` | an object change that caused no transition; `<kind>` is `sandbox`, `sandboxclaim`, `pod` or `persistentvolumeclaim`, `<change>` is `created`, `updated`, `deleted` or `missing_on_resync` |
/// | `dev.claimledger.watch.gap` | a watch relisted: the ledger was blind for a while |
/// | `dev.claimledger.check.denied` | identity checks denied for a pod uid within a minute |
pub fn cloud_event_types() -> Vec<&'static str> {
    let mut types = vec![
        "dev.claimledger.claim.bound",
        "dev.claimledger.claim.released",
        "dev.claimledger.claim.single_use_violation",
        "dev.claimledger.workspace.reused",
        "dev.claimledger.workspace.orphaned",
        "dev.claimledger.identity.mutated",
    ];
    for kind in ObjectKind::ALL {
        for change in [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
            ChangeKind::MissingOnResync,
        ] {
            types.push(object_event_type(kind, change));
        }
    }
    types.push("dev.claimledger.watch.gap");
    types.push("dev.claimledger.check.denied");
    types.push("dev.claimledger.check.denied_overflow");
    types.push("dev.claimledger.watch.scope");
    types
}

fn transition_event_type(transition: &Transition) -> &'static str {
    match transition {
        Transition::Bound { .. } => "dev.claimledger.claim.bound",
        Transition::Released { .. } => "dev.claimledger.claim.released",
        Transition::SingleUseViolation { .. } => "dev.claimledger.claim.single_use_violation",
        Transition::WorkspaceReused { .. } => "dev.claimledger.workspace.reused",
        Transition::WorkspaceOrphaned { .. } => "dev.claimledger.workspace.orphaned",
        Transition::IdentityMutated { .. } => "dev.claimledger.identity.mutated",
    }
}

fn object_event_type(kind: ObjectKind, change: ChangeKind) -> &'static str {
    // Spelled out rather than formatted so every type is a `&'static str` that a grep of
    // the source (and the README's list) can find.
    use ChangeKind::*;
    use ObjectKind::*;
    match (kind, change) {
        (Sandbox, Created) => "dev.claimledger.sandbox.created",
        (Sandbox, Updated) => "dev.claimledger.sandbox.updated",
        (Sandbox, Deleted) => "dev.claimledger.sandbox.deleted",
        (Sandbox, MissingOnResync) => "dev.claimledger.sandbox.missing_on_resync",
        (SandboxClaim, Created) => "dev.claimledger.sandboxclaim.created",
        (SandboxClaim, Updated) => "dev.claimledger.sandboxclaim.updated",
        (SandboxClaim, Deleted) => "dev.claimledger.sandboxclaim.deleted",
        (SandboxClaim, MissingOnResync) => "dev.claimledger.sandboxclaim.missing_on_resync",
        (Pod, Created) => "dev.claimledger.pod.created",
        (Pod, Updated) => "dev.claimledger.pod.updated",
        (Pod, Deleted) => "dev.claimledger.pod.deleted",
        (Pod, MissingOnResync) => "dev.claimledger.pod.missing_on_resync",
        (PersistentVolumeClaim, Created) => "dev.claimledger.persistentvolumeclaim.created",
        (PersistentVolumeClaim, Updated) => "dev.claimledger.persistentvolumeclaim.updated",
        (PersistentVolumeClaim, Deleted) => "dev.claimledger.persistentvolumeclaim.deleted",
        (PersistentVolumeClaim, MissingOnResync) => {
            "dev.claimledger.persistentvolumeclaim.missing_on_resync"
        }
    }
}

/// The CloudEvents `type` of an entry: its most significant transition
/// ([`transition_significance`], the first listed on a tie), else its record.
pub fn cloud_event_type(entry: &Entry) -> &'static str {
    let mut top: Option<&Transition> = None;
    for transition in &entry.transitions {
        if top.is_none_or(|t| transition_significance(transition) > transition_significance(t)) {
            top = Some(transition);
        }
    }
    if let Some(transition) = top {
        return transition_event_type(transition);
    }
    match &entry.change {
        Change::Object(object) => object_event_type(object.kind, object.change),
        Change::WatchGap(_) => "dev.claimledger.watch.gap",
        Change::CheckDenied(_) => "dev.claimledger.check.denied",
        Change::CheckDeniedOverflow(_) => "dev.claimledger.check.denied_overflow",
        Change::WatchScope(_) => "dev.claimledger.watch.scope",
    }
}

/// One entry as a CloudEvents 1.0 event in the structured JSON format.
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a> {
    /// Always [`CLOUDEVENTS_SPEC_VERSION`].
    pub specversion: &'static str,
    /// The seq, in decimal: unique within one ledger (`source`).
    pub id: String,
    /// The ledger's origin, a URI-reference given by the caller (see [`check_source`]).
    pub source: &'a str,
    /// One of [`cloud_event_types`].
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// The object uid; for a watch gap the resource (`pods/v1`); for a denied check the
    /// pod uid presented.
    pub subject: &'a str,
    /// When the ledger observed the entry, RFC 3339 UTC.
    pub time: String,
    /// Always [`CLOUDEVENTS_DATA_CONTENT_TYPE`].
    pub datacontenttype: &'static str,
    /// Extension attribute: the seq zero-padded to 20 digits (every `u64` fits), so events
    /// sort in ledger order as plain strings.
    pub sequence: String,
    /// The entry, its hashes and its stored bytes.
    pub data: EntryLine<'a>,
}

/// The CloudEvent of a stored entry. `source` is written as given: check it once with
/// [`check_source`] (as [`CloudEventsExport::new`] does).
pub fn cloud_event<'a>(stored: &'a StoredEntry, source: &'a str) -> CloudEvent<'a> {
    let entry = &stored.entry;
    let subject = match &entry.change {
        Change::Object(object) => object.uid.as_str(),
        Change::WatchGap(gap) => gap.resource.as_str(),
        Change::CheckDenied(denied) => denied.pod_uid.as_str(),
        Change::CheckDeniedOverflow(overflow) => overflow.first_pod_uid.as_str(),
        Change::WatchScope(_) => "watch_scope",
    };
    CloudEvent {
        specversion: CLOUDEVENTS_SPEC_VERSION,
        id: entry.seq.to_string(),
        source,
        event_type: cloud_event_type(entry),
        subject,
        time: rfc3339(&entry.observed_at),
        datacontenttype: CLOUDEVENTS_DATA_CONTENT_TYPE,
        sequence: format!("{:020}", entry.seq),
        data: EntryLine::new(stored),
    }
}

/// Checks that `source` is a non-empty RFC 3986 URI-reference, as CloudEvents requires of
/// the `source` attribute: an absolute URI (`https://ledger.example/prod`,
/// `urn:claim-ledger:prod`) or a relative reference (`/clusters/prod/claim-ledger`).
pub fn check_source(source: &str) -> Result<(), FormatError> {
    let fail = |why: &str| {
        Err(FormatError::InvalidSource(format!(
            "CloudEvents source {source:?} is not a URI-reference: {why}"
        )))
    };
    if source.is_empty() {
        return fail("it is empty");
    }
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return fail("a '%' not followed by two hex digits");
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b);
        if !allowed {
            return fail("a character that must be percent-encoded");
        }
        i += 1;
    }
    // A ':' before any '/', '?' or '#' makes the text before it a scheme (RFC 3986 §4.2),
    // which must start with a letter and hold only letters, digits, '+', '-' and '.'.
    let head_end = source.find(['/', '?', '#']).unwrap_or(source.len());
    if let Some(colon) = source[..head_end].find(':') {
        let scheme = &source[..colon];
        let valid = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid {
            return fail("the part before ':' is not a valid scheme");
        }
    }
    Ok(())
}

/// A streaming CloudEvents export: one structured-mode JSON event per line.
///
/// Each event is serialized straight into `out`; give it a buffered writer when it is a
/// file or a socket.
#[derive(Debug)]
pub struct CloudEventsExport<W: Write> {
    out: W,
    source: String,
    events: u64,
}

impl<W: Write> CloudEventsExport<W> {
    /// Starts an export whose events name `source` (refused unless [`check_source`]
    /// accepts it).
    pub fn new(out: W, source: &str) -> Result<CloudEventsExport<W>, FormatError> {
        check_source(source)?;
        Ok(CloudEventsExport {
            out,
            source: source.to_string(),
            events: 0,
        })
    }

    /// Writes one entry's event and its newline.
    pub fn write(&mut self, stored: &StoredEntry) -> Result<(), FormatError> {
        serde_json::to_writer(&mut self.out, &cloud_event(stored, &self.source))?;
        self.out.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// How many events were written.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Flushes and gives the underlying writer back.
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Streams entries `from..=to` as CloudEvents lines, one read at a time; returns the
/// number of events.
pub fn export_cloudevents(
    ledger: &LedgerView,
    from: u64,
    to: u64,
    source: &str,
    out: &mut impl Write,
) -> Result<u64, FormatError> {
    let mut export = CloudEventsExport::new(out, source)?;
    for stored in ledger.entries(from, to) {
        export.write(&stored?)?;
    }
    let events = export.events();
    export.finish()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_listed_once_and_prefixed() {
        let types = cloud_event_types();
        assert_eq!(types.len(), 6 + 4 * 4 + 4);
        let unique: std::collections::BTreeSet<_> = types.iter().collect();
        assert_eq!(unique.len(), types.len());
        for t in &types {
            assert!(t.starts_with(CLOUDEVENTS_TYPE_PREFIX), "{t}");
            let kind_part = t.trim_start_matches(CLOUDEVENTS_TYPE_PREFIX);
            assert!(
                kind_part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{t}"
            );
        }
        for kind in ObjectKind::ALL {
            let prefix = format!(
                "{CLOUDEVENTS_TYPE_PREFIX}{}.",
                kind.as_str().to_ascii_lowercase()
            );
            assert_eq!(types.iter().filter(|t| t.starts_with(&prefix)).count(), 4);
        }
    }

    #[test]
    fn sources_are_uri_references() {
        for good in [
            "https://ledger.example/clusters/prod",
            "urn:claim-ledger:prod",
            "/clusters/prod/claim-ledger",
            "claim-ledger",
            "mailto:ops@example.com",
            "http://[::1]:8080/ledger",
            "/a%20b",
        ] {
            assert!(check_source(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "has space",
            "1http://x",
            "a%2",
            "a%zz",
            "tab\t",
            "é",
            "\"q\"",
        ] {
            assert!(check_source(bad).is_err(), "{bad:?}");
        }
    }
}
