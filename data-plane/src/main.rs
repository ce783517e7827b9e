//! `gantry-proxy`: the data plane binary.

use anyhow::Context;
use clap::Parser;
use gantry_proxy::proxy::access_log::{AccessLog, Sink};
use gantry_proxy::proxy::admin;
use gantry_proxy::proxy::runtime::{Core, ProxyOptions, Shared};
use gantry_proxy::xds::tls::{ClientTls, ClientTlsFiles};
use gantry_proxy::xds::{ClientConfig, Tuning, XdsClient};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "gantry-proxy",
    version,
    about = "Gantry data plane: an xDS-fed HTTP proxy"
)]
struct Cli {
    /// A bootstrap file (YAML or JSON) giving any of the options below by
    /// their long names with `_` (e.g. `node_id`, `xds_address: [...]`);
    /// flags and environment variables win over it.
    #[arg(long, env = "GANTRY_BOOTSTRAP")]
    bootstrap: Option<PathBuf>,
    /// Control-plane xDS addresses, tried in order (repeat or comma-separate);
    /// `https://` ones over TLS (`--xds-ca`, and `--xds-cert`/`--xds-key`
    /// for mutual TLS).
    #[arg(
        long,
        env = "GANTRY_XDS_ADDRESS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:18000"
    )]
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
    #[arg(
        long,
        env = "GANTRY_PROXY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901"
    )]
    admin_listen: SocketAddr,
    /// The admin endpoint's address as the control plane reaches it, for
    /// the proxy-cache purge it fans out (default: the bound address; set
    /// it when the admin endpoint listens on a wildcard address).
    #[arg(long, env = "GANTRY_PROXY_ADMIN_ADVERTISE")]
    admin_advertise: Option<String>,
    /// Added to every listener port, so several proxies can share a host.
    #[arg(
        long,
        env = "GANTRY_PORT_OFFSET",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    port_offset: i32,
    /// How long a stopping proxy lets requests in flight finish (ms).
    #[arg(long, env = "GANTRY_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    drain_timeout_ms: u64,
    /// Write a JSON access log line per request to this file (appended),
    /// or to `stdout`. Off by default.
    #[arg(long, env = "GANTRY_ACCESS_LOG")]
    access_log: Option<String>,
    /// The share of requests the access log records, in (0, 1].
    #[arg(long, env = "GANTRY_ACCESS_LOG_SAMPLE_RATE", default_value_t = 1.0)]
    access_log_sample_rate: f64,
    /// Keep the last good config here and boot from it when the control
    /// plane is unreachable.
    #[arg(long, env = "GANTRY_SNAPSHOT_CACHE")]
    snapshot_cache: Option<PathBuf>,
    /// CA certificates (PEM) the control plane's certificate must chain
    /// to; needed for `https://` xDS addresses, whose host is verified
    /// against the certificate.
    #[arg(long, env = "GANTRY_XDS_CA")]
    xds_ca: Option<PathBuf>,
    /// This node's client certificate (PEM; mutual TLS). It must name the
    /// node id (`gantry-cp certs node`).
    #[arg(long, env = "GANTRY_XDS_CERT", requires_all = ["xds_key", "xds_ca"])]
    xds_cert: Option<PathBuf>,
    /// The private key of `--xds-cert` (PEM).
    #[arg(long, env = "GANTRY_XDS_KEY", requires = "xds_cert")]
    xds_key: Option<PathBuf>,
    /// How often the xDS TLS files are checked for new certificates (ms);
    /// new ones are used from the next connection, made at once.
    #[arg(long, env = "GANTRY_XDS_TLS_RELOAD_MS", default_value_t = 1000)]
    xds_tls_reload_ms: u64,
    /// HTTP/2 PING interval on the xDS connection (ms): a control plane the
    /// network stopped delivering for (no reset, nothing at all) is given up
    /// within interval + timeout and another address tried, as Envoy's
    /// `connection_keepalive` on its xDS cluster does.
    #[arg(
        long,
        env = "GANTRY_XDS_KEEPALIVE_INTERVAL_MS",
        default_value_t = 30_000
    )]
    xds_keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection is dropped (ms).
    #[arg(
        long,
        env = "GANTRY_XDS_KEEPALIVE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    xds_keepalive_timeout_ms: u64,
    /// Bearer token the admin endpoint requires (all but `/ready` and
    /// `/healthz`); mandatory when `--admin-listen` is not loopback.
    #[arg(long, env = "GANTRY_PROXY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// Reads the bootstrap file into arguments placed before the command
/// line's, so that flags given on the command line override the file.
fn args_with_bootstrap() -> anyhow::Result<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .position(|a| a == "--bootstrap")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--bootstrap=").map(str::to_string))
        })
        .or_else(|| std::env::var("GANTRY_BOOTSTRAP").ok());
    let Some(path) = path else { return Ok(args) };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading bootstrap {path}"))?;
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing bootstrap {path}"))?;
    let map = doc
        .as_mapping()
        .with_context(|| format!("bootstrap {path}: expected a mapping"))?;
    let mut out = vec![args[0].clone()];
    for (k, v) in map {
        let key = k
            .as_str()
            .with_context(|| format!("bootstrap {path}: keys must be strings"))?;
        if key == "bootstrap" {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let values: Vec<String> = match v {
            serde_yaml_ng::Value::Sequence(items) => items
                .iter()
                .map(yaml_scalar)
                .collect::<anyhow::Result<_>>()?,
            other => vec![yaml_scalar(other)?],
        };
        for val in values {
            out.push(flag.clone());
            out.push(val);
        }
    }
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

fn yaml_scalar(v: &serde_yaml_ng::Value) -> anyhow::Result<String> {
    Ok(match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        other => anyhow::bail!("bootstrap: unsupported value {other:?}"),
    })
}

fn main() -> anyhow::Result<()> {
    gantry_shared::telemetry::init();
    let cli = Cli::parse_from(args_with_bootstrap()?);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    rt.block_on(run(cli))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "gantry-proxy".into())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let access_log = match &cli.access_log {
        Some(sink) => Some(
            AccessLog::start(Sink::parse(sink), cli.access_log_sample_rate)
                .with_context(|| format!("--access-log {sink}"))?,
        ),
        None => None,
    };
    let node_id = cli.node_id.clone().unwrap_or_else(hostname);
    let shared = Shared::new(ProxyOptions {
        port_offset: cli.port_offset,
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
        access_log,
        node_id: node_id.clone(),
    });
    let admin_token = cli.admin_token.clone().filter(|t| !t.is_empty());
    if admin_token.is_none() && !cli.admin_listen.ip().is_loopback() {
        anyhow::bail!(
            "--admin-listen {} is not a loopback address: give --admin-token (GANTRY_PROXY_ADMIN_TOKEN); the admin endpoint shows the configuration and purges caches",
            cli.admin_listen
        );
    }
    let tls = match &cli.xds_ca {
        Some(ca) => Some(
            ClientTls::load(ClientTlsFiles {
                ca: ca.clone(),
                cert: cli.xds_cert.clone(),
                key: cli.xds_key.clone(),
            })
            .context("loading the xDS TLS files")?,
        ),
        None => None,
    };
    if tls.is_some()
        && let Some(plain) = cli
            .xds_address
            .iter()
            .find(|a| !a.trim().starts_with("https://"))
    {
        // A CA says the operator wants TLS: a plaintext address beside it
        // would quietly fall back to no TLS at all.
        anyhow::bail!("--xds-address {plain}: with --xds-ca every address must be https://");
    }
    if tls.is_none()
        && let Some(a) = cli
            .xds_address
            .iter()
            .find(|a| a.trim().starts_with("https://"))
    {
        anyhow::bail!(
            "--xds-address {a}: https:// needs --xds-ca (the CA of gantry-cp's certificate)"
        );
    }
    let reloader = tls
        .as_ref()
        .map(|t| t.spawn_reloader(Duration::from_millis(cli.xds_tls_reload_ms.max(100))));
    let admin_listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint to {}", cli.admin_listen))?;
    let admin_address = cli
        .admin_advertise
        .clone()
        .unwrap_or(admin_listener.local_addr()?.to_string());
    let client = XdsClient::new(
        ClientConfig {
            addresses: cli.xds_address.clone(),
            node_id: node_id.clone(),
            cluster: cli.cluster.clone(),
            snapshot_file: cli.snapshot_cache.clone(),
            admin_address: Some(admin_address),
            tls,
        },
        Arc::new(Core(shared.clone())),
    )
    .with_tuning(Tuning {
        keepalive_interval: Duration::from_millis(cli.xds_keepalive_interval_ms.max(100)),
        keepalive_timeout: Duration::from_millis(cli.xds_keepalive_timeout_ms.max(100)),
        ..Tuning::default()
    });
    match client.boot_from_snapshot() {
        Ok(true) => tracing::info!("booted from the snapshot cache"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "snapshot cache unusable; waiting for the control plane")
        }
    }
    let status = client.status();
    let xds_status: admin::XdsStatus =
        Arc::new(move || serde_json::to_value(&*status.borrow()).unwrap_or_default());
    tracing::info!(node = %node_id, group = %cli.cluster, xds = ?cli.xds_address, admin = %admin_listener.local_addr()?, "gantry-proxy started");
    let mut admin_router = admin::router(shared.clone(), xds_status, client.resources());
    if let Some(t) = admin_token {
        admin_router = admin::require_token(admin_router, t);
    }
    let admin_task = tokio::spawn(axum::serve(admin_listener, admin_router).into_future());
    let xds_task = tokio::spawn(client.run());

    shutdown().await;
    tracing::info!("draining");
    xds_task.abort();
    shared.drain().await;
    if let Some(log) = &shared.options.access_log {
        log.settle();
    }
    admin_task.abort();
    if let Some(r) = reloader {
        r.abort();
    }
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
