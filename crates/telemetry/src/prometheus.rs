//! The Prometheus text exposition format, version 0.0.4.
//!
//! A page is a sequence of metric families; each starts with its `# HELP`
//! and `# TYPE` lines ([`TextWriter::family`]) and is followed by its
//! samples ([`TextWriter::sample`]). Invariants the writer keeps: label
//! values are escaped (`\\`, `"`, newline), so any string is a valid label
//! value; floats are spelled as Prometheus parses them (`+Inf`, `-Inf`,
//! `NaN`, integers without a fraction); a histogram's buckets are written
//! cumulatively with a final `le="+Inf"` bucket equal to its count.

use std::borrow::Cow;
use std::fmt::Write;

/// A metric family's type (the `# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (name ends in `_total` by convention).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: integers are written exactly, floats in Prometheus'
/// spelling.
pub trait Value {
    /// Appends the value's text to `out`.
    fn write_to(&self, out: &mut String);
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64, usize, i32, i64);

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Value for bool {
    fn write_to(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

/// Escapes a label value (`\\`, `"` and newline).
pub fn escape_label_value(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    Cow::Owned(s)
}

/// Builds one exposition page.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty page with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: String::with_capacity(bytes),
        }
    }

    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        // HELP text escapes backslash and newline only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) -> &mut Self {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// An unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Value) -> &mut Self {
        self.single(name, Kind::Gauge, help, value)
    }

    /// An unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: impl Value) -> &mut Self {
        self.single(name, Kind::Counter, help, value)
    }

    /// The samples of one histogram series (after its
    /// [`family`](Self::family) line): `name_bucket{labels,le=..}` for each
    /// bound with the number of observations `<=` it (`per_bucket` holds the
    /// count of each bucket alone; the writer accumulates), then
    /// `le="+Inf"` = `count`, `name_sum` and `name_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        per_bucket: impl IntoIterator<Item = u64>,
        sum: f64,
        count: u64,
    ) -> &mut Self {
        let mut cum = 0u64;
        let mut le = String::new();
        for (bound, n) in bounds.iter().zip(per_bucket) {
            cum += n;
            le.clear();
            bound.write_to(&mut le);
            self.bucket(name, labels, &le, cum);
        }
        self.bucket(name, labels, "+Inf", count);
        self.out.push_str(name);
        self.out.push_str("_sum");
        self.labels(labels, None);
        self.out.push(' ');
        sum.write_to(&mut self.out);
        self.out.push('\n');
        self.out.push_str(name);
        self.out.push_str("_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
        self
    }

    /// Appends already-rendered exposition text (another writer's page).
    pub fn append(&mut self, text: &str) -> &mut Self {
        self.out.push_str(text);
        self
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], le: &str, n: u64) {
        self.out.push_str(name);
        self.out.push_str("_bucket");
        self.labels(labels, Some(le));
        let _ = writeln!(self.out, " {n}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
        }
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_and_labelled_samples() {
        let mut w = TextWriter::new();
        w.family("x_total", Kind::Counter, "Things.\nMore").sample(
            "x_total",
            &[("a", "1"), ("b", "q\"\\\n")],
            3u64,
        );
        assert_eq!(
            w.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\n"
        );
    }

    #[test]
    fn float_spelling() {
        let mut w = TextWriter::new();
        for v in [5.0, 0.25, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-5] {
            w.sample("g", &[], v);
        }
        w.sample("b", &[], true).sample("b", &[], false);
        assert_eq!(
            w.finish(),
            "g 5\ng 0.25\ng +Inf\ng -Inf\ng NaN\ng 0.00001\nb 1\nb 0\n"
        );
    }

    #[test]
    fn histogram_is_cumulative_and_ends_with_inf() {
        let mut w = TextWriter::new();
        w.histogram("h", &[("op", "get")], &[0.1, 1.0], [2, 1], 3.5, 4);
        assert_eq!(
            w.finish(),
            "h_bucket{op=\"get\",le=\"0.1\"} 2\nh_bucket{op=\"get\",le=\"1\"} 3\n\
             h_bucket{op=\"get\",le=\"+Inf\"} 4\nh_sum{op=\"get\"} 3.5\nh_count{op=\"get\"} 4\n"
        );
        let mut w = TextWriter::new();
        w.histogram("h", &[], &[1.0], [0], 0.0, 0);
        assert_eq!(
            w.finish(),
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
        );
    }

    #[test]
    fn escaping_borrows_clean_values() {
        assert!(matches!(escape_label_value("http://a:1"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value("a\"b"), "a\\\"b");
    }
}
