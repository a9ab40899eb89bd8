//! Sparse token updates in the encoder (`docs/sparse.md`): keep ratio 1 is the dense model, the
//! tokens not kept leave the encoder exactly as they entered, the readout token is always kept,
//! k is per image, and the scorer learns from its own loss only.

use glassbox_encoder::{Encoder, VitConfig};
use tch::{Device, Kind, Tensor, nn};

fn tiny(keep_ratio: f64) -> VitConfig {
    VitConfig {
        hidden_size: 32,
        num_layers: 4,
        num_heads: 2,
        intermediate_size: 64,
        image_size: 64,
        hooks: vec![1, 2, 3, 4],
        keep_ratio,
        ..VitConfig::vit_tiny()
    }
}

fn encoder(keep_ratio: f64, seed: i64) -> (nn::VarStore, Encoder) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(vs.root(), &tiny(keep_ratio)).unwrap();
    (vs, enc)
}

fn images(b: i64, h: i64, w: i64) -> Tensor {
    tch::manual_seed(11);
    Tensor::randn([b, 3, h, w], (Kind::Float, Device::Cpu))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn keep_ratio_one_is_exactly_the_dense_model() {
    let (mut dense_vs, dense) = encoder(1.0, 3);
    let (sparse_vs, mut sparse) = encoder(0.3, 3);
    // The same weights (tests share libtorch's generator, so seeding alone cannot promise it);
    // the dense store has every variable of the sparse one but the scorer's.
    dense_vs.copy(&sparse_vs).unwrap();
    sparse.set_keep_ratio(1.0).unwrap();
    let x = images(2, 64, 48);
    let a = dense.forward_t(&x, false).unwrap();
    let b = sparse.forward_t(&x, false).unwrap();
    assert!(b.saliency.is_none());
    for (ha, hb) in a.hooks.iter().zip(&b.hooks) {
        assert!(ha.equal(hb), "keep ratio 1 must run the dense pass");
    }
}

#[test]
fn keeping_every_token_through_the_sparse_path_matches_dense_to_rounding() {
    let (_s, mut sparse) = encoder(0.5, 4);
    let x = images(2, 48, 80);
    sparse.set_keep_ratio(1.0).unwrap();
    let dense = sparse.forward_t(&x, false).unwrap();
    // 15 patches: any ratio above 14/15 keeps all of them, through gather / scatter.
    sparse.set_keep_ratio(0.99).unwrap();
    let all = sparse.forward_t(&x, false).unwrap();
    assert_eq!(all.saliency.as_ref().unwrap().kept.size(), [2, 16]);
    for (hd, ha) in dense.hooks.iter().zip(&all.hooks) {
        assert!(max_abs_diff(hd, ha) < 1e-5, "{}", max_abs_diff(hd, ha));
    }
}

#[test]
fn tokens_not_kept_leave_the_encoder_bit_identical_and_the_readout_is_always_kept() {
    let (_s, enc) = encoder(0.3, 5);
    let x = images(3, 64, 64);
    let (embedded, _) = enc.embed_t(&x, false).unwrap();
    let out = enc.forward_t(&x, false).unwrap();
    let sal = out.saliency.as_ref().unwrap();
    // 16 patches at rho 0.3: ceil(4.8) = 5 kept, plus the readout token.
    assert_eq!(sal.kept.size(), [3, 6]);
    assert_eq!(sal.kept_patches(), 5);
    let kept: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&sal.kept).unwrap();
    let last = out.hooks.last().unwrap();
    for (b, row) in kept.iter().enumerate() {
        assert_eq!(row[0], 0, "image {b}: readout token not kept");
        assert!(row.windows(2).all(|w| w[0] < w[1]), "{row:?}");
        for t in 0..17 {
            let same = last
                .get(b as i64)
                .get(t)
                .equal(&embedded.get(b as i64).get(t));
            assert_eq!(
                same,
                !row.contains(&t),
                "image {b} token {t}: kept tokens change, the others must not"
            );
        }
    }
    let mask = sal.patch_mask();
    assert_eq!(
        mask.sum(Kind::Int64).int64_value(&[]),
        3 * 5,
        "one mask entry per kept patch"
    );
}

#[test]
fn k_is_per_image_and_correct_for_non_square_inputs() {
    let (_s, enc) = encoder(0.3, 6);
    // 3 x 5 = 15 patches: ceil(4.5) = 5.
    let x = images(4, 48, 80);
    let out = enc.forward_t(&x, false).unwrap();
    assert_eq!(out.grid, (3, 5));
    let sal = out.saliency.unwrap();
    assert_eq!(sal.logits.size(), [4, 15]);
    assert_eq!(sal.kept.size(), [4, 6]);
    // The selection is each image's own top-k of its own logits.
    let kept: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&sal.kept).unwrap();
    let logits: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&sal.logits).unwrap();
    for (row, scores) in kept.iter().zip(&logits) {
        let mut order: Vec<i64> = (0..15).collect();
        order.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
        let mut top: Vec<i64> = order[..5].iter().map(|t| t + 1).collect();
        top.sort();
        assert_eq!(&row[1..], &top[..]);
    }
    assert_ne!(
        kept[0], kept[1],
        "different images should keep different tokens"
    );
}

#[test]
fn the_scorer_learns_from_its_own_loss_only() {
    let (vs, enc) = encoder(0.3, 7);
    let x = images(2, 64, 64);
    let grads_of = |loss: Tensor| {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, v) in &vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        vars.into_iter()
            .map(|(name, v)| {
                let g = v.grad();
                let norm = if g.defined() {
                    g.abs().sum(Kind::Double).double_value(&[])
                } else {
                    0.0
                };
                (name, norm)
            })
            .collect::<Vec<_>>()
    };
    let out = enc.forward_t(&x, true).unwrap();
    let task = out
        .hooks
        .iter()
        .map(|h| h.square().mean(Kind::Float))
        .sum::<Tensor>();
    for (name, norm) in grads_of(task) {
        if name.starts_with("mask_predictor.") {
            assert_eq!(norm, 0.0, "the task loss reached the scorer's {name}");
        } else if name.starts_with("blocks.") || name == "patch_embed.proj.weight" {
            assert!(norm > 0.0, "the task loss did not reach {name}");
        }
    }
    let out = enc.forward_t(&x, true).unwrap();
    let sal = out.saliency.unwrap();
    let bce = sal
        .loss()
        .expect("a training pass measures the saliency mass");
    for (name, norm) in grads_of(bce) {
        if name.starts_with("mask_predictor.") {
            assert!(norm > 0.0, "the saliency loss did not reach {name}");
        } else {
            assert_eq!(norm, 0.0, "the saliency loss reached {name}");
        }
    }
}

#[test]
fn the_target_marks_the_tokens_with_most_received_mass_and_corr_is_a_share() {
    let (_vs, enc) = encoder(0.3, 8);
    let out = enc.forward_t(&images(2, 64, 64), true).unwrap();
    let sal = out.saliency.unwrap();
    let mass = sal.mass.as_ref().unwrap();
    assert_eq!(mass.size(), [2, 16]);
    // 4 blocks x 2 heads x 6 queries, each row a distribution over 17 tokens (readout dropped).
    let total = mass.sum(Kind::Double).double_value(&[]);
    assert!(
        total > 0.0 && total <= 2.0 * 4.0 * 2.0 * 6.0 + 1e-3,
        "{total}"
    );
    let target = sal.target().unwrap();
    assert_eq!(target.sum(Kind::Int64).int64_value(&[]), 2 * 5);
    let masses: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(mass).unwrap();
    let targets: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&target).unwrap();
    for (m, t) in masses.iter().zip(&targets) {
        let lowest_kept = (0..16)
            .filter(|&i| t[i] == 1.0)
            .map(|i| m[i])
            .fold(f32::MAX, f32::min);
        let highest_other = (0..16)
            .filter(|&i| t[i] == 0.0)
            .map(|i| m[i])
            .fold(f32::MIN, f32::max);
        assert!(lowest_kept >= highest_other);
    }
    let corr = sal.corr().unwrap().double_value(&[]);
    assert!(corr > 0.0 && corr < 1.0, "{corr}");
    // Evaluation passes skip the mass.
    let eval = enc.forward_t(&images(2, 64, 64), false).unwrap();
    assert!(eval.saliency.unwrap().loss().is_none());
}

#[test]
fn selection_quality_compares_the_own_target_with_a_dense_pass() {
    let (_vs, enc) = encoder(0.3, 9);
    let x = images(3, 64, 64);
    let q = enc.selection_quality(&x).unwrap().unwrap();
    assert_eq!(q.kept_share, 5.0 / 16.0);
    for v in [q.corr, q.corr_dense, q.target_overlap] {
        assert!((0.0..=1.0).contains(&v), "{q:?}");
    }
    // Keeping every patch covers all the mass, and both targets are every token.
    let mut all = enc;
    all.set_keep_ratio(0.999).unwrap();
    let q = all.selection_quality(&x).unwrap().unwrap();
    assert!(
        (q.corr - 1.0).abs() < 1e-6 && (q.corr_dense - 1.0).abs() < 1e-6,
        "{q:?}"
    );
    assert_eq!(q.target_overlap, 1.0);
    let (_d, dense) = encoder(1.0, 9);
    assert!(dense.selection_quality(&x).unwrap().is_none());
}

#[test]
fn bad_keep_ratios_are_config_errors_naming_the_value() {
    for bad in [0.0, 1.5, -0.1] {
        let vs = nn::VarStore::new(Device::Cpu);
        let msg = Encoder::new(vs.root(), &tiny(bad)).unwrap_err().to_string();
        assert!(
            msg.contains(&format!(
                "keep_ratio must be in (0, 1] (1 = dense), got {bad}"
            )),
            "{msg}"
        );
    }
    let (_vs, mut dense) = encoder(1.0, 1);
    let msg = dense.set_keep_ratio(0.5).unwrap_err().to_string();
    assert!(
        msg.contains("keep_ratio 0.5 needs a saliency scorer"),
        "{msg}"
    );
    assert!(dense.set_keep_ratio(2.0).is_err());
}

#[test]
fn the_scorer_has_the_reference_parameter_names() {
    let (vs, _enc) = encoder(0.5, 2);
    let mut names: Vec<String> = vs
        .variables()
        .into_keys()
        .filter(|n| n.starts_with("mask_predictor."))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mask_predictor.layer1.0.bias",
            "mask_predictor.layer1.0.weight",
            "mask_predictor.layer1.1.bias",
            "mask_predictor.layer1.1.weight",
            "mask_predictor.layer2.0.bias",
            "mask_predictor.layer2.0.weight",
            "mask_predictor.layer2.2.bias",
            "mask_predictor.layer2.2.weight",
            "mask_predictor.layer2.4.bias",
            "mask_predictor.layer2.4.weight",
        ]
    );
    let shape = |n: &str| vs.variables()[n].size();
    assert_eq!(shape("mask_predictor.layer2.0.weight"), [16, 32]);
    assert_eq!(shape("mask_predictor.layer2.4.weight"), [1, 8]);
}
