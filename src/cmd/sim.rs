//! `claim-ledger sim`: serves the cluster simulator alone (a Kubernetes API server for
//! agent-sandbox objects), optionally driven through a scenario file's cluster steps.

use std::net::SocketAddr;
use std::path::PathBuf;

use sim::{SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::CommandError;
use crate::service::{self, Shutdown};

// The help of this command is the doc comment on `Command::Sim` (cli.rs).
#[derive(clap::Args)]
pub struct SimArgs {
    /// Where it listens (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// Write a kubeconfig for it here, for kubectl and any kube client.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Do not emulate the agent-sandbox controllers (drive every object by hand).
    #[arg(long)]
    no_controllers: bool,
    /// Serve only v1alpha1 (agent-sandbox v0.4.x) instead of v1beta1 + v1alpha1.
    #[arg(long)]
    v1alpha1_only: bool,
    /// Drive the simulator through this scenario file's cluster steps (see
    /// docs/SCENARIOS.md); its `simulator:` settings configure the simulator.
    #[arg(long, conflicts_with_all = ["no_controllers", "v1alpha1_only"])]
    scenario: Option<PathBuf>,
    /// Stop once the scenario's steps are done instead of serving until Ctrl-C.
    #[arg(long, requires = "scenario")]
    exit_after_scenario: bool,
    /// Start with this many bound claims in namespace `default` (claim, Sandbox, PVC,
    /// pod each), for load tests.
    #[arg(long, default_value_t = 0)]
    preload_bindings: usize,
}

/// Runs `claim-ledger sim`.
pub fn run(args: SimArgs) -> Result<(), CommandError> {
    let SimArgs {
        listen,
        kubeconfig_out,
        no_controllers,
        v1alpha1_only,
        scenario,
        exit_after_scenario,
        preload_bindings,
    } = args;
    // A scenario file is validated before anything runs (exit 2 when invalid, as
    // `scenario run`), and its `simulator:` settings replace the flags.
    let scenario = scenario
        .map(|path| {
            scenario::load(&path).map(|scenario| SimScenario {
                path,
                scenario,
                exit_after: exit_after_scenario,
            })
        })
        .transpose()?;
    let mut config = match &scenario {
        Some(file) => file.scenario.sim_config(),
        None => sim::SimConfig {
            controllers: !no_controllers,
            served: if v1alpha1_only {
                sim::Served::V1alpha1Only
            } else {
                sim::Served::Both
            },
            ..sim::SimConfig::default()
        },
    };
    config.preload_bindings = preload_bindings;
    let mut carried_out = true;
    service::run_until_signal(|stop, shutdown| {
        let carried_out = &mut carried_out;
        async move {
            *carried_out =
                run_sim(listen, kubeconfig_out, config, scenario, stop, shutdown).await?;
            Ok(())
        }
    })?;
    if !carried_out {
        return Err(CommandError::Check(
            "a scenario step could not be carried out".into(),
        ));
    }
    Ok(())
}

/// A scenario file that drives the served simulator (`sim --scenario`).
struct SimScenario {
    /// The file, for the report.
    path: PathBuf,
    /// The file, loaded and validated.
    scenario: scenario::Scenario,
    /// Stop serving once the steps are done instead of at Ctrl-C.
    exit_after: bool,
}

/// `claim-ledger sim`: the cluster simulator alone, optionally driven through a scenario
/// file's cluster steps. `Ok(false)` when a scenario step could not be carried out.
async fn run_sim(
    listen: SocketAddr,
    kubeconfig_out: Option<PathBuf>,
    config: SimConfig,
    scenario: Option<SimScenario>,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<bool, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let sim = Simulator::new(config);
    if let Some(path) = &kubeconfig_out {
        std::fs::write(path, sim.kubeconfig(&url))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let server = tokio::spawn({
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        async move { sim.serve(listener, shutdown.wait()).await }
    });
    println!("cluster simulator listening on {url}");
    if let Some(path) = &kubeconfig_out {
        println!(
            "kubeconfig written to {} (kubectl --kubeconfig {0} get sandboxes -A)",
            path.display()
        );
    }
    let mut carried_out = true;
    if let Some(file) = scenario {
        let steps = scenario::drive(&file.path, &file.scenario, sim);
        let finished = tokio::select! {
            ok = steps => Some(ok),
            _ = shutdown.clone().wait() => None,
        };
        match finished {
            None => println!("interrupted before the scenario's last step"),
            Some(ok) => {
                carried_out = ok;
                let ended = if ok {
                    "scenario finished"
                } else {
                    "scenario stopped at a step that could not be carried out"
                };
                if file.exit_after {
                    println!("{ended}; stopping");
                    let _ = stop.send(true);
                } else {
                    println!("{ended}; serving until Ctrl-C");
                }
            }
        }
    }
    server
        .await
        .map_err(|e| format!("simulator: {e}"))?
        .map_err(|e| format!("simulator: {e}"))?;
    Ok(carried_out)
}
