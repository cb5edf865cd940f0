//! `mooncake p2p` across hosts: a seeder and three readers, each in its own
//! network namespace (veth to a bridge, links shaped to 100 Mbit/s with tc),
//! metadata on our HTTP metadata server (soft leases only). Midway the
//! seeder's link is cut (no reset: its transfers hang until the transfer
//! timeout); the readers finish from each other with identical copies.
//!
//! Needs root and `ip`/`tc`; where namespaces cannot be created the test
//! prints a SKIP line and passes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mooncake");
const HOSTS: usize = 4;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    assert!(sh(args), "failed: {}", args.join(" "));
}

/// Namespaces, bridge and processes of one test; all removed on drop.
struct Net {
    tag: String,
    net: String,
    children: Vec<Child>,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("p2pt{}-{i}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("p2ptb{}", self.tag)
    }
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.net, 10 + i)
    }

    /// None (after a SKIP line) where namespaces cannot be made.
    fn create() -> Option<Net> {
        let pid = std::process::id();
        let tag = format!("{}", pid % 100_000);
        let probe = format!("p2ptp{tag}");
        if !sh(&["ip", "netns", "add", &probe]) {
            eprintln!("SKIP: cannot create network namespaces here (needs root and iproute2)");
            return None;
        }
        sh(&["ip", "netns", "del", &probe]);
        let net = Net {
            tag,
            net: format!("10.202.{}", pid % 250),
            children: Vec::new(),
        };
        let br = net.bridge();
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}.1/24", net.net),
            "dev",
            &br,
        ]);
        must(&["ip", "link", "set", &br, "up"]);
        for i in 0..HOSTS {
            let ns = net.ns(i);
            let (outer, inner) = (
                format!("p2ptv{}-{i}", net.tag),
                format!("p2pti{}-{i}", net.tag),
            );
            must(&["ip", "netns", "add", &ns]);
            must(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            must(&["ip", "link", "set", &inner, "netns", &ns]);
            must(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "link", "set", &outer, "master", &br, "up"]);
            let tbf = [
                "root", "tbf", "rate", "100mbit", "burst", "256kb", "latency", "50ms",
            ];
            let mut up = vec![
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0",
            ];
            up.extend(tbf);
            must(&up);
            let mut down = vec!["tc", "qdisc", "add", "dev", &outer];
            down.extend(tbf);
            must(&down);
        }
        Some(net)
    }

    fn spawn(
        &mut self,
        host: Option<usize>,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Receiver<String> {
        let mut cmd = match host {
            Some(i) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns(i), BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .env("MOONCAKE_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        self.children.push(child);
        rx
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..HOSTS {
            // Deleting the outer end removes the pair at once (a deleted
            // namespace's devices go away only when the kernel gets to it).
            sh(&["ip", "link", "del", &format!("p2ptv{}-{i}", self.tag)]);
            sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        sh(&["ip", "link", "del", &self.bridge()]);
    }
}

fn line(rx: &Receiver<String>, what: &str, log: &Path) -> serde_json::Value {
    let l = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "no line from {what} within 60 s; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    match serde_json::from_str(&l) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(l),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_other_hosts_finish_after_the_seeders_link_is_cut() {
    let Some(mut net) = Net::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Metadata server on the bridge address (reachable from every host).
    let host = format!("{}.1", net.net);
    let rx = net.spawn(
        None,
        &["metadata-server", "--host", &host, "--port", "0"],
        &[],
        &d.join("meta.log"),
    );
    let meta = loop {
        let l = line(&rx, "metadata-server", &d.join("meta.log"));
        if let Some(url) = l
            .as_str()
            .and_then(|s| s.strip_prefix("metadata connection string: "))
        {
            break url.to_string();
        }
    };

    // 8 MiB in 32 shards: about 0.7 s per copy at 100 Mbit/s.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let file = d.join("model.bin");
    std::fs::write(&file, &data).unwrap();
    let seed_ip = net.ip(0);
    let seed_rx = net.spawn(
        Some(0),
        &[
            "p2p",
            "serve",
            file.to_str().unwrap(),
            "--name",
            "m",
            "--shard-size",
            "256KiB",
            "--metadata",
            &meta,
            "--local-hostname",
            &seed_ip,
            "--ttl",
            "2s",
        ],
        &[],
        &d.join("seed.log"),
    );
    let ready = line(&seed_rx, "seeder", &d.join("seed.log"));
    let seed_seg = ready["segment"].as_str().unwrap().to_string();

    let mut readers = Vec::new();
    for i in 1..HOSTS {
        let out = d.join(format!("out{i}"));
        let ip = net.ip(i);
        let rx = net.spawn(
            Some(i),
            &[
                "p2p",
                "get",
                "m",
                "-o",
                out.to_str().unwrap(),
                "--quiet",
                "--keep-serving",
                "--metadata",
                &meta,
                "--local-hostname",
                &ip,
                "--ttl",
                "2s",
                "--stall-timeout",
                "30s",
            ],
            &[("MC_TRANSFER_TIMEOUT", "2")],
            &d.join(format!("r{i}.log")),
        );
        readers.push((i, rx));
    }

    // Cut the seeder off once every shard has a holder among the readers.
    let store = mooncake_metadata::connect(&meta).await.unwrap();
    let start = Instant::now();
    loop {
        let m = mooncake_p2p::meta::read_manifest(&store, "m")
            .await
            .unwrap()
            .unwrap();
        let holders = mooncake_p2p::meta::read_holders(&store, &m).await.unwrap();
        let union: BTreeSet<usize> = holders
            .iter()
            .filter(|(n, _)| *n != seed_seg)
            .flat_map(|(_, h)| h.have.iter())
            .collect();
        if union.len() == m.shards.len() {
            let complete = holders
                .iter()
                .filter(|(n, h)| *n != seed_seg && h.have.is_full())
                .count();
            assert!(complete < HOSTS - 1, "all readers done before the cut");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    must(&["ip", "-n", &net.ns(0), "link", "set", "eth0", "down"]);

    for (i, rx) in &readers {
        let rep = line(rx, "reader", &d.join(format!("r{i}.log")));
        assert_eq!(rep["bytes"], 8 << 20, "{rep}");
        let got = std::fs::read(d.join(format!("out{i}")).join("model.bin")).unwrap();
        assert!(got == data, "reader {i}: copy differs");
    }
}
