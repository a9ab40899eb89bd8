//! All indicators of one head at once: ranges, invariances and rejected inputs.

mod common;

use approx::assert_abs_diff_eq;
use common::{OwnedHead, random_head};
use glassbox_spectral::{
    AttentionKind, HeadIndicators, HeadInput, Indicator, SpectralError, compute_head,
};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn svda_head_has_all_indicators_within_their_ranges() {
    let head = random_head(&mut rng(1), AttentionKind::Svda, 24, 8, 3, 3.0);
    let out = compute_head(4, &head.input()).unwrap();
    assert_eq!((out.head, out.kind), (4, AttentionKind::Svda));
    let v = out.indicators;
    for (value, low, high) in [
        (v.spectral_entropy.unwrap(), 0.0, 1.0),
        (v.effective_rank, 1.0, 8.0),
        (v.hoyer_sparsity.unwrap(), 0.0, 1.0),
        (v.small_sigma_share.unwrap(), 0.0, 1.0),
        (v.angular_alignment, -1.0, 1.0),
        (v.selectivity, 0.0, 1.0),
        (v.robustness_input.unwrap(), 0.0, 1.0),
        (v.robustness_sigma.unwrap(), 0.0, 1.0),
    ] {
        assert!(
            (low..=high).contains(&value),
            "{value} outside [{low}, {high}] in {v:?}"
        );
    }
    // Small noise moves a map only a little.
    assert!(
        v.robustness_input.unwrap() > 0.9 && v.robustness_sigma.unwrap() > 0.9,
        "{v:?}"
    );
}

#[test]
fn standard_head_has_no_sigma_indicators() {
    let head = random_head(&mut rng(2), AttentionKind::Standard, 16, 4, 2, 1.0);
    let v = compute_head(0, &head.input()).unwrap().indicators;
    for absent in [
        Indicator::SpectralEntropy,
        Indicator::HoyerSparsity,
        Indicator::SmallSigmaShare,
        Indicator::RobustnessSigma,
    ] {
        assert_eq!(v.get(absent), None, "{}", absent.name());
    }
    assert!(v.robustness_input.is_some());
}

#[test]
fn unperturbed_input_gives_robustness_one() {
    let mut head = random_head(&mut rng(3), AttentionKind::Svda, 10, 4, 0, 1.0);
    head.perturbed_input = vec![head.attention.clone(); 4];
    head.perturbed_sigma = vec![head.attention.clone(); 2];
    let v = compute_head(0, &head.input()).unwrap().indicators;
    assert_abs_diff_eq!(v.robustness_input.unwrap(), 1.0);
    assert_abs_diff_eq!(v.robustness_sigma.unwrap(), 1.0);
}

#[test]
fn missing_perturbed_maps_leave_robustness_unmeasured() {
    let head = random_head(&mut rng(4), AttentionKind::Svda, 10, 4, 0, 1.0);
    let v = compute_head(0, &head.input()).unwrap().indicators;
    assert_eq!((v.robustness_input, v.robustness_sigma), (None, None));
}

#[test]
fn fewer_tokens_than_head_dimensions_is_supported() {
    let head = random_head(&mut rng(5), AttentionKind::Svda, 5, 16, 1, 1.0);
    let v = compute_head(0, &head.input()).unwrap().indicators;
    assert!(
        v.effective_rank >= 1.0 && v.effective_rank <= 5.0 + 1e-9,
        "{v:?}"
    );
}

#[test]
fn f32_and_f64_inputs_agree() {
    let head = random_head(&mut rng(6), AttentionKind::Svda, 12, 6, 2, 2.0);
    let wide = |x: &Array2<f32>| x.mapv(f64::from);
    let (a, q, k) = (wide(&head.attention), wide(&head.q), wide(&head.k));
    let sigma: Array1<f64> = head.sigma.as_ref().unwrap().mapv(f64::from);
    let maps: Vec<Array2<f64>> = head.perturbed_input.iter().map(wide).collect();
    let input64 = HeadInput::svda(a.view(), sigma.view(), q.view(), k.view())
        .with_perturbed_input(maps.iter().map(|m| m.view()).collect());
    let v64 = compute_head(0, &input64).unwrap().indicators;
    let v32 = compute_head(0, &head.input()).unwrap().indicators;
    // Only the f32 head carries sigma-noise maps; every other indicator must agree.
    assert!(v32.robustness_sigma.is_some() && v64.robustness_sigma.is_none());
    for indicator in Indicator::ALL
        .into_iter()
        .filter(|&i| i != Indicator::RobustnessSigma)
    {
        match (v32.get(indicator), v64.get(indicator)) {
            (Some(a), Some(b)) => assert_abs_diff_eq!(a, b, epsilon = 1e-12),
            (None, None) => {}
            (a, b) => panic!("{}: f32 {a:?}, f64 {b:?}", indicator.name()),
        }
    }
}

/// Breaks one tensor of a valid head.
type Corruption = fn(&mut OwnedHead);

fn expect_error(head: &OwnedHead) -> SpectralError {
    compute_head(0, &head.input()).expect_err("bad input must be rejected")
}

#[test]
fn nan_inputs_are_errors_naming_the_tensor() {
    let clean = random_head(&mut rng(7), AttentionKind::Svda, 8, 4, 2, 1.0);
    let cases: [(&str, Corruption); 5] = [
        ("attention", |h| h.attention[[2, 3]] = f32::NAN),
        ("q", |h| h.q[[1, 1]] = f32::INFINITY),
        ("k", |h| h.k[[0, 0]] = f32::NAN),
        ("sigma", |h| h.sigma.as_mut().unwrap()[3] = f32::NAN),
        ("perturbed input map 1", |h| {
            h.perturbed_input[1][[0, 0]] = f32::NAN
        }),
    ];
    for (tensor, corrupt) in cases {
        let mut head = clean.clone();
        corrupt(&mut head);
        match expect_error(&head) {
            SpectralError::NonFinite { what, .. } => assert_eq!(what, tensor),
            other => panic!("{tensor}: expected NonFinite, got {other}"),
        }
    }
}

#[test]
fn empty_inputs_are_errors() {
    let mut head = random_head(&mut rng(8), AttentionKind::Standard, 4, 2, 0, 1.0);
    head.attention = Array2::zeros((0, 0));
    head.q = Array2::zeros((0, 2));
    head.k = Array2::zeros((0, 2));
    assert!(matches!(expect_error(&head), SpectralError::Empty { .. }));
}

#[test]
fn rows_not_summing_to_one_are_errors() {
    let mut head = random_head(&mut rng(9), AttentionKind::Standard, 6, 3, 1, 1.0);
    head.perturbed_input[0][[4, 0]] += 0.01;
    assert!(matches!(
        expect_error(&head),
        SpectralError::RowSum { row: 4, ref what, .. } if what == "perturbed input map 0"
    ));
}

#[test]
fn shape_mismatches_are_errors() {
    let clean = random_head(&mut rng(10), AttentionKind::Svda, 6, 4, 1, 1.0);
    let cases: [Corruption; 4] = [
        |h| h.q = Array2::ones((5, 4)),
        |h| h.k = Array2::ones((6, 3)),
        |h| h.sigma = Some(Array1::ones(5)),
        |h| h.perturbed_input = vec![Array2::from_elem((6, 5), 0.2)],
    ];
    for corrupt in cases {
        let mut head = clean.clone();
        corrupt(&mut head);
        assert!(matches!(
            expect_error(&head),
            SpectralError::ShapeMismatch { .. }
        ));
    }
}

#[test]
fn sigma_must_match_the_attention_kind() {
    let mut svda = random_head(&mut rng(11), AttentionKind::Svda, 6, 4, 1, 1.0);
    svda.kind = AttentionKind::Standard;
    assert!(matches!(
        expect_error(&svda),
        SpectralError::KindMismatch { .. }
    ));
    svda.kind = AttentionKind::Svda;
    svda.sigma = None;
    assert!(matches!(
        expect_error(&svda),
        SpectralError::KindMismatch { .. }
    ));
}

fn all_values(out: &HeadIndicators) -> Vec<Option<f64>> {
    Indicator::ALL
        .iter()
        .map(|&i| out.indicators.get(i))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn indicators_are_invariant_to_permuting_tokens(
        seed in any::<u64>(),
        n in 2usize..14,
        d in 2usize..7,
        svda in any::<bool>(),
    ) {
        let kind = if svda { AttentionKind::Svda } else { AttentionKind::Standard };
        let mut rng = rng(seed);
        let head = random_head(&mut rng, kind, n, d, 2, 2.0);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut rng);
        let original = all_values(&compute_head(0, &head.input()).unwrap());
        let permuted = all_values(&compute_head(0, &head.permuted(&perm).input()).unwrap());
        for (a, b) in original.iter().zip(&permuted) {
            match (a, b) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}"),
                _ => prop_assert_eq!(a, b),
            }
        }
    }
}

#[test]
fn paper_alignment_and_paper_robustness_match_hand_values() {
    // Same-token cosines: (1,0)·(1,0) = 1, (0,1)·(1,0) = 0, (1,1)·(0,2) = 1/sqrt(2).
    let q = ndarray::array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let k = ndarray::array![[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]];
    let a = Array2::<f64>::from_elem((3, 3), 1.0 / 3.0);
    // One draw moves row 0 to (1, 0, 0): ||A' - A||_F = sqrt(4/9 + 1/9 + 1/9); per entry / 9.
    // The other draw does not move: the mean over the two draws halves it.
    let mut moved = a.clone();
    moved.row_mut(0).assign(&ndarray::array![1.0, 0.0, 0.0]);
    let input = HeadInput::standard(a.view(), q.view(), k.view())
        .with_perturbed_input(vec![moved.view(), a.view()]);
    let v = compute_head(0, &input).unwrap().indicators;
    assert_abs_diff_eq!(
        v.paper_alignment.unwrap(),
        (1.0 + 0.0 + 0.5f64.sqrt()) / 3.0,
        epsilon = 1e-12
    );
    assert_abs_diff_eq!(
        v.paper_robustness_input.unwrap(),
        (6.0f64 / 9.0).sqrt() / 9.0 / 2.0,
        epsilon = 1e-12
    );
    // Uniform rows: the Gini form sits at its uniform value 1 - 1/3, ours at 0.
    assert_abs_diff_eq!(v.gini_selectivity.unwrap(), 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(v.gini_uniform.unwrap(), 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(v.selectivity, 0.0, epsilon = 1e-12);
}
