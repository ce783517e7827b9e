//! `gantry-bench`: the control plane's benchmarks, and the data-plane
//! harness's fixed-rate latency probe (`rate`). Each subcommand prints
//! a markdown table with the target beside each number; it fails (non-zero
//! exit) only when the tool itself cannot do its job: a stream that never
//! ACKs, an admin write that fails, a node the control plane does not show
//! as SYNCED. Missing a target is reported, not an error.

mod admin;
mod churn;
mod codec;
mod fleet;
mod hostile;
mod procstat;
mod rate;
mod report;
mod synth;
mod translate;
mod writes;
mod xds;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gantry-bench", about = "Gantry control-plane benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N simulated proxies on delta ADS: write → every stream ACKed,
    /// bytes per change, the control plane's RSS and CPU.
    XdsFleet(xds::FleetArgs),
    /// Bytes a one-route and a one-service change cost per stream, at
    /// several config sizes.
    XdsBytes(xds::BytesArgs),
    /// N streams reconnecting at once to a restarted gantry-cp.
    XdsStorm(xds::StormArgs),
    /// Route churn at a steady rate with streams attached: memory and
    /// commit → every ACK while it runs.
    XdsChurn(churn::ChurnArgs),
    /// Translation time of a large configuration (in-process).
    Translate(translate::TranslateArgs),
    /// Admin writes per second with concurrent clients.
    AdminWrites(writes::WritesArgs),
    /// Time and memory hostile admin requests cost a running gantry-cp.
    AdminHostile(hostile::HostileArgs),
    /// Latency of GETs at a fixed request rate (the data-plane harness's
    /// latency-added measurement).
    Rate(rate::RateArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The latency probe runs on one thread: no work stealing between
    // threads adds its own wake-ups to what is measured.
    let rt = match cli.command {
        Command::Rate(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::XdsFleet(a) => xds::fleet(a).await,
            Command::XdsBytes(a) => xds::bytes_per_change(a).await,
            Command::XdsStorm(a) => xds::storm(a).await,
            Command::XdsChurn(a) => churn::churn(a).await,
            Command::Translate(a) => translate::run(a).await,
            Command::AdminWrites(a) => writes::run(a).await,
            Command::AdminHostile(a) => hostile::run(a).await,
            Command::Rate(a) => rate::run(a).await,
        }
    })
}
