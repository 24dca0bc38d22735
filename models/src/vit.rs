//! The Vision Transformer (Dosovitskiy et al., 2021): image → patches → linear embedding
//! (or a convolutional stem) + learned positions, a class token, pre-LN Transformer blocks, a
//! final LayerNorm.

use selfsup_engine::nn::{Block, Conv2d, Init, LayerNorm, Linear, Module};
use selfsup_engine::Tensor;
use serde::{Deserialize, Serialize};

/// Which token summary is the image representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The class token after the final norm.
    Cls,
    /// The mean of the patch tokens after the final norm.
    Mean,
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pool::Cls => "cls",
            Pool::Mean => "mean",
        })
    }
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Pool, String> {
        match s {
            "cls" => Ok(Pool::Cls),
            "mean" => Ok(Pool::Mean),
            _ => Err(format!("unknown pooling {s:?} (expected cls or mean)")),
        }
    }
}

/// How pixels become tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// A linear map of each non-overlapping patch (the ViT's own).
    #[default]
    Patch,
    /// log₂(patch) 3×3 stride-2 convolutions, then a linear map: the same token grid.
    Conv,
}

/// Shape of a ViT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub image: usize,
    pub channels: usize,
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    pub pool: Pool,
    /// Absent from checkpoints written before the convolutional stem: a patch embedding.
    #[serde(default)]
    pub stem: Stem,
}

impl VitConfig {
    /// The tiny ViT for 28×28 digits: patch 4 (49 patches), dim 64, depth 4, 4 heads.
    pub fn mnist() -> VitConfig {
        VitConfig {
            image: 28,
            channels: 1,
            patch: 4,
            dim: 64,
            depth: 4,
            heads: 4,
            mlp_ratio: 4,
            pool: Pool::Cls,
            stem: Stem::Patch,
        }
    }

    pub fn patches(&self) -> usize {
        (self.image / self.patch).pow(2)
    }
}

/// Splits `(B, C, H, W)` images into `(B, (H/p)·(W/p), p·p·C)` row-major patches, each patch's
/// pixels ordered (row, column, channel).
#[track_caller]
pub fn patchify(images: &Tensor, p: usize) -> Tensor {
    let s = images.shape();
    assert!(
        images.rank() == 4 && s[2].is_multiple_of(p) && s[3].is_multiple_of(p),
        "patchify: images must be (B, C, H, W) with H and W divisible by {p}, got {s:?}"
    );
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    images
        .reshape_to(&[b, c, h / p, p, w / p, p])
        .permute(&[0, 2, 4, 3, 5, 1])
        .reshape_to(&[b, (h / p) * (w / p), p * p * c])
}

/// The patch embedding: a linear map of each flattened patch.
pub struct PatchEmbed {
    pub proj: Linear,
    pub patch: usize,
}

impl PatchEmbed {
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.proj.forward(&patchify(images, self.patch))
    }
}

/// Early convolutions (Xiao et al., 2021, "Early convolutions help transformers see better"):
/// 3×3 stride-2 convolutions, each followed by layer norm and GELU, halve the image log₂(patch)
/// times — the patch embedding's token grid, from overlapping windows — and a linear map takes
/// the last one's channels to the width. Channels double per stage, ending at the width.
pub struct ConvStem {
    pub convs: Vec<(Conv2d, LayerNorm)>,
    pub proj: Linear,
}

impl ConvStem {
    #[track_caller]
    pub fn new(init: &mut Init, channels: usize, patch: usize, dim: usize) -> ConvStem {
        assert!(
            patch >= 2 && patch.is_power_of_two(),
            "ConvStem: the patch size must be a power of two ≥ 2, got {patch}"
        );
        let stages = patch.trailing_zeros() as usize;
        let mut convs = Vec::with_capacity(stages);
        let mut inputs = channels;
        for s in 0..stages {
            let outputs = (dim >> (stages - 1 - s)).max(8);
            convs.push((
                Conv2d::new(init, inputs, outputs, 3, 2, 1),
                LayerNorm::new(init, outputs),
            ));
            inputs = outputs;
        }
        ConvStem {
            convs,
            proj: Linear::new(init, inputs, dim, true),
        }
    }

    /// `(B, C, H, W)` → `(B, (H/patch)·(W/patch), dim)`, tokens in row-major grid order.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        // (B, C, H, W) → channel-last (B, H, W, C)
        let mut x = images.permute(&[0, 2, 3, 1]);
        for (conv, norm) in &self.convs {
            x = norm.forward(&conv.forward(&x)).gelu();
        }
        let s = x.shape().to_vec();
        // (B, H', W', C') → (B, H'·W', C')
        self.proj.forward(&x.reshape_to(&[s[0], s[1] * s[2], s[3]]))
    }
}

impl Module for ConvStem {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> = Vec::new();
        for (i, (conv, norm)) in self.convs.iter().enumerate() {
            v.push((format!("convs.{i}.conv"), conv));
            v.push((format!("convs.{i}.norm"), norm));
        }
        v.push(("proj".into(), &self.proj));
        v
    }
}

/// What turns pixels into tokens, per [`Stem`].
pub enum Embedding {
    Patch(PatchEmbed),
    Conv(ConvStem),
}

impl Embedding {
    pub fn forward(&self, images: &Tensor) -> Tensor {
        match self {
            Embedding::Patch(p) => p.forward(images),
            Embedding::Conv(c) => c.forward(images),
        }
    }

    /// The module, for freezing (MoCo v3's random patch projection) and traversal.
    pub fn module(&self) -> &dyn Module {
        match self {
            Embedding::Patch(p) => &p.proj,
            Embedding::Conv(c) => c,
        }
    }

    /// Its name in the state dict: `patch_embed.proj` as in timm, or `stem`.
    fn name(&self) -> &'static str {
        match self {
            Embedding::Patch(_) => "patch_embed.proj",
            Embedding::Conv(_) => "stem",
        }
    }
}

pub struct VisionTransformer {
    pub config: VitConfig,
    pub embedding: Embedding,
    pub cls_token: Tensor,
    pub pos_embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
}

impl VisionTransformer {
    #[track_caller]
    pub fn new(init: &mut Init, config: VitConfig) -> VisionTransformer {
        assert!(
            config.image.is_multiple_of(config.patch),
            "VisionTransformer: image size {} is not divisible by patch size {}",
            config.image,
            config.patch
        );
        let (d, n) = (config.dim, config.patches());
        let patch_dim = config.patch * config.patch * config.channels;
        VisionTransformer {
            embedding: match config.stem {
                Stem::Patch => Embedding::Patch(PatchEmbed {
                    proj: Linear::new(init, patch_dim, d, true),
                    patch: config.patch,
                }),
                Stem::Conv => {
                    Embedding::Conv(ConvStem::new(init, config.channels, config.patch, d))
                }
            },
            cls_token: init.trunc_normal(&[1, 1, d], 0.02).requires_grad_(true),
            pos_embed: init.trunc_normal(&[1, n + 1, d], 0.02).requires_grad_(true),
            blocks: (0..config.depth)
                .map(|_| Block::new(init, d, config.heads, config.mlp_ratio, false))
                .collect(),
            norm: LayerNorm::new(init, d),
            config,
        }
    }

    /// All tokens after the final norm, `(B, 1 + n, dim)`; the class token comes first.
    pub fn tokens(&self, images: &Tensor) -> Tensor {
        self.encode(images, None)
    }

    /// The tokens of only the patches each image keeps, as MAE's encoder sees them:
    /// `keep` is `(B, k)` row-major patch indices; the result is `(B, 1 + k, dim)`, class first.
    pub fn visible_tokens(&self, images: &Tensor, keep: &[u32], k: usize) -> Tensor {
        self.encode(images, Some((keep, k)))
    }

    #[track_caller]
    fn encode(&self, images: &Tensor, keep: Option<(&[u32], usize)>) -> Tensor {
        let c = &self.config;
        let s = images.shape();
        assert!(
            images.rank() == 4
                && s[1] == c.channels
                && s[2] == s[3]
                && s[2] > 0
                && s[2].is_multiple_of(c.patch),
            "VisionTransformer: expected square images (B, {}, S, S) with S a multiple of {}, got {s:?}",
            c.channels,
            c.patch,
        );
        let b = s[0];
        let n = (s[2] / c.patch).pow(2);
        let mut x = &self.embedding.forward(images) + &self.patch_positions(s[2] / c.patch);
        if let Some((keep, k)) = keep {
            assert!(
                keep.len() == b * k && keep.iter().all(|&p| (p as usize) < n),
                "VisionTransformer: keep must be {b}×{k} patch indices below {n}"
            );
            // (B, n, D) → (B·n, D) rows; image i's kept patch p is row i·n + p → (B, k, D)
            let rows: Vec<u32> = keep
                .iter()
                .enumerate()
                .map(|(j, &p)| (j / k * n) as u32 + p)
                .collect();
            x = x
                .reshape_to(&[b * n, c.dim])
                .index_select(0, &rows)
                .reshape_to(&[b, k, c.dim]);
        }
        let cls = (&self.cls_token + &self.pos_embed.narrow(1, 0, 1)).expand(&[b, 1, c.dim]);
        let mut x = Tensor::cat(&[&cls, &x], 1);
        for block in &self.blocks {
            x = block.forward(&x, None);
        }
        self.norm.forward(&x)
    }

    /// The position embeddings of a `grid`×`grid` patch grid, `(1, grid², dim)`: the learned
    /// ones at the training size, else their bicubic interpolation (DINO's smaller crops).
    pub fn patch_positions(&self, grid: usize) -> Tensor {
        let (g0, d) = (self.config.image / self.config.patch, self.config.dim);
        let pos = self.pos_embed.narrow(1, 1, g0 * g0);
        if grid == g0 {
            return pos;
        }
        // (1, g0², D) → (1, D, g0, g0) → resized (1, D, g, g) → (1, g², D)
        pos.reshape_to(&[1, g0, g0, d])
            .permute(&[0, 3, 1, 2])
            .resize_bicubic(grid, grid)
            .permute(&[0, 2, 3, 1])
            .reshape_to(&[1, grid * grid, d])
    }

    /// What evaluation reads, `(B, 2·dim)`: the class token and the mean of the patch tokens,
    /// concatenated (DINO's linear evaluation of ViT-B, `avgpool_patchtokens`), whichever of the
    /// two the method trains. On validation images of Fashion-MNIST (SimCLR, trained on the mean)
    /// it probed 86.2 % against 83.2 for the mean alone and 84.4 for the class token alone.
    pub fn representation(&self, images: &Tensor) -> Tensor {
        let t = self.tokens(images); // (B, 1 + n, D)
        let n = t.shape()[1] - 1;
        let cls = t.narrow(1, 0, 1).squeeze(1);
        Tensor::cat(&[&cls, &t.narrow(1, 1, n).mean(1, false)], 1)
    }

    /// The pooled image representation `(B, dim)` a method trains (class token or mean of
    /// patches).
    pub fn features(&self, images: &Tensor) -> Tensor {
        let t = self.tokens(images);
        match self.config.pool {
            Pool::Cls => t.narrow(1, 0, 1).squeeze(1),
            Pool::Mean => t.narrow(1, 1, t.shape()[1] - 1).mean(1, false),
        }
    }
}

impl Module for VisionTransformer {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("cls_token".into(), self.cls_token.clone()),
            ("pos_embed".into(), self.pos_embed.clone()),
        ]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> =
            vec![(self.embedding.name().into(), self.embedding.module())];
        for (i, b) in self.blocks.iter().enumerate() {
            v.push((format!("blocks.{i}"), b));
        }
        v.push(("norm".into(), &self.norm));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_engine::Device;

    fn vit() -> VisionTransformer {
        let config = VitConfig {
            image: 28,
            channels: 1,
            patch: 4,
            dim: 16,
            depth: 1,
            heads: 2,
            mlp_ratio: 2,
            pool: Pool::Mean,
            stem: Stem::Patch,
        };
        VisionTransformer::new(&mut Init::new(0, &Device::cpu()), config)
    }

    /// At the training size the learned grid is used as it is; a 12-px crop gets a 3×3 grid
    /// interpolated from it, and its gradient reaches the learned embeddings.
    #[test]
    fn smaller_images_get_interpolated_positions() {
        let vit = vit();
        assert_eq!(
            vit.patch_positions(7).to_vec(),
            vit.pos_embed.narrow(1, 1, 49).to_vec()
        );
        let crops = Tensor::rand(&[2, 1, 12, 12], 1, &Device::cpu());
        let t = vit.tokens(&crops);
        assert_eq!(t.shape(), &[2, 10, 16]);
        assert_eq!(vit.features(&crops).shape(), &[2, 16]);
        t.sum_all().backward();
        let g = vit
            .pos_embed
            .grad()
            .expect("a gradient for the position grid");
        assert!(g.to_vec().iter().skip(16).any(|&v| v != 0.0));
    }

    /// Evaluation reads the class token and the mean patch token side by side, whichever pooling
    /// the method trains; training reads only the pooled one.
    #[test]
    fn the_representation_is_the_class_token_beside_the_mean_patch() {
        let vit = vit();
        let images = Tensor::rand(&[3, 1, 28, 28], 4, &Device::cpu());
        let t = vit.tokens(&images).to_vec(); // (3, 50, 16)
        let r = vit.representation(&images);
        assert_eq!(r.shape(), &[3, 32]);
        let r = r.to_vec();
        for b in 0..3 {
            let tok = |i: usize, d: usize| t[(b * 50 + i) * 16 + d];
            for d in 0..16 {
                let mean = (1..50).map(|i| tok(i, d)).sum::<f32>() / 49.0;
                assert_eq!(r[b * 32 + d], tok(0, d));
                assert!((r[b * 32 + 16 + d] - mean).abs() < 1e-5);
            }
        }
        assert_eq!(
            vit.features(&images).to_vec(),
            vit.representation(&images).narrow(1, 16, 16).to_vec()
        );
    }

    /// A convolutional stem gives the patch embedding's token grid, at the training size and at
    /// DINO's smaller crops; its parameters are named under `stem` and get gradients.
    #[test]
    fn a_conv_stem_gives_the_patch_grid() {
        let config = VitConfig {
            stem: Stem::Conv,
            ..vit().config
        };
        let vit = VisionTransformer::new(&mut Init::new(0, &Device::cpu()), config);
        let names: Vec<(String, Vec<usize>)> = vit
            .named_parameters()
            .into_iter()
            .filter(|(n, _)| n.starts_with("stem."))
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        // Channels double up to the width: 1 → 8 → 16, then a 16 → 16 linear map.
        assert!(names.contains(&("stem.convs.0.conv.proj.weight".into(), vec![8, 9])));
        assert!(names.contains(&("stem.convs.1.conv.proj.weight".into(), vec![16, 72])));
        assert!(names.contains(&("stem.convs.1.norm.weight".into(), vec![16])));
        assert!(names.contains(&("stem.proj.weight".into(), vec![16, 16])));
        let images = Tensor::rand(&[2, 1, 28, 28], 1, &Device::cpu());
        assert_eq!(vit.tokens(&images).shape(), &[2, 50, 16]);
        let crops = Tensor::rand(&[2, 1, 12, 12], 2, &Device::cpu());
        let t = vit.tokens(&crops);
        assert_eq!(t.shape(), &[2, 10, 16]);
        t.square().sum_all().backward();
        for (name, p) in vit.named_parameters() {
            if name.starts_with("stem.") {
                let g = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
                assert!(
                    g.to_vec().iter().any(|&v| v != 0.0),
                    "{name}: zero gradient"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "S a multiple of 4")]
    fn a_side_the_patch_does_not_divide_is_refused() {
        vit().tokens(&Tensor::rand(&[1, 1, 10, 10], 1, &Device::cpu()));
    }
}
