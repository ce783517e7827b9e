//! `gantry-proxy`: the data plane. The runtime (xDS client, router,
//! proxying) lands with its own issue; until then the binary says so
//! instead of pretending to proxy.

fn main() -> anyhow::Result<()> {
    gantry_shared::telemetry::init();
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("gantry-proxy {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    anyhow::bail!("gantry-proxy: the data plane is not built yet; see docs/architecture.md")
}
