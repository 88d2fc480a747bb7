//! The projection: current state derived from the log, with the indexes the binding
//! rule needs, and the rule itself (DOMAIN.md §4-5) as pure functions.
//!
//! [`Projection::apply`] is the only way state changes, and it is deterministic: the same
//! entries applied in the same order give the same projection and the same transitions.
//! That is what lets replay re-derive (and so verify) the transitions stored in entries.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemas::{
    BindingKind, Change, KindFields, ObjectChange, ObjectKind, Reason, Text, Transition,
};
use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

mod answers;
mod decoded;
mod history;
mod intern;
pub(crate) mod layout;
mod names;
mod text_map;

use answers::{AnswerMap, Answers};
use history::History;
use names::{NameIndex, NameUids};
use text_map::{UidMap, VolumeMap};

/// The last observed state of one uid, alive or gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// The last observation.
    pub current: ObjectChange,
    /// The entry that first recorded this uid.
    pub first_seq: u64,
    /// The entry that last recorded this uid.
    pub last_seq: u64,
}

impl ObjectRecord {
    /// Deleted or missing on resync: what the last observation says. Derived, not
    /// stored, so the record is 8 bytes smaller (one per uid at cluster scale).
    pub fn gone(&self) -> bool {
        self.current.change.is_removal()
    }
}

/// An [`ObjectRecord`] as encoded (snapshots, JSON): `gone` written out, as before it was
/// derived.
#[derive(Serialize)]
#[serde(rename = "ObjectRecord")]
struct EncodedRecord<'a> {
    current: &'a ObjectChange,
    gone: bool,
    first_seq: u64,
    last_seq: u64,
}

/// An [`ObjectRecord`] as decoded.
#[derive(Deserialize)]
#[serde(rename = "ObjectRecord")]
struct DecodedRecord {
    current: ObjectChange,
    gone: bool,
    first_seq: u64,
    last_seq: u64,
}

impl Serialize for ObjectRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EncodedRecord {
            current: &self.current,
            gone: self.gone(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ObjectRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let decoded = DecodedRecord::deserialize(deserializer)?;
        if decoded.gone != decoded.current.change.is_removal() {
            return Err(serde::de::Error::custom(format!(
                "the record of {} says gone is {} after a change of kind {:?}",
                decoded.current.uid, decoded.gone, decoded.current.change
            )));
        }
        Ok(ObjectRecord {
            current: decoded.current,
            first_seq: decoded.first_seq,
            last_seq: decoded.last_seq,
        })
    }
}

/// One binding of one pod, from the entry that formed it to the one that ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Claim or direct.
    pub kind: BindingKind,
    /// The sandbox's uid.
    pub sandbox_uid: Text,
    /// The claim's uid (claim bindings).
    pub claim_uid: Option<Text>,
    /// The pod's `openshell.io/sandbox-id` annotation when the binding began.
    pub sandbox_id: Option<Text>,
    /// The entry that formed the binding.
    pub since_seq: u64,
    /// When that entry was observed.
    pub since: DateTime<Utc>,
    /// The entry that ended it, if it ended.
    pub ended_seq: Option<u64>,
    /// Whether the pod's sandbox-id annotation changed while bound.
    pub mutated: bool,
}

/// Who first held a workspace volume (PV name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The claim the volume was first bound under.
    pub first_claim_uid: Option<Text>,
    /// Every PVC uid seen on this volume, in order (a thin vector: the record is 16 bytes,
    /// one per volume in the map's nodes).
    pub pvc_uids: ThinVec<Text>,
}

/// A check request (DOMAIN.md §4; the HTTP request of the API has the same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid, as proven by the caller (for example from a TokenReview).
    pub pod_uid: String,
    /// The gateway sandbox id the caller expects on the pod.
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// The Sandbox name the caller expects.
    #[serde(default)]
    pub sandbox_name: Option<String>,
    /// The Sandbox uid the caller expects.
    #[serde(default)]
    pub sandbox_uid: Option<String>,
    /// The claim uid the caller expects.
    #[serde(default)]
    pub claim_uid: Option<String>,
    /// Refuse direct bindings (default true).
    #[serde(default = "default_true")]
    pub require_claim: bool,
    /// Answer `LEDGER_BEHIND` unless the ledger holds at least this entry. Read as JSON
    /// Schema reads an integer (the OpenAPI document describes it so): `5.0` is 5.
    #[serde(default, deserialize_with = "json_integer")]
    pub min_seq: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// An optional unsigned 64-bit integer, written as JSON integers are: `7`, or a number
/// with a zero fraction (`7.0`, `7e0`).
fn json_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    use serde::de::{Error, Unexpected};
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    let expected = &"an integer from 0 to 18446744073709551615";
    if let Some(n) = number.as_i64() {
        return Err(D::Error::invalid_value(Unexpected::Signed(n), expected));
    }
    match number.as_f64() {
        // 2^64 is the first f64 past u64::MAX.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Some(f as u64))
        }
        Some(f) => Err(D::Error::invalid_value(Unexpected::Float(f), expected)),
        None => Err(D::Error::custom(format!("invalid number {number}"))),
    }
}

/// Longest name (a Kubernetes DNS-1123 subdomain) or sandbox id.
pub const MAX_NAME_LEN: usize = 253;
/// Longest namespace (a Kubernetes DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest uid (Kubernetes uids are 36-character UUIDs).
pub const MAX_UID_LEN: usize = 128;

/// Text of 1 to `max` characters (as JSON Schema's `maxLength` counts them, which for the
/// ASCII of Kubernetes names and uids is their bytes), no control characters: the rule
/// for every name, uid and id a caller presents.
pub fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let length = value.chars().count();
    if length > max {
        return Err(format!(
            "{field} is {length} characters long; at most {max} are allowed"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// A Kubernetes object name (DNS-1123 subdomain: lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit) or namespace (DNS-1123 label: no `.`, at
/// most 63 characters), as the API server validates them: a name no object can have
/// is refused rather than answered `UNKNOWN_POD`.
fn kubernetes_name(field: &str, value: &str, label: bool) -> Result<(), String> {
    let max = if label {
        MAX_NAMESPACE_LEN
    } else {
        MAX_NAME_LEN
    };
    bounded_text(field, value, max)?;
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label);
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !value.chars().all(allowed) || !ends(value.chars().next()) || !ends(value.chars().last()) {
        return Err(format!(
            "{field} {value:?} is not a valid Kubernetes {}",
            if label {
                "namespace (lowercase letters, digits and '-', starting and ending with a letter or digit)"
            } else {
                "name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
            }
        ));
    }
    Ok(())
}

impl CheckRequest {
    /// Checks every field as the HTTP API and the CLI both require: the namespace a
    /// Kubernetes namespace, the pod and Sandbox names Kubernetes names, uids and the
    /// sandbox id 1 to 128 (uids) or 253 (ids) characters without control characters.
    /// `Err` lists every problem.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut push = |result: Result<(), String>| {
            if let Err(problem) = result {
                problems.push(problem);
            }
        };
        push(kubernetes_name("namespace", &self.namespace, true));
        push(kubernetes_name("pod_name", &self.pod_name, false));
        push(bounded_text("pod_uid", &self.pod_uid, MAX_UID_LEN));
        if let Some(value) = &self.sandbox_id {
            push(bounded_text("sandbox_id", value, MAX_NAME_LEN));
        }
        if let Some(value) = &self.sandbox_name {
            push(kubernetes_name("sandbox_name", value, false));
        }
        if let Some(value) = &self.sandbox_uid {
            push(bounded_text("sandbox_uid", value, MAX_UID_LEN));
        }
        if let Some(value) = &self.claim_uid {
            push(bounded_text("claim_uid", value, MAX_UID_LEN));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }
}

/// The three answers a check can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The pod is bound as asked.
    Allow,
    /// It is not; `reason` says why.
    Deny,
    /// The ledger cannot answer yet (not synced, or behind the caller).
    NotReady,
}

/// A namespaced object reference in answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectView {
    /// Namespace.
    pub namespace: Text,
    /// Name.
    pub name: Text,
    /// Uid.
    pub uid: Text,
}

/// A current binding as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    /// Claim or direct.
    pub kind: BindingKind,
    /// The pod.
    pub pod: ObjectView,
    /// The sandbox.
    pub sandbox: ObjectView,
    /// The claim (claim bindings).
    pub claim: Option<ObjectView>,
    /// The workspace PVCs of the sandbox.
    pub pvcs: Vec<ObjectView>,
    /// The pod's `openshell.io/sandbox-id`.
    pub sandbox_id: Option<Text>,
    /// The entry that formed the binding.
    pub since_seq: u64,
    /// When.
    pub since: DateTime<Utc>,
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow, deny or not ready.
    pub decision: Verdict,
    /// The first failing check (absent on allow).
    pub reason: Option<Reason>,
    /// A sentence for people.
    pub detail: Option<String>,
    /// The binding (on allow).
    pub binding: Option<Arc<BindingView>>,
    /// The ledger head seq the answer was computed at.
    pub seq: u64,
}

/// The projection's maps: persistent (structurally shared) hash maps, so a copy of the
/// whole projection costs `O(1)` and the writer can publish an immutable view after every
/// flush while it goes on changing its own ([`crate::LedgerView`]); ahash instead of
/// SipHash. Keys are uids and names the ledger already validated; the maps are never
/// iterated where order matters.
type HashMap<K, V> =
    imbl::GenericHashMap<K, V, ahash::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// The projection's ordered sets, persistent for the same reason as [`HashMap`].
type OrdSet<T> = imbl::OrdSet<T>;

/// The uids an object owns: a handful (a claim's Sandbox; a Sandbox's pod and PVCs), kept
/// sorted in a plain vector. A persistent ordered set allocates a whole tree node for
/// each, about twice the memory, for 400k owners at cluster scale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct OwnedUids(ThinVec<Text>);

/// Makes room in a short list for one more item: exactly one more slot while it holds
/// fewer than four, twice as many beyond. A pod's one binding, a claim's one child, a
/// Sandbox's two, a volume's one PVC would otherwise each hold a block sized for four (the
/// vectors' first growth): a pod's binding list is 80 bytes instead of 272. A long list
/// still grows in amortized constant time.
fn make_room<T>(list: &mut ThinVec<T>) {
    if list.len() == list.capacity() {
        match list.len() < 4 {
            true => list.reserve_exact(1),
            false => list.reserve(1),
        }
    }
}

impl OwnedUids {
    fn insert(&mut self, uid: &Text) {
        if let Err(at) = self.0.binary_search_by(|owned| owned.as_str().cmp(uid)) {
            make_room(&mut self.0);
            self.0.insert(at, uid.clone());
        }
    }

    fn remove(&mut self, uid: &str) {
        if let Ok(at) = self.0.binary_search_by(|owned| owned.as_str().cmp(uid)) {
            self.0.remove(at);
        }
    }

    fn contains(&self, uid: &str) -> bool {
        self.0
            .binary_search_by(|owned| owned.as_str().cmp(uid))
            .is_ok()
    }

    fn iter(&self) -> std::slice::Iter<'_, Text> {
        self.0.iter()
    }
}

/// Everything the projection keeps of one uid, in one record: a uid is stored once (the
/// map's key, shared by every reference to it) and costs one map entry, where a map per
/// index cost a key copy and an entry in each of six maps. Its lists are thin vectors
/// (one pointer, the length in the heap block): most uids own nothing and bind nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct UidState {
    /// The object last observed with this uid (`None`: a uid only named, by an owner
    /// reference, a transition or a denied check).
    object: Option<ObjectRecord>,
    /// Every seq that recorded the uid or named it, in order (up to three inline).
    history: History,
    /// The uids whose controller reference names this one.
    children: OwnedUids,
    /// Every binding of a pod, oldest first.
    bindings: ThinVec<BindingRecord>,
    /// The claim this uid (a Sandbox, pod or PVC) was first bound under: single use.
    bound_under: Option<Text>,
}

/// A uid's record as the projection's map holds it: shared with published views, behind
/// a reference count without weak counts (`triomphe`), whose 8 bytes of header, where
/// std's `Arc` takes 16, put the record and its count in the allocator's 224-byte class
/// (one allocation per uid).
type SharedState = triomphe::Arc<UidState>;

/// A cached answer for a bound pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ActiveView {
    view: Arc<BindingView>,
    mutated: bool,
}

/// Why the structural rule failed for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    reason: Reason,
    detail: String,
    violation: Option<Box<Transition>>,
    /// The chain failed because a link is gone (deleted, never seen, ownerless), as
    /// opposed to present but terminating or mismatched: for a pod that was bound, that
    /// is a released binding.
    link_gone: bool,
}

fn fail(reason: Reason, detail: impl Into<String>) -> Failure {
    Failure {
        reason,
        detail: detail.into(),
        violation: None,
        link_gone: false,
    }
}

fn gone(reason: Reason, detail: impl Into<String>) -> Failure {
    Failure {
        link_gone: true,
        ..fail(reason, detail)
    }
}

/// A pod that passes the structural rule (checks 1-5).
struct Structural<'a> {
    kind: BindingKind,
    pod: &'a ObjectRecord,
    sandbox: &'a ObjectRecord,
    claim: Option<&'a ObjectRecord>,
}

/// The projected state of the log at some seq.
///
/// Compact at cluster scale (about 1 KiB per live object): one record per uid
/// ([`UidState`]), and every string shared rather than copied ([`Text`]): a uid's text is
/// its map key, which owner references, bindings and indexes point to, and namespaces,
/// API versions and other recurring values come from one interner ([`intern`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Projection {
    /// Behind `Arc`: a persistent map copies a node's values when it first changes a node
    /// shared with a published view, and copying a pointer is far cheaper than a record.
    #[serde(deserialize_with = "layout::uid_states")]
    uids: UidMap,
    /// Every uid ever recorded under a (kind, namespace, name), oldest first.
    names: NameIndex,
    /// The answer for every pod with an active binding, so an allowed check is a lookup,
    /// not a walk of the owner chain: kept current by `apply`, or pending after a decode
    /// (see [`answers`]). Derived, so snapshots leave it out.
    #[serde(skip, default = "Answers::pending")]
    answers: Answers,
    volumes: VolumeMap,
    orphaned: OrdSet<Text>,
    violations: OrdSet<(Text, Text)>,
    seq: u64,
    at: Option<DateTime<Utc>>,
    /// The namespaces the recording watcher watches (the last `watch_scope` entry); `None`
    /// when no scope was recorded (all namespaces: event files, a watcher of all).
    watched: Option<Vec<String>>,
}

/// Equal states; the answers of bound pods compare as built (a pending side builds its
/// own), so a test comparing a decoded projection with an applied one checks that `apply`
/// kept them current.
impl PartialEq for Projection {
    fn eq(&self, other: &Projection) -> bool {
        let Projection {
            uids,
            names,
            answers: _,
            volumes,
            orphaned,
            violations,
            seq,
            at,
            watched,
        } = self;
        *uids == other.uids
            && *names == other.names
            && *volumes == other.volumes
            && *orphaned == other.orphaned
            && *violations == other.violations
            && *seq == other.seq
            && *at == other.at
            && *watched == other.watched
            && *self.answer_map() == *other.answer_map()
    }
}

impl Eq for Projection {}

impl Projection {
    /// The namespaces the ledger's watcher watches, as last recorded (`None` or empty:
    /// all).
    pub fn watched_namespaces(&self) -> Option<&[String]> {
        self.watched.as_deref()
    }

    /// The seq of the last entry applied (0 for none).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The time of the last entry applied.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.at
    }

    /// The record of a uid, alive or gone.
    pub fn object(&self, uid: &str) -> Option<&ObjectRecord> {
        self.uids.get(uid)?.object.as_ref()
    }

    /// The uid last recorded under a (kind, namespace, name).
    pub fn uid_of(&self, kind: ObjectKind, namespace: &str, name: &str) -> Option<&str> {
        self.uids_of(kind, namespace, name).last().map(Text::as_str)
    }

    /// Every uid ever recorded under a (kind, namespace, name), oldest first.
    pub fn uids_of(&self, kind: ObjectKind, namespace: &str, name: &str) -> &[Text] {
        self.names
            .get(kind, namespace, name)
            .map(NameUids::as_slice)
            .unwrap_or(&[])
    }

    /// Every seq that recorded this uid, in order.
    pub fn history_of(&self, uid: &str) -> impl Iterator<Item = u64> + '_ {
        self.uids
            .get(uid)
            .into_iter()
            .flat_map(|state| state.history.iter())
    }

    /// Every binding a pod uid ever had, oldest first.
    pub fn bindings_of(&self, pod_uid: &str) -> &[BindingRecord] {
        self.uids
            .get(pod_uid)
            .map(|state| state.bindings.as_slice())
            .unwrap_or(&[])
    }

    /// Objects that are alive, sorted by kind, namespace, name.
    pub fn live_objects(&self) -> Vec<&ObjectRecord> {
        let mut live: Vec<&ObjectRecord> = self
            .uids
            .values()
            .filter_map(|state| state.object.as_ref())
            .filter(|r| !r.gone())
            .collect();
        live.sort_by(|a, b| {
            (
                a.current.kind,
                &a.current.namespace,
                &a.current.name,
                &a.current.uid,
            )
                .cmp(&(
                    b.current.kind,
                    &b.current.namespace,
                    &b.current.name,
                    &b.current.uid,
                ))
        });
        live
    }

    /// Number of uids ever recorded as objects.
    pub fn object_count(&self) -> usize {
        self.uids
            .values()
            .filter(|state| state.object.is_some())
            .count()
    }

    /// The active bindings, as views, sorted by pod namespace and name.
    pub fn active_bindings(&self) -> Vec<Arc<BindingView>> {
        let mut views: Vec<_> = self
            .answer_map()
            .values()
            .map(|a| Arc::clone(&a.view))
            .collect();
        views.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        views
    }

    /// The uid as the projection stores it: the map's own key when the uid is known, so
    /// every reference shares its text.
    fn canonical(&self, uid: &Text) -> Text {
        match self.uids.get_key_value(uid.as_str()) {
            Some((key, _)) => key.clone(),
            None => uid.clone(),
        }
    }

    /// [`Projection::canonical`] of a uid given as a `&str` (allocated only when unknown).
    fn canonical_str(&self, uid: &str) -> Text {
        match self.uids.get_key_value(uid) {
            Some((key, _)) => key.clone(),
            None => Text::from(uid),
        }
    }

    /// The record of `uid` for writing, created if new. Only called when something is
    /// about to change: a write takes each node on the key's path for writing.
    fn state_mut(&mut self, uid: &Text) -> &mut UidState {
        SharedState::make_mut(self.uids.get_or_default_mut(uid))
    }

    /// Appends `seq` to the history of `uid` unless it is already its last.
    fn record_in_history(&mut self, uid: &Text, seq: u64) {
        let recorded = self
            .uids
            .get(uid.as_str())
            .is_some_and(|state| state.history.last() == Some(seq));
        if !recorded {
            self.state_mut(uid).history.push(seq);
        }
    }

    /// Applies any entry's change: object changes through [`Projection::apply`]; other
    /// records only move the projection's seq and time (denied checks also join the
    /// presented pod uid's history).
    pub fn apply_change(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        change: &Change,
    ) -> Vec<Transition> {
        match change {
            Change::Object(change) => self.apply(seq, at, change),
            Change::WatchGap(_) => {
                self.seq = seq;
                self.at = Some(at);
                Vec::new()
            }
            Change::CheckDenied(denied) => {
                // Denials belong in the presented uid's history, beside its bindings.
                let uid = self.canonical_str(denied.pod_uid.as_str());
                self.state_mut(&uid).history.push(seq);
                self.seq = seq;
                self.at = Some(at);
                Vec::new()
            }
            Change::WatchScope(scope) => {
                self.watched = Some(scope.namespaces.clone());
                self.seq = seq;
                self.at = Some(at);
                Vec::new()
            }
            Change::CheckDeniedOverflow(overflow) => {
                // An aggregate names its first and last uid: in their histories.
                for uid in [&overflow.first_pod_uid, &overflow.last_pod_uid] {
                    let uid = self.canonical_str(uid.as_str());
                    self.record_in_history(&uid, seq);
                }
                self.seq = seq;
                self.at = Some(at);
                Vec::new()
            }
        }
    }

    /// Applies one entry's object change and returns the transitions it causes.
    pub fn apply(&mut self, seq: u64, at: DateTime<Utc>, change: &ObjectChange) -> Vec<Transition> {
        self.apply_owned(seq, at, change.clone())
    }

    /// [`Projection::apply_change`] for a change the caller no longer needs (replay of a
    /// decoded entry): an object change moves into the object's record instead of being
    /// copied. Same state, same transitions.
    pub(crate) fn apply_change_owned(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        change: Change,
    ) -> Vec<Transition> {
        match change {
            Change::Object(change) => self.apply_owned(seq, at, change),
            other => self.apply_change(seq, at, &other),
        }
    }

    /// [`Projection::apply`], the change moved into the object's record. Every step below
    /// that would write a map only when something changes first reads it: a write to a
    /// persistent map takes each node on the key's path for writing, which dominated
    /// replay.
    fn apply_owned(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        change: ObjectChange,
    ) -> Vec<Transition> {
        self.settle_answers();
        let change = self.shared_strings(change);
        let uid = change.uid.clone();
        let previous = self
            .object(&uid)
            .and_then(|r| r.current.controller.as_ref());
        let previous_controller = previous.map(|c| c.uid.clone());
        // The owners the object was a dependent of: its controller's uid, or every owner
        // an ambiguous controller names (`OwnerRef::linked_uids`).
        let previous_links = previous.map(|c| c.linked_uids()).unwrap_or_default();
        let links: Vec<Text> = change
            .controller
            .as_ref()
            .map(|c| c.linked_uids())
            .unwrap_or_default()
            .iter()
            .map(|owner| self.canonical(owner))
            .collect();

        // The change is kept in the record; the rest of the apply reads a copy (strings
        // are shared, so a copy costs reference counts, not allocations).
        {
            let record = &mut self.state_mut(&uid).object;
            match record {
                Some(record) => {
                    record.current = change.clone();
                    record.last_seq = seq;
                }
                None => {
                    *record = Some(ObjectRecord {
                        current: change.clone(),
                        first_seq: seq,
                        last_seq: seq,
                    });
                }
            }
        }
        self.names
            .record(change.kind, &change.namespace, &change.name, &uid);
        self.state_mut(&uid).history.push(seq);

        // An owner both before and after whose set already holds the uid keeps it: the
        // removal and re-insertion below would leave that set as it is.
        let kept = |this: &Self, owner: &Text| {
            this.uids
                .get(owner.as_str())
                .is_some_and(|state| state.children.contains(&uid))
        };
        for previous in &previous_links {
            if links.contains(previous) && kept(self, previous) {
                continue;
            }
            if kept(self, previous) {
                let state = self.state_mut(previous);
                state.children.remove(&uid);
                // A uid known only as an owner is forgotten with its last dependent, so
                // the projection has one form for one state, whatever the order of events.
                if *state == UidState::default() {
                    self.uids.remove(previous.as_str());
                }
            }
        }
        for owner in &links {
            if !kept(self, owner) {
                self.state_mut(owner).children.insert(&uid);
            }
        }
        if let KindFields::PersistentVolumeClaim {
            volume_name: Some(volume),
            ..
        } = &change.fields
        {
            let known = self
                .volumes
                .get(volume.as_str())
                .is_some_and(|record| record.pvc_uids.contains(&uid));
            if !known {
                let record = self.volumes.get_or_default_mut(volume);
                if !record.pvc_uids.contains(&uid) {
                    make_room(&mut record.pvc_uids);
                    record.pvc_uids.push(uid.clone());
                }
            }
        }

        let mut pods = BTreeSet::new();
        match change.kind {
            ObjectKind::Pod => {
                pods.insert(uid.clone());
            }
            ObjectKind::Sandbox => self.collect_pods_of_sandbox(&uid, &mut pods),
            ObjectKind::SandboxClaim => {
                for sandbox in self.children_of_kind(&uid, ObjectKind::Sandbox) {
                    self.collect_pods_of_sandbox(&sandbox, &mut pods);
                }
                if let KindFields::SandboxClaim {
                    status_sandbox_name: Some(name),
                    ..
                } = &change.fields
                {
                    if let Some(sandbox) = self.uid_of(ObjectKind::Sandbox, &change.namespace, name)
                    {
                        let sandbox = sandbox.to_string();
                        self.collect_pods_of_sandbox(&sandbox, &mut pods);
                    }
                }
            }
            ObjectKind::PersistentVolumeClaim => {
                for sandbox in links.iter().chain(&previous_links) {
                    self.collect_pods_of_sandbox(sandbox, &mut pods);
                }
            }
        }

        let mut transitions = Vec::new();
        for pod in &pods {
            self.reevaluate(pod, seq, at, &mut transitions);
            self.refresh_active_view(pod);
        }
        self.detect_orphans(&change, previous_controller.as_deref(), &mut transitions);
        // An entry belongs to the history of every object its transitions name, so "every
        // binding pod uid X ever had" includes the claim update that bound it.
        for transition in &transitions {
            for named in transition_uids(transition) {
                let named = self.canonical_str(named);
                self.record_in_history(&named, seq);
            }
        }
        self.seq = seq;
        self.at = Some(at);
        transitions
    }

    /// The change with its strings shared: its uid, its owner's uid and its claim-uid
    /// label point to the uids' own texts when known, and recurring values (namespace,
    /// API version, owner group and kind, phases, policies) come from the interner.
    fn shared_strings(&self, mut change: ObjectChange) -> ObjectChange {
        change.uid = self.canonical(&change.uid);
        change.api_version = intern::shared(&change.api_version);
        change.namespace = intern::shared(&change.namespace);
        if let Some(owner) = change.controller.as_mut() {
            owner.uid = self.canonical(&owner.uid);
            owner.group = intern::shared(&owner.group);
            owner.kind = intern::shared(&owner.kind);
        }
        intern::share_fields(&mut change.fields, |uid| self.canonical(uid));
        self.share_with_family(&mut change);
        change
    }

    /// Points the names and ids `change` repeats at the copies the projection holds: an
    /// owner reference names its owner, a pod is named after its Sandbox (whose
    /// annotation names the pod), a claim's status names its Sandbox, and an update
    /// repeats the record it replaces (whose name the name index holds). A reopened ledger
    /// held three copies of a name per live object before, a heap block each; a snapshot
    /// keeps the sharing (it writes a string its records share once).
    fn share_with_family(&self, change: &mut ObjectChange) {
        let mut known = intern::Known::new();
        let previous = self.object(change.uid.as_str());
        let owner = change
            .controller
            .as_ref()
            .and_then(|owner| self.object(owner.uid.as_str()));
        for record in previous.into_iter().chain(owner) {
            intern::remember_family_strings(&record.current, &mut known);
        }
        // The name index holds a new uid's name when an earlier uid had it, and a claim's
        // Sandbox by name.
        let new_uid = previous.is_none().then_some((change.kind, &change.name));
        let claimed = match &change.fields {
            KindFields::SandboxClaim {
                status_sandbox_name: Some(sandbox),
                ..
            } => Some((ObjectKind::Sandbox, sandbox)),
            _ => None,
        };
        for (kind, name) in new_uid.into_iter().chain(claimed) {
            known.extend(self.names.key_of(kind, &change.namespace, name));
        }
        intern::share_family_strings(change, &known);
    }

    fn children_of_kind(&self, owner: &str, kind: ObjectKind) -> Vec<Text> {
        self.uids
            .get(owner)
            .into_iter()
            .flat_map(|state| state.children.iter())
            .filter(|uid| self.object(uid).is_some_and(|r| r.current.kind == kind))
            .cloned()
            .collect()
    }

    fn collect_pods_of_sandbox(&self, sandbox: &str, pods: &mut BTreeSet<Text>) {
        pods.extend(self.children_of_kind(sandbox, ObjectKind::Pod));
    }

    /// The live PVCs a Sandbox controls: in its own namespace only, since a claim made
    /// elsewhere naming it by uid is no workspace of it (owner references do not cross
    /// namespaces) and must neither join nor break its binding.
    fn live_pvcs_of(&self, sandbox: &str) -> Vec<&ObjectRecord> {
        let Some(state) = self.uids.get(sandbox) else {
            return Vec::new();
        };
        let namespace = state.object.as_ref().map(|s| &s.current.namespace);
        state
            .children
            .iter()
            .filter_map(|uid| self.object(uid))
            .filter(|r| r.current.kind == ObjectKind::PersistentVolumeClaim && !r.gone())
            .filter(|r| namespace.is_none_or(|namespace| r.current.namespace == *namespace))
            .collect()
    }
    fn reevaluate(
        &mut self,
        pod_uid: &str,
        seq: u64,
        at: DateTime<Utc>,
        out: &mut Vec<Transition>,
    ) {
        let status = self
            .structural(pod_uid, None)
            .map(|s| Self::summary(&s, self.live_pvcs_of(&s.sandbox.current.uid)));
        let active = self
            .bindings_of(pod_uid)
            .last()
            .filter(|r| r.ended_seq.is_none())
            .cloned();
        match (active, status) {
            (None, Ok(formed)) => self.form_binding(pod_uid, formed, seq, at, out),
            (Some(active), Ok(formed))
                if active.sandbox_uid == formed.sandbox_uid
                    && active.claim_uid == formed.claim_uid =>
            {
                if let Some(claim) = &formed.claim_uid {
                    self.mark_bound_under(claim, pod_uid, &formed);
                }
                if active.sandbox_id == formed.sandbox_id || active.mutated {
                    return;
                }
                let pod_uid = self.canonical_str(pod_uid);
                let record = self.state_mut(&pod_uid).bindings.last_mut();
                let Some(record) = record else { return };
                if active.sandbox_id.is_none() {
                    // On the warm path the claim injects the gateway identity after the
                    // binding forms: the first value is an assignment, not a mutation.
                    record.sandbox_id = formed.sandbox_id;
                    return;
                }
                record.mutated = true;
                out.push(Transition::IdentityMutated {
                    pod_uid: pod_uid.to_string(),
                    from: active.sandbox_id.map(String::from),
                    to: formed.sandbox_id.map(String::from),
                });
            }
            (Some(active), Ok(formed)) => {
                self.end_binding(pod_uid, &active, Reason::BindingReleased, seq, out);
                self.form_binding(pod_uid, formed, seq, at, out);
            }
            (Some(active), Err(failure)) => {
                self.end_binding(pod_uid, &active, failure.reason, seq, out);
                self.record_violation(failure, out);
            }
            (None, Err(failure)) => self.record_violation(failure, out),
        }
    }

    /// Builds the pending answers of this state on a thread of their own, so an open
    /// answers checks before they are built (each reader computes its own answer until
    /// then) and the writer's first change waits for them instead of building them again.
    pub(crate) fn build_answers_in_background(&self) {
        let Some(cell) = self.answers.unbuilt() else {
            return;
        };
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("claim-ledger-answers".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let answers = cell.get_or_init(|| state.build_answers());
                tracing::debug!(
                    seq = state.seq,
                    bound_pods = answers.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "answers of bound pods built"
                );
            });
        // Without a thread the writer builds them before its first change, as before.
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the thread that builds the answers of bound pods");
        }
    }

    /// An empty projection whose answers of bound pods are pending: a replay that needs
    /// none of them (verification, a state "as of", the walk an open builds them after)
    /// leaves them alone instead of keeping them current at every change.
    pub(crate) fn unanswered() -> Projection {
        Projection {
            answers: Answers::pending(),
            ..Projection::default()
        }
    }

    /// Whether this state's records, name index and volumes hold a snapshot's as decoded.
    #[cfg(test)]
    pub(crate) fn is_decoded(&self) -> bool {
        self.uids.is_decoded() && self.names.is_decoded() && self.volumes.is_decoded()
    }

    /// Whether `apply` keeps the answers of bound pods current (not pending).
    #[cfg(test)]
    pub(crate) fn answers_are_kept(&self) -> bool {
        matches!(self.answers, Answers::Kept(_))
    }

    /// Settles pending answers before a change: a built or shared cell holds the answers
    /// of the state before it, which the change then keeps current (waiting for the
    /// thread building them, or building them here if none is).
    fn settle_answers(&mut self) {
        if let Some(cell) = self.answers.to_settle() {
            let built = cell.get_or_init(|| self.build_answers()).clone();
            self.answers = Answers::Kept(built);
        }
    }

    /// The answers of bound pods: the map when there is one, else built here (a reader
    /// of a pending state that needs all of them).
    fn answer_map(&self) -> std::borrow::Cow<'_, AnswerMap> {
        match self.answers.map() {
            Some(map) => std::borrow::Cow::Borrowed(map),
            None => std::borrow::Cow::Owned(self.build_answers()),
        }
    }

    /// The answer of one pod whose latest binding is active: from the map, or computed
    /// from its records while the answers are pending.
    fn answer_of(&self, pod_uid: &str) -> Option<std::borrow::Cow<'_, ActiveView>> {
        match self.answers.map() {
            Some(map) => map.get(pod_uid).map(std::borrow::Cow::Borrowed),
            None => self.active_view_of(pod_uid).map(std::borrow::Cow::Owned),
        }
    }

    /// Every bound pod's answer.
    fn build_answers(&self) -> AnswerMap {
        // Each answer reads the projection only, so they are computed on every core (a
        // snapshot of 200k bound pods is loaded in a fraction of the time), then stored.
        let pods: Vec<(&Text, &UidState)> = self
            .uids
            .iter()
            .filter(|(_, state)| !state.bindings.is_empty())
            .map(|(uid, state)| (uid, &**state))
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let per_thread = pods.len().div_ceil(threads).max(1);
        let answers: Vec<(Text, ActiveView)> = std::thread::scope(|scope| {
            let parts: Vec<_> = pods
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|(uid, pod)| {
                                Some(((*uid).clone(), self.active_view_in(pod)?))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        answers.into_iter().collect()
    }

    /// The cached answer for a pod whose latest binding is active.
    fn active_view_of(&self, pod_uid: &str) -> Option<ActiveView> {
        self.active_view_in(self.uids.get(pod_uid)?)
    }

    /// [`Projection::active_view_of`] the pod whose record is `pod` (one lookup fewer:
    /// a snapshot's 200k bound pods are answered at every open).
    fn active_view_in(&self, pod: &UidState) -> Option<ActiveView> {
        let record = pod.bindings.last().filter(|r| r.ended_seq.is_none())?;
        Some(ActiveView {
            view: Arc::new(self.binding_view(pod.object.as_ref()?, record)?),
            mutated: record.mutated,
        })
    }

    /// Brings a pod's kept answer up to date after a change (nothing while the answers
    /// are pending).
    fn refresh_active_view(&mut self, pod_uid: &str) {
        if self.answers.kept_mut().is_none() {
            return;
        }
        match self.active_view_of(pod_uid) {
            Some(fresh) => {
                if self.answers.map().and_then(|kept| kept.get(pod_uid)) != Some(&fresh) {
                    let pod_uid = self.canonical_str(pod_uid);
                    if let Some(kept) = self.answers.kept_mut() {
                        kept.insert(pod_uid, fresh);
                    }
                }
            }
            None => {
                if let Some(kept) = self.answers.kept_mut() {
                    kept.remove(pod_uid);
                }
            }
        }
    }

    fn summary(structural: &Structural<'_>, pvcs: Vec<&ObjectRecord>) -> Formed {
        Formed {
            kind: structural.kind,
            sandbox_uid: structural.sandbox.current.uid.clone(),
            claim_uid: structural.claim.map(|c| c.current.uid.clone()),
            sandbox_id: pod_sandbox_id(structural.pod).cloned(),
            pvcs: pvcs
                .into_iter()
                .map(|p| (p.current.uid.clone(), volume_of(p).cloned()))
                .collect(),
        }
    }

    fn form_binding(
        &mut self,
        pod_uid: &str,
        formed: Formed,
        seq: u64,
        at: DateTime<Utc>,
        out: &mut Vec<Transition>,
    ) {
        if let Some(claim) = &formed.claim_uid {
            self.mark_bound_under(claim, pod_uid, &formed);
        }
        out.push(Transition::Bound {
            binding: formed.kind,
            pod_uid: pod_uid.to_string(),
            sandbox_uid: formed.sandbox_uid.to_string(),
            claim_uid: formed.claim_uid.as_ref().map(Text::to_string),
        });
        let pod_uid = self.canonical_str(pod_uid);
        let bindings = &mut self.state_mut(&pod_uid).bindings;
        make_room(bindings);
        bindings.push(BindingRecord {
            kind: formed.kind,
            sandbox_uid: formed.sandbox_uid,
            claim_uid: formed.claim_uid,
            sandbox_id: formed.sandbox_id,
            since_seq: seq,
            since: at,
            ended_seq: None,
            mutated: false,
        });
    }

    fn end_binding(
        &mut self,
        pod_uid: &str,
        active: &BindingRecord,
        reason: Reason,
        seq: u64,
        out: &mut Vec<Transition>,
    ) {
        let pod = self.canonical_str(pod_uid);
        if let Some(record) = self.state_mut(&pod).bindings.last_mut() {
            record.ended_seq = Some(seq);
        }
        out.push(Transition::Released {
            pod_uid: pod_uid.to_string(),
            sandbox_uid: active.sandbox_uid.to_string(),
            claim_uid: active.claim_uid.as_ref().map(Text::to_string),
            reason,
        });
    }

    /// Single use: the first claim a sandbox, pod, PVC or PV was bound under is kept forever.
    fn mark_bound_under(&mut self, claim: &Text, pod_uid: &str, formed: &Formed) {
        let claim = self.canonical(claim);
        // Read first: a pod's every event marks the same uids again.
        let mark = |this: &mut Self, uid: &Text| {
            if this.bound_under(uid).is_none() {
                let uid = this.canonical(uid);
                this.state_mut(&uid).bound_under = Some(claim.clone());
            }
        };
        mark(self, &Text::from(pod_uid));
        mark(self, &formed.sandbox_uid);
        for (pvc, _) in &formed.pvcs {
            mark(self, pvc);
        }
        for volume in formed.pvcs.iter().filter_map(|(_, v)| v.as_ref()) {
            let marked = self
                .volumes
                .get(volume)
                .is_some_and(|record| record.first_claim_uid.is_some());
            if marked {
                continue;
            }
            let record = self.volumes.get_or_default_mut(volume);
            if record.first_claim_uid.is_none() {
                record.first_claim_uid = Some(claim.clone());
            }
        }
    }

    /// The claim `uid` was first bound under, if it ever was.
    fn bound_under(&self, uid: &str) -> Option<&Text> {
        self.uids.get(uid)?.bound_under.as_ref()
    }

    fn record_violation(&mut self, failure: Failure, out: &mut Vec<Transition>) {
        let Some(violation) = failure.violation else {
            return;
        };
        let key = match violation.as_ref() {
            Transition::SingleUseViolation {
                uid, new_claim_uid, ..
            } => (Text::from(uid), Text::from(new_claim_uid)),
            Transition::WorkspaceReused {
                pvc_uid,
                new_claim_uid,
                ..
            } => (Text::from(pvc_uid), Text::from(new_claim_uid)),
            _ => return,
        };
        if self.violations.insert(key).is_none() {
            out.push(*violation);
        }
    }

    /// A workspace PVC that was part of a binding and outlives its sandbox or its claim is
    /// reported once, when an event shows it surviving: the PVC itself left ownerless or
    /// naming a Sandbox that is gone (orphan propagation strips dependents'
    /// ownerReferences before the owner goes, as Retain expiry does), or a bound Sandbox left
    /// ownerless, its PVCs alive (a claim deleted with orphan propagation). A Sandbox's
    /// removal alone proves nothing: background GC deletes the Sandbox before its PVC.
    fn detect_orphans(
        &mut self,
        change: &ObjectChange,
        previous_controller: Option<&str>,
        out: &mut Vec<Transition>,
    ) {
        let candidates: Vec<(Text, Text)> = match change.kind {
            ObjectKind::Sandbox
                if !change.change.is_removal()
                    && change.controller.is_none()
                    && previous_controller.is_some()
                    && self.bound_under(&change.uid).is_some() =>
            {
                self.live_pvcs_of(&change.uid)
                    .into_iter()
                    .map(|pvc| (pvc.current.uid.clone(), change.uid.clone()))
                    .collect()
            }
            // A terminating PVC is on its way out with its Sandbox, not outliving it.
            ObjectKind::PersistentVolumeClaim
                if !change.change.is_removal() && !change.is_terminating() =>
            {
                // An ambiguous controller (several references) outlives its Sandboxes only
                // when every one it names is gone.
                let sandbox_gone = match &change.controller {
                    Some(owner) => owner
                        .linked_uids()
                        .iter()
                        .all(|uid| self.object(uid).is_none_or(|s| s.gone())),
                    None => true,
                };
                let previous_owner = self
                    .object(&change.uid)
                    .and_then(|r| r.current.controller.as_ref())
                    .and_then(|c| c.linked_uids().into_iter().next())
                    .unwrap_or_default();
                if sandbox_gone {
                    vec![(change.uid.clone(), previous_owner)]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        for (pvc_uid, sandbox_uid) in candidates {
            if self.bound_under(&pvc_uid).is_some()
                && self.orphaned.insert(pvc_uid.clone()).is_none()
            {
                out.push(Transition::WorkspaceOrphaned {
                    pvc_uid: pvc_uid.to_string(),
                    sandbox_uid: sandbox_uid.to_string(),
                });
            }
        }
    }

    /// Checks 1-5 of the binding rule for a known pod uid; `expected_claim` adds the
    /// caller's claim uid to check 4.
    fn structural(
        &self,
        pod_uid: &str,
        expected_claim: Option<&str>,
    ) -> Result<Structural<'_>, Failure> {
        let pod = self
            .object(pod_uid)
            .filter(|r| r.current.kind == ObjectKind::Pod)
            .ok_or_else(|| gone(Reason::UnknownPod, "the ledger never recorded this pod uid"))?;
        if pod.gone() {
            return Err(gone(Reason::UnknownPod, "the pod was deleted"));
        }
        if pod.current.is_terminating() {
            return Err(fail(Reason::PodTerminating, "the pod is terminating"));
        }
        untrusted_controller(pod)?;
        let owner = pod
            .current
            .controller
            .as_ref()
            .filter(|c| c.is_sandbox())
            .ok_or_else(|| {
                gone(
                    Reason::OwnerChainBroken,
                    "the pod has no Sandbox controller",
                )
            })?;
        let sandbox = self
            .object(&owner.uid)
            .filter(|s| s.current.kind == ObjectKind::Sandbox && !s.gone())
            .ok_or_else(|| {
                gone(
                    Reason::OwnerChainBroken,
                    format!(
                        "the pod's Sandbox uid {} is not alive in the ledger",
                        owner.uid
                    ),
                )
            })?;
        // Owner references never cross namespaces (Kubernetes' garbage collector treats
        // one that does as absent), but the API server stores them: a pod elsewhere naming
        // a tenant's Sandbox by uid must not borrow its binding.
        if sandbox.current.namespace != pod.current.namespace {
            return Err(fail(
                Reason::OwnerChainBroken,
                format!(
                    "the pod's Sandbox uid {} is in namespace {}, not the pod's {}",
                    owner.uid, sandbox.current.namespace, pod.current.namespace
                ),
            ));
        }
        if sandbox.current.is_terminating() {
            return Err(fail(
                Reason::OwnerChainBroken,
                "the pod's Sandbox is terminating",
            ));
        }
        untrusted_controller(sandbox)?;
        let KindFields::Sandbox {
            claim_uid_label,
            sandbox_id_label,
            ..
        } = &sandbox.current.fields
        else {
            return Err(fail(
                Reason::OwnerChainBroken,
                "the pod's owner is not a Sandbox",
            ));
        };

        let controller = match &sandbox.current.controller {
            None => {
                let Some(label) = sandbox_id_label else {
                    return Err(gone(
                        Reason::NotClaimed,
                        "the Sandbox has no controller and no sandbox-id label",
                    ));
                };
                if pod_sandbox_id(pod) != Some(label) {
                    return Err(fail(
                        Reason::SandboxIdMismatch,
                        "the pod's sandbox-id annotation differs from its direct Sandbox's label",
                    ));
                }
                for pvc in self.live_pvcs_of(&sandbox.current.uid) {
                    untrusted_controller(pvc)?;
                }
                for (kind, uid) in [
                    (ObjectKind::Sandbox, &sandbox.current.uid),
                    (ObjectKind::Pod, &pod.current.uid),
                ] {
                    if let Some(first) = self.bound_under(uid) {
                        return Err(fail(
                            Reason::SingleUseViolation,
                            format!("this {kind} was bound under claim {first} before"),
                        ));
                    }
                }
                return Ok(Structural {
                    kind: BindingKind::Direct,
                    pod,
                    sandbox,
                    claim: None,
                });
            }
            Some(controller) => controller,
        };
        if controller.is_warm_pool() {
            return Err(fail(
                Reason::NotClaimed,
                "the Sandbox is warm: owned by a SandboxWarmPool",
            ));
        }
        if !controller.is_claim() {
            return Err(fail(
                Reason::OwnerChainBroken,
                format!(
                    "the Sandbox's controller is a {} {}",
                    controller.group, controller.kind
                ),
            ));
        }
        let claim = self
            .object(&controller.uid)
            .filter(|c| c.current.kind == ObjectKind::SandboxClaim && !c.gone())
            .ok_or_else(|| {
                gone(
                    Reason::OwnerChainBroken,
                    format!(
                        "the Sandbox's claim uid {} is not alive in the ledger",
                        controller.uid
                    ),
                )
            })?;
        untrusted_controller(claim)?;
        if claim_uid_label
            .as_ref()
            .is_some_and(|label| *label != controller.uid)
        {
            return Err(fail(
                Reason::ClaimUidMismatch,
                "the Sandbox's claim-uid label differs from its controller claim",
            ));
        }
        if claim.current.is_terminating() {
            return Err(fail(Reason::ClaimTerminating, "the claim is terminating"));
        }
        let status_name = match &claim.current.fields {
            KindFields::SandboxClaim {
                status_sandbox_name,
                ..
            } => status_sandbox_name.as_deref(),
            _ => None,
        };
        if status_name != Some(sandbox.current.name.as_str())
            || claim.current.namespace != sandbox.current.namespace
        {
            return Err(fail(
                Reason::ClaimStatusMismatch,
                format!(
                    "the claim's status.sandbox.name is {:?}, not {:?}",
                    status_name.unwrap_or(""),
                    sandbox.current.name
                ),
            ));
        }
        if let Some(expected) = expected_claim {
            if expected != claim.current.uid {
                return Err(fail(
                    Reason::ClaimUidMismatch,
                    format!(
                        "the claim {} now has uid {}",
                        claim.current.name, claim.current.uid
                    ),
                ));
            }
        }
        let claim_uid = &claim.current.uid;
        for (kind, uid) in [
            (ObjectKind::Sandbox, &sandbox.current.uid),
            (ObjectKind::Pod, &pod.current.uid),
        ] {
            if let Some(first) = self.bound_under(uid).filter(|first| *first != claim_uid) {
                return Err(Failure {
                    reason: Reason::SingleUseViolation,
                    detail: format!("this {kind} was bound under claim {first} before"),
                    link_gone: false,
                    violation: Some(Box::new(Transition::SingleUseViolation {
                        kind,
                        uid: uid.to_string(),
                        first_claim_uid: first.to_string(),
                        new_claim_uid: claim_uid.to_string(),
                    })),
                });
            }
        }
        for pvc in self.live_pvcs_of(&sandbox.current.uid) {
            untrusted_controller(pvc)?;
            let volume = volume_of(pvc);
            let first = self
                .bound_under(&pvc.current.uid)
                .filter(|first| *first != claim_uid);
            let through_volume = volume
                .and_then(|v| self.volumes.get(v))
                .and_then(|v| v.first_claim_uid.as_ref())
                .filter(|first| *first != claim_uid);
            let (first, via_volume) = match (first, through_volume) {
                (Some(first), _) => (first, false),
                (None, Some(first)) => (first, true),
                (None, None) => continue,
            };
            {
                return Err(Failure {
                    reason: Reason::WorkspaceReused,
                    detail: format!(
                        "workspace PVC {} (volume {}) was bound under claim {first} before",
                        pvc.current.name,
                        volume.map_or("-", Text::as_str)
                    ),
                    link_gone: false,
                    violation: Some(Box::new(Transition::WorkspaceReused {
                        pvc_uid: pvc.current.uid.to_string(),
                        volume_name: via_volume.then(|| volume.map(Text::to_string)).flatten(),
                        first_claim_uid: first.to_string(),
                        new_claim_uid: claim_uid.to_string(),
                    })),
                });
            }
        }
        Ok(Structural {
            kind: BindingKind::Claim,
            pod,
            sandbox,
            claim: Some(claim),
        })
    }

    /// The binding rule for one request (DOMAIN.md §4), as of this projection.
    /// `ready` is the freshness check 7, supplied by whoever knows the watchers' state.
    pub fn check(&self, request: &CheckRequest, ready: bool) -> Decision {
        let deny = |reason: Reason, detail: String| self.denied(reason, detail);
        if !ready {
            return deny(Reason::LedgerNotReady, "the watchers are not synced".into());
        }
        // A namespace the watcher no longer watches is not seen any more: what the ledger
        // recorded of it may be stale (a pod deleted since), so it is not answered from.
        if let Some(watched) = self.watched.as_ref().filter(|w| !w.is_empty()) {
            if !watched.contains(&request.namespace) {
                return deny(
                    Reason::LedgerNotReady,
                    format!(
                        "namespace {} is not watched by this ledger (it watches {})",
                        request.namespace,
                        watched.join(", ")
                    ),
                );
            }
        }
        if let Some(min_seq) = request.min_seq.filter(|min| *min > self.seq) {
            return deny(
                Reason::LedgerBehind,
                format!(
                    "this ledger is at seq {}, the caller asked for {min_seq}",
                    self.seq
                ),
            );
        }
        let name_holder = || {
            self.uid_of(ObjectKind::Pod, &request.namespace, &request.pod_name)
                .filter(|uid| *uid != request.pod_uid)
                .and_then(|uid| self.object(uid))
                .filter(|r| !r.gone())
        };
        let Some(pod) = self
            .object(&request.pod_uid)
            .filter(|r| r.current.kind == ObjectKind::Pod)
        else {
            return match name_holder() {
                Some(holder) => deny(
                    Reason::PodUidMismatch,
                    format!(
                        "pod {}/{} is uid {}",
                        request.namespace, request.pod_name, holder.current.uid
                    ),
                ),
                None => deny(
                    Reason::UnknownPod,
                    "the ledger never recorded this pod uid".into(),
                ),
            };
        };
        if pod.current.namespace != request.namespace || pod.current.name != request.pod_name {
            return deny(
                Reason::PodUidMismatch,
                format!(
                    "uid {} is pod {}/{}",
                    pod.current.uid, pod.current.namespace, pod.current.name
                ),
            );
        }
        if let Some(active) = self.answer_of(&request.pod_uid) {
            return self.check_bound(request, &active);
        }
        let ever_bound = !self.bindings_of(&request.pod_uid).is_empty();
        let structural = match self.structural(&request.pod_uid, request.claim_uid.as_deref()) {
            Ok(structural) => structural,
            Err(failure) => {
                if failure.link_gone && ever_bound {
                    return deny(
                        Reason::BindingReleased,
                        format!(
                            "this pod uid was bound and no longer is: {}",
                            failure.detail
                        ),
                    );
                }
                if failure.reason == Reason::UnknownPod {
                    if let Some(holder) = name_holder() {
                        return deny(
                            Reason::PodUidMismatch,
                            format!(
                                "pod {}/{} is now uid {}",
                                request.namespace, request.pod_name, holder.current.uid
                            ),
                        );
                    }
                }
                return deny(failure.reason, failure.detail);
            }
        };
        // Structurally bound yet no active view: `apply` keeps the two in step, so this
        // would be a projection bug. Fail closed.
        let _ = structural;
        self.denied(
            Reason::OwnerChainBroken,
            "no binding was recorded for this pod".into(),
        )
    }

    /// Checks 4 (caller's claim), 6 (identity) and the caller's expectations against the
    /// cached answer of a bound pod.
    fn check_bound(&self, request: &CheckRequest, active: &ActiveView) -> Decision {
        let view = &active.view;
        if view.kind == BindingKind::Direct && request.require_claim {
            return self.denied(
                Reason::NotClaimed,
                "a directly created Sandbox; the caller requires a claim".into(),
            );
        }
        if let Some(expected) = &request.claim_uid {
            let actual = view.claim.as_ref().map(|c| c.uid.as_str());
            if actual != Some(expected.as_str()) {
                return self.denied(
                    Reason::ClaimUidMismatch,
                    format!(
                        "the pod is bound through claim uid {:?}",
                        actual.unwrap_or("")
                    ),
                );
            }
        }
        if active.mutated {
            return self.denied(
                Reason::IdentityMutated,
                "the pod's sandbox-id annotation changed after the binding began".into(),
            );
        }
        let mismatch = [
            (
                request.sandbox_id.as_deref(),
                view.sandbox_id.as_deref(),
                "sandbox id",
            ),
            (
                request.sandbox_name.as_deref(),
                Some(view.sandbox.name.as_str()),
                "Sandbox name",
            ),
            (
                request.sandbox_uid.as_deref(),
                Some(view.sandbox.uid.as_str()),
                "Sandbox uid",
            ),
        ]
        .into_iter()
        .find(|(asked, actual, _)| asked.is_some() && asked != actual);
        if let Some((asked, actual, what)) = mismatch {
            return self.denied(
                Reason::SandboxIdMismatch,
                format!(
                    "the caller expects {what} {:?}, the pod has {:?}",
                    asked.unwrap_or(""),
                    actual.unwrap_or("")
                ),
            );
        }
        Decision {
            decision: Verdict::Allow,
            reason: None,
            detail: None,
            binding: Some(Arc::clone(view)),
            seq: self.seq,
        }
    }

    fn denied(&self, reason: Reason, detail: String) -> Decision {
        Decision {
            decision: if matches!(reason, Reason::LedgerNotReady | Reason::LedgerBehind) {
                Verdict::NotReady
            } else {
                Verdict::Deny
            },
            reason: Some(reason),
            detail: Some(detail),
            binding: None,
            seq: self.seq,
        }
    }

    /// The answer for the pod whose record is `pod`, bound as `record` says.
    fn binding_view(&self, pod: &ObjectRecord, record: &BindingRecord) -> Option<BindingView> {
        let view = |r: &ObjectRecord| ObjectView {
            namespace: r.current.namespace.clone(),
            name: r.current.name.clone(),
            uid: r.current.uid.clone(),
        };
        let sandbox = self.object(&record.sandbox_uid)?;
        Some(BindingView {
            kind: record.kind,
            pod: view(pod),
            sandbox: view(sandbox),
            claim: record
                .claim_uid
                .as_ref()
                .and_then(|c| self.object(c))
                .map(view),
            pvcs: self
                .live_pvcs_of(&record.sandbox_uid)
                .into_iter()
                .map(view)
                .collect(),
            sandbox_id: pod_sandbox_id(pod).cloned(),
            since_seq: record.since_seq,
            since: record.since,
        })
    }
}

/// What a structural pass yields, owned so the projection can be mutated after.
struct Formed {
    kind: BindingKind,
    sandbox_uid: Text,
    claim_uid: Option<Text>,
    sandbox_id: Option<Text>,
    pvcs: Vec<(Text, Option<Text>)>,
}

/// Refuses an object recorded with several controller references (the marker of
/// `OwnerRef::ambiguous`): a real API server never stores one, so its owner chain cannot be
/// trusted, whichever reference comes first. Not a gone link: a pod that was bound answers
/// `OWNER_CHAIN_BROKEN` with this detail, not `BINDING_RELEASED`.
fn untrusted_controller(record: &ObjectRecord) -> Result<(), Failure> {
    let Some(count) = record
        .current
        .controller
        .as_ref()
        .and_then(|c| c.ambiguous_count())
    else {
        return Ok(());
    };
    let what = match record.current.kind {
        ObjectKind::Pod => "pod",
        ObjectKind::Sandbox => "Sandbox",
        ObjectKind::SandboxClaim => "claim",
        ObjectKind::PersistentVolumeClaim => "workspace PVC",
    };
    let count = match count {
        0 => "several".to_string(),
        n => n.to_string(),
    };
    Err(fail(
        Reason::OwnerChainBroken,
        format!(
            "{what} {}/{} has {count} controller references",
            record.current.namespace, record.current.name
        ),
    ))
}

fn pod_sandbox_id(pod: &ObjectRecord) -> Option<&Text> {
    match &pod.current.fields {
        KindFields::Pod {
            sandbox_id_annotation,
            ..
        } => sandbox_id_annotation.as_ref(),
        _ => None,
    }
}

fn volume_of(pvc: &ObjectRecord) -> Option<&Text> {
    match &pvc.current.fields {
        KindFields::PersistentVolumeClaim { volume_name, .. } => volume_name.as_ref(),
        _ => None,
    }
}

/// The uids a transition names.
fn transition_uids(transition: &Transition) -> Vec<&str> {
    match transition {
        Transition::Bound {
            pod_uid,
            sandbox_uid,
            claim_uid,
            ..
        }
        | Transition::Released {
            pod_uid,
            sandbox_uid,
            claim_uid,
            ..
        } => [Some(pod_uid), Some(sandbox_uid), claim_uid.as_ref()]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect(),
        Transition::SingleUseViolation {
            uid,
            first_claim_uid,
            new_claim_uid,
            ..
        } => vec![uid, first_claim_uid, new_claim_uid],
        Transition::WorkspaceReused {
            pvc_uid,
            first_claim_uid,
            new_claim_uid,
            ..
        } => vec![pvc_uid, first_claim_uid, new_claim_uid],
        Transition::WorkspaceOrphaned {
            pvc_uid,
            sandbox_uid,
        } => vec![pvc_uid, sandbox_uid],
        Transition::IdentityMutated { pod_uid, .. } => vec![pod_uid],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use schemas::{normalize, WatchEventType};
    use serde_json::{json, Value};

    const SB: &str = "agents.x-k8s.io/v1alpha1";
    const EXT: &str = "extensions.agents.x-k8s.io/v1alpha1";

    fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
               "controller": true})
    }

    fn meta(name: &str, uid: &str, rv: u64, owners: Vec<Value>) -> Value {
        json!({"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv.to_string(),
               "ownerReferences": owners})
    }

    fn claim(name: &str, uid: &str, rv: u64, sandbox: &str) -> Value {
        json!({"apiVersion": EXT, "kind": "SandboxClaim", "metadata": meta(name, uid, rv, vec![]),
               "spec": {"sandboxTemplateRef": {"name": "t"}},
               "status": {"sandbox": {"name": sandbox}}})
    }

    fn sandbox(name: &str, uid: &str, rv: u64, owners: Vec<Value>) -> Value {
        json!({"apiVersion": SB, "kind": "Sandbox", "metadata": meta(name, uid, rv, owners),
               "spec": {"volumeClaimTemplates": [{"metadata": {"name": "ws"}}]}})
    }

    fn pod(name: &str, uid: &str, rv: u64, owners: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, uid, rv, owners)})
    }

    fn pvc(name: &str, uid: &str, rv: u64, owners: Vec<Value>, volume: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": meta(name, uid, rv, owners), "spec": {"volumeName": volume}})
    }

    struct Run {
        projection: Projection,
        seq: u64,
        transitions: Vec<Transition>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                projection: Projection::default(),
                seq: 0,
                transitions: Vec::new(),
            }
        }

        fn apply(&mut self, object: Value) -> Vec<Transition> {
            let change = normalize(WatchEventType::Modified, &object)
                .unwrap()
                .unwrap();
            self.seq += 1;
            let at = Utc
                .timestamp_opt(1_800_000_000 + self.seq as i64, 0)
                .unwrap();
            let transitions = self.projection.apply(self.seq, at, &change);
            self.transitions.extend(transitions.clone());
            transitions
        }

        fn check(&self, name: &str, uid: &str) -> Decision {
            let request = CheckRequest {
                namespace: "ns".into(),
                pod_name: name.into(),
                pod_uid: uid.into(),
                require_claim: true,
                ..CheckRequest::default()
            };
            self.projection.check(&request, true)
        }

        fn expect(&self, name: &str, uid: &str, reason: Option<Reason>, detail: &str) {
            let decision = self.check(name, uid);
            assert_eq!(decision.reason, reason, "{decision:?}");
            let text = decision.detail.unwrap_or_default();
            assert!(text.contains(detail), "{text:?} should contain {detail:?}");
        }

        /// Claim c (claim-1) holding Sandbox sb (sb-1) with pod p (pod-1) and PVC ws-sb
        /// (pvc-1, volume pv-1): bound.
        fn bound() -> Run {
            let mut run = Run::new();
            run.apply(claim("c", "claim-1", 1, "sb"));
            run.apply(sandbox(
                "sb",
                "sb-1",
                2,
                vec![owner(EXT, "SandboxClaim", "c", "claim-1")],
            ));
            run.apply(pvc(
                "ws-sb",
                "pvc-1",
                3,
                vec![owner(SB, "Sandbox", "sb", "sb-1")],
                "pv-1",
            ));
            run.apply(pod(
                "p",
                "pod-1",
                4,
                vec![owner(SB, "Sandbox", "sb", "sb-1")],
            ));
            assert_eq!(run.check("p", "pod-1").decision, Verdict::Allow);
            run
        }

        /// A second claim c2 (claim-2) holding Sandbox sb2 (sb-2) with pod p2 (pod-2): bound.
        fn bind_second(&mut self) {
            self.apply(claim("c2", "claim-2", 10, "sb2"));
            self.apply(sandbox(
                "sb2",
                "sb-2",
                11,
                vec![owner(EXT, "SandboxClaim", "c2", "claim-2")],
            ));
            self.apply(pod(
                "p2",
                "pod-2",
                12,
                vec![owner(SB, "Sandbox", "sb2", "sb-2")],
            ));
            assert_eq!(self.check("p2", "pod-2").decision, Verdict::Allow);
        }
    }

    /// `object` moved to namespace `namespace`.
    fn in_namespace(mut object: Value, namespace: &str) -> Value {
        object["metadata"]["namespace"] = json!(namespace);
        object
    }

    #[test]
    fn owner_references_across_namespaces_neither_bind_nor_break_a_binding() {
        let mut run = Run::bound();
        // A pod in another namespace naming the tenant's Sandbox by uid.
        run.apply(in_namespace(
            pod("p", "pod-x", 20, vec![owner(SB, "Sandbox", "sb", "sb-1")]),
            "evil",
        ));
        let request = CheckRequest {
            namespace: "evil".into(),
            pod_name: "p".into(),
            pod_uid: "pod-x".into(),
            require_claim: true,
            ..CheckRequest::default()
        };
        let decision = run.projection.check(&request, true);
        assert_eq!(
            decision.reason,
            Some(Reason::OwnerChainBroken),
            "{decision:?}"
        );
        assert!(
            decision
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("namespace ns, not the pod's evil")),
            "{decision:?}"
        );
        // A PVC elsewhere naming it, on a volume already bound under another claim: the
        // tenant's binding keeps its own workspace and stays allowed.
        run.bind_second();
        run.apply(in_namespace(
            pvc(
                "ws-sb",
                "pvc-x",
                21,
                vec![
                    owner(SB, "Sandbox", "sb", "sb-1"),
                    owner(SB, "Sandbox", "sb2", "sb-2"),
                ],
                "pv-1",
            ),
            "evil",
        ));
        let decision = run.check("p", "pod-1");
        assert_eq!(decision.decision, Verdict::Allow, "{decision:?}");
        assert!(run.projection.live_pvcs_of("sb-1").len() == 1);
        assert!(
            !run.transitions.iter().any(|t| matches!(
                t,
                Transition::Released { .. } | Transition::WorkspaceReused { .. }
            )),
            "{:?}",
            run.transitions
        );
    }

    /// A projection with every index in use: two bindings, a released one, a reused
    /// workspace volume (a violation), an orphaned PVC, a denied check and a watch scope.
    fn every_index_in_use() -> Run {
        let mut run = Run::bound();
        run.bind_second();
        // The first claim goes; its Sandbox is left ownerless (orphan propagation) with
        // its PVC alive: the workspace is orphaned.
        run.apply(sandbox("sb", "sb-1", 20, vec![]));
        // A third Sandbox's PVC lands on the first one's volume: workspace reuse.
        run.apply(claim("c3", "claim-3", 21, "sb3"));
        run.apply(sandbox(
            "sb3",
            "sb-3",
            22,
            vec![owner(EXT, "SandboxClaim", "c3", "claim-3")],
        ));
        run.apply(pvc(
            "ws-sb3",
            "pvc-3",
            23,
            vec![owner(SB, "Sandbox", "sb3", "sb-3")],
            "pv-1",
        ));
        run.apply(pod(
            "p3",
            "pod-3",
            24,
            vec![owner(SB, "Sandbox", "sb3", "sb-3")],
        ));
        run.seq += 1;
        let at = Utc.timestamp_opt(1_800_000_100, 0).unwrap();
        run.projection.apply_change(
            run.seq,
            at,
            &Change::CheckDenied(schemas::CheckDenied {
                pod_uid: "pod-unknown".into(),
                namespace: "ns".into(),
                pod_name: "x".into(),
                reason: Reason::UnknownPod,
                minute: at,
                count: 1,
            }),
        );
        assert!(!run.transitions.is_empty());
        run
    }

    #[test]
    fn every_snapshot_layout_decodes_to_the_projection_it_was_written_from() {
        let run = every_index_in_use();
        let original = &run.projection;
        let layout_three = layout::encode(run.seq, original).unwrap();
        let layout_two = layout::encode_layout_two(run.seq, original).unwrap();
        let layout_one = layout::encode_layout_one(run.seq, original);
        // Back-references: each uid written once (in layout 3, once a part).
        assert!(layout_two.len() < layout_one.len());
        assert!(layout_three.len() < layout_one.len());
        for (layout, bytes) in [("3", layout_three), ("2", layout_two), ("1", layout_one)] {
            let decoded: layout::Snapshot = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(decoded.seq, run.seq, "layout {layout}");
            assert_eq!(&decoded.projection, original, "layout {layout}");
            // Layout 2's and 3's strings are shared after a decode as after `apply`: a
            // uid's record, its owner's record and its name index point at one copy (a
            // pod and its Sandbox are one family, in one part of layout 3; layout 1 has no
            // back-references: its strings decode as copies).
            let pod = decoded.projection.object("pod-2").unwrap();
            let (key, _) = decoded.projection.uids.get_key_value("pod-2").unwrap();
            let owner = pod.current.controller.as_ref().unwrap();
            let (sandbox_key, _) = decoded.projection.uids.get_key_value("sb-2").unwrap();
            let sandbox = decoded.projection.object("sb-2").unwrap();
            let shared = [
                pod.current.uid.shares_storage_with(key),
                owner.uid.shares_storage_with(sandbox_key),
                sandbox
                    .current
                    .namespace
                    .shares_storage_with(&pod.current.namespace),
            ];
            assert_eq!(shared, [layout != "1"; 3], "layout {layout}");
            assert_eq!(
                decoded.projection.check(
                    &CheckRequest {
                        namespace: "ns".into(),
                        pod_name: "p2".into(),
                        pod_uid: "pod-2".into(),
                        require_claim: true,
                        ..CheckRequest::default()
                    },
                    true
                ),
                original.check(
                    &CheckRequest {
                        namespace: "ns".into(),
                        pod_name: "p2".into(),
                        pod_uid: "pod-2".into(),
                        require_claim: true,
                        ..CheckRequest::default()
                    },
                    true
                )
            );
        }
    }

    /// The decisions of checks covering every pod of [`every_index_in_use`] and the
    /// changes of [`later_changes`]: allowed, released, mutated, mismatched names and
    /// claims, unknown.
    fn decisions(projection: &Projection) -> Vec<Decision> {
        let pods = [
            ("p", "pod-1"),
            ("p2", "pod-2"),
            ("p3", "pod-3"),
            ("p4", "pod-4"),
            ("p", "pod-2"),
            ("nobody", "pod-unknown"),
        ];
        let claims = [None, Some("claim-2"), Some("claim-4")];
        pods.iter()
            .flat_map(|(name, uid)| {
                claims.iter().map(move |claim| CheckRequest {
                    namespace: "ns".into(),
                    pod_name: (*name).into(),
                    pod_uid: (*uid).into(),
                    claim_uid: claim.map(String::from),
                    require_claim: true,
                    ..CheckRequest::default()
                })
            })
            .map(|request| projection.check(&request, true))
            .collect()
    }

    /// Changes after [`every_index_in_use`]: a bound pod released, a new binding, then
    /// its pod's sandbox-id annotation changed.
    fn later_changes() -> Vec<Value> {
        let with_sandbox_id = |rv: u64, id: &str| {
            let mut object = pod("p4", "pod-4", rv, vec![owner(SB, "Sandbox", "sb4", "sb-4")]);
            object["metadata"]["annotations"] = json!({"openshell.io/sandbox-id": id});
            object
        };
        vec![
            pod("p2", "pod-2", 30, vec![]),
            claim("c4", "claim-4", 31, "sb4"),
            sandbox(
                "sb4",
                "sb-4",
                32,
                vec![owner(EXT, "SandboxClaim", "c4", "claim-4")],
            ),
            with_sandbox_id(33, "id-4"),
            with_sandbox_id(34, "id-4b"),
        ]
    }

    /// A run from a snapshot of layout 3 at `seq`, as an open decodes it.
    fn decoded(bytes: &[u8], seq: u64) -> Run {
        Run {
            projection: rmp_serde::from_slice::<layout::Snapshot>(bytes)
                .unwrap()
                .projection,
            seq,
            transitions: Vec::new(),
        }
    }

    #[test]
    fn a_decoded_projection_answers_before_its_answers_are_built() {
        let mut kept = every_index_in_use();
        let bytes = layout::encode(kept.seq, &kept.projection).unwrap();
        let decode = || decoded(&bytes, kept.seq);
        let before = decisions(&kept.projection);
        assert!(before.iter().any(|d| d.decision == Verdict::Allow));
        assert!(kept.projection.answers.kept_mut().is_some());

        // Pending: each check computes its own answer.
        let pending = decode();
        assert!(pending.projection.answers.map().is_none());
        assert_eq!(decisions(&pending.projection), before);
        assert_eq!(
            pending.projection.active_bindings(),
            kept.projection.active_bindings()
        );

        // Changes to a projection no one else holds leave the answers pending (an open's
        // walk of the tail), and every answer still right.
        let mut alone = decode();
        // A published view holds the cell: the first change builds the answers of the
        // state before it for the view, then keeps them.
        let mut published = decode();
        let view = published.projection.clone();
        // A thread builds them (an open): the first change waits for it.
        let mut opened = decode();
        opened.projection.build_answers_in_background();
        for change in later_changes() {
            let expected = kept.apply(change.clone());
            for run in [&mut alone, &mut published, &mut opened] {
                assert_eq!(run.apply(change.clone()), expected);
            }
        }
        let after = decisions(&kept.projection);
        assert!(after
            .iter()
            .any(|d| d.reason == Some(Reason::IdentityMutated)));
        assert!(alone.projection.answers.map().is_none());
        for run in [&alone, &published, &opened] {
            assert_eq!(decisions(&run.projection), after);
            assert_eq!(run.projection, kept.projection);
        }
        for run in [&mut published, &mut opened] {
            let kept_map = run.projection.answers.kept_mut().expect("settled").clone();
            assert_eq!(kept_map, run.projection.build_answers());
        }
        assert_eq!(
            view.answers.map().expect("built for the view"),
            &view.build_answers()
        );
        assert_eq!(decisions(&view), before);
    }

    #[test]
    fn a_decoded_projection_finds_what_it_decoded_and_what_changed_since() {
        let mut kept = every_index_in_use();
        let allowed = CheckRequest {
            namespace: "ns".into(),
            pod_name: "p2".into(),
            pod_uid: "pod-2".into(),
            ..CheckRequest::default()
        };
        assert_eq!(
            kept.projection.check(&allowed, true).decision,
            Verdict::Allow
        );
        // A pod uid the ledger never saw, under the name of one it did: telling a reused
        // name from an unknown pod takes the index.
        let impostor = CheckRequest {
            pod_uid: "pod-impostor".into(),
            ..allowed.clone()
        };
        let impostor_decision = kept.projection.check(&impostor, true);
        assert_eq!(impostor_decision.reason, Some(Reason::PodUidMismatch));

        // Decoded: the snapshot's records and names answer, and what a change records
        // goes above them.
        let bytes = layout::encode(kept.seq, &kept.projection).unwrap();
        let mut reopened = decoded(&bytes, kept.seq);
        assert!(reopened.projection.is_decoded());
        assert_eq!(
            reopened.projection.check(&allowed, true).decision,
            Verdict::Allow
        );
        assert_eq!(
            reopened.projection.check(&impostor, true),
            impostor_decision
        );
        assert_eq!(reopened.projection.names, kept.projection.names);
        // A copy published before the changes keeps the state it had.
        let view = reopened.projection.clone();
        let before = kept.projection.clone();
        for change in later_changes() {
            let expected = kept.apply(change.clone());
            assert_eq!(reopened.apply(change), expected);
        }
        assert_ne!(
            kept.projection.names, before.names,
            "the changes name new objects"
        );
        assert_ne!(kept.projection.uids, before.uids);
        assert_eq!(reopened.projection, kept.projection);
        assert_eq!(decisions(&reopened.projection), decisions(&kept.projection));
        assert_eq!(view, before);
        assert_eq!(decisions(&view), decisions(&before));
        // Encoded again, the changed state decodes to itself.
        let again = layout::encode(reopened.seq, &reopened.projection).unwrap();
        assert_eq!(decoded(&again, kept.seq).projection, kept.projection);
    }

    #[test]
    fn a_record_whose_gone_flag_disagrees_with_its_last_change_is_refused() {
        let mut run = Run::new();
        run.apply(pod("p1", "pod-1", 1, vec![]));
        let record = run.projection.object("pod-1").unwrap();
        let mut encoded = serde_json::to_value(record).unwrap();
        assert_eq!(encoded["gone"], json!(false), "{encoded}");
        let back: ObjectRecord = serde_json::from_value(encoded.clone()).unwrap();
        assert_eq!(&back, record);
        encoded["gone"] = json!(true);
        let error = serde_json::from_value::<ObjectRecord>(encoded)
            .unwrap_err()
            .to_string();
        assert!(error.contains("pod-1 says gone is true"), "{error}");
    }

    #[test]
    fn names_a_family_repeats_share_one_copy_after_apply_and_after_a_snapshot() {
        // A warm pool's Sandbox: its name is not the claim's, its pod is named after it.
        let mut run = Run::new();
        let mut sandbox_object = sandbox(
            "pool-a",
            "sb-1",
            2,
            vec![owner(EXT, "SandboxClaim", "c1", "claim-1")],
        );
        sandbox_object["metadata"]["annotations"] = json!({"agents.x-k8s.io/pod-name": "pool-a"});
        run.apply(claim("c1", "claim-1", 1, "pool-a"));
        run.apply(sandbox_object);
        let by_sandbox = || vec![owner(SB, "Sandbox", "pool-a", "sb-1")];
        run.apply(pod("pool-a", "pod-1", 3, by_sandbox()));
        // Updates arrive as fresh copies of every string.
        run.apply(pod("pool-a", "pod-1", 4, by_sandbox()));
        run.apply(claim("c1", "claim-1", 5, "pool-a"));
        // A new uid under a name an earlier uid had, with no owner to share it from.
        run.apply(pod("solo", "pod-a", 6, vec![]));
        run.apply(pod("solo", "pod-b", 7, vec![]));
        let snapshot = layout::encode(run.seq, &run.projection).unwrap();
        let decoded: layout::Snapshot = rmp_serde::from_slice(&snapshot).unwrap();
        assert_eq!(decoded.projection, run.projection);
        for (when, projection) in [
            ("applied", &run.projection),
            ("decoded", &decoded.projection),
        ] {
            let record = |uid: &str| &projection.object(uid).unwrap().current;
            let (claim, sandbox, pod) = (record("claim-1"), record("sb-1"), record("pod-1"));
            let KindFields::SandboxClaim {
                status_sandbox_name: Some(status_name),
                ..
            } = &claim.fields
            else {
                panic!("{when}: the claim names its Sandbox");
            };
            let KindFields::Sandbox {
                pod_name_annotation: Some(pod_name),
                volume_claim_templates,
                ..
            } = &sandbox.fields
            else {
                panic!("{when}: the Sandbox names its pod");
            };
            let owner_name =
                |change: &ObjectChange| change.controller.as_ref().unwrap().name.clone();
            let index_key = |kind, name| projection.names.key_of(kind, "ns", name).unwrap();
            let shared = [
                (
                    "the Sandbox's owner reference",
                    owner_name(sandbox).shares_storage_with(&claim.name),
                ),
                (
                    "the claim's status",
                    status_name.shares_storage_with(&sandbox.name),
                ),
                (
                    "the pod-name annotation",
                    pod_name.shares_storage_with(&sandbox.name),
                ),
                (
                    "the pod's name",
                    pod.name.shares_storage_with(&sandbox.name),
                ),
                (
                    "the pod's owner reference",
                    owner_name(pod).shares_storage_with(&sandbox.name),
                ),
                (
                    "the updated pod's name index key",
                    index_key(ObjectKind::Pod, "pool-a").shares_storage_with(&pod.name),
                ),
                // Two uids of one name are two families, which layout 3 may write in two
                // parts (each its own scope of back-references).
                (
                    "a reused name",
                    when == "decoded"
                        || record("pod-b")
                            .name
                            .shares_storage_with(&record("pod-a").name),
                ),
                (
                    "the updated claim's name index key",
                    index_key(ObjectKind::SandboxClaim, "c1").shares_storage_with(&claim.name),
                ),
                // Interned values decode as one copy per part of the snapshot (its scope
                // of back-references), not the interner's.
                (
                    "a volume claim template's name",
                    when == "decoded"
                        || volume_claim_templates[0]
                            .shares_storage_with(&intern::shared(&Text::from("ws"))),
                ),
            ];
            for (what, shares) in shared {
                assert!(shares, "{when}: {what} is a copy");
            }
        }
    }

    /// `bindings` claims, each with its Sandbox, pod and workspace PVC.
    fn many_families(bindings: usize) -> Run {
        let mut run = Run::new();
        for k in 0..bindings {
            let (claim_uid, sandbox_uid) = (format!("claim-{k}"), format!("sb-{k}"));
            let rv = run.seq + 1;
            run.apply(claim(&format!("c{k}"), &claim_uid, rv, &format!("s{k}")));
            run.apply(sandbox(
                &format!("s{k}"),
                &sandbox_uid,
                rv + 1,
                vec![owner(EXT, "SandboxClaim", &format!("c{k}"), &claim_uid)],
            ));
            let by_sandbox = || vec![owner(SB, "Sandbox", &format!("s{k}"), &sandbox_uid)];
            run.apply(pvc(
                &format!("ws-s{k}"),
                &format!("pvc-{k}"),
                rv + 2,
                by_sandbox(),
                &format!("pv-{k}"),
            ));
            run.apply(pod(
                &format!("p{k}"),
                &format!("pod-{k}"),
                rv + 3,
                by_sandbox(),
            ));
        }
        run
    }

    #[test]
    fn layout_three_decodes_families_spread_over_its_parts_on_every_thread() {
        let run = many_families(300);
        let bytes = layout::encode(run.seq, &run.projection).unwrap();
        let (_, parts, _) = layout::split_layout_three(&bytes);
        let filled = parts.iter().filter(|part| part.len() > 1).count();
        assert!(filled > 16, "{filled} parts hold families");
        let decoded: layout::Snapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded.projection, run.projection);
        // A family is written in one part: a pod, its Sandbox and its claim share their
        // strings after the decode as they did after `apply`.
        for k in [0, 150, 299] {
            let projection = &decoded.projection;
            let (pod_key, _) = projection
                .uids
                .get_key_value(format!("pod-{k}").as_str())
                .unwrap();
            let (sandbox_key, sandbox) = projection
                .uids
                .get_key_value(format!("sb-{k}").as_str())
                .unwrap();
            let (claim_key, _) = projection
                .uids
                .get_key_value(format!("claim-{k}").as_str())
                .unwrap();
            let pod = projection.object(pod_key).unwrap();
            assert!(pod.current.uid.shares_storage_with(pod_key));
            let controller = pod.current.controller.as_ref().unwrap();
            assert!(controller.uid.shares_storage_with(sandbox_key));
            let sandbox_owner = sandbox.object.as_ref().unwrap().current.controller.as_ref();
            assert!(sandbox_owner.unwrap().uid.shares_storage_with(claim_key));
            assert!(sandbox
                .children
                .0
                .iter()
                .any(|c| c.shares_storage_with(pod_key)));
            let named = projection.uids_of(ObjectKind::Pod, "ns", &format!("p{k}"));
            assert!(named[0].shares_storage_with(pod_key));
            let (pvc_key, _) = projection
                .uids
                .get_key_value(format!("pvc-{k}").as_str())
                .unwrap();
            let volume = projection.volumes.get(format!("pv-{k}").as_str()).unwrap();
            assert!(volume.pvc_uids[0].shares_storage_with(pvc_key));
            assert!(volume
                .first_claim_uid
                .as_ref()
                .unwrap()
                .shares_storage_with(claim_key));
            assert_eq!(
                decoded
                    .projection
                    .check(
                        &CheckRequest {
                            namespace: "ns".into(),
                            pod_name: format!("p{k}"),
                            pod_uid: format!("pod-{k}"),
                            require_claim: true,
                            ..CheckRequest::default()
                        },
                        true
                    )
                    .decision,
                Verdict::Allow
            );
        }
    }

    #[test]
    fn layout_three_keeps_names_and_volumes_their_newest_record_no_longer_names() {
        let mut run = many_families(3);
        // pvc-0 moved from pv-0 to pv-moved: pv-0's newest PVC no longer names it.
        let by_sandbox = vec![owner(SB, "Sandbox", "s0", "sb-0")];
        run.apply(pvc("ws-s0", "pvc-0", 90, by_sandbox.clone(), "pv-moved"));
        // pod-1 observed under a second name (no API server allows it; a recording may
        // hold it): its first name's newest uid is now under another name.
        let by_sandbox = vec![owner(SB, "Sandbox", "s1", "sb-1")];
        run.apply(pod("p1-renamed", "pod-1", 91, by_sandbox));
        assert_eq!(
            run.projection.volumes.get("pv-0").unwrap().pvc_uids,
            ["pvc-0"]
        );
        assert_eq!(
            run.projection.uids_of(ObjectKind::Pod, "ns", "p1"),
            ["pod-1"]
        );
        let bytes = layout::encode(run.seq, &run.projection).unwrap();
        let decoded: layout::Snapshot = rmp_serde::from_slice(&bytes).unwrap();
        // Neither lost nor written twice (which the decoder would refuse).
        assert_eq!(decoded.projection, run.projection);
    }

    #[test]
    fn layout_three_writes_controller_cycles_and_ambiguous_controllers_once() {
        let mut run = many_families(2);
        // A Sandbox and a pod each the other's controller (no API server allows it; a
        // recording may hold it), and a chain longer than the encoder climbs.
        run.apply(sandbox(
            "s-loop",
            "sb-loop",
            50,
            vec![owner("v1", "Pod", "p-loop", "pod-loop")],
        ));
        run.apply(pod(
            "p-loop",
            "pod-loop",
            51,
            vec![owner(SB, "Sandbox", "s-loop", "sb-loop")],
        ));
        for depth in 0..12 {
            let controller = match depth {
                0 => vec![],
                _ => vec![owner(
                    SB,
                    "Sandbox",
                    &format!("s-chain-{}", depth - 1),
                    &format!("sb-chain-{}", depth - 1),
                )],
            };
            run.apply(sandbox(
                &format!("s-chain-{depth}"),
                &format!("sb-chain-{depth}"),
                60 + depth,
                controller,
            ));
        }
        // A pod naming two controllers: the dependent of both.
        let mut two = pod("p-two", "pod-two", 80, vec![]);
        two["metadata"]["ownerReferences"] = json!([
            owner(SB, "Sandbox", "s0", "sb-0"),
            owner(SB, "Sandbox", "s1", "sb-1"),
        ]);
        run.apply(two);
        for sandbox in ["sb-0", "sb-1"] {
            let children = &run.projection.uids.get(sandbox).unwrap().children;
            assert!(children.contains("pod-two"), "{sandbox}: {children:?}");
        }
        let bytes = layout::encode(run.seq, &run.projection).unwrap();
        let decoded: layout::Snapshot = rmp_serde::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("every uid written exactly once: {e}"));
        assert_eq!(decoded.projection, run.projection);
    }

    #[test]
    fn a_layout_three_snapshot_with_a_damaged_part_is_refused() {
        let run = many_families(40);
        let bytes = layout::encode(run.seq, &run.projection).unwrap();
        let (seq, parts, rest) = layout::split_layout_three(&bytes);
        assert_eq!(layout::join_layout_three(seq, &parts, &rest), bytes);
        let refused = |parts: &[Vec<u8>]| {
            let damaged = layout::join_layout_three(seq, parts, &rest);
            match rmp_serde::from_slice::<layout::Snapshot>(&damaged) {
                Ok(_) => panic!("a damaged snapshot decoded"),
                Err(e) => e.to_string(),
            }
        };
        let filled = parts.iter().position(|part| part.len() > 1).unwrap();
        // Every uid of a part written a second time, in place of another part.
        let mut twice = parts.clone();
        twice[filled + 1] = twice[filled].clone();
        let error = refused(&twice);
        assert!(error.contains("written twice"), "{error}");
        // A part with bytes after its families.
        let mut trailing = parts.clone();
        trailing[filled].push(0xc0);
        let error = refused(&trailing);
        assert!(error.contains(&format!("part {filled}")), "{error}");
        assert!(error.contains("bytes after"), "{error}");
        // A part cut short.
        let mut cut = parts.clone();
        let half = cut[filled].len() / 2;
        cut[filled].truncate(half);
        let error = refused(&cut);
        assert!(error.contains(&format!("part {filled}")), "{error}");
        // A part missing.
        let error = refused(&parts[1..]);
        assert!(error.contains("31 parts"), "{error}");
    }

    #[test]
    fn the_uids_under_a_name_are_one_form_for_one_list() {
        let uid = |n: usize| Text::from(format!("uid-{n}"));
        for count in 0..5 {
            let pushed: NameUids = (0..count).map(uid).collect();
            assert_eq!(pushed.as_slice(), (0..count).map(uid).collect::<Vec<_>>());
            assert_eq!(pushed.last(), count.checked_sub(1).map(uid).as_ref());
            assert_eq!(matches!(pushed, NameUids::One(_)), count == 1);
            // Encoded as a plain array (as the small vector before it was), and decoded to
            // the same form, so two equal lists compare equal.
            let bytes = rmp_serde::to_vec(&pushed).unwrap();
            let as_array: Vec<Text> = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(as_array, pushed.as_slice());
            let decoded: NameUids = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(decoded, pushed);
        }
    }

    #[test]
    fn a_snapshot_is_compared_with_the_replay_as_it_decodes_in_every_layout() {
        let run = many_families(40);
        let reference = &run.projection;
        let compared = |bytes: &[u8], reference: &Projection| {
            layout::differs_from(bytes, reference).map_err(|e| e.to_string())
        };
        let layouts = |projection: &Projection| {
            [
                ("3", layout::encode(run.seq, projection).unwrap()),
                ("2", layout::encode_layout_two(run.seq, projection).unwrap()),
                ("1", layout::encode_layout_one(run.seq, projection)),
            ]
        };
        for (layout, bytes) in layouts(reference) {
            assert_eq!(compared(&bytes, reference), Ok(None), "layout {layout}");
        }
        // The same state at another seq: its own seq names it.
        let mut later = many_families(40);
        later.apply(pod("p40", "pod-40", 1_000, vec![]));
        let (seq, at) = (reference.seq, reference.at);
        let at_reference_seq = |mut projection: Projection| {
            projection.seq = seq;
            projection.at = at;
            projection
        };
        // One record changed (a pod's new observation), one uid more, one uid fewer, and
        // a field of `rest`: each is named, in every layout.
        let mut changed = many_families(40);
        changed.apply(pod(
            "p3",
            "pod-3",
            2_000,
            vec![owner(SB, "Sandbox", "s3", "sb-3")],
        ));
        let changed = at_reference_seq(changed.projection);
        let extra = at_reference_seq(later.projection.clone());
        let mut watched = reference.clone();
        watched.watched = Some(vec!["elsewhere".to_string()]);
        for (snapshot_of, replay, why_three, why_older) in [
            (
                &changed,
                reference,
                "the record of uid pod-3",
                "records differ",
            ),
            (
                &extra,
                reference,
                "uid pod-40 is not in the state",
                "records differ",
            ),
            (
                reference,
                &extra,
                "1 records of the state replay derives",
                "records differ",
            ),
            (
                &watched,
                reference,
                "watched namespaces",
                "watched namespaces",
            ),
        ] {
            for (layout, bytes) in layouts(snapshot_of) {
                let why = compared(&bytes, replay)
                    .unwrap_or_else(|e| panic!("layout {layout}, {why_three}: {e}"))
                    .expect("a difference");
                let expected = if layout == "3" { why_three } else { why_older };
                assert!(why.contains(expected), "layout {layout}: {why}");
            }
        }
        let bytes = layout::encode(later.seq, &later.projection).unwrap();
        let why = compared(&bytes, reference).unwrap().expect("a difference");
        assert!(why.contains(&format!("names seq {}", later.seq)), "{why}");
        // A part written twice is a snapshot that does not decode, as at open.
        let bytes = layout::encode(run.seq, reference).unwrap();
        let (seq, mut parts, rest) = layout::split_layout_three(&bytes);
        let filled = parts.iter().position(|part| part.len() > 1).unwrap();
        parts[filled + 1] = parts[filled].clone();
        let twice = layout::join_layout_three(seq, &parts, &rest);
        let error = compared(&twice, reference).unwrap_err();
        assert!(error.contains("written twice"), "{error}");
    }

    #[test]
    fn a_snapshot_of_an_unknown_layout_is_refused_not_guessed_at() {
        let run = every_index_in_use();
        let bytes =
            rmp_serde::to_vec(&("claim-ledger/projection/9", run.seq, &run.projection)).unwrap();
        let error = rmp_serde::from_slice::<layout::Snapshot>(&bytes)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown snapshot layout"), "{error}");
        let mut trailing = layout::encode(run.seq, &run.projection).unwrap();
        // One more element in the outer array (fixarray of 4 becomes 5, nil appended).
        assert_eq!(trailing[0], 0x94);
        trailing[0] = 0x95;
        trailing.push(0xc0);
        let error = rmp_serde::from_slice::<layout::Snapshot>(&trailing)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("trailing"), "{error}");
    }

    #[test]
    fn the_same_state_reached_in_another_order_is_the_same_projection() {
        // An owner known only through its dependents is forgotten with the last of them,
        // so replaying to a state and decoding a snapshot of it agree.
        let mut run = Run::new();
        run.apply(pod(
            "p",
            "pod-1",
            1,
            vec![owner(SB, "Sandbox", "sb", "sb-9")],
        ));
        assert!(run.projection.uids.contains_key("sb-9"));
        run.apply(pod("p", "pod-1", 2, vec![]));
        assert!(!run.projection.uids.contains_key("sb-9"));
    }

    fn released(transitions: &[Transition], pod: &str) -> Option<Reason> {
        transitions.iter().find_map(|t| match t {
            Transition::Released {
                pod_uid, reason, ..
            } if pod_uid == pod => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn a_bound_pod_given_a_second_sandbox_controller_is_released_and_refused() {
        let mut run = Run::bound();
        run.bind_second();
        // Its own Sandbox first: first-wins would keep the binding.
        let transitions = run.apply(pod(
            "p",
            "pod-1",
            20,
            vec![
                owner(SB, "Sandbox", "sb", "sb-1"),
                owner(SB, "Sandbox", "sb2", "sb-2"),
            ],
        ));
        assert_eq!(
            released(&transitions, "pod-1"),
            Some(Reason::OwnerChainBroken)
        );
        run.expect(
            "p",
            "pod-1",
            Some(Reason::OwnerChainBroken),
            "pod ns/p has 2 controller references",
        );
        // The other pod is untouched.
        assert_eq!(run.check("p2", "pod-2").decision, Verdict::Allow);
        // Back to one controller: bound again.
        run.apply(pod(
            "p",
            "pod-1",
            21,
            vec![owner(SB, "Sandbox", "sb", "sb-1")],
        ));
        assert_eq!(run.check("p", "pod-1").decision, Verdict::Allow);
    }

    #[test]
    fn a_pod_first_seen_with_two_controllers_is_refused_with_the_reason() {
        let mut run = Run::bound();
        run.apply(pod(
            "q",
            "pod-9",
            30,
            vec![
                owner(SB, "Sandbox", "sb", "sb-1"),
                owner(SB, "Sandbox", "other", "sb-x"),
            ],
        ));
        run.expect(
            "q",
            "pod-9",
            Some(Reason::OwnerChainBroken),
            "pod ns/q has 2 controller references",
        );
        assert!(run.transitions.iter().all(|t| !matches!(
            t,
            Transition::Bound { pod_uid, .. } if pod_uid == "pod-9"
        )));
    }

    #[test]
    fn a_sandbox_controlled_by_a_claim_and_a_warm_pool_is_not_trusted() {
        let mut run = Run::bound();
        let transitions = run.apply(sandbox(
            "sb",
            "sb-1",
            20,
            vec![
                owner(EXT, "SandboxClaim", "c", "claim-1"),
                owner(EXT, "SandboxWarmPool", "pool", "pool-1"),
            ],
        ));
        assert_eq!(
            released(&transitions, "pod-1"),
            Some(Reason::OwnerChainBroken)
        );
        run.expect(
            "p",
            "pod-1",
            Some(Reason::OwnerChainBroken),
            "Sandbox ns/sb has 2 controller references",
        );
        // Warm pool listed first: still refused, not NOT_CLAIMED or allowed.
        run.apply(sandbox(
            "sb",
            "sb-1",
            21,
            vec![
                owner(EXT, "SandboxWarmPool", "pool", "pool-1"),
                owner(EXT, "SandboxClaim", "c", "claim-1"),
            ],
        ));
        run.expect(
            "p",
            "pod-1",
            Some(Reason::OwnerChainBroken),
            "Sandbox ns/sb has 2",
        );
        // And a claim update still finds the Sandbox's pods (it stays the claim's dependent).
        run.apply(sandbox(
            "sb",
            "sb-1",
            22,
            vec![owner(EXT, "SandboxClaim", "c", "claim-1")],
        ));
        assert_eq!(run.check("p", "pod-1").decision, Verdict::Allow);
    }

    #[test]
    fn a_claim_with_two_controllers_is_not_trusted() {
        let mut run = Run::bound();
        let mut object = claim("c", "claim-1", 20, "sb");
        object["metadata"]["ownerReferences"] = json!([
            owner("v1", "ConfigMap", "a", "cm-1"),
            owner("v1", "ConfigMap", "b", "cm-2")
        ]);
        let transitions = run.apply(object);
        assert_eq!(
            released(&transitions, "pod-1"),
            Some(Reason::OwnerChainBroken)
        );
        run.expect(
            "p",
            "pod-1",
            Some(Reason::OwnerChainBroken),
            "claim ns/c has 2",
        );
    }

    #[test]
    fn a_workspace_claimed_by_two_sandboxes_refuses_the_pods_of_both_until_it_has_one() {
        let mut run = Run::bound();
        run.bind_second();
        // pvc-1 (bound under claim-1) now also names sb-2 (claim-2) as controller: first-wins
        // would put it under sb-1 only and let claim-2's pod through.
        let transitions = run.apply(pvc(
            "ws-sb",
            "pvc-1",
            20,
            vec![
                owner(SB, "Sandbox", "sb", "sb-1"),
                owner(SB, "Sandbox", "sb2", "sb-2"),
            ],
            "pv-1",
        ));
        assert_eq!(
            released(&transitions, "pod-1"),
            Some(Reason::OwnerChainBroken)
        );
        assert_eq!(
            released(&transitions, "pod-2"),
            Some(Reason::OwnerChainBroken)
        );
        assert!(!transitions
            .iter()
            .any(|t| matches!(t, Transition::WorkspaceOrphaned { .. })));
        for (name, uid) in [("p", "pod-1"), ("p2", "pod-2")] {
            run.expect(
                name,
                uid,
                Some(Reason::OwnerChainBroken),
                "workspace PVC ns/ws-sb has 2 controller references",
            );
        }
        // Back under sb-1 alone: sb-1's pod binds again, sb-2 no longer lists the PVC.
        run.apply(pvc(
            "ws-sb",
            "pvc-1",
            21,
            vec![owner(SB, "Sandbox", "sb", "sb-1")],
            "pv-1",
        ));
        assert_eq!(run.check("p", "pod-1").decision, Verdict::Allow);
        assert_eq!(run.check("p2", "pod-2").decision, Verdict::Allow);
        assert!(run.projection.live_pvcs_of("sb-2").is_empty());
        // Moved to sb-2 alone: that is workspace reuse, as before.
        run.apply(pvc(
            "ws-sb",
            "pvc-1",
            22,
            vec![owner(SB, "Sandbox", "sb2", "sb-2")],
            "pv-1",
        ));
        run.expect("p2", "pod-2", Some(Reason::WorkspaceReused), "ws-sb");
    }

    #[test]
    fn real_references_keep_their_old_behaviour() {
        // One controller among several owners, and a Sandbox gone: the gone-link rules.
        let mut run = Run::bound();
        run.apply(pod(
            "p",
            "pod-1",
            20,
            vec![
                json!({"apiVersion": SB, "kind": "Sandbox", "name": "x", "uid": "sb-x"}),
                owner(SB, "Sandbox", "sb", "sb-1"),
            ],
        ));
        assert_eq!(run.check("p", "pod-1").decision, Verdict::Allow);
        run.apply(pod("p", "pod-1", 21, vec![]));
        run.expect(
            "p",
            "pod-1",
            Some(Reason::BindingReleased),
            "no Sandbox controller",
        );
    }

    mod versions {
        use std::cmp::Ordering::{Equal, Greater, Less};

        use crate::compare_versions;

        #[test]
        fn integers_of_any_size_and_sign_compare_as_integers() {
            let big = "1000000000000000000000000000000"; // 10^30, beyond u64
            let cases = [
                ("-5", "10", Some(Less)),
                ("10", "-5", Some(Greater)),
                ("-5", "-50", Some(Greater)),
                ("-0", "0", Some(Equal)),
                ("007", "7", Some(Equal)),
                ("+8", "7", Some(Greater)),
                (big, "10", Some(Greater)),
                ("11", big, Some(Less)),
                (big, big, Some(Equal)),
                ("1000000000000000000000000000001", big, Some(Greater)),
                (
                    "18446744073709551616",
                    "18446744073709551615",
                    Some(Greater),
                ),
                ("abc", "10", None),
                ("10", "1e3", None),
                ("", "10", None),
                ("-", "10", None),
                ("+", "10", None),
                (" 10", "10", None),
                ("１０", "10", None),
            ];
            for (offered, recorded, expected) in cases {
                assert_eq!(
                    compare_versions(offered, false, recorded, false),
                    expected,
                    "{offered} vs {recorded}"
                );
            }
        }

        #[test]
        fn at_the_same_version_a_removal_comes_after_a_live_observation() {
            assert_eq!(compare_versions("7", true, "7", false), Some(Greater));
            assert_eq!(compare_versions("7", false, "07", true), Some(Less));
            assert_eq!(compare_versions("8", false, "7", true), Some(Greater));
            assert_eq!(compare_versions("-8", true, "-7", false), Some(Less));
        }
    }
}
#[cfg(test)]
mod footprint {
    use std::mem::size_of;

    /// The inline sizes the ~1 KiB per live object budget rests on (BENCHMARKS.md): a
    /// field added to a record, or a `Text` turned back into a `String`, shows up here
    /// before it shows up in a cluster's memory.
    #[test]
    fn the_records_of_the_projection_stay_small() {
        assert_eq!(size_of::<schemas::Text>(), 8);
        assert!(size_of::<schemas::ObjectChange>() <= 152);
        assert!(size_of::<super::ObjectRecord>() <= 168);
        // With `triomphe`'s 8-byte count: the allocator's 224-byte class, not 256.
        assert!(size_of::<super::UidState>() <= 216);
        assert!(size_of::<super::BindingRecord>() <= 64);
        assert!(size_of::<super::BindingView>() <= 128);
        assert!(size_of::<super::NameUids>() <= 16);
        assert!(size_of::<super::VolumeRecord>() <= 16);
    }
}
