//! CLIP (Radford et al., 2021): an image tower and a text tower trained so that each image
//! scores highest with its own caption among the batch's, and each caption with its own image.
//!
//! ```text
//! I = normalize(W_i · f_image(x)),  T = normalize(W_t · f_text(caption))      (N, E) each
//! logits = exp(s) · I Tᵀ                                                       (N, N)
//! L = ½ [CE(logits, diag) + CE(logitsᵀ, diag)]
//! ```
//!
//! The logit scale s is learnt, starts at ln(1/τ) with τ = 0.07, and is clipped after each step
//! so that exp(s) ≤ 100, as in the paper. The text tower is CLIP's: a causal Transformer whose
//! output at the end-of-text token is the caption's feature. Captions are made from the labels
//! (see [`crate::captions`]): the labels are this method's paired text, not a training target.

use crate::captions::{Captioner, Split, Tokens, CONTEXT};
use crate::method::{require, temperature, transformer_shape, width, Method, Progress};
use crate::views::{Recipe, ViewsConfig};
use crate::vit::{VisionTransformer, VitConfig};
use rand::SeedableRng;
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Block, Embedding, Init, LayerNorm, Linear, Module};
use selfsup_engine::{no_grad, SeededRng, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Width of the shared image–text space.
    pub embed_dim: usize,
    pub text_dim: usize,
    pub text_depth: usize,
    pub text_heads: usize,
    /// τ the logit scale starts from (exp(s) = 1/τ), CLIP's 0.07.
    pub temperature: f64,
    /// Which captions: digit names or Fashion-MNIST's clothes (default: the data's recipe).
    pub captions: Recipe,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            embed_dim: 64,
            text_dim: 64,
            text_depth: 2,
            text_heads: 4,
            temperature: 0.07,
            captions: Recipe::Digits,
        }
    }
}

impl ClipConfig {
    pub fn validate(&self, classes: usize) -> Result<(), String> {
        width("embed_dim", self.embed_dim)?;
        temperature(self.temperature)?;
        transformer_shape(self.text_dim, self.text_heads, self.text_depth).map_err(|e| {
            e.replace("--dim", "--text-dim")
                .replace("--heads", "--text-heads")
                .replace("--depth", "--text-depth")
        })?;
        let named = Captioner::new(self.captions).classes();
        require(
            classes <= named,
            "captions",
            format!("{:?} ({named} class names)", self.captions),
            &format!("a caption set naming the {classes} classes of --data"),
        )
    }
}

/// The largest logit scale, ln 100.
pub const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

/// The symmetric contrastive loss over the N×N similarities of matching rows of `image` and
/// `text` (`(N, E)` each, normalised here), scaled by exp(`logit_scale`) (shape `(1)`).
#[track_caller]
pub fn clip_loss(image: &Tensor, text: &Tensor, logit_scale: &Tensor) -> Tensor {
    assert!(
        image.rank() == 2 && image.shape() == text.shape(),
        "clip_loss: image and text features must be two (N, E) tensors of one shape, got {:?} \
         and {:?}",
        image.shape(),
        text.shape()
    );
    let n = image.shape()[0];
    let logits = image
        .normalize(1, 1e-12)
        .matmul_nt(&text.normalize(1, 1e-12))
        .mul(&logit_scale.exp()); // (N images, N captions)
    let diag: Vec<i64> = (0..n as i64).collect();
    (&logits.cross_entropy(&diag, -100, 0.0) + &logits.t().cross_entropy(&diag, -100, 0.0))
        .mul_scalar(0.5)
}

/// CLIP's text encoder: token and learned position embeddings, causal pre-LN blocks, a final
/// norm, and the end-of-text token's output as the caption's feature.
pub struct TextTransformer {
    pub token_embed: Embedding,
    pub pos_embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
}

impl TextTransformer {
    pub fn new(init: &mut Init, vocab: usize, dim: usize, depth: usize, heads: usize) -> Self {
        TextTransformer {
            token_embed: Embedding::new(init, vocab, dim),
            pos_embed: init
                .trunc_normal(&[1, CONTEXT, dim], 0.01)
                .requires_grad_(true),
            blocks: (0..depth)
                .map(|_| Block::new(init, dim, heads, 4, true))
                .collect(),
            norm: LayerNorm::new(init, dim),
        }
    }

    /// `(B, T)` tokens → `(B, dim)`: each row's output at its last (end-of-text) position. The
    /// mask is causal, so the padding after it never reaches it.
    pub fn forward(&self, tokens: &Tokens) -> Tensor {
        let (b, t) = (tokens.lens.len(), tokens.t);
        let d = self.pos_embed.shape()[2];
        let mut x = &self.token_embed.forward(&tokens.ids).reshape_to(&[b, t, d])
            + &self.pos_embed.narrow(1, 0, t);
        for block in &self.blocks {
            x = block.forward(&x, None);
        }
        // (B, T, D) → (B·T, D); row i's end-of-text output is row i·T + len − 1 → (B, D)
        let eot: Vec<u32> = tokens
            .lens
            .iter()
            .enumerate()
            .map(|(i, &len)| (i * t + len - 1) as u32)
            .collect();
        self.norm
            .forward(&x)
            .reshape_to(&[b * t, d])
            .index_select(0, &eot)
    }
}

impl Module for TextTransformer {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("pos_embed".into(), self.pos_embed.clone())]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![("token_embed".into(), &self.token_embed)];
        c.extend(
            self.blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("blocks.{i}"), b as &dyn Module)),
        );
        c.push(("norm".into(), &self.norm));
        c
    }
}

pub struct Clip {
    pub encoder: VisionTransformer,
    pub text: TextTransformer,
    pub image_proj: Linear,
    pub text_proj: Linear,
    /// s, shape `(1)`: the similarities are multiplied by exp(s).
    pub logit_scale: Tensor,
    pub captioner: Captioner,
    pub config: ClipConfig,
    views: ViewsConfig,
    caption_seed: u64,
}

impl Clip {
    pub fn new(init: &mut Init, vit: VitConfig, views: ViewsConfig, config: ClipConfig) -> Clip {
        let captioner = Captioner::new(config.captions);
        let (d, e) = (vit.dim, config.embed_dim);
        let text = TextTransformer::new(
            init,
            captioner.vocab_size(),
            config.text_dim,
            config.text_depth,
            config.text_heads,
        );
        Clip {
            encoder: VisionTransformer::new(init, vit),
            text,
            image_proj: Linear::new(init, d, e, false),
            text_proj: Linear::new(init, config.text_dim, e, false),
            logit_scale: Tensor::from_vec(
                vec![(1.0 / config.temperature).ln() as f32],
                &[1],
                &init.device,
            )
            .requires_grad_(true),
            caption_seed: init.seed(),
            captioner,
            config,
            views,
        }
    }

    /// Images `(N, C, H, W)` in the shared space, `(N, E)`, not normalised.
    pub fn embed_images(&self, images: &Tensor) -> Tensor {
        self.image_proj.forward(&self.encoder.features(images))
    }

    /// Captions in the shared space, `(N, E)`, not normalised.
    pub fn embed_texts(&self, texts: &[String]) -> Tensor {
        let tokens = self.captioner.batch(texts);
        self.text_proj.forward(&self.text.forward(&tokens))
    }

    /// One training caption per image of `images` (`(N, 1, S, S)`), drawn from a stream fixed
    /// by the step, so a resumed run captions its batches as the original did.
    pub fn captions(&self, images: &Tensor, labels: &[u32], step: u64) -> Vec<String> {
        let side = images.shape()[3];
        let pixels = images.to_vec();
        let len = pixels.len() / labels.len().max(1);
        let mut rng =
            SeededRng::seed_from_u64(self.caption_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        labels
            .iter()
            .zip(pixels.chunks(len))
            .map(|(&y, img)| self.captioner.caption(Split::Train, y, img, side, &mut rng))
            .collect()
    }
}

impl Method for Clip {
    /// One view: the random crop (and flip for clothes), CLIP's only augmentation.
    fn views(&self) -> Vec<Augment> {
        vec![self.views.crop(self.encoder.config.image)]
    }

    fn loss(&mut self, views: &[Tensor], labels: &[u32], at: Progress) -> Tensor {
        let captions = self.captions(&views[0], labels, at.step);
        clip_loss(
            &self.embed_images(&views[0]),
            &self.embed_texts(&captions),
            &self.logit_scale,
        )
    }

    /// The paper's clip of the logit scale at ln 100 (and at 0 below, where it would invert).
    fn after_step(&mut self, _: Progress) {
        no_grad(|| {
            self.logit_scale
                .set_data(&self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE))
        });
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }

    fn clip(&self) -> Option<&Clip> {
        Some(self)
    }
}

impl Module for Clip {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("logit_scale".into(), self.logit_scale.clone())]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("text".into(), &self.text),
            ("image_proj".into(), &self.image_proj),
            ("text_proj".into(), &self.text_proj),
        ]
    }
}
