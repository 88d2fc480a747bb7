//! The simulator in process: [`Simulator::start_local`] serves a fresh simulator on a
//! loopback port ([`Simulator::serve_local`] an existing one) and hands back its URL,
//! kubeconfig and a ready `kube::Client`, and
//! [`client_from_kubeconfig`] is the one place a kubeconfig becomes a client.
//!
//! Tests, benches and the scenario runner all need "a cluster on 127.0.0.1 and a client for
//! it"; this is that, once, with the server's lifetime tied to a value so a test cannot
//! leak a server past its end.

use crate::{SimConfig, Simulator};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A `kube::Client` for the cluster and context a kubeconfig (YAML) names as current.
///
/// This is `Kubeconfig::from_yaml`, `Config::from_custom_kubeconfig` and
/// `Client::try_from` in one call, so callers do not repeat the three steps.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, kube::Error> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    kube::Client::try_from(config)
}

/// A simulator serving HTTP on 127.0.0.1 from this process ([`Simulator::start_local`]).
///
/// The server stops when this is dropped (open watches end then), or with
/// [`LocalSimulator::stop`] to also wait for it to finish.
pub struct LocalSimulator {
    simulator: Simulator,
    addr: SocketAddr,
    url: String,
    client: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for LocalSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSimulator")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a fresh simulator with `config` on a free port of 127.0.0.1, served by a task
    /// on the current tokio runtime, with a client built from its kubeconfig.
    ///
    /// Fails only if the loopback listener cannot be bound or the client cannot be built.
    pub async fn start_local(config: SimConfig) -> std::io::Result<LocalSimulator> {
        Simulator::new(config).serve_local().await
    }

    /// Serves this simulator (objects already stored stay) as [`Simulator::start_local`]
    /// serves a fresh one: for a cluster filled before any client connects.
    pub async fn serve_local(&self) -> std::io::Result<LocalSimulator> {
        let simulator = self.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let client = client_from_kubeconfig(&simulator.kubeconfig(&url))
            .await
            .map_err(std::io::Error::other)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let simulator = simulator.clone();
            async move {
                simulator
                    .serve(listener, async move {
                        // A dropped sender (the LocalSimulator dropped) stops the server too.
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Ok(LocalSimulator {
            simulator,
            addr,
            url,
            client,
            stop: Some(stop),
            server: Some(server),
        })
    }
}

impl LocalSimulator {
    /// The simulator itself, to arrange objects, inject faults and read its history.
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    /// The server's address, for raw HTTP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig (YAML) for the server ([`Simulator::kubeconfig`]).
    pub fn kubeconfig(&self) -> String {
        self.simulator.kubeconfig(&self.url)
    }

    /// A client for the server (clones share one connection pool).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Stops the server and waits for it to end: open watches end, and the server finishes
    /// once its connections have closed.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
