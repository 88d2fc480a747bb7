//! Scenario files (YAML; the format is documented in `docs/SCENARIOS.md`): steps run in
//! order against a fresh cluster simulator (HTTP on 127.0.0.1:0), the real kube client, the
//! real watcher and a real sled ledger in a temporary directory, with expectations on the
//! binding rule's answers.
//!
//! Every file is read and validated before anything runs: an unreadable or invalid file
//! (bad YAML, an unknown step kind, a missing field, a variable used before it is captured)
//! is an error naming the file and, where it can, the line. Then each file runs end to end;
//! the report prints every step with its outcome. An expectation or assertion that fails
//! is reported and the file goes on; a step that cannot be carried out (the simulator
//! refuses an object, a watcher that will not stop) ends that file. Either way the next
//! file runs.
//!
//! The same files drive `claim-ledger sim --scenario` ([`drive`]): the steps that act on
//! the cluster run against the simulator being served, through the same step executor
//! ([`Cluster`]; a [`Run`] adds the watcher and the ledger around it), and the steps that
//! need the watcher or the ledger are skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::{CheckRequest, Decision, Ledger, LedgerConfig, Verdict};
use schemas::{normalize, Change, ChangeKind, ObjectChange, ObjectKind, Reason, WatchEventType};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};
use sim::{Propagation, Resource, Served, SimConfig, Simulator};
use tokio::sync::oneshot;
use watcher::{Readiness, SharedLedger, WatchOptions};

/// Runs every scenario file end to end; `Ok(true)` when every expectation held.
///
/// All files are loaded and validated first: `Err` names every file that cannot be read or
/// is not a valid scenario, and nothing runs. `Ok(false)` when an expectation, assertion or
/// step failed in any file (the other files still run).
pub async fn run_files(files: &[PathBuf]) -> Result<bool, String> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match load(path) {
            Ok(scenario) => loaded.push((path.clone(), scenario)),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let mut failed: Vec<String> = Vec::new();
    for (path, scenario) in &loaded {
        let outcome = run_scenario(path, scenario).await;
        if let Some(where_) = outcome {
            failed.push(format!("{} ({where_})", path.display()));
        }
    }
    println!();
    if failed.is_empty() {
        println!("{} scenario file(s): all passed", loaded.len());
        Ok(true)
    } else {
        println!(
            "{} scenario file(s): {} passed, {} failed: {}",
            loaded.len(),
            loaded.len() - failed.len(),
            failed.len(),
            failed.join(", ")
        );
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------
// The file format.
// ---------------------------------------------------------------------------------------

fn yes() -> bool {
    true
}

fn default_namespace() -> String {
    "default".into()
}

/// One scenario file, loaded and validated by [`load`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows (printed in the report).
    name: String,
    /// Longer prose; not used by the runner.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    simulator: SimSettings,
    #[serde(default)]
    watcher: WatcherSettings,
    /// The namespace of every step that names none.
    #[serde(default = "default_namespace")]
    namespace: String,
    /// The default timeout of expectations, waits and assertions.
    #[serde(default)]
    timeout: Option<Dur>,
    /// After the last step: the projection matches the simulator, the chain verifies and
    /// no (uid, resourceVersion) is recorded twice.
    #[serde(default = "yes")]
    final_checks: bool,
    steps: Vec<Step>,
    /// The line of each step in the file, when it could be found.
    #[serde(skip)]
    lines: Vec<Option<usize>>,
}

impl Scenario {
    fn served(&self) -> Served {
        match self.simulator.served {
            ServedSetting::Both => Served::Both,
            ServedSetting::V1alpha1 => Served::V1alpha1Only,
        }
    }

    /// The simulator the file's `simulator:` settings describe.
    pub fn sim_config(&self) -> SimConfig {
        let mut config = SimConfig {
            controllers: self.simulator.controllers,
            served: self.served(),
            ..SimConfig::default()
        };
        if let Some(window) = self.simulator.compaction_window {
            config.compaction_window = window;
        }
        config
    }

    /// `controllers on, serving v1beta1 + v1alpha1`, for the report's first line.
    fn describe_cluster(&self) -> String {
        format!(
            "controllers {}, serving {}",
            if self.simulator.controllers {
                "on"
            } else {
                "off"
            },
            self.served().versions().join(" + ")
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimSettings {
    #[serde(default = "yes")]
    controllers: bool,
    #[serde(default)]
    served: ServedSetting,
    #[serde(default)]
    compaction_window: Option<u64>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            controllers: true,
            served: ServedSetting::Both,
            compaction_window: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ServedSetting {
    #[default]
    Both,
    V1alpha1,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatcherSettings {
    /// Start the watcher (and wait for it to sync) before the first step.
    #[serde(default = "yes")]
    start: bool,
    #[serde(default)]
    unready_after: Option<Dur>,
    #[serde(default)]
    namespaces: Vec<String>,
}

impl Default for WatcherSettings {
    fn default() -> Self {
        WatcherSettings {
            start: true,
            unready_after: None,
            namespaces: Vec::new(),
        }
    }
}

/// A duration written `250ms`, `5s` or `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

impl Dur {
    fn parse(text: &str) -> Option<Dur> {
        let text = text.trim();
        let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
        let number: f64 = number.trim().parse().ok()?;
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            _ => return None,
        };
        (seconds.is_finite() && seconds >= 0.0).then(|| Dur(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 250ms, 5s or 1m")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Dur, E> {
                Dur::parse(text).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration `{text}`: write a number and a unit, e.g. 250ms, 5s or 1m"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{n}`: give a unit, e.g. {n}s or {n}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                self.visit_u64(n.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{n}`: give a unit, e.g. {n}s"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A kind the simulator serves, by its `kind` (case-insensitive), plural or short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind(Resource);

impl Kind {
    fn object_kind(self) -> Option<ObjectKind> {
        ObjectKind::parse(self.0.kind())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.kind())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let text = String::deserialize(d)?;
        let lower = text.to_ascii_lowercase();
        Resource::ALL
            .into_iter()
            .find(|r| {
                r.kind().eq_ignore_ascii_case(&text)
                    || r.plural() == lower
                    || r.short_names().contains(&lower.as_str())
            })
            .map(Kind)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown kind `{text}`; expected one of {}",
                    Resource::ALL.map(|r| r.kind()).join(", ")
                ))
            })
    }
}

/// A deletion propagation policy.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
enum PolicySetting {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl PolicySetting {
    fn propagation(self) -> Propagation {
        match self {
            PolicySetting::Background => Propagation::Background,
            PolicySetting::Foreground => Propagation::Foreground,
            PolicySetting::Orphan => Propagation::Orphan,
        }
    }
}

/// A ledger seq: a number, `head` or `head+N` / `head-N` (the ledger head when the step runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqRef {
    Absolute(u64),
    Head(i64),
}

impl Serialize for SeqRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SeqRef::Absolute(n) => s.serialize_u64(*n),
            SeqRef::Head(0) => s.serialize_str("head"),
            SeqRef::Head(n) => s.collect_str(&format_args!("head{n:+}")),
        }
    }
}

impl<'de> Deserialize<'de> for SeqRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SeqRef, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SeqRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a seq: a number, `head`, `head+N` or `head-N`")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SeqRef, E> {
                Ok(SeqRef::Absolute(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SeqRef, E> {
                u64::try_from(n)
                    .map(SeqRef::Absolute)
                    .map_err(|_| E::custom(format!("a seq cannot be negative ({n})")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SeqRef, E> {
                let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                let offset = compact.strip_prefix("head").and_then(|rest| {
                    if rest.is_empty() {
                        Some(0)
                    } else {
                        rest.parse::<i64>()
                            .ok()
                            .filter(|_| rest.starts_with(['+', '-']))
                    }
                });
                offset.map(SeqRef::Head).ok_or_else(|| {
                    E::custom(format!(
                        "invalid seq `{text}`: write a number, `head`, `head+N` or `head-N`"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectRef {
    kind: Kind,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteStep {
    kind: Kind,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default)]
    propagation: PolicySetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchStep {
    kind: Kind,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    /// The JSON merge patch; its `status` part goes to the `/status` subresource.
    merge: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePool {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default = "one")]
    replicas: u32,
    #[serde(default)]
    template: Option<String>,
    #[serde(default = "yes")]
    pvc: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimWarm {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    pool: String,
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimCold {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteClaim {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default)]
    propagation: PolicySetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedClaim {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
}

/// A Sandbox named directly or through the claim whose `status.sandbox.name` names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxTarget {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    claim: Option<String>,
    /// `expire_sandbox` only: set the Sandbox's `spec.shutdownPolicy` first.
    #[serde(default)]
    shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Pick {
    #[default]
    Oldest,
    Newest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Capture {
    /// The variable, used later as `${as}`.
    #[serde(rename = "as")]
    var: String,
    kind: Kind,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// `Kind/name` of the controller owner (instead of `name`).
    #[serde(default)]
    owned_by: Option<String>,
    #[serde(default)]
    pick: Pick,
    /// A dotted path into the object; `metadata.uid` when absent.
    #[serde(default)]
    field: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    namespace: Option<String>,
    /// The pod's name; its uid is the pod's current uid in the simulator unless `pod_uid`.
    #[serde(default)]
    pod: Option<String>,
    /// The pod of the claim's Sandbox (through `status.sandbox.name`).
    #[serde(default)]
    pod_of_claim: Option<String>,
    #[serde(default)]
    pod_uid: Option<String>,
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    sandbox_name: Option<String>,
    #[serde(default)]
    sandbox_uid: Option<String>,
    #[serde(default)]
    claim_uid: Option<String>,
    #[serde(default = "yes")]
    require_claim: bool,
    #[serde(default)]
    min_seq: Option<SeqRef>,
    #[serde(default)]
    decision: Option<Verdict>,
    #[serde(default)]
    reason: Option<Reason>,
    #[serde(default)]
    timeout: Option<Dur>,
    /// Wait for the ledger to catch up with the simulator before asking (when a watcher runs).
    #[serde(default = "yes")]
    sync: bool,
}

#[derive(Debug, Clone, Serialize)]
enum Wait {
    Synced(Option<Dur>),
    Ready(Option<Dur>),
    Sleep(Dur),
}

impl<'de> Deserialize<'de> for Wait {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wait, D::Error> {
        struct V;
        const FORMS: &str =
            "`synced`, `ready`, `{synced: 10s}`, `{ready: 10s}` or `{sleep: 250ms}`";
        impl<'de> Visitor<'de> for V {
            type Value = Wait;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {FORMS}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Wait, E> {
                match text {
                    "synced" => Ok(Wait::Synced(None)),
                    "ready" => Ok(Wait::Ready(None)),
                    other => Err(E::custom(format!(
                        "unknown wait `{other}`; expected {FORMS}"
                    ))),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Wait, M::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom(format!("empty wait; expected {FORMS}")))?;
                let wait = match key.as_str() {
                    "synced" => Wait::Synced(map.next_value()?),
                    "ready" => Wait::Ready(map.next_value()?),
                    "sleep" => Wait::Sleep(map.next_value()?),
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown wait `{other}`; expected {FORMS}"
                        )))
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a wait has one key; `{extra}` is extra"
                    )));
                }
                Ok(wait)
            }
        }
        d.deserialize_any(V)
    }
}

/// What an entry of the log can be, for `log_has`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EntryChange {
    Created,
    Updated,
    Deleted,
    MissingOnResync,
    WatchGap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogHas {
    #[serde(default)]
    change: Option<EntryChange>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    /// Watch gaps: `relist` or `restart`.
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    terminating: Option<bool>,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
    #[serde(default)]
    timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Counters {
    #[serde(default)]
    appended: Option<u64>,
    #[serde(default)]
    duplicates: Option<u64>,
    #[serde(default)]
    stale: Option<u64>,
    #[serde(default)]
    ignored: Option<u64>,
    #[serde(default)]
    relists: Option<u64>,
    #[serde(default)]
    resync_deletions: Option<u64>,
    #[serde(default)]
    watch_errors: Option<u64>,
    #[serde(default)]
    timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectAssert {
    kind: Kind,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default = "yes")]
    live: bool,
    #[serde(default)]
    terminating: Option<bool>,
    /// `none`, `Kind` or `Kind/name` of the controller owner.
    #[serde(default)]
    controller: Option<String>,
    #[serde(default)]
    timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize)]
enum Assert {
    ChainVerifies,
    NoDuplicateVersions,
    MatchesSimulator(Option<Dur>),
    LogHas(LogHas),
    Counters(Counters),
    Object(ObjectAssert),
}

impl<'de> Deserialize<'de> for Assert {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Assert, D::Error> {
        struct V;
        const FORMS: &str = "`chain_verifies`, `no_duplicate_versions`, `matches_simulator`, `{matches_simulator: 10s}`, `{log_has: {...}}`, `{counters: {...}}` or `{object: {...}}`";
        impl<'de> Visitor<'de> for V {
            type Value = Assert;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {FORMS}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Assert, E> {
                match text {
                    "chain_verifies" => Ok(Assert::ChainVerifies),
                    "no_duplicate_versions" => Ok(Assert::NoDuplicateVersions),
                    "matches_simulator" => Ok(Assert::MatchesSimulator(None)),
                    other => Err(E::custom(format!(
                        "unknown assertion `{other}`; expected {FORMS}"
                    ))),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Assert, M::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom(format!("empty assertion; expected {FORMS}"))
                })?;
                let assert = match key.as_str() {
                    "matches_simulator" => Assert::MatchesSimulator(map.next_value()?),
                    "log_has" => Assert::LogHas(map.next_value()?),
                    "counters" => Assert::Counters(map.next_value()?),
                    "object" => Assert::Object(map.next_value()?),
                    "chain_verifies" | "no_duplicate_versions" => {
                        let _: Option<Empty> = map.next_value()?;
                        if key == "chain_verifies" {
                            Assert::ChainVerifies
                        } else {
                            Assert::NoDuplicateVersions
                        }
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown assertion `{other}`; expected {FORMS}"
                        )))
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "an assertion has one key; `{extra}` is extra (write one assert step each)"
                    )));
                }
                Ok(assert)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{}` or nothing: the body of a step kind that takes no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// What a step does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Note,
    Apply(Box<Value>),
    Delete(DeleteStep),
    Patch(Box<PatchStep>),
    CreatePool(CreatePool),
    ClaimWarm(ClaimWarm),
    ClaimCold(ClaimCold),
    DeleteClaim(DeleteClaim),
    ExpireClaim(NamedClaim),
    ReplacePod(SandboxTarget),
    ExpireSandbox(SandboxTarget),
    DropWatches,
    ExpireNextWatch,
    RestartApiserver,
    DuplicateNextEvent,
    StaleEvent(ObjectRef),
    StopWatcher,
    StartWatcher,
    Wait(Wait),
    Expect(Box<Expect>),
    Capture(Capture),
    Assert(Box<Assert>),
}

const STEP_KINDS: [&str; 21] = [
    "apply",
    "delete",
    "patch",
    "create_pool",
    "claim_warm",
    "claim_cold",
    "delete_claim",
    "expire_claim",
    "replace_pod",
    "expire_sandbox",
    "drop_watches",
    "expire_next_watch",
    "restart_apiserver",
    "duplicate_next_event",
    "stale_event",
    "stop_watcher",
    "start_watcher",
    "wait",
    "expect",
    "capture",
    "assert",
];

fn unit_action(kind: &str) -> Option<Action> {
    Some(match kind {
        "drop_watches" => Action::DropWatches,
        "expire_next_watch" => Action::ExpireNextWatch,
        "restart_apiserver" => Action::RestartApiserver,
        "duplicate_next_event" => Action::DuplicateNextEvent,
        "stop_watcher" => Action::StopWatcher,
        "start_watcher" => Action::StartWatcher,
        "wait" => Action::Wait(Wait::Synced(None)),
        _ => return None,
    })
}

fn unknown_kind(kind: &str) -> String {
    format!(
        "unknown step kind `{kind}`; expected one of {} (plus the keys `note` and `capture`)",
        STEP_KINDS.join(", ")
    )
}

/// The value of a step's `capture` key: a variable name (beside another step kind) or the
/// body of a `capture` step.
enum CaptureKey {
    Var(String),
    Step(Capture),
}

impl<'de> Deserialize<'de> for CaptureKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CaptureKey, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CaptureKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a variable name, or a capture step `{as: var, kind: ..., name: ...}`")
            }
            fn visit_str<E: de::Error>(self, var: &str) -> Result<CaptureKey, E> {
                Ok(CaptureKey::Var(var.to_string()))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<CaptureKey, M::Error> {
                Capture::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(CaptureKey::Step)
            }
        }
        d.deserialize_any(V)
    }
}

/// One step: exactly one step kind, plus an optional `note` (printed in the report) and
/// an optional `capture` (a variable for the uid of the object the step wrote).
#[derive(Debug, Clone)]
struct Step {
    action: Action,
    note: Option<String>,
    capture: Option<String>,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Step;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step: a map with one step kind (e.g. `expect: {...}`) or a bare step kind (e.g. `drop_watches`)")
            }
            fn visit_str<E: de::Error>(self, kind: &str) -> Result<Step, E> {
                let action = match unit_action(kind) {
                    Some(action) => action,
                    None if STEP_KINDS.contains(&kind) => {
                        return Err(E::custom(format!(
                            "step kind `{kind}` needs fields: write `{kind}: {{...}}`"
                        )))
                    }
                    None => return Err(E::custom(unknown_kind(kind))),
                };
                Ok(Step {
                    action,
                    note: None,
                    capture: None,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Step, M::Error> {
                let mut action: Option<(String, Action)> = None;
                let mut note = None;
                let mut capture = None;
                while let Some(key) = map.next_key::<String>()? {
                    let parsed = match key.as_str() {
                        "note" => {
                            note = Some(map.next_value()?);
                            continue;
                        }
                        "capture" => match map.next_value::<CaptureKey>()? {
                            // `capture: var` beside another step kind names the uid it writes.
                            CaptureKey::Var(var) => {
                                capture = Some(var);
                                continue;
                            }
                            CaptureKey::Step(step) => Action::Capture(step),
                        },
                        "apply" => Action::Apply(Box::new(map.next_value()?)),
                        "delete" => Action::Delete(map.next_value()?),
                        "patch" => Action::Patch(Box::new(map.next_value()?)),
                        "create_pool" => Action::CreatePool(map.next_value()?),
                        "claim_warm" => Action::ClaimWarm(map.next_value()?),
                        "claim_cold" => Action::ClaimCold(map.next_value()?),
                        "delete_claim" => Action::DeleteClaim(map.next_value()?),
                        "expire_claim" => Action::ExpireClaim(map.next_value()?),
                        "replace_pod" => Action::ReplacePod(map.next_value()?),
                        "expire_sandbox" => Action::ExpireSandbox(map.next_value()?),
                        "stale_event" => Action::StaleEvent(map.next_value()?),
                        "wait" => Action::Wait(map.next_value()?),
                        "expect" => Action::Expect(Box::new(map.next_value()?)),
                        "assert" => Action::Assert(Box::new(map.next_value()?)),
                        other => match unit_action(other) {
                            Some(action) => {
                                let _: Option<Empty> = map.next_value()?;
                                action
                            }
                            None => return Err(de::Error::custom(unknown_kind(other))),
                        },
                    };
                    if let Some((first, _)) = &action {
                        return Err(de::Error::custom(format!(
                            "a step has exactly one step kind; this one has `{first}` and `{key}` (start a new `- ` item)"
                        )));
                    }
                    action = Some((key, parsed));
                }
                let action = match action {
                    Some((_, action)) => action,
                    None if note.is_some() && capture.is_none() => Action::Note,
                    None => {
                        return Err(de::Error::custom(format!(
                            "a step needs a step kind: one of {}",
                            STEP_KINDS.join(", ")
                        )))
                    }
                };
                Ok(Step {
                    action,
                    note,
                    capture,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Step {
    fn kind(&self) -> &'static str {
        match &self.action {
            Action::Note => "note",
            Action::Apply(_) => "apply",
            Action::Delete(_) => "delete",
            Action::Patch(_) => "patch",
            Action::CreatePool(_) => "create_pool",
            Action::ClaimWarm(_) => "claim_warm",
            Action::ClaimCold(_) => "claim_cold",
            Action::DeleteClaim(_) => "delete_claim",
            Action::ExpireClaim(_) => "expire_claim",
            Action::ReplacePod(_) => "replace_pod",
            Action::ExpireSandbox(_) => "expire_sandbox",
            Action::DropWatches => "drop_watches",
            Action::ExpireNextWatch => "expire_next_watch",
            Action::RestartApiserver => "restart_apiserver",
            Action::DuplicateNextEvent => "duplicate_next_event",
            Action::StaleEvent(_) => "stale_event",
            Action::StopWatcher => "stop_watcher",
            Action::StartWatcher => "start_watcher",
            Action::Wait(_) => "wait",
            Action::Expect(_) => "expect",
            Action::Capture(_) => "capture",
            Action::Assert(_) => "assert",
        }
    }

    /// Whether the step writes an object whose uid `capture` can take.
    fn writes_object(&self) -> bool {
        matches!(
            self.action,
            Action::Apply(_)
                | Action::Patch(_)
                | Action::CreatePool(_)
                | Action::ClaimWarm(_)
                | Action::ClaimCold(_)
                | Action::ReplacePod(_)
        )
    }

    /// Whether the step needs the watcher or the ledger: `sim --scenario` skips these, the
    /// cluster carries out every other step.
    fn needs_ledger(&self) -> bool {
        matches!(
            self.action,
            Action::StopWatcher
                | Action::StartWatcher
                | Action::Wait(Wait::Synced(_) | Wait::Ready(_))
                | Action::Expect(_)
                | Action::Assert(_)
        )
    }

    /// Whether a failure of this step is an expectation that failed (the file goes on)
    /// rather than a step that could not be carried out (the file stops).
    fn is_check(&self) -> bool {
        matches!(self.action, Action::Expect(_) | Action::Assert(_))
    }
}

// ---------------------------------------------------------------------------------------
// Loading and validation.
// ---------------------------------------------------------------------------------------

/// Reads and validates one scenario file; the error names the file and, where it can, the
/// step and its line. `scenario run` and `sim --scenario` load files alike.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read the file: {e}"))?;
    let mut scenario: Scenario = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{name}: {}", one_based_steps(&e.to_string())))?;
    scenario.lines = step_lines(&text, scenario.steps.len());
    validate(&scenario).map_err(|e| format!("{name}: {e}"))?;
    Ok(scenario)
}

/// serde's paths count from 0 (`steps[3].expect`); the report counts steps from 1.
fn one_based_steps(message: &str) -> String {
    let Some(rest) = message.strip_prefix("steps[") else {
        return message.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return message.to_string();
    };
    match index.parse::<usize>() {
        Ok(index) => match tail.strip_prefix('.') {
            Some(field) => format!("step {}, {field}", index + 1),
            None => format!("step {}{tail}", index + 1),
        },
        Err(_) => message.to_string(),
    }
}

/// The 1-based line of each item of the top-level `steps:` block sequence; all `None` when
/// the file is written some other way (a flow sequence).
fn step_lines(text: &str, count: usize) -> Vec<Option<usize>> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_end() == "steps:" || l.starts_with("steps: #"))
    else {
        return vec![None; count];
    };
    let mut found = Vec::new();
    let mut indent = None;
    for (index, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let column = line.len() - trimmed.len();
        if column == 0 && !trimmed.starts_with('-') {
            break;
        }
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if is_item => {
                indent = Some(column);
                found.push(Some(index + 1));
            }
            Some(i) if column == i && is_item => found.push(Some(index + 1)),
            Some(i) if column < i => break,
            _ => {}
        }
    }
    if found.len() == count {
        found
    } else {
        vec![None; count]
    }
}

fn validate(scenario: &Scenario) -> Result<(), String> {
    if scenario.steps.is_empty() {
        return Err("the scenario has no steps".into());
    }
    let mut defined: HashSet<String> = HashSet::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let at = step_label(index, scenario.lines.get(index).copied().flatten());
        let fail = |message: String| Err(format!("{at} ({}): {message}", step.kind()));
        if let Err(message) = validate_step(step, scenario) {
            return fail(message);
        }
        let body = serde_json::to_value(&step.action).unwrap_or(Value::Null);
        let mut used = Vec::new();
        collect_vars(&body, &mut used);
        if let Some(var) = used.iter().find(|v| !defined.contains(*v)) {
            let known = if defined.is_empty() {
                "none yet".to_string()
            } else {
                let mut names: Vec<&str> = defined.iter().map(String::as_str).collect();
                names.sort_unstable();
                names.join(", ")
            };
            return fail(format!(
                "`${{{var}}}` is used before any step captures it (captured so far: {known})"
            ));
        }
        if let Some(var) = &step.capture {
            if !step.writes_object() {
                return fail(format!(
                    "`capture: {var}` is only allowed on steps that write an object (apply, patch, create_pool, claim_warm, claim_cold, replace_pod); use a `capture` step"
                ));
            }
            check_var_name(var).or_else(fail)?;
            defined.insert(var.clone());
        }
        if let Action::Capture(capture) = &step.action {
            check_var_name(&capture.var).or_else(fail)?;
            defined.insert(capture.var.clone());
        }
    }
    Ok(())
}

fn check_var_name(var: &str) -> Result<(), String> {
    let valid = !var.is_empty()
        && var
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && var != "uid";
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid variable name `{var}`: use letters, digits, `_` and `-` (and not `uid`)"
        ))
    }
}

fn validate_step(step: &Step, scenario: &Scenario) -> Result<(), String> {
    let controllers = scenario.simulator.controllers;
    match &step.action {
        Action::CreatePool(_)
        | Action::ClaimWarm(_)
        | Action::ClaimCold(_)
        | Action::DeleteClaim(_)
        | Action::ExpireClaim(_)
        | Action::ReplacePod(_)
        | Action::ExpireSandbox(_)
            if !controllers =>
        {
            Err(format!(
                "`{}` is a controller action, and this scenario sets `simulator: {{controllers: false}}`",
                step.kind()
            ))
        }
        Action::Apply(object) => {
            if !object.is_object() {
                return Err("`apply` takes one Kubernetes object (a map)".into());
            }
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
            if Resource::from_kind(kind).is_none() {
                return Err(format!(
                    "the object's kind is {kind:?}; the simulator serves {}",
                    Resource::ALL.map(|r| r.kind()).join(", ")
                ));
            }
            if object.pointer("/metadata/name").and_then(Value::as_str).is_none()
                && object.pointer("/metadata/generateName").is_none()
            {
                return Err("the object has no metadata.name".into());
            }
            if object.get("apiVersion").and_then(Value::as_str).is_none() {
                return Err("the object has no apiVersion".into());
            }
            Ok(())
        }
        Action::Patch(patch) if !patch.merge.is_object() => {
            Err("`merge` must be a map (a JSON merge patch)".into())
        }
        Action::ReplacePod(target) | Action::ExpireSandbox(target) => {
            if target.sandbox.is_some() == target.claim.is_some() {
                return Err("name exactly one of `sandbox` and `claim`".into());
            }
            if matches!(step.action, Action::ReplacePod(_)) && target.shutdown_policy.is_some() {
                return Err("`shutdown_policy` belongs to `expire_sandbox`".into());
            }
            Ok(())
        }
        Action::Capture(capture) => {
            if capture.name.is_some() == capture.owned_by.is_some() {
                return Err("name exactly one of `name` and `owned_by`".into());
            }
            if let Some(owner) = &capture.owned_by {
                let valid = owner
                    .split_once('/')
                    .is_some_and(|(k, n)| Resource::from_kind(k).is_some() && !n.is_empty());
                if !valid {
                    return Err(format!(
                        "`owned_by: {owner}` must be `Kind/name`, e.g. SandboxWarmPool/my-pool"
                    ));
                }
            }
            Ok(())
        }
        Action::Expect(expect) => validate_expect(expect),
        Action::Assert(assert) => match assert.as_ref() {
            Assert::LogHas(log) => {
                if let Some(kind) = log.kind {
                    if kind.object_kind().is_none() {
                        return Err(format!("the ledger records no {}", kind.0.kind()));
                    }
                }
                if let (Some(least), Some(most)) = (log.at_least, log.at_most) {
                    if least > most {
                        return Err(format!("at_least {least} is more than at_most {most}"));
                    }
                }
                Ok(())
            }
            Assert::Object(object) if object.kind.object_kind().is_none() => {
                Err(format!("the ledger records no {}", object.kind.0.kind()))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn validate_expect(expect: &Expect) -> Result<(), String> {
    if expect.pod.is_some() == expect.pod_of_claim.is_some() {
        return Err("name the pod with exactly one of `pod` (its name) and `pod_of_claim`".into());
    }
    let not_ready = |r: Reason| matches!(r, Reason::LedgerNotReady | Reason::LedgerBehind);
    match (expect.decision, expect.reason) {
        (None, None) => {
            Err("say what is expected: `decision` (allow, deny, not_ready) and/or `reason`".into())
        }
        (Some(Verdict::Allow), Some(reason)) => Err(format!(
            "`decision: allow` has no reason, yet `reason: {reason}` is given"
        )),
        (Some(Verdict::Deny), Some(reason)) if not_ready(reason) => Err(format!(
            "{reason} comes with `decision: not_ready`, not deny"
        )),
        (Some(Verdict::NotReady), Some(reason)) if !not_ready(reason) => Err(format!(
            "`decision: not_ready` comes with LEDGER_NOT_READY or LEDGER_BEHIND, not {reason}"
        )),
        _ => Ok(()),
    }
}

/// Every `${name}` (not the `${uid:...}` lookups) in the strings of `value`.
fn collect_vars(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                let name = &after[..end];
                if !name.starts_with("uid:") {
                    out.push(name.to_string());
                }
                rest = &after[end + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_vars(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                collect_vars(&Value::String(key.clone()), out);
                collect_vars(v, out);
            }
        }
        _ => {}
    }
}

fn step_label(index: usize, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("step {} (line {line})", index + 1),
        None => format!("step {}", index + 1),
    }
}

// ---------------------------------------------------------------------------------------
// Running.
// ---------------------------------------------------------------------------------------

const POLL: Duration = Duration::from_millis(20);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive polls with an unchanged head (and the projection equal to the simulator's
/// truth) before the ledger counts as synced.
const STABLE_POLLS: u32 = 3;

struct Watching {
    readiness: Readiness,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
}

/// Watch counters summed over every watcher run of the scenario.
#[derive(Debug, Clone, Copy, Default)]
struct WatchTotals {
    relists: u64,
    resync_deletions: u64,
    watch_errors: u64,
}

/// The cluster side of a run: the simulator being driven, the scenario and the variables
/// captured so far. It carries out every step that acts on the cluster alone (objects,
/// controller actions, faults, captures, sleeps): for `scenario run` inside a [`Run`],
/// which adds the watcher and the ledger, and for `claim-ledger sim --scenario` by itself
/// against the simulator being served.
struct Cluster<'a> {
    scenario: &'a Scenario,
    sim: Simulator,
    vars: HashMap<String, String>,
}

/// A `scenario run`: the cluster, plus the kube client, the watcher and the ledger that
/// the expectations, assertions, syncs and watcher steps need.
struct Run<'a> {
    cluster: Cluster<'a>,
    served: Served,
    client: kube::Client,
    ledger: SharedLedger,
    watching: Option<Watching>,
    past: WatchTotals,
}

/// A step's result: what happened, or why it failed.
type StepResult = Result<String, String>;

/// What carries out a scenario's steps for [`run_steps`]: a [`Run`] (every step) or a
/// [`Cluster`] alone (the steps that need the watcher or the ledger are skipped).
trait Executor {
    /// Carries out one step; `None` when this executor skips it.
    async fn execute(&mut self, step: &Step) -> Option<StepResult>;
}

impl Executor for Run<'_> {
    async fn execute(&mut self, step: &Step) -> Option<StepResult> {
        Some(self.step(step).await)
    }
}

impl Executor for Cluster<'_> {
    async fn execute(&mut self, step: &Step) -> Option<StepResult> {
        if step.needs_ledger() {
            None
        } else {
            Some(self.step(step).await)
        }
    }
}

/// How a scenario's steps went.
struct Tally {
    /// The first step that failed, as labelled in the report.
    first_failure: Option<String>,
    /// Whether a step that could not be carried out stopped the steps after it.
    stopped: bool,
    /// Steps the executor skipped.
    skipped: usize,
    /// The width of the step labels, to align what is printed after the steps.
    width: usize,
}

/// Runs every step in order, printing one line each (`ok`, `pass`, `skip` or `FAIL`, the
/// step and its line, the step as written, what happened). A failed expectation or
/// assertion is reported and the steps go on; a step that cannot be carried out stops them.
async fn run_steps(scenario: &Scenario, executor: &mut impl Executor) -> Tally {
    let total = scenario.steps.len();
    let labels: Vec<String> = (0..total)
        .map(|i| step_label(i, scenario.lines.get(i).copied().flatten()))
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let mut tally = Tally {
        first_failure: None,
        stopped: false,
        skipped: 0,
        width,
    };
    for (index, step) in scenario.steps.iter().enumerate() {
        let label = format!("{:<width$}", labels[index]);
        if let Some(note) = &step.note {
            println!("   # {note}");
        }
        if matches!(step.action, Action::Note) {
            continue;
        }
        let summary = summarize(step);
        match executor.execute(step).await {
            None => {
                tally.skipped += 1;
                println!(
                    "   skip  {label}  {summary} -- needs the watcher and the ledger (`scenario run`)"
                );
            }
            Some(Ok(detail)) => {
                let mark = if step.is_check() { "pass" } else { "ok  " };
                println!("   {mark}  {label}  {summary}{}", suffix(&detail));
            }
            Some(Err(message)) => {
                println!("   FAIL  {label}  {summary}");
                for line in message.lines() {
                    println!("           {line}");
                }
                tally
                    .first_failure
                    .get_or_insert_with(|| labels[index].clone());
                if !step.is_check() {
                    println!(
                        "   stopped: {} step(s) not run after a step that could not be carried out",
                        total - index - 1
                    );
                    tally.stopped = true;
                    break;
                }
            }
        }
    }
    tally
}

/// `claim-ledger sim --scenario`: runs the file's cluster steps against `sim` (the
/// simulator being served, configured by [`Scenario::sim_config`]) and prints one line
/// per step. Steps that need the watcher or the ledger (`expect`, `assert`,
/// `wait: synced`/`ready`, `stop_watcher`, `start_watcher`) are skipped with a note, and
/// so are the final checks. `true` when every step that ran was carried out.
pub async fn drive(path: &Path, scenario: &Scenario, sim: Simulator) -> bool {
    let file = path.display();
    println!(
        "== {file}: {} ({})",
        scenario.name,
        scenario.describe_cluster()
    );
    let mut cluster = Cluster {
        scenario,
        sim,
        vars: HashMap::new(),
    };
    let tally = run_steps(scenario, &mut cluster).await;
    match &tally.first_failure {
        None => {
            println!(
                "== {file}: done ({} step(s) skipped: they need the watcher and the ledger)",
                tally.skipped
            );
            true
        }
        Some(where_) => {
            println!("== {file}: FAILED ({where_})");
            false
        }
    }
}

/// Runs one file and prints its report; `None` when everything passed, else where it failed.
async fn run_scenario(path: &Path, scenario: &Scenario) -> Option<String> {
    let file = path.display();
    println!(
        "== {file}: {} ({})",
        scenario.name,
        scenario.describe_cluster()
    );
    let dir = match TempDir::new() {
        Ok(dir) => dir,
        Err(e) => {
            println!("   FAIL  cannot create a temporary directory: {e}");
            return Some("setup".into());
        }
    };
    let (stop_sim, sim_stopped) = oneshot::channel::<()>();
    let setup = start_cluster(scenario, &dir.0, sim_stopped).await;
    let (mut run, server) = match setup {
        Ok(parts) => parts,
        Err(e) => {
            println!("   FAIL  setup: {e}");
            return Some("setup".into());
        }
    };
    let failure = run.steps().await;
    run.stop_watcher_quietly().await;
    let Run { ledger, .. } = run;
    drop(ledger);
    let _ = stop_sim.send(());
    let _ = server.await;
    drop(dir);
    match &failure {
        None => println!("== {file}: passed"),
        Some(where_) => println!("== {file}: FAILED ({where_})"),
    }
    failure
}

async fn start_cluster<'a>(
    scenario: &'a Scenario,
    dir: &Path,
    stopped: oneshot::Receiver<()>,
) -> Result<(Run<'a>, tokio::task::JoinHandle<std::io::Result<()>>), String> {
    let sim = Simulator::new(scenario.sim_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let server = tokio::spawn({
        let sim = sim.clone();
        async move {
            sim.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(&url)).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let ledger = Ledger::open(dir, LedgerConfig::default())
        .map_err(|e| format!("cannot open the ledger: {e}"))?;
    let run = Run {
        cluster: Cluster {
            scenario,
            sim,
            vars: HashMap::new(),
        },
        served: scenario.served(),
        client,
        ledger: SharedLedger::new(ledger),
        watching: None,
        past: WatchTotals::default(),
    };
    Ok((run, server))
}

impl Run<'_> {
    fn timeout(&self, own: Option<Dur>) -> Duration {
        own.or(self.cluster.scenario.timeout)
            .map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    /// Runs every step, then the final checks; `None` when all passed.
    async fn steps(&mut self) -> Option<String> {
        let scenario = self.cluster.scenario;
        if scenario.watcher.start {
            self.start_watcher();
            let timeout = self.timeout(None);
            if let Err(e) = self.wait_synced(timeout).await {
                println!("   FAIL  setup: the watcher did not sync: {e}");
                return Some("setup".into());
            }
        }
        let Tally {
            mut first_failure,
            stopped,
            width,
            ..
        } = run_steps(scenario, self).await;
        if stopped {
            return first_failure;
        }
        if scenario.final_checks {
            for (name, result) in self.final_checks().await {
                match result {
                    Ok(detail) => {
                        println!("   pass  {:<width$}  {name}{}", "final", suffix(&detail))
                    }
                    Err(message) => {
                        println!("   FAIL  {:<width$}  {name}", "final");
                        for line in message.lines() {
                            println!("           {line}");
                        }
                        first_failure.get_or_insert_with(|| format!("final check {name}"));
                    }
                }
            }
        }
        first_failure
    }

    async fn final_checks(&mut self) -> Vec<(&'static str, StepResult)> {
        let mut results = Vec::new();
        if self.watching.is_some() {
            let timeout = self.timeout(None);
            results.push(("matches_simulator", self.wait_synced(timeout).await));
        } else {
            results.push((
                "matches_simulator",
                Ok("skipped: the watcher is stopped".into()),
            ));
        }
        results.push(("chain_verifies", self.chain_verifies()));
        results.push(("no_duplicate_versions", self.no_duplicate_versions()));
        results
    }

    /// Carries out any step: those that need the watcher or the ledger here, the others
    /// on the cluster.
    async fn step(&mut self, step: &Step) -> StepResult {
        match &step.action {
            Action::StopWatcher => {
                let watching = self.watching.take().ok_or("the watcher is not running")?;
                let head = self.stop_watcher(watching).await?;
                Ok(format!("ledger head seq {head}"))
            }
            Action::StartWatcher => {
                if self.watching.is_some() {
                    return Err("the watcher is already running".into());
                }
                self.start_watcher();
                Ok(String::new())
            }
            Action::Wait(Wait::Ready(timeout)) => self.wait_ready(*timeout).await,
            Action::Wait(Wait::Synced(timeout)) => self.wait_synced(self.timeout(*timeout)).await,
            Action::Expect(expect) => self.expect(expect).await,
            Action::Assert(assert) => self.assert(assert).await,
            _ => self.cluster.step(step).await,
        }
    }
}

impl Cluster<'_> {
    fn ns(&self, namespace: &Option<String>) -> Result<String, String> {
        match namespace {
            Some(ns) => self.subst(ns),
            None => Ok(self.scenario.namespace.clone()),
        }
    }

    /// Carries out a step that acts on the cluster alone (every step but those
    /// [`Step::needs_ledger`] names, which are refused here).
    async fn step(&mut self, step: &Step) -> StepResult {
        let (detail, written) = match &step.action {
            Action::Note => return Ok(String::new()),
            Action::Apply(object) => {
                let mut object = self.subst_value(object)?;
                if object.pointer("/metadata/namespace").is_none() {
                    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("namespace".into(), self.scenario.namespace.clone().into());
                    }
                }
                let written = self.sim.apply(object).map_err(|e| e.to_string())?;
                (describe_written(&written), Some(written))
            }
            Action::Delete(delete) => {
                let ns = self.ns(&delete.namespace)?;
                let name = self.subst(&delete.name)?;
                self.sim
                    .delete(delete.kind.0, &ns, &name, delete.propagation.propagation())
                    .map_err(|e| e.to_string())?;
                (String::new(), None)
            }
            Action::Patch(patch) => {
                let written = self.patch(patch)?;
                (describe_written(&written), Some(written))
            }
            Action::CreatePool(pool) => {
                let ns = self.ns(&pool.namespace)?;
                let name = self.subst(&pool.name)?;
                let template = match &pool.template {
                    Some(t) => self.subst(t)?,
                    None => format!("{name}-template"),
                };
                let written = self
                    .sim
                    .create_pool(&ns, &name, pool.replicas, &template, pool.pvc)
                    .map_err(|e| e.to_string())?;
                let sandboxes: Vec<String> = self
                    .owned_by(Resource::Sandbox, &ns, "SandboxWarmPool", &name)
                    .iter()
                    .map(|s| name_of(s).to_string())
                    .collect();
                (
                    format!("warm sandboxes: {}", sandboxes.join(", ")),
                    Some(written),
                )
            }
            Action::ClaimWarm(claim) => {
                let ns = self.ns(&claim.namespace)?;
                let name = self.subst(&claim.name)?;
                let pool = self.subst(&claim.pool)?;
                let id = claim
                    .sandbox_id
                    .as_deref()
                    .map(|s| self.subst(s))
                    .transpose()?;
                let mut written = self
                    .sim
                    .claim_warm(&ns, &name, &pool, id.as_deref())
                    .map_err(|e| e.to_string())?;
                if let Some(policy) = &claim.shutdown_policy {
                    written = self.set_claim_policy(&ns, &name, policy)?;
                }
                (describe_claim(&written), Some(written))
            }
            Action::ClaimCold(claim) => {
                let ns = self.ns(&claim.namespace)?;
                let name = self.subst(&claim.name)?;
                let id = claim
                    .sandbox_id
                    .as_deref()
                    .map(|s| self.subst(s))
                    .transpose()?;
                let mut written = self
                    .sim
                    .claim_cold(&ns, &name, id.as_deref())
                    .map_err(|e| e.to_string())?;
                if let Some(policy) = &claim.shutdown_policy {
                    written = self.set_claim_policy(&ns, &name, policy)?;
                }
                (describe_claim(&written), Some(written))
            }
            Action::DeleteClaim(claim) => {
                let ns = self.ns(&claim.namespace)?;
                let name = self.subst(&claim.name)?;
                self.sim
                    .delete_claim(&ns, &name, claim.propagation.propagation())
                    .map_err(|e| e.to_string())?;
                (String::new(), None)
            }
            Action::ExpireClaim(claim) => {
                let ns = self.ns(&claim.namespace)?;
                let name = self.subst(&claim.name)?;
                self.sim
                    .expire_claim(&ns, &name)
                    .map_err(|e| e.to_string())?;
                (String::new(), None)
            }
            Action::ReplacePod(target) => {
                let (ns, sandbox) = self.sandbox_target(target)?;
                let old = self
                    .sim
                    .get(Resource::Pod, &ns, &self.pod_name_of(&ns, &sandbox));
                let written = self
                    .sim
                    .replace_pod(&ns, &sandbox)
                    .map_err(|e| e.to_string())?;
                let detail = format!(
                    "pod {ns}/{}: uid {} -> {}",
                    name_of(&written),
                    old.as_ref().map_or("-", |o| uid_of(o)),
                    uid_of(&written)
                );
                (detail, Some(written))
            }
            Action::ExpireSandbox(target) => {
                let (ns, sandbox) = self.sandbox_target(target)?;
                if let Some(policy) = &target.shutdown_policy {
                    let patch = json!({"spec": {"shutdownPolicy": self.subst(policy)?}});
                    self.sim
                        .merge_patch(Resource::Sandbox, &ns, &sandbox, patch, false)
                        .map_err(|e| e.to_string())?;
                }
                self.sim
                    .expire_sandbox(&ns, &sandbox)
                    .map_err(|e| e.to_string())?;
                (format!("sandbox {ns}/{sandbox}"), None)
            }
            Action::DropWatches => {
                self.sim.drop_watches();
                (String::new(), None)
            }
            Action::ExpireNextWatch => {
                self.sim.expire_next_watch();
                (String::new(), None)
            }
            Action::RestartApiserver => {
                self.sim.restart();
                (String::new(), None)
            }
            Action::DuplicateNextEvent => {
                self.sim.duplicate_next_event();
                (String::new(), None)
            }
            Action::StaleEvent(object) => {
                let ns = self.ns(&object.namespace)?;
                let name = self.subst(&object.name)?;
                if self.sim.get(object.kind.0, &ns, &name).is_none() {
                    return Err(format!(
                        "{} {ns}/{name} does not exist",
                        object.kind.0.kind()
                    ));
                }
                self.sim.deliver_stale_event(object.kind.0, &ns, &name);
                (String::new(), None)
            }
            Action::Wait(Wait::Sleep(pause)) => {
                tokio::time::sleep(pause.0).await;
                (String::new(), None)
            }
            Action::Capture(capture) => (self.capture(capture)?, None),
            Action::StopWatcher
            | Action::StartWatcher
            | Action::Wait(Wait::Synced(_) | Wait::Ready(_))
            | Action::Expect(_)
            | Action::Assert(_) => {
                return Err(format!(
                    "`{}` needs the watcher and the ledger (it runs under `scenario run`)",
                    step.kind()
                ))
            }
        };
        if let (Some(var), Some(written)) = (&step.capture, &written) {
            let uid = uid_of(written).to_string();
            self.vars.insert(var.clone(), uid.clone());
            return Ok(join(&detail, &format!("{var} = {uid}")));
        }
        Ok(detail)
    }

    fn patch(&self, patch: &PatchStep) -> Result<Value, String> {
        let ns = self.ns(&patch.namespace)?;
        let name = self.subst(&patch.name)?;
        let mut body = self.subst_value(&patch.merge)?;
        let status = body.as_object_mut().and_then(|m| m.remove("status"));
        let mut written = None;
        if body.as_object().is_some_and(|m| !m.is_empty()) {
            written = Some(
                self.sim
                    .merge_patch(patch.kind.0, &ns, &name, body, false)
                    .map_err(|e| e.to_string())?,
            );
        }
        if let Some(status) = status {
            written = Some(
                self.sim
                    .merge_patch(patch.kind.0, &ns, &name, json!({"status": status}), true)
                    .map_err(|e| e.to_string())?,
            );
        }
        written.ok_or_else(|| "the merge patch is empty".to_string())
    }

    fn set_claim_policy(&self, ns: &str, claim: &str, policy: &str) -> Result<Value, String> {
        let patch = json!({"spec": {"lifecycle": {"shutdownPolicy": self.subst(policy)?}}});
        self.sim
            .merge_patch(Resource::SandboxClaim, ns, claim, patch, false)
            .map_err(|e| e.to_string())
    }

    /// The namespace and Sandbox name a target names (directly or through a claim).
    fn sandbox_target(&self, target: &SandboxTarget) -> Result<(String, String), String> {
        let ns = self.ns(&target.namespace)?;
        match (&target.sandbox, &target.claim) {
            (Some(sandbox), _) => Ok((ns, self.subst(sandbox)?)),
            (None, Some(claim)) => {
                let claim = self.subst(claim)?;
                let sandbox = self.sandbox_of_claim(&ns, &claim)?;
                Ok((ns, sandbox))
            }
            (None, None) => Err("name `sandbox` or `claim`".into()),
        }
    }

    fn sandbox_of_claim(&self, ns: &str, claim: &str) -> Result<String, String> {
        let object = self
            .sim
            .get(Resource::SandboxClaim, ns, claim)
            .ok_or_else(|| format!("claim {ns}/{claim} does not exist in the simulator"))?;
        object
            .pointer("/status/sandbox/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("claim {ns}/{claim} has no status.sandbox.name"))
    }

    /// The pod name of a Sandbox (its `agents.x-k8s.io/pod-name` annotation, else its name).
    fn pod_name_of(&self, ns: &str, sandbox: &str) -> String {
        self.sim
            .get(Resource::Sandbox, ns, sandbox)
            .and_then(|s| {
                s.pointer("/metadata/annotations/agents.x-k8s.io~1pod-name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| sandbox.to_string())
    }

    fn owned_by(&self, resource: Resource, ns: &str, owner_kind: &str, owner: &str) -> Vec<Value> {
        let mut objects: Vec<Value> = self
            .sim
            .list(resource, Some(ns))
            .into_iter()
            .filter(|o| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r["controller"] == true && r["kind"] == owner_kind && r["name"] == owner
                        })
                    })
            })
            .collect();
        objects.sort_by_key(|o| {
            (
                o.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                o.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0),
            )
        });
        objects
    }

    // ----- variables -----

    fn subst(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {text:?}"))?;
            let name = &after[..end];
            out.push_str(&self.lookup(name)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<String, String> {
        if let Some(path) = name.strip_prefix("uid:") {
            let parts: Vec<&str> = path.split('/').collect();
            let (kind, ns, object) = match parts.as_slice() {
                [kind, object] => (*kind, self.scenario.namespace.as_str(), *object),
                [kind, ns, object] => (*kind, *ns, *object),
                _ => {
                    return Err(format!(
                    "`${{{name}}}`: write `${{uid:Kind/name}}` or `${{uid:Kind/namespace/name}}`"
                ))
                }
            };
            let resource = Resource::from_kind(kind)
                .ok_or_else(|| format!("`${{{name}}}`: unknown kind {kind}"))?;
            return self
                .sim
                .get(resource, ns, object)
                .map(|o| uid_of(&o).to_string())
                .ok_or_else(|| {
                    format!("`${{{name}}}`: {kind} {ns}/{object} does not exist in the simulator")
                });
        }
        self.vars
            .get(name)
            .cloned()
            .ok_or_else(|| format!("`${{{name}}}` was never captured"))
    }

    fn subst_value(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(text) => Value::String(self.subst(text)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.subst_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((self.subst(k)?, self.subst_value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn capture(&mut self, capture: &Capture) -> StepResult {
        let ns = self.ns(&capture.namespace)?;
        let resource = capture.kind.0;
        let object = match (&capture.name, &capture.owned_by) {
            (Some(name), _) => {
                let name = self.subst(name)?;
                self.sim.get(resource, &ns, &name).ok_or_else(|| {
                    format!(
                        "{} {ns}/{name} does not exist in the simulator",
                        resource.kind()
                    )
                })?
            }
            (None, Some(owner)) => {
                let owner = self.subst(owner)?;
                let (kind, name) = owner.split_once('/').unwrap_or((&owner, ""));
                let mut owned = self.owned_by(resource, &ns, kind, name);
                let picked = match capture.pick {
                    Pick::Oldest if !owned.is_empty() => Some(owned.remove(0)),
                    Pick::Newest => owned.pop(),
                    Pick::Oldest => None,
                };
                picked.ok_or_else(|| {
                    format!("no {} in {ns} is controlled by {owner}", resource.kind())
                })?
            }
            (None, None) => return Err("name `name` or `owned_by`".into()),
        };
        let field = capture.field.as_deref().unwrap_or("metadata.uid");
        let pointer = format!("/{}", field.split('.').collect::<Vec<_>>().join("/"));
        let value = match object.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err(format!(
                    "{} {ns}/{} has no {field}",
                    resource.kind(),
                    name_of(&object)
                ))
            }
            Some(other) => other.to_string(),
        };
        self.vars.insert(capture.var.clone(), value.clone());
        Ok(format!(
            "{} = {value} ({} {ns}/{} {field})",
            capture.var,
            resource.kind(),
            name_of(&object)
        ))
    }
}

impl Run<'_> {
    // ----- the watcher -----

    fn start_watcher(&mut self) {
        let settings = &self.cluster.scenario.watcher;
        let unready_after = settings
            .unready_after
            .map_or(Duration::from_secs(30), |d| d.0);
        let readiness = Readiness::new(unready_after);
        let (stop, stopped) = oneshot::channel::<()>();
        let options = WatchOptions {
            namespaces: settings.namespaces.clone(),
            unready_after,
            ..WatchOptions::default()
        };
        let task = tokio::spawn(watcher::run(
            self.client.clone(),
            self.ledger.clone(),
            readiness.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        self.watching = Some(Watching {
            readiness,
            stop,
            task,
        });
    }

    async fn stop_watcher(&mut self, watching: Watching) -> Result<u64, String> {
        let counters = watching.readiness.counters();
        self.past.relists += counters.relists;
        self.past.resync_deletions += counters.resync_deletions;
        self.past.watch_errors += counters.watch_errors;
        let _ = watching.stop.send(());
        match watching.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the watcher failed: {e}")),
            Err(e) => return Err(format!("the watcher task failed: {e}")),
        }
        Ok(self.read_ledger().head().seq)
    }

    async fn stop_watcher_quietly(&mut self) {
        if let Some(watching) = self.watching.take() {
            if let Err(e) = self.stop_watcher(watching).await {
                println!("   note: {e}");
            }
        }
    }

    fn ready(&self) -> bool {
        self.watching
            .as_ref()
            .is_some_and(|w| w.readiness.is_ready())
    }

    fn totals(&self) -> WatchTotals {
        let mut totals = self.past;
        if let Some(w) = &self.watching {
            let c = w.readiness.counters();
            totals.relists += c.relists;
            totals.resync_deletions += c.resync_deletions;
            totals.watch_errors += c.watch_errors;
        }
        totals
    }

    fn read_ledger(&self) -> Arc<ledger::LedgerView> {
        self.ledger.view()
    }

    // ----- sync -----

    async fn wait_ready(&self, timeout: Option<Dur>) -> StepResult {
        if self.watching.is_none() {
            return Err("the watcher is stopped: it cannot become ready".into());
        }
        let timeout = self.timeout(timeout);
        let deadline = Instant::now() + timeout;
        while !self.ready() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the watcher was not ready within {}: {}",
                    Dur(timeout),
                    self.stream_report()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(String::new())
    }

    fn stream_report(&self) -> String {
        let Some(w) = &self.watching else {
            return "the watcher is stopped".into();
        };
        if w.task.is_finished() {
            return "the watcher exited (its error is reported when it is stopped)".into();
        }
        w.readiness
            .streams()
            .iter()
            .map(|s| {
                format!(
                    "{} {:?}{}{}",
                    s.resource,
                    s.state,
                    if s.synced { " synced" } else { " not synced" },
                    s.last_error
                        .as_ref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Until the watcher is ready, the projection equals the simulator's truth and the head
    /// has stopped moving.
    async fn wait_synced(&self, timeout: Duration) -> StepResult {
        if self.watching.is_none() {
            return Err("the watcher is stopped: the ledger cannot catch up".into());
        }
        let deadline = Instant::now() + timeout;
        let mut last_head = None;
        let mut stable = 0;
        loop {
            let problem = if self.ready() {
                let head = self.read_ledger().head().seq;
                match self.truth_diff() {
                    Ok(count) => {
                        if last_head == Some(head) {
                            stable += 1;
                        } else {
                            stable = 0;
                            last_head = Some(head);
                        }
                        if stable >= STABLE_POLLS {
                            return Ok(format!("{count} live objects, head seq {head}"));
                        }
                        None
                    }
                    Err(diff) => {
                        stable = 0;
                        last_head = None;
                        Some(diff)
                    }
                }
            } else {
                stable = 0;
                Some(format!(
                    "the watcher is not ready: {}",
                    self.stream_report()
                ))
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "the ledger did not catch up with the simulator within {}: {}",
                    Dur(timeout),
                    problem.unwrap_or_else(|| "the head kept moving".into())
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The simulator's truth as the watcher would record it: every Sandbox and claim, and
    /// the pods and PVCs controlled by a Sandbox (or already recorded), normalized from
    /// what the watcher is served (the preferred version; pods as metadata only).
    fn truth(&self, ledger: &ledger::LedgerView) -> BTreeMap<String, ObjectChange> {
        let namespaces = &self.cluster.scenario.watcher.namespaces;
        let mut truth = BTreeMap::new();
        for resource in [
            Resource::Sandbox,
            Resource::SandboxClaim,
            Resource::Pod,
            Resource::PersistentVolumeClaim,
        ] {
            for mut object in self.cluster.sim.list(resource, None) {
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !namespaces.is_empty() && !namespaces.iter().any(|n| n == ns) {
                    continue;
                }
                match resource {
                    Resource::Pod => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                            map.remove("spec");
                        }
                    }
                    Resource::PersistentVolumeClaim => {}
                    _ => {
                        object["apiVersion"] = resource.preferred_api_version(self.served).into();
                    }
                }
                let Ok(Some(change)) = normalize(WatchEventType::Modified, &object) else {
                    continue;
                };
                let sandbox_owned = change.controller.as_ref().is_some_and(|c| c.is_sandbox());
                let needs_sandbox = matches!(
                    change.kind,
                    ObjectKind::Pod | ObjectKind::PersistentVolumeClaim
                );
                if needs_sandbox
                    && !sandbox_owned
                    && ledger.projection().object(&change.uid).is_none()
                {
                    continue;
                }
                truth.insert(change.uid.clone(), change);
            }
        }
        truth
    }

    /// `Ok(live count)` when the projection's live objects equal the simulator's truth.
    fn truth_diff(&self) -> Result<usize, String> {
        let ledger = self.read_ledger();
        let truth = self.truth(&ledger);
        let live: BTreeMap<&str, &ObjectChange> = ledger
            .projection()
            .live_objects()
            .into_iter()
            .map(|r| (r.current.uid.as_str(), &r.current))
            .collect();
        let mut diffs = Vec::new();
        for (uid, expected) in &truth {
            match live.get(uid.as_str()) {
                None => diffs.push(format!("the ledger lacks {}", describe_change(expected))),
                Some(recorded) if !recorded.same_state_as(expected) => diffs.push(format!(
                    "{} differs: ledger {:?} / simulator {:?}",
                    describe_change(expected),
                    state_of(recorded),
                    state_of(expected)
                )),
                Some(_) => {}
            }
        }
        for (uid, recorded) in &live {
            if !truth.contains_key(*uid) {
                diffs.push(format!(
                    "the ledger holds {} alive; the simulator has no such object",
                    describe_change(recorded)
                ));
            }
        }
        if diffs.is_empty() {
            Ok(live.len())
        } else {
            let more = diffs.len().saturating_sub(5);
            diffs.truncate(5);
            if more > 0 {
                diffs.push(format!("... and {more} more"));
            }
            Err(diffs.join("\n"))
        }
    }

    // ----- expectations -----

    fn request(&self, expect: &Expect) -> Result<CheckRequest, String> {
        let namespace = self.cluster.ns(&expect.namespace)?;
        let pod_name = match (&expect.pod, &expect.pod_of_claim) {
            (Some(pod), _) => self.cluster.subst(pod)?,
            (None, Some(claim)) => {
                let claim = self.cluster.subst(claim)?;
                let sandbox = self.cluster.sandbox_of_claim(&namespace, &claim)?;
                self.cluster.pod_name_of(&namespace, &sandbox)
            }
            (None, None) => return Err("name the pod".into()),
        };
        let pod_uid = match &expect.pod_uid {
            Some(uid) => self.cluster.subst(uid)?,
            None => self
                .cluster
                .sim
                .get(Resource::Pod, &namespace, &pod_name)
                .map(|p| uid_of(&p).to_string())
                .ok_or_else(|| {
                    format!(
                        "pod {namespace}/{pod_name} does not exist in the simulator; name its uid with `pod_uid` (e.g. a captured `${{var}}`)"
                    )
                })?,
        };
        let opt =
            |field: &Option<String>| field.as_deref().map(|s| self.cluster.subst(s)).transpose();
        let min_seq = match expect.min_seq {
            None => None,
            Some(SeqRef::Absolute(n)) => Some(n),
            Some(SeqRef::Head(offset)) => {
                let head = self.read_ledger().head().seq;
                Some(head.saturating_add_signed(offset))
            }
        };
        Ok(CheckRequest {
            namespace,
            pod_name,
            pod_uid,
            sandbox_id: opt(&expect.sandbox_id)?,
            sandbox_name: opt(&expect.sandbox_name)?,
            sandbox_uid: opt(&expect.sandbox_uid)?,
            claim_uid: opt(&expect.claim_uid)?,
            require_claim: expect.require_claim,
            min_seq,
        })
    }

    async fn expect(&self, expect: &Expect) -> StepResult {
        let timeout = self.timeout(expect.timeout);
        let deadline = Instant::now() + timeout;
        let mut sync_note = String::new();
        if expect.sync && self.watching.is_some() {
            if let Err(e) = self.wait_synced(timeout).await {
                sync_note = format!("\n(before asking: {e})");
            }
        }
        let request = self.request(expect)?;
        let wanted_verdict = expect.decision.unwrap_or(match expect.reason {
            Some(Reason::LedgerNotReady | Reason::LedgerBehind) => Verdict::NotReady,
            _ => Verdict::Deny,
        });
        let asked = describe_request(&request);
        loop {
            let decision = self.read_ledger().check(&request, self.ready());
            let holds = decision.decision == wanted_verdict
                && expect.reason.is_none_or(|r| decision.reason == Some(r));
            if holds {
                return Ok(format!("{asked}: {}", describe_decision(&decision)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{asked}\nexpected {}, got {} (last answer, after {}){sync_note}",
                    describe_expected(wanted_verdict, expect.reason),
                    describe_decision(&decision),
                    Dur(timeout)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // ----- assertions -----

    async fn assert(&self, assert: &Assert) -> StepResult {
        match assert {
            Assert::ChainVerifies => self.chain_verifies(),
            Assert::NoDuplicateVersions => self.no_duplicate_versions(),
            Assert::MatchesSimulator(timeout) => self.wait_synced(self.timeout(*timeout)).await,
            Assert::LogHas(log) => {
                let filter = self.resolve_log_filter(log)?;
                self.poll(log.timeout, || self.log_has(log, &filter)).await
            }
            Assert::Counters(counters) => {
                self.poll(counters.timeout, || self.counters(counters))
                    .await
            }
            Assert::Object(object) => {
                let resolved = (
                    self.cluster.ns(&object.namespace)?,
                    self.cluster.subst(&object.name)?,
                    object
                        .uid
                        .as_deref()
                        .map(|u| self.cluster.subst(u))
                        .transpose()?,
                    object
                        .controller
                        .as_deref()
                        .map(|c| self.cluster.subst(c))
                        .transpose()?,
                );
                self.poll(object.timeout, || self.object(object, &resolved))
                    .await
            }
        }
    }

    /// Retries `check` until it holds or the timeout expires; reports its last failure.
    async fn poll(&self, timeout: Option<Dur>, check: impl Fn() -> StepResult) -> StepResult {
        let timeout = self.timeout(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(detail) => return Ok(detail),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("{e} (last answer, after {})", Dur(timeout)))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn chain_verifies(&self) -> StepResult {
        let report = self
            .read_ledger()
            .verify()
            .map_err(|e| format!("cannot verify: {e}"))?;
        match &report.failure {
            None => Ok(format!(
                "{} entries, head seq {}",
                report.entries, report.head_seq
            )),
            Some(failure) => Err(format!("the chain does not verify: {failure}")),
        }
    }

    fn no_duplicate_versions(&self) -> StepResult {
        let ledger = self.read_ledger();
        let head = ledger.head().seq;
        let mut seen: HashMap<(String, String, bool), u64> = HashMap::new();
        let mut objects = 0;
        for stored in ledger.entries(1, head) {
            let stored = stored.map_err(|e| format!("cannot read the log: {e}"))?;
            let seq = stored.entry.seq;
            if let Change::Object(change) = &stored.entry.change {
                objects += 1;
                let key = (
                    change.uid.clone(),
                    change.resource_version.clone(),
                    change.change.is_removal(),
                );
                if let Some(first) = seen.insert(key, seq) {
                    return Err(format!(
                        "{} resourceVersion {} ({}) is recorded at seq {first} and again at seq {seq}",
                        describe_change(change),
                        change.resource_version,
                        if change.change.is_removal() { "removal" } else { "live" }
                    ));
                }
            }
        }
        Ok(format!("{objects} object entries"))
    }

    fn resolve_log_filter(&self, log: &LogHas) -> Result<LogFilter, String> {
        let opt =
            |field: &Option<String>| field.as_deref().map(|s| self.cluster.subst(s)).transpose();
        Ok(LogFilter {
            namespace: opt(&log.namespace)?,
            name: opt(&log.name)?,
            uid: opt(&log.uid)?,
            reason: opt(&log.reason)?,
        })
    }

    fn log_has(&self, log: &LogHas, filter: &LogFilter) -> StepResult {
        let ledger = self.read_ledger();
        let head = ledger.head().seq;
        let mut count = 0u64;
        for stored in ledger.entries(1, head) {
            let stored = stored.map_err(|e| format!("cannot read the log: {e}"))?;
            if entry_matches(&stored.entry.change, log, filter) {
                count += 1;
            }
        }
        let least = log
            .at_least
            .unwrap_or(if log.at_most.is_some() { 0 } else { 1 });
        let holds = count >= least && log.at_most.is_none_or(|most| count <= most);
        let bounds = match log.at_most {
            Some(most) => format!("between {least} and {most}"),
            None => format!("at least {least}"),
        };
        if holds {
            Ok(format!("{count} matching entries"))
        } else {
            Err(format!(
                "{count} matching entries in seq 1..={head}, expected {bounds}"
            ))
        }
    }

    fn counters(&self, wanted: &Counters) -> StepResult {
        let stats = self.read_ledger().stats();
        let totals = self.totals();
        let actual = [
            ("appended", wanted.appended, stats.appended),
            ("duplicates", wanted.duplicates, stats.duplicates),
            ("stale", wanted.stale, stats.stale),
            ("ignored", wanted.ignored, stats.ignored),
            ("relists", wanted.relists, totals.relists),
            (
                "resync_deletions",
                wanted.resync_deletions,
                totals.resync_deletions,
            ),
            ("watch_errors", wanted.watch_errors, totals.watch_errors),
        ];
        let short: Vec<String> = actual
            .iter()
            .filter_map(|(name, want, got)| {
                want.filter(|w| got < w)
                    .map(|w| format!("{name} is {got}, expected at least {w}"))
            })
            .collect();
        let all = actual
            .iter()
            .map(|(name, _, got)| format!("{name}={got}"))
            .collect::<Vec<_>>()
            .join(" ");
        if short.is_empty() {
            Ok(all)
        } else {
            Err(format!("{} ({all})", short.join("; ")))
        }
    }

    fn object(
        &self,
        wanted: &ObjectAssert,
        (ns, name, uid, controller): &(String, String, Option<String>, Option<String>),
    ) -> StepResult {
        let kind = wanted
            .kind
            .object_kind()
            .ok_or("the ledger records no such kind")?;
        let ledger = self.read_ledger();
        let projection = ledger.projection();
        let what = format!("{} {ns}/{name}", kind.as_str());
        let Some(latest) = projection.uid_of(kind, ns, name) else {
            return Err(format!("the ledger never recorded {what}"));
        };
        let record = projection
            .object(latest)
            .ok_or_else(|| format!("{what}: uid {latest} has no record"))?;
        let current = &record.current;
        let mut problems = Vec::new();
        if let Some(uid) = uid {
            if uid != &current.uid {
                problems.push(format!("uid is {}, expected {uid}", current.uid));
            }
        }
        if wanted.live == record.gone {
            problems.push(if record.gone {
                format!("is gone ({:?} at seq {})", current.change, record.last_seq)
            } else {
                "is alive".into()
            });
        }
        if let Some(terminating) = wanted.terminating {
            if terminating != current.is_terminating() {
                problems.push(format!(
                    "terminating is {}, expected {terminating}",
                    current.is_terminating()
                ));
            }
        }
        if let Some(controller) = controller {
            let actual = current
                .controller
                .as_ref()
                .map(|c| format!("{}/{}", c.kind, c.name));
            let holds = match (controller.as_str(), &actual) {
                ("none", None) => true,
                (want, Some(actual)) => want == actual || actual.split('/').next() == Some(want),
                _ => false,
            };
            if !holds {
                problems.push(format!(
                    "controller is {}, expected {controller}",
                    actual.as_deref().unwrap_or("none")
                ));
            }
        }
        let state = format!(
            "{what} uid {} {}{}, controller {}",
            current.uid,
            if record.gone { "gone" } else { "alive" },
            if current.is_terminating() {
                ", terminating"
            } else {
                ""
            },
            current
                .controller
                .as_ref()
                .map_or("none".to_string(), |c| format!("{}/{}", c.kind, c.name))
        );
        if problems.is_empty() {
            Ok(state)
        } else {
            Err(format!("{what}: {} ({state})", problems.join("; ")))
        }
    }
}

/// The interpolated string filters of a `log_has` assertion.
struct LogFilter {
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    reason: Option<String>,
}

fn entry_matches(change: &Change, log: &LogHas, filter: &LogFilter) -> bool {
    match change {
        Change::Object(object) => {
            let kind_of_change = match object.change {
                ChangeKind::Created => EntryChange::Created,
                ChangeKind::Updated => EntryChange::Updated,
                ChangeKind::Deleted => EntryChange::Deleted,
                ChangeKind::MissingOnResync => EntryChange::MissingOnResync,
            };
            log.change.is_none_or(|c| c == kind_of_change)
                && log
                    .kind
                    .and_then(Kind::object_kind)
                    .is_none_or(|k| k == object.kind)
                && filter
                    .namespace
                    .as_ref()
                    .is_none_or(|n| *n == object.namespace)
                && filter.name.as_ref().is_none_or(|n| *n == object.name)
                && filter.uid.as_ref().is_none_or(|u| *u == object.uid)
                && log.terminating.is_none_or(|t| t == object.is_terminating())
                && filter.reason.is_none()
        }
        Change::WatchGap(gap) => {
            log.change == Some(EntryChange::WatchGap)
                && filter.reason.as_ref().is_none_or(|r| *r == gap.reason)
                && log.kind.is_none_or(|k| {
                    gap.resource.starts_with(&format!("{}.", k.0.plural()))
                        || gap.resource.starts_with(&format!("{}/", k.0.plural()))
                })
        }
        Change::CheckDenied(_) | Change::CheckDeniedOverflow(_) | Change::WatchScope(_) => false,
    }
}

// ---------------------------------------------------------------------------------------
// Report text.
// ---------------------------------------------------------------------------------------

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" -- {detail}")
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}; {b}"),
    }
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn describe_written(object: &Value) -> String {
    format!(
        "{} {}/{} uid {} rv {}",
        object.get("kind").and_then(Value::as_str).unwrap_or("?"),
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        name_of(object),
        uid_of(object),
        object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn describe_claim(claim: &Value) -> String {
    format!(
        "claim uid {}, sandbox {}",
        uid_of(claim),
        claim
            .pointer("/status/sandbox/name")
            .and_then(Value::as_str)
            .unwrap_or("-")
    )
}

fn describe_change(change: &ObjectChange) -> String {
    format!(
        "{} {}/{} uid {}",
        change.kind.as_str(),
        change.namespace,
        change.name,
        change.uid
    )
}

/// The identity-relevant state of an observation, for diffs.
fn state_of(change: &ObjectChange) -> Value {
    json!({
        "controller": change.controller.as_ref().map(|c| format!("{}/{}/{}", c.kind, c.name, c.uid)),
        "deletion_timestamp": change.deletion_timestamp,
        "fields": serde_json::to_value(&change.fields).unwrap_or(Value::Null),
        "api_version": change.api_version,
    })
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::NotReady => "not_ready",
    }
}

fn describe_expected(verdict: Verdict, reason: Option<Reason>) -> String {
    match reason {
        Some(reason) => format!("{} {reason}", verdict_name(verdict)),
        None if verdict == Verdict::Deny => "deny (any reason)".into(),
        None => verdict_name(verdict).into(),
    }
}

fn describe_decision(decision: &Decision) -> String {
    let mut text = verdict_name(decision.decision).to_string();
    if let Some(reason) = decision.reason {
        text.push_str(&format!(" {reason}"));
    }
    if let Some(detail) = &decision.detail {
        text.push_str(&format!(" ({detail})"));
    }
    text.push_str(&format!(" at seq {}", decision.seq));
    text
}

fn describe_request(request: &CheckRequest) -> String {
    let mut text = format!(
        "pod {}/{} uid {}",
        request.namespace, request.pod_name, request.pod_uid
    );
    for (name, value) in [
        ("sandbox_id", &request.sandbox_id),
        ("sandbox_name", &request.sandbox_name),
        ("sandbox_uid", &request.sandbox_uid),
        ("claim_uid", &request.claim_uid),
    ] {
        if let Some(value) = value {
            text.push_str(&format!(" {name}={value}"));
        }
    }
    if !request.require_claim {
        text.push_str(" require_claim=false");
    }
    if let Some(min_seq) = request.min_seq {
        text.push_str(&format!(" min_seq={min_seq}"));
    }
    text
}

/// One line saying what the step is, as written in the file.
fn summarize(step: &Step) -> String {
    let kind = step.kind();
    let ns = |n: &Option<String>| n.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    let body = match &step.action {
        Action::Note => String::new(),
        Action::Apply(object) => format!(
            "{} {}{}",
            object.get("kind").and_then(Value::as_str).unwrap_or("?"),
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            name_of(object)
        ),
        Action::Delete(d) => format!(
            "{} {}{} ({:?})",
            d.kind.0.kind(),
            ns(&d.namespace),
            d.name,
            d.propagation
        ),
        Action::Patch(p) => format!(
            "{} {}{} {}",
            p.kind.0.kind(),
            ns(&p.namespace),
            p.name,
            serde_json::to_string(&p.merge).unwrap_or_default()
        ),
        Action::CreatePool(p) => format!(
            "{}{} replicas={}{}",
            ns(&p.namespace),
            p.name,
            p.replicas,
            if p.pvc { " with workspace PVCs" } else { "" }
        ),
        Action::ClaimWarm(c) => format!(
            "{}{} from pool {}{}",
            ns(&c.namespace),
            c.name,
            c.pool,
            c.sandbox_id
                .as_deref()
                .map(|id| format!(" sandbox_id={id}"))
                .unwrap_or_default()
        ),
        Action::ClaimCold(c) => format!(
            "{}{}{}",
            ns(&c.namespace),
            c.name,
            c.sandbox_id
                .as_deref()
                .map(|id| format!(" sandbox_id={id}"))
                .unwrap_or_default()
        ),
        Action::DeleteClaim(c) => format!("{}{} ({:?})", ns(&c.namespace), c.name, c.propagation),
        Action::ExpireClaim(c) => format!("{}{}", ns(&c.namespace), c.name),
        Action::ReplacePod(t) | Action::ExpireSandbox(t) => match (&t.sandbox, &t.claim) {
            (Some(s), _) => format!("sandbox {}{s}", ns(&t.namespace)),
            (_, Some(c)) => format!("sandbox of claim {}{c}", ns(&t.namespace)),
            _ => String::new(),
        },
        Action::StaleEvent(o) => format!("{} {}{}", o.kind.0.kind(), ns(&o.namespace), o.name),
        Action::Wait(wait) => match wait {
            Wait::Synced(_) => "synced".into(),
            Wait::Ready(_) => "ready".into(),
            Wait::Sleep(d) => format!("sleep {d}"),
        },
        Action::Expect(e) => describe_expected(
            e.decision.unwrap_or(match e.reason {
                Some(Reason::LedgerNotReady | Reason::LedgerBehind) => Verdict::NotReady,
                _ => Verdict::Deny,
            }),
            e.reason,
        ),
        Action::Capture(c) => format!("{} <- {}", c.var, c.kind.0.kind()),
        Action::Assert(a) => match a.as_ref() {
            Assert::ChainVerifies => "chain_verifies".into(),
            Assert::NoDuplicateVersions => "no_duplicate_versions".into(),
            Assert::MatchesSimulator(_) => "matches_simulator".into(),
            Assert::LogHas(_) => "log_has".into(),
            Assert::Counters(_) => "counters".into(),
            Assert::Object(o) => {
                format!("object {} {}{}", o.kind.0.kind(), ns(&o.namespace), o.name)
            }
        },
        Action::DropWatches
        | Action::ExpireNextWatch
        | Action::RestartApiserver
        | Action::DuplicateNextEvent
        | Action::StopWatcher
        | Action::StartWatcher => String::new(),
    };
    if body.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {body}")
    }
}

/// A directory removed when dropped (the ledger of one scenario run).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!(
            "claim-ledger-scenario-{}-{suffix}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_seqs_parse() {
        assert_eq!(Dur::parse("250ms"), Some(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::parse("2s"), Some(Dur(Duration::from_secs(2))));
        assert_eq!(Dur::parse("5"), None);
        let seq: SeqRef = serde_yaml_ng::from_str("head+3").unwrap();
        assert_eq!(seq, SeqRef::Head(3));
        let seq: SeqRef = serde_yaml_ng::from_str("12").unwrap();
        assert_eq!(seq, SeqRef::Absolute(12));
        assert!(serde_yaml_ng::from_str::<SeqRef>("tail").is_err());
    }

    #[test]
    fn step_lines_follow_the_steps_block() {
        let text = "name: x\nsteps:\n  # a comment\n  - drop_watches\n  - expect:\n      pod: a\n      decision: allow\n\n  - wait: synced\nfinal_checks: false\n";
        assert_eq!(step_lines(text, 3), vec![Some(4), Some(5), Some(9)]);
        assert_eq!(step_lines(text, 2), vec![None, None]);
    }

    #[test]
    fn variables_are_collected_but_lookups_are_not() {
        let mut vars = Vec::new();
        collect_vars(
            &json!({"a": "${one}-${uid:Pod/x}", "b": ["${two}"], "${three}": 1}),
            &mut vars,
        );
        vars.sort();
        assert_eq!(vars, vec!["one", "three", "two"]);
    }
}
