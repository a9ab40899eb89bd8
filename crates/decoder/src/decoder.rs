//! The DPT decoder neck (`docs/architecture.md`): four Reassemble stages, the neck convs (conv3x3
//! C_i -> F, no bias) and the RefineNet fusion stage, under the HF variable prefix `neck.`.

use tch::{Tensor, nn, nn::Module};

use crate::config::{DecoderConfig, NUM_STAGES, Resampling};

/// Stages of DPT-Hybrid's decoder that read ResNet maps instead of tokens (R0 and R1).
pub const HYBRID_FEATURE_STAGES: usize = 2;
use crate::error::{DecoderError, Result};
use crate::fusion::FusionLayer;
use crate::reassemble::Reassemble;

/// Hooked encoder tokens to fused multi-scale features; the heads read its output.
#[derive(Debug)]
pub struct Decoder {
    cfg: DecoderConfig,
    hidden_size: i64,
    /// `None` for a stage that reads a ResNet feature map as it is (DPT-Hybrid's first two).
    reassemble: Vec<Option<Reassemble>>,
    convs: Vec<nn::Conv2D>,
    fusion: Vec<FusionLayer>,
}

impl Decoder {
    /// Builds the decoder under `vs / "neck"`, where `vs` is the model root, so that variable names
    /// equal HF `DPTForDepthEstimation`'s (see the crate docs for the table).
    /// `hidden_size` is the encoder's token width D, which the decoder reads but does not own
    /// (the model config states it once, in the encoder).
    pub fn new(vs: &nn::Path, cfg: &DecoderConfig, hidden_size: i64) -> Result<Self> {
        Self::with_feature_stages(vs, cfg, hidden_size, 0)
    }

    /// DPT-Hybrid's decoder: stages 0 and 1 read the ResNet stem's R0 and R1 maps directly (HF's
    /// `Identity` reassemble layers, no readout projection), with `reassemble_channels[0..2]`
    /// their channel counts; stages 2 and 3 reassemble transformer tokens as usual.
    pub fn hybrid(vs: &nn::Path, cfg: &DecoderConfig, hidden_size: i64) -> Result<Self> {
        Self::with_feature_stages(vs, cfg, hidden_size, HYBRID_FEATURE_STAGES)
    }

    fn with_feature_stages(
        vs: &nn::Path,
        cfg: &DecoderConfig,
        hidden_size: i64,
        feature_stages: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        if hidden_size <= 0 {
            return Err(DecoderError::InvalidConfig {
                field: "hidden_size",
                value: hidden_size.to_string(),
                expected: "a positive token width",
            });
        }
        let neck = vs / "neck";
        let stage_vs = &neck / "reassemble_stage";
        let mut reassemble = Vec::with_capacity(NUM_STAGES);
        let mut convs = Vec::with_capacity(NUM_STAGES);
        let mut fusion = Vec::with_capacity(NUM_STAGES);
        for i in 0..NUM_STAGES {
            let resampling = Resampling::from_factor(cfg.reassemble_factors[i])
                .expect("validate() accepted every factor");
            let c = cfg.reassemble_channels[i];
            reassemble.push(
                (i >= feature_stages).then(|| {
                    Reassemble::new(&stage_vs, i, cfg.readout, hidden_size, c, resampling)
                }),
            );
            let conv = nn::ConvConfig {
                padding: 1,
                bias: false,
                ..Default::default()
            };
            convs.push(nn::conv2d(
                &neck / "convs" / i,
                c,
                cfg.fusion_channels,
                3,
                conv,
            ));
            let layer_vs = &neck / "fusion_stage" / "layers" / i;
            fusion.push(FusionLayer::new(
                &layer_vs,
                cfg.fusion_channels,
                cfg.fusion_batch_norm,
                i > 0,
            ));
        }
        Ok(Self {
            cfg: cfg.clone(),
            hidden_size,
            reassemble,
            convs,
            fusion,
        })
    }

    /// The configuration this decoder was built from.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Fused features of the finest level, B x F x 8h x 8w for the default factors and an even grid
    /// (half the input resolution with patch size 16): what the depth and segmentation heads read.
    pub fn forward(&self, hooks: &[Tensor], grid: (i64, i64), train: bool) -> Result<Tensor> {
        let mut levels = self.forward_levels(hooks, grid, train)?;
        Ok(levels.pop().expect("four fusion levels"))
    }

    /// All four fusion outputs in HF order: index 0 from the deepest hook (coarsest), index 3 the
    /// finest; the segmentation auxiliary head reads index 2.
    ///
    /// `hooks` are the encoder's hooked token sequences, shallowest first, each B x (1 + h*w) x D with
    /// the readout token first; `grid` is the patch grid (h, w), which need not be square. For
    /// [`Decoder::hybrid`], the first two are the ResNet maps B x C_i x 4h x 4w and 2h x 2w.
    pub fn forward_levels(
        &self,
        hooks: &[Tensor],
        grid: (i64, i64),
        train: bool,
    ) -> Result<Vec<Tensor>> {
        self.check_hooks(hooks, grid)?;
        let features: Vec<Tensor> = hooks
            .iter()
            .zip(&self.reassemble)
            .zip(&self.convs)
            .map(|((input, reassemble), conv)| match reassemble {
                Some(reassemble) => conv.forward(&reassemble.forward(input, grid)),
                None => conv.forward(input),
            })
            .collect();
        let mut fused: Vec<Tensor> = Vec::with_capacity(NUM_STAGES);
        for (feature, layer) in features.iter().rev().zip(&self.fusion) {
            let next = match fused.last() {
                None => layer.forward(feature, None, train),
                Some(previous) => layer.forward(previous, Some(feature), train),
            };
            fused.push(next);
        }
        Ok(fused)
    }

    fn check_hooks(&self, hooks: &[Tensor], (h, w): (i64, i64)) -> Result<()> {
        if hooks.len() != NUM_STAGES {
            return Err(DecoderError::HookCount {
                expected: NUM_STAGES,
                got: hooks.len(),
            });
        }
        if h < 1 || w < 1 {
            return Err(DecoderError::EmptyGrid { h, w });
        }
        let mut batch = None;
        for (hook, tokens) in hooks.iter().enumerate() {
            let shape = tokens.size();
            if self.reassemble[hook].is_none() {
                // A ResNet map at stride 4 (stage 0) or 8 (stage 1): 4x or 2x the patch grid.
                let scale = 4 >> hook;
                let (channels, height, width) =
                    (self.cfg.reassemble_channels[hook], scale * h, scale * w);
                let b = shape.first().copied().unwrap_or(0);
                if shape.len() != 4 || shape[1..] != [channels, height, width] {
                    return Err(DecoderError::FeatureMap {
                        hook,
                        channels,
                        height,
                        width,
                        shape,
                    });
                }
                match batch {
                    Some(expected) if expected != b => {
                        return Err(DecoderError::BatchSize {
                            hook,
                            expected,
                            got: b,
                        });
                    }
                    _ => batch = Some(b),
                }
                continue;
            }
            let &[b, n, d] = shape.as_slice() else {
                return Err(DecoderError::HookRank { hook, shape });
            };
            if d != self.hidden_size {
                return Err(DecoderError::HiddenSize {
                    hook,
                    expected: self.hidden_size,
                    got: d,
                    shape,
                });
            }
            if n != 1 + h * w {
                return Err(DecoderError::TokenCount {
                    hook,
                    h,
                    w,
                    expected: 1 + h * w,
                    got: n,
                });
            }
            match batch {
                None => batch = Some(b),
                Some(expected) if expected != b => {
                    return Err(DecoderError::BatchSize {
                        hook,
                        expected,
                        got: b,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Readout;
    use crate::heads::{DepthHead, SegmentationHead, SegmentationHeadConfig};
    use proptest::prelude::*;
    use tch::{Device, Kind, nn::VarStore};

    const D: i64 = 16;
    const F: i64 = 8;

    fn small(readout: Readout) -> DecoderConfig {
        DecoderConfig {
            reassemble_channels: [4, 8, 8, 8],
            reassemble_factors: [4.0, 2.0, 1.0, 0.5],
            fusion_channels: F,
            readout,
            fusion_batch_norm: false,
        }
    }

    fn hooks(b: i64, (h, w): (i64, i64)) -> Vec<Tensor> {
        (0..4)
            .map(|_| Tensor::randn([b, 1 + h * w, D], (Kind::Float, Device::Cpu)))
            .collect()
    }

    const READOUTS: [Readout; 3] = [Readout::Ignore, Readout::Add, Readout::Project];

    #[test]
    fn fusion_levels_double_from_the_deepest_for_every_readout() {
        for readout in READOUTS {
            let vs = VarStore::new(Device::Cpu);
            let decoder = Decoder::new(&vs.root(), &small(readout), D).unwrap();
            let levels = decoder
                .forward_levels(&hooks(2, (4, 6)), (4, 6), false)
                .unwrap();
            let sizes: Vec<Vec<i64>> = levels.iter().map(Tensor::size).collect();
            assert_eq!(
                sizes,
                [[2, F, 4, 6], [2, F, 8, 12], [2, F, 16, 24], [2, F, 32, 48]],
                "{readout:?}"
            );
            let last = decoder.forward(&hooks(2, (4, 6)), (4, 6), false).unwrap();
            assert_eq!(last.size(), [2, F, 32, 48]);
        }
    }

    #[test]
    fn non_square_odd_grid_gives_finite_features_and_full_resolution_depth() {
        let vs = VarStore::new(Device::Cpu);
        let decoder = Decoder::new(&vs.root(), &small(Readout::Project), D).unwrap();
        let head = DepthHead::new(&vs.root(), F).unwrap();
        let levels = decoder
            .forward_levels(&hooks(1, (3, 5)), (3, 5), false)
            .unwrap();
        // HF's rule: the deepest map (2 x 3 after the stride-2 conv) sets the sizes, skips are resized.
        assert_eq!(levels[3].size(), [1, F, 32, 48]);
        let depth = head.forward(&levels[3], Some((48, 80))).unwrap();
        assert_eq!(depth.size(), [1, 48, 80]);
        assert!(depth.isfinite().all().int64_value(&[]) == 1);
        assert!(depth.min().double_value(&[]) >= 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn depth_has_full_resolution_and_is_non_negative_for_any_grid(
            h in 1i64..5, w in 1i64..5, b in 1i64..3, seed in 0i64..1000, readout in 0usize..3,
        ) {
            tch::manual_seed(seed);
            let vs = VarStore::new(Device::Cpu);
            let decoder = Decoder::new(&vs.root(), &small(READOUTS[readout]), D).unwrap();
            let head = DepthHead::new(&vs.root(), F).unwrap();
            let fused = decoder.forward(&hooks(b, (h, w)), (h, w), false).unwrap();
            let depth = head.forward(&fused, Some((16 * h, 16 * w))).unwrap();
            prop_assert_eq!(depth.size(), vec![b, 16 * h, 16 * w]);
            prop_assert!(depth.isfinite().all().int64_value(&[]) == 1);
            prop_assert!(depth.min().double_value(&[]) >= 0.0);
        }
    }

    fn assert_every_parameter_gets_a_gradient(vs: &VarStore, loss: Tensor) {
        loss.backward();
        let mut checked = 0;
        for (name, var) in vs.variables() {
            if !var.requires_grad() {
                continue;
            }
            let grad = var.grad();
            assert!(grad.defined(), "{name} has no gradient");
            assert!(
                grad.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{name} has a zero gradient"
            );
            checked += 1;
        }
        assert!(checked > 0);
    }

    #[test]
    fn gradient_reaches_every_decoder_and_depth_head_parameter() {
        for readout in READOUTS {
            tch::manual_seed(3);
            let vs = VarStore::new(Device::Cpu);
            let decoder = Decoder::new(&vs.root(), &small(readout), D).unwrap();
            let head = DepthHead::new(&vs.root(), F).unwrap();
            // The final ReLU must pass at init: tests share the global RNG in parallel, so the
            // seed alone does not fix the draw, and a head whose outputs are all clipped has zero
            // gradients everywhere.
            tch::no_grad(|| {
                let _ = vs.variables()["head.head.4.bias"]
                    .shallow_clone()
                    .fill_(1.0);
            });
            let fused = decoder.forward(&hooks(2, (2, 2)), (2, 2), true).unwrap();
            let depth = head.forward(&fused, None).unwrap();
            assert_every_parameter_gets_a_gradient(&vs, depth.sum(Kind::Float));
        }
    }

    #[test]
    fn gradient_reaches_every_parameter_of_a_batch_norm_segmentation_model() {
        tch::manual_seed(4);
        let vs = VarStore::new(Device::Cpu);
        let cfg = DecoderConfig {
            fusion_batch_norm: true,
            ..small(Readout::Project)
        };
        let decoder = Decoder::new(&vs.root(), &cfg, D).unwrap();
        let head = SegmentationHead::new(&vs.root(), F, &SegmentationHeadConfig::new(3)).unwrap();
        let levels = decoder
            .forward_levels(&hooks(2, (2, 2)), (2, 2), true)
            .unwrap();
        let out = head.forward(&levels, Some((32, 32)), true).unwrap();
        let target = Tensor::randint(3, [2, 32, 32], (Kind::Int64, Device::Cpu));
        let ce = |logits: &Tensor| {
            logits.cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, -100, 0.0)
        };
        let loss = ce(&out.logits) + 0.2 * ce(out.auxiliary.as_ref().unwrap());
        assert_every_parameter_gets_a_gradient(&vs, loss);
    }

    #[test]
    fn only_used_parameters_are_created() {
        let vs = VarStore::new(Device::Cpu);
        let _ = Decoder::new(&vs.root(), &small(Readout::Ignore), D).unwrap();
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.iter().all(|n| n.starts_with("neck.")));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("neck.fusion_stage.layers.0.residual_layer1"))
        );
        assert!(!names.iter().any(|n| n.contains("readout_projects")));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("neck.reassemble_stage.layers.2.resize"))
        );
        assert!(
            names.contains(
                &"neck.fusion_stage.layers.1.residual_layer1.convolution2.bias".to_string()
            )
        );
        assert!(names.contains(&"neck.convs.3.weight".to_string()));
        assert!(!names.contains(&"neck.convs.3.bias".to_string()));
    }

    #[test]
    fn tiny_preset_decodes_a_256_pixel_image_to_half_resolution() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = DecoderConfig::tiny();
        let decoder = Decoder::new(&vs.root(), &cfg, 192).unwrap();
        let hooks: Vec<Tensor> = (0..4)
            .map(|_| Tensor::randn([1, 257, 192], (Kind::Float, Device::Cpu)))
            .collect();
        let fused = tch::no_grad(|| decoder.forward(&hooks, (16, 16), false)).unwrap();
        assert_eq!(fused.size(), [1, 64, 128, 128]);
    }

    #[test]
    fn wrong_inputs_give_typed_errors() {
        let vs = VarStore::new(Device::Cpu);
        let decoder = Decoder::new(&vs.root(), &small(Readout::Project), D).unwrap();
        let good = hooks(2, (2, 3));
        let err = |hooks: &[Tensor], grid| decoder.forward(hooks, grid, false).unwrap_err();

        assert!(matches!(
            err(&good[..3], (2, 3)),
            DecoderError::HookCount {
                expected: 4,
                got: 3
            }
        ));
        assert!(matches!(
            err(&good, (3, 3)),
            DecoderError::TokenCount {
                hook: 0,
                expected: 10,
                got: 7,
                ..
            }
        ));
        assert!(matches!(
            err(&good, (0, 3)),
            DecoderError::EmptyGrid { h: 0, w: 3 }
        ));

        let mut wrong_d = hooks(2, (2, 3));
        wrong_d[2] = Tensor::zeros([2, 7, D + 1], (Kind::Float, Device::Cpu));
        assert!(matches!(
            err(&wrong_d, (2, 3)),
            DecoderError::HiddenSize {
                hook: 2,
                expected: D,
                got: 17,
                ..
            }
        ));

        let mut wrong_rank = hooks(2, (2, 3));
        wrong_rank[1] = Tensor::zeros([2, 7], (Kind::Float, Device::Cpu));
        assert!(matches!(
            err(&wrong_rank, (2, 3)),
            DecoderError::HookRank { hook: 1, .. }
        ));

        let mut wrong_batch = hooks(2, (2, 3));
        wrong_batch[3] = Tensor::zeros([1, 7, D], (Kind::Float, Device::Cpu));
        assert!(matches!(
            err(&wrong_batch, (2, 3)),
            DecoderError::BatchSize {
                hook: 3,
                expected: 2,
                got: 1
            }
        ));

        let msg = err(&good, (3, 3)).to_string();
        assert!(
            msg.contains("3 x 3") && msg.contains("10 tokens") && msg.contains("got 7"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_config_is_rejected_before_building() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = DecoderConfig {
            reassemble_factors: [4.0, 3.5, 1.0, 0.5],
            ..small(Readout::Add)
        };
        assert!(matches!(
            Decoder::new(&vs.root(), &cfg, D).unwrap_err(),
            DecoderError::InvalidConfig {
                field: "reassemble_factors",
                ..
            }
        ));
        assert!(vs.variables().is_empty());
    }
}
