//! Indicator 2 of `docs/spectral.md`: the effective rank erank(S) = exp(-sum_i q_i ln q_i),
//! q_i = s_i / sum_j s_j, of the singular values s of the score matrix S = Q^ Sigma K^T (SVDA) or
//! S = Q K^T / sqrt(d) (standard attention). S is M x N but has rank <= d, so its spectrum comes
//! from thin QRs Q = U_q R_q, K = U_k R_k: S = U_q (R_q Sigma R_k^T) U_k^T and U_q, U_k have
//! orthonormal columns, hence S and the small core R_q Sigma R_k^T (at most d x d) share their
//! non-zero singular values. When M or N < d the thin R factors are M x d or N x d and the core
//! shrinks accordingly.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use ndarray_linalg::SVDInto;

use crate::error::{Result, SpectralError};
use crate::kernels;
use crate::real::Real;
use crate::validate;

/// Singular values below this fraction of the largest are treated as exact zeros: they are
/// rounding residue of a rank-deficient S (about 1e-16 relative in f64) and would otherwise nudge
/// the effective rank of an exactly rank-r matrix above r.
pub const RANK_CUTOFF: f64 = 1e-12;

/// Singular values (descending) of the score matrix S, computed through the small QR core; `sigma`
/// `None` means standard attention (S = Q K^T / sqrt(d)), `Some` means SVDA (S = Q^ Sigma K^T).
pub fn score_singular_values<T: Real>(
    q: ArrayView2<'_, T>,
    k: ArrayView2<'_, T>,
    sigma: Option<ArrayView1<'_, T>>,
) -> Result<Array1<f64>> {
    validate::finite("q", &q)?;
    validate::finite("k", &k)?;
    let d = q.ncols();
    validate::shape(
        "k",
        k.shape(),
        &[k.nrows(), d],
        "keys must have the head dimension of the queries",
    )?;
    let column_gain: Array1<f64> = match sigma {
        Some(sigma) => {
            validate::finite("sigma", &sigma)?;
            validate::shape("sigma", sigma.shape(), &[d], "one entry per head dimension")?;
            sigma.mapv(Real::to_f64)
        }
        None => Array1::from_elem(d, 1.0 / (d as f64).sqrt()),
    };
    let r_q = r_factor(q);
    let r_k = r_factor(k);
    let core = (r_q * &column_gain.insert_axis(Axis(0))).dot(&r_k.t());
    let (_, singular_values, _) =
        core.svd_into(false, false)
            .map_err(|source| SpectralError::Linalg {
                what: "SVD of the score core R_q Sigma R_k^T".to_string(),
                source,
            })?;
    Ok(singular_values)
}

/// The R factor (min(rows, d) x d) of a thin Householder QR of `x`, in f64. Only R is needed, so
/// each reflector is applied to the remaining columns and dropped, never accumulated into Q.
/// Written out instead of calling LAPACK `dgeqrf`: under rayon, OpenBLAS's own thread pool made
/// one 577 x 64 factorisation ten times slower on the 2-core probe machine (docs/spectral.md).
fn r_factor<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    let (rows, d) = x.dim();
    // Column-major working copy, so that every reflection works on contiguous slices.
    let mut work = vec![0.0_f64; rows * d];
    for (c, column) in x.columns().into_iter().enumerate() {
        for (w, v) in work[c * rows..(c + 1) * rows].iter_mut().zip(column) {
            *w = v.to_f64();
        }
    }
    let k = rows.min(d);
    let mut r = Array2::<f64>::zeros((k, d));
    for j in 0..k {
        let (left, right) = work.split_at_mut((j + 1) * rows);
        let v = &mut left[j * rows + j..];
        let norm = kernels::dot(v, v).sqrt();
        if norm == 0.0 {
            // Column already zero below the diagonal: R_jj = 0, no reflection needed.
            continue;
        }
        // alpha takes the sign opposite to v[0] so that v[0] - alpha does not cancel.
        let alpha = if v[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let v_norm_sq = kernels::dot(v, v);
        for column in right.chunks_exact_mut(rows) {
            let tail = &mut column[j..];
            let factor = 2.0 * kernels::dot(v, tail) / v_norm_sq;
            for (t, a) in tail.iter_mut().zip(v.iter()) {
                *t -= factor * a;
            }
        }
        r[[j, j]] = alpha;
    }
    for j in 0..k {
        for c in j + 1..d {
            r[[j, c]] = work[c * rows + j];
        }
    }
    r
}

/// exp of the Shannon entropy of the normalised singular values: 1 for a rank-1 matrix, r for r
/// equal non-zero singular values, in between for decaying spectra. Values at or below
/// [`RANK_CUTOFF`] times the largest count as zero.
pub fn effective_rank_from_singular_values(singular_values: ArrayView1<'_, f64>) -> Result<f64> {
    validate::finite("singular values", &singular_values)?;
    let largest = singular_values.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
    if largest == 0.0 {
        return Err(SpectralError::AllZero {
            what: "score matrix S".to_string(),
        });
    }
    let kept: Vec<f64> = singular_values
        .iter()
        .map(|s| s.abs() / largest)
        .filter(|&s| s > RANK_CUTOFF)
        .collect();
    let total: f64 = kept.iter().sum();
    let entropy: f64 = kept
        .iter()
        .map(|&s| {
            let p = s / total;
            -p * p.ln()
        })
        .sum();
    Ok(entropy.exp())
}

/// Indicator 2: effective rank of the score matrix, how many independent query-key directions the
/// head actually uses (between 1 and min(M, N, d)).
pub fn effective_rank<T: Real>(
    q: ArrayView2<'_, T>,
    k: ArrayView2<'_, T>,
    sigma: Option<ArrayView1<'_, T>>,
) -> Result<f64> {
    effective_rank_from_singular_values(score_singular_values(q, k, sigma)?.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::Array2;
    use ndarray_linalg::QRInto;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, cols), || StandardNormal.sample(rng))
    }

    fn unit_rows(x: Array2<f64>) -> Array2<f64> {
        let norms = x.map_axis(Axis(1), |r| r.dot(&r).sqrt());
        x / &norms.insert_axis(Axis(1))
    }

    /// The reference route the QR core replaces: an SVD of the full M x N score matrix.
    fn full_svd_effective_rank(
        q: &Array2<f64>,
        k: &Array2<f64>,
        sigma: Option<&Array1<f64>>,
    ) -> f64 {
        let d = q.ncols() as f64;
        let scores = match sigma {
            Some(s) => (q * &s.view().insert_axis(Axis(0))).dot(&k.t()),
            None => q.dot(&k.t()) / d.sqrt(),
        };
        let (_, s, _) = scores.svd_into(false, false).unwrap();
        effective_rank_from_singular_values(s.view()).unwrap()
    }

    #[test]
    fn qr_route_equals_full_svd_of_the_score_matrix_for_several_sizes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // (queries M, keys N, head dim d), including N < d and M != N.
        for (m, n, d) in [
            (40, 40, 8),
            (25, 25, 16),
            (6, 6, 16),
            (12, 5, 9),
            (3, 30, 4),
        ] {
            let q = unit_rows(gaussian(m, d, &mut rng));
            let k = unit_rows(gaussian(n, d, &mut rng));
            let sigma = gaussian(1, d, &mut rng).row(0).to_owned();
            let svda = effective_rank(q.view(), k.view(), Some(sigma.view())).unwrap();
            let reference = full_svd_effective_rank(&q, &k, Some(&sigma));
            assert_relative_eq!(svda, reference, max_relative = 1e-6);

            let (q, k) = (gaussian(m, d, &mut rng), gaussian(n, d, &mut rng));
            let standard = effective_rank(q.view(), k.view(), None).unwrap();
            assert_relative_eq!(
                standard,
                full_svd_effective_rank(&q, &k, None),
                max_relative = 1e-6
            );
        }
    }

    #[test]
    fn score_singular_values_equal_those_of_the_full_matrix() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (q, k) = (gaussian(20, 6, &mut rng), gaussian(20, 6, &mut rng));
        let core = score_singular_values(q.view(), k.view(), None).unwrap();
        let (_, full, _) = (q.dot(&k.t()) / 6f64.sqrt())
            .svd_into(false, false)
            .unwrap();
        for (a, b) in core.iter().zip(full.iter()) {
            assert_relative_eq!(a, b, max_relative = 1e-9);
        }
        assert!(full.iter().skip(6).all(|&s| s < 1e-12 * full[0]));
    }

    #[test]
    fn householder_r_reproduces_the_gram_matrix_and_is_upper_triangular() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for (rows, d, zero_column) in [
            (30, 5, None),
            (4, 9, None),
            (7, 7, Some(2)),
            (6, 3, Some(0)),
        ] {
            let mut x = gaussian(rows, d, &mut rng);
            if let Some(c) = zero_column {
                x.column_mut(c).fill(0.0);
            }
            let r = r_factor(x.view());
            assert_eq!(r.dim(), (rows.min(d), d));
            let (gram, rebuilt) = (x.t().dot(&x), r.t().dot(&r));
            for (a, b) in gram.iter().zip(rebuilt.iter()) {
                assert!((a - b).abs() < 1e-10 * (1.0 + a.abs()), "{a} vs {b}");
            }
            for ((i, j), v) in r.indexed_iter() {
                assert!(i <= j || *v == 0.0, "R[{i},{j}] = {v}");
            }
        }
    }

    #[test]
    fn rank_one_scores_have_effective_rank_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let q = unit_rows(gaussian(30, 8, &mut rng));
        let k = unit_rows(gaussian(30, 8, &mut rng));
        let mut sigma = Array1::<f64>::zeros(8);
        sigma[2] = 1.7;
        let erank = effective_rank(q.view(), k.view(), Some(sigma.view())).unwrap();
        assert_relative_eq!(erank, 1.0, max_relative = 1e-9);
    }

    #[test]
    fn d_equal_singular_values_give_effective_rank_d() {
        // Orthonormal columns for Q and K and a flat sigma: S = U V^T has d singular values 1.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let d = 6;
        let (u, _) = gaussian(32, d, &mut rng).qr_into().unwrap();
        let (v, _) = gaussian(32, d, &mut rng).qr_into().unwrap();
        let sigma = Array1::from_elem(d, 0.5);
        let erank = effective_rank(u.view(), v.view(), Some(sigma.view())).unwrap();
        assert_relative_eq!(erank, d as f64, max_relative = 1e-9);
    }

    #[test]
    fn zero_scores_or_mismatched_widths_are_errors() {
        let q = Array2::<f64>::ones((4, 3));
        let k = Array2::<f64>::ones((4, 3));
        let zero = Array1::<f64>::zeros(3);
        assert!(matches!(
            effective_rank(q.view(), k.view(), Some(zero.view())),
            Err(SpectralError::AllZero { .. })
        ));
        let wide = Array2::<f64>::ones((4, 5));
        assert!(matches!(
            effective_rank(q.view(), wide.view(), None),
            Err(SpectralError::ShapeMismatch { .. })
        ));
    }
}
