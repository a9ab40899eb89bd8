//! Input checks shared by all indicators: non-empty, finite, consistent shapes, and attention rows
//! that are probability distributions (sum 1 within [`ROW_SUM_TOLERANCE`], no negative weight).

use ndarray::{ArrayView, Dimension};

use crate::error::{Result, SpectralError};
use crate::kernels::LANES;
use crate::real::Real;

/// How far an attention row sum may stray from 1; float32 softmax rows of a few thousand keys stay
/// well inside it, a map that is not a softmax output does not.
pub const ROW_SUM_TOLERANCE: f64 = 1e-3;

/// Rejects tensors without elements.
pub(crate) fn non_empty<T, D: Dimension>(what: &str, a: &ArrayView<'_, T, D>) -> Result<()> {
    if a.is_empty() {
        return Err(SpectralError::Empty {
            what: what.to_string(),
            shape: a.shape().to_vec(),
        });
    }
    Ok(())
}

/// Rejects empty tensors and tensors holding NaN or infinity, naming the first offending index.
pub(crate) fn finite<T: Real, D: Dimension>(what: &str, a: &ArrayView<'_, T, D>) -> Result<()> {
    non_empty(what, a)?;
    if a.iter().all(|x| x.to_f64().is_finite()) {
        return Ok(());
    }
    let (index, value) = a
        .view()
        .into_dyn()
        .indexed_iter()
        .find(|(_, x)| !x.to_f64().is_finite())
        .map(|(index, x)| (index.slice().to_vec(), x.to_f64()))
        .expect("a non-finite element was seen by the scan above");
    Err(SpectralError::NonFinite {
        what: what.to_string(),
        index,
        value,
    })
}

/// Requires `actual` to equal `expected`, describing the expectation in words for the error.
pub(crate) fn shape(what: &str, actual: &[usize], expected: &[usize], why: &str) -> Result<()> {
    if actual != expected {
        return Err(SpectralError::ShapeMismatch {
            what: what.to_string(),
            actual: actual.to_vec(),
            expected: format!("{expected:?} ({why})"),
        });
    }
    Ok(())
}

/// Sum and sum of squares of one checked attention row.
pub(crate) struct RowTotals {
    pub sum: f64,
    pub sum_sq: f64,
}

/// Checks one attention row (finite, non-negative, sums to 1) and returns its totals.
pub(crate) fn attention_row(what: &str, row_index: usize, row: &[f64]) -> Result<RowTotals> {
    // Lane accumulators as in `kernels`, with the minimum tracked alongside.
    let mut sums = [0.0_f64; LANES];
    let mut squares = [0.0_f64; LANES];
    // A NaN never compares below, but it poisons the sum of squares, which is checked first.
    let mut mins = [f64::INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            let w = chunk[l];
            sums[l] += w;
            squares[l] += w * w;
            mins[l] = if w < mins[l] { w } else { mins[l] };
        }
    }
    for (l, &w) in tail.iter().enumerate() {
        sums[l] += w;
        squares[l] += w * w;
        mins[l] = if w < mins[l] { w } else { mins[l] };
    }
    let sum: f64 = sums.iter().sum();
    let sum_sq: f64 = squares.iter().sum();
    let min = mins.iter().copied().fold(f64::INFINITY, f64::min);
    if !sum_sq.is_finite()
        && let Some((col, &value)) = row.iter().enumerate().find(|(_, w)| !w.is_finite())
    {
        return Err(SpectralError::NonFinite {
            what: what.to_string(),
            index: vec![row_index, col],
            value,
        });
    }
    if min < 0.0 {
        let col = row.iter().position(|&w| w == min).unwrap_or(0);
        return Err(SpectralError::NegativeWeight {
            what: what.to_string(),
            row: row_index,
            col,
            value: min,
        });
    }
    if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
        return Err(SpectralError::RowSum {
            what: what.to_string(),
            row: row_index,
            sum,
            tolerance: ROW_SUM_TOLERANCE,
        });
    }
    Ok(RowTotals { sum, sum_sq })
}
