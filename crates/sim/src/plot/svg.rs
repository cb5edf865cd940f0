//! SVG output: an escaping string builder and the chart frame (title, axes,
//! ticks, grid, axis labels, legend) shared by every chart kind.

use super::axis::{format_tick, Axis};
use std::fmt::Write;

/// Series colours (colour-blind friendly, Okabe–Ito plus extras).
pub(crate) const PALETTE: [&str; 10] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
    "#8C564B", "#7F7F7F",
];

/// Colour of the `i`-th series.
pub(crate) fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for SVG character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Plot-area geometry in pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width.max(200) as f64, height.max(150) as f64);
        Frame {
            width: w,
            height: h,
            left: 72.0,
            right: w - 20.0,
            top: 40.0,
            bottom: h - 52.0,
        }
    }
}

/// Accumulates SVG elements.
pub(crate) struct Svg {
    buf: String,
}

impl Svg {
    pub fn new(frame: &Frame) -> Self {
        let mut buf = String::new();
        let _ = write!(
            buf,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
            w = frame.width,
            h = frame.height
        );
        buf.push('\n');
        let _ = writeln!(
            buf,
            r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            frame.width, frame.height
        );
        Svg { buf }
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, extra: &str) {
        let _ = writeln!(
            self.buf,
            r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" stroke="{stroke}" {extra}/>"#
        );
    }

    pub fn text(&mut self, x: f64, y: f64, anchor: &str, extra: &str, text: &str) {
        let _ = writeln!(
            self.buf,
            r#"<text x="{x:.2}" y="{y:.2}" text-anchor="{anchor}" {extra}>{}</text>"#,
            escape(text)
        );
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str) {
        let _ = writeln!(
            self.buf,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="{fill}" {extra}/>"#,
            w.max(0.0),
            h.max(0.0)
        );
    }

    pub fn polyline(&mut self, pts: &[(f64, f64)], stroke: &str, dash: Option<&str>) {
        if pts.is_empty() {
            return;
        }
        let mut p = String::with_capacity(pts.len() * 16);
        for (x, y) in pts {
            let _ = write!(p, "{x:.2},{y:.2} ");
        }
        let dash = dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            self.buf,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="2"{dash}/>"#,
            p.trim_end()
        );
    }

    pub fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str) {
        let _ = writeln!(
            self.buf,
            r#"<circle cx="{x:.2}" cy="{y:.2}" r="{r}" fill="{fill}"/>"#
        );
    }

    pub fn finish(mut self) -> String {
        self.buf.push_str("</svg>\n");
        self.buf
    }
}

/// Draws title, grid, axes with ticks and labels.
pub(crate) fn draw_frame(
    svg: &mut Svg,
    f: &Frame,
    x: &Axis,
    y: &Axis,
    title: &str,
    x_label: &str,
    y_label: &str,
) {
    svg.text(
        f.width / 2.0,
        22.0,
        "middle",
        r#"font-size="15" font-weight="bold""#,
        title,
    );
    for t in x.ticks() {
        let px = x.px(t);
        svg.line(px, f.top, px, f.bottom, "#e6e6e6", "");
        svg.line(px, f.bottom, px, f.bottom + 5.0, "#333", "");
        svg.text(px, f.bottom + 18.0, "middle", "", &format_tick(t));
    }
    for t in y.ticks() {
        let py = y.px(t);
        svg.line(f.left, py, f.right, py, "#e6e6e6", "");
        svg.line(f.left - 5.0, py, f.left, py, "#333", "");
        svg.text(f.left - 8.0, py + 4.0, "end", "", &format_tick(t));
    }
    svg.line(f.left, f.bottom, f.right, f.bottom, "#333", "");
    svg.line(f.left, f.top, f.left, f.bottom, "#333", "");
    svg.text(
        (f.left + f.right) / 2.0,
        f.height - 12.0,
        "middle",
        "",
        x_label,
    );
    let (cx, cy) = (16.0, (f.top + f.bottom) / 2.0);
    svg.text(
        cx,
        cy,
        "middle",
        &format!(r#"transform="rotate(-90 {cx} {cy})""#),
        y_label,
    );
}

/// Draws a legend box in the plot's top-right corner (top-left when
/// `left` is set).
pub(crate) fn draw_legend(svg: &mut Svg, f: &Frame, names: &[&str], left: bool) {
    if names.is_empty() {
        return;
    }
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let w = 44.0 + longest as f64 * 7.5;
    let h = 8.0 + names.len() as f64 * 18.0;
    let x0 = if left {
        f.left + 10.0
    } else {
        f.right - w - 10.0
    };
    let y0 = f.top + 10.0;
    svg.rect(
        x0,
        y0,
        w,
        h,
        "white",
        r##"fill-opacity="0.85" stroke="#999""##,
    );
    for (i, name) in names.iter().enumerate() {
        let y = y0 + 14.0 + i as f64 * 18.0;
        svg.line(
            x0 + 6.0,
            y - 4.0,
            x0 + 26.0,
            y - 4.0,
            color(i),
            r#"stroke-width="3""#,
        );
        svg.text(x0 + 32.0, y, "start", "", name);
    }
}
