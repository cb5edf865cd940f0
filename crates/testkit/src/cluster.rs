//! A local store cluster of real processes: `mooncake up --segment-size 0`
//! (the master with its embedded HTTP metadata server, no storage) and any
//! number of `mooncake store-node` processes, every port read back from the
//! READY lines (nothing is guessed). Store clients are the caller's business
//! (this crate links no workspace crate): connect one to
//! [`Cluster::master_addr`] and [`Cluster::metadata`].

use std::time::Duration;

use crate::proc::{Proc, READY_LIMIT};

/// Master settings a test may change (passed as the reference's option names
/// through `MOONCAKE_MASTER_<OPTION>`).
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

impl MasterOpts {
    /// The `MOONCAKE_MASTER_*` environment that applies these options.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MOONCAKE_MASTER_CLIENT_TTL", self.client_ttl_s.to_string()),
            (
                "MOONCAKE_MASTER_DEFAULT_KV_LEASE_TTL",
                self.lease_ttl_ms.to_string(),
            ),
            (
                "MOONCAKE_MASTER_DEFAULT_KV_SOFT_PIN_TTL",
                self.soft_pin_ttl_ms.to_string(),
            ),
            (
                "MOONCAKE_MASTER_EVICTION_HIGH_WATERMARK_RATIO",
                self.high_watermark.to_string(),
            ),
            (
                "MOONCAKE_MASTER_EVICTION_RATIO",
                self.eviction_ratio.to_string(),
            ),
            (
                "MOONCAKE_MASTER_ALLOW_EVICT_SOFT_PINNED_OBJECTS",
                self.allow_evict_soft_pinned.to_string(),
            ),
        ]
    }
}

/// A storage node of a [`Cluster`].
pub struct Node {
    pub proc: Proc,
    /// Its segment name (from its READY line).
    pub segment: String,
    pub size: u64,
}

/// Master (+ metadata) and storage nodes, all real processes, killed on drop.
pub struct Cluster {
    pub master: Proc,
    /// Master RPC address (`host:port`).
    pub master_addr: String,
    /// Metadata connection string (`http://host:port/metadata`).
    pub metadata: String,
    /// Port of the master's HTTP metadata server.
    pub http_port: u16,
    /// Port of the master's metrics / admin / status server.
    pub metrics_port: u16,
    pub nodes: Vec<Node>,
    pub opts: MasterOpts,
}

impl Cluster {
    /// Start the master and `nodes` storage nodes of `segment_size` bytes each.
    pub fn start(nodes: usize, segment_size: u64, opts: MasterOpts) -> Cluster {
        Self::start_with(Proc::mooncake_command(&[]), nodes, segment_size, opts)
    }

    /// [`Cluster::start`] with the `mooncake` command given (another binary,
    /// extra environment).
    pub fn start_with(
        mut cmd: std::process::Command,
        nodes: usize,
        segment_size: u64,
        opts: MasterOpts,
    ) -> Cluster {
        cmd.args(["up", "--rpc-port", "0", "--metadata-port", "0"])
            .args(["--metrics-port", "0", "--segment-size", "0", "--quiet"])
            // The suites that use this cluster test the store, not the credential
            // (crates/store/tests/cluster_security.rs and the cli security tests
            // do): their in-process clients connect without one.
            .arg("--insecure")
            .envs(opts.env());
        let mut master = Proc::spawn(cmd);
        let ready = master.ready(READY_LIMIT);
        let mut c = Cluster {
            master_addr: ready.str("master").to_string(),
            metadata: ready.str("metadata").to_string(),
            http_port: ready.port("metadata"),
            metrics_port: ready.port("status"),
            master,
            nodes: Vec::new(),
            opts,
        };
        for _ in 0..nodes {
            c.add_node(segment_size);
        }
        c
    }

    /// Start one more `mooncake store-node` and wait for its READY line;
    /// returns its index in [`Cluster::nodes`].
    pub fn add_node(&mut self, segment_size: u64) -> usize {
        let (proc, segment) = store_node(&self.master_addr, &self.metadata, segment_size);
        self.nodes.push(Node {
            proc,
            segment,
            size: segment_size,
        });
        self.nodes.len() - 1
    }

    /// The master's JSON admin view `/api/<what>`.
    pub fn admin(&self, what: &str) -> serde_json::Value {
        let addr = format!("127.0.0.1:{}", self.metrics_port);
        let (status, body) = crate::http::get(&addr, &format!("/api/{what}"))
            .unwrap_or_else(|e| panic!("GET /api/{what}: {e}"));
        assert_eq!(status, 200, "GET /api/{what}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/{what}: {e}: {body}"))
    }
}

/// Start `mooncake store-node` mounting `size` bytes into the store at
/// `master` / `metadata`; returns it and its segment name once READY.
pub fn store_node(master: &str, metadata: &str, size: u64) -> (Proc, String) {
    let size = size.to_string();
    let mut p = Proc::mooncake(&[
        "store-node",
        "--master",
        master,
        "--metadata",
        metadata,
        "--segment-size",
        &size,
        "--insecure",
    ]);
    let segment = p.ready(READY_LIMIT).str("segment").to_string();
    (p, segment)
}

/// Bound used by [`Cluster`] waits.
pub const CLUSTER_LIMIT: Duration = READY_LIMIT;
