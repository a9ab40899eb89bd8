//! Behaviour of the ViT encoder on tiny configurations.

use glassbox_attention::AttentionKind;
use glassbox_encoder::{Encoder, EncoderError, VitConfig};
use tch::{Device, Kind, Tensor, nn};

fn tiny(kind: AttentionKind) -> VitConfig {
    VitConfig {
        hidden_size: 32,
        num_layers: 4,
        num_heads: 2,
        intermediate_size: 64,
        image_size: 64,
        hooks: vec![1, 2, 3, 4],
        ..VitConfig::vit_tiny()
    }
    .with_attention(kind)
}

fn images(b: i64, h: i64, w: i64) -> Tensor {
    tch::manual_seed(7);
    Tensor::randn([b, 3, h, w], (Kind::Float, Device::Cpu))
}

#[test]
fn hooks_have_one_readout_plus_one_token_per_patch_for_non_square_inputs() {
    for kind in [AttentionKind::Standard, AttentionKind::Svda] {
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = Encoder::new(vs.root(), &tiny(kind)).unwrap();
        let out = enc.forward_t(&images(2, 48, 80), false).unwrap();
        assert_eq!(out.grid, (3, 5));
        assert_eq!(out.hooks.len(), 4);
        for h in &out.hooks {
            assert_eq!(h.size(), [2, 1 + 15, 32]);
            assert!(bool::try_from(h.isfinite().all()).unwrap());
        }
        assert!(out.maps.is_empty(), "the fused pass keeps no maps");
    }
}

#[test]
fn position_embeddings_are_resized_to_the_input_grid_and_kept_at_the_stored_grid() {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(vs.root(), &tiny(AttentionKind::Standard)).unwrap();
    let stored = vs.variables()["pos_embed"].shallow_clone();
    let same = enc.position_embeddings((4, 4));
    assert_eq!(same.size(), [1, 17, 32]);
    assert!(bool::try_from(same.eq_tensor(&stored).all()).unwrap());

    let resized = enc.position_embeddings((2, 6));
    assert_eq!(resized.size(), [1, 1 + 12, 32]);
    // The readout token's embedding is not part of the grid and must not be interpolated.
    assert!(
        bool::try_from(
            resized
                .narrow(1, 0, 1)
                .eq_tensor(&stored.narrow(1, 0, 1))
                .all()
        )
        .unwrap()
    );
    // Bilinear resizing of a constant grid is that constant.
    tch::no_grad(|| {
        let mut grid = stored.narrow(1, 1, 16);
        let _ = grid.fill_(0.25);
    });
    let constant = enc.position_embeddings((5, 3)).narrow(1, 1, 15);
    assert!(f64::try_from((constant - 0.25).abs().max()).unwrap() < 1e-6);
}

#[test]
fn analysis_pass_matches_the_fused_pass_and_returns_a_map_per_block() {
    for kind in [AttentionKind::Standard, AttentionKind::Svda] {
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = Encoder::new(vs.root(), &tiny(kind)).unwrap();
        let x = images(1, 32, 48);
        let fused = enc.forward_t(&x, false).unwrap();
        let explicit = enc.forward_with_maps(&x).unwrap();
        assert_eq!(explicit.maps.len(), 4);
        for (a, b) in fused.hooks.iter().zip(&explicit.hooks) {
            let diff = f64::try_from((a - b).abs().max()).unwrap();
            assert!(diff < 1e-5, "{kind:?}: hooks differ by {diff}");
        }
        let a = &explicit.maps[0].probabilities;
        assert_eq!(a.size(), [1, 2, 7, 7]);
        let rows = a.sum_dim_intlist(-1, false, Kind::Float);
        assert!(f64::try_from((rows - 1.0).abs().max()).unwrap() < 1e-5);
        assert_eq!(
            explicit.maps[0].sigma.is_some(),
            kind == AttentionKind::Svda
        );
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(vs.root(), &tiny(AttentionKind::Svda)).unwrap();
    let out = enc.forward_t(&images(2, 32, 32), true).unwrap();
    let loss = out
        .hooks
        .iter()
        .map(|h| h.pow_tensor_scalar(2).mean(Kind::Float))
        .sum::<Tensor>();
    loss.backward();
    for (name, var) in vs.variables() {
        let g = var.grad();
        assert!(g.defined(), "{name} has no gradient");
        assert!(
            bool::try_from(g.isfinite().all()).unwrap(),
            "{name} has a non-finite gradient"
        );
        assert!(
            f64::try_from(g.abs().sum(Kind::Double)).unwrap() > 0.0,
            "{name} has a zero gradient"
        );
    }
}

#[test]
fn images_that_do_not_tile_into_patches_are_refused_with_their_shape() {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(vs.root(), &tiny(AttentionKind::Standard)).unwrap();
    let err = enc.forward_t(&images(1, 40, 32), false).unwrap_err();
    assert!(matches!(err, EncoderError::InputShape { .. }));
    assert!(err.to_string().contains("[1, 3, 40, 32]"), "{err}");
    let gray = Tensor::zeros([1, 1, 32, 32], (Kind::Float, Device::Cpu));
    assert!(enc.forward_t(&gray, false).is_err());
    let ints = Tensor::zeros([1, 3, 32, 32], (Kind::Int64, Device::Cpu));
    assert!(enc.forward_t(&ints, false).is_err());
}

#[test]
fn parameter_count_of_vit_base_matches_timm() {
    // timm's vit_base_patch16_384 has 86.86M parameters with its 1000-class head (769k) and
    // final norm (1.5k); the encoder has neither.
    let vs = nn::VarStore::new(Device::Cpu);
    Encoder::new(vs.root(), &VitConfig::vit_base()).unwrap();
    let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, 86_859_496 - 769_000 - 1_536);
}
