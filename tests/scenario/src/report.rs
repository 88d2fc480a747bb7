//! The report's text: one line per step as written in the file, and descriptions of the
//! objects, decisions and requests a step's outcome names.

use ledger::{CheckRequest, Decision, Verdict};
use schemas::{ObjectChange, Reason};
use serde_json::{json, Value};

use crate::format::{Action, Assert, Step, Wait};

pub(crate) fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" -- {detail}")
    }
}

pub(crate) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}; {b}"),
    }
}

pub(crate) fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn describe_written(object: &Value) -> String {
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

pub(crate) fn describe_claim(claim: &Value) -> String {
    format!(
        "claim uid {}, sandbox {}",
        uid_of(claim),
        claim
            .pointer("/status/sandbox/name")
            .and_then(Value::as_str)
            .unwrap_or("-")
    )
}

pub(crate) fn describe_change(change: &ObjectChange) -> String {
    format!(
        "{} {}/{} uid {}",
        change.kind.as_str(),
        change.namespace,
        change.name,
        change.uid
    )
}

/// The identity-relevant state of an observation, for diffs.
pub(crate) fn state_of(change: &ObjectChange) -> Value {
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

pub(crate) fn describe_expected(verdict: Verdict, reason: Option<Reason>) -> String {
    match reason {
        Some(reason) => format!("{} {reason}", verdict_name(verdict)),
        None if verdict == Verdict::Deny => "deny (any reason)".into(),
        None => verdict_name(verdict).into(),
    }
}

pub(crate) fn describe_decision(decision: &Decision) -> String {
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

pub(crate) fn describe_request(request: &CheckRequest) -> String {
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
pub(crate) fn summarize(step: &Step) -> String {
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
