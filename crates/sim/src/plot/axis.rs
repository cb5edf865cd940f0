//! Axis scales, "nice" tick positions and compact tick labels.

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Linear.
    #[default]
    Linear,
    /// Base-10 logarithmic; non-positive values are dropped when drawing.
    Log10,
}

/// A resolved axis: data range, scale and pixel range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    pub px_lo: f64,
    pub px_hi: f64,
}

impl Axis {
    fn t(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
        }
    }

    /// Pixel coordinate of `v` (may lie outside the plot for out-of-range values).
    pub fn px(&self, v: f64) -> f64 {
        let (a, b) = (self.t(self.lo), self.t(self.hi));
        let f = if b > a {
            (self.t(v) - a) / (b - a)
        } else {
            0.5
        };
        self.px_lo + f * (self.px_hi - self.px_lo)
    }

    /// Whether `v` can be drawn on this axis.
    pub fn drawable(&self, v: f64) -> bool {
        v.is_finite() && (self.scale == Scale::Linear || v > 0.0)
    }

    /// Tick positions inside `[lo, hi]`.
    pub fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => linear_ticks(self.lo, self.hi, 6),
            Scale::Log10 => log_ticks(self.lo, self.hi),
        }
    }
}

/// Resolves a data range for an axis: pads degenerate ranges, and for log
/// scales keeps only positive values.
pub(crate) fn data_range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values {
        if !v.is_finite() || (scale == Scale::Log10 && v <= 0.0) {
            continue;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return match scale {
            Scale::Linear => (0.0, 1.0),
            Scale::Log10 => (1.0, 10.0),
        };
    }
    if lo == hi {
        return match scale {
            Scale::Linear if lo == 0.0 => (0.0, 1.0),
            Scale::Linear => (lo - lo.abs() * 0.5, hi + hi.abs() * 0.5),
            Scale::Log10 => (lo / 2.0, hi * 2.0),
        };
    }
    (lo, hi)
}

/// Rounds a step to the nearest of 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let n = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    n * mag
}

/// Extends `[lo, hi]` outward to multiples of a nice step (used so that axes
/// start and end on a tick).
pub(crate) fn nice_bounds(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return (lo, hi);
    }
    let step = nice_step((hi - lo) / 6.0);
    ((lo / step).floor() * step, (hi / step).ceil() * step)
}

/// About `target` evenly spaced ticks at nice values within `[lo, hi]`.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return vec![lo];
    }
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Multiply or divide by an exact power of ten so that 3 × 0.2 prints as
    // 0.6, not 0.6000000000000001.
    let e = step.log10().floor() as i32;
    let mant = (step / 10f64.powi(e)).round();
    (first..=last)
        .map(|i| {
            let m = i as f64 * mant;
            if e >= 0 {
                m * 10f64.powi(e)
            } else {
                m / 10f64.powi(-e)
            }
        })
        .collect()
}

/// Powers of ten within `[lo, hi]`, adding 2× and 5× when fewer than three
/// decades are spanned.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if lo.is_nan() || hi.is_nan() || lo <= 0.0 || hi < lo {
        return vec![];
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a < 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut out = Vec::new();
    for e in a..=b {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

/// A short label: `1.5k`, `3M`, `0.25`, `1e-5`.
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    let (scaled, suffix) = if a >= 1e12 {
        return format!("{v:.0e}");
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else if a < 1e-3 {
        return format!("{v:.0e}");
    } else {
        (v, "")
    };
    let mut s = format!("{scaled:.3}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(
            linear_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(linear_ticks(3.0, 97.0, 5), vec![20.0, 40.0, 60.0, 80.0]);
        assert_eq!(log_ticks(1.0, 1000.0), vec![1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(1.0, 100.0).len(), 7);
        assert_eq!(log_ticks(1e5, 1e9), vec![1e5, 1e6, 1e7, 1e8, 1e9]);
        assert_eq!(nice_bounds(3.0, 97.0), (0.0, 100.0));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(1500.0), "1500");
        assert_eq!(format_tick(15000.0), "15k");
        assert_eq!(format_tick(3e6), "3M");
        assert_eq!(format_tick(2.5e9), "2.5G");
    }

    #[test]
    fn degenerate_ranges_are_padded() {
        assert_eq!(data_range([].into_iter(), Scale::Linear), (0.0, 1.0));
        assert_eq!(data_range([5.0].into_iter(), Scale::Linear), (2.5, 7.5));
        assert_eq!(
            data_range([-1.0, 0.0, 10.0].into_iter(), Scale::Log10),
            (5.0, 20.0)
        );
    }
}
