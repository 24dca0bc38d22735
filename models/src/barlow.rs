//! Barlow Twins (Zbontar et al., 2021): make the cross-correlation matrix of the two views'
//! batch-standardised embeddings as close to the identity as possible. The diagonal term makes
//! the embedding invariant to the augmentations; the off-diagonal term decorrelates its
//! components, which is what prevents collapse — no negatives, no asymmetry.
//!
//! 𝒞ᵢⱼ = Σ_b z^A_{b,i} z^B_{b,j} / N (z standardised over the batch),
//! ℒ = Σᵢ (1 − 𝒞ᵢᵢ)² + λ Σᵢ Σ_{j≠i} 𝒞ᵢⱼ²

use crate::heads::{HeadNorm, MlpHead};
use crate::method::{positive, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BarlowConfig {
    /// λ, the weight of the redundancy-reduction term (paper: 0.0051 for 8,192 dimensions).
    pub lambda: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
}

impl Default for BarlowConfig {
    fn default() -> Self {
        BarlowConfig {
            lambda: 0.0051,
            proj_hidden: 256,
            proj_out: 256,
        }
    }
}

impl BarlowConfig {
    pub fn validate(&self) -> Result<(), String> {
        positive("lambda", self.lambda)?;
        width("proj_hidden", self.proj_hidden)?;
        width("proj_out", self.proj_out)
    }
}

/// The Barlow Twins loss of two `(N, D)` embeddings (the paper's eq. 1).
pub fn barlow_loss(z1: &Tensor, z2: &Tensor, lambda: f64) -> Tensor {
    let (n, d) = (z1.shape()[0], z1.shape()[1]);
    // Standardised over the batch as BatchNorm1d(affine=False) in training mode does.
    let standard = |z: &Tensor| z.batch_norm(None, None, None, None, true, 0.0, 1e-5);
    let c = standard(z1)
        .matmul_tn(&standard(z2))
        .mul_scalar(1.0 / n as f64); // (D, D)
    let eye: Vec<f64> = (0..d * d)
        .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
        .collect();
    let diag = (&c * &c.new_from(&eye, &[d, d])).sum(1, false); // (D)
    let on = diag.add_scalar(-1.0).square().sum_all();
    let off = &c.square().sum_all() - &diag.square().sum_all();
    &on + &off.mul_scalar(lambda)
}

pub struct Barlow {
    pub encoder: VisionTransformer,
    /// Three layers, BatchNorm and ReLU after the first two.
    pub projector: MlpHead,
    pub config: BarlowConfig,
    views: ViewsConfig,
}

impl Barlow {
    pub fn new(
        init: &mut Init,
        vit: VitConfig,
        views: ViewsConfig,
        config: BarlowConfig,
    ) -> Barlow {
        let (dim, c) = (vit.dim, &config);
        Barlow {
            encoder: VisionTransformer::new(init, vit),
            projector: MlpHead::new(
                init,
                &[dim, c.proj_hidden, c.proj_hidden, c.proj_out],
                HeadNorm::Hidden,
            ),
            config,
            views,
        }
    }
}

impl Method for Barlow {
    /// The BYOL pair of asymmetric views, as the paper uses.
    fn views(&self) -> Vec<Augment> {
        self.views.byol_pair(self.encoder.config.image)
    }

    fn loss(&mut self, views: &[Tensor], _: &[u32], _: Progress) -> Tensor {
        // Each view through the projector on its own, so batch norm sees one view's statistics.
        let z1 = self.projector.forward(&self.encoder.features(&views[0])); // (N, D)
        let z2 = self.projector.forward(&self.encoder.features(&views[1])); // (N, D)
        barlow_loss(&z1, &z2, self.config.lambda)
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }
}

impl Module for Barlow {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("projector".into(), &self.projector),
        ]
    }
}
