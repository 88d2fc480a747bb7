//! The cluster simulator, a real kube client and the live watcher, started in-process for
//! the tests that watch a (simulated) cluster.

use std::time::Duration;

use ledger::{Ledger, LedgerConfig};
use sim::{SimConfig, Simulator};
use tokio::sync::oneshot;
use watcher::{Readiness, SharedLedger, WatchOptions};

/// A simulator serving on 127.0.0.1 and a kube client for it; the server stops on drop.
pub struct Cluster {
    /// The simulator.
    pub sim: Simulator,
    /// A client built from the simulator's kubeconfig.
    pub client: kube::Client,
    /// Its base URL.
    pub url: String,
    _stop: oneshot::Sender<()>,
}

impl Cluster {
    /// Starts a simulator with `config`.
    pub async fn start(config: SimConfig) -> Cluster {
        let sim = Simulator::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sim.clone();
        tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(&url)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        Cluster {
            sim,
            client,
            url,
            _stop: stop,
        }
    }
}

/// A running watcher.
pub struct Watching {
    /// Its readiness.
    pub readiness: Readiness,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), watcher::WatcherError>>,
}

impl Watching {
    /// Starts the watcher over every namespace.
    pub fn start(client: &kube::Client, ledger: &SharedLedger) -> Watching {
        Watching::start_with(client, ledger, WatchOptions::default())
    }

    /// Starts the watcher with these options.
    pub fn start_with(
        client: &kube::Client,
        ledger: &SharedLedger,
        options: WatchOptions,
    ) -> Watching {
        let readiness = Readiness::new(options.unready_after);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watcher::run(
            client.clone(),
            ledger.clone(),
            readiness.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Watching {
            readiness,
            stop,
            task,
        }
    }

    /// Stops it and waits for it to end cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A ledger in `dir`, shared the way `serve` shares it.
pub fn open_ledger(dir: &std::path::Path, config: LedgerConfig) -> SharedLedger {
    SharedLedger::new(Ledger::open(dir, config).unwrap())
}

/// Polls `condition` every 25 ms for up to 10 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}
