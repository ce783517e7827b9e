//! `gantry-proxy`: the data plane binary.

use anyhow::Context;
use clap::Parser;
use gantry_proxy::proxy::admin;
use gantry_proxy::proxy::runtime::{Core, ProxyOptions, Shared};
use gantry_proxy::xds::{ClientConfig, XdsClient};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "gantry-proxy", version, about = "Gantry data plane: an xDS-fed HTTP proxy")]
struct Cli {
    /// Control-plane xDS addresses, tried in order (repeat or comma-separate).
    #[arg(long, env = "GANTRY_XDS_ADDRESS", value_delimiter = ',', default_value = "http://127.0.0.1:18000")]
    xds_address: Vec<String>,
    /// This proxy's node id (default: the hostname).
    #[arg(long, env = "GANTRY_NODE_ID")]
    node_id: Option<String>,
    /// The gateway group this proxy belongs to (xDS node.cluster).
    #[arg(long, env = "GANTRY_CLUSTER", default_value = "default")]
    cluster: String,
    /// Worker threads (default: one per core).
    #[arg(long, env = "GANTRY_WORKERS")]
    workers: Option<usize>,
    /// Address of the admin endpoint.
    #[arg(long, env = "GANTRY_PROXY_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// Added to every listener port, so several proxies can share a host.
    #[arg(long, env = "GANTRY_PORT_OFFSET", default_value_t = 0, allow_hyphen_values = true)]
    port_offset: i32,
    /// How long a stopping proxy lets requests in flight finish (ms).
    #[arg(long, env = "GANTRY_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    drain_timeout_ms: u64,
    /// Keep the last good config here and boot from it when the control
    /// plane is unreachable.
    #[arg(long, env = "GANTRY_SNAPSHOT_CACHE")]
    snapshot_cache: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    gantry_shared::telemetry::init();
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = cli.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let rt = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?
    };
    rt.block_on(run(cli))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "gantry-proxy".into())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shared = Shared::new(ProxyOptions {
        port_offset: cli.port_offset,
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
    });
    let node_id = cli.node_id.clone().unwrap_or_else(hostname);
    let client = XdsClient::new(
        ClientConfig {
            addresses: cli.xds_address.clone(),
            node_id: node_id.clone(),
            cluster: cli.cluster.clone(),
            snapshot_file: cli.snapshot_cache.clone(),
        },
        Arc::new(Core(shared.clone())),
    );
    match client.boot_from_snapshot() {
        Ok(true) => tracing::info!("booted from the snapshot cache"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "snapshot cache unusable; waiting for the control plane"),
    }
    let status = client.status();
    let xds_status: admin::XdsStatus = Arc::new(move || serde_json::to_value(&*status.borrow()).unwrap_or_default());
    let admin_listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint to {}", cli.admin_listen))?;
    tracing::info!(node = %node_id, group = %cli.cluster, xds = ?cli.xds_address, admin = %admin_listener.local_addr()?, "gantry-proxy started");
    let admin_task = tokio::spawn(axum::serve(admin_listener, admin::router(shared.clone(), xds_status)).into_future());
    let xds_task = tokio::spawn(client.run());

    shutdown().await;
    tracing::info!("draining");
    xds_task.abort();
    shared.drain().await;
    admin_task.abort();
    tracing::info!("gantry-proxy stopped");
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
}
