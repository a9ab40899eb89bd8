//! AdamW (Loshchilov & Hutter 2019) over a `VarStore`, with explicit moment tensors so that a
//! checkpoint holds the whole optimiser state and a resumed run continues bit for bit (tch's
//! `nn::Optimizer` does not expose its moments). Two parameter groups: the backbone (`encoder.*`)
//! and everything else (decoder, head), each with its own peak learning rate; a linear warm-up then
//! cosine decay; global gradient-norm clipping.
//!
//! Update per parameter p with gradient g at step t (1-based):
//! m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr wd p (decoupled decay, only tensors with
//! two or more dimensions: biases, norms, embeddings' 1-d scales, SVDA's sigma and DEPICT's class
//! embeddings are not decayed);
//! p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

use std::collections::BTreeMap;

use tch::{Kind, Tensor, nn};

use crate::config::OptimConfig;

/// SVDA's spectrum (`sigma` or `log_sigma`, heads x d, so two-dimensional like a weight) and its
/// optional per-head `log_temperature`: they have their own learning rate (`svda.lr` of the
/// attention config) and no weight decay, which would pull attention towards uniform.
fn is_sigma(name: &str) -> bool {
    [".attn.sigma", ".attn.log_sigma", ".attn.log_temperature"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// DEPICT's class embeddings (K x D, two-dimensional like a weight): not decayed, as in the
/// DEPICT and Segmenter references, since decay would pull the class directions together.
fn is_class_embed(name: &str) -> bool {
    name.ends_with("depict.class_embed")
}

/// Learning rate multiplier at `step` (0-based): linear warm-up over `warmup` steps, then cosine
/// decay from 1 to `min_ratio` at `total`.
pub fn lr_factor(step: usize, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// AdamW state: first and second moments per trainable variable, and the update count.
#[derive(Debug)]
pub struct AdamW {
    config: OptimConfig,
    /// Peak learning rate of SVDA's spectrum; `None` uses the backbone's.
    sigma_lr: Option<f64>,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i64,
}

impl AdamW {
    /// Zero moments for every trainable variable of `vs`, sorted by name; `sigma_lr` is the peak
    /// learning rate of SVDA's spectrum (`None`: the backbone's).
    pub fn new(vs: &nn::VarStore, config: &OptimConfig, sigma_lr: Option<f64>) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |p: &Tensor| Tensor::zeros_like(p).detach();
        let m = params.iter().map(|(_, p)| zeros(p)).collect();
        let v = params.iter().map(|(_, p)| zeros(p)).collect();
        Self {
            config: config.clone(),
            sigma_lr,
            params,
            m,
            v,
            step: 0,
        }
    }

    /// The trainable variables it updates, sorted by name (the same order in every process).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// The peak learning rates of the backbone and decoder groups times `factor`.
    pub fn learning_rates(&self, factor: f64) -> (f64, f64) {
        (
            self.config.lr_backbone * factor,
            self.config.lr_decoder * factor,
        )
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The global L2 norm of all gradients (0 for variables without one): one norm per tensor and
    /// a single read-back, as torch's `clip_grad_norm_`.
    pub fn grad_norm(&self) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(Tensor::defined)
                .map(|g| g.norm())
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            Tensor::stack(&norms, 0)
                .to_kind(Kind::Double)
                .norm()
                .double_value(&[])
        })
    }

    /// Clips gradients to `clip_grad_norm` (if set), then applies one AdamW update with the
    /// learning rates scaled by `factor`. Returns the gradient norm before clipping, or, when that
    /// norm is NaN or infinite, `Err(norm)` without touching any parameter or moment.
    pub fn step(&mut self, factor: f64) -> Result<f64, f64> {
        let norm = self.grad_norm();
        if !norm.is_finite() {
            return Err(norm);
        }
        let clip = self.config.clip_grad_norm;
        let scale = if clip > 0.0 && norm > clip {
            clip / (norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let c = &self.config;
        let (b1, b2) = (c.beta1, c.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let (lr_backbone, lr_decoder) = self.learning_rates(factor);
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter_mut().enumerate() {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                // In place wherever a buffer can be reused: the gradient is cleared before the next
                // step anyway, and this loop runs over every tensor of the model on every step.
                if scale != 1.0 {
                    let _ = g.g_mul_scalar_(scale);
                }
                let lr = match self.sigma_lr {
                    Some(lr_sigma) if is_sigma(name) => lr_sigma * factor,
                    _ if name.starts_with("encoder.") => lr_backbone,
                    _ => lr_decoder,
                };
                // m = b1 m + (1 - b1) g
                let m = &mut self.m[i];
                let _ = m.lerp_(&g, 1.0 - b1);
                // v = b2 v + (1 - b2) g^2
                let v = &mut self.v[i];
                let _ = v.g_mul_scalar_(b2);
                let _ = v.addcmul_(&g, &(&g * (1.0 - b2)));
                if c.weight_decay > 0.0 && p.dim() >= 2 && !is_sigma(name) && !is_class_embed(name)
                {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                // p -= lr (m / bc1) / (sqrt(v / bc2) + eps), as p += m / denom with
                // denom = (sqrt(v) / sqrt(bc2) + eps) * (-bc1 / lr).
                let mut denom = v.sqrt();
                let _ = denom.g_mul_scalar_(1.0 / bc2.sqrt());
                let _ = denom.g_add_scalar_(c.eps);
                let _ = denom.g_mul_scalar_(-bc1 / lr);
                let _ = p.addcdiv_(&*m, &denom);
            }
        });
        Ok(norm)
    }

    /// The moments as named tensors (`m.<var>`, `v.<var>`) plus the step count, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("v.{name}"), self.v[i].shallow_clone()));
        }
        out.push(("step".into(), Tensor::from(self.step)));
        out
    }

    /// Restores moments and step from [`AdamW::state`]; every variable must be present with its
    /// shape, otherwise the error lists what does not fit.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), String> {
        let mut map: BTreeMap<String, Tensor> = state.into_iter().collect();
        let step = map
            .remove("step")
            .ok_or_else(|| "optimiser state has no `step`".to_string())?;
        let mut problems = Vec::new();
        let mut m_new = Vec::with_capacity(self.params.len());
        let mut v_new = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            for (prefix, dst) in [("m", &mut m_new), ("v", &mut v_new)] {
                let key = format!("{prefix}.{name}");
                match map.remove(&key) {
                    Some(t) if t.size() == p.size() => {
                        dst.push(t.to_kind(p.kind()).to_device(p.device()))
                    }
                    Some(t) => problems.push(format!(
                        "{key}: shape {:?}, expected {:?}",
                        t.size(),
                        p.size()
                    )),
                    None => problems.push(format!("{key}: missing")),
                }
            }
        }
        problems.extend(map.keys().map(|k| format!("{k}: unexpected")));
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        self.m = m_new;
        self.v = v_new;
        self.step = step.int64_value(&[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_rises_linearly_and_cosine_ends_at_the_floor() {
        assert!((lr_factor(0, 10, 100, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_factor(9, 10, 100, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_factor(10, 10, 100, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_factor(100, 10, 100, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_factor(55, 10, 100, 0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn one_step_on_a_quadratic_moves_each_weight_by_the_learning_rate() {
        // With bias correction Adam's first step is lr * sign(g).
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs
            .root()
            .sub("encoder")
            .var("w", &[3], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[2], nn::Init::Const(-1.0));
        let mut config = crate::config::TrainConfig::preset("test").unwrap().optim;
        config.lr_backbone = 0.1;
        config.lr_decoder = 0.01;
        config.weight_decay = 0.0;
        config.clip_grad_norm = 0.0;
        let mut opt = AdamW::new(&vs, &config, None);
        let loss = w.square().sum(Kind::Float) + b.square().sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(1.0).unwrap();
        let w: Vec<f32> = Vec::try_from(&w.detach()).unwrap();
        let b: Vec<f32> = Vec::try_from(&b.detach()).unwrap();
        assert!(w.iter().all(|x| (x - 0.9).abs() < 1e-5), "{w:?}");
        assert!(b.iter().all(|x| (x + 0.99).abs() < 1e-5), "{b:?}");
    }

    #[test]
    fn svda_spectrum_takes_its_own_learning_rate_when_one_is_set() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let enc = vs.root().sub("encoder").sub("blocks").sub("0").sub("attn");
        let spectrum = ["sigma", "log_sigma", "log_temperature"]
            .map(|name| enc.var(name, &[2], nn::Init::Const(1.0)));
        let qkv = enc.var("qkv_bias", &[2], nn::Init::Const(1.0));
        let mut config = crate::config::TrainConfig::preset("test").unwrap().optim;
        config.lr_backbone = 0.01;
        config.weight_decay = 0.0;
        config.clip_grad_norm = 0.0;
        let mut opt = AdamW::new(&vs, &config, Some(0.5));
        let loss =
            spectrum.iter().map(|t| t.sum(Kind::Float)).sum::<Tensor>() + qkv.sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(1.0).unwrap();
        for t in &spectrum {
            let v: Vec<f32> = Vec::try_from(&t.detach()).unwrap();
            assert!(v.iter().all(|x| (x - 0.5).abs() < 1e-5), "{v:?}");
        }
        let qkv: Vec<f32> = Vec::try_from(&qkv.detach()).unwrap();
        assert!(qkv.iter().all(|x| (x - 0.99).abs() < 1e-5), "{qkv:?}");
    }

    #[test]
    fn weight_decay_shrinks_weights_but_not_svda_sigma() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let enc = vs.root().sub("encoder").sub("blocks").sub("0").sub("attn");
        let sigma = enc.var("log_sigma", &[2, 3], nn::Init::Const(1.0));
        let weight = enc.var("proj_weight", &[2, 3], nn::Init::Const(1.0));
        let mut config = crate::config::TrainConfig::preset("test").unwrap().optim;
        config.lr_backbone = 0.1;
        config.weight_decay = 0.5;
        config.clip_grad_norm = 0.0;
        let mut opt = AdamW::new(&vs, &config, None);
        // A zero gradient leaves only the decay: p -= lr * wd * p.
        let loss = (sigma.sum(Kind::Float) + weight.sum(Kind::Float)) * 0.0;
        opt.zero_grad();
        loss.backward();
        opt.step(1.0).unwrap();
        let sigma: Vec<f32> = Vec::try_from(&sigma.detach().flatten(0, -1)).unwrap();
        let weight: Vec<f32> = Vec::try_from(&weight.detach().flatten(0, -1)).unwrap();
        assert!(sigma.iter().all(|x| (x - 1.0).abs() < 1e-6), "{sigma:?}");
        assert!(weight.iter().all(|x| (x - 0.95).abs() < 1e-6), "{weight:?}");
    }
}
