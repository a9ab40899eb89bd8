//! Bad inputs give typed errors with messages that name the tensor and what was expected,
//! never a libtorch panic.

use glassbox_attention::{Attention, AttentionConfig, AttentionError, AttentionKind};
use tch::{Device, Kind, Tensor, nn};

fn svda_layer() -> (nn::VarStore, Attention) {
    let vs = nn::VarStore::new(Device::Cpu);
    let attn = Attention::new(vs.root(), &AttentionConfig::new(8, 2, AttentionKind::Svda)).unwrap();
    (vs, attn)
}

fn message(result: Result<impl std::fmt::Debug, AttentionError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn wrong_token_shapes_are_rejected_with_the_expected_shape() {
    let (_vs, attn) = svda_layer();
    let cases = [
        vec![4, 8],       // missing batch
        vec![1, 4, 6],    // D != dim
        vec![0, 4, 8],    // empty batch
        vec![2, 0, 8],    // no tokens
        vec![1, 2, 4, 8], // 4-D
    ];
    for shape in cases {
        let x = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
        let msg = message(attn.forward_t(&x, false));
        assert!(msg.contains("`x`") && msg.contains("B x N x 8"), "{msg}");
        assert!(msg.contains(&format!("{shape:?}")), "{msg}");
        assert!(matches!(
            attn.forward_with_maps(&x),
            Err(AttentionError::TokenShape { .. })
        ));
    }
}

#[test]
fn wrong_dtype_is_rejected() {
    let (_vs, attn) = svda_layer();
    let x = Tensor::zeros([1, 3, 8], (Kind::Double, Device::Cpu));
    let msg = message(attn.forward_t(&x, false));
    assert!(msg.contains("Double") && msg.contains("Float"), "{msg}");
}

#[test]
fn empty_query_subset_is_rejected() {
    let (_vs, attn) = svda_layer();
    let x = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
    let idx = Tensor::zeros([2, 0], (Kind::Int64, Device::Cpu));
    let err = attn.forward_subset_t(&x, &idx, false).unwrap_err();
    assert!(matches!(err, AttentionError::EmptyQuerySubset { .. }));
    assert!(
        err.to_string().contains("`queries` selects no token"),
        "{err}"
    );
}

#[test]
fn out_of_range_duplicate_and_malformed_query_indices_are_rejected() {
    let (_vs, attn) = svda_layer();
    let x = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
    let cases = [
        (
            Tensor::from_slice(&[0i64, 1, 2, 5]).view([2, 2]),
            "index 5 at [1, 1], outside 0..5",
        ),
        (
            Tensor::from_slice(&[-3i64, 1, 2, 4]).view([2, 2]),
            "index -3 at [0, 0]",
        ),
        (
            Tensor::from_slice(&[0i64, 1, 4, 4]).view([2, 2]),
            "token 4 more than once for image 1",
        ),
        (
            Tensor::from_slice(&[0i32, 1]).view([2, 1]),
            "must be int64 token indices of shape 2 x M",
        ),
        (
            Tensor::from_slice(&[0i64, 1, 2]).view([3, 1]),
            "shape [3, 1]",
        ),
        (Tensor::from_slice(&[0i64, 1]), "shape [2]"),
    ];
    for (idx, needle) in cases {
        let msg = message(attn.forward_subset_t(&x, &idx, false));
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        let msg = message(attn.forward_subset_with_maps(&x, &idx));
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
}

#[test]
fn set_sigma_checks_shape_and_kind() {
    let (_vs, attn) = svda_layer();
    let msg = message(attn.set_sigma(&Tensor::ones([4, 2], (Kind::Float, Device::Cpu))));
    assert!(msg.contains("`sigma`") && msg.contains("2 x 4"), "{msg}");

    let vs = nn::VarStore::new(Device::Cpu);
    let standard = Attention::new(
        vs.root(),
        &AttentionConfig::new(8, 2, AttentionKind::Standard),
    )
    .unwrap();
    assert!(standard.sigma().unwrap().is_none());
    let err = standard
        .set_sigma(&Tensor::ones([2, 4], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(matches!(err, AttentionError::NoSigma));
}

#[test]
fn invalid_config_is_rejected_at_construction() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err =
        Attention::new(vs.root(), &AttentionConfig::new(10, 4, AttentionKind::Svda)).unwrap_err();
    assert!(
        err.to_string()
            .contains("dim 10 is not divisible by num_heads 4"),
        "{err}"
    );
    assert!(
        vs.variables().is_empty(),
        "no parameter may be created for a rejected config"
    );
}
