//! Basic layers: Linear, LayerNorm, BatchNorm1d, Embedding, Dropout, Mlp.

use super::{Init, Module};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// y = x Wᵀ + b over the last axis, with W stored (out, in) as in PyTorch.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Truncated-normal(0.02) weights and zero bias, the ViT/timm initialisation.
    pub fn new(init: &mut Init, inputs: usize, outputs: usize, bias: bool) -> Linear {
        Linear::from_tensors(
            init.trunc_normal(&[outputs, inputs], 0.02),
            bias.then(|| init.zeros(&[outputs])),
        )
    }

    /// PyTorch's default initialisation: U(±1/√in) for weight and bias.
    pub fn new_uniform(init: &mut Init, inputs: usize, outputs: usize, bias: bool) -> Linear {
        let bound = 1.0 / (inputs as f64).sqrt();
        Linear::from_tensors(
            init.uniform(&[outputs, inputs], bound),
            bias.then(|| init.uniform(&[outputs], bound)),
        )
    }

    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Linear {
        weight.set_requires_grad(true);
        if let Some(b) = &bias {
            b.set_requires_grad(true);
        }
        Linear { weight, bias }
    }

    /// Applies the layer to `(…, in)`, giving `(…, out)`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let inputs = self.weight.shape()[1];
        assert_eq!(
            x.shape().last().copied(),
            Some(inputs),
            "Linear: input of shape {:?} does not end in {inputs} features",
            x.shape()
        );
        x.linear(&self.weight, self.bias.as_ref())
    }
}

impl Module for Linear {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

/// Layer norm over the last axis with learned scale and shift.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(init: &Init, dim: usize) -> LayerNorm {
        LayerNorm {
            weight: init.ones(&[dim]).requires_grad_(true),
            bias: init.zeros(&[dim]).requires_grad_(true),
            eps: 1e-5,
        }
    }

    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)
    }
}

impl Module for LayerNorm {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

/// Batch norm over the features of `(N, C)` inputs, with running statistics for evaluation.
pub struct BatchNorm1d {
    /// Scale and shift; `None` for a non-affine norm (e.g. the last layer of a SimCLR projector).
    pub affine: Option<(Tensor, Tensor)>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub momentum: f64,
    pub eps: f64,
    /// Batch statistics (and running-statistic updates) while set; running statistics otherwise.
    pub training: AtomicBool,
}

impl BatchNorm1d {
    pub fn new(init: &Init, dim: usize, affine: bool) -> BatchNorm1d {
        BatchNorm1d {
            affine: affine.then(|| {
                (
                    init.ones(&[dim]).requires_grad_(true),
                    init.zeros(&[dim]).requires_grad_(true),
                )
            }),
            running_mean: init.zeros(&[dim]),
            running_var: init.ones(&[dim]),
            momentum: 0.1,
            eps: 1e-5,
            training: AtomicBool::new(true),
        }
    }

    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (w, b) = match &self.affine {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        };
        x.batch_norm(
            Some(&self.running_mean),
            Some(&self.running_var),
            w,
            b,
            self.training.load(Ordering::Relaxed),
            self.momentum,
            self.eps,
        )
    }
}

impl Module for BatchNorm1d {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        match &self.affine {
            Some((w, b)) => vec![("weight".into(), w.clone()), ("bias".into(), b.clone())],
            None => Vec::new(),
        }
    }

    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
        ]
    }

    fn set_own_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// A lookup table of `vocab` vectors of size `dim`.
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(init: &mut Init, vocab: usize, dim: usize) -> Embedding {
        Embedding {
            weight: init.trunc_normal(&[vocab, dim], 0.02).requires_grad_(true),
        }
    }

    /// Rows for `ids`, shaped `(ids.len(), dim)`.
    #[track_caller]
    pub fn forward(&self, ids: &[u32]) -> Tensor {
        crate::embedding(&self.weight, ids)
    }
}

impl Module for Embedding {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}

/// Dropout with a reproducible mask sequence: call `k` of a module seeded `s` always draws the
/// same mask.
pub struct Dropout {
    pub p: f64,
    pub training: AtomicBool,
    seed: u64,
    calls: AtomicU64,
}

impl Dropout {
    pub fn new(init: &mut Init, p: f64) -> Dropout {
        Dropout {
            p,
            training: AtomicBool::new(true),
            seed: init.seed(),
            calls: AtomicU64::new(0),
        }
    }

    /// Makes the next training call call number `call`, so a resumed run draws the masks the
    /// uninterrupted one would have.
    pub fn seek(&self, call: u64) {
        self.calls.store(call, Ordering::Relaxed);
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if !self.training.load(Ordering::Relaxed) || self.p == 0.0 {
            return x.clone();
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        x.dropout(
            self.p,
            self.seed
                .wrapping_add(call.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            true,
        )
    }
}

impl Module for Dropout {
    fn set_own_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// The Transformer feed-forward block: fc1 → GELU → fc2.
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(init: &mut Init, dim: usize, hidden: usize) -> Mlp {
        Mlp {
            fc1: Linear::new(init, dim, hidden, true),
            fc2: Linear::new(init, hidden, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu())
    }
}

impl Module for Mlp {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}
