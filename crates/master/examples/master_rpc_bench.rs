//! Small-op latency and throughput of the master RPC: `exists` round trips over loopback.
//!
//! ```text
//! cargo run --release -p mooncake-master --example master_rpc_bench -- [--master HOST:PORT] [--clients 1,8] [--secs 3]
//! ```
//! Without `--master` it starts an in-process master on 127.0.0.1 (sharing the CPUs with the
//! clients). Each client is its own `MasterClient` (own TCP connection) doing one call at a
//! time; the `pipelined` row is 8 tasks sharing one connection.

use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use mooncake_store_protocol::MasterClient;
use mooncake_store_protocol::{ClientId, ReplicateConfig, SegmentDesc};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

async fn run(addr: &str, clients: usize, shared_conn: bool, secs: u64) -> (f64, Vec<u64>) {
    let first = MasterClient::connect(addr).await.unwrap();
    let mut tasks = Vec::new();
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    for t in 0..clients {
        let c = if shared_conn {
            first.clone()
        } else {
            MasterClient::connect(addr).await.unwrap()
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let key = format!("bench-key-{}", t % 4);
            while Instant::now() < stop {
                let t0 = Instant::now();
                c.exists(&key).await.unwrap();
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let el = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / el, all)
}

fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let secs: u64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let counts: Vec<usize> = arg("--clients")
        .unwrap_or_else(|| "1,8".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let (addr, _srv) = match arg("--master") {
        Some(a) => (a, None),
        None => {
            let srv = MasterServer::start(MasterConfig {
                rpc_address: "127.0.0.1".into(),
                rpc_port: 0,
                metrics_host: "127.0.0.1".into(),
                metrics_port: 0,
                // The bench's segment owner never heartbeats; keep it alive for the run.
                client_ttl: 3600,
                ..Default::default()
            })
            .await
            .unwrap();
            (srv.rpc_addr().to_string(), Some(srv))
        }
    };
    let c = MasterClient::connect(&addr).await.unwrap();
    let seg = SegmentDesc {
        name: "bench-seg".into(),
        base_addr: 1 << 40,
        size: 1 << 30,
        protocol: "tcp".into(),
        location: String::new(),
    };
    let _ = c.mount_segment(ClientId(42), &seg).await;
    for k in 0..4 {
        let key = format!("bench-key-{k}");
        if c.put_start(&key, 4096, &ReplicateConfig::default())
            .await
            .is_ok()
        {
            c.put_end(&key).await.unwrap();
        }
    }
    println!("| clients | connections | exists ops/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    for &n in &counts {
        let (ops, lat) = run(&addr, n, false, secs).await;
        println!(
            "| {n} | {n} | {ops:.0} | {:.1} | {:.1} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    let (ops, lat) = run(&addr, 8, true, secs).await;
    println!(
        "| 8 (pipelined) | 1 | {ops:.0} | {:.1} | {:.1} |",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
}
