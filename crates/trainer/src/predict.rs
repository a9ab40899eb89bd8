//! Inference on image files (`docs/training.md`, `cargo xtask predict`): a checkpoint's run
//! folder holds its `config.toml`, so the model is rebuilt from it; each image gets a colour-mapped
//! depth PNG and optionally a 16-bit depth PNG (depth models), or its class ids as an 8-bit PNG and
//! a colour label map with a legend (segmentation models), and optionally an attention map of one
//! layer and query token (from the encoder's `forward_with_maps`) blended over the image.
//!
//! The model predicts relative depth, so the 16-bit PNG holds depth scaled to a median of 1 m
//! (value / 1000 = depth in those units), clipped to the 16-bit range. Layers are numbered from 1
//! (as hooks, logs and figures number them); tokens as in the encoder's sequence: 0 is the
//! readout token, 1.. are patches in row-major order.

use std::path::{Path, PathBuf};

use glassbox_data::Sample;
use glassbox_data::colormap::{colorize_depth, rgb_image};
use glassbox_dpt::{Dpt, DptError};
use glassbox_encoder::EncoderOutput;
use ndarray::Array2;
use tch::{Device, Kind, nn};

use crate::checkpoint;
use crate::config::{Task, TrainConfig};
use crate::eval;
use crate::report;
use crate::tensor::to_array;

/// Everything that stops a prediction.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Weights(Box<crate::weights::WeightsError>),
    #[error(
        "checkpoint {0} does not exist (a run folder holds last.safetensors and best.safetensors; \
         an HF folder config.json and model.safetensors)"
    )]
    Missing(PathBuf),
    #[error(
        "{path} is {width} x {height} pixels, smaller than one {patch}-pixel patch of the model on \
         a side: there is nothing to predict from"
    )]
    TooSmall {
        path: PathBuf,
        width: usize,
        height: usize,
        patch: usize,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] DptError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
    #[error("cannot create {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("attention layer {layer} does not exist: the encoder has layers 1 to {layers}")]
    Layer { layer: usize, layers: usize },
    #[error("cannot draw {path}: {message}")]
    Picture { path: PathBuf, message: String },
    #[error("token {token} does not exist: the image has {tokens} tokens (0 = readout)")]
    Token { token: usize, tokens: usize },
}

/// A model rebuilt from a checkpoint and its run folder's configuration.
pub struct LoadedModel {
    pub config: TrainConfig,
    pub vs: nn::VarStore,
    pub model: Dpt,
}

impl From<crate::weights::WeightsError> for PredictError {
    fn from(e: crate::weights::WeightsError) -> Self {
        Self::Weights(Box::new(e))
    }
}

/// Rebuilds the model of `checkpoint` and loads its weights: a run checkpoint
/// (`<run>/<name>.safetensors` beside `<run>/config.toml`), a `glassbox export` file or an HF
/// folder ([`crate::weights::ModelFile`]).
pub fn load_checkpoint(checkpoint: &Path, device: Device) -> Result<LoadedModel, PredictError> {
    if !checkpoint.exists() {
        return Err(PredictError::Missing(checkpoint.into()));
    }
    let file = crate::weights::ModelFile::open(checkpoint)?;
    let config = file.train_config()?;
    let mut vs = nn::VarStore::new(device);
    let model = Dpt::new(&vs.root(), &config.model)?;
    file.load(&mut vs)?;
    Ok(LoadedModel { config, vs, model })
}

/// What to write for each image.
#[derive(Clone, Debug, Default)]
pub struct PredictOptions {
    /// Also write `<stem>_depth16.png`.
    pub depth16: bool,
    /// Also write the attention map of (layer, query token), layer 1-based.
    pub attention: Option<(usize, usize)>,
}

/// The keep ratio a checkpoint predicts at: `keep_ratio` when given (1 = dense), else the one it
/// was trained with. A ratio below 1 needs a checkpoint trained sparse (it has the scorer).
pub fn set_keep_ratio(loaded: &mut LoadedModel, keep_ratio: f64) -> Result<(), PredictError> {
    loaded.model.set_keep_ratio(keep_ratio)?;
    Ok(())
}

/// Predicts every image and writes its PNGs into `out_dir`; returns the files written.
pub fn predict_files(
    loaded: &LoadedModel,
    images: &[PathBuf],
    out_dir: &Path,
    options: &PredictOptions,
    device: Device,
) -> Result<Vec<PathBuf>, PredictError> {
    std::fs::create_dir_all(out_dir).map_err(|e| PredictError::Io {
        path: out_dir.into(),
        message: e.to_string(),
    })?;
    let short_side = loaded.config.data.image_size[0].min(loaded.config.data.image_size[1]);
    let mut written = Vec::new();
    for path in images {
        let rgb = glassbox_data::io::read_rgb(path)?;
        let (_, h, w) = rgb.dim();
        let patch = loaded.config.model.encoder.patch_size as usize;
        if h < patch || w < patch {
            return Err(PredictError::TooSmall {
                path: path.clone(),
                width: w,
                height: h,
                patch,
            });
        }
        let stem = path
            .file_stem()
            .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
        let sample = Sample::from_depth(stem.clone(), rgb, Array2::zeros((h, w)), None)?;
        if loaded.config.task() == Task::Segmentation {
            written.extend(write_classes(loaded, &sample, short_side, device, out_dir)?);
        } else {
            written.extend(write_depth(
                loaded, &sample, short_side, device, out_dir, options,
            )?);
        }
        if let Some(kept) = kept_tokens(&loaded.model, &sample, short_side, device)? {
            let out = out_dir.join(format!("{stem}_kept.png"));
            let picture = report::kept_tokens_picture(
                &rgb_image(sample.rgb.view()),
                kept.view(),
                loaded.model.encoder().keep_ratio(),
            )
            .map_err(|e| PredictError::Picture {
                path: out.clone(),
                message: e.to_string(),
            })?;
            glassbox_data::io::write_png(&out, &picture)?;
            written.push(out);
        }
        if let Some((layer, token)) = options.attention {
            let heat = attention_map(&loaded.model, &sample, short_side, device, layer, token)?;
            let out = out_dir.join(format!("{stem}_attn_l{layer}_t{token}.png"));
            let picture = report::overlay(&rgb_image(sample.rgb.view()), heat.view(), 0.6);
            glassbox_data::io::write_png(&out, &picture)?;
            written.push(out);
        }
    }
    Ok(written)
}

/// A segmentation model's outputs for one image: `<stem>_labels.png` (8-bit class ids, the
/// format label PNGs are read in) and `<stem>_classes.png` (colours with a legend naming each
/// class shown).
fn write_classes(
    loaded: &LoadedModel,
    sample: &Sample,
    short_side: usize,
    device: Device,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, PredictError> {
    let stem = &sample.name;
    let classes = eval::predict_classes_full_resolution(&loaded.model, sample, short_side, device)?;
    let classes = report::class_map_u8(classes.view());
    let ids = out_dir.join(format!("{stem}_labels.png"));
    glassbox_data::io::write_labels_png(&ids, classes.view())?;
    let picture = out_dir.join(format!("{stem}_classes.png"));
    let legend = report::label_map_with_legend(classes.view(), &loaded.config.class_names())
        .map_err(|e| PredictError::Picture {
            path: picture.clone(),
            message: e.to_string(),
        })?;
    glassbox_data::io::write_png(&picture, &legend)?;
    Ok(vec![ids, picture])
}

/// A depth model's outputs for one image: the colour-mapped depth and, if asked, the 16-bit PNG.
fn write_depth(
    loaded: &LoadedModel,
    sample: &Sample,
    short_side: usize,
    device: Device,
    out_dir: &Path,
    options: &PredictOptions,
) -> Result<Vec<PathBuf>, PredictError> {
    let (stem, (h, w)) = (&sample.name, (sample.height(), sample.width()));
    let disparity = eval::predict_full_resolution(
        &loaded.model,
        loaded.config.output_map().as_ref(),
        sample,
        short_side,
        device,
    )?;
    let mut depth = disparity.mapv(|d| 1.0 / d.max(1e-6));
    let mut sorted: Vec<f32> = depth.iter().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2].max(1e-12);
    depth.mapv_inplace(|d| d / median);
    let out = out_dir.join(format!("{stem}_depth.png"));
    glassbox_data::io::write_png(&out, &colorize_depth(depth.view(), None, None))?;
    let mut written = vec![out];
    if options.depth16 {
        let out = out_dir.join(format!("{stem}_depth16.png"));
        let clipped = depth.mapv(|d| d.min(65.0));
        let mask = Array2::from_elem((h, w), true);
        glassbox_data::io::write_depth_png(&out, clipped.view(), mask.view(), 1e-3)?;
        written.push(out);
    }
    Ok(written)
}

/// Which patch tokens a sparse encoder keeps for the image (its patch grid, true = updated);
/// `None` for a dense pass.
pub fn kept_tokens(
    model: &Dpt,
    sample: &Sample,
    short_side: usize,
    device: Device,
) -> Result<Option<ndarray::Array2<bool>>, PredictError> {
    let input = eval::model_input(model, sample, short_side, device);
    let out = tch::no_grad(|| model.encoder().forward_t(&input, false)).map_err(DptError::from)?;
    let Some(saliency) = out.saliency else {
        return Ok(None);
    };
    let (gh, gw) = (out.grid.0 as usize, out.grid.1 as usize);
    let mask = to_array(
        &saliency
            .patch_mask()
            .get(0)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu),
    );
    let mask = mask.as_slice().expect("a fresh array is contiguous");
    Ok(Some(ndarray::Array2::from_shape_fn((gh, gw), |(y, x)| {
        mask[y * gw + x] > 0.5
    })))
}

/// The attention of query `token` in `layer` (1-based), averaged over heads, over the patch grid, scaled
/// to a maximum of 1.
pub fn attention_map(
    model: &Dpt,
    sample: &Sample,
    short_side: usize,
    device: Device,
    layer: usize,
    token: usize,
) -> Result<Array2<f32>, PredictError> {
    let input = eval::model_input(model, sample, short_side, device);
    let EncoderOutput { maps, grid, .. } =
        tch::no_grad(|| model.encoder().forward_with_maps(&input)).map_err(DptError::from)?;
    let layers = maps.len();
    let map = layer
        .checked_sub(1)
        .and_then(|i| maps.get(i))
        .ok_or(PredictError::Layer { layer, layers })?;
    let probs = &map.probabilities; // 1 x H x N x N
    let tokens = probs.size()[2] as usize;
    if token >= tokens {
        return Err(PredictError::Token { token, tokens });
    }
    let (gh, gw) = (grid.0 as usize, grid.1 as usize);
    let row = probs
        .get(0)
        .mean_dim(0, false, Kind::Float)
        .get(token as i64)
        .to_device(Device::Cpu);
    let keys = to_array(&row);
    let keys = keys.as_slice().expect("a fresh array is contiguous");
    Ok(crate::probe::patch_heat(
        ndarray::ArrayView1::from(keys),
        (gh, gw),
    ))
}
