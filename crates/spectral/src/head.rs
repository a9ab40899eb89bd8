//! One attention head in, all six indicators of `docs/spectral.md` out. The model extracts the
//! tensors (explicit attention path, section 3); this module only reads them.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SpectralError};
use crate::map::{Directions, Perturbed, map_pass};
use crate::rank::effective_rank;
use crate::real::Real;
use crate::sigma::{hoyer_sparsity, small_sigma_share, spectral_entropy};
use crate::validate;

/// Which attention produced the head: the sigma indicators (1, 3) and the sigma-perturbation
/// robustness exist only for SVDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// A = softmax(Q K^T / sqrt(d)); `q`, `k` are the raw per-head queries and keys.
    Standard,
    /// A = softmax(Q^ Sigma K^T / sqrt(d)); `q`, `k` are the row-normalised Q^, K^.
    Svda,
}

/// Borrowed tensors of one head on the probe batch (one image): the attention map A (M x N),
/// queries q (M x d), keys k (N x d), sigma (d, SVDA only) and the maps recomputed under input
/// noise and under sigma noise. Borrowing lets the caller keep one layer's tensors alive at a time.
#[derive(Debug, Clone)]
pub struct HeadInput<'a, T: Real = f32> {
    pub kind: AttentionKind,
    pub attention: ArrayView2<'a, T>,
    pub sigma: Option<ArrayView1<'a, T>>,
    pub q: ArrayView2<'a, T>,
    pub k: ArrayView2<'a, T>,
    /// A(x + delta) for each input-noise draw; empty means "not measured".
    pub perturbed_input: Vec<ArrayView2<'a, T>>,
    /// A with sigma scaled by (1 + noise), one per draw (SVDA only); empty means "not measured".
    pub perturbed_sigma: Vec<ArrayView2<'a, T>>,
}

impl<'a, T: Real> HeadInput<'a, T> {
    /// A standard-attention head, without perturbed maps.
    pub fn standard(
        attention: ArrayView2<'a, T>,
        q: ArrayView2<'a, T>,
        k: ArrayView2<'a, T>,
    ) -> Self {
        Self {
            kind: AttentionKind::Standard,
            attention,
            sigma: None,
            q,
            k,
            perturbed_input: Vec::new(),
            perturbed_sigma: Vec::new(),
        }
    }

    /// An SVDA head (`q_hat`, `k_hat` row-normalised), without perturbed maps.
    pub fn svda(
        attention: ArrayView2<'a, T>,
        sigma: ArrayView1<'a, T>,
        q_hat: ArrayView2<'a, T>,
        k_hat: ArrayView2<'a, T>,
    ) -> Self {
        Self {
            kind: AttentionKind::Svda,
            attention,
            sigma: Some(sigma),
            q: q_hat,
            k: k_hat,
            perturbed_input: Vec::new(),
            perturbed_sigma: Vec::new(),
        }
    }

    /// Adds the maps recomputed on noisy inputs (indicator 6).
    pub fn with_perturbed_input(mut self, maps: Vec<ArrayView2<'a, T>>) -> Self {
        self.perturbed_input = maps;
        self
    }

    /// Adds the maps recomputed with noisy sigma (indicator 6, SVDA variant).
    pub fn with_perturbed_sigma(mut self, maps: Vec<ArrayView2<'a, T>>) -> Self {
        self.perturbed_sigma = maps;
        self
    }

    /// Rejects combinations the kind does not allow, before any number is computed.
    fn check_kind(&self) -> Result<()> {
        let mismatch = |what: &str, expected: &str| {
            Err(SpectralError::KindMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
            })
        };
        match (self.kind, self.sigma.is_some()) {
            (AttentionKind::Svda, false) => mismatch("sigma", "SVDA heads need their sigma"),
            (AttentionKind::Standard, true) => mismatch(
                "sigma",
                "standard attention has no sigma; use AttentionKind::Svda",
            ),
            (AttentionKind::Standard, false) if !self.perturbed_sigma.is_empty() => mismatch(
                "perturbed sigma maps",
                "standard attention has no sigma to perturb",
            ),
            _ => Ok(()),
        }
    }
}

/// The indicator values of one head (or a mean over heads). `None` marks an indicator that does
/// not exist for the attention kind (sigma ones for standard attention) or was not measured
/// (robustness without perturbed maps); such fields are left out of the JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Indicators {
    /// 1. Spectral entropy of sigma, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectral_entropy: Option<f64>,
    /// 2. Effective rank of the score matrix, in [1, min(M, N, d)].
    pub effective_rank: f64,
    /// 3a. Hoyer sparsity of sigma, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hoyer_sparsity: Option<f64>,
    /// 3b. Share of |sigma_k| below 0.1 max|sigma|, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_sigma_share: Option<f64>,
    /// 4. Angular alignment, in [-1, 1].
    pub angular_alignment: f64,
    /// 5. Selectivity, in [0, 1].
    pub selectivity: f64,
    /// 6. Robustness to input noise, <= 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness_input: Option<f64>,
    /// 6'. Robustness to sigma noise (SVDA), <= 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness_sigma: Option<f64>,
}

impl Indicators {
    /// Mean over heads; an optional indicator is averaged over the heads that have it and stays
    /// `None` when none has. Returns `None` for an empty slice.
    pub fn mean(items: &[Indicators]) -> Option<Indicators> {
        if items.is_empty() {
            return None;
        }
        let n = items.len() as f64;
        let mean = |f: fn(&Indicators) -> f64| items.iter().map(f).sum::<f64>() / n;
        let mean_opt = |f: fn(&Indicators) -> Option<f64>| {
            let present: Vec<f64> = items.iter().filter_map(f).collect();
            (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
        };
        Some(Indicators {
            spectral_entropy: mean_opt(|x| x.spectral_entropy),
            effective_rank: mean(|x| x.effective_rank),
            hoyer_sparsity: mean_opt(|x| x.hoyer_sparsity),
            small_sigma_share: mean_opt(|x| x.small_sigma_share),
            angular_alignment: mean(|x| x.angular_alignment),
            selectivity: mean(|x| x.selectivity),
            robustness_input: mean_opt(|x| x.robustness_input),
            robustness_sigma: mean_opt(|x| x.robustness_sigma),
        })
    }

    /// The value of one indicator, for plotting series by name.
    pub fn get(&self, indicator: Indicator) -> Option<f64> {
        match indicator {
            Indicator::SpectralEntropy => self.spectral_entropy,
            Indicator::EffectiveRank => Some(self.effective_rank),
            Indicator::HoyerSparsity => self.hoyer_sparsity,
            Indicator::SmallSigmaShare => self.small_sigma_share,
            Indicator::AngularAlignment => Some(self.angular_alignment),
            Indicator::Selectivity => Some(self.selectivity),
            Indicator::RobustnessInput => self.robustness_input,
            Indicator::RobustnessSigma => self.robustness_sigma,
        }
    }
}

/// Names of the indicator values, so reports can loop over them instead of spelling fields out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    SpectralEntropy,
    EffectiveRank,
    HoyerSparsity,
    SmallSigmaShare,
    AngularAlignment,
    Selectivity,
    RobustnessInput,
    RobustnessSigma,
}

impl Indicator {
    /// All values in the order of `docs/spectral.md`.
    pub const ALL: [Indicator; 8] = [
        Indicator::SpectralEntropy,
        Indicator::EffectiveRank,
        Indicator::HoyerSparsity,
        Indicator::SmallSigmaShare,
        Indicator::AngularAlignment,
        Indicator::Selectivity,
        Indicator::RobustnessInput,
        Indicator::RobustnessSigma,
    ];

    /// The JSON field name, also a plot label.
    pub fn name(self) -> &'static str {
        match self {
            Indicator::SpectralEntropy => "spectral_entropy",
            Indicator::EffectiveRank => "effective_rank",
            Indicator::HoyerSparsity => "hoyer_sparsity",
            Indicator::SmallSigmaShare => "small_sigma_share",
            Indicator::AngularAlignment => "angular_alignment",
            Indicator::Selectivity => "selectivity",
            Indicator::RobustnessInput => "robustness_input",
            Indicator::RobustnessSigma => "robustness_sigma",
        }
    }
}

/// The indicators of one head, tagged with its index and kind so a JSON line reads on its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadIndicators {
    pub head: usize,
    pub kind: AttentionKind,
    #[serde(flatten)]
    pub indicators: Indicators,
}

/// Computes all indicators of one head: checks kind and shapes, then makes one pass over A (rows
/// and perturbed maps checked, selectivity, alignment, robustness) and one QR-core SVD.
pub fn compute_head<T: Real>(head: usize, input: &HeadInput<'_, T>) -> Result<HeadIndicators> {
    input.check_kind()?;
    validate::non_empty("attention", &input.attention)?;
    let directions = Directions::new(input.attention.shape(), input.q, input.k)?;
    let lists: Vec<Perturbed<'_, '_, T>> = [
        ("perturbed input map", &input.perturbed_input),
        ("perturbed sigma map", &input.perturbed_sigma),
    ]
    .into_iter()
    .filter(|(_, maps)| !maps.is_empty())
    .map(|(what, maps)| Perturbed { what, maps })
    .collect();
    let stats = map_pass("attention", input.attention, Some(&directions), &lists)?;
    let mut robustness = stats.robustness.into_iter();
    let robustness_input = (!input.perturbed_input.is_empty())
        .then(|| robustness.next())
        .flatten();
    let robustness_sigma = (!input.perturbed_sigma.is_empty())
        .then(|| robustness.next())
        .flatten();
    let sigma_indicators = match input.sigma {
        Some(sigma) => Some((
            spectral_entropy(sigma)?,
            hoyer_sparsity(sigma)?,
            small_sigma_share(sigma)?,
        )),
        None => None,
    };
    Ok(HeadIndicators {
        head,
        kind: input.kind,
        indicators: Indicators {
            spectral_entropy: sigma_indicators.map(|s| s.0),
            effective_rank: effective_rank(input.q, input.k, input.sigma)?,
            hoyer_sparsity: sigma_indicators.map(|s| s.1),
            small_sigma_share: sigma_indicators.map(|s| s.2),
            angular_alignment: stats
                .alignment
                .expect("map_pass returns an alignment when given directions"),
            selectivity: stats.selectivity,
            robustness_input,
            robustness_sigma,
        },
    })
}
