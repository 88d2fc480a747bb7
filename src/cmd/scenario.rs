//! `claim-ledger scenario run`: runs scenario files end to end through the `scenario`
//! crate; exit 1 when an expectation failed, 2 when a file is invalid.

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::CommandError;
use crate::service;

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Run each file end to end and report every expectation; exit 1 on any failure.
    Run {
        /// Scenario files (YAML; see docs/SCENARIOS.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

// The help of this command is the doc comment on `Command::Scenario` (cli.rs).
#[derive(clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    command: ScenarioCommand,
}

/// Runs `claim-ledger scenario`.
pub fn run(args: ScenarioArgs) -> Result<(), CommandError> {
    let ScenarioArgs {
        command: ScenarioCommand::Run { files },
    } = args;
    let report = service::runtime()?.block_on(::scenario::run_files(&files))?;
    if !report.all_passed() {
        return Err(CommandError::Check("a scenario expectation failed".into()));
    }
    Ok(())
}
