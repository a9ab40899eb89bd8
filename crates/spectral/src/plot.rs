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
    // Drawn in memory, then written by us: a full disk or a refused file is then the plain I/O
    // error naming the file, not a drawing-backend error.
    let size = figure.size();
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        figure.draw(&root).map_err(plot_error(&svg))?;
        root.present()
            .map_err(|e| plot_error(&svg)(e.to_string()))?;
    }
    write_file(&svg, text.as_bytes())?;
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        figure.draw(&root).map_err(plot_error(&png))?;
        root.present()
            .map_err(|e| plot_error(&png)(e.to_string()))?;
    }
    let mut bytes = Vec::new();
    image::RgbImage::from_raw(size.0, size.1, rgb)
        .expect("the buffer holds width x height RGB pixels")
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| plot_error(&png)(e.to_string()))?;
    write_file(&png, &bytes)?;
    Ok(vec![svg, png])
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| SpectralError::File {
        path: path.to_path_buf(),
        source,
    })
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

/// A legend of more lines than this (a line per layer) goes beside its plot, where it hides
/// nothing, rather than in a corner of it.
const MAX_LEGEND_INSIDE: usize = 6;

/// Width in pixels added to the right of a panel for a legend beside its plot.
const LEGEND_BESIDE_WIDTH: u32 = 160;

impl PanelGrid {
    /// Whether the legends go beside the plots: one rule for the whole grid, so its panels stay
    /// aligned.
    fn legend_beside(&self) -> bool {
        self.legend
            && self
                .panels
                .iter()
                .any(|p| p.lines.len() > MAX_LEGEND_INSIDE)
    }
}

impl Figure for PanelGrid {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols).max(1) as u32;
        let cols = self.cols.min(self.panels.len()).max(1) as u32;
        let extra = if self.legend_beside() {
            LEGEND_BESIDE_WIDTH
        } else {
            0
        };
        (cols * (self.panel_size.0 + extra), rows * self.panel_size.1)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let rows = self.panels.len().div_ceil(self.cols).max(1);
        let cols = self.cols.min(self.panels.len()).max(1);
        let areas = root.split_evenly((rows, cols));
        let legend = match (self.legend, self.legend_beside()) {
            (false, _) => Legend::None,
            (true, false) => Legend::Inside,
            (true, true) => Legend::Beside,
        };
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            draw_panel(panel, area, legend).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Where a panel's legend goes.
#[derive(Clone, Copy, PartialEq)]
enum Legend {
    None,
    /// In the plot's emptiest corner.
    Inside,
    /// To the right of the plot, in [`LEGEND_BESIDE_WIDTH`] pixels kept free for it.
    Beside,
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
    legend: Legend,
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
    // Where no corner is free of data, headroom above the lines makes one.
    let (corner, y_range) = match emptiest_corner(panel, &x_range, &y_range) {
        (corner, 0) => (corner, y_range),
        _ if legend != Legend::Inside => (SeriesLabelPosition::UpperRight, y_range),
        _ => {
            let room = 0.35 * (y_range.end - y_range.start);
            (
                SeriesLabelPosition::UpperRight,
                y_range.start..y_range.end + room,
            )
        }
    };
    let y_digits = if panel.log_y {
        // Ticks at log10 values label the values themselves; enough digits for the smallest.
        tick_digits(10f64.powf(y_range.start).min(1.0))
    } else {
        tick_digits(y_range.end - y_range.start)
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(44 + 7 * y_digits as u32);
    if legend == Legend::Beside {
        builder.margin_right(LEGEND_BESIDE_WIDTH);
    }
    let mut chart = builder.build_cartesian_2d(x_range.clone(), y_range.clone())?;
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
    // Markers help a short series (a few probes, a validation every few hundred steps, shown
    // even beside a long training curve) and clutter a long one (a 64-entry spectrum).
    for line in &panel.lines {
        let (color, width) = (line.color, line.width);
        let size = if width > 1 && line.points.len() <= 20 {
            2
        } else {
            0
        };
        let series = chart.draw_series(
            LineSeries::new(line.points.iter().copied(), color.stroke_width(width))
                .point_size(size),
        )?;
        if legend == Legend::Inside {
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
            });
        }
    }
    match legend {
        Legend::Inside if !panel.lines.is_empty() => {
            chart
                .configure_series_labels()
                .position(corner)
                .background_style(WHITE.mix(0.8))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 11))
                .draw()?;
        }
        Legend::Beside => {
            // The plot area clips what is drawn on it, so the entries go on the panel itself.
            let (ax, ay) = area.get_base_pixel();
            let plot = chart.plotting_area();
            let (px, py) = plot.get_base_pixel();
            let x = px - ax + plot.dim_in_pixel().0 as i32 + 12;
            for (i, line) in panel.lines.iter().enumerate() {
                let y = py - ay + 8 + 15 * i as i32;
                let stroke = line.color.stroke_width(line.width);
                area.draw(&PathElement::new(vec![(x, y), (x + 16, y)], stroke))?;
                area.draw(&Text::new(
                    line.label.clone(),
                    (x + 22, y - 6),
                    ("sans-serif", 11).into_font(),
                ))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The corner of the plot area that the lines cross least (lower right on ties) and how many
/// samples of the lines fall in it, so the legend hides as little data as possible: a falling loss ends in the lower right, a rising δ1 in the
/// upper. Each segment is sampled along its length, so a line passing through a corner counts
/// there even when none of its points lie in it.
fn emptiest_corner(
    panel: &Panel,
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> (SeriesLabelPosition, usize) {
    const SAMPLES: usize = 16;
    let (w, h) = ((x.end - x.start).max(1e-12), (y.end - y.start).max(1e-12));
    let samples: Vec<(f64, f64)> = panel
        .lines
        .iter()
        .flat_map(|l| {
            l.points
                .windows(2)
                .flat_map(|pair| {
                    let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                    (0..SAMPLES).map(move |k| {
                        let t = k as f64 / SAMPLES as f64;
                        (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
                    })
                })
                .chain(l.points.last().copied())
        })
        .map(|(px, py)| ((px - x.start) / w, (py - y.start) / h))
        .collect();
    // The box a legend of a few entries covers: about 40 % of the width, 30 % of the height.
    let count = |right: bool, top: bool| {
        samples
            .iter()
            .filter(|(u, v)| {
                (if right { *u > 0.6 } else { *u < 0.4 }) && (if top { *v > 0.7 } else { *v < 0.3 })
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
    .unwrap_or((SeriesLabelPosition::LowerRight, 0))
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
        let cols = self.panels.len().clamp(1, 3);
        let rows = self.panels.len().div_ceil(3).max(1);
        draw_in_grid(root, self.panels, (rows, cols), draw_bars)
    }
}

/// Fills `root` white and draws `panels` row by row into an even `rows` x `cols` grid.
fn draw_in_grid<DB: DrawingBackend, P>(
    root: &DrawingArea<DB, Shift>,
    panels: &[P],
    (rows, cols): (usize, usize),
    draw: impl Fn(
        &P,
        &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    for (panel, area) in panels.iter().zip(root.split_evenly((rows, cols)).iter()) {
        draw(panel, area).map_err(|e| e.to_string())?;
    }
    Ok(())
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

/// One matrix shown as a heatmap with its own colour bar.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapPanel {
    pub title: String,
    /// The column axis, e.g. "row j of P".
    pub x_desc: String,
    /// The row axis, e.g. "row i of P".
    pub y_desc: String,
    /// Row-major values, `rows` x `cols` (values.len() == rows * cols).
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f64>,
    /// The value range the colours span (e.g. (-1, 1) for cosines); values outside are clamped.
    pub range: (f64, f64),
    /// The colour bar's label, e.g. "cosine" or "⟨p_i, p_j⟩".
    pub value_desc: String,
}

/// Draws `panels` side by side (`cols` per row) as `<stem>.svg` and `<stem>.png`: each panel a
/// square-celled heatmap (row 0 at the top, column 0 on the left; tick labels are 0-based row and
/// column indices) with a title, axis names and a vertical colour bar beside it, labelled with
/// `value_desc` and 3 to 7 values: `range.0`, `range.1` and round values between them.
///
/// A range that straddles 0 (`range.0 < 0 < range.1`) gets a diverging blue-white-red map with
/// white at 0, full blue at `range.0` and full red at `range.1`, so that the sign of a cosine or
/// an inner product reads at a glance; any other range gets the sequential viridis map (dark
/// purple at `range.0` to yellow at `range.1`). Values beyond the range, infinities included,
/// take the colour of its nearer end. Matrices of a few hundred rows are fine: cells of equal
/// colour along a row are drawn as one rectangle.
pub fn heatmap_panels(panels: &[HeatmapPanel], cols: usize, stem: &Path) -> Result<Vec<PathBuf>> {
    let error = |message: String| SpectralError::Plot {
        path: stem.to_path_buf(),
        message,
    };
    if panels.is_empty() {
        return Err(error("there are no heatmap panels to draw".into()));
    }
    for p in panels {
        let (rows, columns, title) = (p.rows, p.cols, &p.title);
        if rows == 0 || columns == 0 {
            return Err(error(format!(
                "heatmap panel {title:?} is an empty {rows} x {columns} matrix"
            )));
        }
        if rows.checked_mul(columns) != Some(p.values.len()) {
            return Err(error(format!(
                "heatmap panel {title:?} has {} values for a {rows} x {columns} matrix",
                p.values.len()
            )));
        }
        let (lo, hi) = p.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(error(format!(
                "heatmap panel {title:?} has the colour range ({lo}, {hi}), which must be finite \
                 and increasing"
            )));
        }
        if let Some(k) = p.values.iter().position(|v| v.is_nan()) {
            return Err(error(format!(
                "heatmap panel {title:?} has a NaN at row {}, column {} (0-based)",
                k / columns,
                k % columns
            )));
        }
    }
    render(
        &HeatmapGrid {
            panels,
            cols: cols.max(1),
        },
        stem,
    )
}

/// Every heatmap panel has the same size, whatever its matrix, so panels side by side line up.
const HEATMAP_PANEL_SIZE: (u32, u32) = (500, 440);

struct HeatmapGrid<'a> {
    panels: &'a [HeatmapPanel],
    cols: usize,
}

impl Figure for HeatmapGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols).max(1) as u32;
        let cols = self.cols.min(self.panels.len()).max(1) as u32;
        (cols * HEATMAP_PANEL_SIZE.0, rows * HEATMAP_PANEL_SIZE.1)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let rows = self.panels.len().div_ceil(self.cols).max(1);
        let cols = self.cols.min(self.panels.len()).max(1);
        draw_in_grid(root, self.panels, (rows, cols), draw_heatmap)
    }
}

/// Pixel boxes `(x0, y0, x1, y1)` (end exclusive) inside a heatmap panel.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HeatmapLayout {
    /// The matrix cells; cells are square up to rounding.
    cells: (i32, i32, i32, i32),
    /// The colour bar's gradient (top row `range.1`, bottom row `range.0`).
    bar: (i32, i32, i32, i32),
}

/// Room for the title above the cells, the row and column labels beside and below them, and the
/// colour bar with its labels on the right.
const HEATMAP_TITLE: i32 = 34;
const HEATMAP_LEFT: i32 = 56;
const HEATMAP_BOTTOM: i32 = 46;
const HEATMAP_BAR_GAP: i32 = 16;
const HEATMAP_BAR_WIDTH: i32 = 18;
const HEATMAP_BAR_LABELS: i32 = 80;

/// Where the cells and the colour bar of a `rows` x `cols` matrix go: the largest square cells
/// that fit, the cells and their bar centred in the panel, the bar at least 160 px tall so that
/// a thin matrix still gets a readable scale.
fn heatmap_layout(rows: usize, cols: usize) -> HeatmapLayout {
    let (w, h) = (HEATMAP_PANEL_SIZE.0 as i32, HEATMAP_PANEL_SIZE.1 as i32);
    let avail_w = w - HEATMAP_LEFT - HEATMAP_BAR_GAP - HEATMAP_BAR_WIDTH - HEATMAP_BAR_LABELS - 8;
    let avail_h = h - HEATMAP_TITLE - HEATMAP_BOTTOM - 8;
    let cell =
        (f64::from(avail_w) / cols.max(1) as f64).min(f64::from(avail_h) / rows.max(1) as f64);
    let cells_w = ((cell * cols as f64).round() as i32).clamp(1, avail_w);
    let cells_h = ((cell * rows as f64).round() as i32).clamp(1, avail_h);
    let group = HEATMAP_LEFT + cells_w + HEATMAP_BAR_GAP + HEATMAP_BAR_WIDTH + HEATMAP_BAR_LABELS;
    let x0 = (w - group) / 2 + HEATMAP_LEFT;
    let y0 = HEATMAP_TITLE + (avail_h - cells_h) / 2;
    let bar_h = cells_h.max(160.min(avail_h));
    let bar_y0 = (y0 + cells_h / 2 - bar_h / 2).max(HEATMAP_TITLE);
    let bar_x0 = x0 + cells_w + HEATMAP_BAR_GAP;
    HeatmapLayout {
        cells: (x0, y0, x0 + cells_w, y0 + cells_h),
        bar: (bar_x0, bar_y0, bar_x0 + HEATMAP_BAR_WIDTH, bar_y0 + bar_h),
    }
}

fn draw_heatmap<DB: DrawingBackend>(
    panel: &HeatmapPanel,
    area: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (rows, cols) = (panel.rows, panel.cols);
    let layout = heatmap_layout(rows, cols);
    let (x0, y0, x1, y1) = layout.cells;
    let border = RGBColor(120, 120, 120);
    area.draw(&Text::new(
        panel.title.as_str(),
        (HEATMAP_PANEL_SIZE.0 as i32 / 2, 8),
        ("sans-serif", 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;

    // Cells: pixel edges are rounded once per row and column, so cells tile without gaps; runs of
    // one colour along a row become one rectangle (a Gram's near-zero background is mostly runs).
    let edge = |start: i32, len: i32, k: usize, n: usize| {
        start + (f64::from(len) * k as f64 / n as f64).round() as i32
    };
    for i in 0..rows {
        let (top, bottom) = (edge(y0, y1 - y0, i, rows), edge(y0, y1 - y0, i + 1, rows));
        let row = &panel.values[i * cols..(i + 1) * cols];
        let mut j = 0;
        while j < cols {
            let color = heat_color(row[j], panel.range);
            let run = row[j..]
                .iter()
                .take_while(|&&v| heat_color(v, panel.range) == color)
                .count();
            let (left, right) = (edge(x0, x1 - x0, j, cols), edge(x0, x1 - x0, j + run, cols));
            area.draw(&Rectangle::new(
                [(left, top), (right, bottom)],
                color.filled(),
            ))?;
            j += run;
        }
    }

    // Axes: a chart over the cells in half-cell units (cell k's centre at 2k + 1, rows counted
    // downwards as negative y), so ticks sit on cell centres and label indices exactly.
    let chart_area = area.clone().shrink(
        (x0 - HEATMAP_LEFT, y0),
        (HEATMAP_LEFT + x1 - x0, y1 - y0 + HEATMAP_BOTTOM),
    );
    let x_ticks: Vec<i32> = index_ticks(cols).map(|k| 2 * k as i32 + 1).collect();
    let y_ticks: Vec<i32> = index_ticks(rows).map(|k| -(2 * k as i32 + 1)).collect();
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(0)
        .x_label_area_size(HEATMAP_BOTTOM)
        .y_label_area_size(HEATMAP_LEFT)
        .build_cartesian_2d(
            (0..2 * cols as i32).with_key_points(x_ticks),
            (-2 * rows as i32..0).with_key_points(y_ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_label_formatter(&|x| ((x - 1) / 2).to_string())
        .y_label_formatter(&|y| ((-y - 1) / 2).to_string())
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .draw()?;
    area.draw(&Rectangle::new([(x0 - 1, y0 - 1), (x1, y1)], border))?;

    // Colour bar: one pixel row per value, top row `range.1`, bottom row `range.0`.
    let (lo, hi) = panel.range;
    let (bx0, by0, bx1, by1) = layout.bar;
    let value_at = |y: i32| hi - f64::from(y - by0) / f64::from((by1 - by0 - 1).max(1)) * (hi - lo);
    let y_of = |v: f64| by0 + ((hi - v) / (hi - lo) * f64::from(by1 - by0 - 1)).round() as i32;
    let mut y = by0;
    while y < by1 {
        let color = heat_color(value_at(y), panel.range);
        let run = (y..by1)
            .take_while(|&r| heat_color(value_at(r), panel.range) == color)
            .count() as i32;
        area.draw(&Rectangle::new([(bx0, y), (bx1, y + run)], color.filled()))?;
        y += run;
    }
    area.draw(&Rectangle::new([(bx0 - 1, by0 - 1), (bx1, by1)], border))?;
    let label_style = ("sans-serif", 11)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut widest = 0;
    let (ticks, digits) = bar_ticks(panel.range);
    for value in ticks {
        let y = y_of(value);
        let label = format_tick(value, digits);
        area.draw(&PathElement::new(vec![(bx1, y), (bx1 + 4, y)], border))?;
        widest = widest.max(area.estimate_text_size(&label, &label_style)?.0 as i32);
        area.draw(&Text::new(label, (bx1 + 7, y), label_style.clone()))?;
    }
    area.draw(&Text::new(
        panel.value_desc.as_str(),
        (bx1 + 7 + widest + 14, (by0 + by1) / 2),
        ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// 0-based indices to label on an axis of `n` cells: every index up to 8 cells, otherwise
/// multiples of a round step (1, 2, 5, 10, 20, 25, 50, ...) with at most 8 labels.
fn index_ticks(n: usize) -> impl Iterator<Item = usize> {
    let fits = |step: usize| n.saturating_sub(1) / step < 8;
    let mut scale = 1usize;
    let step = loop {
        // 25 * scale / 10 is 2 at scale 1 (already tried) and 25, 250, ... above.
        let round = [scale, 2 * scale, 25 * scale / 10, 5 * scale];
        if let Some(step) = round.into_iter().find(|&s| fits(s)) {
            break step;
        }
        scale = scale.saturating_mul(10);
    };
    (0..n).step_by(step)
}

/// The values labelled on a colour bar and their decimals: its two ends and the multiples of a
/// round step (1, 2, 2.5 or 5 times a power of ten) between them, 0 among them on a diverging
/// bar; 3 to 7 labels, none crowding an end.
fn bar_ticks((lo, hi): (f64, f64)) -> (Vec<f64>, usize) {
    let span = hi - lo;
    let scale = 10f64.powf((span / 6.0).log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * scale)
        .find(|&s| s > 0.0 && s.is_finite() && span / s <= 6.0);
    let Some(step) = step else {
        // A span too large or too small for f64 steps: the ends and the middle.
        return (vec![lo, lo / 2.0 + hi / 2.0, hi], tick_digits(span));
    };
    let mut ticks = vec![lo];
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ticks.extend(
        (first..=last)
            .map(|k| k as f64 * step)
            .filter(|&v| v - lo >= 0.4 * step && hi - v >= 0.4 * step),
    );
    ticks.push(hi);
    (ticks, tick_digits(step))
}

/// A colour bar label with `digits` decimals and no trailing zeros ("0.5", not "0.50"), so the
/// labels of a (-1, 1) bar read -1, -0.5, 0, 0.5, 1.
fn format_tick(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text.as_str()
    };
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// ColorBrewer's RdBu (reversed): blue for negative, near-white at 0, red for positive.
const DIVERGING: [RGBColor; 7] = [
    RGBColor(33, 102, 172),
    RGBColor(103, 169, 207),
    RGBColor(209, 229, 240),
    RGBColor(247, 247, 247),
    RGBColor(253, 219, 199),
    RGBColor(239, 138, 98),
    RGBColor(178, 24, 43),
];

/// Viridis at nine evenly spaced points: perceptually uniform and readable in grey.
const SEQUENTIAL: [RGBColor; 9] = [
    RGBColor(68, 1, 84),
    RGBColor(71, 44, 122),
    RGBColor(59, 81, 139),
    RGBColor(44, 113, 142),
    RGBColor(33, 144, 141),
    RGBColor(39, 173, 129),
    RGBColor(92, 200, 99),
    RGBColor(170, 220, 50),
    RGBColor(253, 231, 37),
];

/// The colour of `value` on a heatmap spanning `range` (see [`heatmap_panels`]): diverging with
/// white at 0 when the range straddles 0, viridis otherwise; values outside take the nearer end.
fn heat_color(value: f64, (lo, hi): (f64, f64)) -> RGBColor {
    let t = if lo < 0.0 && hi > 0.0 {
        // Each side scales on its own so that 0 stays white in an asymmetric range.
        if value < 0.0 {
            0.5 - 0.5 * (value / lo).min(1.0)
        } else {
            0.5 + 0.5 * (value / hi).min(1.0)
        }
    } else {
        (value - lo) / (hi - lo)
    };
    let anchors: &[RGBColor] = if lo < 0.0 && hi > 0.0 {
        &DIVERGING
    } else {
        &SEQUENTIAL
    };
    interpolate(anchors, t)
}

/// The colour a fraction `t` (clamped to 0..=1; NaN counts as 0.5) along `anchors`, linear between
/// neighbours.
fn interpolate(anchors: &[RGBColor], t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.5 } else { t.clamp(0.0, 1.0) };
    let pos = t * (anchors.len() - 1) as f64;
    let i = (pos.floor() as usize).min(anchors.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (anchors[i], anchors[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
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

    fn heatmap(title: &str, rows: usize, cols: usize, range: (f64, f64)) -> HeatmapPanel {
        // A smooth matrix with a bright diagonal, like a Gram of near-orthogonal rows.
        let values = (0..rows * cols)
            .map(|k| {
                let (i, j) = (k / cols, k % cols);
                if i == j {
                    range.1
                } else {
                    range.0 + (range.1 - range.0) * ((i * 7 + j * 3) % 11) as f64 / 10.0
                }
            })
            .collect();
        HeatmapPanel {
            title: title.into(),
            x_desc: "row j of P".into(),
            y_desc: "row i of P".into(),
            rows,
            cols,
            values,
            range,
            value_desc: "cosine".into(),
        }
    }

    fn png_pixel(image: &image::RgbImage, (x, y): (i32, i32)) -> RGBColor {
        let p = image.get_pixel(x as u32, y as u32);
        RGBColor(p[0], p[1], p[2])
    }

    #[test]
    fn heatmap_panels_write_svg_and_png_with_titles_axes_and_colour_bar() {
        let dir = tempfile::tempdir().unwrap();
        let panels = [
            heatmap("class cosines", 3, 3, (-1.0, 1.0)),
            heatmap("projection Gram", 40, 40, (0.0, 2.5)),
        ];
        let written = heatmap_panels(&panels, 2, &dir.path().join("grams")).unwrap();
        assert_eq!(written.len(), 2);
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        for text in [
            "class cosines",
            "projection Gram",
            "row j of P",
            "row i of P",
            "cosine",
            "\n-0.5\n",
            "\n2.5\n",
            "\n35\n",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        let png = image::open(&written[1]).unwrap().to_rgb8();
        assert_eq!(
            png.dimensions(),
            (2 * HEATMAP_PANEL_SIZE.0, HEATMAP_PANEL_SIZE.1)
        );
        // Three per row: one panel alone is one panel wide.
        let one = heatmap_panels(&panels[..1], 3, &dir.path().join("one")).unwrap();
        let png = image::open(&one[1]).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), HEATMAP_PANEL_SIZE);
    }

    #[test]
    fn heatmap_top_value_renders_the_top_colour_of_its_bar() {
        let dir = tempfile::tempdir().unwrap();
        for range in [(-1.0, 1.0), (0.0, 1.0)] {
            let mut panel = heatmap("one cell", 1, 1, range);
            panel.values = vec![range.1];
            let written = heatmap_panels(&[panel], 1, &dir.path().join("one")).unwrap();
            let png = image::open(&written[1]).unwrap().to_rgb8();
            let layout = heatmap_layout(1, 1);
            let (x0, y0, x1, y1) = layout.cells;
            let (bx0, by0, bx1, _) = layout.bar;
            let top = heat_color(range.1, range);
            assert_eq!(png_pixel(&png, ((x0 + x1) / 2, (y0 + y1) / 2)), top);
            assert_eq!(png_pixel(&png, ((bx0 + bx1) / 2, by0)), top);
        }
    }

    #[test]
    fn heatmap_colours_diverge_around_zero_and_are_sequential_otherwise() {
        let cos = (-1.0, 1.0);
        assert_eq!(heat_color(1.0, cos), DIVERGING[6]);
        assert_eq!(heat_color(-1.0, cos), DIVERGING[0]);
        assert_eq!(heat_color(0.0, cos), DIVERGING[3]);
        // White stays at 0 in an asymmetric range; values beyond it are clamped.
        assert_eq!(heat_color(0.0, (-0.2, 1.0)), DIVERGING[3]);
        assert_eq!(heat_color(-0.2, (-0.2, 1.0)), DIVERGING[0]);
        assert_eq!(heat_color(7.0, cos), DIVERGING[6]);
        assert_eq!(heat_color(f64::NEG_INFINITY, cos), DIVERGING[0]);
        assert_eq!(heat_color(0.0, (0.0, 4.0)), SEQUENTIAL[0]);
        assert_eq!(heat_color(4.0, (0.0, 4.0)), SEQUENTIAL[8]);
        assert_eq!(heat_color(2.0, (0.0, 4.0)), SEQUENTIAL[4]);
        assert_eq!(heat_color(f64::INFINITY, (0.0, 4.0)), SEQUENTIAL[8]);
    }

    #[test]
    fn heatmap_axis_and_bar_labels() {
        assert_eq!(index_ticks(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            index_ticks(40).collect::<Vec<_>>(),
            [0, 5, 10, 15, 20, 25, 30, 35]
        );
        assert_eq!(
            index_ticks(192).collect::<Vec<_>>(),
            [0, 25, 50, 75, 100, 125, 150, 175]
        );
        assert_eq!(index_ticks(1).collect::<Vec<_>>(), [0]);
        let labels = |range| {
            let (ticks, digits) = bar_ticks(range);
            ticks
                .into_iter()
                .map(|v| format_tick(v, digits))
                .collect::<Vec<_>>()
        };
        assert_eq!(labels((-1.0, 1.0)), ["-1", "-0.5", "0", "0.5", "1"]);
        assert_eq!(labels((0.0, 2.5)), ["0", "0.5", "1", "1.5", "2", "2.5"]);
        assert_eq!(
            labels((-0.2, 1.0)),
            ["-0.2", "0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        // Odd ends keep their digits; a multiple of the step crowding an end is left out.
        assert_eq!(labels((0.0, 0.37)), ["0", "0.1", "0.2", "0.3", "0.37"]);
        assert_eq!(labels((0.0, 0.33)), ["0", "0.1", "0.2", "0.33"]);
        assert_eq!(labels((3.0, 1e6)).len(), 6);
        assert_eq!(labels((-f64::MAX, f64::MAX)).len(), 3);
    }

    #[test]
    fn heatmap_panels_refuse_bad_matrices_naming_the_panel() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("bad");
        let err = |panel: HeatmapPanel| {
            let good = heatmap("fine", 2, 2, (0.0, 1.0));
            heatmap_panels(&[good, panel], 2, &stem)
                .unwrap_err()
                .to_string()
        };
        let mut short = heatmap("Q Q^T", 3, 3, (-1.0, 1.0));
        short.values.pop();
        let message = err(short);
        assert!(
            message.contains("\"Q Q^T\"") && message.contains("8 values for a 3 x 3"),
            "{message}"
        );
        let inverted = heatmap("P^T P", 3, 3, (1.0, -1.0));
        let message = err(inverted);
        assert!(
            message.contains("\"P^T P\"") && message.contains("(1, -1)"),
            "{message}"
        );
        let flat = heatmap("flat", 3, 3, (1.0, 1.0));
        assert!(err(flat).contains("\"flat\""));
        let infinite = heatmap("inf", 3, 3, (0.0, f64::INFINITY));
        assert!(err(infinite).contains("\"inf\""));
        let mut empty = heatmap("empty", 0, 3, (0.0, 1.0));
        empty.values.clear();
        assert!(err(empty).contains("empty 0 x 3"));
        let mut nan = heatmap("nan", 3, 3, (0.0, 1.0));
        nan.values[5] = f64::NAN;
        let message = err(nan);
        assert!(
            message.contains("\"nan\"") && message.contains("row 1, column 2"),
            "{message}"
        );
        assert!(heatmap_panels(&[], 1, &stem).is_err());
        assert!(!stem.with_extension("svg").exists() && !stem.with_extension("png").exists());
    }

    #[test]
    fn heatmap_of_a_noisy_192_dim_gram_renders() {
        let dir = tempfile::tempdir().unwrap();
        let n = 192;
        let mut panel = heatmap("192-dim Gram", n, n, (-1.0, 1.0));
        // Noise everywhere, so that no two neighbours share a colour (the worst case).
        panel.values = (0..n * n)
            .map(|k| (k as f64 * 0.618_033_988_7).fract() * 2.0 - 1.0)
            .collect();
        let start = std::time::Instant::now();
        let written = heatmap_panels(&[panel], 1, &dir.path().join("gram")).unwrap();
        let elapsed = start.elapsed();
        eprintln!("192 x 192 heatmap (SVG + PNG): {elapsed:?}");
        for path in &written {
            assert!(std::fs::metadata(path).unwrap().len() > 10_000);
        }
    }
}
