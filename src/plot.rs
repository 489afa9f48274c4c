//! Small SVG line charts for the run directory: no plotting stack, a file any browser opens.

use std::fmt::Write;

/// The y range a chart always shows, widened to fit the data: a chart of AUROC between 0.961
/// and 0.966 drawn on that range alone makes noise look like a trend.
#[derive(Clone, Copy, Debug)]
pub struct YRange {
    /// Lowest value shown.
    pub lo: f64,
    /// Highest value shown.
    pub hi: f64,
}

/// A line chart of `points` (x ascending, integer x such as rounds gets integer ticks) with
/// axes, ticks and a title, its y axis spanning at least `y_range`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    y_range: YRange,
) -> String {
    let (w, h) = (640.0, 360.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut x0, mut x1) = bounds(finite.iter().map(|p| p.0));
    let (mut y0, mut y1) = bounds(finite.iter().map(|p| p.1));
    if x1 <= x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let (y0, y1) = (y0.min(y_range.lo), y1.max(y_range.hi));
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"##,
        w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            sy(y) + 4.0,
            tick(y),
            py = sy(y)
        );
    }
    for x in x_ticks(x0, x1, finite.iter().all(|p| p.0.fract() == 0.0)) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            sx(x),
            h - bottom + 18.0,
            tick(x)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"##,
        (left + w - right) / 2.0,
        h - 12.0,
        escape(x_label),
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        escape(y_label)
    );
    let path: Vec<String> = finite
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        path.join(" ")
    );
    for &(x, y) in &finite {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f77b4"/>"##,
            sx(x),
            sy(y)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Where the x axis is labelled: at most 10 whole numbers for integer data (rounds), else 5
/// even steps.
fn x_ticks(x0: f64, x1: f64, integers: bool) -> Vec<f64> {
    if integers {
        let span = (x1 - x0).max(1.0);
        let step = (span / 10.0).ceil().max(1.0);
        let first = x0.ceil();
        (0..)
            .map(|i| first + step * f64::from(i))
            .take_while(|x| *x <= x1)
            .collect()
    } else {
        (0..=4)
            .map(|i| x0 + (x1 - x0) * f64::from(i) / 4.0)
            .collect()
    }
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_point_per_value_and_survives_empty_input() {
        let unit = YRange { lo: 0.0, hi: 1.0 };
        let svg = line_chart(
            "AUROC <per round>",
            "round",
            "AUROC",
            &[(1.0, 0.9), (2.0, 0.95), (3.0, f64::NAN)],
            unit,
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("AUROC &lt;per round&gt;"));
        let empty = line_chart("t", "x", "y", &[], unit);
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn rounds_get_whole_ticks_and_a_narrow_series_its_scale() {
        let points: Vec<(f64, f64)> = (1..=10)
            .map(|r| (f64::from(r), 0.961 + 0.0005 * f64::from(r)))
            .collect();
        let svg = line_chart("t", "round", "AUROC", &points, YRange { lo: 0.5, hi: 1.0 });
        // Whole rounds only on the x axis; the y axis runs from 0.5 to 1.
        assert!(!svg.contains(">2.25<") && svg.contains(">10<"), "{svg}");
        assert!(svg.contains(">0.500<") && svg.contains(">1<"), "{svg}");
        assert_eq!(
            x_ticks(1.0, 30.0, true),
            [1.0, 4.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 25.0, 28.0]
        );
        assert_eq!(x_ticks(1.0, 3.0, true), [1.0, 2.0, 3.0]);
    }
}
