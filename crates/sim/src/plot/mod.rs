//! A tiny, dependency-free SVG plotting module: line charts with several
//! series and a legend, histograms and CDF plots, with linear or log axes,
//! nice ticks and compact labels (`3M`, `15k`).
//!
//! Charts are plain builders; `to_svg()` renders a self-contained SVG
//! document and `save(path)` writes it. Rendering is deterministic (same
//! input, same bytes), so plots can be diffed. Non-finite points (and
//! non-positive ones on log axes) are skipped rather than drawn wrongly.
//!
//! ```
//! use mooncake_sim::plot::{LineChart, Scale};
//! let svg = LineChart::new("Hit ratio vs capacity")
//!     .x_label("capacity (tokens)")
//!     .y_label("hit ratio")
//!     .x_scale(Scale::Log10)
//!     .y_range(0.0, 1.0)
//!     .series("LRU", vec![(1e6, 0.1), (1e7, 0.3), (1e8, 0.36)])
//!     .to_svg();
//! assert!(svg.starts_with("<svg"));
//! ```

mod axis;
mod svg;

pub use axis::{format_tick, linear_ticks, log_ticks, Scale};
pub use svg::escape;

use axis::{data_range, nice_bounds, Axis};
use std::path::Path;
use svg::{color, draw_frame, draw_legend, Frame, Svg};

/// Default chart size in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (760, 460);

/// A named sequence of `(x, y)` points, drawn in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// Labels, scales and size common to every chart.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    title: String,
    x_label: String,
    y_label: String,
    x_scale: Scale,
    y_scale: Scale,
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
    size: (u32, u32),
    legend_left: bool,
}

impl Layout {
    fn new(title: impl Into<String>) -> Self {
        Layout {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_range: None,
            y_range: None,
            size: DEFAULT_SIZE,
            legend_left: false,
        }
    }

    /// Resolves both axes from the data, honouring explicit ranges. Linear
    /// y axes are widened to nice bounds so they start and end on ticks.
    fn axes(&self, f: &Frame, xs: &[f64], ys: &[f64]) -> (Axis, Axis) {
        let (x_lo, x_hi) = self
            .x_range
            .unwrap_or_else(|| data_range(xs.iter().copied(), self.x_scale));
        let (y_lo, y_hi) = self.y_range.unwrap_or_else(|| {
            let (lo, hi) = data_range(ys.iter().copied(), self.y_scale);
            match self.y_scale {
                Scale::Linear => nice_bounds(lo.min(0.0), hi),
                Scale::Log10 => (lo, hi),
            }
        });
        let x = Axis {
            lo: x_lo,
            hi: x_hi,
            scale: self.x_scale,
            px_lo: f.left,
            px_hi: f.right,
        };
        let y = Axis {
            lo: y_lo,
            hi: y_hi,
            scale: self.y_scale,
            px_lo: f.bottom,
            px_hi: f.top,
        };
        (x, y)
    }
}

macro_rules! layout_builders {
    () => {
        /// Sets the x-axis label.
        pub fn x_label(mut self, s: impl Into<String>) -> Self {
            self.layout.x_label = s.into();
            self
        }
        /// Sets the y-axis label.
        pub fn y_label(mut self, s: impl Into<String>) -> Self {
            self.layout.y_label = s.into();
            self
        }
        /// Sets the x-axis scale.
        pub fn x_scale(mut self, s: Scale) -> Self {
            self.layout.x_scale = s;
            self
        }
        /// Sets the y-axis scale.
        pub fn y_scale(mut self, s: Scale) -> Self {
            self.layout.y_scale = s;
            self
        }
        /// Fixes the x range instead of fitting the data.
        pub fn x_range(mut self, lo: f64, hi: f64) -> Self {
            self.layout.x_range = Some((lo, hi));
            self
        }
        /// Fixes the y range instead of fitting the data.
        pub fn y_range(mut self, lo: f64, hi: f64) -> Self {
            self.layout.y_range = Some((lo, hi));
            self
        }
        /// Sets the size in pixels.
        pub fn size(mut self, width: u32, height: u32) -> Self {
            self.layout.size = (width, height);
            self
        }
        /// Puts the legend in the top-left corner instead of the top-right.
        pub fn legend_left(mut self, on: bool) -> Self {
            self.layout.legend_left = on;
            self
        }
        /// Writes the SVG to `path`.
        pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
            std::fs::write(path, self.to_svg())
        }
    };
}

/// Lines (optionally with point markers), one per series, with a legend.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    layout: Layout,
    series: Vec<Series>,
    markers: bool,
}

impl LineChart {
    /// An empty chart with a title.
    pub fn new(title: impl Into<String>) -> Self {
        LineChart {
            layout: Layout::new(title),
            series: Vec::new(),
            markers: false,
        }
    }

    layout_builders!();

    /// Adds a series.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series::new(name, points));
        self
    }

    /// Adds a series (non-builder form).
    pub fn push(&mut self, s: Series) {
        self.series.push(s);
    }

    /// Draws a dot at every point.
    pub fn markers(mut self, on: bool) -> Self {
        self.markers = on;
        self
    }

    /// The series added so far.
    pub fn series_list(&self) -> &[Series] {
        &self.series
    }

    /// Renders the chart.
    pub fn to_svg(&self) -> String {
        let l = &self.layout;
        let f = Frame::new(l.size.0, l.size.1);
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let xs: Vec<f64> = pts().map(|p| p.0).collect();
        let ys: Vec<f64> = pts().map(|p| p.1).collect();
        let (x, y) = l.axes(&f, &xs, &ys);
        let mut svg = Svg::new(&f);
        draw_frame(&mut svg, &f, &x, &y, &l.title, &l.x_label, &l.y_label);
        for (i, s) in self.series.iter().enumerate() {
            let px: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(a, b)| x.drawable(*a) && y.drawable(*b))
                .map(|&(a, b)| (x.px(a), y.px(b)))
                .collect();
            svg.polyline(&px, color(i), None);
            if self.markers || px.len() == 1 {
                for &(a, b) in &px {
                    svg.circle(a, b, 3.0, color(i));
                }
            }
        }
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        if names.len() > 1 || names.iter().any(|n| !n.is_empty()) {
            draw_legend(&mut svg, &f, &names, l.legend_left);
        }
        svg.finish()
    }
}

/// Empirical cumulative distribution functions, one step line per series.
#[derive(Debug, Clone, PartialEq)]
pub struct CdfChart {
    layout: Layout,
    series: Vec<Series>,
}

impl CdfChart {
    /// An empty CDF chart; the y axis is fixed to `[0, 1]`.
    pub fn new(title: impl Into<String>) -> Self {
        let mut layout = Layout::new(title);
        layout.y_label = "fraction ≤ x".into();
        layout.y_range = Some((0.0, 1.0));
        layout.legend_left = false;
        CdfChart {
            layout,
            series: Vec::new(),
        }
    }

    layout_builders!();

    /// Adds the CDF of `values` (non-finite values are ignored). Large inputs
    /// are thinned to at most ~2000 steps so files stay small.
    pub fn series(mut self, name: impl Into<String>, values: &[f64]) -> Self {
        self.series
            .push(Series::new(name, cdf_points(values, 2000)));
        self
    }

    /// Renders the chart.
    pub fn to_svg(&self) -> String {
        let mut chart = LineChart {
            layout: self.layout.clone(),
            series: self.series.clone(),
            markers: false,
        };
        if self.series.iter().all(|s| s.points.is_empty()) {
            chart.series.clear();
        }
        chart.to_svg()
    }
}

/// Step points of the empirical CDF of `values`, at most about `max_steps`.
pub fn cdf_points(values: &[f64], max_steps: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let stride = n.div_ceil(max_steps.max(1));
    let mut pts = Vec::with_capacity(2 * n / stride + 2);
    let mut prev = 0.0;
    let mut i = 0;
    while i < n {
        let j = (i + stride).min(n) - 1;
        // advance to the last copy of this value so steps sit at distinct x
        let mut k = j;
        while k + 1 < n && v[k + 1] == v[j] {
            k += 1;
        }
        let x = v[k];
        let frac = (k + 1) as f64 / n as f64;
        pts.push((x, prev));
        pts.push((x, frac));
        prev = frac;
        i = k + 1;
    }
    pts
}

/// A histogram: bars over `[lo, hi)` bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    layout: Layout,
    /// `(lo, hi, count)` per bin.
    bins: Vec<(f64, f64, f64)>,
}

impl Histogram {
    /// Bins `values` into `nbins` equal-width bins spanning their range
    /// (log-spaced bins when `x_scale` is later set to [`Scale::Log10`] are
    /// not implied; use [`Histogram::from_bins`] for custom edges).
    pub fn from_values(title: impl Into<String>, values: &[f64], nbins: usize) -> Self {
        let nbins = nbins.max(1);
        let (lo, hi) = data_range(values.iter().copied(), Scale::Linear);
        let width = (hi - lo) / nbins as f64;
        let mut counts = vec![0.0; nbins];
        for &v in values.iter().filter(|v| v.is_finite()) {
            let i = (((v - lo) / width) as usize).min(nbins - 1);
            counts[i] += 1.0;
        }
        let edges: Vec<f64> = (0..=nbins).map(|i| lo + width * i as f64).collect();
        Self::from_bins(title, &edges, &counts)
    }

    /// A histogram with explicit bin `edges` (`counts.len() + 1` of them,
    /// increasing) and counts. Extra edges or counts are ignored.
    pub fn from_bins(title: impl Into<String>, edges: &[f64], counts: &[f64]) -> Self {
        let bins = edges
            .windows(2)
            .zip(counts)
            .map(|(e, &c)| (e[0], e[1], c))
            .collect();
        let mut layout = Layout::new(title);
        layout.y_label = "count".into();
        Histogram { layout, bins }
    }

    layout_builders!();

    /// The bins, `(lo, hi, count)`.
    pub fn bins(&self) -> &[(f64, f64, f64)] {
        &self.bins
    }

    /// Renders the chart.
    pub fn to_svg(&self) -> String {
        let l = &self.layout;
        let f = Frame::new(l.size.0, l.size.1);
        let xs: Vec<f64> = self.bins.iter().flat_map(|b| [b.0, b.1]).collect();
        let mut ys: Vec<f64> = self.bins.iter().map(|b| b.2).collect();
        ys.push(0.0);
        let (x, y) = l.axes(&f, &xs, &ys);
        let mut svg = Svg::new(&f);
        draw_frame(&mut svg, &f, &x, &y, &l.title, &l.x_label, &l.y_label);
        let base = if y.scale == Scale::Log10 {
            f.bottom
        } else {
            y.px(0.0)
        };
        for &(lo, hi, c) in &self.bins {
            if !(x.drawable(lo) && x.drawable(hi) && y.drawable(c)) {
                continue;
            }
            let (x0, x1, top) = (x.px(lo), x.px(hi), y.px(c));
            svg.rect(
                x0 + 0.5,
                top,
                x1 - x0 - 1.0,
                base - top,
                color(0),
                r#"fill-opacity="0.8""#,
            );
        }
        svg.finish()
    }
}

#[cfg(test)]
mod tests;
