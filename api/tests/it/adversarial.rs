//! The adversarial cases of the design discussion (`docs/DOMAIN.md` §8), from the one
//! table `tests/data/adversarial.json`, asked in process over HTTP: each case's history
//! becomes watch events appended to a fresh ledger the way the watcher appends them, and
//! each expectation is a `POST /v1/identity/check` whose decision, reason and (on allow)
//! binding must be exactly the table's. A failure names the case and the step.
//!
//! The same table runs through the binary's `ingest` (`tests/it/fixtures.rs`), against
//! `serve` over a simulated API server (`tests/it/blackbox_api.rs`) and as scenario files
//! (`tests/it/scenarios.rs`).

#[path = "../../../tests/data/adversarial.rs"]
mod adversarial_table;

use crate::common::k8s::NS;
use crate::common::Server;
use adversarial_table::{contains, count_transitions, EventWriter, Line, Table};
use serde_json::Value;

/// Runs one case against its own server; the first failure, located.
async fn run(case: &adversarial_table::Case) -> Result<(), String> {
    let mut server = Server::start().await;
    let result = run_on(&mut server, case).await;
    server.stop().await;
    result
}

async fn run_on(server: &mut Server, case: &adversarial_table::Case) -> Result<(), String> {
    let mut writer = EventWriter::new(NS, &case.name);
    let mut pending: Vec<Value> = Vec::new();
    for (index, step) in case.steps.iter().enumerate() {
        let at = format!("{} step {}", case.name, index + 1);
        for line in writer.step(step) {
            match line {
                Line::Event(event) => pending.push(event),
                Line::Expect(adversarial_table::Check {
                    request,
                    decision,
                    reason,
                    binding,
                }) => {
                    server.ingest_events(&std::mem::take(&mut pending));
                    let (status, body) = server.check(&request).await;
                    let answer = (body["decision"].as_str(), body["reason"].as_str());
                    if answer != (Some(decision.as_str()), reason.as_deref()) || status != 200 {
                        return Err(format!(
                            "{at}: {request}: expected {decision} {reason:?}, got {status} {body}"
                        ));
                    }
                    if let Some(binding) = binding {
                        contains(&body["binding"], &binding)
                            .map_err(|e| format!("{at}: binding: {e}: {body}"))?;
                        let since = body["binding"]["since_seq"].as_u64().unwrap_or(0);
                        if since == 0 || body["binding"]["since"].as_str().is_none() {
                            return Err(format!("{at}: the binding has no start: {body}"));
                        }
                    }
                }
                Line::ExpectLog(adversarial_table::LogCheck {
                    transition,
                    selector,
                    uid,
                    count,
                }) => {
                    server.ingest_events(&std::mem::take(&mut pending));
                    let (_, history) = server.get(&format!("/v1/history?{selector}={uid}")).await;
                    let transitions = adversarial_table::history_transitions(&history)
                        .ok_or_else(|| format!("{at}: no history: {history}"))?;
                    let found = count_transitions(&transitions, &transition, &uid);
                    if found != count {
                        return Err(format!(
                            "{at}: {count} {transition} transitions about {uid} expected, \
                             found {found}: {transitions:?}"
                        ));
                    }
                }
            }
        }
    }
    server.ingest_events(&pending);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adversarial_case_of_the_table_answers_as_the_table_says() {
    let table = Table::load();
    let cases = table.cases_for("in_process");
    assert!(cases.len() >= 10, "cases missing: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = run(case).await {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The reason codes a harness's cases expect.
fn reasons_expected(cases: &[adversarial_table::Case]) -> std::collections::BTreeSet<String> {
    cases
        .iter()
        .flat_map(|case| &case.steps)
        .filter_map(|step| match step {
            adversarial_table::Step::Expect(expect) => expect.reason.clone(),
            _ => None,
        })
        .collect()
}

#[test]
fn the_table_reaches_every_reason_code_in_every_harness_or_says_why_not() {
    let table = Table::load();
    let all: std::collections::BTreeSet<String> = schemas::Reason::ALL
        .iter()
        .map(|r| r.code().to_string())
        .collect();
    for (code, why) in &table.unreachable {
        assert!(
            all.contains(code),
            "unreachable lists {code}, not a reason code"
        );
        assert!(!why.trim().is_empty(), "unreachable {code} says no why");
    }
    for harness in adversarial_table::HARNESSES {
        let reached = reasons_expected(&table.cases_for(harness));
        for code in &reached {
            assert!(
                all.contains(code),
                "the table expects {code}, not a reason code"
            );
            assert!(
                !table.unreachable.contains_key(code),
                "{code} is listed unreachable, but the table reaches it"
            );
        }
        let missing: Vec<&String> = all
            .iter()
            .filter(|code| !reached.contains(*code) && !table.unreachable.contains_key(*code))
            .collect();
        assert!(
            missing.is_empty(),
            "the {harness} harness reaches no case expecting {missing:?}, and the table does \
             not list them as unreachable"
        );
    }
}

#[test]
fn every_case_runs_in_process_and_through_ingest_and_every_skip_says_why() {
    let table = Table::load();
    for case in &table.cases {
        for harness in ["in_process", "ingest"] {
            assert!(
                !case.skip.contains_key(harness),
                "case {} must run in the {harness} harness",
                case.name
            );
        }
        for (harness, why) in &case.skip {
            assert!(
                !why.trim().is_empty(),
                "case {}: skip {harness} says no why",
                case.name
            );
        }
        assert!(
            !case.description.trim().is_empty(),
            "case {} has no description",
            case.name
        );
    }
    // Some tests replay the generated fixtures of several cases into one ledger: the uids
    // invented for different cases must never meet.
    let tags: std::collections::BTreeSet<String> = table
        .cases
        .iter()
        .map(|case| adversarial_table::case_tag(&case.name))
        .collect();
    assert_eq!(tags.len(), table.cases.len(), "two cases share a uid tag");
}
