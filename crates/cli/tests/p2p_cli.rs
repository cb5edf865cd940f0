//! `mooncake p2p` as real processes on loopback with a real etcd: one seeder
//! and eight readers started together, the seeder killed with SIGKILL midway;
//! missing shards named when no live holder has them; a holder serving
//! corrupt shards (test hook) detected and avoided; bad input.
//!
//! Readers slow themselves down with the `MOONCAKE_P2P_TEST_SHARD_DELAY_MS`
//! hook so that "midway" exists on a fast loopback; the test watches the
//! holder records in etcd to pick the moment to kill.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mooncake_metadata::SharedMetadata;
use mooncake_testkit::{free_port, pattern, EtcdServer, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_mooncake");

/// `mooncake ARGS` with extra environment (killed on drop; stderr captured).
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(env.iter().copied())
        .env("MOONCAKE_LOG", "warn")
        .env_remove("RUST_BACKTRACE");
    Proc::spawn(cmd)
}

/// Two files making an object of 32 shards of 256 KiB.
fn make_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let a = pattern(6 << 20, 1);
    let b = pattern(2 << 20, 2);
    let pa = dir.join("weights.bin");
    let pb = dir.join("extra.bin");
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    vec![(pa, a), (pb, b)]
}

fn seeder(meta: &str, files: &[(PathBuf, Vec<u8>)]) -> (Proc, String) {
    let mut args = vec!["p2p", "serve", "--name", "ckpt", "--shard-size", "256KiB"];
    args.extend(["--metadata", meta, "--ttl", "2s"]);
    for (p, _) in files {
        args.push(p.to_str().unwrap());
    }
    let mut p = spawn(&args, &[]);
    let ready = p.ready(Duration::from_secs(60));
    assert_eq!(ready.u64("shards"), 32, "{ready:?}");
    let seg = ready.str("segment").to_string();
    (p, seg)
}

fn reader(meta: &str, dir: &Path, i: usize, env: &[(&str, &str)], extra: &[&str]) -> Proc {
    let out = dir.join(format!("out{i}"));
    let mut args = vec!["p2p", "get", "ckpt", "--quiet", "-o", out.to_str().unwrap()];
    args.extend(["--metadata", meta, "--ttl", "2s"]);
    args.extend(extra);
    spawn(&args, env)
}

fn check_copy(dir: &Path, i: usize, files: &[(PathBuf, Vec<u8>)]) {
    for (p, data) in files {
        let got = std::fs::read(dir.join(format!("out{i}")).join(p.file_name().unwrap())).unwrap();
        assert!(got == *data, "reader {i}: {} differs", p.display());
    }
}

/// Shards announced per reader (not the seeder), from the holder records.
async fn reader_shards(store: &SharedMetadata, seeder: &str) -> Vec<BTreeSet<usize>> {
    let Ok(Some(m)) = mooncake_p2p::meta::read_manifest(store, "ckpt").await else {
        return Vec::new();
    };
    let holders = mooncake_p2p::meta::read_holders(store, &m)
        .await
        .unwrap_or_default();
    holders
        .into_iter()
        .filter(|(node, _)| node != seeder)
        .map(|(_, h)| h.have.iter().collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_readers_finish_from_each_other_after_the_seeder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().expect("etcd");
    let meta = etcd.conn_string();
    let store = mooncake_metadata::connect(&meta).await.unwrap();
    let files = make_files(dir.path());
    let (mut seed, seed_seg) = seeder(&meta, &files);

    let slow = [("MOONCAKE_P2P_TEST_SHARD_DELAY_MS", "60")];
    let flags = [
        "--keep-serving",
        "--parallel",
        "2",
        "--stall-timeout",
        "20s",
    ];
    let mut readers: Vec<Proc> = (0..8)
        .map(|i| reader(&meta, dir.path(), i, &slow, &flags))
        .collect();

    // Kill -9 the seeder once half of all shard copies are out and every
    // shard has at least one holder besides it.
    let start = Instant::now();
    loop {
        let sets = reader_shards(&store, &seed_seg).await;
        let out: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<usize> = sets.iter().flatten().copied().collect();
        if union.len() == 32 && out >= 8 * 32 / 2 {
            assert!(out < 8 * 32, "readers finished before the kill");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "readers made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seed.kill9();

    let mut from_peers = 0u64;
    for (i, r) in readers.iter_mut().enumerate() {
        let rep = r.json_line(Duration::from_secs(60));
        assert_eq!(rep["bytes"], 8 << 20, "{rep}");
        let sources = rep["sources"].as_object().unwrap();
        from_peers += sources
            .iter()
            .filter(|(k, _)| **k != seed_seg)
            .map(|(_, v)| v.as_u64().unwrap())
            .sum::<u64>();
        check_copy(dir.path(), i, &files);
    }
    // Everything after the kill, and much before it, came from peers.
    assert!(from_peers >= 8 * (8 << 20) / 4, "from peers: {from_peers}");

    // The killed seeder's record disappears with its lease; `ls` shows the
    // eight complete readers.
    let start = Instant::now();
    loop {
        let l = mooncake_p2p::list_objects(&store, "ckpt").await.unwrap();
        if l[0].holders == 8 && l[0].complete_holders == 8 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ls = Command::new(BIN)
        .args(["p2p", "ls", "--json", "--metadata", &meta])
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(line["name"], "ckpt");
    assert_eq!(line["complete_holders"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_nobody_has_are_named_when_the_seeder_dies_early() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().expect("etcd");
    let meta = etcd.conn_string();
    let store = mooncake_metadata::connect(&meta).await.unwrap();
    let files = make_files(dir.path());
    let (mut seed, seed_seg) = seeder(&meta, &files);
    let slow = [("MOONCAKE_P2P_TEST_SHARD_DELAY_MS", "150")];
    let flags = ["--parallel", "1", "--stall-timeout", "3s"];
    let mut readers: Vec<Proc> = (0..2)
        .map(|i| reader(&meta, dir.path(), i, &slow, &flags))
        .collect();
    let start = Instant::now();
    while reader_shards(&store, &seed_seg)
        .await
        .iter()
        .all(BTreeSet::is_empty)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no shard fetched"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seed.kill9();
    for r in &mut readers {
        let (status, stderr) = (r.wait(Duration::from_secs(60)), r.stderr());
        assert!(!status.success(), "reader succeeded without a seeder");
        assert!(
            stderr.contains("no live holder has shard(s)") && stderr.contains("of 32"),
            "{stderr}"
        );
        // One line, no backtrace.
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_serving_corrupt_shards_is_detected_and_avoided() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().expect("etcd");
    let meta = etcd.conn_string();
    let files = make_files(dir.path());
    let (_seed, seed_seg) = seeder(&meta, &files);
    // This holder flips a byte of every shard after verifying it.
    let mut bad = reader(
        &meta,
        dir.path(),
        99,
        &[("MOONCAKE_P2P_TEST_CORRUPT", "1")],
        &["--keep-serving"],
    );
    let bad_seg = bad.json_line(Duration::from_secs(60))["segment"]
        .as_str()
        .unwrap()
        .to_string();
    let mut readers: Vec<Proc> = (0..3)
        .map(|i| reader(&meta, dir.path(), i, &[], &[]))
        .collect();
    for (i, r) in readers.iter_mut().enumerate() {
        let rep = r.json_line(Duration::from_secs(60));
        check_copy(dir.path(), i, &files);
        assert!(
            rep["sources"].get(&bad_seg).is_none(),
            "bytes credited to the corrupt holder: {rep}"
        );
        // Peers are tried first, so the bad holder was tried, caught, banned.
        assert_eq!(
            rep["corrupt_holders"],
            serde_json::json!([bad_seg]),
            "{rep}"
        );
        assert!(rep["sources"].get(&seed_seg).is_some(), "{rep}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().expect("etcd");
    let meta = etcd.conn_string();
    let files = make_files(dir.path());
    let (_seed, _) = seeder(&meta, &files);

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("MOONCAKE_LOG", "off")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };
    let out = dir.path().join("x");
    let out = out.to_str().unwrap();
    let e = run(&["p2p", "get", "nope", "-o", out, "--metadata", &meta]);
    assert!(e.contains("object \"nope\" not found"), "{e}");
    let f = files[0].0.to_str().unwrap();
    let e = run(&["p2p", "serve", f, "--name", "ckpt", "--metadata", &meta]);
    assert!(e.contains("already registered"), "{e}");
    let e = run(&["p2p", "rm", "nope", "--metadata", &meta]);
    assert!(e.contains("not found"), "{e}");
    // Metadata server down: a clear error, quickly.
    let dead = format!("etcd://127.0.0.1:{}", free_port().unwrap());
    let t = Instant::now();
    let e = run(&["p2p", "get", "ckpt", "-o", out, "--metadata", &dead]);
    assert!(
        e.to_lowercase().contains("unreachable") || e.contains("connect"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    let e = run(&["p2p", "ls", "--metadata", &dead]);
    assert!(!e.is_empty());
    // P2P handshake mode has no shared metadata.
    let e = run(&[
        "p2p",
        "get",
        "ckpt",
        "-o",
        out,
        "--metadata",
        "P2PHANDSHAKE",
    ]);
    assert!(e.contains("shared metadata"), "{e}");
}
