//! Dataset-level depth metrics: the mean of per-image metrics (the convention of the BTS /
//! AdaBins / DPT eval scripts, `docs/metrics.md`), fed image by image from an eval loop or
//! computed for many images at once with rayon.

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::depth::{DepthEvalConfig, DepthMetrics, depth_metrics};
use crate::error::{MetricsError, Result};

/// Running sum of per-image [`DepthMetrics`] so an eval loop never holds all predictions; two
/// accumulators of disjoint image sets merge into the accumulator of their union.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DepthAccumulator {
    sum: [f64; DepthMetrics::LEN],
    count: u64,
}

impl DepthAccumulator {
    /// An accumulator that has seen no image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the metrics of one image.
    pub fn push(&mut self, metrics: &DepthMetrics) {
        for (s, v) in self.sum.iter_mut().zip(metrics.to_array()) {
            *s += v;
        }
        self.count += 1;
    }

    /// Adds everything `other` has seen (for per-thread accumulators).
    pub fn merge(&mut self, other: &DepthAccumulator) {
        for (s, v) in self.sum.iter_mut().zip(other.sum) {
            *s += v;
        }
        self.count += other.count;
    }

    /// Number of images pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the per-image metrics; an error when no image was pushed.
    pub fn mean(&self) -> Result<DepthMetrics> {
        if self.count == 0 {
            return Err(MetricsError::EmptyAccumulator { what: "depth" });
        }
        let n = self.count as f64;
        Ok(DepthMetrics::from_array(self.sum.map(|s| s / n)))
    }
}

impl<'a> Extend<&'a DepthMetrics> for DepthAccumulator {
    fn extend<I: IntoIterator<Item = &'a DepthMetrics>>(&mut self, iter: I) {
        iter.into_iter().for_each(|m| self.push(m));
    }
}

impl<'a> FromIterator<&'a DepthMetrics> for DepthAccumulator {
    fn from_iter<I: IntoIterator<Item = &'a DepthMetrics>>(iter: I) -> Self {
        let mut acc = DepthAccumulator::new();
        acc.extend(iter);
        acc
    }
}

/// One image of a batch: prediction, ground truth (both HxW, metres) and an optional user mask.
pub type DepthSample<'a> = (
    ArrayView2<'a, f32>,
    ArrayView2<'a, f32>,
    Option<ArrayView2<'a, bool>>,
);

/// [`depth_metrics`] of every sample, in input order, computed in parallel with rayon; the first
/// failing image (lowest index) is reported as [`MetricsError::InImage`].
pub fn evaluate_depth_batch(
    samples: &[DepthSample<'_>],
    cfg: &DepthEvalConfig,
) -> Result<Vec<DepthMetrics>> {
    let results: Vec<Result<DepthMetrics>> = samples
        .par_iter()
        .enumerate()
        .map(|(index, (pred, gt, mask))| {
            depth_metrics(pred.view(), gt.view(), mask.as_ref().map(|m| m.view()), cfg).map_err(
                |source| MetricsError::InImage {
                    index,
                    source: Box::new(source),
                },
            )
        })
        .collect();
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn metrics(seed: f64) -> DepthMetrics {
        DepthMetrics::from_array(std::array::from_fn(|i| seed + i as f64))
    }

    #[test]
    fn mean_is_the_average_of_per_image_metrics() {
        let acc: DepthAccumulator = [metrics(1.0), metrics(3.0)].iter().collect();
        assert_eq!(acc.count(), 2);
        let mean = acc.mean().unwrap();
        for (i, v) in mean.to_array().iter().enumerate() {
            assert_relative_eq!(*v, 2.0 + i as f64);
        }
    }

    #[test]
    fn merged_halves_equal_one_accumulator_fed_everything() {
        let all: Vec<DepthMetrics> = (0..7).map(|i| metrics(i as f64 * 0.25)).collect();
        let whole: DepthAccumulator = all.iter().collect();
        let mut first: DepthAccumulator = all[..3].iter().collect();
        let second: DepthAccumulator = all[3..].iter().collect();
        first.merge(&second);
        assert_eq!(first.count(), whole.count());
        assert_eq!(first.mean().unwrap(), whole.mean().unwrap());
    }

    #[test]
    fn empty_accumulator_mean_is_a_typed_error() {
        assert_eq!(
            DepthAccumulator::new().mean(),
            Err(MetricsError::EmptyAccumulator { what: "depth" })
        );
    }
}
