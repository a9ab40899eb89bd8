//! The pictures of a run's report (`docs/training.md`): the training curves (loss and validation,
//! labelled panels drawn by glassbox-spectral's figure engine with its embedded font) and a
//! contact sheet of predictions (input | prediction | ground truth | error), coloured with
//! glassbox-data's `colormap` module so every depth picture of the project looks alike.

use std::path::Path;

use glassbox_spectral::SpectralError;
use glassbox_spectral::plot::{
    Curve, CurvePanel, CurveStyle, TextAnchor, TextLabel, curve_panels, draw_labels,
};

use crate::train::logs::read_series;

use glassbox_data::colormap::{colorize_depth, colorize_labels, label_color, rgb_image, turbo};
use glassbox_metrics::median;
use image::{Rgb, RgbImage};
use ndarray::{Array2, ArrayView2, ArrayView3};

/// Steps of the trailing moving average drawn over the raw training loss.
pub const LOSS_SMOOTHING: usize = 20;

/// The training curves of a run as `<stem>.svg` and `<stem>.png` (the run folder's
/// `loss_curve.*`), three labelled panels: the training loss (raw and its 20-step moving average,
/// log scale), the validation AbsRel (median-scaled and scale+shift, with the constant
/// baseline) and the validation δ1, each against the optimiser step. `evals` are the `eval.jsonl`
/// series by name; a panel without points is left empty rather than dropped, so the layout is the
/// same for every run.
pub fn training_curves(
    losses: &[(usize, f64)],
    evals: &EvalSeries,
    stem: &Path,
) -> Result<Vec<std::path::PathBuf>, SpectralError> {
    let x_range = run_range(losses);
    let baseline = across(&evals.abs_rel_baseline, x_range);
    let curve = |label: &str, style, points| Curve {
        label: label.to_string(),
        style,
        points,
    };
    // One validation metric, median-scaled and scale+shift, with an optional reference line.
    let validation =
        |title: &str, y_desc: &str, series: [&[(usize, f64)]; 2], reference| CurvePanel {
            title: title.into(),
            x_desc: "optimiser step".into(),
            y_desc: y_desc.into(),
            log_y: false,
            x_range,
            curves: [
                curve("median-scaled", CurveStyle::Main(1), points(series[0])),
                curve(
                    "scale+shift (disparity)",
                    CurveStyle::Main(2),
                    points(series[1]),
                ),
            ]
            .into_iter()
            .chain(reference)
            .collect(),
        };
    let panels = [
        loss_panel(losses, x_range),
        validation(
            "validation AbsRel (lower is better)",
            "AbsRel",
            [&evals.abs_rel, &evals.abs_rel_scale_shift],
            Some(curve(
                "constant baseline (per-image median)",
                CurveStyle::Reference,
                baseline,
            )),
        ),
        validation(
            "validation δ1 (higher is better)",
            "δ1 (share of pixels within 1.25x)",
            [&evals.delta1, &evals.delta1_scale_shift],
            None,
        ),
    ];
    curve_panels(&panels, 3, stem)
}

/// The training curves of a segmentation run, as [`training_curves`] lays them out: the
/// training loss, the validation mIoU and the validation pixel accuracy, each against the
/// majority-class baseline.
pub fn segmentation_curves(
    losses: &[(usize, f64)],
    evals: &EvalSeries,
    stem: &Path,
) -> Result<Vec<std::path::PathBuf>, SpectralError> {
    let x_range = run_range(losses);
    let curve = |label: &str, style, points| Curve {
        label: label.to_string(),
        style,
        points,
    };
    let panel =
        |title: &str, y_desc: &str, model: &[(usize, f64)], baseline: &[(usize, f64)]| CurvePanel {
            title: title.into(),
            x_desc: "optimiser step".into(),
            y_desc: y_desc.into(),
            log_y: false,
            x_range,
            curves: vec![
                curve("model", CurveStyle::Main(1), points(model)),
                curve(
                    "majority class everywhere",
                    CurveStyle::Reference,
                    across(baseline, x_range),
                ),
            ],
        };
    let panels = [
        loss_panel(losses, x_range),
        panel(
            "validation mIoU (higher is better)",
            "mIoU",
            &evals.miou,
            &evals.miou_baseline,
        ),
        panel(
            "validation pixel accuracy (higher is better)",
            "pixel accuracy",
            &evals.pixel_accuracy,
            &evals.pixel_accuracy_baseline,
        ),
    ];
    curve_panels(&panels, 3, stem)
}

/// File stem of a sparse run's token-selection figure (`selection.{png,svg}`, docs/sparse.md).
pub const SELECTION_STEM: &str = "selection";

/// A sparse run's token selection over training as `<stem>.svg` and `<stem>.png`: `corr` of the
/// training batches (raw and 20-step moving average; `metrics.jsonl`), and at each validation the
/// dense pass's share on the kept tokens and the overlap of the scorer's target with a dense
/// pass's (`eval.jsonl`), against the keep ratio, the chance level of both.
pub fn selection_curves(
    metrics: &Path,
    evals: &Path,
    keep_ratio: f64,
    stem: &Path,
) -> Result<Vec<std::path::PathBuf>, SpectralError> {
    let corr = read_series(metrics, "corr");
    let x_range = run_range(&corr);
    let curve = |label: &str, style, points| Curve {
        label: label.to_string(),
        style,
        points,
    };
    let panel = CurvePanel {
        title: format!("token selection at keep ratio {keep_ratio} (higher is better)"),
        x_desc: "optimiser step".into(),
        y_desc: "share".into(),
        log_y: false,
        x_range,
        curves: vec![
            curve("corr (training batch)", CurveStyle::Faint(1), points(&corr)),
            curve(
                &format!("corr, {LOSS_SMOOTHING}-step mean"),
                CurveStyle::Main(1),
                moving_average(&corr),
            ),
            curve(
                "dense pass's mass on kept tokens (validation)",
                CurveStyle::Main(2),
                points(&read_series(evals, "corr_dense")),
            ),
            curve(
                "target overlap with a dense pass (validation)",
                CurveStyle::Main(3),
                points(&read_series(evals, "target_overlap")),
            ),
            curve(
                "chance (keep ratio)",
                CurveStyle::Reference,
                across(&[(0, keep_ratio)], x_range),
            ),
        ],
    };
    curve_panels(&[panel], 1, stem)
}

/// (step, value) pairs as plot points.
pub(crate) fn points(series: &[(usize, f64)]) -> Vec<(f64, f64)> {
    series.iter().map(|&(s, v)| (s as f64, v)).collect()
}

/// The steps a run's loss log spans: every panel shows the whole run.
pub(crate) fn run_range(losses: &[(usize, f64)]) -> Option<(f64, f64)> {
    match (losses.first(), losses.last()) {
        (Some(a), Some(b)) => Some((a.0 as f64, b.0 as f64)),
        _ => None,
    }
}

/// A baseline (a property of the validation images, the same at every step) as a line across
/// the whole run at its last value.
fn across(series: &[(usize, f64)], x_range: Option<(f64, f64)>) -> Vec<(f64, f64)> {
    match (x_range, series.last()) {
        (Some((lo, hi)), Some(&(_, b))) => vec![(lo, b), (hi, b)],
        _ => points(series),
    }
}

/// The trailing [`LOSS_SMOOTHING`]-step moving average of a loss log, as plot points: the one
/// smoothing of every loss curve (a run's own figure and the comparison page), so the two agree.
pub fn moving_average(losses: &[(usize, f64)]) -> Vec<(f64, f64)> {
    (0..losses.len())
        .map(|i| {
            let from = i.saturating_sub(LOSS_SMOOTHING - 1);
            let window = &losses[from..=i];
            let mean = window.iter().map(|(_, l)| l).sum::<f64>() / window.len() as f64;
            (losses[i].0 as f64, mean)
        })
        .collect()
}

/// The training-loss panel: the loss per step and its moving average on a log axis.
fn loss_panel(losses: &[(usize, f64)], x_range: Option<(f64, f64)>) -> CurvePanel {
    let smooth = moving_average(losses);
    CurvePanel {
        title: "training loss".into(),
        x_desc: "optimiser step".into(),
        y_desc: "loss".into(),
        log_y: true,
        x_range,
        curves: vec![
            Curve {
                label: "loss per step".into(),
                style: CurveStyle::Faint(0),
                points: points(losses),
            },
            Curve {
                label: format!("{LOSS_SMOOTHING}-step moving average"),
                style: CurveStyle::Main(0),
                points: smooth,
            },
        ],
    }
}

/// The validation series of a run's `eval.jsonl`, as (step, value) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSeries {
    pub abs_rel: Vec<(usize, f64)>,
    pub abs_rel_scale_shift: Vec<(usize, f64)>,
    pub abs_rel_baseline: Vec<(usize, f64)>,
    pub delta1: Vec<(usize, f64)>,
    pub delta1_scale_shift: Vec<(usize, f64)>,
    pub miou: Vec<(usize, f64)>,
    pub miou_baseline: Vec<(usize, f64)>,
    pub pixel_accuracy: Vec<(usize, f64)>,
    pub pixel_accuracy_baseline: Vec<(usize, f64)>,
}

impl EvalSeries {
    /// Reads `eval.jsonl` (missing file: no points).
    pub fn read(path: &Path) -> Self {
        let series = |key| read_series(path, key);
        Self {
            abs_rel: series("abs_rel"),
            abs_rel_scale_shift: series("abs_rel_scale_shift"),
            abs_rel_baseline: series("abs_rel_baseline"),
            delta1: series("delta1"),
            delta1_scale_shift: series("delta1_scale_shift"),
            miou: series("miou"),
            miou_baseline: series("miou_baseline"),
            pixel_accuracy: series("pixel_accuracy"),
            pixel_accuracy_baseline: series("pixel_accuracy_baseline"),
        }
    }
}

/// One contact-sheet row: the input, the median-scaled prediction and the ground truth (same
/// depth range, on turbo over inverse depth: near red, far blue), and the relative error
/// |pred - gt| / gt on turbo from 0 (blue) to 0.5 (red), with the depth range the colours span.
pub struct ContactRow {
    pub tiles: [RgbImage; 4],
    /// Nearest and farthest valid ground-truth depth in metres (`None`: no valid pixel).
    pub depth_range: Option<(f32, f32)>,
}

/// Builds one [`ContactRow`] from an image, the predicted disparity and the ground truth.
pub fn contact_row(
    rgb: ArrayView3<f32>,
    disparity: ArrayView2<f32>,
    gt: ArrayView2<f32>,
    mask: ArrayView2<bool>,
) -> ContactRow {
    let depth = disparity.mapv(|d| 1.0 / d.max(1e-6));
    let (mut preds, mut gts): (Vec<f64>, Vec<f64>) = depth
        .iter()
        .zip(gt.iter())
        .zip(mask.iter())
        .filter(|((_, g), m)| **m && **g > 0.0)
        .map(|((p, g), _)| (f64::from(*p), f64::from(*g)))
        .unzip();
    let (lo, hi) = gts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &g| {
            (lo.min(g), hi.max(g))
        });
    let range = (hi > lo).then_some((lo as f32, hi as f32));
    let scale = match (median(&mut preds), median(&mut gts)) {
        (Some(p), Some(g)) if p > 0.0 => (g / p) as f32,
        _ => 1.0,
    };
    let aligned = depth.mapv(|d| d * scale);
    let (h, w) = gt.dim();
    let error = Array2::from_shape_fn((h, w), |(y, x)| {
        if mask[[y, x]] && gt[[y, x]] > 0.0 {
            (aligned[[y, x]] - gt[[y, x]]).abs() / gt[[y, x]]
        } else {
            f32::NAN
        }
    });
    let error_img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let e = error[[y as usize, x as usize]];
        if e.is_finite() {
            Rgb(turbo(e / ERROR_SCALE))
        } else {
            Rgb([0, 0, 0])
        }
    });
    ContactRow {
        tiles: [
            rgb_image(rgb),
            colorize_depth(aligned.view(), None, range),
            colorize_depth(gt, Some(mask), range),
            error_img,
        ],
        depth_range: range,
    }
}

/// The relative error the error tiles saturate at (red).
const ERROR_SCALE: f32 = 0.5;
/// Tiles are enlarged by a whole factor to at least this many pixels on their shorter side.
const MIN_TILE: u32 = 160;
const GAP: u32 = 10;
const HEADER: u32 = 34;
const BAR: u32 = 14;
const BAR_LABELS: u32 = 62;

/// Writes the contact sheet as PNG: a header row naming the four columns, the rows enlarged to
/// at least 160 px, and beside every row two colour bars, depth in metres (that row's range) and
/// relative error (0 to 0.5).
pub fn write_contact_sheet(path: &Path, rows: &[ContactRow]) -> Result<(), ReportError> {
    let (tw, th) = rows
        .first()
        .map_or((1, 1), |r| (r.tiles[0].width(), r.tiles[0].height()));
    let k = MIN_TILE.div_ceil(tw.min(th).max(1)).max(1);
    let (cw, ch) = (tw * k, th * k);
    let bars_x = GAP + 4 * (cw + GAP);
    let width = bars_x + 2 * (BAR + BAR_LABELS + GAP);
    let height = HEADER + rows.len().max(1) as u32 * (ch + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut labels = Vec::new();
    let label = |text: String, x: u32, y: u32, anchor| TextLabel {
        text,
        x: x as i32,
        y: y as i32,
        size: 13.0,
        anchor,
        color: (20, 20, 20),
    };
    for (c, title) in [
        "input",
        "prediction (median-scaled)",
        "ground truth",
        "relative error |pred − gt| / gt",
    ]
    .into_iter()
    .enumerate()
    {
        let x = GAP + c as u32 * (cw + GAP) + cw / 2;
        labels.push(label(title.into(), x, HEADER / 2, TextAnchor::Center));
    }
    for (b, title) in ["depth (m)", "rel. error"].into_iter().enumerate() {
        let x = bars_x + b as u32 * (BAR + BAR_LABELS + GAP);
        labels.push(label(title.into(), x, HEADER / 2, TextAnchor::Left));
    }
    for (r, row) in rows.iter().enumerate() {
        let y0 = HEADER + r as u32 * (ch + GAP);
        for (c, tile) in row.tiles.iter().enumerate() {
            let big = image::imageops::resize(tile, cw, ch, image::imageops::FilterType::Nearest);
            image::imageops::replace(
                &mut sheet,
                &big,
                (GAP + c as u32 * (cw + GAP)).into(),
                y0.into(),
            );
        }
        // Bars: the top is the near end (red) and the bottom the far end, as in the tiles.
        for (b, ticks) in [depth_ticks(row.depth_range), error_ticks()]
            .into_iter()
            .enumerate()
        {
            let x0 = bars_x + b as u32 * (BAR + BAR_LABELS + GAP);
            colour_bar(&mut sheet, &mut labels, (x0, y0), ch, ticks);
        }
    }
    Ok(glassbox_data::io::write_png(
        path,
        &with_labels(sheet, &labels)?,
    )?)
}

/// A vertical turbo bar `height` pixels tall at `(x0, y0)`, red at the top (t = 1) and blue at
/// the bottom (t = 0), with a tick mark and a label for each `(t, text)`.
fn colour_bar(
    sheet: &mut RgbImage,
    labels: &mut Vec<TextLabel>,
    (x0, y0): (u32, u32),
    height: u32,
    ticks: Vec<(f32, String)>,
) {
    for y in 0..height {
        let t = 1.0 - y as f32 / (height - 1).max(1) as f32;
        for x in 0..BAR {
            sheet.put_pixel(x0 + x, y0 + y, Rgb(turbo(t)));
        }
    }
    for (t, text) in ticks {
        let y = y0 + ((1.0 - t) * (height - 1) as f32).round() as u32;
        for x in 0..4 {
            sheet.put_pixel(x0 + BAR + x, y, Rgb([20, 20, 20]));
        }
        labels.push(TextLabel {
            text,
            x: (x0 + BAR + 6) as i32,
            y: y.clamp(y0 + 6, (y0 + height).saturating_sub(6)) as i32,
            size: 11.0,
            anchor: TextAnchor::Left,
            color: (20, 20, 20),
        });
    }
}

/// `sheet` with `labels` drawn on it in the embedded font.
fn with_labels(sheet: RgbImage, labels: &[TextLabel]) -> Result<RgbImage, ReportError> {
    let (w, h) = sheet.dimensions();
    let mut raw = sheet.into_raw();
    draw_labels(&mut raw, (w, h), labels)?;
    Ok(RgbImage::from_raw(w, h, raw).expect("the buffer keeps its size"))
}

/// Tick positions (0 = far/bottom .. 1 = near/top) and labels of a depth bar: the colours are
/// linear in inverse depth between the row's nearest and farthest depth.
fn depth_ticks(range: Option<(f32, f32)>) -> Vec<(f32, String)> {
    let Some((near, far)) = range else {
        return vec![(0.5, "no depth".into())];
    };
    let (inv_near, inv_far) = (1.0 / near.max(1e-3), 1.0 / far.max(1e-3));
    [1.0f32, 0.5, 0.0]
        .into_iter()
        .map(|t| {
            let depth = 1.0 / (inv_far + t * (inv_near - inv_far));
            (t, format!("{depth:.2} m"))
        })
        .collect()
}

fn error_ticks() -> Vec<(f32, String)> {
    vec![
        (1.0, format!("≥ {ERROR_SCALE}")),
        (0.5, format!("{}", ERROR_SCALE / 2.0)),
        (0.0, "0".into()),
    ]
}

/// A grid of pictures with a title, column titles and row titles, the tiles enlarged by a whole
/// factor to at least `min_tile` pixels, and a colour bar for the values the tiles show
/// (`bar`: its title and the labels of its top and bottom, turbo from blue to red).
pub struct TitledGrid<'a> {
    pub title: &'a str,
    pub column_titles: &'a [String],
    pub row_titles: &'a [String],
    pub rows: &'a [Vec<RgbImage>],
    pub min_tile: u32,
    pub bar: (&'a str, &'a str, &'a str),
}

impl TitledGrid<'_> {
    /// Composes the grid (text with the embedded font).
    pub fn render(&self) -> Result<RgbImage, ReportError> {
        const TITLE: u32 = 26;
        const ROW_LABELS: u32 = 150;
        let (tw, th) = self
            .rows
            .iter()
            .flatten()
            .next()
            .map_or((1, 1), |t| (t.width(), t.height()));
        let k = self.min_tile.div_ceil(tw.min(th).max(1)).max(1);
        let (cw, ch) = (tw * k, th * k);
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let bar_x = ROW_LABELS + cols * (cw + GAP);
        // The bar's title is wider than its tick labels.
        let width = bar_x + BAR + BAR_LABELS + 50;
        let height = TITLE + HEADER + self.rows.len().max(1) as u32 * (ch + GAP);
        let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
        let label = |text: &str, x: u32, y: u32, size: f64, anchor| TextLabel {
            text: text.to_string(),
            x: x as i32,
            y: y as i32,
            size,
            anchor,
            color: (20, 20, 20),
        };
        let mut labels = vec![label(self.title, GAP, TITLE / 2, 14.0, TextAnchor::Left)];
        for (c, title) in self.column_titles.iter().enumerate() {
            let x = ROW_LABELS + c as u32 * (cw + GAP) + cw / 2;
            labels.push(label(
                title,
                x,
                TITLE + HEADER / 2,
                12.0,
                TextAnchor::Center,
            ));
        }
        let top = TITLE + HEADER;
        for (r, row) in self.rows.iter().enumerate() {
            let y0 = top + r as u32 * (ch + GAP);
            if let Some(title) = self.row_titles.get(r) {
                labels.push(label(title, GAP, y0 + ch / 2, 12.0, TextAnchor::Left));
            }
            for (c, tile) in row.iter().enumerate() {
                let big =
                    image::imageops::resize(tile, cw, ch, image::imageops::FilterType::Nearest);
                image::imageops::replace(
                    &mut sheet,
                    &big,
                    (ROW_LABELS + c as u32 * (cw + GAP)).into(),
                    y0.into(),
                );
            }
        }
        let (bar_title, high, low) = self.bar;
        labels.push(label(
            bar_title,
            bar_x,
            TITLE + HEADER / 2,
            12.0,
            TextAnchor::Left,
        ));
        colour_bar(
            &mut sheet,
            &mut labels,
            (bar_x, top),
            ch,
            vec![(1.0, high.to_string()), (0.0, low.to_string())],
        );
        with_labels(sheet, &labels)
    }
}

/// What can stop a report picture: its text or its file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report figure: {0}")]
    Figure(#[from] SpectralError),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
}

/// One row of a segmentation contact sheet: input, predicted classes, ground-truth classes.
pub struct SegmentationRow {
    pub rgb: RgbImage,
    pub predicted: Array2<u8>,
    pub labels: Array2<u8>,
}

/// Class ids as the 8-bit maps the colour palette reads; ids beyond 254 (and the ignore label)
/// saturate to the ignore label's black.
pub fn class_map_u8(classes: ArrayView2<i64>) -> Array2<u8> {
    classes.mapv(|c| u8::try_from(c).unwrap_or(glassbox_data::IGNORE_LABEL))
}

/// Writes the segmentation contact sheet as PNG: columns input | prediction | ground truth under
/// a header, tiles enlarged to at least 160 px, and a legend of every class the pictures show
/// (swatch, id and name; black = ignored).
pub fn write_segmentation_sheet(
    path: &Path,
    rows: &[SegmentationRow],
    class_names: &[String],
) -> Result<(), ReportError> {
    let (tw, th) = rows
        .first()
        .map_or((1, 1), |r| (r.rgb.width(), r.rgb.height()));
    let k = MIN_TILE.div_ceil(tw.min(th).max(1)).max(1);
    let (cw, ch) = (tw * k, th * k);
    let shown: std::collections::BTreeSet<u8> = rows
        .iter()
        .flat_map(|r| r.predicted.iter().chain(r.labels.iter()).copied())
        .collect();
    let legend_x = GAP + 3 * (cw + GAP);
    let legend = legend_entries(&shown, class_names);
    let legend_height = HEADER + legend.len() as u32 * LEGEND_ROW;
    let width = legend_x + LEGEND_WIDTH;
    let height = (HEADER + rows.len().max(1) as u32 * (ch + GAP)).max(legend_height + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut labels = Vec::new();
    for (c, title) in ["input", "prediction", "ground truth"]
        .into_iter()
        .enumerate()
    {
        let x = GAP + c as u32 * (cw + GAP) + cw / 2;
        labels.push(text_label(title, x, HEADER / 2, 13.0, TextAnchor::Center));
    }
    for (r, row) in rows.iter().enumerate() {
        let y0 = HEADER + r as u32 * (ch + GAP);
        let tiles = [
            row.rgb.clone(),
            colorize_labels(row.predicted.view()),
            colorize_labels(row.labels.view()),
        ];
        for (c, tile) in tiles.iter().enumerate() {
            let big = image::imageops::resize(tile, cw, ch, image::imageops::FilterType::Nearest);
            let x = GAP + c as u32 * (cw + GAP);
            image::imageops::replace(&mut sheet, &big, x.into(), y0.into());
        }
    }
    draw_legend(&mut sheet, &mut labels, (legend_x, 0), &legend);
    Ok(glassbox_data::io::write_png(
        path,
        &with_labels(sheet, &labels)?,
    )?)
}

const LEGEND_ROW: u32 = 20;
const LEGEND_WIDTH: u32 = 190;

/// (colour, text) of each class in `shown`, in id order, the ignore label last.
pub fn legend_entries(
    shown: &std::collections::BTreeSet<u8>,
    class_names: &[String],
) -> Vec<([u8; 3], String)> {
    let ignore = glassbox_data::IGNORE_LABEL;
    let mut entries: Vec<([u8; 3], String)> = shown
        .iter()
        .filter(|&&c| c != ignore)
        .map(|&c| {
            let name = class_names
                .get(usize::from(c))
                .cloned()
                .unwrap_or_else(|| format!("class {c}"));
            (label_color(c), format!("{c} {name}"))
        })
        .collect();
    if shown.contains(&ignore) {
        entries.push((label_color(ignore), "ignored / void".into()));
    }
    entries
}

/// Draws a titled class legend (a swatch and its text per entry) with its top-left at `origin`.
pub fn draw_legend(
    sheet: &mut RgbImage,
    labels: &mut Vec<TextLabel>,
    (x0, y0): (u32, u32),
    entries: &[([u8; 3], String)],
) {
    labels.push(text_label(
        "classes",
        x0,
        y0 + HEADER / 2,
        13.0,
        TextAnchor::Left,
    ));
    for (i, (colour, text)) in entries.iter().enumerate() {
        let y = y0 + HEADER + i as u32 * LEGEND_ROW;
        for dy in 0..LEGEND_ROW - 6 {
            for dx in 0..LEGEND_ROW - 6 {
                // A grey outline keeps black and white swatches visible.
                let edge = dx == 0 || dy == 0 || dx == LEGEND_ROW - 7 || dy == LEGEND_ROW - 7;
                let c = if edge { [120, 120, 120] } else { *colour };
                if x0 + dx < sheet.width() && y + dy < sheet.height() {
                    sheet.put_pixel(x0 + dx, y + dy, Rgb(c));
                }
            }
        }
        labels.push(text_label(
            text,
            x0 + LEGEND_ROW,
            y + (LEGEND_ROW - 6) / 2,
            12.0,
            TextAnchor::Left,
        ));
    }
}

/// A colour label map with its legend on the right, as `predict` writes it.
pub fn label_map_with_legend(
    classes: ArrayView2<u8>,
    class_names: &[String],
) -> Result<RgbImage, ReportError> {
    let map = colorize_labels(classes);
    let shown: std::collections::BTreeSet<u8> = classes.iter().copied().collect();
    let entries = legend_entries(&shown, class_names);
    let (w, h) = map.dimensions();
    let height = h.max(HEADER + entries.len() as u32 * LEGEND_ROW + GAP);
    let mut sheet = RgbImage::from_pixel(w + GAP + LEGEND_WIDTH, height, Rgb([255, 255, 255]));
    image::imageops::replace(&mut sheet, &map, 0, 0);
    let mut labels = Vec::new();
    draw_legend(&mut sheet, &mut labels, (w + GAP, 0), &entries);
    with_labels(sheet, &labels)
}

fn text_label(text: &str, x: u32, y: u32, size: f64, anchor: TextAnchor) -> TextLabel {
    TextLabel {
        text: text.to_string(),
        x: x as i32,
        y: y as i32,
        size,
        anchor,
        color: (20, 20, 20),
    }
}

/// A sparse model's token selection over the image (`predict`, `docs/sparse.md`): patches the
/// encoder updated keep their colours, the ones it passed through are dimmed to grey, with a
/// header naming the count, the keep ratio and what the shading means. `kept` is the patch grid.
pub fn kept_tokens_picture(
    base: &RgbImage,
    kept: ArrayView2<bool>,
    keep_ratio: f64,
) -> Result<RgbImage, ReportError> {
    let (gh, gw) = kept.dim();
    let (w, h) = base.dimensions();
    let width = w.max(360);
    let mut sheet = RgbImage::from_pixel(width, h + 2 * HEADER, Rgb([255, 255, 255]));
    for y in 0..h {
        for x in 0..w {
            let (gy, gx) = (
                (y as usize * gh / h as usize).min(gh - 1),
                (x as usize * gw / w as usize).min(gw - 1),
            );
            let b = base.get_pixel(x, y).0;
            let c = if kept[[gy, gx]] {
                b
            } else {
                let grey = (0.299 * b[0] as f32 + 0.587 * b[1] as f32 + 0.114 * b[2] as f32) * 0.3
                    + 0.7 * 40.0;
                [grey as u8; 3]
            };
            sheet.put_pixel(x, y + HEADER, Rgb(c));
        }
    }
    let count = kept.iter().filter(|&&k| k).count();
    let labels = [
        text_label(
            &format!(
                "kept {count} of {} patch tokens (rho = {keep_ratio})",
                gh * gw
            ),
            GAP,
            HEADER / 2,
            13.0,
            TextAnchor::Left,
        ),
        text_label(
            "colour: updated by every block; grey: passed through",
            GAP,
            h + HEADER + HEADER / 2,
            12.0,
            TextAnchor::Left,
        ),
    ];
    with_labels(sheet, &labels)
}

/// Blends a heat map (values in [0, 1], any size: resized nearest) over an image, turbo coloured.
pub fn overlay(base: &RgbImage, heat: ArrayView2<f32>, alpha: f32) -> RgbImage {
    let (hh, hw) = heat.dim();
    let (w, h) = base.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (hy, hx) = (
            (y as usize * hh / h as usize).min(hh - 1),
            (x as usize * hw / w as usize).min(hw - 1),
        );
        let c = turbo(heat[[hy, hx]]);
        let b = base.get_pixel(x, y).0;
        let mix = |i: usize| (alpha * c[i] as f32 + (1.0 - alpha) * b[i] as f32).round() as u8;
        Rgb([mix(0), mix(1), mix(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_curves_label_their_axes_and_series_in_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let losses: Vec<(usize, f64)> = (1..=100).map(|s| (s, 1.0 / s as f64)).collect();
        let evals = EvalSeries {
            abs_rel: vec![(50, 0.3), (100, 0.2)],
            abs_rel_scale_shift: vec![(50, 0.25), (100, 0.15)],
            abs_rel_baseline: vec![(50, 0.37), (100, 0.37)],
            delta1: vec![(50, 0.5), (100, 0.7)],
            delta1_scale_shift: vec![(50, 0.6), (100, 0.8)],
            ..EvalSeries::default()
        };
        let stem = dir.path().join("loss_curve");
        let files = training_curves(&losses, &evals, &stem).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.is_file()));
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for text in [
            "optimiser step",
            "loss (log scale)",
            "AbsRel",
            "20-step moving average",
            "constant baseline (per-image median)",
            "validation δ1 (higher is better)",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        // A run that has not been validated yet still gets the figure.
        training_curves(&losses, &EvalSeries::default(), &stem).unwrap();
    }

    #[test]
    fn a_perfect_prediction_has_a_blue_error_panel() {
        let gt = Array2::from_shape_fn((4, 4), |(r, c)| 1.0 + (r + c) as f32);
        let disparity = gt.mapv(|d| 3.0 / d);
        let mask = Array2::from_elem((4, 4), true);
        let rgb = ndarray::Array3::<f32>::zeros((3, 4, 4));
        let row = contact_row(rgb.view(), disparity.view(), gt.view(), mask.view());
        assert_eq!(row.tiles[3].get_pixel(1, 1).0, turbo(0.0));
        assert_eq!(row.depth_range, Some((1.0, 7.0)));
        // The sheet enlarges 4 x 4 tiles to 160 px and adds header and colour bars.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sheet.png");
        write_contact_sheet(&path, &[row]).unwrap();
        let sheet = image::open(&path).unwrap().to_rgb8();
        assert_eq!(sheet.height(), HEADER + 160 + GAP);
        assert_eq!(
            sheet.width(),
            GAP + 4 * (160 + GAP) + 2 * (BAR + BAR_LABELS + GAP)
        );
        // The header has text (dark pixels) above the first tile.
        let dark = (0..HEADER)
            .flat_map(|y| (0..GAP + 160).map(move |x| (x, y)))
            .filter(|&(x, y)| sheet.get_pixel(x, y).0[0] < 100)
            .count();
        assert!(dark > 20, "{dark} dark header pixels");
        // Depth ticks: near at the top, far at the bottom, in metres.
        let ticks = depth_ticks(Some((2.0, 7.0)));
        assert_eq!(ticks[0], (1.0, "2.00 m".to_string()));
        assert_eq!(ticks[2], (0.0, "7.00 m".to_string()));
    }
}
