//! `mooncake trace stats` as a real process on the published conversation
//! trace and on a malformed file.

use std::path::PathBuf;
use std::process::Command;

fn conversation_trace() -> PathBuf {
    mooncake_sim::trace::published_trace("conversation_trace.jsonl")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mooncake-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn stats_json_and_plots() {
    let dir = scratch("trace-plots");
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args([
            "trace",
            "stats",
            "--json",
            "--capacities",
            "3M,50M",
            "--plots",
        ])
        .arg(&dir)
        .arg(conversation_trace())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run mooncake trace stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["requests"], 12_031);
    assert_eq!(
        v["input_length"]["mean"].as_f64().unwrap().round(),
        12_035.0
    );
    let points = v["hit"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 6, "3 policies x 2 capacities");
    let ideal = v["hit"]["ideal_hit_ratio"].as_f64().unwrap();
    for p in points {
        let r = p["hit_ratio"].as_f64().unwrap();
        assert!(r > 0.0 && r <= ideal + 1e-12, "{p}");
    }
    for f in [
        "arrivals.svg",
        "input_length_hist.svg",
        "output_length_hist.svg",
        "length_cdf.svg",
        "hit_ratio_vs_capacity.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.starts_with("<svg"), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_trace_fails_with_line_and_field() {
    let dir = scratch("trace-bad");
    let path = dir.join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n\
         {\"timestamp\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args(["trace", "stats"])
            .args(extra)
            .arg(&path)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: missing field `input_length`"),
        "{err}"
    );
    // --skip-bad-lines keeps going and counts the bad line
    let out = run(&["--skip-bad-lines", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 1);
    assert_eq!(v["skipped_lines"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
