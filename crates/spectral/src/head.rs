//! One attention head in, all six indicators of `docs/spectral.md` out. The model extracts the
//! tensors (explicit attention path, section 3); this module only reads them.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::distance::{TokenGrid, mean_attention_distance};
use crate::error::{Result, SpectralError};
use crate::map::{Directions, Perturbed, gini_uniform, map_pass};
use crate::rank::effective_rank;
use crate::real::Real;
use crate::sigma::{
    hoyer_sparsity, paper_effective_rank, paper_sparsity, paper_spectral_entropy,
    small_sigma_share, spectral_entropy,
};
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
    /// Where the tokens sit in the image, for the mean attention distance (indicator 7);
    /// `None` means "not measured".
    pub grid: Option<TokenGrid>,
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
            grid: None,
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
            grid: None,
        }
    }

    /// Adds the maps recomputed on noisy inputs (indicator 6).
    pub fn with_perturbed_input(mut self, maps: Vec<ArrayView2<'a, T>>) -> Self {
        self.perturbed_input = maps;
        self
    }

    /// Adds the token layout, so that the mean attention distance is measured (indicator 7).
    pub fn with_grid(mut self, grid: TokenGrid) -> Self {
        self.grid = Some(grid);
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
    /// 7. Mean attention distance over patch tokens, in patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_distance: Option<f64>,
    /// 7, in pixels (patches times the patch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_distance_px: Option<f64>,
    /// 7 for perfectly uniform attention over the same grid, in patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_distance_uniform: Option<f64>,
    /// Paper form of 1: entropy of sigma^2 / sum sigma^2 in nats (ln d when flat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_spectral_entropy: Option<f64>,
    /// Paper form of the effective rank: exp of the paper entropy, in [1, d].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_effective_rank: Option<f64>,
    /// Paper form of 3: share of |sigma_k| < 1e-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_sparsity: Option<f64>,
    /// Paper form of 4: mean same-token cosine cos(q_i, k_i) (dense maps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_alignment: Option<f64>,
    /// Paper form of 5: mean over queries of 1 - sum_j A_ij^2 (Gini impurity). `None` only in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gini_selectivity: Option<f64>,
    /// What the Gini form reads for uniform attention over the same keys, 1 - 1/N; ours reads 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gini_uniform: Option<f64>,
    /// Paper form of 6: ||A(x + delta) - A(x)||_F / numel(A), mean over draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_robustness_input: Option<f64>,
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
            attention_distance: mean_opt(|x| x.attention_distance),
            attention_distance_px: mean_opt(|x| x.attention_distance_px),
            attention_distance_uniform: mean_opt(|x| x.attention_distance_uniform),
            paper_spectral_entropy: mean_opt(|x| x.paper_spectral_entropy),
            paper_effective_rank: mean_opt(|x| x.paper_effective_rank),
            paper_sparsity: mean_opt(|x| x.paper_sparsity),
            paper_alignment: mean_opt(|x| x.paper_alignment),
            gini_selectivity: mean_opt(|x| x.gini_selectivity),
            gini_uniform: mean_opt(|x| x.gini_uniform),
            paper_robustness_input: mean_opt(|x| x.paper_robustness_input),
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
            Indicator::AttentionDistance => self.attention_distance,
            Indicator::PaperSpectralEntropy => self.paper_spectral_entropy,
            Indicator::PaperEffectiveRank => self.paper_effective_rank,
            Indicator::PaperSparsity => self.paper_sparsity,
            Indicator::PaperAlignment => self.paper_alignment,
            Indicator::GiniSelectivity => self.gini_selectivity,
            Indicator::PaperRobustnessInput => self.paper_robustness_input,
        }
    }

    /// What `indicator` reads for perfectly uniform attention on the same map, where that is
    /// defined: 0 for our selectivity, 1 - 1/N for the Gini form, the grid's mean patch distance
    /// for the attention distance. Tables and figures show it beside the value.
    pub fn uniform_value(&self, indicator: Indicator) -> Option<f64> {
        match indicator {
            Indicator::Selectivity => Some(0.0),
            Indicator::GiniSelectivity => self.gini_uniform,
            Indicator::AttentionDistance => self.attention_distance_uniform,
            _ => None,
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
    AttentionDistance,
    PaperSpectralEntropy,
    PaperEffectiveRank,
    PaperSparsity,
    PaperAlignment,
    GiniSelectivity,
    PaperRobustnessInput,
}

impl Indicator {
    /// Ours: the six of `docs/spectral.md` and the attention distance (7).
    pub const OURS: [Indicator; 9] = [
        Indicator::SpectralEntropy,
        Indicator::EffectiveRank,
        Indicator::HoyerSparsity,
        Indicator::SmallSigmaShare,
        Indicator::AngularAlignment,
        Indicator::Selectivity,
        Indicator::RobustnessInput,
        Indicator::RobustnessSigma,
        Indicator::AttentionDistance,
    ];

    /// The SVDA reference code's forms, reported beside ours.
    pub const PAPER: [Indicator; 6] = [
        Indicator::PaperSpectralEntropy,
        Indicator::PaperEffectiveRank,
        Indicator::PaperSparsity,
        Indicator::PaperAlignment,
        Indicator::GiniSelectivity,
        Indicator::PaperRobustnessInput,
    ];

    /// All values in the order of `docs/spectral.md`: [`Self::OURS`], then [`Self::PAPER`].
    pub const ALL: [Indicator; 15] = {
        let mut all = [Indicator::SpectralEntropy; 15];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < Self::OURS.len() {
                Self::OURS[i]
            } else {
                Self::PAPER[i - Self::OURS.len()]
            };
            i += 1;
        }
        all
    };

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
            Indicator::AttentionDistance => "attention_distance",
            Indicator::PaperSpectralEntropy => "paper_spectral_entropy",
            Indicator::PaperEffectiveRank => "paper_effective_rank",
            Indicator::PaperSparsity => "paper_sparsity",
            Indicator::PaperAlignment => "paper_alignment",
            Indicator::GiniSelectivity => "gini_selectivity",
            Indicator::PaperRobustnessInput => "paper_robustness_input",
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
    let paper_robustness_input = (!input.perturbed_input.is_empty())
        .then(|| stats.change_per_entry.first().copied())
        .flatten();
    let distance = match &input.grid {
        Some(grid) => mean_attention_distance(input.attention, grid)?
            .map(|d| (d, grid.patch_size(), grid.uniform_distance())),
        None => None,
    };
    let paper_sigma = match input.sigma {
        Some(sigma) => Some((
            paper_spectral_entropy(sigma)?,
            paper_effective_rank(sigma)?,
            paper_sparsity(sigma)?,
        )),
        None => None,
    };
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
            attention_distance: distance.map(|d| d.0),
            attention_distance_px: distance.map(|d| d.0 * d.1),
            attention_distance_uniform: distance.map(|d| d.2),
            paper_spectral_entropy: paper_sigma.map(|s| s.0),
            paper_effective_rank: paper_sigma.map(|s| s.1),
            paper_sparsity: paper_sigma.map(|s| s.2),
            paper_alignment: directions.same_token_alignment(),
            gini_selectivity: Some(stats.gini_selectivity),
            gini_uniform: Some(gini_uniform(input.attention.ncols())),
            paper_robustness_input,
        },
    })
}
