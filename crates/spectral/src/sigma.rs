//! Indicators 1 and 3 of `docs/spectral.md`, read off the learnt SVDA spectrum sigma (length d):
//! spectral entropy H = -sum_k p_k ln p_k / ln d with p_k = |sigma_k| / sum_j |sigma_j|, Hoyer
//! sparsity (sqrt(d) - ||sigma||_1 / ||sigma||_2) / (sqrt(d) - 1), and the share of
//! |sigma_k| < 0.1 max|sigma|.

use ndarray::ArrayView1;

use crate::error::{Result, SpectralError};
use crate::real::Real;
use crate::validate;

/// A singular value counts as "switched off" below this fraction of the largest one (indicator 3).
pub const SMALL_SIGMA_FRACTION: f64 = 0.1;

/// |sigma_k| / max|sigma|, after checking sigma is usable: non-empty, finite, d >= 2 (the
/// normalisations divide by ln d and sqrt(d) - 1) and not identically zero (0/0 spectrum).
/// Dividing by the maximum first keeps ||sigma||_2 from underflowing for tiny spectra.
fn relative_magnitudes<T: Real>(sigma: ArrayView1<'_, T>) -> Result<Vec<f64>> {
    validate::finite("sigma", &sigma)?;
    if sigma.len() < 2 {
        return Err(SpectralError::TooSmall {
            what: "sigma".to_string(),
            unit: "entries (head dimension d)",
            actual: sigma.len(),
            min: 2,
        });
    }
    let magnitudes: Vec<f64> = sigma.iter().map(|s| s.to_f64().abs()).collect();
    let max = magnitudes.iter().copied().fold(0.0, f64::max);
    if max == 0.0 {
        return Err(SpectralError::AllZero {
            what: "sigma".to_string(),
        });
    }
    Ok(magnitudes.into_iter().map(|m| m / max).collect())
}

/// Indicator 1: how evenly the head spreads its gain over the d directions; 1 when all |sigma_k|
/// are equal, 0 when a single direction carries everything. Zero entries contribute 0 (0 ln 0 = 0).
pub fn spectral_entropy<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    let m = relative_magnitudes(sigma)?;
    let total: f64 = m.iter().sum();
    let entropy: f64 = m
        .iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| {
            let p = x / total;
            -p * p.ln()
        })
        .sum();
    Ok((entropy / (m.len() as f64).ln()).clamp(0.0, 1.0))
}

/// Indicator 3a: Hoyer sparsity of sigma; 0 when all |sigma_k| are equal, 1 when exactly one is
/// non-zero. Unlike the entropy it is linear in the l1/l2 ratio, so it separates nearly-dense spectra.
pub fn hoyer_sparsity<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    let m = relative_magnitudes(sigma)?;
    let l1: f64 = m.iter().sum();
    let l2 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    let root_d = (m.len() as f64).sqrt();
    Ok(((root_d - l1 / l2) / (root_d - 1.0)).clamp(0.0, 1.0))
}

/// Indicator 3b: share of the d directions whose |sigma_k| is below [`SMALL_SIGMA_FRACTION`] of
/// the largest, i.e. directions the head has effectively pruned.
pub fn small_sigma_share<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    let m = relative_magnitudes(sigma)?;
    let small = m.iter().filter(|&&x| x < SMALL_SIGMA_FRACTION).count();
    Ok(small as f64 / m.len() as f64)
}

/// Below this |sigma_k| the SVDA reference code counts a direction as switched off (an absolute
/// threshold, unlike [`SMALL_SIGMA_FRACTION`]).
pub const PAPER_SMALL_SIGMA: f64 = 1e-3;

/// The SVDA reference code's spectral entropy: H(p) = -sum_k p_k ln p_k with p = sigma^2 /
/// sum sigma^2, in nats and not normalised (ln d for a flat spectrum, 0 for one direction).
pub fn paper_spectral_entropy<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    let m = relative_magnitudes(sigma)?;
    let total: f64 = m.iter().map(|x| x * x).sum();
    Ok(m.iter()
        .map(|x| x * x / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum())
}

/// The reference code's effective rank of sigma: exp([`paper_spectral_entropy`]), in [1, d].
pub fn paper_effective_rank<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    Ok(paper_spectral_entropy(sigma)?.exp())
}

/// The reference code's sparsity: the share of |sigma_k| < [`PAPER_SMALL_SIGMA`]. With sigma
/// drawn around 1 it reads 0 unless a direction is switched off almost exactly.
pub fn paper_sparsity<T: Real>(sigma: ArrayView1<'_, T>) -> Result<f64> {
    validate::finite("sigma", &sigma)?;
    if sigma.is_empty() {
        return Err(SpectralError::TooSmall {
            what: "sigma".to_string(),
            unit: "entries (head dimension d)",
            actual: 0,
            min: 1,
        });
    }
    let small = sigma
        .iter()
        .filter(|s| s.to_f64().abs() < PAPER_SMALL_SIGMA)
        .count();
    Ok(small as f64 / sigma.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array1, array};

    #[test]
    fn all_equal_sigma_has_entropy_one_and_hoyer_zero() {
        for d in [2, 7, 64] {
            let sigma = Array1::from_elem(d, 0.37_f64);
            assert_abs_diff_eq!(
                spectral_entropy(sigma.view()).unwrap(),
                1.0,
                epsilon = 1e-12
            );
            assert_abs_diff_eq!(hoyer_sparsity(sigma.view()).unwrap(), 0.0, epsilon = 1e-12);
            assert_abs_diff_eq!(small_sigma_share(sigma.view()).unwrap(), 0.0);
        }
    }

    #[test]
    fn single_nonzero_sigma_has_entropy_zero_and_hoyer_one() {
        let mut sigma = Array1::<f32>::zeros(16);
        sigma[5] = -2.5;
        assert_abs_diff_eq!(
            spectral_entropy(sigma.view()).unwrap(),
            0.0,
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(hoyer_sparsity(sigma.view()).unwrap(), 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(small_sigma_share(sigma.view()).unwrap(), 15.0 / 16.0);
    }

    #[test]
    fn sigma_indicators_ignore_sign_and_scale() {
        let a = array![1.0, -0.5, 0.25, 0.05];
        let b = a.mapv(|x: f64| -3.0e-200 * x);
        for f in [spectral_entropy::<f64>, hoyer_sparsity, small_sigma_share] {
            assert_abs_diff_eq!(f(a.view()).unwrap(), f(b.view()).unwrap(), epsilon = 1e-12);
        }
    }

    #[test]
    fn small_sigma_share_counts_entries_below_a_tenth_of_the_maximum() {
        let sigma = array![1.0, 0.2, 0.1, 0.099, 0.0];
        assert_abs_diff_eq!(small_sigma_share(sigma.view()).unwrap(), 2.0 / 5.0);
    }

    #[test]
    fn zero_nan_empty_or_scalar_sigma_is_an_error() {
        let zero = Array1::<f64>::zeros(4);
        assert!(matches!(
            spectral_entropy(zero.view()),
            Err(SpectralError::AllZero { .. })
        ));
        let nan = array![1.0, f64::NAN];
        assert!(matches!(
            hoyer_sparsity(nan.view()),
            Err(SpectralError::NonFinite { ref index, .. }) if index == &vec![1]
        ));
        let empty = Array1::<f64>::zeros(0);
        assert!(matches!(
            small_sigma_share(empty.view()),
            Err(SpectralError::Empty { .. })
        ));
        let scalar = array![1.0];
        assert!(matches!(
            spectral_entropy(scalar.view()),
            Err(SpectralError::TooSmall { .. })
        ));
    }

    #[test]
    fn paper_forms_match_hand_values() {
        // sigma = (1, 2): p = (0.2, 0.8), H = 0.500402 nats, erank = 1.649385.
        let s = array![1.0, 2.0];
        let h = -(0.2f64 * 0.2f64.ln() + 0.8 * 0.8f64.ln());
        assert_abs_diff_eq!(
            paper_spectral_entropy(s.view()).unwrap(),
            h,
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(
            paper_effective_rank(s.view()).unwrap(),
            h.exp(),
            epsilon = 1e-12
        );
        // A flat spectrum: ln d and d.
        let flat = Array1::<f64>::from_elem(64, 32.0);
        assert_abs_diff_eq!(
            paper_spectral_entropy(flat.view()).unwrap(),
            64f64.ln(),
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(
            paper_effective_rank(flat.view()).unwrap(),
            64.0,
            epsilon = 1e-9
        );
        let with_off = array![1.0, 0.0005, -0.0001, 0.5];
        assert_abs_diff_eq!(paper_sparsity(with_off.view()).unwrap(), 0.5);
    }
}
