//! SVG line charts for the run directory, drawn with plotters: a file any browser opens.

use plotters::prelude::*;

/// The y range a chart always shows, widened to fit the data: a chart of AUROC between 0.961
/// and 0.966 drawn on that range alone makes noise look like a trend.
#[derive(Clone, Copy, Debug)]
pub struct YRange {
    /// Lowest value shown.
    pub lo: f64,
    /// Highest value shown.
    pub hi: f64,
}

/// Why a chart could not be drawn (plotters' own error, as text: its type is generic over
/// the backend).
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart \"{title}\": {reason}")]
pub struct PlotError {
    title: String,
    reason: String,
}

/// A line chart of `points`, a value per whole x (a round), with axes, ticks and a title, its
/// y axis spanning at least `y_range`, as an SVG document. Values that are not finite are
/// left out.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(u64, f64)],
    y_range: YRange,
) -> Result<String, PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        title: title.to_owned(),
        reason: e.to_string(),
    };
    let finite: Vec<(u64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, y)| y.is_finite())
        .collect();
    let x0 = finite.iter().map(|p| p.0).min().unwrap_or(0);
    let x1 = finite.iter().map(|p| p.0).max().unwrap_or(1).max(x0 + 1);
    let (mut y0, mut y1) = bounds(finite.iter().map(|p| p.1));
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let (y0, y1) = (y0.min(y_range.lo), y1.max(y_range.hi));
    let blue = RGBColor(0x1f, 0x77, 0xb4);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            // plotters' SVG text is sized at 1/1.24 of the style's size: 19 draws at 15 px.
            .caption(title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            // An integer axis: at most 10 whole rounds are labelled, never a round 2.25.
            .x_labels(10)
            .y_labels(5)
            .y_label_formatter(&|y| tick(*y))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                blue.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(finite.iter().map(|&p| Circle::new(p, 3, blue.filled())))
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
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
            &[(1, 0.9), (2, 0.95), (3, f64::NAN)],
            unit,
        )
        .unwrap();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("AUROC &lt;per round&gt;"));
        let empty = line_chart("t", "x", "y", &[], unit).unwrap();
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn rounds_get_whole_ticks_and_a_narrow_series_its_scale() {
        let points: Vec<(u64, f64)> = (1..=10u32)
            .map(|r| (u64::from(r), 0.961 + 0.0005 * f64::from(r)))
            .collect();
        let svg = line_chart("t", "round", "AUROC", &points, YRange { lo: 0.5, hi: 1.0 }).unwrap();
        // Whole rounds only on the x axis; the y axis spans 0.5 to 1, not the data alone.
        let labels = |svg: &str| -> Vec<String> {
            let mut out = Vec::new();
            for piece in svg.split("<text").skip(1) {
                let text = piece.split_once('>').map_or("", |(_, rest)| rest);
                let text = text.split_once("</text>").map_or("", |(t, _)| t);
                out.push(text.trim().to_owned());
            }
            out
        };
        let shown = labels(&svg);
        assert!(shown.contains(&"10".to_owned()), "{shown:?}");
        assert!(
            !shown.iter().any(|l| l.contains(".5") && l.starts_with('2')),
            "{shown:?}"
        );
        assert!(
            shown.contains(&"0.600".to_owned()) && shown.contains(&"1".to_owned()),
            "{shown:?}"
        );
        let few = line_chart(
            "t",
            "round",
            "e",
            &[(1, 1.0), (2, 2.0)],
            YRange { lo: 0.0, hi: 0.0 },
        )
        .unwrap();
        let shown = labels(&few);
        assert!(
            shown.contains(&"1".to_owned()) && shown.contains(&"2".to_owned()),
            "{shown:?}"
        );
        assert!(!shown.contains(&"1.5".to_owned()), "{shown:?}");
    }
}
