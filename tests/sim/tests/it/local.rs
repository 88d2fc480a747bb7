//! The in-process entry point: `Simulator::start_local` serves on loopback with a working
//! client and kubeconfig, and the server goes away on `stop()` and on drop.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;
use sim::{client_from_kubeconfig, SimConfig, Simulator};
use std::time::Duration;

/// Whether anything still accepts connections at `url` (`http://127.0.0.1:PORT`).
async fn accepts_connections(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn the_client_and_the_kubeconfig_reach_the_simulator() {
    let cluster = Simulator::start_local(SimConfig::default()).await.unwrap();
    assert!(
        cluster.url().starts_with("http://127.0.0.1:"),
        "{}",
        cluster.url()
    );
    cluster
        .simulator()
        .create(json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": "default"}, "spec": {}}))
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["p"]);

    let kubeconfig = cluster.kubeconfig();
    assert!(kubeconfig.contains(cluster.url()), "{kubeconfig}");
    let from_yaml = client_from_kubeconfig(&kubeconfig).await.unwrap();
    let pod = Api::<Pod>::namespaced(from_yaml, "default")
        .get("p")
        .await
        .unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("p"));
}

#[tokio::test]
async fn a_kubeconfig_that_is_not_yaml_is_an_error() {
    assert!(client_from_kubeconfig("clusters: [unclosed").await.is_err());
}

#[tokio::test]
async fn stop_ends_the_server() {
    let cluster = Simulator::start_local(SimConfig::default()).await.unwrap();
    let url = cluster.url().to_string();
    assert!(accepts_connections(&url).await);
    cluster.stop().await.unwrap();
    assert!(
        !accepts_connections(&url).await,
        "{url} still serves after stop()"
    );
}

#[tokio::test]
async fn dropping_it_ends_the_server() {
    let cluster = Simulator::start_local(SimConfig::default()).await.unwrap();
    let url = cluster.url().to_string();
    assert!(accepts_connections(&url).await);
    drop(cluster);
    // The server task stops on its own after the drop; give it a moment.
    for _ in 0..200 {
        if !accepts_connections(&url).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} still serves 5 s after the LocalSimulator was dropped");
}

#[tokio::test]
async fn serve_local_serves_what_the_simulator_already_holds() {
    let sim = Simulator::new(SimConfig {
        controllers: false,
        ..SimConfig::default()
    });
    sim.create(json!({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "before", "namespace": "default"}, "spec": {}}))
        .unwrap();
    let cluster = sim.serve_local().await.unwrap();
    assert_eq!(cluster.url(), format!("http://{}", cluster.addr()));
    let pod = Api::<Pod>::namespaced(cluster.client(), "default")
        .get("before")
        .await
        .unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("before"));
    // The served simulator is the same one: a write through either is seen by the other.
    cluster
        .simulator()
        .create(json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "after", "namespace": "default"}, "spec": {}}))
        .unwrap();
    assert_eq!(sim.list(sim::Resource::Pod, Some("default")).len(), 2);
}
