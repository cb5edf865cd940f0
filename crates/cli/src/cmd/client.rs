//! `mooncake client put|get|rm|ls`: the store from a terminal.
//!
//! ```text
//! mooncake client put KEY FILE|-        store a file (or stdin)
//! mooncake client get KEY [-o FILE]     print (or save) a value
//! mooncake client rm KEY | --regex R | --all [--force]
//! mooncake client ls [--prefix P]       list keys (the master's admin view)
//! ```
//! Connection flags default to the local cluster of `mooncake up` and read the
//! reference's environment variables (`MASTER_SERVER`, `MC_METADATA_SERVER`).

use std::io::{Read, Write};

use anyhow::{bail, Context};
use mooncake_store::client::{Client, ClientConfig, ClientError};
use mooncake_store::ReplicateConfig;

/// How to reach a cluster (shared by `client`, `store-node` and `bench store`): the top
/// layer of [`ClientConfig::load`], by field name. Unset flags fall back to the environment
/// (`MASTER_SERVER`, `MC_METADATA_SERVER`, `LOCAL_HOSTNAME`, `PROTOCOL`,
/// `MOONCAKE_CLIENT_<FIELD>`), then to `ClientConfig`'s defaults (the cluster of `mooncake up`).
#[derive(clap::Args, Debug, Clone, Default, serde::Serialize)]
pub struct ConnArgs {
    /// Master RPC address.
    #[arg(long = "master", value_name = "ADDR")]
    pub master_server_addr: Option<String>,
    /// Metadata connection string.
    #[arg(long = "metadata", value_name = "URL")]
    pub metadata_server: Option<String>,
    /// This process's Transfer Engine address (`host` or `host:port`).
    #[arg(long)]
    pub local_hostname: Option<String>,
    /// Transport between hosts.
    #[arg(long)]
    pub protocol: Option<String>,
    /// `--cluster-token` / `--insecure`.
    #[command(flatten)]
    #[serde(skip)]
    pub auth: super::auth::AuthArgs,
}

impl ConnArgs {
    /// The store client's settings; installs the credential first
    /// ([`super::auth::AuthArgs::install`]).
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        self.auth.install()?;
        Ok(ClientConfig::load(&ClientConfig::default(), None, self)?)
    }
}

/// Flags of `mooncake client`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub op: Op,
}

#[derive(clap::Subcommand, Debug)]
pub enum Op {
    /// Store FILE (or stdin with `-`) under KEY.
    Put {
        key: String,
        file: String,
        /// Copies to keep.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Soft-pin the object (evicted last).
        #[arg(long)]
        soft_pin: bool,
        /// Replace an existing value instead of failing.
        #[arg(long)]
        upsert: bool,
    },
    /// Write the value of KEY to stdout or `-o FILE`.
    Get {
        key: String,
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Remove KEY, every key matching `--regex`, or `--all`.
    Rm {
        key: Option<String>,
        #[arg(long, conflicts_with_all = ["key", "all"])]
        regex: Option<String>,
        #[arg(long, conflicts_with = "key")]
        all: bool,
        /// Also remove leased objects.
        #[arg(long)]
        force: bool,
    },
    /// List keys (with sizes) from the master's admin view.
    Ls {
        #[arg(long, default_value = "")]
        prefix: String,
        /// The master's HTTP (metrics / admin) address.
        #[arg(
            long,
            env = "MOONCAKE_MASTER_HTTP",
            default_value = "http://127.0.0.1:9003"
        )]
        http: String,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Op::Ls { prefix, http } = &args.op {
        let base = if http.contains("://") {
            http.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", http.trim_end_matches('/'))
        };
        return ls(&base, prefix).await;
    }
    let mut cfg = args.conn.config()?;
    cfg.global_segment_size = 0;
    let master = cfg.master_server_addr.clone();
    let client = Client::connect(cfg)
        .await
        .with_context(|| format!("connecting to the store (master {master}, --master)"))?;
    let result = op(&client, args.op).await;
    client.close().await.ok();
    result
}

async fn op(client: &Client, op: Op) -> anyhow::Result<()> {
    match op {
        Op::Put {
            key,
            file,
            replicas,
            soft_pin,
            upsert,
        } => {
            let data = if file == "-" {
                let mut v = Vec::new();
                std::io::stdin().read_to_end(&mut v)?;
                v
            } else {
                std::fs::read(&file).with_context(|| format!("reading {file}"))?
            };
            let cfg = ReplicateConfig {
                replica_num: replicas,
                with_soft_pin: soft_pin,
                ..ReplicateConfig::default()
            };
            if upsert {
                client
                    .upsert(&key, &data, &cfg)
                    .await
                    .map_err(|e| named(e, &key))?;
            } else {
                client
                    .put(&key, &data, &cfg)
                    .await
                    .map_err(|e| named(e, &key))?;
            }
            eprintln!("stored {key} ({} bytes)", data.len());
        }
        Op::Get { key, output } => {
            let v = client.get(&key).await.map_err(|e| named(e, &key))?;
            match output {
                Some(path) if path != "-" => {
                    std::fs::write(&path, &v).with_context(|| format!("writing {path}"))?
                }
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&v)?;
                    out.flush()?;
                }
            }
        }
        Op::Rm {
            key,
            regex,
            all,
            force,
        } => {
            if let Some(k) = key {
                client.remove(&k, force).await.map_err(|e| named(e, &k))?;
                eprintln!("removed {k}");
            } else if let Some(r) = regex {
                let n = client.remove_by_regex(&r, force).await?;
                eprintln!("removed {n} objects");
            } else if all {
                let n = client.remove_all(force).await?;
                eprintln!("removed {n} objects");
            } else {
                bail!("rm needs KEY, --regex R or --all");
            }
        }
        Op::Ls { .. } => unreachable!("handled before connecting"),
    }
    Ok(())
}

/// A store error about `key`, as one line that names it (`key 'x' not found`).
fn named(e: ClientError, key: &str) -> anyhow::Error {
    if e.is_not_found() {
        anyhow::anyhow!("key '{key}' not found")
    } else {
        anyhow::Error::new(e).context(format!("key '{key}'"))
    }
}

async fn ls(base: &str, prefix: &str) -> anyhow::Result<()> {
    let url = format!("{base}/api/keys");
    let resp = reqwest::Client::new()
        .get(&url)
        .query(&[("prefix", prefix)])
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    let body: serde_json::Value = resp.json().await?;
    print_keys(&body);
    Ok(())
}

/// Print the admin view's keys, one per line, with sizes when given.
fn print_keys(body: &serde_json::Value) {
    let list = body
        .get("keys")
        .and_then(|k| k.as_array())
        .or_else(|| body.as_array());
    let Some(list) = list else {
        println!("{body}");
        return;
    };
    for item in list {
        match item {
            serde_json::Value::String(k) => println!("{k}"),
            obj => {
                let key = obj.get("key").and_then(|k| k.as_str()).unwrap_or("?");
                match obj.get("size").and_then(|s| s.as_u64()) {
                    Some(n) => println!("{key}\t{n}"),
                    None => println!("{key}"),
                }
            }
        }
    }
}
