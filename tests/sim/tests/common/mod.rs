//! Shared helpers: start a simulator on 127.0.0.1:0 and build a kube client for it.
#![allow(dead_code)]

use futures::{Stream, StreamExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use sim::{Resource, SimConfig, Simulator};
use std::time::Duration;

/// A simulator serving on loopback until dropped.
pub struct Running {
    pub sim: Simulator,
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start(config: SimConfig) -> Running {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = sim.clone();
    tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        sim,
        url,
        shutdown: Some(tx),
    }
}

pub async fn client(running: &Running) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&running.sim.kubeconfig(&running.url)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The next item of a stream, failing the test (rather than hanging) if none comes.
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("no stream item within 20s")
        .expect("stream ended")
}

pub fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

pub fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

pub fn owner_kinds(v: &Value) -> Vec<String> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn count(sim: &Simulator, resource: Resource, ns: &str) -> usize {
    sim.list(resource, Some(ns)).len()
}

/// `TYPE Kind name` for each event the simulator recorded after resourceVersion `after`.
pub fn events_after(sim: &Simulator, after: u64) -> Vec<String> {
    sim.events()
        .into_iter()
        .filter(|e| e.resource_version > after)
        .map(|e| format!("{} {} {}", e.event_type, e.resource.kind(), e.name))
        .collect()
}
