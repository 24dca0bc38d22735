//! BYOL (Grill et al., 2020): an online network (encoder f_θ → projector g_θ → predictor q_θ)
//! learns to predict a target network's projection of another view; the target (f_ξ, g_ξ) is an
//! exponential moving average of the online one and gets no gradient. No negatives: the
//! predictor and the slowly moving target are what keep the representation from collapsing.
//!
//! ℒ = ‖q̄_θ(z_θ) − z̄′_ξ‖² = 2 − 2·⟨q_θ(z_θ), z′_ξ⟩ / (‖q_θ(z_θ)‖·‖z′_ξ‖), symmetrised over the
//! two views; after each step ξ ← τξ + (1 − τ)θ with τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2.

use crate::heads::{HeadNorm, MlpHead};
use crate::method::{momentum, momentum_copy, row_cosine, width, Method, Progress};
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
    /// a run of a few thousand steps needs a target that moves faster).
    pub tau_base: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
    pub pred_hidden: usize,
}

impl Default for ByolConfig {
    fn default() -> Self {
        ByolConfig {
            tau_base: 0.99,
            proj_hidden: 256,
            proj_out: 64,
            pred_hidden: 256,
        }
    }
}

impl ByolConfig {
    pub fn validate(&self) -> Result<(), String> {
        momentum("tau_base", self.tau_base)?;
        width("proj_hidden", self.proj_hidden)?;
        width("proj_out", self.proj_out)?;
        width("pred_hidden", self.pred_hidden)
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
    pub encoder: VisionTransformer,
    pub projector: MlpHead,
    pub predictor: MlpHead,
    pub target_encoder: VisionTransformer,
    pub target_projector: MlpHead,
    pub config: ByolConfig,
    views: ViewsConfig,
}

impl Byol {
    pub fn new(init: &mut Init, vit: VitConfig, views: ViewsConfig, config: ByolConfig) -> Byol {
        let (dim, c) = (vit.dim, &config);
        let encoder = VisionTransformer::new(init, vit.clone());
        let projector = MlpHead::new(init, &[dim, c.proj_hidden, c.proj_out], HeadNorm::Hidden);
        let predictor = MlpHead::new(
            init,
            &[c.proj_out, c.pred_hidden, c.proj_out],
            HeadNorm::Hidden,
        );
        let mut scratch = Init::new(0, &init.device);
        let target_encoder = momentum_copy(&encoder, || VisionTransformer::new(&mut scratch, vit));
        let target_projector = momentum_copy(&projector, || {
            MlpHead::new(
                &mut scratch,
                &[dim, c.proj_hidden, c.proj_out],
                HeadNorm::Hidden,
            )
        });
        Byol {
            encoder,
            projector,
            predictor,
            target_encoder,
            target_projector,
            config,
            views,
        }
    }
}

impl Method for Byol {
    /// The paper's asymmetric pair: view 1 always blurred, view 2 rarely blurred, sometimes
    /// solarised.
    fn views(&self) -> Vec<Augment> {
        let size = self.encoder.config.image;
        vec![
            self.views.blurred(size, 1.0, 0.0),
            self.views.blurred(size, 0.1, 0.2),
        ]
    }

    fn loss(&mut self, views: &[Tensor], _: Progress) -> Tensor {
        let n = views[0].shape()[0];
        let x = Tensor::cat(&[&views[0], &views[1]], 0); // (2N, C, H, W)
        let p = self
            .predictor
            .forward(&self.projector.forward(&self.encoder.features(&x))); // (2N, D)
        let z = no_grad(|| {
            self.target_projector
                .forward(&self.target_encoder.features(&x))
        }); // (2N, D)
        let (p1, p2) = (p.narrow(0, 0, n), p.narrow(0, n, n));
        let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        &regression_loss(&p1, &z2) + &regression_loss(&p2, &z1)
    }

    fn after_step(&mut self, at: Progress) {
        let tau = cosine_ramp(self.config.tau_base, 1.0, at.step, at.total);
        self.target_encoder.ema_from(&self.encoder, tau);
        self.target_projector.ema_from(&self.projector, tau);
    }

    fn encoder(&self) -> &VisionTransformer {
        &self.encoder
    }
}

impl Module for Byol {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("projector".into(), &self.projector),
            ("predictor".into(), &self.predictor),
        ]
    }

    /// The target network is state, not a parameter: checkpointed, never optimised.
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("target_encoder", self.target_encoder.state_dict());
        v.extend(prefixed(
            "target_projector",
            self.target_projector.state_dict(),
        ));
        v
    }
}
