//! `mooncake sim` and `mooncake sim sweep` as real processes on a slice of
//! the published conversation trace (small enough for a debug build), and
//! their errors on bad input.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mooncake-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `n` requests of the conversation trace, as a file in `dir`.
fn trace_slice(dir: &Path, n: usize) -> PathBuf {
    let src = mooncake_sim::trace::published_trace("conversation_trace.jsonl")
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = BufReader::new(std::fs::File::open(src).unwrap()).lines();
    let path = dir.join("slice.jsonl");
    let mut out = std::fs::File::create(&path).unwrap();
    for line in lines.take(n) {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    path
}

fn mooncake(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args(args)
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run mooncake")
}

#[test]
fn sim_json_has_the_documented_fields_and_accounts_for_every_request() {
    let dir = scratch("sim-json");
    let trace = trace_slice(&dir, 400);
    let out = mooncake(
        &[
            "sim",
            "--policy",
            "mooncake",
            "--prefill",
            "4",
            "--decode",
            "2",
            "--admission",
            "predictive",
            "--json",
            "--trace",
        ],
        &[&trace],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in [
        "requests",
        "completed",
        "rejected",
        "effective",
        "goodput_rps",
        "ttft_mean_s",
        "ttft_p50_s",
        "ttft_p90_s",
        "ttft_p99_s",
        "tbt_p99_s",
        "cache_hit_ratio",
        "sim_wall_s",
        "decode_prefill_coupling",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["requests"], 400);
    let (completed, rejected) = (v["completed"].as_u64(), v["rejected"].as_u64());
    assert_eq!(completed.unwrap() + rejected.unwrap(), 400);
    assert!(v["effective"].as_u64() <= completed);
    assert_eq!(v["admission"], "predictive");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sweep_writes_table_and_plots() {
    let dir = scratch("sim-sweep");
    let trace = trace_slice(&dir, 300);
    let out_dir = dir.join("out");
    let out = mooncake(
        &[
            "sim",
            "sweep",
            "--speedups",
            "1,2",
            "--policies",
            "mooncake,dynamo,round-robin",
            "--prefill",
            "4",
            "--decode",
            "2",
            "--admission-prefill",
            "6",
            "--admission-decode",
            "1",
            "--trace",
        ],
        &[&trace, Path::new("--out"), &out_dir],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(
        json["rows"].as_array().unwrap().len(),
        12,
        "3 policies x 2 loads x (none, slo)"
    );
    assert_eq!(json["admission"].as_array().unwrap().len(), 3);
    for svg in [
        "goodput_vs_load.svg",
        "ttft_cdf.svg",
        "tbt_cdf.svg",
        "load_over_time.svg",
        "prefill_queue_over_time.svg",
    ] {
        let text = std::fs::read_to_string(out_dir.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{svg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_trace_and_unknown_policy_are_clear_errors() {
    let dir = scratch("sim-bad");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [1]}\n\
         {\"timestamp\": 5, \"input_length\": \"many\", \"output_length\": 2, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    let out = mooncake(&["sim", "--json", "--trace"], &[&bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("input_length"), "{err}");

    let out = mooncake(&["sim", "--policy", "clairvoyant", "--trace"], &[&bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clairvoyant"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synth_trace_feeds_the_simulator() {
    let dir = scratch("synth");
    let trace = dir.join("agent.jsonl");
    let out = mooncake(
        &[
            "trace",
            "synth",
            "--preset",
            "agent",
            "--requests",
            "300",
            "--burstiness",
            "2",
            "--out",
        ],
        &[&trace],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(text.lines().count(), 300);
    for mode in ["none", "baseline", "slo", "early", "predictive"] {
        let out = mooncake(
            &[
                "sim",
                "--prefill",
                "2",
                "--decode",
                "1",
                "--admission",
                mode,
                "--json",
                "--trace",
            ],
            &[&trace],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["requests"], 300);
        assert_eq!(v["admission"], mode);
        if mode == "none" {
            assert_eq!(v["rejected"], 0, "admission none rejects nothing");
        }
    }
    let out = mooncake(&["trace", "synth", "--preset", "haiku"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("haiku"));
    let out = mooncake(&["trace", "synth", "--rate=0"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_rps"));
    let _ = std::fs::remove_dir_all(&dir);
}
