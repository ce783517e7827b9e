//! `gantry-cp`: the control plane binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry_cp::admin::{Admin, router};
use gantry_cp::at_rest::AtRest;
use gantry_cp::certs;
use gantry_cp::declarative;
use gantry_cp::keyring;
use gantry_cp::seal::Sealer;
use gantry_cp::store::{Store, StoreConfig};
use gantry_cp::translator::ProxyOptions;
use gantry_cp::xds::{self, Fleet, SnapshotCache, XdsContext};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// jemalloc rather than glibc's malloc: each snapshot rebuild allocates
/// and frees tens of MB on whichever thread runs it, and glibc kept those
/// pages (RSS grew 20 % over ten minutes of route churn with ~13 MB live).
/// jemalloc hands freed pages back by age, from a background thread.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start-up.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static libc::c_char> = Some(JEMALLOC_CONF);
const JEMALLOC_CONF: &libc::c_char = {
    let conf = c"background_thread:true,dirty_decay_ms:2000,muzzy_decay_ms:0";
    // SAFETY: a C string literal outlives the program; c_char and the
    // literal's bytes have the same layout.
    unsafe { &*conf.as_ptr() }
};

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
    /// The keyring that encrypts secrets at rest: a file of `<id> <base64
    /// key>` lines, the first of which encrypts. Default: `./gantry.keyring`,
    /// created with a fresh key when missing. Every replica on one database
    /// needs the same keyring.
    #[arg(long, env = "GANTRY_KEYRING_FILE", global = true)]
    keyring_file: Option<std::path::PathBuf>,
    /// The keyring's text itself, instead of a file (lines or `;`-separated).
    #[arg(long, env = "GANTRY_KEYRING", hide_env_values = true, global = true)]
    keyring: Option<String>,
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
    /// Bootstrap super-admin token for the admin API (`Kong-Admin-Token`
    /// or `Authorization: Bearer`). With it, or once any RBAC user exists,
    /// every admin request needs a valid token.
    #[arg(long, env = "GANTRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the bootstrap token (trailing whitespace ignored),
    /// so it stays out of the process list and environment.
    #[arg(long, env = "GANTRY_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    admin_token_file: Option<PathBuf>,
    /// Serve the admin API beyond loopback with no token configured
    /// (refused otherwise: anyone who reaches the port could change the
    /// configuration).
    #[arg(long, env = "GANTRY_ADMIN_INSECURE")]
    admin_insecure: bool,
    /// Certificate chain (PEM) to serve the admin API over TLS with;
    /// re-read when the file changes.
    #[arg(long, env = "GANTRY_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// The private key of `--admin-tls-cert` (PEM).
    #[arg(long, env = "GANTRY_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
}

impl RunArgs {
    /// The bootstrap token, from the flag, the environment or the file.
    fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading --admin-token-file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        match token {
            Some(t) if t.len() < 16 => {
                anyhow::bail!("the admin token must be at least 16 characters long")
            }
            t => Ok(t),
        }
    }
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

#[derive(Subcommand)]
// Parsed once at start-up; boxing `RunArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// The keyring that encrypts secrets at rest.
    #[command(subcommand)]
    Keyring(KeyringCommand),
}

#[derive(Subcommand)]
enum KeyringCommand {
    /// Print a new keyring line (`<id> <base64 key>`), to put first in the
    /// keyring before `rotate`.
    New,
    /// Re-encrypt every stored secret under the keyring's first key; the
    /// database then needs no other line of the keyring.
    Rotate,
}

fn keyring_source(cli: &Cli) -> keyring::Source {
    match (&cli.keyring, &cli.keyring_file) {
        (Some(text), _) => keyring::Source::Inline(text.clone()),
        (None, Some(path)) => keyring::Source::File {
            path: path.clone(),
            create: false,
        },
        (None, None) => keyring::Source::File {
            path: "gantry.keyring".into(),
            create: true,
        },
    }
}

/// The store with secrets encrypted at rest under the keyring, which is
/// first checked against the keys the database has seen.
async fn open_store(cli: &Cli, cfg: &StoreConfig) -> anyhow::Result<(Store, Arc<AtRest>)> {
    let ring = keyring::Keyring::load(&keyring_source(cli)).context("loading the keyring")?;
    let store = Store::open(cfg).await.context("opening the store")?;
    ring.register(&store)
        .await
        .context("checking the keyring against the database")?;
    let codec = AtRest::new(Arc::new(ring));
    if let Some(n) = codec
        .upgrade(&store)
        .await
        .context("encrypting secrets stored before encryption at rest")?
        && n > 0
    {
        tracing::info!(
            values = n,
            "encrypted secrets stored in clear by an earlier version"
        );
    }
    Ok((store.with_secrets(codec.clone()), codec))
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
            let (store, _) = open_store(&cli, &cfg).await?;
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
            let (store, _) = open_store(&cli, &cfg).await?;
            let sealer = Sealer::load(&store).await?;
            let doc = declarative::export(&store.all_current().await?, &sealer);
            print!("{}", serde_yaml_ng::to_string(&doc)?);
            store.close().await;
            Ok(())
        }
        Some(Command::Keyring(KeyringCommand::New)) => {
            println!("{}", keyring::Keyring::new_line());
            Ok(())
        }
        Some(Command::Keyring(KeyringCommand::Rotate)) => {
            let (store, codec) = open_store(&cli, &cfg).await?;
            let r = codec.rotate(&store).await.context("rotating")?;
            println!(
                "re-encrypted {} secret values in {} entity versions; keys no longer needed: {}",
                r.values,
                r.versions,
                if r.retired.is_empty() {
                    "none".to_string()
                } else {
                    r.retired.join(", ")
                }
            );
            store.close().await;
            Ok(())
        }
        Some(Command::Run(args)) => {
            let (store, _) = open_store(&cli, &cfg).await?;
            run(store, args.clone()).await
        }
        None => {
            let (store, _) = open_store(&cli, &cfg).await?;
            run(store, cli.run.clone()).await
        }
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

async fn run(store: Store, args: RunArgs) -> anyhow::Result<()> {
    // Before serving anything: a refused transport must not leave a
    // half-started control plane behind.
    let transport = xds_transport(&args)?;
    let sealer = Sealer::load(&store).await.context("loading the seal key")?;
    let admin_token = args.admin_token()?;
    if !args.admin_listen.ip().is_loopback() && admin_token.is_none() && !args.admin_insecure {
        let users = gantry_cp::rbac::store::Rbac::new(&store)
            .has_users()
            .await
            .context("reading RBAC users")?;
        if !users {
            anyhow::bail!(
                "refusing to serve the admin API on {} without authentication: set \
                 --admin-token (GANTRY_ADMIN_TOKEN) or --admin-token-file, listen on \
                 loopback, or pass --admin-insecure",
                args.admin_listen
            );
        }
    }
    let admin_tls = match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(c), Some(k)) => Some(
            gantry_cp::admin::tls::ReloadingCert::open(c.clone(), k.clone())
                .context("loading the admin API certificate")?,
        ),
        _ => None,
    };
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
        key_salt: sealer.key_salt(),
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
        admin_tls = admin_tls.is_some(),
        admin_auth = admin_token.is_some(),
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
    let mut admin = Admin::new(store.clone(), sealer, admin_addr.to_string());
    if let Some(t) = &admin_token {
        admin = admin.with_admin_token(t);
    }
    let app = router(
        admin
            .with_xds(cache, fleet.clone())
            .with_proxy_options(opts)
            .with_proxy_admin_token(args.proxy_admin_token.clone())
            .with_cross_site(gantry_cp::admin::cross_site::CrossSite::new(
                admin_addr,
                args.admin_allowed_hosts.clone(),
                args.admin_allowed_origins.clone(),
            )),
    );
    let mut cert_watch = None;
    let admin_task = match &admin_tls {
        Some(cert) => {
            cert_watch = Some(cert.spawn_watch(Duration::from_secs(1)));
            let listener =
                gantry_cp::admin::tls::TlsListener::new(admin_listener, cert.server_config())?;
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped(stop_rx))
                    .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(admin_listener, app)
                .with_graceful_shutdown(stopped(stop_rx))
                .into_future(),
        ),
    };

    shutdown().await;
    tracing::info!("gantry-cp stopping");
    let _ = stop_tx.send(true);
    let (xds_res, admin_res) = tokio::join!(xds_task, admin_task);
    builder.abort();
    mirror.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Some(w) = cert_watch {
        w.abort();
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
