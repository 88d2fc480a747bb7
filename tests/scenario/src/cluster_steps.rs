//! The step executor against the simulator: carries out every step that acts on the
//! cluster alone. `sim --scenario` drives a served simulator with it by itself; a
//! [`ScenarioRun`](crate::run::ScenarioRun) wraps it with the watcher and the ledger.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use sim::{Resource, Simulator};

use crate::executor::{run_steps, Executor, StepResult};
use crate::format::{Action, Capture, PatchStep, Pick, SandboxTarget, Scenario, Step, Wait};
use crate::report::{describe_claim, describe_written, join, name_of, uid_of};

/// The cluster side of a run: the simulator being driven, the scenario and the variables
/// captured so far. It carries out every step that acts on the cluster alone (objects,
/// controller actions, faults, captures, sleeps): for `scenario run` inside a [`ScenarioRun`](crate::run::ScenarioRun),
/// which adds the watcher and the ledger, and for `claim-ledger sim --scenario` by itself
/// against the simulator being served.
pub(crate) struct ClusterSteps<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) sim: Simulator,
    pub(crate) vars: HashMap<String, String>,
}

impl Executor for ClusterSteps<'_> {
    async fn execute(&mut self, step: &Step) -> Option<StepResult> {
        if step.needs_ledger() {
            None
        } else {
            Some(self.step(step).await)
        }
    }
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
    let mut cluster = ClusterSteps {
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

impl ClusterSteps<'_> {
    pub(crate) fn ns(&self, namespace: &Option<String>) -> Result<String, String> {
        match namespace {
            Some(ns) => self.subst(ns),
            None => Ok(self.scenario.namespace.clone()),
        }
    }

    /// Carries out a step that acts on the cluster alone (every step but those
    /// [`Step::needs_ledger`] names, which are refused here).
    pub(crate) async fn step(&mut self, step: &Step) -> StepResult {
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

    pub(crate) fn sandbox_of_claim(&self, ns: &str, claim: &str) -> Result<String, String> {
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
    pub(crate) fn pod_name_of(&self, ns: &str, sandbox: &str) -> String {
        self.sim
            .get(Resource::Sandbox, ns, sandbox)
            .and_then(|s| {
                s.pointer("/metadata/annotations/agents.x-k8s.io~1pod-name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| sandbox.to_string())
    }

    pub(crate) fn owned_by(
        &self,
        resource: Resource,
        ns: &str,
        owner_kind: &str,
        owner: &str,
    ) -> Vec<Value> {
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

    pub(crate) fn subst(&self, text: &str) -> Result<String, String> {
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

    pub(crate) fn capture(&mut self, capture: &Capture) -> StepResult {
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
