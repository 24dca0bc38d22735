//! MAE (He et al., 2022): hide most of an image's patches at random, encode only the visible
//! ones, and have a light decoder reconstruct the pixels of the hidden ones.
//!
//! Masking is per image: uniform noise over the patches, argsort, keep the first (1 − ratio)·n.
//! The encoder runs on the kept patches alone (a quarter of the tokens at 75 %), which is what
//! makes MAE cheap; the decoder sees every position, mask tokens where patches were hidden.

use crate::method::{require, transformer_shape, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{patchify, VisionTransformer, VitConfig};
use rand::{Rng, SeedableRng};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Block, Init, LayerNorm, Linear, Module};
use selfsup_engine::{no_grad, SeededRng, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    /// Fraction of patches hidden from the encoder (the paper's 75 %).
    pub mask_ratio: f64,
    pub decoder_dim: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    /// Targets are each patch's pixels normalised by the patch's own mean and variance (the
    /// paper's choice for ImageNet), else raw pixels: on digits, where most patches are blank,
    /// raw pixels gave the better encoder (README, "MAE").
    pub norm_pix_loss: bool,
}

impl Default for MaeConfig {
    fn default() -> Self {
        MaeConfig {
            mask_ratio: 0.75,
            decoder_dim: 64,
            decoder_depth: 2,
            decoder_heads: 4,
            norm_pix_loss: false,
        }
    }
}

impl MaeConfig {
    pub fn validate(&self) -> Result<(), String> {
        require(
            self.mask_ratio > 0.0 && self.mask_ratio < 1.0,
            "mask_ratio",
            self.mask_ratio,
            "between 0 and 1 (exclusive)",
        )?;
        width("decoder_dim", self.decoder_dim)?;
        transformer_shape(self.decoder_dim, self.decoder_heads, self.decoder_depth).map_err(|e| {
            e.replace("--dim", "--decoder-dim")
                .replace("--heads", "--decoder-heads")
                .replace("--depth", "--decoder-depth")
        })
    }

    /// Patches each image keeps out of `n`: ⌊n·(1 − ratio)⌋ as the paper's code, but at least one
    /// and at most n − 1 (something must be hidden).
    pub fn kept(&self, n: usize) -> usize {
        ((n as f64 * (1.0 - self.mask_ratio)) as usize).clamp(1, n.max(2) - 1)
    }
}

/// Which patches a batch hides, from per-image noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Masking {
    /// Patches kept per image.
    pub k: usize,
    /// `(B, k)` kept patch indices, in the noise's ascending order.
    pub keep: Vec<u32>,
    /// For each `(image, position)`, its row in the decoder's `[B·k visible; B·(n−k) mask
    /// tokens]` table: the unshuffle.
    pub restore: Vec<u32>,
    /// `(B, n)`: 1 where the patch was hidden.
    pub mask: Vec<f64>,
}

impl Masking {
    /// The paper's masking from noise `(B, n)`: argsort each row, keep the first `k`.
    pub fn from_noise(noise: &[f32], n: usize, k: usize) -> Masking {
        let b = noise.len() / n;
        let (mut keep, mut restore, mut mask) = (vec![], vec![0; b * n], vec![1.0; b * n]);
        for (i, row) in noise.chunks_exact(n).enumerate() {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&p, &q| row[p].total_cmp(&row[q]));
            for (rank, &p) in order.iter().enumerate() {
                restore[i * n + p] = if rank < k {
                    keep.push(p as u32);
                    mask[i * n + p] = 0.0;
                    i * k + rank
                } else {
                    b * k + i * (n - k) + rank - k
                } as u32;
            }
        }
        Masking {
            k,
            keep,
            restore,
            mask,
        }
    }
}

pub struct Mae {
    pub encoder: VisionTransformer,
    pub decoder_embed: Linear,
    pub mask_token: Tensor,
    pub decoder_pos: Tensor,
    pub decoder_blocks: Vec<Block>,
    pub decoder_norm: LayerNorm,
    pub decoder_pred: Linear,
    pub config: MaeConfig,
    views: ViewsConfig,
    /// Masks are a function of this and the step, so a resumed run hides the same patches.
    mask_seed: u64,
}

impl Mae {
    pub fn new(init: &mut Init, vit: VitConfig, views: ViewsConfig, config: MaeConfig) -> Mae {
        let (d, dd, n) = (vit.dim, config.decoder_dim, vit.patches());
        let patch_dim = vit.patch * vit.patch * vit.channels;
        Mae {
            encoder: VisionTransformer::new(init, vit),
            decoder_embed: Linear::new(init, d, dd, true),
            mask_token: init.trunc_normal(&[1, 1, dd], 0.02).requires_grad_(true),
            decoder_pos: init
                .trunc_normal(&[1, n + 1, dd], 0.02)
                .requires_grad_(true),
            decoder_blocks: (0..config.decoder_depth)
                .map(|_| Block::new(init, dd, config.decoder_heads, 4, false))
                .collect(),
            decoder_norm: LayerNorm::new(init, dd),
            decoder_pred: Linear::new(init, dd, patch_dim, true),
            mask_seed: init.seed(),
            config,
            views,
        }
    }

    /// The masking of `b` images at training step `step`.
    pub fn masking(&self, b: usize, step: u64) -> Masking {
        let n = self.encoder.config.patches();
        let mut rng =
            SeededRng::seed_from_u64(self.mask_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let noise: Vec<f32> = (0..b * n).map(|_| rng.random()).collect();
        Masking::from_noise(&noise, n, self.config.kept(n))
    }

    /// Predicted pixels of every patch, `(B, n, p·p·C)`, from the visible patches alone.
    pub fn predict(&self, images: &Tensor, m: &Masking) -> Tensor {
        let (b, n, k) = (images.shape()[0], self.encoder.config.patches(), m.k);
        let dd = self.config.decoder_dim;
        let x = self
            .decoder_embed
            .forward(&self.encoder.visible_tokens(images, &m.keep, k)); // (B, 1+k, Dd)
        let visible = x.narrow(1, 1, k).reshape_to(&[b * k, dd]);
        let hidden = self
            .mask_token
            .reshape_to(&[1, dd])
            .expand(&[b * (n - k), dd]);
        // [visible; mask tokens] rows back into image order: (B, n, Dd)
        let patches = Tensor::cat(&[&visible, &hidden], 0)
            .index_select(0, &m.restore)
            .reshape_to(&[b, n, dd]);
        let mut x = &Tensor::cat(&[&x.narrow(1, 0, 1), &patches], 1) + &self.decoder_pos;
        for block in &self.decoder_blocks {
            x = block.forward(&x, None);
        }
        self.decoder_pred
            .forward(&self.decoder_norm.forward(&x))
            .narrow(1, 1, n)
    }

    /// What the decoder is asked to produce: each patch's pixels `(B, n, p·p·C)`, normalised per
    /// patch under `norm_pix_loss`.
    pub fn target(&self, images: &Tensor) -> Tensor {
        let t = patchify(images, self.encoder.config.patch);
        if !self.config.norm_pix_loss {
            return t;
        }
        let (mean, std) = patch_stats(&t);
        &(&t - &mean) / &std
    }

    /// Mean squared error over the hidden patches only.
    pub fn masked_loss(&self, images: &Tensor, m: &Masking) -> Tensor {
        let (b, n) = (images.shape()[0], self.encoder.config.patches());
        let per_patch = (&self.predict(images, m) - &self.target(images))
            .square()
            .mean(-1, false); // (B, n)
        let mask = images.new_from(&m.mask, &[b, n]);
        (&per_patch * &mask)
            .sum_all()
            .mul_scalar(1.0 / (b * (n - m.k)) as f64)
    }
}

/// Each patch's mean and standard deviation `(B, n, 1)` over its pixels, the normalisation of
/// `--norm-pix-loss`: unbiased variance plus 1e-6, as the paper's code.
fn patch_stats(patches: &Tensor) -> (Tensor, Tensor) {
    (
        patches.mean(-1, true),
        patches.var(-1, true, 1).add_scalar(1e-6).sqrt(),
    )
}

/// `(B, n, p·p·C)` patches back to `(B, C, H, W)` images: [`patchify`]'s inverse.
pub fn unpatchify(patches: &Tensor, p: usize, channels: usize, image: usize) -> Tensor {
    let (b, g) = (patches.shape()[0], image / p);
    patches
        .reshape_to(&[b, g, g, p, p, channels])
        .permute(&[0, 5, 1, 3, 2, 4])
        .reshape_to(&[b, channels, image, image])
}

impl Method for Mae {
    /// One view: a random crop (and flip for clothes). Masking is MAE's augmentation; the paper
    /// found colour jitter hurts.
    fn views(&self) -> Vec<Augment> {
        vec![self.views.crop(self.encoder.config.image)]
    }

    fn loss(&mut self, views: &[Tensor], _: &[u32], at: Progress) -> Tensor {
        let m = self.masking(views[0].shape()[0], at.step);
        self.masked_loss(&views[0], &m)
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }

    /// Hidden patches are grey in the masked input; the last picture pastes the visible patches
    /// back. Normalised targets are mapped back with each patch's own statistics.
    fn reconstructions(&self, images: &Tensor, seed: u64) -> Option<[Tensor; 3]> {
        Some(no_grad(|| {
            let c = &self.encoder.config;
            let (b, n, p) = (images.shape()[0], c.patches(), c.patch);
            let m = self.masking(b, seed);
            let pixels = patchify(images, p); // (B, n, p·p·C)
            let mut pred = self.predict(images, &m);
            if self.config.norm_pix_loss {
                let (mean, std) = patch_stats(&pixels);
                pred = &(&pred * &std) + &mean;
            }
            let hidden = images.new_from(&m.mask, &[b, n, 1]);
            let visible = &pixels * &hidden.mul_scalar(-1.0).add_scalar(1.0);
            let masked = &visible + &hidden.mul_scalar(0.5);
            let pasted = &visible + &(&pred * &hidden);
            [masked, pred.clamp(0.0, 1.0), pasted.clamp(0.0, 1.0)]
                .map(|t| unpatchify(&t, p, c.channels, c.image))
        }))
    }
}

impl Module for Mae {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("mask_token".into(), self.mask_token.clone()),
            ("decoder_pos".into(), self.decoder_pos.clone()),
        ]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> = vec![
            ("encoder".into(), &self.encoder),
            ("decoder_embed".into(), &self.decoder_embed),
        ];
        for (i, b) in self.decoder_blocks.iter().enumerate() {
            v.push((format!("decoder_blocks.{i}"), b));
        }
        v.push(("decoder_norm".into(), &self.decoder_norm));
        v.push(("decoder_pred".into(), &self.decoder_pred));
        v
    }
}
