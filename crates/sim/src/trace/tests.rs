use super::stats::{compute_stats, StatsConfig};
use super::*;
use crate::cache::PolicyKind;
use std::io::Cursor;

fn read(text: &str) -> Vec<Result<TraceRecord, TraceError>> {
    TraceReader::new(Cursor::new(text.as_bytes().to_vec())).collect()
}

fn line(ts: u64, inp: u32, out: u32, ids: &[u64]) -> String {
    format!(
        r#"{{"timestamp": {ts}, "input_length": {inp}, "output_length": {out}, "hash_ids": {ids:?}}}"#
    )
}

#[test]
fn parses_records_and_skips_blank_lines() {
    let text = format!(
        "{}\n\n   \n{}\r\n{}",
        line(0, 600, 10, &[1, 2]),
        line(5, 100, 20, &[1]),
        r#"{"timestamp": 7, "input_length": 1, "output_length": 2, "hash_ids": [], "extra": "ignored"}"#
    );
    let recs: Vec<TraceRecord> = read(&text).into_iter().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[0],
        TraceRecord {
            timestamp: 0,
            input_length: 600,
            output_length: 10,
            hash_ids: vec![1, 2]
        }
    );
    assert_eq!(recs[1].timestamp, 5);
    assert!(recs[2].hash_ids.is_empty());
    assert_eq!(recs[0].prefix_tokens(2), 600);
    assert_eq!(recs[0].prefix_tokens(1), 512);
}

fn first_error(text: &str) -> TraceError {
    read(text)
        .into_iter()
        .find_map(Result::err)
        .expect("an error")
}

#[test]
fn malformed_lines_name_line_and_field() {
    let good = line(0, 1, 1, &[1]);
    let cases: &[(&str, u64, Option<&str>, &str)] = &[
        ("{not json", 2, None, "invalid JSON"),
        ("[1, 2]", 2, None, "expected a JSON object, found an array"),
        (
            r#"{"input_length": 1, "output_length": 1, "hash_ids": []}"#,
            2,
            Some("timestamp"),
            "missing field `timestamp`",
        ),
        (
            r#"{"timestamp": -3, "input_length": 1, "output_length": 1, "hash_ids": []}"#,
            2,
            Some("timestamp"),
            "non-negative integer, found -3",
        ),
        (
            r#"{"timestamp": 1, "input_length": "12", "output_length": 1, "hash_ids": []}"#,
            2,
            Some("input_length"),
            "found a string",
        ),
        (
            r#"{"timestamp": 1, "input_length": 1, "output_length": 5000000000, "hash_ids": []}"#,
            2,
            Some("output_length"),
            "exceeds the maximum",
        ),
        (
            r#"{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": 4}"#,
            2,
            Some("hash_ids"),
            "expected an array",
        ),
        (
            r#"{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1, 2.5]}"#,
            2,
            Some("hash_ids[1]"),
            "found 2.5",
        ),
    ];
    for (bad, want_line, want_field, want_msg) in cases {
        // blank line in between must still count towards line numbers
        let text = format!("{good}\n{bad}\n{good}\n");
        let e = first_error(&text);
        assert_eq!(e.line(), Some(*want_line), "{bad}");
        assert_eq!(e.field(), *want_field, "{bad}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("line {want_line}: ")), "{msg}");
        assert!(msg.contains(want_msg), "{msg} should contain {want_msg}");
        // the reader continues after the bad line
        let all = read(&text);
        assert_eq!(all.len(), 3);
        assert!(all[0].is_ok() && all[2].is_ok());
    }
    let e = first_error(&format!("{good}\n\n\n{{}}\n"));
    assert_eq!(e.line(), Some(4));
}

#[test]
fn invalid_utf8_is_a_line_error() {
    let mut bytes = line(0, 1, 1, &[1]).into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    bytes.extend_from_slice(line(1, 1, 1, &[1]).as_bytes());
    let all: Vec<_> = TraceReader::new(Cursor::new(bytes)).collect();
    assert_eq!(all.len(), 3);
    let e = all[1].as_ref().unwrap_err();
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("UTF-8"));
}

#[test]
fn open_missing_file_is_a_clear_error() {
    let e = TraceReader::open("/nonexistent/trace.jsonl").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/trace.jsonl"), "{e}");
    assert_eq!(e.line(), None);
}

#[test]
fn stats_of_a_hand_made_trace() {
    // 4 requests over 3 s; blocks: A=[1,2,3], B=[1,2,4], C=[5], D=[1,2,3,6]
    let text = [
        line(0, 1500, 10, &[1, 2, 3]),
        line(1000, 1100, 20, &[1, 2, 4]),
        line(2000, 300, 30, &[5]),
        line(3000, 2000, 40, &[1, 2, 3, 6]),
    ]
    .join("\n");
    let cfg = StatsConfig {
        capacities_tokens: vec![512 * 3, 512 * 100],
        policies: vec![PolicyKind::Lru],
        arrival_bucket_ms: 2000,
    };
    let s = compute_stats(read(&text), &cfg).unwrap();
    assert_eq!(s.requests, 4);
    assert_eq!(s.duration_s, 3.0);
    assert!((s.arrival_rate_rps - 4.0 / 3.0).abs() < 1e-12);
    assert_eq!(s.out_of_order, 0);
    assert_eq!(s.arrivals, vec![(0, 2), (2000, 2)]);
    let i = s.input_length;
    assert_eq!(
        (i.min, i.p50, i.p90, i.p99, i.max),
        (300, 1100, 2000, 2000, 2000)
    );
    assert_eq!(i.mean, (1500.0 + 1100.0 + 300.0 + 2000.0) / 4.0);
    assert_eq!(s.output_length.p50, 20);
    assert_eq!(s.mean_blocks, 11.0 / 4.0);
    // unbounded: hits B:2, C:0, D:3 => 5 of 11 blocks
    let h = &s.hit;
    assert_eq!(h.total_blocks, 11);
    assert_eq!(h.unique_blocks, 6);
    assert!((h.ideal_hit_ratio - 5.0 / 11.0).abs() < 1e-12);
    // tokens: B hits 1024 of 1100, D hits 1536 of 2000; total 4900
    assert!((h.ideal_token_hit_ratio - (1024.0 + 1536.0) / 4900.0).abs() < 1e-12);
    // LRU with 3 blocks: A fills {1,2,3}; B hits 2 and evicts 3 -> {1,2,4};
    // C hits 0, evicts 4 (deepest of the oldest) -> {1,2,5}; D hits 2 (1,2),
    // then can insert only one more (3) before its own prefix is full.
    let small = h.at(PolicyKind::Lru, 512 * 3).unwrap();
    assert_eq!(small.capacity_blocks, 3);
    assert!((small.hit_ratio - 4.0 / 11.0).abs() < 1e-12, "{small:?}");
    let big = h.at(PolicyKind::Lru, 512 * 100).unwrap();
    assert!((big.hit_ratio - h.ideal_hit_ratio).abs() < 1e-12);
    assert!((big.fraction_of_ideal - 1.0).abs() < 1e-12);
}

#[test]
fn stats_of_empty_and_unordered_traces() {
    let s = compute_stats(read("\n\n"), &StatsConfig::default()).unwrap();
    assert_eq!(s.requests, 0);
    assert_eq!(s.arrival_rate_rps, 0.0);
    assert_eq!(s.input_length.p50, 0);
    assert_eq!(s.hit.ideal_hit_ratio, 0.0);
    let text = [line(5000, 1, 1, &[1]), line(1000, 1, 1, &[1])].join("\n");
    let s = compute_stats(read(&text), &StatsConfig::default()).unwrap();
    assert_eq!(s.out_of_order, 1);
    assert_eq!(s.duration_s, 4.0);
    let bad = format!("{}\nnope", line(0, 1, 1, &[]));
    let e = compute_stats(read(&bad), &StatsConfig::default()).unwrap_err();
    assert_eq!(e.line(), Some(2));
}

#[test]
fn token_counts_parse() {
    use hitrate::{parse_token_count, parse_token_counts};
    assert_eq!(parse_token_count("3M"), Ok(3_000_000));
    assert_eq!(parse_token_count("1.5m"), Ok(1_500_000));
    assert_eq!(parse_token_count("500k"), Ok(500_000));
    assert_eq!(parse_token_count("65536"), Ok(65_536));
    assert_eq!(parse_token_count("2G"), Ok(2_000_000_000));
    assert!(parse_token_count("lots").is_err());
    assert!(parse_token_count("-3M").is_err());
    assert_eq!(
        parse_token_counts("3M, 10M,50M"),
        Ok(vec![3_000_000, 10_000_000, 50_000_000])
    );
}

#[test]
fn missing_published_trace_names_the_path() {
    let e = published_trace("no-such-trace.jsonl").unwrap_err();
    assert!(e.to_string().contains("no-such-trace.jsonl"), "{e}");
    assert!(
        published_traces_dir().ends_with("shared/traces")
            || std::env::var_os("MOONCAKE_TRACES").is_some()
    );
}

mod props {
    use super::*;
    use crate::trace::hitrate::HitRatioSweep;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = TraceRecord> {
        (
            0u64..1_000_000,
            0u32..200_000,
            0u32..5_000,
            prop::collection::vec(0u64..40, 0..12),
        )
            .prop_map(
                |(timestamp, input_length, output_length, hash_ids)| TraceRecord {
                    timestamp,
                    input_length,
                    output_length,
                    hash_ids,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Serialised records read back unchanged, blank lines are skipped,
        /// and a garbage line is reported at its own line number.
        #[test]
        fn loader_round_trips_and_numbers_lines(
            recs in prop::collection::vec(record(), 0..20),
            blanks in prop::collection::vec(0usize..3, 20),
            bad_at in prop::option::of(0usize..20),
        ) {
            let mut text = String::new();
            let mut line = 0u64;
            let mut bad_line = None;
            for (i, r) in recs.iter().enumerate() {
                for _ in 0..blanks[i] {
                    text.push('\n');
                    line += 1;
                }
                if bad_at == Some(i) {
                    text.push_str("{\"timestamp\": true}\n");
                    line += 1;
                    bad_line = Some(line);
                }
                text.push_str(&serde_json::to_string(r).unwrap());
                text.push('\n');
                line += 1;
            }
            let out = read(&text);
            let good: Vec<TraceRecord> = out.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
            prop_assert_eq!(&good, &recs);
            let errs: Vec<u64> = out.iter().filter_map(|r| r.as_ref().err()).map(|e| e.line().unwrap()).collect();
            prop_assert_eq!(errs, bad_line.into_iter().collect::<Vec<_>>());
        }

        /// Bounded caches never beat the unbounded one, and a cache that
        /// holds every distinct block equals it exactly.
        #[test]
        fn bounded_hits_never_exceed_ideal(recs in prop::collection::vec(record(), 1..60), cap in 0u64..30) {
            let mut sweep = HitRatioSweep::new(&PolicyKind::ALL, &[cap * 512, 1_000 * 512]);
            for r in &recs {
                sweep.push(r);
            }
            let rep = sweep.report();
            let distinct: std::collections::HashSet<u64> =
                recs.iter().flat_map(|r| r.hash_ids.iter().copied()).collect();
            prop_assert_eq!(rep.unique_blocks, distinct.len() as u64);
            for p in &rep.points {
                prop_assert!(p.hit_ratio <= rep.ideal_hit_ratio + 1e-12, "{:?}", p);
                prop_assert!(p.token_hit_ratio <= rep.ideal_token_hit_ratio + 1e-12, "{:?}", p);
                if p.capacity_blocks >= distinct.len() {
                    prop_assert!((p.hit_ratio - rep.ideal_hit_ratio).abs() < 1e-12, "{:?}", p);
                }
            }
        }
    }
}
