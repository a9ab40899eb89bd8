//! RefineNet-style feature fusion (DPT paper, section 3 "Fusion"; `docs/architecture.md`), mirroring HF
//! `DPTFeatureFusionStage`: layer j = 0 takes the deepest feature, each later layer adds one finer skip.
//!
//! FusionLayer: out = x; if skip: out = out + RCU1(skip); out = RCU2(out); bilinear x2
//! (align_corners = true); 1x1 conv F -> F. RCU(x) = x + conv3x3(relu(conv3x3(relu(x)))), with an
//! optional batch norm after each conv (then without conv bias, as HF). When a skip's spatial size
//! differs from out's (odd patch grids), the skip is resized to out's size with bilinear
//! interpolation, align_corners = false, exactly as HF does.
//!
//! HF creates `residual_layer1` in layer 0 too, where it is never called; we do not create it, so
//! `neck.fusion_stage.layers.0.residual_layer1.*` is a known-unused checkpoint tensor.

use tch::{Tensor, nn, nn::Module, nn::ModuleT};

use crate::heads::upsample2;

/// Pre-activation residual conv unit (HF `DPTPreActResidualLayer`).
#[derive(Debug)]
pub(crate) struct ResidualConvUnit {
    convolution1: nn::Conv2D,
    convolution2: nn::Conv2D,
    batch_norms: Option<(nn::BatchNorm, nn::BatchNorm)>,
}

impl ResidualConvUnit {
    pub(crate) fn new(vs: &nn::Path, channels: i64, batch_norm: bool) -> Self {
        let conv = nn::ConvConfig {
            padding: 1,
            bias: !batch_norm,
            ..Default::default()
        };
        Self {
            convolution1: nn::conv2d(vs / "convolution1", channels, channels, 3, conv),
            convolution2: nn::conv2d(vs / "convolution2", channels, channels, 3, conv),
            batch_norms: batch_norm.then(|| {
                (
                    nn::batch_norm2d(vs / "batch_norm1", channels, Default::default()),
                    nn::batch_norm2d(vs / "batch_norm2", channels, Default::default()),
                )
            }),
        }
    }

    /// The ReLU after the first conv and the residual add run in place on fresh conv / batch-norm
    /// outputs (whose backward does not read them), saving two full-size buffers per unit.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.convolution1.forward(&x.relu());
        if let Some((bn1, _)) = &self.batch_norms {
            y = bn1.forward_t(&y, train);
        }
        y = self.convolution2.forward(&y.relu_());
        if let Some((_, bn2)) = &self.batch_norms {
            y = bn2.forward_t(&y, train);
        }
        y += x;
        y
    }
}

/// One fusion layer (HF `DPTFeatureFusionLayer`); the deepest one has no skip branch.
#[derive(Debug)]
pub(crate) struct FusionLayer {
    projection: nn::Conv2D,
    residual_layer1: Option<ResidualConvUnit>,
    residual_layer2: ResidualConvUnit,
}

impl FusionLayer {
    /// `vs` is `neck.fusion_stage.layers.{j}`; `with_skip` is false only for j = 0.
    pub(crate) fn new(vs: &nn::Path, channels: i64, batch_norm: bool, with_skip: bool) -> Self {
        Self {
            projection: nn::conv2d(vs / "projection", channels, channels, 1, Default::default()),
            residual_layer1: with_skip
                .then(|| ResidualConvUnit::new(&(vs / "residual_layer1"), channels, batch_norm)),
            residual_layer2: ResidualConvUnit::new(&(vs / "residual_layer2"), channels, batch_norm),
        }
    }

    /// `skip` must be given exactly when the layer was built `with_skip`.
    pub(crate) fn forward(&self, x: &Tensor, skip: Option<&Tensor>, train: bool) -> Tensor {
        // Never in place on `x`: it is the previous level, which the decoder also returns.
        let out = match (&self.residual_layer1, skip) {
            (Some(rcu1), Some(skip)) => {
                let size = &x.size()[2..];
                let skip = if skip.size()[2..] == *size {
                    skip.shallow_clone()
                } else {
                    skip.upsample_bilinear2d(size, false, None, None)
                };
                // Float addition commutes exactly, so this equals HF's `x + rcu1(skip)`.
                let mut sum = rcu1.forward(&skip, train);
                sum += x;
                sum
            }
            _ => x.shallow_clone(),
        };
        let out = self.residual_layer2.forward(&out, train);
        self.projection.forward(&upsample2(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn::VarStore};

    #[test]
    fn residual_conv_unit_is_identity_when_its_convs_are_zero() {
        let vs = VarStore::new(Device::Cpu);
        let rcu = ResidualConvUnit::new(&vs.root(), 3, false);
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let _ = v.zero_();
            }
        });
        let x = Tensor::randn([1, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert!(rcu.forward(&x, false).equal(&x));
    }

    #[test]
    fn residual_conv_unit_with_batch_norm_has_no_conv_bias() {
        let vs = VarStore::new(Device::Cpu);
        let _ = ResidualConvUnit::new(&vs.root(), 3, true);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "batch_norm1.bias",
                "batch_norm1.running_mean",
                "batch_norm1.running_var",
                "batch_norm1.weight",
                "batch_norm2.bias",
                "batch_norm2.running_mean",
                "batch_norm2.running_var",
                "batch_norm2.weight",
                "convolution1.weight",
                "convolution2.weight",
            ]
        );
    }

    #[test]
    fn fusion_layer_doubles_the_size_and_resizes_a_mismatched_skip() {
        let vs = VarStore::new(Device::Cpu);
        let layer = FusionLayer::new(&vs.root(), 4, false, true);
        let x = Tensor::randn([2, 4, 2, 3], (Kind::Float, Device::Cpu));
        let odd_skip = Tensor::randn([2, 4, 3, 5], (Kind::Float, Device::Cpu));
        assert_eq!(
            layer.forward(&x, Some(&odd_skip), false).size(),
            [2, 4, 4, 6]
        );
    }

    #[test]
    fn fusion_layer_leaves_its_inputs_untouched() {
        let vs = VarStore::new(Device::Cpu);
        let layer = FusionLayer::new(&vs.root(), 4, false, true);
        let x = Tensor::randn([1, 4, 3, 3], (Kind::Float, Device::Cpu));
        let skip = Tensor::randn([1, 4, 3, 3], (Kind::Float, Device::Cpu));
        let (x_before, skip_before) = (x.copy(), skip.copy());
        let _ = layer.forward(&x, Some(&skip), false);
        assert!(x.equal(&x_before) && skip.equal(&skip_before));
    }

    #[test]
    fn deepest_fusion_layer_has_no_skip_branch() {
        let vs = VarStore::new(Device::Cpu);
        let layer = FusionLayer::new(&vs.root(), 4, false, false);
        assert!(
            vs.variables()
                .keys()
                .all(|k| !k.starts_with("residual_layer1"))
        );
        let x = Tensor::randn([1, 4, 3, 2], (Kind::Float, Device::Cpu));
        assert_eq!(layer.forward(&x, None, false).size(), [1, 4, 6, 4]);
    }
}
