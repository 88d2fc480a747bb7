//! Loading a scenario file and validating it before anything runs: errors name the file,
//! the step and its line.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use ledger::Verdict;
use schemas::Reason;
use sim::Resource;

use crate::format::{Action, Assert, Expect, Scenario, Step};
use crate::ScenarioError;

/// Reads and validates one scenario file; the error names the file and, where it can, the
/// step and its line. `scenario run` and `sim --scenario` load files alike.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut scenario: Scenario =
        serde_yaml_ng::from_str(&text).map_err(|e| ScenarioError::Format {
            path: path.to_path_buf(),
            message: one_based_steps(&e.to_string()),
        })?;
    scenario.lines = step_lines(&text, scenario.steps.len());
    validate(&scenario).map_err(|message| ScenarioError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
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

pub(crate) fn validate(scenario: &Scenario) -> Result<(), String> {
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

pub(crate) fn step_label(index: usize, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("step {} (line {line})", index + 1),
        None => format!("step {}", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
