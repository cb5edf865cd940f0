//! The `mooncake` binary: one command, one subcommand per component.
//!
//! Each subcommand lives in its own module under `cmd/` and exposes
//! `Args` (its flags) and `async fn run(Args) -> anyhow::Result<()>`;
//! this file only wires them together, sets up logging and prints errors.
//!
//! A failed command prints one line on stderr, `error: <what failed>: <why>` (the causes
//! joined on one line, no backtrace) and exits 1; a bad flag is clap's own message (exit 2).
//! Logs go to stderr: INFO by default, WARN for `mooncake client` (whose output is the
//! answer); `-v` raises it (INFO, then DEBUG, TRACE), `MOONCAKE_LOG` / `RUST_LOG` override.

mod cmd;
#[cfg(test)]
mod flag_units;
mod help_defaults;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mooncake",
    version,
    about = "Mooncake in Rust: a KVCache-centric platform for disaggregated LLM serving"
)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
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

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // The client's output is its answer; its logs are noise unless asked for.
    let quiet = matches!(cli.command, Command::Client(_));
    let level = match (cli.verbose, quiet) {
        (0, true) => "warn",
        (0, false) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("MOONCAKE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = help_defaults::add(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_tracing(&cli);
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, never a backtrace; a cause whose text its parent
/// already includes (`thiserror`'s `"{0}"` with `#[source]`) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
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

#[cfg(test)]
mod tests {
    #[test]
    fn errors_print_on_one_line_without_repeats() {
        // As a thiserror `"cannot bind rpc: {0}"` with `#[source]` prints.
        let e = anyhow::anyhow!("Address already in use")
            .context("cannot bind rpc: Address already in use")
            .context("starting the master");
        assert_eq!(
            super::one_line(&e),
            "starting the master: cannot bind rpc: Address already in use"
        );
    }
}
