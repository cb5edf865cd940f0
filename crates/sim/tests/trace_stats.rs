//! Statistics of the published conversation trace against the numbers the
//! paper's Table 2 gives for it, and loader errors on a malformed file.

use mooncake_conductor::cache::PolicyKind;
use mooncake_sim::trace::stats::{compute_stats, StatsConfig};
use mooncake_sim::trace::{plots::write_plots, published_trace, read_trace, TraceReader};
use std::path::PathBuf;

fn conversation_trace() -> PathBuf {
    published_trace("conversation_trace.jsonl").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn conversation_trace_matches_table2() {
    let cfg = StatsConfig {
        capacities_tokens: vec![3_000_000],
        policies: vec![PolicyKind::Lru],
        arrival_bucket_ms: 60_000,
    };
    let s = compute_stats(TraceReader::open(conversation_trace()).unwrap(), &cfg).unwrap();
    // Table 2: 12,031 requests, average input 12,035 tokens, output 343.
    assert_eq!(s.requests, 12_031);
    assert_eq!(s.input_length.mean.round(), 12_035.0);
    assert_eq!(s.output_length.mean.round(), 343.0);
    // "Conversation inputs reach 128k tokens."
    assert!(s.input_length.max > 100_000 && s.input_length.max <= 131_072);
    assert!(s.input_length.p50 < s.input_length.p90 && s.input_length.p90 < s.input_length.p99);
    assert_eq!(s.out_of_order, 0);
    // about an hour of arrivals
    assert!(
        s.duration_s > 3_000.0 && s.duration_s < 4_000.0,
        "{}",
        s.duration_s
    );
    assert!((s.arrival_rate_rps - s.requests as f64 / s.duration_s).abs() < 1e-9);
    assert_eq!(s.arrivals.iter().map(|a| a.1).sum::<u64>(), s.requests);
    // one hash per 512 tokens (rounded up)
    assert!((s.mean_blocks - s.input_length.mean / 512.0).abs() < 1.0);
    let h = &s.hit;
    assert_eq!(
        h.total_blocks as f64,
        (s.mean_blocks * s.requests as f64).round()
    );
    assert!(h.unique_blocks < h.total_blocks);
    let lru = h.at(PolicyKind::Lru, 3_000_000).unwrap();
    assert_eq!(lru.capacity_blocks, 3_000_000 / 512);
    assert!(lru.hit_ratio > 0.0 && lru.hit_ratio < h.ideal_hit_ratio);

    // plots land in the directory and are SVG
    let dir = std::env::temp_dir().join(format!("mooncake-trace-plots-{}", std::process::id()));
    let files = write_plots(&s, &dir).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{f:?}"
        );
        assert!(!text.contains("NaN"), "{f:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_file_reports_line_and_field() {
    let dir = std::env::temp_dir().join(format!("mooncake-trace-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}"#,
            "\n\n",
            r#"{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [1, "x"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let err = read_trace(&path).unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert_eq!(err.field(), Some("hash_ids[1]"));
    assert_eq!(
        err.to_string(),
        "line 3: field `hash_ids[1]`: expected a non-negative integer, found a string"
    );
    let err =
        compute_stats(TraceReader::open(&path).unwrap(), &StatsConfig::default()).unwrap_err();
    assert_eq!(err.line(), Some(3));
    std::fs::remove_dir_all(&dir).unwrap();
}
