//! SimSiam (Chen & He, 2021): one encoder f (backbone + projector) on both views, a predictor h
//! on top, and a stop-gradient on the side being predicted. No negatives, no momentum encoder:
//! the stop-gradient alone prevents collapse.
//!
//! ℒ = ½·D(p₁, sg(z₂)) + ½·D(p₂, sg(z₁)),  D(p, z) = −⟨p, z⟩ / (‖p‖·‖z‖),  pᵢ = h(zᵢ), zᵢ = f(xᵢ)

use crate::heads::{HeadNorm, MlpHead};
use crate::method::{positive, predictor_lr, row_cosine, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimSiamConfig {
    /// Width of the projector's layers and of z (paper: 2048).
    pub proj_out: usize,
    /// The predictor's bottleneck (paper: a quarter of z's width).
    pub pred_hidden: usize,
    /// The predictor's learning rate as a multiple of the run's (the paper keeps it fixed while
    /// the rest decays). A predictor that keeps up with the features (as DirectPred argues)
    /// stops the collapse on Fashion-MNIST: 1 collapsed (effective rank 3.2 of 64); 10 → 30 took
    /// the validation kNN at the end from 70.5 to 75.9 % (100 tied with 30; README, "Results").
    pub pred_lr: f64,
}

impl Default for SimSiamConfig {
    fn default() -> Self {
        SimSiamConfig {
            proj_out: 128,
            pred_hidden: 32,
            pred_lr: 30.0,
        }
    }
}

impl SimSiamConfig {
    pub fn validate(&self) -> Result<(), String> {
        width("proj_out", self.proj_out)?;
        width("pred_hidden", self.pred_hidden)?;
        positive("pred_lr", self.pred_lr)
    }
}

/// −½[cos(p₁, sg z₂) + cos(p₂, sg z₁)], each cosine averaged over the batch.
pub fn simsiam_loss(p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor) -> Tensor {
    let d = |p: &Tensor, z: &Tensor| row_cosine(p, &z.detach()).mean_all();
    (&d(p1, z2) + &d(p2, z1)).mul_scalar(-0.5)
}

pub struct SimSiam {
    pub encoder: VisionTransformer,
    /// Three layers, BatchNorm on every one (the last without affine), as in the paper.
    pub projector: MlpHead,
    /// Two layers with a bottleneck: Linear → BN → ReLU → Linear.
    pub predictor: MlpHead,
    pub config: SimSiamConfig,
    views: ViewsConfig,
}

impl SimSiam {
    pub fn new(
        init: &mut Init,
        vit: VitConfig,
        views: ViewsConfig,
        config: SimSiamConfig,
    ) -> SimSiam {
        let (dim, d) = (vit.dim, config.proj_out);
        SimSiam {
            encoder: VisionTransformer::new(init, vit),
            projector: MlpHead::new(init, &[dim, d, d, d], HeadNorm::HiddenAndOutput),
            predictor: MlpHead::new(init, &[d, config.pred_hidden, d], HeadNorm::Hidden),
            config,
            views,
        }
    }
}

impl Method for SimSiam {
    fn views(&self) -> Vec<Augment> {
        self.views.pair(self.encoder.config.image)
    }

    fn loss(&mut self, views: &[Tensor], _: &[u32], _: Progress) -> Tensor {
        let n = views[0].shape()[0];
        let z = self.projector.forward(
            &self
                .encoder
                .features(&Tensor::cat(&[&views[0], &views[1]], 0)),
        ); // (2N, D)
        let p = self.predictor.forward(&z); // (2N, D)
        simsiam_loss(
            &p.narrow(0, 0, n),
            &p.narrow(0, n, n),
            &z.narrow(0, 0, n),
            &z.narrow(0, n, n),
        )
    }

    fn lr_scale(&self, name: &str) -> f64 {
        predictor_lr(name, self.config.pred_lr)
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }
}

impl Module for SimSiam {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("projector".into(), &self.projector),
            ("predictor".into(), &self.predictor),
        ]
    }
}
