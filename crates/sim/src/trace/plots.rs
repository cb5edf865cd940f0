//! SVG plots of [`TraceStats`]: arrivals over time, input / output length
//! histograms and CDFs, and hit ratio vs cache capacity per policy.

use super::stats::{LengthCounts, TraceStats};
use crate::plot::{Histogram, LineChart, Scale};
use std::io;
use std::path::{Path, PathBuf};

/// Histogram of an exact length distribution with `nbins` equal-width bins.
pub fn length_histogram(title: &str, counts: &LengthCounts, nbins: usize) -> Histogram {
    let nbins = nbins.max(1);
    let (lo, hi) = match (counts.iter().next(), counts.iter().last()) {
        (Some((lo, _)), Some((hi, _))) => (lo as f64, hi as f64),
        _ => (0.0, 1.0),
    };
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let width = (hi - lo) / nbins as f64;
    let mut bins = vec![0.0; nbins];
    for (v, c) in counts.iter() {
        let i = (((v as f64 - lo) / width) as usize).min(nbins - 1);
        bins[i] += c as f64;
    }
    let edges: Vec<f64> = (0..=nbins).map(|i| lo + width * i as f64).collect();
    Histogram::from_bins(title, &edges, &bins)
        .x_label("tokens")
        .y_label("requests")
}

/// CDF points of an exact length distribution: a step wherever the
/// cumulative fraction has grown by at least 1/2000 since the last step (and
/// at the last value), so files stay small on long-tailed data.
fn length_cdf(counts: &LengthCounts) -> Vec<(f64, f64)> {
    let n = counts.count().max(1) as f64;
    let mut acc = 0u64;
    let mut drawn = 0.0;
    let mut pts = Vec::new();
    let last = counts.iter().last().map(|(v, _)| v);
    for (v, c) in counts.iter() {
        acc += c;
        let frac = acc as f64 / n;
        if frac - drawn >= 1.0 / 2000.0 || Some(v) == last {
            pts.push((v as f64, drawn));
            pts.push((v as f64, frac));
            drawn = frac;
        }
    }
    pts
}

/// Requests per second in each arrival bucket, over time in minutes.
pub fn arrivals_chart(stats: &TraceStats) -> LineChart {
    let w = stats.arrival_bucket_ms.max(1);
    let mut pts = Vec::new();
    let mut next: Option<u64> = None;
    for &(t, c) in &stats.arrivals {
        // draw empty buckets between non-empty ones as zeros (bounded: only
        // one zero run per gap)
        if let Some(n) = next {
            if t > n {
                pts.push((n as f64 / 60_000.0, 0.0));
                pts.push(((t - w) as f64 / 60_000.0, 0.0));
            }
        }
        pts.push((t as f64 / 60_000.0, c as f64 * 1000.0 / w as f64));
        next = Some(t + w);
    }
    LineChart::new(format!(
        "Arrivals over time ({} requests, {:.2} req/s mean)",
        stats.requests, stats.arrival_rate_rps
    ))
    .x_label("time since trace start (min)")
    .y_label(format!("requests/s ({} s buckets)", w as f64 / 1000.0))
    .series("", pts)
}

/// Writes every plot into `dir` (created if needed); returns the files.
pub fn write_plots(stats: &TraceStats, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut save = |name: &str, svg: String| -> io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, svg)?;
        out.push(p);
        Ok(())
    };
    save("arrivals.svg", arrivals_chart(stats).to_svg())?;
    save(
        "input_length_hist.svg",
        length_histogram(
            &format!(
                "Input length (mean {:.0}, p50 {}, p99 {})",
                stats.input_length.mean, stats.input_length.p50, stats.input_length.p99
            ),
            &stats.input_counts,
            60,
        )
        .to_svg(),
    )?;
    save(
        "output_length_hist.svg",
        length_histogram(
            &format!(
                "Output length (mean {:.0}, p50 {}, p99 {})",
                stats.output_length.mean, stats.output_length.p50, stats.output_length.p99
            ),
            &stats.output_counts,
            60,
        )
        .to_svg(),
    )?;
    let mut cdf = LineChart::new("Length CDFs")
        .x_label("tokens")
        .y_label("fraction of requests ≤ x")
        .x_scale(Scale::Log10)
        .y_range(0.0, 1.0)
        .legend_left(true);
    cdf = cdf
        .series("input", length_cdf(&stats.input_counts))
        .series("output", length_cdf(&stats.output_counts));
    save("length_cdf.svg", cdf.to_svg())?;
    if !stats.hit.points.is_empty() {
        save(
            "hit_ratio_vs_capacity.svg",
            stats
                .hit
                .chart("Prefix-cache hit ratio vs capacity (request order)")
                .to_svg(),
        )?;
    }
    Ok(out)
}
