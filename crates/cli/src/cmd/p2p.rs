//! `mooncake p2p`: share files peer to peer through the P2P store.
//!
//! - `serve FILE... --name NAME`: publish the files as one object (each keeps
//!   its base name inside it) and serve it until SIGTERM or Ctrl-C;
//! - `get NAME -o DIR [--keep-serving]`: fetch the object from every holder
//!   at once (a progress bar on stderr), write its files under DIR; with
//!   `--keep-serving`, stay a source until killed;
//! - `ls [PREFIX]`: objects and their live holders;
//! - `rm NAME`: withdraw an object (manifest and every holder record).
//!
//! `serve` and `get` print one JSON line on stdout when ready / done (tests
//! and scripts read it); logs go to stderr. The metadata service comes from
//! `--metadata` or `MC_METADATA_SERVER` (etcd://, redis://, http://).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mooncake_p2p::{P2pConfig, P2pStore, Region, TestHooks};
use mooncake_transfer::{ManagedBuffer, Protocol, TransferEngine, TransferEngineConfig};

use mooncake_config::{parse_duration, parse_size_usize};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Publish files as one object and serve it until killed.
    Serve(ServeArgs),
    /// Fetch an object from its holders into a directory.
    Get(GetArgs),
    /// List objects (and their live holders).
    Ls(LsArgs),
    /// Withdraw an object from the metadata service.
    Rm(RmArgs),
}

/// Flags every subcommand shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Metadata connection string (etcd://host:port, redis://.., http://..).
    #[arg(long, env = "MC_METADATA_SERVER")]
    pub metadata: String,
    /// `host` or `host:port` this node serves on (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1")]
    pub local_hostname: String,
    /// Transports, comma-separated (tcp,shm). Between hosts only tcp applies.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Holder records expire this long after a crash (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Duration,
    /// `--cluster-token` / `--insecure`.
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Files to publish, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Object name.
    #[arg(long)]
    pub name: String,
    /// Largest shard (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size_usize)]
    pub shard_size: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Object name.
    pub name: String,
    /// Directory the object's files are written to (created if missing).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Keep serving what was fetched until SIGTERM / Ctrl-C.
    #[arg(long)]
    pub keep_serving: bool,
    /// Fetch from the registering node only (the naive baseline).
    #[arg(long)]
    pub origin_only: bool,
    /// Concurrent shard transfers.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Concurrent shard transfers from one holder.
    #[arg(long, default_value_t = 2)]
    pub per_holder: usize,
    /// Give up after this long without any progress (naming missing shards).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Fetch and verify only; write no files (benchmarks).
    #[arg(long)]
    pub no_write: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Name prefix.
    #[arg(default_value = "")]
    pub prefix: String,
    /// One JSON line per object.
    #[arg(long)]
    pub json: bool,
    /// Metadata connection string.
    #[arg(long, env = "MC_METADATA_SERVER")]
    pub metadata: String,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

async fn start_node(common: &Common, config: P2pConfig) -> anyhow::Result<P2pStore> {
    common.auth.install()?;
    let mut engine_config = TransferEngineConfig {
        local_hostname: common.local_hostname.clone(),
        metadata_server: common.metadata.clone(),
        protocols: Protocol::parse_list(&common.protocol)?,
        ..Default::default()
    };
    engine_config.apply_env()?;
    engine_config.metadata_server = common.metadata.clone();
    common.auth.apply_to_engine(&mut engine_config);
    let engine = TransferEngine::start(engine_config)
        .await
        .context("starting the transfer engine")?;
    let node = P2pStore::start(
        engine,
        P2pConfig {
            ttl: common.ttl,
            hooks: TestHooks::from_env(),
            ..config
        },
    )
    .await
    .context("starting the P2P node")?;
    Ok(node)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn stop(node: &P2pStore) {
    node.shutdown().await;
    node.engine().shutdown().await;
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(a) => serve(a).await,
        Command::Get(a) => get(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Rm(a) => rm(a).await,
    }
}

fn base_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no UTF-8 file name", p.display()))
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for f in &a.files {
        if !names.insert(base_name(f)?) {
            bail!("two files are named {:?}", base_name(f)?);
        }
    }
    let node = start_node(&a.common, P2pConfig::default()).await?;
    let engine = Arc::clone(node.engine());
    let mut buffers = Vec::new();
    let mut parts = Vec::new();
    for f in &a.files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        if data.is_empty() {
            bail!("{} is empty", f.display());
        }
        let buf = engine.allocate_managed_buffer(data.len()).await?;
        buf.write_at(0, &data);
        parts.push((
            base_name(f)?,
            Region {
                addr: buf.addr() as u64,
                len: buf.len() as u64,
            },
        ));
        buffers.push(buf);
    }
    let manifest = match node
        .register_parts(&a.name, &parts, a.shard_size as u64)
        .await
    {
        Ok(m) => m,
        Err(e) => {
            stop(&node).await;
            return Err(e.into());
        }
    };
    super::ready::announce(
        "p2p-serve",
        serde_json::json!({
            "name": manifest.name,
            "segment": node.node(),
            "size": manifest.size,
            "shards": manifest.shards.len(),
        }),
    )?;
    wait_for_signal().await?;
    stop(&node).await;
    drop(buffers);
    Ok(())
}

/// A file name from the manifest, checked to stay inside the output directory.
fn safe_part_name(name: &str, index: usize) -> anyhow::Result<String> {
    if name.is_empty() {
        return Ok(format!("part-{index}"));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("refusing part name {name:?} (not a plain file name)");
    }
    Ok(name.to_string())
}

async fn get(a: GetArgs) -> anyhow::Result<()> {
    let node = start_node(
        &a.common,
        P2pConfig {
            origin_only: a.origin_only,
            announce: !a.origin_only,
            parallel: a.parallel,
            per_holder: a.per_holder,
            stall_timeout: a.stall_timeout,
            ..Default::default()
        },
    )
    .await?;
    let copy = match get_into(&node, &a).await {
        Ok(buf) => buf,
        Err(e) => {
            stop(&node).await;
            return Err(e);
        }
    };
    if a.keep_serving {
        // The copy is served from `copy` until a signal comes.
        wait_for_signal().await?;
    }
    stop(&node).await;
    drop(copy);
    Ok(())
}

/// Fetch into one managed buffer, write the files; returns the buffer.
async fn get_into(node: &P2pStore, a: &GetArgs) -> anyhow::Result<ManagedBuffer> {
    let manifest = node.manifest(&a.name).await?;
    let names: Vec<String> = manifest
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| safe_part_name(&p.name, i))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let buf = node
        .engine()
        .allocate_managed_buffer(manifest.size as usize)
        .await?;
    let region = Region {
        addr: buf.addr() as u64,
        len: buf.len() as u64,
    };
    let (tx, mut rx) = tokio::sync::watch::channel(mooncake_p2p::Progress::default());
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(manifest.size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    };
    let bar2 = bar.clone();
    let ticker = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = *rx.borrow();
            bar2.set_position(p.done_bytes);
            bar2.set_message(format!(
                "from {} source(s), {} live",
                p.sources, p.live_holders
            ));
        }
    });
    let report = node.get_replica_with(&a.name, &[region], Some(&tx)).await;
    drop(tx);
    let _ = ticker.await;
    bar.finish_and_clear();
    let report = report?;
    let mut offset = 0usize;
    let write = if a.no_write {
        &[][..]
    } else {
        &manifest.parts[..]
    };
    for (part, name) in write.iter().zip(&names) {
        let mut data = vec![0u8; part.len as usize];
        buf.read_at(offset, &mut data);
        offset += data.len();
        let path = a.output.join(name);
        std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = serde_json::to_value(&report)?;
    out["segment"] = node.node().into();
    out["output"] = a.output.display().to_string().into();
    println!("{out}");
    tracing::info!(
        name = a.name,
        bytes = report.bytes,
        secs = report.secs,
        sources = report.sources.len(),
        "fetched"
    );
    if !a.keep_serving {
        node.delete_replica(&a.name).await?;
    }
    Ok(buf)
}

async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let store = mooncake_metadata::connect(&a.metadata).await?;
    let objects = mooncake_p2p::list_objects(&store, &a.prefix).await?;
    if a.json {
        for o in &objects {
            println!("{}", serde_json::to_string(o)?);
        }
        return Ok(());
    }
    println!(
        "{:<40} {:>14} {:>7} {:>8} {:>9}",
        "NAME", "BYTES", "SHARDS", "HOLDERS", "COMPLETE"
    );
    for o in &objects {
        println!(
            "{:<40} {:>14} {:>7} {:>8} {:>9}",
            o.name, o.size, o.shards, o.holders, o.complete_holders
        );
    }
    Ok(())
}

async fn rm(a: RmArgs) -> anyhow::Result<()> {
    let node = start_node(&a.common, P2pConfig::default()).await?;
    let r = node.unregister(&a.name).await;
    stop(&node).await;
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_stay_inside_the_directory() {
        assert_eq!(safe_part_name("a.bin", 0).unwrap(), "a.bin");
        assert_eq!(safe_part_name("", 3).unwrap(), "part-3");
        assert!(safe_part_name("../x", 0).is_err());
        assert!(safe_part_name("..", 0).is_err());
    }
}
