//! Scenario files (YAML; the format is documented in `docs/SCENARIOS.md`): steps run in
//! order against a fresh cluster simulator (HTTP on 127.0.0.1:0), the real kube client, the
//! real watcher and a real sled ledger in a temporary directory, with expectations on the
//! binding rule's answers.
//!
//! Every file is read and validated before anything runs ([`load`]): an unreadable or
//! invalid file (bad YAML, an unknown step kind, a missing field, a variable used before it
//! is captured) is a [`ScenarioError`] naming the file and, where it can, the line. Then
//! [`run_files`] runs each file end to end; the report on standard output prints every step
//! with its outcome. An expectation or assertion that fails is reported and the file goes
//! on; a step that cannot be carried out (the simulator refuses an object, a watcher that
//! will not stop) ends that file. Either way the next file runs.
//!
//! The same files drive `claim-ledger sim --scenario` ([`drive`]): the steps that act on
//! the cluster run against the simulator being served, and the steps that need the watcher
//! or the ledger are skipped.
//!
//! Modules: `format` (the file's serde types), `validate` (loading and validation),
//! `executor` (running steps in order with the report lines), `cluster_steps` (the step
//! executor against the simulator), `run` (a full run with the watcher and the ledger),
//! `report` (the report's text).

mod cluster_steps;
mod executor;
mod format;
mod report;
mod run;
mod validate;

use std::path::PathBuf;

pub use cluster_steps::drive;
pub use format::Scenario;
pub use validate::load;

/// Why scenario files cannot be run: every variant names the file and is reported before
/// anything runs (exit 2 from the binary).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The file is not YAML in the scenario format (an unknown step kind or field, a
    /// missing field, a value of the wrong type); the message names the step.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// The file is well-formed but cannot run as written (no steps, a variable used before
    /// any step captures it, an expectation that contradicts itself); the message names the
    /// step and its line.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// Several files failed to load: each one's error, a line each.
    #[error("{}", lines(.0))]
    Files(Vec<ScenarioError>),
}

fn lines(errors: &[ScenarioError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A file that did not pass, and where (the first failing step, `setup`, or a final check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFile {
    /// The scenario file.
    pub path: PathBuf,
    /// Where it failed, as labelled in the report (`step 3 (line 12)`, `setup`, ...).
    pub at: String,
}

/// How a run of several files went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// How many files ran.
    pub files: usize,
    /// The files that did not pass, in the order they ran.
    pub failed: Vec<FailedFile>,
}

impl RunReport {
    /// Whether every expectation, assertion and final check of every file held.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Runs every scenario file end to end, printing the report on standard output.
///
/// All files are loaded and validated first: [`ScenarioError::Files`] names every file
/// that cannot be read or is not a valid scenario, and nothing runs. Otherwise every file
/// runs (one failing does not stop the others) and the report says which did not pass.
pub async fn run_files(files: &[PathBuf]) -> Result<RunReport, ScenarioError> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match load(path) {
            Ok(scenario) => loaded.push((path.clone(), scenario)),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(ScenarioError::Files(errors));
    }
    let mut failed = Vec::new();
    for (path, scenario) in &loaded {
        if let Some(at) = run::run_scenario(path, scenario).await {
            failed.push(FailedFile {
                path: path.clone(),
                at,
            });
        }
    }
    println!();
    if failed.is_empty() {
        println!("{} scenario file(s): all passed", loaded.len());
    } else {
        let names: Vec<String> = failed
            .iter()
            .map(|f| format!("{} ({})", f.path.display(), f.at))
            .collect();
        println!(
            "{} scenario file(s): {} passed, {} failed: {}",
            loaded.len(),
            loaded.len() - failed.len(),
            failed.len(),
            names.join(", ")
        );
    }
    Ok(RunReport {
        files: loaded.len(),
        failed,
    })
}
