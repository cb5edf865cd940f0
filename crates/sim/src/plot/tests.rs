use super::*;

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn line_chart_has_series_legend_and_ticks() {
    let svg = LineChart::new("Hit <ratio> & capacity")
        .x_label("capacity (tokens)")
        .y_label("hit ratio")
        .x_scale(Scale::Log10)
        .y_range(0.0, 0.5)
        .series("LRU", vec![(1e6, 0.1), (1e7, 0.3), (1e8, 0.36)])
        .series("LFU", vec![(1e6, 0.12), (1e7, 0.31), (1e8, 0.36)])
        .markers(true)
        .to_svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(count(&svg, "<polyline"), 2);
    assert_eq!(count(&svg, "<circle"), 6);
    assert!(svg.contains(">LRU</text>") && svg.contains(">LFU</text>"));
    assert!(svg.contains("Hit &lt;ratio&gt; &amp; capacity"));
    // log x ticks at 1M, 10M, 100M; y ticks at 0.1 steps
    for t in ["1M", "10M", "100M", "0.1", "0.5"] {
        assert!(svg.contains(&format!(">{t}</text>")), "missing tick {t}");
    }
}

#[test]
fn points_outside_log_domain_and_nan_are_skipped() {
    let svg = LineChart::new("t")
        .x_scale(Scale::Log10)
        .series(
            "s",
            vec![(0.0, 1.0), (f64::NAN, 2.0), (10.0, 3.0), (100.0, 4.0)],
        )
        .to_svg();
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
    let pts = line.split('"').nth(1).unwrap();
    assert_eq!(pts.split(' ').count(), 2);
}

#[test]
fn empty_charts_still_render() {
    for svg in [
        LineChart::new("empty").to_svg(),
        CdfChart::new("empty").series("none", &[]).to_svg(),
        Histogram::from_values("empty", &[], 10).to_svg(),
    ] {
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }
}

#[test]
fn histogram_counts_every_value_once() {
    let values: Vec<f64> = (0..100).map(|i| i as f64).collect();
    let h = Histogram::from_values("h", &values, 10);
    assert_eq!(h.bins().len(), 10);
    assert!(h.bins().iter().all(|b| b.2 == 10.0));
    let svg = h.to_svg();
    assert_eq!(count(&svg, r#"fill-opacity="0.8""#), 10);
}

#[test]
fn cdf_steps_reach_one_and_are_monotone() {
    let pts = cdf_points(&[3.0, 1.0, 2.0, 2.0], 100);
    assert_eq!(
        pts,
        vec![
            (1.0, 0.0),
            (1.0, 0.25),
            (2.0, 0.25),
            (2.0, 0.75),
            (3.0, 0.75),
            (3.0, 1.0)
        ]
    );
    let many: Vec<f64> = (0..100_000).map(|i| (i % 977) as f64).collect();
    let pts = cdf_points(&many, 200);
    assert!(pts.len() <= 2 * 200 + 2);
    assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(pts.last().unwrap().1, 1.0);
}

#[test]
fn rendering_is_deterministic_and_saves() {
    let c = CdfChart::new("TTFT")
        .x_label("s")
        .series("a", &[1.0, 2.0, 3.0]);
    assert_eq!(c.to_svg(), c.to_svg());
    let dir = std::env::temp_dir().join(format!("mooncake-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cdf.svg");
    c.save(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), c.to_svg());
    std::fs::remove_dir_all(&dir).unwrap();
}
