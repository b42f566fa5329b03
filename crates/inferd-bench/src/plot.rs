//! Charts of a report: throughput and latency percentiles against load.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::Report;

/// An open font, committed with the code, so charts render the same anywhere
/// without system font libraries.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot plot to {0}: use a .svg or .png file name")]
    Format(String),
    #[error("nothing to plot")]
    Empty,
    #[error("drawing failed: {0}")]
    Draw(String),
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Draws req/s (left) and p50/p99 latency (right, log scale) against the
/// load level, one colour per target, into `path` (.svg or .png).
pub fn plot(report: &Report, path: &Path) -> Result<(), PlotError> {
    if report.steps.is_empty() {
        return Err(PlotError::Empty);
    }
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let size = (1200, 500);
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw(report, SVGBackend::new(path, size).into_drawing_area()),
        Some("png") => draw(report, BitMapBackend::new(path, size).into_drawing_area()),
        _ => Err(PlotError::Format(path.display().to_string())),
    }
}

fn draw<DB: DrawingBackend>(
    report: &Report,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_err)?;
    let (left, right) = root.split_horizontally(600);
    let levels: Vec<f64> = report
        .steps
        .iter()
        .map(|s| s.concurrency.map(|c| c as f64).or(s.rate).unwrap_or(0.0))
        .collect();
    let x_label = if report.mode == "open" {
        "offered rate (req/s)"
    } else {
        "connections"
    };
    let x_max = levels.iter().cloned().fold(1.0, f64::max) * 1.05;
    let names: Vec<String> = report.steps[0]
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let series = |f: &dyn Fn(&crate::TargetResult) -> f64, i: usize| -> Vec<(f64, f64)> {
        report
            .steps
            .iter()
            .zip(&levels)
            .filter_map(|(s, x)| s.targets.get(i).map(|t| (*x, f(t))))
            .collect()
    };

    let rps_max = report
        .steps
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| t.requests_per_second)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..rps_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("requests/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    for (i, name) in names.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = series(&|t| t.requests_per_second, i);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(draw_err)?;

    let lat_max = report
        .steps
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| t.latency_us.p99 as f64)
        .fold(10.0, f64::max)
        * 2.0;
    let lat_min = report
        .steps
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| t.latency_us.p50 as f64)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(lat_max / 4.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("latency (solid p50, dashed p99)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (lat_min.max(1.0)..lat_max).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("microseconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    for i in 0..names.len() {
        let color = Palette99::pick(i).to_rgba();
        let p50 = series(&|t| t.latency_us.p50.max(1) as f64, i);
        let p99 = series(&|t| t.latency_us.p99.max(1) as f64, i);
        chart
            .draw_series(LineSeries::new(p50, color.stroke_width(2)))
            .map_err(draw_err)?;
        chart
            .draw_series(DashedLineSeries::new(p99, 8, 5, color.stroke_width(2)))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}
