//! The `mooncake` binary: one command, one subcommand per component.
//!
//! Each subcommand lives in its own module under `cmd/` and exposes
//! `Args` (its flags) and `async fn run(Args) -> anyhow::Result<()>`;
//! this file only wires them together and sets up logging.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mooncake",
    version,
    about = "Mooncake in Rust: a KVCache-centric platform for disaggregated LLM serving"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start an all-in-one local cluster on embedded defaults.
    Up(cmd::up::Args),
    /// Run the Mooncake Store master (flags as the reference's `mooncake_master`).
    Master(cmd::master::Args),
    /// Run the HTTP metadata server (reference-compatible `/metadata` endpoint).
    MetadataServer(cmd::metadata_server::Args),
    /// Serve a Transfer Engine segment (registered memory other processes read and write).
    Segment(cmd::segment::Args),
    /// Inspect traces: statistics, prefix-cache hit ratios, SVG plots.
    Trace(cmd::trace::Args),
    /// Simulate Conductor's scheduling policies over a trace (`sim sweep` for all).
    Sim(cmd::sim::Args),
    /// Store client for a terminal: put, get, rm, ls.
    Client(cmd::client::Args),
    /// Storage node: mount a segment into a store and heartbeat until killed.
    StoreNode(cmd::store_node::Args),
    /// Standalone store client serving local dummy clients (`setup_dummy`) on port 50052.
    RealClient(cmd::real_client::Args),
    /// Live router: Conductor's policies in front of OpenAI-compatible prefill/decode instances.
    Router(cmd::router::Args),
    /// Fake OpenAI-compatible LLM engine with cost-model latencies (tests, demos).
    FakeEngine(cmd::fake_engine::Args),
    /// Global KV prefix index from engines' KV events (Conductor indexer API).
    Indexer(cmd::indexer::Args),
    /// P2P store: share files peer to peer (serve, get, ls, rm).
    P2p(cmd::p2p::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// What this build and machine offer (version, CUDA devices).
    Info(cmd::info::Args),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Transfer Engine throughput and latency.
    Transfer(cmd::bench_transfer::Args),
    /// Conductor KV block cache: full-trace pass time per eviction policy.
    Cache(cmd::bench_cache::Args),
    /// Store put/get/is_exist throughput and latency.
    Store(cmd::bench_store::Args),
    /// Dummy-client mode (`setup_dummy`): get_into through a real client vs direct.
    Dummy(cmd::bench_dummy::Args),
    /// Live router: overhead vs direct engine calls, routing decisions per second.
    Router(cmd::bench_router::Args),
    /// Master failover: time to recover, p99 during it, objects lost, HA on vs off.
    Failover(cmd::bench_failover::Args),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOONCAKE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(a) => cmd::up::run(a).await,
        Command::Master(a) => cmd::master::run(a).await,
        Command::MetadataServer(a) => cmd::metadata_server::run(a).await,
        Command::Segment(a) => cmd::segment::run(a).await,
        Command::Trace(a) => cmd::trace::run(a).await,
        Command::Sim(a) => cmd::sim::run(a).await,
        Command::Bench(BenchCommand::Transfer(a)) => cmd::bench_transfer::run(a).await,
        Command::Bench(BenchCommand::Cache(a)) => cmd::bench_cache::run(a).await,
        Command::Bench(BenchCommand::Store(a)) => cmd::bench_store::run(a).await,
        Command::Bench(BenchCommand::Dummy(a)) => cmd::bench_dummy::run(a).await,
        Command::Bench(BenchCommand::Router(a)) => cmd::bench_router::run(a).await,
        Command::Bench(BenchCommand::Failover(a)) => cmd::bench_failover::run(a).await,
        Command::Router(a) => cmd::router::run(a).await,
        Command::Info(a) => cmd::info::run(a).await,
        Command::FakeEngine(a) => cmd::fake_engine::run(a).await,
        Command::Indexer(a) => cmd::indexer::run(a).await,
        Command::Client(a) => cmd::client::run(a).await,
        Command::StoreNode(a) => cmd::store_node::run(a).await,
        Command::RealClient(a) => cmd::real_client::run(a).await,
        Command::P2p(a) => cmd::p2p::run(a).await,
    }
}
