//! `mooncake p2p` across hosts: a seeder and three readers, each in its own
//! network namespace (veth to a bridge, links shaped to 100 Mbit/s with tc),
//! metadata on our HTTP metadata server (soft leases only). Midway the
//! seeder's link is cut (no reset: its transfers hang until the transfer
//! timeout); the readers finish from each other with identical copies.
//!
//! Needs root and `ip`/`tc`; where namespaces cannot be created the test
//! prints a SKIP line and passes.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use mooncake_testkit::netns::Lan;
use mooncake_testkit::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_mooncake");
const HOSTS: usize = 4;
const LIMIT: Duration = Duration::from_secs(60);

/// `mooncake ARGS` in host `host`'s namespace (or this one), killed on drop.
fn spawn(lan: &Lan, host: Option<usize>, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = match host {
        Some(i) => lan.command(i, BIN),
        None => Command::new(BIN),
    };
    cmd.args(args)
        .envs(env.iter().copied())
        .env("MOONCAKE_LOG", "warn")
        .env_remove("RUST_BACKTRACE");
    Proc::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_other_hosts_finish_after_the_seeders_link_is_cut() {
    let Some(net) = Lan::create(HOSTS, Some("100mbit")) else {
        eprintln!("SKIP: cannot create network namespaces here (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Metadata server on the bridge address (reachable from every host).
    let host = net.gateway();
    let mut meta_server = spawn(
        &net,
        None,
        &["metadata-server", "--host", &host, "--port", "0"],
        &[],
    );
    let meta = meta_server.ready(LIMIT).str("metadata").to_string();

    // 8 MiB in 32 shards: about 0.7 s per copy at 100 Mbit/s.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let file = d.join("model.bin");
    std::fs::write(&file, &data).unwrap();
    let seed_ip = net.ip(0);
    let mut seed = spawn(
        &net,
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
    );
    let seed_seg = seed.ready(LIMIT).str("segment").to_string();

    let mut readers = Vec::new();
    for i in 1..HOSTS {
        let out = d.join(format!("out{i}"));
        let ip = net.ip(i);
        let reader = spawn(
            &net,
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
        );
        readers.push((i, reader));
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
    net.link(0, false);

    for (i, reader) in &mut readers {
        let rep = reader.json_line(LIMIT);
        assert_eq!(rep["bytes"], 8 << 20, "{rep}");
        let got = std::fs::read(d.join(format!("out{i}")).join("model.bin")).unwrap();
        assert!(got == data, "reader {i}: copy differs");
    }
}
