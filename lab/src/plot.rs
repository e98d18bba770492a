//! The report's figures, as SVG: ROC curves of every detector, BaDExpert's
//! clean vs triggered score histogram (the paper's Fig 4) and the (c_B, c_A)
//! scatter its decision regions are drawn on (Fig 6). People compare curves
//! faster than tables.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use badexpert_eval::evaluate::{DetectorKind, DetectorReport};
use badexpert_eval::metrics::Scored;
use badexpert_eval::metrics::{roc_curve, roc_sides};

use badexpert_converter::{Error, Result};

const SIZE: (u32, u32) = (640, 480);
/// The ROC figure holds a linear and a log-FPR panel side by side.
const WIDE: (u32, u32) = (1040, 480);
const CLEAN: RGBColor = RGBColor(31, 119, 180);
const TRIGGERED: RGBColor = RGBColor(214, 39, 40);
/// log10 of the score is clipped to this range: clean scores can reach c_A/ε.
const LOG_SCORE_RANGE: (f64, f64) = (-8.0, 8.0);
const BINS: usize = 64;
/// Left end of the log-FPR ROC panel, where near-perfect detectors differ.
const MIN_LOG_FPR: f64 = 1e-3;

fn color(kind: DetectorKind) -> RGBColor {
    match kind {
        DetectorKind::BadExpert => TRIGGERED,
        DetectorKind::Strip => CLEAN,
        DetectorKind::ScaleUp => RGBColor(44, 160, 44),
    }
}

/// Runs one drawing into `path`, turning plotters' errors into ours.
fn draw(
    path: &Path,
    size: (u32, u32),
    f: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<PathBuf> {
    let fail = |reason: String| Error::io(path, std::io::Error::other(format!("plot: {reason}")));
    {
        let root = SVGBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        f(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(path.to_path_buf())
}

/// Writes `roc.svg`, `scores.svg` and `confidences.svg` for one (model,
/// attack) pair into `dir`; returns their paths.
/// `gamma` is the bundle's γ, to draw the rejection region on the scatter.
pub fn write_plots(
    dir: &Path,
    title: &str,
    detectors: &[DetectorReport],
    target: u32,
    gamma: f64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = vec![roc(&dir.join("roc.svg"), title, detectors, target)?];
    if let Some(b) = detectors.iter().find(|d| d.detector == DetectorKind::BadExpert) {
        written.push(score_histogram(&dir.join("scores.svg"), title, b, target)?);
        written.push(confidence_scatter(&dir.join("confidences.svg"), title, b, target, gamma)?);
    }
    Ok(written)
}

/// A chart with the margins and axis label areas every figure uses.
fn chart_on<'a, 'b>(area: &'a DrawingArea<SVGBackend<'b>, Shift>) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(12).x_label_area_size(40).y_label_area_size(48);
    builder
}

/// Draws the legend of the labelled series at `position`.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// One detector's ROC curve: its kind, label and (FPR, TPR) points.
type Curve = (DetectorKind, String, Vec<(f64, f64)>);

fn roc(path: &Path, title: &str, detectors: &[DetectorReport], target: u32) -> Result<PathBuf> {
    let curves: Vec<Curve> = detectors
        .iter()
        .map(|d| {
            let (neg, pos) = roc_sides(&d.clean, &d.triggered, target);
            let s = |v: &[&Scored]| v.iter().map(|f| f.suspicion).collect::<Vec<f32>>();
            let auroc = d.evaluation.auroc.map_or("n/a".into(), |a| format!("{a:.4}"));
            (d.detector, format!("{} (AUROC {auroc})", d.detector), roc_curve(&s(&neg), &s(&pos)))
        })
        .collect();
    draw(path, WIDE, |root| {
        let root =
            root.titled(&format!("{title}: ROC, clean vs triggered"), ("sans-serif", 18)).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(WIDE.0 / 2);
        let mut linear = chart_on(&left).build_cartesian_2d(0f64..1f64, 0f64..1.001f64).map_err(|e| e.to_string())?;
        linear
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .draw()
            .map_err(|e| e.to_string())?;
        linear.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(|e| e.to_string())?;
        for (kind, label, curve) in &curves {
            let c = color(*kind);
            linear
                .draw_series(LineSeries::new(curve.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut linear, SeriesLabelPosition::LowerRight)?;
        let mut log = chart_on(&right)
            .build_cartesian_2d((MIN_LOG_FPR..1f64).log_scale(), 0f64..1.001f64)
            .map_err(|e| e.to_string())?;
        log.configure_mesh()
            .x_desc("false-positive rate (log)")
            .y_desc("true-positive rate")
            .draw()
            .map_err(|e| e.to_string())?;
        for (kind, _, curve) in &curves {
            let c = color(*kind);
            let clipped = curve.iter().map(|&(f, t)| (f.max(MIN_LOG_FPR), t));
            log.draw_series(LineSeries::new(clipped, c.stroke_width(2))).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Fraction of `values` in each of `BINS` bins over `range` (outliers clipped in).
fn histogram(values: &[f64], range: (f64, f64)) -> Vec<f64> {
    let mut bins = vec![0.0; BINS];
    let width = (range.1 - range.0) / BINS as f64;
    for &v in values {
        let i = ((v.clamp(range.0, range.1) - range.0) / width) as usize;
        bins[i.min(BINS - 1)] += 1.0 / values.len().max(1) as f64;
    }
    bins
}

fn score_histogram(path: &Path, title: &str, b: &DetectorReport, target: u32) -> Result<PathBuf> {
    let (neg, pos) = roc_sides(&b.clean, &b.triggered, target);
    // suspicion is −score; plot log10(score).
    let log = |v: &[&Scored]| v.iter().map(|f| f64::from((-f.suspicion).max(1e-30)).log10()).collect::<Vec<f64>>();
    let sides = [
        (histogram(&log(&neg), LOG_SCORE_RANGE), CLEAN, "clean"),
        (histogram(&log(&pos), LOG_SCORE_RANGE), TRIGGERED, "triggered"),
    ];
    let top = sides.iter().flat_map(|s| s.0.iter().copied()).fold(0.0, f64::max).max(1e-3) * 1.05;
    let threshold = f64::from(b.evaluation.threshold.max(1e-30)).log10();
    let width = (LOG_SCORE_RANGE.1 - LOG_SCORE_RANGE.0) / BINS as f64;
    draw(path, SIZE, |root| {
        let mut chart = chart_on(root)
            .caption(format!("{title}: BaDExpert score (low = backdoor)"), ("sans-serif", 18))
            .build_cartesian_2d(LOG_SCORE_RANGE.0..LOG_SCORE_RANGE.1, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("log10 score (clipped)")
            .y_desc("fraction of frames")
            .draw()
            .map_err(|e| e.to_string())?;
        for (bins, c, name) in sides {
            chart
                .draw_series(bins.iter().enumerate().map(|(i, &h)| {
                    let x0 = LOG_SCORE_RANGE.0 + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, h)], c.mix(0.5).filled())
                }))
                .map_err(|e| e.to_string())?
                .label(format!("{name} ({} frames)", if name == "clean" { neg.len() } else { pos.len() }))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.mix(0.5).filled()));
        }
        chart
            .draw_series(LineSeries::new([(threshold, 0.0), (threshold, top)], BLACK.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("threshold τ = {:.3e}", b.evaluation.threshold))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

fn confidence_scatter(path: &Path, title: &str, b: &DetectorReport, target: u32, gamma: f64) -> Result<PathBuf> {
    let (neg, pos) = roc_sides(&b.clean, &b.triggered, target);
    let points = |v: &[&Scored]| -> Vec<(f64, f64)> {
        v.iter().filter_map(|f| f.confidences.map(|c| (f64::from(c.expert), f64::from(c.auxiliary)))).collect()
    };
    let sides = [(points(&neg), CLEAN, "clean"), (points(&pos), TRIGGERED, "triggered")];
    draw(path, SIZE, |root| {
        let mut chart = chart_on(root)
            .caption(format!("{title}: confidences in M's class (lines: τ boundary)"), ("sans-serif", 18))
            .build_cartesian_2d(0f64..1.001f64, 0f64..1.001f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("c_B (backdoor expert B)")
            .y_desc("c_A (auxiliary model M′)")
            .draw()
            .map_err(|e| e.to_string())?;
        // Below either line the score falls under τ: c_A = τγ·c_B and c_A = γ − (1 − c_B)/τ.
        let (tau, gamma) = (f64::from(b.evaluation.threshold), gamma);
        let grid = (0..=200).map(|i| i as f64 / 200.0);
        let ratio_line: Vec<(f64, f64)> = grid.clone().map(|x| (x, tau * gamma * x)).filter(|p| p.1 <= 1.0).collect();
        let ramp_line: Vec<(f64, f64)> =
            grid.map(|x| (x, gamma - (1.0 - x) / tau)).filter(|p| (0.0..=1.0).contains(&p.1)).collect();
        for line in [ratio_line, ramp_line] {
            chart.draw_series(LineSeries::new(line, BLACK.stroke_width(1))).map_err(|e| e.to_string())?;
        }
        for (pts, c, name) in sides {
            let n = pts.len();
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 2, c.mix(0.4).filled())))
                .map_err(|e| e.to_string())?
                .label(format!("{name} ({n} frames)"))
                .legend(move |(x, y)| Circle::new((x + 7, y), 4, c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_a_distribution_with_outliers_clipped_in() {
        let h = histogram(&[-100.0, 0.0, 0.01, 100.0], LOG_SCORE_RANGE);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(h[0], 0.25);
        assert_eq!(h[BINS - 1], 0.25);
        assert_eq!(h[BINS / 2], 0.5);
    }
}
