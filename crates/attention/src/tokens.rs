//! Token subsets for sparse token updates (`docs/attention.md`): checking a B x M index tensor,
//! gathering the selected rows of a B x N x D token tensor and scattering updated rows back.
//!
//! A sparse encoder block uses these around [`crate::Attention::forward_subset_t`]:
//! ``text
//! rows = gather_tokens(x, idx)                       // B x M x D
//! rows = rows + attn.forward_subset_t(ln1(x), idx)   // queries = rows, keys/values = all of x
//! rows = rows + mlp(ln2(rows))
//! x    = scatter_tokens(x, idx, rows)                // other tokens pass through unchanged
//! ``

use tch::{Kind, Tensor};

use crate::AttentionError;

/// Shape (B, N, D) of a token tensor, or a typed error when it is not 3-D with B, N, D >= 1.
pub(crate) fn token_shape(
    tensor: &'static str,
    x: &Tensor,
    dim: Option<i64>,
) -> Result<(i64, i64, i64), AttentionError> {
    let shape = x.size();
    let width_ok = |d: i64| dim.is_none_or(|want| want == d);
    match shape[..] {
        [b, n, d] if b >= 1 && n >= 1 && d >= 1 && width_ok(d) => Ok((b, n, d)),
        _ => Err(AttentionError::TokenShape {
            tensor,
            expected: match dim {
                Some(d) => format!("B x N x {d} (B, N >= 1)"),
                None => "B x N x D (B, N, D >= 1)".to_string(),
            },
            shape,
        }),
    }
}

/// Checks that `indices` is an int64 B x M tensor (M >= 1) on `x`'s device whose entries are
/// distinct tokens in 0..N, and returns M. It runs one sort and two reductions over B x M
/// integers, negligible next to attention.
pub fn check_token_indices(
    tensor: &'static str,
    indices: &Tensor,
    batch: i64,
    num_tokens: i64,
    device: tch::Device,
) -> Result<i64, AttentionError> {
    let shape = indices.size();
    let expected = format!("{batch} x M (int64, M >= 1)");
    if indices.kind() != Kind::Int64 || shape.len() != 2 || shape[0] != batch {
        return Err(AttentionError::IndexShape {
            tensor,
            expected,
            kind: indices.kind(),
            shape,
        });
    }
    if indices.device() != device {
        return Err(AttentionError::DeviceMismatch {
            tensor,
            expected: device,
            got: indices.device(),
        });
    }
    let m = shape[1];
    if m == 0 {
        return Err(AttentionError::EmptyQuerySubset { tensor, shape });
    }
    let outside = indices.f_lt(0)?.f_logical_or(&indices.f_ge(num_tokens)?)?;
    if outside.f_any()?.f_int64_value(&[])? != 0 {
        let at = outside.f_nonzero()?;
        let (b, p) = (at.f_int64_value(&[0, 0])?, at.f_int64_value(&[0, 1])?);
        return Err(AttentionError::IndexOutOfRange {
            tensor,
            batch: b,
            position: p,
            index: indices.f_int64_value(&[b, p])?,
            num_tokens,
        });
    }
    if m > 1 {
        let (sorted, _) = indices.f_sort(1, false)?;
        let same = sorted
            .f_narrow(1, 1, m - 1)?
            .f_eq_tensor(&sorted.f_narrow(1, 0, m - 1)?)?;
        if same.f_any()?.f_int64_value(&[])? != 0 {
            let at = same.f_nonzero()?;
            let (b, p) = (at.f_int64_value(&[0, 0])?, at.f_int64_value(&[0, 1])?);
            return Err(AttentionError::DuplicateIndex {
                tensor,
                batch: b,
                index: sorted.f_int64_value(&[b, p])?,
            });
        }
    }
    Ok(m)
}

/// `indices` (B x M) expanded to B x M x D, the index layout `gather`/`scatter` along dim 1 need.
fn row_index(indices: &Tensor, width: i64) -> Result<Tensor, AttentionError> {
    let s = indices.size();
    Ok(indices
        .f_unsqueeze(-1)?
        .f_expand([s[0], s[1], width], false)?)
}

/// [`gather_tokens`] without checking `indices` (no host synchronisation): for indices the caller
/// made itself, such as a top-k selection. An index outside 0..N is a libtorch error.
pub fn gather_rows(x: &Tensor, indices: &Tensor) -> Result<Tensor, AttentionError> {
    let width = x.size()[2];
    Ok(x.f_gather(1, &row_index(indices, width)?, false)?)
}

/// The selected rows of `x`: out[b, i] = x[b, indices[b, i]], shape B x M x D.
pub fn gather_tokens(x: &Tensor, indices: &Tensor) -> Result<Tensor, AttentionError> {
    let (b, n, _) = token_shape("x", x, None)?;
    check_token_indices("indices", indices, b, n, x.device())?;
    gather_rows(x, indices)
}

/// [`scatter_tokens`] without checking `indices` or `rows` (no host synchronisation): for
/// distinct indices the caller made itself, such as a top-k selection.
pub fn scatter_rows(x: &Tensor, indices: &Tensor, rows: &Tensor) -> Result<Tensor, AttentionError> {
    let width = x.size()[2];
    Ok(x.f_scatter(1, &row_index(indices, width)?, rows)?)
}

/// A copy of `x` whose rows `indices[b, i]` are replaced by `rows[b, i]`; every other token is
/// returned unchanged. Differentiable with respect to both `x` (kept rows) and `rows`.
pub fn scatter_tokens(
    x: &Tensor,
    indices: &Tensor,
    rows: &Tensor,
) -> Result<Tensor, AttentionError> {
    let (b, n, d) = token_shape("x", x, None)?;
    let m = check_token_indices("indices", indices, b, n, x.device())?;
    if rows.size() != [b, m, d] {
        return Err(AttentionError::TokenShape {
            tensor: "rows",
            expected: format!("{b} x {m} x {d} (one row per index)"),
            shape: rows.size(),
        });
    }
    if rows.kind() != x.kind() {
        return Err(AttentionError::DtypeMismatch {
            tensor: "rows",
            expected: x.kind(),
            got: rows.kind(),
        });
    }
    if rows.device() != x.device() {
        return Err(AttentionError::DeviceMismatch {
            tensor: "rows",
            expected: x.device(),
            got: rows.device(),
        });
    }
    scatter_rows(x, indices, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tokens() -> Tensor {
        Tensor::arange(2 * 5 * 3, (Kind::Float, Device::Cpu)).view([2, 5, 3])
    }

    #[test]
    fn gather_then_scatter_of_the_same_rows_is_identity() {
        let x = tokens();
        let idx = Tensor::from_slice(&[4i64, 0, 1, 3]).view([2, 2]);
        let rows = gather_tokens(&x, &idx).unwrap();
        assert_eq!(rows.size(), [2, 2, 3]);
        assert_eq!(rows.double_value(&[0, 0, 0]), x.double_value(&[0, 4, 0]));
        assert_eq!(rows.double_value(&[1, 1, 2]), x.double_value(&[1, 3, 2]));
        let back = scatter_tokens(&x, &idx, &rows).unwrap();
        assert!(back.equal(&x));
    }

    #[test]
    fn scatter_replaces_selected_rows_and_leaves_the_others_untouched() {
        let x = tokens();
        let idx = Tensor::from_slice(&[2i64, 1]).view([2, 1]);
        let rows = Tensor::full([2, 1, 3], -1.0, (Kind::Float, Device::Cpu));
        let y = scatter_tokens(&x, &idx, &rows).unwrap();
        for (b, sel) in [(0i64, 2i64), (1, 1)] {
            for t in 0..5 {
                let got = y.get(b).get(t);
                if t == sel {
                    assert!(got.equal(&rows.get(b).get(0)));
                } else {
                    assert!(got.equal(&x.get(b).get(t)));
                }
            }
        }
    }

    #[test]
    fn index_checks_name_the_problem() {
        let x = tokens();
        let cases: [(Tensor, &str); 5] = [
            (
                Tensor::zeros([2, 0], (Kind::Int64, Device::Cpu)),
                "selects no token",
            ),
            (Tensor::from_slice(&[0i64, 5]).view([2, 1]), "outside 0..5"),
            (
                Tensor::from_slice(&[0i64, -1]).view([2, 1]),
                "index -1 at [1, 0]",
            ),
            (
                Tensor::from_slice(&[0i64, 1, 3, 3]).view([2, 2]),
                "token 3 more than once",
            ),
            (
                Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]),
                "int64 token indices",
            ),
        ];
        for (idx, needle) in cases {
            let msg = gather_tokens(&x, &idx).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg} should contain {needle}");
        }
        let wrong_batch = Tensor::from_slice(&[0i64, 1, 2]).view([3, 1]);
        assert!(matches!(
            gather_tokens(&x, &wrong_batch),
            Err(AttentionError::IndexShape { .. })
        ));
    }

    #[test]
    fn scatter_rejects_rows_of_the_wrong_shape() {
        let x = tokens();
        let idx = Tensor::from_slice(&[0i64, 1]).view([2, 1]);
        let rows = Tensor::zeros([2, 2, 3], (Kind::Float, Device::Cpu));
        let msg = scatter_tokens(&x, &idx, &rows).unwrap_err().to_string();
        assert!(msg.contains("`rows`") && msg.contains("2 x 1 x 3"), "{msg}");
    }
}
