//! The serde configuration of one attention layer (`docs/attention.md`), so that a run folder can
//! record exactly which attention a model used.

use serde::{Deserialize, Serialize};

use crate::AttentionError;

/// Which score function the layer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// A = softmax(Q K^T / sqrt(d)), as in timm and HF ViT.
    #[default]
    Standard,
    /// A = softmax(Q^ diag(sigma) K^^T / sqrt(d)) with row-normalised Q^, K^ and a learnable sigma
    /// that starts at a gain (docs/attention.md, "Making SVDA select"): glassbox's SVDA.
    Svda,
    /// SVDA as the public reference code of the SVDA papers trains it: sigma ~ N(1, 0.1), no gain,
    /// plus an orthogonality penalty on W_q and W_k and an entropy penalty on sigma^2. Kept so
    /// that the published behaviour can be reproduced and compared with ours.
    #[serde(rename = "svda-paper", alias = "svda_paper")]
    SvdaPaper,
}

impl AttentionKind {
    /// Every kind, in the order tables list them.
    pub const ALL: [AttentionKind; 3] = [
        AttentionKind::Standard,
        AttentionKind::Svda,
        AttentionKind::SvdaPaper,
    ];

    /// The name configs and the CLI use: `standard`, `svda` or `svda-paper`.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::Standard => "standard",
            AttentionKind::Svda => "svda",
            AttentionKind::SvdaPaper => "svda-paper",
        }
    }

    /// Whether the layer has a sigma (both SVDA kinds).
    pub fn has_sigma(self) -> bool {
        !matches!(self, AttentionKind::Standard)
    }
}

impl std::str::FromStr for AttentionKind {
    type Err = AttentionError;

    /// Parses the names of [`AttentionKind::name`]; anything else is an error naming the value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "standard" => Ok(AttentionKind::Standard),
            "svda" => Ok(AttentionKind::Svda),
            "svda-paper" | "svda_paper" => Ok(AttentionKind::SvdaPaper),
            other => Err(AttentionError::InvalidConfig(format!(
                "unknown attention kind {other:?}: expected standard, svda or svda-paper"
            ))),
        }
    }
}

/// How sigma is stored as a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigmaParameterisation {
    /// The variable `sigma` is sigma itself (the SVDA papers).
    Linear,
    /// The variable `log_sigma` holds s and sigma = exp(s): positive like singular values, and
    /// Adam's roughly constant steps on s become multiplicative steps on sigma.
    Log,
}

/// SVDA's options; every field left out takes the value of the layer's kind
/// ([`SvdaOptions::for_kind`]), so a config names only what it changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvdaConfig {
    /// The initial gain g: sigma starts at g without a temperature; with one, the temperature
    /// starts at g and sigma at ones. Default 10 sqrt(d) for svda, 1 for svda-paper (whose sigma
    /// is drawn from N(g, (0.1 g)^2)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain: Option<f64>,
    /// Linear or log storage of sigma.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameterisation: Option<SigmaParameterisation>,
    /// A learnable per-head temperature (stored as its log) multiplying sigma, so that sigma's
    /// shape is learned apart from the head's overall sharpness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<bool>,
    /// Learning rate of sigma and the temperature: a number, or `"backbone"` for the backbone's
    /// (svda-paper's default; svda's is [`DEFAULT_SVDA_LR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<SpectrumRate>,
    /// lambda_o of the orthogonality penalty mean((W_q^T W_q - I)^2) + mean((W_k^T W_k - I)^2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orthogonality_weight: Option<f64>,
    /// lambda_e of the penalty on the entropy of p = sigma^2 / sum sigma^2 (natural log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_weight: Option<f64>,
}

/// The learning rate of SVDA's spectrum: its own, or the backbone's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateRepr", into = "RateRepr")]
pub enum SpectrumRate {
    /// A peak rate of its own (scaled by the run's schedule like every other rate).
    Rate(f64),
    /// The backbone's peak rate.
    Backbone,
}

impl SpectrumRate {
    /// The rate to use, `None` meaning the backbone's.
    pub fn own(self) -> Option<f64> {
        match self {
            SpectrumRate::Rate(r) => Some(r),
            SpectrumRate::Backbone => None,
        }
    }
}

/// How [`SpectrumRate`] is written: a number or the word `backbone`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RateRepr {
    Number(f64),
    Word(String),
}

impl TryFrom<RateRepr> for SpectrumRate {
    type Error = String;

    fn try_from(repr: RateRepr) -> Result<Self, String> {
        match repr {
            RateRepr::Number(r) => Ok(SpectrumRate::Rate(r)),
            RateRepr::Word(w) if w == "backbone" => Ok(SpectrumRate::Backbone),
            RateRepr::Word(w) => Err(format!(
                "svda.lr must be a number or \"backbone\", got {w:?}"
            )),
        }
    }
}

impl From<SpectrumRate> for RateRepr {
    fn from(rate: SpectrumRate) -> Self {
        match rate {
            SpectrumRate::Rate(r) => RateRepr::Number(r),
            SpectrumRate::Backbone => RateRepr::Word("backbone".into()),
        }
    }
}

/// How SVDA's sigma starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SigmaInit {
    /// Every entry equal to the value.
    Constant(f64),
    /// Entries drawn from N(mean, std^2) (svda-paper: N(1, 0.1^2)).
    Normal { mean: f64, std: f64 },
}

/// [`SvdaConfig`] with every default filled in for one kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvdaOptions {
    pub sigma_init: SigmaInit,
    pub parameterisation: SigmaParameterisation,
    /// Initial temperature when the layer has one.
    pub temperature: Option<f64>,
    pub lr: Option<f64>,
    pub orthogonality_weight: f64,
    pub entropy_weight: f64,
}

/// The default logit scale of glassbox's SVDA: the initial gain is g = 10 sqrt(d), so a logit
/// g cos / sqrt(d) = 10 cos, Swin V2's initial cosine-attention scale. Chosen by measurement
/// (docs/attention.md, "Making SVDA select"); at initialisation SVDA's logit spread is then within
/// 2x of standard attention's on the same input.
pub const DEFAULT_SVDA_LOGIT_SCALE: f64 = 10.0;

/// The default learning rate of log sigma and the log temperature (docs/attention.md): Adam's
/// steps of about this size on the logs are 3% multiplicative steps on sigma and the gain.
pub const DEFAULT_SVDA_LR: f64 = 0.03;

impl SvdaOptions {
    /// The defaults of `kind` for heads of width `head_dim` (standard attention has none),
    /// overridden by `config`. glassbox's svda: log sigma at ones, a per-head temperature at
    /// 10 sqrt(d), learning rate [`DEFAULT_SVDA_LR`].
    pub fn for_kind(kind: AttentionKind, head_dim: i64, config: &SvdaConfig) -> Option<Self> {
        let base = match kind {
            AttentionKind::Standard => return None,
            AttentionKind::Svda => SvdaOptions {
                sigma_init: SigmaInit::Constant(1.0),
                parameterisation: SigmaParameterisation::Log,
                temperature: Some(DEFAULT_SVDA_LOGIT_SCALE * (head_dim as f64).sqrt()),
                lr: Some(DEFAULT_SVDA_LR),
                orthogonality_weight: 0.0,
                entropy_weight: 0.0,
            },
            AttentionKind::SvdaPaper => SvdaOptions {
                sigma_init: SigmaInit::Normal {
                    mean: 1.0,
                    std: 0.1,
                },
                parameterisation: SigmaParameterisation::Linear,
                temperature: None,
                lr: None,
                orthogonality_weight: 1e-3,
                entropy_weight: 1e-3,
            },
        };
        let mut o = base;
        let gain = config.gain.unwrap_or(base.initial_gain());
        let temperature = config.temperature.unwrap_or(base.temperature.is_some());
        let relative_std = match base.sigma_init {
            SigmaInit::Constant(_) => None,
            SigmaInit::Normal { mean, std } => Some(std / mean),
        };
        // With a temperature, it carries the gain and sigma starts at ones (or N(1, 0.1));
        // without, sigma itself starts at the gain.
        let sigma_mean = if temperature { 1.0 } else { gain };
        o.sigma_init = match relative_std {
            None => SigmaInit::Constant(sigma_mean),
            Some(relative) => SigmaInit::Normal {
                mean: sigma_mean,
                std: relative * sigma_mean,
            },
        };
        o.temperature = temperature.then_some(gain);
        if let Some(p) = config.parameterisation {
            o.parameterisation = p;
        }
        if let Some(rate) = config.lr {
            o.lr = rate.own();
        }
        o.orthogonality_weight = config
            .orthogonality_weight
            .unwrap_or(o.orthogonality_weight);
        o.entropy_weight = config.entropy_weight.unwrap_or(o.entropy_weight);
        Some(o)
    }

    /// These options written out in full, so that a saved config keeps meaning the same model when
    /// the defaults change: [`SvdaOptions::for_kind`] of the result gives `self` back.
    pub fn to_config(&self) -> SvdaConfig {
        SvdaConfig {
            gain: Some(self.initial_gain()),
            parameterisation: Some(self.parameterisation),
            temperature: Some(self.temperature.is_some()),
            lr: Some(self.lr.map_or(SpectrumRate::Backbone, SpectrumRate::Rate)),
            orthogonality_weight: Some(self.orthogonality_weight),
            entropy_weight: Some(self.entropy_weight),
        }
    }

    /// The mean initial sigma times the temperature: the gain g of the scores g cos / sqrt(d).
    pub fn initial_gain(&self) -> f64 {
        let sigma = match self.sigma_init {
            SigmaInit::Constant(g) => g,
            SigmaInit::Normal { mean, .. } => mean,
        };
        sigma * self.temperature.unwrap_or(1.0)
    }
}

impl SvdaConfig {
    /// Checks the set values: a gain and weights that make sense, a positive learning rate.
    pub fn validate(&self) -> Result<(), AttentionError> {
        let bad = |msg: String| Err(AttentionError::InvalidConfig(msg));
        if let Some(g) = self.gain
            && !(g.is_finite() && g > 0.0)
        {
            return bad(format!(
                "svda.gain must be a positive number, got {g} (sigma starts there)"
            ));
        }
        if let Some(SpectrumRate::Rate(lr)) = self.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return bad(format!(
                "svda.lr must be a positive number or \"backbone\", got {lr}"
            ));
        }
        for (name, w) in [
            ("svda.orthogonality_weight", self.orthogonality_weight),
            ("svda.entropy_weight", self.entropy_weight),
        ] {
            if let Some(w) = w
                && !(w.is_finite() && w >= 0.0)
            {
                return bad(format!("{name} must be zero or positive, got {w}"));
            }
        }
        Ok(())
    }
}

/// Shape and options of one multi-head self-attention layer; `dim` and `num_heads` are required,
/// everything else has the timm default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    /// Token width D.
    pub dim: i64,
    /// Number of heads H; must divide `dim`.
    pub num_heads: i64,
    /// Standard or SVDA scores.
    #[serde(default)]
    pub kind: AttentionKind,
    /// Whether the fused `qkv` projection has a bias (timm's `qkv_bias`, true for ViT/DPT).
    #[serde(default = "default_qkv_bias")]
    pub qkv_bias: bool,
    /// Dropout probability on the attention probabilities, applied only when training.
    #[serde(default)]
    pub attn_drop: f64,
    /// Dropout probability on the output projection, applied only when training.
    #[serde(default)]
    pub proj_drop: f64,
    /// SVDA's options (ignored by standard attention); unset fields take the kind's defaults.
    #[serde(default)]
    pub svda: SvdaConfig,
}

fn default_qkv_bias() -> bool {
    true
}

impl AttentionConfig {
    /// A layer of width `dim` with `num_heads` heads, qkv bias and no dropout.
    pub fn new(dim: i64, num_heads: i64, kind: AttentionKind) -> Self {
        Self {
            dim,
            num_heads,
            kind,
            qkv_bias: true,
            attn_drop: 0.0,
            proj_drop: 0.0,
            svda: SvdaConfig::default(),
        }
    }

    /// SVDA's options with the kind's defaults filled in; `None` for standard attention.
    pub fn svda_options(&self) -> Option<SvdaOptions> {
        SvdaOptions::for_kind(self.kind, self.head_dim(), &self.svda)
    }

    /// Per-head width d = D / H.
    pub fn head_dim(&self) -> i64 {
        self.dim / self.num_heads
    }

    /// The score scale 1 / sqrt(d), shared by both kinds.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }

    /// Checks that the numbers describe a real layer, so that a bad config file fails at load time.
    pub fn validate(&self) -> Result<(), AttentionError> {
        if self.dim < 1 || self.num_heads < 1 {
            return Err(AttentionError::InvalidConfig(format!(
                "dim ({}) and num_heads ({}) must be at least 1",
                self.dim, self.num_heads
            )));
        }
        if self.dim % self.num_heads != 0 {
            return Err(AttentionError::InvalidConfig(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            )));
        }
        for (name, p) in [("attn_drop", self.attn_drop), ("proj_drop", self.proj_drop)] {
            if !(0.0..1.0).contains(&p) {
                return Err(AttentionError::InvalidConfig(format!(
                    "{name} must be a probability in [0, 1), got {p}"
                )));
            }
        }
        self.svda.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fills_timm_defaults_from_minimal_json() {
        let c: AttentionConfig = serde_json::from_str(r#"{"dim": 192, "num_heads": 3}"#).unwrap();
        assert_eq!(c, AttentionConfig::new(192, 3, AttentionKind::Standard));
        assert_eq!(c.head_dim(), 64);
        assert!((c.scale() - 0.125).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_through_json_with_lowercase_kind() {
        let c = AttentionConfig {
            attn_drop: 0.1,
            qkv_bias: false,
            ..AttentionConfig::new(768, 12, AttentionKind::Svda)
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""kind":"svda""#), "{text}");
        let back: AttentionConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn written_out_options_give_the_same_options_back() {
        for kind in [AttentionKind::Svda, AttentionKind::SvdaPaper] {
            for config in [
                SvdaConfig::default(),
                SvdaConfig {
                    gain: Some(12.0),
                    temperature: Some(false),
                    ..SvdaConfig::default()
                },
                SvdaConfig {
                    temperature: Some(true),
                    parameterisation: Some(SigmaParameterisation::Linear),
                    entropy_weight: Some(0.5),
                    lr: Some(SpectrumRate::Backbone),
                    ..SvdaConfig::default()
                },
            ] {
                let options = SvdaOptions::for_kind(kind, 64, &config).unwrap();
                let again = SvdaOptions::for_kind(kind, 64, &options.to_config()).unwrap();
                assert_eq!(again, options, "{kind:?} {config:?}");
            }
        }
        // The rate is a number or the word "backbone", nothing else.
        let c: SvdaConfig = serde_json::from_str(r#"{"lr": "backbone"}"#).unwrap();
        assert_eq!(c.lr, Some(SpectrumRate::Backbone));
        let c: SvdaConfig = serde_json::from_str(r#"{"lr": 0.5}"#).unwrap();
        assert_eq!(c.lr, Some(SpectrumRate::Rate(0.5)));
        let e = serde_json::from_str::<SvdaConfig>(r#"{"lr": "decoder"}"#).unwrap_err();
        assert!(e.to_string().contains("\"decoder\""), "{e}");
        let ours = SvdaOptions::for_kind(AttentionKind::Svda, 64, &SvdaConfig::default()).unwrap();
        assert_eq!(ours.temperature, Some(80.0));
        assert_eq!(ours.sigma_init, SigmaInit::Constant(1.0));
        assert!(
            SvdaOptions::for_kind(AttentionKind::Standard, 64, &SvdaConfig::default()).is_none()
        );
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let r: Result<AttentionConfig, _> =
            serde_json::from_str(r#"{"dim": 8, "num_heads": 2, "heads": 2}"#);
        assert!(r.is_err());
    }

    #[test]
    fn validate_rejects_heads_that_do_not_divide_dim_and_bad_dropout() {
        let msg = AttentionConfig::new(10, 3, AttentionKind::Svda)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not divisible"), "{msg}");
        let msg = AttentionConfig::new(0, 1, AttentionKind::Standard)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at least 1"), "{msg}");
        let c = AttentionConfig {
            proj_drop: 1.0,
            ..AttentionConfig::new(8, 2, AttentionKind::Standard)
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("proj_drop"), "{msg}");
        assert!(
            AttentionConfig::new(8, 2, AttentionKind::Svda)
                .validate()
                .is_ok()
        );
    }
}
