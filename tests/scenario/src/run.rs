//! A full scenario run (`scenario run`): a fresh simulator served on 127.0.0.1:0, the real
//! kube client, the real watcher and a real sled ledger in a temporary directory; the steps
//! that need the watcher or the ledger (expectations, assertions, syncs) and the final checks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::{CheckRequest, Ledger, LedgerConfig, Verdict};
use schemas::{normalize, Change, ChangeKind, ObjectChange, ObjectKind, Reason, WatchEventType};
use serde_json::Value;
use sim::{LocalSimulator, Resource, Served, Simulator};
use tokio::sync::oneshot;
use watcher::{Readiness, SharedLedger, WatchOptions};

use crate::cluster_steps::ClusterSteps;
use crate::executor::{
    run_steps, Executor, StepResult, Tally, DEFAULT_TIMEOUT, POLL, STABLE_POLLS,
};
use crate::format::{
    Action, Assert, Counters, Dur, EntryChange, Expect, Kind, LogHas, ObjectAssert, Scenario,
    SeqRef, Step, Wait,
};
use crate::report::{
    describe_change, describe_decision, describe_expected, describe_request, state_of, suffix,
    uid_of,
};

struct Watching {
    readiness: Readiness,
    pub(crate) stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
}

/// Watch counters summed over every watcher run of the scenario.
#[derive(Debug, Clone, Copy, Default)]
struct WatchTotals {
    pub(crate) relists: u64,
    pub(crate) resync_deletions: u64,
    pub(crate) watch_errors: u64,
}

/// A `scenario run`: the cluster, plus the kube client, the watcher and the ledger that
/// the expectations, assertions, syncs and watcher steps need.
pub(crate) struct ScenarioRun<'a> {
    pub(crate) cluster: ClusterSteps<'a>,
    pub(crate) served: Served,
    pub(crate) client: kube::Client,
    pub(crate) ledger: SharedLedger,
    watching: Option<Watching>,
    past: WatchTotals,
}

impl Executor for ScenarioRun<'_> {
    async fn execute(&mut self, step: &Step) -> Option<StepResult> {
        Some(self.step(step).await)
    }
}

/// Runs one file and prints its report; `None` when everything passed, else where it failed.
pub(crate) async fn run_scenario(path: &Path, scenario: &Scenario) -> Option<String> {
    let file = path.display();
    println!(
        "== {file}: {} ({})",
        scenario.name,
        scenario.describe_cluster()
    );
    let dir = match tempfile::Builder::new()
        .prefix("claim-ledger-scenario-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            println!("   FAIL  cannot create a temporary directory: {e}");
            return Some("setup".into());
        }
    };
    let setup = start_cluster(scenario, dir.path()).await;
    let (mut run, server) = match setup {
        Ok(parts) => parts,
        Err(e) => {
            println!("   FAIL  setup: {e}");
            return Some("setup".into());
        }
    };
    let failure = run.steps().await;
    run.stop_watcher_quietly().await;
    let ScenarioRun { ledger, .. } = run;
    drop(ledger);
    let _ = server.stop().await;
    drop(dir);
    match &failure {
        None => println!("== {file}: passed"),
        Some(where_) => println!("== {file}: FAILED ({where_})"),
    }
    failure
}

/// Serves a fresh simulator configured by the file and opens an empty ledger in `dir`;
/// the simulator stops when the returned [`LocalSimulator`] is stopped or dropped.
async fn start_cluster<'a>(
    scenario: &'a Scenario,
    dir: &Path,
) -> Result<(ScenarioRun<'a>, LocalSimulator), String> {
    let server = Simulator::start_local(scenario.sim_config())
        .await
        .map_err(|e| format!("cannot serve the simulator on 127.0.0.1: {e}"))?;
    let sim = server.simulator().clone();
    let client = server.client();
    let ledger = Ledger::open(dir, LedgerConfig::default())
        .map_err(|e| format!("cannot open the ledger: {e}"))?;
    let run = ScenarioRun {
        cluster: ClusterSteps {
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

impl ScenarioRun<'_> {
    fn timeout(&self, own: Option<Dur>) -> Duration {
        own.or(self.cluster.scenario.timeout)
            .map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    /// Runs every step, then the final checks; `None` when all passed.
    pub(crate) async fn steps(&mut self) -> Option<String> {
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
    pub(crate) async fn step(&mut self, step: &Step) -> StepResult {
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

impl ScenarioRun<'_> {
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
                truth.insert(change.uid.to_string(), change);
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

    pub(crate) async fn expect(&self, expect: &Expect) -> StepResult {
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
                    change.uid.to_string(),
                    change.resource_version.to_string(),
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
        if wanted.live == record.gone() {
            problems.push(if record.gone() {
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
            if record.gone() { "gone" } else { "alive" },
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
pub(crate) struct LogFilter {
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) reason: Option<String>,
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
