//! Deterministic fixtures shared by the integration tests (no global RNG, so tests running in
//! parallel threads see the same values on every run).

#![allow(dead_code)]

use tch::{Device, Kind, Tensor};

/// SplitMix64 values mapped to `[0, 1)`.
pub fn uniform(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// A `shape`-d f64 tensor of values uniform in `[low, high)`.
pub fn field(seed: u64, shape: &[i64], low: f64, high: f64) -> Tensor {
    let n = shape.iter().product::<i64>() as usize;
    let values: Vec<f64> = uniform(seed, n)
        .into_iter()
        .map(|u| low + (high - low) * u)
        .collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// A boolean mask where roughly `valid_share` of the pixels are true.
pub fn mask(seed: u64, shape: &[i64], valid_share: f64) -> Tensor {
    field(seed, shape, 0.0, 1.0).lt(valid_share)
}

pub fn all_valid(shape: &[i64]) -> Tensor {
    Tensor::ones(shape, (Kind::Bool, Device::Cpu))
}

pub fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Plain values of a tensor, for comparisons outside libtorch.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

pub fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) == 1
}
