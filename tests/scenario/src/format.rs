//! The scenario file format: what a YAML scenario file may say (settings, steps and their
//! fields), as serde types. Loading and validation are in `validate`; `docs/SCENARIOS.md`
//! documents the format for people.

use std::fmt;
use std::time::Duration;

use ledger::Verdict;
use schemas::{ObjectKind, Reason};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sim::{Propagation, Resource, Served, SimConfig};

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
    pub(crate) name: String,
    /// Longer prose; not used by the runner.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    pub(crate) simulator: SimSettings,
    #[serde(default)]
    pub(crate) watcher: WatcherSettings,
    /// The namespace of every step that names none.
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    /// The default timeout of expectations, waits and assertions.
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// After the last step: the projection matches the simulator, the chain verifies and
    /// no (uid, resourceVersion) is recorded twice.
    #[serde(default = "yes")]
    pub(crate) final_checks: bool,
    pub(crate) steps: Vec<Step>,
    /// The line of each step in the file, when it could be found.
    #[serde(skip)]
    pub(crate) lines: Vec<Option<usize>>,
}

impl Scenario {
    pub(crate) fn served(&self) -> Served {
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
    pub(crate) fn describe_cluster(&self) -> String {
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
pub(crate) struct SimSettings {
    #[serde(default = "yes")]
    pub(crate) controllers: bool,
    #[serde(default)]
    pub(crate) served: ServedSetting,
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
pub(crate) enum ServedSetting {
    #[default]
    Both,
    V1alpha1,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatcherSettings {
    /// Start the watcher (and wait for it to sync) before the first step.
    #[serde(default = "yes")]
    pub(crate) start: bool,
    #[serde(default)]
    pub(crate) unready_after: Option<Dur>,
    #[serde(default)]
    pub(crate) namespaces: Vec<String>,
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
pub(crate) struct Dur(pub(crate) Duration);

impl Dur {
    pub(crate) fn parse(text: &str) -> Option<Dur> {
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
pub(crate) struct Kind(pub(crate) Resource);

impl Kind {
    pub(crate) fn object_kind(self) -> Option<ObjectKind> {
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
pub(crate) enum PolicySetting {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl PolicySetting {
    pub(crate) fn propagation(self) -> Propagation {
        match self {
            PolicySetting::Background => Propagation::Background,
            PolicySetting::Foreground => Propagation::Foreground,
            PolicySetting::Orphan => Propagation::Orphan,
        }
    }
}

/// A ledger seq: a number, `head` or `head+N` / `head-N` (the ledger head when the step runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqRef {
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
pub(crate) struct ObjectRef {
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteStep {
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) propagation: PolicySetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchStep {
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    /// The JSON merge patch; its `status` part goes to the `/status` subresource.
    pub(crate) merge: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePool {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    #[serde(default = "one")]
    pub(crate) replicas: u32,
    #[serde(default)]
    pub(crate) template: Option<String>,
    #[serde(default = "yes")]
    pub(crate) pvc: bool,
}

pub(crate) fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimWarm {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) pool: String,
    #[serde(default)]
    pub(crate) sandbox_id: Option<String>,
    #[serde(default)]
    pub(crate) shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimCold {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) sandbox_id: Option<String>,
    #[serde(default)]
    pub(crate) shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteClaim {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) propagation: PolicySetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedClaim {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

/// A Sandbox named directly or through the claim whose `status.sandbox.name` names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxTarget {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) sandbox: Option<String>,
    #[serde(default)]
    pub(crate) claim: Option<String>,
    /// `expire_sandbox` only: set the Sandbox's `spec.shutdownPolicy` first.
    #[serde(default)]
    pub(crate) shutdown_policy: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Pick {
    #[default]
    Oldest,
    Newest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capture {
    /// The variable, used later as `${as}`.
    #[serde(rename = "as")]
    pub(crate) var: String,
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// `Kind/name` of the controller owner (instead of `name`).
    #[serde(default)]
    pub(crate) owned_by: Option<String>,
    #[serde(default)]
    pub(crate) pick: Pick,
    /// A dotted path into the object; `metadata.uid` when absent.
    #[serde(default)]
    pub(crate) field: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    /// The pod's name; its uid is the pod's current uid in the simulator unless `pod_uid`.
    #[serde(default)]
    pub(crate) pod: Option<String>,
    /// The pod of the claim's Sandbox (through `status.sandbox.name`).
    #[serde(default)]
    pub(crate) pod_of_claim: Option<String>,
    #[serde(default)]
    pub(crate) pod_uid: Option<String>,
    #[serde(default)]
    pub(crate) sandbox_id: Option<String>,
    #[serde(default)]
    pub(crate) sandbox_name: Option<String>,
    #[serde(default)]
    pub(crate) sandbox_uid: Option<String>,
    #[serde(default)]
    pub(crate) claim_uid: Option<String>,
    #[serde(default = "yes")]
    pub(crate) require_claim: bool,
    #[serde(default)]
    pub(crate) min_seq: Option<SeqRef>,
    #[serde(default)]
    pub(crate) decision: Option<Verdict>,
    #[serde(default)]
    pub(crate) reason: Option<Reason>,
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Wait for the ledger to catch up with the simulator before asking (when a watcher runs).
    #[serde(default = "yes")]
    pub(crate) sync: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) enum Wait {
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
pub(crate) enum EntryChange {
    Created,
    Updated,
    Deleted,
    MissingOnResync,
    WatchGap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogHas {
    #[serde(default)]
    pub(crate) change: Option<EntryChange>,
    #[serde(default)]
    pub(crate) kind: Option<Kind>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) uid: Option<String>,
    /// Watch gaps: `relist` or `restart`.
    #[serde(default)]
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) terminating: Option<bool>,
    #[serde(default)]
    pub(crate) at_least: Option<u64>,
    #[serde(default)]
    pub(crate) at_most: Option<u64>,
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Counters {
    #[serde(default)]
    pub(crate) appended: Option<u64>,
    #[serde(default)]
    pub(crate) duplicates: Option<u64>,
    #[serde(default)]
    pub(crate) stale: Option<u64>,
    #[serde(default)]
    pub(crate) ignored: Option<u64>,
    #[serde(default)]
    pub(crate) relists: Option<u64>,
    #[serde(default)]
    pub(crate) resync_deletions: Option<u64>,
    #[serde(default)]
    pub(crate) watch_errors: Option<u64>,
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectAssert {
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) uid: Option<String>,
    #[serde(default = "yes")]
    pub(crate) live: bool,
    #[serde(default)]
    pub(crate) terminating: Option<bool>,
    /// `none`, `Kind` or `Kind/name` of the controller owner.
    #[serde(default)]
    pub(crate) controller: Option<String>,
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) enum Assert {
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
pub(crate) enum Action {
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
pub(crate) struct Step {
    pub(crate) action: Action,
    pub(crate) note: Option<String>,
    pub(crate) capture: Option<String>,
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
    pub(crate) fn kind(&self) -> &'static str {
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
    pub(crate) fn writes_object(&self) -> bool {
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
    pub(crate) fn needs_ledger(&self) -> bool {
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
    pub(crate) fn is_check(&self) -> bool {
        matches!(self.action, Action::Expect(_) | Action::Assert(_))
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
}
