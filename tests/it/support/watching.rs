//! The live watcher and a shared ledger, started in-process for the tests that watch a
//! (simulated) cluster. The cluster itself is `sim::Simulator::start_local`.

use ledger::{Ledger, LedgerConfig};
use tokio::sync::oneshot;
use watcher::{Readiness, SharedLedger, WatchOptions};

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
pub fn open_shared_ledger(dir: &std::path::Path, config: LedgerConfig) -> SharedLedger {
    SharedLedger::new(Ledger::open(dir, config).unwrap())
}
