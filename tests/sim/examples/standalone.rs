//! Runs a standalone simulator: `cargo run -p sim --example standalone -- 127.0.0.1:8080 /tmp/kubeconfig`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_string());
    let kubeconfig = args.next().map(std::path::PathBuf::from);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("serving on http://{}", listener.local_addr()?);
    sim::run_standalone(listener, kubeconfig, sim::SimConfig::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
