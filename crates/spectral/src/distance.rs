//! Indicator 7 of `docs/spectral.md`: mean attention distance (the ViT paper's Fig. 7), how far in
//! the image a head looks. DPT's reading of it: shallow layers attend locally, deep layers
//! globally.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SpectralError};
use crate::real::Real;
use crate::validate;

/// Where the tokens of an attention map sit in the image: `prefix` tokens without a position
/// (the readout token) come first, then `rows x cols` patches in row-major order, each
/// `patch_size` pixels wide. Built once per image size: it also holds the distance that uniform
/// attention gives on this grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenGrid {
    prefix: usize,
    rows: usize,
    cols: usize,
    patch_size: f64,
    uniform_distance: f64,
}

impl TokenGrid {
    /// A grid of `rows x cols` patches after `prefix` position-less tokens; at least two patches.
    pub fn new(prefix: usize, rows: usize, cols: usize, patch_size: f64) -> Result<Self> {
        if rows * cols < 2 {
            return Err(SpectralError::TooSmall {
                what: "token grid".to_string(),
                unit: "patches",
                actual: rows * cols,
                min: 2,
            });
        }
        // Mean over all ordered patch pairs, by offset: (dr, dc) occurs (rows - |dr|)(cols - |dc|)
        // times, so the sum costs O(rows x cols), not O(patches^2).
        let mut total = 0.0;
        for dr in 0..rows {
            for dc in 0..cols {
                let pairs = ((rows - dr) * (cols - dc)) as f64;
                let sides = match (dr, dc) {
                    (0, 0) => 0.0,
                    (0, _) | (_, 0) => 2.0,
                    _ => 4.0,
                };
                total += sides * pairs * ((dr * dr + dc * dc) as f64).sqrt();
            }
        }
        let patches = (rows * cols) as f64;
        Ok(Self {
            prefix,
            rows,
            cols,
            patch_size,
            uniform_distance: total / (patches * patches),
        })
    }

    /// Tokens in the map: prefix plus patches.
    pub fn tokens(&self) -> usize {
        self.prefix + self.rows * self.cols
    }

    /// Side of a patch in pixels.
    pub fn patch_size(&self) -> f64 {
        self.patch_size
    }

    /// The mean distance, in patches, between two patches drawn uniformly: what
    /// [`mean_attention_distance`] reads for uniform attention.
    pub fn uniform_distance(&self) -> f64 {
        self.uniform_distance
    }

    fn distance(&self, a: usize, b: usize) -> f64 {
        let dr = (a / self.cols) as f64 - (b / self.cols) as f64;
        let dc = (a % self.cols) as f64 - (b % self.cols) as f64;
        (dr * dr + dc * dc).sqrt()
    }
}

/// Mean over patch queries of sum_j A_ij ||pos_i - pos_j|| over patch keys, in patches (multiply
/// by the patch size for pixels). Each row's weights are renormalised over the patch keys, so
/// attention to the readout token neither shortens nor lengthens the distance, and a query that
/// gives the patches no weight at all is left out; `None` when every query does. The map must be
/// square (a dense forward) and cover the grid's tokens.
pub fn mean_attention_distance<T: Real>(
    attention: ArrayView2<'_, T>,
    grid: &TokenGrid,
) -> Result<Option<f64>> {
    validate::non_empty("attention", &attention)?;
    let n = grid.tokens();
    validate::shape(
        "attention",
        attention.shape(),
        &[n, n],
        "a dense map over the readout and patch tokens of the grid",
    )?;
    let patches = grid.rows * grid.cols;
    let (mut total, mut counted) = (0.0, 0usize);
    for i in 0..patches {
        let row = attention.row(grid.prefix + i);
        let (mut mass, mut weighted) = (0.0, 0.0);
        for j in 0..patches {
            let w = row[grid.prefix + j].to_f64();
            mass += w;
            weighted += w * grid.distance(i, j);
        }
        if !(mass.is_finite() && weighted.is_finite()) {
            return Err(SpectralError::NonFinite {
                what: "attention".to_string(),
                index: vec![grid.prefix + i],
                value: weighted,
            });
        }
        if mass > 0.0 {
            total += weighted / mass;
            counted += 1;
        }
    }
    Ok((counted > 0).then(|| total / counted as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::Array2;

    fn grid() -> TokenGrid {
        TokenGrid::new(1, 3, 4, 16.0).unwrap()
    }

    #[test]
    fn self_attention_has_distance_zero_and_uniform_attention_the_grid_mean() {
        let g = grid();
        let n = g.tokens();
        let eye = Array2::<f64>::eye(n);
        assert_eq!(mean_attention_distance(eye.view(), &g).unwrap(), Some(0.0));
        let uniform = Array2::<f64>::from_elem((n, n), 1.0 / n as f64);
        assert_abs_diff_eq!(
            mean_attention_distance(uniform.view(), &g)
                .unwrap()
                .unwrap(),
            g.uniform_distance(),
            epsilon = 1e-12
        );
    }

    #[test]
    fn the_uniform_distance_by_offsets_equals_the_mean_over_all_pairs() {
        for (rows, cols) in [(1, 2), (3, 4), (4, 4), (6, 8), (5, 1)] {
            let g = TokenGrid::new(0, rows, cols, 8.0).unwrap();
            let p = rows * cols;
            let direct: f64 = (0..p)
                .flat_map(|a| (0..p).map(move |b| (a, b)))
                .map(|(a, b)| g.distance(a, b))
                .sum::<f64>()
                / (p * p) as f64;
            assert_abs_diff_eq!(g.uniform_distance(), direct, epsilon = 1e-12);
        }
        // Two patches side by side: half the pairs are 0 apart, half 1.
        assert_abs_diff_eq!(
            TokenGrid::new(0, 1, 2, 8.0).unwrap().uniform_distance(),
            0.5
        );
    }

    #[test]
    fn neighbour_attention_is_one_patch_and_readout_only_rows_are_left_out() {
        // Patches put 0.5 on the readout token and 0.5 on their horizontal neighbour; patch 0
        // looks at the readout token only and does not count.
        let g = grid();
        let n = g.tokens();
        let mut a = Array2::<f64>::zeros((n, n));
        a[[0, 0]] = 1.0;
        a[[1, 0]] = 1.0;
        for p in 1..n - 1 {
            let neighbour = if p % 4 == 0 { p + 1 } else { p - 1 };
            a[[1 + p, 0]] = 0.5;
            a[[1 + p, 1 + neighbour]] = 0.5;
        }
        assert_eq!(mean_attention_distance(a.view(), &g).unwrap(), Some(1.0));
        let mut sink = Array2::<f64>::zeros((n, n));
        sink.column_mut(0).fill(1.0);
        assert_eq!(mean_attention_distance(sink.view(), &g).unwrap(), None);
    }

    #[test]
    fn a_map_that_does_not_fit_the_grid_or_a_one_patch_grid_is_an_error() {
        let a = Array2::<f64>::from_elem((5, 5), 0.2);
        assert!(matches!(
            mean_attention_distance(a.view(), &grid()),
            Err(SpectralError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            TokenGrid::new(1, 1, 1, 16.0),
            Err(SpectralError::TooSmall { .. })
        ));
    }
}
