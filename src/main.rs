//! The `claim-ledger` binary: it parses the command line (`cli`) and dispatches to one
//! module per command (`cmd`); the work lives in the `schemas`, `ledger`, `watcher` and
//! `api` crates, and with the `sim` feature (on by default) in the `sim` and `scenario`
//! crates. `service` wires the long-running parts together.
//!
//! Exit codes, decided in one place ([`error::CommandError::exit_code`]): 0 ok, 1 a
//! verification failed or a check was not allowed, 2 a usage or input error.

mod args;
mod audit;
mod cli;
mod cmd;
mod error;
mod service;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, LogFormat};
use error::CommandError;
use formats::views::printable;

// The ledger allocates many small strings per entry; glibc's malloc spent nearly half the
// append path in allocation and consolidation (see BENCHMARKS.md), mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_storage_panics();
    let outcome = init_logging(&cli).and_then(|()| cli.command.run());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = error.to_string();
            if !message.is_empty() {
                eprintln!("claim-ledger: {}", printable(&message));
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Logs to standard error as `--log-format` and `--log-level` (or `RUST_LOG`) say.
fn init_logging(cli: &Cli) -> Result<(), CommandError> {
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&cli.log_level)
            .map_err(|e| CommandError::Input(format!("--log-level {:?}: {e}", cli.log_level)))?,
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Ok(())
}

/// The ledger's sled backend turns a panic inside sled (some damage to its files makes it
/// panic instead of failing) into a `store_damaged` error, which is reported; the default
/// hook would also print the panic as if claim-ledger had crashed.
fn quiet_storage_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_sled = info
            .location()
            .is_some_and(|location| location.file().contains("/sled-"));
        if !in_sled {
            default(info);
        }
    }));
}
