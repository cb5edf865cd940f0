//! `mooncake bench transfer` end to end: every protocol runs briefly in one process
//! and prints one JSON object with the documented fields (no throughput asserted).

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args(["bench", "transfer", "--json", "--duration", "300ms"])
        .args(args)
        .output()
        .expect("run mooncake");
    assert!(
        out.status.success(),
        "mooncake bench transfer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn check(v: &serde_json::Value, protocol: &str, op: &str, block: u64, batch: u64, threads: u64) {
    assert_eq!(v["protocol"], protocol);
    assert_eq!(v["op"], op);
    assert_eq!(v["block_size"], block);
    assert_eq!(v["batch_size"], batch);
    assert_eq!(v["threads"], threads);
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["bytes"].as_u64().unwrap() % (block * batch),
        0,
        "whole batches only: {v}"
    );
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert!(v["throughput_gbps"].as_f64().unwrap() > 0.0);
    assert!(v["latency_p50_us"].as_u64().unwrap() <= v["latency_p99_us"].as_u64().unwrap());
    assert_eq!(v["failed_batches"], 0);
}

#[test]
fn tcp_write_and_read() {
    let v = bench(&[
        "--protocol",
        "tcp",
        "--op",
        "write",
        "--block-size",
        "64KiB",
        "--batch-size",
        "8",
        "--threads",
        "2",
    ]);
    check(&v, "tcp", "write", 65536, 8, 2);
    let v = bench(&[
        "--protocol",
        "tcp",
        "--op",
        "read",
        "--block-size",
        "100000",
        "--batch-size",
        "3",
    ]);
    check(&v, "tcp", "read", 100000, 3, 1);
}

#[test]
fn shm_and_memcpy() {
    let v = bench(&[
        "--protocol",
        "shm",
        "--block-size",
        "1MiB",
        "--batch-size",
        "4",
    ]);
    check(&v, "shm", "write", 1 << 20, 4, 1);
    let v = bench(&[
        "--protocol",
        "memcpy",
        "--block-size",
        "1MiB",
        "--batch-size",
        "4",
    ]);
    check(&v, "memcpy", "write", 1 << 20, 4, 1);
}

#[test]
fn file_read_and_write_on_disk() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("seg.dat");
    let f = file.to_str().unwrap();
    let v = bench(&[
        "--protocol",
        "file",
        "--op",
        "write",
        "--file",
        f,
        "--block-size",
        "256KiB",
        "--batch-size",
        "8",
    ]);
    check(&v, "file", "write", 256 << 10, 8, 1);
    assert!(v["direct_io"].is_boolean(), "{v}");
    let v = bench(&[
        "--protocol",
        "file",
        "--op",
        "read",
        "--file",
        f,
        "--block-size",
        "256KiB",
        "--batch-size",
        "8",
    ]);
    check(&v, "file", "read", 256 << 10, 8, 1);
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        vec!["--block-size", "12 parsecs"],
        vec!["--duration", "5 fortnights"],
        vec!["--batch-size", "0"],
        vec!["--mode", "initiator"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args(["bench", "transfer", "--json"])
            .args(&args)
            .output()
            .expect("run mooncake");
        assert!(!out.status.success(), "{args:?} was accepted");
    }
}

#[test]
fn cuda_location_needs_cuda_and_info_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args(["info", "--json"])
        .output()
        .expect("run mooncake info");
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(info["cuda"].is_boolean(), "{info}");
    if info["cuda"] == true {
        eprintln!("skipped: CUDA present here; scripts/gpu-check.sh covers --location cuda:0");
        return;
    }
    for args in [
        vec!["--location", "cuda:0"],
        vec!["--location", "gpu"],
        vec!["--location", "cuda:0", "--protocol", "memcpy"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args(["bench", "transfer", "--json", "--duration", "100ms"])
            .args(&args)
            .output()
            .expect("run mooncake");
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cuda") || err.contains("location"),
            "{args:?}: {err}"
        );
    }
    // The host location is the default and reported.
    let v = bench(&[
        "--location",
        "cpu",
        "--block-size",
        "64KiB",
        "--batch-size",
        "4",
    ]);
    assert_eq!(v["location"], "cpu");
}
