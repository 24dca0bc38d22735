//! SimCLR (Chen et al., 2020): two augmented views of each image, an encoder f and a projector
//! g, and the NT-Xent loss that pulls the two views of an image together against the other
//! 2(N−1) views of the batch.

use crate::heads::{HeadNorm, MlpHead};
use crate::method::{temperature, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimClrConfig {
    /// NT-Xent τ: 0.05 measured best at this scale (the paper's 0.1–0.5 suit bigger batches).
    pub temperature: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
}

impl Default for SimClrConfig {
    fn default() -> Self {
        SimClrConfig {
            temperature: 0.05,
            proj_hidden: 128,
            proj_out: 64,
        }
    }
}

impl SimClrConfig {
    pub fn validate(&self) -> Result<(), String> {
        temperature(self.temperature)?;
        width("proj_hidden", self.proj_hidden)?;
        width("proj_out", self.proj_out)
    }
}

/// NT-Xent over 2N views: for anchor i, the positive is its other view and the negatives are the
/// remaining 2(N−1) views; similarities are cosine / τ, and the anchor itself is excluded.
///
/// ℓ = −(1/2N) Σᵢ log( exp(sim(zᵢ, zⱼ₍ᵢ₎)/τ) / Σ_{k≠i} exp(sim(zᵢ, z_k)/τ) )
#[track_caller]
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    assert!(
        z1.rank() == 2 && z1.shape() == z2.shape(),
        "nt_xent: views must be two (N, D) tensors of one shape, got {:?} and {:?}",
        z1.shape(),
        z2.shape()
    );
    assert!(
        temperature > 0.0,
        "nt_xent: temperature must be positive, got {temperature}"
    );
    let n = z1.shape()[0];
    let z = Tensor::cat(&[z1, z2], 0).normalize(1, 1e-12);
    let sim = z.matmul_nt(&z).mul_scalar(1.0 / temperature); // (2N, 2N)

    // The diagonal (i = j) as a mask, made on the device from 2N indices: (2N, 1) = (1, 2N).
    let idx = z.new_from(&(0..2 * n).map(|i| i as f64).collect::<Vec<_>>(), &[2 * n]);
    let eye = idx.unsqueeze(1).eq_(&idx.unsqueeze(0));
    let sim = sim.masked_fill(&eye, f64::NEG_INFINITY);
    let targets: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
    sim.cross_entropy(&targets, -100, 0.0)
}

/// Encoder plus projection head.
pub struct SimClr {
    pub encoder: VisionTransformer,
    pub projector: MlpHead,
    pub config: SimClrConfig,
    views: ViewsConfig,
}

impl SimClr {
    pub fn new(
        init: &mut Init,
        vit: VitConfig,
        views: ViewsConfig,
        config: SimClrConfig,
    ) -> SimClr {
        let dim = vit.dim;
        SimClr {
            encoder: VisionTransformer::new(init, vit),
            projector: MlpHead::new(
                init,
                &[dim, config.proj_hidden, config.proj_out],
                HeadNorm::Hidden,
            ),
            config,
            views,
        }
    }
}

impl Method for SimClr {
    fn views(&self) -> Vec<Augment> {
        self.views.pair(self.encoder.config.image)
    }

    /// Both views go through the encoder in one batch, so batch-norm statistics cover all 2N
    /// views as in the paper.
    fn loss(&mut self, views: &[Tensor], _: &[u32], _: Progress) -> Tensor {
        let n = views[0].shape()[0];
        let z = self.projector.forward(
            &self
                .encoder
                .features(&Tensor::cat(&[&views[0], &views[1]], 0)),
        ); // (2N, D)
        nt_xent(
            &z.narrow(0, 0, n),
            &z.narrow(0, n, n),
            self.config.temperature,
        )
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }
}

impl Module for SimClr {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("projector".into(), &self.projector),
        ]
    }
}
