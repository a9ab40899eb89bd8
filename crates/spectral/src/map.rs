//! Indicators 4, 5 and 6 of `docs/spectral.md`, read off attention maps A (M queries x N keys,
//! rows are softmax distributions; M = N except under sparse token updates):
//! angular alignment mean_i sum_j A_ij cos(q_i, k_j), selectivity mean_i 1 - H(A_i) / ln N, and
//! perturbation robustness 1 - ||A' - A||_F / ||A||_F averaged over perturbed maps A'.
//! All three come out of one pass over A in blocks of rows: a block is widened to f64 once (64 x N,
//! not N x N), checked, and shared by the entropy, the alignment GEMM and every perturbed map.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis, s};

use crate::error::{Result, SpectralError};
use crate::kernels;
use crate::real::Real;
use crate::validate;

/// Rows widened to f64 at a time: 64 x 577 doubles (about 300 kB) stay in L2 and make one small
/// GEMM with the unit keys.
const BLOCK_ROWS: usize = 64;

/// A list of maps recomputed under one kind of noise, with the name errors should use.
pub(crate) struct Perturbed<'m, 'a, T> {
    pub what: &'static str,
    pub maps: &'m [ArrayView2<'a, T>],
}

/// What one pass over an attention map yields.
pub(crate) struct MapStats {
    pub selectivity: f64,
    /// Mean over rows of 1 - sum_j A_ij^2 (the SVDA reference code's selectivity).
    pub gini_selectivity: f64,
    /// Present when query and key directions were supplied.
    pub alignment: Option<f64>,
    /// Mean robustness per [`Perturbed`] list, in the order given.
    pub robustness: Vec<f64>,
    /// Mean ||A' - A||_F / numel(A) per [`Perturbed`] list (the reference code's form).
    pub change_per_entry: Vec<f64>,
}

/// Query and key rows scaled to unit length (f64, M x d and N x d); a zero row stays zero, so its
/// cosine with anything counts as 0 rather than 0/0.
pub(crate) struct Directions {
    queries: Array2<f64>,
    keys: Array2<f64>,
}

impl Directions {
    /// Checks q (M x d) and k (N x d) against an M x N map and normalises their rows.
    pub(crate) fn new<T: Real>(
        attention_shape: &[usize],
        q: ArrayView2<'_, T>,
        k: ArrayView2<'_, T>,
    ) -> Result<Self> {
        validate::finite("q", &q)?;
        validate::finite("k", &k)?;
        let d = q.ncols();
        validate::shape(
            "q",
            q.shape(),
            &[attention_shape[0], d],
            "one query per attention row",
        )?;
        validate::shape(
            "k",
            k.shape(),
            &[attention_shape[1], d],
            "one key per attention column, same head dimension as q",
        )?;
        Ok(Self {
            queries: unit_rows(q),
            keys: unit_rows(k),
        })
    }
}

impl Directions {
    /// The reference code's alignment: mean over tokens of cos(q_i, k_i), the query and key of
    /// the same token; `None` unless queries and keys are the same tokens (a dense map).
    pub(crate) fn same_token_alignment(&self) -> Option<f64> {
        let n = self.queries.nrows();
        (n == self.keys.nrows() && n > 0).then(|| {
            self.queries
                .rows()
                .into_iter()
                .zip(self.keys.rows())
                .map(|(q, k)| q.dot(&k))
                .sum::<f64>()
                / n as f64
        })
    }
}

fn unit_rows<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    let mut out = x.mapv(Real::to_f64);
    for mut row in out.axis_iter_mut(Axis(0)) {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    out
}

/// Widens one row into `dst`, with a plain slice loop when the row is contiguous.
fn load_row<T: Real>(src: ArrayView1<'_, T>, dst: &mut [f64]) {
    match src.as_slice() {
        Some(values) => {
            for (d, v) in dst.iter_mut().zip(values) {
                *d = v.to_f64();
            }
        }
        None => {
            for (d, v) in dst.iter_mut().zip(src.iter()) {
                *d = v.to_f64();
            }
        }
    }
}

/// The single pass behind indicators 4 to 6: checks every row of `a` (and of every perturbed
/// map), and accumulates row entropies, ||A||_F, the squared distances to the perturbed maps and,
/// when `directions` are given, sum_j A_ij cos(q_i, k_j) = q^_i . (A K^)_i.
/// Rows are renormalised by their sum (which may differ from 1 by the tolerance) before the entropy
/// and the alignment, so both stay within their nominal ranges.
pub(crate) fn map_pass<T: Real>(
    what: &str,
    a: ArrayView2<'_, T>,
    directions: Option<&Directions>,
    perturbed: &[Perturbed<'_, '_, T>],
) -> Result<MapStats> {
    validate::non_empty(what, &a)?;
    let (n_queries, n_keys) = a.dim();
    if n_keys < 2 {
        return Err(SpectralError::TooSmall {
            what: what.to_string(),
            unit: "keys (columns)",
            actual: n_keys,
            min: 2,
        });
    }
    let mut names: Vec<Vec<String>> = Vec::with_capacity(perturbed.len());
    for list in perturbed {
        if list.maps.is_empty() {
            return Err(SpectralError::Empty {
                what: format!("{} list", list.what),
                shape: vec![0],
            });
        }
        let mut list_names = Vec::with_capacity(list.maps.len());
        for (draw, map) in list.maps.iter().enumerate() {
            let name = format!("{} {draw}", list.what);
            validate::non_empty(&name, map)?;
            validate::shape(&name, map.shape(), a.shape(), "same shape as the clean map")?;
            list_names.push(name);
        }
        names.push(list_names);
    }

    let ln_n = (n_keys as f64).ln();
    let mut block = vec![0.0_f64; BLOCK_ROWS.min(n_queries) * n_keys];
    let mut row_sums = [0.0_f64; BLOCK_ROWS];
    let mut other = vec![0.0_f64; n_keys];
    let mut distance_sq: Vec<Vec<f64>> =
        perturbed.iter().map(|l| vec![0.0; l.maps.len()]).collect();
    let (mut selectivity_sum, mut alignment_sum, mut frobenius_sq) = (0.0, 0.0, 0.0);
    let mut gini_sum = 0.0;

    for start in (0..n_queries).step_by(BLOCK_ROWS) {
        let rows = (n_queries - start).min(BLOCK_ROWS);
        let block = &mut block[..rows * n_keys];
        for (r, dst) in block.chunks_exact_mut(n_keys).enumerate() {
            load_row(a.row(start + r), dst);
            let totals = validate::attention_row(what, start + r, dst)?;
            row_sums[r] = totals.sum;
            frobenius_sq += totals.sum_sq;
            let sum_a_ln_a: f64 = dst.iter().filter(|&&w| w > 0.0).map(|&w| w * w.ln()).sum();
            // H(A_i / s) = ln s - (sum_j a_j ln a_j) / s for a row with sum s.
            let entropy = totals.sum.ln() - sum_a_ln_a / totals.sum;
            selectivity_sum += (1.0 - entropy / ln_n).clamp(0.0, 1.0);
            gini_sum += 1.0 - totals.sum_sq / (totals.sum * totals.sum);
        }
        if let Some(dir) = directions {
            let block_view = ArrayView2::from_shape((rows, n_keys), &*block)
                .expect("the block buffer holds rows x n_keys values");
            let weighted_keys = block_view.dot(&dir.keys);
            let queries = dir.queries.slice(s![start..start + rows, ..]);
            for (r, (query, weighted)) in queries
                .rows()
                .into_iter()
                .zip(weighted_keys.rows())
                .enumerate()
            {
                alignment_sum += query.dot(&weighted) / row_sums[r];
            }
        }
        for ((list, list_names), distances) in perturbed.iter().zip(&names).zip(&mut distance_sq) {
            for ((map, name), distance) in
                list.maps.iter().zip(list_names).zip(distances.iter_mut())
            {
                for (r, clean) in block.chunks_exact(n_keys).enumerate() {
                    load_row(map.row(start + r), &mut other);
                    validate::attention_row(name, start + r, &other)?;
                    *distance += kernels::squared_distance(&other, clean);
                }
            }
        }
    }

    let frobenius = frobenius_sq.sqrt();
    let m = n_queries as f64;
    let entries = (n_queries * n_keys) as f64;
    Ok(MapStats {
        selectivity: selectivity_sum / m,
        gini_selectivity: gini_sum / m,
        change_per_entry: distance_sq
            .iter()
            .map(|draws| draws.iter().map(|d| d.sqrt() / entries).sum::<f64>() / draws.len() as f64)
            .collect(),
        alignment: directions.map(|_| alignment_sum / m),
        robustness: distance_sq
            .iter()
            .map(|draws| {
                draws
                    .iter()
                    .map(|d| 1.0 - d.sqrt() / frobenius)
                    .sum::<f64>()
                    / draws.len() as f64
            })
            .collect(),
    })
}

/// Indicator 5: how peaked attention is, mean over queries of 1 - H(A_i) / ln N; 1 when every
/// query looks at one key, 0 when every query spreads uniformly over all N keys.
pub fn selectivity<T: Real>(attention: ArrayView2<'_, T>) -> Result<f64> {
    Ok(map_pass("attention", attention, None, &[])?.selectivity)
}

/// The SVDA reference code's selectivity, mean over queries of 1 - sum_j A_ij^2 (a Gini
/// impurity). It is 1 - 1/N for uniform rows (0.985 for N = 65) and 0 for one-hot rows, so on its
/// own it cannot tell structure from none: report it beside [`gini_uniform`].
pub fn gini_selectivity<T: Real>(attention: ArrayView2<'_, T>) -> Result<f64> {
    Ok(map_pass("attention", attention, None, &[])?.gini_selectivity)
}

/// What [`gini_selectivity`] reads for perfectly uniform attention over `keys` keys: 1 - 1/N.
pub fn gini_uniform(keys: usize) -> f64 {
    1.0 - 1.0 / keys as f64
}

/// Indicator 4: how much attention mass goes where queries and keys point the same way, mean over
/// queries of sum_j A_ij cos(q_i, k_j), in [-1, 1]; high means attention follows direction.
pub fn angular_alignment<T: Real>(
    attention: ArrayView2<'_, T>,
    q: ArrayView2<'_, T>,
    k: ArrayView2<'_, T>,
) -> Result<f64> {
    validate::non_empty("attention", &attention)?;
    let directions = Directions::new(attention.shape(), q, k)?;
    let stats = map_pass("attention", attention, Some(&directions), &[])?;
    Ok(stats
        .alignment
        .expect("map_pass returns an alignment when given directions"))
}

/// Indicator 6: 1 - ||A' - A||_F / ||A||_F averaged over the perturbed maps A' (input noise or
/// sigma noise, computed by the model); 1 means the map did not move, lower means fragile.
pub fn perturbation_robustness<T: Real>(
    clean: ArrayView2<'_, T>,
    perturbed: &[ArrayView2<'_, T>],
) -> Result<f64> {
    let list = Perturbed {
        what: "perturbed map",
        maps: perturbed,
    };
    Ok(map_pass("attention", clean, None, &[list])?.robustness[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    #[test]
    fn uniform_attention_has_selectivity_zero() {
        let a = Array2::<f32>::from_elem((5, 8), 1.0 / 8.0);
        assert_abs_diff_eq!(selectivity(a.view()).unwrap(), 0.0, epsilon = 1e-7);
    }

    #[test]
    fn uniform_and_one_hot_maps_give_both_selectivities_their_extremes() {
        for n in [2usize, 17, 65, 577] {
            let uniform = Array2::<f64>::from_elem((4, n), 1.0 / n as f64);
            assert_abs_diff_eq!(selectivity(uniform.view()).unwrap(), 0.0, epsilon = 1e-12);
            assert_abs_diff_eq!(
                gini_selectivity(uniform.view()).unwrap(),
                1.0 - 1.0 / n as f64,
                epsilon = 1e-12
            );
            assert_abs_diff_eq!(gini_uniform(n), 1.0 - 1.0 / n as f64);
            let one_hot = Array2::from_shape_fn((4, n), |(i, j)| f64::from(u8::from(i % n == j)));
            assert_abs_diff_eq!(selectivity(one_hot.view()).unwrap(), 1.0, epsilon = 1e-12);
            assert_abs_diff_eq!(
                gini_selectivity(one_hot.view()).unwrap(),
                0.0,
                epsilon = 1e-12
            );
        }
        // The reference code's 0.985 at N = 65 is uniform attention.
        assert_abs_diff_eq!(gini_uniform(65), 0.984_615, epsilon = 1e-6);
    }

    #[test]
    fn one_hot_rows_have_selectivity_one() {
        let a = Array2::from_shape_fn((6, 6), |(i, j)| f64::from(u8::from((i * 5 + 1) % 6 == j)));
        assert_abs_diff_eq!(selectivity(a.view()).unwrap(), 1.0, epsilon = 1e-12);
    }

    #[test]
    fn selectivity_of_half_mass_on_two_of_four_keys_is_one_half() {
        let a = array![[0.5, 0.5, 0.0, 0.0]];
        assert_abs_diff_eq!(selectivity(a.view()).unwrap(), 0.5, epsilon = 1e-12);
    }

    #[test]
    fn alignment_is_one_when_each_query_attends_to_its_parallel_key() {
        let q = array![[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]];
        let k = q.mapv(|x: f64| 3.0 * x);
        let a = Array2::<f64>::eye(3);
        assert_abs_diff_eq!(
            angular_alignment(a.view(), q.view(), k.view()).unwrap(),
            1.0,
            epsilon = 1e-12
        );
        let anti = k.mapv(|x| -x);
        assert_abs_diff_eq!(
            angular_alignment(a.view(), q.view(), anti.view()).unwrap(),
            -1.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn alignment_weights_cosines_by_attention() {
        let q = array![[1.0, 0.0]];
        let k = array![[1.0, 0.0], [0.0, 5.0]];
        let a = array![[0.25, 0.75]];
        assert_abs_diff_eq!(
            angular_alignment(a.view(), q.view(), k.view()).unwrap(),
            0.25,
            epsilon = 1e-12
        );
    }

    #[test]
    fn unperturbed_maps_have_robustness_one() {
        let a = array![[0.2, 0.8], [0.6, 0.4]];
        let r = perturbation_robustness(a.view(), &[a.view(), a.view()]).unwrap();
        assert_abs_diff_eq!(r, 1.0);
    }

    #[test]
    fn robustness_averages_relative_frobenius_changes() {
        let a = array![[1.0, 0.0], [0.0, 1.0]];
        let swapped = array![[0.0, 1.0], [1.0, 0.0]];
        // ||swapped - a||_F = 2, ||a||_F = sqrt(2): 1 - sqrt(2); averaged with an exact copy.
        let r = perturbation_robustness(a.view(), &[swapped.view(), a.view()]).unwrap();
        assert_abs_diff_eq!(r, (2.0 - 2f64.sqrt()) / 2.0, epsilon = 1e-12);
    }

    #[test]
    fn bad_maps_are_typed_errors() {
        let nan = array![[0.5, f64::NAN], [0.5, 0.5]];
        assert!(matches!(
            selectivity(nan.view()),
            Err(SpectralError::NonFinite { ref index, .. }) if index == &vec![0, 1]
        ));
        let off = array![[0.5, 0.49], [0.5, 0.5]];
        assert!(matches!(
            selectivity(off.view()),
            Err(SpectralError::RowSum { row: 0, .. })
        ));
        let negative = array![[1.2, -0.2], [0.5, 0.5]];
        assert!(matches!(
            selectivity(negative.view()),
            Err(SpectralError::NegativeWeight { row: 0, col: 1, .. })
        ));
        let empty = Array2::<f64>::zeros((0, 3));
        assert!(matches!(
            selectivity(empty.view()),
            Err(SpectralError::Empty { .. })
        ));
        let single_key = Array2::<f64>::ones((3, 1));
        assert!(matches!(
            selectivity(single_key.view()),
            Err(SpectralError::TooSmall { .. })
        ));
        let good = array![[0.5, 0.5], [0.5, 0.5]];
        let wrong_shape = array![[1.0, 0.0, 0.0]];
        assert!(matches!(
            perturbation_robustness(good.view(), &[wrong_shape.view()]),
            Err(SpectralError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            perturbation_robustness(good.view(), &[]),
            Err(SpectralError::Empty { .. })
        ));
        let q = Array2::<f64>::ones((2, 3));
        let k = Array2::<f64>::ones((3, 3));
        assert!(matches!(
            angular_alignment(good.view(), q.view(), k.view()),
            Err(SpectralError::ShapeMismatch { .. })
        ));
    }
}
