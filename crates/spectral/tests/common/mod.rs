//! Generated heads shared by the integration tests and the probe benchmark: attention maps are real
//! softmax outputs of random queries and keys, perturbed maps come from slightly moved queries.

#![allow(dead_code)]

use glassbox_spectral::{AttentionKind, HeadInput};
use ndarray::{Array1, Array2, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// The owned tensors of one head; [`OwnedHead::input`] borrows them as a [`HeadInput`].
#[derive(Debug, Clone)]
pub struct OwnedHead {
    pub kind: AttentionKind,
    pub attention: Array2<f32>,
    pub sigma: Option<Array1<f32>>,
    pub q: Array2<f32>,
    pub k: Array2<f32>,
    pub perturbed_input: Vec<Array2<f32>>,
    pub perturbed_sigma: Vec<Array2<f32>>,
}

impl OwnedHead {
    pub fn input(&self) -> HeadInput<'_, f32> {
        HeadInput {
            kind: self.kind,
            attention: self.attention.view(),
            sigma: self.sigma.as_ref().map(|s| s.view()),
            q: self.q.view(),
            k: self.k.view(),
            perturbed_input: self.perturbed_input.iter().map(|a| a.view()).collect(),
            perturbed_sigma: self.perturbed_sigma.iter().map(|a| a.view()).collect(),
            grid: None,
        }
    }

    /// The same head with tokens reordered: row i of every per-token tensor becomes row perm[i].
    pub fn permuted(&self, perm: &[usize]) -> Self {
        let rows = |x: &Array2<f32>| x.select(Axis(0), perm);
        let both = |x: &Array2<f32>| x.select(Axis(0), perm).select(Axis(1), perm);
        Self {
            kind: self.kind,
            attention: both(&self.attention),
            sigma: self.sigma.clone(),
            q: rows(&self.q),
            k: rows(&self.k),
            perturbed_input: self.perturbed_input.iter().map(both).collect(),
            perturbed_sigma: self.perturbed_sigma.iter().map(both).collect(),
        }
    }
}

pub fn gaussian(rng: &mut impl Rng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, cols), || {
        scale * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)
    })
}

fn unit_rows(x: Array2<f32>) -> Array2<f32> {
    let norms = x.map_axis(Axis(1), |r| r.dot(&r).sqrt().max(1e-6));
    x / &norms.insert_axis(Axis(1))
}

/// softmax(q diag(gain) k^T / sqrt(d)) row-wise, as the attention crate computes it.
fn softmax_scores(q: &Array2<f32>, k: &Array2<f32>, gain: &Array1<f32>) -> Array2<f32> {
    let d = q.ncols() as f32;
    let mut scores = (q * &gain.view().insert_axis(Axis(0))).dot(&k.t()) / d.sqrt();
    for mut row in scores.axis_iter_mut(Axis(0)) {
        let max = row.fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        row.mapv_inplace(|x| (x - max).exp());
        let sum = row.sum();
        row /= sum;
    }
    scores
}

/// A random head with `n` tokens and head dimension `d`; `draws` perturbed maps per noise kind
/// (sigma noise only for SVDA). `temperature` scales the raw queries, so larger means peakier maps.
pub fn random_head(
    rng: &mut impl Rng,
    kind: AttentionKind,
    n: usize,
    d: usize,
    draws: usize,
    temperature: f32,
) -> OwnedHead {
    let raw_q = gaussian(rng, n, d, temperature);
    let raw_k = gaussian(rng, n, d, 1.0);
    let (q, k, sigma) = match kind {
        AttentionKind::Standard => (raw_q, raw_k, None),
        AttentionKind::Svda => {
            let sigma = Array1::from_shape_simple_fn(d, || rng.random_range(0.05_f32..4.0));
            (unit_rows(raw_q), unit_rows(raw_k), Some(sigma))
        }
    };
    let gain = sigma.clone().unwrap_or_else(|| Array1::ones(d));
    let attention = softmax_scores(&q, &k, &gain);
    let perturbed_input = (0..draws)
        .map(|_| softmax_scores(&(&q + &gaussian(rng, n, d, 0.01)), &k, &gain))
        .collect();
    let perturbed_sigma = match kind {
        AttentionKind::Standard => Vec::new(),
        AttentionKind::Svda => (0..draws)
            .map(|_| {
                let noise = Array1::from_shape_simple_fn(d, || {
                    1.0 + 0.01 * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)
                });
                softmax_scores(&q, &k, &(&gain * &noise))
            })
            .collect(),
    };
    OwnedHead {
        kind,
        attention,
        sigma,
        q,
        k,
        perturbed_input,
        perturbed_sigma,
    }
}
