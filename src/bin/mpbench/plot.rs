//! `--plot FILE.svg`: how each figure grows with N. One SVG holds a grid of small panels, one per scenario
//! and numeric figure, each the figure (y) against the number of simulated clients (x), points joined by
//! lines. Each scenario starts a new row, so a row reads as one scenario.
//!
//! Left out: `clients` itself (it is the x axis), non-numeric values, figures measured at fewer than two N,
//! and figures that are the same at every N (the harness's own checks such as `resyncs: 0`, settings such as
//! `joins`): a flat line says nothing the table does not, and dozens of them would bury the curves.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

use crate::report::Figures;

/// Panels per row at most: four 340-pixel panels still fit a laptop screen side by side.
const MAX_COLUMNS: usize = 4;
/// One panel's size in pixels.
const PANEL: (u32, u32) = (340, 250);
/// Height of the band holding the overall title.
const TITLE_BAND: u32 = 44;

/// One panel: a scenario's figure at each N, sorted by N.
struct Series {
    scenario: &'static str,
    key: &'static str,
    points: Vec<(f64, f64)>,
}

/// Draws every figure that changes with N against N into the SVG file `path`; an error if fewer than two N
/// were run, if nothing changes with N, or if the file cannot be written.
pub fn draw(path: &str, results: &[Figures]) -> Result<(), String> {
    let groups = collect(results)?;
    let columns = groups
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(1)
        .min(MAX_COLUMNS);
    let rows: usize = groups.iter().map(|g| g.len().div_ceil(columns)).sum();
    let size = (PANEL.0 * columns as u32, TITLE_BAND + PANEL.1 * rows as u32);

    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let body = root
        .titled("mpbench: figures against N", ("sans-serif", 26))
        .map_err(text)?;
    let cells = body.split_evenly((rows, columns));
    let mut first = 0;
    for group in &groups {
        for (i, series) in group.iter().enumerate() {
            panel(&cells[first + i], series)?;
        }
        // The next scenario starts on a fresh row; the rest of this one's last row stays blank.
        first += group.len().div_ceil(columns) * columns;
    }
    // SVGBackend writes the file here; an unwritable path only shows up now.
    root.present().map_err(text)
}

/// The panels to draw, grouped by scenario in the order the scenarios first ran, figures in the order the
/// scenario reports them.
fn collect(results: &[Figures]) -> Result<Vec<Vec<Series>>, String> {
    let mut scenarios: Vec<(&'static str, Vec<&Figures>)> = Vec::new();
    for f in results {
        match scenarios.iter_mut().find(|(name, _)| *name == f.scenario) {
            Some((_, runs)) => runs.push(f),
            None => scenarios.push((f.scenario, vec![f])),
        }
    }
    let mut groups = Vec::new();
    let mut any_span = false;
    for (scenario, runs) in scenarios {
        // A run without a numeric N has no place on the x axis.
        let runs: Vec<(f64, &Figures)> = runs
            .into_iter()
            .filter_map(|f| Some((number(f.get("clients")?)?, f)))
            .collect();
        if distinct(runs.iter().map(|&(n, _)| n)) < 2 {
            continue;
        }
        any_span = true;
        let mut keys: Vec<&'static str> = Vec::new();
        for (_, f) in &runs {
            for &(k, ref v) in &f.values {
                if k != "clients" && number(v).is_some() && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let mut group = Vec::new();
        for key in keys {
            let mut points: Vec<(f64, f64)> = runs
                .iter()
                .filter_map(|&(n, f)| Some((n, number(f.get(key)?)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let changes = points.windows(2).any(|w| w[0].1 != w[1].1);
            if distinct(points.iter().map(|p| p.0)) >= 2 && changes {
                group.push(Series {
                    scenario,
                    key,
                    points,
                });
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    if !any_span {
        return Err(
            "--plot needs two or more N to draw figures against N (e.g. --clients 100,1000,10000)"
                .into(),
        );
    }
    if groups.is_empty() {
        return Err("no figure changes with N: nothing to draw".into());
    }
    Ok(groups)
}

/// One panel: the figure against N, x on a log scale when N spans ten times or more (so 100, 1000 and 10000
/// are evenly spaced instead of the first two squeezed against the y axis).
fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, s: &Series) -> Result<(), String> {
    let (n_min, n_max) = (s.points[0].0, s.points[s.points.len() - 1].0);
    let log = n_min > 0.0 && n_max / n_min >= 10.0;
    // Log scale by plotting log10(N) on a linear axis: the ticks can then sit exactly on the N that were run,
    // which plotters' own log axis (ticks at powers of ten and their multiples) would not do.
    let to_x = move |n: f64| if log { n.log10() } else { n };
    let from_x = move |x: f64| if log { 10f64.powf(x) } else { x };
    let (x0, x1) = (to_x(n_min), to_x(n_max));
    let x_pad = (x1 - x0) * 0.07;
    // Ticks on the measured N, dropping any that would crowd the previous label.
    let mut ticks: Vec<f64> = Vec::new();
    for x in s.points.iter().map(|p| to_x(p.0)) {
        if ticks.last().is_none_or(|&t| x - t >= (x1 - x0) * 0.12) {
            ticks.push(x);
        }
    }

    let (v_min, v_max) = s
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    // From zero when nothing is negative, so the height of a curve shows its real size, not just its change.
    let y0 = v_min.min(0.0);
    let y1 = if v_max > y0 { v_max } else { y0 + 1.0 };
    let y_pad = (y1 - y0) * 0.08;
    let y0 = if y0 < 0.0 { y0 - y_pad } else { y0 };

    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .margin_right(18)
        .caption(format!("{}: {}", s.scenario, s.key), ("sans-serif", 19))
        .x_label_area_size(38)
        .y_label_area_size(56)
        .build_cartesian_2d(
            NAxis {
                range: (x0 - x_pad)..(x1 + x_pad),
                ticks,
            },
            y0..(y1 + y_pad),
        )
        .map_err(text)?;
    let x_label = |x: &f64| {
        let n = from_x(*x).round();
        short(n, n, 1e3)
    };
    let y_top = v_max.abs().max(v_min.abs());
    let y_label = |y: &f64| short(*y, y_top, 1e4);
    chart
        .configure_mesh()
        .x_desc(if log {
            "clients N (log scale)"
        } else {
            "clients N"
        })
        .y_desc(unit(s.key))
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .y_labels(5)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(text)?;
    let colour = RGBColor(31, 119, 180);
    chart
        .draw_series(
            LineSeries::new(
                s.points.iter().map(|&(n, v)| (to_x(n), v)),
                colour.filled().stroke_width(2),
            )
            .point_size(3),
        )
        .map_err(text)?;
    Ok(())
}

/// The x axis: linear over `range`, with ticks only at `ticks` (the N that were run). plotters' own
/// `with_key_points` does the same but, over an f64 range, loses the formatting hook `configure_mesh` needs.
struct NAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for NAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, x: &f64, limit: (i32, i32)) -> i32 {
        let at = (x - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (at * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Grid lines and labels at the ticks only: light lines in between would suggest N that were not run.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// The y axis's name, from the key's unit suffix (the keys of DESIGN.md carry their units).
fn unit(key: &str) -> &'static str {
    if key.ends_with("_ms") {
        "ms"
    } else if key.ends_with("_us") {
        "µs"
    } else if key.ends_with("_kib") {
        "KiB"
    } else if key.ends_with("_percent") {
        "%"
    } else if key.ends_with("per_s") {
        "per second"
    } else if key.starts_with("bytes") {
        "bytes"
    } else if key == "seconds" {
        "s"
    } else {
        "count"
    }
}

/// A tick label: `v` with the SI suffix that suits `magnitude` once it reaches `k_from` (`12.5k`, `3M`), four
/// significant digits at most and no trailing zeros, so labels stay narrow in a small panel. The y axis
/// passes its largest value as `magnitude`, so all its labels share one suffix (`5k`, `10k`, not `5000`,
/// `10k`); the x axis passes each N itself.
fn short(v: f64, magnitude: f64, k_from: f64) -> String {
    let (x, suffix) = match magnitude.abs() {
        m if m >= 1e9 => (v / 1e9, "G"),
        m if m >= 1e6 => (v / 1e6, "M"),
        m if m >= k_from => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let a = x.abs();
    let decimals = if a == 0.0 {
        0
    } else {
        (3 - a.log10().floor() as i32).clamp(0, 6) as usize
    };
    if x == 0.0 {
        // Not `0k`: zero needs no unit.
        return "0".into();
    }
    let mut s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    s + suffix
}

/// A JSON value as a number, if it is one.
fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// How many different values `xs` holds.
fn distinct(xs: impl Iterator<Item = f64>) -> usize {
    let mut seen: Vec<f64> = Vec::new();
    for x in xs {
        if !seen.contains(&x) {
            seen.push(x);
        }
    }
    seen.len()
}

/// A plotters error as the message `main` prints.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(scenario: &'static str, values: &[(&'static str, serde_json::Value)]) -> Figures {
        let mut f = Figures::new(scenario);
        for (k, v) in values {
            f.set(k, v.clone());
        }
        f
    }

    /// A file in the temporary directory no other test run uses.
    fn temp_svg() -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("mpbench-plot-{}-{nanos}.svg", std::process::id()))
    }

    #[test]
    fn draws_one_panel_per_changing_figure() {
        let mut results = Vec::new();
        for (i, n) in [100u64, 1000, 10000].into_iter().enumerate() {
            let i = i as f64;
            results.push(figures(
                "join",
                &[
                    ("clients", n.into()),
                    ("p50_ms", (1.5 + i).into()),
                    ("p99_ms", (4.0 * (i + 1.0)).into()),
                    ("joins", 50.into()),
                    ("resyncs", 0.into()),
                ],
            ));
            results.push(figures(
                "storm",
                &[
                    ("clients", n.into()),
                    ("complete_ms", (n as f64 * 0.8).into()),
                    ("peak_rss_kib", (4000 + n / 10).into()),
                    ("mode", "local".into()),
                ],
            ));
        }
        let path = temp_svg();
        let drawn = draw(path.to_str().unwrap(), &results);
        let svg = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        drawn.unwrap();
        let svg = svg.unwrap();

        assert!(
            svg.contains("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(200)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        // plotters writes each <text>'s content on a line of its own.
        let texts = |t: &str| svg.lines().filter(|l| l.trim() == t).count();
        for title in [
            "join: p50_ms",
            "join: p99_ms",
            "storm: complete_ms",
            "storm: peak_rss_kib",
        ] {
            assert_eq!(texts(title), 1, "panel {title}");
        }
        // Constant, non-numeric and the x axis itself get no panel.
        for absent in [
            "join: joins",
            "join: resyncs",
            "storm: mode",
            "join: clients",
            "storm: clients",
        ] {
            assert!(!svg.contains(absent), "unexpected panel {absent}");
        }
        // Log scale from 100 to 10000, with ticks on the N that were run.
        assert_eq!(texts("clients N (log scale)"), 4);
        for tick in ["100", "1k", "10k"] {
            assert_eq!(texts(tick), 4, "tick {tick} under each panel");
        }
    }

    #[test]
    fn narrow_span_is_linear() {
        let results: Vec<Figures> = [100u64, 200, 400]
            .into_iter()
            .map(|n| {
                figures(
                    "join",
                    &[("clients", n.into()), ("p50_ms", (n as f64 / 100.0).into())],
                )
            })
            .collect();
        let path = temp_svg();
        let drawn = draw(path.to_str().unwrap(), &results);
        let svg = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        drawn.unwrap();
        let svg = svg.unwrap();
        assert!(svg.lines().any(|l| l.trim() == "clients N"));
        assert!(!svg.contains("log scale"));
    }

    #[test]
    fn one_n_is_an_error() {
        let results = vec![
            figures("join", &[("clients", 100.into()), ("p50_ms", 1.5.into())]),
            figures(
                "storm",
                &[("clients", 100.into()), ("complete_ms", 80.into())],
            ),
        ];
        let path = temp_svg();
        let e = draw(path.to_str().unwrap(), &results).unwrap_err();
        assert!(e.contains("two or more N"), "{e}");
        assert!(
            !path.exists(),
            "nothing is written when there is nothing to draw"
        );
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let results: Vec<Figures> = [100u64, 1000]
            .into_iter()
            .map(|n| {
                figures(
                    "join",
                    &[("clients", n.into()), ("p50_ms", (n as f64).into())],
                )
            })
            .collect();
        let dir = temp_svg(); // never created, so a file under it cannot be written
        let e = draw(dir.join("plot.svg").to_str().unwrap(), &results).unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(0.0, 2.0, 1e4), "0");
        assert_eq!(short(1.5, 2.0, 1e4), "1.5");
        assert_eq!(short(0.01234, 0.02, 1e4), "0.01234");
        assert_eq!(short(1000.0, 2000.0, 1e4), "1000");
        assert_eq!(short(5000.0, 20_000.0, 1e4), "5k");
        assert_eq!(short(0.0, 20_000.0, 1e4), "0");
        assert_eq!(short(12_500.0, 12_500.0, 1e4), "12.5k");
        assert_eq!(short(3_000_000.0, 3_000_000.0, 1e4), "3M");
        assert_eq!(short(-2.25, 3.0, 1e4), "-2.25");
        // N on the x axis: thousands from 1000 up.
        assert_eq!(short(100.0, 100.0, 1e3), "100");
        assert_eq!(short(1000.0, 1000.0, 1e3), "1k");
        assert_eq!(short(1500.0, 1500.0, 1e3), "1.5k");
    }
}
