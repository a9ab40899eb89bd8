//! Specification tests of the attention layer: the fused and explicit paths agree, SVDA is cosine
//! attention with a learnable per-dimension temperature, query subsets are rows of the dense
//! forward, and gradients reach every parameter.

use approx::assert_abs_diff_eq;
use glassbox_attention::{
    Attention, AttentionConfig, AttentionKind, gather_tokens, scatter_tokens,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor, nn};

const KINDS: [AttentionKind; 3] = AttentionKind::ALL;
const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

/// A layer with seeded random weights; SVDA's sigma is set away from ones so that it matters.
fn layer(kind: AttentionKind, dim: i64, heads: i64, seed: i64) -> (nn::VarStore, Attention) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let attn = Attention::new(vs.root() / "attn", &AttentionConfig::new(dim, heads, kind)).unwrap();
    if kind.has_sigma() {
        let sigma = Tensor::rand([heads, dim / heads], OPTS) * 2.0 + 0.25;
        attn.set_sigma(&sigma).unwrap();
    }
    (vs, attn)
}

/// Per image, the first `m` entries of a random permutation of 0..n: distinct query indices.
fn random_subset(b: i64, n: i64, m: i64) -> Tensor {
    let rows: Vec<Tensor> = (0..b)
        .map(|_| Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(0, 0, m))
        .collect();
    Tensor::stack(&rows, 0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn fused_equals_explicit_for_both_kinds() {
    for kind in KINDS {
        let (_vs, attn) = layer(kind, 24, 3, 7);
        let x = Tensor::randn([2, 13, 24], OPTS);
        let fused = attn.forward_t(&x, false).unwrap();
        let maps = attn.forward_with_maps(&x).unwrap();
        assert_eq!(fused.size(), [2, 13, 24]);
        assert!(max_abs_diff(&fused, &maps.output) < 1e-5, "{kind:?}");
    }
}

#[test]
fn fused_equals_explicit_with_a_query_subset() {
    for kind in KINDS {
        let (_vs, attn) = layer(kind, 24, 3, 8);
        let x = Tensor::randn([2, 13, 24], OPTS);
        let idx = random_subset(2, 13, 5);
        let fused = attn.forward_subset_t(&x, &idx, false).unwrap();
        let maps = attn.forward_subset_with_maps(&x, &idx).unwrap();
        assert_eq!(fused.size(), [2, 5, 24]);
        assert_eq!(maps.probabilities.size(), [2, 3, 5, 13]);
        assert!(max_abs_diff(&fused, &maps.output) < 1e-5, "{kind:?}");
    }
}

#[test]
fn kept_path_equals_the_checked_subset_and_its_mass_is_the_maps_column_sum() {
    for kind in KINDS {
        let (_vs, attn) = layer(kind, 24, 3, 9);
        let x = Tensor::randn([2, 13, 24], OPTS);
        let idx = random_subset(2, 13, 5);
        let checked = attn.forward_subset_t(&x, &idx, false).unwrap();
        let (kept, mass) = attn.forward_kept_t(&x, &idx, false, true).unwrap();
        assert!(kept.equal(&checked), "{kind:?}");
        let maps = attn.forward_subset_with_maps(&x, &idx).unwrap();
        let expected = maps
            .probabilities
            .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
        let mass = mass.unwrap();
        assert_eq!(mass.size(), [2, 13]);
        assert!(max_abs_diff(&mass, &expected) < 1e-5, "{kind:?}");
        // Every head's every query row sums to one: H * M per image.
        let per_image = mass.sum_dim_intlist(1, false, Kind::Float);
        assert!(max_abs_diff(&per_image, &Tensor::full([2], 15.0, OPTS)) < 1e-4);
        assert!(!mass.requires_grad());
        let (_, none) = attn.forward_kept_t(&x, &idx, false, false).unwrap();
        assert!(none.is_none());
    }
}

#[test]
fn subset_rows_equal_the_same_rows_of_the_dense_forward() {
    for kind in KINDS {
        let (_vs, attn) = layer(kind, 16, 2, 9);
        let x = Tensor::randn([3, 11, 16], OPTS);
        let idx = random_subset(3, 11, 4);
        let dense = attn.forward_t(&x, false).unwrap();
        let subset = attn.forward_subset_t(&x, &idx, false).unwrap();
        let expected = gather_tokens(&dense, &idx).unwrap();
        assert!(max_abs_diff(&subset, &expected) < 1e-5, "{kind:?}");

        let dense_maps = attn.forward_with_maps(&x).unwrap();
        let subset_maps = attn.forward_subset_with_maps(&x, &idx).unwrap();
        // Query rows of A and of the score queries are the dense ones, keys are all tokens.
        let rows = idx.view([3, 1, 4, 1]);
        let dense_a = dense_maps
            .probabilities
            .gather(2, &rows.expand([3, 2, 4, 11], false), false);
        assert!(
            max_abs_diff(&subset_maps.probabilities, &dense_a) < 1e-6,
            "{kind:?}"
        );
        let dense_q = dense_maps
            .queries
            .gather(2, &rows.expand([3, 2, 4, 8], false), false);
        assert!(
            max_abs_diff(&subset_maps.queries, &dense_q) < 1e-6,
            "{kind:?}"
        );
        assert!(
            max_abs_diff(&subset_maps.keys, &dense_maps.keys) < 1e-6,
            "{kind:?}"
        );
    }
}

#[test]
fn sparse_residual_update_leaves_unselected_tokens_bit_identical() {
    // The encoder's sparse block: rows = x[idx] + attn(x)[idx]; x' = scatter(x, idx, rows).
    let (_vs, attn) = layer(AttentionKind::Svda, 16, 4, 10);
    let x = Tensor::randn([2, 9, 16], OPTS);
    let idx = Tensor::from_slice(&[0i64, 5, 2, 8, 1, 3]).view([2, 3]);
    let rows = gather_tokens(&x, &idx).unwrap() + attn.forward_subset_t(&x, &idx, false).unwrap();
    let updated = scatter_tokens(&x, &idx, &rows).unwrap();
    let dense = &x + attn.forward_t(&x, false).unwrap();
    for b in 0..2i64 {
        let selected: Vec<i64> = Vec::try_from(idx.get(b)).unwrap();
        for t in 0..9 {
            let got = updated.get(b).get(t);
            if selected.contains(&t) {
                assert!(max_abs_diff(&got, &dense.get(b).get(t)) < 1e-5);
            } else {
                assert!(
                    got.equal(&x.get(b).get(t)),
                    "token {t} of image {b} changed"
                );
            }
        }
    }
}

#[test]
fn svda_with_constant_sigma_is_cosine_attention_with_temperature_c_over_sqrt_d() {
    let (dim, heads, c) = (12i64, 3i64, 2.5f64);
    let d = dim / heads;
    let (vs, attn) = layer(AttentionKind::Svda, dim, heads, 11);
    attn.set_sigma(&Tensor::full([heads, d], c, OPTS)).unwrap();
    let x = Tensor::randn([2, 7, dim], OPTS);

    // Independent reference: cosine similarity of raw Q and K, no normalisation code of ours.
    let vars = vs.variables();
    let qkv = x.matmul(&vars["attn.qkv.weight"].tr()) + &vars["attn.qkv.bias"];
    let split = |i: i64| {
        qkv.narrow(2, i * dim, dim)
            .view([2, 7, heads, d])
            .permute([0, 2, 1, 3])
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let cos = Tensor::cosine_similarity(&q.unsqueeze(3), &k.unsqueeze(2), -1, 1e-12);
    let a = (cos * (c / (d as f64).sqrt())).softmax(-1, Kind::Float);
    let out = a
        .matmul(&v)
        .permute([0, 2, 1, 3])
        .reshape([2, 7, dim])
        .matmul(&vars["attn.proj.weight"].tr())
        + &vars["attn.proj.bias"];

    let fused = attn.forward_t(&x, false).unwrap();
    assert!(max_abs_diff(&fused, &out) < 1e-5);
    let maps = attn.forward_with_maps(&x).unwrap();
    assert!(max_abs_diff(&maps.probabilities, &a) < 1e-6);
}

#[test]
fn standard_layer_reproduces_a_hand_computed_two_token_example() {
    // D = 2, one head (d = 2), tokens x1 = (1, 0), x2 = (0, 1).
    // W_q = W_k = I, W_v = 2I, no qkv bias; W_proj = I, b_proj = (1, 0).
    // Q = K = X, V = 2X; scores = Q K^T / sqrt(2) = [[1/sqrt2, 0], [0, 1/sqrt2]].
    // Row 1: softmax(0.70710678, 0) = (e^a / (e^a + 1), 1 / (e^a + 1)) with e^a = 2.02811498
    //        = (0.66976155, 0.33023845).  A V = 0.66976155 * (2, 0) + 0.33023845 * (0, 2)
    //        = (1.33952310, 0.66047690); + b_proj = (2.33952310, 0.66047690).
    // Row 2 by symmetry: A V = (0.66047690, 1.33952310); + b_proj = (1.66047690, 1.33952310).
    let vs = nn::VarStore::new(Device::Cpu);
    let attn = Attention::new(
        vs.root(),
        &AttentionConfig::new(2, 1, AttentionKind::Standard),
    )
    .unwrap();
    let eye = Tensor::eye(2, OPTS);
    let fixed = [
        ("qkv.weight", Tensor::cat(&[&eye, &eye, &(&eye * 2.0)], 0)),
        ("qkv.bias", Tensor::zeros([6], OPTS)),
        ("proj.weight", eye.shallow_clone()),
        ("proj.bias", Tensor::from_slice(&[1.0f32, 0.0])),
    ];
    let mut vars = vs.variables();
    tch::no_grad(|| {
        for (name, value) in &fixed {
            vars.get_mut(*name).unwrap().copy_(value);
        }
    });
    let x = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([1, 2, 2]);
    let expected = [[2.339_523_1, 0.660_476_9], [1.660_476_9, 1.339_523_1]];
    let maps = attn.forward_with_maps(&x).unwrap();
    for out in [attn.forward_t(&x, false).unwrap(), maps.output] {
        for (i, row) in expected.iter().enumerate() {
            for (j, want) in row.iter().enumerate() {
                assert_abs_diff_eq!(
                    out.double_value(&[0, i as i64, j as i64]),
                    want,
                    epsilon = 1e-6
                );
            }
        }
    }
    assert_abs_diff_eq!(
        maps.probabilities.double_value(&[0, 0, 0, 0]),
        0.669_761_55,
        epsilon = 1e-6
    );
    assert_abs_diff_eq!(
        maps.probabilities.double_value(&[0, 0, 1, 0]),
        0.330_238_45,
        epsilon = 1e-6
    );
}

#[test]
fn svda_maps_hold_unit_rows_and_the_layer_sigma() {
    let (_vs, attn) = layer(AttentionKind::Svda, 16, 2, 12);
    let x = Tensor::randn([2, 6, 16], OPTS);
    let maps = attn.forward_with_maps(&x).unwrap();
    for t in [&maps.queries, &maps.keys] {
        assert_eq!(t.size(), [2, 2, 6, 8]);
        let norms = t.square().sum_dim_intlist(-1, false, Kind::Float).sqrt();
        assert!(max_abs_diff(&norms, &norms.ones_like()) < 1e-5);
    }
    assert!(maps.sigma.unwrap().equal(&attn.sigma().unwrap().unwrap()));

    let (_vs, standard) = layer(AttentionKind::Standard, 16, 2, 12);
    let maps = standard.forward_with_maps(&x).unwrap();
    assert!(maps.sigma.is_none());
    assert_eq!(maps.queries.size(), [2, 2, 6, 8]);
}

#[test]
fn gradients_reach_sigma_and_every_weight_finite_and_nonzero() {
    for kind in KINDS {
        for path in ["fused", "explicit", "subset"] {
            let (vs, attn) = layer(kind, 12, 3, 13);
            let x = Tensor::randn([2, 5, 12], OPTS);
            let idx = Tensor::from_slice(&[4i64, 1, 0, 2]).view([2, 2]);
            let out = match path {
                "fused" => attn.forward_t(&x, true).unwrap(),
                "explicit" => attn.forward_with_maps(&x).unwrap().output,
                _ => attn.forward_subset_t(&x, &idx, true).unwrap(),
            };
            let upstream = Tensor::randn(out.size(), OPTS);
            (out * upstream).sum(Kind::Float).backward();
            let vars = vs.variables();
            // svda: log_sigma and log_temperature; svda-paper: sigma.
            let expected = match kind {
                AttentionKind::Standard => 4,
                AttentionKind::Svda => 6,
                AttentionKind::SvdaPaper => 5,
            };
            assert_eq!(vars.len(), expected);
            for (name, var) in &vars {
                let grad = var.grad();
                assert!(grad.defined(), "{kind:?} {path}: no gradient for {name}");
                let finite = grad.isfinite().all().int64_value(&[]) == 1;
                let norm = grad.norm().double_value(&[]);
                assert!(
                    finite && norm > 1e-6,
                    "{kind:?} {path}: {name} grad norm {norm}"
                );
            }
        }
    }
}

#[test]
fn key_bias_gets_no_gradient_in_standard_attention_but_does_in_svda() {
    // softmax is invariant to adding q.b_k to every score of a row, so standard attention cannot
    // learn b_k; SVDA normalises K, which makes b_k change directions and hence the scores.
    for (kind, has_grad) in [
        (AttentionKind::Standard, false),
        (AttentionKind::Svda, true),
    ] {
        let (vs, attn) = layer(kind, 12, 3, 14);
        let x = Tensor::randn([2, 5, 12], OPTS);
        let out = attn.forward_t(&x, false).unwrap();
        (&out * Tensor::randn(out.size(), OPTS))
            .sum(Kind::Float)
            .backward();
        let key_grad = vs.variables()["attn.qkv.bias"].grad().narrow(0, 12, 12);
        let max = key_grad.abs().max().double_value(&[]);
        assert_eq!(max > 1e-4, has_grad, "{kind:?}: max |grad b_k| = {max}");
    }
}

#[test]
fn dropout_acts_only_when_training() {
    tch::manual_seed(15);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = AttentionConfig {
        attn_drop: 0.5,
        proj_drop: 0.5,
        ..AttentionConfig::new(8, 2, AttentionKind::Svda)
    };
    let attn = Attention::new(vs.root(), &config).unwrap();
    let x = Tensor::randn([1, 6, 8], OPTS);
    let eval = attn.forward_t(&x, false).unwrap();
    assert!(eval.equal(&attn.forward_t(&x, false).unwrap()));
    assert!(max_abs_diff(&eval, &attn.forward_with_maps(&x).unwrap().output) < 1e-5);
    let train = attn.forward_t(&x, true).unwrap();
    assert!(max_abs_diff(&eval, &train) > 1e-3);
    let zeros = train.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    assert!(zeros > 0, "projection dropout should zero some outputs");
}

#[test]
fn timm_parameter_names_and_svda_adds_h_times_d_parameters_plus_h_temperatures() {
    let count = |kind| {
        let vs = nn::VarStore::new(Device::Cpu);
        Attention::new(
            vs.root() / "blocks" / 0 / "attn",
            &AttentionConfig::new(48, 4, kind),
        )
        .unwrap();
        let vars = vs.variables();
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        let total: i64 = vars.values().map(|t| t.numel() as i64).sum();
        (names, total)
    };
    let (standard_names, standard) = count(AttentionKind::Standard);
    assert_eq!(
        standard_names,
        [
            "blocks.0.attn.proj.bias",
            "blocks.0.attn.proj.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.0.attn.qkv.weight"
        ]
    );
    let (svda_names, svda) = count(AttentionKind::Svda);
    assert!(svda_names.contains(&"blocks.0.attn.log_sigma".to_string()));
    assert!(svda_names.contains(&"blocks.0.attn.log_temperature".to_string()));
    assert_eq!(svda - standard, 48 + 4);
    let (paper_names, paper) = count(AttentionKind::SvdaPaper);
    assert!(paper_names.contains(&"blocks.0.attn.sigma".to_string()));
    assert_eq!(paper - standard, 48);
    assert_eq!(standard, 3 * 48 * 48 + 3 * 48 + 48 * 48 + 48);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn attention_rows_sum_to_one_and_paths_agree(
        batch in 1i64..3, tokens in 1i64..10, heads in 1i64..4, head_dim in 1i64..6,
        kind in 0usize..3, seed in 0i64..1000,
    ) {
        let kind = AttentionKind::ALL[kind];
        let (_vs, attn) = layer(kind, heads * head_dim, heads, seed);
        let x = Tensor::randn([batch, tokens, heads * head_dim], OPTS) * 3.0;
        let maps = attn.forward_with_maps(&x).unwrap();
        prop_assert_eq!(maps.probabilities.size(), vec![batch, heads, tokens, tokens]);
        let sums = maps.probabilities.sum_dim_intlist(-1, false, Kind::Float);
        prop_assert!(max_abs_diff(&sums, &sums.ones_like()) < 1e-5);
        prop_assert!(maps.probabilities.ge(0.0).all().int64_value(&[]) == 1);
        let fused = attn.forward_t(&x, false).unwrap();
        // float32 agreement is relative: outputs of |x| ~ 10 differ by a few ulps (~1e-6 each).
        let scale = fused.abs().max().double_value(&[]).max(1.0);
        let diff = max_abs_diff(&fused, &maps.output);
        prop_assert!(diff < 1e-5 * scale, "paths differ by {} at output scale {}", diff, scale);
    }
}

#[test]
fn a_sigma_passed_to_the_analysis_path_acts_as_if_set_and_leaves_the_layer_alone() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = AttentionConfig::new(16, 2, AttentionKind::Svda);
    let attn = Attention::new(vs.root(), &cfg).unwrap();
    let x = Tensor::randn([2, 5, 16], OPTS);
    let own = attn.sigma().unwrap().unwrap().detach().copy();
    let other = Tensor::rand([2, 8], OPTS) * 3.0 + 0.5;
    let passed = attn.forward_with_maps_and_sigma(&x, &other).unwrap();
    assert!(
        attn.sigma().unwrap().unwrap().equal(&own),
        "the layer's sigma was written"
    );
    attn.set_sigma(&other).unwrap();
    let set = attn.forward_with_maps(&x).unwrap();
    assert!(
        passed
            .probabilities
            .allclose(&set.probabilities, 1e-6, 1e-6, false)
    );
    assert!(passed.output.allclose(&set.output, 1e-6, 1e-6, false));
    let standard = Attention::new(
        nn::VarStore::new(Device::Cpu).root(),
        &AttentionConfig::new(16, 2, AttentionKind::Standard),
    )
    .unwrap();
    assert!(standard.forward_with_maps_and_sigma(&x, &other).is_err());
    assert!(
        attn.forward_with_maps_and_sigma(&x, &Tensor::ones([3, 8], OPTS))
            .is_err()
    );
}
