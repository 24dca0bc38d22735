//! BYOL (Grill et al., 2020): an online network (encoder f_θ → projector g_θ → predictor q_θ)
//! learns to predict a target network's projection of another view; the target (f_ξ, g_ξ) is an
//! exponential moving average of the online one and gets no gradient. No negatives: the
//! predictor and the slowly moving target are what keep the representation from collapsing.
//!
//! ℒ = ‖q̄_θ(z_θ) − z̄′_ξ‖² = 2 − 2·⟨q_θ(z_θ), z′_ξ⟩ / (‖q_θ(z_θ)‖·‖z′_ξ‖), symmetrised over the
//! two views; after each step ξ ← τξ + (1 − τ)θ with τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2.

use crate::heads::{HeadNorm, MlpHead, Tower};
use crate::method::{momentum, positive, predictor_lr, row_cosine, width, Method, Progress};
use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{prefixed, Init, Module};
use selfsup_engine::optim::cosine_ramp;
use selfsup_engine::{no_grad, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ByolConfig {
    /// τ_base of the target's momentum, ramped to 1 over the run (paper: 0.996 for 1,000 epochs;
    /// a run of two thousand steps needs a target that moves far faster: 0.9, chosen on the
    /// validation monitor with the fast predictor below, then 0.8, which lifted the validation
    /// kNN at the end from 92.7 to 95.2 % on MNIST and 76.0 to 78.5 on Fashion-MNIST; README,
    /// "The other methods").
    pub tau_base: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
    pub pred_hidden: usize,
    /// The predictor's learning rate as a multiple of the run's (10: it must keep up with the
    /// features, as DirectPred argues and SimSiam here measured).
    pub pred_lr: f64,
}

impl Default for ByolConfig {
    fn default() -> Self {
        ByolConfig {
            tau_base: 0.8,
            proj_hidden: 256,
            proj_out: 64,
            pred_hidden: 256,
            pred_lr: 10.0,
        }
    }
}

impl ByolConfig {
    pub fn validate(&self) -> Result<(), String> {
        momentum("tau_base", self.tau_base)?;
        width("proj_hidden", self.proj_hidden)?;
        width("proj_out", self.proj_out)?;
        width("pred_hidden", self.pred_hidden)?;
        positive("pred_lr", self.pred_lr)
    }
}

/// 2 − 2·cos(p, sg(z)), averaged over the batch: `(N, D), (N, D) → ()`.
pub fn regression_loss(p: &Tensor, z: &Tensor) -> Tensor {
    row_cosine(p, &z.detach())
        .mean_all()
        .mul_scalar(-2.0)
        .add_scalar(2.0)
}

pub struct Byol {
    /// The online encoder and projector, trained.
    pub online: Tower,
    pub predictor: MlpHead,
    /// Their EMA, never trained.
    pub target: Tower,
    pub config: ByolConfig,
    views: ViewsConfig,
}

impl Byol {
    pub fn new(init: &mut Init, vit: VitConfig, views: ViewsConfig, config: ByolConfig) -> Byol {
        let (dim, c) = (vit.dim, &config);
        let online = Tower {
            encoder: VisionTransformer::new(init, vit),
            projector: MlpHead::new(init, &[dim, c.proj_hidden, c.proj_out], HeadNorm::Hidden),
        };
        let predictor = MlpHead::new(
            init,
            &[c.proj_out, c.pred_hidden, c.proj_out],
            HeadNorm::Hidden,
        );
        Byol {
            target: online.momentum_copy(),
            online,
            predictor,
            config,
            views,
        }
    }
}

impl Method for Byol {
    fn views(&self) -> Vec<Augment> {
        self.views.byol_pair(self.online.encoder.config.image)
    }

    fn loss(&mut self, views: &[Tensor], _: &[u32], _: Progress) -> Tensor {
        let n = views[0].shape()[0];
        let x = Tensor::cat(&[&views[0], &views[1]], 0); // (2N, C, H, W)
        let p = self.predictor.forward(&self.online.forward(&x)); // (2N, D)
        let z = no_grad(|| self.target.forward(&x)); // (2N, D)
        let (p1, p2) = (p.narrow(0, 0, n), p.narrow(0, n, n));
        let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        &regression_loss(&p1, &z2) + &regression_loss(&p2, &z1)
    }

    fn after_step(&mut self, at: Progress) {
        let tau = cosine_ramp(self.config.tau_base, 1.0, at.step, at.total);
        self.target.ema_from(&self.online, tau);
    }

    fn lr_scale(&self, name: &str) -> f64 {
        predictor_lr(name, self.config.pred_lr)
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.online.encoder
    }
}

impl Module for Byol {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.online.encoder),
            ("projector".into(), &self.online.projector),
            ("predictor".into(), &self.predictor),
        ]
    }

    /// The target network is state, not a parameter: checkpointed, never optimised.
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("target", self.target.state_dict())
    }
}
