//! `claim-ledger demo`: the simulator, the watcher, a ledger and the API together, with a
//! live scenario that binds, replaces and releases sandboxes until Ctrl-C (or `--rounds`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::Auth;
use ledger::Ledger;
use sim::{Propagation, SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::sync::watch;
use watcher::WatchOptions;

use crate::audit;
use crate::error::CommandError;
use crate::service::{self, finish, start, ApiArgs, Shutdown};

// The help of this command is the doc comment on `Command::Demo` (cli.rs).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// The demo's directory: the ledger, the simulator's kubeconfig, the API token.
    #[arg(long, default_value = "claim-ledger-demo")]
    db: PathBuf,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Stop after this many scenario rounds instead of at Ctrl-C.
    #[arg(long)]
    rounds: Option<u64>,
    /// Milliseconds between scenario steps.
    #[arg(long, default_value_t = 2000)]
    step_ms: u64,
}

/// Runs `claim-ledger demo`.
pub fn run(args: DemoArgs) -> Result<(), CommandError> {
    let DemoArgs {
        db,
        listen,
        rounds,
        step_ms,
    } = args;
    let options = DemoOptions {
        dir: db,
        listen,
        rounds,
        step: Duration::from_millis(step_ms),
    };
    service::run_until_signal(|stop, shutdown| run_demo(options, stop, shutdown))?;
    Ok(())
}

/// What `claim-ledger demo` runs with.
struct DemoOptions {
    /// The demo's directory: ledger, kubeconfig, API token.
    dir: PathBuf,
    /// Where the API listens.
    listen: SocketAddr,
    /// Stop after this many scenario rounds (run until Ctrl-C when absent).
    rounds: Option<u64>,
    /// Pause between scenario steps.
    step: Duration,
}

/// `claim-ledger demo`: simulator + watcher + ledger + API with a live scenario.
async fn run_demo(
    args: DemoOptions,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let ledger_dir = args.dir.join("ledger");
    let ledger =
        Ledger::open(&ledger_dir, ledger::LedgerConfig::default()).map_err(|e| e.to_string())?;
    if ledger.head().seq > 0 {
        println!(
            "reusing the ledger of an earlier demo at {} (head seq {}); remove {} for a fresh one",
            ledger_dir.display(),
            ledger.head().seq,
            args.dir.display()
        );
    }

    let sim = Simulator::new(SimConfig::default());
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sim_url = format!(
        "http://{}",
        sim_listener.local_addr().map_err(|e| e.to_string())?
    );
    let kubeconfig_path = args.dir.join("kubeconfig");
    let kubeconfig = sim.kubeconfig(&sim_url);
    std::fs::write(&kubeconfig_path, &kubeconfig).map_err(|e| e.to_string())?;
    let sim_task = tokio::spawn({
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        async move { sim.serve(sim_listener, shutdown.wait()).await }
    });
    let client = sim::client_from_kubeconfig(&kubeconfig)
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;

    let token_path = args.dir.join("api-token");
    write_token(&token_path)?;
    // The demo signs checkpoints with its own key, kept beside the ledger, so exports
    // made from one run still verify against the same key in the next.
    let key_prefix = args.dir.join("signing");
    let key_path = key_prefix.with_extension("key");
    if !key_path.exists() {
        audit::keygen("claim-ledger-demo", &key_prefix)?;
    }
    let key = audit::load_signer(&key_path)?;
    let checkpoints = api::CheckpointSigning {
        origin: key.name().to_string(),
        key,
        every_entries: 20,
        interval: Duration::from_secs(5),
    };
    let running = start(
        client,
        ledger,
        WatchOptions::default(),
        ApiArgs {
            listen: args.listen,
            auth: Auth::Tokens(token_path.clone()),
            tls: None,
            checkpoints: Some(checkpoints),
            header_timeout: None,
            max_connections: None,
            max_replays: None,
        },
        shutdown.clone(),
    )
    .await?;
    let api = format!("http://{}", running.address);
    print_banner(
        &args.dir,
        &sim_url,
        &api,
        &kubeconfig_path,
        &token_path,
        &ledger_dir,
    );

    let scenario = tokio::spawn(scenario(
        sim.clone(),
        api.clone(),
        args.rounds,
        args.step,
        shutdown.clone(),
    ));
    let finished_rounds = scenario.await.map_err(|e| e.to_string())??;
    if finished_rounds {
        println!("scenario finished; stopping");
        let _ = stop.send(true);
    }
    let (seq, hash) = finish(running, &stop).await?;
    let _ = sim_task.await;
    println!("stopped; ledger head seq {seq} hash {hash}");
    println!(
        "verify it: {} verify --db {}",
        command_name(),
        ledger_dir.display()
    );
    Ok(())
}

/// How to run this binary from a shell: `claim-ledger` when that name on `PATH` is this
/// very program (after `cargo install --path .`), else the path of the running binary.
fn command_name() -> String {
    let Ok(this) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "claim-ledger".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("claim-ledger")
                .canonicalize()
                .is_ok_and(|found| found == this)
        })
    });
    match on_path {
        true => "claim-ledger".into(),
        false => this.display().to_string(),
    }
}

/// A ready-to-paste identity check of pod `pod_name` (uid `pod_uid`) claiming `sandbox_id`.
fn check_command(
    api: &str,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    sandbox_id: &str,
) -> String {
    format!(
        "curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' {api}/v1/identity/check -d '{{\"namespace\":\"{namespace}\",\"pod_name\":\"{pod_name}\",\"pod_uid\":\"{pod_uid}\",\"sandbox_id\":\"{sandbox_id}\"}}'"
    )
}

/// A fresh 256-bit token, hex, in a file only the owner can read.
fn write_token(path: &Path) -> Result<(), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the API token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, format!("{token}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())
}

fn print_banner(
    dir: &Path,
    sim_url: &str,
    api: &str,
    kubeconfig: &Path,
    token: &Path,
    ledger: &Path,
) {
    println!("claim-ledger demo — Ctrl-C to stop");
    println!("  API                {api}");
    // The demo's own, local token: one link opens a signed-in page (the page moves the
    // token to sessionStorage and removes it from the address bar).
    if let Ok(secret) = std::fs::read_to_string(token) {
        println!("  timeline page      {api}/ui/#token={}", secret.trim());
    }
    println!("  cluster simulator  {sim_url}");
    println!("  kubeconfig         {}", kubeconfig.display());
    println!("  API token file     {}", token.display());
    println!("  ledger             {}", ledger.display());
    println!();
    println!("Try (in another terminal):");
    println!("  export TOKEN=$(cat {})", token.display());
    println!("  curl -s {api}/readyz");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/head");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/state");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{api}/v1/entries?after_seq=0&limit=5'"
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/v1/checkpoint");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{api}/v1/export?bundle=true' -o bundle.tar"
    );
    println!(
        "  {} verify-export bundle.tar --trusted-key {}",
        command_name(),
        dir.join("signing.pub").display()
    );
    println!(
        "  kubectl --kubeconfig {} get sandboxes,sandboxclaims,pods -n demo",
        kubeconfig.display()
    );
    println!("A fresh check is printed below whenever a pod binds or is replaced, with the");
    println!("answer it should get; each one goes stale at the step that replaces that pod.");
    if command_name() != "claim-ledger" {
        println!("(`cargo install --path .` puts `claim-ledger` on your PATH.)");
    }
    println!("(files under {})", dir.display());
    println!();
}

/// The live scenario: a warm pool; claims that bind, a pod that is replaced, a claim that
/// expires keeping its workspace (Retain), claims released with each propagation policy.
/// Returns whether it ended by itself (after `rounds`).
async fn scenario(
    sim: Simulator,
    api: String,
    rounds: Option<u64>,
    step: Duration,
    shutdown: Shutdown,
) -> Result<bool, String> {
    let namespace = "demo";
    let pause = |shutdown: Shutdown| async move {
        tokio::select! {
            _ = tokio::time::sleep(step) => false,
            _ = shutdown.wait() => true,
        }
    };
    sim.create_pool(namespace, "python-pool", 3, "python-template", true)
        .map_err(|e| e.to_string())?;
    println!("[demo] warm pool demo/python-pool filled with 3 sandboxes");
    let policies = [
        Propagation::Background,
        Propagation::Foreground,
        Propagation::Orphan,
    ];
    let mut round = 0u64;
    loop {
        if rounds.is_some_and(|limit| round >= limit) {
            return Ok(true);
        }
        if pause(shutdown.clone()).await {
            return Ok(false);
        }
        let claim_name = format!("session-{round}");
        let sandbox_id = format!("sbx-{round:04}");
        let claim = sim
            .claim_warm(namespace, &claim_name, "python-pool", Some(&sandbox_id))
            .map_err(|e| e.to_string())?;
        let sandbox = claim["status"]["sandbox"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut bound_uid = String::new();
        if let Some(pod) = sim.get(sim::Resource::Pod, namespace, &sandbox) {
            bound_uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            println!("[demo] claim {namespace}/{claim_name} bound warm sandbox {sandbox} (pod uid {bound_uid})");
            println!("       expect allow:");
            println!(
                "       {}",
                check_command(&api, namespace, &sandbox, &bound_uid, &sandbox_id)
            );
        }
        if pause(shutdown.clone()).await {
            return Ok(false);
        }
        let replaced = sim
            .replace_pod(namespace, &sandbox)
            .map_err(|e| e.to_string())?;
        let new_uid = replaced["metadata"]["uid"].as_str().unwrap_or_default();
        println!("[demo] pod {namespace}/{sandbox} replaced: new uid {new_uid}");
        println!("       expect allow (the new pod holds the binding):");
        println!(
            "       {}",
            check_command(&api, namespace, &sandbox, new_uid, &sandbox_id)
        );
        if !bound_uid.is_empty() {
            println!("       expect deny, BINDING_RELEASED (the old uid, replayed):");
            println!(
                "       {}",
                check_command(&api, namespace, &sandbox, &bound_uid, &sandbox_id)
            );
        }
        if round >= 1 {
            if pause(shutdown.clone()).await {
                return Ok(false);
            }
            let previous = format!("session-{}", round - 1);
            if round % 2 == 1 {
                sim.expire_claim(namespace, &previous)
                    .map_err(|e| e.to_string())?;
                println!("[demo] claim {namespace}/{previous} expired (Retain): sandbox and pod deleted, workspace PVC kept; its checks now deny");
            } else {
                let policy = policies[(round as usize / 2) % policies.len()];
                sim.delete_claim(namespace, &previous, policy)
                    .map_err(|e| e.to_string())?;
                println!("[demo] claim {namespace}/{previous} deleted ({policy:?} propagation); its checks now deny");
            }
        }
        round += 1;
    }
}
