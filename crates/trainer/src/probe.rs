//! The spectral probe (`docs/spectral.md`): the six indicators of every layer and head of a
//! [`Dpt`] on a fixed probe batch, the SVDA sigma spectra and attention overlays, written into the
//! run folder (`spectral.jsonl`, `sigma.jsonl`, `attention/step_NNNNNN.png`) for the report, and
//! the "over training" strip of one layer (`attention/over_training.png`, drawn from the heat maps
//! of `attention/over_training.jsonl`).
//!
//! One probe of one image runs `1 + 2 D` forward passes (D = 4 draws, no gradients, evaluation
//! mode): the clean pass gives A, the score queries/keys and sigma; D passes on the input plus
//! delta ~ N(0, 0.01^2) (on the normalised image) give the input-robustness maps; for SVDA, D
//! passes with every sigma entry of every block scaled by (1 + N(0, 0.01^2)) at once give the
//! sigma-robustness maps; the perturbed sigma is passed into those analysis passes as a value
//! (`Encoder::forward_with_maps_and_sigmas`), so the model's weights are never written, even by a
//! probe that fails half-way. The indicators are then
//! computed one layer at a time (glassbox-spectral's `compute_layer`), so only one layer's maps are
//! ever held as ndarray copies.
//!
//! Decisions where the design is silent:
//! - **Batch**: each probe image is probed on its own (its own forwards and indicators) and the
//!   per-head indicators are averaged over images (`Indicators::mean`); every image counts
//!   equally and memory stays that of one image (dpt-base at 384 x 384: about 1.7 GB of f32 maps
//!   for the 9 passes).
//! - **Noise**: drawn by a counter-based generator keyed by (seed, image, stream, draw), not by
//!   libtorch's global RNG, so a probe never changes the training run's random stream and every
//!   probe of a run sees the same noise: changes over training are the model's, not the draw's.
//! - **Sigma noise** perturbs all blocks in the same pass: the robustness of layer l then includes
//!   the effect of the noise in layers below it, as a deployed model would see it.
//! - **Over training**: every probe appends the strip layer's heat maps (one per query point,
//!   gh x gw values) to `attention/over_training.jsonl` and redraws the strip from that file. It is
//!   a log of the run like `spectral.jsonl`: a fresh run removes it and `--resume` cuts it back to
//!   the checkpoint's step, so the strip never shows a step the resumed run does not have. The
//!   probe image is not stored: it is the same at every probe, and the current probe supplies it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glassbox_attention::{AttentionError, AttentionMaps};
use glassbox_data::colormap::rgb_image;
use glassbox_encoder::EncoderOutput;
use glassbox_spectral::{
    ATTENTION_DIR, HeadIndicators, HeadInput, Indicators, LayerIndicators, SIGMA_FILE,
    SPECTRAL_FILE, SigmaSpectra, SpectralError, SpectralRecord, TokenGrid, append_line,
    compute_layer,
};
use image::{Rgb, RgbImage};
use ndarray::{Array2, Array3, Axis, Ix2, Ix3};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use thiserror::Error;

use glassbox_data::sample::derive_seed;
use glassbox_dpt::{Dpt, DptError};

use crate::fs::FileError;
use crate::report::{TitledGrid, overlay};
use crate::tensor::to_array;

/// Standard deviation of the input and sigma noise of the robustness indicator (`docs/spectral.md`: 0.01).
pub const NOISE_STD: f64 = 0.01;
/// Noise draws per robustness variant (`docs/spectral.md`: 4).
pub const NOISE_DRAWS: usize = 4;
/// Query positions of the attention overlays, as (row, column) fractions of the image: the centre
/// and two off-centre points, so both a central object and the surroundings are followed.
pub const QUERY_POINTS: [(f64, f64); 3] = [(0.5, 0.5), (0.25, 0.25), (0.75, 0.7)];
/// The heat maps behind the "over training" strip, one JSON line per probe, in the run's
/// `attention/` folder.
pub const OVER_TRAINING_LOG: &str = "over_training.jsonl";
/// The "over training" strip, in the run's `attention/` folder.
pub const OVER_TRAINING_PNG: &str = "over_training.png";
/// Most probe steps the strip shows (evenly spread, first and last always among them): a long run
/// probed every few steps would otherwise give a figure too wide to read.
pub const STRIP_STEPS: usize = 12;

/// Everything that can stop a probe; the model, libtorch and indicator errors keep their own text.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    Model(#[from] DptError),
    #[error(transparent)]
    Attention(#[from] AttentionError),
    #[error("libtorch during the spectral probe: {0}")]
    Tch(#[from] tch::TchError),
    #[error(transparent)]
    Spectral(#[from] SpectralError),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
    #[error("probe images have shape {shape:?}; expected B x 3 x H x W float with B >= 1")]
    Images { shape: Vec<i64> },
    #[error("attention maps of layer {layer}: {message}")]
    Maps { layer: usize, message: String },
    #[error(transparent)]
    Figure(#[from] Box<crate::report::ReportError>),
    #[error(
        "the over-training strip's layer {layer} is not one of the encoder's layers 1 to {layers}"
    )]
    StripLayer { layer: usize, layers: usize },
    #[error(transparent)]
    File(#[from] FileError),
}

/// How the robustness noise is drawn; the defaults are `docs/spectral.md`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOptions {
    /// Standard deviation of delta (input) and of the relative sigma noise.
    pub noise_std: f64,
    /// Draws per robustness variant; 0 leaves robustness out.
    pub draws: usize,
    /// Seed of the noise; the same seed gives the same noise at every probe.
    pub seed: u64,
    /// Encoder layer (1-based, as the overlays, logs and `--attention-layer` number them) of the
    /// "over training" strip; `None`: the last layer, where the attention feeds the decoder.
    pub strip_layer: Option<usize>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            noise_std: NOISE_STD,
            draws: NOISE_DRAWS,
            seed: 0x5eed_5bec,
            strip_layer: None,
        }
    }
}

/// Wall time of a probe split into the model's forward passes and the indicator computation
/// (tensor to ndarray conversion included), so the two costs can be budgeted separately.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProbeTiming {
    pub forward: Duration,
    pub spectral: Duration,
    /// Process CPU time (all threads) of the indicator stage: its own cost, independent of how
    /// many other processes share the cores. Linux only (`/proc/self/stat`); `None` elsewhere.
    pub spectral_cpu: Option<Duration>,
}

/// One probe's results, ready to be appended to the run folder with [`ProbeOutput::write`].
#[derive(Debug)]
pub struct ProbeOutput {
    pub record: SpectralRecord,
    /// sigma of every layer and head (SVDA only).
    pub sigma: Option<SigmaSpectra>,
    /// Attention of [`QUERY_POINTS`] over the first probe image: one row per query, the input
    /// (query patch marked) then one mean-over-heads overlay per layer.
    pub overlays: RgbImage,
    /// The strip layer's heat maps of this probe: the column it adds to the over-training strip.
    pub strip: StripColumn,
    /// The first probe image, which the strip's heat maps are drawn over.
    pub image: RgbImage,
    pub timing: ProbeTiming,
}

/// The files one probe extended or wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFiles {
    pub spectral: PathBuf,
    pub sigma: Option<PathBuf>,
    pub overlays: PathBuf,
    /// The redrawn over-training strip (its heat maps: [`OVER_TRAINING_LOG`] beside it).
    pub strip: PathBuf,
}

/// One probe's column of the over-training strip: the mean-over-heads attention of one layer for
/// every query point, small enough (gh x gw values per query) to log at every probe, so the strip
/// can be redrawn from the log after `--resume` without keeping any probe in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripColumn {
    pub step: u64,
    /// Encoder layer, 1-based.
    pub layer: usize,
    /// Patch grid (rows, columns) of the heat maps.
    pub grid: (usize, usize),
    pub queries: Vec<QueryHeat>,
}

/// One query point's attention over the patches, as the overlays draw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryHeat {
    /// Token index (prefix tokens included), as the overlays' row titles name it.
    pub token: usize,
    /// Patch (row, column), 0-based.
    pub patch: (usize, usize),
    /// The weights over the patches, row-major, scaled to a maximum of 1 ([`patch_heat`]).
    pub heat: Vec<f32>,
}

/// A fixed probe batch (normalised images B x 3 x H x W) and its noise options: built once per
/// run and run at every probe step, so all records of a run describe the same inputs.
#[derive(Debug)]
pub struct Probe {
    images: Tensor,
    options: ProbeOptions,
}

impl Probe {
    /// Checks the batch shape; the images stay on their device.
    pub fn new(images: Tensor, options: ProbeOptions) -> Result<Self, ProbeError> {
        let shape = images.size();
        if shape.len() != 4 || shape[0] < 1 || shape[1] != 3 {
            return Err(ProbeError::Images { shape });
        }
        let images = images.f_to_kind(Kind::Float)?;
        Ok(Self { images, options })
    }

    /// Runs the probe on `model` and labels the results with `step`. The model's sigma is the
    /// same, bit for bit, before and after (also when the probe fails half-way).
    pub fn run(&self, model: &Dpt, step: u64) -> Result<ProbeOutput, ProbeError> {
        let mut timing = ProbeTiming::default();
        let batch = self.images.size()[0];
        let layers = model.encoder().blocks().len();
        let strip_layer = self.options.strip_layer.unwrap_or(layers);
        if strip_layer == 0 || strip_layer > layers {
            return Err(ProbeError::StripLayer {
                layer: strip_layer,
                layers,
            });
        }
        let mut per_image: Vec<Vec<LayerIndicators>> = Vec::with_capacity(batch as usize);
        let mut overlays = None;
        for b in 0..batch {
            let image = self.images.f_narrow(0, b, 1)?;
            let start = Instant::now();
            let (clean, grid) = forward_maps(model, &image)?;
            timing.forward += start.elapsed();
            if overlays.is_none() {
                overlays = Some(attention_overlays(
                    &image,
                    &clean,
                    grid,
                    &QUERY_POINTS,
                    step,
                    strip_layer,
                )?);
            }
            per_image.push(self.indicators(model, &image, b as u64, clean, &mut timing)?);
        }
        let record = SpectralRecord::from_layers(step, average_over_images(per_image)?);
        let Overlays {
            figure,
            strip,
            image,
        } = overlays.expect("the batch holds at least one image");
        Ok(ProbeOutput {
            record,
            sigma: sigma_spectra(model, step)?,
            overlays: figure,
            strip,
            image,
            timing,
        })
    }

    /// The indicators of one image, layer by layer.
    fn indicators(
        &self,
        model: &Dpt,
        image: &Tensor,
        image_index: u64,
        clean: Vec<AttentionMaps>,
        timing: &mut ProbeTiming,
    ) -> Result<Vec<LayerIndicators>, ProbeError> {
        let start = Instant::now();
        let mut input_maps = Vec::with_capacity(self.options.draws);
        for draw in 0..self.options.draws {
            let key = NoiseKey::new(self.options.seed, image_index, 0, draw as u64);
            let delta = normal_tensor(&image.size(), self.options.noise_std, key)?
                .f_to_device(image.device())?;
            input_maps.push(probabilities(forward_maps(model, &image.f_add(&delta)?)?.0));
        }
        let sigma_maps = self.sigma_perturbed_maps(model, image, image_index)?;
        timing.forward += start.elapsed();

        let size = image.size();
        let p = model.encoder().config().patch_size;
        // A one-patch image has no distances to measure: indicator 7 is then left out.
        let grid = TokenGrid::new(1, (size[2] / p) as usize, (size[3] / p) as usize, p as f64).ok();
        let start = Instant::now();
        let cpu_start = process_cpu_time();
        let layers = clean
            .iter()
            .enumerate()
            .map(|(layer, maps)| {
                let pick = |draws: &[Vec<Tensor>]| -> Vec<Tensor> {
                    draws.iter().map(|d| d[layer].shallow_clone()).collect()
                };
                // Layers are numbered from 1 in logs and figures, as hooks and `--attention-layer`.
                layer_indicators(
                    layer + 1,
                    maps,
                    &pick(&input_maps),
                    &pick(&sigma_maps),
                    grid,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        timing.spectral += start.elapsed();
        if let (Some(a), Some(b)) = (cpu_start, process_cpu_time()) {
            timing.spectral_cpu =
                Some(timing.spectral_cpu.unwrap_or_default() + b.saturating_sub(a));
        }
        Ok(layers)
    }

    /// The maps of every layer under sigma noise, one entry per draw (empty for standard
    /// attention). The perturbed sigma goes into the analysis pass as a value; the model's own is
    /// never written.
    fn sigma_perturbed_maps(
        &self,
        model: &Dpt,
        image: &Tensor,
        image_index: u64,
    ) -> Result<Vec<Vec<Tensor>>, ProbeError> {
        let sigmas: Vec<Option<Tensor>> = model
            .encoder()
            .blocks()
            .iter()
            .map(|b| b.attention().sigma())
            .collect::<Result<_, AttentionError>>()?;
        let originals: Option<Vec<Tensor>> = sigmas.into_iter().collect();
        let Some(originals) = originals else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(self.options.draws);
        for draw in 0..self.options.draws {
            let perturbed = originals
                .iter()
                .enumerate()
                .map(|(l, original)| {
                    let key =
                        NoiseKey::new(self.options.seed, image_index, 1 + l as u64, draw as u64);
                    let noise = normal_tensor(&original.size(), self.options.noise_std, key)?
                        .f_to_device(original.device())?;
                    Ok(original.f_detach()?.f_mul(&noise.f_add_scalar(1.0)?)?)
                })
                .collect::<Result<Vec<Tensor>, ProbeError>>()?;
            let EncoderOutput { maps, .. } = tch::no_grad(|| {
                model
                    .encoder()
                    .forward_with_maps_and_sigmas(image, &perturbed)
            })
            .map_err(DptError::from)?;
            out.push(probabilities(maps));
        }
        Ok(out)
    }
}

impl ProbeOutput {
    /// Appends the record to `<run>/spectral.jsonl` and the sigma spectra to `<run>/sigma.jsonl`,
    /// writes the overlays as `<run>/attention/step_NNNNNN.png`, appends the strip column to
    /// `<run>/attention/over_training.jsonl` and redraws `<run>/attention/over_training.png`
    /// from every column of this layer logged so far.
    pub fn write(&self, run_dir: &Path) -> Result<ProbeFiles, ProbeError> {
        let spectral = append_record(run_dir, &self.record)?;
        let sigma = match &self.sigma {
            Some(s) => Some(append_line(run_dir, SIGMA_FILE, |f| s.write_jsonl(f))?),
            None => None,
        };
        let attention = run_dir.join(ATTENTION_DIR);
        let overlays = attention.join(format!("step_{:06}.png", self.record.step));
        glassbox_data::io::write_png(&overlays, &self.overlays)?;
        let line = serde_json::to_value(&self.strip).expect("a strip column is plain data");
        crate::train::logs::append(&attention.join(OVER_TRAINING_LOG), &line)?;
        let columns: Vec<StripColumn> = read_strip_log(run_dir)
            .into_iter()
            .filter(|c| c.layer == self.strip.layer)
            .collect();
        let strip = attention.join(OVER_TRAINING_PNG);
        glassbox_data::io::write_png(&strip, &over_training_strip(&self.image, &columns)?)?;
        Ok(ProbeFiles {
            spectral,
            sigma,
            overlays,
            strip,
        })
    }
}

/// The strip columns a run has logged (`attention/over_training.jsonl`), one per probe step in
/// step order (a step logged twice keeps its last line); a missing file or a torn line gives
/// nothing for it. The run page reads it to name the strip's layer.
pub fn read_strip_log(run_dir: &Path) -> Vec<StripColumn> {
    let path = run_dir.join(ATTENTION_DIR).join(OVER_TRAINING_LOG);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_step = std::collections::BTreeMap::new();
    for column in text
        .lines()
        .filter_map(|l| serde_json::from_str::<StripColumn>(l).ok())
    {
        by_step.insert(column.step, column);
    }
    by_step.into_values().collect()
}

/// The probe steps the strip shows out of `n` logged ones: all of them up to [`STRIP_STEPS`],
/// else [`STRIP_STEPS`] evenly spread from the first to the last.
fn strip_steps(n: usize) -> Vec<usize> {
    if n <= STRIP_STEPS {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..STRIP_STEPS)
        .map(|i| (i * (n - 1) + (STRIP_STEPS - 1) / 2) / (STRIP_STEPS - 1))
        .collect();
    picked.dedup();
    picked
}

/// The "over training" strip of one layer: a row per query point (titled with its token, as in
/// the per-step overlays), the input with the query patch framed, then one column per probe step
/// (titled "step N") of the mean-over-heads attention over `image`, with its colour bar. Columns
/// whose grid or queries differ from the last one's (another model in the same folder) are left
/// out rather than drawn wrongly.
pub fn over_training_strip(
    image: &RgbImage,
    columns: &[StripColumn],
) -> Result<RgbImage, ProbeError> {
    let Some(last) = columns.last() else {
        return Err(ProbeError::Maps {
            layer: 0,
            message: "no probe step to draw over training".into(),
        });
    };
    let (gh, gw) = last.grid;
    let fits = |c: &&StripColumn| {
        c.grid == last.grid
            && c.layer == last.layer
            && c.queries.len() == last.queries.len()
            && c.queries.iter().all(|q| q.heat.len() == gh * gw)
    };
    let usable: Vec<&StripColumn> = columns.iter().filter(fits).collect();
    let shown: Vec<&StripColumn> = strip_steps(usable.len())
        .into_iter()
        .map(|i| usable[i])
        .collect();
    let rows: Vec<Vec<RgbImage>> = last
        .queries
        .iter()
        .enumerate()
        .map(|(q, query)| {
            let (r, c) = query.patch;
            std::iter::once(mark_patch(image, r, c, gh, gw))
                .chain(shown.iter().map(|column| {
                    let heat = Array2::from_shape_vec((gh, gw), column.queries[q].heat.clone())
                        .expect("the heat maps fit the grid (checked above)");
                    overlay(image, heat.view(), 0.6)
                }))
                .collect()
        })
        .collect();
    let row_titles: Vec<String> = last
        .queries
        .iter()
        .map(|q| query_title(q.token, q.patch))
        .collect();
    let column_titles: Vec<String> = std::iter::once("query patch (white frame)".to_string())
        .chain(shown.iter().map(|c| format!("step {}", c.step)))
        .collect();
    let skipped = if shown.len() < usable.len() {
        format!(", {} of {} probes shown", shown.len(), usable.len())
    } else {
        String::new()
    };
    let title = format!(
        "layer {} over training: attention of the framed query patch over the patches, mean \
         over heads{skipped}",
        last.layer
    );
    Ok(TitledGrid {
        title: &title,
        column_titles: &column_titles,
        row_titles: &row_titles,
        rows: &rows,
        min_tile: ATTENTION_TILE,
        bar: ATTENTION_BAR,
    }
    .render()
    .map_err(Box::new)?)
}

/// Tile size and colour bar shared by the per-step overlays and the strip, so both read alike.
const ATTENTION_TILE: u32 = 96;
const ATTENTION_BAR: (&str, &str, &str) = ("weight / row max", "1", "0");

/// The row title of a query point, the same in the per-step overlays and the strip.
fn query_title(token: usize, (r, c): (usize, usize)) -> String {
    format!("query token {token} (patch {}, {})", r + 1, c + 1)
}

/// Appends one record to `<run>/spectral.jsonl` (created if missing) and returns its path.
fn append_record(run_dir: &Path, record: &SpectralRecord) -> Result<PathBuf, ProbeError> {
    Ok(append_line(run_dir, SPECTRAL_FILE, |f| {
        record.write_jsonl(f)
    })?)
}

/// sigma of every block as `layers[l][h][k]`, or `None` for a standard-attention model.
fn sigma_spectra(model: &Dpt, step: u64) -> Result<Option<SigmaSpectra>, ProbeError> {
    let mut layers = Vec::new();
    for block in model.encoder().blocks() {
        let Some(sigma) = block.attention().sigma()? else {
            return Ok(None);
        };
        let values =
            to_array(&sigma)
                .into_dimensionality::<Ix2>()
                .map_err(|e| ProbeError::Maps {
                    layer: layers.len(),
                    message: format!("sigma: {e}"),
                })?;
        layers.push(
            values
                .outer_iter()
                .map(|head| head.iter().map(|&v| f64::from(v)).collect())
                .collect(),
        );
    }
    Ok(Some(SigmaSpectra { step, layers }))
}

/// One probe pass: the encoder's attention maps and patch grid (rows, columns) in evaluation
/// mode without gradients. Only the encoder runs: the indicators never look at the prediction.
fn forward_maps(
    model: &Dpt,
    image: &Tensor,
) -> Result<(Vec<AttentionMaps>, (usize, usize)), ProbeError> {
    let EncoderOutput { maps, grid, .. } =
        tch::no_grad(|| model.encoder().forward_with_maps(image)).map_err(DptError::from)?;
    Ok((maps, (grid.0 as usize, grid.1 as usize)))
}

/// Keeps only the attention probabilities of each layer (the rest of a perturbed pass is not
/// needed and is freed at once).
fn probabilities(maps: Vec<AttentionMaps>) -> Vec<Tensor> {
    maps.into_iter().map(|m| m.probabilities).collect()
}

/// The indicators of one layer of one image from its clean maps and the perturbed probabilities.
fn layer_indicators(
    layer: usize,
    maps: &AttentionMaps,
    input_maps: &[Tensor],
    sigma_maps: &[Tensor],
    grid: Option<TokenGrid>,
) -> Result<LayerIndicators, ProbeError> {
    let shape_error = |what: &str, e: ndarray::ShapeError| ProbeError::Maps {
        layer,
        message: format!("{what}: {e}"),
    };
    let first = |t: &Tensor, what: &str| -> Result<Array3<f32>, ProbeError> {
        to_array(&t.f_get(0)?)
            .into_dimensionality::<Ix3>()
            .map_err(|e| shape_error(what, e))
    };
    let attention = first(&maps.probabilities, "probabilities")?;
    let queries = first(&maps.queries, "queries")?;
    let keys = first(&maps.keys, "keys")?;
    let sigma: Option<Array2<f32>> = match &maps.sigma {
        Some(s) => Some(
            to_array(s)
                .into_dimensionality::<Ix2>()
                .map_err(|e| shape_error("sigma", e))?,
        ),
        None => None,
    };
    let input_maps = input_maps
        .iter()
        .map(|t| first(t, "perturbed probabilities"))
        .collect::<Result<Vec<_>, _>>()?;
    let sigma_maps = sigma_maps
        .iter()
        .map(|t| first(t, "sigma-perturbed probabilities"))
        .collect::<Result<Vec<_>, _>>()?;

    let heads: Vec<HeadInput<'_, f32>> = (0..attention.len_of(Axis(0)))
        .map(|h| {
            let a = attention.index_axis(Axis(0), h);
            let q = queries.index_axis(Axis(0), h);
            let k = keys.index_axis(Axis(0), h);
            let input = match &sigma {
                Some(s) => HeadInput::svda(a, s.row(h), q, k),
                None => HeadInput::standard(a, q, k),
            };
            let input = input
                .with_perturbed_input(head_maps(&input_maps, h))
                .with_perturbed_sigma(head_maps(&sigma_maps, h));
            match grid {
                Some(grid) => input.with_grid(grid),
                None => input,
            }
        })
        .collect();
    Ok(compute_layer(layer, &heads)?)
}

/// Head `h` of each perturbed map.
fn head_maps(maps: &[Array3<f32>], h: usize) -> Vec<ndarray::ArrayView2<'_, f32>> {
    maps.iter().map(|m| m.index_axis(Axis(0), h)).collect()
}

/// Per layer and head, the mean of the indicators over the probe images.
fn average_over_images(
    per_image: Vec<Vec<LayerIndicators>>,
) -> Result<Vec<LayerIndicators>, ProbeError> {
    let mut images = per_image.into_iter();
    let first = images.next().unwrap_or_default();
    let rest: Vec<Vec<LayerIndicators>> = images.collect();
    if rest.is_empty() {
        return Ok(first);
    }
    first
        .into_iter()
        .enumerate()
        .map(|(l, layer)| {
            let heads = layer
                .heads
                .iter()
                .enumerate()
                .map(|(h, head)| {
                    let mut values: Vec<Indicators> = vec![head.indicators];
                    values.extend(rest.iter().map(|image| image[l].heads[h].indicators));
                    HeadIndicators {
                        head: head.head,
                        kind: head.kind,
                        indicators: Indicators::mean(&values).expect("at least one image"),
                    }
                })
                .collect();
            Ok(LayerIndicators::from_heads(layer.layer, heads)?)
        })
        .collect()
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (fields 14 and 15,
/// in USER_HZ = 100 ticks per second on Linux); `None` where that file does not exist.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One query's attention over the patch tokens (the last gh * gw keys), as a gh x gw map scaled
/// to a maximum of 1: what the overlays and `glassbox predict` draw.
pub fn patch_heat(keys: ndarray::ArrayView1<f32>, (gh, gw): (usize, usize)) -> Array2<f32> {
    let patches = keys.slice(ndarray::s![keys.len() - gh * gw..]);
    let max = patches.fold(f32::MIN_POSITIVE, |m, &v| m.max(v));
    Array2::from_shape_fn((gh, gw), |(i, j)| patches[i * gw + j] / max)
}

/// What the overlays of one probe give: the per-step figure, the strip layer's column and the
/// image both are drawn over.
struct Overlays {
    figure: RgbImage,
    strip: StripColumn,
    image: RgbImage,
}

/// The attention overlays of `points` on one image (1 x 3 x H x W) from its clean maps, and the
/// heat maps of `strip_layer` (1-based) for the over-training strip.
fn attention_overlays(
    image: &Tensor,
    maps: &[AttentionMaps],
    (gh, gw): (usize, usize),
    points: &[(f64, f64)],
    step: u64,
    strip_layer: usize,
) -> Result<Overlays, ProbeError> {
    let rgb = to_array(&image.f_get(0)?)
        .into_dimensionality::<Ix3>()
        .map_err(|e| ProbeError::Maps {
            layer: 0,
            message: format!("probe image: {e}"),
        })?;
    let base = rgb_image(rgb.view());
    let mut rows: Vec<Vec<RgbImage>> = points.iter().map(|_| Vec::new()).collect();
    let mut row_titles = Vec::with_capacity(points.len());
    let mut strip = StripColumn {
        step,
        layer: strip_layer,
        grid: (gh, gw),
        queries: Vec::with_capacity(points.len()),
    };
    for (layer, map) in maps.iter().enumerate() {
        // Mean over heads: H x N x N -> N x N.
        let mean = to_array(
            &map.probabilities
                .f_get(0)?
                .f_mean_dim(0, false, Kind::Float)?,
        )
        .into_dimensionality::<Ix2>()
        .map_err(|e| ProbeError::Maps {
            layer,
            message: format!("mean attention: {e}"),
        })?;
        let tokens = mean.nrows();
        let prefix = cls_prefix(tokens, (gh, gw)).ok_or_else(|| ProbeError::Maps {
            layer,
            message: format!("{tokens} tokens do not hold the {gh} x {gw} patch grid"),
        })?;
        for ((py, px), row) in points.iter().zip(rows.iter_mut()) {
            let (r, c) = patch_at(*py, *px, gh, gw);
            let token = prefix + r * gw + c;
            if layer == 0 {
                row.push(mark_patch(&base, r, c, gh, gw));
                row_titles.push(query_title(token, (r, c)));
            }
            let heat = patch_heat(mean.row(token), (gh, gw));
            row.push(overlay(&base, heat.view(), 0.6));
            if layer + 1 == strip_layer {
                // Three decimals are finer than the colour map's 256 levels and keep the log of
                // a long dpt-base run (24 x 24 patches, three queries) at a few kB per probe.
                strip.queries.push(QueryHeat {
                    token,
                    patch: (r, c),
                    heat: heat.iter().map(|v| (v * 1000.0).round() / 1000.0).collect(),
                });
            }
        }
    }
    // Layers are numbered from 1, as in the logs, the hooks and `--attention-layer`.
    let column_titles: Vec<String> = std::iter::once("query patch (white frame)".to_string())
        .chain((1..=maps.len()).map(|l| format!("layer {l}")))
        .collect();
    let title = format!(
        "step {step}: attention of the framed query patch over the patches, mean over heads"
    );
    let figure = TitledGrid {
        title: &title,
        column_titles: &column_titles,
        row_titles: &row_titles,
        rows: &rows,
        min_tile: ATTENTION_TILE,
        bar: ATTENTION_BAR,
    }
    .render()
    .map_err(Box::new)?;
    Ok(Overlays {
        figure,
        strip,
        image: base,
    })
}

/// How many prefix tokens (CLS) come before the gh x gw patch tokens among `tokens`, if the
/// grid fits.
fn cls_prefix(tokens: usize, (gh, gw): (usize, usize)) -> Option<usize> {
    (gh > 0 && gw > 0)
        .then(|| tokens.checked_sub(gh * gw))
        .flatten()
}

/// The patch under a point given as fractions of the image.
fn patch_at(py: f64, px: f64, gh: usize, gw: usize) -> (usize, usize) {
    let cell = |f: f64, n: usize| ((f.clamp(0.0, 1.0) * n as f64) as usize).min(n - 1);
    (cell(py, gh), cell(px, gw))
}

/// The input image with a white frame around the query patch.
fn mark_patch(base: &RgbImage, r: usize, c: usize, gh: usize, gw: usize) -> RgbImage {
    let mut img = base.clone();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (y0, y1) = (r * h / gh, ((r + 1) * h / gh).min(h) - 1);
    let (x0, x1) = (c * w / gw, ((c + 1) * w / gw).min(w) - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if y == y0 || y == y1 || x == x0 || x == x1 {
                img.put_pixel(x as u32, y as u32, Rgb([255, 255, 255]));
            }
        }
    }
    img
}

/// Identifies one noise tensor: (seed, image, stream, draw); stream 0 is the input noise,
/// stream 1 + l the sigma noise of block l.
#[derive(Debug, Clone, Copy)]
struct NoiseKey(u64);

impl NoiseKey {
    fn new(seed: u64, image: u64, stream: u64, draw: u64) -> Self {
        Self(derive_seed(derive_seed(seed, image, stream), draw, 0))
    }
}

/// A CPU tensor of `shape` with N(0, std^2) entries (Box-Muller on counter-based uniforms).
fn normal_tensor(shape: &[i64], std: f64, key: NoiseKey) -> Result<Tensor, ProbeError> {
    let n: i64 = shape.iter().product();
    let mut counter = 0u64;
    let mut uniform = || {
        counter += 1;
        let bits = derive_seed(key.0, counter, 1);
        ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut values = Vec::with_capacity(n as usize + 1);
    while values.len() < n as usize {
        let (u, v) = (uniform(), uniform());
        let radius = (-2.0 * u.ln()).sqrt() * std;
        let angle = std::f64::consts::TAU * v;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(n as usize);
    Ok(Tensor::from_slice(&values).f_reshape(shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_has_the_asked_spread() {
        let key = NoiseKey::new(7, 0, 0, 1);
        let a = normal_tensor(&[4, 1000], 0.01, key).unwrap();
        let b = normal_tensor(&[4, 1000], 0.01, key).unwrap();
        assert!(a.equal(&b));
        let std = a.std(true).double_value(&[]);
        let mean = a.mean(Kind::Float).double_value(&[]);
        assert!((std - 0.01).abs() < 0.0005, "std {std}");
        assert!(mean.abs() < 0.0005, "mean {mean}");
        let other = normal_tensor(&[4, 1000], 0.01, NoiseKey::new(7, 0, 0, 2)).unwrap();
        assert!(!a.equal(&other), "another draw gives other noise");
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu_time();
        if cfg!(target_os = "linux") {
            assert!(before.is_some(), "/proc/self/stat is readable on Linux");
        }
        let Some(before) = before else { return };
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = derive_seed(x, 1, 2);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time().unwrap() >= before);
    }

    #[test]
    fn grid_leaves_the_cls_token_as_prefix() {
        assert_eq!(cls_prefix(577, (24, 24)), Some(1));
        assert_eq!(cls_prefix(1 + 4 * 6, (4, 6)), Some(1));
        assert_eq!(cls_prefix(3, (4, 4)), None);
    }

    /// A strip column of `queries` queries on a 2 x 2 grid, all weight on patch `hot`.
    fn column(step: u64, layer: usize, queries: usize, hot: usize) -> StripColumn {
        StripColumn {
            step,
            layer,
            grid: (2, 2),
            queries: (0..queries)
                .map(|q| QueryHeat {
                    token: 1 + q,
                    patch: (q / 2 % 2, q % 2),
                    heat: (0..4).map(|i| if i == hot { 1.0 } else { 0.0 }).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_strip_has_a_column_per_probe_step_after_the_query_column() {
        // 16 x 16 tiles are enlarged 6x to 96 px; TitledGrid's layout: 150 px of row titles,
        // 10 px gaps, the bar (14 + 62 + 50 px), a 26 px title and a 34 px header.
        let image = RgbImage::from_pixel(16, 16, Rgb([90, 90, 90]));
        let width = |steps: u64| {
            let columns: Vec<StripColumn> = (0..steps).map(|s| column(s * 10, 4, 3, 0)).collect();
            let strip = over_training_strip(&image, &columns).unwrap();
            assert_eq!(strip.height(), 26 + 34 + 3 * (96 + 10), "a row per query");
            strip.width()
        };
        assert_eq!(width(1), 150 + 2 * (96 + 10) + 14 + 62 + 50);
        assert_eq!(width(3), width(2) + 96 + 10);
        // A long run shows STRIP_STEPS of its probes, the first and the last among them.
        assert_eq!(width(40), width(STRIP_STEPS as u64));
        let picked = strip_steps(40);
        assert_eq!(picked.len(), STRIP_STEPS);
        assert_eq!((picked[0], picked[STRIP_STEPS - 1]), (0, 39));
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
        // A column of another grid or query count is left out, not drawn wrongly.
        let mut odd = column(5, 4, 2, 1);
        odd.grid = (1, 4);
        let mixed = [column(0, 4, 3, 0), odd, column(10, 4, 3, 3)];
        let strip = over_training_strip(&image, &mixed).unwrap();
        assert_eq!(strip.width(), width(2));
        assert!(over_training_strip(&image, &[]).is_err());
    }

    #[test]
    fn the_strip_log_keeps_one_column_per_step_in_step_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(ATTENTION_DIR).join(OVER_TRAINING_LOG);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let line = |c: &StripColumn| serde_json::to_string(c).unwrap();
        let text = format!(
            "{}\n{}\n{{\"step\": 7, torn\n{}\n",
            line(&column(4, 2, 3, 0)),
            line(&column(0, 2, 3, 0)),
            line(&column(4, 2, 3, 2)),
        );
        std::fs::write(&log, text).unwrap();
        let columns = read_strip_log(dir.path());
        assert_eq!(columns.iter().map(|c| c.step).collect::<Vec<_>>(), [0, 4]);
        assert_eq!(
            columns[1],
            column(4, 2, 3, 2),
            "the later line of a step wins"
        );
        assert!(read_strip_log(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn points_map_to_patches_inside_the_grid() {
        assert_eq!(patch_at(0.5, 0.5, 4, 4), (2, 2));
        assert_eq!(patch_at(1.0, 0.0, 4, 6), (3, 0));
    }
}
