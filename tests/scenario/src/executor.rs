//! Carrying out a scenario's steps in order with one report line each, whatever executes
//! them: a [`ScenarioRun`](crate::run::ScenarioRun)(crate::run::ScenarioRun) (every step) or a
//! [`ClusterSteps`](crate::cluster_steps::ClusterSteps) alone (`sim --scenario`).

use std::time::Duration;

use crate::format::{Action, Scenario, Step};
use crate::report::{suffix, summarize};
use crate::validate::step_label;

/// How often waits and expectations poll.
pub(crate) const POLL: Duration = Duration::from_millis(20);
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive polls with an unchanged head (and the projection equal to the simulator's
/// truth) before the ledger counts as synced.
pub(crate) const STABLE_POLLS: u32 = 3;

/// A step's result: what happened, or why it failed.
pub(crate) type StepResult = Result<String, String>;

/// What carries out a scenario's steps for [`run_steps`]: a [`ScenarioRun`](crate::run::ScenarioRun) (every step) or a
/// [`ClusterSteps`](crate::cluster_steps::ClusterSteps) alone (the steps that need the watcher or the ledger are skipped).
pub(crate) trait Executor {
    /// Carries out one step; `None` when this executor skips it.
    async fn execute(&mut self, step: &Step) -> Option<StepResult>;
}

/// How a scenario's steps went.
pub(crate) struct Tally {
    /// The first step that failed, as labelled in the report.
    pub(crate) first_failure: Option<String>,
    /// Whether a step that could not be carried out stopped the steps after it.
    pub(crate) stopped: bool,
    /// Steps the executor skipped.
    pub(crate) skipped: usize,
    /// The width of the step labels, to align what is printed after the steps.
    pub(crate) width: usize,
}

/// Runs every step in order, printing one line each (`ok`, `pass`, `skip` or `FAIL`, the
/// step and its line, the step as written, what happened). A failed expectation or
/// assertion is reported and the steps go on; a step that cannot be carried out stops them.
pub(crate) async fn run_steps(scenario: &Scenario, executor: &mut impl Executor) -> Tally {
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
