//! Figures of the spectral logs (`docs/spectral.md`, `docs/training.md`), each written as SVG and PNG:
//! indicators over training steps (one line per layer), depth profiles of several runs side by
//! side (one panel per indicator), SVDA sigma spectra (sorted |sigma|, one line per head), and
//! bar comparisons across the variants of an ablation (the project's one figure engine).
//!
//! Drawn with plotters. PNG text needs a font: DejaVu Sans is embedded (the `dejavu` crate) and
//! registered with plotters' `ab_glyph` backend, so figures look the same on every machine and
//! need no system font. SVG text is left to the viewer's sans-serif font.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::error::{Result, SpectralError};
use crate::head::Indicator;
use crate::record::SpectralRecord;
use crate::run::SigmaSpectra;

/// A figure that can be drawn on any plotters backend, so SVG and PNG come from one code path.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>;
}

/// Writes `figure` as `<stem>.svg` and `<stem>.png` and returns both paths.
fn render<F: Figure>(figure: &F, stem: &Path) -> Result<Vec<PathBuf>> {
    register_fonts()?;
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SpectralError::File {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let plot_error = |path: &Path| {
        let path = path.to_path_buf();
        move |message: String| SpectralError::Plot { path, message }
    };
    {
        let root = SVGBackend::new(&svg, figure.size()).into_drawing_area();
        figure.draw(&root).map_err(plot_error(&svg))?;
        root.present()
            .map_err(|e| plot_error(&svg)(e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, figure.size()).into_drawing_area();
        figure.draw(&root).map_err(plot_error(&png))?;
        root.present()
            .map_err(|e| plot_error(&png)(e.to_string()))?;
    }
    Ok(vec![svg, png])
}

/// Registers the embedded DejaVu fonts once per process; every call (not only the first) sees
/// whether that registration worked.
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if !ok {
        return Err(SpectralError::Plot {
            path: PathBuf::from("DejaVuSans.ttf"),
            message: "the embedded font could not be parsed".into(),
        });
    }
    Ok(())
}

/// One line of a panel: label, colour, stroke width and points.
struct Line {
    label: String,
    color: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

/// One chart: a title, axis names and its lines.
struct Panel {
    title: String,
    x_desc: String,
    y_desc: String,
    /// Points are log10 of the values; tick labels show the values.
    log_y: bool,
    /// The x extent to show (padded like the data's); `None` fits the points.
    x_range: Option<(f64, f64)>,
    lines: Vec<Line>,
}

/// Panels on a grid of `cols` columns.
struct PanelGrid {
    panels: Vec<Panel>,
    cols: usize,
    panel_size: (u32, u32),
    legend: bool,
}

impl Figure for PanelGrid {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols).max(1) as u32;
        let cols = self.cols.min(self.panels.len()).max(1) as u32;
        (cols * self.panel_size.0, rows * self.panel_size.1)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let rows = self.panels.len().div_ceil(self.cols).max(1);
        let cols = self.cols.min(self.panels.len()).max(1);
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            draw_panel(panel, area, self.legend).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
    legend: bool,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let extent = panel
        .x_range
        .into_iter()
        .flat_map(|(lo, hi)| [lo, hi])
        .filter_map(|x| {
            let y = panel.lines.iter().flat_map(|l| &l.points).next()?.1;
            Some((x, y))
        });
    let (x_range, y_range) = ranges(
        panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .chain(extent),
    );
    let y_digits = if panel.log_y {
        // Ticks at log10 values label the values themselves; enough digits for the smallest.
        tick_digits(10f64.powf(y_range.start).min(1.0))
    } else {
        tick_digits(y_range.end - y_range.start)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(44 + 7 * y_digits as u32)
        .build_cartesian_2d(x_range.clone(), y_range.clone())?;
    let integer_x = panel
        .lines
        .iter()
        .flat_map(|l| &l.points)
        .all(|(x, _)| x.fract() == 0.0);
    let x_format = |x: &f64| match integer_x {
        // Layers and steps are integers: a tick between two of them gets no label.
        true if (x - x.round()).abs() > 1e-9 => String::new(),
        true => format!("{x:.0}"),
        false => format!("{x:.2}"),
    };
    let y_format = |y: &f64| {
        let value = if panel.log_y { 10f64.powf(*y) } else { *y };
        format!("{value:.y_digits$}")
    };
    chart
        .configure_mesh()
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()?;
    // Markers help a short series (a few probes) and clutter a long one (a 64-entry spectrum).
    let longest = panel
        .lines
        .iter()
        .map(|l| l.points.len())
        .max()
        .unwrap_or(0);
    let point_size = if longest > 20 { 0 } else { 2 };
    for line in &panel.lines {
        let (color, width) = (line.color, line.width);
        let size = if width > 1 { point_size } else { 0 };
        let series = chart.draw_series(
            LineSeries::new(line.points.iter().copied(), color.stroke_width(width))
                .point_size(size),
        )?;
        if legend {
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
            });
        }
    }
    if legend && !panel.lines.is_empty() {
        let corner = emptiest_corner(panel, &x_range, &y_range);
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    Ok(())
}

/// The corner of the plot area with the fewest points (lower right on ties), so the legend hides
/// as little data as possible: a falling loss ends in the lower right, a rising δ1 in the upper.
fn emptiest_corner(
    panel: &Panel,
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    let (w, h) = ((x.end - x.start).max(1e-12), (y.end - y.start).max(1e-12));
    let count = |right: bool, top: bool| {
        panel
            .lines
            .iter()
            .flat_map(|l| &l.points)
            .filter(|(px, py)| {
                let (u, v) = ((px - x.start) / w, (py - y.start) / h);
                (if right { u > 0.55 } else { u < 0.45 }) && (if top { v > 0.6 } else { v < 0.4 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::LowerRight, count(true, false)),
        (SeriesLabelPosition::UpperRight, count(true, true)),
        (SeriesLabelPosition::LowerLeft, count(false, false)),
        (SeriesLabelPosition::UpperLeft, count(false, true)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map(|(corner, _)| corner)
    .unwrap_or(SeriesLabelPosition::LowerRight)
}

/// Axis ranges of the points with 5 % padding; a flat or empty series still gets a visible range.
fn ranges(
    points: impl Iterator<Item = (f64, f64)>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |lo: f64, hi: f64| {
        if lo > hi {
            return 0.0..1.0;
        }
        let span = hi - lo;
        let margin = if span > 0.0 {
            0.05 * span
        } else {
            0.05 * lo.abs().max(1e-3)
        };
        (lo - margin)..(hi + margin)
    };
    (pad(x0, x1), pad(y0, y1))
}

/// Decimals that tell apart about ten ticks over an axis spanning `span` (a flat series near 1.0
/// would otherwise be labelled 1.0, 1.0, 1.0).
fn tick_digits(span: f64) -> usize {
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return 2;
    }
    (1.0 - (span / 10.0).log10().floor()).clamp(1.0, 8.0) as usize - 1
}

/// The colour of item `i` of `n` on a blue-to-red ramp (depth: shallow blue, deep red).
fn ramp(i: usize, n: usize) -> RGBColor {
    let t = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        0.0
    };
    let (r, g, b) = HSLColor(0.66 * (1.0 - t), 0.75, 0.45).rgb();
    RGBColor(r, g, b)
}

/// `color` moved a fraction `t` of the way to white (an opaque light tint, so SVG and PNG agree).
fn lighten(color: RGBColor, t: f64) -> RGBColor {
    let mix = |c: u8| (c as f64 + t * (255.0 - c as f64)).round() as u8;
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

/// Distinct colours for a handful of runs.
fn categorical(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 9] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
    ];
    COLORS[i % COLORS.len()]
}

/// Grey lines at an indicator's value for perfectly uniform attention (0 for selectivity, 1 - 1/N
/// for the Gini form, the grid's mean patch distance for the attention distance) across `xs`, so
/// that no selectivity is read without its no-structure reference; one line per distinct value
/// when the records come from different image sizes.
fn uniform_lines(indicator: Indicator, records: &[&SpectralRecord], xs: &[f64]) -> Vec<Line> {
    let mut values: Vec<f64> = Vec::new();
    for v in records
        .iter()
        .flat_map(|r| r.layers.iter())
        .filter_map(|l| l.mean.uniform_value(indicator))
    {
        if !values.iter().any(|u| (u - v).abs() < 1e-9) {
            values.push(v);
        }
    }
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if lo > hi {
        return Vec::new();
    }
    values
        .into_iter()
        .map(|value| Line {
            label: format!("uniform attention ({value:.3})"),
            color: RGBColor(150, 150, 150),
            width: 1,
            points: vec![(lo, value), (hi, value)],
        })
        .collect()
}

/// The indicators a set of records has values for, in the order of `docs/spectral.md`.
fn present(records: &[&SpectralRecord]) -> Vec<Indicator> {
    Indicator::ALL
        .into_iter()
        .filter(|&i| {
            records
                .iter()
                .any(|r| r.layers.iter().any(|l| l.mean.get(i).is_some()))
        })
        .collect()
}

/// Figure (a): each indicator over training steps, one line per layer (mean over heads); written
/// as `<stem>.svg` and `<stem>.png`.
pub fn indicators_over_steps(
    title: &str,
    records: &[SpectralRecord],
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let refs: Vec<&SpectralRecord> = records.iter().collect();
    // The layer numbers the records carry (1-based from the trainer's probe), in depth order.
    let mut layers: Vec<usize> = records
        .iter()
        .flat_map(|r| r.layers.iter().map(|l| l.layer))
        .collect();
    layers.sort_unstable();
    layers.dedup();
    let steps: Vec<f64> = records.iter().map(|r| r.step as f64).collect();
    let panels = present(&refs)
        .into_iter()
        .map(|indicator| Panel {
            title: format!("{title}: {}", indicator.name()),
            x_desc: "step".into(),
            y_desc: indicator.name().into(),
            log_y: false,
            x_range: None,
            lines: layers
                .iter()
                .enumerate()
                .map(|(k, &l)| Line {
                    label: format!("layer {l}"),
                    color: ramp(k, layers.len()),
                    width: 2,
                    points: records
                        .iter()
                        .filter_map(|r| {
                            let layer = r.layers.iter().find(|x| x.layer == l)?;
                            Some((r.step as f64, layer.mean.get(indicator)?))
                        })
                        .collect(),
                })
                .chain(uniform_lines(indicator, &refs, &steps))
                .collect(),
        })
        .collect();
    render_indicator_panels(panels, stem)
}

/// Indicator figures (a) and (b) share one layout: two columns of legended panels.
fn render_indicator_panels(panels: Vec<Panel>, stem: &Path) -> Result<Vec<PathBuf>> {
    render(
        &PanelGrid {
            panels,
            cols: 2,
            panel_size: (520, 340),
            legend: true,
        },
        stem,
    )
}

/// Figure (b): depth profiles (layer on the x axis, mean over heads) of several runs side by side,
/// one panel per indicator; `runs` pairs a label with the record to show (usually the last one).
pub fn depth_profiles(runs: &[(String, &SpectralRecord)], stem: &Path) -> Result<Vec<PathBuf>> {
    let refs: Vec<&SpectralRecord> = runs.iter().map(|(_, r)| *r).collect();
    let layers: Vec<f64> = refs
        .iter()
        .flat_map(|r| r.layers.iter().map(|l| l.layer as f64))
        .collect();
    let panels = present(&refs)
        .into_iter()
        .map(|indicator| Panel {
            title: indicator.name().into(),
            x_desc: "layer".into(),
            y_desc: indicator.name().into(),
            log_y: false,
            x_range: None,
            lines: runs
                .iter()
                .enumerate()
                .map(|(i, (label, record))| Line {
                    label: format!("{label} (step {})", record.step),
                    color: categorical(i),
                    width: 2,
                    points: record
                        .profile()
                        .series(indicator)
                        .into_iter()
                        .map(|(l, v)| (l as f64, v))
                        .collect(),
                })
                .filter(|line| !line.points.is_empty())
                .chain(uniform_lines(indicator, &refs, &layers))
                .collect(),
        })
        .collect();
    render_indicator_panels(panels, stem)
}

/// Where a [`TextLabel`]'s position sits on the text: its left end, its middle or its right end
/// (always its vertical middle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextAnchor {
    Left,
    Center,
    Right,
}

/// A piece of text to draw onto an image with the embedded font ([`draw_labels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TextLabel {
    pub text: String,
    /// Position in pixels from the top-left corner.
    pub x: i32,
    pub y: i32,
    /// Font size in pixels.
    pub size: f64,
    pub anchor: TextAnchor,
    pub color: (u8, u8, u8),
}

/// Draws `labels` onto an RGB8 image buffer (`width x height x 3`, row-major) with the embedded
/// DejaVu font, so that pictures composed pixel by pixel elsewhere (contact sheets, attention
/// overlays) get titles and scale labels that look like every other figure.
pub fn draw_labels(rgb: &mut [u8], size: (u32, u32), labels: &[TextLabel]) -> Result<()> {
    register_fonts()?;
    if rgb.len() != (size.0 * size.1 * 3) as usize {
        return Err(SpectralError::Plot {
            path: PathBuf::from("(image buffer)"),
            message: format!(
                "a {} x {} RGB image needs {} bytes, got {}",
                size.0,
                size.1,
                size.0 * size.1 * 3,
                rgb.len()
            ),
        });
    }
    let error = |message: String| SpectralError::Plot {
        path: PathBuf::from("(image buffer)"),
        message,
    };
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    for label in labels {
        let h = match label.anchor {
            TextAnchor::Left => HPos::Left,
            TextAnchor::Center => HPos::Center,
            TextAnchor::Right => HPos::Right,
        };
        let (r, g, b) = label.color;
        let style = ("sans-serif", label.size)
            .into_font()
            .color(&RGBColor(r, g, b))
            .pos(Pos::new(h, VPos::Center));
        root.draw(&Text::new(label.text.as_str(), (label.x, label.y), style))
            .map_err(|e| error(e.to_string()))?;
    }
    root.present().map_err(|e| error(e.to_string()))?;
    Ok(())
}

/// How a [`Curve`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurveStyle {
    /// A main series in the i-th of the figure engine's categorical colours.
    Main(usize),
    /// The same colour, light and thin: the raw series behind a smoothed one.
    Faint(usize),
    /// A thin grey reference line (a baseline, uniform attention).
    Reference,
}

/// One labelled series of a [`CurvePanel`]; non-finite points (and, on a log axis, values <= 0)
/// are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub style: CurveStyle,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with named axes, for figures that are not indicator logs (training curves).
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePanel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// A log10 y axis (tick labels show the values; "(log scale)" is added to the axis name).
    pub log_y: bool,
    /// The x extent to show at least (e.g. the whole run for a few validation points).
    pub x_range: Option<(f64, f64)>,
    pub curves: Vec<Curve>,
}

/// Draws `panels` side by side (`cols` per row), each with its legend, as `<stem>.svg` and
/// `<stem>.png`.
pub fn curve_panels(panels: &[CurvePanel], cols: usize, stem: &Path) -> Result<Vec<PathBuf>> {
    let panels = panels
        .iter()
        .map(|p| Panel {
            title: p.title.clone(),
            x_desc: p.x_desc.clone(),
            y_desc: if p.log_y {
                format!("{} (log scale)", p.y_desc)
            } else {
                p.y_desc.clone()
            },
            log_y: p.log_y,
            x_range: p.x_range,
            lines: p
                .curves
                .iter()
                .map(|c| {
                    let (color, width) = match c.style {
                        CurveStyle::Main(i) => (categorical(i), 2),
                        CurveStyle::Faint(i) => (lighten(categorical(i), 0.65), 1),
                        CurveStyle::Reference => (RGBColor(150, 150, 150), 1),
                    };
                    Line {
                        label: c.label.clone(),
                        color,
                        width,
                        points: c
                            .points
                            .iter()
                            .filter(|(x, y)| {
                                x.is_finite() && y.is_finite() && (!p.log_y || *y > 0.0)
                            })
                            .map(|&(x, y)| (x, if p.log_y { y.log10() } else { y }))
                            .collect(),
                    }
                })
                .filter(|l| !l.points.is_empty())
                .collect(),
        })
        .collect();
    render(
        &PanelGrid {
            panels,
            cols: cols.max(1),
            panel_size: (560, 340),
            legend: true,
        },
        stem,
    )
}

/// Figure (c): SVDA sigma spectra, one panel per layer, one line per head of |sigma| sorted from
/// largest to smallest (rank on the x axis).
pub fn sigma_spectra(title: &str, spectra: &SigmaSpectra, stem: &Path) -> Result<Vec<PathBuf>> {
    let panels = spectra
        .layers
        .iter()
        .enumerate()
        .map(|(l, heads)| Panel {
            title: format!("{title}: layer {}, step {}", l + 1, spectra.step),
            x_desc: "rank k".into(),
            y_desc: "|sigma_k|".into(),
            log_y: false,
            x_range: None,
            lines: (0..heads.len())
                .map(|h| Line {
                    label: format!("head {h}"),
                    color: ramp(h, heads.len()),
                    width: 2,
                    points: spectra
                        .sorted_magnitudes(l, h)
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                        .map(|(k, v)| (k as f64, v))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    render(
        &PanelGrid {
            panels,
            cols: 4,
            panel_size: (360, 260),
            legend: false,
        },
        stem,
    )
}

/// One bar of a comparison: the mean of a measure over some runs and its spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    /// Bar height.
    pub mean: f64,
    /// Half-length of the error bar (a standard deviation; 0 draws none).
    pub std: f64,
}

/// One panel of bars sharing a value axis, e.g. AbsRel of each readout.
#[derive(Debug, Clone, PartialEq)]
pub struct BarPanel {
    pub title: String,
    pub y_desc: String,
    pub bars: Vec<Bar>,
}

/// Figure (d): comparisons across the levels of one factor (an ablation), one panel per measure,
/// bars from zero with +- std error bars; written as `<stem>.svg` and `<stem>.png`.
pub fn bar_panels(panels: &[BarPanel], stem: &Path) -> Result<Vec<PathBuf>> {
    if let Some(bad) = panels
        .iter()
        .flat_map(|p| p.bars.iter().map(move |b| (p, b)))
        .find(|(_, b)| !b.mean.is_finite() || !b.std.is_finite() || b.std < 0.0)
    {
        return Err(SpectralError::Plot {
            path: stem.to_path_buf(),
            message: format!(
                "bar {:?} of panel {:?} has mean {} and std {}; both must be finite, std >= 0",
                bad.1.label, bad.0.title, bad.1.mean, bad.1.std
            ),
        });
    }
    render(&BarGrid { panels }, stem)
}

struct BarGrid<'a> {
    panels: &'a [BarPanel],
}

impl Figure for BarGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let cols = self.panels.len().clamp(1, 3) as u32;
        let rows = self.panels.len().div_ceil(3).max(1) as u32;
        let widest = self.panels.iter().map(|p| p.bars.len()).max().unwrap_or(1);
        (cols * (220 + 70 * widest as u32).max(360), rows * 320)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let cols = self.panels.len().clamp(1, 3);
        let rows = self.panels.len().div_ceil(3).max(1);
        for (panel, area) in self
            .panels
            .iter()
            .zip(root.split_evenly((rows, cols)).iter())
        {
            draw_bars(panel, area).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn draw_bars<DB: DrawingBackend>(
    panel: &BarPanel,
    area: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.bars.len().max(1) as i32;
    let top = panel
        .bars
        .iter()
        .map(|b| b.mean + b.std)
        .fold(0.0f64, f64::max);
    let bottom = panel
        .bars
        .iter()
        .map(|b| b.mean - b.std)
        .fold(0.0f64, f64::min);
    let span = (top - bottom).max(1e-9);
    let y_range = (bottom - 0.05 * span * f64::from(bottom < 0.0))..(top + 0.12 * span);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(58)
        // A segmented 0..k axis has k + 1 slots (the last one closes the range).
        .build_cartesian_2d((0..n - 1).into_segmented(), y_range)?;
    let labels = &panel.bars;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                .get(*i as usize)
                .map(|b| b.label.clone())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .y_desc(panel.y_desc.as_str())
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()?;
    for (i, bar) in panel.bars.iter().enumerate() {
        let i = i as i32;
        let color = categorical(i as usize);
        chart.draw_series(
            Histogram::vertical(&chart)
                .margin(14)
                .style(color.mix(0.85).filled())
                .data([(i, bar.mean)]),
        )?;
        if bar.std > 0.0 {
            let (lo, hi) = (bar.mean - bar.std, bar.mean + bar.std);
            let black = BLACK.stroke_width(1);
            chart.draw_series([PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), lo),
                    (SegmentValue::CenterOf(i), hi),
                ],
                black,
            )])?;
        }
        chart.draw_series([Text::new(
            format_value(bar.mean, bar.std),
            (SegmentValue::CenterOf(i), bar.mean + bar.std + 0.03 * span),
            ("sans-serif", 11)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )])?;
    }
    Ok(())
}

/// A bar's printed value: enough digits to tell close means apart.
fn format_value(mean: f64, std: f64) -> String {
    let digits = if mean.abs() >= 100.0 {
        0
    } else if mean.abs() >= 10.0 {
        1
    } else {
        3
    };
    if std > 0.0 {
        format!("{mean:.digits$}±{std:.digits$}")
    } else {
        format!("{mean:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_pad_flat_and_empty_series() {
        let (x, y) = ranges([(0.0, 1.0), (10.0, 1.0)].into_iter());
        assert!(x.start < 0.0 && x.end > 10.0);
        assert!(y.start < 1.0 && y.end > 1.0);
        assert_eq!(ranges(std::iter::empty()), (0.0..1.0, 0.0..1.0));
    }

    #[test]
    fn bar_panels_write_svg_and_png_and_refuse_non_finite_bars() {
        let dir = tempfile::tempdir().unwrap();
        let bar = |label: &str, mean, std| Bar {
            label: label.into(),
            mean,
            std,
        };
        let panel = BarPanel {
            title: "AbsRel by readout".into(),
            y_desc: "AbsRel".into(),
            bars: vec![
                bar("ignore", 0.21, 0.01),
                bar("add", 0.19, 0.0),
                bar("project", 0.18, 0.02),
            ],
        };
        let written =
            bar_panels(&[panel.clone(), panel.clone()], &dir.path().join("bars")).unwrap();
        let mut one = panel.clone();
        one.bars.truncate(1);
        bar_panels(&[one], &dir.path().join("one")).unwrap();
        for path in &written {
            assert!(
                std::fs::metadata(path).unwrap().len() > 1000,
                "{path:?} is nearly empty"
            );
        }
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        assert!(svg.contains("project") && svg.contains("0.180±0.020"));
        let mut bad = panel;
        bad.bars[1].mean = f64::NAN;
        let err = bar_panels(&[bad], &dir.path().join("bad"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"add\"") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn tick_labels_get_enough_decimals_for_the_axis_span() {
        assert_eq!(tick_digits(10.0), 0);
        assert_eq!(tick_digits(1.0), 1);
        assert_eq!(tick_digits(0.35), 2);
        assert_eq!(tick_digits(0.0004), 5);
        assert_eq!(tick_digits(0.0), 2);
    }

    #[test]
    fn ramp_runs_from_blue_to_red() {
        let (first, last) = (ramp(0, 12), ramp(11, 12));
        assert!(first.2 > first.0, "shallow layers are blue: {first:?}");
        assert!(last.0 > last.2, "deep layers are red: {last:?}");
    }
}
