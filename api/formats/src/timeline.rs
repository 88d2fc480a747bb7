//! The timeline of one object, or of every uid a name had: each entry of its history read
//! as events for people (created, bound, identity assigned, released and why, denied
//! checks, watch gaps, deleted), each naming its entry (seq, hash) and the related objects.
//!
//! Built from stored entries and the projection only (never from a ledger handle), so the
//! HTTP API (`GET /v1/timeline`, the page at `/ui/`) and the CLI (`history --output
//! timeline`) read the same events in the same words.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use chrono::{DateTime, Utc};
use ledger::{Projection, StoredEntry};
use schemas::{
    BindingKind, Change, ChangeKind, Hash, KindFields, ObjectChange, ObjectKind, Reason,
};
use schemas::{OwnerRef, Text, Transition};
use serde::Serialize;

use crate::names::time_text;
use crate::views::{printable, TextTable};
use crate::FormatError;

/// At most this many entries are read looking for watch gaps in one timeline: gaps have
/// no index, and an object alive for millions of entries must not make one request read
/// them all. The answer says how far it looked ([`GapScan`]).
pub const GAP_SCAN_LIMIT: u64 = 20_000;

/// A related object an event names: where the page links to its own timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// How it relates to the event: `pod`, `sandbox`, `claim`, `pvc` or `controller`.
    pub role: &'static str,
    /// Its kind (`SandboxWarmPool` and other kinds the ledger does not record included).
    pub kind: String,
    /// Its uid.
    pub uid: String,
    /// Its namespace, when the ledger recorded the uid.
    pub namespace: Option<String>,
    /// Its name, when recorded (or, for a controller, as its reference names it).
    pub name: Option<String>,
    /// Whether the ledger recorded this uid (only those have a timeline).
    pub recorded: bool,
}

/// One binding a pod had, as the page lists it beside the events.
#[derive(Debug, Clone, Serialize)]
pub struct BindingSpan {
    /// Claim or direct.
    pub kind: BindingKind,
    /// The Sandbox.
    pub sandbox: Link,
    /// The claim (claim bindings).
    pub claim: Option<Link>,
    /// The pod's `openshell.io/sandbox-id` when the binding took it.
    pub sandbox_id: Option<String>,
    /// The entry that formed it.
    pub since_seq: u64,
    /// When.
    pub since: DateTime<Utc>,
    /// The entry that ended it, if it ended.
    pub ended_seq: Option<u64>,
    /// Whether the identity changed while bound.
    pub mutated: bool,
}

/// An object the timeline is about.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    /// Kind.
    pub kind: ObjectKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// The entry that first recorded it.
    pub first_seq: u64,
    /// The entry that last recorded it.
    pub last_seq: u64,
    /// Deleted or missing on resync.
    pub gone: bool,
    /// Carries a deletionTimestamp.
    pub terminating: bool,
    /// Its controller as last recorded.
    pub controller: Option<Link>,
    /// Every binding of a pod, oldest first (empty for other kinds).
    pub bindings: Vec<BindingSpan>,
    /// Every uid recorded under the same kind, namespace and name, oldest first (this one
    /// included): a replaced pod's successor, a recreated claim.
    pub same_name: Vec<String>,
}

/// One event of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The entry that recorded it.
    pub seq: u64,
    /// That entry's chain hash.
    pub hash: Hash,
    /// When the ledger observed it.
    pub at: DateTime<Utc>,
    /// The uid of the subject it concerns (for a watch gap: none).
    pub subject: Option<String>,
    /// What happened: `created`, `updated`, `controller_changed`, `terminating`,
    /// `identity_assigned`, `identity_changed`, `deleted`, `missing_on_resync`, `bound`,
    /// `released`, `identity_mutated`, `single_use_violation`, `workspace_reused`,
    /// `workspace_orphaned`, `check_denied`, `check_denied_overflow` or `watch_gap`.
    pub event: &'static str,
    /// A sentence for people.
    pub summary: String,
    /// The reason code, for releases, denied checks and violations.
    pub reason: Option<Reason>,
    /// How many checks a denied-check record aggregates.
    pub count: Option<u64>,
    /// The related objects, each with its own timeline.
    pub links: Vec<Link>,
}

/// How far the entries were searched for watch gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GapScan {
    /// The first seq searched.
    pub from_seq: u64,
    /// The last seq searched.
    pub to_seq: u64,
    /// Whether that covered the whole window the subjects were alive in.
    pub complete: bool,
}

/// The timeline of the selected objects.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The objects (several when a name had several uids).
    pub subjects: Vec<Subject>,
    /// The events, in seq order.
    pub events: Vec<Event>,
    /// The ledger's head when the timeline was read.
    pub head_seq: u64,
    /// Pass as `after_seq` for the rest; absent when this is all.
    pub next_after_seq: Option<u64>,
    /// Where watch gaps were searched, if anywhere.
    pub gap_scan: Option<GapScan>,
}

/// The window of seqs to search for watch gaps that happened while the subjects lived:
/// from the page's first entry to its last one, or to the head when this is the last page
/// and a subject is still alive; at most [`GAP_SCAN_LIMIT`] entries.
pub fn gap_window(
    projection: &Projection,
    uids: &[String],
    page: &[StoredEntry],
    last_page: bool,
    head_seq: u64,
) -> Option<GapScan> {
    let first = page.first()?.entry.seq;
    let last = page.last()?.entry.seq;
    let alive = uids
        .iter()
        .any(|uid| projection.object(uid).is_some_and(|r| !r.gone()));
    let end = if last_page && alive { head_seq } else { last };
    let capped = end.min(first.saturating_add(GAP_SCAN_LIMIT - 1));
    Some(GapScan {
        from_seq: first,
        to_seq: capped,
        complete: capped == end,
    })
}

/// The watch-gap entries among `entries`.
pub fn watch_gaps<E>(
    entries: impl Iterator<Item = Result<StoredEntry, E>>,
) -> Result<Vec<StoredEntry>, E> {
    let mut gaps = Vec::new();
    for stored in entries {
        let stored = stored?;
        if matches!(stored.entry.change, Change::WatchGap(_)) {
            gaps.push(stored);
        }
    }
    Ok(gaps)
}

/// What a timeline is built from.
pub struct TimelineParts<'a> {
    /// The projection at the head: names of related uids, subjects, bindings.
    pub projection: &'a Projection,
    /// The selected uids.
    pub uids: &'a [String],
    /// For a page after the first: the last entry recording each subject before it, so
    /// the first event of the page can say what changed.
    pub baseline: &'a [StoredEntry],
    /// The page of history, in seq order.
    pub entries: &'a [StoredEntry],
    /// Watch-gap entries in [`Timeline::gap_scan`]'s window.
    pub gaps: &'a [StoredEntry],
    /// The head.
    pub head_seq: u64,
    /// The rest of the history, if the page ends early.
    pub next_after_seq: Option<u64>,
    /// Where `gaps` were searched.
    pub gap_scan: Option<GapScan>,
}

impl Timeline {
    /// Reads the entries as events.
    pub fn build(parts: TimelineParts<'_>) -> Timeline {
        let projection = parts.projection;
        let selected: BTreeSet<&str> = parts.uids.iter().map(String::as_str).collect();
        let mut reader = Reader {
            projection,
            selected: &selected,
            previous: HashMap::new(),
            events: Vec::new(),
        };
        for stored in parts.baseline {
            if let Change::Object(change) = &stored.entry.change {
                reader
                    .previous
                    .insert(change.uid.to_string(), change.clone());
            }
        }
        let history_seqs: BTreeSet<u64> = parts.entries.iter().map(|s| s.entry.seq).collect();
        let mut ordered: Vec<&StoredEntry> = parts
            .entries
            .iter()
            .chain(
                parts
                    .gaps
                    .iter()
                    .filter(|gap| !history_seqs.contains(&gap.entry.seq)),
            )
            .collect();
        ordered.sort_by_key(|stored| stored.entry.seq);
        for stored in ordered {
            reader.read(stored);
        }
        let subjects = parts
            .uids
            .iter()
            .filter_map(|uid| subject(projection, uid))
            .collect();
        Timeline {
            subjects,
            events: reader.events,
            head_seq: parts.head_seq,
            next_after_seq: parts.next_after_seq,
            gap_scan: parts.gap_scan,
        }
    }

    /// The timeline for people: each subject, then one aligned line per event; with
    /// `color`, ANSI colours for the event and the reason (for a terminal).
    pub fn write_text(&self, out: &mut impl Write, color: bool) -> Result<(), FormatError> {
        if self.subjects.is_empty() {
            writeln!(out, "no object recorded under that selector")?;
        }
        for subject in &self.subjects {
            let state = match (subject.gone, subject.terminating) {
                (true, _) => "gone",
                (false, true) => "terminating",
                (false, false) => "alive",
            };
            let controller = subject
                .controller
                .as_ref()
                .map(link_text)
                .unwrap_or_else(|| "no controller".into());
            writeln!(
                out,
                "{} {}/{}  uid {}  seqs {}..{}  {state}, {controller}",
                subject.kind,
                printable(&subject.namespace),
                printable(&subject.name),
                printable(&subject.uid),
                subject.first_seq,
                subject.last_seq,
            )?;
            let later: Vec<&String> = subject
                .same_name
                .iter()
                .skip_while(|uid| **uid != subject.uid)
                .skip(1)
                .collect();
            if !later.is_empty() && self.subjects.len() == 1 {
                let later: Vec<String> = later.iter().map(|uid| printable(uid)).collect();
                writeln!(out, "  the name was later held by uid {}", later.join(", "))?;
            }
        }
        let several = self.subjects.len() > 1;
        let mut header = vec!["SEQ", "OBSERVED", "EVENT", "REASON"];
        if several {
            header.push("UID");
        }
        header.extend(["HASH", "SUMMARY"]);
        let mut table = TextTable::new(&header).right_aligned(0);
        for event in &self.events {
            let mut row = vec![
                event.seq.to_string(),
                time_text(event.at),
                event.event.to_string(),
                event.reason.map_or("-", Reason::code).to_string(),
            ];
            if several {
                row.push(event.subject.clone().unwrap_or_else(|| "-".into()));
            }
            row.push(event.hash.to_hex()[..12].to_string());
            row.push(event.summary.clone());
            table.row(row);
        }
        writeln!(out)?;
        let paint = |column: usize, text: &str| -> Option<&'static str> {
            if !color {
                return None;
            }
            match column {
                2 => Some(event_colour(text)),
                3 if text != "-" => Some("\x1b[1;31m"),
                _ => None,
            }
        };
        table.write(out, &paint)?;
        if let Some(next) = self.next_after_seq {
            writeln!(out, "(more: the history goes on after seq {next})")?;
        }
        if let Some(scan) = self.gap_scan.filter(|scan| !scan.complete) {
            writeln!(
                out,
                "(watch gaps searched in seqs {}..={} only)",
                scan.from_seq, scan.to_seq
            )?;
        }
        Ok(())
    }
}

fn event_colour(event: &str) -> &'static str {
    match event {
        "bound" => "\x1b[32m",
        "released"
        | "deleted"
        | "missing_on_resync"
        | "identity_mutated"
        | "check_denied"
        | "check_denied_overflow"
        | "single_use_violation"
        | "workspace_reused" => "\x1b[31m",
        "watch_gap" | "terminating" | "workspace_orphaned" | "identity_changed" => "\x1b[33m",
        "created" | "identity_assigned" => "\x1b[36m",
        _ => "\x1b[0m",
    }
}

fn link_text(link: &Link) -> String {
    match (&link.namespace, &link.name) {
        (Some(namespace), Some(name)) => {
            format!("{} {}/{}", link.kind, printable(namespace), printable(name))
        }
        (None, Some(name)) => format!("{} {}", link.kind, printable(name)),
        _ => format!("{} {}", link.kind, printable(&link.uid)),
    }
}

fn kind_of_role(role: &'static str) -> ObjectKind {
    match role {
        "pod" => ObjectKind::Pod,
        "sandbox" => ObjectKind::Sandbox,
        "claim" => ObjectKind::SandboxClaim,
        _ => ObjectKind::PersistentVolumeClaim,
    }
}

/// A link to a uid the role says the kind of (a pod, Sandbox, claim or PVC).
fn link(projection: &Projection, role: &'static str, uid: &str) -> Link {
    let record = projection.object(uid);
    Link {
        role,
        kind: record
            .map_or(kind_of_role(role), |r| r.current.kind)
            .as_str()
            .to_string(),
        uid: uid.to_string(),
        namespace: record.map(|r| r.current.namespace.to_string()),
        name: record.map(|r| r.current.name.to_string()),
        recorded: record.is_some(),
    }
}

fn controller_link(projection: &Projection, owner: &OwnerRef) -> Link {
    let record = projection
        .object(&owner.uid)
        .filter(|_| !owner.uid.is_empty());
    Link {
        role: "controller",
        kind: owner.kind.to_string(),
        uid: owner.uid.to_string(),
        namespace: record.map(|r| r.current.namespace.to_string()),
        name: Some(owner.name.to_string()),
        recorded: record.is_some(),
    }
}

fn subject(projection: &Projection, uid: &str) -> Option<Subject> {
    let record = projection.object(uid)?;
    let current = &record.current;
    let bindings = projection
        .bindings_of(uid)
        .iter()
        .map(|binding| BindingSpan {
            kind: binding.kind,
            sandbox: link(projection, "sandbox", &binding.sandbox_uid),
            claim: binding
                .claim_uid
                .as_deref()
                .map(|claim| link(projection, "claim", claim)),
            sandbox_id: binding.sandbox_id.as_ref().map(Text::to_string),
            since_seq: binding.since_seq,
            since: binding.since,
            ended_seq: binding.ended_seq,
            mutated: binding.mutated,
        })
        .collect();
    Some(Subject {
        kind: current.kind,
        namespace: current.namespace.to_string(),
        name: current.name.to_string(),
        uid: uid.to_string(),
        first_seq: record.first_seq,
        last_seq: record.last_seq,
        gone: record.gone(),
        terminating: current.is_terminating(),
        controller: current
            .controller
            .as_ref()
            .map(|owner| controller_link(projection, owner)),
        bindings,
        same_name: projection
            .uids_of(current.kind, &current.namespace, &current.name)
            .iter()
            .map(Text::to_string)
            .collect(),
    })
}

/// Why a binding ended, in words, after its reason code.
fn release_cause(reason: Reason) -> &'static str {
    match reason {
        Reason::UnknownPod => "the pod is gone",
        Reason::PodTerminating => "the pod is terminating",
        Reason::BindingReleased => "a link of its owner chain is gone",
        Reason::OwnerChainBroken => {
            "its owner chain broke (Sandbox or claim gone, terminating or re-owned)"
        }
        Reason::ClaimTerminating => "the claim is being deleted",
        Reason::ClaimStatusMismatch => "the claim no longer names this Sandbox",
        Reason::ClaimUidMismatch => "the Sandbox's claim-uid label names another claim",
        Reason::NotClaimed => "the Sandbox is no longer claimed",
        Reason::SingleUseViolation => "the Sandbox or pod was claimed a second time",
        Reason::WorkspaceReused => "a workspace of another claim was attached",
        Reason::IdentityMutated => "the pod's sandbox id changed",
        Reason::SandboxIdMismatch => "the sandbox id no longer matches",
        Reason::PodUidMismatch => "another pod holds its name",
        Reason::LedgerNotReady | Reason::LedgerBehind => "the ledger cannot vouch for it",
    }
}

/// Turns entries into events, remembering each subject's previous state.
struct Reader<'a> {
    projection: &'a Projection,
    selected: &'a BTreeSet<&'a str>,
    previous: HashMap<String, ObjectChange>,
    events: Vec<Event>,
}

impl Reader<'_> {
    fn push(
        &mut self,
        stored: &StoredEntry,
        subject: Option<&str>,
        event: &'static str,
        summary: String,
        links: Vec<Link>,
    ) -> &mut Event {
        self.events.push(Event {
            seq: stored.entry.seq,
            hash: stored.hash,
            at: stored.entry.observed_at,
            subject: subject.map(str::to_string),
            event,
            summary,
            reason: None,
            count: None,
            links,
        });
        self.events.last_mut().expect("just pushed")
    }

    fn selects(&self, uid: &str) -> bool {
        self.selected.contains(uid)
    }

    fn read(&mut self, stored: &StoredEntry) {
        let entry = &stored.entry;
        let mutated_here: BTreeSet<&str> = entry
            .transitions
            .iter()
            .filter_map(|t| match t {
                Transition::IdentityMutated { pod_uid, .. } => Some(pod_uid.as_str()),
                _ => None,
            })
            .collect();
        match &entry.change {
            Change::Object(change) if self.selects(&change.uid) => {
                let before = self.previous.insert(change.uid.to_string(), change.clone());
                self.object_events(stored, change, before.as_ref(), &mutated_here);
            }
            Change::Object(_) | Change::WatchScope(_) => {}
            Change::CheckDenied(denied) if self.selects(&denied.pod_uid) => {
                let summary = format!(
                    "{} check{} presenting this uid as pod {}/{} denied in the minute from {}",
                    denied.count,
                    if denied.count == 1 { "" } else { "s" },
                    printable(&denied.namespace),
                    printable(&denied.pod_name),
                    denied.minute.format("%H:%M UTC"),
                );
                let event = self.push(
                    stored,
                    Some(&denied.pod_uid),
                    "check_denied",
                    summary,
                    vec![],
                );
                event.reason = Some(denied.reason);
                event.count = Some(denied.count);
            }
            Change::CheckDenied(_) => {}
            Change::CheckDeniedOverflow(overflow) => {
                let subject = [&overflow.first_pod_uid, &overflow.last_pod_uid]
                    .into_iter()
                    .find(|uid| self.selects(uid))
                    .cloned();
                if let Some(subject) = subject {
                    let summary = format!(
                        "{} more denied checks in the minute from {}, past the per-uid records (first uid {}, last {})",
                        overflow.count,
                        overflow.minute.format("%H:%M UTC"),
                        printable(&overflow.first_pod_uid),
                        printable(&overflow.last_pod_uid),
                    );
                    let event = self.push(
                        stored,
                        Some(&subject),
                        "check_denied_overflow",
                        summary,
                        vec![],
                    );
                    event.reason = Some(overflow.reason);
                    event.count = Some(overflow.count);
                }
            }
            Change::WatchGap(gap) => {
                let since = gap
                    .last_resource_version
                    .as_deref()
                    .map(|rv| format!(" after resourceVersion {}", printable(rv)))
                    .unwrap_or_default();
                let why = match gap.reason.as_str() {
                    "restart" => "the watcher started again over this ledger",
                    "relist" => "the watch broke and was listed again",
                    _ => "the watch was listed again",
                };
                let summary = format!(
                    "watch of {} was blind{since}: {why} ({}); deletes it missed are recorded as missing_on_resync",
                    printable(&gap.resource),
                    printable(&gap.reason)
                );
                self.push(stored, None, "watch_gap", summary, vec![]);
            }
        }
        for transition in &entry.transitions {
            self.transition_event(stored, transition);
        }
    }

    fn object_events(
        &mut self,
        stored: &StoredEntry,
        change: &ObjectChange,
        before: Option<&ObjectChange>,
        mutated_here: &BTreeSet<&str>,
    ) {
        let uid = change.uid.as_str();
        let what = format!(
            "{} {}/{}",
            change.kind,
            printable(&change.namespace),
            printable(&change.name)
        );
        let controller: Vec<Link> = change
            .controller
            .iter()
            .map(|owner| controller_link(self.projection, owner))
            .collect();
        match change.change {
            ChangeKind::Created => {
                let mut parts = vec![format!("{what} created")];
                parts.push(match &change.controller {
                    Some(owner) => format!("controlled by {}", owner_text(owner)),
                    None => "with no controller".into(),
                });
                parts.extend(fields_text(&change.fields));
                if change.is_terminating() {
                    parts.push("already terminating".into());
                }
                self.push(stored, Some(uid), "created", parts.join(", "), controller);
            }
            ChangeKind::Deleted => {
                self.push(
                    stored,
                    Some(uid),
                    "deleted",
                    format!("{what} deleted"),
                    vec![],
                );
            }
            ChangeKind::MissingOnResync => {
                self.push(
                    stored,
                    Some(uid),
                    "missing_on_resync",
                    format!(
                        "{what} was absent from a relist after a watch gap: recorded as deleted"
                    ),
                    vec![],
                );
            }
            ChangeKind::Updated => {
                let Some(before) = before else {
                    let summary = format!(
                        "{what} recorded (resourceVersion {})",
                        printable(&change.resource_version)
                    );
                    self.push(stored, Some(uid), "updated", summary, controller);
                    return;
                };
                let mut any = false;
                if before.deletion_timestamp.is_none() {
                    if let Some(at) = &change.deletion_timestamp {
                        let summary = format!(
                            "{what} is terminating (deletionTimestamp {})",
                            printable(at)
                        );
                        self.push(stored, Some(uid), "terminating", summary, vec![]);
                        any = true;
                    }
                }
                if before.controller != change.controller {
                    let summary = match (&before.controller, &change.controller) {
                        (_, None) => format!(
                            "{what} lost its controller{}: orphaned",
                            before
                                .controller
                                .as_ref()
                                .map(|o| format!(" {}", owner_text(o)))
                                .unwrap_or_default()
                        ),
                        (None, Some(now)) => format!("{what} taken by {}", owner_text(now)),
                        (Some(was), Some(now)) => format!(
                            "{what} moved from {} to {}",
                            owner_text(was),
                            owner_text(now)
                        ),
                    };
                    self.push(
                        stored,
                        Some(uid),
                        "controller_changed",
                        summary,
                        controller.clone(),
                    );
                    any = true;
                }
                if let (
                    KindFields::Pod {
                        sandbox_id_annotation: was,
                        ..
                    },
                    KindFields::Pod {
                        sandbox_id_annotation: now,
                        ..
                    },
                ) = (&before.fields, &change.fields)
                {
                    if was != now && !mutated_here.contains(uid) {
                        let (event, summary) = match (was, now) {
                            (None, Some(id)) => (
                                "identity_assigned",
                                format!("{what} was given sandbox id {}", printable(id)),
                            ),
                            (Some(id), None) => (
                                "identity_changed",
                                format!("{what} lost its sandbox id {}", printable(id)),
                            ),
                            (Some(was), Some(now)) => (
                                "identity_changed",
                                format!(
                                    "{what} sandbox id changed from {} to {}",
                                    printable(was),
                                    printable(now)
                                ),
                            ),
                            (None, None) => unreachable!("they differ"),
                        };
                        self.push(stored, Some(uid), event, summary, vec![]);
                        any = true;
                    }
                }
                let changed = field_changes(&before.fields, &change.fields);
                if !changed.is_empty() || !any {
                    let summary = if changed.is_empty() {
                        format!(
                            "{what} recorded again (resourceVersion {})",
                            printable(&change.resource_version)
                        )
                    } else {
                        format!("{what}: {}", changed.join(", "))
                    };
                    self.push(stored, Some(uid), "updated", summary, vec![]);
                }
            }
        }
    }

    fn transition_event(&mut self, stored: &StoredEntry, transition: &Transition) {
        let projection = self.projection;
        let named = |uid: &str| {
            let record = projection.object(uid);
            record.map_or_else(
                || printable(uid),
                |r| {
                    format!(
                        "{}/{}",
                        printable(&r.current.namespace),
                        printable(&r.current.name)
                    )
                },
            )
        };
        match transition {
            Transition::Bound {
                binding,
                pod_uid,
                sandbox_uid,
                claim_uid,
            } => {
                let Some(subject) = [Some(pod_uid), Some(sandbox_uid), claim_uid.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|uid| self.selects(uid))
                else {
                    return;
                };
                let sandbox_id = projection
                    .bindings_of(pod_uid)
                    .iter()
                    .find(|b| b.since_seq == stored.entry.seq)
                    .and_then(|b| b.sandbox_id.clone());
                let through = match (binding, claim_uid) {
                    (BindingKind::Claim, Some(claim)) => format!(" through claim {}", named(claim)),
                    _ => " directly (no claim)".into(),
                };
                let summary = format!(
                    "pod {} ({}) bound to Sandbox {}{through}, sandbox id {}",
                    named(pod_uid),
                    printable(pod_uid),
                    named(sandbox_uid),
                    sandbox_id.as_deref().map_or("(none yet)".into(), printable),
                );
                let mut links = vec![
                    link(projection, "pod", pod_uid),
                    link(projection, "sandbox", sandbox_uid),
                ];
                links.extend(claim_uid.iter().map(|c| link(projection, "claim", c)));
                let subject = subject.clone();
                self.push(stored, Some(&subject), "bound", summary, links);
            }
            Transition::Released {
                pod_uid,
                sandbox_uid,
                claim_uid,
                reason,
            } => {
                let Some(subject) = [Some(pod_uid), Some(sandbox_uid), claim_uid.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|uid| self.selects(uid))
                else {
                    return;
                };
                let through = claim_uid
                    .as_ref()
                    .map(|c| format!(" through claim {}", named(c)))
                    .unwrap_or_default();
                let summary = format!(
                    "binding of pod {} ({}) to Sandbox {}{through} released: {} ({})",
                    named(pod_uid),
                    printable(pod_uid),
                    named(sandbox_uid),
                    reason.code(),
                    release_cause(*reason)
                );
                let mut links = vec![
                    link(projection, "pod", pod_uid),
                    link(projection, "sandbox", sandbox_uid),
                ];
                links.extend(claim_uid.iter().map(|c| link(projection, "claim", c)));
                let subject = subject.clone();
                let event = self.push(stored, Some(&subject), "released", summary, links);
                event.reason = Some(*reason);
            }
            Transition::IdentityMutated { pod_uid, from, to } => {
                if !self.selects(pod_uid) {
                    return;
                }
                let shown = |id: &Option<String>| id.as_deref().map_or("(none)".into(), printable);
                let summary = format!(
                    "pod {}'s sandbox id changed from {} to {} while bound: its checks answer IDENTITY_MUTATED for the rest of the binding",
                    named(pod_uid),
                    shown(from),
                    shown(to)
                );
                let pod_uid = pod_uid.clone();
                let event = self.push(stored, Some(&pod_uid), "identity_mutated", summary, vec![]);
                event.reason = Some(Reason::IdentityMutated);
            }
            Transition::SingleUseViolation {
                kind,
                uid,
                first_claim_uid,
                new_claim_uid,
            } => {
                let Some(subject) = [uid, first_claim_uid, new_claim_uid]
                    .into_iter()
                    .find(|u| self.selects(u))
                    .cloned()
                else {
                    return;
                };
                let summary = format!(
                    "{kind} {} first bound under claim {} is now claimed by {}",
                    named(uid),
                    named(first_claim_uid),
                    named(new_claim_uid)
                );
                let role = match kind {
                    ObjectKind::Pod => "pod",
                    _ => "sandbox",
                };
                let links = vec![
                    link(projection, role, uid),
                    link(projection, "claim", first_claim_uid),
                    link(projection, "claim", new_claim_uid),
                ];
                let event = self.push(
                    stored,
                    Some(&subject),
                    "single_use_violation",
                    summary,
                    links,
                );
                event.reason = Some(Reason::SingleUseViolation);
            }
            Transition::WorkspaceReused {
                pvc_uid,
                volume_name,
                first_claim_uid,
                new_claim_uid,
            } => {
                let Some(subject) = [pvc_uid, first_claim_uid, new_claim_uid]
                    .into_iter()
                    .find(|u| self.selects(u))
                    .cloned()
                else {
                    return;
                };
                let volume = volume_name
                    .as_deref()
                    .map(|v| format!(" (volume {})", printable(v)))
                    .unwrap_or_default();
                let summary = format!(
                    "workspace PVC {}{volume} first bound under claim {} is offered to claim {}",
                    named(pvc_uid),
                    named(first_claim_uid),
                    named(new_claim_uid)
                );
                let links = vec![
                    link(projection, "pvc", pvc_uid),
                    link(projection, "claim", first_claim_uid),
                    link(projection, "claim", new_claim_uid),
                ];
                let event = self.push(stored, Some(&subject), "workspace_reused", summary, links);
                event.reason = Some(Reason::WorkspaceReused);
            }
            Transition::WorkspaceOrphaned {
                pvc_uid,
                sandbox_uid,
            } => {
                let Some(subject) = [pvc_uid, sandbox_uid]
                    .into_iter()
                    .find(|u| self.selects(u))
                    .cloned()
                else {
                    return;
                };
                let summary = format!(
                    "workspace PVC {} outlived its Sandbox {}: orphaned, it must never serve another claim",
                    named(pvc_uid),
                    named(sandbox_uid)
                );
                let links = vec![
                    link(projection, "pvc", pvc_uid),
                    link(projection, "sandbox", sandbox_uid),
                ];
                self.push(stored, Some(&subject), "workspace_orphaned", summary, links);
            }
        }
    }
}

fn owner_text(owner: &OwnerRef) -> String {
    match owner.ambiguous_count() {
        Some(count) => format!("{count} {} controller references", printable(&owner.kind)),
        None => format!("{} {}", printable(&owner.kind), printable(&owner.name)),
    }
}

fn optional(value: Option<&str>) -> String {
    value.map_or("(none)".into(), printable)
}

/// The identity fields an object was created with, in words.
fn fields_text(fields: &KindFields) -> Vec<String> {
    match fields {
        KindFields::Pod {
            sandbox_id_annotation,
            ..
        } => vec![match sandbox_id_annotation {
            Some(id) => format!("sandbox id {}", printable(id)),
            None => "no sandbox id yet".into(),
        }],
        KindFields::Sandbox {
            claim_uid_label,
            sandbox_id_label,
            ..
        } => {
            let mut parts = Vec::new();
            if let Some(claim) = claim_uid_label {
                parts.push(format!("claim-uid label {}", printable(claim)));
            }
            if let Some(id) = sandbox_id_label {
                parts.push(format!("sandbox-id label {}", printable(id)));
            }
            parts
        }
        KindFields::SandboxClaim {
            status_sandbox_name,
            warm_pool,
            ..
        } => {
            let mut parts = Vec::new();
            if let Some(pool) = warm_pool {
                parts.push(format!("warm pool {}", printable(pool)));
            }
            if let Some(sandbox) = status_sandbox_name {
                parts.push(format!("status names Sandbox {}", printable(sandbox)));
            }
            parts
        }
        KindFields::PersistentVolumeClaim { volume_name, .. } => volume_name
            .iter()
            .map(|v| format!("volume {}", printable(v)))
            .collect(),
    }
}

/// What changed between two observations of one object's identity fields (the sandbox id
/// of a pod is an event of its own).
fn field_changes(before: &KindFields, after: &KindFields) -> Vec<String> {
    let mut changes = Vec::new();
    let mut compare = |label: &str, was: &Option<Text>, now: &Option<Text>| {
        if was != now {
            changes.push(format!(
                "{label} {} → {}",
                optional(was.as_deref()),
                optional(now.as_deref())
            ));
        }
    };
    match (before, after) {
        (KindFields::Pod { phase: was, .. }, KindFields::Pod { phase: now, .. }) => {
            compare("phase", was, now);
        }
        (
            KindFields::Sandbox {
                claim_uid_label: claim_was,
                sandbox_id_label: id_was,
                shutdown_policy: policy_was,
                ..
            },
            KindFields::Sandbox {
                claim_uid_label: claim_now,
                sandbox_id_label: id_now,
                shutdown_policy: policy_now,
                ..
            },
        ) => {
            compare("claim-uid label", claim_was, claim_now);
            compare("sandbox-id label", id_was, id_now);
            compare("shutdown policy", policy_was, policy_now);
        }
        (
            KindFields::SandboxClaim {
                status_sandbox_name: sandbox_was,
                ready: ready_was,
                shutdown_policy: policy_was,
                ..
            },
            KindFields::SandboxClaim {
                status_sandbox_name: sandbox_now,
                ready: ready_now,
                shutdown_policy: policy_now,
                ..
            },
        ) => {
            compare("status.sandbox.name", sandbox_was, sandbox_now);
            let ready = |r: &Option<schemas::observed::ConditionSummary>| {
                r.as_ref().map(|c| match &c.reason {
                    Some(reason) => Text::from(format!("{} ({reason})", c.status)),
                    None => c.status.clone(),
                })
            };
            compare("Ready", &ready(ready_was), &ready(ready_now));
            compare("shutdown policy", policy_was, policy_now);
        }
        (
            KindFields::PersistentVolumeClaim {
                volume_name: volume_was,
                phase: phase_was,
            },
            KindFields::PersistentVolumeClaim {
                volume_name: volume_now,
                phase: phase_now,
            },
        ) => {
            compare("volume", volume_was, volume_now);
            compare("phase", phase_was, phase_now);
        }
        _ => changes.push("kind-specific fields replaced".into()),
    }
    changes
}
