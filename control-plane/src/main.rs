//! `gantry-cp`: the control plane binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry_cp::admin::{Admin, router};
use gantry_cp::certs;
use gantry_cp::declarative;
use gantry_cp::seal::Sealer;
use gantry_cp::store::{Store, StoreConfig};
use gantry_cp::translator::ProxyOptions;
use gantry_cp::xds::{self, Fleet, SnapshotCache, XdsContext};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "gantry-cp",
    version,
    about = "Gantry control plane: admin API, config store and xDS server"
)]
struct Cli {
    /// Database URL: postgres://... or sqlite:PATH. Default: a SQLite file
    /// in the working directory.
    #[arg(
        long,
        env = "GANTRY_DATABASE_URL",
        default_value = "sqlite://gantry.db",
        global = true
    )]
    database_url: String,
    /// Postgres schema for Gantry's tables (created if missing).
    #[arg(long, env = "GANTRY_DATABASE_SCHEMA", global = true)]
    database_schema: Option<String>,
    /// How often to re-read the newest revision besides LISTEN/NOTIFY
    /// (milliseconds; 0 turns the poll off).
    #[arg(
        long,
        env = "GANTRY_FEED_POLL_MS",
        default_value_t = 1000,
        global = true
    )]
    feed_poll_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Address of the admin API.
    #[arg(long, env = "GANTRY_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    admin_listen: SocketAddr,
    /// Address of the xDS server (ADS, delta ADS and CSDS over gRPC).
    #[arg(long, env = "GANTRY_XDS_LISTEN", default_value = "127.0.0.1:18000")]
    xds_listen: SocketAddr,
    /// How long to wait after a change for more before pushing (ms): a
    /// burst of admin writes becomes one push.
    #[arg(long, env = "GANTRY_XDS_DEBOUNCE_MS", default_value_t = 50)]
    xds_debounce_ms: u64,
    /// Address the proxies' listeners bind.
    #[arg(long, env = "GANTRY_PROXY_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    proxy_listen_address: String,
    /// The proxies' HTTP port.
    #[arg(long, env = "GANTRY_PROXY_HTTP_PORT", default_value_t = 8000)]
    proxy_http_port: u16,
    /// The proxies' HTTPS port.
    #[arg(long, env = "GANTRY_PROXY_HTTPS_PORT", default_value_t = 8443)]
    proxy_https_port: u16,
    /// Peers (CIDRs, comma-separated) whose X-Forwarded-For the proxies
    /// believe for the client address (Kong's `trusted_ips`).
    #[arg(long, env = "GANTRY_TRUSTED_IPS", value_delimiter = ',')]
    trusted_ips: Vec<String>,
    /// Header a trusted peer puts the client address in (Kong's `real_ip_header`).
    #[arg(long, env = "GANTRY_REAL_IP_HEADER", default_value = "x-forwarded-for")]
    real_ip_header: String,
    /// Networks (CIDRs, comma-separated) where a gantry-proxy's advertised
    /// admin endpoint may be when it is not the address its xDS connection
    /// comes from (NAT, a balancer in front of the control plane). Unset:
    /// the control plane calls a proxy's admin port only on the address
    /// its xDS connection comes from.
    #[arg(long, env = "GANTRY_PROXY_ADMIN_NETWORKS", value_delimiter = ',')]
    proxy_admin_networks: Vec<ipnet::IpNet>,
    /// Host names (comma-separated) the admin API answers to besides
    /// loopback names, for operators who front it with a name; `*` for any.
    /// Other Host values get 403 (DNS rebinding).
    #[arg(long, env = "GANTRY_ADMIN_ALLOWED_HOSTS", value_delimiter = ',')]
    admin_allowed_hosts: Vec<String>,
    /// Origins (comma-separated, e.g. `https://admin-ui.example.com`) whose
    /// browser pages may write through the admin API; `*` for any. Other
    /// cross-site writes get 403 (CSRF).
    #[arg(long, env = "GANTRY_ADMIN_ALLOWED_ORIGINS", value_delimiter = ',')]
    admin_allowed_origins: Vec<String>,
    /// How long a client may take to send a request's headers, from their
    /// first byte, before the proxies answer 408 and close (ms; 0: no
    /// limit). Envoy's `request_headers_timeout`.
    #[arg(
        long,
        env = "GANTRY_PROXY_REQUEST_HEADERS_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    proxy_request_headers_timeout_ms: u32,
    /// The xDS server's certificate chain (PEM). With `--xds-tls-key` and
    /// `--xds-client-ca`, xDS is served over mutual TLS: every node
    /// presents a certificate naming its node id.
    #[arg(long, env = "GANTRY_XDS_TLS_CERT", requires_all = ["xds_tls_key", "xds_client_ca"])]
    xds_tls_cert: Option<PathBuf>,
    /// The private key of `--xds-tls-cert` (PEM).
    #[arg(long, env = "GANTRY_XDS_TLS_KEY", requires = "xds_tls_cert")]
    xds_tls_key: Option<PathBuf>,
    /// CA certificates (PEM bundle) the nodes' client certificates must
    /// chain to.
    #[arg(long, env = "GANTRY_XDS_CLIENT_CA", requires = "xds_tls_cert")]
    xds_client_ca: Option<PathBuf>,
    /// SPIFFE trust domain of node identities: a URI SAN
    /// `spiffe://<domain>/node/<node-id>` names a node only in this domain.
    #[arg(long, env = "GANTRY_XDS_TRUST_DOMAIN", default_value = certs::DEFAULT_TRUST_DOMAIN)]
    xds_trust_domain: String,
    /// How often the xDS TLS files are checked for new certificates (ms).
    #[arg(long, env = "GANTRY_XDS_TLS_RELOAD_MS", default_value_t = 1000)]
    xds_tls_reload_ms: u64,
    /// Serve xDS in plaintext on a non-loopback address (refused
    /// otherwise: anyone who reaches the port could read every node's
    /// configuration).
    #[arg(long, env = "GANTRY_XDS_INSECURE")]
    xds_insecure: bool,
    /// Bearer token sent to the proxies' admin endpoints (proxy-cache
    /// purge); the proxies' `--admin-token`.
    #[arg(long, env = "GANTRY_PROXY_ADMIN_TOKEN", hide_env_values = true)]
    proxy_admin_token: Option<String>,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the fleet's xDS CA: `<out>/ca.pem` and `<out>/ca-key.pem`.
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// SPIFFE trust domain (recorded in the CA's name).
        #[arg(long, default_value = certs::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node's client certificate naming its node id (DNS SAN when
    /// the id is a DNS name, and the SPIFFE URI SAN):
    /// `<out>/node.pem` and `<out>/node-key.pem`.
    Node {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        #[arg(long)]
        node_id: String,
        #[arg(long, default_value = certs::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue the xDS server's certificate for the names and addresses the
    /// nodes dial: `<out>/server.pem` and `<out>/server-key.pem`.
    Server {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        /// A DNS name or IP address (repeat for more).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

// Parsed once at start-up: the size of the run variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the control plane (the default).
    Run(RunArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// Replace the whole configuration with a Kong declarative file.
    Apply {
        /// A `_format_version: "3.0"` file, YAML or JSON.
        file: std::path::PathBuf,
    },
    /// Print the current configuration as a Kong declarative file.
    Export,
    /// Issue the fleet's xDS certificates (CA, node, server).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

fn store_config(cli: &Cli) -> StoreConfig {
    let mut cfg = StoreConfig::new(&cli.database_url);
    cfg.schema = cli.database_schema.clone();
    cfg.feed_poll = std::time::Duration::from_millis(cli.feed_poll_ms);
    cfg
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gantry_shared::telemetry::init();
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = store_config(&cli);
    match &cli.command {
        Some(Command::Certs { command }) => certs_command(command),
        Some(Command::Migrate) => {
            let store = Store::connect(&cfg)
                .await
                .context("connecting to the database")?;
            store.migrate().await.context("running migrations")?;
            println!("migrations applied ({})", store.backend().name());
            Ok(())
        }
        Some(Command::Apply { file }) => {
            let store = Store::open(&cfg).await.context("opening the store")?;
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let sealer = Sealer::load(&store).await?;
            let doc = declarative::parse_document(&bytes)?;
            let desired = declarative::flatten(&doc, &sealer)?;
            let mut tx = store.begin_write("cli").await?;
            let changes = declarative::replace(&mut tx, desired).await?;
            gantry_cp::admission::check_all(&mut tx, &ProxyOptions::default())
                .await
                .with_context(|| format!("{} cannot be applied", file.display()))?;
            let c = tx
                .commit("config", &format!("declarative config: {changes} changes"))
                .await?;
            println!(
                "applied {}: {changes} changes, revision {}",
                file.display(),
                c.revision
            );
            store.close().await;
            Ok(())
        }
        Some(Command::Export) => {
            let store = Store::open(&cfg).await.context("opening the store")?;
            let sealer = Sealer::load(&store).await?;
            let doc = declarative::export(&store.all_current().await?, &sealer);
            print!("{}", serde_yaml_ng::to_string(&doc)?);
            store.close().await;
            Ok(())
        }
        Some(Command::Run(args)) => run(&cfg, args.clone()).await,
        None => run(&cfg, cli.run.clone()).await,
    }
}

fn certs_command(cmd: &CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Ca {
            out,
            trust_domain,
            days,
        } => {
            let key = out.join("ca-key.pem");
            // Overwriting a CA key would orphan every certificate it issued.
            anyhow::ensure!(
                !key.exists(),
                "{} exists: refusing to replace a CA key",
                key.display()
            );
            let ca = certs::new_ca(trust_domain, *days)?;
            let (c, k) = certs::write_pair(out, "ca", &ca)?;
            println!(
                "CA for trust domain {trust_domain}: {} (give to gantry-cp --xds-client-ca and to every node), {} (keep offline)",
                c.display(),
                k.display()
            );
        }
        CertsCommand::Node {
            ca_cert,
            ca_key,
            node_id,
            trust_domain,
            out,
            days,
        } => {
            let issued = certs::issue_node(
                &certs::read(ca_cert)?,
                &certs::read(ca_key)?,
                node_id,
                trust_domain,
                *days,
            )?;
            let (c, k) = certs::write_pair(out, "node", &issued)?;
            println!(
                "node {node_id}: {} and {} (gantry-proxy --xds-cert / --xds-key)",
                c.display(),
                k.display()
            );
        }
        CertsCommand::Server {
            ca_cert,
            ca_key,
            hosts,
            out,
            days,
        } => {
            let issued =
                certs::issue_server(&certs::read(ca_cert)?, &certs::read(ca_key)?, hosts, *days)?;
            let (c, k) = certs::write_pair(out, "server", &issued)?;
            println!(
                "xDS server ({}): {} and {} (gantry-cp --xds-tls-cert / --xds-tls-key)",
                hosts.join(", "),
                c.display(),
                k.display()
            );
        }
    }
    Ok(())
}

/// The xDS transport the flags ask for; plaintext off loopback only when
/// the operator says so.
fn xds_transport(args: &RunArgs) -> anyhow::Result<xds::Transport> {
    let (Some(cert), Some(key), Some(ca)) =
        (&args.xds_tls_cert, &args.xds_tls_key, &args.xds_client_ca)
    else {
        if !args.xds_listen.ip().is_loopback() && !args.xds_insecure {
            anyhow::bail!(
                "--xds-listen {} is not a loopback address: give --xds-tls-cert, --xds-tls-key and --xds-client-ca (mutual TLS), or --xds-insecure to serve every node's configuration in plaintext",
                args.xds_listen
            );
        }
        return Ok(xds::Transport::Plain);
    };
    certs::check_trust_domain(&args.xds_trust_domain).context("--xds-trust-domain")?;
    let tls = xds::tls::ServerTls::load(xds::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: ca.clone(),
    })
    .context("loading the xDS TLS files")?;
    Ok(xds::Transport::MutualTls(tls))
}

async fn run(cfg: &StoreConfig, args: RunArgs) -> anyhow::Result<()> {
    // Before anything else: a refused transport must not leave a
    // half-started control plane behind.
    let transport = xds_transport(&args)?;
    let store = Store::open(cfg).await.context("opening the store")?;
    let sealer = Sealer::load(&store).await.context("loading the seal key")?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin API to {}", args.admin_listen))?;
    let xds_listener = xds::bind(args.xds_listen)
        .await
        .with_context(|| format!("binding the xDS server to {}", args.xds_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let xds_addr = xds_listener.local_addr()?;

    for t in &args.trusted_ips {
        if t.parse::<ipnet::IpNet>().is_err() && t.parse::<std::net::IpAddr>().is_err() {
            anyhow::bail!("--trusted-ips: {t:?} is not an IP address or CIDR");
        }
    }
    let cache = SnapshotCache::new();
    let opts = ProxyOptions {
        listen_address: args.proxy_listen_address.clone(),
        http_port: args.proxy_http_port,
        https_port: args.proxy_https_port,
        trusted_ips: args.trusted_ips.clone(),
        real_ip_header: args.real_ip_header.to_ascii_lowercase(),
        request_headers_timeout_ms: i64::from(args.proxy_request_headers_timeout_ms),
    };
    let builder = cache.spawn_builder(
        store.clone(),
        opts.clone(),
        Duration::from_millis(args.xds_debounce_ms),
    );
    let fleet = Fleet::new(xds_addr.to_string());
    let mirror = fleet.spawn_mirror(store.clone(), Duration::from_secs(1));
    gantry_cp::memory::map_large_buffers();
    let _trimmer = gantry_cp::memory::spawn_trimmer(Duration::from_secs(5));
    tracing::info!(
        admin = %admin_addr,
        xds = %xds_addr,
        database = store.backend().name(),
        revision = store.feed().current().revision,
        control_plane = %fleet.cp.id,
        "gantry-cp started"
    );

    // One signal stops both servers; each lets in-flight work finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ctx = Arc::new(XdsContext {
        cache: cache.clone(),
        fleet: fleet.clone(),
        admin_networks: args.proxy_admin_networks.clone(),
        trust_domain: matches!(transport, xds::Transport::MutualTls(_))
            .then(|| args.xds_trust_domain.clone()),
    });
    let reloader = match &transport {
        xds::Transport::MutualTls(tls) => {
            tracing::info!(trust_domain = %args.xds_trust_domain, "xDS over mutual TLS");
            Some(tls.spawn_reloader(Duration::from_millis(args.xds_tls_reload_ms.max(100))))
        }
        xds::Transport::Plain => None,
    };
    let xds_task = tokio::spawn(xds::serve_on(
        xds_listener,
        transport,
        ctx,
        stopped(stop_rx.clone()),
    ));
    let app = router(
        Admin::new(store.clone(), sealer, admin_addr.to_string())
            .with_xds(cache, fleet.clone())
            .with_proxy_options(opts)
            .with_proxy_admin_token(args.proxy_admin_token.clone())
            .with_cross_site(gantry_cp::admin::cross_site::CrossSite::new(
                admin_addr,
                args.admin_allowed_hosts.clone(),
                args.admin_allowed_origins.clone(),
            )),
    );
    let admin_task = tokio::spawn(
        axum::serve(admin_listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );

    shutdown().await;
    tracing::info!("gantry-cp stopping");
    let _ = stop_tx.send(true);
    let (xds_res, admin_res) = tokio::join!(xds_task, admin_task);
    builder.abort();
    mirror.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Err(e) = fleet.clear(&store).await {
        tracing::warn!(error = %e, "could not clear this replica's fleet rows");
    }
    store.close().await;
    xds_res.context("xDS task")?.context("xDS server")?;
    admin_res.context("admin task")?.context("admin API")?;
    tracing::info!("gantry-cp stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
