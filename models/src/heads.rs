//! Projection heads: the small MLPs SSL objectives are computed on. Downstream tasks use the
//! representation *before* the head, which keeps information the objective discards.

use selfsup_engine::nn::{prefixed, BatchNorm1d, Init, Linear, Module};
use selfsup_engine::Tensor;

/// Linear → (BatchNorm) → ReLU → Linear, as in SimCLR's projector g(·).
pub struct ProjectionHead {
    pub fc1: Linear,
    pub bn1: Option<BatchNorm1d>,
    pub fc2: Linear,
}

impl ProjectionHead {
    pub fn new(
        init: &mut Init,
        input: usize,
        hidden: usize,
        output: usize,
        batch_norm: bool,
    ) -> ProjectionHead {
        ProjectionHead {
            fc1: Linear::new(init, input, hidden, !batch_norm),
            bn1: batch_norm.then(|| BatchNorm1d::new(init, hidden, true)),
            fc2: Linear::new(init, hidden, output, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.fc1.forward(x);
        let h = match &self.bn1 {
            Some(bn) => bn.forward(&h),
            None => h,
        };
        self.fc2.forward(&h.relu())
    }
}

impl Module for ProjectionHead {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("fc1", self.fc1.named_parameters());
        if let Some(bn) = &self.bn1 {
            v.extend(prefixed("bn1", bn.named_parameters()));
        }
        v.extend(prefixed("fc2", self.fc2.named_parameters()));
        v
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.bn1
            .as_ref()
            .map(|bn| prefixed("bn1", bn.named_buffers()))
            .unwrap_or_default()
    }

    fn set_training(&mut self, training: bool) {
        if let Some(bn) = &mut self.bn1 {
            bn.set_training(training);
        }
    }
}
