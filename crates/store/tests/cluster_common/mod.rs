//! Shared harness of the multi-process cluster tests: a real `mooncake master`
//! process (with its embedded HTTP metadata server), real `mooncake store-node`
//! processes, and the test process as a store client.
//!
//! Every child is killed when its handle drops; every wait is a bounded poll.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mooncake_store::client::{Client, ClientConfig};

/// The `mooncake` binary, built once per test binary with `cargo build -p mooncake-cli`.
pub fn mooncake_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .parent()
            .and_then(|p| p.parent())
            .expect("workspace root")
            .to_path_buf();
        // MOONCAKE_TEST_NO_BUILD=1 uses the binary as it is (for iterating while
        // another crate of the shared tree is mid-edit).
        if std::env::var_os("MOONCAKE_TEST_NO_BUILD").is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "mooncake-cli", "--quiet"])
                .current_dir(&root)
                .status()
                .expect("running cargo build -p mooncake-cli");
            assert!(status.success(), "cargo build -p mooncake-cli failed");
        }
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        let bin = target.join("debug").join("mooncake");
        assert!(
            bin.exists(),
            "{} missing after cargo build -p mooncake-cli",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Poll `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The first stdout line of `child` starting with `prefix` (30 s at most); the
/// rest of its stdout is drained in the background so it never blocks.
fn read_line_with(child: &mut Child, prefix: &'static str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.starts_with(prefix) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no {prefix:?} line within 30 s"))
}

/// Master settings a test may change (reference flag names).
#[derive(Clone, Debug)]
pub struct MasterOpts {
    pub client_ttl_s: u64,
    pub lease_ttl_ms: u64,
    pub soft_pin_ttl_ms: u64,
    pub high_watermark: f64,
    pub eviction_ratio: f64,
    pub allow_evict_soft_pinned: bool,
}

impl Default for MasterOpts {
    fn default() -> Self {
        MasterOpts {
            client_ttl_s: 2,
            lease_ttl_ms: 500,
            soft_pin_ttl_ms: 60_000,
            high_watermark: 0.9,
            eviction_ratio: 0.05,
            allow_evict_soft_pinned: true,
        }
    }
}

/// Master + storage nodes, all real processes.
pub struct Cluster {
    pub master: Proc,
    pub master_addr: String,
    pub http_port: u16,
    pub metrics_port: u16,
    pub metadata: String,
    pub nodes: Vec<Node>,
    pub opts: MasterOpts,
}

pub struct Node {
    pub proc: Proc,
    pub segment: String,
    pub size: u64,
}

impl Cluster {
    pub async fn start(nodes: usize, segment_size: u64, opts: MasterOpts) -> Cluster {
        // `mooncake up --segment-size 0` runs the master with its embedded HTTP
        // metadata server and no storage node; master options come from the
        // environment (`MOONCAKE_MASTER_<option>`), the ports it bound from its
        // READY line.
        let mut child = Command::new(mooncake_bin())
            .args([
                "up",
                "--rpc-port",
                "0",
                "--metadata-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .args(["--segment-size", "0", "--quiet"])
            .env("MOONCAKE_MASTER_CLIENT_TTL", opts.client_ttl_s.to_string())
            .env(
                "MOONCAKE_MASTER_DEFAULT_KV_LEASE_TTL",
                opts.lease_ttl_ms.to_string(),
            )
            .env(
                "MOONCAKE_MASTER_DEFAULT_KV_SOFT_PIN_TTL",
                opts.soft_pin_ttl_ms.to_string(),
            )
            .env(
                "MOONCAKE_MASTER_EVICTION_HIGH_WATERMARK_RATIO",
                opts.high_watermark.to_string(),
            )
            .env(
                "MOONCAKE_MASTER_EVICTION_RATIO",
                opts.eviction_ratio.to_string(),
            )
            .env(
                "MOONCAKE_MASTER_ALLOW_EVICT_SOFT_PINNED_OBJECTS",
                opts.allow_evict_soft_pinned.to_string(),
            )
            .env("MOONCAKE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning mooncake up");
        let line = read_line_with(&mut child, "READY ");
        let master = Proc {
            child,
            name: "master".into(),
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .to_string()
        };
        let master_addr = field("master=");
        let metadata = field("metadata=");
        let status = field("status=");
        let http_port: u16 = metadata
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/metadata")
            .parse()
            .expect("metadata port");
        let metrics_port: u16 = status
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches('/')
            .parse()
            .expect("status port");
        let mut c = Cluster {
            master,
            master_addr,
            http_port,
            metrics_port,
            metadata,
            nodes: Vec::new(),
            opts,
        };
        for _ in 0..nodes {
            c.add_node(segment_size).await;
        }
        c
    }

    /// Start one more `mooncake store-node` and wait for its READY line.
    pub async fn add_node(&mut self, segment_size: u64) -> usize {
        let mut child = Command::new(mooncake_bin())
            .arg("store-node")
            .args(["--master", &self.master_addr, "--metadata", &self.metadata])
            .args(["--segment-size", &segment_size.to_string()])
            .env("MOONCAKE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning mooncake store-node");
        let line = read_line_with(&mut child, "READY ");
        let proc = Proc {
            child,
            name: format!("node{}", self.nodes.len()),
        };
        let segment = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("segment="))
            .expect("segment= in READY line")
            .to_string();
        self.nodes.push(Node {
            proc,
            segment,
            size: segment_size,
        });
        self.nodes.len() - 1
    }

    /// A store client in the test process (no segment of its own).
    pub async fn client(&self) -> Client {
        self.client_with(0, 64 << 20).await
    }

    pub async fn client_with(&self, segment: u64, local_buffer: u64) -> Client {
        let cfg = ClientConfig {
            local_hostname: "127.0.0.1".into(),
            metadata_server: self.metadata.clone(),
            master_server_addr: self.master_addr.clone(),
            global_segment_size: segment,
            local_buffer_size: local_buffer,
            lease_ttl: Duration::from_millis(self.opts.lease_ttl_ms),
            ..ClientConfig::default()
        };
        Client::connect(cfg).await.expect("client connects")
    }

    /// JSON admin view of the master (`/api/<what>`).
    pub async fn admin(&self, what: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/{what}", self.metrics_port);
        reqwest::get(&url)
            .await
            .expect("admin GET")
            .json()
            .await
            .expect("admin JSON")
    }
}

/// A value that names itself: `key | version | len | payload | checksum`, so a
/// reader can tell whether it got exactly the object it asked for.
pub fn tagged_value(key: &str, version: u64, len: usize) -> Vec<u8> {
    assert!(len >= 64);
    let mut v = vec![0u8; len];
    let mut x = fnv(key.as_bytes()) ^ version.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in v[24..len - 8].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v[0..8].copy_from_slice(&fnv(key.as_bytes()).to_le_bytes());
    v[8..16].copy_from_slice(&version.to_le_bytes());
    v[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    let sum = fnv(&v[..len - 8]);
    v[len - 8..].copy_from_slice(&sum.to_le_bytes());
    v
}

/// Check a [`tagged_value`]: returns its version, or why it is not an intact
/// value of `key`.
pub fn check_tagged(key: &str, v: &[u8]) -> Result<u64, String> {
    if v.len() < 64 {
        return Err(format!("too short: {}", v.len()));
    }
    let n = v.len();
    let word = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().unwrap());
    if word(0) != fnv(key.as_bytes()) {
        return Err("bytes of a different key".into());
    }
    if word(16) != n as u64 {
        return Err(format!("length field {} but {} bytes", word(16), n));
    }
    if word(n - 8) != fnv(&v[..n - 8]) {
        return Err("checksum mismatch (torn or corrupt)".into());
    }
    Ok(word(8))
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
