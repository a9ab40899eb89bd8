//! The ViT backbone of DPT (`docs/architecture.md`; Dosovitskiy et al. 2021, Ranftl et al. 2021):
//! patch embedding, a readout (class) token, learned position embeddings resized to the input
//! grid, and pre-LN blocks x + Attn(LN(x)), x + MLP(LN(x)). It returns the hooked block outputs
//! (before any final norm) as values, and the attention maps of every block when asked.

use std::borrow::Borrow;

use glassbox_attention::{Attention, AttentionMaps, gather_rows, scatter_rows};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::bit::ResNetStem;
use crate::config::Backbone;
use crate::sparse::{Saliency, SaliencyScorer, SelectionQuality, check_keep_ratio, kept_count};
use crate::{EncoderError, VitConfig};

/// The two-layer GELU MLP of a block (timm names `fc1`, `fc2`).
#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    fn new(path: &nn::Path, cfg: &VitConfig) -> Self {
        Self {
            fc1: nn::linear(
                path / "fc1",
                cfg.hidden_size,
                cfg.intermediate_size,
                Default::default(),
            ),
            fc2: nn::linear(
                path / "fc2",
                cfg.intermediate_size,
                cfg.hidden_size,
                Default::default(),
            ),
        }
    }

    fn forward_t(&self, x: &Tensor, dropout: f64, train: bool) -> Tensor {
        // Exact (erf) GELU, as timm's nn.GELU and HF's "gelu".
        let h = self.fc1.forward(x).gelu("none");
        self.fc2.forward(&h).dropout(dropout, train)
    }
}

/// One pre-LN transformer block (timm names `norm1`, `attn`, `norm2`, `mlp`).
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    mlp: Mlp,
    hidden_dropout: f64,
}

impl Block {
    fn new(path: &nn::Path, cfg: &VitConfig, index: usize) -> Result<Self, EncoderError> {
        let ln = nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        };
        Ok(Self {
            norm1: nn::layer_norm(path / "norm1", vec![cfg.hidden_size], ln),
            attn: Attention::new(path / "attn", &cfg.attention_config()).map_err(|source| {
                EncoderError::Attention {
                    block: index + 1,
                    source,
                }
            })?,
            norm2: nn::layer_norm(path / "norm2", vec![cfg.hidden_size], ln),
            mlp: Mlp::new(&(path / "mlp"), cfg),
            hidden_dropout: cfg.hidden_dropout,
        })
    }

    /// The block's attention layer, e.g. to read SVDA's sigma.
    pub fn attention(&self) -> &Attention {
        &self.attn
    }

    fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor, glassbox_attention::AttentionError> {
        let x = x + self.attn.forward_t(&self.norm1.forward(x), train)?;
        Ok(&x
            + self
                .mlp
                .forward_t(&self.norm2.forward(&x), self.hidden_dropout, train))
    }

    /// The sparse block (`docs/sparse.md`): the `kept` tokens (B x M, from the encoder's top-k)
    /// are the queries and the only rows attention projection and MLP touch; every token is a
    /// key and value, and the other rows come out bit-identical. With `mass`, also the attention
    /// mass each token received (B x N, no gradient).
    fn forward_kept_t(
        &self,
        x: &Tensor,
        kept: &Tensor,
        train: bool,
        mass: bool,
    ) -> Result<(Tensor, Option<Tensor>), glassbox_attention::AttentionError> {
        let (update, received) =
            self.attn
                .forward_kept_t(&self.norm1.forward(x), kept, train, mass)?;
        let rows = gather_rows(x, kept)? + update;
        let rows = &rows
            + self
                .mlp
                .forward_t(&self.norm2.forward(&rows), self.hidden_dropout, train);
        Ok((scatter_rows(x, kept, &rows)?, received))
    }

    fn forward_with_maps(
        &self,
        x: &Tensor,
        sigma: Option<&Tensor>,
    ) -> Result<(Tensor, AttentionMaps), glassbox_attention::AttentionError> {
        let normed = self.norm1.forward(x);
        let maps = match sigma {
            Some(sigma) => self.attn.forward_with_maps_and_sigma(&normed, sigma)?,
            None => self.attn.forward_with_maps(&normed)?,
        };
        let x = x + &maps.output;
        let out = &x + self.mlp.forward_t(&self.norm2.forward(&x), 0.0, false);
        Ok((out, maps))
    }
}

/// What one encoder pass gives the decoder.
#[derive(Debug)]
pub struct EncoderOutput {
    /// Block outputs at the configured hooks, each B x (1 + h*w) x D, readout token first.
    pub hooks: Vec<Tensor>,
    /// The patch grid (h, w) = (H / p, W / p) of the input.
    pub grid: (i64, i64),
    /// Attention maps of every block (first block first) when asked for, else empty.
    pub maps: Vec<AttentionMaps>,
    /// The sparse pass's selection, scores and (training) saliency mass; `None` when dense.
    pub saliency: Option<Saliency>,
    /// The hybrid backbone's first two ResNet stages, R0 (B x C0 x 4h x 4w) and R1
    /// (B x C1 x 2h x 2w), which DPT-Hybrid's decoder reads in place of the first two hooks;
    /// empty for the plain ViT.
    pub features: Vec<Tensor>,
}

/// What turns images into tokens: ViT's p x p patch convolution, or DPT-Hybrid's ResNet stem
/// whose stride-16 map a 1x1 convolution projects to D (timm's `HybridEmbed`: the stem under
/// `patch_embed.backbone`, the projection at `patch_embed.proj` either way).
#[derive(Debug)]
enum PatchEmbed {
    Patches(nn::Conv2D),
    Hybrid {
        backbone: ResNetStem,
        proj: nn::Conv2D,
    },
}

/// The embedded input of one pass.
struct Embedded {
    tokens: Tensor,
    grid: (i64, i64),
    features: Vec<Tensor>,
}

/// The ViT encoder. Parameter names are timm's (`patch_embed.proj`, `cls_token`, `pos_embed`,
/// `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`), so a timm checkpoint loads
/// by name; there is no final norm because DPT's hooks read the blocks before it. With the hybrid
/// backbone the ResNet stem lives under `patch_embed.backbone` ([`crate::bit`]).
#[derive(Debug)]
pub struct Encoder {
    config: VitConfig,
    patch_embed: PatchEmbed,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    /// Built when the config's keep_ratio < 1 (variables under `mask_predictor.`).
    scorer: Option<SaliencyScorer>,
    /// The keep ratio passes run at; the config's unless changed by [`Encoder::set_keep_ratio`].
    keep_ratio: f64,
}

impl Encoder {
    /// Creates the encoder's parameters under `path` (position embeddings and readout token
    /// drawn from N(0, 0.02^2), as timm and HF initialise them).
    pub fn new<'a>(
        path: impl Borrow<nn::Path<'a>>,
        config: &VitConfig,
    ) -> Result<Self, EncoderError> {
        config.validate()?;
        let path = path.borrow();
        let p = config.patch_size;
        let d = config.hidden_size;
        let embed = path / "patch_embed";
        let patch_embed = match &config.backbone {
            Backbone::Vit => {
                let conv = nn::ConvConfig {
                    stride: p,
                    ..Default::default()
                };
                PatchEmbed::Patches(nn::conv2d(&embed / "proj", config.num_channels, d, p, conv))
            }
            Backbone::Hybrid(bit) => PatchEmbed::Hybrid {
                backbone: ResNetStem::new(&(&embed / "backbone"), bit, config.num_channels)?,
                proj: nn::conv2d(
                    &embed / "proj",
                    bit.hidden_sizes[2],
                    d,
                    1,
                    Default::default(),
                ),
            },
        };
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let cls_token = path.var("cls_token", &[1, 1, d], init);
        let g = config.grid_size();
        let pos_embed = path.var("pos_embed", &[1, 1 + g * g, d], init);
        let blocks = (0..config.num_layers)
            .map(|i| Block::new(&(path / "blocks" / i), config, i))
            .collect::<Result<Vec<_>, _>>()?;
        let scorer = config
            .is_sparse()
            .then(|| SaliencyScorer::new(path / "mask_predictor", d));
        Ok(Self {
            config: config.clone(),
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            scorer,
            keep_ratio: config.keep_ratio,
        })
    }

    /// The keep ratio the passes run at (1 = dense).
    pub fn keep_ratio(&self) -> f64 {
        self.keep_ratio
    }

    /// Runs later passes at another keep ratio, e.g. a sparse-trained model densely (1) or at a
    /// lower rho. A ratio below 1 needs the saliency scorer, which only a model configured sparse
    /// has; the error says so.
    pub fn set_keep_ratio(&mut self, keep_ratio: f64) -> Result<(), EncoderError> {
        check_keep_ratio(keep_ratio)?;
        if keep_ratio < 1.0 && self.scorer.is_none() {
            return Err(EncoderError::InvalidConfig(format!(
                "keep_ratio {keep_ratio} needs a saliency scorer, and this model was built dense \
                 (keep_ratio = 1); train it with a keep ratio below 1 to get one"
            )));
        }
        self.keep_ratio = keep_ratio;
        Ok(())
    }

    /// The saliency scorer, when the model is configured sparse.
    pub fn scorer(&self) -> Option<&SaliencyScorer> {
        self.scorer.as_ref()
    }

    /// The configuration this encoder was built from.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The transformer blocks, first block first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The sum over blocks of the attention regulariser ([`Attention::penalty`]: svda-paper's
    /// orthogonality and sigma-entropy terms), to add to the training loss; `None` when no block
    /// has one.
    pub fn penalty(&self) -> Result<Option<Tensor>, EncoderError> {
        let mut total: Option<Tensor> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let penalty = block
                .attention()
                .penalty()
                .map_err(|source| EncoderError::Attention { block: i, source })?;
            if let Some(p) = penalty {
                total = Some(match total {
                    Some(t) => t.f_add(&p)?,
                    None => p,
                });
            }
        }
        Ok(total)
    }

    /// Checks that `images` is B x C x H x W float with H, W multiples of p, and returns the grid.
    fn check_images(&self, images: &Tensor) -> Result<(i64, i64), EncoderError> {
        let p = self.config.patch_size;
        let c = self.config.num_channels;
        let shape = images.size();
        let float = matches!(
            images.kind(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        );
        match shape[..] {
            [b, ch, h, w]
                if float && b >= 1 && ch == c && h >= p && w >= p && h % p == 0 && w % p == 0 =>
            {
                Ok((h / p, w / p))
            }
            _ => Err(EncoderError::InputShape {
                expected: format!("B x {c} x H x W floats with H and W positive multiples of {p}"),
                kind: images.kind(),
                shape,
            }),
        }
    }

    /// Position embeddings for a grid of h x w patches: the stored square grid resized bilinearly
    /// (align_corners = false), the readout token's embedding kept as it is.
    pub fn position_embeddings(&self, grid: (i64, i64)) -> Tensor {
        resize_position_embeddings(&self.pos_embed, self.config.grid_size(), grid)
    }

    /// Patch tokens with the readout token prepended and position embeddings added:
    /// B x (1 + h*w) x D, plus the grid (h, w).
    pub fn embed_t(
        &self,
        images: &Tensor,
        train: bool,
    ) -> Result<(Tensor, (i64, i64)), EncoderError> {
        let embedded = self.embed(images, train)?;
        Ok((embedded.tokens, embedded.grid))
    }

    /// [`Self::embed_t`] plus the hybrid stem's R0 and R1.
    fn embed(&self, images: &Tensor, train: bool) -> Result<Embedded, EncoderError> {
        let grid = self.check_images(images)?;
        let b = images.size()[0];
        let d = self.config.hidden_size;
        let (map, features) = match &self.patch_embed {
            PatchEmbed::Patches(conv) => (conv.forward(images), Vec::new()),
            PatchEmbed::Hybrid { backbone, proj } => {
                let mut stages = backbone.forward(images);
                let last = stages.pop().expect("the stem has three stages");
                (proj.forward(&last), stages)
            }
        };
        let patches = map.flatten(2, 3).transpose(1, 2);
        let readout = self.cls_token.expand([b, 1, d], false);
        let tokens = Tensor::cat(&[readout, patches], 1) + self.position_embeddings(grid);
        Ok(Embedded {
            tokens: tokens.dropout(self.config.hidden_dropout, train),
            grid,
            features,
        })
    }

    /// The training and inference pass: fused attention, no maps kept. Below keep ratio 1, the
    /// sparse pass (`docs/sparse.md`); its selection comes back in [`EncoderOutput::saliency`].
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<EncoderOutput, EncoderError> {
        let Embedded {
            tokens,
            grid,
            features,
        } = self.embed(images, train)?;
        let mut out = match &self.scorer {
            Some(scorer) if self.keep_ratio < 1.0 => {
                self.sparse_pass(scorer, tokens, grid, train, train)
            }
            _ => self.dense_pass(tokens, grid, train),
        }?;
        out.features = features;
        Ok(out)
    }

    /// The scorer's logits on the (detached) patch embeddings and the kept token indices:
    /// B x N_p and B x (1 + k), ascending, readout token 0 first.
    pub fn select(&self, scorer: &SaliencyScorer, tokens: &Tensor) -> (Tensor, Tensor) {
        let n = tokens.size()[1];
        let np = n - 1;
        let logits = scorer.forward(&tokens.narrow(1, 1, np).detach());
        let k = kept_count(self.keep_ratio, np);
        let (_, top) = logits.detach().topk(k, 1, true, false);
        let readout = top.zeros_like().narrow(1, 0, 1);
        let (kept, _) = Tensor::cat(&[readout, top + 1], 1).sort(1, false);
        (logits, kept)
    }

    /// How well a sparse encoder's selection covers attention on `images` (evaluation mode, no
    /// gradient; `docs/sparse.md`): its own target against the one a dense pass of the same
    /// weights would give. `None` when the encoder runs dense.
    pub fn selection_quality(
        &self,
        images: &Tensor,
    ) -> Result<Option<SelectionQuality>, EncoderError> {
        let Some(scorer) = self.scorer.as_ref().filter(|_| self.keep_ratio < 1.0) else {
            return Ok(None);
        };
        tch::no_grad(|| {
            let Embedded {
                tokens: x, grid, ..
            } = self.embed(images, false)?;
            let sparse = self.sparse_pass(scorer, x, grid, false, true)?;
            let saliency = sparse
                .saliency
                .expect("the sparse pass returns its selection");
            let dense = self.analysis_pass(images, None)?;
            let np = grid.0 * grid.1;
            let dense_mass = dense
                .maps
                .iter()
                .map(|m| {
                    m.probabilities
                        .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float)
                })
                .reduce(|a, b| a + b)
                .expect("an encoder has at least one block")
                .narrow(1, 1, np);
            Ok(Some(SelectionQuality::measure(&saliency, &dense_mass)))
        })
    }

    fn sparse_pass(
        &self,
        scorer: &SaliencyScorer,
        mut x: Tensor,
        grid: (i64, i64),
        train: bool,
        measure_mass: bool,
    ) -> Result<EncoderOutput, EncoderError> {
        let (logits, kept) = self.select(scorer, &x);
        let mut hooks = Vec::with_capacity(self.config.hooks.len());
        let mut mass: Option<Tensor> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let (out, received) = block
                .forward_kept_t(&x, &kept, train, measure_mass)
                .map_err(|source| EncoderError::Attention {
                    block: i + 1,
                    source,
                })?;
            x = out;
            if let Some(r) = received {
                mass = Some(match mass {
                    Some(m) => m + r,
                    None => r,
                });
            }
            if self.config.hooks.contains(&(i + 1)) {
                hooks.push(x.shallow_clone());
            }
        }
        let np = grid.0 * grid.1;
        Ok(EncoderOutput {
            hooks,
            grid,
            maps: Vec::new(),
            saliency: Some(Saliency {
                logits,
                kept,
                mass: mass.map(|m| m.narrow(1, 1, np)),
            }),
            features: Vec::new(),
        })
    }

    fn dense_pass(
        &self,
        mut x: Tensor,
        grid: (i64, i64),
        train: bool,
    ) -> Result<EncoderOutput, EncoderError> {
        let mut hooks = Vec::with_capacity(self.config.hooks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block
                .forward_t(&x, train)
                .map_err(|source| EncoderError::Attention {
                    block: i + 1,
                    source,
                })?;
            if self.config.hooks.contains(&(i + 1)) {
                hooks.push(x.shallow_clone());
            }
        }
        Ok(EncoderOutput {
            hooks,
            grid,
            maps: Vec::new(),
            saliency: None,
            features: Vec::new(),
        })
    }

    /// The analysis pass (evaluation mode): the same outputs plus every block's attention maps
    /// (A, and Q^, K^, sigma for SVDA; Q, K for standard), for the spectral indicators.
    pub fn forward_with_maps(&self, images: &Tensor) -> Result<EncoderOutput, EncoderError> {
        self.analysis_pass(images, None)
    }

    /// [`Self::forward_with_maps`] with block l's SVDA sigma replaced by `sigmas[l]` (one H x d
    /// tensor per block); the model's own sigma is neither read nor written, so a perturbed
    /// analysis pass cannot leave the weights changed, whatever fails in it.
    pub fn forward_with_maps_and_sigmas(
        &self,
        images: &Tensor,
        sigmas: &[Tensor],
    ) -> Result<EncoderOutput, EncoderError> {
        if sigmas.len() != self.blocks.len() {
            return Err(EncoderError::InvalidConfig(format!(
                "{} sigma tensors for {} blocks",
                sigmas.len(),
                self.blocks.len()
            )));
        }
        self.analysis_pass(images, Some(sigmas))
    }

    fn analysis_pass(
        &self,
        images: &Tensor,
        sigmas: Option<&[Tensor]>,
    ) -> Result<EncoderOutput, EncoderError> {
        let Embedded {
            tokens: mut x,
            grid,
            features,
        } = self.embed(images, false)?;
        let mut hooks = Vec::with_capacity(self.config.hooks.len());
        let mut maps = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let sigma = sigmas.map(|s| &s[i]);
            let (out, m) =
                block
                    .forward_with_maps(&x, sigma)
                    .map_err(|source| EncoderError::Attention {
                        block: i + 1,
                        source,
                    })?;
            x = out;
            maps.push(m);
            if self.config.hooks.contains(&(i + 1)) {
                hooks.push(x.shallow_clone());
            }
        }
        Ok(EncoderOutput {
            hooks,
            grid,
            maps,
            saliency: None,
            features,
        })
    }
}

/// Position embeddings `1 x (1 + g*g) x D` of a square g x g grid resized to h x w patches:
/// the grid bilinearly (align_corners = false, as HF's DPT), the readout token's embedding as it
/// is. The one resize, used at run time for other image sizes and when loading a checkpoint made
/// for another grid.
pub fn resize_position_embeddings(pos_embed: &Tensor, g: i64, grid: (i64, i64)) -> Tensor {
    if grid == (g, g) {
        return pos_embed.shallow_clone();
    }
    let d = pos_embed.size()[2];
    let readout = pos_embed.narrow(1, 0, 1);
    let resized = pos_embed
        .narrow(1, 1, g * g)
        .reshape([1, g, g, d])
        .permute([0, 3, 1, 2])
        .upsample_bilinear2d([grid.0, grid.1], false, None, None)
        .permute([0, 2, 3, 1])
        .reshape([1, grid.0 * grid.1, d]);
    Tensor::cat(&[readout, resized], 1)
}
