//! The ResNet stem of DPT-Hybrid (`docs/architecture.md`, "DPT-Hybrid"): BiT's ResNet with
//! GroupNorm and weight-standardised convolutions, in the non-pre-activation form ("bottleneck",
//! ResNet v1.5 with the stride on the 3x3 convolution) that HF's `BitBackbone` builds for DPT and
//! timm's `vit_base_r50_s16_384` uses. Three stages at strides 4, 8 and 16: the first two feed
//! the decoder directly (R0, R1), the last is projected to the ViT's tokens.
//!
//! Variable names are timm's `ResNetV2` (`stem.conv`, `stem.norm`,
//! `stages.{s}.blocks.{b}.{downsample.conv, downsample.norm, conv1, norm1, conv2, norm2, conv3,
//! norm3}`); HF's `bit.embedder.*` and `bit.encoder.stages.{s}.layers.{b}.*` map onto them in
//! [`crate::checkpoint`].

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module};

use crate::EncoderError;

/// Widths and depths of the ResNet stem; the presets are BiT's R50 (DPT-Hybrid) and a small one
/// for CPU runs. Every convolution is weight-standardised and every norm a GroupNorm of
/// `num_groups` groups, so batch size never changes what the stem computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitConfig {
    /// Channels of the 7x7 stride-2 stem convolution.
    pub embedding_size: i64,
    /// Output channels of the three stages (R0, R1 and the stride-16 map the tokens come from).
    pub hidden_sizes: Vec<i64>,
    /// Bottleneck blocks per stage.
    pub depths: Vec<usize>,
    /// GroupNorm groups; must divide every channel count of the stem (the error names the layer).
    pub num_groups: i64,
}

/// Strides of the three stage outputs relative to the image.
pub const STAGE_STRIDES: [i64; 3] = [4, 8, 16];

/// Weight standardisation's eps: BiT's 1e-8 (inside the square root).
const WS_EPS: f64 = 1e-8;
/// GroupNorm's eps.
const GN_EPS: f64 = 1e-5;

impl BitConfig {
    /// BiT R50's first three stages (depths 3, 4, 9; 256, 512 and 1024 channels; 32 groups), the
    /// stem of the published DPT-Hybrid.
    pub fn resnet50() -> Self {
        Self {
            embedding_size: 64,
            hidden_sizes: vec![256, 512, 1024],
            depths: vec![3, 4, 9],
            num_groups: 32,
        }
    }

    /// A small stem for CPU runs and the backbone ablation: widths 48, 96 and 192 (dpt-tiny's
    /// first two reassemble widths), one, one and two blocks, 8 groups.
    pub fn tiny() -> Self {
        Self {
            embedding_size: 32,
            hidden_sizes: vec![48, 96, 192],
            depths: vec![1, 1, 2],
            num_groups: 8,
        }
    }

    /// Bottleneck width of a stage of `out` channels: a quarter, rounded to a multiple of 8 as
    /// BiT (and timm's `make_div`) round it.
    pub fn bottleneck_width(out: i64) -> i64 {
        let quarter = out as f64 * 0.25;
        let mut width = (8).max((quarter + 4.0) as i64 / 8 * 8);
        if (width as f64) < 0.9 * quarter {
            width += 8;
        }
        width
    }

    /// Checks the numbers before any tensor is made; every message names the field and value.
    pub fn validate(&self) -> Result<(), EncoderError> {
        let bad = |msg: String| Err(EncoderError::InvalidConfig(msg));
        if self.hidden_sizes.len() != 3 || self.depths.len() != 3 {
            return bad(format!(
                "backbone.hidden_sizes {:?} and backbone.depths {:?} must each have 3 entries \
                 (the stages at strides 4, 8 and 16)",
                self.hidden_sizes, self.depths
            ));
        }
        if self.depths.contains(&0) {
            return bad(format!(
                "backbone.depths {:?} must be positive",
                self.depths
            ));
        }
        if self.num_groups < 1 {
            return bad(format!(
                "backbone.num_groups must be positive, got {}",
                self.num_groups
            ));
        }
        let mut channels = vec![("backbone.embedding_size", self.embedding_size)];
        for &c in &self.hidden_sizes {
            channels.push(("backbone.hidden_sizes", c));
            channels.push((
                "the bottleneck width of backbone.hidden_sizes",
                Self::bottleneck_width(c),
            ));
        }
        for (field, c) in channels {
            if c < 1 || c % self.num_groups != 0 {
                return bad(format!(
                    "backbone.num_groups {} must divide every channel count, and {field} gives {c}",
                    self.num_groups
                ));
            }
        }
        Ok(())
    }

    /// Multiply-accumulates of one image of h x w pixels (multiples of 16) through the stem.
    pub fn macs(&self, (h, w): (i64, i64)) -> f64 {
        let conv = |hw: (i64, i64), cin: i64, cout: i64, k: i64| {
            (hw.0 * hw.1) as f64 * (cin * cout * k * k) as f64
        };
        let mut total = conv((h / 2, w / 2), 3, self.embedding_size, 7);
        let mut cin = self.embedding_size;
        for (s, (&out, &depth)) in self.hidden_sizes.iter().zip(&self.depths).enumerate() {
            let hw = (h / STAGE_STRIDES[s], w / STAGE_STRIDES[s]);
            let mid = Self::bottleneck_width(out);
            for b in 0..depth {
                // The first block's 1x1 reads the stage input at the previous resolution.
                let hw_in = if b == 0 && s > 0 {
                    (2 * hw.0, 2 * hw.1)
                } else {
                    hw
                };
                total += conv(hw_in, cin, mid, 1) + conv(hw, mid, mid, 3) + conv(hw, mid, out, 1);
                if b == 0 {
                    total += conv(hw, cin, out, 1);
                }
                cin = out;
            }
        }
        total
    }
}

/// TensorFlow's SAME padding (before, after) of one side: the output has ceil(size / stride)
/// positions, and an odd total puts the extra pixel after.
fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let total = (((size + stride - 1) / stride - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// Pads `x` for SAME output with `kernel` and `stride`; returns the padded input and the
/// symmetric padding left for the operator itself (so that stride-1 layers need no copy).
fn pad_same(x: &Tensor, kernel: i64, stride: i64) -> (Tensor, [i64; 2]) {
    let size = x.size();
    let (top, bottom) = same_padding(size[2], kernel, stride);
    let (left, right) = same_padding(size[3], kernel, stride);
    if top == bottom && left == right {
        (x.shallow_clone(), [top, left])
    } else {
        (x.constant_pad_nd([left, right, top, bottom]), [0, 0])
    }
}

/// A convolution whose weight is standardised per output channel before use (zero mean, unit
/// biased variance over its fan-in, eps 1e-8 inside the root), with SAME padding and no bias.
#[derive(Debug)]
pub struct StdConv2d {
    weight: Tensor,
    stride: i64,
}

impl StdConv2d {
    fn new(path: &nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64) -> Self {
        let init = nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        };
        Self {
            weight: path.var("weight", &[cout, cin, kernel, kernel], init),
            stride,
        }
    }

    /// The standardised weight `(w - mean) / sqrt(var + eps)`, statistics over each output
    /// channel's `cin * k * k` values.
    pub fn standardised_weight(weight: &Tensor) -> Tensor {
        let shape = weight.size();
        let flat = weight.reshape([shape[0], -1]);
        let (var, mean) = flat.var_mean_correction(Some(&[1i64][..]), 0, true);
        ((flat - mean) / (var + WS_EPS).sqrt()).reshape(shape)
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.weight.size()[2];
        let (x, padding) = pad_same(x, k, self.stride);
        x.conv2d(
            &Self::standardised_weight(&self.weight),
            None::<Tensor>,
            [self.stride, self.stride],
            padding,
            [1, 1],
            1,
        )
    }
}

fn group_norm(path: &nn::Path, groups: i64, channels: i64) -> nn::GroupNorm {
    let config = nn::GroupNormConfig {
        eps: GN_EPS,
        ..Default::default()
    };
    nn::group_norm(path, groups, channels, config)
}

/// A bottleneck block: 1x1 -> GN+ReLU -> 3x3 (stride) -> GN+ReLU -> 1x1 -> GN, plus the shortcut
/// (a standardised 1x1 and GN on the first block of a stage), then ReLU.
#[derive(Debug)]
struct Bottleneck {
    downsample: Option<(StdConv2d, nn::GroupNorm)>,
    conv1: StdConv2d,
    norm1: nn::GroupNorm,
    conv2: StdConv2d,
    norm2: nn::GroupNorm,
    conv3: StdConv2d,
    norm3: nn::GroupNorm,
}

impl Bottleneck {
    fn new(path: &nn::Path, groups: i64, cin: i64, cout: i64, stride: i64, first: bool) -> Self {
        let mid = BitConfig::bottleneck_width(cout);
        let downsample = first.then(|| {
            (
                StdConv2d::new(&(path / "downsample" / "conv"), cin, cout, 1, stride),
                group_norm(&(path / "downsample" / "norm"), groups, cout),
            )
        });
        Self {
            downsample,
            conv1: StdConv2d::new(&(path / "conv1"), cin, mid, 1, 1),
            norm1: group_norm(&(path / "norm1"), groups, mid),
            conv2: StdConv2d::new(&(path / "conv2"), mid, mid, 3, stride),
            norm2: group_norm(&(path / "norm2"), groups, mid),
            conv3: StdConv2d::new(&(path / "conv3"), mid, cout, 1, 1),
            norm3: group_norm(&(path / "norm3"), groups, cout),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let shortcut = match &self.downsample {
            Some((conv, norm)) => norm.forward(&conv.forward(x)),
            None => x.shallow_clone(),
        };
        let y = self.norm1.forward(&self.conv1.forward(x)).relu();
        let y = self.norm2.forward(&self.conv2.forward(&y)).relu();
        let y = self.norm3.forward(&self.conv3.forward(&y));
        (y + shortcut).relu()
    }
}

/// The ResNet stem: 7x7 stride-2 standardised convolution, GN+ReLU, 3x3 stride-2 max pool (SAME,
/// zero padding), then three stages at strides 4, 8 and 16.
#[derive(Debug)]
pub struct ResNetStem {
    conv: StdConv2d,
    norm: nn::GroupNorm,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNetStem {
    /// Creates the stem's parameters under `path` (the encoder's `patch_embed.backbone`).
    pub fn new(
        path: &nn::Path,
        config: &BitConfig,
        num_channels: i64,
    ) -> Result<Self, EncoderError> {
        config.validate()?;
        let g = config.num_groups;
        let stem = path / "stem";
        let conv = StdConv2d::new(&(&stem / "conv"), num_channels, config.embedding_size, 7, 2);
        let norm = group_norm(&(&stem / "norm"), g, config.embedding_size);
        let mut cin = config.embedding_size;
        let mut stages = Vec::with_capacity(3);
        for (s, (&cout, &depth)) in config.hidden_sizes.iter().zip(&config.depths).enumerate() {
            let stride = if s == 0 { 1 } else { 2 };
            let blocks = (0..depth)
                .map(|b| {
                    let block_path = path / "stages" / s / "blocks" / b;
                    let block_stride = if b == 0 { stride } else { 1 };
                    let block = Bottleneck::new(&block_path, g, cin, cout, block_stride, b == 0);
                    cin = cout;
                    block
                })
                .collect();
            stages.push(blocks);
        }
        Ok(Self { conv, norm, stages })
    }

    /// The three stage outputs for images B x C x H x W (H, W multiples of 16):
    /// B x C_s x H/4 x W/4, H/8 x W/8 and H/16 x W/16.
    pub fn forward(&self, images: &Tensor) -> Vec<Tensor> {
        let x = self.norm.forward(&self.conv.forward(images)).relu();
        let (x, padding) = pad_same(&x, 3, 2);
        let mut x = x.max_pool2d([3, 3], [2, 2], padding, [1, 1], false);
        let mut outputs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x);
            }
            outputs.push(x.shallow_clone());
        }
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn same_padding_puts_the_odd_pixel_after_as_tensorflow_does() {
        assert_eq!(same_padding(64, 7, 2), (2, 3));
        assert_eq!(same_padding(65, 7, 2), (3, 3));
        assert_eq!(same_padding(32, 3, 2), (0, 1));
        assert_eq!(same_padding(5, 3, 2), (1, 1));
        assert_eq!(same_padding(10, 1, 2), (0, 0));
        assert_eq!(same_padding(10, 3, 1), (1, 1));
    }

    #[test]
    fn weight_standardisation_matches_its_formula_on_a_hand_example() {
        // One output channel with fan-in 4: mean 2.5, biased variance 1.25.
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([1, 1, 2, 2]);
        let got = Vec::<f32>::try_from(StdConv2d::standardised_weight(&w).flatten(0, -1)).unwrap();
        let s = (1.25f64 + 1e-8).sqrt();
        let expected = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
        // Channels are standardised separately: a scaled and shifted copy gives the same values.
        let two = Tensor::cat(&[&w, &(&w * 3.0 + 7.0)], 0);
        let both = StdConv2d::standardised_weight(&two);
        assert!(both.get(0).allclose(&both.get(1), 1e-5, 1e-6, false));
    }

    #[test]
    fn bottleneck_widths_round_as_bit_does() {
        assert_eq!(BitConfig::bottleneck_width(256), 64);
        assert_eq!(BitConfig::bottleneck_width(1024), 256);
        assert_eq!(BitConfig::bottleneck_width(48), 16);
        assert_eq!(BitConfig::bottleneck_width(96), 24);
        assert_eq!(BitConfig::bottleneck_width(8), 8);
    }

    #[test]
    fn groups_that_do_not_divide_a_width_are_refused_naming_the_field() {
        let mut config = BitConfig::tiny();
        config.num_groups = 5;
        let msg = config.validate().unwrap_err().to_string();
        assert!(msg.contains("backbone.num_groups 5"), "{msg}");
        assert!(msg.contains("backbone.embedding_size gives 32"), "{msg}");
        let mut config = BitConfig::tiny();
        config.hidden_sizes = vec![48, 96, 196];
        let msg = config.validate().unwrap_err().to_string();
        assert!(msg.contains("hidden_sizes gives 196"), "{msg}");
        let mut config = BitConfig::tiny();
        config.depths = vec![1, 1];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("3 entries")
        );
        BitConfig::resnet50().validate().unwrap();
    }

    #[test]
    fn stages_come_out_at_strides_4_8_16_for_non_square_odd_grids() {
        let vs = nn::VarStore::new(Device::Cpu);
        let stem = ResNetStem::new(&vs.root(), &BitConfig::tiny(), 3).unwrap();
        let out = stem.forward(&Tensor::randn([2, 3, 80, 48], (Kind::Float, Device::Cpu)));
        let shapes: Vec<Vec<i64>> = out.iter().map(Tensor::size).collect();
        assert_eq!(
            shapes,
            vec![vec![2, 48, 20, 12], vec![2, 96, 10, 6], vec![2, 192, 5, 3]]
        );
    }
}
